//! State transfer (TOCS 2002 section 6.2, simplified to whole checkpoints): a replica that holds a
//! stable certificate for a checkpoint it does not have fetches that checkpoint's state from the
//! replicas that signed the certificate.
//!
//! It first fetches the manifest (the state's length and chunk digests) and checks it against the
//! certified digest, then fetches chunks one at a time and checks each against the manifest on
//! arrival. No single peer is trusted: a peer that serves a manifest or chunk that does not match
//! is marked bad and another signer is asked, and a peer that does not answer within
//! `timing.state_transfer_retry` is replaced by the next one; chunks already checked are kept, so
//! an interrupted transfer resumes where it stopped. While fetching, the replica does not vote on
//! sequence numbers at or below the target (it has not caught up to them).

use super::checkpoints::{CheckpointState, StableCertificate, StoredCheckpoint};
use super::requests::ClientRecord;
use super::{Actions, Destination, Outgoing, Rejection, Replica};
use crate::codec;
use crate::ids::ReplicaId;
use crate::messages::{FetchState, StateChunk, StateManifest, checkpoint_digest};
use crate::service::Service;
use crate::verify::Verified;
use crate::{SeqNum, Time};
use bft_crypto::{Digest, sha256};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// An ongoing fetch of a certified checkpoint's state.
#[derive(Debug)]
pub(super) struct Transfer {
    pub(super) target: StableCertificate,
    /// The certificate's signers other than this replica: the peers that have the state.
    peers: Vec<ReplicaId>,
    /// Index into `peers` of the peer asked now.
    current: usize,
    /// Peers that served data not matching the certificate.
    bad: BTreeSet<ReplicaId>,
    manifest: Option<StateManifest>,
    chunks: Vec<Option<Vec<u8>>>,
    /// Checked chunks of an abandoned fetch, by digest, to reuse where the new state has them.
    carried: BTreeMap<Digest, Vec<u8>>,
    retry_at: Time,
}

impl Transfer {
    fn peer(&self) -> ReplicaId {
        self.peers[self.current]
    }

    /// What to ask for next: the manifest, then the first missing chunk.
    fn next_request(&self) -> Option<Option<u32>> {
        if self.manifest.is_none() {
            return Some(None);
        }
        self.chunks
            .iter()
            .position(Option::is_none)
            .map(|i| Some(i as u32))
    }

    /// Moves to the next peer not known to be bad (all of them again if every one was bad).
    fn rotate(&mut self) {
        if self.bad.len() >= self.peers.len() {
            self.bad.clear();
        }
        for _ in 0..self.peers.len() {
            self.current = (self.current + 1) % self.peers.len();
            if !self.bad.contains(&self.peer()) {
                return;
            }
        }
    }
}

impl<S: Service> Replica<S> {
    /// Starts fetching the state `certificate` proves, unless a fetch is under way (a fetch that
    /// stalls switches to the newest certificate on its retry deadline; see
    /// [`Replica::state_transfer_tick`]). Switching on every new certificate could starve a
    /// transfer that takes longer than a checkpoint interval.
    pub(super) fn start_state_transfer(
        &mut self,
        certificate: StableCertificate,
        actions: &mut Actions,
    ) {
        if self.transfer.is_none() {
            self.begin_transfer(certificate, BTreeMap::new(), actions);
        }
    }

    /// Starts a fetch, reusing `carried` chunks (checked chunks of an abandoned fetch, by digest).
    fn begin_transfer(
        &mut self,
        certificate: StableCertificate,
        carried: BTreeMap<Digest, Vec<u8>>,
        actions: &mut Actions,
    ) {
        let n = self.config.n() as u32;
        let mut peers: Vec<ReplicaId> = certificate
            .proof
            .iter()
            .filter_map(|vote| match vote.sender() {
                crate::Principal::Replica(r) if r != self.id => Some(r),
                _ => None,
            })
            .collect();
        // Start with the signer after this replica, so lagging replicas spread their load.
        peers.sort_by_key(|r| (r.0 + n - self.id.0) % n);
        self.metrics.state_transfers_started += 1;
        self.catch_up = None;
        self.transfer = Some(Transfer {
            target: certificate,
            peers,
            current: 0,
            bad: BTreeSet::new(),
            manifest: None,
            chunks: Vec::new(),
            carried,
            retry_at: self.now,
        });
        self.request_state(actions);
    }

    /// Sends the next fetch to the current peer and arms the retry timer.
    fn request_state(&mut self, actions: &mut Actions) {
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        let Some(chunk) = transfer.next_request() else {
            return;
        };
        transfer.retry_at = self.now + self.config.timing.state_transfer_retry;
        let fetch = FetchState {
            seq: transfer.target.seq,
            digest: transfer.target.digest,
            chunk,
        };
        let peer = transfer.peer();
        let (frame, _) = self.sign(&fetch);
        actions.send(Outgoing {
            to: Destination::Replica(peer),
            frame,
        });
    }

