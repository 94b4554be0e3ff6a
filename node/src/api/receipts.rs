//! Receipts and sightings. Receipts: an operator acknowledges an alert received here (`POST
//! /v1/alerts/{id}/ack`: a signed receipt goes to its origin), and the origin of an
//! AMBER or RED alert reads where each recipient stands (`GET /v1/alerts/{id}/receipts`).
//! Sightings: an analyst reports seeing an alert (`POST /v1/alerts/{id}/sightings`), and
//! anyone holding it reads who did (`GET`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use tocsin_proto::api::{
    AckRequest, AckView, ErrorBody, ReceiptRow, ReceiptState, ReceiptsView, SightingRequest,
    SightingRow, SightingsView,
};
use tocsin_proto::identity::{Sighting, Signable, IDENTITY_VERSION, MAX_NOTE_BYTES};
use tocsin_proto::{AlertId, Indicator, PublicKey, Tlp, TrustLevel};

use super::alerts::{parse_id, parse_request, stored};
use super::caller::Caller;
use super::error::{parse_body, read_body, ApiError, Errors};
use super::ApiState;
use crate::net::ReceiptOut;
use crate::store::StoredAlert;

/// `409` naming `id`: `what` (the rule broken), then what the alert is and whose.
fn not_for_receipts(st: &ApiState, alert: &StoredAlert, what: &str) -> ApiError {
    let b = alert.alert.body();
    let from = if b.origin == st.public_key {
        "this node".to_string()
    } else {
        b.origin.fmt_short()
    };
    ApiError::new(
        StatusCode::CONFLICT,
        Some("id"),
        format!(
            "{what}; alert {} is {} from {from}",
            alert.alert.id(),
            b.tlp.as_str()
        ),
    )
}

/// Whether receipts are kept for alerts of this label.
fn has_receipts(tlp: Tlp) -> bool {
    matches!(tlp, Tlp::Amber | Tlp::AmberStrict | Tlp::Red)
}

/// Where each recipient of one of this node's AMBER or RED alerts stands; None for any
/// other alert. RED: every named recipient. AMBER: every partner node key in the trust
/// table, and any other node that sent a receipt (a node admitted on its org's
/// certificate, one that was a partner when the alert went out).
pub(super) async fn receipts_of(
    st: &ApiState,
    alert: &StoredAlert,
) -> Result<Option<ReceiptsView>, ApiError> {
    let body = alert.alert.body();
    if body.origin != st.public_key || !has_receipts(body.tlp) {
        return Ok(None);
    }
    let id = alert.alert.id();
    let (receipts, deadline) = st
        .store
        .read(move |s| Ok((s.receipts_in(&id)?, s.ack_deadline(&id)?)))
        .await?;
    let trust = st
        .net
        .trust_list()
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))?;
    let names: BTreeMap<PublicKey, String> =
        trust.iter().map(|e| (e.key, e.name.clone())).collect();
    let mut rows: BTreeMap<PublicKey, ReceiptRow> = BTreeMap::new();
    let expected: Vec<PublicKey> = if body.tlp == Tlp::Red {
        body.recipients.clone()
    } else {
        trust
            .iter()
            .filter(|e| !e.org && e.level == TrustLevel::Partner)
            .map(|e| e.key)
            .collect()
    };
    let row = |key: PublicKey| ReceiptRow {
        receiver: key,
        name: names.get(&key).cloned().unwrap_or_default(),
        state: ReceiptState::NothingYet,
        received_at: None,
        acked_at: None,
        acked_by: None,
    };
    for key in expected {
        rows.insert(key, row(key));
    }
    for (r, org) in receipts {
        // RED receipts count only for named recipients (no one else could hold it): the
        // node itself, and its agency's org key (the org's row shows its most advanced
        // node). AMBER receipts have a row per receiver.
        let keys = if body.tlp == Tlp::Red {
            crate::identity::answers_for(&body.recipients, &r.receiver, org.as_ref())
        } else {
            vec![r.receiver]
        };
        for key in keys {
            let entry = rows.entry(key).or_insert_with(|| row(key));
            let acked = r.acked_at.is_some();
            if entry.state == ReceiptState::Acknowledged && (!acked || entry.acked_at <= r.acked_at)
            {
                // The earliest acknowledgement stands.
                continue;
            }
            entry.state = if acked {
                ReceiptState::Acknowledged
            } else {
                ReceiptState::Delivered
            };
            entry.received_at = Some(r.received_at);
            entry.acked_at = r.acked_at;
            entry.acked_by.clone_from(&r.acked_by);
        }
    }
    let ack_deadline = deadline.map(|(at, _)| at);
    let overdue = ack_deadline.is_some_and(|at| at <= crate::now_ms())
        && rows.values().any(|r| r.state != ReceiptState::Acknowledged);
    Ok(Some(ReceiptsView {
        alert: id,
        recipients: rows.into_values().collect(),
        ack_deadline,
        overdue,
    }))
}

