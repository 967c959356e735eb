//! [`NatsAccessLog`]: the access log in a NATS JetStream stream, so that every replica of the
//! service records into, and answers auditors from, one log.
//!
//! # Layout
//!
//! One stream (`CLOSELOOP_ACCESS` by default) with file storage, the configured number of
//! replicas (3 on the cluster in `deploy/`), limits retention and `max_age` = the retention
//! plus one day, taking one subject (`closeloop.access`). Each message holds one or more
//! entries as JSON lines, exactly the lines of `GET /v1/audit/access`.
//!
//! **One message per round of records, not per entry.** A publisher task takes every record
//! waiting in its queue (group commit, as the file log's writer does) and appends them as one
//! message, fenced with `Nats-Expected-Last-Sequence` (below). A record's entries thus stay
//! whole and in order, and concurrent reads share one JetStream round trip instead of paying
//! one each; a message per entry would need a fence per entry, that is a round trip per entry
//! for each writer. The price is that JetStream ages and removes whole messages: a query
//! never returns an entry past the retention (by the log's clock), whether or not its message
//! is gone yet, and [`prune`](AccessLog::prune) removes a message once every entry in it is
//! past the retention. A round larger than `max_message_bytes` goes in several messages.
//!
//! # Times strictly increase across processes
//!
//! Times are stamped when written, against the stream's tail: the publisher knows the last
//! sequence and the newest entry's time there, stamps its entries after that time (one
//! nanosecond later when not later, as every log does) and publishes with
//! `Nats-Expected-Last-Sequence` = that sequence. If another process appended in between,
//! JetStream refuses the message (wrong last sequence); the publisher reads the tail again,
//! stamps again and retries, within the record's deadline. The stream's order is then the
//! log's order, and every message starts after the one before it. The fence holds for the
//! first message of a new stream too (an expected last sequence of 0 is checked: measured on
//! nats-server 2.9.10, one node and R3), and when the tail's message is gone (aged out,
//! pruned or deleted by hand), JetStream never reuses its sequence, so the fence still orders
//! the next message right after it, stamped after the newest entry still in the stream.
//!
//! Stamping on read instead was rejected: an entry's stamp would depend on every entry before
//! it, so a reader starting in the middle could not compute it, and pruning would shift the
//! stamps under an auditor's `after` cursor. The cost of stamping on write is that a process
//! whose clock runs ahead pushes the next entries of the others forward to its time: times
//! stay increasing but may run slightly later than the reads (keep the clocks in sync).
//!
//! # Recording fails closed
//!
//! [`record`](AccessLog::record) returns once JetStream has acknowledged the entries — stored
//! on a quorum of the stream's replicas, not yet fsynced (2.9 fsyncs on an interval; R3 is the
//! defence, see `docs/operations.md`) — so a read of personal data is answered only once its
//! entry is in the shared log, where a crash of this process cannot lose it and every other
//! replica's query sees it. It waits at most `record_wait` for room in the bounded queue
//! ([`AccessLogError::Busy`]), then for the acknowledgement: a round, conflicts included,
//! gives up after `ack_timeout`, and a record queued behind a round waits at most twice that
//! in all ([`AccessLogError::Unavailable`]); either way the caller must not show the data.
//! A message acknowledged too late may still be stored: the log then holds an entry for a
//! read that was refused, the safe side. Records whose caller stopped waiting are dropped
//! from the queue unpublished, so an outage does not leave a backlog of them.
//!
//! # Queries, pruning, flushing
//!
//! A query finds its first message by a binary search over sequences on the entries' own
//! times (about 20 requests for a million messages), then reads on message by message (16
//! requests in flight) up to the last message that existed when it started, stopping at its
//! limit. Every request is a message get from the stream leader, with a timeout: no follower
//! that may lag, and no consumer to create (see the `reader` module). [`prune`](AccessLog::prune) finds, the same
//! way, the first message with an entry still within the retention and purges every message
//! before it; JetStream's `max_age` removes messages a day after the retention even if no
//! replica prunes. [`flush`](AccessLog::flush) returns once everything queued before it is
//! acknowledged.

mod publisher;
mod reader;
mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, oneshot};

use self::publisher::{Command, Publisher};
use self::reader::Reader;
use crate::{AccessEntry, AccessLog, AccessLogError, AccessQuery, Clock, Retention};

/// The stream a [`NatsAccessLog`] uses unless told otherwise.
pub const DEFAULT_STREAM: &str = "CLOSELOOP_ACCESS";
/// The subject a [`NatsAccessLog`] publishes on unless told otherwise.
pub const DEFAULT_SUBJECT: &str = "closeloop.access";

/// Room kept in a message for its headers and subject, under the server's `max_payload`.
const HEADER_ROOM: usize = 1024;

