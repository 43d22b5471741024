use super::*;
use crate::kv;
use proptest::prelude::*;

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn done(client: u64, op: KvOp, result: KvResult, invoked: u64, returned: u64) -> Operation {
    Operation {
        client,
        op,
        result: Some(result),
        invoked,
        returned: Some(returned),
    }
}

fn pending(client: u64, op: KvOp, invoked: u64) -> Operation {
    Operation {
        client,
        op,
        result: None,
        invoked,
        returned: None,
    }
}

fn put_op(key: &str, value: &str) -> KvOp {
    KvOp::Put {
        key: bytes(key),
        value: bytes(value),
    }
}

fn append_op(key: &str, value: &str) -> KvOp {
    KvOp::Append {
        key: bytes(key),
        value: bytes(value),
    }
}

fn get_op(key: &str) -> KvOp {
    KvOp::Get { key: bytes(key) }
}

fn put(c: u64, key: &str, value: &str, t0: u64, t1: u64) -> Operation {
    done(c, put_op(key, value), KvResult::Done, t0, t1)
}

fn append(c: u64, key: &str, value: &str, t0: u64, t1: u64) -> Operation {
    done(c, append_op(key, value), KvResult::Done, t0, t1)
}

fn get(c: u64, key: &str, seen: Option<&str>, t0: u64, t1: u64) -> Operation {
    done(c, get_op(key), KvResult::Value(seen.map(bytes)), t0, t1)
}

fn violation(history: &[Operation]) -> Violation {
    match check(history) {
        Ok(stats) => panic!("accepted a non-linearizable history ({stats:?})"),
        Err(v) => v,
    }
}

#[test]
fn empty_history_ok() {
    assert_eq!(
        check(&[]),
        Ok(CheckStats {
            keys: 0,
            operations: 0,
            states_explored: 0
        })
    );
}

#[test]
fn sequential_history_ok() {
    let h = [
        get(1, "k", None, 0, 10),
        put(1, "k", "1", 20, 30),
        get(2, "k", Some("1"), 40, 50),
        append(2, "k", "2", 60, 70),
        get(1, "k", Some("12"), 80, 90),
        put(3, "k", "x", 100, 110),
        get(1, "k", Some("x"), 120, 130),
    ];
    let stats = check(&h).expect("linearizable");
    assert_eq!(stats.keys, 1);
    assert_eq!(stats.operations, 7);
    assert!(stats.states_explored >= 7);
}

#[test]
fn order_of_the_input_does_not_matter() {
    let mut h = vec![
        put(1, "k", "1", 0, 10),
        get(2, "k", Some("1"), 20, 30),
        put(1, "k", "2", 40, 50),
        get(2, "k", Some("2"), 60, 70),
    ];
    h.reverse();
    check(&h).expect("linearizable");
}

#[test]
fn concurrent_put_and_get_may_see_either_value() {
    for seen in [Some("0"), Some("1")] {
        let h = [
            put(1, "k", "0", 0, 10),
            put(1, "k", "1", 20, 50),
            get(2, "k", seen, 30, 40),
        ];
        check(&h).expect("linearizable");
    }
    let h = [
        put(1, "k", "0", 0, 10),
        put(1, "k", "1", 20, 50),
        get(2, "k", Some("2"), 30, 40),
    ];
    violation(&h);
}

#[test]
fn stale_read_after_completed_put_is_a_violation() {
    let h = [
        put(1, "k", "old", 0, 10),
        put(1, "k", "new", 20, 30),
        get(2, "k", Some("old"), 31, 40),
    ];
    let v = violation(&h);
    assert_eq!(v.key, b"k");
    assert_eq!(v.operations.len(), 3);
    let text = v.to_string();
    assert!(
        text.contains("#2 client 2 [31, 40] get \"k\" -> \"old\""),
        "{text}"
    );
    assert!(text.contains("not linearizable"), "{text}");
    // The first write is missing entirely: a read after it returned sees nothing.
    let h = [put(1, "k", "v", 0, 10), get(2, "k", None, 11, 20)];
    violation(&h);
}

#[test]
fn equal_return_and_invocation_times_are_concurrent() {
    // The get is invoked at the instant the put returns: the two are concurrent, so the get
    // may be ordered first and see nothing.
    let h = [put(1, "k", "v", 0, 10), get(2, "k", None, 10, 20)];
    check(&h).expect("concurrent at equal times");
    let h = [put(1, "k", "v", 0, 10), get(2, "k", None, 11, 20)];
    violation(&h);
    // An instantaneous operation is fine.
    let h = [put(1, "k", "v", 5, 5), get(2, "k", Some("v"), 5, 5)];
    check(&h).expect("instantaneous");
}

