//! Property checks behind the cargo-fuzz targets in the repository's `fuzz/` directory.
//!
//! Each target is one pure function of arbitrary bytes. It must never panic on bad input: it
//! panics (with `assert!`) only when a property of the code under test is violated. The same
//! functions are called by the libFuzzer targets (`fuzz/fuzz_targets/*.rs`, nightly or
//! `RUSTC_BOOTSTRAP=1`) and by this crate's `tests/corpus.rs`, which replays the committed seed
//! corpora and a fixed-seed pseudo-random run on the stable toolchain, so CI checks the
//! properties on every change.
//!
//! | target | property |
//! |---|---|
//! | [`wire_decode`] | frame and payload decoding never panics, honours the size limit, and what decodes re-encodes to an equal value whose canonical bytes are a fixed point |
//! | [`verify`] | single and batch signature verification agree, for raw triples and for [`bft_core::Verifier`] |
//! | [`frame_reader`] | the transport's length-prefixed [`bft_net::framing::FrameDecoder`] matches a reference parser whatever the chunking |
//! | [`kv_model`] | the replicated KV service matches an independent model; snapshots round-trip |
//! | [`replica_step`] | one replica under arbitrary inputs: no panic, bounded state, never two conflicting signatures |
//! | [`cluster`] | four replicas, one of them a twin, two clients, under an arbitrary schedule of deliveries, drops, partitions, timeouts and crashes (correct replicas recover from their storage): agreement, no conflicting signatures, recovery always possible |
//! | [`new_view`] | NEW-VIEW construction (new primary) and validation (backups) from arbitrary VIEW-CHANGE sets, against a reference implementation of PBFT section 4.4 |

mod cluster;
mod frame;
mod kv;
mod new_view;
mod replica;
mod verify;
mod wire;

pub use cluster::{ClusterOp, ClusterReport, ClusterSchedule, cluster, cluster_report};
pub use frame::frame_reader;
pub use kv::kv_model;
pub use new_view::{NewViewReport, new_view, new_view_report};
pub use replica::replica_step;
pub use verify::verify;
pub use wire::{WIRE_LIMIT, reencodes_byte_exact, wire_decode};

/// A target's check function.
pub type Check = fn(&[u8]);

/// The fuzz targets, by the names their `fuzz/fuzz_targets/*.rs` files and corpus directories use.
pub const TARGETS: [(&str, Check); 7] = [
    ("wire_decode", wire_decode),
    ("verify", verify),
    ("replica_step", replica_step),
    ("frame_reader", frame_reader),
    ("kv_model", kv_model),
    ("cluster", cluster),
    ("new_view", new_view),
];
