//! The crash-only baseline: a sequencer that orders batches of requests and multicasts them to
//! the other `n - 1` nodes, over the same QUIC transport as the BFT cluster.
//!
//! This is the "fault-tolerant multicast" that Byzantine agreement is usually compared with:
//! - a client sends its request to the sequencer (node 0) only, and trusts its one reply;
//! - the sequencer cuts batches with the BFT cluster's limits (`max_batch_requests`,
//!   `max_batch_bytes`) and keeps at most `max_in_flight_batches` unacknowledged, starting a batch
//!   behind others only when it is full, as the BFT primary does;
//! - each follower executes a batch in sequence order and acknowledges it;
//! - once a majority of the `n` nodes (the sequencer included) hold a batch, the sequencer
//!   executes it and replies.
//!
//! No signatures, no digests, no Byzantine checks, no view change: only what tolerating crashes
//! of a minority needs on the normal path. Connections are authenticated by the same TLS
//! handshake as the BFT cluster's (that is the transport's, and costs nothing per message).
//! Frames are encoded with postcard, as the BFT cluster's are.

use bft_core::testkit::replica_key;
use bft_core::{ClientId, ClusterConfig, ExecuteContext, Principal, ReplicaId, SeqNum, Service};
use bft_crypto::{KeyPair, PublicKey};
use bft_net::{Inbound, Transport, TransportOptions};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::cluster::{ClientKeys, ClusterError, bind_loopback, client_identities};
use crate::service::WriteService;

/// The sequencer's id.
const SEQUENCER: ReplicaId = ReplicaId(0);

/// A baseline frame.
#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    /// Client to sequencer.
    Request {
        id: u64,
        #[serde(with = "serde_bytes")]
        operation: Vec<u8>,
    },
    /// Sequencer to followers: the batch at `seq`.
    Batch { seq: u64, requests: Vec<Request> },
    /// Follower to sequencer: the batch at `seq` is held (and executed).
    Ack { seq: u64 },
    /// Sequencer to client.
    Reply {
        id: u64,
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
}

/// One ordered request.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    client: u64,
    id: u64,
    #[serde(with = "serde_bytes")]
    operation: Vec<u8>,
}

fn encode(frame: &Frame) -> Bytes {
    Bytes::from(postcard::to_allocvec(frame).expect("baseline frames always encode"))
}

fn decode(bytes: &[u8]) -> Option<Frame> {
    postcard::from_bytes(bytes).ok()
}

/// A running crash-only cluster of `n` nodes on loopback.
pub struct BaselineCluster {
    config: Arc<ClusterConfig>,
    client_keys: ClientKeys,
    addresses: Vec<SocketAddr>,
    transports: Vec<Transport>,
    tasks: Vec<JoinHandle<()>>,
}

impl BaselineCluster {
    /// Starts `config.n()` nodes, node 0 the sequencer, for clients keyed as `client_keys` says
    /// (`config` from [`crate::cluster::build_config`]). Call from within a tokio runtime.
    pub fn start(
        config: Arc<ClusterConfig>,
        client_keys: ClientKeys,
    ) -> Result<BaselineCluster, ClusterError> {
        let (sockets, addresses) = bind_loopback(config.n())?;
        let mut transports = Vec::new();
        let mut tasks = Vec::new();
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
            let task = if id == SEQUENCER {
                tokio::spawn(Sequencer::new(&config, transport.clone()).run(inbound))
            } else {
                tokio::spawn(follow(transport.clone(), inbound))
            };
            transports.push(transport);
            tasks.push(task);
        }
        Ok(BaselineCluster {
            config,
            client_keys,
            addresses,
            transports,
            tasks,
        })
    }

    /// A client with every admitted identity.
    pub fn client(&self) -> Result<BaselineClient, ClusterError> {
        BaselineClient::connect(
            self.config.clone(),
            client_identities(&self.config, self.client_keys),
            self.addresses.clone(),
        )
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for transport in &self.transports {
            transport.shutdown().await;
        }
    }
}

/// A batch sent and not yet held by a majority.
struct InFlight {
    requests: Vec<Request>,
    /// Followers that acknowledged it (bit per node id).
    acked_by: u64,
}

