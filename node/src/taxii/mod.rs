//! TAXII 2.1, read-only, on the control API's TCP listener under `/taxii2/`.
//!
//! | path | what |
//! |---|---|
//! | `GET /taxii2/` | discovery |
//! | `GET /taxii2/api/` | the one API root |
//! | `GET /taxii2/api/collections/` | the collections this client may read |
//! | `GET /taxii2/api/collections/{id}/` | one collection |
//! | `GET …/{id}/objects/` | its objects (`added_after`, `limit`, `next`, `match[…]`) |
//! | `GET …/{id}/objects/{object_id}/` | one object's versions (default: the latest) |
//! | `GET …/{id}/objects/{object_id}/versions/` | when each version of it was modified |
//! | `GET …/{id}/manifest/` | what the objects page would hold, without the objects |
//!
//! Clients are the `[[taxii.clients]]` entries of the config. Each authenticates with
//! HTTP Basic (its name and secret) or `Authorization: Bearer <secret>`, and sees only
//! alerts at or below its `max_tlp`: collections above it are not listed and answer
//! 404, and the `alerts` collection holds only what it may see. The API token does
//! not open TAXII, and a TAXII secret opens nothing else. Every answer, errors included,
//! is `application/taxii+json;version=2.1`. `docs/interop.md` documents the mapping.

pub mod collection;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tocsin_proto::stix;
use tocsin_proto::Tlp;

use crate::store::Store;
use collection::{Cursor, Filter, Scope, VersionMatch};

/// The TAXII 2.1 media type, of every answer.
pub const MEDIA_TYPE: &str = "application/taxii+json;version=2.1";
/// The STIX 2.1 media type, of the objects in manifests.
pub const STIX_MEDIA_TYPE: &str = "application/stix+json;version=2.1";
/// Objects per page when the client gives no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Most objects per page, whatever `limit` asks.
pub const MAX_LIMIT: usize = 1_000;
/// The path of the one API root.
pub const API_ROOT: &str = "/taxii2/api/";

/// `[taxii]`: who may read alerts over TAXII 2.1. No clients: TAXII answers 401 to all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaxiiConfig {
    /// The title of the discovery resource and the API root. Default: "Tocsin node".
    pub title: Option<String>,
    /// The clients (`[[taxii.clients]]`).
    pub clients: Vec<ClientConfig>,
}

/// One TAXII client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Its user name for Basic auth, and its name in logs: letters, digits, `-`, `_`.
    pub name: String,
    /// Its secret (at least 16 characters, no whitespace): the Basic password, or the
    /// bearer token. Or …
    #[serde(default)]
    pub secret: Option<String>,
    /// … a file holding it (its first line).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The most restricted TLP label it may read: `CLEAR` sees CLEAR only, `GREEN`
    /// sees CLEAR and GREEN, and so on up to `RED`.
    pub max_tlp: Tlp,
}

impl ClientConfig {
    /// Checks the entry; `Err((field, why))` names the first bad field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        crate::config::check_name(&self.name).map_err(|why| ("name", why))?;
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => Err(("secret", "give secret or secret_file, not both".into())),
            (None, None) => Err(("secret", "required (or secret_file)".into())),
            (Some(s), None) => check_secret(s).map_err(|why| ("secret", why)),
            (None, Some(_)) => Ok(()),
        }
    }

    /// The secret, read from `secret_file` if that is how it is given.
    pub fn load_secret(&self) -> Result<String, String> {
        let secret =
            crate::config::load_secret(self.secret.as_deref(), self.secret_file.as_deref())?;
        check_secret(&secret).map_err(|why| format!("the secret {why}"))?;
        Ok(secret)
    }
}

fn check_secret(s: &str) -> Result<(), String> {
    if s.chars().any(char::is_whitespace) {
        return Err("must not contain spaces or other whitespace".into());
    }
    if s.chars().count() < 16 {
        return Err("must be at least 16 characters".into());
    }
    Ok(())
}

