//! Serving the control API: one accept loop per listener (the Unix socket, and TCP
//! with a bearer token), each with the limits that keep one client, or a flood of
//! them, from locking out the operator.
//!
//! - **Connections per listener** ([`ApiLimits::max_connections`]): a connection beyond
//!   the cap is answered `503` with a JSON error and closed at once, so the file
//!   descriptors a flood can hold are bounded, and the Unix socket, which has its own
//!   cap, stays usable whatever TCP suffers.
//! - **Header timeout** ([`ApiLimits::header_timeout`]): a client has that long to send a
//!   request's headers, counted from the connection or from the end of its previous
//!   response, so connections that never finish their headers (slowloris) and idle
//!   keep-alive connections are closed.
//! - **Draining on shutdown**: once shutdown starts, every request is answered `503`
//!   with a JSON error for [`ApiLimits::drain`], then the listeners close and in-flight
//!   requests finish. A request already on its way gets an answer, not a reset.
//! - **Parse errors** that hyper answers itself (a request line or headers too long, a
//!   malformed request) get the same JSON error body as every other error
//!   ([`super::conn`]), and a client that stops reading is cut off after
//!   [`WRITE_TIMEOUT`] instead of holding its connection.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use super::caller::Caller;
use super::conn::ApiConn;
use super::error::ApiError;
use super::stream::StreamShutdown;

/// Connections refused at the cap that may be in the middle of getting their `503`
/// at once; beyond this, a refused connection is closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a refused connection is given to take its `503`.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long shutdown waits for in-flight requests after the listeners closed.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a client may wait for it to read before the connection is
/// closed: a client that stops reading (a stuck event-stream consumer, a slow-read
/// attack) would otherwise hold its connection, and what was buffered for it, forever.
/// Longer than `api.stream_stall_secs` by default, so that a stream dropped for
/// stalling can still deliver its last `error` event to a client that reads again.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head (request line and headers). Above hyper's own limit on the
/// path (64 KiB, answered `414`), far above what any client of the API sends; a larger
/// head is answered `431` before it is parsed further.
pub const MAX_REQUEST_HEAD_BYTES: usize = 128 * 1024;

/// The limits of the API's listeners and event streams (from `[api]` in the config).
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Most connections open at once on each listener.
    pub max_connections: usize,
    /// Time to send a request's headers (and the longest a connection may sit idle).
    pub header_timeout: Duration,
    /// Most event streams open at once.
    pub max_streams: usize,
    /// How long an event stream may stay full before it is closed.
    pub stream_stall: Duration,
    /// How long requests are answered `503` after shutdown starts.
    pub drain: Duration,
}

impl ApiLimits {
    /// The limits set in `[api]`.
    pub fn from_config(api: &crate::config::ApiConfig) -> ApiLimits {
        ApiLimits {
            max_connections: api.max_connections.max(1),
            header_timeout: Duration::from_secs(api.header_timeout_secs.max(1)),
            max_streams: api.max_streams.max(1),
            stream_stall: Duration::from_secs(api.stream_stall_secs.max(1)),
            drain: Duration::from_millis(api.shutdown_drain_ms),
        }
    }
}

