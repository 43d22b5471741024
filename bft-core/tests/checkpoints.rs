//! Checkpoints, garbage collection and state transfer (PBFT OSDI'99 section 4.3; TOCS 2002
//! sections 5 and 6).

use bft_core::messages::{Checkpoint, StateChunk, StateManifest, WireMessage};
use bft_core::testkit::{self, Cluster, Envelope, Node};
use bft_core::{ClientId, ClusterConfig, Principal, ReplicaId, SeqNum, VerifiedMessage};
use bft_crypto::Digest;
use std::collections::BTreeSet;
use std::time::Duration;

fn op(client: ClientId, i: usize) -> Vec<u8> {
    format!("put {client} {i}").into_bytes()
}

fn ids(n: u64) -> Vec<ClientId> {
    (1..=n).map(ClientId).collect()
}

fn small_checkpoints(f: usize, clients: u64, interval: u64) -> ClusterConfig {
    let mut config = testkit::config(f, clients);
    config.limits.checkpoint_interval = interval;
    config.limits.window = 2 * interval;
    config
}

/// Runs the closed loop in rounds of `per_client` requests per client, calling `check` between
/// rounds; returns completed requests.
fn run_rounds(
    cluster: &mut Cluster,
    clients: u64,
    rounds: usize,
    per_client: usize,
    mut check: impl FnMut(&Cluster, usize),
) -> usize {
    let mut done = 0;
    for round in 0..rounds {
        done += cluster.run_closed_loop(&ids(clients), per_client, Duration::from_secs(600), op);
        check(cluster, round);
    }
    done
}

/// Section 4.3: over tens of thousands of requests with K = 128 and L = 256, checkpoints become
/// stable on every replica, and the log never holds more than L slots (nor more checkpoint state
/// than the window needs): memory is bounded by the window however long the cluster runs.
#[test]
fn long_run_keeps_the_log_within_the_window() {
    let mut config = small_checkpoints(1, 32, 128);
    config.limits.max_in_flight_batches = 2;
    let mut cluster = Cluster::new(config);
    let mut max_slots = 0;
    let mut max_states = 0;
    let done = run_rounds(&mut cluster, 32, 50, 13, |cluster, _| {
        for replica in &cluster.replicas {
            let status = replica.status();
            max_slots = max_slots.max(status.log_slots);
            max_states = max_states.max(status.checkpoint_states_held);
            assert!(status.log_slots <= 256, "{status:?}");
            assert!(status.checkpoint_votes_held <= 4 * 4, "{status:?}");
        }
    });
    assert_eq!(done, 32 * 13 * 50);
    assert!(done >= 20_000);
    cluster.assert_agreement(&BTreeSet::new());
    let executed = cluster.replicas[0].status().last_executed.0;
    for replica in &cluster.replicas {
        let status = replica.status();
        assert!(
            status.low_watermark.0 + 128 > executed,
            "h trails execution by less than K: {status:?}"
        );
        assert!(replica.metrics().checkpoints_stable >= executed / 128);
        assert!(status.log_slots as u64 <= executed - status.low_watermark.0 + 2);
    }
    assert!(
        max_slots <= 256 && max_states <= 3,
        "{max_slots} slots, {max_states} states"
    );
    // Every replica certified the same state at its stable checkpoint.
    let stable = cluster.replicas[0]
        .stable_certificate()
        .expect("stable")
        .seq;
    let digests: BTreeSet<Option<Digest>> = cluster
        .replicas
        .iter()
        .map(|r| r.checkpoint_digest(stable))
        .collect();
    assert_eq!(digests.len(), 1);
}

