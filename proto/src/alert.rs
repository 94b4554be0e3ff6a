//! The alert body (format version 1) and its validation.
//!
//! [`AlertBody::validate`] runs on construction ([`AlertBody::check`] is called by the
//! builder in the node) and on every decode, so a body that exists in memory is valid.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::ids::{AlertId, PublicKey};
use crate::limits::Limit;
use crate::Error;

/// The alert format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// What an alert does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A new alert.
    New,
    /// Supersedes an earlier alert of the same origin (named in `replaces`).
    Update,
    /// Retracts an earlier alert of the same origin (named in `replaces`).
    Cancel,
}

/// How bad it is, most severe first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info = 0,
    Low = 1,
    Medium = 2,
    High = 3,
    Critical = 4,
}

impl Severity {
    /// All severities, least severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Rank, 0 (info) to 4 (critical).
    pub fn rank(self) -> u8 {
        self as u8
    }
}

impl std::str::FromStr for Severity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid(
                    "severity",
                    format!("{s:?} is not one of critical, high, medium, low, info"),
                )
            })
    }
}

/// Traffic Light Protocol 2.0 label.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Tlp {
    #[serde(rename = "CLEAR")]
    Clear,
    #[serde(rename = "GREEN")]
    Green,
    #[serde(rename = "AMBER")]
    Amber,
    #[serde(rename = "AMBER+STRICT")]
    AmberStrict,
    #[serde(rename = "RED")]
    Red,
}

impl Tlp {
    /// All labels, widest audience first.
    pub const ALL: [Tlp; 5] = [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ];

    /// The label as written in TLP 2.0.
    pub fn as_str(self) -> &'static str {
        match self {
            Tlp::Clear => "CLEAR",
            Tlp::Green => "GREEN",
            Tlp::Amber => "AMBER",
            Tlp::AmberStrict => "AMBER+STRICT",
            Tlp::Red => "RED",
        }
    }
}

impl std::str::FromStr for Tlp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let norm = s.trim().to_ascii_uppercase().replace(['_', '-'], "+");
        let norm = norm.strip_prefix("TLP:").unwrap_or(&norm);
        Tlp::ALL
            .into_iter()
            .find(|v| v.as_str() == norm)
            .ok_or_else(|| {
                Error::invalid(
                    "tlp",
                    format!("{s:?} is not one of CLEAR, GREEN, AMBER, AMBER+STRICT, RED"),
                )
            })
    }
}

/// The type of an indicator of compromise.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IndicatorType {
    Ipv4,
    Ipv6,
    Cidr,
    Domain,
    Url,
    Email,
    Sha256,
    Sha1,
    Md5,
    Cve,
    Other,
}

impl IndicatorType {
    /// All types.
    pub const ALL: [IndicatorType; 11] = [
        IndicatorType::Ipv4,
        IndicatorType::Ipv6,
        IndicatorType::Cidr,
        IndicatorType::Domain,
        IndicatorType::Url,
        IndicatorType::Email,
        IndicatorType::Sha256,
        IndicatorType::Sha1,
        IndicatorType::Md5,
        IndicatorType::Cve,
        IndicatorType::Other,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            IndicatorType::Ipv4 => "ipv4",
            IndicatorType::Ipv6 => "ipv6",
            IndicatorType::Cidr => "cidr",
            IndicatorType::Domain => "domain",
            IndicatorType::Url => "url",
            IndicatorType::Email => "email",
            IndicatorType::Sha256 => "sha256",
            IndicatorType::Sha1 => "sha1",
            IndicatorType::Md5 => "md5",
            IndicatorType::Cve => "cve",
            IndicatorType::Other => "other",
        }
    }
}

impl std::str::FromStr for IndicatorType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        IndicatorType::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid(
                    "indicator type",
                    format!(
                        "{s:?} is not one of ipv4, ipv6, cidr, domain, url, email, sha256, sha1, md5, cve, other"
                    ),
                )
            })
    }
}

/// A typed indicator of compromise. Construct with [`Indicator::new`], which checks
/// that the value has the form its type requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Indicator {
    #[serde(rename = "type")]
    pub kind: IndicatorType,
    pub value: String,
}

impl Indicator {
    /// A checked indicator.
    pub fn new(kind: IndicatorType, value: impl Into<String>) -> Result<Self, Error> {
        let ind = Indicator {
            kind,
            value: value.into(),
        };
        ind.validate()?;
        Ok(ind)
    }

