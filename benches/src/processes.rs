//! The BFT cluster with each replica in a process of its own, so that each replica's resident
//! memory can be read from `/proc` and reported: the in-process cluster can only report the whole
//! process (replicas, clients and harness together).
//!
//! The replica processes are the harness's own binary, started as `<binary> serve-replica
//! <ReplicaArgs>` ([`SERVE_REPLICA`], [`serve_replica`]): nothing else to build or find. Each
//! prints `ready` once listening, and stops cleanly when its standard input closes (so it never
//! outlives the harness), or on SIGTERM or Ctrl-C.

use crate::cluster::{
    ClientKeys, ClusterError, ClusterSpec, StorageMode, bind_loopback, build_config, connect_client,
};
use crate::service::WriteService;
use bft_core::testkit::replica_key;
use bft_core::{ClusterConfig, ReplicaId};
use bft_net::{AsyncClient, ReplicaHandle, ReplicaNode};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// How long a replica process may take to print `ready`.
const READY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a replica process may take to stop once asked, before it is killed.
const STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// The first argument that makes the harness binary serve one replica ([`serve_replica`]).
pub const SERVE_REPLICA: &str = "serve-replica";

/// Arguments of a replica process: one replica of a [`ClusterSpec`].
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "One replica of cluster-bench's BFT cluster (started by cluster-bench)")]
pub struct ReplicaArgs {
    /// Faults tolerated.
    #[arg(long)]
    pub f: usize,
    /// Client identities admitted.
    #[arg(long)]
    pub clients: u64,
    /// How they are keyed.
    #[arg(long, value_enum, default_value_t = ClientKeys::Shared)]
    pub client_keys: ClientKeys,
    /// This replica's id.
    #[arg(long)]
    pub id: u32,
    /// Every replica's address, by id.
    #[arg(long, value_delimiter = ',')]
    pub addresses: Vec<SocketAddr>,
    /// Where to keep the protocol records (durable); in memory without it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// `Limits::max_in_flight_batches` (the library's default without it).
    #[arg(long)]
    pub max_in_flight: Option<u64>,
}

/// Starts the replica `args` describes, with the benchmark's write service.
pub fn start_replica(args: &ReplicaArgs) -> Result<ReplicaHandle, ClusterError> {
    let mut limits = bft_core::Limits::default();
    if let Some(batches) = args.max_in_flight {
        limits.max_in_flight_batches = batches;
    }
    let config = build_config(args.f, args.clients, args.client_keys, Some(limits));
    let id = ReplicaId(args.id);
    let mut node = ReplicaNode::builder(config, id, replica_key(id.0), args.addresses.clone());
    if let Some(dir) = &args.data_dir {
        node = node.data_dir(dir.clone());
    }
    Ok(node.start(WriteService::default())?)
}

/// Serves one replica as `args` describes until standard input closes, or SIGTERM or Ctrl-C
/// arrive; prints `ready` once it listens. Call from within a tokio runtime.
pub async fn serve_replica(args: &ReplicaArgs) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::AsyncReadExt;
    let replica = start_replica(args)?;
    println!("ready");
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            read = stdin.read(&mut sink) => if !matches!(read, Ok(n) if n > 0) { break },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    replica.shutdown().await?;
    Ok(())
}

/// A running cluster of replica processes. Dropping it (or [`ReplicaProcesses::shutdown`]) ends
/// them: their standard input closes, they stop, and are reaped (killed if they linger).
pub struct ReplicaProcesses {
    config: Arc<ClusterConfig>,
    client_keys: ClientKeys,
    addresses: Vec<SocketAddr>,
    children: Vec<Child>,
}

impl ReplicaProcesses {
    /// Starts `3f+1` replica processes (this binary, which must call [`serve_replica`] when its
    /// first argument is [`SERVE_REPLICA`]) and waits until each listens.
    pub fn start(spec: &ClusterSpec) -> Result<ReplicaProcesses, ClusterError> {
        ReplicaProcesses::start_with(&std::env::current_exe()?, spec)
    }

    /// [`ReplicaProcesses::start`] with another binary that serves replicas (the harness binary,
    /// from a test).
    pub fn start_with(
        binary: &std::path::Path,
        spec: &ClusterSpec,
    ) -> Result<ReplicaProcesses, ClusterError> {
        let config = build_config(spec.f, spec.clients, spec.client_keys, spec.limits);
        // Ports the system hands out now, released for the replicas to bind (on loopback, nothing
        // else takes them in between in practice; a replica that cannot bind exits, and the
        // harness reports it).
        let addresses = bind_loopback(config.n())?.1;
        let list = addresses
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = ReplicaProcesses {
            config: config.clone(),
            client_keys: spec.client_keys,
            addresses: addresses.clone(),
            children: Vec::new(),
        };
        for id in 0..config.n() {
            let mut command = Command::new(binary);
            command
                .arg(SERVE_REPLICA)
                .args(["--f", &spec.f.to_string()])
                .args(["--clients", &spec.clients.to_string()])
                .args(["--client-keys", spec.client_keys.name()])
                .args(["--id", &id.to_string()])
                .args(["--addresses", &list])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(batches) = spec.limits.map(|l| l.max_in_flight_batches) {
                command.args(["--max-in-flight", &batches.to_string()]);
            }
            if spec.storage == StorageMode::Disk {
                command
                    .arg("--data-dir")
                    .arg(spec.data_root.join(format!("replica-{id}")));
            }
            // Pushed at once, so that an error from here on stops it (through Drop).
            cluster.children.push(command.spawn()?);
        }
        for child in &mut cluster.children {
            wait_ready(child)?;
        }
        Ok(cluster)
    }

    /// A client with every admitted identity (so `clients` operations can be outstanding).
    pub fn client(&self) -> Result<AsyncClient, ClusterError> {
        connect_client(&self.config, self.client_keys, &self.addresses)
    }

    /// The replicas' process ids, by replica id.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Stops every replica and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Closing standard input asks each replica to stop.
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        let deadline = std::time::Instant::now() + STOP_PATIENCE;
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for ReplicaProcesses {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for `child` to print `ready` (on a helper thread, so a silent child cannot hang us).
fn wait_ready(child: &mut Child) -> Result<(), ClusterError> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .next()
            .and_then(Result::ok)
            .is_some_and(|l| l == "ready");
        let _ = sender.send(ready);
        // Keep draining, so the child never blocks on a full pipe.
        for _ in lines {}
    });
    match receiver.recv_timeout(READY_PATIENCE) {
        Ok(true) => Ok(()),
        _ => Err(ClusterError::Process(format!(
            "process {} did not start (see its messages above)",
            child.id()
        ))),
    }
}
