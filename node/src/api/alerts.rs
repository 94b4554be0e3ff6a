//! Issue, update, cancel, get, history and list.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use tocsin_proto::limits::Limit;
use tocsin_proto::{
    AlertBody, AlertId, Indicator, IndicatorType, Kind, PublicKey, Severity, Tlp, FORMAT_VERSION,
};

use super::error::{limit_error, parse_body, read_body, ApiError, Errors, OwnAlertErrors};
use super::view::alert_json;
use super::ApiState;
use crate::net::IssueError;
use crate::store::{AlertState, Insert, Query as StoreQuery, StoredAlert, MAX_QUERY_LIMIT};
use tocsin_proto::api::{
    AlertHistory, AlertPage, AlertRequest, AlertView, CancelRequest, ErrorBody, IndicatorSpec,
    Issued, OriginAgency, ReceiptCounts, ReceiptState,
};

/// A handler's JSON answer with its status.
pub(super) type Answer = Result<(StatusCode, Json<Value>), ApiError>;

/// The fields of an issue or update request. `None` = not given (or JSON `null`).
#[derive(Debug, Default)]
pub(super) struct AlertFields {
    pub severity: Option<Severity>,
    pub tlp: Option<Tlp>,
    pub title: Option<String>,
    pub text: Option<String>,
    pub recipients: Option<Vec<PublicKey>>,
    pub indicators: Option<Vec<Indicator>>,
    pub tags: Option<Vec<String>>,
    pub references: Option<Vec<String>>,
    pub expires: Option<Expiry>,
    pub ack_within: Option<Duration>,
}

/// When an alert expires, as given in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// `expires_in`: a duration after issue.
    In(Duration),
    /// `expires_at`: unix milliseconds.
    At(u64),
}

impl Expiry {
    fn resolve(self, issued_at: u64) -> u64 {
        match self {
            Expiry::In(d) => {
                issued_at.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            Expiry::At(at) => at,
        }
    }
}

/// Parses a request body into `T` (an empty body is an empty object), naming the
/// top-level field at fault.
pub(super) fn parse_request<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    parse_body(bytes).map_err(|mut e| {
        // `indicators[2].value` is the `indicators` field to a caller.
        if let Some(f) = e.body.field.as_mut() {
            if let Some(end) = f.find(['.', '[']) {
                f.truncate(end);
            }
        }
        e
    })
}

/// A list field's items, after checking their count against `limit`.
fn limited<T>(items: Option<Vec<T>>, limit: Limit) -> Result<Option<Vec<T>>, ApiError> {
    if let Some(items) = &items {
        limit
            .check(items.len())
            .map_err(|e| ApiError::from_proto(&e))?;
    }
    Ok(items)
}

fn indicator(spec: IndicatorSpec) -> Result<Indicator, ApiError> {
    let proto = |e: tocsin_proto::Error| ApiError::from_proto(&e);
    match spec {
        IndicatorSpec::Text(spec) => Indicator::parse(&spec).map_err(proto),
        IndicatorSpec::Object(o) => {
            let kind: IndicatorType = o.kind.parse().map_err(proto)?;
            Indicator::new(kind, o.value).map_err(proto)
        }
    }
}

