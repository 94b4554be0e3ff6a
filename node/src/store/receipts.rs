//! Receipts and sightings (wire format §8.3) in the store. Receipts: those this node signed for alerts it
//! received (its outbox, resent to each origin when it reconnects), those it received for
//! its own alerts, and the acknowledgement deadlines of its own RED alerts.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde_bytes::ByteBuf;
use tocsin_proto::identity::{Receipt, Sighting, Signed};
use tocsin_proto::{codec, AlertId, PublicKey};

use super::schema::{PairKey, ACK_DEADLINES, RECEIPTS_IN, RECEIPTS_OUT, SIGHTINGS, SIGHTINGS_OUT};
use super::state::optional_table;
use super::{Store, StoreError};

/// Rows per alert beyond which a relayed sighting of an observer unknown here is not
/// stored (the engine takes in few of those per alert, but its count is lost at a
/// restart): made-up observers cannot grow the table without bound, and the node's
/// own, direct and known observers' sightings are kept whatever the count.
pub const MAX_SIGHTINGS_PER_ALERT: usize = 512;

impl Store {
    /// Keeps a receipt this node signed, unless it holds an acknowledgement for that
    /// alert already (a late delivery receipt never replaces it). An acknowledgement is
    /// committed durably; a delivery receipt is committed without its own fsync (the
    /// next durable commit, an alert's group commit, carries it), so that storing many
    /// AMBER and RED alerts does not cost one more fsync each.
    pub fn put_receipt_out(&self, receipt: &Signed<Receipt>, now: u64) -> Result<(), StoreError> {
        let r = receipt.body();
        let bytes = receipt.to_bytes();
        let durable = r.acked_at.is_some();
        self.write_with(durable, |txn| {
            let mut table = txn.open_table(RECEIPTS_OUT)?;
            let key = (r.origin.0, r.alert.0);
            let held_acked = table.get(key)?.is_some_and(|row| {
                Signed::<Receipt>::decode(row.value().1).is_ok_and(|h| h.body().acked_at.is_some())
            });
            if !held_acked || durable {
                table.insert(key, (now, bytes.as_slice()))?;
            }
            Ok(())
        })
    }

