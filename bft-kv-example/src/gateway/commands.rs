//! Redis commands to store operations, and store replies to RESP replies.
//!
//! [`plan`] is pure: it turns one parsed command into an [`Action`] (a reply the gateway gives
//! by itself, an operation for the cluster, or closing the connection). [`execute`] runs an
//! action against a [`KvBackend`] and renders the answer. Error texts follow Redis's, so clients
//! and their users see what they expect (`ERR value is not an integer or out of range`, ...).

use super::KvBackend;
use crate::client::KvClientError;
use crate::ops::{KvError, KvOp, KvReply};
use crate::resp::{Command, Reply};
use crate::service::parse_integer;
use tracing::warn;

/// The commands the gateway understands (`COMMAND COUNT` reports how many).
pub const SUPPORTED: &[&str] = &[
    "AUTH", "CLIENT", "COMMAND", "CONFIG", "DECR", "DECRBY", "DEL", "ECHO", "EXISTS", "GET",
    "HELLO", "INCR", "INCRBY", "MGET", "MSET", "PING", "QUIT", "SELECT", "SET",
];

/// How many times a conditional `SET` retries its compare-and-set when the key keeps changing
/// under it before it gives up with an error.
const MAX_CAS_ATTEMPTS: usize = 8;

/// The longest part of a client's command quoted back in an error, in characters (as Redis).
const MAX_QUOTED_CHARS: usize = 128;

/// Per-connection state that commands read or change.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The connection's id (`CLIENT ID`, `HELLO`).
    pub id: u64,
    /// The name set by `CLIENT SETNAME` or `HELLO ... SETNAME`.
    pub name: Option<Vec<u8>>,
}

/// What to do with one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer without the cluster.
    Reply(Reply),
    /// Answer `+OK` and close the connection (`QUIT`).
    Quit,
    /// Run one operation on the cluster; render its reply as `shape` says.
    Call {
        /// The operation.
        op: KvOp,
        /// How its reply is rendered.
        shape: Shape,
    },
    /// `SET` with `NX`, `XX` or `GET`: compare-and-set, retried while the key changes.
    ConditionalSet {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
        /// `NX` or `XX`, if given.
        condition: Option<Condition>,
        /// Whether `GET` was given: answer the old value instead of `+OK`.
        get: bool,
    },
}

/// `SET`'s existence condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `NX`: only if the key is absent.
    Nx,
    /// `XX`: only if the key is present.
    Xx,
}

/// How the cluster's reply to a [`Action::Call`] becomes a RESP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// [`KvReply::Value`] as a bulk string or nil (`GET`).
    Value,
    /// [`KvReply::Ok`] as `+OK` (`SET`, `MSET`).
    Ok,
    /// [`KvReply::Count`] as an integer (`DEL`, `EXISTS`).
    Count,
    /// [`KvReply::Integer`] as an integer (`INCR` and friends).
    Integer,
    /// [`KvReply::Values`] as an array of bulk strings or nils (`MGET`).
    Values,
}

/// Whether `n` arguments (after the name) suit the command named `upper`; `None` for commands
/// the gateway does not know.
fn arity_ok(upper: &[u8], n: usize) -> Option<bool> {
    Some(match upper {
        b"PING" => n <= 1,
        b"ECHO" | b"GET" | b"INCR" | b"DECR" | b"SELECT" => n == 1,
        b"INCRBY" | b"DECRBY" => n == 2,
        b"SET" => n >= 2,
        b"DEL" | b"EXISTS" | b"MGET" | b"CONFIG" | b"CLIENT" => n >= 1,
        b"MSET" => n >= 2 && n.is_multiple_of(2),
        b"AUTH" => n == 1 || n == 2,
        b"QUIT" | b"COMMAND" | b"HELLO" => true,
        _ => return None,
    })
}