/// Parses the fields of an issue or update request, naming the field at fault.
pub(super) fn parse_alert_fields(bytes: &[u8]) -> Result<AlertFields, ApiError> {
    let r: AlertRequest = parse_request(bytes)?;
    let proto = |e: tocsin_proto::Error| ApiError::from_proto(&e);
    let expires = match (r.expires_in, r.expires_at) {
        (Some(_), Some(_)) => return Err(both_expiries()),
        (Some(s), None) => {
            let d = humantime::parse_duration(&s).map_err(|e| {
                ApiError::bad(
                    "expires_in",
                    format!("expires_in {s:?} is not a duration such as \"24h\": {e}"),
                )
            })?;
            if d.is_zero() {
                return Err(ApiError::bad(
                    "expires_in",
                    "expires_in must be longer than zero",
                ));
            }
            Some(Expiry::In(d))
        }
        (None, Some(at)) => Some(Expiry::At(at)),
        (None, None) => None,
    };
    let ack_within = r
        .ack_within
        .map(|s| {
            humantime::parse_duration(&s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ApiError::bad(
                        "ack_within",
                        format!(
                            "ack_within {s:?} is not a duration longer than zero, such as \"15m\""
                        ),
                    )
                })
        })
        .transpose()?;
    let recipients = limited(r.recipients, Limit::Recipients)?
        .map(|keys| {
            keys.iter()
                .map(|s| {
                    PublicKey::from_hex(s).map_err(|_| {
                        ApiError::bad(
                            "recipients",
                            format!("recipient {s:?} is not a node key (64 hex characters)"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let indicators = limited(r.indicators, Limit::Indicators)?
        .map(|specs| specs.into_iter().map(indicator).collect::<Result<_, _>>())
        .transpose()?;
    Ok(AlertFields {
        severity: r.severity.map(|s| s.parse()).transpose().map_err(proto)?,
        tlp: r.tlp.map(|s| s.parse()).transpose().map_err(proto)?,
        title: r.title,
        text: r.text,
        recipients,
        indicators,
        tags: limited(r.tags, Limit::Tags)?,
        references: limited(r.references, Limit::References)?,
        expires,
        ack_within,
    })
}

fn both_expiries() -> ApiError {
    ApiError::bad("expires_in", "give expires_in or expires_at, not both")
}

/// Parses an alert id from the path.
pub(super) fn parse_id(id: Result<Path<String>, PathRejection>) -> Result<AlertId, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad("id", e.body_text()))?;
    AlertId::from_hex(&id).map_err(|_| {
        ApiError::bad(
            "id",
            format!("{id:?} is not an alert id (64 hex characters)"),
        )
    })
}

pub(super) fn no_such_alert(id: &AlertId) -> ApiError {
    ApiError::not_found(format!("no alert with id {id}"))
}

/// Hands a body issued here to the network actor, which signs, stores and gossips it;
/// answers once the alert is durable.
async fn commit(st: &ApiState, body: AlertBody, ack_deadline: Option<u64>) -> Answer {
    let issued = st.net.issue(body).await.map_err(|e| match e {
        IssueError::Invalid(e) => ApiError::from_proto(&e),
        IssueError::Store(e) => ApiError::from(e),
        IssueError::ShuttingDown => ApiError::unavailable("the node is shutting down"),
    })?;
    if let (Some(deadline), Insert::Inserted { .. }) = (ack_deadline, issued.insert) {
        // The alert is out: a failure here must not make the caller issue it again.
        let id = issued.id;
        if let Err(e) = st
            .store
            .read(move |s| s.set_ack_deadline(&id, deadline))
            .await
        {
            tracing::warn!(alert = %id, error = %e, "the alert was issued, but its ack_within deadline could not be stored; acknowledgements will not be watched");
        }
    }
    let (status, seq, duplicate) = match issued.insert {
        Insert::Inserted { seq } => (StatusCode::CREATED, seq, false),
        Insert::Duplicate { seq } => (StatusCode::OK, seq, true),
    };
    Ok((
        status,
        Json(
            serde_json::to_value(Issued {
                id: issued.id,
                seq,
                duplicate,
            })
            .map_err(|e| ApiError::internal(e.to_string()))?,
        ),
    ))
}

/// `POST /v1/alerts`
#[utoipa::path(post, path = "/v1/alerts", tag = "alerts",
    request_body = AlertRequest,
    responses(
        (status = 201, description = "Issued: signed by this node, committed, gossiped", body = Issued),
        Errors
    ))]
pub(super) async fn issue(State(st): State<Arc<ApiState>>, body: Body) -> Answer {
    let f = parse_alert_fields(&read_body(body).await?)?;
    let severity = f.severity.ok_or_else(|| ApiError::missing("severity"))?;
    let tlp = f.tlp.ok_or_else(|| ApiError::missing("tlp"))?;
    let title = f.title.ok_or_else(|| ApiError::missing("title"))?;
    if f.ack_within.is_some() && tlp != Tlp::Red {
        return Err(ApiError::bad(
            "ack_within",
            "ack_within is for RED alerts, whose recipients are named",
        ));
    }
    let now = crate::now_ms();
    let body = AlertBody {
        v: FORMAT_VERSION,
        origin: st.public_key,
        issued_at: now,
        expires_at: f.expires.map(|e| e.resolve(now)),
        kind: Kind::New,
        replaces: None,
        severity,
        tlp,
        recipients: f.recipients.unwrap_or_default(),
        title,
        text: f.text.unwrap_or_default(),
        indicators: f.indicators.unwrap_or_default(),
        tags: f.tags.unwrap_or_default(),
        references: f.references.unwrap_or_default(),
    };
    let deadline = f
        .ack_within
        .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    commit(&st, body, deadline).await
}

/// The stored alert `id` (404 if there is none).
pub(super) async fn stored(st: &ApiState, id: AlertId) -> Result<StoredAlert, ApiError> {
    st.store
        .read(move |s| s.get(&id))
        .await?
        .ok_or_else(|| no_such_alert(&id))
}

/// The alert `id`, if this node may update or cancel it: it exists (404), this node is
/// its origin (403), and it is the live end of its chain (409).
async fn own_alert(st: &ApiState, id: &AlertId, verb: &str) -> Result<StoredAlert, ApiError> {
    let stored = stored(st, *id).await?;
    let body = stored.alert.body();
    let me = st.public_key;
    if body.origin != me {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            None,
            format!(
                "alert {id} was issued by node {}, not by this node ({}); only its origin can {verb} it",
                body.origin, me
            ),
        ));
    }
    if body.kind == Kind::Cancel {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            None,
            format!("alert {id} is a cancel; a cancel cannot be updated or cancelled"),
        ));
    }
    match stored.state {
        AlertState::Cancelled => Err(ApiError::new(
            StatusCode::CONFLICT,
            None,
            format!("alert {id} was cancelled; a cancel is final"),
        )),
        AlertState::Superseded => Err(ApiError::new(
            StatusCode::CONFLICT,
            None,
            match stored.replaced_by {
                Some(next) => format!(
                    "alert {id} was superseded by {next}; {verb} the latest version instead"
                ),
                None => format!("alert {id} was superseded; {verb} the latest version instead"),
            },
        )),
        _ => Ok(stored),
    }
}

