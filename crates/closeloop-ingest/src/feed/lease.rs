//! The shared feed's key-value bucket: the `lease` that says which replica publishes the
//! feed, and the `checkpoint` it publishes from (see the [feed module](super) for the design).
//!
//! Both keys are only ever changed with a compare-and-set on their revision (`create` when
//! absent, `update` with the revision read otherwise), so of two replicas that act on the same
//! reading, one wins and the other learns it lost. Deciding whether a lease may be taken is a
//! pure function of what was read and the time ([`decide`]), tested without NATS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::status::WorkerError;

/// The bucket the shared feed uses unless told otherwise.
pub const DEFAULT_FEED_BUCKET: &str = "CLOSELOOP_FEED";
/// The key of the lease: a [`LeaseRecord`].
pub(crate) const LEASE_KEY: &str = "lease";
/// The key of the checkpoint: a [`CheckpointRecord`].
pub(crate) const CHECKPOINT_KEY: &str = "checkpoint";
/// The largest value the bucket takes: both records are far smaller.
const MAX_VALUE_SIZE: i32 = 1024;

/// The times a lease runs by, all derived from its time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// How long a lease lasts from the moment its holder sent the write that set it.
    pub ttl: Duration,
    /// The safety margin on each side of an expiry: the holder stops publishing this long
    /// before it (by its own monotonic clock), and the others take the lease only this long
    /// after it (by their wall clocks). Clocks may disagree by up to twice this.
    pub margin: Duration,
    /// How often the holder renews the lease, and how often the others read it.
    pub every: Duration,
    /// The longest one request to the bucket may take.
    pub request_timeout: Duration,
}

impl Timing {
    /// The timing of a lease that lives `ttl`: margin `ttl / 4`, renewals and readings every
    /// `ttl / 3`, requests bounded by `ttl / 3`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            margin: ttl / 4,
            every: ttl / 3,
            request_timeout: ttl / 3,
        }
    }

    /// Until when a holder may publish after a write it sent at `sent_at`.
    pub fn valid_until(&self, sent_at: Instant) -> Instant {
        sent_at + self.ttl.saturating_sub(self.margin)
    }
}

/// The value of the `lease` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    /// The holder's replica id (for logs and status).
    pub holder: String,
    /// The holder's process (one start of the NATS side): a process takes back at once only
    /// a lease it wrote itself.
    pub instance: String,
    /// When the lease ends, in milliseconds since the Unix epoch by the holder's wall clock;
    /// [`RELEASED`] when the holder gave it up.
    pub expires_at: i64,
}

/// The `expires_at` of a lease its holder gave up, having stopped publishing first: it may be
/// taken at once, without waiting for a margin.
pub(crate) const RELEASED: i64 = 0;

impl LeaseRecord {
    /// Whether another replica may take this lease at `now_ms` (its wall clock): `margin`
    /// after it ended, or at once when it was given up.
    pub fn is_over(&self, now_ms: i64, margin: Duration) -> bool {
        self.expires_at == RELEASED || now_ms > self.expires_at.saturating_add(millis(margin))
    }
}

/// What a replica read under the `lease` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// No lease: never written (`None`), or deleted (the revision of the delete marker).
    Absent(Option<u64>),
    /// A lease at `revision`.
    Held {
        /// Its value.
        record: LeaseRecord,
        /// Its revision, for the compare-and-set that takes it.
        revision: u64,
    },
}

/// What a replica does about the lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Create it: there is none.
    Create,
    /// Take it over with a compare-and-set on `revision`: it is over, deleted, or this
    /// process's own from an earlier attempt.
    Take(u64),
    /// Leave it to `holder`, whose lease runs.
    Wait {
        /// The replica id of the holder.
        holder: String,
    },
}

/// Decides what the process `instance` does about the lease it saw, at `now_ms` by its wall
/// clock.
pub(crate) fn decide(seen: &Seen, instance: &str, now_ms: i64, margin: Duration) -> Decision {
    match seen {
        Seen::Absent(None) => Decision::Create,
        Seen::Absent(Some(revision)) => Decision::Take(*revision),
        Seen::Held { record, revision }
            if record.instance == instance || record.is_over(now_ms, margin) =>
        {
            Decision::Take(*revision)
        }
        Seen::Held { record, .. } => Decision::Wait {
            holder: record.holder.clone(),
        },
    }
}

