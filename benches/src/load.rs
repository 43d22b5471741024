//! Closed-loop load: each client keeps one operation outstanding for the run's duration, while
//! the process's CPU time and resident memory are sampled.

use crate::baseline::BaselineClient;
use crate::etcd::EtcdClient;
use crate::resources::{self, Resources};
use bft_net::AsyncClient;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What load to apply.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Concurrent closed-loop clients (at most the identities the client holds).
    pub clients: usize,
    /// Bytes per operation (an 8-byte key, then the value).
    pub operation_bytes: usize,
    /// Time before measuring (not counted).
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
}

/// The system a load runs against.
#[derive(Clone)]
pub enum Target {
    /// The BFT cluster, through the library's async client (f+1 matching replies).
    Bft {
        /// The client.
        client: AsyncClient,
        /// The replicas' process ids when they run in processes of their own (their CPU and
        /// memory count with this process's, and each one's memory is reported); empty when
        /// they run in this process.
        servers: Arc<[u32]>,
    },
    /// The crash-only baseline (the sequencer's one reply).
    CrashOnly(BaselineClient),
    /// An etcd cluster in other processes: an operation is a PUT of its bytes after the first 8
    /// (the value) at its first 8 (the key).
    Etcd {
        /// The gRPC client.
        client: EtcdClient,
        /// The members' process ids, whose CPU and memory count with this process's.
        servers: Arc<[u32]>,
    },
}

impl Target {
    async fn invoke(&self, lane: usize, operation: Vec<u8>) -> bool {
        match self {
            Target::Bft { client, .. } => client.invoke(operation).await.is_ok(),
            Target::CrashOnly(client) => client.invoke(lane, operation).await.is_ok(),
            Target::Etcd { client, .. } => {
                let mut key = operation;
                let value = key.split_off(8.min(key.len()));
                client.put(lane, key, value).await.is_ok()
            }
        }
    }

    /// Processes other than this one that serve the target.
    fn servers(&self) -> Arc<[u32]> {
        match self {
            Target::Etcd { servers, .. } | Target::Bft { servers, .. } => servers.clone(),
            Target::CrashOnly(_) => Arc::from([]),
        }
    }

