//! `tocsin-cluster bench-catchup`: how fast a node that was offline gets what it
//! missed, beside how fast the origin took the same alerts in, measured in one run.
//!
//! Two real `tocsind` nodes linked as members. Node 2 is stopped; `--alerts` CLEAR
//! alerts (envelope `--size` bytes) are issued at node 1 through its API, `--concurrency`
//! requests at a time (the origin's ingest: signing, group commit). Node 2 is started
//! again; the bench polls its store until it holds every alert. It prints:
//! - the origin's ingest time and rate;
//! - the catch-up time from node 2's start, and from its API answering, and the rate;
//! - the ratio of catch-up time to ingest time (target: ≤ 1);
//! - the libp2p bytes both nodes sent during catch-up, against the alerts' envelope
//!   bytes (target: ≤ 1.1×).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::task::JoinSet;

use super::{text_padding, WorkDir, LINK_TIMEOUT, QUERY_TIMEOUT, START_TIMEOUT};
use crate::baseline::sum_metric;
use crate::cluster::{Cluster, CreateOptions, Link, NodeInfo};

/// How long node 2 may take to catch up before the bench gives up.
const CATCHUP_TIMEOUT: Duration = Duration::from_secs(600);
/// How often node 2's store is polled.
const POLL: Duration = Duration::from_millis(20);

/// Options of `tocsin-cluster bench-catchup`.
#[derive(Debug, Clone, clap::Args)]
pub struct CatchupArgs {
    /// Alerts node 2 misses.
    #[arg(long, default_value_t = 20_000)]
    pub alerts: usize,
    /// Target size of each signed alert envelope in bytes (the text is padded).
    #[arg(long, default_value_t = 600)]
    pub size: usize,
    /// Issue requests in flight at once at the origin.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatchupReport {
    pub alerts: usize,
    pub envelope_bytes: usize,
    pub ingest_secs: f64,
    pub catchup_secs_from_start: f64,
    pub catchup_secs_from_api: f64,
    pub wire_bytes: f64,
    /// Node 2's write batches (group commits) and the seconds they took in all, from its
    /// start: where its catch-up waited on the disk.
    pub commits: f64,
    pub commit_secs: f64,
}

async fn libp2p_bytes_out(node: &NodeInfo) -> Result<f64> {
    let text = tokio::time::timeout(QUERY_TIMEOUT, node.client().get_text("/metrics"))
        .await
        .context("GET /metrics timed out")??;
    Ok(sum_metric(
        &text,
        "libp2p_bandwidth_bytes_total",
        &[("direction", "outbound")],
    ))
}

async fn stored(node: &NodeInfo) -> Result<u64> {
    let st = tokio::time::timeout(QUERY_TIMEOUT, node.client().status())
        .await
        .context("GET /v1/status timed out")??;
    Ok(st["alerts"].as_u64().unwrap_or(0))
}

/// Issues `n` CLEAR alerts (text padded by `pad`) through `client`, `concurrency` at
/// a time; returns how long it took.
pub async fn issue_many(
    client: &crate::client::Client,
    n: usize,
    pad: usize,
    concurrency: usize,
) -> Result<Duration> {
    let text = "x".repeat(pad);
    let t = Instant::now();
    let mut tasks = JoinSet::new();
    for k in 0..n {
        if tasks.len() >= concurrency {
            if let Some(r) = tasks.join_next().await {
                r.context("issue task")??;
            }
        }
        let client = client.clone();
        let body = json!({
            "severity": "info",
            "tlp": "CLEAR",
            "title": format!("bench {k:08}"),
            "text": text,
        });
        tasks.spawn(async move { client.post("/v1/alerts", &body).await.map(|_| ()) });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("issue task")??;
    }
    Ok(t.elapsed())
}

/// Runs the bench and prints its report (JSON with `json`).
pub async fn run(args: &CatchupArgs, json: bool) -> Result<CatchupReport> {
    if args.alerts == 0 || args.concurrency == 0 {
        bail!("--alerts and --concurrency must be at least 1");
    }
    let (pad, envelope) = text_padding(args.size)?;
    let work = WorkDir::new(None)?;
    let opts = CreateOptions::local()?;
    let links = vec![Link::sym(0, 1, tocsin_proto::TrustLevel::Member)];
    let mut cluster = Cluster::create(&work.path, 2, links, &opts)?;
    cluster.start_all(START_TIMEOUT).await?;
    cluster.wait_links(LINK_TIMEOUT).await?;
    cluster.stop(1, super::STOP_TIMEOUT)?;
    eprintln!(
        "bench-catchup: node 2 stopped; issuing {} alerts of {envelope} bytes at node 1",
        args.alerts
    );

    // The origin's ingest.
    let ingest = issue_many(
        &cluster.nodes[0].client(),
        args.alerts,
        pad,
        args.concurrency,
    )
    .await?;
    let bytes_before = libp2p_bytes_out(&cluster.nodes[0]).await?;

    // Node 2 comes back.
    let t = Instant::now();
    cluster.start(1)?;
    cluster.wait_ready(1, START_TIMEOUT).await?;
    let api_up = t.elapsed();
    let deadline = Instant::now() + CATCHUP_TIMEOUT;
    loop {
        let n = stored(&cluster.nodes[1]).await?;
        if n >= args.alerts as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "node 2 holds {n} of {} alerts after {CATCHUP_TIMEOUT:?}",
                args.alerts
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let catchup = t.elapsed();
    let wire = libp2p_bytes_out(&cluster.nodes[0]).await? - bytes_before
        + libp2p_bytes_out(&cluster.nodes[1]).await?;
    let metrics = tokio::time::timeout(
        QUERY_TIMEOUT,
        cluster.nodes[1].client().get_text("/metrics"),
    )
    .await
    .context("GET /metrics timed out")??;
    let commits = sum_metric(&metrics, "tocsin_store_commit_seconds_count", &[]);
    let commit_secs = sum_metric(&metrics, "tocsin_store_commit_seconds_sum", &[]);
    let _ = cluster.stop_all(super::STOP_TIMEOUT);

    let report = CatchupReport {
        alerts: args.alerts,
        envelope_bytes: envelope,
        ingest_secs: ingest.as_secs_f64(),
        catchup_secs_from_start: catchup.as_secs_f64(),
        catchup_secs_from_api: (catchup - api_up).as_secs_f64(),
        wire_bytes: wire,
        commits,
        commit_secs,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let total = (args.alerts * envelope) as f64;
        println!(
            "catch-up bench: 2 nodes (member link); node 2 missed {} CLEAR alerts of {envelope} bytes",
            args.alerts
        );
        println!(
            "origin ingest (API, {} in flight):  {:8.2} s  {:9.0} alerts/s",
            args.concurrency,
            report.ingest_secs,
            args.alerts as f64 / report.ingest_secs
        );
        println!(
            "catch-up (node 2 start to all held): {:8.2} s  {:9.0} alerts/s  ({:.2} s after its API answered)",
            report.catchup_secs_from_start,
            args.alerts as f64 / report.catchup_secs_from_start,
            report.catchup_secs_from_api
        );
        println!(
            "catch-up / ingest time:              {:8.2}x",
            report.catchup_secs_from_start / report.ingest_secs
        );
        println!(
            "libp2p bytes sent during catch-up:   {:8.1} MB  {:.2}x the alerts' {:.1} MB",
            wire / 1e6,
            wire / total,
            total / 1e6
        );
        println!(
            "node 2's group commits:              {:8.0}     {:9.1} alerts each, {:.2} s in all",
            commits,
            args.alerts as f64 / commits.max(1.0),
            commit_secs
        );
    }
    Ok(report)
}
