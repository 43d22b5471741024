//! Restarting a replica from what it persisted (PBFT OSDI'99 section 4.2: replicas log what they
//! send and accept; TOCS 2002 section 5.3: the stable checkpoint is the base of the log).
//!
//! A replica that forgets what it signed can sign a conflicting message after a crash, and one
//! that forgets a prepared certificate can leave it out of a VIEW-CHANGE: a crashed correct
//! replica would then act Byzantine. These tests check that [`Replica::recover`] rebuilds a
//! replica from its storage (the latest [`DurableCheckpoint`] and the records after it) at any
//! point of a run, that the rebuilt replica refuses what the one before the crash would have
//! refused, and that storage that does not verify is refused with a typed error.

use bft_core::codec;
use bft_core::messages::{
    Checkpoint, PrePreparePayload, Prepare, Request, StateManifest, WireMessage, batch_digest,
    checkpoint_digest,
};
use bft_core::testkit::service::LogService;
use bft_core::testkit::{
    self, CLUSTER_ID, Cluster, Envelope, Node, client_key, flip_signature, replica_key,
};
use bft_core::{
    Actions, ClientId, ClusterConfig, DurableCheckpoint, Input, MemoryStorage, MessageKind,
    Outcome, Phase, Principal, Record, RecoveryError, RecoveryReport, Rejected, Rejection, Replica,
    ReplicaId, SeqNum, SignedRecord, Status, Time, VerifiedMessage, Verifier, View,
};
use bft_crypto::{Digest, sha256};
use bytes::Bytes;
use serde_bytes::ByteBuf;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

fn op(client: ClientId, i: usize) -> Vec<u8> {
    format!("put {client} {i}").into_bytes()
}

fn ids(n: u64) -> Vec<ClientId> {
    (1..=n).map(ClientId).collect()
}

fn set(replicas: &[u32]) -> BTreeSet<ReplicaId> {
    replicas.iter().map(|&r| ReplicaId(r)).collect()
}

/// n = 4 with K = 4 and L = 8: checkpoints become stable every few batches, so storage holds a
/// [`DurableCheckpoint`] and the records persisted after it.
fn small_checkpoints(clients: u64) -> ClusterConfig {
    let mut config = testkit::config(1, clients);
    config.limits.checkpoint_interval = 4;
    config.limits.window = 8;
    // One request to a batch: every request is a full batch and is pipelined at once, so these
    // runs take each request through its own sequence number, as the scenarios below count on
    // (`shared_batches` lifts it).
    config.limits.max_batch_requests = 1;
    config
}

/// [`small_checkpoints`] with the default batch limits: requests share batches.
fn shared_batches(clients: u64) -> ClusterConfig {
    let mut config = small_checkpoints(clients);
    config.limits.max_batch_requests = testkit::config(1, clients).limits.max_batch_requests;
    config
}

fn recover_with(
    config: &Arc<ClusterConfig>,
    id: u32,
    checkpoint: Option<&DurableCheckpoint>,
    records: &[Record],
) -> Result<(Replica<LogService>, RecoveryReport), RecoveryError> {
    Replica::recover(
        config.clone(),
        ReplicaId(id),
        replica_key(id),
        LogService::default(),
        checkpoint,
        records,
    )
}

/// Replica `id` restarted from what its storage in `cluster` holds, with a fresh service.
fn recover_from_storage(cluster: &Cluster, id: u32) -> Replica<LogService> {
    let storage = &cluster.storage[id as usize];
    match recover_with(
        &cluster.config,
        id,
        storage.checkpoint.as_ref(),
        &storage.records,
    ) {
        Ok((replica, report)) => {
            let status = replica.status();
            assert_eq!(report.view, status.view);
            assert_eq!(report.last_executed, status.last_executed);
            assert_eq!(
                report.stable_seq,
                storage
                    .checkpoint
                    .as_ref()
                    .and_then(|c| c.stable.as_ref())
                    .map_or(SeqNum(0), |s| s.seq)
            );
            replica
        }
        Err(error) => panic!("replica {id} cannot recover from its storage: {error}"),
    }
}

/// What recovery must restore exactly: where the replica is in the protocol, what it executed,
/// what it assigned, and the prepared certificates a VIEW-CHANGE would carry.
#[derive(Debug, PartialEq, Eq)]
struct Restored {
    view: View,
    phase: Phase,
    low_watermark: SeqNum,
    last_executed: SeqNum,
    last_assigned: SeqNum,
    service_digest: Digest,
    prepared_certificates_held: usize,
}

impl Restored {
    fn of(status: &Status) -> Restored {
        Restored {
            view: status.view,
            phase: status.phase,
            low_watermark: status.low_watermark,
            last_executed: status.last_executed,
            last_assigned: status.last_assigned,
            service_digest: status.service_digest,
            prepared_certificates_held: status.prepared_certificates_held,
        }
    }
}

/// Who signed a frame (it must decode).
fn frame_sender(frame: &Bytes) -> Principal {
    codec::decode_frame(frame, usize::MAX)
        .expect("a frame")
        .header
        .sender
}

/// The parts of `storage` as a driver would hand them to [`Replica::recover`].
fn parts(storage: &MemoryStorage) -> (Option<DurableCheckpoint>, Vec<Record>) {
    (storage.checkpoint.clone(), storage.records.clone())
}

/// A cluster after 40 requests with K = 4: every replica holds a saved stable checkpoint.
fn cluster_with_checkpoints() -> Cluster {
    let mut cluster = Cluster::new(small_checkpoints(4));
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 10, Duration::from_secs(60), op),
        40
    );
    cluster.assert_agreement(&BTreeSet::new());
    for (i, replica) in cluster.replicas.iter().enumerate() {
        assert!(
            replica.metrics().checkpoints_stable >= 3,
            "replica {i}: {:?}",
            replica.metrics()
        );
        let stable = cluster.storage[i]
            .checkpoint
            .as_ref()
            .and_then(|c| c.stable.as_ref())
            .expect("a stable checkpoint was saved");
        assert_eq!(stable.seq, replica.status().low_watermark);
    }
    cluster
}

// ---------------------------------------------------------------------------------------------
// Rebuilding the replica
// ---------------------------------------------------------------------------------------------

/// After a run in which several checkpoints became stable, every replica restarted from its
/// storage (the saved checkpoint and the records after it), with a fresh service, is where the
/// live replica is: same view, phase, low watermark, last executed and assigned sequence numbers,
/// service state, checkpoint state and prepared certificates. The same holds when it restarts
/// from a [`DurableCheckpoint`] taken now, with no records after it.
#[test]
fn every_replica_recovers_its_state_after_a_run_with_checkpoints() {
    let cluster = cluster_with_checkpoints();
    for i in 0..4u32 {
        let live = &cluster.replicas[i as usize];
        let expected = Restored::of(&live.status());
        let stable = live.status().low_watermark;
        assert!(stable.0 >= 12, "replica {i}: {:?}", live.status());

        let recovered = recover_from_storage(&cluster, i);
        assert_eq!(
            Restored::of(&recovered.status()),
            expected,
            "replica {i} from its storage"
        );
        assert_eq!(
            recovered.checkpoint_digest(stable),
            live.checkpoint_digest(stable)
        );
        assert_eq!(
            recovered.stable_certificate().map(|c| (c.seq, c.digest)),
            live.stable_certificate().map(|c| (c.seq, c.digest))
        );
        assert_eq!(recovered.service().count, live.service().count);

        let (alone, report) =
            recover_with(&cluster.config, i, Some(&live.durable_checkpoint()), &[])
                .unwrap_or_else(|e| panic!("replica {i} from its durable checkpoint: {e}"));
        assert_eq!(
            Restored::of(&alone.status()),
            expected,
            "replica {i} from durable_checkpoint() alone"
        );
        assert_eq!(report.stable_seq, stable);
        assert_eq!(
            alone.checkpoint_digest(stable),
            live.checkpoint_digest(stable)
        );
    }
    // The run ended with nothing in flight: the primary executed every batch it assigned.
    assert_eq!(
        cluster.replicas[0].status().last_assigned,
        cluster.replicas[0].status().last_executed
    );
}

