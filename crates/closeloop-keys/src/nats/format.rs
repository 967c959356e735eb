//! The payloads of the key stream's messages. Every payload starts with a format version byte
//! (1); integers are little-endian. The loop a message belongs to is in its subject.
//!
//! | subject | payload |
//! |---|---|
//! | `meta` | version, epoch (u64), master key check value (32), contact-index secret wrapped (72), public-id secret wrapped (72) |
//! | `key.<loop>` | version, epoch (u64), key id (u64), flags (bit 0: a contact digest follows), the data key wrapped (72, as [`FileKeyStore`](crate::FileKeyStore) wraps it), contact digest (32, when flagged) |
//! | `contact.<loop>` | version, contact digest (32) |
//! | `erased.<loop>` | version, count (u32), the ids of the keys destroyed (u64 each) |

use crate::ContactDigest;
use crate::KeyId;
use crate::secrets::WrappedSecrets;
use crate::wrap::Wrapped;

/// The payload format version this code writes and reads.
const VERSION: u8 = 1;
const FLAG_HAS_DIGEST: u8 = 1;
/// The most key ids one erasure record lists. A loop has one live key; the bound only keeps a
/// damaged record from asking for a huge allocation.
pub(super) const MAX_ERASED_IDS: usize = 1024;

/// The store's secrets under one master key, and the epoch naming that wrapping: data key
/// versions of the same epoch are wrapped under the same master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MetaRecord {
    pub(super) epoch: u64,
    pub(super) secrets: WrappedSecrets,
}

/// One version of a loop's data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyRecord {
    /// The [`MetaRecord::epoch`] whose master key wraps it.
    pub(super) epoch: u64,
    /// The key's id: the stream sequence of the message that created it.
    pub(super) id: KeyId,
    pub(super) wrapped: Wrapped,
    /// The loop's first contact digest, sent with the key to save a message.
    pub(super) digest: Option<ContactDigest>,
}

/// What one message of the stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    Meta(MetaRecord),
    Key(KeyRecord),
    Contact(ContactDigest),
    /// The loop was erased; these keys (its live one, if any) were destroyed.
    Erased(Vec<KeyId>),
}

/// What kind of record a subject carries, so a payload is decoded as what its subject says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Meta,
    Key,
    Contact,
    Erased,
}

impl Record {
    /// The payload bytes.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Record::Meta(meta) => {
                out.extend_from_slice(&meta.epoch.to_le_bytes());
                out.extend_from_slice(&meta.secrets.master_check);
                out.extend_from_slice(&meta.secrets.contact_index);
                out.extend_from_slice(&meta.secrets.public_id);
            }
            Record::Key(key) => {
                out.extend_from_slice(&key.epoch.to_le_bytes());
                out.extend_from_slice(&key.id.to_le_bytes());
                out.push(if key.digest.is_some() {
                    FLAG_HAS_DIGEST
                } else {
                    0
                });
                out.extend_from_slice(&key.wrapped);
                if let Some(digest) = &key.digest {
                    out.extend_from_slice(&digest.0);
                }
            }
            Record::Contact(digest) => out.extend_from_slice(&digest.0),
            Record::Erased(ids) => {
                let count = u32::try_from(ids.len()).expect("an erasure lists few keys");
                out.extend_from_slice(&count.to_le_bytes());
                for id in ids {
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
        }
        out
    }

    /// Decodes a payload of `kind`, or says what is wrong with it.
    pub(super) fn decode(kind: Kind, payload: &[u8]) -> Result<Record, String> {
        let mut reader = Reader(payload);
        let version = reader.byte()?;
        if version != VERSION {
            return Err(format!(
                "payload format version {version} is not the version {VERSION} this Closeloop reads (run the Closeloop release that wrote it)"
            ));
        }
        let record = match kind {
            Kind::Meta => Record::Meta(MetaRecord {
                epoch: reader.u64()?,
                secrets: WrappedSecrets {
                    master_check: reader.array()?,
                    contact_index: reader.array()?,
                    public_id: reader.array()?,
                },
            }),
            Kind::Key => {
                let epoch = reader.u64()?;
                let id = reader.u64()?;
                let flags = reader.byte()?;
                if flags & !FLAG_HAS_DIGEST != 0 {
                    return Err(format!("unknown key flags {flags:#04x}"));
                }
                let wrapped: Wrapped = reader.array()?;
                let digest = if flags & FLAG_HAS_DIGEST == 0 {
                    None
                } else {
                    Some(ContactDigest(reader.array()?))
                };
                Record::Key(KeyRecord {
                    epoch,
                    id,
                    wrapped,
                    digest,
                })
            }
            Kind::Contact => Record::Contact(ContactDigest(reader.array()?)),
            Kind::Erased => {
                let count = usize::try_from(reader.u32()?).unwrap_or(usize::MAX);
                if count > MAX_ERASED_IDS {
                    return Err(format!(
                        "an erasure lists {count} keys, more than {MAX_ERASED_IDS}"
                    ));
                }
                let ids = (0..count).map(|_| reader.u64()).collect::<Result<_, _>>()?;
                Record::Erased(ids)
            }
        };
        if !reader.0.is_empty() {
            return Err(format!(
                "{} unexpected bytes after the record",
                reader.0.len()
            ));
        }
        Ok(record)
    }
}

