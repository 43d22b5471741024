//! The event trace: every event is hashed (two runs of one seed must give the same hash), and
//! printed in a readable form when asked (`--trace`).

use crate::network::Endpoint;
use bft_core::Time;
use bft_core::codec::decode_frame;
use bft_core::messages::{Checkpoint, Commit, MessageKind, PrePrepareHeader, Prepare};
use bft_crypto::{Digest, DigestBuilder};

/// Hashes, and optionally prints, the events of one run.
pub struct Trace {
    print: bool,
    hasher: DigestBuilder,
}

fn endpoint_bytes(endpoint: Endpoint) -> [u8; 9] {
    let mut bytes = [0u8; 9];
    match endpoint {
        Endpoint::Replica(id) => bytes[1..5].copy_from_slice(&id.0.to_le_bytes()),
        Endpoint::Client(id) => {
            bytes[0] = 1;
            bytes[1..9].copy_from_slice(&id.0.to_le_bytes());
        }
    }
    bytes
}

fn name(endpoint: Endpoint) -> String {
    match endpoint {
        Endpoint::Replica(id) => format!("R{}", id.0),
        Endpoint::Client(id) => format!("C{}", id.0),
    }
}

/// A one-line description of a frame: its kind and, for votes, view, sequence number and digest.
pub fn describe(frame: &[u8]) -> String {
    let Ok(decoded) = decode_frame(frame, usize::MAX) else {
        return format!("undecodable frame ({} B)", frame.len());
    };
    let kind = decoded.header.kind;
    let payload = decoded.payload;
    let vote = |view: u64, seq: u64, digest: &Digest| {
        format!("v{view} n{seq} d{}", &digest.to_string()[..8])
    };
    let detail = match kind {
        MessageKind::PrePrepare => bft_core::codec::decode::<PrePrepareHeader>(payload)
            .map(|m| vote(m.view.0, m.seq.0, &m.digest))
            .ok(),
        MessageKind::Prepare => bft_core::codec::decode::<Prepare>(payload)
            .map(|m| vote(m.view.0, m.seq.0, &m.digest))
            .ok(),
        MessageKind::Commit => bft_core::codec::decode::<Commit>(payload)
            .map(|m| vote(m.view.0, m.seq.0, &m.digest))
            .ok(),
        MessageKind::Checkpoint => bft_core::codec::decode::<Checkpoint>(payload)
            .map(|m| vote(0, m.seq.0, &m.digest))
            .ok(),
        _ => None,
    };
    format!(
        "{kind:?}{} ({} B)",
        detail.map(|d| format!(" {d}")).unwrap_or_default(),
        frame.len()
    )
}

impl Trace {
    /// A trace that prints if `print`.
    pub fn new(print: bool) -> Trace {
        Trace {
            print,
            hasher: DigestBuilder::new(b"bft-sim trace v1"),
        }
    }

    fn stamp(&mut self, now: Time, tag: u8) {
        self.hasher
            .update(&now.as_nanos().to_le_bytes())
            .update(&[tag]);
    }

    /// A frame delivered.
    pub fn deliver(&mut self, now: Time, from: Endpoint, to: Endpoint, frame: &[u8]) {
        self.stamp(now, 1);
        self.hasher
            .update(&endpoint_bytes(from))
            .update(&endpoint_bytes(to))
            .update_framed(frame);
        if self.print {
            println!(
                "{:>14?} {} -> {} {}",
                now,
                name(from),
                name(to),
                describe(frame)
            );
        }
    }

    /// A node's timer fired.
    pub fn tick(&mut self, now: Time, node: Endpoint, instance: usize) {
        self.stamp(now, 2);
        self.hasher
            .update(&endpoint_bytes(node))
            .update(&(instance as u64).to_le_bytes());
        if self.print {
            println!("{:>14?} {} tick", now, name(node));
        }
    }

    /// Anything else (faults, submissions, completions).
    pub fn note(&mut self, now: Time, text: &str) {
        self.stamp(now, 3);
        self.hasher.update_framed(text.as_bytes());
        if self.print {
            println!("{now:>14?} {text}");
        }
    }

    /// The hash of everything traced.
    pub fn finish(self) -> Digest {
        self.hasher.finish()
    }
}
