//! A damaged database file never panics the node: crafted damage (a flipped byte in one
//! alert, a file cut short, bytes flipped near the header) either opens, with damaged
//! records quarantined, or fails with an error that names the file.
// Helpers, not only `#[test]` functions, may unwrap (see store.rs).
#![cfg(test)]

#[allow(dead_code)]
mod model;

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use tocsin_node::engine::{Action, Engine, EngineConfig, Event};
use tocsin_node::net::StoredAlerts;
use tocsin_node::store::{Insert, Query, Receipt, RedbCheck, Store, StoreError};
use tocsin_proto::{AlertBody, Frame, PublicKey, SignedAlert, TrustLevel};

const T0: u64 = 1_700_000_000_000;
/// The title of the alert whose stored bytes get damaged.
const MARK: &[u8] = b"DAMAGE-ME-0123456789";

fn alert(n: u64, title: &str) -> SignedAlert {
    let body = AlertBody {
        title: title.into(),
        ..model::body(1, T0 + n)
    };
    SignedAlert::sign(body, &model::origin_key(1)).unwrap()
}

fn local() -> Receipt {
    Receipt {
        received_at: T0,
        from: None,
        hops: 0,
    }
}

/// A closed database with `n` alerts, the one at index 3 titled [`MARK`].
async fn filled(dir: &TempDir, n: u64) -> (PathBuf, Vec<SignedAlert>) {
    let path = dir.path().join("store.redb");
    let alerts: Vec<SignedAlert> = (0..n)
        .map(|i| {
            if i == 3 {
                alert(i, std::str::from_utf8(MARK).unwrap())
            } else {
                alert(i, &format!("alert {i}"))
            }
        })
        .collect();
    let (store, join) = Store::open(&path).unwrap();
    let items = alerts
        .iter()
        .map(|a| (a.clone().verify().unwrap(), local()))
        .collect();
    store.insert_many(items).await.unwrap();
    drop(store);
    join.await.unwrap();
    (path, alerts)
}

/// Changes one byte of every copy of [`MARK`] in the file.
fn flip_mark(path: &Path) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let mut hits = 0;
    let mut at = 0;
    while let Some(pos) = bytes[at..].windows(MARK.len()).position(|w| w == MARK) {
        bytes[at + pos] ^= 0x20;
        hits += 1;
        at += pos + MARK.len();
    }
    std::fs::write(path, bytes).unwrap();
    hits
}

