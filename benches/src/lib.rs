//! The cluster harness: an n = 3f+1 cluster of real replicas over QUIC on loopback, in this
//! process, driven by closed-loop clients for a fixed time; throughput and latency measured.
//!
//! Storage is chosen per run ([`StorageMode`]): in memory, or durable (each replica's disk log
//! and snapshots in its own data directory, fsynced before anything is sent, with group commit).
#![forbid(unsafe_code)]

pub mod baseline;
pub mod cluster;
pub mod etcd;
pub mod load;
pub mod processes;
pub mod report;
pub mod resources;
pub mod service;

pub use baseline::{BaselineClient, BaselineCluster};
pub use cluster::{BenchCluster, ClientKeys, ClusterSpec, StorageMode};
pub use load::{LoadReport, LoadSpec, Target, run_load};
pub use processes::{ReplicaArgs, ReplicaProcesses};
