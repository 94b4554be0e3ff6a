//! `tocsin-cluster`: start, drive, break and measure a federation of real `tocsind`
//! processes on this machine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tocsin_tools::cluster::{find_binary, plan, Cluster, CreateOptions, Levels, Link, Topology};
use tocsin_tools::format::short;

/// How long `up` waits for nodes to answer and links to connect.
const UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` and `down` wait for a graceful exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Local Tocsin federations for testers: real tocsind processes on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(
    name = "tocsin-cluster",
    version,
    after_help = "Nodes are numbered from 1. The cluster's state lives in --dir (default \
                  ./tocsin-cluster, or $TOCSIN_CLUSTER_DIR), so later commands in other \
                  shells find it.\n\nExamples:\n  tocsin-cluster demo\n  tocsin-cluster up \
                  --nodes 10 --topology random:3 --levels mixed\n  tocsin-cluster issue \
                  --node 1 --severity high --tlp GREEN --title 'Phishing wave'\n  \
                  tocsin-cluster partition 1,2,3 / 4,5\n  tocsin-cluster down --clean\n\nExit \
                  codes: 0 success; 1 failure (the message says what)."
)]
struct Cli {
    /// The cluster directory.
    #[arg(
        long,
        global = true,
        env = "TOCSIN_CLUSTER_DIR",
        default_value = "tocsin-cluster"
    )]
    dir: PathBuf,
    /// JSON output (status, up).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create and start N nodes linked by a topology; wait until every link is up.
    Up {
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// line, ring, star, mesh or random:K
        #[arg(long, default_value = "ring")]
        topology: Topology,
        /// Trust level of the links: member, partner or mixed.
        #[arg(long, default_value = "member")]
        levels: Levels,
        /// Seed for random topologies and mixed levels.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Per node: up or down, connected peers, stored alerts, rejections.
    Status,
    /// Issue an alert on a node; the remaining arguments are `tocsin issue` flags.
    Issue {
        #[arg(long)]
        node: usize,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// SIGKILL a node.
    Kill { node: usize },
    /// SIGTERM a node (graceful) and wait for it to exit.
    Stop { node: usize },
    /// Start a stopped or killed node; it catches up on what it missed.
    Start { node: usize },
    /// Cut the links between groups, e.g. `partition 1,2,3 / 4,5`.
    Partition {
        #[arg(required = true, num_args = 1..)]
        groups: Vec<String>,
    },
    /// Restore every cut link.
    Heal,
    /// Print a node's log.
    Logs {
        node: usize,
        /// Only the last N lines.
        #[arg(long, default_value_t = 50)]
        lines: usize,
    },
    /// Stop every node; with --clean also remove the cluster directory.
    Down {
        #[arg(long)]
        clean: bool,
    },
    /// Start 5 nodes, issue an alert at node 1, show it arriving everywhere, stop.
    Demo,
    /// Measure propagation (delivery, latency, wire bytes per alert) on a fresh
    /// federation, optionally against plain gossipsub on the same topology. Build with
    /// --release for meaningful numbers.
    Bench(tocsin_tools::bench::BenchArgs),
    /// One plain gossipsub node, driven over stdin/stdout by `bench --baseline`.
    #[command(hide = true)]
    GossipsubNode(tocsin_tools::baseline::GossipsubNodeArgs),
}

fn index(cluster: &Cluster, node: usize) -> Result<usize> {
    if node == 0 || node > cluster.nodes.len() {
        bail!(
            "no node {node}: this cluster has nodes 1..={}",
            cluster.nodes.len()
        );
    }
    Ok(node - 1)
}

fn neighbours(cluster: &Cluster, i: usize) -> Vec<String> {
    cluster
        .links
        .iter()
        .filter_map(|l: &Link| {
            if l.a == i {
                Some(format!("{}({})", l.b + 1, l.ab))
            } else if l.b == i {
                Some(format!("{}({})", l.a + 1, l.ba))
            } else {
                None
            }
        })
        .collect()
}

fn print_nodes(cluster: &Cluster, json: bool) {
    if json {
        let v: Vec<Value> = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                json!({"node": i + 1, "key": n.key, "peer_id": n.peer_id, "socket": n.socket,
                       "listen": n.addr(), "trusts": neighbours(cluster, i)})
            })
            .collect();
        println!("{}", json!({"dir": cluster.dir, "nodes": v}));
        return;
    }
    println!(
        "{:<5} {:<14} {:<44} {:<28} TRUSTS",
        "NODE", "PEER", "API SOCKET", "LISTEN"
    );
    for (i, n) in cluster.nodes.iter().enumerate() {
        let peer = n
            .peer_id
            .get(n.peer_id.len().saturating_sub(12)..)
            .unwrap_or(&n.peer_id);
        println!(
            "{:<5} …{:<13} {:<44} {:<28} {}",
            i + 1,
            peer,
            n.socket.display(),
            n.addr(),
            neighbours(cluster, i).join(" ")
        );
    }
}

async fn up(
    dir: PathBuf,
    nodes: usize,
    topology: Topology,
    levels: Levels,
    seed: u64,
    json: bool,
) -> Result<()> {
    let t0 = Instant::now();
    let links = plan(topology, nodes, levels, seed);
    let mut cluster = Cluster::create(&dir, nodes, links, &CreateOptions::local()?)?;
    let started = async {
        cluster.start_all(UP_TIMEOUT).await?;
        cluster.wait_links(UP_TIMEOUT).await
    }
    .await;
    if let Err(e) = started {
        let _ = cluster.stop_all(STOP_TIMEOUT);
        return Err(e.context("the federation did not come up; its nodes were stopped (logs are in each node's tocsind.log)"));
    }
    cluster.detach();
    print_nodes(&cluster, json);
    if !json {
        println!(
            "\n{nodes} nodes up, {} links connected in {:.1}s ({topology}, {levels:?}). State: {}",
            cluster.links.len(),
            t0.elapsed().as_secs_f64(),
            cluster.dir.display()
        );
        println!("next: tocsin-cluster --dir {} issue --node 1 --severity high --tlp GREEN --title 'hello'", cluster.dir.display());
    }
    Ok(())
}

async fn status(mut cluster: Cluster, json: bool) -> Result<()> {
    let names: HashMap<String, usize> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.key.clone(), i + 1))
        .collect();
    let mut rows = Vec::new();
    for i in 0..cluster.nodes.len() {
        let up = cluster.is_up(i);
        let mut row = json!({"node": i + 1, "up": up});
        if up {
            let client = cluster.nodes[i].client();
            if let Ok(st) = client.status().await {
                row["alerts"] = st["alerts"].clone();
            }
            if let Ok(p) = client.get("/v1/peers").await {
                let peers = p["peers"].as_array().cloned().unwrap_or_default();
                let connected: Vec<usize> = peers
                    .iter()
                    .filter(|p| p["connected"] == true)
                    .filter_map(|p| p["key"].as_str().and_then(|k| names.get(k)).copied())
                    .collect();
                let rejections: u64 = peers
                    .iter()
                    .filter_map(|p| p["rejections"].as_object())
                    .flat_map(|r| r.values().filter_map(Value::as_u64))
                    .sum();
                row["connected"] = json!(connected);
                row["rejections"] = json!(rejections);
            }
        }
        rows.push(row);
    }
    if json {
        println!("{}", json!({"nodes": rows}));
        return Ok(());
    }
    println!(
        "{:<5} {:<5} {:>7} {:>10}  CONNECTED TO",
        "NODE", "UP", "ALERTS", "REJECTED"
    );
    for r in rows {
        let connected: Vec<String> = r["connected"]
            .as_array()
            .map(|a| a.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        println!(
            "{:<5} {:<5} {:>7} {:>10}  {}",
            r["node"].as_u64().unwrap_or(0),
            if r["up"] == true { "up" } else { "down" },
            r["alerts"].as_u64().map_or("-".into(), |n| n.to_string()),
            r["rejections"]
                .as_u64()
                .map_or("-".into(), |n| n.to_string()),
            connected.join(",")
        );
    }
    Ok(())
}

fn parse_groups(cluster: &Cluster, words: &[String]) -> Result<Vec<Vec<usize>>> {
    let joined = words.join(" ");
    let mut groups = Vec::new();
    for g in joined.split('/') {
        let mut group = Vec::new();
        for tok in g
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
        {
            let n: usize = tok
                .parse()
                .with_context(|| format!("{tok:?} is not a node number"))?;
            group.push(index(cluster, n)?);
        }
        if group.is_empty() {
            bail!("empty group in {joined:?}: write groups like `1,2,3 / 4,5`");
        }
        groups.push(group);
    }
    if groups.len() < 2 {
        bail!("a partition needs at least two groups separated by `/`");
    }
    Ok(groups)
}

async fn demo() -> Result<()> {
    let n = 5;
    let tmp = std::env::temp_dir().join(format!("tocsin-demo-{}", std::process::id()));
    println!(
        "Starting a federation of {n} tocsind nodes in a line (1 – 2 – 3 – 4 – 5, all `member`)…"
    );
    let t0 = Instant::now();
    let links = plan(Topology::Line, n, Levels::Member, 1);
    let mut cluster = Cluster::create(&tmp, n, links, &CreateOptions::local()?)?;
    let result = async {
        cluster.start_all(UP_TIMEOUT).await?;
        cluster.wait_links(UP_TIMEOUT).await?;
        println!("federation up in {:.1}s\n", t0.elapsed().as_secs_f64());
        print_nodes(&cluster, false);
        demo_alert(&cluster).await
    }
    .await;
    let _ = cluster.stop_all(STOP_TIMEOUT);
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    println!("\nAll {n} nodes stopped. To keep a federation up and explore it:");
    println!("  tocsin-cluster up --nodes 10 --topology random:3 --levels mixed --dir /tmp/tc");
    println!("  tocsin-cluster --dir /tmp/tc issue --node 1 --severity high --tlp GREEN --title 'Phishing wave'");
    println!("  tocsin --socket /tmp/tc/n7/tocsind.sock list");
    println!("  tocsin-cluster --dir /tmp/tc status      # peers, alerts, rejections per node");
    println!(
        "  tocsin-cluster --dir /tmp/tc kill 3; tocsin-cluster --dir /tmp/tc start 3   # catch-up"
    );
    println!("  tocsin-cluster --dir /tmp/tc partition 1,2,3 / 4,5,6,7,8,9,10; … ; tocsin-cluster --dir /tmp/tc heal");
    println!("  tocsin-cluster --dir /tmp/tc down --clean");
    Ok(())
}

async fn demo_alert(cluster: &Cluster) -> Result<()> {
    let n = cluster.nodes.len();
    let names: HashMap<String, usize> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.key.clone(), i))
        .collect();
    let issued = cluster.nodes[0]
        .client()
        .issue(&json!({
            "severity": "high", "tlp": "GREEN",
            "title": "Demo: credential phishing against payment processors",
            "indicators": ["domain:clearing-house-login.example", "ipv4:192.0.2.44"],
            "tags": ["phishing", "demo"],
        }))
        .await?;
    println!(
        "\nissued {} at node 1 (TLP:GREEN, severity high)\n",
        short(&issued.id, 12)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen: Vec<Option<Value>> = vec![None; n];
    while seen.iter().any(Option::is_none) {
        for (i, slot) in seen.iter_mut().enumerate() {
            if slot.is_none() {
                if let Ok(v) = cluster.nodes[i].client().alert(&issued.id).await {
                    *slot = Some(v);
                }
            }
        }
        if Instant::now() > deadline {
            let missing: Vec<String> = seen
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_none())
                .map(|(i, _)| (i + 1).to_string())
                .collect();
            bail!(
                "the alert did not reach node(s) {} within 15s",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let issued_at = seen[0]
        .as_ref()
        .and_then(|v| v["alert"]["issued_at"].as_u64())
        .unwrap_or(0);
    println!("{:<5} {:>5} {:>9}  PATH", "NODE", "HOPS", "ARRIVED");
    for (i, v) in seen.iter().enumerate() {
        let Some(v) = v else { continue };
        let mut path = vec![i + 1];
        let mut cur = v.clone();
        for _ in 0..n {
            let Some(from) = cur["provenance"]["from"]
                .as_str()
                .and_then(|k| names.get(k))
            else {
                break;
            };
            path.push(from + 1);
            match &seen[*from] {
                Some(next) => cur = next.clone(),
                None => break,
            }
        }
        path.reverse();
        let received = v["provenance"]["received_at"].as_u64().unwrap_or(issued_at);
        let path: Vec<String> = path.iter().map(|p| format!("n{p}")).collect();
        println!(
            "{:<5} {:>5} {:>7}ms  {}",
            format!("n{}", i + 1),
            v["provenance"]["hops"],
            received.saturating_sub(issued_at),
            path.join(" → ")
        );
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Up {
            nodes,
            topology,
            levels,
            seed,
        } => up(cli.dir, nodes, topology, levels, seed, cli.json).await,
        Cmd::Demo => demo().await,
        Cmd::Bench(mut args) => {
            args.json |= cli.json;
            tocsin_tools::bench::run(&args).await.map(|_| ())
        }
        Cmd::GossipsubNode(args) => tocsin_tools::baseline::gossipsub_node_main(&args).await,
        Cmd::Status => status(Cluster::load(&cli.dir)?, cli.json).await,
        Cmd::Issue { node, args } => {
            let cluster = Cluster::load(&cli.dir)?;
            let i = index(&cluster, node)?;
            let status = std::process::Command::new(find_binary("tocsin")?)
                .arg("--socket")
                .arg(&cluster.nodes[i].socket)
                .arg("issue")
                .args(&args)
                .status()
                .context("cannot run tocsin")?;
            if !status.success() {
                bail!("tocsin issue failed ({status})");
            }
            Ok(())
        }
        Cmd::Kill { node } => {
            let mut cluster = Cluster::load(&cli.dir)?;
            let i = index(&cluster, node)?;
            cluster.kill(i)?;
            println!("node {node} killed (SIGKILL)");
            Ok(())
        }
        Cmd::Stop { node } => {
            let mut cluster = Cluster::load(&cli.dir)?;
            let i = index(&cluster, node)?;
            cluster.stop(i, STOP_TIMEOUT)?;
            println!("node {node} stopped");
            Ok(())
        }
        Cmd::Start { node } => {
            let mut cluster = Cluster::load(&cli.dir)?;
            let i = index(&cluster, node)?;
            cluster.start(i)?;
            let ready = cluster.wait_ready(i, UP_TIMEOUT).await;
            cluster.detach();
            ready?;
            println!("node {node} started");
            Ok(())
        }
        Cmd::Partition { groups } => {
            let mut cluster = Cluster::load(&cli.dir)?;
            let groups = parse_groups(&cluster, &groups)?;
            cluster.partition(groups.clone()).await?;
            let shown: Vec<String> = groups
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|i| (i + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect();
            println!("partitioned: {}", shown.join(" / "));
            Ok(())
        }
        Cmd::Heal => {
            let mut cluster = Cluster::load(&cli.dir)?;
            cluster.heal().await?;
            println!("healed");
            Ok(())
        }
        Cmd::Logs { node, lines } => {
            let cluster = Cluster::load(&cli.dir)?;
            let i = index(&cluster, node)?;
            let path = cluster.nodes[i].log_path();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let all: Vec<&str> = text.lines().collect();
            for l in &all[all.len().saturating_sub(lines)..] {
                println!("{l}");
            }
            Ok(())
        }
        Cmd::Down { clean } => {
            let mut cluster = Cluster::load(&cli.dir)?;
            cluster.stop_all(STOP_TIMEOUT)?;
            if clean {
                std::fs::remove_dir_all(&cluster.dir)
                    .with_context(|| format!("cannot remove {}", cluster.dir.display()))?;
                println!("stopped every node and removed {}", cluster.dir.display());
            } else {
                println!(
                    "stopped every node; state kept in {}",
                    cluster.dir.display()
                );
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}
