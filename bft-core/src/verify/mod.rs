//! Turning untrusted bytes into verified messages: a pure function of the frame and the
//! configuration, which a driver may run on any thread and in batches.
//!
//! Only this module constructs [`Verified`] values from the network, and the replica's input type
//! accepts nothing else, so protocol logic never sees unauthenticated input. The checks, in
//! order: size limit, frame decoding, cluster id, sender membership and role, signature over the
//! exact received bytes, then payload decoding and the message's own limits. A pre-prepare's
//! embedded client requests get the same checks, and its batch digest is recomputed.
//!
//! Replies are the one kind authenticated by the channel instead of a signature, as PBFT
//! authenticates them with a MAC rather than a signature (Castro and Liskov, OSDI '99, sections
//! 4.1 and 5.2). A reply concerns one
//! client and is never relayed or embedded in a certificate, so nothing needs to check it again
//! later; the client accepts it only from [`Verifier::verify_from`], for a frame that arrived on
//! a channel authenticated as the reply's sender (a QUIC connection whose handshake proved that
//! replica's key). This saves every replica a signature and the client n verifications per
//! operation.
//!
//! Requests embedded in a pre-prepare are another case, at backups only: one whose exact frame
//! its client sent this replica directly, over its authenticated channel, is authenticated by
//! that channel ([`Verifier::verify_from_at`], [`Verifier::verify_batch_at`]; see
//! [`DirectRequests`] for why, and for what the primary still checks). Requests keep their
//! signatures: the primary checks them, and so does anyone who gets a batch otherwise.
//!
//! PREPAREs and COMMITs are the third: a vote that arrives on a channel authenticated as its
//! signer is accepted without a signature check, as PBFT authenticates them with MAC
//! authenticators (sections 4.2 and 5.2), and says so ([`Verified::signature_checked`]). The
//! channel proves who sent it. But votes also travel further: prepares in the prepared
//! certificates of a VIEW-CHANGE (section 4.4), commits in the commit certificate of a committed
//! batch (catch-up, TOCS 2002 section 6), and a correct replica's certificates must verify
//! wherever it shows them. So a replica checks the signatures of the votes it counts toward
//! prepared (2f prepares) and committed-local (2f+1 commits), once that many are there and only
//! as many as that needs: votes that arrive after the slot prepared or committed are never
//! checked. A vote whose signature fails is dropped there, and counts as a missing vote, as when
//! the verifier refused it. With correct replicas, the votes of a batch then cost the cluster 13
//! signature checks instead of 21 at n = 4 (50 instead of 78 at n = 7), and the checks happen in
//! the replica's step, once the quorum is there, instead of on arrival.

use crate::codec::{self, DecodeError, Header};
use crate::config::{ClusterConfig, ConfigError};
use crate::ids::{Principal, ReplicaId};
use crate::messages::{
    Checkpoint, Commit, CommittedBatch, CommittedBatchPayload, FetchCommitted, FetchState,
    MessageKind, NewView, NewViewPayload, PrePrepare, PrePrepareHeader, PrePreparePayload, Prepare,
    Reply, Request, StateChunk, StateManifest, ViewChange, ViewChangePayload, batch_digest,
};
use bft_crypto::{BatchVerifier, Digest, PreparedKey, PublicKey, Signature, sha256, verify_raw};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

mod certificates;
mod direct;
mod error;

pub use direct::{AdmittedRequest, DIRECT_HISTORY, DirectAdmission, DirectRequests};
pub use error::VerifyError;

/// A message whose frame decoded, whose sender is a configured member or admitted client allowed
/// to send its kind, and whose signature verified. Only [`Verifier`] (and the replica, for its own
/// messages) can make one.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    sender: Principal,
    message: T,
    frame: Bytes,
    digest: Digest,
    /// The signature was checked (or the message is this replica's own); false when only the
    /// channel it came on authenticated it.
    signature_checked: bool,
}

impl<T> Verified<T> {
    /// A message whose signature was checked, or this replica's own.
    pub(crate) fn new(sender: Principal, message: T, frame: Bytes, digest: Digest) -> Self {
        Verified {
            sender,
            message,
            frame,
            digest,
            signature_checked: true,
        }
    }

