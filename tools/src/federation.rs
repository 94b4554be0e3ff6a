//! `tocsin trust …` and `tocsin peers`: the federation side of the CLI.

use std::io::Write;

use hyper::Method;
use serde_json::{json, Value};

use anyhow::Context;

use crate::cli::{RevocationCommand, TrustCommand};
use crate::client::Client;
use crate::format::{format_time, now_ms, sanitize, short};
use crate::output::Output;

/// `tocsin ack ID [--by NAME]`.
pub async fn ack<W: Write>(
    client: &Client,
    json_out: bool,
    id: &tocsin_proto::AlertId,
    by: Option<String>,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let body = match by {
        Some(by) => json!({ "by": by }),
        None => json!({}),
    };
    let v = client.post(&format!("/v1/alerts/{id}/ack"), &body).await?;
    if json_out {
        return out.json_line(&v);
    }
    out.line(&format!(
        "acknowledged by {} at {}; the receipt goes to the origin {}",
        sanitize(v["acked_by"].as_str().unwrap_or("?"), false),
        format_time(v["acked_at"].as_u64().unwrap_or(0)),
        short(v["origin"].as_str().unwrap_or(""), 16)
    ))
}

/// `tocsin sighting ID|INDICATOR --count N [--note TEXT]`.
pub async fn sighting<W: Write>(
    client: &Client,
    json_out: bool,
    what: &str,
    count: u32,
    note: String,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let (id, indicator) = match tocsin_proto::AlertId::from_hex(what) {
        Ok(id) => (id.to_string(), None),
        Err(_) => {
            let i = tocsin_proto::Indicator::parse(what).map_err(|e| {
                anyhow::anyhow!(
                    "{what:?} is neither an alert id (64 hex) nor an indicator (TYPE:VALUE): {e}"
                )
            })?;
            let q = crate::client::ListQuery {
                indicator: Some(i.value.clone()),
                limit: Some(1),
                ..Default::default()
            };
            let q = format!("/v1/alerts{}", q.to_query_string());
            let page = client.get(&q).await?;
            let id = page["alerts"][0]["id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no stored alert has the indicator {what}"))?
                .to_string();
            (id, Some(format!("{}:{}", i.kind.as_str(), i.value)))
        }
    };
    let mut body = json!({"count": count, "note": note});
    if let Some(i) = indicator {
        body["indicator"] = json!(i);
    }
    let v = client
        .post(&format!("/v1/alerts/{id}/sightings"), &body)
        .await?;
    if json_out {
        return out.json_line(&v);
    }
    out.line(&format!(
        "sighting of {} sent (an origin that is this node's peer and away gets it when it connects again); {} reported by {} observer(s) so far (this one may not be counted yet)",
        short(&id, 12),
        v["total"].as_u64().unwrap_or(0),
        v["observers"].as_array().map_or(0, Vec::len)
    ))
}

/// `tocsin sightings ID`.
pub async fn sightings<W: Write>(
    client: &Client,
    json_out: bool,
    id: &tocsin_proto::AlertId,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let v = client.get(&format!("/v1/alerts/{id}/sightings")).await?;
    if json_out {
        return out.json_line(&v);
    }
    out.line(&format!(
        "{:<16} {:<18} {:>8} {:<20} {:<20} NOTE",
        "OBSERVER", "NAME", "COUNT", "FIRST SEEN", "LAST SEEN"
    ))?;
    for r in v["observers"].as_array().into_iter().flatten() {
        out.line(&format!(
            "{:<16} {:<18} {:>8} {:<20} {:<20} {}",
            short(r["observer"].as_str().unwrap_or(""), 16),
            sanitize(r["name"].as_str().unwrap_or(""), false),
            r["count"].as_u64().unwrap_or(0),
            format_time(r["first_seen"].as_u64().unwrap_or(0)),
            format_time(r["last_seen"].as_u64().unwrap_or(0)),
            sanitize(r["note"].as_str().unwrap_or(""), false)
        ))?;
    }
    out.line(&format!(
        "total {} from {} agencies",
        v["total"].as_u64().unwrap_or(0),
        v["agencies"].as_u64().unwrap_or(0)
    ))
}

