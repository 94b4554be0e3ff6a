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
use std::cell::{Cell, RefCell};
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

    /// As held by node `me`, and whether it was issued here under a former node key
    /// (stored at 0 hops by another origin: the node was re-keyed and kept its
    /// database). Such an alert is held as if received from its origin, at 1 hop, so
    /// that it is relayed as other origins' alerts are (CLEAR and GREEN; AMBER and RED
    /// stay with the partners that got them), with a hop count its receivers find
    /// honest.
    pub fn held_by(mut self, me: &PublicKey) -> (KnownAlert, bool) {
        let former = self.hops == 0 && self.alert.origin != *me;
        if former {
            self.hops = 1;
        }
        (self, former)
    }
}

/// Alerts and cancel answers read from a [`ColdAlerts`] kept for reading again (a page
/// of the log listed again, an alert looked up again): at most this many.
pub const READ_CACHE: usize = 16_384;
/// With a store, at most this many cancelled ids are kept in memory (the store's
/// `replaced_by` answers for the others).
pub const CANCELLED_KEPT: usize = 65_536;
/// At most this many targets of cancels that arrived before them are kept in memory.
pub const EARLY_CANCELS: usize = 65_536;
/// At most this many origins are kept for one early cancel's target (its own origin is
/// one; the rest are other agencies' cancels, which cancel nothing).
pub const EARLY_CANCEL_ORIGINS: usize = 8;

/// Lowered hop counts kept beside a [`ColdAlerts`] (which holds the count each alert
/// arrived with): at most this many, the oldest dropped first.
const LOWERED_HOPS: usize = 65_536;

