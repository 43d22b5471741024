//! The disk log on real files: round trips, torn tails, corruption, garbage collection.

mod common;

use bft_storage::wal::segment_file_name;
use bft_storage::{Corruption, WalError, WalOptions};
use common::{HEADER, append_each, noise, open, payload, plain, segments, small_segments};
use std::fs;
use std::path::Path;

fn expected(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(payload).collect()
}

#[test]
fn records_round_trip_across_segment_rolls_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(100);
    {
        let (mut wal, recovered) = open(dir.path(), options);
        assert_eq!(recovered.first_index, 0);
        assert!(recovered.records.is_empty());
        append_each(&mut wal, 0..50);
        // A group commit of several records: one batch, one segment.
        let batch: Vec<Vec<u8>> = (50..60).map(payload).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        wal.append(&refs).unwrap();
        wal.append(&[]).unwrap();
        assert_eq!(wal.next_index(), 60);
    }
    assert!(segments(dir.path()).len() > 5, "the log should have rolled");
    let (mut wal, recovered) = open(dir.path(), options);
    assert_eq!(recovered.truncated_tail, None);
    assert_eq!(recovered.first_index, 0);
    assert_eq!(plain(&recovered), expected(0..60));
    let indices: Vec<u64> = recovered.indexed().map(|(i, _)| i).collect();
    assert_eq!(indices, (0..60).collect::<Vec<_>>());
    // Every record can be located, in its segment.
    for i in 0..60 {
        let (file, offset) = recovered.location(i).unwrap();
        let bytes = fs::read(file).unwrap();
        let at = offset as usize + HEADER as usize;
        assert_eq!(&bytes[at..at + payload(i).len()], &payload(i)[..]);
    }
    assert_eq!(recovered.location(60), None);
    // Appending after a reopen continues the indices.
    append_each(&mut wal, 60..70);
    drop(wal);
    let (_, recovered) = open(dir.path(), options);
    assert_eq!(plain(&recovered), expected(0..70));
}

#[test]
fn empty_payloads_and_an_empty_directory_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("not/yet/there");
    let (mut wal, _) = open(&data, WalOptions::default());
    wal.append(&[b"", b"x", b""]).unwrap();
    drop(wal);
    let (_, recovered) = open(&data, WalOptions::default());
    assert_eq!(plain(&recovered), vec![vec![], b"x".to_vec(), vec![]]);
}

/// Writes records 0..5 (one segment), returning the segment's bytes and the offset where the
/// last record starts.
fn five_records(dir: &Path) -> (Vec<u8>, u64) {
    let (mut wal, _) = open(dir, WalOptions::default());
    append_each(&mut wal, 0..5);
    drop(wal);
    let bytes = fs::read(dir.join(segment_file_name(0))).unwrap();
    let last_start = bytes.len() as u64 - HEADER - payload(4).len() as u64;
    (bytes, last_start)
}

#[test]
fn a_tail_cut_at_every_offset_inside_the_last_record_is_cut_off() {
    let source = tempfile::tempdir().unwrap();
    let (bytes, last_start) = five_records(source.path());
    for cut in last_start + 1..bytes.len() as u64 {
        let dir = tempfile::tempdir().unwrap();
        let segment = dir.path().join(segment_file_name(0));
        fs::write(&segment, &bytes[..cut as usize]).unwrap();
        let (mut wal, recovered) = open(dir.path(), WalOptions::default());
        assert_eq!(plain(&recovered), expected(0..4), "cut at {cut}");
        assert_eq!(
            recovered.truncated_tail,
            Some((segment.clone(), last_start)),
            "cut at {cut}"
        );
        assert_eq!(fs::metadata(&segment).unwrap().len(), last_start);
        wal.append(&[b"after"]).unwrap();
        drop(wal);
        let (_, recovered) = open(dir.path(), WalOptions::default());
        let mut want = expected(0..4);
        want.push(b"after".to_vec());
        assert_eq!(plain(&recovered), want, "cut at {cut}");
        assert_eq!(recovered.truncated_tail, None);
    }
}

