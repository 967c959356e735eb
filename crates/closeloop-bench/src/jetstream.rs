//! `closeloop-bench jetstream`: the JetStream event store beside raw JetStream publishing and
//! the sled store, on one NATS node (R1) and on a 3-node cluster (R3), in one run.
//!
//! The benchmark starts its own servers in temp dirs (never the NATS on 4222): one
//! `nats-server -js` ([`NatsServer`]) and a 3-node cluster routed on loopback
//! ([`NatsCluster`]). On each, every round measures:
//!
//! 1. **raw**, 1 publisher: messages the size of one store entry holding a feedback record,
//!    published to a file-storage stream with the store's replicas, each acknowledgement
//!    awaited before the next publish ([`raw`]);
//!    and once more with the store's headers on every message (a `Nats-Msg-Id` and
//!    `Nats-Expected-Last-Sequence`), to tell what the fence costs from what the store adds;
//! 2. **raw**, [`WRITERS`] publishers, each awaiting its own acknowledgements;
//! 3. the [`JetStreamStore`](closeloop_store_jetstream::JetStreamStore), 1 writer: single-event appends, each awaited ([`appends`]);
//! 4. the store, [`WRITERS`] concurrent writers (tokio tasks) of single-event appends;
//! 5. `read_all` over the log of step 4 from a freshly opened store with no message cache,
//!    so every batch message comes from the server, decoding every event;
//! 6. the time a new store takes to open on the log of step 4 (its index rebuilt from the
//!    stream).
//!
//! Each round also runs the sled store (rows 8 to 11) with 1 and with [`WRITERS`] writers, the same events,
//! through [`crate::store`]'s own functions. The store runs without a key store (personal
//! data plain, like `closeloop-bench store --plain`), and so does sled here, so both do the
//! same work. After the rounds, on each of R1 and R3:
//!
//! 7. **catch-up**: a stream is loaded with `--catch-up-events` events, one append of 25
//!    loops (100 events) at a time so each message holds one append ([`appends::MODERATE`]),
//!    and a new store opens on it, `--repeat` times; and, last of all, **7b** the same on a
//!    log of the largest messages the writer makes (appends of 100 loops, eight at a time,
//!    packed up to NATS's 1 MiB `max_payload`, [`appends::LARGEST`]), opened once. Each open
//!    may take [`appends::OPEN_LIMIT`]; one that takes longer is reported as not opening.
//!
//! 12. **a whole new replica** (store and read models, `closeloop serve`) starting on a log of
//!     about `--catch-up-events` events of demo loops, from the snapshot another replica
//!     shared in the bucket plus a tail of [`replica::TAIL`] events, `--repeat` times
//!     ([`replica`]; needs `closeloop` built beside this binary).
//!
//! Every figure is the median of `--repeat` rounds; [`section`] renders them and judges the
//! targets: the 3-node store with [`WRITERS`] writers at ≥ 50% of raw R3 publishing with
//! [`WRITERS`] publishers, and a new replica serving within [`replica::TARGET`].

mod appends;
mod raw;
mod replica;
mod section;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream;
use closeloop_store::Hash;
use closeloop_store::backend::entry::{self, Header};
use closeloop_store::conformance::feedback;
use closeloop_testkit::{NatsCluster, NatsServer};

use self::appends::{CatchUp, LARGEST, MODERATE};
use self::raw::Headers;
use self::replica::ReplicaStart;
use crate::machine::{self, Machine};
use crate::report;
use crate::store::{self, Measurement, WRITERS};

/// How long connecting to a server, and any JetStream request, may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one measured step may take in all before the benchmark gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Options of `closeloop-bench jetstream`.
#[derive(Debug, clap::Args)]
pub struct JetstreamArgs {
    /// Events for the 64-writer appends, the 64 publishers, read-all and open [default:
    /// 200000, as `closeloop-bench store`; 10000 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: Option<u64>,
    /// Events for the single-writer appends and the single publisher [default: 5000; 500
    /// with --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub single_writer_events: Option<u64>,
    /// Events in the stream a new store catches up on [default: 1000000; 20000 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub catch_up_events: Option<u64>,
    /// Rounds of every measurement; each figure is the median [default: 3; 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub repeat: Option<u16>,
    /// A smoke run: small defaults, figures not worth keeping (so no `--write`).
    #[arg(long, conflicts_with = "write")]
    pub quick: bool,
    /// Write the figures into this markdown file, replacing its jetstream section (the file
    /// is created when missing).
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
}

/// The sizes a run uses: the arguments with their defaults filled in.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Events for steps 2, 4, 5 and 6.
    pub events: u64,
    /// Events for steps 1 and 3.
    pub single: u64,
    /// Events for step 7.
    pub catch_up: u64,
    /// Rounds; figures are medians.
    pub repeat: usize,
}

