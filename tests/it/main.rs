//! End-to-end tests: they start the real `closeloop` binary on a fresh temp data directory and
//! talk to it as operators and clients would. Set `TEST_LOG=1` to see the service's logs.
//!
//! The binary must be built first (`cargo build -p closeloop`; `scripts/test` does it), or
//! named with `CLOSELOOP_BIN`.

mod access;
mod api;
mod audit;
mod browser;
mod cli;
mod cluster;
mod deploy;
mod keys;
mod nats;
mod privacy;
mod publisher_guide;
mod reads;
mod serve;
mod snapshots;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use closeloop_domain::LoopId;
use closeloop_store::conformance::{acknowledgement, feedback};
use closeloop_store::{AppendRequest, EventStore, ExpectedVersion, SledStore, SledStoreOptions};

/// The `closeloop` binary under test.
pub fn closeloop_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CLOSELOOP_BIN") {
        return PathBuf::from(path);
    }
    // Test binaries live in target/<profile>/deps/; the binary in target/<profile>/.
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("closeloop");
    assert!(
        path.exists(),
        "{} does not exist: run `cargo build -p closeloop` first (scripts/test does), or set CLOSELOOP_BIN",
        path.display()
    );
    path
}

/// The master key every service and tool of these tests runs with (contract §4).
pub const MASTER_KEY: &str = "6c6f6f702d636c6f73652d7465737473206d6173746572206b657920e2e00001";

/// Runs `closeloop <args>` on `data_dir` to completion, with the tests' master key.
pub fn run_cli(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(closeloop_bin())
        .args(args)
        .env("CLOSELOOP_DATA_DIR", data_dir)
        .env("CLOSELOOP_MASTER_KEY", MASTER_KEY)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run closeloop")
}

/// Appends a small realistic log straight to the store: `loops` loops, each received and
/// then acknowledged, so positions interleave across loops.
pub async fn seed(data_dir: &Path, loops: usize) {
    let store = SledStore::open(data_dir, &SledStoreOptions::default()).expect("open store");
    for step in 0..2 {
        for n in 0..loops {
            let loop_id = LoopId::parse(&format!("loop-{n}")).expect("loop id");
            let event = if step == 0 {
                feedback("urn:test:seed", &format!("{n}-received"))
            } else {
                acknowledgement("urn:test:seed", &format!("{n}-acknowledged"))
            };
            store
                .append(AppendRequest::single(
                    loop_id,
                    ExpectedVersion::Any,
                    vec![event],
                ))
                .await
                .expect("append");
        }
    }
    store.close().await;
}

/// Whether the tests run the service on the JetStream store (`CLOSELOOP_E2E_STORE=jetstream`,
/// as CI does for the black-box API tests) rather than the embedded one.
pub fn jetstream_mode() -> bool {
    std::env::var("CLOSELOOP_E2E_STORE").is_ok_and(|store| store == "jetstream")
}

/// A private NATS server kept for one data directory in JetStream mode, and how many services
/// use it now.
struct SharedNats {
    data_dir: std::path::PathBuf,
    server: closeloop_testkit::NatsServer,
    users: usize,
}

/// The servers of [`nats_for`]. A static is never dropped, so a server is stopped when its last
/// service is (see [`release_nats`]): otherwise it would outlive the test process.
static SHARED_NATS: Mutex<Vec<SharedNats>> = Mutex::new(Vec::new());

/// The URL of a private NATS server for the service on `data_dir`: started the first time,
/// started again (same port, same files) when a later service on the same directory comes up,
/// so a restart finds its data again.
fn nats_for(data_dir: &Path) -> String {
    let mut servers = SHARED_NATS.lock().expect("servers");
    if let Some(shared) = servers.iter_mut().find(|s| s.data_dir == data_dir) {
        if shared.users == 0 {
            shared.server.restart();
        }
        shared.users += 1;
        return shared.server.url();
    }
    let server = closeloop_testkit::NatsServer::start();
    let url = server.url();
    servers.push(SharedNats {
        data_dir: data_dir.to_owned(),
        server,
        users: 1,
    });
    url
}