/// Prepares and commits are authenticated by their signer's channel (sections 4.2 and 5.2), so a
/// replica logs the votes a Byzantine replica signed badly, as it accepted them. Restarting from
/// that log must take them as the channel did (`Verifier::verify_recorded`), not refuse the
/// storage: after a run in which replica 3 signed every vote badly, every correct replica
/// recovers where it was. (A badly signed prepare never counts toward prepared: a replica checks
/// the prepares it counts first.)
#[test]
fn replicas_recover_from_logs_that_hold_votes_only_their_channel_authenticated() {
    let mut cluster = Cluster::new(small_checkpoints(4));
    cluster.filter = Some(Box::new(|envelope| {
        if envelope.from == Node::Replica(ReplicaId(3))
            && codec::decode_frame(&envelope.frame, usize::MAX)
                .is_ok_and(|f| matches!(f.header.kind, MessageKind::Prepare | MessageKind::Commit))
        {
            envelope.frame = flip_signature(&envelope.frame);
        }
        true
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 10, Duration::from_secs(60), op),
        40
    );
    assert!(cluster.verify_failures.is_empty());
    let logged_bad_votes = cluster.storage[0]
        .records
        .iter()
        .filter(|record| match record {
            Record::Frame(frame) => {
                frame_sender(frame) == Principal::Replica(ReplicaId(3))
                    && cluster.verifier.verify(frame.clone()).is_err()
            }
            _ => false,
        })
        .count();
    assert!(logged_bad_votes > 0, "the run must log such votes");
    for i in 0..3u32 {
        let live = &cluster.replicas[i as usize];
        let recovered = recover_from_storage(&cluster, i);
        assert_eq!(
            Restored::of(&recovered.status()),
            Restored::of(&live.status()),
            "replica {i}"
        );
    }
}

/// A closed loop of `per_client` operations from each client, one frame delivered per step
/// (time jumps only when nothing is in flight); `after_step` runs after every step and may stop
/// the run by returning false. Returns the number of steps taken.
fn step_closed_loop(
    cluster: &mut Cluster,
    clients: &[ClientId],
    per_client: usize,
    mut after_step: impl FnMut(&mut Cluster, usize) -> bool,
) -> usize {
    let total = cluster.completed.len() + clients.len() * per_client;
    let limit = cluster.now + Duration::from_secs(60);
    let mut submitted: BTreeMap<ClientId, usize> = BTreeMap::new();
    let mut steps = 0;
    loop {
        for &client in clients {
            let n = submitted.entry(client).or_default();
            if *n < per_client && !cluster.clients[&client].is_busy() {
                cluster.submit(client, op(client, *n));
                *n += 1;
            }
        }
        if cluster.completed.len() == total && cluster.network.is_empty() {
            return steps;
        }
        if !cluster.deliver_one() {
            assert!(
                cluster.advance_time() && cluster.now <= limit,
                "the run stalled"
            );
        }
        steps += 1;
        if !after_step(cluster, steps) {
            return steps;
        }
    }
}

/// What [`assert_every_replica_recovers`] saw.
#[derive(Debug, Default)]
struct Points {
    /// Replicas compared.
    compared: usize,
    /// ... whose storage held a saved checkpoint.
    above_a_checkpoint: usize,
    /// ... whose saved checkpoint carried no commit certificate (commits compared exactly).
    exact_commits: usize,
    /// ... that were waiting for a NEW-VIEW.
    view_changing: usize,
}

/// Restarts every replica from its storage now and checks that it holds what the live replica
/// holds: view, phase, low watermark, last executed and assigned sequence numbers, service state,
/// prepared certificates, pre-prepares, and commits (see below).
///
/// Only messages that shape the log are persisted: recovery does not restore the primary's queue
/// of client requests, other replicas' CHECKPOINT messages, messages buffered for later views or
/// an unfinished state transfer, so those parts of the status are not compared.
///
/// One difference in commits held is allowed, and bounded: a batch committed above the stable
/// checkpoint when that checkpoint was saved is stored as its commit certificate
/// ([`Record::Committed`]: the pre-prepare and 2f+1 commits), so it comes back with 2f+1 commits
/// where the live replica may hold up to n = 3f+1. Each such record may account for at most f
/// missing commits, and recovery never holds more than the live replica. (That batch is
/// executed, its slot committed and the replica's commit sent: the missing commits can no longer
/// change anything. The prepares of such slots are not restored either, and are not compared.)
fn assert_every_replica_recovers(cluster: &Cluster, context: &str, points: &mut Points) {
    let f = cluster.config.f;
    for i in 0..cluster.replicas.len() {
        let live = cluster.replicas[i].status();
        let recovered = recover_from_storage(cluster, i as u32).status();
        let context = format!("replica {i} {context}");
        assert_eq!(Restored::of(&recovered), Restored::of(&live), "{context}");
        assert_eq!(
            recovered.pre_prepares_held, live.pre_prepares_held,
            "{context}: pre-prepares held\nlive {live:?}\nrecovered {recovered:?}"
        );
        let checkpoint = cluster.storage[i].checkpoint.as_ref();
        let certificates = checkpoint.map_or(0, |c| {
            c.records
                .iter()
                .filter(|r| matches!(r, Record::Committed { .. }))
                .count()
        });
        assert!(
            recovered.commits_held <= live.commits_held
                && live.commits_held <= recovered.commits_held + f * certificates,
            "{context}: commits held ({certificates} commit certificates restored)\n\
             live {live:?}\nrecovered {recovered:?}"
        );
        points.compared += 1;
        points.exact_commits += usize::from(certificates == 0);
        points.above_a_checkpoint += usize::from(checkpoint.is_some());
        points.view_changing += usize::from(live.phase == Phase::ViewChanging);
    }
}

/// Recovery at every point of a run: after each delivered frame (a crash may come between any
/// two steps), every replica restarted from its storage holds what the live replica holds (see
/// [`assert_every_replica_recovers`]).
#[test]
fn recovery_at_every_point_of_a_run_matches_the_live_replica() {
    let mut cluster = Cluster::new(small_checkpoints(3));
    let mut points = Points::default();
    let steps = step_closed_loop(&mut cluster, &ids(3), 8, |cluster, step| {
        assert_every_replica_recovers(cluster, &format!("after {step} steps"), &mut points);
        true
    });
    assert_eq!(cluster.completed.len(), 24);
    cluster.assert_agreement(&BTreeSet::new());
    assert!(steps > 300, "{steps} steps");
    assert!(points.above_a_checkpoint > 500, "{points:?}");
    assert!(points.exact_commits > 300, "{points:?}");
    assert!(cluster.replicas[0].status().low_watermark.0 >= 4);
}

/// The same at every point of a view change: the primary falls silent in the middle of a run,
/// the backups' timers fire, they send VIEW-CHANGEs, and the primary of view 1 installs it with
/// its NEW-VIEW (re-issuing the prepared batches). A replica restarted at any point is in the same
/// view and phase as the live one, with the same prepared certificates and log.
#[test]
fn recovery_at_every_point_of_a_view_change_matches_the_live_replica() {
    let mut cluster = Cluster::new(small_checkpoints(3));
    let mut points = Points::default();
    step_closed_loop(&mut cluster, &ids(3), 8, |cluster, step| {
        if step == 150 {
            cluster.silent.insert(ReplicaId(0));
        }
        assert_every_replica_recovers(cluster, &format!("after {step} steps"), &mut points);
        true
    });
    assert_eq!(cluster.completed.len(), 24);
    for r in 1..4 {
        let status = cluster.replicas[r].status();
        assert_eq!((status.view, status.phase), (View(1), Phase::Normal), "{r}");
    }
    cluster.assert_agreement(&set(&[0]));
    assert!(points.view_changing >= 3, "{points:?}");
    assert!(points.above_a_checkpoint > 500, "{points:?}");
}

/// The same through two view changes: the primary of view 0 falls silent, view 1 is installed;
/// then it comes back and the primary of view 1 falls silent, and view 2 is installed (the
/// replica that missed view 1 rejoins). Replicas restarted at any point are where the live ones
/// are, with prepared certificates and NEW-VIEWs of earlier views among their records.
#[test]
fn recovery_at_every_point_of_two_view_changes_matches_the_live_replica() {
    every_point_of_two_view_changes(small_checkpoints(3));
}

/// The same with requests sharing batches. A replica that rejoins in view 2 installs its
/// NEW-VIEW while it fetches the state of min-s: the NEW-VIEW's pre-prepares above its window
/// then must be installed (and prepared) once the transfer completes, as a replica restarted
/// from the fetched checkpoint installs them from the NEW-VIEW record. Without that, the live
/// replica held none of them where the restarted one held three.
#[test]
fn recovery_at_every_point_of_two_view_changes_with_shared_batches() {
    every_point_of_two_view_changes(shared_batches(3));
}

fn every_point_of_two_view_changes(config: ClusterConfig) {
    let mut cluster = Cluster::new(config);
    let mut points = Points::default();
    let mut stage = 0;
    step_closed_loop(&mut cluster, &ids(3), 12, |cluster, step| {
        if stage == 0 && step == 150 {
            cluster.silent.insert(ReplicaId(0));
            stage = 1;
        }
        let in_view_1 = (1..4).all(|r| {
            let status = cluster.replicas[r].status();
            (status.view, status.phase) == (View(1), Phase::Normal)
        });
        if stage == 1 && in_view_1 && cluster.completed.len() >= 20 {
            cluster.silent = set(&[1]);
            stage = 2;
        }
        assert_every_replica_recovers(cluster, &format!("after {step} steps"), &mut points);
        true
    });
    assert_eq!(stage, 2);
    assert_eq!(cluster.completed.len(), 36);
    for r in [0, 2, 3] {
        let status = cluster.replicas[r].status();
        assert_eq!((status.view, status.phase), (View(2), Phase::Normal), "{r}");
    }
    assert!(points.view_changing >= 6, "{points:?}");
    assert_consistent_except(&cluster, &set(&[1]));
}

/// A crash between saving a new checkpoint and dropping the records it supersedes (a disk driver
/// writes the checkpoint file, then truncates its log) leaves the older records after the newer
/// checkpoint. Replaying them is harmless: at every point of a run with a view change where a
/// replica saved a checkpoint, restarting it from the new checkpoint followed by the records that
/// storage held just before gives the same replica as the new checkpoint alone.
#[test]
fn records_superseded_by_a_newer_checkpoint_are_harmless() {
    let mut cluster = Cluster::new(small_checkpoints(3));
    let mut before: Vec<MemoryStorage> = cluster.storage.clone();
    let mut saved = 0;
    step_closed_loop(&mut cluster, &ids(3), 12, |cluster, step| {
        if step == 150 {
            cluster.silent.insert(ReplicaId(0));
        }
        for (i, storage) in cluster.storage.iter().enumerate() {
            let previous = &before[i];
            if storage.checkpoint == previous.checkpoint || previous.records.is_empty() {
                continue;
            }
            saved += 1;
            let (replica, _) = recover_with(
                &cluster.config,
                i as u32,
                storage.checkpoint.as_ref(),
                &previous.records,
            )
            .unwrap_or_else(|e| panic!("replica {i} after {step} steps: {e}"));
            let live = cluster.replicas[i].status();
            let status = replica.status();
            assert_eq!(
                Restored::of(&status),
                Restored::of(&live),
                "replica {i} after {step} steps"
            );
            assert_eq!(
                status.pre_prepares_held, live.pre_prepares_held,
                "replica {i} after {step} steps"
            );
        }
        before.clone_from(&cluster.storage);
        true
    });
    assert_eq!(cluster.completed.len(), 36);
    assert!(saved >= 10, "{saved} checkpoints saved over older records");
}

/// The same at every point of a state transfer: a replica cut off for several checkpoint
/// intervals reconnects, learns of a stable checkpoint beyond its window, fetches its state and
/// then the committed batches that follow it. Restarted at any point, it is where the live
/// replica is (an unfinished transfer is not persisted: it starts again).
#[test]
fn recovery_at_every_point_of_a_state_transfer_matches_the_live_replica() {
    let mut cluster = Cluster::new(small_checkpoints(3));
    cluster.silent.insert(ReplicaId(3));
    let mut points = Points::default();
    let mut fetching = 0;
    step_closed_loop(&mut cluster, &ids(3), 12, |cluster, step| {
        if cluster.replicas[0].status().low_watermark.0 >= 16 {
            cluster.silent.clear();
        }
        assert_every_replica_recovers(cluster, &format!("after {step} steps"), &mut points);
        fetching += usize::from(cluster.replicas[3].status().fetching_state.is_some());
        true
    });
    assert_eq!(cluster.completed.len(), 36);
    assert!(fetching > 0, "{points:?}");
    let metrics = cluster.replicas[3].metrics();
    assert!(metrics.state_transfers_completed >= 1, "{metrics:?}");
    assert!(cluster.run_until(Duration::from_secs(600), |c| {
        c.replicas[3].status().last_executed == c.replicas[0].status().last_executed
    }));
    assert_every_replica_recovers(&cluster, "at the end", &mut points);
    assert_eq!(
        cluster.replicas[3].status().service_digest,
        cluster.replicas[0].status().service_digest
    );
}

// ---------------------------------------------------------------------------------------------
// A recovered replica in the cluster
// ---------------------------------------------------------------------------------------------

/// A replica crashes just after it signed (and persisted) a prepare: what was in flight to it is
/// lost, and it restarts from its storage. With another replica then silent, every quorum needs
/// the recovered one: the cluster keeps executing new requests, and the three replicas that take
/// part agree on every request executed before and after the crash.
#[test]
fn a_replica_recovered_after_signing_a_prepare_rejoins_the_cluster() {
    let mut cluster = Cluster::new(small_checkpoints(2));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 5, Duration::from_secs(60), op),
        10
    );
    cluster.submit(ClientId(1), b"in flight at the crash".to_vec());
    let signed_a_prepare_last = |c: &Cluster| {
        c.storage[2]
            .records
            .last()
            .and_then(Record::as_signed)
            .is_some_and(|r| r.kind == MessageKind::Prepare)
    };
    assert!(cluster.run_until(Duration::from_secs(60), signed_a_prepare_last));
    let prepare = cluster.storage[2]
        .records
        .last()
        .and_then(Record::as_signed)
        .expect("a signed prepare")
        .clone();
    let live = cluster.replicas[2].status();
    assert!(prepare.seq > live.last_executed, "{live:?}");

    // The crash: frames in flight to replica 2 are lost.
    cluster
        .network
        .retain(|e| e.to != Node::Replica(ReplicaId(2)));
    let recovered = recover_from_storage(&cluster, 2);
    let status = recovered.status();
    assert_eq!(Restored::of(&status), Restored::of(&live));
    assert_eq!(
        (
            status.pre_prepares_held,
            status.prepares_held,
            status.commits_held
        ),
        (
            live.pre_prepares_held,
            live.prepares_held,
            live.commits_held
        ),
        "the log holds the pre-prepare and the replica's own prepare: {status:?}"
    );
    cluster.replicas[2] = recovered;

    // From now on replica 3 is silent: quorums of 3 need replica 2.
    cluster.silent.insert(ReplicaId(3));
    assert!(cluster.run_until(Duration::from_secs(600), |c| c.completed.len() == 11));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 6, Duration::from_secs(600), op),
        12
    );
    assert_eq!(cluster.assert_agreement(&set(&[3])), 23);
    let last = cluster.replicas[0].status().last_executed;
    assert_eq!(cluster.replicas[2].status().last_executed, last);
    assert!(last > prepare.seq);
    // The batch replica 2 had prepared before the crash is the one executed at that sequence
    // number.
    let at_crash: Vec<Digest> = cluster.executed[0]
        .iter()
        .filter(|e| e.seq == prepare.seq)
        .map(|e| e.request)
        .collect();
    assert_eq!(batch_digest(at_crash.into_iter()), prepare.digest);
}

