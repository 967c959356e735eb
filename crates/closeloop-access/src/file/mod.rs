//! [`FileAccessLog`]: the access log as one NDJSON file per UTC day in its own directory
//! (`<data_dir>/access/access-YYYY-MM-DD.ndjson`).
//!
//! - Recording never waits for the disk: [`record`](AccessLog::record) puts the entries on a
//!   bounded queue to a writer thread that owns the files ([`writer`]). When the queue is full
//!   the request waits briefly for room (250 ms by default) and is then refused with
//!   [`AccessLogError::Busy`]: a read of personal data that cannot be recorded is not served,
//!   rather than served unrecorded. Refusals are counted in
//!   `closeloop_access_log_refused_total{reason}` and logged.
//! - The writer appends each batch with one write per day file and fsyncs at least every
//!   second while anything is unsynced, when asked ([`flush`](AccessLog::flush)) and on
//!   [`close`](FileAccessLog::close). A crash loses at most the last second of entries.
//! - Old entries go a whole day file at a time: the files of days before `now - retention`,
//!   when the log opens, once a day after that, and on [`prune`](AccessLog::prune).
//! - A query reads the day files from the day of its `after` onwards, oldest first, and stops
//!   as soon as it has its `limit`; lines that are not entries (a line torn by a crash) are
//!   skipped.

mod appender;
mod day_files;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{mpsc, oneshot};

use self::appender::Appender;
use self::day_files::day_of;
use self::writer::{Command, Writer};
use crate::{AccessEntry, AccessLog, AccessLogError, AccessQuery, Clock, Retention};

/// How the file log behaves; [`Default`] gives the documented settings.
#[derive(Clone)]
pub struct FileAccessLogOptions {
    /// How long entries are kept (400 days by default).
    pub retention: Retention,
    /// Where "now" comes from, for pruning.
    pub clock: Clock,
    /// Batches of entries the queue to the writer holds (4096 by default).
    pub queue: usize,
    /// How long a record waits for room in a full queue before it is refused (250 ms).
    pub record_wait: Duration,
    /// Longest time written entries stay unsynced (1 s).
    pub flush_interval: Duration,
}

impl Default for FileAccessLogOptions {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            clock: crate::system_clock(),
            queue: 4096,
            record_wait: Duration::from_millis(250),
            flush_interval: Duration::from_secs(1),
        }
    }
}

impl std::fmt::Debug for FileAccessLogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAccessLogOptions")
            .field("retention", &self.retention)
            .field("queue", &self.queue)
            .field("record_wait", &self.record_wait)
            .field("flush_interval", &self.flush_interval)
            .finish_non_exhaustive()
    }
}

/// The access log in day files, written by its own thread. See the [module](self) for how.
#[derive(Debug)]
pub struct FileAccessLog {
    dir: PathBuf,
    commands: mpsc::Sender<Command>,
    record_wait: Duration,
    /// The reason the writer stopped, once it has.
    failure: Arc<OnceLock<String>>,
    /// Set by [`close`](Self::close) before it asks the writer to stop, so that no record
    /// is accepted after it.
    closed: AtomicBool,
}

impl FileAccessLog {
    /// The directory of the access log within a data directory: `<data_dir>/access`.
    #[must_use]
    pub fn dir_in(data_dir: &Path) -> PathBuf {
        data_dir.join("access")
    }

