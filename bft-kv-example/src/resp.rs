//! A sans-IO codec for RESP2, the Redis serialization protocol, as the gateway speaks it.
//!
//! - [`RespParser`] is fed bytes as they arrive and yields complete commands, each an argument
//!   array (`Vec<Vec<u8>>`, the command name first). It accepts what real clients send: arrays of
//!   bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, every client library) and inline commands
//!   (`PING\r\n`, `SET k "a b"\n`: telnet, `redis-cli` piping, `redis-benchmark`).
//! - [`Reply`] encodes the server's answers: simple string, error, integer, bulk string and array
//!   (the last two nullable).
//!
//! Everything a client can make the parser hold is bounded by [`RespLimits`]: arguments per
//! command, bytes per bulk string, bytes per inline line, and bytes buffered in total (the
//! unparsed input plus the arguments of the command being parsed). Input that breaks the protocol
//! or a limit yields a typed [`RespError`]; after one the parser is poisoned (it keeps returning
//! that error and holds nothing), since a byte stream cannot be resynchronised reliably. The
//! gateway answers `-ERR <error>` and closes the connection, as Redis does. No input makes the
//! parser panic.
//!
//! The results do not depend on how the input is split into [`RespParser::feed`] calls: feeding
//! a stream one byte at a time yields the same commands and the same error as feeding it whole
//! (the unit tests check this, including by property).

use std::ops::Range;

/// One command: its arguments, the command name first.
pub type Command = Vec<Vec<u8>>;

/// The longest header line (`*<count>` or `$<length>`, without its CRLF) the parser accepts: a
/// type byte and an `i64` with its sign need 21.
pub const MAX_HEADER_LINE: usize = 32;

/// Bounds on what one client connection can make the parser hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespLimits {
    /// Most arguments in one command (the command name counts).
    pub max_args: usize,
    /// Most bytes in one bulk string.
    pub max_bulk_len: usize,
    /// Most bytes in one inline command line (without its line ending).
    pub max_inline_len: usize,
    /// Most bytes held at once: unparsed input plus the arguments of the command being parsed.
    /// A command whose arguments do not fit is refused.
    pub max_buffered: usize,
}

impl Default for RespLimits {
    /// 1024 arguments, 512 KiB per bulk string, 64 KiB per inline line, 1 MiB buffered: ample for
    /// a cluster whose operations are limited to 64 KiB (bft-core's default).
    fn default() -> Self {
        RespLimits {
            max_args: 1024,
            max_bulk_len: 512 << 10,
            max_inline_len: 64 << 10,
            max_buffered: 1 << 20,
        }
    }
}

