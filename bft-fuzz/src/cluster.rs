//! `cluster`: a small cluster with a twin under an arbitrary schedule of deliveries, drops,
//! duplicates, partitions, timeouts and crashes (Twins: Bano et al., 2020; the shape of the
//! harness follows dshulyak/hotstuff2's `fuzz/fuzz_targets/twins_basic.rs`: a model stepped by
//! an arbitrary list of operations, checked after each).
//!
//! The cluster is the sans-IO core itself: four [`Replica`]s (f = 1) and two [`Client`]s over an
//! in-memory network, every frame verified by the real [`Verifier`] when it is sent. One replica
//! id is the twin: two instances with one key, each correct replica talking to one of them (both
//! ways), clients reaching both. The twin is the one faulty replica; the other three are correct
//! and persist every step in a [`MemoryStorage`] before their frames leave. A crashed correct
//! replica comes back with [`Replica::recover`] from exactly what it persisted; a crashed twin
//! instance comes back empty (amnesia is allowed to the faulty one).

use arbitrary::{Arbitrary, Result, Unstructured};
use bft_core::client::ClientInput;
use bft_core::testkit::{self, service::LogService};
use bft_core::{
    Client, ClientId, ClusterConfig, Destination, DurableCheckpoint, Executed, Input,
    MemoryStorage, MessageKind, Outcome, Outgoing, Principal, Record, Replica, ReplicaId, SeqNum,
    SignedRecord, Storage, Time, VerifiedMessage, Verifier, View,
};
use bft_crypto::{Digest, KeyPair, sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Replicas (f = 1).
const N: u32 = 4;
/// Clients (ids 1 and 2).
const CLIENTS: u64 = 2;
/// Most operations one schedule runs.
const MAX_OPS: usize = 256;
/// Most frames one schedule delivers (each is a verified step).
const MAX_DELIVERIES: usize = 1_500;
/// Most frames in flight; frames sent beyond it are lost.
const MAX_IN_FLIGHT: usize = 256;
/// Most frames one [`ClusterOp::Flush`] delivers.
const MAX_FLUSH: u8 = 32;
/// Replica endpoints a partition mask covers: the four replica ids (the twin's first instance
/// under its own id) and the twin's second instance.
const ENDPOINTS: u8 = 5;

/// One step of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterOp {
    /// Deliver the frame at this position in flight (modulo the count; 0 is the oldest).
    Deliver(u8),
    /// Deliver the oldest frame, `1 + n % 32` times (fewer if the network empties).
    Flush(u8),
    /// Lose the frame at this position in flight.
    Drop(u8),
    /// Duplicate the frame at this position in flight (the copy goes last).
    Duplicate(u8),
    /// Client `1 + client % 2` submits operation `[b'o', op]` if it has nothing outstanding.
    Submit {
        /// Which client.
        client: u8,
        /// The operation's byte.
        op: u8,
    },
    /// Advance time to the deadline of one node and tick it: 0..=3 replica ids (the twin's
    /// first instance), 4 the twin's second instance, 5 and 6 the clients (modulo 7).
    Tick(u8),
    /// Advance time to the earliest deadline of any live node and tick every node then due.
    TickAll,
    /// Split the replica endpoints by this bit mask (bit `i`: id `i`, bit 4: the twin's second
    /// instance; modulo 32); frames between the two sides are lost on delivery. 0 heals.
    Partition(u8),
    /// Correct replica `r % 4` talks to the twin's other instance from now on.
    Switch(u8),
    /// Crash a replica endpoint (as in [`ClusterOp::Tick`], modulo 5). A correct replica
    /// crashes between steps, or, with `torn`, during its next step: only the first
    /// `torn % (records + 1)` of that step's records become durable, and nothing it sends leaves.
    Crash {
        /// Which endpoint.
        endpoint: u8,
        /// A torn write at the next step, keeping this many records.
        torn: Option<u8>,
    },
    /// Restart a crashed endpoint (modulo 5): a correct replica recovers from its storage, a
    /// twin instance starts empty.
    Restart(u8),
}