    /// Parses `TYPE:VALUE`, as the CLI takes it.
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let (kind, value) = spec
            .split_once(':')
            .ok_or_else(|| Error::invalid("indicator", format!("{spec:?} is not TYPE:VALUE")))?;
        Indicator::new(kind.parse()?, value)
    }

    /// Checks the value against its type.
    pub fn validate(&self) -> Result<(), Error> {
        Limit::IndicatorBytes.check(self.value.len())?;
        let v = self.value.as_str();
        let bad = |why: &str| {
            Err(Error::invalid(
                "indicator",
                format!("{}:{v:?} {why}", self.kind.as_str()),
            ))
        };
        match self.kind {
            IndicatorType::Ipv4 => {
                if v.parse::<Ipv4Addr>().is_err() {
                    return bad("is not an IPv4 address");
                }
            }
            IndicatorType::Ipv6 => {
                if v.parse::<Ipv6Addr>().is_err() {
                    return bad("is not an IPv6 address");
                }
            }
            IndicatorType::Cidr => {
                let Some((addr, len)) = v.split_once('/') else {
                    return bad("is not ADDRESS/PREFIX");
                };
                let Ok(len) = len.parse::<u8>() else {
                    return bad("has a prefix length that is not a number");
                };
                let max = if addr.parse::<Ipv4Addr>().is_ok() {
                    32
                } else if addr.parse::<Ipv6Addr>().is_ok() {
                    128
                } else {
                    return bad("does not start with an IP address");
                };
                if len > max {
                    return bad("has a prefix length that is too long");
                }
            }
            IndicatorType::Domain => {
                if !is_domain(v) {
                    return bad("is not a domain name");
                }
            }
            IndicatorType::Url => match url::Url::parse(v) {
                Ok(u) if u.has_host() => {}
                _ => return bad("is not an absolute URL with a host"),
            },
            IndicatorType::Email => match v.rsplit_once('@') {
                Some((local, domain))
                    if !local.is_empty()
                        && !local.chars().any(|c| c.is_whitespace() || c == '@')
                        && is_domain(domain) => {}
                _ => return bad("is not an email address"),
            },
            IndicatorType::Sha256 => {
                if !is_hex(v, 64) {
                    return bad("is not 64 hex characters");
                }
            }
            IndicatorType::Sha1 => {
                if !is_hex(v, 40) {
                    return bad("is not 40 hex characters");
                }
            }
            IndicatorType::Md5 => {
                if !is_hex(v, 32) {
                    return bad("is not 32 hex characters");
                }
            }
            IndicatorType::Cve => {
                if !is_cve(v) {
                    return bad("is not CVE-YYYY-NNNN (four or more digits)");
                }
            }
            IndicatorType::Other => {
                if v.trim().is_empty() {
                    return bad("is empty");
                }
            }
        }
        Ok(())
    }
}

fn is_hex(v: &str, len: usize) -> bool {
    v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_cve(v: &str) -> bool {
    let mut parts = v.split('-');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(p), Some(year), Some(num), None)
            if p.eq_ignore_ascii_case("CVE")
                && year.len() == 4
                && year.bytes().all(|b| b.is_ascii_digit())
                && num.len() >= 4
                && num.len() <= 19
                && num.bytes().all(|b| b.is_ascii_digit())
    )
}

fn is_domain(v: &str) -> bool {
    let v = v.strip_suffix('.').unwrap_or(v);
    if v.is_empty() || v.len() > 253 || !v.contains('.') {
        return false;
    }
    v.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The signed part of an alert (format version 1).
///
/// Field order is the CBOR map order on the wire; see `docs/wire-format.md`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertBody {
    /// Format version, [`FORMAT_VERSION`].
    pub v: u8,
    /// The issuing node's key. Only this key's signature is accepted.
    #[schema(value_type = String, example = "64 hex characters")]
    pub origin: PublicKey,
    /// When it was issued, unix milliseconds.
    pub issued_at: u64,
    /// When it stops being relayed, unix milliseconds.
    pub expires_at: Option<u64>,
    /// New, update or cancel.
    pub kind: Kind,
    /// For update and cancel: the alert replaced. Absent for new.
    #[schema(value_type = Option<String>)]
    pub replaces: Option<AlertId>,
    pub severity: Severity,
    pub tlp: Tlp,
    /// Explicit recipients (node keys). Required for RED.
    #[schema(value_type = Vec<String>)]
    pub recipients: Vec<PublicKey>,
    pub title: String,
    /// Free text (for a cancel, the reason).
    pub text: String,
    pub indicators: Vec<Indicator>,
    pub tags: Vec<String>,
    pub references: Vec<String>,
}

impl std::fmt::Debug for AlertBody {
    // Never dumps the free text or indicators: logs see the shape, not the payload.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertBody")
            .field("origin", &self.origin)
            .field("issued_at", &self.issued_at)
            .field("kind", &self.kind)
            .field("severity", &self.severity)
            .field("tlp", &self.tlp)
            .field("recipients", &self.recipients.len())
            .field("title_bytes", &self.title.len())
            .field("text_bytes", &self.text.len())
            .field("indicators", &self.indicators.len())
            .finish_non_exhaustive()
    }
}

