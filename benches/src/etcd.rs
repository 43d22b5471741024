//! A 3-member etcd cluster on loopback, run as child processes, and a client that writes to it
//! through etcd's native gRPC API: a third system for the harness to compare with.
//!
//! The etcd is Debian's `etcd-server` package (3.4), started as shipped: the only flags given
//! are the ones a cluster needs to find itself (names, data directories, URLs, the initial
//! cluster), so its write-ahead log is fsynced before a write is acknowledged, as always.
//!
//! # Protocol: gRPC through `tonic`, with the messages declared by hand
//!
//! etcd's clients speak gRPC over HTTP/2. Three ways to do that from Rust were weighed:
//! - the `etcd-client` crate: generates its code from etcd's `.proto` files in a build script,
//!   which needs `protoc` installed on every machine that builds the workspace (CI included);
//! - etcd 3.4's gRPC-gateway (`POST /v3/kv/put`, JSON with base64 fields) over HTTP/1.1 with
//!   `hyper`: the fewest new crates (9), but the gateway decodes the JSON and re-issues each
//!   request to etcd's own gRPC server over an internal connection. On this 2-core machine that
//!   extra work inside etcd cost about a third of its throughput with 64 clients (3.5 k against
//!   5.4 k PUT/s) and a quarter of its single-client latency, which would make etcd look worse
//!   than it is;
//! - `tonic` (the client half only: no server, no router, no TLS) with `prost`, declaring the
//!   six small messages used here with `prost`'s derive: etcd's native protocol, as its own Go
//!   client uses it, with nothing run at build time. 27 new crates, nearly all of the
//!   hyper/tower/h2 family that tonic is built on.
//!
//! The last is used here. The field numbers below are those of etcd's `rpc.proto` and
//! `kv.proto`; protobuf skips the fields that a message here leaves out, so the subsets are
//! wire-compatible.
//!
//! # Connections
//!
//! [`EtcdClient::connect`] opens `connections` HTTP/2 connections, connection `i` to endpoint
//! `i % endpoints.len()`, and request lane `l` uses connection `l % connections`. With all of the
//! cluster's endpoints this spreads the load over the members round-robin, as etcd's own
//! `benchmark` tool does with its `--conns` connections (etcd 3.4's Go client also balances
//! requests round-robin over its endpoints); a follower forwards each write to the leader. To
//! send everything to the leader instead (the tool's `--target-leader`, which etcd's published
//! write figures use), pass only [`EtcdCluster::leader_client_endpoint`]. Each connection
//! multiplexes any number of concurrent requests, so a few connections serve many closed-loop
//! clients.
//!
//! The readiness probe and the leader lookup are plain blocking HTTP/1.0 requests to the
//! member's `/health` and gateway `/v3/maintenance/status` (a few per start, never on the
//! measured path), so [`EtcdCluster::start`] needs no async runtime and may also be called
//! from within one.

use http::uri::PathAndQuery;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::{Channel, Endpoint};

/// The Debian package that provides the `etcd` server binary.
pub const ETCD_PACKAGE: &str = "etcd-server";

/// Members in the cluster.
const MEMBERS: usize = 3;
/// Where the binary is looked for when it is not on `PATH`.
const FALLBACK_BINARY: &str = "/usr/bin/etcd";
/// How long a start may take before it is given up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Bound on one blocking probe (connect, write, read).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest probe answer read.
const PROBE_MAX_BYTES: u64 = 64 * 1024;
/// Bound on opening one gRPC connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one gRPC request (sent to etcd as the request's deadline too).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong starting, probing or using etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No `etcd` binary was found.
    #[error(
        "etcd is not installed: no `etcd` on PATH nor at {FALLBACK_BINARY}; install Debian's \
         `{ETCD_PACKAGE}` package (apt-get install {ETCD_PACKAGE})"
    )]
    NotInstalled,
    /// A file, directory, socket or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A member's data directory already holds data: etcd would restart from it (with its old
    /// ports and cluster) instead of forming a new cluster.
    #[error("etcd data directory {0} is not empty: start from an empty data root")]
    DataDirNotEmpty(PathBuf),
    /// A member exited while the cluster was starting.
    #[error("etcd member {member} exited during startup ({status}); its log: {log}")]
    MemberExited {
        /// The member's name.
        member: String,
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
    },
    /// The cluster did not answer with a leader in time.
    #[error(
        "the etcd cluster was not ready (every member healthy, with a leader) within {waited:?}; \
         last probe: {last}; logs in {logs}"
    )]
    NotReady {
        /// How long was waited.
        waited: Duration,
        /// The last probe's failure.
        last: String,
        /// The directory holding the members' logs.
        logs: PathBuf,
    },
    /// etcd answered something that could not be understood.
    #[error("unexpected answer from etcd: {0}")]
    BadResponse(String),
    /// [`EtcdClient::connect`] was given no endpoint.
    #[error("no etcd endpoint given")]
    NoEndpoints,
    /// [`EtcdClient::connect`] was asked for zero connections.
    #[error("at least one connection to etcd is needed")]
    NoConnections,
    /// A gRPC connection could not be opened or used.
    #[error("connection to etcd at {endpoint}: {source}")]
    Transport {
        /// The endpoint.
        endpoint: SocketAddr,
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// etcd refused or failed a request (including the request timing out).
    #[error("etcd request failed: {code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> EtcdError {
    let context = context.into();
    move |source| EtcdError::Io { context, source }
}

