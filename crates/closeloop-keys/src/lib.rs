//! Closeloop's key store, for crypto-shredding: each loop's personal data (author, story, the
//! free text of follow-ups) is encrypted with the loop's own [`DataKey`], and erasing the loop
//! destroys its keys so the ciphertext left in the immutable event log can never be read again.
//!
//! - [`KeyStore`] is the trait every backend implements: one live key per loop, created
//!   atomically and durably on first write; keys read back by id; `destroy_loop`; an index of
//!   keyed contact digests ([`ContactDigest`], over [`normalise_contact`]) so an erasure by
//!   contact finds every loop; opaque public ids; master key rotation.
//! - [`MasterKey`] wraps every data key and the store's two secrets (the contact-index secret and
//!   the public-id secret). [`DataKey::seal`] and [`DataKey::open`] are XChaCha20-Poly1305 with a
//!   fresh random 24-byte nonce per seal.
//! - [`MemoryKeyStore`] keeps everything in memory, for tests. [`FileKeyStore`] is the durable
//!   one: a single file of fixed-size slots, described below.
//! - `NatsKeyStore` (feature `nats`, module `nats`) keeps the keys in a NATS JetStream stream that
//!   several Closeloop processes share, erasing destroyed keys with JetStream's message erase.
//! - `conformance` (feature `conformance`) is the test suite every backend must pass.
//!
//! # The key file
//!
//! [`FileKeyStore`] keeps one file, `keys`, in its directory: a 256-byte header, then 256-byte
//! slots; slot `n` starts at byte `256 × n`, and a data key's [`KeyId`] is its slot number, so
//! ids start at 1 and never change. All integers are little-endian; every header and slot ends
//! with a CRC-32 of its first 252 bytes. See [`file_format`] for the exact offsets.
//!
//! - **Header**: magic `CLKEYS01`, format version, slot size, a 32-byte check value of the
//!   master key (an HMAC under the master key of a fixed label: the store tells a wrong master
//!   key from corruption without revealing anything), and the contact-index and public-id
//!   secrets, each wrapped under the master key.
//! - **Slots**, appended: a *pooled key* slot holds a key made ahead for a loop to come; a
//!   *key* slot holds a loop id (at most 128 bytes), the loop's data key wrapped under the
//!   master key (XChaCha20-Poly1305: 24-byte nonce, 32-byte ciphertext, 16-byte
//!   tag, with associated data binding the loop id and key id, so a wrapped key moved to another
//!   slot does not unwrap) and optionally the loop's first contact digest; a *contact* slot adds
//!   another contact digest to a loop; a *tombstone* slot records that a loop without keys was
//!   erased.
//! - **Destroying** a loop overwrites each of its slots in place (one `pwrite` each) with the
//!   loop id kept, the wrapped key and digest bytes zeroed and the state set to destroyed, then
//!   fsyncs. The destroyed bytes exist nowhere in the file afterwards; the loop id stays as the
//!   tombstone behind [`KeyStore::is_erased`] and [`KeyState::Destroyed`].
//! - **Appends** are group-committed: concurrent callers write their slots, then share one
//!   fsync; nobody hears of a key before the fsync covering it returned. After a crash a torn
//!   tail (slots failing their CRC, or a partial slot, at the end of the file) is dropped on open:
//!   nobody was told of those keys. A bad CRC before a good slot is corruption and the store
//!   refuses to open. Overwrites in place assume, as SQLite does, that an aligned 256-byte write
//!   inside one disk sector is not torn by a power cut.
//! - **Pooled keys** ([`KeyStore::start_pool`], which the sled event store turns on): new
//!   loops' keys are made ahead, a few hundred in one appended, fsynced run of *pooled* slots
//!   (key wrapped for no loop yet, so it unwraps with the empty loop id, bound to its slot
//!   number). A new loop takes the lowest: its slot is overwritten in place to name the loop
//!   (and its first contact digest) without an fsync, so a new loop's first write costs no
//!   fsync of the key file. [`KeyStore::sync_assignments`] fsyncs those overwrites and records
//!   in the header a log position up to which every record names only keys whose slots say
//!   their loop. After a crash, a pooled slot may have lost its loop although a durable record
//!   names the key; the event store reads the records after that position on opening and
//!   hands each such key back with [`KeyStore::recover_assignment`] before anything can
//!   write or erase (`closeloop-store`'s `key_recovery`).
//! - **Rotation** writes a whole new file (every live key rewrapped, the same slot numbers),
//!   fsyncs it, renames it over `keys` and fsyncs the directory: after a crash there is either
//!   the old file or the new, never a mix.
//! - One process at a time: the file is locked (exclusively for a writable store, shared for a
//!   sealed one).
//!
//! # Why not sled
//!
//! sled is log-structured: an overwritten or removed value stays in its segment files until the
//! segment happens to be rewritten, so a "destroyed" key would still be on disk, readable by
//! anyone holding the master key and a copy of the data directory. Erasure must make the key's
//! bytes unrecoverable from the files at once, so this store overwrites them in place in a file
//! of its own, and its tests prove it by scanning every byte of the directory.

