//! Federation endpoints: trust management, peers, network status, metrics, and the
//! test-only partition control.
//!
//! The trust table belongs to the network actor: these handlers parse and check the
//! request, then ask the actor, which commits each change with its audit record and
//! applies it before answering. Nothing here reads or writes trust in the store.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tocsin_proto::api::{
    AuditLog, ErrorBody, PartitionRequest, RevocationList, RevocationRequest, RevocationView,
    TrustAddRequest, TrustChanged, TrustEntry, TrustList, TrustPatchRequest, TrustRemoveRequest,
};
use tocsin_proto::identity::{Revocation, RevocationProof, Signed};
use tocsin_proto::{PublicKey, TrustLevel};

use super::caller::Caller;
use super::error::{parse_body, read_body, ApiError, Errors};
use super::ApiState;
use crate::net::{ChangedBy, TrustChange, TrustError};

/// Audit records returned by `GET /v1/trust-audit` (the most recent ones).
pub const AUDIT_PAGE: usize = 1000;

/// Longest `reason` accepted with a trust change, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

type Reply<T> = Result<Json<T>, ApiError>;

fn parse_key(s: &str) -> Result<PublicKey, ApiError> {
    PublicKey::from_hex(s).map_err(|e| ApiError::bad("key", e.to_string()))
}

/// The key in the path; a path that is not UTF-8 gets the JSON error every other bad
/// input gets, not axum's plain text.
fn path_key(key: Result<Path<String>, PathRejection>) -> Result<PublicKey, ApiError> {
    let Path(key) = key.map_err(|e| ApiError::bad("key", e.body_text()))?;
    parse_key(&key)
}

fn parse_level(s: &str) -> Result<TrustLevel, ApiError> {
    s.parse::<TrustLevel>()
        .map_err(|e| ApiError::bad("level", e.to_string()))
}

/// Checks a trust entry's fields as the config's `[[peers]]` are checked, and that it
/// is not this node's own key.
fn check_peer(
    st: &ApiState,
    key: &PublicKey,
    name: Option<&str>,
    addrs: &[String],
) -> Result<(), ApiError> {
    if *key == st.public_key {
        return Err(ApiError::bad(
            "key",
            format!("{key} is this node's own key; a node does not hold a trust entry for itself"),
        ));
    }
    crate::net::trust::check_peer(key, name, addrs)
        .map_err(|(field, why)| ApiError::bad(field, why))
}

async fn changed_by(caller: Caller, reason: Option<String>) -> Result<ChangedBy, ApiError> {
    if let Some(r) = &reason {
        if r.len() > MAX_REASON_BYTES {
            return Err(ApiError::bad(
                "reason",
                format!(
                    "reason is {} bytes, exceeds the limit of {MAX_REASON_BYTES}",
                    r.len()
                ),
            ));
        }
    }
    Ok(ChangedBy {
        source: "api",
        who: caller.audit_name().await,
        reason: reason.filter(|r| !r.trim().is_empty()),
    })
}

async fn change(
    st: &ApiState,
    change: TrustChange,
    by: ChangedBy,
) -> Result<TrustChanged, ApiError> {
    st.net.trust(change, by).await.map_err(|e| match e {
        TrustError::NotFound(key) => ApiError::new(
            StatusCode::NOT_FOUND,
            Some("key"),
            format!("no trust entry for {key}; add it with `tocsin trust add`"),
        ),
        TrustError::Store(e) => ApiError::internal(format!("trust change not stored: {e}")),
        TrustError::ShuttingDown => ApiError::unavailable("the node is shutting down"),
    })
}

async fn table(st: &ApiState) -> Result<Vec<TrustEntry>, ApiError> {
    st.net
        .trust_list()
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))
}

/// `GET /v1/revocations`
#[utoipa::path(get, path = "/v1/revocations", tag = "trust",
    responses((status = 200, description = "The node keys revoked by their agencies, as held here", body = RevocationList), Errors))]
pub(super) async fn revocations_list(State(st): State<Arc<ApiState>>) -> Reply<RevocationList> {
    let revocations = st
        .net
        .revocations()
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))?;
    Ok(Json(RevocationList { revocations }))
}

