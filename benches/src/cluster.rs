//! An in-process cluster of real replicas over QUIC on loopback, in memory or on disk.

use bft_core::testkit::{client_key, config, replica_key};
use bft_core::{ClientId, ClusterConfig, ReplicaId};
use bft_crypto::KeyPair;
use bft_net::{AsyncClient, ClientOptions, NodeError, ReplicaHandle, ReplicaNode};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;

use crate::service::WriteService;

/// Where replicas keep their protocol records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageMode {
    /// In memory (nothing survives a restart).
    Memory,
    /// A disk log and snapshots per replica, fsynced before anything is sent (group commit).
    Disk,
}

/// How the harness's client identities are keyed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKeys {
    /// One key for all of them: sessions of one client process (an application server), which
    /// share one connection per replica (or per node, for the baseline).
    #[default]
    Shared,
    /// A key per identity: as many independent clients, each with connections of its own.
    PerSession,
}

impl ClientKeys {
    /// The mode as `--client-keys` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ClientKeys::Shared => "shared",
            ClientKeys::PerSession => "per-session",
        }
    }
}

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Faults tolerated: n = 3f+1 replicas.
    pub f: usize,
    /// Client identities admitted (one per concurrent operation).
    pub clients: u64,
    /// How they are keyed.
    pub client_keys: ClientKeys,
    /// Storage.
    pub storage: StorageMode,
    /// Parent of the replicas' data directories (disk mode).
    pub data_root: PathBuf,
    /// The limits (window, batch sizes, batches in flight); `None` for the defaults.
    pub limits: Option<bft_core::Limits>,
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A loopback socket could not be bound.
    #[error("binding a loopback socket: {0}")]
    Bind(#[from] std::io::Error),
    /// A replica could not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A transport could not start.
    #[error(transparent)]
    Transport(#[from] bft_net::TransportError),
    /// The client could not connect.
    #[error(transparent)]
    Connect(#[from] bft_net::ConnectError),
    /// A replica process could not start.
    #[error("replica process: {0}")]
    Process(String),
}

/// The benchmark cluster's configuration: `3f+1` replicas and `clients` client identities with
/// the test kit's deterministic keys (all of them the key of client 1 with
/// [`ClientKeys::Shared`]), and `limits` (the defaults for `None`).
pub fn build_config(
    f: usize,
    clients: u64,
    client_keys: ClientKeys,
    limits: Option<bft_core::Limits>,
) -> Arc<ClusterConfig> {
    let mut config = config(f, clients);
    for (id, key) in config.clients.iter_mut() {
        *key = client_identity(client_keys, *id).public();
    }
    if let Some(limits) = limits {
        config.limits = limits;
    }
    Arc::new(config)
}

/// The key pair of client `id` in a configuration from [`build_config`].
fn client_identity(client_keys: ClientKeys, id: ClientId) -> KeyPair {
    match client_keys {
        ClientKeys::Shared => client_key(1),
        ClientKeys::PerSession => client_key(id.0),
    }
}

/// Every identity a configuration from [`build_config`] admits, with its key pair.
pub fn client_identities(
    config: &ClusterConfig,
    client_keys: ClientKeys,
) -> Vec<(ClientId, KeyPair)> {
    config
        .clients
        .keys()
        .map(|id| (*id, client_identity(client_keys, *id)))
        .collect()
}

/// A client with every identity `config` admits (so that many operations can be outstanding),
/// connected to the replicas at `addresses`.
pub(crate) fn connect_client(
    config: &Arc<ClusterConfig>,
    client_keys: ClientKeys,
    addresses: &[SocketAddr],
) -> Result<AsyncClient, ClusterError> {
    Ok(AsyncClient::connect(
        config.clone(),
        client_identities(config, client_keys),
        addresses.to_vec(),
        ClientOptions::default(),
    )?)
}

/// Binds `n` UDP sockets on loopback, one per node; returns them with their addresses.
pub(crate) fn bind_loopback(n: usize) -> std::io::Result<(Vec<UdpSocket>, Vec<SocketAddr>)> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let addresses = sockets
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((sockets, addresses))
}

/// A running cluster.
pub struct BenchCluster {
    config: Arc<ClusterConfig>,
    client_keys: ClientKeys,
    addresses: Vec<SocketAddr>,
    replicas: Vec<ReplicaHandle>,
}

impl BenchCluster {
    /// Starts `3f+1` replicas (from empty data directories in disk mode). Call from within a
    /// tokio runtime.
    pub fn start(spec: &ClusterSpec) -> Result<BenchCluster, ClusterError> {
        let config = build_config(spec.f, spec.clients, spec.client_keys, spec.limits);
        let (sockets, addresses) = bind_loopback(config.n())?;
        let mut replicas = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let id = ReplicaId(i as u32);
            let mut node =
                ReplicaNode::builder(config.clone(), id, replica_key(id.0), addresses.clone())
                    .socket(socket);
            if spec.storage == StorageMode::Disk {
                node = node.data_dir(spec.data_root.join(format!("replica-{i}")));
            }
            replicas.push(node.start(WriteService::default())?);
        }
        Ok(BenchCluster {
            config,
            client_keys: spec.client_keys,
            addresses,
            replicas,
        })
    }

    /// A client with every admitted identity (so `clients` operations can be outstanding).
    pub fn client(&self) -> Result<AsyncClient, ClusterError> {
        connect_client(&self.config, self.client_keys, &self.addresses)
    }

    /// The replicas.
    pub fn replicas(&self) -> &[ReplicaHandle] {
        &self.replicas
    }

    /// Stops every replica.
    pub async fn shutdown(self) {
        for replica in self.replicas {
            let _ = replica.shutdown().await;
        }
    }
}
