//! Cluster configuration, validated on construction.

use crate::ids::{ClientId, ReplicaId};
use bft_crypto::PublicKey;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Upper bound on what a signed frame adds around its payload: header varints, the payload's
/// length prefix and the 64-byte signature.
pub const FRAME_OVERHEAD_BYTES: usize = 96;

/// Upper bound on what a pre-prepare adds around its requests: the frame overhead plus view,
/// sequence number, digest and the list's length.
pub const PRE_PREPARE_OVERHEAD_BYTES: usize = FRAME_OVERHEAD_BYTES + 64;

/// Upper bound on the per-request bytes a pre-prepare adds (each request's length prefix).
pub const PER_REQUEST_OVERHEAD_BYTES: usize = 5;

/// Upper bound on the bytes one embedded vote (an encoded prepare or commit frame and its length
/// prefix) adds to a certificate.
pub const CERTIFICATE_VOTE_BYTES: usize = 160;

/// The largest `limits.max_message_bytes` (and operation) a configuration may set: 256 MiB.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The largest `limits.window` a configuration may set.
pub const MAX_WINDOW: u64 = 1 << 16;

/// Everything the replicas and clients of one cluster must agree on.
///
/// Build it, then call [`ClusterConfig::validate`] (replicas, clients and verifiers call it
/// themselves on construction and refuse an invalid one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Distinguishes this cluster's signatures from any other's.
    pub cluster_id: u64,
    /// The number of faulty replicas tolerated. `replicas.len()` must be `3f + 1`.
    pub f: usize,
    /// Replica public keys; replica `i` is `ReplicaId(i)`.
    pub replicas: Vec<PublicKey>,
    /// Admitted clients and their public keys. Requests from any other key are rejected.
    ///
    /// Several client ids may share one key: they are then sessions of one client principal
    /// (an application server, say), each with its own outstanding request and timestamps, and a
    /// channel authenticated with that key speaks for all of them (see
    /// [`ClusterConfig::same_client`]), so one connection per replica serves them all. A client
    /// key never equals a replica's. Replicas answer each session on the connection its latest
    /// request came on, so several client processes may hold one key as long as each uses
    /// sessions of its own (a session, like an id before, belongs to one process at a time).
    /// Sessions on one connection share its frame budget, and all sessions of a key share one
    /// outbound queue at each replica.
    pub clients: BTreeMap<ClientId, PublicKey>,
    /// Bounds on what peers and clients can make a replica hold.
    pub limits: Limits,
    /// Timeouts.
    pub timing: Timing,
}

/// Bounds on sizes, batches and the sequence window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted from the network, checked before anything is decoded.
    pub max_message_bytes: usize,
    /// Largest operation a client may submit.
    pub max_operation_bytes: usize,
    /// Largest reply a service may return; a longer one is replaced by
    /// [`crate::Outcome::ReplyTooLarge`] on every replica.
    pub max_reply_bytes: usize,
    /// Most requests in one batch (one pre-prepare).
    pub max_batch_requests: usize,
    /// Most request bytes (encoded request frames) in one batch.
    pub max_batch_bytes: usize,
    /// The window `L`: sequence numbers accepted lie in `(h, h + L]`, where `h` is the low
    /// watermark (PBFT section 4.2).
    pub window: u64,
    /// Most batches the primary keeps in flight (proposed, not yet executed) at once. While one
    /// is in flight, the primary proposes another only once a full batch (`max_batch_requests`
    /// or `max_batch_bytes`) is queued; smaller loads wait and batch up behind the one in flight.
    pub max_in_flight_batches: u64,
    /// K: a checkpoint is taken after executing every sequence number that is a multiple of K
    /// (PBFT section 4.3). At most `window` (typically half of it).
    pub checkpoint_interval: u64,
    /// Most normal-case messages a replica buffers per peer for views it has not entered yet
    /// (they are replayed when it enters the view).
    pub max_future_messages_per_peer: usize,
    /// Size of the chunks checkpoint state travels in during state transfer. The state a
    /// checkpoint can hold is bounded by this times [`Limits::max_state_chunks`].
    pub state_chunk_bytes: usize,
}

