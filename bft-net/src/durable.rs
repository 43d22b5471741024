//! Starting a replica from its data directory: the disk log and checkpoint snapshots of
//! `bft-storage`, read back and replayed by [`Replica::recover`].

use bft_core::{ClusterConfig, RecoveryError, RecoveryReport, Replica, ReplicaId, Service};
use bft_crypto::KeyPair;
use bft_storage::{WalError, WalOptions, WalStorage};
use std::path::Path;
use std::sync::Arc;
use tracing::info;

/// Why a replica could not start from its data directory. It must not start at all: starting
/// empty, or from part of its state, could make it sign something that conflicts with what it
/// signed before.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be read, or holds damaged data (the error names the file
    /// and the byte offset).
    #[error("data directory {dir}: {source}")]
    Storage {
        /// The data directory.
        dir: String,
        /// What went wrong.
        source: WalError,
    },
    /// What the directory holds does not rebuild a valid replica.
    #[error("data directory {dir}: {source}")]
    Recovery {
        /// The data directory.
        dir: String,
        /// What went wrong.
        source: RecoveryError,
    },
}

/// Opens (or creates) replica `id`'s data directory `dir`, and rebuilds the replica from what it
/// holds. Returns the replica, the storage to give [`crate::spawn_replica`], and what was
/// restored.
pub fn recover_replica<S: Service>(
    config: Arc<ClusterConfig>,
    id: ReplicaId,
    key: KeyPair,
    service: S,
    dir: &Path,
    options: WalOptions,
) -> Result<(Replica<S>, WalStorage, RecoveryReport), StartError> {
    let name = || dir.display().to_string();
    let (storage, restored) =
        WalStorage::open_with(dir, options).map_err(|source| StartError::Storage {
            dir: name(),
            source,
        })?;
    let (replica, report) = Replica::recover(
        config,
        id,
        key,
        service,
        restored.checkpoint.as_ref(),
        &restored.records,
    )
    .map_err(|source| StartError::Recovery {
        dir: name(),
        source,
    })?;
    info!(
        replica = %id,
        dir = %dir.display(),
        view = report.view.0,
        stable = report.stable_seq.0,
        executed = report.last_executed.0,
        replayed = report.records_applied,
        ignored = report.records_ignored,
        "recovered from the data directory"
    );
    Ok((replica, storage, report))
}
