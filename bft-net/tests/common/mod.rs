//! A cluster of replicas over real QUIC on loopback, in the test process.

#![allow(dead_code)]

use bft_core::testkit::service::LogService;
use bft_core::testkit::{client_key, config, replica_key};
use bft_core::{ClientId, ClusterConfig, MemoryStorage, Replica, ReplicaId, Verifier};
use bft_net::{
    AsyncClient, ClientOptions, ReplicaHandle, Snapshot, Transport, TransportOptions, spawn_replica,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// A generous bound for conditions waited on (never a sleep).
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct TestCluster {
    pub config: Arc<ClusterConfig>,
    pub addresses: Vec<SocketAddr>,
    pub replicas: Vec<Option<ReplicaHandle>>,
    pub options: TransportOptions,
    /// With a data directory per replica under it, replicas keep their state on disk and
    /// restart from it; without, they keep it in memory and restart empty.
    pub data_root: Option<std::path::PathBuf>,
    /// A replica whose storage fails after this many successful persists (a full disk).
    pub failing_storage: Option<(u32, usize)>,
    /// Every client id is admitted with client 1's key (sessions of one client principal);
    /// otherwise client `i` has `client_key(i)`.
    pub shared_client_key: bool,
}

/// Storage that fails like a full disk after `remaining` successful persists.
pub struct FailingStorage {
    pub remaining: usize,
}

impl bft_core::Storage for FailingStorage {
    type Error = String;
    fn persist(&mut self, _records: &[bft_core::Record]) -> Result<(), String> {
        if self.remaining == 0 {
            return Err("disk full while appending to wal-00000000000000000000.log".into());
        }
        self.remaining -= 1;
        Ok(())
    }
}

/// Logs to the test's output when `RUST_LOG` is set (for example `RUST_LOG=bft_net=debug`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl TestCluster {
    /// Starts 3f+1 replicas (with `clients` admitted client ids) on loopback ports.
    pub fn start(f: usize, clients: u64, options: TransportOptions) -> TestCluster {
        TestCluster::start_with(f, clients, options, None, false)
    }

    /// Starts 3f+1 replicas admitting client ids 1 to `clients`, all with client 1's key.
    pub fn start_sharing_client_key(
        f: usize,
        clients: u64,
        options: TransportOptions,
    ) -> TestCluster {
        TestCluster::start_with(f, clients, options, None, true)
    }

    /// Starts 3f+1 replicas that keep their state in data directories under `data_root`.
    pub fn start_durable(
        f: usize,
        clients: u64,
        options: TransportOptions,
        data_root: &std::path::Path,
    ) -> TestCluster {
        TestCluster::start_with(f, clients, options, Some(data_root.to_path_buf()), false)
    }

    fn start_with(
        f: usize,
        clients: u64,
        options: TransportOptions,
        data_root: Option<std::path::PathBuf>,
        shared_client_key: bool,
    ) -> TestCluster {
        init_logs();
        let mut config = config(f, clients);
        if shared_client_key {
            for key in config.clients.values_mut() {
                *key = client_key(1).public();
            }
        }
        let config = Arc::new(config);
        let sockets: Vec<UdpSocket> = (0..config.n())
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind loopback"))
            .collect();
        let addresses: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let mut cluster = TestCluster {
            config,
            addresses,
            replicas: Vec::new(),
            options,
            data_root,
            failing_storage: None,
            shared_client_key,
        };
        for (i, socket) in sockets.into_iter().enumerate() {
            let handle = cluster.spawn(ReplicaId(i as u32), socket);
            cluster.replicas.push(Some(handle));
        }
        cluster
    }

    fn spawn(&self, id: ReplicaId, socket: UdpSocket) -> ReplicaHandle {
        let (transport, inbound) = Transport::replica_on_socket(
            self.config.clone(),
            id,
            replica_key(id.0),
            socket,
            self.addresses.clone(),
            self.options.clone(),
        )
        .expect("transport starts");
        let verifier = Verifier::new(self.config.clone()).expect("valid config");
        if let Some((failing, remaining)) = self.failing_storage
            && failing == id.0
        {
            let replica = Replica::new(
                self.config.clone(),
                id,
                replica_key(id.0),
                LogService::default(),
            )
            .expect("valid replica");
            let storage = FailingStorage { remaining };
            return spawn_replica(replica, storage, transport, inbound, verifier);
        }
        if let Some(root) = &self.data_root {
            let (replica, storage, _) = bft_net::recover_replica(
                self.config.clone(),
                id,
                replica_key(id.0),
                LogService::default(),
                &root.join(format!("replica-{}", id.0)),
                Default::default(),
            )
            .expect("the replica recovers from its data directory");
            return spawn_replica(replica, storage, transport, inbound, verifier);
        }
        let replica = Replica::new(
            self.config.clone(),
            id,
            replica_key(id.0),
            LogService::default(),
        )
        .expect("valid replica");
        spawn_replica(
            replica,
            MemoryStorage::default(),
            transport,
            inbound,
            verifier,
        )
    }

    /// Stops replica `id` (its process-equivalent: driver and transport).
    pub async fn stop(&mut self, id: u32) {
        let handle = self.replicas[id as usize].take().expect("running");
        handle.shutdown().await.expect("stopped cleanly");
    }

    /// Starts replica `id` again on its old address (from its data directory if it has one,
    /// empty otherwise).
    pub async fn restart(&mut self, id: u32) {
        // The old endpoint releases its socket once its connections are closed: wait for that.
        let addr = self.addresses[id as usize];
        let socket = tokio::time::timeout(PATIENCE, async {
            loop {
                match UdpSocket::bind(addr) {
                    Ok(socket) => return socket,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("the old socket is released");
        let handle = self.spawn(ReplicaId(id), socket);
        self.replicas[id as usize] = Some(handle);
    }

    /// A client handle with the given admitted client ids.
    pub fn client(&self, ids: impl IntoIterator<Item = u64>) -> AsyncClient {
        let identities = ids
            .into_iter()
            .map(|i| {
                let key = client_key(if self.shared_client_key { 1 } else { i });
                (ClientId(i), key)
            })
            .collect();
        AsyncClient::connect(
            self.config.clone(),
            identities,
            self.addresses.clone(),
            ClientOptions::default(),
        )
        .expect("client connects")
    }

    pub fn snapshot(&self, id: u32) -> Snapshot {
        self.replicas[id as usize]
            .as_ref()
            .expect("running")
            .snapshot()
    }

    /// Waits (up to [`PATIENCE`]) until replica `id`'s snapshot satisfies `condition`.
    pub async fn wait_for(&self, id: u32, condition: impl FnMut(&Snapshot) -> bool) -> bool {
        let mut watch = self.replicas[id as usize]
            .as_ref()
            .expect("running")
            .watch();
        // The borrow `wait_for` returns holds the channel's lock: drop it at once.
        tokio::time::timeout(PATIENCE, watch.wait_for(condition))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until replica `id` has executed at least `requests` requests.
    pub async fn wait_executed(&self, id: u32, requests: u64) {
        let mut watch = self.replicas[id as usize]
            .as_ref()
            .expect("running")
            .watch();
        // The borrow `wait_for` returns holds the channel's lock: drop it at once.
        let reached = tokio::time::timeout(
            PATIENCE,
            watch.wait_for(|s| s.metrics.requests_executed >= requests),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        assert!(
            reached,
            "replica {id} did not execute {requests} requests: {:?}",
            self.snapshot(id).metrics
        );
    }

    /// Waits until the cluster has executed `requests` requests and every replica has reached
    /// that point: replica `counter` (one that executes every batch itself, such as the primary)
    /// executed `requests` requests, and every other replica's last executed batch is at least
    /// its own then. A replica that fell a window behind under load reaches it by a state
    /// transfer (so it did not execute every request itself, and its own count may stay below
    /// `requests`); compare digests with [`TestCluster::settled_digests`] afterwards.
    pub async fn wait_all_reached(&self, counter: u32, requests: u64) {
        self.wait_executed(counter, requests).await;
        let target = self.snapshot(counter).status.last_executed;
        for id in 0..self.replicas.len() as u32 {
            let reached = self
                .wait_for(id, |s| s.status.last_executed >= target)
                .await;
            assert!(
                reached,
                "replica {id} did not reach batch {target:?}: {:?} {:?}",
                self.snapshot(id).status,
                self.snapshot(id).metrics
            );
        }
    }

    /// Waits until every running replica has executed as far as the furthest one and published
    /// the digest of that state; returns the digests, by replica.
    pub async fn settled_digests(&self) -> Vec<bft_crypto::Digest> {
        let running: Vec<u32> = (0..self.replicas.len() as u32)
            .filter(|id| self.replicas[*id as usize].is_some())
            .collect();
        let target = running
            .iter()
            .map(|id| self.snapshot(*id).status.last_executed)
            .max()
            .expect("a running replica");
        let mut digests = Vec::new();
        for id in running {
            let settled = self
                .wait_for(id, |s| {
                    s.status.last_executed >= target && s.digest_is_current()
                })
                .await;
            assert!(
                settled,
                "replica {id} did not settle at {target:?}: {:?}",
                self.snapshot(id).status
            );
            digests.push(self.snapshot(id).status.service_digest);
        }
        digests
    }

    /// Waits as [`TestCluster::settled_digests`] does, then asserts that every running replica
    /// reached the same state.
    pub async fn assert_settled_agree(&self) {
        let digests = self.settled_digests().await;
        assert!(
            digests.windows(2).all(|w| w[0] == w[1]),
            "replicas diverged"
        );
    }

    pub async fn shutdown(mut self) {
        for id in 0..self.replicas.len() {
            if self.replicas[id].is_some() {
                self.stop(id as u32).await;
            }
        }
    }
}

/// Runs `per_client` operations on each of `handles` concurrently (each handle runs `width`
/// at once), and asserts every one completes with the service's reply.
pub async fn run_load(handles: &[AsyncClient], width: usize, per_client: usize, tag: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for (h, handle) in handles.iter().enumerate() {
        for lane in 0..width {
            let handle = handle.clone();
            let tag = tag.to_string();
            tasks.spawn(async move {
                for i in 0..per_client / width {
                    let operation = format!("{tag}-{h}-{lane}-{i}").into_bytes();
                    let reply = handle.invoke(operation.clone()).await;
                    assert!(
                        reply.is_ok(),
                        "{tag}: operation {h}/{lane}/{i} failed: {reply:?}"
                    );
                }
            });
        }
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("load task");
    }
}

// Helpers for tests that act as hostile peers (raw QUIC connections, transport counters).

/// How often a polled condition (a transport counter) is checked while waiting on it.
pub const POLL: Duration = Duration::from_millis(20);

impl TestCluster {
    /// Replica `id`'s transport counters.
    pub fn transport_stats(&self, id: u32) -> bft_net::TransportCounters {
        self.replicas[id as usize]
            .as_ref()
            .expect("running")
            .transport()
            .stats()
    }

    /// Waits (up to [`PATIENCE`], polling every [`POLL`]) until replica `id`'s transport counters
    /// satisfy `condition`.
    pub async fn wait_transport(
        &self,
        id: u32,
        mut condition: impl FnMut(&bft_net::TransportCounters) -> bool,
    ) -> bool {
        let transport = self.replicas[id as usize]
            .as_ref()
            .expect("running")
            .transport()
            .clone();
        poll_until(move || condition(&transport.stats())).await
    }
}

/// Waits (up to [`PATIENCE`], polling every [`POLL`]) until `condition` holds.
pub async fn poll_until(mut condition: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .is_ok()
}

/// A bare QUIC endpoint on loopback, to dial replicas by hand.
pub fn raw_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind loopback")
}

/// Dials replica `replica` of `cluster` from `endpoint`, authenticating with `key` (admitted or
/// not). The outcome of the handshake, as the dialer sees it.
pub async fn dial_raw(
    cluster: &TestCluster,
    endpoint: &quinn::Endpoint,
    key: &bft_crypto::KeyPair,
    replica: u32,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let config = bft_net::identity::client_config(key, &cluster.config, ReplicaId(replica))
        .expect("dialing configuration");
    let connecting = endpoint
        .connect_with(
            config,
            cluster.addresses[replica as usize],
            &bft_net::identity::server_name(ReplicaId(replica)),
        )
        .expect("dial starts");
    tokio::time::timeout(PATIENCE, connecting)
        .await
        .expect("the handshake ends")
}

/// `frame` with its length prefix, as a stream carries it.
pub fn framed(frame: &[u8]) -> Vec<u8> {
    let prefix = bft_net::framing::length_prefix(frame).expect("frame fits a u32 length");
    [&prefix[..], frame].concat()
}

/// Waits (up to [`PATIENCE`]) for `connection` to be closed, and says why it was.
pub async fn closed(connection: &quinn::Connection) -> quinn::ConnectionError {
    tokio::time::timeout(PATIENCE, connection.closed())
        .await
        .expect("the connection is closed")
}

/// Asserts that the replica closed the connection with application error `code` (one of
/// `bft_net::transport::close_code`).
pub fn assert_closed_with(error: &quinn::ConnectionError, code: u32) {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
            close.error_code,
            quinn::VarInt::from_u32(code),
            "closed for another reason: {close:?}"
        ),
        other => panic!("expected the replica to close with code {code}, got {other:?}"),
    }
}

/// Closes a raw `endpoint` and waits (up to [`PATIENCE`]) for it to go idle.
pub async fn close_endpoint(endpoint: &quinn::Endpoint) {
    endpoint.close(0u32.into(), b"done");
    tokio::time::timeout(PATIENCE, endpoint.wait_idle())
        .await
        .expect("the endpoint goes idle");
}
