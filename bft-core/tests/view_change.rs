//! View change (PBFT OSDI'99 section 4.4; liveness rules of TOCS 2002 section 4.5.2): a crashed,
//! silent, slow or equivocating primary neither stops the cluster nor splits it.

use bft_core::messages::{
    NewViewPayload, PrePrepareHeader, PrePreparePayload, Request, ViewChangePayload, WireMessage,
    batch_digest,
};
use bft_core::testkit::{self, Cluster, Envelope, Node};
use bft_core::{
    ClientId, MessageKind, Outcome, Phase, Principal, Rejection, ReplicaId, SeqNum, Service, Time,
    VerifiedMessage, VerifyError, View,
};
use bft_crypto::Digest;
use bytes::Bytes;
use serde_bytes::ByteBuf;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

fn op(client: ClientId, i: usize) -> Vec<u8> {
    format!("op {client} {i}").into_bytes()
}

fn ids(n: u64) -> Vec<ClientId> {
    (1..=n).map(ClientId).collect()
}

fn set(replicas: &[u32]) -> BTreeSet<ReplicaId> {
    replicas.iter().map(|&r| ReplicaId(r)).collect()
}

/// Section 4.4: a primary that is silent from the start. Clients time out and send to every
/// replica, backups relay to the primary and start their timers, the timers expire, and the
/// primary of view 1 installs the view; every request completes and the correct replicas agree.
#[test]
fn a_silent_primary_is_replaced_and_requests_complete() {
    let mut cluster = Cluster::with_f(1, 3);
    cluster.silent.insert(ReplicaId(0));
    let done = cluster.run_closed_loop(&ids(3), 20, Duration::from_secs(60), op);
    assert_eq!(done, 60);
    for r in 1..4 {
        let status = cluster.replicas[r].status();
        assert_eq!(status.view, View(1), "{status:?}");
        assert_eq!(status.phase, Phase::Normal);
    }
    assert_eq!(cluster.assert_agreement(&set(&[0])), 60);
    assert!(
        cluster.clients.values().all(|c| c.view() == View(1)),
        "clients learned the view"
    );
}

/// Shared switches a test flips between phases while a filter reads them.
#[derive(Default)]
struct Switches {
    drop_commits: bool,
    crashed: bool,
}

fn kind_and_seq(
    verifier: &bft_core::Verifier,
    frame: &Bytes,
) -> Option<(MessageKind, View, SeqNum)> {
    match verifier.verify(frame.clone()).ok()? {
        VerifiedMessage::PrePrepare(m) => {
            Some((MessageKind::PrePrepare, m.message().view, m.message().seq))
        }
        VerifiedMessage::Prepare(m) => {
            Some((MessageKind::Prepare, m.message().view, m.message().seq))
        }
        VerifiedMessage::Commit(m) => {
            Some((MessageKind::Commit, m.message().view, m.message().seq))
        }
        _ => None,
    }
}

/// Every request executed at most once on each replica.
fn assert_executed_once(cluster: &Cluster) {
    for executed in &cluster.executed {
        let mut seen = BTreeSet::new();
        for e in executed {
            assert!(
                seen.insert((e.client, e.timestamp)),
                "executed twice: {e:?}"
            );
        }
    }
}

/// Section 4.4: the primary crashes in the middle of a batch: its pre-prepare for sequence number
/// 5 reaches only replica 1, and then the primary falls silent. The view change completes, every
/// request completes exactly once, and the correct replicas agree.
#[test]
fn a_primary_that_crashes_mid_batch_is_replaced() {
    let mut cluster = Cluster::with_f(1, 3);
    let verifier = cluster.verifier.clone();
    let crashed = Rc::new(RefCell::new(false));
    let flag = crashed.clone();
    cluster.filter = Some(Box::new(move |e: &mut Envelope| {
        let primary = Node::Replica(ReplicaId(0));
        if *flag.borrow() {
            return e.from != primary && e.to != primary;
        }
        if e.from == primary
            && let Some((MessageKind::PrePrepare, _, SeqNum(5))) = kind_and_seq(&verifier, &e.frame)
        {
            if e.to == Node::Replica(ReplicaId(1)) {
                return true;
            }
            *flag.borrow_mut() = true;
            return false;
        }
        true
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(3), 20, Duration::from_secs(120), op),
        60
    );
    assert!(*crashed.borrow());
    for r in 1..4 {
        assert_eq!(cluster.replicas[r].view(), View(1));
    }
    assert_eq!(cluster.assert_agreement(&set(&[0])), 60);
    assert_executed_once(&cluster);
}

/// TOCS section 4.5.2 with f = 2: the primaries of view 0 and of view 1 are both silent. The
/// replicas give up on view 1 after its timeout, move to view 2, and make progress there.
#[test]
fn two_faulty_primaries_in_a_row_with_f_two() {
    let mut cluster = Cluster::with_f(2, 2);
    cluster.silent.extend([ReplicaId(0), ReplicaId(1)]);
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 10, Duration::from_secs(120), op),
        20
    );
    for r in 2..7 {
        assert_eq!(cluster.replicas[r].view(), View(2), "replica {r}");
    }
    assert_eq!(cluster.assert_agreement(&set(&[0, 1])), 20);
}

