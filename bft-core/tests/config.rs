//! Cluster configuration validation: every wrong value is refused with a `ConfigError` that names
//! the field at fault, and the limits a valid configuration sets are consistent with the frames
//! the protocol builds (PBFT, Castro and Liskov, OSDI'99: n = 3f+1 replicas, section 4; the
//! window, section 4.2; client requests, section 4.1).

use bft_core::testkit as harness;

use bft_core::config::{PER_REQUEST_OVERHEAD_BYTES, PRE_PREPARE_OVERHEAD_BYTES};
use bft_core::messages::{PrePreparePayload, Request, WireMessage, batch_digest};
use bft_core::{
    ClientId, ClusterConfig, ConfigError, Principal, Replica, ReplicaId, SeqNum, VerifiedMessage,
    Verifier, View,
};
use bft_crypto::PublicKey;
use harness::service::LogService;
use harness::{client_key, replica_key};
use std::sync::Arc;
use std::time::Duration;

/// The field `validate` names for `config`, which must be invalid.
fn field(config: &ClusterConfig) -> &'static str {
    match config.validate() {
        Ok(()) => panic!("accepted an invalid configuration: {config:?}"),
        Err(ConfigError { field, reason }) => {
            assert!(!reason.is_empty());
            field
        }
    }
}

/// A valid configuration (n = 4, two clients) changed by `edit`.
fn edited(edit: impl FnOnce(&mut ClusterConfig)) -> ClusterConfig {
    let mut config = harness::config(1, 2);
    config.validate().expect("the base configuration is valid");
    edit(&mut config);
    config
}

/// The encoding of the identity point: a small-order point, under which (with the cofactored
/// verification rule) forged signatures verify.
const IDENTITY_POINT: [u8; 32] = {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes
};

/// Section 4 ("f = floor((n-1)/3)"; a BFT cluster tolerates at least one fault): f = 0 is refused
/// as "f", and so is an f for which 3f+1 overflows.
#[test]
fn f_must_be_positive() {
    assert_eq!(field(&edited(|c| c.f = 0)), "f");
    assert_eq!(field(&edited(|c| c.f = usize::MAX)), "f");
}

/// Section 4 (n = 3f+1 replicas): one replica too few or too many is refused as "replicas".
#[test]
fn replica_count_must_be_three_f_plus_one() {
    assert_eq!(field(&edited(|c| c.replicas.truncate(3))), "replicas");
    assert_eq!(
        field(&edited(|c| c.replicas.push(replica_key(4).public()))),
        "replicas"
    );
    assert_eq!(field(&edited(|c| c.f = 2)), "replicas");
}

/// Section 4 (quorums count distinct replicas, so each member needs its own key): a replica key
/// used twice is refused as "replicas".
#[test]
fn replica_keys_must_be_distinct() {
    assert_eq!(
        field(&edited(|c| c.replicas[3] = c.replicas[1])),
        "replicas"
    );
}

/// Section 4 (signatures identify members): a small-order key, here the identity point, accepts
/// forged signatures and is refused as "replicas"; for a client as "clients". Bytes that are not a
/// curve point are refused too.
#[test]
fn weak_keys_are_refused() {
    assert_eq!(
        field(&edited(|c| c.replicas[2] = PublicKey(IDENTITY_POINT))),
        "replicas"
    );
    assert_eq!(
        field(&edited(|c| {
            c.clients.insert(ClientId(1), PublicKey(IDENTITY_POINT));
        })),
        "clients"
    );
    // y = 2 is not the y-coordinate of a curve point.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    assert_eq!(
        field(&edited(|c| c.replicas[0] = PublicKey(not_a_point))),
        "replicas"
    );
}

/// Section 4.1 (clients and replicas are distinct principals): a client key equal to a replica's
/// key is refused as "clients", for any replica and any client id.
#[test]
fn client_keys_must_differ_from_every_replica_key() {
    for replica in [0, 3] {
        assert_eq!(
            field(&edited(|c| {
                let key = c.replicas[replica];
                c.clients.insert(ClientId(2), key);
            })),
            "clients"
        );
    }
    assert_eq!(
        field(&edited(|c| {
            let key = c.replicas[1];
            c.clients.insert(ClientId(1_000), key);
        })),
        "clients"
    );
}

