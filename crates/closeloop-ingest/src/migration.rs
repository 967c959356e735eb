//! Moving an older `FEEDBACK` from limits retention to work-queue retention.
//!
//! Closeloop used to create `FEEDBACK` with limits retention, so it kept every message — the
//! publisher's copy of a story, a name, a contact — until an operator removed it. With
//! work-queue retention a message is removed once Closeloop acknowledges it, after its outcome
//! is durable. JetStream cannot change a stream's retention in place, so before ingestion
//! consumes anything it migrates a `FEEDBACK` with limits retention:
//!
//! 1. **Plan.** Create `FEEDBACK_MIGRATION` (subjects `closeloop.migration.>`, none under
//!    `feedback.>`) and record in it the old stream's and the ingest consumer's configuration,
//!    and the first sequence to carry over: the one after the consumer's ack floor (everything
//!    up to the floor is stored already).
//! 2. **Copy.** Copy the messages from there on into the migration stream: payload and the
//!    publisher's headers byte for byte, with the original subject, sequence and publish time
//!    in `Closeloop-*` headers. Then seal `FEEDBACK` (publishers are refused from now on and
//!    retry) and copy what arrived during the first pass.
//! 3. **Recreate.** Delete `FEEDBACK`, create it with work-queue retention — keeping the old
//!    stream's replicas, placement, duplicate window and message size limit, but no age, count
//!    or size limit, which on a work queue would drop messages not yet stored — and create the
//!    ingest consumer with the old consumer's configuration.
//! 4. **Republish** every copy to `FEEDBACK` on its original subject, with the publisher's
//!    headers, its original publish time (ingestion takes it as the receive time of an event
//!    without `time`) and `Nats-Msg-Id` `FEEDBACK-MIGRATED-<old sequence>-<publish time>`.
//! 5. **Finish.** Delete the migration stream.
//!
//! Each step can be run again, so a migration cut short anywhere (a crash, a lost connection)
//! is finished by the next attempt: an existing migration stream means one is under way. While
//! the old `FEEDBACK` exists, the copy is made again from the plan's first sequence; once it is
//! gone, steps 3 to 5 run again. A message copied or republished twice is dropped by JetStream
//! as a duplicate within its 2-minute window, or else recognised by the event store by its
//! (`source`, `id`); so are messages above the ack floor that had been acknowledged already.
//! Nothing is lost, and nothing is stored twice.

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::stream::{self, RawMessageErrorKind, RetentionPolicy, StorageType};
use async_nats::jetstream::{Context, context::PublishAckFuture};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::dead_letter::{self, ORIGINAL_SEQUENCE_HEADER, ORIGINAL_SUBJECT_HEADER, Reason};
use crate::feed::wire_size;
use crate::streams::{self, FEEDBACK_STREAM, INGEST_CONSUMER, MIGRATION_STREAM};

/// The header with the time JetStream first stored a message, RFC 3339: ingestion takes it as
/// the receive time of an event without `time`, so a republished message keeps its own.
pub const PUBLISHED_AT_HEADER: &str = "Closeloop-Published-At";

/// The subject of the plan in the migration stream.
const PLAN_SUBJECT: &str = "closeloop.migration.plan";
/// The subject of the copies in the migration stream.
const COPY_SUBJECT: &str = "closeloop.migration.copy";
/// How many messages are read ahead, and how many publishes wait for their acks at most.
const WINDOW: usize = 256;

/// What the migration needs to know once the old `FEEDBACK` is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    /// When the old stream was created (nanoseconds since 1970, as text): a copy made again
    /// trusts `first_sequence` only for that very stream.
    created: String,
    /// The first sequence to copy.
    first_sequence: u64,
    /// The old stream's configuration.
    stream: stream::Config,
    /// The ingest consumer's configuration, when it existed.
    consumer: Option<consumer::Config>,
}

/// Migrates `FEEDBACK` to work-queue retention when it has limits retention, or finishes a
/// migration under way; does nothing otherwise. `replicas` applies when no plan says better.
///
/// # Errors
/// When NATS fails on the way; calling again carries on safely.
pub(crate) async fn run_if_needed(js: &Context, replicas: usize) -> Result<(), async_nats::Error> {
    let under_way = streams::existing(js, MIGRATION_STREAM).await?;
    let old = streams::existing(js, FEEDBACK_STREAM)
        .await?
        .filter(|stream| stream.cached_info().config.retention == RetentionPolicy::Limits);
    let migration = match (under_way, &old) {
        (None, None) => return Ok(()),
        (None, Some(_)) => {
            tracing::info!(
                stream = FEEDBACK_STREAM,
                "FEEDBACK keeps messages after they are stored (limits retention); migrating it to work-queue retention, so each is removed once stored. Publishers are refused for a moment and retry"
            );
            create_migration_stream(js, replicas).await?
        }
        (Some(stream), _) => {
            tracing::info!(
                stream = MIGRATION_STREAM,
                "finishing the migration of FEEDBACK to work-queue retention"
            );
            stream
        }
    };
    let plan = match old {
        Some(mut old) => {
            let plan = plan(js, &migration, &mut old).await?;
            let copied = copy(js, &mut old, plan.first_sequence).await?;
            js.delete_stream(FEEDBACK_STREAM).await?;
            tracing::info!(
                copied,
                "copied FEEDBACK's unacknowledged messages and deleted the old stream"
            );
            Some(plan)
        }
        None => recorded_plan(&migration).await?,
    };
    recreate(js, plan.as_ref(), replicas).await?;
    let republished = republish(js, migration).await?;
    js.delete_stream(MIGRATION_STREAM).await?;
    tracing::info!(
        republished,
        "FEEDBACK now has work-queue retention; the migration is finished"
    );
    Ok(())
}

