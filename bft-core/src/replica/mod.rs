//! The sans-IO replica, split by protocol section:
//!
//! - `normal_case.rs`: client requests, pre-prepare, prepare, commit, batching (PBFT OSDI'99
//!   sections 4.1 and 4.2; TOCS 2002 section 5.1);
//! - `execution.rs`: execution in sequence order, replies, the last-reply cache;
//! - `checkpoints.rs`: checkpoints and garbage collection (section 4.3);
//! - `state_transfer.rs`: fetching a certified checkpoint's state in chunks (TOCS section 6);
//! - `catch_up.rs`: fetching committed batches with their commit certificates (TOCS section 6);
//! - `retransmit.rs`: re-sending votes of slots that stay uncommitted (TOCS section 5.2);
//! - `view_change.rs` and `new_view.rs`: view change (section 4.4; TOCS section 4.5);
//! - `log.rs`, `requests.rs`, `actions.rs`, `rejection.rs`: the log, per-client records, a step's
//!   effects, and refusal reasons.

mod actions;
mod catch_up;
mod checkpoints;
mod execution;
mod log;
mod new_view;
mod normal_case;
mod recovery;
mod rejection;
mod requests;
mod retransmit;
mod state_transfer;
mod view_change;

pub use actions::{
    Actions, Destination, DurableCheckpoint, Executed, MemoryStorage, Outgoing, Record, Rejected,
    SignedRecord, StableState, Storage,
};
pub use checkpoints::StableCertificate;
pub use recovery::{RecoveryError, RecoveryReport};
pub use rejection::Rejection;
pub use view_change::Phase;

use crate::codec::{FrameRef, Header};
use crate::config::{ClusterConfig, ConfigError};
use crate::ids::ClientId;
use crate::ids::{Principal, ReplicaId, SeqNum, Time, View};
use crate::messages::{MessageKind, PrePrepare, WireMessage};
use crate::service::Service;
use crate::verify::{Verified, VerifiedMessage, Verifier};
use bft_crypto::{Digest, KeyPair, sha256};
use bytes::Bytes;
use catch_up::{CatchUp, StoredCommit};
use checkpoints::{CheckpointVotes, StoredCheckpoint};
use log::Log;
use requests::{ClientTable, RequestQueue};
use state_transfer::Transfer;
use std::collections::BTreeMap;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use view_change::StoredPrepared;

/// An input to [`Replica::step`].
#[derive(Debug, Clone)]
pub enum Input {
    /// A message that passed [`crate::Verifier`]: a client request or a replica's message.
    Message(VerifiedMessage),
    /// The deadline from [`Replica::poll_timeout`] has passed (spurious ticks are harmless).
    Tick,
}

/// Counters a driver can export.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Refused messages, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Batches this replica proposed as primary.
    pub batches_proposed: u64,
    /// Batches executed.
    pub batches_executed: u64,
    /// Requests executed (duplicates inside batches are skipped, not counted).
    pub requests_executed: u64,
    /// Retransmitted requests answered from the last-reply cache.
    pub replies_from_cache: u64,
    /// Checkpoints taken.
    pub checkpoints_taken: u64,
    /// Checkpoints that became stable here.
    pub checkpoints_stable: u64,
    /// Checkpoints whose state had more chunks than a manifest can list (peers cannot fetch it).
    pub oversized_checkpoints: u64,
    /// State transfers started.
    pub state_transfers_started: u64,
    /// State transfers completed.
    pub state_transfers_completed: u64,
    /// Manifests or chunks from peers that did not match the certified digest.
    pub bad_state_served: u64,
    /// Fetched states the service could not restore.
    pub state_restore_failures: u64,
    /// Manifests and chunks served to peers.
    pub state_fetches_served: u64,
    /// Fetches of committed batches started (after state transfer, or to fill a gap).
    pub catch_ups_started: u64,
    /// Committed batches installed from a peer's commit certificate.
    pub committed_batches_installed: u64,
    /// Committed batches served to peers.
    pub committed_batches_served: u64,
    /// Prepares and commits that only their sender's channel authenticated and whose signature
    /// failed when this replica checked it, before counting it toward prepared or relaying it in
    /// a certificate (each was dropped there: the sender is Byzantine).
    pub votes_with_bad_signatures: u64,
    /// Moves to a higher view: by sending a VIEW-CHANGE, or by accepting a NEW-VIEW for a view
    /// above the current one.
    pub view_changes_started: u64,
    /// New views installed (by NEW-VIEW).
    pub view_changes_completed: u64,
    /// View changes started because f+1 replicas were seen in a later view.
    pub rejoins: u64,
    /// Stable checkpoint proofs sent to replicas that asked for discarded state or batches.
    pub stable_proofs_sent: u64,
    /// Own pre-prepares, prepares and commits re-sent for slots that stayed uncommitted.
    pub votes_resent: u64,
}

