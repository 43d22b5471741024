//! Normal-case scenarios (PBFT, Castro and Liskov, OSDI'99 section 4.2): ordering, execution,
//! batching, the window, and progress with and without a quorum.

use bft_core::testkit::{self as harness, Cluster};
use bft_core::{ClientId, Outcome, ReplicaId, SeqNum};
use std::collections::BTreeSet;
use std::time::Duration;

fn op(client: ClientId, i: usize) -> Vec<u8> {
    format!("set {client} {i}").into_bytes()
}

fn ids(n: u64) -> Vec<ClientId> {
    (1..=n).map(ClientId).collect()
}

/// Section 4.2: with n = 4 (f = 1), several clients' requests are ordered and executed identically
/// on every replica, and each client gets the reply its request produced.
#[test]
fn four_replicas_order_and_execute_hundreds_of_requests_identically() {
    let mut cluster = Cluster::with_f(1, 3);
    let done = cluster.run_closed_loop(&ids(3), 100, Duration::from_secs(60), op);
    assert_eq!(done, 300);
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 300);
    for (client, completed) in &cluster.completed {
        let Outcome::Ok(reply) = &completed.outcome else {
            panic!("unexpected {completed:?}")
        };
        let expected = op(*client, completed.timestamp as usize - 1);
        assert_eq!(
            &reply[8..],
            expected.as_slice(),
            "reply carries the client's own operation"
        );
    }
    // Nothing was retransmitted and nothing was refused on a fault-free network, except votes
    // that arrived after their checkpoint became stable.
    let refused: Vec<_> = cluster
        .rejected
        .iter()
        .filter(|(_, r)| !matches!(r.reason, bft_core::Rejection::Late { .. }))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert!(cluster.verify_failures.is_empty());
    assert_eq!(cluster.now, bft_core::Time::ZERO, "no timer had to fire");
}

/// Section 4.2 with n = 7 (f = 2): the same agreement with larger quorums.
#[test]
fn seven_replicas_order_and_execute_hundreds_of_requests_identically() {
    let mut cluster = Cluster::with_f(2, 4);
    let done = cluster.run_closed_loop(&ids(4), 60, Duration::from_secs(60), op);
    assert_eq!(done, 240);
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 240);
}

/// n = 10 (f = 3) works too.
#[test]
fn ten_replicas_order_requests() {
    let mut cluster = Cluster::with_f(3, 2);
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 20, Duration::from_secs(60), op),
        40
    );
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 40);
}

/// Execution is strictly in sequence order: every replica's executed sequence numbers are
/// 1, 2, 3, ... without gaps, and a request runs once.
#[test]
fn execution_follows_sequence_order_without_gaps() {
    let mut cluster = Cluster::with_f(1, 4);
    cluster.run_closed_loop(&ids(4), 25, Duration::from_secs(60), op);
    for executed in &cluster.executed {
        let mut last = SeqNum(0);
        let mut seen = BTreeSet::new();
        for e in executed {
            assert!(
                e.seq == last || e.seq == last.next(),
                "gap: {:?} after {:?}",
                e.seq,
                last
            );
            last = e.seq;
            assert!(
                seen.insert((e.client, e.timestamp)),
                "executed twice: {e:?}"
            );
        }
    }
}

/// TOCS 2002 section 5.1: requests that arrive while batches are in flight are batched, and the
/// primary keeps at most `max_in_flight_batches` batches in flight.
#[test]
fn primary_batches_requests_that_arrive_while_batches_are_in_flight() {
    let mut config = harness::config(1, 16);
    config.limits.max_in_flight_batches = 1;
    let mut cluster = Cluster::new(config);
    let done = cluster.run_closed_loop(&ids(16), 10, Duration::from_secs(60), op);
    assert_eq!(done, 160);
    let primary = &cluster.replicas[0];
    let metrics = primary.metrics();
    assert_eq!(metrics.requests_executed, 160);
    assert!(
        metrics.batches_proposed * 4 <= metrics.requests_executed,
        "expected batches of several requests, got {} batches for {} requests",
        metrics.batches_proposed,
        metrics.requests_executed
    );
    cluster.assert_agreement(&BTreeSet::new());
}

