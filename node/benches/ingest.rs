//! Store ingest: group commit (many concurrent `insert`s sharing fsyncs) against one
//! transaction per alert (each `insert` awaited before the next), with and without
//! verifying each signature first.
//!
//! `cargo bench -p tocsin-node --bench ingest` runs the criterion benchmarks (small
//! samples), then times each variant once over the same N = 2000 pre-signed alerts and
//! prints alerts/s and the group/per-alert ratio.

use std::cell::Cell;
use std::fmt::Display;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use tempfile::TempDir;
use tocsin_node::store::{Receipt, Store};
use tocsin_proto::{
    AlertBody, Indicator, IndicatorType, Kind, PublicKey, Severity, SignedAlert, SigningKey, Tlp,
    FORMAT_VERSION,
};

/// Alerts per ingest run.
const N: usize = 2000;

/// Benchmark failures are reported as text and end the run with an error.
type R<T> = Result<T, String>;

trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

fn alerts(n: usize) -> R<Vec<SignedAlert>> {
    let keys: Vec<SigningKey> = (1..=4u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let mut out = Vec::with_capacity(n);
    for (i, key) in (0..n).zip(keys.iter().cycle()) {
        let body = AlertBody {
            v: FORMAT_VERSION,
            origin: PublicKey(key.verifying_key().to_bytes()),
            issued_at: 1_700_000_000_000 + i as u64,
            expires_at: Some(1_800_000_000_000),
            kind: Kind::New,
            replaces: None,
            severity: Severity::ALL[i % Severity::ALL.len()],
            tlp: Tlp::Green,
            recipients: vec![],
            title: format!("Credential phishing campaign #{i} against banks"),
            text: "Emails impersonating the tax office lead to a credential harvesting page \
                   on compromised sites. Block the indicators below."
                .into(),
            indicators: vec![
                Indicator::new(IndicatorType::Domain, format!("tax-refund-{i}.example"))
                    .ctx("domain indicator")?,
                Indicator::new(IndicatorType::Ipv4, format!("203.0.113.{}", i % 250))
                    .ctx("ipv4 indicator")?,
                Indicator::new(
                    IndicatorType::Url,
                    format!("https://tax-refund-{i}.example/login.php"),
                )
                .ctx("url indicator")?,
            ],
            tags: vec![
                "phishing".into(),
                "banking".into(),
                format!("wave{}", i % 10),
            ],
            references: vec!["https://cert.example/advisories/2024-001".into()],
        };
        out.push(SignedAlert::sign(body, key).ctx("signing")?);
    }
    Ok(out)
}

fn receipt() -> Receipt {
    Receipt {
        received_at: 1_700_000_000_000,
        from: Some(PublicKey([9; 32])),
        hops: 1,
    }
}

/// Two workers, like the machine: verification in the group variant uses both cores.
fn runtime() -> R<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .ctx("tokio runtime")
}

/// A store in a fresh temporary directory under `target/tmp` (the repository's disk,
/// so commits pay a real fsync).
struct Fresh {
    store: Store,
    join: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

fn fresh(rt: &tokio::runtime::Runtime) -> R<Fresh> {
    let dir = TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).ctx("temporary directory")?;
    let (store, join) = rt
        .block_on(async { Store::open(&dir.path().join("bench.redb")) })
        .ctx("opening the store")?;
    Ok(Fresh {
        store,
        join,
        _dir: dir,
    })
}

fn close(rt: &tokio::runtime::Runtime, f: Fresh) -> R<()> {
    let Fresh { store, join, _dir } = f;
    drop(store);
    rt.block_on(join).ctx("store writer")
}

/// All alerts inserted concurrently (one task each, as connections would), so the
/// writer batches them.
fn ingest_group(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    alerts: &[SignedAlert],
    verify: bool,
) -> R<()> {
    rt.block_on(async {
        let tasks: Vec<_> = alerts
            .iter()
            .cloned()
            .map(|a| {
                let store = store.clone();
                tokio::spawn(async move {
                    if verify {
                        a.verify().ctx("verify")?;
                    }
                    store.insert(a, receipt()).await.ctx("insert")
                })
            })
            .collect();
        for t in tasks {
            t.await.ctx("insert task")??;
        }
        Ok(())
    })
}

/// Each insert awaited before the next: one transaction (one fsync) per alert.
fn ingest_one_by_one(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    alerts: &[SignedAlert],
    verify: bool,
) -> R<()> {
    rt.block_on(async {
        for a in alerts {
            if verify {
                a.verify().ctx("verify")?;
            }
            store.insert(a.clone(), receipt()).await.ctx("insert")?;
        }
        Ok(())
    })
}

/// `iters` full group-commit ingests of `pool`, each into a fresh store; only the
/// ingest is timed.
fn group_iters(
    rt: &tokio::runtime::Runtime,
    pool: &[SignedAlert],
    verify: bool,
    iters: u64,
) -> R<Duration> {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let f = fresh(rt)?;
        let t = Instant::now();
        ingest_group(rt, &f.store, pool, verify)?;
        total += t.elapsed();
        close(rt, f)?;
    }
    Ok(total)
}

/// `iters` single awaited inserts, cycling through `pool` (a fresh store each time the
/// pool is used up).
fn single_iters(
    rt: &tokio::runtime::Runtime,
    pool: &[SignedAlert],
    verify: bool,
    iters: u64,
) -> R<Duration> {
    let mut total = Duration::ZERO;
    let mut f = fresh(rt)?;
    let mut next = pool.iter();
    for _ in 0..iters {
        let a = match next.next() {
            Some(a) => a,
            None => {
                close(rt, f)?;
                f = fresh(rt)?;
                next = pool.iter();
                next.next().ok_or("empty pool")?
            }
        };
        let t = Instant::now();
        ingest_one_by_one(rt, &f.store, std::slice::from_ref(a), verify)?;
        total += t.elapsed();
    }
    close(rt, f)?;
    Ok(total)
}

