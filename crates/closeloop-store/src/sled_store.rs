//! The embedded [`EventStore`] on sled, with group commit.
//!
//! # Layout
//! One sled tree, `events`, with four key spaces, so that one `apply_batch` writes an append
//! atomically:
//!
//! | key | value |
//! |---|---|
//! | `e` ‖ position (u64 BE) | version (u64 BE) ‖ prev_hash ‖ hash ‖ id length (u8) ‖ loop id ‖ record |
//! | `s` ‖ loop id ‖ 0x00 ‖ version (u64 BE) | position (u64 BE) ‖ hash |
//! | `k` ‖ source length (u32 BE) ‖ source ‖ event id | position (u64 BE) |
//! | `m` ‖ name | store metadata (the format version) |
//!
//! # Group commit
//! Callers send their [`AppendRequest`] with a reply channel to one **writer thread**. It takes
//! everything waiting (up to a cap), checks each request against current loop versions and
//! idempotency keys (later requests in a batch see earlier ones), assigns positions and hashes,
//! and applies the whole batch in one `apply_batch`. It then hands the batch's replies to the
//! **flusher thread**, which fsyncs (one flush for every batch waiting), moves the durable head
//! and only then answers. While one batch is being flushed the writer prepares the next, so
//! the disk never waits for the CPU or the other way round.
//!
//! Reads stop at the durable head: nobody sees an event that a crash could still take away.
//! If a write or a flush fails, the store stops accepting appends: it cannot know what reached
//! the disk, so it acknowledges nothing more until it is reopened.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;

use closeloop_domain::LoopId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::chain::{Hash, entry_hash};
use crate::record;
use crate::{
    AppendError, AppendOutcome, AppendRequest, Committed, EventStore, StoreError, StoredEvent,
};

/// The on-disk format this build writes and reads.
const FORMAT_VERSION: u32 = 1;
const FORMAT_KEY: &[u8] = b"mformat";
const ENTRY: u8 = b'e';
const STREAM: u8 = b's';
const IDEMPOTENCY: u8 = b'k';

/// Tuning for [`SledStore`]; the defaults suit a laptop and a production node alike.
#[derive(Debug, Clone)]
pub struct SledStoreOptions {
    /// The most events one group commit takes.
    pub max_batch_events: usize,
    /// sled's page cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// How many appends may wait for the writer before callers are held back.
    pub queue_capacity: usize,
}

impl Default for SledStoreOptions {
    fn default() -> Self {
        Self {
            max_batch_events: 4096,
            cache_capacity_bytes: 256 * 1024 * 1024,
            queue_capacity: 8192,
        }
    }
}

/// The embedded event store. See the [module docs](self) for layout and group commit.
#[derive(Debug)]
pub struct SledStore {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    db: sled::Db,
    tree: sled::Tree,
    durable: watch::Sender<u64>,
    stopped: Mutex<Option<String>>,
}

impl Shared {
    fn stopped(&self) -> Option<String> {
        self.stopped.lock().expect("stop flag lock").clone()
    }

    fn stop(&self, reason: String) {
        tracing::error!(%reason, "event store stops accepting appends");
        self.stopped
            .lock()
            .expect("stop flag lock")
            .get_or_insert(reason);
    }

    fn durable_head(&self) -> u64 {
        *self.durable.borrow()
    }

    fn read_entry(&self, position: u64) -> Result<Option<StoredEvent>, StoreError> {
        self.tree
            .get(entry_key(position))
            .map_err(backend)?
            .map(|value| decode_entry(position, &value))
            .transpose()
    }
}

type Reply = oneshot::Sender<Result<AppendOutcome, AppendError>>;

#[derive(Debug)]
struct Job {
    request: AppendRequest,
    reply: Reply,
}

/// A batch the writer applied, waiting for its flush.
struct Ticket {
    last_position: u64,
    replies: Vec<(Reply, Result<AppendOutcome, AppendError>)>,
}

