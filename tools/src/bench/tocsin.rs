//! The tocsind run: a cluster of real nodes, publishing through the API, deliveries
//! read from each node's event stream, bytes from its `/metrics`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tocsin_proto::{AlertBody, Kind, PublicKey, Severity, SignedAlert, Tlp, FORMAT_VERSION};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::plan::Plan;
use super::report::{percentile, run_stats, RunStats};
use super::tcp::{report_tcp, tcp_bytes};
use super::{
    DRAIN, LINK_TIMEOUT, QUERY_TIMEOUT, SETTLE, START_TIMEOUT, STOP_TIMEOUT, TOCSIN_WARMUP,
};
use crate::baseline::{metric_by_label, sum_metric};
use crate::client::Client;
use crate::cluster::{Cluster, CreateOptions, NodeInfo};

/// A CLEAR alert of severity info signed by `key`, as the benches and the raw test
/// peers send them.
pub fn clear_alert(
    key: &tocsin_proto::SigningKey,
    title: String,
    text: String,
    issued_at: u64,
) -> Result<SignedAlert> {
    let body = AlertBody {
        v: FORMAT_VERSION,
        origin: PublicKey(key.verifying_key().to_bytes()),
        issued_at,
        expires_at: None,
        kind: Kind::New,
        replaces: None,
        severity: Severity::Info,
        tlp: Tlp::Clear,
        recipients: vec![],
        title,
        text,
        indicators: vec![],
        tags: vec![],
        references: vec![],
    };
    SignedAlert::sign(body, key).context("cannot build a sample alert")
}

/// Length of the padding text that makes the envelope of a bench alert `size` bytes
/// (0 if the unpadded alert is already larger), and the envelope size it gives.
pub fn text_padding(size: usize) -> Result<(usize, usize)> {
    let key = tocsin_proto::SigningKey::from_bytes(&[1u8; 32]);
    let envelope_len = |pad: usize| -> Result<usize> {
        let alert = clear_alert(
            &key,
            alert_title(0),
            "x".repeat(pad),
            crate::format::now_ms(),
        )?;
        Ok(alert.to_envelope().len())
    };
    let mut pad = size.saturating_sub(envelope_len(0)?);
    // CBOR length headers grow at 24, 256 and 65536 bytes: adjust a few times.
    for _ in 0..4 {
        let len = envelope_len(pad)?;
        if len == size || (len > size && pad == 0) {
            return Ok((pad, len));
        }
        pad = if len < size {
            pad + (size - len)
        } else {
            pad.saturating_sub(len - size)
        };
    }
    Ok((pad, envelope_len(pad)?))
}

/// Title of bench alert `k` (fixed width, so every alert has the same size).
fn alert_title(k: usize) -> String {
    format!("bench {k:08}")
}

/// `GET /metrics` on a node's API socket, within [`QUERY_TIMEOUT`].
async fn metrics(node: &NodeInfo) -> Result<String> {
    let socket = node.socket.display();
    tokio::time::timeout(QUERY_TIMEOUT, node.client().get_text("/metrics"))
        .await
        .map_err(|_| anyhow!("GET /metrics on {socket} timed out"))?
        .with_context(|| format!("GET /metrics on {socket}"))
}

/// Per-node byte and frame counters of the tocsin nodes.
#[derive(Debug, Default)]
struct Counters {
    bytes_out: f64,
    frames: HashMap<String, f64>,
}

async fn tocsin_counters(cluster: &Cluster) -> Result<Counters> {
    let mut c = Counters::default();
    for node in &cluster.nodes {
        let text = metrics(node)
            .await
            .with_context(|| format!("reading the metrics of {}", node.name))?;
        c.bytes_out += sum_metric(
            &text,
            "libp2p_bandwidth_bytes_total",
            &[("direction", "outbound")],
        );
        for (kind, v) in metric_by_label(&text, "tocsin_frames_sent_total", "kind") {
            *c.frames.entry(kind).or_default() += v;
        }
    }
    Ok(c)
}

/// One alert view from a node's event stream.
struct Seen {
    node: usize,
    id: String,
    issued_at: f64,
    received_at: f64,
    /// Received from a peer (false: issued on this node).
    relayed: bool,
    hops: u64,
}

fn parse_view(node: usize, data: &str) -> Option<Seen> {
    let v: Value = serde_json::from_str(data).ok()?;
    Some(Seen {
        node,
        id: v["id"].as_str()?.to_string(),
        issued_at: v["alert"]["issued_at"].as_u64()? as f64,
        received_at: v["provenance"]["received_at"].as_u64()? as f64,
        relayed: !v["provenance"]["from"].is_null(),
        hops: v["provenance"]["hops"].as_u64().unwrap_or_default(),
    })
}

