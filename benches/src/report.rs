//! The cluster harness's results: medians per configuration, the ratios between systems, a
//! table for the terminal and the README, `results.json`, and SVG plots.

use crate::cluster::ClientKeys;
use crate::load::LoadReport;
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// A system the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SystemKind {
    /// The BFT cluster with its records in memory.
    Bft,
    /// The BFT cluster with a disk log and snapshots per replica (fsync, group commit).
    BftDisk,
    /// The crash-only baseline: a sequencer multicasting batches, done at a majority.
    CrashOnly,
    /// A 3-member etcd (Debian's `etcd-server`, fsync on) on loopback, written through its
    /// gRPC API: the store users pick today.
    Etcd,
}

impl SystemKind {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Bft => "bft",
            SystemKind::BftDisk => "bft-disk",
            SystemKind::CrashOnly => "crash-only",
            SystemKind::Etcd => "etcd",
        }
    }
}

/// The members of the etcd cluster the harness runs (its `n`).
pub const ETCD_MEMBERS: usize = 3;

/// One run, summarized.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Operations per second.
    pub ops_per_second: f64,
    /// Latency percentiles, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest operation.
    pub max_ms: f64,
    /// CPU seconds (the whole process: every replica and every client) per 1000 operations.
    pub cpu_seconds_per_1000_ops: f64,
    /// Highest resident memory of the process during the measured time, in MiB.
    pub rss_peak_mib: f64,
    /// Resident memory at the start and end of the measured time, in MiB.
    pub rss_start_mib: f64,
    /// See `rss_start_mib`.
    pub rss_end_mib: f64,
    /// Operations that timed out.
    pub failures: u64,
    /// Operations completed.
    pub operations: u64,
    /// Each replica's resident memory when replicas run in processes of their own
    /// (`--replica-processes`), by replica id. Empty otherwise (the process-wide figures above
    /// then cover replicas and clients together).
    pub replicas: Vec<ReplicaMemory>,
}

/// One replica process's resident memory over a run, in MiB.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaMemory {
    /// When measuring began.
    pub rss_start_mib: f64,
    /// When measuring ended.
    pub rss_end_mib: f64,
    /// The highest since the process started.
    pub rss_peak_mib: f64,
    /// About once a second through the measured time.
    pub rss_by_second_mib: Vec<f64>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

impl RunSummary {
    fn of(report: &LoadReport) -> RunSummary {
        RunSummary {
            ops_per_second: report.throughput(),
            p50_ms: report.latency_ms(0.5),
            p99_ms: report.latency_ms(0.99),
            p999_ms: report.latency_ms(0.999),
            max_ms: report.latency_us.max() as f64 / 1000.0,
            cpu_seconds_per_1000_ops: report.cpu_seconds_per_kop(),
            rss_peak_mib: mib(report.rss_peak),
            rss_start_mib: mib(report.rss_start),
            rss_end_mib: mib(report.rss_end),
            failures: report.failures,
            operations: report.operations,
            replicas: report
                .servers
                .iter()
                .map(|m| ReplicaMemory {
                    rss_start_mib: mib(m.rss_start),
                    rss_end_mib: mib(m.rss_end),
                    rss_peak_mib: mib(m.rss_peak),
                    rss_by_second_mib: m.rss_by_second.iter().map(|b| mib(*b)).collect(),
                })
                .collect(),
        }
    }
}

/// All runs of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The system.
    pub system: SystemKind,
    /// Replicas (nodes, for the baseline).
    pub n: usize,
    /// Closed-loop clients.
    pub clients: usize,
    /// The run with the median throughput.
    pub median: RunSummary,
    /// Every run, in the order they ran.
    pub runs: Vec<RunSummary>,
    /// The largest distance of a run's throughput from the median's, as a fraction of it.
    pub spread: f64,
    /// The median run's latency distribution: (fraction of operations, at most this many ms).
    pub latency_cdf: Vec<(f64, f64)>,
}