/// Section 4.4 safety: an equivocating primary sends one batch for sequence number 3 to replicas
/// 1 and 2 and a different (validly signed) batch to replica 3. No two correct replicas execute
/// different requests at sequence number 3: replica 3 cannot prepare its batch, and it installs
/// the committed one from a commit certificate.
#[test]
fn an_equivocating_primary_cannot_split_correct_replicas() {
    let mut cluster = Cluster::with_f(1, 3);
    let verifier = cluster.verifier.clone();
    let cluster_id = cluster.config.cluster_id;
    let evil = Request {
        timestamp: 1000,
        operation: b"evil".to_vec(),
    }
    .sign(
        &testkit::client_key(3),
        cluster_id,
        Principal::Client(ClientId(3)),
    );
    let Ok(VerifiedMessage::Request(evil_verified)) = verifier.verify(evil.clone()) else {
        panic!()
    };
    let evil_digest = batch_digest([evil_verified.digest()].into_iter());
    let swapped = Rc::new(RefCell::new(0));
    let count = swapped.clone();
    cluster.filter = Some(Box::new(move |e: &mut Envelope| {
        if e.from != Node::Replica(ReplicaId(0)) || e.to != Node::Replica(ReplicaId(3)) {
            return true;
        }
        if let Some((MessageKind::PrePrepare, view, SeqNum(3))) = kind_and_seq(&verifier, &e.frame)
        {
            let other = PrePreparePayload {
                view,
                seq: SeqNum(3),
                digest: evil_digest,
                requests: vec![ByteBuf::from(evil.to_vec())],
            };
            e.frame = other.sign(
                &testkit::replica_key(0),
                cluster_id,
                Principal::Replica(ReplicaId(0)),
            );
            *count.borrow_mut() += 1;
        }
        true
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 15, Duration::from_secs(120), op),
        30
    );
    assert_eq!(*swapped.borrow(), 1);
    let refused_at_3 = cluster
        .rejected
        .iter()
        .filter(|(r, rej)| *r == ReplicaId(3) && rej.reason == Rejection::DigestMismatch)
        .count();
    assert!(
        refused_at_3 > 0,
        "replica 3 refused votes for the batch it was not sent"
    );
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 30);
    for executed in &cluster.executed {
        assert!(
            executed.iter().all(|e| e.client != ClientId(3)),
            "the evil batch never executed"
        );
        assert!(executed.iter().any(|e| e.seq == SeqNum(3)));
    }
}

