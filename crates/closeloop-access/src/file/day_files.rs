//! The files of the access log: one NDJSON file per UTC day, `access-YYYY-MM-DD.ndjson`,
//! named by the day of the entries it holds. Everything here is blocking I/O: it runs on the
//! writer's own thread or on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::{AccessEntry, AccessLogError, AccessQuery};

/// Longest line read as an entry. A valid line is under 600 bytes (128-byte actor and loop
/// id, 32-byte role); anything longer is damage, skipped without being held in memory whole.
const MAX_LINE_BYTES: usize = 4096;

/// The UTC day of a time: the file an entry at that time belongs in.
pub(crate) fn day_of(at: Timestamp) -> Date {
    at.to_zoned(TimeZone::UTC).date()
}

/// The file name of a day.
fn file_name(day: Date) -> String {
    format!("access-{day}.ndjson")
}

/// The day a file name names, if it is one of the log's files.
fn day_of_file(name: &str) -> Option<Date> {
    let day = name.strip_prefix("access-")?.strip_suffix(".ndjson")?;
    // `YYYY-MM-DD` only: other spellings jiff might accept are not names this log writes.
    if day.len() != 10 {
        return None;
    }
    day.parse().ok()
}

/// The path of a day's file.
pub(crate) fn day_path(dir: &Path, day: Date) -> PathBuf {
    dir.join(file_name(day))
}

