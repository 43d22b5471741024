//! Fetching committed batches a replica missed (TOCS 2002 section 6: after restoring a checkpoint,
//! a replica brings itself up to date with what followed it; the same path repairs lost
//! messages).
//!
//! A peer answers [`FetchCommitted`] with each batch's pre-prepare and 2f+1 matching commits from
//! distinct replicas, all original signed frames. The receiver trusts no one: it installs a batch
//! only if the pre-prepare comes from the primary of its view and the commits form a certificate
//! for it. A certificate proves the batch committed at that sequence number (PBFT section 4.2:
//! no other batch can commit there in any view), so it may replace a pre-prepare this replica had
//! accepted from an equivocating primary.

use super::log::check_matching;
use super::{Actions, Destination, Outgoing, Rejection, Replica};
use crate::codec;
use crate::ids::{Principal, ReplicaId, SeqNum, Time};
use crate::messages::Commit;
use crate::messages::{
    CommittedBatch, CommittedBatchPayload, FetchCommitted, MAX_BATCHES_PER_FETCH, encode_batch_of,
};
use crate::service::Service;
use crate::verify::{Verified, VerifiedMessage};
use serde_bytes::ByteBuf;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

/// An ongoing fetch of committed batches.
#[derive(Debug)]
pub(super) struct CatchUp {
    peer: ReplicaId,
    /// The first sequence number of the last request.
    from: SeqNum,
    retry_at: Time,
    /// Consecutive requests that brought nothing.
    fruitless: usize,
}

impl<S: Service> Replica<S> {
    /// Starts fetching committed batches after the last executed one, unless a fetch or a state
    /// transfer is under way.
    pub(super) fn start_catch_up(&mut self, actions: &mut Actions) {
        if self.catch_up.is_some() || self.transfer.is_some() {
            return;
        }
        // Each fetch starts with the peer after the one the last fetch started with, so a peer
        // that cannot serve is not asked first every time.
        let peer = self.next_peer(self.catch_up_cursor);
        self.catch_up_cursor = peer;
        self.catch_up = Some(CatchUp {
            peer,
            from: SeqNum(0),
            retry_at: self.now,
            fruitless: 0,
        });
        self.metrics.catch_ups_started += 1;
        self.request_committed(actions);
    }

    fn next_peer(&self, after: ReplicaId) -> ReplicaId {
        let n = self.config.n() as u32;
        let next = ReplicaId((after.0 + 1) % n);
        if next == self.id {
            ReplicaId((next.0 + 1) % n)
        } else {
            next
        }
    }

    fn request_committed(&mut self, actions: &mut Actions) {
        let from = self.last_executed.next();
        let retry_at = self.now + self.config.timing.state_transfer_retry;
        let Some(catch_up) = self.catch_up.as_mut() else {
            return;
        };
        catch_up.from = from;
        catch_up.retry_at = retry_at;
        let peer = catch_up.peer;
        let (frame, _) = self.sign(&FetchCommitted { from });
        actions.send(Outgoing {
            to: Destination::Replica(peer),
            frame,
        });
    }

    /// The catch-up retry deadline.
    pub(super) fn catch_up_deadline(&self) -> Option<Time> {
        self.catch_up.as_ref().map(|c| c.retry_at)
    }

    /// Execution is stuck: the next batch is not committed here, but a later one is.
    pub(super) fn execution_has_gap(&self) -> bool {
        let next = self.last_executed.next();
        match self.log.get(next) {
            Some(slot) if slot.is_executable() => false,
            Some(slot) if slot.committed => true,
            _ => self.log.any_committed_after(next),
        }
    }

    /// After execution: asks for the next range at once if the last one came in full; starts a
    /// fetch if execution is stuck behind a gap.
    pub(super) fn continue_catch_up(&mut self, actions: &mut Actions) {
        match &self.catch_up {
            Some(catch_up)
                if self.last_executed.0 + 1 >= catch_up.from.0 + MAX_BATCHES_PER_FETCH =>
            {
                self.request_committed(actions);
            }
            Some(_) => {}
            None if self.transfer.is_none() && self.execution_has_gap() => {
                self.start_catch_up(actions)
            }
            None => {}
        }
    }

