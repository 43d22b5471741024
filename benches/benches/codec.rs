//! Micro-benchmarks of the wire format (`bft_core::codec`): every message kind
//! ([`MessageKind::ALL`]) encoded and decoded, in five groups whose benchmark ids are the kinds'
//! names:
//!
//! - `encode`: the payload and the frame around it serialized, with a precomputed signature (the
//!   serialization cost alone);
//! - `sign_encode`: the signed frame as a sender builds it (payload encoded, signed, framed);
//! - `decode`: the frame and its payload decoded, embedded frames (a pre-prepare's requests, a
//!   certificate's votes) recursively, with no signature checked;
//! - `verify`: [`Verifier::verify`], the public path from untrusted bytes to a verified message:
//!   decoding, membership checks and every signature, embedded ones included. A reply, which
//!   carries no signature anyone checks and is refused off its sender's channel, goes through
//!   [`Verifier::verify_from`] with that channel instead, as `bft-net`'s client verifies it;
//! - `verify_batch`: the same frame alone through [`Verifier::verify_batch`] (a reply through
//!   [`Verifier::verify_batch_at`], on its channel): signatures are checked as a batch, which for
//!   a pre-prepare includes its requests (with `verify` they are checked one by one;
//!   certificates' embedded frames are batch-checked either way).
//!
//! The messages are those of a cluster of n = 4 (f = 1) with the testkit's keys: a request of
//! 64 B; a pre-prepare with a batch of 16 requests of 64 B; a reply of 64 B; a state manifest of
//! 4 chunks and a state chunk of 64 KiB; a committed batch (that pre-prepare and 2f+1 commits); a
//! view change with a stable-checkpoint proof of 2f+1 checkpoints and 4 prepared certificates
//! (a pre-prepare and 2f prepares each); a new view with 2f+1 such view changes and 4 re-issued
//! pre-prepares. Frame sizes are printed first.
//!
//! Run with `cargo bench -p benches --bench codec` (add a filter, e.g. `-- decode/`, to run a
//! subset). The whole file runs for about a minute and a half, plus the build.

use bft_core::codec::{self, DecodeError, FrameRef, Header};
use bft_core::messages::{
    Checkpoint, CommittedBatchPayload, FetchCommitted, FetchState, NewViewPayload,
    PrePrepareHeader, PrePreparePayload, Prepare, PreparedCertificatePayload, Reply, Request,
    StateChunk, StateManifest, ViewChangePayload, WireMessage, batch_digest, checkpoint_digest,
    encode_batch,
};
use bft_core::testkit::{self, CLUSTER_ID, client_key, replica_key};
use bft_core::{
    ClientId, DirectRequests, MessageKind, Outcome, Principal, ReplicaId, SeqNum, VerifiedMessage,
    Verifier, VerifyError, View,
};
use bft_crypto::{Digest, KeyPair, sha256};
use bytes::Bytes;
use criterion::Criterion;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// Requests in the pre-prepare's batch.
const BATCH: u64 = 16;
/// Operation, reply and request sizes.
const SMALL: usize = 64;
/// State chunk size.
const CHUNK: usize = 64 << 10;
/// Prepared certificates in a view change (and re-issued pre-prepares in a new view).
const CERTIFICATES: u64 = 4;
/// The stable checkpoint of the view-change messages.
const STABLE: u64 = 128;
/// No size limit when decoding (the verifier applies the configured ones).
const ANY_LEN: usize = usize::MAX;

/// One message kind's benchmarks.
struct Sample {
    kind: MessageKind,
    /// The signed frame's length.
    len: usize,
    /// Frames embedded in it (a pre-prepare's requests, a certificate's votes), recursively.
    embedded: usize,
    /// Serializes payload and frame (with a precomputed signature); returns the frame length.
    encode: Box<dyn Fn() -> usize>,
    /// Builds the signed frame; returns its length.
    sign_encode: Box<dyn Fn() -> usize>,
    /// Decodes the frame with everything embedded; returns the number of frames decoded.
    decode: Box<dyn Fn() -> usize>,
    /// Verifies the frame with the verifier.
    verify: Box<dyn Fn() -> VerifiedMessage>,
    /// Verifies the frame alone with [`Verifier::verify_batch`].
    verify_batch: Box<dyn Fn() -> VerifiedMessage>,
}

/// Bytes of `len` that differ with `tag`.
fn filler(len: usize, tag: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| i.wrapping_mul(131).wrapping_add(tag) as u8)
        .collect()
}

fn replica(id: u32) -> (KeyPair, Principal) {
    (replica_key(id), Principal::Replica(ReplicaId(id)))
}

