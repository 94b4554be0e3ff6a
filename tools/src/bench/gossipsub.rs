//! The gossipsub baseline run: `gossipsub-node` processes driven over stdin/stdout.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::plan::Plan;
use super::report::{run_stats, RunStats};
use super::tcp::{report_tcp, tcp_bytes};
use super::{
    DRAIN, GOSSIPSUB_WARMUP, LINK_TIMEOUT, QUERY_TIMEOUT, SETTLE, START_TIMEOUT, STOP_TIMEOUT,
};
use crate::baseline::parse_listening;

/// The baseline processes, their stdin pipes and the lines they print. Dropping this
/// kills the processes (`kill_on_drop`).
struct Baseline {
    children: Vec<tokio::process::Child>,
    stdins: Vec<tokio::process::ChildStdin>,
    lines: mpsc::UnboundedReceiver<(usize, Option<Value>)>,
    _readers: JoinSet<()>,
    /// `(peer_id, addr)` of each node.
    addrs: Vec<(String, String)>,
    errors: usize,
}

/// One `stats` line.
#[derive(Debug, Default)]
struct NodeStats {
    peers: usize,
    mesh_peers: usize,
    /// `(id, publish_us, receive_us)`.
    deliveries: Vec<(u64, f64, f64)>,
    bytes_out: f64,
}

