//! The writer thread of a [`FileAccessLog`](super::FileAccessLog): it owns the [`Appender`],
//! takes commands from a bounded queue a batch at a time, writes each batch with one write per
//! day file, fsyncs at least every flush interval while anything is unsynced, and prunes once
//! a day. A failed write or fsync stops it: every waiter hears the error, and so does every
//! later record.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jiff::civil::Date;
use tokio::sync::{mpsc, oneshot};

use super::appender::Appender;
use super::day_files::{self, day_of};
use crate::{AccessEntry, AccessLogError, Clock, Retention};

/// Most commands taken off the queue for one batch.
const BATCH: usize = 1024;

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Append these entries.
    Record(Vec<AccessEntry>),
    /// Answer once everything queued before is written (not necessarily durable): a query
    /// sends it first, so it sees every entry recorded before it.
    Written(oneshot::Sender<Result<(), AccessLogError>>),
    /// Answer once everything queued before is durable.
    Flush(oneshot::Sender<Result<(), AccessLogError>>),
    /// Delete the day files past the retention, then answer.
    Prune(oneshot::Sender<Result<(), AccessLogError>>),
    /// Wake up: fsync if the flush interval has passed, prune if the day has changed.
    Tick,
    /// Make everything durable, answer, and stop.
    Close(oneshot::Sender<Result<(), AccessLogError>>),
}

/// The writer's state, moved onto its thread.
pub(crate) struct Writer {
    pub(crate) appender: Appender,
    pub(crate) retention: Retention,
    pub(crate) clock: Clock,
    pub(crate) flush_interval: Duration,
    /// When the last fsync finished (or the writer started).
    pub(crate) synced_at: Instant,
    /// The day of the last prune, by the clock.
    pub(crate) pruned_on: Date,
    /// Set, with the reason, when the writer stops after a failure.
    pub(crate) failure: Arc<OnceLock<String>>,
}

/// Whether the writer goes on after a command.
enum Flow {
    Continue,
    /// Closed: everything is durable; answer this waiter once the files are let go of.
    Stop(oneshot::Sender<Result<(), AccessLogError>>),
}

impl Writer {
    /// Deletes the day files past the retention, by the clock, and notes the day.
    ///
    /// # Errors
    /// The outer error is fatal (an fsync of the open file failed); the inner one is not (a
    /// file could not be deleted, and the next prune tries again).
    pub(crate) fn prune(&mut self) -> Result<Result<(), AccessLogError>, AccessLogError> {
        let now = (self.clock)();
        let cutoff = self.retention.cutoff(now);
        self.appender.close_days_before(cutoff)?;
        self.pruned_on = day_of(now);
        Ok(match day_files::prune(self.appender.dir(), cutoff) {
            Ok(removed) => {
                if removed > 0 {
                    tracing::info!(
                        removed,
                        retention_days = self.retention.as_days(),
                        "access log: deleted day files past the retention"
                    );
                    metrics::counter!("closeloop_access_log_pruned_files_total")
                        .increment(u64::try_from(removed).unwrap_or(u64::MAX));
                }
                Ok(())
            }
            Err(err) => {
                tracing::error!(%err, "access log: cannot delete day files past the retention; trying again tomorrow");
                Err(err)
            }
        })
    }