/// Compares without an early exit, so response timing does not reveal the token.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Middleware for TCP: 401 unless `Authorization: Bearer <token>`.
async fn require_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    // TAXII requests carry a TAXII client's credentials, checked by its handlers.
    if crate::taxii::is_taxii_path(req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if same_token(t.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

/// Middleware: once shutdown has started, every request gets a `503` and the
/// connection is closed after it.
async fn refuse_when_draining(
    State(draining): State<Arc<AtomicBool>>,
    req: Request,
    next: Next,
) -> Response {
    if !draining.load(Ordering::Relaxed) {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "tocsind is shutting down; retry when it is back",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Removes a stale socket file at `path`; refuses when a server still answers there or
/// when the path is not a socket.
fn clear_stale_socket(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        );
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another process is serving the control API on {}; is tocsind already running?",
            path.display()
        );
    }
    std::fs::remove_file(path)
        .with_context(|| format!("cannot remove the stale socket {}", path.display()))
}

/// Serves `app` on the Unix socket at `socket` (a stale socket file is removed first,
/// the new one is made mode 0600) and, if `tcp` is given, on TCP, where every request
/// needs `Authorization: Bearer <token>` (answered 401 otherwise). Refuses to serve TCP
/// without a token. Runs until `shutdown` resolves, then answers `503` for
/// `limits.drain`, stops accepting, ends open event streams, lets in-flight requests
/// finish and removes the socket file.
pub(super) async fn serve_router(
    app: Router,
    token: Option<String>,
    socket: &Path,
    tcp: Option<std::net::SocketAddr>,
    limits: &ApiLimits,
    bound_tcp: &std::sync::OnceLock<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = token.filter(|t| !t.is_empty());
    let tcp = match tcp {
        None => None,
        Some(addr) => {
            let Some(token) = token else {
                bail!(
                    "the control API on TCP ({addr}) needs a bearer token: set api.token in the config, or remove the TCP address"
                );
            };
            Some((addr, Arc::<str>::from(token.as_str())))
        }
    };

    clear_stale_socket(socket)?;
    let unix = UnixListener::bind(socket)
        .with_context(|| format!("cannot bind the control socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} mode 0600", socket.display()))?;
    let tcp = match tcp {
        None => None,
        Some((addr, token)) => {
            let listener = match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = std::fs::remove_file(socket);
                    return Err(e)
                        .with_context(|| format!("cannot listen on {addr} for the control API"));
                }
            };
            if let Ok(addr) = listener.local_addr() {
                let _ = bound_tcp.set(addr);
            }
            Some((listener, token))
        }
    };
    info!(socket = %socket.display(), tcp = ?tcp.as_ref().and_then(|(l, _)| l.local_addr().ok()), max_connections = limits.max_connections, "control API listening");

    // Streams end at the start of shutdown; the listeners close after the drain.
    let (streams_tx, streams_rx) = watch::channel(false);
    let (close_tx, close_rx) = watch::channel(false);
    let draining = Arc::new(AtomicBool::new(false));
    let app = app
        .layer(middleware::from_fn_with_state(
            draining.clone(),
            refuse_when_draining,
        ))
        .layer(Extension(StreamShutdown(streams_rx)));
    let graceful = GracefulShutdown::new();
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let unix_loop = accept_loop(
        unix,
        Endpoint {
            app: app.clone(),
            name: "unix",
            limits: limits.clone(),
            refusing: refusing.clone(),
        },
        |io: &tokio::net::UnixStream| Caller::Unix(io.peer_cred().ok().map(|c| c.uid())),
        &graceful,
        close_rx.clone(),
        // New clients get "no such file" from here on, not a connection that is reset
        // when the listener closes.
        || {
            let _ = std::fs::remove_file(socket);
        },
    );
    let tcp_loop = async {
        if let Some((listener, token)) = tcp {
            let authed = app
                .layer(middleware::from_fn_with_state(token, require_token))
                .layer(Extension(ConnectInfo(Caller::Token)));
            let endpoint = Endpoint {
                app: authed,
                name: "tcp",
                limits: limits.clone(),
                refusing,
            };
            accept_loop(
                listener,
                endpoint,
                |_: &tokio::net::TcpStream| Caller::Token,
                &graceful,
                close_rx,
                || {},
            )
            .await;
        }
    };
    let drain = limits.drain;
    let stop = async move {
        shutdown.await;
        draining.store(true, Ordering::Relaxed);
        let _ = streams_tx.send(true);
        tokio::time::sleep(drain).await;
        let _ = close_tx.send(true);
    };
    tokio::join!(unix_loop, tcp_loop, stop);
    // Every request since the drain began was answered with `Connection: close`, so
    // connections end by themselves; give the last ones accepted the same time, then
    // close what is left (idle keep-alive connections), letting running requests finish.
    let deadline = tokio::time::Instant::now() + drain;
    while graceful.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if tokio::time::timeout(FINISH_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            timeout_secs = FINISH_TIMEOUT.as_secs(),
            "control API: requests still running at shutdown were cut off"
        );
    }
    let _ = std::fs::remove_file(socket);
    Ok(())
}

