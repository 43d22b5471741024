//! Safety checkers, run on every step of every correct replica (after TigerBeetle's
//! `state_checker.zig`): agreement on what each sequence number holds, equal checkpoint digests,
//! exactly-once execution of signed requests only, no conflicting signatures, bounded memory.

use bft_core::{
    ClientId, ClusterConfig, Executed, MessageKind, ReplicaId, SeqNum, SignedRecord, Status, Time,
    View,
};
use bft_crypto::{Digest, sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Violations kept with their details per run (the rest are only counted).
pub const MAX_KEPT: usize = 20;

/// A broken guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee.
    pub kind: ViolationKind,
    /// When it was seen (virtual time).
    pub at: Time,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            out,
            "[{}] at {:?}: {}",
            self.kind.name(),
            self.at,
            self.detail
        )
    }
}

/// The guarantees the simulator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// Two correct replicas executed different batches at one sequence number.
    Agreement,
    /// Two correct replicas signed different checkpoint digests for one sequence number.
    CheckpointDigest,
    /// A correct replica executed a request twice.
    ExecutedTwice,
    /// A correct replica executed a request no client signed.
    UnsignedRequest,
    /// A correct replica signed two conflicting messages for one (view, sequence, phase).
    ConflictingSignatures,
    /// A correct replica held more than its limits allow.
    Unbounded,
    /// A frame a correct node sent was refused by the verifier.
    RefusedCorrectFrame,
    /// A correct replica or client panicked.
    Panic,
    /// Requests did not complete within the bound after the faults healed.
    Liveness,
    /// The clients' history is not linearizable.
    Linearizability,
    /// A correct replica could not be recovered from what it persisted, or recovered to less
    /// than it had made durable.
    Recovery,
}

impl ViolationKind {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Agreement => "agreement",
            ViolationKind::CheckpointDigest => "checkpoint-digest",
            ViolationKind::ExecutedTwice => "executed-twice",
            ViolationKind::UnsignedRequest => "unsigned-request",
            ViolationKind::ConflictingSignatures => "conflicting-signatures",
            ViolationKind::Unbounded => "unbounded",
            ViolationKind::RefusedCorrectFrame => "refused-correct-frame",
            ViolationKind::Panic => "panic",
            ViolationKind::Liveness => "liveness",
            ViolationKind::Linearizability => "linearizability",
            ViolationKind::Recovery => "recovery",
        }
    }
}

/// What a replica may hold at most, from the configuration.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    slots: usize,
    votes: usize,
    checkpoint_votes: usize,
    checkpoint_states: usize,
    clients: usize,
    queued: usize,
    view_changes: usize,
    future: usize,
}

impl Bounds {
    fn of(config: &ClusterConfig) -> Bounds {
        let n = config.n();
        let window = config.limits.window as usize;
        let checkpoints_in_window = window / config.limits.checkpoint_interval as usize + 1;
        Bounds {
            slots: window,
            votes: window * n,
            checkpoint_votes: n * checkpoints_in_window,
            checkpoint_states: checkpoints_in_window + 1,
            clients: config.clients.len(),
            queued: config.clients.len(),
            view_changes: n,
            future: n * config.limits.max_future_messages_per_peer,
        }
    }
}

/// What a signature binds: kind, view (zero for checkpoints) and sequence number (zero for
/// VIEW-CHANGE and NEW-VIEW, which a replica signs once per view).
type SignedKey = (ReplicaId, u8, View, SeqNum);

/// The checkers' state over one run.
#[derive(Debug)]
pub struct Checker {
    bounds: Bounds,
    /// The batch digest first executed at each sequence number, and by whom.
    committed: BTreeMap<SeqNum, (Digest, ReplicaId)>,
    /// The checkpoint digest first signed at each sequence number, and by whom.
    checkpoints: BTreeMap<SeqNum, (Digest, ReplicaId)>,
    /// What each correct replica signed.
    signed: BTreeMap<SignedKey, Digest>,
    /// Requests each correct replica executed, in its current incarnation.
    executed: BTreeMap<ReplicaId, BTreeSet<(ClientId, u64)>>,
    /// Digests of every request a client signed.
    client_signed: BTreeSet<Digest>,
    violations: Vec<Violation>,
    counts: BTreeMap<ViolationKind, u64>,
    /// Executions checked.
    pub executions_checked: u64,
}

impl Checker {
    /// A checker for a cluster with `config`.
    pub fn new(config: &ClusterConfig) -> Checker {
        Checker {
            bounds: Bounds::of(config),
            committed: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            signed: BTreeMap::new(),
            executed: BTreeMap::new(),
            client_signed: BTreeSet::new(),
            violations: Vec::new(),
            counts: BTreeMap::new(),
            executions_checked: 0,
        }
    }

