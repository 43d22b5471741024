//! Closed-loop PUTs against a fresh 3-member etcd on loopback: each client keeps one PUT of a
//! `--value-size`-byte value outstanding for `--seconds`, after `--warmup`; prints throughput
//! and latency quantiles, and the CPU time the etcd members used.
//!
//! `cargo run --release -p benches --example etcd_put -- --clients 1,16,64 --seconds 10`
//!
//! Each `--clients` value gets a fresh cluster (empty data directories under a temporary
//! directory, or under `--data-dir`).

use benches::etcd::{EtcdClient, EtcdCluster, etcd_version};
use clap::Parser;
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Closed-loop clients; several (comma-separated) run one after another.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    clients: Vec<usize>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unmeasured seconds before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// HTTP/2 connections, spread round-robin over the members (or all to the leader).
    #[arg(long, default_value_t = 3)]
    connections: usize,
    /// Send everything to the leader (etcd benchmark's --target-leader).
    #[arg(long)]
    target_leader: bool,
    /// Where the members' data directories go (default: a temporary directory, removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("etcd_put: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("etcd {}", etcd_version()?);
    // Removed when it goes out of scope, at the end of main.
    let temporary;
    let root = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temporary = tempfile::Builder::new().prefix("etcd-put-").tempdir()?;
            temporary.path().to_path_buf()
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    for (run, &clients) in args.clients.iter().enumerate() {
        let cluster = EtcdCluster::start(&root.join(format!("run-{run}")))?;
        let endpoints = if args.target_leader {
            vec![cluster.leader_client_endpoint()?]
        } else {
            cluster.client_endpoints()
        };
        let (operations, failures, histogram, cpu) = runtime.block_on(async {
            let client = EtcdClient::connect(&endpoints, args.connections).await?;
            let start = Instant::now();
            let measure_from = start + Duration::from_secs(args.warmup);
            let end = measure_from + Duration::from_secs(args.seconds);
            let mut tasks = tokio::task::JoinSet::new();
            for lane in 0..clients {
                let client = client.clone();
                let value = vec![b'v'; args.value_size];
                tasks.spawn(async move {
                    let mut histogram =
                        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                    let (mut done, mut failed, mut i) = (0u64, 0u64, 0u64);
                    loop {
                        let sent = Instant::now();
                        if sent >= end {
                            break;
                        }
                        let key = format!("bench/{lane:04}/{:04}", i % 1024).into_bytes();
                        i += 1;
                        let ok = client.put(lane, key, value.clone()).await.is_ok();
                        let finished = Instant::now();
                        if sent < measure_from || finished > end {
                            continue;
                        }
                        if ok {
                            done += 1;
                            let micros = (finished - sent).as_micros() as u64;
                            histogram.saturating_record(micros.max(1));
                        } else {
                            failed += 1;
                        }
                    }
                    (done, failed, histogram)
                });
            }
            tokio::time::sleep_until(measure_from.into()).await;
            let cpu_start = cluster.cpu_time().unwrap_or_default();
            let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut operations, mut failures) = (0u64, 0u64);
            while let Some(joined) = tasks.join_next().await {
                let (done, failed, histogram) = joined?;
                operations += done;
                failures += failed;
                total.add(histogram)?;
            }
            let cpu = cluster.cpu_time().unwrap_or(cpu_start) - cpu_start;
            client.shutdown().await;
            Ok::<_, Box<dyn std::error::Error>>((operations, failures, total, cpu))
        })?;
        cluster.shutdown();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "clients {clients:3}  connections {} ({})  {:8.0} PUT/s  p50 {:6.2} ms  p90 {:6.2} ms  \
             p99 {:6.2} ms  max {:7.2} ms  failures {failures}  etcd CPU {:.2} s/kop  loadavg {}",
            args.connections,
            if args.target_leader {
                "leader"
            } else {
                "round-robin"
            },
            operations as f64 / args.seconds as f64,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            histogram.max() as f64 / 1000.0,
            if operations == 0 {
                f64::NAN
            } else {
                cpu.as_secs_f64() * 1000.0 / operations as f64
            },
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    Ok(())
}
