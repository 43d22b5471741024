//! The Redis-protocol gateway in front of a real 4-replica cluster (QUIC on loopback, in this
//! process), driven by a real Redis client library (`redis` crate) and, when it is installed, by
//! `redis-cli`.

use bft_core::testkit::{client_key, config, replica_key};
use bft_core::{ClientId, MemoryStorage, Replica, ReplicaId, Verifier};
use bft_kv_example::client::KvClient;
use bft_kv_example::gateway::{Gateway, GatewayOptions};
use bft_kv_example::service::{KvLimits, KvService};
use bft_net::{
    AsyncClient, ClientOptions, ReplicaHandle, Transport, TransportOptions, spawn_replica,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A bound for everything waited on (never a sleep).
const PATIENCE: Duration = Duration::from_secs(60);
/// Client identities the gateway's client holds (connections served concurrently).
const CLIENTS: u64 = 4;

/// Logs to the test's output when `RUST_LOG` is set (for example `RUST_LOG=bft_kv_example=debug`).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Four replicas running the store, a client with [`CLIENTS`] identities, and a gateway on a
/// loopback port.
struct Setup {
    replicas: Vec<ReplicaHandle>,
    client: KvClient,
    gateway: SocketAddr,
    stop_gateway: oneshot::Sender<()>,
    gateway_task: JoinHandle<()>,
}

impl Setup {
    async fn start() -> Setup {
        init_logs();
        let config = Arc::new(config(1, CLIENTS));
        let sockets: Vec<UdpSocket> = (0..config.n())
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind loopback"))
            .collect();
        let addresses: Vec<SocketAddr> = sockets
            .iter()
            .map(|s| s.local_addr().expect("bound"))
            .collect();
        let mut replicas = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let id = ReplicaId(i as u32);
            let (transport, inbound) = Transport::replica_on_socket(
                config.clone(),
                id,
                replica_key(id.0),
                socket,
                addresses.clone(),
                TransportOptions::default(),
            )
            .expect("transport starts");
            let service = KvService::new(KvLimits::default());
            let replica = Replica::new(config.clone(), id, replica_key(id.0), service)
                .expect("valid replica");
            let verifier = Verifier::new(config.clone()).expect("valid config");
            replicas.push(spawn_replica(
                replica,
                MemoryStorage::default(),
                transport,
                inbound,
                verifier,
            ));
        }
        let identities = (1..=CLIENTS)
            .map(|i| (ClientId(i), client_key(i)))
            .collect();
        let deadline = Duration::from_secs(30);
        let options = ClientOptions {
            deadline,
            ..ClientOptions::default()
        };
        let client =
            AsyncClient::connect(config, identities, addresses, options).expect("client connects");
        let client = KvClient::from_async_client(client, deadline);
        let gateway = Gateway::bind(
            ([127, 0, 0, 1], 0).into(),
            client.clone(),
            GatewayOptions::default(),
        )
        .await
        .expect("gateway binds");
        let addr = gateway.local_addr();
        let (stop_gateway, stopped) = oneshot::channel::<()>();
        let gateway_task = tokio::spawn(gateway.serve(async {
            let _ = stopped.await;
        }));
        Setup {
            replicas,
            client,
            gateway: addr,
            stop_gateway,
            gateway_task,
        }
    }

    /// Stops the gateway, the client and every replica, and waits for all of them.
    async fn stop(self) {
        let _ = self.stop_gateway.send(());
        tokio::time::timeout(PATIENCE, self.gateway_task)
            .await
            .expect("the gateway stops")
            .expect("the gateway task ends cleanly");
        self.client.shutdown().await;
        for replica in self.replicas {
            replica.shutdown().await.expect("replica stops cleanly");
        }
    }
}

/// Runs blocking client code (the sync `redis` API, `redis-cli`) off the runtime's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(work))
        .await
        .expect("the client finishes")
        .expect("the client code does not panic")
}

fn connect(addr: SocketAddr) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("valid URL");
    let connection = client
        .get_connection_with_timeout(PATIENCE)
        .expect("connects to the gateway");
    connection
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    connection
}

