//! The network actor: the one owner of the libp2p `Swarm` and the gossip [`Engine`].
//!
//! Everything else talks to it through a cloneable [`NetHandle`] that sends a
//! [`Command`] with a oneshot reply. A closed command channel means shut down.
//!
//! Gossip runs on our own libp2p behaviour ([`gossip`]): per connection one outbound
//! stream (`/tocsin/gossip/4`) fed from a bounded queue, and one inbound stream whose
//! length prefixes are checked against `MAX_FRAME_BYTES` before a frame is read. A slow
//! or failing peer only ever fills its own queue; frames beyond it are dropped and
//! counted, never waited for.

mod cold;
mod commands;
pub mod fair;
pub mod gate;
pub mod gossip;
mod handle;
mod loads;
mod metrics;
mod pending;
mod returned;
mod state;
pub mod trust;
mod verify;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{noise, ping, tcp, yamux, Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;
use rand::Rng;
use tocsin_proto::api::TrustChanged;
use tocsin_proto::api::{OriginRevoked, RevocationView};
use tocsin_proto::identity::{NodeCert, RevocationProof, Signed};
use tocsin_proto::{
    AlertId, Frame, PublicKey, SignedAlert, SigningKey, Tlp, TrustLevel, VerifiedAlert,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

pub use cold::StoredAlerts;
pub use handle::{Command, IssueError, Issued, NetHandle, NetStatus, PeerInfo, COMMAND_CHANNEL};
pub use metrics::Metrics;
pub use trust::{ChangedBy, TrustChange, TrustError, TrustTable};

use crate::config::Config;
use crate::engine::{Action, Engine, Event, Timer};
use crate::keys::{key_of_peer, peer_id, peer_id_of_checked};
use crate::store::{Insert, Receipt, Store, StoreError, TrustCommit, TrustEntry};
use state::{StateJob, StateWriter};
use trust::TrustReply;

/// Frames queued for one peer's writer. A peer that falls this far behind loses frames
/// (counted) rather than slowing the node; catch-up repairs what it missed.
pub const PEER_WRITE_QUEUE: usize = 4096;
/// Messages queued from the actor's helper tasks (store commits, signing, the state
/// writer) back into its loop.
pub const INBOUND_QUEUE: usize = 4096;
/// Our own returned updates remembered as withdrawn this run, at most (then forgotten:
/// a repeat only issues a second cancel).
const MAX_WITHDRAWN: usize = 1024;

/// Frames of stored alerts read for a peer handed to the actor at once
/// ([`Inbound::LoadedAsked`]).
pub const LOAD_CHUNK: usize = 64;
/// How long after a failed re-read of the store's log (after missed commit notices) it
/// is tried again.
const LOG_RESYNC_RETRY_MS: u64 = 5_000;
/// At most this many refused remote addresses are remembered for logging.
const MAX_REFUSED_LOGGED: usize = 1024;
/// Lets a log line that may repeat for every alert through at most once a second,
/// counting the others.
struct Throttle {
    last_second: std::sync::atomic::AtomicU64,
    skipped: std::sync::atomic::AtomicU64,
}

impl Throttle {
    const fn new() -> Self {
        Throttle {
            last_second: std::sync::atomic::AtomicU64::new(u64::MAX),
            skipped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// At `now_ms`: `Some(how many were held back since the last line)` if a line may
    /// be written, else `None` (and one more is counted).
    fn allow(&self, now_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let second = now_ms / 1000;
        let last = self.last_second.load(Relaxed);
        if last != second
            && self
                .last_second
                .compare_exchange(last, second, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Relaxed));
        }
        self.skipped.fetch_add(1, Relaxed);
        None
    }
}

/// The per-alert "store commit failed" line.
static COMMIT_FAILED_LOG: Throttle = Throttle::new();

/// How long start-up waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Most revocations a node holds. Agencies revoke node keys rarely; each is sent to every
/// peer when it connects, so the set stays far below a peer's write queue. Beyond it, new
/// revocations are refused with a warning.
pub const MAX_REVOCATIONS: usize = 1024;
/// Most node keys whose agency (the org that certified them) a node remembers, and most
/// of one org: certificates presented by nodes that were admitted, or refused because
/// their org is blocked. Beyond either, a new node's agency is not remembered. The
/// same bounds hold the certificates of nodes admitted through their org (kept until
/// they expire): past them, a node that shows a new certificate is refused, so that an
/// org cannot make a node keep state for every key it certifies.
pub const MAX_AGENCY_NODES: usize = 4096;
/// See [`MAX_AGENCY_NODES`].
pub const MAX_AGENCY_NODES_PER_ORG: usize = 256;

/// Most revocations held from one org, so that one org cannot fill the table.
pub const MAX_REVOCATIONS_PER_ORG: usize = 256;

/// How many times a peer's revocation may move a held revocation's time earlier, per node
/// key and run of this node: an org that signs ever earlier ones cannot make every node
/// write and flood each of them.
pub const MAX_REVOCATION_CHANGES: u32 = 4;
/// How long an idle connection is kept open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Fails if another process already listens on this TCP address. libp2p listens with
/// `SO_REUSEPORT`, so without this check two daemons on one port would both start and
/// split the incoming connections between them.
fn refuse_if_taken(ma: &Multiaddr) -> anyhow::Result<()> {
    use libp2p::multiaddr::Protocol;
    let mut parts = ma.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let Some(Protocol::Tcp(port)) = parts.next() else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    // A plain bind (no SO_REUSEPORT) conflicts with any listener on the port.
    match std::net::TcpListener::bind((ip, port)) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {ma} (net.listen): the address is already in use, \
             probably by another tocsind; stop it or choose another port"
        ),
        Err(e) => anyhow::bail!("cannot listen on {ma} (net.listen): {e}"),
    }
}

/// The lane of an alert frame to a peer: its origin's, so that each origin's alerts
/// queue behind their own and not behind another origin's flood.
fn frame_lane(envelope: &[u8]) -> u64 {
    tocsin_proto::origin_of(envelope).map_or(fair::CONTROL_LANE, |o| fair::origin_lane(&o))
}

/// When to dial again after `attempt` failed attempts (and counts this one): the
/// configured initial delay doubled per attempt up to the maximum, with ±25% jitter so
/// that a federation restarting together does not redial in step.
fn backoff(cfg: &Config, attempt: &mut u32) -> u64 {
    let (initial, max) = (cfg.net.dial_backoff_initial_ms, cfg.net.dial_backoff_max_ms);
    let base = initial.saturating_mul(1u64 << (*attempt).min(20)).min(max);
    *attempt = attempt.saturating_add(1);
    let jitter = rand::thread_rng().gen_range(0.75..1.25);
    crate::now_ms() + (base as f64 * jitter) as u64
}

/// How far back a node sends its receipts again when an origin reconnects.
pub const RECEIPT_RESEND_MS: u64 = 24 * 3600 * 1000;
/// Receipts remembered as stored, to drop replays without a write (cleared when full).
const MAX_RECEIPTS_SEEN: usize = 100_000;
/// Most receipts sent again to one origin when it reconnects (the newest).
pub const MAX_RECEIPTS_RESENT: usize = 256;
/// Most of this node's own sightings sent again to one origin when it connects (the
/// newest, within [`RECEIPT_RESEND_MS`]): well within the origin's sighting budget for
/// this node.
pub const MAX_SIGHTINGS_RESENT: usize = 32;

/// A receipt this node is about to sign.
#[derive(Debug, Clone)]
pub struct ReceiptOut {
    pub alert: AlertId,
    pub origin: PublicKey,
    pub received_at: u64,
    /// (when, by whom) for an acknowledgement.
    pub acked: Option<(u64, String)>,
}

/// Signs a receipt, keeps it in the outbox (durable) and hands it to the actor for the
/// origin (sent if it is connected; otherwise when it reconnects). On the blocking pool.
fn send_receipt(
    store: &Store,
    key: &SigningKey,
    out: ReceiptOut,
    inbound: &mpsc::Sender<Inbound>,
) -> Result<tocsin_proto::identity::Receipt, String> {
    use tocsin_proto::identity::{Receipt as ReceiptBody, Signed, IDENTITY_VERSION};
    let (acked_at, acked_by) = match out.acked {
        Some((at, by)) => (Some(at), Some(by)),
        None => (None, None),
    };
    let body = ReceiptBody {
        v: IDENTITY_VERSION,
        alert: out.alert,
        origin: out.origin,
        receiver: crate::keys::public_key(key),
        received_at: out.received_at,
        acked_at,
        acked_by,
    };
    let signed = Signed::sign(body, key).map_err(|e| e.to_string())?;
    store
        .put_receipt_out(&signed, crate::now_ms())
        .map_err(|e| format!("the receipt was not stored: {e}"))?;
    let frame = Frame::Receipt {
        receipt: serde_bytes::ByteBuf::from(signed.to_bytes()),
    };
    if let (Some(pid), Ok(bytes)) = (peer_id_of_checked(&out.origin), frame.encode()) {
        let _ = inbound.blocking_send(Inbound::Loaded {
            peer: pid,
            frames: vec![(fair::CONTROL_LANE, bytes)],
        });
    }
    Ok(signed.body().clone())
}

/// Whether `org` is an org entry of `trust` at `blocked`.
fn org_is_blocked(trust: &TrustTable, org: &PublicKey) -> bool {
    trust
        .get(org)
        .is_some_and(|e| e.org && e.level == TrustLevel::Blocked)
}

/// A revocation as the API shows it.
fn revocation_view(p: &RevocationProof) -> RevocationView {
    let r = p.revocation();
    RevocationView {
        node: r.node,
        org: r.org,
        agency: p.cert().agency.clone(),
        revoked_at: r.revoked_at,
        reason: r.reason.clone(),
    }
}

/// A revocation as alert views show it (`issued_after` filled in per alert).
fn origin_revoked(p: &RevocationProof) -> OriginRevoked {
    let r = p.revocation();
    OriginRevoked {
        revoked_at: r.revoked_at,
        reason: r.reason.clone(),
        issued_after: false,
    }
}

/// The libp2p behaviours of a node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses every connection from a key that is not trusted (unknown, blocked, banned
    /// or partitioned) right after the Noise handshake, before any protocol stream; holds
    /// unknown peers for their certificate when an org key is trusted.
    allow: gate::Behaviour,
    /// The gossip streams for `/tocsin/gossip/4`.
    gossip: gossip::Behaviour,
    /// Liveness checks, so dead connections are noticed and redialled.
    ping: ping::Behaviour,
}

