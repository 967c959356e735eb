//! `closeloop replay`: every stored event as NDJSON on stdout.

use std::io::{BufWriter, ErrorKind, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use closeloop_store::EventStore;

use closeloop_store::record::Reveal;

use crate::config::{MasterKeyArgs, ReplayArgs};

/// How many events are read at a time.
const PAGE: usize = 4096;

/// Prints the log from `--after` to the head, one line an event. Exits 4 when the data
/// directory holds no store, 5 on any other failure.
///
/// Personal data is shown with the master key; without one it reads `"[encrypted]"`, and
/// erased data reads `"[erased]"` either way.
pub async fn run(
    data_dir: &Path,
    master: &MasterKeyArgs,
    args: &ReplayArgs,
) -> anyhow::Result<ExitCode> {
    // Errors become exit statuses here, not in `main`, so each failure has its own.
    Ok(super::exit_status(replay(data_dir, master, args).await))
}

async fn replay(
    data_dir: &Path,
    master: &MasterKeyArgs,
    args: &ReplayArgs,
) -> anyhow::Result<ExitCode> {
    let store = super::open_existing_store(data_dir)?;
    let master = super::master_key(master)?;
    let keys = super::open_keys(data_dir, master.as_ref())?;
    if master.is_some() {
        // Personal fields will be shown: who looked is recorded first (docs/privacy.md).
        record_replay(data_dir).await?;
    }
    let result = print_log(&store, Reveal::With(keys.as_ref()), args.after).await;
    store.close().await;
    match result {
        // A closed pipe (`closeloop replay | head`) is a normal way to stop reading.
        Err(err) if is_broken_pipe(&err) => Ok(ExitCode::SUCCESS),
        other => other.map(|()| ExitCode::SUCCESS),
    }
}

async fn print_log(store: &impl EventStore, reveal: Reveal<'_>, after: u64) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut after = after;
    loop {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for entry in &page {
            let line = entry
                .to_line(reveal)
                .with_context(|| format!("cannot read the event at position {}", entry.position))?;
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Records in the access log that the operator replayed the log with personal data, before
/// any of it is printed.
async fn record_replay(data_dir: &Path) -> anyhow::Result<()> {
    let operator = std::env::var("USER")
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let entry = closeloop_access::AccessEntry {
        at: jiff::Timestamp::now(),
        actor: closeloop_access::Actor::parse(&format!("cli:{operator}"))
            .context("operator name for the access log")?,
        role: closeloop_access::RoleName::parse("operator").context("access log role")?,
        loop_id: None,
        what: closeloop_access::What::Replay,
    };
    closeloop_access::record_offline(closeloop_access::FileAccessLog::dir_in(data_dir), entry)
        .await
        .context("cannot record this replay in the access log; nothing was printed")?;
    Ok(())
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|json| json.io_error_kind() == Some(ErrorKind::BrokenPipe))
    })
}
