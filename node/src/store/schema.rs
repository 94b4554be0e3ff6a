//! Table definitions and key encodings. The layout is documented in the module doc of
//! [`crate::store`]; keep the two in step.

use redb::{MultimapTableDefinition, TableDefinition};
use tocsin_proto::{codec, AlertBody, AlertId, Kind, SignedAlert, Tlp};

use super::{Receipt, StoreError};

/// `meta`: `&str -> u64`. Keys [`META_SCHEMA`] and [`META_EPOCH`]. Never changes layout,
/// so that any build can read a newer file's schema version and refuse it.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key of the schema version in [`META`].
pub(super) const META_SCHEMA: &str = "schema_version";
/// Key of the log epoch in [`META`].
pub(super) const META_EPOCH: &str = "epoch";

/// Value of [`ALERTS`]: local sequence number, CBOR receipt, envelope bytes.
pub(super) type AlertValue = (u64, &'static [u8], &'static [u8]);
/// `alerts`: alert id -> (seq, receipt CBOR, envelope bytes).
pub(super) const ALERTS: TableDefinition<[u8; 32], AlertValue> = TableDefinition::new("alerts");

/// `log`: seq -> alert id. The local append log; entries are never removed.
pub(super) const LOG: TableDefinition<u64, [u8; 32]> = TableDefinition::new("log");

/// `added`: when a log entry was added, unix microseconds -> its seq. Strictly
/// increasing with seq (a clock that steps back does not reorder it), so "added after
/// T" is a range of this table and names exactly the entries a reader has not seen:
/// the `date_added` that TAXII clients page and poll with. Entries of pruned alerts
/// stay, like the log's.
pub(super) const ADDED: TableDefinition<u64, u64> = TableDefinition::new("added");

/// Value of [`STATUS`] and the replacement part of [`REPLACED_BY`]:
/// (rank: 1 = update, 2 = cancel; replacer's issued_at; replacer id). Tuples compare
/// lexicographically, so the greatest one is the replacement that wins.
pub(super) type StatusValue = (u8, u64, [u8; 32]);
/// `status`: id of a *stored* alert that a same-origin update or cancel replaced ->
/// the winning replacement. Absent = not replaced.
pub(super) const STATUS: TableDefinition<[u8; 32], StatusValue> = TableDefinition::new("status");

/// Value of [`REPLACED_BY`]: (rank, replacer issued_at, replacer id, replacer origin).
pub(super) type EdgeValue = (u8, u64, [u8; 32], [u8; 32]);
/// `replaced_by`: multimap, id named in `replaces` -> every stored update/cancel naming
/// it, from any origin. Kept whether or not the target is stored, so a target that
/// arrives after its cancel is cancelled on arrival.
pub(super) const REPLACED_BY: MultimapTableDefinition<[u8; 32], EdgeValue> =
    MultimapTableDefinition::new("replaced_by");

/// `cursors`: peer key -> (peer's log epoch, last seq received from it).
pub(super) const CURSORS: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("cursors");
/// `trust`: peer key -> CBOR `TrustEntry`.
pub(super) const TRUST: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("trust");
/// `audit`: append counter -> CBOR `AuditRecord`.
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Webhook name → the last log seq it has handled (delivered or filtered out): its
/// outbox is the log after this seq.
pub(super) const WEBHOOKS: TableDefinition<&str, u64> = TableDefinition::new("webhooks");
/// `revocations`: revoked node key -> CBOR `[revocation envelope, certificate
/// envelope]` (a [`tocsin_proto::identity::RevocationProof`]). Kept forever: the
/// earliest revocation of each node key.
pub(super) const REVOCATIONS: TableDefinition<[u8; 32], &[u8]> =
    TableDefinition::new("revocations");
/// `agencies`: node key -> the certificate envelope it presented here (its own, over its
/// Noise key): which agency certified it, kept after the certificate expires, so that a
/// blocked org blocks its nodes' alerts and alerts keep their agency across restarts.
/// Bounded by the runtime (`MAX_AGENCY_NODES`).
pub(super) const AGENCIES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("agencies");
/// `receipts_out`: (origin, alert id) -> (when signed, unix ms; receipt envelope): the
/// receipts this node signed for AMBER and RED alerts it received, resent to the origin
/// when it reconnects.
pub(super) const RECEIPTS_OUT: TableDefinition<PairKey, (u64, &[u8])> =
    TableDefinition::new("receipts_out");
