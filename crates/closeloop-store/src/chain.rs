//! The per-loop hash chain of contract §3.
//!
//! Every entry's `hash` is SHA-256 over: position (8 bytes, big-endian) ‖ version (8 bytes,
//! big-endian) ‖ length of `loop_id` (4 bytes, big-endian) ‖ `loop_id` (UTF-8) ‖ `prev_hash`
//! (32 bytes) ‖ the record bytes. `prev_hash` is the `hash` of the same loop's previous entry,
//! all zeros for version 1. An auditor can recompute every hash from `GET /v1/events` alone.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 digest; shown and serialised as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// All zeros: the `prev_hash` of every loop's first entry.
    pub const ZERO: Hash = Hash([0; 32]);

    /// SHA-256 of `bytes`.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        Hash(Sha256::digest(bytes).into())
    }

    /// Lowercase hex.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// When `raw` is not exactly 32 bytes of hex.
    pub fn from_hex(raw: &str) -> Result<Self, hex::FromHexError> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(raw, &mut bytes)?;
        Ok(Hash(bytes))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Hash::from_hex(&raw).map_err(serde::de::Error::custom)
    }
}

/// The `hash` of a log entry, as contract §3 defines it.
#[must_use]
pub fn entry_hash(
    position: u64,
    version: u64,
    loop_id: &str,
    prev_hash: &Hash,
    record: &[u8],
) -> Hash {
    let id_len = u32::try_from(loop_id.len()).expect("loop ids are at most 128 bytes");
    let mut hasher = Sha256::new();
    hasher.update(position.to_be_bytes());
    hasher.update(version.to_be_bytes());
    hasher.update(id_len.to_be_bytes());
    hasher.update(loop_id.as_bytes());
    hasher.update(prev_hash.0);
    hasher.update(record);
    Hash(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_hash_covers_every_input() {
        let base = entry_hash(1, 1, "loop-1", &Hash::ZERO, b"{}");
        assert_ne!(base, entry_hash(2, 1, "loop-1", &Hash::ZERO, b"{}"));
        assert_ne!(base, entry_hash(1, 2, "loop-1", &Hash::ZERO, b"{}"));
        assert_ne!(base, entry_hash(1, 1, "loop-2", &Hash::ZERO, b"{}"));
        assert_ne!(base, entry_hash(1, 1, "loop-1", &Hash([1; 32]), b"{}"));
        assert_ne!(base, entry_hash(1, 1, "loop-1", &Hash::ZERO, b"{ }"));
    }

    #[test]
    fn entry_hash_matches_the_contract_layout() {
        let mut preimage = Vec::new();
        preimage.extend_from_slice(&7u64.to_be_bytes());
        preimage.extend_from_slice(&2u64.to_be_bytes());
        preimage.extend_from_slice(&3u32.to_be_bytes());
        preimage.extend_from_slice(b"abc");
        preimage.extend_from_slice(&[9; 32]);
        preimage.extend_from_slice(b"record");
        assert_eq!(
            entry_hash(7, 2, "abc", &Hash([9; 32]), b"record"),
            Hash::of(&preimage)
        );
    }

    #[test]
    fn hex_round_trips() {
        let hash = Hash::of(b"closeloop");
        assert_eq!(Hash::from_hex(&hash.to_hex()).unwrap(), hash);
        assert!(Hash::from_hex("abc").is_err());
    }
}
