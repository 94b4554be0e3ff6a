//! # tocsin-node
//!
//! The Tocsin node daemon, `tocsind`, as a library: the binary in `main.rs` only parses
//! the command line and calls [`daemon`].
//!
//! # Layout
//! - [`config`]: `config.toml`, one `#[serde(default)]` struct validated at start-up.
//! - [`keys`]: the node key file (created 0600, refused when others can read it).
//! - [`identity`]: this node's agency certificate and the checks of its peers'.
//! - [`store`]: the redb store: signed bytes, receipts, indexes, append log, group commit.
//! - [`engine`]: the sans-IO gossip engine (`handle(event, now) -> actions`).
//! - [`net`]: the network actor: the one owner of the libp2p `Swarm`, the engine, the
//!   trust table and the signing key; issues local alerts and applies trust changes.
//! - [`api`]: the HTTP/JSON control API on a Unix socket (and optional TCP): alerts,
//!   the event stream, trust, peers and metrics, with one error type.
//! - [`daemon`]: wiring, signals and graceful shutdown.

pub mod api;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod identity;
pub mod keys;
pub mod net;
pub mod store;
pub mod taxii;
pub mod webhook;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
