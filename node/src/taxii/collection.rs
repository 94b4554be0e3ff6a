//! What a TAXII collection holds, and how it is paged.
//!
//! A collection is the node's append log seen through a TLP filter. Each log entry adds
//! the STIX objects of one alert version (`tocsin_proto::stix::version_objects`, the
//! same mapping as `tocsin export`), preceded by its origin's identity:
//!
//! - a new alert or an update adds its report version and its indicators and
//!   vulnerabilities;
//! - an update or a cancel adds the revoked versions of the indicators and
//!   vulnerabilities of the version it replaces (the first replacement does);
//! - a cancel of the chain's last version also adds the report's revoked version.
//!
//! Every entry has a `date_added` (the store's `added` time, unix µs, strictly
//! increasing along the log), so `added_after` and `next` both name a place in the log
//! exactly: a client that pages on, or polls with the last `date_added` it saw, misses
//! nothing however alerts arrive meanwhile. `next` is `<date_added µs>.<objects of that
//! entry already returned>`.

use std::collections::HashSet;

use serde_json::Value;
use tocsin_proto::stix::{self, Version};
use tocsin_proto::{AlertId, Kind, Tlp};

use crate::store::{Store, StoreError, StoredAlert, MAX_PAGE_BYTES};

/// Log entries looked at per request at most: a page may hold fewer objects than asked
/// (even none, with `more`), so that a client whose filter matches little cannot make
/// one request walk the whole log.
pub const MAX_SCAN: usize = 2_000;
/// Entries read per store call while filling a page.
const READ_BATCH: usize = 256;

/// One STIX object of a collection, with where its version stands.
#[derive(Debug, Clone)]
pub struct Obj {
    /// The object.
    pub value: Value,
    /// Its `id`.
    pub id: String,
    /// Its `modified` (its version).
    pub modified: String,
    /// Its first version in the collection.
    pub first: bool,
    /// Its latest version in the collection.
    pub last: bool,
}

impl Obj {
    fn new(value: Value, first: bool, last: bool) -> Obj {
        let id = value["id"].as_str().unwrap_or_default().to_string();
        let modified = value["modified"].as_str().unwrap_or_default().to_string();
        Obj {
            value,
            id,
            modified,
            first,
            last,
        }
    }

    /// The STIX `type`.
    pub fn kind(&self) -> &str {
        self.id.split("--").next().unwrap_or_default()
    }
}

/// Which TLP labels a request may see: those of its collection, up to its client's
/// ceiling.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// The labels the collection holds.
    pub labels: &'static [Tlp],
    /// The client's ceiling.
    pub ceiling: Tlp,
}

impl Scope {
    fn holds(&self, tlp: Tlp) -> bool {
        tlp <= self.ceiling && self.labels.contains(&tlp)
    }
}

/// The `match[…]` filters of a request.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `match[id]`: any of these ids (all when empty).
    pub ids: Vec<String>,
    /// `match[type]`: any of these types (all when empty).
    pub types: Vec<String>,
    /// `match[version]`: `first`, `last`, `all` or `modified` timestamps (ms).
    /// Default: `last`.
    pub versions: Vec<VersionMatch>,
    /// `match[spec_version]` names only versions other than 2.1.
    pub no_spec_version: bool,
}

/// One `match[version]` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionMatch {
    /// Every version.
    All,
    /// The first version of each object.
    First,
    /// The latest version of each object.
    Last,
    /// The version modified at this time (unix ms).
    At(u64),
}

impl Filter {
    fn admits(&self, o: &Obj) -> bool {
        if self.no_spec_version {
            return false;
        }
        if !self.ids.is_empty() && !self.ids.contains(&o.id) {
            return false;
        }
        if !self.types.is_empty() && !self.types.iter().any(|t| t == o.kind()) {
            return false;
        }
        let versions: &[VersionMatch] = if self.versions.is_empty() {
            &[VersionMatch::Last]
        } else {
            &self.versions
        };
        versions.iter().any(|v| match v {
            VersionMatch::All => true,
            VersionMatch::First => o.first,
            VersionMatch::Last => o.last,
            VersionMatch::At(ms) => stix::parse_timestamp(&o.modified) == Some(*ms),
        })
    }
}

