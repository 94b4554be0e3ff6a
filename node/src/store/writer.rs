//! The single writer: drains queued requests into one redb write transaction per batch
//! (group commit), commits it durably, then answers every request in the batch and
//! announces the new alerts.

use std::sync::Arc;

use redb::{
    Durability, MultimapTable, ReadableMultimapTable, ReadableTable, Table, WriteTransaction,
};
use tocsin_proto::{AlertId, PublicKey, SignedAlert};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::schema::{
    self, AlertValue, EdgeValue, Index, IndexKeys, StatusValue, ADDED, ALERTS, LOG, REPLACED_BY,
    STATUS,
};
use super::slot::{self, Slot};
use super::{Insert, StoreError, Stored, MAX_BATCH};

/// An alert ready to be written: encoded, its index keys built, and reduced to what the
/// writer needs, on the caller's task (the writer's thread is the serial part of ingest,
/// so it neither encodes nor frees the decoded alert).
pub(super) struct Prepared {
    /// The alert id.
    pub(super) id: [u8; 32],
    /// The origin key.
    pub(super) origin: [u8; 32],
    /// `issued_at`.
    pub(super) issued_at: u64,
    /// For an update (rank 1) or a cancel (rank 2): the rank and the id it replaces.
    pub(super) replaces: Option<(u8, [u8; 32])>,
    /// [`SignedAlert::to_envelope`].
    pub(super) envelope: Vec<u8>,
    /// The CBOR receipt.
    pub(super) receipt: Vec<u8>,
    /// [`schema::index_entries`] of the alert.
    pub(super) index: IndexKeys,
}

impl Prepared {
    /// Takes what the writer needs from `alert`.
    pub(super) fn new(alert: &SignedAlert, envelope: Vec<u8>, receipt: Vec<u8>) -> Prepared {
        let body = alert.body();
        let replaces = match (schema::kind_rank(body.kind), body.replaces) {
            (rank @ 1.., Some(target)) => Some((rank, target.0)),
            _ => None,
        };
        Prepared {
            id: alert.id().0,
            origin: body.origin.0,
            issued_at: body.issued_at,
            replaces,
            envelope,
            receipt,
            index: schema::index_entries(body, &alert.id()),
        }
    }
}

