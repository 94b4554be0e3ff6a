//! STIX 2.1: stored alerts as one bundle of `report`, `indicator`, `vulnerability`,
//! `identity` and TLP 2.0 `marking-definition` objects, and the indicator patterns read
//! back when a bundle is imported. `docs/interop.md` documents every mapping choice.
//!
//! Ids are derived from the alert ids (SHA-256 over [`NAMESPACE`] and a name, like a
//! UUIDv5, but in the UUIDv4 form that the OASIS validator requires of STIX objects),
//! so exporting the same alerts again gives the same bundle. All versions of an alert (its updates, its cancel) share
//! one `report` id, from the first alert of the chain: an update is a new `modified`
//! version of the report, and a cancel makes the last version `revoked`. Indicators
//! belong to one version: an update or cancel revokes those of the version it replaces.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::alert::{AlertBody, Indicator, IndicatorType, Tlp};
use crate::ids::{AlertId, PublicKey};

/// The namespace of Tocsin's deterministic STIX ids.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x7c1f_3a52_9b0e_4d61_a8f4_26e3_5bd0_c917);

/// The OASIS TLP 2.0 extension definition that the marking objects use.
pub const TLP_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";

/// When the TLP 2.0 marking objects were created (fixed by OASIS).
const TLP_CREATED: &str = "2022-10-01T00:00:00.000Z";

/// When Tocsin's own STIX objects (its identity, its extension definition) and every
/// node identity are dated: fixed, so that a re-export never makes a new version.
const TOCSIN_CREATED: &str = "2026-01-01T00:00:00.000Z";

/// Where the Tocsin extension's properties are documented.
const EXTENSION_SCHEMA: &str =
    "https://github.com/tocsin-project/tocsin/blob/main/docs/interop.md#the-tocsin-stix-extension";

/// The STIX id of the fixed TLP 2.0 marking definition for `tlp`.
pub fn tlp_marking_id(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear => "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
        Tlp::Green => "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
        Tlp::Amber => "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
        Tlp::AmberStrict => "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
        Tlp::Red => "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
    }
}

/// The TLP of a marking definition id: the TLP 2.0 ones, and the STIX 2.1 spec's
/// TLP 1.0 ones (WHITE is read as CLEAR).
pub fn tlp_of_marking(id: &str) -> Option<Tlp> {
    const TLP1: [(&str, Tlp); 4] = [
        (
            "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
            Tlp::Clear,
        ),
        (
            "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
            Tlp::Green,
        ),
        (
            "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
            Tlp::Amber,
        ),
        (
            "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
            Tlp::Red,
        ),
    ];
    Tlp::ALL
        .into_iter()
        .find(|t| tlp_marking_id(*t) == id)
        .or_else(|| TLP1.iter().find(|(m, _)| *m == id).map(|(_, t)| *t))
}

fn tlp_2_0_name(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear => "clear",
        Tlp::Green => "green",
        Tlp::Amber => "amber",
        Tlp::AmberStrict => "amber+strict",
        Tlp::Red => "red",
    }
}

/// The marking definition object for `tlp`, as OASIS publishes it.
pub fn tlp_marking(tlp: Tlp) -> Value {
    json!({
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": tlp_marking_id(tlp),
        "created": TLP_CREATED,
        "name": format!("TLP:{}", tlp.as_str()),
        "extensions": {
            TLP_EXTENSION: {
                "extension_type": "property-extension",
                "tlp_2_0": tlp_2_0_name(tlp),
            }
        }
    })
}

/// `kind--UUID`, the UUID's 122 free bits taken from SHA-256 of the namespace and
/// `name` (deterministic), its version and variant bits those of a UUIDv4.
fn id_of(kind: &str, name: &str) -> String {
    format!("{kind}--{}", uuid_of(name))
}

/// The id of the Tocsin extension definition (the same in every bundle).
pub fn extension_id() -> String {
    id_of("extension-definition", "tocsin-alert")
}

