//! The store's operations and replies, and their wire encoding.
//!
//! Everything that crosses the network is encoded here, with postcard (serde): a [`KvOp`] is the
//! operation bytes a client submits, a [`KvReply`] is the reply bytes every replica returns.

use serde::{Deserialize, Serialize};

/// An operation on the store, encoded with postcard (serde) as the operation bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Reads one key. Reply: [`KvReply::Value`].
    Get {
        /// The key to read.
        key: Vec<u8>,
    },
    /// Writes one key. Reply: [`KvReply::Ok`].
    Set {
        /// The key to write.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Removes keys. Reply: [`KvReply::Count`], the number removed.
    Del {
        /// The keys to remove (duplicates count once).
        keys: Vec<Vec<u8>>,
    },
    /// Counts present keys. Reply: [`KvReply::Count`], the number present (each listed key
    /// counts, duplicates included, as in Redis).
    Exists {
        /// The keys to test.
        keys: Vec<Vec<u8>>,
    },
    /// Adds `by` to the integer stored at `key`. Reply: [`KvReply::Integer`], the new value. A
    /// missing key counts as 0; the value is stored as decimal ASCII.
    Incr {
        /// The key to increment.
        key: Vec<u8>,
        /// The amount to add (may be negative).
        by: i64,
    },
    /// Compare-and-set: if the current value equals `expected` (`None`: absent), replaces it with
    /// `new` (`None`: delete). Reply: [`KvReply::Swapped`].
    Cas {
        /// The key to compare and set.
        key: Vec<u8>,
        /// The value it must hold (`None`: it must be absent).
        expected: Option<Vec<u8>>,
        /// The value to store (`None`: delete the key).
        new: Option<Vec<u8>>,
    },
    /// Lists entries with `start <= key < end` in key order. Reply: [`KvReply::Entries`]; `limit`
    /// is capped by the configured scan bound.
    Scan {
        /// The first key of the range (inclusive).
        start: Vec<u8>,
        /// The end of the range (exclusive); `None`: to the last key.
        end: Option<Vec<u8>>,
        /// Most entries to return.
        limit: u32,
    },
    /// Reads several keys. Reply: [`KvReply::Values`], in the order asked.
    MGet {
        /// The keys to read.
        keys: Vec<Vec<u8>>,
    },
    /// Writes several keys. Reply: [`KvReply::Ok`]; atomic: all or nothing on limit errors.
    MSet {
        /// The `(key, value)` pairs to write, applied in order.
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

/// The store's reply to one [`KvOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// A value, or `None` if the key is absent.
    Value(Option<Vec<u8>>),
    /// The operation succeeded.
    Ok,
    /// A number of keys.
    Count(u64),
    /// An integer value.
    Integer(i64),
    /// The result of a compare-and-set.
    Swapped {
        /// Whether the new value was stored.
        swapped: bool,
        /// The value after the operation.
        current: Option<Vec<u8>>,
    },
    /// Several values, in the order asked.
    Values(Vec<Option<Vec<u8>>>),
    /// Entries in key order.
    Entries(Vec<(Vec<u8>, Vec<u8>)>),
    /// The operation was refused; the state is unchanged.
    Error(KvError),
}

/// Why the store refused an operation. Every replica refuses the same operations in the same
/// way, so this is part of the agreed reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvError {
    /// `INCR` on a value that is not a decimal 64-bit integer.
    #[error("value is not an integer")]
    NotAnInteger,
    /// `INCR` would overflow a 64-bit signed integer.
    #[error("increment would overflow")]
    Overflow,
    /// A key longer than the configured maximum.
    #[error("key too large: {len} bytes, at most {max}")]
    KeyTooLarge {
        /// The key's length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A value longer than the configured maximum.
    #[error("value too large: {len} bytes, at most {max}")]
    ValueTooLarge {
        /// The value's length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// More keys in one operation than the configured maximum.
    #[error("too many keys: {count}, at most {max}")]
    TooManyKeys {
        /// The number of keys in the operation.
        count: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The operation bytes do not decode as a [`KvOp`].
    #[error("malformed operation")]
    MalformedOperation,
}

/// Bytes that do not decode as the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// The decoder's complaint.
    pub reason: String,
}

impl KvOp {
    /// Encodes the operation as the bytes a client submits.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain types into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes operation bytes; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<KvOp, DecodeError> {
        decode_exact(bytes, "operation")
    }
}

impl KvReply {
    /// Encodes the reply as the bytes a replica returns.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes reply bytes; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<KvReply, DecodeError> {
        decode_exact(bytes, "reply")
    }
}

fn decode_exact<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(DecodeError {
            what,
            reason: format!("{} trailing bytes", rest.len()),
        }),
        Err(e) => Err(DecodeError {
            what,
            reason: e.to_string(),
        }),
    }
}

/// Postcard helpers shared by the service's snapshot code.
pub(crate) fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decodes exactly one value of `T` from `bytes`.
pub(crate) fn from_bytes_exact<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    decode_exact(bytes, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_replies_round_trip() {
        let ops = vec![
            KvOp::Get { key: b"a".to_vec() },
            KvOp::Set {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
            },
            KvOp::Del {
                keys: vec![b"a".to_vec(), b"b".to_vec()],
            },
            KvOp::Exists { keys: vec![] },
            KvOp::Incr {
                key: b"n".to_vec(),
                by: -5,
            },
            KvOp::Cas {
                key: b"k".to_vec(),
                expected: None,
                new: Some(b"v".to_vec()),
            },
            KvOp::Scan {
                start: vec![],
                end: Some(b"z".to_vec()),
                limit: 10,
            },
            KvOp::MGet {
                keys: vec![b"x".to_vec()],
            },
            KvOp::MSet {
                pairs: vec![(b"x".to_vec(), b"y".to_vec())],
            },
        ];
        for op in ops {
            assert_eq!(KvOp::decode(&op.encode()), Ok(op));
        }
        let replies = vec![
            KvReply::Value(None),
            KvReply::Ok,
            KvReply::Count(3),
            KvReply::Integer(-1),
            KvReply::Swapped {
                swapped: true,
                current: Some(b"v".to_vec()),
            },
            KvReply::Values(vec![None, Some(vec![1])]),
            KvReply::Entries(vec![(vec![1], vec![2])]),
            KvReply::Error(KvError::KeyTooLarge { len: 9, max: 8 }),
        ];
        for reply in replies {
            assert_eq!(KvReply::decode(&reply.encode()), Ok(reply));
        }
    }

    #[test]
    fn garbage_and_trailing_bytes_are_refused() {
        assert!(KvOp::decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(KvOp::decode(&[]).is_err());
        let mut bytes = KvOp::Get { key: vec![] }.encode();
        bytes.push(0);
        assert!(KvOp::decode(&bytes).is_err());
        assert!(KvReply::decode(&[200]).is_err());
    }
}
