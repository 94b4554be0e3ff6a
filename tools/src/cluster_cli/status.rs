//! `tocsin-cluster status`, and the node table `up` and `demo` print.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::{json, Value};

use crate::cluster::{Cluster, Link};

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

pub(super) fn print_nodes(cluster: &Cluster, json: bool) {
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

pub(super) async fn status(mut cluster: Cluster, json: bool) -> Result<()> {
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