/// `POST /v1/revocations`
#[utoipa::path(post, path = "/v1/revocations", tag = "trust",
    request_body = RevocationRequest,
    responses(
        (status = 201, description = "Held, applied and sent to every peer", body = RevocationView),
        (status = 200, description = "Already held (with an earlier or equal time)", body = RevocationView),
        Errors
    ))]
pub(super) async fn revocations_add(
    State(st): State<Arc<ApiState>>,
    body: Body,
) -> Result<(StatusCode, Json<RevocationView>), ApiError> {
    let req: RevocationRequest = parse_body(&read_body(body).await?)?;
    let revocation = hex::decode(req.revocation.trim())
        .map_err(|e| ApiError::bad("revocation", format!("not hex: {e}")))?;
    let cert =
        hex::decode(req.cert.trim()).map_err(|e| ApiError::bad("cert", format!("not hex: {e}")))?;
    let proof = RevocationProof::verify(&revocation, &cert).map_err(|e| {
        let field = if Signed::<Revocation>::decode_verified(&revocation).is_err() {
            "revocation"
        } else {
            "cert"
        };
        ApiError::bad(field, e.to_string())
    })?;
    let (view, new) = st
        .net
        .revoke(proof)
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))?
        .map_err(|e| ApiError::new(StatusCode::INSUFFICIENT_STORAGE, None, e))?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// `GET /v1/trust`
#[utoipa::path(get, path = "/v1/trust", tag = "trust",
    responses((status = 200, description = "The trust table", body = TrustList), Errors))]
pub(super) async fn trust_list(State(st): State<Arc<ApiState>>) -> Reply<TrustList> {
    Ok(Json(TrustList {
        entries: table(&st).await?,
    }))
}

/// `GET /v1/trust/{key}`
#[utoipa::path(get, path = "/v1/trust/{key}", tag = "trust", params(("key" = String, Path, description = "The peer's public key, 64 hex characters")),
    responses(
        (status = 200, description = "The entry", body = TrustEntry),
        (status = 404, description = "Not in the trust table", body = ErrorBody),
        Errors
    ))]
pub(super) async fn trust_get(
    State(st): State<Arc<ApiState>>,
    key: Result<Path<String>, PathRejection>,
) -> Reply<TrustEntry> {
    let key = path_key(key)?;
    table(&st)
        .await?
        .into_iter()
        .find(|e| e.key == key)
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Some("key"),
                format!("no trust entry for {key}"),
            )
        })
}

/// `POST /v1/trust`: adds an entry (or replaces the one for that key).
#[utoipa::path(post, path = "/v1/trust", tag = "trust",
    request_body = TrustAddRequest,
    responses((status = 201, description = "The level before and after", body = TrustChanged), Errors))]
pub(super) async fn trust_add(
    State(st): State<Arc<ApiState>>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<TrustChanged>), ApiError> {
    let req: TrustAddRequest = parse_body(&read_body(body).await?)?;
    let key = parse_key(&req.key)?;
    let level = parse_level(&req.level)?;
    check_peer(&st, &key, Some(&req.name), &req.addrs)?;
    let by = changed_by(caller, req.reason).await?;
    let entry = TrustEntry {
        key,
        level,
        name: req.name,
        addrs: req.addrs,
        org: req.org,
    };
    let done = change(&st, TrustChange::Put(entry), by).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// `PUT /v1/trust/{key}`: changes the given fields of an existing entry.
#[utoipa::path(put, path = "/v1/trust/{key}", tag = "trust", params(("key" = String, Path, description = "The peer's public key, 64 hex characters")),
    request_body = TrustPatchRequest,
    responses(
        (status = 200, description = "The level before and after", body = TrustChanged),
        (status = 404, description = "Not in the trust table", body = ErrorBody),
        Errors
    ))]
pub(super) async fn trust_set(
    State(st): State<Arc<ApiState>>,
    key: Result<Path<String>, PathRejection>,
    caller: Caller,
    body: Body,
) -> Reply<TrustChanged> {
    let key = path_key(key)?;
    let req: TrustPatchRequest = parse_body(&read_body(body).await?)?;
    let level = req.level.as_deref().map(parse_level).transpose()?;
    check_peer(
        &st,
        &key,
        req.name.as_deref(),
        req.addrs.as_deref().unwrap_or_default(),
    )?;
    let by = changed_by(caller, req.reason).await?;
    let patch = TrustChange::Patch {
        key,
        level,
        name: req.name,
        addrs: req.addrs,
    };
    Ok(Json(change(&st, patch, by).await?))
}

