//! The outbound feed: every stored event, published on `closeloop.events.<type suffix>` in
//! position order, at least once, with `Nats-Msg-Id` = its global position; by this process
//! alone, or by one replica at a time among several (see [Shared mode](#shared-mode-one-publisher-among-several-replicas)).
//!
//! While ingestion works through a backlog (its batches come full), the feed yields: it
//! pauses before each page, so storing feedback durably gets the machine first and the feed
//! catches up at full speed once the backlog is gone. At a steady rate there is no backlog and
//! no pause.
//!
//! The store is the truth and the feed catches up with it (an outbox): the feed reads the log
//! after its checkpoint, publishes a page, waits until JetStream has acknowledged every message
//! of it, and only then moves the checkpoint. The checkpoint is a small file in the data
//! directory, written atomically (temp file, fsync, rename) at most a few times a second and
//! on shutdown; after a crash the feed re-publishes from the last saved checkpoint, and
//! JetStream drops the repeats that fall within its duplicate window (`Nats-Msg-Id`).
//!
//! Each message is a CloudEvent in structured JSON: the stored event's `id`, `source`, `type`,
//! `subject` (the loop id), `time` and `data`, plus the extension attributes `position`
//! (global position), `loopversion` (the loop's version after the event) and `hash` (the
//! entry's chain hash).
//!
//! The feed carries no personal data: `data` leaves out every field
//! [`EventType::personal_fields`] names for the event's type (`author` and `story` of
//! feedback, for instance), and an event of a type that has such fields carries the attribute
//! `personaldata: "omitted"` — whether or not this event had them, so the attribute reveals
//! nothing. The feed reads only the records' non-personal part, so it needs no key and erasure
//! changes nothing it publishes. Trusted consumers fetch the rest over HTTP with their own
//! credential (`GET /v1/loops/{loop_id}`, `GET /v1/events`).
//!
//! An event whose message would not fit in the server's `max_payload` (headers included; the
//! limit comes from the server's `INFO`) is published as a *reference*: the same subject,
//! headers and attributes, without `data`, plus `reference: true`, `size` and `sha256` (of
//! the message that was not sent) and `dataref` (where `GET /v1/events` serves the event).
//! The feed then moves on: one event too big for NATS never stops it (events stored before
//! the size limits, or under a server configured with a small `max_payload`).
//!
//! # Shared mode: one publisher among several replicas
//!
//! With [`FeedMode::Local`] (the default) this process publishes the feed and keeps the
//! checkpoint in a file, as above. Several stateless replicas on one shared event store use
//! [`FeedMode::Shared`]: exactly one of them at a time publishes, the one holding the *lease*,
//! and the checkpoint lives in NATS, so whichever replica leads next goes on where the last
//! one stopped. Both live in a JetStream key-value bucket (`CLOSELOOP_FEED` by default;
//! history 1, file storage, [`IngestOptions::replicas`] copies), only ever changed with a
//! compare-and-set on their revision, which a 2.9 server offers (`Nats-Expected-Last-Subject-
//! Sequence`):
//!
//! - `lease`: `{"holder": <replica id>, "instance": <uuid of this process>, "expires_at":
//!   <unix ms>}`. A replica that finds none creates it (`create`: only one creation wins); one
//!   that finds it over takes it with `update` at the revision it read (only one wins). The
//!   holder renews it every `ttl / 3` with `update(revision)`, setting `expires_at` to its
//!   wall clock + `ttl`; the others read it every `ttl / 3`. On shutdown the holder saves the
//!   checkpoint and gives the lease up (`expires_at: 0`), so the next replica takes over at its
//!   next reading instead of after the time to live.
//! - `checkpoint`: `{"position": <last position JetStream acknowledged, with all before it>,
//!   "replica": <writer>}`, written by the holder only — while its lease is still valid by its
//!   own clock, and with a compare-and-set, so a write after another replica wrote it fails
//!   and makes the writer step down — at most every 250 ms, whenever the feed has caught up,
//!   and on shutdown. Replicas standing by show it as `feed_published_upto`, so every
//!   replica's `/readyz` reports the feed's lag.
//!
//! **Stopping in time.** The holder may publish until `ttl - margin` (margin `ttl / 4`) after
//! it *sent* its last successful renewal, by its monotonic clock; another replica takes the
//! lease only once its wall clock is `margin` past `expires_at`. The holder renews in a
//! future of its own beside the one that publishes: when a renewal is refused (someone else
//! holds the lease) or none succeeds before that deadline, publishing is dropped at once,
//! whatever it was doing, and the publisher itself checks the deadline before each message.
//!
//! **The fence.** A deadline cannot call back messages that already left: a publish handed
//! to the client just before the deadline can reach NATS much later (the client keeps what it
//! could not send and sends it after a reconnect). So the holder also fences every message
//! with `Nats-Expected-Last-Sequence`: message *n* of a page expects the feed stream's last
//! sequence to be that of message *n − 1*, and JetStream refuses it otherwise. A leader starts
//! from the stream's tail — the `Closeloop-Position` of its last message, or the shared
//! checkpoint when that message is gone (aged out or purged) — and whatever a former leader
//! still gets onto the stream is refused, or is exactly the next position (and the new
//! leader, finding the fence moved, reads the tail again and goes on from there). Hence the
//! feed stream holds **every position at most once, in position order, without gaps**,
//! whatever the clocks do. After five fenced pages in a row the leader gives up with an error:
//! something other than a former leader publishes on the stream (e.g. a replica left in local
//! mode).
//!
//! **Clock assumption.** The lease's expiry is judged by wall clocks: the replicas' clocks
//! must agree to within `2 × margin = ttl / 2` (5 s for the default 10 s; NTP keeps them
//! within milliseconds), and each one's monotonic clock must not run more than a few percent
//! slow over a `ttl`. If they do not, two replicas may both lead for a while: the fence still
//! keeps the stream right, each refused page is read again from the tail, and the checkpoint's
//! compare-and-set makes one of them step down; the cost is wasted work, not a wrong feed.
//!
//! **What a consumer sees at a takeover.** Through a JetStream consumer on `CLOSELOOP_EVENTS`:
//! every event once, in position order; a pause of at most about `1.6 × ttl` after a leader
//! crashes (its lease runs out, plus the margin, plus one reading), about `ttl / 3` after a
//! clean stop; a consumer that acks late may have it redelivered, as always (at least once,
//! with `Nats-Msg-Id` and `Closeloop-Position` to recognise it). Core NATS subscribers on
//! `closeloop.events.>` bypass the stream and its refusals: around a takeover they may get a
//! position again, even after later ones, and must de-duplicate by `Closeloop-Position` (the
//! same holds in local mode after a crash). One case republishes on the stream itself: when
//! the stream's last message is gone and the shared checkpoint lags behind it (a leader
//! crashed between an ack and its next checkpoint write, and then the stream lost its
//! messages), positions after the checkpoint go out again; JetStream drops those still in its
//! 2-minute duplicate window.
//!
//! **Failure cases.**
//! - *The leader crashes or hangs*: its lease runs out; another replica takes over
//!   `ttl + margin` (up to `ttl / 3` more) after its last renewal. Nothing is published
//!   meanwhile; `/readyz` shows the lag growing.
//! - *The leader is cut off from NATS* (or paused longer than the margin): it stops at its
//!   deadline; what it had sent lands later and is refused by the fence. When it reconnects it
//!   reads the lease, sees the new holder and stands by.
//! - *NATS is down*: no replica can read or renew the lease, so none publishes; each retries
//!   with back-off and the next leader goes on from the stream's tail.
//! - *The leader cannot read the event store*: it gives the lease up and retries after a
//!   pause, so a replica that can takes over.
//! - *A renewal times out but took effect*: the next one fails its compare-and-set and the
//!   replica steps down; since the lease names its own instance, it takes it back at its next
//!   reading. A former leader's late checkpoint write can likewise make the new leader step
//!   down once and take its own lease back.
//! - *A damaged `lease` or `checkpoint` value*: the feed stops with an error that says which
//!   key to delete.
//! - *Switching from local to shared mode*: the first leader goes on from the stream's tail;
//!   the checkpoint file is no longer read.

