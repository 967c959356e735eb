//! The store's log read as raw sled reads it, nothing decoded: the floor under any read of the
//! whole log. `closeloop-bench rebuild` sets `closeloop rebuild` beside it, on the same log and
//! run, as every other benchmark sets the store beside raw sled.

use std::path::Path;

use super::keys::{self, ENTRY};
use super::{SledStoreOptions, backend, holds_store, open_log};
use crate::StoreError;

/// The most threads a scan starts, however many are asked for.
pub const MAX_SCAN_THREADS: usize = 64;

/// What a raw scan read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawScan {
    /// Entries read.
    pub entries: u64,
    /// Their stored bytes (entry headers and records), keys not counted.
    pub bytes: u64,
}

/// Reads every entry of the store in `path` with sled's own range iterator, on `threads`
/// threads (at least one, at most [`MAX_SCAN_THREADS`] and no more than there are entries),
/// each over its own run of positions, and decodes nothing. sled is
/// opened with the store's default cache, as `serve` and `rebuild` open it, so the two read
/// the same way up to the entries' bytes.
///
/// The store must not be open elsewhere: sled refuses a second open of its directory.
///
/// # Errors
/// [`StoreError::Backend`] when `path` holds no store (nothing is created there), or sled
/// cannot open or read it.
pub fn scan_raw(path: &Path, threads: usize) -> Result<RawScan, StoreError> {
    if !holds_store(path) {
        return Err(StoreError::Backend(format!(
            "{} holds no event store",
            path.display()
        )));
    }
    let (_db, tree) = open_log(path, SledStoreOptions::default().cache_capacity_bytes)?;
    let last = match tree.scan_prefix([ENTRY]).next_back() {
        Some(item) => keys::position_of(&item.map_err(backend)?.0)?,
        None => return Ok(RawScan::default()),
    };
    let threads = u64::try_from(threads.clamp(1, MAX_SCAN_THREADS))
        .unwrap_or(1)
        .min(last);
    let per_thread = last.div_ceil(threads);
    std::thread::scope(|scope| {
        let scans: Vec<_> = (0..threads)
            .map(|part| {
                let first = part * per_thread + 1;
                let end = (first + per_thread - 1).min(last);
                let tree = &tree;
                scope.spawn(move || scan_positions(tree, first, end))
            })
            .collect();
        let mut total = RawScan::default();
        for scan in scans {
            let part = scan
                .join()
                .map_err(|_| StoreError::Backend("a scanning thread panicked".to_owned()))??;
            total.entries += part.entries;
            total.bytes += part.bytes;
        }
        Ok(total)
    })
}

/// Reads the entries at positions `first..=end`.
fn scan_positions(tree: &sled::Tree, first: u64, end: u64) -> Result<RawScan, StoreError> {
    let mut scan = RawScan::default();
    for item in tree.range(keys::key(first)..=keys::key(end)) {
        let (_, value) = item.map_err(backend)?;
        scan.entries += 1;
        scan.bytes += value.len() as u64;
    }
    Ok(scan)
}
