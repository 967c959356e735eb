//! The PostgreSQL peer of `closeloop-bench store`: the same work against an event table in
//! PostgreSQL, the database a team would most likely pick instead of Closeloop's store.
//!
//! One table, [`TABLE`], in its own schema so that a `--postgres` pointed at a real database
//! never drops that database's own `events` table:
//!
//! ```sql
//! CREATE TABLE closeloop_bench.events (
//!     position    bigserial PRIMARY KEY,
//!     stream_id   text NOT NULL,
//!     version     bigint NOT NULL,
//!     event_type  text NOT NULL,
//!     source      text NOT NULL,
//!     event_id    text NOT NULL,
//!     payload     jsonb NOT NULL,
//!     recorded_at timestamptz NOT NULL DEFAULT now(),
//!     UNIQUE (stream_id, version),
//!     UNIQUE (source, event_id)
//! );
//! ```
//!
//! The two unique constraints do what the store checks on every append: one event per
//! (loop, version), and the idempotency key (source, event id). The payload is the store's
//! record (the same JSON bytes, personal data in plain) as `jsonb`. The table is dropped and
//! created again before each writing step, so every step starts empty.
//!
//! - Step 8, 1 writer: one connection, one autocommit `INSERT` per event, each awaited.
//! - Step 9, [`WRITERS`] writers: one connection each (opened before the clock starts), the
//!   same loops of [`EVENTS_PER_LOOP`](crate::store::EVENTS_PER_LOOP) events as the store's writers.
//! - Step 10, read-all: pages of [`READ_PAGE`] by position
//!   (`WHERE position > $1 ORDER BY position LIMIT $2`, keyset pagination), every payload
//!   decoded into the typed event by the function the store decodes its records with.
//!
//! Every connection sets `synchronous_commit = on` (PostgreSQL's default): an `INSERT` returns
//! only once its commit record is flushed to disk (by the server's `wal_sync_method`,
//! `fdatasync` on Linux), as a store append returns only once sled's `flush` has returned and
//! sled's log file was fdatasynced: the same promise.
//! Each writer passes its stream's next version itself, as an application holding the stream's
//! version would, and leaves the check to `UNIQUE (stream_id, version)`.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::hint::black_box;
use std::io;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::{BufMut, BytesMut};
use closeloop_domain::{Event, LoopId};
use closeloop_store::record;
use tokio::task::JoinSet;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, accepts, to_sql_checked};
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::store::{Measurement, READ_PAGE, WRITERS, writer_events};

/// Where the benchmark looks for PostgreSQL unless told otherwise: the local server's Unix
/// socket, as Debian's package runs it (trust auth for `postgres`), in a database of its own.
pub const DEFAULT_CONNINFO: &str = "host=/var/run/postgresql user=postgres dbname=closeloop_bench";

/// The event table, in a schema of the benchmark's own (see the [module docs](self)).
pub const TABLE: &str = "closeloop_bench.events";

/// How long to wait for the server before taking it for unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Drops the event table and creates it again, empty.
const FRESH_TABLE: &str = "
    CREATE SCHEMA IF NOT EXISTS closeloop_bench;
    DROP TABLE IF EXISTS closeloop_bench.events;
    CREATE TABLE closeloop_bench.events (
        position    bigserial PRIMARY KEY,
        stream_id   text NOT NULL,
        version     bigint NOT NULL,
        event_type  text NOT NULL,
        source      text NOT NULL,
        event_id    text NOT NULL,
        payload     jsonb NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (stream_id, version),
        UNIQUE (source, event_id)
    );";

const INSERT: &str = "INSERT INTO closeloop_bench.events \
     (stream_id, version, event_type, source, event_id, payload) VALUES ($1, $2, $3, $4, $5, $6)";

const READ_PAGE_SQL: &str = "SELECT position, stream_id, version, payload \
     FROM closeloop_bench.events WHERE position > $1 ORDER BY position LIMIT $2";

/// A PostgreSQL server that answered, with its database ready for the benchmark.
#[derive(Debug, Clone)]
pub struct Postgres {
    config: Config,
    /// What the report says of the server: version, where, and its durability settings.
    pub server: String,
}

/// Whether the PostgreSQL steps can run.
#[derive(Debug)]
pub enum Availability {
    /// The server answered and the database is there (boxed: a `Config` is large).
    Ready(Box<Postgres>),
    /// No server could be reached: why, in words for the report.
    Unreachable(String),
}

