//! `new_view`: arbitrary VIEW-CHANGE sets into NEW-VIEW construction and validation, compared
//! against a reference written from the paper (PBFT, Castro and Liskov, OSDI'99 section 4.4).
//!
//! The replica under test is driven only through its public API: VIEW-CHANGEs go to the primary
//! of the new view, which emits a NEW-VIEW once it holds 2f+1 of them, and NEW-VIEWs (the one it
//! emitted and tampered ones) go to fresh backups. Everything the reference needs is read back
//! from the verified messages as plain values ([`ViewChangeModel`]), so it shares no code with
//! `bft-core/src/replica/new_view.rs`.

use crate::replica::{Fixture, signed_request};
use arbitrary::{Result, Unstructured};
use bft_core::messages::{
    Checkpoint, NewView, NewViewPayload, PrePrepareHeader, PrePreparePayload, Prepare,
    PreparedCertificatePayload, ViewChange, ViewChangePayload, WireMessage, batch_digest,
};
use bft_core::testkit::{self, CLUSTER_ID, service::LogService};
use bft_core::{
    Actions, Input, MessageKind, Phase, Principal, Rejection, Replica, ReplicaId, Time, Verified,
    VerifiedMessage, VerifyError, View,
};
use bft_crypto::{Digest, KeyPair};
use bytes::Bytes;
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// Replicas in the fixture's cluster (f = 1).
const N: u32 = 4;
/// f.
const F: usize = 1;
/// 2f+1.
const QUORUM: usize = 2 * F + 1;
/// Most VIEW-CHANGEs one run sends the new primary.
const MAX_VIEW_CHANGES: u8 = 6;
/// Most prepared certificates in one generated VIEW-CHANGE.
const MAX_CERTIFICATES: u8 = 4;
/// Most tampered NEW-VIEWs one run sends to backups.
const MAX_CRAFTED: u8 = 4;

/// What [`new_view_report`] saw, for tests that check the seeds reach the interesting paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewViewReport {
    /// The view changed to.
    pub view: u64,
    /// VIEW-CHANGEs the new primary held (valid, first from their sender).
    pub view_changes_held: usize,
    /// VIEW-CHANGEs it refused as invalid (the reference agreeing).
    pub view_changes_invalid: usize,
    /// The primary emitted a NEW-VIEW.
    pub emitted: bool,
    /// min-s of that NEW-VIEW: the highest stable checkpoint among its VIEW-CHANGEs.
    pub min_s: u64,
    /// Pre-prepares that NEW-VIEW re-issued.
    pub reissued: usize,
    /// Of those, null requests.
    pub null_requests: usize,
    /// The primary's own VIEW-CHANGE carried this many prepared certificates.
    pub own_certificates: usize,
    /// Crafted NEW-VIEWs a backup accepted.
    pub crafted_accepted: usize,
    /// Crafted NEW-VIEWs a backup refused.
    pub crafted_refused: usize,
    /// Crafted NEW-VIEWs the verifier refused (over a count limit).
    pub crafted_unverifiable: usize,
    /// NEW-VIEWs whose reference outcome was ambiguous (two certificates of one view with
    /// different digests for one sequence number, which 2f+1 correct replicas never produce).
    pub ambiguous: usize,
}

/// Interprets `data` as a view change to an arbitrary view `v` (1..=4) and checks NEW-VIEW
/// construction and validation against a reference implementation of PBFT section 4.4.
///
/// The new primary `p` (replica `v mod 4`) first prepares up to two batches in view 0 (when it
/// is not the primary of view 0), so its own VIEW-CHANGE carries certificates. It is then sent
/// VIEW-CHANGEs for `v` from the other replicas: stable checkpoints 0, 4 or 8 with their
/// proofs, up to four prepared certificates of views below `v`, each sometimes tampered with
/// (a short or mixed proof, a pre-prepare not from its view's primary, a view or sequence number
/// out of range, mismatched, missing, duplicated or primary-signed prepares, two certificates for
/// one sequence number). Properties:
///
/// - a VIEW-CHANGE is refused as `InvalidViewChange` exactly when the reference finds it invalid;
///   a valid one is held (a second from the same sender is a `Duplicate`), quietly, until 2f+1
///   are held (the primary's own included), and at that step the primary multicasts its
///   VIEW-CHANGE and a NEW-VIEW and enters `v`;
/// - the primary's own VIEW-CHANGE carries a certificate for each batch it prepared;
/// - the NEW-VIEW holds 2f+1 valid VIEW-CHANGEs for `v` from distinct replicas, its own
///   included, the others exactly frames it was sent; and its pre-prepares, signed by `p` for
///   `v`, are exactly the reference's O: for each n in (min-s, max-s], the digest of the
///   certificate with the highest view, or the null request (min-s: the highest stable
///   checkpoint; max-s: the highest prepared sequence number); each is persisted as signed;
/// - a fresh backup accepts that NEW-VIEW and enters `v`;
/// - for NEW-VIEWs signed by `p` from arbitrary selections of the VIEW-CHANGEs (invalid ones
///   included) with the reference's pre-prepares, sometimes tampered (one dropped, added,
///   duplicated, moved, re-signed by a backup, or with another digest, view or sequence number),
///   a fresh backup accepts exactly when the reference does (all VIEW-CHANGEs valid, for `v`,
///   from 2f+1 or more distinct replicas, and O as computed), and otherwise refuses it as
///   `InvalidNewView` with no effect. The verifier may refuse only NEW-VIEWs over its count
///   limits.
pub fn new_view(data: &[u8]) {
    let _ = new_view_report(data);
}