/// The log's files in `dir`, oldest day first. Other files are ignored.
pub(crate) fn day_files(dir: &Path) -> Result<Vec<(Date, PathBuf)>, AccessLogError> {
    let listing = std::fs::read_dir(dir).map_err(|err| AccessLogError::io("list", dir, err))?;
    let mut files = Vec::new();
    for item in listing {
        let item = item.map_err(|err| AccessLogError::io("list", dir, err))?;
        if let Some(day) = item.file_name().to_str().and_then(day_of_file) {
            files.push((day, item.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// What a scan of one file found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Matching entries, in file order.
    pub(crate) entries: Vec<AccessEntry>,
    /// Lines that were not entries (a torn last line after a crash, damage).
    pub(crate) skipped: usize,
}

/// Reads the entries of one day file that `query` asks for, stopping after `want`. A file
/// that has gone (pruned since it was listed) holds nothing.
pub(crate) fn scan(path: &Path, query: &AccessQuery, want: usize) -> Result<Scan, AccessLogError> {
    let mut scan = Scan::default();
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(scan),
        Err(err) => return Err(AccessLogError::io("open", path, err)),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::with_capacity(256);
    while scan.entries.len() < want {
        match read_line(&mut reader, &mut line)
            .map_err(|err| AccessLogError::io("read", path, err))?
        {
            Line::End => break,
            Line::TooLong => scan.skipped += 1,
            Line::Complete | Line::Unterminated => {
                match serde_json::from_slice::<AccessEntry>(&line) {
                    Ok(entry) if query.matches(&entry) => scan.entries.push(entry),
                    Ok(_) => {}
                    Err(_) => scan.skipped += 1,
                }
            }
        }
    }
    Ok(scan)
}

/// The latest time in a day file, if it holds any entry.
pub(crate) fn last_time(path: &Path) -> Result<Option<Timestamp>, AccessLogError> {
    let file = File::open(path).map_err(|err| AccessLogError::io("open", path, err))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::with_capacity(256);
    let mut last = None;
    loop {
        match read_line(&mut reader, &mut line)
            .map_err(|err| AccessLogError::io("read", path, err))?
        {
            Line::End => return Ok(last),
            Line::TooLong => {}
            Line::Complete | Line::Unterminated => {
                if let Ok(entry) = serde_json::from_slice::<AccessEntry>(&line) {
                    last = last.max(Some(entry.at));
                }
            }
        }
    }
}

/// One line as [`read_line`] found it.
enum Line {
    /// A line ending in a newline (not included).
    Complete,
    /// The last bytes of the file, without a newline: a line torn by a crash, or one being
    /// written right now.
    Unterminated,
    /// Longer than [`MAX_LINE_BYTES`]; skipped up to its newline.
    TooLong,
    /// No more lines.
    End,
}

/// Reads the next line into `line`, never holding more than [`MAX_LINE_BYTES`] of it.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Line> {
    line.clear();
    let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
    reader.by_ref().take(limit).read_until(b'\n', line)?;
    if line.is_empty() {
        return Ok(Line::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Line::Complete);
    }
    if line.len() <= MAX_LINE_BYTES {
        return Ok(Line::Unterminated);
    }
    // Too long: skip to the end of the line, a chunk at a time.
    loop {
        line.clear();
        reader.by_ref().take(limit).read_until(b'\n', line)?;
        if line.is_empty() || line.last() == Some(&b'\n') {
            return Ok(Line::TooLong);
        }
    }
}

/// Opens a day file for appending, creating it (and making its name durable) when missing.
/// A file whose last line was torn by a crash gets a newline first, so that the torn line
/// stays one bad line and the next entry starts a line of its own.
pub(crate) fn open_for_append(dir: &Path, day: Date) -> Result<File, AccessLogError> {
    let path = day_path(dir, day);
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)
        .map_err(|err| AccessLogError::io("open", &path, err))?;
    if existed && ends_torn(&mut file).map_err(|err| AccessLogError::io("read", &path, err))? {
        file.write_all(b"\n")
            .map_err(|err| AccessLogError::io("write", &path, err))?;
    }
    if !existed {
        sync_dir(dir)?;
    }
    Ok(file)
}

/// Whether a non-empty file's last byte is not a newline.
fn ends_torn(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(length - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// Makes the directory's entries (a new or removed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AccessLogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|err| AccessLogError::io("fsync", dir, err))
}

/// Deletes the day files that hold only entries older than `cutoff`: those of the days before
/// its day. Returns how many were deleted.
pub(crate) fn prune(dir: &Path, cutoff: Timestamp) -> Result<usize, AccessLogError> {
    let keep_from = day_of(cutoff);
    let mut removed = 0;
    for (day, path) in day_files(dir)? {
        if day >= keep_from {
            break;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(AccessLogError::io("delete", &path, err)),
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// The latest time in the log, from its newest day file that holds an entry.
pub(crate) fn latest_time(dir: &Path) -> Result<Option<Timestamp>, AccessLogError> {
    for (_, path) in day_files(dir)?.iter().rev() {
        if let Some(last) = last_time(path)? {
            return Ok(Some(last));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_log_s_own_names_are_days() {
        assert_eq!(
            day_of_file("access-2026-11-27.ndjson"),
            Some(jiff::civil::date(2026, 11, 27))
        );
        assert_eq!(
            file_name(jiff::civil::date(2026, 1, 5)),
            "access-2026-01-05.ndjson"
        );
        for other in [
            "access-2026-11-27.ndjson.tmp",
            "access-20261127.ndjson",
            ".lock",
            "access-2026-13-01.ndjson",
        ] {
            assert_eq!(day_of_file(other), None, "{other}");
        }
    }

    #[test]
    fn over_long_lines_are_skipped_without_losing_the_next() {
        let mut data = vec![b'x'; MAX_LINE_BYTES * 3];
        data.extend_from_slice(b"\nnext\ntail");
        let mut reader = BufReader::new(&data[..]);
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut reader, &mut line).unwrap(),
            Line::TooLong
        ));
        assert!(matches!(
            read_line(&mut reader, &mut line).unwrap(),
            Line::Complete
        ));
        assert_eq!(line, b"next");
        assert!(matches!(
            read_line(&mut reader, &mut line).unwrap(),
            Line::Unterminated
        ));
        assert_eq!(line, b"tail");
        assert!(matches!(
            read_line(&mut reader, &mut line).unwrap(),
            Line::End
        ));
    }
}
