//! The sled store's in-memory index, opened from the log and kept between runs in an index
//! file (see [`IndexFile`]): a clean close writes it, and the next open reads only the entries
//! after the position it covers. A store that stopped without closing (a crash, a kill) still
//! opens from the file its last clean close wrote, reading more of the log; a file that does
//! not match the log is ignored and the index rebuilt from every entry header.

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind};
use std::path::Path;

use super::keys;
use crate::StoreError;
use crate::backend::entry;
use crate::backend::index::{Index, IndexFile};
use crate::chain::Hash;

/// The index file's name in the store's directory.
pub const INDEX_FILE_NAME: &str = "store-index";

/// How an open found its index.
pub(super) struct Opened {
    pub(super) index: Index,
    /// The last position in the log.
    pub(super) head: u64,
    /// The first damage found in the entries read, if any (that entry is left out).
    pub(super) damage: Option<StoreError>,
    /// How many positions came from the index file (0: rebuilt from the whole log).
    pub(super) from_file: u64,
}

/// Opens the index: from the index file in `dir` when it matches the log, then the entries
/// after it; otherwise from every entry header.
pub(super) fn open(tree: &sled::Tree, dir: &Path) -> Result<Opened, StoreError> {
    let path = dir.join(INDEX_FILE_NAME);
    let (index, from_file) = match read(tree, &path) {
        Ok(Some(file)) => (file.index, file.head),
        Ok(None) => (Index::reading_head_hashes(), 0),
        Err(reason) => {
            tracing::warn!(
                path = %path.display(),
                %reason,
                "not using the store's index file; rebuilding the index from the whole log"
            );
            (Index::reading_head_hashes(), 0)
        }
    };
    let (index, head, damage) = index_entries_after(tree, index, from_file)?;
    Ok(Opened {
        index,
        head,
        damage,
        from_file,
    })
}

/// Writes the index of the log up to `head` to the index file in `dir`, replacing the old one
/// only once the new one is complete and on disk.
pub(super) fn save(tree: &sled::Tree, dir: &Path, index: &Index, head: u64) -> Result<(), String> {
    if index.merkle.size() != head {
        return Err(format!(
            "the index covers {} entries but the log holds {head}",
            index.merkle.size()
        ));
    }
    let head_hash = entry_hash(tree, head)?.unwrap_or(Hash::ZERO);
    let path = dir.join(INDEX_FILE_NAME);
    let partial = dir.join(format!("{INDEX_FILE_NAME}.partial"));
    // Written as it is encoded: the file (100 MB at a million loops) is never built in memory.
    let written = File::create(&partial)
        .and_then(|file| {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            index.write_file(&mut out, head, head_hash)?;
            out.into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, &path));
    if let Err(err) = written {
        // A full disk must not keep a half-written copy of a 100 MB file either.
        let _ = std::fs::remove_file(&partial);
        return Err(format!("cannot write {}: {err}", path.display()));
    }
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| {
            format!(
                "cannot sync {} after writing {INDEX_FILE_NAME}: {err}",
                dir.display()
            )
        })
}

/// Reads the index file, if there is one, and checks the log holds the entry it ends with.
fn read(tree: &sled::Tree, path: &Path) -> Result<Option<IndexFile>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read it: {err}")),
    };
    let file = Index::decode_file(&bytes)?;
    let found = entry_hash(tree, file.head)?;
    if file.head > 0 && found != Some(file.head_hash) {
        return Err(format!(
            "it covers the log up to position {}, and the log holds another entry there or none",
            file.head
        ));
    }
    Ok(Some(file))
}

/// The hash of the entry at `position`, `None` when there is none (or `position` is 0).
fn entry_hash(tree: &sled::Tree, position: u64) -> Result<Option<Hash>, String> {
    if position == 0 {
        return Ok(None);
    }
    let Some(value) = tree.get(keys::key(position)).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let (header, _) = entry::decode(position, &value).map_err(|e| e.to_string())?;
    Ok(Some(header.hash))
}

/// Adds every entry after `after` to `index`, in position order. Returns it with the head
/// position and, when an entry header cannot be read, what is damaged (that entry is skipped).
fn index_entries_after(
    tree: &sled::Tree,
    mut index: Index,
    after: u64,
) -> Result<(Index, u64, Option<StoreError>), StoreError> {
    let mut head = after;
    let mut damage = None;
    let backend = |err: sled::Error| StoreError::Backend(err.to_string());
    // The keys join the index when `entries` is dropped, on every path out of this function.
    let mut entries = index.bulk();
    for item in tree.range(keys::key(after + 1)..=keys::key(u64::MAX)) {
        let (key, value) = item.map_err(backend)?;
        let position = keys::position_of(&key)?;
        if position != head + 1 {
            damage.get_or_insert(StoreError::Corrupt {
                position: head + 1,
                detail: format!("position {} is missing from the log", head + 1),
            });
        }
        head = position;
        let header = entry::decode(position, &value).and_then(|(header, _)| {
            let loop_id = header.parsed_loop_id(position)?;
            Ok((header, loop_id))
        });
        match header {
            Ok((header, loop_id)) => {
                entries.insert(
                    &loop_id,
                    header.source,
                    header.event_id,
                    position,
                    header.hash,
                );
            }
            Err(err) => {
                tracing::error!(%err, "damaged log entry");
                damage.get_or_insert(err);
            }
        }
    }
    drop(entries);
    Ok((index, head, damage))
}