/// The id of the identity that stands for Tocsin itself (creator of the extension).
pub fn tocsin_identity_id() -> String {
    id_of("identity", "tocsin")
}

/// The id of the identity that stands for an origin node.
pub fn origin_identity_id(origin: &PublicKey) -> String {
    id_of("identity", &format!("origin:{origin}"))
}

/// The id of the report for every version of the alert chain that starts at `root`.
pub fn report_id(root: &AlertId) -> String {
    id_of("report", &format!("alert:{root}"))
}

/// Unix ms as a STIX timestamp (RFC 3339, UTC, milliseconds).
pub fn timestamp(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Unix microseconds as a TAXII timestamp (RFC 3339, UTC, microseconds): the
/// precision of `date_added`, so that no two entries share one.
pub fn timestamp_us(us: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us);
    humantime::format_rfc3339_micros(t).to_string()
}

/// A timestamp as unix microseconds (`None` if it is not RFC 3339 UTC).
pub fn parse_timestamp_us(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()?;
    let us = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros();
    u64::try_from(us).ok()
}

/// A STIX timestamp as unix ms (`None` if it is not RFC 3339 UTC).
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok()
}

/// The STIX object type and property an indicator type's pattern compares, and
/// whether it is a file hash (`file:hashes.'…'`). `None` for CVEs (a `vulnerability`)
/// and `other` (no STIX form: kept in the extension).
fn pattern_path(ind: &Indicator) -> Option<&'static str> {
    Some(match ind.kind {
        IndicatorType::Ipv4 => "ipv4-addr:value",
        IndicatorType::Ipv6 => "ipv6-addr:value",
        IndicatorType::Cidr if ind.value.contains(':') => "ipv6-addr:value",
        IndicatorType::Cidr => "ipv4-addr:value",
        IndicatorType::Domain => "domain-name:value",
        IndicatorType::Url => "url:value",
        IndicatorType::Email => "email-addr:value",
        IndicatorType::Sha256 => "file:hashes.'SHA-256'",
        IndicatorType::Sha1 => "file:hashes.'SHA-1'",
        IndicatorType::Md5 => "file:hashes.MD5",
        IndicatorType::Cve | IndicatorType::Other => return None,
    })
}

/// The STIX pattern of an indicator, e.g. `[ipv4-addr:value = '192.0.2.1']`.
pub fn pattern(ind: &Indicator) -> Option<String> {
    let path = pattern_path(ind)?;
    let value = ind.value.replace('\\', "\\\\").replace('\'', "\\'");
    Some(format!("[{path} = '{value}']"))
}

/// The indicator of a pattern that compares one supported property for equality (the
/// form [`pattern`] writes); `None` for anything else.
pub fn parse_pattern(pattern: &str) -> Option<Indicator> {
    let inner = pattern.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    let (path, literal) = inner.split_once('=')?;
    let path = path.trim();
    let literal = literal.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    let mut value = String::with_capacity(literal.len());
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            '\'' => return None,
            c => value.push(c),
        }
    }
    let kind = match path {
        "ipv4-addr:value" | "ipv6-addr:value" if value.contains('/') => IndicatorType::Cidr,
        "ipv4-addr:value" => IndicatorType::Ipv4,
        "ipv6-addr:value" => IndicatorType::Ipv6,
        "domain-name:value" => IndicatorType::Domain,
        "url:value" => IndicatorType::Url,
        "email-addr:value" => IndicatorType::Email,
        "file:hashes.'SHA-256'" | "file:hashes.SHA256" | "file:hashes.'SHA256'" => {
            IndicatorType::Sha256
        }
        "file:hashes.'SHA-1'" | "file:hashes.SHA1" | "file:hashes.'SHA1'" => IndicatorType::Sha1,
        "file:hashes.MD5" | "file:hashes.'MD5'" => IndicatorType::Md5,
        _ => return None,
    };
    Indicator::new(kind, value).ok()
}

