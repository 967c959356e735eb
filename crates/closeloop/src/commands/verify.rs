//! `closeloop verify`: re-walks the hash chains and prints the Merkle tree head.

use std::path::Path;
use std::process::ExitCode;

use closeloop_store::verify;

use crate::config::VerifyArgs;

/// Prints the verification report as JSON; exits 1 when the log does not verify.
pub async fn run(data_dir: &Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(data_dir)?;
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
        Ok(ExitCode::FAILURE)
    }
}
