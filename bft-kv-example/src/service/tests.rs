//! Unit tests of the store: every operation and error, limits, and the determinism of snapshots
//! and digests.

use super::*;
use bft_core::{ClientId, SeqNum};

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn context() -> ExecuteContext {
    ExecuteContext {
        client: ClientId(1),
        timestamp: 1,
        seq: SeqNum(1),
    }
}

/// Runs `op` through the `Service` interface (encoded bytes in, encoded reply out).
fn run(service: &mut KvService, op: KvOp) -> KvReply {
    let reply = service.execute(&context(), &op.encode());
    KvReply::decode(&reply).expect("the service replies with a KvReply")
}

fn set(service: &mut KvService, key: &str, value: &str) {
    assert_eq!(
        run(
            service,
            KvOp::Set {
                key: b(key),
                value: b(value)
            }
        ),
        KvReply::Ok
    );
}

fn get(service: &mut KvService, key: &str) -> KvReply {
    run(service, KvOp::Get { key: b(key) })
}

fn small_limits() -> KvLimits {
    KvLimits {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_keys_per_op: 3,
        max_scan_entries: 4,
        max_scan_bytes: 40,
    }
}

#[test]
fn get_set_del_exists() {
    let mut kv = KvService::default();
    assert_eq!(get(&mut kv, "a"), KvReply::Value(None));
    set(&mut kv, "a", "1");
    set(&mut kv, "b", "2");
    assert_eq!(get(&mut kv, "a"), KvReply::Value(Some(b("1"))));
    set(&mut kv, "a", "3");
    assert_eq!(get(&mut kv, "a"), KvReply::Value(Some(b("3"))));
    let exists = KvOp::Exists {
        keys: vec![b("a"), b("a"), b("x")],
    };
    assert_eq!(run(&mut kv, exists), KvReply::Count(2));
    let del = KvOp::Del {
        keys: vec![b("a"), b("a"), b("x")],
    };
    assert_eq!(run(&mut kv, del), KvReply::Count(1));
    assert_eq!(get(&mut kv, "a"), KvReply::Value(None));
    assert_eq!(kv.len(), 1);
    // Empty keys and values are ordinary bytes.
    set(&mut kv, "", "");
    assert_eq!(get(&mut kv, ""), KvReply::Value(Some(vec![])));
}

#[test]
fn incr_counts_from_zero_and_refuses_non_integers() {
    let mut kv = KvService::default();
    let incr = |key: &str, by| KvOp::Incr { key: b(key), by };
    assert_eq!(run(&mut kv, incr("n", 5)), KvReply::Integer(5));
    assert_eq!(run(&mut kv, incr("n", -7)), KvReply::Integer(-2));
    assert_eq!(get(&mut kv, "n"), KvReply::Value(Some(b("-2"))));
    for bad in [
        "abc",
        "",
        " 1",
        "1 ",
        "+1",
        "01",
        "-0",
        "1.5",
        "99999999999999999999",
    ] {
        set(&mut kv, "s", bad);
        assert_eq!(
            run(&mut kv, incr("s", 1)),
            KvReply::Error(KvError::NotAnInteger),
            "{bad:?} is not an integer"
        );
        assert_eq!(get(&mut kv, "s"), KvReply::Value(Some(b(bad))), "unchanged");
    }
    set(&mut kv, "max", &i64::MAX.to_string());
    assert_eq!(
        run(&mut kv, incr("max", 1)),
        KvReply::Error(KvError::Overflow)
    );
    set(&mut kv, "min", &i64::MIN.to_string());
    assert_eq!(
        run(&mut kv, incr("min", -1)),
        KvReply::Error(KvError::Overflow)
    );
    assert_eq!(run(&mut kv, incr("min", 1)), KvReply::Integer(i64::MIN + 1));
}

