//! Wiring: `tocsind init` and `tocsind run`, logging, signals and graceful shutdown.
//!
//! Shutdown is an input: SIGINT or SIGTERM flips a watch channel; the API stops
//! accepting and finishes in-flight requests, the network actor stops, then the store
//! writer commits what is queued, and only then does the process exit 0.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::api::ApiState;
use crate::config::{Config, LogFormat, CONFIG_FILE, TEMPLATE};
use crate::keys;
use crate::net::{NetActor, NetHandle};
use crate::store::{RedbCheck, Store, StoreError};

/// Marks an error that happened while starting (bad key, config, database, listen
/// address or socket): `tocsind` exits 1 for these, 2 for failures while running.
#[derive(Debug, Clone, Copy)]
pub struct Startup;

impl std::fmt::Display for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tocsind could not start")
    }
}

/// How often expired alerts past retention are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// What `tocsind init` created.
#[derive(Debug, serde::Serialize)]
pub struct InitOutput {
    pub public_key: String,
    pub peer_id: String,
    pub key_file: PathBuf,
    pub config_file: PathBuf,
}

/// Creates the data directory (0700), the node key (0600) and a commented config.
/// Refuses to overwrite an existing key. `listen` replaces the default listen
/// addresses in the written config when not empty. The config is checked before
/// anything is written, and a failure after the key was made takes back what this call
/// wrote, so a failed init changes nothing and can be run again.
pub fn init(data_dir: &Path, listen: &[String]) -> Result<InitOutput> {
    use std::os::unix::fs::DirBuilderExt;
    let key_file = data_dir.join(keys::KEY_FILE);
    let config_file = data_dir.join(CONFIG_FILE);
    let text = (!config_file.exists())
        .then(|| init_config_text(data_dir, listen))
        .transpose()?;
    let created_dir = !data_dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let undo_dir = || {
        if created_dir {
            let _ = std::fs::remove_dir(data_dir);
        }
    };
    // Refuses an existing key: nothing else was written by then.
    let key = keys::generate_key(&key_file).inspect_err(|_| undo_dir())?;
    if let Err(e) = init_files(data_dir, &config_file, text.as_deref()) {
        let _ = std::fs::remove_file(&key_file);
        if text.is_some() {
            let _ = std::fs::remove_file(&config_file);
        }
        undo_dir();
        return Err(e);
    }
    let pk = keys::public_key(&key);
    Ok(InitOutput {
        public_key: pk.to_string(),
        peer_id: keys::peer_id_string(&pk),
        key_file,
        config_file,
    })
}

/// The commented config `init` writes for `data_dir`, checked like `run` checks it.
fn init_config_text(data_dir: &Path, listen: &[String]) -> Result<String> {
    let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let mut text = TEMPLATE.replace("{data_dir}", &abs.display().to_string());
    if !listen.is_empty() {
        let list = listen
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        text = text.replace(
            r#"listen = ["/ip4/0.0.0.0/tcp/7400", "/ip4/0.0.0.0/udp/7400/quic-v1"]"#,
            &format!("listen = [{list}]"),
        );
    }
    // Validate what we write, so init never leaves a config that `run` refuses.
    let parsed = Config::parse(&text)
        .map_err(|e| anyhow::anyhow!("generated config does not parse: {e}"))?;
    parsed.validate()?;
    Ok(text)
}