/// A lease this replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldLease {
    /// The revision of the lease as this replica last wrote it.
    pub revision: u64,
    /// When this replica sent that write (its monotonic clock).
    pub renewed_at: Instant,
    /// Until when it may publish: [`Timing::valid_until`] of `renewed_at`.
    pub valid_until: Instant,
}

/// Why renewing or writing under the lease failed.
#[derive(Debug)]
pub(crate) enum LeaseError {
    /// Another replica changed the key: the lease (or the right to the checkpoint) is gone.
    Lost,
    /// The request failed or timed out; whether it took effect is unknown.
    Failed(String),
}

/// The value of the `checkpoint` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckpointRecord {
    /// The last position whose feed message JetStream acknowledged, with all before it.
    pub position: u64,
    /// The replica that wrote it.
    pub replica: String,
}

/// The checkpoint as read, with what its next compare-and-set needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedCheckpoint {
    /// The position (0 when none was written).
    pub position: u64,
    /// The key's revision: `None` when it was never written.
    pub revision: Option<u64>,
}

/// The shared feed's bucket, seen by one replica.
#[derive(Debug, Clone)]
pub(crate) struct FeedBucket {
    kv: kv::Store,
    bucket: String,
    replica: String,
    instance: String,
    timing: Timing,
}

impl FeedBucket {
    /// Opens `bucket`, creating it when missing (history 1, file storage, `replicas` copies);
    /// an existing one is used as it is.
    ///
    /// The bucket's stream is created here rather than with `create_key_value`, which asks
    /// for the account's details first and cannot read a 2.9 server's answer; the stream is
    /// the one a key-value bucket is (`KV_<bucket>` on `$KV.<bucket>.>`), so any NATS client
    /// reads it as one.
    pub async fn open(
        js: &Context,
        bucket: &str,
        replicas: usize,
        replica: &str,
        instance: &str,
        timing: Timing,
    ) -> Result<Self, WorkerError> {
        let kv = tokio::time::timeout(SETUP_TIMEOUT, async {
            js.get_or_create_stream(bucket_config(bucket, replicas))
                .await?;
            Ok::<_, async_nats::Error>(js.get_key_value(bucket).await?)
        })
        .await
        .map_err(|_| {
            WorkerError::Setup(format!("timed out opening the key-value bucket {bucket}").into())
        })?
        .map_err(WorkerError::Setup)?;
        Ok(Self {
            kv,
            bucket: bucket.to_owned(),
            replica: replica.to_owned(),
            instance: instance.to_owned(),
            timing,
        })
    }

    /// The lease's timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// This process's instance.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Reads the lease.
    pub async fn read_lease(&self) -> Result<Seen, WorkerError> {
        let entry = self.entry(LEASE_KEY).await?;
        Ok(match entry {
            None => Seen::Absent(None),
            Some(entry) if entry.operation != Operation::Put => Seen::Absent(Some(entry.revision)),
            Some(entry) => Seen::Held {
                record: parse_lease(&entry.value).map_err(|err| {
                    WorkerError::Lease(format!(
                        "the feed lease in the key-value bucket {} is damaged ({err}); delete the key `{LEASE_KEY}` so that a replica writes a new one",
                        self.bucket
                    ))
                })?,
                revision: entry.revision,
            },
        })
    }

    /// Tries to take the lease as `decision` says (`Create` or `Take`): `None` when another
    /// replica changed it first.
    pub async fn acquire(&self, decision: &Decision) -> Result<Option<HeldLease>, WorkerError> {
        let sent_at = Instant::now();
        let value = self.lease_value(wall_ms().saturating_add(millis(self.timing.ttl)))?;
        let written = match decision {
            Decision::Create => self.create(LEASE_KEY, value).await,
            Decision::Take(revision) => self.update(LEASE_KEY, value, *revision).await,
            Decision::Wait { .. } => return Ok(None),
        };
        match written {
            Ok(revision) => Ok(Some(HeldLease {
                revision,
                renewed_at: sent_at,
                valid_until: self.timing.valid_until(sent_at),
            })),
            Err(LeaseError::Lost) => Ok(None),
            Err(LeaseError::Failed(err)) => Err(WorkerError::Lease(format!(
                "cannot take the feed lease in the key-value bucket {}: {err}",
                self.bucket
            ))),
        }
    }