/// A client with its secret loaded.
#[derive(Debug, Clone)]
struct Client {
    name: String,
    secret: String,
    max_tlp: Tlp,
}

/// What the TAXII handlers share.
pub struct Taxii {
    store: Store,
    title: String,
    clients: Vec<Client>,
}

impl std::fmt::Debug for Taxii {
    // Never prints the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taxii")
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl Taxii {
    /// The TAXII service for `cfg`, reading secret files. `Err` names the client field
    /// that cannot be used.
    pub fn new(cfg: &TaxiiConfig, store: Store) -> Result<Taxii, String> {
        let mut clients = Vec::new();
        for (i, c) in cfg.clients.iter().enumerate() {
            let secret = c
                .load_secret()
                .map_err(|why| format!("taxii.clients[{i}] ({}): {why}", c.name))?;
            clients.push(Client {
                name: c.name.clone(),
                secret,
                max_tlp: c.max_tlp,
            });
        }
        Ok(Taxii {
            store,
            title: cfg.title.clone().unwrap_or_else(|| "Tocsin node".into()),
            clients,
        })
    }

    /// The client the request's credentials name, if they are right.
    fn client(&self, headers: &HeaderMap) -> Option<&Client> {
        let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, value) = auth.split_once(' ')?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self
                .clients
                .iter()
                .find(|c| same(c.secret.as_bytes(), value.as_bytes()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (name, secret) = text.split_once(':')?;
            return self.clients.iter().find(|c| {
                same(c.name.as_bytes(), name.as_bytes())
                    & same(c.secret.as_bytes(), secret.as_bytes())
            });
        }
        None
    }
}

/// Compares without an early exit, so timing does not reveal a secret.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A collection: a name, the labels it holds, and its fixed id.
struct Def {
    name: &'static str,
    title: &'static str,
    labels: &'static [Tlp],
}

const ALL_LABELS: &[Tlp] = &Tlp::ALL;

/// The collections: every alert the client may see, then one per TLP label.
const COLLECTIONS: [Def; 6] = [
    Def {
        name: "alerts",
        title: "Tocsin alerts",
        labels: ALL_LABELS,
    },
    Def {
        name: "tlp-clear",
        title: "Tocsin alerts, TLP:CLEAR",
        labels: &[Tlp::Clear],
    },
    Def {
        name: "tlp-green",
        title: "Tocsin alerts, TLP:GREEN",
        labels: &[Tlp::Green],
    },
    Def {
        name: "tlp-amber",
        title: "Tocsin alerts, TLP:AMBER",
        labels: &[Tlp::Amber],
    },
    Def {
        name: "tlp-amber-strict",
        title: "Tocsin alerts, TLP:AMBER+STRICT",
        labels: &[Tlp::AmberStrict],
    },
    Def {
        name: "tlp-red",
        title: "Tocsin alerts, TLP:RED",
        labels: &[Tlp::Red],
    },
];

impl Def {
    /// Its id: the same on every node.
    fn id(&self) -> String {
        stix::uuid_of(&format!("taxii-collection:{}", self.name))
    }

    fn visible_to(&self, c: &Client) -> bool {
        self.labels.iter().any(|t| *t <= c.max_tlp)
    }

    fn json(&self) -> Value {
        let labels: Vec<&str> = self.labels.iter().map(|t| t.as_str()).collect();
        json!({
            "id": self.id(),
            "title": self.title,
            "alias": self.name,
            "description": format!(
                "Alerts this node holds labelled {} (those your client may read), as STIX 2.1: a report per alert version with its indicators.",
                labels.join(", ")
            ),
            "can_read": true,
            "can_write": false,
            "media_types": [STIX_MEDIA_TYPE],
        })
    }
}

/// A TAXII error: `{"title", "description", "http_status"}` in the TAXII media type.
#[derive(Debug)]
pub struct TaxiiError {
    status: StatusCode,
    title: &'static str,
    description: String,
}

impl TaxiiError {
    fn new(status: StatusCode, title: &'static str, description: impl Into<String>) -> Self {
        TaxiiError {
            status,
            title,
            description: description.into(),
        }
    }