/// Writes `text` (if any) as the config, and creates an empty database: a start that
/// finds none then knows it was lost.
fn init_files(data_dir: &Path, config_file: &Path, text: Option<&str>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(text) = text {
        std::fs::write(config_file, text)
            .with_context(|| format!("cannot write {}", config_file.display()))?;
        std::fs::set_permissions(config_file, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot chmod {}", config_file.display()))?;
    }
    let cfg = load_config(None, Some(data_dir))?;
    if !cfg.db_path().exists() {
        Store::create(&cfg.db_path())
            .with_context(|| format!("cannot create the database {}", cfg.db_path().display()))?;
    }
    Ok(())
}

/// Finds the config: `--config FILE`, else `<data-dir>/config.toml` if present, else
/// defaults with that data dir.
pub fn load_config(config: Option<&Path>, data_dir: Option<&Path>) -> Result<Config> {
    if let Some(path) = config {
        return Ok(Config::load(path)?);
    }
    let dir = data_dir.context("give --data-dir DIR or --config FILE")?;
    let path = dir.join(CONFIG_FILE);
    if path.exists() {
        let mut cfg = Config::load(&path)?;
        cfg.data_dir = dir.to_owned();
        Ok(cfg)
    } else {
        let overrides = crate::config::env_overrides(std::env::vars());
        let mut cfg = if overrides.is_empty() {
            Config::default()
        } else {
            Config::parse_with("", &overrides)
                .map_err(|e| anyhow::anyhow!("the TOCSIN__ environment overrides: {e}"))?
        };
        cfg.data_dir = dir.to_owned();
        cfg.resolve_token(dir, std::env::var(crate::config::TOKEN_ENV).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Installs the tracing subscriber: level from `RUST_LOG` (default `info`), format from
/// `TOCSIN_LOG_FORMAT` or the config, ANSI colours only when stderr is a terminal.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match std::env::var("TOCSIN_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") => LogFormat::Text,
        _ => format,
    };
    // Colour only on a terminal: a log file or journald gets plain `key=value` lines.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log that cannot be written (a full disk under the log file) loses lines; it
    // never stops the node: tracing-subscriber's own report of the failure would go to
    // stderr with `eprintln!`, which panics when stderr cannot be written either.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Waits for SIGINT or SIGTERM.
async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
            }
        }
        _ => {
            warn!("cannot install signal handlers; use SIGKILL to stop");
            futures::future::pending::<()>().await;
        }
    }
}

/// `tocsind check`: checks the database of a stopped node and prints what it found.
/// Returns whether it is sound.
pub fn check(cfg: &Config) -> Result<bool> {
    let path = cfg.db_path();
    if !path.exists() {
        anyhow::bail!("no database at {}", path.display());
    }
    let report = Store::check(&path).with_context(|| {
        format!(
            "cannot check {} (stop tocsind first: the database can be open in one process only)",
            path.display()
        )
    })?;
    println!("database:    {}", path.display());
    let redb_ok = match &report.redb {
        RedbCheck::Passed => {
            println!("redb:        ok");
            true
        }
        RedbCheck::Repaired => {
            println!("redb:        damage found and repaired");
            true
        }
        RedbCheck::Failed(e) => {
            println!("redb:        damaged beyond repair: {e}");
            false
        }
    };
    println!("alerts:      {}", report.alerts);
    println!("damaged:     {}", report.damaged.len());
    for (id, reason) in &report.damaged {
        println!("  {id}: {reason}");
    }
    println!("quarantined: {}", report.quarantined);
    if !report.damaged.is_empty() {
        eprintln!("the daemon quarantines damaged alerts at its next start and serves the rest; peers may send them again");
    }
    if !redb_ok {
        eprintln!("redb's pages are damaged: restore the database from a backup (docs/operations.md, \"A damaged database\"); until then the node may fail on damaged pages");
    }
    Ok(redb_ok && report.damaged.is_empty())
}

/// Raises the soft limit on open files to the hard limit: peers, API clients and the
/// database all hold descriptors, and the API's per-listener connection caps are
/// meant to be reached long before the process runs out of them.
fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => debug!(from = soft, to = hard, "raised the open-files limit"),
            Err(e) => warn!(soft, hard, error = %e, "cannot raise the open-files limit"),
        },
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the open-files limit"),
    }
}

