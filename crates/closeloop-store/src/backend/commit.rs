//! Group commit without the storage: validating and encoding appends, sealing their personal
//! data, and staging a batch of them against the [`Index`] — versions checked, idempotency
//! keys matched, positions and hashes given — before the backend writes the entries.
//!
//! Staging never changes the index: a backend writes [`Staging::entries`] and, once they are
//! stored, calls [`Staging::apply`]. A backend that loses a race for the log (JetStream's
//! expected-sequence fence) throws the staging away, catches its index up, and stages the same
//! [`Prepared`] requests again.

use std::collections::{HashMap, HashSet};

use closeloop_domain::{LoopEvent, LoopId};
use closeloop_keys::{ContactDigest, KeyRequest, KeyStore};
use tokio::sync::oneshot;

use super::entry;
use super::index::{HeadHash, Index, KeyDigest};
use crate::chain::{Hash, entry_hash};
use crate::record;
use crate::{
    AppendError, AppendOutcome, AppendRequest, Committed, ExpectedVersion, RequestDigest,
    StoreError,
};

/// An append on its way to a backend's writer, with the channel its caller waits on.
#[derive(Debug)]
pub struct Job {
    /// The validated request.
    pub request: Prepared,
    /// Where the outcome goes.
    pub reply: Reply,
}

/// Where a [`Job`]'s outcome goes.
pub type Reply = oneshot::Sender<Result<AppendOutcome, AppendError>>;

/// An [`AppendRequest`] that passed validation, with its records encoded.
#[derive(Debug)]
pub struct Prepared {
    loops: Vec<PreparedLoop>,
    event_count: usize,
}

impl Prepared {
    /// How many events it carries.
    #[must_use]
    pub fn event_count(&self) -> usize {
        self.event_count
    }

    /// The largest number of bytes its entries can take once staged.
    #[must_use]
    pub fn max_entry_bytes(&self) -> usize {
        self.events().map(max_entry_bytes).sum()
    }

    /// The first event (counting across loops from 0) at which the request's entries could
    /// take more than `limit` bytes, and what they could take up to it; `None` when all fit.
    #[must_use]
    pub fn first_over(&self, limit: usize) -> Option<(usize, usize)> {
        let mut total = 0;
        self.events().enumerate().find_map(|(index, event)| {
            total += max_entry_bytes(event);
            (total > limit).then_some((index, total))
        })
    }

    /// Whether any of its records has personal data still to seal, so needs its loop's key.
    pub(crate) fn needs_keys(&self) -> bool {
        self.events()
            .any(|(_, event)| event.draft.as_ref().is_some_and(record::Draft::needs_key))
    }

    /// Encodes every record still a draft without a key: personal data stays in plain, so
    /// only for requests with none ([`needs_keys`](Self::needs_keys) false) or for a store
    /// without keys (tests and benchmarks).
    pub(crate) fn finish_unsealed(&mut self) {
        for (_, event) in self.events_mut() {
            if let Some(draft) = event.draft.take() {
                event.record = draft.finish(None);
            }
        }
    }

    fn events(&self) -> impl Iterator<Item = (&LoopId, &PreparedEvent)> {
        self.loops
            .iter()
            .flat_map(|l| l.events.iter().map(move |e| (&l.loop_id, e)))
    }

    fn events_mut(&mut self) -> impl Iterator<Item = (&LoopId, &mut PreparedEvent)> {
        self.loops
            .iter_mut()
            .flat_map(|l| l.events.iter_mut().map(|e| (&l.loop_id, e)))
    }
}

/// The largest number of bytes one event's entry can take once staged.
fn max_entry_bytes((loop_id, event): (&LoopId, &PreparedEvent)) -> usize {
    let record = event
        .draft
        .as_ref()
        .map_or(event.record.len(), record::Draft::max_len);
    ENTRY_OVERHEAD + loop_id.as_str().len() + event.source.len() + event.event_id.len() + record
}

