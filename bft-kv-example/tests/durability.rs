//! Real processes with data directories: every replica killed with SIGKILL in the middle of a
//! write load, all restarted: every write a client saw acknowledged is there, with its value, and
//! the cluster serves again.

mod process;

use process::{Cluster, bin, describe, wait_until};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Writes `w<client>-<i>` = `v<i>` with one client until stopped; keeps the acknowledged ones.
fn writer(
    config: PathBuf,
    key: PathBuf,
    client: u64,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(String, String)>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let (k, v) = (format!("w{client}-{i}"), format!("v{i}"));
            let output = bin()
                .args(["set", &k, &v, "--config"])
                .arg(&config)
                .arg("--key")
                .arg(&key)
                .args(["--timeout", "5s"])
                .output()
                .expect("bft-kv runs");
            if output.status.success() {
                acknowledged.lock().expect("not poisoned").push((k, v));
            }
        }
    })
}

#[test]
fn every_acknowledged_write_survives_kill_nine_of_every_replica() {
    let mut cluster = Cluster::generate(2);
    cluster.start_all();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = [1, 2]
        .into_iter()
        .map(|client| {
            writer(
                cluster.config.clone(),
                cluster.client_key(client),
                client,
                stop.clone(),
                acknowledged.clone(),
            )
        })
        .collect();
    wait_until("20 writes acknowledged", || {
        acknowledged.lock().expect("not poisoned").len() >= 20
    });
    // Power loss, as far as the replicas can tell: SIGKILL, every one, while writes are in flight.
    for id in [1, 3, 0, 2] {
        cluster.kill(id);
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    assert!(acknowledged.len() >= 20);
    cluster.start_all();
    for (key, value) in &acknowledged {
        let output = cluster.op(1, &["get", key]);
        assert!(output.status.success(), "get {key}: {}", describe(&output));
        let read = String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string();
        assert_eq!(&read, value, "acknowledged write {key} lost or changed");
    }
    // And the cluster serves new writes.
    assert_eq!(cluster.ok(2, &["set", "after", "restart"]), "OK");
    assert_eq!(cluster.ok(1, &["get", "after"]), "restart");
    for id in 0..cluster.n {
        let status = cluster
            .status(id)
            .expect("running replicas report a status");
        assert!(status.last_executed > 0, "replica {id}: {status:?}");
    }
}