/// What the actor's helpers (store tasks, signing, the state writer) send back into
/// its loop.
enum Inbound {
    StoreFailed(AlertId),
    /// Frames made off the actor's thread for one peer (signed receipts), each with its
    /// lane.
    Loaded {
        peer: PeerId,
        frames: Vec<(u64, Vec<u8>)>,
    },
    /// Stored alerts a peer asked for, read by [`NetActor::spawn_load`] and encoded as
    /// frames, each with its origin's lane.
    LoadedAsked {
        peer: PeerId,
        frames: Vec<(u64, Vec<u8>)>,
        /// The read's last part.
        last: bool,
        /// [`loads::Loads::gen`] when the read started.
        gen: u64,
    },
    /// A locally issued alert, signed and verified off the loop.
    Signed {
        alert: Result<Box<VerifiedAlert>, tocsin_proto::Error>,
        reply: oneshot::Sender<Result<Issued, IssueError>>,
    },
    /// A trust change the state writer committed (or failed to).
    TrustCommitted {
        commit: Box<TrustCommit>,
        result: Result<(), String>,
        reply: TrustReply,
    },
    /// A page of the log, re-read after missed store notifications.
    LogPage(Vec<(u64, AlertId)>),
    /// The store already held this alert (a duplicate insert: no commit notice comes).
    AlreadyStored(AlertId),
    /// The re-read of the log of this generation is complete.
    LogResynced(u64),
    /// The re-read of the log of this generation failed (a store error).
    LogResyncFailed(u64),
    /// Alerts whose signatures a checking thread checked ([`verify`]).
    Verified(Vec<crate::engine::Checked>),
    /// The cancel of one of our own updates that came back from a peer after its alert
    /// moved on here ([`returned`]), to issue as if the API had asked.
    Withdraw(Box<tocsin_proto::AlertBody>),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NetTimer {
    Engine(TimerKey),
    Redial(PeerId),
    Unban(PeerId),
    /// A held peer's time to present its certificate is up (for that hold).
    Admit(PeerId, u64),
    /// A peer's certificate may have expired.
    CertExpiry(PublicKey),
    /// Dial an org entry's address again.
    OrgRedial(Multiaddr),
    /// Read the store's log again: the re-read of this generation failed.
    ResyncLog(u64),
}

/// `Timer` is not `Ord`; timers are kept in a heap by (time, sequence) with the timer
/// itself in a side table.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TimerKey(u64);

/// The revoked origins, shared with the control API (which marks their alerts in `show`).
pub type RevokedOrigins = Arc<std::sync::RwLock<HashMap<PublicKey, OriginRevoked>>>;

/// The org key and agency name of each node that presented its certificate here (kept
/// after it expires; this node's own included), shared with the control API.
pub type Agencies = Arc<std::sync::RwLock<HashMap<PublicKey, (PublicKey, String)>>>;

/// An address of an org entry: dialled without expecting a node key, since any node of
/// the agency may answer there.
struct OrgDial {
    org: PublicKey,
    /// The node that answered there last.
    peer: Option<PeerId>,
    /// A redial is scheduled.
    scheduled: bool,
    /// Attempts since the last gossip session with that node.
    attempt: u32,
}

struct Redial {
    addrs: Vec<Multiaddr>,
    /// Attempts since the last gossip session. A connection alone does not reset it: a
    /// peer that refuses us completes the handshake, then closes.
    attempt: u32,
}

/// Builds the swarm from the node key and config, and starts listening.
pub fn build_swarm(
    key: &tocsin_proto::SigningKey,
    registry: &mut Registry,
) -> anyhow::Result<Swarm<Behaviour>> {
    let keypair = crate::keys::libp2p_keypair(key)?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_dns()?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|_| Behaviour {
            allow: gate::Behaviour::new(crate::identity::MAX_PENDING_PEERS),
            gossip: gossip::Behaviour::new(gossip::Config {
                queue: PEER_WRITE_QUEUE,
            }),
            ping: ping::Behaviour::default(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

/// The network actor. Create with [`NetActor::new`], run with [`NetActor::run`].
pub struct NetActor {
    swarm: Swarm<Behaviour>,
    engine: Engine,
    store: Store,
    metrics: Metrics,
    commands: mpsc::Receiver<Command>,
    inbound_tx: mpsc::Sender<Inbound>,
    inbound_rx: mpsc::Receiver<Inbound>,
    /// The signature checking threads (None: the engine checks signatures itself).
    verifier: Option<verify::Verifier>,
    /// Peers the engine has been told are connected.
    connected: HashSet<PeerId>,
    /// Connected peers that have sent a frame: a gossip session, not only a handshake.
    sessions: HashSet<PeerId>,
    /// Remote addresses whose refused connection was logged at info.
    refused_logged: HashSet<Multiaddr>,
    timers: BinaryHeap<Reverse<(u64, NetTimer)>>,
    engine_timers: HashMap<u64, Timer>,
    next_timer: u64,
    redial: HashMap<PeerId, Redial>,
    trust: TrustTable,
    state: StateWriter,
    key: Arc<SigningKey>,
    partitioned: HashSet<PublicKey>,
    last_seen: HashMap<PublicKey, u64>,
    /// Frame bytes queued for each peer since start (for `/v1/peers` and metrics).
    bytes_out: HashMap<PeerId, u64>,
    cfg: Config,
    /// Set once the engine reads the stored alerts from the store and the listeners
    /// report their addresses.
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// This node's certificate (`[identity] cert_file`).
    cert: Option<Signed<NodeCert>>,
    /// The `identity` frame it sends first on every connection, encoded once.
    identity_frame: Vec<u8>,
    /// The valid certificates peers presented, by node key.
    certs: HashMap<PublicKey, NodeCert>,
    /// The org and expiry of the certificate each node showed here, also before this
    /// start (from the `agencies` table; bounded like it): a node does not change org
    /// while that certificate is valid, restarts of this node included.
    shown: HashMap<PublicKey, (PublicKey, u64)>,
    /// How many times each held revocation's time was moved earlier by a peer's
    /// (at most [`MAX_REVOCATION_CHANGES`] each).
    revocation_changes: HashMap<PublicKey, u32>,
    /// Revocations that verified but could not be kept yet (see [`pending`]).
    pending: pending::Pending,
    /// Our own updates given back by a peer whose cancel this run issued already
    /// (`returned`), at most [`MAX_WITHDRAWN`].
    withdrawn: HashSet<AlertId>,
    /// Peers whose first frame of this connection (their `identity`) has been read.
    identified: HashSet<PeerId>,
    /// Peers refused on their certificate whose refusal was logged at info.
    refused_certs: HashSet<PublicKey>,
    /// Org entries' addresses, dialled without a node key.
    org_dials: HashMap<Multiaddr, OrgDial>,
    /// Dials to org addresses in progress.
    dialing: HashMap<ConnectionId, Multiaddr>,
    /// Revocations held, by revoked node key.
    revocations: HashMap<PublicKey, RevocationProof>,
    /// Receipts for our alerts already passed to the store: (alert, receiver) → acked.
    receipts_seen: HashMap<(AlertId, PublicKey), bool>,
    /// The same, for the API (`issued_after` is filled in per alert there).
    revoked_origins: RevokedOrigins,
    /// The org and agency of each node that presented its certificate here (kept after
    /// the certificate expires; bounded by [`MAX_AGENCY_NODES`]), and this node's own,
    /// shared with the API: a blocked org blocks every node it certified, its alerts
    /// included, even when relayed.
    agencies: Agencies,
    /// Listeners that reported an address (or failed), for the start-up wait.
    listeners_up: HashSet<libp2p::core::transport::ListenerId>,
    /// The latest re-read of the store's log asked for (after missed commit notices).
    resync_gen: u64,
    /// Store reads of alerts asked for (`SendStored`), per peer: in flight and queued.
    loads: HashMap<PeerId, loads::Loads>,
}

impl NetActor {
    /// Sets up the engine from the store (alerts, cursors, trust), applies config trust
    /// entries for keys the database does not have yet, and starts listening.
    pub fn new(
        cfg: Config,
        key: &tocsin_proto::SigningKey,
        store: Store,
        commands: mpsc::Receiver<Command>,
        registry: Arc<Mutex<Registry>>,
    ) -> anyhow::Result<NetActor> {
        let me = crate::keys::public_key(key);
        let metrics = Metrics::default();
        let mut swarm = {
            let mut reg = registry
                .lock()
                .map_err(|_| anyhow::anyhow!("metrics registry poisoned"))?;
            metrics.register(&mut reg);
            build_swarm(key, &mut reg)?
        };
        for addr in &cfg.net.listen {
            let ma: Multiaddr = addr.parse()?;
            refuse_if_taken(&ma)?;
            swarm
                .listen_on(ma.clone())
                .map_err(|e| anyhow::anyhow!("cannot listen on {ma} (net.listen): {e}"))?;
        }
        // `run` points the engine at the stored alerts (read when needed, not loaded)
        // and checks every record in the background; the API serves meanwhile.
        let mut engine = Engine::new(me, store.epoch(), cfg.net.gossip.clone());
        let cert = match &cfg.identity.cert_file {
            Some(path) => {
                let cert = crate::identity::load_cert(path, &me)?;
                let c = cert.body();
                let now = crate::now_ms();
                if !cert.is_valid_at(now) {
                    warn!(not_before = c.not_before, not_after = c.not_after, path = %path.display(), "this node's certificate is not valid now (expired or not yet valid): peers that trust its org key will refuse it; certify the node again (`tocsin org certify`)");
                } else {
                    info!(agency = %c.agency, org = %c.org.fmt_short(), serial = c.serial, days_left = (c.not_after - now) / 86_400_000, "presenting the agency's node certificate");
                }
                Some(cert)
            }
            None => None,
        };
        let identity_frame = Frame::Identity {
            cert: cert
                .as_ref()
                .map(|c| serde_bytes::ByteBuf::from(c.to_bytes())),
        }
        .encode()
        .map_err(|e| anyhow::anyhow!("cannot encode the identity frame: {e}"))?;
        // An expired certificate names no agency: partners refuse it anyway.
        engine.set_org(
            cert.as_ref()
                .filter(|c| c.is_valid_at(crate::now_ms()))
                .map(|c| c.body().org),
        );
        let mut agencies = HashMap::new();
        let mut shown = HashMap::new();
        for c in store.agencies()? {
            shown.insert(c.node, (c.org, c.not_after));
            agencies.insert(c.node, (c.org, c.agency));
        }
        if let Some(c) = &cert {
            agencies.insert(me, (c.body().org, c.body().agency.clone()));
        }
        let mut revocations = HashMap::new();
        let mut revoked = HashMap::new();
        for proof in store.revocations()? {
            let r = proof.revocation();
            engine.handle(
                Event::Revoked {
                    node: r.node,
                    at: r.revoked_at,
                },
                crate::now_ms(),
            );
            revoked.insert(r.node, origin_revoked(&proof));
            revocations.insert(r.node, proof);
        }
        // Trust: the database wins; config entries seed keys it does not have yet.
        let mut trust = TrustTable::new(store.trust_entries()?);
        // Keys changed through the API (including removals) are never re-seeded.
        let api_touched: HashSet<PublicKey> = store
            .audit_log(usize::MAX)?
            .into_iter()
            .filter(|r| r.source == "api")
            .map(|r| r.key)
            .collect();
        let seeded_by = ChangedBy {
            source: "config",
            who: "config".into(),
            reason: Some("peers in the config file".into()),
        };
        for p in &cfg.peers {
            let key = p.public_key()?;
            if trust.get(&key).is_some() || api_touched.contains(&key) {
                continue;
            }
            let change = TrustChange::Put(TrustEntry {
                key,
                level: p.level,
                name: p.name.clone(),
                addrs: p.addrs.clone(),
                org: p.org,
            });
            let commit = trust.plan(&change, &seeded_by, crate::now_ms())?;
            store.commit_trust(&commit)?;
            trust.apply(&commit);
        }
        // Org keys are not peers: the nodes they certify get their level as they connect.
        for e in trust.list().into_iter().filter(|e| !e.org) {
            // A revoked node key has no level, whatever its entry says, unless it is blocked
            // (as at run time: a revocation never lifts a block).
            if !revocations.contains_key(&e.key) || e.level == TrustLevel::Blocked {
                engine.load_trust(e.key, e.level);
            }
        }
        // A blocked org's nodes are blocked from the start, their relayed alerts included
        // (as `effective_level` says at run time).
        for (node, (org, _)) in agencies.iter().filter(|(n, _)| **n != me) {
            engine.load_agency(*node, *org);
            if trust.get(node).is_none() && org_is_blocked(&trust, org) {
                engine.load_trust(*node, TrustLevel::Blocked);
            }
        }
        // Every saved cursor, those of nodes admitted on a certificate included (they
        // have no trust entry of their own), so catch-up resumes when they come back.
        for (key, (epoch, seq)) in store.cursors()? {
            engine.load_cursor(key, epoch, seq);
        }
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let state = StateWriter::start(store.clone(), inbound_tx.clone())
            .map_err(|e| anyhow::anyhow!("cannot start the state writer thread: {e}"))?;
        let verifier = verify::Verifier::start(&inbound_tx);
        if verifier.is_some() {
            engine.verify_off_thread();
        }
        Ok(NetActor {
            swarm,
            engine,
            store,
            metrics,
            commands,
            inbound_tx,
            inbound_rx,
            verifier,
            connected: HashSet::new(),
            sessions: HashSet::new(),
            refused_logged: HashSet::new(),
            timers: BinaryHeap::new(),
            engine_timers: HashMap::new(),
            next_timer: 0,
            redial: HashMap::new(),
            trust,
            state,
            key: Arc::new(key.clone()),
            partitioned: HashSet::new(),
            last_seen: HashMap::new(),
            bytes_out: HashMap::new(),
            cfg,
            ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            identity_frame,
            cert,
            certs: HashMap::new(),
            shown,
            revocation_changes: HashMap::new(),
            pending: pending::Pending::default(),
            withdrawn: HashSet::new(),
            identified: HashSet::new(),
            refused_certs: HashSet::new(),
            org_dials: HashMap::new(),
            dialing: HashMap::new(),
            revocations,
            receipts_seen: HashMap::new(),
            revoked_origins: Arc::new(std::sync::RwLock::new(revoked)),
            agencies: Arc::new(std::sync::RwLock::new(agencies)),
            listeners_up: HashSet::new(),
            resync_gen: 0,
            loads: HashMap::new(),
        })
    }

    /// The background check of the stored records has ended: counts what it
    /// quarantined and, if it quarantined anything new, reads every peer's log again
    /// from the start to fetch those alerts again (only what is missing is fetched);
    /// catch-up cursors are saved again from then on. A store whose structure is
    /// damaged (redb fails inside, [`StoreError::Damaged`]) is an error: the daemon
    /// stops with exit 1 and says to restore the backup, as when the damage is found
    /// while opening it. Any other failure (the disk, a store reopening) is logged and
    /// the check runs again at the next start.
    async fn on_scan(
        &mut self,
        res: Result<Result<crate::store::Scan, StoreError>, tokio::task::JoinError>,
        quarantined_before: u64,
        started: std::time::Instant,
    ) -> anyhow::Result<()> {
        let scan = match res {
            Ok(Ok(scan)) => scan,
            Ok(Err(e @ StoreError::Damaged { .. })) => {
                return Err(anyhow::Error::new(e).context("checking the stored alerts failed"));
            }
            Ok(Err(e)) => {
                warn!(error = %e, "checking the stored alerts failed; damaged records are quarantined at the next start");
                self.feed(Event::StoredChecked { refetch: false });
                return Ok(());
            }
            Err(e) => {
                warn!(error = %e, "checking the stored alerts stopped; damaged records are quarantined at the next start");
                self.feed(Event::StoredChecked { refetch: false });
                return Ok(());
            }
        };
        let quarantined = match self.store.read(|s| s.quarantined()).await {
            Ok(n) => n,
            Err(e) => {
                // Whether it quarantined anything is unknown: fetch again to be sure.
                warn!(error = %e, "reading the quarantine count failed; catch-up re-reads every peer's log");
                self.feed(Event::StoredChecked { refetch: true });
                return Ok(());
            }
        };
        self.metrics
            .store_quarantined
            .set(i64::try_from(quarantined).unwrap_or(i64::MAX));
        if quarantined > quarantined_before {
            warn!(
                newly = quarantined - quarantined_before,
                "damaged alerts quarantined: catch-up re-reads every peer's log to fetch them again"
            );
        }
        self.feed(Event::StoredChecked {
            refetch: quarantined > quarantined_before,
        });
        for (_, id) in scan.returned_updates {
            let (store, inbound) = (self.store.clone(), self.inbound_tx.clone());
            tokio::spawn(async move { returned::check(&store, &inbound, id).await });
        }
        if scan.former_key > 0 {
            info!(
                alerts = scan.former_key,
                "alerts issued here under a former node key (this node was re-keyed) are \
                 relayed as other origins' are; only that key could update or cancel them"
            );
        }
        info!(
            alerts = scan.alerts,
            ms = started.elapsed().as_millis() as u64,
            "stored alerts checked"
        );
        Ok(())
    }

    /// The revoked origins this actor keeps up to date, for the API.
    pub fn revoked_origins(&self) -> RevokedOrigins {
        self.revoked_origins.clone()
    }

    /// The agencies of the nodes this actor knows certificates of, for the API.
    pub fn agencies(&self) -> Agencies {
        self.agencies.clone()
    }

    /// The flag this actor sets once it is ready (readiness: `GET /v1/ready`).
    pub fn ready_flag(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
        self.ready = flag;
    }

    /// Points the engine at the stored alerts (read from the store when needed, not
    /// loaded), starts the check of every stored record in the background (it
    /// quarantines records that no longer decode), then runs until the command channel
    /// closes (every handle dropped) or `shutdown` resolves. Commands sent meanwhile
    /// wait in the channel. Fails only if the store cannot be read at all.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut committed = self.store.subscribe();
        let quarantined_before = self.store.read(|s| s.quarantined()).await?;
        let me = self.engine.me();
        let stored = cold::StoredAlerts::new(self.store.clone(), me);
        // Set when a read of the store fails inside redb (a damaged file).
        let damaged = stored.damaged();
        self.engine.set_cold(Box::new(stored));
        self.engine.hold_cursors();
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let mut scan = Some(tokio::task::spawn_blocking(move || store.scan(&me)));
        // A store too damaged to be read through ends the actor (and the daemon, exit 1).
        let mut failed: Option<anyhow::Error> = None;
        info!(
            alerts = self.engine.known_count(),
            "stored alerts are read from the store as needed; gossip starts"
        );
        // Learn the addresses we listen on before answering commands, so that the
        // first `GET /v1/net` already lists them (port 0 gets its real port here).
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        // One address per listener at least (one on 0.0.0.0 reports one per interface,
        // so addresses are not counted).
        while self.listeners_up.len() < self.cfg.net.listen.len() {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.on_swarm(event),
                Err(_) => break,
            }
        }
        self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        for key in self.trust.keys() {
            self.apply_trust(key);
        }
        tokio::pin!(shutdown);
        loop {
            let next = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep = async {
                match next {
                    Some(at) => {
                        let now = crate::now_ms();
                        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now))).await
                    }
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm(event),
                Some(msg) = self.inbound_rx.recv() => self.on_inbound(msg),
                res = committed.recv() => match res {
                    Ok(s) => self.feed(Event::Committed(vec![(s.seq, s.id)])),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        self.metrics.log_lags.inc();
                        self.resync_gen += 1;
                        self.feed(Event::LogGap {
                            gen: self.resync_gen,
                        });
                        if self.engine.reads_store() {
                            info!(missed, "fell behind the store's commit notices; what they announced was read from the store");
                        } else {
                            info!(missed, "fell behind the store's commit notices; reading the log again from where they stopped");
                            self.resync_log();
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = sleep => self.fire_timers(),
                res = async {
                    match scan.as_mut() {
                        Some(h) => h.await,
                        None => futures::future::pending().await,
                    }
                }, if scan.is_some() => {
                    scan = None;
                    if let Err(e) = self.on_scan(res, quarantined_before, started).await {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = damaged.lock().ok().and_then(|mut d| d.take()) {
                failed = Some(anyhow::Error::new(e).context("reading the stored alerts failed"));
                break;
            }
        }
        // Nothing reads the inbound queue any more: close it so the state writer never
        // waits on it, then let it finish the queued writes.
        let NetActor {
            state,
            mut trust,
            inbound_rx,
            ..
        } = self;
        drop(inbound_rx);
        trust.drain();
        state.finish().await;
        info!("network actor stopped");
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads stored alerts a peer asked for (`want`, `want_page`, offers) and sends them:
    /// a few reads in flight per peer, the next ones queued in order, a flood dropped
    /// and counted ([`loads`]), so that tiny frames cannot make the node hold many pages
    /// of alerts in memory at once.
    fn load_for(&mut self, pid: PeerId, alerts: Vec<(AlertId, u8)>) {
        match self.loads.entry(pid).or_default().ask(alerts) {
            loads::Ask::Start(alerts) => self.spawn_load(pid, alerts),
            loads::Ask::Queued => {}
            loads::Ask::Dropped => {
                debug!(peer = %pid, "too many stored alerts asked for by this peer at once; request dropped");
                self.metrics.loads_dropped.inc();
            }
        }
    }

    /// Queues frames made off the actor's thread for a peer that is still connected.
    fn send_loaded(&mut self, peer: PeerId, frames: Vec<(u64, Vec<u8>)>) {
        if !self.connected.contains(&peer) {
            return;
        }
        let gossip = &mut self.swarm.behaviour_mut().gossip;
        let out = self.bytes_out.entry(peer).or_default();
        for (lane, bytes) in frames {
            let len = bytes.len() as u64;
            if gossip.send_in_lane(&peer, lane, bytes).is_err() {
                break;
            }
            *out += len;
        }
    }

    /// One read of stored alerts for `pid`, off the actor's thread; answered with
    /// [`Inbound::LoadedAsked`] messages of at most [`LOAD_CHUNK`] frames, so that
    /// queueing a large answer never holds the actor up long, the last one with `last`
    /// (a read that panics ends with an empty last one).
    fn spawn_load(&self, pid: PeerId, alerts: Vec<(AlertId, u8)>) {
        let store = self.store.clone();
        let inbound = self.inbound_tx.clone();
        let gen = self.loads.get(&pid).map_or(0, loads::Loads::gen);
        tokio::task::spawn_blocking(move || {
            let load = || {
                let mut frames = Vec::with_capacity(alerts.len().min(LOAD_CHUNK));
                for (id, hops) in alerts {
                    if frames.len() == LOAD_CHUNK {
                        let chunk = std::mem::take(&mut frames);
                        let msg = Inbound::LoadedAsked {
                            peer: pid,
                            frames: chunk,
                            last: false,
                            gen,
                        };
                        if inbound.blocking_send(msg).is_err() {
                            return Vec::new();
                        }
                    }
                    match store.envelope(&id) {
                        Ok(Some(envelope)) => {
                            let lane = frame_lane(&envelope);
                            let frame = Frame::Alert { hops, envelope };
                            match frame.encode() {
                                Ok(bytes) => frames.push((lane, bytes)),
                                Err(e) => {
                                    warn!(error = %e, alert = %id.fmt_short(), "cannot encode a stored alert")
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            warn!(error = %e, alert = %id.fmt_short(), "cannot load alert for a peer")
                        }
                    }
                }
                frames
            };
            let frames =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).unwrap_or_default();
            let _ = inbound.blocking_send(Inbound::LoadedAsked {
                peer: pid,
                frames,
                last: true,
                gen,
            });
        });
    }

    /// After missing store notifications, has the state writer re-read the log so the
    /// engine's log has no gaps (pages come back as [`Inbound::LogPage`]).
    fn resync_log(&mut self) {
        // Every entry up to the hole is in the engine's log: read on from there.
        let after = self.engine.log_gap_at().unwrap_or(0);
        if self
            .state
            .send(StateJob::ResyncLog {
                gen: self.resync_gen,
                after,
            })
            .is_err()
        {
            warn!("the state writer is gone; cannot resync the log");
        }
    }

    fn feed(&mut self, event: Event) {
        let now = crate::now_ms();
        if let Event::Trust { key, level } = &event {
            if *level < self.engine.trust_of(key) {
                if let Some(pid) = peer_id_of_checked(key) {
                    if let Some(l) = self.loads.get_mut(&pid) {
                        l.narrow();
                    }
                    // Alerts already queued for it went out under its old level.
                    self.swarm.behaviour_mut().gossip.drop_alerts(&pid);
                }
            }
        }
        let actions = self.engine.handle(event, now);
        for a in actions {
            self.act(a, now);
        }
    }

    fn act(&mut self, action: Action, now: u64) {
        match action {
            Action::Send { peer, frame } => self.send_frame(&peer, &frame),
            Action::SendStored { peer, alerts } => {
                let Some(pid) = peer_id_of_checked(&peer).filter(|p| self.connected.contains(p))
                else {
                    return;
                };
                self.load_for(pid, alerts);
            }
            Action::Store { alert, from, hops } => {
                self.metrics.alerts_received.inc();
                let age_ms = now.saturating_sub(alert.body().issued_at);
                self.metrics.delivery_age.observe(age_ms as f64 / 1000.0);
                let store = self.store.clone();
                let inbound = self.inbound_tx.clone();
                let id = alert.id();
                // Received when the engine handled the frame, not when this task runs.
                let receipt = Receipt {
                    received_at: now,
                    from: Some(from),
                    hops,
                };
                // AMBER and RED alerts get a signed receipt back to their origin once
                // stored (they only ever come from it).
                let b = alert.body();
                let ack = (matches!(b.tlp, Tlp::Amber | Tlp::AmberStrict | Tlp::Red)
                    && b.origin != self.engine.me())
                .then(|| (self.key.clone(), b.origin));
                // One of our own updates that a peer gave back (see `returned`).
                let ours = b.origin == self.engine.me() && b.kind == tocsin_proto::Kind::Update;
                tokio::spawn(async move {
                    match store.insert(*alert, receipt).await {
                        Ok(Insert::Inserted { .. }) => {
                            if ours {
                                returned::check(&store, &inbound, id).await;
                            }
                            if let Some((key, origin)) = ack {
                                let out = ReceiptOut {
                                    alert: id,
                                    origin,
                                    received_at: now,
                                    acked: None,
                                };
                                let _ = tokio::task::spawn_blocking(move || {
                                    send_receipt(&store, &key, out, &inbound)
                                })
                                .await;
                            }
                        }
                        // Already stored (no commit notice comes): it is durable.
                        Ok(Insert::Duplicate { .. }) => {
                            let _ = inbound.send(Inbound::AlreadyStored(id)).await;
                        }
                        Err(e) => {
                            // A full disk fails every alert of every batch: one line a
                            // second says so, with how many were not logged before it.
                            if let Some(skipped) = COMMIT_FAILED_LOG.allow(crate::now_ms()) {
                                warn!(error = %e, alert = %id.fmt_short(), skipped, "store commit failed; the alert will be fetched again by catch-up (one such line a second at most; skipped: how many more since the last)");
                            }
                            let _ = inbound.send(Inbound::StoreFailed(id)).await;
                        }
                    }
                });
            }
            Action::Verify(job) => {
                let job = match &self.verifier {
                    Some(v) => match v.send(job) {
                        Ok(()) => return,
                        Err(job) => job,
                    },
                    None => job,
                };
                // No checking thread is left: check it here.
                let checked = job.check(&mut tocsin_proto::VerifyingKeys::default());
                self.feed(Event::Verified(Box::new(checked)));
            }
            Action::SetTimer { at, timer } => {
                let k = self.next_timer;
                self.next_timer += 1;
                self.engine_timers.insert(k, timer);
                self.timers
                    .push(Reverse((at, NetTimer::Engine(TimerKey(k)))));
            }
            Action::Disconnect {
                peer,
                until,
                reason,
            } => {
                info!(peer = %peer.fmt_short(), reason, "disconnecting peer");
                if let Some(pid) = peer_id(&peer) {
                    self.swarm.behaviour_mut().allow.disallow_peer(pid);
                    if let Some(until) = until {
                        warn!(peer = %peer.fmt_short(), ban_secs = (until.saturating_sub(now)) / 1000, "peer penalised: refused until the ban expires");
                        self.timers.push(Reverse((until, NetTimer::Unban(pid))));
                    }
                }
            }
            Action::Verdict { peer, reason } => {
                self.metrics
                    .rejections
                    .get_or_create(&vec![("reason".into(), reason.as_str().into())])
                    .inc();
                if reason.penalised() {
                    warn!(peer = %peer.fmt_short(), reason = reason.as_str(), "peer penalised for invalid data");
                } else {
                    debug!(peer = %peer.fmt_short(), reason = reason.as_str(), "input refused");
                }
            }
            Action::Receipt { peer, receipt } => {
                let r = receipt.body();
                // Only what changes what is held goes to the store: a delivery receipt
                // once, an acknowledgement once (replays cost nothing).
                let acked = r.acked_at.is_some();
                let seen = self.receipts_seen.get(&(r.alert, peer)).copied();
                if seen == Some(true) || (seen == Some(false) && !acked) {
                    return;
                }
                if self.receipts_seen.len() >= MAX_RECEIPTS_SEEN {
                    // The store's own rule (an acknowledgement is never downgraded)
                    // still holds; this only saves writes.
                    self.receipts_seen.clear();
                }
                self.receipts_seen.insert((r.alert, peer), acked);
                match &r.acked_by {
                    Some(by) => {
                        info!(alert = %r.alert.fmt_short(), receiver = %peer.fmt_short(), by = %by, "alert acknowledged by a recipient")
                    }
                    None => {
                        debug!(alert = %r.alert.fmt_short(), receiver = %peer.fmt_short(), "delivery receipt")
                    }
                }
                let org = self.certs.get(&peer).map(|c| c.org);
                if self.state.send(StateJob::ReceiptIn(receipt, org)).is_err() {
                    warn!("the state writer is gone; receipt not stored");
                }
            }
            Action::Sighting {
                sighting,
                unknown,
                ours_to,
            } => {
                let s = sighting.body();
                if unknown {
                    debug!(alert = ?s.alert.map(|a| a.fmt_short()), observer = %s.observer.fmt_short(), count = s.count, "sighting of an observer not known here");
                } else {
                    info!(alert = ?s.alert.map(|a| a.fmt_short()), observer = %s.observer.fmt_short(), count = s.count, "sighting");
                }
                if !self.state.takes_sightings() {
                    debug!("sighting not stored: the state writer has the most it queues");
                } else if self
                    .state
                    .send(StateJob::Sighting(sighting, unknown, ours_to))
                    .is_err()
                {
                    warn!("the state writer is gone; sighting not stored");
                }
            }
            Action::Revocation {
                peer,
                proof,
                digest,
            } => {
                let (org, at) = (proof.revocation().org, proof.revocation().revoked_at);
                match self.on_revocation(*proof, Some(peer)) {
                    // Held, or one of its org at least as early: a repeat changes nothing.
                    Ok((held, _)) if held.org == org && held.revoked_at <= at => {
                        self.engine.revocation_kept(digest);
                    }
                    Ok(_) => {
                        debug!(peer = %peer.fmt_short(), "revocation not kept: another org's holds the node's slot");
                    }
                    Err(e) => debug!(peer = %peer.fmt_short(), reason = %e, "revocation not kept"),
                }
            }
            Action::PauseReading { peer, until } => {
                if let Some(pid) = peer_id_of_checked(&peer) {
                    let pause = Duration::from_millis(until.saturating_sub(now));
                    self.swarm.behaviour_mut().gossip.pause_reading(&pid, pause);
                }
            }
            Action::CursorAdopted { peer, from, seq } => info!(
                peer = %peer.fmt_short(),
                former_key = %from.fmt_short(),
                seq,
                "catch-up resumes at the cursor saved for the peer's former node key \
                 (same log: the peer was re-keyed)"
            ),
            Action::SaveCursor { peer, epoch, seq } => {
                if self
                    .state
                    .send(StateJob::Cursor { peer, epoch, seq })
                    .is_err()
                {
                    warn!(peer = %peer.fmt_short(), "the state writer is gone; cursor not saved");
                }
            }
        }
    }

    fn send_frame(&mut self, peer: &PublicKey, frame: &Frame) {
        let Some(pid) = peer_id_of_checked(peer).filter(|p| self.connected.contains(p)) else {
            return;
        };
        match frame.encode() {
            Ok(bytes) => {
                self.metrics
                    .frames_sent
                    .get_or_create(&vec![("kind".into(), frame.name().into())])
                    .inc();
                *self.bytes_out.entry(pid).or_default() += bytes.len() as u64;
                let lane = match frame {
                    Frame::Alert { envelope, .. } => frame_lane(envelope),
                    _ => fair::CONTROL_LANE,
                };
                // Not connected any more: the engine hears of it from the swarm.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .send_in_lane(&pid, lane, bytes);
            }
            Err(e) => warn!(error = %e, "cannot encode frame"),
        }
    }

    /// Sends a new connection its first frame: our certificate, if we have one.
    fn send_identity(&mut self, pid: PeerId) {
        let bytes = self.identity_frame.clone();
        let _ = self
            .swarm
            .behaviour_mut()
            .gossip
            .send_in_lane(&pid, fair::CONTROL_LANE, bytes);
    }

    fn fire_timers(&mut self) {
        let now = crate::now_ms();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, t))) = self.timers.pop() else {
                break;
            };
            match t {
                NetTimer::Engine(TimerKey(k)) => {
                    if let Some(timer) = self.engine_timers.remove(&k) {
                        self.feed(Event::Timer(timer));
                    }
                }
                NetTimer::Redial(pid) => self.dial(pid),
                NetTimer::Unban(pid) => {
                    if let Some(key) = key_of_peer(&pid) {
                        self.apply_trust(key);
                    }
                }
                NetTimer::Admit(pid, hold) => {
                    if self.swarm.behaviour().allow.hold_of(&pid) == Some(hold) {
                        if let Some(key) = key_of_peer(&pid) {
                            self.refuse_held(pid, key, "it presented no certificate in time");
                        }
                    }
                }
                NetTimer::CertExpiry(key) => {
                    if self.certs.get(&key).is_some_and(|c| c.not_after <= now) {
                        self.certs.remove(&key);
                        self.feed(Event::PeerOrg {
                            node: key,
                            org: None,
                        });
                        warn!(peer = %key.fmt_short(), "a peer's certificate expired: it loses its agency's trust level");
                        self.refresh_node(key);
                    }
                }
                NetTimer::ResyncLog(gen) => {
                    if gen == self.resync_gen {
                        self.resync_log();
                    }
                }
                NetTimer::OrgRedial(addr) => {
                    if let Some(d) = self.org_dials.get_mut(&addr) {
                        d.scheduled = false;
                    }
                    self.dial_org_addr(addr);
                }
            }
        }
    }

    /// Makes the gate, dialling and the engine's levels match the trust table for one
    /// key: a node key's own entry, or an org key's entry and the nodes it certifies.
    fn apply_trust(&mut self, key: PublicKey) {
        let admitting = self.trust.admits_orgs();
        self.swarm.behaviour_mut().allow.set_admitting(admitting);
        let org = self.trust.get(&key).filter(|e| e.org).cloned();
        self.apply_org_dials(key, org.as_ref());
        // The nodes it certified: those remembered, and those holding a valid certificate
        // of it now (remembered or not, when the table is full).
        let me = self.engine.me();
        let certified: BTreeSet<PublicKey> = self
            .agencies
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(n, (org, _))| *org == key && **n != me)
            .map(|(n, _)| *n)
            .chain(
                self.certs
                    .iter()
                    .filter(|(_, c)| c.org == key)
                    .map(|(n, _)| *n),
            )
            .collect();
        // A node's own entry wins over its org's, a block of the org included: say so
        // when a blocked org leaves nodes it certified trusted on their own keys.
        if org.as_ref().is_some_and(|e| e.level == TrustLevel::Blocked) {
            let own: Vec<String> = certified
                .iter()
                .filter(|n| {
                    self.trust
                        .get(n)
                        .is_some_and(|e| !e.org && e.level != TrustLevel::Blocked)
                })
                .map(|n| n.fmt_short())
                .collect();
            if !own.is_empty() {
                warn!(org = %key.fmt_short(), nodes = %own.join(","), "org blocked, but nodes it certified keep the level of their own trust entries; block or remove those entries to cut them too");
            }
        }
        for node in certified {
            self.refresh_node(node);
        }
        // An org key is never a peer itself: this also drops any dialling of it by key.
        self.apply_node(key);
    }

    /// The level a node key has here: its own trust entry's, else (through a valid
    /// certificate it presented) its org's. A block is never lifted by anything else: a
    /// revocation only ever takes a level away, so a blocked node stays blocked (and its
    /// alerts from before the revocation stay out).
    fn effective_level(&self, key: &PublicKey, now: u64) -> Option<TrustLevel> {
        if self.is_blocked_node(key) {
            return Some(TrustLevel::Blocked);
        }
        if self.revocations.contains_key(key) {
            return None;
        }
        if let Some(e) = self.trust.get(key) {
            return (!e.org).then_some(e.level);
        }
        let cert = self.certs.get(key)?;
        if !(cert.not_before..cert.not_after).contains(&now) {
            return None;
        }
        self.trust.get(&cert.org).filter(|e| e.org).map(|e| e.level)
    }

    /// The org a node key showed here: that of the certificate it presented (held while
    /// valid), else the one it showed before (`shown`, kept across restarts).
    fn shown_org(&self, key: &PublicKey) -> Option<PublicKey> {
        self.certs
            .get(key)
            .map(|c| c.org)
            .or_else(|| self.shown.get(key).map(|(org, _)| *org))
    }

    /// The org that certified a peer's node key, as remembered (never this node's own).
    fn agency_org(&self, key: &PublicKey) -> Option<PublicKey> {
        if *key == self.engine.me() {
            return None;
        }
        self.agencies
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|(org, _)| *org)
    }

    /// Whether a node key is blocked here: by its own entry or, without one, by the org
    /// that certified it (a blocked org blocks every node it ever certified, whatever its
    /// certificate's dates: its alerts are dropped even when a trusted peer relays them).
    fn is_blocked_node(&self, key: &PublicKey) -> bool {
        match self.trust.get(key) {
            Some(e) => !e.org && e.level == TrustLevel::Blocked,
            None => self
                .agency_org(key)
                .into_iter()
                .chain(self.certs.get(key).map(|c| c.org))
                .any(|org| org_is_blocked(&self.trust, &org)),
        }
    }

    /// Gives the engine a node key's effective level if it changed, and makes the gate
    /// match it.
    fn refresh_node(&mut self, key: PublicKey) {
        let level = self.effective_level(&key, crate::now_ms());
        if self.engine.trust_of(&key) != level {
            self.feed(Event::Trust { key, level });
        }
        self.apply_node(key);
    }

    /// Dials the addresses of an org entry (`org` is its entry, or None when the key is
    /// not, or no longer, an org entry that may connect).
    fn apply_org_dials(&mut self, key: PublicKey, org: Option<&TrustEntry>) {
        let addrs: Vec<Multiaddr> = org
            .filter(|e| TrustLevel::may_connect(Some(e.level)))
            .map(|e| e.addrs.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        self.org_dials
            .retain(|a, d| d.org != key || addrs.contains(a));
        for addr in addrs {
            if !self.org_dials.contains_key(&addr) {
                self.org_dials.insert(
                    addr.clone(),
                    OrgDial {
                        org: key,
                        peer: None,
                        scheduled: false,
                        attempt: 0,
                    },
                );
                self.dial_org_addr(addr);
            }
        }
    }

    /// Dials an org address unless the node that answered there is still connected.
    fn dial_org_addr(&mut self, addr: Multiaddr) {
        let Some(d) = self.org_dials.get(&addr) else {
            return;
        };
        if d.peer.is_some_and(|p| self.swarm.is_connected(&p))
            || self.dialing.values().any(|a| a == &addr)
        {
            return;
        }
        let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dialing.insert(id, addr);
            }
            Err(e) => {
                debug!(%addr, error = %e, "dial failed");
                self.schedule_org_redial(addr);
            }
        }
    }