    /// On the retry deadline: asks again if the last request brought progress, otherwise asks the
    /// next peer, and stops after every other replica was asked once without result.
    pub(super) fn catch_up_tick(&mut self, actions: &mut Actions) {
        let (now, last_executed) = (self.now, self.last_executed);
        let limit = self.config.n() - 1;
        let Some(catch_up) = self.catch_up.as_mut() else {
            return;
        };
        if now < catch_up.retry_at {
            return;
        }
        if last_executed >= catch_up.from {
            catch_up.fruitless = 0;
        } else if catch_up.fruitless < limit {
            catch_up.fruitless += 1;
            let peer = catch_up.peer;
            let next = self.next_peer(peer);
            self.catch_up.as_mut().expect("present").peer = next;
        } else {
            self.catch_up = None;
            return;
        }
        self.request_committed(actions);
    }

    /// Serves up to [`MAX_BATCHES_PER_FETCH`] committed batches from `from` on, each with its
    /// commit certificate. Batches at or below the stable checkpoint are gone: the asker needs
    /// state transfer for those.
    pub(super) fn on_fetch_committed(
        &mut self,
        message: Verified<FetchCommitted>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let sender = self.replica_sender(message.sender())?;
        let from = message.message().from;
        if from <= self.low_watermark {
            self.send_stable_proof(sender, actions);
            return Err(Rejection::Late {
                seq: from,
                low: self.low_watermark,
            });
        }
        let last = SeqNum(
            self.last_executed
                .0
                .min(from.0.saturating_add(MAX_BATCHES_PER_FETCH - 1)),
        );
        for seq in from.0..=last.0 {
            let Some(commits) = self.relayable_commits(SeqNum(seq)) else {
                break;
            };
            let certificate = &self.commit_certificates[&SeqNum(seq)];
            let batch = certificate
                .batch
                .as_ref()
                .expect("relayable_commits requires the batch");
            let with_batch =
                codec::with_attachment(certificate.pre_prepare.frame(), &encode_batch_of(batch))
                    .expect("own log holds decodable frames");
            let payload = CommittedBatchPayload {
                pre_prepare: ByteBuf::from(with_batch.to_vec()),
                commits,
            };
            let (frame, _) = self.sign(&payload);
            self.metrics.committed_batches_served += 1;
            actions.send(Outgoing {
                to: Destination::Replica(sender),
                frame,
            });
        }
        Ok(())
    }

    /// Installs a committed batch proven by its certificate: a pre-prepare from the primary of its
    /// view and 2f+1 commits for the same (view, sequence number, digest) from distinct replicas.
    pub(super) fn on_committed_batch(
        &mut self,
        message: Verified<CommittedBatch>,
        _actions: &mut Actions,
    ) -> Result<(), Rejection> {
        self.replica_sender(message.sender())?;
        self.install_committed(message.message())
    }

    /// Installs a commit certificate's batch in its slot (checked as [`Self::on_committed_batch`]
    /// describes); recovery replays stored certificates through it too.
    pub(super) fn install_committed(&mut self, batch: &CommittedBatch) -> Result<(), Rejection> {
        let CommittedBatch {
            pre_prepare,
            commits,
        } = batch;
        let (view, seq, digest) = (
            pre_prepare.message().view,
            pre_prepare.message().seq,
            pre_prepare.message().digest,
        );
        if pre_prepare.sender() != Principal::Replica(view.primary(self.config.n())) {
            return Err(Rejection::InvalidCertificate);
        }
        let matching: Vec<_> = commits
            .iter()
            .filter(|c| {
                let m = c.message();
                (m.view, m.seq, m.digest) == (view, seq, digest)
            })
            .collect();
        let signers: BTreeSet<Principal> = matching.iter().map(|c| c.sender()).collect();
        if signers.len() < self.config.quorum() {
            return Err(Rejection::InvalidCertificate);
        }
        let Some(batch) = pre_prepare.message().requests.clone() else {
            return Err(Rejection::MissingBatch);
        };
        if seq <= self.last_executed {
            return Err(Rejection::Duplicate);
        }
        self.in_window(seq)?;
        self.check_caught_up(seq)?;
        let slot = self.log.slot(seq);
        if slot.committed && slot.digest() == Some(digest) {
            if slot.batch.is_some() {
                return Err(Rejection::Duplicate);
            }
            // Committed here (in a new view, say) without the batch: the certificate brings it.
            slot.batch = Some(batch);
            self.metrics.committed_batches_installed += 1;
            self.record_commit_certificate(seq);
            return Ok(());
        }
        slot.batch = Some(batch);
        slot.pre_prepare = Some((**pre_prepare).clone());
        slot.prepares.retain(|_, p| p.message().digest == digest);
        slot.commits.clear();
        for commit in matching {
            if let Principal::Replica(r) = commit.sender() {
                slot.commits.insert(r, commit.clone());
            }
        }
        slot.commit_sent = true;
        slot.committed = true;
        self.metrics.committed_batches_installed += 1;
        self.record_commit_certificate(seq);
        Ok(())
    }
}