/// `DELETE /v1/trust/{key}` (an optional body gives the reason).
#[utoipa::path(delete, path = "/v1/trust/{key}", tag = "trust", params(("key" = String, Path, description = "The peer's public key, 64 hex characters")),
    request_body(content = Option<TrustRemoveRequest>, description = "Optional: the reason, for the audit log"),
    responses(
        (status = 200, description = "The level before; `new` is null", body = TrustChanged),
        (status = 404, description = "Not in the trust table", body = ErrorBody),
        Errors
    ))]
pub(super) async fn trust_remove(
    State(st): State<Arc<ApiState>>,
    key: Result<Path<String>, PathRejection>,
    caller: Caller,
    body: Body,
) -> Reply<TrustChanged> {
    let key = path_key(key)?;
    let body = read_body(body).await?;
    let req: TrustRemoveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TrustRemoveRequest::default()
    } else {
        parse_body(&body)?
    };
    let by = changed_by(caller, req.reason).await?;
    Ok(Json(change(&st, TrustChange::Remove { key }, by).await?))
}

/// `GET /v1/trust-audit`: the most recent audit records, oldest first.
#[utoipa::path(get, path = "/v1/trust-audit", tag = "trust",
    responses((status = 200, description = "The latest trust changes, oldest first", body = AuditLog), Errors))]
pub(super) async fn audit(State(st): State<Arc<ApiState>>) -> Reply<AuditLog> {
    let records = st.store.read(|s| s.audit_log(AUDIT_PAGE)).await?;
    Ok(Json(AuditLog { records }))
}

/// `GET /v1/peers`
#[utoipa::path(get, path = "/v1/peers", tag = "federation",
    responses((status = 200, description = "`{\"peers\": [...]}`: one row per trusted key or connected peer, with its counters (docs/api.md)", body = Object), Errors))]
pub(super) async fn peers(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let peers = st
        .net
        .peers()
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))?;
    Ok(Json(serde_json::json!({ "peers": peers })).into_response())
}

/// `GET /v1/net`
#[utoipa::path(get, path = "/v1/net", tag = "federation",
    responses((status = 200, description = "Listen addresses, connections and network counters", body = Object), Errors))]
pub(super) async fn net_status(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let status = st
        .net
        .status()
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))?;
    Ok(Json(status).into_response())
}

/// `GET /metrics`: OpenMetrics text: the node's registry, then the per-peer families
/// built from the peer table at each scrape.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String), Errors))]
pub(super) async fn metrics(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    st.store_degraded
        .set(i64::from(st.store.degraded().is_some()));
    let peers = st.net.peers().await.unwrap_or_default();
    let per_peer = peer_registry(&peers);
    let mut out = String::new();
    {
        let reg = st
            .registry
            .lock()
            .map_err(|_| ApiError::internal("metrics registry poisoned"))?;
        prometheus_client::encoding::text::encode_registry(&mut out, &reg)
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    prometheus_client::encoding::text::encode_registry(&mut out, &per_peer)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    prometheus_client::encoding::text::encode_eof(&mut out)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// `POST /v1/test/partition` (only with `test_control`).
#[utoipa::path(post, path = "/v1/test/partition", tag = "test control",
    request_body = PartitionRequest,
    responses((status = 200, description = "Those peers are dropped and refused until healed (only with test_control)", body = Object), Errors))]
pub(super) async fn partition(
    State(st): State<Arc<ApiState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: PartitionRequest = parse_body(&read_body(body).await?)?;
    let keys = req
        .peers
        .iter()
        .map(|p| parse_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let n = keys.len();
    st.net
        .partition(keys)
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))?;
    Ok(Json(serde_json::json!({ "partitioned": n })).into_response())
}

/// `POST /v1/test/heal` (only with `test_control`).
#[utoipa::path(post, path = "/v1/test/heal", tag = "test control",
    responses((status = 200, description = "Every partition is lifted (only with test_control)", body = Object), Errors))]
