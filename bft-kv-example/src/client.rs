//! [`KvClient`]: typed store operations over [`bft_net::AsyncClient`].

use crate::config::{ConfigFileError, KeyError, KvConfig};
use crate::ops::{DecodeError, KvOp, KvReply};
use bft_core::{ClientError, ClientId};
use bft_crypto::KeyPair;
use bft_net::{AsyncClient, ClientOptions, ConnectError, InvokeError};
use std::path::Path;
use std::time::Duration;

/// Why an operation (or connecting) failed. A [`KvReply::Error`] is not a failure: it is the
/// cluster's agreed answer, returned as a reply.
#[derive(Debug, thiserror::Error)]
pub enum KvClientError {
    /// The configuration file cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The client key cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The client could not start.
    #[error("cannot start the client: {0}")]
    Connect(#[from] ConnectError),
    /// Not called from within a tokio runtime.
    #[error("the client must be started from within a tokio runtime")]
    NoRuntime,
    /// No f+1 matching replies before the deadline.
    #[error(
        "no agreed reply from the cluster within {deadline:?}: are at least 2f+1 replicas \
         running and reachable at the configured addresses, and is this client's key admitted by \
         them? (the operation may still execute)"
    )]
    Unreachable {
        /// The deadline that passed.
        deadline: Duration,
    },
    /// The operation was refused before it was sent (too large for the cluster's limits).
    #[error("operation refused: {0}")]
    Refused(ClientError),
    /// The service panicked executing the operation (every correct replica agreed on this).
    #[error("the service panicked executing the operation")]
    ServicePanicked,
    /// The reply exceeded the cluster's reply limit.
    #[error("the reply ({0} bytes) exceeded the cluster's max_reply_bytes")]
    ReplyTooLarge(u64),
    /// The client was shut down.
    #[error("the client is shut down")]
    Closed,
    /// The agreed reply does not decode (the cluster runs another service?).
    #[error("the cluster's reply is not a bft-kv reply: {0}")]
    Decode(#[from] DecodeError),
}

/// A client of a bft-kv cluster; cheap to clone, usable from many tasks at once (operations run
/// concurrently up to the number of identities it was given).
#[derive(Clone)]
pub struct KvClient {
    client: AsyncClient,
    deadline: Duration,
}

impl KvClient {
    /// Loads the configuration at `config_path` and the client key at `key_path` (which must be
    /// an admitted client's) and connects, with a session per client id the key is admitted as.
    /// Each operation waits at most `deadline`.
    pub async fn connect(
        config_path: &Path,
        key_path: &Path,
        deadline: Duration,
    ) -> Result<KvClient, KvClientError> {
        KvClient::connect_with_keys(config_path, &[key_path.to_path_buf()], deadline).await
    }

    /// Like [`KvClient::connect`] with several client keys: one session per client id they are
    /// admitted as (one per key, unless the configuration gives a key several ids), so up to
    /// that many operations run at once. A key given twice counts once.
    pub async fn connect_with_keys(
        config_path: &Path,
        key_paths: &[std::path::PathBuf],
        deadline: Duration,
    ) -> Result<KvClient, KvClientError> {
        let config = KvConfig::load(config_path)?;
        let mut identities: Vec<(ClientId, KeyPair)> = Vec::new();
        for path in key_paths {
            for (id, key) in config.load_client_sessions(path)? {
                if identities.iter().all(|(known, _)| *known != id) {
                    identities.push((id, key));
                }
            }
        }
        KvClient::from_parts(&config, identities, deadline)
    }

    /// Connects with already-loaded parts: one session per identity (each an admitted client id
    /// and its key). Must be called from within a tokio runtime.
    pub fn from_parts(
        config: &KvConfig,
        identities: Vec<(ClientId, KeyPair)>,
        deadline: Duration,
    ) -> Result<KvClient, KvClientError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(KvClientError::NoRuntime);
        }
        let options = ClientOptions {
            deadline,
            ..ClientOptions::default()
        };
        let client = AsyncClient::connect(
            config.cluster.clone(),
            identities,
            config.addresses.clone(),
            options,
        )?;
        Ok(KvClient { client, deadline })
    }

    /// Wraps an existing [`AsyncClient`] (whose deadline is `deadline`).
    pub fn from_async_client(client: AsyncClient, deadline: Duration) -> KvClient {
        KvClient { client, deadline }
    }

    /// Runs `op` and returns the reply f+1 replicas agreed on.
    pub async fn call(&self, op: KvOp) -> Result<KvReply, KvClientError> {
        let bytes = self.client.invoke(op.encode()).await.map_err(|e| match e {
            InvokeError::Timeout(deadline) => KvClientError::Unreachable { deadline },
            InvokeError::Refused(error) => KvClientError::Refused(error),
            InvokeError::ServicePanicked => KvClientError::ServicePanicked,
            InvokeError::ReplyTooLarge(len) => KvClientError::ReplyTooLarge(len),
            InvokeError::Closed => KvClientError::Closed,
        })?;
        Ok(KvReply::decode(&bytes)?)
    }

    /// The deadline of each operation.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Stops: operations in flight fail with [`KvClientError::Closed`]; connections are closed.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
}