async fn create_migration_stream(
    js: &Context,
    replicas: usize,
) -> Result<stream::Stream, async_nats::Error> {
    Ok(js
        .get_or_create_stream(stream::Config {
            name: MIGRATION_STREAM.to_owned(),
            subjects: vec![streams::MIGRATION_SUBJECTS.to_owned()],
            storage: StorageType::File,
            num_replicas: replicas,
            description: Some(
                "FEEDBACK's messages while it moves to work-queue retention; deleted when done"
                    .to_owned(),
            ),
            ..stream::Config::default()
        })
        .await?)
}

/// The plan recorded in the migration stream, or a new one for `old` (recorded first).
async fn plan(
    js: &Context,
    migration: &stream::Stream,
    old: &mut stream::Stream,
) -> Result<Plan, async_nats::Error> {
    let info = old.info().await?.clone();
    let created = info.created.unix_timestamp_nanos().to_string();
    if let Some(plan) = recorded_plan(migration).await? {
        if plan.created == created {
            return Ok(plan);
        }
        // Not the stream the plan was made for (someone recreated it meanwhile): carry all of
        // it over.
        tracing::warn!(
            "FEEDBACK was recreated during its migration; carrying over all of its messages"
        );
        return Ok(Plan {
            first_sequence: info.state.first_sequence,
            created,
            ..plan
        });
    }
    let consumer = match old.consumer_info(INGEST_CONSUMER).await {
        Ok(consumer) => Some(consumer),
        Err(err) if matches!(err.kind(), ConsumerInfoErrorKind::NotFound) => None,
        Err(err) => return Err(err.into()),
    };
    let first_sequence = consumer
        .as_ref()
        .map_or(0, |consumer| consumer.ack_floor.stream_sequence + 1)
        .max(info.state.first_sequence);
    let plan = Plan {
        created,
        first_sequence,
        stream: info.config,
        consumer: consumer.map(|consumer| consumer.config),
    };
    js.send_publish(
        PLAN_SUBJECT,
        PublishMessage::build().payload(serde_json::to_vec(&plan)?.into()),
    )
    .await?
    .await?;
    Ok(plan)
}