impl Baseline {
    async fn start(exe: &Path, n: usize, mesh_n: usize) -> Result<Baseline> {
        let (tx, lines) = mpsc::unbounded_channel();
        let mut b = Baseline {
            children: Vec::new(),
            stdins: Vec::new(),
            lines,
            _readers: JoinSet::new(),
            addrs: Vec::new(),
            errors: 0,
        };
        for i in 0..n {
            let mut child = tokio::process::Command::new(exe)
                .args(["gossipsub-node", "--port", "0", "--mesh-n"])
                .arg(mesh_n.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start {} gossipsub-node", exe.display()))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("gossipsub node {} has no stdin or stdout pipe", i + 1);
            };
            b.children.push(child);
            b.stdins.push(stdin);
            let tx = tx.clone();
            b._readers.spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => {
                            if tx.send((i, Some(v))).is_err() {
                                return;
                            }
                        }
                        Err(_) => eprintln!("bench: gossipsub node {}: {line}", i + 1),
                    }
                }
                let _ = tx.send((i, None));
            });
        }
        let mut addrs: Vec<Option<(String, String)>> = vec![None; n];
        let deadline = Instant::now() + START_TIMEOUT;
        while addrs.iter().any(Option::is_none) {
            let (i, v) = b.next_line(deadline).await.with_context(|| {
                format!(
                    "{} gossipsub-node did not report its address (is it `tocsin-cluster`?)",
                    exe.display()
                )
            })?;
            if v["event"] == "listening" {
                addrs[i] = Some(parse_listening(&v)?);
            }
        }
        b.addrs = addrs.into_iter().flatten().collect();
        Ok(b)
    }

    /// The next line from any node; an error if a node exited or the deadline passed.
    async fn next_line(&mut self, deadline: Instant) -> Result<(usize, Value)> {
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .map_err(|_| anyhow!("no answer from the gossipsub nodes in time"))?;
            match line {
                Some((i, Some(v))) if v["event"] == "error" => {
                    self.errors += 1;
                    eprintln!(
                        "bench: gossipsub node {}: {}",
                        i + 1,
                        v["message"].as_str().unwrap_or_default()
                    );
                }
                Some((i, Some(v))) => return Ok((i, v)),
                Some((i, None)) => bail!("gossipsub node {} exited", i + 1),
                None => bail!("every gossipsub node exited"),
            }
        }
    }

    async fn send(&mut self, i: usize, line: &str) -> Result<()> {
        let stdin = &mut self.stdins[i];
        tokio::time::timeout(QUERY_TIMEOUT, async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        })
        .await
        .map_err(|_| anyhow!("gossipsub node {} does not read its stdin", i + 1))?
        .with_context(|| format!("writing to gossipsub node {}", i + 1))
    }

    /// Asks every node for its stats.
    async fn stats(&mut self) -> Result<Vec<NodeStats>> {
        let n = self.stdins.len();
        for i in 0..n {
            self.send(i, "stats").await?;
        }
        let mut out: Vec<Option<NodeStats>> = (0..n).map(|_| None).collect();
        let deadline = Instant::now() + QUERY_TIMEOUT;
        while out.iter().any(Option::is_none) {
            let (i, v) = self.next_line(deadline).await?;
            if v["event"] != "stats" {
                continue;
            }
            let f = |v: &Value| v.as_f64().unwrap_or_default();
            out[i] = Some(NodeStats {
                peers: v["peers"].as_u64().unwrap_or_default() as usize,
                mesh_peers: v["mesh_peers"].as_u64().unwrap_or_default() as usize,
                deliveries: v["deliveries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| Some((d[0].as_u64()?, f(&d[1]), f(&d[2]))))
                    .collect(),
                bytes_out: f(&v["bytes_out"]),
            });
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Asks every node to quit and waits for it; SIGKILL after [`STOP_TIMEOUT`].
    async fn stop(mut self) {
        for i in 0..self.stdins.len() {
            let _ = self.send(i, "quit").await;
        }
        self.stdins.clear();
        for child in &mut self.children {
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

pub(super) async fn run_gossipsub(plan: &Plan, exe: &Path, mesh_n: usize) -> Result<RunStats> {
    let system = if mesh_n == 0 {
        "gossipsub".to_string()
    } else {
        format!("gossipsub:{mesh_n}")
    };
    eprintln!("bench: {system}: starting {} gossipsub nodes", plan.nodes);
    let started = Instant::now();
    let mut b = Baseline::start(exe, plan.nodes, mesh_n).await?;
    for l in &plan.links {
        // As in the tocsin cluster, the lower-numbered side dials.
        let (peer, addr) = b.addrs[l.b].clone();
        b.send(l.a, &format!("dial {addr}/p2p/{peer}")).await?;
    }
    let deadline = Instant::now() + LINK_TIMEOUT;
    loop {
        let stats = b.stats().await?;
        let waiting: Vec<String> = stats
            .iter()
            .enumerate()
            .filter(|(i, s)| s.peers < plan.degree(*i) || s.mesh_peers == 0)
            .map(|(i, s)| {
                format!(
                    "{}: {}/{} peers, {} in mesh",
                    i + 1,
                    s.peers,
                    plan.degree(i),
                    s.mesh_peers
                )
            })
            .collect();
        if waiting.is_empty() && started.elapsed() >= GOSSIPSUB_WARMUP {
            let mesh: Vec<usize> = stats.iter().map(|s| s.mesh_peers).collect();
            eprintln!(
                "bench: {system}: mesh sizes min {} / mean {:.1} / max {}",
                mesh.iter().min().copied().unwrap_or_default(),
                mesh.iter().sum::<usize>() as f64 / mesh.len().max(1) as f64,
                mesh.iter().max().copied().unwrap_or_default()
            );
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the gossipsub mesh did not form within {LINK_TIMEOUT:?}: {}",
                waiting.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ports: HashSet<u16> = b
        .addrs
        .iter()
        .filter_map(|(_, a)| a.rsplit('/').next()?.parse().ok())
        .collect();
    let tcp_before = tcp_bytes(&ports).await;
    let before: f64 = b.stats().await?.iter().map(|s| s.bytes_out).sum();

    eprintln!("bench: {system}: publishing");
    let start = Instant::now();
    for (k, &node) in plan.senders.iter().enumerate() {
        tokio::time::sleep_until(start + plan.at(k)).await;
        b.send(node, &format!("publish {k} {}", plan.size)).await?;
    }
    let last = Instant::now();
    let expected = plan.alerts() * (plan.nodes - 1);
    loop {
        let delivered: usize = b.stats().await?.iter().map(|s| s.deliveries.len()).sum();
        if delivered >= expected {
            break;
        }
        if last.elapsed() > DRAIN {
            eprintln!(
                "bench: {system}: not every message arrived within {DRAIN:?} of the last publish"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let stats = b.stats().await?;
    let tcp_after = tcp_bytes(&ports).await;
    let errors = b.errors;
    b.stop().await;
    if errors > 0 {
        eprintln!("bench: {system}: the nodes reported {errors} errors (above)");
    }

    let bytes = stats.iter().map(|s| s.bytes_out).sum::<f64>() - before;
    let mut latencies = Vec::new();
    let (mut first, mut last_receipt) = (f64::INFINITY, 0.0_f64);
    for s in &stats {
        for &(id, published, received) in &s.deliveries {
            if usize::try_from(id).is_ok_and(|id| id < plan.alerts()) {
                latencies.push((received - published) / 1000.0);
                first = first.min(published);
                last_receipt = last_receipt.max(received);
            }
        }
    }
    let wall = if latencies.is_empty() {
        0.0
    } else {
        (last_receipt - first) / 1e6
    };
    eprintln!("bench: {system}: libp2p outbound bytes {bytes}");
    report_tcp(&system, plan, tcp_before, tcp_after, bytes);
    Ok(run_stats(&system, plan, latencies, bytes, wall))
}