/// Every two replicas that executed a sequence number executed the same requests there, no
/// replica executed a request twice, and every replica holds the same service state.
/// (`Cluster::assert_agreement` compares whole execution histories, but a replica that caught up
/// by state transfer skips the batches the transferred state covers.)
fn assert_consistent(cluster: &Cluster) {
    assert_consistent_except(cluster, &BTreeSet::new());
}

/// [`assert_consistent`] for the replicas outside `except`.
fn assert_consistent_except(cluster: &Cluster, except: &BTreeSet<ReplicaId>) {
    type Entry = (ClientId, u64, Digest, Outcome);
    let mut first: BTreeMap<SeqNum, (usize, Vec<Entry>)> = BTreeMap::new();
    for (i, executed) in cluster.executed.iter().enumerate() {
        if except.contains(&ReplicaId(i as u32)) {
            continue;
        }
        let mut once = BTreeSet::new();
        let mut mine: BTreeMap<SeqNum, Vec<Entry>> = BTreeMap::new();
        for e in executed {
            assert!(
                once.insert((e.client, e.timestamp)),
                "replica {i} executed twice: {e:?}"
            );
            mine.entry(e.seq).or_default().push((
                e.client,
                e.timestamp,
                e.request,
                e.outcome.clone(),
            ));
        }
        for (seq, entries) in mine {
            match first.get(&seq) {
                Some((j, theirs)) => assert_eq!(
                    &entries, theirs,
                    "replicas {j} and {i} executed differently at {seq:?}"
                ),
                None => {
                    first.insert(seq, (i, entries));
                }
            }
        }
    }
    let digests: BTreeSet<Digest> = cluster
        .replicas
        .iter()
        .filter(|r| !except.contains(&r.id()))
        .map(|r| r.status().service_digest)
        .collect();
    assert_eq!(digests.len(), 1, "replicas hold different states");
}