impl SledStore {
    /// Opens (or creates) the store in `path` and starts its writer and flusher threads.
    ///
    /// # Errors
    /// When the directory cannot be opened (another process holds it, permissions, damage) or
    /// holds a newer format.
    pub fn open(path: &Path, options: &SledStoreOptions) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .open()
            .map_err(|err| StoreError::Backend(format!("cannot open {}: {err}", path.display())))?;
        let tree = db.open_tree("events").map_err(backend)?;
        check_format(&db, &tree)?;
        let head = match tree.scan_prefix([ENTRY]).next_back() {
            Some(last) => position_from_entry_key(&last.map_err(backend)?.0)?,
            None => 0,
        };
        let (durable, _) = watch::channel(head);
        let shared = Arc::new(Shared {
            db,
            tree,
            durable,
            stopped: Mutex::new(None),
        });
        let (jobs, job_rx) = mpsc::channel(options.queue_capacity.max(1));
        let (tickets, ticket_rx) = std_mpsc::channel();
        let writer = Writer {
            shared: Arc::clone(&shared),
            next_position: head + 1,
            max_batch_events: options.max_batch_events.max(1),
        };
        let flusher_shared = Arc::clone(&shared);
        let threads = vec![
            std::thread::Builder::new()
                .name("closeloop-writer".into())
                .spawn(move || writer.run(job_rx, &tickets))
                .map_err(|err| StoreError::Backend(format!("cannot start writer thread: {err}")))?,
            std::thread::Builder::new()
                .name("closeloop-flusher".into())
                .spawn(move || run_flusher(&flusher_shared, &ticket_rx))
                .map_err(|err| {
                    StoreError::Backend(format!("cannot start flusher thread: {err}"))
                })?,
        ];
        tracing::info!(path = %path.display(), head, "event store opened");
        Ok(Self {
            shared,
            jobs,
            threads,
        })
    }

    /// Stops accepting appends, answers everything queued, waits for the writer and flusher
    /// to finish and flushes: afterwards the directory can be opened again.
    pub async fn close(self) {
        let Self {
            shared,
            jobs,
            threads,
        } = self;
        drop(jobs);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                // A panicked thread has nothing left to flush; the join error carries nothing
                // we could act on.
                let _ = thread.join();
            }
            shared.db.flush()
        })
        .await;
        if let Ok(Err(err)) = joined {
            tracing::error!(%err, "final flush of the event store failed");
        }
    }

    /// The underlying sled database, for tools that inspect or repair it offline.
    #[must_use]
    pub fn sled_db(&self) -> &sled::Db {
        &self.shared.db
    }
}

impl EventStore for SledStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        if let Some(reason) = self.shared.stopped() {
            return Err(StoreError::Stopped(reason).into());
        }
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Stopped("the store was closed".to_owned());
        self.jobs
            .send(Job { request, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn read_loop(&self, loop_id: &LoopId) -> Result<Vec<StoredEvent>, StoreError> {
        let durable = self.shared.durable_head();
        let mut events = Vec::new();
        for item in self.shared.tree.scan_prefix(stream_prefix(loop_id)) {
            let (_, value) = item.map_err(backend)?;
            let position = read_u64(&value, 0).ok_or_else(|| StoreError::Corrupt {
                position: 0,
                detail: format!("stream index of loop {loop_id} is damaged"),
            })?;
            if position > durable {
                break;
            }
            let entry = self
                .shared
                .read_entry(position)?
                .ok_or_else(|| StoreError::Corrupt {
                    position,
                    detail: format!("loop {loop_id} lists position {position}, which is missing"),
                })?;
            events.push(entry);
        }
        Ok(events)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let durable = self.shared.durable_head();
        if after >= durable || limit == 0 {
            return Ok(Vec::new());
        }
        let range = entry_key(after + 1)..=entry_key(durable);
        self.shared
            .tree
            .range(range)
            .take(limit)
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode_entry(position_from_entry_key(&key)?, &value)
            })
            .collect()
    }

    fn head(&self) -> u64 {
        self.shared.durable_head()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    fn ready(&self) -> Result<(), StoreError> {
        match self.shared.stopped() {
            Some(reason) => Err(StoreError::Stopped(reason)),
            None if self.jobs.is_closed() => {
                Err(StoreError::Stopped("the writer thread ended".to_owned()))
            }
            None => Ok(()),
        }
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    next_position: u64,
    max_batch_events: usize,
}

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>, tickets: &std_mpsc::Sender<Ticket>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut events = first.request.event_count();
            let mut batch = vec![first];
            while events < self.max_batch_events {
                let Ok(job) = jobs.try_recv() else { break };
                events += job.request.event_count();
                batch.push(job);
            }
            let ticket = self.commit(batch);
            if tickets.send(ticket).is_err() {
                // The flusher is gone, so nothing can be made durable any more.
                self.shared.stop("the flusher thread ended".to_owned());
                break;
            }
        }
    }

    /// Stages every job of a batch and applies the writes in one atomic sled batch.
    fn commit(&mut self, batch: Vec<Job>) -> Ticket {
        if let Some(reason) = self.shared.stopped() {
            return stopped_ticket(batch, &reason, self.next_position - 1);
        }
        let mut staging = Staging::default();
        let mut writes = sled::Batch::default();
        let first_position = self.next_position;
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            let result = staging.stage(
                &self.shared,
                &job.request,
                &mut self.next_position,
                &mut writes,
            );
            replies.push((job.reply, result));
        }
        if self.next_position > first_position
            && let Err(err) = self.shared.tree.apply_batch(writes)
        {
            let reason = format!("write failed: {err}");
            self.shared.stop(reason.clone());
            self.next_position = first_position;
            let failed = || Err(StoreError::Stopped(reason.clone()).into());
            return Ticket {
                last_position: first_position - 1,
                replies: replies
                    .into_iter()
                    .map(|(reply, _)| (reply, failed()))
                    .collect(),
            };
        }
        Ticket {
            last_position: self.next_position - 1,
            replies,
        }
    }
}

