//! How a [`Record`] is stored as a log payload.
//!
//! ```text
//! version 2: 2u8 | Record::encode (bft-core's codec: a tagged enum of signed records, accepted
//!                                  frames and certificates)
//! version 1: 1u8 | postcard(kind code u8, kind, view, seq, digest, frame bytes), a signed record
//! ```
//!
//! The leading version byte lets the record type grow: a later version adds a branch to
//! [`decode_record`] and keeps reading the earlier ones. Version 1 (signed records only) is still
//! read. In it the kind is stored twice: as the enum (postcard encodes its variant index, as the
//! wire codec does) and as its stable [`MessageKind::code`], and decoding checks that they agree,
//! so a reordered `MessageKind` is caught instead of turning a stored prepare into something
//! else.
//!
//! Everything goes through [`bft_core::codec`], the crate's single encoding path.

use bft_core::codec::{self, DecodeError};
use bft_core::{MessageKind, Record, SeqNum, SignedRecord, View};
use bytes::Bytes;

/// The current payload version.
pub const RECORD_VERSION: u8 = 2;

/// The first version, which held signed records only (still read).
pub const RECORD_VERSION_SIGNED_ONLY: u8 = 1;

/// Why a log payload is not a valid [`Record`].
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
        /// The decoded kind.
        decoded: MessageKind,
    },
}

/// Encodes a record as a log payload (current version).
pub fn encode_record(record: &Record) -> Vec<u8> {
    let body = record.encode();
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&body);
    out
}

/// Encodes a signed record in version 1 (what earlier builds wrote; tests use it to check that
/// such logs are still read).
pub fn encode_signed_record_v1(record: &SignedRecord) -> Vec<u8> {
    let body = codec::encode(&(
        record.kind.code(),
        record.kind,
        record.view,
        record.seq,
        record.digest,
        record.frame.as_ref(),
    ));
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(RECORD_VERSION_SIGNED_ONLY);
    out.extend_from_slice(&body);
    out
}

/// Decodes a log payload written by [`encode_record`] (of this or an earlier version).
pub fn decode_record(payload: &[u8]) -> Result<Record, RecordDecodeError> {
    let (&version, body) = payload.split_first().ok_or(RecordDecodeError::Empty)?;
    match version {
        RECORD_VERSION => Record::decode(body).map_err(RecordDecodeError::Malformed),
        RECORD_VERSION_SIGNED_ONLY => decode_v1(body).map(Record::Signed),
        other => Err(RecordDecodeError::UnknownVersion(other)),
    }
}

fn decode_v1(body: &[u8]) -> Result<SignedRecord, RecordDecodeError> {
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

    fn signed(kind: MessageKind, fill: u8) -> SignedRecord {
        SignedRecord {
            kind,
            view: View(3),
            seq: SeqNum(41),
            digest: codec::decode(&[fill; 32]).expect("a digest is 32 bytes"),
            frame: Bytes::from(vec![fill; 100]),
        }
    }

    #[test]
    fn every_record_shape_round_trips() {
        let mut records: Vec<Record> = MessageKind::ALL
            .iter()
            .map(|kind| Record::Signed(signed(*kind, kind.code())))
            .collect();
        records.push(Record::Frame(Bytes::from_static(b"a frame")));
        records.push(Record::Prepared {
            pre_prepare: Bytes::from_static(b"pp"),
            prepares: vec![Bytes::from_static(b"p1"), Bytes::from_static(b"p2")],
        });
        records.push(Record::Committed {
            pre_prepare: Bytes::from_static(b"pp"),
            commits: vec![Bytes::from_static(b"c1")],
        });
        for record in records {
            assert_eq!(decode_record(&encode_record(&record)), Ok(record));
        }
    }

    #[test]
    fn version_one_is_still_read_and_damage_is_refused() {
        let old = signed(MessageKind::Prepare, 9);
        let mut bytes = encode_signed_record_v1(&old);
        assert_eq!(decode_record(&bytes), Ok(Record::Signed(old)));
        assert_eq!(decode_record(&[]), Err(RecordDecodeError::Empty));
        bytes[0] = 7;
        assert_eq!(
            decode_record(&bytes),
            Err(RecordDecodeError::UnknownVersion(7))
        );
        bytes[0] = RECORD_VERSION_SIGNED_ONLY;
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
        let mut current = encode_record(&Record::Frame(Bytes::from_static(b"x")));
        current.truncate(2);
        assert!(matches!(
            decode_record(&current),
            Err(RecordDecodeError::Malformed(_))
        ));
    }
}
