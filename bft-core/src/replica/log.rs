//! The message log: one slot per sequence number inside the window (PBFT section 4.2).

use crate::ids::{ReplicaId, SeqNum, Time};
use crate::messages::{Batch, Commit, PrePrepare, Prepare};
use crate::verify::{Verified, VerifiedMessage, Verifier};
use bft_crypto::Digest;
use std::collections::BTreeMap;

/// What the replica holds for one sequence number in the current view. At most one pre-prepare,
/// one prepare and one commit per replica: a slot never holds more than `2n + 1` messages.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// The accepted pre-prepare (the primary's own, on the primary).
    pub(crate) pre_prepare: Option<Verified<PrePrepare>>,
    /// The batch the pre-prepare's digest stands for, once known (a pre-prepare re-issued in a
    /// new view comes without it).
    pub(crate) batch: Option<Batch>,
    /// Prepares by sender (this replica's own included, on a backup).
    pub(crate) prepares: BTreeMap<ReplicaId, Verified<Prepare>>,
    /// Commits by sender (this replica's own included).
    pub(crate) commits: BTreeMap<ReplicaId, Verified<Commit>>,
    /// Whether this replica has sent its commit.
    pub(crate) commit_sent: bool,
    /// When this replica accepted the pre-prepare (its votes are re-sent if the slot has not
    /// committed some time after).
    pub(crate) accepted_at: Time,
    /// Whether the batch is committed here: committed-local (prepared plus 2f+1 matching
    /// commits), or installed with a commit certificate fetched from a peer.
    pub(crate) committed: bool,
}

impl Slot {
    /// The digest of the accepted pre-prepare.
    pub(crate) fn digest(&self) -> Option<Digest> {
        self.pre_prepare.as_ref().map(|p| p.message().digest)
    }

    /// prepared(m, v, n, i): the pre-prepare plus 2f prepares from distinct backups that match it
    /// (PBFT section 4.2), each with its signature checked, so that the prepared certificate this
    /// replica may have to show in a VIEW-CHANGE holds (see [`Slot::check_prepares`]). Prepares
    /// are keyed by sender, so each counts once.
    pub(crate) fn is_prepared(&self, f: usize) -> bool {
        let Some(digest) = self.digest() else {
            return false;
        };
        self.prepares
            .values()
            .filter(|p| p.message().digest == digest && p.signature_checked())
            .count()
            >= 2 * f
    }

    /// Checks the signatures of matching prepares that only their sender's channel
    /// authenticated, once 2f matching prepares are here and only as many as prepared needs; a
    /// prepare whose signature fails is dropped (its sender may send it again). Prepares that
    /// arrive after the slot prepared are never checked: nothing relays them. Returns how many
    /// were dropped.
    ///
    /// A correct replica's prepared certificate must verify wherever it shows it: if the batch
    /// commits, a VIEW-CHANGE from some correct replica that prepared it must carry the proof
    /// (section 4.4), so a Byzantine replica's badly signed prepare must never count here.
    pub(crate) fn check_prepares(&mut self, f: usize, verifier: &Verifier) -> u64 {
        let Some(digest) = self.digest() else {
            return 0;
        };
        let matching = |p: &Verified<Prepare>| p.message().digest == digest;
        let mut checked = self
            .prepares
            .values()
            .filter(|p| matching(p) && p.signature_checked())
            .count();
        let unchecked: Vec<ReplicaId> = self
            .prepares
            .iter()
            .filter(|(_, p)| matching(p) && !p.signature_checked())
            .map(|(id, _)| *id)
            .collect();
        if checked >= 2 * f || checked + unchecked.len() < 2 * f {
            return 0;
        }
        let mut dropped = 0;
        for id in unchecked {
            if checked >= 2 * f {
                break;
            }
            let frame = self.prepares[&id].frame().clone();
            match verifier
                .verify(frame)
                .ok()
                .and_then(VerifiedMessage::into_prepare)
            {
                Some(prepare) => {
                    self.prepares.insert(id, prepare);
                    checked += 1;
                }
                None => {
                    self.prepares.remove(&id);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Committed, with the batch at hand: ready to execute once its predecessors have run.
    pub(crate) fn is_executable(&self) -> bool {
        self.committed && self.batch.is_some()
    }

    /// 2f+1 commits from distinct replicas that match the pre-prepare: a commit certificate.
    #[cfg(debug_assertions)]
    pub(crate) fn has_commit_quorum(&self, f: usize) -> bool {
        let Some(digest) = self.digest() else {
            return false;
        };
        self.commits
            .values()
            .filter(|c| c.message().digest == digest)
            .count()
            > 2 * f
    }

    /// committed-local(m, v, n, i): prepared plus 2f+1 matching commits from distinct replicas.
    pub(crate) fn is_committed_local(&self, f: usize) -> bool {
        let Some(digest) = self.digest() else {
            return false;
        };
        self.is_prepared(f)
            && self
                .commits
                .values()
                .filter(|c| c.message().digest == digest)
                .count()
                > 2 * f
    }
}

/// Slots by sequence number. Slots exist only for sequence numbers in `(h, h + L]`, so the log
/// holds at most `L` slots.
#[derive(Debug, Default)]
pub(crate) struct Log {
    slots: BTreeMap<SeqNum, Slot>,
}

impl Log {
    pub(crate) fn get(&self, seq: SeqNum) -> Option<&Slot> {
        self.slots.get(&seq)
    }

    pub(crate) fn get_mut(&mut self, seq: SeqNum) -> Option<&mut Slot> {
        self.slots.get_mut(&seq)
    }

    /// The slot for `seq`, created if absent. Callers check the window first.
    pub(crate) fn slot(&mut self, seq: SeqNum) -> &mut Slot {
        self.slots.entry(seq).or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn slots(&self) -> impl Iterator<Item = (&SeqNum, &Slot)> {
        self.slots.iter()
    }

    /// Slots above `seq`.
    pub(crate) fn slots_after(&self, seq: SeqNum) -> impl Iterator<Item = (&SeqNum, &Slot)> {
        self.slots.range(seq.next()..)
    }

    /// Slots above `seq`, mutably.
    pub(crate) fn slots_after_mut(
        &mut self,
        seq: SeqNum,
    ) -> impl Iterator<Item = (&SeqNum, &mut Slot)> {
        self.slots.range_mut(seq.next()..)
    }

    /// Whether any slot above `seq` is committed.
    pub(crate) fn any_committed_after(&self, seq: SeqNum) -> bool {
        self.slots
            .range(seq.next()..)
            .any(|(_, slot)| slot.committed)
    }

    /// Drops every slot (a new view replaces the log with its re-issued pre-prepares).
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
    }

    /// Drops every slot at or below `seq` (garbage collection at a stable checkpoint).
    pub(crate) fn discard_through(&mut self, seq: SeqNum) {
        self.slots = self.slots.split_off(&seq.next());
    }
}