/// `GET /v1/alerts/{id}/receipts`
#[utoipa::path(get, path = "/v1/alerts/{id}/receipts", tag = "alerts", params(("id" = String, Path, description = "The alert id, 64 hex characters")),
    responses(
        (status = 200, description = "Each recipient: delivered, acknowledged or nothing yet", body = ReceiptsView),
        (status = 404, description = "No such alert", body = ErrorBody),
        (status = 409, description = "Not an AMBER or RED alert issued by this node", body = ErrorBody),
        Errors
    ))]
pub(super) async fn receipts(
    State(st): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ReceiptsView>, ApiError> {
    let id = parse_id(id)?;
    let alert = stored(&st, id).await?;
    receipts_of(&st, &alert).await?.map(Json).ok_or_else(|| {
        not_for_receipts(
            &st,
            &alert,
            "receipts are kept by the origin of AMBER and RED alerts",
        )
    })
}

/// `POST /v1/alerts/{id}/ack`
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "alerts", params(("id" = String, Path, description = "The alert id, 64 hex characters")),
    request_body = AckRequest,
    responses(
        (status = 200, description = "Acknowledged; the signed receipt goes to the origin (now, or when it reconnects)", body = AckView),
        (status = 404, description = "No such alert", body = ErrorBody),
        (status = 409, description = "Not an AMBER or RED alert of another node", body = ErrorBody),
        Errors
    ))]
pub(super) async fn ack(
    State(st): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
    caller: Caller,
    body: Body,
) -> Result<Json<AckView>, ApiError> {
    let id = parse_id(id)?;
    let req: AckRequest = parse_request(&read_body(body).await?)?;
    let alert = stored(&st, id).await?;
    let b = alert.alert.body();
    if b.origin == st.public_key || !has_receipts(b.tlp) {
        return Err(not_for_receipts(
            &st,
            &alert,
            "only AMBER and RED alerts received from another node are acknowledged",
        ));
    }
    let by = match req.by.map(|s| s.trim().to_string()) {
        Some(by)
            if by.is_empty() || by.len() > MAX_NOTE_BYTES || by.chars().any(char::is_control) =>
        {
            return Err(ApiError::bad(
                "by",
                format!("by must be 1 to {MAX_NOTE_BYTES} bytes without control characters"),
            ))
        }
        Some(by) => by,
        None => caller.audit_name().await,
    };
    let received_at = alert.receipt.received_at;
    let acked_at = crate::now_ms().max(received_at);
    let out = ReceiptOut {
        alert: id,
        origin: b.origin,
        received_at,
        acked: Some((acked_at, by.clone())),
    };
    st.net
        .ack(out)
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))?
        .map_err(ApiError::internal)?;
    Ok(Json(AckView {
        alert: id,
        origin: b.origin,
        received_at,
        acked_at,
        acked_by: by,
    }))
}