/// `tocsin receipts ID`.
pub async fn receipts<W: Write>(
    client: &Client,
    json_out: bool,
    id: &tocsin_proto::AlertId,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let v = client.get(&format!("/v1/alerts/{id}/receipts")).await?;
    if json_out {
        return out.json_line(&v);
    }
    let rows = v["recipients"].as_array().cloned().unwrap_or_default();
    out.line(&format!(
        "{:<16} {:<18} {:<13} {:<20} {:<20} BY",
        "RECIPIENT", "NAME", "STATE", "RECEIVED", "ACKNOWLEDGED"
    ))?;
    let time = |x: &Value| x.as_u64().map(format_time).unwrap_or_default();
    for r in &rows {
        out.line(&format!(
            "{:<16} {:<18} {:<13} {:<20} {:<20} {}",
            short(r["receiver"].as_str().unwrap_or(""), 16),
            sanitize(r["name"].as_str().unwrap_or(""), false),
            r["state"].as_str().unwrap_or("?").replace('_', " "),
            time(&r["received_at"]),
            time(&r["acked_at"]),
            sanitize(r["acked_by"].as_str().unwrap_or(""), false)
        ))?;
    }
    if let Some(deadline) = v["ack_deadline"].as_u64() {
        out.line(&format!(
            "acknowledgements due by {}{}",
            format_time(deadline),
            if v["overdue"].as_bool() == Some(true) {
                ": OVERDUE"
            } else {
                ""
            }
        ))?;
    }
    Ok(())
}

/// Runs a `tocsin revocation` subcommand.
pub async fn revocation<W: Write>(
    client: &Client,
    json_out: bool,
    cmd: RevocationCommand,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let line = |r: &Value| {
        format!(
            "{:<16} {:<16} {:<20} {:<20} {}",
            short(r["node"].as_str().unwrap_or(""), 16),
            short(r["org"].as_str().unwrap_or(""), 16),
            sanitize(r["agency"].as_str().unwrap_or(""), false),
            format_time(r["revoked_at"].as_u64().unwrap_or(0)),
            sanitize(r["reason"].as_str().unwrap_or(""), false)
        )
    };
    match cmd {
        RevocationCommand::Add { revocation, cert } => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let body = json!({
                "revocation": hex::encode(read(&revocation)?),
                "cert": hex::encode(read(&cert)?),
            });
            let v = client.post("/v1/revocations", &body).await?;
            if json_out {
                return out.json_line(&v);
            }
            out.line(&format!(
                "node {} revoked by {} from {}; sent to every peer",
                v["node"].as_str().unwrap_or("?"),
                sanitize(v["agency"].as_str().unwrap_or("?"), false),
                format_time(v["revoked_at"].as_u64().unwrap_or(0))
            ))
        }
        RevocationCommand::List => {
            let v = client.get("/v1/revocations").await?;
            let rows = v["revocations"].as_array().cloned().unwrap_or_default();
            if json_out {
                for r in &rows {
                    out.json_line(r)?;
                }
                return Ok(());
            }
            out.line(&format!(
                "{:<16} {:<16} {:<20} {:<20} REASON",
                "NODE", "ORG", "AGENCY", "REVOKED AT"
            ))?;
            for r in &rows {
                out.line(&line(r))?;
            }
            Ok(())
        }
    }
}

