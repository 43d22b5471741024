//! The async client: `invoke(operation).await` returns the outcome that f+1 replicas agreed on.
//!
//! PBFT lets a client have one request outstanding (its timestamps order its requests). An
//! [`AsyncClient`] therefore holds a pool of sessions, one per client identity it is given, and
//! runs as many operations concurrently as it has sessions; further operations wait for a free
//! session. Each session is the sans-IO [`bft_core::Client`] (which tracks the primary and says
//! when to retransmit). Sessions whose identities share a key (sessions of one client principal,
//! see [`ClusterConfig::clients`]) share one authenticated connection per replica, so their
//! requests and the replicas' replies coalesce into few packets; identities with keys of their
//! own get connections of their own. All run on one QUIC endpoint.
//!
//! Replicas answer each session on the connection its latest request came on, so several
//! [`AsyncClient`]s (in one process or several) may hold sessions of one key, provided no
//! session is held by two of them at once.

use crate::transport::{Inbound, Transport, TransportError, TransportOptions};
use bft_core::{
    Client, ClientActions, ClientError, ClientId, ClientInput, ClusterConfig, Destination, Outcome,
    Principal, Time, VerifiedMessage, Verifier,
};
use bft_crypto::{KeyPair, PublicKey};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Tuning of an [`AsyncClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long `invoke` waits for f+1 matching replies (from the call, including time spent
    /// waiting for a free session) before it returns [`InvokeError::Timeout`].
    pub deadline: Duration,
    /// The transport's tuning.
    pub transport: TransportOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            deadline: Duration::from_secs(30),
            transport: TransportOptions::default(),
        }
    }
}

/// Why an operation did not return the service's reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// No f+1 matching replies before the deadline. The operation may still execute.
    #[error("no agreed reply within {0:?}")]
    Timeout(Duration),
    /// The operation was refused before it was sent (too large, timestamps exhausted).
    #[error("refused: {0}")]
    Refused(ClientError),
    /// The service panicked executing it (every correct replica agreed on this outcome).
    #[error("the service panicked executing the operation")]
    ServicePanicked,
    /// The service's reply exceeded the cluster's reply limit.
    #[error("the reply ({0} bytes) exceeded the cluster's limit")]
    ReplyTooLarge(u64),
    /// The client was shut down.
    #[error("the client is shut down")]
    Closed,
}

/// Why a client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No identity to send with.
    #[error("an AsyncClient needs at least one client identity")]
    NoIdentity,
    /// The same client id was given twice: its two sessions would share timestamps and replies.
    #[error("client {0} is given twice (each identity is one session)")]
    DuplicateIdentity(ClientId),
    /// An identity is not admitted by the configuration, or its key does not match.
    #[error("identity: {0}")]
    Config(#[from] bft_core::ConfigError),
    /// The transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The UDP socket could not be bound.
    #[error("cannot bind a client socket: {0}")]
    Bind(std::io::Error),
}

struct Invocation {
    operation: Vec<u8>,
    deadline: Instant,
    timeout: Duration,
    reply: oneshot::Sender<Result<Vec<u8>, InvokeError>>,
}

struct Session {
    client: Client,
    transport: Transport,
    current: Option<Invocation>,
}

/// A handle to submit operations; cheap to clone, usable from many tasks at once.
#[derive(Clone)]
pub struct AsyncClient {
    commands: mpsc::Sender<Invocation>,
    shared: Arc<Shared>,
}

struct Shared {
    deadline: Duration,
    transports: Vec<Transport>,
    endpoint: quinn::Endpoint,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl AsyncClient {
    /// Connects with the given identities (each an admitted client id and its key) to the
    /// replicas at `addresses` (indexed by replica id): one session per identity, one connection
    /// per replica and distinct key. Connections are dialled lazily, on the first send.
    pub fn connect(
        config: Arc<ClusterConfig>,
        identities: Vec<(ClientId, KeyPair)>,
        addresses: Vec<SocketAddr>,
        options: ClientOptions,
    ) -> Result<AsyncClient, ConnectError> {
        if identities.is_empty() {
            return Err(ConnectError::NoIdentity);
        }
        let mut ids = std::collections::BTreeSet::new();
        if let Some((id, _)) = identities.iter().find(|(id, _)| !ids.insert(*id)) {
            return Err(ConnectError::DuplicateIdentity(*id));
        }
        let bind: SocketAddr = match addresses.first() {
            Some(addr) if addr.is_ipv6() => "[::]:0".parse().expect("valid"),
            _ => "0.0.0.0:0".parse().expect("valid"),
        };
        let endpoint = crate::transport::client_endpoint(bind).map_err(ConnectError::Bind)?;
        let (inbound_tx, inbound) = mpsc::channel(options.transport.inbound_queue_frames);
        // Timestamps must exceed any this identity used before: start from the wall clock.
        let first_timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .max(1);
        let mut sessions = Vec::new();
        // One transport (one connection per replica) per key, shared by the key's sessions.
        let mut transports: BTreeMap<PublicKey, Transport> = BTreeMap::new();
        for (id, key) in identities {
            let client = Client::new(config.clone(), id, key.clone(), first_timestamp)?;
            let transport = match transports.entry(key.public()) {
                Entry::Occupied(entry) => entry.get().clone(),
                Entry::Vacant(entry) => entry
                    .insert(Transport::client(
                        endpoint.clone(),
                        config.clone(),
                        key,
                        addresses.clone(),
                        options.transport.clone(),
                        inbound_tx.clone(),
                    )?)
                    .clone(),
            };
            sessions.push(Session {
                client,
                transport,
                current: None,
            });
        }
        let transports = transports.into_values().collect();
        let verifier = Verifier::new(config.clone())?;
        let (commands, receiver) = mpsc::channel(1024);
        let task = tokio::spawn(run(sessions, receiver, inbound, verifier, config.n()));
        Ok(AsyncClient {
            commands,
            shared: Arc::new(Shared {
                deadline: options.deadline,
                transports,
                endpoint,
                task: std::sync::Mutex::new(Some(task)),
            }),
        })
    }

    /// Submits `operation` and waits for the reply f+1 replicas agree on, or an error after the
    /// deadline.
    pub async fn invoke(&self, operation: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let (reply, result) = oneshot::channel();
        let invocation = Invocation {
            operation,
            deadline: Instant::now() + self.shared.deadline,
            timeout: self.shared.deadline,
            reply,
        };
        self.commands
            .send(invocation)
            .await
            .map_err(|_| InvokeError::Closed)?;
        result.await.unwrap_or(Err(InvokeError::Closed))
    }

    /// Stops: operations in flight fail with [`InvokeError::Closed`], connections are drained
    /// and closed.
    pub async fn shutdown(self) {
        let task = self.shared.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        for transport in &self.shared.transports {
            transport.shutdown().await;
        }
        self.shared.endpoint.close(0u32.into(), b"shutdown");
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.shared.endpoint.wait_idle()).await;
    }
}

/// The client's driver task: assigns operations to free sessions, feeds replies and timer ticks
/// to the sans-IO clients, and answers the callers.
async fn run(
    mut sessions: Vec<Session>,
    mut commands: mpsc::Receiver<Invocation>,
    mut inbound: mpsc::Receiver<Inbound>,
    verifier: Verifier,
    n: usize,
) {
    let start = Instant::now();
    let now = || Time::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let mut waiting: VecDeque<Invocation> = VecDeque::new();
    let mut commands_open = true;
    loop {
        let next_tick = sessions
            .iter()
            .filter_map(|s| s.client.poll_timeout())
            .min()
            .map(|t| start + Duration::from_nanos(t.as_nanos()));
        let next_deadline = sessions
            .iter()
            .filter_map(|s| s.current.as_ref().map(|i| i.deadline))
            .chain(waiting.iter().map(|i| i.deadline))
            .min();
        let wake = [next_tick, next_deadline].into_iter().flatten().min();
        tokio::select! {
            command = commands.recv(), if commands_open => match command {
                Some(invocation) => waiting.push_back(invocation),
                None => commands_open = false,
            },
            frame = inbound.recv() => {
                let Some(frame) = frame else { return };
                on_frame(&mut sessions, &verifier, frame, now(), n);
            }
            _ = sleep_until(wake) => {
                let (instant, time) = (Instant::now(), now());
                for session in &mut sessions {
                    if session.client.poll_timeout().is_some_and(|t| t <= time) {
                        let actions = session.client.step(time, ClientInput::Tick);
                        route(session, actions, n);
                    }
                    if session.current.as_ref().is_some_and(|i| i.deadline <= instant) {
                        let invocation = session.current.take().expect("checked");
                        session.client.abandon();
                        debug!(client = %session.client.id(), "operation timed out");
                        let _ = invocation.reply.send(Err(InvokeError::Timeout(invocation.timeout)));
                    }
                }
                while waiting.front().is_some_and(|i| i.deadline <= instant) {
                    let invocation = waiting.pop_front().expect("checked");
                    let _ = invocation.reply.send(Err(InvokeError::Timeout(invocation.timeout)));
                }
            }
        }
        if !commands_open && waiting.is_empty() && sessions.iter().all(|s| s.current.is_none()) {
            return;
        }
        // Hand waiting operations to idle sessions.
        for session in &mut sessions {
            if session.current.is_some() {
                continue;
            }
            let Some(invocation) = waiting.pop_front() else {
                break;
            };
            if invocation.reply.is_closed() {
                continue; // the caller went away
            }
            match session.client.submit(now(), invocation.operation.clone()) {
                Ok(actions) => {
                    route(session, actions, n);
                    session.current = Some(invocation);
                }
                Err(error) => {
                    let _ = invocation.reply.send(Err(InvokeError::Refused(error)));
                }
            }
        }
    }
}

fn on_frame(sessions: &mut [Session], verifier: &Verifier, inbound: Inbound, now: Time, n: usize) {
    // The connection's handshake authenticated the replica: replies need no signature.
    let message = match verifier.verify_from(inbound.from, inbound.frame) {
        Ok(message) => message,
        Err(error) => {
            warn!(from = ?inbound.from, %error, "refused frame from replica");
            if let Some(session) = sessions.first() {
                session
                    .transport
                    .disconnect(&inbound.connection, &error.to_string());
            }
            return;
        }
    };
    let VerifiedMessage::Reply(reply) = &message else {
        return;
    };
    let client = reply.message().client;
    let Some(session) = sessions.iter_mut().find(|s| s.client.id() == client) else {
        // Another client process holds this key's session (see the module documentation).
        debug!(%client, "reply for a session this client does not hold");
        return;
    };
    let mut actions = session.client.step(now, ClientInput::Message(message));
    if let Some(done) = actions.completed.take()
        && let Some(invocation) = session.current.take()
    {
        let result = match done.outcome {
            Outcome::Ok(bytes) => Ok(bytes),
            Outcome::ServicePanicked => Err(InvokeError::ServicePanicked),
            Outcome::ReplyTooLarge { len } => Err(InvokeError::ReplyTooLarge(len)),
        };
        let _ = invocation.reply.send(result);
    }
    route(session, actions, n);
}

fn route(session: &Session, actions: ClientActions, n: usize) {
    for out in actions.send {
        match out.to {
            Destination::Replica(r) => session.transport.send(Principal::Replica(r), out.frame),
            Destination::OtherReplicas => {
                for r in 0..n {
                    let r = bft_core::ReplicaId(u32::try_from(r).unwrap_or(u32::MAX));
                    session
                        .transport
                        .send(Principal::Replica(r), out.frame.clone());
                }
            }
            Destination::Client(_) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bft_core::testkit::{client_key, config};

    /// Each identity is one session with its own timestamps: the same client id given twice
    /// would make two sessions answerable by the same replies, so it is refused before anything
    /// starts. Ids that share a key are distinct sessions and are fine (see the cluster tests).
    #[test]
    fn the_same_identity_twice_is_refused() {
        let config = Arc::new(config(1, 2));
        let addresses = vec!["127.0.0.1:1".parse().expect("valid"); 4];
        let twice = vec![
            (ClientId(1), client_key(1)),
            (ClientId(2), client_key(2)),
            (ClientId(1), client_key(1)),
        ];
        let result = AsyncClient::connect(config, twice, addresses, ClientOptions::default());
        assert!(
            matches!(result, Err(ConnectError::DuplicateIdentity(ClientId(1)))),
            "{:?}",
            result.err()
        );
    }
}