    /// Opens (creating) the log in `dir`, deletes the day files past the retention, and
    /// starts its writer thread. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`AccessLogError::Locked`] when another process writes the log; [`AccessLogError::Io`]
    /// when the directory cannot be created or read.
    pub async fn open(
        dir: impl Into<PathBuf>,
        options: FileAccessLogOptions,
    ) -> Result<Self, AccessLogError> {
        let dir = dir.into();
        let failure = Arc::new(OnceLock::new());
        let writer = {
            let dir = dir.clone();
            let options = options.clone();
            let failure = Arc::clone(&failure);
            off_the_workers(&dir.clone(), move || {
                let appender = Appender::open(&dir)?;
                let mut writer = Writer {
                    appender,
                    retention: options.retention,
                    clock: options.clock,
                    flush_interval: options.flush_interval,
                    synced_at: Instant::now(),
                    pruned_on: day_of(jiff::Timestamp::MIN),
                    failure,
                };
                // A failed deletion is logged and tried again tomorrow; the log still opens.
                let _ = writer.prune()?;
                Ok(writer)
            })
            .await?
        };
        let (commands, queue) = mpsc::channel(options.queue.max(1));
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || writer::run(writer, queue))
            .map_err(|err| AccessLogError::io("start the writer thread of", &dir, err))?;
        tokio::spawn(tick(commands.downgrade(), options.flush_interval));
        Ok(Self {
            dir,
            commands,
            record_wait: options.record_wait,
            failure,
            closed: AtomicBool::new(false),
        })
    }

    /// The directory of this log.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes everything recorded so far durable and stops the writer; later records are
    /// refused with [`AccessLogError::Closed`]. For shutdown, once no request is running.
    ///
    /// # Errors
    /// When the last entries could not be made durable.
    pub async fn close(&self) -> Result<(), AccessLogError> {
        self.closed.store(true, Ordering::SeqCst);
        self.ask(Command::Close).await
    }

    /// Sends a command that answers, and waits for the answer.
    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), AccessLogError>>) -> Command,
    ) -> Result<(), AccessLogError> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(command(reply)).await.is_err() {
            return Err(self.stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Why the writer no longer takes commands.
    fn stopped(&self) -> AccessLogError {
        self.failure.get().map_or(AccessLogError::Closed, |reason| {
            AccessLogError::Failed(reason.clone())
        })
    }

    async fn find(&self, query: AccessQuery) -> Result<Vec<AccessEntry>, AccessLogError> {
        // Everything recorded before the query is written first, so the answer includes it.
        // A writer that has stopped wrote all it ever will: the files are still read.
        let _ = self.ask(Command::Written).await;
        let dir = self.dir.clone();
        let listing = off_the_workers(&self.dir, move || day_files::day_files(&dir)).await?;
        let first_day = query.after.map(day_of);
        let want = query.limit.get();
        let mut found = Vec::with_capacity(want.min(128));
        // One file at a time on the blocking pool: a dropped request stops between files.
        for (day, path) in listing {
            if first_day.is_some_and(|first| day < first) {
                continue;
            }
            let remaining = want - found.len();
            let file_query = query.clone();
            let scan = off_the_workers(&path.clone(), move || {
                day_files::scan(&path, &file_query, remaining)
            })
            .await?;
            if scan.skipped > 0 {
                metrics::counter!("closeloop_access_log_skipped_lines_total")
                    .increment(u64::try_from(scan.skipped).unwrap_or(u64::MAX));
                tracing::warn!(
                    skipped = scan.skipped,
                    %day,
                    "access log: skipped lines that are not entries (a line torn by a crash, or damage)"
                );
            }
            found.extend(scan.entries);
            if found.len() >= want {
                break;
            }
        }
        Ok(found)
    }
}

impl AccessLog for FileAccessLog {
    fn record(&self, entries: Vec<AccessEntry>) -> BoxFuture<'_, Result<(), AccessLogError>> {
        async move {
            if entries.is_empty() {
                return Ok(());
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(AccessLogError::Closed);
            }
            if self.failure.get().is_some() {
                metrics::counter!("closeloop_access_log_refused_total", "reason" => "failed")
                    .increment(1);
                return Err(self.stopped());
            }
            match self
                .commands
                .send_timeout(Command::Record(entries), self.record_wait)
                .await
            {
                Ok(()) => Ok(()),
                Err(SendTimeoutError::Timeout(_)) => {
                    metrics::counter!("closeloop_access_log_refused_total", "reason" => "busy")
                        .increment(1);
                    tracing::warn!(
                        wait_ms = self.record_wait.as_millis(),
                        "access log: the queue to the disk stayed full; a read of personal data was refused rather than served unrecorded"
                    );
                    Err(AccessLogError::Busy)
                }
                Err(SendTimeoutError::Closed(_)) => {
                    metrics::counter!("closeloop_access_log_refused_total", "reason" => "stopped")
                        .increment(1);
                    Err(self.stopped())
                }
            }
        }
        .boxed()
    }

    fn query(&self, query: AccessQuery) -> BoxFuture<'_, Result<Vec<AccessEntry>, AccessLogError>> {
        self.find(query).boxed()
    }

    fn prune(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        self.ask(Command::Prune).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        self.ask(Command::Flush).boxed()
    }
}

