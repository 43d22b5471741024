//! Replicas with data directories over real QUIC on loopback: every replica stops, all restart
//! from disk, and every acknowledged operation is still there; one replica restarts from disk
//! mid-load and rejoins.

mod common;

use bft_net::TransportOptions;
use common::{TestCluster, run_load};

/// The position the test service answers with: how many operations it has executed.
fn position(reply: &[u8]) -> u64 {
    u64::from_le_bytes(reply[..8].try_into().expect("an 8-byte position"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_replicas_restart_from_disk_with_every_acknowledged_operation() {
    let data = tempfile::tempdir().expect("temporary directory");
    let mut cluster = TestCluster::start_durable(1, 4, TransportOptions::default(), data.path());
    let handles = vec![cluster.client([1, 2]), cluster.client([3, 4])];
    // 2 handles x 2 lanes x 150: 600 acknowledged operations, across several checkpoints.
    run_load(&handles, 2, 300, "before").await;
    for handle in handles {
        handle.shutdown().await;
    }
    // Every replica goes down (in any order), then every one comes back from its directory.
    for id in [2, 0, 3, 1] {
        cluster.stop(id).await;
    }
    for id in 0..4 {
        cluster.restart(id).await;
    }
    let restored: Vec<_> = (0..4).map(|id| cluster.snapshot(id).status).collect();
    for status in &restored {
        assert!(
            status.last_executed.0 > 0,
            "replica {} restarted empty: {status:?}",
            status.id
        );
    }
    // The next operation's agreed position proves all 600 earlier ones are in the state.
    let client = cluster.client([1]);
    let reply = client
        .invoke(b"after the restart".to_vec())
        .await
        .expect("the cluster serves again");
    assert_eq!(position(&reply), 601);
    run_load(std::slice::from_ref(&client), 1, 50, "after").await;
    // Every replica reaches the same point, with the same state.
    cluster.assert_settled_agree().await;
    client.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_restarted_from_disk_mid_load_rejoins() {
    let data = tempfile::tempdir().expect("temporary directory");
    let mut cluster = TestCluster::start_durable(1, 4, TransportOptions::default(), data.path());
    let handles = vec![cluster.client([1, 2])];
    run_load(&handles, 2, 200, "first").await;
    let before = cluster.snapshot(3).status;
    cluster.stop(3).await;
    run_load(&handles, 2, 200, "while-down").await;
    cluster.restart(3).await;
    let recovered = cluster.snapshot(3).status;
    assert!(
        recovered.last_executed >= before.last_executed,
        "recovered {recovered:?}, had {before:?}"
    );
    run_load(&handles, 2, 200, "after").await;
    // It catches up with the others and executes new operations.
    let target = cluster.snapshot(0).status.last_executed;
    assert!(
        cluster
            .wait_for(3, |s| s.status.last_executed >= target)
            .await,
        "replica 3 did not catch up: {:?}",
        cluster.snapshot(3).status
    );
    for handle in handles {
        handle.shutdown().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_disk_fails_stops_and_the_cluster_carries_on() {
    let mut cluster = TestCluster::start(1, 2, TransportOptions::default());
    // Replica 2 comes back with a disk that fills up after 50 persists.
    cluster.stop(2).await;
    cluster.failing_storage = Some((2, 50));
    cluster.restart(2).await;
    let handles = vec![cluster.client([1, 2])];
    run_load(&handles, 2, 300, "load").await;
    let handle = cluster.replicas[2].take().expect("running");
    let stopped = handle.shutdown().await;
    match stopped {
        Err(bft_net::DriverError::Storage(message)) => {
            assert!(message.contains("disk full"), "{message}")
        }
        other => panic!("expected replica 2 to stop on its storage error, got {other:?}"),
    }
    for handle in handles {
        handle.shutdown().await;
    }
    cluster.shutdown().await;
}
