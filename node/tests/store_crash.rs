//! Crash test of the redb store: a child process writes alerts (single and batched,
//! concurrent, with updates and cancels) and reports every insert that returned; the
//! test kills it with SIGKILL at varying points, reopens the file and checks that every
//! reported alert is there with its seq, and that everything stored (reported or not)
//! agrees with the reference model: log without gaps, states, counts and every index.
//!
//! The child is this same test binary, started again with `CHILD_ENV` set.
#![cfg(test)]

// The model's pruning is not used here: nothing is pruned in this test.
#[allow(dead_code)]
mod model;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use model::{alert, indicator, replacing, Model};
use tocsin_node::store::{Insert, Receipt, Store};
use tocsin_proto::{AlertId, IndicatorType, Kind, Severity, SignedAlert, Tlp};

const CHILD_ENV: &str = "TOCSIN_STORE_CRASH_CHILD";
/// The child's first alert number (so that each run writes new alerts).
const BASE_ENV: &str = "TOCSIN_STORE_CRASH_BASE";
const TEST_NAME: &str = "acknowledged_alerts_survive_kill_9_and_the_store_stays_consistent";
const T0: u64 = 1_700_000_000_000;
/// The child stops on its own after this many alerts, in case the parent is gone.
const CHILD_MAX_ALERTS: u64 = 50_000;
/// How many acknowledged alerts to wait for before each kill: early, mid-batch, later.
const KILL_AFTER: [usize; 5] = [1, 23, 90, 301, 700];
const WAIT: Duration = Duration::from_secs(60);

/// The k-th alert the child writes: origins 1–3 in turn; every 7th cancels and every
/// 5th updates the alert three before it (same origin); some expire; tags and
/// indicators for the indexes.
fn nth(k: u64, ids: &BTreeMap<u64, AlertId>) -> SignedAlert {
    let origin = 1 + (k % 3) as u8;
    let at = T0 + k;
    let target = k.checked_sub(3).and_then(|t| ids.get(&t).copied());
    match target {
        Some(t) if k % 7 == 3 => return replacing(origin, at, Kind::Cancel, t),
        Some(t) if k % 5 == 1 => return replacing(origin, at, Kind::Update, t),
        _ => {}
    }
    alert(origin, at, |b| {
        b.severity = Severity::ALL[(k % 5) as usize];
        b.tlp = if k % 4 == 0 { Tlp::Clear } else { Tlp::Green };
        b.tags = vec![if k % 2 == 0 { "phishing" } else { "Ransomware" }.into()];
        if k % 3 == 0 {
            b.indicators = vec![indicator(IndicatorType::Domain, "evil.example")];
            b.text = "LockBit affiliate".into();
        }
        if k % 11 == 0 {
            b.expires_at = Some(at + 1);
        }
    })
}

fn receipt() -> Receipt {
    Receipt {
        received_at: T0,
        from: None,
        hops: 0,
    }
}

/// The child: writes alerts from number `base` on until killed (or
/// [`CHILD_MAX_ALERTS`]), printing `ack <seq> <id>` for each returned insert.
fn child(path: &Path, base: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (store, _join) = Store::open(path).unwrap();
        let mut ids: BTreeMap<u64, AlertId> = BTreeMap::new();
        let mut k = base;
        let out = std::io::stdout();
        let mut round = 0u64;
        while k < base + CHILD_MAX_ALERTS {
            let batch: Vec<SignedAlert> = (0..8)
                .map(|i| {
                    let a = nth(k + i, &ids);
                    ids.insert(k + i, a.id());
                    a
                })
                .collect();
            k += 8;
            round += 1;
            let results: Vec<Insert> = if round % 3 == 0 {
                let items = batch
                    .iter()
                    .map(|a| (a.clone().verify().unwrap(), receipt()))
                    .collect();
                store.insert_many(items).await.unwrap()
            } else {
                let inserts = batch
                    .iter()
                    .map(|a| store.insert(a.clone().verify().unwrap(), receipt()));
                futures::future::join_all(inserts)
                    .await
                    .into_iter()
                    .map(Result::unwrap)
                    .collect()
            };
            let mut lock = out.lock();
            for (a, r) in batch.iter().zip(results) {
                writeln!(lock, "ack {} {}", r.seq(), a.id()).unwrap();
            }
            lock.flush().unwrap();
        }
    });
}

/// Starts the child on `path`, waits for `acks` acknowledgements, kills it with
/// SIGKILL and returns every acknowledgement it printed.
fn run_and_kill(path: &Path, base: u64, acks: usize) -> Vec<(u64, AlertId)> {
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, path)
        .env(BASE_ENV, base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("ack ") {
                let mut parts = rest.split(' ');
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                let id = AlertId::from_hex(parts.next().unwrap()).unwrap();
                if tx.send((seq, id)).is_err() {
                    break;
                }
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < acks {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(a) => got.push(a),
            Err(e) => {
                let _ = proc.kill();
                let _ = proc.wait();
                panic!(
                    "the writer gave {} of {acks} acknowledgements: {e}",
                    got.len()
                );
            }
        }
    }
    proc.kill().unwrap();
    proc.wait().unwrap();
    reader.join().unwrap();
    // Acknowledgements printed before the kill landed count too.
    got.extend(rx.try_iter());
    got
}

/// Reopens the store and checks it: every acknowledged alert is there, and the file
/// agrees with a model rebuilt by replaying its own log.
async fn check_after_crash(path: &Path, acked: &[(u64, AlertId)]) -> Model {
    let (store, join) = Store::open(path).unwrap();
    for (seq, id) in acked {
        let s = store
            .get(id)
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged alert {id:?} (seq {seq}) lost"));
        assert_eq!(s.seq, *seq, "acknowledged alert {id:?} changed seq");
    }
    // Replay the log into the model: seqs must come out identical (no gaps, no
    // reuse), and then every read must agree.
    let log = store.log_after(0, usize::MAX).unwrap();
    let mut model = Model::default();
    for (seq, id) in &log {
        let a = store.get(id).unwrap().unwrap().alert;
        assert_eq!(
            model.insert(&a),
            Insert::Inserted { seq: *seq },
            "log gap at {seq}"
        );
    }
    let ids: Vec<AlertId> = log.iter().map(|(_, id)| *id).collect();
    model
        .check(&store, &ids, &model::queries(T0))
        .unwrap_or_else(|e| panic!("after a crash: {e}"));
    drop(store);
    join.await.unwrap();
    model
}

#[test]
fn acknowledged_alerts_survive_kill_9_and_the_store_stays_consistent() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        let base = std::env::var(BASE_ENV).unwrap().parse().unwrap();
        child(Path::new(&path), base);
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("store.redb");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut total = 0;
    for (run, acks) in KILL_AFTER.into_iter().enumerate() {
        let acked = run_and_kill(&path, run as u64 * CHILD_MAX_ALERTS, acks);
        let model = rt.block_on(check_after_crash(&path, &acked));
        eprintln!(
            "kill {run}: {} inserts acknowledged; {} alerts in the file after the kill",
            acked.len(),
            model.head()
        );
        assert!(model.head() as usize >= total + acked.len());
        total = model.head() as usize;
    }
    // After the last crash the store still takes writes, at the next seq.
    rt.block_on(async {
        let (store, _join) = Store::open(&path).unwrap();
        let head = store.head().unwrap();
        let a = alert(1, T0 - 1, |b| b.title = "after the crashes".into());
        assert_eq!(
            store.insert(a.verify().unwrap(), receipt()).await.unwrap(),
            Insert::Inserted { seq: head + 1 }
        );
    });
}
