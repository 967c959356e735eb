//! `closeloop-bench store`: the sled event store beside raw sled, and beside PostgreSQL doing
//! the same work.
//!
//! Ten measurements, each in a fresh temp dir (or a fresh table), timed with [`Instant`]:
//!
//! 1. raw sled, 1 writer: `insert` + `flush` + `fdatasync` per record;
//! 2. [`SledStore`], 1 writer: one single-event append at a time, each awaited;
//! 3. raw sled, batches of 64: one `apply_batch` + one `flush` + one `fdatasync` per 64
//!    records;
//! 4. [`SledStore`], 64 concurrent writers (tokio tasks) of single-event appends;
//! 5. raw sled: scan the tree of step 3 and decode every value as a `serde_json::Value`;
//! 6. [`SledStore`]: page through `read_all` over the store of step 4 and decode every
//!    entry into its typed event;
//! 7. [`SledStore`]: reopen the store of step 4, rebuilding its in-memory indexes;
//! 8. PostgreSQL, 1 writer: one autocommit `INSERT` per event into an event table, each
//!    awaited (the work of step 2);
//! 9. PostgreSQL, 64 connections inserting at once (the work of step 4);
//! 10. PostgreSQL: read the table of step 9 in keyset pages of 4096 and decode every payload
//!     into its typed event (the work of step 6).
//!
//! Raw sled writes the record bytes of a realistic `feedback.received` event under 8-byte
//! big-endian keys; the store writes its own entries (header with chain hashes and
//! idempotency key, then the record; one sled key per event, indexes kept in memory) for
//! loops of four events: a feedback, then three acknowledgements. PostgreSQL writes the same
//! loops, the store's record bytes as `jsonb`, into the table [`crate::postgres`] describes.
//! Every append counts only once durable: sled's `flush` returned and its log file was
//! fdatasynced (sled 0.34's `flush` alone waits on Linux only for `sync_file_range`, which
//! flushes neither the disk's write cache nor the file's metadata; the store does the same
//! fdatasync after each flush, so raw sled is measured as durable as the store), or
//! PostgreSQL's commit record was flushed (`fdatasync` of its WAL). Each scan runs right after its writes, so all see an
//! equally warm cache.
//!
//! Every figure is the median of `--repeat` rounds, each round running every step once, so
//! that one noisy moment on a shared machine does not decide a figure. PostgreSQL is the
//! server `--postgres` names (by default the local one on its Unix socket); when none can be
//! reached, steps 8 to 10 are skipped and the report says why. `--no-postgres` skips them on
//! purpose.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use closeloop_domain::{Event, LoopId};
use closeloop_keys::{FileKeyStore, MasterKey};
use closeloop_store::conformance::{acknowledgement, feedback};
use closeloop_store::{
    AppendRequest, EventStore, ExpectedVersion, KeyHandle, SledStore, SledStoreOptions,
};
use tokio::task::JoinSet;

use crate::machine::Machine;
use crate::postgres::{self, Availability, Postgres, PostgresFigures};
use crate::report;

/// How many tasks append at once in the concurrent measurement.
pub const WRITERS: u64 = 64;
/// Records per `apply_batch` (and per flush) in the raw batched measurement.
pub const RAW_BATCH: u64 = 64;
/// Entries per `read_all` page.
pub const READ_PAGE: usize = 4096;
/// Events per loop: a feedback, then acknowledgements.
pub const EVENTS_PER_LOOP: u64 = 4;

/// Options of `closeloop-bench store`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Events for the batched and concurrent appends and for the read-all scans.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Events for the single-writer appends (each one a flush, so keep it small).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub single_writer_events: u64,
    /// Write the figures into this markdown file, replacing its store section (the file is
    /// created when missing).
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
    /// How many times every step runs; each figure is the median.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Run the store without a key store, personal data in plain (as before encryption at
    /// rest), to see what sealing costs. Not how `closeloop serve` runs; do not `--write` it.
    #[arg(long, conflicts_with = "write")]
    pub plain: bool,
    /// The PostgreSQL server for steps 8 to 10, as a libpq connection string or URL. Its
    /// database is created when missing; the table `closeloop_bench.events` in it is dropped
    /// and created again for every step.
    #[arg(
        long,
        value_name = "CONNINFO",
        env = "CLOSELOOP_BENCH_POSTGRES",
        default_value = postgres::DEFAULT_CONNINFO
    )]
    pub postgres: String,
    /// Skip steps 8 to 10 (PostgreSQL); the report says they were skipped.
    #[arg(long)]
    pub no_postgres: bool,
}

