//! Decoding and signing: this replica's own frames decoded (only these can be re-signed), its
//! signature over new content, and helpers for frames signed by anyone.

use super::Adversary;
use bft_core::codec::{self, FrameRef, Header};
use bft_core::messages::{
    Checkpoint, Commit, MessageKind, NewViewPayload, PrePrepareHeader, Prepare, ViewChangePayload,
    WireMessage,
};
use bft_core::{SeqNum, View};
use bft_crypto::{Digest, sha256};
use bytes::Bytes;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_bytes::ByteBuf;

/// One of this replica's own frames, decoded (only these can be re-signed with other content).
pub(super) enum Own {
    PrePrepare(PrePrepareHeader, Vec<u8>),
    Prepare(Prepare),
    Commit(Commit),
    Checkpoint(Checkpoint),
    ViewChange(ViewChangePayload),
    NewView(NewViewPayload),
    /// Another kind: no attack re-signs it.
    Other,
}

impl Adversary {
    /// Decodes `frame` if this replica signed it (only those can be re-signed).
    pub(super) fn decode_own(&self, frame: &[u8]) -> Option<Own> {
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

    pub(super) fn sign<M: WireMessage>(&self, message: &M) -> Bytes {
        message.sign(&self.key, self.config.cluster_id, self.me())
    }

    pub(super) fn sign_pre_prepare(&self, header: &PrePrepareHeader, batch: &[u8]) -> Bytes {
        let frame_header = Header {
            cluster: self.config.cluster_id,
            kind: MessageKind::PrePrepare,
            sender: self.me(),
        };
        codec::sign_frame(&self.key, frame_header, &codec::encode(header), batch)
    }

    pub(super) fn own_prepare(&self, view: View, seq: SeqNum, digest: Digest) -> ByteBuf {
        ByteBuf::from(self.sign(&Prepare { view, seq, digest }).to_vec())
    }

    pub(super) fn own_checkpoint(&self, seq: SeqNum, digest: Digest) -> ByteBuf {
        ByteBuf::from(self.sign(&Checkpoint { seq, digest }).to_vec())
    }

    pub(super) fn own_header(&self, view: View, seq: SeqNum, digest: Digest) -> ByteBuf {
        let header = PrePrepareHeader { view, seq, digest };
        ByteBuf::from(self.sign_pre_prepare(&header, &[]).to_vec())
    }
}

/// Decodes the payload of a frame as `T` (any sender).
pub(super) fn decode_payload<T: serde::de::DeserializeOwned + serde::Serialize>(
    frame: &[u8],
    max_len: usize,
) -> Option<T> {
    codec::decode(codec::decode_frame(frame, max_len).ok()?.payload).ok()
}

/// The digest the verifier gives a request frame: SHA-256 of its signed bytes (the domain header
/// and the payload).
pub(super) fn request_digest(frame: &[u8]) -> Option<Digest> {
    let decoded: FrameRef<'_> = codec::decode(frame).ok()?;
    Some(sha256(
        &decoded.header.domain().signed_bytes(decoded.payload),
    ))
}

/// `frame` with one bit of its signature flipped (unchanged if it does not decode).
pub(super) fn flip_signature(frame: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
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
