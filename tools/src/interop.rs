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
    let mut revoked: HashMap<AlertId, u64> = HashMap::new();
    let mut cancels = 0usize;
    for v in &views {
        let b = &v.alert;
        match b.kind {
            Kind::Cancel => {
                cancels += 1;
                continue;
            }
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
                revoked.insert(v.id, c.alert.issued_at);
            }
        }
    }
    let versions: Vec<Version<'_>> = views
        .iter()
        .filter_map(|v| {
            Some(Version {
                id: v.id,
                body: &v.alert,
                sig: &v.sig,
                root: *roots.get(&v.id)?,
                revoked_at: revoked.get(&v.id).copied(),
            })
        })
        .collect();
    let bundle = stix::bundle(&versions);
    let text = serde_json::to_string_pretty(&bundle)?;
    match &a.out {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => out.line(&text)?,
    }
    if !g.quiet {
        let skipped = if cancels > 0 {
            format!(" ({cancels} cancels appear as their alerts' revoked versions)")
        } else {
            String::new()
        };
        eprintln!(
            "tocsin: exported {} alerts as {} STIX objects{skipped}",
            versions.len(),
            bundle["objects"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}

/// The latest version of every object in a bundle, by id (revoked ones included).
fn latest_objects(bundle: &Value) -> anyhow::Result<BTreeMap<String, Value>> {
    if bundle["type"] != "bundle" {
        bail!("not a STIX 2.1 bundle: its \"type\" is not \"bundle\"");
    }
    let Some(objects) = bundle["objects"].as_array() else {
        bail!("not a STIX 2.1 bundle: it has no \"objects\" list");
    };
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for o in objects {
        let Some(id) = o["id"].as_str() else {
            bail!("a STIX object has no \"id\"");
        };
        let newer = latest.get(id).is_none_or(|old| {
            o["modified"].as_str().unwrap_or("") > old["modified"].as_str().unwrap_or("")
        });
        if newer {
            latest.insert(id.to_string(), o.clone());
        }
    }
    Ok(latest)
}

/// The TLP an object is marked with, if any.
fn marking_of(o: &Value) -> Option<Tlp> {
    o["object_marking_refs"]
        .as_array()?
        .iter()
        .find_map(|m| stix::tlp_of_marking(m.as_str()?))
}

/// One alert to issue from a report or a loose indicator.
#[derive(Debug)]
struct Planned {
    /// The STIX id it comes from (also its idempotency tag).
    source: String,
    request: Map<String, Value>,
}

/// What an import found in a bundle: alerts to issue and objects skipped (with why).
#[derive(Debug, Default)]
struct Plan {
    alerts: Vec<Planned>,
    skipped: Vec<(String, String)>,
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
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
fn plan(
    bundle: &Value,
    objects: &BTreeMap<String, Value>,
    a: &ImportArgs,
    now: u64,
) -> anyhow::Result<Plan> {
    let mut plan = Plan::default();
    let mut unmarked = Vec::new();
    let ext = stix::extension_id();
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
        for o in refs.iter().filter_map(|r| objects.get(r)) {
            if o["revoked"] == true {
                continue;
            }
            if let Some(ind) = indicator_of(o) {
                if !indicators.contains(&ind) {
                    indicators.push(ind);
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
        let Some(tlp) = marking_of(r).or(a.tlp) else {
            unmarked.push(id.clone());
            continue;
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
            plan.skipped.push((
                id.clone(),
                "pattern not supported (one equality on a known type)".into(),
            ));
            continue;
        };
        let Some(tlp) = marking_of(o).or(a.tlp) else {
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
    let objects = latest_objects(&bundle)?;
    let mut plan = plan(&bundle, &objects, a, crate::format::now_ms())?;
    let me = client.status().await?["public_key"]
        .as_str()
        .map(String::from)
        .unwrap_or_default();
    let ext = stix::extension_id();
    let mut issued = Vec::new();
    for p in std::mem::take(&mut plan.alerts) {
        // Alerts this node holds (its own export, or one it received) are not issued
        // again, nor those an earlier import issued.
        let held = objects
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
        return out.json_line(&json!({"issued": issued, "skipped": skipped}));
    }
    for (source, id) in &issued {
        out.line(&format!("issued {id} from {source}"))?;
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
