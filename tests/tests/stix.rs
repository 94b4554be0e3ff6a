//! STIX 2.1 export and import with the real `tocsin` CLI against real `tocsind`
//! processes: the bundle passes the OASIS validator in strict mode, a re-export is the
//! same bundle, updates and cancels are versions of one report, and export → import →
//! export keeps every indicator, TLP and validity, while a second import issues nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};
use tocsin_tests::{run, Fed};

/// Checks `file` with the OASIS validator in strict mode, or prints why it cannot.
fn validate(file: &Path) {
    tocsin_tests::validate_stix(file);
}

/// `tocsin export --format stix2.1 --out FILE ARGS…` on node `i`; the bundle.
fn export(fed: &Fed, i: usize, file: &Path, args: &[&str]) -> Value {
    let (_, stderr, code) = run(fed
        .tocsin(i)
        .args(["export", "--format", "stix2.1", "--out"])
        .arg(file)
        .args(args));
    assert_eq!(code, 0, "export failed: {stderr}");
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

fn objects_of<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == kind)
        .collect()
}

/// What an analyst would compare between two exports of the same alerts: per report
/// title (latest, live versions), its TLP marking, its indicator patterns with their
/// validity, and its CVEs.
fn content(bundle: &Value) -> BTreeMap<String, (Value, BTreeSet<(String, String)>)> {
    let by_id: BTreeMap<&str, &Value> = bundle["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o))
        .collect();
    let mut latest: BTreeMap<&str, &Value> = BTreeMap::new();
    for r in objects_of(bundle, "report") {
        let id = r["id"].as_str().unwrap();
        if latest
            .get(id)
            .is_none_or(|old| r["modified"].as_str() > old["modified"].as_str())
        {
            latest.insert(id, r);
        }
    }
    latest
        .values()
        .filter(|r| r["revoked"] != true)
        .map(|r| {
            let things = r["object_refs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|id| by_id.get(id.as_str().unwrap()))
                .filter_map(|o| match o["type"].as_str() {
                    Some("indicator") => Some((
                        o["pattern"].as_str().unwrap().to_string(),
                        o["valid_until"].to_string(),
                    )),
                    Some("vulnerability") => {
                        Some((o["name"].as_str().unwrap().to_string(), String::new()))
                    }
                    _ => None,
                })
                .collect();
            (
                r["name"].as_str().unwrap().to_string(),
                (r["object_marking_refs"].clone(), things),
            )
        })
        .collect()
}

/// Alerts of every TLP and indicator type, an update and a cancel, on node 0.
async fn issue_samples(fed: &Fed) -> (String, String) {
    let expires = tocsin_tools::format::now_ms() + 86_400_000;
    let recipient = fed.key(1);
    fed.issue(
        0,
        json!({"severity": "critical", "tlp": "CLEAR", "title": "Botnet C2 'Nightjar'",
               "text": "Block these.", "tags": ["botnet", "c2"],
               "references": ["https://cert.example/a/1"],
               "indicators": ["ipv4:192.0.2.7", "domain:nightjar.example",
                              "url:https://nightjar.example/gate.php?id='1'",
                              "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                              "cve:CVE-2026-1234", "other:AS64500"],
               "expires_at": expires}),
    )
    .await;
    fed.issue(
        0,
        json!({"severity": "medium", "tlp": "GREEN", "title": "Phishing kit",
               "indicators": ["email:billing@phish.example", "md5:900150983cd24fb0d6963f7d28e17f72",
                              "sha1:a9993e364706816aba3e25717850c26c9cd0d89d",
                              "cidr:198.51.100.0/24", "ipv6:2001:db8::66"]}),
    )
    .await;
    fed.issue(
        0,
        json!({"severity": "high", "tlp": "AMBER+STRICT", "title": "Insider tooling",
               "indicators": ["domain:tooling.example"]}),
    )
    .await;
    fed.issue(
        0,
        json!({"severity": "high", "tlp": "RED", "title": "Ongoing intrusion",
               "recipients": [recipient], "indicators": ["ipv4:203.0.113.9"]}),
    )
    .await;
    let first = fed
        .issue(
            0,
            json!({"severity": "low", "tlp": "AMBER", "title": "Scanner v1",
                   "indicators": ["ipv4:198.51.100.20"]}),
        )
        .await;
    let client = fed.cluster.nodes[0].client();
    let update = client
        .post(
            &format!("/v1/alerts/{first}/update"),
            &json!({"title": "Scanner v2", "indicators": ["ipv4:198.51.100.21"]}),
        )
        .await
        .unwrap();
    let doomed = fed
        .issue(
            0,
            json!({"severity": "info", "tlp": "CLEAR", "title": "False alarm",
                   "indicators": ["domain:harmless.example"]}),
        )
        .await;
    client
        .post(
            &format!("/v1/alerts/{doomed}/cancel"),
            &json!({"reason": "not malicious"}),
        )
        .await
        .unwrap();
    (update["id"].as_str().unwrap().to_string(), doomed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_valid_strict_stix_deterministic_and_versions_updates_and_cancels() {
    let fed = Fed::start(2, vec![]).await;
    let (update, cancelled) = issue_samples(&fed).await;
    let file = fed.dir.path().join("export.json");
    let bundle = export(&fed, 0, &file, &[]);
    validate(&file);

    // The same alerts export as the same bundle, byte for byte.
    let again = fed.dir.path().join("again.json");
    export(&fed, 0, &again, &[]);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&again).unwrap(),
        "a re-export must be the same bundle"
    );

    // Every TLP used is marked with the OASIS TLP 2.0 marking definition.
    let markings: BTreeSet<&str> = objects_of(&bundle, "marking-definition")
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = [
        "TLP:CLEAR",
        "TLP:GREEN",
        "TLP:AMBER",
        "TLP:AMBER+STRICT",
        "TLP:RED",
    ]
    .into();
    assert_eq!(markings, expected);
    let red = objects_of(&bundle, "report")
        .into_iter()
        .find(|r| r["name"] == "Ongoing intrusion")
        .unwrap();
    assert_eq!(
        red["object_marking_refs"],
        json!(["marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"])
    );
    let ext = tocsin_proto::stix::extension_id();
    assert_eq!(red["extensions"][&ext]["recipients"], json!([fed.key(1)]));
    assert_eq!(red["extensions"][&ext]["origin"], json!(fed.key(0)));
    assert_eq!(
        red["extensions"][&ext]["signature"].as_str().unwrap().len(),
        128
    );

    // Patterns for each indicator type; the CVE is a vulnerability; `other` stays in
    // the extension.
    let patterns: BTreeSet<&str> = objects_of(&bundle, "indicator")
        .iter()
        .map(|i| i["pattern"].as_str().unwrap())
        .collect();
    for p in [
        "[ipv4-addr:value = '192.0.2.7']",
        "[domain-name:value = 'nightjar.example']",
        "[url:value = 'https://nightjar.example/gate.php?id=\\'1\\'']",
        "[file:hashes.'SHA-256' = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08']",
        "[email-addr:value = 'billing@phish.example']",
        "[file:hashes.MD5 = '900150983cd24fb0d6963f7d28e17f72']",
        "[file:hashes.'SHA-1' = 'a9993e364706816aba3e25717850c26c9cd0d89d']",
        "[ipv4-addr:value = '198.51.100.0/24']",
        "[ipv6-addr:value = '2001:db8::66']",
    ] {
        assert!(patterns.contains(p), "missing pattern {p} in {patterns:?}");
    }
    let vulns = objects_of(&bundle, "vulnerability");
    assert_eq!(vulns.len(), 1);
    assert_eq!(
        vulns[0]["external_references"],
        json!([{"source_name": "cve", "external_id": "CVE-2026-1234"}])
    );
    let botnet = objects_of(&bundle, "report")
        .into_iter()
        .find(|r| r["name"] == "Botnet C2 'Nightjar'")
        .unwrap();
    assert_eq!(
        botnet["extensions"][&ext]["other_indicators"],
        json!([{"type": "other", "value": "AS64500"}])
    );
    assert_eq!(botnet["labels"], json!(["botnet", "c2"]));

    // The update is a newer version of the original's report.
    let versions: Vec<&Value> = objects_of(&bundle, "report")
        .into_iter()
        .filter(|r| r["name"] == "Scanner v1" || r["name"] == "Scanner v2")
        .collect();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        versions[0]["id"], versions[1]["id"],
        "one report, two versions"
    );
    let v2 = versions.iter().find(|r| r["name"] == "Scanner v2").unwrap();
    let v1 = versions.iter().find(|r| r["name"] == "Scanner v1").unwrap();
    assert!(v2["modified"].as_str() > v1["modified"].as_str());
    assert_eq!(v2["created"], v1["created"]);
    assert_eq!(v2["extensions"][&ext]["alert_id"], json!(update));

    // The cancelled alert is revoked; its cancel is not a report of its own.
    let revoked = objects_of(&bundle, "report")
        .into_iter()
        .find(|r| r["name"] == "False alarm")
        .unwrap();
    assert_eq!(revoked["revoked"], true);
    assert_eq!(revoked["extensions"][&ext]["alert_id"], json!(cancelled));
    assert_eq!(objects_of(&bundle, "report").len(), 7);

    // The list filters choose what is exported.
    let green = export(
        &fed,
        0,
        &fed.dir.path().join("green.json"),
        &["--tlp", "green"],
    );
    let names: Vec<&str> = objects_of(&green, "report")
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Phishing kit"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_export_keeps_indicators_tlp_and_validity_and_reimport_issues_nothing() {
    let fed = Fed::start(2, vec![]).await;
    issue_samples(&fed).await;
    let exported = fed.dir.path().join("a.json");
    let a = export(&fed, 0, &exported, &[]);

    // Node 2 imports it: one alert per live report (five: the revoked one is skipped,
    // and the older version of the updated one is not imported on its own).
    let key = fed.key(0);
    let (stdout, stderr, code) = run(fed
        .tocsin(1)
        .args([
            "--json",
            "import",
            "--format",
            "stix2.1",
            "--recipient",
            &key,
        ])
        .arg(&exported));
    assert_eq!(code, 0, "import failed: {stdout}{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["issued"].as_array().unwrap().len(), 5, "{summary}");
    assert!(summary["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["reason"] == "revoked"));

    let b_file = fed.dir.path().join("b.json");
    let b = export(&fed, 1, &b_file, &[]);
    validate(&b_file);
    assert_eq!(
        content(&a),
        content(&b),
        "export → import → export must keep each report's indicators, TLP and validity"
    );
    // Node 2 issued them: its key is the origin.
    for r in objects_of(&b, "report") {
        assert_eq!(
            r["extensions"][tocsin_proto::stix::extension_id()]["origin"],
            json!(fed.key(1))
        );
    }

    // Importing the same bundle again issues nothing, and says why.
    let (stdout, stderr, code) = run(fed
        .tocsin(1)
        .args(["import", "--format", "stix2.1", "--recipient", &key])
        .arg(&exported));
    assert_eq!(code, 0, "re-import failed: {stdout}{stderr}");
    assert!(!stdout.contains("issued "), "{stdout}");
    assert_eq!(stdout.matches("already imported as").count(), 5, "{stdout}");
    // The origin's own export re-imported at the origin: it holds every alert.
    let (stdout, _, code) = run(fed
        .tocsin(0)
        .args(["import", "--format", "stix2.1", "--recipient", &key])
        .arg(&exported));
    assert_eq!(code, 0);
    assert!(!stdout.contains("issued "), "{stdout}");
    assert_eq!(stdout.matches("is already held").count(), 5, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_without_tlp_markings_is_refused_unless_tlp_is_given() {
    let fed = Fed::start(1, vec![]).await;
    let file = fed.dir.path().join("unmarked.json");
    let bundle = json!({
        "type": "bundle",
        "id": "bundle--8d5ab7b4-9b0b-4b5e-a0a7-4c1b0a4b0c11",
        "objects": [{
            "type": "indicator", "spec_version": "2.1",
            "id": "indicator--0f5d2a35-4bd5-4b1a-9d0e-3c8b9d2e7f10",
            "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z",
            "name": "Bad host", "pattern": "[domain-name:value = 'bad.example']",
            "pattern_type": "stix", "valid_from": "2026-11-01T00:00:00Z"
        }, {
            "type": "indicator", "spec_version": "2.1",
            "id": "indicator--1f5d2a35-4bd5-4b1a-9d0e-3c8b9d2e7f11",
            "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z",
            "pattern": "[process:name = 'evil.exe']",
            "pattern_type": "stix", "valid_from": "2026-11-01T00:00:00Z"
        }]
    });
    std::fs::write(&file, bundle.to_string()).unwrap();
    let (stdout, stderr, code) = run(fed
        .tocsin(0)
        .args(["import", "--format", "stix2.1"])
        .arg(&file));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("no TLP marking") && stderr.contains("--tlp"),
        "{stderr}"
    );
    let held = fed.cluster.nodes[0]
        .client()
        .get("/v1/alerts")
        .await
        .unwrap();
    assert_eq!(
        held["alerts"],
        json!([]),
        "nothing is issued from a refused bundle"
    );

    // More alerts than --max-alerts: refused whole.
    let (stdout, stderr, code) = run(fed
        .tocsin(0)
        .args([
            "import",
            "--format",
            "stix2.1",
            "--tlp",
            "green",
            "--max-alerts",
            "0",
        ])
        .arg(&file));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("would issue 1 alerts, more than --max-alerts 0: nothing was issued"),
        "{stderr}"
    );
    let (stdout, stderr, code) = run(fed
        .tocsin(0)
        .args(["import", "--format", "stix2.1", "--tlp", "green"])
        .arg(&file));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("issued "), "{stdout}");
    assert!(
        stdout.contains(
            "skipped indicator--1f5d2a35-4bd5-4b1a-9d0e-3c8b9d2e7f11: pattern \"[process:name = 'evil.exe']\" is not one equality"
        ),
        "{stdout}"
    );
    let held = fed.cluster.nodes[0]
        .client()
        .get("/v1/alerts")
        .await
        .unwrap();
    let alert = &held["alerts"][0]["alert"];
    assert_eq!(alert["tlp"], "GREEN");
    assert_eq!(alert["title"], "Bad host");
    assert_eq!(
        alert["indicators"],
        json!([{"type": "domain", "value": "bad.example"}])
    );
    assert!(alert["tags"].as_array().unwrap().contains(&json!(
        "stix:indicator--0f5d2a35-4bd5-4b1a-9d0e-3c8b9d2e7f10"
    )));

    // Not a bundle at all: a clear error.
    std::fs::write(&file, "{\"type\": \"report\"}").unwrap();
    let (_, stderr, code) = run(fed
        .tocsin(0)
        .args(["import", "--format", "stix2.1"])
        .arg(&file));
    assert_eq!(code, 1);
    assert!(stderr.contains("not a STIX 2.1 bundle"), "{stderr}");
}