#[test]
fn a_tail_cut_at_a_record_boundary_is_not_torn() {
    let source = tempfile::tempdir().unwrap();
    let (bytes, last_start) = five_records(source.path());
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(segment_file_name(0)),
        &bytes[..last_start as usize],
    )
    .unwrap();
    let (_, recovered) = open(dir.path(), WalOptions::default());
    assert_eq!(plain(&recovered), expected(0..4));
    assert_eq!(recovered.truncated_tail, None);
}

#[test]
fn a_flipped_byte_in_the_middle_is_corruption_naming_file_and_offset() {
    let source = tempfile::tempdir().unwrap();
    let (bytes, _) = five_records(source.path());
    let record_2 = (0..2)
        .map(|i| HEADER + payload(i).len() as u64)
        .sum::<u64>();
    let record_3 = record_2 + HEADER + payload(2).len() as u64;
    for at in record_2..record_3 {
        let dir = tempfile::tempdir().unwrap();
        let segment = dir.path().join(segment_file_name(0));
        let mut damaged = bytes.clone();
        damaged[at as usize] ^= 0x40;
        fs::write(&segment, &damaged).unwrap();
        let error = bft_storage::Wal::open(dir.path(), WalOptions::default()).unwrap_err();
        match &error {
            WalError::Corrupt {
                file,
                offset,
                reason: Corruption::DamagedRecord { next_valid, .. },
            } => {
                assert_eq!(file, &segment);
                assert_eq!(*offset, record_2, "flip at {at}");
                assert_eq!(*next_valid, record_3, "flip at {at}");
            }
            other => panic!("flip at {at}: expected corruption, got {other}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&segment.display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("byte offset {record_2}")),
            "{message}"
        );
        // Nothing was truncated: the operator gets the file as it was.
        assert_eq!(fs::read(&segment).unwrap(), damaged);
    }
}

#[test]
fn a_flipped_byte_in_the_last_record_is_a_torn_tail() {
    let source = tempfile::tempdir().unwrap();
    let (bytes, last_start) = five_records(source.path());
    for at in last_start..bytes.len() as u64 {
        let dir = tempfile::tempdir().unwrap();
        let segment = dir.path().join(segment_file_name(0));
        let mut damaged = bytes.clone();
        damaged[at as usize] ^= 0x01;
        fs::write(&segment, &damaged).unwrap();
        let (_, recovered) = open(dir.path(), WalOptions::default());
        assert_eq!(plain(&recovered), expected(0..4), "flip at {at}");
        assert_eq!(recovered.truncated_tail, Some((segment, last_start)));
    }
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_even_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments(60));
    append_each(&mut wal, 0..20);
    drop(wal);
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    let sealed = &files[files.len() - 2];
    let mut bytes = fs::read(sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(sealed, &bytes).unwrap();
    let error = bft_storage::Wal::open(dir.path(), small_segments(60)).unwrap_err();
    assert!(
        matches!(&error, WalError::Corrupt { file, reason: Corruption::DamagedSealedSegment { .. }, .. } if file == sealed),
        "{error}"
    );
    assert!(error.to_string().contains(&sealed.display().to_string()));
}

#[test]
fn garbage_after_the_last_good_record_is_cut_off() {
    let source = tempfile::tempdir().unwrap();
    let (bytes, _) = five_records(source.path());
    for (seed, len) in [
        (1, 1),
        (2, 5),
        (3, 11),
        (4, 12),
        (5, 13),
        (6, 100),
        (7, 4096),
    ] {
        for zeros in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let segment = dir.path().join(segment_file_name(0));
            let mut damaged = bytes.clone();
            if zeros {
                damaged.resize(bytes.len() + len, 0);
            } else {
                damaged.extend(noise(seed, len));
            }
            fs::write(&segment, &damaged).unwrap();
            let (mut wal, recovered) = open(dir.path(), WalOptions::default());
            assert_eq!(plain(&recovered), expected(0..5), "{len} bytes");
            assert_eq!(
                recovered.truncated_tail,
                Some((segment.clone(), bytes.len() as u64))
            );
            append_each(&mut wal, 5..6);
            drop(wal);
            let (_, recovered) = open(dir.path(), WalOptions::default());
            assert_eq!(plain(&recovered), expected(0..6));
        }
    }
}

