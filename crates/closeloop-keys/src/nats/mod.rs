//! [`NatsKeyStore`]: the key store kept in a NATS JetStream stream, so several Closeloop
//! processes (replicas) share one set of keys. It keeps every promise of [`KeyStore`] and passes
//! the same conformance suite as [`FileKeyStore`](crate::FileKeyStore).
//!
//! # Layout
//!
//! One stream (default `CLOSELOOP_KEYS`, file storage, replicas as configured, `DenyPurge`, no
//! limits) takes the subjects `closeloop.keys.>`; payloads are described in [`format`]. A loop
//! id may contain `.`, NATS's token separator, so subjects name a loop by the lowercase hex of
//! its id (`loop-1` is `6c6f6f702d31`):
//!
//! - `closeloop.keys.meta`: the master key's check value and the contact-index and public-id
//!   secrets wrapped under the master key, with an *epoch* naming that wrapping. The latest
//!   message is in force; a rotation publishes a new one.
//! - `closeloop.keys.key.<loop>`: the loop's data key, wrapped exactly as the file store wraps
//!   it (bound to loop id and key id), tagged with its epoch, optionally with the loop's first
//!   contact digest. **A key's id is the stream sequence of the message that created it**, so
//!   ids are unique and never reused without any counter. During a rotation a key has a second
//!   message (same id, new epoch).
//! - `closeloop.keys.contact.<loop>`: one more contact digest of the loop.
//! - `closeloop.keys.erased.<loop>`: an erasure: the ids of the keys it destroyed. Kept for ever,
//!   behind [`KeyStore::is_erased`] and [`KeyState::Destroyed`].
//!
//! # Reads and the mirror
//!
//! Opening loads the whole stream into an in-memory mirror (an ordered consumer reads it in
//! bulk, then reads from the stream leader settle the tail). A background ordered consumer goes
//! on applying what other processes write, and this handle applies its own writes once acked,
//! so reads answer from memory. [`KeyStore::key`] for an id beyond what the mirror has seen
//! first reads the stream's tail, so a key another replica made a moment ago is found.
//! `is_erased` and `loops_with_contact` may lag another replica's writes by the consumer's
//! delivery time (milliseconds). So may [`KeyStore::keys_for_writing`] for a loop whose key it
//! holds: within that lag after another replica erased the loop, it can still hand out the
//! destroyed key, and what is sealed with it is unreadable, like everything else of the erased
//! loop. Erasures through one replica see everything that replica wrote.
//!
//! # Writes and concurrency
//!
//! Every write waits for the JetStream ack and is fenced with `Nats-Expected-Last-Sequence`:
//! it is stored only if the stream has not moved since the mirror last applied it, so a write
//! is always planned on a complete view. Key creation is also fenced with
//! `Nats-Expected-Last-Subject-Sequence: 0` on the loop's key subject. Two handles (in one
//! process or two replicas) creating a first key for one loop at once: one write is stored, the
//! other is refused; the loser reads the tail of the stream and returns the winner's key. Under
//! heavy concurrent writing from several replicas writers retry; a write that keeps losing for
//! the store's timeout fails with [`KeyError::Io`] and can be retried.
//!
//! # Erasure
//!
//! [`KeyStore::destroy_loop`] publishes the erasure record first (from then on every handle
//! treats the keys as destroyed), then deletes every message holding the loop's wrapped keys
//! and contact digests with the JetStream message-delete API **with erase**: the server
//! overwrites each message's bytes in its block file (a KV purge or a plain delete would leave
//! them there). A crash between the two leaves messages that every handle recognises as
//! leftovers; the next erasure of the loop, the next key for it, or the next opening with the
//! master key erases them. The store's tests scan every file of the server's store directory for
//! the wrapped key bytes and the plaintext key after an erasure. With replicated streams (R3)
//! the servers' raft logs may hold a copy until they are compacted.
//!
//! # Master key rotation
//!
//! [`KeyStore::rotate_master_key`] publishes a new version of every live key wrapped under the
//! new master key with a fresh epoch, then a new meta record naming that epoch (the commit
//! point), then erases the old versions and the old meta record. Readers use, for each key, the
//! version of the epoch the meta record in force names. A crash before the commit leaves the old
//! master key in force with every old version intact (the new versions are ignored, and erased
//! by the next rotation); a crash after it leaves the new master key in force with every key
//! rewrapped (the old versions are erased at the next opening). Either way every key is
//! readable under exactly one of the two keys. The rotation's writes are chained with
//! `Nats-Expected-Last-Sequence`, so any other process writing to the stream meanwhile makes it
//! stop with an error and the old key still in force: run it with the other Closeloop processes
//! stopped. A process that finds a meta record under a master key other than its own refuses
//! writes and asks to be restarted with the new key.
//!
//! # Durability
//!
//! An ack means the stream's leader stored the message (and, for R3, a majority of replicas did),
//! not that it reached a disk: nats-server 2.9 fsyncs on an interval. Against a crash of one
//! machine, run the stream with 3 replicas across failure domains (or, from nats-server 2.10,
//! `sync_interval: always`); see `docs/operations.md`.
//!
//! # Threads
//!
//! The [`KeyStore`] trait is synchronous. The store owns a small tokio runtime (one worker
//! thread, for the consumer that follows the stream) and blocks the calling thread on it for
//! each call. **Call it from plain threads or `tokio::task::spawn_blocking`, never from inside
//! an async task**: blocking there panics. The [`async_nats::Client`] it is given keeps running
//! on the runtime that connected it, which must keep running as long as the store is used.

