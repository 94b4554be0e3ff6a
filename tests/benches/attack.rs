//! Honest delivery while one trusted peer attacks: the bench for the hardening of
//! issue 9 ("one peer's failure never takes a node down").
//!
//! Three real `tocsind` nodes in a line, A – X – B, every link `member`. A raw peer R,
//! trusted by X as `member`, floods X at full speed with one kind of frame while A
//! issues honest alerts at a steady rate; the bench reads B's event stream and reports,
//! per attack, the honest alerts' delivery A → B (`received_at` at B minus `issued_at`
//! at A): p50, p99, how many arrived, and the ratio of p99 to the same run without an
//! attacker, measured in this run. It also reports what X did to the attacker.
//!
//! ```sh
//! cargo build --release --workspace
//! cargo bench -p tocsin-tests --bench attack              # all attacks
//! cargo bench -p tocsin-tests --bench attack -- alerts     # only the valid-alert flood
//! # X holds 50,000 alerts of its own first (more than it keeps in memory), so that
//! # the sync and want_page floods make it read its store:
//! cargo bench -p tocsin-tests --bench attack -- --stored 50000 sync wantpage
//! # the attacker paced at 20 frames a second (under its budget: never cut off)
//! cargo bench -p tocsin-tests --bench attack -- --stored 50000 --rate 20 sync
//! ```
//!
//! Attacks: `sync` (sync requests for pages all over X's log), `announce` (announces of
//! made-up ids), `want` (wants of made-up ids), `wantids` (wants of X's newest 1,000
//! alerts, over and over: with `--stored`), `wantpage` (`want_page` for pages all
//! over X's log: X sends every alert of each), `alerts` (valid CLEAR alerts signed by R,
//! each new), `badsig` (alerts with a broken signature). Target: p99 within 2× of the
//! run without an attacker, and every honest alert delivered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tocsin_proto::{Frame, SignedAlert, SigningKey, TrustLevel};
use tocsin_tests::{made_up_ids, Fed};
use tocsin_tools::bench::percentile;
use tocsin_tools::format::now_ms;

/// Honest alerts per run, and their rate.
const HONEST: usize = 200;
const HONEST_PER_SEC: u64 = 20;
/// How long the attacker starts before the honest alerts.
const HEAD_START: Duration = Duration::from_millis(500);
/// How long after the last honest alert the bench waits for stragglers.
const DRAIN: Duration = Duration::from_secs(20);
/// Frames per write of the attacker (it waits for each batch to be flushed).
const BATCH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Attack {
    None,
    Sync,
    Announce,
    Want,
    WantIds,
    WantPage,
    Alerts,
    BadSig,
}

impl Attack {
    const ALL: [Attack; 8] = [
        Attack::None,
        Attack::Sync,
        Attack::Announce,
        Attack::Want,
        Attack::WantIds,
        Attack::WantPage,
        Attack::Alerts,
        Attack::BadSig,
    ];

    fn name(self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::Sync => "sync",
            Attack::Announce => "announce",
            Attack::Want => "want",
            Attack::WantIds => "wantids",
            Attack::WantPage => "wantpage",
            Attack::Alerts => "alerts",
            Attack::BadSig => "badsig",
        }
    }
}

fn signed(key: &SigningKey, n: u64) -> SignedAlert {
    tocsin_tools::bench::clear_alert(key, format!("flood {n:08}"), "x".repeat(400), now_ms())
        .unwrap()
}

/// X's log: its epoch and head, for requests of pages all over it, and the ids of its
/// newest alerts (up to 1,000).
#[derive(Debug, Clone)]
struct Log {
    epoch: u64,
    head: u64,
    ids: Vec<tocsin_proto::AlertId>,
}

impl Log {
    /// Where the `n`th request of the attacker starts: spread over the whole log (a
    /// prime stride), so that a large store is read, not only its cached front.
    fn after(&self, n: u64) -> u64 {
        n.wrapping_mul(7_919) % self.head.max(1)
    }
}

