//! Unit and property tests of the RESP2 codec.

use super::*;
use proptest::prelude::*;

fn args(list: &[&str]) -> Command {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

fn small_limits() -> RespLimits {
    RespLimits {
        max_args: 4,
        max_bulk_len: 16,
        max_inline_len: 24,
        max_buffered: 128,
    }
}

/// What parsing `input` yields when fed in pieces of the sizes `chunks` cycles through (each
/// also capped by the parser's room), draining commands after every piece: the commands, and
/// the error that stopped the parser, if any.
fn parse_in_chunks(
    limits: RespLimits,
    input: &[u8],
    chunks: &[usize],
) -> (Vec<Command>, Option<RespError>) {
    let mut parser = RespParser::new(limits);
    let mut commands = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().copied().cycle();
    loop {
        loop {
            match parser.next_command() {
                Ok(Some(command)) => commands.push(command),
                Ok(None) => break,
                Err(error) => return (commands, Some(error)),
            }
        }
        if rest.is_empty() {
            return (commands, None);
        }
        let room = parser.room();
        assert!(room > 0, "Ok(None) promises room to feed");
        let size = sizes.next().unwrap_or(1).clamp(1, room).min(rest.len());
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        if let Err(error) = parser.feed(piece) {
            return (commands, Some(error));
        }
    }
}

fn parse_whole(limits: RespLimits, input: &[u8]) -> (Vec<Command>, Option<RespError>) {
    parse_in_chunks(limits, input, &[usize::MAX])
}

fn parse_bytewise(limits: RespLimits, input: &[u8]) -> (Vec<Command>, Option<RespError>) {
    parse_in_chunks(limits, input, &[1])
}

fn first_error(limits: RespLimits, input: &[u8]) -> RespError {
    let (_, error) = parse_whole(limits, input);
    let error = error.expect("the input is refused");
    assert_eq!(
        parse_bytewise(limits, input).1,
        Some(error.clone()),
        "byte-at-a-time feeding stops with the same error"
    );
    error
}

const PIPELINE: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n\
PING\r\n\
*2\r\n$3\r\nGET\r\n$1\r\nk\r\n\
*0\r\n\
\r\n\
  \n\
ECHO \"a b\" 'c d'\n\
*1\r\n$0\r\n\r\n\
*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\r\n\r\n";

fn pipeline_commands() -> Vec<Command> {
    vec![
        args(&["SET", "k", "hello"]),
        args(&["PING"]),
        args(&["GET", "k"]),
        args(&["ECHO", "a b", "c d"]),
        args(&[""]),
        args(&["ECHO", "\r\n\r\n"]),
    ]
}

#[test]
fn parses_an_array_of_bulk_strings() {
    let mut parser = RespParser::new(RespLimits::default());
    parser.feed(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n").unwrap();
    assert_eq!(parser.next_command().unwrap(), Some(args(&["GET", "key"])));
    assert_eq!(parser.next_command().unwrap(), None);
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn bulk_strings_are_binary_safe() {
    let mut input = Vec::new();
    let value = [0u8, b'\r', b'\n', 0xff, b'*', b'$'];
    encode_command(&[&b"SET"[..], b"k", &value], &mut input);
    let (commands, error) = parse_whole(RespLimits::default(), &input);
    assert_eq!(error, None);
    assert_eq!(
        commands,
        vec![vec![b"SET".to_vec(), b"k".to_vec(), value.to_vec()]]
    );
}

#[test]
fn parses_inline_commands() {
    let (commands, error) = parse_whole(
        RespLimits::default(),
        b"PING\r\nset  k\tv\nGET k\r\n\r\n\n   \r\n",
    );
    assert_eq!(error, None);
    assert_eq!(
        commands,
        vec![
            args(&["PING"]),
            args(&["set", "k", "v"]),
            args(&["GET", "k"])
        ]
    );
}

#[test]
fn inline_quotes_and_escapes_follow_redis() {
    let cases: &[(&[u8], &[&[u8]])] = &[
        (b"SET k \"a b\"", &[b"SET", b"k", b"a b"]),
        (
            b"SET k \"\\x41\\x4a\\n\\r\\t\\\\\\\"\"",
            &[b"SET", b"k", b"AJ\n\r\t\\\""],
        ),
        (b"SET k \"\\xZZ\"", &[b"SET", b"k", b"xZZ"]),
        (b"SET k \"\\b\\a\\q\"", &[b"SET", b"k", b"\x08\x07q"]),
        (b"SET k 'it\\'s \"x\"'", &[b"SET", b"k", b"it's \"x\""]),
        (b"SET k 'a\\nb'", &[b"SET", b"k", b"a\\nb"]),
        (b"a\"b c\"", &[b"ab c"]),
        (b"\"\" ''", &[b"", b""]),
    ];
    for (line, expected) in cases {
        let expected: Command = expected.iter().map(|a| a.to_vec()).collect();
        assert_eq!(
            split_args(line, 16),
            Ok(expected),
            "{}",
            line.escape_ascii()
        );
    }
}

#[test]
fn unbalanced_inline_quotes_are_refused() {
    for line in [
        &b"SET k \"abc"[..],
        b"SET k 'abc",
        b"SET k \"abc\"def",
        b"SET k 'abc'def",
        b"SET k \"abc\\\"",
        b"\"",
    ] {
        assert_eq!(
            split_args(line, 16),
            Err(RespError::UnbalancedQuotes),
            "{}",
            line.escape_ascii()
        );
    }
    let mut input = b"SET k \"abc\r\n".to_vec();
    input.extend_from_slice(b"PING\r\n");
    assert_eq!(
        first_error(RespLimits::default(), &input),
        RespError::UnbalancedQuotes
    );
}

#[test]
fn pipelined_commands_come_out_in_order() {
    let (commands, error) = parse_whole(RespLimits::default(), PIPELINE);
    assert_eq!(error, None);
    assert_eq!(commands, pipeline_commands());
}

#[test]
fn every_split_point_and_byte_at_a_time_give_the_same_commands() {
    for split in 0..=PIPELINE.len() {
        let mut parser = RespParser::new(RespLimits::default());
        let mut commands = Vec::new();
        for piece in [&PIPELINE[..split], &PIPELINE[split..]] {
            parser.feed(piece).unwrap();
            while let Some(command) = parser.next_command().unwrap() {
                commands.push(command);
            }
        }
        assert_eq!(commands, pipeline_commands(), "split at {split}");
        assert_eq!(parser.buffered(), 0);
    }
    assert_eq!(
        parse_bytewise(RespLimits::default(), PIPELINE),
        (pipeline_commands(), None)
    );
}

#[test]
fn an_incomplete_command_waits_for_more() {
    let mut parser = RespParser::new(RespLimits::default());
    for piece in [&b"*"[..], b"2", b"\r", b"\n$3\r\nGE", b"T\r\n$1\r\nk\r"] {
        parser.feed(piece).unwrap();
        assert_eq!(parser.next_command().unwrap(), None);
    }
    parser.feed(b"\n").unwrap();
    assert_eq!(parser.next_command().unwrap(), Some(args(&["GET", "k"])));
}

#[test]
fn malformed_arrays_are_refused() {
    let limits = RespLimits::default();
    let cases: &[(&[u8], RespError)] = &[
        (b"*abc\r\n", RespError::InvalidMultibulkLength),
        (b"*\r\n", RespError::InvalidMultibulkLength),
        (b"*+1\r\n", RespError::InvalidMultibulkLength),
        (b"*1 \r\n", RespError::InvalidMultibulkLength),
        (
            b"*99999999999999999999\r\n",
            RespError::InvalidMultibulkLength,
        ),
        (b"*1\r\n:5\r\n", RespError::ExpectedBulk { got: b':' }),
        (
            b"*2\r\n$1\r\na\r\nPING\r\n",
            RespError::ExpectedBulk { got: b'P' },
        ),
        (b"*1\r\n$-1\r\n", RespError::InvalidBulkLength),
        (b"*1\r\n$x\r\n", RespError::InvalidBulkLength),
        (b"*1\r\n$\r\n", RespError::InvalidBulkLength),
        (b"*1\r\n$3\r\nabcde\r\n", RespError::MissingCrlf),
        (b"*1\r\n$3\r\nabc\n\r", RespError::MissingCrlf),
        (
            b"*1111111111111111111111111111111111111",
            RespError::HeaderTooLong,
        ),
        (
            b"*1\r\n$000000000000000000000000000000000000001\r\n",
            RespError::HeaderTooLong,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            &first_error(limits, input),
            expected,
            "{}",
            input.escape_ascii()
        );
    }
}

#[test]
fn empty_and_null_arrays_are_skipped() {
    let (commands, error) = parse_whole(RespLimits::default(), b"*0\r\n*-1\r\n*-7\r\nPING\r\n");
    assert_eq!(error, None);
    assert_eq!(commands, vec![args(&["PING"])]);
}

#[test]
fn argument_count_is_limited() {
    let limits = small_limits();
    assert_eq!(
        first_error(limits, b"*5\r\n"),
        RespError::TooManyArguments { count: 5, max: 4 }
    );
    assert_eq!(
        first_error(limits, b"*9223372036854775807\r\n"),
        RespError::TooManyArguments {
            count: i64::MAX as u64,
            max: 4
        }
    );
    assert_eq!(
        first_error(limits, b"a b c d e\r\n"),
        RespError::TooManyArguments { count: 5, max: 4 }
    );
    let (commands, error) = parse_whole(
        limits,
        b"*4\r\n$1\r\na\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\na b c d\n",
    );
    assert_eq!(error, None);
    assert_eq!(
        commands,
        vec![args(&["a", "", "", ""]), args(&["a", "b", "c", "d"])]
    );
}

#[test]
fn bulk_length_is_limited_before_the_bulk_arrives() {
    let limits = small_limits();
    assert_eq!(
        first_error(limits, b"*1\r\n$17\r\n"),
        RespError::BulkTooLong { len: 17, max: 16 }
    );
    assert_eq!(
        first_error(limits, b"*1\r\n$9223372036854775807\r\n"),
        RespError::BulkTooLong {
            len: i64::MAX as u64,
            max: 16
        }
    );
    let mut input = Vec::new();
    encode_command(&["x".repeat(16)], &mut input);
    assert_eq!(
        parse_whole(limits, &input),
        (vec![args(&[&"x".repeat(16)])], None)
    );
}

#[test]
fn inline_length_is_limited_with_or_without_a_newline() {
    let limits = small_limits();
    let exact = "x".repeat(24);
    for ending in ["\n", "\r\n"] {
        let line = format!("{exact}{ending}");
        assert_eq!(
            parse_whole(limits, line.as_bytes()),
            (vec![args(&[&exact])], None)
        );
        let long = format!("y{exact}{ending}");
        assert_eq!(
            first_error(limits, long.as_bytes()),
            RespError::InlineTooLong { max: 24 }
        );
    }
    // No newline ever: refused once the line cannot fit any more.
    assert_eq!(
        first_error(limits, "z".repeat(26).as_bytes()),
        RespError::InlineTooLong { max: 24 }
    );
    assert_eq!(
        parse_whole(limits, "z".repeat(25).as_bytes()),
        (vec![], None)
    );
}

#[test]
fn a_command_larger_than_the_buffer_is_refused_before_it_is_held() {
    let limits = small_limits();
    // Four bulk strings of 16 bytes fit (64 + framing); the buffer is 128 bytes.
    let mut fits = Vec::new();
    encode_command(
        &[
            "a".repeat(16),
            "b".repeat(16),
            "c".repeat(16),
            "d".repeat(16),
        ],
        &mut fits,
    );
    assert_eq!(parse_bytewise(limits, &fits).1, None);
    let tight = RespLimits {
        max_buffered: 60,
        ..limits
    };
    // With three bulk strings held (48 bytes), the fourth (16 + CRLF) would exceed 60 bytes:
    // refused at its header, before its bytes are accepted.
    let error = first_error(tight, &fits);
    assert_eq!(error, RespError::CommandTooLarge { max: 60 });
}

#[test]
fn feeding_more_than_the_room_is_refused() {
    let mut parser = RespParser::new(small_limits());
    parser.feed(&[b'*'; 100]).unwrap();
    assert_eq!(parser.room(), 28);
    assert_eq!(
        parser.feed(&[b'*'; 29]),
        Err(RespError::CommandTooLarge { max: 128 })
    );
    assert!(parser.is_failed());
    assert_eq!(parser.buffered(), 0, "a failed parser releases its buffer");
}

#[test]
fn a_failed_parser_stays_failed() {
    let mut parser = RespParser::new(RespLimits::default());
    parser.feed(b"*1\r\n:1\r\n*1\r\n$4\r\nPING\r\n").unwrap();
    let error = RespError::ExpectedBulk { got: b':' };
    assert_eq!(parser.next_command(), Err(error.clone()));
    assert_eq!(parser.next_command(), Err(error.clone()));
    assert_eq!(parser.feed(b"PING\r\n"), Err(error.clone()));
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn commands_before_an_error_are_still_delivered() {
    let (commands, error) = parse_whole(RespLimits::default(), b"PING\r\nECHO x\r\n*1\r\n!\r\n");
    assert_eq!(commands, vec![args(&["PING"]), args(&["ECHO", "x"])]);
    assert_eq!(error, Some(RespError::ExpectedBulk { got: b'!' }));
}

#[test]
fn unvalidated_limits_stop_instead_of_stalling() {
    let limits = RespLimits {
        max_args: 4,
        max_bulk_len: 64,
        max_inline_len: 64,
        max_buffered: 8,
    };
    assert!(limits.validate().is_err());
    assert_eq!(
        first_error(limits, b"PINGPINGPING\r\n"),
        RespError::CommandTooLarge { max: 8 }
    );
}

#[test]
fn limits_validate_names_the_wrong_field() {
    assert_eq!(RespLimits::default().validate(), Ok(()));
    assert_eq!(small_limits().validate(), Ok(()));
    let zero = RespLimits {
        max_args: 0,
        ..RespLimits::default()
    };
    assert_eq!(zero.validate().unwrap_err().field, "max_args");
    let small_buffer = RespLimits {
        max_buffered: 1000,
        ..RespLimits::default()
    };
    assert_eq!(small_buffer.validate().unwrap_err().field, "max_buffered");
}

#[test]
fn errors_render_like_redis() {
    assert_eq!(
        RespError::InvalidMultibulkLength.to_string(),
        "Protocol error: invalid multibulk length"
    );
    assert_eq!(
        RespError::ExpectedBulk { got: b'\n' }.to_string(),
        "Protocol error: expected '$', got '\\n'"
    );
    assert_eq!(
        RespError::UnbalancedQuotes.to_string(),
        "Protocol error: unbalanced quotes in request"
    );
}

#[test]
fn replies_encode_as_resp2() {
    let cases: Vec<(Reply, &[u8])> = vec![
        (Reply::ok(), b"+OK\r\n"),
        (Reply::Simple("PONG".into()), b"+PONG\r\n"),
        (
            Reply::err("unknown command 'x'"),
            b"-ERR unknown command 'x'\r\n",
        ),
        (Reply::Error("WRONGTYPE bad".into()), b"-WRONGTYPE bad\r\n"),
        (Reply::Error("ERR a\r\nb\nc".into()), b"-ERR a  b c\r\n"),
        (Reply::Simple("x\ry".into()), b"+x y\r\n"),
        (Reply::Integer(0), b":0\r\n"),
        (Reply::Integer(-42), b":-42\r\n"),
        (Reply::Integer(i64::MIN), b":-9223372036854775808\r\n"),
        (Reply::bulk("hi"), b"$2\r\nhi\r\n"),
        (Reply::bulk(""), b"$0\r\n\r\n"),
        (Reply::bulk(b"a\r\nb".to_vec()), b"$4\r\na\r\nb\r\n"),
        (Reply::Bulk(None), b"$-1\r\n"),
        (Reply::Array(None), b"*-1\r\n"),
        (Reply::array(vec![]), b"*0\r\n"),
        (
            Reply::array(vec![
                Reply::bulk("a"),
                Reply::Bulk(None),
                Reply::Integer(1),
                Reply::array(vec![Reply::ok()]),
            ]),
            b"*4\r\n$1\r\na\r\n$-1\r\n:1\r\n*1\r\n+OK\r\n",
        ),
    ];
    for (reply, expected) in cases {
        assert_eq!(reply.to_bytes(), expected, "{reply:?}");
    }
}

/// A reply decoder, for the round-trip property only (the gateway never reads replies).
fn decode_reply(input: &[u8]) -> Option<(Reply, &[u8])> {
    let end = input.windows(2).position(|w| w == b"\r\n")?;
    let (line, rest) = (&input[1..end], &input[end + 2..]);
    let text = || String::from_utf8(line.to_vec()).ok();
    match input.first()? {
        b'+' => Some((Reply::Simple(text()?), rest)),
        b'-' => Some((Reply::Error(text()?), rest)),
        b':' => Some((Reply::Integer(parse_integer(line)?), rest)),
        b'$' => match parse_integer(line)? {
            -1 => Some((Reply::Bulk(None), rest)),
            len => {
                let len = usize::try_from(len).ok()?;
                (rest.get(len..len + 2)? == b"\r\n")
                    .then(|| (Reply::bulk(&rest[..len]), &rest[len + 2..]))
            }
        },
        b'*' => match parse_integer(line)? {
            -1 => Some((Reply::Array(None), rest)),
            count => {
                let mut rest = rest;
                let mut elements = Vec::new();
                for _ in 0..count {
                    let (element, tail) = decode_reply(rest)?;
                    elements.push(element);
                    rest = tail;
                }
                Some((Reply::array(elements), rest))
            }
        },
        _ => None,
    }
}

fn reply_strategy() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,20}".prop_map(Reply::Simple),
        "[A-Z]{1,8} [a-z0-9 ']{0,20}".prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Integer),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)).prop_map(Reply::Bulk),
        Just(Reply::Array(None)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        proptest::collection::vec(inner, 0..6).prop_map(Reply::array)
    })
}

