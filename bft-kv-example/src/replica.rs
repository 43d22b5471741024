//! `bft-kv replica`: one replica process, run until SIGINT or SIGTERM.

use crate::config::{ConfigFileError, KeyError, KvConfig};
use crate::service::KvService;
use bft_core::ReplicaId;
use bft_net::{NodeError, ReplicaHandle, ReplicaNode, Snapshot};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// How often the status file is rewritten.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(200);

/// What to run.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// The configuration file.
    pub config: PathBuf,
    /// This replica's id.
    pub id: u32,
    /// The key file; default `replica-<id>.key` next to the configuration.
    pub key: Option<PathBuf>,
    /// A file to keep the replica's status in (rewritten every [`STATUS_INTERVAL`]).
    pub status_file: Option<PathBuf>,
    /// Where the replica keeps its records.
    pub storage: ReplicaStorage,
}

/// Where a replica keeps its log and checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaStorage {
    /// In a data directory (default `replica-<id>.data` next to the configuration); a restart
    /// recovers from it.
    Disk(Option<PathBuf>),
    /// In memory only: a restart starts empty.
    Memory,
}

/// Why a replica could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The configuration file cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The key file cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The replica could not start (address in use, ...).
    #[error("replica {id} cannot start: {source}")]
    Start {
        /// The replica.
        id: u32,
        /// The cause.
        source: NodeError,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The replica stopped on its own.
    #[error("replica {id} stopped: {source}")]
    Stopped {
        /// The replica.
        id: u32,
        /// The cause.
        source: bft_net::DriverError,
    },
}

/// A replica's status as written to the status file (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The replica.
    pub id: u32,
    /// Its current view.
    pub view: u64,
    /// The primary of that view.
    pub primary: u32,
    /// The last sequence number it executed.
    pub last_executed: u64,
    /// Its low watermark (last stable checkpoint).
    pub low_watermark: u64,
    /// Requests it executed.
    pub requests_executed: u64,
    /// View changes it completed.
    pub view_changes_completed: u64,
    /// State transfers it completed.
    pub state_transfers_completed: u64,
}

impl StatusReport {
    /// The report of a running replica in a cluster of `n`.
    pub fn of(handle: &ReplicaHandle, n: usize) -> StatusReport {
        StatusReport::from_snapshot(&handle.snapshot(), n)
    }

    /// The report for a replica's published snapshot, in a cluster of `n`.
    pub fn from_snapshot(snapshot: &Snapshot, n: usize) -> StatusReport {
        let status = &snapshot.status;
        StatusReport {
            id: status.id.0,
            view: status.view.0,
            primary: status.view.primary(n).0,
            last_executed: status.last_executed.0,
            low_watermark: status.low_watermark.0,
            requests_executed: snapshot.metrics.requests_executed,
            view_changes_completed: snapshot.metrics.view_changes_completed,
            state_transfers_completed: snapshot.metrics.state_transfers_completed,
        }
    }

    /// Reads a status file; `None` if it is missing or not (yet) complete.
    pub fn load(path: &Path) -> Option<StatusReport> {
        toml::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Writes the status file atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, path)
    }
}

/// Loads the configuration and key, starts the replica and runs it until SIGINT or SIGTERM,
/// then stops it cleanly. Must run inside a tokio runtime.
pub async fn run(options: ReplicaOptions) -> Result<(), ReplicaError> {
    let config = KvConfig::load(&options.config)?;
    let id = ReplicaId(options.id);
    let key = config.load_replica_key(id, options.key.as_deref())?;
    let service = KvService::new(config.kv);
    let mut builder =
        ReplicaNode::builder(config.cluster.clone(), id, key, config.addresses.clone());
    if let ReplicaStorage::Disk(dir) = &options.storage {
        let dir = dir
            .clone()
            .unwrap_or_else(|| config.dir.join(format!("replica-{}.data", options.id)));
        eprintln!("replica {}: data directory {}", options.id, dir.display());
        builder = builder.data_dir(dir);
    }
    let handle = builder
        .start(service)
        .map_err(|source| ReplicaError::Start {
            id: options.id,
            source,
        })?;
    let n = config.cluster.n();
    info!(
        replica = options.id,
        address = %config.addresses[id.0 as usize],
        f = config.cluster.f,
        "replica started"
    );
    eprintln!(
        "replica {} of {n} listening on {} (f = {}); stop with Ctrl-C or SIGTERM",
        options.id, config.addresses[id.0 as usize], config.cluster.f
    );
    let status = options.status_file.clone().map(|path| {
        let watch = handle.watch();
        tokio::spawn(write_status(watch, path, n))
    });
    let signal = crate::signal::wait_for_signal().await;
    if let Some(task) = status {
        task.abort();
    }
    let signal = signal.map_err(ReplicaError::Signals)?;
    eprintln!("replica {}: {signal}, stopping", options.id);
    let result = handle.shutdown().await;
    if let Some(path) = &options.status_file {
        let _ = std::fs::remove_file(path);
    }
    result.map_err(|source| ReplicaError::Stopped {
        id: options.id,
        source,
    })?;
    eprintln!("replica {} stopped", options.id);
    Ok(())
}

async fn write_status(watch: tokio::sync::watch::Receiver<Snapshot>, path: PathBuf, n: usize) {
    let mut interval = tokio::time::interval(STATUS_INTERVAL);
    loop {
        interval.tick().await;
        // Copy out at once: holding the borrow blocks the replica's publishing.
        let snapshot = watch.borrow().clone();
        let report = StatusReport::from_snapshot(&snapshot, n);
        if let Err(error) = report.save(&path) {
            warn!(path = %path.display(), %error, "cannot write the status file");
        }
    }
}