#[test]
fn compare_and_set() {
    let mut kv = KvService::default();
    let cas = |expected: Option<&str>, new: Option<&str>| KvOp::Cas {
        key: b("k"),
        expected: expected.map(b),
        new: new.map(b),
    };
    let swapped = |swapped, current: Option<&str>| KvReply::Swapped {
        swapped,
        current: current.map(b),
    };
    // Create only if absent.
    assert_eq!(run(&mut kv, cas(None, Some("1"))), swapped(true, Some("1")));
    assert_eq!(
        run(&mut kv, cas(None, Some("2"))),
        swapped(false, Some("1"))
    );
    // Replace only if it holds the expected value.
    assert_eq!(
        run(&mut kv, cas(Some("9"), Some("2"))),
        swapped(false, Some("1"))
    );
    assert_eq!(
        run(&mut kv, cas(Some("1"), Some("2"))),
        swapped(true, Some("2"))
    );
    // Delete only if it holds the expected value.
    assert_eq!(run(&mut kv, cas(Some("2"), None)), swapped(true, None));
    assert_eq!(get(&mut kv, "k"), KvReply::Value(None));
    assert_eq!(run(&mut kv, cas(Some("2"), None)), swapped(false, None));
}

#[test]
fn scan_is_ordered_and_bounded() {
    let mut kv = KvService::new(small_limits());
    for key in ["d", "a", "c", "b", "e", "f"] {
        set(&mut kv, key, "v");
    }
    let scan = |start: &str, end: Option<&str>, limit| KvOp::Scan {
        start: b(start),
        end: end.map(b),
        limit,
    };
    let keys = |reply: KvReply| match reply {
        KvReply::Entries(entries) => entries
            .into_iter()
            .map(|(k, v)| {
                assert_eq!(v, b("v"));
                String::from_utf8(k).unwrap()
            })
            .collect::<Vec<_>>(),
        other => panic!("expected entries, got {other:?}"),
    };
    assert_eq!(
        keys(run(&mut kv, scan("b", Some("e"), 10))),
        ["b", "c", "d"]
    );
    assert_eq!(keys(run(&mut kv, scan("", None, 2))), ["a", "b"]);
    // The configured bound caps the limit asked for.
    assert_eq!(
        keys(run(&mut kv, scan("", None, 100))),
        ["a", "b", "c", "d"]
    );
    assert_eq!(keys(run(&mut kv, scan("", None, 0))), Vec::<String>::new());
    assert_eq!(
        keys(run(&mut kv, scan("e", Some("b"), 10))),
        Vec::<String>::new()
    );
    assert_eq!(
        keys(run(&mut kv, scan("zz", None, 10))),
        Vec::<String>::new()
    );
    // The byte bound stops a scan early: 40 bytes hold two 18-byte entries, not three.
    let mut kv = KvService::new(small_limits());
    for key in ["k1", "k2", "k3"] {
        set(&mut kv, key, "0123456789abcdef");
    }
    assert_eq!(keys_len(run(&mut kv, scan("", None, 10))), 2);
}

fn keys_len(reply: KvReply) -> usize {
    match reply {
        KvReply::Entries(entries) => entries.len(),
        other => panic!("expected entries, got {other:?}"),
    }
}

#[test]
fn mget_and_mset() {
    let mut kv = KvService::new(small_limits());
    let mset = KvOp::MSet {
        pairs: vec![(b("a"), b("1")), (b("b"), b("2")), (b("a"), b("3"))],
    };
    assert_eq!(run(&mut kv, mset), KvReply::Ok);
    let mget = KvOp::MGet {
        keys: vec![b("a"), b("x"), b("b")],
    };
    assert_eq!(
        run(&mut kv, mget),
        KvReply::Values(vec![Some(b("3")), None, Some(b("2"))])
    );
    // All or nothing: one pair over the limits and none is written.
    let mset = KvOp::MSet {
        pairs: vec![(b("c"), b("1")), (b("toolongkey"), b("2"))],
    };
    assert_eq!(
        run(&mut kv, mset),
        KvReply::Error(KvError::KeyTooLarge { len: 10, max: 8 })
    );
    assert_eq!(get(&mut kv, "c"), KvReply::Value(None));
}

