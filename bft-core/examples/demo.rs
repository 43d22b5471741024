//! A PBFT cluster in one process: real replicas and clients, every message signed and verified,
//! over the testkit's deterministic in-memory network (virtual time, no sleeping).
//!
//! Three acts: all replicas up; the last backup silent (f = 1 tolerated); the backup back (it
//! catches up by state transfer) and the primary silent (a view change replaces it). One request
//! makes the service panic, and every replica contains it.

use bft_core::testkit::Cluster;
use bft_core::{ClientId, Outcome, ReplicaId, Service};
use clap::Parser;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Run a PBFT cluster in one process through a backup failure and a primary failure, and report
/// what every replica executed.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Faults tolerated; the cluster has 3f+1 replicas.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    f: u8,
    /// Concurrent clients, each with one request outstanding at a time.
    #[arg(long, default_value_t = 8)]
    clients: u64,
    /// Requests in total, spread over the three acts and the clients.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
}

fn main() {
    let args = Args::parse();
    // The replicas contain service panics; print one line per contained panic, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .unwrap_or("(non-text payload)");
        eprintln!("    a replica's service panicked and the replica contained it: {message}");
    }));
    let f = usize::from(args.f);
    let clients = args.clients.max(1);
    let per_act = args.requests.div_ceil(3 * clients as usize).max(1);
    let mut cluster = Cluster::with_f(f, clients);
    let n = cluster.replicas.len();
    let ids: Vec<ClientId> = (1..=clients).map(ClientId).collect();
    let primary = ReplicaId(0);
    let backup = ReplicaId(n as u32 - 1);
    println!(
        "PBFT demo: n = {n} replicas (f = {f}), {clients} clients, {} requests per act\n",
        per_act * clients as usize
    );

    let started = Instant::now();
    let mut total = 0;
    let acts: [(&str, BTreeSet<ReplicaId>); 3] = [
        ("act 1: every replica up", BTreeSet::new()),
        ("act 2: backup {backup} silent", BTreeSet::from([backup])),
        (
            "act 3: backup {backup} back, primary {primary} silent",
            BTreeSet::from([primary]),
        ),
    ];
    for (act, (title, silent)) in acts.into_iter().enumerate() {
        let title = title
            .replace("{backup}", &backup.to_string())
            .replace("{primary}", &primary.to_string());
        println!("{title}");
        cluster.silent = silent;
        let done =
            cluster.run_closed_loop(&ids, per_act, Duration::from_secs(3600), |client, i| {
                if act == 0 && client == ClientId(1) && i == 2 {
                    b"panic".to_vec()
                } else {
                    format!("op {i} of act {} from {client}", act + 1).into_bytes()
                }
            });
        total += done;
        let views: BTreeSet<_> = cluster
            .replicas
            .iter()
            .filter(|r| !cluster.silent.contains(&r.id()))
            .map(|r| r.view().to_string())
            .collect();
        println!(
            "    {done} requests completed; view of the live replicas: {}\n",
            views.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    // Let the last messages and timers play out (the returning backup finishes catching up).
    cluster.run_until(Duration::from_secs(3600), |c| {
        c.network.is_empty() && c.next_deadline().is_none()
    });
    let elapsed = started.elapsed();

    println!(
        "{:<8} {:>9} {:>8} {:>6} {:>7} {:>10} {:>10}  service digest",
        "replica", "executed", "batches", "view", "stable", "transfers", "fetched"
    );
    for replica in &cluster.replicas {
        let metrics = replica.metrics();
        let status = replica.status();
        let note = if cluster.silent.contains(&replica.id()) {
            "  (silent)"
        } else {
            ""
        };
        println!(
            "{:<8} {:>9} {:>8} {:>6} {:>7} {:>10} {:>10}  {}{note}",
            replica.id().to_string(),
            status.last_executed.0,
            metrics.batches_executed,
            status.view.to_string(),
            status.low_watermark.0,
            metrics.state_transfers_completed,
            metrics.committed_batches_installed,
            &replica.service().state_digest().to_string()[..16],
        );
    }
    let live: BTreeSet<ReplicaId> = cluster.silent.clone();
    let agreed =
        cluster.assert_agreement(&live.union(&BTreeSet::from([backup])).copied().collect());
    let panicked = cluster
        .completed
        .iter()
        .filter(|(_, c)| c.outcome == Outcome::ServicePanicked)
        .count();
    let reference = cluster.replicas[1].service().state_digest();
    let backup_matches = cluster.replicas[backup.0 as usize].service().state_digest() == reference;
    println!();
    println!("completed requests:        {total}");
    println!("identical on replicas:     {agreed} requests in the same order with the same state");
    println!(
        "returning backup:          {}",
        if backup_matches {
            "caught up, same state"
        } else {
            "still behind"
        }
    );
    println!("contained service panics:  {panicked} (the same outcome on every replica)");
    println!(
        "wall time:                 {elapsed:.2?} on one thread ({:.0} requests/s, every message signed and verified)",
        total as f64 / elapsed.as_secs_f64()
    );
    let expected = 3 * per_act * clients as usize;
    if total != expected || !backup_matches {
        eprintln!(
            "error: {total} of {expected} requests completed; backup caught up: {backup_matches}"
        );
        std::process::exit(1);
    }
}
