//! The one JSON view of a stored alert, used by every endpoint and the event stream.

use serde_json::{json, Value};
use tocsin_proto::{AlertBody, SignedAlert};

use crate::store::StoredAlert;

/// The JSON view of a stored alert:
///
/// ```json
/// {"id": "<64 hex>", "seq": 7, "state": "active", "replaced_by": null,
///  "signature": "valid", "sig": "<128 hex>",
///  "alert": {"v": 1, "origin": "<64 hex>", "issued_at": 1700000000000,
///            "expires_at": null, "kind": "new", "replaces": null,
///            "severity": "high", "tlp": "GREEN", "recipients": [],
///            "title": "…", "text": "…",
///            "indicators": [{"type": "ipv4", "value": "192.0.2.1"}],
///            "tags": [], "references": []},
///  "provenance": {"received_at": 1700000000001, "from": null, "hops": 0}}
/// ```
///
/// `signature` is re-verified on every call; `sig` is the ed25519 signature itself; `provenance.from` is `null` for an alert
/// issued on this node.
pub fn alert_json(stored: &StoredAlert) -> Value {
    let alert = &stored.alert;
    json!({
        "id": alert.id().to_string(),
        "seq": stored.seq,
        "state": serde_json::to_value(stored.state).unwrap_or(Value::Null),
        "replaced_by": stored.replaced_by.map(|id| id.to_string()),
        "signature": signature_status(alert),
        "sig": hex::encode(alert.signature()),
        "alert": body_json(alert.body()),
        "provenance": {
            "received_at": stored.receipt.received_at,
            "from": stored.receipt.from.map(|k| k.to_string()),
            "hops": stored.receipt.hops,
        },
    })
}

/// `"valid"` or `"invalid"`: strict verification over the stored body bytes.
fn signature_status(alert: &SignedAlert) -> &'static str {
    if alert.check_signature().is_ok() {
        "valid"
    } else {
        "invalid"
    }
}

/// The body's fields, keys and ids as hex.
fn body_json(b: &AlertBody) -> Value {
    json!({
        "v": b.v,
        "origin": b.origin.to_string(),
        "issued_at": b.issued_at,
        "expires_at": b.expires_at,
        "kind": serde_json::to_value(b.kind).unwrap_or(Value::Null),
        "replaces": b.replaces.map(|id| id.to_string()),
        "severity": b.severity.as_str(),
        "tlp": b.tlp.as_str(),
        "recipients": b.recipients.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "title": b.title,
        "text": b.text,
        "indicators": b.indicators.iter().map(|i| json!({
            "type": i.kind.as_str(),
            "value": i.value,
        })).collect::<Vec<_>>(),
        "tags": b.tags,
        "references": b.references,
    })
}
