//! The alerts a node holds: their metadata, which are cancelled, which are accepted but
//! not yet committed, the envelope cache that answers `Want` without a disk read, and
//! the node's append log (seq → id) that answers catch-up.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tocsin_proto::{AlertId, AlertSummary, Kind, PublicKey, SignedAlert};

/// What the engine knows about an alert it holds: its summary, and how it got here.
#[derive(Debug, Clone)]
pub struct KnownAlert {
    pub alert: AlertSummary,
    /// Hops from the origin when we got it (0 = issued here).
    pub hops: u8,
    /// The peer that delivered it (None = issued here).
    pub from: Option<PublicKey>,
}

impl KnownAlert {
    /// A signed alert received at `hops` from `from`.
    pub fn of(alert: &SignedAlert, hops: u8, from: Option<PublicKey>) -> Self {
        KnownAlert {
            alert: alert.summary(),
            hops,
            from,
        }
    }

    pub fn id(&self) -> AlertId {
        self.alert.id
    }
}

/// The alerts held, the cancels among them, and the log.
#[derive(Debug)]
pub struct Known {
    /// Boxed: a hash table keeps up to twice as many slots as entries (it grows by
    /// doubling), and an empty slot then costs the id and a pointer, not a whole
    /// `KnownAlert` (at a million alerts, about 180 MB less).
    alerts: HashMap<AlertId, Box<KnownAlert>>,
    /// Ids of alerts cancelled by their origin.
    cancelled: HashSet<AlertId>,
    /// Cancels whose target has not arrived yet: target → cancel's origin.
    early_cancels: HashMap<AlertId, Vec<PublicKey>>,
    /// Accepted and handed to the store, not yet committed.
    uncommitted: HashSet<AlertId>,
    cache: HashMap<AlertId, Arc<Vec<u8>>>,
    cache_order: VecDeque<AlertId>,
    cache_cap: usize,
    /// Our append log (seq → id), for answering catch-up.
    log: BTreeMap<u64, AlertId>,
    /// While the log may have a hole (commit notices were missed and the store's log
    /// is being read again): the head before the first hole, and the latest re-read.
    /// Catch-up pages do not go past it.
    log_gap: Option<(u64, u64)>,
}

impl Known {
    pub fn new(cache_cap: usize) -> Known {
        Known {
            alerts: HashMap::new(),
            cancelled: HashSet::new(),
            early_cancels: HashMap::new(),
            uncommitted: HashSet::new(),
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            cache_cap,
            log: BTreeMap::new(),
            log_gap: None,
        }
    }

    /// A stored alert at start-up, at `seq` in our log.
    pub fn load(&mut self, seq: u64, meta: KnownAlert) {
        self.log.insert(seq, meta.id());
        self.note_replacement(&meta);
        self.alerts.insert(meta.id(), Box::new(meta));
    }

    pub fn get(&self, id: &AlertId) -> Option<&KnownAlert> {
        self.alerts.get(id).map(|k| &**k)
    }

    pub fn get_mut(&mut self, id: &AlertId) -> Option<&mut KnownAlert> {
        self.alerts.get_mut(id).map(|k| &mut **k)
    }

    /// Every alert held: in log order, then those not yet committed (in id order, so
    /// that the order is the same on every run).
    pub fn in_log_order(&self) -> impl Iterator<Item = &KnownAlert> {
        let mut pending: Vec<&AlertId> = self.uncommitted.iter().collect();
        pending.sort();
        self.log
            .values()
            .chain(pending)
            .filter_map(|id| self.alerts.get(id).map(|k| &**k))
    }