    fn schedule_org_redial(&mut self, addr: Multiaddr) {
        let Some(d) = self.org_dials.get_mut(&addr).filter(|d| !d.scheduled) else {
            return;
        };
        d.scheduled = true;
        let at = backoff(&self.cfg, &mut d.attempt);
        self.timers.push(Reverse((at, NetTimer::OrgRedial(addr))));
    }

    /// A connection's first frame: `cert` is the certificate the peer presented, if any.
    /// A held peer is admitted when its certificate is valid, its org entry may connect,
    /// and its node key is neither in the table on its own, revoked, banned nor
    /// partitioned; only then is anything about it kept (its certificate, its level in
    /// the engine, its catch-up cursor). A refused peer leaves no state, except a node
    /// of a blocked org, whose agency is remembered (bounded, see [`MAX_AGENCY_NODES`])
    /// so that its alerts stay out when others relay them. The certificate
    /// of a peer already allowed on its node key is kept for its agency's name, and
    /// gives it its org's level if its own entry is removed.
    fn on_identity(&mut self, pid: PeerId, key: PublicKey, cert: Option<&[u8]>) {
        let now = crate::now_ms();
        let checked = crate::identity::check_presented(cert, &key, now);
        if !self.swarm.behaviour().allow.is_pending(&pid) {
            if let (Ok(c), Some(bytes)) = (checked, cert) {
                if self.swarm.behaviour().allow.is_allowed(&pid) {
                    // A node does not change agency by showing another org's certificate
                    // while the one it showed here before is still valid: that would
                    // take it out of its org's block, revocation and expiry.
                    let held = self
                        .certs
                        .get(&key)
                        .map(|h| (h.org, h.not_after))
                        .or_else(|| self.shown.get(&key).copied());
                    if let Some((org, _)) = held.filter(|(o, until)| *o != c.org && *until > now) {
                        return self.refuse_org_switch(pid, key, org, c.org);
                    }
                    self.keep_cert(key, c, bytes);
                    self.refresh_node(key);
                }
            }
            return;
        }
        let c = match checked {
            Ok(c) => c,
            Err(e) => return self.refuse_held(pid, key, &e.to_string()),
        };
        // The same rule as for a connected node: no change of agency while the
        // certificate it showed here before is valid (a reconnection, or a restart of
        // this node, does not open a way round it), as long as that org is an org entry
        // here: one the operator removed (an agency that replaced its org key) no longer
        // holds its nodes. (Its block and revocations are remembered apart.)
        if let Some((org, until)) = self.shown.get(&key).copied().filter(|(o, until)| {
            *o != c.org && *until > now && self.trust.get(o).is_some_and(|e| e.org)
        }) {
            let reason = format!(
                "it showed a certificate of org {} here, valid until {until} (unix ms), and now presents one of org {}",
                org.fmt_short(),
                c.org.fmt_short()
            );
            return self.refuse_held(pid, key, &reason);
        }
        self.apply_pending(key, c.org);
        // A revocation counts if it comes from the org of the certificate presented or
        // from the org the node showed here before (`keep_cert` drops one from another
        // org only when neither is its own).
        let own_org = self.shown_org(&key);
        let refusal = if let Some(r) = self
            .revocations
            .get(&key)
            .map(|p| p.revocation())
            .filter(|r| r.org == c.org || Some(r.org) == own_org)
        {
            Some(format!(
                "its agency revoked its key at {} (unix ms): {}",
                r.revoked_at, r.reason
            ))
        } else if let Some(e) = self.trust.get(&key).filter(|e| !e.org) {
            // Its own entry wins over its org's (it may connect only if it is allowed).
            Some(format!("its node key is {} here", e.level))
        } else if self.is_blocked_node(&key) {
            // A node of a blocked org stays blocked, whatever certificate it shows now.
            Some("a blocked org certified it".to_string())
        } else {
            match self.trust.get(&c.org).filter(|e| e.org) {
                None => Some(format!(
                    "its org key {} is not in the trust table",
                    c.org.fmt_short()
                )),
                Some(e) if !TrustLevel::may_connect(Some(e.level)) => {
                    Some(format!("its org key {} is {}", c.org.fmt_short(), e.level))
                }
                Some(_) if self.partitioned.contains(&key) => {
                    Some("it is partitioned (test control)".into())
                }
                Some(_) if self.engine.is_banned(&key, now) => {
                    Some("it is banned for invalid data".into())
                }
                Some(_) if !self.certs.contains_key(&key) && self.certs_full(&c.org) => Some(format!(
                    "this node holds the most certificates it keeps ({MAX_AGENCY_NODES} in all, {MAX_AGENCY_NODES_PER_ORG} of org {}) until some expire",
                    c.org.fmt_short()
                )),
                Some(_) => None,
            }
        };
        if let Some(reason) = refusal {
            // A node of a blocked org proved who certified it: remember that, so that its
            // alerts are dropped when other peers relay them.
            if self.trust.get(&key).is_none() && org_is_blocked(&self.trust, &c.org) {
                if let Some(bytes) = cert {
                    self.remember_agency(key, &c, bytes);
                    self.refresh_node(key);
                }
            }
            return self.refuse_held(pid, key, &reason);
        }
        let (agency, org) = (c.agency.clone(), c.org);
        let Some(bytes) = cert else {
            return self.refuse_held(pid, key, "it presented no certificate");
        };
        self.keep_cert(key, c, bytes);
        self.refresh_node(key);
        if !self.swarm.behaviour().allow.is_allowed(&pid) {
            return self.refuse_held(pid, key, "it may not connect");
        }
        info!(peer = %key.fmt_short(), %agency, org = %org.fmt_short(), "peer admitted on its agency's certificate");
        self.ensure_connected(pid, key);
    }

