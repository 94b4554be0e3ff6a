//! Federation over real `tocsind` processes on 127.0.0.1: reach, TLP scope, the trust
//! gate, integrity (raw frames from a misbehaving peer), catch-up, partitions, and live
//! trust changes. Each test starts its own nodes and stops them when it ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use tocsin_proto::TrustLevel::{self, Blocked, Member, Partner, Public};
use tocsin_tests::{alert, Fed, ARRIVAL_TIMEOUT, QUIET_PERIOD};
use tocsin_tools::cluster::Link;

fn link(a: usize, b: usize, level: TrustLevel) -> Link {
    Link::sym(a, b, level)
}

/// Waits until node `i` holds `id` in `state`; fails with `what` after
/// `ARRIVAL_TIMEOUT`.
async fn wait_state(fed: &Fed, i: usize, id: &str, state: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let v = fed.get(i, id).await;
        if v.as_ref().is_some_and(|v| v["state"] == state) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {v:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for every node in `holders` to hold `id`, then checks, after a quiet period,
/// that no other node of `all` holds it.
async fn assert_exactly(fed: &Fed, id: &str, holders: &[usize], all: usize, what: &str) {
    for &i in holders {
        fed.wait_for(i, id).await;
    }
    tokio::time::sleep(QUIET_PERIOD).await;
    for i in 0..all {
        let has = fed.get(i, id).await.is_some();
        assert_eq!(
            has,
            holders.contains(&i),
            "{what}: node {} {} the alert",
            i + 1,
            if has { "holds" } else { "lacks" }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_and_green_reach_the_end_of_a_five_member_line_in_four_hops() {
    let fed = Fed::line(5, Member).await;
    let clear = fed.issue(0, alert("CLEAR", "clear across the line")).await;
    let green = fed.issue(0, alert("GREEN", "green across the line")).await;
    for id in [&clear, &green] {
        let v = fed.wait_for(4, id).await;
        assert_eq!(v["provenance"]["hops"], 4, "{v}");
        assert_eq!(v["provenance"]["from"], fed.key(3), "delivered by node 4");
        assert_eq!(v["alert"]["origin"], fed.key(0));
        assert_eq!(v["signature"], "valid");
    }
    let (out, err, code) = tocsin_tests::run(fed.tocsin(4).args(["show", &green]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("4 hops") || out.contains("hops: 4") || out.contains("at 4"),
        "show includes provenance: {out}"
    );
}

/// Node 1 (index 0) is the origin. Its links: 2 and 3 partner, 4 member, 5 public.
/// Behind them: 2–6 partner; 4 holds 7 at public while 7 holds 4 at member (so 7
/// accepts relays from 4, and 4 may send 7 only CLEAR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlp_scope_amber_red_green_reach_exactly_who_they_may() {
    let links = vec![
        link(0, 1, Partner),
        link(0, 2, Partner),
        link(0, 3, Member),
        link(0, 4, Public),
        link(1, 5, Partner),
        Link {
            a: 3,
            b: 6,
            ab: Public,
            ba: Member,
        },
    ];
    let fed = Fed::start(7, links).await;
    let n = 7;

    let amber = fed.issue(0, alert("AMBER", "amber: partners only")).await;
    assert_exactly(&fed, &amber, &[0, 1, 2], n, "AMBER").await;

    let strict = fed.issue(0, alert("AMBER+STRICT", "amber strict")).await;
    assert_exactly(&fed, &strict, &[0, 1, 2], n, "AMBER+STRICT").await;

    let mut red = alert("RED", "red: only node 2");
    red["recipients"] = json!([fed.key(1)]);
    let red = fed.issue(0, red).await;
    assert_exactly(&fed, &red, &[0, 1], n, "RED").await;

    // RED naming a member (not a partner) reaches nobody.
    let mut red_member = alert("RED", "red to a member");
    red_member["recipients"] = json!([fed.key(3)]);
    let red_member = fed.issue(0, red_member).await;
    assert_exactly(&fed, &red_member, &[0], n, "RED to a member").await;

    let green = fed.issue(0, alert("GREEN", "green: community")).await;
    assert_exactly(&fed, &green, &[0, 1, 2, 3, 5], n, "GREEN").await;

    let clear = fed.issue(0, alert("CLEAR", "clear: everyone")).await;
    assert_exactly(&fed, &clear, &[0, 1, 2, 3, 4, 5, 6], n, "CLEAR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_cannot_connect_and_nothing_it_sends_is_stored() {
    use tocsin_tests::rawpeer::{connect, Connect};
    let fed = Fed::line(2, Member).await;
    let stranger = tocsin_proto::SigningKey::from_bytes(&[42u8; 32]);
    let node = &fed.cluster.nodes[0];
    let target: libp2p::PeerId = node.peer_id.parse().unwrap();
    let alert = sign(&stranger, tocsin_proto::Tlp::Clear, "from a stranger");
    match connect(&stranger, node.addr().parse().unwrap(), target).await {
        Connect::Refused(_) => {}
        Connect::Open(mut peer) => {
            // If the stream opened at all, whatever it sends must be dropped.
            let _ = peer.send_frames(&[alert_frame(&alert, 1)]).await;
        }
    }
    tokio::time::sleep(QUIET_PERIOD).await;
    for i in 0..2 {
        assert!(fed.get(i, &alert.id().to_string()).await.is_none());
        let connected = fed.cluster.connected(i).await.unwrap();
        assert!(!connected.contains(&hex(&stranger)));
    }
    let net = node.client().get("/v1/net").await.unwrap();
    assert!(
        net["connections_refused"].as_u64() >= Some(1),
        "refusal counted: {net}"
    );
}

/// A peer that still trusts a node which has blocked it keeps dialling it. The
/// handshake completes before the refusal, so a connection alone is not a session: the
/// redial backs off as after a failed dial, and neither side logs every attempt at info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_peer_backs_off_instead_of_redialling_at_once() {
    // Node 2 trusts node 1 and dials it; node 1 has blocked node 2.
    let links = vec![Link {
        a: 1,
        b: 0,
        ab: Partner,
        ba: Blocked,
    }];
    let fed = Fed::start(2, links).await;
    let watched = Duration::from_secs(6);
    tokio::time::sleep(watched).await;
    let refused = counter(&fed, 0, "tocsin_connections_refused_total").await;
    // The cluster's backoff starts at 100 ms and doubles up to 2 s (±25%): about eight
    // attempts in six seconds. Redialling after every refusal makes about sixty.
    assert!(refused >= 2, "node 2 kept trying: {refused} refused");
    assert!(
        refused <= 16,
        "{refused} connections refused in {watched:?}: the redial does not back off"
    );
    assert!(fed
        .peer_row(0, &fed.key(1))
        .await
        .is_none_or(|p| p["connected"] != true));
    for i in 0..2 {
        let log = std::fs::read_to_string(fed.cluster.nodes[i].log_path()).unwrap();
        let info_lines = log
            .lines()
            .filter(|l| {
                l.contains("INFO")
                    && (l.contains("peer connected") || l.contains("connection refused"))
            })
            .count();
        assert!(
            info_lines <= 2,
            "node {}: {info_lines} info lines about the refused link:\n{log}",
            i + 1
        );
    }
}

/// The value of a counter in node `i`'s `/metrics`.
async fn counter(fed: &Fed, i: usize, name: &str) -> u64 {
    let text = fed.cluster.nodes[i]
        .client()
        .get_text("/metrics")
        .await
        .unwrap();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            l.starts_with("tocsin_") || l.starts_with("libp2p_"),
            "a series outside the tocsin_/libp2p_ namespaces: {l}"
        );
    }
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}")) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_origin_is_dropped_even_when_a_trusted_member_relays_it() {
    // 1 – 2 – 3 members; 3 blocks 1 (an entry, no link).
    let mut links = vec![link(0, 1, Member), link(1, 2, Member)];
    links.push(Link {
        a: 0,
        b: 2,
        ab: Member,
        ba: Blocked,
    });
    let fed = Fed::start(3, links).await;
    let id = fed.issue(0, alert("CLEAR", "from a blocked origin")).await;
    assert_exactly(&fed, &id, &[0, 1], 3, "blocked origin").await;
    let row = fed.peer_row(2, &fed.key(1)).await.unwrap();
    assert!(
        row["rejections"]["blocked_origin"].as_u64() >= Some(1),
        "counted per peer: {row}"
    );
    assert_eq!(row["penalty"], 0, "a benign rejection is not penalised");
    // The relaying member is still connected and other alerts still flow.
    let ok = fed.issue(1, alert("CLEAR", "from node 2")).await;
    fed.wait_for(2, &ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_badly_signed_alerts_are_rejected_counted_and_penalised() {
    let fed = Fed::line(2, Member).await;
    let (raw, mut peer) = trusted_raw_peer(&fed, 7).await;
    let good = sign(&raw, tocsin_proto::Tlp::Clear, "good alert from raw");
    let tampered = sign(&raw, tocsin_proto::Tlp::Clear, "tampered alert AAAA");
    let badsig = sign(&raw, tocsin_proto::Tlp::Clear, "bad signature alert");
    let mut body = tampered.body_bytes().to_vec();
    let at = body.windows(4).position(|w| w == b"AAAA").unwrap();
    body[at] = b'B';
    // Validly signed, but dated 1 January 2100: it would be listed first for 74 years.
    let mut future = self::body(&raw, "dated in 2100");
    future.issued_at = 4_102_444_800_000;
    let future = tocsin_proto::SignedAlert::sign(future, &raw).unwrap();
    let frames = vec![
        b"\xff\x00not cbor".to_vec(),
        envelope_frame(body.clone(), tampered.signature().to_vec(), 1),
        envelope_frame(badsig.body_bytes().to_vec(), vec![0u8; 64], 1),
        alert_frame(&future, 1),
        alert_frame(&good, 1),
    ];
    peer.send_frames(&frames).await.unwrap();

    let good_id = good.id().to_string();
    fed.wait_for(0, &good_id).await;
    fed.wait_for(1, &good_id).await; // relayed on
    let tampered_id = tocsin_proto::AlertId::of_body(&body).to_string();
    for i in 0..2 {
        fed.assert_absent(i, &tampered_id).await;
        fed.assert_absent(i, &badsig.id().to_string()).await;
        fed.assert_absent(i, &future.id().to_string()).await;
    }
    let row = fed.peer_row(0, &hex(&raw)).await.unwrap();
    assert_eq!(row["rejections"]["future_dated"], 1, "{row}");
    assert_eq!(row["rejections"]["bad_signature"], 2, "{row}");
    assert_eq!(row["rejections"]["malformed_frame"], 1, "{row}");
    assert!(row["penalty"].as_u64().unwrap() >= 50, "{row}");
    assert_eq!(row["alerts_in"], 1);

    // Past the threshold (100) the peer is disconnected and banned.
    // (The score decays by 1 point a second, so send a margin.)
    let more: Vec<Vec<u8>> = (0..6).map(|_| b"\xff".to_vec()).collect();
    let _ = peer.send_frames(&more).await;
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let row = fed.peer_row(0, &hex(&raw)).await.unwrap();
        if row["banned_until"].is_u64() && row["connected"] == false {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not banned: {row}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Honest traffic is unaffected.
    let id = fed
        .issue(1, alert("GREEN", "honest traffic still flows"))
        .await;
    fed.wait_for(0, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_wins_whatever_the_order_of_arrival() {
    let fed = Fed::line(2, Member).await;
    let (raw, mut peer) = trusted_raw_peer(&fed, 9).await;
    let node = &fed.cluster.nodes[0];
    let original = sign(&raw, tocsin_proto::Tlp::Clear, "to be cancelled");
    let cancel = sign_kind(
        &raw,
        tocsin_proto::Kind::Cancel,
        Some(original.id()),
        "withdrawn",
    );
    // Cancel first, then the original, then the original again (a late copy).
    peer.send_frames(&[alert_frame(&cancel, 1)]).await.unwrap();
    fed.wait_for(0, &cancel.id().to_string()).await;
    peer.send_frames(&[alert_frame(&original, 1)])
        .await
        .unwrap();
    let id = original.id().to_string();
    let v = fed.wait_for(0, &id).await;
    assert_eq!(v["state"], "cancelled", "stored, but as cancelled: {v}");
    // Node 2 gets the cancel; the retracted original is not relayed, so node 2 either
    // lacks it or holds it as cancelled, never active.
    fed.wait_for(1, &cancel.id().to_string()).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    if let Some(v) = fed.get(1, &id).await {
        assert_eq!(v["state"], "cancelled", "node 2: {v}");
    }
    peer.send_frames(&[alert_frame(&original, 1)])
        .await
        .unwrap();
    tokio::time::sleep(QUIET_PERIOD).await;
    let v = fed.get(0, &id).await.unwrap();
    assert_eq!(v["state"], "cancelled", "a late copy does not revive it");
    let active = node.client().get("/v1/alerts?state=active").await.unwrap();
    let active_ids: Vec<&str> = active["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(!active_ids.contains(&id.as_str()), "never listed as active");

    // Normal order through the nodes' own API: issue, then cancel, both replicate.
    let id2 = fed.issue(0, alert("GREEN", "normal order")).await;
    fed.wait_for(1, &id2).await;
    fed.cluster.nodes[0]
        .client()
        .post(
            &format!("/v1/alerts/{id2}/cancel"),
            &json!({"reason": "false positive"}),
        )
        .await
        .unwrap();
    wait_state(&fed, 1, &id2, "cancelled", "cancel did not replicate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_or_cancel_from_another_origin_is_rejected_and_penalised() {
    let fed = Fed::line(2, Member).await;
    let victim = fed.issue(1, alert("CLEAR", "someone else's alert")).await;
    fed.wait_for(0, &victim).await;
    let (raw, mut peer) = trusted_raw_peer(&fed, 11).await;
    let victim_id = tocsin_proto::AlertId::from_hex(&victim).unwrap();
    let forged = sign_kind(
        &raw,
        tocsin_proto::Kind::Cancel,
        Some(victim_id),
        "forged cancel",
    );
    peer.send_frames(&[alert_frame(&forged, 1)]).await.unwrap();
    tokio::time::sleep(QUIET_PERIOD).await;
    assert!(fed.get(0, &forged.id().to_string()).await.is_none());
    assert_eq!(fed.get(0, &victim).await.unwrap()["state"], "active");
    let row = fed.peer_row(0, &hex(&raw)).await.unwrap();
    assert_eq!(row["rejections"]["not_origin"], 1, "{row}");
    assert!(row["penalty"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_catches_up_on_restart_and_after_its_database_is_wiped() {
    let fed = Fed::line(3, Member).await;
    let mut fed = fed;
    fed.cluster.stop(2, Duration::from_secs(10)).unwrap();
    let mut ids = HashSet::new();
    for i in 0..50 {
        ids.insert(
            fed.issue(0, alert("GREEN", &format!("while node 3 was down #{i}")))
                .await,
        );
    }
    fed.cluster
        .wait_alerts(1, ARRIVAL_TIMEOUT, |have| ids.is_subset(have))
        .await
        .unwrap();
    fed.cluster.start(2).unwrap();
    fed.cluster
        .wait_ready(2, Duration::from_secs(10))
        .await
        .unwrap();
    fed.cluster
        .wait_alerts(2, Duration::from_secs(10), |have| ids.is_subset(have))
        .await
        .unwrap();

    // Wipe node 3's database: a new log epoch; it still gets everything.
    fed.cluster.stop(2, Duration::from_secs(10)).unwrap();
    std::fs::remove_file(fed.cluster.nodes[2].data_dir.join("tocsin.redb")).unwrap();
    fed.cluster.start(2).unwrap();
    fed.cluster
        .wait_ready(2, Duration::from_secs(10))
        .await
        .unwrap();
    let got = fed
        .cluster
        .wait_alerts(2, Duration::from_secs(10), |have| ids.is_subset(have))
        .await
        .unwrap();
    assert_eq!(got.len(), 50, "exactly the 50 alerts, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_database_gets_its_own_alerts_back_and_can_cancel_them() {
    // 1 – 2 partners, 2 – 3 members: node 2 holds all of node 1's alerts, node 3 only
    // the CLEAR and GREEN ones.
    let links = vec![Link::sym(0, 1, Partner), Link::sym(1, 2, Member)];
    let mut fed = Fed::start(3, links).await;
    let key2 = fed.key(1);
    let mut red = alert("RED", "for node 2 only");
    red["recipients"] = serde_json::json!([key2]);
    let mut ids = HashSet::new();
    for body in [
        alert("CLEAR", "clear"),
        alert("GREEN", "green"),
        alert("AMBER", "amber"),
        red,
    ] {
        ids.insert(fed.issue(0, body).await);
    }
    fed.cluster
        .wait_alerts(1, ARRIVAL_TIMEOUT, |have| ids.is_subset(have))
        .await
        .unwrap();

    // Node 1 loses its disk: a new, empty database.
    fed.cluster.stop(0, Duration::from_secs(10)).unwrap();
    std::fs::remove_file(fed.cluster.nodes[0].data_dir.join("tocsin.redb")).unwrap();
    fed.cluster.start(0).unwrap();
    fed.cluster
        .wait_ready(0, Duration::from_secs(10))
        .await
        .unwrap();
    let got = fed
        .cluster
        .wait_alerts(0, ARRIVAL_TIMEOUT, |have| ids.is_subset(have))
        .await
        .unwrap();
    assert_eq!(got.len(), 4, "its own four alerts, nothing else");
    // They are its own again: it can cancel one, and the cancel reaches node 2.
    let amber = fed.cluster.nodes[0]
        .client()
        .get("/v1/alerts?tlp=AMBER")
        .await
        .unwrap();
    let amber_id = amber["alerts"][0]["id"].as_str().unwrap().to_string();
    let cancel = fed.cluster.nodes[0]
        .client()
        .post(
            &format!("/v1/alerts/{amber_id}/cancel"),
            &serde_json::json!({"reason": "restored"}),
        )
        .await
        .unwrap();
    let cancel_id = cancel["id"].as_str().unwrap();
    fed.wait_for(1, cancel_id).await;
    // Node 3 got nothing it may not see on the way.
    tokio::time::sleep(QUIET_PERIOD).await;
    let have3 = fed.cluster.nodes[2]
        .client()
        .get("/v1/alerts")
        .await
        .unwrap();
    let tlps: HashSet<String> = have3["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert"]["tlp"].as_str().unwrap().to_string())
        .collect();
    assert!(
        tlps.iter().all(|t| t == "CLEAR" || t == "GREEN"),
        "{tlps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_alert_is_quarantined_then_fetched_again_from_a_peer() {
    const MARK: &str = "DAMAGE-ME-0123456789";
    let mut fed = Fed::line(2, Member).await;
    let mut ids = HashSet::new();
    for i in 0..5 {
        ids.insert(fed.issue(0, alert("GREEN", &format!("alert {i}"))).await);
    }
    let marked = fed.issue(0, alert("GREEN", MARK)).await;
    ids.insert(marked.clone());
    fed.cluster
        .wait_alerts(1, ARRIVAL_TIMEOUT, |have| ids.is_subset(have))
        .await
        .unwrap();
    // A flipped byte in node 2's copy of one alert.
    fed.cluster.stop(1, Duration::from_secs(10)).unwrap();
    let path = fed.cluster.nodes[1].data_dir.join("tocsin.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(MARK.len())
        .position(|w| w == MARK.as_bytes())
        .unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    fed.cluster.start(1).unwrap();
    fed.cluster
        .wait_ready(1, Duration::from_secs(10))
        .await
        .unwrap();
    let client = fed.cluster.nodes[1].client();
    // The node checks its stored alerts in the background, once it serves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.status().await.unwrap();
        let metrics = client.get_text("/metrics").await.unwrap();
        let counted = metrics.lines().any(|l| l == "tocsin_store_quarantined 1");
        if status["quarantined"] == 1 && counted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not quarantined: {status}\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Catch-up reads node 1's log again and fetches the lost alert.
    fed.wait_for(1, &marked).await;
    let got = fed
        .cluster
        .wait_alerts(1, ARRIVAL_TIMEOUT, |have| ids.is_subset(have))
        .await
        .unwrap();
    assert_eq!(got.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_partition_heals_every_node_holds_exactly_what_it_may() {
    // Ring of 4: 1–2 partner, 2–3 member, 3–4 partner, 4–1 member.
    let links = vec![
        link(0, 1, Partner),
        link(1, 2, Member),
        link(2, 3, Partner),
        link(3, 0, Member),
    ];
    let mut fed = Fed::start(4, links).await;
    fed.cluster
        .partition(vec![vec![0, 1], vec![2, 3]])
        .await
        .unwrap();
    fed.cluster
        .wait_links(Duration::from_secs(10))
        .await
        .unwrap();
    // Cut means cut: nodes 1 and 3 are no longer connected to the other side.
    let c0 = fed.cluster.connected(0).await.unwrap();
    assert!(!c0.contains(&fed.key(3)), "partition cut 1–4");

    let a_clear = fed.issue(0, alert("CLEAR", "left clear")).await;
    let a_amber = fed.issue(0, alert("AMBER", "left amber")).await;
    let b_green = fed.issue(2, alert("GREEN", "right green")).await;
    let b_amber = fed.issue(3, alert("AMBER", "right amber")).await;
    fed.wait_for(1, &a_clear).await;
    fed.wait_for(3, &b_green).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    assert!(fed.get(2, &a_clear).await.is_none(), "partition holds");
    assert!(fed.get(0, &b_green).await.is_none(), "partition holds");

    fed.cluster.heal().await.unwrap();
    fed.cluster
        .wait_links(Duration::from_secs(15))
        .await
        .unwrap();
    let expect: [HashSet<String>; 4] = [
        [&a_clear, &a_amber, &b_green]
            .into_iter()
            .cloned()
            .collect(),
        [&a_clear, &a_amber, &b_green]
            .into_iter()
            .cloned()
            .collect(),
        [&a_clear, &b_green, &b_amber]
            .into_iter()
            .cloned()
            .collect(),
        [&a_clear, &b_green, &b_amber]
            .into_iter()
            .cloned()
            .collect(),
    ];
    for (i, want) in expect.iter().enumerate() {
        let got = fed
            .cluster
            .wait_alerts(i, ARRIVAL_TIMEOUT, |have| want.is_subset(have))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = if got == *want {
            got
        } else {
            fed.cluster.alert_ids(i).await.unwrap()
        };
        assert_eq!(&got, want, "node {} holds exactly what it may", i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demoting_a_peer_to_public_stops_green_at_once_and_survives_restart() {
    let mut fed = Fed::line(2, Member).await;
    let before = fed.issue(0, alert("GREEN", "before the demotion")).await;
    fed.wait_for(1, &before).await;

    let peer = fed.key(1);
    // Through the operator's CLI, as an operator would.
    let (out, err, code) = tocsin_tests::run(
        fed.tocsin(0)
            .args(["trust", "set", &peer, "--level", "public"]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("member -> public"), "{out}");
    let (out, _, _) = tocsin_tests::run(fed.tocsin(0).args(["trust", "list"]));
    assert!(out.contains("public") && out.contains(&peer[..16]), "{out}");
    let (out, _, _) = tocsin_tests::run(fed.tocsin(0).args(["peers", "--json"]));
    let row: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|p| p["key"] == peer.as_str())
        .unwrap();
    assert_eq!(row["level"], "public");
    assert_eq!(
        row["connected"], true,
        "public peers stay connected (they still get CLEAR)"
    );

    let green = fed.issue(0, alert("GREEN", "after the demotion")).await;
    let clear = fed.issue(0, alert("CLEAR", "clear still flows")).await;
    fed.wait_for(1, &clear).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(1, &green).await;

    let (out, _, _) = tocsin_tests::run(fed.tocsin(0).args(["trust", "audit"]));
    assert!(out.contains("member -> public  (api)"), "audit log: {out}");
    let audit = fed.cluster.nodes[0]
        .client()
        .get("/v1/trust-audit")
        .await
        .unwrap();
    let last = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["key"] == peer)
        .cloned()
        .unwrap();
    assert_eq!(
        (last["old"].as_str(), last["new"].as_str()),
        (Some("member"), Some("public"))
    );

    // Survives a restart even though config.toml still says member.
    fed.restart(0).await;
    let entry = fed.cluster.nodes[0]
        .client()
        .get(&format!("/v1/trust/{peer}"))
        .await
        .unwrap();
    assert_eq!(entry["level"], "public");
    fed.cluster
        .wait_links(Duration::from_secs(15))
        .await
        .unwrap();
    let green2 = fed.issue(0, alert("GREEN", "after restart")).await;
    let clear2 = fed.issue(0, alert("CLEAR", "after restart")).await;
    fed.wait_for(1, &clear2).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(1, &green2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_delivers_older_alerts_the_new_level_allows_at_once() {
    // Two members, with no resync due for 30 s: only the promotion can deliver.
    let fed = Fed::line(2, Member).await;
    let amber = fed
        .issue(0, alert("AMBER", "issued before the promotion"))
        .await;
    let green = fed.issue(0, alert("GREEN", "seen at member")).await;
    fed.wait_for(1, &green).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(1, &amber).await;

    let peer = fed.key(1);
    let (_, err, code) = tocsin_tests::run(
        fed.tocsin(0)
            .args(["trust", "set", &peer, "--level", "partner"]),
    );
    assert_eq!(code, 0, "{err}");
    // Within the arrival timeout, far less than the periodic resync.
    fed.wait_for(1, &amber).await;

    // A demotion back takes nothing away and sends nothing new above member.
    let (_, err, code) = tocsin_tests::run(
        fed.tocsin(0)
            .args(["trust", "set", &peer, "--level", "member"]),
    );
    assert_eq!(code, 0, "{err}");
    let later = fed
        .issue(0, alert("AMBER", "issued after the demotion"))
        .await;
    let marker = fed.issue(0, alert("GREEN", "marker")).await;
    fed.wait_for(1, &marker).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(1, &later).await;
    assert!(fed.get(1, &amber).await.is_some(), "what it holds stays");
}

// ---- helpers ----

/// A raw peer with key `[seed; 32]`, added to node 1's trust table at `member` and
/// connected to it.
async fn trusted_raw_peer(
    fed: &Fed,
    seed: u8,
) -> (tocsin_proto::SigningKey, tocsin_tests::rawpeer::RawPeer) {
    let (raw, peer, _) = fed.trusted_raw_peer(0, seed).await;
    (raw, peer)
}

fn hex(key: &tocsin_proto::SigningKey) -> String {
    tocsin_proto::PublicKey(key.verifying_key().to_bytes()).to_string()
}

fn sign(
    key: &tocsin_proto::SigningKey,
    tlp: tocsin_proto::Tlp,
    title: &str,
) -> tocsin_proto::SignedAlert {
    let mut a = body(key, title);
    a.tlp = tlp;
    tocsin_proto::SignedAlert::sign(a, key).unwrap()
}

fn sign_kind(
    key: &tocsin_proto::SigningKey,
    kind: tocsin_proto::Kind,
    replaces: Option<tocsin_proto::AlertId>,
    title: &str,
) -> tocsin_proto::SignedAlert {
    let mut a = body(key, title);
    a.kind = kind;
    a.replaces = replaces;
    tocsin_proto::SignedAlert::sign(a, key).unwrap()
}

fn body(key: &tocsin_proto::SigningKey, title: &str) -> tocsin_proto::AlertBody {
    tocsin_proto::AlertBody {
        v: tocsin_proto::FORMAT_VERSION,
        origin: tocsin_proto::PublicKey(key.verifying_key().to_bytes()),
        issued_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        expires_at: None,
        kind: tocsin_proto::Kind::New,
        replaces: None,
        severity: tocsin_proto::Severity::High,
        tlp: tocsin_proto::Tlp::Clear,
        recipients: vec![],
        title: title.into(),
        text: String::new(),
        indicators: vec![],
        tags: vec![],
        references: vec![],
    }
}

fn alert_frame(a: &tocsin_proto::SignedAlert, hops: u8) -> Vec<u8> {
    tocsin_proto::Frame::Alert {
        hops,
        envelope: a.to_envelope(),
    }
    .encode()
    .unwrap()
}

fn envelope_frame(body: Vec<u8>, sig: Vec<u8>, hops: u8) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Env {
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        #[serde(with = "serde_bytes")]
        sig: Vec<u8>,
    }
    let envelope = tocsin_proto::codec::encode(&Env { body, sig }).unwrap();
    tocsin_proto::Frame::Alert { hops, envelope }
        .encode()
        .unwrap()
}

/// Node 2 holds an alert, misses its update (it is down), and the update is then
/// cancelled. A cancelled update is no longer served, so node 2 never gets it; the
/// cancel still retracts the original on node 2, which must never keep serving it as
/// active (a cancel never revives what it retracts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_update_retracts_the_original_on_a_node_that_missed_the_update() {
    let mut fed = Fed::start(2, vec![link(0, 1, Member)]).await;
    let original = fed.issue(0, alert("GREEN", "first version")).await;
    fed.wait_for(1, &original).await;
    fed.cluster.stop(1, Duration::from_secs(10)).unwrap();
    let a = fed.cluster.nodes[0].client();
    let updated = a
        .post(
            &format!("/v1/alerts/{original}/update"),
            &json!({"title": "second version"}),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancel = a
        .post(
            &format!("/v1/alerts/{updated}/cancel"),
            &json!({"reason": "retracted"}),
        )
        .await
        .unwrap();
    // The cancel of the version named comes last in the log, after the original's: a
    // node killed half-way leaves the named version uncancelled, to be cancelled again.
    let original_cancel = fed.get(0, &original).await.unwrap()["replaced_by"]
        .as_str()
        .unwrap()
        .to_string();
    let original_cancel_seq = fed.get(0, &original_cancel).await.unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(
        cancel["seq"].as_u64().unwrap() > original_cancel_seq,
        "{cancel} before {original_cancel_seq}"
    );
    // On the origin, every version is retracted.
    for id in [&original, &updated] {
        let v = fed.get(0, id).await.unwrap();
        assert_eq!(v["state"], "cancelled", "origin, {id}: {v}");
    }
    fed.cluster.start(1).unwrap();
    fed.cluster
        .wait_ready(1, Duration::from_secs(20))
        .await
        .unwrap();
    wait_state(
        &fed,
        1,
        &original,
        "cancelled",
        "node 2 keeps the original of a cancelled update",
    )
    .await;
    let active = fed.cluster.nodes[1]
        .client()
        .get("/v1/alerts?state=active")
        .await
        .unwrap();
    let listed: Vec<&str> = active["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["alert"]["kind"] != "cancel")
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(listed.is_empty(), "listed as active on node 2: {listed:?}");
}

/// An update that left for a peer but was lost at its origin (killed before the commit;
/// here: its database put back from a copy) comes back after the operator updated the
/// alert again and cancelled it. The origin cancels the returned branch too, and every
/// node ends with no version active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_lost_at_its_origin_that_comes_back_after_a_cancel_is_cancelled_too() {
    let mut fed = Fed::start(2, vec![link(0, 1, Member)]).await;
    let original = fed.issue(0, alert("GREEN", "first version")).await;
    fed.wait_for(1, &original).await;
    let copy = fed.cluster.nodes[0].data_dir.join("before-update.redb");
    fed.restart_with_database(0, |db| {
        std::fs::copy(db, &copy).unwrap();
    })
    .await;
    let lost = update(&fed, &original, "second version, lost at the origin").await;
    fed.wait_for(1, &lost).await;

    // Node 2 goes away holding the update; node 1 loses it.
    fed.cluster.stop(1, Duration::from_secs(10)).unwrap();
    fed.restart_with_database(0, |db| {
        std::fs::copy(&copy, db).unwrap();
    })
    .await;
    assert!(fed.get(0, &lost).await.is_none(), "node 1 lost the update");
    // The operator updates the original again, then cancels that version.
    let again = update(&fed, &original, "second version, again").await;
    fed.cluster.nodes[0]
        .client()
        .post(
            &format!("/v1/alerts/{again}/cancel"),
            &json!({"reason": "retracted"}),
        )
        .await
        .unwrap();

    fed.cluster.start(1).unwrap();
    fed.cluster
        .wait_ready(1, Duration::from_secs(20))
        .await
        .unwrap();
    // (Node 2 never gets the second update: it was cancelled before node 2 came back,
    // and a cancelled update is not served.)
    for (node, id) in [
        (0, &original),
        (0, &lost),
        (0, &again),
        (1, &original),
        (1, &lost),
    ] {
        {
            wait_state(
                &fed,
                node,
                id,
                "cancelled",
                &format!("node {}: version {id} of a cancelled alert", node + 1),
            )
            .await;
        }
    }
    // The lost update's cancel is node 1's, and says why.
    let cancel = fed.get(1, &lost).await.unwrap()["replaced_by"]
        .as_str()
        .unwrap()
        .to_string();
    let c = fed.get(1, &cancel).await.unwrap();
    assert_eq!(c["alert"]["kind"], "cancel", "{c}");
    assert_eq!(c["alert"]["origin"].as_str(), Some(fed.key(0).as_str()));
    assert!(
        c["alert"]["text"]
            .as_str()
            .unwrap()
            .contains("came back from a peer after"),
        "{c}"
    );
}

/// A node whose database is put back from a backup reuses sequence numbers of its log
/// that a peer already read. The peer comes back only once the log has grown past its
/// cursor again, and still gets every alert issued since the restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_misses_nothing_issued_after_a_database_is_restored_from_a_backup() {
    let mut fed = Fed::start(2, vec![link(0, 1, Member)]).await;
    let backup = fed.cluster.nodes[0].data_dir.join("backup.redb");
    fed.restart_with_database(0, |db| {
        std::fs::copy(db, &backup).unwrap();
    })
    .await;
    for i in 0..3 {
        let id = fed.issue(0, alert("GREEN", &format!("before {i}"))).await;
        fed.wait_for(1, &id).await;
    }
    fed.cluster.stop(1, Duration::from_secs(10)).unwrap();
    fed.restart_with_database(0, |db| {
        std::fs::copy(&backup, db).unwrap();
    })
    .await;
    // More alerts than node 2 had read: the log is past its cursor again.
    let mut after = HashSet::new();
    for i in 0..5 {
        after.insert(fed.issue(0, alert("GREEN", &format!("after {i}"))).await);
    }
    fed.cluster.start(1).unwrap();
    fed.cluster
        .wait_ready(1, Duration::from_secs(20))
        .await
        .unwrap();
    fed.cluster
        .wait_alerts(1, ARRIVAL_TIMEOUT, |have| after.is_subset(have))
        .await
        .unwrap();
}

/// Updates `id` at node 1 with `title`; the update's id.
async fn update(fed: &Fed, id: &str, title: &str) -> String {
    fed.cluster.nodes[0]
        .client()
        .post(&format!("/v1/alerts/{id}/update"), &json!({"title": title}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `tocsin ARGS` on node `i`, which must succeed.
fn cli_ok(fed: &Fed, i: usize, args: &[&str]) {
    let (out, err, code) = tocsin_tests::run(fed.tocsin(i).args(args));
    assert_eq!(code, 0, "tocsin {args:?}: {out}{err}");
}

/// What a node took in is decided when it arrives, so alerts it refused under a lower
/// level must come in once the level allows them, although catch-up had read past them:
/// - node 3 holds node 2 at public (it takes only node 2's own alerts), misses a CLEAR
///   alert of node 1 while stopped, refuses it from node 2 in catch-up, then promotes
///   node 2 to member: the alert arrives (and after a restart it is still there);
/// - node 3 blocks node 1 as an origin, refuses its next alert relayed by node 2, then
///   removes the block: that alert arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_refused_under_a_lower_level_arrive_after_a_promotion_or_an_unblock() {
    let mut fed = Fed::line(3, Member).await;
    let (k1, k2) = (fed.key(0), fed.key(1));
    cli_ok(&fed, 2, &["trust", "set", &k2, "--level", "public"]);
    fed.cluster.stop(2, Duration::from_secs(10)).unwrap();
    let missed = fed
        .issue(0, alert("CLEAR", "missed while node 3 was down"))
        .await;
    fed.wait_for(1, &missed).await;
    fed.cluster.start(2).unwrap();
    fed.cluster
        .wait_ready(2, Duration::from_secs(10))
        .await
        .unwrap();
    // Node 2's own alert comes: catch-up with node 2 ran past the refused one.
    let own = fed.issue(1, alert("CLEAR", "node 2's own")).await;
    fed.wait_for(2, &own).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(2, &missed).await;
    let row = fed.peer_row(2, &k2).await.unwrap();
    assert!(
        row["rejections"]["relay_not_allowed"].as_u64() > Some(0),
        "node 3 never refused it: {row}"
    );
    cli_ok(&fed, 2, &["trust", "set", &k2, "--level", "member"]);
    fed.wait_for(2, &missed).await;
    fed.restart(2).await;
    fed.wait_for(2, &missed).await;

    // The same with a blocked origin.
    cli_ok(
        &fed,
        2,
        &["trust", "add", &k1, "--level", "blocked", "--name", "n1"],
    );
    let blocked = fed
        .issue(0, alert("CLEAR", "while node 1 is blocked"))
        .await;
    fed.wait_for(1, &blocked).await;
    let control = fed.issue(1, alert("CLEAR", "node 2's control")).await;
    fed.wait_for(2, &control).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    fed.assert_absent(2, &blocked).await;
    cli_ok(&fed, 2, &["trust", "remove", &k1]);
    fed.wait_for(2, &blocked).await;
}