/// `issued_at` for an alert replacing one issued at `previous`: now, but never earlier
/// than the alert it replaces (a clock step back must not make an update look older).
fn issued_after(previous: u64) -> u64 {
    crate::now_ms().max(previous.saturating_add(1))
}

/// `POST /v1/alerts/{id}/update`
#[utoipa::path(post, path = "/v1/alerts/{id}/update", tag = "alerts", params(("id" = String, Path, description = "The alert id, 64 hex characters")),
    request_body = AlertRequest,
    responses(
        (status = 201, description = "The update, a new alert that replaces this one", body = Issued),
        OwnAlertErrors, Errors
    ))]
pub(super) async fn update(
    State(st): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Answer {
    let id = parse_id(id)?;
    let f = parse_alert_fields(&read_body(body).await?)?;
    if f.ack_within.is_some() {
        return Err(ApiError::bad(
            "ack_within",
            "ack_within is set when a RED alert is issued, not on an update",
        ));
    }
    let orig = own_alert(&st, &id, "update").await?;
    let ob = orig.alert.body();
    if let Some(tlp) = f.tlp {
        if tlp != ob.tlp {
            return Err(ApiError::bad(
                "tlp",
                format!(
                    "an update keeps the TLP of the alert it replaces ({}); issue a new alert to change it",
                    ob.tlp.as_str()
                ),
            ));
        }
    }
    if let Some(recipients) = &f.recipients {
        let given: BTreeSet<_> = recipients.iter().collect();
        let original: BTreeSet<_> = ob.recipients.iter().collect();
        if given != original {
            return Err(ApiError::bad(
                "recipients",
                "an update keeps the recipients of the alert it replaces; issue a new alert to change them",
            ));
        }
    }
    let now = issued_after(ob.issued_at);
    let expires_at = match f.expires {
        Some(e) => Some(e.resolve(now)),
        None => match ob.expires_at {
            Some(exp) if exp <= now => {
                return Err(ApiError::bad(
                    "expires_in",
                    format!(
                        "alert {id} expired at {exp} (unix ms); give a new expires_in or expires_at to update it"
                    ),
                ))
            }
            kept => kept,
        },
    };
    let body = AlertBody {
        v: FORMAT_VERSION,
        origin: ob.origin,
        issued_at: now,
        expires_at,
        kind: Kind::Update,
        replaces: Some(id),
        severity: f.severity.unwrap_or(ob.severity),
        tlp: ob.tlp,
        recipients: ob.recipients.clone(),
        title: f.title.unwrap_or_else(|| ob.title.clone()),
        text: f.text.unwrap_or_else(|| ob.text.clone()),
        indicators: f.indicators.unwrap_or_else(|| ob.indicators.clone()),
        tags: f.tags.unwrap_or_else(|| ob.tags.clone()),
        references: f.references.unwrap_or_else(|| ob.references.clone()),
    };
    commit(&st, body, None).await
}

/// `POST /v1/alerts/{id}/cancel`
#[utoipa::path(post, path = "/v1/alerts/{id}/cancel", tag = "alerts", params(("id" = String, Path, description = "The alert id, 64 hex characters")),
    request_body = CancelRequest,
    responses(
        (status = 201, description = "The cancel, a new alert that retracts this one", body = Issued),
        OwnAlertErrors, Errors
    ))]
