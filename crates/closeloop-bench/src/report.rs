//! The figures as markdown, and their section in a document.
//!
//! A section sits between markers such as [`START`] and [`END`] (`<!-- bench:NAME:start -->`
//! and `<!-- bench:NAME:end -->`, one pair per benchmark); writing it again replaces it and
//! leaves the rest of the document alone.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::ingest::IngestFigures;
use crate::machine::Machine;
use crate::postgres::{PostgresFigures, TABLE};
use crate::store::{Figures, Measurement, RAW_BATCH, READ_PAGE, WRITERS};
use crate::storm::{Counts, Phase, Shutdown, StormFigures, Timings};

/// Opens the store section of a document.
pub const START: &str = "<!-- bench:store:start -->";
/// Closes the store section of a document.
pub const END: &str = "<!-- bench:store:end -->";

/// Durable single-event appends/s the 64 concurrent writers must reach.
const MIN_CONCURRENT_RATE: f64 = 40_000.0;
/// The 64 writers' rate as a fraction of raw sled in batches of 64 (issue 12).
const MIN_CONCURRENT_RATIO: f64 = 0.75;
/// The single writer's rate as a fraction of raw sled's insert + flush each (issue 12).
const MIN_SINGLE_RATIO: f64 = 0.8;
/// Read-all + typed decode as a fraction of raw scan + JSON decode.
const MIN_READ_RATIO: f64 = 0.6;

/// The start of a section: its start marker, its title, and the date, machine and command of
/// the run, one line each (no blank line after them).
pub(crate) fn header(out: &mut String, start: &str, title: &str, machine: &Machine, command: &str) {
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S UTC");
    let profile = if cfg!(debug_assertions) {
        "debug build: not representative"
    } else {
        "release build"
    };
    let _ = writeln!(out, "{start}");
    let _ = writeln!(out, "## {title}\n");
    let _ = writeln!(out, "- Date: {date}");
    let _ = writeln!(out, "- Machine: {}", machine.describe());
    let _ = writeln!(out, "- Command: `{command}` ({profile})");
}

/// The whole store section, markers included, ending in a newline.
#[must_use]
pub fn store_section(figures: &Figures, machine: &Machine, command: &str) -> String {
    let mut out = String::new();
    header(&mut out, START, "Event store", machine, command);
    if let PostgresFigures::Measured { server, .. } = &figures.postgres {
        let _ = writeln!(out, "- PostgreSQL: {server}");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "Each step runs in a fresh temp dir; every write counts only once durable: sled's \
         `flush` returned and sled's log file was fdatasynced, for raw sled as for the store \
         (sled 0.34's `flush` alone waits on Linux for `sync_file_range`, which flushes \
         neither the disk's write cache nor the file's metadata). \
         Raw sled stores a feedback record under an 8-byte key; the store writes one entry per \
         event (chain header, idempotency key, record; its loop and key indexes live in memory) \
         for loops of a feedback and three acknowledgements, as `closeloop serve` runs it: the \
         feedback's story sealed with its loop's data key, each new loop's key made durable in \
         the file key store before its first record. Figures vary by about ±30% from \
         run to run on this virtual machine; \
         every figure is the median of `--repeat` rounds (default 3), each round running every \
         step once.\n"
    );
    out.push_str(&postgres_paragraph(&figures.postgres));
    out.push_str(&figures_table(figures));
    out.push('\n');
    if let Some(table) = peer_table(figures) {
        out.push_str(&table);
        out.push('\n');
    }
    out.push_str(&targets_table(figures));
    let _ = writeln!(out, "{END}");
    out
}

/// What steps 8 to 10 did, or why they did not run.
fn postgres_paragraph(postgres: &PostgresFigures) -> String {
    match postgres {
        PostgresFigures::Measured { .. } => format!(
            "Steps 8 to 10 do the work of steps 2, 4 and 6 against the PostgreSQL server above \
             (by default the local one, over its Unix socket, on the same cores and disk): one \
             `{TABLE}` table (`position bigserial` primary key; `stream_id`, `version`, \
             `event_type`, `source`, `event_id`, the store's record as `payload jsonb`, \
             `recorded_at`; `UNIQUE (stream_id, version)` and `UNIQUE (source, event_id)`, the \
             checks the store makes on every append), dropped and created again before each \
             writing step. Every append is one autocommit `INSERT` with `synchronous_commit = \
             on`, so it returns once its commit record is flushed to disk; the writer gives \
             the stream's next version: PostgreSQL flushes its WAL with its \
             `wal_sync_method` (`fdatasync` on Linux), as durable as the store's fdatasync of \
             sled's log. The {WRITERS} writers hold {WRITERS} connections. The read \
             pages by position (`WHERE position > $1 ORDER BY position LIMIT {READ_PAGE}`) and \
             decodes every payload with the store's own decoder. PostgreSQL's records hold \
             personal data in plain, as the store's do under `--plain`.\n\n"
        ),
        PostgresFigures::Skipped(reason) => format!(
            "PostgreSQL: skipped — {reason}. Steps 8 to 10 (the work of steps 2, 4 and 6 \
             against a PostgreSQL event table) did not run.\n\n"
        ),
    }
}