#[test]
fn limits_are_enforced_and_refusals_change_nothing() {
    let mut kv = KvService::new(small_limits());
    set(&mut kv, "k", "v");
    let before = kv.snapshot();
    let long_key = b("123456789");
    let long_value = vec![b'x'; 17];
    let key_error = KvReply::Error(KvError::KeyTooLarge { len: 9, max: 8 });
    let value_error = KvReply::Error(KvError::ValueTooLarge { len: 17, max: 16 });
    let many = vec![b("a"), b("b"), b("c"), b("d")];
    let count_error = KvReply::Error(KvError::TooManyKeys { count: 4, max: 3 });
    let cases = [
        (
            KvOp::Get {
                key: long_key.clone(),
            },
            key_error.clone(),
        ),
        (
            KvOp::Set {
                key: long_key.clone(),
                value: b("v"),
            },
            key_error.clone(),
        ),
        (
            KvOp::Set {
                key: b("k"),
                value: long_value.clone(),
            },
            value_error.clone(),
        ),
        (
            KvOp::Cas {
                key: b("k"),
                expected: Some(b("v")),
                new: Some(long_value.clone()),
            },
            value_error.clone(),
        ),
        (
            KvOp::Incr {
                key: long_key.clone(),
                by: 1,
            },
            key_error.clone(),
        ),
        (KvOp::Del { keys: many.clone() }, count_error.clone()),
        (KvOp::Exists { keys: many.clone() }, count_error.clone()),
        (KvOp::MGet { keys: many.clone() }, count_error.clone()),
        (
            KvOp::MSet {
                pairs: many.iter().map(|k| (k.clone(), b("v"))).collect(),
            },
            count_error,
        ),
        (
            KvOp::MSet {
                pairs: vec![(b("x"), b("1")), (b("y"), long_value)],
            },
            value_error,
        ),
        (
            KvOp::Del {
                keys: vec![b("k"), long_key.clone()],
            },
            key_error.clone(),
        ),
        (
            KvOp::Scan {
                start: long_key,
                end: None,
                limit: 1,
            },
            key_error,
        ),
    ];
    for (op, expected) in cases {
        assert_eq!(run(&mut kv, op.clone()), expected, "{op:?}");
        assert_eq!(kv.snapshot(), before, "{op:?} changed the state");
    }
    // INCR whose result would not fit a value.
    let mut tiny = KvService::new(KvLimits {
        max_value_bytes: 2,
        ..small_limits()
    });
    assert_eq!(
        run(
            &mut tiny,
            KvOp::Incr {
                key: b("n"),
                by: 100
            }
        ),
        KvReply::Error(KvError::ValueTooLarge { len: 3, max: 2 })
    );
}

#[test]
fn malformed_operations_are_refused() {
    let mut kv = KvService::default();
    for bytes in [&[][..], &[0xff, 0xff], &[1, 200, 1]] {
        let reply = KvReply::decode(&kv.execute(&context(), bytes)).unwrap();
        assert_eq!(reply, KvReply::Error(KvError::MalformedOperation));
    }
    let mut bytes = KvOp::Get { key: b("a") }.encode();
    bytes.push(0);
    let reply = KvReply::decode(&kv.execute(&context(), &bytes)).unwrap();
    assert_eq!(reply, KvReply::Error(KvError::MalformedOperation));
    assert!(kv.is_empty());
}

/// A fixed, mixed sequence of operations.
fn workload() -> Vec<KvOp> {
    let mut ops = Vec::new();
    for i in 0..50u32 {
        let key = format!("key-{}", (i * 7) % 13).into_bytes();
        ops.push(match i % 6 {
            0 => KvOp::Set {
                key,
                value: format!("v{i}").into_bytes(),
            },
            1 => KvOp::Incr {
                key: format!("counter-{}", i % 3).into_bytes(),
                by: i64::from(i),
            },
            2 => KvOp::Del { keys: vec![key] },
            3 => KvOp::Cas {
                key,
                expected: None,
                new: Some(vec![i as u8]),
            },
            4 => KvOp::MSet {
                pairs: vec![(key, vec![]), (format!("m{i}").into_bytes(), vec![1, 2])],
            },
            _ => KvOp::Scan {
                start: vec![],
                end: None,
                limit: 5,
            },
        });
    }
    ops
}