    /// The transfer's retry deadline.
    pub(super) fn state_transfer_deadline(&self) -> Option<Time> {
        self.transfer.as_ref().map(|t| t.retry_at)
    }

    /// On the retry deadline: switches to the newest certificate if there is a newer one (the
    /// peers may have discarded the old state), keeping the chunks already checked; otherwise asks
    /// the next peer.
    pub(super) fn state_transfer_tick(&mut self, actions: &mut Actions) {
        let now = self.now;
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        if now < transfer.retry_at {
            return;
        }
        let newest = self
            .checkpoint_votes
            .highest_certificate(self.config.quorum());
        if let Some(newer) = newest.filter(|c| c.seq > transfer.target.seq) {
            let old = self.transfer.take().expect("checked above");
            let mut carried = old.carried;
            if let Some(manifest) = &old.manifest {
                for (digest, chunk) in manifest.chunk_digests.iter().zip(old.chunks) {
                    carried.extend(chunk.map(|data| (*digest, data)));
                }
            }
            self.begin_transfer(newer, carried, actions);
            return;
        }
        transfer.rotate();
        self.request_state(actions);
    }

    /// Serves a peer's fetch from a stored checkpoint whose digest is the one asked for.
    pub(super) fn on_fetch_state(
        &mut self,
        message: Verified<FetchState>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let sender = self.replica_sender(message.sender())?;
        let FetchState { seq, digest, chunk } = *message.message();
        let chunk_bytes = self.config.limits.state_chunk_bytes;
        let Some(stored) = self
            .own_checkpoints
            .get(&seq)
            .filter(|stored| stored.digest == digest)
        else {
            // Discarded for a later stable checkpoint: point the asker at that one.
            if seq < self.low_watermark {
                self.send_stable_proof(sender, actions);
            }
            return Err(Rejection::StateUnavailable { seq });
        };
        let frame = match chunk {
            None => self.sign(&stored.manifest).0,
            Some(index) => {
                let data = stored
                    .chunk(index, chunk_bytes)
                    .ok_or(Rejection::StateUnavailable { seq })?;
                self.sign(&StateChunk {
                    seq,
                    digest,
                    index,
                    data: data.to_vec(),
                })
                .0
            }
        };
        self.metrics.state_fetches_served += 1;
        actions.send(Outgoing {
            to: Destination::Replica(sender),
            frame,
        });
        Ok(())
    }

    /// A manifest: accepted if it matches the certified digest and is self-consistent.
    pub(super) fn on_state_manifest(
        &mut self,
        message: Verified<StateManifest>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let sender = self.replica_sender(message.sender())?;
        let chunk_bytes = self.config.limits.state_chunk_bytes as u64;
        let Some(transfer) = self.transfer.as_mut() else {
            return Err(Rejection::UnsolicitedState);
        };
        let manifest = message.message();
        if manifest.seq != transfer.target.seq || transfer.manifest.is_some() {
            return Err(Rejection::UnsolicitedState);
        }
        let chunks = manifest.chunk_digests.len() as u64;
        let consistent = chunks == manifest.total_bytes.div_ceil(chunk_bytes);
        if !consistent || checkpoint_digest(manifest) != transfer.target.digest {
            self.reject_bad_state(sender, actions);
            return Err(Rejection::StateMismatch);
        }
        let carried = std::mem::take(&mut transfer.carried);
        transfer.chunks = manifest
            .chunk_digests
            .iter()
            .enumerate()
            .map(|(index, digest)| {
                let expected = expected_chunk_len(manifest.total_bytes, index as u64, chunk_bytes);
                carried
                    .get(digest)
                    .filter(|data| data.len() as u64 == expected)
                    .cloned()
            })
            .collect();
        transfer.manifest = Some(manifest.clone());
        self.continue_transfer(actions);
        Ok(())
    }

    /// A chunk: accepted if it matches its digest in the manifest and has the right length.
    pub(super) fn on_state_chunk(
        &mut self,
        message: Verified<StateChunk>,
        actions: &mut Actions,
    ) -> Result<(), Rejection> {
        let sender = self.replica_sender(message.sender())?;
        let chunk_bytes = self.config.limits.state_chunk_bytes as u64;
        let chunk = message.message();
        let Some(transfer) = self.transfer.as_mut() else {
            return Err(Rejection::UnsolicitedState);
        };
        let Some(manifest) = transfer.manifest.as_ref() else {
            return Err(Rejection::UnsolicitedState);
        };
        let index = chunk.index as usize;
        if chunk.seq != transfer.target.seq
            || chunk.digest != transfer.target.digest
            || transfer.chunks.get(index).is_none_or(Option::is_some)
        {
            return Err(Rejection::UnsolicitedState);
        }
        let expected_len =
            expected_chunk_len(manifest.total_bytes, u64::from(chunk.index), chunk_bytes);
        if chunk.data.len() as u64 != expected_len
            || sha256(&chunk.data) != manifest.chunk_digests[index]
        {
            self.reject_bad_state(sender, actions);
            return Err(Rejection::StateMismatch);
        }
        transfer.chunks[index] = Some(chunk.data.clone());
        self.continue_transfer(actions);
        Ok(())
    }

