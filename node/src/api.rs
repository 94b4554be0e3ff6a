//! The HTTP/JSON control API.
//!
//! Served on a Unix socket in the data directory (mode 0600) and, optionally, on TCP
//! where every request must carry `Authorization: Bearer <api.token>`. The `tocsin` CLI
//! speaks only this API. `docs/api.md` documents every endpoint.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/alerts` | issue a new alert, signed by this node |
//! | `POST /v1/alerts/{id}/update` | supersede one of this node's alerts |
//! | `POST /v1/alerts/{id}/cancel` | retract one of this node's alerts |
//! | `GET /v1/alerts/{id}` | one alert ([`alert_json`]) |
//! | `GET /v1/alerts/{id}/history` | the chain of versions of an alert |
//! | `GET /v1/alerts?…` | search, paged with an opaque cursor |
//! | `GET /v1/stream?from=SEQ` | server-sent events, one per stored alert |
//! | `GET /v1/status` | identity, version, uptime and store counts |
//! | `GET/POST /v1/trust`, `GET/PUT/DELETE /v1/trust/{key}` | the trust table |
//! | `GET /v1/trust-audit` | who changed trust, when, from what to what, and why |
//! | `GET /v1/peers`, `GET /v1/net` | peers with their counters; network status |
//! | `GET /metrics` | OpenMetrics text |
//! | `POST /v1/test/partition`, `POST /v1/test/heal` | only with `test_control` |
//!
//! Errors are `{"error": "<message>", "field": "<field or null>"}` ([`ErrorBody`]).

mod alerts;
mod caller;
mod error;
mod federation;
mod stream;
mod view;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

pub use caller::Caller;
pub use error::{limit_error, ApiError, ErrorBody};
pub use view::alert_json;

use crate::net::NetHandle;
use crate::store::Store;
use stream::StreamShutdown;

/// Largest request body. Four times [`tocsin_proto::limits::MAX_ENVELOPE_BYTES`]: room
/// for JSON escaping of the largest legal alert, while a runaway client is refused
/// before anything is parsed. Fields over their own limits get errors naming those.
pub const MAX_REQUEST_BYTES: usize = 4 * tocsin_proto::limits::MAX_ENVELOPE_BYTES;

/// Log entries read per store call when an event stream replays or catches up.
pub const REPLAY_PAGE: usize = 256;

/// Events buffered per stream client before the stream waits for it; a client that
/// stays behind makes its stream re-read the log instead of holding memory.
pub const SSE_BUFFER: usize = 64;

/// Interval of keep-alive comments on an idle event stream, so that proxies and
/// clients with idle timeouts keep the connection open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the API handlers share.
pub struct ApiState {
    /// The node's public key: the origin of the alerts issued here (the network actor
    /// holds the secret key and signs them).
    pub public_key: tocsin_proto::PublicKey,
    /// The alert store (read-only here: writes go through the network actor).
    pub store: Store,
    /// The network actor: issues alerts, owns the trust table.
    pub net: NetHandle,
    /// The metrics registry served on `/metrics`.
    pub registry: Arc<Mutex<Registry>>,
    /// Serve the test-only partition endpoints.
    pub test_control: bool,
    /// When the daemon started, for `uptime_secs`.
    pub started: Instant,
    /// This node's libp2p `PeerId`, as a string.
    pub peer_id: String,
    /// The bearer token required on TCP (`api.token`); the Unix socket needs none.
    pub token: Option<String>,
}