/// Builds a cluster whose client 1 has executed 5 requests (sequence numbers 1 to 5), then has its
/// sixth request prepared at every replica but committed nowhere (every commit of view 0 is lost
/// from then on), and a primary that then falls silent. Returns the cluster and the switches.
fn prepared_not_committed() -> (Cluster, Rc<RefCell<Switches>>) {
    let mut cluster = Cluster::with_f(1, 1);
    let verifier = cluster.verifier.clone();
    let switches = Rc::new(RefCell::new(Switches::default()));
    let flags = switches.clone();
    cluster.filter = Some(Box::new(move |e: &mut Envelope| {
        let flags = flags.borrow();
        let primary = Node::Replica(ReplicaId(0));
        if flags.crashed && (e.from == primary || e.to == primary) {
            return false;
        }
        // Commits of view 0 are lost (re-sent copies too), so only a view change commits.
        !(flags.drop_commits
            && matches!(
                kind_and_seq(&verifier, &e.frame),
                Some((MessageKind::Commit, View(0), _))
            ))
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(1), 5, Duration::from_secs(1), op),
        5
    );
    switches.borrow_mut().drop_commits = true;
    cluster.submit(ClientId(1), b"the sixth".to_vec());
    while cluster.deliver_one() {}
    for replica in &cluster.replicas {
        let status = replica.status();
        assert_eq!(status.last_executed, SeqNum(5));
        assert!(status.prepared_certificates_held >= 1, "{status:?}");
    }
    switches.borrow_mut().crashed = true;
    (cluster, switches)
}

/// Section 4.4: a request prepared (but committed nowhere) when the primary fails keeps its
/// sequence number in the new view: the VIEW-CHANGEs carry its prepared certificate, NEW-VIEW
/// re-issues it at the same sequence number, and it executes there, once.
#[test]
fn prepared_requests_keep_their_sequence_numbers_across_a_view_change() {
    let (mut cluster, _switches) = prepared_not_committed();
    let finished = cluster.run_until(Duration::from_secs(60), |c| c.completed.len() == 6);
    assert!(finished);
    for r in 1..4 {
        let replica = &cluster.replicas[r];
        assert_eq!(replica.view(), View(1));
        let sixth: Vec<_> = cluster.executed[r]
            .iter()
            .filter(|e| e.timestamp == 6)
            .collect();
        assert_eq!(sixth.len(), 1, "executed once");
        assert_eq!(
            sixth[0].seq,
            SeqNum(6),
            "at the sequence number assigned in view 0"
        );
    }
    assert_eq!(
        cluster.completed[5].1.outcome,
        Outcome::Ok({
            let mut reply = 6u64.to_le_bytes().to_vec();
            reply.extend_from_slice(b"the sixth");
            reply
        })
    );
    assert_eq!(cluster.assert_agreement(&set(&[0])), 6);
}

/// How a Byzantine new primary tampers with its NEW-VIEW.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Leaves out the pre-prepare of a prepared request.
    OmitPrepared,
    /// Adds a pre-prepare for a request that never prepared.
    AddUnprepared,
    /// Puts in a VIEW-CHANGE signed by a key that is not a member's.
    NonMemberViewChange,
    /// Puts in a VIEW-CHANGE for another (old) view.
    OldViewChange,
}

fn tampered_new_view(
    frame: &Bytes,
    verifier: &bft_core::Verifier,
    tamper: Tamper,
) -> Option<Bytes> {
    let VerifiedMessage::NewView(new_view) = verifier.verify(frame.clone()).ok()? else {
        return None;
    };
    let cluster_id = 7;
    let nv = new_view.message();
    let mut view_changes: Vec<ByteBuf> = nv
        .view_changes
        .iter()
        .map(|vc| ByteBuf::from(vc.frame().to_vec()))
        .collect();
    let mut pre_prepares: Vec<ByteBuf> = nv
        .pre_prepares
        .iter()
        .map(|p| ByteBuf::from(p.frame().to_vec()))
        .collect();
    let primary_key = testkit::replica_key(1);
    let empty_view_change = |new_view: View| ViewChangePayload {
        new_view,
        stable_seq: SeqNum(0),
        checkpoint_proof: Vec::new(),
        prepared: Vec::new(),
    };
    match tamper {
        Tamper::OmitPrepared => {
            assert!(pre_prepares.pop().is_some(), "a prepared request to omit");
        }
        Tamper::AddUnprepared => {
            let seq = SeqNum(nv.pre_prepares.last().map_or(0, |p| p.message().seq.0) + 1);
            let header = PrePrepareHeader {
                view: nv.view,
                seq,
                digest: Digest([9; 32]),
            };
            let frame = header.sign(&primary_key, cluster_id, Principal::Replica(ReplicaId(1)));
            pre_prepares.push(ByteBuf::from(frame.to_vec()));
        }
        Tamper::NonMemberViewChange => {
            let outsider = bft_crypto::KeyPair::from_seed([77; 32]);
            let frame = empty_view_change(nv.view).sign(
                &outsider,
                cluster_id,
                Principal::Replica(ReplicaId(9)),
            );
            view_changes[0] = ByteBuf::from(frame.to_vec());
        }
        Tamper::OldViewChange => {
            let frame = empty_view_change(View(0)).sign(
                &testkit::replica_key(3),
                cluster_id,
                Principal::Replica(ReplicaId(3)),
            );
            let position = nv
                .view_changes
                .iter()
                .position(|vc| vc.sender() == Principal::Replica(ReplicaId(3)))
                .unwrap_or(0);
            view_changes[position] = ByteBuf::from(frame.to_vec());
        }
    }
    let payload = NewViewPayload {
        view: nv.view,
        view_changes,
        pre_prepares,
    };
    Some(payload.sign(&primary_key, cluster_id, Principal::Replica(ReplicaId(1))))
}

