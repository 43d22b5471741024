//! Connections between authenticated principals over QUIC.
//!
//! - Every node dials the replicas it sends to and keeps one unidirectional stream per
//!   connection for its frames; a replica answers a client on the connection the client opened.
//!   A client key is one peer: the sessions of a key (`ClusterConfig::clients`) share its
//!   connections, so their frames coalesce into few packets. A replica answers each session on
//!   the connection its last request came on ([`Transport::route_session`]), so client processes
//!   holding different sessions of one key each get their own replies.
//! - Each peer has a bounded outbound queue. [`Transport::send`] never blocks: when a queue is
//!   full the frame is dropped and counted, and the protocol's retransmissions recover.
//! - A dropped connection is re-dialled with exponential backoff; frames queued meanwhile wait.
//! - Every stream is read through [`FrameDecoder`]: a frame longer than the cluster's
//!   `max_message_bytes` is refused before it is buffered, and the connection is closed. So is a
//!   connection that sends more frames per second than allowed, or frames the verifier refuses
//!   ([`Transport::disconnect`]). The peer may reconnect; everyone else is served throughout.

use crate::framing::{FrameDecoder, FrameError, length_prefix};
use crate::identity;
use bft_core::{ClientId, ClusterConfig, Principal, ReplicaId};
use bft_crypto::KeyPair;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// QUIC application error codes this transport closes connections with.
pub mod close_code {
    /// Orderly shutdown.
    pub const SHUTDOWN: u32 = 0;
    /// A frame's announced length exceeded the limit, or a frame was empty or truncated.
    pub const BAD_FRAMING: u32 = 1;
    /// More frames per second than allowed.
    pub const FLOOD: u32 = 2;
    /// A frame the verifier refused (bad signature, malformed payload, spoofed sender).
    pub const INVALID_FRAME: u32 = 3;
    /// The peer's key is not a member's (cannot pass the handshake; kept for completeness).
    pub const UNKNOWN_PEER: u32 = 4;
}

/// Tuning of a [`Transport`].
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Frames queued per peer before new ones are dropped.
    pub outbound_queue_frames: usize,
    /// Frames queued from all peers towards the node before readers wait (back-pressure on the
    /// peers, through QUIC flow control).
    pub inbound_queue_frames: usize,
    /// Frames per second one connection may send (sustained); more closes it. The sessions of
    /// one client key that use one connection share its budget; all sessions of a key share one
    /// outbound queue at each replica.
    pub max_frames_per_second: u32,
    /// Frames one connection may send in a burst above the sustained rate.
    pub frame_burst: u32,
    /// First re-dial delay after a connection fails; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest re-dial delay.
    pub reconnect_max: Duration,
    /// How long [`Transport::shutdown`] waits for queued frames to drain.
    pub drain_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            outbound_queue_frames: 8192,
            inbound_queue_frames: 8192,
            max_frames_per_second: 200_000,
            frame_burst: 50_000,
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of a [`Transport`] (monotonic).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames written to streams.
    pub frames_sent: AtomicU64,
    /// Frames read from streams and handed to the node.
    pub frames_received: AtomicU64,
    /// Frames dropped because the peer's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Frames dropped because no connection to a client existed.
    pub dropped_no_connection: AtomicU64,
    /// Frames lost when a stream failed while writing them.
    pub lost_on_failure: AtomicU64,
    /// Connections established by dialling.
    pub dials: AtomicU64,
    /// Dial attempts that failed (peer down, handshake refused).
    pub dial_failures: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections accepted from clients (one per client key and client process, unless it
    /// reconnects).
    pub client_connections: AtomicU64,
    /// Incoming handshakes that failed (unknown key, wrong protocol).
    pub handshakes_refused: AtomicU64,
    /// Connections closed for bad framing (oversized length, empty or truncated frame).
    pub disconnected_framing: AtomicU64,
    /// Connections closed for sending too many frames.
    pub disconnected_flood: AtomicU64,
    /// Connections closed for frames the verifier refused.
    pub disconnected_invalid: AtomicU64,
}

