//! `tocsin trust …` and `tocsin peers`: the federation side of the CLI.

use std::io::Write;

use hyper::Method;
use serde_json::{json, Value};

use crate::cli::TrustCommand;
use crate::client::Client;
use crate::format::{format_time, now_ms, short};
use crate::output::Output;

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
                "{:<16} {:<10} {:<18} ADDRESSES",
                "KEY", "LEVEL", "NAME"
            ))?;
            for e in &entries {
                let addrs: Vec<&str> = e["addrs"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.line(&format!(
                    "{:<16} {:<10} {:<18} {}",
                    short(e["key"].as_str().unwrap_or(""), 16),
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
            reason,
        } => {
            let v = client
                .post(
                    "/v1/trust",
                    &json!({"key": key.to_string(), "level": level.as_str(), "addrs": addrs, "name": name, "reason": reason}),
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
                    out.line(&format!(
                        "{}  {}  {} -> {}  ({}){}{}",
                        format_time(r["at"].as_u64().unwrap_or(0)),
                        short(r["key"].as_str().unwrap_or(""), 16),
                        r["old"].as_str().unwrap_or("none"),
                        r["new"].as_str().unwrap_or("removed"),
                        r["source"].as_str().unwrap_or("?"),
                        who,
                        reason
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
    out.line(&format!(
        "{:<12} {:<14} {:<8} {:<5} {:>9} {:>6} {:>6} {:>7}  REJECTIONS / ADDRESS",
        "KEY", "NAME", "LEVEL", "CONN", "SEEN", "IN", "OUT", "PENALTY"
    ))?;
    let now = now_ms();
    for p in &peers {
        let seen = p["last_seen"].as_u64().map_or("-".to_string(), |t| {
            format!("{}s ago", now.saturating_sub(t) / 1000)
        });
        let rejections: Vec<String> = p["rejections"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        let penalty = match p["banned_until"].as_u64() {
            Some(until) if until > now => format!("banned {}s", (until - now) / 1000),
            _ => p["penalty"].to_string(),
        };
        let addrs: Vec<&str> = p["addrs"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.line(&format!(
            "{:<12} {:<14} {:<8} {:<5} {:>9} {:>6} {:>6} {:>7}  {} {}",
            short(p["key"].as_str().unwrap_or(""), 12),
            p["name"].as_str().unwrap_or(""),
            p["level"].as_str().unwrap_or("none"),
            if p["connected"] == true { "yes" } else { "no" },
            seen,
            p["alerts_in"],
            p["alerts_out"],
            penalty,
            rejections.join(","),
            addrs.join(" ")
        ))?;
    }
    Ok(())
}