pub(super) async fn cancel(
    State(st): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Answer {
    let id = parse_id(id)?;
    let request: CancelRequest = parse_request(&read_body(body).await?)?;
    let reason = request.reason.ok_or_else(|| ApiError::missing("reason"))?;
    if reason.trim().is_empty() {
        return Err(ApiError::bad("reason", "reason must not be empty"));
    }
    Limit::TextBytes
        .check(reason.len())
        .map_err(|_| limit_error(Limit::TextBytes, reason.len(), Some("reason")))?;
    let orig = own_alert(&st, &id, "cancel").await?;
    // Each earlier version of an updated alert gets a cancel of its own: a node that
    // never received the update this cancel names (offline meanwhile, or promoted
    // later; a cancelled update is no longer served) would otherwise hold the
    // original as active, and a cancel never revives what it retracts. They go first,
    // and the named version's last: a node killed half-way leaves that version
    // uncancelled, so the same request, made again, completes the chain.
    // The versions it descends from, oldest first: not a sibling branch (one of ours
    // that came back from a peer beside a newer version), which may be the live one.
    let origin = orig.alert.body().origin;
    let chain = st.store.read(move |s| s.history(&id)).await?;
    let mut earlier: Vec<StoredAlert> = Vec::new();
    let mut up = orig.alert.body().replaces;
    for _ in 0..chain.len() {
        let Some(a) = up.and_then(|t| chain.iter().find(|a| a.alert.id() == t)) else {
            break;
        };
        let b = a.alert.body();
        if b.origin != origin || b.kind == Kind::Cancel {
            break;
        }
        up = b.replaces;
        if a.state != AlertState::Cancelled {
            earlier.push(a.clone());
        }
    }
    earlier.reverse();
    for prev in earlier {
        let prev_id = prev.alert.id();
        match commit(
            &st,
            prev.alert
                .body()
                .cancel(prev_id, reason.clone(), crate::now_ms()),
            None,
        )
        .await
        {
            Ok(_) => {}
            // One that cannot be built (a limit tightened since) must not keep the
            // named version from being cancelled; a store failure or a shutdown must.
            Err(e) if e.status == StatusCode::BAD_REQUEST => {
                tracing::warn!(alert = %prev_id.fmt_short(), error = %e.body.error, "an earlier version of a cancelled alert was not cancelled");
            }
            Err(e) => return Err(e),
        }
    }
    commit(
        &st,
        orig.alert.body().cancel(id, reason, crate::now_ms()),
        None,
    )
    .await
}

/// Runs blocking store reads (and signature checks) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))?
}

/// `GET /v1/alerts/{id}`
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts", params(("id" = String, Path, description = "The alert id, 64 hex characters")),
    responses(
        (status = 200, description = "The alert view", body = AlertView),
        (status = 404, description = "No such alert", body = ErrorBody),
        Errors
    ))]
pub(super) async fn get(
    State(st): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let id = parse_id(id)?;
    let stored = stored(&st, id).await?;
    let mut view = alert_json(&stored);
    let body = stored.alert.body();
    let revoked = st
        .revoked
        .read()
        .ok()
        .and_then(|t| t.get(&body.origin).cloned());
    if let Some(mut r) = revoked {
        r.issued_after = body.issued_at >= r.revoked_at;
        view["origin_revoked"] = serde_json::to_value(r).unwrap_or_default();
    }
    let agency = st
        .agencies
        .read()
        .ok()
        .and_then(|t| t.get(&body.origin).cloned());
    if let Some((org, agency)) = agency {
        view["origin_agency"] =
            serde_json::to_value(OriginAgency { org, agency }).unwrap_or_default();
    }
    if let Some(r) = super::receipts::receipts_of(&st, &stored).await? {
        let count = |state| r.recipients.iter().filter(|x| x.state == state).count();
        let counts = ReceiptCounts {
            delivered: count(ReceiptState::Delivered),
            acknowledged: count(ReceiptState::Acknowledged),
            nothing_yet: count(ReceiptState::NothingYet),
            overdue: r.overdue,
        };
        view["receipts"] = serde_json::to_value(counts).unwrap_or_default();
    }
    Ok((StatusCode::OK, Json(view)))
}

