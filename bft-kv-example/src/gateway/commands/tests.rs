//! Tests of the command mapping, against the store itself (no network).

use super::*;
use crate::gateway::tests::Store;
use crate::service::{KvLimits, KvService};
use proptest::prelude::*;
use std::sync::Mutex;

fn cmd(words: &[&str]) -> Command {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn run(store: &Store, session: &mut Session, words: &[&str]) -> Reply {
    let action = plan(session, cmd(words));
    block_on(execute(store, action))
}

/// Runs a future to completion on a fresh current-thread runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn err(text: &str) -> Reply {
    Reply::Error(text.into())
}

#[test]
fn every_supported_command_is_recognised() {
    for name in SUPPORTED {
        assert!(
            arity_ok(name.as_bytes(), 0).is_some(),
            "{name} is listed but not planned"
        );
    }
}

#[test]
fn strings_round_trip_through_the_store() {
    let store = Store::default();
    let session = &mut Session::default();
    assert_eq!(run(&store, session, &["GET", "k"]), Reply::Bulk(None));
    assert_eq!(run(&store, session, &["set", "k", "v"]), Reply::ok());
    assert_eq!(run(&store, session, &["GET", "k"]), Reply::bulk("v"));
    assert_eq!(
        run(&store, session, &["EXISTS", "k", "k", "x"]),
        Reply::Integer(2)
    );
    assert_eq!(run(&store, session, &["DEL", "k", "x"]), Reply::Integer(1));
    assert_eq!(run(&store, session, &["EXISTS", "k"]), Reply::Integer(0));
    assert_eq!(
        run(&store, session, &["MSET", "a", "1", "b", "2"]),
        Reply::ok()
    );
    assert_eq!(
        run(&store, session, &["MGET", "a", "nope", "b"]),
        Reply::array(vec![Reply::bulk("1"), Reply::Bulk(None), Reply::bulk("2")])
    );
}

