//! Requests that clients send every replica directly, over channels authenticated as them.
//!
//! Clients multicast each request to all replicas (as PBFT clients do on retransmission, and as
//! BFT-SMaRt clients always do; Castro and Liskov, OSDI '99 section 4.1). A backup then already
//! holds the exact bytes of most requests the primary's PRE-PREPARE carries, and it received them
//! on a connection whose handshake proved the client's key: the channel authenticates them, as
//! PBFT's MAC authenticators do (section 5.2), so the backup need not check the client's
//! signature again. Only the primary checks it, before it proposes the request, so a batch from a
//! correct primary always carries valid signatures (backups that missed the direct copy, and
//! replicas that later fetch the batch, check them).
//!
//! A backup records the digest of each frame a client sends it directly ([`DirectRequests`]) and
//! does not hand that first copy to the protocol: the core relays a request to the primary and
//! starts its view-change timer only for a retransmission (a second copy), exactly as when
//! clients sent to the primary alone. [`Verifier::verify_batch_at`] and
//! [`Verifier::verify_from_at`] then accept a PRE-PREPARE's embedded request without a signature
//! check when its frame is byte for byte one the same client sent this replica directly.

use super::{VerifiedMessage, Verifier, VerifyError};
use crate::codec;
use crate::ids::{ClientId, Principal};
use crate::messages::MessageKind;
use bft_crypto::{Digest, sha256};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// Frames remembered per client. A correct client has one request outstanding, so two would do;
/// a few more let a lagging backup still match the requests of batches it has not seen yet.
pub const DIRECT_HISTORY: usize = 4;

/// The digests of the last [`DIRECT_HISTORY`] frames each admitted client sent this replica
/// directly. At most that many per client configured, whatever clients send.
#[derive(Debug, Default, Clone)]
pub struct DirectRequests {
    by_client: BTreeMap<ClientId, VecDeque<Digest>>,
}

impl DirectRequests {
    /// An empty record.
    pub fn new() -> Self {
        DirectRequests::default()
    }

    /// Whether `client` sent exactly `frame` to this replica directly (among its last
    /// [`DIRECT_HISTORY`] frames).
    pub fn holds(&self, client: ClientId, frame: &[u8]) -> bool {
        let digest = sha256(frame);
        self.by_client
            .get(&client)
            .is_some_and(|frames| frames.contains(&digest))
    }

    /// Records `frame` from `client`; returns whether it is new (not among the remembered ones).
    fn record(&mut self, client: ClientId, frame: &[u8]) -> bool {
        let digest = sha256(frame);
        let frames = self.by_client.entry(client).or_default();
        if frames.contains(&digest) {
            return false;
        }
        if frames.len() == DIRECT_HISTORY {
            frames.pop_front();
        }
        frames.push_back(digest);
        true
    }
}

/// What a replica does with a frame a client sent it over the client's own channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectAdmission {
    /// A backup's first copy of the request: recorded, and nothing more to do (the primary
    /// proposes it; the PRE-PREPARE's copy is matched against the record).
    Recorded,
    /// Verify the frame fully and step it: this replica is the primary (it proposes the request,
    /// so it checks the signature), or the client sent the same frame again (a retransmission,
    /// which a backup relays to the primary and for which it starts its timer).
    Verify,
}

/// A frame a client's channel may carry, admitted by [`Verifier::admit_direct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmittedRequest {
    /// The session the request is from, as its header names it: the channel's client or another
    /// session of its key. Its signature is not checked yet (the channel vouches for the key).
    pub sender: ClientId,
    /// What the replica does with it next.
    pub admission: DirectAdmission,
}

impl Verifier {
    /// Admits a frame that arrived on a channel authenticated as `client`, at a replica that is
    /// (`primary`) or is not the primary of its current view. Checks the header (cluster, kind,
    /// sender the channel's client or another session of its key, admitted, request size)
    /// without the signature, and records the frame's digest in `direct` under its sender, which
    /// it returns. A frame that fails the checks is refused and not recorded. Frames from clients
    /// are only ever requests.
    pub fn admit_direct(
        &self,
        direct: &mut DirectRequests,
        client: ClientId,
        frame: &Bytes,
        primary: bool,
    ) -> Result<AdmittedRequest, VerifyError> {
        let decoded = codec::decode_frame(frame, self.config.limits.max_request_frame_bytes())?;
        self.check_header(&decoded)?;
        let header = decoded.header;
        if header.kind != MessageKind::Request {
            return Err(VerifyError::WrongRole {
                kind: header.kind,
                sender: header.sender,
            });
        }
        // The channel speaks for every session of its key (`ClusterConfig::same_client`).
        let peer = Principal::Client(client);
        let sender = match header.sender {
            Principal::Client(sender) if self.config.same_client(client, sender) => sender,
            _ => {
                return Err(VerifyError::SenderIsNotPeer {
                    sender: header.sender,
                    peer,
                });
            }
        };
        let new = direct.record(sender, frame);
        let admission = if new && !primary {
            DirectAdmission::Recorded
        } else {
            DirectAdmission::Verify
        };
        Ok(AdmittedRequest { sender, admission })
    }

    /// A frame that arrived at a replica on a channel authenticated as `client`, admitted with
    /// [`Verifier::admit_direct`] and, unless only recorded (`Ok(None)`), verified in full. For
    /// drivers that verify one frame at a time (the test cluster, the simulator).
    pub fn receive_direct(
        &self,
        direct: &mut DirectRequests,
        client: ClientId,
        frame: Bytes,
        primary: bool,
    ) -> Result<Option<VerifiedMessage>, VerifyError> {
        match self
            .admit_direct(direct, client, &frame, primary)?
            .admission
        {
            DirectAdmission::Recorded => Ok(None),
            DirectAdmission::Verify => self.verify_from(Principal::Client(client), frame).map(Some),
        }
    }
}
