//! `tocsin-cluster demo`: five nodes in a line, one alert, its path to every node.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{print_nodes, STOP_TIMEOUT, UP_TIMEOUT};
use crate::cluster::{plan, Cluster, CreateOptions, Levels, Topology};
use crate::format::short;

pub(super) async fn demo() -> Result<()> {
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