mod lease;
mod shared;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::message::PublishMessage;
use closeloop_domain::EventType;
use closeloop_store::record::PublicData;
use closeloop_store::{EventStore, Hash, StoredEvent, record};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::IngestOptions;
use crate::status::{Shared, Worker, WorkerError};
use crate::streams::{self, FEED_SUBJECT_PREFIX};

/// Events read and published per page: all are in flight before the first ack is awaited, and
/// in local mode two pages at a time, so this stays well below the client's limit of 5,000
/// unacknowledged publishes (beyond it `send_publish` waits for acks that nobody awaits yet).
const PAGE: usize = 1024;
/// How often the checkpoint file is written at most while events flow.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
pub use lease::DEFAULT_FEED_BUCKET;
pub use shared::SharedFeed;

/// Where the outbound feed keeps its checkpoint, and whether replicas take turns publishing
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FeedMode {
    /// This process alone publishes the feed and keeps its checkpoint in the file
    /// [`IngestOptions::feed_checkpoint`]. The default, for a single replica. Two processes in
    /// this mode on one event store would both publish everything.
    #[default]
    Local,
    /// Several replicas on one event store: the one holding the lease in the key-value bucket
    /// publishes the feed, and keeps its checkpoint there for the next one (see the module
    /// docs). Every replica on that store must use this mode with the same bucket.
    Shared(SharedFeed),
}

