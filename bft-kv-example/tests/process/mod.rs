//! Real `bft-kv` processes on loopback: keygen into a temporary directory, replicas as child
//! processes (killed when the guard drops), CLI operations as further processes.

#![allow(dead_code)]

use bft_kv_example::replica::StatusReport;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A generous bound for conditions waited on (never a sleep as an assertion).
pub const PATIENCE: Duration = Duration::from_secs(60);
/// How often a polled condition is checked.
pub const POLL: Duration = Duration::from_millis(50);

/// The `bft-kv` binary under test.
pub fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bft-kv"));
    command.env_remove("RUST_LOG");
    command
}

/// `n` loopback UDP ports free right now (bound together, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("local address").port())
        .collect()
}

/// Runs `bft-kv` with `args` to completion.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("bft-kv runs")
}

/// The output's stdout and stderr, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Waits (up to [`PATIENCE`], polling every [`POLL`]) until `condition` holds.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// A generated cluster and its replica processes; every child is killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub n: usize,
    children: Vec<Option<Child>>,
}

impl Cluster {
    /// Runs `bft-kv keygen` for 4 replicas on free loopback ports, with short timeouts.
    pub fn generate(clients: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ports: Vec<String> = free_ports(4).iter().map(u16::to_string).collect();
        let out = dir.path().join("cluster");
        let output = run(&[
            "keygen",
            "--replicas",
            "4",
            "--clients",
            &clients.to_string(),
            "--out",
            out.to_str().expect("utf-8 path"),
            "--ports",
            &ports.join(","),
            "--view-change-ms",
            "500",
            "--client-retransmit-ms",
            "250",
        ]);
        assert!(output.status.success(), "keygen: {}", describe(&output));
        Cluster {
            config: out.join("cluster.toml"),
            dir,
            n: 4,
            children: (0..4).map(|_| None).collect(),
        }
    }

    /// The cluster directory (configuration and key files).
    pub fn cluster_dir(&self) -> PathBuf {
        self.config
            .parent()
            .expect("config in a directory")
            .to_path_buf()
    }

    /// Client `id`'s key file.
    pub fn client_key(&self, id: u64) -> PathBuf {
        self.cluster_dir().join(format!("client-{id}.key"))
    }

    fn status_path(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("status-{id}.toml"))
    }

    fn log_path(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("replica-{id}.log"))
    }

    /// Starts replica `id` as a child process and waits until it reports its status.
    pub fn start(&mut self, id: usize) {
        assert!(self.children[id].is_none(), "replica {id} is running");
        let status = self.status_path(id);
        let _ = std::fs::remove_file(&status);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        let child = bin()
            .args(["replica", "--config"])
            .arg(&self.config)
            .args(["--id", &id.to_string(), "--status-file"])
            .arg(&status)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("replica starts");
        self.children[id] = Some(child);
        wait_until(&format!("replica {id} to report its status"), || {
            self.check_alive(id);
            self.status(id).is_some()
        });
    }

    /// Starts every replica.
    pub fn start_all(&mut self) {
        for id in 0..self.n {
            self.start(id);
        }
    }

    /// Panics with the replica's log if it has exited.
    fn check_alive(&mut self, id: usize) {
        let child = self.children[id].as_mut().expect("started");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "replica {id} exited ({status}):\n{}",
                std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
            );
        }
    }

    /// Kills replica `id` with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill(&mut self, id: usize) {
        let mut child = self.children[id].take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("reaped");
        let _ = std::fs::remove_file(self.status_path(id));
    }

    /// Stops replica `id` with SIGTERM; returns its exit status and log.
    #[cfg(unix)]
    pub fn terminate(&mut self, id: usize) -> (std::process::ExitStatus, String) {
        let mut child = self.children[id].take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "replica {id} did not stop on SIGTERM"
            );
            std::thread::sleep(POLL);
        };
        (
            status,
            std::fs::read_to_string(self.log_path(id)).unwrap_or_default(),
        )
    }

    /// Replica `id`'s latest status, if it is running and has written one.
    pub fn status(&self, id: usize) -> Option<StatusReport> {
        StatusReport::load(&self.status_path(id))
    }

    /// Waits until replica `id`'s status satisfies `condition`; returns it.
    pub fn wait_status(
        &mut self,
        id: usize,
        what: &str,
        mut condition: impl FnMut(&StatusReport) -> bool,
    ) -> StatusReport {
        let mut last = None;
        wait_until(&format!("replica {id}: {what}"), || {
            self.check_alive(id);
            last = self.status(id).filter(|s| condition(s));
            last.is_some()
        });
        last.expect("condition held")
    }

    /// Runs a client operation with client `client`'s key.
    pub fn op(&self, client: u64, args: &[&str]) -> Output {
        bin()
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--key")
            .arg(self.client_key(client))
            .args(["--timeout", "30s"])
            .output()
            .expect("bft-kv runs")
    }

    /// Runs a client operation that must succeed; returns its stdout, trimmed.
    pub fn ok(&self, client: u64, args: &[&str]) -> String {
        let output = self.op(client, args);
        assert!(output.status.success(), "{args:?}: {}", describe(&output));
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    }

    /// Whether replica `id` runs.
    pub fn running(&self, id: usize) -> bool {
        self.children[id].is_some()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads a file into a string (empty if missing).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
