//! Refusals of untrusted input (PBFT, Castro and Liskov, OSDI'99): the verifier's typed
//! `VerifyError`s for frames that are not authentic, well formed and within limits, and the
//! replica's typed `Rejection`s for authentic messages that the normal-case rules of section 4.2
//! and the exactly-once rules of section 4.1 refuse.
//!
//! Every protocol-level refusal is checked the same way (see [`assert_rejected`]): the exact
//! reason, one `Rejected` record naming the authenticated sender and kind, one more count under
//! the reason's label in the metrics, a quiet step (nothing to persist, send or execute) and an
//! unchanged `Status`. Verifier-level refusals need no replica check: `Verifier::verify` is a pure
//! function, and `Input::Message` only accepts what it returns, so a refused frame cannot reach
//! a replica at all.

use bft_core::testkit as harness;

use bft_core::codec::{self, DecodeError, FrameRef};
use bft_core::messages::{
    Checkpoint, Commit, PrePreparePayload, Prepare, Reply, Request, WireMessage, batch_digest,
};
use bft_core::{
    Actions, ClientId, ClusterConfig, Destination, DirectRequests, Executed, Input, MemoryStorage,
    MessageKind, Outcome, Outgoing, Principal, Record, Rejection, Replica, ReplicaId, SeqNum, Time,
    VerifiedMessage, Verifier, VerifyError, View,
};
use bft_crypto::Digest;
use bytes::Bytes;
use harness::service::LogService;
use harness::{Cluster, Node, client_key, replica_key};
use serde_bytes::ByteBuf;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The cluster id `harness::config` uses.
const CLUSTER: u64 = 7;

/// A cluster configuration, its verifier, and frame builders signed with the harness keys.
struct Fixture {
    config: Arc<ClusterConfig>,
    verifier: Verifier,
}

impl Fixture {
    /// n = 4 (f = 1) with clients 1..=3.
    fn new() -> Fixture {
        Fixture::with(harness::config(1, 3))
    }

    fn with(config: ClusterConfig) -> Fixture {
        let config = Arc::new(config);
        let verifier = Verifier::new(config.clone()).expect("valid configuration");
        Fixture { config, verifier }
    }

    /// Replica `id` with its own key and a fresh service.
    fn replica(&self, id: u32) -> Replica<LogService> {
        Replica::new(
            self.config.clone(),
            ReplicaId(id),
            replica_key(id),
            LogService::default(),
        )
        .expect("valid replica")
    }

    /// A request frame signed by admitted client `client`.
    fn request(&self, client: u64, timestamp: u64, operation: &[u8]) -> Bytes {
        Request {
            timestamp,
            operation: operation.to_vec(),
        }
        .sign(
            &client_key(client),
            CLUSTER,
            Principal::Client(ClientId(client)),
        )
    }

    /// `message` signed by replica `id` with its own key.
    fn signed_by<M: WireMessage>(&self, id: u32, message: &M) -> Bytes {
        harness::signed_by_replica(id, message)
    }

    /// The digest a request frame is known by (SHA-256 of its signed bytes), as the verifier
    /// computes it.
    fn request_digest(&self, frame: &Bytes) -> Digest {
        match self.verifier.verify(frame.clone()) {
            Ok(VerifiedMessage::Request(request)) => request.digest(),
            other => panic!("not a valid request: {other:?}"),
        }
    }

    /// The batch digest of valid request frames.
    fn batch_digest(&self, requests: &[Bytes]) -> Digest {
        let digests: Vec<Digest> = requests.iter().map(|r| self.request_digest(r)).collect();
        batch_digest(digests.into_iter())
    }

    /// A pre-prepare signed by `signer` with an explicit digest.
    fn pre_prepare_with_digest(
        &self,
        signer: u32,
        view: u64,
        seq: u64,
        digest: Digest,
        requests: &[Bytes],
    ) -> Bytes {
        let payload = PrePreparePayload {
            view: View(view),
            seq: SeqNum(seq),
            digest,
            requests: requests.iter().map(|r| ByteBuf::from(r.to_vec())).collect(),
        };
        payload.sign(
            &replica_key(signer),
            CLUSTER,
            Principal::Replica(ReplicaId(signer)),
        )
    }

    /// A well-formed pre-prepare signed by `signer` for valid `requests`.
    fn pre_prepare(&self, signer: u32, view: u64, seq: u64, requests: &[Bytes]) -> Bytes {
        let digest = self.batch_digest(requests);
        self.pre_prepare_with_digest(signer, view, seq, digest, requests)
    }

    fn prepare(&self, signer: u32, view: u64, seq: u64, digest: Digest) -> Bytes {
        harness::prepare(signer, view, seq, digest)
    }

    fn commit(&self, signer: u32, view: u64, seq: u64, digest: Digest) -> Bytes {
        harness::commit(signer, view, seq, digest)
    }

    /// Replica `id`'s unsigned reply frame, as replicas send it.
    fn reply_from(&self, id: u32, reply: &Reply) -> Bytes {
        reply.unsigned(CLUSTER, Principal::Replica(ReplicaId(id)))
    }

    /// Verifies a frame that must be valid, as received on a channel from its named sender.
    fn verified(&self, frame: Bytes) -> VerifiedMessage {
        let sender = bft_core::codec::decode_frame(&frame, usize::MAX)
            .expect("a frame")
            .header
            .sender;
        self.verifier
            .verify_from(sender, frame)
            .expect("a valid frame")
    }

    /// The verifier's error for a frame that must be refused.
    fn refused(&self, frame: Bytes) -> VerifyError {
        match self.verifier.verify(frame) {
            Ok(message) => panic!("accepted {:?} from {:?}", message.kind(), message.sender()),
            Err(error) => error,
        }
    }
}

/// Re-encodes `frame` after `edit` changed its header, payload or signature (nothing is
/// re-signed).
fn reframe(
    frame: &Bytes,
    edit: impl FnOnce(&mut codec::Header, &mut Vec<u8>, &mut bft_crypto::Signature),
) -> Bytes {
    let decoded = codec::decode_frame(frame, usize::MAX).expect("a frame");
    let mut header = decoded.header;
    let mut payload = decoded.payload.to_vec();
    let mut signature = decoded.signature;
    edit(&mut header, &mut payload, &mut signature);
    FrameRef {
        header,
        payload: &payload,
        signature,
        attachment: decoded.attachment,
    }
    .encode()
}

/// Steps `replica` with `message` and asserts it is refused for exactly `reason`, with no effect
/// (see [`harness::assert_refused`]).
fn assert_rejected(replica: &mut Replica<LogService>, message: VerifiedMessage, reason: Rejection) {
    harness::assert_refused(replica, message, reason, "");
}

/// Steps `replica` with `message`, asserting it is not refused.
fn accept(replica: &mut Replica<LogService>, message: VerifiedMessage) -> Actions {
    let actions = replica.step(Time::ZERO, Input::Message(message));
    assert!(actions.rejected.is_empty(), "{:?}", actions.rejected);
    actions
}

/// Orders `requests` at `seq` (view 0) on backup 1 by hand: the primary's pre-prepare, then
/// prepares and commits from backups 2 and 3. Returns every frame replica 1 sent and what it
/// executed.
fn order_on_backup_1(
    fx: &Fixture,
    replica: &mut Replica<LogService>,
    seq: u64,
    requests: &[Bytes],
) -> (Vec<Outgoing>, Vec<Executed>) {
    assert_eq!(replica.id(), ReplicaId(1));
    let digest = fx.batch_digest(requests);
    let frames = [
        fx.pre_prepare(0, 0, seq, requests),
        fx.prepare(2, 0, seq, digest),
        fx.prepare(3, 0, seq, digest),
        fx.commit(2, 0, seq, digest),
        fx.commit(3, 0, seq, digest),
    ];
    let mut storage = MemoryStorage::default();
    let mut sent = Vec::new();
    let mut executed = Vec::new();
    for frame in frames {
        let mut actions = accept(replica, fx.verified(frame));
        executed.append(&mut actions.executed);
        let Ok(outgoing) = actions.persist_then_send(&mut storage);
        sent.extend(outgoing);
    }
    assert_eq!(replica.status().last_executed, SeqNum(seq));
    (sent, executed)
}