    /// Whether the certificates kept are at their bound, in all or of `org`
    /// ([`MAX_AGENCY_NODES`], [`MAX_AGENCY_NODES_PER_ORG`]).
    fn certs_full(&self, org: &PublicKey) -> bool {
        self.certs.len() >= MAX_AGENCY_NODES
            || self.certs.values().filter(|c| c.org == *org).count() >= MAX_AGENCY_NODES_PER_ORG
    }

    /// Keeps a valid certificate a peer presented, with one expiry timer per certificate.
    /// (Its catch-up cursor, if any, was loaded at start-up with every other.)
    fn keep_cert(&mut self, key: PublicKey, c: NodeCert, bytes: &[u8]) {
        let before = self.shown_org(&key);
        // A renewal by the same org is stored too, so that after a restart the node is
        // held to its org until the renewed certificate's end, not the first one's.
        let renewed = self
            .shown
            .get(&key)
            .is_some_and(|(org, until)| *org == c.org && c.not_after > *until);
        if renewed
            && self
                .state
                .send(StateJob::Agency(key, bytes.to_vec()))
                .is_err()
        {
            warn!(peer = %key.fmt_short(), "the state writer is gone; the peer's renewed certificate is not stored");
        }
        self.remember_agency(key, &c, bytes);
        if self.shown.len() < MAX_AGENCY_NODES || self.shown.contains_key(&key) {
            self.shown.insert(key, (c.org, c.not_after));
        }
        let not_after = c.not_after;
        // A revocation held from another org (one that revoked a node not seen yet) is
        // dropped when the node shows its own org's certificate; never one from the org
        // it showed here before: a revoked node does not shed its revocation with a
        // certificate of another org.
        if self.revocations.get(&key).is_some_and(|p| {
            let org = p.revocation().org;
            org != c.org && Some(org) != before
        }) {
            self.drop_revocation(key);
        }
        if self.certs.get(&key).map(|old| old.org) != Some(c.org) {
            self.feed(Event::PeerOrg {
                node: key,
                org: Some(c.org),
            });
        }
        let org = c.org;
        match self.certs.insert(key, c) {
            Some(old) if old.not_after == not_after => {}
            _ => {
                self.timers
                    .push(Reverse((not_after, NetTimer::CertExpiry(key))));
            }
        }
        self.apply_pending(key, org);
    }