/// Wakes the writer every `interval`, so that it fsyncs and prunes on time even when nothing
/// is recorded. Ends when the log is dropped or its writer has stopped.
async fn tick(commands: mpsc::WeakSender<Command>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(commands) = commands.upgrade() else {
            return;
        };
        // A full queue wakes the writer anyway.
        if let Err(TrySendError::Closed(_)) = commands.try_send(Command::Tick) {
            return;
        }
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn off_the_workers<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, AccessLogError> + Send + 'static,
) -> Result<T, AccessLogError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| AccessLogError::io("work on", path, std::io::Error::other(err)))?
}

/// Records one entry in the access log in `dir` from outside the service — a command-line
/// tool such as `closeloop replay` — and returns it as written (its time stamped after the
/// log's latest) once it is durable. It does not prune: the service does.
///
/// Call it before showing any personal data, and show none if it fails.
///
/// # Errors
/// [`AccessLogError::Locked`] when the service is running on the same data directory;
/// [`AccessLogError::Io`] when the entry cannot be written and made durable.
pub async fn record_offline(
    dir: impl Into<PathBuf>,
    entry: AccessEntry,
) -> Result<AccessEntry, AccessLogError> {
    let dir = dir.into();
    off_the_workers(&dir.clone(), move || {
        let mut appender = Appender::open(&dir)?;
        let mut written = appender.append([entry])?;
        appender.sync()?;
        written.pop().ok_or_else(|| {
            AccessLogError::io("write to", &dir, std::io::Error::other("no entry written"))
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::What;
    use crate::conformance::entry;

    /// A log whose writer never runs: the test holds the other end of its queue.
    fn stalled(queue: usize) -> (FileAccessLog, mpsc::Receiver<Command>) {
        let (commands, receiver) = mpsc::channel(queue);
        let log = FileAccessLog {
            dir: PathBuf::from("/nonexistent"),
            commands,
            record_wait: Duration::from_millis(20),
            failure: Arc::new(OnceLock::new()),
            closed: AtomicBool::new(false),
        };
        (log, receiver)
    }

    fn one() -> Vec<AccessEntry> {
        vec![entry(
            "2026-11-27T09:30:00Z".parse().expect("time"),
            "staff:1",
            Some("loop-a"),
            What::Loop,
        )]
    }

    #[tokio::test]
    async fn a_full_queue_refuses_after_a_short_wait_then_takes_records_again() {
        let (log, mut writer) = stalled(1);
        log.record(one()).await.expect("room for one");
        let started = Instant::now();
        let refused = log.record(one()).await;
        assert!(matches!(refused, Err(AccessLogError::Busy)), "{refused:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "it waited first"
        );
        // The writer takes one batch: there is room again.
        assert!(matches!(writer.recv().await, Some(Command::Record(_))));
        log.record(one()).await.expect("room again");
    }

    #[tokio::test]
    async fn a_record_waiting_for_room_gets_in_when_the_writer_catches_up() {
        let (log, mut writer) = stalled(1);
        log.record(one()).await.expect("room for one");
        let catch_up = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            writer.recv().await
        };
        let (waited, taken) = tokio::join!(log.record(one()), catch_up);
        waited.expect("it got in within the wait");
        assert!(taken.is_some());
    }

    #[tokio::test]
    async fn a_stopped_writer_refuses_with_its_reason() {
        let (log, writer) = stalled(1);
        let _ = log
            .failure
            .set("cannot fsync: Input/output error".to_owned());
        drop(writer);
        let refused = log.record(one()).await;
        let Err(AccessLogError::Failed(reason)) = refused else {
            panic!("{refused:?}");
        };
        assert!(reason.contains("Input/output"), "{reason}");
    }
}
