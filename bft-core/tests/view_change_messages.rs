//! VIEW-CHANGE and NEW-VIEW messages one at a time (PBFT, Castro and Liskov, OSDI'99 section
//! 4.4; the liveness rules of TOCS 2002 section 4.5.2): which VIEW-CHANGEs a replica holds and
//! which it refuses, when it joins a view change, the NEW-VIEW a new primary builds, and the
//! NEW-VIEWs a backup accepts.
//!
//! Every message is crafted by hand, signed with the testkit keys, passed through the real
//! `Verifier`, and stepped into a replica built directly (n = 4, f = 1, cluster 7) at
//! `Time::ZERO`. Refusals are checked as in `rejections.rs` (see [`assert_rejected`]): the exact
//! typed reason, a quiet step and an unchanged `Status`.

use bft_core::messages::{
    Checkpoint, NewView, NewViewPayload, PrePrepareHeader, Prepare, PreparedCertificatePayload,
    ViewChange, ViewChangePayload, WireMessage, batch_digest,
};
use bft_core::testkit::{self, service::LogService};
use bft_core::{
    Actions, ClusterConfig, Destination, Input, MessageKind, Phase, Principal, Rejection, Replica,
    ReplicaId, SeqNum, Status, Time, Verified, VerifiedMessage, Verifier, VerifyError, View,
};
use bft_crypto::Digest;
use bytes::Bytes;
use serde_bytes::ByteBuf;
use std::sync::Arc;

/// The cluster id `testkit::config` uses.
const CLUSTER: u64 = 7;

/// The number of replicas of `testkit::config(1, _)`.
const N: u64 = 4;

/// A cluster configuration (n = 4, f = 1), its verifier, and frame builders signed with the
/// testkit keys.
struct Fixture {
    config: Arc<ClusterConfig>,
    verifier: Verifier,
}

impl Fixture {
    fn new() -> Fixture {
        let config = Arc::new(testkit::config(1, 2));
        let verifier = Verifier::new(config.clone()).expect("valid configuration");
        Fixture { config, verifier }
    }

    /// The window L.
    fn window(&self) -> u64 {
        self.config.limits.window
    }

    /// Replica `id` with its own key and a fresh service.
    fn replica(&self, id: u32) -> Replica<LogService> {
        Replica::new(
            self.config.clone(),
            ReplicaId(id),
            testkit::replica_key(id),
            LogService::default(),
        )
        .expect("valid replica")
    }

    /// `message` signed by replica `id` with its own key.
    fn signed_by<M: WireMessage>(&self, id: u32, message: &M) -> Bytes {
        testkit::signed_by_replica(id, message)
    }

    /// A pre-prepare without its batch, as certificates and NEW-VIEWs carry it.
    fn pre_prepare(&self, signer: u32, view: u64, seq: u64, digest: Digest) -> Bytes {
        let header = PrePrepareHeader {
            view: View(view),
            seq: SeqNum(seq),
            digest,
        };
        self.signed_by(signer, &header)
    }

    fn prepare(&self, signer: u32, view: u64, seq: u64, digest: Digest) -> Bytes {
        testkit::prepare(signer, view, seq, digest)
    }

    fn commit(&self, signer: u32, view: u64, seq: u64, digest: Digest) -> Bytes {
        testkit::commit(signer, view, seq, digest)
    }

    fn checkpoint(&self, signer: u32, seq: u64, digest: Digest) -> Bytes {
        let checkpoint = Checkpoint {
            seq: SeqNum(seq),
            digest,
        };
        self.signed_by(signer, &checkpoint)
    }

    /// A valid stable-checkpoint proof: 2f+1 = 3 matching CHECKPOINTs from replicas 0, 2, 3.
    fn checkpoint_proof(&self, seq: u64, digest: Digest) -> Vec<Bytes> {
        [0, 2, 3]
            .into_iter()
            .map(|r| self.checkpoint(r, seq, digest))
            .collect()
    }

    /// A valid prepared certificate for (`view`, `seq`, `digest`): the primary's pre-prepare and
    /// 2f = 2 prepares from the two lowest-numbered backups of that view.
    fn certificate(&self, view: u64, seq: u64, digest: Digest) -> PreparedCertificatePayload {
        let [a, b] = backups(view);
        certificate(
            &self.pre_prepare(primary(view), view, seq, digest),
            &[
                self.prepare(a, view, seq, digest),
                self.prepare(b, view, seq, digest),
            ],
        )
    }

    /// A VIEW-CHANGE from `sender` for `new_view`.
    fn view_change(
        &self,
        sender: u32,
        new_view: u64,
        stable_seq: u64,
        checkpoint_proof: &[Bytes],
        prepared: Vec<PreparedCertificatePayload>,
    ) -> Bytes {
        let payload = ViewChangePayload {
            new_view: View(new_view),
            stable_seq: SeqNum(stable_seq),
            checkpoint_proof: checkpoint_proof.iter().map(buf).collect(),
            prepared,
        };
        self.signed_by(sender, &payload)
    }

    /// A VIEW-CHANGE at stable checkpoint 0 (empty proof).
    fn view_change_at_zero(
        &self,
        sender: u32,
        new_view: u64,
        prepared: Vec<PreparedCertificatePayload>,
    ) -> Bytes {
        self.view_change(sender, new_view, 0, &[], prepared)
    }

    /// The pre-prepares a NEW-VIEW for `view` re-issues, signed by that view's primary.
    fn reissued(&self, view: u64, entries: &[(u64, Digest)]) -> Vec<Bytes> {
        entries
            .iter()
            .map(|&(seq, digest)| self.pre_prepare(primary(view), view, seq, digest))
            .collect()
    }

    /// A NEW-VIEW for `view` signed by `signer`.
    fn new_view(
        &self,
        signer: u32,
        view: u64,
        view_changes: &[Bytes],
        pre_prepares: &[Bytes],
    ) -> Bytes {
        let payload = NewViewPayload {
            view: View(view),
            view_changes: view_changes.iter().map(buf).collect(),
            pre_prepares: pre_prepares.iter().map(buf).collect(),
        };
        self.signed_by(signer, &payload)
    }

    /// Verifies a frame that must be valid.
    fn verified(&self, frame: Bytes) -> VerifiedMessage {
        self.verifier.verify(frame).expect("a valid frame")
    }

    /// The verifier's error for a frame that must be refused.
    fn refused(&self, frame: Bytes) -> VerifyError {
        match self.verifier.verify(frame) {
            Ok(message) => panic!("accepted {:?} from {:?}", message.kind(), message.sender()),
            Err(error) => error,
        }
    }

    /// The frames of `actions` that are NEW-VIEWs, verified, with their destinations.
    fn new_views_sent(&self, actions: &Actions) -> Vec<(Destination, Verified<NewView>)> {
        actions
            .pending_sends()
            .iter()
            .filter_map(|o| match self.verified(o.frame.clone()) {
                VerifiedMessage::NewView(m) => Some((o.to, m)),
                _ => None,
            })
            .collect()
    }

    /// The frames of `actions` that are VIEW-CHANGEs, verified, with their destinations.
    fn view_changes_sent(&self, actions: &Actions) -> Vec<(Destination, Verified<ViewChange>)> {
        actions
            .pending_sends()
            .iter()
            .filter_map(|o| match self.verified(o.frame.clone()) {
                VerifiedMessage::ViewChange(m) => Some((o.to, m)),
                _ => None,
            })
            .collect()
    }

    /// The prepares in `actions`, verified: (destination, sender, view, seq, digest).
    fn prepares_sent(
        &self,
        actions: &Actions,
    ) -> Vec<(Destination, Principal, View, SeqNum, Digest)> {
        actions
            .pending_sends()
            .iter()
            .filter_map(|o| match self.verified(o.frame.clone()) {
                VerifiedMessage::Prepare(m) => {
                    let p = m.message();
                    Some((o.to, m.sender(), p.view, p.seq, p.digest))
                }
                _ => None,
            })
            .collect()
    }
}

/// The primary of `view`: replica `view mod n`.
fn primary(view: u64) -> u32 {
    (view % N) as u32
}

/// The two lowest-numbered backups of `view`.
fn backups(view: u64) -> [u32; 2] {
    let mut backups = (0..N as u32).filter(|&r| r != primary(view));
    [backups.next().unwrap(), backups.next().unwrap()]
}

fn buf(frame: &Bytes) -> ByteBuf {
    ByteBuf::from(frame.to_vec())
}

/// A prepared certificate from frames.
fn certificate(pre_prepare: &Bytes, prepares: &[Bytes]) -> PreparedCertificatePayload {
    PreparedCertificatePayload {
        pre_prepare: buf(pre_prepare),
        prepares: prepares.iter().map(buf).collect(),
    }
}

/// A batch digest standing for some batch.
fn d(tag: u8) -> Digest {
    Digest([tag; 32])
}

/// The digest of the null request a new primary issues for a gap (an empty batch).
fn null() -> Digest {
    batch_digest(std::iter::empty())
}

