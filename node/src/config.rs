//! `config.toml`: one `#[serde(default)]` struct, validated at start-up with errors that
//! name the field. `tocsind init` writes [`TEMPLATE`], which has every option present
//! and commented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tocsin_proto::{PublicKey, TrustLevel};

/// The config file's name inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";
/// The control API socket's default name inside the data directory.
pub const SOCKET_FILE: &str = "tocsind.sock";
/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tocsin.redb";

/// A configuration error that names the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole node configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the key, database and API socket live. Relative paths are resolved against
    /// the config file's directory.
    pub data_dir: PathBuf,
    /// The control API.
    pub api: ApiConfig,
    /// Logging.
    pub log: LogConfig,
    /// Networking and gossip.
    pub net: NetConfig,
    /// Storage.
    pub store: StoreConfig,
    /// Trust entries for bootstrap. Applied at start to keys that have no entry in the
    /// database and were never changed through the API: the database wins, so a
    /// demotion or removal made with `tocsin trust` survives a restart.
    pub peers: Vec<PeerConfig>,
    /// Enables test-only endpoints (partitioning peers) used by `tocsin-cluster`.
    /// Never enable in production.
    pub test_control: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/tocsin"),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            net: NetConfig::default(),
            store: StoreConfig::default(),
            peers: Vec::new(),
            test_control: false,
        }
    }
}

