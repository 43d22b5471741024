//! Hostile peers against a cluster over real QUIC on loopback: a connection from an unknown key
//! is refused at the handshake; a peer that sends garbage, an oversized length prefix, a flood of
//! frames, or frames signed by someone else is disconnected, while the cluster keeps committing
//! for honest clients. A replica whose frame fails verification is disconnected and re-dials.
//!
//! The hostile peers dial with raw quinn endpoints and the same identities a real client uses
//! (`bft_net::identity::client_config`), so everything below the handshake is theirs to choose.

mod common;

use bft_core::messages::{Checkpoint, Commit, Request, WireMessage};
use bft_core::testkit::{client_key, replica_key};
use bft_core::{ClientId, Principal, ReplicaId, SeqNum, View};
use bft_crypto::{Digest, KeyPair, Signature};
use bft_net::transport::close_code;
use bft_net::{AsyncClient, Transport, TransportOptions};
use bytes::Bytes;
use common::{
    PATIENCE, POLL, TestCluster, assert_closed_with, close_endpoint, closed, dial_raw, framed,
    poll_until, raw_endpoint, run_load,
};
use tokio::task::JoinHandle;

/// Operations an honest client runs before an attack (so every connection is up and the cluster
/// is known to commit), during it, and after it.
const OPS_BEFORE: usize = 10;
const OPS_DURING: usize = 20;
const OPS_AFTER: usize = 10;
const OPS_TOTAL: u64 = (OPS_BEFORE + OPS_DURING + OPS_AFTER) as u64;

/// Starts `OPS_DURING` operations on `honest` in the background (one at a time).
fn load_during_attack(honest: &AsyncClient, tag: &'static str) -> JoinHandle<()> {
    let honest = honest.clone();
    tokio::spawn(async move { run_load(&[honest], 1, OPS_DURING, tag).await })
}

/// Finishes the load started by [`load_during_attack`], runs `OPS_AFTER` more operations, and
/// checks that the attacked replica 0 executed every honest operation: the cluster, attacked
/// replica included, kept committing.
async fn keeps_committing(cluster: &TestCluster, honest: &AsyncClient, during: JoinHandle<()>) {
    during
        .await
        .expect("honest operations complete during the attack");
    run_load(std::slice::from_ref(honest), 1, OPS_AFTER, "after").await;
    cluster.wait_executed(0, OPS_TOTAL).await;
}

