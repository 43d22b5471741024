//! Fetching committed batches (TOCS 2002 section 6): what follows a restored checkpoint, and
//! batches whose messages a replica missed, each proven by a commit certificate.

use bft_core::messages::{
    Commit, CommittedBatchPayload, PrePrepareHeader, PrePreparePayload, Prepare, Request,
    WireMessage, batch_digest,
};
use bft_core::testkit::{self, Cluster, Node};
use bft_core::{
    ClientId, Input, MessageKind, Principal, Rejection, ReplicaId, SeqNum, Service, Time,
    VerifiedMessage, VerifyError, View,
};
use serde_bytes::ByteBuf;
use std::collections::BTreeSet;
use std::time::Duration;

fn op(client: ClientId, i: usize) -> Vec<u8> {
    format!("incr {client} {i}").into_bytes()
}

fn ids(n: u64) -> Vec<ClientId> {
    (1..=n).map(ClientId).collect()
}

/// Runs until the network is empty and no timer is pending.
fn settle(cluster: &mut Cluster) {
    assert!(
        cluster.run_until(Duration::from_secs(3600), |c| c.network.is_empty()
            && c.next_deadline().is_none())
    );
}

/// Replica `id` installed exactly one committed batch fetched from a peer, without state transfer.
fn assert_repaired_by_one_fetch(cluster: &Cluster, id: ReplicaId) {
    let repaired = &cluster.replicas[id.0 as usize];
    assert_eq!(
        repaired.metrics().committed_batches_installed,
        1,
        "{:?}",
        repaired.metrics()
    );
    assert_eq!(repaired.metrics().state_transfers_started, 0);
}

/// TOCS 2002 section 6: after restoring a checkpoint, a replica fetches the committed batches that
/// follow it, so once the load stops it has executed exactly what the others executed and holds
/// the same service state, not merely the checkpoint's.
#[test]
fn a_restored_replica_fetches_what_follows_the_checkpoint() {
    let mut config = testkit::config(1, 3);
    config.limits.checkpoint_interval = 16;
    config.limits.window = 32;
    let mut cluster = Cluster::new(config);
    cluster.silent.insert(ReplicaId(3));
    assert_eq!(
        cluster.run_closed_loop(&ids(3), 40, Duration::from_secs(600), op),
        120
    );
    cluster.silent.clear();
    assert_eq!(
        cluster.run_closed_loop(&ids(3), 15, Duration::from_secs(600), op),
        45
    );
    settle(&mut cluster);
    let lagging = &cluster.replicas[3];
    assert!(lagging.metrics().state_transfers_completed >= 1);
    assert!(
        lagging.metrics().committed_batches_installed >= 1,
        "{:?}",
        lagging.metrics()
    );
    let reference = &cluster.replicas[0];
    assert_eq!(
        lagging.status().last_executed,
        reference.status().last_executed
    );
    assert_eq!(
        lagging.service().state_digest(),
        reference.service().state_digest()
    );
}

/// A replica that lost every message of one batch (here, everything about sequence number 5)
/// notices the gap when later batches commit, fetches the missing batch with its commit
/// certificate from a peer, and executes everything in order, without state transfer.
#[test]
fn a_replica_that_missed_a_batch_fetches_it_with_its_certificate() {
    let mut cluster = Cluster::with_f(1, 2);
    let verifier = cluster.verifier.clone();
    cluster.filter = Some(Box::new(move |envelope| {
        if envelope.to != Node::Replica(ReplicaId(2)) {
            return true;
        }
        let seq = match verifier.verify(envelope.frame.clone()) {
            Ok(VerifiedMessage::PrePrepare(m)) => Some(m.message().seq),
            Ok(VerifiedMessage::Prepare(m)) => Some(m.message().seq),
            Ok(VerifiedMessage::Commit(m)) => Some(m.message().seq),
            _ => None,
        };
        seq != Some(SeqNum(5))
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 20, Duration::from_secs(600), op),
        40
    );
    settle(&mut cluster);
    assert_repaired_by_one_fetch(&cluster, ReplicaId(2));
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 40);
}

