//! Closeloop's access log: who read a loop's personal data, and when.
//!
//! Every read that returns personal data (a loop with its timeline, the raw event log, a
//! replay) is recorded as an [`AccessEntry`] — time, actor, role, loop id and a fixed word for
//! what was read — in a log kept apart from the event log, with its own [`Retention`] (400 days
//! by default). The log holds no personal data itself, so it can outlive erasures.
//!
//! - [`AccessLog`] is the trait: record a batch, [query](AccessLog::query) with an
//!   [`AccessQuery`] (loop, actor, after a time, up to 1000 entries, oldest first), prune what
//!   is older than the retention, flush to disk.
//! - [`FileAccessLog`] keeps one NDJSON file per UTC day under `<data_dir>/access/`, written
//!   by a thread that owns the files, fsynced at least every second; a [`record`](AccessLog::record)
//!   only queues. [`record_offline`] appends one entry durably from a command-line tool.
//! - [`MemoryAccessLog`] keeps entries in memory, for tests.
//! - `NatsAccessLog` (feature `nats`) keeps them in a NATS JetStream stream that every replica
//!   of the service shares; a record returns once JetStream has acknowledged it.
//! - `conformance` (feature `conformance`) is the suite every implementation must pass.

mod entry;
mod error;
mod file;
mod memory;
#[cfg(feature = "nats")]
pub mod nats;
mod query;
mod stamp;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::sync::Arc;

use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};

pub use entry::{
    ACTOR_MAX_BYTES, AccessEntry, Actor, InvalidValue, ROLE_MAX_BYTES, RoleName, What,
};
pub use error::AccessLogError;
pub use file::{FileAccessLog, FileAccessLogOptions, record_offline};
pub use memory::MemoryAccessLog;
#[cfg(feature = "nats")]
pub use nats::{DEFAULT_STREAM, DEFAULT_SUBJECT, NatsAccessLog, NatsAccessLogOptions};
pub use query::{AccessQuery, DEFAULT_LIMIT, MAX_LIMIT, MIN_LIMIT, QueryLimit};

/// Where the access log reads the current time (for pruning); tests pass a controlled clock.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock.
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// The access log: record reads of personal data, answer auditors, forget old entries.
///
/// Implementations keep entries in the order they were recorded, with strictly increasing
/// times (an entry not later than the one before it is stamped one nanosecond after it), so
/// that [`AccessQuery::after`] is an exact cursor.
pub trait AccessLog: Send + Sync + std::fmt::Debug {
    /// Records `entries`, in order. Returns once they are accepted — queued for the disk, not
    /// yet on it — so a request never waits for the disk; a query made afterwards sees them.
    ///
    /// # Errors
    /// [`AccessLogError::Busy`] when the log cannot take them now; [`AccessLogError::Failed`]
    /// or [`AccessLogError::Closed`] when it no longer records. A caller must then not show
    /// the personal data the entries describe.
    fn record(&self, entries: Vec<AccessEntry>) -> BoxFuture<'_, Result<(), AccessLogError>>;

    /// The entries `query` asks for, oldest first: at most its limit, and reading no further
    /// than needed to find them.
    ///
    /// # Errors
    /// When the log cannot be read.
    fn query(&self, query: AccessQuery) -> BoxFuture<'_, Result<Vec<AccessEntry>, AccessLogError>>;

    /// Forgets entries older than the retention (by the log's clock). A log may keep entries
    /// up to one day longer than the retention (the file log deletes whole days), never less.
    ///
    /// # Errors
    /// When old entries could not be removed.
    fn prune(&self) -> BoxFuture<'_, Result<(), AccessLogError>>;

    /// Returns once every entry recorded before the call is durable.
    ///
    /// # Errors
    /// When they could not be made durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), AccessLogError>>;
}

/// How long entries are kept: whole days, 1 to [`Retention::MAX_DAYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    days: u32,
}

impl Retention {
    /// The default: 400 days, a year and a month, so that a complaint made a year after a
    /// leak can still be answered.
    pub const DEFAULT_DAYS: u32 = 400;
    /// The longest retention accepted: 100 years.
    pub const MAX_DAYS: u32 = 36_500;

    /// A retention of `days` days.
    ///
    /// # Errors
    /// [`InvalidValue`] when `days` is 0 or over [`Retention::MAX_DAYS`].
    pub fn days(days: u32) -> Result<Self, InvalidValue> {
        if days == 0 || days > Self::MAX_DAYS {
            return Err(InvalidValue::new(format!(
                "the access log retention must be 1 to {} days, got {days}",
                Self::MAX_DAYS
            )));
        }
        Ok(Self { days })
    }

    /// The number of days.
    #[must_use]
    pub fn as_days(self) -> u32 {
        self.days
    }

    /// The oldest time still kept at `now`: entries before it may be forgotten.
    #[must_use]
    pub fn cutoff(self, now: Timestamp) -> Timestamp {
        let span = SignedDuration::from_hours(i64::from(self.days) * 24);
        now.checked_sub(span).unwrap_or(Timestamp::MIN)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            days: Self::DEFAULT_DAYS,
        }
    }
}
