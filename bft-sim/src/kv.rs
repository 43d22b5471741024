//! A small key-value service: the workload the simulator replicates.
//!
//! Operations and results travel as postcard bytes (through [`bft_core::codec`]). The semantics
//! live in one pure function, [`apply`], which both the replicated [`KvService`] and the
//! linearizability checker ([`crate::linearizability`]) use, so the checker's model cannot drift
//! from what the replicas execute.

use bft_core::codec::{self, DecodeError};
use bft_core::{ExecuteContext, RestoreError, Service};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One operation on the store. Every operation touches exactly one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvOp {
    /// Reads the value of `key`.
    Get {
        /// The key to read.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Sets `key` to `value`.
    Put {
        /// The key to write.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Appends `value` to the value of `key` (creating it if absent).
    Append {
        /// The key to extend.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The bytes to append.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

impl KvOp {
    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Append { key, .. } => key,
        }
    }

    /// Whether the operation leaves the state unchanged (a `Get`).
    pub fn is_read_only(&self) -> bool {
        matches!(self, KvOp::Get { .. })
    }

    /// Encodes the operation for a client request.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an operation; every byte must be used.
    pub fn decode(bytes: &[u8]) -> Result<KvOp, DecodeError> {
        codec::decode(bytes)
    }
}

/// The reply to a [`KvOp`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvResult {
    /// The reply to `Get`: the current value, or `None` if the key is absent.
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// The reply to `Put` and `Append`.
    Done,
    /// The operation bytes did not decode; the state was not changed.
    BadOperation,
}

impl KvResult {
    /// Encodes the result as reply bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes reply bytes; every byte must be used.
    pub fn decode(bytes: &[u8]) -> Result<KvResult, DecodeError> {
        codec::decode(bytes)
    }
}

impl std::fmt::Display for KvOp {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        match self {
            KvOp::Get { key } => write!(out, "get {}", text(key)),
            KvOp::Put { key, value } => write!(out, "put {}={}", text(key), text(value)),
            KvOp::Append { key, value } => write!(out, "append {}+={}", text(key), text(value)),
        }
    }
}

impl std::fmt::Display for KvResult {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvResult::Value(Some(value)) => write!(out, "{:?}", String::from_utf8_lossy(value)),
            KvResult::Value(None) => write!(out, "none"),
            KvResult::Done => write!(out, "ok"),
            KvResult::BadOperation => write!(out, "bad operation"),
        }
    }
}

/// The sequential specification of one operation: given the current value of `op`'s key
/// (`None` if absent), returns the key's new value and the operation's result.
///
/// This is the single source of truth for the semantics: [`KvService::execute`] applies it to
/// the replicated map and the linearizability checker uses it as its model.
pub fn apply(state: Option<&[u8]>, op: &KvOp) -> (Option<Vec<u8>>, KvResult) {
    match op {
        KvOp::Get { .. } => {
            let current = state.map(<[u8]>::to_vec);
            (current.clone(), KvResult::Value(current))
        }
        KvOp::Put { value, .. } => (Some(value.clone()), KvResult::Done),
        KvOp::Append { value, .. } => {
            let mut new = Vec::with_capacity(state.map_or(0, <[u8]>::len) + value.len());
            new.extend_from_slice(state.unwrap_or_default());
            new.extend_from_slice(value);
            (Some(new), KvResult::Done)
        }
    }
}

/// The replicated key-value store: a [`Service`] over a `BTreeMap<Vec<u8>, Vec<u8>>`.
///
/// Replies are [`KvResult`] encodings; operation bytes that are not a [`KvOp`] get
/// [`KvResult::BadOperation`] and change nothing. The snapshot is the postcard encoding of the
/// map (canonical: keys in order, so equal states give equal bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvService {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvService {
    /// The value stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// The number of keys stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies a decoded operation and returns its result.
    pub fn apply_op(&mut self, op: &KvOp) -> KvResult {
        let current = self.map.get(op.key()).map(Vec::as_slice);
        let (new, result) = apply(current, op);
        if new.as_deref() != current {
            match new {
                Some(value) => {
                    self.map.insert(op.key().to_vec(), value);
                }
                None => {
                    self.map.remove(op.key());
                }
            }
        }
        result
    }
}

