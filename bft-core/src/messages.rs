//! One Rust type per protocol message (PBFT section 4.2).
//!
//! These are the payloads of signed frames (see [`crate::codec`]); who sent a message and for
//! which cluster is in the frame header, which the signature covers too.

use crate::codec::{self, Header};
use crate::ids::{ClientId, Principal, SeqNum, View};
use crate::verify::Verified;
use bft_crypto::{Digest, DigestBuilder, KeyPair};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The kind of a protocol message; part of every frame header and every signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MessageKind {
    /// A client's request.
    Request,
    /// The primary's ordering proposal.
    PrePrepare,
    /// A backup's agreement with a pre-prepare.
    Prepare,
    /// A replica's vote to commit a prepared batch.
    Commit,
    /// A replica's reply to a client.
    Reply,
    /// A replica's statement of its state digest at a checkpoint.
    Checkpoint,
    /// A lagging replica's request for checkpoint state.
    FetchState,
    /// The chunk digests of a checkpoint's state.
    StateManifest,
    /// One chunk of a checkpoint's state.
    StateChunk,
    /// A replica's request for committed batches it is missing.
    FetchCommitted,
    /// A committed batch with the certificate that proves it committed.
    CommittedBatch,
    /// A replica's move to a new view, with what it has prepared.
    ViewChange,
    /// The new primary's start of a view.
    NewView,
}

impl MessageKind {
    /// Every kind, in code order.
    pub const ALL: [MessageKind; 13] = [
        MessageKind::Request,
        MessageKind::PrePrepare,
        MessageKind::Prepare,
        MessageKind::Commit,
        MessageKind::Reply,
        MessageKind::Checkpoint,
        MessageKind::FetchState,
        MessageKind::StateManifest,
        MessageKind::StateChunk,
        MessageKind::FetchCommitted,
        MessageKind::CommittedBatch,
        MessageKind::ViewChange,
        MessageKind::NewView,
    ];

    /// The byte that signatures cover for this kind. Never reuse a value.
    pub fn code(self) -> u8 {
        match self {
            MessageKind::Request => 1,
            MessageKind::PrePrepare => 2,
            MessageKind::Prepare => 3,
            MessageKind::Commit => 4,
            MessageKind::Reply => 5,
            MessageKind::Checkpoint => 6,
            MessageKind::FetchState => 7,
            MessageKind::StateManifest => 8,
            MessageKind::StateChunk => 9,
            MessageKind::FetchCommitted => 10,
            MessageKind::CommittedBatch => 11,
            MessageKind::ViewChange => 12,
            MessageKind::NewView => 13,
        }
    }

    /// Whether a principal in this role may send this kind of message.
    pub fn allowed_from(self, sender: Principal) -> bool {
        match self {
            MessageKind::Request => matches!(sender, Principal::Client(_)),
            _ => matches!(sender, Principal::Replica(_)),
        }
    }
}

/// A message type that travels as the payload of a signed frame.
pub trait WireMessage: Serialize {
    /// Its kind.
    const KIND: MessageKind;

    /// Encodes and signs this message as a frame from `sender` in cluster `cluster`.
    fn sign(&self, key: &KeyPair, cluster: u64, sender: Principal) -> Bytes {
        let payload = codec::encode(self);
        codec::sign_frame(
            key,
            Header {
                cluster,
                kind: Self::KIND,
                sender,
            },
            &payload,
            &[],
        )
    }

    /// Encodes this message as an unsigned frame from `sender`: only for the kinds the
    /// receiver's channel authenticates (replies; see [`crate::verify`]).
    fn unsigned(&self, cluster: u64, sender: Principal) -> Bytes {
        codec::unsigned_frame(
            Header {
                cluster,
                kind: Self::KIND,
                sender,
            },
            &codec::encode(self),
        )
    }
}

/// `<REQUEST, o, t, c>`: operation `o` with timestamp `t`, signed by client `c` (the frame's
/// sender). Timestamps of one client increase; they give exactly-once semantics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The client's timestamp, strictly increasing per client.
    pub timestamp: u64,
    /// The operation for the service.
    #[serde(with = "serde_bytes")]
    pub operation: Vec<u8>,
}

