//! Receipts over real `tocsind` processes. The recipients of a RED alert send its origin
//! a signed receipt when they store it, and another when an operator acknowledges it.
//! The origin shows each recipient's state. A missing acknowledgement past the
//! `--ack-within` deadline raises a warning, a metric and an `ack_overdue` event.
//! AMBER alerts get receipts from the partners that hold them. A receipt reaches only
//! the origin, and one sent while the origin is away arrives when it is back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tocsin_proto::TrustLevel::{Member, Partner};
use tocsin_tests::{alert, run, Fed, QUIET_PERIOD};
use tocsin_tools::cluster::Link;

/// How long a receipt may take to reach the origin.
const SETTLE: Duration = Duration::from_secs(10);

/// `tocsin --json receipts ID` on node `i`.
fn receipts(fed: &Fed, i: usize, id: &str) -> Value {
    let (out, err, code) = run(fed.tocsin(i).args(["--json", "receipts", id]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

fn row<'a>(v: &'a Value, key: &str) -> &'a Value {
    v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["receiver"] == key)
        .unwrap_or_else(|| panic!("no row for {key}: {v}"))
}

/// Waits until node `i` shows recipient `key` of `id` in `state`.
async fn wait_state(fed: &Fed, i: usize, id: &str, key: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let v = receipts(fed, i, id);
        if row(&v, key)["state"] == state {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "recipient {} of {id} never became {state}: {v}",
            &key[..8]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node 1 issues a RED alert to nodes 2 and 3 (partners) with a 3-second deadline.
/// Both deliver; node 2 acknowledges in time, node 3 never does. Node 4 (member) is
/// not a recipient and takes no part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_recipients_deliver_and_acknowledge_and_a_late_one_is_reported() {
    let mut fed = Fed::start(
        4,
        vec![
            Link::sym(0, 1, Partner),
            Link::sym(0, 2, Partner),
            Link::sym(0, 3, Member),
        ],
    )
    .await;
    // Follow node 1's event stream, as an integration would.
    let mut watch = fed
        .tocsin(0)
        .args(["--json", "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });

    let (k2, k3) = (fed.key(1), fed.key(2));
    let (out, err, code) = run(fed.tocsin(0).args([
        "--json",
        "issue",
        "--severity",
        "critical",
        "--tlp",
        "RED",
        "--title",
        "for two named recipients",
        "--recipient",
        &k2,
        "--recipient",
        &k3,
        "--ack-within",
        "4s",
    ]));
    assert_eq!(code, 0, "{err}");
    let id = serde_json::from_str::<Value>(out.trim()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    fed.wait_for(1, &id).await;
    fed.wait_for(2, &id).await;

    // Both deliver; the view lists exactly the named recipients.
    wait_state(&fed, 0, &id, &k2, "delivered").await;
    let v = wait_state(&fed, 0, &id, &k3, "delivered").await;
    assert_eq!(v["recipients"].as_array().unwrap().len(), 2, "{v}");
    assert!(row(&v, &k2)["received_at"].as_u64().is_some(), "{v}");
    assert_eq!(v["overdue"], false);

    // Node 2's operator acknowledges it.
    let (out, err, code) = run(fed.tocsin(1).args(["ack", &id, "--by", "duty officer"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("duty officer"), "{out}");
    let v = wait_state(&fed, 0, &id, &k2, "acknowledged").await;
    assert_eq!(row(&v, &k2)["acked_by"], "duty officer");
    // A second acknowledgement does not go back to "delivered", and the origin cannot
    // acknowledge its own alert.
    let (_, err, code) = run(fed.tocsin(0).args(["ack", &id]));
    assert_ne!(code, 0);
    assert!(err.contains("received from another node"), "{err}");
    let (out, _, _) = run(fed.tocsin(0).args(["show", &id]));
    assert!(
        out.contains("1 acknowledged, 1 delivered, 0 nothing yet"),
        "{out}"
    );

    // Past the deadline: node 3 is reported, on the stream, in the log and the metric.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let overdue: Value = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("no ack_overdue event on the stream");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "ack_overdue" {
            break v;
        }
    };
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(overdue["alert"], id.as_str());
    assert_eq!(overdue["missing"], serde_json::json!([k3]), "{overdue}");
    let v = receipts(&fed, 0, &id);
    assert_eq!(v["overdue"], true, "{v}");
    let log = std::fs::read_to_string(fed.cluster.nodes[0].log_path()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("not acknowledged by every named recipient") && l.contains(&k3)),
        "no overdue warning in the log"
    );
    let metrics = fed.cluster.nodes[0]
        .client()
        .get_text("/metrics")
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "tocsin_ack_overdue_total 1"),
        "{metrics}"
    );

    // Receipts reach only the origin: the recipients and node 4 hold none.
    for i in [1, 2] {
        let (_, err, code) = run(fed.tocsin(i).args(["receipts", &id]));
        assert_ne!(code, 0, "node {} shows receipts of another's alert", i + 1);
        assert!(err.contains("origin"), "{err}");
    }
    fed.assert_absent(3, &id).await;

    // AMBER: each partner that holds it sends a receipt. Node 3 acknowledges while node
    // 1 is down; its receipt arrives when node 1 is back.
    let amber = fed.issue(0, alert("AMBER", "for the partners")).await;
    fed.wait_for(2, &amber).await;
    wait_state(&fed, 0, &amber, &k3, "delivered").await;
    fed.cluster.stop(0, Duration::from_secs(10)).unwrap();
    let (_, err, code) = run(fed.tocsin(2).args(["ack", &amber, "--by", "night shift"]));
    assert_eq!(code, 0, "{err}");
    fed.cluster.start(0).unwrap();
    fed.cluster.wait_ready(0, SETTLE).await.unwrap();
    let v = wait_state(&fed, 0, &amber, &k3, "acknowledged").await;
    assert_eq!(row(&v, &k3)["acked_by"], "night shift");
    // Node 4 is a member, not a partner: not an AMBER recipient.
    assert!(
        !v["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["receiver"] == fed.key(3)),
        "{v}"
    );
}

/// `tocsin --json sightings ID` on node `i`.
fn sightings(fed: &Fed, i: usize, id: &str) -> Value {
    let (out, err, code) = run(fed.tocsin(i).args(["--json", "sightings", id]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

/// Waits until node `i` shows `n` observers of `id`.
async fn wait_observers(fed: &Fed, i: usize, id: &str, n: usize) -> Value {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let v = sightings(fed, i, id);
        if v["observers"].as_array().map_or(0, Vec::len) == n {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {}: {v}",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A line 1 – 2 – 3 of members. Node 1's CLEAR alert reaches node 3 through node 2. Node 2
/// reports seeing one of its indicators: the origin and node 3 (its peers) get the signed
/// sighting. Node 3's sighting reaches node 2 and, through it, the origin, which is
/// not node 3's peer: a CLEAR alert's sightings travel as far as the alert did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sightings_of_a_clear_alert_reach_its_origin_and_its_audience() {
    let fed = Fed::line(3, Member).await;
    let mut a = alert("CLEAR", "phishing kit");
    a["indicators"] = serde_json::json!(["domain:kit.example"]);
    let id = fed.issue(0, a).await;
    // Node 2 relays the alert while its own commit is in flight: wait for both.
    fed.wait_for(1, &id).await;
    fed.wait_for(2, &id).await;

    let (out, err, code) = run(fed.tocsin(1).args([
        "sighting",
        "domain:kit.example",
        "--count",
        "7",
        "--note",
        "seen in our mail gateway",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sighting of"), "{out}");
    for i in [0, 2] {
        let v = wait_observers(&fed, i, &id, 1).await;
        let row = &v["observers"][0];
        assert_eq!(row["observer"], fed.key(1), "{v}");
        assert_eq!(row["count"], 7);
        assert_eq!(row["indicator"], "domain:kit.example");
        assert_eq!(row["note"], "seen in our mail gateway");
        assert_eq!(v["total"], 7);
    }
    // A newer report from the same observer replaces its row.
    let (_, err, code) = run(fed.tocsin(1).args(["sighting", &id, "--count", "9"]));
    assert_eq!(code, 0, "{err}");
    let deadline = tokio::time::Instant::now() + SETTLE;
    while sightings(&fed, 0, &id)["total"] != 9 {
        assert!(tokio::time::Instant::now() < deadline, "never replaced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (_, err, code) = run(fed.tocsin(2).args(["sighting", &id, "--count", "2"]));
    assert_eq!(code, 0, "{err}");
    wait_observers(&fed, 1, &id, 2).await;
    let v = wait_observers(&fed, 0, &id, 2).await;
    assert_eq!(v["total"], 11, "{v}");
    // Nodes without certificates count as an agency each.
    assert_eq!(v["agencies"], 2, "{v}");
    let far = v["observers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["observer"] == fed.key(2).as_str())
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(far["count"], 2, "{v}");

    // Bad requests name the field.
    let (_, err, code) = run(fed.tocsin(1).args(["sighting", &id, "--count", "0"]));
    assert_ne!(code, 0);
    assert!(err.contains("count"), "{err}");
    let (_, err, code) = run(fed.tocsin(1).args(["sighting", "domain:none.example"]));
    assert_ne!(code, 0);
    assert!(err.contains("no stored alert"), "{err}");
}

/// A sighting made while the alert's origin is away reaches it when it is back: a node
/// sends its own sightings of an origin's alerts (of the last 24 hours) again when the
/// origin connects, as it does its receipts. (Before, it was sent once, to nobody, and
/// the CLI still said "sent".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighting_made_while_the_origin_is_down_reaches_it_when_it_is_back() {
    let mut fed = Fed::line(2, Member).await;
    let id = fed.issue(0, alert("GREEN", "watched while away")).await;
    fed.wait_for(1, &id).await;
    fed.cluster.stop(0, Duration::from_secs(10)).unwrap();
    let (out, err, code) = run(fed.tocsin(1).args(["sighting", &id, "--count", "3"]));
    assert_eq!(code, 0, "{out}{err}");
    fed.cluster.start(0).unwrap();
    fed.cluster
        .wait_ready(0, Duration::from_secs(10))
        .await
        .unwrap();
    let v = wait_observers(&fed, 0, &id, 1).await;
    assert_eq!(v["observers"][0]["observer"], fed.key(1), "{v}");
    assert_eq!(v["total"], 3, "{v}");
    // Sent again at every connection, it is still counted once.
    fed.restart(0).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    let v = wait_observers(&fed, 0, &id, 1).await;
    assert_eq!(v["total"], 3, "{v}");
}
