//! The redb store: the original signed bytes of every alert, what the node learned on
//! receipt, the local append log, indexes for operator queries, and the small state the
//! federation layer keeps (per-peer cursors, the trust table, the trust audit log).
//!
//! # Writes: one writer, group commit
//! Alert writes ([`Store::insert`], [`Store::insert_many`], [`Store::prune_expired`])
//! go through a bounded queue ([`WRITE_QUEUE`]) to a single writer on a blocking
//! thread. The writer takes the first queued request, drains whatever else is queued up
//! to [`MAX_BATCH`] alerts, applies all of it in one redb write transaction committed
//! with `Durability::Immediate` (fsync), and only then answers every request in the
//! batch and announces the new alerts to [`Store::subscribe`]rs. So an insert that
//! returned is durable (it survives kill -9), and under load many alerts share one
//! fsync. A failed commit fails every request of its batch and stores none of them.
//!
//! [`Store::insert_verified`] is the verified-ingest path: it checks signatures on one
//! blocking worker per core ([`verify_all`]: strict, like `SignedAlert::verify`) and
//! hands verified alerts to the writer in requests of half a batch while the rest are
//! still being verified, so verification overlaps the writer instead of preceding it.
//! The writer itself only stores: callers encode the envelope and receipt and build the
//! index keys, and it writes each batch's index entries in key order.
//!
//! Reads open their own redb read transaction and never wait for the writer. The small
//! federation-state writes ([`Store::set_cursor`], [`Store::commit_trust`], …) commit
//! their own write transaction directly; they block the calling thread for one commit
//! (redb serialises them with the writer's transactions).
//!
//! # Alert state
//! Computed from stored facts, so the order of arrival does not matter: an alert is
//! `Cancelled` if a stored cancel from the *same origin* names it in `replaces`, else
//! `Superseded` if a stored update from the same origin names it, else `Expired` if
//! `expires_at <= now`, else `Active`. Updates and cancels from another origin are
//! stored (they are valid alerts of *their* origin) but change nothing. A cancel stored
//! before its target cancels the target on arrival, and a duplicate copy of a replaced
//! alert is a no-op, so it cannot revive it.
//!
//! # Table layout (schema version 1)
//! Integers in keys are big-endian so that byte order is numeric order. "id" is an
//! [`AlertId`] (SHA-256 of the body bytes), "key" a node [`PublicKey`], both 32 bytes.
//!
//! | table | key | value | purpose |
//! |---|---|---|---|
//! | `meta` | `&str` | `u64` | `schema_version` ([`SCHEMA_VERSION`]) `epoch` (random, nonzero: chosen at creation, and again when a start finds that the file is not the one the last start marked; see below) and `start_mark` (a random token each start writes, also kept in the file `tocsin.redb.mark` beside the database with the epoch and the file's inode and creation time). Its layout never changes, so any build can read a newer file's version and refuse it. |
//! | `alerts` | id `[u8; 32]` | `(u64, &[u8], &[u8])` | seq, receipt (CBOR [`Receipt`]), envelope bytes exactly as received ([`SignedAlert::to_envelope`]). |
//! | `log` | seq `u64` | id `[u8; 32]` | local append log, seq from 1 with no gaps; entries are never removed, even when the alert is pruned. |
//! | `added` | unix µs `u64` | seq `u64` | when each log entry was added, strictly increasing along the log (a clock that steps back does not reorder it): TAXII's `date_added`, so "added after T" is a range of this table and a client that polls with the last time it saw misses nothing. Written with the log entry; a store from an older build gets it at open, from the receipt times. |
//! | `status` | id `[u8; 32]` | `(u8, u64, [u8; 32])` | for a stored alert that a same-origin update (1) or cancel (2) replaced: (rank, replacer's issued_at, replacer id) of the winning replacement (greatest tuple: a cancel beats an update, then the latest). Absent = not replaced. |
//! | `replaced_by` | id `[u8; 32]` (multimap) | `(u8, u64, [u8; 32], [u8; 32])` | every stored update/cancel naming the id, from any origin: (rank, issued_at, replacer id, replacer origin). Kept while the target or the replacer is stored, so arrival order does not matter. |
//! | `idx_time` | `issued_at ‖ id` | `()` | all alerts by issue time. |
//! | `idx_origin` | `origin ‖ issued_at ‖ id` | `()` | by origin key. |
//! | `idx_severity` | `rank(1) ‖ issued_at ‖ id` | `()` | by severity, 0 = info … 4 = critical. |
//! | `idx_tlp` | `code(1) ‖ issued_at ‖ id` | `()` | by TLP, 0 = CLEAR, 1 GREEN, 2 AMBER, 3 AMBER+STRICT, 4 RED. |
//! | `idx_tag` | `len(u16) ‖ tag ‖ issued_at ‖ id` | `()` | by tag, trimmed and lowercased (tag queries are case-insensitive). |
//! | `idx_indicator` | `len(u16) ‖ value ‖ issued_at ‖ id` | `()` | by indicator value, exact bytes, any type. |
//! | `idx_expiry` | `expires_at ‖ id` | `()` | alerts that expire, for pruning and counting expired ones. |
//! | `cursors` | key `[u8; 32]` | `(u64, u64)` | per-peer catch-up cursor: (peer's log epoch, last seq received). |
//! | `trust` | key `[u8; 32]` | `&[u8]` | CBOR [`TrustEntry`]. |
//! | `audit` | `u64` | `&[u8]` | append-only CBOR [`AuditRecord`]s, numbered from 1. |
//! | `agencies` | node key `[u8; 32]` | `&[u8]` | the certificate envelope each node presented here: which agency certified it (see `docs/storage.md`). |
//! | `quarantine` | id `[u8; 32]` | as `alerts` | records that no longer decode (a damaged disk), moved out of `alerts` at start-up by [`Store::scan`] and kept for inspection. Their index entries stay; readers skip index entries without an alert. |
//!
//! # Damage
//! redb reports most damage as errors, but some damaged files make it panic (an
//! assertion while opening, an unreachable branch in a B-tree walk). [`Store::open`],
//! [`Store::scan`], [`Store::all_meta`] and the reads the gossip engine makes
//! ([`Store::contains`], [`Store::meta`], [`Store::cancelled_by`], [`Store::log_rows`],
//! [`Store::head`], [`Store::alert_count`]) run inside
//! `guard` (`catch_unwind`) and turn that into [`StoreError::Damaged`], so the daemon
//! exits 1 with one message instead of 101 and a panic report (`store/guard.rs`).
//!
//! All CBOR goes through [`tocsin_proto::codec`].
//!
//! # Queries
//! [`Store::query`] walks one index newest first, chosen by the most selective filter
//! present (indicator, then tag, origin, TLP, minimum severity, else time; a minimum
//! severity merges the per-severity ranges), restricted to the `[since, until)` range
//! and to entries below the cursor; the other filters are checked on each candidate.
//! Results are ordered by `(issued_at, id)` descending; the cursor is the position of
//! the last result, so pages never overlap or skip while nothing is written.

