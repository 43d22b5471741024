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
    /// replica may have to show in a VIEW-CHANGE holds (see [`Slot::check_votes`]). Prepares are
    /// keyed by sender, so each counts once.
    pub(crate) fn is_prepared(&self, f: usize) -> bool {
        let Some(digest) = self.digest() else {
            return false;
        };
        checked_matching(&self.prepares, digest, |p| p.digest) >= 2 * f
    }

    /// Checks the signatures of matching votes that only their sender's channel authenticated,
    /// once enough of them are here for prepared (2f prepares) or committed-local (2f+1
    /// commits), and only as many as that needs; a vote whose signature fails is dropped (its
    /// sender may send it again). Votes that arrive after the slot prepared or committed are
    /// never checked. Returns how many were dropped.
    ///
    /// Both certificates must verify wherever this replica shows them: if a batch commits, a
    /// VIEW-CHANGE from some correct replica that prepared it must carry the proof (section
    /// 4.4), and a replica that missed the batch can only fetch it with a commit certificate
    /// (TOCS 2002 section 6). So a Byzantine replica's badly signed vote must never count here:
    /// it counts as a missing vote, as when the verifier refused it.
    pub(crate) fn check_votes(&mut self, f: usize, verifier: &Verifier) -> u64 {
        let Some(digest) = self.digest() else {
            return 0;
        };
        let prepares = check_matching(
            &mut self.prepares,
            digest,
            |p| p.digest,
            2 * f,
            verifier,
            VerifiedMessage::into_prepare,
        );
        let commits = if self.is_prepared(f) {
            check_matching(
                &mut self.commits,
                digest,
                |c| c.digest,
                2 * f + 1,
                verifier,
                VerifiedMessage::into_commit,
            )
        } else {
            0
        };
        prepares + commits
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

    /// committed-local(m, v, n, i): prepared plus 2f+1 matching commits from distinct replicas,
    /// each with its signature checked (see [`Slot::check_votes`]).
    pub(crate) fn is_committed_local(&self, f: usize) -> bool {
        let Some(digest) = self.digest() else {
            return false;
        };
        self.is_prepared(f) && checked_matching(&self.commits, digest, |c| c.digest) > 2 * f
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

/// How many of `votes` match `digest` and have their signatures checked.
fn checked_matching<T>(
    votes: &BTreeMap<ReplicaId, Verified<T>>,
    digest: Digest,
    digest_of: impl Fn(&T) -> Digest,
) -> usize {
    votes
        .values()
        .filter(|v| digest_of(v.message()) == digest && v.signature_checked())
        .count()
}

/// Checks unchecked votes matching `digest` until `needed` checked ones are held, if enough
/// matching votes are here at all; drops those whose signature fails and returns their number.
pub(super) fn check_matching<T>(
    votes: &mut BTreeMap<ReplicaId, Verified<T>>,
    digest: Digest,
    digest_of: impl Fn(&T) -> Digest,
    needed: usize,
    verifier: &Verifier,
    into: fn(VerifiedMessage) -> Option<Verified<T>>,
) -> u64 {
    let mut checked = checked_matching(votes, digest, &digest_of);
    let unchecked: Vec<ReplicaId> = votes
        .iter()
        .filter(|(_, v)| digest_of(v.message()) == digest && !v.signature_checked())
        .map(|(id, _)| *id)
        .collect();
    if checked >= needed || checked + unchecked.len() < needed {
        return 0;
    }
    let mut dropped = 0;
    for id in unchecked {
        if checked >= needed {
            break;
        }
        let frame = votes[&id].frame().clone();
        match verifier.verify(frame).ok().and_then(into) {
            Some(vote) => {
                votes.insert(id, vote);
                checked += 1;
            }
            None => {
                votes.remove(&id);
                dropped += 1;
            }
        }
    }
    dropped
}
