//! Why a replica refused a verified message. A refusal never changes the log, the votes held or
//! the service. A few refusals also prompt a reaction: a state-transfer peer that served bad data
//! is marked bad (and replaced, if it was the one asked), a request for discarded state or
//! batches is answered with the stable checkpoint's proof, and a full future-view buffer may
//! still show that the replica missed a view change.

use crate::ids::{ReplicaId, SeqNum, View};

/// The reason a verified message was refused by protocol logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum Rejection {
    /// The message is for a view other than the replica's current view.
    #[error("message for {got:?}, replica is in {current:?}")]
    WrongView {
        /// The message's view.
        got: View,
        /// The replica's view.
        current: View,
    },
    /// The sequence number is at or below the stable checkpoint h: the slot was garbage-collected
    /// (section 4.3). Normal for votes that arrive after a checkpoint became stable.
    #[error("sequence number {seq:?} at or below the stable checkpoint {low:?}")]
    Late {
        /// The message's sequence number.
        seq: SeqNum,
        /// The low watermark h.
        low: SeqNum,
    },
    /// The sequence number lies above the window `(h, h + L]` (PBFT section 4.2).
    #[error("sequence number {seq:?} outside the window ({low:?}, {high:?}]")]
    OutsideWindow {
        /// The message's sequence number.
        seq: SeqNum,
        /// The low watermark h.
        low: SeqNum,
        /// The high watermark h + L.
        high: SeqNum,
    },
    /// A pre-prepare not sent by the primary of its view.
    #[error("pre-prepare from {sender:?}, primary is {primary:?}")]
    NotFromPrimary {
        /// The sender.
        sender: ReplicaId,
        /// The primary of the message's view.
        primary: ReplicaId,
    },
    /// A prepare sent by the primary (its pre-prepare stands for its prepare).
    #[error("prepare from the primary")]
    PrepareFromPrimary,
    /// A message claiming to come from this replica (its own messages never come back in).
    #[error("message from this replica itself")]
    FromSelf,
    /// A second, different pre-prepare for a (view, sequence number) that already has one: the
    /// primary equivocated.
    #[error("conflicting pre-prepare for an assigned sequence number")]
    ConflictingPrePrepare,
    /// A second, different prepare or commit from one replica for one (view, sequence number).
    #[error("conflicting vote from the same replica")]
    ConflictingVote,
    /// A prepare or commit whose digest differs from the accepted pre-prepare's.
    #[error("digest does not match the accepted pre-prepare")]
    DigestMismatch,
    /// A message identical to one already held.
    #[error("duplicate message")]
    Duplicate,
    /// A client request older than the client's last executed one.
    #[error("request timestamp {timestamp} older than the last executed {last}")]
    StaleRequest {
        /// The request's timestamp.
        timestamp: u64,
        /// The client's last executed timestamp.
        last: u64,
    },
    /// A message kind replicas do not accept (replies are for clients).
    #[error("message kind not accepted by replicas")]
    NotForReplicas,
    /// A checkpoint at a sequence number that is not a positive multiple of the interval K.
    #[error("checkpoint at {seq:?} is not at a multiple of the checkpoint interval")]
    MisalignedCheckpoint {
        /// The checkpoint's sequence number.
        seq: SeqNum,
    },
    /// A fetch for checkpoint state this replica does not hold (or holds with another digest).
    #[error("no state held for checkpoint {seq:?} with that digest")]
    StateUnavailable {
        /// The checkpoint asked for.
        seq: SeqNum,
    },
    /// State-transfer data that no ongoing fetch asked for.
    #[error("state transfer data that was not asked for")]
    UnsolicitedState,
    /// State-transfer data that does not match the certified digest: the sender is marked bad.
    #[error("state transfer data does not match the certified digest")]
    StateMismatch,
    /// A VIEW-CHANGE whose checkpoint proof or prepared certificates do not prove what they claim.
    #[error("invalid view-change")]
    InvalidViewChange,
    /// A NEW-VIEW without 2f+1 valid VIEW-CHANGEs for its view from distinct replicas, or whose
    /// pre-prepares differ from those the VIEW-CHANGEs determine.
    #[error("invalid new-view")]
    InvalidNewView,
    /// The buffer for this peer's messages for views not yet entered is full.
    #[error("buffer for future-view messages from this peer is full")]
    FutureBufferFull,
    /// A pre-prepare without its batch where the batch is needed (normal case, committed batch).
    #[error("pre-prepare without its batch")]
    MissingBatch,
    /// A certificate that does not prove what it claims: a pre-prepare not from the primary of its
    /// view, or fewer than 2f+1 matching votes from distinct replicas.
    #[error("certificate does not prove its claim")]
    InvalidCertificate,
    /// A vote for a sequence number this replica is fetching state for.
    #[error("replica is fetching state up to {target:?}; not voting on {seq:?}")]
    CatchingUp {
        /// The message's sequence number.
        seq: SeqNum,
        /// The state transfer's target.
        target: SeqNum,
    },
}

impl Rejection {
    /// A short name for the reason, the key it is counted under in `Metrics::rejected`.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::WrongView { .. } => "wrong_view",
            Rejection::Late { .. } => "late",
            Rejection::OutsideWindow { .. } => "outside_window",
            Rejection::NotFromPrimary { .. } => "not_from_primary",
            Rejection::PrepareFromPrimary => "prepare_from_primary",
            Rejection::FromSelf => "from_self",
            Rejection::ConflictingPrePrepare => "conflicting_pre_prepare",
            Rejection::ConflictingVote => "conflicting_vote",
            Rejection::DigestMismatch => "digest_mismatch",
            Rejection::Duplicate => "duplicate",
            Rejection::StaleRequest { .. } => "stale_request",
            Rejection::NotForReplicas => "not_for_replicas",
            Rejection::MisalignedCheckpoint { .. } => "misaligned_checkpoint",
            Rejection::StateUnavailable { .. } => "state_unavailable",
            Rejection::UnsolicitedState => "unsolicited_state",
            Rejection::StateMismatch => "state_mismatch",
            Rejection::CatchingUp { .. } => "catching_up",
            Rejection::InvalidCertificate => "invalid_certificate",
            Rejection::MissingBatch => "missing_batch",
            Rejection::InvalidViewChange => "invalid_view_change",
            Rejection::InvalidNewView => "invalid_new_view",
            Rejection::FutureBufferFull => "future_buffer_full",
        }
    }
}
