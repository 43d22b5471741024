//! A PBFT cluster in one process: real replicas and clients, every message signed and verified,
//! over the testkit's deterministic in-memory network.
//!
//! It shows the normal case at work: clients' requests ordered and executed identically on every
//! replica, a silent backup tolerated (f = 1), and a request that makes the service panic contained
//! on every replica.

use bft_core::testkit::Cluster;
use bft_core::{ClientId, Outcome, ReplicaId, Service};
use clap::Parser;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Run a PBFT cluster in one process and report what every replica executed.
#[derive(Parser)]
#[command(
    version,
    about = "Run a PBFT cluster in one process and report what every replica executed."
)]
struct Args {
    /// Faults tolerated; the cluster has 3f+1 replicas.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    f: u8,
    /// Concurrent clients, each with one request outstanding at a time.
    #[arg(long, default_value_t = 8)]
    clients: u64,
    /// Requests in total (spread over the clients). Until checkpoints land, at most the window
    /// (4096 batches) can be ordered.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Keep every replica online (by default the last backup stays silent).
    #[arg(long)]
    no_silent_backup: bool,
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
        eprintln!("  a replica's service panicked and the replica contained it: {message}");
    }));
    let f = usize::from(args.f);
    let clients = args.clients.max(1);
    let per_client = args.requests.div_ceil(clients as usize);
    let mut cluster = Cluster::with_f(f, clients);
    let n = cluster.replicas.len();
    let mut silent = BTreeSet::new();
    if !args.no_silent_backup {
        silent.insert(ReplicaId(n as u32 - 1));
    }
    cluster.silent = silent.clone();

    println!(
        "PBFT demo: n = {n} replicas (f = {f}), {clients} clients, {} requests",
        per_client * clients as usize
    );
    match silent.first() {
        Some(r) => println!("replica {r} is silent: it receives and sends nothing"),
        None => println!("all replicas online"),
    }
    println!("client c1's third request asks the service to panic\n");

    let ids: Vec<ClientId> = (1..=clients).map(ClientId).collect();
    let started = Instant::now();
    let done = cluster.run_closed_loop(&ids, per_client, Duration::from_secs(3600), |client, i| {
        if client == ClientId(1) && i == 2 {
            b"panic".to_vec()
        } else {
            format!("op {i} from {client}").into_bytes()
        }
    });
    let elapsed = started.elapsed();

    println!(
        "{:<8} {:>10} {:>9} {:>9} {:>8}  service digest",
        "replica", "executed", "batches", "proposed", "view"
    );
    for replica in &cluster.replicas {
        let metrics = replica.metrics();
        let status = replica.status();
        let note = if silent.contains(&replica.id()) {
            "  (silent)"
        } else {
            ""
        };
        println!(
            "{:<8} {:>10} {:>9} {:>9} {:>8}  {}{note}",
            replica.id().to_string(),
            metrics.requests_executed,
            metrics.batches_executed,
            metrics.batches_proposed,
            status.view.to_string(),
            &replica.service().state_digest().to_string()[..16],
        );
    }
    let agreed = cluster.assert_agreement(&silent);
    let panicked = cluster
        .completed
        .iter()
        .filter(|(_, c)| c.outcome == Outcome::ServicePanicked)
        .count();
    println!();
    println!("completed requests:      {done}");
    println!("identical on replicas:   {agreed} requests, same order, same state digest");
    println!("contained service panics: {panicked} (every replica recorded the same outcome)");
    println!(
        "wall time:               {:.2?} on one thread ({:.0} requests/s; every message signed and verified)",
        elapsed,
        done as f64 / elapsed.as_secs_f64()
    );
    let expected = per_client * clients as usize;
    if done != expected {
        eprintln!("error: only {done} of {expected} requests completed");
        std::process::exit(1);
    }
}