mod continuity;
mod guard;
mod metrics;
mod read;
mod receipts;
mod schema;
mod slot;
mod state;
#[cfg(test)]
mod tests;
mod types;
mod verify;
mod writer;

pub use continuity::mark_path;
pub use metrics::StoreMetrics;
pub use tocsin_proto::api::{AlertState, AuditRecord, TrustEntry};
pub use types::{
    AlertMeta, Counts, Insert, Query, QueryPage, Receipt, Scan, StoreError, Stored, StoredAlert,
    TrustCommit,
};
pub use verify::{verify_all, VERIFY_CHUNK};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata};
use tocsin_proto::{codec, AlertId, AlertSummary, PublicKey, SignedAlert, VerifiedAlert};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use guard::guard;
use schema::{AUDIT, CURSORS, META, META_EPOCH, META_SCHEMA, TRUST};
use slot::Slot;
use writer::{Prepared, Request, Writer};

/// The version of the table layout this build writes. A file with a newer version is
/// refused ([`StoreError::SchemaTooNew`]) rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

/// Most alerts in one group commit (one write transaction, one fsync). The writer only
/// reaches it under load: it takes whatever is queued when it starts a batch, so a lone
/// insert is still committed on its own at once.
///
/// Trade-offs, measured with the ingest benchmark on the 2-core dev VM (see
/// `docs/performance.md`): with ~630-byte alerts a full batch applies in ~20 ms and
/// commits in ~8–12 ms, so under saturation an insert waits up to ~30 ms for its batch
/// (plus the batch ahead of it), against ~8 ms at 256. In exchange, each commit rewrites
/// the upper B-tree pages and every touched leaf once per batch, so bigger batches cut
/// the writer's cost per alert: group-commit throughput went from ~25k to ~35k alerts/s
/// and verified ingest from ~19k to ~21k when this went from 256 to 1024. Memory: a
/// batch holds its alerts' envelopes and index keys, ~1.5 MiB for 1024 typical alerts
/// plus redb's dirty pages (a few MiB); the worst case, 1024 alerts at the 64 KiB
/// envelope limit, is ~130 MiB (it was a quarter of that at 256).
pub const MAX_BATCH: usize = 1024;

