//! `WalStorage`: records and checkpoints through a data directory, as a `bft_core::Storage`.

mod common;

use bft_core::{
    DurableCheckpoint, MessageKind, Record, SeqNum, SignedRecord, StableState, Storage, View,
    codec, testkit,
};
use bft_storage::{Corruption, RecordDecodeError, SnapshotDefect, Wal, WalError, WalStorage};
use bytes::Bytes;
use common::small_segments;
use std::time::Duration;

fn prepare(signer: u32, view: u64, seq: u64) -> SignedRecord {
    let digest = codec::decode(&[seq as u8 ^ 0x5a; 32]).unwrap();
    SignedRecord {
        kind: MessageKind::Prepare,
        view: View(view),
        seq: SeqNum(seq),
        digest,
        frame: testkit::prepare(signer, view, seq, digest),
    }
}

fn commit(signer: u32, view: u64, seq: u64) -> SignedRecord {
    let digest = codec::decode(&[seq as u8; 32]).unwrap();
    SignedRecord {
        kind: MessageKind::Commit,
        view: View(view),
        seq: SeqNum(seq),
        digest,
        frame: testkit::commit(signer, view, seq, digest),
    }
}

fn signed(record: SignedRecord) -> Record {
    Record::Signed(record)
}

#[test]
fn records_round_trip_through_the_disk_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    {
        let (mut storage, restored) = WalStorage::open(dir.path()).unwrap();
        assert_eq!(restored, Default::default());
        for seq in 1..=10 {
            // One persist call per group commit: several steps' records at once.
            let batch = vec![
                Record::Frame(testkit::prepare(
                    2,
                    0,
                    seq,
                    codec::decode(&[1; 32]).unwrap(),
                )),
                signed(prepare(1, 0, seq)),
                signed(commit(1, 0, seq)),
            ];
            storage.persist(&batch).unwrap();
            all.extend(batch);
        }
        storage.persist(&[]).unwrap();
        assert_eq!(storage.wal().next_index(), 30);
    }
    let (mut storage, restored) = WalStorage::open(dir.path()).unwrap();
    assert_eq!(restored.records, all);
    assert_eq!(restored.checkpoint, None);
    let extra = Record::Prepared {
        pre_prepare: Bytes::from_static(b"any frame"),
        prepares: vec![Bytes::from_static(b"another")],
    };
    storage.persist(std::slice::from_ref(&extra)).unwrap();
    drop(storage);
    all.push(extra);
    let (_, restored) = WalStorage::open(dir.path()).unwrap();
    assert_eq!(restored.records, all);
}

#[test]
fn records_a_real_cluster_persisted_round_trip() {
    // Run the core's in-memory cluster, then push each replica's persisted records through the
    // disk log, one persist call per step-sized chunk, and read them back.
    let mut cluster = testkit::Cluster::with_f(1, 2);
    let clients = [bft_core::ClientId(1), bft_core::ClientId(2)];
    let done = cluster.run_closed_loop(&clients, 20, Duration::from_secs(60), |c, i| {
        format!("op {} {i}", c.0).into_bytes()
    });
    assert_eq!(done, 40);
    for (i, memory) in cluster.storage.iter().enumerate() {
        assert!(!memory.records.is_empty(), "replica {i} persisted nothing");
        let dir = tempfile::tempdir().unwrap();
        let (mut storage, _) = WalStorage::open_with(dir.path(), small_segments(4096)).unwrap();
        if let Some(checkpoint) = &memory.checkpoint {
            storage.save_checkpoint(checkpoint, 0).unwrap();
        }
        for chunk in memory.records.chunks(3) {
            storage.persist(chunk).unwrap();
        }
        drop(storage);
        let (_, restored) = WalStorage::open(dir.path()).unwrap();
        assert_eq!(restored.records, memory.records, "replica {i}");
        assert_eq!(restored.checkpoint, memory.checkpoint, "replica {i}");
    }
}

