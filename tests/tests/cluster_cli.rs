//! `tocsin-cluster` as a tester uses it, through the binary: up, issue, status, kill and
//! start with catch-up, partition and heal, down --clean, demo and bench.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tocsin_tests::run;
use tocsin_tools::cluster::{find_binary, Cluster};

fn cluster_cli(dir: &Path) -> Command {
    let mut c = Command::new(find_binary("tocsin-cluster").unwrap());
    c.arg("--dir").arg(dir);
    c
}

fn ok(cmd: &mut Command) -> String {
    let (out, err, code) = run(cmd);
    assert_eq!(code, 0, "{cmd:?} failed: {err}\n{out}");
    out
}

/// Stops whatever the test started, even when it fails.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = cluster_cli(self.0).args(["down", "--clean"]).output();
    }
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn ids_on(dir: &Path, i: usize) -> HashSet<String> {
    Cluster::load(dir)
        .unwrap()
        .alert_ids(i)
        .await
        .unwrap_or_default()
}

async fn wait_ids(dir: &Path, i: usize, want: &HashSet<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let have = ids_on(dir, i).await;
        if want.is_subset(&have) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} has {} of {} alerts",
            i + 1,
            want.intersection(&have).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn issue(dir: &Path, node: usize, title: &str) -> String {
    let out = ok(cluster_cli(dir).args([
        "issue",
        "--node",
        &node.to_string(),
        "--severity",
        "high",
        "--tlp",
        "CLEAR",
        "--title",
        title,
    ]));
    let id = out.trim().to_string();
    assert_eq!(id.len(), 64, "issue prints the id: {out}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_issue_kill_start_partition_heal_down_on_a_six_node_ring() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tc");
    let _down = Down(&dir);

    let out = ok(cluster_cli(&dir).args(["up", "--nodes", "6", "--topology", "ring"]));
    assert!(out.contains("6 nodes up, 6 links connected"), "{out}");
    let cluster = Cluster::load(&dir).unwrap();
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid.unwrap()).collect();
    assert!(pids.iter().all(|p| pid_alive(*p)), "nodes outlive `up`");

    // issue reaches all 6
    let first = issue(&dir, 1, "ring alert");
    let want: HashSet<String> = [first.clone()].into();
    for i in 0..6 {
        wait_ids(&dir, i, &want).await;
    }
    let status: Value =
        serde_json::from_str(&ok(cluster_cli(&dir).args(["--json", "status"]))).unwrap();
    for n in status["nodes"].as_array().unwrap() {
        assert_eq!(n["up"], true);
        assert_eq!(n["alerts"], 1, "{n}");
        assert_eq!(
            n["connected"].as_array().unwrap().len(),
            2,
            "ring: two neighbours: {n}"
        );
    }

    // kill 4, issue while it is down, start it: it catches up
    ok(cluster_cli(&dir).args(["kill", "4"]));
    assert!(!pid_alive(pids[3]));
    let mut missed = HashSet::new();
    for k in 0..5 {
        missed.insert(issue(&dir, 1, &format!("while 4 was down #{k}")));
    }
    ok(cluster_cli(&dir).args(["start", "4"]));
    wait_ids(&dir, 3, &missed).await;

    // partition 1,2,3 / 4,5,6, issue on both sides, heal: everyone converges
    ok(cluster_cli(&dir).args(["partition", "1,2,3", "/", "4,5,6"]));
    let left = issue(&dir, 2, "left side");
    let right = issue(&dir, 5, "right side");
    wait_ids(&dir, 0, &[left.clone()].into()).await;
    wait_ids(&dir, 5, &[right.clone()].into()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!ids_on(&dir, 5).await.contains(&left), "partition holds");
    assert!(!ids_on(&dir, 0).await.contains(&right), "partition holds");
    ok(cluster_cli(&dir).args(["heal"]));
    let all: HashSet<String> = [first, left, right].into_iter().chain(missed).collect();
    for i in 0..6 {
        wait_ids(&dir, i, &all).await;
    }

    let logs = ok(cluster_cli(&dir).args(["logs", "1", "--lines", "5"]));
    assert!(!logs.trim().is_empty());

    // down --clean: no process, no directory
    let pids: Vec<u32> = Cluster::load(&dir)
        .unwrap()
        .nodes
        .iter()
        .filter_map(|n| n.pid)
        .collect();
    ok(cluster_cli(&dir).args(["down", "--clean"]));
    assert!(!dir.exists(), "directory removed");
    for p in pids {
        assert!(!pid_alive(p), "process {p} still running after down");
    }
}

#[test]
fn demo_exits_0_and_shows_the_alert_arriving_at_all_five_nodes() {
    let (out, err, code) = run(Command::new(find_binary("tocsin-cluster").unwrap()).arg("demo"));
    assert_eq!(code, 0, "{err}\n{out}");
    for n in 1..=5 {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("n{n} ")) && l.contains('→') == (n > 1)),
            "arrival at n{n} shown:\n{out}"
        );
    }
    assert!(out.contains("n1 → n2 → n3 → n4 → n5"), "path shown:\n{out}");
    assert!(
        out.contains("tocsin-cluster up"),
        "says what to run next:\n{out}"
    );
}

#[test]
fn bench_runs_on_a_small_cluster_and_its_json_parses() {
    let (out, err, code) = run(Command::new(find_binary("tocsin-cluster").unwrap()).args([
        "--json",
        "bench",
        "--nodes",
        "3",
        "--topology",
        "line",
        "--alerts",
        "5",
        "--rate",
        "50",
    ]));
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["tocsin"]["nodes"], 3);
    assert_eq!(report["tocsin"]["alerts"], 5);
    assert_eq!(report["tocsin"]["delivery_ratio"], 1.0, "{report}");
    assert!(
        report["tocsin"]["wire_bytes_per_alert_per_node"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}