/// Tells systemd (`Type=notify`, `NOTIFY_SOCKET`) how the daemon stands; without a
/// notify socket this does nothing.
fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// Sends `READY=1` once the node is ready as `GET /v1/ready` means it: the API socket
/// is bound and the network actor has started (it reads the stored alerts from the store
/// as needed; nothing is loaded first).
async fn notify_ready(
    net_ready: Arc<std::sync::atomic::AtomicBool>,
    socket: std::path::PathBuf,
    stop: impl std::future::Future<Output = ()>,
) {
    let wait = async {
        while !(net_ready.load(std::sync::atomic::Ordering::Relaxed) && socket.exists()) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        () = wait => {
            notify_systemd(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("serving"),
            ]);
        }
        () = stop => {}
    }
}

/// Runs the node until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> Result<()> {
    raise_file_limit();
    let key = keys::load_key(&cfg.key_path()).context(Startup)?;
    let pk = keys::public_key(&key);
    info!(public_key = %pk, peer_id = %keys::peer_id_string(&pk), data_dir = %cfg.data_dir.display(), version = env!("CARGO_PKG_VERSION"), "starting tocsind");

    let db_path = cfg.db_path();
    if std::fs::metadata(&db_path).map_or(true, |m| m.len() == 0) {
        warn!(path = %db_path.display(), "no database (or an empty file): starting as a new node with no alerts. `tocsind init` creates one, so this usually means a lost disk or a deleted file: stop the node and restore the backup (docs/operations.md). Peers send back what this node may see, and its own alerts");
    }
    let (store, writer) = Store::open(&db_path)
        .with_context(|| format!("cannot open the database {}", cfg.db_path().display()))
        .context(Startup)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (api_state, actor_task) =
        start_node(&cfg, &key, store.clone(), stopped(stop_rx.clone())).context(Startup)?;
    let webhook_metrics = crate::webhook::WebhookMetrics::default();
    if let Ok(mut reg) = api_state.registry.lock() {
        webhook_metrics.register(&mut reg);
    }
    let webhook_tasks = crate::webhook::start(
        &cfg.webhook,
        &store,
        &webhook_metrics,
        &api_state.webhooks,
        stop_rx.clone(),
    )
    .context(Startup)?;
    let ack_task = tokio::spawn(ack_watch(
        store.clone(),
        api_state.notices.clone(),
        api_state.ack_overdue.clone(),
        stopped(stop_rx.clone()),
    ));
    let prune_task = tokio::spawn(prune_loop(
        store.clone(),
        cfg.store.retention_days,
        stopped(stop_rx.clone()),
    ));

    if cfg.test_control {
        warn!("test_control is enabled: partition endpoints are live (never in production)");
    }
    let sig_tx = stop_tx.clone();
    tokio::spawn(async move {
        signal().await;
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        let _ = sig_tx.send(true);
    });
    let api_state_ready = api_state.net_ready.clone();
    tokio::spawn(notify_ready(
        api_state.net_ready.clone(),
        cfg.socket_path(),
        stopped(stop_rx.clone()),
    ));
    // The API serves at once; the network actor reads the stored alerts as it needs
    // them and checks every stored record in the background.
    let socket = cfg.socket_path();
    let tcp = cfg.api.tcp;
    let api_stop = stopped(stop_rx.clone());
    let mut api_task =
        tokio::spawn(async move { crate::api::serve(api_state, &socket, tcp, api_stop).await });
    let mut actor_task = actor_task;
    let net_ready = api_state_ready;
    // The actor ends before shutdown only if it cannot start (the store cannot be
    // read) or its check of the stored records finds the store damaged, which stops the
    // daemon with exit 1, or if it fails while running (exit 2). At shutdown it may end
    // first.
    let (served, actor_ended) = tokio::select! {
        served = &mut api_task => (served, None),
        ended = &mut actor_task => {
            let _ = stop_tx.send(true);
            (api_task.await, Some(ended))
        }
    };
    let served = served.unwrap_or_else(|e| Err(anyhow::anyhow!("the control API failed: {e}")));
    // Whether the API ended by signal or by error, stop everything in order.
    let _ = stop_tx.send(true);
    let ended = match actor_ended {
        Some(ended) => ended,
        None => actor_task.await,
    };
    // Whether the actor had started (listens) when it ended.
    let was_running = net_ready.load(std::sync::atomic::Ordering::Relaxed);
    let actor_failed = match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) if e.is_panic() => Some(anyhow::anyhow!(
            "the network actor panicked (a bug: please report it with the log): {e}"
        )),
        Err(e) => Some(anyhow::anyhow!("the network actor failed: {e}")),
    };
    let _ = prune_task.await;
    let _ = ack_task.await;
    for t in webhook_tasks {
        let _ = t.await;
    }
    store.shutdown().await;
    let degraded = store.degraded();
    drop(store);
    let _ = writer.await;
    match degraded {
        None => info!("tocsind stopped; all pending writes committed"),
        Some(reason) => warn!(
            reason,
            "tocsind stopped with the store degraded: writes refused since the failure were not committed (issues were answered with an error; received alerts come back by catch-up)"
        ),
    }
    if let Some(e) = actor_failed {
        // A store found damaged by the start-up check of its records is a start-up
        // error (exit 1: a restart would find the same damage), even though the check
        // runs while the node already serves.
        let damaged = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<StoreError>(),
                Some(StoreError::Damaged { .. } | StoreError::Corrupt { .. })
            )
        });
        if was_running && !damaged {
            // Exit 2: systemd restarts it (`Restart=on-failure`), unlike a start-up error.
            return Err(e.context("the network actor stopped while running"));
        }
        return Err(e.context(Startup));
    }
    // The API only fails when it cannot bind its socket or TCP address: a start-up error.
    served.context(Startup)
}