    /// The node `key` shows a certificate of `org` here: a revocation of it by that org
    /// that could not be kept before is kept now. It takes the slot from another org's
    /// taken while the node was not seen (as [`Self::keep_cert`] would drop that one).
    fn apply_pending(&mut self, key: PublicKey, org: PublicKey) {
        let Some(proof) = self.pending.take(&key, &org) else {
            return;
        };
        let before = self.shown_org(&key);
        if self.revocations.get(&key).is_some_and(|p| {
            let o = p.revocation().org;
            o != org && Some(o) != before
        }) {
            self.drop_revocation(key);
        }
        if let Err(e) = self.on_revocation(proof, None) {
            debug!(peer = %key.fmt_short(), reason = %e, "a revocation that waited for the node's certificate was not kept");
        }
    }

    /// Remembers (and stores) which agency certified `key`, from the certificate it
    /// presented itself (`c`, verified, over its own key; `bytes` its envelope), within
    /// [`MAX_AGENCY_NODES`] and [`MAX_AGENCY_NODES_PER_ORG`].
    fn remember_agency(&mut self, key: PublicKey, c: &NodeCert, bytes: &[u8]) {
        let mut table = self
            .agencies
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let held = table.get(&key).map(|(org, _)| *org);
        // A node of a blocked org stays one: a certificate of another org does not lift
        // the block.
        if held.is_some_and(|org| org != c.org && org_is_blocked(&self.trust, &org)) {
            return;
        }
        if held.is_none() {
            let of_org = table.values().filter(|(o, _)| *o == c.org).count();
            if table.len() >= MAX_AGENCY_NODES || of_org >= MAX_AGENCY_NODES_PER_ORG {
                debug!(peer = %key.fmt_short(), org = %c.org.fmt_short(), "agency not remembered: this node remembers the most it keeps");
                return;
            }
        }
        table.insert(key, (c.org, c.agency.clone()));
        drop(table);
        let org_changed = held != Some(c.org);
        // Stored when the node is new or changes org; a new agency name alone is shown
        // at once but not written (a certificate per handshake must not cost a write).
        if org_changed
            && self
                .state
                .send(StateJob::Agency(key, bytes.to_vec()))
                .is_err()
        {
            warn!(peer = %key.fmt_short(), "the state writer is gone; the peer's agency is not stored");
        }
    }