    /// A peer served data that does not match the certificate: it is marked bad, and if it is the
    /// peer being asked, the next peer is asked. Bad data from anyone else changes nothing else
    /// (it neither re-sends a request nor delays the switch to a newer checkpoint), so one
    /// Byzantine replica cannot keep a transfer pinned or make it multiply requests.
    fn reject_bad_state(&mut self, sender: ReplicaId, actions: &mut Actions) {
        self.metrics.bad_state_served += 1;
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        transfer.bad.insert(sender);
        if transfer.peer() == sender {
            transfer.rotate();
            self.request_state(actions);
        }
    }

    /// Asks for the next piece, or installs the state once every chunk is in.
    fn continue_transfer(&mut self, actions: &mut Actions) {
        let Some(transfer) = self.transfer.as_ref() else {
            return;
        };
        if transfer.next_request().is_some() {
            self.request_state(actions);
            return;
        }
        let transfer = self.transfer.take().expect("checked above");
        let state: Vec<u8> = transfer.chunks.into_iter().flatten().flatten().collect();
        self.install_state(transfer.target, Bytes::from(state), actions);
    }

    /// Restores a fetched, digest-checked checkpoint state and makes it the stable checkpoint.
    fn install_state(&mut self, target: StableCertificate, state: Bytes, actions: &mut Actions) {
        if self.restore_checkpoint_state(target.seq, &state).is_err() {
            // The state matched a digest that 2f+1 replicas signed, so at least one correct
            // replica produced it: this replica's service cannot read its own kind of snapshot.
            self.metrics.state_restore_failures += 1;
            return;
        }
        let chunk_bytes = self.config.limits.state_chunk_bytes;
        self.own_checkpoints.insert(
            target.seq,
            StoredCheckpoint::new(target.seq, state, chunk_bytes),
        );
        self.last_executed = target.seq;
        self.metrics.state_transfers_completed += 1;
        self.make_stable(target);
        // The window moved: the current view's NEW-VIEW pre-prepares that were above it now fit.
        let known = self.known_batches();
        self.install_new_view_pre_prepares(&known, actions);
        self.catch_up = None;
        self.start_catch_up(actions);
    }

    /// Replaces the service state and the client table with checkpoint state `state` of `seq`;
    /// on error nothing changed.
    pub(super) fn restore_checkpoint_state(
        &mut self,
        seq: SeqNum,
        state: &[u8],
    ) -> Result<(), String> {
        let decoded: CheckpointState = codec::decode(state).map_err(|e| e.to_string())?;
        if decoded.seq != seq {
            return Err(format!(
                "the state is of sequence number {}, not {seq}",
                decoded.seq
            ));
        }
        self.service
            .restore(&decoded.service)
            .map_err(|e| e.to_string())?;
        self.clients.records = decoded
            .clients
            .into_iter()
            .map(|(client, last_executed, outcome)| {
                let record = ClientRecord {
                    last_executed,
                    last_outcome: Some(outcome),
                    last_reply: None,
                    in_progress: 0,
                };
                (client, record)
            })
            .collect();
        Ok(())
    }

    /// Sends the CHECKPOINT messages that prove this replica's stable checkpoint to a replica that
    /// asked for something older: they are signed by their senders, so the asker can check them,
    /// learn of the later checkpoint and fetch that instead.
    /// At most once per `timing.vote_resend` to each replica, so that small messages cannot be
    /// turned into a flood of proofs.
    pub(super) fn send_stable_proof(&mut self, to: ReplicaId, actions: &mut Actions) {
        let now = self.now;
        let period = self.config.timing.vote_resend;
        if self
            .proof_sent
            .get(&to)
            .is_some_and(|at| *at + period > now)
        {
            return;
        }
        let Some(stable) = &self.stable else { return };
        self.proof_sent.insert(to, now);
        // The asker holds its own vote already.
        for vote in stable
            .proof
            .iter()
            .filter(|v| v.sender() != crate::Principal::Replica(to))
        {
            actions.send(Outgoing {
                to: Destination::Replica(to),
                frame: vote.frame().clone(),
            });
        }
        self.metrics.stable_proofs_sent += 1;
    }

    /// While fetching state, the replica does not vote on sequence numbers at or below the
    /// target: it has not caught up to them.
    pub(super) fn check_caught_up(&self, seq: SeqNum) -> Result<(), Rejection> {
        match &self.transfer {
            Some(transfer) if seq <= transfer.target.seq => Err(Rejection::CatchingUp {
                seq,
                target: transfer.target.seq,
            }),
            _ => Ok(()),
        }
    }
}

/// The length of chunk `index` of a state of `total_bytes` (every chunk is full but the last).
fn expected_chunk_len(total_bytes: u64, index: u64, chunk_bytes: u64) -> u64 {
    total_bytes
        .saturating_sub(index * chunk_bytes)
        .min(chunk_bytes)
}
