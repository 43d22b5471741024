//! bft-kv-example: a replicated key-value store built on `bft-net`.
//!
//! - [`ops`]: the operations and replies ([`ops::KvOp`], [`ops::KvReply`]) and their encoding.
//! - [`service`]: the deterministic store, a [`bft_core::Service`].
//! - [`config`]: the cluster configuration file (TOML) and the key file conventions.
//! - [`client`]: [`client::KvClient`], typed operations over [`bft_net::AsyncClient`].
//! - [`keygen`], [`replica`], [`display`], [`demo`], [`signal`]: what the `bft-kv` command line
//!   runs.
//! - [`resp`]: a sans-IO RESP2 (Redis protocol) parser and reply encoder.
//! - [`gateway`]: the Redis-protocol gateway (`bft-kv gateway`): Redis clients on a cluster.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod demo;
pub mod display;
pub mod gateway;
pub mod keygen;
pub mod ops;
pub mod replica;
pub mod resp;
pub mod service;
pub mod signal;
