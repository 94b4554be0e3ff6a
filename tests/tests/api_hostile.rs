//! The control API against hostile or careless local clients, on a real `tocsind`:
//! connections that never finish their headers (slowloris) cannot lock out the Unix
//! socket or authenticated TCP clients; event streams are capped and a stream whose
//! client stops reading is dropped with a message saying where to resume; errors that
//! hyper answers itself (path too long, headers too large) carry the JSON error body;
//! and requests that arrive while the daemon shuts down get a 503, never a reset.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tocsin_tests::{alert, run, tocsin_cli};
use tocsin_tools::cluster::{Cluster, CreateOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

const TOKEN: &str = "hostile-clients-test-token-0123";
/// Every wait on the daemon in this file.
const WAIT: Duration = Duration::from_secs(15);

/// One node with a TCP API (port 0) and small limits, so the tests reach them fast.
async fn node(api: &[(&str, &str)]) -> (tempfile::TempDir, Cluster, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::create(dir.path(), 1, vec![], &CreateOptions::local().unwrap()).unwrap();
    let path = c.nodes[0].data_dir.join("config.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace(
        "[api]\n",
        &format!("[api]\ntcp = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    );
    for (k, v) in api {
        let prefix = format!("{k} = ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{k} not in the config"))
            .to_string();
        text = text.replace(&line, &format!("{k} = {v}"));
    }
    std::fs::write(&path, text).unwrap();
    c.start_all(WAIT).await.unwrap();
    let status = c.nodes[0].client().status().await.unwrap();
    let tcp = status["api_tcp"]
        .as_str()
        .unwrap_or_else(|| panic!("no api_tcp in {status}"))
        .parse()
        .unwrap();
    (dir, c, tcp)
}

/// What a raw HTTP exchange ended with.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` and reads the answer until the server closes the connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    request: &[u8],
) -> std::io::Result<Answer> {
    io.write_all(request).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no answer in time"))??;
    parse(&buf).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "the connection closed without an answer: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        )
    })
}

