//! Reads: loading alerts with their state, queries, history, the log and counts.

use std::collections::HashSet;
use std::ops::Bound;

use redb::{
    Database, ReadOnlyMultimapTable, ReadOnlyTable, ReadTransaction, ReadableTable,
    ReadableTableMetadata,
};
use tocsin_proto::{AlertId, AlertSummary, Kind, PublicKey, Severity, SignedAlert};

use super::schema::{
    self, AlertValue, EdgeValue, Index, StatusValue, ALERTS, LOG, REPLACED_BY, STATUS, SUFFIX_LEN,
};
use super::{
    AlertMeta, AlertState, Counts, Query, QueryPage, Receipt, StoreError, StoredAlert,
    DEFAULT_QUERY_LIMIT, MAX_PAGE_BYTES, MAX_QUERY_LIMIT,
};

/// Most alerts [`history`] collects: a chain longer than this is cut, not walked forever.
const MAX_HISTORY: usize = 1024;

/// The tables needed to load an alert with its state.
pub(super) struct ReadCtx {
    alerts: ReadOnlyTable<[u8; 32], AlertValue>,
    status: ReadOnlyTable<[u8; 32], StatusValue>,
    now: u64,
}

impl ReadCtx {
    pub(super) fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Ok(ReadCtx {
            alerts: txn.open_table(ALERTS)?,
            status: txn.open_table(STATUS)?,
            now: crate::now_ms(),
        })
    }

    /// The stored alert `id`, if any, with its state now.
    pub(super) fn load(&self, id: &[u8; 32]) -> Result<Option<StoredAlert>, StoreError> {
        let Some(rec) = self.alerts.get(id)? else {
            return Ok(None);
        };
        let (seq, receipt, envelope) = rec.value();
        let (alert, receipt) = schema::decode_record(id, receipt, envelope)?;
        let status = self.status.get(id)?.map(|g| g.value());
        let (state, replaced_by) = match status {
            Some((2, _, by)) => (AlertState::Cancelled, Some(AlertId(by))),
            Some((_, _, by)) => (AlertState::Superseded, Some(AlertId(by))),
            None if alert.body().is_expired(self.now) => (AlertState::Expired, None),
            None => (AlertState::Active, None),
        };
        Ok(Some(StoredAlert {
            seq,
            alert,
            receipt,
            state,
            replaced_by,
        }))
    }
}

/// Highest seq in the log, 0 if empty.
pub(super) fn head(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let log = txn.open_table(LOG)?;
    let last = log.last()?;
    Ok(last.map(|(k, _)| k.value()).unwrap_or(0))
}

