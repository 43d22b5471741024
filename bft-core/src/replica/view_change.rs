//! View change (PBFT OSDI'99 section 4.4; liveness rules from TOCS 2002 section 4.5.2).
//!
//! A backup that waits too long for a pending request to execute suspects the primary: it moves to
//! view v+1, stops taking part in the normal case, and multicasts a signed VIEW-CHANGE with its
//! stable checkpoint proof and a prepared certificate for everything it prepared above it. The
//! primary of v+1 collects 2f+1 valid VIEW-CHANGEs, computes the pre-prepares to re-issue
//! (`new_view.rs`) and multicasts NEW-VIEW; every backup recomputes them from the VIEW-CHANGEs in
//! the NEW-VIEW and enters the view only if they agree.
//!
//! Liveness: the timeout doubles with every consecutive view change and resets once a request
//! executes; a replica that sees f+1 VIEW-CHANGEs for higher views joins the smallest view they
//! support; a replica with 2f+1 VIEW-CHANGEs for its target waits a full timeout for the NEW-VIEW
//! before moving on; VIEW-CHANGEs are re-sent until the view is installed, and the primary of the
//! current view re-sends its NEW-VIEW to a replica that still asks for the view.

use super::new_view::{
    CheckedViewChange, NewViewPlan, check_view_change, null_digest, plan_new_view,
};
use super::{
    Actions, Destination, Outgoing, Rejection, Replica, SignedRecord, StableCertificate, own,
};
use crate::codec;
use crate::ids::{ClientId, Principal, ReplicaId, SeqNum, Time, View};
use crate::messages::{
    Batch, MessageKind, NewView, NewViewPayload, PrePrepare, PrePrepareHeader, Prepare,
    PreparedCertificate, PreparedCertificatePayload, ViewChange, ViewChangePayload,
};
use crate::planted::{PlantedBug, is_planted};
use crate::service::Service;
use crate::verify::{Verified, VerifiedMessage};
use bft_crypto::Digest;
use bytes::Bytes;
use serde_bytes::ByteBuf;
use std::collections::BTreeMap;
use std::time::Duration;

/// Whether the replica runs the normal case or waits for a NEW-VIEW.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Running the normal case in the current view.
    Normal,
    /// Moved to the current view, waiting for its NEW-VIEW.
    ViewChanging,
}

/// The highest-view prepared certificate this replica holds for a sequence number, with the batch.
#[derive(Debug, Clone)]
pub(super) struct StoredPrepared {
    pub(super) certificate: PreparedCertificate,
    pub(super) batch: Option<Batch>,
}

fn frame_bytes(frame: &Bytes) -> ByteBuf {
    ByteBuf::from(frame.to_vec())
}

impl<S: Service> Replica<S> {
    /// The current timeout: the base, doubled per consecutive view change.
    fn view_change_timeout(&self) -> Duration {
        self.config.timing.view_change * 2u32.saturating_pow(self.backoff.min(16))
    }

