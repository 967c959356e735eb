//! Ingestion: pulls batches from `FEEDBACK`, records each message through the one write path,
//! and acknowledges it only once its outcome is durable.
//!
//! A batch takes every message already delivered (up to `batch`) and, while messages come
//! thick and fast (the batch before held an eighth of `batch` or more), what else arrives
//! within a few milliseconds: full batches share fsyncs, and a lone message at a quiet time
//! goes straight on. At most two batches are in flight; the next waits for the older. A batch
//! is decoded whole, then split by loop: each loop's messages are decided in delivery order and stored in
//! one append ([`write::record_in_order`]), while different loops are recorded concurrently,
//! so the store's group commit takes the whole batch in one or two fsyncs. Every message ends in exactly one
//! [`Outcome`]: stored, a duplicate, dead-lettered, or handed back to JetStream (nak) to be
//! tried again later.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, MessagesError};
use async_nats::jetstream::{self, AckKind};
use closeloop_domain::{Limits, LoopId, Rejection};
use closeloop_store::write::{self, WriteError};
use closeloop_store::{EventStore, StoreError};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use tokio::sync::watch;

use crate::IngestOptions;
use crate::cloudevent::{self, Decoded};
use crate::dead_letter::{self, Reason};
use crate::migration::{self, PUBLISHED_AT_HEADER};
use crate::status::{Shared, Worker, WorkerError};
use crate::streams::{self, ConsumerLimits};

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and acked.
    Stored,
    /// Its (`source`, `id`) was stored before: acked, nothing stored.
    Duplicate,
    /// Published to `FEEDBACK_DLQ` with its reason, then acked.
    DeadLettered,
    /// Not acked (nak with a delay): JetStream delivers it again later.
    Retried,
}

impl Outcome {
    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Retried => "retried",
        }
    }
}

/// What to do with a message after trying to record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Ack it: stored (or a duplicate).
    Ack(Outcome),
    /// Dead-letter it with this reason.
    DeadLetter(Reason),
    /// Nak it with this delay.
    Retry(Duration),
}

/// Decides what to do with a message given the result of recording it and how many times it
/// has been delivered (1 the first time).
///
/// Only the message's own fault dead-letters it. When Closeloop itself fails (the store
/// cannot write, or concurrent writers kept changing the loop), the message goes back to
/// JetStream with a delay, however often that happens: the publisher did nothing wrong, and
/// the message is stored once the store is healthy. The one exception is a delivery limit set
/// by an operator on the consumer: at the last delivery but one the message is dead-lettered
/// as `unavailable` (and can be re-driven), rather than dropped by JetStream.
pub(crate) fn dispose(
    result: &Result<write::Recorded, WriteError>,
    delivered: i64,
    options: &IngestOptions,
) -> Disposition {
    // An operator's delivery limit, with one delivery to spare for a dead letter that could
    // not be published.
    let last_chance = options.limits.max_deliver > 0 && delivered >= options.limits.max_deliver - 1;
    match result {
        Ok(recorded) if recorded.duplicate => Disposition::Ack(Outcome::Duplicate),
        Ok(_) => Disposition::Ack(Outcome::Stored),
        Err(WriteError::Rejected {
            rejection: Rejection::UnknownLoop(_),
            ..
        }) if delivered < options.unknown_loop_attempts && !last_chance => {
            // Publishers race: the loop's feedback may be a moment behind its follow-up.
            Disposition::Retry(backoff(options.unknown_loop_backoff, delivered))
        }
        Err(WriteError::Rejected { rejection, .. }) => Disposition::DeadLetter(Reason {
            code: rejection.code().to_owned(),
            detail: rejection.to_string(),
        }),
        // Contract §2 v1.1: the (source, id) was stored before with other content.
        Err(WriteError::KeyReused(_)) => Disposition::DeadLetter(Reason {
            code: "id_reused".to_owned(),
            detail: "this source and id were already used for an event with another type, subject or data; give every new event a new id".to_owned(),
        }),
        Err(
            err @ (WriteError::VersionConflict { .. }
            | WriteError::Contended(_)
            | WriteError::Store(_)),
        ) => {
            if last_chance {
                tracing::warn!(%err, delivered, "the consumer's delivery limit is reached; dead-lettering the message as unavailable so that it is not dropped");
                Disposition::DeadLetter(Reason {
                    code: "unavailable".to_owned(),
                    detail: format!(
                        "not stored after {delivered} deliveries because Closeloop's event store was unavailable, and the consumer allows no more; re-drive it once GET /readyz reports the store ready"
                    ),
                })
            } else {
                Disposition::Retry(backoff(Duration::from_secs(1), delivered))
            }
        }
    }
}

