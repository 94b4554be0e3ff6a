//! The network actor: the one owner of the libp2p `Swarm` and the gossip [`Engine`].
//!
//! Everything else talks to it through a cloneable [`NetHandle`] that sends a
//! [`Command`] with a oneshot reply. A closed command channel means shut down.
//!
//! Per connected peer there is one outbound gossip stream (`/tocsin/gossip/1`) written by
//! a writer task fed from a bounded queue, and one inbound stream read by a reader task
//! that checks each length prefix against `MAX_FRAME_BYTES` before reading the frame. A
//! slow or failing peer only ever fills its own queue; frames beyond it are dropped and
//! counted, never waited for.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::Rng;
use serde::Serialize;
use tocsin_proto::wire::{frame_len, with_len_prefix, GOSSIP_PROTOCOL};
use tocsin_proto::{AlertId, Frame, PublicKey, SignedAlert, TrustLevel};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::engine::{Action, Engine, EngineConfig, Event, KnownAlert, PeerReport, Timer};
use crate::keys::{key_of_peer, peer_id};
use crate::store::{AuditRecord, Receipt, Store, TrustEntry};

/// Capacity of the command channel into the network actor.
pub const COMMAND_CHANNEL: usize = 1024;
/// Frames queued for one peer's writer. A peer that falls this far behind loses frames
/// (counted) rather than slowing the node; catch-up repairs what it missed.
pub const PEER_WRITE_QUEUE: usize = 4096;
/// Frames queued from all reader tasks into the actor. Readers wait when it is full,
/// which back-pressures the sending peers' streams, not the actor.
pub const INBOUND_QUEUE: usize = 4096;
/// How long an idle connection is kept open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Commands to the network actor.
#[derive(Debug)]
pub enum Command {
    /// A locally issued alert: gossip it. `seq` is 0 while its commit is in flight.
    Publish { alert: Box<SignedAlert>, seq: u64 },
    /// The local commit of a published alert failed: forget it (catch-up and peers will
    /// not be offered what this node does not hold).
    Unpublish(AlertId),
    /// Add or change a trust entry (persisted, audited, applied at once).
    TrustSet {
        entry: TrustEntry,
        reply: oneshot::Sender<Result<Option<TrustLevel>, String>>,
    },
    /// Remove a trust entry.
    TrustRemove {
        key: PublicKey,
        reply: oneshot::Sender<Result<Option<TrustLevel>, String>>,
    },
    /// Connected and known peers with their counters.
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    /// Listen addresses and connection counts.
    Status { reply: oneshot::Sender<NetStatus> },
    /// Test control: drop and refuse these peers until healed.
    Partition {
        peers: Vec<PublicKey>,
        reply: oneshot::Sender<()>,
    },
    /// Test control: undo every partition.
    Heal { reply: oneshot::Sender<()> },
}

/// A peer row for `tocsin peers`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub key: PublicKey,
    pub peer_id: String,
    pub name: String,
    pub level: Option<TrustLevel>,
    pub addrs: Vec<String>,
    /// Unix ms of the last frame or connection event.
    pub last_seen: Option<u64>,
    #[serde(flatten)]
    pub report: PeerReport,
}

/// Network status for `tocsin status`.
#[derive(Debug, Clone, Serialize)]
pub struct NetStatus {
    pub listen: Vec<String>,
    pub connected: usize,
    pub known_alerts: usize,
    /// Incoming connections refused since start (unknown, blocked, banned, partitioned).
    pub connections_refused: u64,
}

/// A cloneable handle to the network actor.
#[derive(Clone, Debug)]
pub struct NetHandle {
    tx: mpsc::Sender<Command>,
}