fn figures_table(f: &Figures) -> String {
    let mut rows: Vec<(&str, String, &Measurement, Option<String>)> = vec![
        (
            "1",
            "raw sled, 1 writer: insert + flush + fdatasync each".to_owned(),
            &f.raw_single,
            None,
        ),
        (
            "2",
            "closeloop, 1 writer: single-event append, awaited".to_owned(),
            &f.store_single,
            Some(format!(
                "2 vs 1: {}",
                percent(f.store_single.ratio_to(&f.raw_single))
            )),
        ),
        (
            "3",
            format!("raw sled: batches of {RAW_BATCH}, apply_batch + one flush + fdatasync each"),
            &f.raw_batched,
            None,
        ),
        (
            "4",
            format!("closeloop, {WRITERS} concurrent writers: single-event appends"),
            &f.store_concurrent,
            Some(format!(
                "4 vs 3: {}",
                percent(f.store_concurrent.ratio_to(&f.raw_batched))
            )),
        ),
        (
            "5",
            "raw sled: scan + `serde_json::Value` decode".to_owned(),
            &f.raw_scan,
            None,
        ),
        (
            "6",
            format!("closeloop: `read_all` pages of {READ_PAGE} + typed decode"),
            &f.store_read_all,
            Some(format!(
                "6 vs 5: {}",
                percent(f.store_read_all.ratio_to(&f.raw_scan))
            )),
        ),
        (
            "7",
            "closeloop: reopen, indexes rebuilt from entry headers".to_owned(),
            &f.store_reopen,
            None,
        ),
    ];
    if let PostgresFigures::Measured {
        single,
        concurrent,
        read_all,
        ..
    } = &f.postgres
    {
        rows.extend([
            (
                "8",
                "PostgreSQL, 1 writer: autocommit `INSERT`, awaited".to_owned(),
                single,
                Some(format!(
                    "8 vs 1: {}",
                    percent(single.ratio_to(&f.raw_single))
                )),
            ),
            (
                "9",
                format!("PostgreSQL, {WRITERS} connections: autocommit `INSERT`s"),
                concurrent,
                Some(format!(
                    "9 vs 3: {}",
                    percent(concurrent.ratio_to(&f.raw_batched))
                )),
            ),
            (
                "10",
                format!("PostgreSQL: keyset pages of {READ_PAGE} + typed decode"),
                read_all,
                Some(format!(
                    "10 vs 5: {}",
                    percent(read_all.ratio_to(&f.raw_scan))
                )),
            ),
        ]);
    }
    let mut out = String::from(
        "| # | Work | Events | Seconds | Events/s | vs raw |\n|---|---|---:|---:|---:|---|\n",
    );
    for (step, work, measurement, ratio) in rows {
        let _ = writeln!(
            out,
            "| {step} | {work} | {} | {:.2} | {} | {} |",
            thousands(measurement.events as f64),
            measurement.elapsed.as_secs_f64(),
            thousands(measurement.per_second()),
            ratio.unwrap_or_default(),
        );
    }
    out
}

/// The store beside PostgreSQL for each of the three works both did; `None` when PostgreSQL
/// did not run.
fn peer_table(f: &Figures) -> Option<String> {
    let PostgresFigures::Measured {
        single,
        concurrent,
        read_all,
        ..
    } = &f.postgres
    else {
        return None;
    };
    let rows = [
        (
            "1 writer, single-event appends, each awaited (2 vs 8)".to_owned(),
            &f.store_single,
            single,
        ),
        (
            format!("{WRITERS} concurrent writers, single-event appends (4 vs 9)"),
            &f.store_concurrent,
            concurrent,
        ),
        (
            format!("read-all in pages of {READ_PAGE} + typed decode (6 vs 10)"),
            &f.store_read_all,
            read_all,
        ),
    ];
    let mut out = String::from(
        "| Same work | closeloop events/s | PostgreSQL events/s | closeloop vs PostgreSQL |\n\
         |---|---:|---:|---:|\n",
    );
    for (work, store, peer) in rows {
        let _ = writeln!(
            out,
            "| {work} | {} | {} | {} |",
            thousands(store.per_second()),
            thousands(peer.per_second()),
            percent(store.ratio_to(peer)),
        );
    }
    Some(out)
}

