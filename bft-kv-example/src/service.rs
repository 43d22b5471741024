//! The key-value store every replica runs: a deterministic [`Service`] over a `BTreeMap`.
//!
//! Keys and values are bytes. Every limit ([`KvLimits`]) is part of the cluster configuration, so
//! every replica refuses the same operations with the same [`KvError`]. An operation that is
//! refused changes nothing.

use crate::ops::{self, KvError, KvOp, KvReply};
use bft_core::{ExecuteContext, RestoreError, Service};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Bytes a reply's encoding adds per scanned entry, at most (two length prefixes).
const ENTRY_OVERHEAD_BYTES: usize = 10;
/// Bytes a reply's encoding adds around its entries, at most (variant tag, list length).
const REPLY_OVERHEAD_BYTES: usize = 16;
/// Tag at the start of every snapshot; a snapshot with another tag is refused.
const SNAPSHOT_TAG: &str = "bft-kv-snapshot-v1";

/// Bounds on what one operation may hold or return. Every replica of a cluster must use the same
/// values (they come from the cluster configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
    /// Most keys (or pairs) in one `DEL`, `EXISTS`, `MGET` or `MSET`.
    pub max_keys_per_op: usize,
    /// Most entries one `SCAN` returns, whatever limit it asks for.
    pub max_scan_entries: usize,
    /// Most key and value bytes one `SCAN` returns: a scan stops early rather than produce a reply
    /// the cluster would refuse as too large. Keep it below the cluster's `max_reply_bytes`.
    pub max_scan_bytes: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_key_bytes: 1024,
            max_value_bytes: 32 << 10,
            max_keys_per_op: 256,
            max_scan_entries: 1000,
            max_scan_bytes: 512 << 10,
        }
    }
}

/// A limit that is inconsistent with itself or with the cluster's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid kv limit `{field}`: {reason}")]
pub struct KvLimitsError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl KvLimits {
    /// Checks the limits against the cluster's: a largest `SET` must fit in an operation, and a
    /// largest scan in a reply.
    pub fn validate(&self, cluster: &bft_core::Limits) -> Result<(), KvLimitsError> {
        let invalid = |field, reason: String| Err(KvLimitsError { field, reason });
        if self.max_key_bytes == 0 {
            return invalid("max_key_bytes", "must be positive".into());
        }
        if self.max_keys_per_op == 0 {
            return invalid("max_keys_per_op", "must be positive".into());
        }
        if self.max_scan_entries == 0 {
            return invalid("max_scan_entries", "must be positive".into());
        }
        let largest_set = self
            .max_key_bytes
            .saturating_add(self.max_value_bytes)
            .saturating_add(16);
        if largest_set > cluster.max_operation_bytes {
            return invalid(
                "max_value_bytes",
                format!(
                    "a largest SET ({largest_set} bytes with max_key_bytes = {}) exceeds the \
                     cluster's max_operation_bytes ({})",
                    self.max_key_bytes, cluster.max_operation_bytes
                ),
            );
        }
        let largest_scan = self.max_scan_bytes.saturating_add(
            self.max_scan_entries
                .saturating_mul(ENTRY_OVERHEAD_BYTES)
                .saturating_add(REPLY_OVERHEAD_BYTES),
        );
        if largest_scan > cluster.max_reply_bytes {
            return invalid(
                "max_scan_bytes",
                format!(
                    "a largest scan reply ({largest_scan} bytes) exceeds the cluster's \
                     max_reply_bytes ({})",
                    cluster.max_reply_bytes
                ),
            );
        }
        let entry = self.max_key_bytes.saturating_add(self.max_value_bytes);
        if self.max_scan_bytes < entry {
            return invalid(
                "max_scan_bytes",
                format!("must hold at least one largest entry ({entry} bytes)"),
            );
        }
        Ok(())
    }
}