/// One alert to export, with where it stands in its chain.
#[derive(Debug, Clone)]
pub struct Version<'a> {
    /// The alert's id.
    pub id: AlertId,
    /// Its signed body.
    pub body: &'a AlertBody,
    /// Its signature, 128 hex.
    pub sig: &'a str,
    /// The first alert of its chain (itself for a new alert) and when that was issued.
    pub root: (AlertId, u64),
    /// When the cancel of its chain was issued, if this is the chain's last version and
    /// it was cancelled: the report (and this version's indicators) are revoked then.
    pub revoked_at: Option<u64>,
    /// When its origin first replaced it (updated or cancelled it), if it did: this
    /// version's own indicators and vulnerabilities are revoked then, as the next
    /// version names its own. The report is not: the next version is its newer version.
    pub replaced_at: Option<u64>,
}

/// The common properties of an object that an alert version made.
fn common(
    kind: &str,
    id: &str,
    (created, modified): (u64, u64),
    revoked: bool,
    v: &Version<'_>,
) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("type".into(), json!(kind));
    o.insert("spec_version".into(), json!("2.1"));
    o.insert("id".into(), json!(id));
    o.insert("created".into(), json!(timestamp(created)));
    o.insert("modified".into(), json!(timestamp(modified.max(created))));
    o.insert(
        "created_by_ref".into(),
        json!(origin_identity_id(&v.body.origin)),
    );
    o.insert(
        "object_marking_refs".into(),
        json!([tlp_marking_id(v.body.tlp)]),
    );
    if revoked {
        o.insert("revoked".into(), json!(true));
    }
    o
}

/// The objects one alert version makes: its report first, then its indicators and
/// vulnerabilities.
pub fn version_objects(v: &Version<'_>) -> Vec<Value> {
    let b = v.body;
    let issued = b.issued_at;
    // The report's version, and that of this version's own indicators.
    let modified = v.revoked_at.unwrap_or(issued);
    let ended = v.replaced_at.or(v.revoked_at);
    let own = (issued, ended.unwrap_or(issued));
    let mut refs = Vec::new();
    let mut objects = Vec::new();
    let mut others = Vec::new();
    for ind in &b.indicators {
        let name = format!("alert:{}:{}:{}", v.id, ind.kind.as_str(), ind.value);
        if ind.kind == IndicatorType::Cve {
            let id = id_of("vulnerability", &name);
            let mut o = common("vulnerability", &id, own, ended.is_some(), v);
            o.insert("name".into(), json!(ind.value));
            o.insert(
                "external_references".into(),
                json!([{"source_name": "cve", "external_id": ind.value}]),
            );
            refs.push(id);
            objects.push(Value::Object(o));
        } else if let Some(p) = pattern(ind) {
            let id = id_of("indicator", &name);
            let mut o = common("indicator", &id, own, ended.is_some(), v);
            o.insert("name".into(), json!(ind.value));
            o.insert(
                "description".into(),
                json!(format!(
                    "{} from the Tocsin alert: {}",
                    ind.kind.as_str(),
                    b.title
                )),
            );
            o.insert("indicator_types".into(), json!(["malicious-activity"]));
            o.insert("pattern".into(), json!(p));
            o.insert("pattern_type".into(), json!("stix"));
            o.insert("pattern_version".into(), json!("2.1"));
            o.insert("valid_from".into(), json!(timestamp(issued)));
            if let Some(exp) = b.expires_at.filter(|e| *e > issued) {
                o.insert("valid_until".into(), json!(timestamp(exp)));
            }
            refs.push(id);
            objects.push(Value::Object(o));
        } else {
            others.push(json!({"type": ind.kind.as_str(), "value": ind.value}));
        }
    }
    if refs.is_empty() {
        // `object_refs` may not be empty: a report without indicators refers to its
        // origin.
        refs.push(origin_identity_id(&b.origin));
    }
    let (root, created) = v.root;
    let mut ext = Map::new();
    ext.insert("extension_type".into(), json!("property-extension"));
    ext.insert("alert_id".into(), json!(v.id.to_string()));
    ext.insert("origin".into(), json!(b.origin.to_string()));
    ext.insert("kind".into(), json!(b.kind));
    if let Some(r) = b.replaces {
        ext.insert("replaces".into(), json!(r.to_string()));
    }
    ext.insert("severity".into(), json!(b.severity.as_str()));
    ext.insert("tlp".into(), json!(b.tlp.as_str()));
    if !b.recipients.is_empty() {
        let keys: Vec<String> = b.recipients.iter().map(ToString::to_string).collect();
        ext.insert("recipients".into(), json!(keys));
    }
    ext.insert("issued_at".into(), json!(issued));
    if let Some(exp) = b.expires_at {
        ext.insert("expires_at".into(), json!(exp));
    }
    ext.insert("signature".into(), json!(v.sig));
    if !others.is_empty() {
        ext.insert("other_indicators".into(), Value::Array(others));
    }
    let mut r = common(
        "report",
        &report_id(&root),
        (created, modified),
        v.revoked_at.is_some(),
        v,
    );
    r.insert("name".into(), json!(b.title));
    if !b.text.is_empty() {
        r.insert("description".into(), json!(b.text));
    }
    r.insert("report_types".into(), json!(["threat-report"]));
    r.insert("published".into(), json!(timestamp(issued)));
    if !b.tags.is_empty() {
        r.insert("labels".into(), json!(b.tags));
    }
    if !b.references.is_empty() {
        // As descriptions: a `url` SHOULD come with a hash of what it points to, which a
        // live advisory page cannot have.
        let refs: Vec<Value> = b
            .references
            .iter()
            .map(|u| json!({"source_name": "reference", "description": u}))
            .collect();
        r.insert("external_references".into(), Value::Array(refs));
    }
    r.insert("object_refs".into(), json!(refs));
    r.insert(
        "extensions".into(),
        json!({ extension_id(): Value::Object(ext) }),
    );
    let mut out = vec![Value::Object(r)];
    out.extend(objects);
    out
}

