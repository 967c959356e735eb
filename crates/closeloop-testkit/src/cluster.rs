//! [`NatsCluster`]: several `nats-server` processes with JetStream, routed into one cluster
//! on loopback, for tests of replicated streams and of a node failing.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{answers_ping, binary, free_port};

/// How long the whole cluster may take to elect its JetStream meta leader and accept an R3
/// stream. nats-server 2.9 waits 4 to 9 s before its first election.
const READY_TIMEOUT: Duration = Duration::from_secs(45);
/// How long one node may take to accept connections.
const NODE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request of the readiness check waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The stream the readiness check creates and deletes.
const PROBE_STREAM: &str = "CLOSELOOP_TESTKIT_READY";

/// A cluster of `nats-server` processes with JetStream on 127.0.0.1, killed on drop.
///
/// Node `i` (0-based) is named `n{i+1}`, listens for clients and routes on free ports, keeps
/// JetStream's files in its own directory ([`store_dir`](Self::store_dir)) and its log in
/// [`log_file`](Self::log_file). [`start`](Self::start) returns once the cluster has a
/// JetStream meta leader and takes a stream replicated on every node.
#[derive(Debug)]
pub struct NatsCluster {
    name: String,
    nodes: Vec<Node>,
    /// Holds every node's directory; removed on drop.
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Node {
    child: Option<Child>,
    client_port: u16,
    cluster_port: u16,
    config: PathBuf,
    store_dir: PathBuf,
    log_file: PathBuf,
}

impl NatsCluster {
    /// Starts `size` nodes routed to each other and waits until JetStream is ready in the
    /// cluster: a stream with `size` replicas can be created (and is deleted again).
    ///
    /// # Panics
    /// When `size` is 0, when `nats-server` cannot be found or started, or when the cluster is
    /// not ready within 45 s (the message names the nodes' log files).
    #[must_use]
    pub fn start(size: usize) -> Self {
        assert!(size > 0, "a cluster needs at least one node");
        let dir = tempfile::Builder::new()
            .prefix("closeloop-nats-cluster-")
            .tempdir()
            .expect("cannot create a temp dir for the NATS cluster");
        let ports = distinct_free_ports(size * 2);
        let name = format!("closeloop-test-{}", ports[0]);
        let cluster_ports: Vec<u16> = ports[size..].to_vec();
        let nodes = (0..size)
            .map(|i| {
                let node_dir = dir.path().join(format!("n{}", i + 1));
                let store_dir = node_dir.join("jetstream");
                std::fs::create_dir_all(&store_dir)
                    .expect("cannot create a node's JetStream directory");
                let node = Node {
                    child: None,
                    client_port: ports[i],
                    cluster_port: cluster_ports[i],
                    config: node_dir.join("nats-server.conf"),
                    store_dir,
                    log_file: node_dir.join("nats-server.log"),
                };
                let text = node_config(&name, i, &node, &cluster_ports);
                std::fs::write(&node.config, text)
                    .expect("cannot write a node's nats-server configuration");
                node
            })
            .collect();
        let mut cluster = Self {
            name,
            nodes,
            _dir: dir,
        };
        for i in 0..size {
            cluster.launch(i);
        }
        for i in 0..size {
            cluster.wait_for_node(i);
        }
        cluster.wait_until_ready();
        cluster
    }

    /// How many nodes the cluster has.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never: [`start`](Self::start) refuses 0).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The cluster's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every node's client URL, comma-separated: the form of `CLOSELOOP_NATS_URL`. async-nats
    /// does not split such a string; give it [`url_list`](Self::url_list).
    #[must_use]
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    /// Every node's client URL, for `async_nats::connect(cluster.url_list())` (a `Vec` of
    /// URLs is one of async-nats' `ToServerAddrs`).
    #[must_use]
    pub fn url_list(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// The client URL of node `i`, e.g. `nats://127.0.0.1:41234`.
    ///
    /// # Panics
    /// When there is no node `i`.
    #[must_use]
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.node(i).client_port)
    }

