//! The trust table under concurrent changes and crashes, against a real `tocsind`.
//!
//! The network actor is the one owner of trust: concurrent changes to different peers
//! all survive, and each change is committed together with its audit line, so a
//! `kill -9` at any moment never leaves an entry without the audit line that made it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};
use tocsin_tools::client::Client;
use tocsin_tools::cluster::{Cluster, CreateOptions};

const START: Duration = Duration::from_secs(20);

async fn one_node() -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::create(dir.path(), 1, vec![], &CreateOptions::local().unwrap()).unwrap();
    c.start_all(START).await.unwrap();
    (dir, c)
}

/// A valid ed25519 public key, hex, distinct for each `n`.
fn peer_key(n: u32) -> String {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    tocsin_proto::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn table(c: &Client) -> BTreeMap<String, String> {
    let v = c.get("/v1/trust").await.unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["level"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn audit(c: &Client) -> Vec<Value> {
    let v = c.get("/v1/trust-audit").await.unwrap();
    v["records"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_to_different_peers_all_survive_with_audit_lines() {
    let (_dir, mut cluster) = one_node().await;
    let client = cluster.nodes[0].client();
    // Two existing entries, then many concurrent changes: patches of both, and adds.
    for n in 0..2 {
        client
            .post(
                "/v1/trust",
                &json!({"key": peer_key(n), "level": "public", "name": format!("p{n}")}),
            )
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for n in 0..2u32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.call(
                Method::PUT,
                &format!("/v1/trust/{}", peer_key(n)),
                Some(&json!({"level": "partner", "reason": format!("upgrade {n}")})),
            )
            .await
        }));
    }
    for n in 2..12u32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.post(
                "/v1/trust",
                &json!({"key": peer_key(n), "level": "member", "name": format!("p{n}")}),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let t = table(&client).await;
    assert_eq!(t.len(), 12, "{t:?}");
    for n in 0..2 {
        assert_eq!(t[&peer_key(n)], "partner", "patch of p{n} lost");
    }
    for n in 2..12 {
        assert_eq!(t[&peer_key(n)], "member", "add of p{n} lost");
    }
    let records = audit(&client).await;
    assert_eq!(records.len(), 14, "one audit line per change: {records:?}");
    for n in 0..2 {
        let key = peer_key(n);
        let last = records.iter().rev().find(|r| r["key"] == key).unwrap();
        assert_eq!(last["old"], "public");
        assert_eq!(last["new"], "partner");
        assert_eq!(last["reason"], format!("upgrade {n}"));
        let who = last["who"].as_str().unwrap();
        assert!(who.starts_with("unix:"), "the caller is named: {who}");
        assert!(
            who.contains(&format!("uid {}", nix::unistd::getuid())),
            "{who}"
        );
    }
    cluster.stop_all(Duration::from_secs(5)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_trust_changes_never_leaves_an_entry_without_its_audit_line() {
    let (_dir, mut cluster) = one_node().await;
    let mut next = 0u32;
    for round in 0..6u64 {
        let client = cluster.nodes[0].client();
        // Changes run continuously while the daemon is killed mid-stream.
        let writer = {
            let c = client.clone();
            let start = next;
            tokio::spawn(async move {
                let mut n = start;
                loop {
                    let level = ["public", "member", "partner", "blocked"][(n % 4) as usize];
                    let key = peer_key(n % 5);
                    let r = if n % 7 == 6 {
                        c.call(Method::DELETE, &format!("/v1/trust/{key}"), None)
                            .await
                    } else {
                        c.post("/v1/trust", &json!({"key": key, "level": level}))
                            .await
                    };
                    match r {
                        Ok(_) | Err(tocsin_tools::client::ClientError::Api { status: 404, .. }) => {
                        }
                        Err(_) => return n,
                    }
                    n += 1;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(40 + 37 * round)).await;
        cluster.kill(0).unwrap();
        next = tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the writer did not notice the kill")
            .unwrap();
        cluster.start(0).unwrap();
        cluster.wait_ready(0, START).await.unwrap();
        let client = cluster.nodes[0].client();
        let t = table(&client).await;
        let records = audit(&client).await;
        // Every key's state is exactly what its last audit line says.
        let mut last: BTreeMap<String, Value> = BTreeMap::new();
        for r in &records {
            last.insert(r["key"].as_str().unwrap().to_string(), r["new"].clone());
        }
        for (key, level) in &t {
            assert_eq!(
                last.get(key).and_then(Value::as_str),
                Some(level.as_str()),
                "round {round}: entry {key} at {level} has no matching audit line"
            );
        }
        for (key, new) in &last {
            assert_eq!(
                t.get(key).map(String::as_str),
                new.as_str(),
                "round {round}: audit says {key} is {new}, the table disagrees"
            );
        }
    }
    assert!(next > 0, "no trust change was made at all");
    cluster.stop_all(Duration::from_secs(5)).unwrap();
}
