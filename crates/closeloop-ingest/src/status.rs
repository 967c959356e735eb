//! What the NATS side is doing, for `/readyz` and the logs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use async_nats::connection::State;
use serde::Serialize;

/// The connection to the NATS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// Not connected yet since the service started.
    Connecting,
    /// Connected.
    Connected,
    /// Lost; the client reconnects with back-off.
    Disconnected,
}

impl From<State> for Connection {
    fn from(state: State) -> Self {
        match state {
            State::Pending => Connection::Connecting,
            State::Connected => Connection::Connected,
            State::Disconnected => Connection::Disconnected,
        }
    }
}

/// What one of the two workers (ingestion, outbound feed) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Worker {
    /// Setting up its streams, or waiting to try again after a failure.
    Starting,
    /// Consuming or publishing.
    Running,
    /// Stopped for shutdown.
    Stopped,
}

impl Worker {
    fn from_u8(raw: u8) -> Self {
        match raw {
            1 => Worker::Running,
            2 => Worker::Stopped,
            _ => Worker::Starting,
        }
    }
}

/// The NATS side's state, shared between the workers and the HTTP API.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    ingest: AtomicU8,
    feed: AtomicU8,
    feed_published: AtomicU64,
    ingest_backlogged: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn set_ingest(&self, worker: Worker) {
        self.ingest.store(worker as u8, Ordering::Relaxed);
    }

    pub fn set_feed(&self, worker: Worker) {
        self.feed.store(worker as u8, Ordering::Relaxed);
    }

    pub fn set_feed_published(&self, position: u64) {
        self.feed_published.store(position, Ordering::Relaxed);
    }

    /// Ingestion says whether its last batch was full: more messages are waiting.
    pub fn set_ingest_backlogged(&self, backlogged: bool) {
        self.ingest_backlogged.store(backlogged, Ordering::Relaxed);
    }

    pub fn ingest_backlogged(&self) -> bool {
        self.ingest_backlogged.load(Ordering::Relaxed)
    }

    pub fn feed_published(&self) -> u64 {
        self.feed_published.load(Ordering::Relaxed)
    }

    pub fn set_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }

    pub fn snapshot(&self, connection: Connection, head: u64) -> NatsStatus {
        let published = self.feed_published();
        NatsStatus {
            connection,
            ingest: Worker::from_u8(self.ingest.load(Ordering::Relaxed)),
            feed: Worker::from_u8(self.feed.load(Ordering::Relaxed)),
            feed_published_upto: published,
            feed_lag: head.saturating_sub(published),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

/// A snapshot of the NATS side, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatsStatus {
    /// The connection to the server.
    pub connection: Connection,
    /// Ingestion from `FEEDBACK`.
    pub ingest: Worker,
    /// The outbound feed.
    pub feed: Worker,
    /// The last position published on the feed and acknowledged by JetStream.
    pub feed_published_upto: u64,
    /// Stored events not yet on the feed.
    pub feed_lag: u64,
    /// The last failure, if any, e.g. why the server could not be reached.
    pub last_error: Option<String>,
}

impl NatsStatus {
    /// Whether everything is connected and running.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.connection == Connection::Connected
            && self.ingest == Worker::Running
            && self.feed == Worker::Running
    }
}
