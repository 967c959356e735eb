//! Closeloop's event store on a NATS JetStream stream, for when one machine is not enough.
//!
//! The log is one stream (`CLOSELOOP_LOG` by default, file storage, `deny_delete` and
//! `deny_purge`, R1 or R3) that any number of `closeloop serve` replicas share. Its entries are
//! byte for byte those of the embedded sled store — same positions, versions, `prev_hash`,
//! hashes, records and Merkle head — so auditors and the conformance suite cannot tell the two
//! apart. What differs is only where the bytes live and who orders them.
//!
//! # Messages: group commit, fenced
//! The stream's first message is a genesis that names the format; every later message is a
//! **batch** of whole entries with consecutive positions ([`batch`]). Each replica has one
//! writer thread that does what the sled store's writer does — takes every append waiting
//! (those with personal data sealed ahead of it by the sealer thread, see
//! [`intake`](closeloop_store::backend::intake)), checks versions and idempotency keys against
//! its index, gives positions and hashes ([`closeloop_store::backend::commit`]) — and then publishes the batch
//! as **one message** with `Nats-Expected-Last-Sequence` set to the last message it has applied.
//! JetStream stores the message only if nobody else wrote since, so:
//! - an append touching many loops is one message: stored whole or not at all;
//! - two replicas can never both extend the same head. The one that loses the fence (JetStream
//!   answers "wrong last sequence") reads the messages it missed, stages the same appends again
//!   against the new head (now a version conflict, a repeat, or new positions) and retries.
//!
//! Each batch also carries a `Nats-Msg-Id` unique to the writer and the attempt. When an
//! acknowledgement is lost (a timeout, a node failing over), the writer publishes the same bytes
//! again under the same id and fence: if the first copy was stored, JetStream either answers
//! "duplicate" with its sequence or refuses the fence, and the writer then finds its own id among
//! the messages it reads back. Either way the batch is stored once and its callers hear so.
//!
//! # Reading, and other replicas' writes
//! A follower task reads the stream through an ordered consumer and applies every message to
//! the replica's in-memory index (each loop's positions and chain head, every idempotency key,
//! the Merkle roots), checking that each entry follows its loop. Idempotency keys of any age are
//! answered from that index — the durable record of every key is the log itself, since each
//! entry header carries its key — while `Nats-Msg-Id` only guards the retry of one publish.
//! Reads stop at what the replica has applied, which JetStream has acknowledged: stored on a
//! quorum of nodes. Entries are read back by fetching the messages that hold them, with a
//! bounded cache of recent messages.
//!
//! The writer stages with the index locked for reading, so it never waits on NATS there: an
//! entry it needs (the original of a repeated idempotency key) that is not in the cache is
//! noted, the lock let go, the entry fetched, and the batch staged again. A lock held across
//! the fetch would stall the follower and every reader, and, on a single-threaded runtime,
//! the very connection the fetch waits on.
//!
//! # Failure cases
//! - **A NATS node fails** (R3): JetStream elects a new stream leader within seconds; the writer
//!   retries the same publish (same id, same fence; each attempt waits at most 2 s for its
//!   acknowledgement, which a leader change can lose) until
//!   [`JetStreamStoreOptions::request_timeout`] passes, then fails the appends in hand with [`StoreError::Backend`] (HTTP 503). Their
//!   callers retry with the same idempotency keys, which finds the batch if it was stored after
//!   all.
//! - **Contention**: two replicas writing at once each lose some fences; every lost fence means
//!   the other one progressed. A writer gives up after [`MAX_FENCE_ATTEMPTS`] in a row.
//! - **A message that does not follow the log** (altered, or written by something else): the
//!   replica stops accepting appends and says why, as the sled store does for a damaged entry;
//!   `closeloop verify` reports the first bad position.
//! - **An append larger than one message** (the server's `max_payload`, 1 MiB by default):
//!   refused with [`AppendError::TooLarge`] before anything is written (HTTP 422
//!   `invalid_data`, naming the first event that does not fit).
//! - **Durability**: JetStream acknowledges a message once a quorum has it in memory and in
//!   its write-ahead files, not after fsync (nats-server 2.9 flushes every two minutes).
//!   R3 across failure domains is the defence on 2.9; `sync_interval: always` (2.10+) fsyncs
//!   every write. See `docs/operations.md` and `deploy/nats/`.

mod batch;
mod follower;
mod log;
mod reads;
mod writer;

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use closeloop_domain::LoopId;
use closeloop_store::backend::commit;
use closeloop_store::backend::intake::{Intake, IntakeOptions};
use closeloop_store::{
    AppendError, AppendOutcome, AppendRequest, Committed, EventStore, KeyHandle, StoreError,
    StoredEvent,
};
use tokio::sync::{mpsc, watch};