/// Events done in a measured time.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    /// How many events (or records) were written or read.
    pub events: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl Measurement {
    pub(crate) fn since(events: u64, start: Instant) -> Self {
        Self {
            events,
            elapsed: start.elapsed(),
        }
    }

    /// Events per second.
    #[must_use]
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// This rate as a fraction of `baseline`'s.
    #[must_use]
    pub fn ratio_to(&self, baseline: &Measurement) -> f64 {
        self.per_second() / baseline.per_second()
    }
}

/// The median of measurements, by rate.
pub(crate) fn median(measurements: impl Iterator<Item = Measurement>) -> Measurement {
    let mut all: Vec<Measurement> = measurements.collect();
    all.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    all[all.len() / 2]
}

/// The figures of one run, numbered as in the [module docs](self).
#[derive(Debug, Clone)]
pub struct Figures {
    /// 1. Raw sled, 1 writer, insert + flush each.
    pub raw_single: Measurement,
    /// 2. The store, 1 writer, each append awaited.
    pub store_single: Measurement,
    /// 3. Raw sled, batches of [`RAW_BATCH`] with one flush each.
    pub raw_batched: Measurement,
    /// 4. The store, [`WRITERS`] concurrent writers.
    pub store_concurrent: Measurement,
    /// 5. Raw sled, scan + `serde_json::Value` decode.
    pub raw_scan: Measurement,
    /// 6. The store, `read_all` + typed decode.
    pub store_read_all: Measurement,
    /// 7. The store, reopened: its in-memory indexes rebuilt from the log.
    pub store_reopen: Measurement,
    /// 8 to 10. PostgreSQL doing the work of steps 2, 4 and 6, or why it did not.
    pub postgres: PostgresFigures,
}

/// The steps of one round, in the order of [`Figures`]; the PostgreSQL ones only when it runs.
type Round = ([Measurement; 7], Option<[Measurement; 3]>);

/// Runs every measurement, prints the report and writes it when asked.
///
/// # Errors
/// When a temp dir, sled, the store or a reachable PostgreSQL fails, when a measurement does
/// not see every event it wrote, or when the report cannot be written.
pub fn run(args: &StoreArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures only mean something with --release");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let peer = runtime.block_on(postgres_peer(args))?;
    let repeat = args.repeat.max(1);
    let rounds = (1..=repeat)
        .map(|round| {
            eprintln!("round {round}/{repeat}:");
            runtime.block_on(one_round(args, peer.as_ref().ok()))
        })
        .collect::<Result<Vec<Round>>>()?;
    let figures = median_figures(&rounds, peer);

    let machine = Machine::probe(&std::env::temp_dir());
    let section = report::store_section(&figures, &machine, &report::command_line());
    report::publish(&section, args.write.as_deref())?;
    Ok(())
}

/// The PostgreSQL server to measure, or why there is none (said on stderr at once, and later
/// in the report).
async fn postgres_peer(args: &StoreArgs) -> Result<Result<Postgres, String>> {
    let peer = if args.no_postgres {
        Err("--no-postgres given".to_owned())
    } else {
        match postgres::prepare(&args.postgres).await? {
            Availability::Ready(postgres) => Ok(*postgres),
            Availability::Unreachable(reason) => Err(format!(
                "{reason}; start it, or name a server with --postgres or \
                 CLOSELOOP_BENCH_POSTGRES"
            )),
        }
    };
    match &peer {
        Ok(postgres) => eprintln!("steps 8 to 10 against {}", postgres.server),
        Err(reason) => eprintln!("PostgreSQL: skipped — {reason}"),
    }
    Ok(peer)
}

/// Every step once, raw, store and PostgreSQL interleaved.
async fn one_round(args: &StoreArgs, postgres: Option<&Postgres>) -> Result<Round> {
    let raw_value = closeloop_store::record::encode(&feedback("urn:closeloop-bench:raw", "e0"));
    let (single, events) = (args.single_writer_events, args.events);

    eprintln!("  1 raw sled, 1 writer, {single} records…");
    let raw_single = raw_single_writer(&raw_value, single)?;
    eprintln!("  2 closeloop, 1 writer, {single} events…");
    let store_single = store_single_writer(single, args.plain).await?;
    eprintln!("  3 and 5 raw sled, batches of {RAW_BATCH} then scan, {events} records…");
    let (raw_batched, raw_scan) = raw_batched_then_scan(&raw_value, events)?;
    eprintln!("  4, 6 and 7 closeloop, {WRITERS} writers, read_all, reopen, {events} events…");
    let (store_concurrent, store_read_all, store_reopen) =
        store_concurrent_then_read(events, args.plain).await?;
    let postgres = match postgres {
        Some(postgres) => {
            eprintln!("  8 PostgreSQL, 1 writer, {single} events…");
            let single = postgres.single_writer(single).await?;
            eprintln!("  9 and 10 PostgreSQL, {WRITERS} writers, read in pages, {events} events…");
            let (concurrent, read_all) = postgres.concurrent_then_read(events).await?;
            Some([single, concurrent, read_all])
        }
        None => None,
    };
    Ok((
        [
            raw_single,
            store_single,
            raw_batched,
            store_concurrent,
            raw_scan,
            store_read_all,
            store_reopen,
        ],
        postgres,
    ))
}

