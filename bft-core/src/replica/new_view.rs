//! Checking VIEW-CHANGE messages and computing what a NEW-VIEW must contain (PBFT OSDI'99
//! section 4.4). Pure functions of the configuration and the messages: the new primary uses them
//! to build a NEW-VIEW and every backup to recompute it, and accepts it only if both agree.

use super::Rejection;
use crate::config::ClusterConfig;
use crate::ids::{Principal, ReplicaId, SeqNum, View};
use crate::messages::{ViewChange, batch_digest};
use crate::planted::{PlantedBug, is_planted};
use crate::verify::Verified;
use bft_crypto::Digest;
use std::collections::{BTreeMap, BTreeSet};

/// What a valid VIEW-CHANGE proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CheckedViewChange {
    pub(super) sender: ReplicaId,
    /// The sender's stable checkpoint and its certified digest (`None` at sequence number 0).
    pub(super) stable: (SeqNum, Option<Digest>),
    /// For each sequence number the sender prepared above its checkpoint: the view it prepared
    /// in and the digest.
    pub(super) prepared: BTreeMap<SeqNum, (View, Digest)>,
}

/// The digest of the null request a new primary issues for a gap: an empty batch.
pub(super) fn null_digest() -> Digest {
    batch_digest(std::iter::empty())
}

fn distinct_senders<'a>(senders: impl Iterator<Item = Principal> + 'a) -> Option<usize> {
    let mut seen = BTreeSet::new();
    for sender in senders {
        if !seen.insert(sender) {
            return None;
        }
    }
    Some(seen.len())
}

/// Checks that every certificate in a VIEW-CHANGE proves what it claims, bound to its view,
/// sequence number, digest and sender, counting distinct members:
/// - the checkpoint proof is 2f+1 CHECKPOINTs from distinct replicas for the claimed sequence
///   number with one digest (or empty at sequence number 0);
/// - each prepared certificate is a pre-prepare from the primary of its view, for a view below the
///   new one and a sequence number in the sender's window above its checkpoint, with 2f matching
///   prepares from distinct backups; at most one certificate per sequence number.
pub(super) fn check_view_change(
    config: &ClusterConfig,
    message: &Verified<ViewChange>,
) -> Result<CheckedViewChange, Rejection> {
    let invalid = Err(Rejection::InvalidViewChange);
    let Principal::Replica(sender) = message.sender() else {
        return invalid;
    };
    let view_change = message.message();
    let n = config.n();
    let stable = if view_change.stable_seq == SeqNum(0) {
        if !view_change.checkpoint_proof.is_empty() {
            return invalid;
        }
        (SeqNum(0), None)
    } else {
        let proof = &view_change.checkpoint_proof;
        let Some(first) = proof.first() else {
            return invalid;
        };
        let digest = first.message().digest;
        let matching = proof
            .iter()
            .all(|c| c.message().seq == view_change.stable_seq && c.message().digest == digest);
        let distinct = distinct_senders(proof.iter().map(|c| c.sender()));
        if !matching || distinct.is_none_or(|d| d < config.quorum()) {
            return invalid;
        }
        (view_change.stable_seq, Some(digest))
    };
    let high = SeqNum(
        view_change
            .stable_seq
            .0
            .saturating_add(config.limits.window),
    );
    let mut prepared = BTreeMap::new();
    for certificate in &view_change.prepared {
        let pre_prepare = certificate.pre_prepare.message();
        let (view, seq, digest) = (pre_prepare.view, pre_prepare.seq, pre_prepare.digest);
        let primary = view.primary(n);
        let from_primary = certificate.pre_prepare.sender() == Principal::Replica(primary);
        let in_range = view < view_change.new_view && seq > view_change.stable_seq && seq <= high;
        let prepares_match = certificate.prepares.iter().all(|p| {
            let m = p.message();
            (m.view, m.seq, m.digest) == (view, seq, digest)
                && p.sender() != Principal::Replica(primary)
        });
        let distinct = distinct_senders(certificate.prepares.iter().map(|p| p.sender()));
        if !from_primary
            || !in_range
            || !prepares_match
            || distinct.is_none_or(|d| d < 2 * config.f)
        {
            return invalid;
        }
        if prepared.insert(seq, (view, digest)).is_some() {
            return invalid;
        }
    }
    Ok(CheckedViewChange {
        sender,
        stable,
        prepared,
    })
}

/// What the NEW-VIEW for a set of valid VIEW-CHANGEs contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NewViewPlan {
    /// min-s: the latest stable checkpoint among the VIEW-CHANGEs, with its digest.
    pub(super) stable: (SeqNum, Option<Digest>),
    /// Index (in the input) of a VIEW-CHANGE whose proof certifies `stable`.
    pub(super) stable_from: usize,
    /// For each sequence number in (min-s, max-s]: the digest to re-issue: the one prepared in the
    /// highest view, or the null request's where nothing prepared.
    pub(super) pre_prepares: Vec<(SeqNum, Digest)>,
}

/// Computes O from V (section 4.4): min-s is the latest stable checkpoint in V, max-s the highest
/// sequence number of a prepared certificate in V; every sequence number in between gets the
/// digest prepared in the highest view, or a null request.
pub(super) fn plan_new_view(view_changes: &[CheckedViewChange]) -> NewViewPlan {
    let (stable_from, stable) = view_changes
        .iter()
        .enumerate()
        .map(|(i, vc)| (i, vc.stable))
        .max_by_key(|(_, stable)| *stable)
        .expect("a new view has 2f+1 view changes");
    let max_seq = view_changes
        .iter()
        .flat_map(|vc| vc.prepared.keys().copied())
        .max()
        .unwrap_or(stable.0)
        .max(stable.0);
    let pre_prepares = (stable.0.0 + 1..=max_seq.0)
        .map(SeqNum)
        .map(|seq| {
            let chosen = view_changes
                .iter()
                .filter_map(|vc| vc.prepared.get(&seq))
                .filter(|_| !is_planted(PlantedBug::NewViewIgnoresPrepared))
                .max()
                .map_or_else(null_digest, |(_, digest)| *digest);
            (seq, chosen)
        })
        .collect();
    NewViewPlan {
        stable,
        stable_from,
        pre_prepares,
    }
}
