//! A linearizability checker for histories of [`KvOp`]s.
//!
//! The algorithm is Wing and Gong's search (J. Parallel Distrib. Comput. 1993) with Lowe's
//! memoization of `(set of linearized operations, model state)` pairs ("Testing for
//! linearizability", Concurrency and Computation 2017), in the form Porcupine uses
//! (`checker.go`, `checkSingle`): a doubly linked list of call and return events sorted by time,
//! a stack of linearized calls, and "lifting" a linearized call and its return out of the list.
//!
//! A key-value store is a product of independent registers, so the history is split by key and
//! each key is checked on its own (linearizability is local: Herlihy and Wing 1990, theorem 1).
//! The model of one key is [`kv::apply`], the same function the replicas execute, starting from
//! the absent value.
//!
//! # Time and pending operations
//!
//! Times are nanoseconds of virtual time. Operation `a` happens before `b` iff
//! `a.returned < b.invoked`, strictly: when a return and an invocation share an instant the two
//! operations are concurrent, so in the event list calls sort before returns at equal times.
//!
//! An operation with `result: None` and `returned: None` never completed: it may have taken
//! effect at any instant after its invocation, or never. It gets a return event at +infinity
//! (after every other event) and the model accepts any result for it. The history is
//! linearizable when every *completed* operation has been linearized; pending operations may be
//! left out. Pending reads are dropped before the search: they change nothing and were observed
//! by nobody, so they cannot constrain anything.

use crate::kv::{self, KvOp, KvResult};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// The state budget [`check`] gives each key: far above what a simulator history needs (a few
/// hundred operations per key from a handful of clients explore thousands of states), low enough
/// that a pathological history fails in seconds instead of hanging.
pub const DEFAULT_MAX_STATES_PER_KEY: u64 = 5_000_000;

/// One operation of a history, as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client that issued it (informational: the checker does not use it).
    pub client: u64,
    /// The operation.
    pub op: KvOp,
    /// The result the client received, or `None` if the operation never completed.
    pub result: Option<KvResult>,
    /// When the client invoked it (virtual nanoseconds).
    pub invoked: u64,
    /// When the client received the result, or `None` if it never did (+infinity).
    pub returned: Option<u64>,
}

impl Operation {
    /// Whether the operation never completed.
    pub fn is_pending(&self) -> bool {
        self.result.is_none()
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} [{}, ", self.client, self.invoked)?;
        match self.returned {
            Some(t) => write!(f, "{t}]")?,
            None => write!(f, "pending]")?,
        }
        match &self.op {
            KvOp::Get { key } => write!(f, " get \"{}\"", key.escape_ascii())?,
            KvOp::Put { key, value } => write!(
                f,
                " put \"{}\" = \"{}\"",
                key.escape_ascii(),
                value.escape_ascii()
            )?,
            KvOp::Append { key, value } => write!(
                f,
                " append \"{}\" += \"{}\"",
                key.escape_ascii(),
                value.escape_ascii()
            )?,
        }
        match &self.result {
            None => write!(f, " -> (no result)"),
            Some(result) => write!(f, " -> {}", DisplayResult(result)),
        }
    }
}

struct DisplayResult<'a>(&'a KvResult);

impl fmt::Display for DisplayResult<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            KvResult::Value(None) => write!(f, "absent"),
            KvResult::Value(Some(v)) => write!(f, "\"{}\"", v.escape_ascii()),
            KvResult::Done => write!(f, "done"),
            KvResult::BadOperation => write!(f, "bad operation"),
        }
    }
}

struct DisplayValue<'a>(Option<&'a [u8]>);

impl fmt::Display for DisplayValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => write!(f, "absent"),
            Some(v) => write!(f, "\"{}\"", v.escape_ascii()),
        }
    }
}

/// What a successful check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckStats {
    /// Distinct keys in the history.
    pub keys: usize,
    /// Operations in the history.
    pub operations: usize,
    /// Search states (distinct `(linearized set, value)` pairs) explored over all keys.
    pub states_explored: u64,
}