/// `len` bytes from a fixed-seed xorshift generator: the same garbage on every run.
fn garbage(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A request frame from client `signer`, validly signed with its key.
fn request_signed_by(
    cluster: &TestCluster,
    signer: u64,
    timestamp: u64,
    operation: &[u8],
) -> Bytes {
    Request {
        timestamp,
        operation: operation.to_vec(),
    }
    .sign(
        &client_key(signer),
        cluster.config.cluster_id,
        Principal::Client(ClientId(signer)),
    )
}

/// Opens a stream on `connection` and writes `bytes` to it. The write may fail once the replica
/// has closed the connection (it may not wait for all of it): what matters is what it closed
/// the connection for.
async fn send_raw(connection: &quinn::Connection, bytes: &[u8]) -> quinn::SendStream {
    let mut stream = connection.open_uni().await.expect("a stream opens");
    let _ = stream.write_all(bytes).await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_key_is_refused_at_the_handshake() {
    let cluster = TestCluster::start(1, 2, TransportOptions::default());
    let honest = cluster.client([1, 2]);
    run_load(std::slice::from_ref(&honest), 1, OPS_BEFORE, "before").await;
    let during = load_during_attack(&honest, "during");

    let endpoint = raw_endpoint();
    let stranger = KeyPair::from_seed([9; 32]);
    // In TLS 1.3 the dialer's side of the handshake completes before the server has checked the
    // dialer's key, so the dialer may see the connection established and then closed.
    let error = match dial_raw(&cluster, &endpoint, &stranger, 0).await {
        Ok(connection) => closed(&connection).await,
        Err(error) => error,
    };
    match &error {
        quinn::ConnectionError::ConnectionClosed(close) => assert_eq!(
            close.error_code,
            // The TLS access_denied alert (49) as a QUIC CRYPTO_ERROR: 0x131.
            quinn::TransportErrorCode::crypto(49),
            "refused for another reason: {close:?}"
        ),
        other => panic!("the replica should refuse the stranger's key, got {other:?}"),
    }
    assert!(
        cluster
            .wait_transport(0, |c| c.handshakes_refused >= 1)
            .await,
        "replica 0 did not count the refused handshake: {:?}",
        cluster.transport_stats(0)
    );
    assert_eq!(
        cluster.transport_stats(0).disconnected_invalid,
        0,
        "no application frame of the stranger's ever reached replica 0"
    );

    keeps_committing(&cluster, &honest, during).await;
    close_endpoint(&endpoint).await;
    honest.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_frames_get_the_peer_disconnected() {
    let cluster = TestCluster::start(1, 3, TransportOptions::default());
    let honest = cluster.client([1, 2]);
    run_load(std::slice::from_ref(&honest), 1, OPS_BEFORE, "before").await;
    let during = load_during_attack(&honest, "during");

    // Admitted client 3 sends a well-framed frame of random bytes.
    let endpoint = raw_endpoint();
    let connection = dial_raw(&cluster, &endpoint, &client_key(3), 0)
        .await
        .expect("an admitted client passes the handshake");
    let _stream = send_raw(&connection, &framed(&garbage(300))).await;
    assert_closed_with(&closed(&connection).await, close_code::INVALID_FRAME);
    assert!(
        cluster
            .wait_transport(0, |c| c.disconnected_invalid >= 1)
            .await,
        "replica 0 did not count the disconnection: {:?}",
        cluster.transport_stats(0)
    );
    assert_eq!(cluster.transport_stats(0).disconnected_framing, 0);

    keeps_committing(&cluster, &honest, during).await;
    close_endpoint(&endpoint).await;
    honest.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_length_prefix_gets_the_peer_disconnected() {
    let cluster = TestCluster::start(1, 3, TransportOptions::default());
    let honest = cluster.client([1, 2]);
    run_load(std::slice::from_ref(&honest), 1, OPS_BEFORE, "before").await;
    let during = load_during_attack(&honest, "during");

    // Admitted client 3 announces a frame one byte over the limit, and sends nothing else: the
    // replica refuses it on the prefix alone, before buffering anything.
    let endpoint = raw_endpoint();
    let connection = dial_raw(&cluster, &endpoint, &client_key(3), 0)
        .await
        .expect("an admitted client passes the handshake");
    let announced = u32::try_from(cluster.config.limits.max_message_bytes + 1).expect("fits");
    let _stream = send_raw(&connection, &announced.to_le_bytes()).await;
    assert_closed_with(&closed(&connection).await, close_code::BAD_FRAMING);
    assert!(
        cluster
            .wait_transport(0, |c| c.disconnected_framing >= 1)
            .await,
        "replica 0 did not count the disconnection: {:?}",
        cluster.transport_stats(0)
    );
    assert_eq!(cluster.transport_stats(0).disconnected_invalid, 0);

    keeps_committing(&cluster, &honest, during).await;
    close_endpoint(&endpoint).await;
    honest.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frame_flood_gets_the_peer_disconnected() {
    // A low limit, far above what the small honest load sends on any one connection.
    let options = TransportOptions {
        max_frames_per_second: 2_000,
        frame_burst: 2_000,
        ..Default::default()
    };
    let cluster = TestCluster::start(1, 3, options);
    let honest = cluster.client([1]);
    run_load(std::slice::from_ref(&honest), 1, OPS_BEFORE, "before").await;
    let during = load_during_attack(&honest, "during");

    // Admitted client 3 sends 20,000 copies of one valid request of its own as fast as it can.
    // Every frame verifies, so only the rate limit can close the connection.
    let endpoint = raw_endpoint();
    let connection = dial_raw(&cluster, &endpoint, &client_key(3), 0)
        .await
        .expect("an admitted client passes the handshake");
    let frame = framed(&request_signed_by(&cluster, 3, 1, b"flood"));
    let _stream = send_raw(&connection, &frame.repeat(20_000)).await;
    assert_closed_with(&closed(&connection).await, close_code::FLOOD);
    assert!(
        cluster
            .wait_transport(0, |c| c.disconnected_flood >= 1)
            .await,
        "replica 0 did not count the disconnection: {:?}",
        cluster.transport_stats(0)
    );
    let stats = cluster.transport_stats(0);
    assert_eq!(stats.disconnected_invalid, 0, "{stats:?}");
    assert_eq!(stats.disconnected_framing, 0, "{stats:?}");

    keeps_committing(&cluster, &honest, during).await;
    // No honest connection anywhere came near the limit.
    for id in 0..4 {
        assert_eq!(
            cluster.transport_stats(id).disconnected_flood,
            u64::from(id == 0),
            "replica {id}: {:?}",
            cluster.transport_stats(id)
        );
    }
    close_endpoint(&endpoint).await;
    honest.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_spread_over_many_streams_gets_the_peer_disconnected() {
    let options = TransportOptions {
        max_frames_per_second: 2_000,
        frame_burst: 2_000,
        ..Default::default()
    };
    let cluster = TestCluster::start(1, 3, options);
    let honest = cluster.client([1]);
    run_load(std::slice::from_ref(&honest), 1, OPS_BEFORE, "before").await;
    let during = load_during_attack(&honest, "during");

    // 20 streams of 500 valid frames each: no stream alone exceeds the burst, the connection
    // does five times over. The budget is the connection's, so opening streams buys nothing.
    let endpoint = raw_endpoint();
    let connection = dial_raw(&cluster, &endpoint, &client_key(3), 0)
        .await
        .expect("an admitted client passes the handshake");
    let frames = framed(&request_signed_by(&cluster, 3, 1, b"flood")).repeat(500);
    let mut streams = Vec::new();
    for _ in 0..20 {
        let Ok(mut stream) = connection.open_uni().await else {
            break; // already closed for the flood
        };
        if stream.write_all(&frames).await.is_err() {
            break;
        }
        streams.push(stream);
    }
    assert_closed_with(&closed(&connection).await, close_code::FLOOD);
    assert!(
        cluster
            .wait_transport(0, |c| c.disconnected_flood >= 1)
            .await,
        "replica 0 did not count the disconnection: {:?}",
        cluster.transport_stats(0)
    );
    assert_eq!(cluster.transport_stats(0).disconnected_invalid, 0);

    keeps_committing(&cluster, &honest, during).await;
    close_endpoint(&endpoint).await;
    honest.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_cannot_send_frames_signed_by_another_principal() {
    let cluster = TestCluster::start(1, 3, TransportOptions::default());
    let honest = cluster.client([3]);
    run_load(std::slice::from_ref(&honest), 1, OPS_BEFORE, "before").await;
    let during = load_during_attack(&honest, "during");

    // Client 1's connection carries a request validly signed by client 2: the signature is
    // fine, the sender is not the principal the connection authenticated.
    let endpoint = raw_endpoint();
    let connection = dial_raw(&cluster, &endpoint, &client_key(1), 0)
        .await
        .expect("an admitted client passes the handshake");
    let relayed = request_signed_by(&cluster, 2, 1, b"not mine to send");
    let _stream = send_raw(&connection, &framed(&relayed)).await;
    assert_closed_with(&closed(&connection).await, close_code::INVALID_FRAME);
    assert!(
        cluster
            .wait_transport(0, |c| c.disconnected_invalid >= 1)
            .await,
        "replica 0 did not count the disconnection: {:?}",
        cluster.transport_stats(0)
    );

    keeps_committing(&cluster, &honest, during).await;
    // The relayed request never reached the protocol: client 2 has no record anywhere.
    assert_eq!(
        cluster.snapshot(0).status.client_records,
        1,
        "only the honest client 3 has a record: {:?}",
        cluster.snapshot(0).status
    );
    close_endpoint(&endpoint).await;
    honest.shutdown().await;
    cluster.shutdown().await;
}

/// A commit from replica 3 for a sequence number far above any window: valid, and refused by the
/// protocol (counted as `outside_window`) without any other effect.
fn harmless_commit() -> Bytes {
    bft_core::testkit::signed_by_replica(
        3,
        &Commit {
            view: View(0),
            seq: SeqNum(1 << 40),
            digest: Digest::ZERO,
        },
    )
}

/// A checkpoint vote of replica 3 far beyond any window. Checkpoint votes are relayed in stable
/// proofs, so every one must carry a valid signature, on any channel (a prepare or commit on its
/// signer's own channel is authenticated by the channel instead, and checked only where it serves
/// as proof: see `bft_core::verify`).
fn harmless_checkpoint() -> Bytes {
    bft_core::testkit::signed_by_replica(
        3,
        &Checkpoint {
            seq: SeqNum(1 << 40),
            digest: Digest::ZERO,
        },
    )
}

/// `frame` with one bit of its signature flipped.
fn with_bad_signature(frame: &[u8]) -> Bytes {
    let decoded: bft_core::codec::FrameRef<'_> =
        bft_core::codec::decode(frame).expect("a valid frame decodes");
    let mut signature = decoded.signature.0;
    signature[17] ^= 0x01;
    bft_core::codec::FrameRef {
        signature: Signature(signature),
        ..decoded
    }
    .encode()
}

fn outside_window(cluster: &TestCluster, id: u32) -> u64 {
    cluster
        .snapshot(id)
        .metrics
        .rejected
        .get("outside_window")
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_sending_a_bad_signature_is_disconnected_and_reconnects() {
    let cluster = TestCluster::start(1, 2, TransportOptions::default());
    let honest = cluster.client([1, 2]);
    run_load(std::slice::from_ref(&honest), 1, OPS_BEFORE, "before").await;
    let during = load_during_attack(&honest, "during");

    // A second process with replica 3's key runs a real transport (the same re-dialling writer
    // a replica uses) and sends what the test says. Replica 0 authenticates its connections as
    // replica 3's, and closes only the one that carried the bad frame.
    let endpoint = raw_endpoint();
    let (replies, _inbound) = tokio::sync::mpsc::channel(16);
    let replica_3 = Transport::client(
        endpoint.clone(),
        cluster.config.clone(),
        replica_key(3),
        cluster.addresses.clone(),
        TransportOptions::default(),
        replies,
    )
    .expect("transport starts");
    let to_0 = Principal::Replica(ReplicaId(0));

    replica_3.send(to_0, with_bad_signature(&harmless_checkpoint()));
    assert!(
        cluster
            .wait_transport(0, |c| c.disconnected_invalid >= 1)
            .await,
        "replica 0 did not disconnect replica 3: {:?}",
        cluster.transport_stats(0)
    );
    // Replica 0 has closed the connection. Replica 3's writer finds out on its next write and
    // dials again; keep giving it frames until it has.
    let redialled = poll_until(|| {
        replica_3.send(to_0, harmless_commit());
        replica_3.stats().dials >= 2
    })
    .await;
    assert!(
        redialled,
        "replica 3 did not re-dial: {:?}",
        replica_3.stats()
    );
    // Frames on the new connection pass verification and reach the protocol.
    let before = outside_window(&cluster, 0);
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            replica_3.send(to_0, harmless_commit());
            tokio::time::sleep(POLL).await;
            if outside_window(&cluster, 0) > before {
                return;
            }
        }
    })
    .await
    .is_ok();
    assert!(
        served,
        "replica 0 did not process replica 3's frames after it reconnected: {:?}",
        cluster.snapshot(0).metrics
    );
    assert_eq!(
        cluster.transport_stats(0).disconnected_invalid,
        1,
        "only the frame with the bad signature was refused"
    );

    keeps_committing(&cluster, &honest, during).await;
    // The real replica 3 was served throughout.
    cluster.wait_executed(3, OPS_TOTAL).await;
    replica_3.shutdown().await;
    close_endpoint(&endpoint).await;
    honest.shutdown().await;
    cluster.shutdown().await;
}
