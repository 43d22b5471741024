//! The event loop: one thread, one seeded generator, a priority queue of deliveries and fault
//! events, and virtual time that jumps to the next event or timer deadline. The real
//! `bft_core::Replica` and `bft_core::Client` run inside; every frame goes through the real
//! `Verifier`. The same seed gives the same run, bit for bit (checked by hashing every event).

mod clients;
mod durability;
mod routing;

use crate::byzantine::{Adversary, Attack};
use crate::checkers::{Checker, Violation, ViolationKind};
use crate::kv::KvService;
use crate::linearizability::{self, CheckError, Operation};
use crate::network::{Endpoint, Network};
use crate::rng::{SimRng, chance, exponential};
use crate::scenario::{Canary, CrashPoint, Fault, Scenario};
use crate::trace::Trace;
use bft_core::testkit::{client_key, replica_key};
use bft_core::{
    Client, ClientId, ClientInput, ClusterConfig, DirectRequests, Input, Principal, Record,
    Replica, ReplicaId, SeqNum, Storage, Time, VerifiedMessage, Verifier, VerifyError,
};
use bft_crypto::Digest;
use bft_storage::MemoryWal;
use bytes::Bytes;
use rand::SeedableRng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

/// Steps a run may take before it is declared stuck (a livelock is a liveness failure).
const MAX_EVENTS: u64 = 3_000_000;
/// Verification results kept for frames delivered to several nodes (the verifier is a pure
/// function of the frame, so this changes nothing but speed).
const VERIFY_CACHE: usize = 8_192;
/// States the linearizability search may explore per key before it gives up (inconclusive).
const LINEARIZABILITY_BUDGET: u64 = 2_000_000;

/// What one run measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events processed (deliveries, timer ticks, submissions, fault events).
    pub events: u64,
    /// Frames delivered.
    pub delivered: u64,
    /// Frames the verifier refused.
    pub refused: u64,
    /// Clients' first copies of requests that backups only recorded (see
    /// `bft_core::DirectRequests`).
    pub recorded_direct: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Client operations completed.
    pub requests_completed: u64,
    /// Requests executed by correct replicas (each counted once per replica).
    pub executions_checked: u64,
    /// The highest view a correct replica reached.
    pub max_view: u64,
    /// New views installed, summed over correct replicas.
    pub view_changes: u64,
    /// State transfers completed, summed over correct replicas.
    pub state_transfers: u64,
    /// Virtual time the run covered.
    pub virtual_time: Duration,
    /// Virtual time from the end of the faults until every client finished (if they did).
    pub recovery_time: Option<Duration>,
    /// States the linearizability checker explored.
    pub linearizability_states: u64,
    /// Whether the linearizability search ran out of budget on some key.
    pub linearizability_inconclusive: bool,
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// What ran.
    pub scenario: Scenario,
    /// What broke.
    pub violations: Vec<Violation>,
    /// What was measured.
    pub stats: Stats,
    /// SHA-256 over every event: equal for two runs of one seed.
    pub trace_hash: Digest,
}

/// Where a frame goes: a replica instance (twins have two) or a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Replica(ReplicaId, usize),
    Client(ClientId),
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: Endpoint,
        to: Target,
        frame: Bytes,
        from_correct: bool,
    },
    EpisodeStart(usize),
    EpisodeEnd(usize),
    Crash(ReplicaId),
    DurableCrash(usize),
    Restart(ReplicaId),
    Heal,
    ByzantineClient,
}