/// The (sender, view, seq, digest) of each pre-prepare a NEW-VIEW re-issues.
fn reissued_in(new_view: &Verified<NewView>) -> Vec<(Principal, View, SeqNum, Digest)> {
    new_view
        .message()
        .pre_prepares
        .iter()
        .map(|p| {
            let m = p.message();
            (p.sender(), m.view, m.seq, m.digest)
        })
        .collect()
}

/// What replica 1, the primary of view 1, must re-issue: `entries` in view 1.
fn from_replica_1(entries: &[(u64, Digest)]) -> Vec<(Principal, View, SeqNum, Digest)> {
    entries
        .iter()
        .map(|&(seq, digest)| {
            (
                Principal::Replica(ReplicaId(1)),
                View(1),
                SeqNum(seq),
                digest,
            )
        })
        .collect()
}

use testkit::assert_refused as assert_rejected;

/// Steps `replica` with `message`, asserting it is not refused.
fn accept(replica: &mut Replica<LogService>, message: VerifiedMessage) -> Actions {
    let actions = replica.step(Time::ZERO, Input::Message(message));
    assert!(actions.rejected.is_empty(), "{:?}", actions.rejected);
    actions
}

/// Steps `replica` with `message`, asserting it is held without refusal or effect.
fn hold(replica: &mut Replica<LogService>, message: VerifiedMessage) {
    let actions = accept(replica, message);
    assert!(
        actions.is_quiet(),
        "persist {:?}, send {:?}",
        actions.to_persist(),
        actions.pending_sends()
    );
}

/// Delivers `frame` (a VIEW-CHANGE from replica 3, say) to a fresh replica 1 and asserts it is
/// refused as `InvalidViewChange` with no effect.
fn assert_invalid_view_change(fx: &Fixture, frame: Bytes, case: &str) {
    let mut replica = fx.replica(1);
    assert_rejected(
        &mut replica,
        fx.verified(frame),
        Rejection::InvalidViewChange,
        case,
    );
}

/// Delivers `frame` to a fresh replica 1 and asserts it is held, quietly (positive controls for
/// the refusals: the same shape with the fault removed is valid).
fn assert_valid_view_change(fx: &Fixture, frame: Bytes, case: &str) {
    let mut replica = fx.replica(1);
    let before = replica.status();
    let actions = replica.step(Time::ZERO, Input::Message(fx.verified(frame)));
    assert!(
        actions.rejected.is_empty(),
        "{case}: {:?}",
        actions.rejected
    );
    assert!(actions.is_quiet(), "{case}");
    assert_eq!(
        replica.status(),
        Status {
            view_changes_held: 1,
            ..before
        },
        "{case}"
    );
}

/// Delivers VIEW-CHANGEs for view 1 from replicas 2 and then 3 to replica 1 (the primary of view
/// 1): after the first it is still in view 0, Normal, and quiet; returns the replica and the
/// second step's actions.
fn new_primary_after(fx: &Fixture, from_2: Bytes, from_3: Bytes) -> (Replica<LogService>, Actions) {
    let mut replica = fx.replica(1);
    let actions = accept(&mut replica, fx.verified(from_2));
    assert!(actions.is_quiet());
    assert_eq!(replica.status().view, View(0));
    assert_eq!(replica.status().phase, Phase::Normal);
    let actions = accept(&mut replica, fx.verified(from_3));
    (replica, actions)
}

/// Asserts that `actions` of the new primary of view 1 hold exactly one VIEW-CHANGE and one
/// NEW-VIEW, both to the other replicas, and returns the NEW-VIEW.
fn the_new_view(fx: &Fixture, actions: &Actions) -> Verified<NewView> {
    let view_changes = fx.view_changes_sent(actions);
    assert_eq!(view_changes.len(), 1, "{:?}", actions.pending_sends());
    assert_eq!(view_changes[0].0, Destination::OtherReplicas);
    assert_eq!(view_changes[0].1.message().new_view, View(1));
    let mut new_views = fx.new_views_sent(actions);
    assert_eq!(new_views.len(), 1, "{:?}", actions.pending_sends());
    let (to, new_view) = new_views.pop().unwrap();
    assert_eq!(to, Destination::OtherReplicas);
    assert_eq!(new_view.sender(), Principal::Replica(ReplicaId(1)));
    assert_eq!(new_view.message().view, View(1));
    let mut senders: Vec<Principal> = new_view
        .message()
        .view_changes
        .iter()
        .map(|vc| vc.sender())
        .collect();
    senders.sort();
    assert_eq!(
        senders,
        [1, 2, 3].map(|r| Principal::Replica(ReplicaId(r))),
        "2f+1 VIEW-CHANGEs, its own included"
    );
    assert!(
        new_view
            .message()
            .view_changes
            .iter()
            .all(|vc| vc.message().new_view == View(1))
    );
    new_view
}

/// The kinds of the signed records in `actions.to_persist()`, in order.
fn persisted_kinds(actions: &Actions) -> Vec<MessageKind> {
    actions.signed_records().map(|r| r.kind).collect()
}

// ---------------------------------------------------------------------------------------------
// Holding one VIEW-CHANGE
// ---------------------------------------------------------------------------------------------

/// OSDI'99 section 4.4: a VIEW-CHANGE `<VIEW-CHANGE, v+1, n, C, P, i>` whose prepared
/// certificate is the primary's pre-prepare with 2f matching prepares from distinct backups is
/// valid; the replica keeps it (one per sender) but does not move: a single VIEW-CHANGE is
/// neither f+1 (TOCS 2002 section 4.5.2) nor 2f+1. Nothing is sent and nothing else changes.
#[test]
fn a_valid_view_change_is_held_without_moving() {
    let fx = Fixture::new();
    let frame = fx.view_change_at_zero(3, 1, vec![fx.certificate(0, 1, d(1))]);
    let message = fx.verified(frame);
    let VerifiedMessage::ViewChange(view_change) = &message else {
        panic!("not a view change: {message:?}");
    };
    assert_eq!(view_change.sender(), Principal::Replica(ReplicaId(3)));
    let vc = view_change.message();
    assert_eq!((vc.new_view, vc.stable_seq), (View(1), SeqNum(0)));
    assert!(vc.checkpoint_proof.is_empty());
    assert_eq!(vc.prepared.len(), 1);
    assert_eq!(vc.prepared[0].prepares.len(), 2);

    let mut replica = fx.replica(1);
    let before = replica.status();
    let actions = accept(&mut replica, message);
    assert!(actions.is_quiet(), "{:?}", actions.pending_sends());
    let after = replica.status();
    assert_eq!(after.view_changes_held, 1);
    assert_eq!(after.view, View(0));
    assert_eq!(after.phase, Phase::Normal);
    assert_eq!(
        after,
        Status {
            view_changes_held: 1,
            ..before
        }
    );
}

/// OSDI'99 section 4.4: a VIEW-CHANGE with a stable checkpoint proves it with 2f+1 matching
/// CHECKPOINTs from distinct replicas, and may carry certificates up to the top of the sender's
/// window (stable_seq + L). These positive controls pin the boundaries the refusals below cross.
#[test]
fn view_changes_at_the_boundaries_are_valid() {
    let fx = Fixture::new();
    let window = fx.window();
    let proof = fx.checkpoint_proof(128, d(7));
    let mut four = proof.clone();
    four.push(fx.checkpoint(1, 128, d(7)));
    let cases = [
        ("no certificates", fx.view_change_at_zero(3, 1, vec![])),
        (
            "a certificate at the top of the window",
            fx.view_change_at_zero(3, 1, vec![fx.certificate(0, window, d(1))]),
        ),
        (
            "a stable checkpoint with 2f+1 CHECKPOINTs",
            fx.view_change(3, 1, 128, &proof, vec![]),
        ),
        (
            "a stable checkpoint with n CHECKPOINTs",
            fx.view_change(3, 1, 128, &four, vec![]),
        ),
        (
            "certificates just above the checkpoint and at stable_seq + L",
            fx.view_change(
                3,
                1,
                128,
                &proof,
                vec![
                    fx.certificate(0, 129, d(1)),
                    fx.certificate(0, 128 + window, d(2)),
                ],
            ),
        ),
        (
            "certificates from several earlier views",
            fx.view_change_at_zero(
                3,
                3,
                vec![
                    fx.certificate(0, 1, d(1)),
                    fx.certificate(1, 2, d(2)),
                    fx.certificate(2, 3, d(3)),
                ],
            ),
        ),
        (
            "a certificate with 3 prepares",
            fx.view_change_at_zero(
                3,
                1,
                vec![certificate(
                    &fx.pre_prepare(0, 0, 1, d(1)),
                    &[1, 2, 3].map(|r| fx.prepare(r, 0, 1, d(1))),
                )],
            ),
        ),
    ];
    for (case, frame) in cases {
        assert_valid_view_change(&fx, frame, case);
    }
}

