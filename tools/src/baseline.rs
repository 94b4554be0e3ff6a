//! The gossipsub baseline of `tocsin-cluster bench`: one plain libp2p gossipsub node per
//! process, driven over its stdin and stdout, so that the baseline runs as separate
//! processes on the same transport stack as `tocsind` (TCP + Noise + Yamux, with
//! libp2p's bandwidth counters).
//!
//! # Line protocol
//! The node listens on `127.0.0.1` and prints one JSON object per line on stdout. Its
//! first line is `{"event":"listening","peer_id":…,"addr":…}`. It then reads commands,
//! one per line, on stdin:
//!
//! | command | what it does | answer |
//! |---|---|---|
//! | `dial <multiaddr>` | dials a peer (only `/ip4/127.0.0.1/…` is accepted) | `error` line if the dial cannot start |
//! | `publish <id> <size>` | publishes `size` bytes carrying `id` and the publish time | `error` line if gossipsub refuses |
//! | `stats` | reports | one `stats` line (below) |
//! | `quit` | exits | none |
//!
//! Stdin closing (the bench exited or died) also ends the node.
//!
//! A `stats` line: `{"event":"stats","peers":P,"mesh_peers":M,"published":N,
//! "deliveries":[[id,publish_us,receive_us],…],"bytes_out":B,"bytes_in":B}`, where
//! times are unix microseconds on this machine's clock and bytes are the sums of
//! `libp2p_bandwidth_bytes_total` by direction.
//!
//! # Gossipsub settings
//! [`config`] is `gossipsub::ConfigBuilder::default()` (mesh degree D = 6, D_lo = 5,
//! D_hi = 12, D_out = 2, heartbeat 1 s, flood publishing, strict validation), with
//! messages signed by the node key (`MessageAuthenticity::Signed`). Nothing else is
//! changed unless `--mesh-n D` is given (see [`GossipsubNodeArgs::mesh_n`]).

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

/// The one topic every baseline node subscribes and publishes to.
pub const TOPIC: &str = "tocsin-bench";

/// Bytes of a published message before the padding: the id and the publish time
/// (both big-endian u64).
pub const HEADER_BYTES: usize = 16;

/// How long an idle connection is kept, as in `tocsind`.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Options of one baseline node (`tocsin-cluster gossipsub-node`, hidden: the bench
/// starts these itself).
#[derive(Debug, Clone, clap::Args)]
pub struct GossipsubNodeArgs {
    /// Loopback TCP port to listen on; 0 picks a free one (printed on the first line).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Mesh degree D. 0 keeps gossipsub's defaults (D = 6, D_lo = 5, D_hi = 12,
    /// D_out = 2); otherwise D_lo = max(1, D − 1), D_hi = 2·D, D_out = min(D / 2, D_lo).
    #[arg(long, default_value_t = 0)]
    pub mesh_n: usize,
}

/// The gossipsub configuration for `mesh_n` (0 = defaults): see the module docs.
pub fn config(mesh_n: usize) -> Result<gossipsub::Config> {
    let mut b = gossipsub::ConfigBuilder::default();
    if mesh_n > 0 {
        let low = mesh_n.saturating_sub(1).max(1);
        b.mesh_n(mesh_n)
            .mesh_n_low(low)
            .mesh_n_high(2 * mesh_n)
            .mesh_outbound_min((mesh_n / 2).min(low));
    }
    b.build()
        .map_err(|e| anyhow!("invalid gossipsub configuration for D = {mesh_n}: {e}"))
}

/// Unix time in microseconds.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The payload of message `id`: the id, the publish time, and zero padding up to
/// `size` bytes (at least [`HEADER_BYTES`]).
pub fn payload(id: u64, published_us: u64, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size.max(HEADER_BYTES));
    data.extend_from_slice(&id.to_be_bytes());
    data.extend_from_slice(&published_us.to_be_bytes());
    data.resize(size.max(HEADER_BYTES), 0);
    data
}

/// The id and publish time of a payload built by [`payload`].
pub fn parse_payload(data: &[u8]) -> Option<(u64, u64)> {
    let id = u64::from_be_bytes(data.get(0..8)?.try_into().ok()?);
    let at = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
    Some((id, at))
}

