//! The bytes of the key file: a 256-byte header, then 256-byte slots. Integers are
//! little-endian; the last four bytes of the header and of every slot are a CRC-32 (IEEE) of the
//! 252 bytes before them.
//!
//! Header (slot 0):
//!
//! | bytes | what |
//! |---|---|
//! | 0–7 | magic `CLKEYS01` |
//! | 8–11 | format version (2; 1 before key pools, read the same) |
//! | 12–15 | slot size (256) |
//! | 16–47 | master key check value: HMAC-SHA256 under the master key of a fixed label |
//! | 48–119 | contact-index secret, wrapped under the master key |
//! | 120–191 | public-id secret, wrapped under the master key |
//! | 192–199 | assignments synced through: a log position such that every record at or before it names only keys whose slots say which loop they belong to (see [`FileKeyStore::sync_assignments`](super::FileKeyStore)) |
//! | 200–251 | zero |
//! | 252–255 | CRC-32 |
//!
//! Slot `n` (n ≥ 1, at byte `256 × n`; a key slot's number is its key id):
//!
//! | bytes | what |
//! |---|---|
//! | 0 | state: 1 live key, 2 live contact, 3 destroyed key, 4 destroyed contact, 5 tombstone, 6 pooled key |
//! | 1 | flags: bit 0 set when a live key slot carries a contact digest; bit 1 set when a live key slot's key was made for the pool (wrapped before it had a loop) |
//! | 2 | loop id length (1–128; 0 in a pooled key slot) |
//! | 3 | zero |
//! | 4–131 | loop id, zero-padded |
//! | 132–203 | live or pooled key: the data key wrapped under the master key (nonce, ciphertext, tag); otherwise zero |
//! | 204–235 | contact digest of a live contact slot, or of a live key slot with flag bit 0; otherwise zero |
//! | 236–251 | zero |
//! | 252–255 | CRC-32 |

use std::borrow::Cow;
use std::ops::Range;

use crate::ContactDigest;
use crate::loop_id::{MAX_LOOP_ID_LEN, check_loop_id};
use crate::secrets::WrappedSecrets;
use crate::wrap::{WRAPPED_LEN, Wrapped};

/// Bytes of the header and of every slot.
pub const SLOT_SIZE: usize = 256;
/// The first bytes of every key file.
pub const MAGIC: &[u8; 8] = b"CLKEYS01";
/// The format version this code writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this code reads (version 1 had no pooled keys and no
/// assignments watermark).
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Where the header keeps the master key check value.
pub const HEADER_MASTER_CHECK: Range<usize> = 16..48;
/// Where the header keeps the wrapped contact-index secret.
pub const HEADER_CONTACT_SECRET: Range<usize> = 48..120;
/// Where the header keeps the wrapped public-id secret.
pub const HEADER_PUBLIC_ID_SECRET: Range<usize> = 120..192;
/// Where the header keeps the log position assignments are synced through.
pub const HEADER_ASSIGNMENTS_SYNCED: Range<usize> = 192..200;

/// Where a slot keeps its loop id (zero-padded).
pub const SLOT_LOOP_ID: Range<usize> = 4..132;
/// Where a live key slot keeps its wrapped data key.
pub const SLOT_WRAPPED_KEY: Range<usize> = 132..204;
/// Where a slot keeps its contact digest.
pub const SLOT_CONTACT_DIGEST: Range<usize> = 204..236;
/// Where the header and every slot keep their CRC-32.
pub const CRC: Range<usize> = 252..256;

const STATE_AT: usize = 0;
const FLAGS_AT: usize = 1;
const LOOP_ID_LEN_AT: usize = 2;
const FLAG_HAS_DIGEST: u8 = 1;
const FLAG_POOLED: u8 = 2;

/// The loop id a pooled key is wrapped for: none yet (real loop ids are never empty).
pub(crate) const NO_LOOP_YET: &str = "";