// ---------------------------------------------------------------------------------------------
// Forged or invalid VIEW-CHANGEs (Rejection::InvalidViewChange)
// ---------------------------------------------------------------------------------------------

/// OSDI'99 section 4.4: a prepared certificate needs 2f prepares from distinct backups. One
/// prepare (f), or the same backup's prepare twice, proves nothing: `InvalidViewChange`.
#[test]
fn certificate_with_too_few_or_repeated_prepares_is_invalid() {
    let fx = Fixture::new();
    let pre_prepare = fx.pre_prepare(0, 0, 1, d(1));
    let from_2 = fx.prepare(2, 0, 1, d(1));
    let cases = [
        ("one prepare", vec![from_2.clone()]),
        ("no prepares", vec![]),
        (
            "the same prepare twice",
            vec![from_2.clone(), from_2.clone()],
        ),
    ];
    for (case, prepares) in cases {
        let frame = fx.view_change_at_zero(3, 1, vec![certificate(&pre_prepare, &prepares)]);
        assert_invalid_view_change(&fx, frame, case);
    }
}

/// OSDI'99 section 4.4: the pre-prepare of a prepared certificate must come from the primary of
/// its view (replica v mod n). One signed by a backup proves nothing: `InvalidViewChange`.
#[test]
fn certificate_pre_prepare_not_from_the_primary_is_invalid() {
    let fx = Fixture::new();
    for (case, signer, view) in [
        ("view 0 signed by replica 2", 2, 0),
        ("view 0 signed by replica 1", 1, 0),
        ("view 1 signed by replica 0", 0, 1),
    ] {
        // Prepares from replicas that are backups in either reading.
        let prepares = [2, 3].map(|r| fx.prepare(r, view, 1, d(1)));
        let frame = fx.view_change_at_zero(
            3,
            2,
            vec![certificate(
                &fx.pre_prepare(signer, view, 1, d(1)),
                &prepares,
            )],
        );
        assert_invalid_view_change(&fx, frame, case);
    }
}

/// OSDI'99 section 4.4: a prepared certificate's prepares must match its pre-prepare's view,
/// sequence number and digest. Prepares for another digest, sequence number or view:
/// `InvalidViewChange` (whether one or both disagree).
#[test]
fn certificate_prepares_disagreeing_with_the_pre_prepare_are_invalid() {
    let fx = Fixture::new();
    let pre_prepare = fx.pre_prepare(0, 0, 1, d(1));
    let good = fx.prepare(2, 0, 1, d(1));
    let cases = [
        ("one prepare for another digest", fx.prepare(3, 0, 1, d(2))),
        (
            "one prepare for another sequence number",
            fx.prepare(3, 0, 2, d(1)),
        ),
        ("one prepare for another view", fx.prepare(3, 1, 1, d(1))),
    ];
    for (case, bad) in cases {
        let frame =
            fx.view_change_at_zero(3, 2, vec![certificate(&pre_prepare, &[good.clone(), bad])]);
        assert_invalid_view_change(&fx, frame, case);
    }
    let both_other_digest = [2, 3].map(|r| fx.prepare(r, 0, 1, d(2)));
    let frame = fx.view_change_at_zero(3, 1, vec![certificate(&pre_prepare, &both_other_digest)]);
    assert_invalid_view_change(&fx, frame, "both prepares for another digest");
    let both_other_seq = [2, 3].map(|r| fx.prepare(r, 0, 2, d(1)));
    let frame = fx.view_change_at_zero(3, 1, vec![certificate(&pre_prepare, &both_other_seq)]);
    assert_invalid_view_change(&fx, frame, "both prepares for another sequence number");
}

/// OSDI'99 section 4.4 (with 4.2: the primary's pre-prepare stands for its prepare): the 2f
/// prepares of a certificate come from backups. A prepare signed by the primary of the
/// certificate's view does not count: `InvalidViewChange`, even beside 2f backup prepares.
#[test]
fn certificate_with_a_prepare_from_the_primary_is_invalid() {
    let fx = Fixture::new();
    let pre_prepare = fx.pre_prepare(0, 0, 1, d(1));
    let cases = [
        ("primary and one backup", vec![0, 2]),
        ("primary and two backups", vec![0, 2, 3]),
    ];
    for (case, signers) in cases {
        let prepares: Vec<Bytes> = signers.iter().map(|&r| fx.prepare(r, 0, 1, d(1))).collect();
        let frame = fx.view_change_at_zero(3, 1, vec![certificate(&pre_prepare, &prepares)]);
        assert_invalid_view_change(&fx, frame, case);
    }
    // View 1: replica 1 is the primary, replica 0 a backup.
    let pre_prepare = fx.pre_prepare(1, 1, 1, d(1));
    let prepares = [1, 2].map(|r| fx.prepare(r, 1, 1, d(1)));
    let frame = fx.view_change_at_zero(3, 2, vec![certificate(&pre_prepare, &prepares)]);
    assert_invalid_view_change(&fx, frame, "view 1: primary 1 and backup 2");
}

/// OSDI'99 section 4.4: P holds certificates of views the sender has been through, all below the
/// new view. A certificate for the new view itself or a later one: `InvalidViewChange`.
#[test]
fn certificate_for_a_view_at_or_above_the_new_view_is_invalid() {
    let fx = Fixture::new();
    for (case, view) in [("the new view", 1), ("a later view", 2)] {
        let frame = fx.view_change_at_zero(3, 1, vec![fx.certificate(view, 1, d(1))]);
        assert_invalid_view_change(&fx, frame, case);
    }
    let frame = fx.view_change_at_zero(3, 2, vec![fx.certificate(2, 1, d(1))]);
    assert_invalid_view_change(&fx, frame, "view 2 in a VIEW-CHANGE for view 2");
}

/// OSDI'99 section 4.4 (P covers sequence numbers above the sender's stable checkpoint n, within
/// its window (n, n + L] of section 4.2): a certificate at or below stable_seq, or above
/// stable_seq + L, is `InvalidViewChange`.
#[test]
fn certificate_outside_the_window_above_the_stable_checkpoint_is_invalid() {
    let fx = Fixture::new();
    let window = fx.window();
    let proof = fx.checkpoint_proof(128, d(7));
    let cases = [
        ("sequence number 0 at stable_seq 0", 0, 0),
        ("stable_seq 0 + L + 1", 0, window + 1),
        ("at stable_seq 128", 128, 128),
        ("below stable_seq 128", 128, 1),
        ("stable_seq 128 + L + 1", 128, 128 + window + 1),
    ];
    for (case, stable, seq) in cases {
        let proof: &[Bytes] = if stable == 0 { &[] } else { &proof };
        let frame = fx.view_change(3, 1, stable, proof, vec![fx.certificate(0, seq, d(1))]);
        assert_invalid_view_change(&fx, frame, case);
    }
}

/// OSDI'99 section 4.4: P holds one certificate per sequence number (the one from the highest
/// view the sender prepared it in). Two for one sequence number, identical or from different
/// views or digests, are `InvalidViewChange`.
#[test]
fn two_certificates_for_one_sequence_number_are_invalid() {
    let fx = Fixture::new();
    let cases = [
        ("the same certificate twice", (0, d(1)), (0, d(1))),
        ("two views", (0, d(1)), (1, d(1))),
        ("two digests", (0, d(1)), (1, d(2))),
    ];
    for (case, (v1, d1), (v2, d2)) in cases {
        let frame = fx.view_change_at_zero(
            3,
            2,
            vec![fx.certificate(v1, 5, d1), fx.certificate(v2, 5, d2)],
        );
        assert_invalid_view_change(&fx, frame, case);
    }
}

/// OSDI'99 section 4.4 (with 4.3): C proves the stable checkpoint n with 2f+1 CHECKPOINTs for n
/// with one digest from distinct replicas. Only 2f, mismatching digests, a duplicate signer,
/// CHECKPOINTs for another sequence number, or no proof at all for n > 0: `InvalidViewChange`.
#[test]
fn faulty_checkpoint_proofs_are_invalid() {
    let fx = Fixture::new();
    let c = |r, seq, digest| fx.checkpoint(r, seq, digest);
    let cases = [
        (
            "only 2f checkpoints",
            vec![c(0, 128, d(7)), c(2, 128, d(7))],
        ),
        (
            "mismatching digests",
            vec![c(0, 128, d(7)), c(2, 128, d(7)), c(3, 128, d(8))],
        ),
        (
            "2f+1 matching and one other digest",
            vec![
                c(0, 128, d(7)),
                c(1, 128, d(8)),
                c(2, 128, d(7)),
                c(3, 128, d(7)),
            ],
        ),
        (
            "a duplicate signer",
            vec![c(0, 128, d(7)), c(2, 128, d(7)), c(2, 128, d(7))],
        ),
        (
            "checkpoints for another sequence number",
            fx.checkpoint_proof(256, d(7)),
        ),
        (
            "mixed sequence numbers",
            vec![c(0, 128, d(7)), c(2, 128, d(7)), c(3, 256, d(7))],
        ),
        ("no proof", vec![]),
    ];
    for (case, proof) in cases {
        let frame = fx.view_change(3, 1, 128, &proof, vec![]);
        assert_invalid_view_change(&fx, frame, case);
    }
}