fn commands_strategy() -> impl Strategy<Value = Vec<Command>> {
    let arg = proptest::collection::vec(any::<u8>(), 0..20);
    let command = proptest::collection::vec(arg, 1..5);
    proptest::collection::vec(command, 0..6)
}

proptest! {
    #[test]
    fn commands_round_trip_in_any_chunking(
        commands in commands_strategy(),
        chunks in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let mut input = Vec::new();
        for command in &commands {
            encode_command(command, &mut input);
        }
        prop_assert_eq!(
            parse_in_chunks(RespLimits::default(), &input, &chunks),
            (commands, None)
        );
    }

    #[test]
    fn inline_commands_round_trip(
        commands in proptest::collection::vec(
            proptest::collection::vec("[!#-&()+-~][!#-&(-~]{0,9}", 1..5), 0..6),
    ) {
        let mut input = Vec::new();
        for command in &commands {
            input.extend_from_slice(command.join(" ").as_bytes());
            input.extend_from_slice(b"\r\n");
        }
        let expected: Vec<Command> = commands
            .iter()
            .map(|c| c.iter().map(|a| a.as_bytes().to_vec()).collect())
            .collect();
        prop_assert_eq!(parse_bytewise(RespLimits::default(), &input), (expected, None));
    }

    #[test]
    fn any_input_in_any_chunking_gives_the_same_outcome_without_panicking(
        input in proptest::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                1 => Just(b'*'), 1 => Just(b'$'), 1 => Just(b'\r'), 1 => Just(b'\n'),
                1 => Just(b'"'), 1 => Just(b'1'), 1 => Just(b'2'),
            ],
            0..200,
        ),
        chunks in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let limits = small_limits();
        let whole = parse_in_chunks(limits, &input, &chunks);
        prop_assert_eq!(&parse_bytewise(limits, &input), &whole);
        let (commands, _) = whole;
        for command in &commands {
            prop_assert!(!command.is_empty() && command.len() <= limits.max_args);
        }
    }

    #[test]
    fn structured_garbage_never_panics(
        pieces in proptest::collection::vec(
            prop_oneof![
                Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()),
                Just(b"-1".to_vec()), Just(b"3".to_vec()), Just(b"\"".to_vec()),
                Just(b"'".to_vec()), Just(b"\\x4".to_vec()), Just(b"PING".to_vec()),
                Just(b" ".to_vec()), Just(b"\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..8),
            ],
            0..60,
        ),
    ) {
        let input = pieces.concat();
        let whole = parse_whole(RespLimits::default(), &input);
        prop_assert_eq!(parse_bytewise(RespLimits::default(), &input), whole);
    }

    #[test]
    fn replies_round_trip(reply in reply_strategy()) {
        let bytes = reply.to_bytes();
        let (decoded, rest) = decode_reply(&bytes).expect("decodes");
        prop_assert!(rest.is_empty());
        prop_assert_eq!(decoded, reply);
    }
}