/// How a [`NatsAccessLog`] is set up; [`Default`] gives the documented settings.
#[derive(Clone)]
pub struct NatsAccessLogOptions {
    /// The JetStream stream ([`DEFAULT_STREAM`]); created when missing.
    pub stream: String,
    /// The subject entries are published on ([`DEFAULT_SUBJECT`]); the stream must take it.
    pub subject: String,
    /// Copies of the stream when it is created: 1 for a single server, 3 on a cluster. An
    /// existing stream keeps its own.
    pub replicas: usize,
    /// How long entries are kept (400 days by default); sets the stream's `max_age`.
    pub retention: Retention,
    /// Where "now" comes from, for the retention.
    pub clock: Clock,
    /// Records the queue to the publisher holds (4096 by default).
    pub queue: usize,
    /// How long a record waits for room in a full queue before it is refused (250 ms).
    pub record_wait: Duration,
    /// How long a record waits for JetStream's acknowledgement, retries after another
    /// writer's append included, before it is refused (2 s).
    pub ack_timeout: Duration,
    /// Bound on each request of a query or a prune (5 s).
    pub request_timeout: Duration,
    /// Largest payload of one message (256 KiB), at most the server's `max_payload` less
    /// 1 KiB.
    pub max_message_bytes: usize,
}

impl Default for NatsAccessLogOptions {
    fn default() -> Self {
        Self {
            stream: DEFAULT_STREAM.to_owned(),
            subject: DEFAULT_SUBJECT.to_owned(),
            replicas: 1,
            retention: Retention::default(),
            clock: crate::system_clock(),
            queue: 4096,
            record_wait: Duration::from_millis(250),
            ack_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_message_bytes: 256 * 1024,
        }
    }
}

