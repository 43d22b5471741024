//! The cost of ordering one batch through the normal case in memory (no network, no disk): the
//! replicas of an n = 4 or n = 7 cluster take a batch of 1 or 64 client requests of 64 B through
//! pre-prepare, prepare, commit and execution, and the clients collect f+1 matching replies.
//!
//! The cluster persists across iterations, and each iteration orders a fresh batch, so
//! checkpoints (every 128 batches, the default interval) and garbage collection happen as in a
//! long run. After each configuration the batches ordered, stable checkpoints and replica
//! rejections (late votes for slots a checkpoint collected) are printed, so a run shows how many
//! checkpoints fell in it.
//!
//! The harness mirrors the verification stage of `bft-net`'s driver, each frame paired with the
//! node it came from as the principal of its authenticated channel. Clients multicast each
//! request to every replica. A replica first admits the frames its clients sent it with
//! [`Verifier::admit_direct`], into its own [`DirectRequests`] record: at a backup the first copy
//! of a request is only recorded (neither verified nor stepped), while the primary, and any
//! replica receiving a retransmission, verifies it. Every remaining frame goes through
//! [`Verifier::verify_batch_at`] (chunks of 32 frames, as the driver's verification stage), so
//! prepares and commits that arrive on their signer's channel are accepted without a signature
//! check, and a pre-prepare's embedded requests that their clients sent this replica directly
//! are not checked again. The verified messages are stepped one by one and their actions
//! absorbed (group commit), persisted to a [`MemoryStorage`], then sent; due timers are ticked.
//! Replies are unsigned: clients accept them with [`Verifier::verify_from`], authenticated by the
//! channel of the replica that sent them, as `bft-net`'s client does. Delivery is in synchronous
//! rounds: in each round every node takes everything sent to it in the previous round.
//!
//! To get full batches the primary keeps one batch in flight (`max_in_flight_batches = 1`): the
//! requests of batch k+1 are submitted while batch k is in flight, queue at the primary, and form
//! one batch when batch k executes there. One iteration submits batch k+1's requests and runs
//! rounds until every replica has executed batch k and batch k's clients hold f+1 replies. In the
//! steady state that is exactly one batch's work: b client requests signed and sent to all n
//! replicas, their signatures checked by the primary and their first copies recorded by the
//! n - 1 backups; one pre-prepare signed and its signature checked by every backup, which finds
//! the embedded requests in its record (they reached it a round before the pre-prepare); n - 1
//! prepares and n commits signed, multicast and accepted by the channel, each replica then
//! checking only as many prepare signatures as prepared needs (a backup's own prepare counts
//! without one) and no commit signature (commits are checked only to be relayed); b requests
//! executed by every replica; and n × b unsigned replies sent and accepted by the channel.
//!
//! Two measurements per configuration, with the batch as the iteration and its requests as
//! throughput elements (so criterion's `elem/s` is requests per second):
//!
//! - `replicas`: the time spent in the replicas' part (verification of their inbound frames,
//!   stepping, persisting, routing), i.e. the cluster's total replica CPU per batch;
//! - `end_to_end`: all of it, including the clients signing their requests and accepting every
//!   reply.
//!
//! Run with `cargo bench -p benches --bench core_batch` (add a filter, e.g. `-- n7`, to run a
//! subset). The whole file runs for about a minute, plus the build.

use bft_core::testkit::service::LogService;
use bft_core::testkit::{self, Envelope, Node, client_key, replica_key};
use bft_core::{
    Actions, Client, ClientId, ClientInput, Destination, DirectAdmission, DirectRequests, Input,
    MemoryStorage, Outgoing, Principal, Replica, ReplicaId, Time, Verifier,
};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames per `verify_batch_at` call, as `bft-net`'s driver (`VERIFY_CHUNK`).
const VERIFY_CHUNK: usize = 32;
/// Virtual time per delivery round (every timeout is hundreds of milliseconds).
const ROUND: Duration = Duration::from_micros(50);
/// Operation size.
const OPERATION_BYTES: usize = 64;
/// Iterations run before measuring, so that the batches measured are full.
const WARM_UP_BATCHES: usize = 3;

/// An in-memory cluster that orders one batch per [`Harness::order_batch`].
struct Harness {
    batch: usize,
    now: Time,
    verifier: Verifier,
    replicas: Vec<Replica<LogService>>,
    storage: Vec<MemoryStorage>,
    /// The requests each replica's clients sent it directly, as the driver's verification stage
    /// keeps them.
    direct: Vec<DirectRequests>,
    /// Client `ClientId(i + 1)` is `clients[i]`: two groups of `batch` clients that take turns,
    /// and one more that starts the pipeline.
    clients: Vec<Client>,
    /// Frames sent to each replica and client in the current round.
    replica_inbox: Vec<Vec<Envelope>>,
    client_inbox: Vec<Vec<Envelope>>,
    /// The clients whose requests form the batch in flight.
    in_flight: Range<usize>,
    /// The group that submits next (0 or 1).
    next_group: usize,
    /// Operations submitted so far (makes every operation distinct).
    submitted: u64,
    /// Time spent in the replicas' part.
    replica_time: Duration,
    /// Rejections the replicas reported, by reason (late votes after a checkpoint are normal).
    rejections: BTreeMap<&'static str, u64>,
    /// Replica 0's batches and requests executed when the warm-up ended.
    baseline: (u64, u64),
}