/// A schedule: which replica is the twin, which instance each correct replica talks to, and the
/// operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSchedule {
    /// The twin's replica id (modulo 4).
    pub twin: u8,
    /// Bit `r`: correct replica `r` talks to the twin's second instance.
    pub sides: u8,
    /// The operations, in order (at most 256 run).
    pub ops: Vec<ClusterOp>,
}

impl<'a> Arbitrary<'a> for ClusterOp {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=10u8)? {
            0 => ClusterOp::Deliver(u.arbitrary()?),
            1 => ClusterOp::Flush(u.int_in_range(0..=MAX_FLUSH - 1)?),
            2 => ClusterOp::Drop(u.arbitrary()?),
            3 => ClusterOp::Duplicate(u.arbitrary()?),
            4 => ClusterOp::Submit {
                client: u.int_in_range(0..=1)?,
                op: u.arbitrary()?,
            },
            5 => ClusterOp::Tick(u.int_in_range(0..=6)?),
            6 => ClusterOp::TickAll,
            7 => ClusterOp::Partition(u.int_in_range(0..=31)?),
            8 => ClusterOp::Switch(u.int_in_range(0..=3)?),
            9 => ClusterOp::Crash {
                endpoint: u.int_in_range(0..=4)?,
                torn: if u.arbitrary::<bool>()? {
                    Some(u.arbitrary()?)
                } else {
                    None
                },
            },
            _ => ClusterOp::Restart(u.int_in_range(0..=4)?),
        })
    }
}

impl ClusterOp {
    /// Appends the bytes [`ClusterOp::arbitrary`] decodes back into this operation.
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            ClusterOp::Deliver(i) => out.extend([0, i]),
            ClusterOp::Flush(n) => out.extend([1, n]),
            ClusterOp::Drop(i) => out.extend([2, i]),
            ClusterOp::Duplicate(i) => out.extend([3, i]),
            ClusterOp::Submit { client, op } => out.extend([4, client, op]),
            ClusterOp::Tick(node) => out.extend([5, node]),
            ClusterOp::TickAll => out.push(6),
            ClusterOp::Partition(mask) => out.extend([7, mask]),
            ClusterOp::Switch(r) => out.extend([8, r]),
            ClusterOp::Crash {
                endpoint,
                torn: None,
            } => out.extend([9, endpoint, 0]),
            ClusterOp::Crash {
                endpoint,
                torn: Some(keep),
            } => out.extend([9, endpoint, 1, keep]),
            ClusterOp::Restart(endpoint) => out.extend([10, endpoint]),
        }
    }
}

impl<'a> Arbitrary<'a> for ClusterSchedule {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let twin = u.int_in_range(0..=3)?;
        let sides = u.int_in_range(0..=15)?;
        let mut ops = Vec::new();
        while !u.is_empty() && ops.len() < MAX_OPS {
            ops.push(u.arbitrary()?);
        }
        Ok(ClusterSchedule { twin, sides, ops })
    }
}

impl ClusterSchedule {
    /// The bytes that decode to this schedule (for seed corpora), provided its fields are in
    /// the ranges the decoder produces.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.twin, self.sides];
        for op in &self.ops {
            op.encode(&mut out);
        }
        out
    }

    /// Decodes a schedule from fuzzer bytes (what [`cluster`] runs): running out of bytes ends
    /// it.
    pub fn from_bytes(data: &[u8]) -> ClusterSchedule {
        ClusterSchedule::arbitrary(&mut Unstructured::new(data)).unwrap_or(ClusterSchedule {
            twin: 0,
            sides: 0,
            ops: Vec::new(),
        })
    }
}

