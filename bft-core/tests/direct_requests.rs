//! Requests that clients send every replica directly (see `bft_core::DirectRequests`): a backup
//! records a client's first copy and takes the primary's PRE-PREPARE copy of exactly those bytes
//! as authenticated by the client's channel (as PBFT's MAC authenticators authenticate requests,
//! OSDI '99 section 5.2); everything else keeps its signature check.

use bft_core::codec;
use bft_core::messages::{PrePreparePayload, Request, WireMessage, batch_digest};
use bft_core::testkit::{
    self as harness, Cluster, Node, client_key, client_request as request, flip_signature,
    replica_key,
};
use bft_core::verify::DIRECT_HISTORY;
use bft_core::{
    AdmittedRequest, ClientId, DirectAdmission, DirectRequests, MessageKind, Principal, ReplicaId,
    SeqNum, VerifiedMessage, Verifier, VerifyError, View,
};
use bytes::Bytes;
use serde_bytes::ByteBuf;
use std::sync::Arc;

const CLUSTER: u64 = harness::CLUSTER_ID;

fn verifier() -> Verifier {
    Verifier::new(Arc::new(harness::config(1, 2))).expect("valid")
}

/// SHA-256 of a request frame's signed bytes (what batch digests are made of).
fn request_digest(frame: &Bytes) -> bft_crypto::Digest {
    let decoded = codec::decode_frame(frame, usize::MAX).expect("a frame");
    let mut signed = Vec::new();
    decoded.header.domain().write_header(&mut signed);
    signed.extend_from_slice(decoded.payload);
    bft_crypto::sha256(&signed)
}

/// A pre-prepare from replica 0 in view 0 carrying `requests`.
fn pre_prepare(seq: u64, requests: &[Bytes]) -> Bytes {
    PrePreparePayload {
        view: View(0),
        seq: SeqNum(seq),
        digest: batch_digest(requests.iter().map(request_digest)),
        requests: requests.iter().map(|r| ByteBuf::from(r.to_vec())).collect(),
    }
    .sign(&replica_key(0), CLUSTER, Principal::Replica(ReplicaId(0)))
}

fn from_primary() -> Principal {
    Principal::Replica(ReplicaId(0))
}

/// A backup records a client's first copy and verifies nothing more; a second copy of the same
/// frame is a retransmission, verified in full (the backup relays it and starts its timer); the
/// primary verifies every copy (it proposes the request, so the batch carries a signature every
/// replica can check).
#[test]
fn a_backup_records_first_copies_and_verifies_retransmissions() {
    let verifier = verifier();
    let frame = request(1, 1, b"op");
    let mut direct = DirectRequests::new();
    let admit = |direct: &mut DirectRequests, primary| {
        verifier
            .admit_direct(direct, ClientId(1), &frame, primary)
            .expect("a well-formed request from the channel's client")
            .admission
    };
    assert_eq!(admit(&mut direct, false), DirectAdmission::Recorded);
    assert!(direct.holds(ClientId(1), &frame));
    assert!(!direct.holds(ClientId(2), &frame), "held per client");
    assert_eq!(admit(&mut direct, false), DirectAdmission::Verify);

    let mut at_primary = DirectRequests::new();
    assert_eq!(admit(&mut at_primary, true), DirectAdmission::Verify);
    assert!(at_primary.holds(ClientId(1), &frame));
}