/// Verified alerts that [`Store::insert_verified`] gathers into one writer request.
/// Every batch costs a commit with a fixed part (fsync, rewriting the upper B-tree
/// pages), so bulk ingest is handed over in large requests rather than one per verified
/// chunk, which would have the writer commit many small batches while verification
/// fills the pipeline: 2–3x fewer fsyncs for the same throughput here. At most
/// [`MAX_BATCH`] − [`VERIFY_CHUNK`], so that a request fits in one batch.
const BULK_BATCH: usize = MAX_BATCH / 2;

// `insert_verified` sends once it holds BULK_BATCH alerts, adding one chunk at a time.
const _: () = assert!(
    VERIFY_CHUNK >= 1 && BULK_BATCH >= 1 && BULK_BATCH + VERIFY_CHUNK - 1 <= MAX_BATCH,
    "a verified request must fit in one batch"
);

/// Capacity of the writer's request queue (requests, each up to [`MAX_BATCH`] alerts).
/// One full batch of single-alert requests (1024, as before [`MAX_BATCH`] grew): enough
/// to keep the writer busy while callers prepare the next ones; past that, callers wait
/// in [`Store::insert`] (backpressure) instead of the queue growing without bound when
/// the disk is slower than the network.
pub const WRITE_QUEUE: usize = MAX_BATCH;

/// Capacity of the [`Store::subscribe`] channel. A subscriber that falls further behind
/// gets `RecvError::Lagged` and should resynchronise with [`Store::log_after`].
const EVENTS: usize = 4096;

