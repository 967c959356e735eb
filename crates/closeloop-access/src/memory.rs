//! [`MemoryAccessLog`]: the access log in memory, for tests and for tools that need no record
//! kept.

use std::sync::Mutex;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::stamp::Stamper;
use crate::{AccessEntry, AccessLog, AccessLogError, AccessQuery, Clock, Retention};

/// Keeps every entry in memory until it is pruned. Nothing survives the process.
pub struct MemoryAccessLog {
    inner: Mutex<Inner>,
    retention: Retention,
    clock: Clock,
}

#[derive(Default)]
struct Inner {
    /// Oldest first, times strictly increasing.
    entries: Vec<AccessEntry>,
    stamper: Stamper,
}

impl MemoryAccessLog {
    /// An empty log that forgets entries older than `retention` by `clock` when pruned.
    #[must_use]
    pub fn new(retention: Retention, clock: Clock) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            retention,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the entries whole (every change is one push
        // or one retain), so a poisoned lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for MemoryAccessLog {
    /// An empty log with the default retention and the wall clock.
    fn default() -> Self {
        Self::new(Retention::default(), crate::system_clock())
    }
}

impl std::fmt::Debug for MemoryAccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAccessLog")
            .field("entries", &self.lock().entries.len())
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl AccessLog for MemoryAccessLog {
    fn record(&self, entries: Vec<AccessEntry>) -> BoxFuture<'_, Result<(), AccessLogError>> {
        let mut inner = self.lock();
        for mut entry in entries {
            entry.at = inner.stamper.stamp(entry.at);
            inner.entries.push(entry);
        }
        futures::future::ready(Ok(())).boxed()
    }

    fn query(&self, query: AccessQuery) -> BoxFuture<'_, Result<Vec<AccessEntry>, AccessLogError>> {
        let inner = self.lock();
        let start = query
            .after
            .map_or(0, |after| inner.entries.partition_point(|e| e.at <= after));
        let found = inner.entries[start..]
            .iter()
            .filter(|entry| query.matches(entry))
            .take(query.limit.get())
            .cloned()
            .collect();
        futures::future::ready(Ok(found)).boxed()
    }

    fn prune(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        let cutoff = self.retention.cutoff((self.clock)());
        self.lock().entries.retain(|entry| entry.at >= cutoff);
        futures::future::ready(Ok(())).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        futures::future::ready(Ok(())).boxed()
    }
}
