//! `tocsin-cluster bench`: how fast and how cheaply alerts propagate through a local
//! federation of real `tocsind` processes, and (with `--baseline gossipsub`) through
//! the same topology of plain libp2p gossipsub processes ([`crate::baseline`]).
//!
//! # What is measured
//! - **Delivery ratio**: deliveries to non-origin nodes / (alerts × (nodes − 1)),
//!   counted until every node has every alert or [`DRAIN`] past the last publish.
//! - **Latency** per delivery: receipt time at the node − issue time at the origin,
//!   both from this machine's clock. For tocsin, `provenance.received_at −
//!   alert.issued_at` (unix ms, so 1 ms resolution) read from each node's event
//!   stream; `issued_at` is set by the API before signing and the durable commit at the
//!   origin. For gossipsub, the receive time − the time taken just before `publish()`,
//!   in µs. p50, p99 (nearest rank) and max over all deliveries.
//! - **Wire bytes per alert per node**: the increase of
//!   `libp2p_bandwidth_bytes_total{direction="outbound"}` summed over every node, from
//!   just before the first publish to [`SETTLE`] after the last delivery (or the
//!   drain deadline), divided by alerts and by nodes. Every byte sent is received by
//!   one peer, so outbound summed over the nodes is the total traffic; inbound is not
//!   added. libp2p counts the bytes written to each multiplexed substream: our frames
//!   with their length prefixes (bodies, announces, wants, …), gossipsub's RPCs
//!   (messages, IHAVE/IWANT, GRAFT/PRUNE, IDONTWANT, subscriptions), pings and
//!   multistream-select negotiation. It does not count Yamux headers, window updates
//!   or Noise tags, which sit below the substreams; the bench also prints, on stderr,
//!   the TCP payload bytes over the nodes' connections (`ss -ti`, `bytes_acked`),
//!   which do include them.
//! - **Wall time**: first publish to last delivery.
//!
//! Senders are chosen at random among the nodes with a generator seeded from
//! `--seed`, so both systems publish the same sequence from the same nodes at the same
//! rate. Tocsin alerts are CLEAR, severity info, with their text padded so that the
//! signed envelope is `--size` bytes; gossipsub messages carry `--size` bytes of data
//! (gossipsub adds its own signature, key and sequence number around them).

//!
//! # Layout
//! - `plan`: what both systems run (nodes, links, senders, schedule).
//! - `tocsin`: the tocsind run; `gossipsub`: the baseline run.
//! - `report`: the numbers (percentiles, [`RunStats`]) and the table.
//! - `tcp`: TCP payload bytes from `ss`.
//! - `catchup`: `tocsin-cluster bench-catchup`, catch-up time against the origin's ingest.
//! - `startup`: `tocsin-cluster bench-startup`, restart time with many stored alerts.

pub mod catchup;
mod gossipsub;
mod plan;
mod report;
pub mod startup;
mod tcp;
mod tocsin;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cluster::{self, Levels, Topology};
use gossipsub::run_gossipsub;
pub use plan::senders;
use plan::Plan;
pub use report::{percentile, table, BenchReport, Ratios, RunStats};
use tocsin::run_tocsin;
pub use tocsin::{clear_alert, text_padding};

/// How long nodes may take to answer on their API after start.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the planned links (tocsin) or the mesh (gossipsub) may take to form.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the last publish deliveries are still waited for.
pub const DRAIN: Duration = Duration::from_secs(10);
/// Quiet time after the last delivery before the byte counters are read, so that the
/// traffic an alert causes after its delivery is counted: our announces (flushed every
/// 20 ms) and wants, and gossipsub's IHAVE gossip, which repeats a message id for 3
/// heartbeats (`history_gossip` = 3 × 1 s).
pub const SETTLE: Duration = Duration::from_secs(3);
/// How long processes may take to exit gracefully before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit of one metrics read or one round of baseline `stats`.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Gossipsub's first heartbeat comes 5 s after start (`heartbeat_initial_delay`); the
/// baseline publishes only after it, with the mesh formed and maintained once.
pub const GOSSIPSUB_WARMUP: Duration = Duration::from_secs(6);
/// Pause after the tocsin links are up, so that the connect-time catch-up exchange
/// (`Hello`, `SyncRequest`, `SyncPage`) is not counted.
pub const TOCSIN_WARMUP: Duration = Duration::from_secs(1);

