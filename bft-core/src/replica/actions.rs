//! What a step asks the driver to do: persist first, then send.

use crate::ids::{ClientId, Principal, ReplicaId, SeqNum, View};
use crate::messages::{MessageKind, Outcome};
use crate::replica::Rejection;
use bft_crypto::Digest;
use bytes::Bytes;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// One replica.
    Replica(ReplicaId),
    /// Every replica except the sender.
    OtherReplicas,
    /// One client.
    Client(ClientId),
}

/// A signed, encoded frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The destination.
    pub to: Destination,
    /// The frame.
    pub frame: Bytes,
}

/// Something the replica signed that must be durable before the signed message leaves: after a
/// restart, a replica must not sign a conflicting message for the same (view, sequence, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// The message kind.
    pub kind: MessageKind,
    /// The view.
    pub view: View,
    /// The sequence number.
    pub seq: SeqNum,
    /// The batch digest signed for.
    pub digest: Digest,
    /// The signed frame.
    pub frame: Bytes,
}

/// What a replica makes durable, in order, before it sends anything that depends on it. On a
/// restart, [`crate::Replica::recover`] replays these records (after the latest
/// [`DurableCheckpoint`]) to rebuild what the replica knew and, above all, what it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message this replica signed: after a restart it must not sign a conflicting one for the
    /// same (kind, view, sequence number).
    Signed(SignedRecord),
    /// A frame this replica accepted from another replica (a pre-prepare with its batch, a
    /// prepare, a commit, a NEW-VIEW, a committed batch), or one of its own re-recorded by a
    /// [`DurableCheckpoint`]. Replayed through the same checks as when it first arrived.
    Frame(Bytes),
    /// A prepared certificate: a pre-prepare (with its batch attached if the replica has it) and
    /// 2f prepares. Only checkpoints write these: they carry certificates of earlier views that a
    /// later VIEW-CHANGE must include.
    Prepared {
        /// The pre-prepare frame.
        pre_prepare: Bytes,
        /// The prepare frames.
        prepares: Vec<Bytes>,
    },
    /// A commit certificate: the pre-prepare frame with its batch attached, and 2f+1 commit
    /// frames. Only checkpoints write these: batches committed above the stable checkpoint.
    Committed {
        /// The pre-prepare frame, with the batch attached.
        pre_prepare: Bytes,
        /// The commit frames.
        commits: Vec<Bytes>,
    },
}

impl Record {
    /// The signed record, if this is one.
    pub fn as_signed(&self) -> Option<&SignedRecord> {
        match self {
            Record::Signed(record) => Some(record),
            _ => None,
        }
    }

    /// The bytes this record holds, roughly (for accounting).
    pub fn len_bytes(&self) -> usize {
        match self {
            Record::Signed(record) => record.frame.len(),
            Record::Frame(frame) => frame.len(),
            Record::Prepared {
                pre_prepare,
                prepares,
            } => pre_prepare.len() + prepares.iter().map(Bytes::len).sum::<usize>(),
            Record::Committed {
                pre_prepare,
                commits,
            } => pre_prepare.len() + commits.iter().map(Bytes::len).sum::<usize>(),
        }
    }
}

/// A stable checkpoint's state with its proof: the base a restart recovers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StableState {
    /// The checkpoint's sequence number.
    pub seq: SeqNum,
    /// The checkpoint state (service snapshot and client table), as certified.
    pub state: Bytes,
    /// 2f+1 matching CHECKPOINT frames from distinct replicas.
    pub proof: Vec<Bytes>,
}

/// Everything a replica needs to restart from, taken when a checkpoint becomes stable: the stable
/// state, and records that rebuild what the replica holds above it (its view, the pre-prepares
/// and votes of its window, prepared and commit certificates). It supersedes every record
/// persisted before it, so a driver may then drop them (PBFT section 4.3: the log below a stable
/// checkpoint is garbage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableCheckpoint {
    /// The stable checkpoint, if one is stable yet.
    pub stable: Option<StableState>,
    /// Records to replay after restoring `stable`, in order.
    pub records: Vec<Record>,
}

