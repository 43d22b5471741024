//! A replica in one call, and a whole cluster on loopback for examples and demos.
//!
//! [`ReplicaNode::start`] puts the pieces together: the transport listening on the replica's
//! address, the [`Replica`] running the service, the [`Verifier`] and the driver task.
//! [`LocalCluster`] starts `3f+1` of them in this process, on ephemeral loopback ports, with
//! freshly generated keys, and hands out clients:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! # #[derive(Default)] struct Echo;
//! # impl bft_core::Service for Echo {
//! #     fn execute(&mut self, _: &bft_core::ExecuteContext, op: &[u8]) -> Vec<u8> { op.to_vec() }
//! #     fn snapshot(&self) -> Vec<u8> { Vec::new() }
//! #     fn restore(&mut self, _: &[u8]) -> Result<(), bft_core::RestoreError> { Ok(()) }
//! # }
//! use bft_net::node::{LocalCluster, LocalClusterOptions};
//! let cluster = LocalCluster::start(LocalClusterOptions::default(), |_| Echo)?;
//! let client = cluster.client(Default::default())?;
//! let reply = client.invoke(b"hello".to_vec()).await?;
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Storage: with [`NodeBuilder::data_dir`], a replica keeps its protocol records and checkpoints
//! on disk and a restart recovers from them ([`crate::durable`]); without, it keeps them in
//! memory ([`MemoryStorage`]), and a restarted replica starts empty and catches up from its peers
//! by state transfer (which is safe only while at most f replicas are faulty in total, counting
//! replicas that restarted empty).

use crate::client::{AsyncClient, ClientOptions, ConnectError};
use crate::driver::{DriverError, ReplicaHandle, spawn_replica};
use crate::durable::recover_replica;
use crate::transport::{Transport, TransportError, TransportOptions};
use bft_core::{
    ClientId, ClusterConfig, ConfigError, Limits, MemoryStorage, Replica, ReplicaId, Service,
    Storage, Timing, Verifier,
};
use bft_crypto::{KeyPair, PublicKey};
use bft_storage::WalOptions;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long [`LocalCluster::restart`] waits for the stopped replica's socket to be released.
const REBIND_PATIENCE: Duration = Duration::from_secs(10);

/// Why a replica (or a local cluster) could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Not called from within a tokio runtime.
    #[error("a replica must be started from within a tokio runtime")]
    NoRuntime,
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The id is not a replica of the configuration.
    #[error("replica {id} is not in the configuration (it has {n} replicas)")]
    NotAMember {
        /// The id.
        id: ReplicaId,
        /// The number of replicas configured.
        n: usize,
    },
    /// The key pair is not the configured key of this replica.
    #[error(
        "the key given for replica {id} has public key {found}, but the configuration lists \
         {expected}"
    )]
    WrongKey {
        /// The replica.
        id: ReplicaId,
        /// The key given.
        found: PublicKey,
        /// The key configured.
        expected: PublicKey,
    },
    /// The addresses do not give one per replica.
    #[error("{given} addresses given for {n} replicas")]
    Addresses {
        /// Addresses given.
        given: usize,
        /// Replicas configured.
        n: usize,
    },
    /// Another socket is bound to the replica's address.
    #[error("address {addr} is already in use (is another replica or program running on it?)")]
    AddressInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The replica's address cannot be bound for another reason.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A key could not be generated.
    #[error("cannot generate a key: {0}")]
    Keygen(String),
    /// The replica had stopped on its own.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The replica is not running in this cluster.
    #[error("replica {0} is not running")]
    NotRunning(ReplicaId),
    /// The replica could not start from its data directory.
    #[error(transparent)]
    Start(#[from] crate::durable::StartError),
}

/// Starts replicas. [`ReplicaNode::start`] for the common case, [`ReplicaNode::builder`] to tune.
pub struct ReplicaNode;

impl ReplicaNode {
    /// Starts replica `id` of `config`, with its `key`, listening on `addresses[id]` (`addresses`
    /// has every replica's, by id), running `service`. Must be called from within a tokio
    /// runtime. Stop it with [`ReplicaHandle::shutdown`].
    pub fn start<S: Service + Send + 'static>(
        config: Arc<ClusterConfig>,
        id: ReplicaId,
        key: KeyPair,
        addresses: Vec<SocketAddr>,
        service: S,
    ) -> Result<ReplicaHandle, NodeError> {
        ReplicaNode::builder(config, id, key, addresses).start(service)
    }

    /// A builder for replica `id`, to tune before starting.
    pub fn builder(
        config: Arc<ClusterConfig>,
        id: ReplicaId,
        key: KeyPair,
        addresses: Vec<SocketAddr>,
    ) -> NodeBuilder {
        NodeBuilder {
            config,
            id,
            key,
            addresses,
            transport: TransportOptions::default(),
            socket: None,
            data_dir: None,
        }
    }
}

