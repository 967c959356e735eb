//! Snapshots of the read models: compact bytes holding every record and the checkpoint.
//!
//! Layout: one format-version byte, the [postcard](https://docs.rs/postcard) encoding of
//! the records and tables, then SHA-256 over everything before it. Indexes (bitmaps, order,
//! published) are not stored: they are rebuilt on load, so they can never disagree with the
//! records, and an index change needs no new format.
//!
//! Since format 2 a snapshot also holds the `hash` of the log entry at its checkpoint, so
//! that loading can check it against the store's entry at that position
//! ([`Projections::load_snapshot_checked`](crate::Projections::load_snapshot_checked)): a
//! snapshot of another log (a restored or replaced store) is never trusted. Format 1 had no
//! such hash and is refused, which makes the projections rebuild from the log.
//! Format 4 keeps each change description once, in a table, and a loop's changes as ids into
//! it; older formats are refused the same way.
//!
//! Format 5 loads in a fraction of the time: the loop records, their ids' offsets and their
//! SLA figures are columns of fixed-width values (`plain`) that decode at the speed of
//! copying memory, and the SLA-dependent figures (`figures`) are kept with the SLA they were
//! computed for, checked against the records on load, so that a start under the same SLA
//! computes nothing. Loading uses both cores: the checksum runs beside the decoding, the
//! loop ids' table beside the records and the other indexes. Format 4 is refused, which
//! rebuilds the models from the log once.
//!
//! The checkpoint and that hash come first, so [`SnapshotHeader`] reads them from the first
//! [`SNAPSHOT_HEADER_MAX_BYTES`] bytes without decoding (or even reading) the rest: enough to
//! choose between snapshots, not to trust one (only the full load checks the checksum).

mod figures;
mod plain;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use closeloop_domain::OrgUnit;
use closeloop_store::LoopIds;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::index::{Order, OrderKey};
use crate::intern::{Lists, Names, RatingSets, RatingValue};
use crate::limits::{MAX_CHANGES_PER_LOOP, MAX_DESCRIPTION_BYTES};
use crate::model::ReadModels;
use crate::record::{Cold, ColdTable, Hot, Ts};

use figures::{FiguresIn, FiguresOut};
use plain::{ColdColumn, Column, column};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u8 = 5;

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
    id_ends: Column<'a, u64>,
    hot: Column<'a, Hot>,
    cold: ColdColumn<'a>,
    orgs: Vec<String>,
    themes: Vec<String>,
    tags: Vec<String>,
    rating_names: Vec<String>,
    lists: Vec<Vec<u32>>,
    ratings: Vec<Vec<(u32, RatingValue)>>,
    descriptions: Vec<String>,
    changes: Vec<(u32, &'a [u32])>,
    erased: Vec<u32>,
    figures: Option<FiguresOut<'a>>,
}

/// The same fields as [`SnapshotOut`], the columns as their bytes.
#[derive(Deserialize)]
struct SnapshotIn<'a> {
    checkpoint: u64,
    checkpoint_hash: [u8; 32],
    published_version: u64,
    id_bytes: &'a str,
    id_ends: &'a [u8],
    hot: &'a [u8],
    cold: &'a [u8],
    orgs: Vec<String>,
    themes: Vec<String>,
    tags: Vec<String>,
    rating_names: Vec<String>,
    lists: Vec<Vec<u32>>,
    ratings: Vec<Vec<(u32, RatingValue)>>,
    descriptions: Vec<String>,
    changes: Vec<(u32, Vec<u32>)>,
    erased: Vec<u32>,
    #[serde(borrow)]
    figures: Option<FiguresIn<'a>>,
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
        let timing = self.timing.read().unwrap_or_else(PoisonError::into_inner);
        let out = SnapshotOut {
            checkpoint: self.checkpoint,
            checkpoint_hash: self.checkpoint_hash.0,
            published_version: self.published_version,
            id_bytes: &id_bytes,
            id_ends: Column(&id_ends),
            hot: Column(&self.hot),
            cold: ColdColumn(&self.cold),
            orgs: self.orgs.to_vec(),
            themes: self.themes.to_vec(),
            tags: self.tags.to_vec(),
            rating_names: self.rating_names.to_vec(),
            lists: self.lists.to_vec(),
            ratings: self.ratings.to_vec(),
            descriptions: self.descriptions.to_vec(),
            changes,
            erased: self.erased.iter().copied().collect(),
            figures: timing.as_ref().map(FiguresOut::of),
        };
        let mut bytes =
            postcard::to_extend(&out, vec![SNAPSHOT_VERSION]).expect("records serialise to memory");
        let hash = Sha256::digest(&bytes);
        bytes.extend_from_slice(&hash);
        bytes
    }

    /// Read models from bytes made by [`to_snapshot`](Self::to_snapshot).
    ///
    /// The checksum is checked on one core while the bytes are decoded on another; models
    /// decoded from bytes whose checksum fails are dropped.
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
        let (intact, decoded) = std::thread::scope(|scope| {
            let checked = scope.spawn(|| Sha256::digest(body).as_slice() == hash);
            let decoded = decode(&body[1..]);
            (checked.join().expect("hashing does not panic"), decoded)
        });
        if !intact {
            return Err(SnapshotError::Corrupt("the checksum does not match".into()));
        }
        decoded
    }
}

