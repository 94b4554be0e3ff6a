//! Model-based property test of the redb store: random sequences of inserts (single and
//! batched, with duplicates), updates and cancels in any order, pruning and reopening,
//! checked after every step against the reference model in `model/mod.rs`.
#![cfg(test)]

mod model;

use model::{alert, indicator, key, replacing, Model};
use proptest::prelude::*;
use tempfile::TempDir;
use tocsin_node::store::{Insert, Receipt, Store};
use tocsin_proto::{AlertId, IndicatorType, Kind, Severity, SignedAlert, Tlp};

const T0: u64 = 1_700_000_000_000;
/// Long past: alerts expiring here are expired, and pruned by `Prune(1)`.
const PAST: u64 = T0 + 100;
/// Far future (2096): expired never, pruned only by `Prune(2)`.
const FUTURE: u64 = 4_000_000_000_000;
/// `prune_expired` thresholds: none, the PAST ones, everything that expires.
const PRUNE_BEFORE: [u64; 3] = [T0 + 50, T0 + 150, FUTURE + 1];

/// A fixed set of alerts whose relations (updates, cancels, other-origin replacements,
/// a replacement of a replacement, expiring replacers) cover the store's state rules.
fn pool() -> Vec<SignedAlert> {
    let a0 = alert(1, T0 + 10, |b| {
        b.severity = Severity::High;
        b.tags = vec!["Phishing".into(), "bank".into()];
        b.indicators = vec![indicator(IndicatorType::Ipv4, "203.0.113.7")];
        b.title = "Phishing wave against banks".into();
    });
    let a1 = alert(1, T0 + 20, |b| {
        b.severity = Severity::Low;
        b.tlp = Tlp::Clear;
        b.tags = vec!["ransomware".into()];
        b.indicators = vec![indicator(IndicatorType::Domain, "evil.example")];
        b.text = "An affiliate of LockBit.".into();
        b.expires_at = Some(FUTURE);
    });
    let a2 = alert(2, T0 + 20, |b| {
        b.severity = Severity::Critical;
        b.tlp = Tlp::Amber;
        b.tags = vec!["phishing".into()];
        b.indicators = vec![indicator(IndicatorType::Domain, "evil.example")];
        b.expires_at = Some(PAST);
    });
    let a3 = alert(2, T0 + 30, |b| {
        b.severity = Severity::Info;
        b.tlp = Tlp::Red;
        b.recipients = vec![key(1)];
        b.expires_at = Some(PAST);
    });
    let a4 = alert(3, T0 + 40, |b| {
        b.tags = vec!["Ransomware".into()];
        b.title = "Ransomware note found (lockbit)".into();
        b.expires_at = Some(FUTURE);
    });
    let update_a0 = replacing(1, T0 + 50, Kind::Update, a0.id());
    let cancel_a0 = replacing(1, T0 + 45, Kind::Cancel, a0.id());
    let foreign_cancel_a1 = replacing(2, T0 + 55, Kind::Cancel, a1.id());
    let expiring_cancel_a1 = alert(1, T0 + 60, |b| {
        b.kind = Kind::Cancel;
        b.replaces = Some(a1.id());
        b.expires_at = Some(PAST);
    });
    let update_a2 = replacing(2, T0 + 65, Kind::Update, a2.id());
    let expiring_update_a4 = alert(3, T0 + 70, |b| {
        b.kind = Kind::Update;
        b.replaces = Some(a4.id());
        b.expires_at = Some(PAST);
    });
    let update_of_update = replacing(3, T0 + 75, Kind::Update, expiring_update_a4.id());
    let a12 = alert(2, T0 + 80, |b| {
        b.tlp = Tlp::AmberStrict;
        b.severity = Severity::High;
        b.indicators = vec![indicator(IndicatorType::Cve, "CVE-2024-12345")];
        b.text = "Exploited in the wild".into();
    });
    let second_update_a0 = alert(1, T0 + 50, |b| {
        b.kind = Kind::Update;
        b.replaces = Some(a0.id());
        b.title = "Same time as the other update: the id breaks the tie".into();
    });
    vec![
        a0,
        a1,
        a2,
        a3,
        a4,
        update_a0,
        cancel_a0,
        foreign_cancel_a1,
        expiring_cancel_a1,
        update_a2,
        expiring_update_a4,
        update_of_update,
        a12,
        second_update_a0,
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Insert(usize),
    /// One `insert_many` call (may hold the same alert twice).
    InsertMany(Vec<usize>),
    /// `prune_expired(PRUNE_BEFORE[i])`.
    Prune(usize),
    /// Drop the store, wait for its writer, open the file again.
    Reopen,
}

fn op(pool_len: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..pool_len).prop_map(Op::Insert),
        3 => prop::collection::vec(0..pool_len, 1..6).prop_map(Op::InsertMany),
        1 => (0..PRUNE_BEFORE.len()).prop_map(Op::Prune),
        1 => Just(Op::Reopen),
    ]
}

fn receipt() -> Receipt {
    Receipt {
        received_at: T0,
        from: None,
        hops: 0,
    }
}

async fn run(ops: Vec<Op>, pool: &[SignedAlert]) -> Result<(), String> {
    let dir = TempDir::new().map_err(|e| e.to_string())?;
    let path = dir.path().join("store.redb");
    let (mut store, mut join) = Store::open(&path).map_err(|e| e.to_string())?;
    let mut model = Model::default();
    let ids: Vec<AlertId> = pool.iter().map(|a| a.id()).collect();
    let queries = model::queries(T0);
    for (step, op) in ops.into_iter().enumerate() {
        match &op {
            Op::Insert(i) => {
                let got = store
                    .insert(pool[*i].clone(), receipt())
                    .await
                    .map_err(|e| e.to_string())?;
                let want = model.insert(&pool[*i]);
                if got != want {
                    return Err(format!("step {step} {op:?}: {got:?}, model {want:?}"));
                }
            }
            Op::InsertMany(is) => {
                let items = is.iter().map(|i| (pool[*i].clone(), receipt())).collect();
                let got = store.insert_many(items).await.map_err(|e| e.to_string())?;
                let want: Vec<Insert> = is.iter().map(|i| model.insert(&pool[*i])).collect();
                if got != want {
                    return Err(format!("step {step} {op:?}: {got:?}, model {want:?}"));
                }
            }
            Op::Prune(i) => {
                let got = store
                    .prune_expired(PRUNE_BEFORE[*i])
                    .await
                    .map_err(|e| e.to_string())?;
                let want = model.prune(PRUNE_BEFORE[*i]);
                if got != want {
                    return Err(format!("step {step} {op:?}: pruned {got}, model {want}"));
                }
            }
            Op::Reopen => {
                drop(store);
                join.await.map_err(|e| e.to_string())?;
                (store, join) = Store::open(&path).map_err(|e| e.to_string())?;
            }
        }
        model
            .check(&store, &ids, &queries)
            .map_err(|e| format!("after step {step} {op:?}: {e}"))?;
    }
    Ok(())
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
