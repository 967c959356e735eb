//! Test fixtures shared by Closeloop's crates.
//!
//! [`NatsServer`] starts a private `nats-server -js` for one test: a free port on 127.0.0.1
//! and its own temporary JetStream directory, so tests never collide with each other or with
//! a server already running on 4222. The server is killed when the fixture is dropped.
//! `scripts/test` installs `nats-server` when a machine lacks it; set `NATS_SERVER_BIN` to use
//! another binary. [`NatsServer::start_with_config`] passes server options the command line
//! lacks, such as a small `max_payload`. [`NatsCluster`] starts several such servers routed
//! into one JetStream cluster (`NatsCluster::start(3)`), whose nodes a test can kill with
//! SIGKILL and restart on the same ports and files.
//!
//! [`fuzz`] holds the generators and the runner of the proptest fuzz targets, and [`Tmpfs`] a
//! small filesystem that full-disk tests fill up.

mod cluster;
pub mod fuzz;
mod tmpfs;

pub use cluster::NatsCluster;
pub use tmpfs::Tmpfs;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many ports a new server tries before giving up.
const PORT_ATTEMPTS: usize = 5;

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A private `nats-server` with JetStream, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    /// A name no other server has, which the server gives in its greeting: a test that waits
    /// for its server must not mistake another test's server on a reused port for it.
    name: String,
    port: u16,
    store_dir: tempfile::TempDir,
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it answers.
    ///
    /// # Panics
    /// When `nats-server` cannot be found or started, or does not answer in time: a test
    /// cannot go on without it, and the message says how to install it.
    #[must_use]
    pub fn start() -> Self {
        Self::launch_new(None)
    }

    /// Starts a server as [`start`](Self::start) does, with `config` as its configuration
    /// file, e.g. `max_payload: 65536` (nats-server 2.9 has no command-line flag for it).
    /// Address, port and JetStream directory still come from the command line, which wins
    /// over the file.
    ///
    /// # Panics
    /// As [`start`](Self::start), and when the file cannot be written or the server refuses
    /// it.
    #[must_use]
    pub fn start_with_config(config: &str) -> Self {
        Self::launch_new(Some(config))
    }

    fn launch_new(config: Option<&str>) -> Self {
        let store_dir = tempfile::Builder::new()
            .prefix("closeloop-nats-")
            .tempdir()
            .expect("cannot create a temp dir for JetStream");
        // The file sits beside JetStream's own directory, which the server creates inside.
        let config = config.map(|text| {
            let path = store_dir.path().join("nats-server.conf");
            std::fs::write(&path, text).expect("cannot write the nats-server configuration");
            path
        });
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut server = Self {
            child: None,
            name: format!("closeloop-test-{}-{n}", std::process::id()),
            port: free_port(),
            store_dir,
            config,
        };
        // The port was free when the OS picked it, but something else may take it before the
        // server binds it (another test's server, a client's outgoing connection): then try
        // another port.
        for _ in 0..PORT_ATTEMPTS {
            match server.launch() {
                Ok(()) => return server,
                Err(status) => {
                    server.port = free_port();
                    eprintln!("nats-server exited at start ({status}); trying another port");
                }
            }
        }
        panic!("nats-server exited at start {PORT_ATTEMPTS} times, each on another port")
    }

    /// The URL clients connect to, e.g. `nats://127.0.0.1:41234`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where JetStream keeps its files.
    #[must_use]
    pub fn store_dir(&self) -> &Path {
        self.store_dir.path()
    }

    /// Kills the server (SIGKILL) and waits for it to exit; [`restart`](Self::restart) brings
    /// it back on the same port with the same JetStream files.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server cleanly (SIGTERM, as an operator would): JetStream writes out and
    /// closes its files before the process exits, so they can be inspected afterwards.
    /// [`restart`](Self::restart) brings it back.
    ///
    /// # Panics
    /// When the signal cannot be sent, or the server has not exited within
    /// [`START_TIMEOUT`] (it is then killed).
    pub fn shut_down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("cannot run `kill` to stop nats-server");
        assert!(sent.success(), "kill -TERM failed: {sent}");
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("nats-server did not stop within {START_TIMEOUT:?} of SIGTERM");
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port and directory.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(status) = self.launch() {
            panic!(
                "nats-server exited at restart with {status} (port {})",
                self.port
            );
        }
    }

    /// Starts the process and waits until it answers; the error is its exit status when it
    /// exited at start.
    fn launch(&mut self) -> Result<(), std::process::ExitStatus> {
        let bin = binary();
        let mut command = Command::new(&bin);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-n",
                &self.name,
                "-js",
                "-sd",
            ])
            .arg(self.store_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {}: {err}; install it with `apt-get install -y nats-server` \
                     (scripts/test does) or set NATS_SERVER_BIN",
                    bin.display()
                )
            });
        self.child = Some(child);
        self.wait_until_ready()
    }

    fn wait_until_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(status);
            }
            if greets_as(address, &self.name) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nats-server did not answer on {address} within {START_TIMEOUT:?}");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `nats-server` the fixtures run: `NATS_SERVER_BIN`, else the first on `PATH`, else
