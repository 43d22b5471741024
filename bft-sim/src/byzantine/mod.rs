//! Byzantine replicas: an [`Adversary`] rewrites the frames one replica sends.
//!
//! A Byzantine replica in the simulator runs the real [`bft_core::Replica`] with its real key;
//! every frame it sends then passes through [`Adversary::corrupt`] under an [`Attack`] the
//! simulator picks with its seeded RNG. Every corruption is something a real attacker holding that
//! replica's key, and no one else's, could do:
//!
//! - it re-signs its own messages with other content (another view, sequence number, digest or
//!   batch; forged or stale certificates inside its own VIEW-CHANGE or NEW-VIEW);
//! - it replays, relays and embeds frames it has seen, signed by anyone, byte for byte;
//! - it sends arbitrary bytes (bad signatures, oversized frames, garbage).
//!
//! It never signs as another principal. Where a forgery would need another replica's signature
//! (a prepared certificate with 2f prepares it never received, a checkpoint proof it does not
//! hold), the forged frame carries a wrong signature or too few signers, and the verifier or the
//! replica must refuse it.
//!
//! Deterministic: the output is a function of the frames observed so far, the frame, the attack
//! and the RNG (no clock, no OS randomness, ordered collections only). Bounded: at most
//! [`OBSERVED_PER_KIND`] frames are remembered per message kind and at most
//! [`MAX_FRAMES_PER_CALL`] frames come out of one call.

mod certificates;
mod frames;
mod malformed;
mod observed;
mod random;
mod replay;
mod resign;
#[cfg(test)]
mod tests;

use bft_core::messages::MessageKind;
use bft_core::{ClusterConfig, Principal, ReplicaId, View};
use bft_crypto::KeyPair;
use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

/// Most frames [`Adversary::observe`] remembers per message kind (the oldest are forgotten).
pub const OBSERVED_PER_KIND: usize = 32;

/// Most frames one [`Adversary::corrupt`] call returns.
pub const MAX_FRAMES_PER_CALL: usize = 32;

/// [`Attack::FutureFlood`] sends messages for views up to this far above the current one.
pub const FUTURE_VIEW_SPAN: u64 = 1000;

/// [`Attack::Oversized`] frames exceed `limits.max_message_bytes` by 1 to this many bytes.
pub const OVERSIZE_EXTRA_BYTES: usize = 64;

/// What a Byzantine replica does to one frame it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attack {
    /// The view of a PRE-PREPARE, PREPARE, COMMIT or VIEW-CHANGE moved by one, re-signed.
    ShiftView,
    /// The sequence number of a PRE-PREPARE, PREPARE, COMMIT or CHECKPOINT moved by one,
    /// re-signed.
    ShiftSeq,
    /// A conflicting, validly signed message for the same (view, sequence number): a PRE-PREPARE
    /// with another valid batch (a request dropped, the order changed, an empty batch, an observed
    /// request added) and its correct digest; a PREPARE, COMMIT or CHECKPOINT with another digest;
    /// a VIEW-CHANGE that forgets prepared certificates or its stable checkpoint.
    Equivocate,
    /// A random digest that matches nothing, re-signed (a PRE-PREPARE's batch then no longer
    /// matches its digest, which the verifier refuses).
    SwapDigest,
    /// An observed frame sent instead of, or after, the current one.
    ReplayOld,
    /// A VIEW-CHANGE or NEW-VIEW with forged content (see [`Adversary::corrupt`]).
    ForgeCertificate,
    /// A VIEW-CHANGE or NEW-VIEW built from old observed material, or an old one re-sent.
    StaleCertificate,
    /// Up to [`MAX_FRAMES_PER_CALL`] - 1 validly signed PREPAREs, COMMITs, empty VIEW-CHANGEs (and
    /// PRE-PREPAREs when it has a batch) for views far above the current one, after the frame.
    FutureFlood,
    /// One bit of the signature flipped.
    InvalidSignature,
    /// The frame padded past `limits.max_message_bytes`.
    Oversized,
    /// Random bytes, the frame truncated, or one payload byte flipped.
    Garbage,
}

impl Attack {
    /// Every attack.
    pub const ALL: [Attack; 11] = [
        Attack::ShiftView,
        Attack::ShiftSeq,
        Attack::Equivocate,
        Attack::SwapDigest,
        Attack::ReplayOld,
        Attack::ForgeCertificate,
        Attack::StaleCertificate,
        Attack::FutureFlood,
        Attack::InvalidSignature,
        Attack::Oversized,
        Attack::Garbage,
    ];

    /// A short kebab-case name, for summaries and command lines.
    pub fn name(self) -> &'static str {
        match self {
            Attack::ShiftView => "shift-view",
            Attack::ShiftSeq => "shift-seq",
            Attack::Equivocate => "equivocate",
            Attack::SwapDigest => "swap-digest",
            Attack::ReplayOld => "replay-old",
            Attack::ForgeCertificate => "forge-certificate",
            Attack::StaleCertificate => "stale-certificate",
            Attack::FutureFlood => "future-flood",
            Attack::InvalidSignature => "invalid-signature",
            Attack::Oversized => "oversized",
            Attack::Garbage => "garbage",
        }
    }

    /// The attack called `name` (see [`Attack::name`]).
    pub fn from_name(name: &str) -> Option<Attack> {
        Attack::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The Byzantine behaviour of one replica: it holds that replica's key (and only that one) and
/// remembers, within bounds, frames the replica sent or received.
pub struct Adversary {
    config: Arc<ClusterConfig>,
    id: ReplicaId,
    key: KeyPair,
    /// Observed frames per kind, oldest first, at most [`OBSERVED_PER_KIND`] each. Requests are
    /// kept only if their client signature verifies (equivocating batches are built from them).
    observed: BTreeMap<MessageKind, VecDeque<Bytes>>,
    /// The highest view of a frame this replica itself sent (the base of future-view floods for
    /// frames without a view).
    highest_view: View,
}

impl fmt::Debug for Adversary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adversary")
            .field("id", &self.id)
            .field(
                "observed",
                &self.observed.values().map(VecDeque::len).sum::<usize>(),
            )
            .field("highest_view", &self.highest_view)
            .finish_non_exhaustive()
    }
}