fn reply_frames_to(sent: &[Outgoing], client: ClientId) -> Vec<Bytes> {
    sent.iter()
        .filter(|o| o.to == Destination::Client(client))
        .map(|o| o.frame.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Verifier-level refusals (VerifyError)
// ---------------------------------------------------------------------------------------------

/// Section 4.2 (all messages are signed; a replica accepts a prepare only if its signature is
/// correct): flipping one byte of a valid prepare's signature gives `BadSignature` naming the
/// claimed sender, wherever in the signature the byte is.
#[test]
fn forged_signature_is_bad_signature() {
    let fx = Fixture::new();
    let frame = fx.prepare(2, 0, 1, Digest([9; 32]));
    fx.verified(frame.clone());
    for index in [0, 31, 32, 63] {
        let forged = reframe(&frame, |_, _, signature| signature.0[index] ^= 0x01);
        assert_eq!(
            fx.refused(forged),
            VerifyError::BadSignature(Principal::Replica(ReplicaId(2))),
            "signature byte {index} flipped"
        );
    }
}

/// Section 4.2 (a signature binds the payload): changing one payload byte of a signed prepare
/// without re-signing gives `BadSignature`.
#[test]
fn tampered_payload_is_bad_signature() {
    let fx = Fixture::new();
    let frame = fx.prepare(2, 0, 1, Digest([9; 32]));
    let tampered = reframe(&frame, |_, payload, _| {
        let last = payload.len() - 1;
        payload[last] ^= 0x01;
    });
    assert_eq!(
        fx.refused(tampered),
        VerifyError::BadSignature(Principal::Replica(ReplicaId(2)))
    );
}

/// Section 4.2 with domain separation: a valid prepare's payload and signature relabelled as a
/// commit, or as sent by another replica, no longer verify (`BadSignature`): a signature cannot be
/// replayed as another kind or sender.
#[test]
fn relabelled_kind_or_sender_is_bad_signature() {
    let fx = Fixture::new();
    let frame = fx.prepare(2, 0, 1, Digest([9; 32]));
    let as_commit = reframe(&frame, |header, _, _| header.kind = MessageKind::Commit);
    assert_eq!(
        fx.refused(as_commit),
        VerifyError::BadSignature(Principal::Replica(ReplicaId(2)))
    );
    let as_replica_3 = reframe(&frame, |header, _, _| {
        header.sender = Principal::Replica(ReplicaId(3));
    });
    assert_eq!(
        fx.refused(as_replica_3),
        VerifyError::BadSignature(Principal::Replica(ReplicaId(3)))
    );
}

/// Section 4.2 (messages come from the n configured replicas): a prepare from `Replica(9)` in a
/// cluster of 4, signed with a key of its own, is `UnknownSender`.
#[test]
fn message_from_a_non_member_is_unknown_sender() {
    let fx = Fixture::new();
    let frame = fx.signed_by(
        9,
        &Prepare {
            view: View(0),
            seq: SeqNum(1),
            digest: Digest([9; 32]),
        },
    );
    assert_eq!(
        fx.refused(frame),
        VerifyError::UnknownSender(Principal::Replica(ReplicaId(9)))
    );
}

/// Section 4.2: a member's id with a signature by another member's key is `BadSignature` (a
/// Byzantine replica cannot speak for another).
#[test]
fn member_id_signed_with_another_key_is_bad_signature() {
    let fx = Fixture::new();
    let prepare = Prepare {
        view: View(0),
        seq: SeqNum(1),
        digest: Digest([9; 32]),
    };
    let frame = prepare.sign(&replica_key(3), CLUSTER, Principal::Replica(ReplicaId(2)));
    assert_eq!(
        fx.refused(frame),
        VerifyError::BadSignature(Principal::Replica(ReplicaId(2)))
    );
}

/// Section 4.2: a correctly signed frame for another cluster id is `WrongCluster` with both ids.
#[test]
fn frame_for_another_cluster_is_wrong_cluster() {
    let fx = Fixture::new();
    let prepare = Prepare {
        view: View(0),
        seq: SeqNum(1),
        digest: Digest([9; 32]),
    };
    let frame = prepare.sign(
        &replica_key(2),
        CLUSTER + 1,
        Principal::Replica(ReplicaId(2)),
    );
    assert_eq!(
        fx.refused(frame),
        VerifyError::WrongCluster {
            expected: CLUSTER,
            got: CLUSTER + 1,
        }
    );
}

/// Sections 4.1 and 4.2: clients send only requests, replicas send only pre-prepares, prepares,
/// commits and replies. A client's (validly signed) prepare, commit, pre-prepare or reply, and a
/// replica's request, are `WrongRole` with the kind and the sender.
#[test]
fn messages_from_the_wrong_role_are_wrong_role() {
    let fx = Fixture::new();
    let client = Principal::Client(ClientId(1));
    let key = client_key(1);
    let digest = Digest([9; 32]);
    let (view, seq) = (View(0), SeqNum(1));
    let from_client = [
        (
            MessageKind::Prepare,
            Prepare { view, seq, digest }.sign(&key, CLUSTER, client),
        ),
        (
            MessageKind::Commit,
            Commit { view, seq, digest }.sign(&key, CLUSTER, client),
        ),
        (
            MessageKind::PrePrepare,
            PrePreparePayload {
                view,
                seq,
                digest: batch_digest(std::iter::empty()),
                requests: Vec::new(),
            }
            .sign(&key, CLUSTER, client),
        ),
        (
            MessageKind::Reply,
            Reply {
                view,
                client: ClientId(1),
                timestamp: 1,
                outcome: Outcome::Ok(b"x".to_vec()),
            }
            .sign(&key, CLUSTER, client),
        ),
    ];
    for (kind, frame) in from_client {
        assert_eq!(
            fx.refused(frame),
            VerifyError::WrongRole {
                kind,
                sender: client
            }
        );
    }
    let replica = Principal::Replica(ReplicaId(1));
    let request = Request {
        timestamp: 1,
        operation: b"op".to_vec(),
    }
    .sign(&replica_key(1), CLUSTER, replica);
    assert_eq!(
        fx.refused(request),
        VerifyError::WrongRole {
            kind: MessageKind::Request,
            sender: replica
        }
    );
}

/// Section 4.2 (bounded resources): a frame longer than `limits.max_message_bytes` is
/// `Decode(TooLarge)` before anything is decoded: garbage of that length is refused for its size,
/// not as malformed, while the same garbage at exactly the limit is decoded (and is malformed).
#[test]
fn oversized_frame_is_too_large_without_decoding() {
    let fx = Fixture::new();
    let max = fx.config.limits.max_message_bytes;
    assert_eq!(
        fx.refused(Bytes::from(vec![0xff; max + 1])),
        VerifyError::Decode(DecodeError::TooLarge { len: max + 1, max })
    );
    assert!(matches!(
        fx.refused(Bytes::from(vec![0xff; max])),
        VerifyError::Decode(DecodeError::Malformed(_))
    ));
    // A validly signed frame one byte over the limit is refused as well.
    let mut config = harness::config(1, 3);
    config.limits.max_operation_bytes = 64;
    config.limits.max_reply_bytes = 64;
    config.limits.state_chunk_bytes = 64;
    config.limits.max_batch_requests = 2;
    config.limits.max_batch_bytes = 2 * config.limits.max_request_frame_bytes();
    config.limits.max_message_bytes = config.limits.required_message_bytes(4);
    let small = Fixture::with(config);
    let max = small.config.limits.max_message_bytes;
    let padding = vec![0u8; max];
    let frame = reframe(&small.prepare(2, 0, 1, Digest::ZERO), |_, payload, _| {
        payload.extend_from_slice(&padding)
    });
    assert_eq!(
        small.refused(frame.clone()),
        VerifyError::Decode(DecodeError::TooLarge {
            len: frame.len(),
            max
        })
    );
}

/// Section 4.2 (only well-formed messages are considered): bytes that are not a frame are
/// `Decode(Malformed)`.
#[test]
fn garbage_bytes_are_malformed() {
    let fx = Fixture::new();
    let valid = fx.prepare(2, 0, 1, Digest::ZERO);
    let garbage: [&[u8]; 5] = [
        b"",
        &[0xff; 12],
        b"hello, replica",
        &[0x07],
        &valid[..valid.len() - 1], // truncated
    ];
    for bytes in garbage {
        assert!(
            matches!(
                fx.refused(Bytes::copy_from_slice(bytes)),
                VerifyError::Decode(DecodeError::Malformed(_))
            ),
            "{bytes:?}"
        );
    }
}

/// Section 4.2: a frame is decoded exactly; a valid frame followed by one extra byte is
/// `Decode(TrailingBytes(1))`, and so is a signed payload with an extra byte after the message.
#[test]
fn trailing_bytes_are_refused() {
    let fx = Fixture::new();
    let mut bytes = fx.prepare(2, 0, 1, Digest::ZERO).to_vec();
    bytes.push(0);
    assert_eq!(
        fx.refused(Bytes::from(bytes)),
        VerifyError::Decode(DecodeError::TrailingBytes(1))
    );
    // The payload itself is also decoded exactly (after its signature verified).
    let mut payload = codec::encode(&Prepare {
        view: View(0),
        seq: SeqNum(1),
        digest: Digest::ZERO,
    });
    payload.push(0);
    let header = codec::Header {
        cluster: CLUSTER,
        kind: MessageKind::Prepare,
        sender: Principal::Replica(ReplicaId(2)),
    };
    let frame = codec::sign_frame(&replica_key(2), header, &payload, &[]);
    assert_eq!(
        fx.refused(frame),
        VerifyError::Decode(DecodeError::TrailingBytes(1))
    );
}

/// Section 4.1 (requests from clients the service admits): a request from a client id that is
/// not in the configuration is `UnknownSender`; an admitted client id signed with another key is
/// `BadSignature`.
#[test]
fn unadmitted_or_impersonated_clients_are_refused() {
    let fx = Fixture::new();
    let request = Request {
        timestamp: 1,
        operation: b"op".to_vec(),
    };
    let unknown = request.sign(&client_key(99), CLUSTER, Principal::Client(ClientId(99)));
    assert_eq!(
        fx.refused(unknown),
        VerifyError::UnknownSender(Principal::Client(ClientId(99)))
    );
    let impersonated = request.sign(&client_key(2), CLUSTER, Principal::Client(ClientId(1)));
    assert_eq!(
        fx.refused(impersonated),
        VerifyError::BadSignature(Principal::Client(ClientId(1)))
    );
    // A replica's key cannot sign for a client either.
    let by_replica = request.sign(&replica_key(0), CLUSTER, Principal::Client(ClientId(1)));
    assert_eq!(
        fx.refused(by_replica),
        VerifyError::BadSignature(Principal::Client(ClientId(1)))
    );
}

/// Section 4.1 (bounded resources): an operation one byte over `limits.max_operation_bytes` is
/// `OperationTooLarge`; a request frame over the largest request frame is `Decode(TooLarge)`
/// against that bound; an operation of exactly the limit is accepted.
#[test]
fn oversized_operations_are_refused() {
    let fx = Fixture::new();
    let max = fx.config.limits.max_operation_bytes;
    fx.verified(fx.request(1, 1, &vec![7; max]));
    assert_eq!(
        fx.refused(fx.request(1, 1, &vec![7; max + 1])),
        VerifyError::OperationTooLarge { len: max + 1, max }
    );
    let frame = fx.request(1, 1, &vec![7; max + 200]);
    assert_eq!(
        fx.refused(frame.clone()),
        VerifyError::Decode(DecodeError::TooLarge {
            len: frame.len(),
            max: fx.config.limits.max_request_frame_bytes(),
        })
    );
}

/// Section 4.2 (a pre-prepare carries the clients' signed requests; a Byzantine primary cannot
/// invent requests): a pre-prepare whose second request has a forged client signature is
/// `EmbeddedRequest { index: 1, error: BadSignature }`, even though its batch digest is right (a
/// request's digest covers its signed bytes, not the signature).
#[test]
fn pre_prepare_with_a_forged_request_is_refused() {
    let fx = Fixture::new();
    let good = fx.request(1, 1, b"a");
    let genuine = fx.request(2, 1, b"b");
    let forged = reframe(&genuine, |_, _, signature| signature.0[5] ^= 0x80);
    let digest = fx.batch_digest(&[good.clone(), genuine]);
    let frame = fx.pre_prepare_with_digest(0, 0, 1, digest, &[good, forged]);
    assert_eq!(
        fx.refused(frame),
        VerifyError::EmbeddedRequest {
            index: 1,
            error: Box::new(VerifyError::BadSignature(Principal::Client(ClientId(2)))),
        }
    );
}

/// Section 4.2: a pre-prepare may embed only client requests of this cluster. Another kind of
/// frame (a replica's prepare), a request for another cluster, garbage, or a request from an
/// unadmitted client are each refused with the embedded request's own reason and position.
#[test]
fn pre_prepare_with_an_invalid_embedded_frame_is_refused() {
    let fx = Fixture::new();
    let good = fx.request(1, 1, b"a");
    let other_cluster = Request {
        timestamp: 1,
        operation: b"b".to_vec(),
    }
    .sign(&client_key(2), CLUSTER + 1, Principal::Client(ClientId(2)));
    let unadmitted = Request {
        timestamp: 1,
        operation: b"b".to_vec(),
    }
    .sign(&client_key(99), CLUSTER, Principal::Client(ClientId(99)));
    let cases = [
        (
            fx.prepare(2, 0, 1, Digest::ZERO),
            VerifyError::WrongRole {
                kind: MessageKind::Prepare,
                sender: Principal::Replica(ReplicaId(2)),
            },
        ),
        (
            other_cluster,
            VerifyError::WrongCluster {
                expected: CLUSTER,
                got: CLUSTER + 1,
            },
        ),
        (
            unadmitted,
            VerifyError::UnknownSender(Principal::Client(ClientId(99))),
        ),
    ];
    for (embedded, error) in cases {
        let frame = fx.pre_prepare_with_digest(0, 0, 1, Digest::ZERO, &[good.clone(), embedded]);
        assert_eq!(
            fx.refused(frame),
            VerifyError::EmbeddedRequest {
                index: 1,
                error: Box::new(error),
            }
        );
    }
    let frame = fx.pre_prepare_with_digest(0, 0, 1, Digest::ZERO, &[Bytes::from_static(b"x")]);
    assert!(matches!(
        fx.refused(frame),
        VerifyError::EmbeddedRequest { index: 0, error }
            if matches!(*error, VerifyError::Decode(DecodeError::Malformed(_)))
    ));
}

/// Section 4.2 (the digest identifies the batch that prepares and commits refer to): a
/// pre-prepare whose digest is not the batch digest of its requests is `BatchDigestMismatch`:
/// a zero digest, another batch's digest, and the right requests in another order.
#[test]
fn pre_prepare_whose_digest_does_not_match_is_refused() {
    let fx = Fixture::new();
    let a = fx.request(1, 1, b"a");
    let b = fx.request(2, 1, b"b");
    let c = fx.request(3, 1, b"c");
    fx.verified(fx.pre_prepare(0, 0, 1, &[a.clone(), b.clone()]));
    let wrong = [
        Digest::ZERO,
        fx.batch_digest(&[a.clone(), c]),
        fx.batch_digest(&[b.clone(), a.clone()]),
        fx.batch_digest(std::slice::from_ref(&a)),
    ];
    for digest in wrong {
        let frame = fx.pre_prepare_with_digest(0, 0, 1, digest, &[a.clone(), b.clone()]);
        assert_eq!(fx.refused(frame), VerifyError::BatchDigestMismatch);
    }
}

/// Section 4.2 (bounded batches, TOCS 5.1): a pre-prepare with more than
/// `limits.max_batch_requests` requests, or more than `limits.max_batch_bytes` request bytes, is
/// `BatchTooLarge` with its size; one at the limit is accepted.
#[test]
fn oversized_batches_are_refused() {
    let mut config = harness::config(1, 3);
    config.limits.max_batch_requests = 2;
    let fx = Fixture::with(config);
    let requests: Vec<Bytes> = (1..=3).map(|c| fx.request(c, 1, b"op")).collect();
    fx.verified(fx.pre_prepare(0, 0, 1, &requests[..2]));
    let bytes = requests.iter().map(|r| r.len()).sum();
    assert_eq!(
        fx.refused(fx.pre_prepare(0, 0, 1, &requests)),
        VerifyError::BatchTooLarge { requests: 3, bytes }
    );

    let mut config = harness::config(1, 3);
    config.limits.max_operation_bytes = 100;
    config.limits.max_batch_bytes = config.limits.max_request_frame_bytes();
    let fx = Fixture::with(config);
    let requests = [fx.request(1, 1, &[1; 100]), fx.request(2, 1, &[2; 100])];
    fx.verified(fx.pre_prepare(0, 0, 1, &requests[..1]));
    let bytes = requests.iter().map(|r| r.len()).sum();
    assert!(bytes > fx.config.limits.max_batch_bytes);
    assert_eq!(
        fx.refused(fx.pre_prepare(0, 0, 1, &requests)),
        VerifyError::BatchTooLarge { requests: 2, bytes }
    );
}

/// What a verification result says, comparable across calls.
fn summary(
    result: &Result<VerifiedMessage, VerifyError>,
) -> Result<(MessageKind, Principal, Bytes), VerifyError> {
    match result {
        Ok(message) => Ok((message.kind(), message.sender(), message.frame().clone())),
        Err(error) => Err(error.clone()),
    }
}

/// Section 4.2 with batched signature checks (TOCS 2002 section 5): `verify_batch` accepts and
/// refuses exactly what `verify` does, frame by frame and in order, on a mix of valid frames and
/// frames refused for every reason, including pre-prepares with nested requests; and on an
/// all-valid batch (the path where one batch check succeeds).
#[test]
fn verify_batch_agrees_with_verify_frame_by_frame() {
    let fx = Fixture::new();
    let r1 = fx.request(1, 1, b"one");
    let r2 = fx.request(2, 1, b"two");
    let forged_request = reframe(&r2, |_, _, s| s.0[40] ^= 0x10);
    let prepare = fx.prepare(2, 0, 1, Digest([3; 32]));
    let mut trailing = prepare.to_vec();
    trailing.push(1);
    let max = fx.config.limits.max_message_bytes;
    let valid = vec![
        r1.clone(),
        prepare.clone(),
        fx.commit(3, 0, 1, Digest([3; 32])),
        fx.pre_prepare(0, 0, 1, &[r1.clone(), r2.clone()]),
        fx.pre_prepare(0, 0, 2, std::slice::from_ref(&r2)),
    ];
    let mut mixed = vec![
        // A reply is authenticated by its channel; neither mode knows one here.
        fx.reply_from(
            1,
            &Reply {
                view: View(0),
                client: ClientId(1),
                timestamp: 1,
                outcome: Outcome::ServicePanicked,
            },
        ),
        reframe(&prepare, |_, _, s| s.0[0] ^= 1),
        Bytes::from_static(b"garbage"),
        Bytes::from(trailing),
        Bytes::from(vec![0; max + 1]),
        forged_request.clone(),
        fx.pre_prepare_with_digest(
            0,
            0,
            3,
            fx.batch_digest(&[r1.clone(), r2.clone()]),
            &[r1.clone(), forged_request],
        ),
        fx.pre_prepare_with_digest(0, 0, 4, Digest::ZERO, std::slice::from_ref(&r1)),
        reframe(
            &fx.pre_prepare(0, 0, 5, std::slice::from_ref(&r1)),
            |_, _, s| s.0[3] ^= 4,
        ),
        Prepare {
            view: View(0),
            seq: SeqNum(1),
            digest: Digest::ZERO,
        }
        .sign(&client_key(1), CLUSTER, Principal::Client(ClientId(1))),
        fx.signed_by(
            9,
            &Commit {
                view: View(0),
                seq: SeqNum(1),
                digest: Digest::ZERO,
            },
        ),
        fx.request(1, 2, &vec![0; fx.config.limits.max_operation_bytes + 1]),
    ];
    // Interleave valid and invalid frames.
    let mut frames = Vec::new();
    for (i, frame) in valid.iter().enumerate() {
        frames.push(frame.clone());
        frames.extend(mixed.drain(..2.min(mixed.len())));
        if i == 2 {
            frames.push(frame.clone()); // the same frame twice in one batch
        }
    }
    frames.append(&mut mixed);

    for batch in [valid.clone(), frames.clone()] {
        let singles: Vec<_> = batch
            .iter()
            .map(|f| summary(&fx.verifier.verify(f.clone())))
            .collect();
        let batched: Vec<_> = fx
            .verifier
            .verify_batch(batch.clone())
            .iter()
            .map(summary)
            .collect();
        assert_eq!(batched.len(), batch.len());
        assert_eq!(batched, singles);
    }
    // The all-valid batch verifies entirely, and every frame of the mixed list that is not one of
    // the valid frames is refused.
    assert!(
        fx.verifier
            .verify_batch(valid.clone())
            .iter()
            .all(Result::is_ok)
    );
    let results = fx.verifier.verify_batch(frames.clone());
    for (frame, result) in frames.iter().zip(&results) {
        assert_eq!(result.is_ok(), valid.contains(frame), "{result:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol-level refusals (Rejection), on backup 1 of n = 4; the primary of view 0 is replica 0
// ---------------------------------------------------------------------------------------------

/// Section 4.2 ("it is in view v") with a bounded buffer for views ahead (section 4.4): prepares,
/// commits and pre-prepares for a view the backup has not entered are not processed but held, at
/// most `limits.max_future_messages_per_peer` per sender; one more is `FutureBufferFull` and
/// changes nothing. A single replica's messages never move the backup. (Messages for past views are `WrongView`: see the view-change tests.)
#[test]
fn messages_for_views_ahead_are_buffered_within_a_per_peer_limit() {
    let mut config = harness::config(1, 3);
    config.limits.max_future_messages_per_peer = 2;
    let fx = Fixture::with(config);
    let mut backup = fx.replica(1);
    let digest = Digest([4; 32]);
    for (i, frame) in [fx.prepare(2, 1, 1, digest), fx.commit(2, 4, 1, digest)]
        .into_iter()
        .enumerate()
    {
        let actions = backup.step(Time::ZERO, Input::Message(fx.verified(frame)));
        assert!(actions.is_quiet() && actions.rejected.is_empty());
        assert_eq!(backup.status().future_messages_held, i + 1);
        assert_eq!(
            backup.status().prepares_held + backup.status().commits_held,
            0
        );
    }
    assert_rejected(
        &mut backup,
        fx.verified(fx.commit(2, 1, 2, digest)),
        Rejection::FutureBufferFull,
    );
    // Another sender has its own budget. With messages for later views from f+1 = 2 replicas,
    // the backup concludes it missed a view change (TOCS section 4.5.2) and asks to join the
    // smallest view both reached: it moves to view 1 and sends a VIEW-CHANGE.
    let actions = backup.step(
        Time::ZERO,
        Input::Message(fx.verified(fx.commit(3, 1, 1, digest))),
    );
    assert!(actions.rejected.is_empty());
    let status = backup.status();
    assert_eq!(status.future_messages_held, 3);
    assert_eq!(
        (status.view, status.phase),
        (View(1), bft_core::Phase::ViewChanging)
    );
    assert_eq!(backup.metrics().rejoins, 1);
    assert!(
        actions
            .signed_records()
            .any(|r| r.kind == MessageKind::ViewChange)
    );
}

/// Section 4.2 ("the sequence number is between a low water mark h and a high water mark H"):
/// with window L = 4 and h = 0, sequence numbers 0 and 5 are `OutsideWindow { seq, low: 0,
/// high: 4 }` for pre-prepares, prepares and commits; 4 is accepted.
#[test]
fn sequence_numbers_outside_the_window_are_refused() {
    let mut config = harness::config(1, 3);
    config.limits.window = 4;
    config.limits.checkpoint_interval = 2;
    config.limits.max_in_flight_batches = 2;
    let fx = Fixture::with(config);
    let mut backup = fx.replica(1);
    let request = fx.request(1, 1, b"op");
    let digest = fx.batch_digest(std::slice::from_ref(&request));
    for seq in [0, 5, 1000] {
        // At or below h the slot is gone (section 4.3); above h + L it is not yet open.
        let outside = if seq == 0 {
            Rejection::Late {
                seq: SeqNum(0),
                low: SeqNum(0),
            }
        } else {
            Rejection::OutsideWindow {
                seq: SeqNum(seq),
                low: SeqNum(0),
                high: SeqNum(4),
            }
        };
        let frames = [
            fx.pre_prepare(0, 0, seq, std::slice::from_ref(&request)),
            fx.prepare(2, 0, seq, digest),
            fx.commit(3, 0, seq, digest),
        ];
        for frame in frames {
            assert_rejected(&mut backup, fx.verified(frame), outside);
        }
    }
    let actions = accept(
        &mut backup,
        fx.verified(fx.pre_prepare(0, 0, 4, &[request])),
    );
    assert_eq!(
        actions.signed_records().count(),
        1,
        "the backup signed a prepare for seq 4"
    );
    assert_eq!(backup.status().pre_prepares_held, 1);
}

/// Section 4.2 (a pre-prepare must be signed by the primary of its view): a pre-prepare for
/// view 0 signed by replica 2 is `NotFromPrimary { sender: r2, primary: r0 }`, at a backup and at
/// the primary itself.
#[test]
fn pre_prepare_from_a_non_primary_is_refused() {
    let fx = Fixture::new();
    let frame = fx.pre_prepare(2, 0, 1, &[fx.request(1, 1, b"op")]);
    let reason = Rejection::NotFromPrimary {
        sender: ReplicaId(2),
        primary: ReplicaId(0),
    };
    assert_rejected(&mut fx.replica(1), fx.verified(frame.clone()), reason);
    assert_rejected(&mut fx.replica(3), fx.verified(frame.clone()), reason);
    assert_rejected(&mut fx.replica(0), fx.verified(frame), reason);
}

/// Section 4.2 (backups multicast prepares; the primary's pre-prepare stands for its prepare, and
/// prepared needs 2f prepares from distinct backups): a prepare signed by the primary of its view
/// is `PrepareFromPrimary`.
#[test]
fn prepare_from_the_primary_is_refused() {
    let fx = Fixture::new();
    let frame = fx.prepare(0, 0, 1, Digest([4; 32]));
    assert_rejected(
        &mut fx.replica(1),
        fx.verified(frame.clone()),
        Rejection::PrepareFromPrimary,
    );
    assert_rejected(
        &mut fx.replica(2),
        fx.verified(frame),
        Rejection::PrepareFromPrimary,
    );
}

/// Section 4.2 (quorums count distinct replicas): a message that claims to come from the replica
/// that receives it, signed with its own key (a replay of its own vote, say), is `FromSelf`: for a
/// backup's prepare and commit, and for the primary's pre-prepare.
#[test]
fn messages_from_the_replica_itself_are_refused() {
    let fx = Fixture::new();
    let digest = Digest([4; 32]);
    let mut backup = fx.replica(1);
    assert_rejected(
        &mut backup,
        fx.verified(fx.prepare(1, 0, 1, digest)),
        Rejection::FromSelf,
    );
    assert_rejected(
        &mut backup,
        fx.verified(fx.commit(1, 0, 1, digest)),
        Rejection::FromSelf,
    );
    let mut primary = fx.replica(0);
    assert_rejected(
        &mut primary,
        fx.verified(fx.pre_prepare(0, 0, 1, &[fx.request(1, 1, b"op")])),
        Rejection::FromSelf,
    );
    assert_rejected(
        &mut primary,
        fx.verified(fx.commit(0, 0, 1, digest)),
        Rejection::FromSelf,
    );
}

/// Section 4.2 ("it has not accepted a pre-prepare message for view v and sequence number n
/// containing a different digest"): an equivocating primary's second pre-prepare for (v0, n1) with
/// another batch is `ConflictingPrePrepare` and the first stays: a repeat of the first is a
/// `Duplicate`, and 2f prepares and 2f+1 commits for the FIRST digest execute the first batch's
/// request and never the second's.
#[test]
fn conflicting_pre_prepare_is_refused_and_the_first_stays() {
    let fx = Fixture::new();
    let mut backup = fx.replica(1);
    let first_request = fx.request(1, 1, b"first");
    let second_request = fx.request(2, 1, b"second");
    let first = fx.pre_prepare(0, 0, 1, std::slice::from_ref(&first_request));
    let second = fx.pre_prepare(0, 0, 1, std::slice::from_ref(&second_request));
    let first_digest = fx.batch_digest(std::slice::from_ref(&first_request));
    let second_digest = fx.batch_digest(std::slice::from_ref(&second_request));

    let actions = accept(&mut backup, fx.verified(first.clone()));
    // The accepted pre-prepare (with its batch) is persisted before the prepare it led to.
    assert_eq!(actions.to_persist().len(), 2);
    assert_eq!(actions.to_persist()[0], Record::Frame(first.clone()));
    let signed: Vec<_> = actions.signed_records().collect();
    assert_eq!(signed.len(), 1);
    assert_eq!(signed[0].kind, MessageKind::Prepare);
    assert_eq!(signed[0].digest, first_digest);
    assert_rejected(
        &mut backup,
        fx.verified(second),
        Rejection::ConflictingPrePrepare,
    );
    assert_rejected(&mut backup, fx.verified(first), Rejection::Duplicate);
    // Votes for the second batch can never count.
    assert_rejected(
        &mut backup,
        fx.verified(fx.prepare(2, 0, 1, second_digest)),
        Rejection::DigestMismatch,
    );

    // The slot prepares and commits with the first digest.
    let mut executed = Vec::new();
    let mut committed = false;
    for frame in [
        fx.prepare(2, 0, 1, first_digest),
        fx.prepare(3, 0, 1, first_digest),
        fx.commit(2, 0, 1, first_digest),
        fx.commit(3, 0, 1, first_digest),
    ] {
        let actions = accept(&mut backup, fx.verified(frame));
        committed |= actions
            .signed_records()
            .any(|r| r.kind == MessageKind::Commit && r.digest == first_digest);
        executed.extend(actions.executed);
    }
    assert!(committed, "the backup committed the first digest");
    assert_eq!(executed.len(), 1, "{executed:?}");
    assert_eq!(
        (executed[0].client, executed[0].timestamp, executed[0].seq),
        (ClientId(1), 1, SeqNum(1))
    );
    assert_eq!(executed[0].request, fx.request_digest(&first_request));
    assert_eq!(backup.status().last_executed, SeqNum(1));
    assert_eq!(backup.metrics().requests_executed, 1);
}

/// Section 4.2 (prepares and commits are accepted only if they match the accepted pre-prepare's
/// digest): after the pre-prepare for (v0, n1), a prepare and a commit with another digest are
/// `DigestMismatch`.
#[test]
fn votes_that_do_not_match_the_pre_prepare_are_refused() {
    let fx = Fixture::new();
    let mut backup = fx.replica(1);
    let request = fx.request(1, 1, b"op");
    let _ = accept(
        &mut backup,
        fx.verified(fx.pre_prepare(0, 0, 1, std::slice::from_ref(&request))),
    );
    let other = Digest([0xee; 32]);
    assert_rejected(
        &mut backup,
        fx.verified(fx.prepare(2, 0, 1, other)),
        Rejection::DigestMismatch,
    );
    assert_rejected(
        &mut backup,
        fx.verified(fx.commit(3, 0, 1, other)),
        Rejection::DigestMismatch,
    );
    assert_rejected(
        &mut backup,
        fx.verified(fx.commit(0, 0, 1, other)),
        Rejection::DigestMismatch,
    );
}

/// Section 4.2 (each replica's vote counts once): the same commit twice is a `Duplicate`, before
/// and after the pre-prepare arrives; so is the same prepare twice.
#[test]
fn the_same_vote_twice_is_a_duplicate() {
    let fx = Fixture::new();
    let mut backup = fx.replica(1);
    let request = fx.request(1, 1, b"op");
    let digest = fx.batch_digest(std::slice::from_ref(&request));
    let commit = fx.commit(2, 0, 1, digest);
    let prepare = fx.prepare(3, 0, 1, digest);
    let actions = accept(&mut backup, fx.verified(commit.clone()));
    // Accepted, so persisted (for recovery), and nothing else.
    assert_eq!(actions.to_persist(), [Record::Frame(commit.clone())]);
    assert!(actions.pending_sends().is_empty() && actions.executed.is_empty());
    assert_rejected(
        &mut backup,
        fx.verified(commit.clone()),
        Rejection::Duplicate,
    );
    let _ = accept(
        &mut backup,
        fx.verified(fx.pre_prepare(0, 0, 1, &[request])),
    );
    assert_rejected(&mut backup, fx.verified(commit), Rejection::Duplicate);
    let _ = accept(&mut backup, fx.verified(prepare.clone()));
    assert_rejected(&mut backup, fx.verified(prepare), Rejection::Duplicate);
}

/// Section 4.2 (a replica votes once per view and sequence number): a second, different prepare
/// or commit from the same replica for (v0, n1) is `ConflictingVote`, whether or not the
/// pre-prepare has arrived, and the first vote stays.
#[test]
fn a_second_different_vote_from_one_replica_is_conflicting() {
    let fx = Fixture::new();
    let mut backup = fx.replica(1);
    let (a, b) = (Digest([0xaa; 32]), Digest([0xbb; 32]));
    let _ = accept(&mut backup, fx.verified(fx.prepare(2, 0, 1, a)));
    assert_rejected(
        &mut backup,
        fx.verified(fx.prepare(2, 0, 1, b)),
        Rejection::ConflictingVote,
    );
    let _ = accept(&mut backup, fx.verified(fx.commit(3, 0, 1, a)));
    assert_rejected(
        &mut backup,
        fx.verified(fx.commit(3, 0, 1, b)),
        Rejection::ConflictingVote,
    );

    // After the pre-prepare, too.
    let request = fx.request(1, 1, b"op");
    let digest = fx.batch_digest(std::slice::from_ref(&request));
    let _ = accept(
        &mut backup,
        fx.verified(fx.pre_prepare(0, 0, 2, &[request])),
    );
    let _ = accept(&mut backup, fx.verified(fx.prepare(2, 0, 2, digest)));
    assert_rejected(
        &mut backup,
        fx.verified(fx.prepare(2, 0, 2, a)),
        Rejection::ConflictingVote,
    );
}

/// Section 4.1 (exactly once: "replicas discard requests whose timestamp is lower than the
/// timestamp in the last reply they sent to the client"): after client 1's timestamps 1 and 2
/// executed, timestamp 1 again is `StaleRequest { timestamp: 1, last: 2 }`.
#[test]
fn a_replayed_old_request_is_stale() {
    let fx = Fixture::new();
    let mut backup = fx.replica(1);
    let old = fx.request(1, 1, b"one");
    order_on_backup_1(&fx, &mut backup, 1, std::slice::from_ref(&old));
    order_on_backup_1(&fx, &mut backup, 2, &[fx.request(1, 2, b"two")]);
    assert_eq!(backup.metrics().requests_executed, 2);
    assert_rejected(
        &mut backup,
        fx.verified(old),
        Rejection::StaleRequest {
            timestamp: 1,
            last: 2,
        },
    );
    // Older than the last executed is stale however old: a timestamp the client never used.
    assert_rejected(
        &mut backup,
        fx.verified(fx.request(1, 0, b"zero")),
        Rejection::StaleRequest {
            timestamp: 0,
            last: 2,
        },
    );
    // Another client's record is separate: its timestamp 1 is new.
    let _ = accept(&mut backup, fx.verified(fx.request(2, 1, b"other client")));
}

/// Section 4.1 ("if the request's timestamp equals the last one, the replica re-sends the cached
/// reply"): a retransmission of the last executed request is not a rejection and executes
/// nothing: the replica sends exactly the reply frame it sent on execution to that client, and
/// counts a reply from the cache.
#[test]
fn retransmission_of_the_last_request_is_answered_from_the_cache() {
    let fx = Fixture::new();
    let mut backup = fx.replica(1);
    order_on_backup_1(&fx, &mut backup, 1, &[fx.request(1, 1, b"one")]);
    let last = fx.request(1, 2, b"two");
    let (sent, _) = order_on_backup_1(&fx, &mut backup, 2, std::slice::from_ref(&last));
    let replies = reply_frames_to(&sent, ClientId(1));
    assert_eq!(replies.len(), 1);
    let reply = replies[0].clone();

    let status = backup.status();
    let metrics = backup.metrics().clone();
    let actions = backup.step(Time::ZERO, Input::Message(fx.verified(last)));
    assert!(actions.rejected.is_empty(), "{:?}", actions.rejected);
    assert!(actions.executed.is_empty());
    assert!(actions.to_persist().is_empty());
    assert_eq!(
        actions.pending_sends(),
        &[Outgoing {
            to: Destination::Client(ClientId(1)),
            frame: reply.clone(),
        }]
    );
    assert_eq!(backup.status(), status);
    assert_eq!(
        backup.metrics().replies_from_cache,
        metrics.replies_from_cache + 1
    );
    assert_eq!(
        backup.metrics().requests_executed,
        metrics.requests_executed
    );
    assert_eq!(backup.metrics().rejected, metrics.rejected);
    // The cached frame is replica 1's reply to timestamp 2.
    let VerifiedMessage::Reply(reply) = fx.verified(reply) else {
        panic!("not a reply")
    };
    assert_eq!(reply.sender(), Principal::Replica(ReplicaId(1)));
    assert_eq!(reply.message().client, ClientId(1));
    assert_eq!(reply.message().timestamp, 2);
}

/// Section 5.2 (replies are authenticated by MACs, not signatures): a reply needs no signature
/// on a channel authenticated as its sender, but is refused on another replica's channel (a
/// Byzantine replica cannot speak for a correct one) and where no channel is known. Kinds that are
/// relayed as they arrived (here a checkpoint vote, shown in stable proofs) still need their own
/// signature on any channel: a channel never stands in for it (prepares and commits, which a
/// replica checks before it relays them: see the next test).
#[test]
fn replies_are_authenticated_by_their_channel_and_nothing_else_is() {
    let fx = Fixture::new();
    let reply = Reply {
        view: View(0),
        client: ClientId(1),
        timestamp: 1,
        outcome: Outcome::Ok(b"r".to_vec()),
    };
    let r1 = Principal::Replica(ReplicaId(1));
    let r2 = Principal::Replica(ReplicaId(2));
    let unsigned = fx.reply_from(1, &reply);
    match fx.verifier.verify_from(r1, unsigned.clone()) {
        Ok(VerifiedMessage::Reply(verified)) => {
            assert_eq!(verified.sender(), r1);
            assert_eq!(verified.message(), &reply);
        }
        other => panic!("refused its sender's reply: {other:?}"),
    }
    assert_eq!(
        fx.verifier.verify_from(r2, unsigned.clone()).unwrap_err(),
        VerifyError::SenderIsNotPeer {
            sender: r1,
            peer: r2
        }
    );
    // Even with replica 1's valid signature, the channel decides.
    let signed = fx.signed_by(1, &reply);
    assert_eq!(
        fx.verifier.verify_from(r2, signed.clone()).unwrap_err(),
        VerifyError::SenderIsNotPeer {
            sender: r1,
            peer: r2
        }
    );
    assert_eq!(
        fx.refused(unsigned.clone()),
        VerifyError::ReplyWithoutChannel(r1)
    );
    assert_eq!(fx.refused(signed), VerifyError::ReplyWithoutChannel(r1));
    assert!(
        fx.verifier
            .verify_batch(vec![unsigned])
            .iter()
            .all(|r| matches!(r, Err(VerifyError::ReplyWithoutChannel(p)) if *p == r1))
    );
    // A checkpoint unsigned (the reply's zero signature) or badly signed is refused even on its
    // sender's channel; a signed one relayed on another replica's channel is accepted.
    let vote = Checkpoint {
        seq: SeqNum(4),
        digest: Digest([3; 32]),
    };
    let unsigned_vote = vote.unsigned(CLUSTER, r2);
    assert_eq!(
        fx.verifier.verify_from(r2, unsigned_vote).unwrap_err(),
        VerifyError::BadSignature(r2)
    );
    let forged = reframe(&fx.signed_by(2, &vote), |_, _, s| s.0[0] ^= 1);
    assert_eq!(
        fx.verifier.verify_from(r2, forged).unwrap_err(),
        VerifyError::BadSignature(r2)
    );
    let relayed = fx.verifier.verify_from(r1, fx.signed_by(2, &vote));
    assert_eq!(relayed.map(|m| m.sender()), Ok(r2));
}

/// Sections 4.2 and 5.2 (prepares and commits are authenticated by MACs): a vote on a channel
/// authenticated as its signer is accepted without a signature check, and says so
/// (`Verified::signature_checked`), so the replica checks it before it counts toward a prepared
/// certificate or is relayed in a commit certificate. The channel stands only for its own
/// principal: a badly signed vote naming another replica is refused on any other channel, and so
/// is one with no channel at all (as a certificate embeds it). A well-signed vote relayed by
/// another replica is accepted, with its signature checked. A replica's own log is the channel
/// the votes of others came on; its own votes there are checked by their signatures.
#[test]
fn votes_are_authenticated_by_their_signers_channel_and_only_by_it() {
    let fx = Fixture::new();
    let r1 = Principal::Replica(ReplicaId(1));
    let r2 = Principal::Replica(ReplicaId(2));
    let digest = Digest([4; 32]);
    let vote_of = |result: Result<VerifiedMessage, VerifyError>| match result {
        Ok(VerifiedMessage::Prepare(vote)) => (vote.sender(), vote.signature_checked()),
        Ok(VerifiedMessage::Commit(vote)) => (vote.sender(), vote.signature_checked()),
        other => panic!("not an accepted vote: {other:?}"),
    };
    for signed in [fx.prepare(2, 0, 1, digest), fx.commit(2, 0, 1, digest)] {
        let badly_signed = reframe(&signed, |_, _, s| s.0[0] ^= 1);
        assert_eq!(
            vote_of(fx.verifier.verify_from(r2, badly_signed.clone())),
            (r2, false)
        );
        assert_eq!(
            vote_of(fx.verifier.verify_from(r2, signed.clone())),
            (r2, false),
            "its channel was enough"
        );

        // Another replica's channel, no channel, a batch without channels: the signature decides.
        assert_eq!(
            fx.verifier
                .verify_from(r1, badly_signed.clone())
                .unwrap_err(),
            VerifyError::BadSignature(r2)
        );
        assert_eq!(
            fx.refused(badly_signed.clone()),
            VerifyError::BadSignature(r2)
        );
        assert!(matches!(
            fx.verifier.verify_batch(vec![badly_signed.clone()])[0],
            Err(VerifyError::BadSignature(p)) if p == r2
        ));
        assert_eq!(
            vote_of(fx.verifier.verify_from(r1, signed.clone())),
            (r2, true)
        );
        assert_eq!(vote_of(fx.verifier.verify(signed)), (r2, true));

        // Batched checks with channels give what one-by-one checks give.
        let batch = fx.verifier.verify_batch_at(
            vec![(r2, badly_signed.clone()), (r1, badly_signed.clone())],
            &DirectRequests::new(),
        );
        assert_eq!(vote_of(batch[0].clone()), (r2, false));
        assert!(matches!(batch[1], Err(VerifyError::BadSignature(p)) if p == r2));

        // Read back from a log: another replica's vote as its channel took it; the replica's own
        // vote by its signature.
        assert_eq!(
            vote_of(
                fx.verifier
                    .verify_recorded(ReplicaId(0), badly_signed.clone())
            ),
            (r2, false)
        );
        assert_eq!(
            fx.verifier
                .verify_recorded(ReplicaId(2), badly_signed)
                .unwrap_err(),
            VerifyError::BadSignature(r2)
        );
    }
    // A checkpoint vote is relayed in stable proofs: never taken on its channel's word.
    let checkpoint = fx.signed_by(
        2,
        &Checkpoint {
            seq: SeqNum(4),
            digest,
        },
    );
    let badly_signed = reframe(&checkpoint, |_, _, s| s.0[0] ^= 1);
    assert_eq!(
        fx.verifier
            .verify_from(r2, badly_signed.clone())
            .unwrap_err(),
        VerifyError::BadSignature(r2)
    );
    assert_eq!(
        fx.verifier
            .verify_recorded(ReplicaId(0), badly_signed)
            .unwrap_err(),
        VerifyError::BadSignature(r2)
    );
}

/// Section 4.2 with prepares authenticated by their channel (section 5.2): a prepare counts toward
/// prepared only once its signature is checked, since the prepared certificate may have to verify
/// in a VIEW-CHANGE (section 4.4). Backup 1 gets the pre-prepare, then replica 3's badly signed
/// prepare on replica 3's channel: the verifier accepts it, the replica checks it when it would
/// complete prepared, drops it and counts it, and sends no commit. Replica 2's prepare completes
/// prepared: the commit goes out, and the prepared certificate backup 1 keeps holds only prepares
/// whose signatures verify. A prepare arriving after that is never checked.
#[test]
fn a_prepare_counts_toward_prepared_only_once_its_signature_is_checked() {
    let fx = Fixture::new();
    let mut backup = fx.replica(1);
    let request = fx.request(1, 1, b"op");
    let digest = fx.batch_digest(std::slice::from_ref(&request));
    let _ = accept(
        &mut backup,
        fx.verified(fx.pre_prepare(0, 0, 1, std::slice::from_ref(&request))),
    );
    let commits_signed = |actions: &Actions| {
        actions
            .signed_records()
            .filter(|r| r.kind == MessageKind::Commit)
            .count()
    };
    let badly_signed = reframe(&fx.prepare(3, 0, 1, digest), |_, _, s| s.0[0] ^= 1);
    let actions = accept(&mut backup, fx.verified(badly_signed.clone()));
    assert_eq!(commits_signed(&actions), 0);
    assert_eq!(backup.metrics().votes_with_bad_signatures, 1);
    assert_eq!(backup.status().prepared_certificates_held, 0);

    let actions = accept(&mut backup, fx.verified(fx.prepare(2, 0, 1, digest)));
    assert_eq!(commits_signed(&actions), 1);
    assert_eq!(backup.status().prepared_certificates_held, 1);
    // Replica 3 again, after prepared: kept as its channel authenticated it, never checked.
    let _ = accept(&mut backup, fx.verified(badly_signed));
    assert_eq!(backup.metrics().votes_with_bad_signatures, 1);

    let certificates: Vec<Vec<Bytes>> = backup
        .durable_checkpoint()
        .records
        .into_iter()
        .filter_map(|record| match record {
            Record::Prepared { prepares, .. } => Some(prepares),
            _ => None,
        })
        .collect();
    assert_eq!(certificates.len(), 1);
    assert_eq!(certificates[0].len(), 2);
    for prepare in &certificates[0] {
        assert!(fx.verifier.verify(prepare.clone()).is_ok());
    }
}

/// Section 4.1 (replies go to clients): a reply delivered to a replica is `NotForReplicas`.
#[test]
fn a_reply_sent_to_a_replica_is_refused() {
    let fx = Fixture::new();
    let reply = fx.reply_from(
        2,
        &Reply {
            view: View(0),
            client: ClientId(1),
            timestamp: 1,
            outcome: Outcome::Ok(b"r".to_vec()),
        },
    );
    assert_rejected(
        &mut fx.replica(1),
        fx.verified(reply.clone()),
        Rejection::NotForReplicas,
    );
    assert_rejected(
        &mut fx.replica(0),
        fx.verified(reply),
        Rejection::NotForReplicas,
    );
}

/// Section 4.1 ("if the client sends the request to a backup, the backup relays it to the
/// primary"): a backup relays a new request once, with the client's frame byte for byte and
/// nothing to persist; a second copy is a `Duplicate`; the client's next timestamp is relayed.
/// At the primary, a copy of a request it already proposed is a `Duplicate` as well.
#[test]
fn a_backup_relays_a_new_request_to_the_primary_once() {
    let fx = Fixture::new();
    let mut backup = fx.replica(1);
    let request = fx.request(1, 1, b"op");
    let actions = accept(&mut backup, fx.verified(request.clone()));
    assert!(actions.to_persist().is_empty() && actions.executed.is_empty());
    assert_eq!(
        actions.pending_sends(),
        &[Outgoing {
            to: Destination::Replica(ReplicaId(0)),
            frame: request.clone(),
        }]
    );
    assert_rejected(&mut backup, fx.verified(request), Rejection::Duplicate);

    let next = fx.request(1, 2, b"op 2");
    let actions = accept(&mut backup, fx.verified(next.clone()));
    assert_eq!(
        actions.pending_sends(),
        &[Outgoing {
            to: Destination::Replica(ReplicaId(0)),
            frame: next,
        }]
    );

    let mut primary = fx.replica(0);
    let request = fx.request(2, 1, b"op");
    let actions = accept(&mut primary, fx.verified(request.clone()));
    assert_eq!(
        actions.to_persist().len(),
        1,
        "the primary proposed a batch"
    );
    let signed: Vec<_> = actions.signed_records().collect();
    assert_eq!(signed[0].kind, MessageKind::PrePrepare);
    assert_rejected(&mut primary, fx.verified(request), Rejection::Duplicate);
}

/// Sections 4.1 and 4.2 (exactly once under a Byzantine primary): a silent primary (replica 0)
/// sends backups 1..3 pre-prepares for sequence numbers 1 and 2 that both contain client 1's
/// request, sequence number 2 also client 2's. The 2f+1 = 3 backups prepare and commit among
/// themselves, execute both batches, run client 1's request once and client 2's once, agree, and
/// each client completes once.
#[test]
fn a_request_ordered_twice_by_a_byzantine_primary_executes_once() {
    let mut cluster = Cluster::with_f(1, 2);
    cluster.silent.insert(ReplicaId(0));
    cluster.submit(ClientId(1), b"duplicated".to_vec());
    cluster.submit(ClientId(2), b"other".to_vec());
    let frames: Vec<Bytes> = cluster
        .network
        .iter()
        .filter(|e| e.to == Node::Replica(ReplicaId(0)))
        .map(|e| e.frame.clone())
        .collect();
    assert_eq!(
        frames.len(),
        2,
        "each client sent its request to the primary (and to every backup)"
    );
    assert_eq!(cluster.network.len(), 8);
    let (duplicated, other) = (frames[0].clone(), frames[1].clone());

    let fx = Fixture::with(harness::config(1, 2));
    let pre_prepares = [
        fx.pre_prepare(0, 0, 1, std::slice::from_ref(&duplicated)),
        fx.pre_prepare(0, 0, 2, &[duplicated.clone(), other.clone()]),
    ];
    for frame in &pre_prepares {
        for backup in 1..=3 {
            cluster.inject(
                Node::Replica(ReplicaId(0)),
                Node::Replica(ReplicaId(backup)),
                frame.clone(),
            );
        }
    }
    assert!(
        cluster.run_until(std::time::Duration::ZERO, |c| c.network.is_empty()
            && c.completed.len() == 2)
    );
    assert_eq!(cluster.now, Time::ZERO, "no client had to retransmit");

    let duplicated_digest = fx.request_digest(&duplicated);
    let other_digest = fx.request_digest(&other);
    for backup in 1..=3usize {
        let executed = &cluster.executed[backup];
        let runs = |digest| executed.iter().filter(|e| e.request == digest).count();
        assert_eq!(runs(duplicated_digest), 1, "replica {backup}: {executed:?}");
        assert_eq!(runs(other_digest), 1, "replica {backup}: {executed:?}");
        assert_eq!(executed.len(), 2);
        assert_eq!(executed[0].seq, SeqNum(1));
        assert_eq!(executed[1].seq, SeqNum(2));
        let replica = &cluster.replicas[backup];
        assert_eq!(replica.status().last_executed, SeqNum(2));
        assert_eq!(replica.metrics().batches_executed, 2);
        assert_eq!(replica.metrics().requests_executed, 2);
        assert_eq!(replica.service().count, 2);
    }
    assert_eq!(cluster.assert_agreement(&BTreeSet::from([ReplicaId(0)])), 2);
    let mut completed: Vec<_> = cluster
        .completed
        .iter()
        .map(|(c, done)| (*c, done.timestamp))
        .collect();
    completed.sort();
    assert_eq!(completed, vec![(ClientId(1), 1), (ClientId(2), 1)]);
    assert!(cluster.rejected.is_empty(), "{:?}", cluster.rejected);
}

/// Sections 4.1 and 4.2 (a request executes at most once, whatever the primary orders): a batch
/// that holds the same request twice runs it once; a later batch that holds it again (older than
/// the client's last executed request) skips it; and a batch that holds a client's newer request
/// before an older one runs only the newer. Each executed request gets exactly one reply.
#[test]
fn copies_and_old_requests_inside_batches_execute_once() {
    let fx = Fixture::new();
    let mut backup = fx.replica(1);
    let one = fx.request(1, 1, b"one");
    let two = fx.request(1, 2, b"two");
    let other = fx.request(2, 1, b"other");
    let (sent, executed) =
        order_on_backup_1(&fx, &mut backup, 1, &[one.clone(), one.clone(), other]);
    let runs: Vec<_> = executed.iter().map(|e| (e.client, e.timestamp)).collect();
    assert_eq!(runs, vec![(ClientId(1), 1), (ClientId(2), 1)]);
    assert_eq!(reply_frames_to(&sent, ClientId(1)).len(), 1);
    assert_eq!(reply_frames_to(&sent, ClientId(2)).len(), 1);

    let (sent, executed) = order_on_backup_1(&fx, &mut backup, 2, &[one, two]);
    let runs: Vec<_> = executed.iter().map(|e| (e.client, e.timestamp)).collect();
    assert_eq!(runs, vec![(ClientId(1), 2)]);
    assert_eq!(reply_frames_to(&sent, ClientId(1)).len(), 1);

    let newer = fx.request(2, 3, b"three");
    let older = fx.request(2, 2, b"two");
    let (_, executed) = order_on_backup_1(&fx, &mut backup, 3, &[newer, older]);
    let runs: Vec<_> = executed.iter().map(|e| (e.client, e.timestamp)).collect();
    assert_eq!(runs, vec![(ClientId(2), 3)]);

    assert_eq!(backup.metrics().requests_executed, 4);
    assert_eq!(backup.metrics().batches_executed, 3);
    assert_eq!(backup.service().count, 4);
    assert_eq!(backup.status().client_records, 2);
}

/// The attachment is unsigned, so only a pre-prepare may carry one, and only its batch, which the
/// signed digest authenticates: a prepare with an attachment is refused; a pre-prepare whose
/// batch was swapped in transit fails the digest check; a pre-prepare without its batch is refused
/// by a backup in the normal case (`MissingBatch`), with no effect.
#[test]
fn unsigned_attachments_are_authenticated_or_refused() {
    let fx = Fixture::new();
    let request = fx.request(1, 1, b"op");
    let digest = fx.batch_digest(std::slice::from_ref(&request));
    let prepare = fx.prepare(2, 0, 1, digest);
    let with_attachment = codec::with_attachment(&prepare, b"smuggled").expect("frame");
    assert_eq!(
        fx.refused(with_attachment),
        VerifyError::UnexpectedAttachment(MessageKind::Prepare)
    );

    let pre_prepare = fx.pre_prepare(0, 0, 1, std::slice::from_ref(&request));
    let other = fx.request(2, 1, b"other");
    let swapped = bft_core::messages::encode_batch(&[ByteBuf::from(other.to_vec())]);
    let swapped = codec::with_attachment(&pre_prepare, &swapped).expect("frame");
    assert_eq!(fx.refused(swapped), VerifyError::BatchDigestMismatch);

    let header_only = codec::with_attachment(&pre_prepare, &[]).expect("frame");
    let mut backup = fx.replica(1);
    assert_rejected(
        &mut backup,
        fx.verified(header_only),
        Rejection::MissingBatch,
    );
}
