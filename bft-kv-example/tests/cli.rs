//! The `bft-kv` command line without a running cluster: help, keygen, and clear errors for bad
//! configuration files, wrong keys, addresses in use and an unreachable cluster.

mod process;

use process::{Cluster, describe, run};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the run failed and its stderr contains `needle`.
fn fails_with(output: std::process::Output, needle: &str) {
    assert!(
        !output.status.success(),
        "expected a failure: {}",
        describe(&output)
    );
    assert!(
        stderr(&output).contains(needle),
        "expected {needle:?} in stderr: {}",
        describe(&output)
    );
}

#[test]
fn every_subcommand_has_help() {
    let output = run(&["--help"]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut commands = vec![
        "keygen", "replica", "get", "set", "del", "exists", "incr", "cas", "scan", "demo",
    ];
    if text.contains("gateway") {
        commands.push("gateway");
    }
    for command in commands {
        assert!(
            text.contains(command),
            "{command} missing from --help:\n{text}"
        );
        let output = run(&[command, "--help"]);
        assert!(
            output.status.success(),
            "{command} --help: {}",
            describe(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{command} --help: {}",
            describe(&output)
        );
    }
}

#[test]
fn keygen_refuses_to_overwrite_and_bad_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("c");
    let out = out.to_str().expect("utf-8");
    let output = run(&["keygen", "--out", out, "--clients", "2"]);
    assert!(output.status.success(), "{}", describe(&output));
    for file in ["cluster.toml", "replica-3.key", "client-2.key"] {
        assert!(dir.path().join("c").join(file).exists(), "{file}");
    }
    fails_with(run(&["keygen", "--out", out]), "already exists");
    let other = dir.path().join("d");
    fails_with(
        run(&[
            "keygen",
            "--out",
            other.to_str().expect("utf-8"),
            "--replicas",
            "5",
        ]),
        "3f+1",
    );
}

#[test]
fn missing_and_malformed_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().expect("utf-8");
    fails_with(
        run(&["replica", "--config", missing, "--id", "0"]),
        "cannot read configuration file",
    );
    fails_with(
        run(&["get", "k", "--config", missing, "--key", "x.key"]),
        "missing.toml",
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "cluster_id = 1\nf = \"one\"\n").expect("write");
    fails_with(
        run(&[
            "replica",
            "--config",
            bad.to_str().expect("utf-8"),
            "--id",
            "0",
        ]),
        "malformed configuration file",
    );
}

#[test]
fn wrong_key_file_and_unknown_id() {
    let cluster = Cluster::generate(1);
    let config = cluster.config.to_str().expect("utf-8").to_string();
    let other_key = cluster.cluster_dir().join("replica-1.key");
    fails_with(
        run(&[
            "replica",
            "--config",
            &config,
            "--id",
            "0",
            "--key",
            other_key.to_str().expect("utf-8"),
        ]),
        "wrong key file for this replica id",
    );
    fails_with(
        run(&["replica", "--config", &config, "--id", "7"]),
        "replica 7 is not in the configuration",
    );
    let client_key = cluster.client_key(1);
    fails_with(
        run(&[
            "replica",
            "--config",
            &config,
            "--id",
            "0",
            "--key",
            client_key.to_str().expect("utf-8"),
        ]),
        "wrong key file",
    );
    let not_a_key = cluster.dir.path().join("not-a-key");
    std::fs::write(&not_a_key, "hello\n").expect("write");
    fails_with(
        run(&[
            "get",
            "k",
            "--config",
            &config,
            "--key",
            not_a_key.to_str().expect("utf-8"),
        ]),
        "not a bft-rs key file",
    );
}

#[test]
fn address_in_use() {
    let cluster = Cluster::generate(1);
    let text = std::fs::read_to_string(&cluster.config).expect("config");
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("address = \"127.0.0.1:"))
        .and_then(|rest| rest.trim_end_matches('"').parse().ok())
        .expect("replica 0's port");
    let _taken = UdpSocket::bind(("127.0.0.1", port)).expect("bind the port first");
    fails_with(
        run(&[
            "replica",
            "--config",
            cluster.config.to_str().expect("utf-8"),
            "--id",
            "0",
        ]),
        "already in use",
    );
}

#[test]
fn unreachable_cluster_reports_the_deadline() {
    let cluster = Cluster::generate(1);
    let started = Instant::now();
    let output = process::bin()
        .args(["set", "k", "v", "--timeout", "1500ms", "--config"])
        .arg(&cluster.config)
        .arg("--key")
        .arg(cluster.client_key(1))
        .output()
        .expect("runs");
    fails_with(output, "no agreed reply from the cluster within 1.5s");
    assert!(started.elapsed() < Duration::from_secs(30));
}
