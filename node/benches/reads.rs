//! What a catch-up page costs the node that answers it, with the alerts read from the
//! store (the daemon: `net::StoredAlerts`) against the same alerts held in memory (the
//! baseline, measured in the same run).
//!
//! N = 20,000 stored alerts (~600 envelope bytes each) in a fresh store under
//! `target/tmp`. One engine reads them from the store, the other loaded them all. A
//! member peer sends `sync_request` for each page of the log in turn (every page scans
//! `SYNC_PAGE_SCAN` entries); the bench prints the median time per request of each,
//! per entry scanned, and the ratio. Release build:
//!
//! ```sh
//! cargo bench -p tocsin-node --bench reads
//! ```

use std::time::Instant;

use tempfile::TempDir;
use tocsin_node::engine::{Action, Engine, EngineConfig, Event, KnownAlert, SYNC_PAGE_SCAN};
use tocsin_node::net::StoredAlerts;
use tocsin_node::store::{Receipt, Store};
use tocsin_proto::{
    AlertBody, Frame, Kind, PublicKey, Severity, SignedAlert, SigningKey, Tlp, TrustLevel,
    FORMAT_VERSION,
};

/// Alerts stored.
const N: u64 = 20_000;
/// Rounds over every page of the log, for each engine; the median is reported.
const ROUNDS: usize = 5;
/// The engines' clock.
const NOW: u64 = 1_800_000_000_000;

type R<T> = Result<T, String>;

fn signed(key: &SigningKey, i: u64) -> R<SignedAlert> {
    let body = AlertBody {
        v: FORMAT_VERSION,
        origin: PublicKey(key.verifying_key().to_bytes()),
        issued_at: NOW - 1_000_000 + i,
        expires_at: None,
        kind: Kind::New,
        replaces: None,
        severity: Severity::High,
        tlp: if i % 4 == 0 { Tlp::Amber } else { Tlp::Clear },
        recipients: vec![],
        title: format!("Credential phishing campaign #{i} against banks"),
        text: "Emails impersonating the tax office lead to a credential harvesting page on \
               compromised sites. Block the indicators below. "
            .repeat(4),
        indicators: vec![],
        tags: vec!["phishing".into(), "banking".into()],
        references: vec!["https://cert.example/advisories/2024-001".into()],
    };
    SignedAlert::sign(body, key).map_err(|e| format!("signing: {e}"))
}

/// Pages of the log read, in order, each from where the last ended: microseconds per
/// request and log entries per request, median of the rounds. `from_start`: every
/// request asks for the first page (a flood of the same request).
fn per_request(
    engine: &mut Engine,
    peer: PublicKey,
    epoch: u64,
    from_start: bool,
) -> R<(f64, f64)> {
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let (mut after, mut requests, mut entries) = (0, 0u64, 0u64);
        let start = Instant::now();
        while after < N && requests < 1000 {
            let asked = if from_start { 0 } else { after };
            let frame = Frame::SyncRequest {
                epoch,
                after: asked,
            };
            let bytes = frame.encode().map_err(|e| format!("encoding: {e}"))?;
            let out = engine.handle(Event::Frame { peer, bytes }, NOW);
            let next = out.iter().find_map(|a| match a {
                Action::Send {
                    frame: Frame::SyncPage { next, .. },
                    ..
                } => Some(*next),
                _ => None,
            });
            let next = next.ok_or("a sync_request got no page")?;
            entries += next - asked;
            after = if from_start {
                after + SYNC_PAGE_SCAN as u64
            } else {
                next
            };
            requests += 1;
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / requests as f64;
        rounds.push((us, entries as f64 / requests as f64));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(rounds[rounds.len() / 2])
}

fn main() -> R<()> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let dir = TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).map_err(|e| e.to_string())?;
    let (store, join) = rt
        .block_on(async { Store::open(&dir.path().join("reads.redb")) })
        .map_err(|e| format!("opening the store: {e}"))?;
    let origin = SigningKey::from_bytes(&[7; 32]);
    let receipt = Receipt {
        received_at: NOW,
        from: Some(PublicKey([9; 32])),
        hops: 1,
    };
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        let mut items = Vec::new();
        for i in chunk {
            let alert = signed(&origin, *i)?.verify().map_err(|e| e.to_string())?;
            items.push((alert, receipt));
        }
        rt.block_on(store.insert_many(items))
            .map_err(|e| format!("storing: {e}"))?;
    }
    let me = PublicKey([1; 32]);
    let peer = PublicKey(SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes());
    let cfg = EngineConfig {
        peer_work_per_sec: u64::MAX / 4,
        peer_work_burst: u64::MAX / 4,
        ..EngineConfig::default()
    };
    let connect = |e: &mut Engine| {
        e.load_trust(peer, TrustLevel::Member);
        e.handle(Event::PeerConnected(peer), NOW);
    };
    let mut loaded = Engine::new(me, store.epoch(), cfg.clone());
    let metas = store.all_meta().map_err(|e| format!("reading: {e}"))?;
    for m in metas {
        let known = KnownAlert {
            alert: m.alert,
            hops: m.receipt.hops,
            from: m.receipt.from,
        };
        loaded.load_alert(m.seq, known);
    }
    connect(&mut loaded);
    let mut cold = Engine::new(me, store.epoch(), cfg);
    cold.set_cold(Box::new(StoredAlerts::new(store.clone(), me)));
    connect(&mut cold);

    let epoch = store.epoch();
    println!("sync_request answered, {N} alerts stored (median of {ROUNDS} rounds):");
    let mut base = (0.0, 0.0);
    for (what, from_start, read_store) in [
        ("whole log, held in memory (baseline)", false, false),
        ("whole log, read from the store", false, true),
        ("first page again and again, in memory", true, false),
        ("first page again and again, store", true, true),
    ] {
        let engine = if read_store { &mut cold } else { &mut loaded };
        let (us, entries) = per_request(engine, peer, epoch, from_start)?;
        if base.0 == 0.0 {
            base = (us, entries);
        }
        println!(
            "  {what:<40} {us:8.1} µs a request, {entries:5.0} entries a page, {:5.2} µs an entry; {:5.1}x the baseline's time an entry",
            us / entries,
            (us / entries) / (base.0 / base.1)
        );
    }
    drop(cold);
    drop(store);
    rt.block_on(join).map_err(|e| e.to_string())
}
