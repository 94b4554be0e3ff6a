//! # tocsin-tests
//!
//! Helpers for the multi-process tests in `tests/tests/`: real `tocsind` processes on
//! 127.0.0.1 in temporary directories (through [`tocsin_tools::cluster`]), the real
//! `tocsin` CLI, and a raw libp2p peer that can send arbitrary gossip frames.
//!
//! Every wait has a timeout, and every process a test starts is killed when its
//! [`Fed`] is dropped, even when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod rawpeer;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tocsin_proto::TrustLevel;
use tocsin_tools::cluster::{find_binary, Cluster, CreateOptions, Link};

/// How long a federation may take to start and link up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of each node's log a failed start prints.
const LOG_TAIL_LINES: usize = 60;
/// How long an alert may take to arrive where it is expected.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long we watch for something that must NOT arrive.
pub const QUIET_PERIOD: Duration = Duration::from_millis(1500);

/// A running federation in a temporary directory.
pub struct Fed {
    pub cluster: Cluster,
    pub dir: TempDir,
}

impl Fed {
    /// Creates `n` nodes with `links`, starts them and waits for the links.
    pub async fn start(n: usize, links: Vec<Link>) -> Fed {
        let dir = tempfile::tempdir().unwrap();
        let opts = CreateOptions::local().unwrap();
        let mut cluster = Cluster::create(dir.path(), n, links, &opts).unwrap();
        let fed_started = cluster.start_all(START_TIMEOUT).await;
        let linked = match fed_started {
            Ok(()) => cluster.wait_links(START_TIMEOUT).await,
            Err(e) => Err(e),
        };
        let fed = Fed { cluster, dir };
        if let Err(e) = linked {
            fed.print_logs();
            panic!("federation did not start: {e:#}");
        }
        fed
    }