fn stopped_ticket(batch: Vec<Job>, reason: &str, last_position: u64) -> Ticket {
    Ticket {
        last_position,
        replies: batch
            .into_iter()
            .map(|job| {
                (
                    job.reply,
                    Err(StoreError::Stopped(reason.to_owned()).into()),
                )
            })
            .collect(),
    }
}

/// What a batch has written so far, so later requests in it see earlier ones.
#[derive(Default)]
struct Staging {
    /// Loop id → (version, hash) after this batch's writes.
    heads: HashMap<LoopId, (u64, Hash)>,
    /// Idempotency key → where this batch stored it.
    keys: HashMap<Vec<u8>, Committed>,
}

impl Staging {
    fn stage(
        &mut self,
        shared: &Shared,
        request: &AppendRequest,
        next_position: &mut u64,
        writes: &mut sled::Batch,
    ) -> Result<AppendOutcome, AppendError> {
        validate(request)?;

        // Idempotency: all keys known means a repeat of an earlier append; some means misuse.
        let mut originals = Vec::with_capacity(request.event_count());
        for event in request.loops.iter().flat_map(|l| &l.events) {
            let key = idempotency_key(&event.source, &event.event_id);
            originals.push(self.lookup_key(shared, &key)?);
        }
        if originals.iter().all(Option::is_some) {
            return Ok(AppendOutcome {
                committed: originals.into_iter().flatten().collect(),
                duplicate: true,
            });
        }
        if let Some(index) = originals.iter().position(Option::is_some) {
            let event = request
                .loops
                .iter()
                .flat_map(|l| &l.events)
                .nth(index)
                .expect("index within events");
            return Err(AppendError::IdempotencyMismatch {
                event_source: event.source.clone(),
                event_id: event.event_id.clone(),
            });
        }

        // Optimistic concurrency: check every loop before writing anything.
        let mut current = Vec::with_capacity(request.loops.len());
        for append in &request.loops {
            let (version, hash) = self.head_of(shared, &append.loop_id)?;
            if !append.expected.admits(version) {
                return Err(AppendError::Conflict {
                    loop_id: append.loop_id.clone(),
                    expected: append.expected,
                    actual: version,
                });
            }
            current.push((version, hash));
        }

        let mut committed = Vec::with_capacity(request.event_count());
        for (append, (mut version, mut prev_hash)) in request.loops.iter().zip(current) {
            let loop_id = append.loop_id.as_str();
            for event in &append.events {
                let position = *next_position;
                *next_position += 1;
                version += 1;
                let record = record::encode(event);
                let hash = entry_hash(position, version, loop_id, &prev_hash, &record);
                writes.insert(
                    entry_key(position).to_vec(),
                    encode_entry(version, &prev_hash, &hash, loop_id, &record),
                );
                let mut stream_value = position.to_be_bytes().to_vec();
                stream_value.extend_from_slice(&hash.0);
                writes.insert(stream_key(&append.loop_id, version), stream_value);
                let key = idempotency_key(&event.source, &event.event_id);
                writes.insert(key.clone(), position.to_be_bytes().to_vec());
                let done = Committed {
                    loop_id: append.loop_id.clone(),
                    version,
                    position,
                };
                self.keys.insert(key, done.clone());
                committed.push(done);
                prev_hash = hash;
            }
            self.heads
                .insert(append.loop_id.clone(), (version, prev_hash));
        }
        Ok(AppendOutcome {
            committed,
            duplicate: false,
        })
    }