/// The attacker's frames, `BATCH` at a time, for batch `k`.
fn frames(attack: Attack, key: &SigningKey, log: &Log, k: u64) -> Vec<Vec<u8>> {
    let enc = |f: Frame| f.encode().unwrap();
    let n = |i: usize| k * BATCH as u64 + i as u64;
    match attack {
        Attack::None => vec![],
        Attack::Sync => (0..BATCH)
            .map(|i| {
                enc(Frame::SyncRequest {
                    epoch: log.epoch,
                    after: log.after(n(i)),
                })
            })
            .collect(),
        Attack::WantIds => (0..BATCH / 16)
            .map(|_| {
                enc(Frame::Want {
                    ids: log.ids.clone(),
                    graft: false,
                })
            })
            .collect(),
        Attack::WantPage => (0..BATCH / 16)
            .map(|i| {
                let after = log.after(n(i));
                enc(Frame::WantPage {
                    epoch: log.epoch,
                    after,
                    next: after + 256,
                    except: vec![],
                })
            })
            .collect(),
        Attack::Announce => (0..BATCH / 16)
            .map(|i| {
                let ids = made_up_ids((k * BATCH as u64 + i as u64) as u32);
                let hops = vec![2; ids.len()];
                enc(Frame::Announce { ids, hops })
            })
            .collect(),
        Attack::Want => (0..BATCH / 16)
            .map(|i| {
                enc(Frame::Want {
                    ids: made_up_ids((k * BATCH as u64 + i as u64) as u32),
                    graft: false,
                })
            })
            .collect(),
        Attack::Alerts | Attack::BadSig => (0..BATCH as u64)
            .map(|i| {
                let alert = signed(key, k * BATCH as u64 + i);
                let mut envelope = alert.to_envelope();
                if attack == Attack::BadSig {
                    // The signature is the envelope's last field: flip its last byte.
                    if let Some(b) = envelope.last_mut() {
                        *b ^= 1;
                    }
                }
                enc(Frame::Alert { hops: 1, envelope })
            })
            .collect(),
    }
}

struct Outcome {
    p50: f64,
    p99: f64,
    delivered: usize,
    frames_sent: u64,
    attacker: String,
}

