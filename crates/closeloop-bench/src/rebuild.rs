//! `closeloop rebuild` beside raw sled reading the same log.
//!
//! A rebuild reads every entry of the log, decodes it and applies it to the read models, on
//! two threads (one reads, one decodes and applies). Whatever it does with an entry, it cannot
//! go faster than sled hands entries out, so each round times, on the same data directory:
//!
//! 1. raw sled: every entry read with sled's range iterator on one thread, nothing decoded
//!    ([`closeloop_store::scan_raw`]);
//! 2. the same on two threads, each over half the positions: both cores reading, nothing
//!    left for decoding or applying — the ceiling under any rebuild of this log;
//! 3. `closeloop rebuild` itself, as its own report times it (from the first read to the last
//!    event applied; not opening the store, not saving the snapshot).
//!
//! Rounds alternate the three, so each figure's median comes from the same stretch of the
//! machine's time as the others'.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::machine::Machine;
use crate::report::{self, header, percent, thousands};
use crate::service::{BENCH_MASTER_KEY, load_demo, run_command, sibling_binary};
use crate::store::{Measurement, median};

/// The rebuild's target (issue 12), events/s.
const TARGET: f64 = 1_000_000.0;

/// `closeloop-bench rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Demo loops loaded into a fresh data directory (`closeloop demo --loops`), about five
    /// events each. Ignored with --data-dir.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub loops: u64,
    /// Measure an existing data directory instead (left as it is, but for the read models'
    /// snapshot, which `closeloop rebuild` saves again). The service must not be running on
    /// it. Its master key, if it has one, comes from CLOSELOOP_MASTER_KEY or
    /// CLOSELOOP_MASTER_KEY_FILE as for `closeloop rebuild`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Rounds of the three measurements; each figure is the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub repeat: u32,
    /// The `closeloop` binary to run (default: the one next to this binary, such as
    /// `target/release/closeloop`).
    #[arg(long, env = "CLOSELOOP_BIN", value_name = "PATH")]
    pub closeloop: Option<PathBuf>,
    /// Write the figures into this markdown file, replacing its rebuild section.
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
}

/// The medians of a run.
#[derive(Debug, Clone, Copy)]
struct RebuildFigures {
    loops: Option<u64>,
    bytes: u64,
    raw_one: Measurement,
    raw_two: Measurement,
    rebuild: Measurement,
}

/// Runs the benchmark and prints (and with `--write`, stores) its section.
///
/// # Errors
/// When the demo data cannot be loaded, the store cannot be read, or `closeloop rebuild`
/// fails or reports nothing readable.
pub fn run(args: &RebuildArgs) -> Result<()> {
    let binary = match &args.closeloop {
        Some(path) => path.clone(),
        None => sibling_binary()?,
    };
    let temp;
    let (dir, loops, master_key) = match &args.data_dir {
        Some(dir) => (dir.as_path(), None, None),
        None => {
            temp = tempfile::tempdir()?;
            eprintln!(
                "loading {} demo loops with {}…",
                args.loops,
                binary.display()
            );
            load_demo(&binary, temp.path(), args.loops)?;
            (temp.path(), Some(args.loops), Some(BENCH_MASTER_KEY))
        }
    };

    let (mut raw_one, mut raw_two, mut rebuilds) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for round in 1..=args.repeat {
        let (one, scanned) = raw_scan(dir, 1)?;
        let (two, _) = raw_scan(dir, 2)?;
        let rebuild = rebuild(&binary, dir, master_key)?;
        if one.events != rebuild.events || two.events != one.events {
            bail!(
                "the scans read {} and {} entries but the rebuild applied {} events",
                one.events,
                two.events,
                rebuild.events
            );
        }
        eprintln!(
            "round {round}: raw scan {:.0} / {:.0} entries/s (1 / 2 threads), rebuild {:.0} events/s",
            one.per_second(),
            two.per_second(),
            rebuild.per_second()
        );
        bytes = scanned;
        raw_one.push(one);
        raw_two.push(two);
        rebuilds.push(rebuild);
    }
    let figures = RebuildFigures {
        loops,
        bytes,
        raw_one: median(raw_one.into_iter()),
        raw_two: median(raw_two.into_iter()),
        rebuild: median(rebuilds.into_iter()),
    };
    let machine = Machine::probe(dir);
    report::publish(
        &section(&figures, &machine, &report::command_line()),
        args.write.as_deref(),
    )
}

/// One raw scan of the log on `threads` threads: the entries read and their bytes.
fn raw_scan(dir: &Path, threads: usize) -> Result<(Measurement, u64)> {
    let started = Instant::now();
    let scan = closeloop_store::scan_raw(dir, threads)
        .with_context(|| format!("cannot scan the log in {}", dir.display()))?;
    Ok((Measurement::since(scan.entries, started), scan.bytes))
}