impl std::fmt::Debug for NatsAccessLogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAccessLogOptions")
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("replicas", &self.replicas)
            .field("retention", &self.retention)
            .field("queue", &self.queue)
            .field("record_wait", &self.record_wait)
            .field("ack_timeout", &self.ack_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl NatsAccessLogOptions {
    /// Checks what JetStream would refuse later, with a message that says what to change.
    fn check(&self) -> Result<(), AccessLogError> {
        let name_ok = !self.stream.is_empty()
            && self.stream.len() <= 64
            && self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(unavailable(format!(
                "the access log stream name {:?} must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -",
                self.stream
            )));
        }
        let subject_ok = self.subject.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        });
        if !subject_ok {
            return Err(unavailable(format!(
                "the access log subject {:?} must be dot-separated words without wildcards, e.g. {DEFAULT_SUBJECT}",
                self.subject
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(unavailable(format!(
                "the access log stream needs 1 to 5 replicas, got {}",
                self.replicas
            )));
        }
        Ok(())
    }
}

/// The access log in a JetStream stream, shared by every process that opens it. See the
/// [module](self) for how.
pub struct NatsAccessLog {
    commands: mpsc::Sender<Command>,
    reader: Reader,
    retention: Retention,
    clock: Clock,
    record_wait: Duration,
    ack_timeout: Duration,
    /// Longest a flush waits: every round the queue can hold, at the ack timeout each.
    flush_timeout: Duration,
    /// Set by [`close`](Self::close), so that no record is accepted after it.
    closed: AtomicBool,
}

impl std::fmt::Debug for NatsAccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAccessLog")
            .field("stream", &self.reader.stream_name())
            .field("retention", &self.retention)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl NatsAccessLog {
    /// Opens the log on `client`: creates its stream when missing (or sets an existing one's
    /// `max_age` to the retention) and starts the publisher task. Must be called within a
    /// tokio runtime.
    ///
    /// # Errors
    /// [`AccessLogError::Unavailable`] when the options are invalid, JetStream does not
    /// answer within `request_timeout`, or the stream exists without the subject.
    pub async fn open(
        client: async_nats::Client,
        options: NatsAccessLogOptions,
    ) -> Result<Self, AccessLogError> {
        options.check()?;
        let max_payload = client.server_info().max_payload;
        let max_message_bytes = options
            .max_message_bytes
            .min(max_payload.saturating_sub(HEADER_ROOM))
            .max(1);
        let js = async_nats::jetstream::context::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client);
        let wanted = stream::Wanted {
            name: &options.stream,
            subject: &options.subject,
            replicas: options.replicas,
            retention: options.retention,
        };
        let stream = tokio::time::timeout(options.request_timeout, stream::ensure(&js, &wanted))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "NATS did not answer within {:?} when asked for the stream {}",
                    options.request_timeout, options.stream
                ))
            })??;
        let reader = Reader::new(stream, options.subject.clone(), options.request_timeout);
        let publisher = Publisher {
            js,
            reader: reader.clone(),
            subject: options.subject.clone(),
            tail: None,
            ack_timeout: options.ack_timeout,
            max_message_bytes,
        };
        let queue_len = options.queue.max(1);
        let rounds = u32::try_from(queue_len.div_ceil(publisher::ROUND)).unwrap_or(u32::MAX);
        let flush_timeout = options.ack_timeout.saturating_mul(rounds.saturating_add(2));
        let (commands, queue) = mpsc::channel(queue_len);
        tokio::spawn(publisher::run(publisher, queue));
        Ok(Self {
            commands,
            reader,
            retention: options.retention,
            clock: options.clock,
            record_wait: options.record_wait,
            ack_timeout: options.ack_timeout,
            flush_timeout,
            closed: AtomicBool::new(false),
        })
    }

    /// Waits until everything recorded so far is acknowledged, then refuses every later
    /// record with [`AccessLogError::Closed`]. For shutdown, once no request is running.
    ///
    /// # Errors
    /// When entries queued before could not be published.
    pub async fn close(&self) -> Result<(), AccessLogError> {
        self.closed.store(true, Ordering::SeqCst);
        self.flush_queue().await
    }

    /// Sends a flush through the queue and waits for its answer, at most `flush_timeout`.
    async fn flush_queue(&self) -> Result<(), AccessLogError> {
        let flush = async {
            let (reply, answer) = oneshot::channel();
            if self.commands.send(Command::Flush(reply)).await.is_err() {
                return Err(AccessLogError::Closed);
            }
            answer.await.unwrap_or(Err(AccessLogError::Closed))
        };
        tokio::time::timeout(self.flush_timeout, flush)
            .await
            .unwrap_or_else(|_| {
                Err(unavailable(format!(
                    "NATS did not acknowledge what was queued within {:?}",
                    self.flush_timeout
                )))
            })
    }

    async fn record_entries(&self, entries: Vec<AccessEntry>) -> Result<(), AccessLogError> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(AccessLogError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        match self
            .commands
            .send_timeout(Command::Record { entries, reply }, self.record_wait)
            .await
        {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => {
                metrics::counter!("closeloop_access_log_refused_total", "reason" => "busy")
                    .increment(1);
                tracing::warn!(
                    wait_ms = self.record_wait.as_millis(),
                    "access log: the queue to NATS stayed full; a read of personal data was refused rather than served unrecorded"
                );
                return Err(AccessLogError::Busy);
            }
            Err(SendTimeoutError::Closed(_)) => return Err(AccessLogError::Closed),
        }
        // The publisher bounds its round by the ack timeout; a record queued behind a slow
        // round may wait for that one too, but never longer.
        let outcome = match tokio::time::timeout(self.ack_timeout * 2, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(AccessLogError::Closed),
            Err(_) => Err(unavailable(format!(
                "NATS did not acknowledge the entries within {:?}",
                self.ack_timeout * 2
            ))),
        };
        if let Err(err) = &outcome {
            metrics::counter!("closeloop_access_log_refused_total", "reason" => "unavailable")
                .increment(1);
            tracing::warn!(%err, "access log: a read of personal data was refused: NATS did not take its entry");
        }
        outcome
    }

    /// Entries before this time are past the retention: a query never returns them, and a
    /// prune removes messages holding only them.
    fn floor(&self) -> Timestamp {
        let cutoff = self.retention.cutoff((self.clock)());
        cutoff
            .checked_sub(SignedDuration::from_nanos(1))
            .unwrap_or(cutoff)
    }

    async fn find(&self, query: AccessQuery) -> Result<Vec<AccessEntry>, AccessLogError> {
        let floor = self.floor();
        let lower = query.after.map_or(floor, |after| after.max(floor));
        let (first, last, messages) = self.reader.bounds().await?;
        if messages == 0 {
            return Ok(Vec::new());
        }
        let Some(start) = self.reader.first_after(lower, first, last).await? else {
            return Ok(Vec::new());
        };
        self.reader.scan(start, last, lower, &query).await
    }

    async fn prune_old(&self) -> Result<(), AccessLogError> {
        let floor = self.floor();
        let (first, last, messages) = self.reader.bounds().await?;
        if messages == 0 {
            return Ok(());
        }
        let keep_from = self
            .reader
            .first_after(floor, first, last)
            .await?
            .unwrap_or(last + 1);
        if keep_from <= first {
            return Ok(());
        }
        let purged = self.reader.purge_before(keep_from).await?;
        if purged > 0 {
            tracing::info!(
                purged,
                retention_days = self.retention.as_days(),
                "access log: removed messages past the retention"
            );
            metrics::counter!("closeloop_access_log_pruned_messages_total").increment(purged);
        }
        Ok(())
    }
}

impl AccessLog for NatsAccessLog {
    fn record(&self, entries: Vec<AccessEntry>) -> BoxFuture<'_, Result<(), AccessLogError>> {
        self.record_entries(entries).boxed()
    }

    fn query(&self, query: AccessQuery) -> BoxFuture<'_, Result<Vec<AccessEntry>, AccessLogError>> {
        self.find(query).boxed()
    }

    fn prune(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        self.prune_old().boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        self.flush_queue().boxed()
    }
}

/// An [`AccessLogError::Unavailable`] with `reason`.
fn unavailable(reason: impl Into<String>) -> AccessLogError {
    AccessLogError::Unavailable(reason.into())
}

/// What went wrong, as text without the wrapping of [`AccessLogError::Unavailable`].
fn reason(err: AccessLogError) -> String {
    match err {
        AccessLogError::Unavailable(reason) => reason,
        other => other.to_string(),
    }
}