    /// Prints the end of every node's log, so that a failure on CI can be diagnosed.
    pub fn print_logs(&self) {
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            let text = std::fs::read_to_string(node.log_path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "---- node {} ({}) log tail ----",
                i + 1,
                node.log_path().display()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }

    /// A line of `n` nodes, every link at `level`.
    pub async fn line(n: usize, level: TrustLevel) -> Fed {
        let links = (1..n).map(|i| Link::sym(i - 1, i, level)).collect();
        Fed::start(n, links).await
    }

    /// The public key of node `i` (0-based).
    pub fn key(&self, i: usize) -> String {
        self.cluster.nodes[i].key.clone()
    }

    /// Issues an alert on node `i` through the API; returns its id.
    pub async fn issue(&self, i: usize, body: Value) -> String {
        let v = self.cluster.nodes[i]
            .client()
            .post("/v1/alerts", &body)
            .await
            .unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// One alert as node `i` sees it (None if it does not hold it).
    pub async fn get(&self, i: usize, id: &str) -> Option<Value> {
        self.cluster.nodes[i]
            .client()
            .get(&format!("/v1/alerts/{id}"))
            .await
            .ok()
    }

    /// Waits until node `i` holds `id`.
    pub async fn wait_for(&self, i: usize, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            if let Some(v) = self.get(i, id).await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} did not receive {id} within {ARRIVAL_TIMEOUT:?}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts that node `i` still does not hold `id` after the quiet period (call
    /// after the alert has reached the nodes that should have it).
    pub async fn assert_absent(&self, i: usize, id: &str) {
        assert!(
            self.get(i, id).await.is_none(),
            "node {} holds {id} but must not",
            i + 1
        );
    }

    /// `/v1/peers` of node `i`.
    pub async fn peers(&self, i: usize) -> Vec<Value> {
        let v = self.cluster.nodes[i]
            .client()
            .get("/v1/peers")
            .await
            .unwrap();
        v["peers"].as_array().cloned().unwrap_or_default()
    }

    /// Node `i`'s row for peer `key` in `/v1/peers`.
    pub async fn peer_row(&self, i: usize, key: &str) -> Option<Value> {
        self.peers(i)
            .await
            .into_iter()
            .find(|p| p["key"].as_str() == Some(key))
    }

    /// A raw peer with key `[seed; 32]`, added to node `i`'s trust table at `member` and
    /// connected to it; with its public key as hex.
    pub async fn trusted_raw_peer(
        &self,
        i: usize,
        seed: u8,
    ) -> (tocsin_proto::SigningKey, rawpeer::RawPeer, String) {
        let raw = tocsin_proto::SigningKey::from_bytes(&[seed; 32]);
        let key = tocsin_proto::PublicKey(raw.verifying_key().to_bytes()).to_string();
        let node = &self.cluster.nodes[i];
        node.client()
            .post(
                "/v1/trust",
                &serde_json::json!({"key": key, "level": "member", "name": format!("raw {seed}")}),
            )
            .await
            .unwrap();
        let target: libp2p::PeerId = node.peer_id.parse().unwrap();
        match rawpeer::connect(&raw, node.addr().parse().unwrap(), target).await {
            rawpeer::Connect::Open(peer) => (raw, *peer, key),
            rawpeer::Connect::Refused(e) => panic!("a trusted key must be able to connect: {e}"),
        }
    }

    /// Stops node `i` gracefully (SIGTERM), starts it again and waits until it serves.
    pub async fn restart(&mut self, i: usize) {
        self.restart_with_database(i, |_| {}).await;
    }

    /// Stops node `i`, hands `f` the path of its database (to copy it, or to put a
    /// copy back), starts it again and waits until it serves.
    pub async fn restart_with_database(&mut self, i: usize, f: impl FnOnce(&std::path::Path)) {
        self.cluster.stop(i, Duration::from_secs(10)).unwrap();
        f(&self.cluster.nodes[i].data_dir.join("tocsin.redb"));
        self.cluster.start(i).unwrap();
        self.cluster.wait_ready(i, START_TIMEOUT).await.unwrap();
    }

    /// The `tocsin` CLI aimed at node `i`.
    pub fn tocsin(&self, i: usize) -> Command {
        tocsin_cli(&self.cluster.nodes[i].socket)
    }
}

impl Drop for Fed {
    fn drop(&mut self) {
        let _ = self.cluster.stop_all(Duration::from_secs(5));
        // On failure, show what each node said: the temp dir is about to disappear.
        if std::thread::panicking() {
            for n in &self.cluster.nodes {
                let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("---- {} ({}) last log lines ----", n.name, &n.key[..8]);
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// The `tocsin` CLI binary.
pub fn tocsin_bin() -> PathBuf {
    find_binary("tocsin").unwrap()
}

/// The `tocsind` binary.
pub fn tocsind_bin() -> PathBuf {
    find_binary("tocsind").unwrap()
}

/// `tocsin --socket SOCKET`.
pub fn tocsin_cli(socket: &std::path::Path) -> Command {
    let mut c = Command::new(tocsin_bin());
    c.arg("--socket").arg(socket);
    c
}

/// Runs a command, returning its output (stdout, stderr as text, exit code).
pub fn run(cmd: &mut Command) -> (String, String, i32) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
        status.code().unwrap_or(-1),
    )
}

/// Ids no alert has: batch `batch` of 1024, for floods of made-up announces and wants.
pub fn made_up_ids(batch: u32) -> Vec<tocsin_proto::AlertId> {
    (0..1024u32)
        .map(|i| {
            let mut b = [0xa5u8; 32];
            b[..4].copy_from_slice(&batch.to_be_bytes());
            b[4..8].copy_from_slice(&i.to_be_bytes());
            tocsin_proto::AlertId(b)
        })
        .collect()
}

/// A typical alert request body.
pub fn alert(tlp: &str, title: &str) -> Value {
    serde_json::json!({"severity": "high", "tlp": tlp, "title": title})
}

/// Serialises the installs of [`python_tool`] within one test binary.
static PYTHON_INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A virtualenv under `target/py-<name>` with `packages` (pinned) installed from PyPI on
/// first use, for checking output against a reference implementation of a standard.
/// Returns the virtualenv's directory; `Err(why)` where Python or PyPI is not
/// available (the caller then skips that check and prints why).
pub fn python_tool(name: &str, packages: &[&str]) -> Result<PathBuf, String> {
    let _guard = PYTHON_INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let venv = target.join(format!("py-{name}"));
    let done = venv.join("installed");
    if done.exists() {
        return Ok(venv);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("python3 is not available ({e})"))?;
    if !made.status.success() {
        return Err(format!(
            "python3 -m venv failed: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .output()
        .map_err(|e| format!("pip did not run ({e})"))?;
    if !pip.status.success() {
        return Err(format!(
            "pip install {} failed: {}",
            packages.join(" "),
            String::from_utf8_lossy(&pip.stderr)
        ));
    }
    std::fs::write(&done, packages.join("\n")).map_err(|e| e.to_string())?;
    Ok(venv)
}

/// The STIX validator the tests check bundles with (pinned).
pub const STIX_VALIDATOR: &str = "stix2-validator==3.3.2";

/// Checks the STIX bundle in `file` with the OASIS validator (`stix2_validator`, from
/// `TOCSIN_STIX_VALIDATOR` or installed from PyPI on first use) in strict mode:
/// warnings are errors. Where Python or the package is missing, prints why the check
/// is skipped ("SKIPPED …"): it never passes silently.
pub fn validate_stix(file: &std::path::Path) {
    let bin = match std::env::var("TOCSIN_STIX_VALIDATOR") {
        Ok(path) => Ok(PathBuf::from(path)),
        Err(_) => {
            python_tool("stix-validator", &[STIX_VALIDATOR]).map(|v| v.join("bin/stix2_validator"))
        }
    };
    match bin {
        Ok(bin) => {
            let (stdout, stderr, code) = run(Command::new(bin)
                .args(["--strict", "--version", "2.1"])
                .arg(file));
            assert_eq!(
                code,
                0,
                "stix2_validator --strict refused {}:\n{stdout}\n{stderr}",
                file.display()
            );
        }
        Err(why) => eprintln!("SKIPPED the STIX validator check: {why}"),
    }
}