    /// The receipt this node signed for `alert` of `origin`, if any.
    pub fn receipt_out(
        &self,
        origin: &PublicKey,
        alert: &AlertId,
    ) -> Result<Option<Signed<Receipt>>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let Some(table) = optional_table(&txn, RECEIPTS_OUT)? else {
            return Ok(None);
        };
        let Some(row) = table.get((origin.0, alert.0))? else {
            return Ok(None);
        };
        let (_, bytes) = row.value();
        Ok(Signed::<Receipt>::decode(bytes).ok())
    }

    /// The receipts this node signed for `origin`'s alerts since `since` (unix ms), at
    /// most `limit`, newest first: what it sends again when `origin` reconnects.
    pub fn receipts_out_since(
        &self,
        origin: &PublicKey,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.out_since(RECEIPTS_OUT, origin, since, limit)
    }

    /// This node's own sightings of `origin`'s alerts last seen at or after `since`
    /// (unix ms), newest first, at most `limit`: sent again when the origin connects,
    /// as one made while it was away never reached it.
    pub fn sightings_out_since(
        &self,
        origin: &PublicKey,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.out_since(SIGHTINGS_OUT, origin, since, limit)
    }

    /// The envelopes of `table` (keyed by origin, then alert; valued by a time and an
    /// envelope) for `origin` from `since` on, newest first, at most `limit`.
    fn out_since(
        &self,
        def: TableDefinition<PairKey, (u64, &[u8])>,
        origin: &PublicKey,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let Some(table) = optional_table(&txn, def)? else {
            return Ok(Vec::new());
        };
        let mut rows: Vec<(u64, Vec<u8>)> = Vec::new();
        for row in table.range((origin.0, [0u8; 32])..=(origin.0, [0xffu8; 32]))? {
            let (_, v) = row?;
            let (at, bytes) = v.value();
            if at >= since {
                rows.push((at, bytes.to_vec()));
            }
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        Ok(rows.into_iter().take(limit).map(|(_, b)| b).collect())
    }

    /// Keeps a verified receipt for one of this node's alerts, with the org of the
    /// certificate its receiver presented (if any), so that it counts for an org named
    /// as a recipient even after that certificate is gone. One per receiver: an
    /// acknowledgement replaces a delivery receipt, never the other way round. Returns
    /// whether it changed what is held.
    pub fn put_receipt_in(
        &self,
        receipt: &Signed<Receipt>,
        org: Option<PublicKey>,
    ) -> Result<bool, StoreError> {
        let r = receipt.body();
        let row = (ByteBuf::from(receipt.to_bytes()), org);
        let bytes = codec::encode(&row).map_err(|e| StoreError::Encode {
            what: "receipt",
            reason: e.to_string(),
        })?;
        self.write(|txn| {
            let mut table = txn.open_table(RECEIPTS_IN)?;
            let key = (r.alert.0, r.receiver.0);
            let held_acked = table
                .get(key)?
                .map(|row| decode_in(row.value()).is_some_and(|(h, _)| h.acked_at.is_some()));
            let replace = match held_acked {
                None => true,
                Some(acked) => !acked && r.acked_at.is_some(),
            };
            if replace {
                table.insert(key, bytes.as_slice())?;
            }
            Ok(replace)
        })
    }

    /// The receipts held for one of this node's alerts, by receiver, each with its
    /// receiver's org (when it presented a certificate).
    pub fn receipts_in(
        &self,
        alert: &AlertId,
    ) -> Result<Vec<(Receipt, Option<PublicKey>)>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let Some(table) = optional_table(&txn, RECEIPTS_IN)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.range((alert.0, [0u8; 32])..=(alert.0, [0xffu8; 32]))? {
            let (_, v) = row?;
            if let Some(r) = decode_in(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Keeps a verified sighting when it is its observer's newest of that alert.
    /// `capped`: the sighting is a relayed one of an observer unknown to this node; a new
    /// such observer is kept only while the alert has fewer than
    /// [`MAX_SIGHTINGS_PER_ALERT`] rows (the node's own, direct and known observers'
    /// always are). At most one a second is committed with an fsync of its own; the
    /// others go with the next durable commit (a crash before it loses them, at most a
    /// second's worth of advisory counts): many peers' sightings must not take the
    /// disk's fsyncs from alerts and trust changes.
    ///
    /// `ours_to`: the alert's origin, when the sighting is this node's own: it is also
    /// kept in `sightings_out`, to be sent to the origin again when it connects.
    pub fn put_sighting(
        &self,
        sighting: &Signed<Sighting>,
        capped: bool,
        ours_to: Option<&PublicKey>,
    ) -> Result<bool, StoreError> {
        let s = sighting.body();
        let Some(alert) = s.alert else {
            return Ok(false);
        };
        let bytes = sighting.to_bytes();
        let now = crate::now_ms();
        let synced = &self.sightings_synced;
        let durable = now.saturating_sub(synced.load(std::sync::atomic::Ordering::Relaxed)) >= 1000;
        if durable {
            synced.store(now, std::sync::atomic::Ordering::Relaxed);
        }
        self.write_with(durable, |txn| {
            let mut table = txn.open_table(SIGHTINGS)?;
            let key = (alert.0, s.observer.0);
            let held = table.get(key)?.map(|row| {
                Signed::<Sighting>::decode(row.value()).map_or(0, |h| h.body().last_seen)
            });
            let newer = match held {
                Some(last_seen) => last_seen < s.last_seen,
                // A new unknown observer: at most MAX_SIGHTINGS_PER_ALERT rows per alert.
                None if !capped => true,
                None => {
                    table
                        .range((alert.0, [0u8; 32])..=(alert.0, [0xffu8; 32]))?
                        .take(MAX_SIGHTINGS_PER_ALERT)
                        .count()
                        < MAX_SIGHTINGS_PER_ALERT
                }
            };
            if newer {
                table.insert(key, bytes.as_slice())?;
                if let Some(origin) = ours_to {
                    txn.open_table(SIGHTINGS_OUT)?
                        .insert((origin.0, alert.0), (s.last_seen, bytes.as_slice()))?;
                }
            }
            Ok(newer)
        })
    }

    /// Each observer's newest sighting of an alert, by observer.
    pub fn sightings_of(&self, alert: &AlertId) -> Result<Vec<Sighting>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let Some(table) = optional_table(&txn, SIGHTINGS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.range((alert.0, [0u8; 32])..=(alert.0, [0xffu8; 32]))? {
            let (_, v) = row?;
            if let Ok(s) = Signed::<Sighting>::decode(v.value()) {
                out.push(s.body().clone());
            }
        }
        Ok(out)
    }

    /// Sets the time by which every recipient of one of this node's RED alerts should
    /// have acknowledged it.
    pub fn set_ack_deadline(&self, alert: &AlertId, deadline: u64) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(ACK_DEADLINES)?
                .insert(alert.0, (deadline, false))?;
            Ok(())
        })
    }

    /// The acknowledgement deadline of an alert: (when, already reported).
    pub fn ack_deadline(&self, alert: &AlertId) -> Result<Option<(u64, bool)>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        match optional_table(&txn, ACK_DEADLINES)? {
            Some(t) => Ok(t.get(alert.0)?.map(|g| g.value())),
            None => Ok(None),
        }
    }

    /// Deadlines passed by `now` and not yet reported.
    pub fn ack_deadlines_due(&self, now: u64) -> Result<Vec<(AlertId, u64)>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let Some(table) = optional_table(&txn, ACK_DEADLINES)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let (deadline, reported) = v.value();
            if !reported && deadline <= now {
                out.push((AlertId(k.value()), deadline));
            }
        }
        Ok(out)
    }

    /// Marks a deadline as reported (its overdue acknowledgements were announced).
    pub fn ack_deadline_reported(&self, alert: &AlertId) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(ACK_DEADLINES)?;
            let deadline = table.get(alert.0)?.map(|g| g.value().0);
            if let Some(deadline) = deadline {
                table.insert(alert.0, (deadline, true))?;
            }
            Ok(())
        })
    }
}