mod aead;
#[cfg(feature = "conformance")]
pub mod conformance;
mod contact;
mod data_key;
mod error;
mod file;
mod index;
mod loop_id;
mod loop_ids;
mod mac;
mod master;
mod memory;
#[cfg(feature = "nats")]
pub mod nats;
mod random;
mod secrets;
mod wrap;

pub use aead::{NONCE_LEN, TAG_LEN};
pub use contact::{ContactDigest, MAX_CONTACT_LEN, normalise_contact};
pub use data_key::{DataKey, Sealed};
pub use error::KeyError;
pub use file::{FileKeyStore, KEY_FILE_NAME, format as file_format};
pub use loop_id::{MAX_LOOP_ID_LEN, check_loop_id};
pub use loop_ids::LoopIds;
pub use master::{DEMO_MASTER_KEY_SEED, MasterKey};
pub use memory::MemoryKeyStore;
#[cfg(feature = "nats")]
pub use nats::{NatsKeyStore, NatsKeyStoreOptions};
pub use wrap::WRAPPED_LEN;

/// A data key's id within its store; records name the key they were sealed with by it.
pub type KeyId = u64;

/// What a store can say about the key a record names.
#[derive(Debug)]
pub enum KeyState {
    /// The key exists and the store holds the master key: here it is.
    Live(DataKey),
    /// The key was destroyed by an erasure: the data sealed with it is gone for good.
    Destroyed,
    /// The key exists, but the store was opened without the master key, so it cannot unwrap it.
    Sealed,
    /// No key of that id belongs to that loop.
    Unknown,
}

/// One loop a caller is about to write personal data for.
#[derive(Debug, Clone, Copy)]
pub struct KeyRequest<'a> {
    /// The loop the data belongs to.
    pub loop_id: &'a str,
    /// The author's contact digest (from [`KeyStore::contact_digest`]), to add to the contact
    /// index for the loop.
    pub contact: Option<ContactDigest>,
}