fn targets_table(f: &Figures) -> String {
    let concurrent_ratio = f.store_concurrent.ratio_to(&f.raw_batched);
    let single_ratio = f.store_single.ratio_to(&f.raw_single);
    let read_ratio = f.store_read_all.ratio_to(&f.raw_scan);
    let targets = [
        (
            format!("{WRITERS} writers: durable single-event appends/s"),
            format!("≥ {}", thousands(MIN_CONCURRENT_RATE)),
            thousands(f.store_concurrent.per_second()),
            f.store_concurrent.per_second() >= MIN_CONCURRENT_RATE,
        ),
        (
            format!("{WRITERS} writers vs raw sled in batches of {RAW_BATCH} (4 vs 3)"),
            format!("≥ {}", percent(MIN_CONCURRENT_RATIO)),
            percent(concurrent_ratio),
            concurrent_ratio >= MIN_CONCURRENT_RATIO,
        ),
        (
            "1 writer vs raw sled, insert + flush + fdatasync each (2 vs 1)".to_owned(),
            format!("≥ {}", percent(MIN_SINGLE_RATIO)),
            percent(single_ratio),
            single_ratio >= MIN_SINGLE_RATIO,
        ),
        (
            "read-all + decode vs raw scan + decode (6 vs 5)".to_owned(),
            format!("≥ {}", percent(MIN_READ_RATIO)),
            percent(read_ratio),
            read_ratio >= MIN_READ_RATIO,
        ),
    ];
    target_table(targets)
}

/// Durably stored events/s the drain must reach.
const MIN_DRAIN_RATE: f64 = 30_000.0;
/// The drain, counted until the read models show every event, as a fraction of the raw
/// pull-consume-and-ack rate (issue 12).
const MIN_DRAIN_RATIO: f64 = 0.50;
/// Every event on the feed, as a fraction of that drain rate (issue 12).
const MIN_FEED_RATIO: f64 = 0.80;
/// Publish-to-feed p99 at the steady rate (issue 12).
const MAX_FEED_P99: Duration = Duration::from_millis(20);