/// Debian's.
#[must_use]
pub fn nats_server_binary() -> PathBuf {
    binary()
}

/// The `nats-server` to run: `NATS_SERVER_BIN`, else the first on `PATH`, else Debian's.
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// A port nothing listens on right now (the OS picks it).
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot find a free port")
        .port()
}

/// Whether the NATS server at `address` is the one named `name`, and answers.
fn greets_as(address: SocketAddr, name: &str) -> bool {
    answers_ping_with(address, Some(name))
}

/// Whether a NATS server at `address` greets, takes a PING and answers PONG.
fn answers_ping(address: SocketAddr) -> bool {
    answers_ping_with(address, None)
}

/// [`answers_ping`], and when `name` is given, whether its greeting carries that server name.
fn answers_ping_with(address: SocketAddr, name: Option<&str>) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut seen = Vec::new();
    let mut buf = [0_u8; 4096];
    let mut pinged = false;
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            return false;
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if !pinged && text.contains("INFO ") && text.contains("\r\n") {
            if let Some(name) = name
                && !text.contains(&format!("\"server_name\":\"{name}\""))
            {
                return false;
            }
            if stream
                .write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
                .is_err()
            {
                return false;
            }
            pinged = true;
        } else if pinged && text.contains("PONG") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_server_answers_and_a_stopped_one_does_not() {
        let mut server = NatsServer::start();
        let address = SocketAddr::from(([127, 0, 0, 1], server.port()));
        assert!(answers_ping(address));
        assert!(server.url().ends_with(&server.port().to_string()));
        server.stop();
        assert!(!answers_ping(address));
        server.restart();
        assert!(answers_ping(address));
        server.shut_down();
        assert!(!answers_ping(address));
        server.restart();
        assert!(answers_ping(address));
    }

    #[test]
    fn two_servers_get_their_own_ports_and_directories() {
        let first = NatsServer::start();
        let second = NatsServer::start();
        assert_ne!(first.port(), second.port());
        assert_ne!(first.store_dir(), second.store_dir());
    }

    #[test]
    fn a_configuration_file_sets_what_the_command_line_cannot() {
        let server = NatsServer::start_with_config("max_payload: 65536\n");
        let address = SocketAddr::from(([127, 0, 0, 1], server.port()));
        let greeting = greeting(address);
        assert!(greeting.contains("\"max_payload\":65536"), "{greeting}");
    }

    /// The server's `INFO` line.
    fn greeting(address: SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut seen = Vec::new();
        let mut buf = [0_u8; 4096];
        while !seen.ends_with(b"\r\n") {
            let n = stream.read(&mut buf).expect("read INFO");
            assert!(n > 0, "the server closed the connection");
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }
}
