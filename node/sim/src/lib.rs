//! # tocsin-sim
//!
//! A deterministic discrete-event simulator that runs the real [`Engine`] for every
//! node of a federation. Test support only: `tocsind` does not link it.
//!
//! After every event it checks the engine's invariants ([`Engine::check_invariants`]);
//! failures are counted in [`SimCounters::invariant_violations`] and the first is kept
//! in [`SimReport::first_violation`].
//!
//! Time is virtual (milliseconds from 0); events wait in an ordered map keyed by
//! `(time, sequence number)`, so two events at the same instant run in the order they
//! were scheduled. All randomness (keys, topology, trust levels, latency, loss) comes
//! from one [`StdRng`] seeded with [`SimConfig::seed`]; nothing reads the wall clock.
//! Given a deterministic engine, the same configuration and the same calls give the
//! same [`SimReport`].
//!
//! # Model
//! - **Topology**: a random spanning tree (so the graph is connected) plus random links
//!   until every node has about [`SimConfig::degree`] links. Links are symmetric and
//!   each gets one [`TrustLevel`] that both ends load with [`Engine::load_trust`].
//!   With [`SimConfig::blocked_origins`], some nodes are blocked by a few of their
//!   neighbours: those links are refused and the blockers drop the blocked node's
//!   alerts even when another peer relays them.
//! - **Agencies** ([`SimConfig::orgs`] > 0): each node belongs to one of that many
//!   agencies, each with its org key. Trust tables are then keyed by org, as partners
//!   that trust an agency's org key have them: a node gives every neighbour of one
//!   agency the level it drew once for that agency, except for the neighbours it also
//!   has an entry of their own for (one in four; that entry wins). Each engine knows its
//!   own org ([`Engine::set_org`]) and learns each peer's as it connects
//!   ([`Event::PeerOrg`], as the daemon does once a certificate checks out). A blocker
//!   blocks the blocked node's whole agency: every node of it that it has met. RED
//!   alerts may name agencies ([`Sim::publish_to`]).
//! - **Connections**: every link connects at t = 0 ([`Event::PeerConnected`] at both
//!   ends, after both engines' [`Engine::may_connect`] agree). A connection is an
//!   ordered stream per direction: each frame gets a uniform latency from
//!   [`SimConfig::latency_ms`] but never overtakes an earlier frame on the same
//!   connection. Frames still in flight when a connection closes are lost with it.
//! - **Loss**: each frame is dropped with probability [`SimConfig::loss`] (silently,
//!   without closing the connection).
//! - **Store**: [`Action::Store`] gives the alert the node's next sequence number and is
//!   acknowledged with [`Event::Committed`] [`COMMIT_DELAY_MS`] later, batched per node
//!   (group commit). A stopped node loses what was not committed yet.
//! - **Faults**: [`Sim::partition`] / [`Sim::heal`] and [`Sim::stop`] /
//!   [`Sim::restart`]; a restarted node gets a fresh engine loaded from its committed
//!   alerts and saved cursors, with the same log epoch, so catch-up is exercised.
//!
//! # What is measured
//! [`Sim::report`] compares what every node stored against the set of nodes
//! *permitted* to hold each alert, computed here from the trust graph and the rules of
//! the design brief, independently of the engine and of `tocsin_proto::policy` (see
//! [`Sim::permitted`]). It also reports the relative message redundancy (RMR) of full
//! alert bodies, the bytes spent on announces, and the last delivery's latency against
//! the shortest-path bound.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tocsin_proto::limits::MAX_HOPS;
use tocsin_proto::policy::TrustLevel;
use tocsin_proto::{
    AlertBody, AlertId, Frame, Indicator, IndicatorType, Kind, PublicKey, Severity, SignedAlert,
    SigningKey, Tlp, FORMAT_VERSION,
};

use tocsin_node::engine::{Action, Checked, Engine, EngineConfig, Event, KnownAlert, Timer};
use tocsin_proto::identity::RevocationProof;

/// Simulated time from an [`Action::Store`] to its [`Event::Committed`], ms: one group
/// commit of the node's store.
pub const COMMIT_DELAY_MS: u64 = 1;

/// Bytes of the length prefix in front of every frame on the wire; counted in the frame
/// byte totals so that they match what a real connection carries.
pub const LEN_PREFIX_BYTES: u64 = 4;

/// The engines' clock at virtual time 0 (1 January 2026, unix ms): the engines see
/// `ISSUED_AT_BASE_MS + t`, and an alert published at virtual time `t` is issued then,
/// so bodies look like real alerts and pass the engines' clock checks. Reports and
/// schedules use virtual time.
pub const ISSUED_AT_BASE_MS: u64 = 1_767_225_600_000;

/// Most neighbours that block one blocked node (see [`SimConfig::blocked_origins`]).
/// A few, so that the node stays connected and its alerts still reach the blockers
/// through relays, which the blockers must then drop.
pub const MAX_BLOCKERS_PER_ORIGIN: usize = 2;

/// Free text of simulated alerts: long enough that a body is the size of a typical
/// alert (~600 bytes), so body and announce byte counts are realistic.
const ALERT_TEXT: &str = "Simulated alert. Lures impersonate a clearing house and harvest \
    credentials for payment processors; the listed infrastructure serves the phishing kit \
    and the second-stage loader. Block the indicators at mail gateways and proxies, hunt \
    for the hashes on endpoints, and report sightings to the issuing agency. This text \
    pads the body to the size of a typical alert so that byte counts are realistic.";

/// How trust levels are assigned to links.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum LevelMix {
    /// Every link is `member`.
    AllMember,
    /// Every link is `partner`.
    AllPartner,
    /// Each link draws its level with these relative weights.
    Mixed {
        /// Weight of `public` links.
        public: u32,
        /// Weight of `member` links.
        member: u32,
        /// Weight of `partner` links.
        partner: u32,
    },
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes (at least 2).
    pub nodes: usize,
    /// Links per node the graph generator aims for (at least 1, below `nodes`). Nodes
    /// of the spanning tree may end up with a few more.
    pub degree: usize,
    /// Trust levels of the links.
    pub levels: LevelMix,
    /// Per-frame latency, uniform in `min..=max` ms.
    pub latency_ms: (u64, u64),
    /// Probability that a frame is dropped, in `[0, 1)`.
    pub loss: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Engine settings, the same for every node.
    pub engine: EngineConfig,
    /// How many nodes are blocked by up to [`MAX_BLOCKERS_PER_ORIGIN`] of their
    /// neighbours (0: none).
    pub blocked_origins: usize,
    /// How many agencies the nodes belong to, with org-keyed trust tables (0: none, every
    /// link has one level at both ends).
    pub orgs: usize,
    /// None: each engine checks signatures itself. `Some((min, max))`: as the daemon
    /// does, engines hand them out ([`Engine::verify_off_thread`]), and each check
    /// comes back `min..=max` ms later (uniform), so that they come back out of order.
    pub verify_ms: Option<(u64, u64)>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 100,
            degree: 5,
            levels: LevelMix::Mixed {
                public: 1,
                member: 2,
                partner: 2,
            },
            latency_ms: (10, 50),
            loss: 0.0,
            seed: 0,
            engine: EngineConfig::default(),
            blocked_origins: 0,
            orgs: 0,
            verify_ms: None,
        }
    }
}

