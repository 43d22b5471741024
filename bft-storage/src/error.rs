//! The one error type of this crate's log and snapshot store, and its parts.

use crate::record::RecordDecodeError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a storage operation failed. Every variant names the file involved, so an operator can act
/// on the message alone.
///
/// A replica that gets one of these from [`crate::Wal::append`] (through
/// [`bft_core::Storage::persist`]) must stop: nothing of the failed step may be sent, and the log
/// refuses every later append ([`WalError::Poisoned`]).
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The operating system refused a file operation (a full disk, a failed device, missing
    /// permissions).
    #[error("{}", describe_io(file, *op, source))]
    Io {
        /// The file or directory operated on.
        file: PathBuf,
        /// What was being done.
        op: IoOp,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Stored data failed its checks in a way a crash cannot explain. The replica must not start
    /// from it: an operator has to look (restore the file, or wipe this replica and let it
    /// catch up by state transfer).
    #[error(
        "corrupt data in {} at byte offset {offset}: {reason}; refusing to start from a possibly \
         wrong state",
        file.display()
    )]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Where in the file the damage starts.
        offset: u64,
        /// What is wrong.
        reason: Corruption,
    },
    /// A record is larger than [`crate::WalOptions::max_record_bytes`]. Nothing was written and
    /// the log stays usable.
    #[error("a record of {len} bytes exceeds the write-ahead log's limit of {max} bytes")]
    RecordTooLarge {
        /// The record's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An earlier I/O error left the log in an unknown state, so it refuses to append anything
    /// (a retried fsync can report success without having written the data). Restart the replica.
    #[error("write-ahead log refuses appends after an earlier failure: {cause}")]
    Poisoned {
        /// The message of the error that poisoned the log.
        cause: String,
    },
}

/// The file operation that failed, for [`WalError::Io`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Creating the data directory.
    CreateDir,
    /// Listing the data directory.
    ListDir,
    /// Fsyncing the data directory after creating, renaming or removing files in it.
    SyncDir,
    /// Opening a file.
    Open,
    /// Creating a file.
    Create,
    /// Reading a file.
    Read,
    /// Writing records to a log segment.
    Append,
    /// Writing a file other than a log segment.
    Write,
    /// Fsyncing (fdatasync) a file.
    Sync,
    /// Cutting a torn tail off a log segment.
    Truncate,
    /// Renaming a file.
    Rename,
    /// Removing a file.
    Remove,
}

impl IoOp {
    fn verb(self) -> &'static str {
        match self {
            IoOp::CreateDir => "creating directory",
            IoOp::ListDir => "listing directory",
            IoOp::SyncDir => "syncing directory",
            IoOp::Open => "opening",
            IoOp::Create => "creating",
            IoOp::Read => "reading",
            IoOp::Append => "appending to",
            IoOp::Write => "writing",
            IoOp::Sync => "syncing",
            IoOp::Truncate => "truncating",
            IoOp::Rename => "renaming",
            IoOp::Remove => "removing",
        }
    }
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// ENOSPC on Linux and the BSDs; `ErrorKind::StorageFull` covers it where std maps it.
const ENOSPC: i32 = 28;

fn is_disk_full(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull
        || error.kind() == io::ErrorKind::QuotaExceeded
        || error.raw_os_error() == Some(ENOSPC)
}

fn describe_io(file: &Path, op: IoOp, source: &io::Error) -> String {
    let what = if is_disk_full(source) {
        "disk full"
    } else {
        "I/O error"
    };
    format!("{what} while {op} {}: {source}", file.display())
}

impl WalError {
    pub(crate) fn io(op: IoOp, file: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io {
            file: file.into(),
            op,
            source,
        }
    }

    /// True if this is an I/O error caused by a full disk or an exceeded quota.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if is_disk_full(source))
    }
}

/// What is wrong with corrupt stored data, for [`WalError::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// A damaged log record with a valid record after it: a crash during an append damages only
    /// the end of the newest segment, so this is not a torn write.
    #[error("{defect}, yet a valid record follows at byte offset {next_valid}")]
    DamagedRecord {
        /// What is wrong with the record.
        defect: RecordDefect,
        /// The offset of the next valid record in the same file.
        next_valid: u64,
    },
    /// A damaged log record in a segment that is not the newest. Such a segment was complete and
    /// fsynced before the next one was created.
    #[error("{defect} in a sealed segment (not the newest)")]
    DamagedSealedSegment {
        /// What is wrong with the record.
        defect: RecordDefect,
    },
    /// A segment does not continue where the one before it ends: a segment is missing, or one
    /// was altered.
    #[error("segment starts at record index {found}, but the records before it end at {expected}")]
    IndexGap {
        /// The index the segment should start at.
        expected: u64,
        /// The index in its name.
        found: u64,
    },
    /// A segment's name and record count take the record index past `u64::MAX`.
    #[error("record indices overflow")]
    IndexOverflow,
    /// A record passed its checksum but could not be decoded as a signed record.
    #[error("record {index} cannot be decoded: {error}")]
    UndecodableRecord {
        /// The record's index in the log.
        index: u64,
        /// Why decoding failed.
        error: RecordDecodeError,
    },
    /// The newest snapshot failed its checks.
    #[error("snapshot {defect}")]
    DamagedSnapshot {
        /// What is wrong with it.
        defect: SnapshotDefect,
    },
}

/// What is wrong with one log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordDefect {
    /// Fewer bytes remain than a record header takes.
    #[error("incomplete record header ({available} of 12 bytes)")]
    TruncatedHeader {
        /// Bytes left in the file.
        available: usize,
    },
    /// The header does not start with the record magic.
    #[error("bad record magic {found:#010x}")]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// The payload is cut short.
    #[error("record of {len} payload bytes has only {available}")]
    TruncatedPayload {
        /// The length in the header.
        len: u32,
        /// Payload bytes left in the file.
        available: usize,
    },
    /// The checksum does not match the length and payload.
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        /// The stored checksum.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// The checksum matches but the body is not a checkpoint this build reads.
    #[error("its body does not decode as a checkpoint")]
    Undecodable,
}

/// What is wrong with a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotDefect {
    /// The file is shorter than a snapshot header.
    #[error("file of {len} bytes is shorter than its header")]
    TooShort {
        /// The file's length.
        len: usize,
    },
    /// The header does not start with the snapshot magic.
    #[error("has bad magic {found:#010x}")]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// The sequence number in the header differs from the one in the file name.
    #[error("header is for sequence number {in_header}, its name for {in_name}")]
    SeqMismatch {
        /// From the file name.
        in_name: u64,
        /// From the header.
        in_header: u64,
    },
    /// The body is not as long as the header says.
    #[error("header says {in_header} body bytes, the file has {actual}")]
    LengthMismatch {
        /// From the header.
        in_header: u64,
        /// In the file.
        actual: u64,
    },
    /// The checksum does not match.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        /// The stored checksum.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// The checksum matches but the body is not a checkpoint this build reads.
    #[error("its body does not decode as a checkpoint")]
    Undecodable,
}
