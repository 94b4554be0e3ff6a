//! Local federations of real `tocsind` processes, for testers and for the project's own
//! multi-process tests.
//!
//! A cluster lives in a directory: `cluster.json` (nodes, keys, ports, pids, planned
//! links) and one data directory per node (`n1/`, `n2/`, …) with its key, config, database,
//! API socket and `tocsind.log`. Every command of `tocsin-cluster` loads that file, so
//! later commands in other shells find the cluster.
//!
//! Each node listens on a loopback TCP port picked when the cluster is created and kept
//! across restarts, so peers redial a restarted node at the same address. Trust is
//! written into each node's `config.toml` as `[[peers]]` entries matching the topology.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tocsin_proto::TrustLevel;

use crate::client::{Client, Endpoint};

/// The state file inside a cluster directory.
pub const STATE_FILE: &str = "cluster.json";
/// How often waits poll the nodes.
pub const POLL: Duration = Duration::from_millis(50);

/// How nodes are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Topology {
    /// 1–2–3–…–N
    Line,
    /// A line closed into a ring.
    Ring,
    /// Node 1 linked to every other node.
    Star,
    /// Every pair linked.
    Mesh,
    /// Each node links to K random others (plus a ring, so the graph is connected).
    Random(usize),
}

impl FromStr for Topology {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "line" => Topology::Line,
            "ring" => Topology::Ring,
            "star" => Topology::Star,
            "mesh" => Topology::Mesh,
            _ => match s.strip_prefix("random:") {
                Some(k) => Topology::Random(
                    k.parse()
                        .map_err(|_| anyhow!("random:K needs a number, got {k:?}"))?,
                ),
                None => bail!("unknown topology {s:?}: use line, ring, star, mesh or random:K"),
            },
        })
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Line => f.write_str("line"),
            Topology::Ring => f.write_str("ring"),
            Topology::Star => f.write_str("star"),
            Topology::Mesh => f.write_str("mesh"),
            Topology::Random(k) => write!(f, "random:{k}"),
        }
    }
}

/// Trust levels given to the planned links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Levels {
    /// Every link `member`.
    Member,
    /// Every link `partner`.
    Partner,
    /// Each link `public`, `member` or `partner` at random (seeded).
    Mixed,
}

impl FromStr for Levels {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "member" => Ok(Levels::Member),
            "partner" => Ok(Levels::Partner),
            "mixed" => Ok(Levels::Mixed),
            _ => bail!("unknown levels {s:?}: use member, partner or mixed"),
        }
    }
}

/// A planned link between nodes `a` and `b` (0-based), with each side's trust level
/// for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub a: usize,
    pub b: usize,
    /// `a`'s level for `b`.
    pub ab: TrustLevel,
    /// `b`'s level for `a`.
    pub ba: TrustLevel,
}

impl Link {
    /// A link with the same level both ways.
    pub fn sym(a: usize, b: usize, level: TrustLevel) -> Link {
        Link {
            a,
            b,
            ab: level,
            ba: level,
        }
    }
}

/// Plans the links of a topology.
pub fn plan(topology: Topology, n: usize, levels: Levels, seed: u64) -> Vec<Link> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
    let add = |a: usize, b: usize, pairs: &mut BTreeSet<(usize, usize)>| {
        if a != b {
            pairs.insert((a.min(b), a.max(b)));
        }
    };
    match topology {
        Topology::Line => (1..n).for_each(|i| add(i - 1, i, &mut pairs)),
        Topology::Ring => {
            (1..n).for_each(|i| add(i - 1, i, &mut pairs));
            if n > 2 {
                add(n - 1, 0, &mut pairs);
            }
        }
        Topology::Star => (1..n).for_each(|i| add(0, i, &mut pairs)),
        Topology::Mesh => {
            for a in 0..n {
                for b in a + 1..n {
                    add(a, b, &mut pairs);
                }
            }
        }
        Topology::Random(k) => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            for w in order.windows(2) {
                add(w[0], w[1], &mut pairs);
            }
            if n > 2 {
                add(order[n - 1], order[0], &mut pairs);
            }
            for a in 0..n {
                let extra = k.saturating_sub(2).min(n.saturating_sub(1));
                for _ in 0..extra {
                    let b = rng.gen_range(0..n);
                    add(a, b, &mut pairs);
                }
            }
        }
    }
    pairs
        .into_iter()
        .map(|(a, b)| {
            let level = match levels {
                Levels::Member => TrustLevel::Member,
                Levels::Partner => TrustLevel::Partner,
                Levels::Mixed => *[TrustLevel::Public, TrustLevel::Member, TrustLevel::Partner]
                    .choose(&mut rng)
                    .unwrap_or(&TrustLevel::Member),
            };
            Link::sym(a, b, level)
        })
        .collect()
}