/// A summary of what the replica holds, for tests and monitoring. Two equal statuses around a
/// step, with no effects, mean the step changed nothing observable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: ReplicaId,
    /// The current view.
    pub view: View,
    /// The low watermark h.
    pub low_watermark: SeqNum,
    /// The last sequence number executed.
    pub last_executed: SeqNum,
    /// The last sequence number assigned (meaningful on the primary).
    pub last_assigned: SeqNum,
    /// Slots in the log.
    pub log_slots: usize,
    /// Pre-prepares held.
    pub pre_prepares_held: usize,
    /// Prepares held, over all slots.
    pub prepares_held: usize,
    /// Commits held, over all slots.
    pub commits_held: usize,
    /// Requests queued at the primary.
    pub queued_requests: usize,
    /// Clients with a record (last timestamp and reply).
    pub client_records: usize,
    /// CHECKPOINT messages held.
    pub checkpoint_votes_held: usize,
    /// Checkpoint states held (the stable one and newer ones).
    pub checkpoint_states_held: usize,
    /// The checkpoint being fetched by state transfer, if any.
    pub fetching_state: Option<SeqNum>,
    /// Normal case or waiting for a NEW-VIEW.
    pub phase: Phase,
    /// VIEW-CHANGE messages held (at most one per replica).
    pub view_changes_held: usize,
    /// Prepared certificates held.
    pub prepared_certificates_held: usize,
    /// Normal-case messages buffered for views not entered yet.
    pub future_messages_held: usize,
    /// Digest of the service state.
    pub service_digest: Digest,
}

/// A PBFT replica: a plain struct stepped with the current time and one input at a time.
pub struct Replica<S: Service> {
    config: Arc<ClusterConfig>,
    /// Checks the signatures of messages only their channel authenticated before this replica
    /// relays them (commits in a committed batch's certificate).
    verifier: Verifier,
    id: ReplicaId,
    key: KeyPair,
    service: S,
    view: View,
    /// h: the sequence number of the last stable checkpoint.
    low_watermark: SeqNum,
    last_executed: SeqNum,
    /// The last sequence number this replica assigned as primary.
    last_assigned: SeqNum,
    log: Log,
    clients: ClientTable,
    queue: RequestQueue,
    /// States of checkpoints at or above h (the stable one is kept to serve state transfer).
    own_checkpoints: BTreeMap<SeqNum, StoredCheckpoint>,
    checkpoint_votes: CheckpointVotes,
    stable: Option<StableCertificate>,
    transfer: Option<Transfer>,
    catch_up: Option<CatchUp>,
    /// The peer the last fetch of committed batches started with.
    catch_up_cursor: ReplicaId,
    /// Commit certificates for sequence numbers above the stable checkpoint, across views.
    commit_certificates: BTreeMap<SeqNum, StoredCommit>,
    /// Normal case, or waiting for the NEW-VIEW of `view`.
    phase: Phase,
    /// In the normal case, the request timer of a backup; while view-changing, the NEW-VIEW timer.
    view_timer: Option<Time>,
    view_change_resend_at: Option<Time>,
    /// Consecutive view changes without progress: the timeout is doubled this many times.
    backoff: u32,
    /// Clients whose relayed requests this backup waits to see executed.
    waiting: BTreeSet<ClientId>,
    /// The latest valid VIEW-CHANGE from each replica (this one's included).
    view_changes: BTreeMap<ReplicaId, Verified<crate::messages::ViewChange>>,
    /// The highest-view prepared certificate per sequence number above the stable checkpoint.
    prepared: BTreeMap<SeqNum, StoredPrepared>,
    /// The NEW-VIEW that installed the current view (re-sent to replicas that missed it).
    new_view_frame: Option<Bytes>,
    /// That NEW-VIEW's pre-prepares (at most the window's worth): those it could not install yet,
    /// above the window while it fetched min-s, are installed once the state transfer completes.
    new_view_pre_prepares: Vec<Verified<PrePrepare>>,
    /// When the NEW-VIEW was last re-sent to each replica.
    new_view_resent: BTreeMap<ReplicaId, Time>,
    /// When the stable checkpoint's proof was last sent to each replica.
    proof_sent: BTreeMap<ReplicaId, Time>,
    /// When to re-send this replica's latest CHECKPOINT if it is still not stable.
    checkpoint_resend_at: Option<Time>,
    /// When the current stable checkpoint became stable here.
    stable_at: Time,
    /// A checkpoint became stable in this step: the step's actions carry a [`DurableCheckpoint`].
    checkpoint_due: bool,
    /// Normal-case messages for views not entered yet, per sender.
    future: BTreeMap<ReplicaId, VecDeque<VerifiedMessage>>,
    metrics: Metrics,
    now: Time,
}

