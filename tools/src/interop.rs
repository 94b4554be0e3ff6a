//! `tocsin export` and `tocsin import`: stored alerts to a STIX 2.1 bundle, and the
//! indicators of a bundle to alerts issued by this node. The mapping itself is
//! `tocsin_proto::stix`; `docs/interop.md` documents it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use tocsin_proto::api::AlertView;
use tocsin_proto::limits::{
    MAX_INDICATORS, MAX_REFERENCES, MAX_REFERENCE_BYTES, MAX_TAGS, MAX_TAG_BYTES, MAX_TEXT_BYTES,
    MAX_TITLE_BYTES,
};
use tocsin_proto::stix::{self, Version};
use tocsin_proto::{AlertId, Indicator, IndicatorType, Kind, Severity, Tlp};

use crate::cli::{ExportArgs, GlobalArgs, ImportArgs};
use crate::client::{Client, ClientError, ListQuery};
use crate::commands::filter_query;
use crate::output::Output;

/// Every alert view the query matches (all pages).
async fn all_views(client: &Client, mut query: ListQuery) -> anyhow::Result<Vec<AlertView>> {
    let mut views = Vec::new();
    loop {
        let page = client.list(&query).await?;
        for v in page.alerts {
            views.push(parse_view(v)?);
        }
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => return Ok(views),
        }
    }
}

fn parse_view(v: Value) -> Result<AlertView, ClientError> {
    serde_json::from_value(v)
        .map_err(|e| ClientError::Response(format!("an alert view is malformed: {e}")))
}