impl AlertBody {
    /// Checks limits first (cheap, named), then the semantic rules.
    pub fn validate(&self) -> Result<(), Error> {
        Limit::TitleBytes.check(self.title.len())?;
        Limit::TextBytes.check(self.text.len())?;
        Limit::Indicators.check(self.indicators.len())?;
        Limit::Tags.check(self.tags.len())?;
        Limit::Recipients.check(self.recipients.len())?;
        Limit::References.check(self.references.len())?;
        for t in &self.tags {
            Limit::TagBytes.check(t.len())?;
        }
        for r in &self.references {
            Limit::ReferenceBytes.check(r.len())?;
        }
        if self.v != FORMAT_VERSION {
            return Err(Error::Version(self.v));
        }
        if self.title.trim().is_empty() {
            return Err(Error::invalid("title", "must not be empty"));
        }
        for t in &self.tags {
            if t.trim().is_empty() || t.chars().any(char::is_whitespace) {
                return Err(Error::invalid(
                    "tags",
                    format!("{t:?}: a tag is one non-empty word"),
                ));
            }
        }
        for ind in &self.indicators {
            ind.validate()?;
        }
        match (self.kind, self.replaces) {
            (Kind::New, Some(_)) => {
                return Err(Error::invalid("replaces", "a new alert replaces nothing"))
            }
            (Kind::Update | Kind::Cancel, None) => {
                return Err(Error::invalid(
                    "replaces",
                    "an update or cancel must name the alert id it replaces",
                ))
            }
            _ => {}
        }
        if self.tlp == Tlp::Red && self.recipients.is_empty() {
            return Err(Error::invalid(
                "recipients",
                "a TLP:RED alert needs at least one recipient",
            ));
        }
        if let Some(exp) = self.expires_at {
            if exp <= self.issued_at {
                return Err(Error::invalid("expires_at", "must be later than issued_at"));
            }
        }
        Ok(())
    }

    /// Whether `key` is a named recipient.
    pub fn is_recipient(&self, key: &PublicKey) -> bool {
        self.recipients.contains(key)
    }

    /// Whether the alert has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now_ms)
    }

    /// The cancel of this alert (whose id is `id`) with `reason`, issued at `now_ms` but
    /// never before this alert (a clock step back must not make it look older). Same
    /// label, recipients, severity and tags, so that it reaches exactly the alert's
    /// audience; it lives as long as the alert (one for an expired alert has no expiry).
    pub fn cancel(&self, id: AlertId, reason: String, now_ms: u64) -> AlertBody {
        let now = now_ms.max(self.issued_at.saturating_add(1));
        let title = format!("Cancelled: {}", self.title);
        AlertBody {
            v: FORMAT_VERSION,
            origin: self.origin,
            issued_at: now,
            expires_at: self.expires_at.filter(|&e| e > now),
            kind: Kind::Cancel,
            replaces: Some(id),
            severity: self.severity,
            tlp: self.tlp,
            recipients: self.recipients.clone(),
            title: truncate_bytes(&title, crate::limits::MAX_TITLE_BYTES).to_owned(),
            text: reason,
            indicators: Vec::new(),
            tags: self.tags.clone(),
            references: Vec::new(),
        }
    }
}

/// Truncates `s` to at most `max` bytes on a character boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The facts about an alert that relaying and catch-up decide by: who issued it, its
/// audience, its expiry, and what it replaces. The one summary of an alert: the gossip
/// engine keeps it in memory for the alerts it handled lately and reads it back from
/// the store for the rest ([`crate::SignedAlert::summary`] makes one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSummary {
    /// The alert id.
    pub id: AlertId,
    /// The origin key.
    pub origin: PublicKey,
    /// Issued at, unix ms.
    pub issued_at: u64,
    /// TLP label.
    pub tlp: Tlp,
    /// Explicit recipients.
    pub recipients: Vec<PublicKey>,
    /// Expiry, unix ms.
    pub expires_at: Option<u64>,
    /// New, update or cancel.
    pub kind: Kind,
    /// For update and cancel, the id replaced.
    pub replaces: Option<AlertId>,
}

impl AlertSummary {
    /// The audience, as the sharing rules take it.
    pub fn scope(&self) -> crate::policy::Scope<'_> {
        crate::policy::Scope {
            origin: &self.origin,
            tlp: self.tlp,
            recipients: &self.recipients,
        }
    }

    /// Whether the alert has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now_ms)
    }
}
