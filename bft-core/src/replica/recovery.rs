//! Restarting from durable storage.
//!
//! PBFT's safety argument assumes that a replica keeps what it logged across a crash (OSDI'99
//! section 4.2: replicas log the messages they send and accept; TOCS 2002 section 5.3 on
//! checkpoints as the base of the log). A replica that forgets what it signed can sign a
//! conflicting message, and one that forgets a prepared certificate can leave it out of a
//! VIEW-CHANGE: either way a crashed correct replica would act Byzantine. So every step persists,
//! before anything it sends:
//!
//! - what the replica signed ([`Record::Signed`]);
//! - the frames it accepted that shape its log ([`Record::Frame`]: pre-prepares with their
//!   batches, prepares, commits, NEW-VIEWs, committed batches from catch-up), placed before the
//!   records derived from them.
//!
//! When a checkpoint becomes stable the step also carries a [`DurableCheckpoint`]: the stable
//! state with its proof, and records that rebuild everything above it (the current view's
//! NEW-VIEW, commit and prepared certificates, the window's messages, a pending VIEW-CHANGE). It
//! supersedes every record persisted before it.
//!
//! [`Replica::recover`] restores the checkpoint's state, then replays its records and the log's,
//! in order: other replicas' frames through the same handlers as when they arrived, the replica's
//! own messages back into its log and its view. Re-executing a batch re-signs the same checkpoint
//! and the same votes (signing is deterministic), so replay never produces a conflicting
//! signature; and since the replica's own votes are back in its log, the normal checks refuse
//! anything that would conflict with them.

use super::checkpoints::{StableCertificate, StoredCheckpoint};
use super::log::Slot;
use super::view_change::{Phase, StoredPrepared};
use super::{Actions, DurableCheckpoint, Record, Replica, StableState};
use crate::codec;
use crate::config::{ClusterConfig, ConfigError};
use crate::ids::{Principal, ReplicaId, SeqNum, View};
use crate::messages::{
    Commit, CommittedBatch, PrePrepare, Prepare, PreparedCertificate, encode_batch_of,
};
use crate::planted::{PlantedBug, is_planted};
use crate::service::Service;
use crate::verify::{Verified, VerifiedMessage, Verifier};
use bft_crypto::KeyPair;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Why a replica could not be restored from its storage. The replica must not start: it would
/// start from a state other than the one it had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// The configuration or key is not valid for this replica.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stored stable checkpoint does not verify or cannot be restored.
    #[error("the stored checkpoint at sequence number {seq} is invalid: {reason}")]
    InvalidCheckpoint {
        /// Its sequence number.
        seq: SeqNum,
        /// Why.
        reason: String,
    },
    /// A stored record does not verify (it was not written by this cluster's members).
    #[error("stored record {index} ({place}) is invalid: {reason}")]
    InvalidRecord {
        /// Where it was: in the checkpoint or in the log.
        place: &'static str,
        /// Its position there.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// What a recovery restored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The stable checkpoint restored (0 if none).
    pub stable_seq: SeqNum,
    /// Records replayed with effect.
    pub records_applied: usize,
    /// Records replayed without effect (duplicates, or superseded by later state).
    pub records_ignored: usize,
    /// The view the replica is in.
    pub view: View,
    /// The last batch executed.
    pub last_executed: SeqNum,
    /// Batches executed again during the replay, in order (sequence number and batch digest).
    pub executed_batches: Vec<(SeqNum, bft_crypto::Digest)>,
    /// Requests executed again during the replay, in order.
    pub executed: Vec<super::Executed>,
    /// Messages signed again during the replay (identical to ones signed before the crash, or
    /// ones whose records were lost before anything was sent).
    pub signed: Vec<super::SignedRecord>,
}

