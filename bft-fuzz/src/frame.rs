//! `frame_reader`: the transport's length-prefixed framing against a reference parser.

use arbitrary::Unstructured;
use bft_net::framing::{FrameDecoder, FrameError, LENGTH_PREFIX_BYTES};

/// What a whole stream parses to: its frames, then how it ends.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    frames: Vec<Vec<u8>>,
    end: Result<(), FrameError>,
}

/// Interprets `data` as a frame limit (first byte, 1..=256), chunk sizes (the next bytes, until
/// a zero) and a stream (the rest), and feeds the stream to a [`FrameDecoder`] in those chunks.
///
/// Properties: no panic; the frames and the final error (from `next_frame` or `finish`) equal a
/// simple whole-stream reference parser's, whatever the chunking; no frame exceeds the limit.
pub fn frame_reader(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let max = usize::from(u.arbitrary::<u8>().unwrap_or(0)) + 1;
    let mut chunks = Vec::new();
    while let Ok(size) = u.arbitrary::<u8>() {
        if size == 0 || chunks.len() >= 16 {
            break;
        }
        chunks.push(usize::from(size));
    }
    let stream = u.take_rest();
    let expected = reference(stream, max);
    let got = chunked(stream, max, &chunks);
    assert_eq!(got, expected, "chunks {chunks:?}, limit {max}");
    assert!(got.frames.iter().all(|f| !f.is_empty() && f.len() <= max));
    assert_eq!(chunked(stream, max, &[]), expected, "stream pushed whole");
}

fn reference(stream: &[u8], max: usize) -> Parsed {
    let mut frames = Vec::new();
    let mut rest = stream;
    let end = loop {
        if rest.len() < LENGTH_PREFIX_BYTES {
            break if rest.is_empty() {
                Ok(())
            } else {
                Err(FrameError::Truncated {
                    buffered: rest.len(),
                })
            };
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len > max {
            break Err(FrameError::TooLarge { len, max });
        }
        if len == 0 {
            break Err(FrameError::Empty);
        }
        if rest.len() - 4 < len {
            break Err(FrameError::Truncated {
                buffered: rest.len(),
            });
        }
        frames.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    };
    Parsed { frames, end }
}

/// Feeds `stream` in pieces of the given sizes (cycled; the whole stream if none).
fn chunked(stream: &[u8], max: usize, sizes: &[usize]) -> Parsed {
    let mut decoder = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let take = sizes.next().unwrap_or(rest.len()).min(rest.len());
        decoder.push(&rest[..take]);
        rest = &rest[take..];
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(error) => {
                    return Parsed {
                        frames,
                        end: Err(error),
                    };
                }
            }
        }
    }
    Parsed {
        frames,
        end: decoder.finish(),
    }
}