impl<S: Service> Replica<S> {
    /// Creates replica `id` of the cluster `config`, holding its key pair and its service.
    pub fn new(
        config: Arc<ClusterConfig>,
        id: ReplicaId,
        key: KeyPair,
        service: S,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let expected = config.replica_key(id).ok_or_else(|| ConfigError {
            field: "id",
            reason: format!("replica {id} is not in a cluster of {}", config.n()),
        })?;
        if *expected != key.public() {
            return Err(ConfigError {
                field: "key",
                reason: format!("key pair does not match the configured key of replica {id}"),
            });
        }
        Ok(Replica {
            verifier: Verifier::new(config.clone())?,
            config,
            id,
            key,
            service,
            view: View(0),
            low_watermark: SeqNum(0),
            last_executed: SeqNum(0),
            last_assigned: SeqNum(0),
            log: Log::default(),
            clients: ClientTable::default(),
            queue: RequestQueue::default(),
            own_checkpoints: BTreeMap::new(),
            checkpoint_votes: CheckpointVotes::default(),
            stable: None,
            transfer: None,
            catch_up: None,
            catch_up_cursor: id,
            commit_certificates: BTreeMap::new(),
            phase: Phase::Normal,
            view_timer: None,
            view_change_resend_at: None,
            backoff: 0,
            waiting: BTreeSet::new(),
            view_changes: BTreeMap::new(),
            prepared: BTreeMap::new(),
            new_view_frame: None,
            new_view_pre_prepares: Vec::new(),
            new_view_resent: BTreeMap::new(),
            proof_sent: BTreeMap::new(),
            checkpoint_resend_at: None,
            stable_at: Time::ZERO,
            checkpoint_due: false,
            future: BTreeMap::new(),
            metrics: Metrics::default(),
            now: Time::ZERO,
        })
    }

    /// Processes one input at time `now` and returns what to persist, then send.
    pub fn step(&mut self, now: Time, input: Input) -> Actions {
        debug_assert!(
            now >= self.now,
            "time went backwards: {now:?} < {:?}",
            self.now
        );
        self.now = self.now.max(now);
        let mut actions = Actions::default();
        match input {
            Input::Message(message) => self.on_message(message, &mut actions),
            Input::Tick => {
                self.state_transfer_tick(&mut actions);
                self.catch_up_tick(&mut actions);
                self.view_change_tick(&mut actions);
                self.resend_votes(&mut actions);
                self.resend_checkpoint(&mut actions);
            }
        }
        self.finish_step(&mut actions);
        if std::mem::take(&mut self.checkpoint_due) {
            actions.set_checkpoint(self.durable_checkpoint());
        }
        #[cfg(debug_assertions)]
        self.check_invariants();
        actions
    }

    /// What every step does after its input: propose, execute, and act on what execution left.
    fn finish_step(&mut self, actions: &mut Actions) {
        self.propose_batches(actions);
        self.execute_committed(actions);
        // Execution may be stuck below a certified checkpoint (fetch its state) or behind a gap
        // (fetch the committed batches).
        self.act_on_certificates(actions);
        self.continue_catch_up(actions);
        // Execution frees room in the pipeline: propose again.
        self.propose_batches(actions);
    }