impl WireMessage for Request {
    const KIND: MessageKind = MessageKind::Request;
}

/// `<PRE-PREPARE, v, n, d>`: what the primary signs. Signed alone (with no batch attached) it is
/// the form certificates carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepareHeader {
    /// The view.
    pub view: View,
    /// The sequence number assigned to the batch.
    pub seq: SeqNum,
    /// The batch digest.
    pub digest: Digest,
}

impl WireMessage for PrePrepareHeader {
    const KIND: MessageKind = MessageKind::PrePrepare;
}

/// A pre-prepare with the batch it orders, as the primary multicasts it: the signed
/// [`PrePrepareHeader`] with the batch attached (the clients' signed request frames, byte for
/// byte, so every backup checks each client's signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrePreparePayload {
    /// The view.
    pub view: View,
    /// The sequence number assigned to the batch.
    pub seq: SeqNum,
    /// The batch digest ([`batch_digest`] of the requests' digests).
    pub digest: Digest,
    /// The client request frames, in execution order.
    pub requests: Vec<serde_bytes::ByteBuf>,
}

impl PrePreparePayload {
    /// The signed part.
    pub fn header(&self) -> PrePrepareHeader {
        PrePrepareHeader {
            view: self.view,
            seq: self.seq,
            digest: self.digest,
        }
    }

    /// Signs the header and attaches the batch.
    pub fn sign(&self, key: &KeyPair, cluster: u64, sender: Principal) -> Bytes {
        let payload = codec::encode(&self.header());
        let header = Header {
            cluster,
            kind: MessageKind::PrePrepare,
            sender,
        };
        codec::sign_frame(key, header, &payload, &encode_batch(&self.requests))
    }
}

/// Encodes a batch of request frames as a pre-prepare's attachment.
pub fn encode_batch(requests: &[serde_bytes::ByteBuf]) -> Vec<u8> {
    codec::encode(requests)
}

/// Encodes a verified batch as a pre-prepare's attachment (the same bytes as [`encode_batch`] of
/// its request frames).
pub fn encode_batch_of(batch: &[Verified<Request>]) -> Vec<u8> {
    let frames: Vec<&serde_bytes::Bytes> = batch
        .iter()
        .map(|r| serde_bytes::Bytes::new(r.frame()))
        .collect();
    codec::encode(&frames)
}

/// A pre-prepare after verification. If it came with its batch, every request in it is a
/// verified client request and the digest was recomputed from them; in certificates it comes
/// without.
#[derive(Debug, Clone)]
pub struct PrePrepare {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNum,
    /// The batch digest (checked against the requests when they are attached).
    pub digest: Digest,
    /// The verified requests, in execution order, if the batch was attached.
    pub requests: Option<Batch>,
}

/// A batch of verified requests, shared between the log, certificates and execution.
pub type Batch = Arc<[Verified<Request>]>;

/// `<PREPARE, v, n, d, i>`: backup `i` (the frame's sender) accepted the pre-prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNum,
    /// The batch digest.
    pub digest: Digest,
}

impl WireMessage for Prepare {
    const KIND: MessageKind = MessageKind::Prepare;
}

/// `<COMMIT, v, n, d, i>`: replica `i` (the frame's sender) has the batch prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNum,
    /// The batch digest.
    pub digest: Digest,
}

impl WireMessage for Commit {
    const KIND: MessageKind = MessageKind::Commit;
}

/// `<REPLY, v, t, c, i, r>`: replica `i` (the frame's sender) executed client `c`'s request with
/// timestamp `t` in view `v`, with outcome `r`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The replica's current view, which tells the client who the primary is.
    pub view: View,
    /// The client the reply is for (so a reply cannot be replayed to another client).
    pub client: ClientId,
    /// The request's timestamp.
    pub timestamp: u64,
    /// What executing the request produced.
    pub outcome: Outcome,
}

impl WireMessage for Reply {
    const KIND: MessageKind = MessageKind::Reply;
}