/// What a client may send directly is checked before anything is recorded: a request naming
/// another client, a frame of another kind, another cluster's frame, a client that is not
/// admitted, an oversized frame. None of them is recorded.
#[test]
fn frames_a_client_may_not_send_are_refused_and_not_recorded() {
    let verifier = verifier();
    let mut direct = DirectRequests::new();
    let other_client = request(2, 1, b"op");
    assert_eq!(
        verifier.admit_direct(&mut direct, ClientId(1), &other_client, false),
        Err(VerifyError::SenderIsNotPeer {
            sender: Principal::Client(ClientId(2)),
            peer: Principal::Client(ClientId(1)),
        })
    );
    let commit = harness::commit(1, 0, 1, bft_crypto::Digest::ZERO);
    assert_eq!(
        verifier.admit_direct(&mut direct, ClientId(1), &commit, false),
        Err(VerifyError::WrongRole {
            kind: MessageKind::Commit,
            sender: Principal::Replica(ReplicaId(1)),
        })
    );
    let foreign = Request {
        timestamp: 1,
        operation: b"op".to_vec(),
    }
    .sign(&client_key(1), CLUSTER + 1, Principal::Client(ClientId(1)));
    assert!(matches!(
        verifier.admit_direct(&mut direct, ClientId(1), &foreign, false),
        Err(VerifyError::WrongCluster { .. })
    ));
    let stranger = request(9, 1, b"op");
    assert_eq!(
        verifier.admit_direct(&mut direct, ClientId(9), &stranger, false),
        Err(VerifyError::UnknownSender(Principal::Client(ClientId(9))))
    );
    let limit = verifier.config().limits.max_operation_bytes;
    let oversized = request(1, 1, &vec![0; limit + 100]);
    assert!(matches!(
        verifier.admit_direct(&mut direct, ClientId(1), &oversized, false),
        Err(VerifyError::Decode(_))
    ));
    for frame in [&other_client, &commit, &foreign, &stranger, &oversized] {
        assert!(!direct.holds(ClientId(1), frame));
        assert!(!direct.holds(ClientId(2), frame));
    }
}

/// The channel stands in for the signature only for the exact bytes the client sent: a
/// pre-prepare whose embedded request has a bad signature verifies at a backup that received
/// those very bytes from the client (here, a client that signed badly), and is refused by one
/// that did not, and by any replica for a frame that differs from the one the client sent
/// (a primary that forges the signature of a request it did see, or substitutes another
/// request of the same client).
#[test]
fn an_embedded_request_skips_its_signature_check_only_for_the_clients_own_bytes() {
    let verifier = verifier();
    let good = request(1, 1, b"op");
    let badly_signed = flip_signature(&good);
    assert_eq!(request_digest(&good), request_digest(&badly_signed));

    // The client itself sent the badly signed frame: the channel authenticates it.
    let mut direct = DirectRequests::new();
    verifier
        .admit_direct(&mut direct, ClientId(1), &badly_signed, false)
        .expect("header checks pass");
    let frame = pre_prepare(1, std::slice::from_ref(&badly_signed));
    match verifier.verify_from_at(from_primary(), frame.clone(), &direct) {
        Ok(VerifiedMessage::PrePrepare(p)) => {
            let requests = p.message().requests.as_ref().expect("batch attached");
            assert_eq!(requests[0].frame(), &badly_signed);
        }
        other => panic!("accepted on the channel's authority: {other:?}"),
    }
    // Without the direct copy, the signature is checked.
    let refused = |result| {
        assert!(
            matches!(
                result,
                Err(VerifyError::EmbeddedRequest { index: 0, ref error })
                    if **error == VerifyError::BadSignature(Principal::Client(ClientId(1)))
            ),
            "{result:?}"
        )
    };
    refused(verifier.verify_from_at(from_primary(), frame.clone(), &DirectRequests::new()));
    refused(verifier.verify_from(from_primary(), frame));

    // The client sent the well-signed frame; the primary embeds a copy with a forged signature.
    let mut direct = DirectRequests::new();
    verifier
        .admit_direct(&mut direct, ClientId(1), &good, false)
        .expect("header checks pass");
    let forged = pre_prepare(1, std::slice::from_ref(&badly_signed));
    refused(verifier.verify_from_at(from_primary(), forged, &direct));
    // ... or another request of the same client, signed badly.
    let substitute = flip_signature(&request(1, 1, b"other op"));
    let frame = pre_prepare(1, std::slice::from_ref(&substitute));
    refused(verifier.verify_from_at(from_primary(), frame, &direct));
    // The client's own frame passes, and so does the batch verification path.
    let frame = pre_prepare(1, std::slice::from_ref(&good));
    assert!(
        verifier
            .verify_from_at(from_primary(), frame.clone(), &direct)
            .is_ok()
    );
    assert!(verifier.verify_batch_at(vec![(from_primary(), frame)], &direct)[0].is_ok());
}