impl SimConfig {
    fn validate(&self) -> Result<(), SimError> {
        let bad = |why: String| Err(SimError::Config(why));
        if self.nodes < 2 {
            return bad(format!("nodes = {}: need at least 2", self.nodes));
        }
        if self.degree == 0 || self.degree >= self.nodes {
            return bad(format!(
                "degree = {}: must be at least 1 and below nodes ({})",
                self.degree, self.nodes
            ));
        }
        if self.latency_ms.0 > self.latency_ms.1 {
            return bad(format!(
                "latency_ms = {:?}: min is above max",
                self.latency_ms
            ));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return bad(format!("loss = {}: must be in [0, 1)", self.loss));
        }
        if let LevelMix::Mixed {
            public,
            member,
            partner,
        } = self.levels
        {
            if u64::from(public) + u64::from(member) + u64::from(partner) == 0 {
                return bad("levels: the Mixed weights are all zero".into());
            }
        }
        if self.orgs > self.nodes {
            return bad(format!(
                "orgs = {}: more than nodes ({})",
                self.orgs, self.nodes
            ));
        }
        if self.blocked_origins > self.nodes {
            return bad(format!(
                "blocked_origins = {}: more than nodes ({})",
                self.blocked_origins, self.nodes
            ));
        }
        Ok(())
    }
}

/// Why a simulator call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration is unusable; the message names the field.
    #[error("invalid simulator config: {0}")]
    Config(String),
    /// There is no node with this index.
    #[error("no node {0}")]
    NoNode(usize),
    /// The node is stopped.
    #[error("node {0} is stopped")]
    Stopped(usize),
    /// The node is running (restart of a running node).
    #[error("node {0} is running")]
    Running(usize),
    /// The alert could not be built or signed.
    #[error("cannot build the alert: {0}")]
    Alert(#[from] tocsin_proto::Error),
}

/// Frames of one kind: what was sent, lost and delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FrameStats {
    /// Frames the engines asked to send.
    pub sent: u64,
    /// Their bytes, length prefix included.
    pub sent_bytes: u64,
    /// Dropped by the simulated loss.
    pub lost: u64,
    /// Dropped because the connection was closed (at sending or in flight).
    pub closed: u64,
    /// Handed to the receiving engine.
    pub delivered: u64,
}

/// A connection closed by an engine ([`Action::Disconnect`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisconnectRecord {
    /// Virtual time, ms.
    pub at: u64,
    /// The node whose engine closed the connection.
    pub node: usize,
    /// The peer it disconnected.
    pub peer: usize,
    /// The engine's reason.
    pub reason: &'static str,
    /// Refused until then, if banned.
    pub until: Option<u64>,
}

/// Simulator bookkeeping that is not about one alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimCounters {
    /// Events processed.
    pub events: u64,
    /// Events after which an engine's [`Engine::check_invariants`] failed.
    pub invariant_violations: u64,
    /// Connection attempts refused by one end's `may_connect` (blocked links, bans).
    pub refused_connections: u64,
    /// Revocations taken in by a node (each node counts each revocation once).
    pub revocations_held: u64,
    /// Receipts an origin got again from the same receiver (resent on reconnect).
    pub duplicate_receipts: u64,
    /// `Store` actions for an alert the node already held.
    pub duplicate_stores: u64,
    /// `SendStored` ids with no published envelope.
    pub missing_envelopes: u64,
    /// Frames that failed to encode.
    pub encode_errors: u64,
    /// Sends to keys that are not simulated nodes, or not linked to the sender.
    pub unroutable_sends: u64,
}

/// Counters summed over the engines' per-peer stats (running nodes only), and the
/// engines' verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EngineTotals {
    /// Rejections by reason: every [`Action::Verdict`] over the run, all nodes.
    pub rejections: BTreeMap<&'static str, u64>,
    /// Frames or alerts dropped by rate limits.
    pub rate_limited: u64,
    /// Duplicate full alerts received.
    pub duplicates: u64,
}

/// Outcome of one alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertReport {
    /// The alert's id.
    pub id: AlertId,
    /// The publishing node.
    pub origin: usize,
    /// Its TLP.
    pub tlp: Tlp,
    /// Virtual time it was published, ms.
    pub published_at: u64,
    /// Nodes other than the origin permitted to hold it.
    pub permitted: usize,
    /// Permitted nodes that hold it.
    pub delivered: usize,
    /// `delivered / permitted` (1 when nobody else is permitted).
    pub delivery_ratio: f64,
    /// Permitted nodes that do not hold it.
    pub missing: Vec<usize>,
    /// Nodes that hold it without being permitted.
    pub unauthorised: Vec<usize>,
    /// Full-body `Alert` frames for it handed to engines.
    pub body_frames_received: u64,
    /// Bytes of `Alert` frames for it that were sent.
    pub body_bytes: u64,
    /// Its share of the `Announce` and `Want` frame bytes sent (a frame's bytes are
    /// split evenly among the ids it carries).
    pub announce_bytes: u64,
    /// Relative message redundancy: `body_frames_received / (receivers - 1) - 1`, where
    /// receivers are the nodes holding it, origin included. None with one receiver.
    pub rmr: Option<f64>,
    /// Time from publishing to the last delivery to a permitted node, ms.
    pub last_delivery_ms: Option<u64>,
    /// Shortest-path bound of that: the largest hop distance (over the permitted links)
    /// of the permitted nodes that hold it, times the minimum latency, ms.
    pub bound_ms: Option<u64>,
    /// `last_delivery_ms / bound_ms`, when the bound is above 0.
    pub latency_ratio: Option<f64>,
}

/// Aggregates over all alerts of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Alerts published.
    pub alerts: usize,
    /// Sum over alerts of permitted nodes (origin excluded).
    pub permitted: usize,
    /// Sum over alerts of permitted nodes holding the alert.
    pub delivered: usize,
    /// `delivered / permitted` (1 when nothing was permitted).
    pub delivery_ratio: f64,
    /// Sum over alerts of nodes holding an alert they are not permitted to hold.
    pub unauthorised: usize,
    /// Full-body frames received, all alerts.
    pub body_frames_received: u64,
    /// RMR over the run: `body_frames_received / Σ(receivers - 1) - 1`.
    pub rmr: Option<f64>,
    /// Bytes of all `Alert` frames sent.
    pub body_bytes: u64,
    /// Bytes of all other frames sent (`Announce`, `Want`, `Prune`, `Graft`): everything
    /// but bodies and catch-up.
    pub announce_overhead_bytes: u64,
    /// `announce_overhead_bytes / (alerts × nodes)`.
    pub announce_bytes_per_alert_per_node: f64,
    /// Bytes of catch-up frames (`Hello`, `SyncRequest`, `SyncPage`) sent.
    pub sync_bytes: u64,
    /// Largest latency ratio over alerts.
    pub latency_ratio_max: Option<f64>,
    /// Mean latency ratio over alerts that have one.
    pub latency_ratio_mean: Option<f64>,
}

/// Everything a run measured. Serializable, and equal for equal runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// Number of links in the graph (blocked ones included).
    pub links: usize,
    /// Virtual time at the report, ms.
    pub now_ms: u64,
    /// Aggregates.
    pub totals: Totals,
    /// One entry per published alert, in publishing order.
    pub alerts: Vec<AlertReport>,
    /// Frame counts by frame name.
    pub frames: BTreeMap<&'static str, FrameStats>,
    /// Connections closed by engines.
    pub disconnects: Vec<DisconnectRecord>,
    /// The engines' own counters.
    pub engine: EngineTotals,
    /// Simulator bookkeeping.
    pub counters: SimCounters,
    /// The first broken engine invariant, if any (see [`SimCounters::invariant_violations`]).
    pub first_violation: Option<String>,
}

