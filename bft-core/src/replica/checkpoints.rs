//! Checkpoints and log garbage collection (PBFT OSDI'99 section 4.3; TOCS 2002 section 5).
//!
//! After executing every K-th sequence number a replica encodes its checkpoint state (the
//! service snapshot and the client table that exactly-once semantics depend on), splits it into
//! chunks, and multicasts a signed CHECKPOINT carrying the digest of the chunk manifest. 2f+1
//! matching CHECKPOINTs from distinct replicas are a stable certificate: the replica discards log
//! slots and checkpoint votes at or below it and moves the low watermark h there, so the log never
//! holds more than the window L. A certificate for a state the replica does not have starts state
//! transfer (see `state_transfer.rs`).

use super::{Actions, Rejection, Replica, SignedRecord, own};
use crate::codec;
use crate::ids::{ClientId, ReplicaId, SeqNum, View};
use crate::messages::{Checkpoint, MessageKind, Outcome, StateManifest, checkpoint_digest};
use crate::service::Service;
use crate::verify::Verified;
use bft_crypto::{Digest, sha256};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a checkpoint captures, encoded with the codec: identical bytes on every correct replica
/// that executed the same batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CheckpointState {
    pub(super) seq: SeqNum,
    #[serde(with = "serde_bytes")]
    pub(super) service: Vec<u8>,
    /// (client, last executed timestamp, its outcome), sorted by client.
    pub(super) clients: Vec<(ClientId, u64, Outcome)>,
}

/// A checkpoint this replica holds the state of.
#[derive(Debug, Clone)]
pub(super) struct StoredCheckpoint {
    pub(super) state: Bytes,
    pub(super) manifest: StateManifest,
    pub(super) digest: Digest,
}

impl StoredCheckpoint {
    /// Splits `state` into chunks of `chunk_bytes` and digests them.
    pub(super) fn new(seq: SeqNum, state: Bytes, chunk_bytes: usize) -> StoredCheckpoint {
        let manifest = StateManifest {
            seq,
            total_bytes: state.len() as u64,
            chunk_digests: state.chunks(chunk_bytes).map(sha256).collect(),
        };
        let digest = checkpoint_digest(&manifest);
        StoredCheckpoint {
            state,
            manifest,
            digest,
        }
    }

    /// Chunk `index`, if it exists.
    pub(super) fn chunk(&self, index: u32, chunk_bytes: usize) -> Option<&[u8]> {
        self.state.chunks(chunk_bytes).nth(index as usize)
    }
}

/// The proof that a checkpoint is stable: 2f+1 matching CHECKPOINT messages from distinct
/// replicas. View change carries it.
#[derive(Debug, Clone)]
pub struct StableCertificate {
    /// The checkpoint's sequence number.
    pub seq: SeqNum,
    /// The certified checkpoint digest.
    pub digest: Digest,
    /// The CHECKPOINT messages, one per distinct replica.
    pub proof: Vec<Verified<Checkpoint>>,
}

/// CHECKPOINT messages held, by sequence number then sender. Votes for sequence numbers inside
/// the window are kept per sequence number (at most L/K of them); above the window only each
/// sender's highest vote is kept, so a peer cannot make the replica hold more than one vote
/// beyond the window.
#[derive(Debug, Default)]
pub(super) struct CheckpointVotes {
    votes: BTreeMap<SeqNum, BTreeMap<ReplicaId, Verified<Checkpoint>>>,
}

impl CheckpointVotes {
    pub(super) fn len(&self) -> usize {
        self.votes.values().map(BTreeMap::len).sum()
    }

    fn insert(&mut self, sender: ReplicaId, vote: Verified<Checkpoint>, high: SeqNum) {
        let seq = vote.message().seq;
        if seq > high {
            // Beyond the window: keep only this sender's latest vote there.
            for (_, by_sender) in self.votes.range_mut(high.next()..) {
                by_sender.remove(&sender);
            }
            self.votes.retain(|_, by_sender| !by_sender.is_empty());
        }
        self.votes.entry(seq).or_default().insert(sender, vote);
    }