#[derive(Debug)]
struct Scheduled {
    at: Time,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// A Byzantine replica's behaviour.
struct Byzantine {
    adversary: Adversary,
    attack_rate: f64,
    attacks: Vec<Attack>,
    selective_send: f64,
    /// For twins: which instance each other replica talks to.
    sides: BTreeMap<ReplicaId, usize>,
}

struct ReplicaNode {
    /// Running instances: none while crashed, two for a twin.
    instances: Vec<Replica<KvService>>,
    /// Correct replicas are checked; faulty ones (at most f) are not.
    correct: bool,
    byzantine: Option<Byzantine>,
    /// A correct replica's durable storage (faulty ones persist nowhere).
    storage: Option<MemoryWal>,
    /// The requests clients sent it directly, as its driver's verification stage records them
    /// (lost in a crash).
    direct: DirectRequests,
    /// A crash that strikes at this replica's next step.
    armed: Option<CrashPoint>,
    /// The highest batch executed in a step whose records were made durable.
    durable_executed: SeqNum,
}

struct ClientNode {
    client: Client,
    submitted: usize,
    target: usize,
    next_submit: Option<Time>,
    pending: Option<usize>,
    counter: u64,
}

/// A Byzantine client: real key, but it reuses timestamps and sends conflicting requests.
struct ByzantineClient {
    id: ClientId,
    timestamp: u64,
    sent: Vec<Bytes>,
}

/// Storage of faulty replicas: drops records.
struct Discard;

impl Storage for Discard {
    type Error = std::convert::Infallible;
    fn persist(&mut self, _records: &[Record]) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A simulation of one scenario.
pub struct Simulation {
    scenario: Scenario,
    rng: SimRng,
    now: Time,
    order: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    config: Arc<ClusterConfig>,
    verifier: Verifier,
    verified: HashMap<(Principal, Bytes), Result<VerifiedMessage, VerifyError>>,
    network: Network,
    replicas: Vec<ReplicaNode>,
    clients: BTreeMap<ClientId, ClientNode>,
    byzantine_client: Option<ByzantineClient>,
    history: Vec<Operation>,
    checker: Checker,
    stats: Stats,
    trace: Trace,
    liveness: bool,
    heal_at: Time,
}

/// The cluster configuration of a scenario: small limits, so checkpoints, window edges, state
/// transfer and oversized frames are reached quickly.
pub fn cluster_config(scenario: &Scenario) -> ClusterConfig {
    let clients = scenario.clients + u64::from(scenario.byzantine_client);
    let mut config = bft_core::testkit::config(scenario.f, clients);
    let limits = &mut config.limits;
    limits.checkpoint_interval = scenario.checkpoint_interval;
    limits.window = scenario.window;
    limits.max_batch_requests = scenario.max_batch_requests;
    limits.max_operation_bytes = 1024;
    limits.max_reply_bytes = 4096;
    limits.max_batch_bytes = 64 << 10;
    limits.state_chunk_bytes = 512;
    limits.max_future_messages_per_peer = 32;
    limits.max_message_bytes = limits.required_message_bytes(config.replicas.len());
    config
}

impl Simulation {
    /// Sets up `scenario`; `trace` prints every event.
    pub fn new(scenario: Scenario, trace: bool) -> Simulation {
        let config = Arc::new(cluster_config(&scenario));
        let mut rng = SimRng::seed_from_u64(scenario.seed);
        let n = scenario.n();
        let replicas = (0..n as u32)
            .map(ReplicaId)
            .map(|id| {
                let fault = scenario.faulty.get(&id);
                let byzantine = match fault {
                    Some(Fault::Byzantine {
                        twin,
                        attack_rate,
                        attacks,
                        selective_send,
                    }) => Some((
                        *twin,
                        Byzantine {
                            adversary: Adversary::new(config.clone(), id, replica_key(id.0)),
                            attack_rate: *attack_rate,
                            attacks: attacks.clone(),
                            selective_send: *selective_send,
                            sides: (0..n as u32)
                                .map(ReplicaId)
                                .map(|r| (r, usize::from(*twin && chance(&mut rng, 0.5))))
                                .collect(),
                        },
                    )),
                    _ => None,
                };
                let copies = if byzantine.as_ref().is_some_and(|(twin, _)| *twin) {
                    2
                } else {
                    1
                };
                ReplicaNode {
                    instances: (0..copies).map(|_| new_replica(&config, id)).collect(),
                    correct: fault.is_none(),
                    byzantine: byzantine.map(|(_, b)| b),
                    storage: fault.is_none().then(MemoryWal::new),
                    direct: DirectRequests::new(),
                    armed: None,
                    durable_executed: SeqNum(0),
                }
            })
            .collect();
        let clients = (1..=scenario.clients)
            .map(ClientId)
            .map(|id| {
                let client = Client::new(config.clone(), id, client_key(id.0), 1)
                    .expect("the scenario's configuration admits its clients");
                let node = ClientNode {
                    client,
                    submitted: 0,
                    target: scenario.safety_ops,
                    next_submit: Some(Time::ZERO),
                    pending: None,
                    counter: 0,
                };
                (id, node)
            })
            .collect();
        let byzantine_client = scenario.byzantine_client.then(|| ByzantineClient {
            id: ClientId(scenario.clients + 1),
            timestamp: 1,
            sent: Vec::new(),
        });
        let heal_at = Time::ZERO + scenario.safety_phase;
        let mut simulation = Simulation {
            rng,
            now: Time::ZERO,
            order: 0,
            queue: BinaryHeap::new(),
            verifier: Verifier::new(config.clone()).expect("valid configuration"),
            verified: HashMap::new(),
            network: Network::new(scenario.network),
            replicas,
            clients,
            byzantine_client,
            history: Vec::new(),
            checker: Checker::new(&config),
            stats: Stats::default(),
            trace: Trace::new(trace),
            liveness: false,
            heal_at,
            config,
            scenario,
        };
        simulation.schedule_faults();
        for fault in simulation.scenario.faulty.clone().values() {
            let kind = match fault {
                Fault::Byzantine { twin: true, .. } => "byzantine-twin",
                Fault::Byzantine { .. } => "byzantine-replica",
                Fault::Crash { .. } => "crash-faulty-replica",
            };
            simulation.count(kind);
        }
        simulation
    }

