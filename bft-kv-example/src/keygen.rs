//! `bft-kv keygen`: a cluster configuration and one key file per replica and client.

use crate::config::{
    CONFIG_FILE, ClientEntry, ClusterFile, ConfigFileError, LimitsFile, ReplicaEntry, TimingFile,
    client_key_file, replica_key_file,
};
use crate::service::KvLimits;
use bft_core::{ClientId, Limits, ReplicaId, Timing};
use bft_crypto::{KeyFileError, KeyPair};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to generate.
#[derive(Debug, Clone)]
pub struct KeygenOptions {
    /// Number of replicas: `3f + 1` for some `f >= 1`.
    pub replicas: usize,
    /// Number of client keys (client processes).
    pub clients: u64,
    /// Client ids admitted with each client key (at least 1): sessions of one client, which run
    /// that many operations at once over one connection per replica. Key `k` (from 0) is
    /// admitted as ids `k * sessions_per_client + 1` onwards, and its file is named after the
    /// first of them.
    pub sessions_per_client: u64,
    /// The directory to write into (created if missing).
    pub out: PathBuf,
    /// The host every replica listens on.
    pub host: IpAddr,
    /// Replica `i` listens on `base_port + i`, unless `ports` is given.
    pub base_port: u16,
    /// One port per replica, overriding `base_port`.
    pub ports: Option<Vec<u16>>,
    /// Timeouts; `None` keeps the defaults.
    pub view_change: Option<Duration>,
    /// How long a client waits before retransmitting to every replica; `None` keeps the default.
    pub client_retransmit: Option<Duration>,
}

impl Default for KeygenOptions {
    fn default() -> Self {
        KeygenOptions {
            replicas: 4,
            clients: 1,
            sessions_per_client: 1,
            out: PathBuf::from("cluster"),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 7000,
            ports: None,
            view_change: None,
            client_retransmit: None,
        }
    }
}

/// Why keygen failed.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    /// The replica count is not `3f + 1` with `f >= 1`.
    #[error("--replicas must be 3f+1 for some f >= 1 (4, 7, 10, ...), got {0}")]
    ReplicaCount(usize),
    /// Ports do not match the replica count, or overflow.
    #[error("{0}")]
    Ports(String),
    /// The session count is zero, or clients times sessions is too many.
    #[error("--sessions-per-client must be between 1 and {MAX_CLIENT_IDS} / --clients, got {0}")]
    Sessions(u64),
    /// The output directory already holds a configuration.
    #[error("{0} already exists: refusing to overwrite a cluster's keys (choose another --out)")]
    Exists(PathBuf),
    /// The output directory cannot be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No randomness for keys.
    #[error("cannot generate a key: {0}")]
    Random(String),
    /// A key file cannot be written.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The configuration cannot be written, or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
}

/// Most client ids keygen admits in all (clients times sessions per client).
pub const MAX_CLIENT_IDS: u64 = 1 << 20;

/// What keygen wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The configuration file.
    pub config: PathBuf,
    /// Replica key files, by id.
    pub replica_keys: Vec<PathBuf>,
    /// Client key files, by their first client id (1 first).
    pub client_keys: Vec<PathBuf>,
}