/// A commit certificate this replica holds for a sequence number above its stable checkpoint:
/// kept across view changes (a certificate from any view proves the batch committed), so it can
/// serve peers that missed the batch even after a new view re-issued it.
#[derive(Debug, Clone)]
pub(super) struct StoredCommit {
    pub(super) pre_prepare: Verified<crate::messages::PrePrepare>,
    pub(super) commits: Vec<Verified<crate::messages::Commit>>,
    pub(super) batch: Option<crate::messages::Batch>,
}

impl<S: Service> Replica<S> {
    /// The frames of 2f+1 commits of the certificate held for `seq` whose signatures hold, to
    /// relay in a committed batch. A replica commits only on 2f+1 commits whose signatures it
    /// checked ([`super::log::Slot::check_votes`]), so a certificate it recorded live has them; a
    /// certificate read back from its log holds commits only their channel authenticated, and
    /// those are checked here, once, as needed (one that fails is dropped). `None` if fewer than
    /// 2f+1 hold.
    fn relayable_commits(&mut self, seq: SeqNum) -> Option<Vec<ByteBuf>> {
        let quorum = self.config.quorum();
        let certificate = self
            .commit_certificates
            .get_mut(&seq)
            .filter(|c| c.batch.is_some())?;
        let digest = certificate.pre_prepare.message().digest;
        // The same rule as committing: check as many as the quorum needs, drop bad ones.
        let mut by_sender: BTreeMap<ReplicaId, Verified<Commit>> = certificate
            .commits
            .drain(..)
            .filter_map(|c| match c.sender() {
                Principal::Replica(r) => Some((r, c)),
                Principal::Client(_) => None,
            })
            .collect();
        self.metrics.votes_with_bad_signatures += check_matching(
            &mut by_sender,
            digest,
            |c| c.digest,
            quorum,
            &self.verifier,
            VerifiedMessage::into_commit,
        );
        certificate.commits = by_sender.into_values().collect();
        let relayable: Vec<ByteBuf> = certificate
            .commits
            .iter()
            .filter(|c| c.signature_checked())
            .take(quorum)
            .map(|c| ByteBuf::from(c.frame().to_vec()))
            .collect();
        (relayable.len() >= quorum).then_some(relayable)
    }

    /// Keeps (or completes with the batch) the commit certificate of a slot that just committed.
    pub(super) fn record_commit_certificate(&mut self, seq: SeqNum) {
        let quorum = self.config.quorum();
        let Some(slot) = self.log.get(seq) else {
            return;
        };
        if let Some(held) = self.commit_certificates.get_mut(&seq) {
            if held.batch.is_none()
                && held.pre_prepare.message().digest == slot.digest().unwrap_or_default()
            {
                held.batch = slot.batch.clone();
            }
            return;
        }
        let Some(pre_prepare) = slot.pre_prepare.clone() else {
            return;
        };
        let digest = pre_prepare.message().digest;
        // Every matching commit: a certificate read back from the log holds unchecked ones only,
        // which may turn out badly signed when relayed (`relayable_commits`).
        let commits: Vec<_> = slot
            .commits
            .values()
            .filter(|c| c.message().digest == digest)
            .cloned()
            .collect();
        if commits.len() < quorum {
            return;
        }
        let batch = slot.batch.clone();
        self.commit_certificates.insert(
            seq,
            StoredCommit {
                pre_prepare,
                commits,
                batch,
            },
        );
    }
}
