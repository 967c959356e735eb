//! Chromium and its WebDriver: where they are, and a private chromedriver on a free port that
//! starts a headless Chromium with a fresh profile.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// Set to skip the browser tests on a machine without Chromium (they fail otherwise).
pub const SKIP_VAR: &str = "CLOSELOOP_SKIP_BROWSER_TESTS";

/// How to install what the browser tests need, said whenever something is missing.
const INSTALL: &str = "the browser tests drive Debian's Chromium through chromedriver: install them with \
`sudo apt-get install chromium chromium-driver` (scripts/test does this for you), name other \
binaries with CLOSELOOP_CHROMIUM and CLOSELOOP_CHROMEDRIVER, or set CLOSELOOP_SKIP_BROWSER_TESTS=1 \
to skip these tests";

/// Where Chromium and chromedriver are, when both are there.
#[derive(Debug)]
pub struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Tools {
    /// Finds Chromium and chromedriver: `CLOSELOOP_CHROMIUM` and `CLOSELOOP_CHROMEDRIVER`, else
    /// Debian's `chromium` and `chromedriver` on the `PATH`. `None` when the tests are to be
    /// skipped ([`SKIP_VAR`]).
    ///
    /// # Panics
    /// When either is missing and the tests are not to be skipped, saying how to install them.
    pub fn find() -> Option<Self> {
        if std::env::var_os(SKIP_VAR).is_some_and(|value| !value.is_empty() && value != "0") {
            eprintln!("{SKIP_VAR} is set: skipping a browser test");
            return None;
        }
        let find = |var: &str, names: &[&str]| -> PathBuf {
            if let Some(path) = std::env::var_os(var) {
                let path = PathBuf::from(path);
                assert!(
                    path.is_file(),
                    "{var}={} is not a file; {INSTALL}",
                    path.display()
                );
                return path;
            }
            names
                .iter()
                .find_map(|name| on_path(name))
                .unwrap_or_else(|| panic!("no {} on the PATH: {INSTALL}", names.join(" or ")))
        };
        Some(Self {
            chromium: find("CLOSELOOP_CHROMIUM", &["chromium", "chromium-browser"]),
            chromedriver: find("CLOSELOOP_CHROMEDRIVER", &["chromedriver"]),
        })
    }
}

/// The executable `name` in a directory of the `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A chromedriver of this test's own, in a process group of its own, which is killed (with the
/// Chromium it started) when dropped: a test that fails midway leaves no browser behind.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    port: u16,
    /// The browser profile, fresh for each driver, deleted when dropped.
    profile: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free port, logging to `log`, and waits (at most 20 s) until it
    /// answers.
    pub async fn start(tools: &Tools, log: &Path) -> Self {
        let port = free_port();
        let log_file = std::fs::File::create(log).expect("create the chromedriver log");
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            // Warnings only: at the default level every command is logged, axe-core's 650 kB
            // source with each page checked.
            .arg("--log-level=WARNING")
            .stdout(log_file.try_clone().expect("the log file"))
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("start {}: {err}; {INSTALL}", tools.chromedriver.display())
            });
        let driver = Self {
            child,
            port,
            profile: tempfile::tempdir().expect("profile directory"),
        };
        let status = format!("http://127.0.0.1:{port}/status");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = reqwest::get(&status).await
                && response.status().is_success()
            {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer within 20 s; its log is {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens a session: a headless Chromium with a fresh profile, sized `width` × `height`.
    pub async fn session(&self, tools: &Tools, width: u32, height: u32) -> Client {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": tools.chromium, "args": args},
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "chromedriver could not start {}: {err}; {INSTALL}",
                    tools.chromium.display()
                )
            })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group is chromedriver's own (its id is chromedriver's), holding the browsers it
        // started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// A TCP port free at the time of asking.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
