//! The normal case: requests, pre-prepare, prepare, commit (PBFT section 4.2; batching and the
//! pipeline follow TOCS 2002 section 5.1).

use super::{Actions, Destination, Outgoing, Rejection, Replica, SignedRecord, own};
use crate::ids::{ClientId, Principal, ReplicaId, SeqNum};
use crate::messages::{
    Batch, Commit, MessageKind, PrePrepare, PrePrepareHeader, Prepare, Request, batch_digest,
    encode_batch_of,
};
use crate::planted::{PlantedBug, is_planted};
use crate::service::Service;
use crate::verify::Verified;
use std::sync::Arc;

impl<S: Service> Replica<S> {
    /// A client request (section 4.1): re-send the cached reply for the last executed timestamp,
    /// ignore older ones, and otherwise queue it (primary) or relay it to the primary (backup).
    pub(super) fn on_request(
        &mut self,
        request: Verified<Request>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let Principal::Client(client) = request.sender() else {
            unreachable!("the verifier admits requests from clients only")
        };
        let timestamp = request.message().timestamp;
        let last = self.clients.last_executed(client);
        if timestamp <= last {
            if timestamp == last
                && let Some(reply) = self.cached_reply(client)
            {
                self.metrics.replies_from_cache += 1;
                actions.send(Outgoing {
                    to: Destination::Client(client),
                    frame: reply,
                });
                return Ok(());
            }
            return Err(Rejection::StaleRequest { timestamp, last });
        }
        if timestamp <= self.clients.get(client).map_or(0, |r| r.in_progress) {
            return Err(Rejection::Duplicate);
        }
        if self.is_primary() {
            if self
                .queue
                .queued_timestamp(client)
                .is_some_and(|queued| queued >= timestamp)
            {
                return Err(Rejection::Duplicate);
            }
            self.queue.push(client, request);
        } else {
            // Relay once per timestamp; the client's retransmissions reach the primary directly.
            self.clients.entry(client).in_progress = timestamp;
            self.request_pending(client);
            let primary = self.view.primary(self.config.n());
            actions.send(Outgoing {
                to: Destination::Replica(primary),
                frame: request.frame().clone(),
            });
        }
        Ok(())
    }

    /// Whether the primary may cut a batch now (window aside): requests are queued, fewer than
    /// `max_in_flight_batches` batches are in flight, and if any is, a full batch is queued.
    fn batch_may_start(&self) -> bool {
        let limits = &self.config.limits;
        let in_flight = self.last_assigned.0.saturating_sub(self.last_executed.0);
        !self.queue.is_empty()
            && in_flight < limits.max_in_flight_batches
            && (in_flight == 0
                || self
                    .queue
                    .holds_full_batch(limits.max_batch_requests, limits.max_batch_bytes))
    }

    /// The primary assigns sequence numbers to batches of queued requests while the window and
    /// the in-flight bound allow. Without load a request is proposed at once. While batches are
    /// in flight, a further one is proposed only once a full batch is queued: otherwise requests
    /// wait for the batches in flight to execute, so batches grow with the load and the per-batch
    /// cost (a pre-prepare, 2f+1 prepares and commits, their signatures) is shared by more
    /// requests; at loads that fill whole batches, up to `max_in_flight_batches` are pipelined.
    pub(super) fn propose_batches(&mut self, actions: &mut Actions) {
        if !self.is_primary() || self.phase != super::Phase::Normal {
            return;
        }
        let limits = self.config.limits;
        // Batches this replica executed (committed in an earlier view, fetched by state transfer
        // or with commit certificates) are decided: assign above them.
        self.last_assigned = self.last_assigned.max(self.last_executed);
        while self.batch_may_start() && self.last_assigned < self.high_watermark() {
            // A sequence number that already holds a pre-prepare (installed from a commit
            // certificate of a later view, say) is taken: never assign it again.
            let next = self.last_assigned.next();
            if self
                .log
                .get(next)
                .is_some_and(|slot| slot.pre_prepare.is_some())
            {
                self.last_assigned = next;
                continue;
            }
            let mut requests = Vec::new();
            let mut bytes = 0;
            while requests.len() < limits.max_batch_requests
                && self
                    .queue
                    .front_len()
                    .is_some_and(|len| bytes + len <= limits.max_batch_bytes)
            {
                let request = self.queue.pop().expect("front exists");
                let client = client_of(&request);
                if request.message().timestamp <= self.clients.last_executed(client) {
                    continue; // executed meanwhile
                }
                bytes += request.frame().len();
                self.clients.entry(client).in_progress = request.message().timestamp;
                requests.push(request);
            }
            if requests.is_empty() {
                continue;
            }
            let seq = self.last_assigned.next();
            let digest = batch_digest(requests.iter().map(|r| r.digest()));
            let header = PrePrepareHeader {
                view: self.view,
                seq,
                digest,
            };
            let batch: Batch = Arc::from(requests);
            let (frame, message_digest) = self.sign_attached(&header, &encode_batch_of(&batch));
            let pre_prepare = PrePrepare {
                view: self.view,
                seq,
                digest,
                requests: Some(batch.clone()),
            };
            let slot = self.log.slot(seq);
            slot.pre_prepare = Some(own(self.id, pre_prepare, frame.clone(), message_digest));
            slot.accepted_at = self.now;
            slot.batch = Some(batch);
            self.last_assigned = seq;
            self.metrics.batches_proposed += 1;
            actions.persist_and_multicast(SignedRecord {
                kind: MessageKind::PrePrepare,
                view: self.view,
                seq,
                digest,
                frame,
            });
        }
    }