/// OSDI'99 section 4.4: C is empty while the stable checkpoint is 0 (the initial state needs no
/// proof). A non-empty proof with stable_seq 0 is `InvalidViewChange`, even a valid proof for
/// another checkpoint.
#[test]
fn non_empty_checkpoint_proof_at_stable_seq_zero_is_invalid() {
    let fx = Fixture::new();
    let cases = [
        (
            "a valid proof for checkpoint 128",
            fx.checkpoint_proof(128, d(7)),
        ),
        (
            "checkpoints for sequence number 0",
            fx.checkpoint_proof(0, d(7)),
        ),
    ];
    for (case, proof) in cases {
        let frame = fx.view_change(3, 1, 0, &proof, vec![]);
        assert_invalid_view_change(&fx, frame, case);
    }
}

// ---------------------------------------------------------------------------------------------
// Verifier-level refusals of embedded frames (VerifyError::Embedded)
// ---------------------------------------------------------------------------------------------

/// OSDI'99 section 4.4 (every message in a VIEW-CHANGE is signed, so a Byzantine sender cannot
/// invent a certificate): an embedded prepare that claims replica 2 but is signed with replica
/// 3's key is refused by the verifier as `Embedded { BadSignature(r2) }`. Positions count the
/// checkpoint proof first, then each certificate's pre-prepare followed by its prepares.
#[test]
fn embedded_forged_signature_is_refused_by_the_verifier() {
    let fx = Fixture::new();
    let forged_prepare = Prepare {
        view: View(0),
        seq: SeqNum(129),
        digest: d(1),
    }
    .sign(
        &testkit::replica_key(3),
        CLUSTER,
        Principal::Replica(ReplicaId(2)),
    );
    let bad_signature = |r| Box::new(VerifyError::BadSignature(Principal::Replica(ReplicaId(r))));

    // No checkpoint proof: [pre-prepare, prepare 1, prepare 2].
    let pre_prepare = fx.pre_prepare(0, 0, 129, d(1));
    let from_1 = fx.prepare(1, 0, 129, d(1));
    let frame = fx.view_change_at_zero(
        3,
        1,
        vec![certificate(
            &pre_prepare,
            &[from_1.clone(), forged_prepare.clone()],
        )],
    );
    assert_eq!(
        fx.refused(frame),
        VerifyError::Embedded {
            index: 2,
            error: bad_signature(2)
        }
    );

    // Three checkpoints, then [pre-prepare, prepare, prepare]: the forged prepare is frame 5.
    let proof = fx.checkpoint_proof(128, d(7));
    let frame = fx.view_change(
        3,
        1,
        128,
        &proof,
        vec![certificate(
            &pre_prepare,
            &[from_1.clone(), forged_prepare.clone()],
        )],
    );
    assert_eq!(
        fx.refused(frame),
        VerifyError::Embedded {
            index: 5,
            error: bad_signature(2)
        }
    );

    // In the second certificate: 3 checkpoints + 3 frames of the first, then its pre-prepare.
    let frame = fx.view_change(
        3,
        1,
        128,
        &proof,
        vec![
            fx.certificate(0, 130, d(2)),
            certificate(&pre_prepare, &[forged_prepare.clone(), from_1.clone()]),
        ],
    );
    assert_eq!(
        fx.refused(frame),
        VerifyError::Embedded {
            index: 7,
            error: bad_signature(2)
        }
    );

    // A forged checkpoint (claims replica 2, signed by 3) and a forged pre-prepare.
    let forged_checkpoint = Checkpoint {
        seq: SeqNum(128),
        digest: d(7),
    }
    .sign(
        &testkit::replica_key(3),
        CLUSTER,
        Principal::Replica(ReplicaId(2)),
    );
    let proof_with_forgery = [proof[0].clone(), forged_checkpoint, proof[2].clone()];
    let frame = fx.view_change(3, 1, 128, &proof_with_forgery, vec![]);
    assert_eq!(
        fx.refused(frame),
        VerifyError::Embedded {
            index: 1,
            error: bad_signature(2)
        }
    );
    let forged_pre_prepare = PrePrepareHeader {
        view: View(0),
        seq: SeqNum(1),
        digest: d(1),
    }
    .sign(
        &testkit::replica_key(3),
        CLUSTER,
        Principal::Replica(ReplicaId(0)),
    );
    let frame = fx.view_change_at_zero(
        3,
        1,
        vec![certificate(
            &forged_pre_prepare,
            &[1, 2].map(|r| fx.prepare(r, 0, 1, d(1))),
        )],
    );
    assert_eq!(
        fx.refused(frame),
        VerifyError::Embedded {
            index: 0,
            error: bad_signature(0)
        }
    );
}

/// OSDI'99 section 4.4: a VIEW-CHANGE embeds CHECKPOINTs, then per certificate a PRE-PREPARE and
/// PREPAREs, nothing else. A COMMIT where a PREPARE belongs, a PREPARE where the PRE-PREPARE
/// belongs, a VIEW-CHANGE or NEW-VIEW nested inside, or a PREPARE in the checkpoint proof, is
/// refused by the verifier as `Embedded { UnexpectedEmbeddedKind(kind) }` at its position. Kinds
/// are checked before any signature, so a wrong kind is reported even after a forged frame.
#[test]
fn embedded_frame_of_the_wrong_kind_is_refused_by_the_verifier() {
    let fx = Fixture::new();
    let unexpected = |index, kind| VerifyError::Embedded {
        index,
        error: Box::new(VerifyError::UnexpectedEmbeddedKind(kind)),
    };
    let pre_prepare = fx.pre_prepare(0, 0, 129, d(1));
    let prepare = fx.prepare(1, 0, 129, d(1));
    let commit = fx.commit(2, 0, 129, d(1));
    let proof = fx.checkpoint_proof(128, d(7));
    let inner_view_change = fx.view_change_at_zero(2, 1, vec![]);
    let inner_new_view = fx.new_view(1, 1, &[], &[]);

    // A commit as the second prepare: 3 checkpoints, the pre-prepare (3), prepares 4 and 5.
    let frame = fx.view_change(
        3,
        1,
        128,
        &proof,
        vec![certificate(
            &pre_prepare,
            &[prepare.clone(), commit.clone()],
        )],
    );
    assert_eq!(fx.refused(frame), unexpected(5, MessageKind::Commit));

    // The same without a checkpoint proof: the commit is frame 2.
    let frame = fx.view_change_at_zero(
        3,
        1,
        vec![certificate(
            &pre_prepare,
            &[prepare.clone(), commit.clone()],
        )],
    );
    assert_eq!(fx.refused(frame), unexpected(2, MessageKind::Commit));

    // A prepare where the pre-prepare belongs.
    let frame = fx.view_change_at_zero(
        3,
        1,
        vec![certificate(&prepare, &[prepare.clone(), prepare.clone()])],
    );
    assert_eq!(fx.refused(frame), unexpected(0, MessageKind::Prepare));

    // A VIEW-CHANGE inside a VIEW-CHANGE: in the proof, as a pre-prepare, as a prepare.
    let mut proof_with_view_change = proof.clone();
    proof_with_view_change[0] = inner_view_change.clone();
    let frame = fx.view_change(3, 1, 128, &proof_with_view_change, vec![]);
    assert_eq!(fx.refused(frame), unexpected(0, MessageKind::ViewChange));
    let frame = fx.view_change(
        3,
        1,
        128,
        &proof,
        vec![certificate(
            &inner_view_change,
            &[prepare.clone(), prepare.clone()],
        )],
    );
    assert_eq!(fx.refused(frame), unexpected(3, MessageKind::ViewChange));
    let frame = fx.view_change_at_zero(
        3,
        1,
        vec![certificate(
            &pre_prepare,
            &[prepare.clone(), inner_view_change.clone()],
        )],
    );
    assert_eq!(fx.refused(frame), unexpected(2, MessageKind::ViewChange));

    // A NEW-VIEW inside a VIEW-CHANGE, and a prepare in the checkpoint proof.
    let frame = fx.view_change_at_zero(
        3,
        1,
        vec![certificate(
            &pre_prepare,
            &[inner_new_view, prepare.clone()],
        )],
    );
    assert_eq!(fx.refused(frame), unexpected(1, MessageKind::NewView));
    let mut proof_with_prepare = proof.clone();
    proof_with_prepare[2] = prepare.clone();
    let frame = fx.view_change(3, 1, 128, &proof_with_prepare, vec![]);
    assert_eq!(fx.refused(frame), unexpected(2, MessageKind::Prepare));

    // Kinds first: a forged prepare at 1 and a commit at 2 report the commit.
    let forged = Prepare {
        view: View(0),
        seq: SeqNum(129),
        digest: d(1),
    }
    .sign(
        &testkit::replica_key(3),
        CLUSTER,
        Principal::Replica(ReplicaId(2)),
    );
    let frame = fx.view_change_at_zero(3, 1, vec![certificate(&pre_prepare, &[forged, commit])]);
    assert_eq!(fx.refused(frame), unexpected(2, MessageKind::Commit));
}