/// A key whose history is not linearizable (or is malformed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Violation {
    /// The key.
    pub key: Vec<u8>,
    /// Every operation on the key, sorted by invocation time. `#i` in [`Violation::reason`]
    /// refers to `operations[i]`.
    pub operations: Vec<Operation>,
    /// Why, in words.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history of key \"{}\" is not linearizable: {}",
            self.key.escape_ascii(),
            self.reason
        )?;
        write!(f, "operations ({}):", self.operations.len())?;
        for (i, op) in self.operations.iter().enumerate() {
            write!(f, "\n  #{i} {op}")?;
        }
        Ok(())
    }
}

/// Why [`check_with_budget`] did not accept a history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// A key's history is not linearizable.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// The search of a key's history explored more states than allowed, without a verdict.
    #[error(
        "linearizability check of key \"{}\" gave up: search budget exhausted ({} operations)",
        .key.escape_ascii(),
        .operations.len()
    )]
    BudgetExhausted {
        /// The key.
        key: Vec<u8>,
        /// Every operation on the key, sorted by invocation time.
        operations: Vec<Operation>,
    },
}

/// Checks that `history` is linearizable, with [`DEFAULT_MAX_STATES_PER_KEY`] as the search
/// budget. A history whose search exceeds the budget is reported as a [`Violation`] whose reason
/// says so (use [`check_with_budget`] to tell the two apart).
pub fn check(history: &[Operation]) -> Result<CheckStats, Violation> {
    check_with_budget(history, DEFAULT_MAX_STATES_PER_KEY).map_err(|e| match e {
        CheckError::Violation(v) => v,
        CheckError::BudgetExhausted { key, operations } => Violation {
            key,
            operations,
            reason: format!(
                "undecided: search budget of {DEFAULT_MAX_STATES_PER_KEY} states exhausted"
            ),
        },
    })
}

/// Checks that `history` is linearizable, exploring at most `max_states_per_key` search states
/// for each key. Keys are checked in byte order; the first key that fails is reported.
pub fn check_with_budget(
    history: &[Operation],
    max_states_per_key: u64,
) -> Result<CheckStats, CheckError> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.op.key()).or_default().push(op);
    }
    let mut stats = CheckStats {
        keys: by_key.len(),
        operations: history.len(),
        states_explored: 0,
    };
    for (key, ops) in by_key {
        let mut ops: Vec<Operation> = ops.into_iter().cloned().collect();
        // Stable: operations invoked at the same instant keep their order in `history`.
        ops.sort_by_key(|op| op.invoked);
        match check_key(&ops, max_states_per_key) {
            Ok(explored) => stats.states_explored += explored,
            Err(KeyFailure::NotLinearizable(reason)) => {
                return Err(CheckError::Violation(Violation {
                    key: key.to_vec(),
                    operations: ops,
                    reason,
                }));
            }
            Err(KeyFailure::Budget) => {
                return Err(CheckError::BudgetExhausted {
                    key: key.to_vec(),
                    operations: ops,
                });
            }
        }
    }
    Ok(stats)
}

enum KeyFailure {
    NotLinearizable(String),
    Budget,
}

/// The end of the linked list, and "no entry".
const NIL: usize = usize::MAX;

/// One event of the entry list.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index into the search's operations.
    op: usize,
    /// A call (invocation) or a return.
    is_call: bool,
    /// For a call, the index of its return entry.
    partner: usize,
}

/// The doubly linked entry list, with a head sentinel at index `len`.
struct EntryList {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl EntryList {
    fn new(len: usize) -> EntryList {
        let head = len;
        let next = (0..=len)
            .map(|i| match i {
                _ if i == head && len == 0 => NIL,
                _ if i == head => 0,
                _ if i + 1 == len => NIL,
                _ => i + 1,
            })
            .collect();
        let prev = (0..=len)
            .map(|i| match i {
                _ if i == head => NIL,
                0 => head,
                _ => i - 1,
            })
            .collect();
        EntryList { next, prev, head }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        if n != NIL {
            self.prev[n] = i;
        }
    }

