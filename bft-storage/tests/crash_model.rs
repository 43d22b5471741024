//! Property: under any sequence of appends, clean reopens, crashes during an append (a torn last
//! batch, or garbage where a batch was being written) and garbage collection, the log never
//! returns a record that was not appended, returns each at the index it was appended at, and
//! returns every record appended before the last successful append (at or above the collection
//! floor). Checked on the disk log and on the in-memory log.

mod common;

use bft_storage::{MemoryWal, Wal, WalOptions};
use common::{HEADER, segments};
use proptest::prelude::*;
use proptest::sample::Index;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
enum Op {
    /// One group commit.
    Append(Vec<Vec<u8>>),
    /// Close and reopen.
    Reopen,
    /// A crash during the last append, if the last operation was one: its bytes are cut short
    /// (at least one byte lost), then the log is reopened.
    TearLastAppend(Index),
    /// A crash while an append that never returned was writing: garbage at the end of the active
    /// segment, then the log is reopened.
    Garbage(Vec<u8>),
    /// Garbage collection below an index (relative to the log's size).
    TruncateBefore(Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4).prop_map(Op::Append),
        1 => Just(Op::Reopen),
        2 => any::<Index>().prop_map(Op::TearLastAppend),
        1 => prop::collection::vec(any::<u8>(), 1..40).prop_map(Op::Garbage),
        1 => any::<Index>().prop_map(Op::TruncateBefore),
    ]
}

/// Where the last append's bytes are, if the last operation was an append.
struct LastAppend {
    path: PathBuf,
    start: u64,
    end: u64,
    first_index: u64,
}

struct Model {
    /// `appended[i]` is the payload last appended at index `i`.
    appended: Vec<Vec<u8>>,
    /// Every index at or above this must survive (garbage collection may drop those below).
    floor: u64,
}

impl Model {
    /// Checks what a reopen returned. Records at indices `>= may_lose_from` may be missing (a
    /// torn last batch), but only as a suffix; the model then forgets them.
    fn check(&mut self, recovered: &bft_storage::Recovered, may_lose_from: u64) {
        let next = recovered.first_index + recovered.records.len() as u64;
        assert!(
            next <= self.appended.len() as u64,
            "more records than appended"
        );
        assert!(
            recovered.first_index <= self.floor.min(next),
            "garbage collection removed records at or above {}",
            self.floor
        );
        for (index, payload) in recovered.indexed() {
            assert_eq!(
                payload.as_ref(),
                &self.appended[index as usize][..],
                "record {index} differs from what was appended"
            );
        }
        let required_end = may_lose_from.min(self.appended.len() as u64);
        for index in self.floor..required_end {
            assert!(
                index >= recovered.first_index && index < next,
                "record {index} was lost (log holds {}..{next})",
                recovered.first_index
            );
        }
        self.appended.truncate(next as usize);
    }
}

fn open(dir: &Path, options: WalOptions) -> (Wal, bft_storage::Recovered) {
    Wal::open(dir, options).unwrap_or_else(|e| panic!("reopen failed: {e}"))
}

fn run_disk(ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_bytes: 96,
        ..WalOptions::default()
    };
    let (mut wal, _) = open(dir.path(), options);
    let mut model = Model {
        appended: Vec::new(),
        floor: 0,
    };
    let mut last: Option<LastAppend> = None;
    for op in ops {
        let this_last = match op {
            Op::Append(batch) => {
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                let first_index = wal.next_index();
                wal.append(&refs).unwrap();
                model.appended.extend(batch.iter().cloned());
                let path = wal.segment_paths().last().unwrap().to_path_buf();
                let end = fs::metadata(&path).unwrap().len();
                let bytes: u64 = batch.iter().map(|p| HEADER + p.len() as u64).sum();
                Some(LastAppend {
                    path,
                    start: end - bytes,
                    end,
                    first_index,
                })
            }
            Op::Reopen => {
                drop(wal);
                let recovered;
                (wal, recovered) = open(dir.path(), options);
                assert_eq!(recovered.truncated_tail, None);
                model.check(&recovered, u64::MAX);
                None
            }
            Op::TearLastAppend(at) => {
                if let Some(last) = &last {
                    drop(wal);
                    let cut = last.start + at.index((last.end - last.start) as usize) as u64;
                    let file = OpenOptions::new().write(true).open(&last.path).unwrap();
                    file.set_len(cut).unwrap();
                    drop(file);
                    let recovered;
                    (wal, recovered) = open(dir.path(), options);
                    model.check(&recovered, last.first_index);
                }
                None
            }
            Op::Garbage(bytes) => {
                drop(wal);
                let path = segments(dir.path()).pop().unwrap();
                let before = fs::metadata(&path).unwrap().len();
                OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap()
                    .write_all(bytes)
                    .unwrap();
                let recovered;
                (wal, recovered) = open(dir.path(), options);
                assert_eq!(recovered.truncated_tail, Some((path, before)));
                model.check(&recovered, u64::MAX);
                None
            }
            Op::TruncateBefore(at) => {
                let index = at.index(model.appended.len() + 2) as u64;
                wal.truncate_before(index).unwrap();
                model.floor = model.floor.max(index);
                assert!(wal.first_index() <= model.floor.min(wal.next_index()));
                None
            }
        };
        last = this_last;
        assert_eq!(wal.next_index(), model.appended.len() as u64);
    }
    drop(wal);
    let (_, recovered) = open(dir.path(), options);
    model.check(&recovered, u64::MAX);
}

fn run_memory(ops: &[Op]) {
    let mut wal = MemoryWal::new();
    let mut model = Model {
        appended: Vec::new(),
        floor: 0,
    };
    let recovered = |wal: &MemoryWal| {
        let records: Vec<_> = wal.records().map(|(_, b)| b.clone()).collect();
        (wal.first_index(), records)
    };
    for op in ops {
        match op {
            Op::Append(batch) => {
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                wal.append(&refs);
                model.appended.extend(batch.iter().cloned());
                wal.sync();
            }
            // A crash between staging and syncing: the batch is lost whole.
            Op::TearLastAppend(_) | Op::Garbage(_) => {
                let first_index = wal.next_index();
                wal.append(&[b"never synced"]);
                wal.crash();
                assert_eq!(wal.next_index(), first_index);
            }
            Op::Reopen => wal.crash(),
            Op::TruncateBefore(at) => {
                let index = at.index(model.appended.len() + 2) as u64;
                wal.truncate_before(index);
                model.floor = model.floor.max(index);
            }
        }
        let (first, records) = recovered(&wal);
        for (i, payload) in (first..).zip(&records) {
            assert_eq!(payload.as_ref(), &model.appended[i as usize][..]);
        }
        let next = first + records.len() as u64;
        assert_eq!(next, model.appended.len() as u64);
        assert!(first <= model.floor.min(next));
    }
}

proptest! {
    // Fixed seed and no failure files: the same cases on every run (a failure prints the
    // minimal sequence of operations).
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0062_6674_2d77_616c),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn disk_log_survives_crashes(ops in prop::collection::vec(op(), 1..40)) {
        run_disk(&ops);
    }

    #[test]
    fn memory_log_survives_crashes(ops in prop::collection::vec(op(), 1..60)) {
        run_memory(&ops);
    }
}
