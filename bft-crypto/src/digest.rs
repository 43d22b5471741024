//! SHA-256 digests.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The all-zero digest, used where no value has been digested yet.
    pub const ZERO: Digest = Digest([0; 32]);

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits identify a digest in logs and test failures.
        write!(f, "{}", &hex::encode(self.0)[..8])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    Digest(Sha256::digest(bytes).into())
}

/// Incremental SHA-256 over several parts.
#[derive(Default, Clone)]
pub struct DigestBuilder(Sha256);

impl DigestBuilder {
    /// Starts a digest whose first input is `label` (a fixed tag that separates uses).
    pub fn new(label: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update((label.len() as u64).to_le_bytes());
        hasher.update(label);
        DigestBuilder(hasher)
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    /// Adds bytes preceded by their length, so that parts cannot be re-split.
    pub fn update_framed(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Finishes the digest.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            sha256(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn framed_parts_cannot_be_resplit() {
        let mut a = DigestBuilder::new(b"t");
        a.update_framed(b"ab").update_framed(b"c");
        let mut b = DigestBuilder::new(b"t");
        b.update_framed(b"a").update_framed(b"bc");
        assert_ne!(a.finish(), b.finish());
    }
}