/// A snapshot of [`TransportStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportCounters {
    /// See [`TransportStats::frames_sent`].
    pub frames_sent: u64,
    /// See [`TransportStats::frames_received`].
    pub frames_received: u64,
    /// See [`TransportStats::dropped_queue_full`].
    pub dropped_queue_full: u64,
    /// See [`TransportStats::dropped_no_connection`].
    pub dropped_no_connection: u64,
    /// See [`TransportStats::lost_on_failure`].
    pub lost_on_failure: u64,
    /// See [`TransportStats::dials`].
    pub dials: u64,
    /// See [`TransportStats::dial_failures`].
    pub dial_failures: u64,
    /// See [`TransportStats::accepted`].
    pub accepted: u64,
    /// See [`TransportStats::client_connections`].
    pub client_connections: u64,
    /// See [`TransportStats::handshakes_refused`].
    pub handshakes_refused: u64,
    /// See [`TransportStats::disconnected_framing`].
    pub disconnected_framing: u64,
    /// See [`TransportStats::disconnected_flood`].
    pub disconnected_flood: u64,
    /// See [`TransportStats::disconnected_invalid`].
    pub disconnected_invalid: u64,
}

impl TransportStats {
    /// The current values.
    pub fn snapshot(&self) -> TransportCounters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportCounters {
            frames_sent: get(&self.frames_sent),
            frames_received: get(&self.frames_received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_no_connection: get(&self.dropped_no_connection),
            lost_on_failure: get(&self.lost_on_failure),
            dials: get(&self.dials),
            dial_failures: get(&self.dial_failures),
            accepted: get(&self.accepted),
            client_connections: get(&self.client_connections),
            handshakes_refused: get(&self.handshakes_refused),
            disconnected_framing: get(&self.disconnected_framing),
            disconnected_flood: get(&self.disconnected_flood),
            disconnected_invalid: get(&self.disconnected_invalid),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A frame received from an authenticated peer.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Who sent it, as authenticated by the connection's handshake.
    pub from: Principal,
    /// The frame, not yet verified.
    pub frame: Bytes,
    /// The connection it came on: closed if the frame is refused; replies to a client session
    /// go back on it ([`Transport::route_session`]).
    pub connection: quinn::Connection,
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS configuration could not be built.
    #[error("identity: {0}")]
    Identity(#[from] identity::IdentityError),
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// This node's id is not in the configuration, or addresses are missing.
    #[error("configuration: {0}")]
    Config(String),
}

struct Inner {
    endpoint: quinn::Endpoint,
    /// Whether this transport closes the endpoint when it shuts down.
    owns_endpoint: bool,
    config: Arc<ClusterConfig>,
    key: KeyPair,
    /// Replica addresses, by id.
    addresses: Vec<SocketAddr>,
    options: TransportOptions,
    /// Each replica's outbound queue.
    replica_queues: Mutex<BTreeMap<ReplicaId, mpsc::Sender<Bytes>>>,
    /// Each client account's outbound queue: frames for its sessions, each with its session.
    client_queues: Mutex<BTreeMap<ClientId, mpsc::Sender<(ClientId, Bytes)>>>,
    /// The latest connection each client account opened (a session with no connection of its
    /// own in `sessions` is answered there).
    clients: Mutex<BTreeMap<ClientId, quinn::Connection>>,
    /// The connection each session's latest admitted request came on
    /// ([`Transport::route_session`]); one entry per admitted client id at most.
    sessions: Mutex<BTreeMap<ClientId, quinn::Connection>>,
    /// Each admitted client's account (`ClusterConfig::client_accounts`): sessions of one key
    /// share its outbound queue.
    client_accounts: BTreeMap<ClientId, ClientId>,
    inbound: mpsc::Sender<Inbound>,
    stats: TransportStats,
    shutdown: watch::Sender<bool>,
    /// Writer tasks (drained at shutdown).
    writers: Mutex<Vec<JoinHandle<()>>>,
    /// Every other task (aborted at shutdown).
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Every connection established (closed at shutdown).
    connections: Mutex<Vec<quinn::Connection>>,
}

/// A node's connections to the rest of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl Transport {
    /// Starts replica `id`'s transport: listens on `addresses[id]` for replicas and clients, and
    /// dials the other replicas when it first sends to them. Frames received go to the returned
    /// channel.
    pub fn replica(
        config: Arc<ClusterConfig>,
        id: ReplicaId,
        key: KeyPair,
        addresses: Vec<SocketAddr>,
        options: TransportOptions,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>), TransportError> {
        let addr = *addresses
            .get(id.0 as usize)
            .ok_or_else(|| TransportError::Config(format!("no address for replica {id}")))?;
        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        Transport::replica_on_socket(config, id, key, socket, addresses, options)
    }

    /// [`Transport::replica`] on a socket the caller bound (to learn ports before starting). Its
    /// receive buffer is enlarged ([`enlarge_receive_buffer`]).
    pub fn replica_on_socket(
        config: Arc<ClusterConfig>,
        id: ReplicaId,
        key: KeyPair,
        socket: std::net::UdpSocket,
        addresses: Vec<SocketAddr>,
        options: TransportOptions,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>), TransportError> {
        check_addresses(&config, &addresses)?;
        enlarge_receive_buffer(&socket);
        let addr = socket
            .local_addr()
            .map_err(|source| TransportError::Config(format!("socket address: {source}")))?;
        let server = identity::server_config(&key, &config)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| TransportError::Config("no async runtime".into()))?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
        .map_err(|source| TransportError::Bind { addr, source })?;
        let (sender, receiver) = mpsc::channel(options.inbound_queue_frames);
        let transport =
            Transport::with_endpoint(endpoint, true, config, key, addresses, options, sender);
        let accept = tokio::spawn(transport.clone().accept_loop());
        transport.track(accept);
        info!(replica = %id, %addr, "transport listening");
        Ok((transport, receiver))
    }

    /// A client's transport on a shared client `endpoint`: dials replicas with `key`'s identity
    /// and delivers their replies to `inbound`. Several clients may share one endpoint.
    pub fn client(
        endpoint: quinn::Endpoint,
        config: Arc<ClusterConfig>,
        key: KeyPair,
        addresses: Vec<SocketAddr>,
        options: TransportOptions,
        inbound: mpsc::Sender<Inbound>,
    ) -> Result<Transport, TransportError> {
        check_addresses(&config, &addresses)?;
        Ok(Transport::with_endpoint(
            endpoint, false, config, key, addresses, options, inbound,
        ))
    }

    fn with_endpoint(
        endpoint: quinn::Endpoint,
        owns_endpoint: bool,
        config: Arc<ClusterConfig>,
        key: KeyPair,
        addresses: Vec<SocketAddr>,
        options: TransportOptions,
        inbound: mpsc::Sender<Inbound>,
    ) -> Transport {
        // Only a replica's transport (the one that owns its endpoint) sends to clients.
        let client_accounts = if owns_endpoint {
            config.client_accounts()
        } else {
            BTreeMap::new()
        };
        Transport {
            inner: Arc::new(Inner {
                endpoint,
                owns_endpoint,
                config,
                key,
                addresses,
                options,
                replica_queues: Mutex::new(BTreeMap::new()),
                client_queues: Mutex::new(BTreeMap::new()),
                clients: Mutex::new(BTreeMap::new()),
                sessions: Mutex::new(BTreeMap::new()),
                client_accounts,
                inbound,
                stats: TransportStats::default(),
                shutdown: watch::channel(false).0,
                writers: Mutex::new(Vec::new()),
                tasks: Mutex::new(Vec::new()),
                connections: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The local address (useful when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// The counters.
    pub fn stats(&self) -> TransportCounters {
        self.inner.stats.snapshot()
    }

    fn track(&self, task: JoinHandle<()>) {
        let mut tasks = self.inner.tasks.lock().expect("not poisoned");
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Queues `frame` for `to`. Never blocks: if the peer's queue is full the frame is dropped
    /// and counted. Frames for the sessions of one client key share one queue; each goes out on
    /// the connection its session's latest request came on ([`Transport::route_session`]), or
    /// else on the latest connection opened with the key.
    pub fn send(&self, to: Principal, frame: Bytes) {
        if self.is_shutting_down() {
            return;
        }
        match to {
            Principal::Replica(id) => {
                let queues = &self.inner.replica_queues;
                self.enqueue(queues, id, frame, |receiver| {
                    self.clone().replica_writer(id, receiver)
                });
            }
            Principal::Client(session) => {
                let account = self.account_of(session);
                let queues = &self.inner.client_queues;
                self.enqueue(queues, account, (session, frame), |receiver| {
                    self.clone().client_writer(account, receiver)
                });
            }
        }
    }

    /// Puts `item` in `key`'s queue among `queues`, first starting the queue and its writer
    /// (`writer`) if there is none.
    fn enqueue<K: Ord + Copy, T, W>(
        &self,
        queues: &Mutex<BTreeMap<K, mpsc::Sender<T>>>,
        key: K,
        item: T,
        writer: impl FnOnce(mpsc::Receiver<T>) -> W,
    ) where
        W: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut queues = queues.lock().expect("not poisoned");
        let queue = queues.entry(key).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(self.inner.options.outbound_queue_frames);
            let writer = tokio::spawn(writer(receiver));
            let mut writers = self.inner.writers.lock().expect("not poisoned");
            writers.retain(|w| !w.is_finished());
            writers.push(writer);
            sender
        });
        if let Err(error) = queue.try_send(item) {
            match error {
                mpsc::error::TrySendError::Full(_) => bump(&self.inner.stats.dropped_queue_full),
                mpsc::error::TrySendError::Closed(_) => {
                    bump(&self.inner.stats.lost_on_failure);
                    queues.remove(&key);
                }
            }
        }
    }

    /// The account of client `id`: the lowest id admitted with its key
    /// (`ClusterConfig::client_accounts`); an id not admitted is its own.
    fn account_of(&self, id: ClientId) -> ClientId {
        self.inner.client_accounts.get(&id).copied().unwrap_or(id)
    }

    /// Notes that `session` sent a request on `connection`, which is authenticated as client
    /// `channel`: replies to `session` go out on that connection from now on. `session` must be
    /// the sender [`bft_core::Verifier::admit_direct`] admitted on that channel (`channel` or
    /// another session of its key), which is what lets only the key's holder steer the
    /// session's replies. The driver calls it before the request's signature is checked: the
    /// connection's handshake already proved the key, which is all routing needs.
    pub fn route_session(
        &self,
        channel: ClientId,
        session: ClientId,
        connection: &quinn::Connection,
    ) {
        // Enforced by `admit_direct` before this is called; not checked twice per request.
        debug_assert!(self.inner.config.same_client(channel, session));
        let mut sessions = self.inner.sessions.lock().expect("not poisoned");
        // A frame may be handled after its connection closed (and `forget_sessions_on` ran):
        // checked under the lock, so a closed connection is never routed to.
        if connection.close_reason().is_some() {
            return;
        }
        if sessions
            .get(&session)
            .is_none_or(|known| known.stable_id() != connection.stable_id())
        {
            sessions.insert(session, connection.clone());
        }
    }

    /// Forgets `connection` once it has closed: the sessions that last used it are answered on
    /// their key's latest open connection until they send again, and it stops being its
    /// account's latest.
    fn forget_sessions_on(&self, connection: &quinn::Connection) {
        let id = connection.stable_id();
        self.inner
            .sessions
            .lock()
            .expect("not poisoned")
            .retain(|_, known| known.stable_id() != id);
        self.inner
            .clients
            .lock()
            .expect("not poisoned")
            .retain(|_, latest| latest.stable_id() != id);
    }

    /// The connection to answer each of `items`' sessions (of client account `account`) on,
    /// grouped by connection in queue order: the one the session's latest request came on while
    /// it is open, else the latest open one opened with the key. Frames for a session with
    /// neither are dropped and counted. Each lock is taken once per call.
    fn route_batch(
        &self,
        account: ClientId,
        items: &mut Vec<(ClientId, Bytes)>,
        groups: &mut Vec<(quinn::Connection, Vec<Bytes>)>,
    ) {
        let latest = self
            .inner
            .clients
            .lock()
            .expect("not poisoned")
            .get(&account)
            .filter(|connection| connection.close_reason().is_none())
            .cloned();
        let sessions = self.inner.sessions.lock().expect("not poisoned");
        for (session, frame) in items.drain(..) {
            let own = sessions.get(&session).filter(|connection| {
                // Checked once per connection in the batch: a group means it was open.
                groups
                    .iter()
                    .any(|(c, _)| c.stable_id() == connection.stable_id())
                    || connection.close_reason().is_none()
            });
            let Some(connection) = own.or(latest.as_ref()) else {
                bump(&self.inner.stats.dropped_no_connection);
                continue;
            };
            let id = connection.stable_id();
            match groups.iter_mut().find(|(c, _)| c.stable_id() == id) {
                Some((_, frames)) => frames.push(frame),
                None => groups.push((connection.clone(), vec![frame])),
            }
        }
    }

    /// Closes `connection` because a frame on it was refused (for example by the verifier), and
    /// counts it. The peer may reconnect.
    pub fn disconnect(&self, connection: &quinn::Connection, reason: &str) {
        bump(&self.inner.stats.disconnected_invalid);
        warn!(peer = ?connection.remote_address(), reason, "closing connection: invalid frame");
        connection.close(close_code::INVALID_FRAME.into(), reason.as_bytes());
    }

    /// Resolves once [`Transport::shutdown`] has begun.
    pub async fn closed(&self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let _ = shutdown.wait_for(|stop| *stop).await;
    }

    /// Stops: drains queued frames (up to `drain_timeout`), closes every connection with
    /// [`close_code::SHUTDOWN`], stops every task, and waits for the endpoint to go idle if this
    /// transport owns it.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        // Dropping the queues' senders lets each writer drain what is queued and finish.
        self.inner
            .replica_queues
            .lock()
            .expect("not poisoned")
            .clear();
        self.inner
            .client_queues
            .lock()
            .expect("not poisoned")
            .clear();
        let writers: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.writers.lock().expect("not poisoned"));
        let drain = async {
            for writer in writers {
                let _ = writer.await;
            }
        };
        let _ = tokio::time::timeout(self.inner.options.drain_timeout, drain).await;
        for connection in self
            .inner
            .connections
            .lock()
            .expect("not poisoned")
            .drain(..)
        {
            connection.close(close_code::SHUTDOWN.into(), b"shutdown");
        }
        if self.inner.owns_endpoint {
            self.inner
                .endpoint
                .close(close_code::SHUTDOWN.into(), b"shutdown");
        }
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().expect("not poisoned"));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        if self.inner.owns_endpoint {
            let _ = tokio::time::timeout(
                self.inner.options.drain_timeout,
                self.inner.endpoint.wait_idle(),
            )
            .await;
        }
    }

    async fn accept_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let incoming = tokio::select! {
                incoming = self.inner.endpoint.accept() => incoming,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let Some(incoming) = incoming else { return };
            let transport = self.clone();
            let handshake = tokio::spawn(async move {
                match incoming.await {
                    Ok(connection) => {
                        transport.on_connection(connection, true);
                    }
                    Err(error) => {
                        bump(&transport.inner.stats.handshakes_refused);
                        debug!(%error, "incoming handshake failed");
                    }
                }
            });
            self.track(handshake);
        }
    }

