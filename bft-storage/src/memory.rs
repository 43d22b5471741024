//! An in-memory log for tests and the simulator, where a crash loses exactly what was not yet
//! synced.
//!
//! # How it maps onto the disk log
//!
//! | [`MemoryWal`]                         | [`crate::Wal`]                                     |
//! |---------------------------------------|----------------------------------------------------|
//! | [`MemoryWal::append`] (staged)        | the `write` inside `Wal::append`                   |
//! | [`MemoryWal::sync`] (durable)         | the `fdatasync` inside `Wal::append`               |
//! | `append` then `sync`                  | one `Wal::append` call                             |
//! | [`MemoryWal::crash`]                  | power loss, then `Wal::open`                       |
//! | [`MemoryWal::records`] after a crash  | [`crate::Recovered::records`]                      |
//! | [`MemoryWal::truncate_before`]        | [`crate::Wal::truncate_before`]                    |
//!
//! On disk, writing and fsyncing are one call, so a driver can never send between them. Here
//! they are two, so a simulator can crash a replica after its records were written but before
//! they were durable, and check that nothing of that step had been sent. A driver that sends
//! only after `sync` behaves exactly like one on the disk log; the [`bft_core::Storage`] impl does
//! both in `persist`.
//!
//! Differences a test may notice: a crash here drops every unsynced record, where a disk may
//! keep some (a torn tail cuts only the damaged part), which is the harsher of the two legal
//! outcomes; and `truncate_before` drops exactly the records below the index, where the disk log
//! drops whole segments only. Both keep every record at or above the index.

use crate::record::{RecordDecodeError, decode_record, encode_record};
use crate::storage::Restored;
use bft_core::{DurableCheckpoint, Record, Storage};
use bytes::Bytes;
use std::collections::VecDeque;

/// An in-memory write-ahead log. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryWal {
    first_index: u64,
    records: VecDeque<Bytes>,
    /// Records with indices below this are durable.
    synced: u64,
    /// The latest checkpoint saved through the [`Storage`] impl (saved durably at once, as
    /// `SnapshotStore::save` does).
    checkpoint: Option<DurableCheckpoint>,
}

impl MemoryWal {
    /// An empty log whose first record will have index 0.
    pub fn new() -> MemoryWal {
        MemoryWal::default()
    }

    /// Stages `payloads` as consecutive records. They are readable at once but lost by
    /// [`MemoryWal::crash`] until [`MemoryWal::sync`].
    pub fn append(&mut self, payloads: &[&[u8]]) {
        self.records
            .extend(payloads.iter().map(|p| Bytes::copy_from_slice(p)));
    }

    /// Makes every staged record durable (the disk log's fsync).
    pub fn sync(&mut self) {
        self.synced = self.next_index();
    }

    /// Loses every record that was appended but not synced, as a power loss would.
    pub fn crash(&mut self) {
        let keep = self.synced.saturating_sub(self.first_index);
        self.records
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
    }

    /// Drops the records with indices below `index` (synced or not).
    pub fn truncate_before(&mut self, index: u64) {
        let new_first = index.clamp(self.first_index, self.next_index());
        let drop = usize::try_from(new_first - self.first_index).unwrap_or(usize::MAX);
        self.records.drain(..drop.min(self.records.len()));
        self.first_index = new_first;
        self.synced = self.synced.max(new_first);
    }

    /// Every record in the log, staged or durable, with its index.
    pub fn records(&self) -> impl Iterator<Item = (u64, &Bytes)> + '_ {
        (self.first_index..).zip(self.records.iter())
    }

    /// The index of the oldest record (the next index if there is none).
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// The index the next appended record will get.
    pub fn next_index(&self) -> u64 {
        self.first_index + self.records.len() as u64
    }

    /// Records with indices below this are durable; the rest are staged.
    pub fn synced_index(&self) -> u64 {
        self.synced.max(self.first_index)
    }

    /// What a replica would read back after a restart (for logs filled through the [`Storage`]
    /// impl): the latest checkpoint and every record in the log.
    pub fn restored(&self) -> Result<Restored, RecordDecodeError> {
        Ok(Restored {
            checkpoint: self.checkpoint.clone(),
            records: self
                .records
                .iter()
                .map(|p| decode_record(p))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Appends and syncs every record of the call, like [`crate::WalStorage`] on disk; a checkpoint
/// replaces the previous one and truncates the log before the records it does not cover.
impl Storage for MemoryWal {
    type Error = std::convert::Infallible;

    fn persist(&mut self, records: &[Record]) -> Result<(), Self::Error> {
        let payloads: Vec<Vec<u8>> = records.iter().map(encode_record).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        self.append(&refs);
        self.sync();
        Ok(())
    }

    fn save_checkpoint(
        &mut self,
        checkpoint: &DurableCheckpoint,
        newer: usize,
    ) -> Result<(), Self::Error> {
        self.checkpoint = Some(checkpoint.clone());
        let cut = self.next_index().saturating_sub(newer as u64);
        self.truncate_before(cut);
        Ok(())
    }
}
