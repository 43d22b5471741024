use super::*;
use bft_core::codec::{self, Header};
use bft_core::messages::{
    Checkpoint, Commit, NewViewPayload, PrePrepareHeader, PrePreparePayload, Prepare,
    PreparedCertificatePayload, Reply, Request, ViewChangePayload, WireMessage, batch_digest,
};
use bft_core::testkit::{self, CLUSTER_ID, service::LogService};
use bft_core::{
    ClientId, Input, Outcome, Rejection, Replica, SeqNum, Time, VerifiedMessage, Verifier,
    VerifyError,
};
use bft_crypto::{Digest, sha256};
use proptest::prelude::*;
use rand::SeedableRng;
use serde_bytes::ByteBuf;

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

fn payload<T: serde::de::DeserializeOwned + serde::Serialize>(frame: &Bytes) -> T {
    codec::decode(&parts(frame).1).expect("payload decodes")
}

/// Asserts `out` verifies, has `input`'s header and attachment, and its payload is `expected`.
fn assert_resigned<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + fmt::Debug>(
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
    let names: std::collections::BTreeSet<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
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

const KINDS: [MessageKind; 13] = MessageKind::ALL;

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