/// `POST /v1/alerts/{id}/sightings`
#[utoipa::path(post, path = "/v1/alerts/{id}/sightings", tag = "alerts", params(("id" = String, Path, description = "The alert id, 64 hex characters")),
    request_body = SightingRequest,
    responses(
        (status = 202, description = "Signed by this node and sent to the alert's origin (and, for CLEAR and GREEN, to the peers that may hold it)", body = SightingsView),
        (status = 404, description = "No such alert", body = ErrorBody),
        Errors
    ))]
pub(super) async fn sighting_add(
    State(st): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<(StatusCode, Json<SightingsView>), ApiError> {
    let id = parse_id(id)?;
    let req: SightingRequest = parse_body(&read_body(body).await?)?;
    let alert = stored(&st, id).await?;
    let indicator = req
        .indicator
        .map(|s| Indicator::parse(&s).map_err(|e| ApiError::from_proto(&e)))
        .transpose()?;
    if let Some(i) = &indicator {
        if !alert.alert.body().indicators.contains(i) {
            return Err(ApiError::bad(
                "indicator",
                format!(
                    "alert {id} has no indicator {}:{}",
                    i.kind.as_str(),
                    i.value
                ),
            ));
        }
    }
    let now = crate::now_ms();
    let sighting = Sighting {
        v: IDENTITY_VERSION,
        alert: Some(id),
        indicator,
        observer: st.public_key,
        count: req.count,
        first_seen: req.first_seen.unwrap_or(now),
        last_seen: req.last_seen.unwrap_or(now),
        note: req.note,
    };
    sighting.validate().map_err(|e| ApiError::from_proto(&e))?;
    st.net
        .sighting(sighting)
        .await
        .ok_or_else(|| ApiError::unavailable("the node is shutting down"))?
        .map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(sightings_of(&st, id).await?)))
}

/// `GET /v1/alerts/{id}/sightings`
#[utoipa::path(get, path = "/v1/alerts/{id}/sightings", tag = "alerts", params(("id" = String, Path, description = "The alert id, 64 hex characters")),
    responses(
        (status = 200, description = "Each observer's newest sighting, and the total", body = SightingsView),
        (status = 404, description = "No such alert", body = ErrorBody),
        Errors
    ))]
pub(super) async fn sightings(
    State(st): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<SightingsView>, ApiError> {
    let id = parse_id(id)?;
    stored(&st, id).await?;
    Ok(Json(sightings_of(&st, id).await?))
}

/// The sightings of an alert held here, named from the trust table or the observer's
/// certificate.
pub(super) async fn sightings_of(st: &ApiState, id: AlertId) -> Result<SightingsView, ApiError> {
    let held = st.store.read(move |s| s.sightings_of(&id)).await?;
    let trust = st.net.trust_list().await.unwrap_or_default();
    let names: BTreeMap<PublicKey, String> = trust.into_iter().map(|e| (e.key, e.name)).collect();
    let agencies = st
        .agencies
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let observers: Vec<SightingRow> = held
        .into_iter()
        .map(|s| SightingRow {
            name: names
                .get(&s.observer)
                .filter(|n| !n.is_empty())
                .cloned()
                .or_else(|| agencies.get(&s.observer).map(|(_, a)| a.clone()))
                .unwrap_or_default(),
            org: agencies.get(&s.observer).map(|(org, _)| *org),
            observer: s.observer,
            indicator: s
                .indicator
                .map(|i| format!("{}:{}", i.kind.as_str(), i.value)),
            count: s.count,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            note: s.note,
        })
        .collect();
    let distinct: BTreeSet<PublicKey> = observers
        .iter()
        .map(|o| o.org.unwrap_or(o.observer))
        .collect();
    Ok(SightingsView {
        alert: id,
        total: observers.iter().map(|o| u64::from(o.count)).sum(),
        agencies: distinct.len() as u64,
        observers,
    })
}
