//! `replica_step`: one replica under an arbitrary sequence of inputs.

use arbitrary::{Result, Unstructured};
use bft_core::codec::{self, FrameRef, Header};
use bft_core::messages::{
    Checkpoint, Commit, MessageKind, PrePreparePayload, Prepare, Request, ViewChangePayload,
    WireMessage, batch_digest,
};
use bft_core::testkit::{self, CLUSTER_ID, service::LogService};
use bft_core::{
    ClientId, ClusterConfig, Input, Principal, Replica, ReplicaId, SeqNum, Time, VerifiedMessage,
    Verifier, View,
};
use bft_crypto::{Digest, KeyPair};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Most inputs one run feeds the replica.
const MAX_STEPS: usize = 64;

/// The cluster every target uses: the testkit's f = 1 cluster with clients 1 and 2, and small
/// limits so the window, checkpoints and buffers are reachable.
pub(crate) struct Fixture {
    /// The configuration.
    pub(crate) config: Arc<ClusterConfig>,
    /// Its verifier.
    pub(crate) verifier: Verifier,
}

impl Fixture {
    /// The shared fixture (built once: key derivation is not free).
    pub(crate) fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let mut config = testkit::config(1, 2);
            config.limits.window = 16;
            config.limits.checkpoint_interval = 4;
            config.limits.max_in_flight_batches = 4;
            config.limits.max_future_messages_per_peer = 4;
            config.limits.max_batch_requests = 4;
            let config = Arc::new(config);
            let verifier = Verifier::new(config.clone()).expect("valid fixture config");
            Fixture { config, verifier }
        })
    }
}

/// A request from testkit client `client` (ids above 2 are not admitted).
pub(crate) fn signed_request(client: u64, timestamp: u64, operation: &[u8]) -> Bytes {
    Request {
        timestamp,
        operation: operation.to_vec(),
    }
    .sign(
        &testkit::client_key(client),
        CLUSTER_ID,
        Principal::Client(ClientId(client)),
    )
}

/// How a generated frame is authenticated.
#[derive(Clone, Copy)]
enum Auth {
    /// Signed with the sender's configured key.
    Valid,
    /// Valid, then one signature bit flipped.
    FlippedBit(u16),
    /// Signed with a key that is not the sender's.
    Foreign,
}

/// A replica under test and what the checks remember across steps.
struct Harness {
    replica: Replica<LogService>,
    now: Time,
    /// Every record the replica asked to persist, by (kind, view, seq): the digest and frame.
    signed: BTreeMap<(MessageKind, View, SeqNum), (Digest, Bytes)>,
    /// Digests worth reusing in generated votes: batches proposed and records signed.
    digests: Vec<Digest>,
}

/// Interprets `data` as the id of a replica (first byte, of 4) and a sequence of inputs to it:
/// prepares, commits, checkpoints, pre-prepares with small batches of signed requests, view
/// changes with empty certificates, client requests (admitted or not), raw bytes, and timer
/// ticks at advancing times. Generated frames come from any member, a non-member id, or carry a
/// flipped signature bit or a foreign key's signature; every frame goes through
/// [`Verifier::verify`] first and refusals are fine.
///
/// Properties, after every step (debug builds also run the replica's own invariant check): no
/// panic; `status()` within the configured bounds (log slots within the window, at most `n` view
/// changes held, at most `n * max_future_messages_per_peer` future messages, at most one record
/// per admitted client); and the replica never asks to persist two records with the same
/// (kind, view, seq) but a different digest (for view changes and new views: different frames).
pub fn replica_step(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let fixture = Fixture::get();
    let id = ReplicaId(u32::from(u.arbitrary::<u8>().unwrap_or(0) % 4));
    let replica = Replica::new(
        fixture.config.clone(),
        id,
        testkit::replica_key(id.0),
        LogService::default(),
    )
    .expect("valid replica");
    let mut harness = Harness {
        replica,
        now: Time::ZERO,
        signed: BTreeMap::new(),
        digests: Vec::new(),
    };
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(input) = harness.next_input(&mut u) else {
            break;
        };
        if let Some(input) = input {
            harness.step(input);
        }
    }
}

