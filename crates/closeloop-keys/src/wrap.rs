//! Wrapping under the master key: data keys bound to their loop and id, and the store's two
//! secrets bound to their purpose.

use zeroize::Zeroizing;

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::random::random_bytes;
use crate::{DataKey, KeyError, KeyId, MasterKey};

/// Bytes of a wrapped 32-byte key: nonce, ciphertext and tag.
pub const WRAPPED_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

/// A key wrapped under the master key.
pub(crate) type Wrapped = [u8; WRAPPED_LEN];

/// The associated data a data key is wrapped with: a wrapped key copied into another loop's or
/// another id's slot does not unwrap.
fn data_key_aad(loop_id: &str, id: KeyId) -> Vec<u8> {
    let mut aad = b"closeloop-keys data key v1\0".to_vec();
    aad.extend_from_slice(&id.to_be_bytes());
    aad.extend_from_slice(loop_id.as_bytes());
    aad
}

fn secret_aad(purpose: &str) -> Vec<u8> {
    let mut aad = b"closeloop-keys secret v1\0".to_vec();
    aad.extend_from_slice(purpose.as_bytes());
    aad
}

fn wrap(master: &MasterKey, aad: &[u8], key: &[u8; 32]) -> Wrapped {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let sealed = aead::seal(master.bytes(), &nonce, aad, key);
    let mut wrapped = [0u8; WRAPPED_LEN];
    wrapped[..NONCE_LEN].copy_from_slice(&nonce);
    wrapped[NONCE_LEN..].copy_from_slice(&sealed);
    wrapped
}

fn unwrap(
    master: &MasterKey,
    aad: &[u8],
    wrapped: &Wrapped,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
    let plain = aead::open(master.bytes(), nonce, aad, sealed)?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&plain);
    Ok(key)
}

/// Wraps `key`, which belongs to `loop_id`, under `master`.
pub(crate) fn wrap_data_key(master: &MasterKey, loop_id: &str, key: &DataKey) -> Wrapped {
    wrap(master, &data_key_aad(loop_id, key.id), key.bytes())
}

/// Unwraps key `id` of `loop_id`.
///
/// # Errors
/// [`KeyError::Decrypt`] when it was wrapped under another master key, loop or id.
pub(crate) fn unwrap_data_key(
    master: &MasterKey,
    loop_id: &str,
    id: KeyId,
    wrapped: &Wrapped,
) -> Result<DataKey, KeyError> {
    unwrap(master, &data_key_aad(loop_id, id), wrapped).map(|key| DataKey::new(id, key))
}

/// Wraps a store secret used for `purpose`.
pub(crate) fn wrap_secret(master: &MasterKey, purpose: &str, secret: &[u8; 32]) -> Wrapped {
    wrap(master, &secret_aad(purpose), secret)
}

/// Unwraps a store secret used for `purpose`.
///
/// # Errors
/// [`KeyError::Decrypt`] when it was wrapped under another master key or purpose.
pub(crate) fn unwrap_secret(
    master: &MasterKey,
    purpose: &str,
    wrapped: &Wrapped,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    unwrap(master, &secret_aad(purpose), wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_unwraps_only_for_its_master_loop_and_id() {
        let master = MasterKey::from_bytes([1; 32]);
        let key = DataKey::generate(5);
        let wrapped = wrap_data_key(&master, "loop-a", &key);
        let back = unwrap_data_key(&master, "loop-a", 5, &wrapped).unwrap();
        assert_eq!(back.bytes(), key.bytes());
        assert!(unwrap_data_key(&master, "loop-b", 5, &wrapped).is_err());
        assert!(unwrap_data_key(&master, "loop-a", 6, &wrapped).is_err());
        assert!(unwrap_data_key(&MasterKey::from_bytes([2; 32]), "loop-a", 5, &wrapped).is_err());
    }

    #[test]
    fn a_wrapped_secret_unwraps_only_for_its_purpose() {
        let master = MasterKey::from_bytes([1; 32]);
        let wrapped = wrap_secret(&master, "contact-index", &[9; 32]);
        assert_eq!(
            *unwrap_secret(&master, "contact-index", &wrapped).unwrap(),
            [9; 32]
        );
        assert!(unwrap_secret(&master, "public-id", &wrapped).is_err());
    }
}