async fn run(attack: Attack, stored: usize, rate: Option<u64>) -> Outcome {
    let fed = Fed::line(3, TrustLevel::Member).await;
    if stored > 0 {
        // X's own alerts, held by all three before the attack starts.
        let x = fed.cluster.nodes[1].client();
        tocsin_tools::bench::catchup::issue_many(&x, stored, 400, 64)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(600);
        for node in &fed.cluster.nodes {
            while node.client().status().await.unwrap()["alerts"].as_u64() < Some(stored as u64) {
                assert!(
                    Instant::now() < deadline,
                    "the stored alerts did not spread"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let status = fed.cluster.nodes[1].client().status().await.unwrap();
    let listed = fed.cluster.nodes[1]
        .client()
        .get("/v1/alerts?limit=1000")
        .await
        .unwrap();
    let log = Log {
        epoch: status["epoch"].as_u64().unwrap(),
        head: status["head"].as_u64().unwrap(),
        ids: listed["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().parse().unwrap())
            .collect(),
    };
    let (raw, mut peer, raw_key) = fed.trusted_raw_peer(1, 0x66).await;

    // X's and B's event streams: when each honest alert arrived there.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String, f64)>();
    let mut readers = Vec::new();
    for node in [1, 2] {
        let mut stream = fed.cluster.nodes[node].client().watch(None).await.unwrap();
        let seen_tx = seen_tx.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(ev)) = stream.next().await {
                if ev.event != "alert" {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                    continue;
                };
                if v["alert"]["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("honest"))
                {
                    let latency = v["provenance"]["received_at"].as_f64().unwrap_or(f64::NAN)
                        - v["alert"]["issued_at"].as_f64().unwrap_or(f64::NAN);
                    let _ =
                        seen_tx.send((node, v["id"].as_str().unwrap_or("").to_string(), latency));
                }
            }
        }));
    }

    // The attacker floods until told to stop or cut off.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let attacker = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut k = 0u64;
        if attack == Attack::None {
            let _ = stop_rx.wait_for(|s| *s).await;
            return (sent, "-".to_string());
        }
        let start = Instant::now();
        loop {
            if *stop_rx.borrow() {
                return (sent, "never cut off".into());
            }
            let mut batch = frames(attack, &raw, &log, k);
            k += 1;
            if let Some(rate) = rate {
                // One frame at a time, `rate` a second.
                batch.truncate(1);
                let due = start + Duration::from_micros(sent * 1_000_000 / rate.max(1));
                tokio::time::sleep_until(due.into()).await;
            }
            match peer.send_frames(&batch).await {
                Ok(()) => sent += batch.len() as u64,
                Err(e) => return (sent, format!("cut off: {e}")),
            }
        }
    });
    tokio::time::sleep(HEAD_START).await;

    // The honest publisher at A.
    let a = fed.cluster.nodes[0].client();
    let mut ids = Vec::with_capacity(HONEST);
    let start = Instant::now();
    for n in 0..HONEST {
        let due = start + Duration::from_millis(n as u64 * 1000 / HONEST_PER_SEC);
        tokio::time::sleep_until(due.into()).await;
        let body = json!({"severity": "high", "tlp": "CLEAR", "title": format!("honest {n:05}")});
        let v = a.post("/v1/alerts", &body).await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let mut latencies: HashMap<String, f64> = HashMap::new();
    let mut at_x: Vec<f64> = Vec::new();
    let deadline = tokio::time::Instant::now() + DRAIN;
    while latencies.len() < HONEST {
        match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
            Ok(Some((2, id, ms))) => {
                latencies.insert(id, ms);
            }
            Ok(Some((_, _, ms))) => at_x.push(ms),
            _ => break,
        }
    }
    at_x.sort_by(|a, b| a.total_cmp(b));
    let _ = stop_tx.send(true);
    let (frames_sent, cut) = tokio::time::timeout(Duration::from_secs(30), attacker)
        .await
        .map(|r| r.unwrap())
        .unwrap_or((0, "did not stop".into()));
    for r in readers {
        r.abort();
    }
    let row = fed.peer_row(1, &raw_key).await.unwrap_or(Value::Null);
    let rejections = row["rejections"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let banned = !row["banned_until"].is_null();
    let mut sorted: Vec<f64> = ids
        .iter()
        .filter_map(|id| latencies.get(id))
        .copied()
        .collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Outcome {
        p50: percentile(&sorted, 0.50),
        p99: percentile(&sorted, 0.99),
        delivered: sorted.len(),
        frames_sent,
        attacker: format!(
            "p99 at X {:.1} ms; {cut}; banned={banned}; rate_limited={}; {rejections}",
            percentile(&at_x, 0.99),
            row["rate_limited"]
        ),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut only: Vec<String> = Vec::new();
    let mut stored = 0usize;
    let mut rate = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--stored" {
            stored = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--stored takes a number of alerts");
        } else if a == "--rate" {
            rate = Some(
                args.next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .expect("--rate takes frames a second"),
            );
        } else if !a.starts_with('-') {
            only.push(a);
        }
    }
    let attacks: Vec<Attack> = Attack::ALL
        .into_iter()
        .filter(|a| *a == Attack::None || only.is_empty() || only.iter().any(|o| o == a.name()))
        .collect();
    println!(
        "attack bench: A - X - B (member links), attacker R at X; {HONEST} honest alerts at {HONEST_PER_SEC}/s from A, delivery measured at B; X holds {stored} alerts of its own first; attacker: {}",
        rate.map_or("full speed".to_string(), |r| format!("{r} frames/s"))
    );
    println!(
        "{:<9} {:>9} {:>9} {:>10} {:>12} {:>13}  what X did to the attacker",
        "attack", "p50 ms", "p99 ms", "delivered", "p99/none", "frames sent"
    );
    let mut baseline = f64::NAN;
    for attack in attacks {
        let o = run(attack, stored, rate).await;
        if attack == Attack::None {
            baseline = o.p99;
        }
        println!(
            "{:<9} {:>9.1} {:>9.1} {:>6}/{:<3} {:>11.2}x {:>13}  {}",
            attack.name(),
            o.p50,
            o.p99,
            o.delivered,
            HONEST,
            o.p99 / baseline,
            o.frames_sent,
            o.attacker
        );
    }
}