/// One slot's bytes.
pub(crate) type SlotBytes = [u8; SLOT_SIZE];

/// What a slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// A loop's live data key, maybe with its first contact digest.
    LiveKey = 1,
    /// Another contact digest of a loop.
    LiveContact = 2,
    /// A data key destroyed by an erasure: only the loop id is left.
    DestroyedKey = 3,
    /// A contact digest destroyed by an erasure: only the loop id is left.
    DestroyedContact = 4,
    /// The erasure of a loop that had no key.
    Tombstone = 5,
    /// A key made ahead for the pool, not yet given to a loop.
    PooledKey = 6,
}

impl SlotState {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => SlotState::LiveKey,
            2 => SlotState::LiveContact,
            3 => SlotState::DestroyedKey,
            4 => SlotState::DestroyedContact,
            5 => SlotState::Tombstone,
            6 => SlotState::PooledKey,
            _ => return None,
        })
    }
}

/// A decoded slot; its loop id may borrow the bytes it was decoded from (opening a key file
/// reads a million slots without allocating for each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot<'a> {
    pub(crate) state: SlotState,
    pub(crate) loop_id: Cow<'a, str>,
    /// Present exactly in live and pooled key slots.
    pub(crate) wrapped_key: Option<Wrapped>,
    /// Present in live contact slots, and in live key slots that carry one.
    pub(crate) digest: Option<ContactDigest>,
    /// Whether the key was made for the pool: wrapped before it had a loop, so it unwraps
    /// with the empty loop id (always true of a pooled key slot).
    pub(crate) pooled: bool,
}

/// Why slot bytes do not decode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SlotProblem {
    /// The CRC does not match: a torn or never-completed write, or damage.
    Checksum,
    /// The CRC matches but the content breaks the format.
    Invalid(String),
}

impl<'a> Slot<'a> {
    /// A live key slot.
    pub(crate) fn live_key(
        loop_id: &'a str,
        wrapped_key: Wrapped,
        digest: Option<ContactDigest>,
    ) -> Self {
        Slot {
            state: SlotState::LiveKey,
            loop_id: Cow::Borrowed(loop_id),
            wrapped_key: Some(wrapped_key),
            digest,
            pooled: false,
        }
    }

    /// A key made ahead for the pool: no loop yet.
    pub(crate) fn pooled_key(wrapped_key: Wrapped) -> Self {
        Slot {
            state: SlotState::PooledKey,
            loop_id: Cow::Borrowed(NO_LOOP_YET),
            wrapped_key: Some(wrapped_key),
            digest: None,
            pooled: true,
        }
    }

    /// The loop id the slot's key is wrapped for: [`NO_LOOP_YET`] for a key made for the
    /// pool, wherever it went since, else the slot's loop.
    pub(crate) fn wrapped_for(&self) -> &str {
        if self.pooled {
            NO_LOOP_YET
        } else {
            &self.loop_id
        }
    }

    /// A pooled key given to a loop: the same wrapped bytes, now with the loop's id.
    pub(crate) fn assigned_key(
        loop_id: &'a str,
        wrapped_key: Wrapped,
        digest: Option<ContactDigest>,
    ) -> Self {
        Slot {
            pooled: true,
            ..Slot::live_key(loop_id, wrapped_key, digest)
        }
    }

    /// A live contact slot.
    pub(crate) fn live_contact(loop_id: &'a str, digest: ContactDigest) -> Self {
        Slot {
            state: SlotState::LiveContact,
            loop_id: Cow::Borrowed(loop_id),
            wrapped_key: None,
            digest: Some(digest),
            pooled: false,
        }
    }

    /// What is left of a slot after an erasure, or a tombstone: the loop id and the state.
    pub(crate) fn erased(state: SlotState, loop_id: &'a str) -> Self {
        Slot {
            state,
            loop_id: Cow::Borrowed(loop_id),
            wrapped_key: None,
            digest: None,
            pooled: false,
        }
    }

