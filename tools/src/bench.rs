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

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use tocsin_proto::{AlertBody, Kind, PublicKey, Severity, SignedAlert, Tlp, FORMAT_VERSION};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::baseline::{metric_by_label, parse_listening, sum_metric};
use crate::client::Client;
use crate::cluster::{plan, Cluster, CreateOptions, Levels, Link, Topology};

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

/// What `bench` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub tocsin: RunStats,
    pub baseline: Option<RunStats>,
    pub ratios: Option<Ratios>,
}

/// The measurements of one system (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    /// `tocsin`, `gossipsub` or `gossipsub:D`.
    pub system: String,
    pub nodes: usize,
    pub alerts: usize,
    /// Deliveries / (alerts × (nodes − 1)).
    pub delivery_ratio: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// libp2p outbound bytes summed over nodes / alerts / nodes.
    pub wire_bytes_per_alert_per_node: f64,
    /// First publish to last delivery.
    pub wall_secs: f64,
}

/// Tocsin / baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Ours / baseline: below 1 means fewer bytes.
    pub bytes_per_alert: f64,
    /// Ours / baseline: below 1 means faster.
    pub p99_latency: f64,
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

/// What both systems run: nodes, links, who sends what.
struct Plan {
    nodes: usize,
    links: Vec<Link>,
    /// Sending node of each alert.
    senders: Vec<usize>,
    /// Time between two publishes.
    interval: Duration,
    size: usize,
}

impl Plan {
    fn alerts(&self) -> usize {
        self.senders.len()
    }

    /// When alert `k` is published, from the start of the publish phase.
    fn at(&self, k: usize) -> Duration {
        self.interval
            .saturating_mul(u32::try_from(k).unwrap_or(u32::MAX))
    }

    fn degree(&self, i: usize) -> usize {
        self.links.iter().filter(|l| l.a == i || l.b == i).count()
    }
}

/// The sending node of each alert, seeded.
pub fn senders(seed: u64, nodes: usize, alerts: usize) -> Vec<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5e4d_e125);
    (0..alerts)
        .map(|_| rng.gen_range(0..nodes.max(1)))
        .collect()
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
        links: plan(topology, args.nodes, levels, args.seed),
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

/// The report as a table.
pub fn table(report: &BenchReport) -> String {
    let mut out = format!(
        "{:<12} {:>5} {:>6} {:>8} {:>7} {:>7} {:>7} {:>16}\n",
        "system", "nodes", "alerts", "delivery", "p50 ms", "p99 ms", "max ms", "bytes/alert/node"
    );
    for s in std::iter::once(&report.tocsin).chain(report.baseline.as_ref()) {
        let _ = writeln!(
            out,
            "{:<12} {:>5} {:>6} {:>7.1}% {:>7.1} {:>7.1} {:>7.1} {:>16}",
            s.system,
            s.nodes,
            s.alerts,
            s.delivery_ratio * 100.0,
            s.latency_ms_p50,
            s.latency_ms_p99,
            s.latency_ms_max,
            thousands(s.wire_bytes_per_alert_per_node)
        );
    }
    if let (Some(b), Some(r)) = (&report.baseline, &report.ratios) {
        let _ = writeln!(
            out,
            "ratio (tocsin/{}): bytes {:.2}x, p99 {:.2}x",
            b.system, r.bytes_per_alert, r.p99_latency
        );
    }
    out
}

