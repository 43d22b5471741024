//! bft-sim: a deterministic simulator that runs the real `bft-core` replicas and clients in one
//! process, under faults drawn from a seed, and checks the protocol's guarantees as it goes.
//!
//! Models: TigerBeetle's VOPR (a safety phase with faults, then a liveness phase in which they
//! heal), FoundationDB's simulation (one thread, one seeded generator, virtual time), Twins (Bano
//! et al. 2021: a Byzantine replica run as two instances with one key), and Wing-Gong-Lowe for
//! linearizability (as in Porcupine).
//!
//! - [`scenario`]: what a seed runs: cluster size, limits, workload, network profile and
//!   episodes, crashes, Byzantine replicas and clients.
//! - [`simulation`]: the event loop.
//! - [`network`]: loss, duplication, delays, partitions, clogged links.
//! - [`byzantine`]: how a Byzantine replica corrupts what it sends, with only its own key.
//! - [`checkers`]: the safety checks run on every step.
//! - [`kv`] and [`linearizability`]: the workload's service and its history checker.
//! - [`runner`]: many seeds on all cores, and a summary.
#![forbid(unsafe_code)]

pub mod byzantine;
pub mod checkers;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod simulation;
pub mod trace;

pub use checkers::{Violation, ViolationKind};
pub use runner::{Summary, run_seeds};
pub use scenario::{Canary, Options, Scenario};
pub use simulation::{RunResult, Stats, run_seed};
