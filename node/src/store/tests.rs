//! Unit tests of the write path's internals: verified ingest, duplicates within and
//! across batches, and deferred index writes meeting a prune in the same batch. The
//! store's behaviour as a whole is tested in `node/tests/store.rs`.

use tempfile::TempDir;
use tocsin_proto::{AlertBody, Kind, PublicKey, Severity, SignedAlert, SigningKey, Tlp};

use std::sync::Arc;

use tokio::sync::oneshot;

use super::writer::{Request, Writer};
use super::{AlertState, Insert, Query, Receipt, Store, VERIFY_CHUNK};

const T0: u64 = 1_700_000_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn body(n: u8, issued_at: u64, title: &str) -> AlertBody {
    AlertBody {
        v: tocsin_proto::FORMAT_VERSION,
        origin: PublicKey(key(n).verifying_key().to_bytes()),
        issued_at,
        expires_at: None,
        kind: Kind::New,
        replaces: None,
        severity: Severity::High,
        tlp: Tlp::Green,
        recipients: vec![],
        title: title.into(),
        text: String::new(),
        indicators: vec![],
        tags: vec!["Bulk".into()],
        references: vec![],
    }
}

fn alert(n: u8, issued_at: u64, title: &str) -> SignedAlert {
    SignedAlert::sign(body(n, issued_at, title), &key(n)).unwrap()
}

/// `a` with the last byte of its signature flipped: decodes, but does not verify.
fn bad_signature(a: &SignedAlert) -> SignedAlert {
    let mut env = a.to_envelope();
    *env.last_mut().unwrap() ^= 1;
    let bad = SignedAlert::decode(&env).unwrap();
    assert!(bad.check_signature().is_err());
    bad
}

fn receipt(hops: u8) -> Receipt {
    Receipt {
        received_at: T0,
        from: None,
        hops,
    }
}

