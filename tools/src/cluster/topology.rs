//! How a cluster's nodes are linked: topologies, trust levels and the planned links.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tocsin_proto::TrustLevel;

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
}