impl Harness {
    /// The next input, or `None` if the generated frame was refused by the verifier.
    fn next_input(&mut self, u: &mut Unstructured<'_>) -> Result<Option<Input>> {
        let frame = match u.int_in_range(0..=9u8)? {
            0 | 1 => {
                let (view, seq, digest) = self.slot(u)?;
                self.vote(u, &Prepare { view, seq, digest })?
            }
            2 | 3 => {
                let (view, seq, digest) = self.slot(u)?;
                self.vote(u, &Commit { view, seq, digest })?
            }
            4 => {
                let seq = SeqNum(4 * u.int_in_range(0..=6u64)?);
                let digest = self.digest(u)?;
                self.vote(u, &Checkpoint { seq, digest })?
            }
            5 => self.pre_prepare(u)?,
            6 => {
                let client = u.int_in_range(1..=3u64)?;
                let timestamp = u.int_in_range(1..=8u64)?;
                signed_request(client, timestamp, &[b'o', u.arbitrary()?])
            }
            7 => {
                let payload = ViewChangePayload {
                    new_view: View(u.int_in_range(0..=4u64)?),
                    stable_seq: SeqNum(4 * u.int_in_range(0..=2u64)?),
                    checkpoint_proof: Vec::new(),
                    prepared: Vec::new(),
                };
                self.vote(u, &payload)?
            }
            8 => {
                let len = u.int_in_range(0..=64usize)?;
                Bytes::copy_from_slice(u.bytes(len)?)
            }
            _ => {
                let due = self
                    .replica
                    .poll_timeout()
                    .filter(|_| u.arbitrary().unwrap_or(false));
                let delta = u64::from(u.int_in_range(0..=3000u16)?) * 1_000_000;
                let later = Time::from_nanos(self.now.as_nanos().saturating_add(delta));
                self.now = due.map_or(later, |t| t.max(self.now));
                return Ok(Some(Input::Tick));
            }
        };
        Ok(Fixture::get()
            .verifier
            .verify(frame)
            .ok()
            .map(Input::Message))
    }

    fn slot(&mut self, u: &mut Unstructured<'_>) -> Result<(View, SeqNum, Digest)> {
        Ok((
            View(u.int_in_range(0..=3u64)?),
            SeqNum(u.int_in_range(0..=20u64)?),
            self.digest(u)?,
        ))
    }

    /// A digest the replica has seen or signed, or one of a few arbitrary ones.
    fn digest(&self, u: &mut Unstructured<'_>) -> Result<Digest> {
        let pick = usize::from(u.arbitrary::<u8>()?);
        Ok(match self.digests.len() {
            0 => bft_crypto::sha256(&[pick as u8 % 3]),
            len if pick < 200 => self.digests[len - 1 - pick % len],
            _ => bft_crypto::sha256(&[pick as u8 % 3]),
        })
    }

    /// A sender (members 0..=3, non-member 4) and authentication.
    fn sender(u: &mut Unstructured<'_>) -> Result<(u32, Auth)> {
        let signer = u.int_in_range(0..=4u32)?;
        let auth = match u.int_in_range(0..=9u8)? {
            0 => Auth::FlippedBit(u.int_in_range(0..=511u16)?),
            1 => Auth::Foreign,
            _ => Auth::Valid,
        };
        Ok((signer, auth))
    }

    /// `message` as a frame from an arbitrary sender and authentication.
    fn vote<M: WireMessage>(&self, u: &mut Unstructured<'_>, message: &M) -> Result<Bytes> {
        let (signer, auth) = Self::sender(u)?;
        let payload = codec::encode(message);
        Ok(frame(signer, auth, M::KIND, &payload, &[]))
    }

