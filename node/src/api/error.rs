//! The API's error responses: `{"error": "<message>", "field": "<field or null>"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use tocsin_proto::api::FieldError;
use tocsin_proto::limits::Limit;

use crate::store::StoreError;

pub use tocsin_proto::api::ErrorBody;

/// The error answers every endpoint may give, for the OpenAPI description.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes answers
pub enum Errors {
    /// 400.
    #[response(status = 400, description = "Bad input; the error names the field")]
    BadInput(ErrorBody),
    /// 401.
    #[response(status = 401, description = "TCP without the bearer token")]
    Unauthorized(ErrorBody),
    /// 500.
    #[response(status = 500, description = "The store failed")]
    Failed(ErrorBody),
    /// 503.
    #[response(
        status = 503,
        description = "The node is stopping or its store is degraded"
    )]
    Unavailable(ErrorBody),
}

/// The answers of an update or cancel of an alert that cannot be changed.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes answers
pub enum OwnAlertErrors {
    /// 403.
    #[response(status = 403, description = "Not issued by this node")]
    NotOwn(ErrorBody),
    /// 404.
    #[response(status = 404, description = "No such alert")]
    Missing(ErrorBody),
    /// 409.
    #[response(status = 409, description = "Already cancelled")]
    Cancelled(ErrorBody),
}

/// An error response: a status code and an [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    /// 400 bad input, 401 bad token, 403 not ours, 404 unknown, 409 conflicting state,
    /// 413 request too large, 500 store failure.
    pub status: StatusCode,
    /// The body sent to the client.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with a status, an optional field and a message.
    pub fn new(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: message.into(),
                field: field.map(str::to_owned),
            },
        }
    }

    /// 400: `field` has a bad value.
    pub fn bad(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(field), message)
    }

    /// 400: a required field is missing.
    pub fn missing(field: &str) -> Self {
        Self::bad(field, format!("{field} is required"))
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, message)
    }

    /// 500: the store (or another daemon part) failed; the message says how.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "control API request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, message)
    }

    /// 503: the node cannot do this now (it is stopping).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, None, message)
    }

    /// 401: the bearer token is missing or wrong.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token: send the header `Authorization: Bearer <api.token>`",
        )
    }

    /// 400 for a proto validation error, naming the field and, for a limit, the
    /// constant and its value.
    pub fn from_proto(err: &tocsin_proto::Error) -> Self {
        if let tocsin_proto::Error::Encode(_) = err {
            return Self::internal(err.to_string());
        }
        Self::from_field(tocsin_proto::api::field_error(err))
    }

    /// 400 for a field error worded by [`tocsin_proto::api`].
    pub fn from_field(e: FieldError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.field, e.message)
    }
}

/// 400 for an exceeded limit, e.g. "text is 40000 bytes, exceeds the limit
/// MAX_TEXT_BYTES = 32768". `field` overrides the field the limit belongs to (a cancel's
/// reason is stored as the text).
pub fn limit_error(limit: Limit, actual: usize, field: Option<&'static str>) -> ApiError {
    ApiError::from_field(tocsin_proto::api::limit_error(limit, actual, field))
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            // A bad filter or cursor is the client's mistake; the message names the field.
            StoreError::InvalidQuery(message) => {
                let field = QUERY_PARAMS
                    .iter()
                    .find(|p| {
                        message
                            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                            .any(|w| w == **p)
                    })
                    .copied();
                ApiError::new(StatusCode::BAD_REQUEST, field, err.to_string())
            }
            _ => ApiError::internal(format!("store: {err}")),
        }
    }
}

/// The query parameters of `GET /v1/alerts`, to name one in a store's query error.
const QUERY_PARAMS: [&str; 11] = [
    "cursor",
    "limit",
    "since",
    "until",
    "origin",
    "min_severity",
    "tlp",
    "tag",
    "indicator",
    "text",
    "state",
];

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// How long a request body may take to arrive: a client that trickles its body
/// holds a connection slot, so it gets a `408` instead of keeping it.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a request body, refusing more than [`MAX_REQUEST_BYTES`](super::MAX_REQUEST_BYTES)
/// before parsing, and a body that takes longer than [`BODY_TIMEOUT`].
pub(super) async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    let read = axum::body::to_bytes(body, super::MAX_REQUEST_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!(
                "the request body exceeds the limit MAX_REQUEST_BYTES = {}",
                super::MAX_REQUEST_BYTES
            ),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            None,
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Parses a JSON body into `T`, naming the field at fault when it can.
pub(super) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // An unknown key is reported at its parent; name the key itself.
        let unknown = inner
            .to_string()
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .map(|key| match path.as_str() {
                "." => key.to_owned(),
                parent => format!("{parent}.{key}"),
            });
        let field = unknown.or((path != ".").then_some(path));
        ApiError::new(
            StatusCode::BAD_REQUEST,
            field.as_deref(),
            format!("bad request body: {inner}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_messages_name_field_and_constant() {
        let e = limit_error(Limit::TextBytes, 40000, None);
        assert_eq!(e.body.field.as_deref(), Some("text"));
        assert_eq!(
            e.body.error,
            "text is 40000 bytes, exceeds the limit MAX_TEXT_BYTES = 32768"
        );
        let e = limit_error(Limit::TextBytes, 40000, Some("reason"));
        assert_eq!(e.body.field.as_deref(), Some("reason"));
        assert_eq!(
            e.body.error,
            "reason is 40000 bytes, exceeds the limit MAX_TEXT_BYTES = 32768"
        );
        let e = limit_error(Limit::Tags, 33, None);
        assert_eq!(e.body.error, "33 tags, exceeds the limit MAX_TAGS = 32");
    }

    #[test]
    fn proto_errors_map_to_api_fields() {
        let err = tocsin_proto::Indicator::parse("ipv4:999.1.1.1").unwrap_err();
        let e = ApiError::from_proto(&err);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.field.as_deref(), Some("indicators"));
        assert!(e.body.error.contains("999.1.1.1"), "{}", e.body.error);
        let err = "purple".parse::<tocsin_proto::Tlp>().unwrap_err();
        assert_eq!(
            ApiError::from_proto(&err).body.field.as_deref(),
            Some("tlp")
        );
    }
}
