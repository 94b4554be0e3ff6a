//! CAP 1.2 (OASIS Common Alerting Protocol): one alert as a CAP `alert` message, for
//! an agency's public-warning side. `docs/interop.md` ("CAP 1.2") documents each choice.
//!
//! | Tocsin | CAP 1.2 |
//! |---|---|
//! | alert id | `identifier` `tocsin-<64 hex>` |
//! | origin key | `sender` `tocsin:<64 hex>` |
//! | `issued_at` | `sent` and `info/effective`, `YYYY-MM-DDThh:mm:ss-00:00` (UTC) |
//! | kind new / update / cancel | `msgType` Alert / Update / Cancel, with `references` to the replaced alert |
//! | TLP:CLEAR / GREEN / AMBER, AMBER+STRICT, RED | `scope` Public / Restricted (with `restriction`) / Private (with `addresses`); and `code` `TLP:<label>` |
//! | severity critical … info | `severity` Extreme, Severe, Moderate, Minor, Unknown; `urgency` Immediate, Expected, Future, Future, Unknown |
//! | title, text, first reference that is an http(s) URL | `headline`, `description`, `web` |
//! | first tag (or "Cyber security alert") | `event` |
//! | indicators, and the id, origin and signature | `parameter`s |

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

use crate::{AlertBody, AlertId, Kind, PublicKey, Severity, Tlp};

/// The CAP 1.2 namespace.
pub const NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";

/// One alert to write as CAP, with what the message refers to.
#[derive(Debug, Clone)]
pub struct CapAlert<'a> {
    /// The alert's id.
    pub id: AlertId,
    /// Its signed body.
    pub body: &'a AlertBody,
    /// Its ed25519 signature, 128 hex.
    pub sig: &'a str,
    /// For an update or a cancel: the alert it replaces and when that was issued (CAP
    /// `references` names sender, identifier and sent). `None` if it is not held.
    pub replaces: Option<(AlertId, u64)>,
    /// The node exporting it: the `addresses` of an AMBER or AMBER+STRICT message (the
    /// agency that holds it), beside the origin.
    pub holder: PublicKey,
}

/// Unix ms as a CAP date-time: whole seconds, UTC written `-00:00` as CAP asks.
pub fn datetime(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{}-00:00", s.trim_end_matches('Z'))
}

/// The CAP `identifier` of an alert.
pub fn identifier(id: &AlertId) -> String {
    format!("tocsin-{id}")
}

/// The CAP `sender` of an origin.
pub fn sender(origin: &PublicKey) -> String {
    format!("tocsin:{origin}")
}

/// CAP `severity` of a Tocsin severity.
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Extreme",
        Severity::High => "Severe",
        Severity::Medium => "Moderate",
        Severity::Low => "Minor",
        Severity::Info => "Unknown",
    }
}

/// CAP `urgency` of a Tocsin severity: how soon those warned should act.
pub fn urgency(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Immediate",
        Severity::High => "Expected",
        Severity::Medium | Severity::Low => "Future",
        Severity::Info => "Unknown",
    }
}

/// CAP `scope` of a TLP label.
pub fn scope(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear => "Public",
        Tlp::Green => "Restricted",
        Tlp::Amber | Tlp::AmberStrict | Tlp::Red => "Private",
    }
}