/// The committed alerts and the log, read where they are kept (the store) instead of
/// held in memory. Reads are synchronous and should be quick (a B-tree lookup and a
/// decode). A read that fails answers as if the alert were not held, and
/// [`Self::is_cancelled`] with `None` (taken as cancelled: nothing is sent on that
/// might be); the store reports its own failures.
pub trait ColdAlerts: Send {
    /// Whether the alert is stored (committed), whether or not its record reads.
    fn contains(&self, id: &AlertId) -> bool;
    /// A stored alert's metadata.
    fn get(&self, id: &AlertId) -> Option<KnownAlert>;
    /// Whether a stored cancel by `origin` names `id` (stored or not); `None` when the
    /// store could not tell.
    fn is_cancelled(&self, id: &AlertId, origin: &PublicKey) -> Option<bool>;
    /// The log's entries after `after`, in order, at most `limit` of them, each with the
    /// alert stored at that seq, or `None` where that alert is no longer stored there
    /// (pruned, or stored again at a later seq). Dead entries count against `limit`, so
    /// a read costs at most `limit` entries however much was pruned. `None` when the
    /// log could not be read.
    fn log_after(&self, after: u64, limit: usize) -> Option<Vec<(u64, Option<AlertId>)>>;
    /// The highest seq in the log (0 when empty).
    fn head(&self) -> u64;
    /// How many alerts are stored.
    fn len(&self) -> usize;
    /// Whether no alert is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// How many reads failed so far (counted up). A record that does not decode is not
    /// a failed read: its alert is not held.
    fn failed_reads(&self) -> u64 {
        0
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
    /// Ids of alerts cancelled by their origin: all of them without `cold`; with it, the
    /// latest [`CANCELLED_KEPT`] (the store answers for the others), so that an origin
    /// issuing and cancelling alerts all day does not grow memory without end.
    cancelled: Bounded<()>,
    /// Cancels whose target has not arrived yet: target → cancels' origins
    /// ([`EARLY_CANCELS`] targets, [`EARLY_CANCEL_ORIGINS`] origins each, at most: a peer
    /// that sends cancels of ids that never come must not grow it without end; with a
    /// store, the store's own record of the cancel answers once one is dropped here).
    early_cancels: Bounded<Vec<PublicKey>>,
    /// Alerts whose signature is being checked off the engine's thread: copies out, and
    /// whether a copy was accepted meanwhile (the others are then duplicates, even if
    /// the accepted one has left memory by the time they come back).
    checking: HashMap<AlertId, (u32, bool)>,
    /// Accepted and handed to the store, not yet committed.
    uncommitted: HashSet<AlertId>,
    cache: HashMap<AlertId, Arc<Vec<u8>>>,
    cache_order: VecDeque<AlertId>,
    cache_cap: usize,
    /// With `cold`: alerts read from it, and the cancel answers read for them, kept for
    /// reading again ([`READ_CACHE`] at most). What it keeps does not go stale: an
    /// alert's summary never changes, a cancel that arrives later is in `cancelled` or
    /// `early_cancels`, which are asked first, and clears the answer kept for its
    /// target, and a pruned (expired) alert is not sent anyway.
    read: RefCell<Bounded<Read>>,
    /// With `cold`: ids the store was read for and did not hold ([`READ_CACHE`] at
    /// most), so that a catch-up alert (looked up when a page lists it, and again when
    /// it arrives) is read for once. Every alert stored while the node runs came
    /// through [`Self::accept`] first, which drops it from here.
    absent: RefCell<Bounded<()>>,
    /// Reads from `cold` that memory did not answer, counted up (the engine charges
    /// them to the peer whose frame caused them).
    misses: Cell<u64>,
    /// With `cold`: hop counts lowered by a shorter copy, which the store does not
    /// keep ([`LOWERED_HOPS`] at most).
    lowered: Bounded<Option<u8>>,
    /// Our append log (seq → id), for answering catch-up (without `cold` only).
    log: BTreeMap<u64, AlertId>,
    /// While the log may have a hole (commit notices were missed and the store's log
    /// is being read again): the head before the first hole, and the latest re-read.
    /// Catch-up pages do not go past it.
    log_gap: Option<(u64, u64)>,
}

/// A map of at most `cap` values (of alerts, or of other keys `K`), the oldest added
/// dropped first.
#[derive(Debug)]
pub(crate) struct Bounded<V, K = AlertId> {
    cap: usize,
    entries: HashMap<K, V>,
    /// Keys in the order they were added (one removed meanwhile still counts until it
    /// comes to the front).
    order: VecDeque<K>,
}

impl<V: Default, K: std::hash::Hash + Eq + Copy> Bounded<V, K> {
    pub(crate) fn new(cap: usize) -> Self {
        Bounded {
            cap,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn get(&self, id: &K) -> Option<&V> {
        self.entries.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &K) -> Option<&mut V> {
        self.entries.get_mut(id)
    }

    /// The value of `id`, added (as the default) if new, dropping the oldest beyond
    /// the cap.
    pub(crate) fn entry(&mut self, id: K) -> &mut V {
        if !self.entries.contains_key(&id) {
            while self.order.len() >= self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
            self.order.push_back(id);
        }
        self.entries.entry(id).or_default()
    }

    pub(crate) fn remove(&mut self, id: &K) -> Option<V> {
        self.entries.remove(id)
    }

    /// How many keys have a value.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What was read from a [`ColdAlerts`] about one alert, kept for reading again.
#[derive(Debug, Default)]
struct Read {
    alert: Option<KnownAlert>,
    cancelled: Option<bool>,
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
            cancelled: Bounded::new(usize::MAX),
            early_cancels: Bounded::new(EARLY_CANCELS),
            checking: HashMap::new(),
            uncommitted: HashSet::new(),
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            cache_cap,
            read: RefCell::new(Bounded::new(READ_CACHE)),
            absent: RefCell::new(Bounded::new(READ_CACHE)),
            misses: Cell::new(0),
            lowered: Bounded::new(LOWERED_HOPS),
            log: BTreeMap::new(),
            log_gap: None,
        }
    }

    /// Reads the committed alerts and the log from `cold` from now on, instead of
    /// holding them (start-up, before any alert is handled).
    pub fn set_cold(&mut self, cold: Box<dyn ColdAlerts>) {
        self.cold = Some(cold);
        self.cancelled.cap = CANCELLED_KEPT;
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
        self.absent.get_mut().remove(&meta.id());
        self.alerts.insert(meta.id(), Box::new(meta));
    }

    /// An alert held: from memory, else read from the store (and kept for reading
    /// again).
    pub fn get(&self, id: &AlertId) -> Option<Cow<'_, KnownAlert>> {
        if let Some(k) = self.alerts.get(id) {
            return Some(Cow::Borrowed(&**k));
        }
        let cold = self.cold.as_ref()?;
        let cached = self.read.borrow().get(id).and_then(|r| r.alert.clone());
        let mut k = match cached {
            Some(k) => k,
            None => {
                if self.absent.borrow().get(id).is_some() {
                    return None;
                }
                self.misses.set(self.misses.get().saturating_add(1));
                let failed = cold.failed_reads();
                let Some(k) = cold.get(id) else {
                    // Not held, unless the read failed (then it is asked again).
                    if cold.failed_reads() == failed {
                        *self.absent.borrow_mut().entry(*id) = ();
                    }
                    return None;
                };
                self.read.borrow_mut().entry(*id).alert = Some(k.clone());
                k
            }
        };
        if let Some(Some(hops)) = self.lowered.get(id) {
            k.hops = k.hops.min(*hops);
        }
        Some(Cow::Owned(k))
    }