impl FeedMode {
    /// Checks the shared mode's options, saying what to change.
    pub(crate) fn check(&self) -> Result<(), String> {
        match self {
            FeedMode::Local => Ok(()),
            FeedMode::Shared(config) => config.check(),
        }
    }
}

/// How long the feed pauses before each page while ingestion works through a backlog: at
/// most ~50,000 events/s then, which still leaves storing the larger part of a small machine
/// and keeps the feed close behind the drain (200 ms held it to ~5,000 events/s and it finished
/// ~45% after the drain, 50 ms to ~20,000 and ~33% after; 20 ms finished ~25% after with the
/// drain as fast; see `docs/benchmarks.md`).
const YIELD_TO_INGESTION: Duration = Duration::from_millis(20);
/// The header with the event's global position, besides `Nats-Msg-Id`.
pub const POSITION_HEADER: &str = "Closeloop-Position";
/// The extension attribute, with the value `omitted`, on every feed message of an event type
/// that has personal fields: they are left out of `data`.
pub const PERSONAL_DATA_ATTRIBUTE: &str = "personaldata";
/// The header set to `true` on a reference: a message that stands for an event too big to
/// publish, which consumers fetch with `GET /v1/events`.
pub const REFERENCE_HEADER: &str = "Closeloop-Reference";

/// Runs the feed as `options.feed` says: alone, from the checkpoint file (local mode), or
/// taking turns with other replicas through the lease (shared mode, see [`shared`]).
/// `instance` tells this process's lease apart from any other's.
pub(crate) async fn run<S: EventStore>(
    store: &Arc<S>,
    js: &Context,
    options: &IngestOptions,
    instance: &str,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    match &options.feed {
        FeedMode::Local => run_local(store, js, options, shared, shutdown).await,
        FeedMode::Shared(config) => {
            shared::run(store, js, options, config, instance, shared, shutdown).await
        }
    }
}

/// Local mode: publishes the log after the checkpoint until `shutdown` turns true (then saves
/// the checkpoint and returns `Ok`) or publishing fails (an error: the caller tries again after
/// a pause, from the last checkpoint).
async fn run_local<S: EventStore>(
    store: &Arc<S>,
    js: &Context,
    options: &IngestOptions,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    streams::feed_stream(js, options.replicas)
        .await
        .map_err(WorkerError::Setup)?;
    let mut checkpoint = Checkpoint::load(&options.feed_checkpoint)?;
    shared.set_feed_published(checkpoint.position);
    shared.set_feed(Worker::Running);
    shared.set_feed_leader(true);
    tracing::info!(
        from = checkpoint.position,
        stream = streams::FEED_STREAM,
        "publishing stored events to NATS"
    );
    let result = publish_local(store, js, &mut checkpoint, shared, shutdown).await;
    shared.set_feed_leader(false);
    checkpoint.save()?;
    result
}