/// The sequencer's state.
struct Sequencer {
    transport: Transport,
    n: usize,
    max_batch_requests: usize,
    max_batch_bytes: usize,
    max_in_flight: usize,
    /// Requests waiting for a batch, and their operation bytes.
    pending: VecDeque<Request>,
    pending_limit: usize,
    next_seq: u64,
    in_flight: BTreeMap<u64, InFlight>,
    service: WriteService,
}

impl Sequencer {
    fn new(config: &ClusterConfig, transport: Transport) -> Sequencer {
        Sequencer {
            transport,
            n: config.n(),
            max_batch_requests: config.limits.max_batch_requests,
            max_batch_bytes: config.limits.max_batch_bytes,
            max_in_flight: config.limits.max_in_flight_batches as usize,
            pending: VecDeque::new(),
            // As the BFT primary, hold at most a window of full batches.
            pending_limit: config.limits.max_batch_requests * config.limits.window as usize,
            next_seq: 1,
            in_flight: BTreeMap::new(),
            service: WriteService::default(),
        }
    }

    async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>) {
        while let Some(first) = inbound.recv().await {
            self.handle(first);
            // Take what else has arrived before cutting batches, as the BFT driver does.
            while let Ok(next) = inbound.try_recv() {
                self.handle(next);
            }
            self.commit_ready();
            self.propose();
        }
    }

    fn handle(&mut self, inbound: Inbound) {
        match (inbound.from, decode(&inbound.frame)) {
            // Bounded, as the BFT primary's queue is; closed-loop clients never reach the limit.
            (Principal::Client(client), Some(Frame::Request { id, operation }))
                if self.pending.len() < self.pending_limit =>
            {
                self.pending.push_back(Request {
                    client: client.0,
                    id,
                    operation,
                });
            }
            (Principal::Replica(from), Some(Frame::Ack { seq })) if from != SEQUENCER => {
                if let Some(batch) = self.in_flight.get_mut(&seq) {
                    batch.acked_by |= 1 << from.0;
                }
            }
            _ => {}
        }
    }

    /// Executes and answers, in order, every batch a majority holds.
    fn commit_ready(&mut self) {
        let majority = self.n / 2 + 1;
        while let Some(entry) = self.in_flight.first_entry() {
            // The sequencer holds every batch it sent.
            if 1 + (entry.get().acked_by.count_ones() as usize) < majority {
                break;
            }
            let (seq, batch) = entry.remove_entry();
            for request in batch.requests {
                let result = self
                    .service
                    .execute(&context(seq, &request), &request.operation);
                let reply = encode(&Frame::Reply {
                    id: request.id,
                    result,
                });
                self.transport
                    .send(Principal::Client(ClientId(request.client)), reply);
            }
        }
    }

    /// Whether a full batch is pending (by count or by bytes).
    fn full_batch_pending(&self) -> bool {
        self.pending.len() >= self.max_batch_requests
            || self
                .pending
                .iter()
                .map(|r| r.operation.len())
                .try_fold(0usize, |sum, len| {
                    let sum = sum + len;
                    (sum < self.max_batch_bytes).then_some(sum)
                })
                .is_none()
    }

    /// Cuts and multicasts batches while the pipeline has room, with the BFT primary's rule: a
    /// batch starts at once when none is in flight, and behind others only when it is full.
    fn propose(&mut self) {
        while self.in_flight.len() < self.max_in_flight
            && !self.pending.is_empty()
            && (self.in_flight.is_empty() || self.full_batch_pending())
        {
            let mut requests = Vec::new();
            let mut bytes = 0;
            while let Some(next) = self.pending.front() {
                let size = next.operation.len();
                if requests.len() == self.max_batch_requests
                    || (!requests.is_empty() && bytes + size > self.max_batch_bytes)
                {
                    break;
                }
                bytes += size;
                requests.push(self.pending.pop_front().expect("front exists"));
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let frame = encode(&Frame::Batch {
                seq,
                requests: requests.clone(),
            });
            for follower in 1..self.n {
                self.transport.send(
                    Principal::Replica(ReplicaId(follower as u32)),
                    frame.clone(),
                );
            }
            self.in_flight.insert(
                seq,
                InFlight {
                    requests,
                    acked_by: 0,
                },
            );
        }
    }
}

