//! The CLI and client (in-process, as library calls) against the real control API
//! (`tocsin_node::api::serve`) with a real network actor and store, on a Unix socket
//! (and TCP) in a temp dir. Moved here from `tools` so that `tocsin-tools` does not
//! depend on the daemon.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tocsin_node::api::{serve, ApiState};
use tocsin_node::store::Store;
use tocsin_proto::SigningKey;
use tokio::sync::oneshot;

use tocsin_tools::cli::Cli;
use tocsin_tools::client::{Client, ClientError, Endpoint, ListQuery, EXIT_INPUT, EXIT_OK};
use tocsin_tools::commands::{exit_code, run, Output};

const TIMEOUT: Duration = Duration::from_secs(10);

/// API state over `store` with a network actor that has no listen address and no
/// peers (it stops when the state, holding the only handle, is dropped).
fn api_state(store: Store, key: SigningKey, token: Option<String>) -> Arc<ApiState> {
    let mut cfg = tocsin_node::config::Config::default();
    cfg.net.listen.clear();
    cfg.api.token = token;
    tocsin_node::daemon::start_node(&cfg, &key, store, futures::future::pending())
        .unwrap()
        .0
}

struct Node {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    key: String,
}

async fn node_with(tcp: Option<std::net::SocketAddr>, token: Option<&str>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(&dir.path().join("alerts.redb")).unwrap();
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let pk = tocsin_node::keys::public_key(&key);
    let state = api_state(store, key, token.map(str::to_owned));
    let socket = dir.path().join("tocsind.sock");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let socket = socket.clone();
        async move {
            serve(state, &socket, tcp, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(Instant::now() < deadline, "the API did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Node {
        dir,
        socket,
        stop: Some(stop),
        server,
        key: pk.to_string(),
    }
}

impl Node {
    fn client(&self) -> Client {
        Client::new(Endpoint::Unix(self.socket.clone()))
    }

    /// Runs `tocsin ARGS --data-dir <node dir>`; returns the result and stdout.
    async fn tocsin(&self, args: &[&str]) -> (anyhow::Result<()>, String) {
        let dir = self.dir.path().to_str().unwrap().to_string();
        let cli = Cli::try_parse_from(
            std::iter::once("tocsin")
                .chain(args.iter().copied())
                .chain(["--data-dir", dir.as_str()]),
        )
        .unwrap();
        let mut buf = Vec::new();
        let result = run(cli, &mut Output::new(&mut buf)).await;
        (result, String::from_utf8(buf).unwrap())
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (r, out) = self.tocsin(args).await;
        if let Err(e) = r {
            panic!("tocsin {args:?} failed: {e:#}");
        }
        out
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(TIMEOUT, &mut self.server)
            .await
            .expect("graceful shutdown timed out")
            .unwrap()
            .unwrap();
    }
}

async fn next_event(
    stream: &mut tocsin_tools::client::EventStream,
) -> (String, Option<String>, Value) {
    let ev = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("no event in time")
        .unwrap()
        .expect("stream ended");
    let v: Value = serde_json::from_str(&ev.data).unwrap();
    (ev.event, ev.id, v)
}

fn api_error(err: &anyhow::Error) -> (u16, Option<String>, String) {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Api {
            status,
            field,
            error,
        }) => (*status, field.clone(), error.clone()),
        _ => panic!("not an API error: {err:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_show_list_update_cancel_status() {
    let node = node_with(None, None).await;
    let id = node
        .ok(&[
            "issue",
            "--severity",
            "high",
            "--tlp",
            "GREEN",
            "--title",
            "Phishing wave",
            "--text",
            "Mails from evil.example",
            "--indicator",
            "domain:evil.example",
            "--tag",
            "phishing",
            "--expires",
            "24h",
        ])
        .await;
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");

    let shown = node.ok(&["show", &id]).await;
    assert!(shown.contains("title       Phishing wave"), "{shown}");
    assert!(shown.contains("signature   valid"), "{shown}");
    assert!(shown.contains("from local at 0 hops"), "{shown}");
    assert!(shown.contains("state       active"), "{shown}");
    assert!(shown.contains("\nMails from evil.example\n"), "{shown}");

    let table = node
        .ok(&["list", "--tag", "phishing", "--since", "1h"])
        .await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("ID "));
    assert!(lines[1].starts_with(&id[..12]), "{table}");
    assert!(lines[1].contains("high"));
    assert!(lines[1].contains(&node.key[..8]));

    // Update from the CLI: the TLP and the rest are kept.
    let upd = node
        .ok(&["update", &id, "--severity", "critical", "--json"])
        .await;
    let upd: Value = serde_json::from_str(upd.trim()).unwrap();
    let upd_id = upd["id"].as_str().unwrap().to_string();
    assert!(upd["seq"].as_u64().unwrap() > 1);
    let v = node.client().alert(&upd_id).await.unwrap();
    assert_eq!(v["alert"]["severity"], "critical");
    assert_eq!(v["alert"]["tlp"], "GREEN");
    assert_eq!(v["alert"]["title"], "Phishing wave");
    assert_eq!(v["alert"]["replaces"], id.as_str());

    // JSON Lines listing: one object per line, newest first.
    let jl = node.ok(&["list", "--json", "--all", "--limit", "1"]).await;
    let views: Vec<Value> = jl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(views.len(), 2, "{jl}");
    assert_eq!(views[0]["id"], upd_id.as_str());
    assert_eq!(views[1]["state"], "superseded");

    // Updating the superseded version is refused (409 → exit 1).
    let (r, _) = node.tocsin(&["update", &id, "--title", "again"]).await;
    let err = r.unwrap_err();
    assert_eq!(exit_code(&err), EXIT_INPUT);
    assert_eq!(api_error(&err).0, 409);

    let cancel = node
        .ok(&["cancel", &upd_id, "--reason", "false positive"])
        .await;
    let hist = node.ok(&["show", &id, "--history", "--json"]).await;
    assert!(hist.lines().count() >= 2, "{hist}");
    let c = node.client().alert(cancel.trim()).await.unwrap();
    assert_eq!(c["alert"]["kind"], "cancel");
    assert_eq!(c["alert"]["title"], "Cancelled: Phishing wave");
    // The update and the version it updated: each got a cancel.
    let cancelled = node.ok(&["list", "--state", "cancelled", "--json"]).await;
    assert_eq!(cancelled.lines().count(), 2, "{cancelled}");

    let status = node.ok(&["status"]).await;
    assert!(
        status.contains(&format!("public_key: {}\n", node.key)),
        "{status}"
    );
    assert!(status.contains("alerts: 4\n"), "{status}");
    let status: Value = serde_json::from_str(&node.ok(&["status", "--json"]).await).unwrap();
    // Only the two cancels are active.
    assert_eq!(status["active"], 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_side_validation_names_the_field() {
    let node = node_with(None, None).await;
    let c = node.client();
    let base = |extra: Value| {
        let mut v = json!({"severity": "high", "tlp": "GREEN", "title": "t"});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    for (req, field) in [
        (base(json!({"tlp": "RED"})), "recipients"),
        (base(json!({"indicators": ["ipv4:1.2.3"]})), "indicators"),
        (base(json!({"text": "x".repeat(40000)})), "text"),
        (base(json!({"tags": ["two words"]})), "tags"),
        (base(json!({"expires_at": 5})), "expires_at"),
        (base(json!({"colour": "red"})), "colour"),
    ] {
        let err = c.issue(&req).await.unwrap_err();
        match &err {
            ClientError::Api {
                status: 400,
                field: Some(f),
                ..
            } if f == field => {}
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(err.exit_code(), EXIT_INPUT);
    }
    let err = c
        .issue(&base(json!({"text": "x".repeat(40000)})))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("text is 40000 bytes, exceeds the limit MAX_TEXT_BYTES = 32768"),
        "{err}"
    );
    // A bad list filter names the parameter.
    let err = c
        .list(&ListQuery {
            origin: Some("nothex".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Api { status: 400, field: Some(ref f), .. } if f == "origin")
    );

    let (r, _) = node.tocsin(&["list", "--cursor", "garbage"]).await;
    let err = r.unwrap_err();
    assert_eq!(exit_code(&err), EXIT_INPUT);
    assert_eq!(api_error(&err).1.as_deref(), Some("cursor"));

    // Unknown id: 404, exit 1, the id in the message.
    let missing = "cd".repeat(32);
    let (r, out) = node.tocsin(&["show", &missing]).await;
    let err = r.unwrap_err();
    assert_eq!(exit_code(&err), EXIT_INPUT);
    let (status, _, message) = api_error(&err);
    assert_eq!(status, 404);
    assert!(message.contains(&missing));
    assert!(out.is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_needs_the_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let node = node_with(Some(port), Some("s3cret")).await;
    let url = format!("http://{port}");
    let deadline = Instant::now() + TIMEOUT;
    while tokio::net::TcpStream::connect(port).await.is_err() {
        assert!(Instant::now() < deadline, "TCP API did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let without = Client::new(Endpoint::tcp(&url, None).unwrap());
    let err = without.status().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Api { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), EXIT_INPUT);
    assert!(err.to_string().contains("--token"), "{err}");
    let wrong = Client::new(Endpoint::tcp(&url, Some("guess".into())).unwrap());
    assert!(matches!(
        wrong.status().await,
        Err(ClientError::Api { status: 401, .. })
    ));
    let out = node
        .ok(&["status", "--api", &url, "--token", "s3cret", "--json"])
        .await;
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["public_key"], node.key.as_str());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_from_seq_then_follows() {
    let node = node_with(None, None).await;
    let c = node.client();
    let mut seqs = Vec::new();
    for i in 0..3 {
        let r = c
            .issue(&json!({"severity": "low", "tlp": "CLEAR", "title": format!("a{i}")}))
            .await
            .unwrap();
        seqs.push(r.seq);
    }
    let mut stream = c.watch(Some(seqs[0])).await.unwrap();
    let (event, id, v) = next_event(&mut stream).await;
    assert_eq!(event, "alert");
    assert_eq!(id, Some(seqs[1].to_string()));
    assert_eq!(v["alert"]["title"], "a1");
    let (_, id, _) = next_event(&mut stream).await;
    assert_eq!(id, Some(seqs[2].to_string()));
    let live = c
        .issue(&json!({"severity": "low", "tlp": "CLEAR", "title": "live"}))
        .await
        .unwrap();
    let (_, id, v) = next_event(&mut stream).await;
    assert_eq!(id, Some(live.seq.to_string()));
    assert_eq!(v["alert"]["title"], "live");

    // `tocsin watch --from 0 | head -1`: the closed pipe ends it with exit 0.
    struct HeadOne(usize);
    impl std::io::Write for HeadOne {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.0 >= 1 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.0 += b.iter().filter(|&&c| c == b'\n').count();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dir = node.dir.path().to_str().unwrap().to_string();
    let cli = Cli::try_parse_from(["tocsin", "watch", "--from", "0", "--data-dir", dir.as_str()])
        .unwrap();
    let r = tokio::time::timeout(TIMEOUT, run(cli, &mut Output::new(HeadOne(0))))
        .await
        .expect("watch did not stop on a closed pipe");
    assert_eq!(exit_code(&r.unwrap_err()), EXIT_OK);

    // An open stream does not hold up a graceful shutdown, and the client sees its end.
    node.shutdown().await;
    let end = tokio::time::timeout(TIMEOUT, stream.next()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_0600_stale_one_replaced_live_one_kept() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tocsind.sock");
    // A socket file that nobody listens on, as a killed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let state = |n: u8, file: &str| {
        let (store, _writer) = Store::open(&dir.path().join(file)).unwrap();
        api_state(store, SigningKey::from_bytes(&[n; 32]), None)
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let (state, path) = (state(1, "a.redb"), path.clone());
        async move {
            serve(state, &path, None, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    while tokio::net::UnixStream::connect(&path).await.is_err() {
        assert!(Instant::now() < deadline, "the API did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A second daemon on the same, live socket is refused and leaves it alone.
    let err = serve(state(2, "b.redb"), &path, None, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    let client = Client::new(Endpoint::Unix(path.clone()));
    client.status().await.unwrap();

    // TCP without a token is refused before anything is bound.
    let other = dir.path().join("other.sock");
    let err = serve(
        state(3, "c.redb"),
        &other,
        Some("127.0.0.1:0".parse().unwrap()),
        async {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("api.token"), "{err}");
    assert!(!other.exists());

    let _ = stop.send(());
    tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!path.exists(), "the socket file is removed on shutdown");
}
