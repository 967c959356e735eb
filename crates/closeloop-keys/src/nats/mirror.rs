//! The in-memory mirror of the key stream: every message applied in stream order, once. Reads
//! answer from it; writes plan against it. It does no I/O, so its rules are tested here alone.

use std::collections::{BTreeMap, HashMap};

use super::format::{KeyRecord, Kind, MetaRecord, Record};
use super::subjects::Topic;
use crate::index::LoopIndex;
use crate::wrap::Wrapped;
use crate::{ContactDigest, KeyId};

/// The meta record in force and the message holding it.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    pub(super) seq: u64,
    pub(super) record: MetaRecord,
}

/// One stored version of a live key.
#[derive(Debug)]
pub(super) struct Version {
    seq: u64,
    epoch: u64,
    /// The data key wrapped under the master key of `epoch`.
    pub(super) wrapped: Wrapped,
    /// The loop's first contact digest, when this version carries it.
    pub(super) digest: Option<ContactDigest>,
}

/// A live key: its loop and its versions in stream order (more than one only during or after an
/// unfinished master key rotation).
#[derive(Debug)]
struct LiveKey {
    loop_id: String,
    versions: Vec<Version>,
}

/// What the mirror knows of a key id.
#[derive(Debug)]
pub(super) enum KeyLookup<'a> {
    /// A live key of this loop; its versions, to pick the one wrapped under the master in force.
    Live(Versions<'a>),
    /// A key of this loop that an erasure destroyed.
    Destroyed,
    /// No key of that id belongs to this loop.
    Unknown,
}

/// The versions of one live key.
#[derive(Debug)]
pub(super) struct Versions<'a>(&'a [Version]);

impl Versions<'_> {
    /// The newest version wrapped in `epoch`, if any.
    pub(super) fn in_epoch(&self, epoch: u64) -> Option<&Version> {
        self.0.iter().rev().find(|version| version.epoch == epoch)
    }
}

/// Why a message was stored that must be erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Garbage {
    /// It holds a destroyed key, or a contact digest of an erased loop: the loop's erasure is not
    /// finished until it is erased.
    Erased(String),
    /// A meta record a rotation superseded: secrets wrapped under an old master key.
    OldMeta,
}

/// The stream as applied so far.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    /// Every message up to this stream sequence is applied (or was deleted before it was read).
    applied: u64,
    meta: Option<Meta>,
    live: HashMap<KeyId, LiveKey>,
    /// Which live key each stored key version belongs to, by the version's stream sequence.
    version_of: HashMap<u64, KeyId>,
    /// Keys destroyed by an erasure, with their loop.
    destroyed: HashMap<KeyId, String>,
    index: LoopIndex<KeyId>,
    /// The messages holding a live loop's contact digests (contact messages; the key message
    /// carries the first), every one of them, duplicates included.
    contact_messages: HashMap<String, Vec<u64>>,
    /// Messages still stored that must be erased.
    garbage: BTreeMap<u64, Garbage>,
}

impl Mirror {
    /// The stream sequence every message up to which is applied.
    pub(super) fn applied(&self) -> u64 {
        self.applied
    }

    /// Records that every message up to `seq` has been applied or is gone.
    pub(super) fn applied_through(&mut self, seq: u64) {
        self.applied = self.applied.max(seq);
    }

    /// Applies the message at `seq`, unless it already was. Messages must come in stream order:
    /// applying `seq` declares every message between the last applied and `seq` gone.
    ///
    /// # Errors
    /// A sentence on what is wrong with a message that breaks the store's rules; the message is
    /// skipped.
    pub(super) fn apply(&mut self, seq: u64, subject: &str, payload: &[u8]) -> Result<(), String> {
        if seq <= self.applied {
            return Ok(());
        }
        self.applied = seq;
        let topic = Topic::parse(subject)?;
        let kind = match &topic {
            Topic::Meta => Kind::Meta,
            Topic::Key(_) => Kind::Key,
            Topic::Contact(_) => Kind::Contact,
            Topic::Erased(_) => Kind::Erased,
        };
        let record =
            Record::decode(kind, payload).map_err(|e| format!("message {seq} ({subject}): {e}"))?;
        match (topic, record) {
            (Topic::Meta, Record::Meta(record)) => {
                if let Some(old) = self.meta.replace(Meta { seq, record }) {
                    self.garbage.insert(old.seq, Garbage::OldMeta);
                }
                Ok(())
            }
            (Topic::Key(loop_id), Record::Key(record)) => self.apply_key(seq, loop_id, &record),
            (Topic::Contact(loop_id), Record::Contact(digest)) => {
                self.apply_contact(seq, loop_id, digest);
                Ok(())
            }
            (Topic::Erased(loop_id), Record::Erased(ids)) => self.apply_erased(seq, &loop_id, &ids),
            _ => unreachable!("records are decoded as their subject's kind"),
        }
    }

