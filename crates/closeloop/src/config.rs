//! Configuration: flags, each with its `CLOSELOOP_…` environment variable (contract §4).

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use closeloop_api::ApiTokens;
use closeloop_api::auth::TokenConfigError;
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

    /// The master key personal data is encrypted under (contract §4).
    #[command(flatten)]
    pub master_key: MasterKeyArgs,

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
    Serve(Box<ServeArgs>),
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
    /// Give the master key, so that loops stored before public ids existed get the public ids
    /// `serve` gives them; without it their ids hold for this snapshot only.
    ///
    /// Exit status: 0 done; 4 the data directory holds no store; 5 any other failure.
    Rebuild,
    /// Rewrap every data key under a new master key. Stop `serve` first; afterwards start it
    /// with the new key (the old one no longer opens the key store).
    ///
    /// Exit status: 0 done; 2 a master key is missing or malformed; 4 the data directory
    /// holds no store; 5 any other failure.
    RotateMasterKey(RotateArgs),
}

/// The master key: 32 bytes as 64 hex characters, given directly or in a file.
#[derive(Debug, Clone, Args)]
pub struct MasterKeyArgs {
    /// The master key as 64 hex characters. Prefer CLOSELOOP_MASTER_KEY_FILE: a flag shows in
    /// the process list.
    #[arg(
        long,
        env = "CLOSELOOP_MASTER_KEY",
        hide_env_values = true,
        global = true,
        conflicts_with = "master_key_file"
    )]
    pub master_key: Option<String>,

    /// A file holding the master key as 64 hex characters (readable by the service only).
    #[arg(long, env = "CLOSELOOP_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,
}

/// `closeloop rotate-master-key`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// A file holding the new master key as 64 hex characters.
    #[arg(long, env = "CLOSELOOP_NEW_MASTER_KEY_FILE")]
    pub new_master_key_file: PathBuf,
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

    /// The store to load into: the data directory's, or (`--store jetstream`) the JetStream
    /// log `serve` uses with the same settings.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Where the event log lives, and the NATS servers.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Which event store to use.
    #[arg(long, env = "CLOSELOOP_STORE", value_enum, default_value_t = StoreKind::Sled)]
    pub store: StoreKind,

    /// NATS server(s) for ingestion and the outbound feed, and for the log on the JetStream
    /// store (comma-separated for a cluster); `off` disables NATS.
    #[arg(
        long,
        env = "CLOSELOOP_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// Copies of each NATS stream Closeloop creates (FEEDBACK, FEEDBACK_DLQ,
    /// CLOSELOOP_EVENTS, and on the JetStream store its log, keys, access log and snapshots):
    /// 1 for a single server, 3 for a cluster. Existing streams are left as they are.
    #[arg(long, env = "CLOSELOOP_NATS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: u8,
}