impl Measurement {
    /// Summarizes the runs of one configuration (at least one).
    pub fn from_runs(
        system: SystemKind,
        n: usize,
        clients: usize,
        reports: Vec<LoadReport>,
    ) -> Measurement {
        let runs: Vec<RunSummary> = reports.iter().map(RunSummary::of).collect();
        let mut order: Vec<usize> = (0..reports.len()).collect();
        order.sort_by(|&a, &b| runs[a].ops_per_second.total_cmp(&runs[b].ops_per_second));
        let middle = order[order.len() / 2];
        let median = runs[middle].clone();
        let spread = runs
            .iter()
            .map(|r| (r.ops_per_second - median.ops_per_second).abs() / median.ops_per_second)
            .fold(0.0, f64::max);
        let histogram = &reports[middle].latency_us;
        let latency_cdf = if histogram.is_empty() {
            Vec::new()
        } else {
            histogram
                .iter_quantiles(4)
                .map(|v| {
                    (
                        v.quantile_iterated_to(),
                        v.value_iterated_to() as f64 / 1000.0,
                    )
                })
                .collect()
        };
        Measurement {
            system,
            n,
            clients,
            median,
            runs,
            spread,
            latency_cdf,
        }
    }

    fn label(&self) -> String {
        format!("{} n={}", self.system.name(), self.n)
    }
}

/// A ratio between two systems' median throughput in the same configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// What is compared, `a / b`.
    pub name: String,
    /// Replicas.
    pub n: usize,
    /// Closed-loop clients.
    pub clients: usize,
    /// The ratio of median throughputs.
    pub value: f64,
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The machine (CPU model, cores, kernel).
    pub machine: String,
    /// Bytes per operation.
    pub operation_bytes: usize,
    /// Measured seconds per run.
    pub seconds: u64,
    /// Warm-up seconds per run.
    pub warmup_seconds: u64,
    /// Runs per configuration.
    pub runs: usize,
    /// How the clients were keyed (`ClientKeys`): `shared` (sessions of one client, one
    /// connection per replica) or `per-session` (a key and connections per client).
    pub client_keys: String,
    /// Every configuration.
    pub measurements: Vec<Measurement>,
}

impl Results {
    /// Empty results for runs of this shape, with clients keyed as `client_keys` says.
    pub fn new(
        operation_bytes: usize,
        seconds: u64,
        warmup_seconds: u64,
        runs: usize,
        client_keys: ClientKeys,
    ) -> Results {
        Results {
            machine: machine_description(),
            operation_bytes,
            seconds,
            warmup_seconds,
            runs,
            client_keys: client_keys.name().into(),
            measurements: Vec::new(),
        }
    }

    /// Adds one configuration's runs.
    pub fn push(&mut self, measurement: Measurement) {
        self.measurements.push(measurement);
    }

    fn find(&self, system: SystemKind, n: usize, clients: usize) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.system == system && m.n == n && m.clients == clients)
    }

    /// The ratios between systems (and between cluster sizes) measured in this invocation.
    pub fn ratios(&self) -> Vec<Ratio> {
        let mut ratios = Vec::new();
        let pairs = [
            (SystemKind::Bft, SystemKind::CrashOnly, "bft / crash-only"),
            (
                SystemKind::BftDisk,
                SystemKind::CrashOnly,
                "bft-disk / crash-only",
            ),
            (SystemKind::BftDisk, SystemKind::Bft, "bft-disk / bft"),
            (SystemKind::BftDisk, SystemKind::Etcd, "bft-disk / etcd"),
            (SystemKind::Bft, SystemKind::Etcd, "bft / etcd"),
        ];
        for m in &self.measurements {
            for (a, b, name) in pairs {
                if m.system != a {
                    continue;
                }
                // etcd always has its 3 members.
                let n = if b == SystemKind::Etcd {
                    ETCD_MEMBERS
                } else {
                    m.n
                };
                if let Some(other) = self.find(b, n, m.clients) {
                    ratios.push(Ratio {
                        name: name.to_string(),
                        n: m.n,
                        clients: m.clients,
                        value: m.median.ops_per_second / other.median.ops_per_second,
                    });
                }
            }
            if m.n > 4
                && let Some(small) = self.find(m.system, 4, m.clients)
            {
                ratios.push(Ratio {
                    name: format!("{} n={} / n=4", m.system.name(), m.n),
                    n: m.n,
                    clients: m.clients,
                    value: m.median.ops_per_second / small.median.ops_per_second,
                });
            }
        }
        ratios
    }

    /// A Markdown table of the medians and the ratios.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "machine: {}", self.machine);
        let _ = writeln!(
            out,
            "{}-byte operations, {} s measured after {} s warm-up, median of {} runs, client keys {}",
            self.operation_bytes, self.seconds, self.warmup_seconds, self.runs, self.client_keys
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| system | n | clients | ops/s | p50 ms | p99 ms | p999 ms | CPU s / 1000 ops | peak RSS MiB | spread |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
        for m in &self.measurements {
            let r = &m.median;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {:.0} | {:.1}% |",
                m.system.name(),
                m.n,
                m.clients,
                r.ops_per_second,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.cpu_seconds_per_1000_ops,
                r.rss_peak_mib,
                m.spread * 100.0
            );
        }
        let ratios = self.ratios();
        if !ratios.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "| ratio (median throughput) | n | clients | value |");
            let _ = writeln!(out, "|---|---|---|---|");
            for ratio in ratios {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.2} |",
                    ratio.name, ratio.n, ratio.clients, ratio.value
                );
            }
        }
        out
    }
}

