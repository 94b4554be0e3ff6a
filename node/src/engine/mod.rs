//! The gossip engine: protocol logic with no I/O inside.
//!
//! [`Engine::handle`] takes an [`Event`] and the current time (ms) and returns the
//! [`Action`]s to carry out: send a frame, store an alert, set a timer, disconnect a
//! peer, save a catch-up cursor. There are no sockets, clocks or databases in here, so
//! the same engine runs in the daemon's network actor and in the deterministic
//! simulator ([`sim`]).
//!
//! # Dissemination
//! PlumTree-style: a newly accepted alert is pushed in full to *eager* peers and
//! announced by id to *lazy* peers, each only when [`tocsin_proto::policy::may_send`]
//! allows it for that peer. A duplicate full push turns the link lazy (`Prune`); an
//! announced id that does not arrive within `graft_timeout_ms` is requested
//! (`Want { graft: true }`), which turns the link eager again. Bodies therefore travel
//! about once per receiving node, and ids fill the gaps.
//!
//! Eager/lazy is kept per link *and per origin*: each link has a default state, and an
//! origin can have its own state on it. An announce offering an alert over a shorter
//! path moves that origin's tree only (`Graft { origin }` to the announcer,
//! `Prune { origin }` to the old parent), so each origin's alerts converge on paths
//! near its shortest ones, and the trees of different origins do not pull one link
//! back and forth. An origin without its own state on a link uses the default, which
//! duplicates prune and grafts repair as in plain PlumTree; a new origin's first alerts
//! therefore follow the default tree rather than flooding.
//!
//! # Catch-up
//! On connect both sides send `Hello { epoch, head }`. Each side asks the other for its
//! log after the cursor it saved for that peer (`SyncRequest`), gets pages of ids the
//! policy lets it see (`SyncPage`), asks for the ids it lacks (`Want`), and saves the
//! cursor only once every wanted alert of the page has been committed or refused. A
//! different epoch (the peer's database was recreated) restarts from 0.
//!
//! # Validation order (cheapest first)
//! Frame limits and decode, duplicate, sending peer's level, origin not blocked, TLP
//! scope, hop limit, expiry, signature, then (for updates and cancels) that the signer
//! is the origin of the alert replaced. The four policy steps are
//! [`tocsin_proto::policy::check_inbound`]. Invalid data is penalised; benign cases
//! (duplicate, expired, blocked origin) are not.

pub mod sim;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use tocsin_proto::limits::{MAX_HOPS, MAX_IDS_PER_FRAME};
use tocsin_proto::policy::{self, Scope, TrustLevel};
use tocsin_proto::{AlertId, Frame, Kind, PublicKey, SignedAlert, Tlp, VerifiedAlert};

pub use tocsin_proto::verdict::{
    Reason, PENALTY_BAD_SIGNATURE, PENALTY_MALFORMED, PENALTY_NOT_ORIGIN, PENALTY_POLICY,
};

/// Most ids remembered as "announced but not yet received". Bounds what announce
/// floods can make a node hold; beyond it, catch-up recovers the rest.
pub const MAX_MISSING: usize = 100_000;
/// Log entries scanned to answer one `SyncRequest` (a page). Bounds work per request.
pub const SYNC_PAGE_SCAN: usize = 512;
/// How long a catch-up page may take before it is requested again, ms.
pub const SYNC_TIMEOUT_MS: u64 = 5_000;
/// After a completed catch-up, how long until the next round on the same connection,
/// ms. Repairs pushes lost while connected (a full send queue, an AMBER/RED alert that no
/// one else can announce) at the cost of one request and one mostly empty page per link
/// per interval.
pub const RESYNC_INTERVAL_MS: u64 = 30_000;
/// An announce offering an alert at least this many hops closer than the copy we hold
/// moves our link in that origin's broadcast tree to the announcer (graft it, prune the
/// old parent): PlumTree's optimisation step, which keeps each origin's tree near its
/// shortest paths.
pub const TREE_OPTIMISE_HOPS: u8 = 1;
/// Most origins with their own eager/lazy state on one link. Beyond it, further origins
/// follow the link's default state (one tree shared by those origins). Bounds what
/// `Graft`/`Prune` frames naming made-up origins can make a node hold.
pub const MAX_ORIGIN_TREES: usize = 1024;
/// Penalty points forgiven per second.
pub const PENALTY_DECAY_PER_SEC: u32 = 1;

/// Engine settings (from `[net]` in the config).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Flush queued announces this often, ms.
    pub announce_interval_ms: u64,
    /// Wait this long for a body after an announce before asking for it, ms.
    pub graft_timeout_ms: u64,
    /// Token bucket for alerts from one peer: rate per second and burst.
    pub peer_alerts_per_sec: u32,
    pub peer_alert_burst: u32,
    /// Token bucket for bytes from one peer: rate per second and burst.
    pub peer_bytes_per_sec: u64,
    pub peer_byte_burst: u64,
    /// Penalty score at which a peer is disconnected and refused.
    pub penalty_threshold: u32,
    /// How long a penalised peer is refused, ms.
    pub ban_ms: u64,
    /// Envelopes kept in memory to answer `Want` without a disk read.
    pub envelope_cache: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            announce_interval_ms: 20,
            graft_timeout_ms: 250,
            peer_alerts_per_sec: 200,
            peer_alert_burst: 2_000,
            peer_bytes_per_sec: 4 * 1024 * 1024,
            peer_byte_burst: 16 * 1024 * 1024,
            penalty_threshold: 100,
            ban_ms: 600_000,
            envelope_cache: 20_000,
        }
    }
}

