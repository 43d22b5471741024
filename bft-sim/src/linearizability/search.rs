//! The search of one key's history (see the [module documentation](super)): the entry list,
//! the interned model states, the search loop, and the explanation of a violation.

use super::{DisplayResult, DisplayValue, Operation};
use crate::kv;
use std::collections::{HashMap, HashSet};

pub(super) enum KeyFailure {
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
pub(super) fn check_key(ops: &[Operation], budget: u64) -> Result<u64, KeyFailure> {
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
