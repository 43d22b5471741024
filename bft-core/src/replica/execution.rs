//! Execution in sequence order, replies, and the last-reply cache (PBFT sections 4.1 and 4.2).

use super::normal_case::client_of;
use super::{Actions, Destination, Executed, Outgoing, Replica};
use crate::ids::SeqNum;
use crate::ids::{ClientId, Principal};
use crate::messages::WireMessage;
use crate::messages::{Outcome, Reply, Request, batch_digest};
use crate::service::{ExecuteContext, Service, execute_contained};
use crate::verify::Verified;
use bytes::Bytes;

impl<S: Service> Replica<S> {
    /// Executes committed batches strictly in sequence order: batch n runs only after every batch
    /// below n has run.
    pub(super) fn execute_committed(&mut self, actions: &mut Actions) {
        loop {
            let seq = self.last_executed.next();
            let Some(slot) = self.log.get(seq) else { break };
            // A committed batch whose requests this replica lacks waits for catch-up to fetch it.
            let Some(requests) = slot.batch.clone().filter(|_| slot.committed) else {
                break;
            };
            let digest = batch_digest(requests.iter().map(|r| r.digest()));
            for request in requests.iter() {
                self.execute_request(seq, request, actions);
            }
            self.last_executed = seq;
            actions.executed_batches.push((seq, digest));
            self.metrics.batches_executed += 1;
            self.checkpoint_if_due(seq, actions);
        }
    }

    /// Executes one request unless its client already has a newer or equal timestamp executed
    /// (a Byzantine primary may order a request twice; it still runs once). Signs the reply,
    /// caches it, and sends it.
    fn execute_request(&mut self, seq: SeqNum, request: &Verified<Request>, actions: &mut Actions) {
        let client = client_of(request);
        let timestamp = request.message().timestamp;
        if timestamp <= self.clients.last_executed(client) {
            return;
        }
        let context = ExecuteContext {
            client,
            timestamp,
            seq,
        };
        let outcome = execute_contained(
            &mut self.service,
            &context,
            &request.message().operation,
            self.config.limits.max_reply_bytes,
        );
        let frame = self.reply_frame(client, timestamp, outcome.clone());
        let record = self.clients.entry(client);
        record.last_executed = timestamp;
        record.last_outcome = Some(outcome.clone());
        record.last_reply = Some(frame.clone());
        // Only the request this replica relayed (or a later one) ends the wait for this client:
        // an older one executed late (from a commit certificate, say) does not.
        let awaited = record.in_progress <= timestamp;
        if awaited {
            record.in_progress = 0;
        }
        self.metrics.requests_executed += 1;
        self.request_executed(client, awaited);
        actions.send(Outgoing {
            to: Destination::Client(client),
            frame,
        });
        actions.executed.push(Executed {
            seq,
            client,
            timestamp,
            request: request.digest(),
            outcome,
        });
    }

    /// The reply for `client`'s request `timestamp` with `outcome`: unsigned, since the channel
    /// to the client authenticates it (section 5.2: replies carry MACs, not signatures; see
    /// [`crate::verify`]).
    fn reply_frame(&self, client: ClientId, timestamp: u64, outcome: Outcome) -> Bytes {
        Reply {
            view: self.view,
            client,
            timestamp,
            outcome,
        }
        .unsigned(self.config.cluster_id, Principal::Replica(self.id))
    }

    /// The reply to `client`'s last executed request: the cached frame, or one built now from
    /// the recorded outcome (after state transfer, which carries outcomes but not frames).
    pub(super) fn cached_reply(&mut self, client: ClientId) -> Option<Bytes> {
        let record = self.clients.get(client)?;
        if let Some(frame) = &record.last_reply {
            return Some(frame.clone());
        }
        let (timestamp, outcome) = (record.last_executed, record.last_outcome.clone()?);
        let frame = self.reply_frame(client, timestamp, outcome);
        self.clients.entry(client).last_reply = Some(frame.clone());
        Some(frame)
    }
}