/// The PostgreSQL figures of a run, or why there are none.
#[derive(Debug, Clone)]
pub enum PostgresFigures {
    /// Steps 8 to 10 ran.
    Measured {
        /// The server, as [`Postgres::server`] describes it.
        server: String,
        /// 8. 1 writer, one autocommit `INSERT` per event, each awaited.
        single: Measurement,
        /// 9. [`WRITERS`] connections inserting at once.
        concurrent: Measurement,
        /// 10. Keyset pages of [`READ_PAGE`] + typed decode.
        read_all: Measurement,
    },
    /// Steps 8 to 10 did not run: why.
    Skipped(String),
}

/// Parses `conninfo` (libpq's `key=value` form or a `postgresql://` URL).
///
/// # Errors
/// When it is neither.
pub fn parse_conninfo(conninfo: &str) -> Result<Config> {
    Config::from_str(conninfo).with_context(|| {
        format!(
            "--postgres {conninfo:?} is not a PostgreSQL connection string: give \
             `host=… user=… dbname=…` or `postgresql://user@host/dbname`"
        )
    })
}

/// Connects to the server `conninfo` names, creating its database when missing, and reads
/// what the report says of it.
///
/// # Errors
/// When the server answers but refuses (authentication, permissions), or the database cannot
/// be created; only a server that cannot be reached at all is [`Availability::Unreachable`].
pub async fn prepare(conninfo: &str) -> Result<Availability> {
    let mut config = parse_conninfo(conninfo)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let place = describe_place(&config);
    let client = match connect(&config).await {
        Ok(client) => client,
        Err(err) if unreachable(&err) => {
            return Ok(Availability::Unreachable(format!(
                "cannot reach PostgreSQL at {place}: {}",
                error_chain(&err)
            )));
        }
        Err(err) if err.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            create_database(&config).await?;
            connect(&config).await.with_context(|| {
                format!("cannot connect to PostgreSQL at {place} after creating its database")
            })?
        }
        Err(err) => {
            return Err(anyhow::Error::new(err).context(format!(
                "PostgreSQL at {place} refused the benchmark: check the user and database in \
                 --postgres (or CLOSELOOP_BENCH_POSTGRES), or pass --no-postgres"
            )));
        }
    };
    let server = describe_server(&client, &place).await?;
    Ok(Availability::Ready(Box::new(Postgres { config, server })))
}

/// Whether `err` says no server answered at all (nothing listening, no socket, a timeout, or
/// a server starting up or shutting down), rather than a server that answered and refused.
fn unreachable(err: &tokio_postgres::Error) -> bool {
    let io = err.source().is_some_and(<dyn StdError>::is::<io::Error>);
    let not_now = err.code() == Some(&SqlState::CANNOT_CONNECT_NOW);
    io || not_now
}

/// `err` and its causes, joined as anyhow prints them with `{:#}`.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let _ = write!(out, ": {cause}");
        next = cause.source();
    }
    out
}

/// Where `config` points, without its password: `/var/run/postgresql (database closeloop_bench,
/// user postgres)`.
pub fn describe_place(config: &Config) -> String {
    let hosts = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>();
    let hosts = if hosts.is_empty() {
        "(no host)".to_owned()
    } else {
        hosts.join(",")
    };
    let port = match config.get_ports() {
        [] | [5432] => String::new(),
        ports => format!(
            " port {}",
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    format!(
        "{hosts}{port} (database {}, user {})",
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)")
    )
}

/// Connects to `config`'s server, the connection driven by its own task; every commit waits
/// for its WAL flush (`synchronous_commit = on`), whatever the server's default.
async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("PostgreSQL connection failed: {err}");
        }
    });
    client.batch_execute("SET synchronous_commit = on").await?;
    Ok(client)
}

/// Creates `config`'s database, connected to the `postgres` database; another run creating it
/// at the same moment is not an error.
async fn create_database(config: &Config) -> Result<()> {
    let name = config
        .get_dbname()
        .context("no database named in --postgres")?;
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance).await.with_context(|| {
        format!(
            "database {name} is missing and the `postgres` database to create it from is out \
             of reach: create {name} yourself or name another in --postgres"
        )
    })?;
    match client
        .batch_execute(&format!("CREATE DATABASE {}", quote_identifier(name)))
        .await
    {
        Err(err) if err.code() != Some(&SqlState::DUPLICATE_DATABASE) => {
            Err(anyhow::Error::new(err).context(format!(
                "cannot create database {name}: create it yourself (`createdb {name}`) or \
                 name another in --postgres"
            )))
        }
        _ => Ok(()),
    }
}

