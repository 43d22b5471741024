//! Cryptography for the BFT replication library: ed25519 keys and signatures, and SHA-256 digests.
//!
//! # Verification rule: ZIP-215
//!
//! Signature checks are consensus-critical. If one replica's batch verifier accepted a signature
//! that another replica's single verifier rejected, their quorum certificates would disagree and
//! correct replicas could diverge. Plain RFC 8032 leaves implementations free to choose between
//! the cofactorless equation `[s]B = R + [k]A` and the cofactored one `[8][s]B = [8]R + [8][k]A`,
//! and batch verification can only use the cofactored one; libraries therefore disagree on
//! signatures built from small-order or mixed-order points.
//!
//! This crate uses one rule everywhere, [ZIP-215] as implemented by the `ed25519-zebra` crate:
//!
//! * `A` and `R` must decode to curve points; non-canonical encodings are accepted;
//! * `s` must be canonical (`s < l`);
//! * the cofactored equation `[8][s]B = [8]R + [8][k]A` must hold.
//!
//! Single ([`verify`]) and batch ([`BatchVerifier`]) verification both apply exactly this rule,
//! so they accept exactly the same set of signatures (batch verification may accept an invalid
//! batch only with probability below 2^-128). Keys that a cluster is configured with are
//! additionally checked to be canonical and of prime order ([`PublicKey::check_strong`]), because a
//! small-order key admits signatures on every message under any cofactored rule.
//!
//! # Domain separation
//!
//! Every signature covers a [`SignatureDomain`]: a fixed protocol tag, the cluster id, the message
//! kind and the sender, followed by the payload. A signature made for one message kind, sender or
//! cluster therefore never verifies as another.
//!
//! [ZIP-215]: https://zips.z.cash/zip-0215
#![forbid(unsafe_code)]

mod batch;
mod digest;
mod domain;
mod keys;

pub use batch::BatchVerifier;
pub use digest::{Digest, DigestBuilder, sha256};
pub use domain::{DOMAIN_HEADER_LEN, PROTOCOL_TAG, SignatureDomain};
pub use keys::{KeyFileError, KeyPair, PublicKey, Signature, WeakKeyError};

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key bytes do not decode to a curve point.
    #[error("public key is not a valid curve point")]
    MalformedPublicKey,
    /// The signature does not satisfy the ZIP-215 verification rule for this key and message.
    #[error("signature does not verify")]
    Invalid,
}

/// Verifies `signature` by `key` over the domain header followed by `payload`, with the ZIP-215
/// rule (see the crate documentation).
pub fn verify(
    key: &PublicKey,
    domain: &SignatureDomain,
    payload: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    let message = domain.signed_bytes(payload);
    verify_raw(key, &message, signature)
}

/// Verifies `signature` by `key` over `message` exactly as given (no domain header is added).
///
/// Use [`verify`] for protocol messages; this exists for callers that have already built the
/// domain-separated bytes, for example to digest them as well.
pub fn verify_raw(
    key: &PublicKey,
    message: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    PreparedKey::new(key)?.verify_raw(message, signature)
}

/// A public key decoded to its curve point once, for checking many signatures by the same key:
/// each check then skips decoding the key (about a quarter of a single verification's cost).
/// Accepts exactly what [`verify_raw`] accepts with the same key.
#[derive(Clone, Copy, Debug)]
pub struct PreparedKey {
    key: ed25519_zebra::VerificationKey,
}

impl PreparedKey {
    /// Decodes `key`; fails as [`verify_raw`] would for every signature if it is not a point.
    pub fn new(key: &PublicKey) -> Result<PreparedKey, SignatureError> {
        let key = ed25519_zebra::VerificationKey::try_from(key.to_bytes())
            .map_err(|_| SignatureError::MalformedPublicKey)?;
        Ok(PreparedKey { key })
    }

    /// Verifies `signature` by this key over `message` exactly as given, with the ZIP-215 rule.
    pub fn verify_raw(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let sig = ed25519_zebra::Signature::from_bytes(&signature.to_bytes());
        self.key
            .verify(&sig, message)
            .map_err(|_| SignatureError::Invalid)
    }
}
