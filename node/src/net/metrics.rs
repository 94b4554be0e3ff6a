//! The node's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Node metrics, registered in the shared Prometheus registry.
#[derive(Clone)]
pub struct Metrics {
    /// Seconds from an alert's `issued_at` (origin's clock) to its acceptance here.
    pub delivery_age: Histogram,
    /// Alerts accepted from peers.
    pub alerts_received: Counter,
    /// Alerts sent in full to peers.
    pub frames_sent: Family<Vec<(String, String)>, Counter>,
    /// Rejections, by reason.
    pub rejections: Family<Vec<(String, String)>, Counter>,
    /// Incoming connections refused (unknown, blocked, banned).
    pub connections_refused: Counter,
    /// Frames dropped because a peer's write queue was full.
    pub write_queue_drops: Counter,
    /// Requests for stored alerts dropped: too many waiting for a read for the peer.
    pub loads_dropped: Counter,
    /// Times the network actor fell behind the store's commit notices (the log is then
    /// read again).
    pub log_lags: Counter,
    /// Connected peers.
    pub peers_connected: Gauge,
    /// Gossip streams that failed while their connection was up.
    pub stream_failures: Counter,
    /// Peer connections established (the first connection to a peer).
    pub peer_connects: Counter,
    /// Damaged alert records moved to the quarantine table.
    pub store_quarantined: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            delivery_age: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                3600.0, 86400.0,
            ]),
            alerts_received: Counter::default(),
            frames_sent: Family::default(),
            rejections: Family::default(),
            connections_refused: Counter::default(),
            write_queue_drops: Counter::default(),
            loads_dropped: Counter::default(),
            log_lags: Counter::default(),
            peers_connected: Gauge::default(),
            stream_failures: Counter::default(),
            peer_connects: Counter::default(),
            store_quarantined: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tocsin_delivery_age_seconds",
            "Age of received alerts when accepted here: now minus the origin's issued_at \
             (includes clock skew between the nodes; catch-up after an outage shows as old)",
            self.delivery_age.clone(),
        );
        registry.register(
            "tocsin_alerts_received",
            "Alerts accepted from peers",
            self.alerts_received.clone(),
        );
        registry.register(
            "tocsin_frames_sent",
            "Gossip frames sent, by kind",
            self.frames_sent.clone(),
        );
        registry.register(
            "tocsin_rejections",
            "Frames and alerts refused, by reason",
            self.rejections.clone(),
        );
        registry.register(
            "tocsin_connections_refused",
            "Incoming connections refused (unknown, blocked, banned or partitioned key)",
            self.connections_refused.clone(),
        );
        registry.register(
            "tocsin_write_queue_drops",
            "Frames dropped because a peer's write queue was full",
            self.write_queue_drops.clone(),
        );
        registry.register(
            "tocsin_store_loads_dropped",
            "Requests of a peer for stored alerts dropped: too many already waiting for a store read",
            self.loads_dropped.clone(),
        );
        registry.register(
            "tocsin_log_lags",
            "Times the network actor fell behind the store's commit notices and read the log again",
            self.log_lags.clone(),
        );
        registry.register(
            "tocsin_peers_connected",
            "Connected peers",
            self.peers_connected.clone(),
        );
        registry.register(
            "tocsin_gossip_stream_failures",
            "Gossip streams that failed while their connection was up",
            self.stream_failures.clone(),
        );
        registry.register(
            "tocsin_store_quarantined",
            "Damaged alert records moved aside (quarantined); they are fetched again from peers",
            self.store_quarantined.clone(),
        );
        registry.register(
            "tocsin_peer_connects",
            "Peer connections established (first connection to a peer)",
            self.peer_connects.clone(),
        );
    }
}