/// The CAP 1.2 `alert` document (UTF-8 XML with its declaration) for `a`.
pub fn alert_xml(a: &CapAlert<'_>) -> Result<String, std::io::Error> {
    let b = a.body;
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("alert")
        .with_attribute(("xmlns", NAMESPACE))
        .write_inner_content(|w| {
            text(w, "identifier", &identifier(&a.id))?;
            text(w, "sender", &sender(&b.origin))?;
            text(w, "sent", &datetime(b.issued_at))?;
            text(w, "status", "Actual")?;
            let msg_type = match b.kind {
                Kind::New => "Alert",
                Kind::Update => "Update",
                Kind::Cancel => "Cancel",
            };
            text(w, "msgType", msg_type)?;
            text(w, "source", "Tocsin")?;
            text(w, "scope", scope(b.tlp))?;
            match b.tlp {
                Tlp::Green => text(
                    w,
                    "restriction",
                    "TLP:GREEN: for the recipient's community (peers and partner organisations), not for public channels",
                )?,
                Tlp::Amber | Tlp::AmberStrict | Tlp::Red => {
                    let mut to: Vec<String> = vec![sender(&b.origin)];
                    if b.tlp == Tlp::Red {
                        to.extend(b.recipients.iter().map(sender));
                    } else {
                        to.push(sender(&a.holder));
                    }
                    to.dedup();
                    text(w, "addresses", &to.join(" "))?;
                }
                Tlp::Clear => {}
            }
            text(w, "code", &format!("TLP:{}", b.tlp.as_str()))?;
            if b.kind == Kind::Cancel && !b.text.is_empty() {
                text(w, "note", &b.text)?;
            }
            if let Some((rid, issued)) = a.replaces {
                let r = format!(
                    "{},{},{}",
                    sender(&b.origin),
                    identifier(&rid),
                    datetime(issued)
                );
                text(w, "references", &r)?;
            }
            w.create_element("info").write_inner_content(|w| {
                text(w, "language", "en")?;
                text(w, "category", "Security")?;
                let event = b.tags.first().map_or("Cyber security alert", String::as_str);
                text(w, "event", event)?;
                text(w, "urgency", urgency(b.severity))?;
                text(w, "severity", severity(b.severity))?;
                text(w, "certainty", "Observed")?;
                text(w, "effective", &datetime(b.issued_at))?;
                if let Some(exp) = b.expires_at {
                    text(w, "expires", &datetime(exp))?;
                }
                text(
                    w,
                    "senderName",
                    &format!("Tocsin node {}", &b.origin.to_string()[..16]),
                )?;
                text(w, "headline", &b.title)?;
                if !b.text.is_empty() {
                    text(w, "description", &b.text)?;
                }
                // CAP's `web` is a full absolute URI: the first reference that is an
                // http(s) URL, as the URL standard writes it (a space becomes %20).
                let web = b.references.iter().find_map(|r| {
                    url::Url::parse(r.trim())
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                });
                if let Some(web) = web {
                    text(w, "web", web.as_str())?;
                }
                param(w, "tocsin:alert_id", &a.id.to_string())?;
                param(w, "tocsin:origin", &b.origin.to_string())?;
                param(w, "tocsin:severity", b.severity.as_str())?;
                param(w, "tocsin:signature", a.sig)?;
                for ind in &b.indicators {
                    param(w, &format!("indicator:{}", ind.kind.as_str()), &ind.value)?;
                }
                for tag in &b.tags {
                    param(w, "tag", tag)?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    let mut out = String::from_utf8(w.into_inner())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    out.push('\n');
    Ok(out)
}

type Xml = Writer<Vec<u8>>;

fn text(w: &mut Xml, name: &str, value: &str) -> Result<(), std::io::Error> {
    w.create_element(name)
        .write_text_content(BytesText::new(&xml_chars(value)))?;
    Ok(())
}

/// `s` with each character XML 1.0 cannot carry (controls other than tab, newline and
/// carriage return; U+FFFE, U+FFFF) replaced by U+FFFD: escaping cannot write them, and
/// an alert's title or text may hold any of them (another origin's alert included).
fn xml_chars(s: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    };
    if s.chars().all(allowed) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| if allowed(c) { c } else { '\u{FFFD}' })
            .collect(),
    )
}

fn param(w: &mut Xml, name: &str, value: &str) -> Result<(), std::io::Error> {
    w.create_element("parameter").write_inner_content(|w| {
        text(w, "valueName", name)?;
        text(w, "value", value)?;
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_whole_seconds_with_a_numeric_utc_offset() {
        assert_eq!(datetime(1_767_225_600_999), "2026-01-01T00:00:00-00:00");
    }

    #[test]
    fn every_severity_and_tlp_has_a_cap_value() {
        let sev: Vec<&str> = Severity::ALL.iter().map(|s| severity(*s)).collect();
        assert_eq!(sev, ["Unknown", "Minor", "Moderate", "Severe", "Extreme"]);
        let scopes: Vec<&str> = Tlp::ALL.iter().map(|t| scope(*t)).collect();
        assert_eq!(
            scopes,
            ["Public", "Restricted", "Private", "Private", "Private"]
        );
    }
}