/// What `command` asks for. Never fails: a bad command becomes an error reply.
pub fn plan(session: &mut Session, command: Command) -> Action {
    let mut args = command.into_iter();
    let Some(name) = args.next() else {
        return Action::Reply(Reply::err("empty command"));
    };
    let mut args: Vec<Vec<u8>> = args.collect();
    let upper = name.to_ascii_uppercase();
    match arity_ok(&upper, args.len()) {
        None => return Action::Reply(unknown_command(&name, &args)),
        Some(false) => return Action::Reply(wrong_arity(&name)),
        Some(true) => {}
    }
    // The arity is checked: the commands below have the arguments they take.
    let first = |args: &mut Vec<Vec<u8>>| args.swap_remove(0);
    match upper.as_slice() {
        b"PING" => Action::Reply(match args.pop() {
            Some(message) => Reply::bulk(message),
            None => Reply::Simple("PONG".into()),
        }),
        b"ECHO" => Action::Reply(Reply::bulk(first(&mut args))),
        b"GET" => call(
            KvOp::Get {
                key: first(&mut args),
            },
            Shape::Value,
        ),
        b"SET" => plan_set(args),
        b"DEL" => call(KvOp::Del { keys: args }, Shape::Count),
        b"EXISTS" => call(KvOp::Exists { keys: args }, Shape::Count),
        b"INCR" => incr(first(&mut args), 1),
        b"DECR" => incr(first(&mut args), -1),
        b"INCRBY" => plan_incrby(args, false),
        b"DECRBY" => plan_incrby(args, true),
        b"MGET" => call(KvOp::MGet { keys: args }, Shape::Values),
        b"MSET" => {
            let mut pairs = Vec::with_capacity(args.len() / 2);
            let mut args = args.into_iter();
            while let (Some(key), Some(value)) = (args.next(), args.next()) {
                pairs.push((key, value));
            }
            call(KvOp::MSet { pairs }, Shape::Ok)
        }
        b"SELECT" => Action::Reply(match parse_integer(&args[0]) {
            Some(0) => Reply::ok(),
            Some(_) => Reply::err("DB index is out of range"),
            None => not_an_integer(),
        }),
        b"QUIT" => Action::Quit,
        b"COMMAND" => Action::Reply(plan_command(&args)),
        b"CONFIG" => Action::Reply(plan_config(&args)),
        b"CLIENT" => Action::Reply(plan_client(session, args)),
        b"HELLO" => Action::Reply(plan_hello(session, args)),
        b"AUTH" => Action::Reply(Reply::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        )),
        _ => Action::Reply(unknown_command(&name, &args)),
    }
}

fn call(op: KvOp, shape: Shape) -> Action {
    Action::Call { op, shape }
}

fn incr(key: Vec<u8>, by: i64) -> Action {
    call(KvOp::Incr { key, by }, Shape::Integer)
}

fn plan_incrby(mut args: Vec<Vec<u8>>, decrement: bool) -> Action {
    let amount = args.pop().unwrap_or_default();
    let key = args.pop().unwrap_or_default();
    let Some(amount) = parse_integer(&amount) else {
        return Action::Reply(not_an_integer());
    };
    if !decrement {
        return incr(key, amount);
    }
    match amount.checked_neg() {
        Some(by) => incr(key, by),
        None => Action::Reply(Reply::err("decrement would overflow")),
    }
}

/// `SET key value [NX | XX] [GET] [KEEPTTL]`; expiry options are refused by name (keys never
/// expire in bft-kv), anything else is a syntax error, as in Redis.
fn plan_set(args: Vec<Vec<u8>>) -> Action {
    let mut args = args.into_iter();
    let (Some(key), Some(value)) = (args.next(), args.next()) else {
        return Action::Reply(wrong_arity(b"set"));
    };
    let mut condition = None;
    let mut get = false;
    for option in args {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" if condition.is_none() => condition = Some(Condition::Nx),
            b"XX" if condition.is_none() => condition = Some(Condition::Xx),
            b"GET" if !get => get = true,
            // No key has a time to live, so keeping it is what happens anyway.
            b"KEEPTTL" => {}
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                return Action::Reply(Reply::err(format!(
                    "SET option '{}' is not supported: bft-kv keys never expire",
                    quote(&option)
                )));
            }
            _ => return Action::Reply(Reply::err("syntax error")),
        }
    }
    if condition.is_none() && !get {
        return call(KvOp::Set { key, value }, Shape::Ok);
    }
    Action::ConditionalSet {
        key,
        value,
        condition,
        get,
    }
}

/// `COMMAND` and its subcommands: `redis-cli` asks for `COMMAND DOCS` on connect; an empty array
/// makes it fall back on its built-in help.
fn plan_command(args: &[Vec<u8>]) -> Reply {
    match args.first().map(|a| a.to_ascii_uppercase()).as_deref() {
        Some(b"COUNT") => Reply::Integer(SUPPORTED.len() as i64),
        _ => Reply::array(Vec::new()),
    }
}

/// `CONFIG GET parameter...`: `redis-benchmark` asks for `save` and `appendonly`. Other
/// parameters match nothing (an empty array, as Redis answers for unknown ones).
fn plan_config(args: &[Vec<u8>]) -> Reply {
    let subcommand = args[0].to_ascii_uppercase();
    if subcommand != b"GET" {
        return unknown_subcommand(&args[0], "CONFIG");
    }
    if args.len() < 2 {
        return wrong_arity(b"config|get");
    }
    let mut pairs = Vec::new();
    for parameter in &args[1..] {
        let value: &[u8] = match parameter.to_ascii_lowercase().as_slice() {
            b"save" => b"",
            b"appendonly" => b"no",
            _ => continue,
        };
        pairs.push(Reply::bulk(parameter.to_ascii_lowercase()));
        pairs.push(Reply::bulk(value));
    }
    Reply::array(pairs)
}

