//! `closeloop-bench storm`: does the service keep answering cheap requests and taking writes
//! while clients pile expensive reads on it?
//!
//! It measures what an operator sees: the real `closeloop serve` (the binary next to this one,
//! or `--closeloop`), NATS off, over a temp data directory loaded first with
//! `closeloop demo --loops N` (by default 50,000 loops, about 200,000 events). Then two phases
//! of `--seconds` each, over 127.0.0.1:
//!
//! 1. **no storm**: a `/healthz` prober sends `--probe-rate` requests a second on schedule,
//!    whether or not the earlier ones have answered (so a stall shows up in its figures instead
//!    of delaying them), and one writer sends `POST /v1/feedback` (a new loop each time) one
//!    request after another, each awaited;
//! 2. **storm**: the same prober and writer, plus `--verifiers` auditors calling
//!    `GET /v1/audit/verify` and `--readers` anonymous clients calling
//!    `GET /v1/you-said-we-did`, each in a loop as fast as answers come back, ignoring
//!    `Retry-After` as a hostile client would.
//!
//! No request starts after a phase's deadline; those in flight finish or give up after
//! [`REQUEST_TIMEOUT`]. Every client runs in this process, on the same cores as the service.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::json;
use tokio::task::JoinSet;

use crate::machine::{self, Machine};
use crate::report;
pub use crate::service::Shutdown;
use crate::service::{
    AUDITOR_TOKEN, STAFF_TOKEN, Service, load_demo, sibling_binary, wait_until_ready,
};

/// How long a client waits for one answer: longer than the service's own 30 s request
/// timeout, so that timeout shows in the figures rather than this one.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Options of `closeloop-bench storm`.
#[derive(Debug, clap::Args)]
pub struct StormArgs {
    /// Demo loops loaded before the service starts (`closeloop demo --loops`), about four
    /// events each.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub loops: u64,
    /// How long each phase (no storm, then storm) runs, in seconds.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: u64,
    /// `/healthz` requests a second, sent on schedule whether or not earlier ones answered.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub probe_rate: u32,
    /// Auditors calling `GET /v1/audit/verify` in a loop during the storm.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(..=1000))]
    pub verifiers: u16,
    /// Anonymous clients calling `GET /v1/you-said-we-did` in a loop during the storm.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(..=1000))]
    pub readers: u16,
    /// The `closeloop` binary to run (default: the one next to this binary, such as
    /// `target/release/closeloop`).
    #[arg(long, env = "CLOSELOOP_BIN", value_name = "PATH")]
    pub closeloop: Option<PathBuf>,
    /// Write the figures into this markdown file, replacing its storm section.
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct StormFigures {
    /// Demo loops loaded.
    pub loops: u64,
    /// Events in the log after loading, as `closeloop demo` reported them.
    pub events: Option<u64>,
    /// How long `closeloop demo` took.
    pub load: Duration,
    /// From starting `closeloop serve` until `/readyz` answered 200.
    pub ready: Duration,
    /// Length of each phase.
    pub seconds: u64,
    /// `/healthz` requests a second.
    pub probe_rate: u32,
    /// Concurrent `GET /v1/audit/verify` clients during the storm.
    pub verifiers: u16,
    /// Concurrent `GET /v1/you-said-we-did` clients during the storm.
    pub readers: u16,
    /// The 1-minute load average when the run started, before anything was loaded.
    pub load_average: Option<f64>,
    /// Cores available, to judge the load average by.
    pub cores: Option<usize>,
    /// The phase without a storm.
    pub baseline: Phase,
    /// The phase with the storm.
    pub storm: Phase,
    /// How the service ended after the storm.
    pub shutdown: Shutdown,
}

impl StormFigures {
    /// Whether the machine was busy with other work when the run started (a 1-minute load
    /// average above half its cores), so the figures are only preliminary.
    #[must_use]
    pub fn machine_was_busy(&self) -> bool {
        match (self.load_average, self.cores) {
            (Some(load), Some(cores)) => load > cores as f64 / 2.0,
            _ => false,
        }
    }
}

/// The figures of one phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Every `/healthz` request; the expected answer is 200.
    pub healthz: Timings,
    /// Every `POST /v1/feedback`; the expected answer is 201.
    pub writes: Timings,
    /// From the writer's first request until its last answer.
    pub writer_busy: Duration,
    /// The `GET /v1/audit/verify` clients' answers (none without a storm).
    pub verify: Counts,
    /// The `GET /v1/you-said-we-did` clients' answers (none without a storm).
    pub public: Counts,
}

