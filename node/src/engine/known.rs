//! The alerts a node holds: their metadata, which are cancelled, which are accepted but
//! not yet committed, the envelope cache that answers `Want` without a disk read, and
//! the node's append log (seq → id) that answers catch-up.
//!
//! Two tiers. Without a [`ColdAlerts`] (the simulator, unit tests) every alert held is in
//! memory and so is the log. With one (the daemon: the store), memory holds only the
//! alerts accepted lately ([`HOT_ALERTS`] committed ones at most, and every one not yet
//! committed); the rest, and the log, are read from the store when asked for. So the
//! node's memory and its start-up do not grow with what it has stored.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tocsin_proto::{AlertId, AlertSummary, Kind, PublicKey, SignedAlert};

/// Committed alerts kept in memory beside a [`ColdAlerts`] (the latest committed or
/// read), so that the duplicates and announces of what is gossiped now are answered
/// without a store read.
pub const HOT_ALERTS: usize = 16_384;

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

/// The committed alerts and the log, read where they are kept (the store) instead of
/// held in memory. Reads are synchronous and must be quick (a B-tree lookup). A read
/// that fails answers as if the alert were not held, except [`Self::is_cancelled`],
/// which then answers that it is (nothing is sent on that might be cancelled); the
/// store reports its own failures.
pub trait ColdAlerts: Send {
    /// Whether the alert is stored and readable ([`Self::get`] finds it).
    fn contains(&self, id: &AlertId) -> bool;
    /// A stored alert's metadata.
    fn get(&self, id: &AlertId) -> Option<KnownAlert>;
    /// Whether a stored cancel by `origin` names `id` (stored or not).
    fn is_cancelled(&self, id: &AlertId, origin: &PublicKey) -> bool;
    /// The log's entries after `after`, in order, at most `limit` of them, each with the
    /// alert stored at that seq, or `None` where that alert is no longer stored there
    /// (pruned, or stored again at a later seq). Dead entries count against `limit`, so
    /// a read costs at most `limit` entries however much was pruned.
    fn log_after(&self, after: u64, limit: usize) -> Vec<(u64, Option<AlertId>)>;
    /// The highest seq in the log (0 when empty).
    fn head(&self) -> u64;
    /// How many alerts are stored.
    fn len(&self) -> usize;
    /// Whether no alert is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The alerts held, the cancels among them, and the log.
pub struct Known {
    /// The stored alerts and the log, when they are not all held here.
    cold: Option<Box<dyn ColdAlerts>>,
    /// With `cold`: the committed alerts in `alerts`, oldest first, to drop beyond
    /// `hot_cap` (ids dropped meanwhile are skipped).
    hot_order: VecDeque<AlertId>,
    /// [`HOT_ALERTS`], lower in tests.
    hot_cap: usize,
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
    /// Our append log (seq → id), for answering catch-up (without `cold` only).
    log: BTreeMap<u64, AlertId>,
    /// While the log may have a hole (commit notices were missed and the store's log
    /// is being read again): the head before the first hole, and the latest re-read.
    /// Catch-up pages do not go past it.
    log_gap: Option<(u64, u64)>,
}

impl std::fmt::Debug for Known {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Known")
            .field("cold", &self.cold.is_some())
            .field("hot", &self.alerts.len())
            .field("uncommitted", &self.uncommitted.len())
            .finish_non_exhaustive()
    }
}

