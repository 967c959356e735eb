//! Closeloop's NATS JetStream side (contract §2): feedback in, dead letters, events out.
//!
//! - [`cloudevent`]: decodes CloudEvents 1.0 messages (structured JSON, or binary mode with
//!   `ce-` headers) into the same domain commands the HTTP API records.
//! - ingestion (`consumer`): the durable pull consumer `closeloop-ingest` on `FEEDBACK`;
//!   each message is recorded through the store's one write path and acked only once its
//!   outcome is durable.
//! - [`dead_letter`]: messages that cannot be stored go to `FEEDBACK_DLQ` with their reason;
//!   admins list and re-drive them. `dlq_retention` erases each shortly before the stream's
//!   `max_age`.
//! - the outbound feed (`feed`): every stored event on `closeloop.events.<type suffix>`, in
//!   position order, from a checkpoint that survives restarts, without its personal data.
//!   With several replicas on one event store ([`FeedMode::Shared`]), one at a time publishes
//!   it, holding a lease in a key-value bucket that also keeps the checkpoint.
//! - [`streams`] creates the streams; `migration` moves an older `FEEDBACK` with limits
//!   retention to work-queue retention, so that no message outlives its ingestion.
//!
//! [`start`] runs ingestion, the feed and the dead-letter sweep in the background. Neither needs NATS to be up: the
//! client connects (and reconnects) with back-off, and each worker sets its streams up again
//! after every failure, so the HTTP API keeps serving while NATS is away.

pub mod cloudevent;
mod consumer;
pub mod dead_letter;
mod dlq_retention;
mod feed;
mod migration;
mod status;
pub mod streams;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::ConnectOptions;
use closeloop_store::EventStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use consumer::Outcome;
pub use dead_letter::{DeadLetter, DeadLetterError, DeadLetters, Redriven};
pub use feed::{
    DEFAULT_FEED_BUCKET, FeedMode, PERSONAL_DATA_ATTRIBUTE, POSITION_HEADER, SharedFeed,
};
pub use migration::PUBLISHED_AT_HEADER;
pub use status::{Connection, FeedLease, NatsStatus, Worker};
pub use streams::ConsumerLimits;

use crate::status::{Shared, WorkerError};

/// How ingestion and the feed run; the defaults suit production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    /// The NATS server(s), e.g. `nats://127.0.0.1:4222`; comma-separated for a cluster, e.g.
    /// `nats://n1:4222,nats://n2:4222,nats://n3:4222`.
    pub url: String,
    /// Where the feed keeps its checkpoint (a file in the data directory) in
    /// [`FeedMode::Local`]; unused in [`FeedMode::Shared`].
    pub feed_checkpoint: PathBuf,
    /// Whether this process alone publishes the outbound feed ([`FeedMode::Local`], the
    /// default: checkpoint in [`feed_checkpoint`](Self::feed_checkpoint)) or takes turns with
    /// other replicas on the same event store ([`FeedMode::Shared`]: a lease and the
    /// checkpoint in a key-value bucket).
    pub feed: FeedMode,
    /// Copies of each stream Closeloop creates: 1 for a single server, 3 for a cluster.
    pub replicas: usize,
    /// How many messages are pulled and recorded at a time at most.
    pub batch: usize,
    /// How long a batch waits for more messages after its first while messages come thick
    /// and fast (the batch before held at least an eighth of `batch`): fuller batches share
    /// fsyncs. At a quiet time a batch takes what has arrived and goes, without this latency.
    pub gather: Duration,
    /// How the ingest consumer is created (when it does not exist yet).
    pub limits: ConsumerLimits,
    /// How many deliveries a follow-up for a loop that does not exist (yet) gets before it is
    /// dead-lettered as `unknown_loop`.
    pub unknown_loop_attempts: i64,
    /// The first wait before such a follow-up is delivered again; it doubles each time.
    pub unknown_loop_backoff: Duration,
    /// The bounds on each event's data and times (an operator may lower the defaults).
    pub input_limits: closeloop_domain::Limits,
    /// How long dead letters are kept: `FEEDBACK_DLQ`'s `max_age`, set on every start.
    /// Closeloop erases each dead letter in the last two sweeps before it (see
    /// `dlq_retention`).
    pub dead_letter_max_age: Duration,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            feed_checkpoint: PathBuf::from("data/feed.checkpoint"),
            feed: FeedMode::Local,
            replicas: 1,
            batch: 1024,
            gather: Duration::from_millis(5),
            limits: ConsumerLimits {
                ack_wait: Duration::from_secs(30),
                max_deliver: -1,
                max_ack_pending: 20_000,
            },
            unknown_loop_attempts: 5,
            unknown_loop_backoff: Duration::from_millis(500),
            input_limits: closeloop_domain::Limits::DEFAULT,
            dead_letter_max_age: streams::DLQ_DEFAULT_MAX_AGE,
        }
    }
}

/// Why the NATS side could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot use NATS at {url}: {reason}")]
pub struct StartError {
    url: String,
    reason: String,
}

/// The running NATS side: a [`NatsHandle`] for the HTTP API, and the task to await on
/// shutdown.
#[derive(Debug)]
pub struct Running {
    /// Status and dead-letter administration.
    pub handle: NatsHandle,
    /// Ends once both workers have stopped after `shutdown` turned true.
    pub task: JoinHandle<()>,
}

