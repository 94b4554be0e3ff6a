//! The trust table, owned by the network actor.
//!
//! The actor is the one owner of the table: the API asks it for entries and sends it
//! changes, and it applies changes one at a time. A change is planned against the
//! current table ([`TrustTable::plan`]), committed together with its audit record in
//! one store transaction ([`crate::store::Store::commit_trust`]), and applied to the
//! table only once that commit returns ([`TrustTable::apply`]). The next change is
//! planned only after that, so two concurrent changes never work from the same stale
//! copy.

use std::collections::{HashMap, VecDeque};

use tocsin_proto::api::{AuditRecord, TrustChanged, TrustEntry};
use tocsin_proto::{PublicKey, TrustLevel};
use tokio::sync::oneshot;

use crate::store::TrustCommit;

/// Longest peer name in a trust entry, in bytes.
pub const MAX_PEER_NAME_BYTES: usize = 256;
/// Most addresses in a trust entry.
pub const MAX_PEER_ADDRS: usize = 16;

/// Checks a trust entry's fields the same way wherever it comes from (the config's
/// `[[peers]]`, the trust API): a key that is a valid ed25519 point, a bounded name, and
/// at most [`MAX_PEER_ADDRS`] multiaddrs. The error is the field at fault and why.
pub fn check_peer(
    key: &PublicKey,
    name: Option<&str>,
    addrs: &[String],
) -> Result<(), (&'static str, String)> {
    if !key.is_valid_point() || crate::keys::peer_id(key).is_none() {
        return Err((
            "key",
            format!("{key} is not a valid ed25519 public key (a canonical point of large order)"),
        ));
    }
    if let Some(name) = name {
        if name.len() > MAX_PEER_NAME_BYTES {
            return Err((
                "name",
                format!(
                    "name is {} bytes, exceeds the limit of {MAX_PEER_NAME_BYTES}",
                    name.len()
                ),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(("name", "name must not contain control characters".into()));
        }
    }
    if addrs.len() > MAX_PEER_ADDRS {
        return Err((
            "addrs",
            format!("{} addresses, more than {MAX_PEER_ADDRS}", addrs.len()),
        ));
    }
    for a in addrs {
        if a.parse::<libp2p::Multiaddr>().is_err() {
            return Err((
                "addrs",
                format!("{a:?} is not a multiaddr (e.g. /ip4/192.0.2.7/tcp/7400)"),
            ));
        }
    }
    Ok(())
}

/// A requested change of the trust table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChange {
    /// Adds an entry, or replaces the whole entry for its key.
    Put(TrustEntry),
    /// Changes the given fields of an existing entry.
    Patch {
        key: PublicKey,
        level: Option<TrustLevel>,
        name: Option<String>,
        addrs: Option<Vec<String>>,
    },
    /// Removes an existing entry.
    Remove { key: PublicKey },
}

impl TrustChange {
    /// Whose entry it changes.
    pub fn key(&self) -> PublicKey {
        match self {
            TrustChange::Put(e) => e.key,
            TrustChange::Patch { key, .. } | TrustChange::Remove { key } => *key,
        }
    }
}

/// Who asked for a change, and why: recorded in its audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedBy {
    /// `api` or `config`.
    pub source: &'static str,
    /// The Unix user on the control socket, `token` on TCP, `config` at start-up.
    pub who: String,
    /// The reason given with the change, if any.
    pub reason: Option<String>,
}

/// Why a trust change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// A patch or removal of a key that has no entry.
    #[error("no trust entry for {0}")]
    NotFound(PublicKey),
    /// The commit failed; the table is unchanged.
    #[error("the trust change was not stored: {0}")]
    Store(String),
    /// The network actor is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// The reply to a trust change: old and new level once committed.
pub type TrustReply = oneshot::Sender<Result<TrustChanged, TrustError>>;

/// The in-memory trust table and the queue of changes waiting for their turn.
#[derive(Debug, Default)]
pub struct TrustTable {
    entries: HashMap<PublicKey, TrustEntry>,
    queue: VecDeque<(TrustChange, ChangedBy, TrustReply)>,
    in_flight: bool,
}

impl TrustTable {
    /// A table holding `entries` (as loaded from the store).
    pub fn new(entries: impl IntoIterator<Item = TrustEntry>) -> TrustTable {
        TrustTable {
            entries: entries.into_iter().map(|e| (e.key, e)).collect(),
            ..TrustTable::default()
        }
    }

    /// The entry for `key`.
    pub fn get(&self, key: &PublicKey) -> Option<&TrustEntry> {
        self.entries.get(key)
    }

    /// Whether an org entry may connect (then unknown peers are held for a certificate).
    pub fn admits_orgs(&self) -> bool {
        self.entries
            .values()
            .any(|e| e.org && TrustLevel::may_connect(Some(e.level)))
    }

    /// Every key with an entry.
    pub fn keys(&self) -> Vec<PublicKey> {
        self.entries.keys().copied().collect()
    }

    /// Every entry, ordered by name then key.
    pub fn list(&self) -> Vec<TrustEntry> {
        let mut v: Vec<TrustEntry> = self.entries.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
        v
    }