/// TOCS 2002 section 6: a replica cut off for several checkpoint intervals learns of a stable
/// checkpoint beyond its window when it reconnects, fetches the state, and ends with the same
/// checkpoint state as the others; it then takes part in quorums (with another replica silent,
/// progress needs its votes).
#[test]
fn a_replica_cut_off_for_several_intervals_catches_up_by_state_transfer() {
    let mut cluster = Cluster::new(small_checkpoints(1, 4, 16));
    cluster.silent.insert(ReplicaId(3));
    // Requests of the four clients share batches: 120 each make well over 5 * 16 batches.
    run_rounds(&mut cluster, 4, 1, 120, |_, _| {});
    assert!(
        cluster.replicas[0].status().low_watermark.0 >= 5 * 16,
        "several intervals passed"
    );
    assert_eq!(cluster.replicas[3].status().last_executed, SeqNum(0));

    cluster.silent.clear();
    run_rounds(&mut cluster, 4, 1, 20, |_, _| {});
    let lagging = &cluster.replicas[3];
    assert!(
        lagging.metrics().state_transfers_completed >= 1,
        "{:?}",
        lagging.metrics()
    );
    assert_eq!(lagging.metrics().bad_state_served, 0);
    let stable = lagging
        .stable_certificate()
        .expect("stable after transfer")
        .seq;
    assert!(stable.0 > 5 * 16);
    assert_eq!(
        lagging.checkpoint_digest(stable),
        cluster.replicas[0].checkpoint_digest(stable)
    );

    // Now replica 2 goes silent: quorums of 3 need replica 3.
    cluster.silent.insert(ReplicaId(2));
    let before = cluster.replicas[0].status().last_executed;
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 20, Duration::from_secs(600), op),
        80
    );
    assert!(cluster.replicas[0].status().last_executed > before);
    let after = cluster.replicas[3]
        .stable_certificate()
        .expect("stable")
        .seq;
    assert_eq!(
        cluster.replicas[3].checkpoint_digest(after),
        cluster.replicas[0].checkpoint_digest(after)
    );
}

/// Rewrites the manifests (or else the chunks) that `byzantine` sends to `victim`, re-signed with
/// the Byzantine replica's real key, so only the digest checks can catch it.
fn corrupt_state_from(
    cluster: &Cluster,
    byzantine: ReplicaId,
    victim: ReplicaId,
    manifests: bool,
) -> impl FnMut(&mut Envelope) -> bool + 'static {
    let verifier = cluster.verifier.clone();
    let cluster_id = cluster.config.cluster_id;
    let key = testkit::replica_key(byzantine.0);
    move |envelope: &mut Envelope| {
        if envelope.from != Node::Replica(byzantine) || envelope.to != Node::Replica(victim) {
            return true;
        }
        let sender = Principal::Replica(byzantine);
        match verifier.verify(envelope.frame.clone()) {
            Ok(VerifiedMessage::StateChunk(chunk)) if !manifests => {
                let mut bad: StateChunk = chunk.message().clone();
                bad.data[0] ^= 0xff;
                envelope.frame = bad.sign(&key, cluster_id, sender);
            }
            Ok(VerifiedMessage::StateManifest(manifest)) if manifests => {
                let mut bad: StateManifest = manifest.message().clone();
                bad.chunk_digests[0] = Digest([7; 32]);
                envelope.frame = bad.sign(&key, cluster_id, sender);
            }
            _ => {}
        }
        true
    }
}

/// TOCS 2002 section 6.2: a Byzantine peer that answers state transfer with a wrong manifest or
/// wrong chunks is detected by the certified digest, marked bad, and the transfer completes from
/// a correct peer.
#[test]
fn a_byzantine_state_server_is_detected_and_replaced() {
    for corrupt_manifest in [true, false] {
        let mut config = small_checkpoints(1, 4, 16);
        config.limits.state_chunk_bytes = 24;
        let mut cluster = Cluster::new(config);
        cluster.silent.insert(ReplicaId(3));
        run_rounds(&mut cluster, 4, 1, 30, |_, _| {});
        // The lagging replica 3 asks replica 0 first (the signer after itself).
        let corrupt = corrupt_state_from(&cluster, ReplicaId(0), ReplicaId(3), corrupt_manifest);
        cluster.filter = Some(Box::new(corrupt));
        cluster.silent.clear();
        run_rounds(&mut cluster, 4, 1, 20, |_, _| {});
        let lagging = &cluster.replicas[3];
        let metrics = lagging.metrics();
        assert!(
            metrics.bad_state_served >= 1,
            "corruption detected: {metrics:?}"
        );
        assert!(metrics.state_transfers_completed >= 1, "{metrics:?}");
        let stable = lagging.stable_certificate().expect("stable").seq;
        assert_eq!(
            lagging.checkpoint_digest(stable),
            cluster.replicas[1].checkpoint_digest(stable)
        );
        let mismatches = cluster
            .rejected
            .iter()
            .filter(|(r, rej)| {
                *r == ReplicaId(3) && rej.reason == bft_core::Rejection::StateMismatch
            })
            .count();
        assert!(mismatches >= 1);
    }
}

