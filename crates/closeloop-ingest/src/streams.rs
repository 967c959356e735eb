//! The JetStream streams and the consumer Closeloop uses, and how they are created.
//!
//! Each is created when missing — with `replicas` copies: 1 for a single server, 3 for the
//! cluster in `deploy/` — and left as it is when it exists, so an operator can tune limits or
//! replicas (`nats stream edit`) without Closeloop undoing it on the next start.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, Context};

/// Where publishers send feedback and follow-ups (contract §2).
pub const FEEDBACK_STREAM: &str = "FEEDBACK";
/// The subjects of [`FEEDBACK_STREAM`].
pub const FEEDBACK_SUBJECTS: &str = "feedback.>";
/// The durable pull consumer that ingests [`FEEDBACK_STREAM`].
pub const INGEST_CONSUMER: &str = "closeloop-ingest";
/// Where messages that cannot be stored go, with their reasons (contract §2).
pub const DLQ_STREAM: &str = "FEEDBACK_DLQ";
/// The subject of [`DLQ_STREAM`].
pub const DLQ_SUBJECT: &str = "closeloop.dlq";
/// The outbound feed: every stored event, in position order (an extension of contract §2,
/// which names the subjects; the stream makes the feed durable and de-duplicated).
pub const FEED_STREAM: &str = "CLOSELOOP_EVENTS";
/// The feed's subjects are this prefix plus the event type's suffix, e.g.
/// `closeloop.events.loop.change_made`.
pub const FEED_SUBJECT_PREFIX: &str = "closeloop.events";

/// How the ingest consumer is set up when Closeloop creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLimits {
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// How many times a message is delivered at most; -1: no limit (the default). Closeloop
    /// settles every message itself — stored, a duplicate or dead-lettered — and keeps a
    /// message it cannot store because of its own failure (the store is down) for as long as
    /// that lasts, so JetStream must never give up on one. When an operator sets a limit
    /// anyway, the last delivery but one dead-letters the message rather than let JetStream
    /// drop it.
    pub max_deliver: i64,
    /// How many messages may be delivered and not yet acked.
    pub max_ack_pending: i64,
}

/// The `FEEDBACK` stream, created with file storage when missing.
///
/// # Errors
/// When JetStream cannot be reached or refuses the stream.
pub async fn feedback_stream(
    js: &Context,
    replicas: usize,
) -> Result<stream::Stream, async_nats::Error> {
    Ok(js
        .get_or_create_stream(stream::Config {
            name: FEEDBACK_STREAM.to_owned(),
            subjects: vec![FEEDBACK_SUBJECTS.to_owned()],
            storage: StorageType::File,
            num_replicas: replicas,
            description: Some("Feedback and follow-ups for Closeloop, as CloudEvents".to_owned()),
            ..stream::Config::default()
        })
        .await?)
}

/// The durable pull consumer `closeloop-ingest` on `stream`, created when missing.
///
/// # Errors
/// When JetStream cannot be reached or refuses the consumer.
pub async fn ingest_consumer(
    stream: &stream::Stream,
    limits: ConsumerLimits,
) -> Result<PullConsumer, async_nats::Error> {
    Ok(stream
        .get_or_create_consumer(
            INGEST_CONSUMER,
            pull::Config {
                durable_name: Some(INGEST_CONSUMER.to_owned()),
                description: Some("Closeloop stores each message, then acks it".to_owned()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: limits.ack_wait,
                max_deliver: limits.max_deliver,
                max_ack_pending: limits.max_ack_pending,
                ..pull::Config::default()
            },
        )
        .await?)
}

/// The `FEEDBACK_DLQ` stream, created with file storage when missing.
///
/// # Errors
/// When JetStream cannot be reached or refuses the stream.
pub async fn dead_letter_stream(
    js: &Context,
    replicas: usize,
) -> Result<stream::Stream, async_nats::Error> {
    Ok(js
        .get_or_create_stream(stream::Config {
            name: DLQ_STREAM.to_owned(),
            subjects: vec![DLQ_SUBJECT.to_owned()],
            storage: StorageType::File,
            num_replicas: replicas,
            description: Some(
                "Messages Closeloop could not store, with Closeloop-Error headers".to_owned(),
            ),
            ..stream::Config::default()
        })
        .await?)
}

/// The `CLOSELOOP_EVENTS` stream behind the outbound feed, created when missing: file
/// storage, events kept 30 days, a 2-minute window in which a re-published position is
/// recognised as a duplicate.
///
/// # Errors
/// When JetStream cannot be reached or refuses the stream.
pub async fn feed_stream(
    js: &Context,
    replicas: usize,
) -> Result<stream::Stream, async_nats::Error> {
    Ok(js
        .get_or_create_stream(stream::Config {
            name: FEED_STREAM.to_owned(),
            subjects: vec![format!("{FEED_SUBJECT_PREFIX}.>")],
            storage: StorageType::File,
            num_replicas: replicas,
            max_age: Duration::from_secs(30 * 24 * 60 * 60),
            duplicate_window: Duration::from_secs(120),
            description: Some("Every event Closeloop stored, in position order".to_owned()),
            ..stream::Config::default()
        })
        .await?)
}

/// A JetStream context on `client`.
#[must_use]
pub fn context(client: async_nats::Client) -> Context {
    jetstream::new(client)
}