use crate::log::Log;
use crate::reads::Cache;

pub use crate::writer::MAX_FENCE_ATTEMPTS;

/// How long opening the store waits for the next message of the log before it gives up.
const OPEN_STALL_DEADLINE: Duration = Duration::from_secs(30);

/// Where and how the log is kept; the defaults suit a single node and a three-node cluster
/// alike, except [`replicas`](Self::replicas).
#[derive(Debug, Clone)]
pub struct JetStreamStoreOptions {
    /// The stream that holds the log; created when missing.
    pub stream: String,
    /// The one subject the stream takes.
    pub subject: String,
    /// Copies JetStream keeps of each message: 1 on a single node, 3 on a cluster (a quorum of
    /// 2 acknowledges each write). Used only when the stream is created.
    pub replicas: usize,
    /// The most events one batch message takes.
    pub max_batch_events: usize,
    /// How many appends may wait for the writer before callers are held back.
    pub queue_capacity: usize,
    /// How long a publish may keep retrying, and any other NATS request may take, before the
    /// appends or reads waiting on it fail.
    pub request_timeout: Duration,
    /// Bytes of recent messages kept in memory for reads.
    pub cache_bytes: usize,
    /// The key store personal data is sealed with; `None` keeps it plain (tests, benchmarks).
    pub keys: Option<KeyHandle>,
}

impl Default for JetStreamStoreOptions {
    fn default() -> Self {
        Self {
            stream: "CLOSELOOP_LOG".to_owned(),
            subject: "closeloop.log".to_owned(),
            replicas: 1,
            max_batch_events: 4096,
            queue_capacity: 8192,
            request_timeout: Duration::from_secs(10),
            cache_bytes: 64 * 1024 * 1024,
            keys: None,
        }
    }
}