impl Settings {
    fn from_args(args: &JetstreamArgs) -> Self {
        let (events, single, catch_up, repeat) = if args.quick {
            (10_000, 500, 20_000, 1)
        } else {
            (200_000, 5_000, 1_000_000, 3)
        };
        Self {
            events: args.events.unwrap_or(events),
            single: args.single_writer_events.unwrap_or(single),
            catch_up: args.catch_up_events.unwrap_or(catch_up),
            repeat: args.repeat.map_or(repeat, usize::from),
        }
    }
}

/// Latency percentiles of single operations (a publish and its acknowledgement, an append).
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
}

impl Latency {
    /// The percentiles of `all` (any order).
    fn of(mut all: Vec<Duration>) -> Self {
        all.sort_unstable();
        let at = |percent: f64| {
            let last = all.len().saturating_sub(1);
            let rank = (percent / 100.0 * last as f64).round() as usize;
            all.get(rank.min(last)).copied().unwrap_or_default()
        };
        Self {
            p50: at(50.0),
            p99: at(99.0),
        }
    }
}

/// A rate with the latency of each operation that made it.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// Events (or messages) done in a measured time.
    pub rate: Measurement,
    /// Each one's time.
    pub latency: Latency,
}

/// The figures of one NATS setup (R1 or R3), numbered as in the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct NodeFigures {
    /// 1. Raw, 1 publisher.
    pub raw_single: Timed,
    /// 1b. Raw, 1 publisher with the store's headers.
    pub raw_fenced: Timed,
    /// 2. Raw, [`WRITERS`] publishers.
    pub raw_concurrent: Timed,
    /// 3. The store, 1 writer.
    pub store_single: Timed,
    /// 4. The store, [`WRITERS`] writers.
    pub store_concurrent: Timed,
    /// Stream messages (batches) step 4 wrote, the genesis not counted.
    pub batches: u64,
    /// 5. `read_all` + decode, cold.
    pub read_all: Measurement,
    /// 6. Open at the size of step 4.
    pub open: Measurement,
    /// 7. Open at `--catch-up-events`, on a log of moderate messages.
    pub catch_up: CatchUp,
    /// 7b. The same on a log of the largest messages.
    pub catch_up_largest: CatchUp,
}

/// The sled store's figures on the same run.
#[derive(Debug, Clone, Copy)]
pub struct SledFigures {
    /// 1 writer, each append awaited.
    pub single: Measurement,
    /// [`WRITERS`] concurrent writers.
    pub concurrent: Measurement,
    /// `read_all` + decode.
    pub read_all: Measurement,
    /// Reopen, indexes rebuilt.
    pub reopen: Measurement,
}

/// Everything the run measured.
#[derive(Debug, Clone)]
pub struct JetstreamFigures {
    /// The sizes used.
    pub settings: Settings,
    /// One node, R1.
    pub one_node: NodeFigures,
    /// Three nodes, R3.
    pub cluster: NodeFigures,
    /// The sled store.
    pub sled: SledFigures,
    /// Bytes of each raw message: one store entry holding a feedback record.
    pub message_bytes: usize,
    /// The `nats-server` version.
    pub server_version: String,
    /// The 1-minute load average when the run started.
    pub load_average: Option<f64>,
    /// Step 12, a whole new replica starting on a log of about `settings.catch_up` events:
    /// R1, then R3.
    pub replica_start: [ReplicaStart; 2],
}

/// One of the two NATS setups.
struct Setup {
    /// `R1` or `R3`, for progress lines and stream names.
    label: &'static str,
    urls: Vec<String>,
    replicas: usize,
}

impl Setup {
    /// A new connection to the setup's servers.
    async fn connect(&self) -> Result<async_nats::Client> {
        let client = tokio::time::timeout(
            REQUEST_TIMEOUT,
            async_nats::ConnectOptions::new()
                .connection_timeout(REQUEST_TIMEOUT)
                .request_timeout(Some(REQUEST_TIMEOUT))
                .connect(self.urls.clone()),
        )
        .await
        .with_context(|| format!("the {} NATS servers did not answer in time", self.label))?
        .with_context(|| format!("cannot connect to the {} NATS servers", self.label))?;
        Ok(client)
    }

    /// A JetStream context on `client` whose requests and acknowledgements time out.
    fn jetstream(client: async_nats::Client) -> jetstream::Context {
        jetstream::context::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client)
    }
}

