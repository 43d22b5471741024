//! Replays and floods: [`Attack::ReplayOld`] re-sends observed frames byte for byte;
//! [`Attack::FutureFlood`] follows the frame with validly signed messages for far higher views.
//!
//! [`Attack::ReplayOld`]: super::Attack::ReplayOld
//! [`Attack::FutureFlood`]: super::Attack::FutureFlood

use super::frames::Own;
use super::random::{pick, random_digest};
use super::{Adversary, FUTURE_VIEW_SPAN, MAX_FRAMES_PER_CALL};
use bft_core::codec;
use bft_core::messages::{Commit, PrePrepareHeader, Prepare, ViewChangePayload};
use bft_core::{SeqNum, View};
use bytes::Bytes;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

impl Adversary {
    pub(super) fn replay_old(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Option<Vec<Bytes>> {
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

    pub(super) fn future_flood(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Vec<Bytes> {
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
}
