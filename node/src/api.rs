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
//! | `GET /v1/health`, `GET /v1/ready` | liveness; readiness (network started, store writable) |
//! | `GET/POST /v1/trust`, `GET/PUT/DELETE /v1/trust/{key}` | the trust table |
//! | `GET /v1/trust-audit` | who changed trust, when, from what to what, and why |
//! | `GET /v1/peers`, `GET /v1/net` | peers with their counters; network status |
//! | `GET /metrics` | OpenMetrics text |
//! | `GET /v1/openapi.json` | this API as OpenAPI 3.1, generated from the handlers ([`ApiDoc`]) |
//! | `GET /taxii2/…` | TAXII 2.1, read-only, with its own clients ([`crate::taxii`]) |
//! | `POST /v1/test/partition`, `POST /v1/test/heal` | only with `test_control` |
//!
//! Errors are `{"error": "<message>", "field": "<field or null>"}` ([`ErrorBody`]).

mod alerts;
mod caller;
mod conn;
mod error;
mod federation;
mod receipts;
mod serve;
mod stream;
mod view;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::Semaphore;

pub use caller::Caller;
pub use error::{limit_error, ApiError, ErrorBody};
pub use serve::ApiLimits;
pub use view::alert_json;

use crate::net::NetHandle;
use crate::store::Store;

/// Largest request body. Four times [`tocsin_proto::limits::MAX_ENVELOPE_BYTES`]: room
/// for JSON escaping of the largest legal alert, while a runaway client is refused
/// before anything is parsed. Fields over their own limits get errors naming those.
pub const MAX_REQUEST_BYTES: usize = 4 * tocsin_proto::limits::MAX_ENVELOPE_BYTES;

/// Log entries read per store call when an event stream replays or catches up.
pub const REPLAY_PAGE: usize = 256;

/// Events buffered per stream client before the stream waits for it; a client that
/// stays behind makes its stream re-read the log instead of holding memory.
pub const SSE_BUFFER: usize = 64;

/// Bytes of unsent events buffered per stream client, whatever their number: with
/// `api.max_streams` (64) streams, at most 64 MiB held for clients that do not read.
pub const SSE_BUFFER_BYTES: usize = 1024 * 1024;

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
    /// Origins revoked by their agency (kept by the network actor), for `show`.
    pub revoked: crate::net::RevokedOrigins,
    /// The org and agency of nodes with a known certificate, for `show` and receipts.
    pub agencies: crate::net::Agencies,
    /// Notices for the event stream besides alerts: `ack_overdue`.
    pub notices: tokio::sync::broadcast::Sender<serde_json::Value>,
    /// `tocsin_ack_overdue_total`.
    pub ack_overdue: prometheus_client::metrics::counter::Counter,
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
    /// Connection, timeout and event-stream limits (`[api]`).
    pub limits: ApiLimits,
    /// One permit per open event stream, `limits.max_streams` in all.
    pub streams: Arc<Semaphore>,
    /// The TCP address the API listens on, once bound (`api.tcp` may name port 0).
    pub tcp_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Set by the network actor once it has started (reading the stored alerts from the
    /// store as needed) and listens.
    pub net_ready: Arc<std::sync::atomic::AtomicBool>,
    /// `tocsin_store_degraded`: 1 while the store refuses writes, set on each scrape.
    pub store_degraded: prometheus_client::metrics::gauge::Gauge,
    /// Each webhook's delivery state (empty without webhooks).
    pub webhooks: crate::webhook::Statuses,
    /// TAXII 2.1 under `/taxii2/`, when `[[taxii.clients]]` are configured.
    pub taxii: Option<Arc<crate::taxii::Taxii>>,
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

/// The OpenAPI 3.1 description of the control API. The paths come from the handlers'
/// `#[utoipa::path]` annotations, through the same `routes!` calls that build the
/// router ([`router`]), so a route cannot be served without being described.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tocsin control API",
        description = "The HTTP/JSON API of tocsind: on the Unix socket (no token) and, optionally, on TCP with `Authorization: Bearer <api.token>`. Errors are `{\"error\", \"field\"}`. TAXII 2.1 under /taxii2/ follows its own standard and is not described here. docs/api.md documents every endpoint.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "alerts", description = "Issue, update, cancel, read and follow alerts"),
        (name = "trust", description = "The trust table and its audit log"),
        (name = "federation", description = "Peers and the network"),
        (name = "operations", description = "Status, health, readiness, metrics and this description"),
        (name = "test control", description = "Only routed with test_control = true"),
    )
)]
pub struct ApiDoc;

/// The control API's routes with their description: every route is added here through
/// `routes!`, which reads the handler's `#[utoipa::path]`.
fn described(test_control: bool) -> utoipa_axum::router::OpenApiRouter<Arc<ApiState>> {
    use utoipa::OpenApi;
    use utoipa_axum::routes;
    let mut r = utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(alerts::issue, alerts::list))
        .routes(routes!(alerts::get))
        .routes(routes!(alerts::history))
        .routes(routes!(receipts::receipts))
        .routes(routes!(receipts::ack))
        .routes(routes!(receipts::sightings, receipts::sighting_add))
        .routes(routes!(alerts::update))
        .routes(routes!(alerts::cancel))
        .routes(routes!(stream::stream))
        .routes(routes!(status))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(openapi_json))
        .routes(routes!(federation::trust_list, federation::trust_add))
        .routes(routes!(
            federation::trust_get,
            federation::trust_set,
            federation::trust_remove
        ))
        .routes(routes!(federation::audit))
        .routes(routes!(
            federation::revocations_list,
            federation::revocations_add
        ))
        .routes(routes!(federation::peers))
        .routes(routes!(federation::net_status))
        .routes(routes!(federation::metrics));
    if test_control {
        r = r
            .routes(routes!(federation::partition))
            .routes(routes!(federation::heal));
    }
    r
}