impl Phase {
    /// Feedback stored (201 answers) a second while the writer ran.
    #[must_use]
    pub fn writes_per_second(&self) -> f64 {
        self.writes.ok as f64 / self.writer_busy.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// How long each request took (until its whole answer arrived, or the client gave up), and
/// how many got the expected answer.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Every request's time, sorted once the phase is over.
    pub sorted: Vec<Duration>,
    /// Requests that got the expected status.
    pub ok: u64,
}

impl Timings {
    fn record(&mut self, elapsed: Duration, ok: bool) {
        self.sorted.push(elapsed);
        self.ok += u64::from(ok);
    }

    fn finish(mut self) -> Self {
        self.sorted.sort_unstable();
        self
    }

    fn merge(&mut self, other: Self) {
        self.sorted.extend(other.sorted);
        self.ok += other.ok;
    }

    /// Requests sent.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.sorted.len() as u64
    }

    /// Requests that did not get the expected answer (another status, or none at all).
    #[must_use]
    pub fn failed(&self) -> u64 {
        self.count() - self.ok
    }

    /// The time at `percent` (0–100; 100 is the slowest), nearest rank; zero when nothing was
    /// sent.
    #[must_use]
    pub fn percentile(&self, percent: f64) -> Duration {
        let Some(last) = self.sorted.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        let rank = (percent / 100.0 * last as f64).round() as usize;
        self.sorted[rank.min(last)]
    }
}

/// The answers a storm client got, by kind.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Every request's time; `ok` counts the 200 answers.
    pub timings: Timings,
    /// 503 answers: the request was shed.
    pub shed: u64,
    /// 503 answers without `Retry-After` (the contract requires it on every 503).
    pub shed_without_retry_after: u64,
}

impl Counts {
    fn record(&mut self, answer: &Answer) {
        self.timings
            .record(answer.elapsed, answer.status == Some(StatusCode::OK));
        if answer.status == Some(StatusCode::SERVICE_UNAVAILABLE) {
            self.shed += 1;
            self.shed_without_retry_after += u64::from(!answer.retry_after);
        }
    }

    fn merge(&mut self, other: Self) {
        self.timings.merge(other.timings);
        self.shed += other.shed;
        self.shed_without_retry_after += other.shed_without_retry_after;
    }

    /// Answers other than 200 and 503, and requests that got no answer.
    #[must_use]
    pub fn other(&self) -> u64 {
        self.timings.failed() - self.shed
    }
}

/// Runs the benchmark and prints (and maybe writes) its section.
///
/// # Errors
/// When the service cannot be found, loaded or started, or a client fails outright.
pub fn run(args: &StormArgs) -> Result<()> {
    let load_average = machine::load_average();
    let binary = match &args.closeloop {
        Some(path) => path.clone(),
        None => sibling_binary()?,
    };
    let dir = tempfile::tempdir()?;

    eprintln!(
        "loading {} demo loops with {}…",
        args.loops,
        binary.display()
    );
    let started = Instant::now();
    let events = load_demo(&binary, dir.path(), args.loops)?;
    let load = started.elapsed();
    eprintln!(
        "loaded {} events in {:.1} s",
        events.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        load.as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut service = Service::start(&binary, dir.path())?;
    let (ready, baseline, storm) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        wait_until_ready(&client, &service).await?;
        let ready = started.elapsed();
        eprintln!("ready after {:.1} s", ready.as_secs_f64());
        warm_up(&client, &service).await;
        eprintln!("no storm: {} s…", args.seconds);
        let baseline = phase(&client, &service, args, false).await?;
        eprintln!(
            "storm: {} verifiers, {} public readers, {} s…",
            args.verifiers, args.readers, args.seconds
        );
        let storm = phase(&client, &service, args, true).await?;
        anyhow::Ok((ready, baseline, storm))
    })?;
    let shutdown = service.terminate();

    let figures = StormFigures {
        loops: args.loops,
        events,
        load,
        ready,
        seconds: args.seconds,
        probe_rate: args.probe_rate,
        verifiers: args.verifiers,
        readers: args.readers,
        load_average,
        cores: std::thread::available_parallelism().ok().map(usize::from),
        baseline,
        storm,
        shutdown,
    };
    let machine = Machine::probe(&std::env::temp_dir());
    let section = report::storm_section(&figures, &machine, &report::command_line());
    report::publish(&section, args.write.as_deref())?;
    Ok(())
}

