//! Model-based property test of the redb store: random sequences of inserts (single and
//! batched, with duplicates), updates and cancels in any order, pruning and reopening,
//! checked after every step against the reference model in `model/mod.rs`. The same
//! scenario runner backs the cargo-fuzz target `node/fuzz/fuzz_targets/store_model.rs`.
#![cfg(test)]

mod model;

use model::{ops_from_bytes, pool, run, Op, PRUNE_BEFORE};
use proptest::prelude::*;

fn op(pool_len: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..pool_len).prop_map(Op::Insert),
        3 => prop::collection::vec(0..pool_len, 1..6).prop_map(Op::InsertMany),
        1 => (0..PRUNE_BEFORE.len()).prop_map(Op::Prune),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        // Every step commits with an fsync: keep shrinking bounded.
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_agrees_with_the_model(ops in prop::collection::vec(op(14), 1..30)) {
        let pool = pool();
        prop_assert_eq!(pool.len(), 14);
        let rt = tokio::runtime::Runtime::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Err(e) = rt.block_on(run(ops, &pool)) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// The orders that matter most, spelled out: every replacement before its target, then
/// the targets, then prune everything that expires and bring the alerts back.
#[tokio::test]
async fn replacements_before_targets_then_prune_and_reinsert() {
    let pool = pool();
    let order: Vec<usize> = (5..14).chain(0..5).collect();
    let mut ops: Vec<Op> = order.iter().map(|i| Op::Insert(*i)).collect();
    ops.extend([Op::Prune(1), Op::Reopen, Op::Prune(2)]);
    ops.extend((0..14).map(Op::Insert));
    run(ops, &pool).await.unwrap();
}

/// The fuzz target's decoding of bytes into steps, run on a few fixed inputs so that
/// the fuzz harness's path is built and exercised by the normal test suite.
#[tokio::test]
async fn byte_encoded_scenarios_run_against_the_model() {
    let pool = pool();
    for bytes in [
        &b""[..],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13][..],
        &[0x80 | 4, 13, 12, 11, 10, 9, 0xc1, 0xe0, 0xc2, 0x00, 0x05][..],
        &[0xff; 40][..],
    ] {
        let ops = ops_from_bytes(bytes, pool.len());
        assert!(ops.len() <= bytes.len());
        run(ops, &pool).await.unwrap();
    }
}