/// Where a page starts: the entry added at `us` (inclusive), after `skip` of its
/// objects. The start of the collection is `(0, 0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The entry's `date_added`, unix µs.
    pub us: u64,
    /// Its objects already returned.
    pub skip: usize,
}

impl Cursor {
    /// The page after everything added at or before `us` (`added_after`).
    pub fn after(us: u64) -> Cursor {
        Cursor {
            us: us.saturating_add(1),
            skip: 0,
        }
    }

    /// Reads a `next` token.
    pub fn parse(token: &str) -> Option<Cursor> {
        let (us, skip) = token.split_once('.')?;
        Some(Cursor {
            us: us.parse().ok()?,
            skip: skip.parse().ok()?,
        })
    }

    /// The `next` token.
    pub fn token(&self) -> String {
        format!("{}.{}", self.us, self.skip)
    }
}

/// One page: its objects with their `date_added` (µs), and where the next starts.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The objects, each with its entry's `date_added`.
    pub objects: Vec<(u64, Obj)>,
    /// Where to go on, when there may be more.
    pub next: Option<Cursor>,
}

/// Up to `limit` objects of the collection from `from`, in log order. An object version
/// appears once per page (an origin's identity comes with each of its alerts).
pub fn page(
    store: &Store,
    scope: Scope,
    filter: &Filter,
    from: Cursor,
    limit: usize,
) -> Result<Page, StoreError> {
    let mut page = Page::default();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut scanned = 0usize;
    let mut bytes = 0usize;
    let mut at = from;
    loop {
        let entries = store.added_after(at.us.saturating_sub(1), READ_BATCH)?;
        if entries.is_empty() {
            return Ok(page);
        }
        for (us, stored) in entries {
            let skip = if us == at.us { at.skip } else { 0 };
            let objects = entry_objects(store, &stored, scope)?;
            for (i, o) in objects.into_iter().enumerate().skip(skip) {
                if !filter.admits(&o) || !seen.insert((o.id.clone(), o.modified.clone())) {
                    continue;
                }
                if page.objects.len() >= limit {
                    page.next = Some(Cursor { us, skip: i });
                    return Ok(page);
                }
                page.objects.push((us, o));
            }
            scanned += 1;
            bytes = bytes.saturating_add(stored.alert.body_bytes().len());
            at = Cursor {
                us: us.saturating_add(1),
                skip: 0,
            };
            if scanned >= MAX_SCAN || page.objects.len() >= limit || bytes >= MAX_PAGE_BYTES {
                // More may follow: say so if anything was added after this entry.
                if !store.added_after(us, 1)?.is_empty() {
                    page.next = Some(at);
                }
                return Ok(page);
            }
        }
    }
}

/// The STIX 2.1 bundle of one stored alert's version, as a collection holding every
/// label has it (for webhooks with `format = "stix2.1"`): Tocsin's identity, the
/// extension definition and the TLP marking, then the entry's objects. `None` when the
/// entry adds nothing (a cancel of an alert not held).
pub fn bundle_of(store: &Store, stored: &StoredAlert) -> Result<Option<Value>, StoreError> {
    let all = Scope {
        labels: &Tlp::ALL,
        ceiling: Tlp::Red,
    };
    let objects = entry_objects(store, stored, all)?;
    let Some(marking) = objects
        .iter()
        .find_map(|o| o.value["object_marking_refs"][0].as_str())
        .and_then(stix::tlp_of_marking)
    else {
        return Ok(None);
    };
    let mut out = stix::shared_objects();
    out.push(stix::tlp_marking(marking));
    out.extend(objects.into_iter().map(|o| o.value));
    let id = stix::uuid_of(&format!("webhook:{}", stored.alert.id()));
    Ok(Some(serde_json::json!({
        "type": "bundle",
        "id": format!("bundle--{id}"),
        "objects": out,
    })))
}

