//! `closeloop-bench ingest`: NATS ingestion beside a raw JetStream consumer, and the latency
//! from publish to the outbound feed.
//!
//! On a private `nats-server` (JetStream, file storage, in a temp dir):
//!
//! 1. `--events` CloudEvents are published to `FEEDBACK` beforehand: loops of a
//!    `feedback.received` and a `loop.acknowledged`, in that order;
//! 2. **raw**: the same messages, loaded (untimed) into a work-queue stream of their own as
//!    `FEEDBACK` is one, are pulled in batches and acked (explicit acks, no other work) by a
//!    durable pull consumer: the ceiling for anything that consumes them;
//! 3. **drain**: Closeloop's NATS side ([`closeloop_ingest::start`], as `closeloop serve`
//!    runs it, over a fresh sled store in the temp dir that seals personal data with each
//!    loop's key from a file key store, with the projector keeping read models
//!    beside it) consumes them; timed from start until the store's durable head holds every
//!    event, until the read models have applied every event (what `GET /v1/loops` answers
//!    from), and until every event is on the feed.
//!
//! Steps 2 and 3 run `--repeat` times and the medians are reported. A work queue removes what
//! is acked, so each round loads both streams again (untimed) and makes the consumers, the
//! feed stream and the store afresh.
//! 4. **latency**: with the service running and the backlog gone, events are published at a
//!    steady `--rate` for `--seconds`; each one's time from publish to its arrival on
//!    `closeloop.events.*` (a core NATS subscription) is recorded, and p50/p99 reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use closeloop_ingest::{IngestOptions, streams};
use closeloop_projections::{
    Projections, ProjectionsError, ProjectorOptions, ReadModels, run_projector,
};
use closeloop_store::{EventStore, SledStore};
use closeloop_testkit::NatsServer;
use futures::StreamExt;
use serde_json::json;

use crate::machine::Machine;
use crate::report;

/// Acks awaited at a time while loading.
const PUBLISH_WINDOW: usize = 1000;
/// Messages per pull in the raw measurement, as ingestion pulls.
const RAW_BATCH: usize = 1024;
/// The work-queue stream of the raw measurement, its subject and its consumer.
const RAW_STREAM: &str = "BENCH_RAW";
const RAW_SUBJECT: &str = "bench.raw";
const RAW_CONSUMER: &str = "bench-raw";

/// Options of `closeloop-bench ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// CloudEvents pre-loaded into FEEDBACK for the drain and raw measurements.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(2..))]
    pub events: u64,
    /// Events per second in the latency measurement.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// How long the latency measurement publishes.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// How many times the raw consumer and the drain run (each drain over a fresh store);
    /// their figures are the medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub repeat: u16,
    /// Write the figures into this markdown file, replacing its ingest section.
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
}

/// What the run measured.
#[derive(Debug, Clone)]
pub struct IngestFigures {
    /// Messages pre-loaded.
    pub events: u64,
    /// Rounds of the raw and drain measurements (medians reported).
    pub repeat: u16,
    /// Pre-loading: publishes with acks awaited in windows.
    pub load: Duration,
    /// Raw pull-consume-and-ack of every message.
    pub raw: Duration,
    /// Closeloop: from start until every event was durably stored.
    pub drain: Duration,
    /// From the same start until the read models had applied every event.
    pub projected: Duration,
    /// From the same start until every stored event was on the feed.
    pub feed_caught_up: Duration,
    /// Events published at a steady rate for the latency measurement.
    pub latency_events: u64,
    /// The steady rate.
    pub rate: u64,
    /// Publish-to-feed latencies, sorted.
    pub latencies: Vec<Duration>,
}