/// Client ids that share a key are sessions of one client principal: the configuration is valid,
/// they are the same client to each other and to nobody else, and their account is the lowest
/// id with the key.
#[test]
fn client_ids_sharing_a_key_are_sessions_of_one_client() {
    let config = edited(|c| {
        c.clients.insert(ClientId(3), client_key(1).public());
        c.clients.insert(ClientId(9), client_key(1).public());
    });
    config.validate().expect("shared client keys are valid");
    assert!(config.same_client(ClientId(1), ClientId(9)));
    assert!(config.same_client(ClientId(3), ClientId(1)));
    assert!(config.same_client(ClientId(2), ClientId(2)));
    assert!(!config.same_client(ClientId(1), ClientId(2)));
    assert!(
        !config.same_client(ClientId(1), ClientId(77)),
        "not admitted"
    );
    let accounts = config.client_accounts();
    assert_eq!(accounts[&ClientId(9)], ClientId(1));
    assert_eq!(accounts[&ClientId(3)], ClientId(1));
    assert_eq!(accounts[&ClientId(1)], ClientId(1));
    assert_eq!(accounts[&ClientId(2)], ClientId(2));
    assert_eq!(accounts.len(), config.clients.len());
}

/// Section 4.2 (the window (h, h + L]): a window below 2 is refused as "limits.window".
#[test]
fn window_must_be_at_least_two() {
    for window in [0, 1] {
        assert_eq!(
            field(&edited(|c| {
                c.limits.window = window;
                c.limits.max_in_flight_batches = 1;
            })),
            "limits.window"
        );
    }
    edited(|c| {
        c.limits.window = 2;
        c.limits.checkpoint_interval = 1;
        c.limits.max_in_flight_batches = 2;
    })
    .validate()
    .expect("a window of 2 is valid");
}

/// Section 4.2 with the pipeline of TOCS 2002 section 5.1 (batches in flight lie in the window):
/// `max_in_flight_batches` of 0 or above the window is refused as "limits.max_in_flight_batches".
#[test]
fn in_flight_batches_must_fit_the_window() {
    assert_eq!(
        field(&edited(|c| c.limits.max_in_flight_batches = 0)),
        "limits.max_in_flight_batches"
    );
    assert_eq!(
        field(&edited(|c| {
            c.limits.window = 4;
            c.limits.checkpoint_interval = 2;
            c.limits.max_in_flight_batches = 5;
        })),
        "limits.max_in_flight_batches"
    );
    edited(|c| {
        c.limits.window = 4;
        c.limits.checkpoint_interval = 2;
        c.limits.max_in_flight_batches = 4;
    })
    .validate()
    .expect("as many batches in flight as the window is valid");
}

/// Section 4.1 (bounded requests and batches): a batch must hold at least one largest request
/// frame, or "limits.max_batch_bytes" is refused; zero operation bytes or zero requests per batch
/// are refused for their own fields.
#[test]
fn batch_bytes_must_hold_one_largest_request() {
    let largest = harness::config(1, 2).limits.max_request_frame_bytes();
    assert_eq!(
        field(&edited(|c| c.limits.max_batch_bytes = largest - 1)),
        "limits.max_batch_bytes"
    );
    edited(|c| c.limits.max_batch_bytes = largest)
        .validate()
        .expect("exactly one largest request is valid");
    assert_eq!(
        field(&edited(|c| c.limits.max_operation_bytes = 0)),
        "limits.max_operation_bytes"
    );
    assert_eq!(
        field(&edited(|c| c.limits.max_batch_requests = 0)),
        "limits.max_batch_requests"
    );
}

/// Section 4.2 (a pre-prepare carries its batch) and TOCS section 6 (a committed batch travels
/// with its certificate): `max_message_bytes` below the largest pre-prepare the batch limits allow,
/// wrapped with n commits, is refused as "limits.max_message_bytes"; exactly that size is valid.
#[test]
fn message_bytes_must_hold_the_largest_pre_prepare() {
    let limits = harness::config(1, 2).limits;
    let largest = limits.max_batch_bytes
        + limits.max_batch_requests * PER_REQUEST_OVERHEAD_BYTES
        + PRE_PREPARE_OVERHEAD_BYTES
        + 4 * bft_core::config::CERTIFICATE_VOTE_BYTES
        + bft_core::config::FRAME_OVERHEAD_BYTES
        + 16;
    assert_eq!(largest, limits.required_message_bytes(4));
    assert_eq!(
        field(&edited(|c| c.limits.max_message_bytes = largest - 1)),
        "limits.max_message_bytes"
    );
    edited(|c| c.limits.max_message_bytes = largest)
        .validate()
        .expect("exactly the largest pre-prepare is valid");
}