/// Default [`Query::limit`].
pub const DEFAULT_QUERY_LIMIT: usize = 100;
/// Largest [`Query::limit`]; larger limits are reduced to it.
pub const MAX_QUERY_LIMIT: usize = 1000;
/// A page of alerts (a query's, or a TAXII collection's) ends once the signed bodies in
/// it reach this many bytes, whatever its limit: a page of 1,000 alerts of 64 KiB each
/// would take tens of MiB per request to build. Typical alerts (under 1 KiB) fill a
/// page of 1,000 well below it. At least one alert is always returned.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// The node's alert store. Cheap to clone: every clone shares the database, the
/// writer's queue and the notification channel.
#[derive(Clone)]
pub struct Store {
    /// The database, replaced by the writer after an I/O error ([`slot`]).
    slot: Arc<Slot>,
    /// The database file, for messages.
    path: Arc<PathBuf>,
    tx: mpsc::Sender<Request>,
    events: broadcast::Sender<Stored>,
    epoch: u64,
    metrics: StoreMetrics,
    /// When a sighting was last committed durably, unix ms ([`Store::put_sighting`]).
    sightings_synced: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens or creates `path` (the single redb file). Writes [`SCHEMA_VERSION`] and a
    /// random nonzero u64 log `epoch` on creation. Opening a database whose stored schema
    /// version is newer than [`SCHEMA_VERSION`] fails with [`StoreError::SchemaTooNew`].
    ///
    /// Spawns the writer on the current tokio runtime (on a blocking thread: commits
    /// fsync). The returned handle finishes after the last pending batch is committed,
    /// once every `Store` clone is dropped or [`Store::shutdown`] is called. The file
    /// stays open (and cannot be opened again) until then and until every clone is
    /// dropped: await the handle before reopening the same path.
    pub fn open(path: &Path) -> Result<(Store, JoinHandle<()>), StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StoreError::NoRuntime)?;
        let (db, epoch, head) = guard(path, || {
            let db = open_db(path).map_err(|error| match error {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                    StoreError::Damaged {
                        path: path.to_path_buf(),
                        detail,
                    }
                }
                error => StoreError::Open {
                    path: path.to_path_buf(),
                    error: Box::new(error),
                },
            })?;
            let epoch = init(&db, path)?;
            let head = read::head(&db)?;
            Ok((db, epoch, head))
        })?;
        let slot = Arc::new(Slot::new(db, path));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (events, _) = broadcast::channel(EVENTS);
        let metrics = StoreMetrics::default();
        let writer = Writer {
            slot: Arc::clone(&slot),
            rx,
            events: events.clone(),
            next_seq: head.saturating_add(1),
            metrics: metrics.clone(),
        };
        let join = runtime.spawn_blocking(move || writer.run());
        tracing::debug!(path = %path.display(), epoch, head, "store opened");
        Ok((
            Store {
                slot,
                path: Arc::new(path.to_path_buf()),
                tx,
                events,
                epoch,
                metrics,
                sightings_synced: Arc::default(),
            },
            join,
        ))
    }

    /// The writer's metrics (commit latency, batch sizes, alerts stored), for
    /// `/metrics`.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Creates an empty database at `path` (its tables and meta entries), for
    /// `tocsind init`, so that a later start that finds no file knows it was lost.
    pub fn create(path: &Path) -> Result<(), StoreError> {
        guard(path, || {
            let db = Database::create(path).map_err(|error| StoreError::Open {
                path: path.to_path_buf(),
                error: Box::new(error),
            })?;
            init(&db, path).map(|_| ())
        })
    }

    /// Checks the database at `path` while no daemon has it open: every alert record
    /// decoded and its signature verified, then redb's integrity check (which repairs
    /// what it can). Changes nothing else.
    pub fn check(path: &Path) -> Result<CheckReport, StoreError> {
        guard(path, || {
            let mut db = Database::open(path).map_err(|error| match error {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                    StoreError::Damaged {
                        path: path.to_path_buf(),
                        detail,
                    }
                }
                error => StoreError::Open {
                    path: path.to_path_buf(),
                    error: Box::new(error),
                },
            })?;
            let txn = db.begin_read()?;
            let alerts = txn.open_table(schema::ALERTS)?;
            let mut report = CheckReport {
                redb: RedbCheck::Passed,
                alerts: alerts.len()?,
                damaged: Vec::new(),
                quarantined: match txn.open_table(schema::QUARANTINE) {
                    Ok(t) => t.len()?,
                    Err(redb::TableError::TableDoesNotExist(_)) => 0,
                    Err(e) => return Err(e.into()),
                },
            };
            for row in alerts.iter()? {
                let (id, rec) = row?;
                let id = id.value();
                let (_, receipt, envelope) = rec.value();
                let verdict = schema::decode_record(&id, receipt, envelope)
                    .map_err(|e| e.to_string())
                    .and_then(|(alert, _)| {
                        alert
                            .verify()
                            .map(|_| ())
                            .map_err(|e| format!("signature: {e}"))
                    });
                if let Err(reason) = verdict {
                    report.damaged.push((AlertId(id), reason));
                }
            }
            drop(alerts);
            drop(txn);
            report.redb = match db.check_integrity() {
                Ok(true) => RedbCheck::Passed,
                Ok(false) => RedbCheck::Repaired,
                Err(e) => RedbCheck::Failed(e.to_string()),
            };
            Ok(report)
        })
    }

    /// Asks the writer to finish: it commits what is already queued, then exits; later
    /// writes fail with [`StoreError::Closed`]. Resolves when the writer has exited.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Request::Shutdown { done }).await.is_ok() {
            // An error means the writer is already gone, which is what was asked.
            let _ = wait.await;
        }
    }

    /// Stores a verified alert. Resolves only after the batch holding it has been
    /// committed durably (group commit: the writer drains up to [`MAX_BATCH`] queued
    /// alerts into one write transaction with `Durability::Immediate`). Returns
    /// [`Insert::Inserted`] with the new local sequence number, or [`Insert::Duplicate`]
    /// if the id is already stored (nothing changes).
    ///
    /// Only a [`VerifiedAlert`] can be stored this way: the signature was checked by
    /// the only code that makes one. If the future is dropped after the request was
    /// queued, the alert may still be stored.
    pub async fn insert(
        &self,
        alert: VerifiedAlert,
        receipt: Receipt,
    ) -> Result<Insert, StoreError> {
        let items = vec![prepare(alert.signed(), receipt)?];
        let mut results = self.send_insert(items).await?;
        results
            .pop()
            .ok_or_else(|| StoreError::WriteFailed("the writer returned no result".into()))
    }

    /// Stores several alerts, with the semantics of [`Store::insert`]: one result per
    /// alert, in order. Resolves when all are committed. More than [`MAX_BATCH`] alerts
    /// are split into several batches, so on error some of them may have been stored.
    pub async fn insert_many(
        &self,
        items: Vec<(VerifiedAlert, Receipt)>,
    ) -> Result<Vec<Insert>, StoreError> {
        let total = items.len();
        let mut chunks: Vec<Vec<Prepared>> = Vec::new();
        let mut current = Vec::new();
        for (alert, receipt) in items {
            current.push(prepare(alert.signed(), receipt)?);
            if current.len() == MAX_BATCH {
                chunks.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        // Queue every chunk first so that they can share commits, then wait for all.
        let mut replies = Vec::with_capacity(chunks.len());
        for items in chunks {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Request::Insert { items, reply })
                .await
                .map_err(|_| StoreError::Closed)?;
            replies.push(rx);
        }
        let mut out = Vec::with_capacity(total);
        for rx in replies {
            out.extend(rx.await.map_err(|_| StoreError::Closed)??);
        }
        Ok(out)
    }

    /// Verifies each alert's signature and stores the ones that verify: the verified
    /// ingest path, pipelined. Alerts are verified in chunks of [`VERIFY_CHUNK`] by one
    /// blocking worker per core (as in [`verify_all`]: strict, exactly
    /// [`SignedAlert::verify`]), and as soon as half a batch (512) has verified it goes
    /// to the writer, which applies and commits it while the rest are being verified.
    /// Meant for many alerts at once (a catch-up page, a queue of received alerts): the
    /// first of them waits for up to 512 verifications (~13 ms here). Concurrent calls
    /// each start their own workers.
    ///
    /// Returns one result per alert, in order: `Ok` with what [`Store::insert`] would
    /// return, or `Err` with what [`SignedAlert::verify`] reports for it (that alert is
    /// not stored). Alerts are stored in input order, with the durability of
    /// [`Store::insert`]: this resolves only after every stored alert's batch has been
    /// committed. As with [`Store::insert_many`], after a store error some of the
    /// alerts may have been stored.
    pub async fn insert_verified(
        &self,
        items: Vec<(SignedAlert, Receipt)>,
    ) -> Result<Vec<Result<Insert, tocsin_proto::Error>>, StoreError> {
        let total = items.len();
        let mut chunks = std::pin::pin!(verify::verified_chunks(items, |(alert, _)| alert));
        // Per request: each alert's verification error or `None`, and the writer's reply
        // for the ones that verified.
        let mut pending = Vec::new();
        let mut slots = Vec::new();
        let mut batch = Vec::new();
        loop {
            let next = chunks.next().await;
            let done = next.is_none();
            if let Some((chunk, checks)) = next {
                for ((alert, receipt), check) in chunk.into_iter().zip(checks) {
                    match check {
                        Ok(()) => {
                            batch.push(prepare(&alert, receipt)?);
                            slots.push(None);
                        }
                        Err(e) => slots.push(Some(e)),
                    }
                }
            }
            // Group verified chunks into requests of at least BULK_BATCH alerts.
            if batch.len() >= BULK_BATCH || (done && !slots.is_empty()) {
                let reply = if batch.is_empty() {
                    None
                } else {
                    let (reply, rx) = oneshot::channel();
                    let items = std::mem::take(&mut batch);
                    self.tx
                        .send(Request::Insert { items, reply })
                        .await
                        .map_err(|_| StoreError::Closed)?;
                    Some(rx)
                };
                pending.push((std::mem::take(&mut slots), reply));
            }
            if done {
                break;
            }
        }
        let mut out = Vec::with_capacity(total);
        for (slots, reply) in pending {
            let stored = match reply {
                Some(rx) => rx.await.map_err(|_| StoreError::Closed)??,
                None => Vec::new(),
            };
            let mut stored = stored.into_iter();
            for slot in slots {
                out.push(match slot {
                    Some(e) => Err(e),
                    None => Ok(stored.next().ok_or_else(|| {
                        StoreError::WriteFailed("the writer returned too few results".into())
                    })?),
                });
            }
        }
        Ok(out)
    }

    async fn send_insert(&self, items: Vec<Prepared>) -> Result<Vec<Insert>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Insert { items, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The stored alert with its receipt and current state.
    pub fn get(&self, id: &AlertId) -> Result<Option<StoredAlert>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        read::ReadCtx::open(&txn)?.load(&id.0)
    }

    /// Whether the alert is stored.
    pub fn contains(&self, id: &AlertId) -> Result<bool, StoreError> {
        guard(&self.path, || {
            let txn = self.slot.get()?.begin_read()?;
            Ok(txn.open_table(schema::ALERTS)?.get(&id.0)?.is_some())
        })
    }

    /// The envelope bytes as stored ([`SignedAlert::to_envelope`] of the alert stored).
    pub fn envelope(&self, id: &AlertId) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let table = txn.open_table(schema::ALERTS)?;
        let found = table.get(&id.0)?;
        Ok(found.map(|g| g.value().2.to_vec()))
    }

    /// One page of the alerts matching `q`, newest first (by issued_at, then id,
    /// descending). Page on with [`QueryPage::next`] as [`Query::cursor`]; the other
    /// fields must stay the same.
    pub fn query(&self, q: &Query) -> Result<QueryPage, StoreError> {
        read::query(&*self.slot.get()?, q, crate::now_ms())
    }

    /// The alert, everything that replaced it (updates and cancels from the same origin,
    /// and what replaced those), and what it replaced (likewise), ordered by issued_at
    /// then id. Empty if the alert is not stored.
    pub fn history(&self, id: &AlertId) -> Result<Vec<StoredAlert>, StoreError> {
        read::history(&*self.slot.get()?, id)
    }

    /// The local append log: `(seq, id)` with `seq > after`, ascending, at most `limit`
    /// entries. Entries of pruned alerts are **skipped**, and so is the older entry of
    /// an alert stored again (it is listed at its new seq only): every id returned was
    /// stored at that seq when this was called, and seqs may have gaps. Use the last
    /// seq returned (or [`Store::head`] when the result is empty) as the next `after`.
    pub fn log_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, AlertId)>, StoreError> {
        guard(&self.path, || {
            read::log_after(&*self.slot.get()?, after, limit)
        })
    }

    /// The local append log's entries after `after`, ascending, at most `limit` of them
    /// **including** those of alerts no longer stored at that seq (pruned, or stored
    /// again later), which come with `None`: a read costs at most `limit` entries
    /// however much was pruned. Use the last seq returned as the next `after`; fewer
    /// than `limit` entries means the end of the log.
    pub fn log_rows(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Option<AlertId>)>, StoreError> {
        guard(&self.path, || {
            read::log_rows(&*self.slot.get()?, after, limit)
        })
    }

    /// Log entries added after `after_us` (unix microseconds, exclusive), in log order,
    /// each with when it was added and its alert, at most `limit`; entries of pruned
    /// alerts are skipped. Added times are strictly increasing along the log, so paging
    /// on with the last time returned misses nothing, however alerts arrive meanwhile.
    pub fn added_after(
        &self,
        after_us: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredAlert)>, StoreError> {
        read::added_after(&*self.slot.get()?, after_us, limit)
    }

    /// The highest seq assigned; 0 if nothing was ever stored. Pruning does not lower it.
    pub fn head(&self) -> Result<u64, StoreError> {
        guard(&self.path, || read::head(&*self.slot.get()?))
    }

    /// This store's log epoch: random and fixed when the file was created, so a peer
    /// whose cursor names another epoch knows the log was reset and starts over.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Live notifications of newly committed alerts, sent after commit in seq order.
    /// A receiver that lags more than 4096 alerts gets `RecvError::Lagged` and should
    /// catch up with [`Store::log_after`].
    pub fn subscribe(&self) -> broadcast::Receiver<Stored> {
        self.events.subscribe()
    }

    /// How many alerts are stored, how many of them are active now, and the head seq.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        read::counts(&*self.slot.get()?, crate::now_ms())
    }

    /// Metadata of every stored alert in seq order, for the gossip engine's in-memory
    /// index at start-up. A record that no longer decodes (a flipped byte on disk) does
    /// not stop the node: it is logged with its id, moved to the `quarantine` table and
    /// left out, so that a peer can send the alert again. Blocks for that one commit.
    pub fn all_meta(&self) -> Result<Vec<AlertMeta>, StoreError> {
        guard(&self.path, || {
            let db = self.slot.get()?;
            let (meta, damaged) = read::all_meta(&db)?;
            if !damaged.is_empty() {
                quarantine(&db, &damaged)?;
            }
            Ok(meta)
        })
    }

    /// Decodes every stored record once (at start-up, in the background), moving those
    /// that no longer decode to `quarantine` as [`Store::all_meta`] does, without
    /// keeping what it read. Returns how many alerts decode, and how many of those
    /// were issued here (0 hops) under a key other than `me`.
    pub fn scan(&self, me: &PublicKey) -> Result<Scan, StoreError> {
        guard(&self.path, || {
            let db = self.slot.get()?;
            let mut scan = Scan::default();
            let recent = crate::now_ms().saturating_sub(RETURNED_RECHECK_MS);
            let damaged = read::each_record(&db, |_, alert, receipt| {
                scan.alerts += 1;
                if receipt.hops == 0 && alert.origin() != *me {
                    scan.former_key += 1;
                }
                // Those received lately: a node stopped between storing one and
                // cancelling it restarts soon after.
                if alert.origin() == *me
                    && receipt.from.is_some()
                    && alert.body().kind == tocsin_proto::Kind::Update
                    && receipt.received_at >= recent
                {
                    scan.returned_updates
                        .push((receipt.received_at, alert.id()));
                }
            })?;
            if !damaged.is_empty() {
                quarantine(&db, &damaged)?;
            }
            // The newest first, at most MAX_RETURNED_RECHECK.
            scan.returned_updates.sort_unstable_by(|a, b| b.cmp(a));
            scan.returned_updates.truncate(MAX_RETURNED_RECHECK);
            Ok(scan)
        })
    }

    /// What the gossip engine keeps of a stored alert: its summary and how it arrived.
    /// A record that does not decode is an error ([`StoreError::Corrupt`]).
    pub fn meta(&self, id: &AlertId) -> Result<Option<(AlertSummary, Receipt)>, StoreError> {
        guard(&self.path, || read::meta(&*self.slot.get()?, id))
    }

    /// Whether a stored cancel by `origin` names `id` (whether `id` is stored or not).
    pub fn cancelled_by(&self, id: &AlertId, origin: &PublicKey) -> Result<bool, StoreError> {
        guard(&self.path, || {
            read::cancelled_by(&*self.slot.get()?, id, origin)
        })
    }

    /// How many alerts are stored.
    pub fn alert_count(&self) -> Result<u64, StoreError> {
        guard(&self.path, || read::alert_count(&*self.slot.get()?))
    }

    /// Deletes alerts whose `expires_at < before_ms`, with their index entries. Their
    /// log entries stay, so sequence numbers never move ([`Store::log_after`] skips
    /// them). Goes through the writer like inserts. Returns how many were deleted.
    pub async fn prune_expired(&self, before_ms: u64) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Prune { before_ms, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a blocking read (`f` gets this store) on tokio's blocking pool, so async
    /// code never waits on redb. A panic inside redb (a damaged page) comes back as
    /// [`StoreError::Damaged`].
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || guard(&store.path, || f(&store)))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Why the store refuses writes (an earlier I/O error, usually a full disk), if it
    /// does; the writer reopens the database once there is room again.
    pub fn degraded(&self) -> Option<String> {
        self.slot.reason()
    }
}