impl NetHandle {
    /// A handle and the receiving end for the actor.
    pub fn channel() -> (NetHandle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_CHANNEL);
        (NetHandle { tx }, rx)
    }

    /// Hands a local alert to the network for gossip, with its sequence number if it is
    /// committed or 0 while the commit is in flight (the API publishes in parallel with
    /// the commit, so the fsync is not on the gossip path). If the actor is gone
    /// (shutting down), a committed alert stays stored and peers get it by catch-up.
    pub async fn publish(&self, alert: SignedAlert, seq: u64) {
        let _ = self
            .tx
            .send(Command::Publish {
                alert: Box::new(alert),
                seq,
            })
            .await;
    }

    /// Withdraws a published alert whose local commit failed.
    pub async fn unpublish(&self, id: AlertId) {
        let _ = self.tx.send(Command::Unpublish(id)).await;
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Adds or changes a trust entry; returns the previous level.
    pub async fn trust_set(&self, entry: TrustEntry) -> Result<Option<TrustLevel>, String> {
        self.ask(|reply| Command::TrustSet { entry, reply })
            .await
            .unwrap_or_else(|| Err("the network actor is shutting down".into()))
    }

    /// Removes a trust entry; returns the previous level.
    pub async fn trust_remove(&self, key: PublicKey) -> Result<Option<TrustLevel>, String> {
        self.ask(|reply| Command::TrustRemove { key, reply })
            .await
            .unwrap_or_else(|| Err("the network actor is shutting down".into()))
    }

    /// Peers and their counters.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.ask(|reply| Command::Peers { reply })
            .await
            .unwrap_or_default()
    }

    /// Network status.
    pub async fn status(&self) -> Option<NetStatus> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Test control: drop and refuse these peers.
    pub async fn partition(&self, peers: Vec<PublicKey>) {
        let _ = self.ask(|reply| Command::Partition { peers, reply }).await;
    }

    /// Test control: undo partitions.
    pub async fn heal(&self) {
        let _ = self.ask(|reply| Command::Heal { reply }).await;
    }
}

/// The libp2p behaviours of a node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses every connection from a key that is not trusted (unknown, blocked, banned
    /// or partitioned) right after the Noise handshake, before any protocol stream.
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    /// Raw gossip streams for `/tocsin/gossip/1`.
    stream: libp2p_stream::Behaviour,
    /// Liveness checks, so dead connections are noticed and redialled.
    ping: ping::Behaviour,
}

/// Node metrics, registered in the shared Prometheus registry.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Alerts accepted from peers.
    pub alerts_received: Counter,
    /// Alerts sent in full to peers.
    pub frames_sent: Family<Vec<(String, String)>, Counter>,
    /// Rejections, by reason.
    pub rejections: Family<Vec<(String, String)>, Counter>,
    /// Incoming connections refused (unknown, blocked, banned).
    pub connections_refused: Counter,
    /// Frames dropped because a peer's write queue was full.
    pub write_queue_drops: Counter,
    /// Connected peers.
    pub peers_connected: Gauge,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tocsin_alerts_received",
            "Alerts accepted from peers",
            self.alerts_received.clone(),
        );
        registry.register(
            "tocsin_frames_sent",
            "Gossip frames sent, by kind",
            self.frames_sent.clone(),
        );
        registry.register(
            "tocsin_rejections",
            "Frames and alerts refused, by reason",
            self.rejections.clone(),
        );
        registry.register(
            "tocsin_connections_refused",
            "Incoming connections refused (unknown, blocked, banned or partitioned key)",
            self.connections_refused.clone(),
        );
        registry.register(
            "tocsin_write_queue_drops",
            "Frames dropped because a peer's write queue was full",
            self.write_queue_drops.clone(),
        );
        registry.register(
            "tocsin_peers_connected",
            "Connected peers",
            self.peers_connected.clone(),
        );
    }
}

