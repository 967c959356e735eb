//! XChaCha20-Poly1305, the one cipher of the crate: personal data under data keys, and data keys
//! and store secrets under the master key.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::KeyError;

/// Bytes of an XChaCha20-Poly1305 nonce. Random nonces of this size never repeat in practice.
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new_from_slice(key).expect("a 32-byte key is the cipher's key size")
}

/// Encrypts and authenticates `plaintext`, binding `aad`: ciphertext followed by the tag.
pub(crate) fn seal(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    cipher(key)
        .encrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any message that fits in memory")
}

/// Checks and decrypts what [`seal`] made under the same key, nonce and `aad`.
pub(crate) fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    cipher(key)
        .decrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| KeyError::Decrypt)
}
