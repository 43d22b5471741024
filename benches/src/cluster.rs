//! An in-process cluster of real replicas over QUIC on loopback, in memory or on disk.

use bft_core::testkit::{client_key, config, replica_key};
use bft_core::{ClientId, ClusterConfig, MemoryStorage, Replica, ReplicaId, Verifier};
use bft_net::{
    AsyncClient, ClientOptions, ReplicaHandle, Transport, TransportOptions, recover_replica,
    spawn_replica,
};
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

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Faults tolerated: n = 3f+1 replicas.
    pub f: usize,
    /// Client identities admitted (one per concurrent operation).
    pub clients: u64,
    /// Storage.
    pub storage: StorageMode,
    /// Parent of the replicas' data directories (disk mode).
    pub data_root: PathBuf,
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A loopback socket could not be bound.
    #[error("binding a loopback socket: {0}")]
    Bind(#[from] std::io::Error),
    /// The transport did not start.
    #[error(transparent)]
    Transport(#[from] bft_net::TransportError),
    /// A replica could not start from its data directory.
    #[error(transparent)]
    Start(#[from] bft_net::StartError),
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] bft_core::ConfigError),
    /// The client could not connect.
    #[error(transparent)]
    Connect(#[from] bft_net::ConnectError),
}

/// A running cluster.
pub struct BenchCluster {
    config: Arc<ClusterConfig>,
    addresses: Vec<SocketAddr>,
    replicas: Vec<ReplicaHandle>,
}

impl BenchCluster {
    /// Starts `3f+1` replicas (from empty data directories in disk mode). Call from within a
    /// tokio runtime.
    pub fn start(spec: &ClusterSpec) -> Result<BenchCluster, ClusterError> {
        let config = Arc::new(config(spec.f, spec.clients));
        let sockets = (0..config.n())
            .map(|_| UdpSocket::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        let addresses = sockets
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
        let mut replicas = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let id = ReplicaId(i as u32);
            let (transport, inbound) = Transport::replica_on_socket(
                config.clone(),
                id,
                replica_key(id.0),
                socket,
                addresses.clone(),
                TransportOptions::default(),
            )?;
            let verifier = Verifier::new(config.clone())?;
            let handle = match spec.storage {
                StorageMode::Memory => {
                    let replica = Replica::new(
                        config.clone(),
                        id,
                        replica_key(id.0),
                        WriteService::default(),
                    )?;
                    spawn_replica(
                        replica,
                        MemoryStorage::default(),
                        transport,
                        inbound,
                        verifier,
                    )
                }
                StorageMode::Disk => {
                    let dir = spec.data_root.join(format!("replica-{i}"));
                    let (replica, storage, _) = recover_replica(
                        config.clone(),
                        id,
                        replica_key(id.0),
                        WriteService::default(),
                        &dir,
                        Default::default(),
                    )?;
                    spawn_replica(replica, storage, transport, inbound, verifier)
                }
            };
            replicas.push(handle);
        }
        Ok(BenchCluster {
            config,
            addresses,
            replicas,
        })
    }

    /// A client with every admitted identity (so `clients` operations can be outstanding).
    pub fn client(&self) -> Result<AsyncClient, ClusterError> {
        let identities = self
            .config
            .clients
            .keys()
            .map(|id| (*id, client_key(id.0)))
            .collect::<Vec<(ClientId, _)>>();
        Ok(AsyncClient::connect(
            self.config.clone(),
            identities,
            self.addresses.clone(),
            ClientOptions::default(),
        )?)
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