/// Options of `tocsin-cluster bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// line, ring, star, mesh or random:K
    #[arg(long, default_value = "random:4")]
    pub topology: String,
    /// Trust level of the links: member, partner or mixed.
    #[arg(long, default_value = "member")]
    pub levels: String,
    /// Seed for the topology and the choice of senders.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Alerts to publish.
    #[arg(long, default_value_t = 100)]
    pub alerts: usize,
    /// Alerts per second, each from a random node (seeded).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Target size of the signed alert envelope in bytes (the text is padded).
    #[arg(long, default_value_t = 600)]
    pub size: usize,
    /// Also run a baseline on the same topology: `gossipsub` (gossipsub defaults) or
    /// `gossipsub:D` (mesh degree D).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Print the report as one JSON object (set from `tocsin-cluster --json`).
    #[arg(skip)]
    pub json: bool,
    /// Directory for the tocsin cluster (kept afterwards); `None`: a temporary
    /// directory, removed afterwards. The command line always uses a temporary one.
    #[arg(skip)]
    pub dir: Option<PathBuf>,
}

/// Runs the bench (and the baseline, which starts this executable's hidden
/// `gossipsub-node` subcommand) and prints the table, or the JSON report with `--json`,
/// on stdout. Progress and diagnostics go to stderr.
pub async fn run(args: &BenchArgs) -> Result<BenchReport> {
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    run_with(args, &exe).await
}

/// As [`run`], with the baseline nodes started as `<node_exe> gossipsub-node …`.
pub async fn run_with(args: &BenchArgs, node_exe: &Path) -> Result<BenchReport> {
    tokio::select! {
        report = bench(args, node_exe) => report,
        // Returning drops the clusters and baseline processes, which stops them.
        _ = tokio::signal::ctrl_c() => bail!("interrupted; every node started has been stopped"),
    }
}

/// Which baseline `--baseline` names: the gossipsub mesh degree (0 = defaults).
fn parse_baseline(s: &str) -> Result<usize> {
    match s {
        "gossipsub" => Ok(0),
        _ => match s.strip_prefix("gossipsub:") {
            Some(d) => match d.parse::<usize>() {
                Ok(d) if d > 0 => Ok(d),
                _ => bail!("--baseline gossipsub:D needs a mesh degree D ≥ 1, got {d:?}"),
            },
            None => bail!("unknown baseline {s:?}: use gossipsub or gossipsub:D"),
        },
    }
}