/// Replicas crash and recover one after another (the primary too), each from its own storage,
/// losing what was in flight to it, while the cluster keeps running: every request completes, and
/// once the recovered replicas have caught up (some by state transfer: a restarted replica has
/// lost the CHECKPOINT messages it had received, which are not persisted) all agree.
#[test]
fn replicas_recovered_one_after_another_keep_agreeing() {
    let mut cluster = Cluster::new(small_checkpoints(3));
    let mut done = 0;
    for round in 0..8u32 {
        done += cluster.run_closed_loop(&ids(3), 3, Duration::from_secs(600), op);
        let id = round % 4;
        let live = cluster.replicas[id as usize].status();
        cluster
            .network
            .retain(|e| e.to != Node::Replica(ReplicaId(id)));
        let recovered = recover_from_storage(&cluster, id);
        assert_eq!(
            Restored::of(&recovered.status()),
            Restored::of(&live),
            "round {round}"
        );
        cluster.replicas[id as usize] = recovered;
    }
    done += cluster.run_closed_loop(&ids(3), 3, Duration::from_secs(600), op);
    assert_eq!(done, 9 * 9);
    assert!(cluster.run_until(Duration::from_secs(600), |c| {
        let last = c.replicas[0].status().last_executed;
        c.replicas.iter().all(|r| r.status().last_executed == last)
    }));
    assert_eq!(cluster.replicas[0].status().last_executed, SeqNum(81));
    assert!(cluster.replicas.iter().all(|r| r.view() == View(0)));
    assert_consistent(&cluster);
    assert_eq!(cluster.executed[0].len(), 81);
}

// ---------------------------------------------------------------------------------------------
// What the replica signed survives the crash
// ---------------------------------------------------------------------------------------------

/// Frames built by hand for a replica driven without a cluster.
struct Forge {
    config: Arc<ClusterConfig>,
    verifier: Verifier,
}

impl Forge {
    fn new(config: ClusterConfig) -> Forge {
        let config = Arc::new(config);
        let verifier = Verifier::new(config.clone()).expect("valid configuration");
        Forge { config, verifier }
    }

    fn request(&self, client: u64, timestamp: u64, operation: &[u8]) -> Bytes {
        Request {
            timestamp,
            operation: operation.to_vec(),
        }
        .sign(
            &client_key(client),
            CLUSTER_ID,
            Principal::Client(ClientId(client)),
        )
    }

    fn batch_digest(&self, requests: &[Bytes]) -> Digest {
        let digests: Vec<Digest> = requests
            .iter()
            .map(|r| match self.verified(r.clone()) {
                VerifiedMessage::Request(request) => request.digest(),
                other => panic!("not a request: {:?}", other.kind()),
            })
            .collect();
        batch_digest(digests.into_iter())
    }

    /// A pre-prepare for `requests` signed by `signer`, with its batch.
    fn pre_prepare(&self, signer: u32, view: u64, seq: u64, requests: &[Bytes]) -> Bytes {
        PrePreparePayload {
            view: View(view),
            seq: SeqNum(seq),
            digest: self.batch_digest(requests),
            requests: requests.iter().map(|r| ByteBuf::from(r.to_vec())).collect(),
        }
        .sign(
            &replica_key(signer),
            CLUSTER_ID,
            Principal::Replica(ReplicaId(signer)),
        )
    }

    fn verified(&self, frame: Bytes) -> VerifiedMessage {
        self.verifier.verify(frame).expect("a valid frame")
    }
}

/// Steps `replica` with `frame` at time zero and persists the step's records in `storage`;
/// returns what it refused, what it signed, and how many requests it executed.
fn step_and_persist(
    forge: &Forge,
    replica: &mut Replica<LogService>,
    storage: &mut MemoryStorage,
    frame: Bytes,
) -> (Vec<Rejected>, Vec<SignedRecord>, usize) {
    let actions = replica.step(Time::ZERO, Input::Message(forge.verified(frame)));
    let rejected = actions.rejected.clone();
    let signed: Vec<_> = actions.signed_records().cloned().collect();
    let executed = actions.executed.len();
    let Ok(_sent) = actions.persist_then_send(storage);
    (rejected, signed, executed)
}

fn inspect(actions: &Actions) -> (Vec<Rejected>, Vec<SignedRecord>) {
    (
        actions.rejected.clone(),
        actions.signed_records().cloned().collect(),
    )
}

/// Section 4.2 across a crash: backup 1 accepts the primary's pre-prepare for digest d at (view 0,
/// sequence number 1) and signs a prepare for it (and, in the second case, prepares: it has 2f
/// matching prepares and signs a commit). It crashes and recovers from its records. The primary
/// equivocates: it sends a different pre-prepare for (0, 1). The recovered backup refuses it as a
/// conflicting pre-prepare and signs nothing for another digest; it still orders and executes d.
///
/// The contrast shows the test depends on the records: the same backup restarted with no records
/// (amnesia) accepts the second pre-prepare and signs a prepare that conflicts with the one it
/// signed before the crash: it acts Byzantine.
#[test]
fn a_recovered_backup_refuses_an_equivocating_pre_prepare() {
    let forge = Forge::new(testkit::config(1, 3));
    let a = [forge.request(1, 1, b"pay alice")];
    let b = [forge.request(2, 1, b"pay bob")];
    let (da, db) = (forge.batch_digest(&a), forge.batch_digest(&b));
    assert_ne!(da, db);
    for prepared in [false, true] {
        let case = if prepared { "prepared" } else { "pre-prepared" };
        let mut backup = Replica::new(
            forge.config.clone(),
            ReplicaId(1),
            replica_key(1),
            LogService::default(),
        )
        .expect("valid replica");
        let mut storage = MemoryStorage::default();
        let (rejected, signed, _) = step_and_persist(
            &forge,
            &mut backup,
            &mut storage,
            forge.pre_prepare(0, 0, 1, &a),
        );
        assert!(rejected.is_empty(), "{case}: {rejected:?}");
        assert_eq!(
            signed
                .iter()
                .map(|r| (r.kind, r.view, r.seq, r.digest))
                .collect::<Vec<_>>(),
            vec![(MessageKind::Prepare, View(0), SeqNum(1), da)],
            "{case}"
        );
        if prepared {
            for signer in [2, 3] {
                step_and_persist(
                    &forge,
                    &mut backup,
                    &mut storage,
                    testkit::prepare(signer, 0, 1, da),
                );
            }
            assert_eq!(backup.status().prepared_certificates_held, 1, "{case}");
            assert!(
                storage
                    .signed_records()
                    .any(|r| r.kind == MessageKind::Commit && r.digest == da),
                "{case}: a commit was signed"
            );
        }
        let live = backup.status();
        let equivocation = forge.pre_prepare(0, 0, 1, &b);
        let durable = backup.durable_checkpoint();
        let at_crash = storage.clone();
        for source in ["log", "durable checkpoint"] {
            let case = format!("{case}, restarted from its {source}");
            let mut storage = at_crash.clone();
            let (mut recovered, report) = if source == "log" {
                recover_with(&forge.config, 1, None, &storage.records)
            } else {
                recover_with(&forge.config, 1, Some(&durable), &[])
            }
            .unwrap_or_else(|e| panic!("{case}: {e}"));
            if source == "log" {
                assert_eq!(report.records_applied, storage.records.len(), "{case}");
            }
            let status = recovered.status();
            assert_eq!(Restored::of(&status), Restored::of(&live), "{case}");
            assert_eq!(
                (
                    status.pre_prepares_held,
                    status.prepares_held,
                    status.commits_held
                ),
                (
                    live.pre_prepares_held,
                    live.prepares_held,
                    live.commits_held
                ),
                "{case}"
            );

            // The primary equivocates.
            let actions = recovered.step(
                Time::ZERO,
                Input::Message(forge.verified(equivocation.clone())),
            );
            let (rejected, signed) = inspect(&actions);
            assert_eq!(
                rejected,
                vec![Rejected {
                    from: Principal::Replica(ReplicaId(0)),
                    kind: MessageKind::PrePrepare,
                    reason: Rejection::ConflictingPrePrepare,
                }],
                "{case}"
            );
            assert!(signed.is_empty(), "{case}: signed {signed:?}");
            assert!(actions.is_quiet(), "{case}");
            let Ok(_sent) = actions.persist_then_send(&mut storage);
            // Prepares for the other digest do not move it either.
            let (rejected, signed, _) = step_and_persist(
                &forge,
                &mut recovered,
                &mut storage,
                testkit::prepare(2, 0, 1, db),
            );
            assert!(signed.is_empty(), "{case}");
            let expected = if prepared {
                Rejection::ConflictingVote
            } else {
                Rejection::DigestMismatch
            };
            assert_eq!(
                rejected.iter().map(|r| r.reason).collect::<Vec<_>>(),
                vec![expected],
                "{case}"
            );

            // It still orders d: the prepares it lacks and the commits arrive, and it executes a.
            let mut executed = 0;
            let mut votes = Vec::new();
            if !prepared {
                votes.push(testkit::prepare(3, 0, 1, da));
            }
            votes.extend([testkit::commit(2, 0, 1, da), testkit::commit(3, 0, 1, da)]);
            for vote in votes {
                let (rejected, signed, n) =
                    step_and_persist(&forge, &mut recovered, &mut storage, vote);
                assert!(rejected.is_empty(), "{case}: {rejected:?}");
                assert!(signed.iter().all(|r| r.digest == da), "{case}: {signed:?}");
                executed += n;
            }
            assert_eq!(executed, 1, "{case}");
            assert_eq!(recovered.status().last_executed, SeqNum(1), "{case}");
            let signed_for_1: BTreeSet<Digest> = storage
                .signed_records()
                .filter(|r| r.seq == SeqNum(1))
                .map(|r| r.digest)
                .collect();
            assert_eq!(signed_for_1, BTreeSet::from([da]), "{case}");
        }

        // Amnesia: restarted with nothing, the backup prepares the other digest.
        let (mut amnesiac, _) =
            recover_with(&forge.config, 1, None, &[]).expect("an empty log recovers");
        let actions = amnesiac.step(
            Time::ZERO,
            Input::Message(forge.verified(equivocation.clone())),
        );
        let (rejected, signed) = inspect(&actions);
        assert!(rejected.is_empty(), "{case}: {rejected:?}");
        assert_eq!(
            signed
                .iter()
                .map(|r| (r.kind, r.view, r.seq, r.digest))
                .collect::<Vec<_>>(),
            vec![(MessageKind::Prepare, View(0), SeqNum(1), db)],
            "{case}: without its records the backup signs a conflicting prepare"
        );
    }
}

