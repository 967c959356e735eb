//! [`Appender`]: the one writer of a log directory. It holds the directory's lock file, stamps
//! entries with strictly increasing times, appends them to the file of their day and makes
//! them durable when asked. Blocking I/O: it lives on the writer thread (or in a
//! command-line tool).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;

use super::day_files::{self, day_of};
use crate::stamp::Stamper;
use crate::{AccessEntry, AccessLogError};

/// The name of the lock file that keeps a second process from writing the same log.
const LOCK_FILE: &str = ".lock";

/// Appends entries to the day files of one directory.
#[derive(Debug)]
pub(crate) struct Appender {
    dir: PathBuf,
    stamper: Stamper,
    /// The day file being appended to.
    current: Option<(Date, File)>,
    /// Whether something was written since the last fsync.
    dirty: bool,
    /// Held (and locked) for as long as the appender lives.
    _lock: File,
}

impl Appender {
    /// Takes the directory (creating it), continuing after the latest time already in it.
    ///
    /// # Errors
    /// [`AccessLogError::Locked`] when another appender holds it; [`AccessLogError::Io`]
    /// when it cannot be created or read.
    pub(crate) fn open(dir: &Path) -> Result<Self, AccessLogError> {
        std::fs::create_dir_all(dir).map_err(|err| AccessLogError::io("create", dir, err))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|err| AccessLogError::io("open", &lock_path, err))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AccessLogError::Locked(dir.to_owned()));
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(AccessLogError::io("lock", &lock_path, err));
            }
        }
        let latest = day_files::latest_time(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            stamper: Stamper::after(latest),
            current: None,
            dirty: false,
            _lock: lock,
        })
    }

    /// Stamps `entries` and appends each to the file of its day, in order; returns them as
    /// written. On return the bytes are with the operating system, not yet durable.
    ///
    /// # Errors
    /// When a file cannot be opened or written: nothing can then be trusted about what
    /// reached it, and the caller must stop writing.
    pub(crate) fn append(
        &mut self,
        entries: impl IntoIterator<Item = AccessEntry>,
    ) -> Result<Vec<AccessEntry>, AccessLogError> {
        let mut written = Vec::new();
        let mut buffer = Vec::with_capacity(4096);
        let mut buffer_day = None;
        for mut entry in entries {
            entry.at = self.stamper.stamp(entry.at);
            let day = day_of(entry.at);
            if buffer_day != Some(day) {
                if let Some(previous) = buffer_day {
                    self.write_day(previous, &buffer)?;
                    buffer.clear();
                }
                buffer_day = Some(day);
            }
            // Serialising these types cannot fail: they are strings, a time and an enum.
            serde_json::to_writer(&mut buffer, &entry).map_err(|err| {
                AccessLogError::io("encode an entry for", &self.dir, std::io::Error::other(err))
            })?;
            buffer.push(b'\n');
            written.push(entry);
        }
        if let Some(day) = buffer_day {
            self.write_day(day, &buffer)?;
        }
        Ok(written)
    }

    /// Appends `bytes` (whole lines) to the file of `day`, switching files when the day
    /// changes: the previous file is made durable before it is closed.
    fn write_day(&mut self, day: Date, bytes: &[u8]) -> Result<(), AccessLogError> {
        if self.current.as_ref().is_none_or(|(open, _)| *open != day) {
            self.sync()?;
            self.current = None;
            let file = day_files::open_for_append(&self.dir, day)?;
            self.current = Some((day, file));
        }
        let Some((_, file)) = self.current.as_mut() else {
            unreachable!("a day file was opened just above");
        };
        file.write_all(bytes).map_err(|err| {
            AccessLogError::io("append to", day_files::day_path(&self.dir, day), err)
        })?;
        self.dirty = true;
        Ok(())
    }

    /// Whether something was written since the last fsync.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Makes everything written so far durable (fsync of the open day file).
    ///
    /// # Errors
    /// When the fsync fails: the caller must stop writing.
    pub(crate) fn sync(&mut self) -> Result<(), AccessLogError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some((day, file)) = &self.current {
            file.sync_data().map_err(|err| {
                AccessLogError::io("fsync", day_files::day_path(&self.dir, *day), err)
            })?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Lets go of the open day file if it holds only entries older than `cutoff` (after a
    /// clock jump, say), making it durable first, so that pruning never deletes a file still
    /// being appended to.
    ///
    /// # Errors
    /// When the fsync fails: the caller must stop writing.
    pub(crate) fn close_days_before(&mut self, cutoff: Timestamp) -> Result<(), AccessLogError> {
        if self
            .current
            .as_ref()
            .is_some_and(|(day, _)| *day < day_of(cutoff))
        {
            self.sync()?;
            self.current = None;
        }
        Ok(())
    }

    /// The directory of the log.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}
