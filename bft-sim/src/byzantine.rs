//! Byzantine replicas: an [`Adversary`] rewrites the frames one replica sends.
//!
//! A Byzantine replica in the simulator runs the real [`bft_core::Replica`] with its real key;
//! every frame it sends then passes through [`Adversary::corrupt`] under an [`Attack`] the
//! simulator picks with its seeded RNG. Every corruption is something a real attacker holding that
//! replica's key, and no one else's, could do:
//!
//! - it re-signs its own messages with other content (another view, sequence number, digest or
//!   batch; forged or stale certificates inside its own VIEW-CHANGE or NEW-VIEW);
//! - it replays, relays and embeds frames it has seen, signed by anyone, byte for byte;
//! - it sends arbitrary bytes (bad signatures, oversized frames, garbage).
//!
//! It never signs as another principal. Where a forgery would need another replica's signature
//! (a prepared certificate with 2f prepares it never received, a checkpoint proof it does not
//! hold), the forged frame carries a wrong signature or too few signers, and the verifier or the
//! replica must refuse it.
//!
//! Deterministic: the output is a function of the frames observed so far, the frame, the attack
//! and the RNG (no clock, no OS randomness, ordered collections only). Bounded: at most
//! [`OBSERVED_PER_KIND`] frames are remembered per message kind and at most
//! [`MAX_FRAMES_PER_CALL`] frames come out of one call.

use bft_core::codec::{self, FrameRef, Header};
use bft_core::messages::{
    Checkpoint, Commit, MessageKind, NewViewPayload, PrePrepareHeader, Prepare,
    PreparedCertificatePayload, Request, ViewChangePayload, WireMessage, batch_digest,
    encode_batch,
};
use bft_core::{ClusterConfig, Principal, ReplicaId, SeqNum, View};
use bft_crypto::{Digest, KeyPair, sha256};
use bytes::Bytes;
use rand::{Rng, RngExt};
use rand_chacha::ChaCha8Rng;
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

/// Most frames [`Adversary::observe`] remembers per message kind (the oldest are forgotten).
pub const OBSERVED_PER_KIND: usize = 32;

/// Most frames one [`Adversary::corrupt`] call returns.
pub const MAX_FRAMES_PER_CALL: usize = 32;

/// [`Attack::FutureFlood`] sends messages for views up to this far above the current one.
pub const FUTURE_VIEW_SPAN: u64 = 1000;

/// [`Attack::Oversized`] frames exceed `limits.max_message_bytes` by 1 to this many bytes.
pub const OVERSIZE_EXTRA_BYTES: usize = 64;

/// How observed frames are embedded: a NEW-VIEW's VIEW-CHANGEs, their certificates' frames.
const MAX_OBSERVE_DEPTH: u8 = 2;

/// What a Byzantine replica does to one frame it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attack {
    /// The view of a PRE-PREPARE, PREPARE, COMMIT or VIEW-CHANGE moved by one, re-signed.
    ShiftView,
    /// The sequence number of a PRE-PREPARE, PREPARE, COMMIT or CHECKPOINT moved by one,
    /// re-signed.
    ShiftSeq,
    /// A conflicting, validly signed message for the same (view, sequence number): a PRE-PREPARE
    /// with another valid batch (a request dropped, the order changed, an empty batch, an observed
    /// request added) and its correct digest; a PREPARE, COMMIT or CHECKPOINT with another digest;
    /// a VIEW-CHANGE that forgets prepared certificates or its stable checkpoint.
    Equivocate,
    /// A random digest that matches nothing, re-signed (a PRE-PREPARE's batch then no longer
    /// matches its digest, which the verifier refuses).
    SwapDigest,
    /// An observed frame sent instead of, or after, the current one.
    ReplayOld,
    /// A VIEW-CHANGE or NEW-VIEW with forged content (see [`Adversary::corrupt`]).
    ForgeCertificate,
    /// A VIEW-CHANGE or NEW-VIEW built from old observed material, or an old one re-sent.
    StaleCertificate,
    /// Up to [`MAX_FRAMES_PER_CALL`] - 1 validly signed PREPAREs, COMMITs, empty VIEW-CHANGEs (and
    /// PRE-PREPAREs when it has a batch) for views far above the current one, after the frame.
    FutureFlood,
    /// One bit of the signature flipped.
    InvalidSignature,
    /// The frame padded past `limits.max_message_bytes`.
    Oversized,
    /// Random bytes, the frame truncated, or one payload byte flipped.
    Garbage,
}

impl Attack {
    /// Every attack.
    pub const ALL: [Attack; 11] = [
        Attack::ShiftView,
        Attack::ShiftSeq,
        Attack::Equivocate,
        Attack::SwapDigest,
        Attack::ReplayOld,
        Attack::ForgeCertificate,
        Attack::StaleCertificate,
        Attack::FutureFlood,
        Attack::InvalidSignature,
        Attack::Oversized,
        Attack::Garbage,
    ];

    /// A short kebab-case name, for summaries and command lines.
    pub fn name(self) -> &'static str {
        match self {
            Attack::ShiftView => "shift-view",
            Attack::ShiftSeq => "shift-seq",
            Attack::Equivocate => "equivocate",
            Attack::SwapDigest => "swap-digest",
            Attack::ReplayOld => "replay-old",
            Attack::ForgeCertificate => "forge-certificate",
            Attack::StaleCertificate => "stale-certificate",
            Attack::FutureFlood => "future-flood",
            Attack::InvalidSignature => "invalid-signature",
            Attack::Oversized => "oversized",
            Attack::Garbage => "garbage",
        }
    }

    /// The attack called `name` (see [`Attack::name`]).
    pub fn from_name(name: &str) -> Option<Attack> {
        Attack::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of this replica's own frames, decoded (only these can be re-signed with other content).
enum Own {
    PrePrepare(PrePrepareHeader, Vec<u8>),
    Prepare(Prepare),
    Commit(Commit),
    Checkpoint(Checkpoint),
    ViewChange(ViewChangePayload),
    NewView(NewViewPayload),
    /// Another kind: no attack re-signs it.
    Other,
}

/// Ways to forge a VIEW-CHANGE.
#[derive(Debug, Clone, Copy)]
enum ViewChangeForgery {
    /// A prepare in a prepared certificate with a flipped signature.
    BadPrepareSignature,
    /// A prepared certificate whose prepares are one frame repeated.
    DuplicatePrepares,
    /// A prepared certificate with fewer than 2f prepares.
    TooFewPrepares,
    /// A prepared certificate with a prepare (its own) for another digest.
    MismatchedDigest,
    /// A prepared certificate whose pre-prepare it signed for a view it does not lead.
    NonPrimaryPrePrepare,
    /// A checkpoint proof with fewer than 2f+1 checkpoints.
    ProofTooSmall,
    /// A checkpoint proof with a checkpoint (its own) for another digest or sequence number.
    ProofMismatched,
    /// A checkpoint proof that repeats one checkpoint.
    ProofDuplicated,
    /// A higher stable checkpoint claimed with no proof.
    StableWithoutProof,
}

impl ViewChangeForgery {
    const ALL: [ViewChangeForgery; 9] = [
        ViewChangeForgery::BadPrepareSignature,
        ViewChangeForgery::DuplicatePrepares,
        ViewChangeForgery::TooFewPrepares,
        ViewChangeForgery::MismatchedDigest,
        ViewChangeForgery::NonPrimaryPrePrepare,
        ViewChangeForgery::ProofTooSmall,
        ViewChangeForgery::ProofMismatched,
        ViewChangeForgery::ProofDuplicated,
        ViewChangeForgery::StableWithoutProof,
    ];
}

/// Ways to forge a NEW-VIEW.
#[derive(Debug, Clone, Copy)]
enum NewViewForgery {
    /// Fewer than 2f+1 VIEW-CHANGEs.
    TooFewViewChanges,
    /// One VIEW-CHANGE included twice.
    DuplicateViewChange,
    /// A re-issued pre-prepare re-signed with another digest.
    AlteredPrePrepare,
    /// A re-issued pre-prepare left out.
    MissingPrePrepare,
    /// A pre-prepare the VIEW-CHANGEs do not call for.
    ExtraPrePrepare,
    /// One VIEW-CHANGE replaced by a forged one of its own.
    ForgedViewChange,
}

impl NewViewForgery {
    const ALL: [NewViewForgery; 6] = [
        NewViewForgery::TooFewViewChanges,
        NewViewForgery::DuplicateViewChange,
        NewViewForgery::AlteredPrePrepare,
        NewViewForgery::MissingPrePrepare,
        NewViewForgery::ExtraPrePrepare,
        NewViewForgery::ForgedViewChange,
    ];
}

/// The Byzantine behaviour of one replica: it holds that replica's key (and only that one) and
/// remembers, within bounds, frames the replica sent or received.
pub struct Adversary {
    config: Arc<ClusterConfig>,
    id: ReplicaId,
    key: KeyPair,
    /// Observed frames per kind, oldest first, at most [`OBSERVED_PER_KIND`] each. Requests are
    /// kept only if their client signature verifies (equivocating batches are built from them).
    observed: BTreeMap<MessageKind, VecDeque<Bytes>>,
    /// The highest view of a frame this replica itself sent (the base of future-view floods for
    /// frames without a view).
    highest_view: View,
}

impl fmt::Debug for Adversary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adversary")
            .field("id", &self.id)
            .field(
                "observed",
                &self.observed.values().map(VecDeque::len).sum::<usize>(),
            )
            .field("highest_view", &self.highest_view)
            .finish_non_exhaustive()
    }
}