/// `base`, doubled for each delivery after the first, at most 30 s.
fn backoff(base: Duration, delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    base.saturating_mul(1 << doublings)
        .min(Duration::from_secs(30))
}

/// How often a paused ingestion asks the store whether it takes writes again, and how often a
/// running one that waits for messages checks that the store still does.
const READY_CHECK: Duration = Duration::from_secs(1);

/// Consumes `FEEDBACK` until `shutdown` turns true (then returns `Ok`) or the connection
/// fails (an error: the caller sets things up again after a pause).
///
/// While the store cannot take writes ([`EventStore::ready`]) nothing is fetched: the message
/// stream is dropped, the status says ingestion is paused, and messages wait in `FEEDBACK`
/// until the store is back. Messages fetched before the store failed stay unacknowledged or
/// are handed back with a delay; none is dead-lettered for it.
pub(crate) async fn run<S: EventStore>(
    store: &Arc<S>,
    js: &jetstream::Context,
    options: &IngestOptions,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    streams::dead_letter_stream(js, options.replicas, options.dead_letter_max_age)
        .await
        .map_err(WorkerError::Setup)?;
    migration::run_if_needed(js, options.replicas)
        .await
        .map_err(WorkerError::Migration)?;
    let stream = streams::feedback_stream(js, options.replicas)
        .await
        .map_err(WorkerError::Setup)?;
    let consumer = streams::ingest_consumer(&stream, options.limits)
        .await
        .map_err(WorkerError::Setup)?;
    // Decide on the last delivery by the consumer's real limit: an operator may have changed
    // it, and a message that runs out of deliveries unrecorded would be lost.
    let options = Arc::new(IngestOptions {
        limits: ConsumerLimits {
            max_deliver: consumer.cached_info().config.max_deliver,
            ..options.limits
        },
        ..options.clone()
    });
    loop {
        if !wait_until_store_ready(store.as_ref(), shared, shutdown).await {
            break;
        }
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(options.batch * 2)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|err| WorkerError::Receive(err.into()))?;
        shared.set_ingest(Worker::Running);
        tracing::info!(
            stream = streams::FEEDBACK_STREAM,
            consumer = streams::INGEST_CONSUMER,
            "consuming feedback from NATS"
        );
        match consume(store, js, &options, shared, shutdown, &mut messages).await? {
            Stop::Shutdown => break,
            // Dropping the message stream stops fetching; what it had fetched stays
            // unacknowledged and is delivered again after `ack_wait`.
            Stop::StoreNotReady => {}
        }
    }
    // Messages pulled but not processed stay unacked: JetStream redelivers them after
    // `ack_wait`. Acks already sent must leave before the connection closes.
    crate::flush_acks(&js.client()).await;
    Ok(())
}

/// Why [`consume`] returned.
enum Stop {
    /// `shutdown` turned true.
    Shutdown,
    /// The store stopped taking writes: fetch nothing until it does again.
    StoreNotReady,
}