    /// The same slot, owning its loop id.
    pub(crate) fn into_owned(self) -> Slot<'static> {
        Slot {
            state: self.state,
            loop_id: Cow::Owned(self.loop_id.into_owned()),
            wrapped_key: self.wrapped_key,
            digest: self.digest,
            pooled: self.pooled,
        }
    }

    /// The slot's bytes.
    ///
    /// # Panics
    /// When the loop id is longer than 128 bytes; callers check loop ids first.
    pub(crate) fn encode(&self) -> SlotBytes {
        let mut bytes = [0u8; SLOT_SIZE];
        bytes[STATE_AT] = self.state as u8;
        let has_digest = self.state == SlotState::LiveKey && self.digest.is_some();
        let pooled = matches!(self.state, SlotState::LiveKey | SlotState::PooledKey) && self.pooled;
        bytes[FLAGS_AT] =
            (if has_digest { FLAG_HAS_DIGEST } else { 0 }) | (if pooled { FLAG_POOLED } else { 0 });
        let loop_id = self.loop_id.as_bytes();
        assert!(
            loop_id.len() <= MAX_LOOP_ID_LEN,
            "loop ids are checked before they are stored"
        );
        bytes[LOOP_ID_LEN_AT] = u8::try_from(loop_id.len()).expect("at most 128");
        bytes[SLOT_LOOP_ID.start..SLOT_LOOP_ID.start + loop_id.len()].copy_from_slice(loop_id);
        if let Some(wrapped) = &self.wrapped_key {
            bytes[SLOT_WRAPPED_KEY].copy_from_slice(wrapped);
        }
        if let Some(digest) = &self.digest {
            bytes[SLOT_CONTACT_DIGEST].copy_from_slice(&digest.0);
        }
        seal_crc(&mut bytes);
        bytes
    }

    /// Decodes slot bytes, checking the CRC first and then every field.
    pub(crate) fn decode(bytes: &'a SlotBytes) -> Result<Self, SlotProblem> {
        if !crc_matches(bytes) {
            return Err(SlotProblem::Checksum);
        }
        let invalid = |what: &str| SlotProblem::Invalid(what.to_owned());
        let state =
            SlotState::from_byte(bytes[STATE_AT]).ok_or_else(|| invalid("unknown slot state"))?;
        let len = usize::from(bytes[LOOP_ID_LEN_AT]);
        if len > MAX_LOOP_ID_LEN {
            return Err(invalid("loop id longer than 128 bytes"));
        }
        let loop_id = std::str::from_utf8(&bytes[SLOT_LOOP_ID.start..SLOT_LOOP_ID.start + len])
            .map_err(|_| invalid("loop id is not UTF-8"))?;
        if state == SlotState::PooledKey {
            if !loop_id.is_empty() {
                return Err(invalid("a pooled key slot names a loop"));
            }
        } else {
            check_loop_id(loop_id).map_err(|_| invalid("malformed loop id"))?;
        }
        let wrapped: Wrapped = bytes[SLOT_WRAPPED_KEY]
            .try_into()
            .expect("the range is WRAPPED_LEN long");
        let digest = ContactDigest(
            bytes[SLOT_CONTACT_DIGEST]
                .try_into()
                .expect("the range is 32 long"),
        );
        let has_digest = bytes[FLAGS_AT] & FLAG_HAS_DIGEST != 0;
        let pooled = bytes[FLAGS_AT] & FLAG_POOLED != 0;
        let zero_key = wrapped == [0u8; WRAPPED_LEN];
        let zero_digest = digest.0 == [0u8; 32];
        let slot = match state {
            SlotState::LiveKey if pooled => {
                Slot::assigned_key(loop_id, wrapped, has_digest.then_some(digest))
            }
            SlotState::LiveKey => Slot::live_key(loop_id, wrapped, has_digest.then_some(digest)),
            SlotState::PooledKey if zero_digest && !zero_key => Slot::pooled_key(wrapped),
            SlotState::PooledKey => {
                return Err(invalid("a pooled key slot holds no key or a digest"));
            }
            SlotState::LiveContact if zero_key => Slot::live_contact(loop_id, digest),
            SlotState::LiveContact => return Err(invalid("a contact slot holds a key")),
            _ if zero_key && zero_digest => Slot::erased(state, loop_id),
            _ => return Err(invalid("an erased slot still holds key or digest bytes")),
        };
        Ok(slot)
    }
}

