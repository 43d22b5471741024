//! The sans-IO client (PBFT section 4.1): one outstanding request at a time, accepted once f+1
//! replicas sent matching replies.
//!
//! The client sends each request to every replica: the primary proposes it, and the backups keep
//! its bytes to recognise it in the primary's PRE-PREPARE without checking its signature again
//! (see [`crate::DirectRequests`]). If f+1 matching replies do not arrive within
//! `timing.client_retransmit`, it sends the request to every replica again; backups take that
//! second copy as a retransmission and relay it to the primary (and a view change follows if the
//! primary is faulty). It learns the view from replies.

use crate::codec::Header;
use crate::config::{ClusterConfig, ConfigError};
use crate::ids::{ClientId, Principal, ReplicaId, Time, View};
use crate::messages::{Outcome, Reply, Request, WireMessage};
use crate::replica::{Destination, Outgoing};
use crate::verify::VerifiedMessage;
use bft_crypto::KeyPair;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// An input to [`Client::step`].
#[derive(Debug, Clone)]
pub enum ClientInput {
    /// A message that passed [`crate::Verifier`] (replies; anything else is refused).
    Message(VerifiedMessage),
    /// The deadline from [`Client::poll_timeout`] has passed.
    Tick,
}

/// A request that completed: f+1 replicas sent this outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The request's timestamp.
    pub timestamp: u64,
    /// The agreed outcome.
    pub outcome: Outcome,
    /// Time from submission to completion, in the driver's time.
    pub latency: Duration,
}

/// What a client step asks the driver to do.
#[derive(Debug, Default)]
#[must_use = "the client's frames must be sent"]
pub struct ClientActions {
    /// Frames to send (clients persist nothing).
    pub send: Vec<Outgoing>,
    /// The request that completed in this step, if any.
    pub completed: Option<Completed>,
    /// Input refused in this step, with the reason.
    pub rejected: Option<ClientRejection>,
}

/// Errors of [`Client::submit`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A request is outstanding; PBFT clients have one at a time.
    #[error("a request is already outstanding")]
    Busy,
    /// Every timestamp up to `u64::MAX` has been used; this client id cannot send more.
    #[error("the client's timestamps are exhausted")]
    TimestampsExhausted,
    /// The operation exceeds `limits.max_operation_bytes`.
    #[error("operation of {len} bytes exceeds the limit of {max}")]
    OperationTooLarge {
        /// Operation length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a client refused a verified message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientRejection {
    /// Clients accept only replies.
    #[error("not a reply")]
    NotAReply,
    /// The reply is addressed to another client.
    #[error("reply for another client")]
    NotForThisClient,
    /// No request is outstanding, or the reply is for another timestamp.
    #[error("reply does not match the outstanding request")]
    Unexpected,
    /// The replica already replied to this request.
    #[error("second reply from the same replica")]
    Duplicate,
}

#[derive(Debug)]
struct Pending {
    timestamp: u64,
    frame: Bytes,
    started: Time,
    retransmit_at: Time,
    /// First reply from each replica; a replica cannot change its answer.
    replies: BTreeMap<ReplicaId, (View, Outcome)>,
}

/// A PBFT client for one admitted client identity.
#[derive(Debug)]
pub struct Client {
    config: Arc<ClusterConfig>,
    id: ClientId,
    key: KeyPair,
    view: View,
    /// `None` once `u64::MAX` has been used.
    next_timestamp: Option<u64>,
    pending: Option<Pending>,
}