/// Section 4.4 across a crash: a backup that prepared a batch keeps its prepared certificate, so
/// the VIEW-CHANGE it sends after restarting (its request timer fires) carries the certificate:
/// it is byte for byte the VIEW-CHANGE the replica would have sent had it not crashed. Restarted
/// with no records, its VIEW-CHANGE would carry no certificate, and a new primary could then
/// assign the sequence number to another batch.
#[test]
fn a_recovered_backup_keeps_its_prepared_certificate_for_the_view_change() {
    let forge = Forge::new(testkit::config(1, 3));
    let a = [forge.request(1, 1, b"pay alice")];
    let da = forge.batch_digest(&a);
    let mut backup = Replica::new(
        forge.config.clone(),
        ReplicaId(1),
        replica_key(1),
        LogService::default(),
    )
    .expect("valid replica");
    let mut storage = MemoryStorage::default();
    for frame in [
        forge.pre_prepare(0, 0, 1, &a),
        testkit::prepare(2, 0, 1, da),
        testkit::prepare(3, 0, 1, da),
    ] {
        let (rejected, _, _) = step_and_persist(&forge, &mut backup, &mut storage, frame);
        assert!(rejected.is_empty(), "{rejected:?}");
    }
    assert_eq!(backup.status().prepared_certificates_held, 1);

    // A client's request reaches the backup, which relays it and starts its timer; the timer
    // fires and the backup moves to view 1.
    let request = forge.request(3, 1, b"never ordered");
    let timeout = Time::ZERO + forge.config.timing.view_change;
    let view_change_of = |replica: &mut Replica<LogService>| -> Bytes {
        let actions = replica.step(Time::ZERO, Input::Message(forge.verified(request.clone())));
        assert!(actions.rejected.is_empty(), "{:?}", actions.rejected);
        assert!(replica.poll_timeout().is_some_and(|t| t <= timeout));
        let actions = replica.step(timeout, Input::Tick);
        let signed: Vec<_> = actions
            .signed_records()
            .filter(|r| r.kind == MessageKind::ViewChange)
            .collect();
        assert_eq!(signed.len(), 1);
        assert_eq!(signed[0].view, View(1));
        signed[0].frame.clone()
    };
    let certificates = |frame: &Bytes| -> Vec<(View, SeqNum, Digest, usize)> {
        match forge.verified(frame.clone()) {
            VerifiedMessage::ViewChange(vc) => vc
                .message()
                .prepared
                .iter()
                .map(|c| {
                    let m = c.pre_prepare.message();
                    (m.view, m.seq, m.digest, c.prepares.len())
                })
                .collect(),
            other => panic!("not a VIEW-CHANGE: {:?}", other.kind()),
        }
    };

    let durable = backup.durable_checkpoint();
    let (mut from_log, _) = recover_with(&forge.config, 1, None, &storage.records).expect("log");
    let (mut from_checkpoint, _) =
        recover_with(&forge.config, 1, Some(&durable), &[]).expect("checkpoint");
    let (mut amnesiac, _) = recover_with(&forge.config, 1, None, &[]).expect("empty");
    let expected = view_change_of(&mut backup);
    assert_eq!(certificates(&expected), vec![(View(0), SeqNum(1), da, 2)]);
    assert_eq!(view_change_of(&mut from_log), expected, "from its log");
    assert_eq!(
        view_change_of(&mut from_checkpoint),
        expected,
        "from its durable checkpoint"
    );
    assert_eq!(certificates(&view_change_of(&mut amnesiac)), vec![]);
}

/// With the `planted-bugs` feature: the planted bug that makes recovery skip the log records is
/// caught by the scenario above (the recovered backup prepares the equivocating pre-prepare).
#[cfg(feature = "planted-bugs")]
#[test]
fn the_planted_recovery_bug_signs_a_conflicting_prepare() {
    use bft_core::planted::{PlantedBug, plant};
    let forge = Forge::new(testkit::config(1, 3));
    let a = [forge.request(1, 1, b"pay alice")];
    let b = [forge.request(2, 1, b"pay bob")];
    let mut backup = Replica::new(
        forge.config.clone(),
        ReplicaId(1),
        replica_key(1),
        LogService::default(),
    )
    .expect("valid replica");
    let mut storage = MemoryStorage::default();
    step_and_persist(
        &forge,
        &mut backup,
        &mut storage,
        forge.pre_prepare(0, 0, 1, &a),
    );
    plant(Some(PlantedBug::RecoverySkipsLog)).expect("feature on");
    let recovered = recover_with(&forge.config, 1, None, &storage.records);
    plant(None).expect("feature on");
    let (mut recovered, _) = recovered.expect("recovers");
    let actions = recovered.step(
        Time::ZERO,
        Input::Message(forge.verified(forge.pre_prepare(0, 0, 1, &b))),
    );
    let (rejected, signed) = inspect(&actions);
    assert!(rejected.is_empty());
    assert_eq!(signed.len(), 1);
    assert_eq!(signed[0].digest, forge.batch_digest(&b));
}

/// Section 4.4 across a crash: with the primary silent, a backup's timer fires, it moves to view 1
/// and signs a VIEW-CHANGE. It crashes and recovers: it is in view 1, waiting for the NEW-VIEW,
/// and when it re-sends its VIEW-CHANGE (after `timing.view_change_resend`) the frame is the one
/// it signed before the crash, byte for byte (a second, different VIEW-CHANGE for the same view
/// would be a conflicting signature). The same holds when it restarts from a durable checkpoint
/// taken while it waits. Back in the cluster, the view change completes and requests complete.
#[test]
fn a_replica_recovered_during_a_view_change_resends_the_same_view_change() {
    let mut cluster = Cluster::with_f(1, 1);
    cluster.silent.insert(ReplicaId(0));
    cluster.submit(ClientId(1), b"first".to_vec());
    let sent_view_change = |c: &Cluster| {
        c.storage[2]
            .signed_records()
            .any(|r| r.kind == MessageKind::ViewChange)
    };
    assert!(cluster.run_until(Duration::from_secs(60), sent_view_change));
    let signed: Vec<_> = cluster.storage[2]
        .signed_records()
        .filter(|r| r.kind == MessageKind::ViewChange)
        .cloned()
        .collect();
    assert_eq!(signed.len(), 1);
    let original = signed[0].frame.clone();
    assert_eq!(signed[0].view, View(1));
    let live = cluster.replicas[2].status();
    assert_eq!((live.view, live.phase), (View(1), Phase::ViewChanging));

    let resend = cluster.config.timing.view_change_resend;
    let checkpoint = cluster.replicas[2].durable_checkpoint();
    let from_log = recover_from_storage(&cluster, 2);
    let (from_checkpoint, _) =
        recover_with(&cluster.config, 2, Some(&checkpoint), &[]).expect("recovers");
    let resent_at = cluster.now + resend;
    for (source, mut recovered) in [("log", from_log), ("checkpoint", from_checkpoint)] {
        let status = recovered.status();
        assert_eq!(Restored::of(&status), Restored::of(&live), "{source}");
        assert_eq!(status.view_changes_held, 1, "{source}");
        assert!(
            recovered.poll_timeout().is_some_and(|t| t <= resent_at),
            "{source}: a re-send is due"
        );
        let actions = recovered.step(resent_at, Input::Tick);
        assert_eq!(actions.signed_records().count(), 0, "{source}");
        let view_changes: Vec<&Bytes> = actions
            .pending_sends()
            .iter()
            .filter(|o| {
                matches!(
                    cluster.verifier.verify(o.frame.clone()),
                    Ok(VerifiedMessage::ViewChange(_))
                )
            })
            .map(|o| &o.frame)
            .collect();
        assert_eq!(
            view_changes,
            vec![&original],
            "{source}: the VIEW-CHANGE signed before the crash is re-sent as it was"
        );
    }

    // Without its records the replica is back in view 0, in the normal case.
    let (amnesiac, _) = recover_with(&cluster.config, 2, None, &[]).expect("recovers");
    assert_eq!(
        (amnesiac.status().view, amnesiac.status().phase),
        (View(0), Phase::Normal)
    );

    // Back in the cluster: the view change completes (replica 1 is the primary of view 1).
    cluster
        .network
        .retain(|e| e.to != Node::Replica(ReplicaId(2)));
    cluster.replicas[2] = recover_from_storage(&cluster, 2);
    assert!(cluster.run_until(Duration::from_secs(600), |c| c.completed.len() == 1));
    assert_eq!(
        cluster.run_closed_loop(&ids(1), 5, Duration::from_secs(600), op),
        5
    );
    for r in 1..4 {
        let status = cluster.replicas[r].status();
        assert_eq!((status.view, status.phase), (View(1), Phase::Normal), "{r}");
    }
    assert_eq!(cluster.assert_agreement(&set(&[0])), 6);
    // It never signed a second VIEW-CHANGE for view 1.
    let for_view_1: BTreeSet<&Bytes> = cluster.storage[2]
        .signed_records()
        .filter(|r| r.kind == MessageKind::ViewChange && r.view == View(1))
        .map(|r| &r.frame)
        .collect();
    assert!(for_view_1.iter().all(|f| **f == original), "{for_view_1:?}");
}

