//! What a TAXII collection holds, and how it is paged.
//!
//! A collection is the node's append log seen through a TLP filter. Each log entry adds
//! the STIX objects of one alert version (`tocsin_proto::stix::version_objects`, the
//! same mapping as `tocsin export`), preceded by its origin's identity:
//!
//! - a new alert or an update adds its report version and its indicators and
//!   vulnerabilities;
//! - a cancel adds the revoked versions of what it cancels.
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
    match body.kind {
        Kind::New | Kind::Update => {
            if !scope.holds(body.tlp) {
                return Ok(out);
            }
            let id = alert.id();
            let root = root_of(store, &id, body.issued_at, body.kind)?;
            let cancelled = match stored.replaced_by {
                Some(r) => store
                    .get(&r)?
                    .is_some_and(|c| c.alert.body().kind == Kind::Cancel),
                None => false,
            };
            let version = Version {
                id,
                body,
                sig: &sig,
                root,
                revoked_at: None,
            };
            out.push(Obj::new(stix::origin_identity(&body.origin), true, true));
            for (i, o) in stix::version_objects(&version).into_iter().enumerate() {
                if i == 0 {
                    // The report: one version per alert of its chain.
                    out.push(Obj::new(
                        o,
                        body.kind == Kind::New,
                        stored.replaced_by.is_none(),
                    ));
                } else {
                    // Indicators and vulnerabilities are this alert's own; a cancel
                    // adds their revoked versions.
                    out.push(Obj::new(o, true, !cancelled));
                }
            }
        }
        Kind::Cancel => {
            let Some(target_id) = body.replaces else {
                return Ok(out);
            };
            let Some(target) = store.get(&target_id)? else {
                return Ok(out);
            };
            let t = target.alert.body();
            if t.origin != body.origin
                || t.kind == Kind::Cancel
                || !scope.holds(t.tlp)
                || body.tlp > scope.ceiling
            {
                return Ok(out);
            }
            let tsig = hex::encode(target.alert.signature());
            let root = root_of(store, &target_id, t.issued_at, t.kind)?;
            let version = Version {
                id: target_id,
                body: t,
                sig: &tsig,
                root,
                revoked_at: Some(body.issued_at),
            };
            out.push(Obj::new(stix::origin_identity(&t.origin), true, true));
            for o in stix::version_objects(&version) {
                out.push(Obj::new(o, false, true));
            }
        }
    }
    Ok(out)
}

/// The first alert of `id`'s chain and when it was issued.
fn root_of(
    store: &Store,
    id: &AlertId,
    issued_at: u64,
    kind: Kind,
) -> Result<(AlertId, u64), StoreError> {
    if kind == Kind::New {
        return Ok((*id, issued_at));
    }
    Ok(store
        .history(id)?
        .first()
        .map(|f| (f.alert.id(), f.alert.body().issued_at))
        .unwrap_or((*id, issued_at)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
