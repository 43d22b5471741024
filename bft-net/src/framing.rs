//! Length-prefixed frames on a QUIC stream: a 4-byte little-endian length, then the frame.
//!
//! [`FrameDecoder`] is sans-IO (bytes in, frames out) so it can be tested and fuzzed without a
//! network. The length is checked against the limit as soon as its 4 bytes arrive, before
//! anything is allocated for the frame; a peer that announces more is refused.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Why a stream's bytes are not a sequence of acceptable frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces a frame over the limit.
    #[error("frame of {len} bytes announced, the limit is {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty frame (no message is empty).
    #[error("empty frame")]
    Empty,
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes received of the unfinished frame (prefix included).
        buffered: usize,
    },
}

/// Splits a byte stream into frames of at most `max` bytes.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buffer: BytesMut,
    /// The length of the frame being received, once its prefix is in.
    pending: Option<usize>,
}

impl FrameDecoder {
    /// A decoder for frames of at most `max` bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            max,
            buffer: BytesMut::new(),
            pending: None,
        }
    }

    /// Appends received bytes. Call [`FrameDecoder::next_frame`] until it returns `Ok(None)`
    /// after each push, so the buffer never holds more than one frame plus one chunk.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an error after which the
    /// stream must be abandoned.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                if self.buffer.len() < LENGTH_PREFIX_BYTES {
                    return Ok(None);
                }
                let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
                prefix.copy_from_slice(&self.buffer[..LENGTH_PREFIX_BYTES]);
                let len = u32::from_le_bytes(prefix) as usize;
                if len > self.max {
                    return Err(FrameError::TooLarge { len, max: self.max });
                }
                if len == 0 {
                    return Err(FrameError::Empty);
                }
                self.buffer.advance(LENGTH_PREFIX_BYTES);
                self.buffer.reserve(len.saturating_sub(self.buffer.len()));
                self.pending = Some(len);
                len
            }
        };
        if self.buffer.len() < len {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// Call when the stream ends: an error if a frame was left unfinished.
    pub fn finish(&self) -> Result<(), FrameError> {
        let buffered = self.buffer.len() + self.pending.map_or(0, |_| LENGTH_PREFIX_BYTES);
        if buffered == 0 {
            Ok(())
        } else {
            Err(FrameError::Truncated { buffered })
        }
    }
}

/// The length prefix of `frame`. `None` if the frame is longer than a `u32` can say.
pub fn length_prefix(frame: &[u8]) -> Option<[u8; LENGTH_PREFIX_BYTES]> {
    u32::try_from(frame.len()).ok().map(u32::to_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for frame in frames {
            bytes.extend_from_slice(&length_prefix(frame).unwrap());
            bytes.extend_from_slice(frame);
        }
        bytes
    }

    #[test]
    fn frames_come_out_whole_whatever_the_chunking() {
        let frames: Vec<Vec<u8>> = (1..40u8).map(|i| vec![i; i as usize * 3]).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let stream = framed(&refs);
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut decoder = FrameDecoder::new(1024);
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                decoder.push(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame.to_vec());
                }
            }
            decoder.finish().unwrap();
            assert_eq!(out, frames, "chunk size {chunk}");
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_frame_arrives() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&101u32.to_le_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        // A length of 4 GiB allocates nothing.
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(decoder.buffer.capacity() < 1024);
    }

    #[test]
    fn empty_and_truncated_frames_are_errors() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&0u32.to_le_bytes());
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&framed(&[b"hello"])[..7]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: 7 }));
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&[1, 0]);
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: 2 }));
    }
}
