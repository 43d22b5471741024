//! Certificates: [`Attack::ForgeCertificate`] forges the content of this replica's own
//! VIEW-CHANGE or NEW-VIEW; [`Attack::StaleCertificate`] builds one from old observed material, or
//! re-sends an old one.
//!
//! [`Attack::ForgeCertificate`]: super::Attack::ForgeCertificate
//! [`Attack::StaleCertificate`]: super::Attack::StaleCertificate

use super::Adversary;
use super::frames::{Own, decode_payload, flip_signature};
use super::random::{pick, random_digest, random_digest_except};
use bft_core::codec;
use bft_core::messages::{
    Checkpoint, MessageKind, NewViewPayload, PrePrepareHeader, PreparedCertificatePayload,
    ViewChangePayload, batch_digest,
};
use bft_core::{Principal, SeqNum, View};
use bft_crypto::Digest;
use bytes::Bytes;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_bytes::ByteBuf;

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

impl Adversary {
    pub(super) fn forge_certificate(
        &self,
        frame: &Bytes,
        rng: &mut ChaCha8Rng,
    ) -> Option<Vec<Bytes>> {
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

    pub(super) fn stale_certificate(
        &self,
        frame: &Bytes,
        rng: &mut ChaCha8Rng,
    ) -> Option<Vec<Bytes>> {
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
}
