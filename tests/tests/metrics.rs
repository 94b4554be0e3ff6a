//! `/metrics` of a real node after an alert travelled to it: the families an on-call
//! engineer scrapes are there with the right names, types and values, and the text
//! parses with the reference OpenMetrics parser (Python `prometheus_client`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use tocsin_proto::TrustLevel;
use tocsin_tests::{alert, python_tool, Fed};

/// The reference parser (pinned).
const PARSER: &str = "prometheus-client==0.21.1";

/// Parses `text` with `prometheus_client`'s strict OpenMetrics parser; returns
/// `{family: type}`, or why the parser is not available.
fn openmetrics_families(text: &str) -> Result<BTreeMap<String, String>, String> {
    let venv = python_tool("openmetrics", &[PARSER])?;
    let script = "import sys, json\n\
                  from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
                  fams = {f.name: f.type for f in text_string_to_metric_families(sys.stdin.read())}\n\
                  print(json.dumps(fams))\n";
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// The value of the sample line that starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_the_store_the_peers_and_delivery_and_parse_as_openmetrics() {
    let fed = Fed::line(2, TrustLevel::Member).await;
    let id = fed.issue(0, alert("GREEN", "metrics")).await;
    fed.wait_for(1, &id).await;
    let text = fed.cluster.nodes[1]
        .client()
        .get_text("/metrics")
        .await
        .unwrap();

    // Every family of ours is named tocsin_… (none with a leading underscore).
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(
            name.starts_with("tocsin_") || name.starts_with("libp2p_"),
            "{line}"
        );
    }
    assert!(text.ends_with("# EOF\n"), "one EOF, at the end");
    assert_eq!(text.matches("# EOF").count(), 1);

    let one = |prefix: &str| {
        sample(&text, prefix).unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
    };
    assert_eq!(one("tocsin_alerts_received_total "), 1.0);
    assert_eq!(one("tocsin_alerts_stored_total "), 1.0);
    assert_eq!(one("tocsin_delivery_age_seconds_count "), 1.0);
    assert!(one("tocsin_delivery_age_seconds_sum ") < 15.0);
    assert!(one("tocsin_store_commit_seconds_count ") >= 1.0);
    assert_eq!(one("tocsin_store_batch_alerts_sum "), 1.0);
    assert_eq!(one("tocsin_store_degraded "), 0.0);
    let key1 = fed.key(1);
    assert_eq!(
        one(&format!(
            "tocsin_build_info{{version=\"{}\",public_key=\"{key1}\"}} ",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    // Node 1's row for node 0, which sent it the alert.
    let peer = format!("{{peer=\"{}\"", &fed.key(0)[..8]);
    assert_eq!(one(&format!("tocsin_peer_connected{peer}")), 1.0);
    assert_eq!(one(&format!("tocsin_peer_alerts_in_total{peer}")), 1.0);
    assert!(one(&format!("tocsin_peer_bytes_in_total{peer}")) > 0.0);
    assert!(one(&format!("tocsin_peer_bytes_out_total{peer}")) > 0.0);
    assert_eq!(one(&format!("tocsin_peer_penalty{peer}")), 0.0);
    assert_eq!(one(&format!("tocsin_peer_catch_up_lag{peer}")), 0.0);
    // Nothing waits to be written to an idle peer.
    assert_eq!(one(&format!("tocsin_peer_queue_depth{peer}")), 0.0);

    // `/v1/peers` shows the new fields too.
    let peers = fed.peers(1).await;
    let row: &Value = peers.iter().find(|p| p["key"] == fed.key(0)).unwrap();
    assert_eq!(row["catch_up_lag"], 0);
    assert_eq!(row["queue_depth"], 0);
    assert!(row["bytes_out"].as_u64().unwrap() > 0);

    // Every family the example alert rules and the Grafana dashboard use is served.
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring");
    for file in ["prometheus-rules.yml", "grafana-dashboard.json"] {
        let body = std::fs::read_to_string(deploy.join(file)).unwrap();
        let mut used = 0;
        for word in body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let Some(rest) = word.strip_prefix("tocsin_") else {
                continue;
            };
            if rest.is_empty() {
                continue;
            }
            let family = ["_bucket", "_count", "_sum", "_total", "_info"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            assert!(
                served.contains(family),
                "{file} uses {word}, which /metrics does not serve ({served:?})"
            );
            used += 1;
        }
        assert!(used > 10, "{file} uses only {used} tocsin metrics");
    }

    match openmetrics_families(&text) {
        Ok(families) => {
            let expect = [
                ("tocsin_store_commit_seconds", "histogram"),
                ("tocsin_delivery_age_seconds", "histogram"),
                ("tocsin_alerts_stored", "counter"),
                ("tocsin_peer_connected", "gauge"),
                ("tocsin_peer_rejections", "counter"),
                ("tocsin_build", "info"),
            ];
            for (name, kind) in expect {
                assert_eq!(
                    families.get(name).map(String::as_str),
                    Some(kind),
                    "{name} in {families:?}"
                );
            }
        }
        Err(why) => eprintln!("SKIPPED the OpenMetrics parser check: {why}"),
    }
}
