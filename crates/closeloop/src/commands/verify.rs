//! `closeloop verify`: re-walks the hash chains and prints the Merkle tree head.

use std::path::Path;
use std::process::ExitCode;

use closeloop_store::{EventStore, verify};

use super::{EXIT_BEYOND_HEAD, EXIT_TAMPERED};
use crate::config::VerifyArgs;

/// Prints the verification report as JSON. Exits 0 when the log verifies, 1 when it does not
/// (tampering or damage), 3 when `--upto` is beyond the head, 4 when the data directory holds
/// no store, 5 on any other failure.
pub async fn run(data_dir: &Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    // Errors become exit statuses here, not in `main`, so each failure has its own.
    Ok(super::exit_status(check(data_dir, args).await))
}

async fn check(data_dir: &Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_existing_store(data_dir)?;
    let head = store.head();
    if let Some(upto) = args.upto.filter(|&upto| upto > head) {
        store.close().await;
        // Not tampering: the log is simply shorter. Said apart, with its own exit status.
        eprintln!(
            "beyond the head: --upto {upto} is beyond the head of the log, which is at position {head}; verify up to {head} or less"
        );
        return Ok(ExitCode::from(EXIT_BEYOND_HEAD));
    }
    let report = verify(&store, args.upto).await;
    store.close().await;
    let report = report?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.ok {
        eprintln!(
            "ok: {} events verified, Merkle head {}",
            report.events, report.head_hash
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "TAMPERED: first bad position {}: {}",
            report.first_bad_position.unwrap_or_default(),
            report.problem.as_deref().unwrap_or("unknown problem")
        );
        Ok(ExitCode::from(EXIT_TAMPERED))
    }
}