    pub fn contains(&self, id: &AlertId) -> bool {
        self.alerts.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_cancelled(&self, id: &AlertId) -> bool {
        self.cancelled.contains(id)
    }

    pub fn is_uncommitted(&self, id: &AlertId) -> bool {
        self.uncommitted.contains(id)
    }

    /// The cached envelope of an alert, if still cached.
    pub fn envelope(&self, id: &AlertId) -> Option<&Arc<Vec<u8>>> {
        self.cache.get(id)
    }

    /// Holds a newly accepted alert (and caches its envelope).
    pub fn accept(&mut self, meta: KnownAlert, envelope: Arc<Vec<u8>>) {
        let id = meta.id();
        self.note_replacement(&meta);
        self.alerts.insert(id, Box::new(meta));
        if self.cache_cap > 0 {
            self.cache.insert(id, envelope);
            self.cache_order.push_back(id);
            while self.cache_order.len() > self.cache_cap {
                if let Some(old) = self.cache_order.pop_front() {
                    self.cache.remove(&old);
                }
            }
        }
    }

    /// An accepted alert was handed to the store.
    pub fn mark_uncommitted(&mut self, id: AlertId) {
        self.uncommitted.insert(id);
    }

    /// `id` is durable (the store already held it): no longer uncommitted.
    pub fn durable(&mut self, id: &AlertId) {
        self.uncommitted.remove(id);
    }

    /// The store committed `id` at `seq`.
    pub fn committed(&mut self, seq: u64, id: AlertId) {
        self.log.insert(seq, id);
        self.uncommitted.remove(&id);
    }

    /// The store refused `id`: forget it, so a later copy can deliver it again.
    pub fn forget(&mut self, id: &AlertId) {
        self.uncommitted.remove(id);
        self.alerts.remove(id);
        self.cache.remove(id);
    }

    /// The highest sequence number in our log (0 when empty).
    pub fn head(&self) -> u64 {
        self.log.keys().next_back().copied().unwrap_or(0)
    }

    /// Our log after sequence `after`, in order, up to where it may have a hole.
    pub fn log_after(&self, after: u64) -> impl Iterator<Item = (u64, &AlertId)> {
        let end = self.log_gap.map_or(u64::MAX, |(head, _)| head);
        self.log
            .range(after.saturating_add(1)..)
            .take_while(move |(seq, _)| **seq <= end)
            .map(|(seq, id)| (*seq, id))
    }

    /// Whether [`Self::log_after`] stops before a possible hole: `Some(head)` when it
    /// does, at `head`.
    pub fn log_gap_at(&self) -> Option<u64> {
        self.log_gap.map(|(head, _)| head)
    }

    /// Commit notices after the current head were missed; re-read `gen` of the store's
    /// log follows ([`Self::log_resynced`]). The lowest such head holds until the
    /// latest re-read has completed: it started after every notice it replaces was
    /// missed, so it reads them all.
    pub fn log_gap(&mut self, gen: u64) {
        let head = self.head();
        let at = self.log_gap.map_or(head, |(at, _)| at.min(head));
        self.log_gap = Some((at, gen));
    }

    /// Re-read `gen` of the store's log is complete: the log has no hole unless a later
    /// re-read is pending.
    pub fn log_resynced(&mut self, gen: u64) {
        if self.log_gap.is_some_and(|(_, latest)| latest == gen) {
            self.log_gap = None;
        }
    }

    fn note_replacement(&mut self, meta: &KnownAlert) {
        let meta = &meta.alert;
        if meta.kind == Kind::Cancel {
            if let Some(target) = meta.replaces {
                match self.alerts.get(&target) {
                    Some(t) if t.alert.origin == meta.origin => {
                        self.cancelled.insert(target);
                    }
                    Some(_) => {}
                    None => self
                        .early_cancels
                        .entry(target)
                        .or_default()
                        .push(meta.origin),
                }
            }
        }
        if let Some(origins) = self.early_cancels.remove(&meta.id) {
            if origins.contains(&meta.origin) {
                self.cancelled.insert(meta.id);
            }
        }
    }

    /// This part's invariants.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let Some(id) = self
            .uncommitted
            .iter()
            .find(|id| !self.alerts.contains_key(id))
        {
            return Err(format!("uncommitted {} is not held", id.fmt_short()));
        }
        if let Some(id) = self.cache.keys().find(|id| !self.alerts.contains_key(id)) {
            return Err(format!("cached envelope {} is not held", id.fmt_short()));
        }
        if self.cache.len() > self.cache_cap || self.cache.len() > self.cache_order.len() {
            return Err(format!(
                "envelope cache holds {} (cap {}, order {})",
                self.cache.len(),
                self.cache_cap,
                self.cache_order.len()
            ));
        }
        Ok(())
    }
}