/// Encodes what the writer needs, on the caller's task.
fn prepare(alert: &SignedAlert, receipt: Receipt) -> Result<Prepared, StoreError> {
    let receipt = codec::encode(&receipt).map_err(|e| StoreError::Encode {
        what: "receipt",
        reason: e.to_string(),
    })?;
    let envelope = alert.to_envelope();
    if envelope.is_empty() {
        return Err(StoreError::Encode {
            what: "envelope",
            reason: format!("alert {} produced an empty envelope", alert.id()),
        });
    }
    Ok(Prepared::new(alert, envelope, receipt))
}

/// Creates the tables and the meta entries of a new file, or checks the schema version
/// of an existing one; gives the log a new epoch if the file at `path` is not the one
/// the last start marked ([`continuity`]), and marks this start. Returns the epoch.
fn init(db: &Database, path: &Path) -> Result<u64, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let epoch = {
        let mut meta = txn.open_table(META)?;
        let version = meta.get(META_SCHEMA)?.map(|g| g.value());
        let epoch = meta.get(META_EPOCH)?.map(|g| g.value());
        match (version, epoch) {
            (Some(found), _) if found > u64::from(SCHEMA_VERSION) => {
                // Dropping the transaction aborts it: nothing is changed.
                return Err(StoreError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            (Some(found), _) if found < u64::from(SCHEMA_VERSION) => {
                return Err(StoreError::Corrupt {
                    what: "schema version".into(),
                    reason: format!(
                        "{found} is older than any version this build reads ({SCHEMA_VERSION})"
                    ),
                });
            }
            (Some(_), Some(epoch)) if epoch != 0 => epoch,
            (Some(_), _) => {
                return Err(StoreError::Corrupt {
                    what: "meta table".into(),
                    reason: "the log epoch is missing or zero".into(),
                });
            }
            (None, _) => {
                let has_alerts = txn.open_table(schema::ALERTS)?.len()? > 0;
                if has_alerts {
                    return Err(StoreError::Corrupt {
                        what: "meta table".into(),
                        reason: "the schema version is missing but alerts are stored".into(),
                    });
                }
                let epoch = nonzero_random();
                meta.insert(META_SCHEMA, u64::from(SCHEMA_VERSION))?;
                meta.insert(META_EPOCH, epoch)?;
                epoch
            }
        }
    };
    let (epoch, token) = {
        let mut meta = txn.open_table(META)?;
        let held = meta.get(continuity::META_MARK)?.map(|g| g.value());
        let epoch = if continuity::same_database(path, epoch, held) {
            epoch
        } else {
            let new = nonzero_random();
            tracing::warn!(path = %path.display(), old_epoch = epoch, new_epoch = new, "this database is not the file this node last ran with (put back from a backup, copied or moved): its log gets a new epoch, so that every peer reads it again from the start");
            meta.insert(META_EPOCH, new)?;
            new
        };
        let token = nonzero_random();
        meta.insert(continuity::META_MARK, token)?;
        (epoch, token)
    };
    // Create every table, so that readers never meet a missing one.
    txn.open_table(schema::ALERTS)?;
    txn.open_table(schema::LOG)?;
    txn.open_table(schema::STATUS)?;
    txn.open_multimap_table(schema::REPLACED_BY)?;
    for index in schema::Index::ALL {
        txn.open_table(index.table())?;
    }
    txn.open_table(CURSORS)?;
    txn.open_table(TRUST)?;
    txn.open_table(AUDIT)?;
    txn.open_table(schema::QUARANTINE)?;
    backfill_added(&txn)?;
    txn.commit()?;
    continuity::Mark::of(path, epoch, token).write(path);
    Ok(epoch)
}

/// How far back [`Store::scan`] lists this node's own updates given back by a peer.
const RETURNED_RECHECK_MS: u64 = 7 * 24 * 3600 * 1000;
/// How many of them it lists at most (the newest).
pub const MAX_RETURNED_RECHECK: usize = 1024;

/// A random u64 other than 0.
fn nonzero_random() -> u64 {
    loop {
        let n = rand::random::<u64>();
        if n != 0 {
            return n;
        }
    }
}

/// Gives every log entry without one an `added` time (a store written before that
/// table existed, or by an older build): its receipt time, kept strictly increasing.
fn backfill_added(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut added = txn.open_table(schema::ADDED)?;
    let (mut last_us, last_seq) = added
        .last()?
        .map(|(k, v)| (k.value(), v.value()))
        .unwrap_or((0, 0));
    let log = txn.open_table(schema::LOG)?;
    let alerts = txn.open_table(schema::ALERTS)?;
    let mut filled = 0u64;
    for row in log.range::<u64>((
        std::ops::Bound::Excluded(last_seq),
        std::ops::Bound::Unbounded,
    ))? {
        let (seq, id) = row?;
        let id = id.value();
        let received_us = match alerts.get(&id)? {
            Some(rec) => schema::decode_receipt(&id, rec.value().1)
                .map(|r| r.received_at.saturating_mul(1000))
                .unwrap_or(0),
            None => 0,
        };
        last_us = received_us.max(last_us.saturating_add(1));
        added.insert(last_us, seq.value())?;
        filled += 1;
    }
    if filled > 0 {
        tracing::info!(
            entries = filled,
            "store: gave log entries their added time (one-time upgrade)"
        );
    }
    Ok(())
}

/// The outcome of redb's own integrity check (page checksums, tree structure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedbCheck {
    Passed,
    /// It found damage and repaired the file.
    Repaired,
    /// It found damage it cannot repair.
    Failed(String),
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// redb's own integrity check, run after the records were read.
    pub redb: RedbCheck,
    /// Alert records read.
    pub alerts: u64,
    /// Records that do not decode or whose signature does not verify, with the reason.
    pub damaged: Vec<(AlertId, String)>,
    /// Records already moved aside at an earlier start-up.
    pub quarantined: u64,
}