#[test]
fn a_record_that_does_not_decode_is_corruption_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = WalStorage::open(dir.path()).unwrap();
        storage.persist(&[signed(prepare(1, 0, 1))]).unwrap();
    }
    {
        let (mut wal, _) = Wal::open(dir.path(), Default::default()).unwrap();
        wal.append(&[&[9, 1, 2, 3]]).unwrap();
    }
    let error = WalStorage::open(dir.path()).unwrap_err();
    let message = error.to_string();
    match error {
        WalError::Corrupt {
            file,
            offset,
            reason:
                Corruption::UndecodableRecord {
                    index: 1,
                    error: RecordDecodeError::UnknownVersion(9),
                },
        } => {
            assert_eq!(file, dir.path().join("wal-00000000000000000000.log"));
            assert!(offset > 0);
            assert!(
                message.contains(&format!("byte offset {offset}")),
                "{message}"
            );
        }
        other => panic!("expected an undecodable record, got {other}"),
    }
}

fn checkpoint_at(seq: u64) -> DurableCheckpoint {
    DurableCheckpoint {
        stable: Some(StableState {
            seq: SeqNum(seq),
            state: Bytes::from(format!("state at {seq}")),
            proof: vec![Bytes::from_static(b"vote")],
        }),
        records: vec![signed(prepare(2, 0, seq + 1))],
    }
}

#[test]
fn a_checkpoint_supersedes_the_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(600);
    let (mut storage, _) = WalStorage::open_with(dir.path(), options).unwrap();
    for seq in 1..=30 {
        storage.persist(&[signed(prepare(2, 0, seq))]).unwrap();
    }
    let segments_before = storage.wal().segment_paths().count();
    assert!(segments_before > 3);
    // The checkpoint covers every record but the last 2.
    storage.save_checkpoint(&checkpoint_at(28), 2).unwrap();
    assert!(storage.wal().segment_paths().count() < segments_before);
    storage.persist(&[signed(prepare(2, 0, 31))]).unwrap();
    drop(storage);
    let (mut storage, restored) = WalStorage::open_with(dir.path(), options).unwrap();
    assert_eq!(restored.checkpoint, Some(checkpoint_at(28)));
    assert!(storage.wal().first_index() <= 28);
    let seqs: Vec<u64> = restored
        .records
        .iter()
        .map(|r| r.as_signed().unwrap().seq.0)
        .collect();
    assert_eq!(seqs, vec![29, 30, 31]);
    // A later checkpoint replaces the earlier snapshot.
    storage.save_checkpoint(&checkpoint_at(31), 0).unwrap();
    let snapshots: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".snap")
        })
        .collect();
    assert_eq!(snapshots.len(), 1);
    drop(storage);
    let (_, restored) = WalStorage::open_with(dir.path(), options).unwrap();
    assert_eq!(restored.checkpoint, Some(checkpoint_at(31)));
    assert!(restored.records.is_empty());
}

#[test]
fn records_before_the_cut_left_in_a_segment_are_skipped() {
    // One large segment: the checkpoint cannot remove it, as after a crash between writing the
    // snapshot and removing segments.
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = WalStorage::open(dir.path()).unwrap();
    for seq in 1..=10 {
        storage.persist(&[signed(prepare(2, 0, seq))]).unwrap();
    }
    storage.save_checkpoint(&checkpoint_at(9), 1).unwrap();
    assert_eq!(storage.wal().first_index(), 0);
    drop(storage);
    let (_, restored) = WalStorage::open(dir.path()).unwrap();
    assert_eq!(restored.checkpoint, Some(checkpoint_at(9)));
    assert_eq!(restored.records, vec![signed(prepare(2, 0, 10))]);
}

#[test]
fn a_damaged_snapshot_stops_recovery_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = WalStorage::open(dir.path()).unwrap();
        storage.persist(&[signed(prepare(2, 0, 1))]).unwrap();
        storage.save_checkpoint(&checkpoint_at(8), 0).unwrap();
    }
    let path = dir
        .path()
        .join(bft_storage::snapshot::snapshot_file_name(8));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    match WalStorage::open(dir.path()).unwrap_err() {
        WalError::Corrupt {
            file,
            reason: Corruption::DamagedSnapshot { defect },
            ..
        } => {
            assert_eq!(file, path);
            assert!(matches!(defect, SnapshotDefect::ChecksumMismatch { .. }));
        }
        other => panic!("expected a damaged snapshot, got {other}"),
    }
}