/// Finds the `etcd` binary: the first `etcd` file on `PATH`, else `/usr/bin/etcd`.
pub fn find_etcd() -> Result<PathBuf, EtcdError> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| is_executable(candidate))
    });
    match on_path {
        Some(binary) => Ok(binary),
        None if is_executable(Path::new(FALLBACK_BINARY)) => Ok(PathBuf::from(FALLBACK_BINARY)),
        None => Err(EtcdError::NotInstalled),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The installed etcd's version (`3.4.23`, from `etcd --version`).
pub fn etcd_version() -> Result<String, EtcdError> {
    let binary = find_etcd()?;
    let output = Command::new(&binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(io_error(format!("running {} --version", binary.display())))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("etcd Version:"))
        .map(|version| version.trim().to_string())
        .ok_or_else(|| EtcdError::BadResponse(format!("etcd --version printed {text:?}")))
}

/// One member process.
struct Member {
    name: String,
    client: SocketAddr,
    log: PathBuf,
    /// `None` once killed and reaped.
    child: Option<Child>,
}

/// A running 3-member etcd cluster on loopback. Its members are child processes of this one;
/// [`EtcdCluster::shutdown`], or dropping the cluster, kills and reaps them.
pub struct EtcdCluster {
    members: Vec<Member>,
    data_root: PathBuf,
}

impl EtcdCluster {
    /// Starts three members with their data directories (`etcd-0` … `etcd-2`) and logs
    /// (`etcd-0.log` …, stdout and stderr) in `data_root`, which is created if missing, and
    /// returns once every member reports itself healthy with a leader elected (at most 30 s).
    ///
    /// The ports are free loopback ports picked by the operating system; another process could
    /// take one in the moment between picking and etcd binding it, in which case that member
    /// exits and this returns [`EtcdError::MemberExited`].
    pub fn start(data_root: &Path) -> Result<EtcdCluster, EtcdError> {
        let binary = find_etcd()?;
        std::fs::create_dir_all(data_root)
            .map_err(io_error(format!("creating {}", data_root.display())))?;
        for i in 0..MEMBERS {
            let dir = data_root.join(format!("etcd-{i}"));
            let occupied = match std::fs::read_dir(&dir) {
                Ok(mut entries) => entries.next().is_some(),
                Err(error) if error.kind() == io::ErrorKind::NotFound => false,
                Err(error) => return Err(io_error(format!("reading {}", dir.display()))(error)),
            };
            if occupied {
                return Err(EtcdError::DataDirNotEmpty(dir));
            }
        }
        let ports = free_ports(2 * MEMBERS)?;
        let client_addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[2 * i]));
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster = (0..MEMBERS)
            .map(|i| format!("etcd-{i}={}", peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let token = format!("bench-{}-{nanos}", std::process::id());

        let mut cluster = EtcdCluster {
            members: Vec::with_capacity(MEMBERS),
            data_root: data_root.to_path_buf(),
        };
        for i in 0..MEMBERS {
            let name = format!("etcd-{i}");
            let log = data_root.join(format!("{name}.log"));
            let stdout =
                File::create(&log).map_err(io_error(format!("creating {}", log.display())))?;
            let stderr = stdout
                .try_clone()
                .map_err(io_error(format!("opening {}", log.display())))?;
            let client_url = format!("http://{}", client_addr(i));
            let child = Command::new(&binary)
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(data_root.join(&name))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .map_err(io_error(format!("starting {}", binary.display())))?;
            // Pushed at once, so that an error from here on kills it (through Drop).
            cluster.members.push(Member {
                name,
                client: client_addr(i),
                log,
                child: Some(child),
            });
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// Polls every member's `/health` (which in etcd 3.4 is true only when the member knows a
    /// leader and a quorum read through raft succeeds) until all are healthy.
    fn wait_ready(&mut self) -> Result<(), EtcdError> {
        let started = Instant::now();
        loop {
            for member in &mut self.members {
                if let Some(child) = member.child.as_mut()
                    && let Some(status) = child
                        .try_wait()
                        .map_err(io_error(format!("checking on {}", member.name)))?
                {
                    member.child = None;
                    return Err(EtcdError::MemberExited {
                        member: member.name.clone(),
                        status,
                        log: member.log.clone(),
                    });
                }
            }
            let unhealthy = self.members.iter().find_map(|member| {
                match http_call(member.client, "GET", "/health", "") {
                    Ok(body) if health_is_true(&body) => None,
                    Ok(body) => Some(format!("{}: {}", member.name, body.trim())),
                    Err(error) => Some(format!("{}: {error}", member.name)),
                }
            });
            let Some(last) = unhealthy else {
                return Ok(());
            };
            if started.elapsed() >= READY_TIMEOUT {
                return Err(EtcdError::NotReady {
                    waited: started.elapsed(),
                    last,
                    logs: self.data_root.clone(),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The members' client endpoints (`127.0.0.1:port`), member 0 first.
    pub fn client_endpoints(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|member| member.client).collect()
    }

    /// The client endpoint of the current leader, asked of the members (etcd's maintenance
    /// status, through its HTTP gateway). Blocking; a few milliseconds.
    pub fn leader_client_endpoint(&self) -> Result<SocketAddr, EtcdError> {
        let mut ids = Vec::with_capacity(self.members.len());
        let mut leader = None;
        for member in &self.members {
            let body = http_call(member.client, "POST", "/v3/maintenance/status", "{}")
                .map_err(|error| EtcdError::BadResponse(format!("{}: {error}", member.name)))?;
            let status: serde_json::Value = serde_json::from_str(&body)
                .map_err(|error| EtcdError::BadResponse(format!("{error}: {body}")))?;
            let field = |value: &serde_json::Value| value.as_str().map(str::to_string);
            let id = field(&status["header"]["member_id"])
                .ok_or_else(|| EtcdError::BadResponse(format!("no member_id in {body}")))?;
            ids.push((id, member.client));
            if leader.is_none() {
                leader = field(&status["leader"]).filter(|id| id != "0");
            }
        }
        let leader = leader.ok_or_else(|| EtcdError::BadResponse("no leader".to_string()))?;
        ids.into_iter()
            .find(|(id, _)| *id == leader)
            .map(|(_, endpoint)| endpoint)
            .ok_or_else(|| EtcdError::BadResponse(format!("leader {leader} is not a member")))
    }

    /// The members' process ids (of those still running).
    pub fn member_pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|member| member.child.as_ref().map(Child::id))
            .collect()
    }

    /// CPU time (user plus system) the members have used since they started, summed; `None`
    /// where `/proc` cannot be read.
    pub fn cpu_time(&self) -> Option<Duration> {
        crate::resources::sample_processes(&self.member_pids()).map(|r| r.cpu)
    }

    /// The members' resident memory now, summed, in bytes; `None` where `/proc` cannot be read.
    pub fn resident_bytes(&self) -> Option<u64> {
        crate::resources::sample_processes(&self.member_pids()).map(|r| r.rss_bytes)
    }

    /// Kills (SIGKILL) and reaps every member. Their data directories and logs stay in the data
    /// root.
    pub fn shutdown(mut self) {
        self.stop_members();
    }

    fn stop_members(&mut self) {
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut() {
                // Fails only if it already exited; the wait below reaps it either way.
                let _ = child.kill();
            }
        }
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.wait();
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop_members();
    }
}

/// `count` distinct free loopback TCP ports: all bound at once (so the system hands out
/// different ones), then released for etcd to bind.
fn free_ports(count: usize) -> Result<Vec<u16>, EtcdError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error("binding a loopback port"))?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error("reading a bound port"))
}

fn health_is_true(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .map(|value| value["health"] == "true")
        .unwrap_or(false)
}

/// One blocking HTTP/1.0 exchange with a member, bounded in time and size; the body of a 200
/// answer, or why there was none.
fn http_call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| format!("socket: {e}"))?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(PROBE_MAX_BYTES)
        .read_to_end(&mut answer)
        .map_err(|e| format!("receive: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed answer {answer:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{status}: {}", body.trim()));
    }
    Ok(body.to_string())
}