    /// A verified revocation, from a peer or the operator (`from` None). It is kept when
    /// it concerns a key this node deals with: a node of an org in the trust table, a
    /// node key in it, or a node that presented a certificate from the same org (so that
    /// nobody can fill the table with revocations of made-up orgs). Kept, it is applied
    /// (the node is cut and refused, its alerts issued from the revocation on are
    /// refused and no longer shared), stored, and flooded to every other peer. Returns
    /// the revocation as held and whether it was new.
    fn on_revocation(
        &mut self,
        proof: RevocationProof,
        from: Option<PublicKey>,
    ) -> Result<(RevocationView, bool), String> {
        let r = proof.revocation().clone();
        let own_org = self.shown_org(&r.node);
        let mut displaced = false;
        if let Some(held) = self.revocations.get(&r.node) {
            let held_org = held.revocation().org;
            if held_org != r.org {
                // Another org's revocation holds the slot: the one of the org the node
                // showed here takes it over; any other waits (see `pending`).
                if own_org != Some(r.org) || own_org == Some(held_org) {
                    let view = revocation_view(held);
                    if from.is_some() {
                        self.pending.keep(proof);
                    }
                    return Ok((view, false));
                }
                displaced = true;
            } else if held.revocation().revoked_at <= r.revoked_at {
                // Only the org that revoked it can move the time earlier (the earliest
                // of its revocations wins, in any order)...
                return Ok((revocation_view(held), false));
            } else if from.is_some()
                && self.revocation_changes.get(&r.node).copied().unwrap_or(0)
                    >= MAX_REVOCATION_CHANGES
            {
                // ...a few times: an org that keeps signing earlier ones would have
                // every node write and flood each.
                return Err(format!(
                    "revocation of {} not kept: its time was moved earlier {MAX_REVOCATION_CHANGES} times already",
                    r.node.fmt_short()
                ));
            }
        }
        if from.is_some() {
            if let Err(why) = self.may_take_revocation(&r) {
                // Judged again if the node shows that org's certificate here later.
                self.pending.keep(proof);
                return Err(why);
            }
        }
        let of_org = self
            .revocations
            .values()
            .filter(|p| p.revocation().org == r.org)
            .count();
        if !self.revocations.contains_key(&r.node)
            && (self.revocations.len() >= MAX_REVOCATIONS || of_org >= MAX_REVOCATIONS_PER_ORG)
        {
            warn!(node = %r.node.fmt_short(), org = %r.org.fmt_short(), limit = MAX_REVOCATIONS, per_org = MAX_REVOCATIONS_PER_ORG, "revocation refused: this node holds the most it keeps");
            return Err(format!(
                "this node holds the most revocations it keeps ({MAX_REVOCATIONS} in all, {MAX_REVOCATIONS_PER_ORG} per org)"
            ));
        }
        if displaced {
            // The store's row is replaced below; the engine forgets the other org's
            // time first (it keeps the earlier of two for one org).
            self.revocations.remove(&r.node);
            self.feed(Event::Unrevoked { node: r.node });
        } else if self.revocations.contains_key(&r.node)
            && self.revocation_changes.len() < MAX_REVOCATIONS
        {
            *self.revocation_changes.entry(r.node).or_default() += 1;
        }
        if r.node == self.engine.me() {
            tracing::error!(org = %r.org.fmt_short(), reason = %r.reason, "THIS node's key was revoked by its agency: partners refuse it from now on; install a new key and certificate (docs/operations.md, key ceremony)");
        } else {
            warn!(node = %r.node.fmt_short(), org = %r.org.fmt_short(), agency = %proof.cert().agency, revoked_at = r.revoked_at, reason = %r.reason, "node key revoked by its agency: its connections are refused and its alerts from then on rejected");
        }
        if let Ok(mut table) = self.revoked_origins.write() {
            table.insert(r.node, origin_revoked(&proof));
        }
        let frame = Frame::revoke(&proof);
        let view = revocation_view(&proof);
        if self
            .state
            .send(StateJob::Revocation(Box::new(proof.clone())))
            .is_err()
        {
            warn!("the state writer is gone; revocation not stored");
        }
        // Every other peer gets it, the revoked node too (best effort: it is cut next),
        // so that its operator learns why it is refused.
        let peers: Vec<PublicKey> = self
            .connected
            .iter()
            .filter_map(key_of_peer)
            .filter(|k| Some(*k) != from)
            .collect();
        for peer in peers {
            self.send_frame(&peer, &frame);
        }
        self.revocations.insert(r.node, proof);
        self.feed(Event::Revoked {
            node: r.node,
            at: r.revoked_at,
        });
        self.refresh_node(r.node);
        Ok((view, true))
    }

