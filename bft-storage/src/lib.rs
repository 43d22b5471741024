//! Durable storage for bft-core replicas.
//!
//! - [`Wal`]: a write-ahead log on disk, in checksummed segment files, for the records a replica
//!   must make durable before it sends what it signed. One [`Wal::append`] is one write and one
//!   fsync for any number of records: the group commit of every step pending. A torn record at
//!   the tail (a crash during an append) is cut off with a warning; damage anywhere else stops
//!   the replica with [`WalError::Corrupt`], naming the file and offset.
//! - [`WalStorage`]: a data directory (log and snapshots) as a [`bft_core::Storage`], storing
//!   [`bft_core::Record`]s in a versioned encoding ([`record`]) and
//!   [`bft_core::DurableCheckpoint`]s as snapshots; [`WalStorage::open`] reads back what
//!   [`bft_core::Replica::recover`] needs.
//! - [`SnapshotStore`]: checkpoint snapshots, written atomically (write, fsync, rename, fsync the
//!   directory), older ones removed.
//! - [`MemoryWal`]: the same log in memory, for tests and the simulator, with writing and syncing
//!   split so that a crash loses exactly what was not yet synced.
//!
//! One data directory per replica holds both the log segments (`wal-*.log`) and the snapshots
//! (`snapshot-*.snap`). The formats are in the [`wal`] and [`snapshot`] module docs.
//!
//! Every I/O error is a [`WalError::Io`] naming the file and the operation, for example
//! `disk full while appending to /data/r0/wal-00000000000000000000.log: No space left on device`;
//! after one, the log refuses further appends ([`WalError::Poisoned`]), so nothing is sent after a
//! failed persist. No file content makes this crate panic.
#![forbid(unsafe_code)]

mod error;
mod format;
pub mod memory;
pub mod record;
pub mod snapshot;
mod storage;
pub mod wal;

pub use error::{Corruption, IoOp, RecordDefect, SnapshotDefect, WalError};
pub use memory::MemoryWal;
pub use record::{RecordDecodeError, decode_record, encode_record, encode_signed_record_v1};
pub use snapshot::SnapshotStore;
pub use storage::{Restored, WalStorage};
pub use wal::{Recovered, Wal, WalOptions};

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Fsyncs a directory, making the creation, renaming or removal of files in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing ancestors, fsyncing the parent of each one created, so that a
/// crash cannot lose a freshly created data directory along with the records fsynced into it.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<(), WalError> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| WalError::io(IoOp::CreateDir, dir, e))?;
    for created in missing {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(|e| WalError::io(IoOp::SyncDir, parent, e))?;
        }
    }
    Ok(())
}