impl Client {
    /// Creates client `id`. `first_timestamp` (at least 1) must exceed every timestamp this
    /// client id used before, for example the wall clock in microseconds at start-up: replicas
    /// ignore requests older than the last one they executed for the client.
    pub fn new(
        config: Arc<ClusterConfig>,
        id: ClientId,
        key: KeyPair,
        first_timestamp: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        match config.clients.get(&id) {
            None => {
                return Err(ConfigError {
                    field: "clients",
                    reason: format!("client {id} is not admitted by the configuration"),
                });
            }
            Some(key_of_id) if *key_of_id != key.public() => {
                return Err(ConfigError {
                    field: "key",
                    reason: format!("key pair does not match the configured key of client {id}"),
                });
            }
            Some(_) => {}
        }
        if first_timestamp == 0 {
            return Err(ConfigError {
                field: "first_timestamp",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Client {
            config,
            id,
            key,
            view: View(0),
            next_timestamp: Some(first_timestamp),
            pending: None,
        })
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The view the client believes current.
    pub fn view(&self) -> View {
        self.view
    }

    /// Whether a request is outstanding.
    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }

    /// The timestamp the next request will carry (`None` when exhausted).
    pub fn next_timestamp(&self) -> Option<u64> {
        self.next_timestamp
    }

    /// Signs `operation` as the next request and sends it to every replica.
    pub fn submit(&mut self, now: Time, operation: Vec<u8>) -> Result<ClientActions, ClientError> {
        if self.pending.is_some() {
            return Err(ClientError::Busy);
        }
        let max = self.config.limits.max_operation_bytes;
        if operation.len() > max {
            return Err(ClientError::OperationTooLarge {
                len: operation.len(),
                max,
            });
        }
        let timestamp = self
            .next_timestamp
            .ok_or(ClientError::TimestampsExhausted)?;
        self.next_timestamp = timestamp.checked_add(1);
        let frame = Request {
            timestamp,
            operation,
        }
        .sign(
            &self.key,
            self.config.cluster_id,
            Principal::Client(self.id),
        );
        let send = self.to_every_replica(&frame);
        self.pending = Some(Pending {
            timestamp,
            frame,
            started: now,
            retransmit_at: now + self.config.timing.client_retransmit,
            replies: BTreeMap::new(),
        });
        Ok(ClientActions {
            send,
            ..ClientActions::default()
        })
    }

    /// Processes a reply or a timer tick.
    pub fn step(&mut self, now: Time, input: ClientInput) -> ClientActions {
        match input {
            ClientInput::Message(VerifiedMessage::Reply(reply)) => {
                let Principal::Replica(replica) = reply.sender() else {
                    unreachable!("the verifier admits replies from replicas only")
                };
                self.on_reply(now, replica, reply.message())
            }
            ClientInput::Message(_) => ClientActions {
                rejected: Some(ClientRejection::NotAReply),
                ..Default::default()
            },
            ClientInput::Tick => self.on_tick(now),
        }
    }

    /// Gives up on the outstanding request (a driver's deadline passed): later replies to it are
    /// ignored and the next [`Client::submit`] is accepted. The request may still execute; the
    /// next one carries a higher timestamp, so it cannot be confused with it.
    pub fn abandon(&mut self) {
        self.pending = None;
    }

    /// When the client needs a [`ClientInput::Tick`].
    pub fn poll_timeout(&self) -> Option<Time> {
        self.pending.as_ref().map(|p| p.retransmit_at)
    }

    fn on_reply(&mut self, now: Time, replica: ReplicaId, reply: &Reply) -> ClientActions {
        let reject = |reason| ClientActions {
            rejected: Some(reason),
            ..Default::default()
        };
        if reply.client != self.id {
            return reject(ClientRejection::NotForThisClient);
        }
        let Some(pending) = self
            .pending
            .as_mut()
            .filter(|p| p.timestamp == reply.timestamp)
        else {
            return reject(ClientRejection::Unexpected);
        };
        if pending.replies.contains_key(&replica) {
            return reject(ClientRejection::Duplicate);
        }
        pending
            .replies
            .insert(replica, (reply.view, reply.outcome.clone()));
        let matching = pending
            .replies
            .values()
            .filter(|(_, o)| *o == reply.outcome)
            .count();
        if matching <= self.config.f {
            return ClientActions::default();
        }
        // f+1 replicas agree, so at least one correct replica produced this outcome.
        // The (f+1)-th highest view reported is at most some correct replica's view: Byzantine
        // replicas cannot push the client into a view no correct replica has reached.
        let mut views: Vec<View> = pending.replies.values().map(|(v, _)| *v).collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(view) = views.get(self.config.f) {
            self.view = self.view.max(*view);
        }
        let pending = self.pending.take().expect("checked above");
        ClientActions {
            completed: Some(Completed {
                timestamp: pending.timestamp,
                outcome: reply.outcome.clone(),
                latency: now.saturating_since(pending.started),
            }),
            ..Default::default()
        }
    }

    /// `frame` to every replica: the primary proposes it, and each backup then holds the
    /// request's bytes as its client sent them (see [`crate::DirectRequests`]).
    fn to_every_replica(&self, frame: &Bytes) -> Vec<Outgoing> {
        self.config
            .replica_ids()
            .map(|r| Outgoing {
                to: Destination::Replica(r),
                frame: frame.clone(),
            })
            .collect()
    }

    fn on_tick(&mut self, now: Time) -> ClientActions {
        let Some(pending) = self.pending.as_mut() else {
            return ClientActions::default();
        };
        if now < pending.retransmit_at {
            return ClientActions::default();
        }
        pending.retransmit_at = now + self.config.timing.client_retransmit;
        let frame = pending.frame.clone();
        let send = self.to_every_replica(&frame);
        ClientActions {
            send,
            ..Default::default()
        }
    }
}

/// The header a client's request frames carry (exposed for tests that forge requests).
pub fn request_header(cluster: u64, client: ClientId) -> Header {
    Header {
        cluster,
        kind: crate::messages::MessageKind::Request,
        sender: Principal::Client(client),
    }
}
