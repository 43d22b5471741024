//! `cargo run --release -p benches --bin cluster-bench`: throughput and latency of an n = 3f+1
//! cluster over QUIC on loopback, with replicas keeping their records in memory and on disk, in
//! one invocation, and the ratio between the two.

use benches::{BenchCluster, ClusterSpec, LoadSpec, StorageMode, run_load};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Cluster benchmark: the same closed-loop load on a cluster per storage mode.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Faults tolerated (n = 3f+1 replicas).
    #[arg(long, default_value_t = 1)]
    f: usize,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Bytes per operation.
    #[arg(long, default_value_t = 64)]
    operation_bytes: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds per run (not measured).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Runs per storage mode (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Storage modes to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StorageMode::Memory, StorageMode::Disk])]
    storage: Vec<StorageMode>,
    /// Where disk-mode replicas keep their data (a fresh directory under it per run).
    #[arg(long, default_value = "target/bench-data")]
    data_root: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let n = 3 * args.f + 1;
    println!(
        "cluster-bench: n={n} f={}, {} closed-loop clients, {}-byte operations, {} s measured after {} s warm-up, {} runs per mode",
        args.f, args.clients, args.operation_bytes, args.seconds, args.warmup, args.runs
    );
    let mut medians = Vec::new();
    for mode in &args.storage {
        let mut runs = Vec::new();
        for run in 0..args.runs {
            std::fs::create_dir_all(&args.data_root)?;
            let data = tempfile_dir(&args.data_root, run)?;
            let spec = ClusterSpec {
                f: args.f,
                clients: args.clients as u64,
                storage: *mode,
                data_root: data.clone(),
            };
            let cluster = BenchCluster::start(&spec)?;
            let client = cluster.client()?;
            let report = run_load(
                &client,
                &LoadSpec {
                    clients: args.clients,
                    operation_bytes: args.operation_bytes,
                    warmup: Duration::from_secs(args.warmup),
                    duration: Duration::from_secs(args.seconds),
                },
            )
            .await;
            client.shutdown().await;
            cluster.shutdown().await;
            let _ = std::fs::remove_dir_all(&data);
            println!(
                "  {mode:?} run {}: {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p999 {:>7.2} ms  ({} failed)",
                run + 1,
                report.throughput(),
                report.latency_ms(0.5),
                report.latency_ms(0.99),
                report.latency_ms(0.999),
                report.failures
            );
            runs.push(report);
        }
        runs.sort_by(|a, b| a.throughput().total_cmp(&b.throughput()));
        let median = runs.swap_remove(runs.len() / 2);
        println!(
            "{mode:?}: median {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms",
            median.throughput(),
            median.latency_ms(0.5),
            median.latency_ms(0.99)
        );
        medians.push((*mode, median));
    }
    let throughput = |wanted| {
        medians
            .iter()
            .find(|(mode, _)| *mode == wanted)
            .map(|(_, r)| r.throughput())
    };
    if let (Some(memory), Some(disk)) = (
        throughput(StorageMode::Memory),
        throughput(StorageMode::Disk),
    ) {
        println!("disk / memory throughput: {:.2}", disk / memory);
    }
    Ok(())
}

/// A fresh, empty directory under `root` for one run.
fn tempfile_dir(root: &std::path::Path, run: usize) -> std::io::Result<PathBuf> {
    let dir = root.join(format!("run-{}-{run}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
