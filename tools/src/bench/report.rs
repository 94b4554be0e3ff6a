//! The bench's numbers: percentiles, the per-system [`RunStats`], the report and its table.

use std::fmt::Write as _;

use serde::Serialize;

use super::plan::Plan;

/// What `bench` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub tocsin: RunStats,
    pub baseline: Option<RunStats>,
    pub ratios: Option<Ratios>,
}

/// The measurements of one system (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    /// `tocsin`, `gossipsub` or `gossipsub:D`.
    pub system: String,
    pub nodes: usize,
    pub alerts: usize,
    /// Deliveries / (alerts × (nodes − 1)).
    pub delivery_ratio: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// libp2p outbound bytes summed over nodes / alerts / nodes.
    pub wire_bytes_per_alert_per_node: f64,
    /// First publish to last delivery.
    pub wall_secs: f64,
}

/// Tocsin / baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Ours / baseline: below 1 means fewer bytes.
    pub bytes_per_alert: f64,
    /// Ours / baseline: below 1 means faster.
    pub p99_latency: f64,
}

/// The report as a table.
pub fn table(report: &BenchReport) -> String {
    let mut out = format!(
        "{:<12} {:>5} {:>6} {:>8} {:>7} {:>7} {:>7} {:>16}\n",
        "system", "nodes", "alerts", "delivery", "p50 ms", "p99 ms", "max ms", "bytes/alert/node"
    );
    for s in std::iter::once(&report.tocsin).chain(report.baseline.as_ref()) {
        let _ = writeln!(
            out,
            "{:<12} {:>5} {:>6} {:>7.1}% {:>7.1} {:>7.1} {:>7.1} {:>16}",
            s.system,
            s.nodes,
            s.alerts,
            s.delivery_ratio * 100.0,
            s.latency_ms_p50,
            s.latency_ms_p99,
            s.latency_ms_max,
            thousands(s.wire_bytes_per_alert_per_node)
        );
    }
    if let (Some(b), Some(r)) = (&report.baseline, &report.ratios) {
        let _ = writeln!(
            out,
            "ratio (tocsin/{}): bytes {:.2}x, p99 {:.2}x",
            b.system, r.bytes_per_alert, r.p99_latency
        );
    }
    out
}

/// `1234.6` → `"1,235"`.
pub(super) fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < -0.5 {
        out.insert(0, '-');
    }
    out
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1); 0 for none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Stats from the raw measurements.
pub(super) fn run_stats(
    system: &str,
    plan: &Plan,
    mut latencies_ms: Vec<f64>,
    bytes_out: f64,
    wall_secs: f64,
) -> RunStats {
    latencies_ms.sort_by(f64::total_cmp);
    let expected = (plan.alerts() * (plan.nodes - 1)) as f64;
    RunStats {
        system: system.to_string(),
        nodes: plan.nodes,
        alerts: plan.alerts(),
        delivery_ratio: latencies_ms.len() as f64 / expected,
        latency_ms_p50: percentile(&latencies_ms, 0.50),
        latency_ms_p99: percentile(&latencies_ms, 0.99),
        latency_ms_max: latencies_ms.last().copied().unwrap_or_default(),
        wire_bytes_per_alert_per_node: bytes_out / plan.alerts() as f64 / plan.nodes as f64,
        wall_secs,
    }
}
