//! Delivery and routing: verification, stepping replicas, Byzantine corruption, the network.

use super::{Discard, Event, Simulation, Target, VERIFY_CACHE, to_endpoint};
use crate::checkers::ViolationKind;
use crate::network::{Endpoint, Transit};
use crate::rng::{chance, pick};
use bft_core::codec::decode_frame;
use bft_core::{
    ClientInput, Destination, Input, MessageKind, Outgoing, Principal, ReplicaId, VerifiedMessage,
    VerifyError,
};
use bytes::Bytes;

impl Simulation {
    /// Verifies `frame` as received from `from`: the simulated network knows the true sender,
    /// as an authenticated connection would (replies are authenticated that way, unsigned).
    pub(super) fn verify(
        &mut self,
        from: Endpoint,
        frame: Bytes,
    ) -> Result<VerifiedMessage, VerifyError> {
        let peer = match from {
            Endpoint::Replica(id) => Principal::Replica(id),
            Endpoint::Client(id) => Principal::Client(id),
        };
        let key = (peer, frame);
        if let Some(result) = self.verified.get(&key) {
            return result.clone();
        }
        if self.verified.len() >= VERIFY_CACHE {
            self.verified.clear();
        }
        let result = self.verifier.verify_from(peer, key.1.clone());
        self.verified.insert(key, result.clone());
        result
    }

    /// Verifies `frame` from `from` at replica `id` (instance `instance`), as a replica's driver
    /// does: a client's first copy of a request at a backup is only recorded (`Ok(None)`), and a
    /// pre-prepare's embedded requests that their clients sent this replica directly are
    /// authenticated by that (see `bft_core::DirectRequests`). Those results depend on the
    /// receiver, so they bypass the cache.
    fn verify_at_replica(
        &mut self,
        from: Endpoint,
        id: ReplicaId,
        instance: usize,
        frame: Bytes,
    ) -> Result<Option<VerifiedMessage>, VerifyError> {
        let node = &mut self.replicas[id.0 as usize];
        match from {
            Endpoint::Client(client) => {
                let Some(replica) = node.instances.get(instance) else {
                    return Ok(None); // crashed: nothing receives it
                };
                let primary = replica.is_primary();
                self.verifier
                    .receive_direct(&mut node.direct, client, frame, primary)
            }
            Endpoint::Replica(peer) => {
                let max = self.config.limits.max_message_bytes;
                let batch_attached = decode_frame(&frame, max).is_ok_and(|f| {
                    f.header.kind == MessageKind::PrePrepare && !f.attachment.is_empty()
                });
                if batch_attached {
                    self.verifier
                        .verify_from_at(Principal::Replica(peer), frame, &node.direct)
                        .map(Some)
                } else {
                    self.verify(from, frame).map(Some)
                }
            }
        }
    }

    pub(super) fn deliver(&mut self, from: Endpoint, to: Target, frame: Bytes, from_correct: bool) {
        self.trace.deliver(self.now, from, to_endpoint(to), &frame);
        self.stats.delivered += 1;
        let verified = match to {
            Target::Replica(id, instance) => {
                self.verify_at_replica(from, id, instance, frame.clone())
            }
            Target::Client(_) => self.verify(from, frame.clone()).map(Some),
        };
        let message = match verified {
            Ok(Some(message)) => message,
            Ok(None) => {
                self.stats.recorded_direct += 1;
                return;
            }
            Err(error) => {
                self.stats.refused += 1;
                if from_correct {
                    let detail = format!("a frame from correct {from:?} was refused: {error}");
                    self.checker
                        .report(ViolationKind::RefusedCorrectFrame, self.now, detail);
                }
                return;
            }
        };
        match to {
            Target::Replica(id, instance) => {
                let node = &mut self.replicas[id.0 as usize];
                if instance >= node.instances.len() {
                    return;
                }
                if let Some(byzantine) = node.byzantine.as_mut() {
                    byzantine.adversary.observe(&frame);
                }
                self.step_replica(id, instance, Input::Message(message));
            }
            Target::Client(id) => {
                let now = self.now;
                let Some(node) = self.clients.get_mut(&id) else {
                    return; // the Byzantine client ignores replies
                };
                let actions = node.client.step(now, ClientInput::Message(message));
                if let Some(done) = actions.completed {
                    self.complete(id, done.outcome);
                }
                self.route_client(id, actions.send);
            }
        }
    }

