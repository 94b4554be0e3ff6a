//! Local federations of real `tocsind` processes, for testers and for the project's own
//! multi-process tests.
//!
//! A cluster lives in a directory: `cluster.json` (nodes, keys, ports, pids, planned
//! links) and one data directory per node (`n1/`, `n2/`, …) with its key, config, database,
//! API socket and `tocsind.log`. Every command of `tocsin-cluster` loads that file, so
//! later commands in other shells find the cluster.
//!
//! Each node listens on a loopback TCP port that the kernel picks at its first start
//! (`/tcp/0`); the cluster reads it back and pins it in the node's config, so peers
//! redial a restarted node at the same address. Nodes first start one at a time, in
//! order, and trust is written into each node's `config.toml` as `[[peers]]` entries
//! matching the topology just before that: of each link the higher-numbered node dials
//! the lower, whose port is known by then. (A port picked in advance and handed to the
//! daemon could be taken by another process in between.)
//!
//! # Layout
//! - `topology`: [`Topology`], [`Levels`], [`Link`] and [`plan`].
//! - `config`: each node's data directory (`tocsind init`) and `config.toml`.
//! - `process`: starting, signalling and reaping the `tocsind` processes.
//! - `wait`: waiting for APIs, links and alerts.
//! - `partition`: cutting and healing links through the test-control endpoints.

mod config;
mod partition;
mod process;
mod topology;
mod wait;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::client::{Client, Endpoint};
pub use topology::{plan, Levels, Link, Topology};

/// The state file inside a cluster directory.
pub const STATE_FILE: &str = "cluster.json";
/// How often waits poll the nodes.
pub const POLL: Duration = Duration::from_millis(50);

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
    /// Loopback TCP port for libp2p; 0 until the node first started.
    pub port: u16,
    /// The running process, if any.
    pub pid: Option<u32>,
    /// Whether its `[[peers]]` are in its config (written once, at its first start).
    #[serde(default)]
    pub peers_written: bool,
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
            nodes.push(config::init_node(&opts.tocsind, &dir, i)?);
        }
        for node in &nodes {
            config::write_options(node, opts)?;
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
}
