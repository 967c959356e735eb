//! `closeloop rebuild`: drops the read models and rebuilds them from the log, with progress.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use closeloop_projections::{Projections, rebuild};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::MasterKeyArgs;

/// Entries read from the log at a time.
const PAGE: usize = 8192;

/// Rebuilds the read models from position 0 and saves them as the new snapshot. Exits 4 when
/// the data directory holds no store, 5 on any other failure.
///
/// With the master key, loops stored before public ids existed get the same public ids as
/// `serve` gives them; without it they get ones valid for this snapshot only, until `serve`
/// next rebuilds.
pub async fn run(data_dir: &Path, master: &MasterKeyArgs) -> anyhow::Result<ExitCode> {
    // Errors become exit statuses here, not in `main`, so each failure has its own.
    Ok(super::exit_status(rebuild_models(data_dir, master).await))
}

async fn rebuild_models(data_dir: &Path, master: &MasterKeyArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_existing_store(data_dir)?;
    let master = super::master_key(master)?;
    if master.is_some() {
        super::install_legacy_public_ids(&super::open_keys(data_dir, master.as_ref())?);
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events, {per_sec}, eta {eta}")
            .context("progress bar template")?,
    );
    let started = Instant::now();
    let result = rebuild(&store, PAGE, |applied, head| {
        bar.set_length(head);
        bar.set_position(applied);
    })
    .await;
    store.close().await;
    bar.finish();
    let models = result.context("rebuilding the read models failed")?;
    let seconds = started.elapsed().as_secs_f64();
    let events = models.checkpoint();
    let loops = models.loop_count();
    Projections::new(models)
        .save_snapshot(&super::snapshot_path(data_dir))
        .context("cannot save the rebuilt read models")?;
    #[allow(clippy::cast_precision_loss, reason = "a rate for people to read")]
    let rate = events as f64 / seconds.max(f64::MIN_POSITIVE);
    eprintln!(
        "rebuilt the read models: {events} events, {loops} loops in {seconds:.2} s ({rate:.0} events/s)"
    );
    Ok(ExitCode::SUCCESS)
}