/// While a batch is in flight, the primary holds further requests back until the batch executes
/// (they then share one batch), unless a full batch is queued, which it pipelines at once: batches
/// grow with the load, and loads that fill batches still use `max_in_flight_batches`.
#[test]
fn primary_pipelines_only_full_batches_behind_one_in_flight() {
    // (requests to a batch, limited by bytes, then last assigned and requests still queued once
    // two more requests arrived behind the first batch)
    let cases = [(256, None, 1, 2), (2, None, 2, 0), (256, Some(()), 2, 1)];
    for (max_batch_requests, by_bytes, assigned, queued) in cases {
        let mut config = harness::config(1, 3);
        config.limits.max_batch_requests = max_batch_requests;
        let operation_bytes = 600;
        if by_bytes.is_some() {
            // One request frame fits, two do not.
            config.limits.max_operation_bytes = operation_bytes;
            config.limits.max_batch_bytes = config.limits.max_request_frame_bytes();
        }
        assert!(config.limits.max_in_flight_batches >= 2);
        let mut cluster = Cluster::new(config);
        // Hold the primary's pre-prepares back: its first batch stays in flight.
        let held = std::rc::Rc::new(std::cell::Cell::new(true));
        let holding = held.clone();
        let primary = harness::Node::Replica(ReplicaId(0));
        cluster.filter = Some(Box::new(move |e: &mut harness::Envelope| {
            !(holding.get() && e.from == primary && matches!(e.to, harness::Node::Replica(_)))
        }));
        cluster.submit(ClientId(1), vec![1; operation_bytes]);
        while cluster.deliver_one() {}
        assert_eq!(cluster.replicas[0].status().last_assigned, SeqNum(1));
        cluster.submit(ClientId(2), vec![2; operation_bytes]);
        cluster.submit(ClientId(3), vec![3; operation_bytes]);
        while cluster.deliver_one() {}
        let status = cluster.replicas[0].status();
        assert_eq!(status.last_executed, SeqNum(0));
        // Held back (256 to a batch, two queued), or pipelined: two requests are a full batch by
        // count, or by bytes (one goes out, the other, no longer a full batch, waits).
        assert_eq!(status.last_assigned, SeqNum(assigned), "{status:?}");
        assert_eq!(status.queued_requests, queued, "{status:?}");
        // Released, the pre-prepares go out again on the vote timer and everything executes;
        // unless limited by bytes, the two later requests shared the second batch.
        held.set(false);
        assert!(cluster.run_until(Duration::from_secs(60), |c| c.completed.len() == 3));
        let seqs: BTreeSet<SeqNum> = cluster.executed[1].iter().map(|e| e.seq).collect();
        if by_bytes.is_some() {
            // Two requests never share a batch: three sequence numbers.
            assert_eq!(seqs.len(), 3);
        } else {
            assert_eq!(
                seqs,
                BTreeSet::from([SeqNum(1), SeqNum(2)]),
                "{max_batch_requests}"
            );
        }
        cluster.assert_agreement(&BTreeSet::new());
    }
}

/// A batch never exceeds `max_batch_requests`.
#[test]
fn batches_respect_the_request_limit() {
    let mut config = harness::config(1, 12);
    config.limits.max_in_flight_batches = 1;
    config.limits.max_batch_requests = 3;
    let mut cluster = Cluster::new(config);
    assert_eq!(
        cluster.run_closed_loop(&ids(12), 5, Duration::from_secs(60), op),
        60
    );
    let mut per_seq = std::collections::BTreeMap::<SeqNum, usize>::new();
    for e in &cluster.executed[1] {
        *per_seq.entry(e.seq).or_default() += 1;
    }
    assert!(per_seq.values().all(|&n| n <= 3), "{per_seq:?}");
    assert!(
        per_seq.values().any(|&n| n == 3),
        "batches filled up to the limit"
    );
}