impl Service for KvService {
    fn execute(&mut self, _context: &ExecuteContext, operation: &[u8]) -> Vec<u8> {
        match KvOp::decode(operation) {
            Ok(op) => self.apply_op(&op).encode(),
            Err(_) => KvResult::BadOperation.encode(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        codec::encode(&self.map)
    }

    /// Restores a snapshot. Only canonical encodings are accepted (keys strictly increasing, no
    /// trailing bytes), so `snapshot()` after a successful `restore(bytes)` returns `bytes`.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let map: BTreeMap<Vec<u8>, Vec<u8>> =
            codec::decode(snapshot).map_err(|e| RestoreError(format!("kv snapshot: {e}")))?;
        if codec::encode(&map) != snapshot {
            return Err(RestoreError(
                "kv snapshot: not canonical (keys unordered or repeated)".to_string(),
            ));
        }
        self.map = map;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bft_core::{ClientId, SeqNum};

    fn ctx() -> ExecuteContext {
        ExecuteContext {
            client: ClientId(1),
            timestamp: 1,
            seq: SeqNum(1),
        }
    }

    fn get(key: &str) -> KvOp {
        KvOp::Get {
            key: key.as_bytes().to_vec(),
        }
    }

    fn put(key: &str, value: &str) -> KvOp {
        KvOp::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn append(key: &str, value: &str) -> KvOp {
        KvOp::Append {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn run(service: &mut KvService, op: &KvOp) -> KvResult {
        let reply = service.execute(&ctx(), &op.encode());
        KvResult::decode(&reply).expect("reply decodes")
    }

    fn value(v: &str) -> KvResult {
        KvResult::Value(Some(v.as_bytes().to_vec()))
    }

    #[test]
    fn put_get_append_semantics() {
        let mut s = KvService::default();
        assert!(s.is_empty());
        assert_eq!(run(&mut s, &get("a")), KvResult::Value(None));
        assert!(s.is_empty(), "a get of a missing key creates nothing");
        assert_eq!(run(&mut s, &put("a", "1")), KvResult::Done);
        assert_eq!(run(&mut s, &get("a")), value("1"));
        assert_eq!(run(&mut s, &put("a", "2")), KvResult::Done);
        assert_eq!(run(&mut s, &get("a")), value("2"));
        assert_eq!(run(&mut s, &append("a", "xy")), KvResult::Done);
        assert_eq!(run(&mut s, &get("a")), value("2xy"));
        assert_eq!(run(&mut s, &append("b", "z")), KvResult::Done);
        assert_eq!(run(&mut s, &get("b")), value("z"));
        assert_eq!(s.get(b"a"), Some(&b"2xy"[..]));
        assert_eq!(s.get(b"c"), None);
        assert_eq!(s.len(), 2);
        assert_eq!(run(&mut s, &put("e", "")), KvResult::Done);
        assert_eq!(
            run(&mut s, &get("e")),
            value(""),
            "empty value is not absent"
        );
    }

    #[test]
    fn apply_is_the_model() {
        assert_eq!(apply(None, &get("k")), (None, KvResult::Value(None)));
        assert_eq!(
            apply(Some(b"v"), &get("k")),
            (Some(b"v".to_vec()), value("v"))
        );
        assert_eq!(
            apply(Some(b"v"), &put("k", "w")),
            (Some(b"w".to_vec()), KvResult::Done)
        );
        assert_eq!(
            apply(None, &append("k", "w")),
            (Some(b"w".to_vec()), KvResult::Done)
        );
        assert_eq!(
            apply(Some(b"v"), &append("k", "w")),
            (Some(b"vw".to_vec()), KvResult::Done)
        );
    }

    #[test]
    fn op_and_result_codec_round_trip() {
        for op in [get("k"), put("k", "v"), append("", "")] {
            assert_eq!(KvOp::decode(&op.encode()), Ok(op.clone()));
        }
        for r in [
            KvResult::Value(None),
            value(""),
            value("abc"),
            KvResult::Done,
            KvResult::BadOperation,
        ] {
            assert_eq!(KvResult::decode(&r.encode()), Ok(r.clone()));
        }
        let mut bytes = get("k").encode();
        bytes.push(0);
        assert!(KvOp::decode(&bytes).is_err(), "trailing bytes rejected");
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let mut s = KvService::default();
        run(&mut s, &put("b", "2"));
        run(&mut s, &put("a", "1"));
        run(&mut s, &append("c", "33"));
        let snap = s.snapshot();
        let mut t = KvService::default();
        t.restore(&snap).expect("restores");
        assert_eq!(t, s);
        assert_eq!(t.snapshot(), snap);
        assert_eq!(t.state_digest(), s.state_digest());
        assert_eq!(t.get(b"c"), Some(&b"33"[..]));
        // Restore replaces, not merges.
        let mut u = KvService::default();
        run(&mut u, &put("z", "9"));
        u.restore(&snap).expect("restores");
        assert_eq!(u, s);
    }

    #[test]
    fn restore_of_garbage_fails_and_keeps_state() {
        let mut s = KvService::default();
        run(&mut s, &put("a", "1"));
        let before = s.clone();
        let good = s.snapshot();
        let mut trailing = good.clone();
        trailing.push(7);
        // Two entries with keys out of order: a valid postcard map, but not canonical.
        let unordered = [2u8, 1, b'b', 1, b'2', 1, b'a', 1, b'1'];
        for garbage in [
            &[0xffu8, 0xff, 0xff][..],
            &[5u8, 1][..],
            &trailing[..],
            &good[..good.len() - 1],
            &unordered[..],
        ] {
            assert!(s.restore(garbage).is_err(), "{garbage:?} accepted");
            assert_eq!(s, before);
        }
        assert!(s.restore(&[]).is_err());
        assert_eq!(s, before);
        // The empty map restores.
        s.restore(&KvService::default().snapshot()).expect("empty");
        assert!(s.is_empty());
    }

    #[test]
    fn bad_operation_bytes_change_nothing() {
        let mut s = KvService::default();
        run(&mut s, &put("a", "1"));
        let before = s.clone();
        for bad in [&[][..], &[9u8][..], &[0u8, 200][..], &[1u8, 1, b'a'][..]] {
            let reply = s.execute(&ctx(), bad);
            assert_eq!(KvResult::decode(&reply), Ok(KvResult::BadOperation));
            assert_eq!(s, before);
        }
    }
}