#[test]
fn read_of_a_value_never_written_is_a_violation() {
    let h = [
        put(1, "k", "a", 0, 10),
        put(2, "k", "b", 5, 15),
        get(3, "k", Some("c"), 0, 100),
    ];
    let v = violation(&h);
    assert!(v.reason.contains("\"c\""), "{}", v.reason);
    // Nothing was written at all.
    violation(&[get(1, "k", Some("ghost"), 0, 10)]);
    // A result of the wrong kind.
    violation(&[done(1, put_op("k", "v"), KvResult::Value(None), 0, 10)]);
    violation(&[done(1, get_op("k"), KvResult::Done, 0, 10)]);
    violation(&[done(1, put_op("k", "v"), KvResult::BadOperation, 0, 10)]);
}

#[test]
fn append_order_observed_consistently_ok() {
    // Two concurrent appends; readers agree the order was b then a.
    let h = [
        append(1, "k", "a", 0, 100),
        append(2, "k", "b", 0, 100),
        get(3, "k", Some("b"), 10, 20),
        get(3, "k", Some("ba"), 110, 120),
        get(4, "k", Some("ba"), 130, 140),
    ];
    check(&h).expect("linearizable");
    // A reader concurrent with both may see either partial state or nothing.
    for seen in [None, Some("a"), Some("b"), Some("ab"), Some("ba")] {
        let h = [
            append(1, "k", "a", 0, 100),
            append(2, "k", "b", 0, 100),
            get(3, "k", seen, 50, 60),
        ];
        check(&h).expect("linearizable");
    }
}

#[test]
fn append_order_observed_inconsistently_is_a_violation() {
    let h = [
        append(1, "k", "a", 0, 100),
        append(2, "k", "b", 0, 100),
        get(3, "k", Some("ab"), 110, 120),
        get(4, "k", Some("ba"), 130, 140),
    ];
    violation(&h);
    // Prefix contradiction while the appends are still running: one reader sees "a" first,
    // a later one sees "b" alone.
    let h = [
        append(1, "k", "a", 0, 100),
        append(2, "k", "b", 0, 100),
        get(3, "k", Some("a"), 10, 20),
        get(4, "k", Some("b"), 30, 40),
    ];
    violation(&h);
    // Concurrent readers may see the two different prefixes...
    let h = [
        append(1, "k", "a", 0, 100),
        append(2, "k", "b", 0, 100),
        get(3, "k", Some("a"), 10, 40),
        get(4, "k", Some("ab"), 30, 50),
    ];
    check(&h).expect("linearizable");
    // ...but not two incompatible ones.
    let h = [
        append(1, "k", "a", 0, 100),
        append(2, "k", "b", 0, 100),
        get(3, "k", Some("a"), 10, 40),
        get(4, "k", Some("b"), 30, 50),
    ];
    violation(&h);
}

#[test]
fn pending_put_may_take_effect_or_not() {
    let base = [put(1, "k", "1", 0, 10), pending(2, put_op("k", "2"), 20)];
    // Never took effect.
    let mut h = base.to_vec();
    h.push(get(3, "k", Some("1"), 30, 40));
    check(&h).expect("pending put may never happen");
    // Took effect, seen later.
    let mut h = base.to_vec();
    h.push(get(3, "k", Some("2"), 30, 40));
    check(&h).expect("pending put may happen");
    // Took effect between two reads.
    let mut h = base.to_vec();
    h.push(get(3, "k", Some("1"), 30, 40));
    h.push(get(3, "k", Some("2"), 50, 60));
    check(&h).expect("pending put may happen late");
    // Seen, then not seen: impossible.
    let mut h = base.to_vec();
    h.push(get(3, "k", Some("2"), 30, 40));
    h.push(get(3, "k", Some("1"), 50, 60));
    let v = violation(&h);
    assert!(v.to_string().contains("[20, pending]"), "{v}");
    // It cannot take effect before it was invoked.
    let h = [
        put(1, "k", "1", 0, 10),
        get(3, "k", Some("2"), 12, 15),
        pending(2, put_op("k", "2"), 20),
    ];
    violation(&h);
}

#[test]
fn pending_operations_at_the_end_are_left_out() {
    // Pending appends whose calls come after every completed operation's return.
    let h = [
        append(1, "k", "a", 0, 10),
        get(2, "k", Some("a"), 20, 30),
        pending(1, append_op("k", "b"), 40),
        pending(2, append_op("k", "c"), 41),
        pending(3, get_op("k"), 42),
    ];
    check(&h).expect("linearizable");
    // Only pending operations.
    let h = [pending(1, put_op("k", "a"), 0), pending(2, get_op("k"), 1)];
    check(&h).expect("linearizable");
    // Two pending appends, a read sees only the second.
    let h = [
        pending(1, append_op("k", "a"), 0),
        pending(2, append_op("k", "b"), 0),
        get(3, "k", Some("b"), 10, 20),
        get(3, "k", Some("ba"), 30, 40),
        get(3, "k", Some("ba"), 50, 60),
    ];
    check(&h).expect("linearizable");
}

