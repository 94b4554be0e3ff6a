//! The control API's shared vocabulary: request and response bodies, the error body,
//! and the CLI's exit codes.
//!
//! `tocsind` serialises these and `tocsin` deserialises them, so both sides agree on
//! every field without the CLI linking the daemon. JSON is done by each side (with
//! `serde_json`); this module only defines the shapes. Keys and ids serialise as 64 hex
//! characters in JSON (see [`crate::ids`]). `docs/api.md` documents every endpoint.

use serde::{Deserialize, Serialize};

use crate::alert::AlertBody;
use crate::ids::{AlertId, PublicKey};
use crate::limits::Limit;
use crate::policy::TrustLevel;
use crate::Error;

/// CLI exit code: success.
pub const EXIT_OK: u8 = 0;
/// CLI exit code: bad input, or the daemon refused the request (4xx).
pub const EXIT_INPUT: u8 = 1;
/// CLI exit code: the daemon cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 2;
/// CLI exit code: the daemon failed (5xx) or answered something unreadable.
pub const EXIT_DAEMON: u8 = 3;

/// The JSON body of every error response: `{"error": "<message>", "field": "<field or
/// null>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, for a human; limits are named with their value.
    pub error: String,
    /// The request field or query parameter at fault, when there is one.
    pub field: Option<String>,
}

/// A problem with one field of a request, as both the daemon and the CLI word it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The API field at fault, when there is one (`title`, `indicators`, …).
    pub field: Option<&'static str>,
    /// The message, naming limits with their value.
    pub message: String,
}

/// The API field a [`Limit`] belongs to, if it belongs to one.
fn limit_field(limit: Limit) -> Option<&'static str> {
    match limit {
        Limit::TitleBytes => Some("title"),
        Limit::TextBytes => Some("text"),
        Limit::IndicatorBytes | Limit::Indicators => Some("indicators"),
        Limit::TagBytes | Limit::Tags => Some("tags"),
        Limit::ReferenceBytes | Limit::References => Some("references"),
        Limit::Recipients => Some("recipients"),
        Limit::EnvelopeBytes | Limit::FrameBytes | Limit::IdsPerFrame => None,
    }
}

/// An exceeded limit, e.g. "text is 40000 bytes, exceeds the limit MAX_TEXT_BYTES =
/// 32768". `field` overrides the field the limit belongs to (a cancel's reason is stored
/// as the text, so it is reported as `reason`).
pub fn limit_error(limit: Limit, actual: usize, field: Option<&'static str>) -> FieldError {
    let own = limit_field(limit);
    let name = field.or(own).unwrap_or("the value");
    let what = match limit {
        Limit::TitleBytes | Limit::TextBytes => format!("{name} is {actual} bytes"),
        Limit::IndicatorBytes => format!("an indicator value is {actual} bytes"),
        Limit::TagBytes => format!("a tag is {actual} bytes"),
        Limit::ReferenceBytes => format!("a reference is {actual} bytes"),
        Limit::Indicators | Limit::Tags | Limit::Recipients | Limit::References => {
            format!("{actual} {name}")
        }
        Limit::EnvelopeBytes => format!("the signed alert is {actual} bytes"),
        Limit::FrameBytes | Limit::IdsPerFrame => format!("{actual}"),
    };
    FieldError {
        field: field.or(own),
        message: format!("{what}, exceeds the limit {limit}"),
    }
}

/// The API field a validation error of the alert model belongs to, and its message.
pub fn field_error(err: &Error) -> FieldError {
    match err {
        Error::Limit { limit, actual } => limit_error(*limit, *actual, None),
        Error::Invalid { field, .. } => FieldError {
            field: Some(match *field {
                "indicator" | "indicator type" => "indicators",
                "key" => "recipients",
                other => other,
            }),
            message: err.to_string(),
        },
        _ => FieldError {
            field: None,
            message: err.to_string(),
        },
    }
}

/// The answer to issue, update and cancel (`201 Created`, or `200` with `duplicate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Issued {
    /// The alert's id.
    #[schema(value_type = String)]
    pub id: AlertId,
    /// Its local sequence number.
    pub seq: u64,
    /// Whether the same alert was already stored.
    #[serde(default)]
    pub duplicate: bool,
}

/// An indicator as a request gives it: `"TYPE:VALUE"` or `{"type": …, "value": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum IndicatorSpec {
    /// `"ipv4:192.0.2.1"`.
    Text(String),
    /// `{"type": "ipv4", "value": "192.0.2.1"}`.
    Object(IndicatorObject),
}

