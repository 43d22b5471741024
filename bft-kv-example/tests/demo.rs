//! `bft-kv demo` runs to completion: four replicas in one process, a backup and then the primary
//! stopped, a view change, a latency summary.

mod process;

use process::{describe, run};

#[test]
fn demo_runs_to_completion() {
    let output = run(&["demo", "--requests", "48", "--no-progress"]);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "act 4: primary r0 stopped",
        "view change: now view",
        "latency: p50",
        "exactly once",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing: {}",
            describe(&output)
        );
    }
}
