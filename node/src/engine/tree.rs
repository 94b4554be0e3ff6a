//! Dissemination (PlumTree-style, per origin): which connected links push full alerts
//! (eager) and which announce ids (lazy), by default and per origin; the ids queued to
//! announce; and the ids announced to us that have not arrived ("missing"), with who
//! announced them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tocsin_proto::limits::MAX_IDS_PER_FRAME;
use tocsin_proto::{AlertId, Frame, PublicKey};

use super::{send, Action, Timer, MAX_MISSING, MAX_MISSING_PER_PEER, MAX_ORIGIN_TREES};

/// One connected link's place in the broadcast trees.
#[derive(Debug)]
pub struct Link {
    /// Push full alerts on this link rather than announcing ids: the default, for
    /// origins without an entry in `origins`.
    pub eager: bool,
    /// Per-origin eager/lazy state on this link (each origin's broadcast tree), at
    /// most [`MAX_ORIGIN_TREES`] entries.
    origins: HashMap<PublicKey, bool>,
    /// Ids to announce, with the hop count the peer would get them at.
    lazy: Vec<(AlertId, u8)>,
}

impl Link {
    fn new() -> Link {
        Link {
            eager: true,
            origins: HashMap::new(),
            lazy: Vec::new(),
        }
    }

    /// Whether alerts from `origin` are pushed in full on this link.
    pub fn eager_for(&self, origin: &PublicKey) -> bool {
        self.origins.get(origin).copied().unwrap_or(self.eager)
    }

    /// Origins with their own state on this link.
    pub fn origin_trees(&self) -> usize {
        self.origins.len()
    }

    /// Whether `origin` has, or can get, its own state on this link.
    fn has_room(&self, origin: &PublicKey) -> bool {
        self.origins.len() < MAX_ORIGIN_TREES || self.origins.contains_key(origin)
    }

    /// Sets `origin`'s own state on this link, if there is room for it.
    fn set_origin(&mut self, origin: PublicKey, eager: bool) {
        if self.has_room(&origin) {
            self.origins.insert(origin, eager);
        }
    }
}

#[derive(Debug)]
struct Missing {
    /// The peer whose announce made us wait for the id (counted in `per_peer`).
    first: PublicKey,
    announcers: VecDeque<PublicKey>,
    /// The announcer last asked for the alert with a graft: if the alert comes from it,
    /// that link becomes eager for the alert's origin on our side too.
    grafted: Option<PublicKey>,
}

/// The connected links and the broadcast trees over them.
#[derive(Debug)]
pub struct Trees {
    /// Ordered, so that the engine's output is deterministic for the same inputs.
    links: BTreeMap<PublicKey, Link>,
    missing: HashMap<AlertId, Missing>,
    /// Entries of `missing` per first announcer, at most [`MAX_MISSING_PER_PEER`] each.
    per_peer: HashMap<PublicKey, usize>,
    /// Entries of `missing` asked of each peer with a graft and not yet received.
    grafts: HashMap<PublicKey, usize>,
    flush_pending: bool,
    /// Ids to ask each peer for with a graft, queued by graft timers until
    /// [`Timer::FlushWants`] (armed when the first is queued) sends them together.
    wants: BTreeMap<PublicKey, Vec<AlertId>>,
    announce_interval_ms: u64,
    graft_timeout_ms: u64,
}

impl Trees {
    pub fn new(announce_interval_ms: u64, graft_timeout_ms: u64) -> Trees {
        Trees {
            links: BTreeMap::new(),
            missing: HashMap::new(),
            per_peer: HashMap::new(),
            grafts: HashMap::new(),
            flush_pending: false,
            wants: BTreeMap::new(),
            announce_interval_ms,
            graft_timeout_ms,
        }
    }

    /// A (re)connected peer: its link starts eager, with no per-origin state.
    pub fn connect(&mut self, peer: PublicKey) {
        self.links.insert(peer, Link::new());
    }

    pub fn disconnect(&mut self, peer: &PublicKey) {
        self.links.remove(peer);
    }

    pub fn is_connected(&self, peer: &PublicKey) -> bool {
        self.links.contains_key(peer)
    }

    pub fn link(&self, peer: &PublicKey) -> Option<&Link> {
        self.links.get(peer)
    }

    /// Connected peers, in key order.
    pub fn links(&self) -> impl Iterator<Item = (&PublicKey, &Link)> {
        self.links.iter()
    }

    /// `Prune` from the peer: stop pushing to it eagerly, by default or for `origin`.
    pub fn on_prune(&mut self, peer: &PublicKey, origin: Option<PublicKey>) {
        if let Some(l) = self.links.get_mut(peer) {
            match origin {
                None => l.eager = false,
                Some(o) => l.set_origin(o, false),
            }
        }
    }

    /// `Graft { origin }` from the peer: push `origin`'s alerts to it eagerly.
    pub fn on_graft(&mut self, peer: &PublicKey, origin: PublicKey) {
        if let Some(l) = self.links.get_mut(peer) {
            l.set_origin(origin, true);
        }
    }