impl DurableCheckpoint {
    /// Encodes the checkpoint (codec encoding; [`DurableCheckpoint::decode`] reads it back).
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(&durable::Encoded::from(self))
    }

    /// Decodes bytes written by [`DurableCheckpoint::encode`].
    pub fn decode(bytes: &[u8]) -> Result<DurableCheckpoint, crate::codec::DecodeError> {
        let encoded: durable::Encoded = crate::codec::decode(bytes)?;
        Ok(encoded.into())
    }
}

/// Where a driver makes records durable. The only way to get a step's frames to send is
/// [`Actions::persist_then_send`], which persists first.
pub trait Storage {
    /// Why persisting failed.
    type Error;

    /// Makes `records` durable (for example, written and fsynced) before returning `Ok`, after
    /// every record persisted before.
    fn persist(&mut self, records: &[Record]) -> Result<(), Self::Error>;

    /// Makes `checkpoint` durable (for example, written to a file atomically). It supersedes
    /// every record persisted before the last `newer` ones, which the storage may then discard;
    /// those `newer` records come after it on recovery. The default keeps nothing (memory).
    fn save_checkpoint(
        &mut self,
        checkpoint: &DurableCheckpoint,
        newer: usize,
    ) -> Result<(), Self::Error> {
        let _ = (checkpoint, newer);
        Ok(())
    }

    /// Whether persisting may wait on I/O (a disk write and fsync). A driver then persists on a
    /// thread of its own, so the replica keeps stepping meanwhile; storage that only keeps
    /// records in memory says `false`, and a driver persists inline, sparing a thread hand-off per
    /// step. The default is `true`.
    fn may_block(&self) -> bool {
        true
    }
}

/// A request the replica executed in this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The batch's sequence number.
    pub seq: SeqNum,
    /// The client.
    pub client: ClientId,
    /// The request's timestamp.
    pub timestamp: u64,
    /// The request's digest.
    pub request: Digest,
    /// The outcome sent to the client.
    pub outcome: Outcome,
}

/// Input the replica refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Who sent it (as authenticated).
    pub from: Principal,
    /// The message kind.
    pub kind: MessageKind,
    /// Why it was refused.
    pub reason: Rejection,
}

/// The effects of one step.
///
/// Frames to send are released only by [`Actions::persist_then_send`], after the records are
/// durable, so no driver can send a vote it might forget in a crash.
#[derive(Debug, Default)]
#[must_use = "a step's actions must be persisted and sent"]
pub struct Actions {
    persist: Vec<Record>,
    send: Vec<Outgoing>,
    /// A checkpoint to make durable, and how many of `persist` it covers (those before it).
    checkpoint: Option<(DurableCheckpoint, usize)>,
    /// Requests executed in this step, in order.
    pub executed: Vec<Executed>,
    /// Batches executed in this step, in order: sequence number and batch digest (an empty batch,
    /// such as a new primary's null request, executes no request but is listed here).
    pub executed_batches: Vec<(SeqNum, Digest)>,
    /// Input refused in this step, with reasons (also counted in the replica's metrics).
    pub rejected: Vec<Rejected>,
}

impl Actions {
    /// Persists a signed record and multicasts its frame to the other replicas (in that order
    /// once the driver calls [`Actions::persist_then_send`]).
    pub(crate) fn persist_and_multicast(&mut self, record: SignedRecord) {
        self.send.push(Outgoing {
            to: Destination::OtherReplicas,
            frame: record.frame.clone(),
        });
        self.persist.push(Record::Signed(record));
    }

    pub(crate) fn persist(&mut self, record: SignedRecord) {
        self.persist.push(Record::Signed(record));
    }

