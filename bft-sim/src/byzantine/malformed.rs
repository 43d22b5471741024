//! Byte-level attacks: [`Attack::InvalidSignature`], [`Attack::Oversized`] and
//! [`Attack::Garbage`].
//!
//! [`Attack::InvalidSignature`]: super::Attack::InvalidSignature
//! [`Attack::Oversized`]: super::Attack::Oversized
//! [`Attack::Garbage`]: super::Attack::Garbage

use super::frames::flip_signature;
use super::{Adversary, OVERSIZE_EXTRA_BYTES};
use bft_core::codec;
use bytes::Bytes;
use rand::{Rng, RngExt};
use rand_chacha::ChaCha8Rng;

impl Adversary {
    pub(super) fn invalid_signature(
        &self,
        frame: &Bytes,
        rng: &mut ChaCha8Rng,
    ) -> Option<Vec<Bytes>> {
        codec::decode_frame(frame, self.max_len()).ok()?;
        Some(vec![Bytes::from(flip_signature(frame, rng))])
    }

    pub(super) fn oversized(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Bytes {
        let target = self
            .max_len()
            .saturating_add(rng.random_range(1..=OVERSIZE_EXTRA_BYTES));
        let len = if frame.len() < target {
            target
        } else {
            frame
                .len()
                .saturating_add(rng.random_range(1..=OVERSIZE_EXTRA_BYTES))
        };
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(frame);
        bytes.resize(len, 0);
        Bytes::from(bytes)
    }

    pub(super) fn garbage(&self, frame: &Bytes, rng: &mut ChaCha8Rng) -> Bytes {
        let random = |rng: &mut ChaCha8Rng| {
            let max = frame.len().max(16).min(self.max_len());
            let mut bytes = vec![0u8; rng.random_range(0..=max)];
            rng.fill_bytes(&mut bytes);
            Bytes::from(bytes)
        };
        match rng.random_range(0..3u8) {
            0 => random(rng),
            1 if !frame.is_empty() => frame.slice(..rng.random_range(0..frame.len())),
            _ => {
                // One bit of one payload byte (anywhere, if the frame does not decode).
                let payload = codec::decode_frame(frame, self.max_len())
                    .ok()
                    .and_then(|decoded| {
                        let start = (decoded.payload.as_ptr() as usize)
                            .checked_sub(frame.as_ptr() as usize)?;
                        let end = start.checked_add(decoded.payload.len())?;
                        (start < end && end <= frame.len()).then_some(start..end)
                    });
                let range = match payload {
                    Some(range) => range,
                    None if !frame.is_empty() => 0..frame.len(),
                    None => return random(rng),
                };
                let mut bytes = frame.to_vec();
                bytes[rng.random_range(range)] ^= 1 << rng.random_range(0..8u8);
                Bytes::from(bytes)
            }
        }
    }
}