/// Generates keys and writes the configuration and key files into `options.out`. Key files are
/// readable by their owner only; nothing existing is overwritten.
pub fn keygen(options: &KeygenOptions) -> Result<Generated, KeygenError> {
    let n = options.replicas;
    if n < 4 || !(n - 1).is_multiple_of(3) {
        return Err(KeygenError::ReplicaCount(n));
    }
    let f = (n - 1) / 3;
    let sessions = options.sessions_per_client;
    if sessions == 0
        || options
            .clients
            .checked_mul(sessions)
            .is_none_or(|ids| ids > MAX_CLIENT_IDS)
    {
        return Err(KeygenError::Sessions(sessions));
    }
    // Key `k`'s first client id; its sessions follow it.
    let first_id = |k: usize| ClientId(k as u64 * sessions + 1);
    let ports = match &options.ports {
        Some(ports) if ports.len() != n => {
            return Err(KeygenError::Ports(format!(
                "--ports lists {} ports for {n} replicas",
                ports.len()
            )));
        }
        Some(ports) => ports.clone(),
        None => (0..n)
            .map(|i| {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| options.base_port.checked_add(i))
                    .ok_or_else(|| {
                        KeygenError::Ports(format!(
                            "--base-port {} leaves no room for {n} replicas",
                            options.base_port
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let config_path = options.out.join(CONFIG_FILE);
    if config_path.exists() {
        return Err(KeygenError::Exists(config_path));
    }
    std::fs::create_dir_all(&options.out).map_err(|source| KeygenError::CreateDir {
        path: options.out.clone(),
        source,
    })?;
    let generate = || KeyPair::generate().map_err(|e| KeygenError::Random(e.to_string()));
    let replica_keys = (0..n).map(|_| generate()).collect::<Result<Vec<_>, _>>()?;
    let client_keys = (0..options.clients)
        .map(|_| generate())
        .collect::<Result<Vec<_>, _>>()?;
    let mut timing = Timing::default();
    if let Some(view_change) = options.view_change {
        timing.view_change = view_change;
        timing.view_change_resend = timing.view_change_resend.min(view_change);
    }
    if let Some(retransmit) = options.client_retransmit {
        timing.client_retransmit = retransmit;
    }
    let file = ClusterFile {
        cluster_id: cluster_id(&replica_keys),
        f,
        timing: TimingFile::from_timing(&timing),
        limits: LimitsFile::from_limits(&Limits::default()),
        kv: KvLimits::default(),
        replicas: replica_keys
            .iter()
            .zip(&ports)
            .enumerate()
            .map(|(i, (key, port))| ReplicaEntry {
                id: u32::try_from(i).unwrap_or(u32::MAX),
                address: SocketAddr::new(options.host, *port),
                public_key: key.public(),
            })
            .collect(),
        clients: client_keys
            .iter()
            .enumerate()
            .flat_map(|(k, key)| {
                (0..sessions).map(move |s| ClientEntry {
                    id: first_id(k).0 + s,
                    public_key: key.public(),
                })
            })
            .collect(),
    };
    // Refuse to write a configuration the replicas would refuse.
    file.resolve(&config_path)?;
    let mut generated = Generated {
        config: config_path.clone(),
        replica_keys: Vec::new(),
        client_keys: Vec::new(),
    };
    for (i, key) in replica_keys.iter().enumerate() {
        let path = key_path(&options.out, &replica_key_file(ReplicaId(i as u32)));
        key.save(&path)?;
        generated.replica_keys.push(path);
    }
    for (k, key) in client_keys.iter().enumerate() {
        let path = key_path(&options.out, &client_key_file(first_id(k)));
        key.save(&path)?;
        generated.client_keys.push(path);
    }
    // The configuration last: its presence means the key files are all there.
    file.save(&config_path)?;
    Ok(generated)
}

fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// A cluster id derived from the replicas' keys: distinct clusters get distinct ids.
fn cluster_id(replica_keys: &[KeyPair]) -> u64 {
    let mut bytes = Vec::with_capacity(replica_keys.len() * 32);
    for key in replica_keys {
        bytes.extend_from_slice(&key.public().to_bytes());
    }
    let digest = bft_crypto::sha256(&bytes);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.0[..8]);
    // Below 2^63: TOML integers are signed 64-bit.
    u64::from_le_bytes(id) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KvConfig;

    #[test]
    fn writes_a_loadable_cluster_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let options = KeygenOptions {
            clients: 2,
            out: dir.path().join("c"),
            base_port: 9100,
            view_change: Some(Duration::from_millis(300)),
            ..KeygenOptions::default()
        };
        let generated = keygen(&options).unwrap();
        assert_eq!(generated.replica_keys.len(), 4);
        assert_eq!(generated.client_keys.len(), 2);
        let config = KvConfig::load(&generated.config).unwrap();
        assert_eq!(config.cluster.f, 1);
        assert_eq!(config.addresses[2], "127.0.0.1:9102".parse().unwrap());
        assert_eq!(
            config.cluster.timing.view_change,
            Duration::from_millis(300)
        );
        for id in 0..4 {
            config.load_replica_key(ReplicaId(id), None).unwrap();
        }
        let (client, _) = config
            .load_client_key(&config.client_key_path(ClientId(2)))
            .unwrap();
        assert_eq!(client, ClientId(2));
        #[cfg(unix)]
        for path in generated.replica_keys.iter().chain(&generated.client_keys) {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        // A second run into the same directory is refused and changes nothing.
        let before = std::fs::read(&generated.config).unwrap();
        let error = keygen(&options).unwrap_err();
        assert!(matches!(error, KeygenError::Exists(_)), "{error}");
        assert_eq!(std::fs::read(&generated.config).unwrap(), before);
    }

    /// `--sessions-per-client 3` with 2 clients: ids 1 to 6, client-1.key admitted as 1, 2 and 3,
    /// client-4.key as 4, 5 and 6; zero sessions, or too many ids, are refused.
    #[test]
    fn each_client_key_is_admitted_as_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let options = KeygenOptions {
            clients: 2,
            sessions_per_client: 3,
            out: dir.path().join("c"),
            ..KeygenOptions::default()
        };
        let generated = keygen(&options).unwrap();
        assert_eq!(generated.client_keys.len(), 2);
        let config = KvConfig::load(&generated.config).unwrap();
        assert_eq!(config.cluster.clients.len(), 6);
        for (file, ids) in [(1, [1, 2, 3]), (4, [4, 5, 6])] {
            let path = config.client_key_path(ClientId(file));
            assert!(generated.client_keys.contains(&path));
            let sessions: Vec<ClientId> = config
                .load_client_sessions(&path)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            assert_eq!(sessions, ids.map(ClientId).to_vec());
        }
        for sessions_per_client in [0, MAX_CLIENT_IDS] {
            let options = KeygenOptions {
                clients: 2,
                sessions_per_client,
                out: dir.path().join(format!("refused-{sessions_per_client}")),
                ..KeygenOptions::default()
            };
            assert!(matches!(keygen(&options), Err(KeygenError::Sessions(_))));
            assert!(!options.out.exists());
        }
    }

    #[test]
    fn refuses_bad_counts_and_ports() {
        let dir = tempfile::tempdir().unwrap();
        for replicas in [0, 1, 3, 5, 6] {
            let options = KeygenOptions {
                replicas,
                out: dir.path().to_path_buf(),
                ..KeygenOptions::default()
            };
            assert!(matches!(
                keygen(&options),
                Err(KeygenError::ReplicaCount(_))
            ));
        }
        let options = KeygenOptions {
            ports: Some(vec![1, 2, 3]),
            out: dir.path().to_path_buf(),
            ..KeygenOptions::default()
        };
        assert!(matches!(keygen(&options), Err(KeygenError::Ports(_))));
        let options = KeygenOptions {
            base_port: u16::MAX - 1,
            out: dir.path().to_path_buf(),
            ..KeygenOptions::default()
        };
        assert!(matches!(keygen(&options), Err(KeygenError::Ports(_))));
        assert!(!dir.path().join(CONFIG_FILE).exists());
    }
}
