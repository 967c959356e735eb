//! Configuration: flags, each with its `CLOSELOOP_…` environment variable (contract §4).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use closeloop_api::ApiTokens;
use closeloop_domain::{LimitError, Limits};

/// Closeloop makes sure no piece of patient or carer feedback is lost and every one gets an
/// answer: "you said, we did".
#[derive(Debug, Parser)]
#[command(name = "closeloop", version, about, long_about = None)]
pub struct Cli {
    /// Where the embedded event store keeps its files.
    #[arg(
        long,
        env = "CLOSELOOP_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Log format on stderr; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "CLOSELOOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: HTTP API, NATS ingestion and the outbound feed in one process.
    Serve(ServeArgs),
    /// Print every stored event as NDJSON, in position order (the `GET /v1/events` format).
    ///
    /// Exit status: 0 done; 4 the data directory holds no store; 5 any other failure.
    Replay(ReplayArgs),
    /// Re-walk the hash chains and print the Merkle tree head; exits 1 on tampering.
    ///
    /// Exit status: 0 the log verifies; 1 it does not (TAMPERED: altered or damaged); 3
    /// --upto is beyond the head of the log; 4 the data directory holds no store; 5 any other
    /// failure.
    Verify(VerifyArgs),
    /// Load a realistic demo data set (several thousand loops) into the data directory.
    Demo(DemoArgs),
    /// Drop the read models and rebuild them from the log, with progress.
    ///
    /// Exit status: 0 done; 4 the data directory holds no store; 5 any other failure.
    Rebuild,
}

/// `closeloop demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many loops to create.
    #[arg(long, default_value_t = 5000)]
    pub loops: usize,

    /// Seed of the generator: the same seed gives the same data (and loading it twice stores
    /// nothing new).
    #[arg(long, default_value_t = 2015)]
    pub seed: u64,
}

/// Which event store backs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// Embedded sled database in the data directory.
    Sled,
    /// A NATS JetStream stream (clustered deployments).
    Jetstream,
}

/// `closeloop serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "CLOSELOOP_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// NATS server(s) for ingestion and the outbound feed (comma-separated for a cluster);
    /// `off` disables NATS.
    #[arg(
        long,
        env = "CLOSELOOP_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// Copies of each NATS stream Closeloop creates (FEEDBACK, FEEDBACK_DLQ,
    /// CLOSELOOP_EVENTS): 1 for a single server, 3 for a cluster. Existing streams are left
    /// as they are.
    #[arg(long, env = "CLOSELOOP_NATS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: u8,

    /// Days a dead letter is kept in FEEDBACK_DLQ (it holds the original message, personal
    /// data included): the stream's max_age, applied on every start to a new or existing
    /// stream. Closeloop erases each dead letter in the last two hours before it.
    #[arg(long, env = "CLOSELOOP_DLQ_MAX_AGE_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=3650))]
    pub dlq_max_age_days: u16,

    /// Which event store to use.
    #[arg(long, env = "CLOSELOOP_STORE", value_enum, default_value_t = StoreKind::Sled)]
    pub store: StoreKind,

    /// API tokens as `role:token,role:token` (roles: staff, leader, auditor, admin).
    #[arg(
        long,
        env = "CLOSELOOP_API_TOKENS",
        default_value = "",
        hide_env_values = true
    )]
    pub api_tokens: ApiTokens,

    /// Working days to acknowledge feedback.
    #[arg(long, env = "CLOSELOOP_SLA_ACK_DAYS", default_value_t = 3)]
    pub sla_ack_days: u32,

    /// Working days to close a loop.
    #[arg(long, env = "CLOSELOOP_SLA_CLOSE_DAYS", default_value_t = 25)]
    pub sla_close_days: u32,

    /// Load the demo data set (5000 loops) first when the store is empty, and accept the demo
    /// tokens `staff:demo-staff-token`, `leader:demo-leader-token`,
    /// `auditor:demo-auditor-token` and `admin:demo-admin-token` unless CLOSELOOP_API_TOKENS is
    /// set. For trying Closeloop out, never for production.
    #[arg(long)]
    pub demo: bool,

    /// The bounds on what one event may hold, over HTTP and NATS alike.
    #[command(flatten)]
    pub input_limits: InputLimitArgs,
}

/// The field limits of `docs/events.md`: each defaults to the documented value, and an
/// operator may lower any of them (never raise: the defaults are what the outbound feed and the
/// read models are sized for).
#[derive(Debug, Args)]
pub struct InputLimitArgs {
    /// Longest story, in bytes.
    #[arg(long, env = "CLOSELOOP_MAX_STORY_BYTES", default_value_t = Limits::DEFAULT.max_story_bytes)]
    pub max_story_bytes: usize,

    /// Longest value of every other text field (unknown fields included), in bytes.
    #[arg(long, env = "CLOSELOOP_MAX_TEXT_BYTES", default_value_t = Limits::DEFAULT.max_text_bytes)]
    pub max_text_bytes: usize,

    /// Most themes on one loop.
    #[arg(long, env = "CLOSELOOP_MAX_THEMES", default_value_t = Limits::DEFAULT.max_themes)]
    pub max_themes: usize,

    /// Most seldom-heard tags on one loop.
    #[arg(long, env = "CLOSELOOP_MAX_SELDOM_HEARD", default_value_t = Limits::DEFAULT.max_seldom_heard)]
    pub max_seldom_heard: usize,

    /// Longest theme or seldom-heard tag, in bytes.
    #[arg(long, env = "CLOSELOOP_MAX_TAG_BYTES", default_value_t = Limits::DEFAULT.max_tag_bytes)]
    pub max_tag_bytes: usize,

    /// Most ratings on one loop.
    #[arg(long, env = "CLOSELOOP_MAX_RATINGS", default_value_t = Limits::DEFAULT.max_ratings)]
    pub max_ratings: usize,

    /// Deepest nesting of objects and arrays in an event's data.
    #[arg(long, env = "CLOSELOOP_MAX_JSON_DEPTH", default_value_t = Limits::DEFAULT.max_depth)]
    pub max_json_depth: usize,
}

impl InputLimitArgs {
    /// The limits to enforce.
    ///
    /// # Errors
    /// When a value is above its documented default, or zero.
    pub fn to_limits(&self) -> Result<Limits, LimitError> {
        let limits = Limits {
            max_story_bytes: self.max_story_bytes,
            max_text_bytes: self.max_text_bytes,
            max_themes: self.max_themes,
            max_seldom_heard: self.max_seldom_heard,
            max_tag_bytes: self.max_tag_bytes,
            max_ratings: self.max_ratings,
            max_depth: self.max_json_depth,
            ..Limits::DEFAULT
        };
        limits.check()?;
        Ok(limits)
    }
}

/// `closeloop replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Start after this global position (0: from the beginning).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
}

/// `closeloop verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify up to this position (default: the head).
    #[arg(long)]
    pub upto: Option<u64>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["closeloop", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dead_letters_are_kept_30_days_unless_told_otherwise_and_never_forever() {
        if std::env::var_os("CLOSELOOP_DLQ_MAX_AGE_DAYS").is_none() {
            assert_eq!(serve(&[]).unwrap().dlq_max_age_days, 30);
        }
        assert_eq!(
            serve(&["--dlq-max-age-days", "7"])
                .unwrap()
                .dlq_max_age_days,
            7
        );
        assert!(serve(&["--dlq-max-age-days", "0"]).is_err());
        assert!(serve(&["--dlq-max-age-days", "3651"]).is_err());
    }
}
