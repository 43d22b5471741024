//! A deterministic in-memory cluster for scenario tests, examples and benchmarks: FIFO delivery,
//! no sleeping, and time that jumps to the next deadline when nothing is in flight (after
//! quinn-proto's `tests/util.rs`).
//!
//! Every frame goes through the real [`Verifier`] before it reaches a replica or client, as it
//! would in a driver, and every step's actions go through [`crate::Actions::persist_then_send`].
//! Keys are derived from fixed seeds: this is for tests and demonstrations, never for deployment.

pub mod service;

use crate::client::ClientInput;
use crate::{
    Client, ClientId, ClusterConfig, Completed, Destination, DirectRequests, Executed, Input,
    MemoryStorage, Outgoing, Rejected, Replica, ReplicaId, Service, Time, Verifier, VerifyError,
};
use bft_crypto::KeyPair;
use bytes::Bytes;
use service::LogService;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// A node of the test network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    /// A replica.
    Replica(ReplicaId),
    /// A client, by index in `Cluster::clients`.
    Client(ClientId),
}

impl Node {
    /// The principal a connection from this node is authenticated as.
    pub fn principal(self) -> crate::Principal {
        match self {
            Node::Replica(id) => crate::Principal::Replica(id),
            Node::Client(id) => crate::Principal::Client(id),
        }
    }
}

/// A frame in flight.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The sender.
    pub from: Node,
    /// The receiver.
    pub to: Node,
    /// The frame.
    pub frame: Bytes,
}

/// The cluster id of [`config`]'s clusters.
pub const CLUSTER_ID: u64 = 7;

/// `message` signed by replica `id` of a testkit cluster, with its testkit key.
pub fn signed_by_replica<M: crate::messages::WireMessage>(id: u32, message: &M) -> Bytes {
    message.sign(
        &replica_key(id),
        CLUSTER_ID,
        crate::Principal::Replica(ReplicaId(id)),
    )
}

/// A prepare signed by replica `signer` of a testkit cluster.
pub fn prepare(signer: u32, view: u64, seq: u64, digest: bft_crypto::Digest) -> Bytes {
    let prepare = crate::messages::Prepare {
        view: crate::View(view),
        seq: crate::SeqNum(seq),
        digest,
    };
    signed_by_replica(signer, &prepare)
}

/// A commit signed by replica `signer` of a testkit cluster.
pub fn commit(signer: u32, view: u64, seq: u64, digest: bft_crypto::Digest) -> Bytes {
    let commit = crate::messages::Commit {
        view: crate::View(view),
        seq: crate::SeqNum(seq),
        digest,
    };
    signed_by_replica(signer, &commit)
}

/// A request from client `client` of a testkit cluster, signed with its testkit key.
pub fn client_request(client: u64, timestamp: u64, operation: &[u8]) -> Bytes {
    use crate::messages::WireMessage;
    crate::messages::Request {
        timestamp,
        operation: operation.to_vec(),
    }
    .sign(
        &client_key(client),
        CLUSTER_ID,
        crate::Principal::Client(ClientId(client)),
    )
}

/// `frame` with one byte of its signature flipped (nothing re-signed): the same signed bytes,
/// and so the same digest, with a signature that does not verify. `frame` must decode.
pub fn flip_signature(frame: &Bytes) -> Bytes {
    let decoded = crate::codec::decode_frame(frame, usize::MAX).expect("a frame");
    let mut signature = decoded.signature;
    signature.0[7] ^= 0x01;
    crate::codec::FrameRef {
        signature,
        ..decoded
    }
    .encode()
}

/// Deterministic key for replica `i` of a test cluster.
pub fn replica_key(i: u32) -> KeyPair {
    let mut seed = [0u8; 32];
    seed[0] = 1;
    seed[1..5].copy_from_slice(&i.to_le_bytes());
    KeyPair::from_seed(seed)
}

/// Deterministic key for client `i` of a test cluster.
pub fn client_key(i: u64) -> KeyPair {
    let mut seed = [0u8; 32];
    seed[0] = 2;
    seed[1..9].copy_from_slice(&i.to_le_bytes());
    KeyPair::from_seed(seed)
}