/// A service on `data_dir` no longer uses its [`nats_for`] server: the last one out stops it.
fn release_nats(data_dir: &Path) {
    let mut servers = SHARED_NATS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(shared) = servers.iter_mut().find(|s| s.data_dir == data_dir) {
        shared.users = shared.users.saturating_sub(1);
        if shared.users == 0 {
            shared.server.stop();
        }
    }
}

/// A running `closeloop serve`, killed when dropped.
#[derive(Debug)]
pub struct Service {
    child: Child,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Every line it has logged so far.
    logs: Arc<Mutex<Vec<String>>>,
    /// The data directory whose [`nats_for`] server this service uses, if it does.
    shared_nats: Option<std::path::PathBuf>,
}

impl Service {
    /// Starts `closeloop serve` on a free port over `data_dir`, with NATS off, and waits until
    /// it listens.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with_nats(data_dir, "off")
    }

    /// Starts `closeloop serve` on a free port over `data_dir`, using the NATS server at
    /// `nats_url` (e.g. a [`closeloop_testkit::NatsServer`]), and waits until it listens.
    pub fn start_with_nats(data_dir: &Path, nats_url: &str) -> Self {
        Self::start_with_env(data_dir, nats_url, &[])
    }

    /// Starts `closeloop serve` as [`Service::start_with_nats`] does, with extra environment
    /// variables (e.g. `RUST_LOG`).
    pub fn start_with_env(data_dir: &Path, nats_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(data_dir, &[], nats_url, env)
    }

    /// Starts `closeloop serve --demo` over `data_dir` with NATS off: the demo data set is
    /// loaded first (into an empty store), and the pages speak for the demo's organisation and
    /// places. The tests' tokens stand in for the demo's.
    pub fn start_demo(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(data_dir, &["--demo"], "off", env)
    }

    /// Starts `closeloop serve <args>` on a free port over `data_dir` and waits until it
    /// listens.
    fn spawn(data_dir: &Path, args: &[&str], nats_url: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(closeloop_bin());
        let mut nats_url = nats_url.to_owned();
        let mut shared_nats = None;
        if jetstream_mode() {
            // The log, keys and access log live in NATS: on the test's server when it has one,
            // else on one kept for this data directory, so a restart finds its data again.
            if nats_url == "off" {
                nats_url = nats_for(data_dir);
                shared_nats = Some(data_dir.to_owned());
            }
            command.env("CLOSELOOP_STORE", "jetstream");
        }
        let nats_url = nats_url.as_str();
        let mut child = command
            .arg("serve")
            .args(args)
            .env("CLOSELOOP_DATA_DIR", data_dir)
            .env("CLOSELOOP_HTTP_ADDR", "127.0.0.1:0")
            .env("CLOSELOOP_NATS_URL", nats_url)
            .env("CLOSELOOP_MASTER_KEY", MASTER_KEY)
            .env(
                "CLOSELOOP_API_TOKENS",
                "staff:staff-token-e2e,auditor:auditor-token-e2e,leader:leader-token-e2e,admin:admin-token-e2e",
            )
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start closeloop serve");
        let stderr = child.stderr.take().expect("stderr");
        let (addr_tx, addr_rx) = mpsc::channel();
        let show_logs = std::env::var_os("TEST_LOG").is_some();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&logs);
        let pid = child.id();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if show_logs {
                    eprintln!("[serve {pid}] {line}");
                }
                kept.lock().expect("logs").push(line.clone());
                if let Some((_, addr)) = line.split_once("listening on http://") {
                    let _ = addr_tx.send(addr.trim().parse::<SocketAddr>().expect("address"));
                }
            }
        });
        // A guard against hangs, not a measure: `--demo` first records 5,000 loops (about 16 s
        // in a debug build on a slow day, twice that beside the other tests).
        let addr = addr_rx.recv_timeout(Duration::from_secs(120)).expect(
            "closeloop serve did not start listening within 120 s (TEST_LOG=1 shows its logs)",
        );
        Self {
            child,
            addr,
            logs,
            shared_nats,
        }
    }

    /// The process id it was started with.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Waits (at most 10 s) until a logged line contains `needle`, and returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.logs().into_iter().find(|line| line.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line contains {needle:?} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of `path` on this service.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM and waits (at most 15 s) for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "closeloop did not stop within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Service {
    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(data_dir) = &self.shared_nats {
            release_nats(data_dir);
        }
    }
}
