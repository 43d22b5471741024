//! [`WalStorage`]: a replica's data directory (the disk log and checkpoint snapshots) as a
//! [`bft_core::Storage`].

use crate::error::{Corruption, SnapshotDefect, WalError};
use crate::record::{decode_record, encode_record};
use crate::snapshot::SnapshotStore;
use crate::wal::{Wal, WalOptions};
use bft_core::{DurableCheckpoint, Record, Storage};
use std::path::Path;

/// What a data directory held when it was opened: what [`bft_core::Replica::recover`] takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// The latest checkpoint saved, if any.
    pub checkpoint: Option<DurableCheckpoint>,
    /// The records persisted after it, in order.
    pub records: Vec<Record>,
}

/// A replica's records in a [`Wal`] and its checkpoints in a [`SnapshotStore`], both in one
/// directory.
///
/// - [`Storage::persist`] appends every record of the call as one group-committed batch (one
///   fsync). A driver that steps the replica several times and persists the absorbed actions
///   once (`Actions::absorb`) group-commits those steps.
/// - [`Storage::save_checkpoint`] writes the checkpoint atomically (with the log index it
///   follows), then removes the log segments it supersedes. A crash between the two leaves
///   superseded records in the log; [`WalStorage::open`] skips them by that index.
#[derive(Debug)]
pub struct WalStorage {
    wal: Wal,
    snapshots: SnapshotStore,
}

/// Bytes before the checkpoint's encoding in a snapshot: the log index its records follow.
const CUT_BYTES: usize = 8;

impl WalStorage {
    /// Opens the data directory `dir` (created if missing) with default [`WalOptions`].
    pub fn open(dir: &Path) -> Result<(WalStorage, Restored), WalError> {
        WalStorage::open_with(dir, WalOptions::default())
    }

    /// Opens the data directory `dir` and reads back the latest checkpoint and the records
    /// persisted after it. A torn record at the log's tail is cut off (with a warning); any
    /// other damage, or a record that passes its checksum but does not decode, is
    /// [`WalError::Corrupt`] with its file and offset.
    pub fn open_with(dir: &Path, options: WalOptions) -> Result<(WalStorage, Restored), WalError> {
        let snapshots = SnapshotStore::open(dir)?;
        let (cut, checkpoint) = match snapshots.latest()? {
            Some((seq, bytes)) => {
                let (cut, checkpoint) = decode_snapshot(&bytes).ok_or_else(|| {
                    let file = dir.join(crate::snapshot::snapshot_file_name(seq));
                    WalError::Corrupt {
                        file,
                        offset: 0,
                        reason: Corruption::DamagedSnapshot {
                            defect: SnapshotDefect::Undecodable,
                        },
                    }
                })?;
                (cut, Some(checkpoint))
            }
            None => (0, None),
        };
        let (wal, recovered) = Wal::open(dir, options)?;
        let mut records = Vec::with_capacity(recovered.records.len());
        for (index, payload) in recovered.indexed() {
            if index < cut {
                continue;
            }
            let record = decode_record(payload).map_err(|error| {
                let (file, offset) = recovered
                    .location(index)
                    .map_or((dir.to_path_buf(), 0), |(f, o)| (f.to_path_buf(), o));
                WalError::Corrupt {
                    file,
                    offset,
                    reason: Corruption::UndecodableRecord { index, error },
                }
            })?;
            records.push(record);
        }
        let restored = Restored {
            checkpoint,
            records,
        };
        Ok((WalStorage { wal, snapshots }, restored))
    }

    /// The log underneath.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// The snapshots underneath.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }
}

fn encode_snapshot(cut: u64, checkpoint: &DurableCheckpoint) -> Vec<u8> {
    let body = checkpoint.encode();
    let mut bytes = Vec::with_capacity(CUT_BYTES + body.len());
    bytes.extend_from_slice(&cut.to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

fn decode_snapshot(bytes: &[u8]) -> Option<(u64, DurableCheckpoint)> {
    let (cut, body) = bytes.split_first_chunk::<CUT_BYTES>()?;
    let checkpoint = DurableCheckpoint::decode(body).ok()?;
    Some((u64::from_le_bytes(*cut), checkpoint))
}

impl Storage for WalStorage {
    type Error = WalError;

    fn persist(&mut self, records: &[Record]) -> Result<(), WalError> {
        let payloads: Vec<Vec<u8>> = records.iter().map(encode_record).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        self.wal.append(&refs)
    }

    fn save_checkpoint(
        &mut self,
        checkpoint: &DurableCheckpoint,
        newer: usize,
    ) -> Result<(), WalError> {
        let cut = self.wal.next_index().saturating_sub(newer as u64);
        let seq = checkpoint.stable.as_ref().map_or(0, |s| s.seq.0);
        self.snapshots
            .save(seq, &encode_snapshot(cut, checkpoint))?;
        self.wal.truncate_before(cut)
    }
}