    fn get(&self, seq: SeqNum, sender: ReplicaId) -> Option<&Verified<Checkpoint>> {
        self.votes.get(&seq)?.get(&sender)
    }

    /// The highest sequence number with 2f+1 matching votes, with its proof.
    pub(super) fn highest_certificate(&self, quorum: usize) -> Option<StableCertificate> {
        self.votes.iter().rev().find_map(|(seq, by_sender)| {
            let mut by_digest: BTreeMap<Digest, Vec<&Verified<Checkpoint>>> = BTreeMap::new();
            for vote in by_sender.values() {
                by_digest
                    .entry(vote.message().digest)
                    .or_default()
                    .push(vote);
            }
            by_digest
                .into_iter()
                .find(|(_, votes)| votes.len() >= quorum)
                .map(|(digest, votes)| StableCertificate {
                    seq: *seq,
                    digest,
                    proof: votes.into_iter().cloned().collect(),
                })
        })
    }

    /// Drops every vote at or below `seq`.
    fn discard_through(&mut self, seq: SeqNum) {
        self.votes = self.votes.split_off(&seq.next());
    }
}

impl<S: Service> Replica<S> {
    /// Takes a checkpoint after executing `seq` if it is a multiple of K: stores the state,
    /// multicasts a signed CHECKPOINT, and counts its own vote.
    pub(super) fn checkpoint_if_due(&mut self, seq: SeqNum, actions: &mut Actions) {
        if !seq.0.is_multiple_of(self.config.limits.checkpoint_interval) {
            return;
        }
        let state = CheckpointState {
            seq,
            service: self.service.snapshot(),
            clients: self
                .clients
                .records
                .iter()
                .filter_map(|(c, r)| Some((*c, r.last_executed, r.last_outcome.clone()?)))
                .collect(),
        };
        let chunk_bytes = self.config.limits.state_chunk_bytes;
        let stored = StoredCheckpoint::new(seq, Bytes::from(codec::encode(&state)), chunk_bytes);
        if stored.manifest.chunk_digests.len() > self.config.limits.max_state_chunks() {
            // Peers could not fetch this state; the cluster still orders and executes.
            self.metrics.oversized_checkpoints += 1;
        }
        let checkpoint = Checkpoint {
            seq,
            digest: stored.digest,
        };
        self.own_checkpoints.insert(seq, stored);
        self.metrics.checkpoints_taken += 1;
        self.checkpoint_resend_at = Some(self.now + self.config.timing.vote_resend);
        let (frame, message_digest) = self.sign(&checkpoint);
        let vote = own(self.id, checkpoint, frame.clone(), message_digest);
        self.checkpoint_votes
            .insert(self.id, vote, self.high_watermark());
        actions.persist_and_multicast(SignedRecord {
            kind: MessageKind::Checkpoint,
            // Checkpoints belong to no view: one record per sequence number.
            view: View(0),
            seq,
            digest: checkpoint.digest,
            frame,
        });
        self.act_on_certificates(actions);
    }

    /// A CHECKPOINT from another replica (section 4.3): at most one per sender and sequence
    /// number, only at multiples of K above the low watermark.
    pub(super) fn on_checkpoint(
        &mut self,
        message: Verified<Checkpoint>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let sender = self.replica_sender(message.sender())?;
        let Checkpoint { seq, digest } = *message.message();
        if seq.0 == 0 || !seq.0.is_multiple_of(self.config.limits.checkpoint_interval) {
            return Err(Rejection::MisalignedCheckpoint { seq });
        }
        if seq <= self.low_watermark {
            // A vote that arrives well after the checkpoint became stable here comes from a
            // replica that has not seen it become stable (its copies of the others' votes were
            // lost): send it the proof, so its window can move. (Votes that merely arrive after
            // the quorum, as the last of 2f+2 does, get nothing.)
            if self.now >= self.stable_at + self.config.timing.vote_resend {
                self.send_stable_proof(sender, actions);
            }
            return Err(Rejection::Late {
                seq,
                low: self.low_watermark,
            });
        }
        if let Some(previous) = self.checkpoint_votes.get(seq, sender) {
            return Err(if previous.message().digest == digest {
                Rejection::Duplicate
            } else {
                Rejection::ConflictingVote
            });
        }
        self.checkpoint_votes
            .insert(sender, message, self.high_watermark());
        self.act_on_certificates(actions);
        Ok(())
    }