/// Waits until the store takes writes, marking ingestion paused meanwhile; `false` when
/// `shutdown` turned true first.
async fn wait_until_store_ready<S: EventStore>(
    store: &S,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut paused = false;
    loop {
        if *shutdown.borrow() {
            return false;
        }
        match store.ready() {
            Ok(()) => {
                if paused {
                    tracing::info!("the event store takes writes again; ingestion resumes");
                }
                return true;
            }
            Err(err) => {
                if !paused {
                    tracing::warn!(%err, "the event store cannot take writes; ingestion is paused until it can, and messages wait in FEEDBACK");
                    shared.set_ingest(Worker::Paused);
                    paused = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return false,
            () = tokio::time::sleep(READY_CHECK) => {}
        }
    }
}

/// Records what `messages` delivers, batch by batch, until shutdown, until the store stops
/// taking writes, or until the stream fails (an error). Waits for the batches in flight
/// before it returns.
async fn consume<S: EventStore>(
    store: &Arc<S>,
    js: &jetstream::Context,
    options: &Arc<IngestOptions>,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    messages: &mut pull::Stream,
) -> Result<Stop, WorkerError> {
    // Two batches overlap: while one waits for its fsync, the next is gathered, decoded and
    // recorded for the loops the first does not touch.
    let mut in_flight: VecDeque<(HashSet<LoopId>, BatchDone)> = VecDeque::new();
    // Whether the last batch came from a busy stream (see `gather`).
    let mut busy = false;
    let result = loop {
        if store.ready().is_err() {
            break Ok(Stop::StoreNotReady);
        }
        // At most two batches in flight: wait for the older one before taking the next, so
        // that what arrives meanwhile joins the next batch (batches grow with the load).
        if in_flight.len() >= 2
            && let Some((_, oldest)) = in_flight.pop_front()
        {
            oldest.await;
        }
        let first = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break Ok(Stop::Shutdown),
            first = messages.next() => first,
            // Nothing arrived for a while: look at the store again before waiting on.
            () = tokio::time::sleep(READY_CHECK) => continue,
        };
        shared.set_ingest_backlogged(false);
        let (gathered, failure) = gather(messages, first, options, busy).await;
        busy = gathered.len() >= options.batch / BUSY_FRACTION;
        shared.set_ingest_backlogged(gathered.len() >= options.batch);
        let batch = Batch::decode(gathered, &options.input_limits);
        let (busy, previous) = in_flight
            .back()
            .map(|(loops, done)| (loops.clone(), Some(done.clone())))
            .unwrap_or_default();
        let loops = batch.loop_ids();
        let task = tokio::spawn(record_batch(
            Arc::clone(store),
            js.clone(),
            Arc::clone(options),
            batch,
            busy,
            previous,
        ));
        let done: BatchDone = async move {
            if let Err(err) = task.await {
                tracing::error!(%err, "a batch task failed; its unacked messages will be redelivered");
            }
        }
        .boxed()
        .shared();
        in_flight.push_back((loops, done));
        if let Some(err) = failure {
            break Err(err);
        }
    };
    for (_, done) in in_flight {
        done.await;
    }
    result
}

/// A batch of at least `batch / BUSY_FRACTION` messages means the stream is busy: the next
/// batch waits up to `gather` to fill.
const BUSY_FRACTION: usize = 8;

/// The batch that starts with `first`: every message already delivered, up to
/// `options.batch`, and, when the stream is `busy`, what else arrives within
/// `options.gather` of the first (fuller batches share fsyncs; at a quiet time a message goes
/// on at once). Also the receive failure that ended it, if one did (the messages before it
/// are still recorded).
async fn gather(
    messages: &mut pull::Stream,
    first: Option<Result<jetstream::Message, MessagesError>>,
    options: &IngestOptions,
    busy: bool,
) -> (Vec<jetstream::Message>, Option<WorkerError>) {
    let deadline = tokio::time::Instant::now() + options.gather;
    let mut gathered = Vec::with_capacity(options.batch);
    let mut next = first;
    loop {
        match next {
            None => {
                let ended = WorkerError::Receive("the consumer's message stream ended".into());
                return (gathered, Some(ended));
            }
            Some(Err(err)) => return (gathered, Some(WorkerError::Receive(err.into()))),
            Some(Ok(message)) => gathered.push(message),
        }
        if gathered.len() >= options.batch {
            return (gathered, None);
        }
        next = match messages.next().now_or_never() {
            Some(item) => item,
            None if !busy || options.gather.is_zero() => return (gathered, None),
            None => match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(item) => item,
                Err(_) => return (gathered, None),
            },
        };
    }
}

/// A decoded batch: each loop's messages in delivery order, and the messages that cannot be
/// decoded with their reasons.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    loops: Vec<(LoopId, Vec<(jetstream::Message, Decoded)>)>,
    refused: Vec<(jetstream::Message, Reason)>,
}

impl Batch {
    /// Decodes `messages` within `limits` and groups them by loop, keeping each loop's
    /// delivery order.
    pub(crate) fn decode(messages: Vec<jetstream::Message>, limits: &Limits) -> Self {
        let received_at = Timestamp::now();
        let mut index: HashMap<LoopId, usize> = HashMap::new();
        let mut batch = Batch::default();
        for message in messages {
            let headers = header_pairs(&message);
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let at = published_at(&message).unwrap_or(received_at);
            match cloudevent::decode_with(&message.payload, &pairs, at, limits) {
                Ok(decoded) => {
                    let loop_id = decoded.command.loop_id.clone();
                    let slot = *index.entry(loop_id.clone()).or_insert_with(|| {
                        batch.loops.push((loop_id, Vec::new()));
                        batch.loops.len() - 1
                    });
                    batch.loops[slot].1.push((message, decoded));
                }
                Err(err) => batch.refused.push((
                    message,
                    Reason {
                        code: err.code().to_owned(),
                        detail: err.detail(),
                    },
                )),
            }
        }
        batch
    }

    /// The loops the batch touches.
    fn loop_ids(&self) -> HashSet<LoopId> {
        self.loops
            .iter()
            .map(|(loop_id, _)| loop_id.clone())
            .collect()
    }
}

