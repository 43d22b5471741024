//! Closed-loop load: each client keeps one operation outstanding for the run's duration.

use bft_net::AsyncClient;
use hdrhistogram::Histogram;
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
}

/// Runs `spec` against the cluster behind `client`.
pub async fn run_load(client: &AsyncClient, spec: &LoadSpec) -> LoadReport {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..spec.clients {
        let client = client.clone();
        let bytes = spec.operation_bytes.max(8);
        tasks.spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds");
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
                let result = client.invoke(operation).await;
                let finished = Instant::now();
                if sent < measure_from || finished > end {
                    continue;
                }
                match result {
                    Ok(_) => {
                        done += 1;
                        let micros = (finished - sent).as_micros() as u64;
                        histogram.saturating_record(micros.max(1));
                    }
                    Err(_) => failed += 1,
                }
            }
            (done, failed, histogram)
        });
    }
    let mut report = LoadReport {
        operations: 0,
        failures: 0,
        elapsed: spec.duration,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
    };
    while let Some(joined) = tasks.join_next().await {
        let (done, failed, histogram) = joined.expect("load task");
        report.operations += done;
        report.failures += failed;
        report
            .latency_us
            .add(histogram)
            .expect("histograms with equal bounds");
    }
    report
}