    fn bad(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", description)
    }

    fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", description)
    }
}

impl IntoResponse for TaxiiError {
    fn into_response(self) -> Response {
        let body = json!({
            "title": self.title,
            "description": self.description,
            "http_status": self.status.as_u16().to_string(),
        });
        let mut resp = taxii_json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tocsin-taxii\", Bearer"),
            );
        }
        resp
    }
}

impl From<crate::store::StoreError> for TaxiiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "TAXII request failed in the store");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Store failure",
            format!("the node's store failed: {e}"),
        )
    }
}

fn taxii_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE))],
        body.to_string(),
    )
        .into_response()
}

/// Whether a request path is TAXII's (`/taxii2` and below): such requests carry TAXII
/// credentials, not the API token.
pub fn is_taxii_path(path: &str) -> bool {
    path == "/taxii2" || path.starts_with("/taxii2/")
}

/// The TAXII answer to a path under `/taxii2/` that no route serves.
pub fn not_found() -> Response {
    TaxiiError::not_found("no such TAXII endpoint (TAXII 2.1 paths end with '/')").into_response()
}

/// The TAXII answer to a method other than GET.
pub fn method_not_allowed() -> Response {
    TaxiiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "this TAXII server is read-only: only GET is served",
    )
    .into_response()
}

/// The TAXII routes, at their full paths under `/taxii2/` (merged into the API's
/// router, whose fallbacks answer with [`not_found`] and [`method_not_allowed`] there).
pub fn routes(taxii: Arc<Taxii>) -> Router {
    let c = "/taxii2/api/collections/{id}";
    Router::new()
        .route("/taxii2/", get(discovery))
        .route(API_ROOT, get(api_root))
        .route("/taxii2/api/collections/", get(collections))
        .route(&format!("{c}/"), get(collection_info))
        .route(&format!("{c}/objects/"), get(objects))
        .route(&format!("{c}/objects/{{object_id}}/"), get(object))
        .route(
            &format!("{c}/objects/{{object_id}}/versions/"),
            get(versions),
        )
        .route(&format!("{c}/manifest/"), get(manifest))
        .with_state(taxii)
}

/// Authenticates the request and checks its `Accept` header.
fn admit<'a>(t: &'a Taxii, headers: &HeaderMap) -> Result<&'a Client, TaxiiError> {
    let Some(client) = t.client(headers) else {
        return Err(TaxiiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong credentials: HTTP Basic with a [[taxii.clients]] name and secret, or Authorization: Bearer <secret>",
        ));
    };
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        let ok = accept.split(',').any(|a| {
            let a = a.replace(' ', "").to_ascii_lowercase();
            let media = a.split(';').next().unwrap_or_default().to_string();
            media == "*/*"
                || media == "application/*"
                || (media == "application/taxii+json"
                    && a.split(';')
                        .skip(1)
                        .all(|p| !p.starts_with("version=") || p == "version=2.1"))
        });
        if !ok {
            return Err(TaxiiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "Not acceptable",
                format!("this server answers {MEDIA_TYPE} only"),
            ));
        }
    }
    Ok(client)
}

/// The collection `id` if this client may read it.
fn find<'a>(client: &Client, id: &str) -> Result<&'a Def, TaxiiError> {
    COLLECTIONS
        .iter()
        .find(|d| d.id() == id && d.visible_to(client))
        .ok_or_else(|| TaxiiError::not_found(format!("no collection {id} readable by this client")))
}

async fn discovery(
    State(t): State<Arc<Taxii>>,
    headers: HeaderMap,
) -> Result<Response, TaxiiError> {
    admit(&t, &headers)?;
    Ok(taxii_json(
        StatusCode::OK,
        &json!({
            "title": t.title,
            "description": "Alerts of the Tocsin federation held by this node, read-only.",
            "default": API_ROOT,
            "api_roots": [API_ROOT],
        }),
    ))
}

