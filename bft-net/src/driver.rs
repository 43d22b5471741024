//! The replica driver: one task owns the sans-IO [`Replica`] and does only protocol work; frames
//! are verified before they reach it, in batches, on blocking threads, in parallel.
//!
//! ```text
//! transport ──Inbound──► verification stage ──Verified──► driver task ──► persist ──► transport
//!                        (batches of up to 256,          (step, timers from
//!                         chunks on blocking threads)      poll_timeout)
//! ```
//!
//! Group commit: after each input, the driver task also steps every verified message already
//! queued (up to 256 steps), absorbs their actions into one, and persists them with one
//! `persist_then_send` (one fsync with a disk log) before sending any of their frames. Order is
//! kept: records and frames go out in step order, and nothing is sent before it is durable.

use crate::transport::{Inbound, Transport};
use bft_core::{
    Destination, Input, Metrics, Principal, Replica, Service, Status, Storage, Time,
    VerifiedMessage, Verifier,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Frames verified per batch, at most.
const VERIFY_BATCH: usize = 256;
/// Frames per chunk handed to one blocking thread.
const VERIFY_CHUNK: usize = 32;
/// Verified messages queued towards the driver task.
const VERIFIED_QUEUE: usize = 4096;
/// Steps whose actions are persisted together (group commit), at most.
const GROUP_COMMIT_STEPS: usize = 256;
/// How often the published status is refreshed, at most.
const STATUS_INTERVAL: Duration = Duration::from_millis(5);

/// What a running replica reports (refreshed every few milliseconds).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The replica's status.
    pub status: Status,
    /// Its counters.
    pub metrics: Metrics,
}

/// Why a replica driver stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// Storage refused to persist: nothing more may be sent, so the replica stops.
    #[error("storage failed, replica stopped: {0}")]
    Storage(String),
}

/// A running replica: its snapshots, and the means to stop it.
pub struct ReplicaHandle {
    snapshots: watch::Receiver<Snapshot>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), DriverError>>,
    transport: Transport,
}

impl ReplicaHandle {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshots.borrow().clone()
    }

    /// A receiver of snapshots, to wait for a condition. Drop the borrow that `borrow` or
    /// `wait_for` returns promptly: while it is held, the replica cannot publish (it waits).
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshots.clone()
    }

    /// The transport (for its counters).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Stops the replica, then drains and closes its connections. Returns why it had stopped on
    /// its own, if it had.
    pub async fn shutdown(self) -> Result<(), DriverError> {
        self.stop.send_replace(true);
        let result = self.task.await.unwrap_or(Ok(()));
        self.transport.shutdown().await;
        result
    }
}

