//! `bft-kv demo`: a 4-replica cluster in this process, through a backup failure and a primary
//! failure, with a mixed workload and a latency summary.

use crate::client::{KvClient, KvClientError};
use crate::ops::{KvOp, KvReply};
use crate::service::{KvLimits, KvService, parse_integer};
use bft_core::ReplicaId;
use bft_net::{ClientOptions, LocalCluster, LocalClusterOptions, NodeError};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

/// Deadline of each demo operation.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long the restarted backup may take to catch up.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(30);

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Operations in total, spread over the four acts and the clients.
    pub requests: usize,
    /// Concurrent clients (each with one operation outstanding at a time).
    pub clients: u64,
    /// Whether to draw a progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            requests: 2000,
            clients: 4,
            progress: true,
        }
    }
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A replica could not start or stop.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The client could not start.
    #[error(transparent)]
    Client(#[from] KvClientError),
    /// The cluster did not do what the demo waits for.
    #[error("{0}")]
    Stalled(String),
    /// The temporary data directory could not be created.
    #[error("cannot create a temporary data directory: {0}")]
    DataDir(std::io::Error),
}

/// What the demo saw, for callers that want more than the printed text.
#[derive(Debug)]
pub struct DemoReport {
    /// Operations that returned an agreed reply.
    pub completed: u64,
    /// Operations that failed (timed out).
    pub failed: u64,
    /// The view the surviving replicas ended in.
    pub final_view: u64,
    /// Latency of completed operations, in microseconds.
    pub latency: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits: bounds that are always valid.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

fn ms(micros: u64) -> String {
    format!("{:.1} ms", micros as f64 / 1000.0)
}

/// The operation lane `lane` runs as its `i`th.
fn workload(lane: u64, i: usize) -> KvOp {
    let key = |k: usize| format!("lane{lane}/key{:02}", k % 16).into_bytes();
    match i % 6 {
        0 => KvOp::Set {
            key: key(i),
            value: format!("value {i}").into_bytes(),
        },
        1 => KvOp::Get { key: key(i - 1) },
        2 => KvOp::Incr {
            key: format!("lane{lane}/counter").into_bytes(),
            by: 1,
        },
        3 => KvOp::Cas {
            key: key(i),
            expected: None,
            new: Some(b"created by cas".to_vec()),
        },
        4 => KvOp::Scan {
            start: format!("lane{lane}/").into_bytes(),
            end: Some(format!("lane{lane}0").into_bytes()),
            limit: 8,
        },
        _ => KvOp::Del {
            keys: vec![key(i + 7)],
        },
    }
}

#[derive(Default)]
struct LaneResult {
    completed: u64,
    failed: u64,
    increments: u64,
    latency: Option<Histogram<u64>>,
}

/// Runs `per_lane` operations on each of `lanes` concurrent lanes, starting at index `offset`.
async fn run_act(
    client: &KvClient,
    lanes: u64,
    offset: usize,
    per_lane: usize,
    bar: &ProgressBar,
) -> Vec<LaneResult> {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        let client = client.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let mut result = LaneResult {
                latency: Some(histogram()),
                ..LaneResult::default()
            };
            for i in offset..offset + per_lane {
                let op = workload(lane, i);
                let is_incr = matches!(op, KvOp::Incr { .. });
                let started = Instant::now();
                match client.call(op).await {
                    Ok(_) => {
                        let micros =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                        if let Some(latency) = &mut result.latency {
                            latency.saturating_record(micros.max(1));
                        }
                        result.completed += 1;
                        result.increments += u64::from(is_incr);
                    }
                    Err(error) => {
                        bar.suspend(|| println!("  operation failed: {error}"));
                        result.failed += 1;
                    }
                }
                bar.inc(1);
            }
            (lane, result)
        });
    }
    let mut results: Vec<LaneResult> = (0..lanes).map(|_| LaneResult::default()).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((lane, result)) = joined {
            results[lane as usize] = result;
        }
    }
    results
}