/// Bytes of an entry besides its loop id, key and record (see [`entry`]), and a length prefix.
const ENTRY_OVERHEAD: usize = 8 + 32 + 32 + 1 + 2 + 2 + 32 + 4;

#[derive(Debug)]
struct PreparedLoop {
    loop_id: LoopId,
    expected: ExpectedVersion,
    events: Vec<PreparedEvent>,
}

#[derive(Debug)]
struct PreparedEvent {
    source: String,
    event_id: String,
    /// The digest of (`source`, `event_id`), as the index keeps it: worked out here, on the
    /// caller's task, not on the writer thread.
    key: KeyDigest,
    request: Option<RequestDigest>,
    /// The record bytes, once sealed (see [`seal`]).
    record: Vec<u8>,
    /// The record before its personal data is sealed with its loop's key.
    draft: Option<record::Draft>,
    /// The keyed digest of the author's contact, for the key store's contact index.
    contact: Option<ContactDigest>,
}

/// Validates a request and encodes its records, up to sealing their personal data: everything
/// that needs no ordering, so it runs on the caller's task.
///
/// # Errors
/// [`AppendError::Invalid`] for a malformed request, [`AppendError::TooLarge`] for a record
/// over [`record::MAX_RECORD_BYTES`], [`StoreError::Backend`] when the key store cannot digest
/// a contact.
pub fn prepare(
    request: AppendRequest,
    key_store: Option<&dyn KeyStore>,
) -> Result<Prepared, AppendError> {
    if request.loops.is_empty() || request.loops.iter().any(|l| l.events.is_empty()) {
        return Err(AppendError::Invalid(
            "an append needs at least one event for every loop it names".to_owned(),
        ));
    }
    let mut loops = HashSet::new();
    let mut keys = HashSet::new();
    for append in &request.loops {
        if !append.requests.is_empty() && append.requests.len() != append.events.len() {
            return Err(AppendError::Invalid(format!(
                "loop {} has {} events but {} request digests; give one per event or none",
                append.loop_id,
                append.events.len(),
                append.requests.len()
            )));
        }
        if !loops.insert(&append.loop_id) {
            return Err(AppendError::Invalid(format!(
                "loop {} appears twice in one append",
                append.loop_id
            )));
        }
        for event in &append.events {
            if event.source.len() > entry::MAX_KEY_PART
                || event.event_id.len() > entry::MAX_KEY_PART
            {
                return Err(AppendError::Invalid(format!(
                    "an event's source and id may be at most {} bytes each",
                    entry::MAX_KEY_PART
                )));
            }
            if !keys.insert((&event.source, &event.event_id)) {
                return Err(AppendError::Invalid(format!(
                    "event ({:?}, {:?}) appears twice in one append",
                    event.source, event.event_id
                )));
            }
        }
    }
    let event_count = request.event_count();
    let mut loops = Vec::with_capacity(request.loops.len());
    let mut event_index = 0;
    for append in request.loops {
        let mut events = Vec::with_capacity(append.events.len());
        let mut requests = append.requests.into_iter();
        for event in append.events {
            let bound = requests.next().flatten();
            let draft = record::Draft::new(append.loop_id.as_str(), &event);
            if draft.max_len() > record::MAX_RECORD_BYTES {
                return Err(AppendError::TooLarge {
                    event_index,
                    size: draft.max_len(),
                    limit: record::MAX_RECORD_BYTES,
                });
            }
            event_index += 1;
            let contact = match (key_store, contact_of(&event)) {
                (Some(key_store), Some(contact)) => Some(
                    key_store
                        .contact_digest(contact)
                        .map_err(|err| StoreError::Backend(format!("key store: {err}")))?,
                ),
                _ => None,
            };
            events.push(PreparedEvent {
                record: Vec::new(),
                draft: Some(draft),
                contact,
                key: KeyDigest::of(&event.source, &event.event_id),
                source: event.source,
                event_id: event.event_id,
                request: bound,
            });
        }
        loops.push(PreparedLoop {
            loop_id: append.loop_id,
            expected: append.expected,
            events,
        });
    }
    Ok(Prepared { loops, event_count })
}