impl Adversary {
    /// The adversary for replica `id` of `config` (a valid configuration, as the replica's is),
    /// holding that replica's key pair.
    pub fn new(config: Arc<ClusterConfig>, id: ReplicaId, key: KeyPair) -> Adversary {
        Adversary {
            config,
            id,
            key,
            observed: BTreeMap::new(),
            highest_view: View(0),
        }
    }

    /// The replica this adversary acts for.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// Remembers a frame this replica sent or received (for replays and stale certificates),
    /// with the frames it embeds: a pre-prepare's requests, a VIEW-CHANGE's checkpoints,
    /// pre-prepares and prepares, a NEW-VIEW's VIEW-CHANGEs and pre-prepares. Undecodable frames
    /// are ignored; at most [`OBSERVED_PER_KIND`] frames are kept per kind.
    pub fn observe(&mut self, frame: &Bytes) {
        self.remember(frame.clone(), 0);
    }

    /// The frames to send instead of `frame` under `attack`: usually one, possibly `frame` itself
    /// followed by others (replays, floods), at most [`MAX_FRAMES_PER_CALL`]. An attack that does
    /// not apply to the frame (its kind, or a frame this replica did not sign where re-signing is
    /// needed, or nothing observed to replay) leaves it unchanged: `vec![frame.clone()]`. Never
    /// panics.
    ///
    /// [`Attack::ForgeCertificate`] on a VIEW-CHANGE forges one of: a prepare with a bad
    /// signature, repeated prepares, fewer than 2f prepares, a prepare for another digest, a
    /// pre-prepare it signed for a view it does not lead, a checkpoint proof too small,
    /// mismatched or repeated, or a higher stable checkpoint without proof. On a NEW-VIEW: fewer
    /// than 2f+1 VIEW-CHANGEs, a repeated one, a re-issued pre-prepare re-signed with another
    /// digest, one left out, one added, or its own VIEW-CHANGE forged as above.
    ///
    /// [`Attack::StaleCertificate`] on a VIEW-CHANGE re-sends an observed one for an older view,
    /// or sends the content of an older one for the current view, or swaps in prepared
    /// certificates from older views; on a NEW-VIEW it re-sends an older one, or embeds
    /// VIEW-CHANGEs or pre-prepares of older views; after any other frame it re-sends an
    /// observed VIEW-CHANGE or NEW-VIEW.
    pub fn corrupt(&mut self, frame: &Bytes, attack: Attack, rng: &mut ChaCha8Rng) -> Vec<Bytes> {
        self.note_own_view(frame);
        let corrupted = match attack {
            Attack::ShiftView => self.shift_view(frame, rng),
            Attack::ShiftSeq => self.shift_seq(frame, rng),
            Attack::Equivocate => self.equivocate(frame, rng),
            Attack::SwapDigest => self.swap_digest(frame, rng),
            Attack::ReplayOld => self.replay_old(frame, rng),
            Attack::ForgeCertificate => self.forge_certificate(frame, rng),
            Attack::StaleCertificate => self.stale_certificate(frame, rng),
            Attack::FutureFlood => Some(self.future_flood(frame, rng)),
            Attack::InvalidSignature => self.invalid_signature(frame, rng),
            Attack::Oversized => Some(vec![self.oversized(frame, rng)]),
            Attack::Garbage => Some(vec![self.garbage(frame, rng)]),
        };
        match corrupted {
            Some(mut frames) if !frames.is_empty() => {
                frames.truncate(MAX_FRAMES_PER_CALL);
                frames
            }
            _ => vec![frame.clone()],
        }
    }

    // ---- observation ----

    fn max_len(&self) -> usize {
        self.config.limits.max_message_bytes
    }

    fn me(&self) -> Principal {
        Principal::Replica(self.id)
    }

    fn n(&self) -> u64 {
        self.config.n().max(1) as u64
    }

    fn primary_of(&self, view: View) -> ReplicaId {
        ReplicaId((view.0 % self.n()) as u32)
    }