    /// Registers an established connection and starts reading its streams.
    fn on_connection(&self, connection: quinn::Connection, accepted: bool) -> Option<Principal> {
        let Some(peer) = identity::peer_principal(&connection, &self.inner.config) else {
            connection.close(close_code::UNKNOWN_PEER.into(), b"unknown peer");
            bump(&self.inner.stats.handshakes_refused);
            return None;
        };
        {
            let mut connections = self.inner.connections.lock().expect("not poisoned");
            connections.retain(|c| c.close_reason().is_none());
            connections.push(connection.clone());
        }
        if accepted {
            bump(&self.inner.stats.accepted);
            debug!(?peer, addr = %connection.remote_address(), "accepted connection");
            if let Principal::Client(id) = peer {
                bump(&self.inner.stats.client_connections);
                self.inner
                    .clients
                    .lock()
                    .expect("not poisoned")
                    .insert(id, connection.clone());
            }
        }
        let reader = tokio::spawn(self.clone().read_connection(connection, peer));
        self.track(reader);
        Some(peer)
    }

    async fn read_connection(self, connection: quinn::Connection, peer: Principal) {
        // One budget per connection, shared by its streams (opening more streams buys nothing).
        let options = &self.inner.options;
        let bucket = Arc::new(Mutex::new(TokenBucket::new(
            options.max_frames_per_second,
            options.frame_burst,
        )));
        loop {
            let stream = match connection.accept_uni().await {
                Ok(stream) => stream,
                Err(error) => {
                    debug!(?peer, %error, "connection closed");
                    if let Principal::Client(_) = peer {
                        self.forget_sessions_on(&connection);
                    }
                    return;
                }
            };
            let reader = tokio::spawn(self.clone().read_stream(
                stream,
                connection.clone(),
                peer,
                bucket.clone(),
            ));
            self.track(reader);
        }
    }

