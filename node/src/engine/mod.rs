//! The gossip engine: protocol logic with no I/O inside.
//!
//! [`Engine::handle`] takes an [`Event`] and the current time (ms) and returns the
//! [`Action`]s to carry out: send a frame, store an alert, set a timer, disconnect a
//! peer, save a catch-up cursor. There are no sockets, clocks or databases in here, so
//! the same engine runs in the daemon's network actor and in the deterministic
//! simulator (the `tocsin-sim` crate in `node/sim`, outside the production build).
//!
//! # Parts
//! The [`Engine`] routes each event to the parts that own the state it changes, in the
//! manner of iroh-gossip's `proto`: `scoring` (trust levels, per-peer counters, rate
//! limits, penalties and bans), `known` (alerts held, cancels, the envelope cache, our
//! log), `tree` (connected links and the per-origin broadcast trees, announces, missing
//! ids), `catchup` (sessions reading each peer's log, saved cursors). `inbound` is the
//! frame handling and the validation order. [`Engine::check_invariants`] checks every
//! part and the rules between them; the engine's tests and the simulator run it after
//! every event.
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
//! policy lets it see (`SyncPage`), asks for the ids it lacks (`WantPage` naming the
//! ones it holds when it lacks most of the page, else `Want`), and saves the cursor
//! only once every wanted alert of the page has been committed or refused. A
//! different epoch (the peer's database was recreated) restarts from 0. Pages never
//! go past a possible hole in our log (commit notices missed, [`Event::LogGap`]).
//!
//! # Validation order (cheapest first)
//! Frame limits and decode, duplicate, sending peer's level, origin not blocked, TLP
//! scope, hop limit, expiry, signature, then (for updates and cancels) that the signer
//! is the origin of the alert replaced. The four policy steps are
//! [`tocsin_proto::policy::check_inbound`]. Invalid data is penalised; benign cases
//! (duplicate, expired, blocked origin) are not.

mod catchup;
mod inbound;
mod known;
mod scoring;
mod tree;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tocsin_proto::limits::{MAX_HOPS, MAX_IDS_PER_FRAME};
use tocsin_proto::policy::{self, TrustLevel};
use tocsin_proto::{AlertId, Frame, PublicKey, SignedAlert, Tlp, VerifiedAlert, VerifyingKeys};

use catchup::CatchUp;
pub(crate) use known::Bounded;
use known::Known;
pub use known::{ColdAlerts, KnownAlert, HOT_ALERTS};
pub use scoring::PeerStats;
use scoring::Scoring;
use tree::Trees;

pub use tocsin_proto::verdict::{
    Reason, PENALTY_BAD_SIGNATURE, PENALTY_FLOOD, PENALTY_MALFORMED, PENALTY_NOT_ORIGIN,
    PENALTY_POLICY,
};

/// Most ids remembered as "announced but not yet received". Bounds what announce
/// floods can make a node hold; beyond it, catch-up recovers the rest.
pub const MAX_MISSING: usize = 100_000;
/// Most missing ids first announced by one peer: one peer's made-up announces cannot
/// fill the table that every other peer's announces need.
pub const MAX_MISSING_PER_PEER: usize = 8_192;
/// Sightings remembered, to drop repeats without a write (cleared when full).
const MAX_SIGHTINGS_SEEN: usize = 100_000;
/// Most nodes whose agency the engine remembers (for a re-keyed node's cursor).
const MAX_AGENCIES_KNOWN: usize = 8_192;
/// Most observers of one alert, unknown here and relayed by a peer, whose sightings a
/// node takes in (never passed on). Its own, direct and known observers' do not count.
pub const MAX_UNKNOWN_OBSERVERS_PER_ALERT: u32 = 32;
/// Work units a `receipt` costs: a signature check (priced near an alert's share of
/// the budget, so that receipts cannot buy more verifications than alerts).
const WORK_RECEIPT: u64 = 50;
/// Work units a `revoke` costs: two signature checks.
const WORK_REVOKE: u64 = 100;
/// How many verified receipts, sightings and revocations are remembered, so that an
/// exact repeat is dropped unchecked ([`Engine::checked_frames`]).
const CHECKED_FRAMES: usize = 16_384;

/// Keys whose last level [`Engine`] remembers (as many as the agencies and trust
/// entries a node keeps, with room).
const MAX_LAST_LEVELS: usize = 16_384;