/// Section 4.1 (the client retransmits after a timeout): a zero `client_retransmit` would
/// retransmit in a busy loop and is refused as "timing.client_retransmit".
#[test]
fn client_retransmit_must_be_positive() {
    assert_eq!(
        field(&edited(|c| c.timing.client_retransmit = Duration::ZERO)),
        "timing.client_retransmit"
    );
    edited(|c| c.timing.client_retransmit = Duration::from_nanos(1))
        .validate()
        .expect("any positive period is valid");
}

/// Section 4 (replica i of n holds the i-th configured key): `Replica::new` refuses an id outside
/// 0..n as "id" and a key pair other than the id's configured key as "key"; `Replica::new`,
/// `Verifier::new` refuse an invalid configuration with its own field.
#[test]
fn replica_new_refuses_a_bad_id_or_key() {
    let config = Arc::new(harness::config(1, 2));
    let replica_field = |config: &Arc<ClusterConfig>, id: u32, key| match Replica::new(
        config.clone(),
        ReplicaId(id),
        key,
        LogService::default(),
    ) {
        Ok(_) => panic!("accepted replica {id}"),
        Err(error) => error.field,
    };
    assert_eq!(replica_field(&config, 4, replica_key(4)), "id");
    assert_eq!(replica_field(&config, u32::MAX, replica_key(0)), "id");
    assert_eq!(replica_field(&config, 1, replica_key(2)), "key");
    assert_eq!(replica_field(&config, 1, client_key(1)), "key");
    let invalid = Arc::new(edited(|c| c.f = 0));
    assert_eq!(replica_field(&invalid, 0, replica_key(0)), "f");
    assert_eq!(Verifier::new(invalid).err().map(|e| e.field), Some("f"));
    let replica = Replica::new(config, ReplicaId(3), replica_key(3), LogService::default())
        .expect("valid replica");
    assert_eq!(replica.id(), ReplicaId(3));
}

/// Section 4 (n = 3f+1): f = 1, 2, 3 with 4, 7 and 10 replicas validate, and every replica of
/// each can be created.
#[test]
fn three_f_plus_one_replicas_validate() {
    for (f, n) in [(1, 4), (2, 7), (3, 10)] {
        let config = harness::config(f, 3);
        assert_eq!(config.n(), n);
        assert_eq!(config.quorum(), 2 * f + 1);
        config.validate().expect("valid");
        let config = Arc::new(config);
        for id in config.replica_ids() {
            Replica::new(config.clone(), id, replica_key(id.0), LogService::default())
                .expect("valid replica");
        }
    }
}

