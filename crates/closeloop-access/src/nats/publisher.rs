//! The publisher task of a [`NatsAccessLog`](super::NatsAccessLog): it takes the records
//! waiting in its queue a round at a time (group commit), stamps their entries after the
//! stream's newest, and appends them as one message fenced with `Nats-Expected-Last-Sequence`
//! on the tail it knows. When another process appended in between, JetStream refuses the
//! message; the publisher reads the tail again, stamps again and retries, until the round's
//! deadline. Each record hears whether its entries were acknowledged.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::reader::{Reader, Tail};
use super::{reason, unavailable};
use crate::stamp::Stamper;
use crate::{AccessEntry, AccessLogError};

/// Most commands taken off the queue for one round.
pub(crate) const ROUND: usize = 1024;
/// Most times a round re-reads the tail after losing the fence to another writer. Every lost
/// fence is another writer's success, so this only bounds a pathological storm.
const MAX_CONFLICTS: u32 = 64;

/// What the publisher is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Append these entries, then answer.
    Record {
        entries: Vec<AccessEntry>,
        reply: oneshot::Sender<Result<(), AccessLogError>>,
    },
    /// Answer once everything queued before is acknowledged (or has failed).
    Flush(oneshot::Sender<Result<(), AccessLogError>>),
}

/// The publisher's state, moved into its task.
#[derive(Debug)]
pub(crate) struct Publisher {
    pub(crate) js: Context,
    pub(crate) reader: Reader,
    pub(crate) subject: String,
    /// The tail as of this publisher's last append; `None` when it must be read again (at
    /// the start of a round after a lost fence or a failure).
    pub(crate) tail: Option<Tail>,
    /// How long a round may take, conflicts included.
    pub(crate) ack_timeout: Duration,
    /// Largest payload of one message; a larger round is split over several.
    pub(crate) max_message_bytes: usize,
}

/// How one fenced append ended.
enum Appended {
    /// Stored at this sequence.
    Stored(u64),
    /// Another writer appended first.
    LostFence,
}

/// Runs until every handle of the log is gone.
pub(crate) async fn run(mut publisher: Publisher, mut commands: mpsc::Receiver<Command>) {
    let mut round = Vec::with_capacity(ROUND);
    while commands.recv_many(&mut round, ROUND).await > 0 {
        publisher.serve(&mut round).await;
    }
}

impl Publisher {
    /// Appends every record of a round whose caller still waits, then answers them and the
    /// flushes. A round fails or succeeds as a whole.
    async fn serve(&mut self, round: &mut Vec<Command>) {
        let mut entries = Vec::new();
        let mut waiting = Vec::with_capacity(round.len());
        let mut abandoned = 0_usize;
        for command in round.drain(..) {
            match command {
                Command::Record {
                    entries: recorded,
                    reply,
                } => {
                    // A caller that gave up (its request was dropped, or it timed out) shows
                    // nothing, so its entries need not be recorded.
                    if reply.is_closed() {
                        abandoned += recorded.len();
                        continue;
                    }
                    entries.extend(recorded);
                    waiting.push(reply);
                }
                Command::Flush(reply) => waiting.push(reply),
            }
        }
        if abandoned > 0 {
            tracing::debug!(
                abandoned,
                "access log: entries whose caller stopped waiting were not published"
            );
        }
        let outcome = self.append_all(&entries).await;
        match &outcome {
            Ok(()) => {
                metrics::counter!("closeloop_access_log_entries_total")
                    .increment(u64::try_from(entries.len()).unwrap_or(u64::MAX));
            }
            Err(reason) => {
                metrics::counter!("closeloop_access_log_failures_total").increment(1);
                tracing::error!(
                    %reason,
                    entries = entries.len(),
                    "access log: entries could not be published to NATS; the reads they record are refused"
                );
            }
        }
        for reply in waiting {
            // A waiter that gave up needs no answer.
            let _ = reply.send(outcome.clone().map_err(unavailable));
        }
    }

    /// Appends `entries` in order, in as few messages as `max_message_bytes` allows.
    async fn append_all(&mut self, entries: &[AccessEntry]) -> Result<(), String> {
        let deadline = Instant::now() + self.ack_timeout;
        let mut rest = entries;
        let mut conflicts = 0_u32;
        while !rest.is_empty() {
            let tail = match self.tail {
                Some(tail) => tail,
                None => tokio::time::timeout_at(deadline, self.reader.tail())
                    .await
                    .map_err(|_| self.timed_out("read the tail"))?
                    .map_err(reason)?,
            };
            let (payload, taken, newest) = encode(rest, tail.last_at, self.max_message_bytes)?;
            match self.append(tail.seq, payload, deadline).await {
                Ok(Appended::Stored(seq)) => {
                    if seq != tail.seq + 1 {
                        // Only possible if JetStream ignored the fence: the stream's order is
                        // still the log's, but times may not increase into this message.
                        tracing::error!(
                            expected = tail.seq + 1,
                            seq,
                            "access log: a message was stored past its fence"
                        );
                    }
                    self.tail = Some(Tail {
                        seq,
                        last_at: Some(newest),
                    });
                    rest = &rest[taken..];
                }
                Ok(Appended::LostFence) => {
                    self.tail = None;
                    conflicts += 1;
                    metrics::counter!("closeloop_access_log_fence_conflicts_total").increment(1);
                    if conflicts > MAX_CONFLICTS {
                        return Err(format!(
                            "lost the append to other writers {MAX_CONFLICTS} times in a row"
                        ));
                    }
                }
                Err(reason) => {
                    // The message may or may not have been stored: read the tail next time.
                    self.tail = None;
                    return Err(reason);
                }
            }
        }
        Ok(())
    }

