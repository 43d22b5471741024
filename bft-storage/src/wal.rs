//! The on-disk write-ahead log: a directory of checksummed segment files.
//!
//! # Files
//!
//! A segment is named `wal-{first_index:020}.log`, where `first_index` is the index of its first
//! record; records are numbered consecutively across segments from 0. Other files in the
//! directory (snapshots, for one) are left alone. Only the newest segment is written to; the
//! others are sealed: complete and fsynced before the next one was created.
//!
//! # Record format
//!
//! A segment is a sequence of records, nothing else (no file header), all integers little
//! endian:
//!
//! ```text
//! offset 0   magic   u32  = 0x4C415742 (the bytes "BWAL")
//! offset 4   len     u32  payload length in bytes
//! offset 8   crc32c  u32  CRC-32C (Castagnoli) of the 4 `len` bytes followed by the payload
//! offset 12  payload len bytes
//! ```
//!
//! # Writing: group commit
//!
//! [`Wal::append`] frames every payload it is given, writes them with one `write` and makes them
//! durable with one `fdatasync` ([`File::sync_data`]). That is the group commit: a driver that has
//! several steps' records pending passes them all in one call and pays for one fsync, and since
//! it sends nothing of those steps until the call returns, "persist, then send" is never
//! reordered. A batch always goes into one segment; the log rolls to a new segment before a batch
//! once the current one holds [`WalOptions::segment_bytes`]. The directory is fsynced whenever a
//! segment is created or removed.
//!
//! Any I/O error poisons the log: it refuses every later append with [`WalError::Poisoned`]. After
//! a failed write or fsync the file's state is unknown (and a retried fsync may report success
//! for data that never reached the disk), so the only safe move is to stop and reopen.
//!
//! # Reading: torn tails and corruption
//!
//! [`Wal::open`] reads every segment in order. A crash during an append can damage only the end
//! of the newest segment, since the append had not returned and nothing of it was sent. So a bad
//! record (incomplete header, short payload, wrong magic or checksum) in the newest segment with
//! no valid record anywhere after it is a torn tail: it and everything after it are cut off (the
//! file is truncated and fsynced), with a warning, and reported in
//! [`Recovered::truncated_tail`]. A bad record with a valid record after it, a bad record in a
//! sealed segment, or a segment that does not continue the previous one's indices is corruption:
//! [`WalError::Corrupt`] names the file and offset and the replica must not start.
//!
//! Limitation: the rule trusts that a filesystem writes back an unsynced append in order. If a
//! power loss leaves a hole inside an unsynced batch with a later record of the same batch
//! intact, the log is reported corrupt although nothing acknowledged was lost; this errs on the
//! side of stopping. Likewise a torn record whose partial payload happens to contain a complete,
//! checksummed record image is reported corrupt.
//!
//! Not handled here: two processes opening the same directory (the driver should hold one data
//! directory per replica and not start twice).

