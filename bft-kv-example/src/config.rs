//! The cluster configuration file and the key file conventions.
//!
//! A configuration is one TOML file that every replica and client of a cluster shares:
//!
//! ```toml
//! cluster_id = 7
//! f = 1
//!
//! [timing]          # milliseconds; every field optional (bft_core::Timing defaults)
//! view_change_ms = 1000
//!
//! [limits]          # bft_core::Limits; every field optional
//! max_operation_bytes = 65536
//!
//! [kv]              # the store's limits (KvLimits); every field optional
//! max_key_bytes = 1024
//!
//! [[replicas]]      # exactly 3f+1, ids 0..n in order
//! id = 0
//! address = "127.0.0.1:7000"
//! public_key = "…64 hex digits…"
//!
//! [[clients]]       # the admitted clients; any other key is refused
//! id = 1
//! public_key = "…"
//! ```
//!
//! Key files live next to the configuration by convention: `replica-<id>.key` and
//! `client-<id>.key` ([`replica_key_file`], [`client_key_file`]).

use crate::service::{KvLimits, KvLimitsError};
use bft_core::{ClientId, ClusterConfig, ConfigError, Limits, ReplicaId, Timing};
use bft_crypto::{KeyFileError, KeyPair, PublicKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The file name `keygen` gives the configuration.
pub const CONFIG_FILE: &str = "cluster.toml";

/// The conventional key file name of replica `id`.
pub fn replica_key_file(id: ReplicaId) -> String {
    format!("replica-{}.key", id.0)
}

/// The conventional key file name of client `id`.
pub fn client_key_file(id: ClientId) -> String {
    format!("client-{}.key", id.0)
}

/// The configuration file as written: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Distinguishes this cluster's signatures from any other's.
    pub cluster_id: u64,
    /// Faults tolerated; there must be 3f+1 replicas.
    pub f: usize,
    /// Timeouts, in milliseconds.
    #[serde(default)]
    pub timing: TimingFile,
    /// Protocol limits.
    #[serde(default)]
    pub limits: LimitsFile,
    /// The store's limits.
    #[serde(default)]
    pub kv: KvLimits,
    /// The replicas, by id.
    pub replicas: Vec<ReplicaEntry>,
    /// The admitted clients.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
}

/// One replica of a [`ClusterFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    /// Its id (its index: ids run from 0 in order).
    pub id: u32,
    /// The UDP address it listens on.
    pub address: SocketAddr,
    /// Its public key, 64 hex digits.
    pub public_key: PublicKey,
}

/// One admitted client of a [`ClusterFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// Its id.
    pub id: u64,
    /// Its public key, 64 hex digits.
    pub public_key: PublicKey,
}

/// [`bft_core::Timing`] in milliseconds; a missing field keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimingFile {
    /// See [`Timing::client_retransmit`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_retransmit_ms: Option<u64>,
    /// See [`Timing::state_transfer_retry`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_transfer_retry_ms: Option<u64>,
    /// See [`Timing::view_change`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_change_ms: Option<u64>,
    /// See [`Timing::view_change_resend`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_change_resend_ms: Option<u64>,
    /// See [`Timing::vote_resend`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vote_resend_ms: Option<u64>,
}

/// [`bft_core::Limits`]; a missing field keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsFile {
    /// See [`Limits::max_message_bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// See [`Limits::max_operation_bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_operation_bytes: Option<usize>,
    /// See [`Limits::max_reply_bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_reply_bytes: Option<usize>,
    /// See [`Limits::max_batch_requests`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_requests: Option<usize>,
    /// See [`Limits::max_batch_bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_bytes: Option<usize>,
    /// See [`Limits::window`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    /// See [`Limits::max_in_flight_batches`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight_batches: Option<u64>,
    /// See [`Limits::checkpoint_interval`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<u64>,
    /// See [`Limits::max_future_messages_per_peer`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_future_messages_per_peer: Option<usize>,
    /// See [`Limits::state_chunk_bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_chunk_bytes: Option<usize>,
}

impl TimingFile {
    /// Every field set, from `timing`.
    pub fn from_timing(timing: &Timing) -> TimingFile {
        let ms = |d: Duration| Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        TimingFile {
            client_retransmit_ms: ms(timing.client_retransmit),
            state_transfer_retry_ms: ms(timing.state_transfer_retry),
            view_change_ms: ms(timing.view_change),
            view_change_resend_ms: ms(timing.view_change_resend),
            vote_resend_ms: ms(timing.vote_resend),
        }
    }