/// Sections 4.2 and 5.2 (commits authenticated by their channel) with catch-up (TOCS 2002
/// section 6): replica 3 signs every commit badly, as a Byzantine replica may, and replica 2
/// misses every commit for sequence number 5. The others commit on replica 3's commits, which
/// their channels authenticated, and no one refuses a frame. Replica 2 then fetches batch 5 from
/// replica 0 or 1 (replica 3 does not answer): the certificate it gets leaves replica 3's commit
/// out for replica 2's own (which arrived after the batch committed there), so it verifies, and
/// replica 2 installs the batch without a state transfer.
#[test]
fn a_badly_signed_commit_is_never_relayed_in_a_certificate() {
    let mut cluster = Cluster::with_f(1, 2);
    cluster.filter = Some(Box::new(move |envelope| {
        let Ok(decoded) = bft_core::codec::decode_frame(&envelope.frame, usize::MAX) else {
            return true;
        };
        let (kind, sender) = (decoded.header.kind, decoded.header.sender);
        let seq = (kind == MessageKind::Commit)
            .then(|| bft_core::codec::decode::<Commit>(decoded.payload).ok())
            .flatten()
            .map(|commit| commit.seq);
        if envelope.to == Node::Replica(ReplicaId(2)) && seq == Some(SeqNum(5)) {
            return false;
        }
        if envelope.to == Node::Replica(ReplicaId(3)) && kind == MessageKind::FetchCommitted {
            return false;
        }
        if kind == MessageKind::Commit && sender == Principal::Replica(ReplicaId(3)) {
            envelope.frame = testkit::flip_signature(&envelope.frame);
        }
        true
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 20, Duration::from_secs(600), op),
        40
    );
    settle(&mut cluster);
    assert!(
        cluster.verify_failures.is_empty(),
        "{:?}",
        cluster.verify_failures
    );
    assert_repaired_by_one_fetch(&cluster, ReplicaId(2));
    let served: u64 = (0..2)
        .map(|i| cluster.replicas[i].metrics().committed_batches_served)
        .sum();
    assert!(served >= 1);
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 40);
}

/// Commits count toward committed-local only once their signatures are checked (sections 4.2
/// and 5.2 with catch-up, TOCS 2002 section 6): replica 3 signs every commit badly, and replica 2
/// loses the first three frames about sequence number 5 (its pre-prepare and prepares), so it
/// sends no commit for it; replica 3 also sends no checkpoint vote, view change or state. Had
/// replicas 0 and 1 committed on replica 3's commit (its channel vouches for its sender, not for
/// its signature), they would hold certificates they cannot relay, replica 2 could not fetch
/// batch 5, no checkpoint could become stable, and the cluster would change views over and over.
/// A badly signed commit counts as a missing one: every operation completes in view 0, with no
/// state transfer.
#[test]
fn a_badly_signed_commit_counts_as_a_missing_one() {
    let mut cluster = Cluster::with_f(1, 2);
    let mut lost = 0;
    cluster.filter = Some(Box::new(move |envelope| {
        let Ok(decoded) = bft_core::codec::decode_frame(&envelope.frame, usize::MAX) else {
            return true;
        };
        let (kind, sender) = (decoded.header.kind, decoded.header.sender);
        let seq = match kind {
            MessageKind::PrePrepare => bft_core::codec::decode::<PrePrepareHeader>(decoded.payload)
                .ok()
                .map(|p| p.seq),
            MessageKind::Prepare => bft_core::codec::decode::<Prepare>(decoded.payload)
                .ok()
                .map(|p| p.seq),
            MessageKind::Commit => bft_core::codec::decode::<Commit>(decoded.payload)
                .ok()
                .map(|c| c.seq),
            _ => None,
        };
        if envelope.to == Node::Replica(ReplicaId(2)) && seq == Some(SeqNum(5)) && lost < 3 {
            lost += 1;
            return false;
        }
        if sender == Principal::Replica(ReplicaId(3)) {
            match kind {
                MessageKind::Commit => envelope.frame = testkit::flip_signature(&envelope.frame),
                // It takes part in the normal case only: no checkpoint votes, view changes or
                // state for anyone.
                MessageKind::PrePrepare | MessageKind::Prepare => {}
                _ => return false,
            }
        }
        true
    }));
    assert_eq!(
        cluster.run_closed_loop(&ids(2), 40, Duration::from_secs(600), op),
        80
    );
    settle(&mut cluster);
    assert!(
        cluster.verify_failures.is_empty(),
        "{:?}",
        cluster.verify_failures
    );
    for replica in &cluster.replicas {
        assert_eq!(replica.status().view, View(0), "{:?}", replica.status());
        assert_eq!(replica.metrics().state_transfers_started, 0);
    }
    assert!(
        cluster.replicas[..3]
            .iter()
            .any(|r| r.metrics().votes_with_bad_signatures > 0)
    );
    assert_eq!(cluster.assert_agreement(&BTreeSet::new()), 80);
}