    /// The number of records to persist so far.
    pub(crate) fn persisted_len(&self) -> usize {
        self.persist.len()
    }

    /// Persists an accepted frame at position `at` (before the records derived from it).
    pub(crate) fn persist_frame_at(&mut self, at: usize, frame: Bytes) {
        self.persist
            .insert(at.min(self.persist.len()), Record::Frame(frame));
    }

    pub(crate) fn send(&mut self, outgoing: Outgoing) {
        self.send.push(outgoing);
    }

    /// Sets the checkpoint to make durable after this step's records.
    pub(crate) fn set_checkpoint(&mut self, checkpoint: DurableCheckpoint) {
        self.checkpoint = Some((checkpoint, self.persist.len()));
    }

    /// What must be durable before anything is sent.
    pub fn to_persist(&self) -> &[Record] {
        &self.persist
    }

    /// The signed records among [`Actions::to_persist`].
    pub fn signed_records(&self) -> impl Iterator<Item = &SignedRecord> + '_ {
        self.persist.iter().filter_map(Record::as_signed)
    }

    /// The checkpoint this step asks to make durable (after its records), if any.
    pub fn checkpoint(&self) -> Option<&DurableCheckpoint> {
        self.checkpoint.as_ref().map(|(c, _)| c)
    }

    /// Frames waiting to be released by [`Actions::persist_then_send`] (to inspect, not to send).
    pub fn pending_sends(&self) -> &[Outgoing] {
        &self.send
    }

    /// Appends the actions of a later step, for group commit: a driver steps the replica several
    /// times, absorbs each step's actions into the first, and persists them all with one
    /// [`Actions::persist_then_send`]. Order is kept: records, frames and executions of `later`
    /// come after these; a checkpoint in `later` replaces one here (it covers everything before
    /// it).
    pub fn absorb(&mut self, later: Actions) {
        let offset = self.persist.len();
        self.persist.extend(later.persist);
        self.send.extend(later.send);
        if let Some((checkpoint, covered)) = later.checkpoint {
            self.checkpoint = Some((checkpoint, offset + covered));
        }
        self.executed.extend(later.executed);
        self.executed_batches.extend(later.executed_batches);
        self.rejected.extend(later.rejected);
    }

    /// What [`Actions::persist_then_send`] writes, in order: the checkpoint, if any, then these
    /// records.
    ///
    /// A checkpoint is written before the records that follow it and replaces the ones before
    /// it (it holds what they did). The order matters: records signed after a checkpoint became
    /// stable may lie above the previous checkpoint's window (a primary's next PRE-PREPARE), so a
    /// crash that kept them without their checkpoint would restart a replica that cannot place
    /// them, forgets it signed them, and signs something else for the same sequence number.
    pub fn durable_writes(&self) -> (Option<&DurableCheckpoint>, &[Record]) {
        match &self.checkpoint {
            Some((checkpoint, covered)) => (Some(checkpoint), &self.persist[*covered..]),
            None => (None, &self.persist),
        }
    }

    /// Persists [`Actions::durable_writes`] in `storage` (the checkpoint, if any, then the
    /// records), then returns the frames to send. If persisting fails nothing may be sent: the
    /// error is returned and the frames are dropped.
    pub fn persist_then_send<S: Storage>(self, storage: &mut S) -> Result<Vec<Outgoing>, S::Error> {
        let (checkpoint, records) = self.durable_writes();
        if let Some(checkpoint) = checkpoint {
            storage.save_checkpoint(checkpoint, 0)?;
        }
        if !records.is_empty() {
            storage.persist(records)?;
        }
        Ok(self.send)
    }

    /// True if the step had no effect on the outside world (nothing to persist or send, nothing
    /// executed).
    pub fn is_quiet(&self) -> bool {
        self.persist.is_empty()
            && self.send.is_empty()
            && self.checkpoint.is_none()
            && self.executed.is_empty()
            && self.executed_batches.is_empty()
    }
}

