//! How appends reach a backend's single writer: sealed ahead of it, so the writer — which
//! orders the log and so does its work one batch after another — never stops for the key
//! store's disk (or, with keys in NATS, for a round trip).
//!
//! - An append with nothing personal (an acknowledgement, a status change), or any append of a
//!   store without keys, is encoded on its caller's task and goes straight to the writer.
//! - An append with personal data goes to the **sealer**, one thread that takes every such
//!   append waiting, asks the key store for all their loops' keys at once (new loops' keys
//!   made in one durable step: one fsync for the batch), seals them and passes them on to the
//!   writer's queue in the order it took them. While it waits for the key store, the writer
//!   goes on storing everything else.
//!
//! Every key is durable before the writer can store a record sealed with it, and since one
//! thread makes every key, two first writes to a loop never make two keys (the key store
//! promises that too). A loop's feedback and an acknowledgement sent at once, without waiting
//! for each other, may be stored in either order — as they may whenever two callers race;
//! a caller that waits for its append before sending the next keeps its order.
//!
//! When the key store fails, the backend's `on_failure` is told (the sled store stops: its
//! keys share its disk) and every append the sealer holds hears the error it returns.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::commit::{self, Job, Prepared};
use crate::{AppendError, AppendOutcome, KeyHandle, StoreError};

/// A backend's way in: the writer's queue and, with a key store, the sealer's.
#[derive(Debug)]
pub struct Intake {
    writer: Option<mpsc::Sender<Job>>,
    sealer: Option<mpsc::Sender<Job>>,
}

/// What [`Intake::start`] needs to know.
#[allow(missing_debug_implementations, reason = "it holds a closure")]
pub struct IntakeOptions<F> {
    /// The key store, if personal data is sealed.
    pub keys: Option<KeyHandle>,
    /// How many appends may wait for the sealer before callers are held back.
    pub queue_capacity: usize,
    /// The most events the sealer takes at once.
    pub max_batch_events: usize,
    /// Called with the key store's failure; returns the error every append it held hears.
    pub on_failure: F,
}

impl Intake {
    /// Starts the sealer (when there is a key store) in front of `writer`. Returns the thread
    /// to join on close, before the writer's: the sealer passes on everything it took first.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start<F>(
        writer: mpsc::Sender<Job>,
        options: IntakeOptions<F>,
    ) -> Result<(Self, Option<JoinHandle<()>>), StoreError>
    where
        F: Fn(&str) -> StoreError + Send + 'static,
    {
        let Some(keys) = options.keys else {
            let intake = Self {
                writer: Some(writer),
                sealer: None,
            };
            return Ok((intake, None));
        };
        let (sealer, jobs) = mpsc::channel(options.queue_capacity.max(1));
        let to_writer = writer.clone();
        let max_batch_events = options.max_batch_events.max(1);
        let on_failure = options.on_failure;
        let thread = std::thread::Builder::new()
            .name("closeloop-sealer".into())
            .spawn(move || run_sealer(&keys, jobs, &to_writer, max_batch_events, &on_failure))
            .map_err(|err| StoreError::Backend(format!("cannot start the sealer thread: {err}")))?;
        let intake = Self {
            writer: Some(writer),
            sealer: Some(sealer),
        };
        Ok((intake, Some(thread)))
    }

    /// Sends an append on its way and waits for its outcome.
    ///
    /// # Errors
    /// The append's own outcome, or [`StoreError::Stopped`] once the store is closed.
    pub async fn submit(&self, mut request: Prepared) -> Result<AppendOutcome, AppendError> {
        let closed = || StoreError::Stopped("the store was closed".to_owned());
        let queue = match &self.sealer {
            Some(sealer) if request.needs_keys() => sealer,
            _ => {
                request.finish_unsealed();
                self.writer.as_ref().ok_or_else(closed)?
            }
        };
        let (reply, answer) = oneshot::channel();
        queue
            .send(Job { request, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Whether the writer (or the sealer) is gone, so no append can be stored any more.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.writer.as_ref().is_none_or(mpsc::Sender::is_closed)
            || self.sealer.as_ref().is_some_and(mpsc::Sender::is_closed)
    }

    /// Takes no more appends: once the sealer has passed on what it holds, the writer's queue
    /// closes too.
    pub fn close(&mut self) {
        self.sealer = None;
        self.writer = None;
    }
}

/// The sealer thread: batches of appends with personal data, sealed and passed on in order.
fn run_sealer<F>(
    keys: &KeyHandle,
    mut jobs: mpsc::Receiver<Job>,
    writer: &mpsc::Sender<Job>,
    max_batch_events: usize,
    on_failure: &F,
) where
    F: Fn(&str) -> StoreError,
{
    while let Some(first) = jobs.blocking_recv() {
        let mut events = first.request.event_count();
        let mut batch = vec![first];
        while events < max_batch_events {
            let Ok(job) = jobs.try_recv() else { break };
            events += job.request.event_count();
            batch.push(job);
        }
        match commit::seal(batch.iter_mut().map(|job| &mut job.request), Some(&**keys)) {
            Ok(()) => {
                for job in batch {
                    if let Err(mpsc::error::SendError(job)) = writer.blocking_send(job) {
                        let stopped = StoreError::Stopped("the writer thread ended".to_owned());
                        // A caller that stopped waiting has nothing to hear.
                        let _ = job.reply.send(Err(stopped.into()));
                    }
                }
            }
            Err(reason) => {
                for job in batch {
                    let _ = job.reply.send(Err(on_failure(&reason).into()));
                }
            }
        }
    }
}