    fn remember(&mut self, frame: Bytes, depth: u8) {
        let Ok(decoded) = codec::decode_frame(&frame, self.max_len()) else {
            return;
        };
        let kind = decoded.header.kind;
        let seen = self
            .observed
            .get(&kind)
            .is_some_and(|ring| ring.contains(&frame));
        if seen || (kind == MessageKind::Request && !self.valid_request(&frame)) {
            return;
        }
        let embedded: Vec<ByteBuf> = match kind {
            MessageKind::PrePrepare if !decoded.attachment.is_empty() => {
                codec::decode(decoded.attachment).unwrap_or_default()
            }
            MessageKind::ViewChange => match codec::decode::<ViewChangePayload>(decoded.payload) {
                Ok(vc) => vc
                    .checkpoint_proof
                    .into_iter()
                    .chain(
                        vc.prepared
                            .into_iter()
                            .flat_map(|c| std::iter::once(c.pre_prepare).chain(c.prepares)),
                    )
                    .collect(),
                Err(_) => Vec::new(),
            },
            MessageKind::NewView => match codec::decode::<NewViewPayload>(decoded.payload) {
                Ok(nv) => nv.view_changes.into_iter().chain(nv.pre_prepares).collect(),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        };
        self.note_own_view(&frame);
        let ring = self.observed.entry(kind).or_default();
        if ring.len() >= OBSERVED_PER_KIND {
            ring.pop_front();
        }
        ring.push_back(frame);
        if depth < MAX_OBSERVE_DEPTH {
            for inner in embedded {
                self.remember(Bytes::from(inner.into_vec()), depth + 1);
            }
        }
    }

    /// Raises `highest_view` to the view of `frame` if this replica sent it.
    fn note_own_view(&mut self, frame: &[u8]) {
        let view = match self.decode_own(frame) {
            Some(Own::PrePrepare(h, _)) => h.view,
            Some(Own::Prepare(m)) => m.view,
            Some(Own::Commit(m)) => m.view,
            Some(Own::ViewChange(m)) => m.new_view,
            Some(Own::NewView(m)) => m.view,
            _ => return,
        };
        self.highest_view = self.highest_view.max(view);
    }

    /// Whether `frame` is a request the verifier would accept (inside a pre-prepare).
    fn valid_request(&self, frame: &[u8]) -> bool {
        let limits = &self.config.limits;
        let Ok(decoded) = codec::decode_frame(frame, limits.max_request_frame_bytes()) else {
            return false;
        };
        let header = decoded.header;
        let Principal::Client(client) = header.sender else {
            return false;
        };
        let Some(key) = self.config.clients.get(&client) else {
            return false;
        };
        header.kind == MessageKind::Request
            && header.cluster == self.config.cluster_id
            && codec::decode::<Request>(decoded.payload)
                .is_ok_and(|r| r.operation.len() <= limits.max_operation_bytes)
            && bft_crypto::verify(key, &header.domain(), decoded.payload, &decoded.signature)
                .is_ok()
    }

    fn observed_of(&self, kind: MessageKind) -> impl Iterator<Item = &Bytes> {
        self.observed.get(&kind).into_iter().flatten()
    }

    /// Observed VIEW-CHANGEs with their sender and payload.
    fn observed_view_changes(&self) -> Vec<(&Bytes, Principal, ViewChangePayload)> {
        self.observed_of(MessageKind::ViewChange)
            .filter_map(|frame| {
                let decoded = codec::decode_frame(frame, self.max_len()).ok()?;
                let payload = codec::decode(decoded.payload).ok()?;
                Some((frame, decoded.header.sender, payload))
            })
            .collect()
    }

    /// Observed NEW-VIEWs with their payload.
    fn observed_new_views(&self) -> Vec<(&Bytes, NewViewPayload)> {
        self.observed_of(MessageKind::NewView)
            .filter_map(|frame| {
                let decoded = codec::decode_frame(frame, self.max_len()).ok()?;
                Some((frame, codec::decode(decoded.payload).ok()?))
            })
            .collect()
    }

    // ---- decoding and signing ----

    /// Decodes `frame` if this replica signed it (only those can be re-signed).
    fn decode_own(&self, frame: &[u8]) -> Option<Own> {
        let decoded = codec::decode_frame(frame, self.max_len()).ok()?;
        if decoded.header.sender != self.me() {
            return None;
        }
        let payload = decoded.payload;
        Some(match decoded.header.kind {
            MessageKind::PrePrepare => {
                Own::PrePrepare(codec::decode(payload).ok()?, decoded.attachment.to_vec())
            }
            MessageKind::Prepare => Own::Prepare(codec::decode(payload).ok()?),
            MessageKind::Commit => Own::Commit(codec::decode(payload).ok()?),
            MessageKind::Checkpoint => Own::Checkpoint(codec::decode(payload).ok()?),
            MessageKind::ViewChange => Own::ViewChange(codec::decode(payload).ok()?),
            MessageKind::NewView => Own::NewView(codec::decode(payload).ok()?),
            _ => Own::Other,
        })
    }

    fn sign<M: WireMessage>(&self, message: &M) -> Bytes {
        message.sign(&self.key, self.config.cluster_id, self.me())
    }

    fn sign_pre_prepare(&self, header: &PrePrepareHeader, batch: &[u8]) -> Bytes {
        let frame_header = Header {
            cluster: self.config.cluster_id,
            kind: MessageKind::PrePrepare,
            sender: self.me(),
        };
        codec::sign_frame(&self.key, frame_header, &codec::encode(header), batch)
    }

    fn own_prepare(&self, view: View, seq: SeqNum, digest: Digest) -> ByteBuf {
        ByteBuf::from(self.sign(&Prepare { view, seq, digest }).to_vec())
    }

    fn own_checkpoint(&self, seq: SeqNum, digest: Digest) -> ByteBuf {
        ByteBuf::from(self.sign(&Checkpoint { seq, digest }).to_vec())
    }

    fn own_header(&self, view: View, seq: SeqNum, digest: Digest) -> ByteBuf {
        let header = PrePrepareHeader { view, seq, digest };
        ByteBuf::from(self.sign_pre_prepare(&header, &[]).to_vec())
    }

    /// A view below `below` that this replica does not lead (or, if there is none, any such
    /// view).
    fn view_not_led(&self, below: View) -> View {
        (1..=self.n().min(below.0))
            .map(|back| View(below.0 - back))
            .find(|v| self.primary_of(*v) != self.id)
            .unwrap_or(View(u64::from(self.id.0).saturating_add(1)))
    }

    /// The first view at or above `from` that this replica leads.
    fn view_led_from(&self, from: View) -> View {
        let n = self.n();
        let id = u64::from(self.id.0) % n;
        let base = from.0 - from.0 % n;
        let view = base.saturating_add(id);
        View(if view < from.0 {
            view.saturating_add(n)
        } else {
            view
        })
    }

    // ---- attacks that re-sign one message ----

    fn shift_view(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
        let out = match self.decode_own(frame)? {
            Own::PrePrepare(mut h, batch) => {
                h.view = View(shift(h.view.0, rng));
                self.sign_pre_prepare(&h, &batch)
            }
            Own::Prepare(mut m) => {
                m.view = View(shift(m.view.0, rng));
                self.sign(&m)
            }
            Own::Commit(mut m) => {
                m.view = View(shift(m.view.0, rng));
                self.sign(&m)
            }
            Own::ViewChange(mut m) => {
                m.new_view = View(shift(m.new_view.0, rng));
                self.sign(&m)
            }
            _ => return None,
        };
        Some(vec![out])
    }

    fn shift_seq(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
        let out = match self.decode_own(frame)? {
            Own::PrePrepare(mut h, batch) => {
                h.seq = SeqNum(shift(h.seq.0, rng));
                self.sign_pre_prepare(&h, &batch)
            }
            Own::Prepare(mut m) => {
                m.seq = SeqNum(shift(m.seq.0, rng));
                self.sign(&m)
            }
            Own::Commit(mut m) => {
                m.seq = SeqNum(shift(m.seq.0, rng));
                self.sign(&m)
            }
            Own::Checkpoint(mut m) => {
                m.seq = SeqNum(shift(m.seq.0, rng));
                self.sign(&m)
            }
            _ => return None,
        };
        Some(vec![out])
    }

    fn swap_digest(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
        let out = match self.decode_own(frame)? {
            Own::PrePrepare(mut h, batch) => {
                h.digest = random_digest_except(h.digest, rng);
                self.sign_pre_prepare(&h, &batch)
            }
            Own::Prepare(mut m) => {
                m.digest = random_digest_except(m.digest, rng);
                self.sign(&m)
            }
            Own::Commit(mut m) => {
                m.digest = random_digest_except(m.digest, rng);
                self.sign(&m)
            }
            Own::Checkpoint(mut m) => {
                m.digest = random_digest_except(m.digest, rng);
                self.sign(&m)
            }
            _ => return None,
        };
        Some(vec![out])
    }

    fn equivocate(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
        let out = match self.decode_own(frame)? {
            Own::PrePrepare(h, batch) => self.equivocate_pre_prepare(h, &batch, rng)?,
            Own::Prepare(mut m) => {
                m.digest = self.conflicting_batch_digest(m.digest, rng);
                self.sign(&m)
            }
            Own::Commit(mut m) => {
                m.digest = self.conflicting_batch_digest(m.digest, rng);
                self.sign(&m)
            }
            Own::Checkpoint(mut m) => {
                let observed: Vec<Digest> = self
                    .observed_of(MessageKind::Checkpoint)
                    .filter_map(|f| decode_payload::<Checkpoint>(f, self.max_len()))
                    .map(|c| c.digest)
                    .filter(|d| *d != m.digest)
                    .collect();
                m.digest =
                    pick(&observed, rng).unwrap_or_else(|| random_digest_except(m.digest, rng));
                self.sign(&m)
            }
            Own::ViewChange(m) => self.sign(&self.equivocate_view_change(m, rng)?),
            _ => return None,
        };
        Some(vec![out])
    }

    /// Another batch digest a vote could plausibly carry: the null request's, or that of an
    /// observed pre-prepare; random if there is none.
    fn conflicting_batch_digest(&self, current: Digest, rng: &mut ChaCha8Rng) -> Digest {
        let candidates: Vec<Digest> = std::iter::once(batch_digest(std::iter::empty()))
            .chain(
                self.observed_of(MessageKind::PrePrepare)
                    .filter_map(|f| decode_payload::<PrePrepareHeader>(f, self.max_len()))
                    .map(|h| h.digest),
            )
            .filter(|d| *d != current)
            .collect();
        pick(&candidates, rng).unwrap_or_else(|| random_digest_except(current, rng))
    }

    /// A pre-prepare for the same view and sequence number with another valid batch and its
    /// correct digest (or, without a batch attached, another digest).
    fn equivocate_pre_prepare(
        &self,
        mut header: PrePrepareHeader,
        batch: &[u8],
        rng: &mut ChaCha8Rng,
    ) -> Option<Bytes> {
        if batch.is_empty() {
            header.digest = self.conflicting_batch_digest(header.digest, rng);
            return Some(self.sign_pre_prepare(&header, &[]));
        }
        let requests: Vec<ByteBuf> = codec::decode(batch).ok()?;
        let len = requests.len();
        let mut candidates: Vec<Vec<ByteBuf>> = Vec::new();
        if len >= 1 {
            let mut dropped = requests.clone();
            dropped.remove(rng.random_range(0..len));
            candidates.push(dropped);
            candidates.push(Vec::new());
        }
        if len >= 2 {
            let mut swapped = requests.clone();
            let i = rng.random_range(0..len);
            let j = (i + rng.random_range(1..len)) % len;
            swapped.swap(i, j);
            candidates.push(swapped);
        }
        let limits = &self.config.limits;
        let bytes: usize = requests.iter().map(|r| r.len()).sum();
        let extra: Vec<&Bytes> = self
            .observed_of(MessageKind::Request)
            .filter(|r| !requests.iter().any(|q| q.as_slice() == r.as_ref()))
            .filter(|r| bytes.saturating_add(r.len()) <= limits.max_batch_bytes)
            .collect();
        if len < limits.max_batch_requests
            && let Some(request) = pick(&extra, rng)
        {
            let mut added = requests.clone();
            added.insert(rng.random_range(0..=len), ByteBuf::from(request.to_vec()));
            candidates.push(added);
        }
        if candidates.is_empty() {
            return None;
        }
        let start = rng.random_range(0..candidates.len());
        (0..candidates.len())
            .map(|k| &candidates[(start + k) % candidates.len()])
            .find_map(|candidate| {
                let digests: Vec<Digest> = candidate
                    .iter()
                    .map(|r| request_digest(r))
                    .collect::<Option<_>>()?;
                let digest = batch_digest(digests.into_iter());
                (digest != header.digest).then(|| {
                    let header = PrePrepareHeader { digest, ..header };
                    self.sign_pre_prepare(&header, &encode_batch(candidate))
                })
            })
    }

    /// A different, still valid VIEW-CHANGE for the same view: one that forgets prepared
    /// certificates, or forgets the stable checkpoint.
    fn equivocate_view_change(
        &self,
        mut vc: ViewChangePayload,
        rng: &mut ChaCha8Rng,
    ) -> Option<ViewChangePayload> {
        let can_drop = !vc.prepared.is_empty();
        let can_forget = vc.stable_seq > SeqNum(0);
        let drop = match (can_drop, can_forget) {
            (false, false) => return None,
            (true, true) => rng.random_bool(0.5),
            (drop, _) => drop,
        };
        if drop {
            let before = vc.prepared.len();
            vc.prepared.retain(|_| rng.random_bool(0.5));
            if vc.prepared.len() == before {
                vc.prepared.remove(rng.random_range(0..before));
            }
        } else {
            let window = self.config.limits.window;
            let max_len = self.max_len();
            vc.stable_seq = SeqNum(0);
            vc.checkpoint_proof.clear();
            vc.prepared.retain(|c| {
                decode_payload::<PrePrepareHeader>(&c.pre_prepare, max_len)
                    .is_some_and(|h| h.seq > SeqNum(0) && h.seq.0 <= window)
            });
        }
        Some(vc)
    }

    // ---- replays and floods ----

    fn replay_old(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
        let kind = codec::decode_frame(frame, self.max_len())
            .ok()
            .map(|f| f.header.kind);
        let same: Vec<&Bytes> = kind
            .into_iter()
            .flat_map(|k| self.observed_of(k))
            .filter(|f| *f != frame)
            .collect();
        let any: Vec<&Bytes> = self
            .observed
            .values()
            .flatten()
            .filter(|f| *f != frame)
            .collect();
        let pool = if !same.is_empty() && rng.random_bool(0.75) {
            same
        } else {
            any
        };
        let old = (*pick(&pool, rng)?).clone();
        Some(if rng.random_bool(0.5) {
            vec![old]
        } else {
            vec![frame.clone(), old]
        })
    }

    fn future_flood(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Vec<Bytes> {
        let (view, seq, digest, batch) = match self.decode_own(frame) {
            Some(Own::PrePrepare(h, batch)) => (h.view, h.seq, h.digest, Some(batch)),
            Some(Own::Prepare(m)) => (m.view, m.seq, m.digest, None),
            Some(Own::Commit(m)) => (m.view, m.seq, m.digest, None),
            Some(Own::Checkpoint(m)) => (View(0), m.seq.next(), random_digest(rng), None),
            Some(Own::ViewChange(m)) => (m.new_view, m.stable_seq.next(), random_digest(rng), None),
            Some(Own::NewView(m)) => (m.view, SeqNum(1), random_digest(rng), None),
            _ => (View(0), SeqNum(1), random_digest(rng), None),
        };
        let batch = batch.filter(|b| !b.is_empty());
        let base = view.max(self.highest_view);
        let count = rng.random_range(1..MAX_FRAMES_PER_CALL);
        let mut out = Vec::with_capacity(count + 1);
        out.push(frame.clone());
        for _ in 0..count {
            let view = View(
                base.0
                    .saturating_add(rng.random_range(1..=FUTURE_VIEW_SPAN)),
            );
            let choices = if batch.is_some() { 4 } else { 3 };
            out.push(match (rng.random_range(0..choices), &batch) {
                (0, _) => self.sign(&Prepare { view, seq, digest }),
                (1, _) => self.sign(&Commit { view, seq, digest }),
                (3, Some(batch)) => {
                    let view = self.view_led_from(view);
                    self.sign_pre_prepare(&PrePrepareHeader { view, seq, digest }, batch)
                }
                _ => self.sign(&ViewChangePayload {
                    new_view: view,
                    stable_seq: SeqNum(0),
                    checkpoint_proof: Vec::new(),
                    prepared: Vec::new(),
                }),
            });
        }
        out
    }

    // ---- certificates ----

    fn forge_certificate(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
        let out = match self.decode_own(frame)? {
            Own::ViewChange(vc) => self.sign(&self.forge_view_change(vc, rng)),
            Own::NewView(nv) => self.sign(&self.forge_new_view(nv, rng)),
            _ => return None,
        };
        Some(vec![out])
    }

    fn forge_view_change(
        &self,
        mut vc: ViewChangePayload,
        rng: &mut ChaCha8Rng,
    ) -> ViewChangePayload {
        let forgery = ViewChangeForgery::ALL[rng.random_range(0..ViewChangeForgery::ALL.len())];
        let f = self.config.f.max(1);
        let quorum = 2 * f + 1;
        let interval = self.config.limits.checkpoint_interval.max(1);
        let max_len = self.max_len();
        use ViewChangeForgery as F;
        match forgery {
            F::BadPrepareSignature
            | F::DuplicatePrepares
            | F::TooFewPrepares
            | F::MismatchedDigest
            | F::NonPrimaryPrePrepare => {
                if vc.prepared.is_empty() {
                    // Nothing prepared: a certificate of its own making for the next slot.
                    let (view, seq) = (View(vc.new_view.0.saturating_sub(1)), vc.stable_seq.next());
                    vc.prepared.push(PreparedCertificatePayload {
                        pre_prepare: self.own_header(view, seq, batch_digest(std::iter::empty())),
                        prepares: Vec::new(),
                    });
                }
                let index = rng.random_range(0..vc.prepared.len());
                let new_view = vc.new_view;
                let certificate = &mut vc.prepared[index];
                let (view, seq, digest) =
                    decode_payload::<PrePrepareHeader>(&certificate.pre_prepare, max_len)
                        .map_or((View(0), SeqNum(1), Digest::ZERO), |h| {
                            (h.view, h.seq, h.digest)
                        });
                let prepares = &mut certificate.prepares;
                match forgery {
                    F::BadPrepareSignature => {
                        if prepares.is_empty() {
                            prepares.push(self.own_prepare(view, seq, digest));
                        }
                        let i = rng.random_range(0..prepares.len());
                        prepares[i] = ByteBuf::from(flip_signature(&prepares[i], rng));
                    }
                    F::DuplicatePrepares => {
                        let first = prepares
                            .first()
                            .cloned()
                            .unwrap_or_else(|| self.own_prepare(view, seq, digest));
                        *prepares = vec![first; (2 * f).max(2)];
                    }
                    F::TooFewPrepares => prepares.truncate(rng.random_range(0..2 * f)),
                    F::MismatchedDigest => {
                        let other = self.own_prepare(view, seq, random_digest_except(digest, rng));
                        if prepares.is_empty() {
                            prepares.push(other);
                        } else {
                            let i = rng.random_range(0..prepares.len());
                            prepares[i] = other;
                        }
                    }
                    _ => {
                        let view = self.view_not_led(new_view);
                        certificate.pre_prepare = self.own_header(view, seq, digest);
                    }
                }
            }
            F::ProofTooSmall | F::ProofMismatched | F::ProofDuplicated => {
                let seq = if vc.stable_seq > SeqNum(0) {
                    vc.stable_seq
                } else {
                    SeqNum(interval)
                };
                vc.stable_seq = seq;
                let digest = vc
                    .checkpoint_proof
                    .first()
                    .and_then(|c| decode_payload::<Checkpoint>(c, max_len))
                    .map_or_else(|| random_digest(rng), |c| c.digest);
                let proof = &mut vc.checkpoint_proof;
                if proof.is_empty() {
                    proof.push(self.own_checkpoint(seq, digest));
                }
                match forgery {
                    F::ProofTooSmall => {
                        proof.truncate(rng.random_range(1..quorum));
                    }
                    F::ProofMismatched => {
                        let other = if rng.random_bool(0.5) {
                            self.own_checkpoint(seq, random_digest_except(digest, rng))
                        } else {
                            self.own_checkpoint(SeqNum(seq.0.saturating_add(interval)), digest)
                        };
                        let own = proof.iter().position(|c| {
                            codec::decode_frame(c, max_len)
                                .is_ok_and(|f| f.header.sender == self.me())
                        });
                        let i = own.unwrap_or_else(|| rng.random_range(0..proof.len()));
                        proof[i] = other;
                    }
                    _ => *proof = vec![proof[0].clone(); quorum],
                }
            }
            F::StableWithoutProof => {
                vc.stable_seq = SeqNum(vc.stable_seq.0.saturating_add(interval));
                vc.checkpoint_proof.clear();
            }
        }
        vc
    }

    fn forge_new_view(&self, mut nv: NewViewPayload, rng: &mut ChaCha8Rng) -> NewViewPayload {
        let forgery = NewViewForgery::ALL[rng.random_range(0..NewViewForgery::ALL.len())];
        let quorum = 2 * self.config.f.max(1) + 1;
        let max_len = self.max_len();
        let headers: Vec<Option<PrePrepareHeader>> = nv
            .pre_prepares
            .iter()
            .map(|p| decode_payload(p, max_len))
            .collect();
        use NewViewForgery as F;
        let forgery = match forgery {
            F::AlteredPrePrepare | F::MissingPrePrepare if nv.pre_prepares.is_empty() => {
                F::ExtraPrePrepare
            }
            F::DuplicateViewChange if nv.view_changes.is_empty() => F::ForgedViewChange,
            forgery => forgery,
        };
        match forgery {
            F::TooFewViewChanges => {
                let keep = rng.random_range(0..quorum);
                nv.view_changes.truncate(keep);
            }
            F::DuplicateViewChange => {
                let vcs = &mut nv.view_changes;
                let i = rng.random_range(0..vcs.len());
                if vcs.len() >= 2 {
                    let j = (i + rng.random_range(1..vcs.len())) % vcs.len();
                    vcs[j] = vcs[i].clone();
                } else {
                    vcs.push(vcs[i].clone());
                }
            }
            F::AlteredPrePrepare => {
                let i = rng.random_range(0..nv.pre_prepares.len());
                let (seq, digest) =
                    headers[i].map_or((SeqNum(1), Digest::ZERO), |h| (h.seq, h.digest));
                nv.pre_prepares[i] =
                    self.own_header(nv.view, seq, random_digest_except(digest, rng));
            }
            F::MissingPrePrepare => {
                nv.pre_prepares
                    .remove(rng.random_range(0..nv.pre_prepares.len()));
            }
            F::ExtraPrePrepare => {
                let seq = headers
                    .iter()
                    .flatten()
                    .map(|h| h.seq)
                    .max()
                    .unwrap_or(SeqNum(0))
                    .next();
                let null = batch_digest(std::iter::empty());
                nv.pre_prepares.push(self.own_header(nv.view, seq, null));
            }
            F::ForgedViewChange => {
                let own = nv.view_changes.iter().position(|vc| {
                    codec::decode_frame(vc, max_len).is_ok_and(|f| f.header.sender == self.me())
                });
                let empty = ViewChangePayload {
                    new_view: nv.view,
                    stable_seq: SeqNum(0),
                    checkpoint_proof: Vec::new(),
                    prepared: Vec::new(),
                };
                let index = own.or_else(|| {
                    (!nv.view_changes.is_empty())
                        .then(|| rng.random_range(0..nv.view_changes.len()))
                });
                let base = index
                    .and_then(|i| decode_payload(&nv.view_changes[i], max_len))
                    .unwrap_or(empty);
                let forged = ByteBuf::from(self.sign(&self.forge_view_change(base, rng)).to_vec());
                match index {
                    Some(i) => nv.view_changes[i] = forged,
                    None => nv.view_changes.push(forged),
                }
            }
        }
        nv
    }

    fn stale_certificate(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
        match self.decode_own(frame) {
            Some(Own::ViewChange(vc)) => self.stale_view_change(vc, rng),
            Some(Own::NewView(nv)) => self.stale_new_view(nv, rng),
            _ => {
                let old: Vec<&Bytes> = self
                    .observed_of(MessageKind::ViewChange)
                    .chain(self.observed_of(MessageKind::NewView))
                    .filter(|f| *f != frame)
                    .collect();
                let old = (*pick(&old, rng)?).clone();
                Some(vec![frame.clone(), old])
            }
        }
    }

    fn stale_view_change(
        &self,
        mut vc: ViewChangePayload,
        rng: &mut ChaCha8Rng,
    ) -> Option<Vec<Bytes>> {
        let older: Vec<(&Bytes, Principal, ViewChangePayload)> = self
            .observed_view_changes()
            .into_iter()
            .filter(|(_, _, old)| old.new_view < vc.new_view)
            .collect();
        if older.is_empty() {
            return None;
        }
        let max_len = self.max_len();
        match rng.random_range(0..3u8) {
            0 => {
                // Re-send an older VIEW-CHANGE, its own if it has one.
                let own: Vec<&Bytes> = older
                    .iter()
                    .filter(|(_, sender, _)| *sender == self.me())
                    .map(|(frame, _, _)| *frame)
                    .collect();
                let all: Vec<&Bytes> = older.iter().map(|(frame, _, _)| *frame).collect();
                let old = pick(&own, rng).or_else(|| pick(&all, rng))?;
                Some(vec![(*old).clone()])
            }
            choice => {
                // Swap in, for each slot, a prepared certificate from an older view.
                let mut swapped = false;
                if choice == 2 {
                    let view_of = |c: &PreparedCertificatePayload| {
                        decode_payload::<PrePrepareHeader>(&c.pre_prepare, max_len)
                    };
                    for certificate in &mut vc.prepared {
                        let Some(current) = view_of(certificate) else {
                            continue;
                        };
                        let stale = older
                            .iter()
                            .flat_map(|(_, _, old)| &old.prepared)
                            .find(|c| {
                                view_of(c)
                                    .is_some_and(|h| h.seq == current.seq && h.view < current.view)
                            });
                        if let Some(stale) = stale {
                            *certificate = stale.clone();
                            swapped = true;
                        }
                    }
                }
                if !swapped {
                    // An older VIEW-CHANGE's content (checkpoint and certificates) for this view.
                    let index = rng.random_range(0..older.len());
                    let new_view = vc.new_view;
                    vc = older[index].2.clone();
                    vc.new_view = new_view;
                }
                Some(vec![self.sign(&vc)])
            }
        }
    }

    fn stale_new_view(&self, mut nv: NewViewPayload, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
        let older_new_views: Vec<(&Bytes, NewViewPayload)> = self
            .observed_new_views()
            .into_iter()
            .filter(|(_, old)| old.view < nv.view)
            .collect();
        let older_view_changes: Vec<&Bytes> = self
            .observed_view_changes()
            .into_iter()
            .filter(|(_, _, old)| old.new_view < nv.view)
            .map(|(frame, _, _)| frame)
            .collect();
        let other_pre_prepares: Vec<&NewViewPayload> = older_new_views
            .iter()
            .map(|(_, old)| old)
            .filter(|old| old.pre_prepares != nv.pre_prepares)
            .collect();
        let mut options = Vec::new();
        if !older_new_views.is_empty() {
            options.push(0u8);
        }
        if !older_view_changes.is_empty() {
            options.push(1);
        }
        if !other_pre_prepares.is_empty() {
            options.push(2);
        }
        match pick(&options, rng)? {
            0 => {
                let (old, _) = pick(&older_new_views, rng)?;
                return Some(vec![(*old).clone()]);
            }
            1 => {
                let stale = |rng: &mut ChaCha8Rng| {
                    pick(&older_view_changes, rng).map(|f| ByteBuf::from(f.to_vec()))
                };
                if nv.view_changes.is_empty() || rng.random_bool(0.5) {
                    let count = nv.view_changes.len().max(1).min(older_view_changes.len());
                    nv.view_changes = (0..count).filter_map(|_| stale(rng)).collect();
                } else {
                    let i = rng.random_range(0..nv.view_changes.len());
                    nv.view_changes[i] = stale(rng)?;
                }
            }
            _ => nv.pre_prepares = pick(&other_pre_prepares, rng)?.pre_prepares.clone(),
        }
        Some(vec![self.sign(&nv)])
    }

    // ---- byte-level attacks ----

    fn invalid_signature(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
        codec::decode_frame(frame, self.max_len()).ok()?;
        Some(vec![Bytes::from(flip_signature(frame, rng))])
    }

    fn oversized(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Bytes {
        let target = self
            .max_len()
            .saturating_add(rng.random_range(1..=OVERSIZE_EXTRA_BYTES));
        let len = if frame.len() < target {
            target
        } else {
            frame
                .len()
                .saturating_add(rng.random_range(1..=OVERSIZE_EXTRA_BYTES))
        };
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(frame);
        bytes.resize(len, 0);
        Bytes::from(bytes)
    }

    fn garbage(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Bytes {
        let random = |rng: &mut ChaCha8Rng| {
            let max = frame.len().max(16).min(self.max_len());
            let mut bytes = vec![0u8; rng.random_range(0..=max)];
            rng.fill_bytes(&mut bytes);
            Bytes::from(bytes)
        };
        match rng.random_range(0..3u8) {
            0 => random(rng),
            1 if !frame.is_empty() => frame.slice(..rng.random_range(0..frame.len())),
            _ => {
                // One bit of one payload byte (anywhere, if the frame does not decode).
                let payload = codec::decode_frame(frame, self.max_len())
                    .ok()
                    .and_then(|decoded| {
                        let start = (decoded.payload.as_ptr() as usize)
                            .checked_sub(frame.as_ptr() as usize)?;
                        let end = start.checked_add(decoded.payload.len())?;
                        (start < end && end <= frame.len()).then_some(start..end)
                    });
                let range = match payload {
                    Some(range) => range,
                    None if !frame.is_empty() => 0..frame.len(),
                    None => return random(rng),
                };
                let mut bytes = frame.to_vec();
                bytes[rng.random_range(range)] ^= 1 << rng.random_range(0..8u8);
                Bytes::from(bytes)
            }
        }
    }
}

/// `value` moved by one, up or down (up from zero, down from the maximum).
fn shift(value: u64, rng: &mut ChaCha8Rng) -> u64 {
    if value == 0 || (value != u64::MAX && rng.random_bool(0.5)) {
        value + 1
    } else {
        value - 1
    }
}

fn random_digest(rng: &mut ChaCha8Rng) -> Digest {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    Digest(bytes)
}

fn random_digest_except(current: Digest, rng: &mut ChaCha8Rng) -> Digest {
    let digest = random_digest(rng);
    if digest == current {
        Digest(digest.0.map(|b| !b))
    } else {
        digest
    }
}

fn pick<T: Clone>(items: &[T], rng: &mut ChaCha8Rng) -> Option<T> {
    if items.is_empty() {
        return None;
    }
    Some(items[rng.random_range(0..items.len())].clone())
}

/// Decodes the payload of a frame as `T` (any sender).
fn decode_payload<T: serde::de::DeserializeOwned>(frame: &[u8], max_len: usize) -> Option<T> {
    codec::decode(codec::decode_frame(frame, max_len).ok()?.payload).ok()
}

/// The digest the verifier gives a request frame: SHA-256 of its signed bytes (the domain header
/// and the payload).
fn request_digest(frame: &[u8]) -> Option<Digest> {
    let decoded: FrameRef<'_> = codec::decode(frame).ok()?;
    Some(sha256(
        &decoded.header.domain().signed_bytes(decoded.payload),
    ))
}

/// `frame` with one bit of its signature flipped (unchanged if it does not decode).
fn flip_signature(frame: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let Ok(decoded) = codec::decode::<FrameRef<'_>>(frame) else {
        return frame.to_vec();
    };
    let mut signature = decoded.signature;
    let bit = rng.random_range(0..512usize);
    signature.0[bit / 8] ^= 1 << (bit % 8);
    FrameRef {
        signature,
        ..decoded
    }
    .encode()
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bft_core::messages::{PrePreparePayload, Reply};
    use bft_core::testkit::{self, CLUSTER_ID, service::LogService};
    use bft_core::{
        ClientId, Input, Outcome, Rejection, Replica, Time, VerifiedMessage, Verifier, VerifyError,
    };
    use proptest::prelude::*;
    use rand::SeedableRng;

    /// The Byzantine replica in these tests: the primary of views 1 and 5.
    const ME: u32 = 1;

    fn config() -> Arc<ClusterConfig> {
        let mut config = testkit::config(1, 2);
        let limits = &mut config.limits;
        limits.window = 16;
        limits.checkpoint_interval = 8;
        limits.max_in_flight_batches = 4;
        limits.max_operation_bytes = 512;
        limits.max_batch_requests = 16;
        limits.max_batch_bytes = 4096;
        limits.max_reply_bytes = 1024;
        limits.state_chunk_bytes = 1024;
        limits.max_message_bytes = 32 << 10;
        config.validate().expect("valid test configuration");
        Arc::new(config)
    }

    fn bytes(frame: &Bytes) -> ByteBuf {
        ByteBuf::from(frame.to_vec())
    }

    fn signed<M: WireMessage>(signer: u32, message: &M) -> Bytes {
        testkit::signed_by_replica(signer, message)
    }

    fn header_frame(signer: u32, view: u64, seq: u64, digest: Digest) -> Bytes {
        let header = PrePrepareHeader {
            view: View(view),
            seq: SeqNum(seq),
            digest,
        };
        signed(signer, &header)
    }

    fn view_change(
        signer: u32,
        view: u64,
        stable: u64,
        proof: &[Bytes],
        prepared: &[PreparedCertificatePayload],
    ) -> Bytes {
        signed(
            signer,
            &ViewChangePayload {
                new_view: View(view),
                stable_seq: SeqNum(stable),
                checkpoint_proof: proof.iter().map(bytes).collect(),
                prepared: prepared.to_vec(),
            },
        )
    }

    /// Frames of a cluster with f = 1 in which replica 1 is Byzantine.
    struct Fixture {
        config: Arc<ClusterConfig>,
        verifier: Verifier,
        requests: Vec<Bytes>,
        /// A pre-prepare of view 1, sequence number 1, with three requests, from replica 1.
        pre_prepare: Bytes,
        digest: Digest,
        prepare: Bytes,
        commit: Bytes,
        checkpoint: Bytes,
        /// A prepared certificate for (view 0, 1, digest).
        certificate: PreparedCertificatePayload,
        /// VIEW-CHANGEs for view 1 from replica 1: with the certificate; with a checkpoint proof.
        vc_prepared: Bytes,
        vc_proof: Bytes,
        /// The NEW-VIEW of view 1 from replicas 1, 2, 3's VIEW-CHANGEs with the certificate.
        new_view: Bytes,
    }

    fn fixture() -> Fixture {
        let config = config();
        let verifier = Verifier::new(config.clone()).expect("valid");
        let requests: Vec<Bytes> = (0..3u64)
            .map(|i| {
                let client = i % 2 + 1;
                let request = Request {
                    timestamp: i + 1,
                    operation: format!("op {i}").into_bytes(),
                };
                request.sign(
                    &testkit::client_key(client),
                    CLUSTER_ID,
                    Principal::Client(ClientId(client)),
                )
            })
            .collect();
        // The digest as the verifier computes it, independently of the adversary's code.
        let digest = batch_digest(requests.iter().map(|r| match verifier.verify(r.clone()) {
            Ok(VerifiedMessage::Request(r)) => r.digest(),
            other => panic!("request does not verify: {other:?}"),
        }));
        let pre_prepare = PrePreparePayload {
            view: View(1),
            seq: SeqNum(1),
            digest,
            requests: requests.iter().map(bytes).collect(),
        }
        .sign(
            &testkit::replica_key(ME),
            CLUSTER_ID,
            Principal::Replica(ReplicaId(ME)),
        );
        let prepare = testkit::prepare(ME, 0, 1, digest);
        let commit = testkit::commit(ME, 1, 1, digest);
        let checkpoint_digest = sha256(b"state at 8");
        let checkpoints: Vec<Bytes> = (1..=3)
            .map(|i| {
                signed(
                    i,
                    &Checkpoint {
                        seq: SeqNum(8),
                        digest: checkpoint_digest,
                    },
                )
            })
            .collect();
        let checkpoint = checkpoints[0].clone();
        let certificate = PreparedCertificatePayload {
            pre_prepare: bytes(&header_frame(0, 0, 1, digest)),
            prepares: vec![
                bytes(&testkit::prepare(1, 0, 1, digest)),
                bytes(&testkit::prepare(2, 0, 1, digest)),
            ],
        };
        let vc_prepared = view_change(ME, 1, 0, &[], std::slice::from_ref(&certificate));
        let vc_proof = view_change(ME, 1, 8, &checkpoints, &[]);
        let new_view = signed(
            ME,
            &NewViewPayload {
                view: View(1),
                view_changes: (1..=3)
                    .map(|i| {
                        bytes(&view_change(
                            i,
                            1,
                            0,
                            &[],
                            std::slice::from_ref(&certificate),
                        ))
                    })
                    .collect(),
                pre_prepares: vec![bytes(&header_frame(ME, 1, 1, digest))],
            },
        );
        Fixture {
            config,
            verifier,
            requests,
            pre_prepare,
            digest,
            prepare,
            commit,
            checkpoint,
            certificate,
            vc_prepared,
            vc_proof,
            new_view,
        }
    }

    impl Fixture {
        fn adversary(&self) -> Adversary {
            Adversary::new(self.config.clone(), ReplicaId(ME), testkit::replica_key(ME))
        }

        /// A fresh correct replica (2, in view 0).
        fn replica(&self) -> Replica<LogService> {
            Replica::new(
                self.config.clone(),
                ReplicaId(2),
                testkit::replica_key(2),
                LogService::default(),
            )
            .expect("valid replica")
        }

        /// Every sample frame of the Byzantine replica's.
        fn own_frames(&self) -> Vec<Bytes> {
            vec![
                self.pre_prepare.clone(),
                self.prepare.clone(),
                self.commit.clone(),
                self.checkpoint.clone(),
                self.vc_prepared.clone(),
                self.vc_proof.clone(),
                self.new_view.clone(),
            ]
        }

        fn verify(&self, frame: &Bytes) -> Result<VerifiedMessage, VerifyError> {
            self.verifier.verify(frame.clone())
        }

        /// The reasons a fresh replica refuses `message` for.
        fn refusals(&self, message: VerifiedMessage) -> Vec<Rejection> {
            let actions = self.replica().step(Time::ZERO, Input::Message(message));
            actions.rejected.iter().map(|r| r.reason).collect()
        }
    }

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    /// The one frame `attack` turns `frame` into.
    fn single(adversary: &mut Adversary, frame: &Bytes, attack: Attack, seed: u64) -> Bytes {
        let out = adversary.corrupt(frame, attack, &mut rng(seed));
        assert_eq!(out.len(), 1, "{attack}: {out:?}");
        out.into_iter().next().expect("one frame")
    }

    fn parts(frame: &Bytes) -> (Header, Vec<u8>, Vec<u8>) {
        let decoded = codec::decode_frame(frame, usize::MAX).expect("decodes");
        (
            decoded.header,
            decoded.payload.to_vec(),
            decoded.attachment.to_vec(),
        )
    }

    fn payload<T: serde::de::DeserializeOwned>(frame: &Bytes) -> T {
        codec::decode(&parts(frame).1).expect("payload decodes")
    }

    /// Asserts `out` verifies, has `input`'s header and attachment, and its payload is `expected`.
    fn assert_resigned<T: serde::de::DeserializeOwned + PartialEq + fmt::Debug>(
        fixture: &Fixture,
        input: &Bytes,
        out: &Bytes,
        expected: &T,
    ) {
        assert!(fixture.verify(out).is_ok(), "{:?}", fixture.verify(out));
        let (header, _, attachment) = parts(input);
        let (out_header, _, out_attachment) = parts(out);
        assert_eq!(header, out_header);
        assert_eq!(attachment, out_attachment);
        assert_eq!(&payload::<T>(out), expected);
    }

    #[test]
    fn names_are_distinct_kebab_case_and_round_trip() {
        let names: std::collections::BTreeSet<&str> =
            Attack::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names.len(), Attack::ALL.len());
        for attack in Attack::ALL {
            assert!(
                attack
                    .name()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-')
            );
            assert_eq!(Attack::from_name(attack.name()), Some(attack));
        }
    }

    #[test]
    fn the_fixture_is_valid_and_accepted() {
        let fixture = fixture();
        for frame in fixture.own_frames() {
            assert!(
                fixture.verify(&frame).is_ok(),
                "{:?}",
                fixture.verify(&frame)
            );
        }
        for frame in [&fixture.vc_prepared, &fixture.vc_proof, &fixture.new_view] {
            let message = fixture.verify(frame).expect("verifies");
            assert_eq!(fixture.refusals(message), vec![]);
        }
    }

    #[test]
    fn shift_view_and_seq_move_exactly_one_field_by_one() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        let moved = |a: u64, b: u64| a.abs_diff(b) == 1;
        for seed in 0..8 {
            let h: PrePrepareHeader = payload(&fixture.pre_prepare);
            let out = single(
                &mut adversary,
                &fixture.pre_prepare,
                Attack::ShiftView,
                seed,
            );
            let got: PrePrepareHeader = payload(&out);
            assert!(moved(got.view.0, h.view.0));
            assert_resigned(
                &fixture,
                &fixture.pre_prepare,
                &out,
                &PrePrepareHeader {
                    view: got.view,
                    ..h
                },
            );
            let out = single(&mut adversary, &fixture.pre_prepare, Attack::ShiftSeq, seed);
            let got: PrePrepareHeader = payload(&out);
            assert!(moved(got.seq.0, h.seq.0));
            assert_resigned(
                &fixture,
                &fixture.pre_prepare,
                &out,
                &PrePrepareHeader { seq: got.seq, ..h },
            );

            let p: Prepare = payload(&fixture.prepare);
            let out = single(&mut adversary, &fixture.prepare, Attack::ShiftView, seed);
            let got: Prepare = payload(&out);
            assert_eq!(got.view, View(1), "view 0 can only move up");
            assert_resigned(
                &fixture,
                &fixture.prepare,
                &out,
                &Prepare { view: View(1), ..p },
            );
            let out = single(&mut adversary, &fixture.prepare, Attack::ShiftSeq, seed);
            let got: Prepare = payload(&out);
            assert!(moved(got.seq.0, p.seq.0));
            assert_resigned(
                &fixture,
                &fixture.prepare,
                &out,
                &Prepare { seq: got.seq, ..p },
            );

            let c: Commit = payload(&fixture.commit);
            for attack in [Attack::ShiftView, Attack::ShiftSeq] {
                let out = single(&mut adversary, &fixture.commit, attack, seed);
                let got: Commit = payload(&out);
                assert!(moved(got.view.0, c.view.0) != moved(got.seq.0, c.seq.0));
                assert_resigned(
                    &fixture,
                    &fixture.commit,
                    &out,
                    &Commit {
                        view: got.view,
                        seq: got.seq,
                        ..c
                    },
                );
            }

            let k: Checkpoint = payload(&fixture.checkpoint);
            let out = single(&mut adversary, &fixture.checkpoint, Attack::ShiftSeq, seed);
            let got: Checkpoint = payload(&out);
            assert!(moved(got.seq.0, k.seq.0));
            assert_resigned(
                &fixture,
                &fixture.checkpoint,
                &out,
                &Checkpoint { seq: got.seq, ..k },
            );

            let vc: ViewChangePayload = payload(&fixture.vc_prepared);
            let out = single(
                &mut adversary,
                &fixture.vc_prepared,
                Attack::ShiftView,
                seed,
            );
            let got: ViewChangePayload = payload(&out);
            assert!(moved(got.new_view.0, vc.new_view.0));
            assert_resigned(
                &fixture,
                &fixture.vc_prepared,
                &out,
                &ViewChangePayload {
                    new_view: got.new_view,
                    ..vc.clone()
                },
            );
        }
    }

    #[test]
    fn inapplicable_attacks_leave_the_frame_unchanged() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        let request = &fixture.requests[0];
        let cases = [
            (&fixture.checkpoint, Attack::ShiftView),
            (&fixture.vc_prepared, Attack::ShiftSeq),
            (&fixture.new_view, Attack::ShiftView),
            (&fixture.new_view, Attack::SwapDigest),
            (&fixture.new_view, Attack::Equivocate),
            (&fixture.prepare, Attack::ForgeCertificate),
            (&fixture.prepare, Attack::ReplayOld),
            (&fixture.prepare, Attack::StaleCertificate),
            // Another principal's frame (a relayed request) cannot be re-signed.
            (request, Attack::ShiftView),
            (request, Attack::Equivocate),
            (request, Attack::SwapDigest),
        ];
        for (frame, attack) in cases {
            assert_eq!(
                adversary.corrupt(frame, attack, &mut rng(3)),
                vec![frame.clone()],
                "{attack}"
            );
        }
        // Not its own: another replica's prepare.
        let other = testkit::prepare(2, 0, 1, fixture.digest);
        assert_eq!(
            adversary.corrupt(&other, Attack::ShiftSeq, &mut rng(3)),
            vec![other.clone()]
        );
    }