fn parse(buf: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.get(9..12)?.parse().ok()?;
    Some(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

fn get(path: &str, token: bool) -> Vec<u8> {
    let auth = if token {
        format!("authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    format!("GET {path} HTTP/1.1\r\nhost: tocsind\r\n{auth}connection: close\r\n\r\n").into_bytes()
}

fn json_error(a: &Answer) -> String {
    assert!(
        a.head.to_ascii_lowercase().contains("application/json"),
        "not JSON: {a:?}"
    );
    let v: Value = serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {a:?}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

fn cli_status(socket: &Path) -> (String, i32) {
    let (out, err, code) = run(tocsin_cli(socket).arg("status"));
    (format!("{out}{err}"), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_cannot_lock_out_the_socket_or_authenticated_clients() {
    let (_dir, c, tcp) = node(&[("max_connections", "20"), ("header_timeout_secs", "2")]).await;
    let socket = c.nodes[0].socket.clone();
    // 60 connections that start a request and never finish its headers: three times
    // the cap on this listener.
    let mut stuck = Vec::new();
    for _ in 0..60 {
        let mut s = TcpStream::connect(tcp).await.unwrap();
        s.write_all(b"GET /v1/status HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        stuck.push(s);
    }
    // The Unix socket has its own cap: the operator's CLI works at once.
    let (out, code) = cli_status(&socket);
    assert_eq!(code, 0, "tocsin status during the flood: {out}");
    // A TCP client over the cap is told why, in JSON, instead of hanging.
    let a = exchange(
        TcpStream::connect(tcp).await.unwrap(),
        &get("/v1/status", true),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 503, "{a:?}");
    assert!(json_error(&a).contains("api.max_connections = 20"), "{a:?}");
    // The stuck connections are closed after the header timeout...
    for s in &mut stuck {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .expect("a connection that never sent its headers was kept open");
        // Closed (0 bytes, or a reset), or answered with an error and closed.
        if let Ok(n) = n {
            if n > 0 {
                let rest = tokio::time::timeout(WAIT, s.read_to_end(&mut Vec::new())).await;
                assert!(rest.is_ok(), "kept open after an answer");
            }
        }
    }
    // ...and an authenticated TCP client is served again.
    let a = exchange(
        TcpStream::connect(tcp).await.unwrap(),
        &get("/v1/status", true),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    // An idle keep-alive connection is closed after the same timeout.
    let mut idle = TcpStream::connect(tcp).await.unwrap();
    idle.write_all(
        format!("GET /v1/status HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, idle.read_to_end(&mut all))
        .await
        .expect("an idle keep-alive connection was kept open")
        .unwrap();
    assert_eq!(parse(&all).unwrap().status, 200);
    // A request without the token is still refused, with the JSON body.
    let a = exchange(
        TcpStream::connect(tcp).await.unwrap(),
        &get("/v1/status", false),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    json_error(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_and_a_stream_not_read_is_dropped_with_where_to_resume() {
    let (_dir, c, tcp) = node(&[("max_streams", "3"), ("stream_stall_secs", "2")]).await;
    let client = c.nodes[0].client();
    // Three streams whose clients never read, on the Unix socket (whose buffers, unlike
    // TCP's on loopback, do not grow to megabytes, so they fill up soon).
    let socket = c.nodes[0].socket.clone();
    let mut stuck = Vec::new();
    for _ in 0..3 {
        let mut s = UnixStream::connect(&socket).await.unwrap();
        s.write_all(b"GET /v1/stream?from=0 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Served (the answer starts), then never read again.
        let mut head = [0u8; 12];
        tokio::time::timeout(WAIT, s.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        stuck.push(s);
    }
    // A fourth is refused while they are open, and told why.
    let (mut s, head) = open_stream(tcp, "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let end = head.find("\r\n\r\n").unwrap() + 4;
    let mut body = head.as_bytes()[end..].to_vec();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    while body.len() < len {
        let mut more = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, s.read(&mut more))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        body.extend_from_slice(&more[..n]);
    }
    let a = parse(&[&head.as_bytes()[..end], &body].concat()).unwrap();
    assert!(json_error(&a).contains("api.max_streams = 3"), "{a:?}");
    // Alerts with long bodies until the stuck streams fill up and stall, and are
    // dropped, freeing their places: then a new stream is served.
    let text = "x".repeat(3000);
    let mut issued = 0;
    let deadline = tokio::time::Instant::now() + 4 * WAIT;
    loop {
        let batch = (0..20).map(|_| {
            let mut body = alert("CLEAR", &format!("filler {issued}"));
            body["text"] = Value::String(text.clone());
            issued += 1;
            let client = client.clone();
            async move { client.post("/v1/alerts", &body).await.unwrap() }
        });
        futures::future::join_all(batch.collect::<Vec<_>>()).await;
        let (s, head) = open_stream(tcp, "").await;
        if head.starts_with("HTTP/1.1 200") {
            assert!(head.contains("text/event-stream"), "{head}");
            drop(s);
            break;
        }
        assert!(
            head.starts_with("HTTP/1.1 503"),
            "neither served nor refused: {head}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck streams were never dropped ({issued} alerts issued)"
        );
    }
    // One stream's place is free; the others stalled at about the same time. Once
    // their stall time has surely passed, each stuck client that reads again finds,
    // after what it was sent, an error event saying from where to resume.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut s = stuck.remove(0);
    let text = read_until(&mut s, "\nevent: error\n", "\n\n").await;
    let error = text
        .lines()
        .skip_while(|l| *l != "event: error")
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let v: Value = serde_json::from_str(error).unwrap();
    let resume = v["resume_from"].as_u64().unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&format!("from={resume}")),
        "{v}"
    );
    let head = client.status().await.unwrap()["head"].as_u64().unwrap();
    assert!(
        resume >= 1 && resume < head,
        "resume from {resume}, head {head}"
    );
    // Resuming from there gets the rest, up to the newest alert.
    let (mut s, answer) = open_stream(tcp, &format!("?from={resume}")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    read_until(&mut s, &format!("\nid: {head}\n"), "\n\n").await;
}

/// Opens an event stream over TCP; returns the connection and the start of the answer.
async fn open_stream(tcp: std::net::SocketAddr, query: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/stream{query} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut head))
        .await
        .expect("no answer to a stream request")
        .unwrap();
    (s, String::from_utf8_lossy(&head[..n]).into_owned())
}

/// Reads until `mark` has been seen and then `end` after it; returns all that was read.
async fn read_until<S: AsyncRead + Unpin>(s: &mut S, mark: &str, end: &str) -> String {
    let mut all = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // Where the mark may start in what is not yet searched.
    let mut from = 0;
    loop {
        let text = String::from_utf8_lossy(&all[from..]);
        if let Some(at) = text.find(mark) {
            if text[at + mark.len()..].contains(end) {
                return String::from_utf8_lossy(&all).into_owned();
            }
        } else {
            from = all.len().saturating_sub(mark.len());
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                let tail = String::from_utf8_lossy(&all[all.len().saturating_sub(400)..]);
                panic!(
                    "{mark:?} never came; {} bytes read, ending {tail:?}",
                    all.len()
                )
            })
            .unwrap();
        assert!(n > 0, "the stream ended before {mark:?}");
        all.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_hyper_answers_itself_carry_the_json_error_body() {
    let (_dir, _c, tcp) = node(&[]).await;
    // A 100 KB path: over hyper's limit of 64 KiB, answered before routing.
    let long = format!("/v1/alerts/{}", "a".repeat(100_000));
    let a = exchange(TcpStream::connect(tcp).await.unwrap(), &get(&long, true))
        .await
        .unwrap();
    assert_eq!(a.status, 414, "{a:?}");
    assert!(json_error(&a).contains("path is too long"), "{a:?}");
    // A path that is not UTF-8, on every route that takes a key or an id.
    for path in [
        "/v1/trust/%FF",
        "/v1/alerts/%FF",
        "/v1/alerts/%FF/history",
        "/v1/alerts/%FF/receipts",
        "/v1/alerts/%FF/sightings",
    ] {
        let a = exchange(TcpStream::connect(tcp).await.unwrap(), &get(path, true))
            .await
            .unwrap();
        assert_eq!(a.status, 400, "{path}: {a:?}");
        json_error(&a);
    }
    // Headers larger than hyper's buffer.
    let big = format!(
        "GET /v1/status HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(500_000)
    );
    let a = exchange(TcpStream::connect(tcp).await.unwrap(), big.as_bytes())
        .await
        .unwrap();
    assert_eq!(a.status, 431, "{a:?}");
    json_error(&a);
    // A body over the limit, on TCP with the token.
    let body = "x".repeat(5 * 1024 * 1024);
    let req = format!(
        "POST /v1/trust HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(tcp).await.unwrap();
    // The server may answer and close before the whole body is written.
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let a = parse(&buf).unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&buf)));
    assert_eq!(a.status, 413, "{a:?}");
    assert!(json_error(&a).contains("MAX_REQUEST_BYTES"), "{a:?}");
    // Garbage instead of HTTP.
    let a = exchange(
        TcpStream::connect(tcp).await.unwrap(),
        b"\x16\x03\x01 not http\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(a.status, 400, "{a:?}");
    json_error(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_shutdown_get_a_503_never_a_reset() {
    let (_dir, mut c, _tcp) = node(&[("shutdown_drain_ms", "700")]).await;
    let socket = c.nodes[0].socket.clone();
    let pid = c.nodes[0].pid.unwrap();
    // Eight clients in a loop, a new connection per request, as the CLI does.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let socket = socket.clone();
        let stop_rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut unavailable, mut resets) = (0u32, 0u32, Vec::new());
            while !*stop_rx.borrow() {
                let Ok(io) = UnixStream::connect(&socket).await else {
                    // Refused or gone: the daemon has stopped listening.
                    break;
                };
                match exchange(io, &get("/v1/status", false)).await {
                    Ok(a) if a.status == 200 => ok += 1,
                    Ok(a) if a.status == 503 => {
                        assert!(json_error(&a).contains("shutting down"), "{a:?}");
                        unavailable += 1;
                    }
                    Ok(a) => panic!("unexpected answer {a:?}"),
                    Err(e) => resets.push(e.to_string()),
                }
            }
            (ok, unavailable, resets)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut totals = (0, 0, Vec::new());
    let all = async {
        for t in tasks {
            let (ok, unavailable, resets) = t.await.unwrap();
            totals.0 += ok;
            totals.1 += unavailable;
            totals.2.extend(resets);
        }
    };
    let finished = tokio::time::timeout(WAIT, all).await;
    let _ = stop_tx.send(true);
    assert!(
        finished.is_ok(),
        "clients still served {WAIT:?} after SIGTERM"
    );
    let (ok, unavailable, resets) = totals;
    assert!(ok > 0, "no request was served before the signal");
    assert!(
        unavailable > 0,
        "no request was answered 503 during the drain"
    );
    assert!(
        resets.is_empty(),
        "{} requests got no answer ({ok} served, {unavailable} answered 503): {:?}",
        resets.len(),
        &resets[..resets.len().min(5)]
    );
    c.stop(0, WAIT).unwrap();
    let log = std::fs::read_to_string(c.nodes[0].log_path()).unwrap();
    assert!(log.contains("tocsind stopped"), "{log}");
}