#[tokio::test]
async fn a_flipped_byte_in_one_alert_is_quarantined_and_the_rest_are_served() {
    let dir = TempDir::new().unwrap();
    let (path, alerts) = filled(&dir, 40).await;
    assert!(flip_mark(&path) >= 1, "the marked title is in the file");
    let damaged = alerts[3].id();

    // The offline check names the damaged record.
    let report = Store::check(&path).unwrap();
    assert_eq!(report.alerts, 40);
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].0, damaged);
    // redb's page checksums see it too.
    assert!(matches!(report.redb, RedbCheck::Failed(_)), "{report:?}");

    // Start-up's check keeps every other alert and moves the damaged one aside.
    let (store, join) = Store::open(&path).unwrap();
    let scan = store.scan(&PublicKey([0; 32])).unwrap();
    assert_eq!(scan.alerts, 39);
    let meta = store.all_meta().unwrap();
    assert_eq!(meta.len(), 39);
    assert!(meta.iter().all(|m| m.alert.id != damaged));
    let counts = store.counts().unwrap();
    assert_eq!((counts.alerts, counts.quarantined), (39, 1));
    assert!(store.get(&damaged).unwrap().is_none());
    let page = store
        .query(&Query {
            limit: Some(100),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(page.alerts.len(), 39, "queries skip the quarantined record");
    // A peer can send it back: it is stored again, with a new sequence number.
    let back = store
        .insert(alerts[3].clone().verify().unwrap(), local())
        .await
        .unwrap();
    assert!(matches!(back, Insert::Inserted { seq: 41 }), "{back:?}");
    assert_eq!(store.get(&damaged).unwrap().unwrap().alert.id(), damaged);
    drop(store);
    join.await.unwrap();

    let report = Store::check(&path).unwrap();
    assert!(report.damaged.is_empty(), "{report:?}");
    assert_eq!(report.quarantined, 1);
}

/// Before start-up's check reaches a damaged record (it runs in the background), a
/// peer's valid copy of that alert replaces it: it is stored anew, at a new sequence
/// number, and the check then finds nothing to quarantine. The log lists the alert once,
/// at its new place; its old entry reads as no longer stored.
#[tokio::test]
async fn a_damaged_alert_not_yet_checked_is_replaced_by_a_valid_copy() {
    let dir = TempDir::new().unwrap();
    let (path, alerts) = filled(&dir, 40).await;
    assert!(flip_mark(&path) >= 1, "the marked title is in the file");
    let damaged = alerts[3].id();
    let (store, join) = Store::open(&path).unwrap();
    assert!(store.contains(&damaged).unwrap(), "the record is there");
    assert!(
        matches!(store.meta(&damaged), Err(StoreError::Corrupt { .. })),
        "and does not decode"
    );
    // An engine reading the store takes it as not held, and goes past it: a catch-up
    // page lists the 39 others and says the log ends there.
    let me = PublicKey([0; 32]);
    let mut engine = Engine::new(me, store.epoch(), EngineConfig::default());
    engine.set_cold(Box::new(StoredAlerts::new(store.clone(), me)));
    let peer = model::key(7);
    engine.load_trust(peer, TrustLevel::Member);
    let now = T0 + 1_000_000;
    engine.handle(Event::PeerConnected(peer), now);
    let request = Frame::SyncRequest {
        epoch: store.epoch(),
        after: 0,
    };
    let bytes = request.encode().unwrap();
    let out = engine.handle(Event::Frame { peer, bytes }, now);
    let page = out.into_iter().find_map(|a| match a {
        Action::Send {
            frame: Frame::SyncPage {
                ids, next, done, ..
            },
            ..
        } => Some((ids.len(), next, done)),
        _ => None,
    });
    assert_eq!(page, Some((39, 40, true)));
    // The engine holds the store (its writer ends when every handle is dropped).
    drop(engine);
    let back = store
        .insert(alerts[3].clone().verify().unwrap(), local())
        .await
        .unwrap();
    assert!(matches!(back, Insert::Inserted { seq: 41 }), "{back:?}");
    assert_eq!(store.meta(&damaged).unwrap().unwrap().0.id, damaged);
    let rows = store.log_rows(0, 100).unwrap();
    assert_eq!(rows.len(), 41);
    assert_eq!(rows[3], (4, None), "its old entry");
    assert_eq!(rows[40], (41, Some(damaged)), "its new one");
    assert_eq!(rows.iter().filter(|(_, id)| id.is_some()).count(), 40);
    // A page of rows counts the dead entry too.
    assert_eq!(
        store.log_rows(2, 2).unwrap(),
        vec![(3, Some(alerts[2].id())), (4, None)]
    );
    let scan = store.scan(&PublicKey([0; 32])).unwrap();
    assert_eq!(scan.alerts, 40);
    let counts = store.counts().unwrap();
    assert_eq!((counts.alerts, counts.quarantined), (40, 0));
    drop(store);
    join.await.unwrap();
    let report = Store::check(&path).unwrap();
    assert!(report.damaged.is_empty(), "{report:?}");
}

/// Opens the file and checks every record as the daemon does at start-up.
async fn start_up(path: &Path) -> Result<usize, StoreError> {
    let (store, join) = Store::open(path)?;
    let loaded = store.scan(&PublicKey([0; 32])).map(|s| s.alerts);
    drop(store);
    let _ = join.await;
    loaded
}

#[tokio::test]
async fn cut_or_scrambled_files_give_an_error_naming_the_file_never_a_panic() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 4] = [
        ("truncated to half", |b| b.truncate(b.len() / 2)),
        ("last 4 KiB cut", |b| {
            b.truncate(b.len().saturating_sub(4096))
        }),
        ("16 bytes flipped near the header", |b| {
            for x in &mut b[64..80] {
                *x ^= 0xff;
            }
        }),
        ("every byte after the first page flipped", |b| {
            for x in &mut b[4096..] {
                *x ^= 0x55;
            }
        }),
    ];
    for (what, damage) in damages {
        let dir = TempDir::new().unwrap();
        let (path, _) = filled(&dir, 300).await;
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        // Ok (redb repaired it, perhaps losing alerts) or an error: never a panic,
        // which would fail this test.
        match start_up(&path).await {
            Ok(n) => assert!(n <= 300, "{what}: {n}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.is_empty(), "{what}");
                if let StoreError::Damaged { .. } = e {
                    assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
                    assert!(msg.contains("backup"), "{what}: says what to do: {msg}");
                }
            }
        }
        // The offline check does not panic either.
        let _ = Store::check(&path);
    }
}