struct Forge {
    cluster: Cluster,
}

impl Forge {
    fn new() -> Forge {
        Forge {
            cluster: Cluster::with_f(1, 1),
        }
    }

    fn cluster_id(&self) -> u64 {
        self.cluster.config.cluster_id
    }

    fn pre_prepare(&self, from: u32, seq: u64) -> (bytes::Bytes, bft_crypto::Digest) {
        let request = Request {
            timestamp: 1,
            operation: b"forged".to_vec(),
        }
        .sign(
            &testkit::client_key(1),
            self.cluster_id(),
            Principal::Client(ClientId(1)),
        );
        let Ok(VerifiedMessage::Request(verified)) = self.cluster.verifier.verify(request.clone())
        else {
            panic!("valid request")
        };
        let digest = batch_digest([verified.digest()].into_iter());
        let payload = PrePreparePayload {
            view: View(0),
            seq: SeqNum(seq),
            digest,
            requests: vec![ByteBuf::from(request.to_vec())],
        };
        let frame = payload.sign(
            &testkit::replica_key(from),
            self.cluster_id(),
            Principal::Replica(ReplicaId(from)),
        );
        (frame, digest)
    }

    fn commit(&self, from: u32, seq: u64, digest: bft_crypto::Digest) -> ByteBuf {
        ByteBuf::from(testkit::commit(from, 0, seq, digest).to_vec())
    }

    fn batch(&self, pre_prepare: bytes::Bytes, commits: Vec<ByteBuf>) -> bytes::Bytes {
        CommittedBatchPayload {
            pre_prepare: ByteBuf::from(pre_prepare.to_vec()),
            commits,
        }
        .sign(
            &testkit::replica_key(2),
            self.cluster_id(),
            Principal::Replica(ReplicaId(2)),
        )
    }

    /// Delivers `frame` to replica 1 and returns the refusal, checking nothing changed.
    fn refused(&mut self, frame: bytes::Bytes) -> Rejection {
        let message = self.cluster.verifier.verify(frame).expect("verifies");
        let replica = &mut self.cluster.replicas[1];
        let before = replica.status();
        let mut actions = replica.step(Time::ZERO, Input::Message(message));
        assert!(actions.is_quiet());
        assert_eq!(replica.status(), before);
        actions.rejected.pop().expect("refused").reason
    }
}

/// A committed batch is installed only with a real certificate: 2f commits are not enough, nor
/// are 2f+1 commits that include a duplicate signer or a different digest, nor a pre-prepare
/// signed by a replica that is not the primary of its view. Each is `InvalidCertificate`, and
/// nothing changes.
#[test]
fn forged_or_under_quorum_commit_certificates_are_refused() {
    let mut forge = Forge::new();
    let (pre_prepare, digest) = forge.pre_prepare(0, 1);
    let other = bft_crypto::Digest([3; 32]);
    let cases = [
        vec![forge.commit(0, 1, digest), forge.commit(2, 1, digest)],
        vec![
            forge.commit(0, 1, digest),
            forge.commit(2, 1, digest),
            forge.commit(2, 1, digest),
        ],
        vec![
            forge.commit(0, 1, digest),
            forge.commit(2, 1, digest),
            forge.commit(3, 1, other),
        ],
        vec![
            forge.commit(0, 1, digest),
            forge.commit(2, 1, digest),
            forge.commit(3, 2, digest),
        ],
    ];
    for commits in cases {
        let frame = forge.batch(pre_prepare.clone(), commits);
        assert_eq!(forge.refused(frame), Rejection::InvalidCertificate);
    }
    let (not_primary, digest) = forge.pre_prepare(3, 1);
    let commits = vec![
        forge.commit(0, 1, digest),
        forge.commit(2, 1, digest),
        forge.commit(3, 1, digest),
    ];
    assert_eq!(
        forge.refused(forge.batch(not_primary, commits)),
        Rejection::InvalidCertificate
    );

    // A valid certificate is installed and executed.
    let commits = vec![
        forge.commit(0, 1, digest),
        forge.commit(2, 1, digest),
        forge.commit(3, 1, digest),
    ];
    let (pre_prepare, digest2) = forge.pre_prepare(0, 1);
    assert_eq!(digest, digest2);
    let message = forge
        .cluster
        .verifier
        .verify(forge.batch(pre_prepare, commits))
        .expect("ok");
    let actions = forge.cluster.replicas[1].step(Time::ZERO, Input::Message(message));
    assert_eq!(actions.executed.len(), 1);
    assert_eq!(forge.cluster.replicas[1].status().last_executed, SeqNum(1));
}