    #[test]
    fn equivocation_verifies_with_another_valid_batch_or_digest() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        // An observed request that is not in the batch can be added to it.
        let extra = Request {
            timestamp: 9,
            operation: b"extra".to_vec(),
        }
        .sign(
            &testkit::client_key(2),
            CLUSTER_ID,
            Principal::Client(ClientId(2)),
        );
        adversary.observe(&extra);
        let mut sizes = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let out = single(
                &mut adversary,
                &fixture.pre_prepare,
                Attack::Equivocate,
                seed,
            );
            let Ok(VerifiedMessage::PrePrepare(m)) = fixture.verify(&out) else {
                panic!("equivocation does not verify: {:?}", fixture.verify(&out));
            };
            let (view, seq, digest) = (m.message().view, m.message().seq, m.message().digest);
            assert_eq!((view, seq), (View(1), SeqNum(1)));
            assert_ne!(digest, fixture.digest);
            sizes.insert(m.message().requests.as_ref().expect("batch attached").len());
        }
        assert_eq!(
            sizes,
            [0, 2, 3, 4].into(),
            "empty, dropped, reordered and extended batches"
        );

        for frame in [&fixture.prepare, &fixture.commit, &fixture.checkpoint] {
            let (header, payload_bytes, _) = parts(frame);
            let out = single(&mut adversary, frame, Attack::Equivocate, 1);
            let (out_header, out_payload, _) = parts(&out);
            assert!(fixture.verify(&out).is_ok());
            assert_eq!(header, out_header);
            // Same view and sequence number (the encoded prefix), another digest.
            assert_ne!(payload_bytes, out_payload);
            assert_eq!(payload_bytes.len(), out_payload.len());
            assert_eq!(
                payload_bytes[..payload_bytes.len() - 32],
                out_payload[..out_payload.len() - 32]
            );
        }

        // A VIEW-CHANGE that forgets what it prepared: still valid.
        let out = single(&mut adversary, &fixture.vc_prepared, Attack::Equivocate, 1);
        let vc: ViewChangePayload = payload(&out);
        assert!(vc.prepared.is_empty());
        let message = fixture.verify(&out).expect("verifies");
        assert_eq!(fixture.refusals(message), vec![]);
        let out = single(&mut adversary, &fixture.vc_proof, Attack::Equivocate, 1);
        let vc: ViewChangePayload = payload(&out);
        assert_eq!((vc.stable_seq, vc.checkpoint_proof.len()), (SeqNum(0), 0));
    }

    #[test]
    fn swapped_digests_match_nothing() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        let out = single(&mut adversary, &fixture.pre_prepare, Attack::SwapDigest, 5);
        assert_eq!(
            fixture.verify(&out).unwrap_err(),
            VerifyError::BatchDigestMismatch
        );
        let p: Prepare = payload(&fixture.prepare);
        let out = single(&mut adversary, &fixture.prepare, Attack::SwapDigest, 5);
        let got: Prepare = payload(&out);
        assert_ne!(got.digest, p.digest);
        assert_resigned(
            &fixture,
            &fixture.prepare,
            &out,
            &Prepare {
                digest: got.digest,
                ..p
            },
        );
    }

    #[test]
    fn invalid_signatures_oversized_frames_and_garbage_are_refused() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        let max = fixture.config.limits.max_message_bytes;
        let mut frames = fixture.own_frames();
        frames.push(fixture.requests[0].clone());
        for frame in &frames {
            let sender = parts(frame).0.sender;
            for seed in 0..16 {
                let out = single(&mut adversary, frame, Attack::InvalidSignature, seed);
                assert_eq!(
                    fixture.verify(&out).unwrap_err(),
                    VerifyError::BadSignature(sender)
                );

                let out = single(&mut adversary, frame, Attack::Oversized, seed);
                assert!(out.len() > max && out.len() <= max + OVERSIZE_EXTRA_BYTES);
                assert!(matches!(
                    fixture.verify(&out),
                    Err(VerifyError::Decode(codec::DecodeError::TooLarge { .. }))
                ));

                let out = single(&mut adversary, frame, Attack::Garbage, seed);
                assert_ne!(&out, frame);
                assert!(fixture.verify(&out).is_err());
            }
        }
    }

    #[test]
    fn future_floods_verify_and_are_for_higher_views() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        let mut kinds = std::collections::BTreeSet::new();
        for frame in [&fixture.prepare, &fixture.pre_prepare] {
            let view = payload::<Prepare>(frame).view; // a pre-prepare's header starts the same way
            for seed in 0..8 {
                let out = adversary.corrupt(frame, Attack::FutureFlood, &mut rng(seed));
                assert!(out.len() >= 2 && out.len() <= MAX_FRAMES_PER_CALL);
                assert_eq!(&out[0], frame);
                for flood in &out[1..] {
                    let message = fixture.verify(flood).expect("flood frames verify");
                    kinds.insert(message.kind());
                    let flood_view = match &message {
                        VerifiedMessage::Prepare(m) => m.message().view,
                        VerifiedMessage::Commit(m) => m.message().view,
                        VerifiedMessage::PrePrepare(m) => {
                            assert_eq!(m.message().view.primary(4), ReplicaId(ME));
                            m.message().view
                        }
                        VerifiedMessage::ViewChange(m) => m.message().new_view,
                        other => panic!("unexpected flood message {other:?}"),
                    };
                    assert!(flood_view > view && flood_view.0 <= view.0 + FUTURE_VIEW_SPAN + 4);
                }
            }
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
    }

    #[test]
    fn replays_return_observed_frames() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        let frame = fixture.commit.clone();
        assert_eq!(
            adversary.corrupt(&frame, Attack::ReplayOld, &mut rng(0)),
            vec![frame.clone()]
        );
        let observed = [
            fixture.prepare.clone(),
            testkit::commit(2, 1, 1, fixture.digest),
            fixture.checkpoint.clone(),
        ];
        for f in &observed {
            adversary.observe(f);
        }
        adversary.observe(&frame);
        let mut replayed = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let out = adversary.corrupt(&frame, Attack::ReplayOld, &mut rng(seed));
            let old = out.last().expect("a frame");
            assert!(observed.contains(old), "{old:?}");
            assert!(out.len() == 1 || (out.len() == 2 && out[0] == frame));
            replayed.insert(old.clone());
        }
        assert_eq!(replayed.len(), observed.len());
    }

    #[test]
    fn forged_certificates_are_refused_by_the_verifier_or_the_replica() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        let empty = view_change(ME, 1, 0, &[], &[]);
        let (mut by_verifier, mut by_replica) = (0, 0);
        for frame in [
            &fixture.vc_prepared,
            &fixture.vc_proof,
            &empty,
            &fixture.new_view,
        ] {
            let kind = parts(frame).0.kind;
            for seed in 0..48 {
                let out = single(&mut adversary, frame, Attack::ForgeCertificate, seed);
                assert_ne!(&out, frame);
                assert_eq!(parts(&out).0, parts(frame).0, "signed as itself, same kind");
                match fixture.verify(&out) {
                    Err(error) => {
                        // A forged signature inside the certificate (nested one level deeper in
                        // a NEW-VIEW's VIEW-CHANGE).
                        let VerifyError::Embedded { error, .. } = &error else {
                            panic!("{kind:?}, seed {seed}: {error:?}");
                        };
                        let inner = match &**error {
                            VerifyError::Embedded { error, .. } => &**error,
                            error => error,
                        };
                        assert!(matches!(inner, VerifyError::BadSignature(_)), "{inner:?}");
                        by_verifier += 1;
                    }
                    Ok(message) => {
                        by_replica += 1;
                        let expected = if kind == MessageKind::NewView {
                            Rejection::InvalidNewView
                        } else {
                            Rejection::InvalidViewChange
                        };
                        assert_eq!(
                            fixture.refusals(message),
                            vec![expected],
                            "{kind:?}, seed {seed}"
                        );
                    }
                }
            }
        }
        assert!(
            by_verifier > 0 && by_replica > 0,
            "{by_verifier} {by_replica}"
        );
    }

    #[test]
    fn stale_certificates_reuse_old_material() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        adversary.observe(&fixture.new_view); // view 1, with the VIEW-CHANGEs of replicas 1, 2, 3
        let vc5 = view_change(ME, 5, 0, &[], &[]);
        let nv5 = signed(
            ME,
            &NewViewPayload {
                view: View(5),
                view_changes: (1..=3)
                    .map(|i| bytes(&view_change(i, 5, 0, &[], &[])))
                    .collect(),
                pre_prepares: Vec::new(),
            },
        );
        assert!(fixture.verify(&nv5).is_ok());
        let observed_vcs: Vec<Bytes> = (1..=3)
            .map(|i| view_change(i, 1, 0, &[], std::slice::from_ref(&fixture.certificate)))
            .collect();
        let (mut resent, mut rebuilt) = (0, 0);
        for seed in 0..32 {
            let out = single(&mut adversary, &vc5, Attack::StaleCertificate, seed);
            fixture.verify(&out).expect("stale VIEW-CHANGEs verify");
            if observed_vcs.contains(&out) {
                resent += 1;
            } else {
                rebuilt += 1;
                let vc: ViewChangePayload = payload(&out);
                assert_eq!(parts(&out).0.sender, Principal::Replica(ReplicaId(ME)));
                assert_eq!(vc.new_view, View(5));
                assert_eq!(vc.prepared, vec![fixture.certificate.clone()]);
            }

            let out = single(&mut adversary, &nv5, Attack::StaleCertificate, seed);
            if out == fixture.new_view {
                resent += 1;
                continue;
            }
            rebuilt += 1;
            let message = fixture.verify(&out).expect("stale NEW-VIEWs verify");
            assert_eq!(fixture.refusals(message), vec![Rejection::InvalidNewView]);
        }
        assert!(resent > 0 && rebuilt > 0);

        // After any other frame: an old VIEW-CHANGE or NEW-VIEW re-sent with it.
        let out = adversary.corrupt(&fixture.prepare, Attack::StaleCertificate, &mut rng(0));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], fixture.prepare);
        assert!(observed_vcs.contains(&out[1]) || out[1] == fixture.new_view);
    }

    #[test]
    fn the_same_seed_gives_the_same_frames() {
        let fixture = fixture();
        let run = || {
            let mut adversary = fixture.adversary();
            adversary.observe(&fixture.new_view);
            adversary.observe(&fixture.requests[0]);
            let mut rng = rng(42);
            let mut out = Vec::new();
            for frame in fixture.own_frames() {
                for attack in Attack::ALL {
                    out.push(adversary.corrupt(&frame, attack, &mut rng));
                }
            }
            out
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn replies_are_not_reshaped() {
        let fixture = fixture();
        let mut adversary = fixture.adversary();
        let reply = signed(
            ME,
            &Reply {
                view: View(0),
                client: ClientId(1),
                timestamp: 1,
                outcome: Outcome::Ok(b"x".to_vec()),
            },
        );
        for attack in [
            Attack::ShiftView,
            Attack::ShiftSeq,
            Attack::Equivocate,
            Attack::SwapDigest,
        ] {
            assert_eq!(
                adversary.corrupt(&reply, attack, &mut rng(0)),
                vec![reply.clone()]
            );
        }
    }

    const KINDS: [MessageKind; 13] = [
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

    proptest! {
        #[test]
        fn corrupt_never_panics(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            kind in 0..KINDS.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            attachment in proptest::collection::vec(any::<u8>(), 0..64),
            seed in any::<u64>(),
        ) {
            let fixture = fixture();
            let mut adversary = fixture.adversary();
            // Its own signature over arbitrary payloads of every kind, and arbitrary bytes.
            let header = Header {
                cluster: CLUSTER_ID,
                kind: KINDS[kind],
                sender: Principal::Replica(ReplicaId(ME)),
            };
            let own = codec::sign_frame(&testkit::replica_key(ME), header, &payload, &attachment);
            let raw = Bytes::from(raw);
            let mut rng = rng(seed);
            for frame in [&raw, &own] {
                adversary.observe(frame);
            }
            adversary.observe(&fixture.new_view);
            for frame in [&raw, &own, &fixture.new_view, &fixture.vc_proof] {
                for attack in Attack::ALL {
                    let out = adversary.corrupt(frame, attack, &mut rng);
                    prop_assert!(!out.is_empty() && out.len() <= MAX_FRAMES_PER_CALL);
                }
            }
        }
    }
}