    fn schedule(&mut self, at: Time, event: Event) {
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            order: self.order,
            event,
        }));
    }

    fn schedule_faults(&mut self) {
        let start = Time::ZERO;
        for (index, episode) in self.scenario.episodes.clone().into_iter().enumerate() {
            self.schedule(start + episode.start, Event::EpisodeStart(index));
            self.schedule(start + episode.end, Event::EpisodeEnd(index));
        }
        for (id, fault) in self.scenario.faulty.clone() {
            if let Fault::Crash { at, restart_after } = fault {
                self.schedule(start + at, Event::Crash(id));
                if let Some(down) = restart_after {
                    self.schedule(start + at + down, Event::Restart(id));
                }
            }
        }
        if let Some((id, at, down)) = self.scenario.amnesiac {
            self.schedule(start + at, Event::Crash(id));
            self.schedule(start + at + down, Event::Restart(id));
        }
        self.schedule_durable_crashes();
        if self.byzantine_client.is_some() {
            let first = exponential(&mut self.rng, Duration::from_millis(200));
            self.schedule(start + first, Event::ByzantineClient);
        }
        self.schedule(self.heal_at, Event::Heal);
    }

    /// Runs to the end and checks the history.
    pub fn run(mut self) -> RunResult {
        let canary = self.scenario.options.canary;
        plant(canary);
        let outcome = catch_unwind(AssertUnwindSafe(|| self.run_loop()));
        plant(None);
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            self.checker.report(ViolationKind::Panic, self.now, message);
        }
        self.finish()
    }

    fn run_loop(&mut self) {
        let deadline = self.heal_at + self.scenario.liveness_limit;
        loop {
            if self.liveness && self.clients_done() {
                return;
            }
            if self.stats.events >= MAX_EVENTS {
                let detail = format!("{MAX_EVENTS} events without finishing");
                self.checker
                    .report(ViolationKind::Liveness, self.now, detail);
                return;
            }
            let next_event = self.queue.peek().map(|s| s.0.at);
            let next_timer = self.next_timer();
            let Some(next) = [next_event, next_timer].into_iter().flatten().min() else {
                return;
            };
            if next > deadline {
                return;
            }
            self.now = self.now.max(next);
            self.stats.events += 1;
            if next_event.is_some_and(|at| at <= next) {
                let Reverse(scheduled) = self.queue.pop().expect("peeked");
                self.handle(scheduled.event);
            } else {
                self.fire_timers();
            }
        }
    }

    fn clients_done(&self) -> bool {
        self.clients
            .values()
            .all(|c| c.submitted >= c.target && !c.client.is_busy())
    }

    fn next_timer(&self) -> Option<Time> {
        let replicas = self
            .replicas
            .iter()
            .flat_map(|node| node.instances.iter())
            .filter_map(|r| r.poll_timeout());
        let clients = self.clients.values().flat_map(|c| {
            let submit = c
                .next_submit
                .filter(|_| !c.client.is_busy() && c.submitted < c.target);
            [c.client.poll_timeout(), submit]
        });
        replicas.chain(clients.flatten()).min()
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        for index in 0..self.replicas.len() {
            for instance in 0..self.replicas[index].instances.len() {
                let due = self.replicas[index].instances[instance]
                    .poll_timeout()
                    .is_some_and(|t| t <= now);
                if due {
                    let id = ReplicaId(index as u32);
                    self.trace.tick(now, Endpoint::Replica(id), instance);
                    self.step_replica(id, instance, Input::Tick);
                    let still_due = self.replicas[index]
                        .instances
                        .get(instance)
                        .and_then(|r| r.poll_timeout())
                        .is_some_and(|t| t <= now);
                    if still_due && self.replicas[index].correct {
                        let detail = format!("replica {id}'s deadline did not move past {now:?}");
                        self.checker.report(ViolationKind::Liveness, now, detail);
                        self.stats.events = MAX_EVENTS;
                    }
                }
            }
        }
        let ids: Vec<ClientId> = self.clients.keys().copied().collect();
        for id in ids {
            let node = self.clients.get_mut(&id).expect("exists");
            if node.client.poll_timeout().is_some_and(|t| t <= now) {
                self.trace.tick(now, Endpoint::Client(id), 0);
                let actions = node.client.step(now, ClientInput::Tick);
                self.route_client(id, actions.send);
            }
            let node = self.clients.get_mut(&id).expect("exists");
            let submit_due = node.next_submit.is_some_and(|t| t <= now);
            if submit_due && !node.client.is_busy() && node.submitted < node.target {
                self.submit(id);
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver {
                from,
                to,
                frame,
                from_correct,
            } => self.deliver(from, to, frame, from_correct),
            Event::EpisodeStart(index) => {
                if !self.liveness {
                    let kind = self.scenario.episodes[index].kind.clone();
                    self.count(kind.name());
                    self.trace
                        .note(self.now, &format!("episode {index} starts: {kind:?}"));
                    self.network.start(index, kind);
                }
            }
            Event::EpisodeEnd(index) => {
                self.trace.note(self.now, &format!("episode {index} heals"));
                self.network.end(index);
            }
            Event::Crash(id) => {
                let node = &mut self.replicas[id.0 as usize];
                if !node.instances.is_empty() && !self.liveness {
                    node.instances.clear();
                    node.direct = DirectRequests::new();
                    self.count("crash");
                    self.trace.note(self.now, &format!("replica {id} crashes"));
                }
            }
            Event::DurableCrash(index) => self.durable_crash(index),
            Event::Restart(id) => self.restart(id),
            Event::Heal => self.heal(),
            Event::ByzantineClient => self.byzantine_client_acts(),
        }
    }

    /// The liveness phase: the network heals, crashed replicas come back, and every client must
    /// finish `liveness_ops` more operations within the bound.
    fn heal(&mut self) {
        self.liveness = true;
        self.network.heal_all();
        self.trace.note(self.now, "faults heal: liveness phase");
        for index in 0..self.replicas.len() {
            // A crash armed for a replica's next step belongs to the safety phase.
            self.replicas[index].armed = None;
            self.restart(ReplicaId(index as u32));
        }
        let now = self.now;
        let extra = self.scenario.liveness_ops;
        for node in self.clients.values_mut() {
            // The operation in flight, if any, and `extra` more.
            node.target = node.submitted + usize::from(node.client.is_busy()) + extra;
            node.next_submit = Some(now);
        }
    }

    fn count(&mut self, fault: &'static str) {
        *self.stats.faults.entry(fault).or_default() += 1;
    }

    fn finish(mut self) -> RunResult {
        let now = self.now;
        if self.liveness && self.clients_done() {
            self.stats.recovery_time = Some(now.saturating_since(self.heal_at));
        }
        if !self.clients_done() {
            let clients: Vec<String> = self
                .clients
                .iter()
                .map(|(id, c)| format!("client {id}: {}/{} done", c.submitted, c.target))
                .collect();
            let replicas: Vec<String> = self
                .replicas
                .iter()
                .flat_map(|node| node.instances.iter())
                .map(|r| {
                    let s = r.status();
                    format!(
                        "replica {} view {} {:?} executed {} h {}",
                        s.id, s.view.0, s.phase, s.last_executed.0, s.low_watermark.0
                    )
                })
                .collect();
            let detail = format!(
                "not done {:?} after the faults healed at {:?}: {}; {}",
                now.saturating_since(self.heal_at),
                self.heal_at,
                clients.join(", "),
                replicas.join(", ")
            );
            self.checker.report(ViolationKind::Liveness, now, detail);
        }
        match linearizability::check_with_budget(&self.history, LINEARIZABILITY_BUDGET) {
            Ok(stats) => self.stats.linearizability_states = stats.states_explored,
            Err(CheckError::Violation(violation)) => {
                let detail = violation.to_string();
                self.checker
                    .report(ViolationKind::Linearizability, now, detail);
            }
            Err(CheckError::BudgetExhausted { .. }) => {
                self.stats.linearizability_inconclusive = true;
            }
        }
        for node in self.replicas.iter().filter(|n| n.correct) {
            for replica in &node.instances {
                let metrics = replica.metrics();
                self.stats.view_changes += metrics.view_changes_completed;
                self.stats.state_transfers += metrics.state_transfers_completed;
                self.stats.max_view = self.stats.max_view.max(replica.view().0);
            }
        }
        self.stats.executions_checked = self.checker.executions_checked;
        self.stats.virtual_time = now.saturating_since(Time::ZERO);
        RunResult {
            violations: self.checker.violations().to_vec(),
            stats: self.stats,
            trace_hash: self.trace.finish(),
            scenario: self.scenario,
        }
    }
}

fn new_replica(config: &Arc<ClusterConfig>, id: ReplicaId) -> Replica<KvService> {
    Replica::new(config.clone(), id, replica_key(id.0), KvService::default())
        .expect("the scenario's configuration is valid")
}

fn to_endpoint(target: Target) -> Endpoint {
    match target {
        Target::Replica(id, _) => Endpoint::Replica(id),
        Target::Client(id) => Endpoint::Client(id),
    }
}

/// Plants the scenario's bug in bft-core for this thread (checked available when the options
/// were parsed).
fn plant(canary: Option<Canary>) {
    let bug = match canary {
        Some(Canary::Core(bug)) => Some(bug),
        _ => None,
    };
    bft_core::planted::plant(bug).expect("bft-core was built with the `planted-bugs` feature");
}

/// Runs the scenario of `seed` under `options`.
pub fn run_seed(seed: u64, options: &crate::scenario::Options, trace: bool) -> RunResult {
    let scenario = Scenario::generate(seed, options);
    if trace {
        print!("{scenario}");
    }
    Simulation::new(scenario, trace).run()
}