/// The primary crashes just after it assigned a sequence number (its signed pre-prepare is
/// persisted, the batch not yet committed) and recovers: it restores the last sequence number it
/// assigned, so the next request it proposes gets a higher one, and it never signs two batches
/// for one sequence number. Without its records it would assign that sequence number again, to
/// another batch.
#[test]
fn a_recovered_primary_does_not_reuse_a_sequence_number() {
    let mut cluster = Cluster::new(small_checkpoints(2));
    let verifier = cluster.verifier.clone();
    // Every pre-prepare the primary sends, by sequence number.
    let proposed: Rc<RefCell<BTreeMap<SeqNum, BTreeSet<Digest>>>> = Rc::default();
    let seen = proposed.clone();
    cluster.filter = Some(Box::new(move |e: &mut Envelope| {
        if e.from == Node::Replica(ReplicaId(0))
            && let Ok(VerifiedMessage::PrePrepare(p)) = verifier.verify(e.frame.clone())
        {
            let m = p.message();
            seen.borrow_mut().entry(m.seq).or_default().insert(m.digest);
        }
        true
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 5, Duration::from_secs(60), op),
        10
    );
    cluster.submit(ClientId(1), b"assigned at the crash".to_vec());
    let assigned_last = |c: &Cluster| {
        c.storage[0]
            .records
            .last()
            .and_then(Record::as_signed)
            .is_some_and(|r| r.kind == MessageKind::PrePrepare)
    };
    assert!(cluster.run_until(Duration::from_secs(60), assigned_last));
    let live = cluster.replicas[0].status();
    let last_signed = cluster.storage[0]
        .records
        .last()
        .and_then(Record::as_signed)
        .expect("a signed pre-prepare")
        .clone();
    assert_eq!(live.last_assigned, last_signed.seq);
    assert!(live.last_executed < live.last_assigned, "{live:?}");

    // The crash.
    cluster
        .network
        .retain(|e| e.to != Node::Replica(ReplicaId(0)));
    let (checkpoint, records) = parts(&cluster.storage[0]);
    let recovered = recover_from_storage(&cluster, 0);
    assert_eq!(Restored::of(&recovered.status()), Restored::of(&live));
    cluster.replicas[0] = recovered;

    // Deliver the pre-prepare of the batch in flight, so the filter sees it.
    assert!(cluster.run_until(Duration::from_secs(600), |c| c.completed.len() == 11));
    let before: BTreeMap<SeqNum, BTreeSet<Digest>> = proposed.borrow().clone();
    assert_eq!(before.keys().max(), Some(&last_signed.seq));
    cluster.submit(ClientId(2), b"proposed after the restart".to_vec());
    assert!(cluster.run_until(Duration::from_secs(600), |c| c.completed.len() == 12));
    let after = proposed.borrow().clone();
    let new: Vec<SeqNum> = after
        .keys()
        .filter(|seq| !before.contains_key(seq))
        .copied()
        .collect();
    assert!(!new.is_empty());
    assert!(new.iter().all(|seq| *seq > last_signed.seq), "{new:?}");
    for (seq, digests) in &after {
        assert_eq!(digests.len(), 1, "two batches signed for {seq:?}");
    }
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 12);

    // Without the records after its checkpoint, the primary would reuse a sequence number it had
    // assigned, for another batch.
    assert!(!records.is_empty());
    let (mut amnesiac, _) =
        recover_with(&cluster.config, 0, checkpoint.as_ref(), &[]).expect("recovers");
    let request = Request {
        timestamp: 1_000,
        operation: b"another batch".to_vec(),
    }
    .sign(&client_key(2), CLUSTER_ID, Principal::Client(ClientId(2)));
    let request = cluster.verifier.verify(request).expect("valid request");
    let actions = amnesiac.step(cluster.now, Input::Message(request));
    let reused: Vec<_> = actions
        .signed_records()
        .filter(|r| r.kind == MessageKind::PrePrepare)
        .map(|r| (r.seq, r.digest))
        .collect();
    assert_eq!(reused.len(), 1);
    let (seq, digest) = reused[0];
    assert!(seq <= last_signed.seq, "{seq:?}");
    assert!(!before[&seq].contains(&digest));
}

// ---------------------------------------------------------------------------------------------
// Storage that does not verify
// ---------------------------------------------------------------------------------------------

fn invalid_checkpoint(
    result: Result<(Replica<LogService>, RecoveryReport), RecoveryError>,
) -> (SeqNum, String) {
    match result {
        Err(RecoveryError::InvalidCheckpoint { seq, reason }) => (seq, reason),
        Err(other) => panic!("expected InvalidCheckpoint, got {other:?}"),
        Ok((replica, _)) => panic!("recovered: {:?}", replica.status()),
    }
}

fn invalid_record(
    result: Result<(Replica<LogService>, RecoveryReport), RecoveryError>,
) -> (&'static str, usize, String) {
    match result {
        Err(RecoveryError::InvalidRecord {
            place,
            index,
            reason,
        }) => (place, index, reason),
        Err(other) => panic!("expected InvalidRecord, got {other:?}"),
        Ok((replica, _)) => panic!("recovered: {:?}", replica.status()),
    }
}