    /// What committing `change` would write, given the table as it is now.
    pub fn plan(
        &self,
        change: &TrustChange,
        by: &ChangedBy,
        now: u64,
    ) -> Result<TrustCommit, TrustError> {
        let key = change.key();
        let old = self.entries.get(&key);
        let entry = match change {
            TrustChange::Put(e) => Some(e.clone()),
            TrustChange::Patch {
                level, name, addrs, ..
            } => {
                let mut e = old.cloned().ok_or(TrustError::NotFound(key))?;
                if let Some(l) = level {
                    e.level = *l;
                }
                if let Some(n) = name {
                    e.name.clone_from(n);
                }
                if let Some(a) = addrs {
                    e.addrs.clone_from(a);
                }
                Some(e)
            }
            TrustChange::Remove { .. } => {
                old.ok_or(TrustError::NotFound(key))?;
                None
            }
        };
        let before_name = old.map(|e| e.name.clone()).unwrap_or_default();
        let after_name = entry.as_ref().map(|e| e.name.clone()).unwrap_or_default();
        let before_addrs = old.map(|e| e.addrs.clone()).unwrap_or_default();
        let after_addrs = entry.as_ref().map(|e| e.addrs.clone()).unwrap_or_default();
        let audit = AuditRecord {
            at: now,
            key,
            old: old.map(|e| e.level),
            new: entry.as_ref().map(|e| e.level),
            source: by.source.to_string(),
            who: by.who.clone(),
            name: (before_name != after_name).then_some((before_name, after_name)),
            addrs: (before_addrs != after_addrs).then_some((before_addrs, after_addrs)),
            org: {
                let before = old.is_some_and(|e| e.org);
                let after = entry.as_ref().is_some_and(|e| e.org);
                (before != after).then_some((before, after))
            },
            reason: by.reason.clone(),
        };
        Ok(TrustCommit { key, entry, audit })
    }

    /// Applies a committed change to the table.
    pub fn apply(&mut self, c: &TrustCommit) {
        match &c.entry {
            Some(e) => {
                self.entries.insert(c.key, e.clone());
            }
            None => {
                self.entries.remove(&c.key);
            }
        }
    }

    /// Queues a change behind the one in flight.
    pub fn enqueue(&mut self, change: TrustChange, by: ChangedBy, reply: TrustReply) {
        self.queue.push_back((change, by, reply));
    }

    /// The next queued change, unless one is in flight; marks it in flight.
    pub fn next_change(&mut self) -> Option<(TrustChange, ChangedBy, TrustReply)> {
        if self.in_flight {
            return None;
        }
        let next = self.queue.pop_front()?;
        self.in_flight = true;
        Some(next)
    }

    /// The change in flight is done (committed or failed).
    pub fn finished(&mut self) {
        self.in_flight = false;
    }

    /// Answers every queued change with `ShuttingDown`.
    pub fn drain(&mut self) {
        for (_, _, reply) in self.queue.drain(..) {
            let _ = reply.send(Err(TrustError::ShuttingDown));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn entry(n: u8, level: TrustLevel) -> TrustEntry {
        TrustEntry {
            key: key(n),
            level,
            name: format!("peer-{n}"),
            addrs: vec![],
            org: false,
        }
    }

    fn api() -> ChangedBy {
        ChangedBy {
            source: "api",
            who: "unix:alice (uid 1000)".into(),
            reason: Some("rotation".into()),
        }
    }

    #[test]
    fn patch_changes_only_given_fields_and_audits_old_and_new() {
        let t = TrustTable::new([entry(1, TrustLevel::Member)]);
        let c = t
            .plan(
                &TrustChange::Patch {
                    key: key(1),
                    level: Some(TrustLevel::Partner),
                    name: Some("CERT-A".into()),
                    addrs: None,
                },
                &api(),
                7,
            )
            .unwrap();
        let e = c.entry.clone().unwrap();
        assert_eq!((e.level, e.name.as_str()), (TrustLevel::Partner, "CERT-A"));
        assert_eq!(c.audit.old, Some(TrustLevel::Member));
        assert_eq!(c.audit.new, Some(TrustLevel::Partner));
        assert_eq!(
            c.audit.name,
            Some(("peer-1".to_string(), "CERT-A".to_string()))
        );
        assert_eq!(c.audit.addrs, None);
        assert_eq!(c.audit.who, "unix:alice (uid 1000)");
        assert_eq!(c.audit.reason.as_deref(), Some("rotation"));
        assert_eq!(c.audit.at, 7);
    }

    #[test]
    fn patch_or_remove_of_a_missing_key_is_not_found() {
        let t = TrustTable::new([]);
        let patch = TrustChange::Patch {
            key: key(2),
            level: Some(TrustLevel::Public),
            name: None,
            addrs: None,
        };
        assert_eq!(t.plan(&patch, &api(), 0), Err(TrustError::NotFound(key(2))));
        assert_eq!(
            t.plan(&TrustChange::Remove { key: key(2) }, &api(), 0),
            Err(TrustError::NotFound(key(2)))
        );
    }

    #[test]
    fn changes_run_one_at_a_time_in_order() {
        let mut t = TrustTable::new([]);
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        t.enqueue(TrustChange::Put(entry(1, TrustLevel::Member)), api(), a);
        t.enqueue(TrustChange::Put(entry(2, TrustLevel::Member)), api(), b);
        let (first, by, _) = t.next_change().unwrap();
        assert_eq!(first.key(), key(1));
        assert!(t.next_change().is_none(), "second waits for the first");
        let c = t.plan(&first, &by, 0).unwrap();
        t.apply(&c);
        t.finished();
        let (second, by, _) = t.next_change().unwrap();
        assert_eq!(second.key(), key(2));
        let c = t.plan(&second, &by, 0).unwrap();
        t.apply(&c);
        t.finished();
        assert_eq!(t.list().len(), 2, "both changes survive");
    }

    #[test]
    fn remove_audits_the_old_level() {
        let t = TrustTable::new([entry(3, TrustLevel::Blocked)]);
        let c = t
            .plan(&TrustChange::Remove { key: key(3) }, &api(), 1)
            .unwrap();
        assert_eq!(c.entry, None);
        assert_eq!(
            (c.audit.old, c.audit.new),
            (Some(TrustLevel::Blocked), None)
        );
    }
}
