//! Closeloop's event store: the append-only, hash-chained log every loop lives in.
//!
//! - [`EventStore`] is the trait every backend implements: atomic multi-loop appends with
//!   expected versions and idempotency, a loop's own stream, and the global log by position
//!   with a live [`watch`](tokio::sync::watch) of its durable head.
//! - [`backend`] holds what every implementation shares: the entry bytes, the in-memory
//!   index and the group-commit staging, so that the stores cannot be told apart.
//! - [`SledStore`] is the embedded implementation, with group commit: one writer thread
//!   batches concurrent appends and makes each batch durable before anyone hears back, and
//!   one sealer thread makes new loops' keys ahead of it. The `closeloop-store-jetstream` crate implements the trait on a NATS
//!   JetStream stream, for several replicas sharing one log.
//! - [`record`] defines the stored bytes of an event (schema-versioned, personal data kept
//!   apart) and [`StoredEvent`] the log entry around them; [`chain`] the per-loop hash chain
//!   and [`merkle`] the RFC 6962 tree head over all hashes.
//! - [`verify()`] re-walks any store and reports the first position that does not add up.
//! - [`write`] is the one write path: read a loop, [`decide`](closeloop_domain::decide),
//!   append with the version read, retry on a race. HTTP and NATS both go through it.
//! - `conformance` (feature `conformance`) is the test suite every backend must pass.

pub mod backend;
pub mod chain;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod merkle;
pub mod record;
mod sled_store;
mod stored;
mod verify;
pub mod write;

use std::fmt;
use std::future::Future;

use closeloop_domain::{Event, LoopId};
use tokio::sync::watch;

pub use chain::Hash;
/// Loop ids kept compactly; the key store keeps its loops with them too.
pub use closeloop_keys::LoopIds;
pub use sled_store::{
    FaultInjector, FaultPoint, INDEX_FILE_NAME, KeyHandle, MAX_SCAN_THREADS, RawScan, SledStore,
    SledStoreOptions, holds_store, scan_raw,
};
pub use stored::StoredEvent;
pub use verify::{VerifyReport, verify};
pub use write::{Origin, Recorded, WriteError};

/// The loop version an append expects to find, for optimistic concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the loop's version is.
    Any,
    /// The loop must not exist yet.
    NoLoop,
    /// The loop must be exactly at this version.
    Exactly(u64),
}

impl ExpectedVersion {
    /// Whether a loop at `current` version (0: no such loop) meets this expectation.
    #[must_use]
    pub fn admits(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoLoop => current == 0,
            ExpectedVersion::Exactly(expected) => current == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoLoop => f.write_str("no loop yet"),
            ExpectedVersion::Exactly(v) => write!(f, "version {v}"),
        }
    }
}

/// A digest of the request an event was recorded for (SHA-256; see [`RequestDigest::of`]).
///
/// Bound to the event's idempotency key when it is stored: the same key sent again with the
/// same request is a repeat (the original is answered), with another request it is a reuse
/// of the key, refused ([`AppendError::IdempotencyMismatch`], HTTP 422
/// `idempotency_key_reused`, NATS dead letter `id_reused`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestDigest(pub [u8; 32]);

impl RequestDigest {
    /// The digest of a request made of `parts` (e.g. method and path, or type and subject)
    /// and a JSON `body`, compared as JSON: object members in any order, any whitespace.
    #[must_use]
    pub fn of(parts: &[&str], body: &serde_json::Value) -> Self {
        let mut canonical = Vec::new();
        write_canonical(body, &mut canonical);
        Self::of_canonical(parts, &canonical)
    }

    /// [`of`](Self::of) for a body that is a JSON object, without copying it into a value.
    #[must_use]
    pub fn of_object(parts: &[&str], body: &serde_json::Map<String, serde_json::Value>) -> Self {
        let mut canonical = Vec::new();
        write_canonical_object(body, &mut canonical);
        Self::of_canonical(parts, &canonical)
    }

    fn of_canonical(parts: &[&str], canonical: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.update(canonical);
        Self(hasher.finalize().into())
    }

    /// Whether an idempotency key bound to `then` is sent again for another request, `now`.
    /// An unbound side (stored before digests existed, or sent without one) never conflicts.
    #[must_use]
    pub fn conflict(then: Option<Self>, now: Option<Self>) -> bool {
        matches!((then, now), (Some(then), Some(now)) if then != now)
    }
}

