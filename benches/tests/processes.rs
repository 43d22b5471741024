//! `cluster-bench --replica-processes`: the replicas run as processes of the harness binary, serve
//! a client, report their memory, and are gone once the cluster is shut down.

use benches::resources::{peak_resident_bytes_of, resident_bytes_of};
use benches::{ClientKeys, ClusterSpec, ReplicaProcesses, StorageMode};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_processes_serve_report_their_memory_and_stop() {
    let data = tempfile::tempdir().expect("temporary directory");
    // Both ways of keying clients reach the replica processes' configuration (a mismatch would
    // refuse the client's handshakes).
    for (storage, client_keys) in [
        (StorageMode::Memory, ClientKeys::Shared),
        (StorageMode::Disk, ClientKeys::PerSession),
    ] {
        let spec = ClusterSpec {
            f: 1,
            clients: 2,
            client_keys,
            storage,
            data_root: data.path().join(format!("{storage:?}")),
            limits: None,
        };
        let binary = Path::new(env!("CARGO_BIN_EXE_cluster-bench"));
        let cluster = ReplicaProcesses::start_with(binary, &spec).expect("replicas start");
        let pids = cluster.pids();
        assert_eq!(pids.len(), 4);
        let client = cluster.client().expect("client connects");
        for i in 0..20u64 {
            let mut operation = i.to_le_bytes().to_vec();
            operation.extend_from_slice(b"value");
            client.invoke(operation).await.expect("operation completes");
        }
        for pid in &pids {
            let rss = resident_bytes_of(*pid).expect("a running replica's memory");
            let peak = peak_resident_bytes_of(*pid).expect("its peak");
            assert!(rss > 0 && peak >= rss, "{rss} {peak}");
        }
        client.shutdown().await;
        cluster.shutdown();
        for pid in &pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "replica process {pid} still exists after shutdown"
            );
        }
        if storage == StorageMode::Disk {
            assert!(
                spec.data_root.join("replica-0").exists(),
                "durable data kept"
            );
        }
    }
}