impl Harness {
    /// A cluster of `n` replicas ordering batches of `batch` requests, warmed up.
    fn new(n: usize, batch: usize) -> Harness {
        let f = (n - 1) / 3;
        let mut config = testkit::config(f, 2 * batch as u64 + 1);
        config.limits.max_in_flight_batches = 1;
        let config = Arc::new(config);
        let replicas = config
            .replica_ids()
            .map(|id| {
                Replica::new(config.clone(), id, replica_key(id.0), LogService::default())
                    .expect("valid replica")
            })
            .collect();
        let clients = config
            .clients
            .keys()
            .map(|&id| Client::new(config.clone(), id, client_key(id.0), 1).expect("valid client"))
            .collect::<Vec<_>>();
        let mut harness = Harness {
            batch,
            now: Time::ZERO,
            verifier: Verifier::new(config.clone()).expect("valid configuration"),
            replicas,
            storage: vec![MemoryStorage::default(); n],
            direct: vec![DirectRequests::new(); n],
            replica_inbox: vec![Vec::new(); n],
            client_inbox: vec![Vec::new(); clients.len()],
            clients,
            in_flight: 2 * batch..2 * batch + 1,
            next_group: 0,
            submitted: 0,
            replica_time: Duration::ZERO,
            rejections: BTreeMap::new(),
            baseline: (0, 0),
        };
        // Start the pipeline: one request, proposed alone, is the batch in flight.
        harness.submit(harness.in_flight.clone());
        harness.round();
        assert_eq!(harness.replicas[0].metrics().batches_proposed, 1);
        for _ in 0..WARM_UP_BATCHES {
            harness.order_batch();
        }
        let metrics = harness.replicas[0].metrics();
        harness.baseline = (metrics.batches_executed, metrics.requests_executed);
        harness
    }

    /// Submits one request from each client in `clients`.
    fn submit(&mut self, clients: Range<usize>) {
        for i in clients {
            self.submitted += 1;
            let mut operation = vec![0u8; OPERATION_BYTES];
            operation[..8].copy_from_slice(&self.submitted.to_le_bytes());
            let actions = self.clients[i]
                .submit(self.now, operation)
                .expect("the client is idle");
            self.route(Node::Client(ClientId(i as u64 + 1)), actions.send);
        }
    }

    /// Submits the next batch's requests, then delivers until the batch in flight has executed
    /// on every replica and its clients have completed. Returns the time the replicas spent.
    fn order_batch(&mut self) -> Duration {
        let replica_time = self.replica_time;
        let target = self.replicas[0].metrics().batches_proposed;
        let group = self.next_group * self.batch..(self.next_group + 1) * self.batch;
        self.next_group ^= 1;
        self.submit(group.clone());
        let previous = std::mem::replace(&mut self.in_flight, group);
        while !(self
            .replicas
            .iter()
            .all(|r| r.metrics().batches_executed >= target)
            && self.clients[previous.clone()].iter().all(|c| !c.is_busy()))
        {
            assert!(self.round(), "the cluster stalled");
        }
        self.replica_time - replica_time
    }

    /// Checks that every batch since the warm-up held exactly `batch` requests.
    fn check_full_batches(&self) {
        let metrics = self.replicas[0].metrics();
        let batches = metrics.batches_executed - self.baseline.0;
        let requests = metrics.requests_executed - self.baseline.1;
        assert_eq!(
            requests,
            batches * self.batch as u64,
            "batches were not full"
        );
    }

