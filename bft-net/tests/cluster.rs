//! Clusters over real QUIC on loopback, in the test process: thousands of operations from
//! concurrent clients with n = 4 and n = 7, a replica restarted, the primary stopped mid-load.

mod common;

use bft_net::TransportOptions;
use common::{TestCluster, run_load};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_replicas_order_thousands_of_operations_from_concurrent_clients() {
    let cluster = TestCluster::start(1, 8, TransportOptions::default());
    let handles = vec![
        cluster.client([1, 2]),
        cluster.client([3, 4]),
        cluster.client([5, 6]),
    ];
    // 3 handles x 2 lanes x 400 = 2400 operations.
    run_load(&handles, 2, 800, "n4").await;
    cluster.wait_all_reached(0, 2400).await;
    cluster.assert_settled_agree().await;
    for handle in handles {
        handle.shutdown().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seven_replicas_order_thousands_of_operations() {
    let cluster = TestCluster::start(2, 4, TransportOptions::default());
    let handles = vec![cluster.client([1, 2]), cluster.client([3, 4])];
    run_load(&handles, 2, 500, "n7").await;
    cluster.wait_all_reached(0, 1000).await;
    cluster.assert_settled_agree().await;
    for handle in handles {
        handle.shutdown().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_replica_is_reconnected_and_rejoins() {
    let mut cluster = TestCluster::start(1, 2, TransportOptions::default());
    let handles = vec![cluster.client([1, 2])];
    run_load(&handles, 2, 200, "before").await;
    cluster.stop(3).await;
    run_load(&handles, 2, 200, "while-down").await;
    cluster.restart(3).await;
    run_load(&handles, 2, 400, "after").await;
    // The restarted replica (empty) catches up by state transfer and executes what follows.
    let others = cluster.snapshot(0).status.last_executed;
    let caught_up = cluster
        .wait_for(3, |s| s.status.last_executed >= others)
        .await;
    assert!(
        caught_up,
        "replica 3 did not catch up to {others:?}: {:?}",
        cluster.snapshot(3).status
    );
    let reconnects = cluster.replicas[0]
        .as_ref()
        .unwrap()
        .transport()
        .stats()
        .dials;
    assert!(
        reconnects >= 4,
        "replica 0 re-dialled replica 3: {reconnects} dials"
    );
    for handle in handles {
        handle.shutdown().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_pending_when_the_primary_stops_complete_after_the_view_change() {
    let mut cluster = TestCluster::start(1, 4, TransportOptions::default());
    let handles = vec![cluster.client([1, 2, 3, 4])];
    run_load(&handles, 4, 200, "warm-up").await;
    let load = {
        let handles = handles.clone();
        tokio::spawn(async move { run_load(&handles, 4, 800, "through-view-change").await })
    };
    // Stop the primary of view 0 while operations are in flight.
    cluster.wait_executed(1, 400).await;
    cluster.stop(0).await;
    load.await.expect("every pending operation completed");
    let view = cluster.snapshot(1).status.view;
    assert!(view.0 >= 1, "a view change happened: view {view:?}");
    for handle in handles {
        handle.shutdown().await;
    }
    cluster.shutdown().await;
}

/// Client ids admitted with one key are sessions of one client principal: an `AsyncClient` holding
/// eight of them runs eight operations at once over a single connection per replica, and each
/// replica answers every session on it. With a key per identity, the same client opens a
/// connection per identity and replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_of_one_client_key_share_one_connection_per_replica() {
    for shared in [true, false] {
        let cluster = if shared {
            TestCluster::start_sharing_client_key(1, 8, TransportOptions::default())
        } else {
            TestCluster::start(1, 8, TransportOptions::default())
        };
        let handles = vec![cluster.client(1..=8)];
        // 8 lanes x 100 = 800 operations, 8 outstanding at a time.
        run_load(&handles, 8, 800, "sessions").await;
        cluster.wait_all_reached(0, 800).await;
        cluster.assert_settled_agree().await;
        let expected = if shared { 1 } else { 8 };
        for id in 0..4 {
            let stats = cluster.transport_stats(id);
            assert_eq!(
                stats.client_connections, expected,
                "replica {id} (shared key: {shared}): {stats:?}"
            );
            assert_eq!(stats.disconnected_invalid, 0, "replica {id}: {stats:?}");
        }
        for handle in handles {
            handle.shutdown().await;
        }
        cluster.shutdown().await;
    }
}

/// Two client processes may hold different sessions of one key: each replica answers every
/// session on the connection its requests came on, so both processes get their replies. The
/// second process connects to every replica after the first, so replies sent to the key's latest
/// connection would all reach it, and the first process's operations would time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_holding_different_sessions_of_one_key_each_get_their_replies() {
    let cluster = TestCluster::start_sharing_client_key(1, 8, TransportOptions::default());
    // Two clients, each with an endpoint and connections of its own, as two processes would.
    let handles = vec![cluster.client(1..=4), cluster.client(5..=8)];
    for (index, handle) in handles.iter().enumerate() {
        let reply = handle.invoke(format!("connect-{index}").into_bytes()).await;
        assert!(reply.is_ok(), "client {index}: {reply:?}");
        for id in 0..4 {
            assert!(
                cluster
                    .wait_transport(id, |s| s.client_connections == index as u64 + 1)
                    .await,
                "replica {id} accepted client {index}'s connection"
            );
        }
    }
    // 2 clients x 4 lanes x 100 = 800 operations.
    run_load(&handles, 4, 400, "two-processes").await;
    cluster.wait_all_reached(0, 802).await;
    cluster.assert_settled_agree().await;
    for id in 0..4 {
        let stats = cluster.transport_stats(id);
        assert_eq!(stats.client_connections, 2, "replica {id}: {stats:?}");
        assert_eq!(stats.disconnected_invalid, 0, "replica {id}: {stats:?}");
    }
    for handle in handles {
        handle.shutdown().await;
    }
    cluster.shutdown().await;
}