pub(super) fn log_after(
    db: &Database,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, AlertId)>, StoreError> {
    let txn = db.begin_read()?;
    let log = txn.open_table(LOG)?;
    let alerts = txn.open_table(ALERTS)?;
    let mut out = Vec::with_capacity(limit.min(1024));
    if limit == 0 {
        return Ok(out);
    }
    for row in log.range::<u64>((Bound::Excluded(after), Bound::Unbounded))? {
        let (seq, id) = row?;
        let (seq, id) = (seq.value(), id.value());
        // An alert stored again (after a quarantine) has a newer row: the old one is
        // not its place in the log.
        if alerts.get(&id)?.is_some_and(|a| a.value().0 == seq) {
            out.push((seq, AlertId(id)));
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// The log's entries after `after`, at most `limit` of them, each with its alert, or
/// `None` where that alert is no longer stored at that seq (pruned, or stored again
/// later).
pub(super) fn log_rows(
    db: &Database,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Option<AlertId>)>, StoreError> {
    let txn = db.begin_read()?;
    let log = txn.open_table(LOG)?;
    let alerts = txn.open_table(ALERTS)?;
    let mut out = Vec::with_capacity(limit.min(1024));
    for row in log
        .range::<u64>((Bound::Excluded(after), Bound::Unbounded))?
        .take(limit)
    {
        let (seq, id) = row?;
        let (seq, id) = (seq.value(), id.value());
        let live = alerts.get(&id)?.is_some_and(|a| a.value().0 == seq);
        out.push((seq, live.then_some(AlertId(id))));
    }
    Ok(out)
}

/// Log entries added after `after_us` (unix µs, exclusive; see `ADDED`), ascending:
/// when each was added and its alert, at most `limit`. Entries of pruned alerts are
/// skipped, and so is the older entry of an alert stored again.
pub(super) fn added_after(
    db: &Database,
    after_us: u64,
    limit: usize,
) -> Result<Vec<(u64, StoredAlert)>, StoreError> {
    let txn = db.begin_read()?;
    let added = txn.open_table(schema::ADDED)?;
    let log = txn.open_table(LOG)?;
    let ctx = ReadCtx::open(&txn)?;
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for row in added.range::<u64>((Bound::Excluded(after_us), Bound::Unbounded))? {
        let (us, seq) = row?;
        let Some(id) = log.get(seq.value())?.map(|g| g.value()) else {
            continue;
        };
        // An alert stored again (after a quarantine) is listed at its new entry only.
        if let Some(stored) = ctx.load(&id)?.filter(|s| s.seq == seq.value()) {
            out.push((us.value(), stored));
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

pub(super) fn counts(db: &Database, now: u64) -> Result<Counts, StoreError> {
    let txn = db.begin_read()?;
    let alerts = txn.open_table(ALERTS)?;
    let status = txn.open_table(STATUS)?;
    let expiry = txn.open_table(Index::Expiry.table())?;
    let log = txn.open_table(LOG)?;
    let total = alerts.len()?;
    let replaced = status.len()?;
    // Expired and not replaced: expires_at <= now.
    let upper = schema::suffix(now, &[0xff; 32]);
    let mut expired = 0u64;
    for row in expiry.range::<&[u8]>(..=upper.as_slice())? {
        let (key, _) = row?;
        let (_, id) = schema::split_suffix(key.value())
            .ok_or_else(|| schema::corrupt(&[0; 32], "malformed idx_expiry key"))?;
        if status.get(&id)?.is_none() {
            expired += 1;
        }
    }
    let head = log.last()?.map(|(k, _)| k.value()).unwrap_or(0);
    let quarantined = txn.open_table(schema::QUARANTINE)?.len()?;
    Ok(Counts {
        alerts: total,
        active: total.saturating_sub(replaced).saturating_sub(expired),
        head,
        quarantined,
    })
}

/// Ids of stored records that do not decode, with the reason.
pub(super) type Damaged = Vec<([u8; 32], String)>;

/// Every alert's metadata in seq order, and the records that do not decode.
pub(super) fn all_meta(db: &Database) -> Result<(Vec<AlertMeta>, Damaged), StoreError> {
    let mut out = Vec::new();
    let damaged = each_record(db, |seq, alert, receipt| {
        out.push(AlertMeta {
            seq,
            alert: alert.summary(),
            receipt,
        })
    })?;
    out.sort_by_key(|m| m.seq);
    Ok((out, damaged))
}

/// Decodes every stored record in id order, handing each one that decodes to `f` (its
/// seq, the alert, how it arrived); returns the records that do not decode.
pub(super) fn each_record(
    db: &Database,
    mut f: impl FnMut(u64, SignedAlert, Receipt),
) -> Result<Damaged, StoreError> {
    let txn = db.begin_read()?;
    let alerts = txn.open_table(ALERTS)?;
    let mut damaged = Vec::new();
    for row in alerts.iter()? {
        let (id, rec) = row?;
        let id = id.value();
        let (seq, receipt, envelope) = rec.value();
        match schema::decode_record(&id, receipt, envelope) {
            Ok((alert, receipt)) => f(seq, alert, receipt),
            Err(e) => damaged.push((id, e.to_string())),
        }
    }
    Ok(damaged)
}

/// The summary of a stored alert and how it arrived.
pub(super) fn meta(
    db: &Database,
    id: &AlertId,
) -> Result<Option<(AlertSummary, Receipt)>, StoreError> {
    let txn = db.begin_read()?;
    let alerts = txn.open_table(ALERTS)?;
    let Some(rec) = alerts.get(&id.0)? else {
        return Ok(None);
    };
    let (_, receipt, envelope) = rec.value();
    let (alert, receipt) = schema::decode_record(&id.0, receipt, envelope)?;
    Ok(Some((alert.summary(), receipt)))
}

/// Whether a stored cancel by `origin` names `id` (stored or not).
pub(super) fn cancelled_by(
    db: &Database,
    id: &AlertId,
    origin: &PublicKey,
) -> Result<bool, StoreError> {
    let txn = db.begin_read()?;
    let edges: ReadOnlyMultimapTable<[u8; 32], EdgeValue> = txn.open_multimap_table(REPLACED_BY)?;
    for edge in edges.get(&id.0)? {
        let (rank, _, _, by) = edge?.value();
        if rank == schema::kind_rank(Kind::Cancel) && by == origin.0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How many alerts are stored.
pub(super) fn alert_count(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    Ok(txn.open_table(ALERTS)?.len()?)
}

pub(super) fn history(db: &Database, id: &AlertId) -> Result<Vec<StoredAlert>, StoreError> {
    let txn = db.begin_read()?;
    let ctx = ReadCtx::open(&txn)?;
    let edges: ReadOnlyMultimapTable<[u8; 32], EdgeValue> = txn.open_multimap_table(REPLACED_BY)?;
    let Some(start) = ctx.load(&id.0)? else {
        return Ok(Vec::new());
    };
    let origin = start.alert.origin();
    let mut seen: HashSet<[u8; 32]> = HashSet::from([id.0]);
    let mut todo = vec![start];
    let mut out = Vec::new();
    while let Some(a) = todo.pop() {
        if out.len() >= MAX_HISTORY {
            break;
        }
        let mut neighbours = Vec::new();
        if let Some(target) = a.alert.body().replaces {
            neighbours.push(target.0);
        }
        for edge in edges.get(&a.alert.id().0)? {
            let (_, _, rid, rorigin) = edge?.value();
            if rorigin == origin.0 {
                neighbours.push(rid);
            }
        }
        for n in neighbours {
            if seen.insert(n) {
                if let Some(found) = ctx.load(&n)? {
                    if found.alert.origin() == origin {
                        todo.push(found);
                    }
                }
            }
        }
        out.push(a);
    }
    out.sort_by_key(|a| (a.alert.body().issued_at, a.alert.id()));
    Ok(out)
}

/// The index to walk and the prefixes to merge, for the most selective filter set.
/// `None`: the filter cannot match anything.
fn plan(q: &Query) -> Option<(Index, Vec<Vec<u8>>)> {
    Some(if let Some(v) = &q.indicator {
        (Index::Indicator, vec![schema::str_prefix(v)?])
    } else if let Some(t) = &q.tag {
        (Index::Tag, vec![schema::str_prefix(&schema::norm_tag(t))?])
    } else if let Some(o) = q.origin {
        (Index::Origin, vec![o.0.to_vec()])
    } else if !q.origins.is_empty() {
        (
            Index::Origin,
            q.origins.iter().map(|o| o.0.to_vec()).collect(),
        )
    } else if let Some(t) = q.tlp {
        (Index::Tlp, vec![vec![schema::tlp_code(t)]])
    } else if let Some(min) = q.min_severity.filter(|s| *s > Severity::Info) {
        let prefixes = Severity::ALL
            .into_iter()
            .filter(|s| *s >= min)
            .map(|s| vec![s.rank()])
            .collect();
        (Index::Severity, prefixes)
    } else {
        (Index::Time, vec![Vec::new()])
    })
}

/// Parses a cursor: 80 hex characters, `issued_at ‖ id` of the last result.
fn parse_cursor(c: &str) -> Result<[u8; SUFFIX_LEN], StoreError> {
    let mut out = [0u8; SUFFIX_LEN];
    hex::decode_to_slice(c.trim(), &mut out).map_err(|e| {
        StoreError::InvalidQuery(format!("cursor {c:?} is not one returned by a query ({e})"))
    })?;
    Ok(out)
}

fn with_prefix(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + suffix.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(suffix);
    k
}

/// One index range walked newest first.
struct Source {
    iter: std::iter::Rev<redb::Range<'static, &'static [u8], ()>>,
    head: Option<[u8; SUFFIX_LEN]>,
}

impl Source {
    fn advance(&mut self) -> Result<(), StoreError> {
        self.head = match self.iter.next() {
            None => None,
            Some(row) => {
                let (key, _) = row?;
                let key = key.value();
                let tail = key
                    .len()
                    .checked_sub(SUFFIX_LEN)
                    .and_then(|start| key.get(start..))
                    .and_then(|t| <[u8; SUFFIX_LEN]>::try_from(t).ok())
                    .ok_or_else(|| schema::corrupt(&[0; 32], "malformed index key"))?;
                Some(tail)
            }
        };
        Ok(())
    }
}

/// Whether `a` passes every filter of `q` (the index already applied some of them;
/// checking again is cheap and keeps this the single definition of a match).
fn matches(q: &Query, a: &StoredAlert, text: Option<&str>, tag: Option<&str>) -> bool {
    let b = a.alert.body();
    q.since.is_none_or(|s| b.issued_at >= s)
        && q.until.is_none_or(|u| b.issued_at < u)
        && q.origin.is_none_or(|o| b.origin == o)
        && (q.origins.is_empty() || q.origins.contains(&b.origin))
        && q.min_severity.is_none_or(|s| b.severity >= s)
        && q.tlp.is_none_or(|t| b.tlp == t)
        && q.state.is_none_or(|s| a.state == s)
        && tag.is_none_or(|t| b.tags.iter().any(|x| schema::norm_tag(x) == t))
        && q.indicator
            .as_deref()
            .is_none_or(|v| b.indicators.iter().any(|i| i.value == v))
        && text
            .is_none_or(|t| b.title.to_lowercase().contains(t) || b.text.to_lowercase().contains(t))
}

pub(super) fn query(db: &Database, q: &Query, now: u64) -> Result<QueryPage, StoreError> {
    let limit = q.limit.unwrap_or(DEFAULT_QUERY_LIMIT);
    if limit == 0 {
        return Err(StoreError::InvalidQuery("limit must be at least 1".into()));
    }
    let limit = limit.min(MAX_QUERY_LIMIT);
    let cursor = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let empty = QueryPage {
        alerts: Vec::new(),
        next: None,
    };
    let Some((index, prefixes)) = plan(q) else {
        return Ok(empty);
    };
    let lower = schema::suffix(q.since.unwrap_or(0), &[0; 32]);
    // Exclusive upper bound: the smaller of `until` and the cursor.
    let upper = match (q.until.map(|u| schema::suffix(u, &[0; 32])), cursor) {
        (Some(u), Some(c)) => Some(u.min(c)),
        (u, c) => u.or(c),
    };
    if upper.is_some_and(|u| u <= lower) {
        return Ok(empty);
    }

    let txn = db.begin_read()?;
    let mut ctx = ReadCtx::open(&txn)?;
    ctx.now = now;
    let table = txn.open_table(index.table())?;
    let mut sources = Vec::with_capacity(prefixes.len());
    for p in &prefixes {
        let lo = with_prefix(p, &lower);
        let hi = match upper {
            Some(u) => Bound::Excluded(with_prefix(p, &u)),
            None => Bound::Included(with_prefix(p, &[0xff; SUFFIX_LEN])),
        };
        let hi_ref = match &hi {
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let range = table.range::<&[u8]>((Bound::Included(lo.as_slice()), hi_ref))?;
        let mut s = Source {
            iter: range.rev(),
            head: None,
        };
        s.advance()?;
        sources.push(s);
    }

    let text = q.text.as_deref().map(str::to_lowercase);
    let tag = q.tag.as_deref().map(schema::norm_tag);
    let mut alerts = Vec::new();
    let mut bytes = 0usize;
    let mut more = false;
    loop {
        // Merge: the greatest (issued_at, id) among the sources' heads.
        let mut best: Option<(usize, [u8; SUFFIX_LEN])> = None;
        for (i, s) in sources.iter().enumerate() {
            if let Some(h) = s.head {
                if best.is_none_or(|(_, b)| h > b) {
                    best = Some((i, h));
                }
            }
        }
        let Some((i, suffix)) = best else { break };
        if let Some(s) = sources.get_mut(i) {
            s.advance()?;
        }
        let Some((_, id)) = schema::split_suffix(&suffix) else {
            break;
        };
        let Some(a) = ctx.load(&id)? else {
            // An index entry without its alert: cannot happen, as both are written in
            // one transaction; skip rather than fail the query.
            continue;
        };
        if matches(q, &a, text.as_deref(), tag.as_deref()) {
            let size = a.alert.body_bytes().len();
            if alerts.len() == limit || (!alerts.is_empty() && bytes + size > MAX_PAGE_BYTES) {
                more = true;
                break;
            }
            bytes += size;
            alerts.push(a);
        }
    }
    let next = if more {
        alerts
            .last()
            .map(|a| hex::encode(schema::suffix(a.alert.body().issued_at, &a.alert.id().0)))
    } else {
        None
    };
    Ok(QueryPage { alerts, next })
}
