//! Shared mode: the replica that holds the lease publishes the feed; the others stand by,
//! reading the lease and the checkpoint, and take over when the lease ends (see the
//! [feed module](super) for the design, its clock assumption and its failure cases).
//!
//! A replica runs [`run`]: it *follows* (reads the lease every `ttl / 3` until it may take
//! it), then *leads*: one future renews the lease ([`keep`]) while another publishes
//! ([`publish`]); whichever ends first ends both, so a replica that cannot renew stops
//! publishing at once. Then it follows again.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use closeloop_store::EventStore;
use tokio::sync::watch;
use tokio::time::Instant;

use super::lease::{
    Decision, FeedBucket, HeldLease, LeaseError, SharedCheckpoint, Timing, decide, wall_ms,
};
use super::{
    CHECKPOINT_EVERY, DEFAULT_FEED_BUCKET, Fence, POSITION_HEADER, Stopped, next_page,
    publish_page, wait_for_more,
};
use crate::IngestOptions;
use crate::status::{Shared, Worker, WorkerError};
use crate::streams::{self, FEED_STREAM};

/// The outbound feed shared by several replicas on one event store
/// ([`FeedMode::Shared`](super::FeedMode::Shared)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFeed {
    /// The key-value bucket that holds the lease and the checkpoint
    /// ([`DEFAULT_FEED_BUCKET`] unless told otherwise); the same for every replica of one
    /// event store. 1 to 64 letters, digits, `_` or `-`.
    pub bucket: String,
    /// How long a lease lasts unless its holder renews it (every third of it): after a
    /// holder crashes, another replica takes over within about `1.6 ×` this. 1 s to 5 min;
    /// 10 s by default. The replicas' wall clocks must agree to within half of it (see the
    /// module docs).
    pub lease_ttl: Duration,
    /// This replica's id, for logs and status (`/readyz` shows the holder's, so it must not
    /// be a secret): 1 to 64 letters, digits, `.`, `_`, `:` or `-`, e.g. its host or pod name.
    /// Each replica should have its own; the lease tells processes apart by themselves, so a
    /// shared id confuses only the status.
    pub replica: String,
}

impl SharedFeed {
    /// The lease's time to live by default.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
    /// The shortest lease allowed.
    pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
    /// The longest lease allowed.
    pub const MAX_LEASE_TTL: Duration = Duration::from_secs(300);

    /// Shared mode for the replica `replica`, with the default bucket and time to live.
    #[must_use]
    pub fn new(replica: impl Into<String>) -> Self {
        Self {
            bucket: DEFAULT_FEED_BUCKET.to_owned(),
            lease_ttl: Self::DEFAULT_LEASE_TTL,
            replica: replica.into(),
        }
    }

    /// Checks the options, saying what to change.
    pub(crate) fn check(&self) -> Result<(), String> {
        check_replica(&self.replica)?;
        let bucket_ok = (1..=64).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !bucket_ok {
            return Err(format!(
                "the feed's key-value bucket {:?} must be 1 to 64 letters, digits, '_' or '-'; the default is {DEFAULT_FEED_BUCKET}",
                self.bucket
            ));
        }
        if !(Self::MIN_LEASE_TTL..=Self::MAX_LEASE_TTL).contains(&self.lease_ttl) {
            return Err(format!(
                "the feed's lease time to live of {:?} must be between {:?} and {:?}; the default is {:?}",
                self.lease_ttl,
                Self::MIN_LEASE_TTL,
                Self::MAX_LEASE_TTL,
                Self::DEFAULT_LEASE_TTL
            ));
        }
        Ok(())
    }
}

/// Checks a replica id: 1 to 64 letters, digits, `.`, `_`, `:` or `-`.
pub(super) fn check_replica(replica: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&replica.len())
        && replica
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the feed's replica id {replica:?} must be 1 to 64 letters, digits, '.', '_', ':' or '-'; use this replica's host or pod name"
        ))
    }
}

/// Pages in a row the fence may stop before the feed gives up: something other than a former
/// lease holder keeps publishing on the stream.
const MAX_FENCED_IN_A_ROW: u32 = 5;

