//! What both systems run: the nodes, the links, and which node sends each alert when.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::cluster::Link;

/// What both systems run: nodes, links, who sends what.
pub(super) struct Plan {
    pub(super) nodes: usize,
    pub(super) links: Vec<Link>,
    /// Sending node of each alert.
    pub(super) senders: Vec<usize>,
    /// Time between two publishes.
    pub(super) interval: Duration,
    pub(super) size: usize,
}

impl Plan {
    pub(super) fn alerts(&self) -> usize {
        self.senders.len()
    }

    /// When alert `k` is published, from the start of the publish phase.
    pub(super) fn at(&self, k: usize) -> Duration {
        self.interval
            .saturating_mul(u32::try_from(k).unwrap_or(u32::MAX))
    }

    pub(super) fn degree(&self, i: usize) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_seeded() {
        assert_eq!(senders(1, 10, 50), senders(1, 10, 50));
        assert_ne!(senders(1, 10, 50), senders(2, 10, 50));
        assert!(senders(3, 4, 100).iter().all(|&s| s < 4));
    }
}