/// The author's contact of a `feedback.received`, for the contact index.
fn contact_of(event: &closeloop_domain::Event) -> Option<&str> {
    match &event.payload {
        LoopEvent::FeedbackReceived(data) => data.author.as_ref()?.contact.as_deref(),
        _ => None,
    }
}

/// Seals the personal data of every record in `batch` with its loop's key, creating the keys
/// that do not exist yet in one durable step of the key store, before the records that need
/// them are written, so no stored record names a key that is not. Without a key store, records
/// keep their personal data in plain (tests and benchmarks only). Sealing twice does nothing.
/// The [`intake`](super::intake)'s sealer calls it, ahead of the writer.
///
/// # Errors
/// The key store's failure, as text.
pub(crate) fn seal<'a>(
    batch: impl IntoIterator<Item = &'a mut Prepared>,
    keys: Option<&dyn KeyStore>,
) -> Result<(), String> {
    let mut batch: Vec<&mut Prepared> = batch.into_iter().collect();
    // The loops whose records need a key, each once (the batch may hold thousands), with
    // the contact to index; `index` finds a loop's place in `wanted`, and so its key.
    let mut index: HashMap<LoopId, usize> = HashMap::new();
    let mut wanted: Vec<(LoopId, Option<ContactDigest>)> = Vec::new();
    if keys.is_some() {
        for (loop_id, event) in batch.iter().flat_map(|request| request.events()) {
            if !event.draft.as_ref().is_some_and(record::Draft::needs_key) {
                continue;
            }
            match index.get(loop_id) {
                Some(&at) => wanted[at].1 = wanted[at].1.or(event.contact),
                None => {
                    index.insert(loop_id.clone(), wanted.len());
                    wanted.push((loop_id.clone(), event.contact));
                }
            }
        }
    }
    let made = match keys {
        Some(keys) if !wanted.is_empty() => {
            let requests: Vec<KeyRequest<'_>> = wanted
                .iter()
                .map(|(loop_id, contact)| KeyRequest {
                    loop_id: loop_id.as_str(),
                    contact: *contact,
                })
                .collect();
            keys.keys_for_writing(&requests)
                .map_err(|err| format!("key store failed: {err}"))?
        }
        _ => Vec::new(),
    };
    for (loop_id, event) in batch.iter_mut().flat_map(|request| request.events_mut()) {
        if let Some(draft) = event.draft.take() {
            // `None` without a key store, or for a record with nothing personal.
            let key = index.get(loop_id).map(|&at| &made[at]);
            event.record = draft.finish(key);
        }
    }
    Ok(())
}

/// What staging reads back from the stored log: the [`Index`] holds only digests of
/// idempotency keys and, in a store that does not keep them, no head hashes.
pub trait StoredEntries {
    /// The entry at `position` as a [`Committed`], if its header really carries the
    /// idempotency key (source, event id); `None` for another key.
    ///
    /// # Errors
    /// The entry cannot be read.
    fn confirm_key(
        &self,
        position: u64,
        source: &str,
        event_id: &str,
    ) -> Result<Option<Committed>, StoreError>;

    /// The hash of the entry at `position`, which the index says is stored.
    ///
    /// # Errors
    /// The entry cannot be read, or is missing ([`StoreError::Corrupt`]).
    fn entry_hash(&self, position: u64) -> Result<Hash, StoreError>;
}

/// One entry of a [`Staging`], ready to be written.
#[derive(Debug)]
pub struct StagedEntry {
    /// Where it goes in the log.
    pub position: u64,
    /// Its loop.
    pub loop_id: LoopId,
    /// Its hash.
    pub hash: Hash,
    /// The entry's bytes (see [`entry`]).
    pub bytes: Vec<u8>,
    source: String,
    event_id: String,
    /// The digest of (`source`, `event_id`), from the prepared event.
    key: KeyDigest,
    version: u64,
    request: Option<RequestDigest>,
}