    /// Acts on the highest stable certificate held: garbage-collects if this replica has that
    /// state, and otherwise fetches it once it cannot get there by executing.
    pub(super) fn act_on_certificates(&mut self, actions: &mut Actions) {
        let Some(certificate) = self
            .checkpoint_votes
            .highest_certificate(self.config.quorum())
        else {
            return;
        };
        if certificate.seq <= self.low_watermark {
            return;
        }
        match self.own_checkpoints.get(&certificate.seq) {
            Some(own) if own.digest == certificate.digest => self.make_stable(certificate),
            // Executed there but reached another state: this replica's state is wrong (a
            // nondeterministic service); the certified state replaces it.
            Some(_) => self.start_state_transfer(certificate, actions),
            None if certificate.seq > self.last_executed && !self.next_batch_is_ready() => {
                self.start_state_transfer(certificate, actions);
            }
            // Execution will reach the checkpoint and check it then.
            None => {}
        }
    }

    /// Whether the next batch to execute is committed (execution is not stuck).
    fn next_batch_is_ready(&self) -> bool {
        self.log
            .get(self.last_executed.next())
            .is_some_and(|slot| slot.is_executable())
    }

    /// Makes `certificate` the stable checkpoint: moves h, and discards log slots, votes and
    /// stored states below it (section 4.3).
    pub(super) fn make_stable(&mut self, certificate: StableCertificate) {
        let seq = certificate.seq;
        debug_assert!(seq > self.low_watermark && seq <= self.last_executed);
        self.low_watermark = seq;
        self.last_assigned = self.last_assigned.max(seq);
        self.log.discard_through(seq);
        self.checkpoint_votes.discard_through(seq);
        self.own_checkpoints = self.own_checkpoints.split_off(&seq);
        self.prepared = self.prepared.split_off(&seq.next());
        self.commit_certificates = self.commit_certificates.split_off(&seq.next());
        if self.transfer.as_ref().is_some_and(|t| t.target.seq <= seq) {
            self.transfer = None;
        }
        self.stable = Some(certificate);
        self.stable_at = self.now;
        self.checkpoint_due = true;
        self.metrics.checkpoints_stable += 1;
    }

    /// The latest stable checkpoint's certificate, if any checkpoint is stable yet.
    pub fn stable_certificate(&self) -> Option<&StableCertificate> {
        self.stable.as_ref()
    }

    /// The digest of this replica's checkpoint at `seq`, if it holds that checkpoint's state.
    pub fn checkpoint_digest(&self, seq: SeqNum) -> Option<Digest> {
        self.own_checkpoints.get(&seq).map(|stored| stored.digest)
    }

    /// While this replica's latest checkpoint is not stable here, re-sends its CHECKPOINT every
    /// `timing.vote_resend` (TOCS 2002 section 5.2): lost checkpoint votes would otherwise keep
    /// the window from moving. Peers past that checkpoint answer with their stable proof.
    pub(super) fn resend_checkpoint(&mut self, actions: &mut Actions) {
        let now = self.now;
        if self.checkpoint_resend_at.is_none_or(|at| at > now) {
            return;
        }
        self.checkpoint_resend_at = None;
        let Some((&seq, _)) = self.own_checkpoints.last_key_value() else {
            return;
        };
        if seq <= self.low_watermark {
            return;
        }
        if let Some(vote) = self.checkpoint_votes.get(seq, self.id) {
            let frame = vote.frame().clone();
            actions.send(super::Outgoing {
                to: super::Destination::OtherReplicas,
                frame,
            });
            self.checkpoint_resend_at = Some(now + self.config.timing.vote_resend);
        }
    }
}
