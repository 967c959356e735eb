//! `closeloop-bench`: throughput of Closeloop's event store, each figure beside raw sled doing
//! the same work on the same run and machine.
//!
//! ```sh
//! cargo run --release -p closeloop-bench -- store [--events N] [--single-writer-events M] \
//!     [--write docs/benchmarks.md]
//! cargo run --release -p closeloop-bench -- ingest [--events N] [--rate R] [--seconds S] \
//!     [--write docs/benchmarks.md]
//! ```
//!
//! - [`store`] runs the measurements (durable appends with one and with 64 writers, read-all
//!   with decode) and judges them against the targets;
//! - [`ingest`] measures NATS ingestion (drain rate beside a raw JetStream pull consumer) and
//!   the latency from publish to the outbound feed, on a private `nats-server`;
//! - [`machine`] describes the machine they ran on;
//! - [`report`] renders the figures as markdown and splices them into a document between
//!   `<!-- bench:store:start -->` and `<!-- bench:store:end -->`.
//!
//! Figures in `docs/benchmarks.md` come from this binary only, never from tests: rerun it (in
//! release mode) to refresh them.

mod ingest;
mod machine;
mod report;
mod store;

use clap::{Parser, Subcommand};

/// The allocator the service runs with (see the `closeloop` binary), so figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Throughput benchmarks of Closeloop, beside the raw backend doing the same work.
#[derive(Debug, Parser)]
#[command(name = "closeloop-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to measure.
#[derive(Debug, Subcommand)]
enum Command {
    /// Durable appends (1 and 64 writers) and read-all of the sled event store, beside raw sled.
    Store(store::StoreArgs),
    /// NATS ingestion drain rate beside a raw pull consumer, and publish-to-feed latency.
    Ingest(ingest::IngestArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Store(args) => store::run(&args),
        Command::Ingest(args) => ingest::run(&args),
    }
}