mod format;
mod io;
mod mirror;
mod open;
mod rotate;
mod subjects;
#[cfg(test)]
mod tests;
mod write;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Runtime;

use self::io::{KeyStream, stream_path};
use self::mirror::{KeyLookup, Mirror};
use crate::loop_id::check_loop_id;
use crate::secrets::StoreSecrets;
use crate::wrap::unwrap_data_key;
use crate::{ContactDigest, DataKey, KeyError, KeyId, KeyRequest, KeyState, KeyStore, MasterKey};

/// The stream name [`NatsKeyStoreOptions::default`] uses.
pub const DEFAULT_STREAM: &str = "CLOSELOOP_KEYS";

/// The longest stream name accepted, in bytes.
const MAX_STREAM_NAME_LEN: usize = 255;

/// Where and how [`NatsKeyStore`] keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsKeyStoreOptions {
    /// The JetStream stream, created on first open with the master key. Its subjects are always
    /// `closeloop.keys.>`, so one NATS account holds one key store.
    pub stream: String,
    /// How many servers keep a copy of the stream when it is created: 1 on a single server, 3 on
    /// a cluster (see the module documentation on durability). An existing stream keeps its own.
    pub replicas: usize,
    /// How long any one NATS call may take, and how long a write keeps retrying when other
    /// processes keep winning the race to the stream.
    pub timeout: Duration,
}

impl Default for NatsKeyStoreOptions {
    /// `CLOSELOOP_KEYS`, one replica, 5 seconds.
    fn default() -> Self {
        NatsKeyStoreOptions {
            stream: DEFAULT_STREAM.to_owned(),
            replicas: 1,
            timeout: Duration::from_secs(5),
        }
    }
}

impl NatsKeyStoreOptions {
    /// Checks the options before anything is sent.
    fn check(&self) -> Result<(), KeyError> {
        let name_ok = !self.stream.is_empty()
            && self.stream.len() <= MAX_STREAM_NAME_LEN
            && !self
                .stream
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c));
        let problem = if !name_ok {
            Some(format!(
                "the stream name {:?} is not 1 to {MAX_STREAM_NAME_LEN} characters without whitespace, '.', '*', '>', '/' or '\\'",
                self.stream
            ))
        } else if !(1..=5).contains(&self.replicas) {
            Some(format!(
                "{} replicas: JetStream keeps 1 to 5 copies of a stream",
                self.replicas
            ))
        } else if self.timeout.is_zero() || self.timeout > Duration::from_secs(600) {
            Some("the timeout must be more than 0 and at most 10 minutes".to_owned())
        } else {
            None
        };
        match problem {
            None => Ok(()),
            Some(detail) => Err(KeyError::Io {
                path: stream_path(&self.stream),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("invalid key store options: {detail}; fix the configuration"),
                ),
            }),
        }
    }
}

/// A key store kept in a NATS JetStream stream (see the [module documentation](self)). Opened
/// with the master key it reads and writes; opened without it (sealed) it tells key states apart
/// and refuses writes. Its methods block: call them from plain threads or `spawn_blocking`,
/// never inside an async task.
pub struct NatsKeyStore {
    inner: Arc<Inner>,
    /// Taken in `Drop` and shut down without blocking, so dropping the store inside an async
    /// context does not panic.
    runtime: Option<Runtime>,
    /// One write of this handle at a time: concurrent writers of one handle would only make each
    /// other's fences fail.
    writes: Mutex<()>,
}

/// What the calling threads and the consumer that follows the stream share.
struct Inner {
    /// `None` for a sealed store opened where no stream exists: it holds no keys.
    stream: Option<KeyStream>,
    state: Mutex<State>,
    /// Woken as the consumer that follows the stream makes progress.
    progress: tokio::sync::Notify,
}