/// What a [`cluster`] run reached, for tests that check the seeds go somewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterReport {
    /// Frames delivered.
    pub deliveries: usize,
    /// The highest sequence number a correct replica executed.
    pub executed: u64,
    /// The highest view a correct replica entered.
    pub view: u64,
    /// The highest stable checkpoint of a correct replica.
    pub stable: u64,
    /// Requests clients completed.
    pub completed: usize,
    /// Recoveries of correct replicas from their storage.
    pub recoveries: usize,
    /// Crashes of correct replicas with a torn write.
    pub torn_writes: usize,
    /// Recoveries that started from a saved checkpoint.
    pub recovered_from_checkpoint: usize,
}

/// Runs an arbitrary schedule ([`ClusterSchedule`], decoded from `data`) over a cluster of
/// n = 4 replicas (f = 1) whose faulty replica is a twin, and checks after every step:
///
/// - agreement: no two correct replicas execute different batches at one sequence number (in
///   any incarnation: executions replayed by recovery count too), and their executions of one
///   request produce one outcome;
/// - correct replicas never sign conflicting messages: never two pre-prepares, prepares or
///   commits for one (view, sequence number) with different digests, two CHECKPOINTs for one
///   sequence number with different digests, or two different VIEW-CHANGEs or NEW-VIEWs for one
///   view, across crashes; and no two correct replicas sign different checkpoint digests for one
///   sequence number;
/// - durability: a correct replica always recovers from what it persisted, to at least the last
///   batch it executed in a step whose records were all durable;
/// - clients: a completed request's outcome is the one correct replicas produced;
/// - every frame a correct replica or client sends verifies.
///
/// Schedules may crash and partition anything, so nothing here requires progress.
pub fn cluster(data: &[u8]) {
    let _ = cluster_report(data);
}

/// [`cluster`], returning what the run reached.
pub fn cluster_report(data: &[u8]) -> ClusterReport {
    let schedule = ClusterSchedule::from_bytes(data);
    let mut sim = Sim::new(&schedule);
    for op in &schedule.ops {
        if sim.report.deliveries >= MAX_DELIVERIES {
            break;
        }
        sim.apply(*op);
    }
    sim.finish()
}

/// The cluster's configuration: small window (L = 8) and checkpoint interval (K = 4), so
/// checkpoints, garbage collection, state transfer and durable checkpoints are a few batches
/// away.
struct Fixture {
    config: Arc<ClusterConfig>,
    verifier: Verifier,
    keys: Vec<KeyPair>,
}

impl Fixture {
    fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let mut config = testkit::config(1, CLIENTS);
            config.limits.window = 8;
            config.limits.checkpoint_interval = 4;
            config.limits.max_in_flight_batches = 2;
            config.limits.max_batch_requests = 2;
            config.limits.max_future_messages_per_peer = 4;
            let config = Arc::new(config);
            let verifier = Verifier::new(config.clone()).expect("valid fixture config");
            let keys = (0..N).map(testkit::replica_key).collect();
            Fixture {
                config,
                verifier,
                keys,
            }
        })
    }
}

/// A node of the network: a replica instance (id, instance 0 or 1) or a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Replica(u32, usize),
    Client(u64),
}

/// A frame in flight, verified once when it was sent.
#[derive(Clone)]
struct Envelope {
    from: Node,
    to: Node,
    message: VerifiedMessage,
}

/// Storage for the twin: it keeps nothing (a faulty replica may forget).
struct Forget;

impl Storage for Forget {
    type Error = std::convert::Infallible;
    fn persist(&mut self, _: &[Record]) -> std::result::Result<(), Self::Error> {
        Ok(())
    }
}

/// What a signature binds, per correct replica: kind, view and sequence number (zero for
/// VIEW-CHANGE and NEW-VIEW, which a replica signs once per view).
type SignedKey = (u32, MessageKind, View, SeqNum);

