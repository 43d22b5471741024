//! [`WalStorage`]: the disk log as a [`bft_core::Storage`].

use crate::error::{Corruption, WalError};
use crate::record::{decode_record, encode_record};
use crate::wal::{Wal, WalOptions};
use bft_core::{MessageKind, SeqNum, SignedRecord, Storage, View};
use std::collections::VecDeque;
use std::path::Path;

/// What [`WalStorage`] remembers of each record in its log, for
/// [`WalStorage::discard_obsolete_prefix`] to decide what may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSummary {
    /// The record's index in the log.
    pub index: u64,
    /// The message kind.
    pub kind: MessageKind,
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNum,
}

impl RecordSummary {
    fn new(index: u64, record: &SignedRecord) -> RecordSummary {
        RecordSummary {
            index,
            kind: record.kind,
            view: record.view,
            seq: record.seq,
        }
    }
}

/// A replica's signed records in a [`Wal`]: [`Storage::persist`] appends every record of the call
/// as one group-committed batch (one fsync), and [`WalStorage::open`] reads them back.
///
/// Each `persist` call costs one fsync however many records it carries. To group-commit several
/// steps, their records must reach one call, concatenated in step order, with none of their
/// frames sent until it returns. `Actions::persist_then_send` takes one step's actions at a
/// time, so that needs a way in bft-core to merge the actions of several steps first.
#[derive(Debug)]
pub struct WalStorage {
    wal: Wal,
    /// One summary per record still in the log, oldest first.
    live: VecDeque<RecordSummary>,
}

impl WalStorage {
    /// Opens the log in `dir` with default [`WalOptions`] and decodes every record in it.
    pub fn open(dir: &Path) -> Result<(WalStorage, Vec<SignedRecord>), WalError> {
        WalStorage::open_with(dir, WalOptions::default())
    }

    /// Opens the log in `dir` and decodes every record in it, in the order they were persisted.
    /// A record that passes its checksum but does not decode is [`WalError::Corrupt`], with its
    /// file and offset.
    pub fn open_with(
        dir: &Path,
        options: WalOptions,
    ) -> Result<(WalStorage, Vec<SignedRecord>), WalError> {
        let (wal, recovered) = Wal::open(dir, options)?;
        let mut records = Vec::with_capacity(recovered.records.len());
        let mut live = VecDeque::with_capacity(recovered.records.len());
        for (index, payload) in recovered.indexed() {
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
            live.push_back(RecordSummary::new(index, &record));
            records.push(record);
        }
        Ok((WalStorage { wal, live }, records))
    }

    /// The log underneath.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Summaries of the records still in the log, oldest first.
    pub fn live_records(&self) -> impl Iterator<Item = &RecordSummary> + '_ {
        self.live.iter()
    }

    /// Garbage collection: removes the longest prefix of the log whose records `obsolete` accepts
    /// (whole segments only, see [`Wal::truncate_before`]); the first record it rejects, and
    /// everything after it, stays.
    ///
    /// The policy is the caller's. Below a stable checkpoint at `h`, normal-case records
    /// (pre-prepare, prepare, commit, checkpoint) with `seq <= h` are obsolete. View-change and
    /// new-view records carry the stable checkpoint as their `seq`, so a predicate on `seq`
    /// alone would drop the latest view change a replica signed; keep those of the current view
    /// at least. A long-lived record at the front holds everything after it: re-persist it before
    /// discarding if that matters.
    pub fn discard_obsolete_prefix(
        &mut self,
        obsolete: impl Fn(&RecordSummary) -> bool,
    ) -> Result<(), WalError> {
        let cut = self
            .live
            .iter()
            .find(|r| !obsolete(r))
            .map_or(self.wal.next_index(), |r| r.index);
        self.wal.truncate_before(cut)?;
        let first = self.wal.first_index();
        while self.live.front().is_some_and(|r| r.index < first) {
            self.live.pop_front();
        }
        Ok(())
    }
}

impl Storage for WalStorage {
    type Error = WalError;

    fn persist(&mut self, records: &[SignedRecord]) -> Result<(), WalError> {
        let payloads: Vec<Vec<u8>> = records.iter().map(encode_record).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let first = self.wal.next_index();
        self.wal.append(&refs)?;
        self.live.extend(
            (first..)
                .zip(records)
                .map(|(index, record)| RecordSummary::new(index, record)),
        );
        Ok(())
    }
}
