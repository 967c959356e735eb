//! Snapshots of the read models: compact bytes holding every record and the checkpoint.
//!
//! Layout: one format-version byte, the [postcard](https://docs.rs/postcard) encoding of
//! the records and tables, then SHA-256 over everything before it. Only primary data is
//! stored; indexes (bitmaps, order, published) are rebuilt on load, so they can never
//! disagree with the records, and an index change needs no new format.
//!
//! Since format 2 a snapshot also holds the `hash` of the log entry at its checkpoint, so
//! that loading can check it against the store's entry at that position
//! ([`Projections::load_snapshot_checked`](crate::Projections::load_snapshot_checked)): a
//! snapshot of another log (a restored or replaced store) is never trusted. Format 1 had no
//! such hash and is refused, which makes the projections rebuild from the log.
//! Format 4 keeps each change description once, in a table, and a loop's changes as ids into
//! it; older formats are refused the same way.
//!
//! The checkpoint and that hash come first, so [`SnapshotHeader`] reads them from the first
//! [`SNAPSHOT_HEADER_MAX_BYTES`] bytes without decoding (or even reading) the rest: enough to
//! choose between snapshots, not to trust one (only the full load checks the checksum).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use closeloop_domain::OrgUnit;
use closeloop_store::LoopIds;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::index::{Order, OrderKey};
use crate::intern::{Lists, Names, RatingSets, RatingValue};
use crate::limits::{MAX_CHANGES_PER_LOOP, MAX_DESCRIPTION_BYTES};
use crate::model::ReadModels;
use crate::record::{Cold, Hot};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u8 = 4;

const HASH_LEN: usize = 32;

/// The most bytes a snapshot's header takes: the format byte, the checkpoint as a postcard
/// varint (at most 10 bytes) and the 32-byte hash of the entry there.
pub const SNAPSHOT_HEADER_MAX_BYTES: usize = 1 + 10 + HASH_LEN;

/// What a snapshot says it was built from, read without decoding the rest of it: the
/// position of the last log entry applied and that entry's hash.
///
/// Nothing here is checked against the snapshot's checksum: use it to choose a snapshot, and
/// [`Projections::load_snapshot_checked`](crate::Projections::load_snapshot_checked) to trust
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The position of the last log entry the read models applied (0: none).
    pub checkpoint: u64,
    /// The hash of the log entry at `checkpoint` (all zeros at 0).
    pub checkpoint_hash: closeloop_store::Hash,
}

/// The leading fields of [`SnapshotOut`], in the same order: postcard decodes a prefix.
#[derive(Deserialize)]
struct HeaderIn {
    checkpoint: u64,
    checkpoint_hash: [u8; 32],
}

impl SnapshotHeader {
    /// The header at the start of snapshot `bytes` (the first
    /// [`SNAPSHOT_HEADER_MAX_BYTES`] are enough; more are ignored).
    ///
    /// # Errors
    /// [`SnapshotError::UnsupportedVersion`] for another format, [`SnapshotError::Corrupt`]
    /// when the bytes are too short or do not decode.
    pub fn parse(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(SnapshotError::Corrupt(
                "an empty file is not a snapshot".into(),
            ));
        };
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let (header, _) = postcard::take_from_bytes::<HeaderIn>(rest)
            .map_err(|err| SnapshotError::Corrupt(format!("cannot decode the header: {err}")))?;
        Ok(Self {
            checkpoint: header.checkpoint,
            checkpoint_hash: closeloop_store::Hash(header.checkpoint_hash),
        })
    }

    /// The header of the snapshot file at `path`, reading only its first bytes; `None` when
    /// there is no file.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] when the file cannot be read, and as [`parse`](Self::parse).
    pub fn read(path: &Path) -> Result<Option<Self>, SnapshotError> {
        use std::io::Read as _;
        let io = |source| SnapshotError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        };
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io(err)),
        };
        let mut prefix = Vec::with_capacity(SNAPSHOT_HEADER_MAX_BYTES);
        file.take(SNAPSHOT_HEADER_MAX_BYTES as u64)
            .read_to_end(&mut prefix)
            .map_err(io)?;
        Self::parse(&prefix).map(Some)
    }

    /// Whether `entry`, read from a store at [`checkpoint`](Self::checkpoint), is the entry
    /// the snapshot was built up to (as [`ReadModels::built_from`] answers for loaded models).
    #[must_use]
    pub fn built_from(&self, entry: Option<&closeloop_store::StoredEvent>) -> bool {
        match entry {
            None => self.checkpoint == 0,
            Some(entry) => entry.position == self.checkpoint && entry.hash == self.checkpoint_hash,
        }
    }
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("cannot {action} snapshot {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Written by a build with another snapshot format (format 1 included: it cannot be
    /// checked against the log).
    #[error(
        "snapshot format {0} is not one this build reads ({SNAPSHOT_VERSION}); delete the file and the projections rebuild from the log"
    )]
    UnsupportedVersion(u8),
    /// The bytes are damaged or inconsistent.
    #[error("snapshot is damaged ({0}); delete the file and the projections rebuild from the log")]
    Corrupt(String),
    /// The read models cannot be read to be saved: an update of them panicked part-way, so
    /// they may be inconsistent and must not be kept.
    #[error(
        "the read models were left inconsistent by a failed update, so no snapshot is saved; restart the service to rebuild them from the log"
    )]
    Poisoned,
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    checkpoint: u64,
    checkpoint_hash: [u8; 32],
    published_version: u64,
    id_bytes: &'a str,
    id_ends: &'a [u64],
    hot: &'a [Hot],
    cold: &'a [Cold],
    orgs: Vec<String>,
    themes: Vec<String>,
    tags: Vec<String>,
    rating_names: Vec<String>,
    lists: Vec<Vec<u32>>,
    ratings: Vec<Vec<(u32, RatingValue)>>,
    descriptions: Vec<String>,
    changes: Vec<(u32, &'a [u32])>,
    erased: Vec<u32>,
}

