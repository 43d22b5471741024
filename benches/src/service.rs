//! The benchmark's service: a write-only key-value map (`key = value`), cheap to execute so the
//! cluster's cost is the replication's.

use bft_core::{ExecuteContext, RestoreError, Service};
use std::collections::BTreeMap;

/// Stores the operation's first 8 bytes as a key and the rest as its value; replies with the
/// number of keys.
#[derive(Debug, Default, Clone)]
pub struct WriteService {
    entries: BTreeMap<u64, Vec<u8>>,
}

impl Service for WriteService {
    fn execute(&mut self, _context: &ExecuteContext, operation: &[u8]) -> Vec<u8> {
        let (key, value) = operation.split_at(operation.len().min(8));
        let mut padded = [0u8; 8];
        padded[..key.len()].copy_from_slice(key);
        self.entries
            .insert(u64::from_le_bytes(padded), value.to_vec());
        (self.entries.len() as u64).to_le_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in &self.entries {
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    fn restore(&mut self, mut snapshot: &[u8]) -> Result<(), RestoreError> {
        let mut entries = BTreeMap::new();
        while !snapshot.is_empty() {
            let (header, rest) = snapshot
                .split_at_checked(12)
                .ok_or_else(|| RestoreError("truncated entry header".into()))?;
            let key = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
            let (value, rest) = rest
                .split_at_checked(len)
                .ok_or_else(|| RestoreError("truncated value".into()))?;
            entries.insert(key, value.to_vec());
            snapshot = rest;
        }
        self.entries = entries;
        Ok(())
    }
}
