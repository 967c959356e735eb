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

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::message::PublishMessage;
use closeloop_domain::EventType;
use closeloop_store::{EventStore, StoredEvent, record};
use serde_json::json;
use tokio::sync::watch;

use crate::IngestOptions;
use crate::status::{Shared, Worker};
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

/// Publishes the log after the checkpoint until `shutdown` turns true (then saves the
/// checkpoint and returns `Ok`) or publishing fails (an error: the caller tries again after a
/// pause, from the last checkpoint).
pub(crate) async fn run<S: EventStore>(
    store: &Arc<S>,
    js: &Context,
    options: &IngestOptions,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), async_nats::Error> {
    streams::feed_stream(js, options.replicas).await?;
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
                    break Err("the event store was closed".into());
                },
            }
            continue;
        }
        if let Err(err) = publish_page(js, checkpoint.position, &entries).await {
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
async fn publish_page(
    js: &Context,
    after: u64,
    entries: &[StoredEvent],
) -> Result<(), async_nats::Error> {
    let mut acks = Vec::with_capacity(entries.len());
    for (expected, entry) in (after + 1..).zip(entries) {
        if entry.position != expected {
            return Err(format!(
                "the log skipped from position {} to {}; reading again",
                expected - 1,
                entry.position
            )
            .into());
        }
        let (subject, message) = feed_message(entry)?;
        acks.push(js.send_publish(subject, message).await?);
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// The subject and message that carry `entry` on the feed.
pub(crate) fn feed_message(
    entry: &StoredEvent,
) -> Result<(String, PublishMessage), async_nats::Error> {
    let view = record::decode_view(&entry.record)?;
    let event_type = EventType::parse(&view.event_type).ok_or_else(|| {
        format!(
            "position {} holds an unknown event type {:?}",
            entry.position, view.event_type
        )
    })?;
    let body = json!({
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
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/cloudevents+json");
    headers.insert(POSITION_HEADER, entry.position.to_string().as_str());
    let message = PublishMessage::build()
        .payload(serde_json::to_vec(&body)?.into())
        .headers(headers)
        .message_id(entry.position.to_string());
    Ok((
        format!("{FEED_SUBJECT_PREFIX}.{}", event_type.suffix()),
        message,
    ))
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
    fn load(path: &Path) -> Result<Self, async_nats::Error> {
        let position = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|err| {
                format!(
                    "the feed checkpoint {} is damaged ({err}); delete it to re-publish the whole log",
                    path.display()
                )
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => {
                return Err(format!("cannot read the feed checkpoint {}: {err}", path.display()).into());
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
    fn advance(&mut self, position: u64) -> Result<(), async_nats::Error> {
        self.position = position;
        if self.saved_at.elapsed() >= CHECKPOINT_EVERY {
            self.save()?;
        }
        Ok(())
    }

    /// Writes the position durably: temp file, fsync, rename, fsync of the directory.
    fn save(&mut self) -> Result<(), async_nats::Error> {
        if self.saved == self.position {
            return Ok(());
        }
        write_atomically(&self.path, self.position.to_string().as_bytes()).map_err(|err| {
            format!(
                "cannot save the feed checkpoint {}: {err}",
                self.path.display()
            )
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
    use super::*;

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