fn open(dir: &TempDir) -> (Store, tokio::task::JoinHandle<()>) {
    Store::open(&dir.path().join("store.redb")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_verified_stores_exactly_the_valid_alerts_in_order() {
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    let mut events = store.subscribe();
    let first = alert(1, T0, "stored before");
    assert_eq!(
        store
            .insert(first.clone().verify().unwrap(), receipt(0))
            .await
            .unwrap(),
        Insert::Inserted { seq: 1 }
    );
    // Several chunks; every fifth alert has a bad signature, and a copy of `first`
    // and a repeat within the input are duplicates.
    let n = 3 * VERIFY_CHUNK + 7;
    let mut items = Vec::new();
    let mut expect_valid = Vec::new();
    for i in 0..n {
        let a = alert((i % 3) as u8 + 1, T0 + 1 + i as u64, &format!("bulk {i}"));
        if i % 5 == 4 {
            items.push((bad_signature(&a), receipt(1)));
            expect_valid.push(false);
        } else {
            items.push((a, receipt(1)));
            expect_valid.push(true);
        }
    }
    items.insert(10, (first.clone(), receipt(2)));
    expect_valid.insert(10, true);
    let repeat = items[20].clone();
    items.push(repeat);
    expect_valid.push(expect_valid[20]);

    let results = store.insert_verified(items.clone()).await.unwrap();
    assert_eq!(results.len(), items.len());
    let mut next_seq = 2;
    for (i, (r, valid)) in results.iter().zip(&expect_valid).enumerate() {
        match (r, valid) {
            (Err(e), false) => assert!(e.to_string().contains("signature"), "{e}"),
            (Ok(Insert::Duplicate { seq: 1 }), true) if i == 10 => {}
            (Ok(Insert::Duplicate { seq }), true) if i == items.len() - 1 => {
                assert!(matches!(results[20], Ok(Insert::Inserted { seq: s }) if s == *seq));
            }
            (Ok(Insert::Inserted { seq }), true) => {
                assert_eq!(*seq, next_seq, "alert {i} stored out of order");
                next_seq += 1;
            }
            other => panic!("alert {i}: unexpected {other:?}"),
        }
    }
    let stored = next_seq - 1;
    assert_eq!(store.head().unwrap(), stored);
    for ((a, _), valid) in items.iter().zip(&expect_valid) {
        assert_eq!(store.contains(&a.id()).unwrap(), *valid);
    }
    // The duplicate left the first copy untouched.
    assert_eq!(store.get(&first.id()).unwrap().unwrap().receipt, receipt(0));
    // Announced after commit, in seq order, each once.
    for seq in 1..=stored {
        assert_eq!(events.recv().await.unwrap().seq, seq);
    }
    assert!(events.try_recv().is_err());
    // Indexed like any insert.
    let q = Query {
        tag: Some("bulk".into()),
        limit: Some(1000),
        ..Query::default()
    };
    assert_eq!(store.query(&q).unwrap().alerts.len() as u64, stored);
    assert!(store.insert_verified(vec![]).await.unwrap().is_empty());
    drop(store);
    join.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_in_the_same_batch_keeps_the_first_copy() {
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    let a = alert(1, T0, "a");
    let b = alert(2, T0 + 1, "b");
    let got = store
        .insert_many(vec![
            (a.clone().verify().unwrap(), receipt(1)),
            (b.clone().verify().unwrap(), receipt(1)),
            (a.clone().verify().unwrap(), receipt(7)),
        ])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Insert::Inserted { seq: 1 },
            Insert::Inserted { seq: 2 },
            Insert::Duplicate { seq: 1 },
        ]
    );
    let stored = store.get(&a.id()).unwrap().unwrap();
    assert_eq!((stored.seq, stored.receipt), (1, receipt(1)));
    assert_eq!(store.envelope(&a.id()).unwrap().unwrap(), a.to_envelope());
    assert_eq!(store.head().unwrap(), 2);
    assert_eq!(store.log_after(0, 10).unwrap().len(), 2);
    drop(store);
    join.await.unwrap();
}

/// Drives the writer by hand so that the inserts and the prune are certainly in one
/// batch: the prune must see the index entries the inserts deferred.
#[test]
fn a_prune_in_the_same_batch_as_inserts_sees_their_index_entries() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("store.redb");
    let mut expiring = body(1, T0, "expires");
    expiring.expires_at = Some(T0 + 10);
    let expiring = SignedAlert::sign(expiring, &key(1)).unwrap();
    let keep = alert(2, T0, "keeps");
    let cancel = {
        let mut b = body(1, T0 + 1, "cancel");
        b.kind = Kind::Cancel;
        b.replaces = Some(expiring.id());
        SignedAlert::sign(b, &key(1)).unwrap()
    };
    {
        let db = redb::Database::create(&path).unwrap();
        super::init(&db, &path).unwrap();
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let (events, _) = tokio::sync::broadcast::channel(16);
        let mut writer = Writer {
            slot: Arc::new(super::slot::Slot::new(db, &path)),
            rx,
            events,
            next_seq: 1,
            metrics: super::StoreMetrics::default(),
        };
        let (r1, mut inserted) = oneshot::channel();
        let (r2, mut pruned) = oneshot::channel();
        let items = [&expiring, &keep, &cancel]
            .map(|a| super::prepare(a, receipt(0)).unwrap())
            .into();
        writer.process(vec![
            Request::Insert { items, reply: r1 },
            Request::Prune {
                before_ms: T0 + 11,
                reply: r2,
            },
        ]);
        assert_eq!(inserted.try_recv().unwrap().unwrap().len(), 3);
        assert_eq!(pruned.try_recv().unwrap().unwrap(), 1);
        // One commit of three alerts, measured.
        assert_eq!(writer.metrics.alerts_stored.get(), 3);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        writer.metrics.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("tocsin_store_batch_alerts_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tocsin_store_batch_alerts_sum 3.0\n"),
            "{text}"
        );
        assert!(
            text.contains("tocsin_store_commit_seconds_count 1\n"),
            "{text}"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (store, join) = Store::open(&path).unwrap();
        assert!(!store.contains(&expiring.id()).unwrap());
        assert!(store.contains(&keep.id()).unwrap());
        assert_eq!(store.head().unwrap(), 3);
        // No index still points at the pruned alert.
        for q in [
            Query::default(),
            Query {
                origin: Some(expiring.origin()),
                ..Query::default()
            },
            Query {
                tag: Some("bulk".into()),
                ..Query::default()
            },
        ] {
            let page = store.query(&q).unwrap();
            assert!(page.alerts.iter().all(|a| a.alert.id() != expiring.id()));
        }
        assert_eq!(store.query(&Query::default()).unwrap().alerts.len(), 2);
        assert_eq!(
            store.get(&cancel.id()).unwrap().unwrap().state,
            AlertState::Active
        );
        drop(store);
        join.await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_times_follow_the_log_strictly_and_are_backfilled_for_an_older_store() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("store.redb");
    let (store, join) = Store::open(&path).unwrap();
    // Receipts dated out of order: the added times still follow the log.
    let items: Vec<(SignedAlert, Receipt)> = (0..50u64)
        .map(|i| {
            let r = Receipt {
                received_at: T0 + (i * 7919) % 50,
                from: None,
                hops: 0,
            };
            (alert(1, T0 + i, &format!("a{i}")), r)
        })
        .collect();
    store.insert_verified(items).await.unwrap();
    let all = store.added_after(0, 1000).unwrap();
    assert_eq!(all.len(), 50);
    let seqs: Vec<u64> = all.iter().map(|(_, s)| s.seq).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "not strictly increasing"
    );
    // Paging on from any added time gives exactly the rest.
    let (mid, _) = all[20];
    let rest = store.added_after(mid, 1000).unwrap();
    assert_eq!(rest.len(), 29);
    assert_eq!(rest[0].1.seq, 22);
    drop(store);
    join.await.unwrap();

    // A store written before the `added` table existed gets it at open, from receipts.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(super::schema::ADDED).unwrap();
        txn.commit().unwrap();
    }
    let (store, join) = Store::open(&path).unwrap();
    let again = store.added_after(0, 1000).unwrap();
    assert_eq!(again.len(), 50);
    assert!(again.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(again[0].0 >= T0 * 1000, "from the receipt time");
    // New alerts come after the backfilled ones.
    store
        .insert(alert(2, T0, "new").verify().unwrap(), receipt(0))
        .await
        .unwrap();
    let last = store.added_after(again[49].0, 10).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].1.seq, 51);
    drop(store);
    join.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_replaces_a_delivery_receipt_and_never_the_reverse() {
    use tocsin_proto::identity::{Receipt as Body, Signed, IDENTITY_VERSION};
    let dir = TempDir::new().unwrap();
    let (store, _join) = open(&dir);
    let (origin, receiver) = (key(1), key(2));
    let id = alert(1, T0, "red").id();
    let signed = |acked: Option<(u64, &str)>| {
        let body = Body {
            v: IDENTITY_VERSION,
            alert: id,
            origin: PublicKey(origin.verifying_key().to_bytes()),
            receiver: PublicKey(receiver.verifying_key().to_bytes()),
            received_at: T0,
            acked_at: acked.map(|a| a.0),
            acked_by: acked.map(|a| a.1.to_string()),
        };
        Signed::sign(body, &receiver).unwrap()
    };
    assert!(store.put_receipt_in(&signed(None), None).unwrap());
    assert!(
        !store.put_receipt_in(&signed(None), None).unwrap(),
        "a repeat changes nothing"
    );
    assert!(store
        .put_receipt_in(&signed(Some((T0 + 5, "duty"))), Some(PublicKey([7; 32])))
        .unwrap());
    assert!(
        !store.put_receipt_in(&signed(None), None).unwrap(),
        "a late delivery receipt"
    );
    let held = store.receipts_in(&id).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0.acked_by.as_deref(), Some("duty"));
    assert_eq!(
        held[0].1,
        Some(PublicKey([7; 32])),
        "the receiver's org is kept"
    );
    // The outbox: what was signed for an origin, newest first, from a time on.
    let o = PublicKey(origin.verifying_key().to_bytes());
    store.put_receipt_out(&signed(None), 100).unwrap();
    assert_eq!(store.receipts_out_since(&o, 100, 10).unwrap().len(), 1);
    assert!(store.receipts_out_since(&o, 101, 10).unwrap().is_empty());
    assert!(store
        .receipts_out_since(&PublicKey([9; 32]), 0, 10)
        .unwrap()
        .is_empty());
    // Deadlines: due once, then reported.
    store.set_ack_deadline(&id, T0).unwrap();
    assert!(store.ack_deadlines_due(T0 - 1).unwrap().is_empty());
    assert_eq!(store.ack_deadlines_due(T0).unwrap(), vec![(id, T0)]);
    store.ack_deadline_reported(&id).unwrap();
    assert!(store.ack_deadlines_due(T0 + 1).unwrap().is_empty());
    assert_eq!(store.ack_deadline(&id).unwrap(), Some((T0, true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sightings_keep_each_observer_s_newest_and_at_most_so_many_observers_per_alert() {
    use super::receipts::MAX_SIGHTINGS_PER_ALERT;
    use tocsin_proto::identity::{Sighting, Signed, IDENTITY_VERSION};
    let dir = TempDir::new().unwrap();
    let (store, _join) = open(&dir);
    let id = alert(1, T0, "clear").id();
    let signed = |observer: &SigningKey, last_seen: u64| {
        let body = Sighting {
            v: IDENTITY_VERSION,
            alert: Some(id),
            indicator: None,
            observer: PublicKey(observer.verifying_key().to_bytes()),
            count: 1,
            first_seen: T0,
            last_seen,
            note: String::new(),
        };
        Signed::sign(body, observer).unwrap()
    };
    let observer = |n: u32| {
        let mut seed = [3u8; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        SigningKey::from_bytes(&seed)
    };
    for n in 0..MAX_SIGHTINGS_PER_ALERT as u32 {
        assert!(store
            .put_sighting(&signed(&observer(n), T0), true, None)
            .unwrap());
    }
    // One unknown observer more is not kept, but a known one is; a held observer's
    // newer sighting still replaces its row, an older one does not.
    let extra = observer(MAX_SIGHTINGS_PER_ALERT as u32);
    assert!(!store.put_sighting(&signed(&extra, T0), true, None).unwrap());
    assert!(store
        .put_sighting(&signed(&extra, T0), false, None)
        .unwrap());
    assert!(store
        .put_sighting(&signed(&observer(0), T0 + 5), true, None)
        .unwrap());
    assert!(!store
        .put_sighting(&signed(&observer(0), T0 + 1), true, None)
        .unwrap());
    let held = store.sightings_of(&id).unwrap();
    assert_eq!(held.len(), MAX_SIGHTINGS_PER_ALERT + 1);
    assert!(held.iter().any(|s| s.last_seen == T0 + 5));
}