    /// How many reads of the store failed so far (counted up): a page built meanwhile
    /// may lack what could not be read.
    pub fn failed_reads(&self) -> u64 {
        self.cold.as_ref().map_or(0, |c| c.failed_reads())
    }

    /// How many reads of the store memory did not answer so far (see
    /// [`Self::get`], [`Self::is_cancelled`]): the engine charges the difference to
    /// the peer whose frame caused them.
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    /// A shorter copy of `id` arrived: it is held at `hops` from now on (with `cold`,
    /// whose records keep the count the alert arrived with, also once it has left
    /// memory, among the latest [`LOWERED_HOPS`] lowered).
    pub fn lower_hops(&mut self, id: &AlertId, hops: u8) {
        if let Some(k) = self.alerts.get_mut(id) {
            k.hops = k.hops.min(hops);
        }
        if self.cold.is_none() {
            return;
        }
        let lowered = self.lowered.entry(*id);
        *lowered = Some(lowered.map_or(hops, |h| h.min(hops)));
    }

    /// The alerts held, a page at a time, for a walk over all of them that does not
    /// hold the engine up (a promotion): those of the log after `after`, at most `limit`
    /// entries of it (the whole log, whether or not it may have a hole), and once the
    /// log is read to its end (fewer entries than `limit`), those not yet committed (in
    /// id order, so that the order is the same on every run). Returns the alerts and
    /// where the next page starts (`None` after the last), or `None` if the store could
    /// not be read (try again later). An alert whose commit was under way during the
    /// walk may be listed twice (in the log, and as not yet committed), never not at all.
    pub fn page_of_all(
        &self,
        after: u64,
        limit: usize,
    ) -> Option<(Vec<Cow<'_, KnownAlert>>, Option<u64>)> {
        let rows: Vec<(u64, Option<AlertId>)> = match &self.cold {
            Some(c) => c.log_after(after, limit)?,
            None => self
                .log
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(seq, id)| (*seq, Some(*id)))
                .collect(),
        };
        let next = (rows.len() >= limit).then(|| rows.last().map_or(after, |(seq, _)| *seq));
        let mut ids: Vec<AlertId> = rows.into_iter().filter_map(|(_, id)| id).collect();
        if next.is_none() {
            let listed: HashSet<AlertId> = ids.iter().copied().collect();
            let mut pending: Vec<AlertId> = self
                .uncommitted
                .iter()
                .filter(|id| !listed.contains(id))
                .copied()
                .collect();
            pending.sort();
            ids.extend(pending);
        }
        let alerts = ids.iter().filter_map(|id| self.get(id)).collect();
        Some((alerts, next))
    }

    /// A copy of `id` went out to have its signature checked.
    pub fn check_started(&mut self, id: AlertId) {
        self.checking.entry(id).or_default().0 += 1;
    }

    /// A copy of `id` came back checked. Returns whether a copy of it was accepted while
    /// this one was out: this one is then a duplicate.
    pub fn check_ended(&mut self, id: &AlertId) -> bool {
        let Some((out, accepted)) = self.checking.get_mut(id) else {
            return false;
        };
        let accepted = *accepted;
        *out = out.saturating_sub(1);
        if *out == 0 {
            self.checking.remove(id);
        }
        accepted
    }

    /// Whether a copy of `id` is out to have its signature checked (it has arrived, and
    /// is neither held nor refused yet).
    pub fn is_checking(&self, id: &AlertId) -> bool {
        self.checking.contains_key(id)
    }

