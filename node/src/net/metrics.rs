//! The node's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Node metrics, registered in the shared Prometheus registry.
#[derive(Clone, Default)]
pub struct Metrics {
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
    /// Connected peers.
    pub peers_connected: Gauge,
    /// Gossip streams that failed while their connection was up.
    pub stream_failures: Counter,
    /// Peer connections established (the first connection to a peer).
    pub peer_connects: Counter,
    /// Damaged alert records moved to the quarantine table.
    pub store_quarantined: Gauge,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
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