/// A replica about to start: see [`ReplicaNode::builder`].
pub struct NodeBuilder {
    config: Arc<ClusterConfig>,
    id: ReplicaId,
    key: KeyPair,
    addresses: Vec<SocketAddr>,
    transport: TransportOptions,
    socket: Option<UdpSocket>,
    data_dir: Option<PathBuf>,
}

impl NodeBuilder {
    /// Keeps the replica's records and checkpoints in `dir` (created if missing) and recovers
    /// from what it holds: the replica restarts where it stopped, even if every replica stopped
    /// at once.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> NodeBuilder {
        self.data_dir = Some(dir.into());
        self
    }

    /// Tunes the transport.
    pub fn transport_options(mut self, options: TransportOptions) -> NodeBuilder {
        self.transport = options;
        self
    }

    /// Listens on `socket`, already bound (to learn ports before starting), instead of binding
    /// the replica's configured address.
    pub fn socket(mut self, socket: UdpSocket) -> NodeBuilder {
        self.socket = Some(socket);
        self
    }

    /// Checks the configuration and key, binds the address and starts the replica.
    pub fn start<S: Service + Send + 'static>(
        self,
        service: S,
    ) -> Result<ReplicaHandle, NodeError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NodeError::NoRuntime);
        }
        let NodeBuilder {
            config,
            id,
            key,
            addresses,
            transport,
            socket,
            data_dir,
        } = self;
        config.validate()?;
        let n = config.n();
        let expected = *config
            .replica_key(id)
            .ok_or(NodeError::NotAMember { id, n })?;
        if key.public() != expected {
            return Err(NodeError::WrongKey {
                id,
                found: key.public(),
                expected,
            });
        }
        if addresses.len() != n {
            return Err(NodeError::Addresses {
                given: addresses.len(),
                n,
            });
        }
        let verifier = Verifier::new(config.clone())?;
        let endpoint = (
            config.clone(),
            id,
            key.clone(),
            addresses,
            transport,
            socket,
        );
        match data_dir {
            // Recover before binding: a damaged data directory stops the start with its error.
            Some(dir) => {
                let (replica, storage, _) =
                    recover_replica(config, id, key, service, &dir, WalOptions::default())?;
                start_with(replica, storage, endpoint, verifier)
            }
            None => {
                let replica = Replica::new(config, id, key, service)?;
                start_with(replica, MemoryStorage::default(), endpoint, verifier)
            }
        }
    }
}

type Endpoint = (
    Arc<ClusterConfig>,
    ReplicaId,
    KeyPair,
    Vec<SocketAddr>,
    TransportOptions,
    Option<UdpSocket>,
);

/// Binds (unless given a socket), starts the transport and spawns the driver.
fn start_with<S, St>(
    replica: Replica<S>,
    storage: St,
    (config, id, key, addresses, transport, socket): Endpoint,
    verifier: Verifier,
) -> Result<ReplicaHandle, NodeError>
where
    S: Service + Send + 'static,
    St: Storage + Send + 'static,
    St::Error: std::fmt::Display,
{
    let socket = match socket {
        Some(socket) => socket,
        None => bind(addresses[id.0 as usize])?,
    };
    let (transport, inbound) =
        Transport::replica_on_socket(config, id, key, socket, addresses, transport)?;
    Ok(spawn_replica(
        replica, storage, transport, inbound, verifier,
    ))
}

fn bind(addr: SocketAddr) -> Result<UdpSocket, NodeError> {
    UdpSocket::bind(addr).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            NodeError::AddressInUse { addr }
        } else {
            NodeError::Bind { addr, source }
        }
    })
}

/// What [`LocalCluster::start`] builds.
#[derive(Debug, Clone)]
pub struct LocalClusterOptions {
    /// Faults tolerated; the cluster has `3f+1` replicas.
    pub f: usize,
    /// Admitted clients (ids 1 to `clients`), each with a generated key.
    pub clients: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// Protocol limits.
    pub limits: Limits,
    /// Timeouts.
    pub timing: Timing,
    /// The transport's tuning.
    pub transport: TransportOptions,
    /// If set, replica `i` keeps its data in `data_root/replica-i` and a restart recovers from it;
    /// otherwise replicas keep everything in memory and restart empty.
    pub data_root: Option<PathBuf>,
}

impl Default for LocalClusterOptions {
    fn default() -> Self {
        LocalClusterOptions {
            f: 1,
            clients: 1,
            cluster_id: 1,
            limits: Limits::default(),
            timing: Timing::default(),
            transport: TransportOptions::default(),
            data_root: None,
        }
    }
}

