//! Client requests at a replica: exactly-once bookkeeping and the primary's queue (PBFT sections
//! 4.1 and 4.2).
//!
//! Every map here is keyed by admitted client, so each holds at most one entry per client in the
//! configuration, whatever clients send.

use crate::ids::ClientId;
use crate::messages::{Outcome, Request};
use crate::verify::Verified;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// What a replica remembers of one client.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientRecord {
    /// Timestamp of the client's last executed request (0: none yet; clients start at 1).
    pub(crate) last_executed: u64,
    /// That request's outcome (part of checkpoint state, so it survives state transfer).
    pub(crate) last_outcome: Option<Outcome>,
    /// The reply frame to that request, re-sent when the client retransmits it (a local cache:
    /// after state transfer it is signed again from `last_outcome`).
    pub(crate) last_reply: Option<Bytes>,
    /// Highest timestamp this replica proposed (as primary) or relayed (as backup) and has not
    /// executed yet: a retransmission of it is not queued or relayed again.
    pub(crate) in_progress: u64,
}

/// Per-client records.
#[derive(Debug, Default)]
pub(crate) struct ClientTable {
    pub(crate) records: BTreeMap<ClientId, ClientRecord>,
}

impl ClientTable {
    pub(crate) fn get(&self, client: ClientId) -> Option<&ClientRecord> {
        self.records.get(&client)
    }

    pub(crate) fn entry(&mut self, client: ClientId) -> &mut ClientRecord {
        self.records.entry(client).or_default()
    }

    pub(crate) fn last_executed(&self, client: ClientId) -> u64 {
        self.get(client).map_or(0, |r| r.last_executed)
    }
}

/// Requests waiting at the primary for a batch, in arrival order, at most one per client (a newer
/// request from a client replaces its older queued one in place).
#[derive(Debug, Default)]
pub(crate) struct RequestQueue {
    queued: BTreeMap<ClientId, Verified<Request>>,
    order: VecDeque<ClientId>,
    /// Frame bytes of the queued requests.
    bytes: usize,
}

impl RequestQueue {
    pub(crate) fn queued_timestamp(&self, client: ClientId) -> Option<u64> {
        self.queued.get(&client).map(|r| r.message().timestamp)
    }

    pub(crate) fn push(&mut self, client: ClientId, request: Verified<Request>) {
        self.bytes += request.frame().len();
        match self.queued.insert(client, request) {
            Some(replaced) => self.bytes -= replaced.frame().len(),
            None => self.order.push_back(client),
        }
    }

    /// Whether the queue holds at least one full batch (by count or by bytes).
    pub(crate) fn holds_full_batch(&self, max_requests: usize, max_bytes: usize) -> bool {
        self.queued.len() >= max_requests || self.bytes >= max_bytes
    }

    pub(crate) fn front_len(&self) -> Option<usize> {
        self.order.front().map(|c| self.queued[c].frame().len())
    }

    pub(crate) fn pop(&mut self) -> Option<Verified<Request>> {
        let client = self.order.pop_front()?;
        let request = self
            .queued
            .remove(&client)
            .expect("queue order and map agree");
        self.bytes -= request.frame().len();
        Some(request)
    }

    pub(crate) fn len(&self) -> usize {
        self.queued.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }
}
