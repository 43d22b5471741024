//! The wire format: postcard-encoded, signed frames. All encoding and decoding goes through here.
//!
//! A frame is `postcard(Header, payload bytes, signature, attachment bytes)`. The signature covers
//! `bft_crypto::SignatureDomain` (protocol tag, cluster, kind code, sender) followed by the payload
//! bytes exactly as they travel: receivers check it over the bytes they received and only then
//! decode the payload. Nothing is re-encoded to be verified.
//!
//! The attachment is not signed. Only a pre-prepare may carry one: its batch of client request
//! frames, which the signed digest authenticates (PBFT's pre-prepare likewise signs
//! `<PRE-PREPARE, v, n, d>` and piggybacks the request). Certificates carry pre-prepares without
//! their batches, so view-change messages stay small. Every other kind must have an empty one.

use crate::ids::Principal;
use crate::messages::MessageKind;
use bft_crypto::{KeyPair, Signature, SignatureDomain};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Who sent a frame, of what kind, for which cluster. Covered by the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The cluster id.
    pub cluster: u64,
    /// The message kind.
    pub kind: MessageKind,
    /// The sender.
    pub sender: Principal,
}

impl Header {
    /// The signature domain of a frame with this header.
    pub fn domain(&self) -> SignatureDomain {
        SignatureDomain {
            cluster: self.cluster,
            kind: self.kind.code(),
            sender_role: self.sender.role_byte(),
            sender_id: self.sender.id_u64(),
        }
    }
}

/// A decoded frame that borrows its payload from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRef<'a> {
    /// The header.
    pub header: Header,
    /// The payload bytes, as received.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
    /// The sender's signature over the domain header and the payload.
    pub signature: Signature,
    /// Unsigned data authenticated otherwise (a pre-prepare's batch); empty for other kinds.
    #[serde(borrow, with = "serde_bytes")]
    pub attachment: &'a [u8],
}

impl FrameRef<'_> {
    /// Encodes the frame (used by [`sign_frame`]; tests and fault injection use it to build frames
    /// with arbitrary signatures).
    pub fn encode(&self) -> Bytes {
        Bytes::from(encode(self))
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than allowed; nothing was decoded.
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed: {0}")]
    Malformed(postcard::Error),
    /// A valid value is followed by extra bytes.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// The bytes decode, but are not the value's canonical encoding (an over-long integer, say).
    #[error("not the canonical encoding")]
    NonCanonical,
}

/// Encodes a value. Encoding the crate's message types cannot fail.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("encoding to a Vec cannot fail for the crate's types")
}

/// Decodes a value that must use every input byte and be encoded canonically: its re-encoding
/// must be exactly `bytes`. Postcard's varints accept over-long forms (7 as `87 00`), so without
/// this check one signed message would have several accepted encodings: a relay could rewrite
/// a frame's header without breaking its signature, and two frames of one message would
/// differ byte for byte (found by the `wire_decode` fuzz target).
pub fn decode<'a, T: Deserialize<'a> + Serialize>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Decodes a frame, checking its length against `max_len` before decoding anything.
pub fn decode_frame(bytes: &[u8], max_len: usize) -> Result<FrameRef<'_>, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    decode(bytes)
}

/// Signs `payload` under `header`'s domain and encodes the frame, with `attachment` unsigned.
pub fn sign_frame(key: &KeyPair, header: Header, payload: &[u8], attachment: &[u8]) -> Bytes {
    let signature = key.sign(&header.domain(), payload);
    FrameRef {
        header,
        payload,
        signature,
        attachment,
    }
    .encode()
}

/// A frame with an all-zero signature, for the kinds its channel authenticates (replies: see
/// [`crate::verify`]).
pub fn unsigned_frame(header: Header, payload: &[u8]) -> Bytes {
    FrameRef {
        header,
        payload,
        signature: Signature([0; 64]),
        attachment: &[],
    }
    .encode()
}

/// The same frame with its attachment replaced (the signature stays valid: it does not cover the
/// attachment). `None` if `frame` does not decode.
pub fn with_attachment(frame: &[u8], attachment: &[u8]) -> Option<Bytes> {
    let decoded: FrameRef<'_> = decode(frame).ok()?;
    Some(
        FrameRef {
            attachment,
            ..decoded
        }
        .encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_canonical_encodings_are_refused() {
        // 7 as a one-byte varint, and the same value over-long.
        assert_eq!(decode::<u64>(&[0x07]), Ok(7));
        assert_eq!(decode::<u64>(&[0x87, 0x00]), Err(DecodeError::NonCanonical));
        let header = Header {
            cluster: 7,
            kind: MessageKind::Prepare,
            sender: Principal::Replica(crate::ReplicaId(1)),
        };
        let canonical = encode(&header);
        assert_eq!(decode::<Header>(&canonical), Ok(header));
        let mut long = vec![0x87, 0x00];
        long.extend_from_slice(&canonical[1..]);
        assert_eq!(decode::<Header>(&long), Err(DecodeError::NonCanonical));
    }
}