fn error_text(error: &redis::RedisError) -> String {
    format!(
        "{} {}",
        error.code().unwrap_or(""),
        error.detail().unwrap_or("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_client_library_works_through_the_gateway() {
    let setup = Setup::start().await;
    let addr = setup.gateway;
    blocking(move || {
        let mut con = connect(addr);
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        let echo: String = redis::cmd("PING").arg("hi").query(&mut con).unwrap();
        assert_eq!(echo, "hi");

        // SET / GET, binary-safe.
        let value: &[u8] = b"v\r\n\x00\xff";
        let ok: String = redis::cmd("SET")
            .arg("k")
            .arg(value)
            .query(&mut con)
            .unwrap();
        assert_eq!(ok, "OK");
        let got: Vec<u8> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
        assert_eq!(got, value);
        let missing: Option<String> = redis::cmd("GET").arg("nope").query(&mut con).unwrap();
        assert_eq!(missing, None);

        // EXISTS / DEL.
        let n: i64 = redis::cmd("EXISTS")
            .arg("k")
            .arg("nope")
            .query(&mut con)
            .unwrap();
        assert_eq!(n, 1);
        let n: i64 = redis::cmd("DEL")
            .arg("k")
            .arg("nope")
            .query(&mut con)
            .unwrap();
        assert_eq!(n, 1);
        let n: i64 = redis::cmd("EXISTS").arg("k").query(&mut con).unwrap();
        assert_eq!(n, 0);

        // INCR and friends, and the non-integer error.
        let n: i64 = redis::cmd("INCR").arg("n").query(&mut con).unwrap();
        assert_eq!(n, 1);
        let n: i64 = redis::cmd("INCRBY")
            .arg("n")
            .arg(41)
            .query(&mut con)
            .unwrap();
        assert_eq!(n, 42);
        let n: i64 = redis::cmd("DECRBY")
            .arg("n")
            .arg(2)
            .query(&mut con)
            .unwrap();
        assert_eq!(n, 40);
        let n: i64 = redis::cmd("DECR").arg("n").query(&mut con).unwrap();
        assert_eq!(n, 39);
        let _: () = redis::cmd("SET")
            .arg("s")
            .arg("abc")
            .query(&mut con)
            .unwrap();
        let error = redis::cmd("INCR")
            .arg("s")
            .query::<i64>(&mut con)
            .unwrap_err();
        assert_eq!(
            error_text(&error),
            "ERR value is not an integer or out of range"
        );

        // MSET / MGET.
        let _: () = redis::cmd("MSET")
            .arg("a")
            .arg("1")
            .arg("b")
            .arg("2")
            .query(&mut con)
            .unwrap();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg("a")
            .arg("nope")
            .arg("b")
            .query(&mut con)
            .unwrap();
        assert_eq!(values, vec![Some("1".into()), None, Some("2".into())]);

        // SET NX / XX through compare-and-set.
        let set: Option<String> = redis::cmd("SET")
            .arg("a")
            .arg("x")
            .arg("NX")
            .query(&mut con)
            .unwrap();
        assert_eq!(set, None);
        let set: Option<String> = redis::cmd("SET")
            .arg("a")
            .arg("x")
            .arg("XX")
            .query(&mut con)
            .unwrap();
        assert_eq!(set.as_deref(), Some("OK"));

        // An unknown command is named in the error, and the connection stays usable.
        let error = redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap_err();
        assert!(
            error_text(&error).contains("unknown command 'FLUSHALL'"),
            "{error}"
        );
        let error = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .arg("EX")
            .arg(10)
            .query::<()>(&mut con)
            .unwrap_err();
        assert!(
            error_text(&error).contains("SET option 'EX' is not supported"),
            "{error}"
        );

        // Pipelining: sent at once, answered in order.
        let (set, incr, incr_again, get, values): (String, i64, i64, String, Vec<Option<String>>) =
            redis::pipe()
                .cmd("SET")
                .arg("p")
                .arg("10")
                .cmd("INCR")
                .arg("p")
                .cmd("INCRBY")
                .arg("p")
                .arg(5)
                .cmd("GET")
                .arg("p")
                .cmd("MGET")
                .arg("p")
                .arg("a")
                .query(&mut con)
                .unwrap();
        assert_eq!(
            (set, incr, incr_again, get, values),
            (
                "OK".into(),
                11,
                16,
                "16".into(),
                vec![Some("16".into()), Some("x".into())]
            )
        );
        let mut pipe = redis::pipe();
        for _ in 0..100 {
            pipe.cmd("INCR").arg("counter");
        }
        let counts: Vec<i64> = pipe.query(&mut con).unwrap();
        assert_eq!(counts, (1..=100).collect::<Vec<i64>>());

        // A second connection sees the first one's writes.
        let mut other = connect(addr);
        let got: String = redis::cmd("GET").arg("p").query(&mut other).unwrap();
        assert_eq!(got, "16");
    })
    .await;
    setup.stop().await;
}

/// `redis-cli`, if installed (Debian: `redis-tools`), against the gateway: commands as
/// arguments and as lines on its standard input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_works_through_the_gateway_when_installed() {
    let available = std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !available {
        println!("note: redis-cli is not on PATH; skipping (Debian: apt-get install redis-tools)");
        return;
    }
    let setup = Setup::start().await;
    let addr = setup.gateway;
    blocking(move || {
        let cli = |args: &[&str], input: Option<&str>| -> String {
            use std::io::Write;
            use std::process::{Command, Stdio};
            let mut child = Command::new("redis-cli")
                .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("redis-cli starts");
            let mut stdin = child.stdin.take().expect("piped");
            if let Some(input) = input {
                stdin.write_all(input.as_bytes()).expect("writes");
            }
            drop(stdin);
            let out = child.wait_with_output().expect("redis-cli ends");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        assert_eq!(cli(&["PING"], None), "PONG\n");
        assert_eq!(cli(&["SET", "cli", "hello world"], None), "OK\n");
        assert_eq!(cli(&["GET", "cli"], None), "hello world\n");
        assert_eq!(cli(&["INCR", "cli-n"], None), "1\n");
        assert!(
            cli(&["INCR", "cli"], None).contains("value is not an integer or out of range"),
            "the error is shown"
        );
        assert!(cli(&["NOSUCH", "x"], None).contains("unknown command 'NOSUCH'"));
        // Lines on standard input run in order on one connection.
        assert_eq!(
            cli(
                &[],
                Some("SET a 1\nINCR a\nINCRBY a 5\nGET a\nMGET a nope\nDEL a\n")
            ),
            "OK\n2\n7\n7\n7\n\n1\n"
        );
    })
    .await;
    setup.stop().await;
}