    /// Whether the frame's signature was checked. False for a message its channel alone
    /// authenticated (a reply, a commit from its signer, a request its client sent this replica
    /// directly): its sender is proven to this node, but its signature may be wrong, so it must
    /// not be relayed as proof to anyone else before its signature is checked.
    pub fn signature_checked(&self) -> bool {
        self.signature_checked
    }

    /// The authenticated sender.
    pub fn sender(&self) -> Principal {
        self.sender
    }

    /// The decoded message.
    pub fn message(&self) -> &T {
        &self.message
    }

    /// The frame exactly as received (to relay or store it).
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// SHA-256 of the signed bytes (domain header and payload): identifies the message.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

/// Any verified protocol message.
#[derive(Debug, Clone)]
pub enum VerifiedMessage {
    /// A client request.
    Request(Verified<Request>),
    /// A pre-prepare with its verified batch.
    PrePrepare(Verified<PrePrepare>),
    /// A prepare.
    Prepare(Verified<Prepare>),
    /// A commit.
    Commit(Verified<Commit>),
    /// A reply (for clients).
    Reply(Verified<Reply>),
    /// A checkpoint vote.
    Checkpoint(Verified<Checkpoint>),
    /// A request for checkpoint state.
    FetchState(Verified<FetchState>),
    /// A checkpoint state manifest.
    StateManifest(Verified<StateManifest>),
    /// A chunk of checkpoint state.
    StateChunk(Verified<StateChunk>),
    /// A request for committed batches.
    FetchCommitted(Verified<FetchCommitted>),
    /// A committed batch with its commit certificate.
    CommittedBatch(Verified<CommittedBatch>),
    /// A view change.
    ViewChange(Verified<ViewChange>),
    /// A new view.
    NewView(Verified<NewView>),
}

/// Applies `$body` to the `Verified<_>` inside any variant.
macro_rules! each_variant {
    ($value:expr, $m:ident => $body:expr) => {
        match $value {
            VerifiedMessage::Request($m) => $body,
            VerifiedMessage::PrePrepare($m) => $body,
            VerifiedMessage::Prepare($m) => $body,
            VerifiedMessage::Commit($m) => $body,
            VerifiedMessage::Reply($m) => $body,
            VerifiedMessage::Checkpoint($m) => $body,
            VerifiedMessage::FetchState($m) => $body,
            VerifiedMessage::StateManifest($m) => $body,
            VerifiedMessage::StateChunk($m) => $body,
            VerifiedMessage::FetchCommitted($m) => $body,
            VerifiedMessage::CommittedBatch($m) => $body,
            VerifiedMessage::ViewChange($m) => $body,
            VerifiedMessage::NewView($m) => $body,
        }
    };
}

impl VerifiedMessage {
    /// The authenticated sender.
    pub fn sender(&self) -> Principal {
        each_variant!(self, m => m.sender())
    }

    /// The message kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            VerifiedMessage::Request(_) => MessageKind::Request,
            VerifiedMessage::PrePrepare(_) => MessageKind::PrePrepare,
            VerifiedMessage::Prepare(_) => MessageKind::Prepare,
            VerifiedMessage::Commit(_) => MessageKind::Commit,
            VerifiedMessage::Reply(_) => MessageKind::Reply,
            VerifiedMessage::Checkpoint(_) => MessageKind::Checkpoint,
            VerifiedMessage::FetchState(_) => MessageKind::FetchState,
            VerifiedMessage::StateManifest(_) => MessageKind::StateManifest,
            VerifiedMessage::StateChunk(_) => MessageKind::StateChunk,
            VerifiedMessage::FetchCommitted(_) => MessageKind::FetchCommitted,
            VerifiedMessage::CommittedBatch(_) => MessageKind::CommittedBatch,
            VerifiedMessage::ViewChange(_) => MessageKind::ViewChange,
            VerifiedMessage::NewView(_) => MessageKind::NewView,
        }
    }

    /// The frame as received.
    pub fn frame(&self) -> &Bytes {
        each_variant!(self, m => m.frame())
    }

    pub(crate) fn into_pre_prepare(self) -> Option<Verified<PrePrepare>> {
        match self {
            VerifiedMessage::PrePrepare(m) => Some(m),
            _ => None,
        }
    }

    pub(crate) fn into_prepare(self) -> Option<Verified<Prepare>> {
        match self {
            VerifiedMessage::Prepare(m) => Some(m),
            _ => None,
        }
    }

    pub(crate) fn into_commit(self) -> Option<Verified<Commit>> {
        match self {
            VerifiedMessage::Commit(m) => Some(m),
            _ => None,
        }
    }

    pub(crate) fn into_checkpoint(self) -> Option<Verified<Checkpoint>> {
        match self {
            VerifiedMessage::Checkpoint(m) => Some(m),
            _ => None,
        }
    }

    pub(crate) fn into_view_change(self) -> Option<Verified<ViewChange>> {
        match self {
            VerifiedMessage::ViewChange(m) => Some(m),
            _ => None,
        }
    }
}