impl SimReport {
    /// One line with the headline numbers.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
        format!(
            "nodes={} links={} alerts={} delivery={:.4} ({}/{}) unauthorised={} rmr={} \
             body_bytes={} announce_overhead_bytes={} ({:.1}/alert/node) \
             latency_ratio max={} mean={} disconnects={} virtual_ms={} events={}",
            self.nodes,
            self.links,
            t.alerts,
            t.delivery_ratio,
            t.delivered,
            t.permitted,
            t.unauthorised,
            opt(t.rmr),
            t.body_bytes,
            t.announce_overhead_bytes,
            t.announce_bytes_per_alert_per_node,
            opt(t.latency_ratio_max),
            opt(t.latency_ratio_mean),
            self.disconnects.len(),
            self.now_ms,
            self.counters.events,
        )
    }
}

/// How a [`Sim::run_until_quiet`] call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// The event queue emptied (otherwise the time limit was reached).
    pub quiet: bool,
    /// Virtual time at the end, ms.
    pub now_ms: u64,
}

/// How a node came to hold an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Virtual time it was stored (or published), ms.
    pub at: u64,
    /// Hops from the origin (0 at the origin).
    pub hops: u8,
    /// The peer it came from (None at the origin).
    pub from: Option<usize>,
}

struct SimNode {
    key: SigningKey,
    pk: PublicKey,
    epoch: u64,
    engine: Option<Engine>,
    /// Incremented at every stop, so that timers and commits of a previous engine
    /// are not fed to a new one.
    life: u64,
    next_seq: u64,
    /// Committed alerts by sequence number: what a restart loads.
    stored: BTreeMap<u64, KnownAlert>,
    /// Stored, not yet committed.
    pending: Vec<(u64, KnownAlert)>,
    commit_scheduled: bool,
    cursors: BTreeMap<PublicKey, (u64, u64)>,
    held: BTreeMap<AlertId, Delivery>,
    /// Revocations held (kept across restarts, as the store keeps them): revoked node
    /// key -> (from when, the `revoke` frame that carries it).
    revocations: BTreeMap<PublicKey, (u64, Frame)>,
    /// Receipts this node signed, by the origin they go to (sent again when it
    /// reconnects, as the daemon's outbox is).
    receipts_out: BTreeMap<PublicKey, Vec<Frame>>,
    /// Its agency (index into `Sim::org_keys`), with [`SimConfig::orgs`].
    org: Option<usize>,
}

struct Link {
    a: usize,
    b: usize,
    level: TrustLevel,
    up: bool,
    /// Connection generation: frames of an earlier connection are dropped.
    conn: u64,
    /// Latest scheduled arrival per direction (a→b, b→a), for in-order delivery.
    last: [u64; 2],
}

struct Track {
    id: AlertId,
    origin: usize,
    tlp: Tlp,
    published_at: u64,
    /// Permitted nodes (origin included, at 0) and their hop distance.
    permitted: BTreeMap<usize, u8>,
    body_frames_received: u64,
    body_bytes: u64,
    announce_bytes: u64,
}

enum Scheduled {
    Frame {
        link: usize,
        conn: u64,
        from: usize,
        to: usize,
        name: &'static str,
        body_of: Option<AlertId>,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        life: u64,
        timer: Timer,
    },
    Commit {
        node: usize,
        life: u64,
    },
    /// A signature check handed out with [`Action::Verify`] comes back.
    Verified {
        node: usize,
        life: u64,
        checked: Box<Checked>,
    },
}

impl Scheduled {
    /// Work that recurs for ever (periodic catch-up rounds), not a sign of activity.
    fn is_periodic(&self) -> bool {
        matches!(
            self,
            Scheduled::Timer {
                timer: Timer::Resync(_),
                ..
            }
        )
    }
}

/// The simulator. See the module docs.
pub struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    /// Origin keys for the signature checks handed out ([`SimConfig::verify_ms`]).
    keys: tocsin_proto::VerifyingKeys,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Scheduled>,
    nodes: Vec<SimNode>,
    by_key: HashMap<PublicKey, usize>,
    links: Vec<Link>,
    link_of: HashMap<(usize, usize), usize>,
    /// Per node, (neighbour, link index), sorted by neighbour.
    adj: Vec<Vec<(usize, usize)>>,
    /// Per node, its trust table by node index (the level it gives each node, through
    /// its own entry or its agency's).
    trust: Vec<BTreeMap<usize, TrustLevel>>,
    /// Org keys of the agencies ([`SimConfig::orgs`]).
    org_keys: Vec<PublicKey>,
    /// Per node, the level of each agency's org entry in its table, drawn when it first
    /// links to a node of that agency.
    org_levels: Vec<BTreeMap<usize, TrustLevel>>,
    /// (x, y) where x's level for y comes from an entry of y's own (with agencies).
    own_entries: BTreeSet<(usize, usize)>,
    /// Partition group of each node, while partitioned.
    groups: Option<Vec<usize>>,
    envelopes: HashMap<AlertId, Vec<u8>>,
    envelope_ids: HashMap<Vec<u8>, AlertId>,
    /// Receipts each origin received, by alert: the receivers.
    receipts: BTreeMap<AlertId, BTreeSet<usize>>,
    tracks: Vec<Track>,
    track_of: HashMap<AlertId, usize>,
    frames: BTreeMap<&'static str, FrameStats>,
    disconnects: Vec<DisconnectRecord>,
    /// Every [`Action::Verdict`], by reason, over the whole run (as the daemon's
    /// `tocsin_rejections` counts them).
    verdicts: BTreeMap<&'static str, u64>,
    counters: SimCounters,
    first_violation: Option<String>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.cfg.seed)
            .field("nodes", &self.nodes.len())
            .field("links", &self.links.len())
            .field("now", &self.now)
            .field("queued", &self.queue.len())
            .field("alerts", &self.tracks.len())
            .finish_non_exhaustive()
    }
}

fn ordered(a: usize, b: usize) -> (usize, usize) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn community(level: Option<TrustLevel>) -> bool {
    matches!(level, Some(TrustLevel::Member | TrustLevel::Partner))
}

