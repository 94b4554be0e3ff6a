//! `config.toml`: one `#[serde(default)]` struct, validated at start-up with errors that
//! name the field. `tocsind init` writes [`TEMPLATE`], which has every option present
//! and commented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tocsin_proto::{PublicKey, TrustLevel};

use crate::engine::EngineConfig;

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
    /// Webhooks (`[[webhook]]`): where stored alerts are pushed, signed (see
    /// `docs/interop.md`).
    pub webhook: Vec<crate::webhook::WebhookConfig>,
    /// TAXII 2.1 (`[taxii]`, `[[taxii.clients]]`): who may read alerts at `/taxii2/`
    /// on the TCP API listener, and up to which TLP label (see `docs/interop.md`).
    pub taxii: crate::taxii::TaxiiConfig,
    /// This node's agency identity (`[identity]`): the certificate its org key signed.
    pub identity: IdentityConfig,
    /// Enables test-only endpoints (partitioning peers) used by `tocsin-cluster`.
    /// Never enable in production.
    pub test_control: bool,
}

/// `[identity]`: who this node speaks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// The node certificate (`tocsin org certify` on the agency's offline machine), sent
    /// to every peer at connection time. Peers that trust the agency's org key, not this
    /// node's key, admit the connection on it. None: the node presents no certificate
    /// and is known by its node key only. A relative path is resolved against the config
    /// file's directory. The node refuses to start if the file is damaged, badly signed
    /// or certifies another key; it warns when the certificate is expired or not yet
    /// valid.
    pub cert_file: Option<PathBuf>,
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
            webhook: Vec::new(),
            taxii: crate::taxii::TaxiiConfig::default(),
            identity: IdentityConfig::default(),
            test_control: false,
        }
    }
}

/// The control API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket path (mode 0600). Empty: `<data_dir>/tocsind.sock`.
    pub socket: Option<PathBuf>,
    /// Optional TCP listen address, e.g. `127.0.0.1:7300`. Requires `token`.
    pub tcp: Option<SocketAddr>,
    /// Bearer token required on TCP: at least 16 characters, no whitespace. The
    /// environment variable `TOCSIN_API_TOKEN`, when set, takes its place; so does
    /// `token_file`.
    pub token: Option<String>,
    /// A file holding the bearer token (one line; a trailing newline is ignored), so the
    /// token need not be in the config. Relative paths are resolved against the config
    /// file's directory. Give `token` or `token_file`, not both.
    pub token_file: Option<PathBuf>,
    /// Most connections open at once on each listener (the Unix socket and TCP count
    /// separately, so clients on TCP can never lock out the socket). Beyond it a new
    /// connection gets a 503 with a JSON error and is closed. Higher: more concurrent
    /// clients; lower: fewer file descriptors a flood of connections can hold.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers, counted from the connection or
    /// from the end of its previous response (an idle keep-alive connection is closed
    /// after this). Lower: connections that never finish their headers (slowloris) are
    /// dropped sooner; higher: slow links are tolerated.
    pub header_timeout_secs: u64,
    /// Most event streams (`tocsin watch`, SSE integrations) open at once; more get a
    /// 503 with a JSON error. Each holds at most `SSE_BUFFER_BYTES` of unsent events.
    pub max_streams: usize,
    /// Seconds an event stream may keep its buffer full (the client does not read)
    /// before it is closed with an `error` event saying where to resume (`from`).
    /// Lower: memory held for stuck clients is freed sooner; higher: clients that
    /// pause are kept.
    pub stream_stall_secs: u64,
    /// On SIGTERM, milliseconds during which the API keeps answering, with 503 and a
    /// JSON error, before it closes: requests already on their way get an answer, not a
    /// reset connection.
    pub shutdown_drain_ms: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: None,
            tcp: None,
            token: None,
            token_file: None,
            max_connections: 256,
            header_timeout_secs: 10,
            max_streams: 64,
            stream_stall_secs: 30,
            shutdown_drain_ms: 500,
        }
    }
}

/// The environment variable that supplies the TCP API's bearer token, overriding
/// `api.token` and `api.token_file`.
pub const TOKEN_ENV: &str = "TOCSIN_API_TOKEN";

