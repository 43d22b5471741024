use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn scratch_new_view() {
    let zeros = vec![0u8; 400];
    println!("zeros: {:?}", bft_fuzz::new_view_report(&zeros));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let start = std::time::Instant::now();
    let mut agg = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let mut data = vec![0u8; rng.random_range(0..=512)];
        rng.fill_bytes(&mut data);
        let r = bft_fuzz::new_view_report(&data);
        *agg.entry("emitted").or_insert(0) += r.emitted as usize;
        *agg.entry("crafted_accepted").or_insert(0) += r.crafted_accepted;
        *agg.entry("crafted_refused").or_insert(0) += r.crafted_refused;
        *agg.entry("invalid").or_insert(0) += r.view_changes_invalid;
        *agg.entry("ambiguous").or_insert(0) += r.ambiguous;
        *agg.entry("reissued").or_insert(0) += r.reissued;
        *agg.entry("own").or_insert(0) += r.own_certificates;
    }
    println!("{agg:?} in {:?}", start.elapsed());
}

#[test]
fn scratch_cluster() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let start = std::time::Instant::now();
    let mut best = bft_fuzz::ClusterReport::default();
    for _ in 0..100 {
        let mut data = vec![0u8; rng.random_range(0..=1024)];
        rng.fill_bytes(&mut data);
        let r = bft_fuzz::cluster_report(&data);
        best.deliveries += r.deliveries;
        best.executed = best.executed.max(r.executed);
        best.view = best.view.max(r.view);
        best.stable = best.stable.max(r.stable);
        best.completed += r.completed;
        best.recoveries += r.recoveries;
        best.torn_writes += r.torn_writes;
        best.recovered_from_checkpoint += r.recovered_from_checkpoint;
    }
    println!("{best:?} in {:?}", start.elapsed());
}

use bft_fuzz::{ClusterOp as Op, ClusterSchedule};

fn requests(ops: &mut Vec<Op>, count: u8) {
    for i in 0..count {
        ops.push(Op::Submit { client: i % 2, op: i });
        ops.push(Op::Flush(31));
        ops.push(Op::Flush(31));
        ops.push(Op::Flush(31));
    }
}

#[test]
fn scratch_cluster_seeds() {
    let mut ops = Vec::new();
    requests(&mut ops, 12);
    let s = ClusterSchedule { twin: 3, sides: 0, ops };
    let b = s.to_bytes();
    assert_eq!(ClusterSchedule::from_bytes(&b), s);
    println!("normal: {:?}", bft_fuzz::cluster_report(&b));

    // twin primary, view change
    let mut ops = Vec::new();
    ops.push(Op::Submit { client: 0, op: 1 });
    ops.push(Op::Drop(1));
    ops.push(Op::Submit { client: 1, op: 2 });
    ops.push(Op::Drop(1));
    for _ in 0..4 { ops.push(Op::Flush(31)); }
    for _ in 0..20 { ops.push(Op::TickAll); ops.push(Op::Flush(31)); ops.push(Op::Flush(31)); ops.push(Op::Flush(31)); }
    requests(&mut ops, 4);
    let s = ClusterSchedule { twin: 0, sides: 0b1100, ops };
    println!("twin primary: {:?}", bft_fuzz::cluster_report(&s.to_bytes()));

    // crash and recover
    let mut ops = Vec::new();
    requests(&mut ops, 5);
    ops.push(Op::Crash { endpoint: 1, torn: None });
    requests(&mut ops, 5);
    ops.push(Op::Restart(1));
    for _ in 0..4 { ops.push(Op::TickAll); ops.push(Op::Flush(31)); ops.push(Op::Flush(31)); }
    requests(&mut ops, 3);
    let s = ClusterSchedule { twin: 2, sides: 0b0010, ops };
    println!("crash: {:?}", bft_fuzz::cluster_report(&s.to_bytes()));

    // torn
    let mut ops = Vec::new();
    requests(&mut ops, 2);
    ops.push(Op::Submit { client: 0, op: 9 });
    ops.push(Op::Crash { endpoint: 2, torn: Some(1) });
    ops.push(Op::Flush(31));
    ops.push(Op::Restart(2));
    ops.push(Op::Flush(31));
    requests(&mut ops, 4);
    let s = ClusterSchedule { twin: 1, sides: 0b1000, ops };
    println!("torn: {:?}", bft_fuzz::cluster_report(&s.to_bytes()));

    // partition primary away
    let mut ops = Vec::new();
    requests(&mut ops, 2);
    ops.push(Op::Partition(0b00001));
    ops.push(Op::Submit { client: 0, op: 7 });
    for _ in 0..20 { ops.push(Op::TickAll); ops.push(Op::Flush(31)); ops.push(Op::Flush(31)); ops.push(Op::Flush(31)); }
    ops.push(Op::Partition(0));
    requests(&mut ops, 3);
    let s = ClusterSchedule { twin: 2, sides: 0, ops };
    println!("partition: {:?}", bft_fuzz::cluster_report(&s.to_bytes()));
}