/// A transfer interrupted by a peer's failure resumes from another peer: replica 0 serves the
/// manifest and one chunk, then goes silent; the lagging replica times out, asks the next signer
/// for the missing chunks only, and completes.
#[test]
fn an_interrupted_transfer_resumes_from_another_peer() {
    let mut config = small_checkpoints(1, 4, 16);
    config.limits.state_chunk_bytes = 16;
    let mut cluster = Cluster::new(config);
    cluster.silent.insert(ReplicaId(3));
    run_rounds(&mut cluster, 4, 1, 30, |_, _| {});
    let verifier = cluster.verifier.clone();
    let mut chunks_from_0 = 0;
    let served = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = served.clone();
    cluster.filter = Some(Box::new(move |envelope| {
        if envelope.to != Node::Replica(ReplicaId(3)) {
            return true;
        }
        if let Ok(VerifiedMessage::StateChunk(chunk)) = verifier.verify(envelope.frame.clone()) {
            if envelope.from == Node::Replica(ReplicaId(0)) {
                chunks_from_0 += 1;
                if chunks_from_0 > 1 {
                    return false; // replica 0 fails after one chunk
                }
            }
            log.borrow_mut()
                .push((envelope.from, chunk.message().index));
        }
        true
    }));
    cluster.silent.clear();
    run_rounds(&mut cluster, 4, 1, 20, |_, _| {});
    let caught_up = cluster.run_until(Duration::from_secs(600), |c| {
        c.replicas[3].metrics().state_transfers_completed >= 1
    });
    assert!(caught_up);
    let lagging = &cluster.replicas[3];
    let served = served.borrow();
    assert_eq!(
        served[0],
        (Node::Replica(ReplicaId(0)), 0),
        "replica 0 served chunk 0 first"
    );
    assert!(
        served
            .iter()
            .all(|(from, index)| *from != Node::Replica(ReplicaId(0)) || *index == 0),
        "no further chunk from replica 0 was delivered"
    );
    assert!(
        served
            .iter()
            .any(|(from, index)| *from != Node::Replica(ReplicaId(0)) && *index == 1),
        "the next chunk came from another peer: {served:?}"
    );
    assert!(cluster.now > bft_core::Time::ZERO, "the retry timer fired");
    let stable = lagging.stable_certificate().expect("stable").seq;
    assert_eq!(
        lagging.checkpoint_digest(stable),
        cluster.replicas[1].checkpoint_digest(stable)
    );
}

/// Section 4.3: a checkpoint is stable only with 2f+1 matching CHECKPOINT messages from distinct
/// replicas. 2f matching ones signed with real keys, plus forged ones (bad signatures) claiming
/// other replicas, move no watermark and start no state transfer.
#[test]
fn a_forged_or_under_quorum_certificate_moves_nothing() {
    let mut cluster = Cluster::new(small_checkpoints(1, 2, 16));
    let fake = Checkpoint {
        seq: SeqNum(160),
        digest: Digest([9; 32]),
    };
    let cluster_id = cluster.config.cluster_id;
    for byzantine in [2u32, 3] {
        let frame = fake.sign(
            &testkit::replica_key(byzantine),
            cluster_id,
            Principal::Replica(ReplicaId(byzantine)),
        );
        cluster.inject(
            Node::Replica(ReplicaId(byzantine)),
            Node::Replica(ReplicaId(1)),
            frame,
        );
    }
    // Replica 0's name, signed with replica 3's key: the verifier refuses it.
    let forged = fake.sign(
        &testkit::replica_key(3),
        cluster_id,
        Principal::Replica(ReplicaId(0)),
    );
    cluster.inject(
        Node::Replica(ReplicaId(0)),
        Node::Replica(ReplicaId(1)),
        forged,
    );
    while cluster.deliver_one() {}
    assert_eq!(cluster.verify_failures.len(), 1);
    let status = cluster.replicas[1].status();
    assert_eq!(status.low_watermark, SeqNum(0));
    assert_eq!(status.fetching_state, None);
    assert_eq!(status.checkpoint_votes_held, 2);
    assert!(cluster.network.is_empty(), "nothing was sent in response");
    // The cluster still orders requests normally afterwards.
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 20, Duration::from_secs(60), op),
        40
    );
}