impl<S: Service> Replica<S> {
    /// Restores replica `id` from what its storage holds: the latest [`DurableCheckpoint`] saved
    /// (if any) and the records persisted after it, in order. `service` must be in its initial
    /// state; it is rebuilt from the checkpoint and by re-executing committed batches.
    pub fn recover(
        config: Arc<ClusterConfig>,
        id: ReplicaId,
        key: KeyPair,
        service: S,
        checkpoint: Option<&DurableCheckpoint>,
        records: &[Record],
    ) -> Result<(Self, RecoveryReport), RecoveryError> {
        let verifier = Verifier::new(config.clone())?;
        let mut replica = Replica::new(config, id, key, service)?;
        let mut report = RecoveryReport::default();
        let checkpoint_records = match checkpoint {
            Some(checkpoint) => {
                if let Some(stable) = &checkpoint.stable {
                    replica
                        .restore_stable(stable, &verifier)
                        .map_err(|reason| RecoveryError::InvalidCheckpoint {
                            seq: stable.seq,
                            reason,
                        })?;
                    report.stable_seq = stable.seq;
                }
                checkpoint.records.as_slice()
            }
            None => &[],
        };
        let records = if is_planted(PlantedBug::RecoverySkipsLog) {
            &[]
        } else {
            records
        };
        for (place, list) in [("checkpoint", checkpoint_records), ("log", records)] {
            for (index, record) in list.iter().enumerate() {
                let applied = replica
                    .replay(record, &verifier, &mut report)
                    .map_err(|reason| RecoveryError::InvalidRecord {
                        place,
                        index,
                        reason,
                    })?;
                if applied {
                    report.records_applied += 1;
                } else {
                    report.records_ignored += 1;
                }
            }
        }
        // The checkpoint that became stable during replay is on disk already.
        replica.checkpoint_due = false;
        report.view = replica.view;
        report.last_executed = replica.last_executed;
        Ok((replica, report))
    }

    /// What this replica would restart from now: its stable checkpoint and records that rebuild
    /// what it holds above it. Steps carry one in their [`Actions`] when a checkpoint becomes
    /// stable; tests use this to check that recovery rebuilds the replica.
    pub fn durable_checkpoint(&self) -> DurableCheckpoint {
        let stable = self.stable.as_ref().and_then(|stable| {
            let stored = self.own_checkpoints.get(&stable.seq)?;
            Some(StableState {
                seq: stable.seq,
                state: stored.state.clone(),
                proof: stable.proof.iter().map(|v| v.frame().clone()).collect(),
            })
        });
        let mut records = Vec::new();
        // Prepared certificates (of any view), for the next VIEW-CHANGE.
        for stored in self.prepared.values() {
            let pre_prepare = stored.certificate.pre_prepare.frame();
            records.push(Record::Prepared {
                pre_prepare: with_batch(pre_prepare, stored.batch.as_deref()),
                prepares: frames(&stored.certificate.prepares),
            });
        }
        // The NEW-VIEW that installed the current view (or the last one entered).
        if let Some(frame) = &self.new_view_frame {
            records.push(Record::Frame(frame.clone()));
        }
        // Batches committed above the stable checkpoint, to execute again.
        for certificate in self.commit_certificates.values() {
            if let Some(batch) = certificate.batch.as_deref() {
                records.push(Record::Committed {
                    pre_prepare: with_batch(certificate.pre_prepare.frame(), Some(batch)),
                    commits: frames(&certificate.commits),
                });
            }
        }
        // The window's other slots: pre-prepare with batch, prepares, commits.
        for (seq, slot) in self.log.slots() {
            if self
                .commit_certificates
                .get(seq)
                .is_some_and(|c| c.batch.is_some())
            {
                continue;
            }
            if let (Some(pre_prepare), Some(batch)) = (&slot.pre_prepare, &slot.batch) {
                records.push(Record::Frame(with_batch(pre_prepare.frame(), Some(batch))));
            }
            let votes = slot.prepares.values().map(|p| p.frame());
            let votes = votes.chain(slot.commits.values().map(|c| c.frame()));
            records.extend(votes.cloned().map(Record::Frame));
        }
        // A VIEW-CHANGE this replica sent and still waits on.
        if self.phase == Phase::ViewChanging
            && let Some(own) = self.view_changes.get(&self.id)
        {
            records.push(Record::Frame(own.frame().clone()));
        }
        DurableCheckpoint { stable, records }
    }

    /// Restores a stored stable checkpoint: 2f+1 CHECKPOINT messages from distinct replicas for
    /// the digest of the stored state.
    fn restore_stable(&mut self, stable: &StableState, verifier: &Verifier) -> Result<(), String> {
        let stored = StoredCheckpoint::new(
            stable.seq,
            stable.state.clone(),
            self.config.limits.state_chunk_bytes,
        );
        let mut signers = BTreeSet::new();
        let mut proof = Vec::new();
        for frame in &stable.proof {
            let vote = verify(verifier, self.id, frame)?
                .into_checkpoint()
                .ok_or("the proof holds a frame that is not a CHECKPOINT")?;
            let matches =
                vote.message().seq == stable.seq && vote.message().digest == stored.digest;
            if matches && signers.insert(vote.sender()) {
                proof.push(vote);
            }
        }
        if proof.len() < self.config.quorum() || stable.seq == SeqNum(0) {
            return Err(format!(
                "{} matching CHECKPOINT messages for the stored state, {} needed",
                proof.len(),
                self.config.quorum()
            ));
        }
        self.restore_checkpoint_state(stable.seq, &stable.state)?;
        let certificate = StableCertificate {
            seq: stable.seq,
            digest: stored.digest,
            proof,
        };
        self.own_checkpoints.insert(stable.seq, stored);
        self.last_executed = stable.seq;
        self.make_stable(certificate);
        Ok(())
    }

