//! A reference model of the alert store, and a checker that compares a real [`Store`]
//! with it. Shared by the model-based property test (`store_model.rs`) and the crash
//! test (`store_crash.rs`).
//!
//! The model is a few maps and the rules of `node/src/store/mod.rs` ("Alert state")
//! written as directly as possible: alerts by id with their seq, the append log, and the
//! replacement edges (an update or cancel naming an id), which live while their target
//! or their replacer is stored.

use std::collections::{BTreeMap, BTreeSet};

use tempfile::TempDir;
use tocsin_node::store::{AlertState, Insert, Query, Receipt, Store};
use tocsin_proto::{
    AlertBody, AlertId, Indicator, IndicatorType, Kind, PublicKey, Severity, SignedAlert,
    SigningKey, Tlp, FORMAT_VERSION,
};

/// A replacement edge: (rank: 1 update / 2 cancel, replacer's issued_at, replacer id,
/// replacer origin).
type Edge = (u8, u64, AlertId, PublicKey);

#[derive(Debug, Default, Clone)]
pub struct Model {
    alerts: BTreeMap<AlertId, (u64, SignedAlert)>,
    log: Vec<(u64, AlertId)>,
    edges: BTreeMap<AlertId, BTreeSet<Edge>>,
}

fn rank(kind: Kind) -> u8 {
    match kind {
        Kind::New => 0,
        Kind::Update => 1,
        Kind::Cancel => 2,
    }
}

impl Model {
    pub fn head(&self) -> u64 {
        self.log.last().map_or(0, |(s, _)| *s)
    }

    pub fn insert(&mut self, a: &SignedAlert) -> Insert {
        let id = a.id();
        if let Some((seq, _)) = self.alerts.get(&id) {
            return Insert::Duplicate { seq: *seq };
        }
        let seq = self.head() + 1;
        self.alerts.insert(id, (seq, a.clone()));
        self.log.push((seq, id));
        let b = a.body();
        if let (r @ 1.., Some(target)) = (rank(b.kind), b.replaces) {
            self.edges
                .entry(target)
                .or_default()
                .insert((r, b.issued_at, id, b.origin));
        }
        Insert::Inserted { seq }
    }

    /// Deletes alerts with `expires_at < before_ms`; returns how many.
    pub fn prune(&mut self, before_ms: u64) -> usize {
        let doomed: Vec<AlertId> = self
            .alerts
            .iter()
            .filter(|(_, (_, a))| a.body().expires_at.is_some_and(|e| e < before_ms))
            .map(|(id, _)| *id)
            .collect();
        for id in &doomed {
            self.alerts.remove(id);
        }
        // Edges whose target and replacer are both gone go too.
        let alerts = &self.alerts;
        self.edges.retain(|target, set| {
            set.retain(|(_, _, replacer, _)| {
                alerts.contains_key(target) || alerts.contains_key(replacer)
            });
            !set.is_empty()
        });
        doomed.len()
    }

    /// The state of a stored alert at time `now`, and the replacement that decided it.
    pub fn state(&self, id: &AlertId, now: u64) -> Option<(AlertState, Option<AlertId>)> {
        let (_, a) = self.alerts.get(id)?;
        let b = a.body();
        let winner = self
            .edges
            .get(id)
            .into_iter()
            .flatten()
            .filter(|(_, _, _, origin)| *origin == b.origin)
            .max();
        Some(match winner {
            Some((2, _, by, _)) => (AlertState::Cancelled, Some(*by)),
            Some((_, _, by, _)) => (AlertState::Superseded, Some(*by)),
            None if b.expires_at.is_some_and(|e| e <= now) => (AlertState::Expired, None),
            None => (AlertState::Active, None),
        })
    }

    /// The ids a query should return, newest first (issued_at, then id, descending).
    pub fn query(&self, q: &Query, now: u64) -> Vec<AlertId> {
        let mut hits: Vec<(u64, AlertId)> = self
            .alerts
            .iter()
            .filter(|(id, (_, a))| {
                let b = a.body();
                let lower = |s: &str| s.trim().to_lowercase();
                q.since.is_none_or(|s| b.issued_at >= s)
                    && q.until.is_none_or(|u| b.issued_at < u)
                    && q.origin.is_none_or(|o| b.origin == o)
                    && q.min_severity.is_none_or(|s| b.severity >= s)
                    && q.tlp.is_none_or(|t| b.tlp == t)
                    && q.state
                        .is_none_or(|s| self.state(id, now).map(|(st, _)| st) == Some(s))
                    && q.tag
                        .as_deref()
                        .is_none_or(|t| b.tags.iter().any(|x| lower(x) == lower(t)))
                    && q.indicator
                        .as_deref()
                        .is_none_or(|v| b.indicators.iter().any(|i| i.value == v))
                    && q.text.as_deref().is_none_or(|t| {
                        let t = t.to_lowercase();
                        b.title.to_lowercase().contains(&t) || b.text.to_lowercase().contains(&t)
                    })
            })
            .map(|(id, (_, a))| (a.body().issued_at, *id))
            .collect();
        hits.sort_unstable_by(|x, y| y.cmp(x));
        hits.into_iter().map(|(_, id)| id).collect()
    }

