//! Crashes of correct replicas, which keep their durable storage: between steps, after a step's
//! records are durable but before its frames leave, and in the middle of writing them (a torn
//! write). The replica restarts with `Replica::recover` from what survived and must stay
//! correct: every checker keeps watching it, across incarnations.

use super::{Event, Simulation, new_replica};
use crate::checkers::ViolationKind;
use crate::kv::KvService;
use crate::rng::chance;
use crate::scenario::CrashPoint;
use bft_core::Storage as _;
use bft_core::testkit::replica_key;
use bft_core::{Actions, Outgoing, Replica, ReplicaId, SeqNum, Time};
use bft_storage::{MemoryWal, encode_record};

impl Simulation {
    pub(super) fn schedule_durable_crashes(&mut self) {
        for (index, crash) in self
            .scenario
            .durable_crashes
            .clone()
            .into_iter()
            .enumerate()
        {
            let at = Time::ZERO + crash.at;
            self.schedule(at, Event::DurableCrash(index));
            self.schedule(at + crash.down, Event::Restart(crash.replica));
        }
    }

    /// Crashes a correct replica now (between steps) or at its next step.
    pub(super) fn durable_crash(&mut self, index: usize) {
        let crash = self.scenario.durable_crashes[index];
        let node = &mut self.replicas[crash.replica.0 as usize];
        if node.instances.is_empty() || self.liveness {
            return;
        }
        match crash.point {
            CrashPoint::BetweenSteps => self.crash_now(crash.replica, crash.point),
            point => node.armed = Some(point),
        }
    }

    fn crash_now(&mut self, id: ReplicaId, point: CrashPoint) {
        let node = &mut self.replicas[id.0 as usize];
        node.instances.clear();
        node.direct = bft_core::DirectRequests::new();
        node.armed = None;
        if let Some(storage) = node.storage.as_mut() {
            storage.crash();
        }
        self.count(point.name());
        self.trace.note(
            self.now,
            &format!("replica {id} crashes ({})", point.name()),
        );
    }

    /// Persists a correct replica's step (or crashes it in the middle, if a crash is armed),
    /// reports what it signed and made durable to the checker, and returns the frames to send.
    pub(super) fn persist_step(&mut self, id: ReplicaId, actions: Actions) -> Vec<Outgoing> {
        let now = self.now;
        let node = &mut self.replicas[id.0 as usize];
        let storage = node
            .storage
            .as_mut()
            .expect("correct replicas have storage");
        match node.armed.take() {
            None => {
                let signed: Vec<_> = actions.signed_records().cloned().collect();
                self.checker.on_signed(now, id, &signed);
                let executed = actions.executed_batches.last().map(|(seq, _)| *seq);
                let Ok(sends) = actions.persist_then_send(storage);
                if let Some(seq) = executed {
                    node.durable_executed = node.durable_executed.max(seq);
                }
                sends
            }
            Some(CrashPoint::TornWrite) => {
                // Some prefix of the step's writes reaches the disk before the power goes: the
                // checkpoint (written atomically, or not at all), then records.
                let (checkpoint, records) = actions.durable_writes();
                // Records before the checkpoint are durable through it (it holds what they did).
                let covered = &actions.to_persist()[..actions.to_persist().len() - records.len()];
                if let Some(checkpoint) = checkpoint {
                    if !chance(&mut self.rng, 0.7) {
                        self.crash_now(id, CrashPoint::TornWrite);
                        return Vec::new();
                    }
                    let Ok(()) = storage.save_checkpoint(checkpoint, 0);
                }
                let mut durable = 0;
                while durable < records.len() && chance(&mut self.rng, 0.7) {
                    durable += 1;
                }
                let payloads: Vec<Vec<u8>> = records.iter().map(encode_record).collect();
                let (synced, lost) = payloads.split_at(durable);
                storage.append(&synced.iter().map(Vec::as_slice).collect::<Vec<_>>());
                storage.sync();
                storage.append(&lost.iter().map(Vec::as_slice).collect::<Vec<_>>());
                let signed: Vec<_> = covered
                    .iter()
                    .chain(&records[..durable])
                    .filter_map(|r| r.as_signed().cloned())
                    .collect();
                self.checker.on_signed(now, id, &signed);
                self.crash_now(id, CrashPoint::TornWrite);
                Vec::new()
            }
            Some(point) => {
                let signed: Vec<_> = actions.signed_records().cloned().collect();
                self.checker.on_signed(now, id, &signed);
                let executed = actions.executed_batches.last().map(|(seq, _)| *seq);
                let Ok(_dropped) = actions.persist_then_send(storage);
                if let Some(seq) = executed {
                    node.durable_executed = node.durable_executed.max(seq);
                }
                self.crash_now(id, point);
                Vec::new()
            }
        }
    }

    /// A replica comes back: from its durable storage if it has one (correct replicas), empty
    /// otherwise (faulty crashes, and the amnesiac canary, whose storage is wiped).
    pub(super) fn restart(&mut self, id: ReplicaId) {
        let amnesiac = self.scenario.amnesiac.is_some_and(|(a, _, _)| a == id);
        let node = &mut self.replicas[id.0 as usize];
        if !node.instances.is_empty() {
            return;
        }
        if amnesiac {
            node.storage = Some(MemoryWal::new());
            node.durable_executed = SeqNum(0);
        }
        let Some(storage) = node.storage.as_ref() else {
            node.instances.push(new_replica(&self.config, id));
            self.checker.restarted(id);
            self.count("restart");
            self.trace
                .note(self.now, &format!("replica {id} restarts empty"));
            return;
        };
        let durable_executed = node.durable_executed;
        let recovered = storage
            .restored()
            .map_err(|e| format!("its log does not decode: {e}"))
            .and_then(|restored| {
                Replica::recover(
                    self.config.clone(),
                    id,
                    replica_key(id.0),
                    KvService::default(),
                    restored.checkpoint.as_ref(),
                    &restored.records,
                )
                .map_err(|e| e.to_string())
            });
        let now = self.now;
        match recovered {
            Ok((replica, report)) => {
                if report.last_executed < durable_executed {
                    self.checker.report(
                        ViolationKind::Recovery,
                        now,
                        format!(
                            "replica {id} recovered to batch {} but had made batch {} durable",
                            report.last_executed.0, durable_executed.0
                        ),
                    );
                }
                self.trace.note(
                    now,
                    &format!(
                        "replica {id} recovers: view {}, stable {}, executed {}, {} records replayed, {} ignored",
                        report.view.0,
                        report.stable_seq.0,
                        report.last_executed.0,
                        report.records_applied,
                        report.records_ignored
                    ),
                );
                // What the replay signed and executed is checked like any step's output.
                self.checker.restarted(id);
                self.checker.on_signed(now, id, &report.signed);
                self.checker
                    .on_executed(now, id, &report.executed_batches, &report.executed);
                self.checker.on_status(now, &replica.status());
                self.replicas[id.0 as usize].instances.push(replica);
                self.count("recover");
            }
            Err(reason) => {
                self.checker.report(
                    ViolationKind::Recovery,
                    now,
                    format!("replica {id} cannot recover: {reason}"),
                );
                // Keep the run going with an empty replica (its checks are meaningless now).
                let node = &mut self.replicas[id.0 as usize];
                node.correct = false;
                node.storage = None;
                node.instances.push(new_replica(&self.config, id));
            }
        }
    }
}