/// Work units every control frame costs at least: reading, decoding and dispatching it
/// takes the network actor microseconds, whatever it asks for. At 1 unit, a peer could
/// send 100,000 empty `want`s a second within the default budget, and the attack bench
/// measured honest p99 latency at 2.5x that of a run without it.
pub const WORK_FRAME: u64 = 16;
/// Alerts at most one request (`want`, `want_page`) is sent from the envelope cache on
/// the engine's thread; the rest go out with [`Action::SendStored`], read and framed off
/// it. Measured with the attack bench: a peer asking three times a second for 1,000
/// alerts in memory made honest p99 latency 3.3x that of a run without it.
pub const SEND_FROM_MEMORY: u64 = 64;
/// Work units a `Hello` costs (it restarts the peer's catch-up session).
pub const WORK_HELLO: u64 = 64;
/// Log entries scanned to answer one `SyncRequest` (a page). Bounds work per request.
pub const SYNC_PAGE_SCAN: usize = 512;
/// Reads of the store that memory does not answer (a decode of a stored alert, a
/// lookup of its cancels) one `SyncRequest` page may make: beyond them the page ends
/// early (`done: false`). A page read from the store then has at most 256 entries and
/// holds the engine up under 2 ms (`cargo bench -p tocsin-node --bench reads`), and an
/// honest catch-up keeps pages large enough to keep its pipeline full.
pub const SYNC_PAGE_READS: u64 = 512;
/// Work units a read of the store that memory did not answer costs the peer whose frame
/// caused it, on top of the frame's own cost. Such a read takes tens of times what a
/// unit of in-memory work does; priced low enough that serving an honest catch-up (a
/// page entry read from the store costs about 5 units in all, with its `want_page`)
/// stays within the default `peer_work_per_sec` up to 20,000 alerts a second.
pub const WORK_STORE_READ: u64 = 1;
/// Work units a log entry of a catch-up page costs when the page shows it to the peer
/// again (instead of 1): below the highest entry of our log that peer was shown before
/// (kept across reconnections). An honest catch-up reads our log forwards, once; only a
/// stalled page is read again. A peer that asks for the same pages over and over (each
/// can make this node read its store and send every alert of the page) pays this.
pub const WORK_REPEAT_ENTRY: u64 = 16;
/// Work units per alert sent for a `want_page` of a page that repeats (see
/// [`WORK_REPEAT_ENTRY`]), instead of 2; and for a `want` of ids that are not of the
/// catch-up page we listed to the peer last (graft repairs), on top of 2 per id asked
/// for. Measured with the attack bench, a peer asking again and again for 1,000 alerts
/// it was sent made honest p99 latency 3.7x that of the run without it at 8 units.
pub const WORK_REPEAT_ALERT: u64 = 32;
/// Alerts at most from one peer being checked off the engine's thread at once (half of
/// [`MAX_VERIFYING`]): a peer that sends forged alerts leaves room for the others.
pub const MAX_VERIFYING_PER_PEER: usize = MAX_VERIFYING / 2;

/// Entries of our log looked at per event when a promotion offers a peer what it newly
/// may see ([`Timer::Offer`] takes the next page): bounds the work of one event however
/// many alerts are stored (beside the store, each is read from it).
pub const OFFER_PAGE: usize = 256;
/// How long a promotion's offer waits before reading a page again that the store could
/// not read, ms.
const OFFER_RETRY_MS: u64 = 1_000;
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
/// Alerts at most whose signatures are being checked off the engine's thread at once
/// ([`Engine::verify_off_thread`]); past it (or [`MAX_VERIFYING_BYTES`]) the engine
/// checks them itself, which slows its other work instead of holding more in memory.
/// Four catch-up pages' worth ([`catchup::PIPELINE`] × 256).
pub const MAX_VERIFYING: usize = 1024;
/// Envelope bytes at most being checked off the engine's thread at once.
pub const MAX_VERIFYING_BYTES: usize = 8 * 1024 * 1024;

/// Engine settings: the gossip options of `[net]` in `config.toml` (the daemon's
/// `NetConfig` embeds this struct; the doc comments are the options' documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// How often queued announces (lazy push) are flushed, ms. Lower cuts repair latency;
    /// higher packs more ids per frame.
    pub announce_interval_ms: u64,
    /// How long to wait for a pushed body after an announce before asking for it, ms.
    /// Too low causes duplicate bodies; too high slows repair after a lost push.
    pub graft_timeout_ms: u64,
    /// Sustained alerts per second accepted from one peer (token bucket rate). Excess is
    /// dropped and counted; the sender's catch-up delivers it later.
    pub peer_alerts_per_sec: u32,
    /// Burst of alerts accepted from one peer (token bucket size).
    pub peer_alert_burst: u32,
    /// Sustained bytes per second accepted from one peer.
    pub peer_bytes_per_sec: u64,
    /// Burst of bytes accepted from one peer.
    pub peer_byte_burst: u64,
    /// Sustained work units per second one peer's control frames may cost (token bucket
    /// rate). A frame costs 16, plus 1 per id in an announce or page, 2 per id in a want
    /// (and 32 per alert it sends, unless they are of the catch-up page listed last), for
    /// a `want_page` 2 per alert it sends and 1 per id it excepts, 1 per log entry a
    /// sync request makes us scan, 64 for a hello, 1 per read of the store. Entries of
    /// our log shown to the peer before cost 16 each, and alerts a `want_page` sends
    /// again 32 each. Frames beyond it
    /// are dropped unanswered and cost the peer 1 penalty point each (`over_budget`).
    /// Alerts are limited by `peer_alerts_per_sec` instead.
    pub peer_work_per_sec: u64,
    /// Burst of work units (token bucket size).
    pub peer_work_burst: u64,
    /// Penalty score at which a peer is disconnected and refused for `ban_secs`.
    /// A bad signature costs 20, a malformed frame 10, a scope violation 20.
    pub penalty_threshold: u32,
    /// How long a penalised peer is refused, seconds.
    pub ban_secs: u64,
    /// Alert bodies kept in memory to answer peers' requests without a disk read.
    pub envelope_cache: usize,
    /// How far ahead of this node's clock an alert's `issued_at` may be, seconds. One
    /// dated later is refused (`future_dated`): it would sort first in every listing.
    pub max_clock_skew_secs: u64,
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
            peer_work_per_sec: 100_000,
            peer_work_burst: 200_000,
            penalty_threshold: 100,
            ban_secs: 600,
            envelope_cache: 20_000,
            max_clock_skew_secs: 600,
        }
    }
}

