//! A loop's data key and what it seals.

use std::fmt;

use zeroize::Zeroizing;

use crate::aead::{self, NONCE_LEN};
use crate::random::random_bytes;
use crate::{KeyError, KeyId};

/// One loop's data key: seal and open the loop's personal data with it (XChaCha20-Poly1305, a
/// fresh random 24-byte nonce per seal). Its bytes are zeroed on drop and `Debug` shows only the
/// id.
#[derive(Clone)]
pub struct DataKey {
    /// The key's id in its store; records name it so a reader can ask for the key back.
    pub id: KeyId,
    key: Zeroizing<[u8; 32]>,
}

/// Personal data sealed under a [`DataKey`]: store both parts; the ciphertext ends with the
/// 16-byte tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The random nonce this seal used.
    pub nonce: [u8; NONCE_LEN],
    /// The ciphertext followed by the authentication tag.
    pub ciphertext: Vec<u8>,
}

impl DataKey {
    pub(crate) fn new(id: KeyId, key: Zeroizing<[u8; 32]>) -> Self {
        DataKey { id, key }
    }

    /// A fresh random data key with this id.
    pub(crate) fn generate(id: KeyId) -> Self {
        DataKey::new(id, Zeroizing::new(random_bytes()))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Encrypts `plaintext` under this key with a fresh random nonce. `aad` is authenticated but
    /// not encrypted: bind what the ciphertext belongs to (e.g. loop id and field), so it cannot
    /// be moved to another record unnoticed.
    ///
    /// # Panics
    /// When the operating system cannot supply random bytes for the nonce.
    #[must_use]
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Sealed {
        let nonce = random_bytes();
        Sealed {
            ciphertext: aead::seal(&self.key, &nonce, aad, plaintext),
            nonce,
        }
    }

    /// Decrypts what [`seal`](Self::seal) made under this key with the same `aad`.
    ///
    /// # Errors
    /// [`KeyError::Decrypt`] when the ciphertext, nonce or `aad` differ from the seal's, or it
    /// was sealed under another key.
    pub fn open(
        &self,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        aead::open(&self.key, nonce, aad, ciphertext)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("nonce", &hex::encode(self.nonce))
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_what_it_sealed_with_the_same_aad_only() {
        let key = DataKey::generate(7);
        let sealed = key.seal(b"loop-1/story", b"The ward was cold");
        let opened = key
            .open(b"loop-1/story", &sealed.nonce, &sealed.ciphertext)
            .unwrap();
        assert_eq!(opened.as_slice(), b"The ward was cold");
        assert!(matches!(
            key.open(b"loop-2/story", &sealed.nonce, &sealed.ciphertext),
            Err(KeyError::Decrypt)
        ));
        let mut altered = sealed.ciphertext.clone();
        altered[0] ^= 1;
        assert!(matches!(
            key.open(b"loop-1/story", &sealed.nonce, &altered),
            Err(KeyError::Decrypt)
        ));
        assert!(matches!(
            DataKey::generate(7).open(b"loop-1/story", &sealed.nonce, &sealed.ciphertext),
            Err(KeyError::Decrypt)
        ));
    }

    #[test]
    fn every_seal_takes_a_fresh_nonce() {
        let key = DataKey::generate(1);
        let first = key.seal(b"", b"same text");
        let second = key.seal(b"", b"same text");
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ciphertext, second.ciphertext);
        assert_eq!(first.ciphertext.len(), b"same text".len() + aead::TAG_LEN);
    }

    #[test]
    fn debug_shows_the_id_only() {
        let key = DataKey::new(42, Zeroizing::new([0xab; 32]));
        let shown = format!("{key:?}");
        assert!(shown.contains("42") && !shown.contains("ab"), "{shown}");
    }
}