/// A configuration for `3f+1` replicas and `clients` clients (ids 1..=clients), with the test
/// keys above.
pub fn config(f: usize, clients: u64) -> ClusterConfig {
    let replicas = (0..(3 * f + 1) as u32)
        .map(|i| replica_key(i).public())
        .collect();
    let clients = (1..=clients)
        .map(|i| (ClientId(i), client_key(i).public()))
        .collect();
    ClusterConfig::new(CLUSTER_ID, f, replicas, clients)
}

/// Replicas running [`LogService`] and clients on a FIFO in-memory network.
pub struct Cluster {
    /// The configuration every node shares.
    pub config: Arc<ClusterConfig>,
    /// The verifier every frame passes through.
    pub verifier: Verifier,
    /// Replica `i` is `ReplicaId(i)`.
    pub replicas: Vec<Replica<LogService>>,
    /// Each replica's persisted records.
    pub storage: Vec<MemoryStorage>,
    /// The requests clients sent each replica directly.
    pub direct: Vec<DirectRequests>,
    /// Clients by id.
    pub clients: BTreeMap<ClientId, Client>,
    /// The current (virtual) time.
    pub now: Time,
    /// Frames in flight, delivered in order.
    pub network: VecDeque<Envelope>,
    /// Replicas that neither receive nor send anything.
    pub silent: BTreeSet<ReplicaId>,
    /// Every request each replica executed, in order.
    pub executed: Vec<Vec<Executed>>,
    /// Every completed client request.
    pub completed: Vec<(ClientId, Completed)>,
    /// Protocol rejections by replica.
    pub rejected: Vec<(ReplicaId, Rejected)>,
    /// Frames the verifier refused, by receiver.
    pub verify_failures: Vec<(Node, VerifyError)>,
    /// Frames delivered so far.
    pub delivered: u64,
    /// Called on every frame about to be delivered: return false to drop it; it may also
    /// rewrite the frame (a Byzantine sender, a lossy link).
    pub filter: Option<Filter>,
}

/// See [`Cluster::filter`].
pub type Filter = Box<dyn FnMut(&mut Envelope) -> bool>;

impl Cluster {
    /// A cluster for `config`, whose keys must be the testkit's [`replica_key`] and
    /// [`client_key`] (as [`config`] makes them).
    pub fn new(config: ClusterConfig) -> Cluster {
        let config = Arc::new(config);
        let replicas: Vec<_> = config
            .replica_ids()
            .map(|id| {
                Replica::new(config.clone(), id, replica_key(id.0), LogService::default())
                    .expect("valid replica")
            })
            .collect();
        let clients = config
            .clients
            .keys()
            .map(|&id| {
                (
                    id,
                    Client::new(config.clone(), id, client_key(id.0), 1).expect("valid client"),
                )
            })
            .collect();
        Cluster {
            verifier: Verifier::new(config.clone()).expect("valid config"),
            storage: vec![MemoryStorage::default(); replicas.len()],
            direct: vec![DirectRequests::new(); replicas.len()],
            executed: vec![Vec::new(); replicas.len()],
            replicas,
            clients,
            config,
            now: Time::ZERO,
            network: VecDeque::new(),
            silent: BTreeSet::new(),
            completed: Vec::new(),
            rejected: Vec::new(),
            verify_failures: Vec::new(),
            delivered: 0,
            filter: None,
        }
    }

    /// A cluster of `3f+1` replicas and `clients` clients with the testkit's configuration.
    pub fn with_f(f: usize, clients: u64) -> Cluster {
        Cluster::new(config(f, clients))
    }

    /// Submits `operation` from `client` now.
    pub fn submit(&mut self, client: ClientId, operation: Vec<u8>) {
        let now = self.now;
        let actions = self
            .clients
            .get_mut(&client)
            .expect("client exists")
            .submit(now, operation);
        let actions = actions.expect("client accepts the request");
        self.route(Node::Client(client), actions.send);
    }

