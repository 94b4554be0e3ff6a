//! The `tocsin-cluster` command line: its clap definition and the subcommands, which
//! start, drive, break and measure a federation of real `tocsind` processes on this
//! machine ([`crate::cluster`]).

mod demo;
mod status;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::cluster::{find_binary, plan, Cluster, CreateOptions, Levels, Topology};
use status::print_nodes;

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
pub struct Cli {
    /// The cluster directory.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "TOCSIN_CLUSTER_DIR",
        default_value = "tocsin-cluster"
    )]
    dir: PathBuf,
    /// JSON output (status, up).
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create and start N nodes linked by a topology; wait until every link is up.
    Up {
        /// How many nodes
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
        /// The node that issues it (numbered from 1)
        #[arg(long)]
        node: usize,
        /// `tocsin issue` flags, e.g. --severity high --tlp GREEN --title 'Phishing wave'
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// SIGKILL a node.
    Kill {
        /// The node (numbered from 1)
        node: usize,
    },
    /// SIGTERM a node (graceful) and wait for it to exit.
    Stop {
        /// The node (numbered from 1)
        node: usize,
    },
    /// Start a stopped or killed node; it catches up on what it missed.
    Start {
        /// The node (numbered from 1)
        node: usize,
    },
    /// Cut the links between groups, e.g. `partition 1,2,3 / 4,5`.
    Partition {
        /// Groups of node numbers separated by `/`, e.g. 1,2,3 / 4,5
        #[arg(required = true, num_args = 1..)]
        groups: Vec<String>,
    },
    /// Restore every cut link.
    Heal,
    /// Print a node's log.
    Logs {
        /// The node (numbered from 1)
        node: usize,
        /// Only the last N lines.
        #[arg(long, default_value_t = 50)]
        lines: usize,
    },
    /// Stop every node; with --clean also remove the cluster directory.
    Down {
        /// Also remove the cluster directory (keys, stores, logs)
        #[arg(long)]
        clean: bool,
    },
    /// Start 5 nodes, issue an alert at node 1, show it arriving everywhere, stop.
    Demo,
    /// Measure propagation (delivery, latency, wire bytes per alert) on a fresh
    /// federation, optionally against plain gossipsub on the same topology. Build with
    /// --release for meaningful numbers.
    Bench(crate::bench::BenchArgs),
    /// Measure catch-up: a node misses N alerts while stopped, then is started; prints
    /// the time until it holds them all beside the time the origin took to ingest them,
    /// and the bytes sent. Build with --release for meaningful numbers.
    BenchCatchup(crate::bench::catchup::CatchupArgs),
    /// Measure start-up: a node with N stored alerts is restarted; prints the time until
    /// its API answers and until the alerts are loaded, and its RSS, beside an empty
    /// start. Build with --release for meaningful numbers.
    BenchStartup(crate::bench::startup::StartupArgs),
    /// One plain gossipsub node, driven over stdin/stdout by `bench --baseline`.
    #[command(hide = true)]
    GossipsubNode(crate::baseline::GossipsubNodeArgs),
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

/// Loads the cluster in `dir` and finds node `node` (1-based) in it: the cluster and
/// the node's index.
fn load_node(dir: &Path, node: usize) -> Result<(Cluster, usize)> {
    let cluster = Cluster::load(dir)?;
    let i = index(&cluster, node)?;
    Ok((cluster, i))
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

/// Runs a parsed `tocsin-cluster` command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Up {
            nodes,
            topology,
            levels,
            seed,
        } => up(cli.dir, nodes, topology, levels, seed, cli.json).await,
        Cmd::Demo => demo::demo().await,
        Cmd::Bench(mut args) => {
            args.json |= cli.json;
            crate::bench::run(&args).await.map(|_| ())
        }
        Cmd::BenchStartup(args) => crate::bench::startup::run(&args).await,
        Cmd::BenchCatchup(args) => crate::bench::catchup::run(&args, cli.json)
            .await
            .map(|_| ()),
        Cmd::GossipsubNode(args) => crate::baseline::gossipsub_node_main(&args).await,
        Cmd::Status => status::status(Cluster::load(&cli.dir)?, cli.json).await,
        Cmd::Issue { node, args } => {
            let (cluster, i) = load_node(&cli.dir, node)?;
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
            let (mut cluster, i) = load_node(&cli.dir, node)?;
            cluster.kill(i)?;
            println!("node {node} killed (SIGKILL)");
            Ok(())
        }
        Cmd::Stop { node } => {
            let (mut cluster, i) = load_node(&cli.dir, node)?;
            cluster.stop(i, STOP_TIMEOUT)?;
            println!("node {node} stopped");
            Ok(())
        }
        Cmd::Start { node } => {
            let (mut cluster, i) = load_node(&cli.dir, node)?;
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
            let (cluster, i) = load_node(&cli.dir, node)?;
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