#[test]
fn same_operations_give_same_snapshot_and_digest() {
    let mut one = KvService::default();
    let mut two = KvService::default();
    let replies_one: Vec<KvReply> = workload().into_iter().map(|op| run(&mut one, op)).collect();
    let replies_two: Vec<KvReply> = workload().into_iter().map(|op| run(&mut two, op)).collect();
    assert_eq!(replies_one, replies_two);
    assert_eq!(one.snapshot(), two.snapshot());
    assert_eq!(one.state_digest(), two.state_digest());
    // Insertion order does not matter, only the state.
    let mut three = KvService::default();
    let mut four = KvService::default();
    set(&mut three, "a", "1");
    set(&mut three, "b", "2");
    set(&mut four, "b", "2");
    set(&mut four, "a", "1");
    assert_eq!(three.snapshot(), four.snapshot());
    assert_eq!(three.state_digest(), four.state_digest());
    set(&mut four, "a", "x");
    assert_ne!(three.state_digest(), four.state_digest());
}

#[test]
fn restore_round_trips() {
    let mut source = KvService::default();
    for op in workload() {
        run(&mut source, op);
    }
    let snapshot = source.snapshot();
    let mut target = KvService::default();
    set(&mut target, "stale", "gone after restore");
    target.restore(&snapshot).unwrap();
    assert_eq!(target, source);
    assert_eq!(target.snapshot(), snapshot);
    assert_eq!(target.state_digest(), source.state_digest());
    // And they keep agreeing afterwards.
    for op in workload() {
        assert_eq!(run(&mut source, op.clone()), run(&mut target, op));
    }
    assert_eq!(target.state_digest(), source.state_digest());
    // An empty store round-trips too.
    let mut empty = KvService::default();
    empty.restore(&KvService::default().snapshot()).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn restore_of_garbage_fails_and_changes_nothing() {
    let mut kv = KvService::new(small_limits());
    set(&mut kv, "keep", "me");
    let before = kv.clone();
    let good = kv.snapshot();
    let mut trailing = good.clone();
    trailing.push(0);
    let unordered = ops::to_bytes(&SnapshotData {
        tag: SNAPSHOT_TAG.into(),
        entries: vec![(b("b"), b("1")), (b("a"), b("2"))],
    });
    let duplicate = ops::to_bytes(&SnapshotData {
        tag: SNAPSHOT_TAG.into(),
        entries: vec![(b("a"), b("1")), (b("a"), b("2"))],
    });
    let oversized = ops::to_bytes(&SnapshotData {
        tag: SNAPSHOT_TAG.into(),
        entries: vec![(b("a"), vec![0; 17])],
    });
    let wrong_tag = ops::to_bytes(&SnapshotData {
        tag: "something-else".into(),
        entries: vec![],
    });
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 7],
        b("not a snapshot at all"),
        good[..good.len() - 1].to_vec(),
        trailing,
        unordered,
        duplicate,
        oversized,
        wrong_tag,
    ];
    for bytes in garbage {
        assert!(kv.restore(&bytes).is_err(), "{bytes:?} restored");
        assert_eq!(kv, before, "a failed restore changed the state");
    }
}

#[test]
fn limits_validate_against_the_cluster() {
    let cluster = bft_core::Limits::default();
    assert_eq!(KvLimits::default().validate(&cluster), Ok(()));
    let too_big_value = KvLimits {
        max_value_bytes: cluster.max_operation_bytes,
        ..KvLimits::default()
    };
    assert_eq!(
        too_big_value.validate(&cluster).unwrap_err().field,
        "max_value_bytes"
    );
    let too_big_scan = KvLimits {
        max_scan_bytes: cluster.max_reply_bytes,
        ..KvLimits::default()
    };
    assert_eq!(
        too_big_scan.validate(&cluster).unwrap_err().field,
        "max_scan_bytes"
    );
    let zero_keys = KvLimits {
        max_key_bytes: 0,
        ..KvLimits::default()
    };
    assert!(zero_keys.validate(&cluster).is_err());
}