    /// Compares everything a user can read from `store` with the model: each of
    /// `ids` (present or absent, seq, bytes, state, replacement), the totals, the log,
    /// and `queries`, each read in full and in pages of two.
    pub fn check(&self, store: &Store, ids: &[AlertId], queries: &[Query]) -> Result<(), String> {
        let now = tocsin_node::now_ms();
        for id in ids {
            let got = store.get(id).map_err(|e| format!("get {id:?}: {e}"))?;
            match (got, self.alerts.get(id)) {
                (None, None) => {}
                (Some(s), Some((seq, a))) => {
                    if s.seq != *seq || s.alert.to_envelope() != a.to_envelope() {
                        return Err(format!(
                            "{id:?}: stored seq {} (model {seq}), bytes equal: {}",
                            s.seq,
                            s.alert.to_envelope() == a.to_envelope()
                        ));
                    }
                    let want = self.state(id, now);
                    if Some((s.state, s.replaced_by)) != want {
                        return Err(format!(
                            "{id:?}: state {:?} replaced by {:?}, model {want:?}",
                            s.state, s.replaced_by
                        ));
                    }
                }
                (got, want) => {
                    return Err(format!(
                        "{id:?}: stored {}, model {}",
                        got.is_some(),
                        want.is_some()
                    ))
                }
            }
        }
        let counts = store.counts().map_err(|e| e.to_string())?;
        let active = self
            .alerts
            .keys()
            .filter(|id| self.state(id, now).map(|(s, _)| s) == Some(AlertState::Active))
            .count() as u64;
        let want = (self.alerts.len() as u64, active, self.head());
        if (counts.alerts, counts.active, counts.head) != want {
            return Err(format!(
                "counts (alerts, active, head) = ({}, {}, {}), model {want:?}",
                counts.alerts, counts.active, counts.head
            ));
        }
        // The log lists stored alerts only, each at its own seq: pruned ones keep their
        // seq but are skipped, and one stored again is listed at its new seq only.
        let log = store.log_after(0, usize::MAX).map_err(|e| e.to_string())?;
        let want: Vec<(u64, AlertId)> = self
            .log
            .iter()
            .filter(|(seq, id)| self.alerts.get(id).is_some_and(|(s, _)| s == seq))
            .copied()
            .collect();
        if log != want {
            return Err(format!("log {log:?}, model {want:?}"));
        }
        for q in queries {
            let want = self.query(q, now);
            // In full (pages of the maximum size), then in small pages.
            for page in [1000, if want.len() <= 100 { 2 } else { 37 }] {
                let got = collect(store, q, page)?;
                if got != want {
                    return Err(format!(
                        "query {q:?} in pages of {page}: got {got:?}, model {want:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Every result of `q`, read in pages of `page`.
fn collect(store: &Store, q: &Query, page: usize) -> Result<Vec<AlertId>, String> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let p = store
            .query(&Query {
                limit: Some(page),
                cursor,
                ..q.clone()
            })
            .map_err(|e| format!("{q:?}: {e}"))?;
        if p.alerts.is_empty() && p.next.is_some() {
            return Err(format!("{q:?}: an empty page with a cursor"));
        }
        out.extend(p.alerts.iter().map(|a| a.alert.id()));
        match p.next {
            Some(n) => cursor = Some(n),
            None => return Ok(out),
        }
    }
}

/// Queries that exercise every index and filter, for alerts from origins 1–3 issued
/// from `t0` on, tagged `phishing`/`ransomware`, with the indicator `evil.example` and
/// the word "LockBit" in some texts.
pub fn queries(t0: u64) -> Vec<Query> {
    let q = Query::default;
    vec![
        q(),
        Query {
            origin: Some(key(1)),
            ..q()
        },
        Query {
            origin: Some(key(2)),
            since: Some(t0 + 20),
            until: Some(t0 + 70),
            ..q()
        },
        Query {
            min_severity: Some(Severity::High),
            ..q()
        },
        Query {
            tlp: Some(Tlp::Green),
            ..q()
        },
        Query {
            tag: Some("PHISHING".into()),
            ..q()
        },
        Query {
            tag: Some("ransomware".into()),
            state: Some(AlertState::Active),
            ..q()
        },
        Query {
            indicator: Some("evil.example".into()),
            ..q()
        },
        Query {
            text: Some("lockbit".into()),
            ..q()
        },
        Query {
            state: Some(AlertState::Cancelled),
            ..q()
        },
        Query {
            state: Some(AlertState::Superseded),
            ..q()
        },
        Query {
            state: Some(AlertState::Expired),
            ..q()
        },
    ]
}

/// The signing key of origin `n`.
pub fn origin_key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// The public key of origin `n`.
pub fn key(n: u8) -> PublicKey {
    PublicKey(origin_key(n).verifying_key().to_bytes())
}

/// A valid body from origin `n`, issued at `issued_at`, with neutral defaults: new,
/// medium, GREEN, no expiry, recipients, tags, indicators or text.
pub fn body(n: u8, issued_at: u64) -> AlertBody {
    AlertBody {
        v: FORMAT_VERSION,
        origin: key(n),
        issued_at,
        expires_at: None,
        kind: Kind::New,
        replaces: None,
        severity: Severity::Medium,
        tlp: Tlp::Green,
        recipients: vec![],
        title: format!("Alert {issued_at} from origin {n}"),
        text: String::new(),
        indicators: vec![],
        tags: vec![],
        references: vec![],
    }
}

/// A valid alert from origin `n`: [`body`] after `edit` changed it.
pub fn alert(n: u8, issued_at: u64, edit: impl FnOnce(&mut AlertBody)) -> SignedAlert {
    let mut b = body(n, issued_at);
    edit(&mut b);
    // The bodies built by the tests are valid; an invalid one is a bug in the test.
    #[allow(clippy::expect_used)]
    SignedAlert::sign(b, &origin_key(n)).expect("a valid test alert")
}

/// An update or cancel from origin `n` naming `target`.
pub fn replacing(n: u8, issued_at: u64, kind: Kind, target: AlertId) -> SignedAlert {
    alert(n, issued_at, |b| {
        b.kind = kind;
        b.replaces = Some(target);
    })
}

/// An indicator of a valid type and value.
pub fn indicator(kind: IndicatorType, value: &str) -> Indicator {
    #[allow(clippy::expect_used)]
    Indicator::new(kind, value).expect("a valid test indicator")
}

// ---- Scenarios: a fixed pool of alerts and steps over it ----

pub const T0: u64 = 1_700_000_000_000;
/// Long past: alerts expiring here are expired, and pruned by `Prune(1)`.
const PAST: u64 = T0 + 100;
/// Far future (2096): expired never, pruned only by `Prune(2)`.
const FUTURE: u64 = 4_000_000_000_000;
/// `prune_expired` thresholds: none, the PAST ones, everything that expires.
pub const PRUNE_BEFORE: [u64; 3] = [T0 + 50, T0 + 150, FUTURE + 1];

/// A fixed set of alerts whose relations (updates, cancels, other-origin replacements,
/// a replacement of a replacement, expiring replacers) cover the store's state rules.
pub fn pool() -> Vec<SignedAlert> {
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
pub enum Op {
    Insert(usize),
    /// One `insert_many` call (may hold the same alert twice).
    InsertMany(Vec<usize>),
    /// `prune_expired(PRUNE_BEFORE[i])`.
    Prune(usize),
    /// Drop the store, wait for its writer, open the file again.
    Reopen,
}

fn receipt() -> Receipt {
    Receipt {
        received_at: T0,
        from: None,
        hops: 0,
    }
}

pub async fn run(ops: Vec<Op>, pool: &[SignedAlert]) -> Result<(), String> {
    let dir = TempDir::new().map_err(|e| e.to_string())?;
    let path = dir.path().join("store.redb");
    let (mut store, mut join) = Store::open(&path).map_err(|e| e.to_string())?;
    let mut model = Model::default();
    let ids: Vec<AlertId> = pool.iter().map(|a| a.id()).collect();
    // The store takes only verified alerts, as the engine hands them over.
    let verified = pool
        .iter()
        .map(|a| a.clone().verify())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let queries = queries(T0);
    for (step, op) in ops.into_iter().enumerate() {
        match &op {
            Op::Insert(i) => {
                let got = store
                    .insert(verified[*i].clone(), receipt())
                    .await
                    .map_err(|e| e.to_string())?;
                let want = model.insert(&pool[*i]);
                if got != want {
                    return Err(format!("step {step} {op:?}: {got:?}, model {want:?}"));
                }
            }
            Op::InsertMany(is) => {
                let items = is
                    .iter()
                    .map(|i| (verified[*i].clone(), receipt()))
                    .collect();
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

/// Decodes fuzzer bytes into at most 64 steps over a pool of `pool_len` alerts: the top
/// three bits of a byte choose the step, the rest its argument; a batch takes its
/// indices from the following bytes.
pub fn ops_from_bytes(bytes: &[u8], pool_len: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut it = bytes.iter().copied();
    while let Some(b) = it.next() {
        if ops.len() == 64 {
            break;
        }
        let arg = usize::from(b & 0x1f);
        ops.push(match b >> 5 {
            0..=3 => Op::Insert(arg % pool_len),
            4 | 5 => Op::InsertMany(
                it.by_ref()
                    .take(arg % 5 + 1)
                    .map(|i| usize::from(i) % pool_len)
                    .collect(),
            ),
            6 => Op::Prune(arg % PRUNE_BEFORE.len()),
            _ => Op::Reopen,
        });
    }
    ops.retain(|op| !matches!(op, Op::InsertMany(v) if v.is_empty()));
    ops
}