/// The identity that stands for Tocsin (the extension definition's creator).
fn tocsin_identity() -> Value {
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": tocsin_identity_id(),
        "created": TOCSIN_CREATED,
        "modified": TOCSIN_CREATED,
        "name": "Tocsin",
        "description": "The Tocsin federated alert network software.",
        "identity_class": "system",
    })
}

/// The Tocsin extension definition: the alert fields STIX has no property for.
fn extension_definition() -> Value {
    json!({
        "type": "extension-definition",
        "spec_version": "2.1",
        "id": extension_id(),
        "created_by_ref": tocsin_identity_id(),
        "created": TOCSIN_CREATED,
        "modified": TOCSIN_CREATED,
        "name": "Tocsin alert",
        "description": "The fields of a signed Tocsin alert that STIX has no property for: \
                        its id, origin key, kind, the alert it replaces, severity, TLP, \
                        recipients, issue and expiry times (unix ms), ed25519 signature, \
                        and indicators of type other.",
        "schema": EXTENSION_SCHEMA,
        "version": "1.0.0",
        "extension_types": ["property-extension"],
    })
}

/// The identity that stands for an origin node.
pub fn origin_identity(origin: &PublicKey) -> Value {
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": origin_identity_id(origin),
        "created": TOCSIN_CREATED,
        "modified": TOCSIN_CREATED,
        "name": format!("Tocsin node {origin}"),
        "identity_class": "organization",
        "created_by_ref": tocsin_identity_id(),
    })
}

/// The objects every export refers to, whatever it holds: Tocsin's identity and the
/// Tocsin extension definition.
pub fn shared_objects() -> Vec<Value> {
    vec![tocsin_identity(), extension_definition()]
}