/// Certificates embed votes and pre-prepares only: a certificate inside a certificate (or a
/// request, or a reply) is refused by the verifier before it is decoded, so nesting cannot recurse;
/// a forged embedded commit is refused with its index.
#[test]
fn certificates_embed_only_votes_and_verified_frames() {
    let forge = Forge::new();
    let (pre_prepare, digest) = forge.pre_prepare(0, 1);
    let commits = vec![
        forge.commit(0, 1, digest),
        forge.commit(2, 1, digest),
        forge.commit(3, 1, digest),
    ];
    let inner = forge.batch(pre_prepare.clone(), commits.clone());
    let nested = forge.batch(inner, commits.clone());
    let error = forge.cluster.verifier.verify(nested).unwrap_err();
    assert!(
        matches!(&error, VerifyError::Embedded { index: 0, error } if matches!(**error, VerifyError::UnexpectedEmbeddedKind(bft_core::MessageKind::CommittedBatch))),
        "{error:?}"
    );
    let mut forged = commits.clone();
    let mut bytes = forged[1].to_vec();
    let last = bytes.len() - 2; // the signature's last byte (an empty attachment follows)
    bytes[last] ^= 1;
    forged[1] = ByteBuf::from(bytes);
    let error = forge
        .cluster
        .verifier
        .verify(forge.batch(pre_prepare, forged))
        .unwrap_err();
    assert!(
        matches!(&error, VerifyError::Embedded { index: 2, error } if matches!(**error, VerifyError::BadSignature(_))),
        "{error:?}"
    );
}

/// Untrusted input never panics: a FetchCommitted for the last possible sequence number (whose
/// range end would overflow) is answered with nothing, and changes nothing.
#[test]
fn a_fetch_at_the_end_of_the_sequence_space_is_harmless() {
    let forge = Forge::new();
    let mut cluster = forge.cluster;
    let frame = bft_core::messages::FetchCommitted {
        from: SeqNum(u64::MAX),
    }
    .sign(
        &testkit::replica_key(1),
        7,
        Principal::Replica(ReplicaId(1)),
    );
    let message = cluster.verifier.verify(frame).expect("valid");
    let replica = &mut cluster.replicas[0];
    let before = replica.status();
    let actions = replica.step(Time::ZERO, Input::Message(message));
    assert!(actions.is_quiet());
    assert_eq!(replica.status(), before);
}

/// TOCS 2002 section 4.5.2 (a backup's timer runs while a request it relayed waits): when an
/// older request of the same client executes late (here from a commit certificate), the backup
/// keeps waiting for the newer one it relayed; its timer still fires and starts a view change.
#[test]
fn an_older_request_executing_late_does_not_end_the_wait_for_a_newer_one() {
    let mut forge = Forge::new();
    let (pre_prepare, digest) = forge.pre_prepare(0, 1); // client 1, timestamp 1
    let commits = vec![
        forge.commit(0, 1, digest),
        forge.commit(2, 1, digest),
        forge.commit(3, 1, digest),
    ];
    let batch = forge.batch(pre_prepare, commits);
    let newer = Request {
        timestamp: 2,
        operation: b"newer".to_vec(),
    }
    .sign(&testkit::client_key(1), 7, Principal::Client(ClientId(1)));
    let verifier = forge.cluster.verifier.clone();
    let backup = &mut forge.cluster.replicas[1];
    let actions = backup.step(
        Time::ZERO,
        Input::Message(verifier.verify(newer).expect("valid")),
    );
    assert_eq!(actions.pending_sends().len(), 1, "relayed to the primary");
    let deadline = backup.poll_timeout().expect("the request timer runs");
    let actions = backup.step(
        Time::ZERO,
        Input::Message(verifier.verify(batch).expect("valid")),
    );
    assert_eq!(actions.executed.len(), 1, "the older request executed");
    assert_eq!(
        backup.poll_timeout(),
        Some(deadline),
        "still waiting for the newer request"
    );
    let _ = backup.step(deadline, Input::Tick);
    assert_eq!(backup.status().phase, bft_core::Phase::ViewChanging);
}