/// What the HTTP API needs of the NATS side: its status and the dead letters.
#[derive(Debug, Clone)]
pub struct NatsHandle {
    client: async_nats::Client,
    shared: Arc<Shared>,
    dead_letters: DeadLetters,
}

impl NatsHandle {
    /// The connection and both workers, for `/readyz`. `head` is the store's head, to report
    /// the feed's lag.
    #[must_use]
    pub fn status(&self, head: u64) -> NatsStatus {
        self.shared
            .snapshot(self.client.connection_state().into(), head)
    }

    /// Lists and re-drives dead letters.
    #[must_use]
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }
}

/// Connects to NATS in the background and starts ingestion, the outbound feed and the
/// dead-letter sweep, until `shutdown` turns true.
///
/// # Errors
/// [`StartError`] when the URL or the feed's options cannot be used at all (a configuration
/// mistake). An unreachable server is not an error: the client keeps trying with back-off.
pub async fn start<S: EventStore + 'static>(
    store: Arc<S>,
    options: IngestOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<Running, StartError> {
    options.feed.check().map_err(|reason| StartError {
        url: options.url.clone(),
        reason,
    })?;
    // Tells this start's lease apart from any other process's, even one that (wrongly) uses
    // the same replica id, so that it only ever takes back a lease it wrote itself.
    let instance = uuid::Uuid::new_v4().to_string();
    let client = ConnectOptions::new()
        .name("closeloop")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting");
                }
                // async-nats logs these itself; repeated while the server is unreachable.
                other => tracing::debug!(event = %other, "NATS event"),
            }
        })
        .connect(server_urls(&options.url))
        .await
        .map_err(|err| StartError {
            url: options.url.clone(),
            reason: err.to_string(),
        })?;
    let js = streams::context(client.clone());
    let shared = Arc::new(Shared::default());
    if let FeedMode::Shared(config) = &options.feed {
        shared.join_feed_lease(&config.replica);
    }
    let handle = NatsHandle {
        client,
        shared: Arc::clone(&shared),
        dead_letters: DeadLetters::new(js.clone()),
    };
    let task = tokio::spawn(async move {
        let ingest = supervise(
            "ingestion",
            Shared::set_ingest,
            &shared,
            shutdown.clone(),
            {
                let (store, js, options, shared) = (&store, &js, &options, &shared);
                move |mut stop| async move { consumer::run(store, js, options, shared, &mut stop).await }
            },
        );
        let feed = supervise(
            "outbound feed",
            Shared::set_feed,
            &shared,
            shutdown.clone(),
            {
                let (store, js, options, shared, instance) =
                    (&store, &js, &options, &shared, &instance);
                move |mut stop| async move {
                    feed::run(store, js, options, instance, shared, &mut stop).await
                }
            },
        );
        let sweep = dlq_retention::run(js.clone(), options.dead_letter_max_age, shutdown.clone());
        futures::join!(ingest, feed, sweep);
        shared.set_ingest(Worker::Stopped);
        shared.set_feed(Worker::Stopped);
        flush_acks(&js.client()).await;
    });
    Ok(Running { handle, task })
}

/// How long shutdown waits for the last acks to reach NATS: a client that is not connected
/// never flushes, and shutdown must not hang on it (unsent acks mean redeliveries, which are
/// recognised as duplicates).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends the acks still buffered, waiting at most [`FLUSH_TIMEOUT`].
pub(crate) async fn flush_acks(client: &async_nats::Client) {
    match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot flush the last acks to NATS; those messages will be redelivered");
        }
        Err(_) => {
            tracing::warn!(
                "NATS is unreachable, so any acks still buffered were not sent; those messages will be redelivered"
            );
        }
    }
}

/// Runs `work` until it returns `Ok` (shutdown) or `shutdown` turns true; after each failure,
/// records it, marks the worker as starting (`set_state`), waits with back-off and runs it
/// again.
async fn supervise<F, Fut>(
    name: &'static str,
    set_state: fn(&Shared, Worker),
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
    work: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), WorkerError>>,
{
    let mut failures = 0_u32;
    while !*shutdown.borrow() {
        match work(shutdown.clone()).await {
            Ok(()) => break,
            Err(err) => {
                failures += 1;
                let delay = reconnect_delay(failures as usize);
                tracing::warn!(worker = name, %err, retry_in = ?delay, "NATS worker failed; starting it again");
                shared.set_error(name, &err);
                set_state(shared, Worker::Starting);
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The servers of a comma-separated URL list, e.g. `nats://n1:4222,nats://n2:4222`.
pub fn server_urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// 250 ms doubling per attempt, at most 10 s.
fn reconnect_delay(attempts: usize) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).min(6)).unwrap_or(6);
    Duration::from_millis(250)
        .saturating_mul(1 << doublings)
        .min(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_list_names_each_server() {
        assert_eq!(
            server_urls("nats://127.0.0.1:4222"),
            ["nats://127.0.0.1:4222"]
        );
        assert_eq!(
            server_urls("nats://n1:4222, nats://n2:4222,,nats://n3:4222"),
            ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
        );
    }

    #[test]
    fn reconnect_delays_grow_to_ten_seconds() {
        assert_eq!(reconnect_delay(1), Duration::from_millis(250));
        assert_eq!(reconnect_delay(2), Duration::from_millis(500));
        assert_eq!(reconnect_delay(100), Duration::from_secs(10));
    }
}