    /// Whether a revocation that a peer sent may be kept. Anyone can make an org key and
    /// "certify" any node key with it, so the proof alone says nothing: the node must
    /// be one that presented a certificate of that org here, or one not seen yet, with
    /// no trust entry of its own, revoked by an org entry of this node's trust table at
    /// member or partner. This node's own key is revoked
    /// only by the org of its own certificate. An operator's revocation (the API) is
    /// always kept.
    fn may_take_revocation(&self, r: &tocsin_proto::identity::Revocation) -> Result<(), String> {
        let refuse = |why: &str| {
            Err(format!(
                "revocation of {} by org {} not kept: {why}",
                r.node.fmt_short(),
                r.org.fmt_short()
            ))
        };
        if r.node == self.engine.me() {
            return match &self.cert {
                Some(c) if c.body().org == r.org => Ok(()),
                _ => refuse("it names this node, and is not from this node's own agency"),
            };
        }
        // The node showed us that org's certificate (now, or before: remembered across
        // restarts): that org speaks for it.
        match self.shown_org(&r.node) {
            Some(org) if org == r.org => return Ok(()),
            Some(_) => return refuse("the node presented a certificate of another org here"),
            None => {}
        }
        // A public org is trusted with what it publishes, not to take other agencies'
        // nodes out of the federation: it speaks only for nodes that showed its
        // certificate here (above).
        if !self
            .trust
            .get(&r.org)
            .is_some_and(|e| e.org && matches!(e.level, TrustLevel::Member | TrustLevel::Partner))
        {
            return refuse("its org is not an org entry of the trust table at member or partner");
        }
        if self.trust.get(&r.node).is_some() {
            return refuse("the node key is trusted on its own, and never presented a certificate of that org here");
        }
        // A node not seen yet, revoked by a trusted org: kept, until the node shows a
        // certificate of another org (then the revocation is dropped, `keep_cert`).
        Ok(())
    }

    /// Drops a held revocation (its org turned out not to be the node's).
    fn drop_revocation(&mut self, node: PublicKey) {
        if self.revocations.remove(&node).is_none() {
            return;
        }
        self.revocation_changes.remove(&node);
        warn!(node = %node.fmt_short(), "a revocation by an org that turned out not to be the node's own was dropped");
        if let Ok(mut table) = self.revoked_origins.write() {
            table.remove(&node);
        }
        if self.state.send(StateJob::DropRevocation(node)).is_err() {
            warn!("the state writer is gone; revocation not dropped from the store");
        }
        self.feed(Event::Unrevoked { node });
    }

    /// A peer allowed here presented a certificate of org `shown`, while the
    /// certificate of org `held` it showed before is still valid. The new one is not
    /// kept. A node trusted on its own key stays connected (its entry, not its org,
    /// allows it); one admitted through its org is cut, and its next connection is
    /// admitted again from its certificate like an unknown peer's.
    fn refuse_org_switch(
        &mut self,
        pid: PeerId,
        key: PublicKey,
        held: PublicKey,
        shown: PublicKey,
    ) {
        let reason = format!(
            "it was admitted on a certificate of org {} and now presents one of org {}",
            held.fmt_short(),
            shown.fmt_short()
        );
        if self.trust.get(&key).is_some_and(|e| !e.org) {
            warn!(peer = %key.fmt_short(), reason, "a certificate of another org was ignored");
            return;
        }
        self.swarm.behaviour_mut().allow.disallow_peer(pid);
        self.refuse_held(pid, key, &reason);
    }

    /// Refuses a held peer, logging why (at info once per key, then at debug).
    fn refuse_held(&mut self, pid: PeerId, key: PublicKey, reason: &str) {
        self.metrics.connections_refused.inc();
        if self.refused_certs.len() < MAX_REFUSED_LOGGED && self.refused_certs.insert(key) {
            info!(peer = %key.fmt_short(), reason, "connection refused: the peer's node key is not trusted and {reason}; repeats are logged at debug");
        } else {
            debug!(peer = %key.fmt_short(), reason, "connection refused");
        }
        self.identified.remove(&pid);
        self.swarm.behaviour_mut().allow.refuse(pid);
    }

    /// Makes the gate and dialling match a node key's level in the engine.
    fn apply_node(&mut self, key: PublicKey) {
        let Some(pid) = peer_id(&key) else { return };
        let now = crate::now_ms();
        let allowed = self.engine.may_connect(&key, now)
            && !self.partitioned.contains(&key)
            && !self.revocations.contains_key(&key);
        if allowed {
            self.swarm.behaviour_mut().allow.allow_peer(pid);
            let addrs: Vec<Multiaddr> = self
                .trust
                .get(&key)
                .map(|e| e.addrs.iter().filter_map(|a| a.parse().ok()).collect())
                .unwrap_or_default();
            if !addrs.is_empty() {
                self.redial.insert(pid, Redial { addrs, attempt: 0 });
                if !self.swarm.is_connected(&pid) {
                    self.dial(pid);
                }
            }
        } else {
            self.swarm.behaviour_mut().allow.disallow_peer(pid);
            self.redial.remove(&pid);
        }
    }