    /// Replays one record; returns whether it had an effect. Fails only if a frame does not
    /// verify.
    fn replay(
        &mut self,
        record: &Record,
        verifier: &Verifier,
        report: &mut RecoveryReport,
    ) -> Result<bool, String> {
        let mut actions = Actions::default();
        let applied = match record {
            Record::Signed(signed) => self.replay_frame(&signed.frame, verifier, &mut actions)?,
            Record::Frame(frame) => self.replay_frame(frame, verifier, &mut actions)?,
            Record::Prepared {
                pre_prepare,
                prepares,
            } => self.replay_prepared(pre_prepare, prepares, verifier)?,
            Record::Committed {
                pre_prepare,
                commits,
            } => {
                let pre_prepare = verify(verifier, self.id, pre_prepare)?
                    .into_pre_prepare()
                    .ok_or("a commit certificate without a pre-prepare")?;
                let commits = commits
                    .iter()
                    .map(|c| {
                        verify(verifier, self.id, c)?
                            .into_commit()
                            .ok_or_else(|| "a commit certificate with a non-commit".to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let batch = CommittedBatch {
                    pre_prepare: Box::new(pre_prepare),
                    commits,
                };
                self.install_committed(&batch).is_ok()
            }
        };
        // Execute what the record completed; what the step would send is dropped (it was sent
        // before the crash, or peers ask again).
        self.finish_step(&mut actions);
        report.signed.extend(actions.signed_records().cloned());
        report.executed_batches.extend(actions.executed_batches);
        report.executed.extend(actions.executed);
        Ok(applied)
    }

    fn replay_frame(
        &mut self,
        frame: &Bytes,
        verifier: &Verifier,
        actions: &mut Actions,
    ) -> Result<bool, String> {
        let message = verify(verifier, self.id, frame)?;
        if message.sender() != Principal::Replica(self.id) {
            let refused = actions.rejected.len();
            self.on_message(message, actions);
            return Ok(actions.rejected.len() == refused);
        }
        Ok(self.replay_own(message, actions))
    }

    /// Puts one of this replica's own messages back where it was.
    fn replay_own(&mut self, message: VerifiedMessage, actions: &mut Actions) -> bool {
        match message {
            VerifiedMessage::PrePrepare(own) => {
                let PrePrepare {
                    view, seq, digest, ..
                } = *own.message();
                if !self.in_normal_case_of(view, seq) || !self.is_primary() {
                    return false;
                }
                let batch = own.message().requests.clone();
                let slot = self.log.slot(seq);
                match slot.digest() {
                    Some(held) if held != digest => return false,
                    Some(_) if slot.batch.is_some() || batch.is_none() => return false,
                    Some(_) => slot.batch = batch,
                    None => {
                        slot.batch = batch;
                        slot.pre_prepare = Some(own);
                        slot.accepted_at = self.now;
                    }
                }
                self.last_assigned = self.last_assigned.max(seq);
                self.advance(seq, actions);
                true
            }
            VerifiedMessage::Prepare(own) => {
                let Prepare { view, seq, digest } = *own.message();
                self.restore_own_vote(view, seq, digest, actions, |slot, id| {
                    slot.prepares.insert(id, own);
                })
            }
            VerifiedMessage::Commit(own) => {
                let Commit { view, seq, digest } = *own.message();
                self.restore_own_vote(view, seq, digest, actions, |slot, id| {
                    slot.commits.insert(id, own);
                    slot.commit_sent = true;
                })
            }
            VerifiedMessage::ViewChange(own) => {
                let to = own.message().new_view;
                if to < self.view || (to == self.view && self.phase == Phase::Normal) {
                    return false;
                }
                self.view = to;
                self.phase = Phase::ViewChanging;
                self.backoff = self.backoff.saturating_add(1);
                self.view_timer = None;
                self.view_change_resend_at = Some(self.now + self.config.timing.view_change_resend);
                self.view_changes.insert(self.id, own);
                true
            }
            VerifiedMessage::NewView(own) => self.accept_new_view(own, actions).is_ok(),
            // Checkpoints are signed again as execution reaches them; nothing else is persisted.
            _ => false,
        }
    }

    /// Whether a message of (`view`, `seq`) belongs to the normal case this replica runs now.
    fn in_normal_case_of(&self, view: View, seq: SeqNum) -> bool {
        view == self.view
            && self.phase == Phase::Normal
            && self.in_window(seq).is_ok()
            && self.check_caught_up(seq).is_ok()
    }

    /// Puts one of this replica's votes back into its slot with `place`, if it is of the current
    /// view's normal case and agrees with the slot's pre-prepare; then moves the slot forward.
    fn restore_own_vote(
        &mut self,
        view: View,
        seq: SeqNum,
        digest: bft_crypto::Digest,
        actions: &mut Actions,
        place: impl FnOnce(&mut Slot, ReplicaId),
    ) -> bool {
        if !self.in_normal_case_of(view, seq) {
            return false;
        }
        let id = self.id;
        let slot = self.log.slot(seq);
        if slot.digest().is_some_and(|held| held != digest) {
            return false;
        }
        place(slot, id);
        self.advance(seq, actions);
        true
    }

    /// Keeps a stored prepared certificate if it is valid and of a higher view than the one held.
    fn replay_prepared(
        &mut self,
        pre_prepare: &Bytes,
        prepares: &[Bytes],
        verifier: &Verifier,
    ) -> Result<bool, String> {
        let pre_prepare = verify(verifier, self.id, pre_prepare)?
            .into_pre_prepare()
            .ok_or("a prepared certificate without a pre-prepare")?;
        // A prepared certificate is relayed in VIEW-CHANGEs: it held only checked prepares when
        // it was recorded, and every one must still verify by its signature.
        let prepares = prepares
            .iter()
            .map(|p| {
                signed(verifier.verify(p.clone()))?
                    .into_prepare()
                    .ok_or_else(|| "a prepared certificate with a non-prepare".to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let header = pre_prepare.message();
        let (view, seq, digest) = (header.view, header.seq, header.digest);
        let primary = Principal::Replica(view.primary(self.config.n()));
        let signers: BTreeSet<Principal> = prepares
            .iter()
            .filter(|p| {
                let m = p.message();
                (m.view, m.seq, m.digest) == (view, seq, digest) && p.sender() != primary
            })
            .map(|p| p.sender())
            .collect();
        let valid = pre_prepare.sender() == primary && signers.len() >= 2 * self.config.f;
        let newer = self
            .prepared
            .get(&seq)
            .is_none_or(|held| held.certificate.pre_prepare.message().view < view);
        if !valid || !newer || seq <= self.low_watermark {
            return Ok(false);
        }
        let batch = header.requests.clone();
        let stripped = codec::with_attachment(pre_prepare.frame(), &[])
            .ok_or("an undecodable pre-prepare frame")?;
        let certificate = PreparedCertificate {
            pre_prepare: Verified::new(
                pre_prepare.sender(),
                PrePrepare {
                    requests: None,
                    ..header.clone()
                },
                stripped,
                pre_prepare.digest(),
            ),
            prepares,
        };
        self.prepared
            .insert(seq, StoredPrepared { certificate, batch });
        Ok(true)
    }
}

/// Verifies a frame read back from this replica's log (see [`Verifier::verify_recorded`]: a
/// commit its signer's channel authenticated is not rejected now for a signature never checked).
fn verify(verifier: &Verifier, own: ReplicaId, frame: &Bytes) -> Result<VerifiedMessage, String> {
    signed(verifier.verify_recorded(own, frame.clone()))
}

/// A verification result with the error as recovery reports it.
fn signed(result: Result<VerifiedMessage, crate::VerifyError>) -> Result<VerifiedMessage, String> {
    result.map_err(|e| format!("frame does not verify: {e}"))
}

fn frames<M>(messages: &[Verified<M>]) -> Vec<Bytes> {
    messages.iter().map(|m| m.frame().clone()).collect()
}

/// A pre-prepare frame with `batch` attached (or without a batch).
fn with_batch(frame: &Bytes, batch: Option<&[Verified<crate::messages::Request>]>) -> Bytes {
    let attachment = batch.map(encode_batch_of).unwrap_or_default();
    codec::with_attachment(frame, &attachment).unwrap_or_else(|| frame.clone())
}