/// The same fields as [`SnapshotOut`], owned.
#[derive(Deserialize)]
struct SnapshotIn {
    checkpoint: u64,
    checkpoint_hash: [u8; 32],
    published_version: u64,
    id_bytes: String,
    id_ends: Vec<u64>,
    hot: Vec<Hot>,
    cold: Vec<Cold>,
    orgs: Vec<String>,
    themes: Vec<String>,
    tags: Vec<String>,
    rating_names: Vec<String>,
    lists: Vec<Vec<u32>>,
    ratings: Vec<Vec<(u32, RatingValue)>>,
    descriptions: Vec<String>,
    changes: Vec<(u32, Vec<u32>)>,
    erased: Vec<u32>,
}

impl ReadModels {
    /// The read models as snapshot bytes, checkpoint included (see the module docs).
    #[must_use]
    pub fn to_snapshot(&self) -> Vec<u8> {
        let (id_bytes, id_ends) = self.ids.to_parts();
        let mut changes: Vec<(u32, &[u32])> = self
            .changes
            .iter()
            .map(|(&slot, list)| (slot, &list[..]))
            .collect();
        changes.sort_unstable_by_key(|&(slot, _)| slot);
        let out = SnapshotOut {
            checkpoint: self.checkpoint,
            checkpoint_hash: self.checkpoint_hash.0,
            published_version: self.published_version,
            id_bytes: &id_bytes,
            id_ends: &id_ends,
            hot: &self.hot,
            cold: &self.cold,
            orgs: self.orgs.to_vec(),
            themes: self.themes.to_vec(),
            tags: self.tags.to_vec(),
            rating_names: self.rating_names.to_vec(),
            lists: self.lists.to_vec(),
            ratings: self.ratings.to_vec(),
            descriptions: self.descriptions.to_vec(),
            changes,
            erased: self.erased.iter().copied().collect(),
        };
        let mut bytes =
            postcard::to_extend(&out, vec![SNAPSHOT_VERSION]).expect("records serialise to memory");
        let hash = Sha256::digest(&bytes);
        bytes.extend_from_slice(&hash);
        bytes
    }

    /// Read models from bytes made by [`to_snapshot`](Self::to_snapshot).
    ///
    /// # Errors
    /// [`SnapshotError::UnsupportedVersion`] for another format, [`SnapshotError::Corrupt`]
    /// when the bytes are damaged (the checksum fails) or do not add up.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() < 1 + HASH_LEN {
            return Err(SnapshotError::Corrupt(format!(
                "{} bytes is too short",
                bytes.len()
            )));
        }
        if bytes[0] != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(bytes[0]));
        }
        let (body, hash) = bytes.split_at(bytes.len() - HASH_LEN);
        if Sha256::digest(body).as_slice() != hash {
            return Err(SnapshotError::Corrupt("the checksum does not match".into()));
        }
        let snapshot: SnapshotIn = postcard::from_bytes(&body[1..])
            .map_err(|err| SnapshotError::Corrupt(format!("cannot decode: {err}")))?;
        restore(snapshot).map_err(SnapshotError::Corrupt)
    }
}