/// The objects one log entry adds to a collection of `scope` (none if the collection
/// does not hold it).
pub fn entry_objects(
    store: &Store,
    stored: &StoredAlert,
    scope: Scope,
) -> Result<Vec<Obj>, StoreError> {
    let alert = &stored.alert;
    let body = alert.body();
    let mut out = Vec::new();
    let sig = hex::encode(alert.signature());
    let Some(target_id) = body.replaces else {
        if scope.holds(body.tlp) {
            push_version(&mut out, stored, &sig, &[]);
        }
        return Ok(out);
    };
    // An update or a cancel: what it ends of the version it replaces (only one of the
    // same origin: another origin's replacement names nothing of ours).
    let chain = store.history(&target_id)?;
    let target = chain
        .iter()
        .find(|a| a.alert.id() == target_id)
        .filter(|t| t.alert.body().origin == body.origin);
    if body.kind == Kind::Update && scope.holds(body.tlp) {
        // An update of nothing held here, or of another origin's alert, is a chain of
        // its own (its own report id).
        let own_chain: &[StoredAlert] = if target.is_some() { &chain } else { &[] };
        push_version(&mut out, stored, &sig, own_chain);
    }
    let ends = target.filter(|t| {
        let tb = t.alert.body();
        tb.kind != Kind::Cancel && scope.holds(tb.tlp) && body.tlp <= scope.ceiling
    });
    let Some(t) = ends else {
        return Ok(out);
    };
    // Only the first replacement of a version ends it (a second cancel must not
    // revoke anything again): its indicators, and, for a cancel of the chain's latest
    // version, the report. A cancel of an older branch (one of ours that came back
    // after a newer version) leaves the report to the newer version.
    let first = replacements(&chain, &target_id, &body.origin)
        .first()
        .map(|r| r.2)
        == Some(alert.id());
    if !first {
        return Ok(out);
    }
    let tb = t.alert.body();
    let report = body.kind == Kind::Cancel && is_latest(&chain, t);
    let tsig = hex::encode(t.alert.signature());
    let version = Version {
        id: target_id,
        body: tb,
        sig: &tsig,
        root: root_of(&chain, &target_id, tb),
        revoked_at: report.then_some(body.issued_at),
        replaced_at: Some(body.issued_at),
    };
    if out.is_empty() {
        out.push(Obj::new(stix::origin_identity(&tb.origin), true, true));
    }
    for (i, o) in stix::version_objects(&version).into_iter().enumerate() {
        if i > 0 || report {
            out.push(Obj::new(o, false, true));
        }
    }
    Ok(out)
}

/// The origin's identity, then the objects of a new alert or an update (whose `chain`
/// is given) as it was issued: its report version (the first for a new alert; the last
/// while nothing replaced it) and its own indicators and vulnerabilities (current while
/// nothing replaced it).
fn push_version(out: &mut Vec<Obj>, stored: &StoredAlert, sig: &str, chain: &[StoredAlert]) {
    let id = stored.alert.id();
    let body = stored.alert.body();
    let version = Version {
        id,
        body,
        sig,
        root: root_of(chain, &id, body),
        revoked_at: None,
        replaced_at: None,
    };
    let current = stored.replaced_by.is_none();
    out.push(Obj::new(stix::origin_identity(&body.origin), true, true));
    for (i, o) in stix::version_objects(&version).into_iter().enumerate() {
        let first = i > 0 || body.kind == Kind::New;
        out.push(Obj::new(o, first, current));
    }
}

/// The updates and cancels by `origin` that replace `id` in its chain, earliest first:
/// (issued at, kind, id).
fn replacements(
    chain: &[StoredAlert],
    id: &AlertId,
    origin: &tocsin_proto::PublicKey,
) -> Vec<(u64, Kind, AlertId)> {
    let mut out: Vec<(u64, Kind, AlertId)> = chain
        .iter()
        .map(|a| a.alert.body())
        .zip(chain.iter().map(|a| a.alert.id()))
        .filter(|(b, _)| b.replaces == Some(*id) && b.origin == *origin)
        .map(|(b, rid)| (b.issued_at, b.kind, rid))
        .collect();
    out.sort_by_key(|r| (r.0, r.2));
    out
}

/// Whether `version` is the latest new alert or update of its `chain` (by issue time,
/// then id): the one whose cancel ends the report.
fn is_latest(chain: &[StoredAlert], version: &StoredAlert) -> bool {
    let key = |a: &StoredAlert| (a.alert.body().issued_at, a.alert.id());
    let origin = version.alert.body().origin;
    !chain.iter().any(|a| {
        let b = a.alert.body();
        b.kind != Kind::Cancel && b.origin == origin && key(a) > key(version)
    })
}