/// Storage that keeps records in memory (tests; the durability issue adds a disk log).
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    /// The latest checkpoint saved.
    pub checkpoint: Option<DurableCheckpoint>,
    /// Every record persisted since that checkpoint, in order.
    pub records: Vec<Record>,
}

impl MemoryStorage {
    /// The signed records held.
    pub fn signed_records(&self) -> impl Iterator<Item = &SignedRecord> + '_ {
        self.records.iter().filter_map(Record::as_signed)
    }
}

impl Storage for MemoryStorage {
    type Error = std::convert::Infallible;
    fn persist(&mut self, records: &[Record]) -> Result<(), Self::Error> {
        self.records.extend_from_slice(records);
        Ok(())
    }

    fn save_checkpoint(
        &mut self,
        checkpoint: &DurableCheckpoint,
        newer: usize,
    ) -> Result<(), Self::Error> {
        self.checkpoint = Some(checkpoint.clone());
        let keep = self.records.len() - newer.min(self.records.len());
        self.records.drain(..keep);
        Ok(())
    }

    fn may_block(&self) -> bool {
        false
    }
}

impl Record {
    /// Encodes the record (codec encoding; [`Record::decode`] reads it back).
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(&durable::EncodedRecord::from(self))
    }

    /// Decodes bytes written by [`Record::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Record, crate::codec::DecodeError> {
        let encoded: durable::EncodedRecord = crate::codec::decode(bytes)?;
        Ok(encoded.into())
    }
}

/// The serde shapes of [`Record`] and [`DurableCheckpoint`].
mod durable {
    use super::{DurableCheckpoint, Record, SignedRecord, StableState};
    use crate::ids::{SeqNum, View};
    use crate::messages::MessageKind;
    use bft_crypto::Digest;
    use bytes::Bytes;
    use serde::{Deserialize, Serialize};
    use serde_bytes::ByteBuf;

    fn buf(bytes: &Bytes) -> ByteBuf {
        ByteBuf::from(bytes.to_vec())
    }

    fn bytes(buf: ByteBuf) -> Bytes {
        Bytes::from(buf.into_vec())
    }

    #[derive(Serialize, Deserialize)]
    pub(super) enum EncodedRecord {
        Signed {
            kind: MessageKind,
            view: View,
            seq: SeqNum,
            digest: Digest,
            frame: ByteBuf,
        },
        Frame(ByteBuf),
        Prepared {
            pre_prepare: ByteBuf,
            prepares: Vec<ByteBuf>,
        },
        Committed {
            pre_prepare: ByteBuf,
            commits: Vec<ByteBuf>,
        },
    }

    impl From<&Record> for EncodedRecord {
        fn from(record: &Record) -> Self {
            match record {
                Record::Signed(r) => EncodedRecord::Signed {
                    kind: r.kind,
                    view: r.view,
                    seq: r.seq,
                    digest: r.digest,
                    frame: buf(&r.frame),
                },
                Record::Frame(frame) => EncodedRecord::Frame(buf(frame)),
                Record::Prepared {
                    pre_prepare,
                    prepares,
                } => EncodedRecord::Prepared {
                    pre_prepare: buf(pre_prepare),
                    prepares: prepares.iter().map(buf).collect(),
                },
                Record::Committed {
                    pre_prepare,
                    commits,
                } => EncodedRecord::Committed {
                    pre_prepare: buf(pre_prepare),
                    commits: commits.iter().map(buf).collect(),
                },
            }
        }
    }