/// The control API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket path (mode 0600). Empty: `<data_dir>/tocsind.sock`.
    pub socket: Option<PathBuf>,
    /// Optional TCP listen address, e.g. `127.0.0.1:7300`. Requires `token`.
    pub tcp: Option<SocketAddr>,
    /// Bearer token required on TCP. At least 16 characters.
    pub token: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging. The level comes from `RUST_LOG` (default `info`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`; the env var `TOCSIN_LOG_FORMAT` overrides it.
    pub format: LogFormat,
}

/// Networking and gossip.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// libp2p listen multiaddrs (TCP and QUIC). Port 0 picks a free port.
    pub listen: Vec<String>,
    /// First redial delay for a configured peer, ms. Doubles up to `dial_backoff_max_ms`,
    /// with jitter. Lower reconnects faster after an outage; higher is gentler on peers.
    pub dial_backoff_initial_ms: u64,
    /// Longest redial delay, ms.
    pub dial_backoff_max_ms: u64,
    /// How often queued announces (lazy push) are flushed, ms. Lower cuts repair latency;
    /// higher packs more ids per frame.
    pub announce_interval_ms: u64,
    /// How long to wait for a pushed body after an announce before asking for it, ms.
    /// Too low causes duplicate bodies; too high slows repair after a lost push.
    pub graft_timeout_ms: u64,
    /// Sustained alerts per second accepted from one peer (token bucket rate). Excess is
    /// dropped and counted; the sender's catch-up delivers it later.
    pub peer_alerts_per_sec: u32,
    /// Burst of alerts accepted from one peer (token bucket size).
    pub peer_alert_burst: u32,
    /// Sustained bytes per second accepted from one peer.
    pub peer_bytes_per_sec: u64,
    /// Burst of bytes accepted from one peer.
    pub peer_byte_burst: u64,
    /// Penalty score at which a peer is disconnected and refused for `ban_secs`.
    /// A bad signature costs 20, a malformed frame 10, a scope violation 20.
    pub penalty_threshold: u32,
    /// How long a penalised peer is refused, seconds.
    pub ban_secs: u64,
    /// Alert bodies kept in memory to answer peers' requests without a disk read.
    pub envelope_cache: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/7400".into(),
                "/ip4/0.0.0.0/udp/7400/quic-v1".into(),
            ],
            dial_backoff_initial_ms: 500,
            dial_backoff_max_ms: 60_000,
            announce_interval_ms: 20,
            graft_timeout_ms: 250,
            peer_alerts_per_sec: 200,
            peer_alert_burst: 2_000,
            peer_bytes_per_sec: 4 * 1024 * 1024,
            peer_byte_burst: 16 * 1024 * 1024,
            penalty_threshold: 100,
            ban_secs: 600,
            envelope_cache: 20_000,
        }
    }
}

/// Storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Expired alerts are deleted this many days after they expire (they stop being
    /// relayed at once). 0 keeps them forever.
    pub retention_days: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { retention_days: 30 }
    }
}

/// A trusted peer declared in the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's public key, 64 hex characters (`tocsin key show` on its host).
    pub key: String,
    /// `blocked`, `public`, `member` or `partner`.
    pub level: TrustLevel,
    /// A human name for tables and logs.
    #[serde(default)]
    pub name: String,
    /// Multiaddrs to dial it at, e.g. `/ip4/192.0.2.7/tcp/7400`.
    #[serde(default)]
    pub addrs: Vec<String>,
}

impl PeerConfig {
    /// The parsed key.
    pub fn public_key(&self) -> Result<PublicKey, ConfigError> {
        PublicKey::from_hex(&self.key).map_err(|e| invalid("peers.key", e.to_string()))
    }
}

impl Config {
    /// Reads and validates a config file. Relative `data_dir` is resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if cfg.data_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            cfg.data_dir = base.join(&cfg.data_dir);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.api.tcp.is_some() {
            match &self.api.token {
                None => {
                    return Err(invalid(
                        "api.token",
                        "required when api.tcp is set: the TCP API refuses to start without a bearer token",
                    ))
                }
                Some(t) if t.len() < 16 => {
                    return Err(invalid("api.token", "must be at least 16 characters"))
                }
                _ => {}
            }
        }
        for (i, addr) in self.net.listen.iter().enumerate() {
            if addr.parse::<libp2p::Multiaddr>().is_err() {
                return Err(invalid(
                    format!("net.listen[{i}]"),
                    format!("{addr:?} is not a multiaddr"),
                ));
            }
        }
        let nonzero = [
            (
                "net.dial_backoff_initial_ms",
                self.net.dial_backoff_initial_ms,
            ),
            ("net.dial_backoff_max_ms", self.net.dial_backoff_max_ms),
            ("net.announce_interval_ms", self.net.announce_interval_ms),
            ("net.graft_timeout_ms", self.net.graft_timeout_ms),
            (
                "net.peer_alerts_per_sec",
                u64::from(self.net.peer_alerts_per_sec),
            ),
            ("net.peer_alert_burst", u64::from(self.net.peer_alert_burst)),
            ("net.peer_bytes_per_sec", self.net.peer_bytes_per_sec),
            ("net.peer_byte_burst", self.net.peer_byte_burst),
            (
                "net.penalty_threshold",
                u64::from(self.net.penalty_threshold),
            ),
        ];
        for (field, v) in nonzero {
            if v == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if self.net.dial_backoff_max_ms < self.net.dial_backoff_initial_ms {
            return Err(invalid(
                "net.dial_backoff_max_ms",
                "must be at least net.dial_backoff_initial_ms",
            ));
        }
        if self.net.peer_byte_burst < tocsin_proto::limits::MAX_FRAME_BYTES as u64 {
            return Err(invalid(
                "net.peer_byte_burst",
                format!(
                    "must be at least one frame ({} bytes)",
                    tocsin_proto::limits::MAX_FRAME_BYTES
                ),
            ));
        }
        for (i, p) in self.peers.iter().enumerate() {
            let key = PublicKey::from_hex(&p.key)
                .map_err(|e| invalid(format!("peers[{i}].key"), e.to_string()))?;
            if crate::keys::peer_id(&key).is_none() {
                return Err(invalid(
                    format!("peers[{i}].key"),
                    "is not a valid ed25519 public key",
                ));
            }
            for (j, a) in p.addrs.iter().enumerate() {
                if a.parse::<libp2p::Multiaddr>().is_err() {
                    return Err(invalid(
                        format!("peers[{i}].addrs[{j}]"),
                        format!("{a:?} is not a multiaddr"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The API socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.api
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join(SOCKET_FILE))
    }

    /// The database path.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }

    /// The key file path.
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join(crate::keys::KEY_FILE)
    }
}

/// The commented config written by `tocsind init`. Every option is present with its
/// default value. `{data_dir}` is replaced at init.
pub const TEMPLATE: &str = r#"# tocsind configuration. Every option is shown with its default.
# Relative paths are resolved against this file's directory.

# Where the node key, the database and the API socket live.
data_dir = "{data_dir}"

# Enables test-only endpoints (partitioning peers) used by tocsin-cluster. Never in production.
test_control = false

[api]
# Unix socket for the control API (mode 0600). Default: <data_dir>/tocsind.sock
# socket = "/var/lib/tocsin/tocsind.sock"
# Optional TCP listener; requires a bearer token of 16+ characters.
# tcp = "127.0.0.1:7300"
# token = "change-me-to-a-long-random-string"

[log]
# "text" or "json" (env TOCSIN_LOG_FORMAT overrides). Level: env RUST_LOG (default info).
format = "text"

[net]
# libp2p listen addresses (TCP and QUIC). Port 0 picks a free port.
listen = ["/ip4/0.0.0.0/tcp/7400", "/ip4/0.0.0.0/udp/7400/quic-v1"]
# Redial of configured peers: first delay and cap, ms (exponential backoff with jitter).
dial_backoff_initial_ms = 500
dial_backoff_max_ms = 60000
# How often queued announces are flushed, ms (lower: faster repair; higher: fewer frames).
announce_interval_ms = 20
# Wait for a pushed body after an announce before requesting it, ms.
graft_timeout_ms = 250
# Per-peer token buckets; excess is dropped, counted, and recovered by catch-up.
peer_alerts_per_sec = 200
peer_alert_burst = 2000
peer_bytes_per_sec = 4194304
peer_byte_burst = 16777216
# Penalty score at which a peer is disconnected and refused for ban_secs.
penalty_threshold = 100
ban_secs = 600
# Alert bodies kept in memory to answer peers without a disk read.
envelope_cache = 20000

[store]
# Expired alerts are deleted this many days after expiry (0 = keep forever).
retention_days = 30

# Trusted peers for bootstrap. The database wins for keys it already has
# (change trust live with `tocsin trust ...`). Levels: blocked, public, member, partner.
# [[peers]]
# key = "64 hex characters from `tocsin key show` on the peer's host"
# level = "member"
# name = "CERT-Example"
# addrs = ["/ip4/192.0.2.7/tcp/7400", "/ip4/192.0.2.7/udp/7400/quic-v1"]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_defaults() {
        let text = TEMPLATE.replace("{data_dir}", "/tmp/x");
        let cfg: Config = toml::from_str(&text).unwrap();
        cfg.validate().unwrap();
        let def = NetConfig::default();
        assert_eq!(cfg.net.listen, def.listen);
        assert_eq!(cfg.net.announce_interval_ms, def.announce_interval_ms);
        assert_eq!(cfg.net.peer_byte_burst, def.peer_byte_burst);
        assert_eq!(
            cfg.store.retention_days,
            StoreConfig::default().retention_days
        );
    }

    #[test]
    fn errors_name_the_field() {
        let mut cfg = Config::default();
        cfg.api.tcp = Some("127.0.0.1:1".parse().unwrap());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("api.token"));
        let mut cfg = Config::default();
        cfg.net.listen = vec!["not an addr".into()];
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("net.listen[0]"));
        let err = toml::from_str::<Config>("[net]\nlisten = 5\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = toml::from_str::<Config>("bogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