impl IngestFigures {
    fn per_second(events: u64, elapsed: Duration) -> f64 {
        events as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Raw consume-and-ack messages/s.
    #[must_use]
    pub fn raw_rate(&self) -> f64 {
        Self::per_second(self.events, self.raw)
    }

    /// Durably stored events/s while draining.
    #[must_use]
    pub fn drain_rate(&self) -> f64 {
        Self::per_second(self.events, self.drain)
    }

    /// Events/s from the start of the drain until the read models showed every one.
    #[must_use]
    pub fn projected_rate(&self) -> f64 {
        Self::per_second(self.events, self.projected)
    }

    /// Events/s from the start of the drain until every one was on the feed.
    #[must_use]
    pub fn feed_rate(&self) -> f64 {
        Self::per_second(self.events, self.feed_caught_up)
    }

    /// The latency at `percent` (0–100).
    #[must_use]
    pub fn latency(&self, percent: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (percent / 100.0 * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }
}

/// Runs the benchmark and prints (and maybe writes) its section.
///
/// # Errors
/// When the server cannot be started or a step fails.
pub fn run(args: &IngestArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = runtime.block_on(measure(args))?;
    let machine = Machine::probe(&std::env::temp_dir());
    let section = report::ingest_section(&figures, &machine, &report::command_line());
    report::publish(&section, args.write.as_deref())?;
    Ok(())
}

async fn measure(args: &IngestArgs) -> Result<IngestFigures> {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client.clone());
    let feedback = streams::feedback_stream(&js, 1)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let raw_stream = js
        .create_stream(jetstream::stream::Config {
            name: RAW_STREAM.to_owned(),
            subjects: vec![RAW_SUBJECT.to_owned()],
            ..streams::feedback_config(1)
        })
        .await?;

    eprintln!("loading {} CloudEvents into FEEDBACK…", args.events);
    let loops = args.events / 2;
    let loaded = load(&js, "feedback.bench", loops).await?;
    let events = loops * 2;

    let mut raws = Vec::with_capacity(usize::from(args.repeat));
    let mut drains = Vec::with_capacity(usize::from(args.repeat));
    let mut projections = Vec::with_capacity(usize::from(args.repeat));
    let mut feeds = Vec::with_capacity(usize::from(args.repeat));
    let mut service = None;
    for round in 1..=args.repeat {
        eprintln!("round {round} of {}: raw pull consumer…", args.repeat);
        load(&js, RAW_SUBJECT, loops).await?;
        raws.push(raw_consume(&client, &raw_stream, events).await?);
        if let Some(previous) = service.take() {
            // A fresh start: no ingest consumer, no feed stream, an empty store, and the
            // messages the last round drained (and so removed) loaded again.
            stop_service(previous).await?;
            feedback.delete_consumer(streams::INGEST_CONSUMER).await?;
            js.delete_stream(streams::FEED_STREAM).await?;
            load(&js, "feedback.bench", loops).await?;
        }
        eprintln!("round {round}: Closeloop draining the same messages…");
        let (running, drained) = drain(&server, events).await?;
        eprintln!(
            "round {round}: stored {events} events in {:.2} s, all in the read models after {:.2} s, all on the feed after {:.2} s",
            drained.stored.as_secs_f64(),
            drained.projected.as_secs_f64(),
            drained.fed.as_secs_f64()
        );
        drains.push(drained.stored);
        projections.push(drained.projected);
        feeds.push(drained.fed);
        service = Some(running);
    }
    let service = service.context("at least one round")?;

    eprintln!("latency: {} events/s for {} s…", args.rate, args.seconds);
    let latencies = latency(&client, &js, args.rate, args.seconds).await?;

    stop_service(service).await?;
    Ok(IngestFigures {
        events,
        repeat: args.repeat,
        load: loaded,
        raw: median(raws),
        drain: median(drains),
        projected: median(projections),
        feed_caught_up: median(feeds),
        latency_events: args.rate * args.seconds,
        rate: args.rate,
        latencies,
    })
}

/// Publishes `loops` loops' events to `subject` with [`PUBLISH_WINDOW`] acks in flight; how
/// long it took.
async fn load(js: &jetstream::Context, subject: &str, loops: u64) -> Result<Duration> {
    let start = Instant::now();
    let mut acks = Vec::with_capacity(PUBLISH_WINDOW);
    for n in 0..loops {
        for event in loop_events("load", n) {
            acks.push(js.send_publish(subject.to_owned(), publish(&event)).await?);
            if acks.len() >= PUBLISH_WINDOW {
                for ack in acks.drain(..) {
                    ack.await?;
                }
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    Ok(start.elapsed())
}

/// Closeloop's NATS side over a fresh store, with the projector, as `closeloop serve` runs
/// them.
struct Service {
    store: Arc<SledStore>,
    stop: tokio::sync::watch::Sender<bool>,
    running: closeloop_ingest::Running,
    projector: tokio::task::JoinHandle<Result<(), ProjectionsError>>,
    _dir: tempfile::TempDir,
}

/// When a drain's events were all stored, all in the read models and all on the feed, from
/// its start.
struct Drained {
    stored: Duration,
    projected: Duration,
    fed: Duration,
}

/// A raw durable pull consumer pulls and acks `events` messages of `stream`; how long it
/// took. The consumer is deleted afterwards (a work queue takes one at a time).
async fn raw_consume(
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    events: u64,
) -> Result<Duration> {
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(RAW_CONSUMER.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ..pull::Config::default()
        })
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(RAW_BATCH)
        .messages()
        .await?;
    let start = Instant::now();
    let mut consumed = 0;
    while consumed < events {
        let message = messages
            .next()
            .await
            .context("the raw consumer's stream ended")??;
        message
            .ack_with(AckKind::Ack)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        consumed += 1;
    }
    client.flush().await?;
    let elapsed = start.elapsed();
    drop(messages);
    stream.delete_consumer(RAW_CONSUMER).await?;
    Ok(elapsed)
}

/// Starts Closeloop's NATS side and the projector over a fresh store; returns them once every
/// one of the `events` waiting in `FEEDBACK` is durably stored, in the read models and on the
/// feed, each timed from the start.
async fn drain(server: &NatsServer, events: u64) -> Result<(Service, Drained)> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(
        &dir.path().join("store"),
        &crate::store::store_options(dir.path(), false)?,
    )?);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let options = IngestOptions {
        url: server.url(),
        feed_checkpoint: dir.path().join("feed.checkpoint"),
        ..IngestOptions::default()
    };
    let mut head = store.subscribe();
    let projections = Arc::new(Projections::new(ReadModels::new()));
    let mut applied = projections.subscribe();
    let start = Instant::now();
    let projector = {
        let mut stopping = stopping.clone();
        tokio::spawn(run_projector(
            Arc::clone(&store),
            projections,
            ProjectorOptions::default(),
            async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            },
        ))
    };
    let running = closeloop_ingest::start(Arc::clone(&store), options, stopping).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let in_time = "the drain did not finish in 10 minutes";
    tokio::time::timeout_at(deadline, head.wait_for(|&head| head >= events))
        .await
        .context(in_time)??;
    let stored = start.elapsed();
    ensure!(
        store.head() == events,
        "stored {} of {events}",
        store.head()
    );
    tokio::time::timeout_at(deadline, applied.wait_for(|&applied| applied >= events))
        .await
        .context(in_time)??;
    let projected = start.elapsed();
    while running.handle.status(events).feed_lag > 0 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the feed did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let fed = start.elapsed();
    let service = Service {
        store,
        stop,
        running,
        projector,
        _dir: dir,
    };
    Ok((
        service,
        Drained {
            stored,
            projected,
            fed,
        },
    ))
}