impl BackendArgs {
    /// Why these settings cannot work, if they cannot: the JetStream store with NATS off.
    #[must_use]
    pub fn contradiction(&self) -> Option<&'static str> {
        (self.store == StoreKind::Jetstream && self.nats_url == "off").then_some(
            "CLOSELOOP_STORE=jetstream keeps the log in NATS JetStream, so CLOSELOOP_NATS_URL \
             cannot be off; give the NATS servers' URLs",
        )
    }
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

    /// The event store, and the NATS servers ingestion and the outbound feed use.
    #[command(flatten)]
    pub backend: BackendArgs,

    /// Days a dead letter is kept in FEEDBACK_DLQ (it holds the original message, personal
    /// data included): the stream's max_age, applied on every start to a new or existing
    /// stream. Closeloop erases each dead letter in the last two hours before it.
    #[arg(long, env = "CLOSELOOP_DLQ_MAX_AGE_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=3650))]
    pub dlq_max_age_days: u16,

    /// This replica's name among several on one JetStream store (`/readyz` shows which one
    /// publishes the outbound feed): 1 to 64 of `A-Z a-z 0-9 . _ : -`. Default: the host name
    /// and the process id.
    #[arg(long, env = "CLOSELOOP_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// API tokens, comma-separated, each `role:token`, `role:token:name` or
    /// `role@org/unit:token:name` (roles: staff, leader, auditor, admin; the name is recorded
    /// as the actor of what the token does; `@org/unit` limits it to that part of the
    /// organisation).
    #[arg(
        long,
        env = "CLOSELOOP_API_TOKENS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub api_tokens: TokenList,

    /// Working days to acknowledge feedback.
    #[arg(long, env = "CLOSELOOP_SLA_ACK_DAYS", default_value_t = 3)]
    pub sla_ack_days: u32,

    /// Working days to close a loop.
    #[arg(long, env = "CLOSELOOP_SLA_CLOSE_DAYS", default_value_t = 25)]
    pub sla_close_days: u32,

    /// Days the access log (who read personal data, in <data-dir>/access) keeps its entries.
    #[arg(long, env = "CLOSELOOP_ACCESS_LOG_RETENTION_DAYS", default_value_t = closeloop_access::Retention::DEFAULT_DAYS, value_parser = clap::value_parser!(u32).range(1..=i64::from(closeloop_access::Retention::MAX_DAYS)))]
    pub access_log_retention_days: u32,

    /// The organisation's name as people know it, shown in the header and titles of every
    /// page. With --demo and no name given, the demo trusts' name.
    #[arg(long, env = "CLOSELOOP_ORGANISATION")]
    pub organisation: Option<String>,

    /// A file naming the places (org units) the pages show: one `org_unit = Display name` a
    /// line, `#` for comments. An org unit without a name is shown after its nearest named
    /// ancestor ("Ward 9, Royal Infirmary"), or by its last segment ("Ward 9"). With --demo
    /// and no file given, the demo's places.
    #[arg(long, env = "CLOSELOOP_PLACES_FILE")]
    pub places_file: Option<PathBuf>,

    /// Where people give feedback (an https:// address), linked from the public page.
    #[arg(long, env = "CLOSELOOP_FEEDBACK_URL", value_parser = https_url)]
    pub feedback_url: Option<String>,

    /// Load the demo data set (5000 loops) first when the store is empty, and accept the demo
    /// tokens `staff:demo-staff-token`, `leader:demo-leader-token`,
    /// `auditor:demo-auditor-token` and `admin:demo-admin-token` unless CLOSELOOP_API_TOKENS is
    /// set. For trying Closeloop out, never for production.
    #[arg(long)]
    pub demo: bool,

    /// Show a story on the public "you said, we did" page only after a staff member approved
    /// it (`POST /v1/loops/{id}/story-approvals`, optionally with an edited text). Off by
    /// default; recommended, since patterns cannot catch the names of staff or relatives.
    #[arg(
        long,
        env = "CLOSELOOP_PUBLISH_REQUIRES_APPROVAL",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub publish_requires_approval: bool,

    /// The bounds on what one event may hold, over HTTP and NATS alike.
    #[command(flatten)]
    pub input_limits: InputLimitArgs,
}

/// `CLOSELOOP_API_TOKENS` as given. clap only keeps the text: were clap to parse the tokens,
/// its error for a faulty entry would quote the whole value, every token in it, on stderr.
/// [`TokenList::parse`] parses it with errors that name entries by place, never by token; the
/// text itself never prints.
#[derive(Clone, Default)]
pub struct TokenList(String);

impl TokenList {
    /// The configured tokens.
    ///
    /// # Errors
    /// [`TokenConfigError`] naming the first faulty entry by its place in the list.
    pub fn parse(&self) -> Result<ApiTokens, TokenConfigError> {
        self.0.parse()
    }
}

impl FromStr for TokenList {
    type Err = Infallible;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(Self(raw.to_owned()))
    }
}

impl fmt::Debug for TokenList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenList(..)")
    }
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

/// An `https://` address of at most 2,000 bytes, without spaces or quotes.
fn https_url(raw: &str) -> Result<String, String> {
    let fine = raw.starts_with("https://")
        && raw.len() > "https://".len()
        && raw.len() <= 2000
        && !raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'));
    if fine {
        Ok(raw.to_owned())
    } else {
        Err("use an https:// address of at most 2,000 characters, such as https://www.example.nhs.uk/feedback".to_owned())
    }
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
            Command::Serve(args) => Ok(*args),
            other => panic!("{other:?}"),
        }
    }

    fn serve_args(tokens: &str) -> ServeArgs {
        serve(&["--api-tokens", tokens]).expect("clap takes any token text")
    }

    #[test]
    fn a_faulty_token_list_is_reported_without_its_tokens() {
        let secret = "very-secret-token-1";
        for tokens in [
            format!("staff:{secret},leader:short"),
            format!("staff:{secret},nurse:another-secret-2"),
            format!("staff@rxx//a:{secret}:pals"),
        ] {
            let args = serve_args(&tokens);
            assert!(!format!("{args:?}").contains(secret), "Debug shows a token");
            let err = args.api_tokens.parse().expect_err(&tokens).to_string();
            assert!(err.starts_with("CLOSELOOP_API_TOKENS entry"), "{err}");
            assert!(
                !err.contains(secret) && !err.contains("another-secret-2"),
                "the error shows a token: {err}"
            );
        }
        let tokens = serve_args(&format!("staff@rxx/site-a:{secret}:pals-a"))
            .api_tokens
            .parse()
            .expect("valid");
        assert_eq!(tokens.len(), 1);
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
