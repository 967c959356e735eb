//! The `closeloop` command: runs the service and the operator tools.
//!
//! - [`config`]: every flag and environment variable, in one clap struct;
//! - [`telemetry`]: tracing, set up once, logging to stderr;
//! - [`commands`]: one module per subcommand (`serve`, `replay`, `verify`).

mod allocator;
mod commands;
mod config;
mod ingest_admin;
mod shutdown;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

use crate::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        // Before any thread starts: this may replace the process.
        allocator::settle_for_serving();
    }
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                commands::serve::run(&cli.data_dir, &cli.master_key, *args).await
            }
            Command::Replay(args) => {
                commands::replay::run(&cli.data_dir, &cli.master_key, &args).await
            }
            Command::Verify(args) => commands::verify::run(&cli.data_dir, &args).await,
            Command::Demo(args) => commands::demo::run(&cli.data_dir, &cli.master_key, &args).await,
            Command::Rebuild => commands::rebuild::run(&cli.data_dir, &cli.master_key).await,
            Command::RotateMasterKey(args) => {
                commands::rotate::run(&cli.data_dir, &cli.master_key, &args)
            }
        }
    });
    // Blocking work still running now (a read stuck on a failed disk, say) must not keep the
    // process from exiting: everything that had to finish has finished.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
