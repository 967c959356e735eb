//! `closeloop-bench`: throughput of Closeloop's event store and NATS ingestion, each figure
//! beside the raw backend doing the same work on the same run and machine, and the service's
//! latency under a storm of expensive reads.
//!
//! ```sh
//! cargo run --release -p closeloop-bench -- store [--events N] [--single-writer-events M] \
//!     [--postgres CONNINFO | --no-postgres] [--write docs/benchmarks.md]
//! cargo run --release -p closeloop-bench -- ingest [--events N] [--rate R] [--seconds S] \
//!     [--write docs/benchmarks.md]
//! cargo build --release -p closeloop -p closeloop-bench
//! target/release/closeloop-bench storm [--loops N] [--seconds S] [--write docs/benchmarks.md]
//! cargo run --release -p closeloop-bench -- jetstream [--events N] [--catch-up-events N] \
//!     [--quick] [--write docs/benchmarks.md]
//! target/release/closeloop-bench rebuild [--loops N | --data-dir DIR] [--repeat R] \
//!     [--write docs/benchmarks.md]
//! ```
//!
//! - [`store`] runs the measurements (durable appends with one and with 64 writers, read-all
//!   with decode) and judges them against the targets, each beside raw sled and beside
//!   PostgreSQL doing the same work ([`postgres`]);
//! - [`ingest`] measures NATS ingestion (drain rate beside a raw JetStream pull consumer) and
//!   the latency from publish to the outbound feed, on a private `nats-server`;
//! - [`storm`] starts the real `closeloop serve` over a store of demo loops and measures
//!   `/healthz` and `POST /v1/feedback` with and without a storm of expensive reads
//!   (`GET /v1/audit/verify`, `GET /v1/you-said-we-did`);
//! - [`jetstream`] measures the JetStream event store on one node (R1) and on a 3-node
//!   cluster (R3), each beside raw JetStream publishing and the sled store: appends with one
//!   and 64 writers, cold read-all, and how long a new store takes to open (catch up) on a
//!   long log;
//! - [`rebuild`] times `closeloop rebuild` beside raw sled reading the same log, the ceiling
//!   under any rebuild;
//! - [`machine`] describes the machine they ran on;
//! - [`report`] renders the figures as markdown and splices them into a document, each
//!   benchmark's between its own markers such as `<!-- bench:store:start -->` and
//!   `<!-- bench:store:end -->`.
//!
//! Figures in `docs/benchmarks.md` come from this binary only, never from tests: rerun it (in
//! release mode) to refresh them.

mod ingest;
mod jetstream;
mod machine;
mod postgres;
mod rebuild;
mod report;
mod service;
mod store;
mod storm;

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
    /// Durable appends (1 and 64 writers) and read-all of the sled event store, beside raw sled
    /// and beside a PostgreSQL event table.
    Store(store::StoreArgs),
    /// NATS ingestion drain rate beside a raw pull consumer, and publish-to-feed latency.
    Ingest(ingest::IngestArgs),
    /// `/healthz` and `POST /v1/feedback` latency of the real service over 50,000 demo loops,
    /// with and without a storm of `GET /v1/audit/verify` and `GET /v1/you-said-we-did`.
    Storm(storm::StormArgs),
    /// The JetStream event store on one node (R1) and a 3-node cluster (R3): appends (1 and
    /// 64 writers), cold read-all and catch-up, beside raw JetStream publishing and sled.
    Jetstream(jetstream::JetstreamArgs),
    /// `closeloop rebuild` over demo loops, beside raw sled reading the same log on one and on
    /// two threads, nothing decoded.
    Rebuild(rebuild::RebuildArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Store(args) => store::run(&args),
        Command::Ingest(args) => ingest::run(&args),
        Command::Storm(args) => storm::run(&args),
        Command::Jetstream(args) => jetstream::run(&args),
        Command::Rebuild(args) => rebuild::run(&args),
    }
}