/// OSDI'99 section 4.4: a NEW-VIEW embeds VIEW-CHANGEs, then the re-issued PRE-PREPAREs. The
/// verifier refuses a forgery nested two levels down (a VIEW-CHANGE's forged prepare) as
/// `Embedded { Embedded { BadSignature } }`, and a frame of the wrong kind where a VIEW-CHANGE
/// or PRE-PREPARE belongs (a PREPARE, a NEW-VIEW) as `UnexpectedEmbeddedKind`.
#[test]
fn new_view_embedded_frames_are_checked_by_the_verifier() {
    let fx = Fixture::new();
    let forged = Prepare {
        view: View(0),
        seq: SeqNum(1),
        digest: d(1),
    }
    .sign(
        &testkit::replica_key(3),
        CLUSTER,
        Principal::Replica(ReplicaId(2)),
    );
    let good_1 = fx.view_change_at_zero(1, 1, vec![]);
    let good_3 = fx.view_change_at_zero(3, 1, vec![]);
    let forging = fx.view_change_at_zero(
        2,
        1,
        vec![certificate(
            &fx.pre_prepare(0, 0, 1, d(1)),
            &[fx.prepare(1, 0, 1, d(1)), forged],
        )],
    );
    let frame = fx.new_view(1, 1, &[good_1.clone(), forging, good_3.clone()], &[]);
    assert_eq!(
        fx.refused(frame),
        VerifyError::Embedded {
            index: 1,
            error: Box::new(VerifyError::Embedded {
                index: 2,
                error: Box::new(VerifyError::BadSignature(Principal::Replica(ReplicaId(2)))),
            }),
        }
    );

    let unexpected = |index, kind| VerifyError::Embedded {
        index,
        error: Box::new(VerifyError::UnexpectedEmbeddedKind(kind)),
    };
    let prepare = fx.prepare(2, 1, 1, d(1));
    let frame = fx.new_view(
        1,
        1,
        &[good_1.clone(), prepare.clone(), good_3.clone()],
        &[],
    );
    assert_eq!(fx.refused(frame), unexpected(1, MessageKind::Prepare));
    let inner_new_view = fx.new_view(1, 1, &[], &[]);
    let frame = fx.new_view(1, 1, &[good_1.clone(), good_3.clone()], &[inner_new_view]);
    assert_eq!(fx.refused(frame), unexpected(2, MessageKind::NewView));
    let frame = fx.new_view(1, 1, &[good_1, good_3.clone()], &[good_3]);
    assert_eq!(fx.refused(frame), unexpected(2, MessageKind::ViewChange));
}

/// OSDI'99 section 4.4 (a VIEW-CHANGE carries 2f+1 checkpoints and at most one certificate per
/// sequence number in the window, each with at most n votes): a VIEW-CHANGE embedding more
/// CHECKPOINTs or more prepares per certificate than there are replicas, or more certificates
/// than the window L, is refused by the verifier as `TooManyEmbedded` before any embedded
/// signature is checked.
#[test]
fn view_change_embedding_too_many_frames_is_too_many_embedded() {
    let fx = Fixture::new();
    let window = fx.window();
    let five_checkpoints: Vec<Bytes> = [0, 1, 2, 3, 0]
        .into_iter()
        .map(|r| fx.checkpoint(r, 128, d(7)))
        .collect();
    let five_prepares = certificate(
        &fx.pre_prepare(0, 0, 1, d(1)),
        &[1, 2, 3, 1, 2].map(|r| fx.prepare(r, 0, 1, d(1))),
    );
    let too_many_certificates: Vec<PreparedCertificatePayload> = (1..=window + 1)
        .map(|seq| fx.certificate(0, seq, d(1)))
        .collect();
    let cases = [
        (
            "n + 1 checkpoints",
            fx.view_change(3, 1, 128, &five_checkpoints, vec![]),
        ),
        (
            "n + 1 prepares in a certificate",
            fx.view_change_at_zero(3, 1, vec![five_prepares]),
        ),
        (
            "L + 1 certificates",
            fx.view_change_at_zero(3, 1, too_many_certificates),
        ),
    ];
    for (case, frame) in cases {
        let error = fx.refused(frame);
        assert!(
            matches!(error, VerifyError::TooManyEmbedded(_)),
            "{case}: {error:?}"
        );
    }
}

/// The count `TooManyEmbedded` reports (its message reads "{0} embedded votes exceed the number
/// of replicas") should be the size of the list that is too long (OSDI'99 section 4.4 bounds
/// each): 5 checkpoints, or 5 prepares in one certificate.
#[test]
fn too_many_embedded_reports_the_overflowing_count() {
    let fx = Fixture::new();
    let five_checkpoints: Vec<Bytes> = [0, 1, 2, 3, 0]
        .into_iter()
        .map(|r| fx.checkpoint(r, 128, d(7)))
        .collect();
    let frame = fx.view_change(3, 1, 128, &five_checkpoints, vec![]);
    assert_eq!(fx.refused(frame), VerifyError::TooManyEmbedded(5));
    let five_prepares = certificate(
        &fx.pre_prepare(0, 0, 1, d(1)),
        &[1, 2, 3, 1, 2].map(|r| fx.prepare(r, 0, 1, d(1))),
    );
    let frame = fx.view_change_at_zero(3, 1, vec![five_prepares]);
    assert_eq!(fx.refused(frame), VerifyError::TooManyEmbedded(5));
}

// ---------------------------------------------------------------------------------------------
// Joining a view change (TOCS 2002 section 4.5.2)
// ---------------------------------------------------------------------------------------------

/// TOCS 2002 section 4.5.2 (second liveness rule): a replica that holds valid VIEW-CHANGEs from
/// f+1 other replicas for views above its own joins, even before its timer expires, moving to
/// the smallest view among them (the (f+1)-th highest) and multicasting (after persisting) its
/// own signed VIEW-CHANGE for it. One VIEW-CHANGE for a higher view is not enough.
#[test]
fn f_plus_one_view_changes_for_higher_views_make_a_replica_join() {
    let fx = Fixture::new();
    let mut replica = fx.replica(1);

    let actions = accept(
        &mut replica,
        fx.verified(fx.view_change_at_zero(2, 3, vec![])),
    );
    assert!(actions.is_quiet(), "{:?}", actions.pending_sends());
    let status = replica.status();
    assert_eq!(
        (status.view, status.phase, status.view_changes_held),
        (View(0), Phase::Normal, 1)
    );

    let actions = accept(
        &mut replica,
        fx.verified(fx.view_change_at_zero(3, 2, vec![])),
    );
    let status = replica.status();
    assert_eq!(status.view, View(2), "the smallest view of the f+1 highest");
    assert_eq!(status.phase, Phase::ViewChanging);
    assert_eq!(
        status.view_changes_held, 3,
        "its own and those of replicas 2 and 3"
    );
    assert_eq!(replica.metrics().view_changes_started, 1);

    let sent = fx.view_changes_sent(&actions);
    assert_eq!(sent.len(), 1, "{:?}", actions.pending_sends());
    assert_eq!(actions.pending_sends().len(), 1);
    let (to, own) = &sent[0];
    assert_eq!(*to, Destination::OtherReplicas);
    assert_eq!(own.sender(), Principal::Replica(ReplicaId(1)));
    assert_eq!(own.message().new_view, View(2));
    assert_eq!(own.message().stable_seq, SeqNum(0));
    assert!(own.message().checkpoint_proof.is_empty());
    assert!(own.message().prepared.is_empty());
    let records: Vec<_> = actions.signed_records().collect();
    assert_eq!(persisted_kinds(&actions), [MessageKind::ViewChange]);
    assert_eq!(records[0].view, View(2));
    assert_eq!(
        records[0].frame,
        actions.pending_sends()[0].frame,
        "the frame persisted is the frame sent"
    );
    assert!(actions.rejected.is_empty() && actions.executed.is_empty());
}

/// TOCS 2002 section 4.5.2: the f+1 rule counts VIEW-CHANGEs from distinct other replicas for
/// views above the replica's own. One replica's VIEW-CHANGEs, repeated or for a higher view, and
/// a refused one for the current view from a second replica, never make it move.
#[test]
fn f_plus_one_rule_counts_distinct_senders_for_higher_views_only() {
    let fx = Fixture::new();
    let mut replica = fx.replica(1);
    let frame = fx.view_change_at_zero(3, 1, vec![]);
    hold(&mut replica, fx.verified(frame.clone()));
    assert_rejected(
        &mut replica,
        fx.verified(frame),
        Rejection::Duplicate,
        "the same VIEW-CHANGE again",
    );
    assert_rejected(
        &mut replica,
        fx.verified(fx.view_change_at_zero(2, 0, vec![])),
        Rejection::WrongView {
            got: View(0),
            current: View(0),
        },
        "replica 2 for the current view",
    );
    hold(
        &mut replica,
        fx.verified(fx.view_change_at_zero(3, 2, vec![])),
    );
    let status = replica.status();
    assert_eq!(
        (status.view, status.phase, status.view_changes_held),
        (View(0), Phase::Normal, 1)
    );
}

