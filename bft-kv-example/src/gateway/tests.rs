//! Tests of the gateway server over real loopback TCP, with the store called in-process as the
//! backend (the integration test `tests/gateway.rs` runs it against a real cluster).

use super::*;
use crate::service::KvService;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// A backend that applies operations to an in-process store; `down` makes every call fail as an
/// unreachable cluster does. It records every operation it is given.
#[derive(Default)]
pub(super) struct Store {
    pub(super) service: Mutex<KvService>,
    pub(super) down: bool,
    pub(super) calls: Mutex<Vec<KvOp>>,
}

impl KvBackend for Store {
    async fn call(&self, op: KvOp) -> Result<KvReply, KvClientError> {
        self.calls.lock().expect("not poisoned").push(op.clone());
        if self.down {
            return Err(KvClientError::Unreachable {
                deadline: Duration::from_secs(1),
            });
        }
        Ok(self.service.lock().expect("not poisoned").apply(op))
    }
}

/// A bound for everything waited on (never a sleep).
const PATIENCE: Duration = Duration::from_secs(30);

/// A gateway serving a [`Store`] on a loopback port, stopped by [`Running::stop`].
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(options: GatewayOptions) -> Running {
        let gateway = Gateway::bind(([127, 0, 0, 1], 0).into(), Store::default(), options)
            .await
            .expect("binds");
        let addr = gateway.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(async {
            let _ = stopped.await;
        }));
        Running { addr, stop, task }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connects")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the gateway stops")
            .expect("the gateway task ends cleanly");
    }
}

/// Everything the server sends until it closes the connection.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .expect("reads");
    out
}

/// Exactly `expected.len()` bytes, compared with `expected`.
async fn expect_bytes(stream: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut got))
        .await
        .expect("the reply arrives")
        .expect("reads");
    assert_eq!(
        got.escape_ascii().to_string(),
        expected.escape_ascii().to_string()
    );
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let gateway = Running::start(GatewayOptions::default()).await;
    let mut stream = gateway.connect().await;
    let mut input = Vec::new();
    crate::resp::encode_command(&["SET", "k", "1"], &mut input);
    crate::resp::encode_command(&["INCR", "k"], &mut input);
    input.extend_from_slice(b"GET k\r\nPING\r\nNOPE a\r\n");
    crate::resp::encode_command(&["INCRBY", "k", "10"], &mut input);
    input.extend_from_slice(b"QUIT\r\nPING\r\n");
    stream.write_all(&input).await.unwrap();
    let replies = read_to_end(&mut stream).await;
    assert_eq!(
        replies.escape_ascii().to_string(),
        b"+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n\
          -ERR unknown command 'NOPE', with args beginning with: 'a' \r\n:12\r\n+OK\r\n"
            .escape_ascii()
            .to_string(),
        "everything after QUIT is ignored"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_long_pipeline_through_a_small_queue_keeps_its_order() {
    let options = GatewayOptions {
        max_pipeline: 2,
        max_pipeline_bytes: 64,
        flush_bytes: 16,
        ..GatewayOptions::default()
    };
    let gateway = Running::start(options).await;
    let mut stream = gateway.connect().await;
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for i in 1..=2000 {
        crate::resp::encode_command(&["INCR", "n"], &mut input);
        Reply::Integer(i).encode(&mut expected);
    }
    input.extend_from_slice(b"QUIT\r\n");
    Reply::ok().encode(&mut expected);
    let (mut reader, mut writer) = stream.split();
    let (written, replies) = tokio::join!(writer.write_all(&input), async {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.map(|_| out)
    });
    written.unwrap();
    assert!(replies.unwrap() == expected, "2000 replies in order");
    gateway.stop().await;
}

#[tokio::test]
async fn protocol_errors_are_answered_then_the_connection_closes() {
    let options = GatewayOptions {
        resp: RespLimits {
            max_bulk_len: 8,
            ..RespLimits::default()
        },
        ..GatewayOptions::default()
    };
    let gateway = Running::start(options).await;
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"PING\r\n*1\r\n:1\r\nPING\r\n",
            b"+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*x\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$9\r\n",
            b"-ERR Protocol error: bulk string of 9 bytes, at most 8 accepted\r\n",
        ),
        (
            b"SET k \"unbalanced\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, expected) in cases {
        let mut stream = gateway.connect().await;
        stream.write_all(input).await.unwrap();
        let replies = read_to_end(&mut stream).await;
        assert_eq!(
            replies.escape_ascii().to_string(),
            expected.escape_ascii().to_string()
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let options = GatewayOptions {
        max_connections: 1,
        ..GatewayOptions::default()
    };
    let gateway = Running::start(options).await;
    let mut first = gateway.connect().await;
    first.write_all(b"PING\r\n").await.unwrap();
    expect_bytes(&mut first, b"+PONG\r\n").await;
    let mut second = gateway.connect().await;
    assert_eq!(read_to_end(&mut second).await, TOO_MANY_CLIENTS);
    // Once the first leaves, a new connection is served.
    first.write_all(b"QUIT\r\n").await.unwrap();
    assert_eq!(read_to_end(&mut first).await, b"+OK\r\n");
    drop(first);
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut third = gateway.connect().await;
            third.write_all(b"PING\r\n").await.unwrap();
            let mut reply = [0u8; 7];
            if third.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n" {
                return;
            }
        }
    })
    .await;
    assert!(served.is_ok(), "a connection is served again");
    gateway.stop().await;
}