impl Known {
    pub fn new(cache_cap: usize) -> Known {
        Known {
            cold: None,
            hot_order: VecDeque::new(),
            hot_cap: HOT_ALERTS,
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

    /// Reads the committed alerts and the log from `cold` from now on, instead of
    /// holding them (start-up, before any alert is handled).
    pub fn set_cold(&mut self, cold: Box<dyn ColdAlerts>) {
        self.cold = Some(cold);
        self.log.clear();
        self.log_gap = None;
    }

    /// Keeps at most `cap` committed alerts in memory beside `cold` (tests).
    #[cfg(test)]
    pub fn set_hot_cap(&mut self, cap: usize) {
        self.hot_cap = cap;
    }

    /// A stored alert at start-up, at `seq` in our log.
    pub fn load(&mut self, seq: u64, meta: KnownAlert) {
        self.log.insert(seq, meta.id());
        self.note_replacement(&meta);
        self.alerts.insert(meta.id(), Box::new(meta));
    }

    /// An alert held: from memory, else read from the store.
    pub fn get(&self, id: &AlertId) -> Option<Cow<'_, KnownAlert>> {
        if let Some(k) = self.alerts.get(id) {
            return Some(Cow::Borrowed(&**k));
        }
        self.cold.as_ref()?.get(id).map(Cow::Owned)
    }

    /// An alert held, to change: one read from the store is kept in memory from now on.
    pub fn get_mut(&mut self, id: &AlertId) -> Option<&mut KnownAlert> {
        if !self.alerts.contains_key(id) {
            let k = self.cold.as_ref()?.get(id)?;
            self.alerts.insert(*id, Box::new(k));
            self.hot_order.push_back(*id);
            self.trim_hot();
        }
        self.alerts.get_mut(id).map(|k| &mut **k)
    }

    /// The alerts held, a page at a time, for a walk over all of them that does not
    /// hold the engine up (a promotion): those of the log after `after`, at most `limit`
    /// entries of it (the whole log, whether or not it may have a hole), and once the
    /// log is read to its end (fewer entries than `limit`), those not yet committed (in
    /// id order, so that the order is the same on every run). Returns the alerts and
    /// where the next page starts, `None` after the last. An alert committed before its
    /// notice reached us is listed once, as not yet committed.
    pub fn page_of_all(&self, after: u64, limit: usize) -> (Vec<Cow<'_, KnownAlert>>, Option<u64>) {
        let rows: Vec<(u64, Option<AlertId>)> = match &self.cold {
            Some(c) => c.log_after(after, limit),
            None => self
                .log
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(seq, id)| (*seq, Some(*id)))
                .collect(),
        };
        let next = (rows.len() >= limit).then(|| rows.last().map_or(after, |(seq, _)| *seq));
        let mut ids: Vec<AlertId> = rows
            .into_iter()
            .filter_map(|(_, id)| id)
            .filter(|id| !self.uncommitted.contains(id))
            .collect();
        if next.is_none() {
            let mut pending: Vec<AlertId> = self.uncommitted.iter().copied().collect();
            pending.sort();
            ids.extend(pending);
        }
        let alerts = ids.iter().filter_map(|id| self.get(id)).collect();
        (alerts, next)
    }

    pub fn contains(&self, id: &AlertId) -> bool {
        self.alerts.contains_key(id) || self.cold.as_ref().is_some_and(|c| c.contains(id))
    }

    /// How many alerts are held (stored, and accepted but not yet committed).
    pub fn len(&self) -> usize {
        match &self.cold {
            Some(c) => c.len().saturating_add(self.uncommitted.len()),
            None => self.alerts.len(),
        }
    }

    /// Whether `id`, an alert by `origin`, was cancelled by its origin (with `cold`, also
    /// when the store cannot tell).
    pub fn is_cancelled(&self, id: &AlertId, origin: &PublicKey) -> bool {
        self.cancelled.contains(id)
            || self
                .cold
                .as_ref()
                .is_some_and(|c| c.is_cancelled(id, origin))
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
        if self.uncommitted.remove(id) && self.cold.is_some() {
            self.hot_order.push_back(*id);
            self.trim_hot();
        }
    }

    /// The store committed `id` at `seq`.
    pub fn committed(&mut self, seq: u64, id: AlertId) {
        let was_pending = self.uncommitted.remove(&id);
        if self.cold.is_none() {
            self.log.insert(seq, id);
        } else if was_pending {
            // Now readable from the store: kept here while it is among the latest.
            self.hot_order.push_back(id);
            self.trim_hot();
        }
    }

    /// Drops the oldest committed alerts from memory beyond [`HOT_ALERTS`] of them (with
    /// `cold`, which holds them). Those not yet committed stay, however many.
    fn trim_hot(&mut self) {
        while self.alerts.len().saturating_sub(self.uncommitted.len()) > self.hot_cap {
            let Some(old) = self.hot_order.pop_front() else {
                return;
            };
            if !self.uncommitted.contains(&old) {
                self.alerts.remove(&old);
                self.cache.remove(&old);
            }
        }
    }

    /// The store refused `id`: forget it, so a later copy can deliver it again.
    pub fn forget(&mut self, id: &AlertId) {
        self.uncommitted.remove(id);
        self.alerts.remove(id);
        self.cache.remove(id);
    }

