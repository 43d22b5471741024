//! Checkpoint snapshots on real files.

use bft_storage::snapshot::snapshot_file_name;
use bft_storage::{Corruption, SnapshotDefect, SnapshotStore, WalError};
use std::fs;
use std::path::{Path, PathBuf};

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn save_then_latest_returns_the_newest_and_removes_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(store.latest().unwrap(), None);
    store.save(10, b"state at 10").unwrap();
    assert_eq!(store.latest().unwrap(), Some((10, b"state at 10".to_vec())));
    store.save(20, b"state at 20").unwrap();
    assert_eq!(store.latest().unwrap(), Some((20, b"state at 20".to_vec())));
    assert_eq!(names(dir.path()), vec![snapshot_file_name(20)]);
    // Same sequence number: replaced atomically by the rename.
    store.save(20, b"").unwrap();
    assert_eq!(store.latest().unwrap(), Some((20, Vec::new())));
    // An older one does not remove the newer.
    store.save(15, b"late").unwrap();
    assert_eq!(store.latest().unwrap(), Some((20, Vec::new())));
    // A reopened store sees the same.
    let store = SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(store.latest().unwrap(), Some((20, Vec::new())));
}

#[test]
fn large_snapshots_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(dir.path()).unwrap();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    store.save(u64::MAX, &body).unwrap();
    assert_eq!(store.latest().unwrap(), Some((u64::MAX, body)));
}

fn expect_corrupt(store: &SnapshotStore, file: &PathBuf) -> SnapshotDefect {
    let error = store.latest().unwrap_err();
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
    match error {
        WalError::Corrupt {
            file: named,
            reason: Corruption::DamagedSnapshot { defect },
            ..
        } => {
            assert_eq!(&named, file);
            defect
        }
        other => panic!("expected a damaged snapshot, got {other}"),
    }
}

#[test]
fn a_corrupt_newest_snapshot_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(dir.path()).unwrap();
    store.save(20, b"good state").unwrap();
    let good = dir.path().join(snapshot_file_name(20));
    let bytes = fs::read(&good).unwrap();

    // A newer file that is not valid is not skipped in favour of the older good one.
    let newer = dir.path().join(snapshot_file_name(30));
    fs::write(&newer, &bytes).unwrap();
    assert!(matches!(
        expect_corrupt(&store, &newer),
        SnapshotDefect::SeqMismatch {
            in_name: 30,
            in_header: 20
        }
    ));
    fs::remove_file(&newer).unwrap();

    // Every flipped byte and every truncation of the newest is detected.
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        fs::write(&good, &damaged).unwrap();
        expect_corrupt(&store, &good);
    }
    for cut in 0..bytes.len() {
        fs::write(&good, &bytes[..cut]).unwrap();
        expect_corrupt(&store, &good);
    }
    let mut longer = bytes.clone();
    longer.push(0);
    fs::write(&good, &longer).unwrap();
    assert!(matches!(
        expect_corrupt(&store, &good),
        SnapshotDefect::LengthMismatch { .. }
    ));
    fs::write(&good, &bytes).unwrap();
    assert_eq!(store.latest().unwrap(), Some((20, b"good state".to_vec())));
}

#[test]
fn a_leftover_temporary_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(dir.path()).unwrap();
    store.save(20, b"state").unwrap();
    // A crash during a later save leaves a temporary behind.
    let temporary = dir.path().join("snapshot-00000000000000000040.tmp");
    fs::write(&temporary, b"half written").unwrap();
    assert_eq!(store.latest().unwrap(), Some((20, b"state".to_vec())));
    let store = SnapshotStore::open(dir.path()).unwrap();
    assert!(!temporary.exists());
    assert_eq!(store.latest().unwrap(), Some((20, b"state".to_vec())));

    // A save also sweeps temporaries; unrelated files stay.
    fs::write(&temporary, b"half written").unwrap();
    fs::write(dir.path().join("wal-00000000000000000000.log"), b"").unwrap();
    let mut store = store;
    store.save(30, b"next").unwrap();
    assert_eq!(
        names(dir.path()),
        vec![
            snapshot_file_name(30),
            "wal-00000000000000000000.log".to_string()
        ]
    );
}