fn restore(s: SnapshotIn) -> Result<ReadModels, String> {
    let n = s.hot.len();
    if s.cold.len() != n || s.id_ends.len() != n || u32::try_from(n).is_err() {
        return Err("record counts differ".into());
    }
    if s.published_version > s.checkpoint {
        return Err("the public page version is past the checkpoint".into());
    }
    let mut models = ReadModels {
        checkpoint: s.checkpoint,
        checkpoint_hash: closeloop_store::Hash(s.checkpoint_hash),
        published_version: s.published_version,
        ids: LoopIds::from_parts(&s.id_bytes, &s.id_ends)?,
        orgs: Names::from_vec(s.orgs)?,
        themes: Names::from_vec(s.themes)?,
        tags: Names::from_vec(s.tags)?,
        rating_names: Names::from_vec(s.rating_names)?,
        lists: Lists::from_vec(s.lists)?,
        ratings: RatingSets::from_vec(s.ratings)?,
        descriptions: Names::from_vec(s.descriptions)?,
        ..ReadModels::default()
    };
    if (0..models.descriptions.len()).any(|id| {
        u32::try_from(id).is_ok_and(|id| models.descriptions.name(id).len() > MAX_DESCRIPTION_BYTES)
    }) {
        return Err("a change description is longer than the read models keep".into());
    }
    if s.erased.iter().any(|&slot| slot as usize >= n) {
        return Err("an erased loop is not among the loops".into());
    }
    models.erased = s.erased.into_iter().collect();
    for slot in 0..n {
        let id = models
            .ids
            .get(u32::try_from(slot).map_err(|_| "too many loops")?);
        if closeloop_domain::LoopId::parse(id).is_err() {
            return Err(format!("loop id {id:?} is not valid"));
        }
    }
    for id in 0..models.orgs.len() {
        let name = models
            .orgs
            .name(u32::try_from(id).map_err(|_| "too many org units")?);
        if OrgUnit::parse(name).is_err() {
            return Err(format!("org unit {name:?} is not valid"));
        }
    }
    let list_max: Vec<Option<u32>> = (0..models.lists.len())
        .map(|id| {
            let id = u32::try_from(id).expect("list ids are u32");
            models.lists.items(id).iter().copied().max()
        })
        .collect();
    let fits = |list: u32, names: usize| {
        list_max
            .get(list as usize)
            .is_some_and(|max| max.is_none_or(|m| (m as usize) < names))
    };
    for set in 0..models.ratings.len() {
        let set = u32::try_from(set).map_err(|_| "too many rating sets")?;
        if models
            .ratings
            .get(set)
            .iter()
            .any(|&(name, _)| name as usize >= models.rating_names.len())
        {
            return Err("a rating set names an unknown rating".into());
        }
    }
    for (hot, cold) in s.hot.iter().zip(&s.cold) {
        let ok = (hot.org as usize) < models.orgs.len()
            && fits(hot.themes, models.themes.len())
            && fits(hot.tags, models.tags.len())
            && (hot.ratings as usize) < models.ratings.len()
            && hot.stage < 6
            && hot.channel < 10
            && hot.received().is_valid()
            && cold.is_valid();
        if !ok {
            return Err("a loop record refers to values that do not exist".into());
        }
    }
    models.hot = s.hot;
    models.cold = s.cold;
    for (slot, changes) in s.changes {
        if slot as usize >= n {
            return Err("changes for a loop that does not exist".into());
        }
        if changes.len() > MAX_CHANGES_PER_LOOP
            || changes
                .iter()
                .any(|&id| id as usize >= models.descriptions.len())
        {
            return Err(
                "a loop has more changes than the read models keep, or unknown ones".into(),
            );
        }
        models.changes.insert(slot, changes.into());
    }
    let slots: Vec<u32> = (0..u32::try_from(n).map_err(|_| "too many loops")?).collect();
    for &slot in &slots {
        models.index_filters(slot);
    }
    let mut sorted = slots;
    sorted.sort_unstable_by(|&a, &b| models.order_key(a).cmp(&models.order_key(b)));
    let order = Order::from_sorted(&sorted, |slot| {
        let (at, id) = models.order_key(slot);
        OrderKey::new(at, id)
    });
    models.order = order;
    Ok(models)
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: write a
/// temporary file beside it, fsync it, rename it over `path`, fsync the directory.
///
/// # Errors
/// [`SnapshotError::Io`] naming the step that failed.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let io = |action: &'static str, at: &Path| {
        let path = at.to_path_buf();
        move |source| SnapshotError::Io {
            action,
            path,
            source,
        }
    };
    let tmp = tmp_path(path);
    let mut file = fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Without the directory fsync the rename itself may not survive a power cut.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync the directory of", path))?;
    Ok(())
}

/// The temporary file a snapshot is written to before it is renamed into place.
#[must_use]
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads a snapshot file; a missing file gives empty read models at position 0.
///
/// # Errors
/// [`SnapshotError`] when the file exists but cannot be read or is not a valid snapshot.
pub(crate) fn read_file(path: &Path) -> Result<ReadModels, SnapshotError> {
    match fs::read(path) {
        Ok(bytes) => ReadModels::from_snapshot(&bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(ReadModels::default()),
        Err(source) => Err(SnapshotError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}
