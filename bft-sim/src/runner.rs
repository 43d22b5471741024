//! Runs many seeds on all cores and sums them up.

use crate::checkers::ViolationKind;
use crate::scenario::Options;
use crate::simulation::{RunResult, run_seed};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a batch of seeds found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds per cluster size.
    pub by_size: BTreeMap<usize, u64>,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Seeds with a violation, in seed order.
    pub failures: Vec<RunResult>,
    /// Seeds whose second run hashed differently (determinism check).
    pub nondeterministic: Vec<u64>,
    /// Faults injected, by kind, over all seeds.
    pub faults: BTreeMap<&'static str, u64>,
    /// Seeds in which each fault kind occurred.
    pub seeds_with_fault: BTreeMap<&'static str, u64>,
    /// Seeds with a violation of each kind.
    pub violations: BTreeMap<ViolationKind, u64>,
    /// Client operations completed.
    pub requests_completed: u64,
    /// Executions checked on correct replicas.
    pub executions_checked: u64,
    /// New views installed on correct replicas.
    pub view_changes: u64,
    /// State transfers completed on correct replicas.
    pub state_transfers: u64,
    /// Events processed.
    pub events: u64,
    /// Frames delivered.
    pub delivered: u64,
    /// Virtual time simulated.
    pub virtual_time: Duration,
    /// The longest time, over all seeds, from the faults healing to every client finishing.
    pub max_recovery_time: Duration,
    /// Seeds whose linearizability search ran out of budget.
    pub linearizability_inconclusive: u64,
}

impl Summary {
    fn add(&mut self, result: &RunResult) {
        let stats = &result.stats;
        self.seeds += 1;
        *self.by_size.entry(result.scenario.n()).or_default() += 1;
        for (fault, count) in &stats.faults {
            *self.faults.entry(fault).or_default() += count;
            *self.seeds_with_fault.entry(fault).or_default() += 1;
        }
        let kinds: std::collections::BTreeSet<ViolationKind> =
            result.violations.iter().map(|v| v.kind).collect();
        for kind in kinds {
            *self.violations.entry(kind).or_default() += 1;
        }
        self.requests_completed += stats.requests_completed;
        self.executions_checked += stats.executions_checked;
        self.view_changes += stats.view_changes;
        self.state_transfers += stats.state_transfers;
        self.events += stats.events;
        self.delivered += stats.delivered;
        self.virtual_time += stats.virtual_time;
        if let Some(recovery) = stats.recovery_time {
            self.max_recovery_time = self.max_recovery_time.max(recovery);
        }
        self.linearizability_inconclusive += u64::from(stats.linearizability_inconclusive);
    }

    /// Seeds per second of wall-clock time.
    pub fn seeds_per_second(&self) -> f64 {
        self.seeds as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// True if every seed passed every check.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.nondeterministic.is_empty()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: Vec<String> = self
            .by_size
            .iter()
            .map(|(n, count)| format!("n={n}: {count}"))
            .collect();
        writeln!(
            out,
            "{} seeds ({}) in {:.1?}: {:.1} seeds/s, {:.0?} virtual time",
            self.seeds,
            sizes.join(", "),
            self.elapsed,
            self.seeds_per_second(),
            self.virtual_time
        )?;
        writeln!(
            out,
            "requests completed {}, executions checked {}, view changes {}, state transfers {}, frames delivered {}, events {}",
            self.requests_completed,
            self.executions_checked,
            self.view_changes,
            self.state_transfers,
            self.delivered,
            self.events
        )?;
        writeln!(
            out,
            "longest recovery after the faults healed: {:.3?} (bound {:?})",
            self.max_recovery_time,
            crate::scenario::LIVENESS_LIMIT
        )?;
        writeln!(out, "faults injected (total / seeds):")?;
        for (fault, count) in &self.faults {
            writeln!(
                out,
                "  {fault:<34} {count:>9} / {}",
                self.seeds_with_fault[fault]
            )?;
        }
        if self.linearizability_inconclusive > 0 {
            writeln!(
                out,
                "linearizability inconclusive (search budget) in {} seeds",
                self.linearizability_inconclusive
            )?;
        }
        if self.violations.is_empty() {
            writeln!(out, "violations: none")?;
        } else {
            writeln!(out, "violations (seeds):")?;
            for (kind, count) in &self.violations {
                writeln!(out, "  {:<34} {count:>9}", kind.name())?;
            }
        }
        const SHOWN: usize = 10;
        if self.failures.len() > SHOWN {
            writeln!(
                out,
                "(first {SHOWN} of {} failing seeds)",
                self.failures.len()
            )?;
        }
        for failure in self.failures.iter().take(SHOWN) {
            writeln!(
                out,
                "FAILED seed {}: {}",
                failure.scenario.seed, failure.violations[0]
            )?;
            writeln!(out, "  replay: {}", failure.scenario.replay_command())?;
        }
        for seed in &self.nondeterministic {
            writeln!(
                out,
                "NONDETERMINISTIC seed {seed}: two runs hashed differently"
            )?;
        }
        Ok(())
    }
}

/// Runs `seeds` on `threads` threads. With `check_determinism`, each seed runs twice and the two
/// trace hashes must match.
pub fn run_seeds(
    seeds: Range<u64>,
    options: &Options,
    threads: usize,
    check_determinism: bool,
) -> Summary {
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        return;
                    }
                    let result = run_seed(seed, options, false);
                    let deterministic = !check_determinism
                        || run_seed(seed, options, false).trace_hash == result.trace_hash;
                    results
                        .lock()
                        .expect("no thread panics while holding the lock")
                        .push((result, deterministic));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("threads joined");
    results.sort_by_key(|(r, _)| r.scenario.seed);
    let mut summary = Summary::default();
    for (result, deterministic) in results {
        summary.add(&result);
        if !deterministic {
            summary.nondeterministic.push(result.scenario.seed);
        }
        if !result.violations.is_empty() {
            summary.failures.push(result);
        }
    }
    summary.elapsed = started.elapsed();
    summary
}
