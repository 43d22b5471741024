//! The persistence thread: a replica's storage runs on its own thread, so the driver task keeps
//! stepping the replica while a group of records is being fsynced (group commit across steps).
//! Storage that keeps records in memory ([`Storage::may_block`] is `false`) is persisted inline
//! by the driver task instead, in the same order.
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

/// Where persisted frames go: the transport, and this replica's place among the `n` (to expand
/// `OtherReplicas`).
pub(crate) struct Outbox {
    transport: Transport,
    me: ReplicaId,
    n: u32,
}

impl Outbox {
    /// Persists `actions`' records, then hands its frames to the transport.
    fn persist_and_send<St>(&self, storage: &mut St, actions: Actions) -> Result<(), String>
    where
        St: Storage,
        St::Error: std::fmt::Display,
    {
        let outgoing = actions
            .persist_then_send(storage)
            .map_err(|e| e.to_string())?;
        for out in outgoing {
            match out.to {
                Destination::Replica(r) => self.transport.send(Principal::Replica(r), out.frame),
                Destination::Client(c) => self.transport.send(Principal::Client(c), out.frame),
                Destination::OtherReplicas => {
                    for r in (0..self.n).map(ReplicaId).filter(|r| *r != self.me) {
                        self.transport
                            .send(Principal::Replica(r), out.frame.clone());
                    }
                }
            }
        }
        Ok(())
    }
}

/// A replica's storage: on its persistence thread when persisting may block on I/O, or inline
/// on the driver task when it only keeps records in memory ([`Storage::may_block`]).
pub(crate) enum Persister<St> {
    /// Storage on its own thread.
    Thread {
        queue: mpsc::Sender<Actions>,
        thread: std::thread::JoinHandle<Result<(), String>>,
    },
    /// Storage persisted by the driver task itself.
    Inline {
        storage: St,
        outbox: Outbox,
        /// Why persisting failed, once it has.
        failed: Option<String>,
    },
}

impl<St> Persister<St>
where
    St: Storage + Send + 'static,
    St::Error: std::fmt::Display,
{
    /// Starts persisting to `storage`; persisted frames go out on `transport` (replica `me` of
    /// `n`). Must be called within a tokio runtime.
    pub(crate) fn start(storage: St, transport: Transport, me: ReplicaId, n: u32) -> Persister<St> {
        let outbox = Outbox { transport, me, n };
        if !storage.may_block() {
            return Persister::Inline {
                storage,
                outbox,
                failed: None,
            };
        }
        let (queue, receiver) = mpsc::channel(QUEUED_GROUPS);
        let runtime = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("persist-{me}"))
            .spawn(move || {
                // The transport spawns a writer task the first time it sends to a peer.
                let _runtime = runtime.enter();
                run(storage, receiver, &outbox)
            })
            .expect("the persistence thread starts");
        Persister::Thread { queue, thread }
    }

    /// Persists a step group then sends its frames (inline), or queues it (thread). Fails if
    /// storage has failed.
    pub(crate) async fn submit(&mut self, actions: Actions) -> Result<(), ()> {
        match self {
            Persister::Thread { queue, .. } => queue.send(actions).await.map_err(|_| ()),
            Persister::Inline {
                storage,
                outbox,
                failed,
            } => {
                if failed.is_some() {
                    return Err(());
                }
                outbox
                    .persist_and_send(storage, actions)
                    .map_err(|message| {
                        *failed = Some(message);
                    })
            }
        }
    }

    /// Persists and sends what is queued, stops the thread if there is one, and says why storage
    /// had failed if it had.
    pub(crate) async fn finish(self) -> Result<(), String> {
        match self {
            Persister::Thread { queue, thread } => {
                drop(queue);
                tokio::task::spawn_blocking(move || thread.join())
                    .await
                    .map_err(|e| format!("the persistence thread was lost: {e}"))?
                    .map_err(|_| "the persistence thread panicked".to_string())?
            }
            Persister::Inline { failed, .. } => failed.map_or(Ok(()), Err),
        }
    }
}

fn run<St>(
    mut storage: St,
    mut receiver: mpsc::Receiver<Actions>,
    outbox: &Outbox,
) -> Result<(), String>
where
    St: Storage,
    St::Error: std::fmt::Display,
{
    while let Some(mut actions) = receiver.blocking_recv() {
        while let Ok(more) = receiver.try_recv() {
            actions.absorb(more);
        }
        outbox.persist_and_send(&mut storage, actions)?;
    }
    Ok(())
}
