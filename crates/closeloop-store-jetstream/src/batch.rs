//! The bytes of the log stream's messages.
//!
//! - The first message of the stream is the **genesis**: `CLG` ‖ format (u8). It says the
//!   stream is a Closeloop log and which format its batches are in.
//! - Every later message is a **batch**: `CLB` ‖ format (u8) ‖ first position (u64 BE) ‖
//!   count (u32 BE) ‖ count × (length (u32 BE) ‖ entry). An entry is exactly what the sled
//!   store keeps under one key ([`entry`](closeloop_store::backend::entry)), and the entries of
//!   a batch have consecutive positions from the first.

use closeloop_store::StoreError;

/// The batch format this build writes and reads.
pub const FORMAT: u8 = 1;

const GENESIS_MAGIC: &[u8; 3] = b"CLG";
const BATCH_MAGIC: &[u8; 3] = b"CLB";
/// Bytes of a batch before its first entry.
pub const BATCH_HEADER: usize = 3 + 1 + 8 + 4;
/// Bytes before each entry.
pub const ENTRY_PREFIX: usize = 4;

/// The genesis message.
#[must_use]
pub fn genesis() -> Vec<u8> {
    let mut bytes = GENESIS_MAGIC.to_vec();
    bytes.push(FORMAT);
    bytes
}

/// Checks the stream's first message is a genesis this build can read.
///
/// # Errors
/// [`StoreError::UnsupportedFormat`] for a newer format, [`StoreError::Backend`] when the
/// message is not a genesis (the stream is not a Closeloop log).
pub fn check_genesis(bytes: &[u8]) -> Result<(), StoreError> {
    match bytes {
        [a, b, c, format] if [*a, *b, *c] == *GENESIS_MAGIC => {
            if *format > FORMAT {
                return Err(StoreError::UnsupportedFormat {
                    found: u32::from(*format),
                    supported: u32::from(FORMAT),
                });
            }
            Ok(())
        }
        _ => Err(StoreError::Backend(
            "the log stream's first message is not a Closeloop genesis: the stream holds \
             something else; give Closeloop a stream of its own (CLOSELOOP_JETSTREAM_STREAM)"
                .to_owned(),
        )),
    }
}

/// Writes a batch of entries whose first has position `first`.
#[must_use]
pub fn encode<'a>(first: u64, entries: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let count = u32::try_from(entries.len()).expect("a batch holds far fewer than 2^32 entries");
    let mut bytes = Vec::with_capacity(BATCH_HEADER);
    bytes.extend_from_slice(BATCH_MAGIC);
    bytes.push(FORMAT);
    bytes.extend_from_slice(&first.to_be_bytes());
    bytes.extend_from_slice(&count.to_be_bytes());
    for entry in entries {
        let len = u32::try_from(entry.len()).expect("entries are far below 4 GiB");
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(entry);
    }
    bytes
}

/// A batch read from the stream: the position of its first entry and the entries, in order.
#[derive(Debug)]
pub struct Batch<'a> {
    /// The position of the first entry.
    pub first: u64,
    /// The entries' bytes.
    pub entries: Vec<&'a [u8]>,
}

/// Reads a batch; `sequence` only names the message in errors.
///
/// # Errors
/// [`StoreError::Corrupt`] when the bytes are not a whole batch of this format.
pub fn decode(sequence: u64, bytes: &[u8]) -> Result<Batch<'_>, StoreError> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        position: 0,
        detail: format!("log stream message {sequence}: {detail}"),
    };
    if bytes.len() < BATCH_HEADER || &bytes[..3] != BATCH_MAGIC {
        return Err(corrupt("not a Closeloop batch"));
    }
    if bytes[3] != FORMAT {
        return Err(corrupt(&format!(
            "batch format {} is not {FORMAT}",
            bytes[3]
        )));
    }
    let first = u64::from_be_bytes(bytes[4..12].try_into().expect("8 bytes"));
    let count = u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let mut entries = Vec::with_capacity(count.min(65_536) as usize);
    let mut at = BATCH_HEADER;
    for _ in 0..count {
        let len = bytes
            .get(at..at + ENTRY_PREFIX)
            .map(|len| u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt("batch is truncated"))?;
        at += ENTRY_PREFIX;
        let entry = bytes
            .get(at..at + len)
            .ok_or_else(|| corrupt("batch is truncated"))?;
        entries.push(entry);
        at += len;
    }
    if at != bytes.len() || first == 0 || count == 0 {
        return Err(corrupt(
            "batch has trailing bytes, no entries or position 0",
        ));
    }
    Ok(Batch { first, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_damage_is_reported() {
        let entries: Vec<&[u8]> = vec![b"one", b"", b"three"];
        let bytes = encode(41, entries.iter().copied());
        let batch = decode(7, &bytes).expect("decodes");
        assert_eq!(batch.first, 41);
        assert_eq!(batch.entries, entries);
        for cut in [0, 5, BATCH_HEADER, bytes.len() - 1] {
            let err = decode(7, &bytes[..cut]).expect_err("truncated");
            assert!(err.to_string().contains("message 7"), "{err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(7, &longer).is_err());
        let mut newer = bytes;
        newer[3] = FORMAT + 1;
        assert!(decode(7, &newer).is_err());
    }

    #[test]
    fn only_a_genesis_of_a_known_format_is_accepted() {
        check_genesis(&genesis()).expect("ours");
        let mut newer = genesis();
        newer[3] = FORMAT + 1;
        assert!(matches!(
            check_genesis(&newer),
            Err(StoreError::UnsupportedFormat { .. })
        ));
        assert!(check_genesis(b"{\"feedback\":1}").is_err());
    }
}