/// Starts the network actor (listening on `cfg.net.listen`) over `store`, and builds
/// the API state that talks to it. The actor runs until `shutdown` resolves or every
/// handle to it (the API state holds one) is dropped; its task fails only if the store
/// cannot be read (at start, or damaged beyond single records when its background check
/// reads every record).
pub fn start_node(
    cfg: &Config,
    key: &tocsin_proto::SigningKey,
    store: Store,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(Arc<ApiState>, tokio::task::JoinHandle<Result<()>>)> {
    let pk = keys::public_key(key);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let (net, commands) = NetHandle::channel();
    let net_ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store_degraded = prometheus_client::metrics::gauge::Gauge::default();
    {
        let mut reg = registry
            .lock()
            .map_err(|_| anyhow::anyhow!("metrics registry poisoned"))?;
        reg.register(
            "tocsin_store_degraded",
            "1 while the store refuses writes after an I/O error (a full disk); it reopens by itself",
            store_degraded.clone(),
        );
        store.metrics().register(&mut reg);
        reg.register(
            "tocsin_build",
            "The running tocsind: its version and its public key",
            prometheus_client::metrics::info::Info::new(vec![
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                ("public_key".to_string(), pk.to_string()),
            ]),
        );
    }
    let mut actor = NetActor::new(cfg.clone(), key, store.clone(), commands, registry.clone())?;
    actor.ready_flag(net_ready.clone());
    let revoked = actor.revoked_origins();
    let agencies = actor.agencies();
    let task = tokio::spawn(actor.run(shutdown));
    let taxii = if cfg.taxii.clients.is_empty() {
        None
    } else {
        let taxii =
            crate::taxii::Taxii::new(&cfg.taxii, store.clone()).map_err(anyhow::Error::msg)?;
        Some(Arc::new(taxii))
    };
    let ack_overdue = prometheus_client::metrics::counter::Counter::default();
    if let Ok(mut reg) = registry.lock() {
        reg.register(
            "tocsin_ack_overdue",
            "Named recipients of RED alerts issued here that had not acknowledged by the alert's ack_within deadline",
            ack_overdue.clone(),
        );
    }
    let state = Arc::new(ApiState {
        public_key: pk,
        store,
        revoked,
        agencies,
        notices: tokio::sync::broadcast::channel(NOTICES).0,
        ack_overdue,
        net,
        registry,
        test_control: cfg.test_control,
        started: Instant::now(),
        peer_id: keys::peer_id_string(&pk),
        token: cfg.api.token.clone(),
        limits: crate::api::ApiLimits::from_config(&cfg.api),
        streams: Arc::new(tokio::sync::Semaphore::new(cfg.api.max_streams.max(1))),
        tcp_addr: std::sync::OnceLock::new(),
        net_ready,
        store_degraded,
        webhooks: crate::webhook::Statuses::default(),
        taxii,
    });
    Ok((state, task))
}

/// Notices (overdue acknowledgements) buffered for slow event streams.
const NOTICES: usize = 256;
/// How often acknowledgement deadlines are checked.
const ACK_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Reports RED alerts of this node whose acknowledgement deadline (`ack_within`) passed
/// with named recipients that have not acknowledged: a warning, the
/// `tocsin_ack_overdue_total` counter, and an `ack_overdue` event on the event stream.
/// Each deadline is reported once.
async fn ack_watch(
    store: Store,
    notices: tokio::sync::broadcast::Sender<serde_json::Value>,
    overdue: prometheus_client::metrics::counter::Counter,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(ACK_WATCH_INTERVAL);
    // Reported in this run: a deadline whose "reported" mark could not be written (a
    // degraded store) is still reported only once.
    let mut reported = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let now = crate::now_ms();
        let due = match store.read(move |s| s.ack_deadlines_due(now)).await {
            Ok(due) => due,
            Err(e) => {
                warn!(error = %e, "cannot read acknowledgement deadlines");
                continue;
            }
        };
        for (id, deadline) in due {
            if reported.contains(&id) {
                continue;
            }
            let missing = store
                .read(move |s| {
                    let Some(alert) = s.get(&id)? else {
                        return Ok(Vec::new());
                    };
                    let named = &alert.alert.body().recipients;
                    // A recipient is answered by its own acknowledgement, or (an org key)
                    // by one of a node its certificate named it the org of.
                    let acked: std::collections::HashSet<_> = s
                        .receipts_in(&id)?
                        .into_iter()
                        .filter(|(r, _)| r.acked_at.is_some_and(|at| at <= deadline))
                        .flat_map(|(r, org)| {
                            crate::identity::answers_for(named, &r.receiver, org.as_ref())
                        })
                        .collect();
                    Ok(named
                        .iter()
                        .filter(|k| !acked.contains(*k))
                        .copied()
                        .collect::<Vec<_>>())
                })
                .await;
            let missing = match missing {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, alert = %id.fmt_short(), "cannot check an acknowledgement deadline");
                    continue;
                }
            };
            if !missing.is_empty() {
                let keys: Vec<String> = missing.iter().map(ToString::to_string).collect();
                warn!(alert = %id, deadline, missing = keys.len(), recipients = %keys.join(","), "RED alert not acknowledged by every named recipient in time");
                overdue.inc_by(keys.len() as u64);
                let _ = notices.send(serde_json::json!({
                    "alert": id.to_string(),
                    "deadline": deadline,
                    "missing": keys,
                }));
            }
            reported.insert(id);
            if let Err(e) = store.read(move |s| s.ack_deadline_reported(&id)).await {
                warn!(error = %e, alert = %id.fmt_short(), "cannot mark an acknowledgement deadline as reported");
            }
        }
    }
}

async fn prune_loop(
    store: Store,
    retention_days: u64,
    stop: impl std::future::Future<Output = ()>,
) {
    if retention_days == 0 {
        return stop.await;
    }
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {
                let before = crate::now_ms().saturating_sub(retention_days.saturating_mul(86_400_000));
                match store.prune_expired(before).await {
                    Ok(0) => {}
                    Ok(n) => info!(pruned = n, "pruned alerts expired past retention"),
                    Err(e) => warn!(error = %e, "pruning expired alerts failed"),
                }
            }
        }
    }
}