/// Sums the samples of the metric family `name` (with or without a registry prefix, so
/// `libp2p_bandwidth_bytes_total` also matches `_libp2p_bandwidth_bytes_total`) whose
/// labels include every `key="value"` pair of `labels` (values compared ignoring ASCII
/// case), in a Prometheus text exposition.
pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name && !metric.ends_with(&format!("_{name}")) {
                return None;
            }
            // libp2p writes `direction="Outbound"`: label values match case-insensitively.
            let label_text = label_text.to_ascii_lowercase();
            let all = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{}\"", v.to_ascii_lowercase())));
            if !all {
                return None;
            }
            value.trim().parse::<f64>().ok()
        })
        .fold(0.0, |a, b| a + b)
}

/// Samples of the metric family `name` grouped by the value of label `label`, as
/// `(label value, value)`, in a Prometheus text exposition.
pub fn metric_by_label(text: &str, name: &str, label: &str) -> Vec<(String, f64)> {
    let key = format!("{label}=\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = series.split_once('{')?;
            if metric != name && !metric.ends_with(&format!("_{name}")) {
                return None;
            }
            let start = label_text.find(&key)? + key.len();
            let end = label_text[start..].find('"')? + start;
            Some((
                label_text[start..end].to_string(),
                value.trim().parse::<f64>().ok()?,
            ))
        })
        .collect()
}

/// The node: the swarm and what it has recorded.
struct Node {
    swarm: Swarm<gossipsub::Behaviour>,
    registry: Registry,
    topic: IdentTopic,
    connected: HashSet<PeerId>,
    /// `(id, publish_us, receive_us)` of every message received.
    deliveries: Vec<(u64, u64, u64)>,
    published: u64,
}

/// Writes one JSON line on stdout. A closed stdout means the bench is gone.
fn emit(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}").context("stdout closed")?;
    out.flush().context("stdout closed")
}

fn emit_error(message: String) -> Result<()> {
    emit(&json!({"event": "error", "message": message}))
}

