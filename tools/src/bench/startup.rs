//! `tocsin-cluster bench-startup`: how soon a node with many stored alerts serves again
//! after a restart.
//!
//! One real `tocsind`; `--alerts` CLEAR alerts are issued through its API, the node is
//! stopped (SIGTERM) and started again. The bench prints the time from the start until
//! the API answers `GET /v1/status` (store reads), until `GET /v1/net` answers (the
//! network actor has loaded the stored alerts into the engine), and the process's RSS
//! then, beside the time the same node took to start empty, in the same run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::catchup::issue_many;
use super::{text_padding, WorkDir, START_TIMEOUT};
use crate::cluster::{Cluster, CreateOptions};

/// How often the API is polled while the node starts.
const POLL: Duration = Duration::from_millis(2);

/// Options of `tocsin-cluster bench-startup`.
#[derive(Debug, Clone, clap::Args)]
pub struct StartupArgs {
    /// Alerts stored before the restart.
    #[arg(long, default_value_t = 100_000)]
    pub alerts: usize,
    /// Target size of each signed alert envelope in bytes (the text is padded).
    #[arg(long, default_value_t = 600)]
    pub size: usize,
}

/// One start: (API answering, alerts loaded), from the process start.
async fn timed_start(cluster: &mut Cluster) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    cluster.start(0)?;
    let client = cluster.nodes[0].client();
    let api = loop {
        if client.status().await.is_ok() {
            break t.elapsed();
        }
        if t.elapsed() > START_TIMEOUT {
            bail!("the node did not answer within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    client
        .get("/v1/net")
        .await
        .context("GET /v1/net (answered once the stored alerts are loaded)")?;
    Ok((api, t.elapsed()))
}

fn rss_mib(pid: Option<u32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// Runs the bench and prints its report.
pub async fn run(args: &StartupArgs) -> Result<()> {
    let (pad, envelope) = text_padding(args.size)?;
    let work = WorkDir::new(None)?;
    let mut cluster = Cluster::create(&work.path, 1, vec![], &CreateOptions::local()?)?;
    let (empty_api, empty_loaded) = timed_start(&mut cluster).await?;
    eprintln!("bench-startup: issuing {} alerts", args.alerts);
    let issued = issue_many(&cluster.nodes[0].client(), args.alerts, pad, 64).await?;
    cluster.stop(0, super::STOP_TIMEOUT)?;
    let (api, loaded) = timed_start(&mut cluster).await?;
    let rss = rss_mib(cluster.nodes[0].pid);
    let _ = cluster.stop_all(super::STOP_TIMEOUT);
    println!(
        "start-up bench: one node; {} CLEAR alerts of {envelope} bytes stored (issued in {:.1} s)",
        args.alerts,
        issued.as_secs_f64()
    );
    println!(
        "empty store:        API answering after {:7.1} ms, alerts loaded after {:7.1} ms",
        empty_api.as_secs_f64() * 1e3,
        empty_loaded.as_secs_f64() * 1e3
    );
    println!(
        "{:>7} stored:     API answering after {:7.1} ms, alerts loaded after {:7.1} ms, RSS {} MiB",
        args.alerts,
        api.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3,
        rss.map_or("unknown".to_string(), |r| r.to_string())
    );
    println!(
        "ratio to the empty start: API {:.2}x, loaded {:.2}x",
        api.as_secs_f64() / empty_api.as_secs_f64(),
        loaded.as_secs_f64() / empty_loaded.as_secs_f64()
    );
    Ok(())
}