/// Each step's median over `rounds`.
fn median_figures(rounds: &[Round], peer: Result<Postgres, String>) -> Figures {
    let [
        raw_single,
        store_single,
        raw_batched,
        store_concurrent,
        raw_scan,
        store_read_all,
        store_reopen,
    ] = std::array::from_fn(|step| median(rounds.iter().map(|round| round.0[step])));
    let postgres = match peer {
        Ok(postgres) => {
            let [single, concurrent, read_all] = std::array::from_fn(|step| {
                median(rounds.iter().filter_map(|round| round.1.map(|pg| pg[step])))
            });
            PostgresFigures::Measured {
                server: postgres.server,
                single,
                concurrent,
                read_all,
            }
        }
        Err(reason) => PostgresFigures::Skipped(reason),
    };
    Figures {
        raw_single,
        store_single,
        raw_batched,
        store_concurrent,
        raw_scan,
        store_read_all,
        store_reopen,
        postgres,
    }
}

/// Raw sled in a directory, with the store's cache size and the store's tree name.
struct RawSled {
    db: sled::Db,
    tree: sled::Tree,
    /// sled's log file, to fdatasync after each flush as the store does.
    log: std::fs::File,
}

impl RawSled {
    fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(SledStoreOptions::default().cache_capacity_bytes)
            .open()
            .context("cannot open raw sled")?;
        let tree = db.open_tree("events")?;
        let log = std::fs::File::open(dir.join("db")).context("cannot open sled's log file")?;
        Ok(Self { db, tree, log })
    }

    /// sled's flush, then an fdatasync of its log: as durable as a store append.
    fn make_durable(&self) -> Result<()> {
        self.db.flush()?;
        self.log.sync_data().context("cannot fdatasync sled's log")
    }
}

/// Step 1: `count` records, each inserted and made durable on its own.
fn raw_single_writer(value: &[u8], count: u64) -> Result<Measurement> {
    let dir = tempfile::tempdir()?;
    let raw = RawSled::open(dir.path())?;
    let start = Instant::now();
    for key in 0..count {
        raw.tree.insert(key.to_be_bytes(), value)?;
        raw.make_durable()?;
    }
    Ok(Measurement::since(count, start))
}

/// The store's options as `closeloop serve` opens it: personal data sealed with each loop's
/// data key, kept in a file key store in `dir/keys` (each new loop's key made durable before
/// its first record); with `plain`, no key store.
pub(crate) fn store_options(dir: &Path, plain: bool) -> Result<SledStoreOptions> {
    if plain {
        return Ok(SledStoreOptions::default());
    }
    let keys = FileKeyStore::open(&dir.join("keys"), Some(&MasterKey::generate()))?;
    Ok(SledStoreOptions {
        keys: Some(KeyHandle(Arc::new(keys))),
        ..SledStoreOptions::default()
    })
}

/// Step 2: `count` single-event appends, one after the other.
pub(crate) async fn store_single_writer(count: u64, plain: bool) -> Result<Measurement> {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), &store_options(dir.path(), plain)?)?;
    let requests = writer_requests("single", count)?;
    let start = Instant::now();
    for request in requests {
        let outcome = store.append(request).await?;
        ensure!(
            !outcome.duplicate,
            "a fresh event was taken for a duplicate"
        );
    }
    let measured = Measurement::since(count, start);
    ensure!(
        store.head() == count,
        "the store holds {} events, not {count}",
        store.head()
    );
    store.close().await;
    Ok(measured)
}