/// `name` as an SQL identifier, quoted.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The server's version and durability settings, where it is.
async fn describe_server(client: &Client, place: &str) -> Result<String> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('fsync'), \
                    current_setting('synchronous_commit'), current_setting('wal_sync_method')",
            &[],
        )
        .await
        .context("cannot read the PostgreSQL server's settings")?;
    let (version, fsync, synchronous_commit, wal_sync_method): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let mut server = format!(
        "PostgreSQL {version} at {place}, fsync {fsync}, synchronous_commit \
         {synchronous_commit}, wal_sync_method {wal_sync_method}"
    );
    if fsync != "on" {
        server.push_str(" (fsync off: commits are not durable, figures flatter PostgreSQL)");
    }
    Ok(server)
}

impl Postgres {
    /// A new connection, with [`TABLE`] dropped and created again, empty.
    async fn fresh_table(&self) -> Result<Client> {
        let client = connect(&self.config)
            .await
            .context("cannot connect to PostgreSQL again")?;
        client
            .batch_execute(FRESH_TABLE)
            .await
            .with_context(|| format!("cannot create {TABLE}"))?;
        Ok(client)
    }

    /// Step 8: `count` single-event appends, one autocommit `INSERT` each, one after the
    /// other.
    ///
    /// # Errors
    /// When an `INSERT` fails or the table does not hold `count` events after.
    pub async fn single_writer(&self, count: u64) -> Result<Measurement> {
        let client = self.fresh_table().await?;
        let writer = Writer::prepare(client, "single", count).await?;
        let start = Instant::now();
        let client = writer.run().await?;
        let measured = Measurement::since(count, start);
        ensure_holds(&client, count).await?;
        Ok(measured)
    }

    /// Steps 9 and 10: `count` single-event appends from [`WRITERS`] connections at once; then
    /// every event read back in pages and decoded.
    ///
    /// # Errors
    /// When a connection or an `INSERT` fails, or a step does not see every event.
    pub async fn concurrent_then_read(&self, count: u64) -> Result<(Measurement, Measurement)> {
        let reader = self.fresh_table().await?;
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let share = count / WRITERS + u64::from(writer < count % WRITERS);
            let client = connect(&self.config).await.with_context(|| {
                format!(
                    "cannot open connection {} of {WRITERS} to PostgreSQL: raise its \
                     max_connections",
                    writer + 1
                )
            })?;
            writers.push(Writer::prepare(client, &format!("w{writer}"), share).await?);
        }

        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for writer in writers {
            tasks.spawn(writer.run());
        }
        while let Some(joined) = tasks.join_next().await {
            joined.context("a writer task panicked")??;
        }
        let written = Measurement::since(count, start);
        ensure_holds(&reader, count).await?;

        let start = Instant::now();
        let decoded = read_and_decode_all(&reader).await?;
        let read = Measurement::since(decoded, start);
        ensure!(
            decoded == count,
            "the read saw {decoded} events, not {count}"
        );
        Ok((written, read))
    }
}

/// One writer's connection, its prepared `INSERT` and the events it will append.
struct Writer {
    client: Client,
    insert: Statement,
    events: Vec<(LoopId, u64, Event)>,
}

impl Writer {
    async fn prepare(client: Client, name: &str, count: u64) -> Result<Self> {
        let insert = client
            .prepare(INSERT)
            .await
            .with_context(|| format!("cannot prepare the INSERT into {TABLE}"))?;
        let events = writer_events(name, count).collect::<Result<_>>()?;
        Ok(Self {
            client,
            insert,
            events,
        })
    }

    /// Appends every event, each its own transaction, encoded as the store encodes its
    /// records (inside the clock, as the store's appends encode theirs); gives the connection
    /// back.
    async fn run(self) -> Result<Client> {
        for (loop_id, version, event) in &self.events {
            let payload = record::encode(event);
            let version = i64::try_from(*version)?;
            self.client
                .execute(
                    &self.insert,
                    &[
                        &loop_id.as_str(),
                        &version,
                        &event.event_type().as_str(),
                        &event.source,
                        &event.event_id,
                        &Jsonb(&payload),
                    ],
                )
                .await
                .with_context(|| format!("cannot insert into {TABLE}"))?;
        }
        Ok(self.client)
    }
}

/// Checks that [`TABLE`] holds `count` events.
async fn ensure_holds(client: &Client, count: u64) -> Result<()> {
    let held: i64 = client
        .query_one("SELECT count(*) FROM closeloop_bench.events", &[])
        .await
        .with_context(|| format!("cannot count the events in {TABLE}"))?
        .get(0);
    ensure!(
        u64::try_from(held) == Ok(count),
        "{TABLE} holds {held} events, not {count}"
    );
    Ok(())
}