    /// The next time the replica needs a [`Input::Tick`], if any: the view-change timers, the
    /// state-transfer or catch-up retry.
    pub fn poll_timeout(&self) -> Option<Time> {
        [
            self.state_transfer_deadline(),
            self.catch_up_deadline(),
            self.view_change_deadline(),
            self.vote_resend_deadline(),
            self.checkpoint_resend_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }

    /// Whether this replica is the primary of its current view.
    pub fn is_primary(&self) -> bool {
        self.view.primary(self.config.n()) == self.id
    }

    /// The service (read-only).
    pub fn service(&self) -> &S {
        &self.service
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A summary of what the replica holds.
    pub fn status(&self) -> Status {
        self.status_with_service_digest(self.service.state_digest())
    }

    /// [`Replica::status`] with `service_digest` given instead of computed: computing it digests
    /// the whole service state, too costly for a driver to do after every step. A driver passes
    /// the digest it last computed (and says when it computed it).
    pub fn status_with_service_digest(&self, service_digest: Digest) -> Status {
        let slots = || self.log.slots().map(|(_, slot)| slot);
        Status {
            id: self.id,
            view: self.view,
            low_watermark: self.low_watermark,
            last_executed: self.last_executed,
            last_assigned: self.last_assigned,
            log_slots: self.log.len(),
            pre_prepares_held: slots().filter(|s| s.pre_prepare.is_some()).count(),
            prepares_held: slots().map(|s| s.prepares.len()).sum(),
            commits_held: slots().map(|s| s.commits.len()).sum(),
            queued_requests: self.queue.len(),
            client_records: self.clients.records.len(),
            checkpoint_votes_held: self.checkpoint_votes.len(),
            checkpoint_states_held: self.own_checkpoints.len(),
            fetching_state: self.transfer.as_ref().map(|t| t.target.seq),
            phase: self.phase,
            view_changes_held: self.view_changes.len(),
            prepared_certificates_held: self.prepared.len(),
            future_messages_held: self.future.values().map(VecDeque::len).sum(),
            service_digest,
        }
    }

    fn on_message(&mut self, message: VerifiedMessage, actions: &mut Actions) {
        let from = message.sender();
        let kind = message.kind();
        // Normal-case messages for a view this replica has not entered (yet) wait in a bounded
        // per-peer buffer.
        let view = view_change::message_view(&message);
        let ahead = view.is_some_and(|v| {
            v > self.view || (v == self.view && self.phase == Phase::ViewChanging)
        });
        // Accepted messages that shape the log are persisted, to be replayed after a restart.
        let durable = !ahead
            && matches!(
                kind,
                MessageKind::PrePrepare
                    | MessageKind::Prepare
                    | MessageKind::Commit
                    | MessageKind::NewView
                    | MessageKind::CommittedBatch
            );
        let frame = durable.then(|| message.frame().clone());
        // The accepted frame goes before what the step derives from it (a prepare, a commit).
        let mark = actions.persisted_len();
        let result = match message {
            message if ahead => match from {
                Principal::Replica(sender) if sender != self.id => {
                    let buffered = self.buffer_future(sender, message);
                    self.rejoin_if_left_behind(actions);
                    buffered
                }
                _ => Err(Rejection::FromSelf),
            },
            VerifiedMessage::Request(request) => self.on_request(request, actions),
            VerifiedMessage::PrePrepare(m) => self.on_pre_prepare(m, actions),
            VerifiedMessage::Prepare(m) => self.on_prepare(m, actions),
            VerifiedMessage::Commit(m) => self.on_commit(m, actions),
            VerifiedMessage::Reply(_) => Err(Rejection::NotForReplicas),
            VerifiedMessage::Checkpoint(m) => self.on_checkpoint(m, actions),
            VerifiedMessage::FetchState(m) => self.on_fetch_state(m, actions),
            VerifiedMessage::StateManifest(m) => self.on_state_manifest(m, actions),
            VerifiedMessage::StateChunk(m) => self.on_state_chunk(m, actions),
            VerifiedMessage::FetchCommitted(m) => self.on_fetch_committed(m, actions),
            VerifiedMessage::CommittedBatch(m) => self.on_committed_batch(m, actions),
            VerifiedMessage::ViewChange(m) => self.on_view_change(m, actions),
            VerifiedMessage::NewView(m) => self.on_new_view(m, actions),
        };
        match result {
            Ok(()) => {
                if let Some(frame) = frame {
                    actions.persist_frame_at(mark, frame);
                }
            }
            Err(reason) => {
                *self.metrics.rejected.entry(reason.label()).or_default() += 1;
                actions.rejected.push(Rejected { from, kind, reason });
            }
        }
    }

    /// Signs a message of this replica's; returns the frame and its digest.
    fn sign<M: WireMessage>(&self, message: &M) -> (Bytes, Digest) {
        self.sign_attached(message, &[])
    }

    /// Signs a message and attaches unsigned `attachment` (a pre-prepare's batch).
    fn sign_attached<M: WireMessage>(&self, message: &M, attachment: &[u8]) -> (Bytes, Digest) {
        let payload = crate::codec::encode(message);
        let header = Header {
            cluster: self.config.cluster_id,
            kind: M::KIND,
            sender: Principal::Replica(self.id),
        };
        let signed = header.domain().signed_bytes(&payload);
        let signature = self.key.sign_raw(&signed);
        let frame = FrameRef {
            header,
            payload: &payload,
            signature,
            attachment,
        }
        .encode();
        (frame, sha256(&signed))
    }

    /// The high watermark H = h + L.
    fn high_watermark(&self) -> SeqNum {
        SeqNum(self.low_watermark.0 + self.config.limits.window)
    }

    fn in_window(&self, seq: SeqNum) -> Result<(), Rejection> {
        if seq <= self.low_watermark {
            Err(Rejection::Late {
                seq,
                low: self.low_watermark,
            })
        } else if seq <= self.high_watermark() {
            Ok(())
        } else {
            Err(Rejection::OutsideWindow {
                seq,
                low: self.low_watermark,
                high: self.high_watermark(),
            })
        }
    }

    #[cfg(debug_assertions)]
    fn check_invariants(&self) {
        let n = self.config.n();
        assert!(self.log.len() as u64 <= self.config.limits.window);
        for (seq, slot) in self.log.slots() {
            assert!(*seq > self.low_watermark && *seq <= self.high_watermark());
            assert!(slot.prepares.len() <= n && slot.commits.len() <= n);
            assert!(!slot.committed || slot.has_commit_quorum(self.config.f));
        }
        assert!(self.queue.len() <= self.config.clients.len());
        assert!(self.clients.records.len() <= self.config.clients.len());
        assert!(self.last_executed >= self.low_watermark);
        let limits = &self.config.limits;
        let checkpoints_in_window = (limits.window / limits.checkpoint_interval + 1) as usize;
        assert!(self.checkpoint_votes.len() <= (checkpoints_in_window + 1) * n);
        assert!(self.own_checkpoints.len() <= checkpoints_in_window + 1);
        assert!(
            self.own_checkpoints
                .keys()
                .all(|seq| *seq >= self.low_watermark)
        );
        if let Some(stable) = &self.stable {
            assert_eq!(stable.seq, self.low_watermark);
            assert!(stable.proof.len() >= self.config.quorum());
        }
        assert!(self.view_changes.len() <= n);
        assert!(self.new_view_resent.len() < n);
        assert!(self.proof_sent.len() < n);
        assert!(self.future.len() < n);
        let future_limit = self.config.limits.max_future_messages_per_peer;
        assert!(
            self.future
                .values()
                .all(|queue| queue.len() <= future_limit)
        );
        assert!(self.prepared.len() as u64 <= self.config.limits.window);
        assert!(
            self.commit_certificates
                .keys()
                .all(|seq| *seq > self.low_watermark)
        );
        assert!(self.commit_certificates.len() as u64 <= self.config.limits.window);
        assert!(self.prepared.keys().all(|seq| *seq > self.low_watermark));
        assert!(self.waiting.len() <= self.config.clients.len());
    }
}

/// The replica's own messages enter its log as verified messages without a round trip.
fn own<M>(id: ReplicaId, message: M, frame: Bytes, digest: Digest) -> Verified<M> {
    Verified::new(Principal::Replica(id), message, frame, digest)
}
