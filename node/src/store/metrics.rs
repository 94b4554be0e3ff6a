//! What the store's writer measures: commit latency, batch sizes, alerts stored and
//! failed commits. Registered on `/metrics` by the daemon ([`StoreMetrics::register`]).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The writer's metrics. Cheap to clone: clones share the values.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Seconds from the start of a batch's write transaction to its durable commit.
    pub commit_seconds: Histogram,
    /// Alerts written per committed batch (group commit).
    pub batch_alerts: Histogram,
    /// Alerts newly stored (issued here or received).
    pub alerts_stored: Counter,
    /// Batches whose write transaction failed (the store then degrades).
    pub commits_failed: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            // 0.5 ms to about 4 s: an fsync here is ~3.5 ms; a failing disk is slower.
            commit_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 4.0,
            ]),
            batch_alerts: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
            alerts_stored: Counter::default(),
            commits_failed: Counter::default(),
        }
    }
}

impl StoreMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tocsin_store_commit_seconds",
            "Time from the start of a write batch to its durable commit",
            self.commit_seconds.clone(),
        );
        registry.register(
            "tocsin_store_batch_alerts",
            "Alerts written per committed batch (group commit)",
            self.batch_alerts.clone(),
        );
        registry.register(
            "tocsin_alerts_stored",
            "Alerts newly stored, issued here or received",
            self.alerts_stored.clone(),
        );
        registry.register(
            "tocsin_store_commits_failed",
            "Write batches that failed (the store then refuses writes until it can reopen)",
            self.commits_failed.clone(),
        );
    }
}
