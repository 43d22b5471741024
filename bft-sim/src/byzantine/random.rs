//! Random choices the attacks share.

use bft_crypto::Digest;
use rand::{Rng, RngExt};
use rand_chacha::ChaCha8Rng;

/// `value` moved by one, up or down (up from zero, down from the maximum).
pub(super) fn shift(value: u64, rng: &mut ChaCha8Rng) -> u64 {
    if value == 0 || (value != u64::MAX && rng.random_bool(0.5)) {
        value + 1
    } else {
        value - 1
    }
}

pub(super) fn random_digest(rng: &mut ChaCha8Rng) -> Digest {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    Digest(bytes)
}

pub(super) fn random_digest_except(current: Digest, rng: &mut ChaCha8Rng) -> Digest {
    let digest = random_digest(rng);
    if digest == current {
        Digest(digest.0.map(|b| !b))
    } else {
        digest
    }
}

pub(super) fn pick<T: Clone>(items: &[T], rng: &mut ChaCha8Rng) -> Option<T> {
    if items.is_empty() {
        return None;
    }
    Some(items[rng.random_range(0..items.len())].clone())
}
