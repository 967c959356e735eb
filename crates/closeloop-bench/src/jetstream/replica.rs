//! Step 12: a whole new replica — event store and read models — starting on a JetStream log of
//! about `--catch-up-events` events, as `closeloop serve` does it.
//!
//! 1. `closeloop demo --store jetstream` loads demo loops into the log through the store
//!    (encrypted under the bench's master key, as in production);
//! 2. a first replica starts on it with an empty data directory and no snapshot in the bucket:
//!    it builds its read models from the whole log, and shares its snapshot in the
//!    `CLOSELOOP_SNAPSHOTS` bucket (the benchmark waits for the copy of its newest one);
//! 3. a tail of feedback is written through it, then it is killed (SIGKILL), so it shares
//!    nothing newer and every new replica has the tail to replay;
//! 4. `--repeat` times, a new replica starts with an empty data directory: it downloads the
//!    snapshot, loads it and replays the rest of the log. Timed from the spawn until
//!    `/readyz` answers 200 with the projector's lag 0 (every event in the read models); then
//!    it is killed too.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use serde_json::json;

use super::Setup;
use crate::service::{self, STAFF_TOKEN, Service, poll};

/// Events per demo loop, on average (a feedback and its follow-ups): loops are
/// `--catch-up-events` divided by this.
const DEMO_EVENTS_PER_LOOP: u64 = 5;
/// Feedback written after the first replica's snapshot: the tail each new replica replays.
pub const TAIL: u64 = 10_000;
/// Writers of the tail.
const TAIL_WRITERS: usize = 32;
/// How long the first replica may take to share a snapshot of its caught-up read models (it
/// copies one at most once a minute).
const SHARE_TIMEOUT: Duration = Duration::from_secs(300);
/// The target: a new replica serving within this of its start at 1,000,000 events.
pub const TARGET: Duration = Duration::from_secs(60);

/// One new replica's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewReplica {
    /// From the spawn until `/readyz` said 200 with the projector's lag 0.
    pub ready: Duration,
    /// The snapshot download, as the replica logged it.
    pub download: Duration,
}

/// Step 12's figures on one setup.
#[derive(Debug, Clone)]
pub struct ReplicaStart {
    /// Demo loops loaded.
    pub loops: u64,
    /// Events in the log when the new replicas started.
    pub events: u64,
    /// Loading the demo loops through the store.
    pub load: Duration,
    /// The first replica: no snapshot, read models built from the whole log.
    pub first_build: Duration,
    /// The position of the shared snapshot.
    pub checkpoint: u64,
    /// Its size.
    pub snapshot_bytes: u64,
    /// Each new replica, in order.
    pub starts: Vec<NewReplica>,
}

impl ReplicaStart {
    /// The median new replica's start (by time to ready).
    #[must_use]
    pub fn median(&self) -> Option<NewReplica> {
        let mut starts = self.starts.clone();
        starts.sort_by_key(|start| start.ready);
        starts.get(starts.len() / 2).copied()
    }
}

/// Runs step 12 on `setup` with a log of about `events` events and `repeat` new replicas.
pub(super) async fn measure(setup: &Setup, events: u64, repeat: usize) -> Result<ReplicaStart> {
    let label = setup.label;
    let binary = service::sibling_binary()?;
    let urls = setup.urls.join(",");
    let replicas = setup.replicas.to_string();
    let env = [
        ("CLOSELOOP_STORE", "jetstream"),
        ("CLOSELOOP_NATS_URL", urls.as_str()),
        ("CLOSELOOP_NATS_REPLICAS", replicas.as_str()),
        ("RUST_LOG", "info"),
    ];

    let loops = events.div_ceil(DEMO_EVENTS_PER_LOOP);
    eprintln!("{label}: 12 loading {loops} demo loops into the JetStream log…");
    let scratch = tempfile::tempdir()?;
    let started = Instant::now();
    service::load_demo_with(&binary, scratch.path(), loops, &env)?;
    let load = started.elapsed();

    let client = reqwest::Client::new();
    let first_dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut first = Service::start_with(&binary, first_dir.path(), &env)?;
    let caught_up = wait_until_caught_up(&client, &first).await?;
    let first_build = started.elapsed();
    eprintln!(
        "{label}: the first replica built its read models from {caught_up} events in {:.1} s; \
         waiting for its snapshot in the bucket…",
        first_build.as_secs_f64()
    );
    let checkpoint = wait_until_shared(&first).await?;
    eprintln!("{label}: snapshot at {checkpoint} shared; writing a tail of {TAIL} feedback…");
    write_tail(&client, &first).await?;
    let head = wait_until_caught_up(&client, &first).await?;
    first.kill();

    let mut starts = Vec::with_capacity(repeat);
    let mut snapshot_bytes = 0;
    for n in 1..=repeat {
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        let mut replica = Service::start_with(&binary, dir.path(), &env)?;
        let at = wait_until_caught_up(&client, &replica).await?;
        let ready = started.elapsed();
        ensure!(
            at == head,
            "new replica {n} caught up at {at} events, not {head}"
        );
        let (download, bytes) = downloaded(&replica).with_context(|| {
            format!(
                "new replica {n} did not take the snapshot from the bucket; its log:\n{}",
                replica.log_tail()
            )
        })?;
        replica.kill();
        eprintln!(
            "{label}: new replica {n} served {head} events {:.2} s after its start (snapshot \
             downloaded in {:.2} s, {} events replayed)",
            ready.as_secs_f64(),
            download.as_secs_f64(),
            head - checkpoint
        );
        snapshot_bytes = bytes;
        starts.push(NewReplica { ready, download });
    }
    Ok(ReplicaStart {
        loops,
        events: head,
        load,
        first_build,
        checkpoint,
        snapshot_bytes,
        starts,
    })
}