    fn apply_key(&mut self, seq: u64, loop_id: String, record: &KeyRecord) -> Result<(), String> {
        let id = record.id;
        if id == 0 || id > seq {
            return Err(format!(
                "message {seq} holds key id {id}, which no message up to it can have made"
            ));
        }
        if let Some(owner) = self.destroyed.get(&id) {
            if *owner != loop_id {
                return Err(format!(
                    "message {seq} holds key {id} for another loop than the one it was destroyed for"
                ));
            }
            // A version of a destroyed key that outlived its erasure (e.g. a crash before the
            // deletes, or a rotation racing an erasure).
            self.garbage.insert(seq, Garbage::Erased(loop_id));
            return Ok(());
        }
        let version = Version {
            seq,
            epoch: record.epoch,
            wrapped: record.wrapped,
            digest: record.digest,
        };
        if let Some(key) = self.live.get_mut(&id) {
            if key.loop_id != loop_id {
                return Err(format!(
                    "message {seq} holds key {id} under another loop than the key's own"
                ));
            }
            key.versions.push(version);
            self.version_of.insert(seq, id);
            if let Some(digest) = record.digest
                && self.index.contact(&loop_id, &digest).is_none()
            {
                self.index.add_contact(&loop_id, digest, id);
            }
            return Ok(());
        }
        if let Some(other) = self.index.live_key(&loop_id) {
            return Err(format!(
                "message {seq} makes key {id} for a loop whose live key is {other}: two live keys for one loop"
            ));
        }
        self.index.set_key(&loop_id, id);
        if let Some(digest) = record.digest {
            self.index.add_contact(&loop_id, digest, id);
        }
        self.live.insert(
            id,
            LiveKey {
                loop_id,
                versions: vec![version],
            },
        );
        self.version_of.insert(seq, id);
        Ok(())
    }

    fn apply_contact(&mut self, seq: u64, loop_id: String, digest: ContactDigest) {
        let Some(id) = self.index.live_key(&loop_id) else {
            // A contact sent for a loop erased meanwhile: the contact index lists live keys only.
            self.garbage.insert(seq, Garbage::Erased(loop_id));
            return;
        };
        if self.index.contact(&loop_id, &digest).is_none() {
            self.index.add_contact(&loop_id, digest, id);
        }
        self.contact_messages.entry(loop_id).or_default().push(seq);
    }