impl fmt::Debug for RequestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestDigest({})", hex::encode(&self.0[..8]))
    }
}

/// `value` as JSON with every object's members sorted by name, so that two equal JSON values
/// write the same bytes.
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            // Strings, numbers, booleans and null have one JSON form each.
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// An object with its members sorted by name, as [`write_canonical`] writes objects.
fn write_canonical_object(map: &serde_json::Map<String, serde_json::Value>, out: &mut Vec<u8>) {
    let mut members: Vec<_> = map.iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (n, (name, member)) in members.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        // A name is a string: it has one JSON form.
        let _ = serde_json::to_writer(&mut *out, name);
        out.push(b':');
        write_canonical(member, out);
    }
    out.push(b'}');
}

/// Events for one loop within an [`AppendRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoopAppend {
    /// The loop they belong to.
    pub loop_id: LoopId,
    /// The version the loop must be at.
    pub expected: ExpectedVersion,
    /// The events, in order. Each one's (`source`, `event_id`) is its idempotency key.
    pub events: Vec<Event>,
    /// The request each event was recorded for, bound to its idempotency key: one per event,
    /// or empty when none is bound (then a repeated key is a repeat whatever the request).
    pub requests: Vec<Option<RequestDigest>>,
}

/// One atomic append: every event of every loop in it is stored, or none is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppendRequest {
    /// The loops and their new events; a loop appears at most once.
    pub loops: Vec<LoopAppend>,
}

impl AppendRequest {
    /// An append to one loop.
    #[must_use]
    pub fn single(loop_id: LoopId, expected: ExpectedVersion, events: Vec<Event>) -> Self {
        Self {
            loops: vec![LoopAppend {
                loop_id,
                expected,
                events,
                requests: Vec::new(),
            }],
        }
    }

    /// How many events the request carries.
    #[must_use]
    pub fn event_count(&self) -> usize {
        self.loops.iter().map(|l| l.events.len()).sum()
    }
}

/// Where one appended event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Its loop.
    pub loop_id: LoopId,
    /// Its version within the loop.
    pub version: u64,
    /// Its position in the global log.
    pub position: u64,
    /// The request its idempotency key is bound to, if one was given.
    pub request: Option<RequestDigest>,
}

/// The result of an append, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Where each event of the request is stored.
    pub committed: Vec<Committed>,
    /// `true` when every event was already stored under its idempotency key: nothing new was
    /// written and `committed` describes the original append.
    pub duplicate: bool,
}

/// Why an append was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The loop has moved on since the caller read it (HTTP 409 `version_conflict`): read it
    /// again, decide again, append again.
    #[error("loop {loop_id} is at version {actual}, but the append expected {expected}")]
    Conflict {
        /// The loop.
        loop_id: LoopId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The loop's current version (0: it does not exist).
        actual: u64,
    },
    /// An idempotency key of the request is already bound to a different request, or some
    /// events of the request were stored before under their keys and others were not: a key
    /// was reused for a different request.
    #[error(
        "idempotency key ({event_source:?}, {event_id:?}) was already used for a different append; use a new key for a new request"
    )]
    IdempotencyMismatch {
        /// The `source` of the reused key.
        event_source: String,
        /// The `event_id` of the reused key.
        event_id: String,
    },
    /// The request itself is malformed (empty, a loop twice, a key twice).
    #[error("invalid append: {0}")]
    Invalid(String),
    /// One event's record is larger than [`record::MAX_RECORD_BYTES`]; nothing was stored.
    /// So is an append whose events together are larger than a store that writes an append as
    /// one message can carry (the JetStream store: the server's `max_payload`); then
    /// `event_index` is the first event that does not fit and `size` counts the events up to it.
    #[error(
        "the event would take {size} bytes once stored; the limit is {limit} bytes: shorten its texts or leave out unknown fields"
    )]
    TooLarge {
        /// Which event of the request, counting across its loops in order from 0.
        event_index: usize,
        /// Its encoded size (with the events before it, when they are written together).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store could not do its job.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A failure of the store itself, not of the request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage backend failed.
    #[error("event store backend failed: {0}")]
    Backend(String),
    /// A stored entry cannot be read: the data was damaged or altered.
    #[error("stored event at position {position} is damaged: {detail}; run `closeloop verify`")]
    Corrupt {
        /// Where.
        position: u64,
        /// What is wrong.
        detail: String,
    },
    /// The store stopped accepting writes after a failed write or flush, so that nothing is
    /// acknowledged that may not be on disk.
    #[error("event store stopped after a failed write ({0}); restart the service")]
    Stopped(String),
    /// The data was written by a newer Closeloop.
    #[error(
        "the store's format version {found} is newer than this build understands ({supported}); upgrade Closeloop"
    )]
    UnsupportedFormat {
        /// The format on disk.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
}

