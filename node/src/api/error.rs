//! The API's error responses: `{"error": "<message>", "field": "<field or null>"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tocsin_proto::limits::Limit;

use crate::store::StoreError;

/// The JSON body of every error response. The CLI deserialises the same type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong, for a human; limits are named with their value.
    pub error: String,
    /// The request field or query parameter at fault, when there is one.
    pub field: Option<String>,
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
        match err {
            tocsin_proto::Error::Limit { limit, actual } => limit_error(*limit, *actual, None),
            tocsin_proto::Error::Invalid { field, .. } => {
                Self::bad(api_field(field), err.to_string())
            }
            tocsin_proto::Error::Encode(_) => Self::internal(err.to_string()),
            _ => Self::new(StatusCode::BAD_REQUEST, None, err.to_string()),
        }
    }
}

/// The API field a proto field name corresponds to.
fn api_field(proto_field: &str) -> &str {
    match proto_field {
        "indicator" | "indicator type" => "indicators",
        "key" => "recipients",
        other => other,
    }
}

/// 400 for an exceeded limit, e.g. "text is 40000 bytes, exceeds the limit
/// MAX_TEXT_BYTES = 32768". `field` overrides the field the limit belongs to (a cancel's
/// reason is stored as the text).
pub fn limit_error(limit: Limit, actual: usize, field: Option<&str>) -> ApiError {
    let (default_field, what) = match limit {
        Limit::TitleBytes => (Some("title"), format!("title is {actual} bytes")),
        Limit::TextBytes => (Some("text"), format!("text is {actual} bytes")),
        Limit::IndicatorBytes => (
            Some("indicators"),
            format!("an indicator value is {actual} bytes"),
        ),
        Limit::TagBytes => (Some("tags"), format!("a tag is {actual} bytes")),
        Limit::ReferenceBytes => (Some("references"), format!("a reference is {actual} bytes")),
        Limit::Indicators => (Some("indicators"), format!("{actual} indicators")),
        Limit::Tags => (Some("tags"), format!("{actual} tags")),
        Limit::Recipients => (Some("recipients"), format!("{actual} recipients")),
        Limit::References => (Some("references"), format!("{actual} references")),
        Limit::EnvelopeBytes => (None, format!("the signed alert is {actual} bytes")),
        Limit::FrameBytes | Limit::IdsPerFrame => (None, format!("{actual}")),
    };
    let field = field.or(default_field);
    let what = match (field, default_field) {
        (Some(f), Some(d)) if f != d => what.replacen(d, f, 1),
        _ => what,
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        field,
        format!("{what}, exceeds the limit {limit}"),
    )
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