/// `1234.6` → `"1,235"`.
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < -0.5 {
        out.insert(0, '-');
    }
    out
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1); 0 for none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Stats from the raw measurements.
fn run_stats(
    system: &str,
    plan: &Plan,
    mut latencies_ms: Vec<f64>,
    bytes_out: f64,
    wall_secs: f64,
) -> RunStats {
    latencies_ms.sort_by(f64::total_cmp);
    let expected = (plan.alerts() * (plan.nodes - 1)) as f64;
    RunStats {
        system: system.to_string(),
        nodes: plan.nodes,
        alerts: plan.alerts(),
        delivery_ratio: latencies_ms.len() as f64 / expected,
        latency_ms_p50: percentile(&latencies_ms, 0.50),
        latency_ms_p99: percentile(&latencies_ms, 0.99),
        latency_ms_max: latencies_ms.last().copied().unwrap_or_default(),
        wire_bytes_per_alert_per_node: bytes_out / plan.alerts() as f64 / plan.nodes as f64,
        wall_secs,
    }
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

// ---------------------------------------------------------------------------------
// Tocsin

/// Length of the padding text that makes the envelope of a bench alert `size` bytes
/// (0 if the unpadded alert is already larger), and the envelope size it gives.
pub fn text_padding(size: usize) -> Result<(usize, usize)> {
    let key = tocsin_proto::SigningKey::from_bytes(&[1u8; 32]);
    let envelope_len = |pad: usize| -> Result<usize> {
        let body = AlertBody {
            v: FORMAT_VERSION,
            origin: PublicKey(key.verifying_key().to_bytes()),
            issued_at: crate::format::now_ms(),
            expires_at: None,
            kind: Kind::New,
            replaces: None,
            severity: Severity::Info,
            tlp: Tlp::Clear,
            recipients: vec![],
            title: alert_title(0),
            text: "x".repeat(pad),
            indicators: vec![],
            tags: vec![],
            references: vec![],
        };
        let alert = SignedAlert::sign(body, &key).context("cannot build a sample alert")?;
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

/// `GET path` on a node's API socket, for the text answers (`/metrics`) that
/// [`Client`] (JSON only) does not read.
async fn get_text(socket: &Path, path: &str) -> Result<String> {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(QUERY_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("GET {path} on {} timed out", socket.display()))?
        .with_context(|| format!("GET {path} on {}", socket.display()))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: not an HTTP answer"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!(
            "GET {path} on {}: {}",
            socket.display(),
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_string())
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
        let text = get_text(&node.socket, "/metrics")
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

async fn run_tocsin(plan: &Plan, dir: &Path) -> Result<RunStats> {
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

/// Prints the TCP-level bytes next to the libp2p ones (stderr).
fn report_tcp(system: &str, plan: &Plan, before: Option<u64>, after: Option<u64>, libp2p: f64) {
    if let (Some(b), Some(a)) = (before, after) {
        let tcp = a.saturating_sub(b) as f64;
        eprintln!(
            "bench: {system}: TCP payload bytes (Noise + Yamux included) {tcp} = {:.0}/alert/node, {:.2}x the libp2p count",
            tcp / (plan.alerts() * plan.nodes) as f64,
            if libp2p > 0.0 { tcp / libp2p } else { f64::NAN }
        );
    }
}

/// Bytes acknowledged on every established loopback TCP connection to or from one of
/// `ports` (both ends counted, so the sum is the traffic in both directions), from
/// `ss -tinH`; None if `ss` is not available.
async fn tcp_bytes(ports: &HashSet<u16>) -> Option<u64> {
    let out = tokio::time::timeout(
        QUERY_TIMEOUT,
        tokio::process::Command::new("ss")
            .args(["-tinH", "state", "established"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(sum_ss(&String::from_utf8_lossy(&out.stdout), ports))
}

/// Parses `ss -tinH state established`: socket lines (`recv-q send-q local peer`)
/// each followed by an indented info line with `bytes_acked:N`.
fn sum_ss(text: &str, ports: &HashSet<u16>) -> u64 {
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
    };
    let mut total = 0;
    let mut ours = false;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            let addrs: Vec<&str> = line
                .split_whitespace()
                .filter(|w| w.contains(':'))
                .collect();
            ours = addrs.len() >= 2
                && addrs[addrs.len() - 2..]
                    .iter()
                    .all(|a| a.starts_with("127.0.0.1:"))
                && addrs[addrs.len() - 2..]
                    .iter()
                    .any(|a| port_of(a).is_some_and(|p| ports.contains(&p)));
        } else if ours {
            for w in line.split_whitespace() {
                if let Some(n) = w.strip_prefix("bytes_acked:") {
                    total += n.parse::<u64>().unwrap_or_default();
                }
            }
        }
    }
    total
}

// ---------------------------------------------------------------------------------
// Gossipsub

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

async fn run_gossipsub(plan: &Plan, exe: &Path, mesh_n: usize) -> Result<RunStats> {
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

    #[test]
    fn senders_are_seeded() {
        assert_eq!(senders(1, 10, 50), senders(1, 10, 50));
        assert_ne!(senders(1, 10, 50), senders(2, 10, 50));
        assert!(senders(3, 4, 100).iter().all(|&s| s < 4));
    }

    #[test]
    fn ss_output_is_summed_for_our_ports() {
        let text = "0 0 127.0.0.1:7400 127.0.0.1:50000\n\
             \t cubic bytes_sent:120 bytes_acked:100 bytes_received:50\n\
             0 0 127.0.0.1:50000 127.0.0.1:7400\n\
             \t cubic bytes_acked:40 bytes_received:100\n\
             0 0 127.0.0.1:22 127.0.0.1:50001\n\
             \t cubic bytes_acked:999\n";
        let ports: HashSet<u16> = [7400].into();
        assert_eq!(sum_ss(text, &ports), 140);
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
