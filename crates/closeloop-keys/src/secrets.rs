//! The two secrets every key store keeps wrapped beside its data keys, and what they key.

use std::fmt;

use zeroize::Zeroizing;

use crate::contact::{MAX_CONTACT_LEN, normalise_contact};
use crate::loop_id::check_loop_id;
use crate::mac::{constant_time_eq, hmac_sha256};
use crate::random::random_bytes;
use crate::wrap::{Wrapped, unwrap_secret, wrap_secret};
use crate::{ContactDigest, KeyError, MasterKey};

/// The purpose labels the secrets are wrapped under.
pub(crate) const CONTACT_INDEX_PURPOSE: &str = "contact-index";
pub(crate) const PUBLIC_ID_PURPOSE: &str = "public-id";

/// The contact-index secret and the public-id secret, unwrapped. Zeroed on drop.
#[derive(Clone)]
pub(crate) struct StoreSecrets {
    pub(crate) contact_index: Zeroizing<[u8; 32]>,
    pub(crate) public_id: Zeroizing<[u8; 32]>,
}

impl StoreSecrets {
    /// Fresh random secrets for a new store.
    pub(crate) fn generate() -> Self {
        StoreSecrets {
            contact_index: Zeroizing::new(random_bytes()),
            public_id: Zeroizing::new(random_bytes()),
        }
    }

    /// HMAC-SHA256 of the normalised contact under the contact-index secret.
    pub(crate) fn contact_digest(&self, contact: &str) -> Result<ContactDigest, KeyError> {
        if contact.len() > MAX_CONTACT_LEN {
            return Err(KeyError::ContactTooLong {
                len: contact.len(),
                max: MAX_CONTACT_LEN,
            });
        }
        let normalised = Zeroizing::new(normalise_contact(contact));
        Ok(ContactDigest(hmac_sha256(
            self.contact_index.as_slice(),
            &[normalised.as_bytes()],
        )))
    }

    /// 32 lowercase hex characters of an HMAC of the loop id under the public-id secret.
    pub(crate) fn public_id_of(&self, loop_id: &str) -> Result<String, KeyError> {
        check_loop_id(loop_id)?;
        let mac = hmac_sha256(self.public_id.as_slice(), &[loop_id.as_bytes()]);
        Ok(hex::encode(&mac[..16]))
    }
}

/// The secrets as every store keeps them: each wrapped under the master key, beside the master
/// key's check value. Nothing here is usable without the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrappedSecrets {
    /// [`MasterKey::check_value`] of the master key the secrets are wrapped under.
    pub(crate) master_check: [u8; 32],
    /// The contact-index secret, wrapped.
    pub(crate) contact_index: Wrapped,
    /// The public-id secret, wrapped.
    pub(crate) public_id: Wrapped,
}

/// Why [`WrappedSecrets::unwrap`] failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UnwrapSecretsError {
    /// The secrets are wrapped under another master key.
    WrongMasterKey,
    /// The master key matches the check value, yet a secret does not unwrap: damage.
    Damaged,
}

impl StoreSecrets {
    /// The secrets wrapped under `master`, to keep beside the data keys.
    pub(crate) fn wrap(&self, master: &MasterKey) -> WrappedSecrets {
        WrappedSecrets {
            master_check: master.check_value(),
            contact_index: wrap_secret(master, CONTACT_INDEX_PURPOSE, &self.contact_index),
            public_id: wrap_secret(master, PUBLIC_ID_PURPOSE, &self.public_id),
        }
    }
}

impl WrappedSecrets {
    /// Whether the secrets are wrapped under `master` (compared in constant time).
    pub(crate) fn wrapped_under(&self, master: &MasterKey) -> bool {
        constant_time_eq(&self.master_check, &master.check_value())
    }

    /// Checks the master key against the check value, then unwraps both secrets.
    pub(crate) fn unwrap(&self, master: &MasterKey) -> Result<StoreSecrets, UnwrapSecretsError> {
        if !self.wrapped_under(master) {
            return Err(UnwrapSecretsError::WrongMasterKey);
        }
        let unwrap = |purpose, wrapped| {
            unwrap_secret(master, purpose, wrapped).map_err(|_| UnwrapSecretsError::Damaged)
        };
        Ok(StoreSecrets {
            contact_index: unwrap(CONTACT_INDEX_PURPOSE, &self.contact_index)?,
            public_id: unwrap(PUBLIC_ID_PURPOSE, &self.public_id)?,
        })
    }
}

impl fmt::Debug for StoreSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreSecrets(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_secrets_unwrap_under_their_master_only() {
        let secrets = StoreSecrets::generate();
        let master = MasterKey::from_bytes([1; 32]);
        let wrapped = secrets.wrap(&master);
        let back = wrapped.unwrap(&master).unwrap();
        assert_eq!(*back.contact_index, *secrets.contact_index);
        assert_eq!(*back.public_id, *secrets.public_id);
        assert_eq!(
            wrapped.unwrap(&MasterKey::from_bytes([2; 32])).unwrap_err(),
            UnwrapSecretsError::WrongMasterKey
        );
        let mut damaged = wrapped.clone();
        damaged.public_id[30] ^= 1;
        assert_eq!(
            damaged.unwrap(&master).unwrap_err(),
            UnwrapSecretsError::Damaged
        );
    }
}
