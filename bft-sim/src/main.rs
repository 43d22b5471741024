//! `bft-sim`: run seeds of the deterministic simulator.
//!
//! ```text
//! cargo run --release -p bft-sim -- --seeds 0..2000          # a summary of 2000 seeds
//! cargo run --release -p bft-sim -- --seed 17 --trace        # replay one seed, event by event
//! cargo run --release -p bft-sim -- --seeds 0..200 --check-determinism
//! cargo run --release -p bft-sim --features canaries -- --seeds 0..500 --canary new-view-ignores-prepared
//! ```
#![forbid(unsafe_code)]

use bft_sim::{Canary, Options, run_seed, run_seeds};
use clap::Parser;
use std::ops::Range;
use std::process::ExitCode;

/// Runs the real bft-core replicas under seeded faults and checks safety, liveness and
/// linearizability.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A range of seeds, `START..END` (END excluded).
    #[arg(long, value_parser = parse_range, default_value = "0..100")]
    seeds: Range<u64>,
    /// Run one seed (prints its scenario and result); overrides --seeds.
    #[arg(long)]
    seed: Option<u64>,
    /// With --seed: print every event.
    #[arg(long)]
    trace: bool,
    /// Force the cluster size (4 or 7); by default one seed in four runs 7 replicas.
    #[arg(long, value_parser = parse_replicas)]
    replicas: Option<usize>,
    /// Plant a bug to show that the checkers catch it (core bugs need `--features canaries`):
    /// new-view-ignores-prepared, accept-conflicting-pre-prepare, unbounded-future-buffer,
    /// forget-signed-on-restart.
    #[arg(long, value_parser = parse_canary)]
    canary: Option<Canary>,
    /// Run every seed twice and compare the trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("expected START..END, got {text:?}"))?;
    let start: u64 = start.parse().map_err(|e| format!("start: {e}"))?;
    let end: u64 = end.parse().map_err(|e| format!("end: {e}"))?;
    if end <= start {
        return Err(format!("empty range {text}"));
    }
    Ok(start..end)
}

fn parse_replicas(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 4 && (n - 1) % 3 == 0 => Ok(n),
        _ => Err(format!("replicas must be 3f+1 (4, 7, 10, ...), got {text}")),
    }
}

fn parse_canary(text: &str) -> Result<Canary, String> {
    let canary = Canary::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = Canary::all().into_iter().map(Canary::name).collect();
        format!("unknown canary {text:?}; known: {}", names.join(", "))
    })?;
    if matches!(canary, Canary::Core(_)) && !bft_core::planted::AVAILABLE {
        return Err(format!(
            "{text} is planted in bft-core: build with `--features canaries`"
        ));
    }
    Ok(canary)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        replicas: args.replicas,
        canary: args.canary,
    };
    if let Some(seed) = args.seed {
        let result = run_seed(seed, &options, args.trace);
        let stats = &result.stats;
        println!(
            "seed {seed}: {} requests completed, max view {}, {} view changes, {} state transfers, {} events, {:?} virtual, trace hash {}",
            stats.requests_completed,
            stats.max_view,
            stats.view_changes,
            stats.state_transfers,
            stats.events,
            stats.virtual_time,
            result.trace_hash
        );
        println!("faults: {:?}", stats.faults);
        if result.violations.is_empty() {
            println!("ok");
            return ExitCode::SUCCESS;
        }
        for violation in &result.violations {
            println!("VIOLATION {violation}");
        }
        println!("replay: {}", result.scenario.replay_command());
        return ExitCode::FAILURE;
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let summary = run_seeds(args.seeds, &options, threads, args.check_determinism);
    print!("{summary}");
    if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