/// A frame that passed the header checks and waits for its signature check.
struct Parsed {
    frame: Bytes,
    /// The unsigned attachment (a pre-prepare's batch), as a slice of `frame`.
    attachment: Bytes,
    header: Header,
    payload_offset: usize,
    key: PublicKey,
    signed: Vec<u8>,
    signature: Signature,
    /// Authenticated by the channel it came on: no signature to check (replies, commits from
    /// their signer, and requests embedded in a pre-prepare that their client sent this replica
    /// directly).
    channel_authenticated: bool,
}

impl Parsed {
    fn payload(&self) -> &[u8] {
        &self.signed[self.payload_offset..]
    }

    /// Wraps `message`, decoded from this frame, as verified (its digest is that of the signed
    /// bytes).
    fn into_verified<T>(self, message: T) -> Verified<T> {
        let digest = sha256(&self.signed);
        let mut verified = Verified::new(self.header.sender, message, self.frame, digest);
        verified.signature_checked = !self.channel_authenticated;
        verified
    }

    /// Decodes the payload as `T` and wraps it as verified.
    fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(
        self,
    ) -> Result<Verified<T>, VerifyError> {
        let message = codec::decode(self.payload())?;
        Ok(self.into_verified(message))
    }
}

/// Verifies frames for one cluster configuration.
#[derive(Debug, Clone)]
pub struct Verifier {
    config: Arc<ClusterConfig>,
    /// Every member's key, decoded once (single checks then skip decoding the key).
    prepared: Arc<BTreeMap<Principal, PreparedKey>>,
}

/// Whether signatures are checked one by one or as one batch (same results either way).
#[derive(Clone, Copy)]
enum Mode {
    Single,
    Batch,
}

