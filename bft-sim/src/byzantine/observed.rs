//! What an [`Adversary`] remembers: the frames it observed, within bounds, and the highest view
//! it sent.

use super::frames::Own;
use super::{Adversary, OBSERVED_PER_KIND};
use bft_core::Principal;
use bft_core::codec;
use bft_core::messages::{MessageKind, NewViewPayload, Request, ViewChangePayload};
use bytes::Bytes;
use serde_bytes::ByteBuf;

/// How observed frames are embedded: a NEW-VIEW's VIEW-CHANGEs, their certificates' frames.
const MAX_OBSERVE_DEPTH: u8 = 2;

impl Adversary {
    pub(super) fn remember(&mut self, frame: Bytes, depth: u8) {
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
    pub(super) fn note_own_view(&mut self, frame: &[u8]) {
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

    pub(super) fn observed_of(&self, kind: MessageKind) -> impl Iterator<Item = &Bytes> {
        self.observed.get(&kind).into_iter().flatten()
    }

    /// Observed VIEW-CHANGEs with their sender and payload.
    pub(super) fn observed_view_changes(&self) -> Vec<(&Bytes, Principal, ViewChangePayload)> {
        self.observed_of(MessageKind::ViewChange)
            .filter_map(|frame| {
                let decoded = codec::decode_frame(frame, self.max_len()).ok()?;
                let payload = codec::decode(decoded.payload).ok()?;
                Some((frame, decoded.header.sender, payload))
            })
            .collect()
    }

    /// Observed NEW-VIEWs with their payload.
    pub(super) fn observed_new_views(&self) -> Vec<(&Bytes, NewViewPayload)> {
        self.observed_of(MessageKind::NewView)
            .filter_map(|frame| {
                let decoded = codec::decode_frame(frame, self.max_len()).ok()?;
                Some((frame, codec::decode(decoded.payload).ok()?))
            })
            .collect()
    }
}