/// The loop of [`run_local`]. Two pages are in flight: the next is read and sent while
/// JetStream acknowledges the one before, and the checkpoint moves once a page is acknowledged
/// in full.
async fn publish_local<S: EventStore>(
    store: &Arc<S>,
    js: &Context,
    checkpoint: &mut Checkpoint,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let mut head = store.subscribe();
    let mut sent_upto = checkpoint.position;
    let mut in_flight: Option<SentPage> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let entries = next_page(store, sent_upto, shared, shutdown).await?;
        if entries.is_empty() {
            match in_flight.take() {
                Some(page) => settle_local(page, checkpoint, shared).await?,
                None => wait_for_more(&mut head, shutdown).await?,
            }
            continue;
        }
        // Read for each page: after a reconnect the server (of a cluster) may be another one.
        let max_payload = js.client().max_payload();
        let page = send_page(js, sent_upto, &entries, max_payload, None).await?;
        sent_upto = page.last_position();
        if let Some(previous) = in_flight.replace(page) {
            settle_local(previous, checkpoint, shared).await?;
        }
    }
    // What was sent before the stop is usually acknowledged in a moment: count it in the
    // checkpoint, without holding the stop up for long (what is not counted goes out again
    // after the restart, and JetStream drops the repeats).
    if let Some(page) = in_flight {
        match tokio::time::timeout(SETTLE_ON_STOP, settle_local(page, checkpoint, shared)).await {
            Ok(settled) => settled?,
            Err(_) => tracing::warn!(
                "JetStream did not acknowledge the feed's last page in time; it is published again after the restart"
            ),
        }
    }
    Ok(())
}

/// How long a stopping feed waits for the acks of the page it sent last.
const SETTLE_ON_STOP: Duration = Duration::from_secs(2);

/// Waits for a page's acks (all of them, or an error) and moves the checkpoint past it.
async fn settle_local(
    page: SentPage,
    checkpoint: &mut Checkpoint,
    shared: &Shared,
) -> Result<(), WorkerError> {
    let sent = page.len();
    let acked = page.acked().await?;
    shared.set_feed_published(acked.upto);
    metrics::counter!("closeloop_feed_published_total").increment(sent as u64);
    checkpoint.advance(acked.upto)
}

/// The next page of the log after `position` (empty when there is none yet). While ingestion
/// works through a backlog it pauses first (see the module docs).
pub(crate) async fn next_page<S: EventStore>(
    store: &Arc<S>,
    position: u64,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Vec<StoredEvent>, WorkerError> {
    if shared.ingest_backlogged() {
        // Storing a backlog of feedback comes first; the feed catches up a page at a time
        // meanwhile, and at full speed once the backlog is gone.
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(Vec::new()),
            () = tokio::time::sleep(YIELD_TO_INGESTION) => {}
        }
    }
    Ok(store.read_all(position, PAGE).await?)
}

/// Waits until the store's head moves (`head` is the store's subscription) or `shutdown`
/// turns true.
pub(crate) async fn wait_for_more(
    head: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => Ok(()),
        changed = head.changed() => changed.map_err(|_| {
            WorkerError::Store(closeloop_store::StoreError::Backend(
                "the event store was closed".to_owned(),
            ))
        }),
    }
}

/// A fence on a page (shared mode): each message carries `Nats-Expected-Last-Sequence`, the
/// sequence the one before it got, so JetStream takes it only right after that one.
pub(crate) struct Fence<'a> {
    /// The feed stream's last sequence before the page.
    pub last_sequence: u64,
    /// Until when this replica may publish (its lease, by its own monotonic clock); no message
    /// is sent from then on.
    pub until: &'a watch::Receiver<Instant>,
}

/// How far a page got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageAck {
    /// The last position JetStream acknowledged, in order from the page's start (the
    /// position before the page when it acknowledged none).
    pub upto: u64,
    /// The stream sequence of that position's message (under a fence; meaningless without).
    pub last_sequence: u64,
    /// Why the page stopped before its end, under a fence.
    pub stopped: Option<Stopped>,
}

/// Why a fenced page stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// JetStream refused a message for its expected last sequence, or found it a duplicate:
    /// someone else published on the stream, whose tail must be read again.
    Fenced,
    /// The lease ran out before the page was sent.
    LeaseEnded,
}

/// The room `Nats-Expected-Last-Sequence: <20 digits>\r\n` takes in a message's header block.
const FENCE_HEADER_SIZE: usize =
    "Nats-Expected-Last-Sequence".len() + ": ".len() + 20 + "\r\n".len();

