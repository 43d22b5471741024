//! The user's deterministic state machine, and how the replica runs it.

use crate::ids::{ClientId, SeqNum};
use crate::messages::Outcome;
use bft_crypto::{Digest, sha256};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a replica tells the service about the request it executes. Every field is agreed by the
/// protocol, so the service may use it deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecuteContext {
    /// The client that signed the request.
    pub client: ClientId,
    /// The client's timestamp for the request.
    pub timestamp: u64,
    /// The sequence number of the batch that holds the request.
    pub seq: SeqNum,
}

/// A replicated service: a deterministic state machine that every replica runs.
///
/// # Determinism contract
///
/// Given the same sequence of `execute` calls from the same starting state, every replica's
/// service must return the same replies and reach the same state, with the same
/// [`Service::state_digest`]. Anything that differs between machines breaks this: clocks,
/// randomness, iteration over `HashMap`/`HashSet` (use `BTreeMap` or sort), thread scheduling,
/// floating-point differences between platforms, environment variables, the file system. What a
/// service needs from outside must come in the operation itself.
///
/// A panic inside `execute` is contained: the replica stays up, records
/// [`Outcome::ServicePanicked`] for that request (as every correct replica does), and the client
/// gets that outcome. The state is whatever the operation left before panicking, which is the same
/// on every replica if the service is deterministic. Containment needs unwinding: do not build
/// with `panic = "abort"`.
pub trait Service {
    /// Executes one operation and returns the reply bytes.
    fn execute(&mut self, context: &ExecuteContext, operation: &[u8]) -> Vec<u8>;

    /// Serializes the whole state (for checkpoints and state transfer). Equal states must give
    /// equal bytes on every replica: the checkpoint digest that 2f+1 replicas sign is computed
    /// over these bytes.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the state with a snapshot taken by [`Service::snapshot`] (on this or another
    /// replica: state transfer installs snapshots that other replicas took). On error the state
    /// must be left as it was.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;

    /// A digest of the state; equal states must give equal digests. The default digests the
    /// snapshot.
    fn state_digest(&self) -> Digest {
        sha256(&self.snapshot())
    }
}

/// A snapshot the service cannot restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot cannot be restored: {0}")]
pub struct RestoreError(pub String);

/// Runs `execute`, turning a panic into [`Outcome::ServicePanicked`]
/// and a reply over `max_reply_bytes` into [`Outcome::ReplyTooLarge`].
pub(crate) fn execute_contained<S: Service>(
    service: &mut S,
    context: &ExecuteContext,
    operation: &[u8],
    max_reply_bytes: usize,
) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| service.execute(context, operation))) {
        Ok(reply) if reply.len() > max_reply_bytes => Outcome::ReplyTooLarge {
            len: reply.len() as u64,
        },
        Ok(reply) => Outcome::Ok(reply),
        Err(_) => Outcome::ServicePanicked,
    }
}
