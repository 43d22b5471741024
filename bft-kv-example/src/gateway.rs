//! The Redis-protocol gateway: a TCP server speaking RESP2 that turns Redis commands into store
//! operations on the cluster, so `redis-cli`, `redis-benchmark` and Redis client libraries can
//! use a bft-kv cluster.
//!
//! ```text
//! Redis client ──RESP2/TCP──► Gateway ──KvOp──► KvClient ──QUIC──► 3f+1 replicas
//! ```
//!
//! Commands: `GET`, `SET` (with `NX`, `XX`, `GET`, `KEEPTTL`; expiry options are refused by
//! name), `DEL`, `EXISTS`, `INCR`, `INCRBY`, `DECR`, `DECRBY`, `MGET`, `MSET`, and the
//! connection commands clients send on their own: `PING`, `ECHO`, `SELECT 0`, `QUIT`, `COMMAND`,
//! `CONFIG GET`, `CLIENT SETNAME | GETNAME | ID | SETINFO`, `HELLO` (RESP2 only), `AUTH`. Any
//! other command is answered `-ERR unknown command '<name>', ...`.
//!
//! Each connection is one task. Its commands run one at a time, in order, each waiting for the
//! cluster's agreed reply: a command sees the effects of every command sent before it on the
//! same connection, as in Redis. Pipelined commands are read and parsed ahead while one runs, up
//! to [`GatewayOptions::max_pipeline`] commands and [`GatewayOptions::max_pipeline_bytes`] bytes;
//! then the gateway stops reading that connection until the queue drains. Replies are written
//! in order, batched while more commands are queued. Different connections run concurrently, up
//! to the number of client identities the [`KvClient`] holds.
//!
//! Limits on what clients can make the gateway hold: connections
//! ([`GatewayOptions::max_connections`]; one more is answered `-ERR max number of clients
//! reached` and closed), the parser's buffer and command sizes ([`RespLimits`]), the pipeline
//! queue, and unflushed replies ([`GatewayOptions::flush_bytes`]; the gateway then waits for
//! the client to read). A protocol error is answered `-ERR Protocol error: ...` and the
//! connection closed. A client that neither reads its replies nor stops sending eventually
//! blocks its own connection (as with any server with bounded buffers), never the others.
//!
//! Errors: the store's refusals are worded as Redis words them (`-ERR value is not an integer or
//! out of range`); an unreachable cluster (no agreed reply within the client's deadline) is
//! `-ERR cluster unavailable: ...`.

mod commands;

use crate::client::{KvClient, KvClientError};
use crate::ops::{KvOp, KvReply};
use crate::resp::{Command, Reply, RespError, RespLimits, RespParser};
use commands::{Action, Session};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use commands::SUPPORTED as SUPPORTED_COMMANDS;

/// Bytes read from a connection at once (fewer when the parser has less room).
const READ_CHUNK: usize = 16 << 10;
/// How long the accept loop pauses after a failed accept (out of file descriptors, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// What a connection over [`GatewayOptions::max_connections`] is told before it is closed.
const TOO_MANY_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";

/// Where the gateway sends operations: a [`KvClient`] in production, anything that answers like
/// the store in tests.
pub trait KvBackend: Send + Sync + 'static {
    /// Runs `op` and returns the cluster's agreed reply.
    fn call(&self, op: KvOp) -> impl Future<Output = Result<KvReply, KvClientError>> + Send;
}

impl KvBackend for KvClient {
    fn call(&self, op: KvOp) -> impl Future<Output = Result<KvReply, KvClientError>> + Send {
        KvClient::call(self, op)
    }
}

/// Tuning and limits of a [`Gateway`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOptions {
    /// Most connections served at once; further ones are refused with an error.
    pub max_connections: usize,
    /// Most commands of one connection parsed and waiting while one runs.
    pub max_pipeline: usize,
    /// Most argument bytes of one connection's waiting commands (a larger single command waits
    /// alone).
    pub max_pipeline_bytes: usize,
    /// Replies are written once this many bytes are pending (or when no command is waiting).
    pub flush_bytes: usize,
    /// After shutdown is signalled, how long connections may take to answer the commands they
    /// already read before they are cut.
    pub shutdown_grace: Duration,
    /// The RESP parser's limits, per connection.
    pub resp: RespLimits,
}