// The subsets of etcd's messages used here (etcdserverpb in rpc.proto, mvccpb in kv.proto).

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

/// `etcdserverpb.PutRequest` (without lease and the prev_kv/ignore flags: all left unset).
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `etcdserverpb.PutResponse` (without prev_kv, never asked for).
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

/// `etcdserverpb.RangeRequest` for one key (no range end, limit or revision; `serializable`
/// false, so the read is linearizable).
#[derive(Clone, PartialEq, prost::Message)]
struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bool, tag = "7")]
    serializable: bool,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    more: bool,
    #[prost(int64, tag = "4")]
    count: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(int64, tag = "2")]
    create_revision: i64,
    #[prost(int64, tag = "3")]
    mod_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
    #[prost(int64, tag = "6")]
    lease: i64,
}

const PUT_PATH: &str = "/etcdserverpb.KV/Put";
const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

/// One HTTP/2 connection to one member.
struct Connection {
    endpoint: SocketAddr,
    grpc: tonic::client::Grpc<Channel>,
}

/// A client of an etcd cluster over its gRPC API: a fixed set of HTTP/2 connections, each
/// carrying any number of concurrent requests. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct EtcdClient {
    connections: Arc<[Connection]>,
}

impl EtcdClient {
    /// Opens `connections` connections, connection `i` to `endpoints[i % endpoints.len()]`
    /// (see the [module documentation](self) for the choice of endpoints).
    pub async fn connect(
        endpoints: &[SocketAddr],
        connections: usize,
    ) -> Result<EtcdClient, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        if connections == 0 {
            return Err(EtcdError::NoConnections);
        }
        let mut opened = Vec::with_capacity(connections);
        for i in 0..connections {
            let endpoint = endpoints[i % endpoints.len()];
            let transport = |source| EtcdError::Transport { endpoint, source };
            let channel = Endpoint::from_shared(format!("http://{endpoint}"))
                .map_err(transport)?
                .tcp_nodelay(true)
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .connect()
                .await
                .map_err(transport)?;
            opened.push(Connection {
                endpoint,
                grpc: tonic::client::Grpc::new(channel),
            });
        }
        Ok(EtcdClient {
            connections: opened.into(),
        })
    }

    /// The endpoint of each connection, in order.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.connections.iter().map(|c| c.endpoint).collect()
    }

    /// Writes `value` at `key` on connection `lane % connections`. A PUT in etcd always goes
    /// through raft (forwarded to the leader, committed by a majority, fsynced), so it is
    /// linearizable; this returns once etcd acknowledged it.
    pub async fn put(&self, lane: usize, key: Vec<u8>, value: Vec<u8>) -> Result<(), EtcdError> {
        let _: PutResponse = self
            .unary(lane, PUT_PATH, PutRequest { key, value })
            .await?;
        Ok(())
    }

    /// Reads `key` on connection `lane % connections` with a linearizable read (etcd's default:
    /// the member confirms with the leader that it has applied everything committed before
    /// answering); `None` if the key is absent.
    pub async fn get(&self, lane: usize, key: Vec<u8>) -> Result<Option<Vec<u8>>, EtcdError> {
        let request = RangeRequest {
            key: key.clone(),
            serializable: false,
        };
        let response: RangeResponse = self.unary(lane, RANGE_PATH, request).await?;
        Ok(response
            .kvs
            .into_iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value))
    }

    async fn unary<Req, Resp>(
        &self,
        lane: usize,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, EtcdError>
    where
        Req: prost::Message + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        // Never empty: `connect` opens at least one connection.
        let connection = &self.connections[lane % self.connections.len()];
        let mut grpc = connection.grpc.clone();
        grpc.ready().await.map_err(|source| EtcdError::Transport {
            endpoint: connection.endpoint,
            source,
        })?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let response = grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map_err(|status| EtcdError::Rpc {
                code: status.code(),
                message: status.message().to_string(),
            })?;
        Ok(response.into_inner())
    }

    /// Drops this handle's connections; they close once every clone is gone.
    pub async fn shutdown(self) {
        drop(self);
    }
}