    /// The timing: defaults where a field is missing.
    pub fn to_timing(&self) -> Timing {
        let mut timing = Timing::default();
        let set = |field: &mut Duration, ms: Option<u64>| {
            if let Some(ms) = ms {
                *field = Duration::from_millis(ms);
            }
        };
        set(&mut timing.client_retransmit, self.client_retransmit_ms);
        set(
            &mut timing.state_transfer_retry,
            self.state_transfer_retry_ms,
        );
        set(&mut timing.view_change, self.view_change_ms);
        set(&mut timing.view_change_resend, self.view_change_resend_ms);
        set(&mut timing.vote_resend, self.vote_resend_ms);
        timing
    }
}

impl LimitsFile {
    /// Every field set, from `limits`.
    pub fn from_limits(limits: &Limits) -> LimitsFile {
        LimitsFile {
            max_message_bytes: Some(limits.max_message_bytes),
            max_operation_bytes: Some(limits.max_operation_bytes),
            max_reply_bytes: Some(limits.max_reply_bytes),
            max_batch_requests: Some(limits.max_batch_requests),
            max_batch_bytes: Some(limits.max_batch_bytes),
            window: Some(limits.window),
            max_in_flight_batches: Some(limits.max_in_flight_batches),
            checkpoint_interval: Some(limits.checkpoint_interval),
            max_future_messages_per_peer: Some(limits.max_future_messages_per_peer),
            state_chunk_bytes: Some(limits.state_chunk_bytes),
        }
    }

    /// The limits: defaults where a field is missing.
    pub fn to_limits(&self) -> Limits {
        let mut limits = Limits::default();
        fn set<T: Copy>(field: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *field = value;
            }
        }
        set(&mut limits.max_message_bytes, self.max_message_bytes);
        set(&mut limits.max_operation_bytes, self.max_operation_bytes);
        set(&mut limits.max_reply_bytes, self.max_reply_bytes);
        set(&mut limits.max_batch_requests, self.max_batch_requests);
        set(&mut limits.max_batch_bytes, self.max_batch_bytes);
        set(&mut limits.window, self.window);
        set(
            &mut limits.max_in_flight_batches,
            self.max_in_flight_batches,
        );
        set(&mut limits.checkpoint_interval, self.checkpoint_interval);
        set(
            &mut limits.max_future_messages_per_peer,
            self.max_future_messages_per_peer,
        );
        set(&mut limits.state_chunk_bytes, self.state_chunk_bytes);
        limits
    }
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read (missing, unreadable).
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("malformed configuration file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        source: toml::de::Error,
    },
    /// The file parses but describes an unusable cluster.
    #[error("invalid configuration file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file cannot be written.
    #[error("cannot write configuration file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or is not a key file.
    #[error("{0}")]
    File(#[from] KeyFileError),
    /// The key is not the one the configuration lists for this replica.
    #[error(
        "key file {path} holds public key {found}, but the configuration lists {expected} for \
         replica {id}: wrong key file for this replica id?"
    )]
    NotThisReplica {
        /// The key file.
        path: PathBuf,
        /// The replica.
        id: u32,
        /// The key the file holds.
        found: PublicKey,
        /// The key the configuration lists.
        expected: PublicKey,
    },
    /// The replica id is not in the configuration.
    #[error("replica {id} is not in the configuration (it has replicas 0 to {last})")]
    NoSuchReplica {
        /// The id asked for.
        id: u32,
        /// The last replica id configured.
        last: usize,
    },
    /// The key is not an admitted client's.
    #[error(
        "key file {path} holds public key {found}, which is not an admitted client of this \
         cluster (not listed under [[clients]] in the configuration)"
    )]
    NotAdmitted {
        /// The key file.
        path: PathBuf,
        /// The key the file holds.
        found: PublicKey,
    },
}

/// A loaded, validated configuration: what replicas and clients need.
#[derive(Debug, Clone)]
pub struct KvConfig {
    /// The protocol configuration (validated).
    pub cluster: Arc<ClusterConfig>,
    /// Replica addresses, by id.
    pub addresses: Vec<SocketAddr>,
    /// The store's limits (validated against the protocol's).
    pub kv: KvLimits,
    /// The directory the file is in (key files are looked up there by default).
    pub dir: PathBuf,
}

impl ClusterFile {
    /// Parses the TOML text.
    pub fn parse(text: &str) -> Result<ClusterFile, toml::de::Error> {
        toml::from_str(text)
    }