/// Two 32-byte keys (origin or alert id, then alert id or receiver).
pub(super) type PairKey = ([u8; 32], [u8; 32]);
/// `receipts_in`: (alert id, receiver) -> CBOR `[receipt envelope, receiver's org or
/// null]`: receipts for this node's own alerts, an acknowledgement replacing a delivery
/// receipt.
pub(super) const RECEIPTS_IN: TableDefinition<PairKey, &[u8]> = TableDefinition::new("receipts_in");
/// `sightings`: (alert id, observer) -> sighting envelope: each observer's newest
/// sighting of an alert (by `last_seen`).
pub(super) const SIGHTINGS: TableDefinition<PairKey, &[u8]> = TableDefinition::new("sightings");
/// `sightings_out`: (origin, alert id) -> (last seen, unix ms; sighting envelope): this
/// node's own newest sighting of each alert of another origin, sent again to the origin
/// when it connects.
pub(super) const SIGHTINGS_OUT: TableDefinition<PairKey, (u64, &[u8])> =
    TableDefinition::new("sightings_out");
/// `ack_deadlines`: alert id -> (deadline, unix ms; reported): when every recipient of
/// one of this node's RED alerts should have acknowledged it.
pub(super) const ACK_DEADLINES: TableDefinition<[u8; 32], (u64, bool)> =
    TableDefinition::new("ack_deadlines");
/// `quarantine`: alert id -> the raw `alerts` record (seq, receipt, envelope) of a
/// stored alert that no longer decodes, moved aside at start-up.
pub(super) const QUARANTINE: TableDefinition<[u8; 32], AlertValue> =
    TableDefinition::new("quarantine");

/// The secondary indexes. Every index is a `&[u8] -> ()` table whose key is
/// `prefix ‖ sort key (u64 big-endian) ‖ alert id (32 bytes)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Index {
    /// `idx_time`: prefix empty, sorted by issued_at.
    Time,
    /// `idx_origin`: prefix = origin key (32 bytes), sorted by issued_at.
    Origin,
    /// `idx_severity`: prefix = severity rank (1 byte, 0 = info .. 4 = critical).
    Severity,
    /// `idx_tlp`: prefix = TLP code (1 byte, 0 = CLEAR .. 4 = RED).
    Tlp,
    /// `idx_tag`: prefix = u16 big-endian length ‖ lowercased tag.
    Tag,
    /// `idx_indicator`: prefix = u16 big-endian length ‖ indicator value (exact).
    Indicator,
    /// `idx_expiry`: prefix empty, sorted by expires_at (only alerts that expire).
    Expiry,
}

impl Index {
    /// All indexes.
    pub(super) const ALL: [Index; 7] = [
        Index::Time,
        Index::Origin,
        Index::Severity,
        Index::Tlp,
        Index::Tag,
        Index::Indicator,
        Index::Expiry,
    ];

    /// Position of this index in [`Index::ALL`].
    pub(super) fn slot(self) -> usize {
        self as usize
    }

    /// The table of this index.
    pub(super) fn table(self) -> TableDefinition<'static, &'static [u8], ()> {
        TableDefinition::new(match self {
            Index::Time => "idx_time",
            Index::Origin => "idx_origin",
            Index::Severity => "idx_severity",
            Index::Tlp => "idx_tlp",
            Index::Tag => "idx_tag",
            Index::Indicator => "idx_indicator",
            Index::Expiry => "idx_expiry",
        })
    }
}

/// Length of the `sort key ‖ id` suffix of every index key.
pub(super) const SUFFIX_LEN: usize = 40;

/// `t` big-endian followed by `id`.
pub(super) fn suffix(t: u64, id: &[u8; 32]) -> [u8; SUFFIX_LEN] {
    let mut out = [0u8; SUFFIX_LEN];
    let (a, b) = out.split_at_mut(8);
    a.copy_from_slice(&t.to_be_bytes());
    b.copy_from_slice(id);
    out
}

/// The `(sort key, id)` at the end of an index key.
pub(super) fn split_suffix(key: &[u8]) -> Option<(u64, [u8; 32])> {
    let start = key.len().checked_sub(SUFFIX_LEN)?;
    let tail = key.get(start..)?;
    let (t, id) = tail.split_at(8);
    Some((u64::from_be_bytes(t.try_into().ok()?), id.try_into().ok()?))
}

/// Prefix for a variable-length string index; `None` if it is too long to have been
/// indexed (so it matches nothing).
pub(super) fn str_prefix(s: &str) -> Option<Vec<u8>> {
    let len = u16::try_from(s.len()).ok()?;
    let mut p = Vec::with_capacity(2 + s.len());
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(s.as_bytes());
    Some(p)
}