/// One unmeasured `/healthz` and write, so neither phase pays for the first connection.
async fn warm_up(client: &reqwest::Client, service: &Service) {
    timed(client.get(service.url("/healthz"))).await;
    timed(
        client
            .post(service.url("/v1/feedback"))
            .bearer_auth(STAFF_TOKEN)
            .json(&feedback(0)),
    )
    .await;
}

/// One phase: the prober and the writer, and with `storm` the verifiers and public readers,
/// until `args.seconds` have passed.
async fn phase(
    client: &reqwest::Client,
    service: &Service,
    args: &StormArgs,
    storm: bool,
) -> Result<Phase> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let prober = tokio::spawn(probe(
        client.clone(),
        service.url("/healthz"),
        args.probe_rate,
        deadline,
    ));
    let writer = tokio::spawn(write(client.clone(), service.url("/v1/feedback"), deadline));
    let mut verifiers = JoinSet::new();
    let mut readers = JoinSet::new();
    if storm {
        for _ in 0..args.verifiers {
            verifiers.spawn(hammer(
                client.clone(),
                service.url("/v1/audit/verify"),
                Some(AUDITOR_TOKEN),
                deadline,
            ));
        }
        for _ in 0..args.readers {
            readers.spawn(hammer(
                client.clone(),
                service.url("/v1/you-said-we-did"),
                None,
                deadline,
            ));
        }
    }
    let mut verify = Counts::default();
    while let Some(counts) = verifiers.join_next().await {
        verify.merge(counts?);
    }
    let mut public = Counts::default();
    while let Some(counts) = readers.join_next().await {
        public.merge(counts?);
    }
    let (writes, writer_busy) = writer.await?;
    Ok(Phase {
        healthz: prober.await??,
        writes,
        writer_busy,
        verify: Counts {
            timings: verify.timings.finish(),
            ..verify
        },
        public: Counts {
            timings: public.timings.finish(),
            ..public
        },
    })
}

/// What one request got.
#[derive(Debug, Clone, Copy)]
struct Answer {
    /// From sending it until its whole body arrived, or the client gave up.
    elapsed: Duration,
    /// Its status; `None` when no answer came.
    status: Option<StatusCode>,
    /// Whether it carried `Retry-After`.
    retry_after: bool,
}

/// Sends `request` and reads its whole answer, so the service does all the work it was asked
/// for.
async fn timed(request: reqwest::RequestBuilder) -> Answer {
    let start = Instant::now();
    let answered = async {
        let response = request.send().await?;
        let status = response.status();
        let retry_after = response.headers().contains_key(RETRY_AFTER);
        response.bytes().await?;
        Ok::<_, reqwest::Error>((status, retry_after))
    }
    .await;
    Answer {
        elapsed: start.elapsed(),
        status: answered.as_ref().ok().map(|(status, _)| *status),
        retry_after: answered.is_ok_and(|(_, retry_after)| retry_after),
    }
}