    /// Closes the client's connections.
    pub async fn shutdown(self) {
        match self {
            Target::Bft { client, .. } => client.shutdown().await,
            Target::CrashOnly(client) => client.shutdown().await,
            Target::Etcd { client, .. } => client.shutdown().await,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Operations completed in the measured time.
    pub operations: u64,
    /// Operations that failed (timed out) in the measured time.
    pub failures: u64,
    /// The measured time.
    pub elapsed: Duration,
    /// Latency of each completed operation, in microseconds.
    pub latency_us: Histogram<u64>,
    /// CPU time (user + system) spent in the measured time by this process (servers and
    /// clients, or clients only) and by the target's server processes if it has any.
    pub cpu: Duration,
    /// Resident memory of the process (plus the target's server processes) when measuring
    /// began, in bytes.
    pub rss_start: u64,
    /// Highest resident memory sampled during the measured time, in bytes.
    pub rss_peak: u64,
    /// Resident memory when measuring ended, in bytes.
    pub rss_end: u64,
    /// Each server process's memory (the target's, in order; empty without any).
    pub servers: Vec<ProcessMemory>,
}

impl LoadReport {
    /// Operations per second.
    pub fn throughput(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile, in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// CPU seconds per thousand operations (servers and clients).
    pub fn cpu_seconds_per_kop(&self) -> f64 {
        if self.operations == 0 {
            return f64::NAN;
        }
        self.cpu.as_secs_f64() * 1000.0 / self.operations as f64
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `spec` against `target`; `tick` is called about once a second (for a progress bar).
pub async fn run_load(
    target: &Target,
    spec: &LoadSpec,
    tick: impl Fn() + Send + 'static,
) -> LoadReport {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let sampler = tokio::spawn(sample_resources(
        start,
        measure_from,
        end,
        target.servers(),
        tick,
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..spec.clients {
        let target = target.clone();
        let bytes = spec.operation_bytes.max(8);
        tasks.spawn(async move {
            let mut histogram = new_histogram();
            let (mut done, mut failed) = (0u64, 0u64);
            let mut i = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let key = (lane as u64) << 32 | (i % 1024);
                i += 1;
                let mut operation = key.to_le_bytes().to_vec();
                operation.resize(bytes, b'v');
                let ok = target.invoke(lane, operation).await;
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
    let mut operations = 0;
    let mut failures = 0;
    let mut latency_us = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        let (done, failed, histogram) = joined.expect("load task");
        operations += done;
        failures += failed;
        latency_us
            .add(histogram)
            .expect("histograms with equal bounds");
    }
    let usage = sampler.await.expect("sampler task");
    LoadReport {
        operations,
        failures,
        elapsed: spec.duration,
        latency_us,
        cpu: usage.cpu,
        rss_start: usage.rss_start,
        rss_peak: usage.rss_peak,
        rss_end: usage.rss_end,
        servers: usage.servers,
    }
}

/// One server process's resident memory over a run, in bytes.
#[derive(Debug, Clone, Default)]
pub struct ProcessMemory {
    /// When measuring began.
    pub rss_start: u64,
    /// When measuring ended.
    pub rss_end: u64,
    /// The highest since the process started (`VmHWM`), read when measuring ended.
    pub rss_peak: u64,
    /// Sampled about once a second through the measured time (to see whether it grows).
    pub rss_by_second: Vec<u64>,
}

/// What the sampler saw in the measured time.
struct Usage {
    cpu: Duration,
    rss_start: u64,
    rss_peak: u64,
    rss_end: u64,
    servers: Vec<ProcessMemory>,
}

/// This process's resources plus those of `servers`.
fn sample_all(servers: &[u32]) -> Resources {
    let own = resources::sample();
    match resources::sample_processes(servers) {
        Some(other) => Resources {
            cpu: own.cpu + other.cpu,
            rss_bytes: own.rss_bytes + other.rss_bytes,
        },
        None => own,
    }
}

async fn sample_resources(
    start: Instant,
    measure_from: Instant,
    end: Instant,
    servers: Arc<[u32]>,
    tick: impl Fn(),
) -> Usage {
    let mut next_tick = start + Duration::from_secs(1);
    while next_tick <= measure_from {
        tokio::time::sleep_until(next_tick.into()).await;
        tick();
        next_tick += Duration::from_secs(1);
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let first = sample_all(&servers);
    let servers_now = || -> Vec<u64> {
        servers
            .iter()
            .map(|pid| resources::resident_bytes_of(*pid).unwrap_or(0))
            .collect()
    };
    let servers_at_start = servers_now();
    let mut servers_by_second: Vec<Vec<u64>> = vec![servers_at_start.clone()];
    let mut peak = first.rss_bytes;
    let period = Duration::from_millis(200);
    let mut at = measure_from + period;
    while at < end {
        tokio::time::sleep_until(at.into()).await;
        peak = peak.max(sample_all(&servers).rss_bytes);
        if at >= next_tick {
            tick();
            next_tick += Duration::from_secs(1);
            if !servers.is_empty() {
                servers_by_second.push(servers_now());
            }
        }
        at += period;
    }
    tokio::time::sleep_until(end.into()).await;
    let final_sample: Resources = sample_all(&servers);
    let rss_end = servers_now();
    let servers = servers
        .iter()
        .enumerate()
        .map(|(i, pid)| ProcessMemory {
            rss_start: servers_at_start[i],
            rss_end: rss_end[i],
            rss_peak: resources::peak_resident_bytes_of(*pid).unwrap_or(0),
            rss_by_second: servers_by_second.iter().map(|sample| sample[i]).collect(),
        })
        .collect();
    Usage {
        servers,
        cpu: final_sample.cpu.saturating_sub(first.cpu),
        rss_start: first.rss_bytes,
        rss_peak: peak.max(final_sample.rss_bytes),
        rss_end: final_sample.rss_bytes,
    }
}