/// f replicas lagging at once (2 of 7) both catch up by state transfer while the other five keep
/// committing.
#[test]
fn f_lagging_replicas_catch_up_while_the_rest_commit() {
    let mut cluster = Cluster::new(small_checkpoints(2, 4, 16));
    cluster.silent.extend([ReplicaId(5), ReplicaId(6)]);
    run_rounds(&mut cluster, 4, 1, 40, |_, _| {});
    cluster.silent.clear();
    let done = run_rounds(&mut cluster, 4, 1, 30, |_, _| {});
    assert_eq!(done, 120, "the others kept committing during the transfers");
    for lagging in [5usize, 6] {
        let replica = &cluster.replicas[lagging];
        assert!(
            replica.metrics().state_transfers_completed >= 1,
            "{:?}",
            replica.metrics()
        );
        let stable = replica.stable_certificate().expect("stable").seq;
        assert!(stable.0 >= 40 * 4 / 16);
        assert_eq!(
            replica.checkpoint_digest(stable),
            cluster.replicas[0].checkpoint_digest(stable)
        );
    }
}

/// Checkpoint state includes the client table: after state transfer, a client's retransmission of
/// its last request is answered with the outcome recorded in the transferred state, not executed
/// again.
#[test]
fn transferred_state_keeps_exactly_once_semantics() {
    // One client with one request per batch: sequence number = timestamp.
    let mut cluster = Cluster::new(small_checkpoints(1, 1, 4));
    cluster.silent.insert(ReplicaId(3));
    run_rounds(&mut cluster, 1, 1, 12, |_, _| {});
    cluster.silent.clear();
    // Replica 3 gets only the transferred state: no committed batches that follow it.
    let verifier = cluster.verifier.clone();
    cluster.filter = Some(Box::new(move |envelope| {
        let kind = verifier.verify(envelope.frame.clone()).map(|m| m.kind());
        !(envelope.to == Node::Replica(ReplicaId(3))
            && kind == Ok(bft_core::MessageKind::CommittedBatch))
    }));
    // Keep the client busy until replica 3 has installed a transferred state, then let the
    // network drain without new requests.
    let mut i = 0;
    while cluster.replicas[3].metrics().state_transfers_completed == 0 {
        if !cluster.clients[&ClientId(1)].is_busy() {
            cluster.submit(ClientId(1), op(ClientId(1), i));
            i += 1;
        }
        assert!(
            cluster.deliver_one() || cluster.advance_time(),
            "the run stalled"
        );
    }
    while cluster.deliver_one() {}
    let lagging = &cluster.replicas[3];
    assert_eq!(
        lagging.metrics().requests_executed,
        0,
        "replica 3 executed nothing itself"
    );
    let timestamp = lagging.status().last_executed.0;
    assert!(timestamp >= 12, "{:?}", lagging.status());
    let original = cluster
        .completed
        .iter()
        .find(|(_, c)| c.timestamp == timestamp)
        .expect("the client completed that request")
        .1
        .outcome
        .clone();

    let replies = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = replies.clone();
    let verifier = cluster.verifier.clone();
    cluster.filter = Some(Box::new(move |envelope| {
        if let Ok(VerifiedMessage::Reply(reply)) =
            verifier.verify_from(envelope.from.principal(), envelope.frame.clone())
        {
            seen.borrow_mut()
                .push((envelope.from, reply.message().clone()));
        }
        true
    }));
    let request = bft_core::messages::Request {
        timestamp,
        operation: b"retransmitted".to_vec(),
    };
    let frame = request.sign(
        &testkit::client_key(1),
        cluster.config.cluster_id,
        Principal::Client(ClientId(1)),
    );
    // The client's first copy (a backup only records it: the primary proposes it) and its
    // retransmission, which the backup handles.
    for _ in 0..2 {
        cluster.inject(
            Node::Client(ClientId(1)),
            Node::Replica(ReplicaId(3)),
            frame.clone(),
        );
    }
    while cluster.deliver_one() {}
    let lagging = &cluster.replicas[3];
    assert_eq!(lagging.metrics().requests_executed, 0);
    assert_eq!(lagging.metrics().replies_from_cache, 1);
    let replies = replies.borrow();
    assert_eq!(replies.len(), 1);
    let (from, reply) = &replies[0];
    assert_eq!(*from, Node::Replica(ReplicaId(3)));
    assert_eq!((reply.client, reply.timestamp), (ClientId(1), timestamp));
    assert_eq!(reply.outcome, original);
}