    async fn read_stream(
        self,
        mut stream: quinn::RecvStream,
        connection: quinn::Connection,
        peer: Principal,
        bucket: Arc<Mutex<TokenBucket>>,
    ) {
        let stats = &self.inner.stats;
        let max = self.inner.config.limits.max_message_bytes;
        let mut decoder = FrameDecoder::new(max);
        loop {
            let chunk = match stream.read_chunk(64 << 10, true).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    if let Err(error) = decoder.finish() {
                        self.close_for_framing(&connection, peer, &error);
                    }
                    return;
                }
                Err(_) => return,
            };
            decoder.push(&chunk.bytes);
            loop {
                let frame = match decoder.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        self.close_for_framing(&connection, peer, &error);
                        return;
                    }
                };
                let allowed = bucket.lock().expect("not poisoned").take(Instant::now());
                if !allowed {
                    bump(&stats.disconnected_flood);
                    warn!(?peer, "closing connection: frame flood");
                    connection.close(close_code::FLOOD.into(), b"too many frames");
                    return;
                }
                bump(&stats.frames_received);
                let inbound = Inbound {
                    from: peer,
                    frame,
                    connection: connection.clone(),
                };
                if self.inner.inbound.send(inbound).await.is_err() {
                    return;
                }
            }
        }
    }

    fn close_for_framing(
        &self,
        connection: &quinn::Connection,
        peer: Principal,
        error: &FrameError,
    ) {
        bump(&self.inner.stats.disconnected_framing);
        warn!(?peer, %error, "closing connection: bad framing");
        connection.close(close_code::BAD_FRAMING.into(), error.to_string().as_bytes());
    }

    async fn dial(&self, id: ReplicaId) -> Option<quinn::Connection> {
        let addr = self.inner.addresses[id.0 as usize];
        let client = identity::client_config(&self.inner.key, &self.inner.config, id).ok()?;
        let connecting = self
            .inner
            .endpoint
            .connect_with(client, addr, "bft-replica")
            .ok()?;
        match connecting.await {
            Ok(connection) => Some(connection),
            Err(error) => {
                debug!(replica = %id, %error, "dial failed");
                None
            }
        }
    }

    /// Sends the queue for replica `id`: dials (with backoff), opens a stream, writes frames;
    /// on failure re-dials. Ends when the queue is closed and drained.
    async fn replica_writer(self, id: ReplicaId, mut queue: mpsc::Receiver<Bytes>) {
        let stats = &self.inner.stats;
        let mut backoff = self.inner.options.reconnect_min;
        let mut carried: Option<Bytes> = None;
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let Some(first) = (match carried.take() {
                Some(frame) => Some(frame),
                None => queue.recv().await,
            }) else {
                return;
            };
            let dialled = tokio::select! {
                dialled = self.dial(id) => dialled,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let connection = match dialled {
                Some(connection) => connection,
                None => {
                    bump(&stats.dial_failures);
                    carried = Some(first);
                    if self.is_shutting_down() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                    backoff = (backoff * 2).min(self.inner.options.reconnect_max);
                    continue;
                }
            };
            bump(&stats.dials);
            backoff = self.inner.options.reconnect_min;
            // Replies from replicas arrive on the connection a client dialled.
            self.on_connection(connection.clone(), false);
            let Ok(mut stream) = connection.open_uni().await else {
                carried = Some(first);
                continue;
            };
            let mut frames = vec![first];
            loop {
                // Everything queued meanwhile goes out in the same write.
                take_queued(&mut queue, &mut frames);
                let count = frames.len() as u64;
                if write_frames(&mut stream, &mut frames).await.is_err() {
                    stats.lost_on_failure.fetch_add(count, Ordering::Relaxed);
                    break;
                }
                stats.frames_sent.fetch_add(count, Ordering::Relaxed);
                match queue.recv().await {
                    Some(frame) => frames.push(frame),
                    None => {
                        // Shut down: everything queued is written.
                        let _ = stream.finish();
                        let _ = stream.stopped().await;
                        connection.close(close_code::SHUTDOWN.into(), b"shutdown");
                        return;
                    }
                }
            }
        }
    }

    /// Sends the queue for client account `account` (all sessions of its key): each frame on
    /// its session's connection ([`Transport::route_batch`]), one stream per connection, the
    /// connections one after another.
    async fn client_writer(self, account: ClientId, mut queue: mpsc::Receiver<(ClientId, Bytes)>) {
        let stats = &self.inner.stats;
        // The stream open on each connection in use, by the connection's stable id.
        let mut streams: BTreeMap<usize, (quinn::Connection, quinn::SendStream)> = BTreeMap::new();
        let mut items = Vec::new();
        while let Some(item) = queue.recv().await {
            items.clear();
            items.push(item);
            take_queued(&mut queue, &mut items);
            // The frames for each connection, in queue order.
            let mut by_connection = Vec::new();
            self.route_batch(account, &mut items, &mut by_connection);
            streams.retain(|_, (connection, _)| connection.close_reason().is_none());
            for (connection, mut frames) in by_connection {
                let count = frames.len() as u64;
                let id = connection.stable_id();
                let stream = match streams.entry(id) {
                    Entry::Occupied(open) => &mut open.into_mut().1,
                    Entry::Vacant(slot) => match connection.open_uni().await {
                        Ok(stream) => &mut slot.insert((connection, stream)).1,
                        Err(_) => {
                            stats.lost_on_failure.fetch_add(count, Ordering::Relaxed);
                            continue;
                        }
                    },
                };
                if write_frames(stream, &mut frames).await.is_err() {
                    stats.lost_on_failure.fetch_add(count, Ordering::Relaxed);
                    streams.remove(&id);
                } else {
                    stats.frames_sent.fetch_add(count, Ordering::Relaxed);
                }
            }
        }
        // Shut down: what was written reaches clients that are still connected before the
        // connections close (`Transport::shutdown` bounds the wait by `drain_timeout`).
        for (_, (connection, mut stream)) in streams {
            let _ = stream.finish();
            if connection.close_reason().is_none() {
                let _ = stream.stopped().await;
            }
        }
    }
}

