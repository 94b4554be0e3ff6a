//! TAXII 2.1 on a real `tocsind`, read with raw HTTP as the spec writes it and with the
//! reference Python client (`taxii2-client`): each client sees exactly the alerts at or
//! under its TLP ceiling, for every label; credentials do not cross between TAXII and
//! the control API; and paging a collection while alerts arrive loses nothing and
//! repeats nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tocsin_tests::{python_tool, run, Fed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "taxii-test-api-token-0123456789";
const MEDIA: &str = "application/taxii+json;version=2.1";
/// Every TLP label, widest audience first.
const LABELS: [&str; 5] = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"];
const WAIT: Duration = Duration::from_secs(15);

fn secret(label: &str) -> String {
    format!(
        "taxii-secret-{}-0123456789",
        label.replace('+', "-").to_lowercase()
    )
}

fn client_name(label: &str) -> String {
    format!("reader-{}", label.replace('+', "-").to_lowercase())
}

/// Two nodes (the second only gives RED alerts a recipient); node 1 serves TAXII on
/// TCP to one client per TLP ceiling.
async fn start() -> (Fed, SocketAddr) {
    let mut fed = Fed::start(2, vec![]).await;
    let path = fed.cluster.nodes[0].data_dir.join("config.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace(
        "[api]\n",
        &format!("[api]\ntcp = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    );
    text.push_str("\n[taxii]\ntitle = \"Test CERT\"\n");
    for label in LABELS {
        text.push_str(&format!(
            "[[taxii.clients]]\nname = \"{}\"\nsecret = \"{}\"\nmax_tlp = \"{label}\"\n",
            client_name(label),
            secret(label)
        ));
    }
    std::fs::write(&path, text).unwrap();
    fed.restart(0).await;
    let status = fed.cluster.nodes[0].client().status().await.unwrap();
    let tcp = status["api_tcp"].as_str().unwrap().parse().unwrap();
    (fed, tcp)
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// `GET path` with an `Authorization` header (if any) and `Accept`.
async fn get(addr: SocketAddr, path: &str, auth: Option<&str>, accept: &str) -> Answer {
    let auth = auth
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: tocsind\r\naccept: {accept}\r\n{auth}connection: close\r\n\r\n"
    );
    let mut io = TcpStream::connect(addr).await.unwrap();
    io.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut buf))
        .await
        .expect("no answer in time")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

fn bearer(label: &str) -> String {
    format!("Bearer {}", secret(label))
}

/// `GET` as the client with this ceiling; asserts a 200 in the TAXII media type.
async fn taxii(addr: SocketAddr, label: &str, path: &str) -> Answer {
    let a = get(addr, path, Some(&bearer(label)), MEDIA).await;
    assert_eq!(a.status, 200, "{path}: {a:?}");
    assert_eq!(a.headers["content-type"], MEDIA, "{path}");
    a
}

/// The collections a client lists: alias -> id.
async fn collections(addr: SocketAddr, label: &str) -> BTreeMap<String, String> {
    let v = taxii(addr, label, "/taxii2/api/collections/").await.json();
    v["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["can_read"], true);
            assert_eq!(c["can_write"], false);
            (
                c["alias"].as_str().unwrap().to_string(),
                c["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every object of a collection, page by page (`limit`, `next`), with `query` added.
async fn read_all(
    addr: SocketAddr,
    label: &str,
    id: &str,
    query: &str,
    limit: usize,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..10_000 {
        let mut path = format!("/taxii2/api/collections/{id}/objects/?limit={limit}{query}");
        if let Some(n) = &next {
            path.push_str(&format!("&next={n}"));
        }
        let page = taxii(addr, label, &path).await.json();
        let objects = page["objects"].as_array().cloned().unwrap_or_default();
        assert!(objects.len() <= limit, "a page over its limit: {page}");
        out.extend(objects);
        if page["more"] != true {
            assert!(page.get("next").is_none(), "{page}");
            return out;
        }
        next = Some(page["next"].as_str().unwrap().to_string());
    }
    panic!("the collection never ended");
}

/// The Tocsin alert ids of the reports among `objects`, with each report's TLP.
fn report_tlps(objects: &[Value]) -> BTreeMap<String, String> {
    objects
        .iter()
        .filter(|o| o["type"] == "report")
        .map(|o| {
            let ext = o["extensions"]
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap();
            (
                ext["alert_id"].as_str().unwrap().to_string(),
                ext["tlp"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_reads_exactly_the_alerts_under_its_tlp_ceiling() {
    let (fed, addr) = start().await;
    let recipient = fed.key(1);
    let mut by_label: BTreeMap<&str, String> = BTreeMap::new();
    for label in LABELS {
        let mut body = json!({"severity": "high", "tlp": label, "title": format!("{label} alert"),
                              "indicators": ["ipv4:192.0.2.1", "cve:CVE-2026-0001"]});
        if label == "RED" {
            body["recipients"] = json!([recipient]);
        }
        by_label.insert(label, fed.issue(0, body).await);
    }

    // Discovery and the API root, as a client finds them.
    let d = taxii(addr, "CLEAR", "/taxii2/").await.json();
    assert_eq!(d["title"], "Test CERT");
    assert_eq!(d["api_roots"], json!(["/taxii2/api/"]));
    let root = taxii(addr, "CLEAR", "/taxii2/api/").await.json();
    assert_eq!(root["versions"], json!([MEDIA]));

    let all_ids = collections(addr, "RED").await;
    assert_eq!(all_ids.len(), 6, "{all_ids:?}");
    for (rank, label) in LABELS.iter().enumerate() {
        let allowed: BTreeSet<&str> = LABELS[..=rank].iter().copied().collect();
        // It lists the `alerts` collection and one per label it may read.
        let listed = collections(addr, label).await;
        let mut expected: BTreeSet<String> = allowed
            .iter()
            .map(|l| format!("tlp-{}", l.replace('+', "-").to_lowercase()))
            .collect();
        expected.insert("alerts".into());
        assert_eq!(
            listed.keys().cloned().collect::<BTreeSet<_>>(),
            expected,
            "{label}"
        );

        // `alerts` holds exactly the alerts at or under its ceiling, all versions.
        let objects = read_all(addr, label, &listed["alerts"], "&match[version]=all", 3).await;
        let seen = report_tlps(&objects);
        let want: BTreeMap<String, String> = by_label
            .iter()
            .filter(|(l, _)| allowed.contains(*l))
            .map(|(l, id)| (id.clone(), l.to_string()))
            .collect();
        assert_eq!(seen, want, "client with ceiling {label}");
        for o in &objects {
            if let Some(marks) = o["object_marking_refs"].as_array() {
                assert_eq!(marks.len(), 1, "{o}");
            }
        }

        // A collection above its ceiling is not there for it, nor any object in it.
        for (above, l) in LABELS.iter().enumerate().skip(rank + 1) {
            let alias = format!("tlp-{}", l.replace('+', "-").to_lowercase());
            let id = &all_ids[&alias];
            for path in [
                format!("/taxii2/api/collections/{id}/"),
                format!("/taxii2/api/collections/{id}/objects/"),
                format!("/taxii2/api/collections/{id}/manifest/"),
            ] {
                let a = get(addr, &path, Some(&bearer(label)), MEDIA).await;
                assert_eq!(a.status, 404, "{label} reading {alias}: {a:?}");
                assert_eq!(a.headers["content-type"], MEDIA);
                assert!(a.json()["description"].is_string());
            }
            // An object id of a higher alert, through the `alerts` collection.
            let red_objects =
                read_all(addr, "RED", &all_ids[&alias], "&match[type]=report", 10).await;
            assert!(!red_objects.is_empty(), "{alias} is empty for RED");
            let oid = red_objects[0]["id"].as_str().unwrap();
            let path = format!(
                "/taxii2/api/collections/{}/objects/{oid}/",
                listed["alerts"]
            );
            let a = get(addr, &path, Some(&bearer(label)), MEDIA).await;
            assert_eq!(
                a.status, 404,
                "{label} got object {oid} of {alias} (rank {above})"
            );
        }
    }

    // Each per-label collection holds that label only.
    for label in LABELS {
        let alias = format!("tlp-{}", label.replace('+', "-").to_lowercase());
        let objects = read_all(addr, "RED", &all_ids[&alias], "", 100).await;
        let seen = report_tlps(&objects);
        assert_eq!(
            seen,
            BTreeMap::from([(by_label[label].clone(), label.to_string())])
        );
    }

    // The objects a client reads are valid STIX 2.1 (strict).
    let objects = read_all(addr, "RED", &all_ids["alerts"], "&match[version]=all", 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taxii.json");
    let bundle = json!({"type": "bundle", "id": "bundle--6f1e2c52-8d0b-4a55-9a3c-2f5b9c1d7e10", "objects": objects});
    std::fs::write(&file, serde_json::to_string_pretty(&bundle).unwrap()).unwrap();
    tocsin_tests::validate_stix(&file);

    // Credentials: Basic works; a wrong secret, none, or the API token do not; a TAXII
    // secret does not open the control API.
    let basic = |user: &str, pass: &str| {
        use base64::Engine;
        let raw = format!("{user}:{pass}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    };
    let ok = get(
        addr,
        "/taxii2/api/collections/",
        Some(&basic(&client_name("GREEN"), &secret("GREEN"))),
        MEDIA,
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["collections"].as_array().unwrap().len(), 3);
    for auth in [
        Some(basic(&client_name("GREEN"), &secret("RED"))),
        Some(basic(&client_name("RED"), &secret("GREEN"))),
        Some(format!("Bearer {}", secret("RED").to_uppercase())),
        Some(format!("Bearer {TOKEN}")),
        None,
    ] {
        let a = get(addr, "/taxii2/api/collections/", auth.as_deref(), MEDIA).await;
        assert_eq!(a.status, 401, "{auth:?}: {a:?}");
        assert_eq!(a.headers["content-type"], MEDIA);
        assert!(a.headers.contains_key("www-authenticate"));
    }
    let a = get(addr, "/v1/alerts", Some(&bearer("RED")), "application/json").await;
    assert_eq!(
        a.status, 401,
        "a TAXII secret opened the control API: {a:?}"
    );
    // Media types and methods.
    let a = get(
        addr,
        "/taxii2/api/",
        Some(&bearer("RED")),
        "application/xml",
    )
    .await;
    assert_eq!(a.status, 406, "{a:?}");
    let a = get(addr, "/taxii2/api/nothing/", Some(&bearer("RED")), MEDIA).await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(a.headers["content-type"], MEDIA);
    // A path that is not UTF-8 or a query field given twice: credentials are checked
    // first, and the error is TAXII JSON like every other.
    let alerts = &all_ids["alerts"];
    for path in [
        "/taxii2/api/collections/%FF/".to_string(),
        "/taxii2/api/collections/%FF/objects/".to_string(),
        format!("/taxii2/api/collections/{alerts}/objects/?limit=1&limit=2"),
        format!("/taxii2/api/collections/{alerts}/manifest/?next=%FF&next=1"),
    ] {
        let a = get(addr, &path, None, MEDIA).await;
        assert_eq!(a.status, 401, "{path} without credentials: {a:?}");
        let a = get(addr, &path, Some(&bearer("RED")), MEDIA).await;
        assert_eq!(a.status, 400, "{path}: {a:?}");
        assert_eq!(a.headers["content-type"], MEDIA, "{path}");
        assert!(a.json()["description"].is_string(), "{path}: {a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_and_polling_while_alerts_arrive_lose_and_repeat_nothing() {
    let (fed, addr) = start().await;
    let alerts = collections(addr, "GREEN").await["alerts"].clone();
    let mut issued = Vec::new();
    for i in 0..20 {
        issued.push(
            fed.issue(
                0,
                json!({"severity": "high", "tlp": "GREEN", "title": format!("before {i}"),
                                "indicators": [format!("ipv4:198.51.100.{i}")]}),
            )
            .await,
        );
    }
    // An update and a cancel: new versions of one report, revoked versions of another.
    let client = fed.cluster.nodes[0].client();
    let update = client
        .post(
            &format!("/v1/alerts/{}/update", issued[0]),
            &json!({"title": "before 0, v2"}),
        )
        .await
        .unwrap();
    issued.push(update["id"].as_str().unwrap().to_string());
    client
        .post(
            &format!("/v1/alerts/{}/cancel", issued[1]),
            &json!({"reason": "false positive"}),
        )
        .await
        .unwrap();

    // Alerts keep arriving while a reader pages (limit 4) and then polls.
    let writer = {
        let client = fed.cluster.nodes[0].client();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                let v = client
                    .post(
                        "/v1/alerts",
                        &json!({"severity": "medium", "tlp": "GREEN",
                                               "title": format!("during {i}"),
                                               "indicators": [format!("domain:d{i}.example")]}),
                    )
                    .await
                    .unwrap();
                ids.push(v["id"].as_str().unwrap().to_string());
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            ids
        })
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut reports: BTreeSet<String> = BTreeSet::new();
    let mut last_added: Option<String> = None;
    let mut next: Option<String> = None;
    let mut writer = Some(writer);
    let mut all_issued = issued.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader never caught up"
        );
        let mut path =
            format!("/taxii2/api/collections/{alerts}/objects/?limit=4&match[version]=all");
        match (&next, &last_added) {
            (Some(n), _) => path.push_str(&format!("&next={n}")),
            (None, Some(t)) => path.push_str(&format!("&added_after={t}")),
            (None, None) => {}
        }
        let a = taxii(addr, "GREEN", &path).await;
        let page = a.json();
        let objects = page["objects"].as_array().cloned().unwrap_or_default();
        assert!(objects.len() <= 4);
        for o in &objects {
            if o["type"] != "identity" {
                seen.push((
                    o["id"].as_str().unwrap().into(),
                    o["modified"].as_str().unwrap().into(),
                ));
            }
        }
        reports.extend(report_tlps(&objects).into_keys());
        if let Some(last) = a.headers.get("x-taxii-date-added-last") {
            last_added = Some(last.clone());
        }
        if page["more"] == true {
            next = Some(page["next"].as_str().unwrap().to_string());
            continue;
        }
        next = None;
        // At the end: poll again once the writer is done and one poll found nothing new.
        match writer.take() {
            Some(w) if w.is_finished() => all_issued.extend(w.await.unwrap()),
            Some(w) => {
                writer = Some(w);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None if objects.is_empty() => break,
            None => {}
        }
    }
    let unique: BTreeSet<&(String, String)> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an object version came twice");
    for id in &all_issued {
        assert!(reports.contains(id), "alert {id} never came through TAXII");
    }
    assert_eq!(reports, all_issued.iter().cloned().collect::<BTreeSet<_>>());

    // The report of the updated alert has two versions; the cancelled one is revoked.
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let objects = read_all(
        addr,
        "GREEN",
        &alerts,
        "&match[version]=all&match[type]=report",
        50,
    )
    .await;
    for o in objects {
        by_id
            .entry(o["id"].as_str().unwrap().to_string())
            .or_default()
            .push(o);
    }
    let two: Vec<&Vec<Value>> = by_id.values().filter(|v| v.len() == 2).collect();
    assert_eq!(
        two.len(),
        2,
        "one update and one cancel make second versions"
    );
    assert_eq!(two.iter().filter(|v| v[1]["revoked"] == true).count(), 1);
    let (rid, versions) = by_id
        .iter()
        .find(|(_, v)| v.len() == 2 && v[1]["revoked"] != true)
        .unwrap();
    let v = taxii(
        addr,
        "GREEN",
        &format!("/taxii2/api/collections/{alerts}/objects/{rid}/versions/"),
    )
    .await
    .json();
    let modified: Vec<&Value> = versions.iter().map(|o| &o["modified"]).collect();
    assert_eq!(
        v["versions"].as_array().unwrap().iter().collect::<Vec<_>>(),
        modified
    );
    // Default `match[version]` is `last`: one version per report.
    let last = read_all(addr, "GREEN", &alerts, "&match[type]=report", 50).await;
    assert_eq!(last.len(), by_id.len());
    // The manifest lists the same objects, each with its date_added.
    let m = taxii(
        addr,
        "GREEN",
        &format!("/taxii2/api/collections/{alerts}/manifest/?match[type]=report&limit=1000"),
    )
    .await
    .json();
    assert_eq!(m["objects"].as_array().unwrap().len(), by_id.len());
    assert!(m["objects"][0]["date_added"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    // The reference client (taxii2-client 2.3.0), with Basic auth and `as_pages`, reads
    // the same reports.
    match python_tool("taxii2-client", &["taxii2-client==2.3.0"]) {
        Ok(venv) => {
            let script = format!(
                r#"
import json, sys
from taxii2client.v21 import Server, as_pages
s = Server("http://{addr}/taxii2/", user="{user}", password="{pass}")
root = s.api_roots[0]
c = [c for c in root.collections if c.id == "{alerts}"][0]
ids = set()
for page in as_pages(c.get_objects, per_request=5, type="report", version="all"):
    for o in page.get("objects", []):
        ext = list(o["extensions"].values())[0]
        ids.add(ext["alert_id"])
print(json.dumps(sorted(ids)))
"#,
                user = client_name("GREEN"),
                pass = secret("GREEN"),
            );
            let (out, err, code) = run(Command::new(venv.join("bin/python")).args(["-c", &script]));
            assert_eq!(code, 0, "taxii2-client failed: {err}");
            let got: BTreeSet<String> = serde_json::from_str(out.trim()).unwrap();
            assert_eq!(got, reports, "taxii2-client read other reports");
        }
        Err(why) => eprintln!("SKIPPED the taxii2-client check: {why}"),
    }
}

/// The versions of each alert object (report, indicator, vulnerability) among
/// `objects`, by id, in the order read.
fn versions_by_id(objects: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let alert_object = |o: &&Value| {
        ["report", "indicator", "vulnerability"].contains(&o["type"].as_str().unwrap_or(""))
    };
    for o in objects.iter().filter(alert_object) {
        by_id
            .entry(o["id"].as_str().unwrap().to_string())
            .or_default()
            .push(o.clone());
    }
    by_id
}

/// The current (not revoked) indicators among `objects`: their patterns.
fn current_patterns(objects: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = objects
        .iter()
        .filter(|o| o["type"] == "indicator" && o["revoked"] != true)
        .map(|o| o["pattern"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// STIX 2.1 §3.2: once revoked, an object gets no later version; versions go forwards.
fn assert_revocation_is_final(by_id: &BTreeMap<String, Vec<Value>>, what: &str) {
    for (id, versions) in by_id {
        let mut modified: Vec<&str> = versions
            .iter()
            .map(|v| v["modified"].as_str().unwrap())
            .collect();
        modified.sort();
        let n = modified.len();
        modified.dedup();
        assert_eq!(modified.len(), n, "{what}: {id} has a version twice");
        let last = modified.last().unwrap();
        for v in versions {
            if v["revoked"] == true {
                assert_eq!(
                    v["modified"].as_str(),
                    Some(*last),
                    "{what}: {id} lives on after its revocation"
                );
            }
        }
    }
}

/// An update that drops an indicator revokes it; a cancelled chain has one last
/// version, revoked, and no indicator of it stays current. TAXII and `tocsin export`
/// agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_versions_end_their_indicators_and_a_cancelled_chain_ends_once() {
    let (fed, addr) = start().await;
    let alerts = collections(addr, "GREEN").await["alerts"].clone();
    let client = fed.cluster.nodes[0].client();
    let first = fed
        .issue(
            0,
            json!({"severity": "high", "tlp": "GREEN", "title": "v1",
                   "indicators": ["ipv4:192.0.2.50", "domain:keep.example"]}),
        )
        .await;
    let update = |id: String, title: &'static str| {
        let client = fed.cluster.nodes[0].client();
        async move {
            client
                .post(
                    &format!("/v1/alerts/{id}/update"),
                    &json!({"title": title, "indicators": ["domain:keep.example"]}),
                )
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let second = update(first.clone(), "v2: 192.0.2.50 was a false positive").await;
    let dir = tempfile::TempDir::new().unwrap();
    let export = |name: &str| {
        let file = dir.path().join(name);
        let (_, err, code) = run(fed
            .tocsin(0)
            .args(["export", "--format", "stix2.1", "--out"])
            .arg(&file));
        assert_eq!(code, 0, "{err}");
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        bundle["objects"].as_array().unwrap().clone()
    };
    let only_keep = vec!["[domain-name:value = 'keep.example']".to_string()];
    let last = read_all(addr, "GREEN", &alerts, "", 50).await;
    assert_eq!(current_patterns(&last), only_keep, "TAXII after the update");
    let exported = export("updated.json");
    assert_eq!(
        current_patterns(&exported),
        only_keep,
        "export after the update"
    );

    // Updated again, then cancelled (the API cancels every version).
    let third = update(second.clone(), "v3").await;
    client
        .post(
            &format!("/v1/alerts/{third}/cancel"),
            &json!({"reason": "withdrawn"}),
        )
        .await
        .unwrap();
    for (what, objects) in [
        ("TAXII last", read_all(addr, "GREEN", &alerts, "", 50).await),
        ("export", export("cancelled.json")),
    ] {
        // TAXII's `last` holds the report's last version; an export, every version.
        let reports: Vec<&Value> = objects.iter().filter(|o| o["type"] == "report").collect();
        let want = if what == "export" { 3 } else { 1 };
        assert_eq!(reports.len(), want, "{what}: {reports:?}");
        let revoked: Vec<&&Value> = reports.iter().filter(|r| r["revoked"] == true).collect();
        assert_eq!(revoked.len(), 1, "{what}: {reports:?}");
        assert!(current_patterns(&objects).is_empty(), "{what}: {objects:?}");
        assert_revocation_is_final(&versions_by_id(&objects), what);
    }
    let all = read_all(addr, "GREEN", &alerts, "&match[version]=all", 50).await;
    let by_id = versions_by_id(&all);
    assert_revocation_is_final(&by_id, "TAXII all");
    let report: Vec<bool> = by_id
        .values()
        .find(|v| v[0]["type"] == "report")
        .unwrap()
        .iter()
        .map(|v| v["revoked"] == true)
        .collect();
    assert_eq!(
        report,
        [false, false, false, true],
        "three versions, then the cancel"
    );
    // Each version's indicators: current, then revoked once.
    let indicators = by_id.values().filter(|v| v[0]["type"] == "indicator");
    assert_eq!(indicators.clone().count(), 4, "2 + 1 + 1 indicators");
    for v in indicators {
        let revoked: Vec<bool> = v.iter().map(|o| o["revoked"] == true).collect();
        assert_eq!(revoked, [false, true], "{v:?}");
    }
}
