//! The outbound feed: every stored event, published on `closeloop.events.<type suffix>` in
//! position order, at least once, with `Nats-Msg-Id` = its global position.
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

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::message::PublishMessage;
use closeloop_domain::EventType;
use closeloop_store::{EventStore, Hash, StoredEvent, record};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::IngestOptions;
use crate::status::{Shared, Worker, WorkerError};
use crate::streams::{self, FEED_SUBJECT_PREFIX};

/// Events read and published per page: all are in flight before the first ack is awaited, so
/// this stays well below the client's limit of 5,000 unacknowledged publishes (beyond it
/// `send_publish` waits for acks that nobody awaits yet).
const PAGE: usize = 1024;
/// How often the checkpoint file is written at most while events flow.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// How long the feed pauses before each page while ingestion works through a backlog.
const YIELD_TO_INGESTION: Duration = Duration::from_millis(200);
/// The header with the event's global position, besides `Nats-Msg-Id`.
pub const POSITION_HEADER: &str = "Closeloop-Position";
/// The extension attribute, with the value `omitted`, on every feed message of an event type
/// that has personal fields: they are left out of `data`.
pub const PERSONAL_DATA_ATTRIBUTE: &str = "personaldata";
/// The header set to `true` on a reference: a message that stands for an event too big to
/// publish, which consumers fetch with `GET /v1/events`.
pub const REFERENCE_HEADER: &str = "Closeloop-Reference";

/// Publishes the log after the checkpoint until `shutdown` turns true (then saves the
/// checkpoint and returns `Ok`) or publishing fails (an error: the caller tries again after a
/// pause, from the last checkpoint).
pub(crate) async fn run<S: EventStore>(
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
    tracing::info!(
        from = checkpoint.position,
        stream = streams::FEED_STREAM,
        "publishing stored events to NATS"
    );
    let mut head = store.subscribe();
    let result = loop {
        if *shutdown.borrow() {
            break Ok(());
        }
        if shared.ingest_backlogged() {
            // Storing a backlog of feedback comes first; the feed catches up a page at a
            // time meanwhile, and at full speed once the backlog is gone.
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {}
                () = tokio::time::sleep(YIELD_TO_INGESTION) => {}
            }
        }
        let entries = match store.read_all(checkpoint.position, PAGE).await {
            Ok(entries) => entries,
            Err(err) => break Err(err.into()),
        };
        if entries.is_empty() {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {}
                changed = head.changed() => if changed.is_err() {
                    break Err(WorkerError::Store(closeloop_store::StoreError::Backend(
                        "the event store was closed".to_owned(),
                    )));
                },
            }
            continue;
        }
        // Read for each page: after a reconnect the server (of a cluster) may be another one.
        let max_payload = js.client().max_payload();
        if let Err(err) = publish_page(js, checkpoint.position, &entries, max_payload).await {
            break Err(err);
        }
        let last = entries
            .last()
            .map_or(checkpoint.position, |entry| entry.position);
        shared.set_feed_published(last);
        metrics::counter!("closeloop_feed_published_total").increment(entries.len() as u64);
        checkpoint.advance(last)?;
    };
    checkpoint.save()?;
    result
}

/// Publishes `entries`, which must follow `after` without a gap, and waits for every ack.
/// An entry too big for `max_payload` goes out as a reference (see the module docs).
async fn publish_page(
    js: &Context,
    after: u64,
    entries: &[StoredEvent],
    max_payload: usize,
) -> Result<(), WorkerError> {
    let mut acks = Vec::with_capacity(entries.len());
    for (expected, entry) in (after + 1..).zip(entries) {
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
        let message = PublishMessage::build()
            .payload(payload.into())
            .headers(headers);
        let ack = js
            .send_publish(subject, message)
            .await
            .map_err(|err| WorkerError::Publish(err.into()))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await.map_err(|err| WorkerError::Publish(err.into()))?;
    }
    Ok(())
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
    let view = record::decode_public_view(&entry.record).map_err(|err| damaged(err.to_string()))?;
    let event_type = EventType::parse(&view.event_type)
        .ok_or_else(|| damaged(format!("unknown event type {:?}", view.event_type)))?;
    let subject = format!("{FEED_SUBJECT_PREFIX}.{}", event_type.suffix());
    let mut body = json!({
        "specversion": "1.0",
        "id": view.event_id,
        "source": view.source,
        "type": view.event_type,
        "subject": entry.loop_id.as_str(),
        "time": view.time.to_string(),
        "datacontenttype": "application/json",
        "position": entry.position,
        "loopversion": entry.version,
        "hash": entry.hash,
        "data": view.data,
    });
    if !event_type.personal_fields().is_empty()
        && let Value::Object(attributes) = &mut body
    {
        attributes.insert(PERSONAL_DATA_ATTRIBUTE.to_owned(), json!("omitted"));
    }
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
    if let Value::Object(attributes) = &mut body {
        attributes.remove("data");
        attributes.remove("datacontenttype");
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