/// Starts `replica` on `transport`: verification stage and driver task. `inbound` is the
/// receiver [`Transport::replica`] returned.
pub fn spawn_replica<S, St>(
    replica: Replica<S>,
    mut storage: St,
    transport: Transport,
    inbound: mpsc::Receiver<Inbound>,
    verifier: Verifier,
) -> ReplicaHandle
where
    S: Service + Send + 'static,
    St: Storage + Send + 'static,
    St::Error: std::fmt::Display,
{
    let n = u32::try_from(verifier.config().n()).unwrap_or(u32::MAX);
    let (verified_tx, mut verified) = mpsc::channel(VERIFIED_QUEUE);
    tokio::spawn(verification_stage(
        inbound,
        verified_tx,
        Arc::new(verifier),
        transport.clone(),
    ));
    let initial = Snapshot {
        status: replica.status(),
        metrics: replica.metrics().clone(),
    };
    let (snapshots_tx, snapshots) = watch::channel(initial);
    let (stop, mut stopped) = watch::channel(false);
    let sender = transport.clone();
    let task = tokio::spawn(async move {
        let mut replica = replica;
        let start = Instant::now();
        let now =
            || Time::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let mut published = Instant::now();
        info!(replica = %replica.id(), "replica running");
        loop {
            let deadline = replica
                .poll_timeout()
                .map(|t| start + Duration::from_nanos(t.as_nanos()));
            let input = tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => break,
                message = verified.recv() => match message {
                    Some(message) => Input::Message(message),
                    None => break,
                },
                _ = sleep_until(deadline) => Input::Tick,
            };
            let mut actions = replica.step(now(), input);
            // Group commit: step whatever else is ready, then persist all of it with one call
            // (one fsync on disk) before any of it is sent.
            for _ in 1..GROUP_COMMIT_STEPS {
                let input = if replica.poll_timeout().is_some_and(|t| t <= now()) {
                    Input::Tick
                } else {
                    match verified.try_recv() {
                        Ok(message) => Input::Message(message),
                        Err(_) => break,
                    }
                };
                actions.absorb(replica.step(now(), input));
            }
            let outgoing = match actions.persist_then_send(&mut storage) {
                Ok(outgoing) => outgoing,
                Err(e) => {
                    let message = e.to_string();
                    error!(replica = %replica.id(), error = %message, "storage failed: stopping");
                    return Err(DriverError::Storage(message));
                }
            };
            for out in outgoing {
                match out.to {
                    Destination::Replica(r) => sender.send(Principal::Replica(r), out.frame),
                    Destination::Client(c) => sender.send(Principal::Client(c), out.frame),
                    Destination::OtherReplicas => {
                        for r in (0..n).map(bft_core::ReplicaId) {
                            if r != replica.id() {
                                sender.send(Principal::Replica(r), out.frame.clone());
                            }
                        }
                    }
                }
            }
            if published.elapsed() >= STATUS_INTERVAL || verified.is_empty() {
                published = Instant::now();
                snapshots_tx.send_replace(Snapshot {
                    status: replica.status(),
                    metrics: replica.metrics().clone(),
                });
            }
        }
        snapshots_tx.send_replace(Snapshot {
            status: replica.status(),
            metrics: replica.metrics().clone(),
        });
        info!(replica = %replica.id(), "replica stopped");
        Ok(())
    });
    ReplicaHandle {
        snapshots,
        stop,
        task,
        transport,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Verifies frames in batches: each batch is split into chunks verified on blocking threads in
/// parallel, and the results are forwarded in arrival order. A refused frame closes the
/// connection it came on; a client may only send frames signed as itself.
async fn verification_stage(
    mut inbound: mpsc::Receiver<Inbound>,
    verified: mpsc::Sender<VerifiedMessage>,
    verifier: Arc<Verifier>,
    transport: Transport,
) {
    let mut batch = Vec::with_capacity(VERIFY_BATCH);
    loop {
        batch.clear();
        let received = tokio::select! {
            received = inbound.recv_many(&mut batch, VERIFY_BATCH) => received,
            _ = transport.closed() => return,
        };
        if received == 0 {
            return;
        }
        let mut jobs = Vec::new();
        for chunk in batch.chunks(VERIFY_CHUNK) {
            let frames: Vec<bytes::Bytes> = chunk.iter().map(|i| i.frame.clone()).collect();
            let verifier = verifier.clone();
            jobs.push(tokio::task::spawn_blocking(move || {
                verifier.verify_batch(frames)
            }));
        }
        let mut results = Vec::with_capacity(batch.len());
        for job in jobs {
            match job.await {
                Ok(chunk) => results.extend(chunk),
                Err(e) => {
                    error!(error = %e, "verification thread failed");
                    return;
                }
            }
        }
        for (item, result) in batch.iter().zip(results) {
            match result {
                Ok(message) => {
                    if let Principal::Client(_) = item.from
                        && message.sender() != item.from
                    {
                        warn!(from = ?item.from, sender = ?message.sender(), "client relayed another principal's frame");
                        transport
                            .disconnect(&item.connection, "frames from a client must be its own");
                        continue;
                    }
                    if verified.send(message).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    transport.disconnect(&item.connection, &error.to_string());
                }
            }
        }
    }
}
