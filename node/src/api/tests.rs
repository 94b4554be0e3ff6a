//! The API served on a real Unix socket (and TCP) in a temp dir, spoken to with plain
//! HTTP/1.0 so that what is tested is the bytes a client sees.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tocsin_proto::SigningKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;

use super::*;
use crate::store::Store;

/// A served API over a fresh store.
struct Harness {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    state: Arc<ApiState>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// API state over `store` with a network actor that has no listen address and no
/// peers (it stops when the state, holding the only handle, is dropped).
fn api_state(store: Store, key: SigningKey, token: Option<String>) -> Arc<ApiState> {
    let mut cfg = crate::config::Config::default();
    cfg.net.listen.clear();
    cfg.api.token = token;
    crate::daemon::start_node(&cfg, &key, store, futures::future::pending())
        .unwrap()
        .0
}

async fn harness_with(tcp: Option<std::net::SocketAddr>, token: Option<&str>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(&dir.path().join("alerts.redb")).unwrap();
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let state = api_state(store, key, token.map(str::to_owned));
    let socket = dir.path().join("tocsind.sock");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let (state, socket) = (state.clone(), socket.clone());
        async move {
            serve(state, &socket, tcp, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    // Wait for the socket to answer.
    let deadline = Instant::now() + TIMEOUT;
    while UnixStream::connect(&socket).await.is_err() {
        assert!(Instant::now() < deadline, "the API did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Harness {
        _dir: dir,
        socket,
        stop: Some(stop),
        server,
        state,
    }
}

async fn harness() -> Harness {
    harness_with(None, None).await
}

impl Harness {
    /// Issues a CLEAR alert and updates it; their ids.
    async fn issue_and_update(&self) -> (String, String) {
        let (_, a) = self
            .call(
                "POST",
                "/v1/alerts",
                Some(json!({"severity": "low", "tlp": "CLEAR", "title": "first"})),
            )
            .await;
        let a = a["id"].as_str().unwrap().to_string();
        let (_, live) = self
            .call(
                "POST",
                &format!("/v1/alerts/{a}/update"),
                Some(json!({"title": "live"})),
            )
            .await;
        (a, live["id"].as_str().unwrap().to_string())
    }

    /// Stores an update of alert `a` (this node's), titled `title`, signed by this node
    /// and received from a peer, as the store holds one given back after a crash (the
    /// actor's check of it is not run). Its id.
    async fn given_back_update_of(&self, a: &str, title: &str) -> String {
        let (_, first) = self.call("GET", &format!("/v1/alerts/{a}"), None).await;
        let mut body: tocsin_proto::AlertBody =
            serde_json::from_value(first["alert"].clone()).unwrap();
        body.kind = tocsin_proto::Kind::Update;
        body.replaces = Some(tocsin_proto::AlertId::from_hex(a).unwrap());
        body.issued_at += 1;
        body.title = title.into();
        let key = SigningKey::from_bytes(&[42u8; 32]);
        let update = tocsin_proto::SignedAlert::sign(body, &key)
            .unwrap()
            .verify()
            .unwrap();
        let id = update.id().to_string();
        let peer = crate::keys::public_key(&SigningKey::from_bytes(&[7u8; 32]));
        let from_peer = crate::store::Receipt {
            received_at: crate::now_ms(),
            from: Some(peer),
            hops: 1,
        };
        self.state.store.insert(update, from_peer).await.unwrap();
        id
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let stream = UnixStream::connect(&self.socket).await.unwrap();
        http(stream, method, path, body, &[]).await
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
        assert!(!self.socket.exists(), "socket file left behind");
    }
}

/// One HTTP/1.0 request; returns the status and the JSON body.
async fn http<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    // A server that refuses a body too big answers before reading all of it and closes:
    // the rest of the write may fail, the answer is still there to read.
    let _ = stream.write_all(req.as_bytes()).await;
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("response timed out")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    (status, json)
}

fn green(title: &str) -> Value {
    json!({"severity": "high", "tlp": "GREEN", "title": title,
           "indicators": ["ipv4:192.0.2.1", {"type": "domain", "value": "evil.example"}],
           "tags": ["phishing"], "expires_in": "24h"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_get_list_history() {
    let h = harness().await;
    let (status, issued) = h
        .call("POST", "/v1/alerts", Some(green("Phishing wave")))
        .await;
    assert_eq!(status, 201, "{issued}");
    let id = issued["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);

    let (status, view) = h.call("GET", &format!("/v1/alerts/{id}"), None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["seq"], issued["seq"]);
    assert_eq!(view["state"], "active");
    assert_eq!(view["signature"], "valid");
    assert_eq!(view["alert"]["title"], "Phishing wave");
    assert_eq!(view["alert"]["tlp"], "GREEN");
    assert_eq!(view["alert"]["kind"], "new");
    assert_eq!(view["alert"]["origin"], h.state.public_key.to_string());
    assert_eq!(view["alert"]["indicators"][1]["type"], "domain");
    let issued_at = view["alert"]["issued_at"].as_u64().unwrap();
    assert_eq!(
        view["alert"]["expires_at"].as_u64().unwrap(),
        issued_at + 86_400_000
    );
    assert_eq!(view["provenance"]["from"], Value::Null);
    assert_eq!(view["provenance"]["hops"], 0);

    let (status, list) = h
        .call("GET", "/v1/alerts?tag=phishing&min_severity=medium", None)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(list["alerts"][0]["id"], id.as_str());
    let (_, none) = h
        .call("GET", "/v1/alerts?min_severity=critical", None)
        .await;
    assert_eq!(none["alerts"].as_array().unwrap().len(), 0);

    // Update: unspecified fields are copied, TLP is kept.
    let (status, upd) = h
        .call(
            "POST",
            &format!("/v1/alerts/{id}/update"),
            Some(json!({"severity": "critical"})),
        )
        .await;
    assert_eq!(status, 201, "{upd}");
    let upd_id = upd["id"].as_str().unwrap().to_string();
    let (_, uview) = h.call("GET", &format!("/v1/alerts/{upd_id}"), None).await;
    assert_eq!(uview["alert"]["kind"], "update");
    assert_eq!(uview["alert"]["replaces"], id.as_str());
    assert_eq!(uview["alert"]["severity"], "critical");
    assert_eq!(uview["alert"]["title"], "Phishing wave");
    assert_eq!(uview["alert"]["tags"], json!(["phishing"]));
    let (_, old) = h.call("GET", &format!("/v1/alerts/{id}"), None).await;
    assert_eq!(old["state"], "superseded");
    assert_eq!(old["replaced_by"], upd_id.as_str());

    // A different TLP is refused, naming the field; so is updating the superseded one.
    let (status, err) = h
        .call(
            "POST",
            &format!("/v1/alerts/{upd_id}/update"),
            Some(json!({"tlp": "CLEAR"})),
        )
        .await;
    assert_eq!((status, err["field"].as_str()), (400, Some("tlp")), "{err}");
    let (status, err) = h
        .call("POST", &format!("/v1/alerts/{id}/update"), Some(json!({})))
        .await;
    assert_eq!(status, 409, "{err}");

    // Cancel.
    let (status, c) = h
        .call(
            "POST",
            &format!("/v1/alerts/{upd_id}/cancel"),
            Some(json!({"reason": "false positive"})),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let (_, cview) = h
        .call(
            "GET",
            &format!("/v1/alerts/{}", c["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(cview["alert"]["kind"], "cancel");
    assert_eq!(cview["alert"]["title"], "Cancelled: Phishing wave");
    assert_eq!(cview["alert"]["text"], "false positive");
    let (_, cancelled) = h.call("GET", &format!("/v1/alerts/{upd_id}"), None).await;
    assert_eq!(cancelled["state"], "cancelled");
    // The version it updated got a cancel of its own: retracted too, not superseded.
    let (_, first) = h.call("GET", &format!("/v1/alerts/{id}"), None).await;
    assert_eq!(first["state"], "cancelled", "{first}");

    let (status, hist) = h
        .call("GET", &format!("/v1/alerts/{id}/history"), None)
        .await;
    assert_eq!(status, 200, "{hist}");
    assert!(hist["alerts"].as_array().unwrap().len() >= 2, "{hist}");

    let (status, st) = h.call("GET", "/v1/status", None).await;
    assert_eq!(status, 200, "{st}");
    // The alert, its update, and a cancel of each.
    assert_eq!(st["alerts"], 4);
    assert_eq!(st["peer_id"], h.state.peer_id.as_str());
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field() {
    let h = harness().await;
    let cases = [
        (
            json!({"severity": "high", "tlp": "RED", "title": "t"}),
            "recipients",
        ),
        (
            json!({"severity": "high", "tlp": "GREEN", "title": "t", "indicators": ["ipv4:999.0.0.1"]}),
            "indicators",
        ),
        (
            json!({"severity": "high", "tlp": "GREEN", "title": "t", "text": "x".repeat(40000)}),
            "text",
        ),
        (json!({"severity": "high", "tlp": "GREEN"}), "title"),
        (
            json!({"severity": "loud", "tlp": "GREEN", "title": "t"}),
            "severity",
        ),
        (
            json!({"severity": "high", "tlp": "GREEN", "title": "t", "expires_in": "soon"}),
            "expires_in",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = h.call("POST", "/v1/alerts", Some(body)).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["field"], field, "{err}");
    }
    let (_, err) = h
        .call(
            "POST",
            "/v1/alerts",
            Some(json!({"severity": "high", "tlp": "GREEN", "title": "t", "text": "x".repeat(40000)})),
        )
        .await;
    assert_eq!(
        err["error"],
        "text is 40000 bytes, exceeds the limit MAX_TEXT_BYTES = 32768"
    );
    let (status, err) = h.call("GET", "/v1/alerts?since=yesterday", None).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("since")));
    let (status, err) = h.call("GET", "/v1/alerts/not-hex", None).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("id")));
    // A filter given twice, and a query on a route that reads none, are refused rather
    // than half applied or ignored.
    for (path, field) in [
        ("/v1/alerts?tag=a&tag=b", "tag"),
        ("/v1/stream?from=1&from=2", "from"),
        ("/v1/trust-audit?limit=10", "limit"),
        ("/v1/peers?connected=true", "connected"),
        ("/v1/status?verbose", "verbose"),
    ] {
        let (status, err) = h.call("GET", path, None).await;
        assert_eq!(
            (status, err["field"].as_str()),
            (400, Some(field)),
            "{path}: {err}"
        );
    }
    let (_, st) = h.call("GET", "/v1/status", None).await;
    assert_eq!(st["alerts"], 0, "nothing was stored");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_paths_are_404_and_foreign_alerts_403() {
    let h = harness().await;
    let missing = "ab".repeat(32);
    let (status, err) = h.call("GET", &format!("/v1/alerts/{missing}"), None).await;
    assert_eq!(status, 404);
    assert!(err["error"].as_str().unwrap().contains(&missing), "{err}");
    let (status, _) = h
        .call(
            "POST",
            &format!("/v1/alerts/{missing}/cancel"),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, err) = h.call("GET", "/v2/nothing", None).await;
    assert_eq!(status, 404, "{err}");

    // An alert from another origin, as if received from a peer.
    let other = SigningKey::from_bytes(&[7u8; 32]);
    let body = tocsin_proto::AlertBody {
        v: tocsin_proto::FORMAT_VERSION,
        origin: crate::keys::public_key(&other),
        issued_at: crate::now_ms(),
        expires_at: None,
        kind: tocsin_proto::Kind::New,
        replaces: None,
        severity: tocsin_proto::Severity::Low,
        tlp: tocsin_proto::Tlp::Clear,
        recipients: vec![],
        title: "theirs".into(),
        text: String::new(),
        indicators: vec![],
        tags: vec![],
        references: vec![],
    };
    let alert = tocsin_proto::SignedAlert::sign(body, &other)
        .unwrap()
        .verify()
        .unwrap();
    let id = alert.id();
    h.state
        .store
        .insert(
            alert,
            crate::store::Receipt {
                received_at: crate::now_ms(),
                from: Some(crate::keys::public_key(&other)),
                hops: 1,
            },
        )
        .await
        .unwrap();
    let (status, err) = h
        .call(
            "POST",
            &format!("/v1/alerts/{id}/cancel"),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, 403, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("only its origin"),
        "{err}"
    );
    let (_, view) = h.call("GET", &format!("/v1/alerts/{id}"), None).await;
    assert_eq!(view["provenance"]["hops"], 1);
    assert_eq!(
        view["provenance"]["from"],
        crate::keys::public_key(&other).to_string()
    );
    h.shutdown().await;
}

/// Cancelling an updated alert cancels the versions it descends from, not a sibling:
/// one of our own updates given back by a peer beside a newer version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_retracts_the_versions_it_descends_from_not_a_sibling() {
    let h = harness().await;
    let (a, live) = h.issue_and_update().await;
    // A branch: an update of `a` signed by this node, given back by a peer.
    let branch_id = h.given_back_update_of(&a, "branch").await;
    let (status, _) = h
        .call(
            "POST",
            &format!("/v1/alerts/{branch_id}/cancel"),
            Some(json!({"reason": "a branch"})),
        )
        .await;
    assert_eq!(status, 201);
    let state = |id: String| {
        let h = &h;
        async move { h.call("GET", &format!("/v1/alerts/{id}"), None).await.1["state"].clone() }
    };
    assert_eq!(state(branch_id).await, "cancelled");
    assert_eq!(state(a).await, "cancelled", "the version it descends from");
    assert_eq!(state(live).await, "active", "the sibling, the live version");
    h.shutdown().await;
}

/// One of our own updates given back by a peer while it was still the current version
/// (so kept), then left behind by a newer update of ours and a cancel: the commits of
/// ours for that alert check it again, and it is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_update_left_behind_by_our_later_commits_is_cancelled() {
    let h = harness().await;
    let (a, live) = h.issue_and_update().await;
    // Given back by a peer (stored as the actor would, without its check).
    let lost_id = h.given_back_update_of(&a, "lost").await;
    let (status, _) = h
        .call(
            "POST",
            &format!("/v1/alerts/{live}/cancel"),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert_eq!(status, 201);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, v) = h.call("GET", &format!("/v1/alerts/{lost_id}"), None).await;
        if v["state"] == "cancelled" {
            let cancel = v["replaced_by"].as_str().unwrap().to_string();
            let (_, c) = h.call("GET", &format!("/v1/alerts/{cancel}"), None).await;
            assert!(
                c["alert"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("came back from a peer"),
                "{c}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the returned update stays {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_requires_the_bearer_token() {
    // Refused outright without a token.
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(&dir.path().join("a.redb")).unwrap();
    let state = api_state(store, SigningKey::from_bytes(&[1u8; 32]), None);
    let err = serve(
        state,
        &dir.path().join("s.sock"),
        Some("127.0.0.1:0".parse().unwrap()),
        async {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("api.token"), "{err}");

    // Find a free port, then serve on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = harness_with(Some(port), Some("s3cret")).await;
    let deadline = Instant::now() + TIMEOUT;
    let connect = || async {
        loop {
            if let Ok(s) = TcpStream::connect(port).await {
                return s;
            }
            assert!(Instant::now() < deadline, "TCP API did not come up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (status, err) = http(connect().await, "GET", "/v1/status", None, &[]).await;
    assert_eq!(status, 401, "{err}");
    assert!(err["error"].as_str().unwrap().contains("Bearer"), "{err}");
    let (status, _) = http(
        connect().await,
        "GET",
        "/v1/status",
        None,
        &[("Authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(status, 401);
    let (status, st) = http(
        connect().await,
        "GET",
        "/v1/status",
        None,
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(status, 200, "{st}");
    // The Unix socket needs no token.
    let (status, _) = h.call("GET", "/v1/status", None).await;
    assert_eq!(status, 200);
    h.shutdown().await;
}

/// Reads SSE events (`id`, `data`) from a stream until `n` alert events arrived.
async fn read_events(stream: &mut UnixStream, n: usize) -> Vec<(u64, Value)> {
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while events.len() < n {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("events timed out")
            .unwrap();
        assert!(read > 0, "stream closed early: {buf}");
        buf.push_str(std::str::from_utf8(&chunk[..read]).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut data, mut event) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                }
            }
            if event.as_deref() == Some("alert") {
                events.push((id.unwrap(), data.unwrap()));
            }
        }
    }
    events
}

async fn open_stream(socket: &Path, path: &str, headers: &str) -> UnixStream {
    let mut s = UnixStream::connect(socket).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_replays_from_seq_then_follows() {
    let h = harness().await;
    let mut seqs = Vec::new();
    for i in 0..3 {
        let (status, r) = h
            .call("POST", "/v1/alerts", Some(green(&format!("a{i}"))))
            .await;
        assert_eq!(status, 201);
        seqs.push(r["seq"].as_u64().unwrap());
    }
    // Replay everything after the first, then see a new one live.
    let mut s = open_stream(&h.socket, &format!("/v1/stream?from={}", seqs[0]), "").await;
    let replayed = read_events(&mut s, 2).await;
    assert_eq!(
        replayed.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![seqs[1], seqs[2]]
    );
    assert_eq!(replayed[0].1["alert"]["title"], "a1");
    assert_eq!(replayed[1].1["seq"], seqs[2]);
    let (_, r) = h.call("POST", "/v1/alerts", Some(green("live"))).await;
    let live = read_events(&mut s, 1).await;
    assert_eq!(live[0].0, r["seq"].as_u64().unwrap());
    assert_eq!(live[0].1["alert"]["title"], "live");

    // Last-Event-ID wins over `from`.
    let mut s2 = open_stream(
        &h.socket,
        "/v1/stream?from=0",
        &format!("Last-Event-ID: {}\r\n", seqs[2]),
    )
    .await;
    let resumed = read_events(&mut s2, 1).await;
    assert_eq!(resumed[0].1["alert"]["title"], "live");

    // Open streams do not hold up a graceful shutdown.
    h.shutdown().await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut rest)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_is_replaced_and_mode_is_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tocsind.sock");
    // A socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (store, _writer) = Store::open(&dir.path().join("a.redb")).unwrap();
    let state = api_state(store, SigningKey::from_bytes(&[1u8; 32]), None);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let path = path.clone();
        async move {
            serve(state, &path, None, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    while UnixStream::connect(&path).await.is_err() {
        assert!(Instant::now() < deadline, "the API did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second server on the same live socket is refused.
    let (store2, _w2) = Store::open(&dir.path().join("b.redb")).unwrap();
    let state2 = api_state(store2, SigningKey::from_bytes(&[2u8; 32]), None);
    let err = serve(state2, &path, None, async {}).await.unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    let _ = stop.send(());
    tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn trust_entries_are_validated_like_the_config_and_big_bodies_get_json_413() {
    let h = harness().await;
    let own = h.state.public_key.to_string();
    let (status, body) = h
        .call(
            "POST",
            "/v1/trust",
            Some(json!({"key": own, "level": "member"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "key", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("own key"),
        "{body}"
    );

    // Not a point on the curve: the config refuses it, so does the API.
    let bad_point = "ff".repeat(32);
    let (status, body) = h
        .call(
            "POST",
            "/v1/trust",
            Some(json!({"key": bad_point, "level": "member"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "key", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("ed25519"),
        "{body}"
    );

    let peer = tocsin_proto::PublicKey(
        SigningKey::from_bytes(&[7u8; 32])
            .verifying_key()
            .to_bytes(),
    )
    .to_string();
    let long = "n".repeat(crate::net::trust::MAX_PEER_NAME_BYTES + 1);
    let (status, body) = h
        .call(
            "POST",
            "/v1/trust",
            Some(json!({"key": peer, "level": "member", "name": long})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "name", "{body}");
    let (status, body) = h
        .call(
            "PUT",
            &format!("/v1/trust/{peer}"),
            Some(json!({"name": "x\u{7}bell"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "name", "{body}");

    // A 1.5 MB name is over the request limit: the JSON error body, like every error.
    let huge = "n".repeat(1_500_000);
    let (status, body) = h
        .call(
            "POST",
            "/v1/trust",
            Some(json!({"key": peer, "level": "member", "name": huge})),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("MAX_REQUEST_BYTES"),
        "{body}"
    );
    // Nothing of it was stored.
    let (_, list) = h.call("GET", "/v1/trust", None).await;
    assert_eq!(list["entries"], json!([]), "{list}");
    // A good entry still goes in.
    let (status, body) = h
        .call(
            "POST",
            "/v1/trust",
            Some(json!({"key": peer, "level": "member", "name": "CERT-Test"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    h.shutdown().await;
}

#[tokio::test]
async fn alert_requests_name_the_field_through_serde() {
    let h = harness().await;
    for (body, field) in [
        (
            json!({"severity": "high", "tlp": "CLEAR", "title": 5}),
            "title",
        ),
        (
            json!({"severity": "high", "tlp": "CLEAR", "title": "t", "colour": "red"}),
            "colour",
        ),
        (
            json!({"severity": "high", "tlp": "CLEAR", "title": "t",
                   "indicators": [{"type": "ipv4", "value": "192.0.2.1", "extra": 1}]}),
            "indicators",
        ),
        (
            json!({"severity": "high", "tlp": "CLEAR", "title": "t", "expires_at": "soon"}),
            "expires_at",
        ),
    ] {
        let (status, answer) = h.call("POST", "/v1/alerts", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
    }
    let (status, answer) = h
        .call(
            "POST",
            &format!("/v1/alerts/{}/cancel", "ab".repeat(32)),
            Some(json!({"why": "x"})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["field"], "why", "{answer}");
    h.shutdown().await;
}

/// The operations a text names as `` `METHOD /path` `` (query strings cut), except
/// TAXII's, which follow their own standard.
fn named_operations(text: &str) -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for method in ["GET", "POST", "PUT", "DELETE"] {
        let needle = format!("`{method} /");
        let mut rest = text;
        while let Some(i) = rest.find(&needle) {
            rest = &rest[i + needle.len() - 1..];
            let end = rest.find('`').unwrap_or(rest.len());
            let path = rest[..end]
                .split(['?', ' '])
                .next()
                .unwrap_or("")
                .to_string();
            if !path.starts_with("/taxii2") && !path.contains('…') {
                out.insert((method.to_string(), path));
            }
            rest = &rest[end..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_covers_every_route_and_docs_api_md() {
    let h = harness().await;
    let (code, spec) = h.call("GET", "/v1/openapi.json", None).await;
    assert_eq!(code, 200, "{spec}");
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{spec}"
    );
    let mut served = std::collections::BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            served.insert((method.clone(), path.clone()));
            if path == "/v1/stream" || path == "/metrics" {
                // Not JSON (an event stream that does not end, OpenMetrics text): their
                // routes are tested with their own clients.
                continue;
            }
            // Every described operation reaches its handler: whatever it answers, it
            // is not the fallback's "no such endpoint" or "not allowed".
            let concrete = path
                .replace("{id}", &"a".repeat(64))
                .replace("{key}", &"b".repeat(64));
            let (code, body) = h.call(&method, &concrete, None).await;
            let fallback = body["error"].as_str().is_some_and(|e| {
                e.starts_with("no such endpoint") || e.contains("is not allowed on")
            });
            assert!(
                !fallback,
                "{method} {path} is described but not routed: {code} {body}"
            );
        }
    }
    // Every route answers with a description: each operation the router serves is in the
    // served document (the test-control routes are routed only with test_control).
    let full: std::collections::BTreeSet<(String, String)> = {
        let v = serde_json::to_value(openapi(true)).unwrap();
        v["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(|m| (m.to_ascii_uppercase(), p.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let test_only: std::collections::BTreeSet<_> = full.difference(&served).cloned().collect();
    assert_eq!(
        test_only,
        [
            ("POST".to_string(), "/v1/test/heal".to_string()),
            ("POST".to_string(), "/v1/test/partition".to_string())
        ]
        .into_iter()
        .collect()
    );
    // docs/api.md documents exactly the described operations.
    let doc = named_operations(include_str!("../../../docs/api.md"));
    assert_eq!(
        doc.difference(&full).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "named in docs/api.md but not described"
    );
    assert_eq!(
        full.difference(&doc).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "described but not in docs/api.md"
    );
    // Request bodies and answers refer to schemas that are there.
    for name in [
        "AlertRequest",
        "AlertView",
        "ErrorBody",
        "TrustAddRequest",
        "Issued",
    ] {
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "{name} missing"
        );
    }
    h.shutdown().await;
}
