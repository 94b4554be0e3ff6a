//! Store ingest throughput over the same N = 2000 pre-signed alerts (~630 envelope
//! bytes each), each run into a fresh store on the repository's disk:
//!
//! - (a) one transaction per alert: each `insert` awaited before the next, so every
//!   alert pays its own commit and fsync. The baseline.
//! - (b) group commit: every alert inserted concurrently, one task each (as the daemon
//!   stores received alerts), so the writer batches them.
//! - (c) verified ingest, pipelined: [`Store::insert_verified`] over all N alerts. Every
//!   signature is checked as strictly as `SignedAlert::verify` (no batch verification)
//!   by one blocking worker per core, and verified alerts go to the writer while the
//!   rest are still being verified, so verification runs beside the writer. The time
//!   includes verification, so this is verified alerts stored per second.
//! - (d) for reference, (b) with each task verifying its alert inline before inserting
//!   (what the daemon does today: the engine verifies each alert on its own task).
//!
//! `cargo bench -p tocsin-node --bench ingest` runs the criterion benchmarks (small
//! samples), then runs (b), (c) and (d) in turn [`ROUNDS`] times, with (a) in every
//! [`PER_ALERT_EVERY`]th round, and prints the median alerts/s of each (with the
//! range) and the ratios (b)/(a) and (c)/(a). The alerts are cloned from the pool before
//! each run's clock starts.

use std::cell::Cell;
use std::fmt::Display;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use tempfile::TempDir;
use tocsin_node::store::{Receipt, Store};
use tocsin_proto::{
    AlertBody, Indicator, IndicatorType, Kind, PublicKey, Severity, SignedAlert, SigningKey, Tlp,
    VerifiedAlert, FORMAT_VERSION,
};

/// Alerts per ingest run.
const N: usize = 2000;

/// Runs of (b), (c) and (d) in the summary (~0.1 s each); the median is reported, since
/// single runs on the shared 2-core VM vary by ±15 %.
const ROUNDS: usize = 15;