/// A checkpoint is restored only with 2f+1 valid CHECKPOINT messages from distinct replicas for
/// the digest of the stored state: altered state bytes, a proof with too few (or repeated, or
/// forged, or non-matching) votes, or a frame of another kind in the proof are refused with
/// `InvalidCheckpoint`; a certified state that does not decode, or that the service cannot
/// restore, is refused the same way rather than panicking. A proof rebuilt by hand from three
/// valid votes is accepted: the refusals come from the alterations.
#[test]
fn a_checkpoint_that_does_not_verify_is_refused() {
    let cluster = cluster_with_checkpoints();
    let config = cluster.config.clone();
    let saved = cluster.storage[1].checkpoint.clone().expect("saved");
    let stable = saved.stable.clone().expect("stable");
    let seq = stable.seq;
    let digest = cluster.replicas[1].checkpoint_digest(seq).expect("held");
    let vote = |signer: u32, seq: SeqNum, digest: Digest| {
        testkit::signed_by_replica(signer, &Checkpoint { seq, digest })
    };
    let with = |edit: &dyn Fn(&mut DurableCheckpoint)| {
        let mut checkpoint = saved.clone();
        edit(&mut checkpoint);
        recover_with(&config, 1, Some(&checkpoint), &[])
    };

    // The unaltered checkpoint, and one with a proof rebuilt from valid votes, recover.
    assert!(with(&|_| {}).is_ok());
    let rebuilt = with(&|c| {
        c.stable.as_mut().unwrap().proof = (1..4).map(|r| vote(r, seq, digest)).collect();
    });
    assert_eq!(
        rebuilt.expect("a valid proof").0.status().low_watermark,
        seq
    );

    type Edit = Box<dyn Fn(&mut DurableCheckpoint)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "state byte flipped",
            Box::new(move |c| {
                let stable = c.stable.as_mut().unwrap();
                let mut state = stable.state.to_vec();
                let last = state.len() - 1;
                state[last] ^= 0x01;
                stable.state = Bytes::from(state);
            }),
        ),
        (
            "state truncated",
            Box::new(move |c| {
                let stable = c.stable.as_mut().unwrap();
                stable.state = stable.state.slice(..stable.state.len() - 1);
            }),
        ),
        (
            "2f votes",
            Box::new(move |c| c.stable.as_mut().unwrap().proof.truncate(2)),
        ),
        (
            "one vote three times",
            Box::new(move |c| {
                let proof = &mut c.stable.as_mut().unwrap().proof;
                *proof = vec![proof[0].clone(); 3];
            }),
        ),
        (
            "a vote for another digest",
            Box::new(move |c| {
                c.stable.as_mut().unwrap().proof = vec![
                    vote(0, seq, digest),
                    vote(2, seq, digest),
                    vote(3, seq, Digest([9; 32])),
                ];
            }),
        ),
        (
            "a vote for another sequence number",
            Box::new(move |c| {
                c.stable.as_mut().unwrap().proof = vec![
                    vote(0, seq, digest),
                    vote(2, seq, digest),
                    vote(3, SeqNum(seq.0 + 4), digest),
                ];
            }),
        ),
        (
            "the checkpoint moved to another sequence number",
            Box::new(move |c| c.stable.as_mut().unwrap().seq = SeqNum(seq.0 - 4)),
        ),
        (
            "a forged vote",
            Box::new(move |c| {
                let proof = &mut c.stable.as_mut().unwrap().proof;
                proof[0] = flip_signature(&proof[0]);
            }),
        ),
        (
            "a prepare in the proof",
            Box::new(move |c| {
                let proof = &mut c.stable.as_mut().unwrap().proof;
                proof[0] = testkit::prepare(0, 0, seq.0, digest);
            }),
        ),
        (
            "garbage in the proof",
            Box::new(move |c| c.stable.as_mut().unwrap().proof[0] = Bytes::from_static(b"garbage")),
        ),
        (
            "no proof",
            Box::new(move |c| c.stable.as_mut().unwrap().proof.clear()),
        ),
    ];
    for (case, edit) in cases {
        let (at, reason) = invalid_checkpoint(with(&*edit));
        let expected = if case == "the checkpoint moved to another sequence number" {
            SeqNum(seq.0 - 4)
        } else {
            seq
        };
        assert_eq!(at, expected, "{case}: {reason}");
    }

    // Certified (by votes signed with the test keys) but not a checkpoint state this replica can
    // restore: bytes that do not decode, a state of another sequence number, a service snapshot
    // the service refuses.
    let certified = |state: Vec<u8>| {
        let state = Bytes::from(state);
        let chunk_bytes = config.limits.state_chunk_bytes;
        let digest = checkpoint_digest(&StateManifest {
            seq,
            total_bytes: state.len() as u64,
            chunk_digests: state.chunks(chunk_bytes).map(sha256).collect(),
        });
        let mut checkpoint = saved.clone();
        let stable = checkpoint.stable.as_mut().unwrap();
        stable.state = state;
        stable.proof = (0..3).map(|r| vote(r, seq, digest)).collect();
        checkpoint.records.clear();
        recover_with(&config, 1, Some(&checkpoint), &[])
    };
    type State = (SeqNum, ByteBuf, Vec<(ClientId, u64, Outcome)>);
    let states: [(&str, Vec<u8>); 3] = [
        ("undecodable", b"not a checkpoint state".to_vec()),
        (
            "another sequence number",
            codec::encode::<State>(&(SeqNum(seq.0 + 4), ByteBuf::from(vec![0; 40]), Vec::new())),
        ),
        (
            "a snapshot the service refuses",
            codec::encode::<State>(&(seq, ByteBuf::from(vec![0; 3]), Vec::new())),
        ),
    ];
    for (case, state) in states {
        let (at, reason) = invalid_checkpoint(certified(state));
        assert_eq!(at, seq, "{case}: {reason}");
    }
    // The same shape with a snapshot the service accepts is restored: the refusals above come
    // from the contents.
    let fine = certified(codec::encode::<State>(&(
        seq,
        ByteBuf::from(vec![0; 40]),
        Vec::new(),
    )));
    assert_eq!(fine.expect("restorable").0.status().last_executed, seq);
}

/// A record whose frame does not verify (a flipped signature byte, another cluster's frame,
/// garbage, a certificate with the wrong kinds of frames) is refused with `InvalidRecord`, naming
/// where it was (the checkpoint's records or the log) and its index; a wrong key or id is a
/// configuration error. Nothing panics.
#[test]
fn a_record_that_does_not_verify_is_refused_with_its_place() {
    // A backup mid-flight: its checkpoint carries commit certificates, and its log holds frames
    // from the others and its own signed votes.
    let mut cluster = Cluster::new(small_checkpoints(3));
    let mid_flight = |c: &Cluster, i: usize| {
        let storage = &c.storage[i];
        let committed = storage.checkpoint.as_ref().is_some_and(|c| {
            c.records
                .iter()
                .any(|r| matches!(r, Record::Committed { .. }))
        });
        committed
            && storage
                .records
                .iter()
                .any(|r| matches!(r, Record::Frame(_)))
            && storage.signed_records().next().is_some()
    };
    let mut chosen = None;
    step_closed_loop(&mut cluster, &ids(3), 8, |c, _| {
        chosen = (1..4).find(|&i| mid_flight(c, i));
        chosen.is_none()
    });
    let id = chosen.expect("a backup held such a storage") as u32;
    let config = cluster.config.clone();
    let (checkpoint, records) = parts(&cluster.storage[id as usize]);
    let checkpoint = checkpoint.expect("saved");
    assert!(recover_with(&config, id, Some(&checkpoint), &records).is_ok());

    // A flipped signature byte, at each position of the log that holds a frame or a signed
    // record. Another replica's prepare or commit is the exception: its channel authenticated
    // it, and the log stands for that channel (`Verifier::verify_recorded`; see
    // replicas_recover_from_logs_that_hold_votes_only_their_channel_authenticated).
    let peer_vote = |record: &Record| match record {
        Record::Frame(frame) => codec::decode_frame(frame, usize::MAX).is_ok_and(|f| {
            matches!(f.header.kind, MessageKind::Prepare | MessageKind::Commit)
                && f.header.sender != Principal::Replica(ReplicaId(id))
        }),
        _ => false,
    };
    let mut tried = 0;
    for index in 0..records.len() {
        let mut altered = records.clone();
        match &mut altered[index] {
            Record::Frame(frame) => *frame = flip_signature(frame),
            Record::Signed(signed) => signed.frame = flip_signature(&signed.frame),
            _ => continue,
        }
        let result = recover_with(&config, id, Some(&checkpoint), &altered);
        if peer_vote(&records[index]) {
            assert!(result.is_ok(), "a peer's vote at {index}");
            continue;
        }
        let (place, at, reason) = invalid_record(result);
        assert_eq!((place, at), ("log", index), "{reason}");
        tried += 1;
    }
    assert!(tried >= 2);

    // The same in the checkpoint's records, whatever the kind of record.
    for index in 0..checkpoint.records.len() {
        let mut altered = checkpoint.clone();
        match &mut altered.records[index] {
            Record::Frame(frame) => *frame = flip_signature(frame),
            Record::Signed(signed) => signed.frame = flip_signature(&signed.frame),
            Record::Prepared { pre_prepare, .. } | Record::Committed { pre_prepare, .. } => {
                *pre_prepare = flip_signature(pre_prepare)
            }
        }
        let result = recover_with(&config, id, Some(&altered), &records);
        if peer_vote(&checkpoint.records[index]) {
            assert!(result.is_ok(), "a peer's vote at {index}");
            continue;
        }
        let (place, at, reason) = invalid_record(result);
        assert_eq!((place, at), ("checkpoint", index), "{reason}");
    }
    // A prepared certificate is relayed in VIEW-CHANGEs: each of its prepares, another
    // replica's included, must verify by its signature, wherever it is read back from.
    let mut certificates = 0;
    for index in 0..checkpoint.records.len() {
        let mut altered = checkpoint.clone();
        let Record::Prepared { prepares, .. } = &mut altered.records[index] else {
            continue;
        };
        for at in 0..prepares.len() {
            let mut one = altered.clone();
            if let Record::Prepared { prepares, .. } = &mut one.records[index] {
                prepares[at] = flip_signature(&prepares[at]);
            }
            let (place, found, reason) =
                invalid_record(recover_with(&config, id, Some(&one), &records));
            assert_eq!((place, found), ("checkpoint", index), "{reason}");
        }
        certificates += 1;
    }
    assert!(
        certificates >= 1,
        "the checkpoint carries a prepared certificate"
    );

    // Frames that are not this cluster's, inserted in the middle of the log.
    let middle = records.len() / 2;
    let prepare = Prepare {
        view: View(0),
        seq: SeqNum(1),
        digest: Digest([9; 32]),
    };
    // A checkpoint vote is checked by its signature even from the log (only prepares and commits
    // of other replicas are taken as their channel took them).
    let vote = Checkpoint {
        seq: SeqNum(4),
        digest: Digest([9; 32]),
    };
    let foreign: Vec<(&str, Record)> = vec![
        (
            "another cluster's prepare",
            Record::Frame(prepare.sign(
                &replica_key(2),
                CLUSTER_ID + 1,
                Principal::Replica(ReplicaId(2)),
            )),
        ),
        (
            "a checkpoint vote signed with another replica's key",
            Record::Frame(vote.sign(
                &replica_key(3),
                CLUSTER_ID,
                Principal::Replica(ReplicaId(2)),
            )),
        ),
        ("garbage", Record::Frame(Bytes::from_static(b"\x00garbage"))),
        ("an empty frame", Record::Frame(Bytes::new())),
        (
            "a prepared certificate of garbage",
            Record::Prepared {
                pre_prepare: Bytes::from_static(b"garbage"),
                prepares: Vec::new(),
            },
        ),
        (
            "a prepared certificate whose pre-prepare is a prepare",
            Record::Prepared {
                pre_prepare: testkit::prepare(2, 0, 1, Digest([9; 32])),
                prepares: Vec::new(),
            },
        ),
        (
            "a commit certificate whose pre-prepare is a commit",
            Record::Committed {
                pre_prepare: testkit::commit(2, 0, 1, Digest([9; 32])),
                commits: Vec::new(),
            },
        ),
    ];
    for (case, record) in foreign {
        let mut altered = records.clone();
        altered.insert(middle, record);
        let (place, at, reason) =
            invalid_record(recover_with(&config, id, Some(&checkpoint), &altered));
        assert_eq!((place, at), ("log", middle), "{case}: {reason}");
    }

    // A commit certificate with a prepare among its commits, first in an empty log.
    let Some(Record::Committed {
        pre_prepare,
        mut commits,
    }) = checkpoint
        .records
        .iter()
        .find(|r| matches!(r, Record::Committed { .. }))
        .cloned()
    else {
        unreachable!("the checkpoint carries a commit certificate")
    };
    assert!(
        recover_with(
            &config,
            1,
            None,
            &[Record::Committed {
                pre_prepare: pre_prepare.clone(),
                commits: commits.clone(),
            }]
        )
        .is_ok()
    );
    commits[0] = testkit::prepare(2, 0, 1, Digest([9; 32]));
    let record = Record::Committed {
        pre_prepare,
        commits,
    };
    let (place, at, _) = invalid_record(recover_with(&config, id, None, &[record]));
    assert_eq!((place, at), ("log", 0));

    // Another replica's key, or an id outside the cluster: a configuration error.
    let wrong_key = Replica::recover(
        config.clone(),
        ReplicaId(id),
        replica_key((id + 1) % 4),
        LogService::default(),
        Some(&checkpoint),
        &records,
    );
    assert!(matches!(wrong_key, Err(RecoveryError::Config(_))));
    let outside = Replica::recover(
        config.clone(),
        ReplicaId(4),
        replica_key(4),
        LogService::default(),
        None,
        &[],
    );
    assert!(matches!(outside, Err(RecoveryError::Config(_))));
}