async fn recorded_plan(migration: &stream::Stream) -> Result<Option<Plan>, async_nats::Error> {
    match migration
        .get_last_raw_message_by_subject(PLAN_SUBJECT)
        .await
    {
        Ok(message) => Ok(Some(serde_json::from_slice(&message.payload)?)),
        Err(err) if matches!(err.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// Copies `old`'s messages from `first` on into the migration stream, seals `old`, and copies
/// what arrived meanwhile; returns how many were copied.
async fn copy(
    js: &Context,
    old: &mut stream::Stream,
    first: u64,
) -> Result<u64, async_nats::Error> {
    let info = old.info().await?.clone();
    let end = info.state.last_sequence;
    let mut copied = copy_range(js, old, first, end).await?;
    if !info.config.sealed {
        js.update_stream(stream::Config {
            sealed: true,
            ..info.config
        })
        .await?;
    }
    let sealed_end = old.info().await?.state.last_sequence;
    copied += copy_range(js, old, first.max(end + 1), sealed_end).await?;
    Ok(copied)
}

/// Copies `old`'s messages `first..=last` into the migration stream. One too big to carry
/// the copy's headers is dead-lettered instead: it is far above Closeloop's own limits and
/// would be dead-lettered anyway.
async fn copy_range(
    js: &Context,
    old: &stream::Stream,
    first: u64,
    last: u64,
) -> Result<u64, async_nats::Error> {
    let max_payload = js.client().max_payload();
    let mut messages = read(old, first, last);
    let mut acks = Acks::default();
    let mut copied = 0;
    while let Some(message) = messages.next().await {
        let Some(message) = message? else { continue };
        let published = message.time.unix_timestamp_nanos();
        let mut headers = dead_letter::publishers_headers(&message.headers);
        headers.insert(ORIGINAL_SUBJECT_HEADER, message.subject.as_str());
        headers.insert(
            ORIGINAL_SEQUENCE_HEADER,
            message.sequence.to_string().as_str(),
        );
        headers.insert(PUBLISHED_AT_HEADER, rfc3339(published).as_str());
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{FEEDBACK_STREAM}-{}-{published}", message.sequence).as_str(),
        );
        if wire_size(&headers, message.payload.len()) > max_payload {
            dead_letter::publish_stored(js, &message, &too_big()).await?;
            continue;
        }
        let copy = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers);
        acks.push(js.send_publish(COPY_SUBJECT, copy).await?)
            .await?;
        copied += 1;
    }
    acks.wait().await?;
    Ok(copied)
}

fn too_big() -> Reason {
    Reason {
        code: "invalid_data".to_owned(),
        detail: "the message is too close to the NATS server's max_payload to be carried through the migration of FEEDBACK, and far above Closeloop's limits; publish it again within the limits".to_owned(),
    }
}

/// Creates `FEEDBACK` with work-queue retention (from the plan's old configuration when there
/// is one) and the ingest consumer from the plan's, when it does not exist yet.
async fn recreate(
    js: &Context,
    plan: Option<&Plan>,
    replicas: usize,
) -> Result<(), async_nats::Error> {
    let config = streams::feedback_config(replicas);
    let config = match plan {
        Some(plan) => stream::Config {
            num_replicas: plan.stream.num_replicas.max(1),
            duplicate_window: plan.stream.duplicate_window,
            max_message_size: plan.stream.max_message_size,
            placement: plan.stream.placement.clone(),
            ..config
        },
        None => config,
    };
    let stream = js.get_or_create_stream(config).await?;
    let Some(consumer) = plan.and_then(|plan| plan.consumer.clone()) else {
        // Ingestion creates the consumer as usual.
        return Ok(());
    };
    match stream.consumer_info(INGEST_CONSUMER).await {
        Ok(_) => Ok(()),
        Err(err) if matches!(err.kind(), ConsumerInfoErrorKind::NotFound) => {
            stream
                .create_consumer(work_queue_consumer(consumer))
                .await?;
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// The old ingest consumer's configuration, as a work queue accepts it: a pull consumer of
/// every message with explicit acks.
fn work_queue_consumer(old: consumer::Config) -> consumer::Config {
    consumer::Config {
        durable_name: Some(INGEST_CONSUMER.to_owned()),
        deliver_subject: None,
        deliver_group: None,
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ..old
    }
}

/// Publishes every copy in the migration stream to `FEEDBACK` again; returns how many.
async fn republish(js: &Context, mut migration: stream::Stream) -> Result<u64, async_nats::Error> {
    let last = migration.info().await?.state.last_sequence;
    let mut messages = read(&migration, 1, last);
    let mut acks = Acks::default();
    let mut republished = 0;
    while let Some(message) = messages.next().await {
        let Some(copy) = message? else { continue };
        if copy.subject.as_str() != COPY_SUBJECT {
            continue;
        }
        let header = |name: &str| {
            copy.headers
                .get(name)
                .map(|value| value.as_str().to_owned())
        };
        let (Some(subject), Some(sequence)) = (
            header(ORIGINAL_SUBJECT_HEADER),
            header(ORIGINAL_SEQUENCE_HEADER),
        ) else {
            return Err(format!(
                "copy {} in {MIGRATION_STREAM} has no original subject or sequence; it was not written by Closeloop",
                copy.sequence
            )
            .into());
        };
        let published = header(PUBLISHED_AT_HEADER).unwrap_or_default();
        let mut headers: HeaderMap = dead_letter::publishers_headers(&copy.headers);
        headers.insert(PUBLISHED_AT_HEADER, published.as_str());
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{FEEDBACK_STREAM}-MIGRATED-{sequence}-{published}").as_str(),
        );
        let message = PublishMessage::build()
            .payload(copy.payload.clone())
            .headers(headers);
        acks.push(js.send_publish(subject, message).await?).await?;
        republished += 1;
    }
    acks.wait().await?;
    Ok(republished)
}

/// The messages of `stream` from `first` to `last`, in order, read [`WINDOW`] ahead; `None`
/// for a sequence that holds no message (deleted).
fn read(
    stream: &stream::Stream,
    first: u64,
    last: u64,
) -> impl futures::Stream<Item = Result<Option<StreamMessage>, async_nats::Error>> + '_ {
    futures::stream::iter(first..=last)
        .map(move |seq| async move {
            match stream.get_raw_message(seq).await {
                Ok(message) => Ok(Some(message)),
                Err(err) if matches!(err.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
                Err(err) => Err(err.into()),
            }
        })
        .buffered(WINDOW)
}

/// Publishes awaiting their acks, at most [`WINDOW`] at a time.
#[derive(Default)]
struct Acks(Vec<PublishAckFuture>);

impl Acks {
    /// Adds one, first waiting for all when the window is full.
    async fn push(&mut self, ack: PublishAckFuture) -> Result<(), async_nats::Error> {
        if self.0.len() >= WINDOW {
            self.wait().await?;
        }
        self.0.push(ack);
        Ok(())
    }

    /// Waits for every ack.
    async fn wait(&mut self) -> Result<(), async_nats::Error> {
        for ack in self.0.drain(..) {
            ack.await?;
        }
        Ok(())
    }
}

/// `nanos` since 1970 as RFC 3339.
fn rfc3339(nanos: i128) -> String {
    jiff::Timestamp::from_nanosecond(nanos)
        .map(|time| time.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