    /// Removes a call and its return. Undo with [`EntryList::unlift`], in LIFO order.
    fn lift(&mut self, call: usize, ret: usize) {
        self.unlink(call);
        self.unlink(ret);
    }

    fn unlift(&mut self, call: usize, ret: usize) {
        self.relink(ret);
        self.relink(call);
    }
}

/// Model states, interned so that the memo and the stack hold small ids.
struct States {
    values: Vec<Option<Vec<u8>>>,
    ids: HashMap<Option<Vec<u8>>, usize>,
}

impl States {
    fn new() -> States {
        let mut ids = HashMap::new();
        ids.insert(None, 0);
        States {
            values: vec![None],
            ids,
        }
    }

    fn get(&self, id: usize) -> Option<&[u8]> {
        self.values.get(id).and_then(|v| v.as_deref())
    }

    fn intern(&mut self, value: Option<Vec<u8>>) -> usize {
        if let Some(&id) = self.ids.get(&value) {
            return id;
        }
        let id = self.values.len();
        self.values.push(value.clone());
        self.ids.insert(value, id);
        id
    }

    /// Applies `op` in state `id`: the new state if the model accepts the operation's result
    /// (any result, for a pending operation).
    fn step(&mut self, id: usize, op: &Operation) -> Option<usize> {
        let current = self.get(id);
        let (new, result) = kv::apply(current, &op.op);
        if let Some(observed) = &op.result
            && *observed != result
        {
            return None;
        }
        if new.as_deref() == current {
            return Some(id);
        }
        Some(self.intern(new))
    }
}

fn bit_set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn bit_clear(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

/// Rejects operations that cannot be part of a real history.
fn validate(ops: &[Operation]) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        match (&op.result, op.returned) {
            (Some(_), None) => {
                return Err(format!(
                    "malformed history: #{i} has a result but no return time"
                ));
            }
            (None, Some(_)) => {
                return Err(format!(
                    "malformed history: #{i} has a return time but no result"
                ));
            }
            (Some(_), Some(returned)) if returned < op.invoked => {
                return Err(format!(
                    "malformed history: #{i} returned at {returned}, before it was invoked at {}",
                    op.invoked
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks one key's history (sorted by invocation). Returns the number of states explored.
fn check_key(ops: &[Operation], budget: u64) -> Result<u64, KeyFailure> {
    validate(ops).map_err(KeyFailure::NotLinearizable)?;

    // The operations the search places: all but pending reads. `search[i]` indexes `ops`.
    let search: Vec<usize> = (0..ops.len())
        .filter(|&i| !(ops[i].is_pending() && ops[i].op.is_read_only()))
        .collect();
    let n = search.len();
    let completed = search.iter().filter(|&&i| !ops[i].is_pending()).count();
    if completed == 0 {
        return Ok(0);
    }

    // Events sorted by (+infinity last, time, calls before returns at equal times, operation).
    let mut events: Vec<((bool, u64, bool), Entry)> = Vec::with_capacity(2 * n);
    for (s, &i) in search.iter().enumerate() {
        let op = &ops[i];
        let call = Entry {
            op: s,
            is_call: true,
            partner: NIL,
        };
        let ret = Entry {
            op: s,
            is_call: false,
            partner: NIL,
        };
        events.push(((false, op.invoked, false), call));
        match op.returned {
            Some(t) => events.push(((false, t, true), ret)),
            None => events.push(((true, 0, true), ret)),
        }
    }
    events.sort_by_key(|&((inf, t, is_return), e)| (inf, t, is_return, e.op));
    let mut entries: Vec<Entry> = events.into_iter().map(|(_, e)| e).collect();
    let mut return_of = vec![NIL; n];
    for (pos, e) in entries.iter().enumerate() {
        if !e.is_call {
            return_of[e.op] = pos;
        }
    }
    for e in &mut entries {
        if e.is_call {
            e.partner = return_of[e.op];
        }
    }

    let mut list = EntryList::new(entries.len());
    let mut states = States::new();
    let mut state: usize = 0;
    let mut bits = vec![0u64; n.div_ceil(64)];
    let mut memo: HashSet<(Box<[u64]>, usize)> = HashSet::new();
    let mut stack: Vec<(usize, usize)> = Vec::with_capacity(n);
    let mut remaining = completed;
    let mut explored: u64 = 0;
    // The deepest partial linearization, for the report.
    let mut best: Option<Deepest> = None;

    let mut cursor = list.first();
    loop {
        if remaining == 0 {
            return Ok(explored);
        }
        let entry = match entries.get(cursor) {
            Some(&e) => e,
            // Unreachable while a completed operation's return is in the list; treat it as a
            // dead end rather than trust that.
            None => Entry {
                op: NIL,
                is_call: false,
                partner: NIL,
            },
        };
        if entry.is_call {
            if let Some(next_state) = states.step(state, &ops[search[entry.op]]) {
                bit_set(&mut bits, entry.op);
                if memo.insert((bits.clone().into_boxed_slice(), next_state)) {
                    explored += 1;
                    if explored > budget {
                        return Err(KeyFailure::Budget);
                    }
                    stack.push((cursor, state));
                    state = next_state;
                    if !ops[search[entry.op]].is_pending() {
                        remaining -= 1;
                    }
                    list.lift(cursor, entry.partner);
                    if best.as_ref().is_none_or(|b| stack.len() > b.prefix.len()) {
                        best = Some(Deepest::record(&stack, &entries, &list, state));
                    }
                    cursor = list.first();
                    continue;
                }
                bit_clear(&mut bits, entry.op);
            }
            cursor = list.next[cursor];
        } else {
            let Some((call, previous)) = stack.pop() else {
                let best = best.unwrap_or_else(|| Deepest::record(&[], &entries, &list, 0));
                return Err(KeyFailure::NotLinearizable(
                    best.explain(ops, &search, &states, completed, explored),
                ));
            };
            let op = entries[call].op;
            bit_clear(&mut bits, op);
            state = previous;
            if !ops[search[op]].is_pending() {
                remaining += 1;
            }
            list.unlift(call, entries[call].partner);
            cursor = list.next[call];
        }
    }
}

/// The deepest point the search reached, for explaining a violation.
struct Deepest {
    /// Search indices of the linearized operations, in order.
    prefix: Vec<usize>,
    /// The model state after them.
    state: usize,
    /// The search index of the first operation to return among the rest.
    blocked: Option<usize>,
}

impl Deepest {
    fn record(stack: &[(usize, usize)], entries: &[Entry], list: &EntryList, state: usize) -> Self {
        let prefix = stack.iter().map(|&(call, _)| entries[call].op).collect();
        let mut cursor = list.first();
        let mut blocked = None;
        while let Some(e) = entries.get(cursor) {
            if !e.is_call {
                blocked = Some(e.op);
                break;
            }
            cursor = list.next[cursor];
        }
        Deepest {
            prefix,
            state,
            blocked,
        }
    }

    fn explain(
        &self,
        ops: &[Operation],
        search: &[usize],
        states: &States,
        completed: usize,
        explored: u64,
    ) -> String {
        let prefix: Vec<String> = self
            .prefix
            .iter()
            .map(|&s| format!("#{}", search[s]))
            .collect();
        let mut reason = format!(
            "no order of the {completed} completed operations is consistent with real time and \
             the model; the longest linearizable prefix is [{}], after which the value is {}",
            prefix.join(", "),
            DisplayValue(states.get(self.state)),
        );
        if let Some(blocked) = self.blocked {
            let i = search[blocked];
            let op = &ops[i];
            let (_, expected) = kv::apply(states.get(self.state), &op.op);
            reason.push_str(&format!(
                ", and nothing invoked before #{i} returned can take effect next (#{i} returned "
            ));
            match &op.result {
                Some(r) => reason.push_str(&format!(
                    "{} where it would give {})",
                    DisplayResult(r),
                    DisplayResult(&expected)
                )),
                None => reason.push_str("nothing)"),
            }
        }
        reason.push_str(&format!(" ({explored} states explored)"));
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