/// [`new_view`], returning what the run reached.
pub fn new_view_report(data: &[u8]) -> NewViewReport {
    let mut u = Unstructured::new(data);
    let mut run = Run::new();
    // Running out of input ends the run early; what was checked so far stands.
    let _ = run.run(&mut u);
    run.report
}

/// Replica `i`'s testkit key, derived once.
fn key(i: u32) -> &'static KeyPair {
    static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
    &KEYS.get_or_init(|| (0..N).map(testkit::replica_key).collect())[i as usize]
}

fn signed<M: WireMessage>(signer: u32, message: &M) -> Bytes {
    message.sign(
        key(signer),
        CLUSTER_ID,
        Principal::Replica(ReplicaId(signer)),
    )
}

fn primary(view: u64) -> u32 {
    (view % u64::from(N)) as u32
}

fn replica_id(principal: Principal) -> u32 {
    match principal {
        Principal::Replica(ReplicaId(id)) => id,
        // The verifier admits replica messages from replicas only; a client id maps outside the
        // cluster, which every check treats as invalid.
        Principal::Client(_) => u32::MAX,
    }
}

/// The digest of the null request: an empty batch.
fn null_digest() -> Digest {
    batch_digest(std::iter::empty())
}

/// A batch digest standing for some batch (tag 0 is the null request's).
fn digest(tag: u8) -> Digest {
    if tag == 0 {
        null_digest()
    } else {
        Digest([tag; 32])
    }
}

/// A checkpoint digest for `seq` (`variant` 0 is the one correct replicas agree on).
fn checkpoint_digest(seq: u64, variant: u8) -> Digest {
    bft_crypto::sha256(&[&seq.to_le_bytes()[..], &[variant]].concat())
}

// -------------------------------------------------------------------------------------------------
// The model: what a VIEW-CHANGE says, as plain values
// -------------------------------------------------------------------------------------------------

/// A signed pre-prepare (without batch) or prepare, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vote {
    signer: u32,
    view: u64,
    seq: u64,
    digest: Digest,
}

/// A signed CHECKPOINT, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CheckpointVote {
    signer: u32,
    seq: u64,
    digest: Digest,
}

/// A prepared certificate, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Certificate {
    pre_prepare: Vote,
    prepares: Vec<Vote>,
}

/// A VIEW-CHANGE, as plain values: what the reference reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ViewChangeModel {
    sender: u32,
    new_view: u64,
    stable_seq: u64,
    proof: Vec<CheckpointVote>,
    prepared: Vec<Certificate>,
}

impl ViewChangeModel {
    /// Signs every embedded message and the VIEW-CHANGE with the testkit keys.
    fn sign(&self) -> Bytes {
        let buf = |b: Bytes| ByteBuf::from(b.to_vec());
        let payload = ViewChangePayload {
            new_view: View(self.new_view),
            stable_seq: bft_core::SeqNum(self.stable_seq),
            checkpoint_proof: self
                .proof
                .iter()
                .map(|c| {
                    let checkpoint = Checkpoint {
                        seq: bft_core::SeqNum(c.seq),
                        digest: c.digest,
                    };
                    buf(signed(c.signer, &checkpoint))
                })
                .collect(),
            prepared: self
                .prepared
                .iter()
                .map(|c| PreparedCertificatePayload {
                    pre_prepare: buf(sign_pre_prepare(&c.pre_prepare)),
                    prepares: c
                        .prepares
                        .iter()
                        .map(|p| {
                            let prepare = Prepare {
                                view: View(p.view),
                                seq: bft_core::SeqNum(p.seq),
                                digest: p.digest,
                            };
                            buf(signed(p.signer, &prepare))
                        })
                        .collect(),
                })
                .collect(),
        };
        signed(self.sender, &payload)
    }