    /// Puts a frame on the network as if `from` had sent it.
    pub fn inject(&mut self, from: Node, to: Node, frame: Bytes) {
        self.network.push_back(Envelope { from, to, frame });
    }

    fn route(&mut self, from: Node, outgoing: Vec<Outgoing>) {
        if let Node::Replica(id) = from
            && self.silent.contains(&id)
        {
            return;
        }
        for Outgoing { to, frame } in outgoing {
            match to {
                Destination::Replica(r) => self.inject(from, Node::Replica(r), frame),
                Destination::Client(c) => self.inject(from, Node::Client(c), frame),
                Destination::OtherReplicas => {
                    for r in self.config.clone().replica_ids() {
                        if Node::Replica(r) != from {
                            self.inject(from, Node::Replica(r), frame.clone());
                        }
                    }
                }
            }
        }
    }

    /// Delivers one frame; false if the network is empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(mut envelope) = self.network.pop_front() else {
            return false;
        };
        if let Some(filter) = self.filter.as_mut()
            && !filter(&mut envelope)
        {
            return true;
        }
        self.delivered += 1;
        // The simulated network knows the sender, as an authenticated connection would.
        let result = match (envelope.from, envelope.to) {
            (Node::Client(client), Node::Replica(id)) if !self.silent.contains(&id) => {
                let index = id.0 as usize;
                let primary = self.replicas[index].is_primary();
                self.verifier.receive_direct(
                    &mut self.direct[index],
                    client,
                    envelope.frame,
                    primary,
                )
            }
            (from, Node::Replica(id)) => self
                .verifier
                .verify_from_at(
                    from.principal(),
                    envelope.frame,
                    &self.direct[id.0 as usize],
                )
                .map(Some),
            (from, Node::Client(_)) => self
                .verifier
                .verify_from(from.principal(), envelope.frame)
                .map(Some),
        };
        let message = match result {
            Ok(None) => return true,
            Ok(Some(message)) => message,
            Err(error) => {
                self.verify_failures.push((envelope.to, error));
                return true;
            }
        };
        match envelope.to {
            Node::Replica(id) => {
                if !self.silent.contains(&id) {
                    self.step_replica(id, Input::Message(message));
                }
            }
            Node::Client(id) => {
                let now = self.now;
                if let Some(client) = self.clients.get_mut(&id) {
                    let actions = client.step(now, ClientInput::Message(message));
                    if let Some(done) = actions.completed {
                        self.completed.push((id, done));
                    }
                    self.route(Node::Client(id), actions.send);
                }
            }
        }
        true
    }

    /// Steps replica `id` with `input` and routes its effects (persisting first).
    pub fn step_replica(&mut self, id: ReplicaId, input: Input) {
        let i = id.0 as usize;
        let mut actions = self.replicas[i].step(self.now, input);
        self.executed[i].append(&mut actions.executed);
        self.rejected
            .extend(actions.rejected.drain(..).map(|r| (id, r)));
        let Ok(outgoing) = actions.persist_then_send(&mut self.storage[i]);
        self.route(Node::Replica(id), outgoing);
    }

    /// The earliest deadline of any node.
    pub fn next_deadline(&self) -> Option<Time> {
        let replicas = self
            .replicas
            .iter()
            .filter(|r| !self.silent.contains(&r.id()))
            .filter_map(|r| r.poll_timeout());
        let clients = self.clients.values().filter_map(|c| c.poll_timeout());
        replicas.chain(clients).min()
    }

    /// Jumps time to the next deadline and ticks every node that is due. False if there is none.
    pub fn advance_time(&mut self) -> bool {
        let Some(deadline) = self.next_deadline() else {
            return false;
        };
        self.now = self.now.max(deadline);
        let now = self.now;
        for id in self.config.replica_ids().collect::<Vec<_>>() {
            let due = self.replicas[id.0 as usize]
                .poll_timeout()
                .is_some_and(|t| t <= now);
            if due && !self.silent.contains(&id) {
                self.step_replica(id, Input::Tick);
            }
        }
        let client_ids: Vec<ClientId> = self.clients.keys().copied().collect();
        for id in client_ids {
            let client = self.clients.get_mut(&id).expect("exists");
            if client.poll_timeout().is_some_and(|t| t <= now) {
                let actions = client.step(now, ClientInput::Tick);
                self.route(Node::Client(id), actions.send);
            }
        }
        true
    }

    /// Delivers frames, jumping time when the network is empty, until `done` holds (true) or
    /// `max_events` deliveries and `max_time` have passed, or nothing is left to do (false).
    pub fn run_until(
        &mut self,
        max_time: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> bool {
        let limit = Time::ZERO + max_time;
        loop {
            if done(self) {
                return true;
            }
            if self.deliver_one() {
                continue;
            }
            if self.next_deadline().is_none_or(|t| t > limit) || !self.advance_time() {
                return done(self);
            }
        }
    }

    /// Closed-loop workload: each client in `clients` submits `per_client` operations one after
    /// another (`op(client, i)`), until all complete or `max_time` passes. Returns the number of
    /// completed operations.
    pub fn run_closed_loop(
        &mut self,
        clients: &[ClientId],
        per_client: usize,
        max_time: Duration,
        op: impl Fn(ClientId, usize) -> Vec<u8>,
    ) -> usize {
        let mut submitted: BTreeMap<ClientId, usize> = BTreeMap::new();
        let start_completed = self.completed.len();
        let total = clients.len() * per_client;
        let limit = self.now + max_time;
        loop {
            for &c in clients {
                let n = submitted.entry(c).or_default();
                if *n < per_client && !self.clients[&c].is_busy() {
                    self.submit(c, op(c, *n));
                    *n += 1;
                }
            }
            if self.completed.len() - start_completed == total {
                return total;
            }
            if self.deliver_one() {
                continue;
            }
            if self.next_deadline().is_none_or(|t| t > limit) || !self.advance_time() {
                return self.completed.len() - start_completed;
            }
        }
    }

    /// Asserts that every replica outside `except` executed exactly the same requests in the same
    /// order and holds the same service state; returns that sequence's length.
    pub fn assert_agreement(&self, except: &BTreeSet<ReplicaId>) -> usize {
        let ids: Vec<usize> = self
            .config
            .replica_ids()
            .filter(|id| !except.contains(id))
            .map(|id| id.0 as usize)
            .collect();
        let first = ids[0];
        for &i in &ids[1..] {
            assert_eq!(
                self.executed[first], self.executed[i],
                "replicas {first} and {i} executed differently"
            );
            assert_eq!(
                self.replicas[first].service().state_digest(),
                self.replicas[i].service().state_digest(),
                "replicas {first} and {i} hold different states"
            );
        }
        self.executed[first].len()
    }
}