#[test]
fn keys_are_checked_independently() {
    let h = [
        put(1, "a", "1", 0, 10),
        put(2, "b", "1", 0, 10),
        get(1, "a", Some("1"), 20, 30),
        put(2, "b", "2", 20, 30),
        // Linearizable for "a" only if the keys are not mixed up: "a" was never "2".
        get(3, "a", Some("1"), 40, 50),
        get(3, "b", Some("1"), 40, 50),
    ];
    let err = check_with_budget(&h, 1000).expect_err("stale read of b");
    let CheckError::Violation(v) = err else {
        panic!("expected a violation, got {err:?}");
    };
    assert_eq!(v.key, b"b");
    assert_eq!(v.operations.len(), 3);
    assert!(v.operations.iter().all(|op| op.op.key() == b"b"));
    assert!(
        v.operations
            .windows(2)
            .all(|w| w[0].invoked <= w[1].invoked)
    );
    // Without the bad read, both keys pass.
    let stats = check(&h[..5]).expect("linearizable");
    assert_eq!(stats.keys, 2);
    assert_eq!(stats.operations, 5);
}

fn big_concurrent_history() -> Vec<Operation> {
    // 24 appends, all concurrent, then a read of something no order produces: the search
    // must consider every order of every subset before giving up.
    let mut h: Vec<Operation> = (0..24u8)
        .map(|i| {
            done(
                u64::from(i),
                KvOp::Append {
                    key: bytes("k"),
                    value: vec![b'a' + i],
                },
                KvResult::Done,
                0,
                1000,
            )
        })
        .collect();
    h.push(get(99, "k", Some("impossible"), 2000, 2100));
    h
}