/// Steps 3 and 5: `count` records in batches of [`RAW_BATCH`], made durable once each; then a
/// scan of them all with a JSON decode of every value.
fn raw_batched_then_scan(value: &[u8], count: u64) -> Result<(Measurement, Measurement)> {
    let dir = tempfile::tempdir()?;
    let raw = RawSled::open(dir.path())?;
    let tree = &raw.tree;

    let start = Instant::now();
    let mut next = 0;
    while next < count {
        let end = (next + RAW_BATCH).min(count);
        let mut batch = sled::Batch::default();
        for key in next..end {
            batch.insert(&key.to_be_bytes()[..], value);
        }
        tree.apply_batch(batch)?;
        raw.make_durable()?;
        next = end;
    }
    let written = Measurement::since(count, start);

    let start = Instant::now();
    let mut scanned = 0;
    for item in tree {
        let (_, value) = item?;
        let decoded: serde_json::Value = serde_json::from_slice(&value)?;
        black_box(decoded);
        scanned += 1;
    }
    let read = Measurement::since(scanned, start);
    ensure!(
        scanned == count,
        "the scan saw {scanned} records, not {count}"
    );
    Ok((written, read))
}

/// Steps 4 and 6: `count` single-event appends from [`WRITERS`] concurrent tasks; then `read_all`
/// over them all in pages of [`READ_PAGE`], decoding every event.
pub(crate) async fn store_concurrent_then_read(
    count: u64,
    plain: bool,
) -> Result<(Measurement, Measurement, Measurement)> {
    let dir = tempfile::tempdir()?;
    let options = store_options(dir.path(), plain)?;
    let store = Arc::new(SledStore::open(dir.path(), &options)?);
    let plans = (0..WRITERS)
        .map(|writer| {
            let share = count / WRITERS + u64::from(writer < count % WRITERS);
            writer_requests(&format!("w{writer}"), share)
        })
        .collect::<Result<Vec<_>>>()?;

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for plan in plans {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for request in plan {
                let outcome = store.append(request).await?;
                ensure!(
                    !outcome.duplicate,
                    "a fresh event was taken for a duplicate"
                );
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a writer task panicked")??;
    }
    let written = Measurement::since(count, start);
    ensure!(
        store.head() == count,
        "the store holds {} events, not {count}",
        store.head()
    );

    let start = Instant::now();
    let decoded = read_and_decode_all(store.as_ref()).await?;
    let read = Measurement::since(decoded, start);
    ensure!(
        decoded == count,
        "read_all saw {decoded} events, not {count}"
    );

    let store = Arc::into_inner(store).context("a writer task still holds the store")?;
    store.close().await;
    // The close wrote the index file, from which an open reads the index without the
    // entries; step 7 measures the rebuild from the entry headers (an open after a crash).
    std::fs::remove_file(dir.path().join(closeloop_store::INDEX_FILE_NAME))
        .context("the clean close wrote no index file")?;

    let start = Instant::now();
    let store = SledStore::open(dir.path(), &options)?;
    let reopened = Measurement::since(count, start);
    ensure!(
        store.head() == count && store.indexed_from_file() == 0,
        "the reopened store holds {} events ({} from the index file)",
        store.head(),
        store.indexed_from_file()
    );
    store.close().await;
    Ok((written, read, reopened))
}

/// Reads the whole log of `store` in pages of [`READ_PAGE`], decoding every event; returns how
/// many there were.
pub(crate) async fn read_and_decode_all(store: &impl EventStore) -> Result<u64> {
    let mut after = 0;
    let mut decoded = 0;
    loop {
        let page = store.read_all(after, READ_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for entry in &page {
            black_box(entry.event()?);
        }
        decoded += page.len() as u64;
    }
    Ok(decoded)
}

/// `count` single-event append requests of one writer: its [`writer_events`], each appended
/// with [`ExpectedVersion::Any`] (the store numbers it).
pub(crate) fn writer_requests(writer: &str, count: u64) -> Result<Vec<AppendRequest>> {
    writer_events(writer, count)
        .map(|planned| {
            let (loop_id, _, event) = planned?;
            Ok(AppendRequest::single(
                loop_id,
                ExpectedVersion::Any,
                vec![event],
            ))
        })
        .collect()
}

/// `count` events of one writer, each with its loop and its version in that loop: its own
/// loops of [`EVENTS_PER_LOOP`] events (a feedback, then acknowledgements; versions 1 to 4),
/// its own source, so every (source, event id) is unique.
pub(crate) fn writer_events(
    writer: &str,
    count: u64,
) -> impl Iterator<Item = Result<(LoopId, u64, Event)>> {
    let source = format!("urn:closeloop-bench:{writer}");
    let writer = writer.to_owned();
    (0..count).map(move |i| {
        let loop_id = LoopId::parse(&format!("bench-{writer}-{}", i / EVENTS_PER_LOOP))?;
        let event_id = format!("e{i}");
        let event = if i % EVENTS_PER_LOOP == 0 {
            feedback(&source, &event_id)
        } else {
            acknowledgement(&source, &event_id)
        };
        Ok((loop_id, i % EVENTS_PER_LOOP + 1, event))
    })
}
