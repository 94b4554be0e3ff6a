//! Partitions: cutting and healing links through the nodes' test-control endpoints.

use anyhow::{Context, Result};
use serde_json::json;

use super::Cluster;

impl Cluster {
    pub(super) fn crosses_partition(&self, a: usize, b: usize) -> bool {
        let group = |x: usize| self.partition.iter().position(|g| g.contains(&x));
        matches!((group(a), group(b)), (Some(ga), Some(gb)) if ga != gb)
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
}