/// The object form of [`IndicatorSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndicatorObject {
    /// The indicator type (`ipv4`, `domain`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The value.
    pub value: String,
}

/// `POST /v1/alerts` (issue) and `POST /v1/alerts/{id}/update`. Names and labels are
/// strings here and parsed by the daemon, so that its errors name the field and list
/// the values it accepts. For an update, every field is optional and what is not given
/// is kept from the alert it replaces (the TLP and the recipients cannot change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AlertRequest {
    /// `critical`, `high`, `medium`, `low` or `info` (required to issue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// `CLEAR`, `GREEN`, `AMBER`, `AMBER+STRICT` or `RED` (required to issue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlp: Option<String>,
    /// The title (required to issue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Recipient node keys (required for RED).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    /// Typed indicators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicators: Option<Vec<IndicatorSpec>>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// References (URLs, case numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<String>>,
    /// Expiry as a duration after issue, e.g. `"24h"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// Expiry as unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// For a new RED alert: every recipient should acknowledge it within this duration,
    /// e.g. `"15m"` (kept on this node, not sent; see `/v1/alerts/{id}/receipts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_within: Option<String>,
}

/// `POST /v1/alerts/{id}/cancel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CancelRequest {
    /// Why it is cancelled (required, not empty; stored as the cancel's text).
    pub reason: Option<String>,
}

/// The lifecycle state of a stored alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Current.
    Active,
    /// Replaced by an update from its origin.
    Superseded,
    /// Retracted by a cancel from its origin.
    Cancelled,
    /// Past its `expires_at`.
    Expired,
}

impl AlertState {
    /// Every state.
    pub const ALL: [AlertState; 4] = [
        AlertState::Active,
        AlertState::Superseded,
        AlertState::Cancelled,
        AlertState::Expired,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Active => "active",
            AlertState::Superseded => "superseded",
            AlertState::Cancelled => "cancelled",
            AlertState::Expired => "expired",
        }
    }
}

impl std::str::FromStr for AlertState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        AlertState::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::invalid(
                    "state",
                    format!("{s:?} is not one of active, superseded, cancelled, expired"),
                )
            })
    }
}

/// Whether the stored signature verifies (checked again on every read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureStatus {
    /// Strict ed25519 verification over the stored body bytes succeeds.
    Valid,
    /// It does not (the stored record was damaged).
    Invalid,
}

/// How the node came to hold an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Provenance {
    /// When it was received (or issued here), unix ms.
    pub received_at: u64,
    /// The peer it came from; `None` when issued on this node.
    #[schema(value_type = Option<String>)]
    pub from: Option<PublicKey>,
    /// Relay hops it had travelled; 0 when issued here.
    pub hops: u8,
}

/// The one JSON view of a stored alert, used by every endpoint and the event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertView {
    /// The alert id.
    #[schema(value_type = String)]
    pub id: AlertId,
    /// The local sequence number.
    pub seq: u64,
    /// Its state now.
    pub state: AlertState,
    /// The update or cancel that replaced it.
    #[schema(value_type = Option<String>)]
    pub replaced_by: Option<AlertId>,
    /// Whether the stored signature verifies.
    pub signature: SignatureStatus,
    /// The ed25519 signature, 128 hex (over the signing context and the CBOR body).
    #[serde(default)]
    pub sig: String,
    /// The signed body.
    pub alert: AlertBody,
    /// How it arrived.
    pub provenance: Provenance,
    /// Its origin's node key was revoked by its agency (`GET /v1/alerts/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_revoked: Option<OriginRevoked>,
    /// For an AMBER or RED alert issued here: its recipients' receipts, counted
    /// (`GET /v1/alerts/{id}` only; `/receipts` has the rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<ReceiptCounts>,
    /// The agency its origin speaks for, when this node has seen the origin's valid
    /// certificate (`GET /v1/alerts/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_agency: Option<OriginAgency>,
}

/// The agency an alert's origin node speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OriginAgency {
    /// The org key that certified the origin.
    #[schema(value_type = String)]
    pub org: PublicKey,
    /// The agency's name in the certificate.
    pub agency: String,
}

/// Receipts of one alert, counted by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptCounts {
    pub delivered: usize,
    pub acknowledged: usize,
    pub nothing_yet: usize,
    /// Its acknowledgement deadline passed with recipients that have not acknowledged.
    pub overdue: bool,
}

/// An alert's origin was revoked by its agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OriginRevoked {
    /// From when, unix ms.
    pub revoked_at: u64,
    /// The reason the agency gave.
    pub reason: String,
    /// Whether this alert was issued at or after that time (then it is refused by
    /// every node that knows of the revocation, and no longer shared).
    pub issued_after: bool,
}