/// Publishes `entries`, which must follow `after` without a gap, and waits for their acks.
/// An entry too big for `max_payload` goes out as a reference (see the module docs).
///
/// Without a fence (local mode) every message must be acknowledged (duplicates included), or
/// it is an error. Under a `fence` (shared mode) the page stops at the first message
/// JetStream refuses for the fence or finds a duplicate, and sends nothing once the lease
/// has run out; [`PageAck`] says how far it got.
pub(crate) async fn publish_page(
    js: &Context,
    after: u64,
    entries: &[StoredEvent],
    max_payload: usize,
    fence: Option<Fence<'_>>,
) -> Result<PageAck, WorkerError> {
    send_page(js, after, entries, max_payload, fence)
        .await?
        .acked()
        .await
}

/// A page handed to the client, whose acks are still to come.
pub(crate) struct SentPage {
    /// The position before the page.
    after: u64,
    /// Each message's position and its ack to come.
    acks: Vec<(u64, async_nats::jetstream::context::PublishAckFuture)>,
    /// The feed stream's last sequence before the page, under a fence.
    fenced_from: Option<u64>,
    /// Why the page was not sent to its end.
    stopped: Option<Stopped>,
}

impl SentPage {
    /// How many messages were sent.
    fn len(&self) -> usize {
        self.acks.len()
    }

    /// The position of the last message sent (the one before the page when none was).
    fn last_position(&self) -> u64 {
        self.acks
            .last()
            .map_or(self.after, |(position, _)| *position)
    }

    /// Waits for the acks in order; how far the page got (see [`publish_page`]).
    async fn acked(self) -> Result<PageAck, WorkerError> {
        let fenced = self.fenced_from.is_some();
        let mut acked = PageAck {
            upto: self.after,
            last_sequence: self.fenced_from.unwrap_or(0),
            stopped: self.stopped,
        };
        for (position, ack) in self.acks {
            match ack.await {
                Ok(ack) if fenced && ack.duplicate => {
                    acked.stopped = Some(Stopped::Fenced);
                    break;
                }
                Ok(ack) => {
                    acked.upto = position;
                    acked.last_sequence = ack.sequence;
                }
                Err(err)
                    if fenced
                        && err.kind()
                            == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence =>
                {
                    acked.stopped = Some(Stopped::Fenced);
                    break;
                }
                Err(err) => return Err(WorkerError::Publish(err.into())),
            }
        }
        Ok(acked)
    }
}

/// Hands `entries` (which must follow `after` without a gap) to the client without waiting
/// for their acks; see [`publish_page`].
async fn send_page(
    js: &Context,
    after: u64,
    entries: &[StoredEvent],
    max_payload: usize,
    fence: Option<Fence<'_>>,
) -> Result<SentPage, WorkerError> {
    let max_payload = match fence {
        Some(_) => max_payload.saturating_sub(FENCE_HEADER_SIZE),
        None => max_payload,
    };
    let mut page = SentPage {
        after,
        acks: Vec::with_capacity(entries.len()),
        fenced_from: fence.as_ref().map(|fence| fence.last_sequence),
        stopped: None,
    };
    for ((expected, entry), index) in (after + 1..).zip(entries).zip(0_u64..) {
        if entry.position != expected {
            return Err(WorkerError::Event {
                position: expected,
                detail: format!(
                    "the log skipped from position {} to {}; reading again",
                    expected - 1,
                    entry.position
                ),
            });
        }
        if let Some(fence) = &fence
            && Instant::now() >= *fence.until.borrow()
        {
            page.stopped = Some(Stopped::LeaseEnded);
            break;
        }
        let FeedMessage {
            subject,
            headers,
            payload,
            reference,
        } = feed_message(entry, max_payload)?;
        if let Some(size) = reference {
            tracing::warn!(
                position = entry.position,
                size,
                max_payload,
                "an event is too big for the NATS server's max_payload; publishing a reference to it instead (consumers fetch it with GET /v1/events)"
            );
            metrics::counter!("closeloop_feed_references_total").increment(1);
        }
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .headers(headers);
        if let Some(fence) = &fence {
            message = message.expected_last_sequence(fence.last_sequence + index);
        }
        let ack = js
            .send_publish(subject, message)
            .await
            .map_err(|err| WorkerError::Publish(err.into()))?;
        page.acks.push((entry.position, ack));
    }
    Ok(page)
}