/// Records a batch: loops concurrently, each loop's messages in order. Loops in `busy` (those
/// of the batch still in flight before this one) start only once `previous` is done, so a
/// loop's messages are never recorded out of order across batches.
async fn record_batch<S: EventStore>(
    store: Arc<S>,
    js: jetstream::Context,
    options: Arc<IngestOptions>,
    batch: Batch,
    busy: HashSet<LoopId>,
    previous: Option<BatchDone>,
) {
    let (waiting, free): (Vec<_>, Vec<_>) = batch
        .loops
        .into_iter()
        .partition(|(loop_id, _)| busy.contains(loop_id));
    let (store, js, options) = (&store, &js, &options);
    let free =
        futures::future::join_all(free.into_iter().map(|(loop_id, messages)| {
            record_loop(store.as_ref(), js, options, loop_id, messages)
        }));
    let waiting = async move {
        if let Some(previous) = previous {
            previous.await;
        }
        futures::future::join_all(waiting.into_iter().map(|(loop_id, messages)| {
            record_loop(store.as_ref(), js, options, loop_id, messages)
        }))
        .await;
    };
    let dead = futures::future::join_all(batch.refused.into_iter().map(
        |(message, reason)| async move {
            finish(js, &message, Disposition::DeadLetter(reason)).await;
        },
    ));
    futures::join!(free, waiting, dead);
}

/// Records one loop's messages: decided in order and stored in one append
/// ([`write::record_in_order`]); then each is acked, retried or dead-lettered.
async fn record_loop<S: EventStore>(
    store: &S,
    js: &jetstream::Context,
    options: &IngestOptions,
    loop_id: LoopId,
    messages: Vec<(jetstream::Message, Decoded)>,
) {
    let (messages, commands): (Vec<_>, Vec<_>) = messages
        .into_iter()
        .map(|(message, decoded)| (message, (decoded.command, decoded.origin)))
        .unzip();
    let results = match write::record_in_order(store, &loop_id, commands).await {
        Ok(results) => results,
        // Nothing of the loop's messages was stored: each goes back for a retry.
        Err(err) => {
            let detail = err.to_string();
            messages
                .iter()
                .map(|_| Err(WriteError::Store(StoreError::Backend(detail.clone()))))
                .collect()
        }
    };
    for (message, result) in messages.iter().zip(results) {
        let delivered = message.info().map_or(1, |info| info.delivered);
        let disposition = dispose(&result, delivered, options);
        finish(js, message, disposition).await;
    }
}

/// Resolves when a batch in flight is fully handled (every message acked, retried or
/// dead-lettered); cloneable, so the next batch and the shutdown can both wait for it.
type BatchDone = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// Carries out a disposition and counts the outcome.
async fn finish(js: &jetstream::Context, message: &jetstream::Message, disposition: Disposition) {
    let outcome = match disposition {
        Disposition::Ack(outcome) => {
            ack(message, AckKind::Ack).await;
            outcome
        }
        Disposition::Retry(delay) => {
            ack(message, AckKind::Nak(Some(delay))).await;
            Outcome::Retried
        }
        Disposition::DeadLetter(reason) => match dead_letter::publish(js, message, &reason).await {
            Ok(()) => {
                tracing::info!(
                    code = %reason.code,
                    subject = %message.subject,
                    "message dead-lettered"
                );
                ack(message, AckKind::Ack).await;
                Outcome::DeadLettered
            }
            Err(err) => {
                tracing::warn!(%err, "cannot publish a dead letter; the message will be redelivered");
                ack(message, AckKind::Nak(Some(Duration::from_secs(5)))).await;
                Outcome::Retried
            }
        },
    };
    metrics::counter!("closeloop_ingest_messages_total", "outcome" => outcome.label()).increment(1);
}

/// Sends an ack or nak; a lost one only means a redelivery, which is recognised.
async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(%err, "cannot acknowledge a message; JetStream will redeliver it");
    }
}