    /// The highest sequence number in our log (0 when empty).
    pub fn head(&self) -> u64 {
        match &self.cold {
            Some(c) => c.head(),
            None => self.log.keys().next_back().copied().unwrap_or(0),
        }
    }

    /// Our log after sequence `after`, in order, up to where it may have a hole, at
    /// most `limit` entries, each with its alert or `None` where that alert is no longer
    /// stored there (see [`ColdAlerts::log_after`]). With `cold` it is the store's log,
    /// which has no hole.
    pub fn log_after(&self, after: u64, limit: usize) -> Vec<(u64, Option<AlertId>)> {
        if let Some(c) = &self.cold {
            return c.log_after(after, limit);
        }
        let end = self.log_gap.map_or(u64::MAX, |(head, _)| head);
        self.log
            .range(after.saturating_add(1)..)
            .take_while(move |(seq, _)| **seq <= end)
            .take(limit)
            .map(|(seq, id)| (*seq, Some(*id)))
            .collect()
    }

    /// Whether the committed alerts and the log are read from a [`ColdAlerts`].
    pub fn is_cold(&self) -> bool {
        self.cold.is_some()
    }

    /// Whether [`Self::log_after`] stops before a possible hole: `Some(head)` when it
    /// does, at `head`.
    pub fn log_gap_at(&self) -> Option<u64> {
        self.log_gap.map(|(head, _)| head)
    }