    /// Where node `i` keeps JetStream's files (kept across [`restart`](Self::restart)).
    ///
    /// # Panics
    /// When there is no node `i`.
    #[must_use]
    pub fn store_dir(&self, i: usize) -> &Path {
        &self.node(i).store_dir
    }

    /// Node `i`'s log file.
    ///
    /// # Panics
    /// When there is no node `i`.
    #[must_use]
    pub fn log_file(&self, i: usize) -> &Path {
        &self.node(i).log_file
    }

    /// The server name of node `i`: `n1` for node 0.
    #[must_use]
    pub fn server_name(i: usize) -> String {
        format!("n{}", i + 1)
    }

    /// Whether node `i` is running.
    ///
    /// # Panics
    /// When there is no node `i`.
    #[must_use]
    pub fn is_running(&self, i: usize) -> bool {
        self.node(i).child.is_some()
    }

    /// Kills node `i` with SIGKILL, as a crash would, and waits for it to exit. Its files
    /// stay; [`restart`](Self::restart) brings it back.
    ///
    /// # Panics
    /// When there is no node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.node_mut(i).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again (killing it first if it runs) with the same ports, directory and
    /// configuration, and waits until it accepts clients. It then rejoins the cluster and
    /// catches up its streams in the background.
    ///
    /// # Panics
    /// When it cannot be started or does not accept clients within 20 s.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.launch(i);
        self.wait_for_node(i);
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes.get(i).unwrap_or_else(|| {
            panic!(
                "the cluster has nodes 0 to {}, not {i}",
                self.nodes.len() - 1
            )
        })
    }

    fn node_mut(&mut self, i: usize) -> &mut Node {
        let len = self.nodes.len();
        self.nodes
            .get_mut(i)
            .unwrap_or_else(|| panic!("the cluster has nodes 0 to {}, not {i}", len - 1))
    }

    fn launch(&mut self, i: usize) {
        let bin = binary();
        let node = self.node_mut(i);
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&node.config)
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
        node.child = Some(child);
    }

    fn wait_for_node(&mut self, i: usize) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.node(i).client_port));
        let deadline = Instant::now() + NODE_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.node_mut(i).child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server {} exited at start with {status}; see {}",
                    Self::server_name(i),
                    self.node(i).log_file.display()
                );
            }
            if answers_ping(address) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "nats-server {} did not answer on {address} within {NODE_TIMEOUT:?}; see {}",
            Self::server_name(i),
            self.node(i).log_file.display()
        );
    }

    /// Waits until a stream replicated on every node can be created, asking each node in turn,
    /// then deletes it.
    fn wait_until_ready(&self) {
        let create = format!(
            r#"{{"name":"{PROBE_STREAM}","subjects":["closeloop.testkit.ready"],"storage":"memory","num_replicas":{}}}"#,
            self.nodes.len()
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_answer = String::from("(no answer yet)");
        let mut attempt = 0;
        while Instant::now() < deadline {
            let node = &self.nodes[attempt % self.nodes.len()];
            attempt += 1;
            let address = SocketAddr::from(([127, 0, 0, 1], node.client_port));
            match request(
                address,
                &format!("$JS.API.STREAM.CREATE.{PROBE_STREAM}"),
                &create,
            ) {
                // Created, or created by an earlier attempt whose answer was lost.
                Some(answer)
                    if !answer.contains(r#""error""#) || answer.contains(r#""err_code":10058"#) =>
                {
                    if let Some(deleted) = request(
                        address,
                        &format!("$JS.API.STREAM.DELETE.{PROBE_STREAM}"),
                        "",
                    ) && deleted.contains(r#""success":true"#)
                    {
                        return;
                    }
                }
                Some(answer) => last_answer = answer,
                None => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs = (0..self.nodes.len()).fold(String::new(), |mut logs, i| {
            let _ = write!(logs, " {}", self.nodes[i].log_file.display());
            logs
        });
        panic!(
            "the NATS cluster did not accept an R{} stream within {READY_TIMEOUT:?} \
             (last answer: {last_answer}); see the logs:{logs}",
            self.nodes.len()
        );
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // The directory goes with `self._dir`, dropped after this, once no node writes in it.
    }
}

/// The configuration of node `i`: its name and ports, its own JetStream directory and log,
/// and routes to every other node.
fn node_config(cluster: &str, i: usize, node: &Node, cluster_ports: &[u16]) -> String {
    let routes = cluster_ports
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .fold(String::new(), |mut routes, (_, port)| {
            let _ = writeln!(routes, "    nats-route://127.0.0.1:{port}");
            routes
        });
    format!(
        "server_name: {name}\n\
         listen: 127.0.0.1:{client}\n\
         log_file: \"{log}\"\n\
         jetstream {{\n  store_dir: \"{store}\"\n}}\n\
         cluster {{\n  name: {cluster}\n  listen: 127.0.0.1:{route}\n  routes = [\n{routes}  ]\n}}\n",
        name = NatsCluster::server_name(i),
        client = node.client_port,
        log = node.log_file.display(),
        store = node.store_dir.display(),
        route = node.cluster_port,
    )
}

/// `count` free ports, all different.
fn distinct_free_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// Sends one request to a NATS server over a bare connection and returns the reply's payload,
/// or `None` when there is none within [`REQUEST_TIMEOUT`]. Enough of the protocol for the
/// readiness check, so that the testkit needs no NATS client.
fn request(address: SocketAddr, subject: &str, payload: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, REQUEST_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok()?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut seen = Vec::new();
    let mut buf = [0_u8; 8192];
    // The server's INFO line first.
    while !seen.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || Instant::now() > deadline {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let inbox = "_INBOX.closeloop_testkit";
    let commands = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {inbox} 1\r\nPUB {subject} {inbox} {}\r\n{payload}\r\n",
        payload.len()
    );
    stream.write_all(commands.as_bytes()).ok()?;
    seen.clear();
    let marker = format!("MSG {inbox} 1 ");
    loop {
        let text = String::from_utf8_lossy(&seen);
        if let Some(start) = text.find(&marker) {
            let rest = &text[start + marker.len()..];
            if let Some(line_end) = rest.find("\r\n") {
                let size: usize = rest[..line_end].trim().parse().ok()?;
                let body = &rest[line_end + 2..];
                if body.len() >= size {
                    return Some(body[..size].to_owned());
                }
            }
        }
        if text.contains("-ERR") || Instant::now() > deadline {
            return None;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_routes_to_every_other_and_keeps_its_own_directory() {
        let node = Node {
            child: None,
            client_port: 4222,
            cluster_port: 6222,
            config: PathBuf::from("/tmp/n1/nats-server.conf"),
            store_dir: PathBuf::from("/tmp/n1/jetstream"),
            log_file: PathBuf::from("/tmp/n1/nats-server.log"),
        };
        let config = node_config("test", 0, &node, &[6222, 6223, 6224]);
        assert!(config.contains("server_name: n1\n"), "{config}");
        assert!(config.contains("listen: 127.0.0.1:4222\n"), "{config}");
        assert!(
            config.contains("store_dir: \"/tmp/n1/jetstream\""),
            "{config}"
        );
        assert!(config.contains("listen: 127.0.0.1:6222\n"), "{config}");
        assert!(config.contains("nats-route://127.0.0.1:6223"), "{config}");
        assert!(config.contains("nats-route://127.0.0.1:6224"), "{config}");
        assert!(
            !config.contains("nats-route://127.0.0.1:6222"),
            "no route to itself"
        );
    }

    #[test]
    fn a_node_configuration_is_one_nats_server_accepts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = Node {
            child: None,
            client_port: free_port(),
            cluster_port: free_port(),
            config: dir.path().join("nats-server.conf"),
            store_dir: dir.path().join("jetstream"),
            log_file: dir.path().join("nats-server.log"),
        };
        let config = node_config(
            "test",
            1,
            &node,
            &[free_port(), node.cluster_port, free_port()],
        );
        std::fs::write(&node.config, config).expect("write");
        let output = Command::new(binary())
            .arg("-t")
            .arg("-c")
            .arg(&node.config)
            .output()
            .expect("run nats-server -t");
        assert!(
            output.status.success(),
            "nats-server -t refused it: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
