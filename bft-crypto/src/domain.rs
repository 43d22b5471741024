//! Domain separation: what every signature covers besides the payload.

/// The protocol tag at the start of every signed message (16 bytes).
pub const PROTOCOL_TAG: [u8; 16] = *b"bft-rs/pbft/v1\0\0";

/// Length of the header that [`SignatureDomain::write_header`] writes.
pub const DOMAIN_HEADER_LEN: usize = PROTOCOL_TAG.len() + 8 + 1 + 1 + 8;

/// The context a signature is bound to. The signed bytes are
/// `PROTOCOL_TAG || cluster (u64 LE) || kind (u8) || sender_role (u8) || sender_id (u64 LE) ||
/// payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignatureDomain {
    /// The cluster the message belongs to.
    pub cluster: u64,
    /// The message kind (one value per protocol message type).
    pub kind: u8,
    /// The sender's role (for example replica or client).
    pub sender_role: u8,
    /// The sender's id within its role.
    pub sender_id: u64,
}

impl SignatureDomain {
    /// Writes the fixed-size header that precedes the payload in the signed bytes.
    pub fn write_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&PROTOCOL_TAG);
        out.extend_from_slice(&self.cluster.to_le_bytes());
        out.push(self.kind);
        out.push(self.sender_role);
        out.extend_from_slice(&self.sender_id.to_le_bytes());
    }

    /// The exact bytes a signature in this domain covers for `payload`.
    pub fn signed_bytes(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN_HEADER_LEN + payload.len());
        self.write_header(&mut out);
        out.extend_from_slice(payload);
        out
    }
}