/// What the feed publishes for one entry.
pub(crate) struct FeedMessage {
    /// `closeloop.events.<type suffix>`.
    pub subject: String,
    /// `Content-Type`, `Closeloop-Position`, `Nats-Msg-Id`, and `Closeloop-Reference` on a
    /// reference.
    pub headers: HeaderMap,
    /// The CloudEvent in structured JSON.
    pub payload: Vec<u8>,
    /// `Some(size of the full message)` when `message` is a reference because the full one
    /// would not fit.
    pub reference: Option<usize>,
}

/// The message that carries `entry` on the feed: the whole event when it fits in
/// `max_payload` (headers included), else a reference to it.
pub(crate) fn feed_message(
    entry: &StoredEvent,
    max_payload: usize,
) -> Result<FeedMessage, WorkerError> {
    let damaged = |detail: String| WorkerError::Event {
        position: entry.position,
        detail,
    };
    let record = record::decode_public(&entry.record).map_err(|err| damaged(err.to_string()))?;
    let event_type = EventType::parse(record.event_type)
        .ok_or_else(|| damaged(format!("unknown event type {:?}", record.event_type)))?;
    let subject = format!("{FEED_SUBJECT_PREFIX}.{}", event_type.suffix());
    let body = FeedBody {
        specversion: "1.0",
        id: &record.event_id,
        source: &record.source,
        event_type: record.event_type,
        subject: entry.loop_id.as_str(),
        time: record.time,
        datacontenttype: "application/json",
        position: entry.position,
        loopversion: entry.version,
        hash: &entry.hash,
        data: &record.data,
        personaldata: (!event_type.personal_fields().is_empty()).then_some("omitted"),
    };
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/cloudevents+json");
    headers.insert(POSITION_HEADER, entry.position.to_string().as_str());
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        entry.position.to_string().as_str(),
    );
    let payload = serde_json::to_vec(&body).map_err(|err| damaged(err.to_string()))?;
    let size = wire_size(&headers, payload.len());
    if size <= max_payload {
        return Ok(FeedMessage {
            subject,
            headers,
            payload,
            reference: None,
        });
    }
    // Too big for NATS: a reference with everything but `data`, which consumers fetch over
    // HTTP. The digest lets them check they got the message that was not sent.
    let mut body = serde_json::to_value(&body).map_err(|err| damaged(err.to_string()))?;
    if let Value::Object(attributes) = &mut body {
        attributes.shift_remove("data");
        attributes.shift_remove("datacontenttype");
        attributes.insert("reference".to_owned(), json!(true));
        attributes.insert("size".to_owned(), json!(payload.len()));
        attributes.insert("sha256".to_owned(), json!(Hash::of(&payload).to_hex()));
        attributes.insert(
            "dataref".to_owned(),
            json!(format!(
                "/v1/events?after={}&limit=1",
                entry.position.saturating_sub(1)
            )),
        );
    }
    headers.insert(REFERENCE_HEADER, "true");
    let reference = serde_json::to_vec(&body).map_err(|err| damaged(err.to_string()))?;
    if wire_size(&headers, reference.len()) > max_payload {
        return Err(damaged(format!(
            "even a reference to it does not fit in the NATS server's max_payload of {max_payload} bytes; raise max_payload"
        )));
    }
    Ok(FeedMessage {
        subject,
        headers,
        payload: reference,
        reference: Some(size),
    })
}

/// A feed message's CloudEvent, attributes in the order they are written.
#[derive(Serialize)]
struct FeedBody<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    subject: &'a str,
    #[serde(serialize_with = "as_display")]
    time: Timestamp,
    datacontenttype: &'static str,
    position: u64,
    loopversion: u64,
    hash: &'a Hash,
    data: &'a PublicData<'a>,
    /// [`PERSONAL_DATA_ATTRIBUTE`]: `omitted` for event types with personal fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    personaldata: Option<&'static str>,
}

fn as_display<S: serde::Serializer>(time: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(time)
}

/// The size NATS counts against `max_payload`: the header block as sent
/// (`NATS/1.0\r\n`, each `name: value\r\n`, a blank line) plus the payload.
pub(crate) fn wire_size(headers: &HeaderMap, payload: usize) -> usize {
    let block = headers.iter().fold(
        b"NATS/1.0\r\n".len() + b"\r\n".len(),
        |len, (name, values)| {
            let name: &str = name.as_ref();
            len + values
                .iter()
                .map(|value| name.len() + b": ".len() + value.as_str().len() + b"\r\n".len())
                .sum::<usize>()
        },
    );
    block + payload
}