/// The sample for a message that travels as a plain signed frame.
fn wire<M: WireMessage + Clone + 'static>(
    verifier: &Verifier,
    (key, sender): (KeyPair, Principal),
    message: M,
) -> Sample {
    let frame = message.sign(&key, CLUSTER_ID, sender);
    let kind = M::KIND;
    let header = Header {
        cluster: CLUSTER_ID,
        kind,
        sender,
    };
    let signature = codec::decode_frame(&frame, ANY_LEN)
        .expect("own frame decodes")
        .signature;
    let encoded = message.clone();
    let encode = move || {
        let payload = codec::encode(black_box(&encoded));
        FrameRef {
            header,
            payload: &payload,
            signature,
            attachment: &[],
        }
        .encode()
        .len()
    };
    let signed = move || message.sign(&key, CLUSTER_ID, sender).len();
    sample(verifier, kind, sender, frame.to_vec(), encode, signed)
}

/// Verifies `frame` alone, on `channel` if it has one.
fn verify_on(
    verifier: &Verifier,
    channel: Option<Principal>,
    frame: Bytes,
) -> Result<VerifiedMessage, VerifyError> {
    match channel {
        Some(peer) => verifier.verify_from(peer, frame),
        None => verifier.verify(frame),
    }
}

/// Verifies `frame` alone through the batch path, on `channel` if it has one.
fn verify_batch_on(
    verifier: &Verifier,
    channel: Option<Principal>,
    frame: Bytes,
    direct: &DirectRequests,
) -> Result<VerifiedMessage, VerifyError> {
    let mut results = match channel {
        Some(peer) => verifier.verify_batch_at(vec![(peer, frame)], direct),
        None => verifier.verify_batch(vec![frame]),
    };
    results.pop().expect("one result per frame")
}

fn sample(
    verifier: &Verifier,
    kind: MessageKind,
    sender: Principal,
    frame: Vec<u8>,
    encode: impl Fn() -> usize + 'static,
    sign_encode: impl Fn() -> usize + 'static,
) -> Sample {
    // How the frame reaches a verifier: a reply only on its sender's authenticated channel (the
    // verifier refuses it anywhere else), every other kind as untrusted bytes, every signature
    // checked.
    let channel = (kind == MessageKind::Reply).then_some(sender);
    let verified = verify_on(verifier, channel, frame.clone().into())
        .unwrap_or_else(|e| panic!("the {kind:?} sample does not verify: {e}"));
    assert_eq!(verified.kind(), kind);
    let embedded = decode_frame(kind, &frame).expect("the sample decodes") - 1;
    let received = verified.frame().clone();
    let (verifier, batch_verifier) = (verifier.clone(), verifier.clone());
    // Empty: only replies take the channel path (`verify_batch_at`), and they embed nothing.
    let direct = DirectRequests::new();
    let batch_received = received.clone();
    Sample {
        kind,
        len: frame.len(),
        embedded,
        encode: Box::new(encode),
        sign_encode: Box::new(sign_encode),
        decode: Box::new(move || decode_frame(kind, black_box(&frame)).expect("decodes")),
        verify: Box::new(move || {
            verify_on(&verifier, channel, black_box(received.clone())).expect("verifies")
        }),
        verify_batch: Box::new(move || {
            verify_batch_on(
                &batch_verifier,
                channel,
                black_box(batch_received.clone()),
                &direct,
            )
            .expect("verifies")
        }),
    }
}

/// Decodes a frame of `kind` and its payload, and every frame embedded in it; returns the number
/// of frames decoded. Signatures are not checked.
fn decode_frame(kind: MessageKind, bytes: &[u8]) -> Result<usize, DecodeError> {
    let frame = codec::decode_frame(bytes, ANY_LEN)?;
    assert_eq!(frame.header.kind, kind, "unexpected embedded kind");
    let payload = frame.payload;
    let embedded = match kind {
        MessageKind::Request => codec::decode::<Request>(payload).map(|_| 0)?,
        MessageKind::PrePrepare => {
            let PrePrepareHeader { view, seq, digest } = codec::decode(payload)?;
            if frame.attachment.is_empty() {
                0
            } else {
                let batch = PrePreparePayload {
                    view,
                    seq,
                    digest,
                    requests: codec::decode(frame.attachment)?,
                };
                let mut count = 0;
                for request in &batch.requests {
                    count += decode_frame(MessageKind::Request, request)?;
                }
                count
            }
        }
        MessageKind::Prepare => codec::decode::<Prepare>(payload).map(|_| 0)?,
        MessageKind::Commit => codec::decode::<bft_core::messages::Commit>(payload).map(|_| 0)?,
        MessageKind::Reply => codec::decode::<Reply>(payload).map(|_| 0)?,
        MessageKind::Checkpoint => codec::decode::<Checkpoint>(payload).map(|_| 0)?,
        MessageKind::FetchState => codec::decode::<FetchState>(payload).map(|_| 0)?,
        MessageKind::StateManifest => codec::decode::<StateManifest>(payload).map(|_| 0)?,
        MessageKind::StateChunk => codec::decode::<StateChunk>(payload).map(|_| 0)?,
        MessageKind::FetchCommitted => codec::decode::<FetchCommitted>(payload).map(|_| 0)?,
        MessageKind::CommittedBatch => {
            let batch: CommittedBatchPayload = codec::decode(payload)?;
            let mut count = decode_frame(MessageKind::PrePrepare, &batch.pre_prepare)?;
            for commit in &batch.commits {
                count += decode_frame(MessageKind::Commit, commit)?;
            }
            count
        }
        MessageKind::ViewChange => {
            let view_change: ViewChangePayload = codec::decode(payload)?;
            let mut count = 0;
            for checkpoint in &view_change.checkpoint_proof {
                count += decode_frame(MessageKind::Checkpoint, checkpoint)?;
            }
            for certificate in &view_change.prepared {
                count += decode_frame(MessageKind::PrePrepare, &certificate.pre_prepare)?;
                for prepare in &certificate.prepares {
                    count += decode_frame(MessageKind::Prepare, prepare)?;
                }
            }
            count
        }
        MessageKind::NewView => {
            let new_view: NewViewPayload = codec::decode(payload)?;
            let mut count = 0;
            for view_change in &new_view.view_changes {
                count += decode_frame(MessageKind::ViewChange, view_change)?;
            }
            for pre_prepare in &new_view.pre_prepares {
                count += decode_frame(MessageKind::PrePrepare, pre_prepare)?;
            }
            count
        }
    };
    Ok(embedded + 1)
}

