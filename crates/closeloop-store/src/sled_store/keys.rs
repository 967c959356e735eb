//! Where entries live in sled: key `e` ‖ position (u64 BE), value the entry's bytes (see
//! [`entry`](crate::backend::entry)). Keys sort in position order.

use crate::StoreError;

/// First byte of every entry key.
pub(super) const ENTRY: u8 = b'e';

/// The key of the entry at `position`.
pub(super) fn key(position: u64) -> [u8; 9] {
    let mut key = [ENTRY; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// The position an entry key names.
pub(super) fn position_of(key: &[u8]) -> Result<u64, StoreError> {
    match key {
        [ENTRY, rest @ ..] if rest.len() == 8 => {
            Ok(u64::from_be_bytes(rest.try_into().expect("8 bytes")))
        }
        _ => Err(StoreError::Backend("a log key is malformed".to_owned())),
    }
}