struct Sim {
    twin: u32,
    /// The twin instance each correct replica talks to.
    sides: [usize; N as usize],
    /// Live instances: one per correct replica, two for the twin.
    replicas: Vec<[Option<Replica<LogService>>; 2]>,
    storage: Vec<MemoryStorage>,
    /// A torn write armed for a correct replica's next step: records to keep.
    torn: [Option<u8>; N as usize],
    clients: BTreeMap<u64, Client>,
    network: Vec<Envelope>,
    /// Endpoints on side 1 of the partition (bit per endpoint; 0: no partition).
    partition: u8,
    now: Time,
    // What the checks remember.
    signed: BTreeMap<SignedKey, Digest>,
    checkpoints: BTreeMap<SeqNum, (Digest, u32)>,
    committed: BTreeMap<SeqNum, (Digest, u32)>,
    outcomes: BTreeMap<(ClientId, u64), Outcome>,
    /// The last batch each correct replica executed in a step that became wholly durable.
    durable_executed: [SeqNum; N as usize],
    report: ClusterReport,
}

fn new_replica(id: u32) -> Replica<LogService> {
    let fixture = Fixture::get();
    Replica::new(
        fixture.config.clone(),
        ReplicaId(id),
        fixture.keys[id as usize].clone(),
        LogService::default(),
    )
    .expect("valid fixture replica")
}

impl Sim {
    fn new(schedule: &ClusterSchedule) -> Sim {
        let twin = u32::from(schedule.twin % 4);
        let fixture = Fixture::get();
        let replicas = (0..N)
            .map(|id| {
                let second = (id == twin).then(|| new_replica(id));
                [Some(new_replica(id)), second]
            })
            .collect();
        let clients = (1..=CLIENTS)
            .map(|c| {
                let client = Client::new(
                    fixture.config.clone(),
                    ClientId(c),
                    testkit::client_key(c),
                    1,
                )
                .expect("valid fixture client");
                (c, client)
            })
            .collect();
        Sim {
            twin,
            sides: std::array::from_fn(|r| usize::from(schedule.sides >> r & 1)),
            replicas,
            storage: vec![MemoryStorage::default(); N as usize],
            torn: [None; N as usize],
            clients,
            network: Vec::new(),
            partition: 0,
            now: Time::ZERO,
            signed: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            committed: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            durable_executed: [SeqNum(0); N as usize],
            report: ClusterReport::default(),
        }
    }

    /// The replica endpoint `e % 5`: (id, instance).
    fn endpoint(&self, e: u8) -> (u32, usize) {
        match u32::from(e % ENDPOINTS) {
            4 => (self.twin, 1),
            id => (id, 0),
        }
    }