/// An append-only, hash-chained event log, the single source of truth.
///
/// Implementations guarantee (and the `conformance` suite checks):
/// - positions are gapless from 1 and never reused; versions per loop are gapless from 1;
/// - an append is atomic across all its loops, and fails with [`AppendError::Conflict`] when a
///   loop's version differs from the expected one; of concurrent writers expecting the same
///   version, exactly one wins;
/// - an event whose (`source`, `event_id`) is already stored is not stored again: the append
///   returns the original outcome with `duplicate: true`; when both the stored and the new event
///   are bound to a [`RequestDigest`] and the digests differ, the append is refused with
///   [`AppendError::IdempotencyMismatch`];
/// - an append returns only once its events are durable, and reads never show events that
///   are not yet durable;
/// - every entry's `prev_hash` is the `hash` of its loop's previous entry (zeros for
///   version 1), and its `hash` follows [`chain::entry_hash`].
pub trait EventStore: Send + Sync + 'static {
    /// Appends events atomically; see the trait docs for the guarantees.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendOutcome, AppendError>> + Send;

    /// All durable events of one loop, in version order; empty when the loop does not exist.
    fn read_loop(
        &self,
        loop_id: &LoopId,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Up to `limit` durable events with position greater than `after`, in position order.
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The position of the last durable event (0 for an empty log).
    fn head(&self) -> u64;

    /// A live view of [`head`](EventStore::head): changes whenever new events become durable.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Whether the store accepts appends now; the error says why not.
    ///
    /// # Errors
    /// The reason the store cannot accept appends, e.g. [`StoreError::Stopped`].
    fn ready(&self) -> Result<(), StoreError>;

    /// Runs `f` on the Merkle index of the log: RFC 6962 tree heads and proofs for any tree
    /// size up to [`head`](EventStore::head), fetching leaves with
    /// [`read_all`](EventStore::read_all) where a proof needs them.
    fn with_merkle<R>(&self, f: impl FnOnce(&merkle::MerkleIndex) -> R) -> R;

    /// Where the event with this idempotency key (`source`, `event_id`) is stored, once it is
    /// durable, with the request the key is bound to; `None` when no such event is stored.
    fn lookup(
        &self,
        source: &str,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<Committed>, StoreError>> + Send;

    /// For a log several processes share: how many of its messages this process has not
    /// applied yet (others' writes on their way here). `None` for a store one process owns.
    fn replica_lag(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::RequestDigest;
    use serde_json::json;

    #[test]
    fn request_digests_compare_json_not_its_spelling() {
        let parts = ["staff:1a2b", "POST", "/v1/feedback"];
        let body = json!({"b": [1, {"y": 2, "x": "é"}], "a": null});
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{ "a" : null, "b": [1, {"x": "\u00e9", "y": 2}] }"#)
                .expect("json");
        let object = body.as_object().expect("object");
        assert_eq!(
            RequestDigest::of(&parts, &body),
            RequestDigest::of(&parts, &reordered)
        );
        assert_eq!(
            RequestDigest::of(&parts, &body),
            RequestDigest::of_object(&parts, object)
        );
        assert_ne!(
            RequestDigest::of(&parts, &body),
            RequestDigest::of(&["staff:1a2b", "POST", "/v1/changes"], &body)
        );
        assert_ne!(
            RequestDigest::of(&parts, &body),
            RequestDigest::of(&parts, &json!({"b": [1, {"y": 2, "x": "e"}], "a": null}))
        );
        let (one, two) = (Some(RequestDigest([1; 32])), Some(RequestDigest([2; 32])));
        assert!(RequestDigest::conflict(one, two));
        assert!(!RequestDigest::conflict(one, one));
        assert!(!RequestDigest::conflict(None, two) && !RequestDigest::conflict(one, None));
    }
}