/// The message's headers as (name, value) pairs.
fn header_pairs(message: &jetstream::Message) -> Vec<(String, String)> {
    message
        .headers
        .as_ref()
        .map(|headers| {
            headers
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |value| (name.to_string(), value.as_str().to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// When JetStream received the message from its publisher: its own JetStream timestamp, or,
/// for a message republished by the migration of `FEEDBACK`, the earlier time in its
/// `Closeloop-Published-At` header. A header later than the timestamp is ignored: it could
/// only come from a publisher, and would widen the window a `time` is checked against.
fn published_at(message: &jetstream::Message) -> Option<Timestamp> {
    let stored = message
        .info()
        .ok()
        .and_then(|info| Timestamp::from_nanosecond(info.published.unix_timestamp_nanos()).ok());
    let republished = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(PUBLISHED_AT_HEADER))
        .and_then(|value| value.as_str().parse::<Timestamp>().ok());
    match (republished, stored) {
        (Some(original), Some(stored)) if original <= stored => Some(original),
        (_, stored) => stored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> IngestOptions {
        IngestOptions::default()
    }

    fn loop_id() -> LoopId {
        LoopId::parse("loop-1").expect("valid")
    }

    fn rejected(rejection: Rejection) -> Result<write::Recorded, WriteError> {
        Err(WriteError::Rejected {
            loop_id: loop_id(),
            rejection,
        })
    }

    #[test]
    fn stored_and_duplicate_messages_are_acked() {
        let mut recorded = write::Recorded {
            loop_id: loop_id(),
            version: 1,
            position: 7,
            duplicate: false,
        };
        assert_eq!(
            dispose(&Ok(recorded.clone()), 1, &options()),
            Disposition::Ack(Outcome::Stored)
        );
        recorded.duplicate = true;
        assert_eq!(
            dispose(&Ok(recorded), 3, &options()),
            Disposition::Ack(Outcome::Duplicate)
        );
    }

    #[test]
    fn unknown_loops_are_retried_with_growing_delays_then_dead_lettered() {
        let options = options();
        let unknown = rejected(Rejection::UnknownLoop("loop-1".to_owned()));
        let mut delays = Vec::new();
        for delivered in 1..options.unknown_loop_attempts {
            match dispose(&unknown, delivered, &options) {
                Disposition::Retry(delay) => delays.push(delay),
                other => panic!("delivery {delivered}: {other:?}"),
            }
        }
        assert!(
            delays.windows(2).all(|pair| pair[0] < pair[1]),
            "{delays:?}"
        );
        match dispose(&unknown, options.unknown_loop_attempts, &options) {
            Disposition::DeadLetter(reason) => assert_eq!(reason.code, "unknown_loop"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rule_violations_are_dead_lettered_with_their_code() {
        for (rejection, code) in [
            (Rejection::LoopClosed, "loop_closed"),
            (Rejection::NoOutcome, "no_outcome"),
            (Rejection::AlreadyAcknowledged, "already_acknowledged"),
            (Rejection::LoopExists("loop-1".to_owned()), "loop_exists"),
            (Rejection::invalid("story is too long"), "invalid_data"),
        ] {
            match dispose(&rejected(rejection), 1, &options()) {
                Disposition::DeadLetter(reason) => {
                    assert_eq!(reason.code, code);
                    assert!(!reason.detail.is_empty());
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn our_own_failures_are_retried_however_often_they_happen_and_never_dead_lettered() {
        let options = options();
        let failures = [
            WriteError::Store(StoreError::Stopped("disk full".to_owned())),
            WriteError::Store(StoreError::Backend("sled said no".to_owned())),
            WriteError::Contended(loop_id()),
        ];
        for failure in failures {
            let failed = Err(failure);
            for delivered in [1, 2, 49, 50, 51, 1_000, i64::MAX] {
                match dispose(&failed, delivered, &options) {
                    Disposition::Retry(delay) => {
                        assert!(delay <= Duration::from_secs(30), "{delay:?}");
                    }
                    other => panic!("delivery {delivered} of {failed:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_lower_delivery_limit_on_the_consumer_is_respected_with_one_to_spare() {
        let mut options = options();
        options.limits.max_deliver = 10;
        let failed = Err(WriteError::Store(StoreError::Stopped(
            "disk full".to_owned(),
        )));
        assert!(matches!(
            dispose(&failed, 8, &options),
            Disposition::Retry(_)
        ));
        match dispose(&failed, 9, &options) {
            Disposition::DeadLetter(reason) => {
                assert_eq!(reason.code, "unavailable");
                assert!(!reason.detail.contains("disk full"), "{}", reason.detail);
            }
            other => panic!("{other:?}"),
        }
        let unknown = Err(WriteError::Rejected {
            loop_id: loop_id(),
            rejection: Rejection::UnknownLoop("loop-1".to_owned()),
        });
        options.limits.max_deliver = 3;
        assert!(matches!(
            dispose(&unknown, 1, &options),
            Disposition::Retry(_)
        ));
        assert!(matches!(
            dispose(&unknown, 2, &options),
            Disposition::DeadLetter(_)
        ));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 2), base * 2);
        assert_eq!(backoff(base, 3), base * 4);
        assert_eq!(backoff(base, 40), Duration::from_secs(30));
    }
}
