//! The persistence thread: a replica's storage runs on its own thread, so the driver task keeps
//! stepping the replica while a group of records is being fsynced (group commit across steps).
//!
//! The driver hands over each step group's [`Actions`]; the thread takes everything queued,
//! absorbs it into one, persists it with one [`Actions::persist_then_send`] (one fsync on disk),
//! and only then hands the frames to the transport. One thread and one queue keep the order: no
//! frame leaves before its own records and every record before it are durable.

use crate::transport::Transport;
use bft_core::{Actions, Destination, Principal, ReplicaId, Storage};
use tokio::sync::mpsc;

/// Step groups queued towards the persistence thread, at most (the driver waits beyond).
const QUEUED_GROUPS: usize = 64;

/// A replica's storage on its persistence thread.
pub(crate) struct Persister {
    queue: mpsc::Sender<Actions>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl Persister {
    /// Starts the thread with `storage`; persisted frames go out on `transport` (replica `me` of
    /// `n`). Must be called within a tokio runtime.
    pub(crate) fn start<St>(storage: St, transport: Transport, me: ReplicaId, n: u32) -> Persister
    where
        St: Storage + Send + 'static,
        St::Error: std::fmt::Display,
    {
        let (queue, receiver) = mpsc::channel(QUEUED_GROUPS);
        let runtime = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("persist-{me}"))
            .spawn(move || {
                // The transport spawns a writer task the first time it sends to a peer.
                let _runtime = runtime.enter();
                run(storage, receiver, &transport, me, n)
            })
            .expect("the persistence thread starts");
        Persister { queue, thread }
    }

    /// Queues a step group. Fails if the thread has stopped (its storage failed).
    pub(crate) async fn submit(&self, actions: Actions) -> Result<(), ()> {
        self.queue.send(actions).await.map_err(|_| ())
    }

    /// Persists and sends what is queued, stops the thread, and says why it had stopped if it
    /// had (a storage error).
    pub(crate) async fn finish(self) -> Result<(), String> {
        drop(self.queue);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| format!("the persistence thread was lost: {e}"))?
            .map_err(|_| "the persistence thread panicked".to_string())?
    }
}

fn run<St>(
    mut storage: St,
    mut receiver: mpsc::Receiver<Actions>,
    transport: &Transport,
    me: ReplicaId,
    n: u32,
) -> Result<(), String>
where
    St: Storage,
    St::Error: std::fmt::Display,
{
    while let Some(mut actions) = receiver.blocking_recv() {
        while let Ok(more) = receiver.try_recv() {
            actions.absorb(more);
        }
        let outgoing = actions
            .persist_then_send(&mut storage)
            .map_err(|e| e.to_string())?;
        for out in outgoing {
            match out.to {
                Destination::Replica(r) => transport.send(Principal::Replica(r), out.frame),
                Destination::Client(c) => transport.send(Principal::Client(c), out.frame),
                Destination::OtherReplicas => {
                    for r in (0..n).map(ReplicaId).filter(|r| *r != me) {
                        transport.send(Principal::Replica(r), out.frame.clone());
                    }
                }
            }
        }
    }
    Ok(())
}
