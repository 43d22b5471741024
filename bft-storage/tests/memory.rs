//! The in-memory log: a crash loses exactly what was not synced.

use bft_core::{MessageKind, Record, SeqNum, SignedRecord, Storage, View};
use bft_storage::MemoryWal;
use bytes::Bytes;

fn contents(wal: &MemoryWal) -> Vec<(u64, Vec<u8>)> {
    wal.records().map(|(i, b)| (i, b.to_vec())).collect()
}

#[test]
fn crash_drops_unsynced_records_only() {
    let mut wal = MemoryWal::new();
    wal.append(&[b"a", b"b"]);
    wal.sync();
    wal.append(&[b"c"]);
    assert_eq!(wal.next_index(), 3);
    assert_eq!(wal.synced_index(), 2);
    // Staged records are readable before the crash...
    assert_eq!(contents(&wal).len(), 3);
    wal.crash();
    // ...and gone after it; the synced ones stay.
    assert_eq!(contents(&wal), vec![(0, b"a".to_vec()), (1, b"b".to_vec())]);
    assert_eq!(wal.next_index(), 2);
    wal.append(&[b"d"]);
    wal.sync();
    wal.crash();
    wal.crash();
    assert_eq!(
        contents(&wal),
        vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"d".to_vec())]
    );
}

#[test]
fn truncate_before_drops_records_below_the_index() {
    let mut wal = MemoryWal::new();
    wal.append(&[b"0", b"1", b"2", b"3"]);
    wal.sync();
    wal.append(&[b"4"]);
    wal.truncate_before(2);
    assert_eq!(wal.first_index(), 2);
    assert_eq!(wal.records().map(|(i, _)| i).collect::<Vec<_>>(), [2, 3, 4]);
    wal.crash();
    assert_eq!(wal.records().map(|(i, _)| i).collect::<Vec<_>>(), [2, 3]);
    // Past the end: everything goes, indices continue.
    wal.truncate_before(100);
    assert_eq!(wal.first_index(), 4);
    assert_eq!(wal.next_index(), 4);
    wal.append(&[b"4"]);
    wal.crash();
    assert_eq!(wal.next_index(), 4);
}

#[test]
fn storage_persists_durably_and_reads_back() {
    let record = |seq: u64| {
        Record::Signed(SignedRecord {
            kind: MessageKind::Commit,
            view: View(1),
            seq: SeqNum(seq),
            digest: bft_core::codec::decode(&[seq as u8; 32]).unwrap(),
            frame: Bytes::from(vec![seq as u8; 10]),
        })
    };
    let mut wal = MemoryWal::new();
    let records: Vec<Record> = (1..=3).map(record).collect();
    wal.persist(&records).unwrap();
    wal.crash();
    assert_eq!(wal.restored().unwrap().records, records);
}