async fn bench(args: &BenchArgs, node_exe: &Path) -> Result<BenchReport> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2 (got {})", args.nodes);
    }
    if args.alerts == 0 {
        bail!("--alerts must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of alerts per second");
    }
    if args.size > tocsin_proto::limits::MAX_ENVELOPE_BYTES {
        bail!(
            "--size {} exceeds the limit MAX_ENVELOPE_BYTES = {}",
            args.size,
            tocsin_proto::limits::MAX_ENVELOPE_BYTES
        );
    }
    let topology: Topology = args.topology.parse().context("--topology")?;
    let levels: Levels = args.levels.parse().context("--levels")?;
    let mesh_n = args.baseline.as_deref().map(parse_baseline).transpose()?;
    let plan = Plan {
        nodes: args.nodes,
        links: cluster::plan(topology, args.nodes, levels, args.seed),
        senders: senders(args.seed, args.nodes, args.alerts),
        interval: Duration::try_from_secs_f64(1.0 / args.rate)
            .map_err(|_| anyhow!("--rate {} is too small", args.rate))?,
        size: args.size,
    };
    let degrees: Vec<usize> = (0..plan.nodes).map(|i| plan.degree(i)).collect();
    eprintln!(
        "bench: {} nodes, {topology}, {} links (degree min {} / mean {:.1} / max {}), {} alerts at {}/s, {} bytes",
        plan.nodes,
        plan.links.len(),
        degrees.iter().min().copied().unwrap_or_default(),
        degrees.iter().sum::<usize>() as f64 / plan.nodes as f64,
        degrees.iter().max().copied().unwrap_or_default(),
        plan.alerts(),
        args.rate,
        plan.size
    );

    let work = WorkDir::new(args.dir.as_deref())?;
    let tocsin = run_tocsin(&plan, &work.path.join("tocsin")).await?;
    let baseline = match mesh_n {
        Some(d) => Some(run_gossipsub(&plan, node_exe, d).await?),
        None => None,
    };
    let ratios = baseline.as_ref().map(|b| Ratios {
        bytes_per_alert: tocsin.wire_bytes_per_alert_per_node / b.wire_bytes_per_alert_per_node,
        p99_latency: tocsin.latency_ms_p99 / b.latency_ms_p99,
    });
    let report = BenchReport {
        tocsin,
        baseline,
        ratios,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("cannot encode the report")?
        );
    } else {
        print!("{}", table(&report));
    }
    Ok(report)
}

/// The working directory: given (kept) or temporary (removed on drop).
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    fn new(dir: Option<&Path>) -> Result<WorkDir> {
        let (path, remove) = match dir {
            Some(d) => (d.to_path_buf(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or_default();
                let name = format!("tocsin-bench-{}-{nanos}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path, remove })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use serde_json::Value;

    use super::report::{percentile, thousands};
    use super::*;

    #[test]
    fn percentiles_and_formatting() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(thousands(1234.4), "1,234");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(parse_baseline("gossipsub").unwrap(), 0);
        assert_eq!(parse_baseline("gossipsub:3").unwrap(), 3);
        assert!(parse_baseline("gossipsub:0").is_err());
        assert!(parse_baseline("floodsub").is_err());
    }

    /// The whole bench on 3 nodes: tocsin always (delivery must be complete), the
    /// gossipsub baseline when a `tocsin-cluster` binary with `gossipsub-node` is built.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_runs_on_three_nodes() {
        if crate::cluster::find_binary("tocsind").is_err() {
            eprintln!("note: skipping: no tocsind binary (cargo build -p tocsin-node)");
            return;
        }
        let exe = crate::cluster::find_binary("tocsin-cluster")
            .ok()
            .filter(|exe| {
                std::process::Command::new(exe)
                    .args(["gossipsub-node", "--help"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
        if exe.is_none() {
            eprintln!(
                "note: no tocsin-cluster binary with a gossipsub-node subcommand: skipping the baseline"
            );
        }
        let args = BenchArgs {
            nodes: 3,
            topology: "ring".into(),
            levels: "member".into(),
            seed: 1,
            alerts: 5,
            rate: 20.0,
            size: 600,
            baseline: exe.as_ref().map(|_| "gossipsub".to_string()),
            json: true,
            dir: None,
        };
        let node_exe = exe.unwrap_or_else(|| PathBuf::from("/nonexistent"));
        let report = run_with(&args, &node_exe).await.unwrap();
        let text = serde_json::to_string(&report).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["tocsin"]["system"], "tocsin");
        assert_eq!(v["tocsin"]["nodes"], 3);
        assert_eq!(v["tocsin"]["alerts"], 5);
        assert_eq!(v["tocsin"]["delivery_ratio"], 1.0);
        assert!(
            v["tocsin"]["wire_bytes_per_alert_per_node"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        if args.baseline.is_some() {
            assert_eq!(v["baseline"]["system"], "gossipsub");
            assert_eq!(v["baseline"]["delivery_ratio"], 1.0);
            assert!(v["ratios"]["bytes_per_alert"].as_f64().is_some());
        } else {
            assert!(v["baseline"].is_null());
        }
    }
}