    /// Writes the entries waiting in `pending`.
    fn write(&mut self, pending: &mut Vec<AccessEntry>) -> Result<(), AccessLogError> {
        if pending.is_empty() {
            return Ok(());
        }
        let written = self.appender.append(pending.drain(..))?;
        metrics::counter!("closeloop_access_log_entries_total")
            .increment(u64::try_from(written.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), AccessLogError> {
        self.appender.sync()?;
        self.synced_at = Instant::now();
        Ok(())
    }

    /// Carries out one command. `Err` is a fatal failure, already answered to the command's
    /// waiter, as text.
    fn serve(&mut self, command: Command, pending: &mut Vec<AccessEntry>) -> Result<Flow, String> {
        match command {
            Command::Record(entries) => {
                pending.extend(entries);
                Ok(Flow::Continue)
            }
            Command::Tick => Ok(Flow::Continue),
            Command::Written(reply) => {
                let outcome = self.write(pending);
                self.answer(reply, outcome).map(|()| Flow::Continue)
            }
            Command::Flush(reply) => {
                let outcome = self.write(pending).and_then(|()| self.sync());
                self.answer(reply, outcome).map(|()| Flow::Continue)
            }
            Command::Prune(reply) => {
                let outcome = self.write(pending).and_then(|()| self.prune());
                match outcome {
                    Ok(deleted) => {
                        let _ = reply.send(deleted);
                        Ok(Flow::Continue)
                    }
                    Err(err) => self.answer(reply, Err(err)).map(|()| Flow::Continue),
                }
            }
            Command::Close(reply) => match self.write(pending).and_then(|()| self.sync()) {
                Ok(()) => Ok(Flow::Stop(reply)),
                Err(err) => self.answer(reply, Err(err)).map(|()| Flow::Continue),
            },
        }
    }

    /// Sends `outcome` to a waiter. A failure is first noted as the writer's reason to stop,
    /// so that a record made after the waiter hears of it is refused; it goes back as text
    /// too, for the writer to stop on.
    fn answer(
        &self,
        reply: oneshot::Sender<Result<(), AccessLogError>>,
        outcome: Result<(), AccessLogError>,
    ) -> Result<(), String> {
        match outcome {
            Ok(()) => {
                // A waiter that gave up (a dropped request) needs no answer.
                let _ = reply.send(Ok(()));
                Ok(())
            }
            Err(err) => {
                let reason = err.to_string();
                let _ = self.failure.set(reason.clone());
                let _ = reply.send(Err(AccessLogError::Failed(reason.clone())));
                Err(reason)
            }
        }
    }

    /// What is due before a batch: pruning, when the day has changed since the last one (so
    /// that whatever the batch answers comes after it).
    fn before_batch(&mut self) -> Result<(), AccessLogError> {
        if day_of((self.clock)()) != self.pruned_on {
            // A failed deletion is logged by `prune` and tried again tomorrow.
            let _ = self.prune()?;
        }
        Ok(())
    }

    /// What is due after a batch: write what it recorded, and fsync when the flush interval
    /// has passed since the last fsync.
    fn after_batch(&mut self, pending: &mut Vec<AccessEntry>) -> Result<(), AccessLogError> {
        self.write(pending)?;
        if self.appender.is_dirty() && self.synced_at.elapsed() >= self.flush_interval {
            self.sync()?;
        }
        Ok(())
    }
}

/// The writer thread's loop: runs until closed, until every handle is gone, or until a write
/// fails.
pub(crate) fn run(mut writer: Writer, mut commands: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut pending = Vec::new();
    loop {
        let Some(first) = commands.blocking_recv() else {
            // Every handle is gone: make what is left durable.
            if let Err(err) = writer.write(&mut pending).and_then(|()| writer.sync()) {
                tracing::error!(%err, "access log: the last entries could not be made durable");
            }
            return;
        };
        batch.push(first);
        while batch.len() < BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let mut queued = batch.drain(..);
        let mut outcome = writer
            .before_batch()
            .map(|()| Flow::Continue)
            .map_err(|err| err.to_string());
        if outcome.is_ok() {
            for command in queued.by_ref() {
                outcome = writer.serve(command, &mut pending);
                if !matches!(outcome, Ok(Flow::Continue)) {
                    break;
                }
            }
        }
        let outcome = match outcome {
            Ok(Flow::Continue) => writer
                .after_batch(&mut pending)
                .map(|()| Flow::Continue)
                .map_err(|err| err.to_string()),
            other => other,
        };
        match outcome {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop(reply)) => {
                let rest: Vec<Command> = queued.collect();
                refuse(rest, &mut commands, || AccessLogError::Closed);
                // The lock file goes with the writer: whoever waited for the close may open
                // the log again at once.
                drop(writer);
                let _ = reply.send(Ok(()));
                return;
            }
            Err(reason) => {
                tracing::error!(
                    reason,
                    "access log: a write failed; recording has stopped and reads of personal data are refused until a restart"
                );
                metrics::counter!("closeloop_access_log_failures_total").increment(1);
                let _ = writer.failure.set(reason.clone());
                let rest: Vec<Command> = queued.collect();
                refuse(rest, &mut commands, || {
                    AccessLogError::Failed(reason.clone())
                });
                return;
            }
        }
    }
}

/// Closes the queue and answers every waiter left in it (and in `rest`) with `error`; entries
/// still queued are counted as lost.
fn refuse(
    rest: Vec<Command>,
    commands: &mut mpsc::Receiver<Command>,
    error: impl Fn() -> AccessLogError,
) {
    commands.close();
    let mut lost = 0usize;
    let mut settle = |command: Command| match command {
        Command::Record(entries) => lost += entries.len(),
        Command::Tick => {}
        Command::Written(reply)
        | Command::Flush(reply)
        | Command::Prune(reply)
        | Command::Close(reply) => {
            let _ = reply.send(Err(error()));
        }
    };
    rest.into_iter().for_each(&mut settle);
    while let Some(command) = commands.blocking_recv() {
        settle(command);
    }
    if lost > 0 {
        tracing::error!(
            lost,
            "access log: entries accepted but not written before the writer stopped"
        );
    }
}