/// What one listener serves, and how.
struct Endpoint {
    app: Router,
    /// `unix` or `tcp`, for logs.
    name: &'static str,
    limits: ApiLimits,
    /// Slots for connections being refused (shared by the listeners).
    refusing: Arc<Semaphore>,
}

/// Accepts connections until `close` flips, serving each on its own task while there
/// is a slot for it and refusing it with a `503` otherwise. On close, runs `closing`,
/// then serves the connections the kernel has already accepted, and returns.
async fn accept_loop<L>(
    mut listener: L,
    endpoint: Endpoint,
    caller: impl Fn(&L::Io) -> Caller,
    graceful: &GracefulShutdown,
    mut close: watch::Receiver<bool>,
    closing: impl FnOnce(),
) where
    L: Listener,
{
    let slots = Arc::new(Semaphore::new(endpoint.limits.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(endpoint.limits.header_timeout)
        .max_header_size(MAX_REQUEST_HEAD_BYTES);
    let mut warned = false;
    let mut closing = Some(closing);
    // Once closing: how many more looks at an empty backlog before returning, and how
    // many connections it may still take (a steady stream must not hold shutdown up).
    let mut looks = 2;
    let mut last_ones = MAX_REFUSING;
    loop {
        let (io, _) = if closing.is_none() {
            // Connections the kernel already accepted are served (they get a 503)
            // rather than reset when the listener closes; a client that connected
            // just before `closing` ran may still be on its way in.
            if last_ones == 0 {
                return;
            }
            last_ones -= 1;
            match futures::FutureExt::now_or_never(listener.accept()) {
                Some(accepted) => accepted,
                None if looks > 0 => {
                    looks -= 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                None => return,
            }
        } else {
            tokio::select! {
                accepted = listener.accept() => accepted,
                _ = close.wait_for(|c| *c) => {
                    if let Some(closing) = closing.take() {
                        closing();
                    }
                    continue;
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if !warned {
                warn!(listener = endpoint.name, max_connections = endpoint.limits.max_connections, "control API at its connection limit; new connections get 503 (repeats at debug)");
                warned = true;
            } else {
                debug!(
                    listener = endpoint.name,
                    "control API connection refused at the limit"
                );
            }
            if let Ok(slot) = endpoint.refusing.clone().try_acquire_owned() {
                let limit = endpoint.limits.max_connections;
                tokio::spawn(async move {
                    refuse(io, limit).await;
                    drop(slot);
                });
            }
            continue;
        };
        if slots.available_permits() > endpoint.limits.max_connections / 2 {
            warned = false;
        }
        let who = caller(&io);
        let app = endpoint.app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(who));
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, req.map(axum::body::Body::new)).await }
        });
        let conn = builder.serve_connection(TokioIo::new(ApiConn::new(io, WRITE_TIMEOUT)), service);
        let conn = graceful.watch(conn);
        let name = endpoint.name;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(listener = name, error = %e, "control API connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Answers a connection over the limit with a `503` and closes it. Reads what the
/// client sent (up to a bound) after answering, so that closing does not reset the
/// connection before the client has read the answer.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, limit: usize) {
    let body = serde_json::json!({
        "error": format!("too many connections to the control API (the limit is api.max_connections = {limit}); retry shortly"),
        "field": null,
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        io.write_all(response.as_bytes()).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0usize;
        while read < 64 * 1024 {
            match io.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}