/// Timers the engine asks for; the runtime feeds them back as [`Event::Timer`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Send queued announces.
    FlushAnnounces,
    /// Check whether an announced alert has arrived; if not, ask for it.
    Graft(AlertId),
    /// Send the wants that graft timers queued, one frame per peer: the graft timers of
    /// the ids of one announce fire together, and their wants travel together.
    FlushWants,
    /// Check that a catch-up page from this peer has completed.
    Sync(PublicKey),
    /// Start another catch-up round with this peer (periodic repair while connected).
    Resync(PublicKey),
    /// Offer this peer the next page of what a promotion newly allows it, in walk
    /// number `walk` (a timer of a walk that was started over since does nothing).
    Offer(PublicKey, u64),
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
    /// The store already held this alert (an insert found it there): it is durable, and
    /// its log entry comes or came with its own commit notice (not added here, so the
    /// log never gets ahead of the notices before it).
    AlreadyStored(AlertId),
    /// The runtime missed notices of commits after the highest sequence number the log
    /// holds now. Reading the store ([`Engine::reads_store`]): every alert not yet
    /// committed here that the store holds is taken as committed, at once. Otherwise the
    /// runtime re-reads the store's log (re-read `gen`, counted up from 1;
    /// [`Event::LogResynced`] when it has): until the latest re-read is complete,
    /// catch-up pages stop there, so that no peer's cursor passes an entry of the log
    /// that it was never shown.
    LogGap { gen: u64 },
    /// Re-read `gen` of the store's log is complete (its entries came as
    /// [`Event::Committed`]).
    LogResynced { gen: u64 },
    /// The check of the stored alerts (at start-up, in the background) has ended;
    /// `refetch`: it quarantined damaged ones. Until then no catch-up cursor is saved
    /// ([`Engine::hold_cursors`]); if it quarantined some, every peer's log is read
    /// again from the start to fetch them again.
    StoredChecked { refetch: bool },
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
    /// An operator of this node reports a sighting (signed by this node).
    LocalSighting {
        sighting: Box<tocsin_proto::identity::Signed<tocsin_proto::identity::Sighting>>,
    },
    /// A peer's org, from the valid certificate it presented (None: no longer valid).
    PeerOrg {
        node: PublicKey,
        org: Option<PublicKey>,
    },
    /// A revocation of `node` was dropped (its org was not the node's).
    Unrevoked { node: PublicKey },
    /// Node key `node` was revoked by its agency from `at` (unix ms): its alerts issued
    /// from then on are no longer shared, and from then on (by this node's clock) none
    /// comes in, whatever its date; those held from before stay.
    Revoked { node: PublicKey, at: u64 },
    /// The signature of an alert handed out with [`Action::Verify`] was checked.
    Verified(Box<Checked>),
}

/// An alert whose signature the runtime checks off the engine's thread
/// ([`Action::Verify`]): everything else about it was checked, in the order of
/// `on_alert`, when it arrived.
#[derive(Debug, Clone)]
pub struct ToVerify {
    pub peer: PublicKey,
    pub hops: u8,
    /// Asked for by us (a catch-up page, a graft): not charged to the flood limit.
    pub solicited: bool,
    pub alert: Box<SignedAlert>,
    pub envelope: Vec<u8>,
}

impl ToVerify {
    /// The strict signature check (as the engine does it itself), with origin keys
    /// decompressed once per `keys`.
    pub fn check(self, keys: &mut VerifyingKeys) -> Checked {
        let id = self.alert.id();
        let alert = match self.alert.verify_cached(keys) {
            Ok(verified) => Ok(Box::new(verified)),
            Err(_) => Err(id),
        };
        Checked {
            peer: self.peer,
            hops: self.hops,
            solicited: self.solicited,
            alert,
            envelope: self.envelope,
        }
    }
}

/// A [`ToVerify`] whose signature was checked, for [`Event::Verified`]. The engine
/// checks the rest again when it gets it (trust may have changed meanwhile, and another
/// copy may have been accepted).
#[derive(Debug)]
pub struct Checked {
    pub peer: PublicKey,
    pub hops: u8,
    pub solicited: bool,
    /// The alert, verified; or the id of one whose signature is not valid.
    pub alert: Result<Box<VerifiedAlert>, AlertId>,
    pub envelope: Vec<u8>,
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
        alert: Box<VerifiedAlert>,
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
    /// Catch-up with `peer`, which had no cursor of its own on this log, resumes at
    /// `seq`, the cursor saved for node key `from` on the same log (the peer's node was
    /// re-keyed and kept its database): for the log.
    CursorAdopted {
        peer: PublicKey,
        from: PublicKey,
        seq: u64,
    },
    /// A frame or alert from `peer` was refused for `reason` (already counted in the
    /// peer's stats, and penalised if [`Reason::penalised`]): for metrics and logs.
    Verdict { peer: PublicKey, reason: Reason },
    /// `peer` sent a revocation that verifies (a revocation and the certificate it takes
    /// back, signed by the same org): the runtime decides whether to keep and flood it.
    /// When it keeps it, it calls [`Engine::revocation_kept`] with `digest`.
    Revocation {
        peer: PublicKey,
        proof: Box<tocsin_proto::identity::RevocationProof>,
        digest: AlertId,
    },
    /// `peer` sent a verified receipt, signed by itself, for an AMBER or RED alert of
    /// ours that we hold: the runtime keeps it.
    Receipt {
        peer: PublicKey,
        receipt: Box<tocsin_proto::identity::Signed<tocsin_proto::identity::Receipt>>,
    },
    /// Keep a sighting (the observer's newest of that alert). `unknown`: relayed for an
    /// observer not known here (the store keeps few of those per alert).
    /// `ours_to`: the alert's origin, when the sighting is this node's own and the
    /// alert another's (sent to it again when it connects).
    Sighting {
        sighting: Box<tocsin_proto::identity::Signed<tocsin_proto::identity::Sighting>>,
        unknown: bool,
        ours_to: Option<PublicKey>,
    },
    /// `peer` sends past its rate limits: stop reading its frames until `until` (ms), so
    /// that what it sends waits in its own connection (back-pressure) instead of costing
    /// this node the work of reading and dropping it. Nothing is lost that catch-up
    /// would not repair.
    PauseReading { peer: PublicKey, until: u64 },
    /// Check this alert's signature off the engine's thread and hand it back with
    /// [`Event::Verified`] ([`Engine::verify_off_thread`]). Nothing is stored or relayed
    /// before then.
    Verify(Box<ToVerify>),
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
    /// Entries of the peer's log past our catch-up cursor (its head as last seen).
    pub catch_up_lag: u64,
    #[serde(flatten)]
    pub stats: PeerStats,
}

