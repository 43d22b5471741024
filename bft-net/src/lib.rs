//! bft-net: the `bft-core` replica and client on a real network.
//!
//! - [`identity`]: TLS 1.3 over QUIC with raw ed25519 public keys (RFC 7250): a replica accepts
//!   only configured replica keys and admitted client keys, and knows which one connected.
//! - [`framing`]: length-prefixed frames, the size limit checked before anything is buffered.
//! - [`transport`]: per-peer bounded queues that never block, re-dialling with backoff,
//!   disconnection of peers that send oversized, malformed or too many frames.
//! - [`driver`]: the task that owns a replica; verification runs before it, in parallel batches;
//!   steps are group-committed.
//! - [`durable`]: starting a replica from its data directory (disk log and snapshots).
//! - [`client`]: the async client, `invoke(operation).await`.
//! - [`node`]: a replica in one call ([`ReplicaNode::start`]), a loopback cluster for examples.
#![forbid(unsafe_code)]

pub mod client;
pub mod driver;
pub mod durable;
pub mod framing;
pub mod identity;
pub mod node;
mod persister;
pub mod transport;

pub use client::{AsyncClient, ClientOptions, ConnectError, InvokeError};
pub use driver::{DriverError, ReplicaHandle, Snapshot, spawn_replica};
pub use durable::{StartError, recover_replica};
pub use node::{LocalCluster, LocalClusterOptions, NodeError, ReplicaNode};
pub use transport::{Inbound, Transport, TransportCounters, TransportError, TransportOptions};