impl Verifier {
    /// A verifier for `config`, which must be valid.
    pub fn new(config: Arc<ClusterConfig>) -> Result<Self, ConfigError> {
        config.validate()?;
        let replicas = config
            .replicas
            .iter()
            .enumerate()
            .map(|(i, key)| (Principal::Replica(ReplicaId(i as u32)), key));
        let clients = config
            .clients
            .iter()
            .map(|(id, key)| (Principal::Client(*id), key));
        // Valid configurations hold only valid points; a key that did not decode would simply
        // be checked the undecoded way, with the same result.
        let prepared = replicas
            .chain(clients)
            .filter_map(|(principal, key)| Some((principal, PreparedKey::new(key).ok()?)))
            .collect();
        Ok(Verifier {
            config,
            prepared: Arc::new(prepared),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<ClusterConfig> {
        &self.config
    }

    /// Verifies one frame whose channel proves nothing about its sender: every kind must be
    /// signed, so a reply is refused ([`VerifyError::ReplyWithoutChannel`]).
    pub fn verify(&self, frame: Bytes) -> Result<VerifiedMessage, VerifyError> {
        self.verify_one(Channel::Unauthenticated, frame, Embedded::Signed)
    }

    /// Verifies one frame that arrived on a channel authenticated as `peer` (a connection whose
    /// handshake proved `peer`'s key, or a simulated network that knows the sender). A reply or
    /// a commit is accepted without a signature check if its sender is `peer` (see the module
    /// documentation); every other kind, and a commit relayed by someone else, is checked exactly
    /// as [`Verifier::verify`] checks it, since those are relayed or embedded in certificates and
    /// must carry their own proof.
    pub fn verify_from(
        &self,
        peer: Principal,
        frame: Bytes,
    ) -> Result<VerifiedMessage, VerifyError> {
        self.verify_one(Channel::From(peer), frame, Embedded::Signed)
    }

    /// [`Verifier::verify_from`] at a replica that records the requests clients send it
    /// directly: a pre-prepare's embedded request whose frame its client sent this replica
    /// directly ([`DirectRequests::holds`]) is authenticated by that channel, and its signature
    /// is not checked (see [`DirectRequests`]).
    pub fn verify_from_at(
        &self,
        peer: Principal,
        frame: Bytes,
        direct: &DirectRequests,
    ) -> Result<VerifiedMessage, VerifyError> {
        self.verify_one(Channel::From(peer), frame, Embedded::Direct(direct))
    }

    /// Verifies a frame replica `own` read back from its own durable log, where it wrote only
    /// messages it had accepted: what a channel authenticated when it arrived (another replica's
    /// prepare or commit, a request its client sent directly) is taken as authenticated again,
    /// and every other signature is checked as [`Verifier::verify`] checks it, `own`'s included
    /// (it signed them itself, so a bad one is corruption).
    pub fn verify_recorded(
        &self,
        own: ReplicaId,
        frame: Bytes,
    ) -> Result<VerifiedMessage, VerifyError> {
        self.verify_one(Channel::OwnLog(own), frame, Embedded::Recorded)
    }

    /// Verifies many frames with batched signature checks, returning one result per frame in
    /// order. Accepts and rejects exactly what [`Verifier::verify`] does.
    pub fn verify_batch(&self, frames: Vec<Bytes>) -> Vec<Result<VerifiedMessage, VerifyError>> {
        let frames = frames
            .into_iter()
            .map(|frame| (Channel::Unauthenticated, frame))
            .collect();
        self.verify_all(frames, Mode::Batch, Embedded::Signed)
    }

    /// Verifies many frames, each with the peer whose authenticated channel it arrived on, with
    /// batched signature checks, at a replica that records the requests clients send it
    /// directly: one result per frame, in order, exactly as [`Verifier::verify_from_at`] would
    /// give them one by one.
    pub fn verify_batch_at(
        &self,
        frames: Vec<(Principal, Bytes)>,
        direct: &DirectRequests,
    ) -> Vec<Result<VerifiedMessage, VerifyError>> {
        let frames = frames
            .into_iter()
            .map(|(peer, frame)| (Channel::From(peer), frame))
            .collect();
        self.verify_all(frames, Mode::Batch, Embedded::Direct(direct))
    }

    fn verify_one(
        &self,
        channel: Channel,
        frame: Bytes,
        embedded: Embedded<'_>,
    ) -> Result<VerifiedMessage, VerifyError> {
        self.verify_all(vec![(channel, frame)], Mode::Single, embedded)
            .pop()
            .expect("one result per frame")
    }

    fn verify_all(
        &self,
        frames: Vec<(Channel, Bytes)>,
        mode: Mode,
        embedded: Embedded<'_>,
    ) -> Vec<Result<VerifiedMessage, VerifyError>> {
        let max = self.config.limits.max_message_bytes;
        let parsed: Vec<Result<Parsed, VerifyError>> = frames
            .into_iter()
            .map(|(channel, frame)| self.parse(frame, max, channel))
            .collect();
        let checked = check_signatures(parsed, mode, &self.prepared);
        // Decode payloads; pre-prepares yield nested request frames that need their own checks.
        let mut results: Vec<Option<Result<VerifiedMessage, VerifyError>>> =
            Vec::with_capacity(checked.len());
        // Requests nested in pre-prepares: which frame owns each, and its parse result.
        let mut nested_owner: Vec<usize> = Vec::new();
        let mut nested: Vec<Result<Parsed, VerifyError>> = Vec::new();
        let mut pre_prepares = Vec::new();
        for (index, item) in checked.into_iter().enumerate() {
            match item.and_then(|parsed| self.decode_payload(parsed)) {
                Ok(Decoded::Done(message)) => results.push(Some(Ok(message))),
                Ok(Decoded::PrePrepare(parsed, mut payload)) => {
                    let limit = self.config.limits.max_request_frame_bytes();
                    for bytes in std::mem::take(&mut payload.requests) {
                        nested_owner.push(index);
                        let parsed = self.parse(
                            Bytes::from(bytes.into_vec()),
                            limit,
                            Channel::Unauthenticated,
                        );
                        nested.push(parsed.map(|p| embedded.authenticate(p)));
                    }
                    pre_prepares.push((index, parsed, payload));
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let mut requests_by_owner: BTreeMap<usize, Vec<Result<Verified<Request>, VerifyError>>> =
            BTreeMap::new();
        for (owner, item) in
            nested_owner
                .into_iter()
                .zip(check_signatures(nested, mode, &self.prepared))
        {
            let request = item.and_then(|parsed| self.decode_request(parsed));
            requests_by_owner.entry(owner).or_default().push(request);
        }
        for (index, parsed, payload) in pre_prepares {
            let requests = requests_by_owner.remove(&index).unwrap_or_default();
            results[index] = Some(finish_pre_prepare(parsed, payload, requests));
        }
        results
            .into_iter()
            .map(|r| r.expect("every result is set"))
            .collect()
    }

    /// Header checks and key lookup; builds the signed bytes. `channel` is what the frame came
    /// on.
    fn parse(&self, frame: Bytes, max_len: usize, channel: Channel) -> Result<Parsed, VerifyError> {
        let decoded = codec::decode_frame(&frame, max_len)?;
        let header = decoded.header;
        let key = self.check_header(&decoded)?;
        let peer = match channel {
            Channel::Unauthenticated => None,
            Channel::From(peer) => Some(peer),
            Channel::OwnLog(own) if header.sender == Principal::Replica(own) => None,
            Channel::OwnLog(_) => Some(header.sender),
        };
        // A vote on its signer's channel: the channel proves the sender (module documentation).
        let vote = matches!(header.kind, MessageKind::Prepare | MessageKind::Commit);
        let channel_authenticated =
            header.kind == MessageKind::Reply || (vote && peer == Some(header.sender));
        if header.kind == MessageKind::Reply {
            match peer {
                None => return Err(VerifyError::ReplyWithoutChannel(header.sender)),
                Some(peer) if peer != header.sender => {
                    return Err(VerifyError::SenderIsNotPeer {
                        sender: header.sender,
                        peer,
                    });
                }
                Some(_) => {}
            }
        }
        let attachment = frame.slice_ref(decoded.attachment);
        let mut signed = Vec::with_capacity(bft_crypto::DOMAIN_HEADER_LEN + decoded.payload.len());
        header.domain().write_header(&mut signed);
        let payload_offset = signed.len();
        signed.extend_from_slice(decoded.payload);
        let signature = decoded.signature;
        Ok(Parsed {
            frame,
            attachment,
            header,
            payload_offset,
            key,
            signed,
            signature,
            channel_authenticated,
        })
    }

    /// The checks every frame's header gets before anything else: cluster id, the sender's role
    /// for the kind, an attachment only on pre-prepares, and a configured sender, whose key is
    /// returned.
    fn check_header(&self, decoded: &codec::FrameRef<'_>) -> Result<PublicKey, VerifyError> {
        let header = decoded.header;
        if header.cluster != self.config.cluster_id {
            return Err(VerifyError::WrongCluster {
                expected: self.config.cluster_id,
                got: header.cluster,
            });
        }
        if !header.kind.allowed_from(header.sender) {
            return Err(VerifyError::WrongRole {
                kind: header.kind,
                sender: header.sender,
            });
        }
        if header.kind != MessageKind::PrePrepare && !decoded.attachment.is_empty() {
            return Err(VerifyError::UnexpectedAttachment(header.kind));
        }
        self.key_of(header.sender)
            .ok_or(VerifyError::UnknownSender(header.sender))
    }

    /// Whether a channel authenticated as `peer` speaks for `sender`: the same principal, or two
    /// sessions of one client key ([`ClusterConfig::same_client`]). A frame a client sends must
    /// be from a principal its channel speaks for.
    pub fn speaks_for(&self, peer: Principal, sender: Principal) -> bool {
        match (peer, sender) {
            (Principal::Client(peer), Principal::Client(sender)) => {
                self.config.same_client(peer, sender)
            }
            _ => peer == sender,
        }
    }

    fn key_of(&self, sender: Principal) -> Option<PublicKey> {
        match sender {
            Principal::Replica(ReplicaId(id)) => self.config.replicas.get(id as usize).copied(),
            Principal::Client(id) => self.config.clients.get(&id).copied(),
        }
    }

    fn decode_payload(&self, parsed: Parsed) -> Result<Decoded, VerifyError> {
        let limits = &self.config.limits;
        Ok(Decoded::Done(match parsed.header.kind {
            MessageKind::Request => VerifiedMessage::Request(self.decode_request(parsed)?),
            MessageKind::PrePrepare => {
                let header: PrePrepareHeader = codec::decode(parsed.payload())?;
                if parsed.attachment.is_empty() {
                    // A pre-prepare without its batch, as certificates carry it.
                    let PrePrepareHeader { view, seq, digest } = header;
                    let message = PrePrepare {
                        view,
                        seq,
                        digest,
                        requests: None,
                    };
                    return Ok(Decoded::Done(VerifiedMessage::PrePrepare(
                        parsed.into_verified(message),
                    )));
                }
                let requests: Vec<serde_bytes::ByteBuf> = codec::decode(&parsed.attachment)?;
                let bytes: usize = requests.iter().map(|r| r.len()).sum();
                if requests.len() > limits.max_batch_requests || bytes > limits.max_batch_bytes {
                    return Err(VerifyError::BatchTooLarge {
                        requests: requests.len(),
                        bytes,
                    });
                }
                let PrePrepareHeader { view, seq, digest } = header;
                let payload = PrePreparePayload {
                    view,
                    seq,
                    digest,
                    requests,
                };
                return Ok(Decoded::PrePrepare(parsed, payload));
            }
            MessageKind::Prepare => VerifiedMessage::Prepare(parsed.decode()?),
            MessageKind::Commit => VerifiedMessage::Commit(parsed.decode()?),
            MessageKind::Reply => VerifiedMessage::Reply(parsed.decode()?),
            MessageKind::Checkpoint => VerifiedMessage::Checkpoint(parsed.decode()?),
            MessageKind::FetchState => VerifiedMessage::FetchState(parsed.decode()?),
            MessageKind::FetchCommitted => VerifiedMessage::FetchCommitted(parsed.decode()?),
            MessageKind::StateManifest => {
                let manifest: Verified<StateManifest> = parsed.decode()?;
                let (chunks, max) = (
                    manifest.message().chunk_digests.len(),
                    limits.max_state_chunks(),
                );
                if chunks > max {
                    return Err(VerifyError::ManifestTooLarge { chunks, max });
                }
                VerifiedMessage::StateManifest(manifest)
            }
            MessageKind::StateChunk => {
                let chunk: Verified<StateChunk> = parsed.decode()?;
                let (len, max) = (chunk.message().data.len(), limits.state_chunk_bytes);
                if len > max {
                    return Err(VerifyError::ChunkTooLarge { len, max });
                }
                VerifiedMessage::StateChunk(chunk)
            }
            MessageKind::ViewChange => {
                let payload: ViewChangePayload = codec::decode(parsed.payload())?;
                let view_change = self.verify_view_change(payload)?;
                VerifiedMessage::ViewChange(parsed.into_verified(view_change))
            }
            MessageKind::NewView => {
                let payload: NewViewPayload = codec::decode(parsed.payload())?;
                // Checked before the (many) embedded signatures: only the primary of a view
                // may send its NEW-VIEW.
                let sender = parsed.header.sender;
                if sender != Principal::Replica(payload.view.primary(self.config.n())) {
                    return Err(VerifyError::NewViewNotFromPrimary(sender));
                }
                let new_view = self.verify_new_view(payload)?;
                VerifiedMessage::NewView(parsed.into_verified(new_view))
            }
            MessageKind::CommittedBatch => {
                let payload: CommittedBatchPayload = codec::decode(parsed.payload())?;
                let batch = self.verify_committed_batch(payload)?;
                VerifiedMessage::CommittedBatch(parsed.into_verified(batch))
            }
        }))
    }

    fn decode_request(&self, parsed: Parsed) -> Result<Verified<Request>, VerifyError> {
        if parsed.header.kind != MessageKind::Request {
            return Err(VerifyError::WrongRole {
                kind: parsed.header.kind,
                sender: parsed.header.sender,
            });
        }
        let frame_limit = self.config.limits.max_request_frame_bytes();
        if parsed.frame.len() > frame_limit {
            return Err(DecodeError::TooLarge {
                len: parsed.frame.len(),
                max: frame_limit,
            }
            .into());
        }
        let request: Request = codec::decode(parsed.payload())?;
        let max = self.config.limits.max_operation_bytes;
        if request.operation.len() > max {
            return Err(VerifyError::OperationTooLarge {
                len: request.operation.len(),
                max,
            });
        }
        Ok(parsed.into_verified(request))
    }
}

/// What a frame arrived on.
#[derive(Clone, Copy)]
enum Channel {
    /// Nothing that proves its sender: every signature is checked.
    Unauthenticated,
    /// A channel authenticated as this principal.
    From(Principal),
    /// The durable log of this replica, which holds only what it accepted: another sender's
    /// frame is taken as having arrived on that sender's channel; the replica's own frames are
    /// checked by their signatures.
    OwnLog(ReplicaId),
}

/// How a pre-prepare's embedded requests are authenticated.
#[derive(Clone, Copy)]
enum Embedded<'a> {
    /// By their signatures.
    Signed,
    /// By the client's channel if the client sent this replica exactly this frame directly (see
    /// [`DirectRequests`]), by signature otherwise.
    Direct(&'a DirectRequests),
    /// Read back from this replica's own log: it accepted them when it wrote the pre-prepare,
    /// by signature or by their client's channel.
    Recorded,
}

impl Embedded<'_> {
    /// Marks an embedded request as authenticated by its client's channel when that is how this
    /// replica knows it.
    fn authenticate(self, mut parsed: Parsed) -> Parsed {
        if parsed.header.kind != MessageKind::Request {
            return parsed;
        }
        parsed.channel_authenticated = match (self, parsed.header.sender) {
            (Embedded::Signed, _) => false,
            (Embedded::Direct(direct), Principal::Client(client)) => {
                direct.holds(client, &parsed.frame)
            }
            (Embedded::Direct(_), Principal::Replica(_)) => false,
            (Embedded::Recorded, _) => true,
        };
        parsed
    }
}

enum Decoded {
    Done(VerifiedMessage),
    PrePrepare(Parsed, PrePreparePayload),
}

fn finish_pre_prepare(
    parsed: Parsed,
    payload: PrePreparePayload,
    requests: Vec<Result<Verified<Request>, VerifyError>>,
) -> Result<VerifiedMessage, VerifyError> {
    let requests = requests
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            r.map_err(|error| VerifyError::EmbeddedRequest {
                index,
                error: Box::new(error),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if batch_digest(requests.iter().map(|r| r.digest)) != payload.digest {
        return Err(VerifyError::BatchDigestMismatch);
    }
    let message = PrePrepare {
        view: payload.view,
        seq: payload.seq,
        digest: payload.digest,
        requests: Some(requests.into()),
    };
    Ok(VerifiedMessage::PrePrepare(parsed.into_verified(message)))
}

/// Checks the signature of every parsed frame that needs one, keeping earlier errors.
fn check_signatures(
    items: Vec<Result<Parsed, VerifyError>>,
    mode: Mode,
    prepared: &BTreeMap<Principal, PreparedKey>,
) -> Vec<Result<Parsed, VerifyError>> {
    let signed = || {
        items
            .iter()
            .filter_map(|item| item.as_ref().ok())
            .filter(|p| !p.channel_authenticated)
    };
    // Members' keys are held decoded; the same rule either way.
    let single = |p: &Parsed| match prepared.get(&p.header.sender) {
        Some(key) => key.verify_raw(&p.signed, &p.signature),
        None => verify_raw(&p.key, &p.signed, &p.signature),
    };
    let signature_results: Vec<Result<(), bft_crypto::SignatureError>> = match mode {
        // One signature: the single check is the same rule and costs less than a batch.
        Mode::Batch if signed().count() > 1 => {
            let mut batch = BatchVerifier::new();
            for p in signed() {
                batch.queue(p.key, p.signed.as_slice(), p.signature);
            }
            batch.verify_each()
        }
        Mode::Single | Mode::Batch => signed().map(single).collect(),
    };
    let mut signature_results = signature_results.into_iter();
    items
        .into_iter()
        .map(|item| {
            let parsed = item?;
            if parsed.channel_authenticated {
                return Ok(parsed);
            }
            match signature_results
                .next()
                .expect("one result per signed frame")
            {
                Ok(()) => Ok(parsed),
                Err(_) => Err(VerifyError::BadSignature(parsed.header.sender)),
            }
        })
        .collect()
}