/// The whole ingest section, markers included, ending in a newline.
#[must_use]
pub fn ingest_section(f: &IngestFigures, machine: &Machine, command: &str) -> String {
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let drain_ratio = f.projected_rate() / f.raw_rate().max(f64::MIN_POSITIVE);
    let feed_ratio = f.feed_rate() / f.projected_rate().max(f64::MIN_POSITIVE);
    let p99 = f.latency(99.0);
    let mut out = String::new();
    header(
        &mut out,
        "<!-- bench:ingest:start -->",
        "NATS ingestion and the outbound feed",
        machine,
        command,
    );
    out.push('\n');
    let _ = writeln!(
        out,
        "A private `nats-server` 2.9 (JetStream, file storage) on the same 2 cores. {} \
         CloudEvents (loops of a `feedback.received` and a `loop.acknowledged`) are published to \
         `FEEDBACK` (a work queue) first; a raw durable pull consumer then pulls and acks the \
         same messages in a work-queue stream of their own (no other work), and Closeloop's \
         NATS side and projector (as `closeloop serve` runs them, over a fresh sled store \
         sealing each story with its loop's key from a file key store) drain `FEEDBACK`, timed from their start until every event is durably stored, until \
         the read models show every event (what `GET /v1/loops` answers from), and until \
         every event is on the feed. Then, with the backlog gone, feedback is published at a \
         steady rate and each event timed from publish until it arrives on \
         `closeloop.events.*`. Steps 2 to 5 are the medians of {} rounds.\n",
        thousands(f.events as f64),
        f.repeat
    );
    let _ = writeln!(out, "| # | Work | Events | Seconds | Events/s |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    let rows = [
        (
            "publish to `FEEDBACK`, 1,000 acks in flight",
            f.events,
            f.load,
        ),
        ("raw pull consumer: pull + ack each", f.events, f.raw),
        ("Closeloop: consume, store durably, ack", f.events, f.drain),
        (
            "Closeloop: … and every event in the read models",
            f.events,
            f.projected,
        ),
        (
            "Closeloop: … and every event on the feed",
            f.events,
            f.feed_caught_up,
        ),
    ];
    for (n, (work, events, elapsed)) in rows.into_iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {work} | {} | {:.2} | {} |",
            n + 1,
            thousands(events as f64),
            elapsed.as_secs_f64(),
            thousands(events as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)),
        );
    }
    let _ = writeln!(
        out,
        "\nPublish to feed at {} events/s for {} events: p50 {}, p99 {}, max {}.\n",
        thousands(f.rate as f64),
        thousands(f.latency_events as f64),
        ms(f.latency(50.0)),
        ms(p99),
        ms(f.latency(100.0)),
    );
    let targets = [
        (
            "drain: durably stored events/s".to_owned(),
            format!("≥ {}", thousands(MIN_DRAIN_RATE)),
            thousands(f.drain_rate()),
            f.drain_rate() >= MIN_DRAIN_RATE,
        ),
        (
            "drain until the read models show every event vs raw pull consumer (4 vs 2)".to_owned(),
            format!("≥ {}", percent(MIN_DRAIN_RATIO)),
            percent(drain_ratio),
            drain_ratio >= MIN_DRAIN_RATIO,
        ),
        (
            "every event on the feed vs that drain (5 vs 4)".to_owned(),
            format!("≥ {}", percent(MIN_FEED_RATIO)),
            percent(feed_ratio),
            feed_ratio >= MIN_FEED_RATIO,
        ),
        (
            format!(
                "publish-to-feed p99 at {} events/s",
                thousands(f.rate as f64)
            ),
            format!("≤ {}", ms(MAX_FEED_P99)),
            ms(p99),
            p99 <= MAX_FEED_P99,
        ),
    ];
    out.push_str(&target_table(targets));
    let _ = writeln!(out, "<!-- bench:ingest:end -->");
    out
}

/// `/healthz` p99 during the storm.
const MAX_STORM_HEALTHZ_P99: Duration = Duration::from_millis(50);
/// `POST /v1/feedback` p99 during the storm.
const MAX_STORM_WRITE_P99: Duration = Duration::from_millis(250);
/// Feedback stored a second by one sequential writer during the storm.
const MIN_STORM_WRITES: f64 = 20.0;

/// The whole storm section, markers included, ending in a newline.
#[must_use]
pub fn storm_section(f: &StormFigures, machine: &Machine, command: &str) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "<!-- bench:storm:start -->",
        "Cheap requests and writes during a storm of expensive reads",
        machine,
        command,
    );
    if let Some(load) = f.load_average {
        let _ = writeln!(
            out,
            "- 1-minute load average when the run started: {load:.2}"
        );
    }
    out.push('\n');
    if f.machine_was_busy() {
        let _ = writeln!(
            out,
            "**Preliminary figures**: the machine was busy with other work when the run started \
             (a load average above half its cores); rerun on a quiet machine for figures to \
             rely on.\n"
        );
    }
    let events = f.events.map_or_else(String::new, |events| {
        format!(", {} events", thousands(events as f64))
    });
    let _ = writeln!(
        out,
        "The real `closeloop serve` (NATS off) over a temp data directory loaded with \
         `closeloop demo --loops {loops}` ({} loops{events}, loaded in {:.0} s; the service was \
         ready {:.1} s after it started). Each phase runs {} s over 127.0.0.1: a `/healthz` \
         prober sends {} requests a second on schedule, whether or not earlier ones have \
         answered, and one writer sends `POST /v1/feedback` (a new loop each time) one request \
         after another, each awaited. During the storm {} auditors call \
         `GET /v1/audit/verify` and {} anonymous clients `GET /v1/you-said-we-did`, each in a \
         loop as fast as answers come back, ignoring `Retry-After`. Every client runs in the \
         benchmark's process, on the same cores as the service; a time is until the whole \
         answer arrived.\n",
        thousands(f.loops as f64),
        f.load.as_secs_f64(),
        f.ready.as_secs_f64(),
        f.seconds,
        f.probe_rate,
        f.verifiers,
        f.readers,
        loops = f.loops,
    );
    out.push_str(&storm_phases_table(&f.baseline, &f.storm));
    out.push('\n');
    out.push_str(&storm_clients_table(f));
    out.push('\n');
    let shutdown = match &f.shutdown {
        Shutdown::Stopped(after) => format!("it stopped {} after SIGTERM", duration(*after)),
        Shutdown::Killed => "it was still running 30 s after SIGTERM and was killed".to_owned(),
        Shutdown::AlreadyExited(status) => {
            format!("it had already exited ({status}) before SIGTERM was sent")
        }
    };
    let _ = writeln!(out, "After the storm {shutdown}.\n");
    out.push_str(&storm_targets_table(&f.storm));
    let _ = writeln!(out, "<!-- bench:storm:end -->");
    out
}