/// What the engine knows about an alert it holds.
#[derive(Debug, Clone)]
pub struct KnownAlert {
    pub id: AlertId,
    pub origin: PublicKey,
    pub tlp: Tlp,
    pub recipients: Vec<PublicKey>,
    pub expires_at: Option<u64>,
    pub kind: Kind,
    pub replaces: Option<AlertId>,
    /// Hops from the origin when we got it (0 = issued here).
    pub hops: u8,
    /// The peer that delivered it (None = issued here).
    pub from: Option<PublicKey>,
}

impl KnownAlert {
    /// The metadata of a signed alert received at `hops` from `from`.
    pub fn of(alert: &SignedAlert, hops: u8, from: Option<PublicKey>) -> Self {
        let b = alert.body();
        KnownAlert {
            id: alert.id(),
            origin: b.origin,
            tlp: b.tlp,
            recipients: b.recipients.clone(),
            expires_at: b.expires_at,
            kind: b.kind,
            replaces: b.replaces,
            hops,
            from,
        }
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            origin: &self.origin,
            tlp: self.tlp,
            recipients: &self.recipients,
        }
    }

    fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// Timers the engine asks for; the runtime feeds them back as [`Event::Timer`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Send queued announces.
    FlushAnnounces,
    /// Check whether an announced alert has arrived; if not, ask for it.
    Graft(AlertId),
    /// Check that a catch-up page from this peer has completed.
    Sync(PublicKey),
    /// Start another catch-up round with this peer (periodic repair while connected).
    Resync(PublicKey),
}

/// Inputs.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one event at a time; boxing buys nothing
pub enum Event {
    /// A connection to a peer is up (the runtime has checked it is allowed to connect).
    PeerConnected(PublicKey),
    /// The last connection to a peer closed.
    PeerDisconnected(PublicKey),
    /// A frame (the CBOR bytes after the length prefix) arrived from a peer.
    Frame { peer: PublicKey, bytes: Vec<u8> },
    /// A peer sent a length prefix over `MAX_FRAME_BYTES`; the frame was not read and
    /// its stream was dropped.
    OversizedFrame { peer: PublicKey },
    /// An alert issued here, signed and verified. The daemon gossips it while its
    /// commit is in flight; its sequence number arrives with [`Event::Committed`].
    Local { alert: VerifiedAlert },
    /// The store committed these alerts (received or issued) at these sequence numbers.
    Committed(Vec<(u64, AlertId)>),
    /// The store refused these alerts (e.g. disk full); they are forgotten so that a
    /// later copy or catch-up can deliver them again.
    StoreFailed(Vec<AlertId>),
    /// A timer fired.
    Timer(Timer),
    /// A trust entry changed (None: removed).
    Trust {
        key: PublicKey,
        level: Option<TrustLevel>,
    },
}

/// Outputs.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send a frame to a connected peer.
    Send { peer: PublicKey, frame: Frame },
    /// Send these alerts to the peer as `Frame::Alert { hops, envelope }`, loading the
    /// envelopes from the store (they were not in the engine's cache).
    SendStored {
        peer: PublicKey,
        alerts: Vec<(AlertId, u8)>,
    },
    /// Store an accepted, verified alert; report back with [`Event::Committed`].
    Store {
        alert: Box<SignedAlert>,
        from: PublicKey,
        hops: u8,
    },
    /// Call back with [`Event::Timer`] at `at` (ms).
    SetTimer { at: u64, timer: Timer },
    /// Close connections to the peer; refuse it until `until` (ms) if set.
    Disconnect {
        peer: PublicKey,
        until: Option<u64>,
        reason: &'static str,
    },
    /// Persist the catch-up cursor for a peer.
    SaveCursor {
        peer: PublicKey,
        epoch: u64,
        seq: u64,
    },
    /// A frame or alert from `peer` was refused for `reason` (already counted in the
    /// peer's stats, and penalised if [`Reason::penalised`]): for metrics and logs.
    Verdict { peer: PublicKey, reason: Reason },
}

/// Counters per peer, kept across reconnections.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStats {
    /// Alerts accepted from this peer.
    pub alerts_in: u64,
    /// Full alerts sent to this peer.
    pub alerts_out: u64,
    /// Frame bytes received from this peer.
    pub bytes_in: u64,
    /// Duplicate full alerts received (benign; drives pruning).
    pub duplicates: u64,
    /// Frames or alerts dropped by the rate limits.
    pub rate_limited: u64,
    /// Rejections by reason.
    pub rejections: BTreeMap<&'static str, u64>,
    /// Current penalty score (decays over time).
    pub penalty: u32,
    /// Refused until this time (ms), after crossing the penalty threshold.
    pub banned_until: Option<u64>,
    #[serde(skip)]
    penalty_at: u64,
    #[serde(skip)]
    alert_bucket: Bucket,
    #[serde(skip)]
    byte_bucket: Bucket,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    tokens: f64,
    at: u64,
    primed: bool,
}

