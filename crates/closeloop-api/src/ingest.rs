//! What the HTTP API needs of the message-ingestion side (NATS JetStream in the binary): its
//! status for `/readyz`, and the administration of dead letters.
//!
//! The API owns this trait and its types so that it depends on no adapter: the binary
//! implements [`IngestAdmin`] over the ingestion crate and hands it over in
//! [`AppState::ingest`](crate::AppState::ingest).

use futures::future::BoxFuture;
use serde::Serialize;

/// Status and dead-letter administration of the ingestion side.
pub trait IngestAdmin: Send + Sync + std::fmt::Debug {
    /// The connection and the workers now, for `/readyz`. `head` is the store's head, to
    /// report how far the outbound feed lags behind it.
    fn status(&self, head: u64) -> IngestStatus;

    /// Up to `limit` dead letters with a sequence above `after`, oldest first.
    fn dead_letters(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, DeadLetterError>>;

    /// Sends dead letter `seq` through ingestion again and removes it.
    fn redrive(&self, seq: u64) -> BoxFuture<'_, Result<Redriven, DeadLetterError>>;
}

/// The connection to the message server.
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

/// What one worker (ingestion, the outbound feed) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Worker {
    /// Setting up its streams, or waiting to try again after a failure.
    Starting,
    /// Consuming or publishing.
    Running,
    /// Stopped for shutdown.
    Stopped,
    /// Ingestion only: connected, but fetching nothing while the event store cannot take
    /// writes; messages wait in the stream, unacknowledged.
    Paused,
}

/// A snapshot of the ingestion side, as `/readyz` shows it. It holds no backend error text:
/// `/readyz` is public, so failures are named in plain phrases and their details are in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestStatus {
    /// The connection to the server.
    pub connection: Connection,
    /// Ingestion of feedback.
    pub ingest: Worker,
    /// Why ingestion is paused, in plain words ("ingest paused: event store unavailable").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_paused: Option<String>,
    /// The outbound feed.
    pub feed: Worker,
    /// The last position published on the feed and acknowledged.
    pub feed_published_upto: u64,
    /// Stored events not yet on the feed.
    pub feed_lag: u64,
    /// The last failure of a worker as a plain phrase naming it, e.g. "outbound feed: cannot
    /// reach NATS"; never the server's or client's own error text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// With several replicas on one log: which one publishes the outbound feed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed_lease: Option<FeedLease>,
}

/// Who publishes the outbound feed when replicas share it (one at a time, under a lease).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FeedLease {
    /// This replica's id (`CLOSELOOP_REPLICA_ID`).
    pub replica: String,
    /// Whether this replica holds the lease and publishes the feed now.
    pub leader: bool,
    /// The replica holding the lease as this one last saw it; `null` while nobody does.
    pub holder: Option<String>,
}

impl IngestStatus {
    /// Whether everything is connected and running.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.connection == Connection::Connected
            && self.ingest == Worker::Running
            && self.feed == Worker::Running
    }
}

/// One dead letter, as `GET /v1/dead-letters` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream: the `{seq}` of the retry endpoint.
    pub seq: u64,
    /// When it was dead-lettered (RFC 3339).
    pub dead_lettered_at: String,
    /// The `Closeloop-Error` code.
    pub error: String,
    /// The `Closeloop-Error-Detail` sentence.
    pub detail: String,
    /// The subject it was published on.
    pub original_subject: Option<String>,
    /// Its sequence in the feedback stream.
    pub original_sequence: Option<u64>,
    /// The original payload when it is UTF-8 text (it may hold personal data: admins only).
    pub payload: Option<String>,
    /// The original payload in base64 when it is not UTF-8.
    pub payload_base64: Option<String>,
    /// Whether the payload was cut to fit the server's `max_payload` (then it cannot be
    /// re-driven).
    pub truncated: bool,
    /// The original payload's size in bytes, when truncated.
    pub original_size: Option<u64>,
    /// The original payload's SHA-256 (hex), when truncated.
    pub original_sha256: Option<String>,
}

/// What re-driving a dead letter did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// The dead letter's sequence, now removed.
    pub seq: u64,
    /// Where the original was published again.
    pub subject: String,
    /// Its new sequence in the feedback stream.
    pub feedback_sequence: u64,
}

/// Why a dead-letter request failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// No dead letter has that sequence (or it was re-driven already).
    #[error("there is no dead letter {0}; list them with GET /v1/dead-letters")]
    NotFound(u64),
    /// The dead letter has no original subject to send it back to.
    #[error("dead letter {0} has no original subject under feedback.>, so it cannot be re-driven")]
    NoSubject(u64),
    /// The dead letter was truncated to fit the server's `max_payload`: the original is gone.
    #[error(
        "dead letter {0} was truncated to fit the NATS server's max_payload, so the original is not kept and cannot be re-driven; ask its publisher to send it again (smaller), then delete the dead letter"
    )]
    Truncated(u64),
    /// The message server could not be reached or refused the request. The text is for the
    /// log only: it is the server's or the client library's own words.
    #[error("the message server is unavailable: {0}")]
    Unavailable(String),
}
