//! Waiting for the nodes: their APIs, the planned links, the alerts they store.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tocsin_proto::TrustLevel;

use super::{Cluster, Link, POLL};

/// How often a starting node's API is polled: a fresh node answers within milliseconds,
/// and nodes that never ran start one after another.
const READY_POLL: Duration = Duration::from_millis(5);
/// How long a started node may take to report the address it listens on.
const PORT_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Waits until node `i` answers on its API socket. At a node's first start, also
    /// reads back the port it listens on and pins it in its config.
    pub async fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.node(i)?.client();
        loop {
            if client.status().await.is_ok() {
                if self.nodes[i].port == 0 {
                    self.read_port(i).await?;
                }
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
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Reads the port node `i` listens on from its API, records it and pins it in the
    /// node's config.
    async fn read_port(&mut self, i: usize) -> Result<()> {
        // The node learns its listen addresses as it starts: ask again for a while.
        let deadline = Instant::now() + PORT_TIMEOUT;
        let port = loop {
            let net = self.node(i)?.client().get("/v1/net").await?;
            let listen: Vec<String> = net["listen"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(port) = super::config::tcp_port(&listen) {
                break port;
            }
            if Instant::now() > deadline {
                bail!("node {} reports no TCP listen address: {listen:?}", i + 1);
            }
            tokio::time::sleep(READY_POLL).await;
        };
        self.nodes[i].port = port;
        super::config::set_listen_port(&self.nodes[i])?;
        self.save()
    }

    /// Starts every node and waits for their APIs. Nodes that never ran start one at a
    /// time, in order, so that each one's port is known before a node that dials it
    /// starts; the others start together.
    pub async fn start_all(&mut self, timeout: Duration) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].port != 0 {
                self.start(i)?;
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].port == 0 {
                self.start(i)?;
                self.wait_ready(i, timeout).await?;
            }
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