/// The outcome of executing one request, identical on every correct replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The service returned these bytes.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The service panicked while executing the request. The panic was contained; every correct
    /// replica records this same outcome, and the service state is whatever the (deterministic)
    /// operation left before it panicked.
    ServicePanicked,
    /// The service returned a reply longer than `limits.max_reply_bytes`; it was discarded on
    /// every correct replica (the state change, if any, stands).
    ReplyTooLarge {
        /// The reply's length.
        len: u64,
    },
}

/// The digest a pre-prepare carries for a batch: SHA-256 over a label, the request count and each
/// request's digest (the digest of its signed bytes).
pub fn batch_digest(request_digests: impl ExactSizeIterator<Item = Digest>) -> Digest {
    let mut builder = DigestBuilder::new(b"bft-rs batch v1");
    builder.update(&(request_digests.len() as u64).to_le_bytes());
    for digest in request_digests {
        builder.update(digest.as_bytes());
    }
    builder.finish()
}

/// `<CHECKPOINT, n, d, i>`: replica `i` (the frame's sender) executed every batch up to `n` and its
/// checkpoint state then has digest `d` (PBFT section 4.3). 2f+1 matching ones from distinct
/// replicas make the checkpoint stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The checkpoint's sequence number (a multiple of the checkpoint interval).
    pub seq: SeqNum,
    /// The checkpoint digest ([`checkpoint_digest`] of the state's chunk digests).
    pub digest: Digest,
}

impl WireMessage for Checkpoint {
    const KIND: MessageKind = MessageKind::Checkpoint;
}

/// What a lagging replica asks a peer for: the manifest (`chunk: None`) or one chunk of the
/// checkpoint state proven by a stable certificate for (`seq`, `digest`) (TOCS 2002 section 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchState {
    /// The checkpoint's sequence number.
    pub seq: SeqNum,
    /// The certified checkpoint digest.
    pub digest: Digest,
    /// The chunk wanted, or `None` for the manifest.
    pub chunk: Option<u32>,
}

impl WireMessage for FetchState {
    const KIND: MessageKind = MessageKind::FetchState;
}

/// The layout of a checkpoint's state: its length and the digest of each chunk. Its
/// [`checkpoint_digest`] is the digest the checkpoint certificate proves, so a fetcher checks the
/// manifest first and then every chunk on arrival, and can tell which peer served a bad chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateManifest {
    /// The checkpoint's sequence number.
    pub seq: SeqNum,
    /// Total state length in bytes.
    pub total_bytes: u64,
    /// SHA-256 of each chunk, in order; every chunk but the last has `limits.state_chunk_bytes`.
    pub chunk_digests: Vec<Digest>,
}

impl WireMessage for StateManifest {
    const KIND: MessageKind = MessageKind::StateManifest;
}

/// One chunk of a checkpoint's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChunk {
    /// The checkpoint's sequence number.
    pub seq: SeqNum,
    /// The certified checkpoint digest.
    pub digest: Digest,
    /// The chunk's index.
    pub index: u32,
    /// The chunk's bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl WireMessage for StateChunk {
    const KIND: MessageKind = MessageKind::StateChunk;
}

/// The digest a checkpoint certificate proves: SHA-256 over a label, the checkpoint's sequence
/// number, the state length and every chunk digest.
pub fn checkpoint_digest(manifest: &StateManifest) -> Digest {
    let mut builder = DigestBuilder::new(b"bft-rs checkpoint v1");
    builder
        .update(&manifest.seq.0.to_le_bytes())
        .update(&manifest.total_bytes.to_le_bytes())
        .update(&(manifest.chunk_digests.len() as u64).to_le_bytes());
    for digest in &manifest.chunk_digests {
        builder.update(digest.as_bytes());
    }
    builder.finish()
}

/// A lagging replica asks a peer for the committed batches from `from` on (TOCS 2002 section 6:
/// what follows the checkpoint it restored, or batches whose messages it missed). The peer answers
/// with up to [`MAX_BATCHES_PER_FETCH`] [`CommittedBatch`] messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchCommitted {
    /// The first sequence number wanted.
    pub from: SeqNum,
}

impl WireMessage for FetchCommitted {
    const KIND: MessageKind = MessageKind::FetchCommitted;
}