impl Adversary {
    /// The adversary for replica `id` of `config` (a valid configuration, as the replica's is),
    /// holding that replica's key pair.
    pub fn new(config: Arc<ClusterConfig>, id: ReplicaId, key: KeyPair) -> Adversary {
        Adversary {
            config,
            id,
            key,
            observed: BTreeMap::new(),
            highest_view: View(0),
        }
    }

    /// The replica this adversary acts for.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// Remembers a frame this replica sent or received (for replays and stale certificates),
    /// with the frames it embeds: a pre-prepare's requests, a VIEW-CHANGE's checkpoints,
    /// pre-prepares and prepares, a NEW-VIEW's VIEW-CHANGEs and pre-prepares. Undecodable frames
    /// are ignored; at most [`OBSERVED_PER_KIND`] frames are kept per kind.
    pub fn observe(&mut self, frame: &Bytes) {
        self.remember(frame.clone(), 0);
    }

    /// The frames to send instead of `frame` under `attack`: usually one, possibly `frame` itself
    /// followed by others (replays, floods), at most [`MAX_FRAMES_PER_CALL`]. An attack that does
    /// not apply to the frame (its kind, or a frame this replica did not sign where re-signing is
    /// needed, or nothing observed to replay) leaves it unchanged: `vec![frame.clone()]`. Never
    /// panics.
    ///
    /// [`Attack::ForgeCertificate`] on a VIEW-CHANGE forges one of: a prepare with a bad
    /// signature, repeated prepares, fewer than 2f prepares, a prepare for another digest, a
    /// pre-prepare it signed for a view it does not lead, a checkpoint proof too small,
    /// mismatched or repeated, or a higher stable checkpoint without proof. On a NEW-VIEW: fewer
    /// than 2f+1 VIEW-CHANGEs, a repeated one, a re-issued pre-prepare re-signed with another
    /// digest, one left out, one added, or its own VIEW-CHANGE forged as above.
    ///
    /// [`Attack::StaleCertificate`] on a VIEW-CHANGE re-sends an observed one for an older view,
    /// or sends the content of an older one for the current view, or swaps in prepared
    /// certificates from older views; on a NEW-VIEW it re-sends an older one, or embeds
    /// VIEW-CHANGEs or pre-prepares of older views; after any other frame it re-sends an
    /// observed VIEW-CHANGE or NEW-VIEW.
    pub fn corrupt(&mut self, frame: &Bytes, attack: Attack, rng: &mut ChaCha8Rng) -> Vec<Bytes> {
        self.note_own_view(frame);
        let corrupted = match attack {
            Attack::ShiftView => self.shift_view(frame, rng),
            Attack::ShiftSeq => self.shift_seq(frame, rng),
            Attack::Equivocate => self.equivocate(frame, rng),
            Attack::SwapDigest => self.swap_digest(frame, rng),
            Attack::ReplayOld => self.replay_old(frame, rng),
            Attack::ForgeCertificate => self.forge_certificate(frame, rng),
            Attack::StaleCertificate => self.stale_certificate(frame, rng),
            Attack::FutureFlood => Some(self.future_flood(frame, rng)),
            Attack::InvalidSignature => self.invalid_signature(frame, rng),
            Attack::Oversized => Some(vec![self.oversized(frame, rng)]),
            Attack::Garbage => Some(vec![self.garbage(frame, rng)]),
        };
        match corrupted {
            Some(mut frames) if !frames.is_empty() => {
                frames.truncate(MAX_FRAMES_PER_CALL);
                frames
            }
            _ => vec![frame.clone()],
        }
    }

    // ---- the replica and its views ----

    fn max_len(&self) -> usize {
        self.config.limits.max_message_bytes
    }

    fn me(&self) -> Principal {
        Principal::Replica(self.id)
    }

    fn n(&self) -> u64 {
        self.config.n().max(1) as u64
    }

    fn primary_of(&self, view: View) -> ReplicaId {
        ReplicaId((view.0 % self.n()) as u32)
    }

    /// A view below `below` that this replica does not lead (or, if there is none, any such
    /// view).
    fn view_not_led(&self, below: View) -> View {
        (1..=self.n().min(below.0))
            .map(|back| View(below.0 - back))
            .find(|v| self.primary_of(*v) != self.id)
            .unwrap_or(View(u64::from(self.id.0).saturating_add(1)))
    }

    /// The first view at or above `from` that this replica leads.
    fn view_led_from(&self, from: View) -> View {
        let n = self.n();
        let id = u64::from(self.id.0) % n;
        let base = from.0 - from.0 % n;
        let view = base.saturating_add(id);
        View(if view < from.0 {
            view.saturating_add(n)
        } else {
            view
        })
    }
}
