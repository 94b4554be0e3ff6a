//! Webhooks: each stored alert that passes a webhook's filter is POSTed to it as the
//! API's JSON alert view, signed with HMAC-SHA256 (`post::signature`), in log order.
//!
//! The outbox is the node's own append log: each webhook keeps a durable cursor (the
//! last log seq it has handled, in the store's `webhooks` table) and delivers what
//! follows it. A receiver that is down, or a node restarted meanwhile, delays delivery
//! and loses nothing. The cursor moves past an alert only once the receiver answered
//! 2xx (or refused that alert for good, or the filter skipped it), so an alert is
//! delivered again only if the node died between the answer and the cursor's commit:
//! receivers deduplicate by the alert id (`tocsin-alert-id`).

pub mod post;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tocsin_proto::{AlertId, Severity, Tlp};
use tracing::{info, warn};

use crate::store::{Store, StoreError, StoredAlert};

/// A `[[webhook]]` entry of the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for logs, status and metrics, and the key of its cursor: letters, digits,
    /// `-` and `_`. Renaming a webhook starts it afresh (from the log's head).
    pub name: String,
    /// Where to POST: `https://…`, or `http://` to a loopback address (or anywhere with
    /// `allow_plaintext`).
    pub url: String,
    /// The HMAC-SHA256 key (at least 16 characters), or …
    #[serde(default)]
    pub secret: Option<String>,
    /// … a file holding it (its first line), so that the config can be world-readable.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Only alerts at least this severe.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Only alerts with these labels. Default: every label but RED (a RED alert is for
    /// its named recipients only; list "RED" to push those to this receiver too).
    #[serde(default = "default_tlp")]
    pub tlp: Vec<Tlp>,
    /// Only alerts with at least one of these tags (any alert when empty).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Seconds to wait for the receiver's answer.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Allows `http://` to a non-loopback host: alert contents then cross the network
    /// in clear text.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Extra CA certificates (PEM) to trust for `https://`, beside the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The body: `json` (the API's alert view, the default) or `stix2.1` (a STIX 2.1
    /// bundle of the alert version, as TAXII serves it).
    #[serde(default)]
    pub format: BodyFormat,
}

/// What a webhook POSTs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyFormat {
    /// The JSON alert view (`application/json`).
    #[default]
    #[serde(rename = "json")]
    Json,
    /// A STIX 2.1 bundle (`application/stix+json;version=2.1`).
    #[serde(rename = "stix2.1")]
    Stix,
}

fn default_tlp() -> Vec<Tlp> {
    vec![Tlp::Clear, Tlp::Green, Tlp::Amber, Tlp::AmberStrict]
}

fn default_timeout() -> u64 {
    10
}

impl WebhookConfig {
    /// Checks the entry; `Err((field, why))` names the first bad field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        crate::config::check_name(&self.name).map_err(|why| ("name", why))?;
        let url =
            url::Url::parse(&self.url).map_err(|e| ("url", format!("{:?}: {e}", self.url)))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_plaintext || is_loopback(&url) => {}
            "http" => {
                return Err((
                    "url",
                    format!(
                        "{}: http:// sends alerts in clear text; use https://, a loopback address, or set allow_plaintext = true",
                        self.url
                    ),
                ))
            }
            other => return Err(("url", format!("{}: scheme {other:?} is not http or https", self.url))),
        }
        if url.host_str().is_none() {
            return Err(("url", format!("{}: no host", self.url)));
        }
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(("secret", "give secret or secret_file, not both".into()))
            }
            (None, None) => {
                return Err((
                    "secret",
                    "required (or secret_file): receivers check the signature".into(),
                ))
            }
            (Some(s), None) if s.chars().count() < 16 => {
                return Err(("secret", "must be at least 16 characters".into()))
            }
            _ => {}
        }
        if self.tlp.is_empty() {
            return Err(("tlp", "lists no label: nothing would be sent".into()));
        }
        if self.timeout_secs == 0 {
            return Err(("timeout_secs", "must be greater than 0".into()));
        }
        Ok(())
    }

    /// The secret, read from `secret_file` if that is how it is given.
    pub fn load_secret(&self) -> Result<String, String> {
        crate::config::load_secret(self.secret.as_deref(), self.secret_file.as_deref())
    }

    /// Whether this webhook takes the alert, `target` being the label of the alert a
    /// cancel retracts: a cancel carries what it retracts (its STIX form has the
    /// target's content), so the target's label must pass the filter too, whatever
    /// label its origin gave the cancel.
    pub fn takes(&self, stored: &StoredAlert, target: Option<Tlp>) -> bool {
        self.wants(stored) && target.is_none_or(|t| self.tlp.contains(&t))
    }

    /// Whether this webhook takes the alert, by its own fields.
    pub fn wants(&self, stored: &StoredAlert) -> bool {
        let b = stored.alert.body();
        self.tlp.contains(&b.tlp)
            && self.min_severity.is_none_or(|m| b.severity >= m)
            && (self.tags.is_empty()
                || b.tags
                    .iter()
                    .any(|t| self.tags.iter().any(|w| w.eq_ignore_ascii_case(t))))
    }
}

