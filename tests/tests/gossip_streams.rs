//! The `/tocsin/gossip/4` streams over real `tocsind` processes: a full mesh links up
//! with one stream per connection and no drops or reconnects, and a peer that sends a
//! frame over the size limit is refused before the frame is read, penalised, and
//! cannot take the node or its stored alerts with it. A peer flooding control frames
//! (wants and sync requests) is cut off at its work budget and banned, while honest
//! alerts keep crossing the node it floods; so do honest alerts while a peer floods it
//! with valid alerts of its own (throttled, and never in front of another origin's).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tocsin_proto::limits::MAX_FRAME_BYTES;
use tocsin_proto::TrustLevel::Member;
use tocsin_tests::{alert, Fed, ARRIVAL_TIMEOUT, QUIET_PERIOD};
use tocsin_tools::cluster::Link;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twelve_node_mesh_starts_with_no_stream_failures_or_reconnects() {
    let n = 12;
    let mut links = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            links.push(Link::sym(a, b, Member));
        }
    }
    let fed = Fed::start(n, links).await;
    // Every link is up; give late failures (a stream dropped at start-up, a redial) time
    // to show before counting.
    tokio::time::sleep(QUIET_PERIOD * 2).await;
    for i in 0..n {
        let net = fed.cluster.nodes[i].client().get("/v1/net").await.unwrap();
        assert_eq!(net["stream_failures"], 0, "node {}: {net}", i + 1);
        assert_eq!(
            net["peer_connects"],
            n - 1,
            "node {}: one connect per link, no reconnects: {net}",
            i + 1
        );
        assert_eq!(net["connected"], n - 1, "node {}: {net}", i + 1);
    }
    // And the streams carry traffic: one alert from each end of the mesh.
    let first = fed.issue(0, alert("CLEAR", "across the mesh")).await;
    let last = fed
        .issue(n - 1, alert("GREEN", "back across the mesh"))
        .await;
    for i in 0..n {
        fed.wait_for(i, &first).await;
        fed.wait_for(i, &last).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_unread_and_penalised_and_the_node_keeps_its_alerts() {
    let fed = Fed::line(2, Member).await;
    let before = fed
        .issue(0, alert("CLEAR", "stored before the attack"))
        .await;
    fed.wait_for(1, &before).await;

    let (_, mut peer, raw_key) = fed.trusted_raw_peer(0, 5).await;
    // One byte over the limit, with its true length in the prefix. The node drops the
    // stream after the prefix, so the rest of the write may fail: that is the point.
    let _ = peer.send_frames(&[vec![0u8; MAX_FRAME_BYTES + 1]]).await;

    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    let row = loop {
        let row = fed.peer_row(0, &raw_key).await.unwrap();
        if row["rejections"]["oversized_frame"] == 1 {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "oversized frame not counted: {row}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(row["penalty"].as_u64().unwrap() > 0, "penalised: {row}");
    assert_eq!(row["alerts_in"], 0, "{row}");

    // The node is up, keeps what it stored, and honest traffic flows both ways.
    assert!(fed.get(0, &before).await.is_some());
    let after = fed.issue(1, alert("GREEN", "after the attack")).await;
    fed.wait_for(0, &after).await;
    let back = fed.issue(0, alert("GREEN", "and back")).await;
    fed.wait_for(1, &back).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    let net = fed.cluster.nodes[0].client().get("/v1/net").await.unwrap();
    assert_eq!(
        net["stream_failures"], 0,
        "the honest link was not disturbed: {net}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_control_frames_is_banned_and_honest_alerts_keep_flowing() {
    use tocsin_proto::Frame;
    let fed = Fed::line(3, Member).await;
    let (_, mut peer, raw_key) = fed.trusted_raw_peer(1, 6).await;
    // Wants for made-up ids (each id may be a store read) and sync requests from the
    // start of the log, far past the default work budget of the middle node.
    let wants: Vec<Vec<u8>> = (0..300u32)
        .map(|f| {
            let ids = tocsin_tests::made_up_ids(f);
            Frame::Want { ids, graft: false }.encode().unwrap()
        })
        .collect();
    let sync = Frame::SyncRequest { epoch: 1, after: 0 }.encode().unwrap();
    let during = fed.issue(0, alert("CLEAR", "during the flood")).await;
    for chunk in wants.chunks(50) {
        // Once banned, the node closes the connection: later writes may fail.
        let _ = peer.send_frames(chunk).await;
    }
    let _ = peer.send_frames(&vec![sync; 20_000]).await;

    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    let row = loop {
        let row = fed.peer_row(1, &raw_key).await.unwrap();
        if !row["banned_until"].is_null() {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flooding peer was not banned: {row}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        row["rejections"]["over_budget"].as_u64().unwrap() >= 1,
        "{row}"
    );
    assert_eq!(row["connected"], false, "{row}");
    // Honest alerts cross the flooded node both ways.
    fed.wait_for(2, &during).await;
    let after = fed.issue(2, alert("GREEN", "after the flood")).await;
    fed.wait_for(0, &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_alerts_cross_a_node_that_a_peer_floods_with_valid_alerts() {
    use tocsin_proto::Frame;
    // A - X - B; the raw peer R, trusted by X, floods X with valid CLEAR alerts that X
    // accepts within R's limit and must relay to B.
    let fed = Fed::line(3, Member).await;
    let (raw, mut peer, raw_key) = fed.trusted_raw_peer(1, 7).await;
    let now = tocsin_tools::format::now_ms();
    let flood: Vec<Vec<u8>> = (0..40_000u64)
        .map(|n| {
            let alert = tocsin_tools::bench::clear_alert(
                &raw,
                format!("flood {n}"),
                "x".repeat(300),
                now + n,
            )
            .unwrap();
            Frame::Alert {
                hops: 1,
                envelope: alert.to_envelope(),
            }
            .encode()
            .unwrap()
        })
        .collect();
    // The flood runs until the honest alerts are out: R's burst, then its sustained
    // rate, all relayed by X to B.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let flooding = tokio::spawn(async move {
        for chunk in flood.chunks(200) {
            if *stop_rx.borrow() || peer.send_frames(chunk).await.is_err() {
                break;
            }
        }
        peer
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Honest alerts from A while the flood runs: each reaches B in time.
    let mut honest = Vec::new();
    for n in 0..20 {
        honest.push(fed.issue(0, alert("CLEAR", &format!("honest {n}"))).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for id in &honest {
        fed.wait_for(2, id).await;
    }
    let _ = stop_tx.send(true);
    let _peer = flooding.await.unwrap();
    // X throttled the flood (its burst is 2000) instead of taking it all.
    let row = fed.peer_row(1, &raw_key).await.unwrap();
    assert!(row["rate_limited"].as_u64().unwrap() > 0, "{row}");
    assert_eq!(
        row["penalty"], 0,
        "valid alerts are throttled, not penalised: {row}"
    );
}
