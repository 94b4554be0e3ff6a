//! Federation-scale runs of the real engine in the simulator.
//!
//! `cargo bench -p tocsin-node --bench sim` runs 100, 500 and 1000 nodes (degree 6,
//! mixed trust levels, 1% frame loss, 20 alerts from random senders) and prints what
//! `SimReport` measured, plus the wall time of each simulation.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tocsin_node::engine::EngineConfig;
use tocsin_proto::policy::TrustLevel;
use tocsin_proto::Tlp;
use tocsin_sim::{LevelMix, Sim, SimConfig, SimError, SimReport};

/// Alerts per run.
const ALERTS: usize = 20;
/// Virtual time between two alerts, ms.
const SPACING_MS: u64 = 100;
/// Virtual time a run may take to settle, ms.
const SETTLE_MS: u64 = 600_000;
/// TLP of the k-th alert (cycled): mostly the labels that are relayed.
const TLPS: [Tlp; 6] = [
    Tlp::Clear,
    Tlp::Green,
    Tlp::Clear,
    Tlp::Amber,
    Tlp::Green,
    Tlp::Red,
];

fn config(nodes: usize, seed: u64) -> SimConfig {
    SimConfig {
        nodes,
        degree: 6,
        levels: LevelMix::Mixed {
            public: 1,
            member: 2,
            partner: 2,
        },
        latency_ms: (10, 30),
        loss: 0.01,
        seed,
        engine: EngineConfig::default(),
        blocked_origins: nodes / 20,
        orgs: 0,
        verify_ms: None,
    }
}

fn run(nodes: usize, seed: u64) -> Result<(SimReport, f64, bool), SimError> {
    let started = Instant::now();
    let mut sim = Sim::new(config(nodes, seed))?;
    let mut quiet = sim.run_until_quiet(SETTLE_MS).quiet;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    for k in 0..ALERTS {
        let tlp = TLPS[k % TLPS.len()];
        // RED needs a partner to name: draw senders until one has one.
        let (origin, recipients) = loop {
            let origin = rng.gen_range(0..nodes);
            let partners: Vec<usize> = sim
                .neighbours(origin)
                .into_iter()
                .filter(|&(n, l)| l == TrustLevel::Partner && !sim.blocks(n, origin))
                .map(|(n, _)| n)
                .collect();
            if tlp != Tlp::Red || !partners.is_empty() {
                break (origin, partners);
            }
        };
        let named = if tlp == Tlp::Red {
            &recipients[..]
        } else {
            &[]
        };
        sim.publish(origin, tlp, named)?;
        sim.run_for(SPACING_MS);
    }
    quiet &= sim.run_until_quiet(SETTLE_MS).quiet;
    Ok((sim.report(), started.elapsed().as_secs_f64(), quiet))
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn main() -> Result<(), SimError> {
    let seed = 42;
    println!(
        "sim bench: degree 6, levels public:member:partner = 1:2:2, latency 10..30 ms, \
         loss 1%, {ALERTS} alerts {SPACING_MS} ms apart, seed {seed}"
    );
    println!(
        "{:>6} {:>6} {:>9} {:>13} {:>7} {:>16} {:>14} {:>12} {:>12} {:>8} {:>9}",
        "nodes",
        "links",
        "delivery",
        "unauthorised",
        "rmr",
        "ann.B/alert/node",
        "body B/alert",
        "lat.ratio max",
        "lat.ratio avg",
        "wall s",
        "quiet"
    );
    for nodes in [100, 500, 1000] {
        let (report, wall, quiet) = run(nodes, seed)?;
        let t = &report.totals;
        println!(
            "{:>6} {:>6} {:>9.4} {:>13} {:>7} {:>16.1} {:>14.0} {:>12} {:>12} {:>8.2} {:>9}",
            nodes,
            report.links,
            t.delivery_ratio,
            t.unauthorised,
            opt(t.rmr),
            t.announce_bytes_per_alert_per_node,
            t.body_bytes as f64 / t.alerts.max(1) as f64,
            opt(t.latency_ratio_max),
            opt(t.latency_ratio_mean),
            wall,
            quiet
        );
        println!("       {}", report.summary());
        for a in report.alerts.iter().filter(|a| !a.missing.is_empty()) {
            println!(
                "       missing: {:?} alert {} from node {}: {} of {} permitted nodes",
                a.tlp,
                a.id.fmt_short(),
                a.origin,
                a.missing.len(),
                a.permitted
            );
        }
        if !report.engine.rejections.is_empty() {
            println!("       engine rejections: {:?}", report.engine.rejections);
        }
    }
    Ok(())
}
