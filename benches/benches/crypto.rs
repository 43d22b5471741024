//! Micro-benchmarks of `bft-crypto`: ed25519 signing ([`KeyPair::sign`] with a
//! [`SignatureDomain`], and [`KeyPair::sign_raw`]), single verification ([`bft_crypto::verify`],
//! [`verify_raw`]), batch verification ([`BatchVerifier`]: queue then `verify`, and queue then
//! `verify_each`, for batches of 1, 8, 64 and 256 signatures by distinct keys, reported per
//! signature), and SHA-256 of 64 B, 1 KiB and 64 KiB.
//!
//! Messages are 64 B and 1 KiB (the payload; [`KeyPair::sign`] and [`bft_crypto::verify`] add the
//! 34-byte domain header). Keys come from fixed seeds.
//!
//! Run with `cargo bench -p benches --bench crypto` (add a filter, e.g. `-- batch_verify`, to run
//! a subset). The whole file runs for about a minute and a half, plus the build.

use bft_crypto::{
    BatchVerifier, KeyPair, PreparedKey, PublicKey, Signature, SignatureDomain, sha256, verify,
    verify_raw,
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// Payload sizes for signing and verification.
const MESSAGE_SIZES: [(usize, &str); 2] = [(64, "64B"), (1024, "1KiB")];

/// Batch sizes for batch verification.
const BATCH_SIZES: [usize; 4] = [1, 8, 64, 256];

/// A deterministic key pair (seeds unlike the testkit's, which start with 1 or 2).
fn key(i: u32) -> KeyPair {
    let mut seed = [0u8; 32];
    seed[0] = 0xbe;
    seed[1..5].copy_from_slice(&i.to_le_bytes());
    KeyPair::from_seed(seed)
}

/// A payload of `len` bytes that differs with `tag`.
fn message(len: usize, tag: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(tag) as u8)
        .collect()
}

/// The domain of a prepare from replica 1 of cluster 7 (any fixed domain would do).
fn domain() -> SignatureDomain {
    SignatureDomain {
        cluster: 7,
        kind: 3,
        sender_role: 0,
        sender_id: 1,
    }
}

fn sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign");
    let key = key(0);
    let domain = domain();
    for (len, name) in MESSAGE_SIZES {
        let payload = message(len, 0);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("domain", name), |b| {
            b.iter(|| key.sign(black_box(&domain), black_box(&payload)))
        });
        let signed = domain.signed_bytes(&payload);
        group.bench_function(BenchmarkId::new("raw", name), |b| {
            b.iter(|| key.sign_raw(black_box(&signed)))
        });
    }
    group.finish();
}

fn verify_single(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    let key = key(0);
    let public = key.public();
    let domain = domain();
    for (len, name) in MESSAGE_SIZES {
        let payload = message(len, 0);
        let signature = key.sign(&domain, &payload);
        let signed = domain.signed_bytes(&payload);
        assert_eq!(verify(&public, &domain, &payload, &signature), Ok(()));
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("domain", name), |b| {
            b.iter(|| {
                verify(
                    black_box(&public),
                    black_box(&domain),
                    black_box(&payload),
                    black_box(&signature),
                )
            })
        });
        group.bench_function(BenchmarkId::new("raw", name), |b| {
            b.iter(|| {
                verify_raw(
                    black_box(&public),
                    black_box(&signed),
                    black_box(&signature),
                )
            })
        });
        // The key decoded once, as the core's verifier holds every member's.
        let prepared = PreparedKey::new(&public).expect("a valid key");
        group.bench_function(BenchmarkId::new("prepared_key", name), |b| {
            b.iter(|| black_box(&prepared).verify_raw(black_box(&signed), black_box(&signature)))
        });
    }
    group.finish();
}

/// `count` (key, signed bytes, signature) triples over 64-byte payloads, each by its own key, as
/// a replica's verifier sees them (frames from many clients and replicas).
fn triples(count: usize) -> Vec<(PublicKey, Vec<u8>, Signature)> {
    let domain = domain();
    (0..count as u32)
        .map(|i| {
            let key = key(i);
            let signed = domain.signed_bytes(&message(64, i));
            let signature = key.sign_raw(&signed);
            (key.public(), signed, signature)
        })
        .collect()
}

/// Queues borrowed triples, as `bft_core::Verifier` does.
fn queued(items: &[(PublicKey, Vec<u8>, Signature)]) -> BatchVerifier<&[u8]> {
    let mut batch = BatchVerifier::new();
    for (key, signed, signature) in items {
        batch.queue(*key, signed.as_slice(), *signature);
    }
    batch
}

fn batch_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_verify");
    // A 256-signature batch takes about 10 ms: fewer, longer samples.
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    for size in BATCH_SIZES {
        let items = triples(size);
        assert!(queued(&items).verify().is_ok());
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(BenchmarkId::new("queue_verify", size), |b| {
            b.iter(|| queued(black_box(&items)).verify())
        });
        group.bench_function(BenchmarkId::new("queue_verify_each", size), |b| {
            b.iter(|| queued(black_box(&items)).verify_each())
        });
        // Owned messages, the default type parameter: the copies are made outside the timing.
        group.bench_function(BenchmarkId::new("owned_verify", size), |b| {
            b.iter_batched(
                || {
                    let mut batch = BatchVerifier::<Vec<u8>>::new();
                    for (key, signed, signature) in &items {
                        batch.queue(*key, signed.clone(), *signature);
                    }
                    batch
                },
                |batch| batch.verify(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn digest(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha256");
    for (len, name) in [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB")] {
        let bytes = message(len, 0);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| b.iter(|| sha256(black_box(&bytes))));
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

fn main() {
    let mut criterion = config().configure_from_args();
    sign(&mut criterion);
    verify_single(&mut criterion);
    batch_verify(&mut criterion);
    digest(&mut criterion);
    criterion.final_summary();
}