/// `3f+1` replicas in this process on ephemeral loopback ports, with generated keys. For
/// examples, demos and tests; stop it with [`LocalCluster::shutdown`].
pub struct LocalCluster {
    config: Arc<ClusterConfig>,
    addresses: Vec<SocketAddr>,
    replica_keys: Vec<KeyPair>,
    client_keys: Vec<(ClientId, KeyPair)>,
    replicas: Vec<Option<ReplicaHandle>>,
    transport: TransportOptions,
    data_root: Option<PathBuf>,
}

fn generate() -> Result<KeyPair, NodeError> {
    KeyPair::generate().map_err(|e| NodeError::Keygen(e.to_string()))
}

impl LocalCluster {
    /// Generates keys, binds `3f+1` loopback sockets and starts a replica on each, running the
    /// service `make_service` returns for it. Must be called from within a tokio runtime.
    pub fn start<S: Service + Send + 'static>(
        options: LocalClusterOptions,
        mut make_service: impl FnMut(ReplicaId) -> S,
    ) -> Result<LocalCluster, NodeError> {
        let n = options.f.saturating_mul(3).saturating_add(1);
        let replica_keys = (0..n).map(|_| generate()).collect::<Result<Vec<_>, _>>()?;
        let client_keys = (1..=options.clients)
            .map(|i| Ok((ClientId(i), generate()?)))
            .collect::<Result<Vec<_>, NodeError>>()?;
        let clients: BTreeMap<ClientId, PublicKey> = client_keys
            .iter()
            .map(|(id, key)| (*id, key.public()))
            .collect();
        let mut config = ClusterConfig::new(
            options.cluster_id,
            options.f,
            replica_keys.iter().map(KeyPair::public).collect(),
            clients,
        );
        config.limits = options.limits;
        config.timing = options.timing;
        config.validate()?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let sockets = (0..n)
            .map(|_| bind(loopback))
            .collect::<Result<Vec<_>, _>>()?;
        let addresses = sockets
            .iter()
            .map(|s| {
                s.local_addr().map_err(|source| NodeError::Bind {
                    addr: loopback,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut cluster = LocalCluster {
            config: Arc::new(config),
            addresses,
            replica_keys,
            client_keys,
            replicas: Vec::with_capacity(n),
            transport: options.transport,
            data_root: options.data_root,
        };
        for (i, socket) in sockets.into_iter().enumerate() {
            let id = ReplicaId(u32::try_from(i).unwrap_or(u32::MAX));
            let handle = cluster.node(id).socket(socket).start(make_service(id))?;
            cluster.replicas.push(Some(handle));
        }
        Ok(cluster)
    }

    fn node(&self, id: ReplicaId) -> NodeBuilder {
        let builder = ReplicaNode::builder(
            self.config.clone(),
            id,
            self.replica_keys[id.0 as usize].clone(),
            self.addresses.clone(),
        )
        .transport_options(self.transport.clone());
        match &self.data_root {
            Some(root) => builder.data_dir(root.join(format!("replica-{}", id.0))),
            None => builder,
        }
    }

    /// The cluster's configuration.
    pub fn config(&self) -> &Arc<ClusterConfig> {
        &self.config
    }

    /// The replicas' addresses, by id.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// The admitted clients' ids and keys.
    pub fn client_identities(&self) -> &[(ClientId, KeyPair)] {
        &self.client_keys
    }

    /// A client with every admitted identity (so it runs as many operations at once as there
    /// are clients). Must be called from within a tokio runtime.
    pub fn client(&self, options: ClientOptions) -> Result<AsyncClient, ConnectError> {
        AsyncClient::connect(
            self.config.clone(),
            self.client_keys.clone(),
            self.addresses.clone(),
            options,
        )
    }

    /// Replica `id`'s handle, if it is running.
    pub fn replica(&self, id: ReplicaId) -> Option<&ReplicaHandle> {
        self.replicas.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Stops replica `id` (driver and transport), as if its process had stopped.
    pub async fn stop(&mut self, id: ReplicaId) -> Result<(), NodeError> {
        let handle = self
            .replicas
            .get_mut(id.0 as usize)
            .and_then(Option::take)
            .ok_or(NodeError::NotRunning(id))?;
        handle.shutdown().await?;
        Ok(())
    }

    /// Starts the stopped replica `id` again, empty (it catches up from its peers), on its old
    /// address, running `service`.
    pub async fn restart<S: Service + Send + 'static>(
        &mut self,
        id: ReplicaId,
        service: S,
    ) -> Result<(), NodeError> {
        let slot = id.0 as usize;
        if slot >= self.replicas.len() {
            return Err(NodeError::NotAMember {
                id,
                n: self.replicas.len(),
            });
        }
        let addr = self.addresses[slot];
        // The old endpoint releases its socket once its connections are closed: wait for that.
        let deadline = tokio::time::Instant::now() + REBIND_PATIENCE;
        let socket = loop {
            match bind(addr) {
                Ok(socket) => break socket,
                Err(NodeError::AddressInUse { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => return Err(error),
            }
        };
        let handle = self.node(id).socket(socket).start(service)?;
        self.replicas[slot] = Some(handle);
        Ok(())
    }

    /// Stops every running replica (all at once: each drains its connections for up to the
    /// transport's `drain_timeout`).
    pub async fn shutdown(mut self) {
        let mut stopping = tokio::task::JoinSet::new();
        for handle in self.replicas.iter_mut().filter_map(Option::take) {
            stopping.spawn(handle.shutdown());
        }
        while stopping.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bft_core::{ExecuteContext, RestoreError};

    /// Counts operations; replies with the count.
    #[derive(Default)]
    struct Counter(u64);

    impl Service for Counter {
        fn execute(&mut self, _: &ExecuteContext, _: &[u8]) -> Vec<u8> {
            self.0 += 1;
            self.0.to_le_bytes().to_vec()
        }
        fn snapshot(&self) -> Vec<u8> {
            self.0.to_le_bytes().to_vec()
        }
        fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
            let bytes = snapshot
                .try_into()
                .map_err(|_| RestoreError("8 bytes".into()))?;
            self.0 = u64::from_le_bytes(bytes);
            Ok(())
        }
    }

    fn cluster_config() -> (Arc<ClusterConfig>, Vec<KeyPair>) {
        let keys: Vec<KeyPair> = (0..4u8).map(|i| KeyPair::from_seed([i + 1; 32])).collect();
        let config = ClusterConfig::new(
            1,
            1,
            keys.iter().map(KeyPair::public).collect(),
            BTreeMap::new(),
        );
        (Arc::new(config), keys)
    }

    fn loopback(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], 9)))
            .collect()
    }

    #[test]
    fn refuses_to_start_outside_a_runtime() {
        let (config, keys) = cluster_config();
        let error = ReplicaNode::start(
            config,
            ReplicaId(0),
            keys[0].clone(),
            loopback(4),
            Counter(0),
        )
        .err()
        .expect("no runtime");
        assert!(matches!(error, NodeError::NoRuntime), "{error}");
    }

    #[tokio::test]
    async fn refuses_wrong_keys_ids_and_addresses() {
        let (config, keys) = cluster_config();
        let start = |id: u32, key: &KeyPair, addresses: Vec<SocketAddr>| {
            ReplicaNode::start(
                config.clone(),
                ReplicaId(id),
                key.clone(),
                addresses,
                Counter(0),
            )
            .err()
            .expect("refused")
        };
        let error = start(0, &keys[1], loopback(4));
        assert!(matches!(error, NodeError::WrongKey { .. }), "{error}");
        let error = start(4, &keys[0], loopback(4));
        assert!(matches!(error, NodeError::NotAMember { .. }), "{error}");
        let error = start(0, &keys[0], loopback(3));
        assert!(
            matches!(error, NodeError::Addresses { given: 3, n: 4 }),
            "{error}"
        );
        let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut addresses = loopback(4);
        addresses[0] = taken.local_addr().expect("address");
        let error = start(0, &keys[0], addresses);
        assert!(matches!(error, NodeError::AddressInUse { .. }), "{error}");
        assert!(error.to_string().contains("already in use"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_cluster_serves_through_a_restart() {
        let options = LocalClusterOptions {
            clients: 2,
            ..LocalClusterOptions::default()
        };
        let mut cluster = LocalCluster::start(options, |_| Counter(0)).expect("starts");
        assert_eq!(cluster.addresses().len(), 4);
        assert_eq!(cluster.client_identities().len(), 2);
        let client = cluster.client(ClientOptions::default()).expect("client");
        let count = |reply: Vec<u8>| u64::from_le_bytes(reply.try_into().expect("8 bytes"));
        assert_eq!(count(client.invoke(vec![1]).await.expect("reply")), 1);
        cluster.stop(ReplicaId(3)).await.expect("stops");
        assert!(cluster.replica(ReplicaId(3)).is_none());
        assert!(matches!(
            cluster.stop(ReplicaId(3)).await,
            Err(NodeError::NotRunning(_))
        ));
        assert_eq!(count(client.invoke(vec![2]).await.expect("reply")), 2);
        cluster
            .restart(ReplicaId(3), Counter(0))
            .await
            .expect("restarts");
        assert!(cluster.replica(ReplicaId(3)).is_some());
        assert_eq!(count(client.invoke(vec![3]).await.expect("reply")), 3);
        client.shutdown().await;
        cluster.shutdown().await;
    }
}