    fn pre_prepare(&mut self, u: &mut Unstructured<'_>) -> Result<Bytes> {
        let (signer, auth) = Self::sender(u)?;
        let view = View(u.int_in_range(0..=3u64)?);
        let seq = SeqNum(u.int_in_range(0..=20u64)?);
        let mut requests = Vec::new();
        for _ in 0..u.int_in_range(0..=2u8)? {
            let client = u.int_in_range(1..=2u64)?;
            let timestamp = u.int_in_range(1..=8u64)?;
            requests.push(signed_request(client, timestamp, &[b'o', u.arbitrary()?]));
        }
        let digests: Vec<Digest> = requests
            .iter()
            .filter_map(|r| match Fixture::get().verifier.verify(r.clone()) {
                Ok(VerifiedMessage::Request(r)) => Some(r.digest()),
                _ => None,
            })
            .collect();
        let digest = if u.int_in_range(0..=9u8)? == 0 {
            self.digest(u)?
        } else {
            batch_digest(digests.into_iter())
        };
        self.digests.push(digest);
        let payload = PrePreparePayload {
            view,
            seq,
            digest,
            requests: requests
                .iter()
                .map(|r| serde_bytes::ByteBuf::from(r.to_vec()))
                .collect(),
        };
        // Usually with its batch; sometimes without (the form certificates carry).
        let attachment = if payload.requests.is_empty() || !u.arbitrary::<bool>()? {
            Vec::new()
        } else {
            bft_core::messages::encode_batch(&payload.requests)
        };
        Ok(frame(
            signer,
            auth,
            MessageKind::PrePrepare,
            &codec::encode(&payload.header()),
            &attachment,
        ))
    }

    fn step(&mut self, input: Input) {
        let actions = self.replica.step(self.now, input);
        for record in actions.signed_records() {
            let key = (record.kind, record.view, record.seq);
            let frames_matter =
                matches!(record.kind, MessageKind::ViewChange | MessageKind::NewView);
            if let Some((digest, frame)) = self.signed.get(&key) {
                assert_eq!(
                    *digest, record.digest,
                    "replica signed two {:?} for view {:?}, seq {:?} with different digests",
                    record.kind, record.view, record.seq
                );
                if frames_matter {
                    assert_eq!(
                        *frame, record.frame,
                        "replica signed two different {:?} for view {:?}",
                        record.kind, record.view
                    );
                }
            } else {
                self.signed
                    .insert(key, (record.digest, record.frame.clone()));
                if self.digests.len() < 64 {
                    self.digests.push(record.digest);
                }
            }
        }
        self.check_status();
    }

    fn check_status(&self) {
        let config = &Fixture::get().config;
        let status = self.replica.status();
        let n = config.n();
        let window = usize::try_from(config.limits.window).expect("small window");
        assert!(
            status.log_slots <= window,
            "log slots {} > window",
            status.log_slots
        );
        assert!(
            status.view_changes_held <= n,
            "{} view changes held",
            status.view_changes_held
        );
        assert!(
            status.future_messages_held <= n * config.limits.max_future_messages_per_peer,
            "{} future messages held",
            status.future_messages_held
        );
        assert!(
            status.client_records <= config.clients.len(),
            "{} client records",
            status.client_records
        );
        assert!(status.low_watermark <= status.last_executed || status.fetching_state.is_some());
    }
}

/// A frame from replica `signer` (4 is not a member) of `kind` with `payload`.
fn frame(signer: u32, auth: Auth, kind: MessageKind, payload: &[u8], attachment: &[u8]) -> Bytes {
    let header = Header {
        cluster: CLUSTER_ID,
        kind,
        sender: Principal::Replica(ReplicaId(signer)),
    };
    let key = match auth {
        Auth::Foreign => KeyPair::from_seed([0xf0; 32]),
        _ => testkit::replica_key(signer),
    };
    let mut signature = key.sign(&header.domain(), payload);
    if let Auth::FlippedBit(bit) = auth {
        signature.0[usize::from(bit / 8)] ^= 1 << (bit % 8);
    }
    FrameRef {
        header,
        payload,
        signature,
        attachment,
    }
    .encode()
}