/// Steps `replica` with `message` at time zero (for replicas driven by hand from time zero) and
/// asserts it is refused for exactly `reason`, with no effect: one `Rejected` record naming the
/// authenticated sender and kind, one more count under the reason's label (every other metric
/// unchanged), nothing persisted, sent or executed, and an unchanged status. `case` names the
/// case in failure messages.
pub fn assert_refused<S: Service>(
    replica: &mut Replica<S>,
    message: crate::VerifiedMessage,
    reason: crate::Rejection,
    case: &str,
) {
    let status = replica.status();
    let mut metrics = replica.metrics().clone();
    let (from, kind) = (message.sender(), message.kind());
    let actions = replica.step(Time::ZERO, Input::Message(message));
    assert_eq!(
        actions.rejected,
        vec![Rejected { from, kind, reason }],
        "{case}: {kind:?} from {from:?}"
    );
    assert!(
        actions.is_quiet(),
        "{case}: a refused {kind:?} had effects: persist {:?}, send {:?}, executed {:?}",
        actions.to_persist(),
        actions.pending_sends(),
        actions.executed
    );
    assert_eq!(
        replica.status(),
        status,
        "{case}: a refused {kind:?} changed the replica"
    );
    *metrics.rejected.entry(reason.label()).or_default() += 1;
    assert_eq!(replica.metrics(), &metrics, "{case}");
}
