//! The network actor: the one owner of the libp2p `Swarm` and the gossip [`Engine`].
//!
//! Everything else talks to it through a cloneable [`NetHandle`] that sends a
//! [`Command`] with a oneshot reply. A closed command channel means shut down.
//!
//! Gossip runs on our own libp2p behaviour ([`gossip`]): per connection one outbound
//! stream (`/tocsin/gossip/1`) fed from a bounded queue, and one inbound stream whose
//! length prefixes are checked against `MAX_FRAME_BYTES` before a frame is read. A slow
//! or failing peer only ever fills its own queue; frames beyond it are dropped and
//! counted, never waited for.

mod commands;
pub mod fair;
pub mod gossip;
mod handle;
mod metrics;
mod state;
pub mod trust;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, noise, ping, tcp, yamux, Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;
use rand::Rng;
use tocsin_proto::api::TrustChanged;
use tocsin_proto::{AlertId, Frame, PublicKey, SignedAlert, SigningKey, VerifiedAlert};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

pub use handle::{Command, IssueError, Issued, NetHandle, NetStatus, PeerInfo, COMMAND_CHANNEL};
pub use metrics::Metrics;
pub use trust::{ChangedBy, TrustChange, TrustError, TrustTable};

use crate::config::Config;
use crate::engine::{Action, Engine, Event, KnownAlert, Timer};
use crate::keys::{key_of_peer, peer_id};
use crate::store::{Receipt, Store, TrustCommit, TrustEntry};
use state::{StateJob, StateWriter};
use trust::TrustReply;

/// Frames queued for one peer's writer. A peer that falls this far behind loses frames
/// (counted) rather than slowing the node; catch-up repairs what it missed.
pub const PEER_WRITE_QUEUE: usize = 4096;
/// Messages queued from the actor's helper tasks (store commits, signing, the state
/// writer) back into its loop.
pub const INBOUND_QUEUE: usize = 4096;
/// At most this many refused remote addresses are remembered for logging.
const MAX_REFUSED_LOGGED: usize = 1024;
/// How long start-up waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(2);
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

/// The libp2p behaviours of a node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses every connection from a key that is not trusted (unknown, blocked, banned
    /// or partitioned) right after the Noise handshake, before any protocol stream.
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    /// The gossip streams for `/tocsin/gossip/1`.
    gossip: gossip::Behaviour,
    /// Liveness checks, so dead connections are noticed and redialled.
    ping: ping::Behaviour,
}

