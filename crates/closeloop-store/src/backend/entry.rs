//! The bytes of one log entry, the same in every backend.
//!
//! An entry is: version (u64 BE) ‖ prev_hash (32) ‖ hash (32) ‖
//! loop id length (u8) ‖ loop id ‖ source length (u16 BE) ‖ source ‖ event id length (u16 BE) ‖
//! event id ‖ [request digest (32)] ‖ record. The header repeats the idempotency key (source,
//! event id) that the record also holds, so the in-memory indexes can be rebuilt without
//! parsing any JSON.
//!
//! The request digest (see [`RequestDigest`]) is present when the top bit of the version
//! field is set; entries written before digests existed have it clear and read as unbound.
//! It is not part of the record, so it is not covered by the entry's hash: it only decides
//! whether a repeated idempotency key is the same request.

use closeloop_domain::LoopId;

use crate::chain::Hash;
use crate::{RequestDigest, StoreError, StoredEvent};

/// The bit of the version field that says a request digest follows the event id. Loop
/// versions never come near it.
const HAS_REQUEST: u64 = 1 << 63;

/// Longest accepted `source` or `event_id`, in bytes.
pub const MAX_KEY_PART: usize = 1024;

/// What an entry says besides its record.
#[derive(Debug)]
pub struct Header<'a> {
    /// The event's version within its loop.
    pub version: u64,
    /// The hash of the loop's previous entry (zeros for version 1).
    pub prev_hash: Hash,
    /// This entry's hash (see [`entry_hash`](crate::chain::entry_hash)).
    pub hash: Hash,
    /// The loop.
    pub loop_id: &'a str,
    /// The idempotency key's `source`.
    pub source: &'a str,
    /// The idempotency key's `event_id`.
    pub event_id: &'a str,
    /// The request the key is bound to, if any.
    pub request: Option<RequestDigest>,
}

/// Encodes an entry.
pub fn encode(header: &Header<'_>, record: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(
        77 + header.loop_id.len() + header.source.len() + header.event_id.len() + record.len(),
    );
    let flag = if header.request.is_some() {
        HAS_REQUEST
    } else {
        0
    };
    value.extend_from_slice(&(header.version | flag).to_be_bytes());
    value.extend_from_slice(&header.prev_hash.0);
    value.extend_from_slice(&header.hash.0);
    value.push(u8::try_from(header.loop_id.len()).expect("loop ids are at most 128 bytes"));
    value.extend_from_slice(header.loop_id.as_bytes());
    for part in [header.source, header.event_id] {
        value.extend_from_slice(
            &u16::try_from(part.len())
                .expect("checked by MAX_KEY_PART")
                .to_be_bytes(),
        );
        value.extend_from_slice(part.as_bytes());
    }
    if let Some(request) = &header.request {
        value.extend_from_slice(&request.0);
    }
    value.extend_from_slice(record);
    value
}

/// Splits an entry into its header and record; `position` only names it in errors.
///
/// # Errors
/// [`StoreError::Corrupt`] when the bytes are truncated or not valid.
pub fn decode(position: u64, value: &[u8]) -> Result<(Header<'_>, &[u8]), StoreError> {
    let mut reader = Reader { value, at: 0 };
    let corrupt = |detail: &str| StoreError::Corrupt {
        position,
        detail: detail.to_owned(),
    };
    let truncated = || corrupt("entry is truncated");
    let flagged = u64::from_be_bytes(
        reader
            .take(8)
            .ok_or_else(truncated)?
            .try_into()
            .expect("8 bytes"),
    );
    let version = flagged & !HAS_REQUEST;
    let prev_hash = Hash(
        reader
            .take(32)
            .ok_or_else(truncated)?
            .try_into()
            .expect("32 bytes"),
    );
    let hash = Hash(
        reader
            .take(32)
            .ok_or_else(truncated)?
            .try_into()
            .expect("32 bytes"),
    );
    let id_len = usize::from(reader.take(1).ok_or_else(truncated)?[0]);
    let loop_id = reader
        .text(id_len)
        .ok_or_else(|| corrupt("entry's loop id is not valid"))?;
    let mut parts = [""; 2];
    for part in &mut parts {
        let len = reader.take(2).ok_or_else(truncated)?;
        let len = usize::from(u16::from_be_bytes(len.try_into().expect("2 bytes")));
        *part = reader
            .text(len)
            .ok_or_else(|| corrupt("entry's idempotency key is not valid"))?;
    }
    let request = if flagged & HAS_REQUEST == 0 {
        None
    } else {
        Some(RequestDigest(
            reader
                .take(32)
                .ok_or_else(truncated)?
                .try_into()
                .expect("32 bytes"),
        ))
    };
    let header = Header {
        version,
        prev_hash,
        hash,
        loop_id,
        source: parts[0],
        event_id: parts[1],
        request,
    };
    Ok((header, &value[reader.at..]))
}