/// The header's content (wrapped secrets only: nothing here is usable without the master key).
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) master_check: [u8; 32],
    pub(crate) contact_secret: Wrapped,
    pub(crate) public_id_secret: Wrapped,
    /// The log position assignments of pooled keys are synced through (0: none recorded).
    pub(crate) assignments_synced: u64,
}

impl From<WrappedSecrets> for Header {
    fn from(secrets: WrappedSecrets) -> Self {
        Header {
            master_check: secrets.master_check,
            contact_secret: secrets.contact_index,
            public_id_secret: secrets.public_id,
            assignments_synced: 0,
        }
    }
}

impl Header {
    /// The wrapped secrets the header keeps.
    pub(crate) fn secrets(&self) -> WrappedSecrets {
        WrappedSecrets {
            master_check: self.master_check,
            contact_index: self.contact_secret,
            public_id: self.public_id_secret,
        }
    }

    pub(crate) fn encode(&self) -> SlotBytes {
        let mut bytes = [0u8; SLOT_SIZE];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&u32::try_from(SLOT_SIZE).expect("256").to_le_bytes());
        bytes[HEADER_MASTER_CHECK].copy_from_slice(&self.master_check);
        bytes[HEADER_CONTACT_SECRET].copy_from_slice(&self.contact_secret);
        bytes[HEADER_PUBLIC_ID_SECRET].copy_from_slice(&self.public_id_secret);
        bytes[HEADER_ASSIGNMENTS_SYNCED].copy_from_slice(&self.assignments_synced.to_le_bytes());
        seal_crc(&mut bytes);
        bytes
    }

    /// Decodes the header, or says in a sentence what is wrong with it.
    pub(crate) fn decode(bytes: &SlotBytes) -> Result<Self, String> {
        if &bytes[..8] != MAGIC {
            return Err("the file does not start with a Closeloop key store header".to_owned());
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "format version {version} is not one this Closeloop reads ({OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}; run the Closeloop release that wrote it)"
            ));
        }
        let slot_size = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        if usize::try_from(slot_size).ok() != Some(SLOT_SIZE) {
            return Err(format!("slot size {slot_size} is not {SLOT_SIZE}"));
        }
        if !crc_matches(bytes) {
            return Err("the header fails its checksum".to_owned());
        }
        Ok(Header {
            master_check: bytes[HEADER_MASTER_CHECK].try_into().expect("32 bytes"),
            contact_secret: bytes[HEADER_CONTACT_SECRET].try_into().expect("72 bytes"),
            public_id_secret: bytes[HEADER_PUBLIC_ID_SECRET].try_into().expect("72 bytes"),
            assignments_synced: u64::from_le_bytes(
                bytes[HEADER_ASSIGNMENTS_SYNCED]
                    .try_into()
                    .expect("8 bytes"),
            ),
        })
    }
}

fn crc_of(bytes: &SlotBytes) -> u32 {
    crc32fast::hash(&bytes[..CRC.start])
}

fn seal_crc(bytes: &mut SlotBytes) {
    let crc = crc_of(bytes);
    bytes[CRC].copy_from_slice(&crc.to_le_bytes());
}

