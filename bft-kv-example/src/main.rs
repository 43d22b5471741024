//! `bft-kv`: keygen, replica, client operations and an in-process demo for the replicated
//! key-value store.
#![forbid(unsafe_code)]

use bft_kv_example::client::{KvClient, KvClientError};
use bft_kv_example::demo::{self, DemoOptions};
use bft_kv_example::display::render;
use bft_kv_example::keygen::{KeygenOptions, keygen};
use bft_kv_example::ops::KvOp;
use bft_kv_example::replica::{self, ReplicaOptions, ReplicaStorage};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A Byzantine fault-tolerant replicated key-value store (PBFT).
///
/// Quick start: `bft-kv demo`. A real cluster: `bft-kv keygen --out cluster`, then
/// `bft-kv replica --config cluster/cluster.toml --id N` for each replica, then
/// `bft-kv set KEY VALUE --config cluster/cluster.toml --key cluster/client-1.key`.
#[derive(Parser)]
#[command(name = "bft-kv", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a cluster: a configuration file and one key file per replica and client.
    Keygen(KeygenArgs),
    /// Run one replica until SIGINT or SIGTERM.
    Replica(ReplicaArgs),
    /// Read a key (prints its value, or `(nil)`).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove keys (prints how many existed).
    Del {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Count the keys that exist.
    Exists {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add to an integer value (a missing key counts as 0; prints the new value).
    Incr {
        /// The key.
        key: String,
        /// The amount to add (may be negative).
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Compare-and-set: replace the value only if it is the expected one.
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold.
        #[arg(long, conflicts_with = "absent", required_unless_present = "absent")]
        expected: Option<String>,
        /// Require the key to be absent instead.
        #[arg(long)]
        absent: bool,
        /// The new value.
        #[arg(long, conflicts_with = "delete", required_unless_present = "delete")]
        new: Option<String>,
        /// Delete the key instead of writing a new value.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys in `[start, end)` in order, as `key<TAB>value` lines (bounded by the
    /// configuration's scan limits: continue after the last key printed).
    Scan {
        /// First key (inclusive).
        #[arg(long, default_value = "")]
        start: String,
        /// End key (exclusive); default: to the last key.
        #[arg(long)]
        end: Option<String>,
        /// Most entries to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    // ---- gateway (owned by the gateway work: bft_kv_example::gateway) ----
    /// Serve Redis clients (RESP2 over TCP) on a cluster until SIGINT or SIGTERM.
    Gateway {
        /// The cluster configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Admitted client key files (repeat the option: --key client-1.key --key client-2.key);
        /// a session per client id each is admitted as (one, unless the configuration gives a
        /// key several ids), so that many commands run at once.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// The TCP address to serve Redis clients on.
        #[arg(long, default_value = "127.0.0.1:6379")]
        listen: SocketAddr,
        /// How long to wait for the cluster's agreed reply to each command.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Most Redis connections served at once; more are refused with an error.
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// Most commands one connection may send ahead (pipelined) of the one running.
        #[arg(long, default_value_t = 64)]
        max_pipeline: usize,
    },
    // ---- end gateway ----
    /// Run a 4-replica cluster in this process through a backup and a primary failure.
    Demo {
        /// Operations in total.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
        clients: u64,
        /// Draw no progress bar.
        #[arg(long)]
        no_progress: bool,
    },
}

#[derive(Args)]
struct KeygenArgs {
    /// Replicas: 3f+1 (4, 7, 10, ...).
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Client keys (key files client-1.key, client-2.key, ...).
    #[arg(long, default_value_t = 1)]
    clients: u64,
    /// Client ids admitted with each client key: sessions of one client, so that many
    /// operations run at once over one connection per replica (key files are then named after
    /// each key's first id: client-1.key, client-<1+N>.key, ...).
    #[arg(long, default_value_t = 1)]
    sessions_per_client: u64,
    /// Directory to write cluster.toml and the key files into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Address every replica listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Replica N listens on base-port + N.
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// One port per replica (comma-separated), instead of --base-port.
    #[arg(long, value_delimiter = ',', conflicts_with = "base_port")]
    ports: Option<Vec<u16>>,
    /// How long a backup waits for a request to execute before it starts a view change, in
    /// milliseconds (default 1000).
    #[arg(long)]
    view_change_ms: Option<u64>,
    /// How long a client waits before retransmitting to every replica, in milliseconds
    /// (default 500).
    #[arg(long)]
    client_retransmit_ms: Option<u64>,
}

#[derive(Args)]
struct ReplicaArgs {
    /// The cluster configuration file.
    #[arg(long)]
    config: PathBuf,
    /// This replica's id (0 to n-1).
    #[arg(long)]
    id: u32,
    /// The key file (default: `replica-<id>.key` next to the configuration).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Keep the replica's status (view, last executed, ...) in this file, as TOML, rewritten
    /// every 200 ms; removed on a clean stop.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Where the replica keeps its log and checkpoints (default: `replica-<id>.data` next to the
    /// configuration). A restarted replica recovers from it.
    #[arg(long, conflicts_with = "in_memory")]
    data_dir: Option<PathBuf>,
    /// Keep nothing on disk: a restart starts empty and catches up from the other replicas
    /// (counts against f while it does). For tests and experiments.
    #[arg(long)]
    in_memory: bool,
}

#[derive(Args)]
struct ClientArgs {
    /// The cluster configuration file.
    #[arg(long)]
    config: PathBuf,
    /// This client's key file (an admitted client's, e.g. client-1.key).
    #[arg(long = "key", value_name = "KEY_FILE")]
    key_file: PathBuf,
    /// How long to wait for the cluster's agreed reply: seconds, or with a unit (500ms, 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 10s or 500ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        other => return Err(format!("unknown unit `{other}` (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Replica(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    let (op, client) = match command {
        Command::Keygen(args) => return run_keygen(args),
        Command::Replica(args) => {
            let options = ReplicaOptions {
                config: args.config,
                id: args.id,
                key: args.key,
                status_file: args.status_file,
                storage: if args.in_memory {
                    ReplicaStorage::Memory
                } else {
                    ReplicaStorage::Disk(args.data_dir)
                },
            };
            return replica::run(options).await.map_err(|e| e.to_string());
        }
        Command::Demo {
            requests,
            clients,
            no_progress,
        } => {
            let options = DemoOptions {
                requests,
                clients,
                progress: !no_progress,
            };
            return demo::run(options)
                .await
                .map(drop)
                .map_err(|e| e.to_string());
        }
        // ---- gateway (owned by the gateway work) ----
        Command::Gateway {
            config,
            key,
            listen,
            timeout,
            max_connections,
            max_pipeline,
        } => {
            let client = KvClient::connect_with_keys(&config, &key, timeout)
                .await
                .map_err(|e| e.to_string())?;
            let shutdown = async {
                let _ = bft_kv_example::signal::wait_for_signal().await;
            };
            return bft_kv_example::gateway::run(
                listen,
                client,
                bft_kv_example::gateway::GatewayOptions {
                    max_connections,
                    max_pipeline,
                    ..Default::default()
                },
                shutdown,
            )
            .await
            .map_err(|e| e.to_string());
        }
        // ---- end gateway ----
        Command::Get { key, client } => (KvOp::Get { key: key.into() }, client),
        Command::Set { key, value, client } => (
            KvOp::Set {
                key: key.into(),
                value: value.into(),
            },
            client,
        ),
        Command::Del { keys, client } => (
            KvOp::Del {
                keys: keys.into_iter().map(Into::into).collect(),
            },
            client,
        ),
        Command::Exists { keys, client } => (
            KvOp::Exists {
                keys: keys.into_iter().map(Into::into).collect(),
            },
            client,
        ),
        Command::Incr { key, by, client } => (
            KvOp::Incr {
                key: key.into(),
                by,
            },
            client,
        ),
        Command::Cas {
            key,
            expected,
            new,
            client,
            ..
        } => (
            KvOp::Cas {
                key: key.into(),
                expected: expected.map(Into::into),
                new: new.map(Into::into),
            },
            client,
        ),
        Command::Scan {
            start,
            end,
            limit,
            client,
        } => (
            KvOp::Scan {
                start: start.into(),
                end: end.map(Into::into),
                limit,
            },
            client,
        ),
    };
    run_op(op, client).await
}

fn run_keygen(args: KeygenArgs) -> Result<(), String> {
    let options = KeygenOptions {
        replicas: args.replicas,
        clients: args.clients,
        sessions_per_client: args.sessions_per_client,
        out: args.out,
        host: args.host,
        base_port: args.base_port,
        ports: args.ports,
        view_change: args.view_change_ms.map(Duration::from_millis),
        client_retransmit: args.client_retransmit_ms.map(Duration::from_millis),
    };
    let generated = keygen(&options).map_err(|e| e.to_string())?;
    println!("wrote {}", generated.config.display());
    for path in generated.replica_keys.iter().chain(&generated.client_keys) {
        println!("wrote {} (owner-only)", path.display());
    }
    Ok(())
}

async fn run_op(op: KvOp, args: ClientArgs) -> Result<(), String> {
    let client = KvClient::connect(&args.config, &args.key_file, args.timeout)
        .await
        .map_err(|e| e.to_string())?;
    let result = client.call(op).await;
    client.shutdown().await;
    let reply = result.map_err(|e: KvClientError| e.to_string())?;
    let text = render(&reply).map_err(|e| format!("the cluster refused the operation: {e}"))?;
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}