/// The replicated store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvService {
    limits: KvLimits,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What a snapshot holds: a tag, then the entries in key order.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    tag: String,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl KvService {
    /// An empty store with these limits.
    pub fn new(limits: KvLimits) -> KvService {
        KvService {
            limits,
            entries: BTreeMap::new(),
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &KvLimits {
        &self.limits
    }

    /// The number of keys stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies one operation and returns its reply. Deterministic: it reads nothing but the
    /// state and the operation.
    pub fn apply(&mut self, op: KvOp) -> KvReply {
        match self.try_apply(op) {
            Ok(reply) => reply,
            Err(error) => KvReply::Error(error),
        }
    }

    fn try_apply(&mut self, op: KvOp) -> Result<KvReply, KvError> {
        match op {
            KvOp::Get { key } => {
                self.check_key(&key)?;
                Ok(KvReply::Value(self.entries.get(&key).cloned()))
            }
            KvOp::Set { key, value } => {
                self.check_pair(&key, &value)?;
                self.entries.insert(key, value);
                Ok(KvReply::Ok)
            }
            KvOp::Del { keys } => {
                self.check_keys(&keys)?;
                let removed = keys
                    .iter()
                    .filter(|key| self.entries.remove(*key).is_some())
                    .count();
                Ok(KvReply::Count(removed as u64))
            }
            KvOp::Exists { keys } => {
                self.check_keys(&keys)?;
                let present = keys
                    .iter()
                    .filter(|k| self.entries.contains_key(*k))
                    .count();
                Ok(KvReply::Count(present as u64))
            }
            KvOp::Incr { key, by } => self.incr(key, by),
            KvOp::Cas { key, expected, new } => {
                self.check_key(&key)?;
                if let Some(value) = &expected {
                    self.check_value(value)?;
                }
                if let Some(value) = &new {
                    self.check_value(value)?;
                }
                if self.entries.get(&key) != expected.as_ref() {
                    let current = self.entries.get(&key).cloned();
                    return Ok(KvReply::Swapped {
                        swapped: false,
                        current,
                    });
                }
                match &new {
                    Some(value) => self.entries.insert(key, value.clone()),
                    None => self.entries.remove(&key),
                };
                Ok(KvReply::Swapped {
                    swapped: true,
                    current: new,
                })
            }
            KvOp::Scan { start, end, limit } => self.scan(start, end, limit),
            KvOp::MGet { keys } => {
                self.check_keys(&keys)?;
                let values = keys.iter().map(|k| self.entries.get(k).cloned()).collect();
                Ok(KvReply::Values(values))
            }
            KvOp::MSet { pairs } => {
                self.check_count(pairs.len())?;
                for (key, value) in &pairs {
                    self.check_pair(key, value)?;
                }
                self.entries.extend(pairs);
                Ok(KvReply::Ok)
            }
        }
    }

    fn incr(&mut self, key: Vec<u8>, by: i64) -> Result<KvReply, KvError> {
        self.check_key(&key)?;
        let current = match self.entries.get(&key) {
            None => 0,
            Some(value) => parse_integer(value).ok_or(KvError::NotAnInteger)?,
        };
        let new = current.checked_add(by).ok_or(KvError::Overflow)?;
        let value = new.to_string().into_bytes();
        self.check_value(&value)?;
        self.entries.insert(key, value);
        Ok(KvReply::Integer(new))
    }

    fn scan(&self, start: Vec<u8>, end: Option<Vec<u8>>, limit: u32) -> Result<KvReply, KvError> {
        self.check_key(&start)?;
        if let Some(end) = &end {
            self.check_key(end)?;
            if *end <= start {
                return Ok(KvReply::Entries(Vec::new()));
            }
        }
        let limit = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(self.limits.max_scan_entries);
        let upper = match end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let mut bytes = 0usize;
        let mut entries = Vec::new();
        for (key, value) in self.entries.range((Bound::Included(start), upper)) {
            bytes = bytes.saturating_add(key.len() + value.len());
            if entries.len() == limit || bytes > self.limits.max_scan_bytes {
                break;
            }
            entries.push((key.clone(), value.clone()));
        }
        Ok(KvReply::Entries(entries))
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(KvError::KeyTooLarge {
                len: key.len() as u64,
                max: self.limits.max_key_bytes as u64,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.limits.max_value_bytes {
            return Err(KvError::ValueTooLarge {
                len: value.len() as u64,
                max: self.limits.max_value_bytes as u64,
            });
        }
        Ok(())
    }

    fn check_pair(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.check_key(key)?;
        self.check_value(value)
    }

    fn check_count(&self, count: usize) -> Result<(), KvError> {
        if count > self.limits.max_keys_per_op {
            return Err(KvError::TooManyKeys {
                count: count as u64,
                max: self.limits.max_keys_per_op as u64,
            });
        }
        Ok(())
    }

    fn check_keys(&self, keys: &[Vec<u8>]) -> Result<(), KvError> {
        self.check_count(keys.len())?;
        keys.iter().try_for_each(|key| self.check_key(key))
    }

    /// Decodes and checks a snapshot without touching the state.
    fn decode_snapshot(&self, bytes: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, RestoreError> {
        let data: SnapshotData =
            ops::from_bytes_exact(bytes, "snapshot").map_err(|e| RestoreError(e.to_string()))?;
        if data.tag != SNAPSHOT_TAG {
            return Err(RestoreError(format!(
                "not a bft-kv snapshot (tag {:?})",
                data.tag
            )));
        }
        let mut entries = BTreeMap::new();
        for (key, value) in data.entries {
            self.check_pair(&key, &value)
                .map_err(|e| RestoreError(format!("entry out of limits: {e}")))?;
            if entries
                .last_key_value()
                .is_some_and(|(last, _)| *last >= key)
            {
                return Err(RestoreError("entries are not in strict key order".into()));
            }
            entries.insert(key, value);
        }
        Ok(entries)
    }
}

/// Parses a stored value as `INCR` does: canonical decimal ASCII of an `i64` (an optional `-`,
/// no `+`, no leading zeros, no white space).
pub fn parse_integer(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let number: i64 = text.parse().ok()?;
    (number.to_string() == text).then_some(number)
}

impl Service for KvService {
    fn execute(&mut self, _context: &ExecuteContext, operation: &[u8]) -> Vec<u8> {
        let reply = match KvOp::decode(operation) {
            Ok(op) => self.apply(op),
            Err(_) => KvReply::Error(KvError::MalformedOperation),
        };
        reply.encode()
    }

    fn snapshot(&self) -> Vec<u8> {
        // BTreeMap iterates in key order: equal states give equal bytes.
        let data = SnapshotData {
            tag: SNAPSHOT_TAG.to_string(),
            entries: self
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        ops::to_bytes(&data)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.entries = self.decode_snapshot(snapshot)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