/// A [`RespLimits`] value that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RESP limit `{field}`: {reason}")]
pub struct LimitsError {
    /// The field that is wrong.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl RespLimits {
    /// Checks that the limits are usable: every one positive, and `max_buffered` large enough
    /// for one bulk string of `max_bulk_len` bytes and one inline line of `max_inline_len`
    /// bytes, with their framing.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let positive = [
            ("max_args", self.max_args),
            ("max_bulk_len", self.max_bulk_len),
            ("max_inline_len", self.max_inline_len),
            ("max_buffered", self.max_buffered),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(LimitsError {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        let needed = self
            .max_bulk_len
            .max(self.max_inline_len)
            .saturating_add(2 * MAX_HEADER_LINE + 4);
        if self.max_buffered < needed {
            return Err(LimitsError {
                field: "max_buffered",
                reason: format!(
                    "{} bytes cannot hold one bulk string of max_bulk_len ({}) or one inline line \
                     of max_inline_len ({}) with its framing: at least {needed} needed",
                    self.max_buffered, self.max_bulk_len, self.max_inline_len
                ),
            });
        }
        Ok(())
    }
}

/// Why the parser refused a client's input. The messages follow Redis's where Redis has one;
/// the gateway sends them as `-ERR <message>` before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// The count of an array (`*<count>`) is not an integer.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// The length of a bulk string (`$<length>`) is not a non-negative integer.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An element of a command array is not a bulk string.
    #[error("Protocol error: expected '$', got '{}'", .got.escape_ascii())]
    ExpectedBulk {
        /// The first byte of the element.
        got: u8,
    },
    /// A header line (`*<count>` or `$<length>`) has no CRLF within [`MAX_HEADER_LINE`] bytes.
    #[error("Protocol error: too big count or length line")]
    HeaderTooLong,
    /// A bulk string is not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
    /// An inline command line contains unbalanced quotes.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A command has more arguments than [`RespLimits::max_args`].
    #[error("Protocol error: {count} arguments, at most {max} accepted")]
    TooManyArguments {
        /// How many the client announced or sent.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// A bulk string is longer than [`RespLimits::max_bulk_len`].
    #[error("Protocol error: bulk string of {len} bytes, at most {max} accepted")]
    BulkTooLong {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// An inline line is longer than [`RespLimits::max_inline_len`].
    #[error("Protocol error: too big inline request, at most {max} bytes accepted")]
    InlineTooLong {
        /// The limit.
        max: usize,
    },
    /// The command being parsed (or input fed while it is) would exceed
    /// [`RespLimits::max_buffered`].
    #[error("Protocol error: command too large, at most {max} bytes buffered")]
    CommandTooLarge {
        /// The limit.
        max: usize,
    },
}

/// Where the parser is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a command boundary.
    Idle,
    /// Inside an array: the next element's `$<length>` header is expected.
    BulkHeader,
    /// Inside an array: a bulk string of this many bytes (then CRLF) is expected.
    BulkData(usize),
}

/// The incremental RESP2 request parser. See the [module documentation](self).
///
/// ```
/// # use bft_kv_example::resp::{RespLimits, RespParser};
/// let mut parser = RespParser::new(RespLimits::default());
/// parser.feed(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPI").unwrap();
/// assert_eq!(parser.next_command().unwrap(), Some(vec![b"GET".to_vec(), b"k".to_vec()]));
/// assert_eq!(parser.next_command().unwrap(), None); // "PI" is not a whole line yet
/// parser.feed(b"NG\r\n").unwrap();
/// assert_eq!(parser.next_command().unwrap(), Some(vec![b"PING".to_vec()]));
/// ```
#[derive(Debug, Clone)]
pub struct RespParser {
    limits: RespLimits,
    /// Input; `buf[pos..]` is not parsed yet.
    buf: Vec<u8>,
    pos: usize,
    /// How far past `pos` an inline line was already searched for its newline (so a line that
    /// arrives a byte at a time is not rescanned from its start each time).
    scanned: usize,
    state: State,
    /// The array being parsed: the arguments so far, their total length, and how many it has.
    args: Command,
    args_bytes: usize,
    expected: usize,
    /// The error that poisoned the parser.
    failed: Option<RespError>,
}

impl RespParser {
    /// A parser enforcing `limits` (see [`RespLimits::validate`]; unvalidated limits are still
    /// enforced, but may refuse every command).
    pub fn new(limits: RespLimits) -> RespParser {
        RespParser {
            limits,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            state: State::Idle,
            args: Vec::new(),
            args_bytes: 0,
            expected: 0,
            failed: None,
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> &RespLimits {
        &self.limits
    }

    /// Bytes held now: unparsed input plus the arguments of the command being parsed.
    pub fn buffered(&self) -> usize {
        self.args_bytes + (self.buf.len() - self.pos)
    }

    /// How many more bytes [`feed`](Self::feed) accepts now. A reader should read at most this
    /// many bytes before draining [`next_command`](Self::next_command) again; once
    /// `next_command` returns `Ok(None)`, this is at least 1.
    pub fn room(&self) -> usize {
        self.limits.max_buffered.saturating_sub(self.buffered())
    }

    /// Whether the parser stopped on an error.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Appends input. Fails (and poisons the parser) if that would hold more than
    /// [`RespLimits::max_buffered`] bytes: drain [`next_command`](Self::next_command) until it
    /// returns `Ok(None)` before feeding more, and feed at most [`room`](Self::room) bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), RespError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if bytes.len() > self.room() {
            return Err(self.fail(RespError::CommandTooLarge {
                max: self.limits.max_buffered,
            }));
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete command, `Ok(None)` if more input is needed, or the error that stops
    /// the connection. Arrays with no elements (`*0`, `*-1`) and blank inline lines are skipped,
    /// as Redis does.
    pub fn next_command(&mut self) -> Result<Option<Command>, RespError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        self.step().map_err(|error| self.fail(error))
    }

    /// Records `error`, releases everything held, and returns the error.
    fn fail(&mut self, error: RespError) -> RespError {
        self.failed = Some(error.clone());
        self.buf = Vec::new();
        self.pos = 0;
        self.scanned = 0;
        self.args = Vec::new();
        self.args_bytes = 0;
        error
    }

    /// Drops parsed input from the front of the buffer (amortised: only when it is at least
    /// half of the buffer).
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn unparsed(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Consumes `n` bytes of input.
    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.scanned = 0;
    }

    /// `Ok(None)`, unless the parser is full while needing more input (unreachable with valid
    /// limits, but then the connection stops instead of stalling).
    fn need_more(&self) -> Result<Option<Command>, RespError> {
        if self.room() == 0 {
            return Err(RespError::CommandTooLarge {
                max: self.limits.max_buffered,
            });
        }
        Ok(None)
    }

    fn step(&mut self) -> Result<Option<Command>, RespError> {
        loop {
            match self.state {
                State::Idle => {
                    let Some(&first) = self.unparsed().first() else {
                        return self.need_more();
                    };
                    if first == b'*' {
                        let Some(line) = self.header_line()? else {
                            return self.need_more();
                        };
                        let count = parse_integer(&self.buf[line])
                            .ok_or(RespError::InvalidMultibulkLength)?;
                        if count <= 0 {
                            continue;
                        }
                        let count = count.unsigned_abs();
                        if count > self.limits.max_args as u64 {
                            return Err(RespError::TooManyArguments {
                                count,
                                max: self.limits.max_args,
                            });
                        }
                        // Bounded by max_args, checked just above.
                        self.expected = count as usize;
                        self.args = Vec::with_capacity(self.expected);
                        self.state = State::BulkHeader;
                    } else {
                        let Some(line) = self.inline_line()? else {
                            return self.need_more();
                        };
                        let args = split_args(&self.buf[line], self.limits.max_args)?;
                        if args.is_empty() {
                            continue;
                        }
                        return Ok(Some(args));
                    }
                }
                State::BulkHeader => {
                    let Some(&first) = self.unparsed().first() else {
                        return self.need_more();
                    };
                    if first != b'$' {
                        return Err(RespError::ExpectedBulk { got: first });
                    }
                    let Some(line) = self.header_line()? else {
                        return self.need_more();
                    };
                    let len = parse_integer(&self.buf[line])
                        .filter(|len| *len >= 0)
                        .ok_or(RespError::InvalidBulkLength)?
                        .unsigned_abs();
                    if len > self.limits.max_bulk_len as u64 {
                        return Err(RespError::BulkTooLong {
                            len,
                            max: self.limits.max_bulk_len,
                        });
                    }
                    // Bounded by max_bulk_len, checked just above.
                    let len = len as usize;
                    if self.args_bytes + len + 2 > self.limits.max_buffered {
                        return Err(RespError::CommandTooLarge {
                            max: self.limits.max_buffered,
                        });
                    }
                    self.state = State::BulkData(len);
                }
                State::BulkData(len) => {
                    let unparsed = self.unparsed();
                    if unparsed.len() < len + 2 {
                        return self.need_more();
                    }
                    if &unparsed[len..len + 2] != b"\r\n" {
                        return Err(RespError::MissingCrlf);
                    }
                    let arg = unparsed[..len].to_vec();
                    self.advance(len + 2);
                    self.args.push(arg);
                    self.args_bytes += len;
                    if self.args.len() < self.expected {
                        self.state = State::BulkHeader;
                        continue;
                    }
                    self.state = State::Idle;
                    self.args_bytes = 0;
                    self.expected = 0;
                    return Ok(Some(std::mem::take(&mut self.args)));
                }
            }
        }
    }

    /// Consumes a header line (`*<count>\r\n` or `$<length>\r\n`) and returns the range of its
    /// number in `buf`; `None` if its CRLF has not arrived yet.
    fn header_line(&mut self) -> Result<Option<Range<usize>>, RespError> {
        let unparsed = self.unparsed();
        let window = &unparsed[..unparsed.len().min(MAX_HEADER_LINE + 2)];
        match window.windows(2).position(|pair| pair == b"\r\n") {
            Some(end) => {
                let line = self.pos + 1..self.pos + end;
                self.advance(end + 2);
                Ok(Some(line))
            }
            None if window.len() >= MAX_HEADER_LINE + 2 => Err(RespError::HeaderTooLong),
            None => Ok(None),
        }
    }

    /// Consumes an inline line (ended by `\n` or `\r\n`) and returns its range in `buf`; `None`
    /// if its newline has not arrived yet.
    fn inline_line(&mut self) -> Result<Option<Range<usize>>, RespError> {
        let max = self.limits.max_inline_len;
        // A line of `max` bytes, a '\r' and the '\n' fit in this window.
        let window_len = self.unparsed().len().min(max.saturating_add(2));
        let searched = self.scanned.min(window_len);
        let found = self.unparsed()[searched..window_len]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| searched + i);
        let Some(newline) = found else {
            if window_len >= max.saturating_add(2) {
                return Err(RespError::InlineTooLong { max });
            }
            self.scanned = window_len;
            return Ok(None);
        };
        let mut end = newline;
        if end > 0 && self.unparsed()[end - 1] == b'\r' {
            end -= 1;
        }
        if end > max {
            return Err(RespError::InlineTooLong { max });
        }
        let line = self.pos..self.pos + end;
        self.advance(newline + 1);
        Ok(Some(line))
    }
}

/// A strict decimal `i64`: an optional `-`, then digits only.
fn parse_integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(digit - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|v| v as u8)
}

