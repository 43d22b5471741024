//! What a step asks the driver to do: persist first, then send.

use crate::ids::{ClientId, Principal, ReplicaId, SeqNum, View};
use crate::messages::{MessageKind, Outcome};
use crate::replica::Rejection;
use bft_crypto::Digest;
use bytes::Bytes;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// One replica.
    Replica(ReplicaId),
    /// Every replica except the sender.
    OtherReplicas,
    /// One client.
    Client(ClientId),
}

/// A signed, encoded frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The destination.
    pub to: Destination,
    /// The frame.
    pub frame: Bytes,
}

/// Something the replica signed that must be durable before the signed message leaves: after a
/// restart, a replica must not sign a conflicting message for the same (view, sequence, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// The message kind.
    pub kind: MessageKind,
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNum,
    /// The batch digest signed for.
    pub digest: Digest,
    /// The signed frame.
    pub frame: Bytes,
}

/// Where a driver makes records durable. The only way to get a step's frames to send is
/// [`Actions::persist_then_send`], which persists first.
pub trait Storage {
    /// Why persisting failed.
    type Error;

    /// Makes `records` durable (for example, written and fsynced) before returning `Ok`.
    fn persist(&mut self, records: &[SignedRecord]) -> Result<(), Self::Error>;
}

/// A request the replica executed in this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The batch's sequence number.
    pub seq: SeqNum,
    /// The client.
    pub client: ClientId,
    /// The request's timestamp.
    pub timestamp: u64,
    /// The request's digest.
    pub request: Digest,
    /// The outcome sent to the client.
    pub outcome: Outcome,
}

/// Input the replica refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Who sent it (as authenticated).
    pub from: Principal,
    /// The message kind.
    pub kind: MessageKind,
    /// Why it was refused.
    pub reason: Rejection,
}

/// The effects of one step.
///
/// Frames to send are released only by [`Actions::persist_then_send`], after the records are
/// durable, so no driver can send a vote it might forget in a crash.
#[derive(Debug, Default)]
#[must_use = "a step's actions must be persisted and sent"]
pub struct Actions {
    persist: Vec<SignedRecord>,
    send: Vec<Outgoing>,
    /// Requests executed in this step, in order.
    pub executed: Vec<Executed>,
    /// Batches executed in this step, in order: sequence number and batch digest (an empty batch,
    /// such as a new primary's null request, executes no request but is listed here).
    pub executed_batches: Vec<(SeqNum, Digest)>,
    /// Input refused in this step, with reasons (also counted in the replica's metrics).
    pub rejected: Vec<Rejected>,
}

impl Actions {
    /// Persists a signed record and multicasts its frame to the other replicas (in that order
    /// once the driver calls [`Actions::persist_then_send`]).
    pub(crate) fn persist_and_multicast(&mut self, record: SignedRecord) {
        self.send.push(Outgoing {
            to: Destination::OtherReplicas,
            frame: record.frame.clone(),
        });
        self.persist.push(record);
    }

    pub(crate) fn persist(&mut self, record: SignedRecord) {
        self.persist.push(record);
    }

    pub(crate) fn send(&mut self, outgoing: Outgoing) {
        self.send.push(outgoing);
    }

    /// What must be durable before anything is sent.
    pub fn to_persist(&self) -> &[SignedRecord] {
        &self.persist
    }

    /// Frames waiting to be released by [`Actions::persist_then_send`] (to inspect, not to send).
    pub fn pending_sends(&self) -> &[Outgoing] {
        &self.send
    }

    /// Persists the records in `storage`, then returns the frames to send. If persisting fails
    /// nothing may be sent: the error is returned and the frames are dropped.
    pub fn persist_then_send<S: Storage>(self, storage: &mut S) -> Result<Vec<Outgoing>, S::Error> {
        if !self.persist.is_empty() {
            storage.persist(&self.persist)?;
        }
        Ok(self.send)
    }

    /// True if the step had no effect on the outside world (nothing to persist or send, nothing
    /// executed).
    pub fn is_quiet(&self) -> bool {
        self.persist.is_empty()
            && self.send.is_empty()
            && self.executed.is_empty()
            && self.executed_batches.is_empty()
    }
}

/// Storage that keeps records in memory (tests; the durability issue adds a disk log).
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    /// Every record persisted, in order.
    pub records: Vec<SignedRecord>,
}

impl Storage for MemoryStorage {
    type Error = std::convert::Infallible;
    fn persist(&mut self, records: &[SignedRecord]) -> Result<(), Self::Error> {
        self.records.extend_from_slice(records);
        Ok(())
    }
}
