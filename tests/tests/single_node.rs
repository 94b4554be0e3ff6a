//! One node, end to end, as an operator would use it: `tocsind init` and `run`, the
//! `tocsin` CLI, kill -9 durability, refusal of a world-readable key, a missing daemon,
//! and bad input rejected with the field or limit named.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tocsin_tests::{run, tocsin_cli, tocsind_bin};
use tocsin_tools::cluster::{Cluster, CreateOptions};

async fn one_node() -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::create(dir.path(), 1, vec![], &CreateOptions::local().unwrap()).unwrap();
    c.start_all(Duration::from_secs(20)).await.unwrap();
    (dir, c)
}

/// `tocsind init --data-dir DATA --listen LISTEN`: stdout, stderr, exit code.
fn tocsind_init(data: &std::path::Path, listen: &str) -> (String, String, i32) {
    run(Command::new(tocsind_bin())
        .args(["init", "--data-dir"])
        .arg(data)
        .args(["--listen", listen]))
}

/// `tocsind init` with a bad listen address fails and leaves nothing behind, so that it
/// can be run again; usage errors exit 1 (bad input), not 2 (runtime failure); and
/// `--config` wins over `TOCSIN_DATA_DIR` from the environment, which the CLI's docs
/// tell operators to export.
#[test]
fn a_failed_init_changes_nothing_and_usage_errors_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let (_, err, code) = tocsind_init(&data, "bogus");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("net.listen") && err.contains("bogus"), "{err}");
    assert!(!data.exists(), "a failed init left {}", data.display());
    let (_, err, code) = tocsind_init(&data, "/ip4/127.0.0.1/tcp/0");
    assert_eq!(code, 0, "init again: {err}");

    let config = data.join("config.toml");
    let (_, err, code) = run(Command::new(tocsind_bin())
        .env("TOCSIN_DATA_DIR", dir.path().join("elsewhere"))
        .args(["check", "--config"])
        .arg(&config));
    assert_eq!(code, 0, "--config with TOCSIN_DATA_DIR set: {err}");
    for args in [
        vec!["chek"],
        vec!["run", "--no-such-flag"],
        vec!["check", "--data-dir", "a", "--config", "b"],
    ] {
        let (_, err, code) = run(Command::new(tocsind_bin())
            .env_remove("TOCSIN_DATA_DIR")
            .args(&args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_run_issue_list_show_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let (out, err, code) = tocsind_init(&data, "/ip4/127.0.0.1/tcp/0");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("public key:") && out.contains("peer id:"),
        "{out}"
    );
    let mode = std::fs::metadata(data.join("node.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "key file mode");
    let config = std::fs::read_to_string(data.join("config.toml")).unwrap();
    for option in [
        "data_dir",
        "[api]",
        "[log]",
        "[net]",
        "announce_interval_ms",
        "[store]",
        "retention_days",
        "[[peers]]",
    ] {
        assert!(config.contains(option), "config.toml mentions {option}");
    }
    // A second init refuses to overwrite the key.
    let (_, err, code) = run(Command::new(tocsind_bin())
        .args(["init", "--data-dir"])
        .arg(&data));
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");

    let mut child = Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(&data)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let socket = data.join("tocsind.sock");
    let guard = KillOnDrop(&mut child);
    wait_socket(&socket).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "API socket mode");

    let (out, err, code) = run(tocsin_cli(&socket).args([
        "issue",
        "--severity",
        "high",
        "--tlp",
        "GREEN",
        "--title",
        "Phishing wave",
        "--indicator",
        "domain:login-example.test",
        "--indicator",
        "ipv4:192.0.2.7",
        "--tag",
        "phishing",
        "--expires",
        "24h",
        "--json",
    ]));
    assert_eq!(code, 0, "{err}");
    let issued: Value = serde_json::from_str(out.trim()).unwrap();
    let id = issued["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);

    let (out, err, code) = run(tocsin_cli(&socket).args(["list"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Phishing wave") && out.contains(&id[..12]),
        "table: {out}"
    );
    let (out, _, _) = run(tocsin_cli(&socket).args(["list", "--json", "--tag", "phishing"]));
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], id.as_str());
    let (out, _, _) = run(tocsin_cli(&socket).args(["list", "--json", "--tag", "ransomware"]));
    assert_eq!(out.trim(), "", "filter excludes");

    let (out, err, code) = run(tocsin_cli(&socket).args(["show", &id]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("login-example.test") && out.contains("GREEN"),
        "{out}"
    );
    let (out, _, _) = run(tocsin_cli(&socket).args(["show", &id, "--json"]));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["state"], "active");
    assert_eq!(v["signature"], "valid");
    assert_eq!(v["provenance"]["hops"], 0);

    // Cancel, and the state follows.
    let (_, err, code) =
        run(tocsin_cli(&socket).args(["cancel", &id, "--reason", "false positive"]));
    assert_eq!(code, 0, "{err}");
    let (out, _, _) = run(tocsin_cli(&socket).args(["show", &id, "--json"]));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["state"], "cancelled");

    // SIGTERM: graceful, exit 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guard.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(guard.0, Duration::from_secs(10));
    assert_eq!(status, Some(0), "graceful shutdown exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let (_dir, mut c) = one_node().await;
    c.stop(0, Duration::from_secs(10)).unwrap();
    let log = std::fs::read_to_string(c.nodes[0].log_path()).unwrap();
    assert!(log.contains("control API listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in the log file: {log}"
    );
    // Fields stay greppable as key=value.
    assert!(log.contains("max_connections=256"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_alert_survives_kill_9_right_after_issue_returns() {
    let (_dir, mut c) = one_node().await;
    let socket = c.nodes[0].socket.clone();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (out, err, code) = run(tocsin_cli(&socket).args([
            "issue",
            "--severity",
            "critical",
            "--tlp",
            "CLEAR",
            "--title",
            &format!("durable #{i}"),
            "--json",
        ]));
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    c.kill(0).unwrap(); // SIGKILL immediately after the last issue returned
    c.start(0).unwrap();
    c.wait_ready(0, Duration::from_secs(20)).await.unwrap();
    for id in &ids {
        let (out, err, code) = run(tocsin_cli(&socket).args(["show", id, "--json"]));
        assert_eq!(code, 0, "{id} lost after kill -9: {err}");
        assert!(out.contains(id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_readable_key_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let (_, err, code) = run(Command::new(tocsind_bin())
        .args(["init", "--data-dir"])
        .arg(&data));
    assert_eq!(code, 0, "{err}");
    let key = data.join("node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, err, code) = run(Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(&data));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(err.contains("chmod 600"), "says how to fix it: {err}");
    assert!(!data.join("tocsind.sock").exists(), "did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    run(Command::new(tocsind_bin())
        .args(["init", "--data-dir"])
        .arg(&data));
    let cfg = data.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("penalty_threshold = 100", "penalty_threshold = 0"),
    )
    .unwrap();
    let (_, err, code) = run(Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(&data));
    assert_eq!(code, 1);
    assert!(err.contains("net.penalty_threshold"), "{err}");
    std::fs::write(&cfg, text.replace("[log]", "[log]\nverbosity = 3")).unwrap();
    let (_, err, code) = run(Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(&data));
    assert_eq!(code, 1);
    assert!(err.contains("verbosity"), "unknown field named: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_already_taken_is_refused_naming_it() {
    let (dir, c) = one_node().await;
    let taken = c.nodes[0].addr();
    assert_ne!(c.nodes[0].port, 0, "the cluster read the bound port back");
    let cfg = std::fs::read_to_string(c.nodes[0].data_dir.join("config.toml")).unwrap();
    assert!(
        cfg.contains(&format!("listen = [\"{taken}\"]")),
        "the bound port is pinned for restarts: {cfg}"
    );
    let data = dir.path().join("second");
    let (_, err, code) = run(Command::new(tocsind_bin())
        .args(["init", "--listen", &taken, "--data-dir"])
        .arg(&data));
    assert_eq!(code, 0, "{err}");
    let mut second = Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(&data)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut second, Duration::from_secs(10));
    if code.is_none() {
        let _ = second.kill();
    }
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        code,
        Some(1),
        "a second daemon on a taken port must not start: {err}"
    );
    assert!(err.contains(&taken), "names the address: {err}");
    assert!(err.contains("already in use"), "says why: {err}");
    assert!(!data.join("tocsind.sock").exists(), "did not start");
    // The first node is unaffected.
    c.nodes[0].client().status().await.unwrap();
}

/// Runs `tocsind ARGS --data-dir DATA` to its exit (bounded) and returns its stderr and
/// exit code; a daemon still running after 10 s is killed and fails the test.
fn run_to_exit(args: &[&str], data: &std::path::Path) -> (String, i32) {
    let mut child = Command::new(tocsind_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(10));
    if code.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        err.clone(),
        code.unwrap_or_else(|| panic!("tocsind {args:?} did not exit: {err}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_missing_database_is_reported_never_a_crash() {
    let (_dir, mut c) = one_node().await;
    for i in 0..50 {
        c.nodes[0]
            .client()
            .post(
                "/v1/alerts",
                &serde_json::json!({"severity": "low", "tlp": "CLEAR", "title": format!("kept {i}")}),
            )
            .await
            .unwrap();
    }
    c.stop(0, Duration::from_secs(10)).unwrap();
    let data = c.nodes[0].data_dir.clone();
    let db = data.join("tocsin.redb");

    // A sound database checks clean.
    let (err, code) = run_to_exit(&["check"], &data);
    assert_eq!(code, 0, "{err}");

    // Cut to half: start-up fails with exit 1 and says what to do, not exit 101.
    let good = std::fs::read(&db).unwrap();
    std::fs::write(&db, &good[..good.len() / 2]).unwrap();
    let (err, code) = run_to_exit(&["run"], &data);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&db.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("backup"), "says what to do: {err}");
    assert!(
        !err.contains("panicked"),
        "one message, no panic report: {err}"
    );
    let (err, code) = run_to_exit(&["check"], &data);
    assert_eq!(code, 1, "check reports the damage: {err}");
    assert!(
        !err.contains("panicked"),
        "one message, no panic report: {err}"
    );

    // Deleted: the node starts empty, and says so with the path.
    std::fs::remove_file(&db).unwrap();
    c.start(0).unwrap();
    c.wait_ready(0, Duration::from_secs(20)).await.unwrap();
    assert_eq!(c.nodes[0].client().status().await.unwrap()["alerts"], 0);
    let log = std::fs::read_to_string(c.nodes[0].log_path()).unwrap();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("no database"))
        .unwrap_or_else(|| panic!("no start-up warning about the missing database:\n{log}"));
    assert!(warning.contains(&db.display().to_string()), "{warning}");
    assert!(
        !log.lines()
            .take_while(|l| !l.contains("tocsind stopped"))
            .any(|l| l.contains("WARN") && l.contains("no database")),
        "the first start (after init) did not warn:\n{log}"
    );
}

#[test]
fn a_missing_daemon_gives_exit_2_and_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tocsind.sock");
    let (_, err, code) = run(tocsin_cli(&socket).arg("status"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&socket.display().to_string()),
        "names the socket: {err}"
    );
    assert!(err.contains("tocsind run"), "says how to start it: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_with_the_field_or_limit_named() {
    let (dir, c) = one_node().await;
    let socket = c.nodes[0].socket.clone();
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "x".repeat(40_000)).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--tlp".into(),
                "GREEN".into(),
                "--body-file".into(),
                big.display().to_string(),
            ],
            "MAX_TEXT_BYTES",
        ),
        (
            vec![
                "--tlp".into(),
                "GREEN".into(),
                "--indicator".into(),
                "ipv4:300.1.2.3".into(),
            ],
            "indicator",
        ),
        (vec!["--tlp".into(), "RED".into()], "recipient"),
    ];
    for (extra, named) in cases {
        let mut cmd = tocsin_cli(&socket);
        cmd.args(["issue", "--severity", "high", "--title", "bad input"])
            .args(&extra);
        let (_, err, code) = run(&mut cmd);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(
            err.contains("error:") && err.contains(named),
            "{extra:?} should name {named}: {err}"
        );
    }
    // The daemon itself also rejects them (not only the CLI's own checks).
    let client = c.nodes[0].client();
    let e = client
        .post(
            "/v1/alerts",
            &serde_json::json!({"severity": "high", "tlp": "RED", "title": "t"}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("recipients"), "{e}");
    let e = client
        .post(
            "/v1/alerts",
            &serde_json::json!({"severity": "high", "tlp": "GREEN", "title": "t", "text": "y".repeat(40_000)}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("MAX_TEXT_BYTES"), "{e}");
    // Nothing was stored, and the node is still up.
    let st = client.status().await.unwrap();
    assert_eq!(st["alerts"], 0);
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_socket(socket: &std::path::Path) {
    let client =
        tocsin_tools::client::Client::new(tocsin_tools::client::Endpoint::Unix(socket.to_owned()));
    for _ in 0..400 {
        if client.status().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tocsind did not answer on {}", socket.display());
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_once_the_node_serves_and_stopping_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let (_, err, code) = tocsind_init(&data, "/ip4/127.0.0.1/tcp/0");
    assert_eq!(code, 0, "{err}");
    let notify = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(&data)
        .env("NOTIFY_SOCKET", &notify)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let guard = KillOnDrop(&mut child);
    let mut buf = [0u8; 512];
    let n = listener.recv(&mut buf).expect("READY=1 within 20 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // READY means what /v1/ready means.
    let client = tocsin_tools::client::Client::new(tocsin_tools::client::Endpoint::Unix(
        data.join("tocsind.sock"),
    ));
    let answer = client.get("/v1/ready").await.unwrap();
    assert_eq!(answer["ready"], true);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = listener.recv(&mut buf).expect("STOPPING=1 within 20 s");
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert_eq!(wait_exit(guard.0, Duration::from_secs(20)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_after_a_restart_and_misses_nothing() {
    use std::io::BufRead;
    let mut fed = tocsin_tests::Fed::start(1, vec![]).await;
    let mut child = fed
        .tocsin(0)
        .args(["--json", "watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let guard = KillOnDrop(&mut child);
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let notes = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    // The next alert shown that was issued after the restart.
    let title_of = |rx: &std::sync::mpsc::Receiver<Value>| loop {
        let v = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("tocsin watch printed no alert within 20 s");
        let title = v["alert"]["title"].as_str().unwrap().to_string();
        if title != "before" {
            return title;
        }
    };
    // The watch is connected once the first alert comes through.
    let mut shown = None;
    for _ in 0..100 {
        fed.issue(0, tocsin_tests::alert("CLEAR", "before")).await;
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            shown = Some(v);
            break;
        }
    }
    assert_eq!(
        shown.expect("watch never connected")["alert"]["title"],
        "before"
    );
    // The node restarts; alerts stored before the watch is back are shown, in order.
    fed.restart(0).await;
    fed.issue(0, tocsin_tests::alert("CLEAR", "after-1")).await;
    fed.issue(0, tocsin_tests::alert("CLEAR", "after-2")).await;
    assert_eq!(title_of(&rx), "after-1");
    assert_eq!(title_of(&rx), "after-2");
    drop(guard);
    let notes = notes.join().unwrap();
    assert!(notes.contains("resuming after seq"), "{notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_from_the_environment_is_checked_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    tocsind_init(&data, "/ip4/127.0.0.1/tcp/0");
    let (_, err, code) = run(Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(&data)
        .env("TOCSIN__NET__PEER_ALERTS_PER_SECOND", "5"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("peer_alerts_per_second"), "{err}");
    // A valid override takes effect: the TCP API listens where the variable says.
    let mut child = Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(&data)
        .env("TOCSIN__API__TCP", "127.0.0.1:0")
        .env("TOCSIN_API_TOKEN", "env-token-0123456789")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(&mut child);
    let socket = data.join("tocsind.sock");
    wait_socket(&socket).await;
    let client =
        tocsin_tools::client::Client::new(tocsin_tools::client::Endpoint::Unix(socket.clone()));
    let status = client.status().await.unwrap();
    assert!(
        status["api_tcp"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{status}"
    );
}

/// A log that cannot be written (its disk is full: here stderr is `/dev/full`) loses
/// lines and nothing else: the node starts, serves, issues, and stops on SIGTERM with
/// exit 0; a start that fails exits 1, never a panic (101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_never_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let (_, err, code) = tocsind_init(&data, "/ip4/127.0.0.1/tcp/0");
    assert_eq!(code, 0, "{err}");
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let mut child = Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(&data)
        .stderr(full())
        .spawn()
        .unwrap();
    let pid = child.id();
    let guard = KillOnDrop(&mut child);
    let socket = data.join("tocsind.sock");
    wait_socket(&socket).await;
    let (out, err, code) = run(tocsin_cli(&socket).args([
        "issue",
        "--severity",
        "high",
        "--tlp",
        "CLEAR",
        "--title",
        "logged nowhere",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(guard.0, Duration::from_secs(20)), Some(0));

    // A start that fails (no such data directory) with nowhere to say why: exit 1.
    let mut child = Command::new(tocsind_bin())
        .args(["run", "--data-dir"])
        .arg(dir.path().join("missing"))
        .stderr(full())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(10));
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(code, Some(1));
}