#[test]
fn counters_follow_redis() {
    let store = Store::default();
    let session = &mut Session::default();
    assert_eq!(run(&store, session, &["INCR", "n"]), Reply::Integer(1));
    assert_eq!(
        run(&store, session, &["INCRBY", "n", "41"]),
        Reply::Integer(42)
    );
    assert_eq!(run(&store, session, &["DECR", "n"]), Reply::Integer(41));
    assert_eq!(
        run(&store, session, &["DECRBY", "n", "-9"]),
        Reply::Integer(50)
    );
    assert_eq!(
        run(&store, session, &["INCRBY", "n", "x"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        run(&store, session, &["INCRBY", "n", "+1"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        run(&store, session, &["DECRBY", "n", "-9223372036854775808"]),
        err("ERR decrement would overflow")
    );
    run(&store, session, &["SET", "s", "abc"]);
    assert_eq!(
        run(&store, session, &["INCR", "s"]),
        err("ERR value is not an integer or out of range")
    );
    run(&store, session, &["SET", "max", "9223372036854775807"]);
    assert_eq!(
        run(&store, session, &["INCR", "max"]),
        err("ERR increment or decrement would overflow")
    );
}

#[test]
fn set_conditions_use_compare_and_set() {
    let store = Store::default();
    let session = &mut Session::default();
    assert_eq!(
        run(&store, session, &["SET", "k", "1", "XX"]),
        Reply::Bulk(None)
    );
    assert_eq!(run(&store, session, &["GET", "k"]), Reply::Bulk(None));
    assert_eq!(run(&store, session, &["SET", "k", "1", "nx"]), Reply::ok());
    assert_eq!(
        run(&store, session, &["SET", "k", "2", "NX"]),
        Reply::Bulk(None)
    );
    assert_eq!(run(&store, session, &["SET", "k", "3", "XX"]), Reply::ok());
    assert_eq!(
        run(&store, session, &["SET", "k", "4", "GET"]),
        Reply::bulk("3")
    );
    assert_eq!(
        run(&store, session, &["SET", "k", "5", "NX", "GET"]),
        Reply::bulk("4")
    );
    assert_eq!(
        run(&store, session, &["SET", "k", "6", "XX", "GET", "KEEPTTL"]),
        Reply::bulk("4")
    );
    assert_eq!(
        run(&store, session, &["SET", "new", "1", "GET"]),
        Reply::Bulk(None)
    );
    assert_eq!(run(&store, session, &["GET", "k"]), Reply::bulk("6"));
    assert_eq!(run(&store, session, &["GET", "new"]), Reply::bulk("1"));
    // NX needs no read: one compare-and-set.
    store.calls.lock().unwrap().clear();
    run(&store, session, &["SET", "fresh", "1", "NX"]);
    assert_eq!(store.calls.lock().unwrap().len(), 1);
}

#[test]
fn set_options_are_checked() {
    let store = Store::default();
    let session = &mut Session::default();
    assert_eq!(
        run(&store, session, &["SET", "k", "v", "EX", "10"]),
        err("ERR SET option 'EX' is not supported: bft-kv keys never expire")
    );
    assert_eq!(
        run(&store, session, &["SET", "k", "v", "px", "10"]),
        err("ERR SET option 'px' is not supported: bft-kv keys never expire")
    );
    for options in [
        &["NX", "XX"][..],
        &["XX", "NX"],
        &["GET", "GET"],
        &["BOGUS"],
    ] {
        let mut words = vec!["SET", "k", "v"];
        words.extend_from_slice(options);
        assert_eq!(
            run(&store, session, &words),
            err("ERR syntax error"),
            "{options:?}"
        );
    }
    assert!(
        store.calls.lock().unwrap().is_empty(),
        "nothing reached the store"
    );
}

#[test]
fn wrong_arity_is_refused_without_the_store() {
    let store = Store::default();
    let session = &mut Session::default();
    for words in [
        &["GET"][..],
        &["GET", "a", "b"],
        &["SET", "k"],
        &["DEL"],
        &["EXISTS"],
        &["INCR"],
        &["INCRBY", "k"],
        &["MGET"],
        &["MSET", "a"],
        &["MSET", "a", "1", "b"],
        &["PING", "a", "b"],
        &["ECHO"],
        &["SELECT"],
    ] {
        let expected = format!(
            "ERR wrong number of arguments for '{}' command",
            words[0].to_lowercase()
        );
        assert_eq!(run(&store, session, words), err(&expected), "{words:?}");
    }
    assert!(store.calls.lock().unwrap().is_empty());
}

#[test]
fn unknown_commands_are_named() {
    let store = Store::default();
    let session = &mut Session::default();
    assert_eq!(
        run(&store, session, &["FLUSHALL"]),
        err("ERR unknown command 'FLUSHALL', with args beginning with: ")
    );
    assert_eq!(
        run(&store, session, &["hset", "h", "f", "v"]),
        err("ERR unknown command 'hset', with args beginning with: 'h' 'f' 'v' ")
    );
    let long = "x".repeat(500);
    let Reply::Error(text) = run(&store, session, &[&long, &long]) else {
        panic!("an error")
    };
    assert!(
        text.len() < 400,
        "quoted parts are truncated: {}",
        text.len()
    );
    let binary = plan(session, vec![vec![0xff, b'\r', b'\n'], vec![]]);
    let Action::Reply(Reply::Error(text)) = binary else {
        panic!("an error")
    };
    assert!(text.starts_with("ERR unknown command '\u{fffd}"), "{text}");
}

#[test]
fn connection_commands_answer_like_redis() {
    let store = Store::default();
    let session = &mut Session { id: 7, name: None };
    assert_eq!(
        run(&store, session, &["PING"]),
        Reply::Simple("PONG".into())
    );
    assert_eq!(run(&store, session, &["ping", "hi"]), Reply::bulk("hi"));
    assert_eq!(run(&store, session, &["ECHO", "x y"]), Reply::bulk("x y"));
    assert_eq!(run(&store, session, &["SELECT", "0"]), Reply::ok());
    assert_eq!(
        run(&store, session, &["SELECT", "1"]),
        err("ERR DB index is out of range")
    );
    assert_eq!(
        run(&store, session, &["SELECT", "zero"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(run(&store, session, &["COMMAND"]), Reply::array(vec![]));
    assert_eq!(
        run(&store, session, &["COMMAND", "DOCS"]),
        Reply::array(vec![])
    );
    assert_eq!(
        run(&store, session, &["COMMAND", "COUNT"]),
        Reply::Integer(SUPPORTED.len() as i64)
    );
    assert_eq!(
        run(&store, session, &["CONFIG", "GET", "save"]),
        Reply::array(vec![Reply::bulk("save"), Reply::bulk("")])
    );
    assert_eq!(
        run(
            &store,
            session,
            &["CONFIG", "GET", "APPENDONLY", "maxmemory"]
        ),
        Reply::array(vec![Reply::bulk("appendonly"), Reply::bulk("no")])
    );
    assert_eq!(
        run(&store, session, &["CONFIG", "SET", "save", ""]),
        err("ERR unknown subcommand 'SET'. Try CONFIG HELP.")
    );
    assert_eq!(
        run(&store, session, &["CLIENT", "GETNAME"]),
        Reply::Bulk(None)
    );
    assert_eq!(
        run(&store, session, &["CLIENT", "SETNAME", "me"]),
        Reply::ok()
    );
    assert_eq!(
        run(&store, session, &["CLIENT", "GETNAME"]),
        Reply::bulk("me")
    );
    assert_eq!(
        run(&store, session, &["CLIENT", "SETNAME", "a b"]),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(run(&store, session, &["CLIENT", "ID"]), Reply::Integer(7));
    assert_eq!(
        run(
            &store,
            session,
            &["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"]
        ),
        Reply::ok()
    );
    assert_eq!(
        run(&store, session, &["CLIENT", "KILL", "x"]),
        err("ERR unknown subcommand 'KILL'. Try CLIENT HELP.")
    );
    assert!(matches!(plan(session, cmd(&["QUIT"])), Action::Quit));
    assert!(matches!(
        run(&store, session, &["AUTH", "pw"]),
        Reply::Error(text) if text.starts_with("ERR AUTH <password> called without")
    ));
    assert!(store.calls.lock().unwrap().is_empty());
}

#[test]
fn hello_speaks_resp2_only() {
    let store = Store::default();
    let session = &mut Session { id: 3, name: None };
    let Reply::Array(Some(fields)) = run(&store, session, &["HELLO", "2", "SETNAME", "cli"]) else {
        panic!("HELLO 2 describes the server")
    };
    assert_eq!(
        fields[4..8],
        [
            Reply::bulk("proto"),
            Reply::Integer(2),
            Reply::bulk("id"),
            Reply::Integer(3)
        ]
    );
    assert_eq!(session.name.as_deref(), Some(&b"cli"[..]));
    assert!(matches!(
        run(&store, session, &["HELLO"]),
        Reply::Array(Some(_))
    ));
    assert!(matches!(
        run(&store, session, &["HELLO", "2", "AUTH", "default", "pw"]),
        Reply::Array(Some(_))
    ));
    assert_eq!(
        run(&store, session, &["HELLO", "3"]),
        err("NOPROTO sorry, this protocol version is not supported.")
    );
    assert_eq!(
        run(&store, session, &["HELLO", "x"]),
        err("ERR Protocol version is not an integer or out of range")
    );
    assert_eq!(
        run(&store, session, &["HELLO", "2", "AUTH", "default"]),
        err("ERR Syntax error in HELLO option 'AUTH'")
    );
    assert_eq!(
        run(&store, session, &["HELLO", "2", "WHAT"]),
        err("ERR Syntax error in HELLO option 'WHAT'")
    );
}

#[test]
fn store_refusals_and_unreachable_clusters_are_worded() {
    let limits = KvLimits {
        max_key_bytes: 4,
        ..KvLimits::default()
    };
    let store = Store {
        service: Mutex::new(KvService::new(limits)),
        ..Store::default()
    };
    let session = &mut Session::default();
    assert_eq!(
        run(&store, session, &["GET", "toolong"]),
        err("ERR key too large: 7 bytes, at most 4")
    );
    let down = Store {
        down: true,
        ..Store::default()
    };
    for words in [
        &["GET", "k"][..],
        &["SET", "k", "v", "XX"],
        &["SET", "k", "v", "NX"],
    ] {
        let Reply::Error(text) = run(&down, session, words) else {
            panic!("an error")
        };
        assert!(
            text.starts_with("ERR cluster unavailable: no agreed reply"),
            "{text}"
        );
    }
}

#[test]
fn mismatched_replies_are_errors_not_panics() {
    assert_eq!(
        render(Shape::Value, KvReply::Ok),
        err("ERR unexpected reply from the cluster")
    );
    assert_eq!(
        render(Shape::Count, KvReply::Count(u64::MAX)),
        Reply::Integer(i64::MAX)
    );
}

proptest! {
    /// Any command, known name or not, with any arguments, is planned without a panic.
    #[test]
    fn planning_never_panics(
        name in prop_oneof![
            proptest::sample::select(SUPPORTED).prop_map(|n| n.to_lowercase().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ],
        args in proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(&["NX", "XX", "GET", "EX", "GETNAME", "SETNAME",
                    "ID", "SETINFO", "GET", "save", "2", "3", "AUTH", "COUNT", "0", "-1"][..])
                    .prop_map(|a| a.as_bytes().to_vec()),
                proptest::collection::vec(any::<u8>(), 0..8),
            ],
            0..6,
        ),
    ) {
        let mut command = vec![name];
        command.extend(args);
        let _ = plan(&mut Session::default(), command);
    }
}
