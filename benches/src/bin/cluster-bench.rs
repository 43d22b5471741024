//! `cargo run --release -p benches --bin cluster-bench`: the BFT cluster (in memory and with
//! durable storage) and the crash-only baseline, over the same QUIC transport on loopback, under
//! the same closed-loop load, in one invocation; throughput, latency, CPU per operation, memory,
//! and the ratios between them. With `--systems ...,etcd`, also a 3-member etcd on loopback
//! (Debian's `etcd-server`) under the same load. Results go to a folder as JSON and SVG plots.

use benches::cluster::build_config;
use benches::etcd::{EtcdClient, EtcdCluster};
use benches::processes::{SERVE_REPLICA, serve_replica};
use benches::report::{ETCD_MEMBERS, Measurement, Results, SystemKind, write_results};
use benches::{
    BaselineCluster, BenchCluster, ClientKeys, ClusterSpec, LoadSpec, ReplicaArgs,
    ReplicaProcesses, StorageMode, Target, run_load,
};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Cluster benchmark: BFT against a crash-only baseline, with the same transport, request size,
/// batching limits, client count and duration.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Systems to run (`etcd` needs Debian's `etcd-server` installed; it always has 3 members,
    /// whatever `--f`).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SystemKind::Bft, SystemKind::BftDisk, SystemKind::CrashOnly])]
    systems: Vec<SystemKind>,
    /// Faults tolerated, one cluster size per value (n = 3f+1: 1 → 4, 2 → 7, 3 → 10).
    #[arg(long, value_delimiter = ',', default_values_t = [1])]
    f: Vec<usize>,
    /// Concurrent closed-loop clients; several values sweep the load.
    #[arg(long, value_delimiter = ',', default_values_t = [64])]
    clients: Vec<usize>,
    /// Latency mode: one client with one operation outstanding (same as `--clients 1`).
    #[arg(long, conflicts_with = "clients")]
    latency: bool,
    /// Bytes per operation (an 8-byte key, then the value).
    #[arg(long, default_value_t = 64)]
    operation_bytes: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds per run (not measured).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Runs per configuration (the median run by throughput is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where durable replicas keep their data (a fresh directory under it per run, removed after).
    #[arg(long, default_value = "target/bench-data")]
    data_root: PathBuf,
    /// Where to write `results.json`, `throughput.svg` and `latency.svg`.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// Batches the primary (or the baseline's sequencer) keeps in flight before it holds
    /// requests back to batch them (default: the library's default limit).
    #[arg(long)]
    max_in_flight: Option<u64>,
    /// Run each BFT replica in a process of its own (this binary, started with `serve-replica`),
    /// to report each replica's resident memory (start, end and peak of the run); CPU and memory
    /// totals then add the replica processes to this one's.
    #[arg(long)]
    replica_processes: bool,
    /// How the client identities are keyed: `shared` (one client process with a session per
    /// closed-loop client, sharing one connection per replica) or `per-session` (as many
    /// independent clients, each with connections of its own). The same for every system.
    #[arg(long, value_enum, default_value_t = ClientKeys::Shared)]
    client_keys: ClientKeys,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    // `--replica-processes` runs replicas as this binary, started with `serve-replica ...`.
    if std::env::args().nth(1).as_deref() == Some(SERVE_REPLICA) {
        let args = ReplicaArgs::parse_from(std::env::args().skip(1));
        return serve_replica(&args).await;
    }
    let args = Args::parse();
    let client_counts = if args.latency {
        vec![1]
    } else {
        args.clients.clone()
    };
    if args.runs == 0 || args.seconds == 0 || client_counts.contains(&0) || args.f.contains(&0) {
        return Err("--runs, --seconds, --clients and --f must be positive".into());
    }
    let etcd_runs = usize::from(args.systems.contains(&SystemKind::Etcd));
    let configurations =
        client_counts.len() * (args.f.len() * (args.systems.len() - etcd_runs) + etcd_runs);
    println!(
        "cluster-bench: {} ({}), clients {:?} (keys {}), {}-byte operations, {} s measured after {} s warm-up, {} runs each",
        args.systems
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.f
            .iter()
            .map(|f| format!("n={}", 3 * f + 1))
            .collect::<Vec<_>>()
            .join(", "),
        client_counts,
        args.client_keys.name(),
        args.operation_bytes,
        args.seconds,
        args.warmup,
        args.runs
    );
    let progress = progress_bar(
        args.no_progress,
        configurations as u64 * args.runs as u64 * (args.seconds + args.warmup),
    );
    let mut results = Results::new(
        args.operation_bytes,
        args.seconds,
        args.warmup,
        args.runs,
        args.client_keys,
    );
    for (f_index, &f) in args.f.iter().enumerate() {
        for &clients in &client_counts {
            for &system in &args.systems {
                // etcd's size does not follow --f: run it once per client count.
                if system == SystemKind::Etcd && f_index > 0 {
                    continue;
                }
                let n = if system == SystemKind::Etcd {
                    ETCD_MEMBERS
                } else {
                    3 * f + 1
                };
                let mut runs = Vec::new();
                for run in 0..args.runs {
                    progress.set_message(format!(
                        "{} n={n} clients={clients} run {}/{}",
                        system.name(),
                        run + 1,
                        args.runs
                    ));
                    let spec = LoadSpec {
                        clients,
                        operation_bytes: args.operation_bytes,
                        warmup: Duration::from_secs(args.warmup),
                        duration: Duration::from_secs(args.seconds),
                    };
                    let report = run_once(system, f, &spec, &args, &progress).await?;
                    say(
                        &progress,
                        format!(
                            "  {:<10} n={n:<2} clients={clients:<4} run {}: {:>8.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p999 {:>7.2} ms  cpu {:.3} s/kop  rss {:.0} MiB  ({} failed)",
                            system.name(),
                            run + 1,
                            report.throughput(),
                            report.latency_ms(0.5),
                            report.latency_ms(0.99),
                            report.latency_ms(0.999),
                            report.cpu_seconds_per_kop(),
                            report.rss_peak as f64 / (1 << 20) as f64,
                            report.failures
                        ),
                    );
                    if !report.servers.is_empty() && system != SystemKind::Etcd {
                        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
                        let each: Vec<String> = report
                            .servers
                            .iter()
                            .enumerate()
                            .map(|(id, m)| {
                                // Start, a quarter, half, three quarters in, end; then the peak.
                                let series = &m.rss_by_second;
                                let at = |q: usize| {
                                    series.get(series.len().saturating_sub(1) * q / 4).copied()
                                };
                                let path: Vec<String> = [at(0), at(1), at(2), at(3)]
                                    .into_iter()
                                    .flatten()
                                    .chain([m.rss_end])
                                    .map(|b| format!("{:.0}", mib(b)))
                                    .collect();
                                format!("r{id} {} (peak {:.0})", path.join("/"), mib(m.rss_peak))
                            })
                            .collect();
                        say(
                            &progress,
                            format!(
                                "      replica RSS MiB (start/25%/50%/75%/end): {}",
                                each.join(", ")
                            ),
                        );
                    }
                    runs.push(report);
                }
                results.push(Measurement::from_runs(system, n, clients, runs));
            }
        }
    }
    progress.finish_and_clear();
    println!();
    print!("{}", results.table());
    std::fs::create_dir_all(&args.out)?;
    write_results(&results, &args.out)?;
    println!("results: {}", args.out.display());
    Ok(())
}

