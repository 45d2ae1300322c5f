//! A 3-server NATS cluster with JetStream on loopback, for the fleet system tests: Debian's
//! `nats-server` (2.9, `.ci/run` installs it), config files written here, store directories
//! in a temporary directory, every server killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One server of the cluster.
struct Server {
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// A running (or stopped) 3-server cluster.
pub struct Cluster {
    servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Starts three servers routed to each other and waits until JetStream has a leader.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut servers = Vec::new();
        for (i, (client, monitor, route)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store).unwrap();
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, _, r))| format!("\"nats-route://127.0.0.1:{r}\""))
                .collect();
            let config = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
                 jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 256MB\n}}\n\
                 cluster {{\n  name: kafclaw-test\n  listen: \"127.0.0.1:{route}\"\n  routes: [{}]\n}}\n",
                store.display(),
                routes.join(", ")
            );
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, config).unwrap();
            servers.push(Server {
                name,
                client_port: *client,
                monitor_port: *monitor,
                config: path,
                child: None,
            });
        }
        let mut cluster = Cluster { servers, _dir: dir };
        cluster.start_all();
        cluster
    }

    /// The client URLs, comma-separated (`fleet.nats_urls` in the environment).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts every stopped server (same ports, same store directories) and waits until the
    /// cluster is ready.
    pub fn start_all(&mut self) {
        for server in &mut self.servers {
            if server.child.is_none() {
                let child = Command::new("nats-server")
                    .arg("-c")
                    .arg(&server.config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("nats-server (apt-get install nats-server)");
                server.child = Some(child);
            }
        }
        self.wait_ready(Duration::from_secs(30));
    }

    /// Kills every server.
    pub fn stop_all(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Polls each server's monitoring port until JetStream is healthy everywhere and the
    /// meta group has a leader.
    fn wait_ready(&self, deadline: Duration) {
        let start = Instant::now();
        loop {
            let ready = self.servers.iter().all(|s| {
                let health = http_get(s.monitor_port, "/healthz");
                let jsz = http_get(s.monitor_port, "/jsz");
                health.is_some_and(|h| h.contains("\"ok\""))
                    && jsz.is_some_and(|j| {
                        serde_json::from_str::<serde_json::Value>(&j)
                            .ok()
                            .and_then(|v| v["meta_cluster"]["leader"].as_str().map(str::to_owned))
                            .is_some_and(|l| !l.is_empty())
                    })
            });
            if ready {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "the NATS cluster ({}) was not ready within {deadline:?}",
                self.servers
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A plain HTTP/1.0 GET on loopback; the body, or `None` when the server does not answer 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}