async fn api_root(State(t): State<Arc<Taxii>>, headers: HeaderMap) -> Result<Response, TaxiiError> {
    admit(&t, &headers)?;
    Ok(taxii_json(
        StatusCode::OK,
        &json!({
            "title": t.title,
            "description": "Read-only collections of alerts, by TLP label.",
            "versions": [MEDIA_TYPE],
            "max_content_length": 0,
        }),
    ))
}

async fn collections(
    State(t): State<Arc<Taxii>>,
    headers: HeaderMap,
) -> Result<Response, TaxiiError> {
    let client = admit(&t, &headers)?;
    let list: Vec<Value> = COLLECTIONS
        .iter()
        .filter(|d| d.visible_to(client))
        .map(Def::json)
        .collect();
    Ok(taxii_json(StatusCode::OK, &json!({ "collections": list })))
}

async fn collection_info(
    State(t): State<Arc<Taxii>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, TaxiiError> {
    let client = admit(&t, &headers)?;
    let Path(id) = taken(id)?;
    Ok(taxii_json(StatusCode::OK, &find(client, &id)?.json()))
}

/// The query parameters of the paged endpoints.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    added_after: Option<String>,
    limit: Option<String>,
    next: Option<String>,
    #[serde(rename = "match[id]")]
    match_id: Option<String>,
    #[serde(rename = "match[type]")]
    match_type: Option<String>,
    #[serde(rename = "match[version]")]
    match_version: Option<String>,
    #[serde(rename = "match[spec_version]")]
    match_spec_version: Option<String>,
}

/// A request's page: where it starts, its size and filter.
struct Request {
    from: Cursor,
    limit: usize,
    filter: Filter,
}

fn list(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl PageQuery {
    fn request(&self, object_id: Option<&str>) -> Result<Request, TaxiiError> {
        let from = match (&self.next, &self.added_after) {
            (Some(next), _) => Cursor::parse(next).ok_or_else(|| {
                TaxiiError::bad(format!("next {next:?} is not a token this server gave"))
            })?,
            (None, Some(after)) => {
                Cursor::after(stix::parse_timestamp_us(after).ok_or_else(|| {
                    TaxiiError::bad(format!(
                        "added_after {after:?} is not an RFC 3339 timestamp"
                    ))
                })?)
            }
            (None, None) => Cursor::default(),
        };
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if n > 0 => n.min(MAX_LIMIT),
                _ => {
                    return Err(TaxiiError::bad(format!(
                        "limit {l:?} is not a positive integer"
                    )))
                }
            },
        };
        let mut versions = Vec::new();
        for v in list(&self.match_version) {
            versions.push(match v.as_str() {
                "all" => VersionMatch::All,
                "first" => VersionMatch::First,
                "last" => VersionMatch::Last,
                ts => VersionMatch::At(stix::parse_timestamp(ts).ok_or_else(|| {
                    TaxiiError::bad(format!(
                        "match[version] {ts:?} is not first, last, all or a timestamp"
                    ))
                })?),
            });
        }
        let mut ids = list(&self.match_id);
        if let Some(id) = object_id {
            ids = vec![id.to_string()];
        }
        let spec = list(&self.match_spec_version);
        Ok(Request {
            from,
            limit,
            filter: Filter {
                ids,
                types: list(&self.match_type),
                versions,
                no_spec_version: !spec.is_empty() && !spec.iter().any(|s| s == "2.1"),
            },
        })
    }
}

/// Runs a page read on the blocking pool.
async fn read_page(
    t: &Taxii,
    def: &Def,
    client: &Client,
    req: Request,
) -> Result<collection::Page, TaxiiError> {
    let scope = Scope {
        labels: def.labels,
        ceiling: client.max_tlp,
    };
    Ok(t.store
        .read(move |s| collection::page(s, scope, &req.filter, req.from, req.limit))
        .await?)
}