/// Where one recipient of an alert stands, as its origin knows from receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    /// No receipt yet.
    NothingYet,
    /// It stored the alert.
    Delivered,
    /// An operator there acknowledged it.
    Acknowledged,
}

/// One recipient's row in `GET /v1/alerts/{id}/receipts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptRow {
    /// The recipient's node key.
    #[schema(value_type = String)]
    pub receiver: PublicKey,
    /// Its name in the trust table, if any.
    pub name: String,
    /// Where it stands.
    pub state: ReceiptState,
    /// When it stored the alert (its clock), unix ms.
    pub received_at: Option<u64>,
    /// When an operator there acknowledged it, unix ms.
    pub acked_at: Option<u64>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
}

/// `GET /v1/alerts/{id}/receipts`: for an AMBER or RED alert issued here, each
/// recipient's receipt (RED: every named recipient; AMBER: every partner in the trust
/// table, and any other node that sent a receipt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptsView {
    /// The alert id.
    #[schema(value_type = String)]
    pub alert: AlertId,
    /// One row per recipient, by key.
    pub recipients: Vec<ReceiptRow>,
    /// When every recipient should have acknowledged it (`--ack-within`), unix ms.
    pub ack_deadline: Option<u64>,
    /// The deadline passed with recipients that have not acknowledged.
    pub overdue: bool,
}

/// `POST /v1/alerts/{id}/ack`: an operator acknowledges an alert received here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AckRequest {
    /// Who acknowledges it (an operator's name or role; default: the caller).
    pub by: Option<String>,
}

/// The receipt sent to the alert's origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AckView {
    /// The alert id.
    #[schema(value_type = String)]
    pub alert: AlertId,
    /// Its origin, to which the receipt goes.
    #[schema(value_type = String)]
    pub origin: PublicKey,
    /// When it was stored here, unix ms.
    pub received_at: u64,
    /// When it was acknowledged, unix ms.
    pub acked_at: u64,
    /// Who acknowledged it.
    pub acked_by: String,
}

/// `POST /v1/alerts/{id}/sightings`: this node's analysts saw the alert (or one of its
/// indicators) `count` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SightingRequest {
    /// How many times (1 to 1,000,000).
    pub count: u32,
    /// Where or how, for the origin's analysts (at most 1024 bytes).
    #[serde(default)]
    pub note: String,
    /// The indicator seen, `type:value`, if the sighting is of one indicator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator: Option<String>,
    /// First seen, unix ms (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<u64>,
    /// Last seen, unix ms (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// One observer's latest sighting of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SightingRow {
    /// The node that saw it.
    #[schema(value_type = String)]
    pub observer: PublicKey,
    /// Its name in the trust table, or its agency from its certificate, if known.
    pub name: String,
    /// The org key of its agency, when it presented its certificate to this node.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub org: Option<PublicKey>,
    /// The indicator seen, `type:value`, if one.
    pub indicator: Option<String>,
    pub count: u32,
    pub first_seen: u64,
    pub last_seen: u64,
    pub note: String,
}

/// `GET /v1/alerts/{id}/sightings`: who reported seeing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SightingsView {
    /// The alert id.
    #[schema(value_type = String)]
    pub alert: AlertId,
    /// The counts added up.
    pub total: u64,
    /// How many agencies saw it: observers of one org count once, an observer whose
    /// agency is not known here counts alone.
    #[serde(default)]
    pub agencies: u64,
    /// One row per observer (its latest sighting), by key.
    pub observers: Vec<SightingRow>,
}

/// `POST /v1/revocations`: a revocation (`tocsin org revoke`) and the certificate it
/// takes back (`tocsin org certify`), each file's bytes as hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// The revocation file, hex.
    pub revocation: String,
    /// The certificate file of the revoked node, hex.
    pub cert: String,
}

/// A node key revoked by its agency, as this node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevocationView {
    /// The revoked node key.
    #[schema(value_type = String)]
    pub node: PublicKey,
    /// The org key that certified and revoked it.
    #[schema(value_type = String)]
    pub org: PublicKey,
    /// The agency named in the certificate.
    pub agency: String,
    /// From when, unix ms: what it signed before stays valid.
    pub revoked_at: u64,
    /// Why.
    pub reason: String,
}

/// `GET /v1/revocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevocationList {
    /// Every revocation held, by node key.
    pub revocations: Vec<RevocationView>,
}