/// `GET /v1/alerts/{id}/history`
#[utoipa::path(get, path = "/v1/alerts/{id}/history", tag = "alerts", params(("id" = String, Path, description = "The alert id, 64 hex characters")),
    responses(
        (status = 200, description = "Every version of its chain, oldest first", body = AlertHistory),
        (status = 404, description = "No such alert", body = ErrorBody),
        Errors
    ))]
pub(super) async fn history(
    State(st): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let id = parse_id(id)?;
    let store = st.store.clone();
    let views = blocking(move || {
        let chain = store.history(&id)?;
        if chain.is_empty() {
            return Err(no_such_alert(&id));
        }
        Ok(chain.iter().map(alert_json).collect::<Vec<_>>())
    })
    .await?;
    Ok((StatusCode::OK, Json(json!({ "alerts": views }))))
}

fn parse_u64(v: &str, field: &str, what: &str) -> Result<u64, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad(field, format!("{field} {v:?} is not {what}")))
}

/// Parses the list filters, naming the parameter at fault. Empty values are ignored.
pub(super) fn parse_list_query(params: Vec<(String, String)>) -> Result<StoreQuery, ApiError> {
    let mut q = StoreQuery::default();
    let mut given = std::collections::HashSet::new();
    for (key, v) in params {
        if v.is_empty() {
            continue;
        }
        let k = key.as_str();
        if !given.insert(key.clone()) {
            return Err(ApiError::bad(
                k,
                format!("{k} is given twice: each filter takes one value"),
            ));
        }
        match k {
            "since" => q.since = Some(parse_u64(&v, k, "unix milliseconds")?),
            "until" => q.until = Some(parse_u64(&v, k, "unix milliseconds")?),
            "origin" => {
                q.origin = Some(PublicKey::from_hex(&v).map_err(|_| {
                    ApiError::bad(
                        k,
                        format!("origin {v:?} is not a node key (64 hex characters)"),
                    )
                })?)
            }
            "min_severity" => {
                let s: Severity = v.parse().map_err(|e: tocsin_proto::Error| {
                    ApiError::bad(k, e.to_string().replacen("severity", "min_severity", 1))
                })?;
                q.min_severity = Some(s);
            }
            "tlp" => q.tlp = Some(v.parse().map_err(|e| ApiError::from_proto(&e))?),
            "tag" => q.tag = Some(v),
            "indicator" => q.indicator = Some(v),
            "text" => q.text = Some(v),
            "state" => {
                q.state = Some(
                    serde_json::from_value(Value::String(v.clone())).map_err(|_| {
                        ApiError::bad(
                            k,
                            format!(
                                "state {v:?} is not one of active, superseded, cancelled, expired"
                            ),
                        )
                    })?,
                )
            }
            "limit" => {
                let n: usize = v.parse().map_err(|_| {
                    ApiError::bad(k, format!("limit {v:?} is not a positive integer"))
                })?;
                if n == 0 || n > MAX_QUERY_LIMIT {
                    return Err(ApiError::bad(
                        k,
                        format!(
                            "limit {n} is not between 1 and MAX_QUERY_LIMIT = {MAX_QUERY_LIMIT}"
                        ),
                    ));
                }
                q.limit = Some(n);
            }
            "cursor" => q.cursor = Some(v),
            _ => return Err(ApiError::bad(k, format!("unknown query parameter {k:?}"))),
        }
    }
    if let (Some(since), Some(until)) = (q.since, q.until) {
        if since > until {
            return Err(ApiError::bad("since", "since is later than until"));
        }
    }
    Ok(q)
}