/// The stored alert `id` and, for a cancel, the label of the alert it retracts (if held).
fn with_target_tlp(
    store: &Store,
    id: &AlertId,
) -> Result<Option<(StoredAlert, Option<Tlp>)>, StoreError> {
    let Some(a) = store.get(id)? else {
        return Ok(None);
    };
    let b = a.alert.body();
    let target = match (b.kind, b.replaces) {
        (tocsin_proto::Kind::Cancel, Some(t)) => store.get(&t)?.map(|t| t.alert.body().tlp),
        _ => None,
    };
    Ok(Some((a, target)))
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// A webhook's delivery state, for `tocsin status` and `/v1/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WebhookStatus {
    pub url: String,
    /// The last log seq handled (the outbox is the log after it).
    pub cursor: u64,
    /// Log entries after the cursor (the outbox depth, before filtering).
    pub pending: u64,
    /// Alerts the receiver accepted (2xx) since start.
    pub delivered: u64,
    /// Alerts the receiver refused for good (400, 413, 415, 422) since start; skipped.
    pub refused: u64,
    /// Failed attempts that will be retried, since start.
    pub retries: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the receiver last accepted an alert (unix ms).
    pub last_delivered_at: Option<u64>,
}

/// Every webhook's state, by name.
pub type Statuses = Arc<Mutex<BTreeMap<String, WebhookStatus>>>;

/// Webhook metrics, labelled by webhook name.
#[derive(Clone, Default)]
pub struct WebhookMetrics {
    pub delivered: Family<Vec<(String, String)>, Counter>,
    pub refused: Family<Vec<(String, String)>, Counter>,
    pub retries: Family<Vec<(String, String)>, Counter>,
    pub outbox: Family<Vec<(String, String)>, Gauge>,
}

impl WebhookMetrics {
    /// Registers the families in `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "tocsin_webhook_delivered",
            "Alerts a webhook receiver accepted",
            self.delivered.clone(),
        );
        registry.register(
            "tocsin_webhook_refused",
            "Alerts a webhook receiver refused for good (skipped)",
            self.refused.clone(),
        );
        registry.register(
            "tocsin_webhook_retries",
            "Failed webhook deliveries that are retried",
            self.retries.clone(),
        );
        registry.register(
            "tocsin_webhook_outbox_depth",
            "Log entries a webhook has not handled yet",
            self.outbox.clone(),
        );
    }
}

/// Longest wait between two attempts at one delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Log entries read per step.
const PAGE: usize = 256;

/// One webhook's deliverer.
struct Deliverer {
    cfg: WebhookConfig,
    secret: String,
    target: post::Target,
    store: Store,
    status: Statuses,
    metrics: WebhookMetrics,
    labels: Vec<(String, String)>,
}

/// Starts one deliverer per webhook. A webhook whose secret or CA file cannot be read
/// is a start-up error.
pub fn start(
    cfgs: &[WebhookConfig],
    store: &Store,
    metrics: &WebhookMetrics,
    status: &Statuses,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for cfg in cfgs {
        let secret = cfg
            .load_secret()
            .map_err(|e| anyhow::anyhow!("webhook {}: {e}", cfg.name))?;
        let url = url::Url::parse(&cfg.url)
            .map_err(|e| anyhow::anyhow!("webhook {}: url: {e}", cfg.name))?;
        let target = post::Target::new(
            url,
            Duration::from_secs(cfg.timeout_secs),
            cfg.ca_file.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("webhook {}: {e}", cfg.name))?;
        if let Ok(mut s) = status.lock() {
            s.insert(
                cfg.name.clone(),
                WebhookStatus {
                    url: cfg.url.clone(),
                    ..WebhookStatus::default()
                },
            );
        }
        let d = Deliverer {
            cfg: cfg.clone(),
            secret,
            target,
            store: store.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            labels: vec![("webhook".to_string(), cfg.name.clone())],
        };
        tasks.push(tokio::spawn(d.run(stop.clone())));
    }
    Ok(tasks)
}