/// Timeouts, as durations of the time the driver passes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a client waits for f+1 matching replies before it retransmits its request to
    /// every replica.
    pub client_retransmit: Duration,
    /// How long a replica fetching state waits for a peer's answer before it asks another peer.
    pub state_transfer_retry: Duration,
    /// How long a backup waits for a pending request to execute before it suspects the primary
    /// and starts a view change; also how long it waits for a NEW-VIEW once 2f+1 VIEW-CHANGEs
    /// are in. Doubles with each consecutive view change and resets after progress (PBFT TOCS
    /// section 4.5.2).
    pub view_change: Duration,
    /// How often a replica re-sends its VIEW-CHANGE until the new view is installed.
    pub view_change_resend: Duration,
    /// How long a slot may stay uncommitted before the replica re-sends its own pre-prepare,
    /// prepare and commit for it (recovering lost messages without a view change).
    pub vote_resend: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 << 20,
            max_operation_bytes: 64 << 10,
            max_reply_bytes: 1 << 20,
            max_batch_requests: 256,
            max_batch_bytes: 1 << 20,
            window: 256,
            max_in_flight_batches: 8,
            checkpoint_interval: 128,
            max_future_messages_per_peer: 64,
            state_chunk_bytes: 1 << 20,
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            client_retransmit: Duration::from_millis(500),
            state_transfer_retry: Duration::from_millis(500),
            view_change: Duration::from_secs(1),
            view_change_resend: Duration::from_millis(500),
            vote_resend: Duration::from_millis(300),
        }
    }
}

/// A configuration value that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{field}`: {reason}")]
pub struct ConfigError {
    /// The field at fault, as named in [`ClusterConfig`].
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

impl ClusterConfig {
    /// A configuration with default limits and timing.
    pub fn new(
        cluster_id: u64,
        f: usize,
        replicas: Vec<PublicKey>,
        clients: BTreeMap<ClientId, PublicKey>,
    ) -> Self {
        ClusterConfig {
            cluster_id,
            f,
            replicas,
            clients,
            limits: Limits::default(),
            timing: Timing::default(),
        }
    }

    /// The number of replicas, n.
    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    /// The quorum size, 2f+1.
    pub fn quorum(&self) -> usize {
        2 * self.f + 1
    }

    /// The public key of replica `id`, if it is a member.
    pub fn replica_key(&self, id: ReplicaId) -> Option<&PublicKey> {
        self.replicas.get(id.0 as usize)
    }

    /// All replica ids.
    pub fn replica_ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        (0..self.replicas.len() as u32).map(ReplicaId)
    }

    /// Whether admitted clients `a` and `b` are sessions of one client principal: admitted with
    /// the same key. A channel authenticated as one speaks for the other. False if either is not
    /// admitted.
    pub fn same_client(&self, a: ClientId, b: ClientId) -> bool {
        match (self.clients.get(&a), self.clients.get(&b)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// The client ids admitted with `key`, lowest first: the sessions of one client principal.
    /// The first is the key's account: a connection authenticated with the key is that
    /// account's, and serves every session of the key.
    pub fn clients_with_key<'a>(
        &'a self,
        key: &'a PublicKey,
    ) -> impl Iterator<Item = ClientId> + 'a {
        self.clients
            .iter()
            .filter(move |(_, k)| *k == key)
            .map(|(id, _)| *id)
    }

    /// Each admitted client's account: the lowest client id admitted with the same key (see
    /// [`ClusterConfig::clients_with_key`]).
    pub fn client_accounts(&self) -> BTreeMap<ClientId, ClientId> {
        let mut first_with_key: BTreeMap<PublicKey, ClientId> = BTreeMap::new();
        self.clients
            .iter()
            .map(|(id, key)| (*id, *first_with_key.entry(*key).or_insert(*id)))
            .collect()
    }

