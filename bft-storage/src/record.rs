//! How a [`SignedRecord`] is stored as a log payload.
//!
//! ```text
//! version u8 = 1 | postcard(kind code u8, kind, view, seq, digest, frame bytes)
//! ```
//!
//! The leading version byte lets the record type grow: a later version adds a branch to
//! [`decode_record`] and keeps reading version 1. The kind is stored twice: as the enum (postcard
//! encodes its variant index, as the wire codec does) and as its stable
//! [`MessageKind::code`], and decoding checks that they agree, so a reordered `MessageKind` is
//! caught instead of turning a stored prepare into something else.
//!
//! The tuple goes through [`bft_core::codec`], the crate's single encoding path, and needs no
//! serde derive here.

use bft_core::codec::{self, DecodeError};
use bft_core::{MessageKind, SeqNum, SignedRecord, View};
use bytes::Bytes;

/// The current payload version.
pub const RECORD_VERSION: u8 = 1;

/// Why a log payload is not a valid [`SignedRecord`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    /// The payload is empty: it has no version byte.
    #[error("empty payload")]
    Empty,
    /// The version byte is not one this build reads (written by a newer build?).
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    /// The body is not a valid encoding.
    #[error("malformed record: {0}")]
    Malformed(DecodeError),
    /// The stored kind code and the decoded kind disagree.
    #[error("kind code {stored} does not match decoded kind {decoded:?} (code {})", decoded.code())]
    KindMismatch {
        /// The code stored beside the kind.
        stored: u8,
        /// The kind decoded.
        decoded: MessageKind,
    },
}

/// Encodes a record as a log payload (current version).
pub fn encode_record(record: &SignedRecord) -> Vec<u8> {
    let body = codec::encode(&(
        record.kind.code(),
        record.kind,
        record.view,
        record.seq,
        record.digest,
        record.frame.as_ref(),
    ));
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&body);
    out
}

/// Decodes a log payload written by [`encode_record`] (of this or an earlier version).
pub fn decode_record(payload: &[u8]) -> Result<SignedRecord, RecordDecodeError> {
    let (&version, body) = payload.split_first().ok_or(RecordDecodeError::Empty)?;
    if version != RECORD_VERSION {
        return Err(RecordDecodeError::UnknownVersion(version));
    }
    let (code, kind, view, seq, digest, frame): (u8, MessageKind, View, SeqNum, _, Vec<u8>) =
        codec::decode(body).map_err(RecordDecodeError::Malformed)?;
    if kind.code() != code {
        return Err(RecordDecodeError::KindMismatch {
            stored: code,
            decoded: kind,
        });
    }
    Ok(SignedRecord {
        kind,
        view,
        seq,
        digest,
        frame: Bytes::from(frame),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: MessageKind, fill: u8) -> SignedRecord {
        SignedRecord {
            kind,
            view: View(3),
            seq: SeqNum(41),
            digest: codec::decode(&[fill; 32]).expect("a digest is 32 bytes"),
            frame: Bytes::from(vec![fill; 100]),
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        for kind in [
            MessageKind::PrePrepare,
            MessageKind::Prepare,
            MessageKind::Commit,
            MessageKind::Checkpoint,
            MessageKind::ViewChange,
            MessageKind::NewView,
        ] {
            let r = record(kind, kind.code());
            assert_eq!(decode_record(&encode_record(&r)), Ok(r));
        }
        let mut bytes = encode_record(&record(MessageKind::Prepare, 9));
        assert_eq!(decode_record(&[]), Err(RecordDecodeError::Empty));
        bytes[0] = 2;
        assert_eq!(
            decode_record(&bytes),
            Err(RecordDecodeError::UnknownVersion(2))
        );
        bytes[0] = RECORD_VERSION;
        bytes[1] = MessageKind::Commit.code();
        assert!(matches!(
            decode_record(&bytes),
            Err(RecordDecodeError::KindMismatch { .. })
        ));
        bytes.truncate(20);
        assert!(matches!(
            decode_record(&bytes),
            Err(RecordDecodeError::Malformed(_))
        ));
    }
}