impl Bucket {
    fn take(&mut self, now: u64, rate: f64, burst: f64, n: f64) -> bool {
        if !self.primed {
            self.tokens = burst;
            self.at = now;
            self.primed = true;
        }
        let elapsed = now.saturating_sub(self.at) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct SyncState {
    /// The peer's log epoch, from its Hello.
    epoch: u64,
    /// The cursor the current page was requested from.
    after: u64,
    /// Where the current page ends, once it has arrived.
    page_next: Option<u64>,
    page_done: bool,
    /// Wanted ids of the current page not yet committed or refused.
    waiting: HashSet<AlertId>,
    /// Set once the peer's log has been read to its head.
    complete: bool,
    /// When the current page was requested (for the stall check).
    requested_at: u64,
}

#[derive(Debug)]
struct PeerState {
    /// Push full alerts to this peer (tree link) rather than announcing ids: the
    /// default, for origins without an entry in `origins`.
    eager: bool,
    /// Per-origin eager/lazy state on this link (each origin's broadcast tree), at
    /// most [`MAX_ORIGIN_TREES`] entries.
    origins: HashMap<PublicKey, bool>,
    /// Ids to announce, with the hop count the peer would get them at.
    lazy: Vec<(AlertId, u8)>,
    sync: Option<SyncState>,
}

impl PeerState {
    fn new() -> Self {
        PeerState {
            eager: true,
            lazy: Vec::new(),
            origins: HashMap::new(),
            sync: None,
        }
    }

    /// Whether alerts from `origin` are pushed in full on this link.
    fn eager_for(&self, origin: &PublicKey) -> bool {
        self.origins.get(origin).copied().unwrap_or(self.eager)
    }

    /// Whether `origin` has, or can get, its own state on this link (at most
    /// [`MAX_ORIGIN_TREES`] origins per link).
    fn has_room(&self, origin: &PublicKey) -> bool {
        self.origins.len() < MAX_ORIGIN_TREES || self.origins.contains_key(origin)
    }

    /// Sets `origin`'s own state on this link, if [`PeerState::has_room`] for it.
    fn set_origin(&mut self, origin: PublicKey, eager: bool) {
        if self.has_room(&origin) {
            self.origins.insert(origin, eager);
        }
    }
}

#[derive(Debug)]
struct Missing {
    announcers: VecDeque<PublicKey>,
    /// The announcer last asked for the alert with a graft: if the alert comes from it,
    /// that link becomes eager for the alert's origin on our side too.
    grafted: Option<PublicKey>,
}

/// A peer's row for the API's `peers` view.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    pub key: PublicKey,
    pub connected: bool,
    /// The link's default eager/lazy state.
    pub eager: bool,
    /// Origins with their own eager/lazy state on this link.
    pub origin_trees: usize,
    pub catching_up: bool,
    #[serde(flatten)]
    pub stats: PeerStats,
}

/// The engine. See the module docs.
pub struct Engine {
    me: PublicKey,
    cfg: EngineConfig,
    epoch: u64,
    trust: HashMap<PublicKey, TrustLevel>,
    /// Ordered, so that the engine's output is deterministic for the same inputs.
    peers: BTreeMap<PublicKey, PeerState>,
    stats: HashMap<PublicKey, PeerStats>,
    known: HashMap<AlertId, KnownAlert>,
    /// Ids of alerts cancelled by their origin.
    cancelled: HashSet<AlertId>,
    /// Cancels whose target has not arrived yet: target → cancel's origin.
    early_cancels: HashMap<AlertId, Vec<PublicKey>>,
    /// Accepted and handed to the store, not yet committed.
    uncommitted: HashSet<AlertId>,
    cache: HashMap<AlertId, Arc<Vec<u8>>>,
    cache_order: VecDeque<AlertId>,
    missing: HashMap<AlertId, Missing>,
    /// Our append log (seq → id), for answering catch-up.
    log: BTreeMap<u64, AlertId>,
    cursors: HashMap<PublicKey, (u64, u64)>,
    flush_pending: bool,
    actions: Vec<Action>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("me", &self.me)
            .field("peers", &self.peers.len())
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A new engine for node `me`, whose log epoch is `epoch`.
    pub fn new(me: PublicKey, epoch: u64, cfg: EngineConfig) -> Self {
        Engine {
            me,
            cfg,
            epoch,
            trust: HashMap::new(),
            peers: BTreeMap::new(),
            stats: HashMap::new(),
            known: HashMap::new(),
            cancelled: HashSet::new(),
            early_cancels: HashMap::new(),
            uncommitted: HashSet::new(),
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            missing: HashMap::new(),
            log: BTreeMap::new(),
            cursors: HashMap::new(),
            flush_pending: false,
            actions: Vec::new(),
        }
    }

    /// Loads a stored alert at start-up (seq in our log).
    pub fn load_alert(&mut self, seq: u64, meta: KnownAlert) {
        self.log.insert(seq, meta.id);
        self.note_replacement(&meta);
        self.known.insert(meta.id, meta);
    }

    /// Loads a saved catch-up cursor at start-up.
    pub fn load_cursor(&mut self, peer: PublicKey, epoch: u64, seq: u64) {
        self.cursors.insert(peer, (epoch, seq));
    }

    /// Sets a trust entry without side effects (start-up).
    pub fn load_trust(&mut self, key: PublicKey, level: TrustLevel) {
        self.trust.insert(key, level);
    }