impl Default for GatewayOptions {
    /// 1024 connections; 64 commands or 512 KiB queued per connection; 64 KiB of replies
    /// batched; 5 s of grace at shutdown; [`RespLimits::default`].
    fn default() -> Self {
        GatewayOptions {
            max_connections: 1024,
            max_pipeline: 64,
            max_pipeline_bytes: 512 << 10,
            flush_bytes: 64 << 10,
            shutdown_grace: Duration::from_secs(5),
            resp: RespLimits::default(),
        }
    }
}

impl GatewayOptions {
    /// Checks the options: every limit positive, `max_pipeline_bytes` within `u32`, and the
    /// RESP limits consistent.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let positive = [
            ("max_connections", self.max_connections),
            ("max_pipeline", self.max_pipeline),
            ("max_pipeline_bytes", self.max_pipeline_bytes),
            ("flush_bytes", self.flush_bytes),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(GatewayError::Options {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if u32::try_from(self.max_pipeline_bytes).is_err() {
            return Err(GatewayError::Options {
                field: "max_pipeline_bytes",
                reason: format!("must be at most {}", u32::MAX),
            });
        }
        self.resp.validate().map_err(|e| GatewayError::Options {
            field: e.field,
            reason: e.reason,
        })
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// An option is unusable.
    #[error("invalid gateway option `{field}`: {reason}")]
    Options {
        /// The option.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// A bound gateway, ready to [`serve`](Gateway::serve).
pub struct Gateway<B> {
    listener: TcpListener,
    local_addr: SocketAddr,
    backend: Arc<B>,
    options: Arc<GatewayOptions>,
}

impl<B: KvBackend> Gateway<B> {
    /// Validates `options` and listens on `listen` (port 0: any free port, see
    /// [`local_addr`](Gateway::local_addr)). Operations go to `backend`.
    pub async fn bind(
        listen: SocketAddr,
        backend: B,
        options: GatewayOptions,
    ) -> Result<Gateway<B>, GatewayError> {
        options.validate()?;
        let bind_error = |source| GatewayError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Gateway {
            listener,
            local_addr,
            backend: Arc::new(backend),
            options: Arc::new(options),
        })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves connections until `shutdown` completes. Then it stops accepting and reading, lets
    /// connections answer the commands they already read (for at most
    /// [`GatewayOptions::shutdown_grace`]), closes them, and returns once every connection task
    /// has ended.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Gateway {
            listener,
            local_addr,
            backend,
            options,
        } = self;
        let (stop, stopped) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut next_id: u64 = 0;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(ended) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(error) = ended {
                        warn!(%error, "a gateway connection task failed");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if connections.len() >= options.max_connections {
                            debug!(%peer, "refused: max number of clients reached");
                            // Best effort, never waiting: the socket is fresh, the line short.
                            let _ = stream.try_write(TOO_MANY_CLIENTS);
                            continue;
                        }
                        next_id += 1;
                        connections.spawn(connection(
                            stream,
                            peer,
                            next_id,
                            backend.clone(),
                            options.clone(),
                            stopped.clone(),
                        ));
                    }
                    Err(error) => {
                        warn!(%error, "gateway accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        let _ = stop.send(true);
        let drained = tokio::time::timeout(options.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            debug!(
                remaining = connections.len(),
                "cutting connections still busy after the grace period"
            );
            connections.shutdown().await;
        }
        info!(%local_addr, "gateway stopped");
    }
}

/// Serves `client` as a Redis-protocol gateway on `listen` until `shutdown` completes, then
/// shuts the client down. What `bft-kv gateway` runs.
pub async fn run(
    listen: SocketAddr,
    client: KvClient,
    options: GatewayOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let gateway = Gateway::bind(listen, client.clone(), options).await?;
    info!(addr = %gateway.local_addr(), "Redis-protocol gateway listening");
    gateway.serve(shutdown).await;
    client.shutdown().await;
    Ok(())
}

/// What the reading half hands the answering half.
enum Item {
    /// A command, with the share of the pipeline byte budget it holds until it is answered.
    Command(Command, OwnedSemaphorePermit),
    /// The input broke the protocol or a limit: answer this and close.
    Failed(RespError),
}

/// One connection: reads and parses commands ahead (bounded) while answering them in order.
async fn connection<B: KvBackend>(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    backend: Arc<B>,
    options: Arc<GatewayOptions>,
    stopped: watch::Receiver<bool>,
) {
    debug!(%peer, id, "connection opened");
    // Replies are batched by the gateway itself; do not let Nagle delay the last one.
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let (queue, queued) = mpsc::channel(options.max_pipeline);
    let reading = read_commands(reader, queue, &options, stopped);
    let session = Session { id, name: None };
    let answering = answer_commands(writer, queued, &*backend, session, options.flush_bytes);
    tokio::pin!(reading, answering);
    let mut reading_done = false;
    // Reading ends at end of input, an error or shutdown; answering then drains the queue.
    // Answering ends on QUIT, a protocol error or a broken connection; reading is then dropped.
    let result = loop {
        tokio::select! {
            result = &mut answering => break result,
            () = &mut reading, if !reading_done => reading_done = true,
        }
    };
    match result {
        Ok(()) => debug!(%peer, id, "connection closed"),
        Err(error) => debug!(%peer, id, %error, "connection ended"),
    }
}

/// Reads, parses and queues commands until end of input, a protocol error (queued as
/// [`Item::Failed`]), a read error, shutdown, or the answering half going away.
async fn read_commands(
    mut reader: OwnedReadHalf,
    queue: mpsc::Sender<Item>,
    options: &GatewayOptions,
    mut stopped: watch::Receiver<bool>,
) {
    let budget = Arc::new(Semaphore::new(options.max_pipeline_bytes));
    let max_cost = u32::try_from(options.max_pipeline_bytes).unwrap_or(u32::MAX);
    let mut parser = RespParser::new(options.resp);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        loop {
            let item = match parser.next_command() {
                Ok(Some(command)) => {
                    let bytes: usize = command.iter().map(|arg| arg.len() + 1).sum();
                    let cost = u32::try_from(bytes).unwrap_or(u32::MAX).min(max_cost);
                    let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
                        return;
                    };
                    Item::Command(command, permit)
                }
                Ok(None) => break,
                Err(error) => Item::Failed(error),
            };
            let failed = matches!(item, Item::Failed(_));
            if queue.send(item).await.is_err() || failed {
                return;
            }
        }
        let room = parser.room().min(chunk.len());
        let read = tokio::select! {
            biased;
            _ = stopped.wait_for(|stop| *stop) => return,
            read = reader.read(&mut chunk[..room]) => read,
        };
        match read {
            Ok(0) => return,
            Ok(n) => {
                if let Err(error) = parser.feed(&chunk[..n]) {
                    let _ = queue.send(Item::Failed(error)).await;
                    return;
                }
            }
            Err(error) => {
                debug!(%error, "read failed");
                return;
            }
        }
    }
}

/// Answers queued commands in order until the queue ends, `QUIT`, a protocol error, or a write
/// failure. Replies are batched while more commands are queued, up to `flush_bytes`.
async fn answer_commands<B: KvBackend>(
    mut writer: OwnedWriteHalf,
    mut queued: mpsc::Receiver<Item>,
    backend: &B,
    mut session: Session,
    flush_bytes: usize,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    while let Some(item) = queued.recv().await {
        let close = match item {
            Item::Command(command, permit) => {
                let action = commands::plan(&mut session, command);
                let quit = matches!(action, Action::Quit);
                let reply = commands::execute(backend, action).await;
                drop(permit);
                reply.encode(&mut out);
                quit
            }
            Item::Failed(error) => {
                debug!(%error, "protocol error");
                Reply::err(error).encode(&mut out);
                true
            }
        };
        if close || out.len() >= flush_bytes || queued.is_empty() {
            writer.write_all(&out).await?;
            out.clear();
            out.shrink_to(flush_bytes);
        }
        if close {
            break;
        }
    }
    if !out.is_empty() {
        writer.write_all(&out).await?;
    }
    writer.shutdown().await
}

#[cfg(test)]
mod tests;