/// Writes `results.json`, `results.md`, `throughput.svg` and `latency.svg` into `dir`.
pub fn write_results(results: &Results, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    #[derive(Serialize)]
    struct Json<'a> {
        #[serde(flatten)]
        results: &'a Results,
        ratios: Vec<Ratio>,
    }
    let json = serde_json::to_string_pretty(&Json {
        results,
        ratios: results.ratios(),
    })?;
    std::fs::write(dir.join("results.json"), json)?;
    std::fs::write(dir.join("results.md"), results.table())?;
    plot_throughput(results, &dir.join("throughput.svg"))?;
    plot_latency(results, &dir.join("latency.svg"))?;
    Ok(())
}

/// One color per system, darker for larger clusters.
fn series_color(system: SystemKind, n: usize) -> RGBAColor {
    let (r, g, b) = match system {
        SystemKind::Bft => (31u8, 119u8, 180u8),
        SystemKind::BftDisk => (214, 39, 40),
        SystemKind::CrashOnly => (44, 160, 44),
        SystemKind::Etcd => (148, 103, 189),
    };
    let shade = |c: u8| (f64::from(c) * 4.0 / n.max(4) as f64) as u8;
    RGBColor(shade(r), shade(g), shade(b)).to_rgba()
}

/// The series of a plot: one per (system, n), in the order first measured.
fn series_keys(results: &Results) -> Vec<(SystemKind, usize)> {
    let mut keys: Vec<(SystemKind, usize)> = Vec::new();
    for m in &results.measurements {
        if !keys.contains(&(m.system, m.n)) {
            keys.push((m.system, m.n));
        }
    }
    keys
}

fn plot_throughput(results: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_clients = results
        .measurements
        .iter()
        .map(|m| m.clients)
        .max()
        .unwrap_or(1);
    let max_ops = results
        .measurements
        .iter()
        .map(|m| m.median.ops_per_second)
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput against closed-loop clients", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1f64..(max_clients as f64 * 1.5)).log_scale(),
            0f64..max_ops * 1.15,
        )?;
    chart
        .configure_mesh()
        .x_desc("clients (log scale)")
        .y_desc("operations / s (median run)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (system, n) in series_keys(results) {
        let color = series_color(system, n);
        let points: Vec<(f64, f64)> = results
            .measurements
            .iter()
            .filter(|m| m.system == system && m.n == n)
            .map(|m| (m.clients as f64, m.median.ops_per_second))
            .collect();
        let label = format!("{} n={n}", system.name());
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_latency(results: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let clients = results
        .measurements
        .iter()
        .map(|m| m.clients)
        .max()
        .unwrap_or(1);
    let shown: Vec<&Measurement> = results
        .measurements
        .iter()
        .filter(|m| m.clients == clients && !m.latency_cdf.is_empty())
        .collect();
    let max_ms = shown
        .iter()
        .flat_map(|m| m.latency_cdf.iter().map(|(_, ms)| *ms))
        .fold(0.01, f64::max);
    let min_ms = shown
        .iter()
        .flat_map(|m| m.latency_cdf.iter().map(|(_, ms)| *ms))
        .fold(max_ms, f64::min)
        .max(0.001);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Latency distribution, {clients} closed-loop clients (median run)"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((min_ms * 0.8..max_ms * 1.25).log_scale(), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("fraction of operations at most this slow")
        .draw()?;
    for m in shown {
        let color = series_color(m.system, m.n);
        chart
            .draw_series(LineSeries::new(
                m.latency_cdf.iter().map(|&(q, ms)| (ms, q)),
                color.stroke_width(2),
            ))?
            .label(m.label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The CPU model, core count and kernel, as far as `/proc` tells.
fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.to_string());
    format!("{cpu}, {cores} cores, {kernel}")
}