/// Queues `frame` for `peer` in `out`.
fn send(out: &mut Vec<Action>, peer: PublicKey, frame: Frame) {
    out.push(Action::Send { peer, frame });
}

/// The engine: routes each event to the parts that own the state it changes. See the
/// module docs.
pub struct Engine {
    me: PublicKey,
    epoch: u64,
    /// Trust levels, per-peer counters, rate limits, penalties.
    scoring: Scoring,
    /// Alerts held, cancels, the envelope cache and our log.
    known: Known,
    /// Connected links and the broadcast trees over them.
    trees: Trees,
    /// Catch-up sessions and saved cursors.
    catchup: CatchUp,
    /// Origin keys decompressed once for signature checks (bounded).
    keys: VerifyingKeys,
    /// Signatures are checked by the runtime ([`Action::Verify`]) while fewer than
    /// [`MAX_VERIFYING`] alerts are out.
    verify_off_thread: bool,
    /// Alerts out with [`Action::Verify`] and their envelope bytes.
    verifying: (usize, usize),
    /// Alerts out with [`Action::Verify`] per peer that sent them.
    verifying_from: HashMap<PublicKey, usize>,
    /// `max_clock_skew_secs` in ms.
    max_skew_ms: u64,
    /// Node keys revoked by their agency, from when (unix ms). The runtime bounds it.
    revoked: HashMap<PublicKey, u64>,
    /// The org key of each peer that presented a valid certificate (a RED alert naming
    /// the org names them). The runtime bounds it (admitted or trusted peers only).
    orgs: HashMap<PublicKey, PublicKey>,
    /// This node's org key, from its own certificate.
    my_org: Option<PublicKey>,
    /// The agency (org key) that certified each node, as far as this node knows, kept
    /// after the certificate expires (the runtime bounds it): a re-keyed node's catch-up
    /// takes over the cursor of a former key of the same agency only.
    agency_of: HashMap<PublicKey, PublicKey>,
    /// The newest sighting kept per (alert, observer): its `last_seen`.
    sightings: HashMap<(AlertId, PublicKey), u64>,
    /// SHA-256 of the latest [`CHECKED_FRAMES`] receipts, sightings and revocations
    /// (signature included) whose signatures verified: an exact repeat is dropped
    /// without checking it again, so that replaying one valid frame cannot buy the
    /// network actor's time (a check is about 50 µs, on this thread).
    checked_frames: Bounded<()>,
    /// How many observers unknown here, relayed by a peer, of each alert are in
    /// `sightings`.
    unknown_observers: HashMap<AlertId, u32>,
    /// Peers whose level changed while they were not connected, with the level they
    /// had when they last were: offered what the change newly allows when they connect.
    promoted: HashMap<PublicKey, Option<TrustLevel>>,
    /// The last level each key had in this run (kept when it goes to none): a key
    /// whose level is first learnt (a node admitted on its certificate after a restart)
    /// is not taken for a promoted one, and one removed then trusted again is.
    last_level: HashMap<PublicKey, TrustLevel>,
    /// Connected peers being offered what a promotion newly allows, a page of our log
    /// at a time ([`OFFER_PAGE`]): the level they had before, and where the next page
    /// starts.
    offering: BTreeMap<PublicKey, (Option<TrustLevel>, u64, u64)>,
    /// The number of the last walk started in `offering` (counted up).
    offer_walks: u64,
    actions: Vec<Action>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("me", &self.me)
            .field("peers", &self.trees.links().count())
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A new engine for node `me`, whose log epoch is `epoch`.
    pub fn new(me: PublicKey, epoch: u64, cfg: EngineConfig) -> Self {
        Engine {
            me,
            epoch,
            scoring: Scoring::new(&cfg),
            known: Known::new(cfg.envelope_cache),
            trees: Trees::new(cfg.announce_interval_ms, cfg.graft_timeout_ms),
            catchup: CatchUp::default(),
            keys: VerifyingKeys::default(),
            verify_off_thread: false,
            verifying: (0, 0),
            verifying_from: HashMap::new(),
            max_skew_ms: cfg.max_clock_skew_secs.saturating_mul(1000),
            revoked: HashMap::new(),
            orgs: HashMap::new(),
            my_org: None,
            agency_of: HashMap::new(),
            sightings: HashMap::new(),
            checked_frames: Bounded::new(CHECKED_FRAMES),
            unknown_observers: HashMap::new(),
            promoted: HashMap::new(),
            last_level: HashMap::new(),
            offering: BTreeMap::new(),
            offer_walks: 0,
            actions: Vec::new(),
        }
    }