/// `tocsin export --format cap1.2 ID`: one alert as a CAP 1.2 message.
async fn export_cap<W: Write>(
    client: &Client,
    g: &GlobalArgs,
    a: &ExportArgs,
    id: &AlertId,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let v = parse_view(client.alert(&id.to_string()).await?)?;
    let replaces = match v.alert.replaces {
        Some(r) => match client.alert(&r.to_string()).await {
            Ok(target) => Some((r, parse_view(target)?.alert.issued_at)),
            Err(ClientError::Api { status: 404, .. }) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let status = client.status().await?;
    let holder = status["public_key"]
        .as_str()
        .and_then(|k| tocsin_proto::PublicKey::from_hex(k).ok())
        .ok_or_else(|| ClientError::Response("status has no valid public_key".into()))?;
    let xml = tocsin_proto::cap::alert_xml(&tocsin_proto::cap::CapAlert {
        id: v.id,
        body: &v.alert,
        sig: &v.sig,
        replaces,
        holder,
    })?;
    match &a.out {
        Some(path) => std::fs::write(path, &xml)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => out.line(xml.trim_end())?,
    }
    if !g.quiet && v.alert.replaces.is_some() && replaces.is_none() {
        eprintln!(
            "tocsin: the alert it replaces is not held here: the message has no <references>"
        );
    }
    Ok(())
}

/// `tocsin export --format stix2.1` or `--format cap1.2 ID`.
pub async fn export<W: Write>(
    client: &Client,
    g: &GlobalArgs,
    a: &ExportArgs,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    if a.format == "cap1.2" {
        let Some(id) = &a.id else {
            bail!(
                "--format cap1.2 exports one alert: give its ID (tocsin export --format cap1.2 ID)"
            );
        };
        if a.filters != crate::cli::Filters::default() {
            bail!("--format cap1.2 exports one alert by ID: the list filters do not apply");
        }
        return export_cap(client, g, a, id, out).await;
    }
    if let Some(id) = &a.id {
        bail!("--format stix2.1 exports the alerts the list filters choose, not one ID ({id}): use --text, --origin, --since and the other filters");
    }
    let views = all_views(client, filter_query(&a.filters)).await?;
    // Where each alert's chain starts, and when its cancel came.
    let mut roots: HashMap<AlertId, (AlertId, u64)> = HashMap::new();
    let mut cancelled: HashMap<AlertId, u64> = HashMap::new();
    for v in &views {
        let b = &v.alert;
        match b.kind {
            Kind::Cancel => continue,
            Kind::New => {
                roots.insert(v.id, (v.id, b.issued_at));
            }
            Kind::Update => {
                let history = client.history(&v.id.to_string()).await?;
                let first = history
                    .into_iter()
                    .next()
                    .map(parse_view)
                    .transpose()?
                    .map_or((v.id, b.issued_at), |f| (f.id, f.alert.issued_at));
                roots.insert(v.id, first);
            }
        }
        if v.state == tocsin_proto::api::AlertState::Cancelled {
            if let Some(cancel) = v.replaced_by {
                let c = parse_view(client.alert(&cancel.to_string()).await?)?;
                cancelled.insert(v.id, c.alert.issued_at);
            }
        }
    }
    // The versions of each chain in this export, by issue time: a version followed by
    // another was replaced then (its indicators end), and only a chain's last version
    // carries the cancel (its report is revoked).
    let mut chains: HashMap<AlertId, Vec<(u64, AlertId)>> = HashMap::new();
    for v in &views {
        if let Some((root, _)) = roots.get(&v.id) {
            chains
                .entry(*root)
                .or_default()
                .push((v.alert.issued_at, v.id));
        }
    }
    for versions in chains.values_mut() {
        versions.sort();
    }
    let mut versions = Vec::new();
    for v in &views {
        let Some(root) = roots.get(&v.id).copied() else {
            continue;
        };
        let chain = chains.get(&root.0).map(Vec::as_slice).unwrap_or_default();
        let next = chain
            .iter()
            .skip_while(|(_, id)| *id != v.id)
            .nth(1)
            .map(|(at, _)| *at);
        let (revoked_at, replaced_at) = match (next, v.replaced_by) {
            (Some(at), _) => (None, Some(at)),
            (None, _) if cancelled.contains_key(&v.id) => (cancelled.get(&v.id).copied(), None),
            // Superseded by an update this export does not hold.
            (None, Some(by)) if v.state == tocsin_proto::api::AlertState::Superseded => {
                let u = parse_view(client.alert(&by.to_string()).await?)?;
                (None, Some(u.alert.issued_at))
            }
            (None, _) => (None, None),
        };
        versions.push(Version {
            id: v.id,
            body: &v.alert,
            sig: &v.sig,
            root,
            revoked_at,
            replaced_at,
        });
    }
    let bundle = stix::bundle(&versions);
    let text = serde_json::to_string_pretty(&bundle)?;
    match &a.out {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => out.line(&text)?,
    }
    if !g.quiet {
        // A cancel is no object of its own: it revokes what it cancels, if that is here.
        let (folded, left): (Vec<&AlertView>, Vec<&AlertView>) = views
            .iter()
            .filter(|v| v.alert.kind == Kind::Cancel)
            .partition(|v| v.alert.replaces.is_some_and(|t| roots.contains_key(&t)));
        let mut skipped = String::new();
        if !folded.is_empty() {
            skipped.push_str(&format!(
                " ({} cancels appear as their alerts' revoked versions)",
                folded.len()
            ));
        }
        if !left.is_empty() {
            skipped.push_str(&format!(
                " ({} cancels of alerts this export leaves out are not in it)",
                left.len()
            ));
        }
        eprintln!(
            "tocsin: exported {} alerts as {} STIX objects{skipped}",
            versions.len(),
            bundle["objects"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}

/// The latest version of every object in a bundle, by id (revoked ones included).
fn latest_objects(bundle: &Value) -> anyhow::Result<Latest> {
    if bundle["type"] != "bundle" {
        bail!("not a STIX 2.1 bundle: its \"type\" is not \"bundle\"");
    }
    let Some(objects) = bundle["objects"].as_array() else {
        bail!("not a STIX 2.1 bundle: it has no \"objects\" list");
    };
    let mut latest = Latest::default();
    let mut conflicted = std::collections::HashSet::new();
    for o in objects {
        let Some(id) = o["id"].as_str() else {
            bail!("a STIX object has no \"id\"");
        };
        if !o["type"].is_string() {
            latest.refused.push((id.into(), "no \"type\"".into()));
            continue;
        }
        let imported = matches!(
            o["type"].as_str(),
            Some("report" | "indicator" | "vulnerability")
        );
        match o["spec_version"].as_str() {
            Some("2.1") => {}
            // Optional on cyber observables and on the TLP 1.0 marking definitions the
            // spec names; required on the objects imported.
            None if !imported => {}
            other => {
                latest.refused.push((
                    id.into(),
                    format!(
                        "spec_version {}: this import reads STIX 2.1 objects",
                        other.map_or_else(|| "missing".to_string(), |v| format!("{v:?}"))
                    ),
                ));
                continue;
            }
        }
        if conflicted.contains(id) {
            continue;
        }
        let modified = o["modified"].as_str().unwrap_or("");
        match latest.objects.get(id) {
            // Which copy is right (their labels may differ) cannot be told: neither
            // is imported.
            Some(old) if old["modified"].as_str().unwrap_or("") == modified && old != o => {
                latest.objects.remove(id);
                conflicted.insert(id.to_string());
                latest.refused.push((
                    id.into(),
                    format!("two different objects with this id and modified {modified:?} (a STIX id and modified name one version): neither was imported"),
                ));
            }
            Some(old) if old["modified"].as_str().unwrap_or("") >= modified => {}
            _ => {
                latest.objects.insert(id.to_string(), o.clone());
            }
        }
    }
    Ok(latest)
}

/// The latest version of each object of a bundle, and the objects left out, with why.
#[derive(Debug, Default)]
struct Latest {
    objects: BTreeMap<String, Value>,
    refused: Vec<(String, String)>,
}

/// The TLP marking definitions a bundle defines itself, by id: TLP 1.0 style
/// (`definition_type: "tlp"`) and TLP 2.0 style (the OASIS extension), under ids other
/// than the standard ones.
fn tlp_definitions(bundle: &Value) -> HashMap<String, Tlp> {
    let mut defs = HashMap::new();
    for o in bundle["objects"].as_array().into_iter().flatten() {
        if o["type"] != "marking-definition" {
            continue;
        }
        let Some(id) = o["id"].as_str() else {
            continue;
        };
        let name = if o["definition_type"] == "tlp" {
            o["definition"]["tlp"].as_str()
        } else {
            o["extensions"][stix::TLP_EXTENSION]["tlp_2_0"].as_str()
        };
        let tlp = match name.map(str::to_ascii_lowercase).as_deref() {
            Some("white" | "clear") => Tlp::Clear,
            Some("green") => Tlp::Green,
            Some("amber") => Tlp::Amber,
            Some("amber+strict") => Tlp::AmberStrict,
            Some("red") => Tlp::Red,
            _ => continue,
        };
        defs.insert(id.to_string(), tlp);
    }
    defs
}

/// The strictest TLP an object is marked with, if any: over its `object_marking_refs`
/// and its `granular_markings` (a label on one property binds the whole alert), by the
/// standard marking ids or the bundle's own definitions. STIX markings apply to each
/// object: several labels never make the widest one win.
fn marking_of(o: &Value, defs: &HashMap<String, Tlp>) -> Option<Tlp> {
    let object = o["object_marking_refs"].as_array().into_iter().flatten();
    let granular = o["granular_markings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| &g["marking_ref"]);
    object
        .chain(granular)
        .filter_map(Value::as_str)
        .filter_map(|m| stix::tlp_of_marking(m).or_else(|| defs.get(m).copied()))
        .max()
}

/// One alert to issue from a report or a loose indicator.
#[derive(Debug)]
struct Planned {
    /// The STIX id it comes from (also its idempotency tag).
    source: String,
    request: Map<String, Value>,
}

/// What an import found in a bundle: alerts to issue, objects skipped (with why), and
/// notes on what was changed on the way (with why).
#[derive(Debug, Default)]
struct Plan {
    alerts: Vec<Planned>,
    skipped: Vec<(String, String)>,
    notes: Vec<(String, String)>,
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Why an indicator object gives no indicator, as the import reports it.
fn unreadable(o: &Value) -> String {
    match (o["pattern_type"].as_str(), o["pattern"].as_str()) {
        (_, None) => "no pattern".into(),
        (Some(t), _) if t != "stix" => format!("pattern_type {t:?}: only STIX patterns are read"),
        (None, _) => "no pattern_type".into(),
        (Some(_), Some(p)) => format!(
            "pattern {:?} is not one equality comparing a valid value of ipv4-addr, \
             ipv6-addr, domain-name, url, email-addr or a file's MD5, SHA-1 or SHA-256 hash",
            truncate(p, 200)
        ),
    }
}

/// The indicator a STIX object stands for: a supported pattern, or a CVE.
fn indicator_of(o: &Value) -> Option<Indicator> {
    match o["type"].as_str()? {
        "indicator" if o["pattern_type"] == "stix" => stix::parse_pattern(o["pattern"].as_str()?),
        "vulnerability" => Indicator::new(IndicatorType::Cve, o["name"].as_str()?).ok(),
        _ => None,
    }
}

/// Builds the plan: one alert per live report with importable indicators, one per
/// indicator no report refers to. Refuses the bundle if an object to import has no
/// TLP marking and `--tlp` was not given.
fn plan(bundle: &Value, latest: &Latest, a: &ImportArgs, now: u64) -> anyhow::Result<Plan> {
    let mut plan = Plan {
        skipped: latest.refused.clone(),
        ..Plan::default()
    };
    let objects = &latest.objects;
    let mut unmarked = Vec::new();
    let ext = stix::extension_id();
    let defs = tlp_definitions(bundle);
    let refs_of = |r: &Value| -> Vec<String> {
        r["object_refs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    // Indicators that any version of a report refers to (those of an older version
    // were replaced by the newer one's) are not imported on their own.
    let referenced: std::collections::HashSet<String> = bundle["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["type"] == "report")
        .flat_map(refs_of)
        .collect();
    for (id, r) in objects.iter().filter(|(_, o)| o["type"] == "report") {
        let refs = refs_of(r);
        if r["revoked"] == true {
            plan.skipped.push((id.clone(), "revoked".into()));
            continue;
        }
        let mut indicators = Vec::new();
        let mut valid_until: Option<u64> = None;
        // The strictest label of the objects taken into the alert.
        let mut strictest: Option<(Tlp, &str)> = None;
        for (ref_id, o) in refs.iter().filter_map(|r| Some((r, objects.get(r)?))) {
            if o["revoked"] == true {
                continue;
            }
            if let Some(ind) = indicator_of(o) {
                if !indicators.contains(&ind) {
                    indicators.push(ind);
                }
                if let Some(t) = marking_of(o, &defs) {
                    if strictest.is_none_or(|(s, _)| t > s) {
                        strictest = Some((t, ref_id));
                    }
                }
                if let Some(t) = o["valid_until"].as_str().and_then(stix::parse_timestamp) {
                    valid_until = Some(valid_until.map_or(t, |v| v.max(t)));
                }
            }
        }
        let tocsin = &r["extensions"][&ext];
        if let Some(others) = tocsin["other_indicators"].as_array() {
            for o in others {
                if let Some(ind) = o["value"]
                    .as_str()
                    .and_then(|v| Indicator::new(IndicatorType::Other, v).ok())
                {
                    indicators.push(ind);
                }
            }
        }
        if indicators.is_empty() {
            plan.skipped
                .push((id.clone(), "no indicator with a supported pattern".into()));
            continue;
        }
        let expires = tocsin["expires_at"].as_u64().or(valid_until);
        let Some(own) = marking_of(r, &defs).or(a.tlp) else {
            unmarked.push(id.clone());
            continue;
        };
        // An indicator keeps its own label inside a report of a wider one: the alert
        // carries the strictest of them.
        let tlp = match strictest {
            Some((t, from)) if t > own => {
                plan.notes.push((
                    id.clone(),
                    format!(
                        "issued as TLP:{}, the label of {from} it refers to (the report is TLP:{})",
                        t.as_str(),
                        own.as_str()
                    ),
                ));
                t
            }
            _ => own,
        };
        let severity = tocsin["severity"]
            .as_str()
            .and_then(|s| s.parse::<Severity>().ok());
        let title = r["name"].as_str().unwrap_or("Imported STIX report");
        let tags = r["labels"].as_array().cloned().unwrap_or_default();
        let urls: Vec<String> = r["external_references"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .filter_map(|e| e["url"].as_str().or(e["description"].as_str()))
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                    .filter(|u| u.len() <= MAX_REFERENCE_BYTES)
                    .take(MAX_REFERENCES)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let fields = Fields {
            title,
            text: r["description"].as_str().unwrap_or(""),
            tlp,
            severity,
            indicators,
            labels: &tags,
            references: urls,
            expires,
        };
        push(&mut plan, id, fields, a, now);
    }
    for (id, o) in objects.iter().filter(|(id, o)| {
        matches!(o["type"].as_str(), Some("indicator")) && !referenced.contains(*id)
    }) {
        if o["revoked"] == true {
            plan.skipped.push((id.clone(), "revoked".into()));
            continue;
        }
        let Some(ind) = indicator_of(o) else {
            plan.skipped.push((id.clone(), unreadable(o)));
            continue;
        };
        if let (Some(from), Some(until)) = (
            o["valid_from"].as_str().and_then(stix::parse_timestamp),
            o["valid_until"].as_str().and_then(stix::parse_timestamp),
        ) {
            if until <= from {
                plan.skipped
                    .push((id.clone(), "valid_until is not after valid_from".into()));
                continue;
            }
        }
        let Some(tlp) = marking_of(o, &defs).or(a.tlp) else {
            unmarked.push(id.clone());
            continue;
        };
        let title = o["name"]
            .as_str()
            .map_or_else(|| format!("STIX indicator {}", ind.value), String::from);
        let labels = o["labels"].as_array().cloned().unwrap_or_default();
        let fields = Fields {
            title: &title,
            text: o["description"].as_str().unwrap_or(""),
            tlp,
            severity: None,
            indicators: vec![ind],
            labels: &labels,
            references: Vec::new(),
            expires: o["valid_until"].as_str().and_then(stix::parse_timestamp),
        };
        push(&mut plan, id, fields, a, now);
    }
    if !unmarked.is_empty() {
        bail!(
            "{} STIX objects have no TLP marking (first: {}); give --tlp to import them with \
             that label",
            unmarked.len(),
            unmarked[0]
        );
    }
    Ok(plan)
}

/// The fields of one alert to issue.
struct Fields<'a> {
    title: &'a str,
    text: &'a str,
    tlp: Tlp,
    severity: Option<Severity>,
    indicators: Vec<Indicator>,
    labels: &'a [Value],
    references: Vec<String>,
    expires: Option<u64>,
}

/// Adds one alert to the plan, or the reason it cannot be issued to the skipped list.
fn push(plan: &mut Plan, source: &str, f: Fields<'_>, a: &ImportArgs, now: u64) {
    if f.expires.is_some_and(|e| e <= now) {
        plan.skipped.push((source.into(), "expired".into()));
        return;
    }
    if f.tlp == Tlp::Red && a.recipients.is_empty() {
        plan.skipped.push((
            source.into(),
            "TLP:RED needs recipients: give --recipient".into(),
        ));
        return;
    }
    let source_tag = format!("stix:{source}");
    let mut tags: Vec<String> = f
        .labels
        .iter()
        .filter_map(Value::as_str)
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join("-"))
        .filter(|t| !t.is_empty() && t.len() <= MAX_TAG_BYTES && *t != source_tag)
        .take(MAX_TAGS - 1)
        .collect();
    tags.push(source_tag);
    let title = if f.title.trim().is_empty() {
        "Imported STIX report"
    } else {
        f.title
    };
    let specs: Vec<String> = f
        .indicators
        .iter()
        .take(MAX_INDICATORS)
        .map(|i| format!("{}:{}", i.kind.as_str(), i.value))
        .collect();
    let mut req = Map::new();
    req.insert("title".into(), json!(truncate(title, MAX_TITLE_BYTES)));
    req.insert("text".into(), json!(truncate(f.text, MAX_TEXT_BYTES)));
    req.insert("tlp".into(), json!(f.tlp.as_str()));
    let severity = a.severity.or(f.severity).unwrap_or(Severity::Medium);
    req.insert("severity".into(), json!(severity.as_str()));
    req.insert("indicators".into(), json!(specs));
    req.insert("tags".into(), json!(tags));
    if !f.references.is_empty() {
        req.insert("references".into(), json!(f.references));
    }
    if let Some(e) = f.expires {
        req.insert("expires_at".into(), json!(e));
    }
    if f.tlp == Tlp::Red {
        let keys: Vec<String> = a.recipients.iter().map(ToString::to_string).collect();
        req.insert("recipients".into(), json!(keys));
    }
    plan.alerts.push(Planned {
        source: source.into(),
        request: req,
    });
}

/// `tocsin import --format stix2.1`.
pub async fn import<W: Write>(
    client: &Client,
    g: &GlobalArgs,
    a: &ImportArgs,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let mut text = String::new();
    if a.file == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the bundle from stdin")?;
    } else {
        text = std::fs::read_to_string(&a.file)
            .with_context(|| format!("cannot read the bundle {}", a.file))?;
    }
    let bundle: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", a.file))?;
    let latest = latest_objects(&bundle)?;
    let mut plan = plan(&bundle, &latest, a, crate::format::now_ms())?;
    if !a.dry_run && plan.alerts.len() > a.max_alerts {
        bail!(
            "{} would issue {} alerts, more than --max-alerts {}: nothing was issued; check it \
             with --dry-run, or give --max-alerts {} to issue them all",
            a.file,
            plan.alerts.len(),
            a.max_alerts,
            plan.alerts.len()
        );
    }
    let me = client.status().await?["public_key"]
        .as_str()
        .map(String::from)
        .unwrap_or_default();
    let ext = stix::extension_id();
    let mut issued = Vec::new();
    for p in std::mem::take(&mut plan.alerts) {
        // Alerts this node holds (its own export, or one it received) are not issued
        // again, nor those an earlier import issued.
        let held = latest
            .objects
            .get(&p.source)
            .and_then(|o| o["extensions"][&ext]["alert_id"].as_str())
            .map(String::from);
        if let Some(id) = held {
            if client.alert(&id).await.is_ok() {
                plan.skipped
                    .push((p.source, format!("alert {id} is already held")));
                continue;
            }
        }
        let query = ListQuery {
            tag: Some(format!("stix:{}", p.source)),
            origin: Some(me.clone()),
            limit: Some(1),
            ..ListQuery::default()
        };
        if let Some(v) = client.list(&query).await?.alerts.first() {
            let id = v["id"].as_str().unwrap_or("?");
            plan.skipped
                .push((p.source, format!("already imported as {id}")));
            continue;
        }
        if a.dry_run {
            issued.push((p.source, String::from("(dry run)")));
            continue;
        }
        let done = client.issue(&Value::Object(p.request)).await?;
        issued.push((p.source, done.id));
    }
    if g.json {
        let issued: Vec<Value> = issued
            .iter()
            .map(|(s, id)| json!({"source": s, "id": id}))
            .collect();
        let skipped: Vec<Value> = plan
            .skipped
            .iter()
            .map(|(s, why)| json!({"source": s, "reason": why}))
            .collect();
        let notes: Vec<Value> = plan
            .notes
            .iter()
            .map(|(s, what)| json!({"source": s, "note": what}))
            .collect();
        return out.json_line(&json!({"issued": issued, "skipped": skipped, "notes": notes}));
    }
    for (source, id) in &issued {
        out.line(&format!("issued {id} from {source}"))?;
    }
    for (source, what) in &plan.notes {
        out.line(&format!("note {source}: {what}"))?;
    }
    for (source, why) in &plan.skipped {
        out.line(&format!("skipped {source}: {why}"))?;
    }
    if !g.quiet {
        eprintln!(
            "tocsin: {} alerts issued, {} objects skipped",
            issued.len(),
            plan.skipped.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn args(tlp: Option<Tlp>) -> ImportArgs {
        ImportArgs {
            format: "stix2.1".into(),
            file: "-".into(),
            tlp,
            severity: None,
            recipients: Vec::new(),
            dry_run: true,
            max_alerts: 1000,
        }
    }

    fn indicator(id: &str, ip: &str, markings: &[&str]) -> Value {
        json!({"type": "indicator", "id": id, "spec_version": "2.1",
               "modified": "2026-01-01T00:00:00.000Z", "pattern_type": "stix",
               "pattern": format!("[ipv4-addr:value = '{ip}']"),
               "object_marking_refs": markings})
    }

    /// The label each planned alert got, by source.
    fn labels(objects: Vec<Value>, tlp: Option<Tlp>) -> (Vec<(String, String)>, Plan) {
        let bundle = json!({"type": "bundle", "id": "bundle--1", "objects": objects});
        let latest = latest_objects(&bundle).unwrap();
        let plan = plan(&bundle, &latest, &args(tlp), NOW).unwrap();
        let got = plan
            .alerts
            .iter()
            .map(|p| (p.source.clone(), p.request["tlp"].as_str().unwrap().into()))
            .collect();
        (got, plan)
    }

    fn m(t: Tlp) -> &'static str {
        stix::tlp_marking_id(t)
    }

    #[test]
    fn an_indicator_keeps_its_stricter_label_inside_a_wider_report() {
        let report = json!({"type": "report", "id": "report--1", "name": "mixed", "spec_version": "2.1",
            "modified": "2026-01-01T00:00:00.000Z",
            "object_refs": ["indicator--a", "indicator--b"],
            "object_marking_refs": [m(Tlp::Clear)]});
        let (got, plan) = labels(
            vec![
                report,
                indicator("indicator--a", "192.0.2.1", &[m(Tlp::Green)]),
                indicator("indicator--b", "192.0.2.2", &[m(Tlp::Amber)]),
            ],
            None,
        );
        assert_eq!(got, vec![("report--1".into(), "AMBER".into())]);
        assert!(
            plan.notes[0].1.contains("TLP:AMBER") && plan.notes[0].1.contains("indicator--b"),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn several_labels_give_the_strictest_whatever_their_order_or_form() {
        // TLP 1.0 RED beside TLP 2.0 CLEAR, both orders; AMBER+STRICT beside GREEN; a
        // granular marking; the bundle's own TLP definitions, 1.0 and 2.0 style.
        let tlp1_red = "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed";
        let mut granular = indicator("indicator--e", "192.0.2.5", &[m(Tlp::Green)]);
        granular["granular_markings"] =
            json!([{"marking_ref": m(Tlp::Amber), "selectors": ["pattern"]}]);
        let own1 = json!({"type": "marking-definition", "id": "marking-definition--own1",
            "definition_type": "tlp", "definition": {"tlp": "amber"}});
        let own2 = json!({"type": "marking-definition", "id": "marking-definition--own2",
            "extensions": {stix::TLP_EXTENSION: {"tlp_2_0": "amber+strict"}}});
        let (got, _) = labels(
            vec![
                indicator("indicator--a", "192.0.2.1", &[m(Tlp::Clear), tlp1_red]),
                indicator("indicator--b", "192.0.2.2", &[tlp1_red, m(Tlp::Clear)]),
                indicator(
                    "indicator--c",
                    "192.0.2.3",
                    &[m(Tlp::Green), m(Tlp::AmberStrict)],
                ),
                indicator(
                    "indicator--d",
                    "192.0.2.4",
                    &[m(Tlp::AmberStrict), m(Tlp::Green)],
                ),
                granular,
                own1,
                own2,
                indicator(
                    "indicator--f",
                    "192.0.2.6",
                    &[m(Tlp::Clear), "marking-definition--own1"],
                ),
                indicator("indicator--g", "192.0.2.7", &["marking-definition--own2"]),
            ],
            None,
        );
        // RED needs recipients: those two are skipped, not widened.
        let want = [
            ("indicator--c", "AMBER+STRICT"),
            ("indicator--d", "AMBER+STRICT"),
            ("indicator--e", "AMBER"),
            ("indicator--f", "AMBER"),
            ("indicator--g", "AMBER+STRICT"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_unmarked_report_takes_the_tlp_option_and_its_indicators_stricter_labels() {
        let report = json!({"type": "report", "id": "report--1", "name": "r", "spec_version": "2.1",
            "modified": "2026-01-01T00:00:00.000Z", "object_refs": ["indicator--a"]});
        let objects = vec![
            report.clone(),
            indicator("indicator--a", "192.0.2.1", &[m(Tlp::Amber)]),
        ];
        let bundle = json!({"type": "bundle", "id": "bundle--1", "objects": objects});
        let latest = latest_objects(&bundle).unwrap();
        let refused = plan(&bundle, &latest, &args(None), NOW).unwrap_err();
        assert!(refused.to_string().contains("report--1"), "{refused}");
        let (got, _) = labels(objects, Some(Tlp::Green));
        assert_eq!(got, vec![("report--1".into(), "AMBER".into())]);
    }

    #[test]
    fn objects_the_import_cannot_read_are_named_with_what_is_wrong() {
        let mut v20 = indicator("indicator--v20", "192.0.2.1", &[m(Tlp::Clear)]);
        v20["spec_version"] = json!("2.0");
        let mut untyped = indicator("indicator--untyped", "192.0.2.2", &[m(Tlp::Clear)]);
        untyped.as_object_mut().unwrap().remove("type");
        let first = indicator("indicator--dup", "192.0.2.3", &[m(Tlp::Clear)]);
        // The same id and modified, a stricter label: neither copy may win.
        let second = indicator("indicator--dup", "192.0.2.4", &[m(Tlp::Red)]);
        // A cyber observable may omit spec_version: not refused (nor imported).
        let sco = json!({"type": "ipv4-addr", "id": "ipv4-addr--1", "value": "192.0.2.8"});
        let mut backwards = indicator("indicator--backwards", "192.0.2.5", &[m(Tlp::Clear)]);
        backwards["valid_from"] = json!("2026-02-01T00:00:00.000Z");
        backwards["valid_until"] = json!("2026-01-01T00:00:00.000Z");
        let mut sigma = indicator("indicator--sigma", "192.0.2.6", &[m(Tlp::Clear)]);
        sigma["pattern_type"] = json!("sigma");
        let bad_ip = indicator("indicator--badip", "999.1.1.1", &[m(Tlp::Clear)]);
        let mut no_pattern = indicator("indicator--nopattern", "192.0.2.7", &[m(Tlp::Clear)]);
        no_pattern.as_object_mut().unwrap().remove("pattern");
        let (got, plan) = labels(
            vec![
                v20, untyped, first, second, backwards, sigma, bad_ip, no_pattern, sco,
            ],
            None,
        );
        assert_eq!(got, vec![]);
        let why: BTreeMap<&str, &str> = plan
            .skipped
            .iter()
            .map(|(s, w)| (s.as_str(), w.as_str()))
            .collect();
        let expect = [
            ("indicator--v20", "spec_version \"2.0\""),
            ("indicator--untyped", "no \"type\""),
            ("indicator--dup", "neither was imported"),
            (
                "indicator--backwards",
                "valid_until is not after valid_from",
            ),
            ("indicator--sigma", "pattern_type \"sigma\""),
            ("indicator--badip", "999.1.1.1"),
            ("indicator--nopattern", "no pattern"),
        ];
        for (source, words) in expect {
            let w = why.get(source).unwrap_or(&"(not skipped)");
            assert!(w.contains(words), "{source}: {w}");
        }
        assert_eq!(plan.skipped.len(), expect.len(), "{:?}", plan.skipped);
    }
}