/// Splits an inline command line into arguments as Redis does (`sdssplitargs`): separated by
/// white space; `"double quotes"` with `\n \r \t \b \a \\ \" \xHH` escapes; `'single quotes'`
/// with `\'`; a closing quote must be followed by white space or the end of the line. More than
/// `max_args` arguments is an error (found before the next one is collected).
fn split_args(line: &[u8], max_args: usize) -> Result<Command, RespError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        if args.len() == max_args {
            return Err(RespError::TooManyArguments {
                count: args.len() as u64 + 1,
                max: max_args,
            });
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let byte = line.get(i).copied();
            let next = line.get(i + 1).copied();
            if in_double {
                match (byte, next) {
                    (None, _) => return Err(RespError::UnbalancedQuotes),
                    (Some(b'\\'), Some(b'x')) => {
                        let high = line.get(i + 2).copied().and_then(hex_value);
                        let low = line.get(i + 3).copied().and_then(hex_value);
                        if let (Some(high), Some(low)) = (high, low) {
                            current.push(high * 16 + low);
                            i += 3;
                        } else {
                            current.push(b'x');
                            i += 1;
                        }
                    }
                    (Some(b'\\'), Some(escaped)) => {
                        current.push(match escaped {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 1;
                    }
                    (Some(b'"'), next) => {
                        if next.is_some_and(|b| !is_space(b)) {
                            return Err(RespError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    (Some(other), _) => current.push(other),
                }
            } else if in_single {
                match (byte, next) {
                    (None, _) => return Err(RespError::UnbalancedQuotes),
                    (Some(b'\\'), Some(b'\'')) => {
                        current.push(b'\'');
                        i += 1;
                    }
                    (Some(b'\''), next) => {
                        if next.is_some_and(|b| !is_space(b)) {
                            return Err(RespError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    (Some(other), _) => current.push(other),
                }
            } else {
                match byte {
                    None => break,
                    Some(b) if is_space(b) => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => current.push(other),
                }
            }
            i += 1;
        }
        args.push(current);
    }
}

/// Appends `args` encoded as a RESP array of bulk strings: the form clients send commands in.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        encode_bulk(arg.as_ref(), out);
    }
}

fn encode_bulk(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'$');
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+<text>`, as `+OK`. CR and LF in the text are sent as spaces.
    Simple(String),
    /// `-<text>`, the text starting with an error code, as `-ERR unknown command 'x'`. CR and LF
    /// in the text are sent as spaces.
    Error(String),
    /// `:<n>`.
    Integer(i64),
    /// `$<len>` and the bytes, or `$-1` (the null bulk string) for `None`.
    Bulk(Option<Vec<u8>>),
    /// `*<count>` and the elements, or `*-1` (the null array) for `None`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// `-ERR <message>`.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    /// A bulk string holding `bytes`.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(Some(bytes.into()))
    }

    /// An array of the given elements.
    pub fn array(elements: Vec<Reply>) -> Reply {
        Reply::Array(Some(elements))
    }

    /// Appends this reply's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(text) => encode_line(b'+', text, out),
            Reply::Error(text) => encode_line(b'-', text, out),
            Reply::Integer(n) => {
                out.push(b':');
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(bytes)) => encode_bulk(bytes, out),
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(elements)) => {
                out.push(b'*');
                out.extend_from_slice(elements.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                for element in elements {
                    element.encode(out);
                }
            }
        }
    }

    /// This reply's encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A simple string or error line: CR and LF, which would end the line early, become spaces.
fn encode_line(kind: u8, text: &str, out: &mut Vec<u8>) {
    out.push(kind);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