/// Waits until replica `id` has executed up to `seq` (bounded by [`CATCH_UP_PATIENCE`]).
async fn wait_executed(cluster: &LocalCluster, id: ReplicaId, seq: u64) -> Result<(), DemoError> {
    let handle = cluster
        .replica(id)
        .ok_or_else(|| DemoError::Stalled(format!("replica {id} is not running")))?;
    let mut watch = handle.watch();
    let reached = tokio::time::timeout(
        CATCH_UP_PATIENCE,
        watch.wait_for(|s| s.status.last_executed.0 >= seq),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if reached {
        Ok(())
    } else {
        Err(DemoError::Stalled(format!(
            "replica {id} did not catch up to sequence number {seq} within {CATCH_UP_PATIENCE:?}"
        )))
    }
}

fn last_executed(cluster: &LocalCluster, id: ReplicaId) -> u64 {
    cluster
        .replica(id)
        .map_or(0, |h| h.snapshot().status.last_executed.0)
}

/// Runs the demo, printing as it goes. Must run inside a tokio runtime.
pub async fn run(options: DemoOptions) -> Result<DemoReport, DemoError> {
    let lanes = options.clients.max(1);
    let per_lane = options.requests.div_ceil(4 * lanes as usize).max(1);
    let total = per_lane * 4 * lanes as usize;
    // Each replica keeps its log and checkpoints in a data directory of its own (removed at the
    // end), so a stopped replica comes back with what it had.
    let data = tempfile::Builder::new()
        .prefix("bft-kv-demo-")
        .tempdir()
        .map_err(DemoError::DataDir)?;
    let cluster_options = LocalClusterOptions {
        clients: lanes,
        data_root: Some(data.path().to_path_buf()),
        ..LocalClusterOptions::default()
    };
    if cfg!(debug_assertions) {
        println!(
            "note: this is a debug build; signatures are slow without optimisation, so expect \
             timeouts and view changes. Use `cargo run --release -p bft-kv-example -- demo`.\n"
        );
    }
    let limits = KvLimits::default();
    let mut cluster = LocalCluster::start(cluster_options, |_| KvService::new(limits))?;
    let n = cluster.config().n();
    let primary = ReplicaId(0);
    let backup = ReplicaId(u32::try_from(n - 1).unwrap_or(u32::MAX));
    let ports: Vec<String> = cluster
        .addresses()
        .iter()
        .map(|a| a.port().to_string())
        .collect();
    println!(
        "bft-kv demo: {n} replicas (f = {}) on 127.0.0.1 ports {}, {lanes} clients, {total} operations\n",
        cluster.config().f,
        ports.join(", ")
    );
    let client = KvClient::from_async_client(
        cluster
            .client(ClientOptions {
                deadline: DEADLINE,
                ..ClientOptions::default()
            })
            .map_err(KvClientError::from)?,
        DEADLINE,
    );
    let bar = if options.progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{msg:38} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut latency = histogram();
    let (mut completed, mut failed) = (0u64, 0u64);
    let mut increments = vec![0u64; lanes as usize];
    let acts = [
        format!("act 1: all {n} replicas up"),
        format!("act 2: backup {backup} stopped"),
        format!("act 3: backup {backup} back from disk"),
        format!("act 4: primary {primary} stopped"),
    ];
    let started = Instant::now();
    for (act, title) in acts.iter().enumerate() {
        match act {
            1 => cluster.stop(backup).await?,
            2 => cluster.restart(backup, KvService::new(limits)).await?,
            3 => cluster.stop(primary).await?,
            _ => {}
        }
        bar.set_message(title.clone());
        let act_started = Instant::now();
        let results = run_act(&client, lanes, act * per_lane, per_lane, &bar).await;
        let mut act_latency = histogram();
        let (mut act_completed, mut act_failed) = (0, 0);
        for (lane, result) in results.into_iter().enumerate() {
            act_completed += result.completed;
            act_failed += result.failed;
            increments[lane] += result.increments;
            if let Some(h) = &result.latency {
                let _ = act_latency.add(h);
            }
        }
        let _ = latency.add(&act_latency);
        completed += act_completed;
        failed += act_failed;
        let mut line = format!(
            "{title:38} {act_completed:5} ops in {:6.2} s   p50 {:>9}  p99 {:>9}",
            act_started.elapsed().as_secs_f64(),
            ms(act_latency.value_at_quantile(0.5)),
            ms(act_latency.value_at_quantile(0.99)),
        );
        if act_failed > 0 {
            line += &format!("   {act_failed} failed");
        }
        if act == 2 {
            // Before the primary goes, the restarted backup must hold the state: with it, the
            // survivors are 2f+1.
            let target = last_executed(&cluster, ReplicaId(1));
            wait_executed(&cluster, backup, target).await?;
            let transfers = cluster
                .replica(backup)
                .map_or(0, |h| h.snapshot().metrics.state_transfers_completed);
            let how = if transfers > 0 {
                "by state transfer"
            } else {
                "by fetching the batches it missed"
            };
            line += &format!(
                "\n{:38} replica {backup} caught up to sequence number {target} ({how})",
                ""
            );
        }
        if act == 3 {
            let status = cluster
                .replica(ReplicaId(1))
                .map(|h| h.snapshot().status.view.0)
                .unwrap_or(0);
            line += &format!(
                "\n{:38} view change: now view {status}, primary {}",
                "",
                bft_core::View(status).primary(n)
            );
        }
        bar.suspend(|| println!("{line}"));
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    // Exactly once: each lane's counter equals the increments it saw acknowledged.
    let mut counters_ok = true;
    for (lane, expected) in increments.iter().enumerate() {
        let key = format!("lane{lane}/counter").into_bytes();
        let value = match client.call(KvOp::Get { key }).await? {
            KvReply::Value(Some(v)) => parse_integer(&v).unwrap_or(-1),
            _ => 0,
        };
        // An operation that timed out may still have executed: then "at least".
        let value = u64::try_from(value).unwrap_or(u64::MAX);
        let matches = value == *expected || (failed > 0 && value >= *expected && value != u64::MAX);
        if !matches {
            counters_ok = false;
            println!("lane {lane}: counter is {value}, {expected} increments were acknowledged");
        }
    }
    let mut final_view = 0;
    println!();
    println!(
        "{completed} operations in {:.2} s ({:.0} ops/s), {failed} failed",
        elapsed.as_secs_f64(),
        completed as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "latency: p50 {}, p99 {}, max {} (the slowest waited for the view change)",
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.max())
    );
    for id in cluster.config().replica_ids() {
        match cluster.replica(id) {
            Some(handle) => {
                let snapshot = handle.snapshot();
                final_view = final_view.max(snapshot.status.view.0);
                println!(
                    "replica {id}: view {}, executed up to {}, {} requests, {} view changes, {} state transfers",
                    snapshot.status.view.0,
                    snapshot.status.last_executed.0,
                    snapshot.metrics.requests_executed,
                    snapshot.metrics.view_changes_completed,
                    snapshot.metrics.state_transfers_completed,
                );
            }
            None => println!("replica {id}: stopped"),
        }
    }
    println!(
        "counters: {}",
        if counters_ok {
            "every acknowledged increment applied exactly once"
        } else {
            "MISMATCH"
        }
    );
    client.shutdown().await;
    cluster.shutdown().await;
    if !counters_ok {
        return Err(DemoError::Stalled("counters do not match".into()));
    }
    if final_view == 0 {
        return Err(DemoError::Stalled(
            "the primary was stopped but no view change happened".into(),
        ));
    }
    Ok(DemoReport {
        completed,
        failed,
        final_view,
        latency,
    })
}