/// A crash between two persists leaves a log cut after any record: at points all along a run,
/// every prefix of each replica's log recovers without error, replays every record, and the
/// longer the prefix, the further the recovered replica has executed (never below its
/// checkpoint), up to where the live replica is.
#[test]
fn every_prefix_of_a_valid_log_recovers() {
    let mut cluster = Cluster::new(small_checkpoints(3));
    let mut longest = 0;
    step_closed_loop(&mut cluster, &ids(3), 8, |cluster, step| {
        if step % 20 != 0 {
            return true;
        }
        for id in 0..4u32 {
            let (checkpoint, records) = parts(&cluster.storage[id as usize]);
            longest = longest.max(records.len());
            let mut executed = SeqNum(0);
            for end in 0..=records.len() {
                let context = format!("replica {id} after {step} steps, {end} records");
                let result =
                    recover_with(&cluster.config, id, checkpoint.as_ref(), &records[..end]);
                let (replica, report) = result.unwrap_or_else(|e| panic!("{context}: {e}"));
                let replayed = checkpoint.as_ref().map_or(0, |c| c.records.len()) + end;
                assert_eq!(
                    report.records_applied + report.records_ignored,
                    replayed,
                    "{context}"
                );
                let status = replica.status();
                assert!(status.last_executed >= report.stable_seq, "{context}");
                assert!(status.last_executed >= executed, "{context}");
                executed = status.last_executed;
            }
            let live = cluster.replicas[id as usize].status();
            assert_eq!(
                executed, live.last_executed,
                "replica {id} after {step} steps"
            );
        }
        true
    });
    assert!(longest >= 20, "{longest}");
}

// ---------------------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------------------

/// Records and checkpoints a real run produced (with checkpoints, then a view change) decode to
/// what was encoded, and recovery from the decoded forms rebuilds the same replica; cut or
/// garbage bytes are refused by `decode`.
#[test]
fn records_and_checkpoints_round_trip_through_their_encodings() {
    let mut cluster = cluster_with_checkpoints();
    let mut checkpoints = Vec::new();
    let mut records = Vec::new();
    let snapshot =
        |cluster: &Cluster, checkpoints: &mut Vec<DurableCheckpoint>, records: &mut Vec<Record>| {
            for (i, storage) in cluster.storage.iter().enumerate() {
                checkpoints.extend(storage.checkpoint.clone());
                checkpoints.push(cluster.replicas[i].durable_checkpoint());
                records.extend(storage.records.iter().cloned());
            }
        };
    snapshot(&cluster, &mut checkpoints, &mut records);
    // A view change too, so the records include VIEW-CHANGE and NEW-VIEW frames (storage is
    // looked at right after it, before a checkpoint supersedes them, and again later).
    cluster.silent.insert(ReplicaId(0));
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 1, Duration::from_secs(600), op),
        4
    );
    assert_eq!(cluster.replicas[1].view(), View(1));
    snapshot(&cluster, &mut checkpoints, &mut records);
    assert_eq!(
        cluster.run_closed_loop(&ids(4), 3, Duration::from_secs(600), op),
        12
    );
    snapshot(&cluster, &mut checkpoints, &mut records);

    let mut kinds = BTreeSet::new();
    for checkpoint in &checkpoints {
        records.extend(checkpoint.records.iter().cloned());
        let bytes = checkpoint.encode();
        assert_eq!(DurableCheckpoint::decode(&bytes).as_ref(), Ok(checkpoint));
        assert!(DurableCheckpoint::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(DurableCheckpoint::decode(&longer).is_err());
    }
    for record in &records {
        kinds.insert(match record {
            Record::Signed(signed) => format!("signed {:?}", signed.kind),
            Record::Frame(frame) => format!(
                "frame {:?}",
                codec::decode_frame(frame, usize::MAX)
                    .expect("a frame")
                    .header
                    .kind
            ),
            Record::Prepared { .. } => "prepared".to_string(),
            Record::Committed { .. } => "committed".to_string(),
        });
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes).as_ref(), Ok(record));
        assert!(Record::decode(&bytes[..bytes.len() - 1]).is_err());
    }
    assert!(Record::decode(b"").is_err());
    assert!(Record::decode(b"\xffgarbage").is_err());
    assert!(DurableCheckpoint::decode(b"\xffgarbage").is_err());
    for expected in [
        "signed PrePrepare",
        "signed Prepare",
        "signed Commit",
        "signed Checkpoint",
        "signed ViewChange",
        "signed NewView",
        "frame PrePrepare",
        "frame Prepare",
        "frame Commit",
        "frame NewView",
        "prepared",
        "committed",
    ] {
        assert!(
            kinds.contains(expected),
            "no {expected} record in {kinds:?}"
        );
    }

    // Recovery from the decoded forms rebuilds each replica as well as the originals do.
    for id in 1..4u32 {
        let storage = &cluster.storage[id as usize];
        let checkpoint = storage
            .checkpoint
            .as_ref()
            .map(|c| DurableCheckpoint::decode(&c.encode()).expect("decodes"));
        let decoded: Vec<Record> = storage
            .records
            .iter()
            .map(|r| Record::decode(&r.encode()).expect("decodes"))
            .collect();
        let (replica, _) = recover_with(&cluster.config, id, checkpoint.as_ref(), &decoded)
            .unwrap_or_else(|e| panic!("replica {id}: {e}"));
        assert_eq!(
            Restored::of(&replica.status()),
            Restored::of(&cluster.replicas[id as usize].status()),
            "replica {id}"
        );
    }
    // A log holds the replica's own signed records and frames it accepted from the others.
    for (id, storage) in cluster.storage.iter().enumerate() {
        let me = Principal::Replica(ReplicaId(id as u32));
        for record in &storage.records {
            match record {
                Record::Signed(signed) => assert_eq!(frame_sender(&signed.frame), me),
                Record::Frame(frame) => assert_ne!(frame_sender(frame), me),
                other => panic!("only checkpoints hold certificates: {other:?}"),
            }
        }
    }
}