/// A paged answer with its `X-TAXII-Date-Added-First/Last` headers.
fn paged(page: &collection::Page, mut body: serde_json::Map<String, Value>) -> Response {
    body.insert("more".into(), json!(page.next.is_some()));
    if let Some(next) = page.next {
        body.insert("next".into(), json!(next.token()));
    }
    let mut resp = taxii_json(StatusCode::OK, &Value::Object(body));
    let first = page.objects.first().map(|(us, _)| *us);
    let last = page.objects.last().map(|(us, _)| *us);
    for (name, us) in [
        ("x-taxii-date-added-first", first),
        ("x-taxii-date-added-last", last),
    ] {
        if let Some(v) = us.and_then(|us| HeaderValue::from_str(&stix::timestamp_us(us)).ok()) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

fn envelope(page: &collection::Page) -> serde_json::Map<String, Value> {
    let mut body = serde_json::Map::new();
    if !page.objects.is_empty() {
        let objects: Vec<Value> = page.objects.iter().map(|(_, o)| o.value.clone()).collect();
        body.insert("objects".into(), Value::Array(objects));
    }
    body
}

/// A path or query that axum could not read, as a TAXII error (read after
/// [`admit`], so that nothing is answered before the credentials are checked).
fn taken<T, E: std::fmt::Display>(extracted: Result<T, E>) -> Result<T, TaxiiError> {
    extracted.map_err(|e| TaxiiError::bad(e.to_string()))
}

async fn objects(
    State(t): State<Arc<Taxii>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, TaxiiError> {
    let client = admit(&t, &headers)?;
    let Path(id) = taken(id)?;
    let Query(q) = taken(q)?;
    let def = find(client, &id)?;
    let page = read_page(&t, def, client, q.request(None)?).await?;
    Ok(paged(&page, envelope(&page)))
}

async fn object(
    State(t): State<Arc<Taxii>>,
    headers: HeaderMap,
    ids: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, TaxiiError> {
    let client = admit(&t, &headers)?;
    let Path((id, object_id)) = taken(ids)?;
    let Query(q) = taken(q)?;
    let def = find(client, &id)?;
    let page = read_page(&t, def, client, q.request(Some(&object_id))?).await?;
    if page.objects.is_empty() && page.next.is_none() {
        return Err(TaxiiError::not_found(format!(
            "no object {object_id} in this collection"
        )));
    }
    Ok(paged(&page, envelope(&page)))
}

async fn versions(
    State(t): State<Arc<Taxii>>,
    headers: HeaderMap,
    ids: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, TaxiiError> {
    let client = admit(&t, &headers)?;
    let Path((id, object_id)) = taken(ids)?;
    let Query(mut q) = taken(q)?;
    let def = find(client, &id)?;
    q.match_version = Some("all".into());
    let page = read_page(&t, def, client, q.request(Some(&object_id))?).await?;
    if page.objects.is_empty() && page.next.is_none() {
        return Err(TaxiiError::not_found(format!(
            "no object {object_id} in this collection"
        )));
    }
    let mut body = serde_json::Map::new();
    let versions: Vec<&str> = page
        .objects
        .iter()
        .map(|(_, o)| o.modified.as_str())
        .collect();
    body.insert("versions".into(), json!(versions));
    Ok(paged(&page, body))
}

async fn manifest(
    State(t): State<Arc<Taxii>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, TaxiiError> {
    let client = admit(&t, &headers)?;
    let Path(id) = taken(id)?;
    let Query(q) = taken(q)?;
    let def = find(client, &id)?;
    let page = read_page(&t, def, client, q.request(None)?).await?;
    let mut body = serde_json::Map::new();
    if !page.objects.is_empty() {
        let records: Vec<Value> = page
            .objects
            .iter()
            .map(|(us, o)| {
                json!({
                    "id": o.id,
                    "date_added": stix::timestamp_us(*us),
                    "version": o.modified,
                    "media_type": STIX_MEDIA_TYPE,
                })
            })
            .collect();
        body.insert("objects".into(), Value::Array(records));
    }
    Ok(paged(&page, body))
}