/// Client ids that share a key are sessions of one client principal (`ClusterConfig::clients`):
/// a channel authenticated with the key speaks for each of them, so one connection serves them
/// all. A backup records a session's request under the session, and takes the PRE-PREPARE's
/// copy of those bytes on the channel's authority; a channel never speaks for a client with
/// another key, nor for a replica.
#[test]
fn a_clients_channel_speaks_for_every_session_of_its_key() {
    let mut config = harness::config(1, 2);
    config.clients.insert(ClientId(3), client_key(1).public());
    let verifier = Verifier::new(Arc::new(config)).expect("valid");
    let session_request = |timestamp: u64| {
        Request {
            timestamp,
            operation: b"op".to_vec(),
        }
        .sign(&client_key(1), CLUSTER, Principal::Client(ClientId(3)))
    };
    // Session 3's request, badly signed, on the channel of session 1 (the key's account).
    let badly_signed = flip_signature(&session_request(1));
    let mut direct = DirectRequests::new();
    assert_eq!(
        verifier.admit_direct(&mut direct, ClientId(1), &badly_signed, false),
        Ok(AdmittedRequest {
            sender: ClientId(3),
            admission: DirectAdmission::Recorded
        }),
        "admitted as the session it is from, not the channel's client"
    );
    assert!(
        direct.holds(ClientId(3), &badly_signed),
        "held under its sender"
    );
    assert!(!direct.holds(ClientId(1), &badly_signed));
    let frame = pre_prepare(1, std::slice::from_ref(&badly_signed));
    assert!(
        verifier
            .verify_from_at(from_primary(), frame, &direct)
            .is_ok(),
        "accepted on the channel's authority"
    );
    // Either session's channel speaks for the other.
    assert_eq!(
        verifier
            .admit_direct(&mut direct, ClientId(3), &request(1, 1, b"op"), false)
            .map(|admitted| admitted.sender),
        Ok(ClientId(1))
    );
    // Never for a client with another key, either way.
    assert_eq!(
        verifier.admit_direct(&mut direct, ClientId(1), &request(2, 1, b"op"), false),
        Err(VerifyError::SenderIsNotPeer {
            sender: Principal::Client(ClientId(2)),
            peer: Principal::Client(ClientId(1)),
        })
    );
    assert_eq!(
        verifier.admit_direct(&mut direct, ClientId(2), &session_request(2), false),
        Err(VerifyError::SenderIsNotPeer {
            sender: Principal::Client(ClientId(3)),
            peer: Principal::Client(ClientId(2)),
        })
    );
    let client = |id| Principal::Client(ClientId(id));
    let replica = |id| Principal::Replica(ReplicaId(id));
    assert!(verifier.speaks_for(client(1), client(3)));
    assert!(verifier.speaks_for(client(3), client(1)));
    assert!(!verifier.speaks_for(client(1), client(2)));
    assert!(!verifier.speaks_for(client(1), client(9)), "not admitted");
    assert!(verifier.speaks_for(replica(1), replica(1)));
    assert!(!verifier.speaks_for(replica(1), replica(2)));
    assert!(!verifier.speaks_for(client(1), replica(1)));
}

/// A record is bounded per client: after the client sent `DIRECT_HISTORY` newer frames, an old
/// one is no longer held, and a pre-prepare carrying it is checked by its signature again.
#[test]
fn the_record_keeps_a_bounded_history_per_client() {
    let verifier = verifier();
    let mut direct = DirectRequests::new();
    let first = flip_signature(&request(1, 1, b"op"));
    verifier
        .admit_direct(&mut direct, ClientId(1), &first, false)
        .expect("header checks pass");
    let frame = pre_prepare(1, std::slice::from_ref(&first));
    assert!(
        verifier
            .verify_from_at(from_primary(), frame.clone(), &direct)
            .is_ok()
    );
    for timestamp in 2..2 + DIRECT_HISTORY as u64 {
        let newer = request(1, timestamp, b"op");
        verifier
            .admit_direct(&mut direct, ClientId(1), &newer, false)
            .expect("header checks pass");
    }
    assert!(!direct.holds(ClientId(1), &first));
    assert!(
        verifier
            .verify_from_at(from_primary(), frame, &direct)
            .is_err()
    );
}