impl Sim {
    /// Builds the federation and connects every link at t = 0. Run
    /// [`Sim::run_until_quiet`] to let the initial handshakes settle.
    pub fn new(cfg: SimConfig) -> Result<Sim, SimError> {
        cfg.validate()?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut nodes = Vec::with_capacity(cfg.nodes);
        let mut by_key = HashMap::with_capacity(cfg.nodes);
        for i in 0..cfg.nodes {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret);
            let key = SigningKey::from_bytes(&secret);
            let pk = PublicKey(key.verifying_key().to_bytes());
            if by_key.insert(pk, i).is_some() {
                return Err(SimError::Config(format!(
                    "seed = {}: two nodes drew the same key",
                    cfg.seed
                )));
            }
            nodes.push(SimNode {
                key,
                pk,
                epoch: rng.gen(),
                engine: None,
                life: 0,
                next_seq: 1,
                stored: BTreeMap::new(),
                pending: Vec::new(),
                commit_scheduled: false,
                cursors: BTreeMap::new(),
                held: BTreeMap::new(),
                revocations: BTreeMap::new(),
                receipts_out: BTreeMap::new(),
                org: None,
            });
        }
        let mut org_keys = Vec::with_capacity(cfg.orgs);
        for _ in 0..cfg.orgs {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret);
            org_keys.push(PublicKey(
                SigningKey::from_bytes(&secret).verifying_key().to_bytes(),
            ));
        }
        for n in &mut nodes {
            if cfg.orgs > 0 {
                n.org = Some(rng.gen_range(0..cfg.orgs));
            }
        }
        let mut sim = Sim {
            rng,
            keys: tocsin_proto::VerifyingKeys::default(),
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            by_key,
            links: Vec::new(),
            link_of: HashMap::new(),
            adj: vec![Vec::new(); cfg.nodes],
            trust: vec![BTreeMap::new(); cfg.nodes],
            org_keys,
            org_levels: vec![BTreeMap::new(); cfg.nodes],
            own_entries: BTreeSet::new(),
            groups: None,
            envelopes: HashMap::new(),
            envelope_ids: HashMap::new(),
            receipts: BTreeMap::new(),
            tracks: Vec::new(),
            track_of: HashMap::new(),
            frames: BTreeMap::new(),
            disconnects: Vec::new(),
            verdicts: BTreeMap::new(),
            counters: SimCounters::default(),
            first_violation: None,
            cfg,
        };
        sim.build_graph();
        sim.block_some();
        for i in 0..sim.nodes.len() {
            sim.nodes[i].engine = Some(sim.fresh_engine(i));
        }
        for li in 0..sim.links.len() {
            sim.connect_link(li);
        }
        Ok(sim)
    }

    fn add_link(&mut self, a: usize, b: usize) {
        let key = ordered(a, b);
        if a == b || self.link_of.contains_key(&key) {
            return;
        }
        let level = self.draw_level();
        let (to_b, to_a) = if self.cfg.orgs > 0 {
            (self.entry_level(a, b), self.entry_level(b, a))
        } else {
            (level, level)
        };
        let li = self.links.len();
        self.links.push(Link {
            a: key.0,
            b: key.1,
            level,
            up: false,
            conn: 0,
            last: [0, 0],
        });
        self.link_of.insert(key, li);
        self.adj[a].push((b, li));
        self.adj[b].push((a, li));
        self.trust[a].insert(b, to_b);
        self.trust[b].insert(a, to_a);
    }

    /// With agencies: the level `x` gives its new neighbour `y`, from an entry of `y`'s
    /// own (one in four) or else from `x`'s entry for `y`'s agency.
    fn entry_level(&mut self, x: usize, y: usize) -> TrustLevel {
        let own = self.rng.gen_range(0..4) == 0;
        let drawn = self.draw_level();
        match self.nodes[y].org {
            Some(org) if !own => *self.org_levels[x].entry(org).or_insert(drawn),
            _ => {
                self.own_entries.insert((x, y));
                drawn
            }
        }
    }

    fn draw_level(&mut self) -> TrustLevel {
        match self.cfg.levels {
            LevelMix::AllMember => TrustLevel::Member,
            LevelMix::AllPartner => TrustLevel::Partner,
            LevelMix::Mixed {
                public,
                member,
                partner,
            } => {
                let total = u64::from(public) + u64::from(member) + u64::from(partner);
                let x = self.rng.gen_range(0..total.max(1));
                if x < u64::from(public) {
                    TrustLevel::Public
                } else if x < u64::from(public) + u64::from(member) {
                    TrustLevel::Member
                } else {
                    TrustLevel::Partner
                }
            }
        }
    }

    /// A random spanning tree, then random links until each node has `degree` links.
    fn build_graph(&mut self) {
        let n = self.cfg.nodes;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut self.rng);
        for i in 1..n {
            let parent = order[self.rng.gen_range(0..i)];
            self.add_link(order[i], parent);
        }
        let degree = self.cfg.degree;
        order.shuffle(&mut self.rng);
        for &x in &order {
            while self.adj[x].len() < degree {
                let short: Vec<usize> = (0..n)
                    .filter(|&y| {
                        y != x
                            && self.adj[y].len() < degree
                            && !self.link_of.contains_key(&ordered(x, y))
                    })
                    .collect();
                let pool = if short.is_empty() {
                    (0..n)
                        .filter(|&y| y != x && !self.link_of.contains_key(&ordered(x, y)))
                        .collect()
                } else {
                    short
                };
                let Some(&y) = pool.choose(&mut self.rng) else {
                    break;
                };
                self.add_link(x, y);
            }
        }
        for list in &mut self.adj {
            list.sort_unstable();
        }
    }

    /// Some nodes get blocked by a few of their neighbours (never all of them).
    fn block_some(&mut self) {
        let mut all: Vec<usize> = (0..self.cfg.nodes).collect();
        all.shuffle(&mut self.rng);
        for &b in all.iter().take(self.cfg.blocked_origins) {
            let mut neighbours: Vec<usize> = self.adj[b].iter().map(|&(n, _)| n).collect();
            neighbours.shuffle(&mut self.rng);
            let org = self.nodes[b].org;
            // An agency does not block itself.
            neighbours.retain(|&n| org.is_none() || self.nodes[n].org != org);
            let k = MAX_BLOCKERS_PER_ORIGIN.min(neighbours.len().saturating_sub(1));
            for &n in neighbours.iter().take(k) {
                self.trust[n].insert(b, TrustLevel::Blocked);
                // Blocking an org entry blocks every node of it the blocker has met,
                // except those it has an entry of their own for (that entry wins).
                if org.is_some() {
                    let met: Vec<usize> = self.adj[n]
                        .iter()
                        .map(|&(m, _)| m)
                        .filter(|&m| {
                            self.nodes[m].org == org && !self.own_entries.contains(&(n, m))
                        })
                        .collect();
                    for m in met {
                        self.trust[n].insert(m, TrustLevel::Blocked);
                    }
                }
            }
        }
    }

    fn fresh_engine(&self, i: usize) -> Engine {
        let node = &self.nodes[i];
        let mut engine = Engine::new(node.pk, node.epoch, self.cfg.engine.clone());
        for (&peer, &level) in &self.trust[i] {
            engine.load_trust(self.nodes[peer].pk, level);
        }
        engine.set_org(self.org_key(i));
        if self.cfg.verify_ms.is_some() {
            engine.verify_off_thread();
        }
        engine
    }

    /// The org key of a node's agency.
    fn org_key(&self, node: usize) -> Option<PublicKey> {
        self.nodes[node].org.map(|o| self.org_keys[o])
    }

    fn schedule(&mut self, at: u64, what: Scheduled) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), what);
    }

    fn check_node(&self, node: usize) -> Result<(), SimError> {
        if node < self.nodes.len() {
            Ok(())
        } else {
            Err(SimError::NoNode(node))
        }
    }

    fn separated(&self, a: usize, b: usize) -> bool {
        self.groups.as_ref().is_some_and(|g| g[a] != g[b])
    }

    /// The engines' clock now (see [`ISSUED_AT_BASE_MS`]).
    fn engine_now(&self) -> u64 {
        ISSUED_AT_BASE_MS + self.now
    }

    fn deliver(&mut self, node: usize, event: Event) {
        let now = self.now;
        let clock = self.engine_now();
        let Some(engine) = self.nodes[node].engine.as_mut() else {
            return;
        };
        let actions = engine.handle(event, clock);
        if let Err(e) = engine.check_invariants(clock) {
            self.counters.invariant_violations += 1;
            self.first_violation
                .get_or_insert_with(|| format!("node {node} at {now} ms: {e}"));
        }
        self.apply(node, actions);
    }

    /// Opens a link's connection if both ends run, the partition allows it and both
    /// engines accept it.
    fn connect_link(&mut self, li: usize) {
        let (a, b) = (self.links[li].a, self.links[li].b);
        if self.links[li].up || self.separated(a, b) {
            return;
        }
        let (pa, pb) = (self.nodes[a].pk, self.nodes[b].pk);
        let allowed = match (&self.nodes[a].engine, &self.nodes[b].engine) {
            (Some(ea), Some(eb)) => {
                let clock = self.engine_now();
                ea.may_connect(&pb, clock) && eb.may_connect(&pa, clock)
            }
            _ => return,
        };
        // As the daemon's gate does: a node key revoked by its agency is refused.
        let revoked = self.nodes[a].revocations.contains_key(&pb)
            || self.nodes[b].revocations.contains_key(&pa);
        if !allowed || revoked {
            self.counters.refused_connections += 1;
            return;
        }
        let now = self.now;
        let link = &mut self.links[li];
        link.up = true;
        link.conn += 1;
        link.last = [now, now];
        // As the daemon does once a peer's certificate checks out.
        if let (Some(oa), Some(ob)) = (self.org_key(a), self.org_key(b)) {
            self.deliver(
                a,
                Event::PeerOrg {
                    node: pb,
                    org: Some(ob),
                },
            );
            self.deliver(
                b,
                Event::PeerOrg {
                    node: pa,
                    org: Some(oa),
                },
            );
        }
        self.deliver(a, Event::PeerConnected(pb));
        self.deliver(b, Event::PeerConnected(pa));
        // As the daemon does: each end sends the other every revocation it holds.
        for (from, to) in [(a, pb), (b, pa)] {
            let frames: Vec<Frame> = self.nodes[from]
                .revocations
                .values()
                .map(|(_, f)| f.clone())
                .collect();
            for frame in frames {
                self.send_frame(from, &to, &frame);
            }
            let receipts = self.nodes[from]
                .receipts_out
                .get(&to)
                .cloned()
                .unwrap_or_default();
            for frame in receipts {
                self.send_frame(from, &to, &frame);
            }
        }
    }

    /// A verified revocation reaches `node` (from a peer, or from its operator when
    /// `from` is None): held if new (or earlier), applied, and flooded to its other
    /// connected peers, as the daemon's network actor does.
    fn on_revocation(&mut self, node: usize, proof: &RevocationProof, from: Option<PublicKey>) {
        let r = proof.revocation();
        if self.nodes[node]
            .revocations
            .get(&r.node)
            .is_some_and(|(at, _)| *at <= r.revoked_at)
        {
            return;
        }
        let frame = Frame::revoke(proof);
        self.nodes[node]
            .revocations
            .insert(r.node, (r.revoked_at, frame.clone()));
        self.counters.revocations_held += 1;
        self.deliver(
            node,
            Event::Revoked {
                node: r.node,
                at: r.revoked_at,
            },
        );
        // The revoked node is cut by its peers.
        if let Some(&revoked) = self.by_key.get(&r.node) {
            if let Some(&li) = self.link_of.get(&ordered(node, revoked)) {
                self.disconnect_link(li);
            }
        }
        let peers: Vec<PublicKey> = self.adj[node]
            .iter()
            .filter(|&&(_, li)| self.links[li].up)
            .map(|&(n, _)| self.nodes[n].pk)
            .filter(|pk| Some(*pk) != from)
            .collect();
        for peer in peers {
            self.send_frame(node, &peer, &frame);
        }
    }

    /// The operator of `node` gives it a revocation (`revocation` and `cert` are the
    /// envelopes `tocsin org revoke` and `tocsin org certify` write).
    pub fn revoke(&mut self, node: usize, revocation: &[u8], cert: &[u8]) -> Result<(), SimError> {
        self.check_node(node)?;
        let proof = RevocationProof::verify(revocation, cert)
            .map_err(|e| SimError::Config(format!("revocation: {e}")))?;
        self.on_revocation(node, &proof, None);
        Ok(())
    }

    /// Closes a link's connection and tells both (running) ends.
    fn disconnect_link(&mut self, li: usize) {
        if !self.links[li].up {
            return;
        }
        self.links[li].up = false;
        self.links[li].conn += 1;
        let (a, b) = (self.links[li].a, self.links[li].b);
        let (pa, pb) = (self.nodes[a].pk, self.nodes[b].pk);
        self.deliver(a, Event::PeerDisconnected(pb));
        self.deliver(b, Event::PeerDisconnected(pa));
    }

    fn apply(&mut self, node: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { peer, frame } => self.send_frame(node, &peer, &frame),
                Action::SendStored { peer, alerts } => {
                    for (id, hops) in alerts {
                        let Some(envelope) = self.envelopes.get(&id).cloned() else {
                            self.counters.missing_envelopes += 1;
                            continue;
                        };
                        self.send_frame(node, &peer, &Frame::Alert { hops, envelope });
                    }
                }
                Action::Store { alert, from, hops } => self.store(node, &alert, from, hops),
                Action::Verify(job) => {
                    let (min, max) = self.cfg.verify_ms.unwrap_or((0, 0));
                    let at = self.now + self.rng.gen_range(min..=max.max(min));
                    let checked = Box::new(job.check(&mut self.keys));
                    let life = self.nodes[node].life;
                    self.schedule(
                        at,
                        Scheduled::Verified {
                            node,
                            life,
                            checked,
                        },
                    );
                }
                Action::Verdict { reason, .. } => {
                    *self.verdicts.entry(reason.as_str()).or_default() += 1;
                }
                Action::SetTimer { at, timer } => {
                    let life = self.nodes[node].life;
                    let at = at.saturating_sub(ISSUED_AT_BASE_MS);
                    self.schedule(at, Scheduled::Timer { node, life, timer });
                }
                Action::Disconnect {
                    peer,
                    until,
                    reason,
                } => {
                    let Some(&p) = self.by_key.get(&peer) else {
                        continue;
                    };
                    self.disconnects.push(DisconnectRecord {
                        at: self.now,
                        node,
                        peer: p,
                        reason,
                        until: until.map(|u| u.saturating_sub(ISSUED_AT_BASE_MS)),
                    });
                    if let Some(&li) = self.link_of.get(&ordered(node, p)) {
                        self.disconnect_link(li);
                    }
                }
                Action::SaveCursor { peer, epoch, seq } => {
                    self.nodes[node].cursors.insert(peer, (epoch, seq));
                }
                // Links deliver every frame at once here; a paused reader would only
                // delay what the limits already drop.
                Action::PauseReading { .. } | Action::CursorAdopted { .. } => {}
                Action::Revocation {
                    peer,
                    proof,
                    digest,
                } => {
                    // Every verified revocation is kept here, as the daemon keeps one
                    // from a node's own org.
                    self.on_revocation(node, &proof, Some(peer));
                    if let Some(engine) = self.nodes[node].engine.as_mut() {
                        engine.revocation_kept(digest);
                    }
                }
                // Sightings are stored by the daemon; the simulator keeps no reports.
                Action::Sighting { .. } => {}
                Action::Receipt { peer, receipt } => {
                    if let Some(&receiver) = self.by_key.get(&peer) {
                        let alert = receipt.body().alert;
                        if !self.receipts.entry(alert).or_default().insert(receiver) {
                            self.counters.duplicate_receipts += 1;
                        }
                    }
                }
            }
        }
    }

    fn store(&mut self, node: usize, alert: &SignedAlert, from: PublicKey, hops: u8) {
        let id = alert.id();
        if !self.envelopes.contains_key(&id) {
            let envelope = alert.to_envelope();
            self.envelope_ids.insert(envelope.clone(), id);
            self.envelopes.insert(id, envelope);
        }
        let now = self.now;
        let from_node = self.by_key.get(&from).copied();
        let n = &mut self.nodes[node];
        let seq = n.next_seq;
        n.next_seq += 1;
        match n.held.entry(id) {
            std::collections::btree_map::Entry::Occupied(_) => {
                self.counters.duplicate_stores += 1;
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Delivery {
                    at: now,
                    hops,
                    from: from_node,
                });
            }
        }
        n.pending
            .push((seq, KnownAlert::of(alert, hops, Some(from))));
        // As the daemon does: a receipt for an AMBER or RED alert goes to its origin.
        let body = alert.body();
        if matches!(body.tlp, Tlp::Amber | Tlp::AmberStrict | Tlp::Red) && body.origin != n.pk {
            let receipt = tocsin_proto::identity::Receipt {
                v: tocsin_proto::identity::IDENTITY_VERSION,
                alert: id,
                origin: body.origin,
                receiver: n.pk,
                received_at: ISSUED_AT_BASE_MS + now,
                acked_at: None,
                acked_by: None,
            };
            if let Ok(signed) = tocsin_proto::identity::Signed::sign(receipt, &n.key) {
                let frame = Frame::Receipt {
                    receipt: serde_bytes::ByteBuf::from(signed.to_bytes()),
                };
                n.receipts_out
                    .entry(body.origin)
                    .or_default()
                    .push(frame.clone());
                let origin = body.origin;
                self.send_frame(node, &origin, &frame);
            }
        }
        let n = &mut self.nodes[node];
        if !n.commit_scheduled {
            n.commit_scheduled = true;
            let life = n.life;
            self.schedule(now + COMMIT_DELAY_MS, Scheduled::Commit { node, life });
        }
    }

    fn send_frame(&mut self, from: usize, peer: &PublicKey, frame: &Frame) {
        let name = frame.name();
        let bytes = match frame.encode() {
            Ok(b) => b,
            Err(_) => {
                self.counters.encode_errors += 1;
                return;
            }
        };
        let wire = bytes.len() as u64 + LEN_PREFIX_BYTES;
        let stats = self.frames.entry(name).or_default();
        stats.sent += 1;
        stats.sent_bytes += wire;
        let mut body_of = None;
        match frame {
            Frame::Alert { envelope, .. } => {
                let id = match self.envelope_ids.get(envelope.as_slice()) {
                    Some(id) => Some(*id),
                    None => SignedAlert::decode(envelope).ok().map(|a| a.id()),
                };
                if let Some(t) = id.and_then(|id| self.track_of.get(&id)) {
                    self.tracks[*t].body_bytes += wire;
                }
                body_of = id;
            }
            Frame::Announce { ids, .. } | Frame::Want { ids, .. } => {
                let n = ids.len() as u64;
                for (k, id) in ids.iter().enumerate() {
                    let share = wire / n.max(1) + if k == 0 { wire % n.max(1) } else { 0 };
                    if let Some(&t) = self.track_of.get(id) {
                        self.tracks[t].announce_bytes += share;
                    }
                }
            }
            _ => {}
        }
        let to = self.by_key.get(peer).copied();
        let li = to.and_then(|to| self.link_of.get(&ordered(from, to)).copied());
        let (Some(to), Some(li)) = (to, li) else {
            self.counters.unroutable_sends += 1;
            return;
        };
        if !self.links[li].up {
            self.frames.entry(name).or_default().closed += 1;
            return;
        }
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss) {
            self.frames.entry(name).or_default().lost += 1;
            return;
        }
        let (min, max) = self.cfg.latency_ms;
        let latency = self.rng.gen_range(min..=max);
        let link = &mut self.links[li];
        let dir = usize::from(from != link.a);
        let at = (self.now + latency).max(link.last[dir]);
        link.last[dir] = at;
        let conn = link.conn;
        self.schedule(
            at,
            Scheduled::Frame {
                link: li,
                conn,
                from,
                to,
                name,
                body_of,
                bytes,
            },
        );
    }

    /// Processes the next event. False when the queue is empty.
    fn step(&mut self) -> bool {
        let Some(((at, _), what)) = self.queue.pop_first() else {
            return false;
        };
        self.now = self.now.max(at);
        self.counters.events += 1;
        match what {
            Scheduled::Frame {
                link,
                conn,
                from,
                to,
                name,
                body_of,
                bytes,
            } => {
                let l = &self.links[link];
                if !l.up || l.conn != conn || self.nodes[to].engine.is_none() {
                    self.frames.entry(name).or_default().closed += 1;
                    return true;
                }
                self.frames.entry(name).or_default().delivered += 1;
                if let Some(t) = body_of.and_then(|id| self.track_of.get(&id)) {
                    self.tracks[*t].body_frames_received += 1;
                }
                let peer = self.nodes[from].pk;
                self.deliver(to, Event::Frame { peer, bytes });
            }
            Scheduled::Timer { node, life, timer } => {
                if self.nodes[node].life == life {
                    self.deliver(node, Event::Timer(timer));
                }
            }
            Scheduled::Verified {
                node,
                life,
                checked,
            } => {
                if self.nodes[node].life == life {
                    self.deliver(node, Event::Verified(checked));
                }
            }
            Scheduled::Commit { node, life } => {
                let n = &mut self.nodes[node];
                if n.life != life {
                    return true;
                }
                n.commit_scheduled = false;
                let mut entries = Vec::with_capacity(n.pending.len());
                for (seq, meta) in n.pending.drain(..) {
                    entries.push((seq, meta.id()));
                    n.stored.insert(seq, meta);
                }
                self.deliver(node, Event::Committed(entries));
            }
        }
        true
    }

    /// Processes events until the queue is empty or the next event is more than
    /// `max_ms` after the current virtual time (then the clock stops at that limit).
    pub fn run_until_quiet(&mut self, max_ms: u64) -> RunOutcome {
        let deadline = self.now.saturating_add(max_ms);
        loop {
            // Periodic catch-up rounds never stop; a queue holding nothing else is quiet.
            let only_periodic = self.queue.values().all(|q| q.is_periodic());
            match self.queue.first_key_value() {
                None => {
                    return RunOutcome {
                        quiet: true,
                        now_ms: self.now,
                    }
                }
                _ if only_periodic => {
                    return RunOutcome {
                        quiet: true,
                        now_ms: self.now,
                    }
                }
                Some((&(at, _), _)) if at > deadline => {
                    self.now = deadline;
                    return RunOutcome {
                        quiet: false,
                        now_ms: self.now,
                    };
                }
                Some(_) => {
                    self.step();
                }
            }
        }
    }

    /// Processes the events of the next `ms` milliseconds and moves the clock to the
    /// end of that span.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now.saturating_add(ms);
        while self
            .queue
            .first_key_value()
            .is_some_and(|(&(at, _), _)| at <= end)
        {
            self.step();
        }
        self.now = end;
    }

    /// Publishes a new alert from `node` with this TLP, naming `recipients` (node
    /// indices), and hands it to the node's engine as [`Event::Local`]. The alert is
    /// committed at once, as the daemon does before gossiping a local alert.
    pub fn publish(
        &mut self,
        node: usize,
        tlp: Tlp,
        recipients: &[usize],
    ) -> Result<AlertId, SimError> {
        self.publish_to(node, tlp, recipients, &[])
    }

    /// [`Sim::publish`], with agencies (indices below [`SimConfig::orgs`]) named as RED
    /// recipients too, by their org keys: every node of a named agency is named.
    pub fn publish_to(
        &mut self,
        node: usize,
        tlp: Tlp,
        recipients: &[usize],
        orgs: &[usize],
    ) -> Result<AlertId, SimError> {
        self.check_node(node)?;
        for &r in recipients {
            self.check_node(r)?;
        }
        if let Some(&o) = orgs.iter().find(|&&o| o >= self.org_keys.len()) {
            return Err(SimError::Config(format!(
                "agency {o}: there are {}",
                self.org_keys.len()
            )));
        }
        if self.nodes[node].engine.is_none() {
            return Err(SimError::Stopped(node));
        }
        let number = self.tracks.len();
        let body = AlertBody {
            v: FORMAT_VERSION,
            origin: self.nodes[node].pk,
            issued_at: ISSUED_AT_BASE_MS + self.now,
            expires_at: None,
            kind: Kind::New,
            replaces: None,
            severity: Severity::High,
            tlp,
            recipients: recipients
                .iter()
                .map(|&r| self.nodes[r].pk)
                .chain(orgs.iter().map(|&o| self.org_keys[o]))
                .collect(),
            title: format!("Simulated alert {number} from node {node}"),
            text: ALERT_TEXT.to_string(),
            indicators: vec![
                Indicator::new(IndicatorType::Domain, "clearing-house-login.example")?,
                Indicator::new(IndicatorType::Ipv4, "192.0.2.44")?,
            ],
            tags: vec!["sim".into(), "phishing".into()],
            references: vec![],
        };
        let alert = SignedAlert::sign(body, &self.nodes[node].key)?;
        let id = alert.id();
        let envelope = alert.to_envelope();
        self.envelope_ids.insert(envelope.clone(), id);
        self.envelopes.insert(id, envelope);
        // Named: the nodes named, and every node of an agency named.
        let recipient_set: BTreeSet<usize> = recipients
            .iter()
            .copied()
            .chain(
                (0..self.nodes.len())
                    .filter(|&n| self.nodes[n].org.is_some_and(|o| orgs.contains(&o))),
            )
            .collect();
        let permitted = self.permitted_from(node, tlp, &recipient_set);
        self.track_of.insert(id, self.tracks.len());
        self.tracks.push(Track {
            id,
            origin: node,
            tlp,
            published_at: self.now,
            permitted,
            body_frames_received: 0,
            body_bytes: 0,
            announce_bytes: 0,
        });
        let now = self.now;
        let n = &mut self.nodes[node];
        let seq = n.next_seq;
        n.next_seq += 1;
        n.stored.insert(seq, KnownAlert::of(&alert, 0, None));
        n.held.insert(
            id,
            Delivery {
                at: now,
                hops: 0,
                from: None,
            },
        );
        let alert = alert.verify()?;
        self.deliver(node, Event::Local { alert });
        self.deliver(node, Event::Committed(vec![(seq, id)]));
        Ok(id)
    }

    /// The trust level `x` has for `y` (None: not in x's table).
    fn level(&self, x: usize, y: usize) -> Option<TrustLevel> {
        self.trust[x].get(&y).copied()
    }

    fn connectable(&self, x: usize, y: usize) -> bool {
        TrustLevel::may_connect(self.level(x, y)) && TrustLevel::may_connect(self.level(y, x))
    }

    /// The nodes permitted to hold an alert of `origin` with this TLP and recipients,
    /// with their hop distance over permitted links (origin at 0).
    ///
    /// A breadth-first search over the trust graph, written from the design brief
    /// rather than from `tocsin_proto::policy`, so that it checks the engine and the
    /// policy instead of repeating them:
    /// - origin → n: n trusts the origin enough to connect and does not block it, and
    ///   the origin's level for n may receive the TLP: CLEAR any level, GREEN
    ///   member/partner, AMBER and AMBER+STRICT partner, RED partner and named.
    /// - relay h → n (h not the origin): only CLEAR (n at any connectable level in h's
    ///   table) and GREEN (n at member/partner in h's table); n accepts relays from h
    ///   (h is member/partner in n's table); n does not block the origin; n is at most
    ///   [`MAX_HOPS`] hops from the origin.
    fn permitted_from(
        &self,
        origin: usize,
        tlp: Tlp,
        recipients: &BTreeSet<usize>,
    ) -> BTreeMap<usize, u8> {
        let mut dist = BTreeMap::from([(origin, 0u8)]);
        let mut queue = VecDeque::from([origin]);
        while let Some(h) = queue.pop_front() {
            let d = dist.get(&h).copied().unwrap_or(0);
            if h != origin && (d >= MAX_HOPS || !matches!(tlp, Tlp::Clear | Tlp::Green)) {
                continue;
            }
            for &(n, _) in &self.adj[h] {
                if dist.contains_key(&n)
                    || !self.connectable(h, n)
                    || self.level(n, origin) == Some(TrustLevel::Blocked)
                {
                    continue;
                }
                let to_n = self.level(h, n);
                let ok = if h == origin {
                    match tlp {
                        Tlp::Clear => true,
                        Tlp::Green => community(to_n),
                        Tlp::Amber | Tlp::AmberStrict => to_n == Some(TrustLevel::Partner),
                        Tlp::Red => to_n == Some(TrustLevel::Partner) && recipients.contains(&n),
                    }
                } else {
                    community(self.level(n, h))
                        && match tlp {
                            Tlp::Clear => true,
                            Tlp::Green => community(to_n),
                            Tlp::Amber | Tlp::AmberStrict | Tlp::Red => false,
                        }
                };
                if ok {
                    dist.insert(n, d + 1);
                    queue.push_back(n);
                }
            }
        }
        dist
    }

    /// A published alert's TLP label.
    pub fn tlp(&self, id: &AlertId) -> Option<Tlp> {
        Some(self.tracks[*self.track_of.get(id)?].tlp)
    }

    /// Nodes (origin excluded) permitted to hold a published alert.
    pub fn permitted(&self, id: &AlertId) -> Option<BTreeSet<usize>> {
        let t = &self.tracks[*self.track_of.get(id)?];
        Some(
            t.permitted
                .keys()
                .copied()
                .filter(|&n| n != t.origin)
                .collect(),
        )
    }

    /// A node's hop distance from the alert's origin over permitted links, if it is
    /// permitted to hold the alert (0 for the origin).
    pub fn permitted_distance(&self, id: &AlertId, node: usize) -> Option<u8> {
        let t = &self.tracks[*self.track_of.get(id)?];
        t.permitted.get(&node).copied()
    }

    /// Partitions the federation: links between nodes of different groups are closed
    /// and stay closed until [`Sim::heal`]. Nodes in no group form one more group.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<(), SimError> {
        let mut group_of = vec![groups.len(); self.nodes.len()];
        for (g, members) in groups.iter().enumerate() {
            for &m in members {
                self.check_node(m)?;
                group_of[m] = g;
            }
        }
        self.groups = Some(group_of);
        for li in 0..self.links.len() {
            if self.separated(self.links[li].a, self.links[li].b) {
                self.disconnect_link(li);
            }
        }
        Ok(())
    }

    /// Ends a partition and reconnects every closed link whose ends run and accept it
    /// (so catch-up runs on each).
    pub fn heal(&mut self) {
        self.groups = None;
        for li in 0..self.links.len() {
            self.connect_link(li);
        }
    }

    /// Stops a node: its connections close, its engine is dropped, and alerts it had
    /// not committed yet are lost.
    pub fn stop(&mut self, node: usize) -> Result<(), SimError> {
        self.check_node(node)?;
        if self.nodes[node].engine.is_none() {
            return Err(SimError::Stopped(node));
        }
        let links: Vec<usize> = self.adj[node].iter().map(|&(_, li)| li).collect();
        for li in links {
            self.disconnect_link(li);
        }
        let n = &mut self.nodes[node];
        n.engine = None;
        n.life += 1;
        n.commit_scheduled = false;
        for (_, meta) in n.pending.drain(..) {
            n.held.remove(&meta.id());
        }
        n.next_seq = n.stored.keys().next_back().map_or(1, |s| s + 1);
        Ok(())
    }

    /// Restarts a stopped node with a fresh engine loaded from its committed alerts
    /// and saved cursors (same log epoch), and reconnects its links.
    pub fn restart(&mut self, node: usize) -> Result<(), SimError> {
        self.check_node(node)?;
        if self.nodes[node].engine.is_some() {
            return Err(SimError::Running(node));
        }
        let mut engine = self.fresh_engine(node);
        let n = &self.nodes[node];
        for (&seq, meta) in &n.stored {
            engine.load_alert(seq, meta.clone());
        }
        for (&peer, &(epoch, seq)) in &n.cursors {
            engine.load_cursor(peer, epoch, seq);
        }
        for (&revoked, &(at, _)) in &n.revocations {
            engine.handle(Event::Revoked { node: revoked, at }, self.engine_now());
        }
        self.nodes[node].engine = Some(engine);
        let links: Vec<usize> = self.adj[node].iter().map(|&(_, li)| li).collect();
        for li in links {
            self.connect_link(li);
        }
        Ok(())
    }

    /// Current virtual time, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A node's public key.
    pub fn key(&self, node: usize) -> Option<PublicKey> {
        self.nodes.get(node).map(|n| n.pk)
    }

    /// The node with this key.
    pub fn node_of(&self, key: &PublicKey) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// A node's neighbours and the level it gives each (its trust table), by neighbour
    /// index.
    pub fn neighbours(&self, node: usize) -> Vec<(usize, TrustLevel)> {
        self.adj
            .get(node)
            .map(|list| {
                list.iter()
                    .map(|&(n, li)| (n, self.level(node, n).unwrap_or(self.links[li].level)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The agency of a node (with [`SimConfig::orgs`]).
    pub fn org_of(&self, node: usize) -> Option<usize> {
        self.nodes.get(node).and_then(|n| n.org)
    }

    /// Whether `node` blocks `other` in its trust table.
    pub fn blocks(&self, node: usize, other: usize) -> bool {
        self.trust
            .get(node)
            .is_some_and(|t| t.get(&other) == Some(&TrustLevel::Blocked))
    }

    /// A running node's engine.
    pub fn engine(&self, node: usize) -> Option<&Engine> {
        self.nodes.get(node).and_then(|n| n.engine.as_ref())
    }

    /// Whether the node runs.
    pub fn is_running(&self, node: usize) -> bool {
        self.engine(node).is_some()
    }

    /// Whether the node holds (stored) the alert.
    pub fn holds(&self, node: usize, id: &AlertId) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.held.contains_key(id))
    }

    /// When and how the node got the alert, if it holds it.
    pub fn delivery(&self, node: usize, id: &AlertId) -> Option<Delivery> {
        self.nodes.get(node).and_then(|n| n.held.get(id).copied())
    }

    /// The receivers whose receipt for `id` reached its origin.
    pub fn receipts(&self, id: &AlertId) -> BTreeSet<usize> {
        self.receipts.get(id).cloned().unwrap_or_default()
    }

    /// Every alert the node holds.
    pub fn held(&self, node: usize) -> BTreeSet<AlertId> {
        self.nodes
            .get(node)
            .map(|n| n.held.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The catch-up cursors the node saved, by peer: (epoch, seq).
    pub fn cursors(&self, node: usize) -> BTreeMap<PublicKey, (u64, u64)> {
        self.nodes
            .get(node)
            .map(|n| n.cursors.clone())
            .unwrap_or_default()
    }

    /// Published alerts, in publishing order.
    pub fn alerts(&self) -> Vec<AlertId> {
        self.tracks.iter().map(|t| t.id).collect()
    }

    /// What the run measured so far.
    pub fn report(&self) -> SimReport {
        let min_latency = self.cfg.latency_ms.0;
        let mut alerts = Vec::with_capacity(self.tracks.len());
        let mut totals = Totals {
            alerts: self.tracks.len(),
            ..Totals::default()
        };
        let mut receivers_sum = 0u64;
        let mut ratios = Vec::new();
        for t in &self.tracks {
            let mut receivers = 0u64;
            let mut missing = Vec::new();
            let mut unauthorised = Vec::new();
            let mut last: Option<u64> = None;
            let mut bound: Option<u64> = None;
            for (i, node) in self.nodes.iter().enumerate() {
                let held = node.held.get(&t.id);
                if held.is_some() {
                    receivers += 1;
                }
                if i == t.origin {
                    continue;
                }
                match (held, t.permitted.get(&i)) {
                    (Some(d), Some(&hops)) => {
                        let latency = d.at.saturating_sub(t.published_at);
                        last = Some(last.map_or(latency, |l| l.max(latency)));
                        let b = u64::from(hops) * min_latency;
                        bound = Some(bound.map_or(b, |x| x.max(b)));
                    }
                    (None, Some(_)) => missing.push(i),
                    (Some(_), None) => unauthorised.push(i),
                    (None, None) => {}
                }
            }
            let permitted = t.permitted.len().saturating_sub(1);
            let delivered = permitted.saturating_sub(missing.len());
            let rmr = (receivers > 1)
                .then(|| t.body_frames_received as f64 / (receivers - 1) as f64 - 1.0);
            let latency_ratio = match (last, bound) {
                (Some(l), Some(b)) if b > 0 => Some(l as f64 / b as f64),
                _ => None,
            };
            ratios.extend(latency_ratio);
            receivers_sum += receivers.saturating_sub(1);
            totals.permitted += permitted;
            totals.delivered += delivered;
            totals.unauthorised += unauthorised.len();
            totals.body_frames_received += t.body_frames_received;
            alerts.push(AlertReport {
                id: t.id,
                origin: t.origin,
                tlp: t.tlp,
                published_at: t.published_at,
                permitted,
                delivered,
                delivery_ratio: if permitted == 0 {
                    1.0
                } else {
                    delivered as f64 / permitted as f64
                },
                missing,
                unauthorised,
                body_frames_received: t.body_frames_received,
                body_bytes: t.body_bytes,
                announce_bytes: t.announce_bytes,
                rmr,
                last_delivery_ms: last,
                bound_ms: bound,
                latency_ratio,
            });
        }
        totals.delivery_ratio = if totals.permitted == 0 {
            1.0
        } else {
            totals.delivered as f64 / totals.permitted as f64
        };
        totals.rmr = (receivers_sum > 0)
            .then(|| totals.body_frames_received as f64 / receivers_sum as f64 - 1.0);
        let bytes = |names: &[&str]| -> u64 {
            names
                .iter()
                .filter_map(|n| self.frames.get(n))
                .map(|s| s.sent_bytes)
                .sum()
        };
        totals.body_bytes = bytes(&["alert"]);
        totals.sync_bytes = bytes(&["hello", "sync_request", "sync_page", "want_page"]);
        // Everything else is tree and repair traffic, whatever frames it is made of.
        let all: u64 = self.frames.values().map(|s| s.sent_bytes).sum();
        totals.announce_overhead_bytes = all - totals.body_bytes - totals.sync_bytes;
        let per = (totals.alerts * self.nodes.len()) as f64;
        totals.announce_bytes_per_alert_per_node = if per > 0.0 {
            totals.announce_overhead_bytes as f64 / per
        } else {
            0.0
        };
        totals.latency_ratio_max = ratios.iter().copied().reduce(f64::max);
        totals.latency_ratio_mean =
            (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64);

        let mut engine = EngineTotals {
            rejections: self.verdicts.clone(),
            ..EngineTotals::default()
        };
        for e in self.nodes.iter().filter_map(|n| n.engine.as_ref()) {
            for p in e.peer_reports() {
                engine.rate_limited += p.stats.rate_limited;
                engine.duplicates += p.stats.duplicates;
            }
        }
        SimReport {
            seed: self.cfg.seed,
            nodes: self.nodes.len(),
            links: self.links.len(),
            now_ms: self.now,
            totals,
            alerts,
            frames: self.frames.clone(),
            disconnects: self.disconnects.clone(),
            engine,
            counters: self.counters.clone(),
            first_violation: self.first_violation.clone(),
        }
    }
}