/// A request to the writer.
pub(super) enum Request {
    /// Store alerts (at most [`MAX_BATCH`]).
    Insert {
        items: Vec<Prepared>,
        reply: oneshot::Sender<Result<Vec<Insert>, StoreError>>,
    },
    /// Delete alerts that expired before `before_ms`.
    Prune {
        before_ms: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Commit what is queued, then exit; `done` is signalled on exit.
    Shutdown { done: oneshot::Sender<()> },
}

impl Request {
    /// How much of a batch this request uses.
    fn weight(&self) -> usize {
        match self {
            Request::Insert { items, .. } => items.len().max(1),
            Request::Prune { .. } => 1,
            Request::Shutdown { .. } => 0,
        }
    }
}

enum Outcome {
    Inserted(Vec<Insert>),
    Pruned(usize),
}

/// The writer's state; runs on a blocking thread.
pub(super) struct Writer {
    /// The database; after an I/O error the writer reopens it ([`super::slot`]).
    pub(super) slot: Arc<Slot>,
    pub(super) rx: mpsc::Receiver<Request>,
    pub(super) events: broadcast::Sender<Stored>,
    /// The seq the next stored alert gets.
    pub(super) next_seq: u64,
    pub(super) metrics: super::StoreMetrics,
}

impl Writer {
    /// Runs until every sender is gone or a shutdown was requested and the queue is empty.
    pub(super) fn run(mut self) {
        let mut carry: Option<Request> = None;
        let mut stopping: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let first = match carry.take() {
                Some(r) => r,
                None if self.slot.reason().is_some() => {
                    // Degraded: look for room and reopen between requests.
                    self.recover();
                    match self.rx.try_recv() {
                        Ok(r) => r,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            std::thread::sleep(slot::RECOVER_POLL);
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                }
                None => match self.rx.blocking_recv() {
                    Some(r) => r,
                    None => break,
                },
            };
            let mut batch = Vec::new();
            let mut weight = 0;
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Shutdown { done } => {
                        // No new requests; what is already queued is still drained.
                        self.rx.close();
                        stopping.push(done);
                    }
                    req => {
                        let w = req.weight();
                        if weight > 0 && weight + w > MAX_BATCH {
                            carry = Some(req);
                            break;
                        }
                        weight += w;
                        batch.push(req);
                    }
                }
                if weight < MAX_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.process(batch);
            }
        }
        for done in stopping {
            let _ = done.send(());
        }
        tracing::debug!(next_seq = self.next_seq, "store writer stopped");
    }

    /// A degraded store reopens the database if there is room now; the log's head is
    /// re-read from the reopened file.
    fn recover(&mut self) {
        if let Ok(Some(head)) = self.slot.try_recover() {
            self.next_seq = head.saturating_add(1);
        }
    }

    /// Applies and commits one batch, then answers its requests.
    pub(super) fn process(&mut self, batch: Vec<Request>) {
        let mut next = self.next_seq;
        if self.slot.reason().is_some() {
            self.recover();
        }
        let started = std::time::Instant::now();
        let applied = match self.slot.reason() {
            Some(reason) => Err(StoreError::Degraded(reason)),
            // A panic inside redb (a damaged page) fails this batch with a message;
            // the writer goes on with the next one.
            None => {
                super::guard(self.slot.path(), || self.apply(&batch, &mut next)).inspect_err(|e| {
                    self.metrics.commits_failed.inc();
                    self.slot.degrade_on(e);
                })
            }
        };
        if let Ok(outcomes) = &applied {
            let stored = outcomes
                .iter()
                .map(|o| match o {
                    Outcome::Inserted(r) => r
                        .iter()
                        .filter(|i| matches!(i, Insert::Inserted { .. }))
                        .count(),
                    Outcome::Pruned(_) => 0,
                })
                .sum::<usize>();
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics.batch_alerts.observe(stored as f64);
            self.metrics.alerts_stored.inc_by(stored as u64);
        }
        match applied {
            Ok(outcomes) => {
                self.next_seq = next;
                for (req, out) in batch.into_iter().zip(outcomes) {
                    match (req, out) {
                        (Request::Insert { items, reply }, Outcome::Inserted(results)) => {
                            for (p, r) in items.iter().zip(&results) {
                                if let Insert::Inserted { seq } = *r {
                                    // No receiver is not an error.
                                    let _ = self.events.send(Stored {
                                        seq,
                                        id: AlertId(p.id),
                                    });
                                }
                            }
                            let _ = reply.send(Ok(results));
                        }
                        (Request::Prune { reply, .. }, Outcome::Pruned(n)) => {
                            let _ = reply.send(Ok(n));
                        }
                        // `apply` yields one outcome of the request's own kind per
                        // request; anything else drops the reply, which the caller
                        // reports as `StoreError::Closed`.
                        _ => {}
                    }
                }
            }
            Err(e) => {
                let reason = e.to_string();
                if matches!(e, StoreError::Degraded(_)) {
                    tracing::debug!(error = %reason, requests = batch.len(), "store batch refused");
                } else {
                    tracing::error!(error = %reason, requests = batch.len(), "store batch failed");
                }
                for req in batch {
                    let err = StoreError::WriteFailed(reason.clone());
                    match req {
                        Request::Insert { reply, .. } => {
                            let _ = reply.send(Err(err));
                        }
                        Request::Prune { reply, .. } => {
                            let _ = reply.send(Err(err));
                        }
                        Request::Shutdown { .. } => {}
                    }
                }
            }
        }
    }

    fn apply(&self, batch: &[Request], next: &mut u64) -> Result<Vec<Outcome>, StoreError> {
        let db = self.slot.get()?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let mut outs = Vec::with_capacity(batch.len());
        {
            let mut t = WriteTables::open(&txn)?;
            let mut pending = PendingIndex::default();
            for req in batch {
                match req {
                    Request::Insert { items, .. } => {
                        let mut results = Vec::with_capacity(items.len());
                        for p in items {
                            let r = t.insert(p, next)?;
                            if let Insert::Inserted { .. } = r {
                                pending.add(&p.index);
                            }
                            results.push(r);
                        }
                        outs.push(Outcome::Inserted(results));
                    }
                    Request::Prune { before_ms, .. } => {
                        // Pruning reads `idx_expiry`: it must see this batch's entries.
                        pending.flush(&mut t)?;
                        let pruned = t.prune(*before_ms)?;
                        super::receipts::forget_pruned(&txn, &pruned)?;
                        outs.push(Outcome::Pruned(pruned.len()));
                    }
                    Request::Shutdown { .. } => {}
                }
            }
            pending.flush(&mut t)?;
        }
        txn.commit()?;
        Ok(outs)
    }
}

/// Index entries of the alerts inserted so far in a batch, written in key order when the
/// batch ends (or before anything reads the indexes): consecutive inserts then land in
/// the same B-tree leaves, which redb modifies in place once they are dirty, instead of
/// each alert touching a leaf of every index. Nothing reads the indexes in between
/// except pruning, which flushes first; the set written is the same either way.
#[derive(Default)]
struct PendingIndex<'b> {
    keys: [Vec<&'b [u8]>; Index::ALL.len()],
}