/// Waits until `/readyz` answers 200 with the projector's lag 0; returns the events applied.
async fn wait_until_caught_up(client: &reqwest::Client, service: &Service) -> Result<u64> {
    service::wait_for_readyz(client, service, |ready| {
        let projector = &ready["checks"]["projector"];
        (projector["lag"] == 0).then(|| projector["applied"].as_u64())?
    })
    .await
}

/// Waits until the replica has copied its newest saved snapshot to the bucket; returns that
/// snapshot's position.
async fn wait_until_shared(service: &Service) -> Result<u64> {
    let newest = |lines: &[String], message: &str, name: &str| {
        lines
            .iter()
            .filter(|line| line.contains(message))
            .filter_map(|line| field::<u64>(line, name))
            .max()
    };
    let shared = poll(SHARE_TIMEOUT, Duration::from_millis(200), async || {
        let lines = service.log_lines();
        let saved = newest(&lines, "projection snapshot saved", "position")?;
        let shared = newest(
            &lines,
            "snapshot copied to the JetStream bucket",
            "checkpoint",
        )?;
        (shared >= saved).then_some(shared)
    })
    .await;
    shared.with_context(|| {
        format!(
            "the first replica did not share its snapshot within {} s; its log:\n{}",
            SHARE_TIMEOUT.as_secs(),
            service.log_tail()
        )
    })
}

/// Writes [`TAIL`] feedback through `service`, [`TAIL_WRITERS`] at a time.
async fn write_tail(client: &reqwest::Client, service: &Service) -> Result<()> {
    let url = service.url("/v1/feedback");
    let mut writes = futures::stream::iter(0..TAIL)
        .map(|n| {
            let request = client
                .post(&url)
                .bearer_auth(STAFF_TOKEN)
                .header("Idempotency-Key", format!("replica-tail-{n}"))
                .json(&json!({
                    "org_unit": "bench/site-a/ward-1",
                    "channel": "web",
                    "ratings": {"fft": 1 + n % 5},
                }));
            async move {
                let response = request.send().await.context("a tail write failed")?;
                ensure!(
                    response.status() == reqwest::StatusCode::CREATED,
                    "a tail write was answered {}",
                    response.status()
                );
                anyhow::Ok(())
            }
        })
        .buffer_unordered(TAIL_WRITERS);
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(())
}

/// The snapshot download's time and size, as the replica logged them.
fn downloaded(service: &Service) -> Option<(Duration, u64)> {
    let lines = service.log_lines();
    let line = lines
        .iter()
        .find(|line| line.contains("snapshot downloaded from the JetStream bucket"))?;
    let seconds = field::<f64>(line, "seconds")?;
    Some((Duration::from_secs_f64(seconds), field(line, "bytes")?))
}

/// The `name=value` field of a text log line.
fn field<T: std::str::FromStr>(line: &str, name: &str) -> Option<T> {
    let (_, rest) = line.split_once(&format!(" {name}="))?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_text_log_lines() {
        let line = "2026-12-02T17:25:45Z  INFO closeloop::commands::snapshots: read models' \
                    snapshot copied to the JetStream bucket bucket=CLOSELOOP_SNAPSHOTS \
                    checkpoint=880 bytes=530123 seconds=0.02";
        assert_eq!(field(line, "checkpoint"), Some(880));
        assert_eq!(field(line, "bytes"), Some(530_123));
        assert_eq!(field(line, "seconds"), Some(0.02));
        assert_eq!(field::<u64>(line, "position"), None);
    }

    #[test]
    fn the_median_start_is_the_middle_one_by_time_to_ready() {
        let start = |ready| NewReplica {
            ready: Duration::from_secs(ready),
            download: Duration::ZERO,
        };
        let figures = ReplicaStart {
            loops: 1,
            events: 5,
            load: Duration::ZERO,
            first_build: Duration::ZERO,
            checkpoint: 1,
            snapshot_bytes: 1,
            starts: vec![start(9), start(3), start(5)],
        };
        assert_eq!(figures.median(), Some(start(5)));
    }
}