    /// Loads a stored alert at start-up (seq in our log), without a store to read it
    /// from (the simulator, tests). Returns whether it was issued here under a former
    /// node key ([`KnownAlert::held_by`]).
    pub fn load_alert(&mut self, seq: u64, meta: KnownAlert) -> bool {
        let (meta, former) = meta.held_by(&self.me);
        self.known.load(seq, meta);
        former
    }

    /// Reads the stored alerts and our log from `cold` instead of holding them in
    /// memory: at start-up, instead of [`Self::load_alert`] for each stored alert.
    pub fn set_cold(&mut self, cold: Box<dyn ColdAlerts>) {
        self.known.set_cold(cold);
    }

    /// Hands signature checks to the runtime ([`Action::Verify`], answered with
    /// [`Event::Verified`]) instead of doing them on the engine's thread, where they are
    /// most of the work of an alert. Past [`MAX_VERIFYING`] alerts out at once the
    /// engine checks them itself.
    pub fn verify_off_thread(&mut self) {
        self.verify_off_thread = true;
    }

    /// Alerts whose signatures are being checked off the engine's thread.
    pub fn verifying(&self) -> usize {
        self.verifying.0
    }

    /// Where our log may have a hole (commit notices were missed and the store's log is
    /// being read again): the re-read starts there.
    pub fn log_gap_at(&self) -> Option<u64> {
        self.known.log_gap_at()
    }

    /// Keeps at most `cap` committed alerts in memory beside the store (tests).
    #[cfg(test)]
    pub(crate) fn set_hot_cap(&mut self, cap: usize) {
        self.known.set_hot_cap(cap);
    }

    /// Saves no catch-up cursor until [`Event::StoredChecked`]: at start-up, while the
    /// stored alerts are checked in the background.
    pub fn hold_cursors(&mut self) {
        self.catchup.hold_cursors();
    }

    /// Whether the stored alerts are read from a [`ColdAlerts`] (whose log has no
    /// hole: missed commit notices need no re-read of it, see [`Event::LogGap`]).
    pub fn reads_store(&self) -> bool {
        self.known.is_cold()
    }

    /// Loads a saved catch-up cursor at start-up.
    pub fn load_cursor(&mut self, peer: PublicKey, epoch: u64, seq: u64) {
        self.catchup.load_cursor(peer, epoch, seq);
    }

    /// Sets a trust entry without side effects (start-up).
    pub fn load_trust(&mut self, key: PublicKey, level: TrustLevel) {
        self.scoring.set_level(key, Some(level));
        self.last_level.insert(key, level);
    }

    /// The agency that certified `node` (start-up: remembered certificates).
    pub fn load_agency(&mut self, node: PublicKey, org: PublicKey) {
        self.agency_of.insert(node, org);
    }

    /// This node's key.
    pub fn me(&self) -> PublicKey {
        self.me
    }

    /// Whether the engine holds this alert.
    pub fn knows(&self, id: &AlertId) -> bool {
        self.known.contains(id)
    }

    /// Number of alerts known.
    pub fn known_count(&self) -> usize {
        self.known.len()
    }

    /// The trust level of a key.
    pub fn trust_of(&self, key: &PublicKey) -> Option<TrustLevel> {
        self.scoring.level(key)
    }

    /// Whether a peer may connect now (trusted, not banned).
    pub fn may_connect(&self, key: &PublicKey, now: u64) -> bool {
        self.scoring.may_connect(key, now)
    }

    /// This node's org key (from its certificate): a RED alert naming it names this node.
    pub fn set_org(&mut self, org: Option<PublicKey>) {
        self.my_org = org;
    }

    /// Whether `key` is banned (for invalid data) at `now`.
    pub fn is_banned(&self, key: &PublicKey, now: u64) -> bool {
        self.scoring.is_banned(key, now)
    }

