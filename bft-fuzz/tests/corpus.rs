//! Replays the committed seed corpora in `fuzz/corpus/<target>/` through the property checks, and
//! runs each target on a fixed-seed pseudo-random stream of inputs, so CI exercises the fuzz
//! properties on the stable toolchain.

use bft_core::codec::{FrameRef, decode};
use bft_core::messages::{Checkpoint, ViewChangePayload, WireMessage};
use bft_core::testkit::{self, CLUSTER_ID};
use bft_core::{Principal, ReplicaId, SeqNum, View};
use bft_fuzz::{ClusterOp, ClusterReport, ClusterSchedule, NewViewReport, TARGETS};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn committed_corpora_replay() {
    for (name, check) in TARGETS {
        let dir = corpus_dir(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds for {name}");
        for file in files {
            let data = std::fs::read(&file).expect("readable seed");
            println!("{name}: {}", file.display());
            check(&data);
        }
    }
}

#[test]
fn pseudo_random_smoke() {
    const INPUTS: usize = 2_000;
    for (name, check) in TARGETS {
        let mut rng = ChaCha8Rng::seed_from_u64(0x00f5_2200);
        // replica_step, cluster and new_view sign and verify per step: fewer inputs keep this
        // quick (cluster's are longer: a schedule needs a few hundred bytes to get anywhere).
        let (inputs, max_len) = match name {
            "replica_step" => (INPUTS / 4, 256),
            "cluster" => (INPUTS / 8, 1024),
            "new_view" => (INPUTS / 4, 512),
            _ => (INPUTS, 512),
        };
        let start = std::time::Instant::now();
        for _ in 0..inputs {
            let mut data = vec![0u8; rng.random_range(0..=max_len)];
            rng.fill_bytes(&mut data);
            check(&data);
        }
        println!("{name}: {inputs} inputs in {:?}", start.elapsed());
    }
}

/// Finding F1 (see `fuzz/README.md`), fixed: the codec accepted non-minimal varints, so one
/// signed message had more than one accepted frame encoding. Now a frame whose header is
/// re-encoded non-canonically is refused before its signature is even checked.
#[test]
fn finding_f1_non_canonical_frames_are_refused() {
    let frame = testkit::prepare(1, 0, 1, bft_crypto::sha256(b"x"));
    assert!(bft_fuzz::reencodes_byte_exact(&frame));
    let malleated = non_canonical_cluster(&frame);
    assert_ne!(malleated, frame.to_vec());
    assert!(matches!(
        bft_core::codec::decode_frame(&malleated, usize::MAX),
        Err(bft_core::codec::DecodeError::NonCanonical)
    ));
    let config = std::sync::Arc::new(testkit::config(1, 2));
    let verifier = bft_core::Verifier::new(config).expect("valid");
    verifier.verify(frame.clone()).expect("original verifies");
    assert!(
        verifier.verify(malleated.clone().into()).is_err(),
        "a non-canonical re-encoding of a signed frame is refused"
    );
    bft_fuzz::wire_decode(&malleated);
}

/// `frame` with its header's cluster id (the first field, 7) re-encoded as a two-byte varint.
fn non_canonical_cluster(frame: &[u8]) -> Vec<u8> {
    let decoded: FrameRef<'_> = decode(frame).expect("valid frame");
    assert_eq!(decoded.header.cluster, CLUSTER_ID);
    assert_eq!(frame[0], CLUSTER_ID as u8);
    let mut out = vec![0x80 | CLUSTER_ID as u8, 0x00];
    out.extend_from_slice(&frame[1..]);
    out
}

/// A named `cluster` seed schedule and what its run must reach.
type ClusterSeed = (&'static str, ClusterSchedule, fn(&ClusterReport) -> bool);

/// A named `new_view` seed and what its run must reach.
type NewViewSeed = (&'static str, fn(&NewViewReport) -> bool);

/// The `cluster` seeds: named schedules, and what each must reach (checked against the committed
/// files by `cluster_seeds_reach_their_scenarios`).
fn cluster_seeds() -> Vec<ClusterSeed> {
    use ClusterOp::*;
    /// `count` requests, alternating clients, each delivered to completion.
    fn requests(ops: &mut Vec<ClusterOp>, count: u8) {
        for i in 0..count {
            ops.extend([
                Submit {
                    client: i % 2,
                    op: i,
                },
                Flush(31),
                Flush(31),
                Flush(31),
            ]);
        }
    }
    /// Timers fire and what they send is delivered, `rounds` times.
    fn timeouts(ops: &mut Vec<ClusterOp>, rounds: usize) {
        for _ in 0..rounds {
            ops.extend([TickAll, Flush(31), Flush(31), Flush(31)]);
        }
    }
    let mut seeds: Vec<ClusterSeed> = Vec::new();

    // Twelve requests with a twin backup: checkpoints 4, 8 and 12 become stable.
    let mut ops = Vec::new();
    requests(&mut ops, 12);
    seeds.push((
        "normal_case",
        ClusterSchedule {
            twin: 3,
            sides: 0,
            ops,
        },
        |r| r.executed >= 12 && r.stable >= 8 && r.completed >= 12,
    ));

    // The twin is the primary of view 0 and equivocates: each instance gets a different client's
    // request first (the other copy is dropped) and orders it at sequence number 1 for its side
    // (replica 1 talks to instance 0, replicas 2 and 3 to instance 1).
    let mut ops = vec![
        Submit { client: 0, op: 1 },
        Drop(1),
        Submit { client: 1, op: 2 },
        Drop(1),
    ];
    ops.extend([Flush(31); 4]);
    timeouts(&mut ops, 20);
    requests(&mut ops, 4);
    seeds.push((
        "twin_primary_equivocates",
        ClusterSchedule {
            twin: 0,
            sides: 0b1100,
            ops,
        },
        |r| r.executed >= 4 && r.completed >= 4,
    ));

    // The twin, primary of view 0, equivocates to one correct replica: instance 0 orders client
    // 1's request at sequence number 1 for everyone, then replica 1 switches to instance 1, which
    // orders client 2's request there. Replica 1 must refuse the second pre-prepare.
    let ops = vec![
        Submit { client: 0, op: 1 },
        Drop(1),
        Submit { client: 1, op: 2 },
        Drop(1),
        Deliver(0),
        Switch(1),
        Deliver(0),
        Flush(31),
        Flush(31),
        Flush(31),
    ];
    seeds.push((
        "twin_equivocates_to_one_replica",
        ClusterSchedule {
            twin: 0,
            sides: 0,
            ops,
        },
        |r| r.executed >= 1,
    ));

    // A correct backup crashes, misses five requests, and recovers from its storage (a saved
    // checkpoint and the records after it); then it catches up.
    let mut ops = Vec::new();
    requests(&mut ops, 5);
    ops.push(Crash {
        endpoint: 1,
        torn: None,
    });
    requests(&mut ops, 5);
    ops.push(Restart(1));
    timeouts(&mut ops, 4);
    requests(&mut ops, 3);
    seeds.push((
        "crash_and_recover",
        ClusterSchedule {
            twin: 2,
            sides: 0b0010,
            ops,
        },
        |r| r.recoveries >= 1 && r.recovered_from_checkpoint >= 1 && r.executed >= 12,
    ));

    // A torn write: replica 2 crashes in the middle of persisting a step, keeping one record;
    // after its restart, re-sent votes and retransmitted requests let everyone go on.
    let mut ops = Vec::new();
    requests(&mut ops, 2);
    ops.extend([
        Submit { client: 0, op: 9 },
        Crash {
            endpoint: 2,
            torn: Some(1),
        },
        Flush(31),
        Restart(2),
        Flush(31),
    ]);
    timeouts(&mut ops, 6);
    requests(&mut ops, 4);
    seeds.push((
        "torn_write",
        ClusterSchedule {
            twin: 1,
            sides: 0b1000,
            ops,
        },
        |r| r.torn_writes >= 1 && r.recoveries >= 1 && r.executed >= 4,
    ));

    // The primary is partitioned away: backups time out, change view, and go on in view 1.
    let mut ops = Vec::new();
    requests(&mut ops, 2);
    ops.extend([Partition(0b00001), Submit { client: 0, op: 7 }]);
    timeouts(&mut ops, 20);
    ops.push(Partition(0));
    requests(&mut ops, 3);
    seeds.push((
        "partition_view_change",
        ClusterSchedule {
            twin: 2,
            sides: 0,
            ops,
        },
        |r| r.view >= 1 && r.executed >= 4,
    ));

    // Everything at once, and long enough that libFuzzer's default input length limit (the
    // longest seed) leaves room for long schedules: crashes between steps and in a torn write,
    // a partitioned primary and a view change, checkpoints all along.
    let mut ops = Vec::new();
    requests(&mut ops, 6);
    ops.push(Crash {
        endpoint: 2,
        torn: None,
    });
    requests(&mut ops, 4);
    ops.push(Restart(2));
    timeouts(&mut ops, 4);
    ops.extend([Partition(0b00001), Submit { client: 0, op: 20 }]);
    timeouts(&mut ops, 20);
    ops.push(Partition(0));
    timeouts(&mut ops, 10);
    requests(&mut ops, 6);
    ops.push(Crash {
        endpoint: 1,
        torn: Some(3),
    });
    requests(&mut ops, 2);
    ops.push(Restart(1));
    timeouts(&mut ops, 4);
    requests(&mut ops, 6);
    seeds.push((
        "long_mixed",
        ClusterSchedule {
            twin: 3,
            sides: 0b0100,
            ops,
        },
        |r| {
            r.executed >= 20
                && r.view >= 1
                && r.recoveries >= 2
                && r.torn_writes >= 1
                && r.stable >= 16
        },
    ));
    seeds
}

/// The `new_view` seeds: each is the first of a fixed pseudo-random stream of inputs whose run
/// reaches what its predicate asks (checked against the committed files by
/// `new_view_seeds_reach_their_paths`).
fn new_view_predicates() -> Vec<NewViewSeed> {
    vec![
        ("reissues_own_certificates", |r| {
            r.emitted
                && r.own_certificates >= 1
                && r.reissued >= 3
                && r.null_requests >= 1
                && r.crafted_accepted >= 1
                && r.crafted_refused >= 1
        }),
        ("min_s_above_zero", |r| {
            r.emitted && r.min_s >= 4 && r.reissued >= 1 && r.crafted_accepted >= 1
        }),
        ("invalid_view_changes", |r| {
            r.emitted && r.view_changes_invalid >= 2 && r.crafted_refused >= 1
        }),
        ("primary_of_view_0", |r| {
            r.view == 4 && r.emitted && r.reissued >= 1 && r.crafted_refused >= 1
        }),
        ("no_new_view", |r| {
            !r.emitted && r.view_changes_invalid >= 1 && r.crafted_refused >= 1
        }),
        ("ambiguous", |r| r.ambiguous >= 1),
    ]
}

fn read_seed(target: &str, name: &str) -> Vec<u8> {
    let path = corpus_dir(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each committed `cluster` seed is its schedule's encoding and reaches its scenario.
#[test]
fn cluster_seeds_reach_their_scenarios() {
    for (name, schedule, reached) in cluster_seeds() {
        let data = read_seed("cluster", name);
        assert_eq!(
            data,
            schedule.to_bytes(),
            "{name}: regenerate the seeds (write_seed_corpora)"
        );
        assert_eq!(ClusterSchedule::from_bytes(&data), schedule, "{name}");
        let report = bft_fuzz::cluster_report(&data);
        assert!(reached(&report), "{name}: {report:?}");
    }
}

/// Schedules decode back from their encoding, and arbitrary bytes decode to schedules that
/// encode back to a prefix-equivalent form.
#[test]
fn cluster_schedules_round_trip() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5c4e_d01e);
    for _ in 0..500 {
        let mut data = vec![0u8; rng.random_range(0..=300)];
        rng.fill_bytes(&mut data);
        let schedule = ClusterSchedule::from_bytes(&data);
        let bytes = schedule.to_bytes();
        assert_eq!(ClusterSchedule::from_bytes(&bytes), schedule);
    }
}

/// A checker that never fails proves nothing: with a known bug planted in the replica
/// (`bft_core::planted`, compiled in through bft-sim's dependency on bft-core), a committed seed
/// of each stateful target fails its check.
#[test]
fn planted_bugs_are_caught() {
    use bft_core::planted::{PlantedBug, plant};
    let cases: [(PlantedBug, &str, &str, bft_fuzz::Check); 3] = [
        (
            PlantedBug::NewViewIgnoresPrepared,
            "new_view",
            "reissues_own_certificates",
            bft_fuzz::new_view,
        ),
        (
            PlantedBug::AcceptConflictingPrePrepare,
            "cluster",
            "twin_equivocates_to_one_replica",
            bft_fuzz::cluster,
        ),
        (
            PlantedBug::RecoverySkipsLog,
            "cluster",
            "crash_and_recover",
            bft_fuzz::cluster,
        ),
    ];
    for (bug, target, seed, check) in cases {
        let data = read_seed(target, seed);
        check(&data);
        plant(Some(bug)).expect("bft-sim builds bft-core with planted bugs");
        let caught = std::panic::catch_unwind(|| check(&data)).is_err();
        plant(None).expect("unplanting always works");
        assert!(caught, "{target} did not catch {bug:?} with seed {seed}");
    }
}

/// Each committed `new_view` seed reaches the path it is named after.
#[test]
fn new_view_seeds_reach_their_paths() {
    for (name, reached) in new_view_predicates() {
        let report = bft_fuzz::new_view_report(&read_seed("new_view", name));
        assert!(reached(&report), "{name}: {report:?}");
    }
}

/// Builds byte strings for the `Unstructured`-driven targets: each small-range choice takes one
/// byte, taken modulo the range size.
#[derive(Default)]
struct Script(Vec<u8>);

impl Script {
    fn b(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
}

/// Regenerates the seed corpora: `cargo test -p bft-fuzz --test corpus -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the wire format or the targets change"]
fn write_seed_corpora() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        assert!(data.len() < 20 << 10, "seed too large");
        std::fs::write(dir.join(name), data).expect("write seed");
    };
    let replica = |id: u32| Principal::Replica(ReplicaId(id));
    let digest = bft_crypto::sha256(b"batch");

    // wire_decode: real frames, and kind-selector + payload inputs.
    let prepare = testkit::prepare(1, 0, 1, digest);
    write("wire_decode", "prepare", &prepare);
    write("wire_decode", "commit", &testkit::commit(2, 3, 9, digest));
    let request = bft_fuzz_seed_request(1, 1, b"op");
    write("wire_decode", "request", &request);
    let checkpoint = Checkpoint {
        seq: SeqNum(4),
        digest,
    }
    .sign(&testkit::replica_key(3), CLUSTER_ID, replica(3));
    write("wire_decode", "checkpoint", &checkpoint);
    let view_change = ViewChangePayload {
        new_view: View(1),
        stable_seq: SeqNum(4),
        checkpoint_proof: vec![checkpoint.to_vec().into()],
        prepared: vec![bft_core::messages::PreparedCertificatePayload {
            pre_prepare: prepare.to_vec().into(),
            prepares: vec![prepare.to_vec().into()],
        }],
    };
    write(
        "wire_decode",
        "view_change",
        &view_change.sign(&testkit::replica_key(2), CLUSTER_ID, replica(2)),
    );
    let pre_prepare = bft_core::messages::PrePreparePayload {
        view: View(0),
        seq: SeqNum(1),
        digest,
        requests: vec![request.to_vec().into(), request.to_vec().into()],
    }
    .sign(&testkit::replica_key(0), CLUSTER_ID, replica(0));
    write("wire_decode", "pre_prepare_with_batch", &pre_prepare);
    write(
        "wire_decode",
        "f1_non_canonical_cluster",
        &non_canonical_cluster(&prepare),
    );
    // Selector 11 = ViewChange payload.
    let mut payload = vec![11u8];
    payload.extend_from_slice(&bft_core::codec::encode(&view_change));
    write("wire_decode", "payload_view_change", &payload);

    // verify: three triples (valid, small-order identity key/nonce with s = 0, raw), then frames.
    let verify = Script::default()
        .b(&[3])
        .b(&[5])
        .b(b"hello")
        .b(&[1, 7, 0]) // valid signature by seed 7, unmodified
        .b(&[0])
        .b(&[2, 0, 0, 1]) // identity key, identity R, s = 0
        .b(&[4])
        .b(b"raw!")
        .b(&[0])
        .b(&[0x11; 96]) // raw key and signature
        .b(&[4])
        .b(&[0, 1, 1, 0, 0]) // prepare (view 0, seq 1, signer 1), no bit flip
        .b(&[0, 1, 2, 1, 1, 77]) // commit by replica 2 with bit 77 flipped
        .b(&[0, 3, 0, 2, 0, 0]) // request from client 1
        .b(&[0, 1, 0, 3, 2, 0]); // pre-prepare with two requests
    write("verify", "mixed", &verify.0);
    let small_order = Script::default().b(&[8]).b(&(0..8u8)
        .flat_map(|i| [0, 2, i, 7 - i, 1])
        .collect::<Vec<_>>());
    write("verify", "small_order", &small_order.0);
    let flips = Script::default()
        .b(&[4])
        .b(&[3, b'a', b'b', b'c', 1, 9, 1, 0, 255])
        .b(&[
            3, b'a', b'b', b'c', 1, 9, 2, 10, 3, b'a', b'b', b'c', 1, 9, 3, b'd', 3, b'a', b'b',
            b'c', 1, 9, 4, 0,
        ]);
    write("verify", "mutations", &flips.0);

    // replica_step: ops are 0-1 prepare, 2-3 commit, 4 checkpoint, 5 pre-prepare, 6 request,
    // 7 view change, 8 raw, 9 tick. Senders are (signer, auth) with auth >= 2 valid.
    let votes = |op: u8, seq: u8, signers: &[u8]| -> Vec<u8> {
        signers
            .iter()
            .flat_map(|&s| [op, 0, seq, 0, s, 5])
            .collect()
    };
    let backup_commits = Script::default()
        .b(&[1]) // replica 1, a backup
        .b(&[5, 0, 5, 0, 1, 1, 0, 0, b'x', 1, 1]) // pre-prepare (0, 1) with one request
        .b(&votes(0, 1, &[2, 3]))
        .b(&votes(2, 1, &[0, 2, 3]))
        .b(&[9, 0, 0, 100]);
    write("replica_step", "backup_commits", &backup_commits.0);
    let primary_commits = Script::default()
        .b(&[0]) // replica 0, the primary of view 0
        .b(&[6, 0, 0, b'y']) // request from client 1
        .b(&[6, 1, 0, b'z']) // request from client 2
        .b(&votes(0, 1, &[1, 2]))
        .b(&votes(2, 1, &[1, 2, 3]))
        .b(&[9, 1, 0, 0]);
    write("replica_step", "primary_commits", &primary_commits.0);
    let view_change = Script::default()
        .b(&[1]) // replica 1, primary of view 1
        .b(&[7, 1, 0, 0, 5, 7, 1, 0, 2, 5, 7, 1, 0, 3, 5])
        .b(&[9, 1, 0, 0, 9, 0, 11, 184])
        .b(&[7, 2, 0, 2, 5, 7, 2, 0, 3, 5]);
    write("replica_step", "view_change", &view_change.0);
    let bad_senders = Script::default()
        .b(&[2])
        .b(&[
            0, 0, 1, 0, 4, 5, 0, 0, 1, 0, 1, 0, 7, 0, 0, 3, 1, 6, 3, 0, 0, 8, 4, 1, 2, 3, 4,
        ])
        .b(&[9, 0, 255, 255, 9, 1, 0, 0]);
    write("replica_step", "bad_senders", &bad_senders.0);

    // frame_reader: limit, chunk sizes ending in 0, then the stream.
    let mut stream = Vec::new();
    for frame in [&prepare[..], &b"abc"[..], &checkpoint[..]] {
        stream.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        stream.extend_from_slice(frame);
    }
    write(
        "frame_reader",
        "three_frames",
        &[&[255u8, 1, 3, 7, 0][..], &stream].concat(),
    );
    write(
        "frame_reader",
        "too_large",
        &[&[8u8, 2, 0][..], &stream].concat(),
    );
    write(
        "frame_reader",
        "empty_frame",
        &[4, 1, 0, 1, 0, 0, 0, b'a', 0, 0, 0, 0],
    );
    write(
        "frame_reader",
        "truncated",
        &[&[255u8, 5, 0][..], &stream[..60]].concat(),
    );

    // kv_model: 0-2 structured op (key, kind, value), 3 raw op, 4 snapshot, 5 restore.
    let kv = Script::default()
        .b(&[0, 1, 1, 3, b'a', b'b', b'c']) // put k1 = abc
        .b(&[1, 1, 2, 2, b'd', b'e']) // append k1 += de
        .b(&[2, 1, 0]) // get k1
        .b(&[2, 2, 0]) // get k2 (absent)
        .b(&[4]) // snapshot round trip
        .b(&[3, 5, 1, 1, b'z', 1, b'q']) // raw Put { z: q }
        .b(&[3, 3, 9, 9, 9]) // raw garbage
        .b(&[5, 7, 1, 1, b'a', 1, b'b', 0]) // restore {a: b} (with a trailing byte)
        .b(&[2, 1, 0]);
    write("kv_model", "ops", &kv.0);
    write(
        "kv_model",
        "restore_canonical",
        &[5, 6, 1, 1, b'a', 1, b'b', 2, 0, 0],
    );

    // cluster: hand-written schedules.
    for (name, schedule, _) in cluster_seeds() {
        write("cluster", name, &schedule.to_bytes());
    }

    // new_view: the first input of a fixed pseudo-random stream that reaches each path.
    let mut rng = ChaCha8Rng::seed_from_u64(0x0e1f_7e55);
    let mut wanted = new_view_predicates();
    for _ in 0..50_000 {
        if wanted.is_empty() {
            break;
        }
        let mut data = vec![0u8; rng.random_range(64..=512)];
        rng.fill_bytes(&mut data);
        let report = bft_fuzz::new_view_report(&data);
        wanted.retain(|(name, reached)| {
            if reached(&report) {
                write("new_view", name, &data);
                false
            } else {
                true
            }
        });
    }
    let missing: Vec<&str> = wanted.iter().map(|(name, _)| *name).collect();
    assert!(missing.is_empty(), "no new_view seed found for {missing:?}");
}

fn bft_fuzz_seed_request(client: u64, timestamp: u64, operation: &[u8]) -> bytes::Bytes {
    bft_core::messages::Request {
        timestamp,
        operation: operation.to_vec(),
    }
    .sign(
        &testkit::client_key(client),
        CLUSTER_ID,
        Principal::Client(bft_core::ClientId(client)),
    )
}