/// Bytes of kernel receive buffer asked for on every UDP socket (Linux caps the request at
/// `net.core.rmem_max`).
pub const SOCKET_RECEIVE_BUFFER: usize = 4 << 20;

/// Enlarges `socket`'s kernel receive buffer to [`SOCKET_RECEIVE_BUFFER`], best effort. One
/// socket carries every connection of a replica (or of a client endpoint): a burst from many
/// peers overflows the default buffer (about 208 KiB on Linux), and each datagram the kernel
/// drops costs QUIC a loss-detection delay, so an operation waits far longer than its
/// round trips (under load with n = 7, a client retransmission's 500 ms).
pub fn enlarge_receive_buffer(socket: &std::net::UdpSocket) {
    if let Err(error) = socket2::SockRef::from(socket).set_recv_buffer_size(SOCKET_RECEIVE_BUFFER) {
        warn!(%error, "could not enlarge the UDP receive buffer");
    }
}

/// A client endpoint (no server role) bound to `bind`, on a socket with an enlarged receive
/// buffer ([`enlarge_receive_buffer`]). Several client transports may share it.
pub fn client_endpoint(bind: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(bind)?;
    enlarge_receive_buffer(&socket);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime to run the endpoint on"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
}

/// Frames taken from a queue for one write, at most: enough to fill several packets, few enough
/// that one slow write does not hold a large burst back.
const WRITE_BATCH_FRAMES: usize = 64;