/// Prefix of the environment variables that override config values (for containers):
/// `TOCSIN__SECTION__KEY=value`, e.g. `TOCSIN__API__TCP=0.0.0.0:7401` or
/// `TOCSIN__NET__LISTEN='["/ip4/0.0.0.0/tcp/7400"]'`. The value is read as a TOML value
/// when it is one (numbers, booleans, arrays, inline tables), else as a string.
pub const ENV_PREFIX: &str = "TOCSIN__";

/// The overrides among `vars` (those named with [`ENV_PREFIX`]), in name order.
pub fn env_overrides(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars.filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    out.sort();
    out
}

/// Sets each override's value at its path in `table`.
fn apply_overrides(table: &mut toml::Table, overrides: &[(String, String)]) -> Result<(), String> {
    for (name, raw) in overrides {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("{name}: not TOCSIN__SECTION__KEY"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, parents) = path.split_last().ok_or_else(|| format!("{name}: no key"))?;
        let mut at = &mut *table;
        for p in parents {
            at = at
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| format!("{name}: {p} is not a section"))?;
        }
        at.insert(last.clone(), value);
    }
    Ok(())
}

/// Checks the name of a webhook or a TAXII client: 1 to 64 letters, digits, `-` or `_`
/// (it names a cursor, a metric label or a user).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?}: 1 to 64 letters, digits, - or _"))
    }
}

/// The secret given inline or in a file (its first line, trimmed): at least 16
/// characters. `Err` says which file and why.
pub fn load_secret(secret: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    if let Some(s) = secret {
        return Ok(s.to_string());
    }
    let path = file.ok_or("no secret")?;
    let text = read_secret_file(path).map_err(|e| format!("secret_file {e}"))?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.chars().count() < 16 {
        return Err(format!(
            "secret_file {}: the secret must be at least 16 characters",
            path.display()
        ));
    }
    Ok(secret)
}

/// The text of a file that holds a secret (an API token, a TAXII or webhook secret),
/// refusing one that any user may read or change: `Err` names the path and the mode.
/// The owner and the group (say `root:tocsin`, mode 640) may read it.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(format!(
            "{} is open to every user (mode {mode:o}); it holds a secret: chmod o-rwx {} (in a container, mount the secret with mode 0400 or 0440)",
            path.display(),
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
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

/// Networking and gossip. The gossip options are the engine's own config
/// ([`EngineConfig`]), embedded here so each is defined once. `[net]` is checked for
/// unknown keys by [`Config::parse`] (serde's `deny_unknown_fields` does not work
/// across `flatten`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NetConfig {
    /// libp2p listen multiaddrs (TCP and QUIC). Port 0 picks a free port.
    pub listen: Vec<String>,
    /// First redial delay for a configured peer, ms. Doubles up to `dial_backoff_max_ms`,
    /// with jitter. Lower reconnects faster after an outage; higher is gentler on peers.
    pub dial_backoff_initial_ms: u64,
    /// Longest redial delay, ms.
    pub dial_backoff_max_ms: u64,
    /// The gossip engine's settings.
    #[serde(flatten)]
    pub gossip: EngineConfig,
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
            gossip: EngineConfig::default(),
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
    /// `key` is an agency's org key: each node with a valid certificate from it gets
    /// `level`, and `addrs` are dialled whatever node key answers there.
    #[serde(default)]
    pub org: bool,
}