/// `GET /v1/alerts`: one page, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertPage {
    /// The alerts.
    pub alerts: Vec<AlertView>,
    /// The cursor of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// `GET /v1/alerts/{id}/history`: the chain of versions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertHistory {
    /// The versions.
    pub alerts: Vec<AlertView>,
}

/// `POST /v1/trust`: add (or replace) a trust entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustAddRequest {
    /// The peer's public key, 64 hex.
    pub key: String,
    /// `blocked`, `public`, `member` or `partner`.
    pub level: String,
    /// A human name.
    #[serde(default)]
    pub name: String,
    /// Multiaddrs to dial it at.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// The key is an agency's org key: its certified nodes get the level.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub org: bool,
    /// Why, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `PUT /v1/trust/{key}`: change any subset of an existing entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrustPatchRequest {
    /// New level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New addresses (replacing the old ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addrs: Option<Vec<String>>,
    /// Why, for the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `DELETE /v1/trust/{key}` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrustRemoveRequest {
    /// Why, for the audit log.
    pub reason: Option<String>,
}

/// One row of the trust table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrustEntry {
    /// The peer's key.
    #[schema(value_type = String)]
    pub key: PublicKey,
    /// How much it is trusted.
    pub level: TrustLevel,
    /// A human name for it.
    pub name: String,
    /// Where to dial it (multiaddrs).
    pub addrs: Vec<String>,
    /// An agency's org key rather than a node key: every node that presents a valid
    /// certificate from it gets this level, and its addresses are dialled without
    /// expecting a particular node key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub org: bool,
}

/// The answer to a trust change: the level before and after (`None`: not in the table,
/// or removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrustChanged {
    /// Whose entry changed.
    #[schema(value_type = String)]
    pub key: PublicKey,
    /// The level before.
    pub old: Option<TrustLevel>,
    /// The level after.
    pub new: Option<TrustLevel>,
}

/// `GET /v1/trust`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrustList {
    /// The entries, by name then key.
    pub entries: Vec<TrustEntry>,
}

/// One change of the trust table, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// When, unix ms.
    pub at: u64,
    /// Whose entry changed.
    #[schema(value_type = String)]
    pub key: PublicKey,
    /// The level before (`None`: not in the table).
    pub old: Option<TrustLevel>,
    /// The level after (`None`: removed).
    pub new: Option<TrustLevel>,
    /// Where the change came from: `api` or `config`.
    pub source: String,
    /// Who made it: the Unix user on the socket (`unix:alice (uid 1000)`), `token` for
    /// the TCP listener, `config` for entries seeded from the config file.
    #[serde(default)]
    pub who: String,
    /// The name before and after, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub name: Option<(String, String)>,
    /// The addresses before and after, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<String>>>)]
    pub addrs: Option<(Vec<String>, Vec<String>)>,
    /// Whether the key is an org key, before and after, when that changed (an org entry
    /// added or removed, or an entry switched between node and org key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<bool>>)]
    pub org: Option<(bool, bool)>,
    /// The reason given with the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/trust-audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditLog {
    /// The latest records, oldest first.
    pub records: Vec<AuditRecord>,
}

/// `POST /v1/test/partition` (test control only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionRequest {
    /// Peer keys to drop and refuse until healed.
    pub peers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_messages_name_field_and_constant() {
        let e = limit_error(Limit::TextBytes, 40000, None);
        assert_eq!(e.field, Some("text"));
        assert_eq!(
            e.message,
            "text is 40000 bytes, exceeds the limit MAX_TEXT_BYTES = 32768"
        );
        let e = limit_error(Limit::TextBytes, 40000, Some("reason"));
        assert_eq!(e.field, Some("reason"));
        assert_eq!(
            e.message,
            "reason is 40000 bytes, exceeds the limit MAX_TEXT_BYTES = 32768"
        );
        let e = limit_error(Limit::Tags, 33, None);
        assert_eq!(e.message, "33 tags, exceeds the limit MAX_TAGS = 32");
    }

    #[test]
    fn model_errors_map_to_api_fields() {
        let err = crate::Indicator::parse("ipv4:999.1.1.1").err();
        let e = err.as_ref().map(field_error);
        assert_eq!(e.as_ref().and_then(|e| e.field), Some("indicators"));
        assert!(e.is_some_and(|e| e.message.contains("999.1.1.1")));
        let err = "purple".parse::<crate::Tlp>().err();
        assert_eq!(
            err.as_ref().map(field_error).and_then(|e| e.field),
            Some("tlp")
        );
    }
}