    /// Reads a verified VIEW-CHANGE back as plain values.
    fn of(message: &Verified<ViewChange>) -> ViewChangeModel {
        let vc = message.message();
        ViewChangeModel {
            sender: replica_id(message.sender()),
            new_view: vc.new_view.0,
            stable_seq: vc.stable_seq.0,
            proof: vc
                .checkpoint_proof
                .iter()
                .map(|c| CheckpointVote {
                    signer: replica_id(c.sender()),
                    seq: c.message().seq.0,
                    digest: c.message().digest,
                })
                .collect(),
            prepared: vc
                .prepared
                .iter()
                .map(|c| {
                    let pp = c.pre_prepare.message();
                    Certificate {
                        pre_prepare: Vote {
                            signer: replica_id(c.pre_prepare.sender()),
                            view: pp.view.0,
                            seq: pp.seq.0,
                            digest: pp.digest,
                        },
                        prepares: c
                            .prepares
                            .iter()
                            .map(|p| Vote {
                                signer: replica_id(p.sender()),
                                view: p.message().view.0,
                                seq: p.message().seq.0,
                                digest: p.message().digest,
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

/// A pre-prepare without its batch, as certificates and NEW-VIEWs carry it.
fn sign_pre_prepare(vote: &Vote) -> Bytes {
    let header = PrePrepareHeader {
        view: View(vote.view),
        seq: bft_core::SeqNum(vote.seq),
        digest: vote.digest,
    };
    signed(vote.signer, &header)
}

/// The pre-prepares of a verified NEW-VIEW, as plain values.
fn pre_prepares_of(new_view: &Verified<NewView>) -> Vec<Vote> {
    new_view
        .message()
        .pre_prepares
        .iter()
        .map(|p| Vote {
            signer: replica_id(p.sender()),
            view: p.message().view.0,
            seq: p.message().seq.0,
            digest: p.message().digest,
        })
        .collect()
}

// -------------------------------------------------------------------------------------------------
// The reference (OSDI'99 section 4.4), on plain values
// -------------------------------------------------------------------------------------------------

/// The reference implementation the replica is compared with.
mod reference {
    use super::{CheckpointVote, F, N, QUORUM, ViewChangeModel, Vote, null_digest, primary};
    use bft_crypto::Digest;
    use std::collections::{BTreeMap, BTreeSet};

    /// Whether a VIEW-CHANGE `<VIEW-CHANGE, v+1, n, C, P, i>` is valid (section 4.4), with
    /// certificates read as this implementation states them: a certificate is a set of
    /// messages that all match (no extra or repeated members), and a prepared certificate lies
    /// in the sender's window `(n, n + window]`.
    ///
    /// - `C`: empty if `n` is 0; otherwise CHECKPOINTs for `n`, one digest, from at least 2f+1
    ///   distinct replicas, none twice;
    /// - each certificate in `P`: a pre-prepare from the primary of its view `w < v+1` for a
    ///   sequence number in the window, and at least 2f prepares matching it (view, sequence
    ///   number, digest) from distinct replicas other than that primary, none twice;
    /// - at most one certificate per sequence number.
    pub(super) fn valid(vc: &ViewChangeModel, window: u64) -> bool {
        if vc.sender >= N {
            return false;
        }
        if vc.stable_seq == 0 {
            if !vc.proof.is_empty() {
                return false;
            }
        } else {
            let Some(first) = vc.proof.first() else {
                return false;
            };
            let all_match = vc
                .proof
                .iter()
                .all(|c: &CheckpointVote| c.seq == vc.stable_seq && c.digest == first.digest);
            let signers: BTreeSet<u32> = vc.proof.iter().map(|c| c.signer).collect();
            if !all_match || signers.len() != vc.proof.len() || signers.len() < QUORUM {
                return false;
            }
        }
        let mut seqs = BTreeSet::new();
        for certificate in &vc.prepared {
            let pp = certificate.pre_prepare;
            let from_primary = pp.signer == primary(pp.view);
            let view_below = pp.view < vc.new_view;
            let in_window = pp.seq > vc.stable_seq && pp.seq - vc.stable_seq <= window;
            let matching = certificate.prepares.iter().all(|p| {
                (p.view, p.seq, p.digest) == (pp.view, pp.seq, pp.digest)
                    && p.signer != primary(pp.view)
            });
            let signers: BTreeSet<u32> = certificate.prepares.iter().map(|p| p.signer).collect();
            let distinct = signers.len() == certificate.prepares.len();
            if !from_primary
                || !view_below
                || !in_window
                || !matching
                || !distinct
                || signers.len() < 2 * F
                || !seqs.insert(pp.seq)
            {
                return false;
            }
        }
        true
    }

    /// O for a set of VIEW-CHANGEs: for each sequence number in (min-s, max-s], the digests of
    /// the certificates with the highest view (one, unless two certificates of that view
    /// disagree, which a set of correct replicas never produces), or the null request's.
    pub(super) fn plan(view_changes: &[ViewChangeModel]) -> Vec<(u64, BTreeSet<Digest>)> {
        let min_s = view_changes
            .iter()
            .map(|vc| vc.stable_seq)
            .max()
            .unwrap_or(0);
        let mut certificates: BTreeMap<u64, Vec<(u64, Digest)>> = BTreeMap::new();
        for vc in view_changes {
            for certificate in &vc.prepared {
                let pp = certificate.pre_prepare;
                certificates
                    .entry(pp.seq)
                    .or_default()
                    .push((pp.view, pp.digest));
            }
        }
        let max_s = certificates.keys().copied().max().unwrap_or(0);
        (min_s + 1..=max_s)
            .map(|seq| {
                let candidates = certificates.get(&seq).map_or_else(
                    || BTreeSet::from([null_digest()]),
                    |found| {
                        let highest = found.iter().map(|(view, _)| *view).max().unwrap_or(0);
                        found
                            .iter()
                            .filter(|(view, _)| *view == highest)
                            .map(|(_, digest)| *digest)
                            .collect()
                    },
                );
                (seq, candidates)
            })
            .collect()
    }

    /// The reference's verdict on a NEW-VIEW.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Verdict {
        /// Every correct backup must accept it.
        Accept,
        /// Every correct backup must refuse it.
        Refuse,
        /// O is ambiguous (see [`plan`]): these pre-prepares are one of its readings; a backup
        /// may accept or refuse, but must agree with the primary's choice.
        Either,
    }

    /// Whether a backup must accept `<NEW-VIEW, view, V, O>` signed by the primary of `view`:
    /// V holds valid VIEW-CHANGEs for `view` from at least 2f+1 distinct replicas, and O is
    /// exactly the pre-prepares V determines, in order, each signed by the primary for `view`.
    pub(super) fn verdict(
        view: u64,
        view_changes: &[ViewChangeModel],
        pre_prepares: &[Vote],
        window: u64,
    ) -> Verdict {
        let senders: BTreeSet<u32> = view_changes.iter().map(|vc| vc.sender).collect();
        let v_ok = senders.len() == view_changes.len()
            && senders.len() >= QUORUM
            && view_changes
                .iter()
                .all(|vc| vc.new_view == view && valid(vc, window));
        if !v_ok {
            return Verdict::Refuse;
        }
        let o = plan(view_changes);
        if o.len() != pre_prepares.len() {
            return Verdict::Refuse;
        }
        let mut ambiguous = false;
        for (pp, (seq, candidates)) in pre_prepares.iter().zip(&o) {
            if pp.signer != primary(view)
                || pp.view != view
                || pp.seq != *seq
                || !candidates.contains(&pp.digest)
            {
                return Verdict::Refuse;
            }
            ambiguous |= candidates.len() > 1;
        }
        if ambiguous {
            Verdict::Either
        } else {
            Verdict::Accept
        }
    }
}

use reference::Verdict;

// -------------------------------------------------------------------------------------------------
// The run
// -------------------------------------------------------------------------------------------------

struct Run {
    window: u64,
    view: u64,
    report: NewViewReport,
    /// The digest correct replicas would agree on for a (view, sequence number).
    canonical: BTreeMap<(u64, u64), Digest>,
}

fn step(replica: &mut Replica<LogService>, message: VerifiedMessage) -> Actions {
    replica.step(Time::ZERO, Input::Message(message))
}

fn verified(frame: Bytes, what: &str) -> VerifiedMessage {
    match Fixture::get().verifier.verify(frame) {
        Ok(message) => message,
        Err(error) => panic!("the verifier refused {what}: {error}"),
    }
}

fn fresh(id: u32) -> Replica<LogService> {
    Replica::new(
        Fixture::get().config.clone(),
        ReplicaId(id),
        key(id).clone(),
        LogService::default(),
    )
    .expect("valid fixture replica")
}

/// The verified NEW-VIEWs and VIEW-CHANGEs among `actions`' frames (each multicast).
fn sent(actions: &Actions) -> (Vec<Verified<NewView>>, Vec<Verified<ViewChange>>) {
    let (mut new_views, mut view_changes) = (Vec::new(), Vec::new());
    for outgoing in actions.pending_sends() {
        let multicast = outgoing.to == bft_core::Destination::OtherReplicas;
        match verified(outgoing.frame.clone(), "a frame the primary sent") {
            VerifiedMessage::NewView(m) => {
                assert!(multicast, "a NEW-VIEW sent to {:?}", outgoing.to);
                new_views.push(m);
            }
            VerifiedMessage::ViewChange(m) => {
                assert!(multicast, "a VIEW-CHANGE sent to {:?}", outgoing.to);
                view_changes.push(m);
            }
            _ => {}
        }
    }
    (new_views, view_changes)
}

impl Run {
    fn new() -> Run {
        Run {
            window: Fixture::get().config.limits.window,
            view: 1,
            report: NewViewReport::default(),
            canonical: BTreeMap::new(),
        }
    }

    fn run(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        self.view = u.int_in_range(1..=4u64)?;
        self.report.view = self.view;
        let p = primary(self.view);
        let mut replica = fresh(p);
        let own_prepared = self.prepare_in_view_0(u, &mut replica)?;

        // VIEW-CHANGEs from the other replicas, until the primary emits its NEW-VIEW.
        let others: Vec<u32> = (0..N).filter(|&r| r != p).collect();
        let mut pool: Vec<(ViewChangeModel, Bytes)> = Vec::new();
        let mut held: BTreeSet<u32> = BTreeSet::new();
        let mut emitted = None;
        let count = u.int_in_range(2..=MAX_VIEW_CHANGES)?;
        for i in 0..usize::from(count) {
            // Zero bytes rotate through the senders; others repeat one.
            let sender = others[(i + usize::from(u.int_in_range(0..=2u8)?)) % others.len()];
            let model = self.gen_view_change(u, sender)?;
            let frame = model.sign();
            pool.push((model.clone(), frame.clone()));
            let valid = reference::valid(&model, self.window);
            let actions = step(&mut replica, verified(frame, "a generated VIEW-CHANGE"));
            if !valid {
                assert_eq!(
                    rejections(&actions),
                    [Rejection::InvalidViewChange],
                    "the reference finds {model:?} invalid"
                );
                assert!(actions.is_quiet(), "a refused VIEW-CHANGE had effects");
                self.report.view_changes_invalid += 1;
                continue;
            }
            if held.contains(&sender) {
                assert_eq!(
                    rejections(&actions),
                    [Rejection::Duplicate],
                    "a second VIEW-CHANGE from replica {sender}"
                );
                continue;
            }
            assert_eq!(
                rejections(&actions),
                [],
                "the reference finds {model:?} valid"
            );
            held.insert(sender);
            self.report.view_changes_held = held.len();
            if held.len() + 1 < QUORUM {
                assert!(
                    actions.is_quiet(),
                    "the primary acted on {} VIEW-CHANGEs",
                    held.len()
                );
                assert_eq!(replica.view(), View(0));
                continue;
            }
            emitted = Some(self.check_emitted(&replica, &actions, &pool, &own_prepared));
            break;
        }
        if emitted.is_none() {
            assert_eq!(replica.view(), View(0), "no NEW-VIEW, yet the view moved");
        }

        // A fresh backup accepts the NEW-VIEW the primary emitted.
        let own = emitted.map(|(new_view, own)| {
            let backup = others[usize::from(u.int_in_range(0..=2u8).unwrap_or(0))];
            let mut replica = fresh(backup);
            let actions = step(&mut replica, VerifiedMessage::NewView(new_view));
            assert_eq!(rejections(&actions), [], "a backup refused the NEW-VIEW");
            assert_eq!(
                (replica.view(), replica.status().phase),
                (View(self.view), Phase::Normal)
            );
            own
        });

        // Crafted NEW-VIEWs: selections of the VIEW-CHANGEs, the reference's O, tampering.
        match own {
            Some(own) => pool.push(own),
            None => {
                let model = self.gen_view_change(u, p)?;
                let frame = model.sign();
                pool.push((model, frame));
            }
        }
        for _ in 0..u.int_in_range(0..=MAX_CRAFTED)? {
            self.crafted(u, &pool, &others)?;
        }
        Ok(())
    }

    /// When the new primary is not the primary of view 0, it accepts up to two batches in view
    /// 0 (pre-prepare from replica 0 with one request, a prepare from another backup besides
    /// its own) so that it prepares them. Returns the prepared (sequence number, digest) pairs.
    fn prepare_in_view_0(
        &mut self,
        u: &mut Unstructured<'_>,
        replica: &mut Replica<LogService>,
    ) -> Result<BTreeMap<u64, Digest>> {
        let p = replica.id().0;
        let mut prepared = BTreeMap::new();
        if p == 0 {
            return Ok(prepared);
        }
        for i in 0..u.int_in_range(0..=2u8)? {
            let seq = u.int_in_range(1..=self.window)?;
            if prepared.contains_key(&seq) {
                continue;
            }
            let request = signed_request(1 + u64::from(i % 2), u64::from(i) + 1, &[b'p', i]);
            let digest = match verified(request.clone(), "a testkit request") {
                VerifiedMessage::Request(r) => batch_digest(std::iter::once(r.digest())),
                _ => unreachable!("a request frame verifies as a request"),
            };
            let payload = PrePreparePayload {
                view: View(0),
                seq: bft_core::SeqNum(seq),
                digest,
                requests: vec![ByteBuf::from(request.to_vec())],
            };
            let frame = payload.sign(key(0), CLUSTER_ID, Principal::Replica(ReplicaId(0)));
            let actions = step(replica, verified(frame, "a view-0 pre-prepare"));
            assert_eq!(rejections(&actions), [], "the pre-prepare for {seq}");
            let helper = if p == 1 { 2 } else { 1 };
            let prepare = Prepare {
                view: View(0),
                seq: bft_core::SeqNum(seq),
                digest,
            };
            let actions = step(replica, verified(signed(helper, &prepare), "a prepare"));
            assert_eq!(rejections(&actions), [], "the prepare for {seq}");
            prepared.insert(seq, digest);
            self.canonical.insert((0, seq), digest);
        }
        assert_eq!(
            replica.status().prepared_certificates_held,
            prepared.len(),
            "a pre-prepare and 2f prepares make a prepared certificate"
        );
        Ok(prepared)
    }

    /// A VIEW-CHANGE for the run's view from `sender`, sometimes tampered with.
    fn gen_view_change(
        &mut self,
        u: &mut Unstructured<'_>,
        sender: u32,
    ) -> Result<ViewChangeModel> {
        let view = self.view;
        let mut stable_seq = 4 * u.int_in_range(0..=2u64)?;
        let variant = u8::from(u.int_in_range(0..=7u8)? == 7);
        let omitted = u.int_in_range(0..=3u32)?;
        let mut proof: Vec<CheckpointVote> = (0..N)
            .filter(|&r| r != omitted)
            .map(|signer| CheckpointVote {
                signer,
                seq: stable_seq,
                digest: checkpoint_digest(stable_seq, variant),
            })
            .collect();
        if stable_seq == 0 {
            proof.clear();
        }
        match u.int_in_range(0..=31u8)? {
            1 => {
                proof.pop();
            }
            2 => {
                if let (Some(first), Some(last)) = (proof.first().copied(), proof.last_mut()) {
                    *last = first;
                }
            }
            3 => {
                if let Some(last) = proof.last_mut() {
                    last.seq += 4;
                }
            }
            4 => {
                if let Some(last) = proof.last_mut() {
                    last.digest = checkpoint_digest(stable_seq, 9);
                }
            }
            5 if !proof.is_empty() => proof.push(CheckpointVote {
                signer: omitted,
                seq: stable_seq,
                digest: checkpoint_digest(stable_seq, variant),
            }),
            6 if stable_seq > 0 => stable_seq = 0,
            6 => {
                proof = (0..3)
                    .map(|signer| CheckpointVote {
                        signer,
                        seq: 4,
                        digest: checkpoint_digest(4, 0),
                    })
                    .collect();
            }
            _ => {}
        }
        let mut prepared = Vec::new();
        for _ in 0..u.int_in_range(0..=MAX_CERTIFICATES)? {
            prepared.push(self.gen_certificate(u, stable_seq)?);
        }
        Ok(ViewChangeModel {
            sender,
            new_view: view,
            stable_seq,
            proof,
            prepared,
        })
    }

    /// A prepared certificate above `stable_seq` for a view below the run's, sometimes
    /// tampered with.
    fn gen_certificate(
        &mut self,
        u: &mut Unstructured<'_>,
        stable_seq: u64,
    ) -> Result<Certificate> {
        let mut seq = stable_seq + u.int_in_range(1..=self.window)?;
        let mut view = u.int_in_range(0..=self.view - 1)?;
        let canonical = *self
            .canonical
            .entry((view, seq))
            .or_insert_with(|| digest(1 + ((view + seq) % 3) as u8));
        let digest = if u.int_in_range(0..=7u8)? == 7 {
            digest(4 + u.int_in_range(0..=1u8)?)
        } else {
            canonical
        };
        let leader = primary(view);
        let backups: Vec<u32> = (0..N).filter(|&r| r != leader).collect();
        let omitted = usize::from(u.int_in_range(0..=3u8)?);
        let mut signers: Vec<u32> = backups
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != omitted)
            .map(|(_, r)| *r)
            .collect();
        let mut pp_signer = leader;
        let tamper = u.int_in_range(0..=31u8)?;
        match tamper {
            1 => pp_signer = (leader + 1) % N,
            2 => view = self.view,
            3 => seq = stable_seq,
            4 => seq = stable_seq + self.window + 1,
            6 => signers[0] = leader,
            7 => signers[1] = signers[0],
            8 => signers.truncate(1),
            10 => signers.clear(),
            _ => {}
        }
        let vote = |signer| Vote {
            signer,
            view,
            seq,
            digest,
        };
        let mut prepares: Vec<Vote> = signers.iter().map(|&s| vote(s)).collect();
        match tamper {
            5 => prepares[0].digest = null_digest(),
            9 => prepares[0].view = view + 1,
            _ => {}
        }
        Ok(Certificate {
            pre_prepare: vote(pp_signer),
            prepares,
        })
    }

    /// Checks the step at which the primary held 2f+1 VIEW-CHANGEs: it sent its own VIEW-CHANGE
    /// and a NEW-VIEW matching the reference, persisted what it signed, and entered the view.
    /// Returns the NEW-VIEW and its own VIEW-CHANGE.
    fn check_emitted(
        &mut self,
        replica: &Replica<LogService>,
        actions: &Actions,
        pool: &[(ViewChangeModel, Bytes)],
        own_prepared: &BTreeMap<u64, Digest>,
    ) -> (Verified<NewView>, (ViewChangeModel, Bytes)) {
        let p = primary(self.view);
        let (mut new_views, mut own_view_changes) = sent(actions);
        assert_eq!(
            (new_views.len(), own_view_changes.len()),
            (1, 1),
            "2f+1 VIEW-CHANGEs held: one VIEW-CHANGE and one NEW-VIEW sent"
        );
        let new_view = new_views.pop().expect("one");
        let own = own_view_changes.pop().expect("one");
        assert_eq!(
            (replica.view(), replica.status().phase),
            (View(self.view), Phase::Normal),
            "the primary enters the view"
        );

        // Its own VIEW-CHANGE: for the view, with a certificate for each batch it prepared.
        let own_model = ViewChangeModel::of(&own);
        assert_eq!(own_model.sender, p);
        assert_eq!(own_model.new_view, self.view);
        assert!(reference::valid(&own_model, self.window), "{own_model:?}");
        let carried: BTreeMap<u64, Digest> = own_model
            .prepared
            .iter()
            .map(|c| (c.pre_prepare.seq, c.pre_prepare.digest))
            .collect();
        assert_eq!(&carried, own_prepared, "the primary's own certificates");
        self.report.own_certificates = carried.len();

        // V: 2f+1 valid VIEW-CHANGEs for the view, distinct senders, its own included, the others
        // exactly as received.
        let nv = new_view.message();
        assert_eq!(nv.view, View(self.view));
        assert_eq!(nv.view_changes.len(), QUORUM, "V holds 2f+1 VIEW-CHANGEs");
        let models: Vec<ViewChangeModel> =
            nv.view_changes.iter().map(ViewChangeModel::of).collect();
        for (vc, model) in nv.view_changes.iter().zip(&models) {
            if model.sender == p {
                assert_eq!(vc.frame(), own.frame(), "its own VIEW-CHANGE in V");
            } else {
                assert!(
                    pool.iter()
                        .any(|(m, frame)| frame == vc.frame() && reference::valid(m, self.window)),
                    "V holds a VIEW-CHANGE the primary was not sent, or an invalid one"
                );
            }
        }
        assert!(models.iter().any(|m| m.sender == p), "V holds its own");

        // O: what the reference computes from V.
        let pre_prepares = pre_prepares_of(&new_view);
        let verdict = reference::verdict(self.view, &models, &pre_prepares, self.window);
        assert_ne!(
            verdict,
            Verdict::Refuse,
            "the NEW-VIEW differs from the reference: O = {pre_prepares:?}, reference {:?}",
            reference::plan(&models)
        );
        if verdict == Verdict::Either {
            self.report.ambiguous += 1;
        }
        self.report.emitted = true;
        self.report.reissued = pre_prepares.len();
        self.report.min_s = models.iter().map(|m| m.stable_seq).max().unwrap_or(0);
        self.report.null_requests = pre_prepares
            .iter()
            .filter(|p| p.digest == null_digest())
            .count();

        // Persisted before sending: the VIEW-CHANGE, each re-issued pre-prepare, the NEW-VIEW.
        let signed: Vec<(MessageKind, u64, u64, Digest)> = actions
            .signed_records()
            .map(|r| (r.kind, r.view.0, r.seq.0, r.digest))
            .collect();
        for pp in &pre_prepares {
            assert!(
                signed.contains(&(MessageKind::PrePrepare, pp.view, pp.seq, pp.digest)),
                "re-issued pre-prepare {pp:?} not persisted"
            );
        }
        for kind in [MessageKind::ViewChange, MessageKind::NewView] {
            assert!(
                signed.iter().any(|s| s.0 == kind && s.1 == self.view),
                "{kind:?} not persisted"
            );
        }
        let own_frame = own.frame().clone();
        (new_view, (own_model, own_frame))
    }

    /// A NEW-VIEW signed by the primary from a selection of `pool`, with the reference's O,
    /// sometimes tampered with, to a fresh backup: accepted exactly when the reference accepts.
    fn crafted(
        &mut self,
        u: &mut Unstructured<'_>,
        pool: &[(ViewChangeModel, Bytes)],
        others: &[u32],
    ) -> Result<()> {
        let p = primary(self.view);
        let mut selection: Vec<&(ViewChangeModel, Bytes)> = Vec::new();
        if u.int_in_range(0..=3u8)? == 0 {
            // Arbitrary picks (repeats and invalid ones included).
            for _ in 0..u.int_in_range(2..=4u8)? {
                selection.push(&pool[u.choose_index(pool.len())?]);
            }
        } else {
            // The first valid VIEW-CHANGE of each sender, in an arbitrary rotation, 2 to 4 of
            // them.
            let mut seen = BTreeSet::new();
            let valid: Vec<&(ViewChangeModel, Bytes)> = pool
                .iter()
                .filter(|(m, _)| reference::valid(m, self.window) && seen.insert(m.sender))
                .collect();
            if !valid.is_empty() {
                let start = u.choose_index(valid.len())?;
                let take = u.int_in_range(2..=4usize)?.min(valid.len());
                selection.extend((0..take).map(|i| valid[(start + i) % valid.len()]));
            }
            if selection.is_empty() {
                selection.push(&pool[0]);
            }
        }
        let models: Vec<ViewChangeModel> = selection.iter().map(|(m, _)| m.clone()).collect();
        let mut view = self.view;
        let mut pre_prepares: Vec<Vote> = reference::plan(&models)
            .into_iter()
            .map(|(seq, candidates)| Vote {
                signer: p,
                view,
                seq,
                digest: candidates.into_iter().next().unwrap_or_else(null_digest),
            })
            .collect();
        let len = pre_prepares.len();
        let at = if len == 0 { 0 } else { u.choose_index(len)? };
        match u.int_in_range(0..=15u8)? {
            1 if len > 0 => {
                pre_prepares.remove(at);
            }
            2 => {
                let seq = pre_prepares.last().map_or(
                    models.iter().map(|m| m.stable_seq).max().unwrap_or(0),
                    |last| last.seq,
                ) + 1;
                pre_prepares.push(Vote {
                    signer: p,
                    view,
                    seq,
                    digest: null_digest(),
                });
            }
            3 if len > 0 => pre_prepares[at].digest = digest(u.int_in_range(0..=5u8)?),
            4 if len > 1 => pre_prepares.swap(at, (at + 1) % len),
            5 if len > 0 => pre_prepares[at].view = self.view - 1,
            6 if len > 0 => pre_prepares[at].signer = (p + 1) % N,
            7 if len > 0 => {
                let copy = pre_prepares[at];
                pre_prepares.insert(at, copy);
            }
            8 if len > 0 => pre_prepares[at].seq += 1,
            9 => {
                // The same primary, four views later: V is for another view.
                view += u64::from(N);
                for pp in &mut pre_prepares {
                    pp.view = view;
                }
            }
            _ => {}
        }
        let payload = NewViewPayload {
            view: View(view),
            view_changes: selection
                .iter()
                .map(|(_, frame)| ByteBuf::from(frame.to_vec()))
                .collect(),
            pre_prepares: pre_prepares
                .iter()
                .map(|pp| ByteBuf::from(sign_pre_prepare(pp).to_vec()))
                .collect(),
        };
        let frame = signed(p, &payload);
        let message = match Fixture::get().verifier.verify(frame) {
            Ok(message) => message,
            Err(VerifyError::TooManyEmbedded(_)) => {
                self.report.crafted_unverifiable += 1;
                return Ok(());
            }
            Err(error) => panic!("the verifier refused a NEW-VIEW signed by its primary: {error}"),
        };
        let verdict = reference::verdict(view, &models, &pre_prepares, self.window);
        if verdict == Verdict::Either {
            self.report.ambiguous += 1;
        }
        let backup = others[usize::from(u.int_in_range(0..=2u8)?)];
        let mut replica = fresh(backup);
        let before = replica.status();
        let actions = step(&mut replica, message);
        let accepted = actions.rejected.is_empty();
        match (verdict, accepted) {
            (Verdict::Accept | Verdict::Either, true) => {
                assert_eq!(
                    (replica.view(), replica.status().phase),
                    (View(view), Phase::Normal),
                    "an accepted NEW-VIEW installs its view"
                );
                self.report.crafted_accepted += 1;
            }
            (Verdict::Refuse | Verdict::Either, false) => {
                assert_eq!(rejections(&actions), [Rejection::InvalidNewView]);
                assert!(actions.is_quiet(), "a refused NEW-VIEW had effects");
                assert_eq!(
                    replica.status(),
                    before,
                    "a refused NEW-VIEW changed the backup"
                );
                self.report.crafted_refused += 1;
            }
            (Verdict::Accept, false) => panic!(
                "a backup refused a NEW-VIEW the reference accepts ({:?}): V = {models:?}, O = {pre_prepares:?}",
                actions.rejected
            ),
            (Verdict::Refuse, true) => panic!(
                "a backup accepted a NEW-VIEW the reference refuses: V = {models:?}, O = {pre_prepares:?}, reference O = {:?}",
                reference::plan(&models)
            ),
        }
        Ok(())
    }
}

fn rejections(actions: &Actions) -> Vec<Rejection> {
    actions.rejected.iter().map(|r| r.reason).collect()
}