/// `GET /v1/alerts?…`
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    params(
        ("since" = Option<u64>, Query, description = "Issued at or after, unix ms"),
        ("until" = Option<u64>, Query, description = "Issued before, unix ms"),
        ("origin" = Option<String>, Query, description = "Issued by this node key, or by any node this org key certified"),
        ("min_severity" = Option<String>, Query, description = "critical, high, medium, low or info"),
        ("tlp" = Option<String>, Query, description = "Exactly this TLP label"),
        ("tag" = Option<String>, Query, description = "Has this tag (case-insensitive)"),
        ("indicator" = Option<String>, Query, description = "Has an indicator with this exact value"),
        ("text" = Option<String>, Query, description = "Substring of the title or text"),
        ("state" = Option<String>, Query, description = "active, superseded, cancelled or expired"),
        ("limit" = Option<usize>, Query, description = "Page size, 1 to MAX_QUERY_LIMIT"),
        ("cursor" = Option<String>, Query, description = "The `next` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page, newest first", body = AlertPage),
        Errors
    ))]
pub(super) async fn list(
    State(st): State<Arc<ApiState>>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Answer {
    let Query(params) = params.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            None,
            format!("bad query string: {}", e.body_text()),
        )
    })?;
    let mut q = parse_list_query(params)?;
    // An org key as the origin names every node it certified that this node has met.
    if let Some(org) = q.origin {
        let nodes: Vec<PublicKey> = st
            .agencies
            .read()
            .map(|t| {
                t.iter()
                    .filter(|(_, (o, _))| *o == org)
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default();
        if !nodes.is_empty() {
            q.origin = None;
            q.origins = nodes;
        }
    }
    let store = st.store.clone();
    let (views, next) = blocking(move || {
        let page = store.query(&q)?;
        Ok((
            page.alerts.iter().map(alert_json).collect::<Vec<_>>(),
            page.next,
        ))
    })
    .await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "alerts": views, "next": next })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<AlertFields, ApiError>) -> String {
        r.unwrap_err().body.field.unwrap_or_default()
    }

    #[test]
    fn fields_parse_both_indicator_forms() {
        let f = parse_alert_fields(
            br#"{"severity":"high","tlp":"AMBER+STRICT","title":"t",
                 "indicators":["ipv4:192.0.2.1",{"type":"domain","value":"evil.example"}],
                 "expires_in":"24h"}"#,
        )
        .unwrap();
        assert_eq!(f.severity, Some(Severity::High));
        assert_eq!(f.tlp, Some(Tlp::AmberStrict));
        assert_eq!(f.indicators.unwrap().len(), 2);
        assert_eq!(f.expires, Some(Expiry::In(Duration::from_secs(86400))));
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            field_of(parse_alert_fields(br#"{"severity":"bad"}"#)),
            "severity"
        );
        assert_eq!(field_of(parse_alert_fields(br#"{"tlp":"PINK"}"#)), "tlp");
        assert_eq!(field_of(parse_alert_fields(br#"{"title":5}"#)), "title");
        assert_eq!(
            field_of(parse_alert_fields(br#"{"indicators":["nope"]}"#)),
            "indicators"
        );
        assert_eq!(
            field_of(parse_alert_fields(br#"{"recipients":["abc"]}"#)),
            "recipients"
        );
        assert_eq!(field_of(parse_alert_fields(br#"{"colour":"x"}"#)), "colour");
        assert_eq!(
            field_of(parse_alert_fields(br#"{"expires_in":"1h","expires_at":5}"#)),
            "expires_in"
        );
        let many = format!(r#"{{"tags":[{}]}}"#, vec!["\"a\""; 40].join(","));
        let err = parse_alert_fields(many.as_bytes()).unwrap_err();
        assert_eq!(err.body.field.as_deref(), Some("tags"));
        assert!(
            err.body.error.contains("MAX_TAGS = 32"),
            "{}",
            err.body.error
        );
    }

    #[test]
    fn list_query_names_bad_parameters() {
        let p = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        for (k, v) in [
            ("since", "yesterday"),
            ("origin", "xyz"),
            ("min_severity", "urgent"),
            ("tlp", "PINK"),
            ("state", "alive"),
            ("limit", "0"),
            ("limit", "100000"),
            ("bogus", "1"),
        ] {
            let err = parse_list_query(p(k, v)).unwrap_err();
            assert_eq!(err.body.field.as_deref(), Some(k), "{k}={v}");
        }
        let q = parse_list_query(vec![
            ("min_severity".into(), "high".into()),
            ("state".into(), "active".into()),
            ("limit".into(), "10".into()),
            ("tag".into(), "".into()),
        ])
        .unwrap();
        assert_eq!(q.min_severity, Some(Severity::High));
        assert!(matches!(q.state, Some(AlertState::Active)));
        assert_eq!(q.limit, Some(10));
        assert_eq!(q.tag, None);
    }
}