#[test]
fn budget_exhaustion_is_reported() {
    let h = big_concurrent_history();
    match check_with_budget(&h, 10_000) {
        Err(CheckError::BudgetExhausted { key, operations }) => {
            assert_eq!(key, b"k");
            assert_eq!(operations.len(), 25);
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
    // A budget that is enough succeeds and reports what it used.
    let h = [put(1, "k", "1", 0, 10), get(2, "k", Some("1"), 20, 30)];
    let stats = check_with_budget(&h, 2).expect("linearizable");
    assert_eq!(stats.states_explored, 2);
    assert!(matches!(
        check_with_budget(&h, 1),
        Err(CheckError::BudgetExhausted { .. })
    ));
}

#[test]
fn malformed_operations_are_errors_not_panics() {
    let backwards = put(1, "k", "1", 10, 5);
    assert!(violation(&[backwards]).reason.contains("malformed"));
    let no_return = Operation {
        returned: None,
        ..put(1, "k", "1", 0, 5)
    };
    assert!(violation(&[no_return]).reason.contains("malformed"));
    let no_result = Operation {
        result: None,
        ..put(1, "k", "1", 0, 5)
    };
    assert!(violation(&[no_result]).reason.contains("malformed"));
    // Extreme times.
    let h = [
        put(1, "k", "1", u64::MAX, u64::MAX),
        pending(2, put_op("k", "2"), u64::MAX),
        get(3, "k", None, 0, u64::MAX),
    ];
    check(&h).expect("linearizable");
}

/// A small deterministic generator for the large tests (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Clients issue operations one after another; each takes effect at a random instant
/// inside its interval, and results come from the model applied in that order.
fn client_history(rng: &mut Rng, clients: u64, ops: usize, keys: u8) -> Vec<Operation> {
    let mut clock = vec![0u64; clients as usize];
    let mut planned = Vec::new();
    for _ in 0..ops {
        let c = rng.below(clients);
        let invoked = clock[c as usize] + rng.below(50);
        let point = invoked + 1 + rng.below(100);
        let returned = point + rng.below(100);
        clock[c as usize] = returned + 1;
        let key = vec![b'k', b'0' + rng.below(u64::from(keys)) as u8];
        let value = vec![b'a' + rng.below(26) as u8];
        let op = match rng.below(3) {
            0 => KvOp::Get { key },
            1 => KvOp::Put { key, value },
            _ => KvOp::Append { key, value },
        };
        planned.push((point, c, op, invoked, returned));
    }
    planned.sort_by_key(|p| p.0);
    let mut model = kv::KvService::default();
    let mut history: Vec<Operation> = planned
        .into_iter()
        .map(|(_, client, op, invoked, returned)| Operation {
            client,
            result: Some(model.apply_op(&op)),
            op,
            invoked,
            returned: Some(returned),
        })
        .collect();
    history.sort_by_key(|op| op.invoked);
    history
}

#[test]
fn large_concurrent_histories_check_quickly() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..5 {
        // A few hundred operations on one key from four concurrent clients.
        let h = client_history(&mut rng, 4, 400, 1);
        let stats = check_with_budget(&h, 200_000).expect("linearizable");
        assert_eq!(stats.operations, 400);
    }
    let h = client_history(&mut rng, 6, 1500, 4);
    check_with_budget(&h, 200_000).expect("linearizable");
    // Corrupt one read: rejected.
    let mut h = client_history(&mut rng, 4, 300, 1);
    let Some(read) = h.iter_mut().rev().find(|op| op.op.is_read_only()) else {
        panic!("no read generated");
    };
    read.result = Some(KvResult::Value(Some(bytes("not a value"))));
    assert!(matches!(
        check_with_budget(&h, 200_000),
        Err(CheckError::Violation(_))
    ));
}

/// One generated step: key, kind, value, widening before and after, pending mode, client.
type Step = (u8, u8, u8, u64, u64, u8, u64);

fn step_strategy() -> impl Strategy<Value = Step> {
    (
        0..3u8,
        0..3u8,
        0..4u8,
        0..250u64,
        0..250u64,
        0..20u8,
        0..4u64,
    )
}

fn step_op(key: u8, kind: u8, value: u8) -> KvOp {
    let key = vec![b'k', b'0' + key];
    let value = vec![b'a' + value];
    match kind {
        0 => KvOp::Get { key },
        1 => KvOp::Put { key, value },
        _ => KvOp::Append { key, value },
    }
}

/// A sequential execution of the model: operation `i` takes effect at `100 i + 50`, inside
/// `[100 i + 10, 100 i + 90]`, widened by the given amounts (which keeps the point inside).
/// Pending mode 0: the operation took effect but never returned; 1: it never took effect.
fn execution(steps: &[Step], widen: bool, pendings: bool) -> Vec<Operation> {
    let mut model = kv::KvService::default();
    let mut history = Vec::new();
    for (i, &(key, kind, value, before, after, mode, client)) in steps.iter().enumerate() {
        let op = step_op(key, kind, value);
        let point = 100 * i as u64 + 50;
        let (before, after) = if widen { (before, after) } else { (0, 0) };
        let invoked = (point - 40).saturating_sub(before);
        let returned = point + 40 + after;
        let mode = if pendings { mode } else { u8::MAX };
        let (result, returned) = match mode {
            0 => {
                model.apply_op(&op);
                (None, None)
            }
            1 => (None, None),
            _ => (Some(model.apply_op(&op)), Some(returned)),
        };
        history.push(Operation {
            client,
            op,
            result,
            invoked,
            returned,
        });
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No false positives: every history produced by a real execution passes.
    #[test]
    fn executions_are_linearizable(
        steps in prop::collection::vec(step_strategy(), 0..80),
        widen in any::<bool>(),
        pendings in any::<bool>(),
    ) {
        let history = execution(&steps, widen, pendings);
        let result = check_with_budget(&history, 1_000_000);
        prop_assert!(result.is_ok(), "{:?}", result);
    }

    /// Executions of concurrent clients pass too.
    #[test]
    fn client_executions_are_linearizable(seed in any::<u64>(), ops in 0..200usize) {
        let mut rng = Rng(seed | 1);
        let history = client_history(&mut rng, 4, ops, 2);
        let result = check_with_budget(&history, 1_000_000);
        prop_assert!(result.is_ok(), "{:?}", result);
    }

    /// Changing one read's result in a sequential history is always caught.
    #[test]
    fn a_wrong_read_is_rejected(
        steps in prop::collection::vec(step_strategy(), 0..60),
        which in any::<prop::sample::Index>(),
        to_absent in any::<bool>(),
    ) {
        let mut history = execution(&steps, false, false);
        history.push(done(9, get_op("k0"), KvResult::Value(None), 100_000, 100_010));
        let mut model = kv::KvService::default();
        for op in &history[..history.len() - 1] {
            model.apply_op(&op.op);
        }
        if let Some(last) = history.last_mut() {
            last.result = Some(KvResult::Value(model.get(b"k0").map(<[u8]>::to_vec)));
        }
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].op.is_read_only())
            .collect();
        let target = reads[which.index(reads.len())];
        let wrong = match &history[target].result {
            Some(KvResult::Value(Some(_))) if to_absent => None,
            Some(KvResult::Value(Some(v))) => Some([v.as_slice(), b"!"].concat()),
            _ => Some(bytes("zz")),
        };
        prop_assert_ne!(&history[target].result, &Some(KvResult::Value(wrong.clone())));
        history[target].result = Some(KvResult::Value(wrong));
        let key = history[target].op.key().to_vec();
        match check(&history) {
            Err(v) => prop_assert_eq!(v.key, key),
            Ok(stats) => prop_assert!(false, "accepted a wrong read ({:?})", stats),
        }
    }
}