impl Node {
    fn new(args: &GossipsubNodeArgs) -> Result<Node> {
        let mut registry = Registry::default();
        let cfg = config(args.mesh_n)?;
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .context("cannot set up TCP + Noise + Yamux")?
            .with_bandwidth_metrics(&mut registry)
            .with_behaviour(|key| {
                gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), cfg)
                    .map_err(|e| e.into())
            })
            .map_err(|e| anyhow!("cannot create the gossipsub behaviour: {e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
            .build();
        let topic = IdentTopic::new(TOPIC);
        swarm
            .behaviour_mut()
            .subscribe(&topic)
            .map_err(|e| anyhow!("cannot subscribe to {TOPIC}: {e}"))?;
        let listen: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", args.port)
            .parse()
            .context("listen address")?;
        swarm
            .listen_on(listen.clone())
            .with_context(|| format!("cannot listen on {listen}"))?;
        Ok(Node {
            swarm,
            registry,
            topic,
            connected: HashSet::new(),
            deliveries: Vec::new(),
            published: 0,
        })
    }

    fn bandwidth(&self) -> Result<(f64, f64)> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .context("cannot encode the metrics")?;
        let name = "libp2p_bandwidth_bytes_total";
        Ok((
            sum_metric(&text, name, &[("direction", "outbound")]),
            sum_metric(&text, name, &[("direction", "inbound")]),
        ))
    }

    /// Runs one command; false to exit.
    fn command(&mut self, line: &str) -> Result<bool> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (None, _, _) => {}
            (Some("quit"), _, _) => return Ok(false),
            (Some("dial"), Some(addr), None) => match addr.parse::<Multiaddr>() {
                Ok(ma) if matches!(ma.iter().next(), Some(Protocol::Ip4(ip)) if ip.is_loopback()) => {
                    if let Err(e) = self.swarm.dial(ma) {
                        emit_error(format!("cannot dial {addr}: {e}"))?;
                    }
                }
                Ok(_) => emit_error(format!("refusing to dial {addr}: not 127.0.0.0/8"))?,
                Err(e) => emit_error(format!("bad multiaddr {addr:?}: {e}"))?,
            },
            (Some("publish"), Some(id), Some(size)) => {
                let (Ok(id), Ok(size)) = (id.parse::<u64>(), size.parse::<usize>()) else {
                    emit_error(format!("bad command {line:?}: publish <id> <size>"))?;
                    return Ok(true);
                };
                let data = payload(id, now_us(), size);
                match self.swarm.behaviour_mut().publish(self.topic.clone(), data) {
                    Ok(_) => self.published += 1,
                    Err(e) => emit_error(format!("publish {id} failed: {e}"))?,
                }
            }
            (Some("stats"), None, _) => {
                let (out, inb) = self.bandwidth()?;
                let mesh = self
                    .swarm
                    .behaviour()
                    .mesh_peers(&self.topic.hash())
                    .count();
                emit(&json!({
                    "event": "stats",
                    "peer_id": self.swarm.local_peer_id().to_string(),
                    "peers": self.connected.len(),
                    "mesh_peers": mesh,
                    "published": self.published,
                    "deliveries": self.deliveries,
                    "bytes_out": out,
                    "bytes_in": inb,
                }))?;
            }
            _ => emit_error(format!(
                "unknown command {line:?}: use dial, publish, stats or quit"
            ))?,
        }
        Ok(true)
    }

    fn swarm_event(&mut self, event: SwarmEvent<gossipsub::Event>) -> Result<()> {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => emit(&json!({
                "event": "listening",
                "peer_id": self.swarm.local_peer_id().to_string(),
                "addr": address.to_string(),
            }))?,
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.connected.insert(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => emit_error(format!(
                "dial to {} failed: {error}",
                peer_id.map(|p| p.to_string()).unwrap_or_default()
            ))?,
            SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) => {
                let received = now_us();
                match parse_payload(&message.data) {
                    Some((id, published)) => self.deliveries.push((id, published, received)),
                    None => emit_error("received a message without an id".into())?,
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Runs one baseline node until `quit` or the end of stdin (see the module docs).
pub async fn gossipsub_node_main(args: &GossipsubNodeArgs) -> Result<()> {
    let mut node = Node::new(args)?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => {
                match line.context("cannot read stdin")? {
                    Some(line) => {
                        if !node.command(line.trim())? {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                }
            }
            event = node.swarm.select_next_some() => node.swarm_event(event)?,
        }
    }
}

/// Checks that a `listening` line names a loopback TCP address and returns
/// `(peer_id, addr)`.
pub fn parse_listening(v: &Value) -> Result<(String, String)> {
    let peer = v["peer_id"]
        .as_str()
        .ok_or_else(|| anyhow!("`listening` line without peer_id: {v}"))?;
    let addr = v["addr"]
        .as_str()
        .ok_or_else(|| anyhow!("`listening` line without addr: {v}"))?;
    if !addr.starts_with("/ip4/127.0.0.1/tcp/") {
        bail!("baseline node listens on {addr}, not on 127.0.0.1");
    }
    Ok((peer.to_string(), addr.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_is_padded() {
        let p = payload(42, 1_700_000_000_000_000, 600);
        assert_eq!(p.len(), 600);
        assert_eq!(parse_payload(&p), Some((42, 1_700_000_000_000_000)));
        assert_eq!(payload(1, 2, 3).len(), HEADER_BYTES);
        assert_eq!(parse_payload(&[0; 10]), None);
    }

    #[test]
    fn configs_build() {
        assert_eq!(config(0).unwrap().mesh_n(), 6);
        for d in 1..=8 {
            let c = config(d).unwrap();
            assert_eq!(c.mesh_n(), d);
            assert!(c.mesh_outbound_min() <= c.mesh_n_low());
        }
    }

    #[test]
    fn metrics_are_summed_by_label() {
        let text = "# HELP x\n\
            _libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Outbound\"} 100\n\
            _libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"inbound\"} 7\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip4/udp/quic-v1\",direction=\"outbound\"} 5\n\
            other_libp2p_bandwidth_bytes_total_x{direction=\"outbound\"} 1000\n\
            _tocsin_frames_sent_total{kind=\"alert\"} 3\n\
            _tocsin_frames_sent_total{kind=\"announce\"} 9\n";
        let name = "libp2p_bandwidth_bytes_total";
        assert_eq!(sum_metric(text, name, &[("direction", "outbound")]), 105.0);
        assert_eq!(sum_metric(text, name, &[("direction", "inbound")]), 7.0);
        assert_eq!(
            metric_by_label(text, "tocsin_frames_sent_total", "kind"),
            vec![("alert".to_string(), 3.0), ("announce".to_string(), 9.0)]
        );
    }
}