    /// One delivery round; false if nothing was delivered or ticked.
    fn round(&mut self) -> bool {
        self.now = self.now + ROUND;
        let now = self.now;
        let replica_inbox = std::mem::replace(
            &mut self.replica_inbox,
            vec![Vec::new(); self.replicas.len()],
        );
        let client_inbox =
            std::mem::replace(&mut self.client_inbox, vec![Vec::new(); self.clients.len()]);
        let mut active = false;
        for (i, inbox) in replica_inbox.into_iter().enumerate() {
            let due = self.replicas[i].poll_timeout().is_some_and(|t| t <= now);
            if inbox.is_empty() && !due {
                continue;
            }
            active = true;
            let started = Instant::now();
            let replica = &mut self.replicas[i];
            let mut actions = if due {
                replica.step(now, Input::Tick)
            } else {
                Actions::default()
            };
            // Clients' direct requests are admitted first, so that a pre-prepare in the same
            // round finds them; a backup only records a first copy.
            let direct = &mut self.direct[i];
            let is_primary = replica.is_primary();
            let mut frames = Vec::with_capacity(inbox.len());
            for Envelope { from, frame, .. } in inbox {
                if let Node::Client(client) = from {
                    let admitted = self
                        .verifier
                        .admit_direct(direct, client, &frame, is_primary)
                        .expect("every request is admitted");
                    if admitted.admission == DirectAdmission::Recorded {
                        continue;
                    }
                }
                frames.push((from.principal(), frame));
            }
            let mut frames = frames.into_iter();
            loop {
                let chunk: Vec<_> = frames.by_ref().take(VERIFY_CHUNK).collect();
                if chunk.is_empty() {
                    break;
                }
                let peers: Vec<Principal> = chunk.iter().map(|(peer, _)| *peer).collect();
                let results = self.verifier.verify_batch_at(chunk, direct);
                for (peer, result) in peers.into_iter().zip(results) {
                    let message = result.expect("every frame verifies");
                    if let Principal::Client(_) = peer {
                        assert_eq!(message.sender(), peer, "frames from a client are its own");
                    }
                    actions.absorb(replica.step(now, Input::Message(message)));
                }
            }
            for rejected in &actions.rejected {
                *self.rejections.entry(rejected.reason.label()).or_default() += 1;
            }
            let Ok(outgoing) = actions.persist_then_send(&mut self.storage[i]);
            self.route(Node::Replica(ReplicaId(i as u32)), outgoing);
            self.replica_time += started.elapsed();
        }
        for (i, inbox) in client_inbox.into_iter().enumerate() {
            if inbox.is_empty() {
                continue;
            }
            active = true;
            let client = &mut self.clients[i];
            let mut send = Vec::new();
            for Envelope { from, frame, .. } in inbox {
                let message = self
                    .verifier
                    .verify_from(from.principal(), frame)
                    .expect("every reply verifies");
                let actions = client.step(now, ClientInput::Message(message));
                send.extend(actions.send);
            }
            self.route(Node::Client(ClientId(i as u64 + 1)), send);
        }
        active
    }

    fn route(&mut self, from: Node, outgoing: Vec<Outgoing>) {
        for Outgoing { to, frame } in outgoing {
            let mut deliver = |to: Node, frame| {
                let inbox = match to {
                    Node::Replica(r) => &mut self.replica_inbox[r.0 as usize],
                    Node::Client(c) => &mut self.client_inbox[c.0 as usize - 1],
                };
                inbox.push(Envelope { from, to, frame });
            };
            match to {
                Destination::Replica(r) => deliver(Node::Replica(r), frame),
                Destination::Client(c) => deliver(Node::Client(c), frame),
                Destination::OtherReplicas => {
                    for r in 0..self.replicas.len() as u32 {
                        if from != Node::Replica(ReplicaId(r)) {
                            deliver(Node::Replica(ReplicaId(r)), frame.clone());
                        }
                    }
                }
            }
        }
    }
}

fn core_batch(c: &mut Criterion) {
    for n in [4, 7] {
        let mut group = c.benchmark_group(format!("core_batch_n{n}"));
        for batch in [1, 64] {
            group.throughput(Throughput::Elements(batch as u64));
            // Built on first use, so that a filter that skips a benchmark skips its setup.
            let mut replicas = None;
            group.bench_function(BenchmarkId::new("replicas", batch), |b| {
                let harness = replicas.get_or_insert_with(|| Harness::new(n, batch));
                b.iter_custom(|iters| {
                    let spent = (0..iters).map(|_| harness.order_batch()).sum();
                    harness.check_full_batches();
                    spent
                })
            });
            let mut end_to_end = None;
            group.bench_function(BenchmarkId::new("end_to_end", batch), |b| {
                let harness = end_to_end.get_or_insert_with(|| Harness::new(n, batch));
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    for _ in 0..iters {
                        harness.order_batch();
                    }
                    let spent = started.elapsed();
                    harness.check_full_batches();
                    spent
                })
            });
            for (name, harness) in [("replicas", replicas), ("end_to_end", end_to_end)] {
                if let Some(harness) = harness {
                    eprintln!("n = {n}, batch = {batch}, {name}: {}", summary(&harness));
                }
            }
        }
        group.finish();
    }
}

/// What a harness did: batches, stable checkpoints, rejections by reason.
fn summary(harness: &Harness) -> String {
    let metrics = harness.replicas[0].metrics();
    format!(
        "{} batches, {} stable checkpoints, rejections {:?}",
        metrics.batches_executed, metrics.checkpoints_stable, harness.rejections
    )
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
}

fn main() {
    let mut criterion = config().configure_from_args();
    core_batch(&mut criterion);
    criterion.final_summary();
}
