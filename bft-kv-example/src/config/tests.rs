//! Unit tests of the configuration file: round trips, defaults, clear errors.

use super::*;

fn keys() -> Vec<KeyPair> {
    (0..5u8).map(|i| KeyPair::from_seed([i + 1; 32])).collect()
}

/// A 4-replica, 1-client file for `keys()`.
fn sample_file() -> ClusterFile {
    let keys = keys();
    ClusterFile {
        cluster_id: 9,
        f: 1,
        timing: TimingFile::from_timing(&Timing::default()),
        limits: LimitsFile::from_limits(&Limits::default()),
        kv: KvLimits::default(),
        replicas: (0..4)
            .map(|i| ReplicaEntry {
                id: i,
                address: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                public_key: keys[i as usize].public(),
            })
            .collect(),
        clients: vec![ClientEntry {
            id: 1,
            public_key: keys[4].public(),
        }],
    }
}

/// Writes the file and the key files into `dir`; returns the file's path.
fn write_sample(dir: &Path) -> PathBuf {
    let keys = keys();
    for (i, key) in keys.iter().take(4).enumerate() {
        key.save(&dir.join(replica_key_file(ReplicaId(i as u32))))
            .unwrap();
    }
    keys[4]
        .save(&dir.join(client_key_file(ClientId(1))))
        .unwrap();
    let path = dir.join(CONFIG_FILE);
    sample_file().save(&path).unwrap();
    path
}

#[test]
fn round_trips_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path());
    let keys = keys();
    assert_eq!(ClusterFile::load(&path).unwrap(), sample_file());
    let config = KvConfig::load(&path).unwrap();
    assert_eq!(config.cluster.n(), 4);
    assert_eq!(config.addresses[3].port(), 7003);
    assert_eq!(config.dir, dir.path());
    let key = config.load_replica_key(ReplicaId(2), None).unwrap();
    assert_eq!(key.public(), keys[2].public());
    let (id, _) = config
        .load_client_key(&config.client_key_path(ClientId(1)))
        .unwrap();
    assert_eq!(id, ClientId(1));
}

#[test]
fn minimal_file_takes_defaults() {
    let file = sample_file();
    let mut text = String::from("cluster_id = 1\nf = 1\n");
    for r in &file.replicas {
        text += &format!(
            "[[replicas]]\nid = {}\naddress = \"{}\"\npublic_key = \"{}\"\n",
            r.id, r.address, r.public_key
        );
    }
    let parsed = ClusterFile::parse(&text).unwrap();
    let config = parsed.resolve(Path::new("cluster.toml")).unwrap();
    assert_eq!(config.cluster.limits, Limits::default());
    assert_eq!(config.cluster.timing, Timing::default());
    assert_eq!(config.kv, KvLimits::default());
    assert!(config.cluster.clients.is_empty());
    assert_eq!(config.dir, Path::new("."));
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = KvConfig::load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, ConfigFileError::Read { .. }), "{missing}");
    assert!(missing.to_string().contains("nope.toml"));

    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "cluster_id = 1\nf = [\n").unwrap();
    let error = KvConfig::load(&path).unwrap_err();
    assert!(matches!(error, ConfigFileError::Parse { .. }), "{error}");

    let mut file = sample_file();
    file.f = 2;
    let error = file.resolve(&path).unwrap_err();
    assert!(error.to_string().contains("3f+1"), "{error}");

    let mut file = sample_file();
    file.replicas.swap(0, 1);
    let error = file.resolve(&path).unwrap_err();
    assert!(error.to_string().contains("in order"), "{error}");

    let mut file = sample_file();
    file.replicas[1].address = file.replicas[0].address;
    assert!(file.resolve(&path).is_err());

    let mut file = sample_file();
    file.kv.max_value_bytes = 1 << 20;
    let error = file.resolve(&path).unwrap_err();
    assert!(error.to_string().contains("max_value_bytes"), "{error}");

    let text = "cluster_id = 1\nf = 1\nunknown = 3\nreplicas = []\n";
    std::fs::write(&path, text).unwrap();
    let error = KvConfig::load(&path).unwrap_err();
    assert!(error.to_string().contains("unknown"), "{error}");
}

#[test]
fn wrong_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path());
    let config = KvConfig::load(&path).unwrap();
    let other = config.replica_key_path(ReplicaId(1));
    let error = config
        .load_replica_key(ReplicaId(0), Some(&other))
        .unwrap_err();
    assert!(
        matches!(error, KeyError::NotThisReplica { id: 0, .. }),
        "{error}"
    );
    let error = config.load_replica_key(ReplicaId(4), None).unwrap_err();
    assert!(matches!(error, KeyError::NoSuchReplica { .. }), "{error}");
    let error = config.load_client_key(&other).unwrap_err();
    assert!(matches!(error, KeyError::NotAdmitted { .. }), "{error}");
    let error = config
        .load_client_key(&dir.path().join("missing.key"))
        .unwrap_err();
    assert!(error.to_string().contains("missing.key"), "{error}");
}

/// A public key listed under several client ids is one client with several sessions: its key
/// file loads as every one of them (lowest first), and as the lowest id alone where one id is
/// wanted; a key listed once loads as that one id.
#[test]
fn a_key_listed_under_several_client_ids_loads_as_all_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let mut file = sample_file();
    let shared = file.clients[0].public_key;
    file.clients.push(ClientEntry {
        id: 7,
        public_key: shared,
    });
    file.clients.push(ClientEntry {
        id: 3,
        public_key: shared,
    });
    let path = dir.path().join("shared.toml");
    file.save(&path).unwrap();
    let config = KvConfig::load(&path).unwrap();
    let key_path = config.client_key_path(ClientId(1));
    let sessions = config.load_client_sessions(&key_path).unwrap();
    let ids: Vec<ClientId> = sessions.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![ClientId(1), ClientId(3), ClientId(7)]);
    assert!(sessions.iter().all(|(_, key)| key.public() == shared));
    assert_eq!(config.load_client_key(&key_path).unwrap().0, ClientId(1));

    let single = KvConfig::load(&sample).unwrap();
    let ids: Vec<ClientId> = single
        .load_client_sessions(&key_path)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, vec![ClientId(1)]);
}
