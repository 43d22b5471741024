//! `kv_model`: the replicated key-value service against an independent model.

use arbitrary::{Result, Unstructured};
use bft_core::{ClientId, ExecuteContext, SeqNum, Service};
use bft_sim::kv::{KvOp, KvResult, KvService, apply};
use std::collections::BTreeMap;

/// Interprets `data` as a sequence of operations (structured [`KvOp`]s over a few short keys, or
/// raw operation bytes) executed by a [`KvService`], interleaved with snapshots and restores of
/// arbitrary bytes.
///
/// Properties: no panic; every reply equals the encoded result of an independent `BTreeMap`
/// model, and of [`apply`]; undecodable operations answer `BadOperation` and change nothing;
/// decoded operations re-encode to an equal value; `restore(snapshot())` keeps the state; a
/// restore of arbitrary bytes either fails and changes nothing or succeeds with
/// `snapshot() == bytes`.
pub fn kv_model(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut service = KvService::default();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for step in 0..256u64 {
        if run_step(&mut u, step, &mut service, &mut model).is_err() || u.is_empty() {
            break;
        }
    }
}

fn short(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let len = u.int_in_range(0..=max)?;
    Ok(u.bytes(len)?.to_vec())
}

fn run_step(
    u: &mut Unstructured<'_>,
    step: u64,
    service: &mut KvService,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<()> {
    let context = ExecuteContext {
        client: ClientId(1),
        timestamp: step + 1,
        seq: SeqNum(step + 1),
    };
    match u.int_in_range(0..=5u8)? {
        0..=2 => {
            let key = vec![b'k', u.int_in_range(0..=3u8)?];
            let op = match u.int_in_range(0..=2u8)? {
                0 => KvOp::Get { key },
                1 => KvOp::Put {
                    key,
                    value: short(u, 8)?,
                },
                _ => KvOp::Append {
                    key,
                    value: short(u, 8)?,
                },
            };
            let expected = model_apply(model, &op);
            let (_, via_apply) = apply(service.get(op.key()), &op);
            assert_eq!(via_apply, expected, "apply disagrees with the model: {op}");
            let reply = service.execute(&context, &op.encode());
            assert_eq!(
                KvResult::decode(&reply).as_ref(),
                Ok(&expected),
                "reply to {op}"
            );
        }
        3 => {
            let bytes = short(u, 24)?;
            let before = service.clone();
            let reply = service.execute(&context, &bytes);
            match KvOp::decode(&bytes) {
                Ok(op) => {
                    assert_eq!(KvOp::decode(&op.encode()).as_ref(), Ok(&op), "re-encoding");
                    let expected = model_apply(model, &op);
                    assert_eq!(KvResult::decode(&reply), Ok(expected), "reply to raw {op}");
                }
                Err(_) => {
                    assert_eq!(KvResult::decode(&reply), Ok(KvResult::BadOperation));
                    assert_eq!(*service, before, "a bad operation changed the state");
                }
            }
        }
        4 => {
            let snapshot = service.snapshot();
            let mut restored = KvService::default();
            restored.restore(&snapshot).expect("own snapshot restores");
            assert_eq!(restored, *service, "snapshot round trip");
            assert_eq!(restored.state_digest(), service.state_digest());
        }
        _ => {
            let bytes = short(u, 40)?;
            let before = service.clone();
            match service.restore(&bytes) {
                Ok(()) => {
                    assert_eq!(
                        service.snapshot(),
                        bytes,
                        "accepted a non-canonical snapshot"
                    );
                    *model = bft_core::codec::decode(&bytes).expect("restored bytes decode");
                    let mut check = KvService::default();
                    check.restore(&bytes).expect("restores twice");
                    assert_eq!(check, *service, "restore is deterministic");
                }
                Err(_) => assert_eq!(*service, before, "a failed restore changed the state"),
            }
        }
    }
    assert_eq!(service.len(), model.len(), "key count");
    Ok(())
}

/// The model: a map, with the semantics written out independently of [`apply`].
fn model_apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &KvOp) -> KvResult {
    match op {
        KvOp::Get { key } => KvResult::Value(model.get(key).cloned()),
        KvOp::Put { key, value } => {
            model.insert(key.clone(), value.clone());
            KvResult::Done
        }
        KvOp::Append { key, value } => {
            model
                .entry(key.clone())
                .or_default()
                .extend_from_slice(value);
            KvResult::Done
        }
    }
}