fn storm_phases_table(baseline: &Phase, storm: &Phase) -> String {
    let times = |t: &Timings| {
        format!(
            "{} / {} / {}",
            duration(t.percentile(50.0)),
            duration(t.percentile(99.0)),
            duration(t.percentile(100.0))
        )
    };
    let failed = |t: &Timings| {
        format!(
            "{} of {}",
            thousands(t.failed() as f64),
            thousands(t.count() as f64)
        )
    };
    let rows = [
        (
            "`/healthz` p50 / p99 / max",
            times(&baseline.healthz),
            times(&storm.healthz),
        ),
        (
            "`/healthz` answers other than 200",
            failed(&baseline.healthz),
            failed(&storm.healthz),
        ),
        (
            "`POST /v1/feedback` p50 / p99 / max",
            times(&baseline.writes),
            times(&storm.writes),
        ),
        (
            "`POST /v1/feedback` answers other than 201",
            failed(&baseline.writes),
            failed(&storm.writes),
        ),
        (
            "feedback stored a second (201 answers)",
            format!("{:.1}", baseline.writes_per_second()),
            format!("{:.1}", storm.writes_per_second()),
        ),
    ];
    let mut out = String::from("| Measure | No storm | Storm |\n|---|---:|---:|\n");
    for (measure, before, during) in rows {
        let _ = writeln!(out, "| {measure} | {before} | {during} |");
    }
    out
}

fn storm_clients_table(f: &StormFigures) -> String {
    let mut out = String::from(
        "| Storm clients | Requests | 200 | 503 (without `Retry-After`) | Other or none | p50 / max |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let rows: [(String, &Counts); 2] = [
        (
            format!("{} × `GET /v1/audit/verify` (auditor)", f.verifiers),
            &f.storm.verify,
        ),
        (
            format!("{} × `GET /v1/you-said-we-did` (anonymous)", f.readers),
            &f.storm.public,
        ),
    ];
    for (clients, counts) in rows {
        let _ = writeln!(
            out,
            "| {clients} | {} | {} | {} ({}) | {} | {} / {} |",
            thousands(counts.timings.count() as f64),
            thousands(counts.timings.ok as f64),
            thousands(counts.shed as f64),
            thousands(counts.shed_without_retry_after as f64),
            thousands(counts.other() as f64),
            duration(counts.timings.percentile(50.0)),
            duration(counts.timings.percentile(100.0)),
        );
    }
    out
}

fn storm_targets_table(storm: &Phase) -> String {
    let healthz = storm.healthz.percentile(99.0);
    let writes = storm.writes.percentile(99.0);
    let rate = storm.writes_per_second();
    let targets = [
        (
            "`/healthz` p99 during the storm",
            format!("≤ {}", duration(MAX_STORM_HEALTHZ_P99)),
            match storm.healthz.failed() {
                0 => duration(healthz),
                failed => format!("{} ({failed} not 200)", duration(healthz)),
            },
            // A probe that got no answer, or not a 200, fails the target whatever its time.
            healthz <= MAX_STORM_HEALTHZ_P99 && storm.healthz.failed() == 0,
        ),
        (
            "`POST /v1/feedback` p99 during the storm",
            format!("≤ {}", duration(MAX_STORM_WRITE_P99)),
            duration(writes),
            writes <= MAX_STORM_WRITE_P99,
        ),
        (
            "feedback stored a second during the storm",
            format!("≥ {MIN_STORM_WRITES:.0}"),
            format!("{rate:.1}"),
            rate >= MIN_STORM_WRITES,
        ),
    ];
    target_table(targets)
}

/// A table of targets: what, the requirement, the figure, and PASS or MISS.
pub(crate) fn target_table<T: std::fmt::Display>(
    targets: impl IntoIterator<Item = (T, String, String, bool)>,
) -> String {
    let mut out = String::from("| Target | Required | Measured | Result |\n|---|---:|---:|---|\n");
    for (target, required, measured, met) in targets {
        let result = if met { "PASS" } else { "MISS" };
        let _ = writeln!(out, "| {target} | {required} | {measured} | {result} |");
    }
    out
}