    /// Publishes one message fenced on `last_seq` and waits for its acknowledgement.
    async fn append(
        &self,
        last_seq: u64,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<Appended, String> {
        // An expected last sequence of 0 is checked too (measured on nats-server 2.9.10, one
        // node and R3): of two writers starting a new stream, the second loses the fence.
        let message = PublishMessage::build()
            .payload(payload.into())
            .expected_last_sequence(last_seq);
        let ack = tokio::time::timeout_at(
            deadline,
            self.js.send_publish(self.subject.clone(), message),
        )
        .await
        .map_err(|_| self.timed_out("send a message"))?
        .map_err(|err| format!("cannot send to {}: {err}", self.subject))?;
        match tokio::time::timeout_at(deadline, ack).await {
            Err(_) => Err(self.timed_out("acknowledge a message")),
            Ok(Ok(ack)) => Ok(Appended::Stored(ack.sequence)),
            Ok(Err(err)) if err.kind() == PublishErrorKind::WrongLastSequence => {
                Ok(Appended::LostFence)
            }
            Ok(Err(err)) => Err(format!(
                "the stream {} did not store a message: {err}",
                self.reader.stream_name()
            )),
        }
    }

    fn timed_out(&self, what: &str) -> String {
        format!(
            "NATS did not {what} within {:?} (the access log's ack timeout)",
            self.ack_timeout
        )
    }
}

/// Stamps entries from the start of `entries` after `last_at` and encodes them as JSON lines,
/// as many as fit in `max_bytes` (at least one); returns the payload, how many it holds and
/// the time of the last.
fn encode(
    entries: &[AccessEntry],
    last_at: Option<jiff::Timestamp>,
    max_bytes: usize,
) -> Result<(Vec<u8>, usize, jiff::Timestamp), String> {
    let mut stamper = Stamper::after(last_at);
    let mut payload = Vec::with_capacity(max_bytes.min(64 * 1024));
    let mut newest = None;
    let mut taken = 0;
    let mut line = Vec::with_capacity(256);
    for entry in entries {
        let mut entry = entry.clone();
        entry.at = stamper.stamp(entry.at);
        line.clear();
        // Serialising these types cannot fail: they are strings, a time and an enum.
        serde_json::to_writer(&mut line, &entry)
            .map_err(|err| format!("cannot encode an entry: {err}"))?;
        line.push(b'\n');
        if taken > 0 && payload.len() + line.len() > max_bytes {
            break;
        }
        payload.extend_from_slice(&line);
        newest = Some(entry.at);
        taken += 1;
    }
    let newest = newest.ok_or_else(|| "nothing to encode".to_owned())?;
    Ok((payload, taken, newest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::What;
    use crate::conformance::entry;

    #[test]
    fn a_round_is_split_by_size_and_stamped_after_the_tail() {
        let t: jiff::Timestamp = "2026-11-27T09:30:00Z".parse().expect("time");
        let entries: Vec<AccessEntry> = (0..10)
            .map(|i| entry(t, &format!("staff:{i}"), Some("loop-a"), What::Loop))
            .collect();
        // Stamped, every entry's time carries nanoseconds: each line is as long as this one.
        let mut stamped = entries[0].clone();
        stamped.at = t + jiff::SignedDuration::from_nanos(1);
        let line = serde_json::to_vec(&stamped).expect("json").len() + 1;
        let (payload, taken, newest) = encode(&entries, Some(t), line * 3 + 1).expect("encoded");
        assert_eq!(taken, 3);
        assert_eq!(newest, t + jiff::SignedDuration::from_nanos(3));
        let decoded = super::super::reader::decode(&payload).entries;
        let times: Vec<_> = decoded.iter().map(|e| e.at).collect();
        assert_eq!(
            times,
            (1..=3)
                .map(|n| t + jiff::SignedDuration::from_nanos(n))
                .collect::<Vec<_>>()
        );
        // One entry always goes, however small the limit.
        let (_, taken, _) = encode(&entries, None, 1).expect("encoded");
        assert_eq!(taken, 1);
    }
}