/// Most batches a replica sends in answer to one [`FetchCommitted`].
pub const MAX_BATCHES_PER_FETCH: u64 = 16;

/// A committed batch as it travels: the primary's pre-prepare and 2f+1 matching commits from
/// distinct replicas, each the original signed frame, so the receiver needs to trust no one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedBatchPayload {
    /// The pre-prepare frame.
    pub pre_prepare: serde_bytes::ByteBuf,
    /// The commit frames.
    pub commits: Vec<serde_bytes::ByteBuf>,
}

impl WireMessage for CommittedBatchPayload {
    const KIND: MessageKind = MessageKind::CommittedBatch;
}

/// A committed batch after verification: every embedded frame verified. Whether the commits form
/// a certificate for the pre-prepare is checked by the replica.
#[derive(Debug, Clone)]
pub struct CommittedBatch {
    /// The pre-prepare, with its verified requests.
    pub pre_prepare: Box<Verified<PrePrepare>>,
    /// The commits.
    pub commits: Vec<Verified<Commit>>,
}

/// A prepared certificate as it travels (PBFT section 4.4): the pre-prepare (without its batch)
/// and 2f matching prepares from distinct backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCertificatePayload {
    /// The pre-prepare frame, without its batch.
    pub pre_prepare: serde_bytes::ByteBuf,
    /// The prepare frames.
    pub prepares: Vec<serde_bytes::ByteBuf>,
}

/// `<VIEW-CHANGE, v+1, n, C, P, i>` as it travels (PBFT section 4.4): the sender's stable
/// checkpoint `n` with its proof `C` (2f+1 CHECKPOINT frames; empty while `n` is 0) and a
/// prepared certificate `P` for every sequence number above `n` that prepared at the sender (the
/// one from the highest view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChangePayload {
    /// The view the sender moves to.
    pub new_view: View,
    /// The sender's stable checkpoint.
    pub stable_seq: SeqNum,
    /// 2f+1 CHECKPOINT frames proving it.
    pub checkpoint_proof: Vec<serde_bytes::ByteBuf>,
    /// Prepared certificates above the stable checkpoint.
    pub prepared: Vec<PreparedCertificatePayload>,
}

impl WireMessage for ViewChangePayload {
    const KIND: MessageKind = MessageKind::ViewChange;
}

/// `<NEW-VIEW, v+1, V, O>` as it travels (PBFT section 4.4): 2f+1 VIEW-CHANGE frames for the
/// view and the pre-prepares (without batches) the new primary issues from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewViewPayload {
    /// The new view.
    pub view: View,
    /// The VIEW-CHANGE frames.
    pub view_changes: Vec<serde_bytes::ByteBuf>,
    /// The re-issued pre-prepare frames, in sequence order.
    pub pre_prepares: Vec<serde_bytes::ByteBuf>,
}

impl WireMessage for NewViewPayload {
    const KIND: MessageKind = MessageKind::NewView;
}

/// A prepared certificate whose frames verified (whether it proves anything is checked by the
/// replica).
#[derive(Debug, Clone)]
pub struct PreparedCertificate {
    /// The pre-prepare.
    pub pre_prepare: Verified<PrePrepare>,
    /// The prepares.
    pub prepares: Vec<Verified<Prepare>>,
}

/// A VIEW-CHANGE whose embedded frames verified.
#[derive(Debug, Clone)]
pub struct ViewChange {
    /// The view the sender moves to.
    pub new_view: View,
    /// The sender's stable checkpoint.
    pub stable_seq: SeqNum,
    /// The CHECKPOINT messages proving it.
    pub checkpoint_proof: Vec<Verified<Checkpoint>>,
    /// Prepared certificates above it.
    pub prepared: Vec<PreparedCertificate>,
}

/// A NEW-VIEW whose embedded frames verified.
#[derive(Debug, Clone)]
pub struct NewView {
    /// The new view.
    pub view: View,
    /// The VIEW-CHANGE messages.
    pub view_changes: Vec<Verified<ViewChange>>,
    /// The re-issued pre-prepares.
    pub pre_prepares: Vec<Verified<PrePrepare>>,
}
