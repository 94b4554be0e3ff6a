//! Federation endpoints of the control API: trust management, peers, metrics, and the
//! test-only partition control. Merged into [`crate::api::router`] by the daemon.

// Handlers return a ready error `Response` from small parsing helpers; boxing it would
// only add noise on a cold path.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use tocsin_proto::{PublicKey, TrustLevel};

use crate::net::NetHandle;
use crate::store::{Store, TrustEntry};

/// What the federation endpoints need.
#[derive(Clone)]
pub struct ControlState {
    pub net: NetHandle,
    pub store: Store,
    pub registry: Arc<Mutex<Registry>>,
    pub test_control: bool,
}

fn error(status: StatusCode, field: Option<&str>, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into(), "field": field}))).into_response()
}

fn parse_key(s: &str) -> Result<PublicKey, Response> {
    PublicKey::from_hex(s).map_err(|e| error(StatusCode::BAD_REQUEST, Some("key"), e.to_string()))
}

/// The routes.
pub fn router(state: ControlState) -> Router {
    let mut r = Router::new()
        .route("/v1/trust", get(trust_list).post(trust_add))
        .route(
            "/v1/trust/{key}",
            get(trust_get).put(trust_set).delete(trust_remove),
        )
        .route("/v1/trust-audit", get(audit))
        .route("/v1/peers", get(peers))
        .route("/v1/net", get(net_status))
        .route("/metrics", get(metrics));
    if state.test_control {
        r = r
            .route("/v1/test/partition", post(partition))
            .route("/v1/test/heal", post(heal));
    }
    r.with_state(state)
}

/// `POST /v1/trust` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustAdd {
    pub key: String,
    pub level: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// `PUT /v1/trust/{key}` body: any subset.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustPatch {
    pub level: Option<String>,
    pub name: Option<String>,
    pub addrs: Option<Vec<String>>,
}

fn parse_level(s: &str) -> Result<TrustLevel, Response> {
    s.parse::<TrustLevel>()
        .map_err(|e| error(StatusCode::BAD_REQUEST, Some("level"), e.to_string()))
}

fn check_addrs(addrs: &[String]) -> Result<(), Response> {
    for a in addrs {
        if a.parse::<libp2p::Multiaddr>().is_err() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                Some("addrs"),
                format!("{a:?} is not a multiaddr (e.g. /ip4/192.0.2.7/tcp/7400)"),
            ));
        }
    }
    Ok(())
}

async fn trust_list(State(st): State<ControlState>) -> Response {
    match st.store.trust_entries() {
        Ok(mut v) => {
            v.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
            Json(json!({"entries": v})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
    }
}

async fn trust_get(State(st): State<ControlState>, Path(key): Path<String>) -> Response {
    let key = match parse_key(&key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match st.store.trust_entries() {
        Ok(v) => match v.into_iter().find(|e| e.key == key) {
            Some(e) => Json(e).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                Some("key"),
                format!("no trust entry for {key}"),
            ),
        },
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
    }
}

async fn apply(st: &ControlState, entry: TrustEntry, status: StatusCode) -> Response {
    let new = entry.level;
    let key = entry.key;
    match st.net.trust_set(entry).await {
        Ok(old) => (status, Json(json!({"key": key, "old": old, "new": new}))).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e),
    }
}

async fn trust_add(State(st): State<ControlState>, body: axum::body::Bytes) -> Response {
    let req: TrustAdd = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                None,
                format!("bad request body: {e}"),
            )
        }
    };
    let key = match parse_key(&req.key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let level = match parse_level(&req.level) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if let Err(r) = check_addrs(&req.addrs) {
        return r;
    }
    apply(
        &st,
        TrustEntry {
            key,
            level,
            name: req.name,
            addrs: req.addrs,
        },
        StatusCode::CREATED,
    )
    .await
}

async fn trust_set(
    State(st): State<ControlState>,
    Path(key): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let key = match parse_key(&key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let patch: TrustPatch = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                None,
                format!("bad request body: {e}"),
            )
        }
    };
    let existing = match st.store.trust_entries() {
        Ok(v) => v.into_iter().find(|e| e.key == key),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
    };
    let Some(mut entry) = existing else {
        return error(
            StatusCode::NOT_FOUND,
            Some("key"),
            format!("no trust entry for {key}; add it with `tocsin trust add`"),
        );
    };
    if let Some(l) = patch.level {
        match parse_level(&l) {
            Ok(l) => entry.level = l,
            Err(r) => return r,
        }
    }
    if let Some(n) = patch.name {
        entry.name = n;
    }
    if let Some(a) = patch.addrs {
        if let Err(r) = check_addrs(&a) {
            return r;
        }
        entry.addrs = a;
    }
    apply(&st, entry, StatusCode::OK).await
}

async fn trust_remove(State(st): State<ControlState>, Path(key): Path<String>) -> Response {
    let key = match parse_key(&key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match st.net.trust_remove(key).await {
        Ok(Some(old)) => Json(json!({"key": key, "old": old, "new": null})).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            Some("key"),
            format!("no trust entry for {key}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e),
    }
}

async fn audit(State(st): State<ControlState>) -> Response {
    match st.store.audit_log(1000) {
        Ok(v) => Json(json!({"records": v})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
    }
}

async fn peers(State(st): State<ControlState>) -> Response {
    Json(json!({"peers": st.net.peers().await})).into_response()
}

async fn net_status(State(st): State<ControlState>) -> Response {
    Json(json!(st.net.status().await)).into_response()
}

async fn metrics(State(st): State<ControlState>) -> Response {
    let mut out = String::new();
    let res = match st.registry.lock() {
        Ok(reg) => {
            prometheus_client::encoding::text::encode(&mut out, &reg).map_err(|e| e.to_string())
        }
        Err(_) => Err("metrics registry poisoned".to_string()),
    };
    match res {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e),
    }
}

/// `POST /v1/test/partition` body.
#[derive(Debug, Deserialize)]
pub struct PartitionReq {
    pub peers: Vec<String>,
}

async fn partition(State(st): State<ControlState>, Json(req): Json<PartitionReq>) -> Response {
    let mut keys = Vec::new();
    for p in &req.peers {
        match parse_key(p) {
            Ok(k) => keys.push(k),
            Err(r) => return r,
        }
    }
    let n = keys.len();
    st.net.partition(keys).await;
    Json(json!({"partitioned": n})).into_response()
}

async fn heal(State(st): State<ControlState>) -> Response {
    st.net.heal().await;
    Json(json!({"healed": true})).into_response()
}