/// A latency: milliseconds below a second (`12.3 ms`), else seconds (`1.93 s`).
pub(crate) fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// A ratio as a whole percentage.
pub(crate) fn percent(ratio: f64) -> String {
    format!("{:.0}%", ratio * 100.0)
}

/// A rate or count rounded to a whole number, with thousands separators: `41,234`.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// How this binary was invoked, program name without its directory, arguments quoted for a
/// POSIX shell where needed.
#[must_use]
pub fn command_line() -> String {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .as_deref()
        .and_then(|path| Path::new(path).file_name())
        .map_or_else(
            || "closeloop-bench".to_owned(),
            |name| name.to_string_lossy().into_owned(),
        );
    std::iter::once(program)
        .chain(args.map(|arg| shell_quote(&arg)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &OsString) -> String {
    let arg = arg.to_string_lossy();
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Prints a section on stdout and, with `write`, puts it in its place in that file (see
/// [`write_section`]), saying so on stderr.
///
/// # Errors
/// When the file cannot be read or written.
pub fn publish(section: &str, write: Option<&Path>) -> anyhow::Result<()> {
    println!("{section}");
    if let Some(path) = write {
        write_section(path, section).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote the figures to {}", path.display());
    }
    Ok(())
}

/// Puts `section` (markers included; its first line is the start marker) into the markdown
/// file at `path`: in place of its existing section, else at its end; a missing file is
/// created with a heading.
///
/// # Errors
/// When the file cannot be read or written.
pub fn write_section(path: &Path, section: &str) -> io::Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(text) => splice(&text, section),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)?;
            }
            format!(
                "# Benchmarks\n\nThe figures below are written by the `closeloop-bench` binary \
                 (`cargo run --release -p closeloop-bench -- store --write {}`), never by \
                 tests.\n\n{section}",
                path.display()
            )
        }
        Err(err) => return Err(err),
    };
    fs::write(path, text)
}