    impl From<EncodedRecord> for Record {
        fn from(record: EncodedRecord) -> Self {
            match record {
                EncodedRecord::Signed {
                    kind,
                    view,
                    seq,
                    digest,
                    frame,
                } => Record::Signed(SignedRecord {
                    kind,
                    view,
                    seq,
                    digest,
                    frame: bytes(frame),
                }),
                EncodedRecord::Frame(frame) => Record::Frame(bytes(frame)),
                EncodedRecord::Prepared {
                    pre_prepare,
                    prepares,
                } => Record::Prepared {
                    pre_prepare: bytes(pre_prepare),
                    prepares: prepares.into_iter().map(bytes).collect(),
                },
                EncodedRecord::Committed {
                    pre_prepare,
                    commits,
                } => Record::Committed {
                    pre_prepare: bytes(pre_prepare),
                    commits: commits.into_iter().map(bytes).collect(),
                },
            }
        }
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Encoded {
        stable: Option<(SeqNum, ByteBuf, Vec<ByteBuf>)>,
        records: Vec<EncodedRecord>,
    }

    impl From<&DurableCheckpoint> for Encoded {
        fn from(checkpoint: &DurableCheckpoint) -> Self {
            Encoded {
                stable: checkpoint
                    .stable
                    .as_ref()
                    .map(|s| (s.seq, buf(&s.state), s.proof.iter().map(buf).collect())),
                records: checkpoint.records.iter().map(EncodedRecord::from).collect(),
            }
        }
    }

    impl From<Encoded> for DurableCheckpoint {
        fn from(encoded: Encoded) -> Self {
            DurableCheckpoint {
                stable: encoded.stable.map(|(seq, state, proof)| StableState {
                    seq,
                    state: bytes(state),
                    proof: proof.into_iter().map(bytes).collect(),
                }),
                records: encoded.records.into_iter().map(Record::from).collect(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Storage that logs the writes it receives, in order.
    #[derive(Default)]
    struct Logged(Vec<String>);

    impl Storage for Logged {
        type Error = std::convert::Infallible;
        fn persist(&mut self, records: &[Record]) -> Result<(), Self::Error> {
            let seqs: Vec<u64> = records
                .iter()
                .filter_map(Record::as_signed)
                .map(|r| r.seq.0)
                .collect();
            self.0.push(format!("records {seqs:?}"));
            Ok(())
        }
        fn save_checkpoint(
            &mut self,
            _checkpoint: &DurableCheckpoint,
            newer: usize,
        ) -> Result<(), Self::Error> {
            self.0.push(format!("checkpoint keeping {newer}"));
            Ok(())
        }
    }

    fn signed(seq: u64) -> SignedRecord {
        SignedRecord {
            kind: MessageKind::PrePrepare,
            view: View(1),
            seq: SeqNum(seq),
            digest: Digest::ZERO,
            frame: Bytes::new(),
        }
    }

    /// A step (or a group of steps) in which a checkpoint became stable between two signed
    /// records: the checkpoint is written first, replacing the record before it, and the record
    /// after it follows. Written the other way round, a crash between the two writes kept a
    /// PRE-PREPARE above the old checkpoint's window without the checkpoint that moved the
    /// window: the restarted primary could not place it and signed another batch for the same
    /// sequence number (simulator seed 324 with clients that multicast their requests).
    #[test]
    fn a_checkpoint_is_durable_before_the_records_signed_after_it() {
        let mut actions = Actions::default();
        actions.persist(signed(44));
        actions.set_checkpoint(DurableCheckpoint {
            stable: None,
            records: Vec::new(),
        });
        actions.persist(signed(45));
        let (checkpoint, records) = actions.durable_writes();
        assert!(checkpoint.is_some());
        assert_eq!(records.len(), 1);
        let mut storage = Logged::default();
        let Ok(sends) = actions.persist_then_send(&mut storage);
        assert!(sends.is_empty());
        assert_eq!(storage.0, ["checkpoint keeping 0", "records [45]"]);

        let mut plain = Actions::default();
        plain.persist(signed(46));
        let mut storage = Logged::default();
        let Ok(_) = plain.persist_then_send(&mut storage);
        assert_eq!(storage.0, ["records [46]"]);
    }
}