    /// `Want { graft: true }` from the peer for alerts of `origins`: the link turns
    /// eager by default, and for those origins that already have their own state (the
    /// others follow the default, which is now eager).
    pub fn on_want_graft(&mut self, peer: &PublicKey, origins: Vec<PublicKey>) {
        if let Some(l) = self.links.get_mut(peer) {
            l.eager = true;
            for o in origins {
                if l.origins.contains_key(&o) {
                    l.set_origin(o, true);
                }
            }
        }
    }

    /// A duplicate full alert from `origin` arrived from `peer` at `hops`: prune the
    /// tree that brought it (the origin's own, or the default). Returns the `Prune` to
    /// send, if any.
    pub fn prune_duplicate(
        &mut self,
        peer: &PublicKey,
        origin: PublicKey,
        hops: u8,
    ) -> Option<Frame> {
        let l = self.links.get_mut(peer)?;
        if !l.eager_for(&origin) || hops <= 1 {
            None
        } else if l.origins.contains_key(&origin) {
            l.set_origin(origin, false);
            Some(Frame::Prune {
                origin: Some(origin),
            })
        } else {
            l.eager = false;
            Some(Frame::Prune { origin: None })
        }
    }

    /// In `origin`'s tree, grafts `closer` and prunes `parent` (both ends of each link
    /// agree through the frames). Other origins' trees are left as they are.
    pub fn optimise(
        &mut self,
        closer: PublicKey,
        parent: PublicKey,
        origin: PublicKey,
        out: &mut Vec<Action>,
    ) {
        let closer_ok = self
            .links
            .get(&closer)
            .is_some_and(|l| !l.eager_for(&origin) && l.has_room(&origin));
        let parent_ok = self
            .links
            .get(&parent)
            .is_some_and(|l| l.eager_for(&origin) && l.has_room(&origin));
        if !closer_ok || !parent_ok {
            return;
        }
        if let Some(l) = self.links.get_mut(&closer) {
            l.set_origin(origin, true);
        }
        send(out, closer, Frame::Graft { origin });
        if let Some(l) = self.links.get_mut(&parent) {
            l.set_origin(origin, false);
        }
        send(
            out,
            parent,
            Frame::Prune {
                origin: Some(origin),
            },
        );
    }

    /// `peer` announced `id`, which we do not hold: remember who has it, and arm the
    /// graft timer the first time. A peer that already holds [`MAX_MISSING_PER_PEER`]
    /// entries gets no more; others' announces still do.
    pub fn announced(&mut self, peer: PublicKey, id: AlertId, now: u64, out: &mut Vec<Action>) {
        if let Some(m) = self.missing.get_mut(&id) {
            if !m.announcers.contains(&peer) {
                m.announcers.push_back(peer);
            }
            return;
        }
        let count = self.per_peer.get(&peer).copied().unwrap_or(0);
        if self.missing.len() >= MAX_MISSING || count >= MAX_MISSING_PER_PEER {
            return;
        }
        self.per_peer.insert(peer, count + 1);
        self.missing.insert(
            id,
            Missing {
                first: peer,
                announcers: VecDeque::from([peer]),
                grafted: None,
            },
        );
        out.push(Action::SetTimer {
            at: now + self.graft_timeout_ms,
            timer: Timer::Graft(id),
        });
    }

    /// How long a graft waits for the alert before the next announcer is asked.
    pub fn graft_timeout_ms(&self) -> u64 {
        self.graft_timeout_ms
    }

    /// Whether we asked `peer` for alerts with a graft and still wait for some: what it
    /// sends is then not dropped unread by the rate limits.
    pub fn grafts_from(&self, peer: &PublicKey) -> bool {
        self.grafts.get(peer).is_some_and(|n| *n > 0)
    }