/// Runs every measurement, prints the report and writes it when asked.
///
/// # Errors
/// When a server, a stream or a store fails, when a measurement does not see every event it
/// wrote, or when the report cannot be written.
pub fn run(args: &JetstreamArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures only mean something with --release");
    }
    let settings = Settings::from_args(args);
    let load_average = machine::load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    eprintln!("starting a one-node nats-server and a 3-node cluster in temp dirs…");
    let single = NatsServer::start();
    let cluster = NatsCluster::start(3);
    let setups = [
        Setup {
            label: "R1",
            urls: vec![single.url()],
            replicas: 1,
        },
        Setup {
            label: "R3",
            urls: cluster.url_list(),
            replicas: 3,
        },
    ];
    let figures = runtime.block_on(measure(&setups, settings, load_average))?;
    let machine = Machine::probe(&std::env::temp_dir());
    let section = section::render(&figures, &machine, &report::command_line());
    report::publish(&section, args.write.as_deref())?;
    drop((single, cluster));
    Ok(())
}

/// Every round on both setups and sled, then the catch-up on both setups.
async fn measure(
    setups: &[Setup; 2],
    settings: Settings,
    load_average: Option<f64>,
) -> Result<JetstreamFigures> {
    let server_version = setups[0].connect().await?.server_info().version;
    let message = raw_message();
    let mut rounds: [Vec<Round>; 2] = Default::default();
    let mut sled = Vec::with_capacity(settings.repeat);
    for round in 1..=settings.repeat {
        for (setup, rounds) in setups.iter().zip(&mut rounds) {
            rounds.push(measure_round(setup, round, settings, &message).await?);
        }
        eprintln!(
            "round {round}: sled store, 1 writer ({}) and {WRITERS} writers ({})…",
            settings.single, settings.events
        );
        let single = store::store_single_writer(settings.single, true).await?;
        let (concurrent, read_all, reopen) =
            store::store_concurrent_then_read(settings.events, true).await?;
        sled.push(SledFigures {
            single,
            concurrent,
            read_all,
            reopen,
        });
    }
    let mut moderate = Vec::with_capacity(2);
    for setup in setups {
        eprintln!("{}: 7 catch-up on a log of moderate messages…", setup.label);
        moderate.push(appends::catch_up(setup, settings, MODERATE, settings.repeat).await?);
    }
    // Last, as an open that does not finish in time leaves its follower running.
    let mut largest = Vec::with_capacity(2);
    for setup in setups {
        eprintln!(
            "{}: 7b catch-up on a log of the largest messages…",
            setup.label
        );
        largest.push(appends::catch_up(setup, settings, LARGEST, 1).await?);
    }
    let mut replica_start = Vec::with_capacity(2);
    for setup in setups {
        replica_start.push(replica::measure(setup, settings.catch_up, settings.repeat).await?);
    }
    let [one_node, cluster] = [0, 1].map(|i| node_figures(&rounds[i], moderate[i], largest[i]));
    Ok(JetstreamFigures {
        settings,
        one_node,
        cluster,
        sled: SledFigures {
            single: store::median(sled.iter().map(|s| s.single)),
            concurrent: store::median(sled.iter().map(|s| s.concurrent)),
            read_all: store::median(sled.iter().map(|s| s.read_all)),
            reopen: store::median(sled.iter().map(|s| s.reopen)),
        },
        message_bytes: message.len(),
        server_version,
        load_average,
        replica_start: replica_start
            .try_into()
            .map_err(|_| anyhow::anyhow!("step 12 ran on other than two setups"))?,
    })
}

/// Steps 1 to 6 of one round on one setup.
#[derive(Debug, Clone, Copy)]
struct Round {
    raw_single: Timed,
    raw_fenced: Timed,
    raw_concurrent: Timed,
    store_single: Timed,
    store_concurrent: Timed,
    batches: u64,
    read_all: Measurement,
    open: Measurement,
}

async fn measure_round(
    setup: &Setup,
    round: usize,
    settings: Settings,
    message: &[u8],
) -> Result<Round> {
    let Settings { events, single, .. } = settings;
    let label = setup.label;
    let client = setup.connect().await?;
    let js = Setup::jetstream(client.clone());
    let name = |step: &str| format!("BENCH_{label}_{round}_{step}");

    eprintln!("round {round}, {label}: 1 raw, 1 publisher, {single} messages…");
    let raw_single = raw::publish(
        &js,
        &name("RAW1"),
        setup.replicas,
        1,
        single,
        message,
        Headers::None,
    )
    .await?;
    eprintln!("round {round}, {label}: 1b raw, 1 publisher with the store's headers…");
    let raw_fenced = raw::publish(
        &js,
        &name("RAW1F"),
        setup.replicas,
        1,
        single,
        message,
        Headers::Fenced,
    )
    .await?;
    eprintln!("round {round}, {label}: 2 raw, {WRITERS} publishers, {events} messages…");
    let raw_concurrent = raw::publish(
        &js,
        &name("RAW64"),
        setup.replicas,
        WRITERS,
        events,
        message,
        Headers::None,
    )
    .await?;
    eprintln!("round {round}, {label}: 3 store, 1 writer, {single} events…");
    let store_single =
        appends::append(client.clone(), setup.replicas, &name("LOG1"), 1, single).await?;
    delete_stream(&js, &name("LOG1")).await?;
    eprintln!("round {round}, {label}: 4 store, {WRITERS} writers, {events} events…");
    let log = name("LOG64");
    let store_concurrent =
        appends::append(client.clone(), setup.replicas, &log, WRITERS, events).await?;
    eprintln!("round {round}, {label}: 6 open, 5 read_all, {events} events…");
    let (open, batches) = appends::open(setup, &log, events).await?;
    let read_all = appends::read_all(setup, &log, events).await?;
    delete_stream(&js, &log).await?;
    Ok(Round {
        raw_single,
        raw_fenced,
        raw_concurrent,
        store_single,
        store_concurrent,
        batches,
        read_all,
        open,
    })
}