/// Follows and leads in turn until `shutdown` turns true (`Ok`, having given up the lease if
/// it held it) or something fails (an error: the caller tries again after a pause).
pub(super) async fn run<S: EventStore>(
    store: &Arc<S>,
    js: &Context,
    options: &IngestOptions,
    config: &SharedFeed,
    instance: &str,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let mut stream = streams::feed_stream(js, options.replicas)
        .await
        .map_err(WorkerError::Setup)?;
    let bucket = FeedBucket::open(
        js,
        &config.bucket,
        options.replicas,
        &config.replica,
        instance,
        Timing::new(config.lease_ttl),
    )
    .await?;
    shared.set_feed(Worker::Running);
    loop {
        let Some(lease) = follow(&bucket, shared, shutdown).await? else {
            return Ok(());
        };
        match lead(store, js, &mut stream, &bucket, lease, shared, shutdown).await? {
            Led::Shutdown => return Ok(()),
            Led::SteppedDown => {}
        }
    }
}

/// Reads the lease every `ttl / 3` until this replica may take it and does (`Some`), or
/// `shutdown` turns true (`None`). Keeps the status current: the holder, and the shared
/// checkpoint as `feed_published_upto`.
async fn follow(
    bucket: &FeedBucket,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<HeldLease>, WorkerError> {
    let timing = bucket.timing();
    let mut standing_by_for: Option<String> = None;
    loop {
        if *shutdown.borrow() {
            return Ok(None);
        }
        let seen = bucket.read_lease().await?;
        let checkpoint = bucket.read_checkpoint().await?;
        shared.set_feed_published(checkpoint.position);
        let decision = decide(&seen, bucket.instance(), wall_ms(), timing.margin);
        match &decision {
            Decision::Wait { holder } => {
                shared.set_feed_lease_holder(Some(holder));
                if standing_by_for.as_ref() != Some(holder) {
                    tracing::info!(
                        replica = bucket.replica(),
                        %holder,
                        "another replica publishes the outbound feed; standing by"
                    );
                    standing_by_for = Some(holder.clone());
                }
            }
            Decision::Create | Decision::Take(_) => {
                shared.set_feed_lease_holder(None);
                if let Some(lease) = bucket.acquire(&decision).await? {
                    return Ok(Some(lease));
                }
                // Another replica took it first: its lease shows at the next reading.
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(None),
            () = tokio::time::sleep(timing.every) => {}
        }
    }
}

/// How leading ended.
enum Led {
    /// `shutdown` turned true; the lease was given up.
    Shutdown,
    /// The lease ended or was taken: follow again.
    SteppedDown,
}

/// Why publishing stopped without an error.
enum Stop {
    /// `shutdown` turned true.
    Shutdown,
    /// The lease is not this replica's any more, or may not be: why.
    LeaseLost(&'static str),
}

/// Publishes as the lease holder while renewing the lease, until either ends. Gives the lease
/// up on shutdown and on errors, so another replica takes over at once.
async fn lead<S: EventStore>(
    store: &Arc<S>,
    js: &Context,
    stream: &mut Stream,
    bucket: &FeedBucket,
    mut lease: HeldLease,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Led, WorkerError> {
    shared.set_feed_leader(true);
    tracing::info!(
        replica = bucket.replica(),
        "this replica holds the outbound feed's lease and publishes the feed"
    );
    let (until_tx, until) = watch::channel(lease.valid_until);
    let result = tokio::select! {
        why = keep(bucket, &mut lease, &until_tx) => Ok(Stop::LeaseLost(why)),
        result = publish(store, js, stream, bucket, &until, shared, shutdown) => result,
    };
    shared.set_feed_leader(false);
    match result {
        Ok(Stop::Shutdown) => {
            bucket.release(&lease).await;
            Ok(Led::Shutdown)
        }
        Ok(Stop::LeaseLost(why)) => {
            tracing::warn!(
                replica = bucket.replica(),
                "this replica stopped publishing the outbound feed: {why}"
            );
            Ok(Led::SteppedDown)
        }
        Err(err) => {
            bucket.release(&lease).await;
            Err(err)
        }
    }
}

/// Renews `lease` every `ttl / 3`, publishing each new deadline on `until`; retries a failed
/// renewal until the deadline. Returns only when the lease is lost or has run out, saying
/// which.
async fn keep(
    bucket: &FeedBucket,
    lease: &mut HeldLease,
    until: &watch::Sender<Instant>,
) -> &'static str {
    let timing = bucket.timing();
    loop {
        tokio::time::sleep_until(lease.renewed_at + timing.every).await;
        loop {
            let left = lease.valid_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return "its lease ran out before it could renew it";
            }
            match bucket.renew(lease, left).await {
                Ok(()) => {
                    until.send_replace(lease.valid_until);
                    break;
                }
                Err(LeaseError::Lost) => return "another replica took its lease",
                Err(LeaseError::Failed(err)) => {
                    tracing::warn!(
                        replica = bucket.replica(),
                        %err,
                        ?left,
                        "cannot renew the outbound feed's lease; trying again until it runs out"
                    );
                    tokio::time::sleep((timing.every / 4).min(left)).await;
                }
            }
        }
    }
}

/// The end of the feed stream: where the next message must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    /// The stream's last sequence (0 when nothing was ever published).
    sequence: u64,
    /// The position its message carries, when that message can still be read.
    position: Option<u64>,
}

/// Reads the feed stream's tail, within `limit`.
async fn read_tail(stream: &mut Stream, limit: Duration) -> Result<Tail, WorkerError> {
    let read = async {
        let sequence = stream.info().await?.state.last_sequence;
        if sequence == 0 {
            return Ok::<_, async_nats::Error>(Tail {
                sequence,
                position: None,
            });
        }
        let position = match stream.get_raw_message(sequence).await {
            Ok(message) => {
                let position = message
                    .headers
                    .get(POSITION_HEADER)
                    .and_then(|value| value.as_str().parse::<u64>().ok());
                if position.is_none() {
                    tracing::warn!(
                        stream = FEED_STREAM,
                        sequence,
                        "the feed stream's last message has no {POSITION_HEADER} header (only Closeloop should publish on it); continuing from the shared checkpoint"
                    );
                }
                position
            }
            // Removed (by age, or by an operator): the shared checkpoint says where to go on.
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(err) => return Err(err.into()),
        };
        Ok(Tail { sequence, position })
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| {
            WorkerError::Setup(format!("timed out reading the end of {FEED_STREAM}").into())
        })?
        .map_err(WorkerError::Setup)
}

/// Publishes the log from the later of the shared checkpoint and the stream's tail, each page
/// fenced on the stream's last sequence, until `shutdown` turns true, the lease is lost or
/// publishing fails. Writes the checkpoint at most every [`CHECKPOINT_EVERY`], when idle and
/// on shutdown, while the lease holds.
async fn publish<S: EventStore>(
    store: &Arc<S>,
    js: &Context,
    stream: &mut Stream,
    bucket: &FeedBucket,
    until: &watch::Receiver<Instant>,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Stop, WorkerError> {
    let timing = bucket.timing();
    let mut checkpoint = bucket.read_checkpoint().await?;
    let tail = read_tail(stream, timing.request_timeout).await?;
    let mut position = checkpoint.position.max(tail.position.unwrap_or(0));
    let mut last_sequence = tail.sequence;
    shared.set_feed_published(position);
    tracing::info!(
        from = position,
        checkpoint = checkpoint.position,
        stream = FEED_STREAM,
        stream_sequence = last_sequence,
        "publishing stored events to NATS"
    );
    let mut saved_at = Instant::now();
    let mut head = store.subscribe();
    let mut fenced_in_a_row = 0_u32;
    loop {
        if *shutdown.borrow() {
            return Ok(save(bucket, &mut checkpoint, position, until)
                .await
                .unwrap_or(Stop::Shutdown));
        }
        let entries = next_page(store, position, shared, shutdown).await?;
        if entries.is_empty() {
            // Caught up: save now, so that the replicas standing by show no lag.
            if let Some(stop) = save(bucket, &mut checkpoint, position, until).await {
                return Ok(stop);
            }
            saved_at = Instant::now();
            wait_for_more(&mut head, shutdown).await?;
            continue;
        }
        // Read for each page: after a reconnect the server (of a cluster) may be another one.
        let max_payload = js.client().max_payload();
        let fence = Fence {
            last_sequence,
            until,
        };
        let acked = publish_page(js, position, &entries, max_payload, Some(fence)).await?;
        if acked.upto > position {
            metrics::counter!("closeloop_feed_published_total").increment(acked.upto - position);
            position = acked.upto;
            last_sequence = acked.last_sequence;
            shared.set_feed_published(position);
        }
        match acked.stopped {
            None => fenced_in_a_row = 0,
            Some(Stopped::LeaseEnded) => return Ok(Stop::LeaseLost("its lease ran out")),
            Some(Stopped::Fenced) => {
                fenced_in_a_row += 1;
                if fenced_in_a_row > MAX_FENCED_IN_A_ROW {
                    return Err(WorkerError::Fence(format!(
                        "{FEED_STREAM} keeps moving under this replica's fence: another process publishes on it. Every replica on this event store must run the feed in shared mode with the same bucket; stop any that runs it in local mode"
                    )));
                }
                let tail = read_tail(stream, timing.request_timeout).await?;
                tracing::warn!(
                    position,
                    ?tail,
                    "another publisher (a former lease holder) got a message onto the feed stream first; going on from its end"
                );
                position = position.max(tail.position.unwrap_or(0));
                last_sequence = tail.sequence;
                shared.set_feed_published(position);
            }
        }
        if saved_at.elapsed() >= CHECKPOINT_EVERY {
            if let Some(stop) = save(bucket, &mut checkpoint, position, until).await {
                return Ok(stop);
            }
            saved_at = Instant::now();
        }
    }
}

/// Writes `position` as the shared checkpoint when it is ahead of it, if the lease still
/// holds: `Some` when it does not. A failed write is only logged: the stream's tail, not the
/// checkpoint, is where the next leader goes on from when it can read it, and the next write
/// carries the position anyway.
async fn save(
    bucket: &FeedBucket,
    checkpoint: &mut SharedCheckpoint,
    position: u64,
    until: &watch::Receiver<Instant>,
) -> Option<Stop> {
    if position <= checkpoint.position {
        return None;
    }
    let left = until.borrow().saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Some(Stop::LeaseLost("its lease ran out"));
    }
    match bucket.write_checkpoint(checkpoint, position, left).await {
        Ok(()) => None,
        Err(LeaseError::Lost) => Some(Stop::LeaseLost("another replica wrote the checkpoint")),
        Err(LeaseError::Failed(err)) => {
            tracing::warn!(
                position,
                %err,
                "cannot save the outbound feed's checkpoint in its key-value bucket; trying again later"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_mode_defaults_to_the_documented_bucket_and_lease() {
        let config = SharedFeed::new("replica-a");
        assert_eq!(config.bucket, "CLOSELOOP_FEED");
        assert_eq!(config.lease_ttl, Duration::from_secs(10));
        assert_eq!(config.check(), Ok(()));
    }

    #[test]
    fn bad_options_say_what_to_change() {
        let check = |config: SharedFeed| config.check().unwrap_err();
        assert!(check(SharedFeed::new("")).contains("host or pod name"));
        assert!(check(SharedFeed::new("a b")).contains("host or pod name"));
        assert!(check(SharedFeed::new("x".repeat(65))).contains("host or pod name"));
        let bucket = SharedFeed {
            bucket: "feed.lease".to_owned(),
            ..SharedFeed::new("a")
        };
        assert!(check(bucket).contains("the default is CLOSELOOP_FEED"));
        for ttl in [Duration::from_millis(500), Duration::from_secs(301)] {
            let short = SharedFeed {
                lease_ttl: ttl,
                ..SharedFeed::new("a")
            };
            assert!(check(short).contains("must be between"));
        }
        assert_eq!(SharedFeed::new("pod-7.closeloop:a_1").check(), Ok(()));
    }
}