use crate::error::{Corruption, IoOp, WalError};
use crate::format::{self, Parsed};
use crate::{create_dir_durably, sync_dir};
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Tuning of a [`Wal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// The log rolls to a new segment before an append once the current one holds at least this
    /// many bytes (one batch may take a segment past it). Smaller segments let
    /// [`Wal::truncate_before`] free space sooner.
    pub segment_bytes: u64,
    /// The largest payload [`Wal::append`] accepts (at most `u32::MAX`, the format's limit).
    pub max_record_bytes: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 64 << 20,
        }
    }
}

/// What [`Wal::open`] found: every valid record, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The index of `records[0]` (or, with no records, of the next record to be appended).
    pub first_index: u64,
    /// The payloads; `records[i]` has index `first_index + i`.
    pub records: Vec<Bytes>,
    /// If a torn or corrupt tail was cut off: the segment and the offset it was truncated to.
    pub truncated_tail: Option<(PathBuf, u64)>,
    /// For [`Recovered::location`]: each segment's first index and path, and each record's offset.
    segments: Vec<(u64, PathBuf)>,
    offsets: Vec<u64>,
}

impl Recovered {
    /// The records with their indices.
    pub fn indexed(&self) -> impl Iterator<Item = (u64, &Bytes)> + '_ {
        (self.first_index..).zip(self.records.iter())
    }

    /// The segment and byte offset (of the record header) where record `index` was read.
    pub fn location(&self, index: u64) -> Option<(&Path, u64)> {
        let position = usize::try_from(index.checked_sub(self.first_index)?).ok()?;
        let offset = *self.offsets.get(position)?;
        let segment = self
            .segments
            .partition_point(|(first, _)| *first <= index)
            .checked_sub(1)?;
        Some((self.segments[segment].1.as_path(), offset))
    }
}

#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
}

/// The write-ahead log. See the module docs for the format and the crash rules.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Oldest first; the last one is active. Never empty.
    segments: Vec<Segment>,
    active: File,
    active_len: u64,
    next_index: u64,
    poisoned: Option<String>,
    #[cfg(test)]
    fault: Option<(IoOp, io::Error)>,
}

/// The file name of the segment whose first record has index `first_index`.
pub fn segment_file_name(first_index: u64) -> String {
    format!("wal-{first_index:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segments in `dir`, ordered by first index.
fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let entries = fs::read_dir(dir).map_err(|e| WalError::io(IoOp::ListDir, dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io(IoOp::ListDir, dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_index) = parse_segment_name(name) {
            segments.push(Segment {
                first_index,
                path: entry.path(),
            });
        } else if name.starts_with("wal-") {
            tracing::warn!(file = %entry.path().display(), "ignoring a file that is not a log segment");
        }
    }
    segments.sort_by_key(|s| s.first_index);
    Ok(segments)
}

impl Wal {
    /// Opens the log in `dir` (created if missing, and the creation fsynced), returning it ready to append and every valid
    /// record. Cuts off a torn tail (see the module docs); fails with [`WalError::Corrupt`] on
    /// anything a crash cannot explain.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        create_dir_durably(dir)?;
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            let path = dir.join(segment_file_name(0));
            File::create_new(&path).map_err(|e| WalError::io(IoOp::Create, &path, e))?;
            sync_dir(dir).map_err(|e| WalError::io(IoOp::SyncDir, dir, e))?;
            segments.push(Segment {
                first_index: 0,
                path,
            });
        }

        let first_index = segments[0].first_index;
        let mut recovered = Recovered {
            first_index,
            records: Vec::new(),
            truncated_tail: None,
            segments: Vec::new(),
            offsets: Vec::new(),
        };
        let mut expected = first_index;
        let last = segments.len() - 1;
        let mut active_len = 0;
        for (i, segment) in segments.iter().enumerate() {
            if segment.first_index != expected {
                return Err(WalError::Corrupt {
                    file: segment.path.clone(),
                    offset: 0,
                    reason: Corruption::IndexGap {
                        expected,
                        found: segment.first_index,
                    },
                });
            }
            recovered
                .segments
                .push((segment.first_index, segment.path.clone()));
            let (count, valid_len) = read_segment(&segment.path, i == last, &mut recovered)?;
            expected = expected
                .checked_add(count)
                .ok_or_else(|| WalError::Corrupt {
                    file: segment.path.clone(),
                    offset: 0,
                    reason: Corruption::IndexOverflow,
                })?;
            active_len = valid_len;
        }

        let active_segment = &segments[last];
        let active = OpenOptions::new()
            .append(true)
            .open(&active_segment.path)
            .map_err(|e| WalError::io(IoOp::Open, &active_segment.path, e))?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            options,
            segments,
            active,
            active_len,
            next_index: expected,
            poisoned: None,
            #[cfg(test)]
            fault: None,
        };
        Ok((wal, recovered))
    }

    /// Appends `payloads` as consecutive records and makes them durable with a single fsync
    /// before returning: the group commit of every record pending from any number of steps.
    /// Nothing of the batch may be sent before this returns `Ok`. An empty batch does nothing.
    ///
    /// Fails with [`WalError::RecordTooLarge`] (nothing written, the log stays usable), or with
    /// [`WalError::Io`], after which the log is poisoned.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<(), WalError> {
        self.check_poisoned()?;
        let max = self.options.max_record_bytes.min(u32::MAX as usize);
        if let Some(p) = payloads.iter().find(|p| p.len() > max) {
            return Err(WalError::RecordTooLarge { len: p.len(), max });
        }
        if payloads.is_empty() {
            return Ok(());
        }
        let Some(next_index) = self.next_index.checked_add(payloads.len() as u64) else {
            return Err(WalError::Corrupt {
                file: self.active_path().to_path_buf(),
                offset: self.active_len,
                reason: Corruption::IndexOverflow,
            });
        };
        if self.active_len >= self.options.segment_bytes && self.active_len > 0 {
            self.roll()?;
        }
        let total: usize = payloads.iter().map(|p| format::HEADER_LEN + p.len()).sum();
        let mut buf = Vec::with_capacity(total);
        for payload in payloads {
            format::encode_into(&mut buf, payload);
        }
        let path = self.active_path().to_path_buf();
        self.attempt(IoOp::Append, &path, |wal| wal.active.write_all(&buf))?;
        self.active_len += buf.len() as u64;
        self.attempt(IoOp::Sync, &path, |wal| wal.active.sync_data())?;
        self.next_index = next_index;
        Ok(())
    }

    /// Removes every whole segment whose records all have indices below `index` (garbage
    /// collection below a stable checkpoint). Records from `index` on are always kept; some
    /// below it may be kept too, since only whole segments go. If every record is below `index`,
    /// the log first rolls to a new, empty segment so that the old one can go.
    ///
    /// Segments are removed oldest first, so a crash part-way leaves a contiguous log.
    pub fn truncate_before(&mut self, index: u64) -> Result<(), WalError> {
        self.check_poisoned()?;
        let active_first = self.active_first_index();
        if self.next_index <= index && self.next_index > active_first {
            self.roll()?;
        }
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[1].first_index <= index {
            let path = self.segments[0].path.clone();
            self.attempt(IoOp::Remove, &path, |_| fs::remove_file(&path))?;
            self.segments.remove(0);
            removed = true;
        }
        if removed {
            let dir = self.dir.clone();
            self.attempt(IoOp::SyncDir, &dir, |_| sync_dir(&dir))?;
        }
        Ok(())
    }

    /// The index of the oldest record still in the log (the next index if it holds none).
    pub fn first_index(&self) -> u64 {
        self.segments[0].first_index
    }

    /// The index the next appended record will get.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment files, oldest first; the last is the one being appended to.
    pub fn segment_paths(&self) -> impl Iterator<Item = &Path> + '_ {
        self.segments.iter().map(|s| s.path.as_path())
    }

    /// True after an I/O error: every later append fails with [`WalError::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn active_path(&self) -> &Path {
        &self.segments[self.segments.len() - 1].path
    }

    fn active_first_index(&self) -> u64 {
        self.segments[self.segments.len() - 1].first_index
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(cause) => Err(WalError::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Starts a new, empty segment at the next index. The current one is already fsynced.
    fn roll(&mut self) -> Result<(), WalError> {
        let path = self.dir.join(segment_file_name(self.next_index));
        let file = self.attempt(IoOp::Create, &path, |_| {
            OpenOptions::new().append(true).create_new(true).open(&path)
        })?;
        let dir = self.dir.clone();
        self.attempt(IoOp::SyncDir, &dir, |_| sync_dir(&dir))?;
        self.active = file;
        self.active_len = 0;
        self.segments.push(Segment {
            first_index: self.next_index,
            path,
        });
        Ok(())
    }

    /// Runs one file operation; an error poisons the log.
    fn attempt<T>(
        &mut self,
        op: IoOp,
        file: &Path,
        f: impl FnOnce(&mut Self) -> io::Result<T>,
    ) -> Result<T, WalError> {
        #[cfg(test)]
        let result = match self.fault.take() {
            Some((at, error)) if at == op => Err(error),
            other => {
                self.fault = other;
                f(self)
            }
        };
        #[cfg(not(test))]
        let result = f(self);
        result.map_err(|source| {
            let error = WalError::io(op, file, source);
            tracing::error!(%error, "write-ahead log poisoned");
            self.poisoned = Some(error.to_string());
            error
        })
    }

    /// Makes the next operation `op` fail with `error` (tests of the failure paths).
    #[cfg(test)]
    pub(crate) fn inject_fault(&mut self, op: IoOp, error: io::Error) {
        self.fault = Some((op, error));
    }
}

/// Reads one segment into `recovered`, returning its record count and the length of its valid
/// part. Cuts a torn tail off the last segment; anything else bad is corruption.
fn read_segment(
    path: &Path,
    is_last: bool,
    recovered: &mut Recovered,
) -> Result<(u64, u64), WalError> {
    let buf = Bytes::from(fs::read(path).map_err(|e| WalError::io(IoOp::Read, path, e))?);
    let mut offset = 0;
    let mut count = 0;
    loop {
        match format::parse_at(&buf, offset) {
            Parsed::End => return Ok((count, offset as u64)),
            Parsed::Record { payload, next } => {
                recovered.records.push(buf.slice(payload));
                recovered.offsets.push(offset as u64);
                count += 1;
                offset = next;
            }
            Parsed::Bad(defect) => {
                let corrupt = |reason| WalError::Corrupt {
                    file: path.to_path_buf(),
                    offset: offset as u64,
                    reason,
                };
                if !is_last {
                    return Err(corrupt(Corruption::DamagedSealedSegment { defect }));
                }
                if let Some(next_valid) = format::next_valid_after(&buf, offset) {
                    return Err(corrupt(Corruption::DamagedRecord {
                        defect,
                        next_valid: next_valid as u64,
                    }));
                }
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    cut_bytes = buf.len() - offset,
                    %defect,
                    "write-ahead log: cutting off a torn record at the tail (a crash during an append)"
                );
                truncate_file(path, offset as u64)?;
                recovered.truncated_tail = Some((path.to_path_buf(), offset as u64));
                return Ok((count, offset as u64));
            }
        }
    }
}

fn truncate_file(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io(IoOp::Open, path, e))?;
    file.set_len(len)
        .map_err(|e| WalError::io(IoOp::Truncate, path, e))?;
    file.sync_all()
        .map_err(|e| WalError::io(IoOp::Sync, path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_full() -> io::Error {
        io::Error::from_raw_os_error(28)
    }

    #[test]
    fn a_failed_write_poisons_the_log_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        wal.append(&[b"one"]).unwrap();
        wal.inject_fault(IoOp::Append, disk_full());
        let error = wal.append(&[b"two"]).unwrap_err();
        assert!(error.is_disk_full());
        let message = error.to_string();
        let segment = dir.path().join(segment_file_name(0));
        assert!(
            message.starts_with(&format!(
                "disk full while appending to {}: ",
                segment.display()
            )),
            "{message}"
        );
        assert!(wal.is_poisoned());
        let refused = wal.append(&[b"three"]).unwrap_err();
        assert!(matches!(refused, WalError::Poisoned { .. }), "{refused}");
        assert!(refused.to_string().contains(&message), "{refused}");
        assert!(matches!(
            wal.truncate_before(1),
            Err(WalError::Poisoned { .. })
        ));
        drop(wal);
        let (_, recovered) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(recovered.records, vec![Bytes::from_static(b"one")]);
    }

    #[test]
    fn a_failed_fsync_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        wal.inject_fault(IoOp::Sync, io::Error::other("device gone"));
        let error = wal.append(&[b"one"]).unwrap_err();
        assert!(!error.is_disk_full());
        assert!(
            error.to_string().starts_with("I/O error while syncing "),
            "{error}"
        );
        assert!(error.to_string().ends_with(": device gone"), "{error}");
        assert!(matches!(
            wal.append(&[b"two"]),
            Err(WalError::Poisoned { .. })
        ));
    }

    #[test]
    fn a_failed_roll_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            segment_bytes: 1,
            ..WalOptions::default()
        };
        let (mut wal, _) = Wal::open(dir.path(), options).unwrap();
        wal.append(&[b"one"]).unwrap();
        wal.inject_fault(IoOp::Create, disk_full());
        let error = wal.append(&[b"two"]).unwrap_err();
        assert!(
            error.to_string().starts_with("disk full while creating "),
            "{error}"
        );
        assert!(matches!(
            wal.append(&[b"two"]),
            Err(WalError::Poisoned { .. })
        ));
    }

    #[test]
    fn an_oversized_record_is_refused_without_poisoning() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            max_record_bytes: 4,
            ..WalOptions::default()
        };
        let (mut wal, _) = Wal::open(dir.path(), options).unwrap();
        let error = wal.append(&[b"ok", b"too long"]).unwrap_err();
        assert!(matches!(error, WalError::RecordTooLarge { len: 8, max: 4 }));
        assert_eq!(wal.next_index(), 0);
        wal.append(&[b"ok"]).unwrap();
        assert_eq!(wal.next_index(), 1);
    }

    #[test]
    fn segment_names_parse_strictly() {
        assert_eq!(parse_segment_name(&segment_file_name(42)), Some(42));
        assert_eq!(
            parse_segment_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_name("wal-42.log"), None);
        assert_eq!(parse_segment_name("wal-99999999999999999999.log"), None);
        assert_eq!(parse_segment_name("wal-0000000000000000000+.log"), None);
        assert_eq!(
            parse_segment_name("snapshot-00000000000000000000.snap"),
            None
        );
    }
}
