//! `wire_decode`: arbitrary bytes into frame and payload decoding.

use bft_core::codec::{self, DecodeError, FrameRef};
use bft_core::messages::{
    Checkpoint, Commit, CommittedBatchPayload, FetchCommitted, FetchState, MessageKind,
    NewViewPayload, PrePrepareHeader, Prepare, Reply, Request, StateChunk, StateManifest,
    ViewChangePayload,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// The frame size limit the wire target decodes under (the real default is 4 MiB; a smaller one
/// lets the fuzzer reach it).
pub const WIRE_LIMIT: usize = 16 << 10;

/// How deep frames nested in payloads (certificates, batches) are followed.
const MAX_DEPTH: usize = 3;

/// Decodes `data` as a frame under [`WIRE_LIMIT`], then its payload and attachment by the
/// header's kind, and frames nested in them; also decodes `data[1..]` as the payload of the kind
/// chosen by `data[0]`.
///
/// Properties: no panic; input over the limit is refused as `TooLarge` before decoding; what
/// decodes re-encodes to exactly the input bytes (frame, payload and attachment: the codec
/// refuses non-canonical encodings since finding F1, see `fuzz/README.md`), and the re-encoding
/// decodes to an equal value.
///
/// Allocation is not measured (that needs a counting global allocator, and the workspace forbids
/// `unsafe`); frames decode borrowed, and every decoded length is bounded by the input length.
pub fn wire_decode(data: &[u8]) {
    assert!(
        reencodes_byte_exact(data),
        "a frame decoded but is not its own canonical encoding"
    );
    check_limit(data);
    check_frame(data, 0);
    if let Some((&selector, payload)) = data.split_first() {
        check_payload(kind_from_byte(selector), payload, 0);
    }
}

/// Whether `data`, if it decodes as a frame, re-encodes to exactly the same bytes (and so do its
/// payload and attachment). `true` for input that does not decode.
pub fn reencodes_byte_exact(data: &[u8]) -> bool {
    let Ok(frame) = codec::decode_frame(data, WIRE_LIMIT) else {
        return true;
    };
    if frame.encode().as_ref() != data {
        return false;
    }
    let exact = |bytes: &[u8], encoded: Option<Vec<u8>>| encoded.is_none_or(|e| e == bytes);
    exact(
        frame.payload,
        payload_reencoding(frame.header.kind, frame.payload),
    ) && (frame.attachment.is_empty()
        || exact(
            frame.attachment,
            codec::decode::<Vec<serde_bytes::ByteBuf>>(frame.attachment)
                .ok()
                .map(|batch| codec::encode(&batch)),
        ))
}

fn check_limit(data: &[u8]) {
    if let Some(limit) = data.len().checked_sub(1) {
        assert!(
            matches!(
                codec::decode_frame(data, limit),
                Err(DecodeError::TooLarge { len, max }) if len == data.len() && max == limit
            ),
            "a frame over the limit was not refused as too large"
        );
    }
}

fn check_frame(data: &[u8], depth: usize) {
    let Ok(frame) = codec::decode_frame(data, WIRE_LIMIT) else {
        return;
    };
    let encoded = frame.encode();
    assert!(
        encoded.len() <= data.len(),
        "re-encoding grew: {} > {}",
        encoded.len(),
        data.len()
    );
    let again: FrameRef<'_> = codec::decode(&encoded).expect("a re-encoded frame decodes");
    assert_eq!(again, frame, "frame changed through re-encoding");
    assert_eq!(
        again.encode(),
        encoded,
        "frame encoding is not a fixed point"
    );
    check_payload(frame.header.kind, frame.payload, depth);
    if !frame.attachment.is_empty()
        && let Some(batch) = roundtrip::<Vec<serde_bytes::ByteBuf>>(frame.attachment)
    {
        for request in batch {
            nested(&request, depth);
        }
    }
}

fn nested(frame: &[u8], depth: usize) {
    if depth < MAX_DEPTH {
        check_frame(frame, depth + 1);
    }
}

fn check_payload(kind: MessageKind, payload: &[u8], depth: usize) {
    match kind {
        MessageKind::Request => drop(roundtrip::<Request>(payload)),
        MessageKind::PrePrepare => drop(roundtrip::<PrePrepareHeader>(payload)),
        MessageKind::Prepare => drop(roundtrip::<Prepare>(payload)),
        MessageKind::Commit => drop(roundtrip::<Commit>(payload)),
        MessageKind::Reply => drop(roundtrip::<Reply>(payload)),
        MessageKind::Checkpoint => drop(roundtrip::<Checkpoint>(payload)),
        MessageKind::FetchState => drop(roundtrip::<FetchState>(payload)),
        MessageKind::StateManifest => drop(roundtrip::<StateManifest>(payload)),
        MessageKind::StateChunk => drop(roundtrip::<StateChunk>(payload)),
        MessageKind::FetchCommitted => drop(roundtrip::<FetchCommitted>(payload)),
        MessageKind::CommittedBatch => {
            if let Some(batch) = roundtrip::<CommittedBatchPayload>(payload) {
                nested(&batch.pre_prepare, depth);
                batch.commits.iter().for_each(|c| nested(c, depth));
            }
        }
        MessageKind::ViewChange => {
            if let Some(vc) = roundtrip::<ViewChangePayload>(payload) {
                vc.checkpoint_proof.iter().for_each(|c| nested(c, depth));
                for certificate in &vc.prepared {
                    nested(&certificate.pre_prepare, depth);
                    certificate.prepares.iter().for_each(|p| nested(p, depth));
                }
            }
        }
        MessageKind::NewView => {
            if let Some(nv) = roundtrip::<NewViewPayload>(payload) {
                nv.view_changes.iter().for_each(|v| nested(v, depth));
                nv.pre_prepares.iter().for_each(|p| nested(p, depth));
            }
        }
    }
}

/// The canonical re-encoding of `payload` as `kind`'s payload type, if it decodes.
fn payload_reencoding(kind: MessageKind, payload: &[u8]) -> Option<Vec<u8>> {
    fn re<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<Vec<u8>> {
        codec::decode::<T>(bytes).ok().map(|v| codec::encode(&v))
    }
    match kind {
        MessageKind::Request => re::<Request>(payload),
        MessageKind::PrePrepare => re::<PrePrepareHeader>(payload),
        MessageKind::Prepare => re::<Prepare>(payload),
        MessageKind::Commit => re::<Commit>(payload),
        MessageKind::Reply => re::<Reply>(payload),
        MessageKind::Checkpoint => re::<Checkpoint>(payload),
        MessageKind::FetchState => re::<FetchState>(payload),
        MessageKind::StateManifest => re::<StateManifest>(payload),
        MessageKind::StateChunk => re::<StateChunk>(payload),
        MessageKind::FetchCommitted => re::<FetchCommitted>(payload),
        MessageKind::CommittedBatch => re::<CommittedBatchPayload>(payload),
        MessageKind::ViewChange => re::<ViewChangePayload>(payload),
        MessageKind::NewView => re::<NewViewPayload>(payload),
    }
}

/// Decodes `bytes` as `T`; if it decodes, checks the re-encoding properties and returns the value.
fn roundtrip<T>(bytes: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let value: T = codec::decode(bytes).ok()?;
    let encoded = codec::encode(&value);
    assert!(
        encoded.len() <= bytes.len(),
        "re-encoding grew: {} > {}",
        encoded.len(),
        bytes.len()
    );
    let again: T = codec::decode(&encoded).expect("a re-encoded value decodes");
    assert_eq!(again, value, "value changed through re-encoding");
    assert_eq!(
        codec::encode(&again),
        encoded,
        "encoding is not a fixed point"
    );
    Some(value)
}

/// Every message kind, indexed by `byte % 13`.
pub(crate) fn kind_from_byte(byte: u8) -> MessageKind {
    const KINDS: [MessageKind; 13] = MessageKind::ALL;
    KINDS[usize::from(byte) % KINDS.len()]
}