/// Subscribes to every node's event stream; views arrive on the returned channel.
async fn watch_all(
    cluster: &Cluster,
) -> Result<(JoinSet<()>, mpsc::UnboundedReceiver<(usize, Option<Seen>)>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut readers = JoinSet::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut stream = node
            .client()
            .watch(None)
            .await
            .with_context(|| format!("cannot watch {}", node.name))?;
        let tx = tx.clone();
        readers.spawn(async move {
            loop {
                match stream.next().await {
                    Ok(Some(ev)) if ev.event == "alert" => {
                        if let Some(seen) = parse_view(i, &ev.data) {
                            if tx.send((i, Some(seen))).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        let _ = tx.send((i, None));
                        return;
                    }
                }
            }
        });
    }
    Ok((readers, rx))
}

/// What the tocsin publisher did: per alert its id and issue round trip in ms (None if
/// the issue failed), and when the last issue returned.
struct Issued {
    issued: Vec<Option<(String, f64)>>,
    last: Instant,
}

/// Alert id → (index, issue round trip in ms) of the alerts issued.
type IssuedIds = HashMap<String, (usize, f64)>;

/// Issues the alerts on schedule. Prints the issue round trips (stderr): they hold the
/// origin's durable commit, which comes before the alert is gossiped.
async fn publish_tocsin(plan: &Plan, clients: Vec<Client>, pad: usize) -> Issued {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (k, &node) in plan.senders.iter().enumerate() {
        tokio::time::sleep_until(start + plan.at(k)).await;
        let client = clients[node].clone();
        let body = json!({
            "severity": "info",
            "tlp": "CLEAR",
            "title": alert_title(k),
            "text": "x".repeat(pad),
        });
        tasks.spawn(async move {
            let t = Instant::now();
            let issued = client.issue(&body).await;
            (k, issued, t.elapsed().as_secs_f64() * 1000.0)
        });
    }
    let mut issued = vec![None; plan.alerts()];
    let mut round_trips = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((k, Ok(answer), ms)) => {
                issued[k] = Some((answer.id, ms));
                round_trips.push(ms);
            }
            Ok((k, Err(e), _)) => eprintln!("bench: tocsin: issuing alert {k} failed: {e}"),
            Err(e) => eprintln!("bench: tocsin: an issue task failed: {e}"),
        }
    }
    round_trips.sort_by(f64::total_cmp);
    eprintln!(
        "bench: tocsin: issue round trip (sign + durable commit + HTTP) p50 {:.1} ms, p99 {:.1} ms",
        percentile(&round_trips, 0.5),
        percentile(&round_trips, 0.99)
    );
    Issued {
        issued,
        last: Instant::now(),
    }
}

