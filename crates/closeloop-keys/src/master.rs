//! The master key every data key and store secret is wrapped under.

use std::fmt;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::KeyError;
use crate::mac::hmac_sha256;
use crate::random::random_bytes;

/// The text whose SHA-256 is the demo master key. Public on purpose: the demo key protects
/// nothing and must never guard real personal data.
pub const DEMO_MASTER_KEY_SEED: &str = "closeloop demo master key: not secret";

/// The longest master key file read, in bytes: 64 hex characters and generous whitespace.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// The 32-byte master key. `Debug` never prints it, only its [fingerprint](Self::fingerprint);
/// its bytes are zeroed when it is dropped.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// Reads a master key written as exactly 64 hex characters (surrounding whitespace, such as a
    /// trailing newline, is ignored).
    ///
    /// # Errors
    /// [`KeyError::InvalidMasterKey`] when it is not 64 hex characters. The message never
    /// repeats the input.
    pub fn from_hex(hex: &str) -> Result<Self, KeyError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(KeyError::InvalidMasterKey(format!(
                "it has {} characters, not 64",
                hex.chars().count()
            )));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex, bytes.as_mut_slice()).map_err(|_| {
            KeyError::InvalidMasterKey("it holds characters other than 0-9 and a-f".to_owned())
        })?;
        Ok(MasterKey(bytes))
    }

    /// Reads a master key from a file holding its 64 hex characters.
    ///
    /// # Errors
    /// [`KeyError::Io`] when the file cannot be read, [`KeyError::InvalidMasterKey`] when it is
    /// larger than 4 KiB or does not hold 64 hex characters.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let file = std::fs::File::open(path).map_err(|e| KeyError::io(path, e))?;
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| KeyError::io(path, e))?;
        if text.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(KeyError::InvalidMasterKey(format!(
                "the file {} is larger than {MAX_KEY_FILE_LEN} bytes",
                path.display()
            )));
        }
        Self::from_hex(&text)
    }

    /// The fixed demo key: SHA-256 of [`DEMO_MASTER_KEY_SEED`]. It is documented and therefore
    /// NOT secret; only `serve --demo` and `demo` use it, and they say so in the log.
    #[must_use]
    pub fn demo() -> Self {
        MasterKey(Zeroizing::new(
            Sha256::digest(DEMO_MASTER_KEY_SEED.as_bytes()).into(),
        ))
    }

    /// A fresh random master key, for operators who need a new one (e.g. before a rotation).
    #[must_use]
    pub fn generate() -> Self {
        MasterKey(Zeroizing::new(random_bytes()))
    }

    /// A master key made of these bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(Zeroizing::new(bytes))
    }

    /// The key as 64 lowercase hex characters, to hand a generated key to an operator once.
    /// Never log it.
    #[must_use]
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_slice()))
    }

    /// Eight hex characters of a keyed hash of the key: tells keys apart in logs without
    /// revealing anything about them.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let mac = hmac_sha256(self.bytes(), &[b"closeloop-keys fingerprint v1"]);
        hex::encode(&mac[..4])
    }

    /// The value a key store keeps to recognise its master key: a keyed hash under a label of its
    /// own, so it is not the fingerprint and reveals nothing about the key.
    pub(crate) fn check_value(&self) -> [u8; 32] {
        hmac_sha256(self.bytes(), &[b"closeloop-keys master key check v1"])
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MasterKey")
            .field(&self.fingerprint())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn reads_64_hex_characters_with_surrounding_whitespace() {
        let key = MasterKey::from_hex(&format!("  {HEX}\n")).unwrap();
        assert_eq!(key.bytes()[31], 0x1f);
        assert_eq!(key.to_hex().as_str(), HEX);
    }

    #[test]
    fn refuses_other_lengths_and_non_hex_without_echoing_the_input() {
        for bad in ["", &HEX[..63], &format!("{HEX}0"), &HEX.replace('0', "g")] {
            let message = MasterKey::from_hex(bad).unwrap_err().to_string();
            assert!(message.contains("64 hex"), "{message}");
            assert!(!message.contains("0102030405"), "{message}");
        }
    }

    #[test]
    fn reads_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, format!("{HEX}\n")).unwrap();
        let key = MasterKey::from_file(&path).unwrap();
        assert_eq!(key.to_hex().as_str(), HEX);
        std::fs::write(&path, "x".repeat(5000)).unwrap();
        assert!(matches!(
            MasterKey::from_file(&path),
            Err(KeyError::InvalidMasterKey(_))
        ));
        assert!(matches!(
            MasterKey::from_file(&dir.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn the_demo_key_is_the_documented_hash() {
        assert_eq!(
            MasterKey::demo().to_hex().as_str(),
            hex::encode(Sha256::digest(b"closeloop demo master key: not secret"))
        );
    }

    #[test]
    fn debug_and_fingerprint_never_show_the_key() {
        let key = MasterKey::from_hex(HEX).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("0102"), "{shown}");
        assert_eq!(key.fingerprint().len(), 8);
        assert!(shown.contains(&key.fingerprint()));
        assert_ne!(key.fingerprint(), MasterKey::demo().fingerprint());
    }
}