    /// Renews `lease` for another time to live, waiting at most `limit` for the answer.
    pub async fn renew(&self, lease: &mut HeldLease, limit: Duration) -> Result<(), LeaseError> {
        let sent_at = Instant::now();
        let value = self
            .lease_value(wall_ms().saturating_add(millis(self.timing.ttl)))
            .map_err(|err| LeaseError::Failed(err.to_string()))?;
        let revision = tokio::time::timeout(limit, self.update(LEASE_KEY, value, lease.revision))
            .await
            .map_err(|_| LeaseError::Failed("timed out".to_owned()))??;
        *lease = HeldLease {
            revision,
            renewed_at: sent_at,
            valid_until: self.timing.valid_until(sent_at),
        };
        Ok(())
    }

    /// Gives `lease` up (it ends now), so that another replica takes over at its next
    /// reading rather than after the time to live. Best effort: when it fails, the lease
    /// runs out by itself.
    pub async fn release(&self, lease: &HeldLease) {
        let result = match self.lease_value(RELEASED) {
            Ok(value) => self.update(LEASE_KEY, value, lease.revision).await,
            Err(err) => Err(LeaseError::Failed(err.to_string())),
        };
        match result {
            Ok(_) => tracing::info!(replica = %self.replica, "gave up the outbound feed's lease"),
            Err(LeaseError::Lost) => {}
            Err(LeaseError::Failed(err)) => tracing::info!(
                replica = %self.replica,
                %err,
                "cannot give up the outbound feed's lease; it runs out by itself"
            ),
        }
    }

    /// Reads the checkpoint.
    pub async fn read_checkpoint(&self) -> Result<SharedCheckpoint, WorkerError> {
        let entry = self.entry(CHECKPOINT_KEY).await?;
        Ok(match entry {
            None => SharedCheckpoint {
                position: 0,
                revision: None,
            },
            Some(entry) if entry.operation != Operation::Put => SharedCheckpoint {
                position: 0,
                revision: Some(entry.revision),
            },
            Some(entry) => SharedCheckpoint {
                position: serde_json::from_slice::<CheckpointRecord>(&entry.value)
                    .map_err(|err| {
                        WorkerError::Lease(format!(
                            "the feed checkpoint in the key-value bucket {} is damaged ({err}); delete the key `{CHECKPOINT_KEY}`: the next leader then starts from the feed stream's last message",
                            self.bucket
                        ))
                    })?
                    .position,
                revision: Some(entry.revision),
            },
        })
    }

    /// Writes `position` over `checkpoint` with a compare-and-set, waiting at most `limit`.
    pub async fn write_checkpoint(
        &self,
        checkpoint: &mut SharedCheckpoint,
        position: u64,
        limit: Duration,
    ) -> Result<(), LeaseError> {
        let value = serde_json::to_vec(&CheckpointRecord {
            position,
            replica: self.replica.clone(),
        })
        .map_err(|err| LeaseError::Failed(err.to_string()))?;
        let write = async {
            match checkpoint.revision {
                None => self.create(CHECKPOINT_KEY, value).await,
                Some(revision) => self.update(CHECKPOINT_KEY, value, revision).await,
            }
        };
        let revision = tokio::time::timeout(limit, write)
            .await
            .map_err(|_| LeaseError::Failed("timed out".to_owned()))??;
        *checkpoint = SharedCheckpoint {
            position,
            revision: Some(revision),
        };
        Ok(())
    }

    fn lease_value(&self, expires_at: i64) -> Result<Vec<u8>, WorkerError> {
        serde_json::to_vec(&LeaseRecord {
            holder: self.replica.clone(),
            instance: self.instance.clone(),
            expires_at,
        })
        .map_err(|err| WorkerError::Lease(format!("cannot write the feed lease: {err}")))
    }

    async fn entry(&self, key: &str) -> Result<Option<kv::Entry>, WorkerError> {
        tokio::time::timeout(self.timing.request_timeout, self.kv.entry(key))
            .await
            .map_err(|_| self.unreachable(key, "timed out"))?
            .map_err(|err| self.unreachable(key, &err.to_string()))
    }

    fn unreachable(&self, key: &str, err: &str) -> WorkerError {
        WorkerError::Lease(format!(
            "cannot read `{key}` in the key-value bucket {}: {err}",
            self.bucket
        ))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<u64, LeaseError> {
        match tokio::time::timeout(
            self.timing.request_timeout,
            self.kv.create(key, value.into()),
        )
        .await
        {
            Err(_) => Err(LeaseError::Failed("timed out".to_owned())),
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(err)) if err.kind() == CreateErrorKind::AlreadyExists => Err(LeaseError::Lost),
            Ok(Err(err)) => Err(LeaseError::Failed(err.to_string())),
        }
    }