/// Sends `GET url` `rate` times a second until `deadline`, each request on its own task so a
/// slow answer never delays the next probe.
async fn probe(
    client: reqwest::Client,
    url: String,
    rate: u32,
    deadline: Instant,
) -> Result<Timings> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    // A tick this process itself was too busy to make is skipped rather than sent in a burst.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut probes = JoinSet::new();
    loop {
        ticker.tick().await;
        if Instant::now() >= deadline {
            break;
        }
        probes.spawn(timed(client.get(&url)));
    }
    let mut timings = Timings::default();
    while let Some(answer) = probes.join_next().await {
        let answer = answer?;
        timings.record(answer.elapsed, answer.status == Some(StatusCode::OK));
    }
    Ok(timings.finish())
}

/// Records new feedback at `url` one request after another until `deadline`; returns their
/// timings and how long the writer was busy.
async fn write(client: reqwest::Client, url: String, deadline: Instant) -> (Timings, Duration) {
    let start = Instant::now();
    let mut timings = Timings::default();
    let mut n = 1;
    while Instant::now() < deadline {
        let answer = timed(
            client
                .post(&url)
                .bearer_auth(STAFF_TOKEN)
                .json(&feedback(n)),
        )
        .await;
        timings.record(answer.elapsed, answer.status == Some(StatusCode::CREATED));
        n += 1;
    }
    (timings.finish(), start.elapsed())
}

/// Sends `GET url` (with `token`, if any) one request after another until `deadline`.
async fn hammer(
    client: reqwest::Client,
    url: String,
    token: Option<&'static str>,
    deadline: Instant,
) -> Counts {
    let mut counts = Counts::default();
    while Instant::now() < deadline {
        let mut request = client.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        counts.record(&timed(request).await);
    }
    counts
}

/// The body of the writer's `n`th `POST /v1/feedback`: a new loop (the service picks its id).
fn feedback(n: u64) -> serde_json::Value {
    json!({
        "org_unit": format!("rxx/storm-bench/ward-{}", n % 20),
        "channel": "web",
        "story": "The staff were kind, but I waited four hours to be seen and nobody told me why.",
        "ratings": {"fft": 1 + n % 6},
        "themes": ["waiting times", "communication"],
        "consent_to_publish": true,
        "language": "en",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut timings = Timings::default();
        for n in (1..=100).rev() {
            timings.record(ms(n), n % 10 != 0);
        }
        let timings = timings.finish();
        assert_eq!(timings.percentile(0.0), ms(1));
        assert_eq!(timings.percentile(50.0), ms(51));
        assert_eq!(timings.percentile(99.0), ms(99));
        assert_eq!(timings.percentile(100.0), ms(100));
        assert_eq!(
            (timings.count(), timings.ok, timings.failed()),
            (100, 90, 10)
        );
        assert_eq!(Timings::default().percentile(99.0), Duration::ZERO);
    }

    #[test]
    fn counts_answers_by_kind() {
        let answer = |status: Option<u16>, retry_after| Answer {
            elapsed: ms(5),
            status: status.map(|code| StatusCode::from_u16(code).unwrap()),
            retry_after,
        };
        let mut counts = Counts::default();
        counts.record(&answer(Some(200), false));
        counts.record(&answer(Some(503), true));
        counts.record(&answer(Some(503), false));
        counts.record(&answer(Some(500), false));
        counts.record(&answer(None, false));
        let mut merged = Counts::default();
        merged.merge(counts);
        assert_eq!(merged.timings.count(), 5);
        assert_eq!(merged.timings.ok, 1);
        assert_eq!(merged.shed, 2);
        assert_eq!(merged.shed_without_retry_after, 1);
        assert_eq!(merged.other(), 2);
    }

    #[test]
    fn writes_per_second_count_only_stored_feedback() {
        let mut writes = Timings::default();
        for n in 0..30 {
            writes.record(ms(10), n < 20);
        }
        let phase = Phase {
            writes,
            writer_busy: Duration::from_secs(2),
            ..Phase::default()
        };
        assert!((phase.writes_per_second() - 10.0).abs() < 1e-9);
    }
}