#[tokio::test]
async fn end_of_input_still_gets_its_replies() {
    let gateway = Running::start(GatewayOptions::default()).await;
    let mut stream = gateway.connect().await;
    stream.write_all(b"SET a b\r\nGET a\r\n").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut stream).await, b"+OK\r\n$1\r\nb\r\n");
    gateway.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_serving() {
    let gateway = Running::start(GatewayOptions::default()).await;
    let addr = gateway.addr;
    let mut idle = gateway.connect().await;
    idle.write_all(b"PING\r\n").await.unwrap();
    expect_bytes(&mut idle, b"+PONG\r\n").await;
    gateway.stop().await;
    assert_eq!(read_to_end(&mut idle).await, b"", "closed without a word");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported_per_command() {
    let store = Store {
        down: true,
        ..Store::default()
    };
    let gateway = Gateway::bind(([127, 0, 0, 1], 0).into(), store, GatewayOptions::default())
        .await
        .unwrap();
    let addr = gateway.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway.serve(async {
        let _ = stopped.await;
    }));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET k\r\nPING\r\nQUIT\r\n")
        .await
        .unwrap();
    let replies = String::from_utf8(read_to_end(&mut stream).await).unwrap();
    assert!(
        replies.starts_with("-ERR cluster unavailable: no agreed reply from the cluster within"),
        "{replies}"
    );
    assert!(replies.ends_with("\r\n+PONG\r\n+OK\r\n"), "{replies}");
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn invalid_options_are_refused_by_name() {
    for (options, field) in [
        (
            GatewayOptions {
                max_connections: 0,
                ..GatewayOptions::default()
            },
            "max_connections",
        ),
        (
            GatewayOptions {
                max_pipeline_bytes: usize::MAX,
                ..GatewayOptions::default()
            },
            "max_pipeline_bytes",
        ),
        (
            GatewayOptions {
                resp: RespLimits {
                    max_buffered: 10,
                    ..RespLimits::default()
                },
                ..GatewayOptions::default()
            },
            "max_buffered",
        ),
    ] {
        let result = Gateway::bind(([127, 0, 0, 1], 0).into(), Store::default(), options).await;
        match result {
            Err(GatewayError::Options { field: got, .. }) => assert_eq!(got, field),
            Err(other) => panic!("expected an option error, got {other}"),
            Ok(_) => panic!("expected {field} to be refused"),
        }
    }
}