    /// Checks every field and names the first one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.f == 0 {
            return Err(invalid(
                "f",
                "must be at least 1 (a BFT cluster tolerates at least one fault)",
            ));
        }
        let n = self
            .f
            .checked_mul(3)
            .and_then(|x| x.checked_add(1))
            .ok_or_else(|| invalid("f", "too large"))?;
        if self.replicas.len() != n {
            return Err(invalid(
                "replicas",
                format!(
                    "f = {} needs exactly 3f+1 = {n} replicas, got {}",
                    self.f,
                    self.replicas.len()
                ),
            ));
        }
        if self.replicas.len() > u32::MAX as usize {
            return Err(invalid("replicas", "too many replicas"));
        }
        let mut seen = BTreeSet::new();
        for (i, key) in self.replicas.iter().enumerate() {
            key.check_strong()
                .map_err(|e| invalid("replicas", format!("key of replica {i} is unusable: {e}")))?;
            if !seen.insert(*key) {
                return Err(invalid(
                    "replicas",
                    format!("key of replica {i} is used twice"),
                ));
            }
        }
        for (id, key) in &self.clients {
            key.check_strong()
                .map_err(|e| invalid("clients", format!("key of client {id} is unusable: {e}")))?;
            // Clients may share a key (sessions of one principal), never with a replica.
            if seen.contains(key) {
                return Err(invalid(
                    "clients",
                    format!("key of client {id} is also a replica's"),
                ));
            }
        }
        self.limits.validate()?;
        let required = self.limits.required_message_bytes(self.n());
        if self.limits.max_message_bytes < required {
            return Err(invalid(
                "limits.max_message_bytes",
                format!(
                    "must hold the largest pre-prepare the batch limits allow with a commit \
                     certificate around it ({required} bytes)"
                ),
            ));
        }
        if self.timing.client_retransmit.is_zero() {
            return Err(invalid("timing.client_retransmit", "must be positive"));
        }
        if self.timing.state_transfer_retry.is_zero() {
            return Err(invalid("timing.state_transfer_retry", "must be positive"));
        }
        if self.timing.view_change.is_zero() {
            return Err(invalid("timing.view_change", "must be positive"));
        }
        if self.timing.view_change_resend.is_zero() {
            return Err(invalid("timing.view_change_resend", "must be positive"));
        }
        if self.timing.vote_resend.is_zero() {
            return Err(invalid("timing.vote_resend", "must be positive"));
        }
        Ok(())
    }
}

impl Limits {
    /// The largest encoded request frame a client can produce under these limits: the operation,
    /// its length prefix and the timestamp (at most 10 bytes each), and the frame overhead.
    pub fn max_request_frame_bytes(&self) -> usize {
        self.max_operation_bytes
            .saturating_add(FRAME_OVERHEAD_BYTES + 20)
    }

    /// The smallest `max_message_bytes` these limits allow in a cluster of `n`: room for the
    /// largest pre-prepare the batch limits allow wrapped with n commit frames as a committed-batch
    /// certificate, and for the largest NEW-VIEW the window allows.
    pub fn required_message_bytes(&self, n: usize) -> usize {
        let f = n.saturating_sub(1) / 3;
        // A VIEW-CHANGE: 2f+1 checkpoints and, per sequence number in the window, a pre-prepare
        // and 2f prepares; a NEW-VIEW: 2f+1 of those and a pre-prepare per sequence number.
        let window = usize::try_from(self.window).unwrap_or(usize::MAX);
        let view_change = window
            .saturating_mul(2 * f + 1)
            .saturating_add(2 * f + 1)
            .saturating_mul(CERTIFICATE_VOTE_BYTES)
            .saturating_add(FRAME_OVERHEAD_BYTES + 64);
        let new_view = view_change
            .saturating_add(8)
            .saturating_mul(2 * f + 1)
            .saturating_add(window.saturating_mul(CERTIFICATE_VOTE_BYTES))
            .saturating_add(FRAME_OVERHEAD_BYTES + 64);
        let largest_pre_prepare = self
            .max_batch_bytes
            .saturating_add(
                self.max_batch_requests
                    .saturating_mul(PER_REQUEST_OVERHEAD_BYTES),
            )
            .saturating_add(PRE_PREPARE_OVERHEAD_BYTES);
        let committed_batch = largest_pre_prepare
            .saturating_add(n.saturating_mul(CERTIFICATE_VOTE_BYTES))
            .saturating_add(FRAME_OVERHEAD_BYTES + 16);
        committed_batch.max(new_view)
    }