/// Moves the records of `damaged` alerts from `alerts` to `quarantine`, in one
/// durable transaction, logging each with its id and what is wrong with it.
fn quarantine(db: &Database, damaged: &[([u8; 32], String)]) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    {
        let mut alerts = txn.open_table(schema::ALERTS)?;
        let mut aside = txn.open_table(schema::QUARANTINE)?;
        for (id, reason) in damaged {
            let record = alerts.get(id)?.map(|g| {
                let (seq, receipt, envelope) = g.value();
                (seq, receipt.to_vec(), envelope.to_vec())
            });
            // Read in an earlier transaction: a valid copy may have replaced it since.
            let record = record.filter(|(_, r, e)| schema::decode_record(id, r, e).is_err());
            if let Some((seq, receipt, envelope)) = record {
                alerts.remove(id)?;
                aside.insert(id, (seq, receipt.as_slice(), envelope.as_slice()))?;
                tracing::warn!(id = %AlertId(*id), seq, %reason, "stored alert is damaged: quarantined; it is left out until a peer sends it again");
            }
        }
        // The damaged alerts are in peers' logs before our cursors on them: catch-up
        // reads every peer's log from the start again, even after another restart.
        txn.open_table(CURSORS)?.retain(|_, _| false)?;
    }
    txn.commit()?;
    Ok(())
}

/// redb's page cache, in bytes. Its default (1 GiB) grows the daemon's memory with the
/// store as pages are read (a start-up reads every alert once); the operating system's
/// page cache keeps the file's hot pages anyway.
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Opens (or creates) the database file with [`CACHE_BYTES`] of page cache.
fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}
