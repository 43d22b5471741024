//! Real processes: `bft-kv keygen`, four `bft-kv replica` processes on loopback, operations
//! through the CLI; the primary killed under load, a backup killed and restarted.

mod process;

use process::{Cluster, bin, describe, wait_until};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Keeps incrementing `key` with client 2 from another thread until dropped; counts successes.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(config: PathBuf, key: PathBuf) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let output = bin()
                        .args(["incr", "load", "--config"])
                        .arg(&config)
                        .arg("--key")
                        .arg(&key)
                        .args(["--timeout", "30s"])
                        .output()
                        .expect("bft-kv runs");
                    if output.status.success() {
                        done.fetch_add(1, Ordering::SeqCst);
                    } else {
                        eprintln!("load operation failed: {}", describe(&output));
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        Load {
            stop,
            done,
            failed,
            thread: Some(thread),
        }
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Stops and returns (succeeded, failed).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("load thread");
        }
        (self.done(), self.failed.load(Ordering::SeqCst))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn cli_operations_refusals_and_primary_crash() {
    let mut cluster = Cluster::generate(2);
    cluster.start_all();

    // Every operation, through the CLI.
    assert_eq!(cluster.ok(1, &["get", "greeting"]), "(nil)");
    assert_eq!(cluster.ok(1, &["set", "greeting", "hello world"]), "OK");
    assert_eq!(cluster.ok(1, &["get", "greeting"]), "hello world");
    assert_eq!(
        cluster.ok(1, &["exists", "greeting", "nope", "greeting"]),
        "2"
    );
    assert_eq!(cluster.ok(1, &["incr", "n"]), "1");
    assert_eq!(cluster.ok(1, &["incr", "n", "--by", "-5"]), "-4");
    let not_integer = cluster.op(1, &["incr", "greeting"]);
    assert!(!not_integer.status.success());
    let stderr = String::from_utf8_lossy(&not_integer.stderr);
    assert!(
        stderr.contains("not an integer"),
        "{}",
        describe(&not_integer)
    );
    assert_eq!(
        cluster.ok(1, &["cas", "lock", "--absent", "--new", "me"]),
        "swapped; current value: me"
    );
    assert_eq!(
        cluster.ok(1, &["cas", "lock", "--absent", "--new", "you"]),
        "not swapped; current value: me"
    );
    assert_eq!(
        cluster.ok(1, &["cas", "lock", "--expected", "me", "--delete"]),
        "swapped; current value: (nil)"
    );
    for key in ["b", "a", "c"] {
        cluster.ok(1, &["set", &format!("s/{key}"), key]);
    }
    assert_eq!(
        cluster.ok(1, &["scan", "--start", "s/", "--end", "s0", "--limit", "2"]),
        "s/a\ta\ns/b\tb"
    );
    assert_eq!(cluster.ok(1, &["del", "s/a", "s/b", "s/x"]), "2");
    let too_long = "k".repeat(2000);
    let refused = cluster.op(1, &["set", &too_long, "v"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("key too large"),
        "{}",
        describe(&refused)
    );

    // A key the configuration does not list: refused at once, with a clear message.
    let rogue_dir = cluster.dir.path().join("rogue");
    let output = process::run(&[
        "keygen",
        "--out",
        rogue_dir.to_str().expect("utf-8"),
        "--base-port",
        "9",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let rogue_key = rogue_dir.join("client-1.key");
    let output = bin()
        .args(["get", "greeting", "--config"])
        .arg(&cluster.config)
        .arg("--key")
        .arg(&rogue_key)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not an admitted client"),
        "{}",
        describe(&output)
    );
    // A configuration doctored to list that key: the replicas refuse it at the handshake, and
    // the CLI gives up after its deadline with a clear message instead of hanging.
    let rogue_public = std::fs::read_to_string(rogue_dir.join("cluster.toml"))
        .expect("rogue config")
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("public_key = ").map(str::to_string))
        .expect("a client key");
    let text = std::fs::read_to_string(&cluster.config).expect("config");
    let ours = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("public_key = "))
        .expect("a client key");
    let doctored = cluster.cluster_dir().join("doctored.toml");
    std::fs::write(&doctored, text.replace(ours, &rogue_public)).expect("write");
    let started = Instant::now();
    let output = bin()
        .args(["get", "greeting", "--timeout", "2s", "--config"])
        .arg(&doctored)
        .arg("--key")
        .arg(&rogue_key)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no agreed reply from the cluster within 2s"),
        "{}",
        describe(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(30), "gave up late");

    // The primary of view 0 is killed under load; operations continue after a view change.
    let load = Load::start(cluster.config.clone(), cluster.client_key(2));
    wait_until("the load to get going", || load.done() >= 3);
    cluster.kill(0);
    let at_kill = load.done();
    wait_until("operations to continue after the primary died", || {
        load.done() >= at_kill + 5
    });
    for id in 1..4 {
        let status = cluster.wait_status(id, "a view change", |s| s.view >= 1);
        assert_ne!(status.primary, 0, "replica 0 is dead: not the primary");
    }
    assert_eq!(cluster.ok(1, &["get", "greeting"]), "hello world");
    let (done, failed) = load.finish();
    let counter: u64 = cluster.ok(1, &["get", "load"]).parse().expect("an integer");
    // Every acknowledged increment applied exactly once (one that timed out may still apply).
    assert!(
        counter >= done && counter <= done + failed,
        "{counter} vs {done} + {failed}"
    );
}

#[test]
fn restarted_backup_catches_up_and_replicas_stop_cleanly() {
    let mut cluster = Cluster::generate(1);
    cluster.start_all();
    for i in 0..5 {
        cluster.ok(1, &["set", &format!("before/{i}"), "x"]);
    }
    // A backup dies (kill -9); the other three carry on.
    cluster.kill(3);
    for i in 0..5 {
        cluster.ok(1, &["set", &format!("during/{i}"), "y"]);
    }
    // It comes back empty and catches up from its peers.
    cluster.start(3);
    let mut i = 0;
    wait_until("replica 3 to catch up", || {
        cluster.ok(1, &["set", &format!("after/{i}"), "z"]);
        i += 1;
        let target = cluster.status(1).map_or(u64::MAX, |s| s.last_executed);
        cluster.status(3).is_some_and(|s| s.last_executed >= target)
    });
    // With another backup stopped, the cluster needs replica 3 to make progress.
    cluster.kill(2);
    assert_eq!(cluster.ok(1, &["get", "during/4"]), "y");
    assert_eq!(cluster.ok(1, &["incr", "count"]), "1");
    let before = cluster.status(3).expect("running").last_executed;
    cluster.ok(1, &["set", "final", "value"]);
    cluster.wait_status(3, "executing new operations", |s| s.last_executed > before);
    // SIGTERM: a clean stop, with exit status 0.
    #[cfg(unix)]
    for id in [0, 1, 3] {
        let (status, log) = cluster.terminate(id);
        assert!(status.success(), "replica {id}: {status}\n{log}");
        assert!(log.contains("stopped"), "replica {id} log:\n{log}");
    }
}
