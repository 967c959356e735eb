//! What the NATS side is doing, for `/readyz` and the logs.
//!
//! Everything here may be shown to anyone who can call `/readyz`, so it holds plain phrases
//! only ("cannot reach NATS", "publish failed"): the error text of the operating system, the
//! NATS client or the store goes to the log, where [`WorkerError`] carries it whole.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use async_nats::connection::State;
use closeloop_store::StoreError;
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
    Starting = 0,
    /// Consuming or publishing.
    Running = 1,
    /// Stopped for shutdown.
    Stopped = 2,
    /// Ingestion only: connected, but fetching nothing while the event store cannot take
    /// writes ([`NatsStatus::ingest_paused`] says so in words). Messages wait in `FEEDBACK`,
    /// unacknowledged, and are stored once the store is back.
    Paused = 3,
}

impl Worker {
    fn from_u8(raw: u8) -> Self {
        match raw {
            1 => Worker::Running,
            2 => Worker::Stopped,
            3 => Worker::Paused,
            _ => Worker::Starting,
        }
    }
}

/// What `/readyz` says while ingestion is paused for the store.
pub(crate) const INGEST_PAUSED_FOR_STORE: &str = "ingest paused: event store unavailable";

/// Why a worker stopped and is set up again after a pause. The log gets the whole error
/// (`Display`); `/readyz` gets only [`phrase`](WorkerError::phrase), which never holds the
/// text of the NATS client, the store or the operating system.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// The streams or the consumer could not be looked up or created.
    #[error("cannot set up the JetStream streams: {0}")]
    Setup(async_nats::Error),
    /// An older `FEEDBACK` could not be moved to work-queue retention (yet); the next attempt
    /// carries on where this one stopped.
    #[error("cannot migrate FEEDBACK to work-queue retention: {0}")]
    Migration(async_nats::Error),
    /// Messages could not be fetched from the consumer.
    #[error("cannot receive messages from NATS: {0}")]
    Receive(async_nats::Error),
    /// An event could not be published on the feed, or JetStream did not acknowledge it.
    #[error("cannot publish to NATS: {0}")]
    Publish(async_nats::Error),
    /// The feed could not read the log.
    #[error("cannot read the event log: {0}")]
    Store(#[from] StoreError),
    /// A stored event cannot be turned into a feed message (damaged or from a newer build).
    #[error("cannot publish the event at position {position}: {detail}")]
    Event {
        /// Where in the log.
        position: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// The feed's checkpoint file could not be read or written.
    #[error("{0}")]
    Checkpoint(String),
}

impl WorkerError {
    /// The plain phrase `/readyz` shows for this failure.
    pub(crate) fn phrase(&self) -> &'static str {
        match self {
            WorkerError::Setup(_) | WorkerError::Receive(_) => "cannot reach NATS",
            WorkerError::Migration(_) => "cannot migrate FEEDBACK to work-queue retention yet",
            WorkerError::Publish(_) => "publish failed",
            WorkerError::Store(_) => "cannot read the event store",
            WorkerError::Event { .. } => "a stored event cannot be published; see the log",
            WorkerError::Checkpoint(_) => "cannot keep the feed checkpoint; see the log",
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

    /// Records `worker`'s last failure as `/readyz` shows it: the worker's name and a plain
    /// phrase, e.g. "outbound feed: publish failed".
    pub fn set_error(&self, worker: &str, error: &WorkerError) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(format!("{worker}: {}", error.phrase()));
    }

    pub fn snapshot(&self, connection: Connection, head: u64) -> NatsStatus {
        let published = self.feed_published();
        let ingest = Worker::from_u8(self.ingest.load(Ordering::Relaxed));
        NatsStatus {
            connection,
            ingest,
            ingest_paused: (ingest == Worker::Paused).then(|| INGEST_PAUSED_FOR_STORE.to_owned()),
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
    /// Why ingestion is paused, in plain words ("ingest paused: event store unavailable");
    /// `None` unless [`ingest`](Self::ingest) is [`Worker::Paused`].
    pub ingest_paused: Option<String>,
    /// The outbound feed.
    pub feed: Worker,
    /// The last position published on the feed and acknowledged by JetStream.
    pub feed_published_upto: u64,
    /// Stored events not yet on the feed.
    pub feed_lag: u64,
    /// The last failure of a worker, if any, in plain words naming the worker, e.g.
    /// "outbound feed: cannot reach NATS". The full error is in the log.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_ingestion_says_why_in_plain_words_and_is_not_healthy() {
        let shared = Shared::default();
        shared.set_ingest(Worker::Running);
        shared.set_feed(Worker::Running);
        let status = shared.snapshot(Connection::Connected, 0);
        assert!(status.is_healthy());
        assert_eq!(status.ingest_paused, None);

        shared.set_ingest(Worker::Paused);
        let status = shared.snapshot(Connection::Connected, 0);
        assert!(!status.is_healthy());
        assert_eq!(
            status.ingest_paused.as_deref(),
            Some("ingest paused: event store unavailable")
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["ingest"], "paused");
    }

    #[test]
    fn failures_show_a_phrase_never_the_error_text() {
        let shared = Shared::default();
        let errors = [
            WorkerError::Setup("connection refused (os error 111)".into()),
            WorkerError::Publish("Payload size limit of 1048576 exceeded".into()),
            WorkerError::Store(StoreError::Stopped(
                "IO error: No space left on device (os error 28)".to_owned(),
            )),
            WorkerError::Checkpoint("cannot save /data/feed.checkpoint: os error 28".to_owned()),
        ];
        for error in &errors {
            shared.set_error("outbound feed", error);
            let shown = shared
                .snapshot(Connection::Connected, 0)
                .last_error
                .unwrap();
            assert!(shown.starts_with("outbound feed: "), "{shown}");
            for leak in ["os error", "Payload size", "IO error", "/data"] {
                assert!(!shown.contains(leak), "{shown}");
            }
        }
    }
}