/// An entry's header without its record: all that idempotency checks and chaining read of an
/// earlier entry, at most about 2.3 KiB whatever the record's size.
///
/// # Errors
/// As [`decode`].
pub fn without_record(position: u64, value: &[u8]) -> Result<&[u8], StoreError> {
    let (_, record) = decode(position, value)?;
    Ok(&value[..value.len() - record.len()])
}

impl Header<'_> {
    /// The entry's loop id, checked; `position` names the entry in the error.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when it is not a valid loop id.
    pub fn parsed_loop_id(&self, position: u64) -> Result<LoopId, StoreError> {
        LoopId::parse(self.loop_id).map_err(|_| StoreError::Corrupt {
            position,
            detail: "entry's loop id is not valid".to_owned(),
        })
    }
}

/// Where the entry at `position` was committed, if it carries the idempotency key (`source`,
/// `event_id`); `None` when it carries another (the index holds digests of keys, so a hit is
/// only a candidate until the entry confirms it).
///
/// # Errors
/// As [`decode`], and when the loop id is not valid.
pub fn committed_under_key(
    position: u64,
    value: &[u8],
    source: &str,
    event_id: &str,
) -> Result<Option<crate::Committed>, StoreError> {
    let (header, _) = decode(position, value)?;
    if header.source != source || header.event_id != event_id {
        return Ok(None);
    }
    Ok(Some(crate::Committed {
        loop_id: header.parsed_loop_id(position)?,
        version: header.version,
        position,
        request: header.request,
    }))
}

/// Decodes an entry into the [`StoredEvent`] readers see.
///
/// # Errors
/// As [`decode`], and when the loop id is not valid.
pub fn to_stored(position: u64, value: &[u8]) -> Result<StoredEvent, StoreError> {
    let (header, record) = decode(position, value)?;
    let loop_id = header.parsed_loop_id(position)?;
    Ok(StoredEvent {
        position,
        loop_id,
        version: header.version,
        prev_hash: header.prev_hash,
        hash: header.hash,
        record: record.to_vec(),
    })
}

struct Reader<'a> {
    value: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let bytes = self.value.get(self.at..self.at + len)?;
        self.at += len;
        Some(bytes)
    }

    fn text(&mut self, len: usize) -> Option<&'a str> {
        std::str::from_utf8(self.take(len)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header of version `version` for loop-1's event e-9, with hashes of ones and twos.
    fn header(version: u64, request: Option<RequestDigest>) -> Header<'static> {
        Header {
            version,
            prev_hash: Hash([1; 32]),
            hash: Hash([2; 32]),
            loop_id: "loop-1",
            source: "urn:test",
            event_id: "e-9",
            request,
        }
    }

    #[test]
    fn entries_round_trip_and_truncation_is_reported() {
        let header = header(3, None);
        let value = encode(&header, b"{\"record\":1}");
        let (decoded, record) = decode(7, &value).unwrap();
        assert_eq!(
            (
                decoded.version,
                decoded.prev_hash,
                decoded.hash,
                decoded.loop_id,
                decoded.source,
                decoded.event_id
            ),
            (3, Hash([1; 32]), Hash([2; 32]), "loop-1", "urn:test", "e-9")
        );
        assert_eq!(record, b"{\"record\":1}");
        let err = decode(7, &value[..80]).expect_err("truncated");
        assert!(
            matches!(err, StoreError::Corrupt { position: 7, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_request_digest_round_trips_and_entries_without_one_read_as_unbound() {
        let digest = RequestDigest([9; 32]);
        let header = header(2, Some(digest));
        let value = encode(&header, b"{}");
        let (decoded, record) = decode(1, &value).unwrap();
        assert_eq!(
            (decoded.version, decoded.request, record),
            (2, Some(digest), &b"{}"[..])
        );
        let plain = encode(
            &Header {
                request: None,
                ..header
            },
            b"{}",
        );
        assert_eq!(plain.len() + 32, value.len());
        assert_eq!(decode(1, &plain).unwrap().0.request, None);
    }

    #[test]
    fn an_entry_without_its_record_keeps_the_whole_header() {
        let header = header(4, Some(RequestDigest([9; 32])));
        let value = encode(&header, &[b'x'; 5000]);
        let kept = without_record(3, &value).unwrap();
        assert_eq!(kept, &value[..value.len() - 5000]);
        let (decoded, record) = decode(3, kept).unwrap();
        assert_eq!(
            (
                decoded.hash,
                decoded.source,
                decoded.event_id,
                decoded.request
            ),
            (header.hash, "urn:test", "e-9", header.request)
        );
        assert!(record.is_empty());
        assert!(matches!(
            without_record(3, &value[..40]),
            Err(StoreError::Corrupt { position: 3, .. })
        ));
    }
}