    /// Violations so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Violations seen, by kind (including those not kept).
    pub fn counts(&self) -> &BTreeMap<ViolationKind, u64> {
        &self.counts
    }

    /// Records a violation (the first [`MAX_KEPT`] are kept with their details).
    pub fn report(&mut self, kind: ViolationKind, at: Time, detail: String) {
        *self.counts.entry(kind).or_default() += 1;
        if self.violations.len() < MAX_KEPT {
            self.violations.push(Violation { kind, at, detail });
        }
    }

    /// A client (correct or Byzantine) signed a request with this digest.
    pub fn client_signed(&mut self, request: Digest) {
        self.client_signed.insert(request);
    }

    /// A correct replica restarted without its memory: its executions start over.
    pub fn restarted(&mut self, replica: ReplicaId) {
        self.executed.remove(&replica);
    }

    /// Checks what a correct replica signed in one step: never two different messages for one
    /// (view, sequence number, kind).
    pub fn on_signed(&mut self, at: Time, replica: ReplicaId, records: &[SignedRecord]) {
        for record in records {
            let (seq, digest) = match record.kind {
                MessageKind::ViewChange | MessageKind::NewView => {
                    (SeqNum(0), sha256(&record.frame))
                }
                _ => (record.seq, record.digest),
            };
            let key = (replica, record.kind.code(), record.view, seq);
            match self.signed.get(&key) {
                Some(previous) if *previous != digest => self.report(
                    ViolationKind::ConflictingSignatures,
                    at,
                    format!(
                        "replica {replica} signed two {:?} for view {} seq {}",
                        record.kind, record.view.0, record.seq.0
                    ),
                ),
                Some(_) => {}
                None => {
                    self.signed.insert(key, digest);
                }
            }
            if record.kind == MessageKind::Checkpoint {
                match self.checkpoints.get(&record.seq) {
                    Some((first, by)) if *first != record.digest => self.report(
                        ViolationKind::CheckpointDigest,
                        at,
                        format!(
                            "replicas {by} and {replica} signed different checkpoint digests at seq {}",
                            record.seq.0
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        self.checkpoints.insert(record.seq, (record.digest, replica));
                    }
                }
            }
        }
    }

    /// Checks the batches and requests a correct replica executed in one step.
    pub fn on_executed(
        &mut self,
        at: Time,
        replica: ReplicaId,
        batches: &[(SeqNum, Digest)],
        requests: &[Executed],
    ) {
        for &(seq, digest) in batches {
            match self.committed.get(&seq) {
                Some((first, by)) if *first != digest => self.report(
                    ViolationKind::Agreement,
                    at,
                    format!(
                        "replicas {by} and {replica} executed different batches at seq {}",
                        seq.0
                    ),
                ),
                Some(_) => {}
                None => {
                    self.committed.insert(seq, (digest, replica));
                }
            }
        }
        for executed in requests {
            self.executions_checked += 1;
            if !self.client_signed.contains(&executed.request) {
                self.report(
                    ViolationKind::UnsignedRequest,
                    at,
                    format!(
                        "replica {replica} executed a request of client {} (timestamp {}) that no client signed",
                        executed.client, executed.timestamp
                    ),
                );
            }
            let key = (executed.client, executed.timestamp);
            if !self.executed.entry(replica).or_default().insert(key) {
                self.report(
                    ViolationKind::ExecutedTwice,
                    at,
                    format!(
                        "replica {replica} executed request {} of client {} twice",
                        executed.timestamp, executed.client
                    ),
                );
            }
        }
    }

    /// Checks a correct replica's holdings against its limits.
    pub fn on_status(&mut self, at: Time, status: &Status) {
        let b = self.bounds;
        let checks = [
            ("log slots", status.log_slots, b.slots),
            ("pre-prepares", status.pre_prepares_held, b.slots),
            ("prepares", status.prepares_held, b.votes),
            ("commits", status.commits_held, b.votes),
            ("queued requests", status.queued_requests, b.queued),
            ("client records", status.client_records, b.clients),
            (
                "checkpoint votes",
                status.checkpoint_votes_held,
                b.checkpoint_votes,
            ),
            (
                "checkpoint states",
                status.checkpoint_states_held,
                b.checkpoint_states,
            ),
            ("view changes", status.view_changes_held, b.view_changes),
            (
                "prepared certificates",
                status.prepared_certificates_held,
                b.slots,
            ),
            ("future messages", status.future_messages_held, b.future),
        ];
        for (what, held, bound) in checks {
            if held > bound {
                self.report(
                    ViolationKind::Unbounded,
                    at,
                    format!("replica {} holds {held} {what} (bound {bound})", status.id),
                );
            }
        }
    }
}