    fn lookup_key(&self, shared: &Shared, key: &[u8]) -> Result<Option<Committed>, StoreError> {
        if let Some(done) = self.keys.get(key) {
            return Ok(Some(done.clone()));
        }
        let Some(value) = shared.tree.get(key).map_err(backend)? else {
            return Ok(None);
        };
        let position = read_u64(&value, 0).ok_or_else(|| StoreError::Corrupt {
            position: 0,
            detail: "idempotency index entry is damaged".to_owned(),
        })?;
        let entry = shared
            .read_entry(position)?
            .ok_or_else(|| StoreError::Corrupt {
                position,
                detail: "idempotency index points at a missing entry".to_owned(),
            })?;
        Ok(Some(Committed {
            loop_id: entry.loop_id,
            version: entry.version,
            position,
        }))
    }

    fn head_of(&self, shared: &Shared, loop_id: &LoopId) -> Result<(u64, Hash), StoreError> {
        if let Some(&head) = self.heads.get(loop_id) {
            return Ok(head);
        }
        let Some(last) = shared.tree.scan_prefix(stream_prefix(loop_id)).next_back() else {
            return Ok((0, Hash::ZERO));
        };
        let (key, value) = last.map_err(backend)?;
        let damaged = || StoreError::Corrupt {
            position: 0,
            detail: format!("stream index of loop {loop_id} is damaged"),
        };
        let version = read_u64(&key, key.len() - 8).ok_or_else(damaged)?;
        let hash = value.get(8..40).ok_or_else(damaged)?;
        Ok((version, Hash(hash.try_into().expect("slice of 32 bytes"))))
    }
}

fn validate(request: &AppendRequest) -> Result<(), AppendError> {
    if request.loops.is_empty() || request.loops.iter().any(|l| l.events.is_empty()) {
        return Err(AppendError::Invalid(
            "an append needs at least one event for every loop it names".to_owned(),
        ));
    }
    let mut loops = HashSet::new();
    let mut keys = HashSet::new();
    for append in &request.loops {
        if !loops.insert(&append.loop_id) {
            return Err(AppendError::Invalid(format!(
                "loop {} appears twice in one append",
                append.loop_id
            )));
        }
        for event in &append.events {
            if !keys.insert((&event.source, &event.event_id)) {
                return Err(AppendError::Invalid(format!(
                    "event ({:?}, {:?}) appears twice in one append",
                    event.source, event.event_id
                )));
            }
        }
    }
    Ok(())
}

fn run_flusher(shared: &Shared, tickets: &std_mpsc::Receiver<Ticket>) {
    while let Ok(first) = tickets.recv() {
        let mut pending = vec![first];
        pending.extend(tickets.try_iter());
        let flushed = shared.db.flush();
        let last_position = pending.iter().map(|t| t.last_position).max().unwrap_or(0);
        match flushed {
            Ok(_) => {
                // Move the durable head before answering, so a caller that hears "stored"
                // and then reads finds its events.
                shared.durable.send_if_modified(|head| {
                    let moved = last_position > *head;
                    *head = (*head).max(last_position);
                    moved
                });
                for ticket in pending {
                    for (reply, result) in ticket.replies {
                        // A caller that stopped waiting has nothing to hear.
                        let _ = reply.send(result);
                    }
                }
            }
            Err(err) => {
                let reason = format!("flush failed: {err}");
                shared.stop(reason.clone());
                for ticket in pending {
                    for (reply, _) in ticket.replies {
                        let _ = reply.send(Err(StoreError::Stopped(reason.clone()).into()));
                    }
                }
            }
        }
    }
}