/// `CLIENT SETNAME | GETNAME | ID | SETINFO`.
fn plan_client(session: &mut Session, args: Vec<Vec<u8>>) -> Reply {
    let subcommand = args[0].to_ascii_uppercase();
    match (subcommand.as_slice(), args.len()) {
        (b"SETNAME", 2) => set_name(session, &args[1]),
        (b"GETNAME", 1) => Reply::Bulk(session.name.clone()),
        (b"ID", 1) => Reply::Integer(i64::try_from(session.id).unwrap_or(i64::MAX)),
        // Client libraries announce themselves (redis-rs does on connect); nothing to keep.
        (b"SETINFO", 3) => Reply::ok(),
        (b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO", _) => {
            let name = format!(
                "client|{}",
                String::from_utf8_lossy(&args[0]).to_lowercase()
            );
            wrong_arity(name.as_bytes())
        }
        _ => unknown_subcommand(&args[0], "CLIENT"),
    }
}

fn set_name(session: &mut Session, name: &[u8]) -> Reply {
    if name.iter().any(|b| !(b'!'..=b'~').contains(b)) {
        return Reply::err("Client names cannot contain spaces, newlines or special characters.");
    }
    session.name = (!name.is_empty()).then(|| name.to_vec());
    Reply::ok()
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: only RESP2 is spoken. The
/// answer is the server's description as a flat array, as Redis gives it in RESP2.
fn plan_hello(session: &mut Session, args: Vec<Vec<u8>>) -> Reply {
    let mut args = args.into_iter();
    if let Some(version) = args.next() {
        match parse_integer(&version) {
            Some(2) => {}
            Some(3) => {
                return Reply::Error(
                    "NOPROTO sorry, this protocol version is not supported.".into(),
                );
            }
            _ => return Reply::err("Protocol version is not an integer or out of range"),
        }
    }
    let mut name = None;
    while let Some(option) = args.next() {
        match option.to_ascii_uppercase().as_slice() {
            // There is no password: the default user accepts any, as Redis's `nopass` user.
            b"AUTH" => {
                if args.next().is_none() || args.next().is_none() {
                    return hello_syntax_error(&option);
                }
            }
            b"SETNAME" => match args.next() {
                Some(value) => name = Some(value),
                None => return hello_syntax_error(&option),
            },
            _ => return hello_syntax_error(&option),
        }
    }
    if let Some(name) = name {
        let reply = set_name(session, &name);
        if reply != Reply::ok() {
            return reply;
        }
    }
    Reply::array(vec![
        Reply::bulk("server"),
        Reply::bulk("bft-kv"),
        Reply::bulk("version"),
        Reply::bulk(env!("CARGO_PKG_VERSION")),
        Reply::bulk("proto"),
        Reply::Integer(2),
        Reply::bulk("id"),
        Reply::Integer(i64::try_from(session.id).unwrap_or(i64::MAX)),
        Reply::bulk("mode"),
        Reply::bulk("standalone"),
        Reply::bulk("role"),
        Reply::bulk("master"),
        Reply::bulk("modules"),
        Reply::array(Vec::new()),
    ])
}

fn hello_syntax_error(option: &[u8]) -> Reply {
    Reply::err(format!("Syntax error in HELLO option '{}'", quote(option)))
}

/// `bytes` as text to quote in an error: lossy UTF-8, at most [`MAX_QUOTED_CHARS`] characters
/// (the encoder turns CR and LF into spaces).
fn quote(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_QUOTED_CHARS)
        .collect()
}

/// `ERR unknown command 'name', with args beginning with: 'a' 'b' `, as Redis 7 words it.
fn unknown_command(name: &[u8], args: &[Vec<u8>]) -> Reply {
    let mut text = format!(
        "unknown command '{}', with args beginning with: ",
        quote(name)
    );
    let mut budget = MAX_QUOTED_CHARS;
    for arg in args {
        if budget == 0 {
            break;
        }
        let quoted: String = quote(arg).chars().take(budget).collect();
        budget = budget.saturating_sub(quoted.chars().count().max(1));
        text.push_str(&format!("'{quoted}' "));
    }
    Reply::err(text)
}

fn unknown_subcommand(subcommand: &[u8], command: &str) -> Reply {
    Reply::err(format!(
        "unknown subcommand '{}'. Try {command} HELP.",
        quote(subcommand)
    ))
}

fn wrong_arity(name: &[u8]) -> Reply {
    Reply::err(format!(
        "wrong number of arguments for '{}' command",
        quote(name).to_lowercase()
    ))
}