/// Reads a payload front to back, failing on a short one.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.0.len() < N {
            return Err("the payload is shorter than its record".to_owned());
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("split at N"))
    }

    fn byte(&mut self) -> Result<u8, String> {
        self.array::<1>().map(|[b]| b)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrap::WRAPPED_LEN;

    fn round_trip(kind: Kind, record: &Record) {
        let bytes = record.encode();
        assert_eq!(&Record::decode(kind, &bytes).unwrap(), record);
        for cut in 0..bytes.len() {
            assert!(Record::decode(kind, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(kind, &longer).is_err());
    }

    #[test]
    fn every_record_round_trips_and_short_or_long_payloads_fail() {
        round_trip(
            Kind::Meta,
            &Record::Meta(MetaRecord {
                epoch: 7,
                secrets: WrappedSecrets {
                    master_check: [1; 32],
                    contact_index: [2; WRAPPED_LEN],
                    public_id: [3; WRAPPED_LEN],
                },
            }),
        );
        for digest in [None, Some(ContactDigest([4; 32]))] {
            round_trip(
                Kind::Key,
                &Record::Key(KeyRecord {
                    epoch: 9,
                    id: 12,
                    wrapped: [5; WRAPPED_LEN],
                    digest,
                }),
            );
        }
        round_trip(Kind::Contact, &Record::Contact(ContactDigest([6; 32])));
        round_trip(Kind::Erased, &Record::Erased(vec![]));
        round_trip(Kind::Erased, &Record::Erased(vec![3, u64::MAX]));
    }

    #[test]
    fn a_key_payload_has_the_documented_length() {
        let record = Record::Key(KeyRecord {
            epoch: 1,
            id: 2,
            wrapped: [0; WRAPPED_LEN],
            digest: None,
        });
        assert_eq!(record.encode().len(), 1 + 8 + 8 + 1 + WRAPPED_LEN);
    }

    #[test]
    fn other_versions_unknown_flags_and_huge_counts_are_refused() {
        let mut bytes = Record::Contact(ContactDigest([6; 32])).encode();
        bytes[0] = 2;
        assert!(
            Record::decode(Kind::Contact, &bytes)
                .unwrap_err()
                .contains("version 2")
        );
        let mut key = Record::Key(KeyRecord {
            epoch: 1,
            id: 2,
            wrapped: [0; WRAPPED_LEN],
            digest: None,
        })
        .encode();
        key[17] = 0x80;
        assert!(Record::decode(Kind::Key, &key).is_err());
        let mut erased = vec![VERSION];
        erased.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Record::decode(Kind::Erased, &erased).is_err());
    }
}