/// One node of a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `n1`, `n2`, …
    pub name: String,
    /// Public key, hex.
    pub key: String,
    pub peer_id: String,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// Loopback TCP port for libp2p.
    pub port: u16,
    /// The running process, if any.
    pub pid: Option<u32>,
}

impl NodeInfo {
    /// The libp2p address peers dial.
    pub fn addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.port)
    }

    /// An API client for the node.
    pub fn client(&self) -> Client {
        Client::new(Endpoint::Unix(self.socket.clone()))
    }

    /// The node's log file.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("tocsind.log")
    }
}

/// Options for [`Cluster::create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The `tocsind` binary.
    pub tocsind: PathBuf,
    /// Enable the test-control endpoints (needed by `partition`).
    pub test_control: bool,
    /// `[net]` options to override, as `(name, TOML value)`.
    pub net: Vec<(String, String)>,
}

impl CreateOptions {
    /// Defaults for local federations: the `tocsind` next to this executable, test
    /// control on, fast redial.
    pub fn local() -> Result<CreateOptions> {
        Ok(CreateOptions {
            tocsind: find_binary("tocsind")?,
            test_control: true,
            net: vec![
                ("dial_backoff_initial_ms".into(), "100".into()),
                ("dial_backoff_max_ms".into(), "2000".into()),
            ],
        })
    }
}

/// A cluster: see the module docs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cluster {
    pub dir: PathBuf,
    pub tocsind: PathBuf,
    pub nodes: Vec<NodeInfo>,
    pub links: Vec<Link>,
    /// Groups of the current partition (0-based), if any.
    #[serde(default)]
    pub partition: Vec<Vec<usize>>,
    #[serde(skip)]
    children: HashMap<usize, Child>,
}

/// Finds a sibling binary: `$TOCSIN_BIN_DIR/NAME`, next to the current executable, one
/// level up (cargo's `target/debug/deps` for tests), or on `PATH`.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("TOCSIN_BIN_DIR") {
        candidates.push(PathBuf::from(dir).join(name));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("cannot find the `{name}` binary next to this program or on PATH; build it with `cargo build --workspace` or set TOCSIN_BIN_DIR"))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot pick a free port")?;
    Ok(l.local_addr()?.port())
}