fn check_format(db: &sled::Db, tree: &sled::Tree) -> Result<(), StoreError> {
    match tree.get(FORMAT_KEY).map_err(backend)? {
        Some(value) => {
            let found = value
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| {
                    StoreError::Backend("the store's format marker is damaged".to_owned())
                })?;
            if found > FORMAT_VERSION {
                return Err(StoreError::UnsupportedFormat {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Ok(())
        }
        None => {
            tree.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                .map_err(backend)?;
            db.flush().map_err(backend)?;
            Ok(())
        }
    }
}

fn backend(err: sled::Error) -> StoreError {
    StoreError::Backend(err.to_string())
}

fn entry_key(position: u64) -> [u8; 9] {
    let mut key = [ENTRY; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

fn position_from_entry_key(key: &[u8]) -> Result<u64, StoreError> {
    match key {
        [ENTRY, rest @ ..] if rest.len() == 8 => Ok(read_u64(rest, 0).expect("8 bytes")),
        _ => Err(StoreError::Backend("a log key is malformed".to_owned())),
    }
}

fn stream_prefix(loop_id: &LoopId) -> Vec<u8> {
    let mut key = Vec::with_capacity(loop_id.as_str().len() + 10);
    key.push(STREAM);
    key.extend_from_slice(loop_id.as_str().as_bytes());
    key.push(0);
    key
}

fn stream_key(loop_id: &LoopId, version: u64) -> Vec<u8> {
    let mut key = stream_prefix(loop_id);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn idempotency_key(source: &str, event_id: &str) -> Vec<u8> {
    let source_len = u32::try_from(source.len()).unwrap_or(u32::MAX);
    let mut key = Vec::with_capacity(5 + source.len() + event_id.len());
    key.push(IDEMPOTENCY);
    key.extend_from_slice(&source_len.to_be_bytes());
    key.extend_from_slice(source.as_bytes());
    key.extend_from_slice(event_id.as_bytes());
    key
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

fn encode_entry(
    version: u64,
    prev_hash: &Hash,
    hash: &Hash,
    loop_id: &str,
    record: &[u8],
) -> Vec<u8> {
    let id_len = u8::try_from(loop_id.len()).expect("loop ids are at most 128 bytes");
    let mut value = Vec::with_capacity(8 + 64 + 1 + loop_id.len() + record.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(&prev_hash.0);
    value.extend_from_slice(&hash.0);
    value.push(id_len);
    value.extend_from_slice(loop_id.as_bytes());
    value.extend_from_slice(record);
    value
}

fn decode_entry(position: u64, value: &[u8]) -> Result<StoredEvent, StoreError> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        position,
        detail: detail.to_owned(),
    };
    let version = read_u64(value, 0).ok_or_else(|| corrupt("entry is truncated"))?;
    let hash_at = |at: usize| {
        value
            .get(at..at + 32)
            .map(|b| Hash(b.try_into().expect("32 bytes")))
            .ok_or_else(|| corrupt("entry is truncated"))
    };
    let prev_hash = hash_at(8)?;
    let hash = hash_at(40)?;
    let id_len = usize::from(*value.get(72).ok_or_else(|| corrupt("entry is truncated"))?);
    let id_bytes = value
        .get(73..73 + id_len)
        .ok_or_else(|| corrupt("entry is truncated"))?;
    let loop_id = std::str::from_utf8(id_bytes)
        .ok()
        .and_then(|raw| LoopId::parse(raw).ok())
        .ok_or_else(|| corrupt("entry's loop id is not valid"))?;
    Ok(StoredEvent {
        position,
        loop_id,
        version,
        prev_hash,
        hash,
        record: value[73 + id_len..].to_vec(),
    })
}