/// OSDI'99 section 4.4 (a replica accepts a VIEW-CHANGE for view v+1 only to leave its view v;
/// with TOCS 2002 section 4.5.2, only views above its own count): a VIEW-CHANGE for the current
/// view while in the normal case, or for an older view, is `WrongView`.
#[test]
fn view_change_for_a_view_not_above_the_current_one_is_wrong_view() {
    let fx = Fixture::new();
    let mut replica = fx.replica(1);
    assert_rejected(
        &mut replica,
        fx.verified(fx.view_change_at_zero(3, 0, vec![])),
        Rejection::WrongView {
            got: View(0),
            current: View(0),
        },
        "view 0 in view 0",
    );

    // Join view 2 (f+1), then refuse VIEW-CHANGEs for view 1 from a replica not yet heard from.
    hold(
        &mut replica,
        fx.verified(fx.view_change_at_zero(2, 2, vec![])),
    );
    let joined = accept(
        &mut replica,
        fx.verified(fx.view_change_at_zero(3, 2, vec![])),
    );
    assert_eq!(fx.view_changes_sent(&joined).len(), 1);
    assert_eq!(replica.status().view, View(2));
    assert_eq!(replica.status().phase, Phase::ViewChanging);
    assert_rejected(
        &mut replica,
        fx.verified(fx.view_change_at_zero(0, 1, vec![])),
        Rejection::WrongView {
            got: View(1),
            current: View(2),
        },
        "view 1 while changing to view 2",
    );
}

/// OSDI'99 section 4.4 (a replica keeps the latest VIEW-CHANGE of each replica): a second
/// VIEW-CHANGE from the same sender for the same view (identical or not) or for a lower view
/// than the one held is `Duplicate`; one for a higher view replaces it.
#[test]
fn second_view_change_for_the_same_or_a_lower_view_is_duplicate() {
    let fx = Fixture::new();
    let mut replica = fx.replica(1);
    let for_view_2 = fx.view_change_at_zero(3, 2, vec![]);
    hold(&mut replica, fx.verified(for_view_2.clone()));
    assert_eq!(replica.status().view_changes_held, 1);
    let cases = [
        ("the same frame", for_view_2),
        (
            "another VIEW-CHANGE for the same view",
            fx.view_change_at_zero(3, 2, vec![fx.certificate(0, 1, d(1))]),
        ),
        ("a lower view", fx.view_change_at_zero(3, 1, vec![])),
    ];
    for (case, frame) in cases {
        assert_rejected(&mut replica, fx.verified(frame), Rejection::Duplicate, case);
    }
    let actions = accept(
        &mut replica,
        fx.verified(fx.view_change_at_zero(3, 3, vec![])),
    );
    assert!(actions.is_quiet());
    assert_eq!(replica.status().view_changes_held, 1, "replaced, not added");
    assert_rejected(
        &mut replica,
        fx.verified(fx.view_change_at_zero(3, 2, vec![])),
        Rejection::Duplicate,
        "view 2 after view 3",
    );
}

/// OSDI'99 section 4.4: a replica's own VIEW-CHANGE never comes back in over the network; one
/// claiming to be from the receiving replica is `FromSelf`.
#[test]
fn view_change_from_the_replica_itself_is_from_self() {
    let fx = Fixture::new();
    let mut replica = fx.replica(1);
    assert_rejected(
        &mut replica,
        fx.verified(fx.view_change_at_zero(1, 1, vec![])),
        Rejection::FromSelf,
        "own VIEW-CHANGE",
    );
}

// ---------------------------------------------------------------------------------------------
// The new primary's NEW-VIEW
// ---------------------------------------------------------------------------------------------

/// OSDI'99 section 4.4: when the primary of view v+1 holds 2f+1 valid VIEW-CHANGEs for v+1 (its
/// own included) it multicasts `<NEW-VIEW, v+1, V, O>` and enters v+1. Here replica 1 joins on
/// f+1 VIEW-CHANGEs for view 1 (TOCS 2002 section 4.5.2), then holds three; with nothing
/// prepared, O is empty, and replica 1 is in view 1, normal case, with no VIEW-CHANGE left.
#[test]
fn new_primary_with_2f_plus_1_view_changes_sends_new_view() {
    let fx = Fixture::new();
    let (replica, actions) = new_primary_after(
        &fx,
        fx.view_change_at_zero(2, 1, vec![]),
        fx.view_change_at_zero(3, 1, vec![]),
    );
    let new_view = the_new_view(&fx, &actions);
    assert!(reissued_in(&new_view).is_empty());
    assert_eq!(
        persisted_kinds(&actions),
        [MessageKind::ViewChange, MessageKind::NewView],
        "persisted before they are sent"
    );
    let status = replica.status();
    assert_eq!(status.view, View(1));
    assert_eq!(status.phase, Phase::Normal);
    assert_eq!(status.view_changes_held, 0);
    assert!(replica.is_primary());
    assert_eq!(replica.metrics().view_changes_completed, 1);
}

/// OSDI'99 section 4.4: for every sequence number between min-s and max-s with a prepared
/// certificate in V, O holds a pre-prepare for the new view with that certificate's digest. A
/// certificate for (view 0, 1, d) yields exactly one pre-prepare, (view 1, 1, d), signed by the
/// new primary and persisted before it is sent.
#[test]
fn new_view_reissues_the_prepared_digest() {
    let fx = Fixture::new();
    let (replica, actions) = new_primary_after(
        &fx,
        fx.view_change_at_zero(2, 1, vec![fx.certificate(0, 1, d(1))]),
        fx.view_change_at_zero(3, 1, vec![fx.certificate(0, 1, d(1))]),
    );
    let new_view = the_new_view(&fx, &actions);
    assert_eq!(reissued_in(&new_view), from_replica_1(&[(1, d(1))]));
    assert_eq!(
        persisted_kinds(&actions),
        [
            MessageKind::ViewChange,
            MessageKind::PrePrepare,
            MessageKind::NewView
        ]
    );
    let record = actions.signed_records().nth(1).expect("a pre-prepare");
    assert_eq!(
        (record.view, record.seq, record.digest),
        (View(1), SeqNum(1), d(1))
    );
    let status = replica.status();
    assert_eq!((status.view, status.phase), (View(1), Phase::Normal));
    assert_eq!(status.pre_prepares_held, 1);
    assert_eq!(status.last_assigned, SeqNum(1));
}

/// OSDI'99 section 4.4: O covers every sequence number in (min-s, max-s]; one without a prepared
/// certificate in V gets a pre-prepare for the null request. Certificates for 1 and 3 yield
/// pre-prepares for 1 and 3 with their digests and for 2 with the null digest; a backup
/// recomputing O from the same VIEW-CHANGEs accepts the NEW-VIEW.
#[test]
fn new_view_fills_gaps_with_null_requests() {
    let fx = Fixture::new();
    let (replica, actions) = new_primary_after(
        &fx,
        fx.view_change_at_zero(2, 1, vec![fx.certificate(0, 1, d(1))]),
        fx.view_change_at_zero(3, 1, vec![fx.certificate(0, 3, d(3))]),
    );
    let new_view = the_new_view(&fx, &actions);
    assert_eq!(
        reissued_in(&new_view),
        from_replica_1(&[(1, d(1)), (2, null()), (3, d(3))])
    );
    let status = replica.status();
    assert_eq!((status.view, status.phase), (View(1), Phase::Normal));
    assert_eq!(status.pre_prepares_held, 3);
    assert_eq!(status.last_assigned, SeqNum(3));

    let mut backup = fx.replica(2);
    let actions = accept(&mut backup, VerifiedMessage::NewView(new_view));
    assert_eq!(backup.status().view, View(1));
    assert_eq!(backup.status().phase, Phase::Normal);
    assert_eq!(fx.prepares_sent(&actions).len(), 3);
}