/// `text` with its section replaced by `section`, or with `section` appended.
fn splice(text: &str, section: &str) -> String {
    // The section's first line is its start marker; the end marker is named alike.
    let start_marker = section.lines().next().unwrap_or_default();
    let end_marker = start_marker.replace(":start -->", ":end -->");
    if let Some(start) = text.find(start_marker)
        && let Some(length) = text[start..].find(&end_marker)
    {
        let end = start + length + end_marker.len();
        // `section` ends in a newline: take the old one's along so lines do not multiply.
        let rest = text[end..].strip_prefix('\n').unwrap_or(&text[end..]);
        return format!("{}{section}{rest}", &text[..start]);
    }
    let gap = if text.is_empty() || text.ends_with("\n\n") {
        ""
    } else if text.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    format!("{text}{gap}{section}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(body: &str) -> String {
        format!("{START}\n{body}\n{END}\n")
    }

    #[test]
    fn replaces_the_section_and_keeps_the_rest() {
        let text = format!("# Benchmarks\n\nintro\n\n{}\n## Later\n", section("old"));
        let new = splice(&text, &section("new"));
        assert_eq!(
            new,
            format!("# Benchmarks\n\nintro\n\n{}\n## Later\n", section("new"))
        );
        assert_eq!(splice(&new, &section("new")), new);
    }

    #[test]
    fn appends_when_there_is_no_section() {
        assert_eq!(
            splice("# Benchmarks\nintro", &section("x")),
            format!("# Benchmarks\nintro\n\n{}", section("x"))
        );
        assert_eq!(
            splice("# Benchmarks\n", &section("x")),
            format!("# Benchmarks\n\n{}", section("x"))
        );
    }

    /// Store figures that meet every target, with `postgres` beside them.
    fn store_figures(postgres: PostgresFigures) -> Figures {
        let m = |events: u64, millis: u64| Measurement {
            events,
            elapsed: Duration::from_millis(millis),
        };
        Figures {
            raw_single: m(1_000, 200),
            store_single: m(1_000, 400),
            raw_batched: m(100_000, 1_000),
            store_concurrent: m(100_000, 2_000),
            raw_scan: m(100_000, 250),
            store_read_all: m(100_000, 200),
            store_reopen: m(100_000, 100),
            postgres,
        }
    }

    #[test]
    fn store_section_sets_postgresql_beside_the_store() {
        let m = |events: u64, millis: u64| Measurement {
            events,
            elapsed: Duration::from_millis(millis),
        };
        let figures = store_figures(PostgresFigures::Measured {
            server: "PostgreSQL 15.20 at /var/run/postgresql (database closeloop_bench, user \
                     postgres), fsync on, synchronous_commit on, wal_sync_method fdatasync"
                .to_owned(),
            single: m(1_000, 800),
            concurrent: m(100_000, 10_000),
            read_all: m(100_000, 400),
        });
        let section = store_section(&figures, &Machine::probe(Path::new("/")), "bench store");
        assert!(section.starts_with(&format!("{START}\n")));
        assert!(section.ends_with(&format!("{END}\n")));
        assert!(section.contains(
            "- PostgreSQL: PostgreSQL 15.20 at /var/run/postgresql (database closeloop_bench, \
             user postgres), fsync on, synchronous_commit on, wal_sync_method fdatasync\n"
        ));
        assert!(section.contains("every figure is the median of `--repeat` rounds"));
        assert!(section.contains("Steps 8 to 10 do the work of steps 2, 4 and 6"));
        assert!(section.contains(
            "| 8 | PostgreSQL, 1 writer: autocommit `INSERT`, awaited | 1,000 | 0.80 | 1,250 | 8 vs 1: 25% |"
        ));
        assert!(section.contains(
            "| 9 | PostgreSQL, 64 connections: autocommit `INSERT`s | 100,000 | 10.00 | 10,000 | 9 vs 3: 10% |"
        ));
        assert!(section.contains(
            "| 10 | PostgreSQL: keyset pages of 4096 + typed decode | 100,000 | 0.40 | 250,000 | 10 vs 5: 62% |"
        ));
        assert!(section.contains(
            "| 1 writer, single-event appends, each awaited (2 vs 8) | 2,500 | 1,250 | 200% |"
        ));
        assert!(section.contains(
            "| 64 concurrent writers, single-event appends (4 vs 9) | 50,000 | 10,000 | 500% |"
        ));
        assert!(section.contains(
            "| read-all in pages of 4096 + typed decode (6 vs 10) | 500,000 | 250,000 | 200% |"
        ));
        assert!(!section.contains("skipped"));
        // The targets are the store's own, whatever PostgreSQL did: 50,000/s, but half of
        // raw sled's rate with 64 writers and with one.
        assert_eq!(storm_results(&section), ["PASS", "MISS", "MISS", "PASS"]);
    }

    #[test]
    fn store_section_says_why_postgresql_was_skipped() {
        let figures = store_figures(PostgresFigures::Skipped(
            "cannot reach PostgreSQL at /nowhere (database closeloop_bench, user postgres): \
             error connecting to server: No such file or directory"
                .to_owned(),
        ));
        let section = store_section(&figures, &Machine::probe(Path::new("/")), "");
        assert!(section.contains(
            "\nPostgreSQL: skipped — cannot reach PostgreSQL at /nowhere (database \
             closeloop_bench, user postgres): error connecting to server: No such file or \
             directory. Steps 8 to 10"
        ));
        assert!(!section.contains("- PostgreSQL:"));
        assert!(!section.contains("| 8 |"));
        assert!(!section.contains("closeloop vs PostgreSQL"));
        assert!(section.contains("| 7 | closeloop: reopen"));
        assert_eq!(storm_results(&section), ["PASS", "MISS", "MISS", "PASS"]);
    }

    fn timings(millis: &[u64], ok: u64) -> Timings {
        Timings {
            sorted: millis.iter().copied().map(Duration::from_millis).collect(),
            ok,
        }
    }

    fn storm_figures(healthz_ms: u64, write_ms: u64, load_average: f64) -> StormFigures {
        let phase = |healthz: Timings, writes: Timings| Phase {
            healthz,
            writes,
            writer_busy: Duration::from_secs(12),
            ..Phase::default()
        };
        StormFigures {
            loops: 50_000,
            events: Some(201_234),
            load: Duration::from_secs(40),
            ready: Duration::from_secs(2),
            seconds: 12,
            probe_rate: 20,
            verifiers: 16,
            readers: 16,
            load_average: Some(load_average),
            cores: Some(2),
            baseline: phase(timings(&[1, 2], 2), timings(&[3; 600], 600)),
            storm: Phase {
                verify: Counts {
                    timings: timings(&[100, 200, 300], 1),
                    shed: 2,
                    shed_without_retry_after: 1,
                },
                ..phase(
                    timings(&[2, healthz_ms], 2),
                    timings(&vec![write_ms; 300], 300),
                )
            },
            shutdown: Shutdown::Stopped(Duration::from_millis(420)),
        }
    }

    fn storm_results(section: &str) -> Vec<&str> {
        section
            .lines()
            .filter(|line| line.ends_with("| PASS |") || line.ends_with("| MISS |"))
            .map(|line| &line[line.len() - 6..line.len() - 2])
            .collect()
    }

    #[test]
    fn storm_section_judges_the_targets() {
        let machine = Machine::probe(Path::new("/"));
        let quiet = storm_section(
            &storm_figures(40, 200, 0.1),
            &machine,
            "closeloop-bench storm",
        );
        assert!(quiet.starts_with("<!-- bench:storm:start -->\n"));
        assert!(quiet.ends_with("<!-- bench:storm:end -->\n"));
        assert_eq!(storm_results(&quiet), ["PASS", "PASS", "PASS"]);
        assert!(quiet.contains("| 16 × `GET /v1/audit/verify` (auditor) | 3 | 1 | 2 (1) | 0 |"));
        assert!(quiet.contains("it stopped 420.0 ms after SIGTERM"));
        assert!(quiet.contains("(50,000 loops, 201,234 events, loaded in 40 s;"));
        assert!(!quiet.contains("Preliminary"));

        // 300 writes in 12 s is 25 a second: slow writes miss only their own target.
        let slow = storm_section(&storm_figures(60, 1900, 0.1), &machine, "");
        assert_eq!(storm_results(&slow), ["MISS", "MISS", "PASS"]);
        assert!(slow.contains("| `POST /v1/feedback` p50 / p99 / max | 3.0 ms / 3.0 ms / 3.0 ms | 1.90 s / 1.90 s / 1.90 s |"));

        let busy = storm_section(&storm_figures(40, 200, 3.5), &machine, "");
        assert!(busy.contains("**Preliminary figures**"));
    }

    fn ingest_figures(projected_ms: u64, fed_ms: u64, p99_ms: u64) -> IngestFigures {
        IngestFigures {
            events: 200_000,
            repeat: 3,
            load: Duration::from_secs(2),
            raw: Duration::from_secs(1),
            drain: Duration::from_millis(1_600),
            projected: Duration::from_millis(projected_ms),
            feed_caught_up: Duration::from_millis(fed_ms),
            latency_events: 100,
            rate: 1_000,
            latencies: (1..=100)
                .map(|n| Duration::from_millis(n * p99_ms / 99))
                .collect(),
        }
    }

    #[test]
    fn ingest_section_judges_the_drain_until_the_read_models_and_the_feed_against_it() {
        let machine = Machine::probe(Path::new("/"));
        // Read models 2 s after the start (50% of the raw 1 s), the feed 2.5 s (80% of that).
        let met = ingest_section(&ingest_figures(2_000, 2_500, 20), &machine, "");
        assert!(met.starts_with("<!-- bench:ingest:start -->\n"));
        assert!(met.ends_with("<!-- bench:ingest:end -->\n"));
        assert_eq!(storm_results(&met), ["PASS", "PASS", "PASS", "PASS"]);
        assert!(met.contains(
            "| 4 | Closeloop: … and every event in the read models | 200,000 | 2.00 | 100,000 |"
        ));
        assert!(
            met.contains("| every event on the feed vs that drain (5 vs 4) | ≥ 80% | 80% | PASS |")
        );

        let missed = ingest_section(&ingest_figures(2_100, 3_000, 21), &machine, "");
        assert_eq!(storm_results(&missed), ["PASS", "MISS", "MISS", "MISS"]);
    }

    #[test]
    fn a_failed_probe_misses_the_healthz_target() {
        let mut figures = storm_figures(5, 5, 0.1);
        figures.storm.healthz.ok = 1;
        let section = storm_section(&figures, &Machine::probe(Path::new("/")), "");
        assert_eq!(storm_results(&section), ["MISS", "PASS", "PASS"]);
        assert!(section.contains("5.0 ms (1 not 200)"));
    }

    #[test]
    fn formats_figures() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(41_234.6), "41,235");
        assert_eq!(thousands(1_450_000.0), "1,450,000");
        assert_eq!(percent(0.506), "51%");
        assert_eq!(duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(duration(Duration::from_millis(1_934)), "1.93 s");
        assert_eq!(shell_quote(&OsString::from("--write")), "--write");
        assert_eq!(shell_quote(&OsString::from("a b")), "'a b'");
    }
}