/// Section 4.4: a Byzantine new primary (replica 1) whose NEW-VIEW omits a prepared request,
/// includes one that never prepared, or uses a VIEW-CHANGE from a non-member or for an old view:
/// the backups recompute the NEW-VIEW from its VIEW-CHANGEs, refuse it, wait out their timer and
/// move to view 2, where the request completes at its original sequence number.
#[test]
fn a_byzantine_new_view_is_refused_and_the_next_view_takes_over() {
    for tamper in [
        Tamper::OmitPrepared,
        Tamper::AddUnprepared,
        Tamper::NonMemberViewChange,
        Tamper::OldViewChange,
    ] {
        let (mut cluster, _switches) = prepared_not_committed();
        let verifier = cluster.verifier.clone();
        let previous = cluster.filter.take().expect("filter");
        let previous = Rc::new(RefCell::new(previous));
        let tampered = Rc::new(RefCell::new(0));
        let count = tampered.clone();
        cluster.filter = Some(Box::new(move |e: &mut Envelope| {
            if !(previous.borrow_mut())(e) {
                return false;
            }
            if e.from == Node::Replica(ReplicaId(1))
                && let Some(frame) = tampered_new_view(&e.frame, &verifier, tamper)
            {
                e.frame = frame;
                *count.borrow_mut() += 1;
            }
            true
        }));
        let finished = cluster.run_until(Duration::from_secs(120), |c| c.completed.len() == 6);
        assert!(finished, "{tamper:?}");
        assert!(*tampered.borrow() > 0);
        for r in [2, 3] {
            let refused_new_view = cluster.rejected.iter().any(|(at, rej)| {
                *at == ReplicaId(r)
                    && rej.kind == MessageKind::NewView
                    && rej.reason == Rejection::InvalidNewView
            });
            let unverifiable = cluster.verify_failures.iter().any(|(to, error)| {
                *to == Node::Replica(ReplicaId(r)) && matches!(error, VerifyError::Embedded { .. })
            });
            assert!(
                refused_new_view || unverifiable,
                "{tamper:?}: replica {r} refused the NEW-VIEW"
            );
            assert_eq!(cluster.replicas[r as usize].view(), View(2), "{tamper:?}");
            let sixth: Vec<_> = cluster.executed[r as usize]
                .iter()
                .filter(|e| e.timestamp == 6)
                .collect();
            assert_eq!(sixth.len(), 1);
            assert_eq!(sixth[0].seq, SeqNum(6), "{tamper:?}");
        }
        assert_eq!(cluster.assert_agreement(&set(&[0, 1])), 6);
    }
}

/// Steps the cluster until `replica` reaches `view`; returns the time it did.
fn time_of_view(cluster: &mut Cluster, replica: usize, view: View, limit: Duration) -> Time {
    let finished = cluster.run_until(limit, |c| c.replicas[replica].view() >= view);
    assert!(finished, "replica {replica} never reached {view:?}");
    cluster.now
}

/// TOCS section 4.5.2: the view-change timeout doubles with each consecutive view change. With
/// f = 2 and the primaries of views 0 and 1 silent, a backup waits one timeout to suspect the
/// primary of view 0, then two timeouts for the NEW-VIEW of view 1 before moving to view 2; after
/// progress in view 2 the timeout is back to one.
#[test]
fn the_view_change_timeout_doubles_and_resets_after_progress() {
    let mut cluster = Cluster::with_f(2, 1);
    let base = cluster.config.timing.view_change;
    let retransmit = cluster.config.timing.client_retransmit;
    cluster.silent.extend([ReplicaId(0), ReplicaId(1)]);
    cluster.submit(ClientId(1), b"first".to_vec());
    let t1 = time_of_view(&mut cluster, 3, View(1), Duration::from_secs(60));
    assert_eq!(
        t1,
        Time::ZERO + retransmit + base,
        "suspects after one timeout from the relay"
    );
    let t2 = time_of_view(&mut cluster, 3, View(2), Duration::from_secs(60));
    assert_eq!(
        t2.saturating_since(t1),
        2 * base,
        "waits twice as long for the NEW-VIEW of view 1"
    );
    assert!(cluster.run_until(Duration::from_secs(60), |c| c.completed.len() == 1));

    // Progress in view 2 reset the backoff: the next suspicion takes one timeout again.
    cluster.silent = set(&[1, 2]);
    let submitted = cluster.now;
    cluster.submit(ClientId(1), b"second".to_vec());
    let t3 = time_of_view(&mut cluster, 3, View(3), Duration::from_secs(120));
    assert_eq!(t3.saturating_since(submitted), retransmit + base);
}

