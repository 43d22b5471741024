//! The workload: correct clients' operations and the Byzantine client.

use super::{Event, Simulation};
use crate::kv::{KvOp, KvResult};
use crate::linearizability::Operation;
use crate::network::Endpoint;
use crate::rng::{exponential, pick};
use bft_core::testkit::client_key;
use bft_core::{ClientId, Destination, Outcome, Outgoing, ReplicaId, VerifiedMessage};
use bytes::Bytes;
use rand::RngExt;
use std::time::Duration;

impl Simulation {
    pub(super) fn complete(&mut self, id: ClientId, outcome: Outcome) {
        let now = self.now;
        let node = self.clients.get_mut(&id).expect("exists");
        let Some(index) = node.pending.take() else {
            return;
        };
        node.submitted += 1;
        let think = if self.liveness {
            Duration::from_millis(1)
        } else {
            self.scenario.think_time
        };
        node.next_submit = Some(now + exponential(&mut self.rng, think));
        self.stats.requests_completed += 1;
        let result = match outcome {
            Outcome::Ok(bytes) => KvResult::decode(&bytes).unwrap_or(KvResult::BadOperation),
            _ => KvResult::BadOperation,
        };
        self.trace.note(
            now,
            &format!("client {id} completes {}: {result}", self.history[index].op),
        );
        let operation = &mut self.history[index];
        operation.result = Some(result);
        operation.returned = Some(now.as_nanos());
    }

    pub(super) fn submit(&mut self, id: ClientId) {
        let now = self.now;
        let keys = self.scenario.keys;
        let node = self.clients.get_mut(&id).expect("exists");
        node.counter += 1;
        let key = format!("k{}", self.rng.random_range(0..keys)).into_bytes();
        let value = format!("c{}.{}", id.0, node.counter).into_bytes();
        let op = match self.rng.random_range(0..10) {
            0..4 => KvOp::Get { key },
            4..7 => KvOp::Put { key, value },
            _ => KvOp::Append { key, value },
        };
        let actions = match node.client.submit(now, op.encode()) {
            Ok(actions) => actions,
            Err(error) => panic!("client {id} refused an operation: {error}"),
        };
        node.pending = Some(self.history.len());
        self.trace.note(now, &format!("client {id} submits {op:?}"));
        self.history.push(Operation {
            client: id.0,
            op,
            result: None,
            invoked: now.as_nanos(),
            returned: None,
        });
        for outgoing in &actions.send {
            self.record_client_signed(id, outgoing.frame.clone());
        }
        self.route_client(id, actions.send);
    }

    pub(super) fn record_client_signed(&mut self, client: ClientId, frame: Bytes) {
        if let Ok(VerifiedMessage::Request(request)) = self.verify(Endpoint::Client(client), frame)
        {
            self.checker.client_signed(request.digest());
        }
    }

    pub(super) fn route_client(&mut self, id: ClientId, sends: Vec<Outgoing>) {
        for Outgoing { to, frame } in sends {
            let destinations = match to {
                Destination::Replica(r) => vec![r],
                Destination::OtherReplicas => self.config.replica_ids().collect(),
                Destination::Client(_) => Vec::new(),
            };
            for r in destinations {
                self.send(
                    Endpoint::Client(id),
                    Endpoint::Replica(r),
                    frame.clone(),
                    true,
                );
            }
        }
    }

    /// The Byzantine client: timestamps reused with different operations sent to different
    /// replicas, old requests replayed, and ordinary requests.
    pub(super) fn byzantine_client_acts(&mut self) {
        if self.liveness {
            return;
        }
        let Some(mut byzantine) = self.byzantine_client.take() else {
            return;
        };
        let key = client_key(byzantine.id.0);
        let n = self.config.n() as u32;
        let sign = |timestamp: u64, value: &str| {
            let op = KvOp::Put {
                key: b"z".to_vec(),
                value: value.as_bytes().to_vec(),
            };
            bft_core::messages::WireMessage::sign(
                &bft_core::messages::Request {
                    timestamp,
                    operation: op.encode(),
                },
                &key,
                self.config.cluster_id,
                bft_core::Principal::Client(byzantine.id),
            )
        };
        let mut frames: Vec<(Bytes, Vec<ReplicaId>)> = Vec::new();
        match self.rng.random_range(0..3) {
            0 => {
                // Two different requests with one timestamp, to different replicas.
                let t = byzantine.timestamp;
                let split = self.rng.random_range(0..=n);
                frames.push((sign(t, "a"), (0..split).map(ReplicaId).collect()));
                frames.push((sign(t, "b"), (split..n).map(ReplicaId).collect()));
                self.count("byzantine-client-conflict");
            }
            1 if !byzantine.sent.is_empty() => {
                let old = pick(&mut self.rng, &byzantine.sent).clone();
                frames.push((old, (0..n).map(ReplicaId).collect()));
                self.count("byzantine-client-replay");
            }
            _ => {
                byzantine.timestamp += 1;
                let t = byzantine.timestamp;
                frames.push((sign(t, "c"), (0..n).map(ReplicaId).collect()));
                self.count("byzantine-client-request");
            }
        }
        if self.rng.random_bool(0.3) {
            byzantine.timestamp += 1;
        }
        for (frame, to) in frames {
            self.record_client_signed(byzantine.id, frame.clone());
            if byzantine.sent.len() < 64 {
                byzantine.sent.push(frame.clone());
            }
            for r in to {
                let from = Endpoint::Client(byzantine.id);
                self.send(from, Endpoint::Replica(r), frame.clone(), false);
            }
        }
        self.byzantine_client = Some(byzantine);
        let next = exponential(&mut self.rng, Duration::from_millis(200));
        self.schedule(self.now + next, Event::ByzantineClient);
    }
}