/// A batch-less pre-prepare signed by `primary`.
fn pre_prepare(primary: u32, view: u64, seq: u64, digest: Digest) -> Vec<u8> {
    testkit::signed_by_replica(
        primary,
        &PrePrepareHeader {
            view: View(view),
            seq: SeqNum(seq),
            digest,
        },
    )
    .to_vec()
}

/// A VIEW-CHANGE to view 1 (the same from every sender): stable checkpoint 128 with its proof,
/// and prepared certificates for 129..=132 from view 0.
fn view_change(checkpoint: Digest) -> ViewChangePayload {
    let checkpoint_proof = (0..3)
        .map(|r| {
            let vote = Checkpoint {
                seq: SeqNum(STABLE),
                digest: checkpoint,
            };
            testkit::signed_by_replica(r, &vote).to_vec().into()
        })
        .collect();
    let prepared = (1..=CERTIFICATES)
        .map(|i| {
            let seq = STABLE + i;
            let digest = sha256(&seq.to_le_bytes());
            PreparedCertificatePayload {
                pre_prepare: pre_prepare(0, 0, seq, digest).into(),
                prepares: (1..=2)
                    .map(|r| testkit::prepare(r, 0, seq, digest).to_vec().into())
                    .collect(),
            }
        })
        .collect();
    ViewChangePayload {
        new_view: View(1),
        stable_seq: SeqNum(STABLE),
        checkpoint_proof,
        prepared,
    }
}