pub(super) async fn run_tocsin(plan: &Plan, dir: &Path) -> Result<RunStats> {
    let (pad, envelope) = text_padding(plan.size)?;
    if envelope != plan.size {
        eprintln!(
            "bench: tocsin: envelopes are {envelope} bytes (the smallest bench alert is larger than --size {})",
            plan.size
        );
    }
    let opts = CreateOptions::local()?;
    eprintln!(
        "bench: tocsin: starting {} tocsind nodes in {}",
        plan.nodes,
        dir.display()
    );
    // Dropping the cluster (on any error below) kills the nodes it started.
    let mut cluster = Cluster::create(dir, plan.nodes, plan.links.clone(), &opts)?;
    cluster
        .start_all(START_TIMEOUT)
        .await
        .context("starting the tocsind nodes")?;
    cluster
        .wait_links(LINK_TIMEOUT)
        .await
        .context("waiting for the planned links")?;
    let (readers, mut events) = watch_all(&cluster).await?;
    tokio::time::sleep(TOCSIN_WARMUP).await;
    let ports: HashSet<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let tcp_before = tcp_bytes(&ports).await;
    let before = tocsin_counters(&cluster).await?;

    eprintln!("bench: tocsin: publishing");
    let clients: Vec<Client> = cluster.nodes.iter().map(|n| n.client()).collect();
    let publisher = publish_tocsin(plan, clients, pad);
    tokio::pin!(publisher);
    // When the last issue returned, and alert id → (index, issue round trip ms).
    let mut issued: Option<(IssuedIds, Instant)> = None;
    let mut seen: Vec<Seen> = Vec::new();
    let mut got: HashMap<String, HashSet<usize>> = HashMap::new();
    let mut closed = HashSet::new();
    loop {
        if let Some((ids, _)) = &issued {
            let want = plan.nodes - 1;
            if ids
                .keys()
                .all(|id| got.get(id).is_some_and(|s| s.len() >= want))
            {
                break;
            }
        }
        let deadline = issued
            .as_ref()
            .map(|(_, last)| *last + DRAIN)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            done = &mut publisher, if issued.is_none() => {
                let ids: IssuedIds = done
                    .issued
                    .into_iter()
                    .enumerate()
                    .filter_map(|(k, i)| i.map(|(id, ms)| (id, (k, ms))))
                    .collect();
                issued = Some((ids, done.last));
            }
            ev = events.recv() => match ev {
                Some((_, Some(s))) => {
                    if s.relayed {
                        got.entry(s.id.clone()).or_default().insert(s.node);
                    }
                    seen.push(s);
                }
                Some((i, None)) => {
                    if closed.insert(i) {
                        eprintln!("bench: tocsin: the event stream of n{} ended", i + 1);
                    }
                }
                None => bail!("every event stream ended"),
            },
            _ = tokio::time::sleep_until(deadline) => {
                eprintln!("bench: tocsin: not every alert arrived within {DRAIN:?} of the last publish");
                break;
            }
        }
    }
    let Some((ids, _)) = issued else {
        bail!("the publisher did not finish");
    };
    tokio::time::sleep(SETTLE).await;
    let after = tocsin_counters(&cluster).await?;
    let tcp_after = tcp_bytes(&ports).await;
    drop(readers);

    let mut latencies = Vec::new();
    let mut after_commit = Vec::new();
    let mut first_issue = f64::INFINITY;
    let mut last_receipt = 0.0_f64;
    let mut counted = HashSet::new();
    for s in &seen {
        let Some((_, round_trip)) = ids.get(&s.id) else {
            continue;
        };
        first_issue = first_issue.min(s.issued_at);
        if s.relayed && counted.insert((s.node, s.id.as_str())) {
            latencies.push(s.received_at - s.issued_at);
            after_commit.push(s.received_at - s.issued_at - round_trip);
            last_receipt = last_receipt.max(s.received_at);
        }
    }
    after_commit.sort_by(f64::total_cmp);
    eprintln!(
        "bench: tocsin: latency minus the origin's issue round trip (≈ network only): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&after_commit, 0.5),
        percentile(&after_commit, 0.99)
    );
    let wall = if latencies.is_empty() {
        0.0
    } else {
        (last_receipt - first_issue) / 1000.0
    };
    report_hops(&seen, &ids);
    let bytes = after.bytes_out - before.bytes_out;
    report_frames(plan, &before, &after, bytes);
    report_tcp("tocsin", plan, tcp_before, tcp_after, bytes);

    cluster
        .stop_all(STOP_TIMEOUT)
        .context("stopping the tocsind nodes")?;
    Ok(run_stats("tocsin", plan, latencies, bytes, wall))
}

/// Prints the tocsin deliveries and their mean latency by hop count (stderr).
fn report_hops(seen: &[Seen], ids: &IssuedIds) {
    let mut by_hops: std::collections::BTreeMap<u64, (usize, f64)> = Default::default();
    for s in seen.iter().filter(|s| s.relayed && ids.contains_key(&s.id)) {
        let e = by_hops.entry(s.hops).or_default();
        e.0 += 1;
        e.1 += s.received_at - s.issued_at;
    }
    let list: Vec<String> = by_hops
        .iter()
        .map(|(h, (n, sum))| format!("{h} hops: {n} ({:.1} ms)", sum / *n as f64))
        .collect();
    eprintln!(
        "bench: tocsin: deliveries by hops (mean latency): {}",
        list.join(", ")
    );
}

/// Prints where the tocsin bytes went, by frame kind (stderr).
fn report_frames(plan: &Plan, before: &Counters, after: &Counters, bytes: f64) {
    let mut kinds: Vec<(&String, f64)> = after
        .frames
        .iter()
        .map(|(k, v)| (k, v - before.frames.get(k).copied().unwrap_or_default()))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    kinds.sort_by(|a, b| a.0.cmp(b.0));
    let per = (plan.alerts() * plan.nodes) as f64;
    let list: Vec<String> = kinds
        .iter()
        .map(|(k, v)| format!("{k} {v} ({:.2}/alert/node)", v / per))
        .collect();
    eprintln!(
        "bench: tocsin: frames sent: {}; libp2p outbound bytes {bytes}",
        list.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_hits_the_target_size() {
        for size in [300, 600, 2048, 10_000] {
            let (_, len) = text_padding(size).unwrap();
            assert_eq!(len, size);
        }
        let (pad, len) = text_padding(10).unwrap();
        assert_eq!(pad, 0);
        assert!(len > 10);
    }
}
