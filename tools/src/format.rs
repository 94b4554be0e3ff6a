//! Human-readable output: the alert table, the full view of one alert, status lines,
//! and times.
//!
//! Titles and texts come from other agencies' nodes, so control characters (terminal
//! escape sequences) are replaced before anything reaches a terminal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

/// The API's view of a stored alert (see `docs/api.md`), as far as the CLI shows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AlertView {
    /// Alert id, 64 hex.
    pub id: String,
    /// Local sequence number.
    pub seq: u64,
    /// active, superseded, cancelled or expired.
    pub state: String,
    /// The update or cancel that replaced it.
    pub replaced_by: Option<String>,
    /// "valid" or "invalid".
    pub signature: String,
    /// The signed body.
    pub alert: BodyView,
    /// How it arrived.
    pub provenance: Provenance,
    /// Its origin's node key was revoked by its agency.
    pub origin_revoked: Option<OriginRevoked>,
    /// For AMBER and RED alerts issued by this node: receipts, counted.
    pub receipts: Option<ReceiptCounts>,
    /// The agency the origin speaks for (from its certificate).
    pub origin_agency: Option<OriginAgency>,
}

/// The agency an origin node speaks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OriginAgency {
    pub org: String,
    pub agency: String,
}

/// Receipts of an alert, counted (`tocsin receipts ID` has the rows).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReceiptCounts {
    pub delivered: u64,
    pub acknowledged: u64,
    pub nothing_yet: u64,
    pub overdue: bool,
}

/// An origin revoked by its agency, as `show` reports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OriginRevoked {
    /// Unix ms.
    pub revoked_at: u64,
    pub reason: String,
    /// Issued at or after the revocation (refused by every node that knows of it).
    pub issued_after: bool,
}

/// The signed body's fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BodyView {
    /// Format version.
    pub v: u8,
    /// Origin key, 64 hex.
    pub origin: String,
    /// Unix ms.
    pub issued_at: u64,
    /// Unix ms.
    pub expires_at: Option<u64>,
    /// new, update or cancel.
    pub kind: String,
    /// For update and cancel.
    pub replaces: Option<String>,
    /// Severity name.
    pub severity: String,
    /// TLP label.
    pub tlp: String,
    /// Recipient keys.
    pub recipients: Vec<String>,
    /// Title.
    pub title: String,
    /// Free text.
    pub text: String,
    /// Indicators.
    pub indicators: Vec<IndicatorView>,
    /// Tags.
    pub tags: Vec<String>,
    /// References.
    pub references: Vec<String>,
}

/// One indicator.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IndicatorView {
    /// Indicator type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Value.
    pub value: String,
}

/// What the node learned on receipt.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Provenance {
    /// Unix ms.
    pub received_at: u64,
    /// The peer it came from; `None` = issued on this node.
    pub from: Option<String>,
    /// Relay hops.
    pub hops: u8,
}

impl AlertView {
    /// Reads a view from the API's JSON.
    pub fn from_json(v: &Value) -> Result<AlertView, serde_json::Error> {
        AlertView::deserialize(v)
    }
}