/// OSDI'99 section 4.4: where V holds certificates for one sequence number from different views,
/// O re-issues the digest of the one from the highest view. Replica 2, the primary of view 2,
/// gets a certificate for (view 0, 1, a) from replica 1 and one for (view 1, 1, b) from replica
/// 3, and re-issues (view 2, 1, b).
#[test]
fn new_view_reissues_the_certificate_of_the_highest_view() {
    let fx = Fixture::new();
    let mut replica = fx.replica(2);
    hold(
        &mut replica,
        fx.verified(fx.view_change_at_zero(1, 2, vec![fx.certificate(0, 1, d(0xa))])),
    );
    let actions = accept(
        &mut replica,
        fx.verified(fx.view_change_at_zero(3, 2, vec![fx.certificate(1, 1, d(0xb))])),
    );
    let new_views = fx.new_views_sent(&actions);
    assert_eq!(new_views.len(), 1, "{:?}", actions.pending_sends());
    assert_eq!(
        reissued_in(&new_views[0].1),
        [(Principal::Replica(ReplicaId(2)), View(2), SeqNum(1), d(0xb))]
    );
    assert_eq!(replica.status().view, View(2));
    assert_eq!(replica.status().phase, Phase::Normal);
}

/// TOCS 2002 section 4.5.2 (VIEW-CHANGEs are re-sent until the view is installed; the primary
/// re-sends its NEW-VIEW to a replica that still asks for the view): after installing view 1, the
/// primary answers a VIEW-CHANGE for view 1 from replica 0 with the NEW-VIEW it sent, to replica
/// 0 only, and changes nothing else.
#[test]
fn new_primary_resends_new_view_to_a_replica_still_asking() {
    let fx = Fixture::new();
    let (mut replica, actions) = new_primary_after(
        &fx,
        fx.view_change_at_zero(2, 1, vec![]),
        fx.view_change_at_zero(3, 1, vec![]),
    );
    let sent = the_new_view(&fx, &actions);
    let status = replica.status();
    let actions = accept(
        &mut replica,
        fx.verified(fx.view_change_at_zero(0, 1, vec![])),
    );
    assert_eq!(actions.pending_sends().len(), 1);
    assert_eq!(
        actions.pending_sends()[0].to,
        Destination::Replica(ReplicaId(0))
    );
    assert_eq!(&actions.pending_sends()[0].frame, sent.frame());
    assert!(actions.to_persist().is_empty());
    assert_eq!(replica.status(), status);

    // At most once per `timing.view_change_resend` to each replica: a NEW-VIEW is large, and a
    // Byzantine replica must not turn a stream of small VIEW-CHANGEs into a flood of them.
    let again = fx.verified(fx.view_change_at_zero(0, 1, vec![]));
    let actions = replica.step(Time::ZERO, Input::Message(again.clone()));
    assert!(actions.pending_sends().is_empty());
    assert_eq!(actions.rejected[0].reason, Rejection::Duplicate);
    let later = Time::ZERO + fx.config.timing.view_change_resend;
    let actions = replica.step(later, Input::Message(again));
    assert_eq!(actions.pending_sends().len(), 1);
    assert_eq!(&actions.pending_sends()[0].frame, sent.frame());
}

// ---------------------------------------------------------------------------------------------
// A backup validating NEW-VIEW
// ---------------------------------------------------------------------------------------------

/// Three valid VIEW-CHANGEs for view 1 (from replicas 1, 2 and 3; replica 2's carries a
/// certificate for sequence number 1, replica 3's one for 3) and the O they determine.
struct NewViewParts {
    vc_1: Bytes,
    vc_2: Bytes,
    vc_3: Bytes,
    pre_prepares: Vec<Bytes>,
}

impl NewViewParts {
    fn new(fx: &Fixture) -> NewViewParts {
        NewViewParts {
            vc_1: fx.view_change_at_zero(1, 1, vec![]),
            vc_2: fx.view_change_at_zero(2, 1, vec![fx.certificate(0, 1, d(1))]),
            vc_3: fx.view_change_at_zero(3, 1, vec![fx.certificate(0, 3, d(3))]),
            pre_prepares: fx.reissued(1, &[(1, d(1)), (2, null()), (3, d(3))]),
        }
    }

    fn view_changes(&self) -> Vec<Bytes> {
        vec![self.vc_1.clone(), self.vc_2.clone(), self.vc_3.clone()]
    }
}

/// OSDI'99 section 4.4: a backup accepts a NEW-VIEW for v+1 signed by its primary whose 2f+1
/// VIEW-CHANGEs are valid and whose O it recomputes identically; it enters v+1 and multicasts a
/// PREPARE for every re-issued pre-prepare (the null request's included), persisted first.
#[test]
fn backup_accepts_a_correct_new_view_and_prepares() {
    let fx = Fixture::new();
    let parts = NewViewParts::new(&fx);
    let frame = fx.new_view(1, 1, &parts.view_changes(), &parts.pre_prepares);
    let mut replica = fx.replica(2);
    let actions = accept(&mut replica, fx.verified(frame));
    let status = replica.status();
    assert_eq!((status.view, status.phase), (View(1), Phase::Normal));
    assert_eq!(status.pre_prepares_held, 3);
    assert_eq!(status.prepares_held, 3, "its own prepares");
    assert_eq!(status.view_changes_held, 0);
    assert_eq!(replica.metrics().view_changes_completed, 1);

    let me = Principal::Replica(ReplicaId(2));
    let to = Destination::OtherReplicas;
    assert_eq!(
        fx.prepares_sent(&actions),
        [
            (to, me, View(1), SeqNum(1), d(1)),
            (to, me, View(1), SeqNum(2), null()),
            (to, me, View(1), SeqNum(3), d(3)),
        ]
    );
    assert_eq!(actions.pending_sends().len(), 3);
    assert_eq!(persisted_kinds(&actions), [MessageKind::Prepare; 3]);
    assert!(actions.rejected.is_empty() && actions.executed.is_empty());
}

/// OSDI'99 section 4.4: V holds at least 2f+1 valid VIEW-CHANGEs; a NEW-VIEW carrying all n
/// (replica 0's with a certificate for sequence number 2) is accepted when O is what all of them
/// determine: (1, d1), (2, d2), (3, d3).
#[test]
fn backup_accepts_a_new_view_with_n_view_changes() {
    let fx = Fixture::new();
    let parts = NewViewParts::new(&fx);
    let mut view_changes = parts.view_changes();
    view_changes.insert(
        0,
        fx.view_change_at_zero(0, 1, vec![fx.certificate(0, 2, d(2))]),
    );
    let pre_prepares = fx.reissued(1, &[(1, d(1)), (2, d(2)), (3, d(3))]);
    let mut replica = fx.replica(2);
    let actions = accept(
        &mut replica,
        fx.verified(fx.new_view(1, 1, &view_changes, &pre_prepares)),
    );
    assert_eq!(
        (replica.view(), replica.status().phase),
        (View(1), Phase::Normal)
    );
    let digests: Vec<(SeqNum, Digest)> = fx
        .prepares_sent(&actions)
        .iter()
        .map(|&(_, _, _, seq, digest)| (seq, digest))
        .collect();
    assert_eq!(
        digests,
        [(SeqNum(1), d(1)), (SeqNum(2), d(2)), (SeqNum(3), d(3))]
    );
}

/// OSDI'99 section 4.4: only the primary of view v+1 may send its NEW-VIEW. A NEW-VIEW for view
/// 1 signed by replica 3 or replica 0 (otherwise correct) is refused by the verifier, before any
/// of the signatures it embeds is checked: `NewViewNotFromPrimary`.
#[test]
fn new_view_not_from_the_primary_of_its_view_is_not_from_primary() {
    let fx = Fixture::new();
    let parts = NewViewParts::new(&fx);
    for signer in [3, 0] {
        let frame = fx.new_view(signer, 1, &parts.view_changes(), &parts.pre_prepares);
        assert_eq!(
            fx.refused(frame),
            VerifyError::NewViewNotFromPrimary(Principal::Replica(ReplicaId(signer))),
            "signed by replica {signer}"
        );
    }
}