/// One realistic message of every kind, in [`MessageKind::ALL`] order.
fn samples() -> Vec<Sample> {
    let config = testkit::config(1, BATCH);
    let verifier = Verifier::new(Arc::new(config)).expect("valid configuration");
    let v = &verifier;
    let client = |id: u64| (client_key(id), Principal::Client(ClientId(id)));
    let request = |id: u64| Request {
        timestamp: 1,
        operation: filler(SMALL, id),
    };

    // The batch: 16 requests from 16 clients, and the digest the primary signs.
    let requests: Vec<Vec<u8>> = (1..=BATCH)
        .map(|id| {
            let (key, sender) = client(id);
            request(id).sign(&key, CLUSTER_ID, sender).to_vec()
        })
        .collect();
    let request_digests: Vec<Digest> = requests
        .iter()
        .map(|frame| match verifier.verify(frame.clone().into()) {
            Ok(VerifiedMessage::Request(request)) => request.digest(),
            other => panic!("not a verified request: {other:?}"),
        })
        .collect();
    let batch = PrePreparePayload {
        view: View(0),
        seq: SeqNum(1),
        digest: batch_digest(request_digests.into_iter()),
        requests: requests.into_iter().map(Into::into).collect(),
    };
    let (primary, primary_principal) = replica(0);
    let pre_prepare_frame = batch.sign(&primary, CLUSTER_ID, primary_principal);
    let pre_prepare_sample = {
        let signature = codec::decode_frame(&pre_prepare_frame, ANY_LEN)
            .expect("decodes")
            .signature;
        let header = Header {
            cluster: CLUSTER_ID,
            kind: MessageKind::PrePrepare,
            sender: primary_principal,
        };
        let encoded = batch.clone();
        let encode = move || {
            let payload = codec::encode(&black_box(&encoded).header());
            let attachment = encode_batch(&encoded.requests);
            FrameRef {
                header,
                payload: &payload,
                signature,
                attachment: &attachment,
            }
            .encode()
            .len()
        };
        let signed = batch.clone();
        let sign_encode = move || {
            black_box(&signed)
                .sign(&primary, CLUSTER_ID, primary_principal)
                .len()
        };
        sample(
            v,
            MessageKind::PrePrepare,
            primary_principal,
            pre_prepare_frame.to_vec(),
            encode,
            sign_encode,
        )
    };

    let state = filler(4 * CHUNK, 9);
    let manifest = StateManifest {
        seq: SeqNum(STABLE),
        total_bytes: state.len() as u64,
        chunk_digests: state.chunks(CHUNK).map(sha256).collect(),
    };
    let checkpoint = checkpoint_digest(&manifest);

    let committed = CommittedBatchPayload {
        pre_prepare: pre_prepare_frame.to_vec().into(),
        commits: (0..3)
            .map(|r| testkit::commit(r, 0, 1, batch.digest).to_vec().into())
            .collect(),
    };

    let new_view = NewViewPayload {
        view: View(1),
        view_changes: (1..=3)
            .map(|r| {
                testkit::signed_by_replica(r, &view_change(checkpoint))
                    .to_vec()
                    .into()
            })
            .collect(),
        pre_prepares: (1..=CERTIFICATES)
            .map(|i| {
                let seq = STABLE + i;
                pre_prepare(1, 1, seq, sha256(&seq.to_le_bytes())).into()
            })
            .collect(),
    };

    let samples = vec![
        wire(v, client(1), request(1)),
        pre_prepare_sample,
        wire(
            v,
            replica(1),
            Prepare {
                view: View(0),
                seq: SeqNum(1),
                digest: batch.digest,
            },
        ),
        wire(
            v,
            replica(1),
            bft_core::messages::Commit {
                view: View(0),
                seq: SeqNum(1),
                digest: batch.digest,
            },
        ),
        wire(
            v,
            replica(1),
            Reply {
                view: View(0),
                client: ClientId(1),
                timestamp: 1,
                outcome: Outcome::Ok(filler(SMALL, 3)),
            },
        ),
        wire(
            v,
            replica(1),
            Checkpoint {
                seq: SeqNum(STABLE),
                digest: checkpoint,
            },
        ),
        wire(
            v,
            replica(1),
            FetchState {
                seq: SeqNum(STABLE),
                digest: checkpoint,
                chunk: Some(0),
            },
        ),
        wire(v, replica(1), manifest),
        wire(
            v,
            replica(1),
            StateChunk {
                seq: SeqNum(STABLE),
                digest: checkpoint,
                index: 0,
                data: state[..CHUNK].to_vec(),
            },
        ),
        wire(
            v,
            replica(1),
            FetchCommitted {
                from: SeqNum(STABLE + 1),
            },
        ),
        wire(v, replica(1), committed),
        wire(v, replica(2), view_change(checkpoint)),
        wire(v, replica(1), new_view),
    ];
    let kinds: Vec<MessageKind> = samples.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, MessageKind::ALL, "one sample per kind, in order");
    samples
}

fn codec_benches(c: &mut Criterion) {
    let samples = samples();
    eprintln!(
        "{:<16} {:>12} {:>16}",
        "kind", "frame bytes", "embedded frames"
    );
    for s in &samples {
        eprintln!(
            "{:<16} {:>12} {:>16}",
            format!("{:?}", s.kind),
            s.len,
            s.embedded
        );
    }
    let mut group = c.benchmark_group("encode");
    for s in &samples {
        group.bench_function(format!("{:?}", s.kind), |b| b.iter(&s.encode));
    }
    group.finish();
    let mut group = c.benchmark_group("sign_encode");
    for s in &samples {
        group.bench_function(format!("{:?}", s.kind), |b| b.iter(&s.sign_encode));
    }
    group.finish();
    let mut group = c.benchmark_group("decode");
    for s in &samples {
        group.bench_function(format!("{:?}", s.kind), |b| b.iter(&s.decode));
    }
    group.finish();
    let mut group = c.benchmark_group("verify");
    for s in &samples {
        group.bench_function(format!("{:?}", s.kind), |b| b.iter(&s.verify));
    }
    group.finish();
    let mut group = c.benchmark_group("verify_batch");
    for s in &samples {
        group.bench_function(format!("{:?}", s.kind), |b| b.iter(&s.verify_batch));
    }
    group.finish();
}

fn config() -> Criterion {
    // 65 benchmarks; the slowest (verifying a NEW-VIEW) takes about 1.5 ms.
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(900))
        .sample_size(30)
}

fn main() {
    let mut criterion = config().configure_from_args();
    codec_benches(&mut criterion);
    criterion.final_summary();
}
