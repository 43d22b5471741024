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
//!
//! [`kv::apply`]: crate::kv::apply

mod search;
#[cfg(test)]
mod tests;

use crate::kv::{KvOp, KvResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use search::{KeyFailure, check_key};

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