    fn apply_erased(&mut self, seq: u64, loop_id: &str, ids: &[KeyId]) -> Result<(), String> {
        let forgotten = self.index.destroy(loop_id);
        let mut foreign = Vec::new();
        for id in forgotten.key.iter().chain(ids) {
            let owner = self
                .live
                .get(id)
                .map(|key| key.loop_id.as_str())
                .or_else(|| self.destroyed.get(id).map(String::as_str));
            if owner.is_some_and(|owner| owner != loop_id) {
                foreign.push(*id);
                continue;
            }
            if let Some(key) = self.live.remove(id) {
                for version in key.versions {
                    self.version_of.remove(&version.seq);
                    self.garbage
                        .insert(version.seq, Garbage::Erased(loop_id.to_owned()));
                }
            }
            self.destroyed.insert(*id, loop_id.to_owned());
        }
        for seq in self.contact_messages.remove(loop_id).unwrap_or_default() {
            self.garbage
                .insert(seq, Garbage::Erased(loop_id.to_owned()));
        }
        if foreign.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "message {seq} erases keys {foreign:?}, which belong to other loops; they were kept"
            ))
        }
    }

    /// The meta record in force, if the store was ever created.
    pub(super) fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    /// The loop's live key.
    pub(super) fn live_key(&self, loop_id: &str) -> Option<KeyId> {
        self.index.live_key(loop_id)
    }

    /// Whether the loop's contact index holds `digest`.
    pub(super) fn has_contact(&self, loop_id: &str, digest: &ContactDigest) -> bool {
        self.index.contact(loop_id, digest).is_some()
    }

    /// What the mirror knows of key `id` for `loop_id`.
    pub(super) fn lookup(&self, loop_id: &str, id: KeyId) -> KeyLookup<'_> {
        if let Some(key) = self.live.get(&id) {
            if key.loop_id == loop_id {
                return KeyLookup::Live(Versions(&key.versions));
            }
            return KeyLookup::Unknown;
        }
        match self.destroyed.get(&id) {
            Some(owner) if owner == loop_id => KeyLookup::Destroyed,
            _ => KeyLookup::Unknown,
        }
    }

    /// Whether the loop was ever erased.
    pub(super) fn is_erased(&self, loop_id: &str) -> bool {
        self.index.is_erased(loop_id)
    }

    /// The loops whose live contacts include `digest`, in loop id order.
    pub(super) fn loops_with(&self, digest: &ContactDigest) -> Vec<String> {
        self.index.loops_with(digest)
    }

    /// Every live key: id, loop and versions.
    pub(super) fn live_keys(&self) -> impl Iterator<Item = (KeyId, &str, Versions<'_>)> {
        self.live
            .iter()
            .map(|(id, key)| (*id, key.loop_id.as_str(), Versions(&key.versions)))
    }

    /// How many keys are live.
    pub(super) fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The stored messages of one loop's erasure that are still to be erased.
    pub(super) fn garbage_of(&self, loop_id: &str) -> Vec<u64> {
        self.garbage
            .iter()
            .filter(|(_, why)| matches!(why, Garbage::Erased(owner) if owner == loop_id))
            .map(|(seq, _)| *seq)
            .collect()
    }

    /// Every stored message to erase: leftovers of erasures, superseded meta records, and key
    /// versions older than the version wrapped in `epoch` (left by a finished rotation). Versions
    /// newer than the one in force are kept: they may belong to a rotation under way elsewhere.
    pub(super) fn all_garbage(&self, epoch: u64) -> Vec<u64> {
        let mut seqs: Vec<u64> = self.garbage.keys().copied().collect();
        for key in self.live.values() {
            if let Some(current) = key.versions.iter().rev().find(|v| v.epoch == epoch) {
                seqs.extend(
                    key.versions
                        .iter()
                        .filter(|v| v.seq < current.seq)
                        .map(|v| v.seq),
                );
            }
        }
        seqs.sort_unstable();
        seqs
    }

    /// Forgets a message this store erased: it is no longer stored.
    pub(super) fn erased(&mut self, seq: u64) {
        if self.garbage.remove(&seq).is_some() {
            return;
        }
        if let Some(id) = self.version_of.remove(&seq)
            && let Some(key) = self.live.get_mut(&id)
        {
            key.versions.retain(|v| v.seq != seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::WrappedSecrets;
    use crate::wrap::WRAPPED_LEN;

    const EPOCH: u64 = 40;

    fn meta(epoch: u64) -> Vec<u8> {
        Record::Meta(MetaRecord {
            epoch,
            secrets: WrappedSecrets {
                master_check: [1; 32],
                contact_index: [2; WRAPPED_LEN],
                public_id: [3; WRAPPED_LEN],
            },
        })
        .encode()
    }

    fn key(epoch: u64, id: KeyId, fill: u8, digest: Option<u8>) -> Vec<u8> {
        Record::Key(KeyRecord {
            epoch,
            id,
            wrapped: [fill; WRAPPED_LEN],
            digest: digest.map(|d| ContactDigest([d; 32])),
        })
        .encode()
    }

    fn subject(topic: Topic) -> String {
        topic.subject()
    }

    fn key_subject(loop_id: &str) -> String {
        subject(Topic::Key(loop_id.to_owned()))
    }

    /// A mirror with meta at 1, then `loop-a`'s key at 2 (with contact 7) and `loop-b`'s at 3.
    fn mirror() -> Mirror {
        let mut mirror = Mirror::default();
        mirror
            .apply(1, super::super::subjects::META, &meta(EPOCH))
            .unwrap();
        mirror
            .apply(2, &key_subject("loop-a"), &key(EPOCH, 2, 0xa, Some(7)))
            .unwrap();
        mirror
            .apply(3, &key_subject("loop-b"), &key(EPOCH, 3, 0xb, None))
            .unwrap();
        mirror
    }

    fn wrapped(mirror: &Mirror, loop_id: &str, id: KeyId) -> Option<u8> {
        match mirror.lookup(loop_id, id) {
            KeyLookup::Live(versions) => versions.in_epoch(EPOCH).map(|v| v.wrapped[0]),
            _ => None,
        }
    }

    #[test]
    fn keys_contacts_and_lookups() {
        let mut mirror = mirror();
        assert_eq!(mirror.live_key("loop-a"), Some(2));
        assert_eq!(wrapped(&mirror, "loop-a", 2), Some(0xa));
        assert!(matches!(mirror.lookup("loop-b", 2), KeyLookup::Unknown));
        assert!(matches!(mirror.lookup("loop-a", 9), KeyLookup::Unknown));
        let seven = ContactDigest([7; 32]);
        let eight = ContactDigest([8; 32]);
        mirror
            .apply(
                4,
                &subject(Topic::Contact("loop-b".into())),
                &Record::Contact(seven).encode(),
            )
            .unwrap();
        mirror
            .apply(
                5,
                &subject(Topic::Contact("loop-b".into())),
                &Record::Contact(seven).encode(),
            )
            .unwrap();
        assert_eq!(mirror.loops_with(&seven), ["loop-a", "loop-b"]);
        assert!(mirror.loops_with(&eight).is_empty());
        assert!(mirror.has_contact("loop-b", &seven));
        assert_eq!(mirror.applied(), 5);
    }

    #[test]
    fn messages_apply_once_in_order() {
        let mut mirror = mirror();
        // A second delivery of an applied message changes nothing, even a different one.
        mirror
            .apply(3, &key_subject("loop-c"), &key(EPOCH, 3, 0xc, None))
            .unwrap();
        assert_eq!(mirror.live_key("loop-c"), None);
        mirror.applied_through(10);
        mirror
            .apply(9, &key_subject("loop-c"), &key(EPOCH, 9, 0xc, None))
            .unwrap();
        assert_eq!(mirror.live_key("loop-c"), None);
        assert_eq!(mirror.applied(), 10);
    }

    #[test]
    fn an_erasure_destroys_the_live_key_and_contacts_and_names_the_garbage() {
        let mut mirror = mirror();
        let seven = ContactDigest([7; 32]);
        mirror
            .apply(
                4,
                &subject(Topic::Contact("loop-a".into())),
                &Record::Contact(ContactDigest([8; 32])).encode(),
            )
            .unwrap();
        mirror
            .apply(
                5,
                &subject(Topic::Erased("loop-a".into())),
                &Record::Erased(vec![2]).encode(),
            )
            .unwrap();
        assert!(mirror.is_erased("loop-a"));
        assert!(!mirror.is_erased("loop-b"));
        assert_eq!(mirror.live_key("loop-a"), None);
        assert!(matches!(mirror.lookup("loop-a", 2), KeyLookup::Destroyed));
        assert!(matches!(mirror.lookup("loop-b", 2), KeyLookup::Unknown));
        assert!(mirror.loops_with(&seven).is_empty());
        assert_eq!(mirror.garbage_of("loop-a"), [2, 4]);
        assert!(mirror.garbage_of("loop-b").is_empty());
        mirror.erased(2);
        mirror.erased(4);
        assert!(mirror.garbage_of("loop-a").is_empty());
        // A later key for the loop is a new live key; the erasure stays on record.
        mirror
            .apply(6, &key_subject("loop-a"), &key(EPOCH, 6, 0xd, None))
            .unwrap();
        assert_eq!(mirror.live_key("loop-a"), Some(6));
        assert!(mirror.is_erased("loop-a"));
    }

    #[test]
    fn leftovers_of_an_erasure_are_garbage() {
        let mut mirror = mirror();
        mirror
            .apply(
                4,
                &subject(Topic::Erased("loop-a".into())),
                &Record::Erased(vec![2]).encode(),
            )
            .unwrap();
        // A rewrapped version of the destroyed key, and a contact sent after the erasure.
        mirror
            .apply(5, &key_subject("loop-a"), &key(EPOCH + 1, 2, 0xe, None))
            .unwrap();
        mirror
            .apply(
                6,
                &subject(Topic::Contact("loop-a".into())),
                &Record::Contact(ContactDigest([9; 32])).encode(),
            )
            .unwrap();
        assert_eq!(mirror.garbage_of("loop-a"), [2, 5, 6]);
        assert!(mirror.loops_with(&ContactDigest([9; 32])).is_empty());
        assert_eq!(mirror.live_key("loop-a"), None);
    }

    #[test]
    fn an_erasure_names_keys_the_mirror_never_saw() {
        let mut mirror = Mirror::default();
        mirror
            .apply(
                8,
                &subject(Topic::Erased("gone".into())),
                &Record::Erased(vec![5]).encode(),
            )
            .unwrap();
        assert!(matches!(mirror.lookup("gone", 5), KeyLookup::Destroyed));
        assert!(matches!(mirror.lookup("other", 5), KeyLookup::Unknown));
    }

    #[test]
    fn rotation_versions_and_their_garbage() {
        let mut mirror = mirror();
        mirror
            .apply(4, &key_subject("loop-a"), &key(EPOCH + 1, 2, 0x1a, None))
            .unwrap();
        mirror
            .apply(5, &key_subject("loop-b"), &key(EPOCH + 1, 3, 0x1b, None))
            .unwrap();
        // Before the new meta: the old versions are in force, the new ones kept.
        assert_eq!(wrapped(&mirror, "loop-a", 2), Some(0xa));
        assert!(mirror.all_garbage(EPOCH).is_empty());
        mirror
            .apply(6, super::super::subjects::META, &meta(EPOCH + 1))
            .unwrap();
        assert_eq!(mirror.meta().unwrap().record.epoch, EPOCH + 1);
        match mirror.lookup("loop-a", 2) {
            KeyLookup::Live(versions) => {
                assert_eq!(versions.in_epoch(EPOCH + 1).unwrap().wrapped[0], 0x1a);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(mirror.all_garbage(EPOCH + 1), [1, 2, 3]);
        for seq in [1, 2, 3] {
            mirror.erased(seq);
        }
        assert!(mirror.all_garbage(EPOCH + 1).is_empty());
        assert_eq!(mirror.live_count(), 2);
    }

    #[test]
    fn broken_rules_are_reported() {
        let mut mirror = mirror();
        let second_key = mirror.apply(4, &key_subject("loop-a"), &key(EPOCH, 4, 1, None));
        assert!(second_key.unwrap_err().contains("two live keys"));
        let future_id = mirror.apply(5, &key_subject("loop-c"), &key(EPOCH, 6, 1, None));
        assert!(future_id.is_err());
        let stolen = mirror.apply(6, &key_subject("loop-c"), &key(EPOCH, 2, 1, None));
        assert!(stolen.is_err());
        let foreign = mirror.apply(7, "closeloop.keys.what", b"");
        assert!(foreign.is_err());
        let garbled = mirror.apply(8, &key_subject("loop-c"), b"\x01short");
        assert!(garbled.is_err());
        let foreign_erasure = mirror.apply(
            9,
            &subject(Topic::Erased("loop-c".into())),
            &Record::Erased(vec![3]).encode(),
        );
        assert!(foreign_erasure.unwrap_err().contains("other loops"));
        assert_eq!(mirror.live_key("loop-b"), Some(3), "loop-b keeps its key");
        assert_eq!(mirror.applied(), 9);
    }
}
