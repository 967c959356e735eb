//! How long `serve` takes to make its read models ready from a snapshot, without opening the
//! store: reads and decodes the snapshot file as `serve` does, then computes (or takes from
//! the snapshot) the SLA-dependent figures, and prints the time of each step. Run it on any
//! data directory's snapshot; it only reads the file:
//!
//! ```text
//! cargo run --release -p closeloop --example start -- DATA_DIR/projections.snapshot [RUNS]
//! ```
//!
//! Set `START_ACK_DAYS` and `START_CLOSE_DAYS` to time another SLA than `serve`'s default, and
//! `START_SAVE_TO` to a path to save the prepared models' snapshot there after the last run
//! (as `serve` saves it, SLA figures included).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use closeloop_domain::{Calendar, Sla};
use closeloop_projections::Projections;

#[path = "support/resident.rs"]
mod resident;
use resident::resident_mib;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn days(var: &str, default: u32) -> anyhow::Result<u32> {
    std::env::var(var)
        .ok()
        .map_or(Ok(default), |v| v.parse().with_context(|| var.to_owned()))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let path: PathBuf = args
        .next()
        .context("usage: start SNAPSHOT_FILE [RUNS]")?
        .into();
    let runs: usize = args
        .next()
        .map(|runs| runs.to_string_lossy().parse())
        .transpose()
        .context("RUNS is a number")?
        .unwrap_or(3);
    let defaults = Sla::default();
    let sla = Sla {
        acknowledge_days: days("START_ACK_DAYS", defaults.acknowledge_days)?,
        close_days: days("START_CLOSE_DAYS", defaults.close_days)?,
        calendar: Calendar::weekdays(),
    };
    for run in 1..=runs {
        let started = Instant::now();
        let models = Projections::load_snapshot(&path)?;
        let loaded = started.elapsed().as_secs_f64();
        let prepared_at = Instant::now();
        models.prepare(&sla);
        let prepared = prepared_at.elapsed().as_secs_f64();
        let (resident, peak) = resident_mib();
        println!(
            "run {run}: {} loops; load {loaded:.3} s, prepare {prepared:.3} s, sum {:.3} s; \
             resident {:.0} MiB, peak {:.0} MiB",
            models.loop_count(),
            loaded + prepared,
            resident,
            peak,
        );
        if run == runs
            && let Some(to) = std::env::var_os("START_SAVE_TO")
        {
            Projections::new(models).save_snapshot(std::path::Path::new(&to))?;
        }
    }
    Ok(())
}