/// Read models from a snapshot's body (the bytes between the format byte and the checksum).
fn decode(body: &[u8]) -> Result<ReadModels, SnapshotError> {
    let snapshot: SnapshotIn<'_> = postcard::from_bytes(body)
        .map_err(|err| SnapshotError::Corrupt(format!("cannot decode: {err}")))?;
    restore(snapshot).map_err(SnapshotError::Corrupt)
}

fn restore(s: SnapshotIn<'_>) -> Result<ReadModels, String> {
    let hot: Vec<Hot> = column(s.hot, "loop record")?;
    let cold: Vec<Cold> = column(s.cold, "loop record")?;
    let id_ends: Vec<u64> = column(s.id_ends, "loop id")?;
    let n = hot.len();
    if cold.len() != n || id_ends.len() != n || u32::try_from(n).is_err() {
        return Err("record counts differ".into());
    }
    if s.published_version > s.checkpoint {
        return Err("the public page version is past the checkpoint".into());
    }
    let id_parts = IdParts::new(s.id_bytes, &id_ends)?;
    // The loop ids' table takes one core; the records, the indexes and the SLA figures the
    // other.
    let (ids, models) = std::thread::scope(|scope| {
        let ids = scope.spawn(|| valid_ids(s.id_bytes, &id_ends));
        let models = records(s, hot, cold).map(|mut models| {
            models.order = list_order(&models.hot, &id_parts);
            models
        });
        (
            ids.join().expect("checking the loop ids does not panic"),
            models,
        )
    });
    let mut models = models?;
    models.ids = ids?;
    Ok(models)
}

/// The loop ids of a snapshot, checked to be distinct and valid.
fn valid_ids(id_bytes: &str, id_ends: &[u64]) -> Result<LoopIds, String> {
    let ids = LoopIds::from_parts(id_bytes, id_ends)?;
    for slot in 0..ids.len() {
        let id = ids.get(u32::try_from(slot).map_err(|_| "too many loops")?);
        if closeloop_domain::LoopId::parse(id).is_err() {
            return Err(format!("loop id {id:?} is not valid"));
        }
    }
    Ok(ids)
}

/// A snapshot's loop ids read in place, by slot, before (or while) [`LoopIds`] is built.
struct IdParts<'a> {
    bytes: &'a str,
    ends: &'a [u64],
}

impl<'a> IdParts<'a> {
    /// The ids of a snapshot, their offsets checked to cut `bytes` into whole ids.
    fn new(bytes: &'a str, ends: &'a [u64]) -> Result<Self, String> {
        let mut start = 0;
        for &end in ends {
            let fits = usize::try_from(end)
                .is_ok_and(|end| start <= end && end <= bytes.len() && bytes.is_char_boundary(end));
            if !fits {
                return Err("loop id offsets do not fit the id buffer".into());
            }
            start = end as usize;
        }
        Ok(Self { bytes, ends })
    }

    fn get(&self, slot: u32) -> &'a str {
        let slot = slot as usize;
        let start = if slot == 0 { 0 } else { self.ends[slot - 1] };
        #[allow(
            clippy::cast_possible_truncation,
            reason = "offsets were checked against the buffer's length"
        )]
        &self.bytes[start as usize..self.ends[slot] as usize]
    }
}

/// The list order of the slots, (`received_at`, `loop_id`), from their records and ids:
/// sorted by time first, as plain numbers, then the loops that share a time by id.
fn list_order(hot: &[Hot], ids: &IdParts<'_>) -> Order {
    let mut by_time: Vec<(Ts, u32)> = hot.iter().map(Hot::received).zip(0..).collect();
    by_time.sort_unstable();
    for same_time in by_time.chunk_by_mut(|a, b| a.0 == b.0) {
        if same_time.len() > 1 {
            same_time.sort_unstable_by(|a, b| ids.get(a.1).cmp(ids.get(b.1)));
        }
    }
    let sorted: Vec<u32> = by_time.into_iter().map(|(_, slot)| slot).collect();
    Order::from_sorted(&sorted, |slot| {
        OrderKey::new(hot[slot as usize].received(), ids.get(slot))
    })
}

/// Read models of every record of a snapshot, checked, with every index but the loop ids
/// and the list order, and the snapshot's SLA figures if it has them.
fn records(s: SnapshotIn<'_>, hot: Vec<Hot>, cold: Vec<Cold>) -> Result<ReadModels, String> {
    let n = hot.len();
    let mut models = ReadModels {
        checkpoint: s.checkpoint,
        checkpoint_hash: closeloop_store::Hash(s.checkpoint_hash),
        published_version: s.published_version,
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
    check_tables(&models)?;
    check_records(&models, &hot, &cold)?;
    models.hot = hot;
    models.cold = ColdTable::from(cold);
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
    models.index_all_filters();
    if let Some(figures) = s.figures {
        let timing = figures.restore(&models.hot, &models.cold, &models.table_sizes())?;
        models.timing = RwLock::new(Some(timing));
    }
    Ok(models)
}

/// Whether the org units are valid and every rating set names known ratings.
fn check_tables(models: &ReadModels) -> Result<(), String> {
    for id in 0..models.orgs.len() {
        let name = models
            .orgs
            .name(u32::try_from(id).map_err(|_| "too many org units")?);
        if OrgUnit::parse(name).is_err() {
            return Err(format!("org unit {name:?} is not valid"));
        }
    }
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
    Ok(())
}

/// Whether every record refers to values the tables have, and holds valid times.
fn check_records(models: &ReadModels, hot: &[Hot], cold: &[Cold]) -> Result<(), String> {
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
    for (hot, cold) in hot.iter().zip(cold) {
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
    Ok(())
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