/// What the actor's helpers (store tasks, signing, the state writer) send back into
/// its loop.
enum Inbound {
    StoreFailed(AlertId),
    /// Stored alerts loaded for one peer (catch-up), encoded as frames, each with its
    /// origin's lane.
    Loaded {
        peer: PeerId,
        frames: Vec<(u64, Vec<u8>)>,
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
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NetTimer {
    Engine(TimerKey),
    Redial(PeerId),
    Unban(PeerId),
}

/// `Timer` is not `Ord`; timers are kept in a heap by (time, sequence) with the timer
/// itself in a side table.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TimerKey(u64);

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
            allow: allow_block_list::Behaviour::default(),
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
    /// Set once the stored alerts are loaded and the listeners report their addresses.
    ready: Arc<std::sync::atomic::AtomicBool>,
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
        // The stored alerts are loaded by `run`, off the caller: the API serves while
        // they load.
        let mut engine = Engine::new(me, store.epoch(), cfg.net.gossip.clone());
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
            });
            let commit = trust.plan(&change, &seeded_by, crate::now_ms())?;
            store.commit_trust(&commit)?;
            trust.apply(&commit);
        }
        for e in trust.list() {
            engine.load_trust(e.key, e.level);
            if let Some(cursor) = store.cursor(&e.key)? {
                engine.load_cursor(e.key, cursor.0, cursor.1);
            }
        }
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let state = StateWriter::start(store.clone(), inbound_tx.clone())
            .map_err(|e| anyhow::anyhow!("cannot start the state writer thread: {e}"))?;
        Ok(NetActor {
            swarm,
            engine,
            store,
            metrics,
            commands,
            inbound_tx,
            inbound_rx,
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
        })
    }

    /// The flag this actor sets once it is ready (readiness: `GET /v1/ready`).
    pub fn ready_flag(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
        self.ready = flag;
    }

    /// Loads the stored alerts into the engine (on the blocking pool; the store
    /// quarantines records that no longer decode), then runs until the command channel
    /// closes (every handle dropped) or `shutdown` resolves. Commands sent meanwhile
    /// wait in the channel. Fails only if the stored alerts cannot be read.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        // Subscribed before the load: an alert committed meanwhile is in both, and the
        // engine takes the second copy as a no-op.
        let mut committed = self.store.subscribe();
        let started = std::time::Instant::now();
        let quarantined_before = self.store.read(|s| s.quarantined()).await?;
        let metas = self.store.read(|s| s.all_meta()).await?;
        let quarantined = self.store.read(|s| s.quarantined()).await?;
        self.metrics
            .store_quarantined
            .set(i64::try_from(quarantined).unwrap_or(i64::MAX));
        if quarantined > quarantined_before {
            // The damaged alerts are in peers' logs before our cursors on them: read
            // every peer's log again from the start (only what is missing is fetched).
            warn!(
                newly = quarantined - quarantined_before,
                "damaged alerts quarantined: catch-up re-reads every peer's log to fetch them again"
            );
            self.engine.forget_cursors();
        }
        let loaded = metas.len();
        for meta in metas {
            let known = KnownAlert {
                alert: meta.alert,
                hops: meta.receipt.hops,
                from: meta.receipt.from,
            };
            self.engine.load_alert(meta.seq, known);
        }
        info!(
            alerts = loaded,
            ms = started.elapsed().as_millis() as u64,
            "stored alerts loaded; gossip starts"
        );
        // Learn the addresses we listen on before answering commands, so that the
        // first `GET /v1/net` already lists them (port 0 gets its real port here).
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while self.swarm.listeners().count() < self.cfg.net.listen.len() {
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
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync_log(),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = sleep => self.fire_timers(),
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
        Ok(())
    }

    /// After missing store notifications, has the state writer re-read the log so the
    /// engine's log has no gaps (pages come back as [`Inbound::LogPage`]).
    fn resync_log(&mut self) {
        if self.state.send(StateJob::ResyncLog).is_err() {
            warn!("the state writer is gone; cannot resync the log");
        }
    }

    fn feed(&mut self, event: Event) {
        let now = crate::now_ms();
        let actions = self.engine.handle(event, now);
        for a in actions {
            self.act(a, now);
        }
    }

    fn act(&mut self, action: Action, now: u64) {
        match action {
            Action::Send { peer, frame } => self.send_frame(&peer, &frame),
            Action::SendStored { peer, alerts } => {
                let Some(pid) = peer_id(&peer).filter(|p| self.connected.contains(p)) else {
                    return;
                };
                let store = self.store.clone();
                let inbound = self.inbound_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let mut frames = Vec::with_capacity(alerts.len());
                    for (id, hops) in alerts {
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
                    let _ = inbound.blocking_send(Inbound::Loaded { peer: pid, frames });
                });
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
                tokio::spawn(async move {
                    if let Err(e) = store.insert(*alert, receipt).await {
                        warn!(error = %e, alert = %id.fmt_short(), "store commit failed; the alert will be fetched again by catch-up");
                        let _ = inbound.send(Inbound::StoreFailed(id)).await;
                    }
                });
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
            Action::PauseReading { peer, until } => {
                if let Some(pid) = peer_id(&peer) {
                    let pause = Duration::from_millis(until.saturating_sub(now));
                    self.swarm.behaviour_mut().gossip.pause_reading(&pid, pause);
                }
            }
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
        let Some(pid) = peer_id(peer).filter(|p| self.connected.contains(p)) else {
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
            }
        }
    }

    /// Makes the allow-list and dialling match the trust table for one key.
    fn apply_trust(&mut self, key: PublicKey) {
        let Some(pid) = peer_id(&key) else { return };
        let now = crate::now_ms();
        let allowed = self.engine.may_connect(&key, now) && !self.partitioned.contains(&key);
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
        let (initial, max) = (
            self.cfg.net.dial_backoff_initial_ms,
            self.cfg.net.dial_backoff_max_ms,
        );
        let Some(r) = self.redial.get_mut(&pid) else {
            return;
        };
        let base = initial.saturating_mul(1u64 << r.attempt.min(20)).min(max);
        r.attempt = r.attempt.saturating_add(1);
        // ±25% jitter so that a federation restarting together does not redial in step.
        let jitter = rand::thread_rng().gen_range(0.75..1.25);
        let delay = (base as f64 * jitter) as u64;
        self.timers
            .push(Reverse((crate::now_ms() + delay, NetTimer::Redial(pid))));
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id: pid,
                num_established,
                endpoint,
                ..
            } => {
                let Some(key) = key_of_peer(&pid) else {
                    let _ = self.swarm.disconnect_peer_id(pid);
                    return;
                };
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
                let Some(key) = key_of_peer(&pid) else { return };
                let cause = cause.map(|c| c.to_string());
                if self.sessions.remove(&pid) {
                    info!(peer = %key.fmt_short(), ?cause, "peer disconnected");
                } else {
                    debug!(peer = %key.fmt_short(), ?cause, "peer closed the connection before any gossip");
                }
                if self.connected.remove(&pid) {
                    self.metrics.peers_connected.dec();
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
                self.ensure_connected(peer, key);
                if self.sessions.insert(peer) {
                    // The peer speaks to us: the link is really up, so a later drop
                    // redials quickly again.
                    if let Some(r) = self.redial.get_mut(&peer) {
                        r.attempt = 0;
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
        if !self.swarm.is_connected(&pid) || !self.connected.insert(pid) {
            return;
        }
        self.metrics.peers_connected.inc();
        self.metrics.peer_connects.inc();
        self.feed(Event::PeerConnected(key));
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::StoreFailed(id) => self.feed(Event::StoreFailed(vec![id])),
            Inbound::Loaded { peer, frames } => {
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
            Inbound::Signed { alert, reply } => self.on_signed(alert, reply),
            Inbound::TrustCommitted {
                commit,
                result,
                reply,
            } => self.on_trust_committed(*commit, result, reply),
            Inbound::LogPage(page) => self.feed(Event::Committed(page)),
        }
    }
}