/// TOCS section 4.5.2: a replica that missed the NEW-VIEW keeps re-sending its VIEW-CHANGE; the
/// primary of the view answers with the NEW-VIEW, and the replica enters the view and executes.
#[test]
fn a_replica_that_missed_the_new_view_still_enters_it() {
    let mut cluster = Cluster::with_f(1, 2);
    cluster.silent.insert(ReplicaId(0));
    let verifier = cluster.verifier.clone();
    let dropped = Rc::new(RefCell::new(0));
    let count = dropped.clone();
    cluster.filter = Some(Box::new(move |e: &mut Envelope| {
        let is_new_view = matches!(
            verifier.verify(e.frame.clone()),
            Ok(VerifiedMessage::NewView(_))
        );
        if is_new_view && e.to == Node::Replica(ReplicaId(3)) && *count.borrow() == 0 {
            *count.borrow_mut() += 1;
            return false;
        }
        true
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 10, Duration::from_secs(60), op),
        20
    );
    assert!(
        cluster.run_until(Duration::from_secs(120), |c| c.replicas[3].view()
            == View(1)
            && c.replicas[3].status().phase == Phase::Normal)
    );
    assert_eq!(*dropped.borrow(), 1);
    assert!(
        cluster.run_until(Duration::from_secs(600), |c| c.network.is_empty()
            && c.next_deadline().is_none())
    );
    assert_eq!(cluster.assert_agreement(&set(&[0])), 20);
}

/// TOCS section 4.5.2: VIEW-CHANGEs are re-sent until the view is installed. Here the first
/// VIEW-CHANGE each replica sends is lost on every link; only the re-sent ones get through, and
/// the view change still completes.
#[test]
fn lost_view_changes_are_resent_until_the_view_is_installed() {
    let mut cluster = Cluster::with_f(1, 2);
    cluster.silent.insert(ReplicaId(0));
    let verifier = cluster.verifier.clone();
    let lost = Rc::new(RefCell::new(
        std::collections::BTreeMap::<Node, usize>::new(),
    ));
    let seen = lost.clone();
    cluster.filter = Some(Box::new(move |e: &mut Envelope| {
        if !matches!(
            verifier.verify(e.frame.clone()),
            Ok(VerifiedMessage::ViewChange(_))
        ) {
            return true;
        }
        // A replica's first VIEW-CHANGE goes to the three others: lose those three copies.
        let mut seen = seen.borrow_mut();
        let copies = seen.entry(e.from).or_default();
        *copies += 1;
        *copies > 3
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 5, Duration::from_secs(60), op),
        10
    );
    let lost = lost.borrow();
    assert!(
        lost.len() == 3 && lost.values().all(|&copies| copies > 3),
        "{lost:?}"
    );
    assert_eq!(cluster.assert_agreement(&set(&[0])), 10);
}

/// Sections 4.3 and 4.4 together, with f = 1 so that every live replica is needed for a quorum:
/// a replica comes back just as another fails, four times over. A backup that missed a few
/// batches returns as the primary fails (the batches re-issued without their requests in the new
/// view are fetched with commit certificates); the old primary returns after missing the view
/// change (it learns of the later view from f+1 replicas' messages and asks for the NEW-VIEW)
/// as a backup fails; that backup returns several checkpoints behind (state transfer, pointed to
/// the latest checkpoint by peers that discarded older ones) as another replica fails. Every
/// request completes and the replicas end with the same state.
#[test]
fn a_returning_backup_and_a_failing_primary_at_once() {
    let mut config = testkit::config(1, 4);
    config.limits.checkpoint_interval = 16;
    config.limits.window = 32;
    let mut cluster = Cluster::new(config);
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 10, Duration::from_secs(60), op),
        40
    );
    // Cut off for fewer batches than the window (it will lack their requests, not a checkpoint)...
    cluster.silent = set(&[3]);
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 2, Duration::from_secs(60), op),
        8
    );
    cluster.silent = set(&[0]);
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 10, Duration::from_secs(600), op),
        40
    );
    // ... and then for several checkpoint intervals (state transfer, then the batches after it).
    cluster.silent = set(&[3]);
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 30, Duration::from_secs(600), op),
        120
    );
    cluster.silent = set(&[1]);
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 10, Duration::from_secs(600), op),
        40
    );
    assert!(
        cluster.run_until(Duration::from_secs(3600), |c| c.network.is_empty()
            && c.next_deadline().is_none())
    );
    let returned = &cluster.replicas[3];
    assert!(returned.metrics().state_transfers_completed >= 1);
    assert_eq!(
        returned.status().last_executed,
        cluster.replicas[2].status().last_executed
    );
    assert_eq!(cluster.assert_agreement(&set(&[0, 1, 3])), 248);
    assert_eq!(
        returned.service().state_digest(),
        cluster.replicas[2].service().state_digest()
    );
}