impl std::fmt::Debug for ApiState {
    // Never prints the secret key or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("peer_id", &self.peer_id)
            .field("test_control", &self.test_control)
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds the API's router, without authentication (see [`serve`] for TCP).
pub fn router(state: Arc<ApiState>) -> Router {
    let mut r = Router::new()
        .route("/v1/alerts", post(alerts::issue).get(alerts::list))
        .route("/v1/alerts/{id}", get(alerts::get))
        .route("/v1/alerts/{id}/history", get(alerts::history))
        .route("/v1/alerts/{id}/update", post(alerts::update))
        .route("/v1/alerts/{id}/cancel", post(alerts::cancel))
        .route("/v1/stream", get(stream::stream))
        .route("/v1/status", get(status))
        .route(
            "/v1/trust",
            get(federation::trust_list).post(federation::trust_add),
        )
        .route(
            "/v1/trust/{key}",
            get(federation::trust_get)
                .put(federation::trust_set)
                .delete(federation::trust_remove),
        )
        .route("/v1/trust-audit", get(federation::audit))
        .route("/v1/peers", get(federation::peers))
        .route("/v1/net", get(federation::net_status))
        .route("/metrics", get(federation::metrics));
    if state.test_control {
        r = r
            .route("/v1/test/partition", post(federation::partition))
            .route("/v1/test/heal", post(federation::heal));
    }
    r.with_state(state)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `GET /v1/status`
async fn status(State(st): State<Arc<ApiState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let counts = st.store.counts()?;
    Ok(Json(json!({
        "public_key": st.public_key.to_string(),
        "peer_id": st.peer_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": st.started.elapsed().as_secs(),
        "alerts": counts.alerts,
        "active": counts.active,
        "head": counts.head,
        "quarantined": counts.quarantined,
        "epoch": st.store.epoch(),
    })))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Compares without an early exit, so response timing does not reveal the token.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Middleware for TCP: 401 unless `Authorization: Bearer <token>`.
async fn require_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if same_token(t.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

/// Serves [`router`]`(state)`: see [`serve_router`].
pub async fn serve(
    state: Arc<ApiState>,
    socket: &Path,
    tcp: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = state.token.clone();
    serve_router(router(state), token, socket, tcp, shutdown).await
}

/// Removes a stale socket file at `path`; refuses when a server still answers there or
/// when the path is not a socket.
fn clear_stale_socket(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        );
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another process is serving the control API on {}; is tocsind already running?",
            path.display()
        );
    }
    std::fs::remove_file(path)
        .with_context(|| format!("cannot remove the stale socket {}", path.display()))
}

/// Serves `app` on the Unix socket at `socket` (a stale socket file is removed first,
/// the new one is made mode 0600) and, if `tcp` is given, on TCP, where every request
/// needs `Authorization: Bearer <token>` (answered 401 otherwise). Refuses to serve TCP
/// without a token. Runs until `shutdown` resolves, then stops accepting, ends open
/// event streams, lets in-flight requests finish and removes the socket file.
async fn serve_router(
    app: Router,
    token: Option<String>,
    socket: &Path,
    tcp: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = token.filter(|t| !t.is_empty());
    let tcp = match tcp {
        None => None,
        Some(addr) => {
            let Some(token) = token else {
                bail!(
                    "the control API on TCP ({addr}) needs a bearer token: set api.token in the config, or remove the TCP address"
                );
            };
            Some((addr, Arc::<str>::from(token.as_str())))
        }
    };

    clear_stale_socket(socket)?;
    let unix = UnixListener::bind(socket)
        .with_context(|| format!("cannot bind the control socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} mode 0600", socket.display()))?;
    let tcp = match tcp {
        None => None,
        Some((addr, token)) => {
            let listener = match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = std::fs::remove_file(socket);
                    return Err(e)
                        .with_context(|| format!("cannot listen on {addr} for the control API"));
                }
            };
            Some((listener, token))
        }
    };
    tracing::info!(socket = %socket.display(), tcp = ?tcp.as_ref().and_then(|(l, _)| l.local_addr().ok()), "control API listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let app = app.layer(Extension(StreamShutdown(stop_rx.clone())));

    let unix_server = {
        let (app, rx) = (app.clone(), stop_rx.clone());
        async move {
            axum::serve(unix, app.into_make_service_with_connect_info::<Caller>())
                .with_graceful_shutdown(stopped(rx))
                .await
                .context("control API on the Unix socket")
        }
    };
    let result = match tcp {
        None => unix_server.await,
        Some((listener, token)) => {
            let authed = app
                .layer(Extension(ConnectInfo(Caller::Token)))
                .layer(middleware::from_fn_with_state(token, require_token));
            let tcp_server = async move {
                axum::serve(listener, authed)
                    .with_graceful_shutdown(stopped(stop_rx))
                    .await
                    .context("control API on TCP")
            };
            tokio::try_join!(unix_server, tcp_server).map(|_| ())
        }
    };
    let _ = std::fs::remove_file(socket);
    result
}