/// TOCS 2002 section 6.2 (no single peer is trusted): a Byzantine replica that keeps sending bad
/// manifests for the checkpoint a lagging replica is fetching cannot pin it there. Bad data from a
/// peer that was not asked neither re-sends a request nor delays the retry deadline, so the
/// fetcher still moves on to the newer certified checkpoint.
#[test]
fn a_byzantine_peer_cannot_pin_a_transfer_to_an_old_checkpoint() {
    let config = std::sync::Arc::new(testkit::config(1, 1));
    let verifier = bft_core::Verifier::new(config.clone()).expect("valid");
    let mut lagging = bft_core::Replica::new(
        config.clone(),
        ReplicaId(3),
        testkit::replica_key(3),
        testkit::service::LogService::default(),
    )
    .expect("valid");
    let verified = |frame: bytes::Bytes| verifier.verify(frame).expect("valid frame");
    for (seq, digest) in [(128u64, Digest([9; 32])), (256, Digest([8; 32]))] {
        for i in 0..3u32 {
            let vote = Checkpoint {
                seq: SeqNum(seq),
                digest,
            };
            let frame = vote.sign(
                &testkit::replica_key(i),
                7,
                Principal::Replica(ReplicaId(i)),
            );
            let _ = lagging.step(
                bft_core::Time::ZERO,
                bft_core::Input::Message(verified(frame)),
            );
        }
    }
    assert_eq!(lagging.status().fetching_state, Some(SeqNum(128)));
    let mut requests_sent = 0;
    for k in 1..=25u64 {
        let now = bft_core::Time::from_nanos(k * 400_000_000);
        let bad = StateManifest {
            seq: SeqNum(128),
            total_bytes: 0,
            chunk_digests: vec![],
        };
        let frame = bad.sign(
            &testkit::replica_key(0),
            7,
            Principal::Replica(ReplicaId(0)),
        );
        let actions = lagging.step(now, bft_core::Input::Message(verified(frame)));
        requests_sent += actions.pending_sends().len();
        let _ = lagging.step(now, bft_core::Input::Tick);
    }
    assert_eq!(
        lagging.status().fetching_state,
        Some(SeqNum(256)),
        "moved on to the newer checkpoint"
    );
    assert!(
        requests_sent <= 1,
        "bad data from a peer not asked triggers no requests: {requests_sent}"
    );
    assert!(lagging.metrics().bad_state_served >= 1);
}

/// TOCS 2002 section 5.2 (lost messages are re-sent): every CHECKPOINT vote sent to replica 3 is
/// lost the first time. Without a certificate its window could never move past h + L; it re-sends
/// its own vote, a peer that has been stable for a while answers with its stable proof, and
/// replica 3 keeps up.
#[test]
fn lost_checkpoint_votes_do_not_freeze_a_window() {
    let mut cluster = Cluster::new(small_checkpoints(1, 2, 4));
    let verifier = cluster.verifier.clone();
    let mut first_copies = BTreeSet::new();
    cluster.filter = Some(Box::new(move |envelope| {
        if envelope.to != Node::Replica(ReplicaId(3)) {
            return true;
        }
        match verifier.verify(envelope.frame.clone()) {
            Ok(VerifiedMessage::Checkpoint(vote)) => {
                !first_copies.insert((envelope.from, vote.sender(), vote.message().seq))
            }
            _ => true,
        }
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 20, Duration::from_secs(600), op),
        40
    );
    assert!(
        cluster.run_until(Duration::from_secs(3600), |c| c.network.is_empty()
            && c.replicas[3].status().last_executed
                == c.replicas[0].status().last_executed)
    );
    let lagging = cluster.replicas[3].status();
    assert!(lagging.low_watermark.0 >= 32, "{lagging:?}");
    assert!(
        cluster
            .replicas
            .iter()
            .map(|r| r.metrics().stable_proofs_sent)
            .sum::<u64>()
            > 0
    );
}