    pub(super) fn step_replica(&mut self, id: ReplicaId, instance: usize, input: Input) {
        let now = self.now;
        let node = &mut self.replicas[id.0 as usize];
        let replica = &mut node.instances[instance];
        let actions = replica.step(now, input);
        let sends = if node.correct {
            self.checker
                .on_executed(now, id, &actions.executed_batches, &actions.executed);
            self.checker.on_status(now, &replica.status());
            self.persist_step(id, actions)
        } else {
            let Ok(sends) = actions.persist_then_send(&mut Discard);
            sends
        };
        self.route_replica(id, sends);
    }

    pub(super) fn route_replica(&mut self, id: ReplicaId, sends: Vec<Outgoing>) {
        let correct = self.replicas[id.0 as usize].correct;
        for Outgoing { to, frame } in sends {
            let destinations: Vec<Endpoint> = match to {
                Destination::Replica(r) => vec![Endpoint::Replica(r)],
                Destination::OtherReplicas => self
                    .config
                    .replica_ids()
                    .filter(|&r| r != id)
                    .map(Endpoint::Replica)
                    .collect(),
                Destination::Client(c) => vec![Endpoint::Client(c)],
            };
            let frames = self.corrupt(id, frame);
            for destination in destinations {
                if self.drops_selectively(id, destination) {
                    continue;
                }
                for frame in &frames {
                    self.send(Endpoint::Replica(id), destination, frame.clone(), correct);
                }
            }
        }
    }

    /// A Byzantine replica's frames pass through its adversary.
    pub(super) fn corrupt(&mut self, id: ReplicaId, frame: Bytes) -> Vec<Bytes> {
        let Some(byzantine) = self.replicas[id.0 as usize].byzantine.as_mut() else {
            return vec![frame];
        };
        byzantine.adversary.observe(&frame);
        if byzantine.attacks.is_empty() || !chance(&mut self.rng, byzantine.attack_rate) {
            return vec![frame];
        }
        let attack = *pick(&mut self.rng, &byzantine.attacks);
        let frames = byzantine.adversary.corrupt(&frame, attack, &mut self.rng);
        self.count(attack.name());
        frames
    }

    pub(super) fn drops_selectively(&mut self, id: ReplicaId, destination: Endpoint) -> bool {
        let Some(byzantine) = self.replicas[id.0 as usize].byzantine.as_ref() else {
            return false;
        };
        let rate = byzantine.selective_send;
        let dropped = matches!(destination, Endpoint::Replica(_)) && chance(&mut self.rng, rate);
        if dropped {
            self.count("selective-send");
        }
        dropped
    }

    /// Puts a frame on the network: partitions, loss, duplication and delays apply.
    pub(super) fn send(&mut self, from: Endpoint, to: Endpoint, frame: Bytes, from_correct: bool) {
        match self.network.transit(&mut self.rng, from, to) {
            Transit::Partitioned => self.count("partitioned-frame"),
            Transit::Lost => self.count("lost-frame"),
            Transit::Deliver(delays) => {
                if delays.len() > 1 {
                    self.count("duplicated-frame");
                }
                let targets = self.targets(from, to);
                for delay in delays {
                    for &target in &targets {
                        let event = Event::Deliver {
                            from,
                            to: target,
                            frame: frame.clone(),
                            from_correct,
                        };
                        self.schedule(self.now + delay, event);
                    }
                }
            }
        }
    }

    /// The instances a frame to `to` reaches: a twin's peers each talk to one instance; clients
    /// reach both.
    pub(super) fn targets(&self, from: Endpoint, to: Endpoint) -> Vec<Target> {
        match to {
            Endpoint::Client(c) => vec![Target::Client(c)],
            Endpoint::Replica(r) => {
                let node = &self.replicas[r.0 as usize];
                match (&node.byzantine, from) {
                    (Some(b), Endpoint::Replica(sender)) if b.sides.values().any(|&s| s == 1) => {
                        vec![Target::Replica(r, b.sides[&sender])]
                    }
                    (Some(b), Endpoint::Client(_)) if b.sides.values().any(|&s| s == 1) => {
                        vec![Target::Replica(r, 0), Target::Replica(r, 1)]
                    }
                    _ => vec![Target::Replica(r, 0)],
                }
            }
        }
    }
}