/// Reads every event of [`TABLE`] in pages of [`READ_PAGE`] by position, decoding each
/// payload into its typed event; returns how many there were.
async fn read_and_decode_all(client: &Client) -> Result<u64> {
    let page_sql = client
        .prepare(READ_PAGE_SQL)
        .await
        .context("cannot prepare the page query")?;
    let limit = i64::try_from(READ_PAGE)?;
    let mut after = 0_i64;
    let mut decoded = 0;
    loop {
        let rows = client
            .query(&page_sql, &[&after, &limit])
            .await
            .with_context(|| format!("cannot read a page of {TABLE}"))?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        for row in &rows {
            let stream_id: &str = row.try_get(1)?;
            let version: i64 = row.try_get(2)?;
            let Jsonb(payload) = row.try_get(3)?;
            black_box((stream_id, version, record::decode(payload)?));
        }
        decoded += rows.len() as u64;
    }
    Ok(decoded)
}

/// Record bytes as a `jsonb` value, in its binary wire form: a version byte (1), then the JSON
/// text. Not `tokio_postgres`'s `Json<T>`: the record already is JSON text, and the store
/// decodes its records from bytes, so going through a serde value would parse it twice.
#[derive(Debug)]
struct Jsonb<'a>(&'a [u8]);

/// The only `jsonb` binary format version there is.
const JSONB_VERSION: u8 = 1;

impl ToSql for Jsonb<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.put_u8(JSONB_VERSION);
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    accepts!(JSONB);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Jsonb<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        match raw.split_first() {
            Some((&JSONB_VERSION, json)) => Ok(Self(json)),
            _ => Err("not jsonb of binary format version 1".into()),
        }
    }

    accepts!(JSONB);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_conninfo_is_the_local_socket() {
        let config = parse_conninfo(DEFAULT_CONNINFO).expect("the default parses");
        assert_eq!(
            config.get_hosts(),
            [Host::Unix("/var/run/postgresql".into())]
        );
        assert_eq!(config.get_user(), Some("postgres"));
        assert_eq!(config.get_dbname(), Some("closeloop_bench"));
        assert_eq!(
            describe_place(&config),
            "/var/run/postgresql (database closeloop_bench, user postgres)"
        );
    }

    #[test]
    fn the_place_never_shows_the_password() {
        let config = parse_conninfo("postgresql://bench:secret@db.example:5433/events")
            .expect("a URL parses");
        assert_eq!(
            describe_place(&config),
            "db.example port 5433 (database events, user bench)"
        );
        assert!(parse_conninfo("host='unterminated").is_err());
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_identifier("closeloop_bench"), "\"closeloop_bench\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn jsonb_is_the_record_after_a_version_byte() {
        let record = record::encode(&closeloop_store::conformance::feedback("urn:x", "e0"));
        let mut wire = BytesMut::new();
        Jsonb(&record)
            .to_sql(&Type::JSONB, &mut wire)
            .expect("encodes");
        assert_eq!(wire[0], 1);
        let Jsonb(back) = Jsonb::from_sql(&Type::JSONB, &wire).expect("decodes");
        assert_eq!(back, record.as_slice());
        assert!(Jsonb::from_sql(&Type::JSONB, b"\x02{}").is_err());
        assert!(<Jsonb<'_> as ToSql>::accepts(&Type::JSONB));
        assert!(!<Jsonb<'_> as ToSql>::accepts(&Type::JSON));
    }

    #[tokio::test]
    async fn a_missing_server_is_unreachable_not_an_error() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let conninfo = format!("host={} user=postgres dbname=x", dir.path().display());
        let Availability::Unreachable(reason) = prepare(&conninfo).await.expect("no error") else {
            panic!("a socket dir with no server in it was reachable");
        };
        assert!(
            reason.starts_with(&format!(
                "cannot reach PostgreSQL at {}",
                dir.path().display()
            )),
            "{reason}"
        );
    }

    /// The three steps with a few events, against the local server when there is one (CI
    /// has one); prints why it checked nothing when there is none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_steps_run_against_a_local_server() {
        let conninfo = std::env::var("CLOSELOOP_BENCH_POSTGRES")
            .unwrap_or_else(|_| DEFAULT_CONNINFO.to_owned())
            .replace("dbname=closeloop_bench", "dbname=closeloop_bench_test");
        let postgres = match prepare(&conninfo).await.expect("a server that answers") {
            Availability::Ready(postgres) => postgres,
            Availability::Unreachable(reason) => {
                eprintln!("skipped: {reason}");
                return;
            }
        };
        assert!(
            postgres.server.contains("synchronous_commit on"),
            "{}",
            postgres.server
        );
        let single = postgres.single_writer(9).await.expect("step 8");
        assert_eq!(single.events, 9);
        let (written, read) = postgres.concurrent_then_read(130).await.expect("9 and 10");
        assert_eq!((written.events, read.events), (130, 130));
    }
}