/// Section 4.2: the primary assigns sequence numbers only up to the high watermark h + L. While no
/// checkpoint becomes stable (here every CHECKPOINT is lost), requests beyond the window wait in
/// the primary's queue even though nothing is in flight. (The run stops before clients retransmit:
/// a primary stuck like this is soon suspected and replaced by a view change.)
#[test]
fn primary_does_not_assign_beyond_the_high_watermark() {
    let mut config = harness::config(1, 3);
    config.limits.window = 4;
    config.limits.checkpoint_interval = 4;
    config.limits.max_in_flight_batches = 1;
    let mut cluster = Cluster::new(config);
    let checkpoint = bft_core::MessageKind::Checkpoint;
    let verifier = cluster.verifier.clone();
    cluster.filter = Some(Box::new(move |envelope| {
        verifier
            .verify(envelope.frame.clone())
            .map_or(true, |m| m.kind() != checkpoint)
    }));
    let done = cluster.run_closed_loop(&ids(1), 10, Duration::from_millis(100), op);
    assert_eq!(
        done, 4,
        "one request per batch, four sequence numbers in the window"
    );
    let status = cluster.replicas[0].status();
    assert_eq!(status.last_assigned, SeqNum(4));
    assert_eq!(status.queued_requests, 1);
    assert!(cluster.replicas.iter().all(|r| r.status().log_slots <= 4));
}

/// f silent replicas (a backup, for n = 4) do not stop progress: the 2f+1 others form quorums.
#[test]
fn f_silent_replicas_do_not_stop_progress() {
    let mut cluster = Cluster::with_f(1, 2);
    cluster.silent.insert(ReplicaId(3));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 50, Duration::from_secs(60), op),
        100
    );
    let silent = BTreeSet::from([ReplicaId(3)]);
    assert_eq!(cluster.assert_agreement(&silent), 100);
    assert!(cluster.executed[3].is_empty());

    let mut cluster = Cluster::with_f(2, 2);
    cluster.silent.extend([ReplicaId(2), ReplicaId(6)]);
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 30, Duration::from_secs(60), op),
        60
    );
    assert_eq!(
        cluster.assert_agreement(&BTreeSet::from([ReplicaId(2), ReplicaId(6)])),
        60
    );
}

/// f+1 silent replicas stop progress: no quorum of 2f+1 exists, so nothing commits, nothing
/// executes and no client gets an answer, however long the clients retransmit.
#[test]
fn f_plus_one_silent_replicas_stop_progress_safely() {
    for (f, silent) in [(1, vec![2, 3]), (2, vec![1, 4, 6])] {
        let mut cluster = Cluster::with_f(f, 2);
        cluster.silent.extend(silent.iter().map(|&i| ReplicaId(i)));
        let done = cluster.run_closed_loop(&ids(2), 5, Duration::from_secs(30), op);
        assert_eq!(done, 0);
        assert!(
            cluster.now >= bft_core::Time::ZERO + Duration::from_secs(29),
            "clients kept retrying"
        );
        for replica in &cluster.replicas {
            let status = replica.status();
            assert_eq!(status.last_executed, SeqNum(0), "{status:?}");
            assert_eq!(replica.metrics().requests_executed, 0);
        }
        assert!(cluster.completed.is_empty());
    }
}