/// Replaces the `name = …` line of the `[net]` section (or any top-level option) in a
/// config written by `tocsind init`.
fn set_option(text: &str, name: &str, value: &str) -> Result<String> {
    let prefix = format!("{name} = ");
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.starts_with(&prefix) {
                found = true;
                format!("{name} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        bail!("config option {name} not found in the generated config");
    }
    Ok(out.join("\n") + "\n")
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still answers kill(0); check /proc for its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

impl Cluster {
    /// Creates `n` nodes in `dir` (which must not hold a cluster already) with the given
    /// links written into their configs. Does not start them.
    pub fn create(dir: &Path, n: usize, links: Vec<Link>, opts: &CreateOptions) -> Result<Cluster> {
        if n == 0 {
            bail!("a cluster needs at least one node");
        }
        if dir.join(STATE_FILE).exists() {
            bail!(
                "{} already holds a cluster; run `tocsin-cluster down --clean --dir {}` first",
                dir.display(),
                dir.display()
            );
        }
        for l in &links {
            if l.a >= n || l.b >= n || l.a == l.b {
                bail!(
                    "link {}–{} is not between two of the {n} nodes",
                    l.a + 1,
                    l.b + 1
                );
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = std::fs::canonicalize(dir)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let data_dir = dir.join(&name);
            let port = free_port()?;
            let out = Command::new(&opts.tocsind)
                .arg("init")
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--listen")
                .arg(format!("/ip4/127.0.0.1/tcp/{port}"))
                .arg("--json")
                .output()
                .with_context(|| format!("cannot run {}", opts.tocsind.display()))?;
            if !out.status.success() {
                bail!(
                    "tocsind init for {name} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let v: Value =
                serde_json::from_slice(&out.stdout).context("tocsind init --json output")?;
            let key = v["public_key"].as_str().unwrap_or_default().to_string();
            let peer_id = v["peer_id"].as_str().unwrap_or_default().to_string();
            nodes.push(NodeInfo {
                socket: data_dir.join("tocsind.sock"),
                name,
                key,
                peer_id,
                data_dir,
                port,
                pid: None,
            });
        }
        for (i, node) in nodes.iter().enumerate() {
            let path = node.data_dir.join("config.toml");
            let mut text = std::fs::read_to_string(&path)?;
            if opts.test_control {
                text = set_option(&text, "test_control", "true")?;
            }
            for (k, v) in &opts.net {
                text = set_option(&text, k, v)?;
            }
            for l in &links {
                let (other, level) = if l.a == i {
                    (l.b, l.ab)
                } else if l.b == i {
                    (l.a, l.ba)
                } else {
                    continue;
                };
                let o = &nodes[other];
                // Only the lower-numbered side dials; the other accepts. Both trust.
                let addrs = if i < other {
                    format!("[\"{}\"]", o.addr())
                } else {
                    "[]".into()
                };
                text.push_str(&format!(
                    "\n[[peers]]\nkey = \"{}\"\nlevel = \"{}\"\nname = \"{}\"\naddrs = {addrs}\n",
                    o.key, level, o.name
                ));
            }
            std::fs::write(&path, text)?;
        }
        let cluster = Cluster {
            dir,
            tocsind: opts.tocsind.clone(),
            nodes,
            links,
            partition: Vec::new(),
            children: HashMap::new(),
        };
        cluster.save()?;
        Ok(cluster)
    }

    /// Loads the cluster in `dir`.
    pub fn load(dir: &Path) -> Result<Cluster> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no cluster in {} (start one with `tocsin-cluster up --dir {}`)",
                dir.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))
    }

    /// Writes `cluster.json`.
    pub fn save(&self) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Node `i` (0-based), or an error naming the valid range (1-based, as users count).
    pub fn node(&self, i: usize) -> Result<&NodeInfo> {
        self.nodes.get(i).ok_or_else(|| {
            anyhow!(
                "no node {}: this cluster has nodes 1..={}",
                i + 1,
                self.nodes.len()
            )
        })
    }

    /// Whether node `i`'s process is running.
    pub fn is_up(&mut self, i: usize) -> bool {
        if let Some(child) = self.children.get_mut(&i) {
            if matches!(child.try_wait(), Ok(Some(_))) {
                self.children.remove(&i);
                return false;
            }
        }
        self.nodes.get(i).and_then(|n| n.pid).is_some_and(pid_alive)
    }

    /// Starts node `i` (no-op if it is running). Its output goes to `tocsind.log`.
    pub fn start(&mut self, i: usize) -> Result<()> {
        if self.is_up(i) {
            return Ok(());
        }
        let node = self.node(i)?.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())?;
        let mut cmd = Command::new(&self.tocsind);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&node.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,libp2p_swarm=warn,libp2p_tcp=warn");
        }
        // Own process group: a Ctrl-C in the shell that ran `up` does not kill the nodes.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.tocsind.display()))?;
        self.nodes[i].pid = Some(child.id());
        self.children.insert(i, child);
        self.save()
    }

    /// Waits until node `i` answers on its API socket.
    pub async fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.node(i)?.client();
        loop {
            if client.status().await.is_ok() {
                return Ok(());
            }
            if !self.is_up(i) {
                let log = std::fs::read_to_string(self.node(i)?.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "node {} exited during start-up; last log lines:\n{}",
                    i + 1,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} did not answer on {} within {timeout:?}",
                    i + 1,
                    self.node(i)?.socket.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts every node and waits for their APIs.
    pub async fn start_all(&mut self, timeout: Duration) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i, timeout).await?;
        }
        Ok(())
    }

    /// Keys of the peers node `i` is connected to.
    pub async fn connected(&self, i: usize) -> Result<HashSet<String>> {
        let v = self.node(i)?.client().get("/v1/peers").await?;
        Ok(v["peers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["connected"].as_bool() == Some(true))
                    .filter_map(|p| p["key"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn crosses_partition(&self, a: usize, b: usize) -> bool {
        let group = |x: usize| self.partition.iter().position(|g| g.contains(&x));
        matches!((group(a), group(b)), (Some(ga), Some(gb)) if ga != gb)
    }

    /// Links whose two ends are up and not separated by a partition, as (a, b).
    pub fn expected_links(&mut self) -> Vec<(usize, usize)> {
        let links: Vec<Link> = self
            .links
            .iter()
            .filter(|l| {
                TrustLevel::may_connect(Some(l.ab))
                    && TrustLevel::may_connect(Some(l.ba))
                    && !self.crosses_partition(l.a, l.b)
            })
            .copied()
            .collect();
        links
            .into_iter()
            .filter(|l| self.is_up(l.a) && self.is_up(l.b))
            .map(|l| (l.a, l.b))
            .collect()
    }

    /// Waits until every expected link is connected at both ends.
    pub async fn wait_links(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let expected = self.expected_links();
            let mut missing = Vec::new();
            let mut cache: HashMap<usize, HashSet<String>> = HashMap::new();
            for (a, b) in expected {
                for (x, y) in [(a, b), (b, a)] {
                    if let std::collections::hash_map::Entry::Vacant(e) = cache.entry(x) {
                        e.insert(self.connected(x).await.unwrap_or_default());
                    }
                    let key = &self.nodes[y].key;
                    if !cache.get(&x).is_some_and(|s| s.contains(key)) {
                        missing.push(format!("{}→{}", x + 1, y + 1));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "links not connected after {timeout:?}: {}",
                    missing.join(", ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let pid = self.node(i)?.pid;
        if let Some(pid) = pid {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
            self.reap(i, pid, Duration::from_secs(5));
        }
        self.nodes[i].pid = None;
        self.save()
    }

    /// SIGTERMs node `i` and waits for it to exit (SIGKILL after `timeout`).
    pub fn stop(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let pid = self.node(i)?.pid;
        if let Some(pid) = pid {
            signal(pid, nix::sys::signal::Signal::SIGTERM);
            if !self.reap(i, pid, timeout) {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
                self.reap(i, pid, Duration::from_secs(5));
            }
        }
        self.nodes[i].pid = None;
        self.save()
    }

    /// Waits for the process to exit; true if it did.
    fn reap(&mut self, i: usize, pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let gone = match self.children.get_mut(&i) {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => !pid_alive(pid),
            };
            if gone {
                self.children.remove(&i);
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every node (SIGTERM, then SIGKILL after `timeout`).
    pub fn stop_all(&mut self, timeout: Duration) -> Result<()> {
        for i in 0..self.nodes.len() {
            if let Some(pid) = self.nodes[i].pid {
                signal(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        for i in 0..self.nodes.len() {
            self.stop(i, timeout)?;
        }
        Ok(())
    }

    /// Cuts the links between groups (0-based node indexes) through the nodes'
    /// test-control endpoints: each node drops and refuses the peers outside its group.
    pub async fn partition(&mut self, groups: Vec<Vec<usize>>) -> Result<()> {
        for g in &groups {
            for &i in g {
                self.node(i)?;
            }
        }
        for (gi, g) in groups.iter().enumerate() {
            let others: Vec<String> = groups
                .iter()
                .enumerate()
                .filter(|(gj, _)| *gj != gi)
                .flat_map(|(_, o)| o.iter().map(|&j| self.nodes[j].key.clone()))
                .collect();
            for &i in g {
                if !self.is_up(i) {
                    continue;
                }
                self.nodes[i]
                    .client()
                    .post("/v1/test/partition", &json!({"peers": others}))
                    .await
                    .with_context(|| {
                        format!("partition on node {} (is test_control enabled?)", i + 1)
                    })?;
            }
        }
        self.partition = groups;
        self.save()
    }

    /// Restores every partitioned link.
    pub async fn heal(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.is_up(i) {
                self.nodes[i]
                    .client()
                    .post("/v1/test/heal", &json!({}))
                    .await
                    .with_context(|| format!("heal on node {}", i + 1))?;
            }
        }
        self.partition.clear();
        self.save()
    }

    /// Ids of the alerts node `i` stores.
    pub async fn alert_ids(&self, i: usize) -> Result<HashSet<String>> {
        let client = self.node(i)?.client();
        let mut ids = HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/alerts?limit=1000&cursor={}", crate::client::encode(c)),
                None => "/v1/alerts?limit=1000".to_string(),
            };
            let v = client.get(&path).await?;
            for a in v["alerts"].as_array().into_iter().flatten() {
                if let Some(id) = a["id"].as_str() {
                    ids.insert(id.to_string());
                }
            }
            match v["next"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(ids),
            }
        }
    }

    /// Waits until `pred(i)` holds for node `i`'s alert ids.
    pub async fn wait_alerts(
        &self,
        i: usize,
        timeout: Duration,
        pred: impl Fn(&HashSet<String>) -> bool,
    ) -> Result<HashSet<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let ids = self.alert_ids(i).await.unwrap_or_default();
            if pred(&ids) {
                return Ok(ids);
            }
            if Instant::now() > deadline {
                bail!(
                    "node {}: condition on its alerts not met within {timeout:?} (it holds {})",
                    i + 1,
                    ids.len()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Cluster {
    /// Leaves the processes this value started running after it is dropped (for
    /// `tocsin-cluster up`, whose nodes outlive the command).
    pub fn detach(&mut self) {
        self.children.clear();
    }
}

impl Drop for Cluster {
    /// Processes this value started itself (tests) are killed with it; nodes started
    /// by an earlier `tocsin-cluster` command are left running.
    fn drop(&mut self) {
        for (_, mut child) in self.children.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_have_the_expected_links() {
        assert_eq!(plan(Topology::Line, 5, Levels::Member, 1).len(), 4);
        assert_eq!(plan(Topology::Ring, 6, Levels::Member, 1).len(), 6);
        assert_eq!(plan(Topology::Star, 5, Levels::Member, 1).len(), 4);
        assert_eq!(plan(Topology::Mesh, 5, Levels::Member, 1).len(), 10);
        let r = plan(Topology::Random(3), 20, Levels::Mixed, 7);
        assert!(r.len() >= 20, "random:3 keeps at least the ring");
        assert_eq!(r, plan(Topology::Random(3), 20, Levels::Mixed, 7), "seeded");
        assert!("random:x".parse::<Topology>().is_err());
        assert_eq!("random:4".parse::<Topology>().unwrap(), Topology::Random(4));
    }

    #[test]
    fn set_option_replaces_one_line() {
        let t = "a = 1\ntest_control = false\nb = 2\n";
        assert_eq!(
            set_option(t, "test_control", "true").unwrap(),
            "a = 1\ntest_control = true\nb = 2\n"
        );
        assert!(set_option(t, "nope", "1").is_err());
    }
}
