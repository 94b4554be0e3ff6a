//! Agency identity over real `tocsind` processes: a partner trusts an agency's org key,
//! not its node keys, and admits every node that presents a valid certificate from it.
//! Expired certificates, certificates of untrusted orgs, stolen certificates, silence
//! and a first frame that is not an identity are refused with a log line that says why.
//! Two nodes of one agency both serve, and alerts keep flowing when one is killed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tocsin_proto::{Frame, PublicKey, SigningKey};
use tocsin_tests::rawpeer::{self, Connect};
use tocsin_tests::{alert, run, tocsin_bin, Fed, QUIET_PERIOD};

/// How long a refusal or a disconnection may take to show.
const SETTLE: Duration = Duration::from_secs(10);

/// `tocsin --json ARGS` in `dir`.
fn org_cli(dir: &Path, args: &[&str]) -> Value {
    let mut cmd = std::process::Command::new(tocsin_bin());
    cmd.current_dir(dir).arg("--json").args(args);
    let (out, err, code) = run(&mut cmd);
    assert_eq!(code, 0, "tocsin {args:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Makes an org key file in `dir`; its public key, hex.
fn org_init(dir: &Path, file: &str) -> String {
    org_cli(dir, &["org", "init", "--key", file])["org_key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Certifies node `i` with the org key in `dir` and points its config at the file.
fn certify(fed: &Fed, dir: &Path, org_key: &str, i: usize, extra: &[&str]) -> String {
    let out = dir.join(format!("n{}.cert", i + 1));
    let key = fed.key(i);
    let mut args = vec![
        "org", "certify", &key, "--key", org_key, "--agency", "CERT-A", "--out",
    ];
    let out_s = out.to_str().unwrap().to_string();
    args.push(&out_s);
    args.extend_from_slice(extra);
    org_cli(dir, &args);
    let config = fed.cluster.nodes[i].data_dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[identity]\ncert_file = {out_s:?}\n"));
    std::fs::write(&config, text).unwrap();
    out_s
}

async fn post(fed: &Fed, i: usize, path: &str, body: Value) -> Value {
    fed.cluster.nodes[i]
        .client()
        .post(path, &body)
        .await
        .unwrap_or_else(|e| panic!("POST {path} on node {}: {e:#}", i + 1))
}

/// Node `i` trusts node `j` by its node key, at partner, and dials it.
async fn trust_node(fed: &Fed, i: usize, j: usize) {
    post(
        fed,
        i,
        "/v1/trust",
        json!({"key": fed.key(j), "level": "partner", "name": format!("n{}", j + 1),
               "addrs": [fed.cluster.nodes[j].addr()]}),
    )
    .await;
}

async fn connected(fed: &Fed, i: usize, key: &str) -> Option<Value> {
    fed.peer_row(i, key)
        .await
        .filter(|p| p["connected"].as_bool() == Some(true))
}

async fn wait_connected(fed: &Fed, i: usize, key: &str, want: bool, what: &str) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let row = connected(fed, i, key).await;
        if row.is_some() == want {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: node {} still {} {}",
            i + 1,
            if want { "lacks" } else { "has" },
            &key[..8]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until node `i`'s log has a line containing every one of `parts`.
async fn wait_log(fed: &Fed, i: usize, parts: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let log = std::fs::read_to_string(fed.cluster.nodes[i].log_path()).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} never logged a line with {parts:?}",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A raw peer with key `[seed; 32]`, unknown to node 1, connects while node 1 admits
/// certified nodes: it is held, sends `first` (if any), and is refused for `reason`
/// (logged), after which its connection is closed.
async fn raw_is_refused(fed: &Fed, seed: u8, first: Option<Frame>, reason: &str) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let hex = PublicKey(key.verifying_key().to_bytes()).to_string();
    let target = fed.cluster.nodes[0].peer_id.parse().unwrap();
    let addr = fed.cluster.nodes[0].addr().parse().unwrap();
    let Connect::Open(mut raw) = rawpeer::connect(&key, addr, target).await else {
        panic!("an unknown peer is held, not refused at once, while node 1 admits");
    };
    if let Some(frame) = first {
        raw.send_frames(&[frame.encode().unwrap()]).await.unwrap();
    }
    wait_log(fed, 0, &["connection refused", &hex[..8], reason]).await;
    wait_closed(&mut raw, reason).await;
}

/// Waits until node 1 has closed `raw`'s connection (refused for `reason`).
async fn wait_closed(raw: &mut rawpeer::RawPeer, reason: &str) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let ping = Frame::Prune { origin: None }.encode().unwrap();
    while raw.send_frames(std::slice::from_ref(&ping)).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "refused for {reason}, yet the connection stays open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node 1 (B) trusts agency A's org key only. Nodes 2 and 3 are A's, certified; node 4
/// holds an expired certificate from A; node 5 a certificate from another org that B
/// does not trust. Every one of 2–5 trusts B by its node key and dials it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_that_trusts_an_org_key_admits_exactly_its_certified_nodes() {
    let mut fed = Fed::start(5, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let org = org_init(d, "a.key");
    org_init(d, "z.key");
    certify(&fed, d, "a.key", 1, &["--valid", "30d"]);
    let cert2 = certify(&fed, d, "a.key", 2, &["--valid", "30d"]);
    // Valid for one second, an hour ago.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let hour_ago = (now - 3_600_000).to_string();
    certify(
        &fed,
        d,
        "a.key",
        3,
        &["--valid", "1s", "--not-before", &hour_ago],
    );
    certify(&fed, d, "z.key", 4, &["--valid", "30d"]);
    for i in 1..5 {
        fed.restart(i).await;
        trust_node(&fed, i, 0).await;
    }
    let (out, err, code) = run(fed.tocsin(0).args([
        "trust", "add", &org, "--org", "--level", "partner", "--name", "Agency A",
    ]));
    assert_eq!(code, 0, "{out}{err}");

    // Both certified nodes are admitted at the org's level, shown with their agency.
    for i in [1, 2] {
        let row = wait_connected(&fed, 0, &fed.key(i), true, "certified node")
            .await
            .unwrap();
        assert_eq!(row["level"], "partner", "{row}");
        assert_eq!(row["org"], org.as_str(), "{row}");
        assert_eq!(row["agency"], "CERT-A", "{row}");
        assert_eq!(row["name"], "Agency A", "{row}");
    }
    // The org key is an entry of the trust table, not a peer.
    assert!(fed.peer_row(0, &org).await.is_none());
    let (list, _, _) = run(fed.tocsin(0).args(["trust", "list"]));
    assert!(
        list.lines()
            .any(|l| l.contains(&org[..16]) && l.contains(" org ")),
        "{list}"
    );

    // The expired and the foreign certificates are refused, each with its reason.
    let line = wait_log(
        &fed,
        0,
        &["connection refused", &fed.key(3)[..8], "expired"],
    )
    .await;
    assert!(line.contains("certify it again"), "{line}");
    wait_log(
        &fed,
        0,
        &[
            "connection refused",
            &fed.key(4)[..8],
            "is not in the trust table",
        ],
    )
    .await;
    for i in [3, 4] {
        // Refused peers leave nothing behind: no peer row, no level.
        assert!(
            fed.peer_row(0, &fed.key(i)).await.is_none(),
            "node {} refused, yet kept",
            i + 1
        );
    }
    // AMBER goes both ways between B and each certified node.
    let mut from_a_ids = Vec::new();
    for i in [1, 2] {
        let id = fed.issue(i, alert("AMBER", "from agency A")).await;
        let v = fed.wait_for(0, &id).await;
        assert_eq!(v["alert"]["origin"], fed.key(i));
        assert_eq!(v["origin_agency"]["org"], org.as_str(), "{v}");
        from_a_ids.push(id);
    }
    let from_a = from_a_ids[1].clone();
    let from_b = fed.issue(0, alert("AMBER", "to agency A")).await;
    fed.wait_for(1, &from_b).await;
    fed.wait_for(2, &from_b).await;
    let leaked = fed.issue(0, alert("CLEAR", "not for refused nodes")).await;
    fed.wait_for(1, &leaked).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(3, &leaked).await;
    fed.assert_absent(4, &leaked).await;

    // B names agency A (its org key) as the recipient of a RED alert: both of A's nodes
    // get it, and their receipts count for A's row.
    let (out, err, code) = run(fed.tocsin(0).args([
        "--json",
        "issue",
        "--severity",
        "high",
        "--tlp",
        "RED",
        "--title",
        "for agency A",
        "--recipient",
        &org,
    ]));
    assert_eq!(code, 0, "{err}");
    let red = serde_json::from_str::<Value>(out.trim()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    fed.wait_for(1, &red).await;
    fed.wait_for(2, &red).await;
    let (_, err, code) = run(fed.tocsin(2).args(["ack", &red, "--by", "A duty desk"]));
    assert_eq!(code, 0, "{err}");
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (out, _, _) = run(fed.tocsin(0).args(["--json", "receipts", &red]));
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        let rows = v["recipients"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "one row, for the org: {v}");
        assert_eq!(rows[0]["receiver"], org.as_str());
        if rows[0]["state"] == "acknowledged" {
            assert_eq!(rows[0]["acked_by"], "A duty desk");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never acknowledged: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B shows whose agency an alert of node 2 comes from.
    let (out, _, _) = run(fed.tocsin(0).args(["show", &from_a]));
    assert!(out.contains("CERT-A"), "{out}");
    // The org key as the origin of a query lists exactly its nodes' alerts.
    let (out, err, code) = run(fed.tocsin(0).args(["--json", "list", "--origin", &org]));
    assert_eq!(code, 0, "{err}");
    let mut listed: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    listed.sort();
    from_a_ids.sort();
    assert_eq!(listed, from_a_ids, "{out}");
    // Both of A's nodes report seeing B's CLEAR alert: B counts one agency.
    for i in [1, 2] {
        let (_, err, code) = run(fed.tocsin(i).args(["sighting", &leaked, "--count", "2"]));
        assert_eq!(code, 0, "{err}");
    }
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (out, _, _) = run(fed.tocsin(0).args(["--json", "sightings", &leaked]));
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        if v["observers"].as_array().unwrap().len() == 2 {
            assert_eq!(v["agencies"], 1, "{v}");
            assert_eq!(v["total"], 4, "{v}");
            assert!(v["observers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["org"] == org.as_str() && r["name"] == "CERT-A"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One of A's nodes dies: the other keeps the agency connected.
    fed.cluster.kill(1).unwrap();
    wait_connected(&fed, 0, &fed.key(1), false, "killed node").await;
    let id = fed
        .issue(2, alert("AMBER", "through the second node"))
        .await;
    fed.wait_for(0, &id).await;

    // A stolen certificate is worth nothing: a raw peer with its own key presents node
    // 3's certificate and is refused at once.
    let stolen = Frame::Identity {
        cert: Some(serde_bytes::ByteBuf::from(std::fs::read(&cert2).unwrap())),
    };
    raw_is_refused(&fed, 77, Some(stolen), "certifies another node key").await;
    // Silence is refused once the admission time is up, and so is a first frame that is
    // not an identity.
    raw_is_refused(&fed, 78, None, "no certificate in time").await;
    let hello = Frame::Hello { epoch: 1, head: 0 };
    raw_is_refused(&fed, 79, Some(hello), "first frame was not its identity").await;

    // Blocking the org cuts its node at once, and what it issues after stays out.
    let (out, err, code) = run(fed
        .tocsin(0)
        .args(["trust", "set", &org, "--level", "blocked"]));
    assert_eq!(code, 0, "{out}{err}");
    wait_connected(&fed, 0, &fed.key(2), false, "node of a blocked org").await;
    let late = fed.issue(2, alert("CLEAR", "after the block")).await;
    tokio::time::sleep(QUIET_PERIOD * 2).await;
    fed.assert_absent(0, &late).await;
    // Trusting it again brings the node back, and catch-up brings the alert.
    let (out, err, code) = run(fed
        .tocsin(0)
        .args(["trust", "set", &org, "--level", "partner"]));
    assert_eq!(code, 0, "{out}{err}");
    fed.wait_for(0, &late).await;
}

/// Makes org keys `a.key` and `z.key` in `d`, and certificates `a.cert` (agency
/// CERT-A) and `z.cert` (agency Z), valid 30 days, for the raw peer key `[seed; 32]`.
/// Returns the two org keys and the node key, hex.
fn certified_by_a_and_z(d: &Path, seed: u8) -> (String, String, String) {
    let (org_a, org_z) = (org_init(d, "a.key"), org_init(d, "z.key"));
    let hex = PublicKey(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
    )
    .to_string();
    for (key, agency) in [("a", "CERT-A"), ("z", "Z")] {
        let out = d.join(format!("{key}.cert"));
        let file = format!("{key}.key");
        org_cli(
            d,
            &[
                "org",
                "certify",
                &hex,
                "--key",
                &file,
                "--agency",
                agency,
                "--valid",
                "30d",
                "--out",
                out.to_str().unwrap(),
            ],
        );
    }
    (org_a, org_z, hex)
}

/// A raw peer with key `[seed; 32]` connects to node 1 and presents `cert`; `None` if
/// node 1 refused the connection at once.
async fn raw_presents(fed: &Fed, seed: u8, cert: &Path) -> Option<Box<rawpeer::RawPeer>> {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let target = fed.cluster.nodes[0].peer_id.parse().unwrap();
    let addr = fed.cluster.nodes[0].addr().parse().unwrap();
    let Connect::Open(mut raw) = rawpeer::connect(&key, addr, target).await else {
        return None;
    };
    let identity = Frame::Identity {
        cert: Some(serde_bytes::ByteBuf::from(std::fs::read(cert).unwrap())),
    };
    let hello = Frame::Hello { epoch: 1, head: 0 };
    raw.send_frames(&[identity.encode().unwrap(), hello.encode().unwrap()])
        .await
        .ok()?;
    Some(raw)
}

/// A node admitted on agency A's certificate shows, on a later connection, a
/// certificate of another org Z that it made itself. It must not become Z's node here:
/// that would take it out of A's block, revocations and expiry. It is cut and stays A's;
/// it is admitted again on A's certificate, and blocking A still cuts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_change_agency_by_showing_another_org_s_certificate() {
    let fed = Fed::start(1, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seed = 91;
    let (org_a, org_z, hex) = certified_by_a_and_z(d, seed);
    let (out, err, code) = run(fed.tocsin(0).args([
        "trust", "add", &org_a, "--org", "--level", "partner", "--name", "Agency A",
    ]));
    assert_eq!(code, 0, "{out}{err}");

    let admitted_as_a = |what: &'static str| {
        let (fed, cert, hex, org_a) = (&fed, d.join("a.cert"), hex.clone(), org_a.clone());
        async move {
            let raw = raw_presents(fed, seed, &cert).await.expect(what);
            let row = wait_connected(fed, 0, &hex, true, what).await.unwrap();
            assert_eq!(row["org"], org_a.as_str(), "{what}: {row}");
            raw
        }
    };
    let raw = admitted_as_a("admitted on A's certificate").await;
    drop(raw);
    wait_connected(&fed, 0, &hex, false, "closed raw peer").await;

    // The same node key, now with Z's certificate: refused, with the reason logged.
    let mut raw = raw_presents(&fed, seed, &d.join("z.cert")).await;
    wait_log(
        &fed,
        0,
        &["connection refused", &hex[..8], "now presents one of org"],
    )
    .await;
    if let Some(r) = raw.as_mut() {
        wait_closed(r, "showing another org's certificate").await;
    }
    drop(raw);
    wait_connected(&fed, 0, &hex, false, "node that showed Z's certificate").await;
    if let Some(row) = fed.peer_row(0, &hex).await {
        assert_ne!(
            row["org"],
            org_z.as_str(),
            "Z's certificate was kept: {row}"
        );
    }

    // A's certificate admits it again, still as A's; blocking A cuts it.
    let _raw = admitted_as_a("admitted again on A's certificate").await;
    let (out, err, code) = run(fed
        .tocsin(0)
        .args(["trust", "set", &org_a, "--level", "blocked"]));
    assert_eq!(code, 0, "{out}{err}");
    wait_connected(&fed, 0, &hex, false, "node of a blocked org").await;
}

/// A node trusted on its own key showed agency A's certificate; after node 1 restarts,
/// it shows another org's, Z's. The certificate is ignored (the node stays connected,
/// on its own entry) and node 1 still knows it as A's: what it showed before is kept
/// across restarts, so a restart does not open the door to a change of agency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_trusted_on_its_own_key_keeps_its_agency_across_a_restart() {
    let mut fed = Fed::start(1, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seed = 92;
    let (org_a, org_z, hex) = certified_by_a_and_z(d, seed);
    post(
        &fed,
        0,
        "/v1/trust",
        json!({"key": hex, "level": "member", "name": "own entry"}),
    )
    .await;
    let raw = raw_presents(&fed, seed, &d.join("a.cert"))
        .await
        .expect("trusted on its key");
    // Allowed on its key, it shows as connected before its identity frame is read:
    // wait for the org too.
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let row = wait_connected(&fed, 0, &hex, true, "node with A's certificate")
            .await
            .unwrap();
        if row["org"] == org_a.as_str() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A's certificate never kept: {row}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(raw);
    fed.restart(0).await;
    let _raw = raw_presents(&fed, seed, &d.join("z.cert"))
        .await
        .expect("still trusted on its key");
    wait_log(
        &fed,
        0,
        &["certificate of another org was ignored", &hex[..8]],
    )
    .await;
    let row = wait_connected(&fed, 0, &hex, true, "node with Z's certificate")
        .await
        .unwrap();
    assert_ne!(
        row["org"],
        org_z.as_str(),
        "Z's certificate was kept after the restart: {row}"
    );
}

/// A revocation relayed by a peer, of a node never seen here: kept when the revoking
/// org is an org entry at member or partner, not when it is public (a public org is
/// trusted with what it publishes, not to take other agencies' nodes out). Both come,
/// in that order, on one raw peer's stream; the second being held shows the first was
/// handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_org_cannot_revoke_a_node_it_never_certified_here() {
    let fed = Fed::start(1, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let org_p = org_init(d, "p.key");
    let org_m = org_init(d, "m.key");
    for (org, level) in [(&org_p, "public"), (&org_m, "member")] {
        let (out, err, code) = run(fed.tocsin(0).args([
            "trust", "add", org, "--org", "--level", level, "--name", level,
        ]));
        assert_eq!(code, 0, "{out}{err}");
    }
    let hex_of = |seed: u8| {
        PublicKey(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes(),
        )
        .to_string()
    };
    let (by_public, by_member) = (hex_of(93), hex_of(94));
    let mut frames = Vec::new();
    for (victim, key, name) in [(&by_public, "p.key", "p"), (&by_member, "m.key", "m")] {
        let cert = d.join(format!("{name}.cert"));
        let rev = d.join(format!("{name}.revocation"));
        org_cli(
            d,
            &[
                "org",
                "certify",
                victim,
                "--key",
                key,
                "--agency",
                name,
                "--out",
                cert.to_str().unwrap(),
            ],
        );
        org_cli(
            d,
            &[
                "org",
                "revoke",
                victim,
                "--key",
                key,
                "--reason",
                "compromised",
                "--out",
                rev.to_str().unwrap(),
            ],
        );
        let frame = Frame::Revoke {
            revocation: serde_bytes::ByteBuf::from(std::fs::read(&rev).unwrap()),
            cert: serde_bytes::ByteBuf::from(std::fs::read(&cert).unwrap()),
        };
        frames.push(frame.encode().unwrap());
    }
    // The relay: trusted by node 1 on its own key, at member.
    let relay = SigningKey::from_bytes(&[95; 32]);
    let relay_hex = PublicKey(relay.verifying_key().to_bytes()).to_string();
    post(
        &fed,
        0,
        "/v1/trust",
        json!({"key": relay_hex, "level": "member", "name": "relay"}),
    )
    .await;
    let target = fed.cluster.nodes[0].peer_id.parse().unwrap();
    let addr = fed.cluster.nodes[0].addr().parse().unwrap();
    let Connect::Open(mut raw) = rawpeer::connect(&relay, addr, target).await else {
        panic!("the relay is trusted and connects");
    };
    let mut all = vec![
        Frame::Identity { cert: None }.encode().unwrap(),
        Frame::Hello { epoch: 1, head: 0 }.encode().unwrap(),
    ];
    all.extend(frames);
    raw.send_frames(&all).await.unwrap();
    let deadline = tokio::time::Instant::now() + SETTLE;
    let held = loop {
        let held = revoked_on(&fed, 0).await;
        if held.contains(&by_member) {
            break held;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the member org's revocation was not kept: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        held,
        vec![by_member.clone()],
        "the public org's revocation was kept"
    );
    drop(raw);
}

/// Every revocation node `i` holds, by revoked node key.
async fn revoked_on(fed: &Fed, i: usize) -> Vec<String> {
    let v = fed.cluster.nodes[i]
        .client()
        .get("/v1/revocations")
        .await
        .unwrap();
    v["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_string())
        .collect()
}

/// Agency A revokes its node 2 (index 1) from a time between two of its alerts. The
/// revocation is given to A's other node (3), which sends it on: partner B (1) and C (4),
/// which both trust A's org key, hold it and cut node 2 within seconds; node 2's alert
/// from before the revocation stays valid everywhere, the later one is marked and no
/// longer shared, so a node that joins afterwards (5) gets only the earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_everywhere_and_only_its_alerts_from_before_stay() {
    let mut fed = Fed::start(
        5,
        vec![tocsin_tools::cluster::Link::sym(
            0,
            3,
            tocsin_proto::TrustLevel::Member,
        )],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let org = org_init(d, "a.key");
    let cert1 = certify(&fed, d, "a.key", 1, &["--valid", "30d"]);
    certify(&fed, d, "a.key", 2, &["--valid", "30d"]);
    for (i, level) in [(0, "partner"), (3, "member")] {
        post(
            &fed,
            i,
            "/v1/trust",
            json!({"key": org, "level": level, "org": true, "name": "Agency A"}),
        )
        .await;
    }
    for i in [1, 2] {
        fed.restart(i).await;
        trust_node(&fed, i, 0).await;
        wait_connected(&fed, 0, &fed.key(i), true, "certified node").await;
    }
    // A's two nodes also trust each other.
    trust_node(&fed, 2, 1).await;
    trust_node(&fed, 1, 2).await;

    let early = fed.issue(1, alert("CLEAR", "before the revocation")).await;
    fed.wait_for(3, &early).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let revoked_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = fed
        .issue(1, alert("CLEAR", "after the revocation time"))
        .await;
    fed.wait_for(3, &late).await;

    let rev = d.join("n2.revocation");
    let rev_s = rev.to_str().unwrap();
    let key1 = fed.key(1);
    org_cli(
        d,
        &[
            "org",
            "revoke",
            &key1,
            "--key",
            "a.key",
            "--reason",
            "laptop stolen",
            "--at",
            &revoked_at,
            "--out",
            rev_s,
        ],
    );
    // A damaged revocation or a certificate of another node is refused, naming the file.
    let (_, err, code) = run(fed
        .tocsin(2)
        .args(["revocation", "add", &cert1, "--cert", &cert1]));
    assert_ne!(code, 0);
    assert!(err.contains("revocation"), "{err}");
    let (out, err, code) = run(fed
        .tocsin(2)
        .args(["revocation", "add", rev_s, "--cert", &cert1]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revoked by CERT-A"), "{out}");

    // Within seconds every node that deals with A holds it, and node 2 is cut off.
    let deadline = tokio::time::Instant::now() + SETTLE;
    for i in [0, 2, 3] {
        while !revoked_on(&fed, i).await.contains(&key1) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} never got the revocation",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_connected(&fed, 0, &key1, false, "revoked node at B").await;
    wait_connected(&fed, 2, &key1, false, "revoked node at its sibling").await;
    wait_log(
        &fed,
        0,
        &[
            "node key revoked by its agency",
            &key1[..8],
            "laptop stolen",
        ],
    )
    .await;
    // It stays out: its reconnection is refused for the revocation.
    wait_log(
        &fed,
        0,
        &["connection refused", &key1[..8], "revoked its key"],
    )
    .await;

    // The earlier alert stays valid, the later one is marked, at B and at C.
    for i in [0, 3] {
        let e = fed.get(i, &early).await.unwrap();
        assert_eq!(e["origin_revoked"]["issued_after"], false, "{e}");
        assert_eq!(e["origin_revoked"]["reason"], "laptop stolen", "{e}");
        let l = fed.get(i, &late).await.unwrap();
        assert_eq!(l["origin_revoked"]["issued_after"], true, "{l}");
    }
    let (out, _, _) = run(fed.tocsin(0).args(["show", &late]));
    assert!(
        out.contains("do not trust it") && out.contains("laptop stolen"),
        "{out}"
    );
    let (out, _, _) = run(fed.tocsin(0).args(["show", &early]));
    assert!(out.contains("stays valid"), "{out}");

    // Nobody else can revoke A's nodes: C makes its own org key, "certifies" A's other
    // node (3) with it, revokes it and gives that to C itself, which sends it to B. B
    // does not trust that org, so it keeps nothing and node 3 stays connected.
    // The same goes for a node B trusts by its own key: C forges one for itself, which
    // it applies, but B does not.
    // B even trusts that org: it speaks for no node that showed another org's certificate.
    let z = org_init(d, "z.key");
    post(
        &fed,
        0,
        "/v1/trust",
        json!({"key": z, "level": "member", "org": true, "name": "Agency Z"}),
    )
    .await;
    let (key2, key3) = (fed.key(2), fed.key(3));
    for (n, victim) in [(2, &key2), (3, &key3)] {
        let fake_cert = d.join(format!("fake{n}.cert"));
        let fake_rev = d.join(format!("fake{n}.revocation"));
        let (c, r) = (fake_cert.to_str().unwrap(), fake_rev.to_str().unwrap());
        org_cli(
            d,
            &[
                "org", "certify", victim, "--key", "z.key", "--agency", "M", "--out", c,
            ],
        );
        org_cli(
            d,
            &[
                "org", "revoke", victim, "--key", "z.key", "--reason", "forged", "--at", "0",
                "--out", r,
            ],
        );
        let (out, err, code) = run(fed.tocsin(3).args(["revocation", "add", r, "--cert", c]));
        assert_eq!(code, 0, "{out}{err}");
    }
    tokio::time::sleep(QUIET_PERIOD * 2).await;
    let held = revoked_on(&fed, 0).await;
    assert!(
        !held.contains(&key2) && !held.contains(&key3),
        "B kept a forgery: {held:?}"
    );
    assert!(
        connected(&fed, 0, &key2).await.is_some(),
        "node 3 was cut by a forgery"
    );
    assert!(connected(&fed, 0, &fed.key(3)).await.is_some(), "C was cut");
    // Not even for a moment: B never applied it (a node that shows its own org's
    // certificate would also make B drop it, but only after being cut once).
    let log = std::fs::read_to_string(fed.cluster.nodes[0].log_path()).unwrap();
    assert!(
        !log.lines()
            .any(|l| l.contains("node key revoked by its agency") && l.contains("forged")),
        "B applied a forgery"
    );
    let e = fed.get(0, &early).await.unwrap();
    assert_eq!(e["origin_revoked"]["reason"], "laptop stolen", "{e}");

    // A node that joins B now catches up on the earlier alert only.
    trust_node(&fed, 4, 0).await;
    post(
        &fed,
        0,
        "/v1/trust",
        json!({"key": fed.key(4), "level": "member", "name": "n5"}),
    )
    .await;
    fed.wait_for(4, &early).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(4, &late).await;

    // After a restart B still holds the revocation and still refuses the node.
    fed.restart(0).await;
    assert!(revoked_on(&fed, 0).await.contains(&key1));
    let l = fed.get(0, &late).await.unwrap();
    assert_eq!(l["origin_revoked"]["issued_after"], true, "{l}");
    tokio::time::sleep(QUIET_PERIOD).await;
    assert!(
        connected(&fed, 0, &key1).await.is_none(),
        "revoked node back after restart"
    );
}

/// `tocsin --json trust list` on node `i`.
fn trust_list(fed: &Fed, i: usize) -> String {
    let (out, err, code) = run(fed.tocsin(i).args(["--json", "trust", "list"]));
    assert_eq!(code, 0, "{err}");
    out
}

/// Agency A re-keys its node (1) mid-stream, as `docs/operations.md` says: stop it,
/// move the old key aside, `tocsind init` a new one, certify it, restart. Partner B (2)
/// stays up and streams alerts through it all; partner C (3) is down from before A's
/// last alert under the old key until after the rotation. Neither edits its trust
/// table (both trust A's org key only). Nothing is lost either way, catch-up resumes
/// where the old key's cursor was (B does not read A's whole log again), and the old
/// key's alerts stay valid and are relayed by the new key without a penalty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_keyed_node_loses_no_alert_no_partner_and_no_cursor() {
    const BEFORE: usize = 400;
    let mut fed = Fed::start(3, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let org = org_init(d, "a.key");
    let cert = certify(&fed, d, "a.key", 0, &["--valid", "30d"]);
    fed.restart(0).await;
    let a_addr = fed.cluster.nodes[0].addr();
    for i in [1, 2] {
        post(
            &fed,
            i,
            "/v1/trust",
            json!({"key": org, "level": "partner", "org": true, "name": "Agency A",
                   "addrs": [a_addr]}),
        )
        .await;
        trust_node(&fed, 0, i).await;
    }
    let old_key = fed.key(0);
    for i in [1, 2] {
        wait_connected(&fed, i, &old_key, true, "A under its old key").await;
    }
    let trust_before = [trust_list(&fed, 1), trust_list(&fed, 2)];

    // B and C are down while A issues; they catch up when they come back, which moves
    // their cursors on A's log (live alerts do not: they are pushed).
    for i in [1, 2] {
        fed.cluster.stop(i, Duration::from_secs(10)).unwrap();
    }
    let mut old_ids = Vec::new();
    for n in 0..BEFORE {
        old_ids.push(fed.issue(0, alert("CLEAR", &format!("old key {n}"))).await);
    }
    let old_amber = fed.issue(0, alert("AMBER", "old key, AMBER")).await;
    for i in [1, 2] {
        fed.cluster.start(i).unwrap();
        fed.cluster
            .wait_ready(i, Duration::from_secs(30))
            .await
            .unwrap();
    }
    for i in [1, 2] {
        fed.wait_for(i, &old_amber).await;
        fed.wait_for(i, &old_ids[BEFORE - 1]).await;
    }
    // C goes down; A's last alert under the old key reaches only B.
    fed.cluster.stop(2, Duration::from_secs(10)).unwrap();
    let last_old = fed.issue(0, alert("CLEAR", "old key, C is down")).await;
    fed.wait_for(1, &last_old).await;

    // B streams alerts all through the rotation.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = {
        let (client, stop) = (fed.cluster.nodes[1].client(), stop.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = client
                    .post("/v1/alerts", &alert("CLEAR", "B during the rotation"))
                    .await
                    .unwrap();
                ids.push(v["id"].as_str().unwrap().to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The rotation.
    fed.cluster.stop(0, Duration::from_secs(10)).unwrap();
    let data = fed.cluster.nodes[0].data_dir.clone();
    std::fs::rename(data.join("node.key"), data.join("node.key.retired")).unwrap();
    let mut init = std::process::Command::new(tocsin_tests::tocsind_bin());
    init.args(["init", "--json", "--data-dir"]).arg(&data);
    let (out, err, code) = run(&mut init);
    assert_eq!(code, 0, "tocsind init: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let new_key = v["public_key"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);
    std::fs::rename(&cert, d.join("n1.cert.retired")).unwrap();
    org_cli(
        d,
        &[
            "org", "certify", &new_key, "--key", "a.key", "--agency", "CERT-A", "--valid", "30d",
            "--out", &cert,
        ],
    );
    fed.cluster.nodes[0].key = new_key.clone();
    fed.cluster.nodes[0].peer_id = v["peer_id"].as_str().unwrap().to_string();
    fed.cluster.start(0).unwrap();
    fed.cluster
        .wait_ready(0, Duration::from_secs(30))
        .await
        .unwrap();

    // B admits the new key on its certificate and resumes catch-up at the old key's
    // cursor: it does not list A's log again (that alone is 32 bytes per alert).
    let row = wait_connected(&fed, 1, &new_key, true, "A under its new key")
        .await
        .unwrap();
    assert_eq!(row["level"], "partner", "{row}");
    assert_eq!(row["agency"], "CERT-A", "{row}");
    wait_log(&fed, 1, &["catch-up resumes", &new_key[..8], &old_key[..8]]).await;
    let deadline = tokio::time::Instant::now() + SETTLE;
    let row = loop {
        let row = fed.peer_row(1, &new_key).await.unwrap();
        if row["catching_up"] == false {
            break row;
        }
        assert!(tokio::time::Instant::now() < deadline, "{row}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let read = row["bytes_in"].as_u64().unwrap();
    assert!(
        read < (BEFORE as u64) * 32,
        "B read {read} bytes from A's new key: its whole log again"
    );

    // A's new alerts reach B; B's stream reaches A whole.
    let new_amber = fed.issue(0, alert("AMBER", "new key, AMBER")).await;
    let v = fed.wait_for(1, &new_amber).await;
    assert_eq!(v["alert"]["origin"], new_key.as_str());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let streamed = stream.await.unwrap();
    assert!(streamed.len() > 10, "{}", streamed.len());
    for id in &streamed {
        fed.wait_for(0, id).await;
    }

    // C comes back: it resumes at its cursor too, and gets the old key's last alert
    // from the new key (a relay, at an honest hop count: no penalty) and the new one.
    fed.cluster.start(2).unwrap();
    fed.cluster
        .wait_ready(2, Duration::from_secs(30))
        .await
        .unwrap();
    let v = fed.wait_for(2, &last_old).await;
    assert_eq!(v["alert"]["origin"], old_key.as_str());
    fed.wait_for(2, &new_amber).await;
    wait_log(&fed, 2, &["catch-up resumes", &new_key[..8], &old_key[..8]]).await;
    let row = fed.peer_row(2, &new_key).await.unwrap();
    assert_eq!(row["penalty"], 0, "{row}");

    // The old key's alerts stay valid everywhere; no partner changed its table.
    for i in [1, 2] {
        let v = fed.get(i, &old_amber).await.unwrap();
        assert_eq!(v["alert"]["origin"], old_key.as_str());
        assert!(v["origin_revoked"].is_null(), "{v}");
        fed.wait_for(i, &old_ids[0]).await;
    }
    assert_eq!([trust_list(&fed, 1), trust_list(&fed, 2)], trust_before);
}

/// B (1) trusts agency A's org key, and R (3) by its node key; R trusts A's node N (2) by
/// its node key and relays its alerts. Once B blocks A's org, N's alerts are dropped
/// even when R relays them, also after B restarts (B remembers which agency certified
/// N), and B still shows N's earlier alerts with their agency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_org_s_alerts_stay_out_even_relayed_and_after_a_restart() {
    use tocsin_proto::TrustLevel;
    use tocsin_tools::cluster::Link;
    let mut fed = Fed::start(
        3,
        vec![
            Link::sym(0, 2, TrustLevel::Member),
            Link::sym(1, 2, TrustLevel::Member),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let org = org_init(d, "a.key");
    certify(&fed, d, "a.key", 1, &["--valid", "30d"]);
    fed.restart(1).await;
    post(
        &fed,
        0,
        "/v1/trust",
        json!({"key": org, "level": "partner", "org": true, "name": "Agency A"}),
    )
    .await;
    trust_node(&fed, 1, 0).await;
    let n = fed.key(1);
    wait_connected(&fed, 0, &n, true, "A's node at B").await;
    let before = fed.issue(1, alert("CLEAR", "before the block")).await;
    fed.wait_for(0, &before).await;

    let (out, err, code) = run(fed
        .tocsin(0)
        .args(["trust", "set", &org, "--level", "blocked"]));
    assert_eq!(code, 0, "{out}{err}");
    wait_connected(&fed, 0, &n, false, "node of a blocked org").await;
    let relayed = fed
        .issue(1, alert("CLEAR", "relayed after the block"))
        .await;
    fed.wait_for(2, &relayed).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(0, &relayed).await;

    fed.restart(0).await;
    wait_connected(&fed, 0, &fed.key(2), true, "R after B's restart").await;
    let after_restart = fed
        .issue(1, alert("CLEAR", "relayed after B restarted"))
        .await;
    fed.wait_for(2, &after_restart).await;
    // A control alert of R's own, issued after, arrives: the link works.
    let control = fed.issue(2, alert("CLEAR", "R's own")).await;
    fed.wait_for(0, &control).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(0, &after_restart).await;
    fed.assert_absent(0, &relayed).await;
    let v = fed.get(0, &before).await.unwrap();
    assert_eq!(v["origin_agency"]["agency"], "CERT-A", "{v}");
    // R relayed in good faith: it is not penalised for it.
    let row = fed.peer_row(0, &fed.key(2)).await.unwrap();
    assert_eq!(row["penalty"], 0, "{row}");

    // N gets a certificate from another org, M, that B trusts: it stays blocked (it
    // cannot shed the block), and its alerts stay out.
    let m = org_init(d, "m.key");
    post(
        &fed,
        0,
        "/v1/trust",
        json!({"key": m, "level": "member", "org": true, "name": "Agency M"}),
    )
    .await;
    let cert = d.join("n2.cert");
    std::fs::remove_file(&cert).unwrap();
    let cert_s = cert.to_str().unwrap().to_string();
    org_cli(
        d,
        &[
            "org", "certify", &n, "--key", "m.key", "--agency", "M", "--out", &cert_s,
        ],
    );
    fed.restart(1).await;
    wait_connected(&fed, 2, &n, true, "N at R after its restart").await;
    let other_cert = fed.issue(1, alert("CLEAR", "with M's certificate")).await;
    fed.wait_for(2, &other_cert).await;
    tokio::time::sleep(QUIET_PERIOD * 2).await;
    assert!(connected(&fed, 0, &n).await.is_none(), "N shed the block");
    fed.assert_absent(0, &other_cert).await;

    // A revocation never lifts a block either: A revokes N from tomorrow on, B holds
    // the revocation, and N's alerts from before then still stay out. B is cut off from
    // R meanwhile: R knows N as A's node (the certificate N showed it first), so it
    // would take the revocation and cut N before N's alert reaches it.
    let tomorrow = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 86_400_000)
        .to_string();
    let a_cert = d.join("n2-a.cert");
    let a_cert_s = a_cert.to_str().unwrap().to_string();
    org_cli(
        d,
        &[
            "org", "certify", &n, "--key", "a.key", "--agency", "CERT-A", "--out", &a_cert_s,
        ],
    );
    let rev = d.join("n2.revocation");
    let rev_s = rev.to_str().unwrap().to_string();
    org_cli(
        d,
        &[
            "org", "revoke", &n, "--key", "a.key", "--reason", "rotated", "--at", &tomorrow,
            "--out", &rev_s,
        ],
    );
    fed.cluster
        .partition(vec![vec![0], vec![1, 2]])
        .await
        .unwrap();
    let (out, err, code) =
        run(fed
            .tocsin(0)
            .args(["revocation", "add", &rev_s, "--cert", &a_cert_s]));
    assert_eq!(code, 0, "{out}{err}");
    let after_rev = fed.issue(1, alert("CLEAR", "after the revocation")).await;
    fed.wait_for(2, &after_rev).await;
    fed.cluster.heal().await.unwrap();
    wait_connected(&fed, 0, &fed.key(2), true, "R after the heal").await;
    let control = fed.issue(2, alert("CLEAR", "R's own, again")).await;
    fed.wait_for(0, &control).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(0, &after_rev).await;
}

/// The TLP scope test of `federation.rs`, with the trust tables keyed by agency: node 1
/// trusts agency A's org key (its nodes 2 and 3) at partner and agency B's (node 4) at
/// member; nodes 2 and 3 trust node 1's own agency O at partner, node 4 trusts node 1 by
/// its node key. The rest are node keys: 1 – 5 public, 2 – 6 partner, 4 → 7 public and
/// 7 → 4 member. Every TLP reaches exactly the nodes it reaches with node keys, and a
/// RED alert that names agency A reaches both of its nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlp_scope_is_the_same_with_org_keys_in_the_tables() {
    use tocsin_proto::TrustLevel::{Member, Partner, Public};
    use tocsin_tools::cluster::Link;
    let links = vec![
        Link::sym(0, 4, Public),
        Link::sym(1, 5, Partner),
        Link {
            a: 3,
            b: 6,
            ab: Public,
            ba: Member,
        },
    ];
    let mut fed = Fed::start(7, links).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (o, a, b) = (
        org_init(d, "o.key"),
        org_init(d, "a.key"),
        org_init(d, "b.key"),
    );
    for (i, key) in [(0, "o.key"), (1, "a.key"), (2, "a.key"), (3, "b.key")] {
        certify(&fed, d, key, i, &["--valid", "30d"]);
        fed.restart(i).await;
    }
    let addr = |i: usize| fed.cluster.nodes[i].addr();
    let org_entry = |org: &str, level: &str, addrs: Vec<String>| json!({"key": org, "level": level, "org": true, "name": "agency", "addrs": addrs});
    post(
        &fed,
        0,
        "/v1/trust",
        org_entry(&a, "partner", vec![addr(1), addr(2)]),
    )
    .await;
    post(&fed, 0, "/v1/trust", org_entry(&b, "member", vec![addr(3)])).await;
    for i in [1, 2] {
        post(&fed, i, "/v1/trust", org_entry(&o, "partner", vec![])).await;
    }
    post(
        &fed,
        3,
        "/v1/trust",
        json!({"key": fed.key(0), "level": "member", "name": "n1"}),
    )
    .await;
    for i in [1, 2, 3] {
        wait_connected(&fed, 0, &fed.key(i), true, "org-keyed link").await;
    }
    let n = 7;
    let exactly = |id: String, holders: &'static [usize], what: &'static str| {
        let fed = &fed;
        async move {
            for &i in holders {
                fed.wait_for(i, &id).await;
            }
            tokio::time::sleep(QUIET_PERIOD).await;
            for i in 0..n {
                let has = fed.get(i, &id).await.is_some();
                assert_eq!(has, holders.contains(&i), "{what}: node {}", i + 1);
            }
        }
    };

    let amber = fed.issue(0, alert("AMBER", "amber: partners only")).await;
    exactly(amber, &[0, 1, 2], "AMBER").await;
    let strict = fed.issue(0, alert("AMBER+STRICT", "amber strict")).await;
    exactly(strict, &[0, 1, 2], "AMBER+STRICT").await;
    let mut red = alert("RED", "red: only node 2");
    red["recipients"] = json!([fed.key(1)]);
    exactly(fed.issue(0, red).await, &[0, 1], "RED").await;
    let mut red_member = alert("RED", "red to a member");
    red_member["recipients"] = json!([fed.key(3)]);
    exactly(fed.issue(0, red_member).await, &[0], "RED to a member").await;
    let mut red_org = alert("RED", "red to agency A");
    red_org["recipients"] = json!([a]);
    exactly(fed.issue(0, red_org).await, &[0, 1, 2], "RED to an agency").await;
    let green = fed.issue(0, alert("GREEN", "green: community")).await;
    exactly(green, &[0, 1, 2, 3, 5], "GREEN").await;
    let clear = fed.issue(0, alert("CLEAR", "clear: everyone")).await;
    exactly(clear, &[0, 1, 2, 3, 4, 5, 6], "CLEAR").await;
    // And back: node 2's AMBER reaches its partners, node 1 (through agency O) and
    // node 6 (by its node key), only.
    let back = fed.issue(1, alert("AMBER", "amber from agency A")).await;
    exactly(back, &[0, 1, 5], "AMBER from node 2").await;
}

/// The public key (hex) of the test key `[seed; 32]`.
fn hex_of(seed: u8) -> String {
    PublicKey(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
    )
    .to_string()
}

/// `tocsin org revoke` of `node` by the org key file `key` in `d`, from `at` (unix ms):
/// the revocation file.
fn revocation_file(d: &Path, key: &str, node: &str, at: u64, reason: &str) -> std::path::PathBuf {
    let out = d.join(format!("{node}-{key}-{at}.revocation"));
    org_cli(
        d,
        &[
            "org",
            "revoke",
            node,
            "--key",
            key,
            "--reason",
            reason,
            "--at",
            &at.to_string(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    out
}

/// A revocation (see [`revocation_file`]) as a `revoke` frame, with the certificate file
/// `cert`.
fn revoke_frame(d: &Path, key: &str, node: &str, at: u64, reason: &str, cert: &Path) -> Vec<u8> {
    let out = revocation_file(d, key, node, at, reason);
    Frame::Revoke {
        revocation: serde_bytes::ByteBuf::from(std::fs::read(&out).unwrap()),
        cert: serde_bytes::ByteBuf::from(std::fs::read(cert).unwrap()),
    }
    .encode()
    .unwrap()
}

/// `tocsin revocation add REV --cert CERT` on node `i`, which must succeed.
fn revocation_add(fed: &Fed, i: usize, rev: &Path, cert: &Path) {
    let (out, err, code) = run(fed.tocsin(i).args([
        "revocation",
        "add",
        rev.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
}

/// A CLEAR alert (or a cancel of `cancels`) signed by `key`, dated `issued_at`, as an
/// alert frame at `hops`.
fn alert_by(
    key: &SigningKey,
    issued_at: u64,
    cancels: Option<&str>,
    hops: u8,
) -> (String, Vec<u8>) {
    let body = tocsin_proto::AlertBody {
        v: tocsin_proto::FORMAT_VERSION,
        origin: PublicKey(key.verifying_key().to_bytes()),
        issued_at,
        expires_at: None,
        kind: if cancels.is_some() {
            tocsin_proto::Kind::Cancel
        } else {
            tocsin_proto::Kind::New
        },
        replaces: cancels.map(|id| id.parse().unwrap()),
        severity: tocsin_proto::Severity::High,
        tlp: tocsin_proto::Tlp::Clear,
        recipients: vec![],
        title: format!("signed at {issued_at}"),
        text: String::new(),
        indicators: vec![],
        tags: vec![],
        references: vec![],
    };
    let a = tocsin_proto::SignedAlert::sign(body, key).unwrap();
    let frame = Frame::Alert {
        hops,
        envelope: a.to_envelope(),
    };
    (a.id().to_string(), frame.encode().unwrap())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A revocation contains a stolen key. Node V, certified by agency A (trusted at
/// partner), is revoked by A. Then:
/// - a member relay passes on alerts signed by V and dated before the revocation, and a
///   cancel of V's real alert: none comes in (a stolen key dates what it signs), and
///   the relay is not penalised;
/// - V shows a certificate of another trusted org, W: it is refused, and A's
///   revocation stays (a revoked node does not shed it with another org's certificate);
/// - node U, trusted on its own key, showed A's certificate before node 1 restarted:
///   after the restart, A's revocation of U relayed by a peer is kept (what U showed is
///   remembered), and A signing ever earlier revocations of U moves its time only a few
///   times;
/// - an operator's revocation of U by another org Z gives way to A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stays_revoked_whatever_it_dates_or_shows_and_across_restarts() {
    let mut fed = Fed::start(1, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (v_seed, u_seed) = (81u8, 83u8);
    let (org_a, org_w, v_hex) = certified_by_a_and_z(d, v_seed);
    for (org, name) in [(&org_a, "Agency A"), (&org_w, "Agency W")] {
        post(
            &fed,
            0,
            "/v1/trust",
            json!({"key": org, "level": "partner", "org": true, "name": name}),
        )
        .await;
    }
    let v = SigningKey::from_bytes(&[v_seed; 32]);
    // V is admitted on A's certificate and sends one alert of its own.
    let mut raw_v = raw_presents(&fed, v_seed, &d.join("a.cert"))
        .await
        .expect("V admitted");
    let row = wait_connected(&fed, 0, &v_hex, true, "V on A's certificate")
        .await
        .unwrap();
    assert_eq!(row["org"], org_a.as_str(), "{row}");
    let (real, frame) = alert_by(&v, now_ms(), None, 1);
    raw_v.send_frames(&[frame]).await.unwrap();
    fed.wait_for(0, &real).await;
    drop(raw_v);
    wait_connected(&fed, 0, &v_hex, false, "V gone").await;

    // A revokes V from now on.
    let revoked_at = now_ms();
    let v_cert = d.join("v-a.cert");
    std::fs::copy(d.join("a.cert"), &v_cert).unwrap();
    let rev = revocation_file(d, "a.key", &v_hex, revoked_at, "key stolen");
    revocation_add(&fed, 0, &rev, &v_cert);
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The thief's alerts, dated before the revocation, relayed by a member.
    let (relay, mut raw_r, relay_hex) = fed.trusted_raw_peer(0, 82).await;
    let (backdated, f1) = alert_by(&v, revoked_at - 60_000, None, 2);
    let (cancel, f2) = alert_by(&v, revoked_at - 30_000, Some(&real), 2);
    let (control, f3) = alert_by(&relay, now_ms(), None, 1);
    raw_r
        .send_frames(&[
            Frame::Identity { cert: None }.encode().unwrap(),
            Frame::Hello { epoch: 1, head: 0 }.encode().unwrap(),
            f1,
            f2,
            f3,
        ])
        .await
        .unwrap();
    fed.wait_for(0, &control).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(0, &backdated).await;
    fed.assert_absent(0, &cancel).await;
    let r = fed.get(0, &real).await.unwrap();
    assert_eq!(r["state"], "active", "the thief cancelled V's alert: {r}");
    let row = fed.peer_row(0, &relay_hex).await.unwrap();
    assert_eq!(row["penalty"], 0, "the relay was penalised: {row}");

    // V shows W's certificate: refused, and A's revocation stays.
    let mut raw_v = raw_presents(&fed, v_seed, &d.join("z.cert")).await;
    wait_log(&fed, 0, &["connection refused", &v_hex[..8]]).await;
    if let Some(r) = raw_v.as_mut() {
        wait_closed(r, "a revoked node showing another org's certificate").await;
    }
    drop(raw_v);
    assert!(
        connected(&fed, 0, &v_hex).await.is_none(),
        "V admitted on W's certificate"
    );
    assert!(
        revoked_on(&fed, 0).await.contains(&v_hex),
        "V shed A's revocation"
    );

    // U is trusted on its own key and shows A's certificate; node 1 restarts.
    let u_hex = hex_of(u_seed);
    let u_cert = d.join("u-a.cert");
    org_cli(
        d,
        &[
            "org",
            "certify",
            &u_hex,
            "--key",
            "a.key",
            "--agency",
            "CERT-A",
            "--valid",
            "30d",
            "--out",
            u_cert.to_str().unwrap(),
        ],
    );
    post(
        &fed,
        0,
        "/v1/trust",
        json!({"key": u_hex, "level": "partner", "name": "U"}),
    )
    .await;
    let raw_u = raw_presents(&fed, u_seed, &u_cert)
        .await
        .expect("U admitted");
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let row = fed.peer_row(0, &u_hex).await;
        if row.as_ref().is_some_and(|r| r["org"] == org_a.as_str()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "U's agency never showed: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(raw_u);
    drop(raw_r);
    fed.restart(0).await;

    // An operator's revocation of U by an org of its own making, Z.
    org_init(d, "zz.key");
    let uz_cert = d.join("u-z.cert");
    org_cli(
        d,
        &[
            "org",
            "certify",
            &u_hex,
            "--key",
            "zz.key",
            "--agency",
            "Z",
            "--out",
            uz_cert.to_str().unwrap(),
        ],
    );
    let uz_rev = revocation_file(d, "zz.key", &u_hex, now_ms(), "by Z");
    revocation_add(&fed, 0, &uz_rev, &uz_cert);

    // A relay passes on A's revocation of U, then A signs ever earlier ones.
    let target = fed.cluster.nodes[0].peer_id.parse().unwrap();
    let addr = fed.cluster.nodes[0].addr().parse().unwrap();
    let Connect::Open(mut raw_r) = rawpeer::connect(&relay, addr, target).await else {
        panic!("the relay is trusted and connects");
    };
    let t = now_ms();
    let mut frames = vec![
        Frame::Identity { cert: None }.encode().unwrap(),
        Frame::Hello { epoch: 1, head: 0 }.encode().unwrap(),
    ];
    for step in 0..10u64 {
        frames.push(revoke_frame(
            d,
            "a.key",
            &u_hex,
            t - step * 1_000,
            "laptop lost",
            &u_cert,
        ));
    }
    raw_r.send_frames(&frames).await.unwrap();
    let (control, f) = alert_by(&relay, now_ms(), None, 1);
    raw_r.send_frames(&[f]).await.unwrap();
    fed.wait_for(0, &control).await;
    let held = fed.cluster.nodes[0]
        .client()
        .get("/v1/revocations")
        .await
        .unwrap();
    let u_row = held["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == u_hex.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("A's revocation of U was not kept: {held}"));
    assert_eq!(
        u_row["org"],
        org_a.as_str(),
        "A's revocation of U did not take over from Z's: {u_row}"
    );
    assert_eq!(
        u_row["revoked_at"].as_u64(),
        Some(t - 4_000),
        "the time moved earlier more than 4 times, or never: {u_row}"
    );
    let row = fed.peer_row(0, &relay_hex).await.unwrap();
    assert_eq!(row["penalty"], 0, "the relay was penalised: {row}");

    // X, not seen here yet, is revoked first by Y, a member org of this node's table
    // that certified it too, then by its own org A, whose revocation cannot take the
    // slot yet (nobody knows which org is X's). X then shows A's certificate: A's
    // revocation, kept waiting, applies, and X is refused.
    let x_seed = 84u8;
    let x_hex = hex_of(x_seed);
    let org_y = org_init(d, "y.key");
    post(
        &fed,
        0,
        "/v1/trust",
        json!({"key": org_y, "level": "member", "org": true, "name": "Agency Y"}),
    )
    .await;
    let mut x_certs = Vec::new();
    for key in ["y.key", "a.key"] {
        let cert = d.join(format!("x-{key}.cert"));
        org_cli(
            d,
            &[
                "org",
                "certify",
                &x_hex,
                "--key",
                key,
                "--agency",
                key,
                "--valid",
                "30d",
                "--out",
                cert.to_str().unwrap(),
            ],
        );
        x_certs.push(cert);
    }
    let t = now_ms();
    raw_r
        .send_frames(&[
            revoke_frame(d, "y.key", &x_hex, t, "says Y", &x_certs[0]),
            revoke_frame(d, "a.key", &x_hex, t, "says A", &x_certs[1]),
        ])
        .await
        .unwrap();
    let (control, f) = alert_by(&relay, now_ms(), None, 1);
    raw_r.send_frames(&[f]).await.unwrap();
    fed.wait_for(0, &control).await;
    let mut raw_x = raw_presents(&fed, x_seed, &x_certs[1]).await;
    wait_log(
        &fed,
        0,
        &["connection refused", &x_hex[..8], "revoked its key"],
    )
    .await;
    if let Some(r) = raw_x.as_mut() {
        wait_closed(r, "a node its own org revoked").await;
    }
    drop(raw_x);
    assert!(connected(&fed, 0, &x_hex).await.is_none(), "X admitted");
    let held = fed.cluster.nodes[0]
        .client()
        .get("/v1/revocations")
        .await
        .unwrap();
    let x_row = held["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == x_hex.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no revocation of X is held: {held}"));
    assert_eq!(x_row["org"], org_a.as_str(), "{x_row}");
    drop(raw_r);
}

/// An agency replaces its org key: partners remove the old org entry and trust the new
/// one, and the agency certifies its nodes again. A node seen here with the old org's
/// certificate (still valid) is admitted on the new one: only an org that is still an
/// org entry here holds its nodes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_re_certified_under_a_new_org_key_is_admitted_once_the_old_entry_is_gone() {
    let fed = Fed::start(1, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seed = 86;
    let (org_old, org_new, hex) = certified_by_a_and_z(d, seed);
    post(
        &fed,
        0,
        "/v1/trust",
        json!({"key": org_old, "level": "partner", "org": true, "name": "Agency A"}),
    )
    .await;
    let raw = raw_presents(&fed, seed, &d.join("a.cert"))
        .await
        .expect("admitted on the old org's certificate");
    wait_connected(&fed, 0, &hex, true, "on the old org's certificate").await;
    drop(raw);
    wait_connected(&fed, 0, &hex, false, "gone").await;
    for args in [
        vec!["trust", "remove", org_old.as_str()],
        vec![
            "trust", "add", &org_new, "--org", "--level", "partner", "--name", "Agency A",
        ],
    ] {
        let (out, err, code) = run(fed.tocsin(0).args(&args));
        assert_eq!(code, 0, "{out}{err}");
    }
    let _raw = raw_presents(&fed, seed, &d.join("z.cert"))
        .await
        .expect("not refused at once");
    let row = wait_connected(&fed, 0, &hex, true, "on the new org's certificate")
        .await
        .unwrap();
    assert_eq!(row["org"], org_new.as_str(), "{row}");
}
