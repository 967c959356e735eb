//! A `closeloop serve` or `closeloop demo` process run by a benchmark: found beside this
//! binary, started on a free port, its log kept, stopped with SIGTERM (or killed when dropped).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use serde_json::Value;

/// The staff token the benchmarks present.
pub const STAFF_TOKEN: &str = "storm-bench-staff-token";
/// The auditor token the benchmarks present.
pub const AUDITOR_TOKEN: &str = "storm-bench-auditor-token";
/// How long the service may take to listen and then to report ready (it builds its read
/// models from the whole log first).
pub const START_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the service may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines of the service kept to explain a failure and to be searched.
const LOG_TAIL: usize = 1000;

/// How the service ended after the storm.
#[derive(Debug, Clone)]
pub enum Shutdown {
    /// It exited this long after SIGTERM.
    Stopped(Duration),
    /// It was still running [`STOP_TIMEOUT`] after SIGTERM, and was killed.
    Killed,
    /// It had already exited before SIGTERM was sent.
    AlreadyExited(String),
}

/// `closeloop` in the directory of this binary: `target/release/closeloop` beside
/// `target/release/closeloop-bench`.
pub fn sibling_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot tell where this binary is")?;
    let path = exe
        .parent()
        .context("this binary has no directory")?
        .join("closeloop");
    if !path.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p closeloop`, or name \
             the binary with --closeloop (or CLOSELOOP_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `closeloop demo --loops N` on `data_dir`; returns the events in the log afterwards,
/// when its report says.
pub fn load_demo(binary: &Path, data_dir: &Path, loops: u64) -> Result<Option<u64>> {
    load_demo_with(binary, data_dir, loops, &[])
}

/// [`load_demo`] with more environment variables (e.g. `CLOSELOOP_STORE=jetstream`).
pub fn load_demo_with(
    binary: &Path,
    data_dir: &Path,
    loops: u64,
    env: &[(&str, &str)],
) -> Result<Option<u64>> {
    let mut with_key = vec![("CLOSELOOP_MASTER_KEY", BENCH_MASTER_KEY)];
    with_key.extend_from_slice(env);
    let report = run_command(
        binary,
        &["demo", "--loops", &loops.to_string()],
        data_dir,
        &with_key,
    )?;
    Ok(events_in_demo_report(&report))
}

/// Runs `closeloop ARGS…` on `data_dir` with `env` (later pairs win) and its logs at `warn`,
/// until it exits; returns what it wrote on stderr.
///
/// # Errors
/// When it cannot be started or exits with a failure, its stderr included.
pub fn run_command(
    binary: &Path,
    args: &[&str],
    data_dir: &Path,
    env: &[(&str, &str)],
) -> Result<String> {
    let output = Command::new(binary)
        .args(args)
        .env("CLOSELOOP_DATA_DIR", data_dir)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!(
            "`closeloop {}` failed ({}):\n{}",
            args.join(" "),
            output.status,
            stderr.trim()
        );
    }
    Ok(stderr)
}

/// The event count in `closeloop demo`'s report (`… the log now holds 201234 events …`).
fn events_in_demo_report(report: &str) -> Option<u64> {
    let (_, rest) = report.split_once("holds ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The master key of the benchmark's data (personal data is encrypted at rest); not secret.
pub const BENCH_MASTER_KEY: &str =
    "62656e63682d6d61737465722d6b65792d6e6f742d7365637265742d30303031";

/// A running `closeloop serve`, killed if dropped before it is stopped.
pub struct Service {
    child: Child,
    addr: SocketAddr,
    /// Its last log lines, to explain a failure.
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl Service {
    /// Starts `closeloop serve` over `data_dir` on a free port of 127.0.0.1, NATS off, and
    /// waits until it listens.
    pub fn start(binary: &Path, data_dir: &Path) -> Result<Self> {
        Self::start_with(binary, data_dir, &[])
    }

    /// [`Service::start`] with more environment variables (later ones win).
    pub fn start_with(binary: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let mut child = Command::new(binary)
            .env("CLOSELOOP_MASTER_KEY", BENCH_MASTER_KEY)
            .arg("serve")
            .env("CLOSELOOP_DATA_DIR", data_dir)
            .env("CLOSELOOP_HTTP_ADDR", "127.0.0.1:0")
            .env("CLOSELOOP_NATS_URL", "off")
            .env(
                "CLOSELOOP_API_TOKENS",
                format!("staff:{STAFF_TOKEN},auditor:{AUDITOR_TOKEN}"),
            )
            // The service's default level, whatever this shell has set.
            .env("RUST_LOG", "info,sled=warn")
            .env("CLOSELOOP_LOG_FORMAT", "text")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} serve", binary.display()))?;
        let stderr = child
            .stderr
            .take()
            .context("the service's stderr is not piped")?;
        let logs = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let (address, listening) = mpsc::channel();
        let kept = Arc::clone(&logs);
        // Reads the log to the end, so the service never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, addr)) = line.split_once("listening on http://")
                    && let Ok(addr) = addr.trim().parse::<SocketAddr>()
                {
                    let _ = address.send(addr);
                }
                let mut logs = kept.lock().unwrap_or_else(PoisonError::into_inner);
                if logs.len() == LOG_TAIL {
                    logs.pop_front();
                }
                logs.push_back(line);
            }
        });
        let mut service = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            logs,
        };
        match listening.recv_timeout(START_TIMEOUT) {
            Ok(addr) => service.addr = addr,
            Err(_) => bail!(
                "`closeloop serve` did not start listening; its last log lines:\n{}",
                service.log_tail()
            ),
        }
        Ok(service)
    }

    /// `path` on the service's address.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The log lines kept (the last [`LOG_TAIL`]).
    pub fn log_lines(&self) -> Vec<String> {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.iter().cloned().collect()
    }

    /// Kills the process (SIGKILL) and waits for it: a crash, with no clean shutdown.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last 30 log lines, to explain a failure.
    pub fn log_tail(&self) -> String {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = logs.len().saturating_sub(30);
        logs.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits for the process to exit, killing it after [`STOP_TIMEOUT`].
    pub fn terminate(&mut self) -> Shutdown {
        if let Some(status) = self.exited() {
            return Shutdown::AlreadyExited(status.to_string());
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        if sent.is_ok_and(|status| status.success()) {
            while start.elapsed() < STOP_TIMEOUT {
                if self.exited().is_some() {
                    return Shutdown::Stopped(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Shutdown::Killed
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `/readyz` answers 200 (the read models are built), at most [`START_TIMEOUT`].
pub async fn wait_until_ready(client: &reqwest::Client, service: &Service) -> Result<()> {
    wait_for_readyz(client, service, |_| Some(())).await
}

/// Asks `/readyz` every 20 ms until it answers 200 with a body `accept` takes, at most
/// [`START_TIMEOUT`]; returns what `accept` made of it.
pub async fn wait_for_readyz<T>(
    client: &reqwest::Client,
    service: &Service,
    accept: impl Fn(&Value) -> Option<T>,
) -> Result<T> {
    let url = service.url("/readyz");
    let answer = poll(START_TIMEOUT, Duration::from_millis(20), async || {
        let response = client.get(&url).send().await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        accept(&response.json::<Value>().await.ok()?)
    })
    .await;
    answer.with_context(|| {
        format!(
            "`closeloop serve` was not ready within {} s; its last log lines:\n{}",
            START_TIMEOUT.as_secs(),
            service.log_tail()
        )
    })
}

/// Calls `attempt` every `interval` until it gives something or `limit` has passed.
pub async fn poll<T>(
    limit: Duration,
    interval: Duration,
    mut attempt: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = attempt().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_event_count_from_the_demo_report() {
        assert_eq!(
            events_in_demo_report(
                "demo data: 50000 loops, the log now holds 201234 events (9.1 s)\n"
            ),
            Some(201_234)
        );
        assert_eq!(events_in_demo_report("something else"), None);
    }
}