/// A store of per-loop data keys and the contact index, for crypto-shredding. Every
/// implementation passes the `conformance` suite.
pub trait KeyStore: Send + Sync + 'static {
    /// One live key per request, in order. A loop without a live key gets a new one, durably
    /// stored (fsynced) before this returns — with a pool ([`start_pool`](Self::start_pool)),
    /// the key is, and the note of which loop has it follows at the next
    /// [`sync_assignments`](Self::sync_assignments); concurrent first writes for one loop never
    /// make two keys. A request's `contact` is added to the contact index for that loop (once).
    ///
    /// # Errors
    /// [`KeyError::InvalidLoopId`] (nothing is written), [`KeyError::Sealed`] without a master
    /// key, [`KeyError::Io`] or [`KeyError::Failed`] when the store cannot write durably.
    fn keys_for_writing(&self, requests: &[KeyRequest<'_>]) -> Result<Vec<DataKey>, KeyError>;

    /// The key a record names, for reading. Checks the key belongs to `loop_id` (else
    /// [`KeyState::Unknown`], as for an id the store never made or an invalid loop id).
    ///
    /// # Errors
    /// [`KeyError::Io`] or [`KeyError::Corrupt`] when the key cannot be read or unwrapped.
    fn key(&self, loop_id: &str, id: KeyId) -> Result<KeyState, KeyError>;

    /// Destroys every key of the loop and its contact-index entries, durably, overwriting their
    /// bytes in the store's files; keeps a tombstone so [`is_erased`](Self::is_erased) answers
    /// true. Returns how many keys were destroyed (0 for a loop without keys, which is still
    /// marked erased). A later [`keys_for_writing`](Self::keys_for_writing) for the loop makes a
    /// new key (new id).
    ///
    /// # Errors
    /// [`KeyError::InvalidLoopId`], [`KeyError::Sealed`], [`KeyError::Io`] or
    /// [`KeyError::Failed`]; on an I/O error the erasure may be incomplete: retry it.
    fn destroy_loop(&self, loop_id: &str) -> Result<usize, KeyError>;

    /// Whether [`destroy_loop`](Self::destroy_loop) ever ran for the loop (even when the loop has
    /// had a new key since).
    fn is_erased(&self, loop_id: &str) -> bool;

    /// Loops whose contact index holds this digest (live keys only), in loop id order.
    ///
    /// # Errors
    /// None today; the signature leaves room for stores that must ask a server.
    fn loops_with_contact(&self, digest: &ContactDigest) -> Result<Vec<String>, KeyError>;

    /// HMAC-SHA256 of [`normalise_contact`]`(contact)` under the index secret kept (wrapped) in
    /// the key store.
    ///
    /// # Errors
    /// [`KeyError::Sealed`] without a master key, [`KeyError::ContactTooLong`] beyond
    /// [`MAX_CONTACT_LEN`] bytes.
    fn contact_digest(&self, contact: &str) -> Result<ContactDigest, KeyError>;

    /// Opaque public id for loops stored before public ids existed: 32 lowercase hex characters
    /// of an HMAC of the loop id under a second secret kept (wrapped) in the key store, so nobody
    /// can recompute it from a guessed loop id.
    ///
    /// # Errors
    /// [`KeyError::Sealed`] without a master key, [`KeyError::InvalidLoopId`].
    fn public_id_of(&self, loop_id: &str) -> Result<String, KeyError>;

    /// Rewraps every live key and the secrets under `new`, atomically (after a crash: the old
    /// file or the new, never a mix). Afterwards the store must be reopened with `new`; this
    /// handle goes on working under `new`. Returns how many keys were rewrapped.
    ///
    /// # Errors
    /// [`KeyError::Sealed`] without the current master key, [`KeyError::Io`] (the old key still
    /// holds), [`KeyError::Failed`].
    fn rotate_master_key(&self, new: &MasterKey) -> Result<usize, KeyError>;

    /// Asks the store to make new loops' keys ahead, `keys` at a time in one durable step, and
    /// to give each new loop one of them without waiting for the disk (0: one durable step per
    /// write, as without a pool). A key given from the pool is durable, but the slot saying
    /// which loop has it may not be until [`sync_assignments`](Self::sync_assignments): the
    /// caller promises that every record naming such a key is kept durably (it names its loop
    /// and key) and handed to [`recover_assignment`](Self::recover_assignment) after a crash.
    /// Stores without pools ignore it.
    ///
    /// # Errors
    /// None today; the signature leaves room for stores that must ask a server.
    fn start_pool(&self, keys: usize) -> Result<(), KeyError> {
        let _ = keys;
        Ok(())
    }

    /// How many keys were given from the pool since the last
    /// [`sync_assignments`](Self::sync_assignments) (0 for stores without pools).
    fn unsynced_assignments(&self) -> usize {
        0
    }

    /// Makes every pooled key given so far durably its loop's, then records that every record
    /// at or before `log_position` of the caller's log names only such keys.
    ///
    /// # Errors
    /// [`KeyError::Io`] or [`KeyError::Failed`] when the store cannot write durably.
    fn sync_assignments(&self, log_position: u64) -> Result<(), KeyError> {
        let _ = log_position;
        Ok(())
    }

    /// After a crash: the log position after which records may name pooled keys whose slots
    /// do not say which loop has them, or `None` when no key can be in that state (no pool,
    /// none left unassigned, or a sealed store, which cannot recover). Pass every such record
    /// to [`recover_assignment`](Self::recover_assignment), then call
    /// [`sync_assignments`](Self::sync_assignments) with the log's head.
    fn assignments_to_recover_after(&self) -> Option<u64> {
        None
    }

    /// Gives pooled key `id` to `loop_id`, because a durable record of that loop names it: its
    /// assignment was lost in a crash. `Ok(true)` when it did; `Ok(false)` when the key is not
    /// an unassigned pooled key (nothing to do).
    ///
    /// # Errors
    /// [`KeyError::InvalidLoopId`], [`KeyError::Sealed`], [`KeyError::Io`],
    /// [`KeyError::Failed`], or [`KeyError::Corrupt`] when the loop already has another live
    /// key (two keys for one loop).
    fn recover_assignment(&self, loop_id: &str, id: KeyId) -> Result<bool, KeyError> {
        let _ = (loop_id, id);
        Ok(false)
    }
}
