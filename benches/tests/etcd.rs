//! The etcd driver against a real 3-member etcd on loopback; skipped (passing, with a message)
//! where etcd is not installed.

use benches::etcd::{ETCD_PACKAGE, EtcdClient, EtcdCluster, EtcdError, find_etcd};
use std::net::TcpStream;
use std::time::Duration;

fn assert_shareable<T: Clone + Send + Sync + 'static>() {}

#[test]
fn etcd_cluster_puts_reads_and_stops() {
    assert_shareable::<EtcdClient>();
    if let Err(EtcdError::NotInstalled) = find_etcd() {
        println!("skipped: etcd is not installed (Debian package `{ETCD_PACKAGE}`)");
        return;
    }
    let root = tempfile::tempdir().expect("temporary directory");
    let cluster = EtcdCluster::start(root.path()).expect("etcd cluster starts");
    let endpoints = cluster.client_endpoints();
    assert_eq!(endpoints.len(), 3);
    assert_eq!(cluster.member_pids().len(), 3);
    let leader = cluster.leader_client_endpoint().expect("a leader");
    assert!(endpoints.contains(&leader));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Three connections, one per member: writes through followers are forwarded.
        let client = EtcdClient::connect(&endpoints, 3).await.expect("connects");
        for lane in 0..6 {
            let key = format!("test/{lane}").into_bytes();
            client
                .put(lane, key, vec![b'a' + lane as u8; 64])
                .await
                .expect("put");
        }
        // Overwrite one key, then read it back through a different member (lane 2 → member 2).
        client
            .put(0, b"test/0".to_vec(), vec![b'z'; 64])
            .await
            .expect("overwrite");
        let read = client.get(2, b"test/0".to_vec()).await.expect("get");
        assert_eq!(read, Some(vec![b'z'; 64]));
        let absent = client.get(1, b"test/absent".to_vec()).await.expect("get");
        assert_eq!(absent, None);
        client.shutdown().await;

        let errors = (
            EtcdClient::connect(&[], 1).await.err(),
            EtcdClient::connect(&endpoints, 0).await.err(),
        );
        assert!(matches!(errors.0, Some(EtcdError::NoEndpoints)));
        assert!(matches!(errors.1, Some(EtcdError::NoConnections)));
    });

    assert!(cluster.cpu_time().is_some());
    cluster.shutdown();
    for endpoint in &endpoints {
        assert!(
            TcpStream::connect_timeout(endpoint, Duration::from_secs(1)).is_err(),
            "{endpoint} still accepts connections after shutdown"
        );
    }

    // The data directories are kept, so a second start in the same root is refused.
    match EtcdCluster::start(root.path()) {
        Err(EtcdError::DataDirNotEmpty(_)) => {}
        Err(other) => panic!("expected DataDirNotEmpty, got {other}"),
        Ok(_) => panic!("expected DataDirNotEmpty, got a cluster"),
    }
}