    /// Most chunks a checkpoint's state may have: as many chunk digests as fit in one manifest
    /// message.
    pub fn max_state_chunks(&self) -> usize {
        self.max_message_bytes
            .saturating_sub(FRAME_OVERHEAD_BYTES + 32)
            / 33
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_operation_bytes == 0 || self.max_operation_bytes > MAX_MESSAGE_BYTES {
            return Err(invalid(
                "limits.max_operation_bytes",
                format!("must be between 1 and {MAX_MESSAGE_BYTES}"),
            ));
        }
        if self.max_message_bytes > MAX_MESSAGE_BYTES {
            return Err(invalid(
                "limits.max_message_bytes",
                format!("must be at most {MAX_MESSAGE_BYTES}"),
            ));
        }
        if self.max_reply_bytes == 0
            || self
                .max_reply_bytes
                .saturating_add(FRAME_OVERHEAD_BYTES + 64)
                > self.max_message_bytes
        {
            return Err(invalid(
                "limits.max_reply_bytes",
                "must be positive and leave room for framing within max_message_bytes",
            ));
        }
        if self.max_batch_requests == 0 {
            return Err(invalid("limits.max_batch_requests", "must be positive"));
        }
        if self.max_batch_bytes < self.max_request_frame_bytes() {
            return Err(invalid(
                "limits.max_batch_bytes",
                format!(
                    "must hold at least one largest request ({} bytes with max_operation_bytes = {})",
                    self.max_request_frame_bytes(),
                    self.max_operation_bytes
                ),
            ));
        }
        if self.max_batch_requests > MAX_MESSAGE_BYTES || self.max_batch_bytes > MAX_MESSAGE_BYTES {
            return Err(invalid(
                "limits.max_batch_bytes",
                format!("batch limits must be at most {MAX_MESSAGE_BYTES}"),
            ));
        }
        if self.window < 2 || self.window > MAX_WINDOW {
            return Err(invalid(
                "limits.window",
                format!("must be between 2 and {MAX_WINDOW}"),
            ));
        }
        if self.checkpoint_interval == 0 || self.checkpoint_interval > self.window {
            return Err(invalid(
                "limits.checkpoint_interval",
                format!("must be between 1 and the window ({})", self.window),
            ));
        }
        let max_chunk = self
            .max_message_bytes
            .saturating_sub(FRAME_OVERHEAD_BYTES + 64);
        if self.state_chunk_bytes == 0 || self.state_chunk_bytes > max_chunk {
            return Err(invalid(
                "limits.state_chunk_bytes",
                format!("must be between 1 and {max_chunk} (max_message_bytes less the framing)"),
            ));
        }
        if self.max_future_messages_per_peer == 0 {
            return Err(invalid(
                "limits.max_future_messages_per_peer",
                "must be positive",
            ));
        }
        if self.max_in_flight_batches == 0 || self.max_in_flight_batches > self.window {
            return Err(invalid(
                "limits.max_in_flight_batches",
                format!("must be between 1 and the window ({})", self.window),
            ));
        }
        Ok(())
    }
}
