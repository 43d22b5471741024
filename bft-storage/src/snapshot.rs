//! Checkpoint snapshots, each written atomically to its own file.
//!
//! # Files
//!
//! `snapshot-{seq:020}.snap`, in the same data directory as the log, holds the snapshot taken at
//! sequence number `seq`. Little endian:
//!
//! ```text
//! offset 0   magic   u32  = 0x314E5342 (the bytes "BSN1")
//! offset 4   seq     u64  the sequence number (must match the file name)
//! offset 12  len     u64  body length in bytes (must match the file's length)
//! offset 20  crc32c  u32  CRC-32C of the 16 bytes of `seq` and `len` followed by the body
//! offset 24  body    len bytes
//! ```
//!
//! [`SnapshotStore::save`] writes `snapshot-{seq:020}.tmp`, fsyncs it, renames it to the `.snap`
//! name (replacing a snapshot of the same sequence number atomically), fsyncs the directory, and
//! only then removes older snapshots. A crash at any point leaves either the old snapshot or the
//! new one complete, plus at most a `.tmp` file, which is ignored and removed by the next
//! [`SnapshotStore::open`] or save.
//!
//! [`SnapshotStore::latest`] returns the newest snapshot, and fails, naming the file, if that one
//! does not verify: falling back to an older snapshot silently would start the replica from a
//! state other than the one it last made durable, and the log below the newest checkpoint may
//! already be gone.

use crate::error::{Corruption, IoOp, SnapshotDefect, WalError};
use crate::{create_dir_durably, sync_dir};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `b"BSN1"` read as a little-endian `u32`.
const MAGIC: u32 = u32::from_le_bytes(*b"BSN1");
const HEADER_LEN: usize = 24;

/// The file name of the snapshot at sequence number `seq`.
pub fn snapshot_file_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.snap")
}

fn temporary_file_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.tmp")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Snapshot,
    Temporary,
}

fn parse_name(name: &str) -> Option<(u64, FileKind)> {
    let rest = name.strip_prefix("snapshot-")?;
    let (digits, kind) = if let Some(digits) = rest.strip_suffix(".snap") {
        (digits, FileKind::Snapshot)
    } else {
        (rest.strip_suffix(".tmp")?, FileKind::Temporary)
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, kind))
}

fn checksum(seq: u64, len: u64, body: &[u8]) -> u32 {
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&seq.to_le_bytes());
    header[8..].copy_from_slice(&len.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&header), body)
}

fn encode_header(seq: u64, body: &[u8]) -> [u8; HEADER_LEN] {
    let len = body.len() as u64;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..12].copy_from_slice(&seq.to_le_bytes());
    header[12..20].copy_from_slice(&len.to_le_bytes());
    header[20..].copy_from_slice(&checksum(seq, len, body).to_le_bytes());
    header
}

/// Checks a snapshot file's bytes; returns the body.
fn verify(seq: u64, bytes: &[u8]) -> Result<&[u8], SnapshotDefect> {
    let too_short = SnapshotDefect::TooShort { len: bytes.len() };
    let (header, body) = bytes.split_at_checked(HEADER_LEN).ok_or(too_short)?;
    let u32_at = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(too_short)
    };
    let u64_at = |at: usize| {
        header
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or(too_short)
    };
    let magic = u32_at(0)?;
    if magic != MAGIC {
        return Err(SnapshotDefect::BadMagic { found: magic });
    }
    let in_header = u64_at(4)?;
    if in_header != seq {
        return Err(SnapshotDefect::SeqMismatch {
            in_name: seq,
            in_header,
        });
    }
    let len = u64_at(12)?;
    if len != body.len() as u64 {
        return Err(SnapshotDefect::LengthMismatch {
            in_header: len,
            actual: body.len() as u64,
        });
    }
    let stored = u32_at(20)?;
    let computed = checksum(seq, len, body);
    if stored != computed {
        return Err(SnapshotDefect::ChecksumMismatch { stored, computed });
    }
    Ok(body)
}

