//! The framing of one log record (see the [`crate::wal`] module docs for the layout), and the
//! scan that tells a torn tail from corruption. Total on every input: never panics, whatever the
//! bytes.

use crate::error::RecordDefect;
use std::ops::Range;

/// `b"BWAL"` read as a little-endian `u32`.
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"BWAL");

/// magic, length, checksum.
pub(crate) const HEADER_LEN: usize = 12;

/// The checksum of a record: crc32c over the little-endian length followed by the payload.
pub(crate) fn checksum(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload)
}

/// Appends the framed record to `out`. The caller has checked that `payload` fits a `u32`.
pub(crate) fn encode_into(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("caller checks record length");
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What lies at an offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The end of the buffer, exactly.
    End,
    /// A valid record: the payload's byte range, and where the next record starts.
    Record { payload: Range<usize>, next: usize },
    /// Not a valid record.
    Bad(RecordDefect),
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Parses the record at `offset` of `buf` (`offset <= buf.len()`).
pub(crate) fn parse_at(buf: &[u8], offset: usize) -> Parsed {
    let available = buf.len().saturating_sub(offset);
    if available == 0 {
        return Parsed::End;
    }
    if available < HEADER_LEN {
        return Parsed::Bad(RecordDefect::TruncatedHeader { available });
    }
    let (Some(magic), Some(len), Some(stored)) = (
        read_u32(buf, offset),
        read_u32(buf, offset + 4),
        read_u32(buf, offset + 8),
    ) else {
        return Parsed::Bad(RecordDefect::TruncatedHeader { available });
    };
    if magic != MAGIC {
        return Parsed::Bad(RecordDefect::BadMagic { found: magic });
    }
    let start = offset + HEADER_LEN;
    let payload_available = available - HEADER_LEN;
    let Some(end) = usize::try_from(len)
        .ok()
        .filter(|&l| l <= payload_available)
        .map(|l| start + l)
    else {
        return Parsed::Bad(RecordDefect::TruncatedPayload {
            len,
            available: payload_available,
        });
    };
    let computed = checksum(len, &buf[start..end]);
    if computed != stored {
        return Parsed::Bad(RecordDefect::ChecksumMismatch { stored, computed });
    }
    Parsed::Record {
        payload: start..end,
        next: end,
    }
}

/// The offset of the first valid record that starts after `offset`, if any. Used to decide
/// whether a bad record is a torn tail (nothing valid after it) or damage in the middle.
pub(crate) fn next_valid_after(buf: &[u8], offset: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let first = offset.checked_add(1)?;
    let last = buf.len().checked_sub(HEADER_LEN)?;
    (first..=last).find(|&at| {
        buf.get(at..at + 4) == Some(&magic[..])
            && matches!(parse_at(buf, at), Parsed::Record { .. })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_encodes_and_rejects_damage() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"hello");
        encode_into(&mut buf, b"");
        assert_eq!(
            parse_at(&buf, 0),
            Parsed::Record {
                payload: 12..17,
                next: 17
            }
        );
        assert_eq!(
            parse_at(&buf, 17),
            Parsed::Record {
                payload: 29..29,
                next: 29
            }
        );
        assert_eq!(parse_at(&buf, 29), Parsed::End);
        assert_eq!(next_valid_after(&buf, 0), Some(17));
        for cut in 1..17 {
            assert!(matches!(parse_at(&buf[..cut], 0), Parsed::Bad(_)), "{cut}");
        }
        let mut flipped = buf.clone();
        flipped[14] ^= 1;
        assert!(matches!(
            parse_at(&flipped, 0),
            Parsed::Bad(RecordDefect::ChecksumMismatch { .. })
        ));
        flipped[4] = 0xff; // a huge length
        assert!(matches!(
            parse_at(&flipped, 0),
            Parsed::Bad(RecordDefect::TruncatedPayload { .. })
        ));
    }
}