/// How tags are indexed and matched: trimmed and lowercased.
pub(super) fn norm_tag(t: &str) -> String {
    t.trim().to_lowercase()
}

/// Stable one-byte code of a TLP label.
pub(super) fn tlp_code(t: Tlp) -> u8 {
    match t {
        Tlp::Clear => 0,
        Tlp::Green => 1,
        Tlp::Amber => 2,
        Tlp::AmberStrict => 3,
        Tlp::Red => 4,
    }
}

/// Replacement rank of a kind: 0 new (replaces nothing), 1 update, 2 cancel.
pub(super) fn kind_rank(k: Kind) -> u8 {
    match k {
        Kind::New => 0,
        Kind::Update => 1,
        Kind::Cancel => 2,
    }
}

/// The index entries of one alert, all keys in one buffer (two allocations per alert
/// instead of one per key: the writer thread frees them).
#[derive(Debug, Default)]
pub(super) struct IndexKeys {
    bytes: Vec<u8>,
    /// Each entry's index and the end of its key in `bytes` (it starts where the
    /// previous one ends).
    ends: Vec<(Index, usize)>,
}

impl IndexKeys {
    /// Appends the key `prefix ‖ t ‖ id` to `index`.
    fn push(&mut self, index: Index, prefix: &[&[u8]], t: u64, id: &[u8; 32]) {
        for part in prefix {
            self.bytes.extend_from_slice(part);
        }
        self.bytes.extend_from_slice(&suffix(t, id));
        self.ends.push((index, self.bytes.len()));
    }

    /// Each entry: the index and the key.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Index, &[u8])> {
        let mut start = 0;
        self.ends.iter().filter_map(move |&(index, end)| {
            let key = self.bytes.get(start..end)?;
            start = end;
            Some((index, key))
        })
    }
}

/// Every index entry of an alert.
pub(super) fn index_entries(body: &AlertBody, id: &AlertId) -> IndexKeys {
    let id = &id.0;
    let t = body.issued_at;
    let mut out = IndexKeys {
        bytes: Vec::with_capacity(512),
        ends: Vec::with_capacity(16),
    };
    out.push(Index::Time, &[], t, id);
    out.push(Index::Origin, &[&body.origin.0], t, id);
    out.push(Index::Severity, &[&[body.severity.rank()]], t, id);
    out.push(Index::Tlp, &[&[tlp_code(body.tlp)]], t, id);
    let mut tags: Vec<String> = body.tags.iter().map(|t| norm_tag(t)).collect();
    tags.sort();
    tags.dedup();
    for tag in tags {
        if let Ok(len) = u16::try_from(tag.len()) {
            out.push(Index::Tag, &[&len.to_be_bytes(), tag.as_bytes()], t, id);
        }
    }
    let mut values: Vec<&str> = body.indicators.iter().map(|i| i.value.as_str()).collect();
    values.sort_unstable();
    values.dedup();
    for v in values {
        if let Ok(len) = u16::try_from(v.len()) {
            out.push(Index::Indicator, &[&len.to_be_bytes(), v.as_bytes()], t, id);
        }
    }
    if let Some(exp) = body.expires_at {
        out.push(Index::Expiry, &[], exp, id);
    }
    out
}

/// A [`StoreError::Corrupt`] for the alert `id`.
pub(super) fn corrupt(id: &[u8; 32], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: format!("alert {}", AlertId(*id)),
        reason: reason.into(),
    }
}

/// Decodes a stored alert record (without verifying the signature again: only verified
/// alerts are stored) and checks that it hashes to its key.
pub(super) fn decode_record(
    id: &[u8; 32],
    receipt: &[u8],
    envelope: &[u8],
) -> Result<(SignedAlert, Receipt), StoreError> {
    let alert = SignedAlert::decode(envelope).map_err(|e| corrupt(id, format!("envelope: {e}")))?;
    if alert.id().0 != *id {
        return Err(corrupt(id, "the envelope's body hashes to a different id"));
    }
    let receipt = decode_receipt(id, receipt)?;
    Ok((alert, receipt))
}

/// Decodes a stored receipt.
pub(super) fn decode_receipt(id: &[u8; 32], receipt: &[u8]) -> Result<Receipt, StoreError> {
    codec::decode(receipt).map_err(|e| corrupt(id, format!("receipt: {e}")))
}

/// Now, in unix microseconds.
pub(super) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
