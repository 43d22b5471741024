//! `verify`: single and batch signature verification agree.

use crate::replica::{Fixture, signed_request};
use arbitrary::{Result, Unstructured};
use bft_core::messages::{PrePreparePayload, batch_digest};
use bft_core::testkit::{self, CLUSTER_ID};
use bft_core::{Principal, ReplicaId, VerifiedMessage};
use bft_crypto::{BatchVerifier, KeyPair, PublicKey, Signature, SignatureError, verify_raw};
use bytes::Bytes;

/// The eight small-order points of edwards25519 (canonical encodings, and two non-canonical
/// sign-bit variants): the inputs on which ZIP-215 single and batch verification are easiest to
/// get to disagree.
const SMALL_ORDER: [[u8; 32]; 8] = [
    hex32("0100000000000000000000000000000000000000000000000000000000000000"),
    hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    hex32("0000000000000000000000000000000000000000000000000000000000000000"),
    hex32("0000000000000000000000000000000000000000000000000000000000000080"),
    hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
];

const fn hex32(text: &str) -> [u8; 32] {
    let bytes = text.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(bytes[2 * i]) << 4 | nibble(bytes[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

/// Interprets `data` as (key, message, signature) triples — arbitrary bytes, valid signatures by
/// seeded keys with optional corruption, and small-order keys and nonces — and as a few frames
/// (validly signed testkit frames, corrupted, or arbitrary).
///
/// Properties: [`bft_crypto::verify_raw`] on each triple, [`BatchVerifier::verify_each`] and
/// [`BatchVerifier::verify`] agree; [`bft_core::Verifier::verify`] frame by frame and
/// [`bft_core::Verifier::verify_batch`] give the same result for every frame (same error, or the
/// same kind, sender, frame and digest).
pub fn verify(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let triples = triples(&mut u).unwrap_or_default();
    check_triples(&triples);
    let frames = frames(&mut u).unwrap_or_default();
    check_frames(&frames);
}

type Triple = (PublicKey, Vec<u8>, Signature);

fn triples(u: &mut Unstructured<'_>) -> Result<Vec<Triple>> {
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(0..=8u8)? {
        let message: Vec<u8> = {
            let len = u.int_in_range(0..=64usize)?;
            u.bytes(len)?.to_vec()
        };
        let triple = match u.int_in_range(0..=2u8)? {
            0 => (
                PublicKey(u.arbitrary()?),
                message,
                Signature(
                    u.arbitrary::<[[u8; 32]; 2]>()?
                        .concat()
                        .try_into()
                        .expect("64"),
                ),
            ),
            1 => {
                let key = KeyPair::from_seed([u.arbitrary()?; 32]);
                let mut signature = key.sign_raw(&message).0;
                let mut public = key.public();
                let mut message = message;
                match u.int_in_range(0..=4u8)? {
                    0 => {}
                    1 => {
                        let bit = u.int_in_range(0..=511usize)?;
                        signature[bit / 8] ^= 1 << (bit % 8);
                    }
                    2 => public = KeyPair::from_seed([u.arbitrary()?; 32]).public(),
                    3 => message.push(u.arbitrary()?),
                    _ => signature[..32]
                        .copy_from_slice(&SMALL_ORDER[usize::from(u.arbitrary::<u8>()? % 8)]),
                }
                (public, message, Signature(signature))
            }
            _ => {
                let key = SMALL_ORDER[usize::from(u.arbitrary::<u8>()? % 8)];
                let r = SMALL_ORDER[usize::from(u.arbitrary::<u8>()? % 8)];
                let s: [u8; 32] = if u.arbitrary()? {
                    [0; 32]
                } else {
                    u.arbitrary()?
                };
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&r);
                signature[32..].copy_from_slice(&s);
                (PublicKey(key), message, Signature(signature))
            }
        };
        out.push(triple);
    }
    Ok(out)
}

fn check_triples(triples: &[Triple]) {
    let single: Vec<Result<(), SignatureError>> = triples
        .iter()
        .map(|(key, message, signature)| verify_raw(key, message, signature))
        .collect();
    let mut batch = BatchVerifier::new();
    for (key, message, signature) in triples {
        batch.queue(*key, message.as_slice(), *signature);
    }
    let each = batch.verify_each();
    let all_valid = single.iter().all(Result::is_ok);
    assert_eq!(
        batch.verify().is_ok(),
        all_valid,
        "batch verify disagrees with single verification: {single:?} for {triples:?}"
    );
    for (i, (s, b)) in single.iter().zip(&each).enumerate() {
        assert_eq!(
            s.is_ok(),
            b.is_ok(),
            "triple {i}: single {s:?}, batch {b:?}: {:?}",
            triples[i]
        );
    }
}

fn frames(u: &mut Unstructured<'_>) -> Result<Vec<Bytes>> {
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(0..=4u8)? {
        let view = u.int_in_range(0..=3u64)?;
        let seq = u.int_in_range(0..=20u64)?;
        let signer = u.int_in_range(0..=4u32)?;
        let mut frame = match u.int_in_range(0..=4u8)? {
            0 => testkit::prepare(signer, view, seq, bft_crypto::sha256(&[seq as u8])),
            1 => testkit::commit(signer, view, seq, bft_crypto::sha256(&[seq as u8])),
            2 => signed_request(u.int_in_range(1..=3u64)?, seq + 1, &[b'o', view as u8]),
            3 => {
                let requests: Vec<Bytes> = (0..u.int_in_range(0..=2u64)?)
                    .map(|i| signed_request(1 + i % 2, seq + i + 1, b"op"))
                    .collect();
                let fixture = Fixture::get();
                let digests =
                    requests
                        .iter()
                        .filter_map(|r| match fixture.verifier.verify(r.clone()) {
                            Ok(VerifiedMessage::Request(r)) => Some(r.digest()),
                            _ => None,
                        });
                let digest = batch_digest(digests.collect::<Vec<_>>().into_iter());
                PrePreparePayload {
                    view: bft_core::View(view),
                    seq: bft_core::SeqNum(seq),
                    digest,
                    requests: requests
                        .iter()
                        .map(|r| serde_bytes::ByteBuf::from(r.to_vec()))
                        .collect(),
                }
                .sign(
                    &testkit::replica_key(signer),
                    CLUSTER_ID,
                    Principal::Replica(ReplicaId(signer)),
                )
            }
            _ => {
                let len = u.int_in_range(0..=200usize)?;
                Bytes::copy_from_slice(u.bytes(len)?)
            }
        }
        .to_vec();
        if !frame.is_empty() && u.arbitrary()? {
            let bit = u.int_in_range(0..=frame.len() * 8 - 1)?;
            frame[bit / 8] ^= 1 << (bit % 8);
        }
        out.push(Bytes::from(frame));
    }
    Ok(out)
}

fn check_frames(frames: &[Bytes]) {
    let verifier = &Fixture::get().verifier;
    let batch = verifier.verify_batch(frames.to_vec());
    assert_eq!(batch.len(), frames.len(), "one batch result per frame");
    for (i, (frame, batched)) in frames.iter().zip(&batch).enumerate() {
        let single = verifier.verify(frame.clone());
        match (&single, batched) {
            (Ok(a), Ok(b)) => assert_eq!(
                summary(a),
                summary(b),
                "frame {i}: single and batch verification accepted differently"
            ),
            (Err(a), Err(b)) => assert_eq!(a, b, "frame {i}: different rejections"),
            _ => panic!(
                "frame {i}: single {:?} but batch {:?}",
                single.as_ref().map(VerifiedMessage::kind),
                batched.as_ref().map(VerifiedMessage::kind)
            ),
        }
    }
}

fn summary(m: &VerifiedMessage) -> (bft_core::MessageKind, Principal, Bytes, bft_crypto::Digest) {
    let digest = match m {
        VerifiedMessage::Request(v) => v.digest(),
        VerifiedMessage::PrePrepare(v) => v.digest(),
        VerifiedMessage::Prepare(v) => v.digest(),
        VerifiedMessage::Commit(v) => v.digest(),
        VerifiedMessage::Reply(v) => v.digest(),
        VerifiedMessage::Checkpoint(v) => v.digest(),
        VerifiedMessage::FetchState(v) => v.digest(),
        VerifiedMessage::StateManifest(v) => v.digest(),
        VerifiedMessage::StateChunk(v) => v.digest(),
        VerifiedMessage::FetchCommitted(v) => v.digest(),
        VerifiedMessage::CommittedBatch(v) => v.digest(),
        VerifiedMessage::ViewChange(v) => v.digest(),
        VerifiedMessage::NewView(v) => v.digest(),
    };
    (m.kind(), m.sender(), m.frame().clone(), digest)
}