    /// Commit notices after the current head were missed. Without `cold`, re-read
    /// `gen` of the store's log follows ([`Self::log_resynced`]); the lowest such head
    /// holds until the latest re-read has completed: it started after every notice it
    /// replaces was missed, so it reads them all. With `cold` (whose log has no hole),
    /// every alert not yet committed here that the store now holds is durable: the
    /// missed notices were sent before this, so their commits are readable. Returns
    /// those alerts.
    pub fn log_gap(&mut self, gen: u64) -> Vec<AlertId> {
        if let Some(c) = &self.cold {
            let mut stored: Vec<AlertId> = self
                .uncommitted
                .iter()
                .filter(|id| c.contains(id))
                .copied()
                .collect();
            stored.sort();
            for id in &stored {
                self.durable(id);
            }
            return stored;
        }
        let head = self.head();
        let at = self.log_gap.map_or(head, |(at, _)| at.min(head));
        self.log_gap = Some((at, gen));
        Vec::new()
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
                match self.get(&target) {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tocsin_proto::Tlp;

    use super::*;
    use crate::engine::tests;

    /// A store: what was committed, shared with the test.
    #[derive(Default)]
    struct Cold {
        alerts: Arc<Mutex<BTreeMap<u64, KnownAlert>>>,
    }

    impl ColdAlerts for Cold {
        fn contains(&self, id: &AlertId) -> bool {
            self.get(id).is_some()
        }
        fn get(&self, id: &AlertId) -> Option<KnownAlert> {
            let alerts = self.alerts.lock().unwrap();
            alerts.values().find(|k| k.id() == *id).cloned()
        }
        fn is_cancelled(&self, _: &AlertId, _: &PublicKey) -> bool {
            false
        }
        fn log_after(&self, after: u64, limit: usize) -> Vec<(u64, Option<AlertId>)> {
            let alerts = self.alerts.lock().unwrap();
            let after = alerts.range(after.saturating_add(1)..).take(limit);
            after.map(|(seq, k)| (*seq, Some(k.id()))).collect()
        }
        fn head(&self) -> u64 {
            self.alerts
                .lock()
                .unwrap()
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0)
        }
        fn len(&self) -> usize {
            self.alerts.lock().unwrap().len()
        }
    }

    fn received(n: u64) -> KnownAlert {
        let alert = tests::alert(&tests::key(9), n, Tlp::Clear);
        KnownAlert::of(&alert, 3, Some(PublicKey([2; 32])))
    }

    #[test]
    fn beside_a_store_only_the_latest_alerts_stay_in_memory_and_none_is_lost() {
        let cold = Cold::default();
        let store = Arc::clone(&cold.alerts);
        let mut known = Known::new(2);
        known.set_cold(Box::new(cold));
        known.hot_cap = 4;
        let alerts: Vec<KnownAlert> = (1..=10).map(received).collect();
        for (seq, k) in (1..).zip(&alerts) {
            known.accept(k.clone(), Arc::new(vec![seq as u8]));
            known.mark_uncommitted(k.id());
            assert!(known.is_uncommitted(&k.id()));
        }
        // Not committed yet: all in memory, whatever the cap.
        assert_eq!(known.alerts.len(), 10);
        assert_eq!(known.len(), 10);
        for (seq, k) in (1..).zip(&alerts) {
            store.lock().unwrap().insert(seq, k.clone());
            known.committed(seq, k.id());
            known.check_invariants().unwrap();
        }
        assert_eq!(known.alerts.len(), 4, "the latest 4 stay");
        assert!(known.alerts.contains_key(&alerts[9].id()));
        assert!(!known.alerts.contains_key(&alerts[0].id()));
        assert_eq!(known.len(), 10);
        assert_eq!(known.head(), 10);
        for k in &alerts {
            assert!(known.contains(&k.id()));
            let got = known.get(&k.id()).unwrap();
            assert_eq!((got.hops, got.from), (3, Some(PublicKey([2; 32]))));
        }
        // A change to one read from the store is kept (in memory, among the latest).
        known.get_mut(&alerts[0].id()).unwrap().hops = 1;
        assert_eq!(known.get(&alerts[0].id()).unwrap().hops, 1);
        assert_eq!(known.alerts.len(), 4);
        known.check_invariants().unwrap();
        // Every alert, in log order, once, a page at a time.
        let (page, next) = known.page_of_all(0, 6);
        let mut order: Vec<AlertId> = page.iter().map(|k| k.id()).collect();
        assert_eq!(next, Some(6));
        let (page, next) = known.page_of_all(6, 6);
        order.extend(page.iter().map(|k| k.id()));
        assert_eq!(next, None);
        let want: Vec<AlertId> = alerts.iter().map(KnownAlert::id).collect();
        assert_eq!(order, want);
        assert_eq!(
            known.log_after(7, 10),
            vec![(8, Some(want[7])), (9, Some(want[8])), (10, Some(want[9]))]
        );
    }

    /// Commit notices missed (the daemon fell behind the store's): every alert the
    /// store now holds is taken as committed, at once, without reading the log again;
    /// one still in flight stays pending. Pending alerts never count against the cap.
    #[test]
    fn beside_a_store_missed_commit_notices_are_read_from_it_and_pending_alerts_stay() {
        let cold = Cold::default();
        let store = Arc::clone(&cold.alerts);
        let mut known = Known::new(0);
        known.set_cold(Box::new(cold));
        known.hot_cap = 2;
        let alerts: Vec<KnownAlert> = (1..=6).map(received).collect();
        for k in &alerts {
            known.accept(k.clone(), Arc::new(Vec::new()));
            known.mark_uncommitted(k.id());
        }
        // The store commits 5; the notices of the first two arrive.
        for (seq, k) in (1..).zip(&alerts[..5]) {
            store.lock().unwrap().insert(seq, k.clone());
        }
        known.committed(1, alerts[0].id());
        known.committed(2, alerts[1].id());
        assert_eq!(known.alerts.len(), 6, "2 committed (the cap), 4 pending");
        let mut missed: Vec<AlertId> = alerts[2..5].iter().map(KnownAlert::id).collect();
        missed.sort();
        assert_eq!(known.log_gap(1), missed);
        assert_eq!(known.log_gap_at(), None, "the store's log has no hole");
        for id in &missed {
            assert!(!known.is_uncommitted(id));
        }
        assert!(known.is_uncommitted(&alerts[5].id()));
        // In memory: the latest 2 committed, and the one still pending.
        assert_eq!(known.alerts.len(), 3);
        assert!(known.alerts.contains_key(&alerts[5].id()));
        assert_eq!(known.len(), 6);
        known.check_invariants().unwrap();
        // A walk over all lists each once: the log, then the pending one.
        let (page, next) = known.page_of_all(0, 100);
        assert_eq!(next, None);
        let order: Vec<AlertId> = page.iter().map(|k| k.id()).collect();
        let want: Vec<AlertId> = alerts.iter().map(KnownAlert::id).collect();
        assert_eq!(order, want);
    }
}
