//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bft_storage::{Recovered, Wal, WalOptions};
use std::fs;
use std::path::{Path, PathBuf};

/// Options with small segments, so tests roll often.
pub fn small_segments(bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes: bytes,
        ..WalOptions::default()
    }
}

/// A recognisable payload for record `i`, of varying length.
pub fn payload(i: u64) -> Vec<u8> {
    let len = (i * 7 % 23) as usize;
    let mut bytes = format!("record-{i}:").into_bytes();
    bytes.extend((0..len).map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8)));
    bytes
}

/// Opens the log in `dir`, panicking on error.
pub fn open(dir: &Path, options: WalOptions) -> (Wal, Recovered) {
    Wal::open(dir, options).unwrap_or_else(|e| panic!("open failed: {e}"))
}

/// Appends records `range` one batch per record.
pub fn append_each(wal: &mut Wal, range: std::ops::Range<u64>) {
    for i in range {
        wal.append(&[&payload(i)]).unwrap();
    }
}

/// The payloads as plain vectors.
pub fn plain(recovered: &Recovered) -> Vec<Vec<u8>> {
    recovered.records.iter().map(|b| b.to_vec()).collect()
}

/// The segment files in `dir`, sorted.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Record framing overhead in bytes (magic, length, checksum).
pub const HEADER: u64 = 12;
