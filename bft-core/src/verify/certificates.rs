//! Verifying the frames that certificates embed: committed batches, VIEW-CHANGE and NEW-VIEW.
//! Embedded kinds are checked before anything is decoded, and no container kind embeds itself,
//! so nesting stops at two levels (a NEW-VIEW embeds VIEW-CHANGEs, which embed only votes,
//! pre-prepares and checkpoints).

use super::{Channel, Embedded, Mode, VerifiedMessage, Verifier, VerifyError};
use crate::codec;
use crate::messages::{
    CommittedBatch, CommittedBatchPayload, MessageKind, NewView, NewViewPayload,
    PreparedCertificate, ViewChange, ViewChangePayload,
};
use bytes::Bytes;

impl Verifier {
    /// Verifies the frames a certificate embeds; frame `i` must be of kind `kinds[i]`. Kinds are
    /// checked before anything is verified, and no container kind embeds itself (a NEW-VIEW
    /// embeds VIEW-CHANGEs, which embed only votes, pre-prepares and checkpoints), so nesting is
    /// at most two levels deep.
    pub(super) fn verify_embedded(
        &self,
        frames: Vec<serde_bytes::ByteBuf>,
        kinds: &[MessageKind],
    ) -> Result<Vec<VerifiedMessage>, VerifyError> {
        debug_assert_eq!(frames.len(), kinds.len());
        let max = self.config.limits.max_message_bytes;
        let embed = |index, error| VerifyError::Embedded {
            index,
            error: Box::new(error),
        };
        for (index, (frame, expected)) in frames.iter().zip(kinds).enumerate() {
            let kind = codec::decode_frame(frame, max)
                .map_err(|e| embed(index, e.into()))?
                .header
                .kind;
            if kind != *expected {
                return Err(embed(index, VerifyError::UnexpectedEmbeddedKind(kind)));
            }
        }
        let frames = frames
            .into_iter()
            .map(|f| (Channel::Unauthenticated, Bytes::from(f.into_vec())))
            .collect();
        self.verify_all(frames, Mode::Batch, Embedded::Signed)
            .into_iter()
            .enumerate()
            .map(|(index, result)| result.map_err(|error| embed(index, error)))
            .collect()
    }

    pub(super) fn verify_committed_batch(
        &self,
        payload: CommittedBatchPayload,
    ) -> Result<CommittedBatch, VerifyError> {
        if payload.commits.len() > self.config.n() {
            return Err(VerifyError::TooManyEmbedded(payload.commits.len()));
        }
        let mut kinds = vec![MessageKind::PrePrepare];
        kinds.extend(payload.commits.iter().map(|_| MessageKind::Commit));
        let mut frames = vec![payload.pre_prepare];
        frames.extend(payload.commits);
        let mut messages = self.verify_embedded(frames, &kinds)?.into_iter();
        let pre_prepare = messages
            .next()
            .and_then(VerifiedMessage::into_pre_prepare)
            .expect("kind checked");
        let commits = messages
            .map(|m| m.into_commit().expect("kind checked"))
            .collect();
        Ok(CommittedBatch {
            pre_prepare: Box::new(pre_prepare),
            commits,
        })
    }

    pub(super) fn verify_view_change(
        &self,
        payload: ViewChangePayload,
    ) -> Result<ViewChange, VerifyError> {
        let n = self.config.n();
        let window = usize::try_from(self.config.limits.window).unwrap_or(usize::MAX);
        let lists = std::iter::once((payload.checkpoint_proof.len(), n))
            .chain(std::iter::once((payload.prepared.len(), window)))
            .chain(payload.prepared.iter().map(|c| (c.prepares.len(), n)));
        if let Some((len, _)) = lists.into_iter().find(|(len, max)| len > max) {
            return Err(VerifyError::TooManyEmbedded(len));
        }
        let mut kinds = vec![MessageKind::Checkpoint; payload.checkpoint_proof.len()];
        let mut frames = payload.checkpoint_proof;
        let shapes: Vec<usize> = payload.prepared.iter().map(|c| c.prepares.len()).collect();
        for certificate in payload.prepared {
            kinds.push(MessageKind::PrePrepare);
            frames.push(certificate.pre_prepare);
            kinds.extend(certificate.prepares.iter().map(|_| MessageKind::Prepare));
            frames.extend(certificate.prepares);
        }
        let mut messages = self.verify_embedded(frames, &kinds)?.into_iter();
        let proof_len = kinds.len() - shapes.iter().map(|p| p + 1).sum::<usize>();
        let checkpoint_proof = messages
            .by_ref()
            .take(proof_len)
            .map(|m| m.into_checkpoint().expect("kind checked"))
            .collect();
        let prepared = shapes
            .into_iter()
            .map(|prepares| PreparedCertificate {
                pre_prepare: messages
                    .next()
                    .and_then(VerifiedMessage::into_pre_prepare)
                    .expect("kind checked"),
                prepares: messages
                    .by_ref()
                    .take(prepares)
                    .map(|m| m.into_prepare().expect("kind checked"))
                    .collect(),
            })
            .collect();
        Ok(ViewChange {
            new_view: payload.new_view,
            stable_seq: payload.stable_seq,
            checkpoint_proof,
            prepared,
        })
    }

    pub(super) fn verify_new_view(&self, payload: NewViewPayload) -> Result<NewView, VerifyError> {
        if payload.view_changes.len() > self.config.n() {
            return Err(VerifyError::TooManyEmbedded(payload.view_changes.len()));
        }
        if payload.pre_prepares.len() as u64 > self.config.limits.window {
            return Err(VerifyError::TooManyEmbedded(payload.pre_prepares.len()));
        }
        let mut kinds = vec![MessageKind::ViewChange; payload.view_changes.len()];
        kinds.extend(payload.pre_prepares.iter().map(|_| MessageKind::PrePrepare));
        let count = payload.view_changes.len();
        let mut frames = payload.view_changes;
        frames.extend(payload.pre_prepares);
        let mut messages = self.verify_embedded(frames, &kinds)?.into_iter();
        let view_changes = messages
            .by_ref()
            .take(count)
            .map(|m| m.into_view_change().expect("kind checked"))
            .collect();
        let pre_prepares = messages
            .map(|m| m.into_pre_prepare().expect("kind checked"))
            .collect();
        Ok(NewView {
            view: payload.view,
            view_changes,
            pre_prepares,
        })
    }
}