struct State {
    mirror: Mirror,
    master: Option<MasterKey>,
    /// The check value of `master`, computed once.
    master_check: Option<[u8; 32]>,
    secrets: Option<StoreSecrets>,
    /// Whether the consumer that follows the stream has delivered everything stored so far.
    follower_caught_up: bool,
    /// The first message that broke the store's rules, found while opening.
    problem: Option<String>,
}

impl NatsKeyStore {
    /// Opens the key store in the stream `options.stream` through `client`, creating the stream
    /// and the store (with fresh random secrets) when there is none and a master key is given.
    /// Without a master key the store is sealed; a sealed open where no stream exists is an
    /// empty store and creates nothing. Blocks until the whole stream is loaded; call it from a
    /// plain thread or `spawn_blocking`, never inside an async task. `client` must stay connected
    /// on a runtime that keeps running while the store is used (the store's own runtime only
    /// drives the store's calls).
    ///
    /// # Errors
    /// [`KeyError::WrongMasterKey`] when the store was created under another master key,
    /// [`KeyError::Corrupt`] when the stream holds messages that break the store's rules,
    /// [`KeyError::Io`] when NATS does not answer in time, the stream is configured so it
    /// cannot hold keys safely, or the options are invalid.
    pub fn open(
        client: async_nats::Client,
        options: NatsKeyStoreOptions,
        master: Option<&MasterKey>,
    ) -> Result<Self, KeyError> {
        options.check()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("closeloop-keys-nats")
            .enable_all()
            .build()
            .map_err(|e| KeyError::io(stream_path(&options.stream), e))?;
        match runtime.block_on(open::open(client, &options, master)) {
            Ok(inner) => Ok(NatsKeyStore {
                inner,
                runtime: Some(runtime),
                writes: Mutex::new(()),
            }),
            Err(error) => {
                runtime.shutdown_background();
                Err(error)
            }
        }
    }

    /// The name of the stream the store lives in (`None` for a sealed store opened where none
    /// exists).
    #[must_use]
    pub fn stream_name(&self) -> Option<&str> {
        self.inner.stream.as_ref().map(KeyStream::name)
    }

    fn block_on<T>(&self, call: impl Future<Output = T>) -> T {
        self.runtime
            .as_ref()
            .expect("the runtime lives until the store is dropped")
            .block_on(call)
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made whole under the lock, so a poisoned lock holds a
        // consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream, for a store that has one (every store opened with a master key does).
    fn stream(&self) -> Result<&KeyStream, KeyError> {
        self.stream.as_ref().ok_or(KeyError::Sealed)
    }

    /// Applies a message read from the stream; one that breaks the rules is logged and skipped.
    fn apply(&self, seq: u64, subject: &str, payload: &[u8]) {
        let mut state = self.lock();
        if let Err(problem) = state.mirror.apply(seq, subject, payload) {
            tracing::error!(
                stream = self.stream.as_ref().map(KeyStream::name),
                %problem,
                "skipped a message of the key stream that breaks the key store's rules"
            );
            state.problem.get_or_insert(problem);
        }
    }

    /// Brings the mirror up to the end of the stream, reading from the stream leader.
    async fn catch_up(&self) -> Result<(), KeyError> {
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        let (last, _) = stream.state().await?;
        loop {
            let from = self.lock().mirror.applied() + 1;
            let Some(message) = stream.next_from(from).await? else {
                break;
            };
            self.apply(message.sequence, &message.subject, &message.payload);
        }
        // Every message up to `last` existed before the reads above began: those they did not
        // return were deleted.
        self.lock().mirror.applied_through(last);
        Ok(())
    }

    /// Applies a message this handle wrote and JetStream acked at `seq`.
    async fn applied_own(&self, seq: u64, subject: &str, payload: &[u8]) -> Result<(), KeyError> {
        {
            let state = self.lock();
            if seq <= state.mirror.applied() + 1 {
                drop(state);
                self.apply(seq, subject, payload);
                return Ok(());
            }
        }
        // The fence makes this unreachable; should it happen, read what came in between.
        self.catch_up().await
    }
}

impl State {
    fn new(master: Option<&MasterKey>) -> Self {
        State {
            mirror: Mirror::default(),
            master: master.cloned(),
            master_check: master.map(MasterKey::check_value),
            secrets: None,
            follower_caught_up: false,
            problem: None,
        }
    }

    /// The master key, when this handle may write with it: opened with it, and it is the one in
    /// force (no other process rotated it meanwhile).
    fn writable(&self) -> Result<MasterKey, KeyError> {
        let master = self.master.clone().ok_or(KeyError::Sealed)?;
        self.check_master_in_force()?;
        Ok(master)
    }

