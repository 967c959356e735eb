//! The JetStream streams and the consumer Closeloop uses, and how they are created.
//!
//! Each is created when missing — with `replicas` copies: 1 for a single server, 3 for the
//! cluster in `deploy/` — and left as it is when it exists, so an operator can tune limits or
//! replicas (`nats stream edit`) without Closeloop undoing it on the next start. Two settings
//! are Closeloop's to keep, because they decide how long personal data stays in NATS:
//! `FEEDBACK`'s work-queue retention (an older `FEEDBACK` with limits retention is migrated,
//! see `migration`) and `FEEDBACK_DLQ`'s `max_age`, which is set to the configured value on
//! every start.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context, ErrorCode};

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
/// How long dead letters are kept by default: 30 days.
pub const DLQ_DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Where the messages of an old `FEEDBACK` with limits retention wait while it is recreated
/// with work-queue retention; it exists only during that migration.
pub const MIGRATION_STREAM: &str = "FEEDBACK_MIGRATION";
/// The subjects of [`MIGRATION_STREAM`] (none under `feedback.>`, so that it can exist beside
/// `FEEDBACK`).
pub const MIGRATION_SUBJECTS: &str = "closeloop.migration.>";
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

/// The `FEEDBACK` stream, created with file storage and work-queue retention when missing: a
/// message stays until Closeloop acknowledges it, however long that takes, and is removed
/// then, so the publisher's copy of the personal data in it does not outlive its ingestion.
/// An existing `FEEDBACK` is returned as it is; [`crate::migration`] moves one with limits
/// retention to work-queue retention first.
///
/// # Errors
/// When JetStream cannot be reached or refuses the stream.
pub async fn feedback_stream(
    js: &Context,
    replicas: usize,
) -> Result<stream::Stream, async_nats::Error> {
    Ok(js.get_or_create_stream(feedback_config(replicas)).await?)
}

/// How Closeloop creates `FEEDBACK`.
#[must_use]
pub fn feedback_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: FEEDBACK_STREAM.to_owned(),
        subjects: vec![FEEDBACK_SUBJECTS.to_owned()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: replicas,
        description: Some(
            "Feedback and follow-ups for Closeloop, as CloudEvents; each is removed once Closeloop has stored it".to_owned(),
        ),
        ..stream::Config::default()
    }
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

/// The `FEEDBACK_DLQ` stream, created with file storage when missing, whose dead letters
/// JetStream removes at `max_age`; an existing one gets this `max_age` too (its other settings
/// stay as they are), so the configured retention of dead letters always holds.
///
/// # Errors
/// When JetStream cannot be reached or refuses the stream or the change.
pub async fn dead_letter_stream(
    js: &Context,
    replicas: usize,
    max_age: Duration,
) -> Result<stream::Stream, async_nats::Error> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: DLQ_STREAM.to_owned(),
            subjects: vec![DLQ_SUBJECT.to_owned()],
            storage: StorageType::File,
            num_replicas: replicas,
            max_age,
            description: Some(
                "Messages Closeloop could not store, with Closeloop-Error headers".to_owned(),
            ),
            ..stream::Config::default()
        })
        .await?;
    let config = stream.cached_info().config.clone();
    if config.max_age != max_age {
        tracing::info!(
            stream = DLQ_STREAM,
            from = ?config.max_age,
            to = ?max_age,
            "setting the dead letters' max_age to the configured value"
        );
        js.update_stream(with_max_age(config, max_age)).await?;
    }
    Ok(stream)
}

/// `config` with `max_age`, and a duplicate window no longer than it (JetStream refuses a
/// longer one).
fn with_max_age(config: stream::Config, max_age: Duration) -> stream::Config {
    stream::Config {
        max_age,
        duplicate_window: config.duplicate_window.min(max_age),
        ..config
    }
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

/// The stream `name`, or `None` when it does not exist. Never creates it.
///
/// # Errors
/// When JetStream cannot be asked.
pub async fn existing(
    js: &Context,
    name: &str,
) -> Result<Option<stream::Stream>, async_nats::Error> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(err)
            if matches!(
                err.kind(),
                GetStreamErrorKind::JetStream(ref js_err)
                    if js_err.error_code() == ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}
