//! The two secrets every key store keeps wrapped beside its data keys, and what they key.

use std::fmt;

use zeroize::Zeroizing;

use crate::contact::{MAX_CONTACT_LEN, normalise_contact};
use crate::loop_id::check_loop_id;
use crate::mac::hmac_sha256;
use crate::random::random_bytes;
use crate::{ContactDigest, KeyError};

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

impl fmt::Debug for StoreSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreSecrets(..)")
    }
}