async fn stop_service(service: Service) -> Result<()> {
    service.stop.send(true).ok();
    service.running.task.await?;
    service.projector.await??;
    let store = Arc::into_inner(service.store).context("the store is still shared")?;
    store.close().await;
    Ok(())
}

/// The median of `durations` (the upper one of an even count).
fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort_unstable();
    durations
        .get(durations.len() / 2)
        .copied()
        .unwrap_or_default()
}

/// Publishes `rate` feedback events a second for `seconds`, each timed until it shows up on
/// the feed; returns the latencies sorted.
async fn latency(
    client: &async_nats::Client,
    js: &jetstream::Context,
    rate: u64,
    seconds: u64,
) -> Result<Vec<Duration>> {
    let total = rate * seconds;
    let mut feed = client
        .subscribe(format!("{}.>", streams::FEED_SUBJECT_PREFIX))
        .await?;
    client.flush().await?;
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let publisher = {
        let js = js.clone();
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate)?);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut acks = Vec::new();
            for n in 0..total {
                ticker.tick().await;
                let event = &loop_events("steady", n)[0];
                let id = event["id"].as_str().unwrap_or_default().to_owned();
                sent.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(id, Instant::now());
                acks.push(js.send_publish("feedback.bench", publish(event)).await?);
                if acks.len() >= PUBLISH_WINDOW {
                    for ack in acks.drain(..) {
                        ack.await?;
                    }
                }
            }
            for ack in acks {
                ack.await?;
            }
            anyhow::Ok(())
        })
    };
    let mut latencies = Vec::with_capacity(usize::try_from(total)?);
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    while (latencies.len() as u64) < total {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(message)) = tokio::time::timeout(remaining, feed.next()).await else {
            bail!(
                "only {} of {total} events reached the feed in time",
                latencies.len()
            );
        };
        let arrived = Instant::now();
        let body: serde_json::Value = serde_json::from_slice(&message.payload)?;
        let Some(id) = body["id"].as_str() else {
            continue;
        };
        let published = sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        if let Some(published) = published {
            latencies.push(arrived - published);
        }
    }
    publisher.await??;
    latencies.sort_unstable();
    Ok(latencies)
}

/// A loop's two CloudEvents: its feedback, then an acknowledgement.
fn loop_events(run: &str, n: u64) -> [serde_json::Value; 2] {
    let loop_id = format!("bench-{run}-{n}");
    [
        json!({
            "specversion": "1.0", "id": format!("{run}-fb-{n}"), "source": "urn:bench:kiosk",
            "type": "org.closeloop.feedback.received", "subject": loop_id,
            "time": "2026-11-27T09:30:00Z", "datacontenttype": "application/json",
            "data": {"org_unit": format!("rxx/site-{}/ward-{}", n % 3, n % 20), "channel": "survey",
                     "ratings": {"fft": 1 + n % 6}, "themes": ["waiting", "staff attitude"],
                     "story": "The staff were kind, but I waited four hours to be seen and nobody told me why."},
        }),
        json!({
            "specversion": "1.0", "id": format!("{run}-ack-{n}"), "source": "urn:bench:kiosk",
            "type": "org.closeloop.loop.acknowledged", "subject": loop_id,
            "time": "2026-11-27T09:35:00Z", "data": {"by": "pals"},
        }),
    ]
}

fn publish(event: &serde_json::Value) -> PublishMessage {
    PublishMessage::build().payload(event.to_string().into_bytes().into())
}