    /// The earliest view-change deadline (request timer, NEW-VIEW timer, VIEW-CHANGE re-send).
    pub(super) fn view_change_deadline(&self) -> Option<Time> {
        [self.view_timer, self.view_change_resend_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// A backup relayed a new request from `client`: start the timer if it is not running.
    pub(super) fn request_pending(&mut self, client: ClientId) {
        self.waiting.insert(client);
        if self.phase == Phase::Normal && self.view_timer.is_none() && !self.is_primary() {
            self.view_timer = Some(self.now + self.view_change_timeout());
        }
    }

    /// A request of `client` executed: progress. Stop waiting for the client if it was the
    /// awaited request; stop the timer, or restart it if other requests still wait (TOCS section
    /// 4.5.2); reset the backoff.
    pub(super) fn request_executed(&mut self, client: ClientId, awaited: bool) {
        if awaited {
            self.waiting.remove(&client);
        }
        if self.phase == Phase::Normal {
            self.backoff = 0;
            self.view_timer = (!self.waiting.is_empty() && !self.is_primary())
                .then(|| self.now + self.view_change_timeout());
        }
    }

    /// Timers: suspect the primary, give up on a NEW-VIEW, re-send the VIEW-CHANGE.
    pub(super) fn view_change_tick(&mut self, actions: &mut Actions) {
        let now = self.now;
        if self.view_timer.is_some_and(|t| now >= t) {
            self.view_timer = None;
            self.start_view_change(self.view.next(), actions);
            return;
        }
        if self.view_change_resend_at.is_some_and(|t| now >= t) {
            self.view_change_resend_at = Some(now + self.config.timing.view_change_resend);
            if let Some(own) = self.view_changes.get(&self.id) {
                let frame = own.frame().clone();
                actions.send(Outgoing {
                    to: Destination::OtherReplicas,
                    frame,
                });
            }
        }
    }

    /// Moves to view `to` (above the current one) and multicasts a VIEW-CHANGE.
    pub(super) fn start_view_change(&mut self, to: View, actions: &mut Actions) {
        debug_assert!(to > self.view);
        self.view = to;
        self.phase = Phase::ViewChanging;
        self.backoff = self.backoff.saturating_add(1);
        self.view_timer = None;
        self.view_change_resend_at = Some(self.now + self.config.timing.view_change_resend);
        self.metrics.view_changes_started += 1;
        let payload = self.own_view_change(to);
        let (frame, digest) = self.sign(&payload);
        let stable_seq = payload.stable_seq;
        // Our own message enters the collection as the verifier would produce it.
        let view_change = ViewChange {
            new_view: to,
            stable_seq,
            checkpoint_proof: self
                .stable
                .as_ref()
                .map(|s| s.proof.clone())
                .unwrap_or_default(),
            prepared: self
                .prepared
                .values()
                .map(|p| p.certificate.clone())
                .collect(),
        };
        self.view_changes
            .insert(self.id, own(self.id, view_change, frame.clone(), digest));
        actions.persist_and_multicast(SignedRecord {
            kind: MessageKind::ViewChange,
            view: to,
            seq: stable_seq,
            digest: Digest::ZERO,
            frame,
        });
        self.after_view_change_votes(actions);
    }

    fn own_view_change(&self, new_view: View) -> ViewChangePayload {
        let (stable_seq, checkpoint_proof) = match &self.stable {
            Some(stable) => (
                stable.seq,
                stable
                    .proof
                    .iter()
                    .map(|c| frame_bytes(c.frame()))
                    .collect(),
            ),
            None => (SeqNum(0), Vec::new()),
        };
        let prepared = self
            .prepared
            .values()
            .map(|p| PreparedCertificatePayload {
                pre_prepare: frame_bytes(p.certificate.pre_prepare.frame()),
                prepares: p
                    .certificate
                    .prepares
                    .iter()
                    .map(|v| frame_bytes(v.frame()))
                    .collect(),
            })
            .collect();
        ViewChangePayload {
            new_view,
            stable_seq,
            checkpoint_proof,
            prepared,
        }
    }

    /// Keeps the prepared certificate of a slot that just prepared (the highest view wins), so a
    /// later VIEW-CHANGE can carry it.
    pub(super) fn record_prepared(&mut self, seq: SeqNum) {
        let f = self.config.f;
        let Some(slot) = self.log.get(seq) else {
            return;
        };
        let Some(pre_prepare) = slot.pre_prepare.as_ref() else {
            return;
        };
        let header = pre_prepare.message();
        if self
            .prepared
            .get(&seq)
            .is_some_and(|p| p.certificate.pre_prepare.message().view >= header.view)
        {
            return;
        }
        let stripped = codec::with_attachment(pre_prepare.frame(), &[])
            .expect("own log holds decodable frames");
        let without_batch = PrePrepare {
            requests: None,
            ..header.clone()
        };
        let certificate = PreparedCertificate {
            pre_prepare: Verified::new(
                pre_prepare.sender(),
                without_batch,
                stripped,
                pre_prepare.digest(),
            ),
            prepares: slot
                .prepares
                .values()
                .filter(|p| p.message().digest == header.digest && p.signature_checked())
                .take(2 * f)
                .cloned()
                .collect(),
        };
        let batch = slot.batch.clone();
        self.prepared
            .insert(seq, StoredPrepared { certificate, batch });
    }

    /// A VIEW-CHANGE from another replica: checked, kept (the latest per sender), and acted on.
    pub(super) fn on_view_change(
        &mut self,
        message: Verified<ViewChange>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let sender = self.replica_sender(message.sender())?;
        check_view_change(&self.config, &message)?;
        let new_view = message.message().new_view;
        if new_view < self.view || (new_view == self.view && self.phase == Phase::Normal) {
            // A replica still asking for the current view missed the NEW-VIEW: re-send it, at
            // most once per `timing.view_change_resend` to each replica (a NEW-VIEW is large; a
            // Byzantine replica must not turn small VIEW-CHANGEs into a flood).
            if new_view == self.view
                && self.is_primary()
                && let Some(frame) = self.new_view_frame.clone()
            {
                let now = self.now;
                let due = self
                    .new_view_resent
                    .get(&sender)
                    .is_none_or(|at| *at + self.config.timing.view_change_resend <= now);
                if due {
                    self.new_view_resent.insert(sender, now);
                    actions.send(Outgoing {
                        to: Destination::Replica(sender),
                        frame,
                    });
                    return Ok(());
                }
                return Err(Rejection::Duplicate);
            }
            return Err(Rejection::WrongView {
                got: new_view,
                current: self.view,
            });
        }
        if self
            .view_changes
            .get(&sender)
            .is_some_and(|held| held.message().new_view >= new_view)
        {
            return Err(Rejection::Duplicate);
        }
        self.view_changes.insert(sender, message);
        // f+1 replicas are beyond this view: join the smallest view at least f+1 of them reached.
        if self.rejoin_if_left_behind(actions) {
            return Ok(());
        }
        self.after_view_change_votes(actions);
        Ok(())
    }

    /// With 2f+1 VIEW-CHANGEs for the target view: the new primary sends NEW-VIEW; a backup
    /// starts waiting for it.
    fn after_view_change_votes(&mut self, actions: &mut Actions) {
        if self.phase != Phase::ViewChanging {
            return;
        }
        let target = self.view;
        let votes: Vec<Verified<ViewChange>> = self
            .view_changes
            .values()
            .filter(|vc| vc.message().new_view == target)
            .cloned()
            .collect();
        if votes.len() < self.config.quorum() {
            return;
        }
        if self.is_primary() {
            self.send_new_view(votes, actions);
        } else if self.view_timer.is_none() {
            self.view_timer = Some(self.now + self.view_change_timeout());
        }
    }

    /// The new primary builds, signs and multicasts NEW-VIEW from 2f+1 VIEW-CHANGEs (its own
    /// first), then enters the view.
    fn send_new_view(&mut self, mut votes: Vec<Verified<ViewChange>>, actions: &mut Actions) {
        let me = Principal::Replica(self.id);
        votes.sort_by_key(|vc| vc.sender() != me);
        votes.truncate(self.config.quorum());
        let checked: Vec<CheckedViewChange> = votes
            .iter()
            .map(|vc| check_view_change(&self.config, vc).expect("checked on receipt"))
            .collect();
        let plan = plan_new_view(&checked);
        let view = self.view;
        let mut pre_prepares = Vec::with_capacity(plan.pre_prepares.len());
        for &(seq, digest) in &plan.pre_prepares {
            let header = PrePrepareHeader { view, seq, digest };
            let (frame, message_digest) = self.sign(&header);
            // Persisted now, sent inside the NEW-VIEW.
            actions.persist(SignedRecord {
                kind: MessageKind::PrePrepare,
                view,
                seq,
                digest,
                frame: frame.clone(),
            });
            let message = PrePrepare {
                view,
                seq,
                digest,
                requests: None,
            };
            pre_prepares.push(own(self.id, message, frame, message_digest));
        }
        let payload = NewViewPayload {
            view,
            view_changes: votes.iter().map(|vc| frame_bytes(vc.frame())).collect(),
            pre_prepares: pre_prepares
                .iter()
                .map(|p| frame_bytes(p.frame()))
                .collect(),
        };
        let (frame, _) = self.sign(&payload);
        actions.persist_and_multicast(SignedRecord {
            kind: MessageKind::NewView,
            view,
            seq: plan.stable.0,
            digest: Digest::ZERO,
            frame: frame.clone(),
        });
        self.enter_view(view, &votes, &plan, pre_prepares, frame, actions);
    }

    /// A NEW-VIEW: accepted only from the primary of its view, with 2f+1 valid VIEW-CHANGEs for
    /// that view from distinct replicas, and exactly the pre-prepares those VIEW-CHANGEs determine.
    pub(super) fn on_new_view(
        &mut self,
        message: Verified<NewView>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        self.replica_sender(message.sender())?;
        self.accept_new_view(message, actions)
    }

    /// Checks a NEW-VIEW (as [`Self::on_new_view`] describes, whoever sent it) and enters its
    /// view; recovery replays this replica's own NEW-VIEW through it too.
    pub(super) fn accept_new_view(
        &mut self,
        message: Verified<NewView>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let new_view = message.message();
        let view = new_view.view;
        let primary = view.primary(self.config.n());
        if message.sender() != Principal::Replica(primary) {
            return Err(Rejection::NotFromPrimary {
                sender: sender_id(message.sender()),
                primary,
            });
        }
        if view < self.view || (view == self.view && self.phase == Phase::Normal) {
            return Err(Rejection::WrongView {
                got: view,
                current: self.view,
            });
        }
        let mut checked = Vec::with_capacity(new_view.view_changes.len());
        for vc in &new_view.view_changes {
            if vc.message().new_view != view {
                return Err(Rejection::InvalidNewView);
            }
            checked
                .push(check_view_change(&self.config, vc).map_err(|_| Rejection::InvalidNewView)?);
        }
        let senders: std::collections::BTreeSet<ReplicaId> =
            checked.iter().map(|c| c.sender).collect();
        if senders.len() != checked.len() || senders.len() < self.config.quorum() {
            return Err(Rejection::InvalidNewView);
        }
        let plan = plan_new_view(&checked);
        let issued: Vec<(SeqNum, Digest)> = new_view
            .pre_prepares
            .iter()
            .map(|p| (p.message().seq, p.message().digest))
            .collect();
        let well_formed = new_view
            .pre_prepares
            .iter()
            .all(|p| p.sender() == Principal::Replica(primary) && p.message().view == view);
        if issued != plan.pre_prepares || !well_formed {
            return Err(Rejection::InvalidNewView);
        }
        let frame = message.frame().clone();
        let pre_prepares = new_view.pre_prepares.clone();
        let votes = new_view.view_changes.clone();
        if view > self.view {
            self.metrics.view_changes_started += 1;
        }
        self.enter_view(view, &votes, &plan, pre_prepares, frame, actions);
        Ok(())
    }

    /// The batches this replica holds (in its log and its prepared certificates) by digest, and
    /// the null request's, to pair with a NEW-VIEW's digest-only pre-prepares.
    pub(super) fn known_batches(&self) -> BTreeMap<Digest, Batch> {
        let mut known: BTreeMap<Digest, Batch> = BTreeMap::new();
        known.insert(null_digest(), Batch::from(Vec::new()));
        for (_, slot) in self.log.slots() {
            if let (Some(digest), Some(batch)) = (slot.digest(), slot.batch.clone()) {
                known.insert(digest, batch);
            }
        }
        for stored in self.prepared.values() {
            if let Some(batch) = stored.batch.clone() {
                known.insert(stored.certificate.pre_prepare.message().digest, batch);
            }
        }
        known
    }

    /// Installs the current view's NEW-VIEW pre-prepares that lie in the window, in slots that
    /// hold none yet, and prepares them on a backup. At or below h they are covered by the
    /// checkpoint; while this replica fetches min-s, those at or below it wait for the state and
    /// those above h + L for the window to move: this runs again once the transfer completes
    /// (a replica restarted from the fetched checkpoint installs them from the NEW-VIEW record
    /// the same way). `known` pairs digests with batches this replica holds.
    pub(super) fn install_new_view_pre_prepares(
        &mut self,
        known: &BTreeMap<Digest, Batch>,
        actions: &mut Actions,
    ) {
        if self.phase != super::Phase::Normal {
            return;
        }
        let view = self.view;
        let is_primary = self.is_primary();
        let pre_prepares = self.new_view_pre_prepares.clone();
        for pre_prepare in pre_prepares {
            let PrePrepare { seq, digest, .. } = *pre_prepare.message();
            if pre_prepare.message().view != view
                || self.in_window(seq).is_err()
                || self.check_caught_up(seq).is_err()
                || self
                    .log
                    .get(seq)
                    .is_some_and(|slot| slot.pre_prepare.is_some())
            {
                continue;
            }
            let slot = self.log.slot(seq);
            slot.batch = known.get(&digest).cloned();
            slot.pre_prepare = Some(pre_prepare);
            slot.accepted_at = self.now;
            if !is_primary {
                self.send_prepare(Prepare { view, seq, digest }, actions);
            }
        }
    }

    /// Installs `view`: the stable checkpoint min-s (kept, or fetched by state transfer), the
    /// re-issued pre-prepares in place of the old log, prepares for them on a backup, and the
    /// normal case again.
    fn enter_view(
        &mut self,
        view: View,
        votes: &[Verified<ViewChange>],
        plan: &NewViewPlan,
        pre_prepares: Vec<Verified<PrePrepare>>,
        new_view_frame: Bytes,
        actions: &mut Actions,
    ) {
        self.view = view;
        self.phase = Phase::Normal;
        self.view_timer = None;
        self.view_change_resend_at = None;
        self.new_view_frame = Some(new_view_frame);
        self.new_view_resent.clear();
        self.view_changes
            .retain(|_, vc| vc.message().new_view > view);
        self.metrics.view_changes_completed += 1;

        // Batches this replica knows, to pair with the re-issued digests.
        let known = self.known_batches();

        // min-s: the latest stable checkpoint in the VIEW-CHANGEs.
        if let (seq, Some(digest)) = plan.stable
            && seq > self.low_watermark
        {
            let certificate = StableCertificate {
                seq,
                digest,
                proof: votes[plan.stable_from].message().checkpoint_proof.clone(),
            };
            match self.own_checkpoints.get(&seq) {
                Some(stored) if stored.digest == digest => self.make_stable(certificate),
                _ => self.start_state_transfer(certificate, actions),
            }
        }

        self.log.clear();
        let max_seq = plan
            .pre_prepares
            .last()
            .map_or(plan.stable.0, |(seq, _)| *seq);
        self.last_assigned = max_seq.max(self.low_watermark);
        self.new_view_pre_prepares = pre_prepares;
        self.install_new_view_pre_prepares(&known, actions);

        // Requests: relayed or proposed ones are relayed or proposed again when clients
        // retransmit; a former primary hands its queue to the new one.
        for record in self.clients.records.values_mut() {
            record.in_progress = 0;
        }
        if self.is_primary() {
            self.waiting.clear();
        } else {
            let primary = view.primary(self.config.n());
            while let Some(request) = self.queue.pop() {
                let client = super::normal_case::client_of(&request);
                self.clients.entry(client).in_progress = request.message().timestamp;
                self.waiting.insert(client);
                actions.send(Outgoing {
                    to: Destination::Replica(primary),
                    frame: request.frame().clone(),
                });
            }
            if !self.waiting.is_empty() {
                self.view_timer = Some(self.now + self.view_change_timeout());
            }
        }
        self.replay_future_messages(actions);
    }

    /// Buffers a normal-case message for a view this replica has not entered, up to
    /// `limits.max_future_messages_per_peer` per sender.
    pub(super) fn buffer_future(
        &mut self,
        sender: ReplicaId,
        message: VerifiedMessage,
    ) -> Result<(), Rejection> {
        let limit = self.config.limits.max_future_messages_per_peer;
        let queue = self.future.entry(sender).or_default();
        if queue.len() >= limit && !is_planted(PlantedBug::UnboundedFutureBuffer) {
            return Err(Rejection::FutureBufferFull);
        }
        queue.push_back(message);
        Ok(())
    }

    /// A replica that missed a view change (it was cut off while the others moved on, or it waits
    /// for a NEW-VIEW the others gave up on) learns of it from what other replicas send: a
    /// VIEW-CHANGE for a view above its own (TOCS 2002 section 4.5.2), or a buffered normal-case
    /// message of such a view. Once f+1 replicas are seen beyond its view, by either kind of
    /// message, at least one of them is correct: it moves to the smallest view at least f+1 of
    /// them reached and sends a VIEW-CHANGE, which the primary of that view answers with its
    /// NEW-VIEW. f Byzantine replicas alone cannot trigger this. Counting both kinds together
    /// matters: a replica can be left waiting for a view whose primary is itself while one peer
    /// runs a later view and another asks for a later one still, and neither kind alone reaches
    /// f+1.
    ///
    /// Returns whether the replica moved.
    pub(super) fn rejoin_if_left_behind(&mut self, actions: &mut Actions) -> bool {
        let mut seen: BTreeMap<ReplicaId, View> = BTreeMap::new();
        for (sender, queue) in &self.future {
            if let Some(view) = queue.iter().filter_map(message_view).max() {
                seen.insert(*sender, view);
            }
        }
        for (sender, vc) in &self.view_changes {
            if *sender != self.id {
                let view = seen.entry(*sender).or_insert(vc.message().new_view);
                *view = (*view).max(vc.message().new_view);
            }
        }
        let mut higher: Vec<View> = seen
            .into_values()
            .filter(|view| *view > self.view)
            .collect();
        if higher.len() <= self.config.f {
            return false;
        }
        higher.sort_unstable_by(|a, b| b.cmp(a));
        let target = higher[self.config.f];
        self.metrics.rejoins += 1;
        self.start_view_change(target, actions);
        true
    }

    fn replay_future_messages(&mut self, actions: &mut Actions) {
        let buffered = std::mem::take(&mut self.future);
        for (_, queue) in buffered {
            for message in queue {
                self.on_message(message, actions);
            }
        }
    }
}

/// The view of a normal-case message.
pub(super) fn message_view(message: &VerifiedMessage) -> Option<View> {
    match message {
        VerifiedMessage::PrePrepare(m) => Some(m.message().view),
        VerifiedMessage::Prepare(m) => Some(m.message().view),
        VerifiedMessage::Commit(m) => Some(m.message().view),
        _ => None,
    }
}

fn sender_id(sender: Principal) -> ReplicaId {
    match sender {
        Principal::Replica(r) => r,
        Principal::Client(_) => {
            unreachable!("the verifier admits view messages from replicas only")
        }
    }
}