/// One `closeloop rebuild`, timed by its own report.
fn rebuild(binary: &Path, dir: &Path, master_key: Option<&str>) -> Result<Measurement> {
    let env: Vec<(&str, &str)> = master_key
        .map(|key| ("CLOSELOOP_MASTER_KEY", key))
        .into_iter()
        .collect();
    let stderr = run_command(binary, &["rebuild"], dir, &env)?;
    rebuild_report(&stderr).with_context(|| {
        format!(
            "`closeloop rebuild` said nothing of its events and time:\n{}",
            stderr.trim()
        )
    })
}

/// The events and seconds of `closeloop rebuild`'s last line (`rebuilt the read models:
/// 977395 events, 200000 loops in 2.03 s (481475 events/s)`).
fn rebuild_report(stderr: &str) -> Option<Measurement> {
    let (_, rest) = stderr.rsplit_once("rebuilt the read models: ")?;
    let (events, rest) = rest.split_once(" events, ")?;
    let (_, rest) = rest.split_once(" loops in ")?;
    let (seconds, _) = rest.split_once(" s ")?;
    Some(Measurement {
        events: events.trim().parse().ok()?,
        elapsed: Duration::try_from_secs_f64(seconds.trim().parse().ok()?).ok()?,
    })
}

/// The section, markers included.
fn section(f: &RebuildFigures, machine: &Machine, command: &str) -> String {
    use std::fmt::Write as _;

    let mut out = String::new();
    header(
        &mut out,
        "<!-- bench:rebuild:start -->",
        "Rebuilding the read models beside raw sled",
        machine,
        command,
    );
    let data = match f.loops {
        Some(loops) => format!("`closeloop demo --loops {loops}`"),
        None => "an existing data directory".to_owned(),
    };
    let _ = writeln!(
        out,
        "- Data: {data}: {} entries, {} MiB of entries\n",
        thousands(f.rebuild.events as f64),
        thousands(f.bytes as f64 / (1024.0 * 1024.0)),
    );
    let _ = writeln!(
        out,
        "Each round reads the same log three ways, one after the other: raw sled's range \
         iterator over every entry on one thread and then on two (each over half the \
         positions), decoding nothing, and `closeloop rebuild` (read, decode, apply every \
         event; timed from its first read to its last event applied, as its own report says). \
         Every figure is the median of the rounds. A rebuild reads every entry, so row 2 — \
         both cores doing nothing but reading — is the ceiling under it.\n"
    );
    out.push_str(
        "| # | Work | Events | Seconds | Events/s | vs raw |\n|---|---|---:|---:|---:|---|\n",
    );
    let rows = [
        (
            "raw sled: scan every entry, 1 thread, nothing decoded",
            &f.raw_one,
            String::new(),
        ),
        (
            "raw sled: scan every entry, 2 threads, nothing decoded",
            &f.raw_two,
            String::new(),
        ),
        (
            "`closeloop rebuild`: read, decode, apply",
            &f.rebuild,
            format!(
                "3 vs 1: {}, 3 vs 2: {}",
                percent(f.rebuild.ratio_to(&f.raw_one)),
                percent(f.rebuild.ratio_to(&f.raw_two))
            ),
        ),
    ];
    for (n, (work, m, versus)) in rows.into_iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {work} | {} | {:.2} | {} | {versus} |",
            n + 1,
            thousands(m.events as f64),
            m.elapsed.as_secs_f64(),
            thousands(m.per_second()),
        );
    }
    out.push('\n');
    out.push_str(&report::target_table([(
        "`closeloop rebuild`, events/s",
        thousands(TARGET),
        thousands(f.rebuild.per_second()),
        f.rebuild.per_second() >= TARGET,
    )]));
    if f.raw_two.per_second() < TARGET {
        let _ = writeln!(
            out,
            "\nRaw sled reading this log on both cores (row 2) gives {} entries/s, below the \
             target: no rebuild that reads the log from sled can meet it on this machine.",
            thousands(f.raw_two.per_second())
        );
    }
    out.push_str("<!-- bench:rebuild:end -->\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_and_seconds_from_the_rebuild_report() {
        let report = "some log line\nrebuilt the read models: 977395 events, 200000 loops in \
                      2.03 s (481475 events/s)\n";
        let measured = rebuild_report(report).expect("a report");
        assert_eq!(measured.events, 977_395);
        assert_eq!(measured.elapsed, Duration::from_millis(2030));
        assert!(rebuild_report("error: no store").is_none());
    }
}