    /// The TOML text, with a header comment.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# bft-kv cluster configuration: shared by every replica and client.\n\
             # Timing in milliseconds; [limits] are the protocol's, [kv] the store's.\n\n{body}"
        )
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<ClusterFile, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ClusterFile::parse(&text).map_err(|source| ConfigFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the file to `path`, replacing it if it exists.
    pub fn save(&self, path: &Path) -> Result<(), ConfigFileError> {
        std::fs::write(path, self.to_toml()).map_err(|source| ConfigFileError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Builds and validates the protocol configuration, the addresses and the store's limits.
    /// `path` names the file in errors; its directory becomes [`KvConfig::dir`].
    pub fn resolve(&self, path: &Path) -> Result<KvConfig, ConfigFileError> {
        let invalid = |reason: String| ConfigFileError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut replicas = Vec::with_capacity(self.replicas.len());
        let mut addresses = Vec::with_capacity(self.replicas.len());
        for (index, entry) in self.replicas.iter().enumerate() {
            if entry.id as usize != index {
                return Err(invalid(format!(
                    "replica ids must run from 0 in order: entry {index} has id {}",
                    entry.id
                )));
            }
            if addresses.contains(&entry.address) {
                return Err(invalid(format!(
                    "address {} of replica {} is used twice",
                    entry.address, entry.id
                )));
            }
            replicas.push(entry.public_key);
            addresses.push(entry.address);
        }
        let mut clients = BTreeMap::new();
        for entry in &self.clients {
            if clients
                .insert(ClientId(entry.id), entry.public_key)
                .is_some()
            {
                return Err(invalid(format!("client id {} is listed twice", entry.id)));
            }
        }
        let mut cluster = ClusterConfig::new(self.cluster_id, self.f, replicas, clients);
        cluster.limits = self.limits.to_limits();
        cluster.timing = self.timing.to_timing();
        cluster
            .validate()
            .map_err(|e: ConfigError| invalid(e.to_string()))?;
        self.kv
            .validate(&cluster.limits)
            .map_err(|e: KvLimitsError| invalid(e.to_string()))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(KvConfig {
            cluster: Arc::new(cluster),
            addresses,
            kv: self.kv,
            dir,
        })
    }
}

impl KvConfig {
    /// Loads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<KvConfig, ConfigFileError> {
        ClusterFile::load(path)?.resolve(path)
    }

    /// Where replica `id`'s key file is by convention: `replica-<id>.key` next to the
    /// configuration.
    pub fn replica_key_path(&self, id: ReplicaId) -> PathBuf {
        self.dir.join(replica_key_file(id))
    }

    /// Where client `id`'s key file is by convention: `client-<id>.key` next to the
    /// configuration.
    pub fn client_key_path(&self, id: ClientId) -> PathBuf {
        self.dir.join(client_key_file(id))
    }

    /// The admitted client whose key is `key`, if any (the lowest id admitted with it, if
    /// several are: the key's account).
    pub fn client_id_of(&self, key: &PublicKey) -> Option<ClientId> {
        self.cluster.clients_with_key(key).next()
    }

    /// Loads replica `id`'s key from `path` (default: [`KvConfig::replica_key_path`]) and checks
    /// that it is the configured key of that replica.
    pub fn load_replica_key(
        &self,
        id: ReplicaId,
        path: Option<&Path>,
    ) -> Result<KeyPair, KeyError> {
        let expected = *self
            .cluster
            .replica_key(id)
            .ok_or(KeyError::NoSuchReplica {
                id: id.0,
                last: self.cluster.n().saturating_sub(1),
            })?;
        let path = path.map_or_else(|| self.replica_key_path(id), Path::to_path_buf);
        let key = KeyPair::load(&path)?;
        if key.public() != expected {
            return Err(KeyError::NotThisReplica {
                path,
                id: id.0,
                found: key.public(),
                expected,
            });
        }
        Ok(key)
    }

    /// Loads a client key from `path` and every admitted client id configured with it (the
    /// sessions of one client, `bft_core::ClusterConfig::clients`; usually one), lowest first.
    pub fn load_client_sessions(&self, path: &Path) -> Result<Vec<(ClientId, KeyPair)>, KeyError> {
        let (_, key) = self.load_client_key(path)?;
        let public = key.public();
        Ok(self
            .cluster
            .clients_with_key(&public)
            .map(|id| (id, key.clone()))
            .collect())
    }

    /// Loads a client key from `path` and finds the admitted client it belongs to (the lowest
    /// id admitted with it, if several are).
    pub fn load_client_key(&self, path: &Path) -> Result<(ClientId, KeyPair), KeyError> {
        let key = KeyPair::load(path)?;
        match self.client_id_of(&key.public()) {
            Some(id) => Ok((id, key)),
            None => Err(KeyError::NotAdmitted {
                path: path.to_path_buf(),
                found: key.public(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