    fn apply(&mut self, op: ClusterOp) {
        match op {
            ClusterOp::Deliver(i) => {
                if !self.network.is_empty() {
                    let index = usize::from(i) % self.network.len();
                    self.deliver(index);
                }
            }
            ClusterOp::Flush(n) => {
                for _ in 0..=n % MAX_FLUSH {
                    if self.network.is_empty() || self.report.deliveries >= MAX_DELIVERIES {
                        break;
                    }
                    self.deliver(0);
                }
            }
            ClusterOp::Drop(i) => {
                if !self.network.is_empty() {
                    let index = usize::from(i) % self.network.len();
                    self.network.remove(index);
                }
            }
            ClusterOp::Duplicate(i) => {
                if !self.network.is_empty() && self.network.len() < MAX_IN_FLIGHT {
                    let index = usize::from(i) % self.network.len();
                    self.network.push(self.network[index].clone());
                }
            }
            ClusterOp::Submit { client, op } => {
                let id = 1 + u64::from(client) % CLIENTS;
                let now = self.now;
                let Some(client) = self.clients.get_mut(&id) else {
                    return;
                };
                if client.is_busy() {
                    return;
                }
                // Never the test service's `panic` operation: libFuzzer aborts on any panic,
                // even one the replica contains.
                match client.submit(now, vec![b'o', op]) {
                    Ok(actions) => self.route(Node::Client(id), actions.send),
                    Err(error) => panic!("client {id} refused a submission while idle: {error}"),
                }
            }
            ClusterOp::Tick(node) => match node % 7 {
                c @ 5..=6 => self.tick_client(u64::from(c) - 4, true),
                e => {
                    let (id, instance) = self.endpoint(e);
                    self.tick_replica(id, instance, true);
                }
            },
            ClusterOp::TickAll => self.tick_all(),
            ClusterOp::Partition(mask) => self.partition = mask % 32,
            ClusterOp::Switch(r) => {
                let r = usize::from(r % 4);
                self.sides[r] ^= 1;
            }
            ClusterOp::Crash { endpoint, torn } => {
                let (id, instance) = self.endpoint(endpoint);
                if id != self.twin && torn.is_some() {
                    if self.replicas[id as usize][0].is_some() {
                        self.torn[id as usize] = torn;
                    }
                } else {
                    self.replicas[id as usize][instance] = None;
                    self.torn[id as usize] = None;
                }
            }
            ClusterOp::Restart(endpoint) => {
                let (id, instance) = self.endpoint(endpoint);
                if self.replicas[id as usize][instance].is_some() {
                    return;
                }
                if id == self.twin {
                    self.replicas[id as usize][instance] = Some(new_replica(id));
                } else {
                    self.recover(id);
                }
            }
        }
    }

    /// Whether a frame between these nodes crosses the partition.
    fn partitioned(&self, from: Node, to: Node) -> bool {
        let side = |node: Node| match node {
            Node::Replica(_, 1) => Some(self.partition >> 4 & 1),
            Node::Replica(id, _) => Some(self.partition >> id & 1),
            Node::Client(_) => None,
        };
        matches!((side(from), side(to)), (Some(a), Some(b)) if a != b)
    }

    fn deliver(&mut self, index: usize) {
        let envelope = self.network.remove(index);
        if self.partitioned(envelope.from, envelope.to) {
            return;
        }
        self.report.deliveries += 1;
        match envelope.to {
            Node::Replica(id, instance) => {
                self.step_replica(id, instance, Input::Message(envelope.message));
            }
            Node::Client(id) => {
                let now = self.now;
                let Some(client) = self.clients.get_mut(&id) else {
                    return;
                };
                let actions = client.step(now, ClientInput::Message(envelope.message));
                if let Some(done) = &actions.completed {
                    self.report.completed += 1;
                    let key = (ClientId(id), done.timestamp);
                    match self.outcomes.get(&key) {
                        Some(outcome) => assert_eq!(
                            *outcome, done.outcome,
                            "client {id} completed request {} with an outcome no correct replica produced",
                            done.timestamp
                        ),
                        None => panic!(
                            "client {id} completed request {} that no correct replica executed",
                            done.timestamp
                        ),
                    }
                }
                self.route(Node::Client(id), actions.send);
            }
        }
    }

    fn tick_replica(&mut self, id: u32, instance: usize, jump: bool) {
        let Some(replica) = self.replicas[id as usize][instance].as_ref() else {
            return;
        };
        let Some(deadline) = replica.poll_timeout() else {
            return;
        };
        if jump {
            self.now = self.now.max(deadline);
        }
        if deadline <= self.now {
            self.step_replica(id, instance, Input::Tick);
        }
    }

    fn tick_client(&mut self, id: u64, jump: bool) {
        let Some(deadline) = self.clients.get(&id).and_then(Client::poll_timeout) else {
            return;
        };
        if jump {
            self.now = self.now.max(deadline);
        }
        if deadline <= self.now {
            let now = self.now;
            let actions = self
                .clients
                .get_mut(&id)
                .map(|client| client.step(now, ClientInput::Tick));
            if let Some(actions) = actions {
                self.route(Node::Client(id), actions.send);
            }
        }
    }

