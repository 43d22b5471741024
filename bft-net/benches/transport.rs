//! The transport alone: frames per second from one replica's transport to another's over QUIC
//! on loopback (TLS 1.3, one stream, length-prefixed frames), as the replica driver would send
//! them. No signing or verification: this is the ceiling the protocol runs under.
//!
//! `cargo bench -p bft-net --bench transport`
#![allow(missing_docs)] // criterion's macros generate undocumented items

use bft_core::testkit::{config, replica_key};
use bft_core::{Principal, ReplicaId};
use bft_net::{Transport, TransportOptions};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRAMES: u64 = 20_000;

fn transport_rate(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Arc::new(config(1, 1));
    let sockets: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addresses: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let options = TransportOptions {
        outbound_queue_frames: 1 << 20,
        max_frames_per_second: u32::MAX,
        frame_burst: u32::MAX,
        ..TransportOptions::default()
    };
    let mut sockets = sockets.into_iter();
    let (sender, receiver, mut inbound) = runtime.block_on(async {
        let (sender, _own_inbound) = Transport::replica_on_socket(
            config.clone(),
            ReplicaId(0),
            replica_key(0),
            sockets.next().unwrap(),
            addresses.clone(),
            options.clone(),
        )
        .expect("sender");
        let (receiver, inbound) = Transport::replica_on_socket(
            config.clone(),
            ReplicaId(1),
            replica_key(1),
            sockets.next().unwrap(),
            addresses.clone(),
            options.clone(),
        )
        .expect("receiver");
        (sender, receiver, inbound)
    });
    let mut group = c.benchmark_group("transport");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for size in [128usize, 1024, 16 * 1024] {
        let frame = Bytes::from(vec![7u8; size]);
        group.throughput(Throughput::Elements(FRAMES));
        group.bench_function(format!("frames_{size}B"), |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iterations {
                        for _ in 0..FRAMES {
                            sender.send(Principal::Replica(ReplicaId(1)), frame.clone());
                        }
                        let mut received = 0;
                        let mut batch = Vec::with_capacity(1024);
                        while received < FRAMES {
                            batch.clear();
                            received += inbound.recv_many(&mut batch, 1024).await as u64;
                        }
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
    let stats = sender.stats();
    assert_eq!(
        stats.dropped_queue_full, 0,
        "the bench must not drop frames"
    );
    runtime.block_on(async {
        sender.shutdown().await;
        receiver.shutdown().await;
    });
}

criterion_group!(benches, transport_rate);
criterion_main!(benches);
