//! Batch verification that accepts exactly what single verification accepts.

use crate::digest::DigestBuilder;
use crate::keys::{PublicKey, Signature};
use crate::{SignatureError, verify_raw};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

/// Collects (key, message, signature) triples and verifies them together.
///
/// Both this and [`crate::verify`] apply the ZIP-215 rule, so a triple is accepted by one if and
/// only if it is accepted by the other (up to the batch check's 2^-128 false-accept bound).
///
/// The batch's random coefficients come from a ChaCha20 generator seeded with a SHA-256 transcript
/// of every queued key, signature and message, so verification needs no OS randomness and an
/// adversary who chooses the signatures cannot know the coefficients before choosing them. (The
/// underlying verifier groups items by key in a hash map whose order varies between processes,
/// so which coefficient meets which signature varies; the accept/reject result does not, up to
/// the 2^-128 bound.)
///
/// Messages may be owned (`Vec<u8>`, the default) or borrowed (`&[u8]`).
pub struct BatchVerifier<M: AsRef<[u8]> = Vec<u8>> {
    items: Vec<(PublicKey, M, Signature)>,
}

impl<M: AsRef<[u8]>> Default for BatchVerifier<M> {
    fn default() -> Self {
        BatchVerifier { items: Vec::new() }
    }
}

impl<M: AsRef<[u8]>> BatchVerifier<M> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of queued triples.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `signature` by `key` over `message` (the complete signed bytes, domain header
    /// included, as built by [`crate::SignatureDomain::signed_bytes`]).
    pub fn queue(&mut self, key: PublicKey, message: M, signature: Signature) {
        self.items.push((key, message, signature));
    }

    /// Verifies the whole batch: `Ok` only if every triple is valid.
    pub fn verify(&self) -> Result<(), SignatureError> {
        match self.items.as_slice() {
            [] => return Ok(()),
            // One triple: the single check is the same rule and costs less than a batch of one.
            [(key, message, signature)] => {
                return verify_raw(key, message.as_ref(), signature)
                    .map_err(|_| SignatureError::Invalid);
            }
            _ => {}
        }
        let mut transcript = DigestBuilder::new(b"bft-rs batch verification v1");
        let mut batch = ed25519_zebra::batch::Verifier::new();
        for (key, message, signature) in &self.items {
            transcript
                .update(&key.0)
                .update(&signature.0)
                .update_framed(message.as_ref());
            let sig = ed25519_zebra::Signature::from_bytes(&signature.to_bytes());
            batch.queue((
                ed25519_zebra::VerificationKeyBytes::from(key.0),
                sig,
                message.as_ref(),
            ));
        }
        let rng = ChaCha20Rng::from_seed(transcript.finish().0);
        batch.verify(rng).map_err(|_| SignatureError::Invalid)
    }

    /// Verifies every triple and reports each one's result, in queue order: one batch check when
    /// all are valid, single checks to find the culprits otherwise.
    pub fn verify_each(&self) -> Vec<Result<(), SignatureError>> {
        if self.verify().is_ok() {
            return vec![Ok(()); self.items.len()];
        }

        self.items
            .iter()
            .map(|(key, message, signature)| verify_raw(key, message.as_ref(), signature))
            .collect()
    }
}