fn benches(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    pool: &[SignedAlert],
    failure: &Cell<Option<String>>,
) {
    let record = |r: R<Duration>| match r {
        Ok(d) => d,
        Err(e) => {
            failure.set(Some(e));
            Duration::from_nanos(1)
        }
    };
    let mut g = c.benchmark_group("ingest");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    g.throughput(Throughput::Elements(pool.len() as u64));
    for (name, verify) in [("group_commit", false), ("group_commit_verify", true)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| record(group_iters(rt, pool, verify, iters)))
        });
    }
    // One iteration = one alert: a full run of N takes seconds here.
    g.throughput(Throughput::Elements(1));
    for (name, verify) in [("per_alert", false), ("per_alert_verify", true)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| record(single_iters(rt, pool, verify, iters)))
        });
    }
    g.finish();
}

/// Alerts per second of one full ingest of `pool` into a fresh store.
fn timed(
    rt: &tokio::runtime::Runtime,
    pool: &[SignedAlert],
    run: impl Fn(&tokio::runtime::Runtime, &Store, &[SignedAlert]) -> R<()>,
) -> R<f64> {
    let f = fresh(rt)?;
    let t = Instant::now();
    run(rt, &f.store, pool)?;
    let secs = t.elapsed().as_secs_f64();
    let head = f.store.head().ctx("head")?;
    if head != pool.len() as u64 {
        return Err(format!("stored {head} alerts, expected {}", pool.len()));
    }
    close(rt, f)?;
    Ok(pool.len() as f64 / secs)
}

fn micro(rt: &tokio::runtime::Runtime, pool: &[SignedAlert]) -> R<()> {
    for _ in 0..3 {
        if std::env::var_os("NOVERIFY").is_none() {
            let t = Instant::now();
            for a in pool {
                a.verify().ctx("v")?;
            }
            let v = t.elapsed();
            let t = Instant::now();
            let mut cache = std::collections::HashMap::new();
            for a in pool {
                let vk = match cache.get(&a.origin().0) {
                    Some(k) => *k,
                    None => {
                        let k = a.origin().verifying_key().ctx("k")?;
                        cache.insert(a.origin().0, k);
                        k
                    }
                };
                vk.verify_strict(
                    &a.signed_message(),
                    &ed25519_dalek::Signature::from_bytes(a.signature()),
                )
                .ctx("vs")?;
            }
            let vc = t.elapsed();
            let t = Instant::now();
            for a in pool {
                let _ = a.origin().verifying_key().ctx("k")?;
            }
            let dk = t.elapsed();
            let t = Instant::now();
            for a in pool {
                std::hint::black_box(a.to_envelope());
            }
            let env = t.elapsed();
            let t = Instant::now();
            for a in pool {
                std::hint::black_box(a.clone());
            }
            let cl = t.elapsed();
            let n = pool.len() as f64;
            println!("per alert us: verify {:.1} cached-key verify {:.1} key decompress {:.1} to_envelope {:.2} clone {:.2}",
            v.as_secs_f64()*1e6/n, vc.as_secs_f64()*1e6/n, dk.as_secs_f64()*1e6/n, env.as_secs_f64()*1e6/n, cl.as_secs_f64()*1e6/n);
        }
        let n = pool.len() as f64;
        let f = fresh(rt)?;
        let t = Instant::now();
        rt.block_on(async {
            f.store
                .insert_many(pool.iter().cloned().map(|a| (a, receipt())).collect())
                .await
        })
        .ctx("im")?;
        println!("insert_many {:.0} alerts/s", n / t.elapsed().as_secs_f64());
        close(rt, f)?;
    }
    Ok(())
}

fn main() -> R<()> {
    let rt = runtime()?;
    let pool = alerts(N)?;
    if std::env::var_os("MICRO").is_some() {
        return micro(&rt, &pool);
    }
    let failure = Cell::new(None);
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &rt, &pool, &failure);
    c.final_summary();
    if let Some(e) = failure.take() {
        return Err(e);
    }

    // Criterion runs each benchmark once under `cargo test --benches`; the timed
    // summary only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let avg = pool.iter().map(|a| a.to_envelope().len()).sum::<usize>() / pool.len();
    let group = timed(&rt, &pool, |rt, s, p| ingest_group(rt, s, p, false))?;
    let group_v = timed(&rt, &pool, |rt, s, p| ingest_group(rt, s, p, true))?;
    let one = timed(&rt, &pool, |rt, s, p| ingest_one_by_one(rt, s, p, false))?;
    let one_v = timed(&rt, &pool, |rt, s, p| ingest_one_by_one(rt, s, p, true))?;
    println!();
    println!("ingest summary: N = {N} alerts of {avg} envelope bytes on average, one run each");
    println!("  group commit (concurrent insert)         {group:>9.0} alerts/s");
    println!("  group commit + verify each signature     {group_v:>9.0} alerts/s");
    println!("  one transaction per alert (awaited loop) {one:>9.0} alerts/s");
    println!("  one transaction per alert + verify       {one_v:>9.0} alerts/s");
    println!(
        "  ratio group / per-alert                  {:>9.1}x",
        group / one
    );
    println!(
        "  ratio group / per-alert, with verify     {:>9.1}x",
        group_v / one_v
    );
    Ok(())
}