/// OSDI'99 section 4.4: a backup accepts a NEW-VIEW only if it holds 2f+1 valid VIEW-CHANGEs for
/// its view from distinct replicas and O is exactly what they determine. Each fault below (with
/// O otherwise consistent with the VIEW-CHANGEs it carries, so only that fault is wrong) is
/// `InvalidNewView`, with no change to replica 2.
#[test]
fn faulty_new_views_are_invalid() {
    let fx = Fixture::new();
    let parts = NewViewParts::new(&fx);
    let NewViewParts {
        vc_1,
        vc_2,
        vc_3,
        pre_prepares,
    } = &parts;
    let o = |entries: &[(u64, Digest)]| fx.reissued(1, entries);
    let only_seq_1 = o(&[(1, d(1))]);
    let another_from_2 = fx.view_change_at_zero(2, 1, vec![]);
    let vc_3_for_view_2 = fx.view_change_at_zero(3, 2, vec![fx.certificate(0, 3, d(3))]);
    let vc_3_invalid = fx.view_change_at_zero(
        3,
        1,
        vec![certificate(
            &fx.pre_prepare(0, 0, 3, d(3)),
            &[fx.prepare(1, 0, 3, d(3))],
        )],
    );
    let mut reversed = pre_prepares.clone();
    reversed.reverse();
    let from_3 = vec![
        pre_prepares[0].clone(),
        fx.pre_prepare(3, 1, 2, null()),
        pre_prepares[2].clone(),
    ];
    let for_view_0 = vec![
        pre_prepares[0].clone(),
        fx.pre_prepare(1, 0, 2, null()),
        pre_prepares[2].clone(),
    ];
    let all = || vec![vc_1.clone(), vc_2.clone(), vc_3.clone()];
    let cases: Vec<(&str, Vec<Bytes>, Vec<Bytes>)> = vec![
        (
            "only 2f VIEW-CHANGEs",
            vec![vc_1.clone(), vc_2.clone()],
            only_seq_1.clone(),
        ),
        (
            "the same VIEW-CHANGE twice",
            vec![vc_1.clone(), vc_2.clone(), vc_2.clone()],
            only_seq_1.clone(),
        ),
        (
            "two VIEW-CHANGEs from one replica",
            vec![vc_1.clone(), vc_2.clone(), another_from_2],
            only_seq_1.clone(),
        ),
        (
            "a VIEW-CHANGE for another view",
            vec![vc_1.clone(), vc_2.clone(), vc_3_for_view_2],
            pre_prepares.clone(),
        ),
        (
            "an invalid VIEW-CHANGE",
            vec![vc_1.clone(), vc_2.clone(), vc_3_invalid],
            pre_prepares.clone(),
        ),
        (
            "the null request's pre-prepare omitted",
            all(),
            o(&[(1, d(1)), (3, d(3))]),
        ),
        (
            "the last pre-prepare omitted",
            all(),
            o(&[(1, d(1)), (2, null())]),
        ),
        ("no pre-prepares", all(), vec![]),
        (
            "an extra pre-prepare",
            all(),
            o(&[(1, d(1)), (2, null()), (3, d(3)), (4, null())]),
        ),
        (
            "a different digest",
            all(),
            o(&[(1, d(3)), (2, null()), (3, d(3))]),
        ),
        (
            "the null request instead of a prepared digest",
            all(),
            o(&[(1, null()), (2, null()), (3, d(3))]),
        ),
        (
            "a batch where the null request belongs",
            all(),
            o(&[(1, d(1)), (2, d(2)), (3, d(3))]),
        ),
        ("pre-prepares out of order", all(), reversed),
        ("a pre-prepare signed by a backup", all(), from_3),
        ("a pre-prepare for the old view", all(), for_view_0),
    ];
    for (case, view_changes, pre_prepares) in cases {
        let frame = fx.new_view(1, 1, &view_changes, &pre_prepares);
        let mut replica = fx.replica(2);
        assert_rejected(
            &mut replica,
            fx.verified(frame),
            Rejection::InvalidNewView,
            case,
        );
    }
}

/// OSDI'99 section 4.4: a NEW-VIEW installs its view once. After replica 2 entered view 1, the
/// same NEW-VIEW again is `WrongView`.
#[test]
fn new_view_for_the_installed_view_is_wrong_view() {
    let fx = Fixture::new();
    let parts = NewViewParts::new(&fx);
    let frame = fx.new_view(1, 1, &parts.view_changes(), &parts.pre_prepares);
    let mut replica = fx.replica(2);
    let entered = accept(&mut replica, fx.verified(frame.clone()));
    assert_eq!(fx.prepares_sent(&entered).len(), 3);
    assert_rejected(
        &mut replica,
        fx.verified(frame),
        Rejection::WrongView {
            got: View(1),
            current: View(1),
        },
        "the same NEW-VIEW again",
    );
}

// ---------------------------------------------------------------------------------------------
// min-s above a lagging replica's window
// ---------------------------------------------------------------------------------------------

/// OSDI'99 section 4.4 (min-s is the latest stable checkpoint in V, and O covers only
/// (min-s, max-s]) with section 4.3 and TOCS 2002 section 6 (a replica without the checkpoint's
/// state fetches it): replica 3's VIEW-CHANGE proves stable checkpoint 128 and has a certificate
/// for 200; replica 1's certificate for 5 lies at or below min-s and is not re-issued. The lagging
/// backup 2 (h = 0) accepts O = 129..=200 (null requests, then 200 with its digest), enters
/// view 1, prepares each, and starts fetching checkpoint 128.
#[test]
fn lagging_backup_accepts_a_new_view_above_its_checkpoint_and_fetches_min_s() {
    let fx = Fixture::new();
    let proof = fx.checkpoint_proof(128, d(7));
    let view_changes = [
        fx.view_change_at_zero(0, 1, vec![]),
        fx.view_change_at_zero(1, 1, vec![fx.certificate(0, 5, d(5))]),
        fx.view_change(3, 1, 128, &proof, vec![fx.certificate(0, 200, d(3))]),
    ];
    let mut entries: Vec<(u64, Digest)> = (129..200).map(|seq| (seq, null())).collect();
    entries.push((200, d(3)));
    let frame = fx.new_view(1, 1, &view_changes, &fx.reissued(1, &entries));
    let mut replica = fx.replica(2);
    let actions = accept(&mut replica, fx.verified(frame));
    let status = replica.status();
    assert_eq!((status.view, status.phase), (View(1), Phase::Normal));
    assert_eq!(status.fetching_state, Some(SeqNum(128)));
    assert_eq!(status.pre_prepares_held, 72);
    let prepared: Vec<(SeqNum, Digest)> = fx
        .prepares_sent(&actions)
        .iter()
        .map(|&(_, _, _, seq, digest)| (seq, digest))
        .collect();
    let expected: Vec<(SeqNum, Digest)> = entries
        .iter()
        .map(|&(seq, digest)| (SeqNum(seq), digest))
        .collect();
    assert_eq!(prepared, expected);

    // The same VIEW-CHANGEs with the certificate for 5 re-issued are refused.
    let mut with_5 = vec![(5, d(5))];
    with_5.extend(entries);
    let frame = fx.new_view(1, 1, &view_changes, &fx.reissued(1, &with_5));
    assert_rejected(
        &mut fx.replica(2),
        fx.verified(frame),
        Rejection::InvalidNewView,
        "a pre-prepare at or below min-s",
    );
}

/// OSDI'99 section 4.4 (min-s is the latest stable checkpoint in V; O covers (min-s, max-s]) with
/// section 4.3 (a replica's log holds only its window (h, h + L]): a lagging backup (h = 0)
/// accepts a NEW-VIEW whose min-s is 128 and whose max-s is 300 (valid: replica 3's certificate
/// lies within its own window (128, 384]). It starts fetching checkpoint 128 and enters view 1;
/// it must not hold log slots or send prepares above its high watermark (256) while h is still
/// 0, and its invariants must hold (a debug build checks them after every step).
#[test]
fn lagging_backup_entering_a_view_above_its_window_stays_within_it() {
    let fx = Fixture::new();
    let window = fx.window();
    let proof = fx.checkpoint_proof(128, d(7));
    let view_changes = [
        fx.view_change_at_zero(0, 1, vec![]),
        fx.view_change_at_zero(1, 1, vec![]),
        fx.view_change(3, 1, 128, &proof, vec![fx.certificate(0, 300, d(3))]),
    ];
    let mut entries: Vec<(u64, Digest)> = (129..300).map(|seq| (seq, null())).collect();
    entries.push((300, d(3)));
    let frame = fx.new_view(1, 1, &view_changes, &fx.reissued(1, &entries));
    let mut replica = fx.replica(2);
    let actions = accept(&mut replica, fx.verified(frame));
    let status = replica.status();
    assert_eq!((status.view, status.phase), (View(1), Phase::Normal));
    assert_eq!(status.fetching_state, Some(SeqNum(128)));
    let high = SeqNum(status.low_watermark.0 + window);
    assert!(
        fx.prepares_sent(&actions)
            .iter()
            .all(|&(_, _, _, seq, _)| seq <= high),
        "prepares above the high watermark {high:?}"
    );
}

/// The same as the previous test on the new primary itself: replica 1 (h = 0) builds the
/// NEW-VIEW from replica 3's VIEW-CHANGE with stable checkpoint 128 and a certificate for 300
/// (OSDI'99 section 4.4), re-issues 129..=300, and must stay within its window (section 4.3).
#[test]
fn lagging_new_primary_entering_a_view_above_its_window_stays_within_it() {
    let fx = Fixture::new();
    let proof = fx.checkpoint_proof(128, d(7));
    let (replica, actions) = new_primary_after(
        &fx,
        fx.view_change_at_zero(2, 1, vec![]),
        fx.view_change(3, 1, 128, &proof, vec![fx.certificate(0, 300, d(3))]),
    );
    let new_view = the_new_view(&fx, &actions);
    let reissued = reissued_in(&new_view);
    assert_eq!(reissued.len(), 172, "129..=300");
    assert_eq!(reissued.last().unwrap().3, d(3));
    let status = replica.status();
    assert_eq!((status.view, status.phase), (View(1), Phase::Normal));
    assert_eq!(status.fetching_state, Some(SeqNum(128)));
}