/// The event store on JetStream. See the [crate docs](crate) for the design.
#[derive(Debug)]
pub struct JetStreamStore {
    shared: Arc<Shared>,
    intake: Intake,
    /// The sealer (with a key store), then the writer: the order they finish in.
    threads: Vec<JoinHandle<()>>,
    follower: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub stream: stream::Stream,
    pub options: JetStreamStoreOptions,
    /// The largest batch message, in bytes.
    pub max_message_bytes: usize,
    pub log: RwLock<Log>,
    /// The last position applied: what reads may see.
    pub durable: watch::Sender<u64>,
    /// Why the store stopped, once it has.
    pub failure: watch::Sender<Option<String>>,
    pub cache: Cache,
    /// Messages the stream held beyond the last one the follower applied, when it applied it.
    pub behind: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(crate) fn log(&self) -> RwLockReadGuard<'_, Log> {
        self.log.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stopped(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Stops accepting appends for good (until restarted), saying why.
    pub(crate) fn stop(&self, reason: String) {
        let first = self.failure.send_if_modified(|failure| {
            if failure.is_some() {
                return false;
            }
            *failure = Some(reason.clone());
            true
        });
        if first {
            tracing::error!(%reason, "event store stopped: it accepts no more appends until restarted");
            metrics::counter!("closeloop_store_failures_total").increment(1);
        }
    }

    /// Lets readers see the log up to `head`.
    pub(crate) fn publish_head(&self, head: u64) {
        self.durable.send_if_modified(|durable| {
            let moved = head > *durable;
            *durable = (*durable).max(head);
            moved
        });
    }

    fn durable_head(&self) -> u64 {
        *self.durable.borrow()
    }
}

impl JetStreamStore {
    /// Opens the log on `client`'s JetStream — creating the stream and its genesis when
    /// missing — reads it to its current end, and starts the writer and the follower.
    ///
    /// # Errors
    /// When JetStream cannot be reached or refuses the stream, when an existing stream with
    /// this name is not a Closeloop log (or allows deletes), or holds a newer format.
    pub async fn open(
        client: async_nats::Client,
        options: JetStreamStoreOptions,
    ) -> Result<Self, StoreError> {
        let js = jetstream::context::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client.clone());
        let stream = ensure_stream(&js, &options).await?;
        let max_payload = client.server_info().max_payload;
        // Headers (message id, fence) and the protocol line fit in the margin.
        let max_message_bytes = max_payload.saturating_sub(4096).max(64 * 1024);
        let (durable, _) = watch::channel(0);
        let (failure, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            client,
            js,
            stream,
            cache: Cache::new(options.cache_bytes),
            options,
            max_message_bytes,
            log: RwLock::new(Log::default()),
            durable,
            failure,
            behind: std::sync::atomic::AtomicU64::new(0),
        });
        let last = last_sequence(&shared).await?;
        let started = std::time::Instant::now();
        let follower = tokio::spawn(follower::run(Arc::clone(&shared)));
        // The log as it stood when we opened it must be in the index before any append is
        // staged against it, or before anyone reads.
        let mut durable = shared.durable.subscribe();
        let mut failure = shared.failure.subscribe();
        let mut progress = (shared.log().applied, std::time::Instant::now());
        loop {
            let applied = shared.log().applied;
            if applied >= last {
                break;
            }
            if applied != progress.0 {
                progress = (applied, std::time::Instant::now());
            } else if progress.1.elapsed() > OPEN_STALL_DEADLINE {
                follower.abort();
                return Err(StoreError::Backend(format!(
                    "reading the log stream at start stopped at message {applied} of {last} for {} s; is the NATS cluster healthy? The service log has the follower's errors",
                    OPEN_STALL_DEADLINE.as_secs()
                )));
            }
            if let Some(reason) = failure.borrow_and_update().clone() {
                follower.abort();
                return Err(StoreError::Stopped(reason));
            }
            tokio::select! {
                _ = durable.changed() => {}
                _ = failure.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let head = shared.log().head;
        tracing::info!(
            stream = %shared.options.stream,
            head,
            loops = shared.log().index.loop_count(),
            seconds = started.elapsed().as_secs_f64(),
            "event store opened on JetStream"
        );
        let (jobs, job_rx) = mpsc::channel(shared.options.queue_capacity.max(1));
        let writer = writer::Writer::new(Arc::clone(&shared), tokio::runtime::Handle::current());
        let (intake, sealer) = Intake::start(
            jobs,
            IntakeOptions {
                keys: shared.options.keys.clone(),
                queue_capacity: shared.options.queue_capacity,
                max_batch_events: shared.options.max_batch_events,
                on_failure: |reason: &str| StoreError::Backend(reason.to_owned()),
            },
        )?;
        let writer = std::thread::Builder::new()
            .name("closeloop-js-writer".into())
            .spawn(move || writer.run(job_rx))
            .map_err(|err| StoreError::Backend(format!("cannot start the writer thread: {err}")))?;
        Ok(Self {
            shared,
            intake,
            threads: sealer.into_iter().chain([writer]).collect(),
            follower,
        })
    }

    /// Stops accepting appends, answers everything queued, and waits for the writer.
    pub async fn close(mut self) {
        self.intake.close();
        let threads = std::mem::take(&mut self.threads);
        // A panicked thread has nothing left to answer.
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        self.follower.abort();
    }

    /// The stream sequence of the last message this replica has applied (the genesis counts):
    /// how many batches the log holds, for benchmarks and tests.
    #[must_use]
    pub fn applied_messages(&self) -> u64 {
        self.shared.log().applied
    }
}

impl Drop for JetStreamStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Creates the log stream when missing, or checks the one there is.
async fn ensure_stream(
    js: &jetstream::Context,
    options: &JetStreamStoreOptions,
) -> Result<stream::Stream, StoreError> {
    let backend = |what: &str, err: &dyn std::fmt::Display| {
        StoreError::Backend(format!(
            "{what} the log stream {}: {err}; is JetStream enabled on the NATS server?",
            options.stream
        ))
    };
    // An existing stream is taken as it is (and checked below); a missing one is created.
    let config = stream::Config {
        name: options.stream.clone(),
        subjects: vec![options.subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: options.replicas.max(1),
        deny_delete: true,
        deny_purge: true,
        duplicate_window: Duration::from_secs(120),
        ..stream::Config::default()
    };
    let mut stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|err| backend("cannot open or create", &err))?;
    let info = stream
        .info()
        .await
        .map_err(|err| backend("cannot read", &err))?;
    let config = &info.config;
    if !config.deny_delete || !config.deny_purge {
        return Err(StoreError::Backend(format!(
            "the stream {} allows deleting or purging messages, which an append-only log must \
             not: give Closeloop a stream of its own (CLOSELOOP_JETSTREAM_STREAM) or recreate \
             this one with deny_delete and deny_purge",
            options.stream
        )));
    }
    if config.subjects != [options.subject.clone()] {
        return Err(StoreError::Backend(format!(
            "the stream {} takes the subjects {:?}, not only {}: it is not a Closeloop log",
            options.stream, config.subjects, options.subject
        )));
    }
    if info.state.last_sequence == 0 {
        // Two replicas starting at once both publish it; the shared message id keeps one.
        let ack = js
            .send_publish(
                options.subject.clone(),
                jetstream::message::PublishMessage::build()
                    .payload(batch::genesis().into())
                    .message_id(format!("{}-genesis", options.stream)),
            )
            .await
            .map_err(|err| backend("cannot start", &err))?
            .await
            .map_err(|err| backend("cannot start", &err))?;
        if ack.sequence != 1 {
            return Err(StoreError::Backend(format!(
                "the stream {} took other messages before its genesis: it is not a Closeloop log",
                options.stream
            )));
        }
    }
    Ok(stream)
}

/// The stream's last sequence now.
pub(crate) async fn last_sequence(shared: &Shared) -> Result<u64, StoreError> {
    let info = tokio::time::timeout(shared.options.request_timeout, shared.stream.get_info())
        .await
        .map_err(|_| StoreError::Backend("NATS did not describe the log stream in time".into()))?
        .map_err(|err| StoreError::Backend(format!("cannot read the log stream's state: {err}")))?;
    Ok(info.state.last_sequence)
}

impl EventStore for JetStreamStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        if let Some(reason) = self.shared.stopped() {
            return Err(StoreError::Stopped(reason).into());
        }
        let request = commit::prepare(request, self.shared.options.keys.as_deref())?;
        // The whole append is one message: it must fit in one, or nothing is written.
        let room = self
            .shared
            .max_message_bytes
            .saturating_sub(batch::BATCH_HEADER);
        if let Some((event_index, size)) = request.first_over(room) {
            return Err(AppendError::TooLarge {
                event_index,
                size,
                limit: room,
            });
        }
        // Sealed ahead of the writer, so it never waits for NATS to make a key.
        self.intake.submit(request).await
    }

    async fn read_loop(&self, loop_id: &LoopId) -> Result<Vec<StoredEvent>, StoreError> {
        let durable = self.shared.durable_head();
        let (positions, batches) = {
            let log = self.shared.log();
            let positions = log.index.positions_upto(loop_id, durable);
            let mut batches: Vec<_> = positions.iter().filter_map(|&p| log.batch_of(p)).collect();
            batches.dedup_by_key(|b| b.sequence);
            (positions, batches)
        };
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        self.shared
            .read_entries(batches, |p| positions.binary_search(&p).is_ok())
            .await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let durable = self.shared.durable_head();
        if after >= durable || limit == 0 {
            return Ok(Vec::new());
        }
        let upto = durable.min(after.saturating_add(limit as u64));
        let batches = self.shared.log().batches_between(after, upto);
        self.shared
            .read_entries(batches, |p| p > after && p <= upto)
            .await
    }

    fn head(&self) -> u64 {
        self.shared.durable_head()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    fn ready(&self) -> Result<(), StoreError> {
        if let Some(reason) = self.shared.stopped() {
            return Err(StoreError::Stopped(reason));
        }
        if self.intake.is_closed() {
            return Err(StoreError::Stopped(
                "the writer or sealer thread ended".to_owned(),
            ));
        }
        if self.shared.client.connection_state() != async_nats::connection::State::Connected {
            return Err(StoreError::Backend(
                "the connection to NATS is down; it reconnects on its own".to_owned(),
            ));
        }
        Ok(())
    }

    fn replica_lag(&self) -> Option<u64> {
        Some(
            self.shared
                .behind
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn with_merkle<R>(&self, f: impl FnOnce(&closeloop_store::merkle::MerkleIndex) -> R) -> R {
        f(&self.shared.log().index.merkle)
    }

    async fn lookup(&self, source: &str, event_id: &str) -> Result<Option<Committed>, StoreError> {
        let candidates = self.shared.log().index.candidates_for_key(source, event_id);
        for position in candidates {
            if let Some(found) = self.shared.confirm_key(position, source, event_id).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

impl Shared {
    /// The entry at `position` as a [`Committed`], if it really carries this idempotency key.
    pub(crate) async fn confirm_key(
        &self,
        position: u64,
        source: &str,
        event_id: &str,
    ) -> Result<Option<Committed>, StoreError> {
        let Some(at) = self.log().batch_of(position) else {
            return Ok(None);
        };
        self.confirm_at(at, position, source, event_id).await
    }

    /// [`confirm_key`](Self::confirm_key) for an entry known to be in batch `at`; takes no lock.
    async fn confirm_at(
        &self,
        at: crate::log::BatchAt,
        position: u64,
        source: &str,
        event_id: &str,
    ) -> Result<Option<Committed>, StoreError> {
        let message = self.message(at.sequence).await?;
        match entry_in(at.sequence, &message, position)? {
            Some(entry) => closeloop_store::backend::entry::committed_under_key(
                position, entry, source, event_id,
            ),
            None => Ok(None),
        }
    }
}

/// The bytes of the entry at `position` in log stream message `sequence`, `None` when the
/// message does not hold it.
pub(crate) fn entry_in(
    sequence: u64,
    message: &[u8],
    position: u64,
) -> Result<Option<&[u8]>, StoreError> {
    let decoded = batch::decode(sequence, message)?;
    Ok(position
        .checked_sub(decoded.first)
        .and_then(|offset| decoded.entries.get(usize::try_from(offset).ok()?))
        .copied())
}
