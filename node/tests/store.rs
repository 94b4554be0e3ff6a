//! Tests of the redb store: queries and paging, alert state, durability across reopen,
//! group commit, pruning and the federation state tables.
// Helpers, not only `#[test]` functions, may unwrap: clippy's allow-*-in-tests applies
// inside `cfg(test)`, which this marks (an integration test is always built with it).
#![cfg(test)]

// The reference model's alert builders; its model and scenarios serve other tests.
#[allow(dead_code)]
mod model;

use std::collections::HashSet;
use std::path::PathBuf;

use tempfile::TempDir;
use tocsin_node::store::{
    AlertState, AuditRecord, Insert, Query, Receipt, Store, StoreError, StoredAlert, TrustCommit,
    TrustEntry, MAX_PAGE_BYTES, SCHEMA_VERSION,
};
use tocsin_proto::{
    AlertBody, AlertId, Indicator, IndicatorType, Kind, PublicKey, Severity, SignedAlert,
    SigningKey, Tlp, TrustLevel, VerifiedAlert,
};
use tokio::task::JoinHandle;

const T0: u64 = 1_700_000_000_000;

fn key(n: u8) -> SigningKey {
    model::origin_key(n)
}

fn pk(n: u8) -> PublicKey {
    model::key(n)
}

/// A valid body from origin `n` with neutral defaults and this title.
fn body(n: u8, issued_at: u64, title: &str) -> AlertBody {
    AlertBody {
        title: title.into(),
        ..model::body(n, issued_at)
    }
}

/// Signed and verified: the store takes only verified alerts, as the engine hands them.
fn sign(n: u8, b: AlertBody) -> VerifiedAlert {
    SignedAlert::sign(b, &key(n)).unwrap().verify().unwrap()
}

fn alert(n: u8, issued_at: u64, title: &str) -> VerifiedAlert {
    sign(n, body(n, issued_at, title))
}

/// An update or cancel signed by origin `n` that names `target`.
fn replacing(n: u8, kind: Kind, target: &SignedAlert, issued_at: u64) -> VerifiedAlert {
    let mut b = body(n, issued_at, "replacement");
    b.kind = kind;
    b.replaces = Some(target.id());
    sign(n, b)
}