/// Moves frames already queued into `frames`, up to [`WRITE_BATCH_FRAMES`] in all, without
/// waiting.
fn take_queued<T>(queue: &mut mpsc::Receiver<T>, frames: &mut Vec<T>) {
    while frames.len() < WRITE_BATCH_FRAMES {
        match queue.try_recv() {
            Ok(frame) => frames.push(frame),
            Err(_) => return,
        }
    }
}

/// Writes `frames`, each behind its length prefix, with one stream write (so QUIC packs them into
/// as few packets as fit), and empties `frames`.
async fn write_frames(
    stream: &mut quinn::SendStream,
    frames: &mut Vec<Bytes>,
) -> Result<(), quinn::WriteError> {
    let mut chunks = Vec::with_capacity(frames.len() * 2);
    for frame in frames.drain(..) {
        // A frame larger than any limit is a bug upstream: it is never sent.
        if let Some(prefix) = length_prefix(&frame) {
            chunks.push(Bytes::copy_from_slice(&prefix));
            chunks.push(frame);
        }
    }
    stream.write_all_chunks(&mut chunks).await
}

fn check_addresses(config: &ClusterConfig, addresses: &[SocketAddr]) -> Result<(), TransportError> {
    if addresses.len() != config.n() {
        return Err(TransportError::Config(format!(
            "{} replica addresses for a cluster of {}",
            addresses.len(),
            config.n()
        )));
    }
    Ok(())
}

/// A token bucket: `rate` tokens per second, at most `burst` saved.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_bucket_allows_bursts_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5);
        assert!((0..5).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(100)));
        assert!((0..5).all(|_| bucket.take(start + Duration::from_secs(10))));
        assert!(!bucket.take(start + Duration::from_secs(10)));
    }

    /// A replica's or client's socket gets the receive buffer asked for, or as much of it as the
    /// kernel allows (`net.core.rmem_max`; Linux reports twice what it grants, for bookkeeping).
    #[test]
    fn sockets_get_a_large_receive_buffer() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let before = socket2::SockRef::from(&socket)
            .recv_buffer_size()
            .expect("readable");
        enlarge_receive_buffer(&socket);
        let after = socket2::SockRef::from(&socket)
            .recv_buffer_size()
            .expect("readable");
        let allowed = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok());
        match allowed {
            Some(max) => assert!(
                after >= SOCKET_RECEIVE_BUFFER.min(max),
                "{after} bytes after asking for {SOCKET_RECEIVE_BUFFER} (rmem_max {max}, before {before})"
            ),
            None => assert!(after >= before),
        }
    }
}