/// Sections 4.1 and 4.2 (the limits are consistent with what the protocol builds): with every
/// header field at its widest encoding (cluster id, client id, timestamp, view and sequence number
/// all `u64::MAX`), a request of the largest operation fits `max_request_frame_bytes`, and a
/// pre-prepare of `max_batch_requests` such requests filling `max_batch_bytes` exactly fits the
/// smallest `max_message_bytes` that validation accepts: both verify.
#[test]
fn the_largest_valid_frames_fit_the_validated_limits() {
    let client = ClientId(u64::MAX);
    let replicas = (0..4).map(|i| replica_key(i).public()).collect();
    let clients = [(client, client_key(u64::MAX).public())].into();
    let mut config = ClusterConfig::new(u64::MAX, 1, replicas, clients);
    config.limits.max_operation_bytes = 1000;
    config.limits.max_reply_bytes = 1000;
    config.limits.state_chunk_bytes = 1000;
    config.limits.max_batch_requests = 4;
    let request = Request {
        timestamp: u64::MAX,
        operation: vec![0xab; 1000],
    }
    .sign(&client_key(u64::MAX), u64::MAX, Principal::Client(client));
    assert!(request.len() <= config.limits.max_request_frame_bytes());
    config.limits.max_batch_bytes = 4 * request.len();
    config.limits.max_message_bytes = config.limits.required_message_bytes(4);
    let config = Arc::new(config);
    let verifier = Verifier::new(config.clone()).expect("valid configuration");
    let Ok(VerifiedMessage::Request(verified)) = verifier.verify(request.clone()) else {
        panic!("the largest request is refused")
    };
    let digest = batch_digest([verified.digest(); 4].into_iter());
    let pre_prepare = PrePreparePayload {
        view: View(u64::MAX),
        seq: SeqNum(u64::MAX),
        digest,
        requests: vec![serde_bytes::ByteBuf::from(request.to_vec()); 4],
    }
    .sign(&replica_key(3), u64::MAX, Principal::Replica(ReplicaId(3)));
    assert!(pre_prepare.len() <= config.limits.max_message_bytes);
    assert!(matches!(
        verifier.verify(pre_prepare.clone()),
        Ok(VerifiedMessage::PrePrepare(_))
    ));
    // The same pre-prepare with a commit from every replica, as a committed batch, fits too.
    let commits = (0..4)
        .map(|r| {
            let commit = bft_core::messages::Commit {
                view: View(u64::MAX),
                seq: SeqNum(u64::MAX),
                digest,
            };
            let frame = commit.sign(&replica_key(r), u64::MAX, Principal::Replica(ReplicaId(r)));
            serde_bytes::ByteBuf::from(frame.to_vec())
        })
        .collect();
    let batch = bft_core::messages::CommittedBatchPayload {
        pre_prepare: serde_bytes::ByteBuf::from(pre_prepare.to_vec()),
        commits,
    }
    .sign(&replica_key(2), u64::MAX, Principal::Replica(ReplicaId(2)));
    assert!(
        batch.len() <= config.limits.max_message_bytes,
        "{} > {}",
        batch.len(),
        config.limits.max_message_bytes
    );
    assert!(matches!(
        verifier.verify(batch),
        Ok(VerifiedMessage::CommittedBatch(_))
    ));
}

/// Section 4.2 (bounded limits; local calls return errors): validation names the wrong field for
/// any value, however large: limits near `usize::MAX` (from a configuration file, say) are
/// refused with a `ConfigError`, not an arithmetic panic.
#[test]
fn huge_limits_are_refused_without_overflow() {
    let huge = [
        edited(|c| c.limits.max_operation_bytes = usize::MAX),
        edited(|c| c.limits.max_batch_bytes = usize::MAX),
        edited(|c| c.limits.max_batch_requests = usize::MAX),
    ];
    for config in &huge {
        let result = std::panic::catch_unwind(|| config.validate());
        let result = result.unwrap_or_else(|_| panic!("validate panicked on {:?}", config.limits));
        assert!(result.is_err(), "accepted {:?}", config.limits);
    }
}

/// A reply bound that leaves no room for the reply frame within `max_message_bytes`, or a window
/// or message size beyond the hard caps, is refused by name.
#[test]
fn reply_window_and_message_caps_are_enforced() {
    let config = edited(|c| c.limits.max_reply_bytes = c.limits.max_message_bytes);
    assert_eq!(
        config.validate().unwrap_err().field,
        "limits.max_reply_bytes"
    );
    let config = edited(|c| c.limits.max_reply_bytes = 0);
    assert_eq!(
        config.validate().unwrap_err().field,
        "limits.max_reply_bytes"
    );
    let config = edited(|c| c.limits.window = bft_core::config::MAX_WINDOW + 1);
    assert_eq!(config.validate().unwrap_err().field, "limits.window");
    let config = edited(|c| c.limits.max_message_bytes = bft_core::config::MAX_MESSAGE_BYTES + 1);
    assert_eq!(
        config.validate().unwrap_err().field,
        "limits.max_message_bytes"
    );
}

/// Section 4.3: the checkpoint interval K lies between 1 and the window (a checkpoint must be
/// reachable without leaving the window), state chunks fit in a frame, and the state-transfer
/// retry is positive.
#[test]
fn checkpoint_and_state_transfer_limits_are_checked() {
    for interval in [0, 257] {
        let config = edited(|c| {
            c.limits.window = 256;
            c.limits.checkpoint_interval = interval;
        });
        assert_eq!(field(&config), "limits.checkpoint_interval");
    }
    for chunk in [0, 4 << 20] {
        assert_eq!(
            field(&edited(|c| c.limits.state_chunk_bytes = chunk)),
            "limits.state_chunk_bytes"
        );
    }
    let config = edited(|c| c.timing.state_transfer_retry = std::time::Duration::ZERO);
    assert_eq!(field(&config), "timing.state_transfer_retry");
}