    fn count_graft(grafts: &mut HashMap<PublicKey, usize>, peer: Option<PublicKey>, up: bool) {
        let Some(peer) = peer else { return };
        let n = grafts.entry(peer).or_default();
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                grafts.remove(&peer);
            }
        }
    }

    /// Stops waiting for `id`, releasing its place in its first announcer's share.
    fn remove_missing(&mut self, id: &AlertId) -> Option<Missing> {
        let m = self.missing.remove(id)?;
        Self::count_graft(&mut self.grafts, m.grafted, false);
        if let Some(n) = self.per_peer.get_mut(&m.first) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&m.first);
            }
        }
        Some(m)
    }

    /// Whether we asked `peer` for `id` with a graft and are still waiting for it.
    pub fn was_asked(&self, peer: &PublicKey, id: &AlertId) -> bool {
        self.missing
            .get(id)
            .is_some_and(|m| m.grafted == Some(*peer))
    }

    /// The graft timer for `id` fired and `id` has not arrived: asks the next connected
    /// announcer with a graft (its link turns eager) and re-arms the timer. Forgets
    /// `id` when no announcer is left. Returns the announcer asked last time, if it is
    /// still connected: it announced the id, was asked, and did not send it.
    pub fn graft_timer(
        &mut self,
        id: AlertId,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Option<PublicKey> {
        let m = self.missing.get_mut(&id)?;
        let asked = m.grafted.take();
        Self::count_graft(&mut self.grafts, asked, false);
        let undelivered = asked.filter(|p| self.links.contains_key(p));
        let mut chosen = None;
        while let Some(p) = m.announcers.pop_front() {
            if self.links.contains_key(&p) {
                chosen = Some(p);
                break;
            }
        }
        let Some(peer) = chosen else {
            self.remove_missing(&id);
            return undelivered;
        };
        m.grafted = Some(peer);
        Self::count_graft(&mut self.grafts, Some(peer), true);
        if let Some(l) = self.links.get_mut(&peer) {
            l.eager = true;
        }
        if self.wants.is_empty() {
            out.push(Action::SetTimer {
                at: now,
                timer: Timer::FlushWants,
            });
        }
        self.wants.entry(peer).or_default().push(id);
        out.push(Action::SetTimer {
            at: now + self.graft_timeout_ms,
            timer: Timer::Graft(id),
        });
        undelivered
    }

    /// Sends the queued graft wants: one `want {graft: true}` per peer (split at
    /// [`MAX_IDS_PER_FRAME`]), to peers still connected.
    pub fn flush_wants(&mut self, out: &mut Vec<Action>) {
        for (peer, ids) in std::mem::take(&mut self.wants) {
            if !self.links.contains_key(&peer) {
                continue;
            }
            for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
                send(
                    out,
                    peer,
                    Frame::Want {
                        ids: chunk.to_vec(),
                        graft: true,
                    },
                );
            }
        }
    }

    /// `id` arrived from `peer`: if `peer` was asked for it with a graft, the link is
    /// now in `origin`'s tree on our side too (when the origin has its own state).
    /// Stops waiting for `id`.
    pub fn arrived(&mut self, id: &AlertId, peer: &PublicKey, origin: PublicKey) {
        let grafted = self.missing.get(id).and_then(|m| m.grafted) == Some(*peer);
        if grafted {
            if let Some(l) = self.links.get_mut(peer) {
                if l.origins.contains_key(&origin) {
                    l.set_origin(origin, true);
                }
            }
        }
        self.remove_missing(id);
    }

    /// Stops waiting for `id` (it is held).
    pub fn forget_missing(&mut self, id: &AlertId) {
        self.remove_missing(id);
    }

    /// `peer`'s copy of `id` was refused: stop asking `peer` for it (other announcers
    /// are still asked, so one bad copy cannot suppress an alert). It did send a copy,
    /// so it is not also counted as undelivered.
    pub fn drop_announcer(&mut self, id: &AlertId, peer: &PublicKey) {
        if let Some(m) = self.missing.get_mut(id) {
            m.announcers.retain(|a| a != peer);
            if m.grafted == Some(*peer) {
                m.grafted = None;
                Self::count_graft(&mut self.grafts, Some(*peer), false);
            }
        }
    }

    /// Queues `id` to announce to `peer` (at `hops`), arming the flush timer.
    pub fn queue_lazy(
        &mut self,
        peer: &PublicKey,
        id: AlertId,
        hops: u8,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if let Some(l) = self.links.get_mut(peer) {
            l.lazy.push((id, hops));
        }
        if !self.flush_pending {
            self.flush_pending = true;
            out.push(Action::SetTimer {
                at: now + self.announce_interval_ms,
                timer: Timer::FlushAnnounces,
            });
        }
    }

    /// The flush timer fired: every link's queued announces, in key order.
    pub fn take_lazy(&mut self) -> Vec<(PublicKey, Vec<(AlertId, u8)>)> {
        self.flush_pending = false;
        self.links
            .iter_mut()
            .filter(|(_, l)| !l.lazy.is_empty())
            .map(|(peer, l)| (*peer, std::mem::take(&mut l.lazy)))
            .collect()
    }

    /// This part's invariants; `held` says whether an alert is held.
    pub fn check_invariants(&self, held: impl Fn(&AlertId) -> bool) -> Result<(), String> {
        for (peer, l) in &self.links {
            if l.origins.len() > MAX_ORIGIN_TREES {
                return Err(format!(
                    "link {} has {} origin trees",
                    peer.fmt_short(),
                    l.origins.len()
                ));
            }
            if !l.lazy.is_empty() && !self.flush_pending {
                return Err(format!(
                    "announces queued for {} with no flush pending",
                    peer.fmt_short()
                ));
            }
        }
        if self.missing.len() > MAX_MISSING {
            return Err(format!("{} missing ids", self.missing.len()));
        }
        // Every entry is counted once, under its first announcer (a full recount per
        // event would make the flood tests quadratic).
        if self.per_peer.values().sum::<usize>() != self.missing.len() {
            return Err("missing ids per first announcer miscounted".into());
        }
        if let Some((p, n)) = self
            .per_peer
            .iter()
            .find(|(_, n)| **n > MAX_MISSING_PER_PEER)
        {
            return Err(format!(
                "{} missing ids first announced by {}",
                n,
                p.fmt_short()
            ));
        }
        if let Some(id) = self.missing.keys().find(|id| held(id)) {
            return Err(format!("{} is held and still missing", id.fmt_short()));
        }
        Ok(())
    }
}
