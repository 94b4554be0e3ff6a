//! Webhooks against a real HTTP receiver on 127.0.0.1: every alert that passes the
//! filter arrives exactly once, in order, with a valid HMAC-SHA256 signature, although
//! the receiver is down for a while and the node restarts meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tocsin_tests::Fed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "webhook-secret-0123456789";

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    content_type: String,
    signature: String,
    alert_id: String,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 receiver: answers 200 to every request and records it.
async fn receive(listener: TcpListener, seen: Arc<Mutex<Vec<Delivery>>>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, len) = loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (pos + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            seen.lock().unwrap().push(Delivery {
                content_type: header("content-type"),
                signature: header("tocsin-signature"),
                alert_id: header("tocsin-alert-id"),
                body: buf[head_end..head_end + len].to_vec(),
            });
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        });
    }
}

/// Checks `t=…,v1=…` against the body, as a receiver would.
fn signature_valid(d: &Delivery) -> bool {
    let Some((t, v1)) = d
        .signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&d.body);
    mac.verify_slice(&hex::decode(v1).unwrap_or_default())
        .is_ok()
}

/// One node with a `[[webhook]]` (`fields` besides url and secret) posting to a receiver
/// on 127.0.0.1 at `/path`: the federation, the receiver's port, what it got, and its
/// task.
async fn with_webhook(
    fields: &str,
    path: &str,
) -> (
    Fed,
    u16,
    Arc<Mutex<Vec<Delivery>>>,
    tokio::task::JoinHandle<()>,
) {
    let mut fed = Fed::start(1, vec![]).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = fed.cluster.nodes[0].data_dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[webhook]]\n{fields}\nurl = \"http://127.0.0.1:{port}/{path}\"\nsecret = \"{SECRET}\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    fed.restart(0).await;
    let seen: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let server = tokio::spawn(receive(listener, seen.clone()));
    (fed, port, seen, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_reaches_the_receiver_once_signed_across_its_outage_and_a_restart() {
    let (mut fed, port, seen, server) =
        with_webhook("name = \"siem\"\nmin_severity = \"medium\"", "tocsin").await;

    let issue =
        |title: &str, severity: &str| json!({"severity": severity, "tlp": "GREEN", "title": title});
    let mut expected = Vec::new();
    for i in 0..3 {
        expected.push(fed.issue(0, issue(&format!("up {i}"), "high")).await);
    }
    // Below the filter's severity: never sent.
    let low = fed.issue(0, issue("too low", "low")).await;
    let wait_for = |n: usize| {
        let seen = seen.clone();
        async move {
            for _ in 0..600 {
                if seen.lock().unwrap().len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!(
                "the receiver got {} of {n} alerts in 30 s",
                seen.lock().unwrap().len()
            );
        }
    };
    wait_for(3).await;

    // The receiver goes down; alerts issued meanwhile wait in the outbox, across a
    // restart of the node.
    server.abort();
    let _ = server.await;
    expected.push(fed.issue(0, issue("down 1", "critical")).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fed.restart(0).await;
    expected.push(fed.issue(0, issue("down 2", "medium")).await);
    let status = fed.cluster.nodes[0].client().status().await.unwrap();
    assert!(
        status["webhooks"]["siem"]["pending"].as_u64().unwrap() >= 1,
        "{status}"
    );

    // Back up on the same port: the rest arrives.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = tokio::spawn(receive(listener, seen.clone()));
    wait_for(expected.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.abort();

    let got = seen.lock().unwrap().clone();
    let ids: Vec<String> = got.iter().map(|d| d.alert_id.clone()).collect();
    assert_eq!(
        ids, expected,
        "each alert once, in order; none below the filter"
    );
    assert!(!ids.contains(&low));
    for d in &got {
        assert!(signature_valid(d), "bad signature on {}", d.alert_id);
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["id"], d.alert_id.as_str());
        assert_eq!(v["signature"], "valid");
    }
    // A tampered body does not verify.
    let mut forged = got[0].clone();
    forged.body[0] ^= 1;
    assert!(!signature_valid(&forged));
    let status = fed.cluster.nodes[0].client().status().await.unwrap();
    assert_eq!(status["webhooks"]["siem"]["pending"], 0, "{status}");
    let metrics = fed.cluster.nodes[0]
        .client()
        .get_text("/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains("tocsin_webhook_outbox_depth{webhook=\"siem\"} 0"),
        "{metrics}"
    );
    let (out, err, code) = tocsin_tests::run(fed.tocsin(0).arg("status"));
    assert_eq!(code, 0, "{err}");
    assert!(
        // Counted since the node's last start: the two alerts of the outage.
        out.contains("webhook siem: 2 delivered, 0 pending, 0 refused"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stix_webhook_posts_a_valid_signed_bundle_per_alert_version() {
    let (fed, _, seen, server) = with_webhook("name = \"cti\"\nformat = \"stix2.1\"", "stix").await;
    let id = fed
        .issue(
            0,
            json!({"severity": "high", "tlp": "AMBER", "title": "Botnet C2",
                          "indicators": ["ipv4:203.0.113.5", "cve:CVE-2026-4242"]}),
        )
        .await;
    let cancel = fed.cluster.nodes[0]
        .client()
        .post(
            &format!("/v1/alerts/{id}/cancel"),
            &json!({"reason": "sinkholed"}),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..600 {
        if seen.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.abort();
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got.iter().map(|d| d.alert_id.clone()).collect::<Vec<_>>(),
        [id.clone(), cancel]
    );
    let dir = tempfile::tempdir().unwrap();
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.content_type, "application/stix+json;version=2.1");
        assert!(signature_valid(d), "bad signature on {}", d.alert_id);
        let bundle: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(bundle["type"], "bundle");
        let objects = bundle["objects"].as_array().unwrap();
        let report = objects.iter().find(|o| o["type"] == "report").unwrap();
        let ext = report["extensions"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap();
        // The cancel's bundle is the revoked version of the alert it cancels.
        assert_eq!(ext["alert_id"], id.as_str());
        assert_eq!(report["revoked"] == true, i == 1, "{report}");
        assert!(objects.iter().any(
            |o| o["type"] == "indicator" && o["pattern"] == "[ipv4-addr:value = '203.0.113.5']"
        ));
        assert!(objects.iter().any(|o| o["type"] == "marking-definition"));
        let file = dir.path().join(format!("webhook-{i}.json"));
        std::fs::write(&file, &d.body).unwrap();
        tocsin_tests::validate_stix(&file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_webhook_to_another_host_or_without_a_secret_is_refused_at_start() {
    let fed = Fed::start(1, vec![]).await;
    let node = &fed.cluster.nodes[0];
    let config = node.data_dir.join("config.toml");
    let base = std::fs::read_to_string(&config).unwrap();
    for (entry, expect) in [
        (
            "url = \"http://siem.example/x\"\nsecret = \"0123456789abcdef\"",
            "webhook[0].url",
        ),
        ("url = \"https://siem.example/x\"", "webhook[0].secret"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("c.toml"),
            format!("{base}\n[[webhook]]\nname = \"x\"\n{entry}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(tocsin_tests::tocsind_bin())
            .args(["run", "--config"])
            .arg(dir.path().join("c.toml"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expect), "{err}");
    }
}
