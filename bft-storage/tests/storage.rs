//! `WalStorage`: signed records through the disk log, as a `bft_core::Storage`.

mod common;

use bft_core::{MessageKind, SeqNum, SignedRecord, Storage, View, codec, testkit};
use bft_storage::{Corruption, RecordDecodeError, Wal, WalError, WalStorage};
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

#[test]
fn signed_records_round_trip_through_the_disk_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    {
        let (mut storage, recovered) = WalStorage::open(dir.path()).unwrap();
        assert!(recovered.is_empty());
        for seq in 1..=10 {
            // One persist call per group commit: several steps' records at once.
            let batch = vec![prepare(1, 0, seq), commit(1, 0, seq)];
            storage.persist(&batch).unwrap();
            all.extend(batch);
        }
        storage.persist(&[]).unwrap();
        assert_eq!(storage.wal().next_index(), 20);
    }
    let (mut storage, recovered) = WalStorage::open(dir.path()).unwrap();
    assert_eq!(recovered, all);
    let extra = SignedRecord {
        kind: MessageKind::ViewChange,
        view: View(1),
        seq: SeqNum(0),
        digest: codec::decode(&[0; 32]).unwrap(),
        frame: Bytes::from_static(b"any frame"),
    };
    storage.persist(std::slice::from_ref(&extra)).unwrap();
    drop(storage);
    all.push(extra);
    let (_, recovered) = WalStorage::open(dir.path()).unwrap();
    assert_eq!(recovered, all);
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
        for chunk in memory.records.chunks(3) {
            storage.persist(chunk).unwrap();
        }
        drop(storage);
        let (_, recovered) = WalStorage::open(dir.path()).unwrap();
        assert_eq!(recovered, memory.records, "replica {i}");
    }
}

#[test]
fn a_record_that_does_not_decode_is_corruption_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = WalStorage::open(dir.path()).unwrap();
        storage.persist(&[prepare(1, 0, 1)]).unwrap();
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

#[test]
fn discarding_an_obsolete_prefix_keeps_every_needed_record() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(600);
    let (mut storage, _) = WalStorage::open_with(dir.path(), options).unwrap();
    for seq in 1..=30 {
        storage.persist(&[prepare(2, 0, seq)]).unwrap();
    }
    let segments_before = storage.wal().segment_paths().count();
    assert!(segments_before > 3);
    // Stable checkpoint at 20: normal-case records at or below it are obsolete.
    storage
        .discard_obsolete_prefix(|r| r.seq <= SeqNum(20))
        .unwrap();
    assert!(storage.wal().segment_paths().count() < segments_before);
    let first_live = storage.live_records().next().unwrap().index;
    assert_eq!(first_live, storage.wal().first_index());
    drop(storage);
    let (storage, recovered) = WalStorage::open_with(dir.path(), options).unwrap();
    let seqs: Vec<u64> = recovered.iter().map(|r| r.seq.0).collect();
    assert!(seqs.first().unwrap() > &1);
    assert!(seqs.ends_with(&(21..=30).collect::<Vec<_>>()), "{seqs:?}");
    assert_eq!(storage.live_records().count(), recovered.len());
}