    async fn update(&self, key: &str, value: Vec<u8>, revision: u64) -> Result<u64, LeaseError> {
        match tokio::time::timeout(
            self.timing.request_timeout,
            self.kv.update(key, value.into(), revision),
        )
        .await
        {
            Err(_) => Err(LeaseError::Failed("timed out".to_owned())),
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(err)) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                Err(LeaseError::Lost)
            }
            Ok(Err(err)) => Err(LeaseError::Failed(err.to_string())),
        }
    }
}

/// The stream behind the key-value bucket `bucket`, as NATS clients create one with history 1.
fn bucket_config(bucket: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(
            "Which Closeloop replica publishes the outbound feed, and its checkpoint".to_owned(),
        ),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_message_size: MAX_VALUE_SIZE,
        storage: StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        ..stream::Config::default()
    }
}

/// The longest opening the bucket may take (it may create a replicated stream).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a lease and checks its holder is a replica id as [`super::SharedFeed`] allows one,
/// since it is shown on `/readyz`.
fn parse_lease(value: &[u8]) -> Result<LeaseRecord, String> {
    let record: LeaseRecord = serde_json::from_slice(value).map_err(|err| err.to_string())?;
    super::shared::check_replica(&record.holder)?;
    Ok(record)
}

/// Now by this machine's wall clock, in milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: Duration = Duration::from_millis(2_500);

    fn held(holder: &str, instance: &str, expires_at: i64) -> Seen {
        Seen::Held {
            record: LeaseRecord {
                holder: holder.to_owned(),
                instance: instance.to_owned(),
                expires_at,
            },
            revision: 7,
        }
    }

    #[test]
    fn a_missing_lease_is_created_and_a_deleted_one_taken_at_its_revision() {
        assert_eq!(
            decide(&Seen::Absent(None), "me", 0, MARGIN),
            Decision::Create
        );
        assert_eq!(
            decide(&Seen::Absent(Some(3)), "me", 0, MARGIN),
            Decision::Take(3)
        );
    }

    #[test]
    fn another_replicas_lease_is_taken_only_a_margin_after_it_ends() {
        let lease = held("b", "other", 10_000);
        let wait = Decision::Wait {
            holder: "b".to_owned(),
        };
        assert_eq!(decide(&lease, "me", 9_000, MARGIN), wait);
        assert_eq!(decide(&lease, "me", 10_001, MARGIN), wait);
        assert_eq!(decide(&lease, "me", 12_500, MARGIN), wait);
        assert_eq!(decide(&lease, "me", 12_501, MARGIN), Decision::Take(7));
    }

    #[test]
    fn a_released_lease_is_taken_at_once_and_our_own_at_any_time() {
        assert_eq!(
            decide(&held("b", "other", 0), "me", 1_000, MARGIN),
            Decision::Take(7)
        );
        assert_eq!(
            decide(&held("a", "me", i64::MAX), "me", 0, MARGIN),
            Decision::Take(7)
        );
    }

    #[test]
    fn the_holder_stops_a_margin_before_its_lease_ends() {
        let timing = Timing::new(Duration::from_secs(10));
        assert_eq!(timing.margin, MARGIN);
        assert!(timing.every * 3 <= timing.ttl);
        let sent = Instant::now();
        assert_eq!(
            timing.valid_until(sent) - sent,
            Duration::from_millis(7_500)
        );
        // The holder stops at ttl - margin after it sent the renewal, the others take over
        // at ttl + margin after the time it wrote: clocks may disagree by just under
        // 2 * margin.
        assert!(timing.ttl.saturating_sub(timing.margin) < timing.ttl + timing.margin);
    }

    #[test]
    fn a_lease_with_a_holder_that_is_not_a_replica_id_is_damaged() {
        let good = br#"{"holder":"replica-a","instance":"i","expires_at":5}"#;
        assert_eq!(parse_lease(good).unwrap().holder, "replica-a");
        let bad = br#"{"holder":"<script>","instance":"i","expires_at":5}"#;
        assert!(parse_lease(bad).is_err());
        assert!(parse_lease(b"5").is_err());
    }
}