/// Runs a `tocsin trust` subcommand.
pub async fn trust<W: Write>(
    client: &Client,
    json_out: bool,
    cmd: TrustCommand,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    match cmd {
        TrustCommand::List => {
            let v = client.get("/v1/trust").await?;
            let entries = v["entries"].as_array().cloned().unwrap_or_default();
            if json_out {
                for e in &entries {
                    out.json_line(e)?;
                }
                return Ok(());
            }
            out.line(&format!(
                "{:<16} {:<5} {:<10} {:<18} ADDRESSES",
                "KEY", "KIND", "LEVEL", "NAME"
            ))?;
            for e in &entries {
                let addrs: Vec<&str> = e["addrs"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let kind = if e["org"].as_bool() == Some(true) {
                    "org"
                } else {
                    "node"
                };
                out.line(&format!(
                    "{:<16} {:<5} {:<10} {:<18} {}",
                    short(e["key"].as_str().unwrap_or(""), 16),
                    kind,
                    e["level"].as_str().unwrap_or("?"),
                    e["name"].as_str().unwrap_or(""),
                    addrs.join(" ")
                ))?;
            }
            Ok(())
        }
        TrustCommand::Add {
            key,
            level,
            addrs,
            name,
            org,
            reason,
        } => {
            let v = client
                .post(
                    "/v1/trust",
                    &json!({"key": key.to_string(), "level": level.as_str(), "addrs": addrs, "name": name, "org": org, "reason": reason}),
                )
                .await?;
            changed(&v, json_out, out)
        }
        TrustCommand::Set {
            key,
            level,
            addrs,
            name,
            reason,
        } => {
            let mut patch = serde_json::Map::new();
            if let Some(l) = level {
                patch.insert("level".into(), json!(l.as_str()));
            }
            if !addrs.is_empty() {
                patch.insert("addrs".into(), json!(addrs));
            }
            if let Some(n) = name {
                patch.insert("name".into(), json!(n));
            }
            if patch.is_empty() {
                anyhow::bail!("nothing to change: give --level, --addr or --name");
            }
            if let Some(r) = reason {
                patch.insert("reason".into(), json!(r));
            }
            let v = client
                .call(
                    Method::PUT,
                    &format!("/v1/trust/{key}"),
                    Some(&Value::Object(patch)),
                )
                .await?;
            changed(&v, json_out, out)
        }
        TrustCommand::Remove { key, reason } => {
            let body = reason.map(|r| json!({ "reason": r }));
            let v = client
                .call(Method::DELETE, &format!("/v1/trust/{key}"), body.as_ref())
                .await?;
            changed(&v, json_out, out)
        }
        TrustCommand::Audit => {
            let v = client.get("/v1/trust-audit").await?;
            for r in v["records"].as_array().into_iter().flatten() {
                if json_out {
                    out.json_line(r)?;
                } else {
                    let who = r["who"]
                        .as_str()
                        .filter(|w| !w.is_empty())
                        .map(|w| format!("  by {w}"))
                        .unwrap_or_default();
                    let reason = r["reason"]
                        .as_str()
                        .map(|x| format!("  \"{x}\""))
                        .unwrap_or_default();
                    let kind = match r["org"][1].as_bool() {
                        Some(true) => "  (now an org key)",
                        Some(false) => "  (no longer an org key)",
                        None => "",
                    };
                    out.line(&format!(
                        "{}  {}  {} -> {}  ({}){}{}{}",
                        format_time(r["at"].as_u64().unwrap_or(0)),
                        short(r["key"].as_str().unwrap_or(""), 16),
                        r["old"].as_str().unwrap_or("none"),
                        r["new"].as_str().unwrap_or("removed"),
                        r["source"].as_str().unwrap_or("?"),
                        kind,
                        who,
                        sanitize(&reason, false)
                    ))?;
                }
            }
            Ok(())
        }
    }
}

fn changed<W: Write>(v: &Value, json_out: bool, out: &mut Output<W>) -> anyhow::Result<()> {
    if json_out {
        return out.json_line(v);
    }
    out.line(&format!(
        "{}: {} -> {}",
        short(v["key"].as_str().unwrap_or(""), 16),
        v["old"].as_str().unwrap_or("none"),
        v["new"].as_str().unwrap_or("removed")
    ))
}

/// Runs `tocsin peers`.
pub async fn peers<W: Write>(
    client: &Client,
    json_out: bool,
    out: &mut Output<W>,
) -> anyhow::Result<()> {
    let v = client.get("/v1/peers").await?;
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    if json_out {
        for p in &peers {
            out.json_line(p)?;
        }
        return Ok(());
    }
    out.line(peers_table(&peers, now_ms()).trim_end())?;
    Ok(())
}

/// The `tocsin peers` table: one row per peer, columns aligned by `comfy-table`, no
/// borders (so that it greps and cuts like any command's output). Every text that a
/// peer or an operator chose (names, addresses, reasons) is made terminal-safe.
pub fn peers_table(peers: &[Value], now: u64) -> String {
    use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table};
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "KEY",
            "NAME",
            "LEVEL",
            "CONN",
            "SEEN",
            "IN",
            "OUT",
            "LAG",
            "PENALTY",
            "REJECTIONS",
            "ADDRESS",
        ]);
    for p in peers {
        let text = |k: &str| sanitize(p[k].as_str().unwrap_or(""), false);
        let seen = p["last_seen"].as_u64().map_or("-".to_string(), |t| {
            format!("{}s ago", now.saturating_sub(t) / 1000)
        });
        let rejections: Vec<String> = p["rejections"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| sanitize(&format!("{k}={v}"), false))
                    .collect()
            })
            .unwrap_or_default();
        let penalty = match p["banned_until"].as_u64() {
            Some(until) if until > now => format!("banned {}s", (until - now) / 1000),
            _ => p["penalty"].to_string(),
        };
        let addrs: Vec<String> = p["addrs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| sanitize(s, false))
                    .collect()
            })
            .unwrap_or_default();
        let level = p["level"].as_str().unwrap_or("none");
        t.add_row([
            short(p["key"].as_str().unwrap_or(""), 12).to_string(),
            text("name"),
            sanitize(level, false),
            if p["connected"] == true { "yes" } else { "no" }.to_string(),
            seen,
            p["alerts_in"].to_string(),
            p["alerts_out"].to_string(),
            p["catch_up_lag"]
                .as_u64()
                .map_or("-".into(), |l| l.to_string()),
            penalty,
            if rejections.is_empty() {
                "-".into()
            } else {
                rejections.join(",")
            },
            if addrs.is_empty() {
                "-".into()
            } else {
                addrs.join(" ")
            },
        ]);
    }
    for i in [5, 6, 7, 8] {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    if let Some(c) = t.column_mut(1) {
        c.set_constraint(ColumnConstraint::UpperBoundary(comfy_table::Width::Fixed(
            24,
        )));
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod table_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peer_rows_line_up_and_names_are_terminal_safe() {
        let peers = vec![
            json!({"key": "a".repeat(64), "name": "CERT-A", "level": "partner", "connected": true,
                   "last_seen": 9_000, "alerts_in": 12345, "alerts_out": 7, "catch_up_lag": 0,
                   "penalty": 0, "rejections": {}, "addrs": ["/ip4/192.0.2.1/tcp/7400"]}),
            json!({"key": "b".repeat(64), "name": "evil\u{1b}[31m\u{202e}x", "level": "member",
                   "connected": false, "alerts_in": 1, "alerts_out": 0, "penalty": 40,
                   "rejections": {"bad_signature": 2}, "addrs": []}),
        ];
        let text = peers_table(&peers, 10_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with(" KEY") || lines[0].starts_with("KEY"),
            "{text}"
        );
        // Every column starts at the same offset on every line.
        let col = |l: &str, what: &str| l[..l.find(what).unwrap()].chars().count();
        assert_eq!(col(lines[0], "LEVEL"), col(lines[1], "partner"));
        assert_eq!(col(lines[0], "LEVEL"), col(lines[2], "member"));
        assert_eq!(col(lines[0], "CONN"), col(lines[1], "yes"));
        assert!(lines[1].contains("12345") && lines[1].contains("1s ago"));
        assert!(lines[2].contains("bad_signature=2"));
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
    }
}
