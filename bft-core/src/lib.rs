//! The sans-IO core of a PBFT replication library (Castro and Liskov, OSDI 1999; TOCS 2002).
//!
//! # The sans-IO contract
//!
//! [`Replica`] and [`Client`] are plain structs. They never read a clock, open a socket, spawn a
//! thread or ask the operating system for randomness. A driver owns them and does all I/O:
//!
//! ```text
//! bytes from the network ──► Verifier::verify / verify_batch ──► Verified message (or a typed
//!                                                                 VerifyError, counted, dropped)
//! replica.step(now, Input::Message(verified))   // or Input::Tick when poll_timeout() has passed
//!     ──► Actions
//! actions.persist_then_send(&mut storage)?      // records durable BEFORE anything is sent
//!     ──► Vec<Outgoing>: signed, encoded frames with destinations
//! replica.poll_timeout()                         // the next deadline to tick at
//! ```
//!
//! - Time is a value ([`Time`]) passed into every step.
//! - Untrusted bytes reach protocol logic only through [`Verifier`], a pure function of the
//!   configuration and the frame, which a driver may run on other threads and in batches; its
//!   output type [`Verified`] cannot be built elsewhere.
//! - The only way to obtain a step's frames is [`Actions::persist_then_send`], which persists the
//!   step's [`Record`]s first (what the replica signed, and what it accepted) and, when a
//!   checkpoint became stable, a [`DurableCheckpoint`] that supersedes them. After a crash,
//!   [`Replica::recover`] rebuilds the replica from them, so a restarted replica never signs a
//!   message that conflicts with one it signed before (see `replica/recovery.rs`).
//! - The user's [`Service`] runs inside the replica, deterministically; a panic in it is contained
//!   and becomes the same error outcome on every correct replica.
//!
//! # Errors
//!
//! Untrusted input is refused with a typed reason ([`VerifyError`] before protocol logic,
//! [`Rejection`] inside it), counted in [`Metrics`], and never panics. Local calls return
//! `Result`s ([`ConfigError`], [`ClientError`]). Internal invariants are assertions, checked after
//! every step in debug builds.
#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod config;
pub mod ids;
pub mod messages;
pub mod planted;
pub mod replica;
pub mod service;
pub mod testkit;
pub mod verify;

pub use client::{Client, ClientActions, ClientError, ClientInput, ClientRejection, Completed};
pub use config::{ClusterConfig, ConfigError, Limits, Timing};
pub use ids::{ClientId, Principal, ReplicaId, SeqNum, Time, View};
pub use messages::{MessageKind, Outcome};
pub use replica::{
    Actions, Destination, DurableCheckpoint, Executed, Input, MemoryStorage, Metrics, Outgoing,
    Phase, Record, RecoveryError, RecoveryReport, Rejected, Rejection, Replica, SignedRecord,
    StableCertificate, StableState, Status, Storage,
};
pub use service::{ExecuteContext, RestoreError, Service};
pub use verify::{
    AdmittedRequest, DirectAdmission, DirectRequests, Verified, VerifiedMessage, Verifier,
    VerifyError,
};