fn not_an_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

/// The store's refusal, worded as Redis words the same refusal where it has one.
pub fn kv_error_reply(error: &KvError) -> Reply {
    match error {
        KvError::NotAnInteger => not_an_integer(),
        KvError::Overflow => Reply::err("increment or decrement would overflow"),
        other => Reply::err(other),
    }
}

/// A failed call: the cluster could not be reached (or the client is gone) or the operation
/// could not be carried.
pub fn client_error_reply(error: &KvClientError) -> Reply {
    match error {
        KvClientError::Unreachable { .. }
        | KvClientError::Closed
        | KvClientError::Connect(_)
        | KvClientError::NoRuntime
        | KvClientError::Config(_)
        | KvClientError::Key(_) => Reply::err(format!("cluster unavailable: {error}")),
        KvClientError::Refused(_)
        | KvClientError::ServicePanicked
        | KvClientError::ReplyTooLarge(_)
        | KvClientError::Decode(_) => Reply::err(error),
    }
}

/// Renders the cluster's reply to an operation planned with `shape`.
pub fn render(shape: Shape, reply: KvReply) -> Reply {
    match (shape, reply) {
        (_, KvReply::Error(error)) => kv_error_reply(&error),
        (Shape::Value, KvReply::Value(value)) => Reply::Bulk(value),
        (Shape::Ok, KvReply::Ok) => Reply::ok(),
        (Shape::Count, KvReply::Count(n)) => Reply::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
        (Shape::Integer, KvReply::Integer(n)) => Reply::Integer(n),
        (Shape::Values, KvReply::Values(values)) => {
            Reply::array(values.into_iter().map(Reply::Bulk).collect())
        }
        (shape, other) => unexpected(shape, &other),
    }
}

fn unexpected(shape: impl std::fmt::Debug, reply: &KvReply) -> Reply {
    warn!(
        ?shape,
        ?reply,
        "the cluster answered with an unexpected reply"
    );
    Reply::err("unexpected reply from the cluster")
}

/// Runs `action` (anything but [`Action::Quit`], answered by the caller) and returns the
/// answer.
pub async fn execute<B: KvBackend>(backend: &B, action: Action) -> Reply {
    match action {
        Action::Reply(reply) => reply,
        Action::Quit => Reply::ok(),
        Action::Call { op, shape } => match backend.call(op).await {
            Ok(reply) => render(shape, reply),
            Err(error) => client_error_reply(&error),
        },
        Action::ConditionalSet {
            key,
            value,
            condition,
            get,
        } => conditional_set(backend, key, value, condition, get).await,
    }
}

/// `SET` with `NX`, `XX` or `GET` as compare-and-set from a believed current value: a failed
/// swap returns the actual value, which becomes the new belief. The belief starts as "absent"
/// (no read needed for `NX`, and a wrong guess costs one round trip) except for `XX`, which
/// reads first, since "absent" there would answer without asking the cluster.
async fn conditional_set<B: KvBackend>(
    backend: &B,
    key: Vec<u8>,
    value: Vec<u8>,
    condition: Option<Condition>,
    get: bool,
) -> Reply {
    let mut current = None;
    if condition == Some(Condition::Xx) {
        match backend.call(KvOp::Get { key: key.clone() }).await {
            Ok(KvReply::Value(value)) => current = value,
            Ok(KvReply::Error(error)) => return kv_error_reply(&error),
            Ok(other) => return unexpected("GET", &other),
            Err(error) => return client_error_reply(&error),
        }
    }
    for _ in 0..MAX_CAS_ATTEMPTS {
        let allowed = match condition {
            None => true,
            Some(Condition::Nx) => current.is_none(),
            Some(Condition::Xx) => current.is_some(),
        };
        if !allowed {
            return if get {
                Reply::Bulk(current)
            } else {
                Reply::Bulk(None)
            };
        }
        let op = KvOp::Cas {
            key: key.clone(),
            expected: current.clone(),
            new: Some(value.clone()),
        };
        match backend.call(op).await {
            Ok(KvReply::Swapped { swapped: true, .. }) => {
                return if get {
                    Reply::Bulk(current)
                } else {
                    Reply::ok()
                };
            }
            Ok(KvReply::Swapped {
                swapped: false,
                current: actual,
            }) => current = actual,
            Ok(KvReply::Error(error)) => return kv_error_reply(&error),
            Ok(other) => return unexpected("CAS", &other),
            Err(error) => return client_error_reply(&error),
        }
    }
    Reply::err(format!(
        "the key changed {MAX_CAS_ATTEMPTS} times during a conditional SET; try again"
    ))
}

#[cfg(test)]
mod tests;