#[test]
fn a_missing_segment_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments(60));
    append_each(&mut wal, 0..20);
    drop(wal);
    let files = segments(dir.path());
    fs::remove_file(&files[1]).unwrap();
    let error = bft_storage::Wal::open(dir.path(), small_segments(60)).unwrap_err();
    assert!(
        matches!(&error, WalError::Corrupt { file, reason: Corruption::IndexGap { .. }, .. } if file == &files[2]),
        "{error}"
    );
}

#[test]
fn truncate_before_removes_whole_segments_below_the_index_only() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(80);
    let (mut wal, _) = open(dir.path(), options);
    append_each(&mut wal, 0..40);
    let before = segments(dir.path()).len();
    wal.truncate_before(25).unwrap();
    assert!(segments(dir.path()).len() < before);
    assert!(wal.first_index() <= 25 && wal.first_index() > 0);
    assert_eq!(
        wal.segment_paths().collect::<Vec<_>>(),
        segments(dir.path())
    );
    let first = wal.first_index();
    drop(wal);
    let (mut wal, recovered) = open(dir.path(), options);
    assert_eq!(recovered.first_index, first);
    assert_eq!(plain(&recovered), expected(first..40));

    // Everything below an index past the end: the log rolls, so every old segment can go.
    wal.truncate_before(1000).unwrap();
    assert_eq!(wal.first_index(), 40);
    assert_eq!(segments(dir.path()).len(), 1);
    drop(wal);
    let (mut wal, recovered) = open(dir.path(), options);
    assert_eq!(recovered.first_index, 40);
    assert!(recovered.records.is_empty());
    append_each(&mut wal, 40..45);
    // Truncating an empty active segment, or below the first index, is a no-op.
    wal.truncate_before(0).unwrap();
    drop(wal);
    let (_, recovered) = open(dir.path(), options);
    assert_eq!(recovered.first_index, 40);
    assert_eq!(plain(&recovered), expected(40..45));
}

#[test]
fn other_files_in_the_directory_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("snapshot-00000000000000000001.snap"), b"x").unwrap();
    fs::write(dir.path().join("wal-notanumber.log"), b"x").unwrap();
    let (mut wal, _) = open(dir.path(), WalOptions::default());
    append_each(&mut wal, 0..3);
    drop(wal);
    let (_, recovered) = open(dir.path(), WalOptions::default());
    assert_eq!(plain(&recovered), expected(0..3));
    assert!(dir.path().join("wal-notanumber.log").exists());
}

#[test]
fn arbitrary_segment_contents_never_panic() {
    // Every prefix and many corruptions of a multi-segment log either open or fail cleanly.
    let source = tempfile::tempdir().unwrap();
    let (bytes, _) = five_records(source.path());
    for seed in 0..200u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut damaged = bytes.clone();
        let at = (seed as usize * 7) % damaged.len();
        damaged.splice(at..at, noise(seed, (seed % 17) as usize));
        if seed % 3 == 0 {
            damaged.truncate((seed as usize * 13) % damaged.len());
        }
        fs::write(dir.path().join(segment_file_name(u64::MAX - 2)), &damaged).unwrap();
        match bft_storage::Wal::open(dir.path(), WalOptions::default()) {
            Ok((mut wal, recovered)) => {
                assert!(recovered.records.len() <= 5);
                // Indices near u64::MAX overflow cleanly instead of panicking.
                for _ in 0..6 {
                    if wal.append(&[b"x"]).is_err() {
                        break;
                    }
                }
            }
            Err(WalError::Corrupt { .. }) => {}
            Err(other) => panic!("seed {seed}: {other}"),
        }
    }
}