/// The first alert of `id`'s chain and when it was issued.
fn root_of(chain: &[StoredAlert], id: &AlertId, body: &tocsin_proto::AlertBody) -> (AlertId, u64) {
    if body.kind == Kind::New {
        return (*id, body.issued_at);
    }
    chain
        .first()
        .map(|f| (f.alert.id(), f.alert.body().issued_at))
        .unwrap_or((*id, body.issued_at))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tempfile::TempDir;
    use tocsin_proto::{SignedAlert, SigningKey};

    use super::*;
    use crate::engine::tests::body;
    use crate::store::Receipt;

    const ALL: Scope = Scope {
        labels: &Tlp::ALL,
        ceiling: Tlp::Red,
    };

    /// `b` as `key` signs it, replacing `target` with `kind` at `at`, stored.
    async fn put(
        s: &Store,
        key: &SigningKey,
        target: Option<&SignedAlert>,
        kind: Kind,
        at: u64,
    ) -> SignedAlert {
        let mut b = body(key, at, Tlp::Green, vec![]);
        b.indicators = vec![tocsin_proto::Indicator::new(
            tocsin_proto::IndicatorType::Domain,
            format!("v{at}.example"),
        )
        .unwrap()];
        if let Some(t) = target {
            b.kind = kind;
            b.replaces = Some(t.id());
        }
        let a = SignedAlert::sign(b, key).unwrap();
        let r = Receipt {
            received_at: 1,
            from: None,
            hops: 0,
        };
        s.insert(a.clone().verify().unwrap(), r).await.unwrap();
        a
    }

    /// What the entry of `a` adds: (type, revoked) of each alert object.
    fn adds(s: &Store, a: &SignedAlert) -> Vec<(String, bool)> {
        let stored = s.get(&a.id()).unwrap().unwrap();
        entry_objects(s, &stored, ALL)
            .unwrap()
            .into_iter()
            .filter(|o| o.kind() != "identity")
            .map(|o| (o.kind().to_string(), o.value["revoked"] == true))
            .collect()
    }

    fn strs(v: &[(&str, bool)]) -> Vec<(String, bool)> {
        v.iter().map(|(k, r)| (k.to_string(), *r)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_first_cancel_of_the_latest_version_revokes_the_report() {
        let dir = TempDir::new().unwrap();
        let (s, _w) = Store::open(&dir.path().join("t.redb")).unwrap();
        let (o, x) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let a = put(&s, &o, None, Kind::New, 10).await;
        // A branch (an update of ours lost and given back) and the newer version.
        let branch = put(&s, &o, Some(&a), Kind::Update, 20).await;
        let newer = put(&s, &o, Some(&a), Kind::Update, 30).await;
        // Cancelling the older branch ends its indicator, not the report.
        let c1 = put(&s, &o, Some(&branch), Kind::Cancel, 40).await;
        assert_eq!(adds(&s, &c1), strs(&[("indicator", true)]));
        // A second cancel of it adds nothing.
        let c2 = put(&s, &o, Some(&branch), Kind::Cancel, 50).await;
        assert_eq!(adds(&s, &c2), vec![]);
        // The newer version's cancel revokes the report and its indicator.
        let c3 = put(&s, &o, Some(&newer), Kind::Cancel, 60).await;
        assert_eq!(
            adds(&s, &c3),
            strs(&[("report", true), ("indicator", true)])
        );
        // Another origin's update of our alert is a report of its own, and ends
        // nothing of ours.
        let foreign = put(&s, &x, Some(&a), Kind::Update, 70).await;
        let objects = entry_objects(&s, &s.get(&foreign.id()).unwrap().unwrap(), ALL).unwrap();
        let report = objects.iter().find(|o| o.kind() == "report").unwrap();
        assert_eq!(report.id, stix::report_id(&foreign.id()));
        assert!(objects.iter().all(|o| o.value["revoked"] != true));
    }

    #[test]
    fn next_tokens_read_back_and_refuse_garbage() {
        let c = Cursor {
            us: 1_767_225_600_123_456,
            skip: 3,
        };
        assert_eq!(Cursor::parse(&c.token()), Some(c));
        assert_eq!(Cursor::after(5), Cursor { us: 6, skip: 0 });
        for bad in ["", "12", "x.1", "1.x", "1.2.3", "-1.0"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
