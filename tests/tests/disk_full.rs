//! A full disk does not silently stop the node: on a small tmpfs, issuing fails with a
//! clear error once the disk is full, the node says it is degraded, everything stored
//! stays readable, and once space is freed the store reopens by itself and takes
//! writes again, without a restart.
//!
//! Mounting a tmpfs needs root; elsewhere the test prints why it is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tocsin_tools::cluster::{Cluster, CreateOptions};

/// A tmpfs mounted for the test, unmounted (lazily) when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(dir: &Path, size: &str) -> Result<Mount, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("not running as root".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_reads_go_on_and_writes_resume_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    let _mount = match Mount::new(&fs, "8m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: a full disk needs a tmpfs mount ({why})");
            return;
        }
    };
    // The node's directory (key, config, log) stays on the real disk; its database is
    // on the small tmpfs, through a symbolic link.
    let nodes = dir.path().join("cluster");
    let mut c = Cluster::create(&nodes, 1, vec![], &CreateOptions::local().unwrap()).unwrap();
    let db = c.nodes[0].data_dir.join("tocsin.redb");
    // redb's file is sparse: copy it as such.
    let copied = Command::new("cp")
        .arg("--sparse=always")
        .arg(&db)
        .arg(fs.join("tocsin.redb"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::remove_file(&db).unwrap();
    std::os::unix::fs::symlink(fs.join("tocsin.redb"), &db).unwrap();
    c.start_all(Duration::from_secs(20)).await.unwrap();
    let client = c.nodes[0].client();
    // Leave about 1 MiB free.
    let filler = fs.join("filler");
    let free = {
        let st = nix::sys::statvfs::statvfs(&fs).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    };
    std::fs::write(
        &filler,
        vec![0u8; free.saturating_sub(1024 * 1024) as usize],
    )
    .unwrap();

    // Issue until the disk is full.
    let text = "x".repeat(8_000);
    let mut stored = Vec::new();
    let failure = loop {
        assert!(stored.len() < 400, "the disk never filled up");
        let body = json!({"severity": "low", "tlp": "CLEAR", "title": format!("fill {}", stored.len()), "text": text});
        match client.post("/v1/alerts", &body).await {
            Ok(v) => stored.push(v["id"].as_str().unwrap().to_string()),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        failure.contains("No space left on device") || failure.contains("degraded"),
        "{failure}"
    );
    assert!(!stored.is_empty());
    // The node says so, keeps serving what it stored, and refuses writes clearly.
    let status = client.status().await.unwrap();
    let reason = status["store_degraded"]
        .as_str()
        .unwrap_or_else(|| panic!("{status}"));
    assert!(reason.contains("free space"), "{reason}");
    assert_eq!(status["alerts"], stored.len());
    for id in &stored {
        let v: Value = client.get(&format!("/v1/alerts/{id}")).await.unwrap();
        assert_eq!(v["id"], id.as_str());
    }
    let e = client
        .post(
            "/v1/alerts",
            &json!({"severity": "low", "tlp": "CLEAR", "title": "refused"}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("degraded"), "{e}");
    // Readiness and metrics say so too; liveness does not.
    let e = client.get("/v1/ready").await.unwrap_err().to_string();
    assert!(e.contains("503") && e.contains("degraded"), "{e}");
    client.get("/v1/health").await.unwrap();
    let metrics = client.get_text("/metrics").await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "tocsin_store_degraded 1"),
        "{metrics}"
    );

    // Space comes back: the store reopens by itself and takes writes again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = client.status().await.unwrap();
        if status["store_degraded"].is_null() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still degraded after space was freed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = client
        .post(
            "/v1/alerts",
            &json!({"severity": "low", "tlp": "CLEAR", "title": "after the disk was freed"}),
        )
        .await
        .unwrap();
    assert_eq!(client.get("/v1/ready").await.unwrap()["ready"], true);
    let metrics = client.get_text("/metrics").await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "tocsin_store_degraded 0"),
        "{metrics}"
    );
    let status = client.status().await.unwrap();
    assert_eq!(status["alerts"], stored.len() + 1, "{status}");
    assert_eq!(status["head"].as_u64(), after["seq"].as_u64(), "{status}");
    for id in &stored {
        client.get(&format!("/v1/alerts/{id}")).await.unwrap();
    }
    c.stop(0, Duration::from_secs(10)).unwrap();
    let log = std::fs::read_to_string(c.nodes[0].log_path()).unwrap();
    assert!(log.contains("store degraded"), "{log}");
    assert!(log.contains("store recovered"), "{log}");
    assert!(log.contains("all pending writes committed"), "{log}");
}