/// Deletes a stream the benchmark made. Deleting a whole stream is allowed even when it
/// denies deleting messages, as the store's log does.
async fn delete_stream(js: &jetstream::Context, name: &str) -> Result<()> {
    js.delete_stream(name)
        .await
        .with_context(|| format!("cannot delete the benchmark's stream {name}"))?;
    Ok(())
}

/// The medians of `rounds`, with the catch-ups measured after them.
fn node_figures(rounds: &[Round], catch_up: CatchUp, catch_up_largest: CatchUp) -> NodeFigures {
    let timed = |pick: fn(&Round) -> Timed| median_timed(rounds.iter().map(pick));
    let measured = |pick: fn(&Round) -> Measurement| store::median(rounds.iter().map(pick));
    let mut batches: Vec<u64> = rounds.iter().map(|r| r.batches).collect();
    batches.sort_unstable();
    NodeFigures {
        raw_single: timed(|r| r.raw_single),
        raw_fenced: timed(|r| r.raw_fenced),
        raw_concurrent: timed(|r| r.raw_concurrent),
        store_single: timed(|r| r.store_single),
        store_concurrent: timed(|r| r.store_concurrent),
        batches: batches[batches.len() / 2],
        read_all: measured(|r| r.read_all),
        open: measured(|r| r.open),
        catch_up,
        catch_up_largest,
    }
}

/// The median rate, and the median of each percentile, of `all`.
fn median_timed(all: impl Iterator<Item = Timed>) -> Timed {
    let all: Vec<Timed> = all.collect();
    let median_of = |pick: fn(&Latency) -> Duration| {
        let mut values: Vec<Duration> = all.iter().map(|t| pick(&t.latency)).collect();
        values.sort_unstable();
        values[values.len() / 2]
    };
    Timed {
        rate: store::median(all.iter().map(|t| t.rate)),
        latency: Latency {
            p50: median_of(|l| l.p50),
            p99: median_of(|l| l.p99),
        },
    }
}

/// The raw message: the bytes of one store entry holding the store bench's feedback record,
/// as the 64-writer step writes it (its loop id, source and event id, no request digest).
fn raw_message() -> Vec<u8> {
    let record = closeloop_store::record::encode(&feedback("urn:closeloop-bench:w0", "e0"));
    entry::encode(
        &Header {
            version: 1,
            prev_hash: Hash::default(),
            hash: Hash([7; 32]),
            loop_id: "bench-w0-0",
            source: "urn:closeloop-bench:w0",
            event_id: "e0",
            request: None,
        },
        &record,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let millis = |n: u64| Duration::from_millis(n);
        let latency = Latency::of((1..=100).rev().map(millis).collect());
        assert_eq!(latency.p50, millis(51));
        assert_eq!(latency.p99, millis(99));
        let empty = Latency::of(Vec::new());
        assert_eq!(empty.p99, Duration::ZERO);
    }

    #[test]
    fn quick_shrinks_only_what_is_not_given() {
        let args = JetstreamArgs {
            events: Some(7),
            single_writer_events: None,
            catch_up_events: None,
            repeat: None,
            quick: true,
            write: None,
        };
        let settings = Settings::from_args(&args);
        assert_eq!(
            (
                settings.events,
                settings.single,
                settings.catch_up,
                settings.repeat
            ),
            (7, 500, 20_000, 1)
        );
        let full = Settings::from_args(&JetstreamArgs {
            quick: false,
            ..args
        });
        assert_eq!((full.catch_up, full.repeat), (1_000_000, 3));
    }

    #[test]
    fn the_raw_message_is_one_feedback_entry() {
        let message = raw_message();
        let stored = entry::to_stored(1, &message).expect("a valid entry");
        assert_eq!(stored.loop_id.as_str(), "bench-w0-0");
        assert!((300..2_000).contains(&message.len()), "{}", message.len());
    }
}