impl Deliverer {
    fn update(&self, f: impl FnOnce(&mut WebhookStatus)) {
        if let Ok(mut all) = self.status.lock() {
            if let Some(s) = all.get_mut(&self.cfg.name) {
                f(s);
            }
        }
    }

    /// Runs until `stop` turns true.
    async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut events = self.store.subscribe();
        // A new webhook starts at the log's head: it gets what is stored from now on.
        let mut cursor = loop {
            let name = self.cfg.name.clone();
            let found = self.store.read(move |s| s.webhook_cursor(&name)).await;
            let head = self.store.read(|s| s.head()).await;
            match (found, head) {
                (Ok(Some(c)), _) => break c,
                (Ok(None), Ok(head)) => {
                    let name = self.cfg.name.clone();
                    if self
                        .store
                        .read(move |s| s.set_webhook_cursor(&name, head))
                        .await
                        .is_ok()
                    {
                        info!(webhook = %self.cfg.name, from_seq = head, "new webhook: delivering alerts stored from now on");
                        break head;
                    }
                }
                _ => {}
            }
            // The store cannot answer (degraded): try again shortly.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        loop {
            if *stop.borrow() {
                return;
            }
            let head = self.store.read(|s| s.head()).await.unwrap_or(cursor);
            let pending = head.saturating_sub(cursor);
            self.metrics
                .outbox
                .get_or_create(&self.labels)
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            self.update(|s| {
                s.cursor = cursor;
                s.pending = pending;
            });
            let page = self
                .store
                .read(move |s| s.log_after(cursor, PAGE))
                .await
                .unwrap_or_default();
            if page.is_empty() {
                // Wait for the next stored alert (or a lag, which means more are there).
                tokio::select! {
                    _ = events.recv() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            for (seq, id) in page {
                let stored = self.store.read(move |s| with_target_tlp(s, &id)).await;
                let stored = match stored {
                    Ok(s) => s,
                    // Unreadable now (degraded store): retry from the same cursor.
                    Err(_) => break,
                };
                let wanted = stored
                    .as_ref()
                    .is_some_and(|(s, target)| self.cfg.takes(s, *target));
                if wanted {
                    if let Some((stored, _)) = &stored {
                        if !self.deliver(stored, &mut stop).await {
                            return;
                        }
                    }
                }
                cursor = seq;
                // Delivered alerts are remembered at once; a run of skipped ones when it
                // ends (below), or with the next delivery.
                if wanted {
                    self.save(cursor).await;
                }
            }
            self.save(cursor).await;
        }
    }

    /// Persists the cursor (a failure only means some alerts are offered again).
    async fn save(&self, cursor: u64) {
        let name = self.cfg.name.clone();
        if let Err(e) = self
            .store
            .read(move |s| s.set_webhook_cursor(&name, cursor))
            .await
        {
            warn!(webhook = %self.cfg.name, error = %e, "cannot save the webhook cursor; alerts after it may be delivered again");
        }
    }

    /// The STIX bundle of `stored` (`Some(None)`: it has no STIX form), read again each
    /// second while the store cannot be read; `None` once the node is stopping.
    async fn stix_body(
        &self,
        stored: &StoredAlert,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<Option<Vec<u8>>> {
        let mut warned = false;
        loop {
            let alert = stored.clone();
            let read = self
                .store
                .read(move |s| crate::taxii::collection::bundle_of(s, &alert))
                .await;
            match read {
                Ok(bundle) => return Some(bundle.map(|b| b.to_string().into_bytes())),
                Err(e) => {
                    if !warned {
                        warn!(webhook = %self.cfg.name, error = %e, "cannot read the alert for its STIX body; retrying");
                        warned = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.wait_for(|s| *s) => return None,
                    }
                }
            }
        }
    }

    /// Delivers one alert, retrying with backoff until the receiver accepts or refuses
    /// it. Returns false if the node is stopping (the alert stays in the outbox).
    async fn deliver(
        &self,
        stored: &StoredAlert,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let (body, content_type) = match self.cfg.format {
            BodyFormat::Json => match serde_json::to_vec(&crate::api::alert_json(stored)) {
                Ok(b) => (b, "application/json"),
                Err(_) => return true,
            },
            BodyFormat::Stix => match self.stix_body(stored, stop).await {
                Some(Some(b)) => (b, crate::taxii::STIX_MEDIA_TYPE),
                // A cancel of an alert not held here has nothing to say in STIX.
                Some(None) => return true,
                // Stopping: the alert stays in the outbox.
                None => return false,
            },
        };
        let id = stored.alert.id().to_string();
        let mut backoff = Duration::from_secs(1);
        loop {
            let t = crate::now_ms() / 1000;
            let headers = [
                (
                    post::SIGNATURE_HEADER,
                    format!(
                        "t={t},v1={}",
                        post::signature(self.secret.as_bytes(), t, &body)
                    ),
                ),
                ("tocsin-alert-id", id.clone()),
                ("tocsin-webhook", self.cfg.name.clone()),
                ("content-type", content_type.to_string()),
            ];
            match self.target.post(&headers, body.clone()).await {
                post::Outcome::Delivered => {
                    self.metrics.delivered.get_or_create(&self.labels).inc();
                    self.update(|s| {
                        s.delivered += 1;
                        s.last_error = None;
                        s.last_delivered_at = Some(crate::now_ms());
                    });
                    return true;
                }
                post::Outcome::Refused(why) => {
                    warn!(webhook = %self.cfg.name, alert = %stored.alert.id().fmt_short(), reason = %why, "webhook receiver refused an alert; skipped");
                    self.metrics.refused.get_or_create(&self.labels).inc();
                    self.update(|s| {
                        s.refused += 1;
                        s.last_error = Some(why);
                    });
                    return true;
                }
                post::Outcome::Retry(why) => {
                    self.metrics.retries.get_or_create(&self.labels).inc();
                    let first = self
                        .status
                        .lock()
                        .ok()
                        .and_then(|s| s.get(&self.cfg.name).map(|w| w.last_error.is_none()))
                        .unwrap_or(true);
                    if first {
                        warn!(webhook = %self.cfg.name, error = %why, "webhook delivery failed; retrying with backoff (nothing is lost)");
                    }
                    self.update(|s| {
                        s.retries += 1;
                        s.last_error = Some(why);
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return false,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tocsin_proto::{AlertBody, Kind, SignedAlert, SigningKey, FORMAT_VERSION};

    use super::*;
    use crate::store::Receipt;

    fn body(key: &SigningKey, tlp: Tlp, kind: Kind, replaces: Option<AlertId>) -> AlertBody {
        let origin = crate::keys::public_key(key);
        AlertBody {
            v: FORMAT_VERSION,
            origin,
            issued_at: crate::now_ms(),
            expires_at: None,
            kind,
            replaces,
            severity: Severity::High,
            tlp,
            recipients: if tlp == Tlp::Red {
                vec![origin]
            } else {
                Vec::new()
            },
            title: "t".into(),
            text: String::new(),
            indicators: Vec::new(),
            tags: Vec::new(),
            references: Vec::new(),
        }
    }

    /// An origin (a custom client: Tocsin's API copies the label) cancels a RED alert
    /// with a GREEN cancel. A webhook that takes every label but RED must not take it:
    /// its STIX form is the RED alert's content.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_passes_the_filter_only_if_what_it_retracts_does() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _join) = Store::open(&dir.path().join("w.redb")).unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        let local = Receipt {
            received_at: 1,
            from: None,
            hops: 0,
        };
        let mut ids = Vec::new();
        for tlp in [Tlp::Red, Tlp::Green] {
            let target = SignedAlert::sign(body(&key, tlp, Kind::New, None), &key).unwrap();
            let cancel = SignedAlert::sign(
                body(&key, Tlp::Green, Kind::Cancel, Some(target.id())),
                &key,
            )
            .unwrap();
            for a in [target, cancel] {
                ids.push(a.id());
                store.insert(a.verify().unwrap(), local).await.unwrap();
            }
        }
        let cfg: WebhookConfig = toml::from_str(
            "name = \"siem\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef\"",
        )
        .unwrap();
        let takes = |id: AlertId| {
            let (stored, target) = with_target_tlp(&store, &id).unwrap().unwrap();
            cfg.takes(&stored, target)
        };
        assert!(!takes(ids[0]), "a RED alert");
        assert!(!takes(ids[1]), "a GREEN cancel of a RED alert");
        assert!(takes(ids[2]), "a GREEN alert");
        assert!(takes(ids[3]), "a GREEN cancel of a GREEN alert");
    }
}