pub(super) async fn heal(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    st.net
        .heal()
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))?;
    Ok(Json(serde_json::json!({ "healed": true })).into_response())
}

/// A label value from a peer name: printable, without the characters the exposition
/// format would have to escape.
fn label_value(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if matches!(c, '"' | '\\') { '_' } else { c })
        .take(64)
        .collect()
}

type PeerLabels = Vec<(String, String)>;

/// The per-peer families, labelled with the peer's short key and its name in the trust
/// table.
fn peer_registry(peers: &[crate::net::PeerInfo]) -> prometheus_client::registry::Registry {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;

    let connected = Family::<PeerLabels, Gauge>::default();
    let penalty = Family::<PeerLabels, Gauge>::default();
    let banned = Family::<PeerLabels, Gauge>::default();
    let lag = Family::<PeerLabels, Gauge>::default();
    let queue = Family::<PeerLabels, Gauge>::default();
    let alerts_in = Family::<PeerLabels, Counter>::default();
    let alerts_out = Family::<PeerLabels, Counter>::default();
    let bytes_in = Family::<PeerLabels, Counter>::default();
    let bytes_out = Family::<PeerLabels, Counter>::default();
    let limited = Family::<PeerLabels, Counter>::default();
    let rejected = Family::<PeerLabels, Counter>::default();
    let now = crate::now_ms();
    for p in peers {
        let labels = vec![
            ("peer".to_string(), p.key.fmt_short()),
            ("name".to_string(), label_value(&p.name)),
        ];
        let s = &p.report.stats;
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        connected
            .get_or_create(&labels)
            .set(i64::from(p.report.connected));
        penalty.get_or_create(&labels).set(i64::from(s.penalty));
        banned
            .get_or_create(&labels)
            .set(i64::from(s.banned_until.is_some_and(|t| t > now)));
        lag.get_or_create(&labels).set(gauge(p.report.catch_up_lag));
        queue
            .get_or_create(&labels)
            .set(i64::try_from(p.queue_depth).unwrap_or(i64::MAX));
        alerts_in.get_or_create(&labels).inc_by(s.alerts_in);
        alerts_out.get_or_create(&labels).inc_by(s.alerts_out);
        bytes_in.get_or_create(&labels).inc_by(s.bytes_in);
        bytes_out.get_or_create(&labels).inc_by(p.bytes_out);
        limited.get_or_create(&labels).inc_by(s.rate_limited);
        for (reason, n) in &s.rejections {
            let mut l = labels.clone();
            l.push(("reason".to_string(), (*reason).to_string()));
            rejected.get_or_create(&l).inc_by(*n);
        }
    }
    let mut r = prometheus_client::registry::Registry::default();
    r.register(
        "tocsin_peer_connected",
        "1 while the peer is connected",
        connected,
    );
    r.register(
        "tocsin_peer_penalty",
        "The peer's penalty score now (decays; at the threshold it is banned)",
        penalty,
    );
    r.register("tocsin_peer_banned", "1 while the peer is banned", banned);
    r.register(
        "tocsin_peer_catch_up_lag",
        "Entries of the peer's log past our catch-up cursor (its head as last seen)",
        lag,
    );
    r.register(
        "tocsin_peer_queue_depth",
        "Frames queued for the peer and not yet written",
        queue,
    );
    r.register(
        "tocsin_peer_alerts_in",
        "Alerts accepted from the peer",
        alerts_in,
    );
    r.register(
        "tocsin_peer_alerts_out",
        "Full alerts sent to the peer",
        alerts_out,
    );
    r.register(
        "tocsin_peer_bytes_in",
        "Gossip frame bytes received from the peer",
        bytes_in,
    );
    r.register(
        "tocsin_peer_bytes_out",
        "Gossip frame bytes queued for the peer",
        bytes_out,
    );
    r.register(
        "tocsin_peer_rate_limited",
        "Frames and alerts of the peer dropped by its rate limits",
        limited,
    );
    r.register(
        "tocsin_peer_rejections",
        "Frames and alerts of the peer refused, by reason",
        rejected,
    );
    r
}