/// Runs of (a), which takes seconds per run: one every third round.
const PER_ALERT_EVERY: usize = 3;

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
fn ingest_group(rt: &tokio::runtime::Runtime, store: &Store, alerts: Input) -> R<()> {
    rt.block_on(async {
        let tasks: Vec<_> = alerts
            .into_iter()
            .map(|a| {
                let store = store.clone();
                tokio::spawn(async move {
                    let a = match a {
                        Ok(verified) => verified,
                        Err(signed) => signed.verify().ctx("verify")?,
                    };
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

/// All alerts through [`Store::insert_verified`]: verified in chunks beside the writer.
fn ingest_verified(rt: &tokio::runtime::Runtime, store: &Store, alerts: Input) -> R<()> {
    rt.block_on(async {
        let items = alerts
            .into_iter()
            .map(|a| (a.map_or_else(|s| s, VerifiedAlert::into_signed), receipt()))
            .collect();
        let results = store.insert_verified(items).await.ctx("insert_verified")?;
        for r in results {
            r.ctx("verify")?;
        }
        Ok(())
    })
}

/// Each insert awaited before the next: one transaction (one fsync) per alert.
fn ingest_one_by_one(rt: &tokio::runtime::Runtime, store: &Store, alerts: Input) -> R<()> {
    rt.block_on(async {
        for a in alerts {
            let a = a.or_else(|signed| signed.verify()).ctx("verify")?;
            store.insert(a, receipt()).await.ctx("insert")?;
        }
        Ok(())
    })
}

/// The ingest variants of the summary.
#[derive(Debug, Clone, Copy)]
enum Variant {
    /// (a) one transaction per alert.
    PerAlert,
    /// (b) group commit.
    Group,
    /// (c) verified ingest, pipelined.
    Verified,
    /// (d) group commit, each task verifying inline.
    GroupInlineVerify,
}

impl Variant {
    /// A copy of `pool` for one run, made before the clock starts (the daemon stores
    /// alerts it already owns). The variants that do not verify get alerts verified
    /// already, as the engine hands them to the store.
    fn input(self, pool: &Pool) -> Input {
        match self {
            Variant::PerAlert | Variant::Group => pool.verified.iter().cloned().map(Ok).collect(),
            Variant::Verified | Variant::GroupInlineVerify => {
                pool.signed.iter().cloned().map(Err).collect()
            }
        }
    }

    /// Ingests `input` (from [`Variant::input`]).
    fn run(self, rt: &tokio::runtime::Runtime, store: &Store, input: Input) -> R<()> {
        match self {
            Variant::PerAlert => ingest_one_by_one(rt, store, input),
            Variant::Group | Variant::GroupInlineVerify => ingest_group(rt, store, input),
            Variant::Verified => ingest_verified(rt, store, input),
        }
    }
}

/// Alerts to ingest: verified already (`Ok`), or to be verified by the variant (`Err`).
type Input = Vec<Result<VerifiedAlert, SignedAlert>>;

/// The alerts of a run, as signed and as verified.
struct Pool {
    signed: Vec<SignedAlert>,
    verified: Vec<VerifiedAlert>,
}

/// `iters` full ingests of `pool`, each into a fresh store; only the ingest is timed.
fn group_iters(
    rt: &tokio::runtime::Runtime,
    pool: &Pool,
    variant: Variant,
    iters: u64,
) -> R<Duration> {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let f = fresh(rt)?;
        let input = variant.input(pool);
        let t = Instant::now();
        variant.run(rt, &f.store, input)?;
        total += t.elapsed();
        close(rt, f)?;
    }
    Ok(total)
}

/// `iters` single awaited inserts, cycling through `pool` (a fresh store each time the
/// pool is used up).
fn single_iters(rt: &tokio::runtime::Runtime, pool: &Pool, iters: u64) -> R<Duration> {
    let mut total = Duration::ZERO;
    let mut f = fresh(rt)?;
    let mut next = pool.verified.iter();
    for _ in 0..iters {
        let a = match next.next() {
            Some(a) => a,
            None => {
                close(rt, f)?;
                f = fresh(rt)?;
                next = pool.verified.iter();
                next.next().ok_or("empty pool")?
            }
        };
        let input = vec![Ok(a.clone())];
        let t = Instant::now();
        ingest_one_by_one(rt, &f.store, input)?;
        total += t.elapsed();
    }
    close(rt, f)?;
    Ok(total)
}

fn benches(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    pool: &Pool,
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

    g.throughput(Throughput::Elements(pool.signed.len() as u64));
    g.bench_function("group_commit", |b| {
        b.iter_custom(|iters| record(group_iters(rt, pool, Variant::Group, iters)))
    });
    g.bench_function("verified_pipelined", |b| {
        b.iter_custom(|iters| record(group_iters(rt, pool, Variant::Verified, iters)))
    });
    // One iteration = one alert: a full run of N takes seconds here.
    g.throughput(Throughput::Elements(1));
    g.bench_function("per_alert", |b| {
        b.iter_custom(|iters| record(single_iters(rt, pool, iters)))
    });
    g.finish();
}

/// Alerts per second of one full ingest of `pool` into a fresh store.
fn timed(rt: &tokio::runtime::Runtime, pool: &Pool, variant: Variant) -> R<f64> {
    let f = fresh(rt)?;
    let input = variant.input(pool);
    let t = Instant::now();
    variant.run(rt, &f.store, input)?;
    let secs = t.elapsed().as_secs_f64();
    let head = f.store.head().ctx("head")?;
    let n = pool.signed.len();
    if head != n as u64 {
        return Err(format!("stored {head} alerts, expected {n}"));
    }
    close(rt, f)?;
    Ok(n as f64 / secs)
}

fn main() -> R<()> {
    let rt = runtime()?;
    let signed = alerts(N)?;
    let verified = signed
        .iter()
        .map(|a| a.clone().verify().ctx("verify"))
        .collect::<R<Vec<_>>>()?;
    let pool = Pool { signed, verified };
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
    let n = pool.signed.len();
    let avg = pool
        .signed
        .iter()
        .map(|a| a.to_envelope().len())
        .sum::<usize>()
        / n;
    let order = [
        Variant::Group,
        Variant::Verified,
        Variant::GroupInlineVerify,
        Variant::PerAlert,
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); order.len()];
    for round in 0..ROUNDS {
        for (v, r) in order.iter().zip(rates.iter_mut()) {
            if matches!(v, Variant::PerAlert) && round % PER_ALERT_EVERY != 0 {
                continue;
            }
            r.push(timed(&rt, &pool, *v)?);
        }
    }
    let [group, verified, inline, one] = [0, 1, 2, 3].map(|i| Rate::of(rates.get_mut(i)));
    println!();
    println!(
        "ingest summary: N = {N} alerts of {avg} envelope bytes on average, {} cores; \
         median [min .. max] of {ROUNDS} runs, {} for (a)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        ROUNDS.div_ceil(PER_ALERT_EVERY)
    );
    println!("  (a) one transaction per alert (awaited loop)   {one}");
    println!("  (b) group commit (concurrent insert)           {group}");
    println!("  (c) verified + group commit, pipelined         {verified}");
    println!("      (insert_verified: strict verify of each signature beside the writer)");
    println!("  (d) group commit + inline verify in each task  {inline}");
    println!("  ratio (b)/(a)  {:>8.1}x", group.median / one.median);
    println!("  ratio (c)/(a)  {:>8.1}x", verified.median / one.median);
    Ok(())
}

/// Median and range of a variant's runs, in alerts/s.
#[derive(Debug, Clone, Copy)]
struct Rate {
    median: f64,
    min: f64,
    max: f64,
}

impl Rate {
    fn of(runs: Option<&mut Vec<f64>>) -> Rate {
        let runs = runs.map(|r| r.as_mut_slice()).unwrap_or_default();
        runs.sort_by(f64::total_cmp);
        let at = |i: usize| runs.get(i).copied().unwrap_or(f64::NAN);
        Rate {
            median: at(runs.len() / 2),
            min: at(0),
            max: at(runs.len().saturating_sub(1)),
        }
    }
}

impl Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>7.0} alerts/s  [{:.0} .. {:.0}]",
            self.median, self.min, self.max
        )
    }
}