fn context(seq: u64, request: &Request) -> ExecuteContext {
    ExecuteContext {
        client: ClientId(request.client),
        timestamp: request.id,
        seq: SeqNum(seq),
    }
}

/// A follower: executes the sequencer's batches in order and acknowledges each.
async fn follow(transport: Transport, mut inbound: mpsc::Receiver<Inbound>) {
    let mut service = WriteService::default();
    let mut next = 1u64;
    let mut early: BTreeMap<u64, Vec<Request>> = BTreeMap::new();
    while let Some(frame) = inbound.recv().await {
        if frame.from != Principal::Replica(SEQUENCER) {
            continue;
        }
        let Some(Frame::Batch { seq, requests }) = decode(&frame.frame) else {
            continue;
        };
        if seq < next {
            continue;
        }
        transport.send(Principal::Replica(SEQUENCER), encode(&Frame::Ack { seq }));
        early.insert(seq, requests);
        while let Some(requests) = early.remove(&next) {
            for request in requests {
                service.execute(&context(next, &request), &request.operation);
            }
            next += 1;
        }
    }
}

/// Why a baseline operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// No reply before the deadline.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The client stopped.
    #[error("client closed")]
    Closed,
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// A client of the baseline: one connection per distinct key among its identities (as the BFT
/// client has), requests to the sequencer.
#[derive(Clone)]
pub struct BaselineClient {
    transports: Arc<Vec<Transport>>,
    endpoint: quinn::Endpoint,
    waiting: Waiting,
    next_id: Arc<AtomicU64>,
    reader: Arc<JoinHandle<()>>,
    deadline: Duration,
}

impl BaselineClient {
    fn connect(
        config: Arc<ClusterConfig>,
        identities: Vec<(ClientId, KeyPair)>,
        addresses: Vec<SocketAddr>,
    ) -> Result<BaselineClient, ClusterError> {
        let endpoint =
            bft_net::transport::client_endpoint("127.0.0.1:0".parse().expect("valid address"))?;
        let options = TransportOptions::default();
        let (inbound_tx, mut inbound) = mpsc::channel::<Inbound>(options.inbound_queue_frames);
        let mut keys: BTreeMap<PublicKey, KeyPair> = BTreeMap::new();
        for (_, key) in identities {
            keys.entry(key.public()).or_insert(key);
        }
        let transports = keys
            .into_values()
            .map(|key| {
                Transport::client(
                    endpoint.clone(),
                    config.clone(),
                    key,
                    addresses.clone(),
                    options.clone(),
                    inbound_tx.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let waiting: Waiting = Arc::default();
        let reader = {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                while let Some(frame) = inbound.recv().await {
                    if frame.from != Principal::Replica(SEQUENCER) {
                        continue;
                    }
                    if let Some(Frame::Reply { id, result }) = decode(&frame.frame) {
                        let waiter = waiting.lock().expect("not poisoned").remove(&id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(result);
                        }
                    }
                }
            })
        };
        Ok(BaselineClient {
            transports: Arc::new(transports),
            endpoint,
            waiting,
            next_id: Arc::new(AtomicU64::new(1)),
            reader: Arc::new(reader),
            deadline: Duration::from_secs(10),
        })
    }

    /// Submits `operation` on lane `lane` (on the connection of key `lane` modulo the keys held)
    /// and waits for the sequencer's reply.
    pub async fn invoke(&self, lane: usize, operation: Vec<u8>) -> Result<Vec<u8>, BaselineError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, result) = oneshot::channel();
        self.waiting.lock().expect("not poisoned").insert(id, reply);
        let transport = &self.transports[lane % self.transports.len()];
        transport.send(
            Principal::Replica(SEQUENCER),
            encode(&Frame::Request { id, operation }),
        );
        match tokio::time::timeout(self.deadline, result).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(BaselineError::Closed),
            Err(_) => {
                self.waiting.lock().expect("not poisoned").remove(&id);
                Err(BaselineError::Timeout(self.deadline))
            }
        }
    }

    /// Closes every connection.
    pub async fn shutdown(self) {
        self.reader.abort();
        for transport in self.transports.iter() {
            transport.shutdown().await;
        }
        self.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}
