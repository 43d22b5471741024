//! The simulator's only source of randomness: one seeded ChaCha stream per run.

use rand::RngExt;
use std::time::Duration;

/// The seeded generator every random choice of a run comes from.
pub type SimRng = rand_chacha::ChaCha8Rng;

/// True with probability `p` (0 and 1 are exact, and draw nothing for 0).
pub fn chance(rng: &mut SimRng, p: f64) -> bool {
    p > 0.0 && rng.random_bool(p.min(1.0))
}

/// One of `items`, uniformly.
///
/// # Panics
///
/// If `items` is empty (callers pass constant, non-empty slices).
pub fn pick<'a, T>(rng: &mut SimRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// An exponentially distributed duration with mean `mean` (by inversion), capped at 50 means.
pub fn exponential(rng: &mut SimRng, mean: Duration) -> Duration {
    let uniform: f64 = rng.random::<f64>();
    let factor = (-(1.0 - uniform).ln()).min(50.0);
    mean.mul_f64(factor)
}