/// Unix ms as RFC 3339 UTC with seconds, e.g. `2024-05-01T12:00:00Z`.
pub fn format_time(ms: u64) -> String {
    let t = UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Now, unix ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whether `c` changes the direction or layout of the text around it: the Unicode
/// bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069),
/// the directional marks (U+200E, U+200F, U+061C), and the line and paragraph
/// separators. A title holding U+202E can make a terminal show text reversed, so that
/// what an operator reads is not what was sent.
fn reorders_text(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{061C}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Replaces control characters (escape sequences included) and bidirectional
/// overrides with `�`; keeps newlines and tabs when `multiline`.
pub fn sanitize(s: &str, multiline: bool) -> String {
    s.chars()
        .map(|c| {
            if multiline && (c == '\n' || c == '\t') {
                c
            } else if c.is_control() || reorders_text(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// At most `max` characters, ending in `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The first `n` characters of a hex id.
pub fn short(hex: &str, n: usize) -> &str {
    hex.get(..n).unwrap_or(hex)
}

/// Widest title shown in a table row.
pub const TITLE_COLUMN: usize = 60;

/// The table's header line.
pub fn table_header() -> String {
    format!(
        "{:<12}  {:<20}  {:<8}  {:<12}  {:<10}  {:<8}  {:>4}  TITLE",
        "ID", "ISSUED", "SEV", "TLP", "STATE", "ORIGIN", "HOPS"
    )
}

/// One table row. Columns have fixed widths so that rows can be printed as they
/// arrive (pages, the event stream) and still line up.
pub fn table_row(v: &AlertView) -> String {
    format!(
        "{:<12}  {:<20}  {:<8}  {:<12}  {:<10}  {:<8}  {:>4}  {}",
        short(&v.id, 12),
        format_time(v.alert.issued_at),
        sanitize(&v.alert.severity, false),
        sanitize(&v.alert.tlp, false),
        sanitize(&v.state, false),
        short(&v.alert.origin, 8),
        v.provenance.hops,
        truncate_chars(&sanitize(&v.alert.title, false), TITLE_COLUMN),
    )
}

/// The full, multi-line view of one alert.
pub fn show(v: &AlertView) -> String {
    let a = &v.alert;
    let mut lines: Vec<(String, String)> = vec![
        ("id".into(), v.id.clone()),
        ("title".into(), sanitize(&a.title, false)),
        ("severity".into(), sanitize(&a.severity, false)),
        ("tlp".into(), sanitize(&a.tlp, false)),
        (
            "kind".into(),
            match &a.replaces {
                Some(r) => format!("{} of {r}", sanitize(&a.kind, false)),
                None => sanitize(&a.kind, false),
            },
        ),
        (
            "state".into(),
            match &v.replaced_by {
                Some(r) => format!("{} by {r}", sanitize(&v.state, false)),
                None => sanitize(&v.state, false),
            },
        ),
        (
            "origin".into(),
            match &v.origin_agency {
                Some(o) => format!(
                    "{} ({}, org {})",
                    a.origin,
                    sanitize(&o.agency, false),
                    short(&o.org, 16)
                ),
                None => a.origin.clone(),
            },
        ),
    ];
    if let Some(r) = &v.origin_revoked {
        lines.push((
            "revoked".into(),
            format!(
                "the origin's agency revoked its key at {} ({}); this alert was issued {}",
                format_time(r.revoked_at),
                sanitize(&r.reason, false),
                if r.issued_after {
                    "after that: do not trust it"
                } else {
                    "before that and stays valid"
                }
            ),
        ));
    }
    lines.extend([
        ("issued".into(), format_time(a.issued_at)),
        (
            "expires".into(),
            a.expires_at
                .map_or_else(|| "never".to_string(), format_time),
        ),
    ]);
    let mut list = |name: &str, items: Vec<String>| {
        for (i, item) in items.into_iter().enumerate() {
            let label = if i == 0 {
                name.to_string()
            } else {
                String::new()
            };
            lines.push((label, item));
        }
    };
    list("recipients", a.recipients.clone());
    list(
        "indicators",
        a.indicators
            .iter()
            .map(|i| sanitize(&format!("{}:{}", i.kind, i.value), false))
            .collect(),
    );
    list(
        "tags",
        if a.tags.is_empty() {
            vec![]
        } else {
            vec![sanitize(&a.tags.join(", "), false)]
        },
    );
    list(
        "references",
        a.references.iter().map(|r| sanitize(r, false)).collect(),
    );
    lines.push(("signature".into(), sanitize(&v.signature, false)));
    lines.push((
        "provenance".into(),
        format!(
            "received {} from {} at {} hops",
            format_time(v.provenance.received_at),
            v.provenance.from.as_deref().unwrap_or("local"),
            v.provenance.hops
        ),
    ));
    if let Some(r) = &v.receipts {
        lines.push((
            "receipts".into(),
            format!(
                "{} acknowledged, {} delivered, {} nothing yet{} (tocsin receipts ID)",
                r.acknowledged,
                r.delivered,
                r.nothing_yet,
                if r.overdue {
                    "; acknowledgements OVERDUE"
                } else {
                    ""
                }
            ),
        ));
    }
    lines.push(("seq".into(), v.seq.to_string()));
    let mut out = String::new();
    for (k, val) in lines {
        out.push_str(format!("{k:<12}{val}").trim_end());
        out.push('\n');
    }
    if !a.text.is_empty() {
        out.push('\n');
        out.push_str(&sanitize(&a.text, true));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// `key: value` lines of a JSON object, the `preferred` keys first, then the rest in
/// the daemon's order.
pub fn key_values(v: &Value, preferred: &[&str]) -> String {
    let Some(obj) = v.as_object() else {
        return format!("{v}\n");
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => sanitize(s, false),
        Value::Null => "-".to_string(),
        other => sanitize(&other.to_string(), false),
    };
    let mut out = String::new();
    for k in preferred {
        if let Some(val) = obj.get(*k) {
            out.push_str(&format!("{k}: {}\n", scalar(val)));
        }
    }
    for (k, val) in obj {
        if !preferred.contains(&k.as_str()) {
            out.push_str(&format!("{}: {}\n", sanitize(k, false), scalar(val)));
        }
    }
    out
}

/// One `webhook NAME: …` line per webhook in `/v1/status`'s `webhooks` object.
pub fn webhook_lines(webhooks: &Value) -> String {
    let Some(all) = webhooks.as_object() else {
        return String::new();
    };
    let n = |w: &Value, k: &str| w[k].as_u64().unwrap_or(0);
    all.iter()
        .map(|(name, w)| {
            let error = w["last_error"].as_str().map_or_else(String::new, |e| {
                format!(", failing: {}", sanitize(e, false))
            });
            format!(
                "webhook {}: {} delivered, {} pending, {} refused, {} retries{error}\n",
                sanitize(name, false),
                n(w, "delivered"),
                n(w, "pending"),
                n(w, "refused"),
                n(w, "retries"),
            )
        })
        .collect()
}

/// The order of `tocsin status` lines.
pub const STATUS_KEYS: [&str; 8] = [
    "public_key",
    "peer_id",
    "version",
    "uptime_secs",
    "alerts",
    "active",
    "head",
    "epoch",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> AlertView {
        AlertView::from_json(&json!({
            "id": "3fa2b1c4d5e6".repeat(5) + "abcd",
            "seq": 7,
            "state": "superseded",
            "replaced_by": "ff".repeat(32),
            "signature": "valid",
            "alert": {
                "v": 1, "origin": "1a2b3c4d".repeat(8), "issued_at": 1_714_564_800_000u64,
                "expires_at": null, "kind": "new", "replaces": null,
                "severity": "critical", "tlp": "AMBER+STRICT", "recipients": [],
                "title": "Phishing\u{1b}[31m wave targeting banks and their customers across the whole region",
                "text": "line one\nline two",
                "indicators": [{"type": "ipv4", "value": "192.0.2.1"}],
                "tags": ["phishing", "banks"], "references": []
            },
            "provenance": {"received_at": 1_714_564_801_000u64, "from": null, "hops": 0}
        }))
        .unwrap()
    }

    #[test]
    fn rows_line_up_with_the_header() {
        let v = sample();
        let header = table_header();
        let row = table_row(&v);
        assert_eq!(header.find("TITLE"), row.find("Phishing"));
        assert!(row.starts_with("3fa2b1c4d5e6  2024-05-01T12:00:00Z  critical  AMBER+STRICT  superseded  1a2b3c4d     0  "));
        // The escape sequence is neutralised, the title cut to the column.
        assert!(!row.contains('\u{1b}'));
        let title = &row[header.find("TITLE").unwrap()..];
        assert_eq!(title.chars().count(), TITLE_COLUMN);
        assert!(title.ends_with('…'));
    }

    #[test]
    fn bidi_overrides_are_neutralised() {
        let spoof = "Invoice \u{202E}fdp.exe\u{202C} and \u{2066}isolate\u{2069}\u{200F}";
        let out = sanitize(spoof, false);
        for c in ['\u{202E}', '\u{202C}', '\u{2066}', '\u{2069}', '\u{200F}'] {
            assert!(!out.contains(c), "{c:?} left in {out:?}");
        }
        assert!(out.contains("fdp.exe"), "the text itself stays: {out:?}");
        // Ordinary right-to-left text is not touched.
        assert_eq!(sanitize("تنبيه", false), "تنبيه");
    }

    #[test]
    fn show_has_provenance_state_and_text() {
        let out = show(&sample());
        assert!(
            out.contains("provenance  received 2024-05-01T12:00:01Z from local at 0 hops"),
            "{out}"
        );
        assert!(out.contains(&format!("state       superseded by {}", "ff".repeat(32))));
        assert!(out.contains("indicators  ipv4:192.0.2.1"));
        assert!(out.contains("signature   valid"));
        assert!(out.ends_with("\nline one\nline two\n"), "{out}");
        assert!(!out.contains('\u{1b}'));
    }

    #[test]
    fn status_lines_in_order() {
        let out = key_values(
            &json!({"alerts": 3, "public_key": "ab", "extra": null, "version": "0.1.0"}),
            &STATUS_KEYS,
        );
        assert_eq!(out, "public_key: ab\nversion: 0.1.0\nalerts: 3\nextra: -\n");
    }

    #[test]
    fn webhook_lines_say_what_is_pending_and_why_it_fails() {
        let w = json!({
            "siem": {"delivered": 12, "pending": 3, "refused": 1, "retries": 4,
                     "last_error": "cannot connect to 127.0.0.1:9: refused\u{1b}[31m"},
            "soc": {"delivered": 5, "pending": 0, "refused": 0, "retries": 0, "last_error": null}
        });
        assert_eq!(
            webhook_lines(&w),
            "webhook siem: 12 delivered, 3 pending, 1 refused, 4 retries, failing: cannot connect to 127.0.0.1:9: refused\u{fffd}[31m\n\
             webhook soc: 5 delivered, 0 pending, 0 refused, 0 retries\n"
        );
        assert_eq!(webhook_lines(&Value::Null), "");
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
        assert_eq!(short("abc", 8), "abc");
    }
}