    fn check_master_in_force(&self) -> Result<(), KeyError> {
        let meta = self.mirror.meta().ok_or_else(|| {
            KeyError::corrupt("the key stream lost its meta record (secrets and master key check)")
        })?;
        if self.master_check == Some(meta.record.secrets.master_check) {
            Ok(())
        } else {
            Err(KeyError::Failed {
                detail: "another Closeloop process rotated the master key of the key stream; restart this one with the new CLOSELOOP_MASTER_KEY".to_owned(),
            })
        }
    }

    /// Key `id` of `loop_id` as the mirror has it. Unless `settled` (the mirror has just read
    /// the stream's tail), `None` when the mirror may be behind: the id is beyond what it
    /// applied, or the key has no version under the master key in force yet.
    fn key_state(
        &self,
        loop_id: &str,
        id: KeyId,
        settled: bool,
    ) -> Result<Option<KeyState>, KeyError> {
        let versions = match self.mirror.lookup(loop_id, id) {
            KeyLookup::Destroyed => return Ok(Some(KeyState::Destroyed)),
            KeyLookup::Unknown if !settled && id > self.mirror.applied() => return Ok(None),
            KeyLookup::Unknown => return Ok(Some(KeyState::Unknown)),
            KeyLookup::Live(versions) => versions,
        };
        let Some(master) = &self.master else {
            return Ok(Some(KeyState::Sealed));
        };
        self.check_master_in_force()?;
        let epoch = self
            .mirror
            .meta()
            .map(|meta| meta.record.epoch)
            .unwrap_or_default();
        let Some(version) = versions.in_epoch(epoch) else {
            if settled {
                return Err(KeyError::corrupt(format!(
                    "live key {id} has no version wrapped under the master key in force"
                )));
            }
            return Ok(None);
        };
        unwrap_data_key(master, loop_id, id, &version.wrapped)
            .map(|key| Some(KeyState::Live(key)))
            .map_err(|_| {
                KeyError::corrupt(format!(
                    "key {id} does not unwrap under the master key in force"
                ))
            })
    }

    fn secrets(&self) -> Result<&StoreSecrets, KeyError> {
        self.secrets.as_ref().ok_or(KeyError::Sealed)
    }
}

impl KeyStore for NatsKeyStore {
    fn keys_for_writing(&self, requests: &[KeyRequest<'_>]) -> Result<Vec<DataKey>, KeyError> {
        for request in requests {
            check_loop_id(request.loop_id)?;
        }
        self.inner.lock().writable()?;
        let _writing = self.write_lock();
        self.block_on(self.inner.keys_for_writing(requests))
    }

    fn key(&self, loop_id: &str, id: KeyId) -> Result<KeyState, KeyError> {
        if check_loop_id(loop_id).is_err() || id == 0 {
            return Ok(KeyState::Unknown);
        }
        if let Some(state) = self.inner.lock().key_state(loop_id, id, false)? {
            return Ok(state);
        }
        // Another process may have made the key (or rotated it) a moment ago: read the tail.
        self.block_on(self.inner.catch_up())?;
        let state = self.inner.lock().key_state(loop_id, id, true)?;
        Ok(state.unwrap_or(KeyState::Unknown))
    }

    fn destroy_loop(&self, loop_id: &str) -> Result<usize, KeyError> {
        check_loop_id(loop_id)?;
        self.inner.lock().writable()?;
        let _writing = self.write_lock();
        self.block_on(self.inner.destroy_loop(loop_id))
    }

    fn is_erased(&self, loop_id: &str) -> bool {
        self.inner.lock().mirror.is_erased(loop_id)
    }

    fn loops_with_contact(&self, digest: &ContactDigest) -> Result<Vec<String>, KeyError> {
        Ok(self.inner.lock().mirror.loops_with(digest))
    }

    fn contact_digest(&self, contact: &str) -> Result<ContactDigest, KeyError> {
        self.inner.lock().secrets()?.contact_digest(contact)
    }

    fn public_id_of(&self, loop_id: &str) -> Result<String, KeyError> {
        self.inner.lock().secrets()?.public_id_of(loop_id)
    }

    fn rotate_master_key(&self, new: &MasterKey) -> Result<usize, KeyError> {
        self.inner.lock().writable()?;
        let _writing = self.write_lock();
        self.block_on(self.inner.rotate(new))
    }
}

impl Drop for NatsKeyStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Stops the consumer that follows the stream without waiting for it.
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for NatsKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("NatsKeyStore")
            .field("stream", &self.stream_name())
            .field("sealed", &state.master.is_none())
            .field("applied", &state.mirror.applied())
            .field("live_keys", &state.mirror.live_count())
            .finish_non_exhaustive()
    }
}
