//! Re-sending this replica's own votes for slots that stay uncommitted, and asking a peer for the
//! committed batch (PBFT retransmits messages until they are known to have arrived; TOCS 2002
//! section 5.2). A lost pre-prepare, prepare or commit would otherwise stall a slot until a view
//! change or a checkpoint repaired it. Receivers drop the copies they already hold as duplicates.

use super::{Actions, Destination, Outgoing, Phase, Replica};
use crate::codec;
use crate::ids::{Principal, Time};
use crate::messages::encode_batch_of;
use crate::service::Service;

impl<S: Service> Replica<S> {
    /// When the oldest slot above the last executed one that is still waiting was accepted, plus
    /// `timing.vote_resend`.
    pub(super) fn vote_resend_deadline(&self) -> Option<Time> {
        if self.phase != Phase::Normal {
            return None;
        }
        let period = self.config.timing.vote_resend;
        self.log
            .slots_after(self.last_executed)
            .filter(|(_, slot)| slot.pre_prepare.is_some())
            .map(|(_, slot)| slot.accepted_at + period)
            .min()
    }

    /// Re-sends this replica's pre-prepare (with its batch), prepare and commit for every slot
    /// that has waited `timing.vote_resend` since it was accepted (or last re-sent).
    pub(super) fn resend_votes(&mut self, actions: &mut Actions) {
        if self.phase != Phase::Normal {
            return;
        }
        let (now, period, me) = (self.now, self.config.timing.vote_resend, self.id);
        let mut frames = Vec::new();
        let mut stalled = false;
        for (_, slot) in self.log.slots_after_mut(self.last_executed) {
            let Some(pre_prepare) = slot.pre_prepare.as_ref() else {
                continue;
            };
            if slot.accepted_at + period > now {
                continue;
            }
            slot.accepted_at = now;
            stalled |= !slot.committed;
            if pre_prepare.sender() == Principal::Replica(me) {
                let frame = match &slot.batch {
                    Some(batch) => {
                        codec::with_attachment(pre_prepare.frame(), &encode_batch_of(batch))
                            .expect("own frames decode")
                    }
                    None => pre_prepare.frame().clone(),
                };
                frames.push(frame);
            }
            frames.extend(slot.prepares.get(&me).map(|p| p.frame().clone()));
            frames.extend(slot.commits.get(&me).map(|c| c.frame().clone()));
        }
        self.metrics.votes_resent += frames.len() as u64;
        for frame in frames {
            actions.send(Outgoing {
                to: Destination::OtherReplicas,
                frame,
            });
        }
        // Peers that already committed (and executed) no longer re-send their votes: ask one for
        // the committed batch instead.
        if stalled {
            self.start_catch_up(actions);
        }
    }
}
