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
    /// Shared mode: the feed's lease or checkpoint in its key-value bucket could not be read
    /// or written (NATS unreachable, or a damaged value; the text says what to do).
    #[error("{0}")]
    Lease(String),
    /// Shared mode: the feed's fence (`Nats-Expected-Last-Sequence`) kept failing, so
    /// something else publishes on the feed's stream.
    #[error("{0}")]
    Fence(String),
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
            WorkerError::Lease(_) => "cannot keep the feed lease; see the log",
            WorkerError::Fence(_) => "another process publishes the feed; see the log",
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
    /// Shared mode only: who leads the feed, as this replica sees it.
    feed_lease: Mutex<Option<FeedLease>>,
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

    /// Shared mode: this replica, `replica`, takes part in the feed's lease (and does not hold
    /// it yet).
    pub fn join_feed_lease(&self, replica: &str) {
        *lock(&self.feed_lease) = Some(FeedLease {
            replica: replica.to_owned(),
            leader: false,
            holder: None,
        });
    }

    /// Shared mode: the lease holder as last seen, `None` while nobody holds it.
    pub fn set_feed_lease_holder(&self, holder: Option<&str>) {
        if let Some(lease) = lock(&self.feed_lease).as_mut() {
            lease.holder = holder.map(str::to_owned);
        }
    }

    /// Whether this replica publishes the feed now: the gauge `closeloop_feed_leader` (1 or
    /// 0) in both modes, and in shared mode the lease status (as holder when it leads).
    pub fn set_feed_leader(&self, leader: bool) {
        metrics::gauge!("closeloop_feed_leader").set(if leader { 1.0 } else { 0.0 });
        if let Some(lease) = lock(&self.feed_lease).as_mut() {
            lease.leader = leader;
            if leader {
                lease.holder = Some(lease.replica.clone());
            } else if lease.holder.as_deref() == Some(lease.replica.as_str()) {
                lease.holder = None;
            }
        }
    }

    pub fn feed_published(&self) -> u64 {
        self.feed_published.load(Ordering::Relaxed)
    }

    /// Records `worker`'s last failure as `/readyz` shows it: the worker's name and a plain
    /// phrase, e.g. "outbound feed: publish failed".
    pub fn set_error(&self, worker: &str, error: &WorkerError) {
        *lock(&self.last_error) = Some(format!("{worker}: {}", error.phrase()));
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
            feed_lease: lock(&self.feed_lease).clone(),
            last_error: lock(&self.last_error).clone(),
        }
    }
}

/// The value behind `mutex`, even when a thread panicked while holding it (the values here
/// are plain status, consistent at every point).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Who publishes the outbound feed when replicas share it ([`FeedMode::Shared`]): shown on
/// `/readyz`, so it holds replica ids only (which an operator chooses; never put secrets in
/// them).
///
/// [`FeedMode::Shared`]: crate::FeedMode::Shared
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedLease {
    /// This replica's id.
    pub replica: String,
    /// Whether this replica holds the lease and publishes the feed now.
    pub leader: bool,
    /// The replica that holds the lease, as this one last saw it; `None` while nobody does
    /// (it expired or was released, and no replica has taken it yet).
    pub holder: Option<String>,
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
    /// Shared mode only ([`FeedMode::Shared`](crate::FeedMode::Shared)): whether this replica
    /// leads the feed, and which one does. `None` in local mode, where this replica always
    /// publishes it. In shared mode [`feed`](Self::feed) is [`Worker::Running`] on the leader
    /// and on the replicas standing by alike, and [`feed_published_upto`](Self::feed_published_upto)
    /// is the shared checkpoint as this replica last read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed_lease: Option<FeedLease>,
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
            WorkerError::Lease("cannot read the feed lease: IO error: os error 104".to_owned()),
            WorkerError::Fence("/data: os error 5".to_owned()),
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

    #[test]
    fn the_feed_lease_shows_in_shared_mode_only_and_follows_the_leader() {
        let shared = Shared::default();
        let status = shared.snapshot(Connection::Connected, 0);
        assert_eq!(status.feed_lease, None);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json.get("feed_lease"), None, "{json}");

        shared.join_feed_lease("replica-a");
        shared.set_feed_lease_holder(Some("replica-b"));
        let lease = |shared: &Shared| shared.snapshot(Connection::Connected, 0).feed_lease;
        let seen = |leader: bool, holder: Option<&str>| {
            Some(FeedLease {
                replica: "replica-a".to_owned(),
                leader,
                holder: holder.map(str::to_owned),
            })
        };
        assert_eq!(lease(&shared), seen(false, Some("replica-b")));
        shared.set_feed_leader(true);
        assert_eq!(lease(&shared), seen(true, Some("replica-a")));
        shared.set_feed_leader(false);
        assert_eq!(lease(&shared), seen(false, None));
        let json = serde_json::to_value(shared.snapshot(Connection::Connected, 0)).unwrap();
        assert_eq!(
            json["feed_lease"],
            serde_json::json!({"replica": "replica-a", "leader": false, "holder": null})
        );
    }
}