    fn tick_all(&mut self) {
        let replicas = self
            .replicas
            .iter()
            .flatten()
            .flatten()
            .filter_map(Replica::poll_timeout);
        let clients = self.clients.values().filter_map(Client::poll_timeout);
        let Some(deadline) = replicas.chain(clients).min() else {
            return;
        };
        self.now = self.now.max(deadline);
        for id in 0..N {
            for instance in 0..2 {
                self.tick_replica(id, instance, false);
            }
        }
        for id in 1..=CLIENTS {
            self.tick_client(id, false);
        }
    }

    fn step_replica(&mut self, id: u32, instance: usize, input: Input) {
        let now = self.now;
        let i = id as usize;
        let Some(replica) = self.replicas[i][instance].as_mut() else {
            return;
        };
        let actions = replica.step(now, input);
        let from = Node::Replica(id, instance);
        if id == self.twin {
            let Ok(sends) = actions.persist_then_send(&mut Forget);
            self.route(from, sends);
            return;
        }
        self.check_executed(id, &actions.executed_batches, &actions.executed);
        if let Some(keep) = self.torn[i].take() {
            // The power goes while the step's records are written: a prefix is durable (not the
            // checkpoint, which comes after them), and nothing it would send leaves.
            let records = actions.to_persist();
            let durable = &records[..usize::from(keep) % (records.len() + 1)];
            let signed: Vec<SignedRecord> = durable
                .iter()
                .filter_map(Record::as_signed)
                .cloned()
                .collect();
            self.check_signed(id, &signed);
            let Ok(()) = self.storage[i].persist(durable);
            self.replicas[i][0] = None;
            self.report.torn_writes += 1;
            return;
        }
        let signed: Vec<SignedRecord> = actions.signed_records().cloned().collect();
        self.check_signed(id, &signed);
        let executed = actions.executed_batches.last().map(|(seq, _)| *seq);
        let Ok(sends) = actions.persist_then_send(&mut self.storage[i]);
        if let Some(seq) = executed {
            self.durable_executed[i] = self.durable_executed[i].max(seq);
        }
        self.route(from, sends);
    }

    /// Restarts correct replica `id` from what it persisted.
    fn recover(&mut self, id: u32) {
        let i = id as usize;
        let fixture = Fixture::get();
        let storage = &self.storage[i];
        let from_checkpoint = storage
            .checkpoint
            .as_ref()
            .is_some_and(|c: &DurableCheckpoint| c.stable.is_some());
        let (replica, report) = match Replica::recover(
            fixture.config.clone(),
            ReplicaId(id),
            fixture.keys[i].clone(),
            LogService::default(),
            storage.checkpoint.as_ref(),
            &storage.records,
        ) {
            Ok(recovered) => recovered,
            Err(error) => panic!("correct replica {id} cannot recover from its storage: {error}"),
        };
        assert!(
            report.last_executed >= self.durable_executed[i],
            "replica {id} recovered to batch {} but had executed batch {} in durable steps",
            report.last_executed.0,
            self.durable_executed[i].0
        );
        self.check_signed(id, &report.signed);
        self.check_executed(id, &report.executed_batches, &report.executed);
        self.replicas[i][0] = Some(replica);
        self.torn[i] = None;
        self.report.recoveries += 1;
        self.report.recovered_from_checkpoint += usize::from(from_checkpoint);
    }

