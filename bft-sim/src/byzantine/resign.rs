//! Attacks that re-sign one of this replica's own messages with other content:
//! [`Attack::ShiftView`], [`Attack::ShiftSeq`], [`Attack::SwapDigest`] and
//! [`Attack::Equivocate`].
//!
//! [`Attack::ShiftView`]: super::Attack::ShiftView
//! [`Attack::ShiftSeq`]: super::Attack::ShiftSeq
//! [`Attack::SwapDigest`]: super::Attack::SwapDigest
//! [`Attack::Equivocate`]: super::Attack::Equivocate

use super::Adversary;
use super::frames::{Own, decode_payload, request_digest};
use super::random::{pick, random_digest_except, shift};
use bft_core::codec;
use bft_core::messages::{
    Checkpoint, MessageKind, PrePrepareHeader, ViewChangePayload, batch_digest, encode_batch,
};
use bft_core::{SeqNum, View};
use bft_crypto::Digest;
use bytes::Bytes;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_bytes::ByteBuf;

impl Adversary {
    pub(super) fn shift_view(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
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

    pub(super) fn shift_seq(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
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

    pub(super) fn swap_digest(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
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

    pub(super) fn equivocate(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
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
}