/// End to end in the test cluster: clients send every request to all four replicas, backups
/// only record those first copies (no relay to the primary: the primary receives each request
/// once, from its client), and every replica executes every request.
#[test]
fn backups_order_the_clients_direct_copies_without_relaying_them() {
    let mut cluster = Cluster::with_f(1, 2);
    let relayed = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = relayed.clone();
    cluster.filter = Some(Box::new(move |envelope| {
        if let (Node::Replica(_), Node::Replica(_)) = (envelope.from, envelope.to)
            && codec::decode_frame(&envelope.frame, usize::MAX)
                .is_ok_and(|f| f.header.kind == MessageKind::Request)
        {
            count.set(count.get() + 1);
        }
        true
    }));
    let done = cluster.run_closed_loop(
        &[ClientId(1), ClientId(2)],
        10,
        std::time::Duration::from_secs(10),
        |_, i| vec![i as u8],
    );
    assert_eq!(done, 20);
    assert_eq!(relayed.get(), 0, "no request was relayed");
    assert!(
        cluster.verify_failures.is_empty(),
        "{:?}",
        cluster.verify_failures
    );
    for replica in &cluster.replicas {
        assert_eq!(replica.metrics().requests_executed, 20);
    }
}

/// A backup logs the pre-prepares it accepts, so its log may hold a request that only its client's
/// channel authenticated: here a Byzantine client sent a badly signed request directly, and a
/// Byzantine primary proposed exactly those bytes. Restarting from that log takes the request as
/// the channel did (`Verifier::verify_recorded`) instead of refusing the storage.
#[test]
fn a_backup_recovers_a_logged_pre_prepare_whose_request_its_channel_authenticated() {
    let mut cluster = Cluster::with_f(1, 2);
    let badly_signed = flip_signature(&request(1, 1, b"op"));
    cluster.inject(
        Node::Client(ClientId(1)),
        Node::Replica(ReplicaId(1)),
        badly_signed.clone(),
    );
    assert!(cluster.deliver_one());
    let frame = pre_prepare(1, std::slice::from_ref(&badly_signed));
    cluster.inject(
        Node::Replica(ReplicaId(0)),
        Node::Replica(ReplicaId(1)),
        frame,
    );
    assert!(cluster.deliver_one());
    assert!(cluster.verify_failures.is_empty());
    let storage = &cluster.storage[1];
    let logged = storage
        .records
        .iter()
        .find_map(|record| match record {
            bft_core::Record::Frame(frame)
                if codec::decode_frame(frame, usize::MAX)
                    .is_ok_and(|f| f.header.kind == MessageKind::PrePrepare) =>
            {
                Some(frame.clone())
            }
            _ => None,
        })
        .expect("the backup logged the pre-prepare");
    assert!(
        cluster.verifier.verify(logged).is_err(),
        "its request's signature is bad"
    );
    let (mut recovered, _) = bft_core::Replica::recover(
        cluster.config.clone(),
        ReplicaId(1),
        replica_key(1),
        harness::service::LogService::default(),
        storage.checkpoint.as_ref(),
        &storage.records,
    )
    .unwrap_or_else(|error| panic!("the backup cannot recover its own log: {error}"));
    // The pre-prepare is back in its log: another one for the same sequence number conflicts.
    let other = pre_prepare(1, &[request(2, 1, b"other op")]);
    let other = cluster
        .verifier
        .verify_from(from_primary(), other)
        .expect("a valid pre-prepare");
    harness::assert_refused(
        &mut recovered,
        other,
        bft_core::Rejection::ConflictingPrePrepare,
        "after recovery",
    );
}