    /// Whether `id` is held in memory (uncommitted, among the latest committed, or all
    /// of them without a store), without reading the store.
    pub fn holds_in_memory(&self, id: &AlertId) -> bool {
        self.alerts.contains_key(id)
    }

    pub fn contains(&self, id: &AlertId) -> bool {
        self.alerts.contains_key(id) || (self.cold.is_some() && self.get(id).is_some())
    }

    /// How many alerts are held (stored, and accepted but not yet committed).
    pub fn len(&self) -> usize {
        match &self.cold {
            Some(c) => c.len().saturating_add(self.uncommitted.len()),
            None => self.alerts.len(),
        }
    }

    /// Whether a cancel naming `id` arrived here in this run (kept in memory: the latest
    /// cancelled ids, and cancels of ids not held), whatever its origin. A peer that
    /// announced or listed `id` and then did not send it when asked is not to blame
    /// then: it holds the cancel too, and cancelled alerts are not sent.
    pub fn cancel_seen(&self, id: &AlertId) -> bool {
        self.cancelled.get(id).is_some() || self.early_cancels.get(id).is_some()
    }

    /// Whether `id`, an alert by `origin`, was cancelled by its origin (with `cold`, also
    /// when the store cannot tell).
    pub fn is_cancelled(&self, id: &AlertId, origin: &PublicKey) -> bool {
        if self.cancelled.get(id).is_some() {
            return true;
        }
        // A cancel by its origin that arrived while the alert could not be read.
        if self
            .early_cancels
            .get(id)
            .is_some_and(|origins| origins.contains(origin))
        {
            return true;
        }
        let Some(cold) = &self.cold else {
            return false;
        };
        let cached = self.read.borrow().get(id).and_then(|r| r.cancelled);
        if let Some(answer) = cached {
            return answer;
        }
        self.misses.set(self.misses.get().saturating_add(1));
        match cold.is_cancelled(id, origin) {
            Some(answer) => {
                self.read.borrow_mut().entry(*id).cancelled = Some(answer);
                answer
            }
            None => true,
        }
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
        if let Some((_, accepted)) = self.checking.get_mut(&id) {
            *accepted = true;
        }
        self.note_replacement(&meta);
        self.absent.get_mut().remove(&id);
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
        // Not held after all: a copy still out for its check is no duplicate.
        if let Some((_, accepted)) = self.checking.get_mut(id) {
            *accepted = false;
        }
        self.uncommitted.remove(id);
        self.alerts.remove(id);
        self.cache.remove(id);
        if let Some(r) = self.read.get_mut().get_mut(id) {
            r.alert = None;
        }
        self.lowered.remove(id);
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
    /// which has no hole (and nothing, as if it ended there, if it cannot be read).
    pub fn log_after(&self, after: u64, limit: usize) -> Vec<(u64, Option<AlertId>)> {
        if let Some(c) = &self.cold {
            return c.log_after(after, limit).unwrap_or_default();
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
        if self.cold.is_some() {
            let pending: Vec<AlertId> = self.uncommitted.iter().copied().collect();
            return self.settle_stored(&pending);
        }
        let head = self.head();
        let at = self.log_gap.map_or(head, |(at, _)| at.min(head));
        self.log_gap = Some((at, gen));
        Vec::new()
    }

    /// With `cold`: each of `ids` not yet committed here that the store holds is
    /// durable (its commit notice was missed). Returns those alerts, in id order.
    pub fn settle_stored(&mut self, ids: &[AlertId]) -> Vec<AlertId> {
        let Some(c) = &self.cold else {
            return Vec::new();
        };
        let mut stored: Vec<AlertId> = ids
            .iter()
            .filter(|id| self.uncommitted.contains(id) && c.contains(id))
            .copied()
            .collect();
        stored.sort();
        for id in &stored {
            self.durable(id);
        }
        stored
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
                // The store's answer may change with this cancel: ask it again.
                if let Some(r) = self.read.get_mut().get_mut(&target) {
                    r.cancelled = None;
                }
                match self.get(&target) {
                    Some(t) if t.alert.origin == meta.origin => {
                        self.cancelled.entry(target);
                    }
                    Some(_) => {}
                    None => {
                        let origins = self.early_cancels.entry(target);
                        if !origins.contains(&meta.origin) && origins.len() < EARLY_CANCEL_ORIGINS {
                            origins.push(meta.origin);
                        }
                    }
                }
            }
        }
        if let Some(origins) = self.early_cancels.remove(&meta.id) {
            if origins.contains(&meta.origin) {
                self.cancelled.entry(meta.id);
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

    /// A store: what was committed, shared with the test (a clone shares it all);
    /// `failing` makes its reads fail, `reads` counts its alert reads.
    #[derive(Clone, Default)]
    struct Cold {
        alerts: Arc<Mutex<BTreeMap<u64, KnownAlert>>>,
        failing: Arc<Mutex<bool>>,
        reads: Arc<Mutex<u64>>,
        /// Ids a stored cancel names.
        cancels: Arc<Mutex<HashSet<AlertId>>>,
        /// An alert whose record cannot be read.
        unreadable: Arc<Mutex<Option<AlertId>>>,
        failures: Arc<Mutex<u64>>,
    }

    impl Cold {
        /// Whether a read fails (counted).
        fn fails(&self, id: Option<&AlertId>) -> bool {
            let fails = *self.failing.lock().unwrap()
                || id.is_some_and(|id| *self.unreadable.lock().unwrap() == Some(*id));
            if fails {
                *self.failures.lock().unwrap() += 1;
            }
            fails
        }
    }

    impl ColdAlerts for Cold {
        fn contains(&self, id: &AlertId) -> bool {
            let alerts = self.alerts.lock().unwrap();
            alerts.values().any(|k| k.id() == *id)
        }
        fn get(&self, id: &AlertId) -> Option<KnownAlert> {
            *self.reads.lock().unwrap() += 1;
            if self.fails(Some(id)) {
                return None;
            }
            let alerts = self.alerts.lock().unwrap();
            alerts.values().find(|k| k.id() == *id).cloned()
        }
        fn is_cancelled(&self, id: &AlertId, _: &PublicKey) -> Option<bool> {
            if self.fails(None) {
                return None;
            }
            Some(self.cancels.lock().unwrap().contains(id))
        }
        fn log_after(&self, after: u64, limit: usize) -> Option<Vec<(u64, Option<AlertId>)>> {
            if self.fails(None) {
                return None;
            }
            let alerts = self.alerts.lock().unwrap();
            let after = alerts.range(after.saturating_add(1)..).take(limit);
            Some(after.map(|(seq, k)| (*seq, Some(k.id()))).collect())
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
        fn failed_reads(&self) -> u64 {
            *self.failures.lock().unwrap()
        }
    }

    /// A `Known` reading committed alerts from `cold`, with no envelope cache.
    fn beside(cold: &Cold) -> Known {
        let mut known = Known::new(0);
        known.set_cold(Box::new(cold.clone()));
        known
    }

    fn received(n: u64) -> KnownAlert {
        let alert = tests::alert(&tests::key(9), n, Tlp::Clear);
        KnownAlert::of(&alert, 3, Some(PublicKey([2; 32])))
    }

    /// A cancel of `target` by `origin`, numbered `n` (not signed: `Known` takes what
    /// the engine checked).
    fn early_cancel(n: u64, origin: PublicKey, target: AlertId) -> KnownAlert {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&n.to_be_bytes());
        id[31] = 0xcc;
        let alert = AlertSummary {
            id: AlertId(id),
            origin,
            issued_at: n,
            tlp: Tlp::Clear,
            recipients: Vec::new(),
            expires_at: None,
            kind: Kind::Cancel,
            replaces: Some(target),
        };
        KnownAlert {
            alert,
            hops: 1,
            from: None,
        }
    }

    fn target_id(n: u64) -> AlertId {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&n.to_be_bytes());
        AlertId(id)
    }

    /// Beside a store, an origin that issues and cancels alerts without end does not
    /// grow the cancelled ids in memory without end; the store answers for older ones.
    #[test]
    fn cancelled_ids_beside_a_store_are_kept_within_a_bound_and_the_store_answers() {
        let cold = Cold::default();
        let mut known = beside(&cold);
        let origin = PublicKey([7; 32]);
        let pairs = CANCELLED_KEPT as u64 + 1_000;
        let base = received(1);
        for n in 1..=pairs {
            let mut target = base.clone();
            target.alert.id = target_id(n);
            target.alert.origin = origin;
            known.load(2 * n - 1, target);
            known.load(2 * n, early_cancel(n, origin, target_id(n)));
        }
        assert!(
            known.cancelled.entries.len() <= CANCELLED_KEPT,
            "{} cancelled ids in memory",
            known.cancelled.entries.len()
        );
        // The oldest left memory: the store's record of its cancel answers.
        cold.cancels.lock().unwrap().insert(target_id(1));
        assert!(known.is_cancelled(&target_id(1), &origin));
        assert!(known.is_cancelled(&target_id(pairs), &origin));
    }

    #[test]
    fn cancels_of_alerts_that_never_come_are_kept_within_a_bound() {
        let mut known = Known::new(0);
        let origin = PublicKey([7; 32]);
        let sent = EARLY_CANCELS as u64 + 5_000;
        for n in 1..=sent {
            known.load(n, early_cancel(n, origin, target_id(n)));
        }
        assert!(
            known.early_cancels.entries.len() <= EARLY_CANCELS,
            "{} targets kept",
            known.early_cancels.entries.len()
        );
        // The latest ones still cancel their target when it comes.
        let late = received(1);
        let mut target = late.clone();
        target.alert.id = target_id(sent);
        target.alert.origin = origin;
        known.load(sent + 1, target);
        assert!(known.is_cancelled(&target_id(sent), &origin));
        // One target named by many origins keeps a few of them, its own among them
        // when it came early.
        let named = target_id(u64::MAX);
        for n in 0..40u8 {
            let from = PublicKey([n; 32]);
            known.load(
                sent + 2 + u64::from(n),
                early_cancel(sent + 2 + u64::from(n), from, named),
            );
        }
        let kept = known.early_cancels.get(&named).map_or(0, Vec::len);
        assert_eq!(kept, EARLY_CANCEL_ORIGINS);
        assert!(known.is_cancelled(&named, &PublicKey([0; 32])));
        assert!(!known.is_cancelled(&named, &PublicKey([39; 32])));
    }

    #[test]
    fn beside_a_store_only_the_latest_alerts_stay_in_memory_and_none_is_lost() {
        let cold = Cold::default();
        let mut known = Known::new(2);
        known.set_cold(Box::new(cold.clone()));
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
            cold.alerts.lock().unwrap().insert(seq, k.clone());
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
        // A lowered hop count is kept, in memory or not.
        known.lower_hops(&alerts[0].id(), 1);
        known.lower_hops(&alerts[9].id(), 2);
        assert_eq!(known.get(&alerts[0].id()).unwrap().hops, 1);
        assert_eq!(known.get(&alerts[9].id()).unwrap().hops, 2);
        let later: Vec<KnownAlert> = (11..=16).map(received).collect();
        for (seq, k) in (11..).zip(&later) {
            known.accept(k.clone(), Arc::new(Vec::new()));
            known.mark_uncommitted(k.id());
            cold.alerts.lock().unwrap().insert(seq, k.clone());
            known.committed(seq, k.id());
        }
        assert!(
            !known.alerts.contains_key(&alerts[9].id()),
            "no longer in memory"
        );
        assert_eq!(known.get(&alerts[9].id()).unwrap().hops, 2);
        assert_eq!(known.alerts.len(), 4);
        known.check_invariants().unwrap();
        for seq in 11..=16 {
            cold.alerts.lock().unwrap().remove(&seq);
        }
        // Every alert, in log order, once, a page at a time.
        let (page, next) = known.page_of_all(0, 6).unwrap();
        let mut order: Vec<AlertId> = page.iter().map(|k| k.id()).collect();
        assert_eq!(next, Some(6));
        let (page, next) = known.page_of_all(6, 6).unwrap();
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
        let mut known = beside(&cold);
        known.hot_cap = 2;
        let alerts: Vec<KnownAlert> = (1..=6).map(received).collect();
        for k in &alerts {
            known.accept(k.clone(), Arc::new(Vec::new()));
            known.mark_uncommitted(k.id());
        }
        // The store commits 5; the notices of the first two arrive.
        for (seq, k) in (1..).zip(&alerts[..5]) {
            cold.alerts.lock().unwrap().insert(seq, k.clone());
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
        let (page, next) = known.page_of_all(0, 100).unwrap();
        assert_eq!(next, None);
        let order: Vec<AlertId> = page.iter().map(|k| k.id()).collect();
        let want: Vec<AlertId> = alerts.iter().map(KnownAlert::id).collect();
        assert_eq!(order, want);
    }

    /// An alert read from the store is read once, then answered from memory, and each
    /// read memory did not answer is counted (the engine charges it to the peer that
    /// caused it). A store that cannot tell whether an alert was cancelled makes it
    /// count as cancelled (not remembered); a log that cannot be read ends no walk.
    #[test]
    fn beside_a_store_reads_are_counted_kept_and_failures_answer_safely() {
        let cold = Cold::default();
        let known = beside(&cold);
        let alerts: Vec<KnownAlert> = (1..=3).map(received).collect();
        for (seq, k) in (1..).zip(&alerts) {
            cold.alerts.lock().unwrap().insert(seq, k.clone());
        }
        let (id, origin) = (alerts[0].id(), alerts[0].alert.origin);
        assert!(known.contains(&id));
        assert!(known.get(&id).is_some());
        assert!(!known.is_cancelled(&id, &origin));
        assert!(!known.is_cancelled(&id, &origin));
        assert_eq!(*cold.reads.lock().unwrap(), 1, "read once");
        assert_eq!(known.misses(), 2, "the alert and its cancels");
        assert!(!known.contains(&AlertId([7; 32])));
        assert_eq!(known.misses(), 3, "an absent alert is a read too");
        *cold.failing.lock().unwrap() = true;
        let other = alerts[1].id();
        assert!(
            known.is_cancelled(&other, &origin),
            "cannot tell: cancelled"
        );
        assert!(known.page_of_all(0, 10).is_none(), "try again later");
        assert!(known.log_after(0, 10).is_empty());
        *cold.failing.lock().unwrap() = false;
        assert!(!known.is_cancelled(&other, &origin), "not remembered");
        let (page, next) = known.page_of_all(0, 10).unwrap();
        assert_eq!((page.len(), next), (3, None));
    }

    /// An alert the store does not hold is read for once, not for each lookup (a
    /// catch-up alert is looked up when a page lists it and when it arrives), until it
    /// is accepted; a failed read is not taken for absence.
    #[test]
    fn beside_a_store_an_absent_alert_is_read_once_until_accepted() {
        let cold = Cold::default();
        let mut known = beside(&cold);
        let k = received(1);
        let id = k.id();
        assert!(!known.contains(&id));
        assert!(!known.contains(&id));
        assert!(known.get(&id).is_none());
        assert_eq!(known.misses(), 1, "one read for three lookups");
        known.accept(k.clone(), Arc::new(Vec::new()));
        assert!(known.contains(&id), "accepted: held");
        // Committed, then dropped from memory: read from the store again.
        cold.alerts.lock().unwrap().insert(1, k.clone());
        known.forget(&id);
        assert!(
            known.contains(&id),
            "the store holds it: not taken for absent"
        );
        // A failed read is asked again.
        let other = received(2).id();
        *cold.failing.lock().unwrap() = true;
        assert!(!known.contains(&other));
        *cold.failing.lock().unwrap() = false;
        let before = known.misses();
        assert!(!known.contains(&other));
        assert_eq!(known.misses(), before + 1, "read again after a failure");
        assert!(!known.contains(&other));
        assert_eq!(known.misses(), before + 1, "then kept as absent");
    }

    /// A cancel that arrives while its stored target cannot be read (it is held as an
    /// early cancel) makes the target count as cancelled at once, and still once the
    /// store holds the cancel: the store's earlier "not cancelled", kept for reading
    /// again, is dropped.
    #[test]
    fn a_cancel_clears_what_was_kept_of_its_targets_cancels() {
        let cold = Cold::default();
        let mut known = beside(&cold);
        let x = received(1);
        cold.alerts.lock().unwrap().insert(1, x.clone());
        let (id, origin) = (x.id(), x.alert.origin);
        assert!(!known.is_cancelled(&id, &origin));
        let cancel = tests::replacing(&tests::key(9), 2, Kind::Cancel, id);
        let cancel = KnownAlert::of(&cancel, 3, Some(PublicKey([2; 32])));
        *cold.failing.lock().unwrap() = true;
        known.accept(cancel, Arc::new(Vec::new()));
        *cold.failing.lock().unwrap() = false;
        assert!(
            known.is_cancelled(&id, &origin),
            "before the cancel commits"
        );
        // The store commits the cancel.
        cold.cancels.lock().unwrap().insert(id);
        assert!(known.is_cancelled(&id, &origin));
    }

    /// A catch-up page ends before an entry the store could not read (the requester
    /// reads on from there later), and a request that could read nothing gets no page
    /// at all, never one that says the log ends early.
    #[test]
    fn a_page_ends_before_what_the_store_could_not_read() {
        let cold = Cold::default();
        let (a, b) = (tests::key(1), tests::key(2));
        let mut engine = super::super::Engine::new(tests::pk(&a), 7, Default::default());
        engine.set_cold(Box::new(cold.clone()));
        let alerts: Vec<KnownAlert> = (1..=4).map(received).collect();
        for (seq, k) in (1..).zip(&alerts) {
            cold.alerts.lock().unwrap().insert(seq, k.clone());
        }
        engine.load_trust(tests::pk(&b), tocsin_proto::policy::TrustLevel::Member);
        engine.handle(
            super::super::Event::PeerConnected(tests::pk(&b)),
            tests::ISSUED,
        );
        let page = |engine: &mut super::super::Engine| {
            let frame = tocsin_proto::Frame::SyncRequest { epoch: 7, after: 0 };
            let bytes = frame.encode().unwrap();
            let event = super::super::Event::Frame {
                peer: tests::pk(&b),
                bytes,
            };
            engine
                .handle(event, tests::ISSUED)
                .into_iter()
                .find_map(|a| match a {
                    super::super::Action::Send {
                        frame:
                            tocsin_proto::Frame::SyncPage {
                                ids, next, done, ..
                            },
                        ..
                    } => Some((ids.len(), next, done)),
                    _ => None,
                })
        };
        *cold.unreadable.lock().unwrap() = Some(alerts[2].id());
        assert_eq!(
            page(&mut engine),
            Some((2, 2, false)),
            "ends before the third"
        );
        *cold.failing.lock().unwrap() = true;
        assert_eq!(page(&mut engine), None, "nothing could be read");
        *cold.failing.lock().unwrap() = false;
        *cold.unreadable.lock().unwrap() = None;
        assert_eq!(page(&mut engine), Some((4, 4, true)));
    }

    /// A catch-up page that waits for one of our own alerts whose commit notice never
    /// came (the store committed it) settles when the catch-up stalls: the store is
    /// asked again, the cursor moves, and the peer is not blamed.
    #[test]
    fn a_stalled_page_looks_for_our_missed_commits_in_the_store() {
        use super::super::{Action, Engine, Event, Timer, SYNC_TIMEOUT_MS};
        let cold = Cold::default();
        let (a, b) = (tests::key(1), tests::key(2));
        let mut engine = Engine::new(tests::pk(&a), 7, Default::default());
        engine.set_cold(Box::new(cold.clone()));
        engine.load_trust(tests::pk(&b), tocsin_proto::policy::TrustLevel::Member);
        let t0 = tests::ISSUED + 1_000;
        engine.handle(Event::PeerConnected(tests::pk(&b)), t0);
        let hello = tocsin_proto::Frame::Hello { epoch: 3, head: 1 };
        let frame = |f: &tocsin_proto::Frame| Event::Frame {
            peer: tests::pk(&b),
            bytes: f.encode().unwrap(),
        };
        engine.handle(frame(&hello), t0);
        let x = tests::alert(&a, 1, Tlp::Clear);
        engine.handle(tests::local(&x), t0);
        let page = tocsin_proto::Frame::SyncPage {
            epoch: 3,
            ids: vec![x.id()],
            next: 1,
            done: true,
            answers: Some(0),
        };
        engine.handle(frame(&page), t0 + 1);
        // The store commits x; its notice is lost.
        cold.alerts
            .lock()
            .unwrap()
            .insert(1, KnownAlert::of(&x, 0, None));
        let out = engine.handle(
            Event::Timer(Timer::Sync(tests::pk(&b))),
            t0 + 1 + SYNC_TIMEOUT_MS,
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::SaveCursor { seq: 1, .. })),
            "{out:?}"
        );
        assert!(
            !out.iter().any(|a| matches!(a, Action::Verdict { .. })),
            "{out:?}"
        );
    }
}