    fn dial(&mut self, pid: PeerId) {
        if self.swarm.is_connected(&pid) {
            return;
        }
        let Some(r) = self.redial.get(&pid) else {
            return;
        };
        let opts = DialOpts::peer_id(pid).addresses(r.addrs.clone()).build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(peer = %pid, error = %e, "dial failed");
            self.schedule_redial(pid);
        }
    }

    fn schedule_redial(&mut self, pid: PeerId) {
        let Some(r) = self.redial.get_mut(&pid) else {
            return;
        };
        let at = backoff(&self.cfg, &mut r.attempt);
        self.timers.push(Reverse((at, NetTimer::Redial(pid))));
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                info!(%address, "listening");
                self.listeners_up.insert(listener_id);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                warn!(?listener_id, %error, "a listener failed");
                self.listeners_up.insert(listener_id);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id: pid,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                if let Some(addr) = self.dialing.remove(&connection_id) {
                    if let Some(d) = self.org_dials.get_mut(&addr) {
                        d.peer = Some(pid);
                    }
                }
                let Some(key) = key_of_peer(&pid) else {
                    let _ = self.swarm.disconnect_peer_id(pid);
                    return;
                };
                self.send_identity(pid);
                if let Some(hold) = self.swarm.behaviour().allow.hold_of(&pid) {
                    debug!(peer = %key.fmt_short(), addr = %endpoint.get_remote_address(), "unknown peer held until it presents a certificate");
                    let at = crate::now_ms() + crate::identity::ADMIT_TIMEOUT_MS;
                    self.timers.push(Reverse((at, NetTimer::Admit(pid, hold))));
                    return;
                }
                self.last_seen.insert(key, crate::now_ms());
                if num_established.get() == 1 {
                    // Repeated connections to a peer that keeps closing them are logged at
                    // debug; the first of a series, and every gossip session, at info.
                    let addr = endpoint.get_remote_address();
                    if self.redial.get(&pid).is_some_and(|r| r.attempt > 1) {
                        debug!(peer = %key.fmt_short(), %addr, "peer connected again");
                    } else {
                        info!(peer = %key.fmt_short(), %addr, "peer connected");
                    }
                    self.ensure_connected(pid, key);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id: pid,
                num_established: 0,
                cause,
                ..
            } => {
                self.identified.remove(&pid);
                let org_addrs: Vec<Multiaddr> = self
                    .org_dials
                    .iter()
                    .filter(|(_, d)| d.peer == Some(pid))
                    .map(|(a, _)| a.clone())
                    .collect();
                for addr in org_addrs {
                    self.schedule_org_redial(addr);
                }
                let Some(key) = key_of_peer(&pid) else { return };
                let cause = cause.map(|c| c.to_string());
                if self.sessions.remove(&pid) {
                    info!(peer = %key.fmt_short(), ?cause, "peer disconnected");
                } else {
                    debug!(peer = %key.fmt_short(), ?cause, "peer closed the connection before any gossip");
                }
                if !self.connected.remove(&pid) {
                    // Held or refused before it was ever a peer.
                    if self.redial.contains_key(&pid) {
                        self.schedule_redial(pid);
                    }
                    return;
                }
                self.metrics.peers_connected.dec();
                // Reads queued for it are dropped; those in flight end unsent.
                if let Some(l) = self.loads.get_mut(&pid) {
                    l.clear_waiting();
                }
                self.last_seen.insert(key, crate::now_ms());
                self.feed(Event::PeerDisconnected(key));
                if self.redial.contains_key(&pid) {
                    self.schedule_redial(pid);
                }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                self.metrics.connections_refused.inc();
                // A peer we refuse may retry for as long as it trusts us: one info line
                // per address, then debug (the metric counts them all).
                if self.refused_logged.len() < MAX_REFUSED_LOGGED
                    && self.refused_logged.insert(send_back_addr.clone())
                {
                    info!(addr = %send_back_addr, error = %error, "incoming connection refused; repeats are logged at debug");
                } else {
                    debug!(addr = %send_back_addr, error = %error, "incoming connection refused");
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } if self.dialing.contains_key(&connection_id) => {
                if let Some(addr) = self.dialing.remove(&connection_id) {
                    debug!(%addr, error = %error, "dial of an org address failed; backing off");
                    self.schedule_org_redial(addr);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(pid),
                error,
                ..
            } => {
                debug!(peer = %pid, error = %error, "dial failed; backing off");
                if !self.swarm.is_connected(&pid) {
                    self.schedule_redial(pid);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(event)) => self.on_gossip(event),
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossip::Event) {
        match event {
            gossip::Event::Frame { peer, bytes } => {
                let Some(key) = key_of_peer(&peer) else {
                    return;
                };
                if self.identified.insert(peer) {
                    // The first frame of a connection is the peer's `identity`.
                    match Frame::decode(&bytes) {
                        Ok(Frame::Identity { cert }) => {
                            self.on_identity(peer, key, cert.as_deref().map(|c| &c[..]));
                            return;
                        }
                        _ if self.swarm.behaviour().allow.is_pending(&peer) => {
                            self.refuse_held(peer, key, "its first frame was not its identity");
                            return;
                        }
                        // The engine judges (and penalises) anything else.
                        _ => {}
                    }
                }
                if !self.swarm.behaviour().allow.is_allowed(&peer) {
                    return;
                }
                self.ensure_connected(peer, key);
                if self.sessions.insert(peer) {
                    // The peer speaks to us: the link is really up, so a later drop
                    // redials quickly again.
                    if let Some(r) = self.redial.get_mut(&peer) {
                        r.attempt = 0;
                    }
                    for d in self.org_dials.values_mut() {
                        if d.peer == Some(peer) {
                            d.attempt = 0;
                        }
                    }
                }
                self.last_seen.insert(key, crate::now_ms());
                self.feed(Event::Frame { peer: key, bytes });
            }
            gossip::Event::Oversized { peer } => {
                if let Some(key) = key_of_peer(&peer) {
                    self.feed(Event::OversizedFrame { peer: key });
                }
            }
            gossip::Event::StreamFailed { peer, error } => {
                self.metrics.stream_failures.inc();
                info!(peer = %peer, error, "gossip stream failed; reconnecting");
                // A connection without a working stream is useless: rebuild it.
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            gossip::Event::Dropped { count, .. } => {
                self.metrics.write_queue_drops.inc_by(count);
            }
            gossip::Event::Flushed { .. } => {}
        }
    }

    /// Tells the engine once that a peer is connected, whichever of the connection event
    /// and its first frame comes first.
    fn ensure_connected(&mut self, pid: PeerId, key: PublicKey) {
        if !self.swarm.is_connected(&pid)
            || !self.swarm.behaviour().allow.is_allowed(&pid)
            || !self.connected.insert(pid)
        {
            return;
        }
        self.metrics.peers_connected.inc();
        self.metrics.peer_connects.inc();
        self.feed(Event::PeerConnected(key));
        // Revocations travel like catch-up: every peer gets all of them when it connects.
        let frames: Vec<Frame> = self
            .revocations
            .values()
            .filter(|p| p.revocation().node != key)
            .map(Frame::revoke)
            .collect();
        for frame in frames {
            self.send_frame(&key, &frame);
        }
        // Receipts and this node's own sightings of its alerts that it may have missed
        // while away (a repeat of one it holds changes nothing there).
        let store = self.store.clone();
        let inbound = self.inbound_tx.clone();
        let since = crate::now_ms().saturating_sub(RECEIPT_RESEND_MS);
        tokio::task::spawn_blocking(move || {
            type Wrap = fn(serde_bytes::ByteBuf) -> Frame;
            let receipt: Wrap = |receipt| Frame::Receipt { receipt };
            let sighting: Wrap = |sighting| Frame::Sighting { sighting };
            let mut frames: Vec<Vec<u8>> = Vec::new();
            for (what, read, wrap) in [
                (
                    "receipts",
                    store.receipts_out_since(&key, since, MAX_RECEIPTS_RESENT),
                    receipt,
                ),
                (
                    "sightings",
                    store.sightings_out_since(&key, since, MAX_SIGHTINGS_RESENT),
                    sighting,
                ),
            ] {
                match read {
                    Ok(envelopes) => frames.extend(
                        envelopes
                            .into_iter()
                            .filter_map(|e| wrap(serde_bytes::ByteBuf::from(e)).encode().ok()),
                    ),
                    Err(e) => warn!(error = %e, what, "cannot read what to send the peer again"),
                }
            }
            if !frames.is_empty() {
                let frames = frames
                    .into_iter()
                    .map(|bytes| (fair::CONTROL_LANE, bytes))
                    .collect();
                let _ = inbound.blocking_send(Inbound::Loaded { peer: pid, frames });
            }
        });
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::StoreFailed(id) => self.feed(Event::StoreFailed(vec![id])),
            Inbound::Verified(checked) => {
                for c in checked {
                    self.feed(Event::Verified(Box::new(c)));
                }
            }
            Inbound::LoadedAsked {
                peer,
                frames,
                last,
                gen,
            } => {
                // Read under a level the peer no longer has: not sent.
                let current = self.loads.get(&peer).is_none_or(|l| l.gen() == gen);
                // The peer's next queued read starts as this one ends.
                let mut next = None;
                if let Some(l) = self.loads.get_mut(&peer).filter(|_| last) {
                    next = l.done();
                    if l.is_idle() {
                        self.loads.remove(&peer);
                    }
                }
                if let Some(alerts) = next {
                    self.spawn_load(peer, alerts);
                }
                if current {
                    self.send_loaded(peer, frames);
                } else {
                    debug!(peer = %peer, frames = frames.len(), "stored alerts read before the peer's trust narrowed were not sent");
                }
            }
            Inbound::Loaded { peer, frames } => self.send_loaded(peer, frames),
            Inbound::Signed { alert, reply } => self.on_signed(alert, reply),
            Inbound::Withdraw(body) => self.withdraw_returned(body),
            Inbound::TrustCommitted {
                commit,
                result,
                reply,
            } => self.on_trust_committed(*commit, result, reply),
            Inbound::LogPage(page) => self.feed(Event::Committed(page)),
            Inbound::AlreadyStored(id) => self.feed(Event::AlreadyStored(id)),
            Inbound::LogResynced(gen) => self.feed(Event::LogResynced { gen }),
            Inbound::LogResyncFailed(gen) => {
                // Tried again later; catch-up pages stop before the hole meanwhile.
                let at = crate::now_ms() + LOG_RESYNC_RETRY_MS;
                self.timers.push(Reverse((at, NetTimer::ResyncLog(gen))));
            }
        }
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::Throttle;

    #[test]
    fn a_throttled_line_goes_out_once_a_second_with_the_count_held_back() {
        let t = Throttle::new();
        assert_eq!(t.allow(10_000), Some(0));
        for ms in 10_001..10_999 {
            assert_eq!(t.allow(ms), None);
        }
        assert_eq!(t.allow(11_000), Some(998));
        assert_eq!(t.allow(11_001), None);
        assert_eq!(t.allow(15_500), Some(1));
    }
}