fn crc_matches(bytes: &SlotBytes) -> bool {
    bytes[CRC] == crc_of(bytes).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(slot: &Slot) {
        assert_eq!(&Slot::decode(&slot.encode()).unwrap(), slot);
    }

    #[test]
    fn every_kind_of_slot_round_trips() {
        let digest = ContactDigest([7; 32]);
        round_trip(&Slot::live_key("loop-1", [9; WRAPPED_LEN], None));
        round_trip(&Slot::live_key(
            &"x".repeat(128),
            [9; WRAPPED_LEN],
            Some(digest),
        ));
        round_trip(&Slot::live_contact("loop-1", digest));
        round_trip(&Slot::erased(SlotState::DestroyedKey, "loop-1"));
        round_trip(&Slot::erased(SlotState::DestroyedContact, "loop-1"));
        round_trip(&Slot::erased(SlotState::Tombstone, "loop-1"));
        round_trip(&Slot::pooled_key([4; WRAPPED_LEN]));
        round_trip(&Slot::assigned_key(
            "loop-1",
            [4; WRAPPED_LEN],
            Some(digest),
        ));
        round_trip(&Slot::assigned_key("loop-1", [4; WRAPPED_LEN], None));
    }

    #[test]
    fn a_pooled_slot_names_no_loop_and_holds_a_key() {
        let mut bytes = Slot::pooled_key([4; WRAPPED_LEN]).encode();
        bytes[LOOP_ID_LEN_AT] = 1;
        bytes[SLOT_LOOP_ID.start] = b'a';
        seal_crc(&mut bytes);
        assert!(matches!(Slot::decode(&bytes), Err(SlotProblem::Invalid(_))));
        let mut bytes = Slot::pooled_key([4; WRAPPED_LEN]).encode();
        bytes[SLOT_WRAPPED_KEY].fill(0);
        seal_crc(&mut bytes);
        assert!(matches!(Slot::decode(&bytes), Err(SlotProblem::Invalid(_))));
    }

    #[test]
    fn a_flipped_bit_or_a_zeroed_slot_fails_the_checksum() {
        let mut bytes = Slot::live_key("loop-1", [9; WRAPPED_LEN], None).encode();
        bytes[140] ^= 1;
        assert_eq!(Slot::decode(&bytes), Err(SlotProblem::Checksum));
        assert_eq!(Slot::decode(&[0; SLOT_SIZE]), Err(SlotProblem::Checksum));
    }

    #[test]
    fn well_checksummed_nonsense_is_invalid() {
        let mut bytes = Slot::erased(SlotState::Tombstone, "loop-1").encode();
        bytes[SLOT_WRAPPED_KEY.start] = 1;
        seal_crc(&mut bytes);
        assert!(matches!(Slot::decode(&bytes), Err(SlotProblem::Invalid(_))));
        let mut bytes = Slot::erased(SlotState::Tombstone, "loop-1").encode();
        bytes[STATE_AT] = 9;
        seal_crc(&mut bytes);
        assert!(matches!(Slot::decode(&bytes), Err(SlotProblem::Invalid(_))));
    }

    #[test]
    fn the_header_round_trips_and_names_what_is_wrong() {
        let header = Header {
            master_check: [1; 32],
            contact_secret: [2; WRAPPED_LEN],
            public_id_secret: [3; WRAPPED_LEN],
            assignments_synced: 77,
        };
        let bytes = header.encode();
        let back = Header::decode(&bytes).unwrap();
        assert_eq!(back.master_check, [1; 32]);
        assert_eq!(back.public_id_secret, [3; WRAPPED_LEN]);
        assert_eq!(back.assignments_synced, 77);
        let mut older = bytes;
        older[8] = 1;
        seal_crc(&mut older);
        assert!(Header::decode(&older).is_ok(), "version 1 files still open");
        let mut newer = bytes;
        newer[8] = 3;
        assert!(Header::decode(&newer).unwrap_err().contains("version 3"));
        assert!(
            Header::decode(&[0; SLOT_SIZE])
                .unwrap_err()
                .contains("header")
        );
    }
}