    /// Per-peer state for every peer that is trusted or has stats.
    pub fn peer_reports(&self) -> Vec<PeerReport> {
        self.scoring
            .keys()
            .into_iter()
            .map(|k| {
                let link = self.trees.link(&k);
                PeerReport {
                    key: k,
                    connected: link.is_some(),
                    eager: link.is_some_and(|l| l.eager),
                    origin_trees: link.map_or(0, |l| l.origin_trees()),
                    catching_up: self.catchup.is_catching_up(&k),
                    catch_up_lag: self.catchup.lag(&k),
                    stats: self.scoring.stats(&k).cloned().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Connected peers.
    pub fn connected(&self) -> impl Iterator<Item = &PublicKey> {
        self.trees.links().map(|(k, _)| k)
    }

    /// Handles one event at time `now` (ms) and returns the actions to carry out.
    pub fn handle(&mut self, event: Event, now: u64) -> Vec<Action> {
        match event {
            Event::PeerConnected(peer) => self.on_connected(peer, now),
            Event::PeerDisconnected(peer) => self.drop_peer(&peer),
            Event::Frame { peer, bytes } => self.on_frame(peer, &bytes, now),
            Event::OversizedFrame { peer } => self.verdict(peer, Reason::OversizedFrame, now),
            Event::Local { alert } => self.on_local(alert.into_signed(), now),
            Event::Committed(entries) => {
                for (seq, id) in entries {
                    self.known.committed(seq, id);
                    self.catchup.settle(&id, false, now, &mut self.actions);
                }
            }
            Event::AlreadyStored(id) => {
                self.known.durable(&id);
                self.catchup.settle(&id, false, now, &mut self.actions);
            }
            Event::LogGap { gen } => {
                for id in self.known.log_gap(gen) {
                    self.catchup.settle(&id, false, now, &mut self.actions);
                }
            }
            Event::LogResynced { gen } => self.known.log_resynced(gen),
            Event::StoredChecked { refetch } => {
                self.catchup
                    .release_cursors(refetch, now, &mut self.actions)
            }
            Event::StoreFailed(ids) => {
                for id in ids {
                    self.known.forget(&id);
                    self.catchup.settle(&id, true, now, &mut self.actions);
                }
            }
            Event::Timer(t) => self.on_timer(t, now),
            Event::Trust { key, level } => self.on_trust(key, level, now),
            Event::LocalSighting { sighting } => self.on_sighting(None, *sighting, now),
            Event::PeerOrg { node, org } => match org {
                Some(org) => {
                    self.orgs.insert(node, org);
                    if self.agency_of.len() < MAX_AGENCIES_KNOWN
                        || self.agency_of.contains_key(&node)
                    {
                        self.agency_of.insert(node, org);
                    }
                }
                None => {
                    self.orgs.remove(&node);
                }
            },
            Event::Unrevoked { node } => {
                self.revoked.remove(&node);
            }
            Event::Revoked { node, at } => {
                let at = self.revoked.get(&node).map_or(at, |held| at.min(*held));
                self.revoked.insert(node, at);
            }
            Event::Verified(checked) => self.on_verified(*checked, now),
        }
        #[cfg(test)]
        if let Err(e) = self.check_invariants(now) {
            #[allow(clippy::panic)]
            {
                panic!("engine invariant broken: {e}");
            }
        }
        std::mem::take(&mut self.actions)
    }

    /// Checks the invariants of every part and between them: connected peers are
    /// allowed to connect, catch-up runs only with connected peers, an alert held is
    /// not also missing. Run after every event in the engine's tests and the simulator;
    /// never on the daemon's path.
    pub fn check_invariants(&self, now: u64) -> Result<(), String> {
        self.scoring.check_invariants()?;
        self.known.check_invariants()?;
        self.trees.check_invariants(|id| self.known.contains(id))?;
        self.catchup
            .check_invariants(|peer| self.trees.is_connected(peer))?;
        if let Some((peer, _)) = self
            .trees
            .links()
            .find(|(peer, _)| !self.scoring.may_connect(peer, now))
        {
            return Err(format!(
                "{} is connected but may not connect (untrusted or banned)",
                peer.fmt_short()
            ));
        }
        Ok(())
    }

    fn send(&mut self, peer: PublicKey, frame: Frame) {
        send(&mut self.actions, peer, frame);
    }

    /// The peer is gone (disconnected, banned, trust withdrawn) from every part that
    /// holds connection state.
    fn drop_peer(&mut self, peer: &PublicKey) {
        self.trees.disconnect(peer);
        self.catchup.end(peer);
        // An offer cut short starts over when the peer connects again.
        if let Some((before, _, _)) = self.offering.remove(peer) {
            let seen = self.promoted.entry(*peer).or_insert(before);
            *seen = (*seen).min(before);
        }
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
        self.catchup.end(&peer);
        self.trees.connect(peer);
        let head = self.known.head();
        self.send(
            peer,
            Frame::Hello {
                epoch: self.epoch,
                head,
            },
        );
        if let Some(before) = self.promoted.remove(&peer) {
            self.offer_newly_allowed(peer, before, now);
        }
    }

    fn on_trust(&mut self, key: PublicKey, level: Option<TrustLevel>, now: u64) {
        let before = self.scoring.level(&key);
        self.scoring.set_level(key, level);
        // What we take in is decided when it arrives: alerts refused under the old
        // level, which catch-up's cursors have passed, are read again. From this peer
        // when it may now send more; from every peer when it was a blocked origin.
        let known = before.or_else(|| self.last_level.get(&key).copied());
        if let Some(l) = level {
            if self.last_level.len() < MAX_LAST_LEVELS || self.last_level.contains_key(&key) {
                self.last_level.insert(key, l);
            }
        }
        let takes = |l: Option<TrustLevel>| match l {
            None | Some(TrustLevel::Blocked) => 0,
            Some(TrustLevel::Public) => 1,
            Some(TrustLevel::Member) => 2,
            Some(TrustLevel::Partner) => 3,
        };
        if known == Some(TrustLevel::Blocked) && level != known {
            for peer in self.catchup.peers() {
                if peer != key {
                    self.catchup.reread(peer, now, &mut self.actions);
                }
            }
        }
        if known.is_some() && takes(level) > takes(known) {
            self.catchup.reread(key, now, &mut self.actions);
        }
        if self.trees.is_connected(&key) && !self.may_connect(&key, now) {
            self.drop_peer(&key);
            self.actions.push(Action::Disconnect {
                peer: key,
                until: None,
                reason: "trust withdrawn",
            });
        }
        // Trust is decided at send time: what the new level allows and the old did not
        // is offered at once (at the next connection if the peer is not connected),
        // whatever catch-up's cursor on our log says.
        if self.trees.is_connected(&key) {
            self.offer_newly_allowed(key, before, now);
        } else if before != level {
            // The level it had when it last was connected is what it has seen.
            self.promoted.entry(key).or_insert(before);
        }
    }

    /// Offers `peer` every alert we hold that its level now allows and `before` did not:
    /// after a promotion, the still-active alerts it may now see, in full; after a
    /// demotion, nothing. The log is walked [`OFFER_PAGE`] entries per event. A change
    /// during a walk starts it over, from the lower of the levels the peer had before
    /// either (what it may have missed meanwhile is offered too).
    fn offer_newly_allowed(&mut self, peer: PublicKey, before: Option<TrustLevel>, now: u64) {
        let before = match self.offering.get(&peer) {
            Some((first, _, _)) => (*first).min(before),
            None if self.scoring.level(&peer) == before => return,
            None => before,
        };
        // A new walk: the timer of the one it replaces finds another number and stops.
        self.offer_walks += 1;
        self.offering.insert(peer, (before, 0, self.offer_walks));
        self.offer_page(peer, self.offer_walks, now);
    }

    /// One page of a promotion's offer (see [`Self::offer_newly_allowed`]).
    fn offer_page(&mut self, peer: PublicKey, walk: u64, now: u64) {
        let Some(&(before, after, current)) = self.offering.get(&peer) else {
            return;
        };
        if walk != current {
            return;
        }
        let level = self.scoring.level(&peer);
        if level == before || !self.trees.is_connected(&peer) {
            self.offering.remove(&peer);
            return;
        }
        let Some((page, next)) = self.known.page_of_all(after, OFFER_PAGE) else {
            // The store could not be read: the same page again later.
            self.actions.push(Action::SetTimer {
                at: now + OFFER_RETRY_MS,
                timer: Timer::Offer(peer, walk),
            });
            return;
        };
        let offer: Vec<(AlertId, u8, Tlp)> = page
            .iter()
            .filter(|k| k.from != Some(peer) && k.alert.origin != peer)
            .filter(|k| self.shareable(k, &peer, level, now))
            .filter(|k| !self.shareable(k, &peer, before, now))
            .map(|k| (k.id(), k.hops.saturating_add(1), k.alert.tlp))
            .collect();
        drop(page);
        match next {
            Some(next) => {
                self.offering.insert(peer, (before, next, walk));
                self.actions.push(Action::SetTimer {
                    at: now,
                    timer: Timer::Offer(peer, walk),
                });
            }
            None => {
                self.offering.remove(&peer);
            }
        }
        let mut from_store = Vec::new();
        for (id, hops, tlp) in offer {
            // CLEAR and GREEN are announced (ids only; the peer asks for what it lacks),
            // the rest, which no other node may give it, is sent in full.
            if matches!(tlp, Tlp::Clear | Tlp::Green) {
                self.trees
                    .queue_lazy(&peer, id, hops, now, &mut self.actions);
                continue;
            }
            self.scoring.stats_mut(peer).alerts_out += 1;
            match self.known.envelope(&id) {
                Some(env) => {
                    let envelope = env.as_ref().clone();
                    self.send(peer, Frame::Alert { hops, envelope });
                }
                None => from_store.push((id, hops)),
            }
        }
        if !from_store.is_empty() {
            self.actions.push(Action::SendStored {
                peer,
                alerts: from_store,
            });
        }
    }

    /// Refuses input from `peer` for `reason`: counts it, reports it as
    /// [`Action::Verdict`], and adds the reason's penalty points; past the threshold the
    /// peer is disconnected and banned.
    fn verdict(&mut self, peer: PublicKey, reason: Reason, now: u64) {
        self.actions.push(Action::Verdict { peer, reason });
        if let Some(until) = self.scoring.judge(peer, reason, now) {
            self.drop_peer(&peer);
            self.actions.push(Action::Disconnect {
                peer,
                until: Some(until),
                reason: "penalty threshold reached",
            });
        }
    }

    /// Whether we may give this alert to `peer` (push, announce, catch-up or on request).
    fn shareable(
        &self,
        k: &KnownAlert,
        peer: &PublicKey,
        level: Option<TrustLevel>,
        now: u64,
    ) -> bool {
        !k.alert.is_expired(now)
            && !self.known.is_cancelled(&k.alert.id, &k.alert.origin)
            && !self.is_revoked(&k.alert.origin, k.alert.issued_at)
            && self.scoring.level(&k.alert.origin) != Some(TrustLevel::Blocked)
            && self.may_send(peer, level, &k.alert, k.hops)
    }

    /// [`policy::may_send`], where a RED alert that names an agency's org key counts as
    /// naming every node of that agency whose certificate this node has seen.
    fn may_send(
        &self,
        peer: &PublicKey,
        level: Option<TrustLevel>,
        alert: &tocsin_proto::AlertSummary,
        hops: u8,
    ) -> bool {
        let scope = alert.scope();
        match self.orgs.get(peer) {
            Some(org) if scope.tlp == Tlp::Red && scope.recipients.contains(org) => {
                let mut named = scope.recipients.to_vec();
                named.push(*peer);
                policy::may_send(
                    &self.me,
                    peer,
                    level,
                    policy::Scope {
                        recipients: &named,
                        ..scope
                    },
                    hops,
                )
            }
            _ => policy::may_send(&self.me, peer, level, scope, hops),
        }
    }

    /// Whether `origin`'s agency revoked it at or before `at`: an alert's `issued_at`
    /// for what is shared, or the later of that and the clock for what comes in.
    fn is_revoked(&self, origin: &PublicKey, at: u64) -> bool {
        self.revoked
            .get(origin)
            .is_some_and(|revoked| at >= *revoked)
    }

    /// Whether we may give `peer` back an alert it originated, on its request.
    fn returnable(
        &self,
        k: &KnownAlert,
        peer: &PublicKey,
        level: Option<TrustLevel>,
        now: u64,
    ) -> bool {
        !k.alert.is_expired(now) && policy::may_return(peer, level, k.alert.scope())
    }

    /// Holds a newly accepted alert.
    fn accept(&mut self, meta: KnownAlert, envelope: Arc<Vec<u8>>) {
        self.trees.forget_missing(&meta.id());
        self.known.accept(meta, envelope);
    }

    fn on_local(&mut self, alert: SignedAlert, now: u64) {
        let id = alert.id();
        if self.known.contains(&id) {
            return;
        }
        let meta = KnownAlert::of(&alert, 0, None);
        self.accept(meta, Arc::new(alert.to_envelope()));
        // Not durable until its commit notice: a peer's catch-up page that lists it
        // back to us must wait for it (the commit may fail).
        self.known.mark_uncommitted(id);
        self.relay(id, None, now);
    }

    /// Pushes or announces a newly accepted alert to every peer the policy allows.
    fn relay(&mut self, id: AlertId, from: Option<PublicKey>, now: u64) {
        let Some(k) = self.known.get(&id) else { return };
        if k.hops >= MAX_HOPS && k.from.is_some() {
            return;
        }
        // Alerts that are never relayed further (AMBER, RED) go in full: no receiver can
        // get them another way, so there is nothing to deduplicate.
        let push_all = !matches!(k.alert.tlp, Tlp::Clear | Tlp::Green);
        let targets: Vec<(PublicKey, bool)> = self
            .trees
            .links()
            .filter(|(peer, _)| Some(**peer) != from)
            .filter(|(peer, _)| self.shareable(&k, peer, self.scoring.level(peer), now))
            .map(|(peer, l)| (*peer, l.eager_for(&k.alert.origin) || push_all))
            .collect();
        let hops = k.hops.saturating_add(1);
        let envelope = self.known.envelope(&id).cloned();
        for (peer, eager) in targets {
            match (&envelope, eager) {
                (Some(env), true) => {
                    self.scoring.stats_mut(peer).alerts_out += 1;
                    self.send(
                        peer,
                        Frame::Alert {
                            hops,
                            envelope: env.as_ref().clone(),
                        },
                    );
                }
                (None, true) => {
                    self.scoring.stats_mut(peer).alerts_out += 1;
                    self.actions.push(Action::SendStored {
                        peer,
                        alerts: vec![(id, hops)],
                    });
                }
                (_, false) => self
                    .trees
                    .queue_lazy(&peer, id, hops, now, &mut self.actions),
            }
        }
    }

    fn on_timer(&mut self, timer: Timer, now: u64) {
        match timer {
            Timer::FlushAnnounces => {
                for (peer, items) in self.trees.take_lazy() {
                    // Trust may have changed since the ids were queued.
                    let level = self.scoring.level(&peer);
                    let items: Vec<(AlertId, u8)> = items
                        .into_iter()
                        .filter(|(id, _)| {
                            self.known
                                .get(id)
                                .is_some_and(|k| self.shareable(&k, &peer, level, now))
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
                if self.known.is_checking(&id) {
                    // It arrived and its signature is being checked: look again later
                    // (if the copy is forged, the next announcer is asked then).
                    self.actions.push(Action::SetTimer {
                        at: now + self.trees.graft_timeout_ms(),
                        timer: Timer::Graft(id),
                    });
                } else if self.known.contains(&id) {
                    self.trees.forget_missing(&id);
                } else if let Some(peer) = self.trees.graft_timer(id, now, &mut self.actions) {
                    // Not its fault if our own limits may have dropped what it sent, or
                    // if a cancel of it came meanwhile (a cancelled alert is not sent;
                    // the next announcer is still asked, as anyone may sign a cancel
                    // naming any id).
                    let asked_at = now.saturating_sub(self.trees.graft_timeout_ms());
                    if !self.scoring.limited_since(&peer, asked_at) && !self.known.cancel_seen(&id)
                    {
                        self.verdict(peer, Reason::Undelivered, now);
                    }
                }
            }
            Timer::FlushWants => self.trees.flush_wants(&mut self.actions),
            Timer::Sync(peer) => {
                // A page may wait for an alert stored here whose commit notice was
                // missed (and a read of the store failed then): look again.
                if self.known.is_cold() && self.catchup.has_stalled(&peer, now) {
                    let waiting = self.catchup.front_waiting(&peer);
                    for id in self.known.settle_stored(&waiting) {
                        self.catchup.settle(&id, false, now, &mut self.actions);
                    }
                }
                // While our log misses commit notices, or a page waits only for alerts
                // not yet committed here or cancelled meanwhile (a cancelled alert is
                // not sent), it is not the peer's fault.
                let known = &self.known;
                let undelivered = self
                    .catchup
                    .on_stall_timer(peer, now, &mut self.actions, |id| {
                        known.is_uncommitted(id) || known.is_checking(id) || known.cancel_seen(id)
                    });
                if undelivered && self.known.log_gap_at().is_none() {
                    self.verdict(peer, Reason::Undelivered, now);
                }
            }
            Timer::Resync(peer) => self.catchup.on_resync_timer(peer, now, &mut self.actions),
            Timer::Offer(peer, walk) => self.offer_page(peer, walk, now),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
