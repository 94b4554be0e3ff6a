//! The node's own state in the store, beside the alerts: catch-up cursors, the trust
//! table and its audit log, and revocations of node keys. Each change is one durable write transaction of its own
//! (not through the alert writer), refused while the store is degraded.

use redb::{Durability, ReadableTable, ReadableTableMetadata};
use serde_bytes::ByteBuf;
use tocsin_proto::identity::{NodeCert, RevocationProof, Signed};
use tocsin_proto::{codec, PublicKey};

use super::schema::{AGENCIES, AUDIT, CURSORS, QUARANTINE, REVOCATIONS, TRUST, WEBHOOKS};
use super::{AuditRecord, Store, StoreError, TrustCommit, TrustEntry};

/// A saved catch-up cursor: the peer's log epoch and the last seq fully received.
pub type Cursor = (u64, u64);

/// Opens a table that is created on its first write: None while it does not exist.
pub(super) fn optional_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// How many damaged alert records have been moved to the quarantine table.
    pub fn quarantined(&self) -> Result<u64, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        match txn.open_table(QUARANTINE) {
            Ok(t) => Ok(t.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Per-peer catch-up cursor: the peer's log epoch and the last seq fully received
    /// from it.
    pub fn cursor(&self, peer: &PublicKey) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let found = txn.open_table(CURSORS)?.get(&peer.0)?;
        Ok(found.map(|g| g.value()))
    }

    /// Every saved catch-up cursor, by peer key: (peer, (epoch, seq)).
    pub fn cursors(&self) -> Result<Vec<(PublicKey, Cursor)>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(CURSORS)?.iter()? {
            let (k, v) = row?;
            out.push((PublicKey(k.value()), v.value()));
        }
        Ok(out)
    }

    /// Sets a peer's catch-up cursor (one committed, durable write transaction).
    pub fn set_cursor(&self, peer: &PublicKey, epoch: u64, seq: u64) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(CURSORS)?.insert(&peer.0, (epoch, seq))?;
            Ok(())
        })
    }

    /// A webhook's cursor: the last log seq it has handled (`None` for a new webhook).
    pub fn webhook_cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        match txn.open_table(WEBHOOKS) {
            Ok(t) => Ok(t.get(name)?.map(|g| g.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets a webhook's cursor (one committed, durable write transaction).
    pub fn set_webhook_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(WEBHOOKS)?.insert(name, seq)?;
            Ok(())
        })
    }

    /// Every stored revocation with its certificate (envelopes), ordered by node key.
    /// A pair that no longer verifies is skipped with a warning: it changes nothing, and
    /// peers send it again.
    pub fn revocations(&self) -> Result<Vec<RevocationProof>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let Some(table) = optional_table(&txn, REVOCATIONS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let pair: Result<(ByteBuf, ByteBuf), _> = codec::decode(v.value());
            match pair
                .map_err(|e| e.to_string())
                .and_then(|(r, c)| RevocationProof::verify(&r, &c).map_err(|e| e.to_string()))
            {
                Ok(proof) => out.push(proof),
                Err(e) => {
                    tracing::warn!(node = %PublicKey(k.value()).fmt_short(), error = %e, "a stored revocation no longer verifies; skipped")
                }
            }
        }
        Ok(out)
    }

    /// Stores a revocation (one durable write), replacing the one held for its node key.
    pub fn put_revocation(&self, proof: &RevocationProof) -> Result<(), StoreError> {
        let pair = (
            ByteBuf::from(proof.revocation_bytes()),
            ByteBuf::from(proof.cert_bytes()),
        );
        let bytes = codec::encode(&pair).map_err(|err| StoreError::Encode {
            what: "revocation",
            reason: err.to_string(),
        })?;
        let node = proof.revocation().node;
        self.write(|txn| {
            txn.open_table(REVOCATIONS)?
                .insert(&node.0, bytes.as_slice())?;
            Ok(())
        })
    }

    /// Every node certificate kept (see [`Store::put_agency`]), checked again: one that no
    /// longer verifies, or that certifies another key than its row's, is skipped with a
    /// warning.
    pub fn agencies(&self) -> Result<Vec<NodeCert>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let Some(table) = optional_table(&txn, AGENCIES)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let node = PublicKey(k.value());
            match Signed::<NodeCert>::decode_verified(v.value()) {
                Ok(c) if c.body().node == node => out.push(c.body().clone()),
                Ok(_) => {
                    tracing::warn!(node = %node.fmt_short(), "a stored certificate names another node key; skipped")
                }
                Err(e) => {
                    tracing::warn!(node = %node.fmt_short(), error = %e, "a stored certificate no longer verifies; skipped")
                }
            }
        }
        Ok(out)
    }

    /// Keeps the certificate a node presented here (one durable write), replacing the one
    /// held for its key.
    pub fn put_agency(&self, node: &PublicKey, cert: &[u8]) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(AGENCIES)?.insert(&node.0, cert)?;
            Ok(())
        })
    }

    /// Forgets the revocation of a node key.
    pub fn drop_revocation(&self, node: &PublicKey) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(REVOCATIONS)?.remove(&node.0)?;
            Ok(())
        })
    }

    /// The persisted trust table, ordered by key.
    pub fn trust_entries(&self) -> Result<Vec<TrustEntry>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let table = txn.open_table(TRUST)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let entry: TrustEntry = codec::decode(v.value()).map_err(|e| StoreError::Corrupt {
                what: format!("trust entry {}", PublicKey(k.value())),
                reason: e.to_string(),
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Commits one trust change: the entry for `c.key` is put (or removed when
    /// `c.entry` is `None`) and `c.audit` appended to the audit log, in one durable
    /// write transaction, so no entry ever changes without its audit record. Returns
    /// whether an entry for the key was there before.
    pub fn commit_trust(&self, c: &TrustCommit) -> Result<bool, StoreError> {
        let entry = match &c.entry {
            Some(e) => Some(codec::encode(e).map_err(|err| StoreError::Encode {
                what: "trust entry",
                reason: err.to_string(),
            })?),
            None => None,
        };
        let audit = codec::encode(&c.audit).map_err(|err| StoreError::Encode {
            what: "audit record",
            reason: err.to_string(),
        })?;
        self.write(|txn| {
            let existed = {
                let mut trust = txn.open_table(TRUST)?;
                match &entry {
                    Some(bytes) => trust.insert(&c.key.0, bytes.as_slice())?.is_some(),
                    None => trust.remove(&c.key.0)?.is_some(),
                }
            };
            let mut log = txn.open_table(AUDIT)?;
            let next = match log.last()? {
                Some((k, _)) => k.value().saturating_add(1),
                None => 1,
            };
            log.insert(next, audit.as_slice())?;
            Ok(existed)
        })
    }

    /// The last `limit` audit records, oldest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let txn = self.slot.get()?.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in table.iter()?.rev().take(limit) {
            let (k, v) = row?;
            let rec: AuditRecord = codec::decode(v.value()).map_err(|e| StoreError::Corrupt {
                what: format!("audit record {}", k.value()),
                reason: e.to_string(),
            })?;
            out.push(rec);
        }
        out.reverse();
        Ok(out)
    }

    /// Runs `f` in a durable write transaction of its own and commits it.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_with(true, f)
    }

    /// [`Store::write`], committed durably (fsync) or not (`durable` false: persisted by
    /// the next durable commit; lost if the node crashes before it).
    pub(super) fn write_with<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(reason) = self.slot.reason() {
            return Err(StoreError::Degraded(reason));
        }
        let attempt = || {
            let mut txn = self.slot.get()?.begin_write()?;
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            });
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        };
        attempt().inspect_err(|e| {
            self.slot.degrade_on(e);
        })
    }
}