/// A service that panics on one operation: every replica stays up, records the same outcome and
/// state, the client gets an error outcome, and later requests run normally.
#[test]
fn a_panicking_operation_is_contained_on_every_replica() {
    let mut cluster = Cluster::with_f(1, 2);
    let poisoned = |c: ClientId, i: usize| {
        if c == ClientId(1) && i == 3 {
            b"panic".to_vec()
        } else {
            op(c, i)
        }
    };
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 10, Duration::from_secs(60), poisoned),
        20
    );
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 20);
    let failed: Vec<_> = cluster
        .completed
        .iter()
        .filter(|(_, c)| c.outcome == Outcome::ServicePanicked)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, ClientId(1));
    assert_eq!(failed[0].1.timestamp, 4);
    for executed in &cluster.executed {
        let panicked: Vec<_> = executed
            .iter()
            .filter(|e| e.outcome == Outcome::ServicePanicked)
            .collect();
        assert_eq!(panicked.len(), 1);
    }
}

/// Every vote a replica sent was persisted first: the records in each replica's storage cover
/// every pre-prepare, prepare and commit it signed.
#[test]
fn every_signed_vote_is_persisted() {
    let mut cluster = Cluster::with_f(1, 2);
    cluster.run_closed_loop(&ids(2), 10, Duration::from_secs(60), op);
    let primary = &cluster.storage[0];
    assert!(
        primary
            .signed_records()
            .any(|r| r.kind == bft_core::MessageKind::PrePrepare)
    );
    for storage in &cluster.storage[1..] {
        let prepares = storage
            .signed_records()
            .filter(|r| r.kind == bft_core::MessageKind::Prepare)
            .count();
        let commits = storage
            .signed_records()
            .filter(|r| r.kind == bft_core::MessageKind::Commit)
            .count();
        assert!(prepares > 0 && prepares == commits);
    }
}

/// A reply longer than `limits.max_reply_bytes` is replaced by the same `ReplyTooLarge` outcome on
/// every replica, so the client still gets f+1 matching replies that fit in a frame.
#[test]
fn an_oversized_reply_becomes_the_same_error_everywhere() {
    let mut config = harness::config(1, 1);
    config.limits.max_reply_bytes = 100;
    let mut cluster = Cluster::new(config);
    let big = |_: ClientId, i: usize| {
        if i == 1 {
            vec![b'x'; 200]
        } else {
            b"small".to_vec()
        }
    };
    assert_eq!(
        cluster.run_closed_loop(&ids(1), 3, Duration::from_secs(60), big),
        3
    );
    cluster.assert_agreement(&BTreeSet::new());
    let outcomes: Vec<_> = cluster
        .completed
        .iter()
        .map(|(_, c)| c.outcome.clone())
        .collect();
    assert_eq!(outcomes[1], Outcome::ReplyTooLarge { len: 208 });
    assert!(matches!(outcomes[2], Outcome::Ok(_)));
}

/// A slot stalled by lost messages recovers without a view change (TOCS 2002 section 5.2): every
/// commit sent to replica 2 for sequence number 6, the last one, is lost (with no later batch,
/// nothing shows replica 2 a gap). After `timing.vote_resend` replica 2 re-sends its own votes and
/// asks a peer for the committed batch, and executes it; nobody changes view.
#[test]
fn a_stalled_slot_recovers_without_a_view_change() {
    let mut cluster = Cluster::with_f(1, 1);
    let verifier = cluster.verifier.clone();
    let mut dropped = BTreeSet::new();
    cluster.filter = Some(Box::new(move |e| {
        let Ok(bft_core::VerifiedMessage::Commit(commit)) = verifier.verify(e.frame.clone()) else {
            return true;
        };
        if e.to != harness::Node::Replica(ReplicaId(2)) || commit.message().seq != SeqNum(6) {
            return true;
        }
        !dropped.insert(e.from)
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(1), 6, Duration::from_secs(60), op),
        6
    );
    assert!(cluster.run_until(
        Duration::from_secs(60),
        |c| c.replicas[2].status().last_executed == SeqNum(6)
    ));
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 6);
    assert!(
        cluster
            .replicas
            .iter()
            .all(|r| r.view() == bft_core::View(0))
    );
    assert!(
        cluster
            .replicas
            .iter()
            .map(|r| r.metrics().votes_resent)
            .sum::<u64>()
            > 0
    );
}