async fn run_once(
    system: SystemKind,
    f: usize,
    spec: &LoadSpec,
    args: &Args,
    progress: &ProgressBar,
) -> Result<benches::LoadReport, Box<dyn std::error::Error>> {
    let data_root = args.data_root.as_path();
    // The same limits for the BFT cluster and the baseline.
    let mut limits = bft_core::Limits::default();
    if let Some(batches) = args.max_in_flight {
        limits.max_in_flight_batches = batches;
    }
    let tick = {
        let progress = progress.clone();
        move || progress.inc(1)
    };
    let report = match system {
        SystemKind::Bft | SystemKind::BftDisk => {
            let data = fresh_dir(data_root)?;
            let cluster_spec = ClusterSpec {
                f,
                clients: spec.clients as u64,
                client_keys: args.client_keys,
                storage: if system == SystemKind::BftDisk {
                    StorageMode::Disk
                } else {
                    StorageMode::Memory
                },
                data_root: data.clone(),
                limits: Some(limits),
            };
            let report = if args.replica_processes {
                let cluster = ReplicaProcesses::start(&cluster_spec)?;
                let target = Target::Bft {
                    client: cluster.client()?,
                    servers: cluster.pids().into(),
                };
                let report = run_load(&target, spec, tick).await;
                target.shutdown().await;
                cluster.shutdown();
                report
            } else {
                let cluster = BenchCluster::start(&cluster_spec)?;
                let target = Target::Bft {
                    client: cluster.client()?,
                    servers: Arc::from([]),
                };
                let report = run_load(&target, spec, tick).await;
                target.shutdown().await;
                cluster.shutdown().await;
                report
            };
            let _ = std::fs::remove_dir_all(&data);
            report
        }
        SystemKind::CrashOnly => {
            let config = build_config(f, spec.clients as u64, args.client_keys, Some(limits));
            let cluster = BaselineCluster::start(config, args.client_keys)?;
            let target = Target::CrashOnly(cluster.client()?);
            let report = run_load(&target, spec, tick).await;
            target.shutdown().await;
            cluster.shutdown().await;
            report
        }
        SystemKind::Etcd => {
            let data = fresh_dir(data_root)?;
            let cluster = EtcdCluster::start(&data)?;
            // Every member's endpoint, connections spread round-robin, as etcd's own benchmark
            // tool does; followers forward writes to the leader.
            let endpoints = cluster.client_endpoints();
            let connections = spec.clients.clamp(1, 3 * ETCD_MEMBERS);
            let target = Target::Etcd {
                client: EtcdClient::connect(&endpoints, connections).await?,
                servers: cluster.member_pids().into(),
            };
            let report = run_load(&target, spec, tick).await;
            target.shutdown().await;
            cluster.shutdown();
            let _ = std::fs::remove_dir_all(&data);
            report
        }
    };
    Ok(report)
}

/// Prints a line above the progress bar (or plainly when there is none).
fn say(progress: &ProgressBar, line: String) {
    if progress.is_hidden() {
        println!("{line}");
    } else {
        progress.println(line);
    }
}

fn progress_bar(hidden: bool, seconds: u64) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(seconds);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} s  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// A fresh, empty directory under `root` for one run.
fn fresh_dir(root: &Path) -> std::io::Result<PathBuf> {
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.join(format!("run-{}-{run}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