    /// A backup accepts a pre-prepare if it is signed by the primary of its view (checked by the
    /// verifier and here), it is in the current view, its sequence number is in the window, and no
    /// different pre-prepare was accepted for that view and sequence number; it then multicasts a
    /// prepare (section 4.2).
    pub(super) fn on_pre_prepare(
        &mut self,
        message: Verified<PrePrepare>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let sender = self.replica_sender(message.sender())?;
        let now = self.now;
        let pre_prepare = message.message();
        let (view, seq, digest) = (pre_prepare.view, pre_prepare.seq, pre_prepare.digest);
        let Some(batch) = pre_prepare.requests.clone() else {
            return Err(Rejection::MissingBatch);
        };
        let primary = view.primary(self.config.n());
        if sender != primary {
            return Err(Rejection::NotFromPrimary { sender, primary });
        }
        self.check_view(view)?;
        self.in_window(seq)?;
        self.check_caught_up(seq)?;
        let slot = self.log.slot(seq);
        if let Some(accepted) = slot
            .digest()
            .filter(|_| !is_planted(PlantedBug::AcceptConflictingPrePrepare))
        {
            if accepted == digest && slot.batch.is_none() {
                // A pre-prepare re-issued without its batch (NEW-VIEW) meets its batch.
                slot.batch = Some(batch);
                self.record_commit_certificate(seq);
                return Ok(());
            }
            return Err(if accepted == digest {
                Rejection::Duplicate
            } else {
                Rejection::ConflictingPrePrepare
            });
        }
        // Votes that arrived before the pre-prepare and disagree with it can never count.
        slot.prepares.retain(|_, p| p.message().digest == digest);
        slot.commits.retain(|_, c| c.message().digest == digest);
        slot.pre_prepare = Some(message);
        slot.accepted_at = now;
        slot.batch = Some(batch);
        self.send_prepare(Prepare { view, seq, digest }, actions);
        self.advance(seq, actions);
        Ok(())
    }

    /// Signs this backup's prepare, keeps it in the slot, persists it and multicasts it.
    pub(super) fn send_prepare(&mut self, prepare: Prepare, actions: &mut Actions) {
        let (frame, message_digest) = self.sign(&prepare);
        let Prepare { view, seq, digest } = prepare;
        self.log.slot(seq).prepares.insert(
            self.id,
            own(self.id, prepare, frame.clone(), message_digest),
        );
        actions.persist_and_multicast(SignedRecord {
            kind: MessageKind::Prepare,
            view,
            seq,
            digest,
            frame,
        });
    }

