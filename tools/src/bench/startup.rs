//! `tocsin-cluster bench-startup`: how soon a node with many stored alerts serves again
//! after a restart.
//!
//! One real `tocsind`; `--alerts` CLEAR alerts are issued through its API, the node is
//! stopped (SIGTERM) and started again. The bench prints the time from the start until
//! the API answers `GET /v1/status` (store reads), until `GET /v1/net` answers (the
//! network actor runs: gossip has started), and the process's RSS then, beside the time
//! the same node took to start empty, in the same run. Then it waits for the node's
//! background check of every stored record (its log line "stored alerts checked") and
//! prints when it ended, the RSS then and the peak RSS (`VmHWM`).

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

/// One start: (API answering, network actor answering), from the process start.
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
        .context("GET /v1/net (answered once the network actor runs)")?;
    Ok((api, t.elapsed()))
}

/// The line the node logs when its background check of the stored records ends.
const CHECKED: &str = "stored alerts checked";

/// How long the background check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// How many times the node's log says its stored records were checked.
fn checks_logged(cluster: &Cluster) -> usize {
    std::fs::read_to_string(cluster.nodes[0].log_path())
        .map_or(0, |log| log.lines().filter(|l| l.contains(CHECKED)).count())
}

/// A memory figure of the process, MiB: `VmRSS` (now) or `VmHWM` (peak).
fn mem_mib(pid: Option<u32>, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))?
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
    let checks_before = checks_logged(&cluster);
    let started = Instant::now();
    let (api, loaded) = timed_start(&mut cluster).await?;
    let rss = mem_mib(cluster.nodes[0].pid, "VmRSS:");
    let checked = loop {
        if checks_logged(&cluster) > checks_before {
            break Some(started.elapsed());
        }
        if started.elapsed() > CHECK_TIMEOUT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rss_checked = mem_mib(cluster.nodes[0].pid, "VmRSS:");
    let peak = mem_mib(cluster.nodes[0].pid, "VmHWM:");
    let _ = cluster.stop_all(super::STOP_TIMEOUT);
    let mib = |m: Option<u64>| m.map_or("unknown".to_string(), |r| r.to_string());
    println!(
        "start-up bench: one node; {} CLEAR alerts of {envelope} bytes stored (issued in {:.1} s)",
        args.alerts,
        issued.as_secs_f64()
    );
    println!(
        "empty store:        API answering after {:7.1} ms, gossip started after {:7.1} ms",
        empty_api.as_secs_f64() * 1e3,
        empty_loaded.as_secs_f64() * 1e3
    );
    println!(
        "{:>7} stored:     API answering after {:7.1} ms, gossip started after {:7.1} ms, RSS {} MiB",
        args.alerts,
        api.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3,
        mib(rss)
    );
    match checked {
        Some(t) => println!(
            "stored records checked in the background after {:.1} ms; RSS then {} MiB, peak {} MiB",
            t.as_secs_f64() * 1e3,
            mib(rss_checked),
            mib(peak)
        ),
        None => println!(
            "the background check of the stored records did not end within {CHECK_TIMEOUT:?}"
        ),
    }
    println!(
        "ratio to the empty start: API {:.2}x, gossip {:.2}x",
        api.as_secs_f64() / empty_api.as_secs_f64(),
        loaded.as_secs_f64() / empty_loaded.as_secs_f64()
    );
    Ok(())
}