impl<'b> PendingIndex<'b> {
    fn add(&mut self, entries: &'b IndexKeys) {
        for (index, key) in entries.iter() {
            if let Some(keys) = self.keys.get_mut(index.slot()) {
                keys.push(key);
            }
        }
    }

    fn flush(&mut self, t: &mut WriteTables<'_>) -> Result<(), StoreError> {
        for index in Index::ALL {
            let Some(keys) = self.keys.get_mut(index.slot()) else {
                continue;
            };
            keys.sort_unstable();
            let table = t.index(index);
            for key in keys.drain(..) {
                table.insert(key, ())?;
            }
        }
        Ok(())
    }
}

/// The tables a batch writes, opened once per transaction.
struct WriteTables<'txn> {
    alerts: Table<'txn, [u8; 32], AlertValue>,
    log: Table<'txn, u64, [u8; 32]>,
    added: Table<'txn, u64, u64>,
    /// The last key of `added`.
    last_added: u64,
    status: Table<'txn, [u8; 32], StatusValue>,
    replaced_by: MultimapTable<'txn, [u8; 32], EdgeValue>,
    time: Table<'txn, &'static [u8], ()>,
    origin: Table<'txn, &'static [u8], ()>,
    severity: Table<'txn, &'static [u8], ()>,
    tlp: Table<'txn, &'static [u8], ()>,
    tag: Table<'txn, &'static [u8], ()>,
    indicator: Table<'txn, &'static [u8], ()>,
    expiry: Table<'txn, &'static [u8], ()>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let added = txn.open_table(ADDED)?;
        let last_added = added.last()?.map(|(k, _)| k.value()).unwrap_or(0);
        Ok(WriteTables {
            alerts: txn.open_table(ALERTS)?,
            log: txn.open_table(LOG)?,
            added,
            last_added,
            status: txn.open_table(STATUS)?,
            replaced_by: txn.open_multimap_table(REPLACED_BY)?,
            time: txn.open_table(Index::Time.table())?,
            origin: txn.open_table(Index::Origin.table())?,
            severity: txn.open_table(Index::Severity.table())?,
            tlp: txn.open_table(Index::Tlp.table())?,
            tag: txn.open_table(Index::Tag.table())?,
            indicator: txn.open_table(Index::Indicator.table())?,
            expiry: txn.open_table(Index::Expiry.table())?,
        })
    }

    fn index(&mut self, i: Index) -> &mut Table<'txn, &'static [u8], ()> {
        match i {
            Index::Time => &mut self.time,
            Index::Origin => &mut self.origin,
            Index::Severity => &mut self.severity,
            Index::Tlp => &mut self.tlp,
            Index::Tag => &mut self.tag,
            Index::Indicator => &mut self.indicator,
            Index::Expiry => &mut self.expiry,
        }
    }

    /// The origin of a stored alert; `None` if it is not stored or its record does not
    /// decode (damaged, not yet quarantined: as if not stored, as readers see it).
    fn origin_of(&self, id: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError> {
        let Some(rec) = self.alerts.get(id)? else {
            return Ok(None);
        };
        let (_, receipt, envelope) = rec.value();
        Ok(schema::decode_record(id, receipt, envelope)
            .ok()
            .map(|(alert, _)| alert.origin().0))
    }

    /// The best same-origin replacement of `id` among its stored edges.
    fn best_replacement(
        &self,
        id: &[u8; 32],
        origin: &[u8; 32],
    ) -> Result<Option<StatusValue>, StoreError> {
        let mut best: Option<StatusValue> = None;
        for edge in self.replaced_by.get(id)? {
            let (rank, at, rid, rorigin) = edge?.value();
            if rorigin == *origin && rank > 0 {
                let cand = (rank, at, rid);
                if best.is_none_or(|b| cand > b) {
                    best = Some(cand);
                }
            }
        }
        Ok(best)
    }

    /// Stores one alert, except its index entries ([`Prepared::index`]), which the caller
    /// writes (see [`PendingIndex`]) when the result is [`Insert::Inserted`].
    fn insert(&mut self, p: &Prepared, next: &mut u64) -> Result<Insert, StoreError> {
        let id = p.id;
        let seq = *next;
        // Insert without looking first (one B-tree walk instead of two); a duplicate is
        // rare, and its stored record is put back unchanged.
        let previous = self
            .alerts
            .insert(&id, (seq, p.receipt.as_slice(), p.envelope.as_slice()))?
            .map(|old| {
                let (seq, receipt, envelope) = old.value();
                (seq, receipt.to_vec(), envelope.to_vec())
            });
        if let Some((old_seq, receipt, envelope)) = previous {
            // A stored record that no longer decodes (damaged on disk, not yet
            // quarantined) is replaced by this valid copy, stored anew at `seq`.
            match schema::decode_record(&id, &receipt, &envelope) {
                Ok(_) => {
                    self.alerts
                        .insert(&id, (old_seq, receipt.as_slice(), envelope.as_slice()))?;
                    return Ok(Insert::Duplicate { seq: old_seq });
                }
                Err(e) => {
                    tracing::warn!(id = %AlertId(id), old_seq, seq, reason = %e, "a damaged stored alert was replaced by a valid copy");
                }
            }
        }
        self.log.insert(seq, &id)?;
        self.last_added = schema::now_us().max(self.last_added.saturating_add(1));
        self.added.insert(self.last_added, seq)?;
        let origin = p.origin;
        // This alert replaces another one: record the edge and, if the target is stored
        // and has the same origin, let the replacement win if it outranks the current.
        if let Some((rank, target)) = p.replaces {
            self.replaced_by
                .insert(&target, (rank, p.issued_at, id, origin))?;
            if self.origin_of(&target)? == Some(origin) {
                let cand = (rank, p.issued_at, id);
                let current = self.status.get(&target)?.map(|g| g.value());
                if current.is_none_or(|c| cand > c) {
                    self.status.insert(&target, cand)?;
                }
            }
        }
        // Updates or cancels of this alert that arrived before it.
        if let Some(best) = self.best_replacement(&id, &origin)? {
            self.status.insert(&id, best)?;
        }
        *next = seq + 1;
        Ok(Insert::Inserted { seq })
    }

    /// Removes the alerts that expired before `before_ms`; returns their ids and
    /// origins.
    fn prune(&mut self, before_ms: u64) -> Result<Vec<(AlertId, PublicKey)>, StoreError> {
        let upper = schema::suffix(before_ms, &[0u8; 32]);
        let mut ids = Vec::new();
        for entry in self.expiry.range::<&[u8]>(..upper.as_slice())? {
            let (key, _) = entry?;
            let key = key.value();
            let (_, id) = schema::split_suffix(key)
                .ok_or_else(|| schema::corrupt(&[0; 32], "malformed idx_expiry key"))?;
            ids.push(id);
        }
        let mut removed = Vec::new();
        for id in ids {
            if let Some(origin) = self.remove(&id)? {
                removed.push((AlertId(id), origin));
            }
        }
        Ok(removed)
    }

    /// Removes an alert with its index entries, status and the replacement edges that
    /// only it needs. The log entry stays. Returns its origin if it was removed.
    fn remove(&mut self, id: &[u8; 32]) -> Result<Option<PublicKey>, StoreError> {
        let Some(rec) = self.alerts.remove(id)? else {
            return Ok(None);
        };
        let (seq, receipt, envelope) = {
            let (seq, receipt, envelope) = rec.value();
            (seq, receipt.to_vec(), envelope.to_vec())
        };
        drop(rec);
        let alert = match schema::decode_record(id, &receipt, &envelope) {
            Ok((alert, _)) => alert,
            Err(e) => {
                // Damaged and not yet quarantined: left for the check that moves it
                // aside, instead of failing the whole transaction.
                self.alerts
                    .insert(id, (seq, receipt.as_slice(), envelope.as_slice()))?;
                tracing::warn!(id = %AlertId(*id), reason = %e, "a damaged stored alert was not removed");
                return Ok(None);
            }
        };
        let body = alert.body();
        for (index, key) in schema::index_entries(body, &AlertId(*id)).iter() {
            self.index(index).remove(key)?;
        }
        self.status.remove(id)?;
        // A replacement edge lives while its target or its replacer is stored, so a
        // cancel still wins if either copy comes back later.
        let mut orphaned = Vec::new();
        for edge in self.replaced_by.get(id)? {
            let edge = edge?.value();
            if self.alerts.get(&edge.2)?.is_none() {
                orphaned.push(edge);
            }
        }
        for edge in orphaned {
            self.replaced_by.remove(id, edge)?;
        }
        if let (rank @ 1.., Some(target)) = (schema::kind_rank(body.kind), body.replaces) {
            if self.alerts.get(&target.0)?.is_none() {
                self.replaced_by
                    .remove(&target.0, (rank, body.issued_at, *id, body.origin.0))?;
            }
        }
        Ok(Some(body.origin))
    }
}