/// The last position the feed has published, kept in a file.
#[derive(Debug)]
struct Checkpoint {
    path: PathBuf,
    position: u64,
    saved: u64,
    saved_at: Instant,
}

impl Checkpoint {
    /// Reads the checkpoint; a missing file means nothing was published yet.
    fn load(path: &Path) -> Result<Self, WorkerError> {
        let position = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|err| {
                WorkerError::Checkpoint(format!(
                    "the feed checkpoint {} is damaged ({err}); delete it to re-publish the whole log",
                    path.display()
                ))
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => {
                return Err(WorkerError::Checkpoint(format!(
                    "cannot read the feed checkpoint {}: {err}",
                    path.display()
                )));
            }
        };
        Ok(Self {
            path: path.to_owned(),
            position,
            saved: position,
            saved_at: Instant::now(),
        })
    }

    /// Moves to `position`, saving when the last save is old enough.
    fn advance(&mut self, position: u64) -> Result<(), WorkerError> {
        self.position = position;
        if self.saved_at.elapsed() >= CHECKPOINT_EVERY {
            self.save()?;
        }
        Ok(())
    }

    /// Writes the position durably: temp file, fsync, rename, fsync of the directory.
    fn save(&mut self) -> Result<(), WorkerError> {
        if self.saved == self.position {
            return Ok(());
        }
        write_atomically(&self.path, self.position.to_string().as_bytes()).map_err(|err| {
            WorkerError::Checkpoint(format!(
                "cannot save the feed checkpoint {}: {err}",
                self.path.display()
            ))
        })?;
        self.saved = self.position;
        self.saved_at = Instant::now();
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use closeloop_domain::{Event, LoopEvent, LoopId};

    use super::*;

    /// A change whose `evidence` (never personal data) is `size` bytes, stored at position 7
    /// without the checks of today (as an event from before the size limits was).
    fn change(size: usize) -> StoredEvent {
        let data = json!({"by": "ward manager", "description": "Quiet hours", "evidence": "x".repeat(size)});
        stored(EventType::ChangeMade, data)
    }

    fn stored(event_type: EventType, data: Value) -> StoredEvent {
        let event = Event {
            event_id: "evt-7".to_owned(),
            source: "urn:trust:rxx:pals".to_owned(),
            time: "2026-11-27T09:30:00Z".parse().unwrap(),
            payload: LoopEvent::from_stored_data(event_type, data).unwrap(),
            actor: None,
        };
        StoredEvent {
            position: 7,
            loop_id: LoopId::parse("loop-big").unwrap(),
            version: 2,
            prev_hash: Hash::ZERO,
            hash: Hash::of(b"entry"),
            record: record::encode(&event),
        }
    }

    fn body(message: &FeedMessage) -> Value {
        serde_json::from_slice(&message.payload).unwrap()
    }

    fn header(message: &FeedMessage, name: &str) -> Option<String> {
        message
            .headers
            .get(name)
            .map(|value| value.as_str().to_owned())
    }

    #[test]
    fn an_event_that_fits_is_published_whole() {
        let message = feed_message(&change(100), 65_536).unwrap();
        assert_eq!(message.subject, "closeloop.events.loop.change_made");
        assert_eq!(message.reference, None);
        let body = body(&message);
        assert_eq!(body["data"]["evidence"], "x".repeat(100));
        assert_eq!(body["position"], 7);
        assert_eq!(body.get("reference"), None);
        assert_eq!(header(&message, "Nats-Msg-Id").as_deref(), Some("7"));
        assert_eq!(header(&message, REFERENCE_HEADER), None);
    }

    #[test]
    fn an_event_too_big_for_the_server_becomes_a_reference_that_fits() {
        let max_payload = 65_536;
        let entry = change(100_000);
        let whole = feed_message(&entry, usize::MAX).unwrap();
        let message = feed_message(&entry, max_payload).unwrap();
        assert_eq!(message.subject, "closeloop.events.loop.change_made");
        assert_eq!(
            message.reference,
            Some(wire_size(&whole.headers, whole.payload.len()))
        );
        assert!(wire_size(&message.headers, message.payload.len()) <= max_payload);
        let body = body(&message);
        assert_eq!(body["reference"], true);
        assert_eq!(body.get("data"), None);
        assert_eq!(body["size"], whole.payload.len());
        assert_eq!(body["sha256"], Hash::of(&whole.payload).to_hex());
        assert_eq!(body["dataref"], "/v1/events?after=6&limit=1");
        for attribute in [
            "id",
            "source",
            "type",
            "subject",
            "time",
            "position",
            "loopversion",
            "hash",
        ] {
            assert_eq!(
                body[attribute],
                self::body(&whole)[attribute],
                "{attribute}"
            );
        }
        assert_eq!(header(&message, REFERENCE_HEADER).as_deref(), Some("true"));
        assert_eq!(header(&message, "Nats-Msg-Id").as_deref(), Some("7"));
    }

    #[test]
    fn a_server_too_small_even_for_a_reference_is_an_error_that_says_what_to_do() {
        let err = feed_message(&change(1_000), 300).err().unwrap();
        assert!(err.to_string().contains("raise max_payload"), "{err}");
    }

    #[test]
    fn feedback_goes_out_without_its_personal_fields_and_says_so() {
        let entry = stored(
            EventType::FeedbackReceived,
            json!({
                "org_unit": "rxx/site-a/ward-7", "channel": "survey", "ratings": {"fft": 2},
                "story": "Nurse Ann was kind", "themes": ["staff attitude"],
                "author": {"name": "Jo Bloggs", "contact": "jo@example.org"}, "kiosk": "k-7"
            }),
        );
        let message = feed_message(&entry, 65_536).unwrap();
        let body = body(&message);
        for field in EventType::FeedbackReceived.personal_fields() {
            assert_eq!(body["data"].get(*field), None, "{field}");
        }
        assert_eq!(body[PERSONAL_DATA_ATTRIBUTE], "omitted");
        assert_eq!(body["data"]["ratings"]["fft"], 2);
        assert_eq!(body["data"]["themes"][0], "staff attitude");
        assert_eq!(body["data"]["kiosk"], "k-7");
        let text = String::from_utf8(message.payload).unwrap();
        for personal in ["Nurse Ann", "Jo Bloggs", "jo@example.org"] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
    }

    #[test]
    fn a_feed_message_is_the_cloudevent_with_its_attributes_in_order() {
        let message = feed_message(&change(3), 65_536).unwrap();
        let expected = format!(
            r#"{{"specversion":"1.0","id":"evt-7","source":"urn:trust:rxx:pals","type":"org.closeloop.loop.change_made","subject":"loop-big","time":"2026-11-27T09:30:00Z","datacontenttype":"application/json","position":7,"loopversion":2,"hash":"{}","data":{{"by":"ward manager","description":"Quiet hours","evidence":"xxx"}}}}"#,
            Hash::of(b"entry").to_hex()
        );
        assert_eq!(String::from_utf8(message.payload).unwrap(), expected);
    }

    #[test]
    fn an_event_type_without_personal_fields_has_no_marker() {
        assert!(EventType::ChangeMade.personal_fields().is_empty());
        let body = body(&feed_message(&change(10), 65_536).unwrap());
        assert_eq!(body.get(PERSONAL_DATA_ATTRIBUTE), None);
        assert_eq!(body["data"]["description"], "Quiet hours");
    }

    #[test]
    fn the_wire_size_counts_the_header_block_as_nats_does() {
        let mut headers = HeaderMap::new();
        headers.insert("A", "bc");
        // "NATS/1.0\r\n" + "A: bc\r\n" + "\r\n" + 5 bytes of payload.
        assert_eq!(wire_size(&headers, 5), 10 + 7 + 2 + 5);
    }

    #[test]
    fn the_fence_header_is_counted_at_its_largest() {
        let mut headers = HeaderMap::new();
        let without = wire_size(&headers, 0);
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            u64::MAX.to_string().as_str(),
        );
        assert_eq!(wire_size(&headers, 0) - without, FENCE_HEADER_SIZE);
    }

    #[test]
    fn a_checkpoint_survives_a_reload_and_a_damaged_one_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.checkpoint");
        let mut checkpoint = Checkpoint::load(&path).unwrap();
        assert_eq!(checkpoint.position, 0);
        checkpoint.position = 42;
        checkpoint.save().unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap().position, 42);

        std::fs::write(&path, "forty-two").unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("delete it"), "{err}");
    }
}
