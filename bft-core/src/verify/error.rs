//! Why a frame was rejected before reaching protocol logic.

use crate::codec::DecodeError;
use crate::ids::Principal;
use crate::messages::MessageKind;

/// Why a frame was rejected before reaching protocol logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The frame or its payload could not be decoded, or is over the size limit.
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    /// The frame belongs to another cluster.
    #[error("frame for cluster {got}, this is cluster {expected}")]
    WrongCluster {
        /// This cluster's id.
        expected: u64,
        /// The frame's cluster id.
        got: u64,
    },
    /// The sender is not a configured replica or an admitted client.
    #[error("sender {0} is not a member or admitted client")]
    UnknownSender(Principal),
    /// The sender's role may not send this kind of message (a client sending a commit, say).
    #[error("{sender} may not send {kind:?}")]
    WrongRole {
        /// The message kind.
        kind: MessageKind,
        /// The sender.
        sender: Principal,
    },
    /// The signature does not verify under the sender's configured key.
    #[error("bad signature from {0}")]
    BadSignature(Principal),
    /// A reply (authenticated by its channel, not signed) reached a verifier that was not told
    /// which peer the channel is authenticated as.
    #[error("reply from {0} without an authenticated channel")]
    ReplyWithoutChannel(Principal),
    /// A reply, or a request a client sent directly, names a sender its channel does not speak
    /// for (`Verifier::speaks_for`): another replica than the channel's, or a client with another
    /// key than the channel's.
    #[error("frame claims to be from {sender} on a channel from {peer}")]
    SenderIsNotPeer {
        /// The sender the frame names.
        sender: Principal,
        /// The peer the channel is authenticated as.
        peer: Principal,
    },
    /// A request's operation exceeds `limits.max_operation_bytes`.
    #[error("operation of {len} bytes exceeds the limit of {max}")]
    OperationTooLarge {
        /// Operation length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A pre-prepare exceeds `limits.max_batch_requests` or `limits.max_batch_bytes`.
    #[error("batch of {requests} requests and {bytes} bytes exceeds the limits")]
    BatchTooLarge {
        /// Requests in the batch.
        requests: usize,
        /// Request bytes in the batch.
        bytes: usize,
    },
    /// A message other than a pre-prepare carries an (unsigned) attachment.
    #[error("a {0:?} may not carry an attachment")]
    UnexpectedAttachment(MessageKind),
    /// A state chunk exceeds `limits.state_chunk_bytes`.
    #[error("state chunk of {len} bytes exceeds the limit of {max}")]
    ChunkTooLarge {
        /// Chunk length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A state manifest lists more chunks than [`crate::Limits::max_state_chunks`].
    #[error("state manifest of {chunks} chunks exceeds the limit of {max}")]
    ManifestTooLarge {
        /// Chunks listed.
        chunks: usize,
        /// The limit.
        max: usize,
    },
    /// A message embedded in a certificate is invalid, of the wrong kind, or too many.
    #[error("embedded message {index} rejected: {error}")]
    Embedded {
        /// Position among the embedded messages.
        index: usize,
        /// Why it was rejected.
        error: Box<VerifyError>,
    },
    /// A NEW-VIEW from a replica that is not the primary of its view.
    #[error("NEW-VIEW from {0}, not the primary of its view")]
    NewViewNotFromPrimary(Principal),
    /// A certificate embeds a message of a kind it cannot hold.
    #[error("a {0:?} cannot be embedded here")]
    UnexpectedEmbeddedKind(MessageKind),
    /// A certificate embeds a list longer than its bound (the number of replicas for votes, the
    /// window for per-sequence-number entries).
    #[error("{0} embedded messages exceed the bound for that list")]
    TooManyEmbedded(usize),
    /// A pre-prepare's digest does not match its requests.
    #[error("pre-prepare digest does not match its batch")]
    BatchDigestMismatch,
    /// A request embedded in a pre-prepare is invalid.
    #[error("embedded request {index} rejected: {error}")]
    EmbeddedRequest {
        /// Position in the batch.
        index: usize,
        /// Why it was rejected.
        error: Box<VerifyError>,
    },
}