/// Checkpoint snapshots in a data directory. See the module docs.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens the store in `dir` (created if missing), removing temporaries left by a crash
    /// during [`SnapshotStore::save`].
    pub fn open(dir: &Path) -> Result<SnapshotStore, WalError> {
        create_dir_durably(dir)?;
        let store = SnapshotStore {
            dir: dir.to_path_buf(),
        };
        store.remove_files(|_, kind| kind == FileKind::Temporary)?;
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `bytes` durable as the snapshot at `seq`, atomically replacing one of the same
    /// `seq`, then removes every older snapshot. Snapshots of higher sequence numbers are kept
    /// ([`SnapshotStore::latest`] still returns the highest).
    pub fn save(&mut self, seq: u64, bytes: &[u8]) -> Result<(), WalError> {
        let temporary = self.dir.join(temporary_file_name(seq));
        let path = self.dir.join(snapshot_file_name(seq));
        if let Err(error) = write_synced(&temporary, &encode_header(seq, bytes), bytes) {
            // Best effort: the next open or save removes it anyway.
            let _ = fs::remove_file(&temporary);
            return Err(error);
        }
        fs::rename(&temporary, &path).map_err(|e| WalError::io(IoOp::Rename, &temporary, e))?;
        sync_dir(&self.dir).map_err(|e| WalError::io(IoOp::SyncDir, &self.dir, e))?;
        self.remove_files(|other, kind| kind == FileKind::Temporary || other < seq)
    }

    /// The newest snapshot: its sequence number and body, or `None` if there is none. Fails with
    /// [`WalError::Corrupt`] naming the file if the newest does not verify.
    pub fn latest(&self) -> Result<Option<(u64, Vec<u8>)>, WalError> {
        let newest = self
            .list()?
            .into_iter()
            .filter(|(_, kind, _)| *kind == FileKind::Snapshot)
            .max_by_key(|(seq, _, _)| *seq);
        let Some((seq, _, path)) = newest else {
            return Ok(None);
        };
        let mut bytes = fs::read(&path).map_err(|e| WalError::io(IoOp::Read, &path, e))?;
        match verify(seq, &bytes) {
            Ok(_) => {
                bytes.drain(..HEADER_LEN);
                Ok(Some((seq, bytes)))
            }
            Err(defect) => Err(WalError::Corrupt {
                file: path,
                offset: 0,
                reason: Corruption::DamagedSnapshot { defect },
            }),
        }
    }

    fn list(&self) -> Result<Vec<(u64, FileKind, PathBuf)>, WalError> {
        let dir = &self.dir;
        let entries = fs::read_dir(dir).map_err(|e| WalError::io(IoOp::ListDir, dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| WalError::io(IoOp::ListDir, dir, e))?;
            let name = entry.file_name();
            if let Some((seq, kind)) = name.to_str().and_then(parse_name) {
                files.push((seq, kind, entry.path()));
            }
        }
        Ok(files)
    }

    /// Removes the files `doomed` picks, then fsyncs the directory if it removed any.
    fn remove_files(&self, doomed: impl Fn(u64, FileKind) -> bool) -> Result<(), WalError> {
        let mut removed = false;
        for (seq, kind, path) in self.list()? {
            if doomed(seq, kind) {
                fs::remove_file(&path).map_err(|e| WalError::io(IoOp::Remove, &path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir).map_err(|e| WalError::io(IoOp::SyncDir, &self.dir, e))?;
        }
        Ok(())
    }
}

fn write_synced(path: &Path, header: &[u8], body: &[u8]) -> Result<(), WalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| WalError::io(IoOp::Create, path, e))?;
    file.write_all(header)
        .and_then(|()| file.write_all(body))
        .map_err(|e| WalError::io(IoOp::Write, path, e))?;
    file.sync_all()
        .map_err(|e| WalError::io(IoOp::Sync, path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_what_it_writes_and_nothing_shorter() {
        let body = b"state";
        let mut bytes = encode_header(7, body).to_vec();
        bytes.extend_from_slice(body);
        assert_eq!(verify(7, &bytes), Ok(&body[..]));
        assert!(matches!(
            verify(8, &bytes),
            Err(SnapshotDefect::SeqMismatch { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(verify(7, &bytes[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn names_parse_strictly() {
        assert_eq!(
            parse_name(&snapshot_file_name(5)),
            Some((5, FileKind::Snapshot))
        );
        assert_eq!(
            parse_name(&temporary_file_name(5)),
            Some((5, FileKind::Temporary))
        );
        assert_eq!(parse_name("snapshot-5.snap"), None);
        assert_eq!(parse_name("wal-00000000000000000005.log"), None);
    }
}
