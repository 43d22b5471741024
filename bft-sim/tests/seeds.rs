//! Hundreds of seeds of the simulator, n=4 and n=7, must pass every check, deterministically.
//!
//! `BFT_SIM_SEEDS=START..END` replaces the n=4 range (to search further, or replay one failure).

use bft_sim::{Options, Summary, run_seeds};
use std::ops::Range;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn range_from_env(default: Range<u64>) -> Range<u64> {
    let Ok(text) = std::env::var("BFT_SIM_SEEDS") else {
        return default;
    };
    let (start, end) = text.split_once("..").expect("BFT_SIM_SEEDS is START..END");
    start.parse().expect("start")..end.parse().expect("end")
}

fn assert_passed(summary: &Summary) {
    print!("{summary}");
    assert!(summary.passed(), "seeds failed:\n{summary}");
}

#[test]
fn four_replicas_pass_every_check() {
    let options = Options {
        replicas: Some(4),
        ..Options::default()
    };
    let summary = run_seeds(range_from_env(0..500), &options, threads(), false);
    assert_passed(&summary);
    // The seeds really exercised the protocol and the faults.
    assert!(summary.requests_completed > 0);
    assert!(summary.view_changes > 0, "no seed changed view");
    assert!(summary.state_transfers > 0, "no seed transferred state");
    for fault in [
        "lost-frame",
        "duplicated-frame",
        "partition",
        "crash",
        "restart",
        "equivocate",
        "byzantine-client-conflict",
    ] {
        assert!(
            summary.faults.get(fault).is_some_and(|&c| c > 0),
            "no seed injected {fault}"
        );
    }
}

#[test]
fn seven_replicas_pass_every_check() {
    let options = Options {
        replicas: Some(7),
        ..Options::default()
    };
    let summary = run_seeds(1_000_000..1_000_150, &options, threads(), false);
    assert_passed(&summary);
    assert!(summary.requests_completed > 0);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let summary = run_seeds(2_000_000..2_000_030, &Options::default(), threads(), true);
    assert_passed(&summary);
    let a = bft_sim::run_seed(5, &Options::default(), false);
    let b = bft_sim::run_seed(5, &Options::default(), false);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.stats, b.stats);
    let c = bft_sim::run_seed(6, &Options::default(), false);
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "different seeds, different runs"
    );
}