    /// A prepare from a backup, in the current view and window, at most one per sender and
    /// (view, sequence number); one that disagrees with the accepted pre-prepare is refused
    /// (section 4.2).
    pub(super) fn on_prepare(
        &mut self,
        message: Verified<Prepare>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let sender = self.replica_sender(message.sender())?;
        let Prepare { view, seq, digest } = *message.message();
        if sender == view.primary(self.config.n()) {
            return Err(Rejection::PrepareFromPrimary);
        }
        self.check_view(view)?;
        self.in_window(seq)?;
        self.check_caught_up(seq)?;
        let slot = self.log.slot(seq);
        check_vote(
            slot.digest(),
            slot.prepares.get(&sender).map(|p| p.message().digest),
            digest,
        )?;
        slot.prepares.insert(sender, message);
        self.advance(seq, actions);
        Ok(())
    }

    /// A commit from any replica, in the current view and window, at most one per sender and
    /// (view, sequence number) (section 4.2).
    pub(super) fn on_commit(
        &mut self,
        message: Verified<Commit>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let sender = self.replica_sender(message.sender())?;
        let Commit { view, seq, digest } = *message.message();
        self.check_view(view)?;
        self.in_window(seq)?;
        self.check_caught_up(seq)?;
        let slot = self.log.slot(seq);
        check_vote(
            slot.digest(),
            slot.commits.get(&sender).map(|c| c.message().digest),
            digest,
        )?;
        slot.commits.insert(sender, message);
        self.advance(seq, actions);
        Ok(())
    }

    /// Moves a slot forward: once prepared, multicast a commit; once committed-local, mark it
    /// for execution (execution happens in sequence order after the step's input).
    pub(super) fn advance(&mut self, seq: SeqNum, actions: &mut Actions) {
        let f = self.config.f;
        let view = self.view;
        let Some(slot) = self.log.get_mut(seq) else {
            return;
        };
        if !slot.committed {
            self.metrics.votes_with_bad_signatures += slot.check_votes(f, &self.verifier);
        }
        if !slot.commit_sent && slot.is_prepared(f) {
            self.record_prepared(seq);
            let slot = self.log.get_mut(seq).expect("slot exists");
            let digest = slot.digest().expect("prepared implies a pre-prepare");
            slot.commit_sent = true;
            let commit = Commit { view, seq, digest };
            let (frame, message_digest) = self.sign(&commit);
            let slot = self.log.get_mut(seq).expect("slot exists");
            slot.commits
                .insert(self.id, own(self.id, commit, frame.clone(), message_digest));
            actions.persist_and_multicast(SignedRecord {
                kind: MessageKind::Commit,
                view,
                seq,
                digest,
                frame,
            });
        }
        let slot = self.log.get_mut(seq).expect("slot exists");
        if !slot.committed && slot.is_committed_local(f) {
            slot.committed = true;
            self.record_commit_certificate(seq);
        }
    }

    pub(super) fn replica_sender(&self, sender: Principal) -> Result<ReplicaId, Rejection> {
        match sender {
            Principal::Replica(id) if id == self.id => Err(Rejection::FromSelf),
            Principal::Replica(id) => Ok(id),
            Principal::Client(_) => {
                unreachable!("the verifier admits replica messages from replicas only")
            }
        }
    }

    fn check_view(&self, view: crate::ids::View) -> Result<(), Rejection> {
        if view == self.view {
            Ok(())
        } else {
            Err(Rejection::WrongView {
                got: view,
                current: self.view,
            })
        }
    }
}

/// A vote (prepare or commit) is refused if the sender already voted (identically: duplicate;
/// differently: conflicting), or if it disagrees with the accepted pre-prepare.
fn check_vote(
    accepted: Option<bft_crypto::Digest>,
    previous: Option<bft_crypto::Digest>,
    digest: bft_crypto::Digest,
) -> Result<(), Rejection> {
    match previous {
        Some(previous) if previous == digest => return Err(Rejection::Duplicate),
        Some(_) => return Err(Rejection::ConflictingVote),
        None => {}
    }
    match accepted {
        Some(accepted) if accepted != digest => Err(Rejection::DigestMismatch),
        _ => Ok(()),
    }
}

pub(super) fn client_of(request: &Verified<Request>) -> ClientId {
    match request.sender() {
        Principal::Client(client) => client,
        Principal::Replica(_) => unreachable!("the verifier admits requests from clients only"),
    }
}