/// The OpenAPI document of the routes this node serves (the test-control ones only
/// with `test_control`).
pub fn openapi(test_control: bool) -> utoipa::openapi::OpenApi {
    described(test_control).split_for_parts().1
}

/// Builds the API's router, without authentication (see [`serve`] for TCP).
pub fn router(state: Arc<ApiState>) -> Router {
    // The description is built once, with the router, and served as it is.
    let (r, spec) = described(state.test_control).split_for_parts();
    let mut r = r
        .with_state(state.clone())
        .layer(axum::Extension(Arc::new(spec)))
        .layer(axum::middleware::from_fn(refuse_unread_query));
    if let Some(taxii) = &state.taxii {
        r = r.merge(crate::taxii::routes(taxii.clone()));
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The API routes that read a query string. Every other one refuses a query, as an
/// unknown parameter of those two is refused: a typo never silently drops a filter.
const QUERY_ROUTES: [&str; 2] = ["/v1/alerts", "/v1/stream"];

async fn refuse_unread_query(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path();
    if let Some(query) = req.uri().query().filter(|q| !q.is_empty()) {
        if !QUERY_ROUTES.contains(&path) {
            let first = query.split('&').next().unwrap_or(query);
            let name: String = first
                .split('=')
                .next()
                .unwrap_or(first)
                .chars()
                .take(64)
                .collect();
            return error::ApiError::bad(
                &name,
                format!("unknown query parameter {name:?}: {path} takes none"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// `GET /v1/openapi.json`
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "This description, OpenAPI 3.1", body = Object)))]
async fn openapi_json(
    axum::Extension(spec): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(spec.as_ref().clone())
}

/// `GET /v1/status`
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, description = "Identity, version, uptime, store counts, webhooks", body = Object), (status = 500, description = "The store failed", body = ErrorBody)))]
async fn status(State(st): State<Arc<ApiState>>) -> Result<Json<serde_json::Value>, ApiError> {
    // Status answers whatever the store is doing (an operator looks at it most while
    // the store is degraded or being reopened): counts it cannot read now are null,
    // with `store_error` saying why.
    let counts = st.store.read(|s| s.counts()).await;
    let (alerts, active, head, quarantined) = match &counts {
        Ok(c) => (
            json!(c.alerts),
            json!(c.active),
            json!(c.head),
            json!(c.quarantined),
        ),
        Err(_) => Default::default(),
    };
    Ok(Json(json!({
        "public_key": st.public_key.to_string(),
        "peer_id": st.peer_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": st.started.elapsed().as_secs(),
        "alerts": alerts,
        "active": active,
        "head": head,
        "quarantined": quarantined,
        "epoch": st.store.epoch(),
        "api_tcp": st.tcp_addr.get().map(|a| a.to_string()),
        "store_degraded": st.store.degraded(),
        "store_error": counts.err().map(|e| e.to_string()),
        "webhooks": st.webhooks.lock().map(|w| json!(*w)).unwrap_or(serde_json::Value::Null),
    })))
}

/// `GET /v1/health`: the process serves its API (liveness). Always 200 while it does.
#[utoipa::path(get, path = "/v1/health", tag = "operations",
    responses((status = 200, description = "The process serves its API", body = Object)))]
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /v1/ready`: 200 when the node does its job: the network actor has started and
/// listens, and the store takes writes. Otherwise 503 with the JSON
/// error body saying what is not ready (for load balancers, containers, systemd).
#[utoipa::path(get, path = "/v1/ready", tag = "operations",
    responses(
        (status = 200, description = "Network started, store writable", body = Object),
        (status = 503, description = "What is not ready", body = ErrorBody)
    ))]
async fn ready(State(st): State<Arc<ApiState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let net = st.net_ready.load(std::sync::atomic::Ordering::Relaxed);
    let degraded = st.store.degraded();
    if let Some(reason) = degraded {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!("not ready: the store is degraded: {reason}"),
        ));
    }
    if !net {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "not ready: the network actor is still starting",
        ));
    }
    Ok(Json(
        json!({ "ready": true, "store": "ok", "network": "ready" }),
    ))
}

async fn not_found(method: Method, uri: Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if crate::taxii::is_taxii_path(uri.path()) {
        return crate::taxii::not_found();
    }
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path())).into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if crate::taxii::is_taxii_path(uri.path()) {
        return crate::taxii::method_not_allowed();
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}

/// Serves [`router`]`(state)` on the Unix socket and, if given, TCP, with the limits in
/// `state.limits`, until `shutdown` resolves: see the `serve` module.
pub async fn serve(
    state: Arc<ApiState>,
    socket: &Path,
    tcp: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = state.token.clone();
    let limits = state.limits.clone();
    let app = router(state.clone());
    serve::serve_router(app, token, socket, tcp, &limits, &state.tcp_addr, shutdown).await
}
