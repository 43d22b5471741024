//! A deterministic test service: it chains every operation into a digest and answers with the
//! operation's position. The operation `panic` panics.

use crate::{ExecuteContext, RestoreError, Service};
use bft_crypto::{Digest, DigestBuilder};

/// Chains operations into a digest; replies with the operation's position and the operation.
#[derive(Debug, Default, Clone)]
pub struct LogService {
    /// Operations executed.
    pub count: u64,
    /// Digest chain over every executed operation and its client and timestamp.
    pub chain: Digest,
}

impl Service for LogService {
    fn execute(&mut self, context: &ExecuteContext, operation: &[u8]) -> Vec<u8> {
        self.count += 1;
        let mut builder = DigestBuilder::new(b"log service");
        builder
            .update(self.chain.as_bytes())
            .update(&context.client.0.to_le_bytes())
            .update(&context.timestamp.to_le_bytes())
            .update_framed(operation);
        self.chain = builder.finish();
        if operation == b"panic" {
            panic!("the test service panics on request");
        }
        let mut reply = self.count.to_le_bytes().to_vec();
        reply.extend_from_slice(operation);
        reply
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = self.count.to_le_bytes().to_vec();
        out.extend_from_slice(self.chain.as_bytes());
        out
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        if snapshot.len() != 40 {
            return Err(RestoreError(format!(
                "expected 40 bytes, got {}",
                snapshot.len()
            )));
        }
        self.count = u64::from_le_bytes(snapshot[..8].try_into().expect("8 bytes"));
        self.chain = Digest(snapshot[8..].try_into().expect("32 bytes"));
        Ok(())
    }
}