    /// Verifies and routes a node's frames: a twin's peers each talk to one of its instances
    /// (both ways); clients reach both.
    fn route(&mut self, from: Node, sends: Vec<Outgoing>) {
        let fixture = Fixture::get();
        // The network knows the sender, as an authenticated connection does (replies are
        // authenticated that way, unsigned).
        let peer = match from {
            Node::Replica(id, _) => Principal::Replica(ReplicaId(id)),
            Node::Client(id) => Principal::Client(ClientId(id)),
        };
        for Outgoing { to, frame } in sends {
            let message = match fixture.verifier.verify_from(peer, frame) {
                Ok(message) => message,
                Err(error) => match from {
                    Node::Replica(id, _) if id == self.twin => continue,
                    _ => panic!("{from:?} sent a frame the verifier refuses: {error}"),
                },
            };
            let mut targets = Vec::new();
            match to {
                Destination::Replica(r) => self.targets(from, r.0, &mut targets),
                Destination::OtherReplicas => {
                    for r in 0..N {
                        if !matches!(from, Node::Replica(id, _) if id == r) {
                            self.targets(from, r, &mut targets);
                        }
                    }
                }
                Destination::Client(c) => targets.push(Node::Client(c.0)),
            }
            for to in targets {
                if self.network.len() < MAX_IN_FLIGHT {
                    self.network.push(Envelope {
                        from,
                        to,
                        message: message.clone(),
                    });
                }
            }
        }
    }

    fn targets(&self, from: Node, to: u32, out: &mut Vec<Node>) {
        if to >= N {
            return;
        }
        match from {
            Node::Client(_) if to == self.twin => {
                out.extend([Node::Replica(to, 0), Node::Replica(to, 1)]);
            }
            Node::Replica(id, _) if to == self.twin => {
                out.push(Node::Replica(to, self.sides[id as usize]));
            }
            Node::Replica(id, instance) if id == self.twin => {
                if self.sides[to as usize] == instance {
                    out.push(Node::Replica(to, 0));
                }
            }
            _ => out.push(Node::Replica(to, 0)),
        }
    }

    /// Correct replica `id` signed `records`: never two different messages for one key, and
    /// never a checkpoint digest another correct replica contradicts.
    fn check_signed(&mut self, id: u32, records: &[SignedRecord]) {
        for record in records {
            let (seq, digest) = match record.kind {
                MessageKind::ViewChange | MessageKind::NewView => {
                    (SeqNum(0), sha256(&record.frame))
                }
                _ => (record.seq, record.digest),
            };
            let key = (id, record.kind, record.view, seq);
            if let Some(previous) = self.signed.insert(key, digest) {
                assert_eq!(
                    previous, digest,
                    "correct replica {id} signed two different {:?} for view {}, seq {}",
                    record.kind, record.view.0, record.seq.0
                );
            }
            if record.kind == MessageKind::Checkpoint {
                let (first, by) = *self
                    .checkpoints
                    .entry(record.seq)
                    .or_insert((record.digest, id));
                assert_eq!(
                    first, record.digest,
                    "correct replicas {by} and {id} signed different checkpoint digests at seq {}",
                    record.seq.0
                );
            }
        }
    }

    /// Correct replica `id` executed `batches` and `requests`: agreement with every other
    /// correct execution.
    fn check_executed(&mut self, id: u32, batches: &[(SeqNum, Digest)], requests: &[Executed]) {
        for &(seq, digest) in batches {
            let (first, by) = *self.committed.entry(seq).or_insert((digest, id));
            assert_eq!(
                first, digest,
                "correct replicas {by} and {id} executed different batches at seq {}",
                seq.0
            );
            self.report.executed = self.report.executed.max(seq.0);
        }
        for executed in requests {
            let key = (executed.client, executed.timestamp);
            let first = self
                .outcomes
                .entry(key)
                .or_insert_with(|| executed.outcome.clone());
            assert_eq!(
                *first, executed.outcome,
                "correct replicas disagree on the outcome of request {} of client {}",
                executed.timestamp, executed.client
            );
        }
    }

    fn finish(mut self) -> ClusterReport {
        for (id, instances) in self.replicas.iter().enumerate() {
            if id as u32 == self.twin {
                continue;
            }
            if let Some(replica) = &instances[0] {
                let status = replica.status();
                self.report.view = self.report.view.max(status.view.0);
                self.report.stable = self.report.stable.max(status.low_watermark.0);
            }
        }
        self.report
    }
}