/// A batch of appends checked against the index and given positions and hashes, not yet stored.
#[derive(Debug)]
pub struct Staging {
    first_position: u64,
    entries: Vec<StagedEntry>,
    /// Loops this batch moved on: (version, head hash) after its entries.
    heads: HashMap<LoopId, (u64, Hash)>,
    /// Idempotency keys this batch stores, by digest → the first entry in `entries` whose key
    /// has that digest (see [`staged_key`](Self::staged_key)).
    keys: HashMap<KeyDigest, usize>,
}

impl Staging {
    /// An empty batch whose first entry goes at `first_position`.
    #[must_use]
    pub fn new(first_position: u64) -> Self {
        Self {
            first_position,
            entries: Vec::new(),
            heads: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    /// The entries staged so far, in position order.
    #[must_use]
    pub fn entries(&self) -> &[StagedEntry] {
        &self.entries
    }

    /// The position of the first entry.
    #[must_use]
    pub fn first_position(&self) -> u64 {
        self.first_position
    }

    /// The position the next staged entry would take.
    #[must_use]
    pub fn next_position(&self) -> u64 {
        self.first_position + self.entries.len() as u64
    }

    /// Checks one request against `index` and the requests staged before it and, when it
    /// passes, stages its entries. Nothing is staged for a request that fails. `stored` reads
    /// back what the index does not hold: whether an entry carries an idempotency key (the
    /// index holds digests of keys, so a hit is only a candidate), and a loop's head hash where
    /// the index does not keep it.
    ///
    /// # Errors
    /// [`AppendError::Conflict`], [`AppendError::IdempotencyMismatch`], or what `stored` fails
    /// with.
    pub fn stage(
        &mut self,
        index: &Index,
        request: &Prepared,
        stored: &dyn StoredEntries,
    ) -> Result<AppendOutcome, AppendError> {
        // Idempotency: all keys known means a repeat of an earlier append; some means misuse,
        // and so does a key bound to another request than this one.
        let mut originals = Vec::with_capacity(request.event_count);
        for (_, event) in request.events() {
            let original = self.original(index, event, stored)?;
            if let Some(original) = &original
                && RequestDigest::conflict(original.request, event.request)
            {
                return Err(AppendError::IdempotencyMismatch {
                    event_source: event.source.clone(),
                    event_id: event.event_id.clone(),
                });
            }
            originals.push(original);
        }
        if originals.iter().all(Option::is_some) {
            return Ok(AppendOutcome {
                committed: originals.into_iter().flatten().collect(),
                duplicate: true,
            });
        }
        if let Some(taken) = originals.iter().position(Option::is_some) {
            let (_, event) = request
                .events()
                .nth(taken)
                .expect("index within the request's events");
            return Err(AppendError::IdempotencyMismatch {
                event_source: event.source.clone(),
                event_id: event.event_id.clone(),
            });
        }

        // Optimistic concurrency: check every loop before staging anything, and read the head
        // hashes the index does not keep, so that a failed read stages nothing either.
        let mut heads = Vec::with_capacity(request.loops.len());
        for append in &request.loops {
            let (version, head) = self.head(index, &append.loop_id);
            if !append.expected.admits(version) {
                return Err(AppendError::Conflict {
                    loop_id: append.loop_id.clone(),
                    expected: append.expected,
                    actual: version,
                });
            }
            let hash = match head {
                HeadHash::Known(hash) => hash,
                HeadHash::OfEntry(last) => stored.entry_hash(last)?,
            };
            heads.push((version, hash));
        }

        let mut committed = Vec::with_capacity(request.event_count);
        // A loop appears once in a request: its events chain on from the head read above.
        for (append, (mut version, mut prev_hash)) in request.loops.iter().zip(heads) {
            let loop_id = append.loop_id.as_str();
            for event in &append.events {
                version += 1;
                let position = self.next_position();
                let hash = entry_hash(position, version, loop_id, &prev_hash, &event.record);
                let header = entry::Header {
                    version,
                    prev_hash,
                    hash,
                    loop_id,
                    source: &event.source,
                    event_id: &event.event_id,
                    request: event.request,
                };
                let bytes = entry::encode(&header, &event.record);
                prev_hash = hash;
                self.keys.entry(event.key).or_insert(self.entries.len());
                self.entries.push(StagedEntry {
                    position,
                    loop_id: append.loop_id.clone(),
                    hash,
                    bytes,
                    source: event.source.clone(),
                    event_id: event.event_id.clone(),
                    key: event.key,
                    version,
                    request: event.request,
                });
                committed.push(Committed {
                    loop_id: append.loop_id.clone(),
                    version,
                    position,
                    request: event.request,
                });
            }
            if !append.events.is_empty() {
                self.heads
                    .insert(append.loop_id.clone(), (version, prev_hash));
            }
        }
        Ok(AppendOutcome {
            committed,
            duplicate: false,
        })
    }

    /// Adds the staged entries to `index`, once they are stored; `index` must not have moved
    /// since they were staged.
    pub fn apply(&self, index: &mut Index) {
        for entry in &self.entries {
            index.insert_keyed(&entry.loop_id, entry.key, entry.position, entry.hash);
        }
    }

    /// A loop's version and head hash, counting what this batch staged.
    fn head(&self, index: &Index, loop_id: &LoopId) -> (u64, HeadHash) {
        self.heads.get(loop_id).map_or_else(
            || index.head(loop_id),
            |&(version, hash)| (version, HeadHash::Known(hash)),
        )
    }

    /// Where an idempotency key was stored before, in this batch or (confirmed against the
    /// entry itself) in the log.
    fn original(
        &self,
        index: &Index,
        event: &PreparedEvent,
        stored: &dyn StoredEntries,
    ) -> Result<Option<Committed>, StoreError> {
        let (source, event_id) = (event.source.as_str(), event.event_id.as_str());
        if let Some(at) = self.staged_key(event.key, source, event_id) {
            let entry = &self.entries[at];
            return Ok(Some(Committed {
                loop_id: entry.loop_id.clone(),
                version: entry.version,
                position: entry.position,
                request: entry.request,
            }));
        }
        for position in index.candidates_for_digest(event.key) {
            if let Some(confirmed) = stored.confirm_key(position, source, event_id)? {
                return Ok(Some(confirmed));
            }
        }
        Ok(None)
    }

    /// The staged entry that holds the idempotency key (`source`, `event_id`), whose digest is
    /// `key`.
    fn staged_key(&self, key: KeyDigest, source: &str, event_id: &str) -> Option<usize> {
        let first = *self.keys.get(&key)?;
        let holds = |entry: &StagedEntry| entry.source == source && entry.event_id == event_id;
        if holds(&self.entries[first]) {
            return Some(first);
        }
        // Another key with the same 32-bit digest was staged first (one pair in a few
        // billion): look through the batch.
        self.entries.iter().position(holds)
    }
}

#[cfg(test)]
mod tests {
    use closeloop_domain::{Event, EventType, LoopEvent};
    use serde_json::json;

    use super::*;
    use crate::LoopAppend;
    use crate::backend::index::RecentHashes;

    /// A log whose entries cannot be read: every read fails.
    struct Unreadable;

    impl StoredEntries for Unreadable {
        fn confirm_key(
            &self,
            position: u64,
            _: &str,
            _: &str,
        ) -> Result<Option<Committed>, StoreError> {
            Err(StoreError::Backend(format!(
                "cannot read position {position}"
            )))
        }

        fn entry_hash(&self, position: u64) -> Result<Hash, StoreError> {
            Err(StoreError::Backend(format!(
                "cannot read position {position}"
            )))
        }
    }

    fn acknowledged(loop_id: &str, event_id: &str) -> LoopAppend {
        LoopAppend {
            loop_id: LoopId::parse(loop_id).expect("loop id"),
            expected: ExpectedVersion::Any,
            events: vec![Event {
                event_id: event_id.to_owned(),
                source: "urn:test".to_owned(),
                time: "2026-11-27T09:30:00Z".parse().expect("time"),
                payload: LoopEvent::from_stored_data(
                    EventType::Acknowledged,
                    json!({"by": "pals"}),
                )
                .expect("data"),
                actor: None,
            }],
            requests: Vec::new(),
        }
    }

    #[test]
    fn a_head_hash_that_cannot_be_read_stages_nothing_of_the_request() {
        let mut index = Index::reading_head_hashes();
        let old = LoopId::parse("loop-old").expect("loop id");
        index.insert(&old, "urn:test", "e1", 1, Hash([1; 32]));
        // Entries of another loop, so that the first is no longer a recent one.
        let other = LoopId::parse("loop-other").expect("loop id");
        let next = 2 + RecentHashes::LEN as u64;
        for position in 2..next {
            index.insert(
                &other,
                "urn:other",
                &position.to_string(),
                position,
                Hash([2; 32]),
            );
        }
        // A new loop first, then the one whose head hash must be read from the log.
        let request = prepare(
            AppendRequest {
                loops: vec![
                    acknowledged("loop-new", "e2"),
                    acknowledged("loop-old", "e3"),
                ],
            },
            None,
        )
        .expect("valid request");
        let mut staging = Staging::new(next);
        let err = staging
            .stage(&index, &request, &Unreadable)
            .expect_err("the read fails");
        assert!(
            matches!(&err, AppendError::Store(StoreError::Backend(reason)) if reason == "cannot read position 1"),
            "{err:?}"
        );
        assert!(staging.entries().is_empty(), "nothing staged");
        assert_eq!(staging.next_position(), next);
    }

    #[test]
    fn a_loop_written_to_recently_chains_on_without_reading_the_log() {
        let mut index = Index::reading_head_hashes();
        let recent = LoopId::parse("loop-recent").expect("loop id");
        index.insert(&recent, "urn:test", "e1", 1, Hash([1; 32]));
        let mut request = prepare(
            AppendRequest {
                loops: vec![acknowledged("loop-recent", "e2")],
            },
            None,
        )
        .expect("valid request");
        request.finish_unsealed();
        let mut staging = Staging::new(2);
        let outcome = staging
            .stage(&index, &request, &Unreadable)
            .expect("nothing to read back");
        assert_eq!(outcome.committed[0].version, 2);
        assert_eq!(staging.entries()[0].hash, {
            let record = &request.loops[0].events[0].record;
            entry_hash(2, 2, "loop-recent", &Hash([1; 32]), record)
        });
    }

    #[test]
    fn keys_staged_in_one_batch_are_found_again_by_the_next_request() {
        let index = Index::reading_head_hashes();
        let mut staging = Staging::new(1);
        let first = prepare(
            AppendRequest {
                loops: vec![acknowledged("loop-a", "e1"), acknowledged("loop-b", "e2")],
            },
            None,
        )
        .expect("valid request");
        staging
            .stage(&index, &first, &Unreadable)
            .expect("new keys");
        let again = prepare(
            AppendRequest {
                loops: vec![acknowledged("loop-c", "e2")],
            },
            None,
        )
        .expect("valid request");
        let repeat = staging
            .stage(&index, &again, &Unreadable)
            .expect("a repeat of a staged key");
        assert!(repeat.duplicate);
        assert_eq!(repeat.committed[0].position, 2);
        assert_eq!(repeat.committed[0].loop_id.as_str(), "loop-b");
        assert_eq!(staging.entries().len(), 2, "nothing new staged");
    }
}