/// A `receipts_in` row: CBOR `[receipt envelope, receiver's org or null]`.
fn decode_in(bytes: &[u8]) -> Option<(Receipt, Option<PublicKey>)> {
    let (envelope, org): (ByteBuf, Option<PublicKey>) = codec::decode(bytes).ok()?;
    let r = Signed::<Receipt>::decode(&envelope).ok()?;
    Some((r.body().clone(), org))
}

/// Deletes, in the writer's transaction, what was kept for alerts it just pruned
/// (`(id, origin)` pairs): the receipt and sighting this node signed for each, the
/// receipts and sightings it received for it, and its acknowledgement deadline. They
/// are only read for an alert still held, and would otherwise grow with every alert
/// ever received (and be scanned on each connect of the origin).
pub(super) fn forget_pruned(
    txn: &WriteTransaction,
    pruned: &[(AlertId, PublicKey)],
) -> Result<(), StoreError> {
    if pruned.is_empty() {
        return Ok(());
    }
    let mut receipts_out = txn.open_table(RECEIPTS_OUT)?;
    let mut sightings_out = txn.open_table(SIGHTINGS_OUT)?;
    let mut receipts_in = txn.open_table(RECEIPTS_IN)?;
    let mut sightings = txn.open_table(SIGHTINGS)?;
    let mut deadlines = txn.open_table(ACK_DEADLINES)?;
    for (AlertId(id), PublicKey(origin)) in pruned {
        receipts_out.remove((*origin, *id))?;
        sightings_out.remove((*origin, *id))?;
        let of_alert = (*id, [0u8; 32])..=(*id, [0xffu8; 32]);
        receipts_in.retain_in(of_alert.clone(), |_, _| false)?;
        sightings.retain_in(of_alert, |_, _| false)?;
        deadlines.remove(id)?;
    }
    Ok(())
}