enum Inbound {
    Frame { peer: PeerId, bytes: Vec<u8> },
    Oversized { peer: PeerId },
    StoreFailed(AlertId),
    WriterFailed { peer: PeerId },
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
            stream: libp2p_stream::Behaviour::new(),
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
    writers: HashMap<PeerId, mpsc::Sender<Vec<u8>>>,
    timers: BinaryHeap<Reverse<(u64, NetTimer)>>,
    engine_timers: HashMap<u64, Timer>,
    next_timer: u64,
    redial: HashMap<PeerId, Redial>,
    trust: HashMap<PublicKey, TrustEntry>,
    partitioned: HashSet<PublicKey>,
    last_seen: HashMap<PublicKey, u64>,
    cfg: Config,
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
            swarm
                .listen_on(ma.clone())
                .map_err(|e| anyhow::anyhow!("cannot listen on {ma} (net.listen): {e}"))?;
        }
        let n = &cfg.net;
        let mut engine = Engine::new(
            me,
            store.epoch(),
            EngineConfig {
                announce_interval_ms: n.announce_interval_ms,
                graft_timeout_ms: n.graft_timeout_ms,
                peer_alerts_per_sec: n.peer_alerts_per_sec,
                peer_alert_burst: n.peer_alert_burst,
                peer_bytes_per_sec: n.peer_bytes_per_sec,
                peer_byte_burst: n.peer_byte_burst,
                penalty_threshold: n.penalty_threshold,
                ban_ms: n.ban_secs.saturating_mul(1000),
                envelope_cache: n.envelope_cache,
            },
        );
        for meta in store.all_meta()? {
            engine.load_alert(
                meta.seq,
                KnownAlert {
                    id: meta.id,
                    origin: meta.origin,
                    tlp: meta.tlp,
                    recipients: meta.recipients,
                    expires_at: meta.expires_at,
                    kind: meta.kind,
                    replaces: meta.replaces,
                    hops: meta.receipt.hops,
                    from: meta.receipt.from,
                },
            );
        }
        // Trust: the database wins; config entries seed keys it does not have yet.
        let mut trust: HashMap<PublicKey, TrustEntry> = store
            .trust_entries()?
            .into_iter()
            .map(|e| (e.key, e))
            .collect();
        // Keys changed through the API (including removals) are never re-seeded.
        let api_touched: HashSet<PublicKey> = store
            .audit_log(usize::MAX)?
            .into_iter()
            .filter(|r| r.source == "api")
            .map(|r| r.key)
            .collect();
        for p in &cfg.peers {
            let key = p.public_key()?;
            if trust.contains_key(&key) || api_touched.contains(&key) {
                continue;
            }
            let entry = TrustEntry {
                key,
                level: p.level,
                name: p.name.clone(),
                addrs: p.addrs.clone(),
            };
            store.put_trust(&entry)?;
            store.append_audit(&AuditRecord {
                at: crate::now_ms(),
                key,
                old: None,
                new: Some(p.level),
                source: "config".into(),
            })?;
            trust.insert(key, entry);
        }
        for e in trust.values() {
            engine.load_trust(e.key, e.level);
            if let Some(cursor) = store.cursor(&e.key)? {
                engine.load_cursor(e.key, cursor.0, cursor.1);
            }
        }
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        Ok(NetActor {
            swarm,
            engine,
            store,
            metrics,
            commands,
            inbound_tx,
            inbound_rx,
            writers: HashMap::new(),
            timers: BinaryHeap::new(),
            engine_timers: HashMap::new(),
            next_timer: 0,
            redial: HashMap::new(),
            trust,
            partitioned: HashSet::new(),
            last_seen: HashMap::new(),
            cfg,
        })
    }

    /// Runs until the command channel closes (every handle dropped) or `shutdown`
    /// resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut incoming = match self
            .swarm
            .behaviour()
            .stream
            .new_control()
            .accept(StreamProtocol::new(GOSSIP_PROTOCOL))
        {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot register the gossip protocol");
                return;
            }
        };
        // libp2p-stream hands inbound streams over through a channel with a single
        // slot and drops a stream that finds it full, so a dedicated task drains it.
        let inbound = self.inbound_tx.clone();
        let acceptor = tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                spawn_reader(inbound.clone(), peer, stream);
            }
        });
        let mut committed = self.store.subscribe();
        let keys: Vec<PublicKey> = self.trust.keys().copied().collect();
        for key in keys {
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
                    Some(cmd) => self.on_command(cmd).await,
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
        acceptor.abort();
        info!("network actor stopped");
    }

    /// After missing store notifications, re-reads the log tail so the engine's log has
    /// no gaps.
    fn resync_log(&mut self) {
        let mut after = 0;
        loop {
            match self.store.log_after(after, 4096) {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    after = page.last().map_or(after, |(s, _)| *s);
                    self.feed(Event::Committed(page));
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the log after a lag");
                    break;
                }
            }
        }
    }

    fn feed(&mut self, event: Event) {
        let now = crate::now_ms();
        let actions = self.engine.handle(event, now);
        for r in self.engine.take_rejections() {
            self.metrics
                .rejections
                .get_or_create(&vec![("reason".into(), r.reason.into())])
                .inc();
            if r.penalised {
                warn!(peer = %r.peer.fmt_short(), reason = r.reason, "peer penalised for invalid data");
            } else {
                debug!(peer = %r.peer.fmt_short(), reason = r.reason, "alert refused");
            }
        }
        for a in actions {
            self.act(a, now);
        }
    }

    fn act(&mut self, action: Action, now: u64) {
        match action {
            Action::Send { peer, frame } => self.send_frame(&peer, &frame),
            Action::SendStored { peer, alerts } => {
                let Some(writer) = peer_id(&peer).and_then(|p| self.writers.get(&p).cloned())
                else {
                    return;
                };
                let store = self.store.clone();
                let drops = self.metrics.write_queue_drops.clone();
                tokio::task::spawn_blocking(move || {
                    for (id, hops) in alerts {
                        match store.envelope(&id) {
                            Ok(Some(envelope)) => {
                                let frame = Frame::Alert { hops, envelope };
                                if let Ok(bytes) = frame.encode() {
                                    if writer.try_send(bytes).is_err() {
                                        drops.inc();
                                    }
                                }
                            }
                            Ok(None) => {}
                            Err(e) => {
                                warn!(error = %e, alert = %id.fmt_short(), "cannot load alert for a peer")
                            }
                        }
                    }
                });
            }
            Action::Store { alert, from, hops } => {
                self.metrics.alerts_received.inc();
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
            Action::SaveCursor { peer, epoch, seq } => {
                if let Err(e) = self.store.set_cursor(&peer, epoch, seq) {
                    warn!(error = %e, peer = %peer.fmt_short(), "cannot save catch-up cursor");
                }
            }
        }
    }

    fn send_frame(&mut self, peer: &PublicKey, frame: &Frame) {
        let Some(writer) = peer_id(peer).and_then(|p| self.writers.get(&p)) else {
            return;
        };
        match frame.encode() {
            Ok(bytes) => {
                self.metrics
                    .frames_sent
                    .get_or_create(&vec![("kind".into(), frame.name().into())])
                    .inc();
                if writer.try_send(bytes).is_err() {
                    self.metrics.write_queue_drops.inc();
                }
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
                if let Some(r) = self.redial.get_mut(&pid) {
                    r.attempt = 0;
                }
                if num_established.get() == 1 {
                    info!(peer = %key.fmt_short(), addr = %endpoint.get_remote_address(), "peer connected");
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
                info!(peer = %key.fmt_short(), cause = ?cause.map(|c| c.to_string()), "peer disconnected");
                self.metrics.peers_connected.dec();
                self.writers.remove(&pid);
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
                info!(addr = %send_back_addr, error = %error, "incoming connection refused");
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
            _ => {}
        }
    }

    /// Registers a newly connected peer once: its writer and the engine's
    /// `PeerConnected`, whichever of the connection event and its first frame comes first.
    fn ensure_connected(&mut self, pid: PeerId, key: PublicKey) {
        if self.writers.contains_key(&pid) {
            return;
        }
        self.metrics.peers_connected.inc();
        self.spawn_writer(pid);
        self.feed(Event::PeerConnected(key));
    }

    fn spawn_writer(&mut self, pid: PeerId) {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PEER_WRITE_QUEUE);
        self.writers.insert(pid, tx);
        let mut control = self.swarm.behaviour().stream.new_control();
        let failed = self.inbound_tx.clone();
        tokio::spawn(async move {
            let result: Result<(), String> = async {
                let stream = control
                    .open_stream(pid, StreamProtocol::new(GOSSIP_PROTOCOL))
                    .await
                    .map_err(|e| format!("cannot open gossip stream: {e}"))?;
                // The peer never writes on this stream, so anything on its read side
                // means the peer dropped it: a reset (libp2p-stream drops an inbound
                // stream that arrives while another is being handed over) or a close.
                // Noticing it at once, rather than at the next write, gets the link
                // rebuilt (and the missed Hello re-sent) without waiting for traffic.
                let (mut reader, mut writer) = stream.split();
                let mut probe = [0u8; 1];
                loop {
                    let frame = tokio::select! {
                        frame = rx.recv() => frame,
                        read = reader.read(&mut probe) => {
                            return Err(match read {
                                Ok(0) => "gossip stream closed by the peer".to_string(),
                                Ok(_) => "unexpected data on the gossip stream".to_string(),
                                Err(e) => format!("gossip stream reset by the peer: {e}"),
                            });
                        }
                    };
                    let Some(frame) = frame else { break };
                    let bytes = with_len_prefix(&frame);
                    writer
                        .write_all(&bytes)
                        .await
                        .map_err(|e| format!("gossip stream write failed: {e}"))?;
                    // Flush when the queue is drained, so bursts go out in few packets.
                    if rx.is_empty() {
                        writer
                            .flush()
                            .await
                            .map_err(|e| format!("gossip stream flush failed: {e}"))?;
                    }
                }
                let _ = writer.close().await;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                debug!(peer = %pid, error = %e, "gossip writer ended");
                // A connection without a working stream is useless: rebuild it.
                let _ = failed.send(Inbound::WriterFailed { peer: pid }).await;
            }
        });
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Frame { peer, bytes } => {
                let Some(key) = key_of_peer(&peer) else {
                    return;
                };
                // A peer's first frame can overtake the ConnectionEstablished event.
                if self.swarm.is_connected(&peer) {
                    self.ensure_connected(peer, key);
                }
                self.last_seen.insert(key, crate::now_ms());
                self.feed(Event::Frame { peer: key, bytes });
            }
            Inbound::StoreFailed(id) => self.feed(Event::StoreFailed(vec![id])),
            Inbound::WriterFailed { peer } => {
                if self.writers.get(&peer).is_some_and(|w| w.is_closed()) {
                    info!(peer = %peer, "gossip stream failed; reconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            Inbound::Oversized { peer } => {
                let Some(key) = key_of_peer(&peer) else {
                    return;
                };
                warn!(peer = %key.fmt_short(), "oversized frame refused");
                self.metrics
                    .rejections
                    .get_or_create(&vec![("reason".into(), "oversized_frame".into())])
                    .inc();
                // An undecodable frame: the engine counts and penalises it.
                self.feed(Event::Frame {
                    peer: key,
                    bytes: vec![0xff],
                });
            }
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish { alert, seq } => self.feed(Event::Local { alert: *alert, seq }),
            Command::Unpublish(id) => self.feed(Event::StoreFailed(vec![id])),
            Command::TrustSet { entry, reply } => {
                let _ = reply.send(self.set_trust(Some(entry.clone()), entry.key));
            }
            Command::TrustRemove { key, reply } => {
                let _ = reply.send(self.set_trust(None, key));
            }
            Command::Peers { reply } => {
                let rows = self
                    .engine
                    .peer_reports()
                    .into_iter()
                    .map(|report| {
                        let entry = self.trust.get(&report.key);
                        PeerInfo {
                            key: report.key,
                            peer_id: crate::keys::peer_id_string(&report.key),
                            name: entry.map(|e| e.name.clone()).unwrap_or_default(),
                            level: entry.map(|e| e.level),
                            addrs: entry.map(|e| e.addrs.clone()).unwrap_or_default(),
                            last_seen: self.last_seen.get(&report.key).copied(),
                            report,
                        }
                    })
                    .collect();
                let _ = reply.send(rows);
            }
            Command::Status { reply } => {
                let _ = reply.send(NetStatus {
                    listen: self.swarm.listeners().map(ToString::to_string).collect(),
                    connected: self.swarm.connected_peers().count(),
                    known_alerts: self.engine.known_count(),
                    connections_refused: self.metrics.connections_refused.get(),
                });
            }
            Command::Partition { peers, reply } => {
                for key in peers {
                    self.partitioned.insert(key);
                    self.apply_trust(key);
                }
                let _ = reply.send(());
            }
            Command::Heal { reply } => {
                let keys: Vec<PublicKey> = self.partitioned.drain().collect();
                for key in keys {
                    self.apply_trust(key);
                }
                let _ = reply.send(());
            }
        }
    }

    fn set_trust(
        &mut self,
        entry: Option<TrustEntry>,
        key: PublicKey,
    ) -> Result<Option<TrustLevel>, String> {
        let old = self.trust.get(&key).map(|e| e.level);
        let new = entry.as_ref().map(|e| e.level);
        match &entry {
            Some(e) => self.store.put_trust(e).map_err(|e| e.to_string())?,
            None => {
                self.store.remove_trust(&key).map_err(|e| e.to_string())?;
            }
        }
        self.store
            .append_audit(&AuditRecord {
                at: crate::now_ms(),
                key,
                old,
                new,
                source: "api".into(),
            })
            .map_err(|e| e.to_string())?;
        info!(peer = %key.fmt_short(), old = ?old.map(|l| l.as_str()), new = ?new.map(|l| l.as_str()), "trust changed");
        match entry {
            Some(e) => {
                self.trust.insert(key, e);
            }
            None => {
                self.trust.remove(&key);
            }
        }
        self.feed(Event::Trust { key, level: new });
        self.apply_trust(key);
        Ok(old)
    }
}

/// Ids of alerts, for logs.
pub fn short_ids(ids: &[AlertId]) -> String {
    ids.iter()
        .map(AlertId::fmt_short)
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads length-prefixed frames from one inbound gossip stream into the actor's queue,
/// refusing an oversized length prefix before reading the frame.
fn spawn_reader(tx: mpsc::Sender<Inbound>, pid: PeerId, mut stream: libp2p::Stream) {
    tokio::spawn(async move {
        loop {
            let mut prefix = [0u8; 4];
            if stream.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let len = match frame_len(prefix) {
                Ok(len) => len,
                Err(_) => {
                    // Oversized: refuse before reading it, and drop the stream.
                    let _ = tx.send(Inbound::Oversized { peer: pid }).await;
                    return;
                }
            };
            let mut bytes = vec![0u8; len];
            if stream.read_exact(&mut bytes).await.is_err() {
                return;
            }
            if tx.send(Inbound::Frame { peer: pid, bytes }).await.is_err() {
                return;
            }
        }
    });
}