fn local() -> Receipt {
    Receipt {
        received_at: T0,
        from: None,
        hops: 0,
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("store.redb")
}

fn open(dir: &TempDir) -> (Store, JoinHandle<()>) {
    Store::open(&db_path(dir)).unwrap()
}

/// Drops the store and waits for the writer, so the file can be opened again.
async fn close(store: Store, join: JoinHandle<()>) {
    drop(store);
    join.await.unwrap();
}

async fn put(store: &Store, a: &VerifiedAlert) -> u64 {
    match store.insert(a.clone(), local()).await.unwrap() {
        Insert::Inserted { seq } => seq,
        other => panic!("expected a new insert of {:?}, got {other:?}", a.id()),
    }
}

fn ids(alerts: &[StoredAlert]) -> Vec<AlertId> {
    alerts.iter().map(|a| a.alert.id()).collect()
}

fn state(store: &Store, a: &SignedAlert) -> (AlertState, Option<AlertId>) {
    let s = store.get(&a.id()).unwrap().unwrap();
    (s.state, s.replaced_by)
}

#[tokio::test]
async fn each_query_filter_selects_exactly_the_matching_alerts() {
    let dir = TempDir::new().unwrap();
    let (store, _join) = open(&dir);

    let mut b = body(1, T0 + 1, "Phishing wave against banks");
    b.severity = Severity::Critical;
    b.tlp = Tlp::Red;
    b.recipients = vec![pk(9)];
    b.tags = vec!["Phishing".into(), "bank".into()];
    b.indicators = vec![Indicator::new(IndicatorType::Ipv4, "203.0.113.7").unwrap()];
    let a1 = sign(1, b);

    let mut b = body(1, T0 + 2, "Encryptor seen in the wild");
    b.severity = Severity::Low;
    b.tlp = Tlp::Clear;
    b.tags = vec!["ransomware".into()];
    b.text = "Operators linked to LockBit.".into();
    b.indicators = vec![Indicator::new(IndicatorType::Domain, "evil.example").unwrap()];
    let a2 = sign(1, b);

    let mut b = body(2, T0 + 3, "Credential harvesting");
    b.severity = Severity::High;
    b.tlp = Tlp::Amber;
    b.tags = vec!["phishing".into()];
    b.indicators = vec![
        Indicator::new(IndicatorType::Domain, "evil.example").unwrap(),
        Indicator::new(IndicatorType::Sha256, "ab".repeat(32)).unwrap(),
    ];
    let a3 = sign(2, b);

    let mut b = body(2, T0 + 4, "Scanning activity");
    b.severity = Severity::Info;
    b.expires_at = Some(T0 + 5); // long past: Expired
    let a4 = sign(2, b);

    let mut b = body(3, T0 + 5, "Ransomware note found");
    b.tags = vec!["ransomware".into()];
    let a5 = sign(3, b);

    // Cancels a2 (same origin).
    let mut b = body(1, T0 + 6, "Retracted: encryptor");
    b.kind = Kind::Cancel;
    b.replaces = Some(a2.id());
    b.severity = Severity::Low;
    b.tlp = Tlp::Clear;
    let a6 = sign(1, b);

    let mut b = body(2, T0 + 7, "Exploited vulnerability");
    b.severity = Severity::High;
    b.tlp = Tlp::AmberStrict;
    b.indicators = vec![Indicator::new(IndicatorType::Cve, "CVE-2024-12345").unwrap()];
    let a7 = sign(2, b);

    for a in [&a1, &a2, &a3, &a4, &a5, &a6, &a7] {
        put(&store, a).await;
    }

    let run = |q: Query| ids(&store.query(&q).unwrap().alerts);
    let id = |a: &SignedAlert| a.id();

    assert_eq!(
        run(Query::default()),
        vec![
            id(&a7),
            id(&a6),
            id(&a5),
            id(&a4),
            id(&a3),
            id(&a2),
            id(&a1)
        ]
    );
    assert_eq!(
        run(Query {
            origin: Some(pk(1)),
            ..Query::default()
        }),
        vec![id(&a6), id(&a2), id(&a1)]
    );
    assert_eq!(
        run(Query {
            origin: Some(pk(4)),
            ..Query::default()
        }),
        vec![]
    );
    assert_eq!(
        run(Query {
            min_severity: Some(Severity::High),
            ..Query::default()
        }),
        vec![id(&a7), id(&a3), id(&a1)]
    );
    assert_eq!(
        run(Query {
            min_severity: Some(Severity::Critical),
            ..Query::default()
        }),
        vec![id(&a1)]
    );
    assert_eq!(
        run(Query {
            min_severity: Some(Severity::Info),
            ..Query::default()
        })
        .len(),
        7
    );
    assert_eq!(
        run(Query {
            tlp: Some(Tlp::Green),
            ..Query::default()
        }),
        vec![id(&a5), id(&a4)]
    );
    assert_eq!(
        run(Query {
            tlp: Some(Tlp::AmberStrict),
            ..Query::default()
        }),
        vec![id(&a7)]
    );
    // Tags match case-insensitively.
    assert_eq!(
        run(Query {
            tag: Some("PHISHING".into()),
            ..Query::default()
        }),
        vec![id(&a3), id(&a1)]
    );
    assert_eq!(
        run(Query {
            tag: Some("bank".into()),
            ..Query::default()
        }),
        vec![id(&a1)]
    );
    // Indicators match exactly, whatever their type.
    assert_eq!(
        run(Query {
            indicator: Some("evil.example".into()),
            ..Query::default()
        }),
        vec![id(&a3), id(&a2)]
    );
    assert_eq!(
        run(Query {
            indicator: Some("CVE-2024-12345".into()),
            ..Query::default()
        }),
        vec![id(&a7)]
    );
    assert_eq!(
        run(Query {
            indicator: Some("evil".into()),
            ..Query::default()
        }),
        vec![]
    );
    // Text: case-insensitive substring of the title or the text.
    assert_eq!(
        run(Query {
            text: Some("lockbit".into()),
            ..Query::default()
        }),
        vec![id(&a2)]
    );
    assert_eq!(
        run(Query {
            text: Some("RANSOMWARE".into()),
            ..Query::default()
        }),
        vec![id(&a5)]
    );
    // State.
    assert_eq!(
        run(Query {
            state: Some(AlertState::Cancelled),
            ..Query::default()
        }),
        vec![id(&a2)]
    );
    assert_eq!(
        run(Query {
            state: Some(AlertState::Expired),
            ..Query::default()
        }),
        vec![id(&a4)]
    );
    assert_eq!(
        run(Query {
            state: Some(AlertState::Active),
            ..Query::default()
        }),
        vec![id(&a7), id(&a6), id(&a5), id(&a3), id(&a1)]
    );
    assert_eq!(
        run(Query {
            state: Some(AlertState::Superseded),
            ..Query::default()
        }),
        vec![]
    );
    // Time range: since inclusive, until exclusive.
    assert_eq!(
        run(Query {
            since: Some(T0 + 3),
            until: Some(T0 + 6),
            ..Query::default()
        }),
        vec![id(&a5), id(&a4), id(&a3)]
    );
    assert_eq!(
        run(Query {
            since: Some(T0 + 6),
            until: Some(T0 + 6),
            ..Query::default()
        }),
        vec![]
    );
    // Several filters at once.
    assert_eq!(
        run(Query {
            origin: Some(pk(2)),
            min_severity: Some(Severity::High),
            ..Query::default()
        }),
        vec![id(&a7), id(&a3)]
    );
    assert_eq!(
        run(Query {
            tag: Some("ransomware".into()),
            state: Some(AlertState::Active),
            ..Query::default()
        }),
        vec![id(&a5)]
    );
    assert_eq!(
        run(Query {
            indicator: Some("evil.example".into()),
            origin: Some(pk(1)),
            since: Some(T0 + 1),
            until: Some(T0 + 3),
            ..Query::default()
        }),
        vec![id(&a2)]
    );

    // Bad queries are refused with a message naming the field.
    let err = store
        .query(&Query {
            limit: Some(0),
            ..Query::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    let err = store
        .query(&Query {
            cursor: Some("not-a-cursor".into()),
            ..Query::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidQuery(_)), "{err}");
    assert!(err.to_string().contains("cursor"), "{err}");
}

/// Pages through `q` with `limit`, returning every id in page order.
fn page_all(store: &Store, q: &Query, limit: usize) -> Vec<AlertId> {
    let mut q = q.clone();
    q.limit = Some(limit);
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.query(&q).unwrap();
        pages += 1;
        assert!(page.alerts.len() <= limit);
        out.extend(ids(&page.alerts));
        match page.next {
            Some(c) => {
                let bytes: usize = page.alerts.iter().map(|a| a.alert.body_bytes().len()).sum();
                assert!(
                    page.alerts.len() == limit
                        || bytes + tocsin_proto::limits::MAX_ENVELOPE_BYTES > MAX_PAGE_BYTES,
                    "only pages full by count or by bytes have a next cursor ({} alerts, {bytes} bytes)",
                    page.alerts.len()
                );
                q.cursor = Some(c);
            }
            None => break,
        }
        assert!(pages < 1000, "paging does not end");
    }
    out
}

/// A page of large alerts ends by bytes, well before its count: 1,000 alerts of 32 KB
/// would take tens of MiB per request. Paging still returns every alert once, in order.
#[tokio::test]
async fn a_page_of_large_alerts_ends_by_bytes_and_paging_loses_nothing() {
    let dir = TempDir::new().unwrap();
    let (store, _join) = open(&dir);
    let big = "x".repeat(tocsin_proto::limits::MAX_TEXT_BYTES - 100);
    let all: Vec<VerifiedAlert> = (0..80u64)
        .map(|i| {
            let mut b = body(1, T0 + i, &format!("large {i}"));
            b.text = big.clone();
            sign(1, b)
        })
        .collect();
    let items = all.iter().map(|a| (a.clone(), local())).collect();
    store.insert_many(items).await.unwrap();
    let first = store
        .query(&Query {
            limit: Some(1000),
            ..Query::default()
        })
        .unwrap();
    let bytes: usize = first
        .alerts
        .iter()
        .map(|a| a.alert.body_bytes().len())
        .sum();
    assert!(bytes <= MAX_PAGE_BYTES, "{bytes} bytes in one page");
    assert!(
        first.alerts.len() < 80 && first.next.is_some(),
        "{} alerts",
        first.alerts.len()
    );
    let got = page_all(&store, &Query::default(), 1000);
    let mut expected: Vec<AlertId> = all.iter().rev().map(|a| a.id()).collect();
    expected.dedup();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn limit_and_cursor_page_through_everything_without_duplicates_or_gaps() {
    let dir = TempDir::new().unwrap();
    let (store, _join) = open(&dir);
    // Three alerts share each issued_at, so the id tie-break matters.
    let mut all = Vec::new();
    for i in 0..250u64 {
        let n = (i % 3) as u8 + 1;
        let mut b = body(n, T0 + i / 3, &format!("alert {i}"));
        if i % 5 == 0 {
            b.tags = vec!["fifth".into()];
        }
        all.push(sign(n, b));
    }
    let items = all.iter().map(|a| (a.clone(), local())).collect();
    store.insert_many(items).await.unwrap();

    let mut expected: Vec<(u64, AlertId)> =
        all.iter().map(|a| (a.body().issued_at, a.id())).collect();
    expected.sort();
    expected.reverse();
    let expected: Vec<AlertId> = expected.into_iter().map(|(_, id)| id).collect();

    for limit in [1, 7, 100, 250, 1000] {
        let got = page_all(&store, &Query::default(), limit);
        assert_eq!(got.len(), 250, "limit {limit}");
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 250, "duplicates");
        assert_eq!(got, expected, "limit {limit}");
    }
    // The default page is 100.
    let first = store.query(&Query::default()).unwrap();
    assert_eq!(first.alerts.len(), 100);
    assert!(first.next.is_some());

    // Paging a filtered query (index walk) gives the filtered list, in order.
    let q = Query {
        origin: Some(pk(2)),
        ..Query::default()
    };
    let want: Vec<AlertId> = expected
        .iter()
        .copied()
        .filter(|id| all.iter().any(|a| a.id() == *id && a.origin() == pk(2)))
        .collect();
    assert_eq!(page_all(&store, &q, 9), want);
    // Several origins (an agency's nodes): their alerts merged newest first, paged.
    let q = Query {
        origins: vec![pk(1), pk(3)],
        ..Query::default()
    };
    let want: Vec<AlertId> = expected
        .iter()
        .copied()
        .filter(|id| all.iter().any(|a| a.id() == *id && a.origin() != pk(2)))
        .collect();
    for limit in [1, 9, 1000] {
        assert_eq!(page_all(&store, &q, limit), want, "limit {limit}");
    }
    let q = Query {
        tag: Some("fifth".into()),
        since: Some(T0 + 10),
        ..Query::default()
    };
    let want: Vec<AlertId> = expected
        .iter()
        .copied()
        .filter(|id| {
            all.iter().any(|a| {
                a.id() == *id && !a.body().tags.is_empty() && a.body().issued_at >= T0 + 10
            })
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(page_all(&store, &q, 4), want);
    // A text filter (scan) pages the same way.
    let q = Query {
        text: Some("ALERT 1".into()),
        ..Query::default()
    };
    let want: Vec<AlertId> = expected
        .iter()
        .copied()
        .filter(|id| {
            all.iter()
                .any(|a| a.id() == *id && a.body().title.starts_with("alert 1"))
        })
        .collect();
    assert_eq!(page_all(&store, &q, 6), want);
}

#[tokio::test]
async fn updates_and_cancels_from_the_origin_set_the_state_in_any_order() {
    let dir = TempDir::new().unwrap();
    let (store, _join) = open(&dir);

    // Update, then cancel.
    let x = alert(1, T0, "original");
    let u = replacing(1, Kind::Update, &x, T0 + 10);
    let c = replacing(1, Kind::Cancel, &x, T0 + 20);
    put(&store, &x).await;
    assert_eq!(state(&store, &x), (AlertState::Active, None));
    put(&store, &u).await;
    assert_eq!(state(&store, &x), (AlertState::Superseded, Some(u.id())));
    assert_eq!(state(&store, &u), (AlertState::Active, None));
    put(&store, &c).await;
    assert_eq!(state(&store, &x), (AlertState::Cancelled, Some(c.id())));

    // Cancel stored before the alert it cancels.
    let y = alert(1, T0 + 30, "late original");
    let cy = replacing(1, Kind::Cancel, &y, T0 + 40);
    put(&store, &cy).await;
    assert_eq!(store.get(&y.id()).unwrap().map(|s| s.seq), None);
    let y_seq = put(&store, &y).await;
    assert_eq!(state(&store, &y), (AlertState::Cancelled, Some(cy.id())));

    // Duplicates change nothing and never revive.
    assert_eq!(
        store.insert(y.clone(), local()).await.unwrap(),
        Insert::Duplicate { seq: y_seq }
    );
    assert_eq!(state(&store, &y), (AlertState::Cancelled, Some(cy.id())));
    assert!(matches!(
        store.insert(x.clone(), local()).await.unwrap(),
        Insert::Duplicate { .. }
    ));
    assert_eq!(state(&store, &x), (AlertState::Cancelled, Some(c.id())));
    // An update arriving after the cancel does not win over it.
    let late = replacing(1, Kind::Update, &x, T0 + 50);
    put(&store, &late).await;
    assert_eq!(state(&store, &x), (AlertState::Cancelled, Some(c.id())));

    // A cancel or update from another origin has no effect, before or after.
    let z = alert(1, T0 + 60, "someone else's target");
    let foreign_cancel = replacing(2, Kind::Cancel, &z, T0 + 70);
    let foreign_update = replacing(3, Kind::Update, &z, T0 + 71);
    put(&store, &foreign_cancel).await;
    put(&store, &z).await;
    put(&store, &foreign_update).await;
    assert_eq!(state(&store, &z), (AlertState::Active, None));
    assert_eq!(ids(&store.history(&z.id()).unwrap()), vec![z.id()]);

    // History: the alert, what replaced it and what it replaced, by issued_at.
    let chain = vec![x.id(), u.id(), c.id(), late.id()];
    assert_eq!(ids(&store.history(&x.id()).unwrap()), chain);
    assert_eq!(ids(&store.history(&u.id()).unwrap()), chain);
    assert_eq!(ids(&store.history(&c.id()).unwrap()), chain);
    assert_eq!(ids(&store.history(&y.id()).unwrap()), vec![y.id(), cy.id()]);
    assert!(store
        .history(&alert(1, 1, "never stored").id())
        .unwrap()
        .is_empty());

    // Chains of updates.
    let v1 = alert(4, T0 + 100, "v1");
    let v2 = replacing(4, Kind::Update, &v1, T0 + 200);
    let v3 = replacing(4, Kind::Update, &v2, T0 + 300);
    // Out of order on purpose.
    put(&store, &v3).await;
    put(&store, &v1).await;
    put(&store, &v2).await;
    assert_eq!(state(&store, &v1), (AlertState::Superseded, Some(v2.id())));
    assert_eq!(state(&store, &v2), (AlertState::Superseded, Some(v3.id())));
    assert_eq!(state(&store, &v3), (AlertState::Active, None));
    let h = store.history(&v2.id()).unwrap();
    assert_eq!(ids(&h), vec![v1.id(), v2.id(), v3.id()]);
    assert_eq!(
        h.iter().map(|s| s.state).collect::<Vec<_>>(),
        vec![
            AlertState::Superseded,
            AlertState::Superseded,
            AlertState::Active
        ]
    );

    // Counts agree: cancelled x and y, superseded v1 and v2, the other 8 active.
    let counts = store.counts().unwrap();
    assert_eq!((counts.alerts, counts.active, counts.head), (12, 8, 12));
}

#[tokio::test]
async fn cancel_wins_whatever_the_arrival_order() {
    let x = alert(1, T0, "target");
    let u = replacing(1, Kind::Update, &x, T0 + 1);
    let c = replacing(1, Kind::Cancel, &x, T0 + 2);
    let orders: [[&VerifiedAlert; 3]; 6] = [
        [&x, &u, &c],
        [&x, &c, &u],
        [&u, &x, &c],
        [&u, &c, &x],
        [&c, &x, &u],
        [&c, &u, &x],
    ];
    for order in orders {
        let dir = TempDir::new().unwrap();
        let (store, join) = open(&dir);
        for a in order {
            put(&store, a).await;
        }
        assert_eq!(state(&store, &x), (AlertState::Cancelled, Some(c.id())));
        close(store, join).await;
    }
}

#[tokio::test]
async fn reopen_keeps_everything_and_the_log_continues() {
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    let epoch = store.epoch();
    assert_ne!(epoch, 0);
    assert_eq!(store.head().unwrap(), 0);
    let alerts: Vec<VerifiedAlert> = (0..10)
        .map(|i| alert(1, T0 + i, &format!("alert {i}")))
        .collect();
    let mut seqs = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        let receipt = Receipt {
            received_at: T0 + 1000 + i as u64,
            from: Some(pk(7)),
            hops: i as u8,
        };
        seqs.push(store.insert(a.clone(), receipt).await.unwrap().seq());
    }
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    let cancel = replacing(1, Kind::Cancel, &alerts[3], T0 + 50);
    put(&store, &cancel).await;
    close(store, join).await;

    let (store, join) = open(&dir);
    assert_eq!(store.epoch(), epoch);
    assert_eq!(store.head().unwrap(), 11);
    for (i, a) in alerts.iter().enumerate() {
        let s = store.get(&a.id()).unwrap().unwrap();
        assert_eq!(s.seq, i as u64 + 1);
        assert_eq!(s.alert.body_bytes(), a.body_bytes());
        assert_eq!(
            s.receipt,
            Receipt {
                received_at: T0 + 1000 + i as u64,
                from: Some(pk(7)),
                hops: i as u8,
            }
        );
        assert_eq!(store.envelope(&a.id()).unwrap(), Some(a.to_envelope()));
        assert!(store.contains(&a.id()).unwrap());
    }
    assert_eq!(
        state(&store, &alerts[3]),
        (AlertState::Cancelled, Some(cancel.id()))
    );
    let next = alert(2, T0 + 99, "after reopen");
    assert_eq!(put(&store, &next).await, 12);
    let log = store.log_after(0, 100).unwrap();
    assert_eq!(log.len(), 12);
    assert_eq!(log.last(), Some(&(12, next.id())));
    assert_eq!(store.log_after(10, 1).unwrap(), vec![(11, cancel.id())]);
    close(store, join).await;

    // Only one process (or Store) may have the file open.
    let (store, join) = open(&dir);
    let err = Store::open(&db_path(&dir)).unwrap_err();
    assert!(
        err.to_string()
            .contains(&db_path(&dir).display().to_string()),
        "{err}"
    );
    close(store, join).await;
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_naming_both_versions() {
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    put(&store, &alert(1, T0, "kept")).await;
    close(store, join).await;

    // Write a newer version into the meta table, as a future build would.
    {
        let db = redb::Database::create(db_path(&dir)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let mut t = txn.open_table(meta).unwrap();
            t.insert("schema_version", u64::from(SCHEMA_VERSION) + 1)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let err = match Store::open(&db_path(&dir)) {
        Ok(_) => panic!("a newer schema version was accepted"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 2,
                supported: 1
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("schema version is 2"), "{msg}");
    assert!(msg.contains("schema version 1"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_500_concurrent_inserts() {
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    let mut events = store.subscribe();
    let alerts: Vec<VerifiedAlert> = (0..500)
        .map(|i| alert((i % 5) as u8 + 1, T0 + i, &format!("concurrent {i}")))
        .collect();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = alerts
        .iter()
        .cloned()
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move { store.insert(a, local()).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Insert::Inserted { seq } => seqs.push(seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    // One fsync each would take well over a second; batches take a handful.
    println!("500 concurrent inserts in {elapsed:?}");
    let distinct: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), 500);
    assert_eq!(distinct, (1..=500).collect::<HashSet<u64>>());

    // Notifications: every alert, after commit, in seq order.
    let mut seen = Vec::new();
    for _ in 0..500 {
        let ev = events.recv().await.unwrap();
        assert!(store.contains(&ev.id).unwrap());
        seen.push(ev.seq);
    }
    assert_eq!(seen, (1..=500).collect::<Vec<u64>>());
    close(store, join).await;

    let (store, join) = open(&dir);
    let counts = store.counts().unwrap();
    assert_eq!((counts.alerts, counts.active, counts.head), (500, 500, 500));
    for a in &alerts {
        assert!(store.contains(&a.id()).unwrap());
    }
    let meta = store.all_meta().unwrap();
    assert_eq!(
        meta.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=500).collect::<Vec<u64>>()
    );
    close(store, join).await;
}

#[tokio::test]
async fn insert_many_keeps_order_and_reports_duplicates() {
    let dir = TempDir::new().unwrap();
    let (store, _join) = open(&dir);
    let a = alert(1, T0, "a");
    let b = alert(2, T0, "b");
    put(&store, &a).await;
    let got = store
        .insert_many(vec![
            (b.clone(), local()),
            (a.clone(), local()),
            (b.clone(), local()),
        ])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Insert::Inserted { seq: 2 },
            Insert::Duplicate { seq: 1 },
            Insert::Duplicate { seq: 2 },
        ]
    );
    assert!(store.insert_many(vec![]).await.unwrap().is_empty());
    // More than one batch.
    let many: Vec<_> = (0..600)
        .map(|i| (alert(3, T0 + i, &format!("bulk {i}")), local()))
        .collect();
    let got = store.insert_many(many).await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.seq()).collect::<Vec<_>>(),
        (3..603).collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn metadata_log_and_counts() {
    let dir = TempDir::new().unwrap();
    let (store, _join) = open(&dir);
    let mut b = body(1, T0, "red one");
    b.tlp = Tlp::Red;
    b.recipients = vec![pk(5), pk(6)];
    b.expires_at = Some(u64::MAX - 1);
    let red = sign(1, b);
    let cancel = replacing(1, Kind::Cancel, &red, T0 + 1);
    let receipt = Receipt {
        received_at: 42,
        from: Some(pk(3)),
        hops: 2,
    };
    store.insert(red.clone(), receipt).await.unwrap();
    store.insert(cancel.clone(), local()).await.unwrap();

    let meta = store.all_meta().unwrap();
    assert_eq!(meta.len(), 2);
    assert_eq!(meta[0].seq, 1);
    assert_eq!(meta[0].alert.id, red.id());
    assert_eq!(meta[0].alert.origin, pk(1));
    assert_eq!(meta[0].alert.tlp, Tlp::Red);
    assert_eq!(meta[0].alert.recipients, vec![pk(5), pk(6)]);
    assert_eq!(meta[0].alert.expires_at, Some(u64::MAX - 1));
    assert_eq!(meta[0].alert.kind, Kind::New);
    assert_eq!(meta[0].receipt, receipt);
    assert_eq!(meta[1].alert.kind, Kind::Cancel);
    assert_eq!(meta[1].alert.replaces, Some(red.id()));

    assert_eq!(
        store.log_after(0, 10).unwrap(),
        vec![(1, red.id()), (2, cancel.id())]
    );
    assert_eq!(store.log_after(1, 10).unwrap(), vec![(2, cancel.id())]);
    assert!(store.log_after(2, 10).unwrap().is_empty());
    assert!(store.log_after(0, 0).unwrap().is_empty());
    assert!(store.log_after(u64::MAX, 10).unwrap().is_empty());
    let counts = store.counts().unwrap();
    assert_eq!((counts.alerts, counts.active, counts.head), (2, 1, 2));
}

/// The start-up scan names this node's own updates that came back from a peer (to
/// check each again), not those issued here or other origins'.
#[tokio::test]
async fn the_scan_names_our_own_updates_given_back_by_a_peer() {
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    let original = alert(1, T0, "original");
    put(&store, &original).await;
    let from_peer = Receipt {
        received_at: tocsin_node::now_ms(),
        from: Some(pk(2)),
        hops: 1,
    };
    let returned = replacing(1, Kind::Update, &original, T0 + 1);
    store.insert(returned.clone(), from_peer).await.unwrap();
    let issued_here = replacing(1, Kind::Update, &original, T0 + 2);
    put(&store, &issued_here).await;
    let others = alert(2, T0, "another origin's");
    store
        .insert(replacing(2, Kind::Update, &others, T0 + 3), from_peer)
        .await
        .unwrap();
    // Received a week ago or more: not listed.
    let old_original = alert(1, T0 + 10, "older");
    put(&store, &old_original).await;
    let long_ago = Receipt {
        received_at: T0,
        ..from_peer
    };
    store
        .insert(replacing(1, Kind::Update, &old_original, T0 + 11), long_ago)
        .await
        .unwrap();
    let scan = store.scan(&pk(1)).unwrap();
    let listed: Vec<AlertId> = scan.returned_updates.iter().map(|r| r.1).collect();
    assert_eq!(listed, vec![returned.id()]);
    assert_eq!(scan.alerts, 6);
    close(store, join).await;
}

/// A database put back from a copy (or whose start mark is lost) gets a new log
/// epoch, so that peers read its log again; a plain restart keeps the epoch.
#[tokio::test]
async fn a_database_put_back_from_a_copy_gets_a_new_epoch_and_a_restart_does_not() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let backup = dir.path().join("backup.redb");
    let (store, join) = open(&dir);
    let epoch = store.epoch();
    close(store, join).await;
    std::fs::copy(&path, &backup).unwrap();

    let (store, join) = open(&dir);
    assert_eq!(store.epoch(), epoch, "a restart keeps the epoch");
    for i in 0..3 {
        put(&store, &alert(1, T0 + i, "after the backup")).await;
    }
    close(store, join).await;

    // Copied back over the file in place (same inode): the mark still tells.
    std::fs::copy(&backup, &path).unwrap();
    let (store, join) = open(&dir);
    let restored = store.epoch();
    assert_ne!(restored, epoch, "a restored database keeps its epoch");
    assert_eq!(store.head().unwrap(), 0);
    close(store, join).await;
    let (store, join) = open(&dir);
    assert_eq!(
        store.epoch(),
        restored,
        "the next restart keeps the new epoch"
    );
    close(store, join).await;

    // The mark file lost, or a database moved in whole with its mark (a new file).
    std::fs::remove_file(tocsin_node::store::mark_path(&path)).unwrap();
    let (store, join) = open(&dir);
    let unmarked = store.epoch();
    assert_ne!(unmarked, restored);
    close(store, join).await;
    let mark = tocsin_node::store::mark_path(&path);
    let kept_mark = std::fs::read(&mark).unwrap();
    let moved = dir.path().join("moved.redb");
    std::fs::copy(&path, &moved).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(&moved, &path).unwrap();
    std::fs::write(&mark, kept_mark).unwrap();
    let (store, join) = open(&dir);
    assert_ne!(store.epoch(), unmarked, "another file under an old mark");
    close(store, join).await;
}

#[tokio::test]
async fn prune_removes_expired_alerts_but_keeps_seqs_and_cancellations() {
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    let expiring = |n: u8, t: u64, exp: u64, title: &str| {
        let mut b = body(n, t, title);
        b.expires_at = Some(exp);
        b.tags = vec!["prunable".into()];
        sign(n, b)
    };
    let old = expiring(1, T0, T0 + 100, "old");
    let newer = expiring(1, T0 + 1, u64::MAX - 1, "newer");
    let forever = alert(1, T0 + 2, "no expiry");
    // A cancel that expires before its (never expiring) target.
    let mut b = body(1, T0 + 3, "cancel");
    b.kind = Kind::Cancel;
    b.replaces = Some(forever.id());
    b.expires_at = Some(T0 + 200);
    let cancel = sign(1, b);
    for a in [&old, &newer, &forever, &cancel] {
        put(&store, a).await;
    }
    assert_eq!(store.counts().unwrap().active, 1);

    assert_eq!(
        store.prune_expired(T0 + 100).await.unwrap(),
        0,
        "strictly before"
    );
    assert_eq!(store.prune_expired(T0 + 1000).await.unwrap(), 2);
    assert!(!store.contains(&old.id()).unwrap());
    assert!(!store.contains(&cancel.id()).unwrap());
    assert!(store.contains(&newer.id()).unwrap());
    // The cancellation outlives the cancel.
    assert_eq!(
        state(&store, &forever),
        (AlertState::Cancelled, Some(cancel.id()))
    );
    // Index entries went with them.
    let q = Query {
        tag: Some("prunable".into()),
        ..Query::default()
    };
    assert_eq!(ids(&store.query(&q).unwrap().alerts), vec![newer.id()]);
    assert_eq!(store.query(&Query::default()).unwrap().alerts.len(), 2);
    // Seqs never move: the log skips pruned alerts, head stays.
    assert_eq!(store.head().unwrap(), 4);
    assert_eq!(
        store.log_after(0, 10).unwrap(),
        vec![(2, newer.id()), (3, forever.id())]
    );
    assert_eq!(store.log_after(0, 1).unwrap(), vec![(2, newer.id())]);
    let counts = store.counts().unwrap();
    assert_eq!((counts.alerts, counts.active, counts.head), (2, 1, 4));
    // A new alert continues after the head.
    assert_eq!(put(&store, &alert(2, T0, "next")).await, 5);
    // A late copy of the pruned cancel is stored again and still cancels.
    put(&store, &cancel).await;
    assert_eq!(
        state(&store, &forever),
        (AlertState::Cancelled, Some(cancel.id()))
    );
    close(store, join).await;
}

/// Receipts, sightings and the acknowledgement deadline kept for an alert go when the
/// alert is pruned; another alert's stay.
#[tokio::test]
async fn prune_removes_the_receipts_and_sightings_kept_for_the_alert() {
    use tocsin_proto::identity::{Receipt as Rcpt, Sighting, Signed, IDENTITY_VERSION};
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    let mut rows = Vec::new();
    for (n, exp) in [(1u8, T0 + 100), (2, u64::MAX - 1)] {
        let mut b = body(n, T0, "amber");
        b.expires_at = Some(exp);
        b.tlp = Tlp::Amber;
        let a = sign(n, b);
        put(&store, &a).await;
        let (id, origin) = (a.id(), pk(n));
        // Ours for it (signed by node 9), and one received for it (from node 8).
        let receipt = |by: u8| {
            Signed::sign(
                Rcpt {
                    v: IDENTITY_VERSION,
                    alert: id,
                    origin,
                    receiver: pk(by),
                    received_at: T0,
                    acked_at: None,
                    acked_by: None,
                },
                &key(by),
            )
            .unwrap()
        };
        let sighting = |by: u8| {
            Signed::sign(
                Sighting {
                    v: IDENTITY_VERSION,
                    alert: Some(id),
                    indicator: None,
                    observer: pk(by),
                    count: 1,
                    first_seen: T0,
                    last_seen: T0,
                    note: String::new(),
                },
                &key(by),
            )
            .unwrap()
        };
        store.put_receipt_out(&receipt(9), T0).unwrap();
        store.put_receipt_in(&receipt(8), None).unwrap();
        store
            .put_sighting(&sighting(9), false, Some(&origin))
            .unwrap();
        store.put_sighting(&sighting(8), false, None).unwrap();
        store.set_ack_deadline(&id, T0 + 50).unwrap();
        rows.push((id, origin));
    }
    let held = |(id, origin): (AlertId, PublicKey)| {
        (
            store.receipt_out(&origin, &id).unwrap().is_some(),
            store.receipts_out_since(&origin, 0, 10).unwrap().len(),
            store.receipts_in(&id).unwrap().len(),
            store.sightings_of(&id).unwrap().len(),
            store.sightings_out_since(&origin, 0, 10).unwrap().len(),
            store.ack_deadline(&id).unwrap().is_some(),
        )
    };
    assert_eq!(held(rows[0]), (true, 1, 1, 2, 1, true));
    assert_eq!(store.prune_expired(T0 + 1000).await.unwrap(), 1);
    assert_eq!(held(rows[0]), (false, 0, 0, 0, 0, false), "pruned alert");
    assert_eq!(held(rows[1]), (true, 1, 1, 2, 1, true), "held alert");
    close(store, join).await;
}

#[tokio::test]
async fn shutdown_commits_then_refuses_writes() {
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    let a = alert(1, T0, "before shutdown");
    let pending = {
        let store = store.clone();
        let a = a.clone();
        tokio::spawn(async move { store.insert(a, local()).await })
    };
    assert!(matches!(
        pending.await.unwrap().unwrap(),
        Insert::Inserted { seq: 1 }
    ));
    store.shutdown().await;
    join.await.unwrap();
    let err = store
        .insert(alert(1, T0 + 1, "after shutdown"), local())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err}");
    // Reads still work while the Store is alive.
    assert!(store.contains(&a.id()).unwrap());
    store.shutdown().await; // idempotent
}

#[tokio::test]
async fn cursors_trust_and_audit_round_trip_and_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let (store, join) = open(&dir);
    assert_eq!(store.cursor(&pk(1)).unwrap(), None);
    store.set_cursor(&pk(1), 7, 41).unwrap();
    store.set_cursor(&pk(1), 7, 42).unwrap();
    store.set_cursor(&pk(2), 9, 1).unwrap();
    assert_eq!(store.cursor(&pk(1)).unwrap(), Some((7, 42)));

    let e1 = TrustEntry {
        key: pk(1),
        level: TrustLevel::Member,
        name: "CERT-A".into(),
        addrs: vec!["/ip4/192.0.2.1/tcp/4001".into()],
        org: true,
    };
    let e2 = TrustEntry {
        key: pk(2),
        level: TrustLevel::Public,
        name: "CERT-B".into(),
        addrs: vec![],
        org: false,
    };
    let e3 = TrustEntry {
        key: pk(3),
        level: TrustLevel::Blocked,
        name: "bad".into(),
        addrs: vec![],
        org: false,
    };
    let rec = |at: u64, key: PublicKey, old, new, source: &str| AuditRecord {
        at,
        key,
        old,
        new,
        source: source.into(),
        who: "test".into(),
        name: None,
        addrs: None,
        org: None,
        reason: None,
    };
    let put = |e: &TrustEntry, audit: AuditRecord| TrustCommit {
        key: e.key,
        entry: Some(e.clone()),
        audit,
    };
    let e1b = TrustEntry {
        level: TrustLevel::Partner,
        ..e1.clone()
    };
    let records: Vec<AuditRecord> = vec![
        rec(1, pk(1), None, Some(TrustLevel::Member), "config"),
        rec(2, pk(2), None, Some(TrustLevel::Public), "config"),
        rec(3, pk(3), None, Some(TrustLevel::Blocked), "api"),
        rec(
            4,
            pk(1),
            Some(TrustLevel::Member),
            Some(TrustLevel::Partner),
            "api",
        ),
        rec(5, pk(2), Some(TrustLevel::Public), None, "api"),
        rec(6, pk(2), None, None, "api"),
    ];
    assert!(!store.commit_trust(&put(&e1, records[0].clone())).unwrap());
    assert!(!store.commit_trust(&put(&e2, records[1].clone())).unwrap());
    assert!(!store.commit_trust(&put(&e3, records[2].clone())).unwrap());
    assert!(store.commit_trust(&put(&e1b, records[3].clone())).unwrap());
    let remove = |audit: AuditRecord| TrustCommit {
        key: pk(2),
        entry: None,
        audit,
    };
    assert!(store.commit_trust(&remove(records[4].clone())).unwrap());
    assert!(!store.commit_trust(&remove(records[5].clone())).unwrap());
    let mut want = vec![e1b.clone(), e3.clone()];
    want.sort_by_key(|e| e.key);
    assert_eq!(store.trust_entries().unwrap(), want);
    assert_eq!(store.audit_log(10).unwrap(), records);
    assert_eq!(store.audit_log(2).unwrap(), records[4..].to_vec());
    assert!(store.audit_log(0).unwrap().is_empty());
    close(store, join).await;

    let (store, join) = open(&dir);
    assert_eq!(store.cursor(&pk(1)).unwrap(), Some((7, 42)));
    assert_eq!(store.cursor(&pk(2)).unwrap(), Some((9, 1)));
    assert_eq!(store.cursor(&pk(3)).unwrap(), None);
    assert_eq!(store.trust_entries().unwrap(), want);
    assert_eq!(store.audit_log(100).unwrap(), records);
    let more = rec(
        7,
        pk(3),
        Some(TrustLevel::Blocked),
        Some(TrustLevel::Public),
        "api",
    );
    let e3b = TrustEntry {
        level: TrustLevel::Public,
        ..e3.clone()
    };
    assert!(store.commit_trust(&put(&e3b, more.clone())).unwrap());
    assert_eq!(store.audit_log(1).unwrap(), vec![more]);
    close(store, join).await;
}

#[test]
fn open_outside_a_runtime_is_an_error_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let err = Store::open(&db_path(&dir)).unwrap_err();
    assert!(matches!(err, StoreError::NoRuntime), "{err}");
}