/// `[net]` embeds the engine's settings with `flatten`, which serde cannot check for
/// unknown keys and whose errors do not name the key: checks both here.
fn check_net(net: &toml::Table) -> Result<(), String> {
    // The keys of the defaults are every key `[net]` has, its own and the engine's.
    let known = toml::Table::try_from(NetConfig::default()).map_err(|e| e.to_string())?;
    let gossip = toml::Table::try_from(EngineConfig::default()).map_err(|e| e.to_string())?;
    if let Some(key) = net.keys().find(|k| !known.contains_key(*k)) {
        let mut expected: Vec<&str> = known.keys().map(String::as_str).collect();
        expected.sort_unstable();
        return Err(format!(
            "unknown field `net.{key}`, expected one of {}",
            expected.join(", ")
        ));
    }
    let given: toml::Table = net
        .iter()
        .filter(|(k, _)| gossip.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_path_to_error::deserialize::<_, EngineConfig>(toml::Value::Table(given))
        .map(|_| ())
        .map_err(|e| format!("field `net.{}`: {}", e.path(), e.inner()))
}

impl PeerConfig {
    /// The parsed key.
    pub fn public_key(&self) -> Result<PublicKey, ConfigError> {
        PublicKey::from_hex(&self.key).map_err(|e| invalid("peers.key", e.to_string()))
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths (`data_dir`, `api.socket`,
    /// `api.token_file`, secret, certificate and CA files) are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let overrides = env_overrides(std::env::vars());
        let mut cfg =
            Config::parse_with(&text, &overrides).map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.data_dir.is_relative() {
            cfg.data_dir = base.join(&cfg.data_dir);
        }
        cfg.resolve_token(base, std::env::var(TOKEN_ENV).ok())?;
        // Every other path the file names, as the template says.
        let files = cfg
            .taxii
            .clients
            .iter_mut()
            .map(|c| &mut c.secret_file)
            .chain(
                cfg.webhook
                    .iter_mut()
                    .flat_map(|w| [&mut w.secret_file, &mut w.ca_file]),
            )
            .chain([&mut cfg.identity.cert_file, &mut cfg.api.socket]);
        for f in files.flatten().filter(|f| f.is_relative()) {
            *f = base.join(&*f);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Puts the effective bearer token in `api.token`: `env` (the value of
    /// [`TOKEN_ENV`]) when set and not empty, else the contents of `api.token_file`,
    /// else `api.token` as written.
    pub fn resolve_token(&mut self, base: &Path, env: Option<String>) -> Result<(), ConfigError> {
        if self.api.token.is_some() && self.api.token_file.is_some() {
            return Err(invalid(
                "api.token_file",
                "give api.token or api.token_file, not both",
            ));
        }
        if let Some(t) = env.filter(|t| !t.is_empty()) {
            self.api.token = Some(t);
            return Ok(());
        }
        if let Some(file) = &self.api.token_file {
            let file = base.join(file);
            let text = read_secret_file(&file).map_err(|e| invalid("api.token_file", e))?;
            let line = text.strip_suffix('\n').unwrap_or(&text);
            let line = line.strip_suffix('\r').unwrap_or(line);
            self.api.token = Some(line.to_owned());
        }
        Ok(())
    }

    /// Parses config text (not yet validated). Unknown keys and bad values are refused,
    /// naming the key.
    pub fn parse(text: &str) -> Result<Config, String> {
        Config::parse_with(text, &[])
    }

    /// [`Config::parse`] with environment overrides ([`ENV_PREFIX`]) applied over the
    /// text; an override of an unknown key is refused like one in the file.
    pub fn parse_with(text: &str, overrides: &[(String, String)]) -> Result<Config, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        apply_overrides(&mut table, overrides)?;
        if let Some(net) = table.get("net").and_then(|v| v.as_table()) {
            check_net(net)?;
        }
        let text = toml::to_string(&table).map_err(|e| e.to_string())?;
        toml::from_str(&text).map_err(|e| e.to_string())
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
                // Checked as it is used: no trimming, so padding cannot stand in for
                // length.
                Some(t) if t.chars().any(char::is_whitespace) => {
                    return Err(invalid(
                        "api.token",
                        "must not contain spaces or other whitespace",
                    ))
                }
                Some(t) if t.chars().count() < 16 => {
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
            ("api.max_connections", self.api.max_connections as u64),
            ("api.header_timeout_secs", self.api.header_timeout_secs),
            ("api.max_streams", self.api.max_streams as u64),
            ("api.stream_stall_secs", self.api.stream_stall_secs),
            (
                "net.dial_backoff_initial_ms",
                self.net.dial_backoff_initial_ms,
            ),
            ("net.dial_backoff_max_ms", self.net.dial_backoff_max_ms),
            (
                "net.announce_interval_ms",
                self.net.gossip.announce_interval_ms,
            ),
            ("net.graft_timeout_ms", self.net.gossip.graft_timeout_ms),
            (
                "net.peer_alerts_per_sec",
                u64::from(self.net.gossip.peer_alerts_per_sec),
            ),
            (
                "net.peer_alert_burst",
                u64::from(self.net.gossip.peer_alert_burst),
            ),
            ("net.peer_bytes_per_sec", self.net.gossip.peer_bytes_per_sec),
            ("net.peer_byte_burst", self.net.gossip.peer_byte_burst),
            ("net.peer_work_per_sec", self.net.gossip.peer_work_per_sec),
            ("net.peer_work_burst", self.net.gossip.peer_work_burst),
            (
                "net.penalty_threshold",
                u64::from(self.net.gossip.penalty_threshold),
            ),
            (
                "net.max_clock_skew_secs",
                self.net.gossip.max_clock_skew_secs,
            ),
        ];
        for (field, v) in nonzero {
            if v == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        // Far beyond any useful value, and small enough that no deadline or semaphore
        // built from them overflows (a year of seconds, a day of milliseconds...).
        const DAY_SECS: u64 = 86_400;
        let at_most = [
            (
                "api.max_connections",
                self.api.max_connections as u64,
                1_000_000,
            ),
            (
                "api.header_timeout_secs",
                self.api.header_timeout_secs,
                DAY_SECS,
            ),
            ("api.max_streams", self.api.max_streams as u64, 1_000_000),
            (
                "api.stream_stall_secs",
                self.api.stream_stall_secs,
                DAY_SECS,
            ),
            ("api.shutdown_drain_ms", self.api.shutdown_drain_ms, 600_000),
            (
                "net.dial_backoff_initial_ms",
                self.net.dial_backoff_initial_ms,
                DAY_SECS * 1000,
            ),
            (
                "net.dial_backoff_max_ms",
                self.net.dial_backoff_max_ms,
                DAY_SECS * 1000,
            ),
            (
                "net.announce_interval_ms",
                self.net.gossip.announce_interval_ms,
                3_600_000,
            ),
            (
                "net.graft_timeout_ms",
                self.net.gossip.graft_timeout_ms,
                3_600_000,
            ),
            ("net.ban_secs", self.net.gossip.ban_secs, 365 * DAY_SECS),
            (
                "net.max_clock_skew_secs",
                self.net.gossip.max_clock_skew_secs,
                365 * DAY_SECS,
            ),
            (
                "net.envelope_cache",
                self.net.gossip.envelope_cache as u64,
                10_000_000,
            ),
            ("store.retention_days", self.store.retention_days, 36_500),
        ];
        for (field, v, max) in at_most {
            if v > max {
                return Err(invalid(field, format!("must be at most {max}")));
            }
        }
        if self.net.dial_backoff_max_ms < self.net.dial_backoff_initial_ms {
            return Err(invalid(
                "net.dial_backoff_max_ms",
                "must be at least net.dial_backoff_initial_ms",
            ));
        }
        if self.net.gossip.peer_byte_burst < tocsin_proto::limits::MAX_FRAME_BYTES as u64 {
            return Err(invalid(
                "net.peer_byte_burst",
                format!(
                    "must be at least one frame ({} bytes)",
                    tocsin_proto::limits::MAX_FRAME_BYTES
                ),
            ));
        }
        for (i, w) in self.webhook.iter().enumerate() {
            w.check()
                .map_err(|(field, why)| invalid(format!("webhook[{i}].{field}"), why))?;
            if self.webhook[..i].iter().any(|o| o.name == w.name) {
                return Err(invalid(
                    format!("webhook[{i}].name"),
                    format!("{:?} is used by an earlier webhook", w.name),
                ));
            }
        }
        for (i, c) in self.taxii.clients.iter().enumerate() {
            c.check()
                .map_err(|(field, why)| invalid(format!("taxii.clients[{i}].{field}"), why))?;
            if self.taxii.clients[..i].iter().any(|o| o.name == c.name) {
                return Err(invalid(
                    format!("taxii.clients[{i}].name"),
                    format!("{:?} is used by an earlier client", c.name),
                ));
            }
        }
        if !self.taxii.clients.is_empty() && self.api.tcp.is_none() {
            return Err(invalid(
                "taxii.clients",
                "TAXII is served on the TCP API listener: set api.tcp (and api.token) too",
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
            // The rest of what the trust API also checks (name, address count).
            crate::net::trust::check_peer(&key, Some(&p.name), &p.addrs)
                .map_err(|(field, why)| invalid(format!("peers[{i}].{field}"), why))?;
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
# Or keep the token out of this file: in a file (one line), or in the environment
# variable TOCSIN_API_TOKEN, which overrides both.
# token_file = "/etc/tocsin/api-token"
# Most connections open at once, per listener (socket and TCP apart); beyond: 503.
max_connections = 256
# Seconds to send a request's headers (also how long an idle connection is kept).
header_timeout_secs = 10
# Most event streams (tocsin watch) at once, and how long one may stall unread, seconds.
max_streams = 64
stream_stall_secs = 30
# On SIGTERM, ms during which requests still get an answer (503) before the API closes.
shutdown_drain_ms = 500

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
# Work units per second (and burst) one peer's control frames may cost: 1 per frame,
# 1 per id announced, listed or excepted, 2 per alert wanted (want, want_page),
# 1 per log entry a sync request scans.
peer_work_per_sec = 100000
peer_work_burst = 200000
# Penalty score at which a peer is disconnected and refused for ban_secs.
penalty_threshold = 100
ban_secs = 600
# Alert bodies kept in memory to answer peers without a disk read.
envelope_cache = 20000
# Alerts dated more than this far ahead of this node's clock are refused, seconds.
max_clock_skew_secs = 600

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

# TAXII 2.1, read-only, at /taxii2/ on the TCP API listener (needs api.tcp). Each
# client logs in with HTTP Basic (name, secret) or "Authorization: Bearer <secret>",
# and reads alerts up to its max_tlp: CLEAR, GREEN, AMBER, AMBER+STRICT or RED.
# [taxii]
# title = "Tocsin node"
# [[taxii.clients]]
# name = "opencti"
# secret_file = "/etc/tocsin/taxii-opencti"   # or secret = "16+ characters"
# max_tlp = "GREEN"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_proto::Tlp;

    #[test]
    fn template_parses_to_defaults() {
        let text = TEMPLATE.replace("{data_dir}", "/tmp/x");
        let cfg = Config::parse(&text).unwrap();
        cfg.validate().unwrap();
        let def = NetConfig::default();
        assert_eq!(cfg.net.listen, def.listen);
        assert_eq!(
            cfg.net.gossip.announce_interval_ms,
            def.gossip.announce_interval_ms
        );
        assert_eq!(cfg.net.gossip.peer_byte_burst, def.gossip.peer_byte_burst);
        assert_eq!(
            cfg.store.retention_days,
            StoreConfig::default().retention_days
        );
    }

    /// Every leaf of a TOML table by dotted path (empty arrays left out: an unset list
    /// is commented out in the template).
    fn leaves(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in table {
            let path = format!("{prefix}{k}");
            match v {
                toml::Value::Table(t) => leaves(t, &format!("{path}."), out),
                toml::Value::Array(a) if a.is_empty() => {}
                v => out.push((path, v.clone())),
            }
        }
    }

    #[test]
    fn relative_paths_are_resolved_against_the_config_file_s_directory() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::write(base.join("siem.secret"), "a-secret-of-16-chars-or-more\n").unwrap();
        let text = r#"
data_dir = "data"
[api]
socket = "run/tocsind.sock"
[identity]
cert_file = "node.cert"
[[webhook]]
name = "siem"
url = "https://siem.example:8443/hook"
secret_file = "siem.secret"
ca_file = "ca.pem"
"#;
        let path = base.join("config.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.data_dir, base.join("data"));
        assert_eq!(cfg.api.socket, Some(base.join("run/tocsind.sock")));
        assert_eq!(cfg.identity.cert_file, Some(base.join("node.cert")));
        assert_eq!(cfg.webhook[0].secret_file, Some(base.join("siem.secret")));
        assert_eq!(cfg.webhook[0].ca_file, Some(base.join("ca.pem")));
    }

    #[test]
    fn huge_values_are_refused_with_their_field_named() {
        for (section, field, value) in [
            ("api", "header_timeout_secs", "9223372036854775807"),
            ("api", "max_streams", "4611686018427387904"),
            ("api", "max_connections", "4611686018427387904"),
            ("net", "max_clock_skew_secs", "9223372036854775807"),
            ("store", "retention_days", "100000"),
        ] {
            let text = format!("data_dir = \"/tmp/x\"\n[{section}]\n{field} = {value}\n");
            let err = Config::parse(&text)
                .unwrap_or_else(|e| panic!("{field}: {e}"))
                .validate()
                .expect_err(field)
                .to_string();
            assert!(
                err.contains(&format!("{section}.{field}")) && err.contains("at most"),
                "{err}"
            );
        }
    }

    #[test]
    fn template_has_every_option_at_its_default_and_nothing_else() {
        let default = Config::default();
        let text = TEMPLATE.replace("{data_dir}", &default.data_dir.to_string_lossy());
        let template: toml::Table = toml::from_str(&text).unwrap();
        let defaults = toml::Table::try_from(&default).unwrap();
        let (mut t, mut d) = (Vec::new(), Vec::new());
        leaves(&template, "", &mut t);
        leaves(&defaults, "", &mut d);
        t.sort_by(|a, b| a.0.cmp(&b.0));
        d.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
        // The embedded engine settings are among them, by their config names.
        for key in [
            "net.announce_interval_ms",
            "net.ban_secs",
            "net.envelope_cache",
        ] {
            assert!(names.contains(&key), "{key} in {names:?}");
        }
        assert_eq!(t, d, "TEMPLATE and Config::default() disagree");
    }

    #[test]
    fn the_token_comes_from_the_environment_a_file_or_the_config() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-the-file-0123456789\n").unwrap();
        // Readable by every user: refused, with what to do.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cfg = Config::default();
        cfg.api.token_file = Some("token".into());
        let err = cfg.resolve_token(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("api.token_file")
                && err.contains("mode 644")
                && err.contains("chmod o-rwx"),
            "{err}"
        );
        // Its owner and group may read it.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        cfg.resolve_token(dir.path(), None).unwrap();
        assert_eq!(cfg.api.token.as_deref(), Some("from-the-file-0123456789"));
        // So with a TAXII or webhook secret file.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "a-secret-of-16-chars\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o604)).unwrap();
        let err = load_secret(None, Some(&secret)).unwrap_err();
        assert!(
            err.contains("secret_file") && err.contains("mode 604"),
            "{err}"
        );
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            load_secret(None, Some(&secret)).unwrap(),
            "a-secret-of-16-chars"
        );
        let mut cfg = Config::default();
        cfg.api.token = Some("from-the-config-0123456".into());
        cfg.resolve_token(dir.path(), Some("from-the-environment-01".into()))
            .unwrap();
        assert_eq!(cfg.api.token.as_deref(), Some("from-the-environment-01"));
        let mut cfg = Config::default();
        cfg.api.token_file = Some("missing".into());
        let err = cfg.resolve_token(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("api.token_file") && err.contains("missing"),
            "{err}"
        );
        cfg.api.token = Some("both-given-0123456789".into());
        let err = cfg.resolve_token(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
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
        // Padding does not make a short token long enough.
        let mut cfg = Config::default();
        cfg.api.tcp = Some("127.0.0.1:1".parse().unwrap());
        cfg.api.token = Some(format!("x{}", " ".repeat(15)));
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("api.token") && err.contains("whitespace"),
            "{err}"
        );
        cfg.api.token = Some("short-token".into());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("at least 16"), "{err}");
        cfg.api.token = Some("a-long-enough-token-1234".into());
        cfg.validate().unwrap();
        let mut cfg = Config::default();
        cfg.net.listen = vec!["not an addr".into()];
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("net.listen[0]"));
        let err = Config::parse("[net]\nlisten = 5\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
        let err = Config::parse("bogus = 1\n").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        // In `[net]`, both its own keys and the embedded gossip keys are checked.
        let err = Config::parse("[net]\nbogus = 1\n").unwrap_err();
        assert!(err.contains("net.bogus"), "{err}");
        let err = Config::parse("[net]\nannounce_interval = 5\n").unwrap_err();
        assert!(err.contains("net.announce_interval"), "{err}");
        let err = Config::parse("[net]\npenalty_threshold = \"high\"\n").unwrap_err();
        assert!(err.contains("penalty_threshold"), "{err}");
        let err = Config::parse("[store]\nbogus = 1\n").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn environment_overrides_set_values_by_section_and_key_and_unknown_keys_are_refused() {
        let vars = vec![
            ("TOCSIN__API__TCP".to_string(), "127.0.0.1:7401".to_string()),
            ("TOCSIN__STORE__RETENTION_DAYS".to_string(), "7".to_string()),
            (
                "TOCSIN__NET__LISTEN".to_string(),
                "[\"/ip4/127.0.0.1/tcp/0\"]".to_string(),
            ),
            (
                "TOCSIN__NET__PEER_ALERTS_PER_SEC".to_string(),
                "50".to_string(),
            ),
            (
                "TOCSIN_API_TOKEN".to_string(),
                "not an override".to_string(),
            ),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let overrides = env_overrides(vars.into_iter());
        assert_eq!(overrides.len(), 4);
        let cfg = Config::parse_with("[store]\nretention_days = 30\n", &overrides).unwrap();
        assert_eq!(cfg.api.tcp, Some("127.0.0.1:7401".parse().unwrap()));
        assert_eq!(
            cfg.store.retention_days, 7,
            "the environment wins over the file"
        );
        assert_eq!(cfg.net.listen, vec!["/ip4/127.0.0.1/tcp/0".to_string()]);
        assert_eq!(cfg.net.gossip.peer_alerts_per_sec, 50);
        // A typo in the variable's name is refused, naming the key.
        let err = Config::parse_with(
            "",
            &[("TOCSIN__NET__PEER_ALERTS".to_string(), "5".to_string())],
        )
        .unwrap_err();
        assert!(err.contains("peer_alerts"), "{err}");
        let err = Config::parse_with("", &[("TOCSIN__STORE__BOGUS".to_string(), "1".to_string())])
            .unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn taxii_clients_are_checked_naming_the_field() {
        let client = "[[taxii.clients]]\nname = \"siem\"\nsecret = \"0123456789abcdef-x\"\nmax_tlp = \"GREEN\"\n";
        let tcp = "[api]\ntcp = \"127.0.0.1:0\"\ntoken = \"a-long-enough-token-1234\"\n";
        let cfg = Config::parse(&format!("{tcp}{client}")).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.taxii.clients[0].max_tlp, Tlp::Green);
        // Without the TCP listener it serves on.
        let err = Config::parse(client)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("taxii.clients") && err.contains("api.tcp"),
            "{err}"
        );
        // A short or padded secret, a bad name, a duplicate, no ceiling.
        let err = Config::parse(&format!(
            "{tcp}{}",
            client.replace("0123456789abcdef-x", "short")
        ))
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("taxii.clients[0].secret"), "{err}");
        let err = Config::parse(&format!(
            "{tcp}{}",
            client.replace("0123456789abcdef-x", "x               y")
        ))
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("whitespace"), "{err}");
        let err = Config::parse(&format!("{tcp}{}", client.replace("\"siem\"", "\"a b\"")))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("taxii.clients[0].name"), "{err}");
        let err = Config::parse(&format!("{tcp}{client}{client}"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("taxii.clients[1].name"), "{err}");
        let err = Config::parse(&format!(
            "{tcp}{}",
            client.replace("max_tlp = \"GREEN\"\n", "")
        ))
        .unwrap_err();
        assert!(err.contains("max_tlp"), "{err}");
        let err =
            Config::parse(&format!("{tcp}{}", client.replace("GREEN", "PURPLE"))).unwrap_err();
        assert!(err.contains("max_tlp") || err.contains("PURPLE"), "{err}");
    }
}