    /// This node's key.
    pub fn me(&self) -> PublicKey {
        self.me
    }

    /// Whether the engine holds this alert.
    pub fn knows(&self, id: &AlertId) -> bool {
        self.known.contains_key(id)
    }

    /// Number of alerts known.
    pub fn known_count(&self) -> usize {
        self.known.len()
    }

    /// The trust level of a key.
    pub fn trust_of(&self, key: &PublicKey) -> Option<TrustLevel> {
        self.trust.get(key).copied()
    }

    /// Whether a peer may connect now (trusted, not banned).
    pub fn may_connect(&self, key: &PublicKey, now: u64) -> bool {
        TrustLevel::may_connect(self.trust_of(key))
            && self
                .stats
                .get(key)
                .and_then(|s| s.banned_until)
                .is_none_or(|u| u <= now)
    }

    /// Per-peer state for every peer that is trusted or has stats.
    pub fn peer_reports(&self) -> Vec<PeerReport> {
        let mut keys: Vec<PublicKey> = self
            .trust
            .keys()
            .chain(self.stats.keys())
            .copied()
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| {
                let p = self.peers.get(&k);
                PeerReport {
                    key: k,
                    connected: p.is_some(),
                    eager: p.is_some_and(|p| p.eager),
                    origin_trees: p.map_or(0, |p| p.origins.len()),
                    catching_up: p.and_then(|p| p.sync.as_ref()).is_some_and(|s| !s.complete),
                    stats: self.stats.get(&k).cloned().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Connected peers.
    pub fn connected(&self) -> impl Iterator<Item = &PublicKey> {
        self.peers.keys()
    }

    /// Handles one event at time `now` (ms) and returns the actions to carry out.
    pub fn handle(&mut self, event: Event, now: u64) -> Vec<Action> {
        match event {
            Event::PeerConnected(peer) => self.on_connected(peer, now),
            Event::PeerDisconnected(peer) => {
                self.peers.remove(&peer);
            }
            Event::Frame { peer, bytes } => self.on_frame(peer, &bytes, now),
            Event::OversizedFrame { peer } => self.verdict(peer, Reason::OversizedFrame, now),
            Event::Local { alert } => self.on_local(alert.into_signed(), now),
            Event::Committed(entries) => self.on_committed(entries, now),
            Event::StoreFailed(ids) => {
                for id in ids {
                    self.uncommitted.remove(&id);
                    self.known.remove(&id);
                    self.cache.remove(&id);
                    self.settle_waiting(&id, now);
                }
            }
            Event::Timer(t) => self.on_timer(t, now),
            Event::Trust { key, level } => self.on_trust(key, level, now),
        }
        std::mem::take(&mut self.actions)
    }

    fn send(&mut self, peer: PublicKey, frame: Frame) {
        self.actions.push(Action::Send { peer, frame });
    }

    fn stats_mut(&mut self, peer: PublicKey) -> &mut PeerStats {
        self.stats.entry(peer).or_default()
    }

    fn on_connected(&mut self, peer: PublicKey, now: u64) {
        if !self.may_connect(&peer, now) {
            self.actions.push(Action::Disconnect {
                peer,
                until: None,
                reason: "not allowed to connect",
            });
            return;
        }
        self.peers.insert(peer, PeerState::new());
        let head = self.log.keys().next_back().copied().unwrap_or(0);
        self.send(
            peer,
            Frame::Hello {
                epoch: self.epoch,
                head,
            },
        );
    }

    fn on_trust(&mut self, key: PublicKey, level: Option<TrustLevel>, now: u64) {
        match level {
            Some(l) => {
                self.trust.insert(key, l);
            }
            None => {
                self.trust.remove(&key);
            }
        }
        if self.peers.contains_key(&key) && !self.may_connect(&key, now) {
            self.peers.remove(&key);
            self.actions.push(Action::Disconnect {
                peer: key,
                until: None,
                reason: "trust withdrawn",
            });
        }
    }

    /// Refuses input from `peer` for `reason`: counts it, reports it as
    /// [`Action::Verdict`], and adds the reason's penalty points; past the threshold the
    /// peer is disconnected and banned.
    fn verdict(&mut self, peer: PublicKey, reason: Reason, now: u64) {
        let threshold = self.cfg.penalty_threshold;
        let ban_ms = self.cfg.ban_ms;
        self.actions.push(Action::Verdict { peer, reason });
        let s = self.stats_mut(peer);
        *s.rejections.entry(reason.as_str()).or_default() += 1;
        if !reason.penalised() {
            return;
        }
        let decay = (now.saturating_sub(s.penalty_at) / 1000) as u32 * PENALTY_DECAY_PER_SEC;
        s.penalty = s
            .penalty
            .saturating_sub(decay)
            .saturating_add(reason.penalty());
        s.penalty_at = now;
        if s.penalty >= threshold {
            let until = now + ban_ms;
            s.banned_until = Some(until);
            s.penalty = 0;
            self.peers.remove(&peer);
            self.actions.push(Action::Disconnect {
                peer,
                until: Some(until),
                reason: "penalty threshold reached",
            });
        }
    }

    fn on_frame(&mut self, peer: PublicKey, bytes: &[u8], now: u64) {
        if !self.peers.contains_key(&peer) {
            // Not (or no longer) an accepted connection: drop without work.
            self.verdict(peer, Reason::NotConnected, now);
            return;
        }
        let (rate, burst) = (
            self.cfg.peer_bytes_per_sec as f64,
            self.cfg.peer_byte_burst as f64,
        );
        let s = self.stats_mut(peer);
        s.bytes_in += bytes.len() as u64;
        if !s.byte_bucket.take(now, rate, burst, bytes.len() as f64) {
            s.rate_limited += 1;
            return;
        }
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(_) => {
                self.verdict(peer, Reason::MalformedFrame, now);
                return;
            }
        };
        match frame {
            Frame::Hello { epoch, head } => self.on_hello(peer, epoch, head, now),
            Frame::Alert { hops, envelope } => self.on_alert(peer, hops, envelope, now),
            Frame::Announce { ids, hops } => self.on_announce(peer, ids, hops, now),
            Frame::Want { ids, graft } => self.on_want(peer, ids, graft, now),
            Frame::Prune { origin } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    match origin {
                        None => p.eager = false,
                        Some(o) => p.set_origin(o, false),
                    }
                }
            }
            Frame::Graft { origin } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.set_origin(origin, true);
                }
            }
            Frame::SyncRequest { epoch, after } => self.on_sync_request(peer, epoch, after, now),
            Frame::SyncPage {
                epoch,
                ids,
                next,
                done,
            } => self.on_sync_page(peer, epoch, ids, next, done, now),
        }
    }

    fn on_hello(&mut self, peer: PublicKey, epoch: u64, head: u64, now: u64) {
        // Same epoch and not past the peer's head: resume. A cursor past the head means
        // the peer's database was restored from an older backup: its sequence numbers
        // will be reused, so start over (wanting only what is missing is cheap).
        let after = match self.cursors.get(&peer) {
            Some((e, seq)) if *e == epoch && *seq <= head => *seq,
            _ => 0,
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.sync = Some(SyncState {
                epoch,
                after,
                requested_at: now,
                ..SyncState::default()
            });
        }
        self.request_page(peer, epoch, after, now);
    }

    /// Asks `peer` for the page of its log after `after`, and arms the stall check.
    fn request_page(&mut self, peer: PublicKey, epoch: u64, after: u64, now: u64) {
        if let Some(s) = self.peers.get_mut(&peer).and_then(|p| p.sync.as_mut()) {
            s.requested_at = now;
        }
        self.send(peer, Frame::SyncRequest { epoch, after });
        self.actions.push(Action::SetTimer {
            at: now + SYNC_TIMEOUT_MS,
            timer: Timer::Sync(peer),
        });
    }

    /// Marks the link to `peer` eager by default and asks it for `ids` with a graft:
    /// it pushes eagerly from now on, by default and for the origins of `ids`.
    fn graft(&mut self, peer: PublicKey, ids: Vec<AlertId>) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.eager = true;
        }
        for id in &ids {
            if let Some(m) = self.missing.get_mut(id) {
                m.grafted = Some(peer);
            }
        }
        self.send(peer, Frame::Want { ids, graft: true });
    }

    fn on_sync_request(&mut self, peer: PublicKey, epoch: u64, after: u64, now: u64) {
        // A cursor from another epoch of our log means nothing: start from the beginning.
        let after = if epoch == self.epoch { after } else { 0 };
        let level = self.trust_of(&peer);
        let mut ids = Vec::new();
        let mut next = after;
        let mut done = true;
        for (scanned, (&seq, id)) in self.log.range(after.saturating_add(1)..).enumerate() {
            if scanned == SYNC_PAGE_SCAN || ids.len() == MAX_IDS_PER_FRAME {
                done = false;
                break;
            }
            next = seq;
            if let Some(k) = self.known.get(id) {
                if self.shareable(k, &peer, level, now) && k.from != Some(peer) {
                    ids.push(*id);
                }
            }
        }
        self.send(
            peer,
            Frame::SyncPage {
                epoch: self.epoch,
                ids,
                next,
                done,
            },
        );
    }

    /// Whether we may give this alert to `peer` (push, announce, catch-up or on request).
    fn shareable(
        &self,
        k: &KnownAlert,
        peer: &PublicKey,
        level: Option<TrustLevel>,
        now: u64,
    ) -> bool {
        !k.expired(now)
            && !self.cancelled.contains(&k.id)
            && self.trust_of(&k.origin) != Some(TrustLevel::Blocked)
            && policy::may_send(&self.me, peer, level, k.scope(), k.hops)
    }

    fn on_sync_page(
        &mut self,
        peer: PublicKey,
        epoch: u64,
        ids: Vec<AlertId>,
        next: u64,
        done: bool,
        now: u64,
    ) {
        // Wait for ids we lack (and ask for them) and for ids we hold but have not yet
        // committed: the cursor must not pass an alert that is not durable here.
        let wanted: Vec<AlertId> = ids
            .iter()
            .filter(|id| !self.known.contains_key(id))
            .copied()
            .collect();
        let waiting: HashSet<AlertId> = ids
            .into_iter()
            .filter(|id| !self.known.contains_key(id) || self.uncommitted.contains(id))
            .collect();
        let Some(sync) = self.peers.get_mut(&peer).and_then(|p| p.sync.as_mut()) else {
            return;
        };
        if sync.epoch != epoch || sync.page_next.is_some() {
            return; // stale or unsolicited page
        }
        sync.page_next = Some(next);
        sync.page_done = done;
        sync.waiting = waiting;
        if !wanted.is_empty() {
            for chunk in wanted.chunks(MAX_IDS_PER_FRAME) {
                self.send(
                    peer,
                    Frame::Want {
                        ids: chunk.to_vec(),
                        graft: false,
                    },
                );
            }
        }
        self.advance_sync(peer, now);
    }

    /// If the current page is complete, saves the cursor and asks for the next page.
    fn advance_sync(&mut self, peer: PublicKey, now: u64) {
        let Some(sync) = self.peers.get_mut(&peer).and_then(|p| p.sync.as_mut()) else {
            return;
        };
        let Some(next) = sync.page_next else { return };
        if !sync.waiting.is_empty() {
            return;
        }
        let epoch = sync.epoch;
        let done = sync.page_done;
        sync.after = next;
        sync.page_next = None;
        sync.complete = done;
        self.cursors.insert(peer, (epoch, next));
        self.actions.push(Action::SaveCursor {
            peer,
            epoch,
            seq: next,
        });
        if done {
            self.actions.push(Action::SetTimer {
                at: now + RESYNC_INTERVAL_MS,
                timer: Timer::Resync(peer),
            });
        } else {
            self.request_page(peer, epoch, next, now);
        }
    }

    /// An id we waited for was committed or refused.
    fn settle_waiting(&mut self, id: &AlertId, now: u64) {
        let peers: Vec<PublicKey> = self
            .peers
            .iter_mut()
            .filter_map(|(k, p)| {
                let s = p.sync.as_mut()?;
                s.waiting.remove(id).then_some(*k)
            })
            .collect();
        for peer in peers {
            self.advance_sync(peer, now);
        }
    }

    fn on_announce(&mut self, peer: PublicKey, ids: Vec<AlertId>, hops: Vec<u8>, now: u64) {
        for (i, id) in ids.into_iter().enumerate() {
            if let Some(k) = self.known.get(&id) {
                // A much shorter path through the announcer: make it our tree link for
                // what comes next, and prune the link the long copy came over.
                let offered = hops.get(i).copied().unwrap_or(u8::MAX);
                if let Some(parent) = k.from {
                    if parent != peer && offered.saturating_add(TREE_OPTIMISE_HOPS) <= k.hops {
                        let origin = k.origin;
                        self.optimise_tree(peer, parent, origin);
                    }
                }
                continue;
            }
            if let Some(m) = self.missing.get_mut(&id) {
                if !m.announcers.contains(&peer) {
                    m.announcers.push_back(peer);
                }
                continue;
            }
            if self.missing.len() >= MAX_MISSING {
                continue;
            }
            self.missing.insert(
                id,
                Missing {
                    announcers: VecDeque::from([peer]),
                    grafted: None,
                },
            );
            self.actions.push(Action::SetTimer {
                at: now + self.cfg.graft_timeout_ms,
                timer: Timer::Graft(id),
            });
        }
    }

    /// In `origin`'s tree, grafts `closer` and prunes `parent` (both ends of each link
    /// agree through the frames). Other origins' trees are left as they are.
    fn optimise_tree(&mut self, closer: PublicKey, parent: PublicKey, origin: PublicKey) {
        let closer_ok = self
            .peers
            .get(&closer)
            .is_some_and(|p| !p.eager_for(&origin) && p.has_room(&origin));
        let parent_ok = self
            .peers
            .get(&parent)
            .is_some_and(|p| p.eager_for(&origin) && p.has_room(&origin));
        if !closer_ok || !parent_ok {
            return;
        }
        if let Some(p) = self.peers.get_mut(&closer) {
            p.set_origin(origin, true);
        }
        self.send(closer, Frame::Graft { origin });
        if let Some(p) = self.peers.get_mut(&parent) {
            p.set_origin(origin, false);
        }
        self.send(
            parent,
            Frame::Prune {
                origin: Some(origin),
            },
        );
    }

    fn on_want(&mut self, peer: PublicKey, ids: Vec<AlertId>, graft: bool, now: u64) {
        let level = self.trust_of(&peer);
        if graft {
            let origins: Vec<PublicKey> = ids
                .iter()
                .filter_map(|id| self.known.get(id).map(|k| k.origin))
                .collect();
            if let Some(p) = self.peers.get_mut(&peer) {
                p.eager = true;
                for o in origins {
                    // Only origins that already have their own state here: the others
                    // follow the default, which is now eager.
                    if p.origins.contains_key(&o) {
                        p.set_origin(o, true);
                    }
                }
            }
        }
        let mut from_store = Vec::new();
        for id in ids {
            let Some(k) = self.known.get(&id) else {
                continue;
            };
            if !self.shareable(k, &peer, level, now) {
                continue;
            }
            let hops = k.hops.saturating_add(1);
            match self.cache.get(&id) {
                Some(env) => {
                    let envelope = env.as_ref().clone();
                    self.stats_mut(peer).alerts_out += 1;
                    self.send(peer, Frame::Alert { hops, envelope });
                }
                None => from_store.push((id, hops)),
            }
        }
        if !from_store.is_empty() {
            self.stats_mut(peer).alerts_out += from_store.len() as u64;
            self.actions.push(Action::SendStored {
                peer,
                alerts: from_store,
            });
        }
    }

    fn on_alert(&mut self, peer: PublicKey, hops: u8, envelope: Vec<u8>, now: u64) {
        let (rate, burst) = (
            f64::from(self.cfg.peer_alerts_per_sec),
            f64::from(self.cfg.peer_alert_burst),
        );
        let s = self.stats_mut(peer);
        if !s.alert_bucket.take(now, rate, burst, 1.0) {
            s.rate_limited += 1;
            return;
        }
        // 1. limits and decode
        let alert = match SignedAlert::decode(&envelope) {
            Ok(a) => a,
            Err(_) => {
                self.verdict(peer, Reason::MalformedAlert, now);
                return;
            }
        };
        let id = alert.id();
        // 2. duplicate
        if let Some(k) = self.known.get_mut(&id) {
            // A shorter path: hold the alert at the lower hop count, and offer it again
            // if that brings it back under the hop limit.
            let mut reoffer = false;
            let origin = k.origin;
            if hops < k.hops && k.from.is_some() {
                reoffer = k.hops >= MAX_HOPS && hops < MAX_HOPS;
                k.hops = hops;
            }
            if reoffer {
                self.relay(id, Some(peer), now);
            }
            self.stats_mut(peer).duplicates += 1;
            // Prune the link in the tree that brought the copy: the origin's own, or
            // the default one.
            let prune = self.peers.get_mut(&peer).and_then(|p| {
                if !p.eager_for(&origin) || hops <= 1 {
                    None
                } else if p.origins.contains_key(&origin) {
                    p.set_origin(origin, false);
                    Some(Some(origin))
                } else {
                    p.eager = false;
                    Some(None)
                }
            });
            if let Some(origin) = prune {
                self.send(peer, Frame::Prune { origin });
            }
            return;
        }
        let body = alert.body();
        // 3–6. sending peer's level, origin not blocked, TLP scope, hop limit
        let scope = Scope {
            origin: &body.origin,
            tlp: body.tlp,
            recipients: &body.recipients,
        };
        if let Err(r) = policy::check_inbound(
            &self.me,
            &peer,
            self.trust_of(&peer),
            self.trust_of(&body.origin),
            scope,
            hops,
        ) {
            self.verdict(peer, r, now);
            self.drop_wanted(&id, peer, now);
            return;
        }
        // 7. expiry
        if body.is_expired(now) {
            self.verdict(peer, Reason::Expired, now);
            self.drop_wanted(&id, peer, now);
            return;
        }
        // 8. signature
        if alert.check_signature().is_err() {
            self.verdict(peer, Reason::BadSignature, now);
            self.drop_wanted(&id, peer, now);
            return;
        }
        // Only the origin may update or cancel its alert. A validly signed one naming
        // another origin's alert is refused; only its origin is penalised for it (a
        // relay could not have known).
        if let Some(target) = body.replaces.and_then(|t| self.known.get(&t)) {
            if target.origin != body.origin {
                let reason = if peer == body.origin {
                    Reason::NotOrigin
                } else {
                    Reason::ForeignReplacement
                };
                self.verdict(peer, reason, now);
                self.drop_wanted(&id, peer, now);
                return;
            }
        }
        self.stats_mut(peer).alerts_in += 1;
        // Asked for with a graft: the link is now in this origin's tree on our side too.
        if self.missing.get(&id).and_then(|m| m.grafted) == Some(peer) {
            if let Some(p) = self.peers.get_mut(&peer) {
                if p.origins.contains_key(&body.origin) {
                    p.set_origin(body.origin, true);
                }
            }
        }
        let meta = KnownAlert::of(&alert, hops, Some(peer));
        self.accept(meta, Arc::new(envelope), now);
        self.uncommitted.insert(id);
        self.actions.push(Action::Store {
            alert: Box::new(alert),
            from: peer,
            hops,
        });
        self.relay(id, Some(peer), now);
    }

    /// `peer`'s copy of an alert was refused: stop asking `peer` for it (other
    /// announcers are still asked, so one bad copy cannot suppress an alert), and stop
    /// waiting for it in `peer`'s catch-up page.
    fn drop_wanted(&mut self, id: &AlertId, peer: PublicKey, now: u64) {
        if let Some(m) = self.missing.get_mut(id) {
            m.announcers.retain(|a| *a != peer);
        }
        let settled = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.sync.as_mut())
            .is_some_and(|s| s.waiting.remove(id));
        if settled {
            self.advance_sync(peer, now);
        }
    }

    fn note_replacement(&mut self, meta: &KnownAlert) {
        if meta.kind == Kind::Cancel {
            if let Some(target) = meta.replaces {
                match self.known.get(&target) {
                    Some(t) if t.origin == meta.origin => {
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

    fn accept(&mut self, meta: KnownAlert, envelope: Arc<Vec<u8>>, _now: u64) {
        let id = meta.id;
        self.missing.remove(&id);
        self.note_replacement(&meta);
        self.known.insert(id, meta);
        if self.cfg.envelope_cache > 0 {
            self.cache.insert(id, envelope);
            self.cache_order.push_back(id);
            while self.cache_order.len() > self.cfg.envelope_cache {
                if let Some(old) = self.cache_order.pop_front() {
                    self.cache.remove(&old);
                }
            }
        }
    }

    fn on_local(&mut self, alert: SignedAlert, now: u64) {
        let id = alert.id();
        if self.known.contains_key(&id) {
            return;
        }
        let meta = KnownAlert::of(&alert, 0, None);
        self.accept(meta, Arc::new(alert.to_envelope()), now);
        self.relay(id, None, now);
    }

    fn on_committed(&mut self, entries: Vec<(u64, AlertId)>, now: u64) {
        for (seq, id) in entries {
            self.log.insert(seq, id);
            self.uncommitted.remove(&id);
            self.settle_waiting(&id, now);
        }
    }

    /// Pushes or announces a newly accepted alert to every peer the policy allows.
    fn relay(&mut self, id: AlertId, from: Option<PublicKey>, now: u64) {
        let Some(k) = self.known.get(&id) else { return };
        if k.hops >= MAX_HOPS && k.from.is_some() {
            return;
        }
        // Alerts that are never relayed further (AMBER, RED) go in full: no receiver can
        // get them another way, so there is nothing to deduplicate.
        let push_all = !matches!(k.tlp, Tlp::Clear | Tlp::Green);
        let targets: Vec<(PublicKey, bool)> = self
            .peers
            .iter()
            .filter(|(peer, _)| Some(**peer) != from)
            .filter(|(peer, _)| self.shareable(k, peer, self.trust.get(peer).copied(), now))
            .map(|(peer, p)| (*peer, p.eager_for(&k.origin) || push_all))
            .collect();
        let hops = k.hops.saturating_add(1);
        let envelope = self.cache.get(&id).cloned();
        for (peer, eager) in targets {
            match (&envelope, eager) {
                (Some(env), true) => {
                    self.stats_mut(peer).alerts_out += 1;
                    self.send(
                        peer,
                        Frame::Alert {
                            hops,
                            envelope: env.as_ref().clone(),
                        },
                    );
                }
                (None, true) => {
                    self.stats_mut(peer).alerts_out += 1;
                    self.actions.push(Action::SendStored {
                        peer,
                        alerts: vec![(id, hops)],
                    });
                }
                (_, false) => {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.lazy.push((id, hops));
                    }
                    if !self.flush_pending {
                        self.flush_pending = true;
                        self.actions.push(Action::SetTimer {
                            at: now + self.cfg.announce_interval_ms,
                            timer: Timer::FlushAnnounces,
                        });
                    }
                }
            }
        }
    }

    /// Asks `peer` again from the saved cursor.
    fn restart_sync(&mut self, peer: PublicKey, now: u64) {
        let Some(sync) = self.peers.get_mut(&peer).and_then(|p| p.sync.as_mut()) else {
            return;
        };
        sync.complete = false;
        sync.page_next = None;
        sync.waiting.clear();
        let (epoch, after) = (sync.epoch, sync.after);
        self.request_page(peer, epoch, after, now);
    }

    fn on_timer(&mut self, timer: Timer, now: u64) {
        match timer {
            Timer::FlushAnnounces => {
                self.flush_pending = false;
                let mut out = Vec::new();
                for (peer, p) in self.peers.iter_mut() {
                    if !p.lazy.is_empty() {
                        out.push((*peer, std::mem::take(&mut p.lazy)));
                    }
                }
                for (peer, items) in out {
                    // Trust may have changed since the ids were queued.
                    let level = self.trust_of(&peer);
                    let items: Vec<(AlertId, u8)> = items
                        .into_iter()
                        .filter(|(id, _)| {
                            self.known
                                .get(id)
                                .is_some_and(|k| self.shareable(k, &peer, level, now))
                        })
                        .collect();
                    for chunk in items.chunks(MAX_IDS_PER_FRAME) {
                        self.send(
                            peer,
                            Frame::Announce {
                                ids: chunk.iter().map(|(id, _)| *id).collect(),
                                hops: chunk.iter().map(|(_, h)| *h).collect(),
                            },
                        );
                    }
                }
            }
            Timer::Graft(id) => {
                if self.known.contains_key(&id) {
                    self.missing.remove(&id);
                    return;
                }
                let Some(m) = self.missing.get_mut(&id) else {
                    return;
                };
                let mut chosen = None;
                while let Some(p) = m.announcers.pop_front() {
                    if self.peers.contains_key(&p) {
                        chosen = Some(p);
                        break;
                    }
                }
                let Some(peer) = chosen else {
                    self.missing.remove(&id);
                    return;
                };
                self.graft(peer, vec![id]);
                self.actions.push(Action::SetTimer {
                    at: now + self.cfg.graft_timeout_ms,
                    timer: Timer::Graft(id),
                });
            }
            Timer::Sync(peer) => {
                let Some(sync) = self.peers.get_mut(&peer).and_then(|p| p.sync.as_mut()) else {
                    return;
                };
                // Only a page still in progress and older than the timeout has stalled
                // (lost frame, refused alert); timers of earlier pages are stale.
                if sync.complete || now < sync.requested_at + SYNC_TIMEOUT_MS {
                    return;
                }
                self.restart_sync(peer, now);
            }
            Timer::Resync(peer) => {
                let due = self
                    .peers
                    .get(&peer)
                    .and_then(|p| p.sync.as_ref())
                    .is_some_and(|s| s.complete);
                if due {
                    self.restart_sync(peer, now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