/// A deterministic UUID for `name`: SHA-256 over [`NAMESPACE`] and the name, in
/// version-4 form (like every id here; the strict validator refuses version 5).
pub fn uuid_of(name: &str) -> String {
    let mut h = Sha256::new();
    h.update(NAMESPACE.as_bytes());
    h.update(name.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// One STIX 2.1 bundle of the alert versions, in the order given: Tocsin's identity
/// and extension definition, the TLP markings and origin identities used, then each
/// version's report followed by its indicators and vulnerabilities.
pub fn bundle(versions: &[Version<'_>]) -> Value {
    let mut objects = shared_objects();
    for tlp in Tlp::ALL {
        if versions.iter().any(|v| v.body.tlp == tlp) {
            objects.push(tlp_marking(tlp));
        }
    }
    let mut origins: Vec<PublicKey> = versions.iter().map(|v| v.body.origin).collect();
    origins.sort();
    origins.dedup();
    objects.extend(origins.iter().map(origin_identity));
    for v in versions {
        objects.extend(version_objects(v));
    }
    // The bundle id follows from what it holds.
    let mut seen = String::new();
    for o in &objects {
        seen.push_str(o["id"].as_str().unwrap_or(""));
        seen.push_str(o["modified"].as_str().unwrap_or(""));
    }
    json!({
        "type": "bundle",
        "id": id_of("bundle", &seen),
        "objects": objects,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_written_reads_back_as_the_same_indicator() {
        let cases = [
            (IndicatorType::Ipv4, "192.0.2.7"),
            (IndicatorType::Ipv6, "2001:db8::1"),
            (IndicatorType::Cidr, "198.51.100.0/24"),
            (IndicatorType::Cidr, "2001:db8::/32"),
            (IndicatorType::Domain, "evil.example"),
            (IndicatorType::Url, "https://evil.example/a?b='c'&d=\\e"),
            (IndicatorType::Email, "ceo@evil.example"),
            (
                IndicatorType::Sha256,
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            ),
            (
                IndicatorType::Sha1,
                "a9993e364706816aba3e25717850c26c9cd0d89d",
            ),
            (IndicatorType::Md5, "900150983cd24fb0d6963f7d28e17f72"),
        ];
        for (kind, value) in cases {
            let ind = Indicator::new(kind, value).unwrap();
            let p = pattern(&ind).unwrap();
            assert_eq!(parse_pattern(&p), Some(ind), "{p}");
        }
        assert_eq!(
            pattern(&Indicator::new(IndicatorType::Ipv4, "192.0.2.7").unwrap()).unwrap(),
            "[ipv4-addr:value = '192.0.2.7']"
        );
        assert_eq!(
            parse_pattern("[ipv4-addr:value = '192.0.2.7' OR ipv4-addr:value = '192.0.2.8']"),
            None
        );
        assert_eq!(parse_pattern("[process:name = 'evil.exe']"), None);
        assert_eq!(parse_pattern("[ipv4-addr:value = 'not an address']"), None);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds_and_read_back() {
        assert_eq!(timestamp(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(
            parse_timestamp("2026-01-01T00:00:00.123Z"),
            Some(1_767_225_600_123)
        );
        assert_eq!(
            parse_timestamp("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(
            timestamp_us(1_767_225_600_123_456),
            "2026-01-01T00:00:00.123456Z"
        );
        assert_eq!(
            parse_timestamp_us("2026-01-01T00:00:00.123456Z"),
            Some(1_767_225_600_123_456)
        );
        assert_eq!(
            parse_timestamp_us("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000_000)
        );
    }

    #[test]
    fn markings_map_both_ways_for_every_tlp() {
        for tlp in Tlp::ALL {
            assert_eq!(tlp_of_marking(tlp_marking_id(tlp)), Some(tlp));
            assert_eq!(tlp_marking(tlp)["id"], tlp_marking_id(tlp));
        }
        assert_eq!(
            tlp_of_marking("marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9"),
            Some(Tlp::Clear)
        );
        assert_eq!(
            tlp_of_marking("marking-definition--00000000-0000-0000-0000-000000000000"),
            None
        );
    }
}
