//! An HTTP/1 client for tocsind's control API, over its Unix socket or over TCP with a
//! bearer token. One connection per request; the event stream keeps its own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tocsin_tools::client::ClientError> {
//! use tocsin_tools::client::{Client, Endpoint};
//! let client = Client::new(Endpoint::Unix("/var/lib/tocsin/tocsind.sock".into()));
//! let status = client.status().await?;
//! println!("{}", status["public_key"]);
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::sse::{SseError, SseEvent, SseParser};

/// How long a request (connect, send, and read the whole answer) may take. Issuing waits
/// for a durable commit, which takes milliseconds; a minute means the daemon is stuck.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest response body read. A page of `MAX_QUERY_LIMIT` (the daemon's page limit) alert
/// views of the largest legal size stays well below it.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: bad input, or the daemon refused the request (4xx).
pub const EXIT_INPUT: u8 = 1;
/// Exit code: the daemon cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 2;
/// Exit code: the daemon failed (5xx) or answered something unreadable.
pub const EXIT_DAEMON: u8 = 3;

/// Where the daemon's API is.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Its Unix socket (no token needed: the socket is mode 0600).
    Unix(PathBuf),
    /// TCP, `host:port`, with the bearer token the daemon requires there.
    Tcp {
        /// `host:port`.
        authority: String,
        /// `api.token` of the daemon.
        token: Option<String>,
    },
}

impl fmt::Debug for Endpoint {
    // Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => f.debug_tuple("Unix").field(p).finish(),
            Endpoint::Tcp { authority, token } => f
                .debug_struct("Tcp")
                .field("authority", authority)
                .field("token", &token.as_ref().map(|_| "…"))
                .finish(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { authority, .. } => write!(f, "http://{authority}"),
        }
    }
}

impl Endpoint {
    /// Parses `--api http://HOST:PORT` (no path, no TLS: put a TLS proxy in front for
    /// anything beyond a trusted network).
    pub fn tcp(url: &str, token: Option<String>) -> Result<Endpoint, ClientError> {
        let bad = || ClientError::BadApiUrl(url.to_string());
        let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.port_u16().is_none() || !matches!(uri.path(), "" | "/") {
            return Err(bad());
        }
        Ok(Endpoint::Tcp {
            authority: authority.as_str().to_string(),
            token,
        })
    }
}

/// Why a request failed. [`ClientError::exit_code`] maps it to the CLI's exit codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot reach tocsind at {endpoint}")]
    Connect {
        /// Where we tried.
        endpoint: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed during the exchange.
    #[error("lost the connection to tocsind at {endpoint}")]
    Transport {
        /// Where we were connected.
        endpoint: String,
        /// What happened.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("tocsind at {endpoint} did not answer within {timeout:?}")]
    Timeout {
        /// Where we were connected.
        endpoint: String,
        /// The time limit.
        timeout: Duration,
    },
    /// The daemon answered with an error status.
    #[error("{}", api_message(*status, error, field.as_deref()))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The daemon's message.
        error: String,
        /// The request field it names, if any.
        field: Option<String>,
    },
    /// The answer could not be understood.
    #[error("tocsind sent an answer this client cannot read: {0}")]
    Response(String),
    /// `--api` is not `http://HOST:PORT`.
    #[error("--api {0:?} is not http://HOST:PORT")]
    BadApiUrl(String),
}

fn api_message(status: u16, error: &str, field: Option<&str>) -> String {
    let field = field.map(|f| format!(" (field: {f})")).unwrap_or_default();
    match status {
        401 => {
            format!("tocsind refused the request: {error}{field}; pass --token or set TOCSIN_TOKEN")
        }
        400..=499 => format!("tocsind refused the request: {error}{field}"),
        _ => format!("tocsind failed ({status}): {error}{field}"),
    }
}

impl ClientError {
    /// The CLI exit code for this error: 1 refused (4xx) or bad input, 2 unreachable,
    /// 3 daemon failure (5xx) or unreadable answer.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Connect { .. }
            | ClientError::Transport { .. }
            | ClientError::Timeout { .. } => EXIT_UNREACHABLE,
            ClientError::Api { status, .. } if *status < 500 => EXIT_INPUT,
            ClientError::Api { .. } | ClientError::Response(_) => EXIT_DAEMON,
            ClientError::BadApiUrl(_) => EXIT_INPUT,
        }
    }
}

/// The answer to issue, update and cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// The new alert's id, 64 hex.
    pub id: String,
    /// Its local sequence number.
    pub seq: u64,
    /// Whether the same alert was already stored.
    #[serde(default)]
    pub duplicate: bool,
}

/// One page of `GET /v1/alerts`.
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    /// Alert views, newest first.
    pub alerts: Vec<Value>,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
}

/// The filters of `GET /v1/alerts`; `None` = not filtered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Issued at or after, unix ms.
    pub since: Option<u64>,
    /// Issued before, unix ms.
    pub until: Option<u64>,
    /// Origin key, 64 hex.
    pub origin: Option<String>,
    /// Minimum severity name.
    pub min_severity: Option<String>,
    /// TLP label.
    pub tlp: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Indicator value.
    pub indicator: Option<String>,
    /// Text in title or body.
    pub text: Option<String>,
    /// State name.
    pub state: Option<String>,
    /// Page size.
    pub limit: Option<usize>,
    /// Where to continue.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// `?k=v&…`, percent-encoded, or `""` without filters.
    pub fn to_query_string(&self) -> String {
        let pairs: [(&str, Option<String>); 11] = [
            ("since", self.since.map(|v| v.to_string())),
            ("until", self.until.map(|v| v.to_string())),
            ("origin", self.origin.clone()),
            ("min_severity", self.min_severity.clone()),
            ("tlp", self.tlp.clone()),
            ("tag", self.tag.clone()),
            ("indicator", self.indicator.clone()),
            ("text", self.text.clone()),
            ("state", self.state.clone()),
            ("limit", self.limit.map(|v| v.to_string())),
            ("cursor", self.cursor.clone()),
        ];
        let parts: Vec<String> = pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client for one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    verbose: bool,
}

impl Client {
    /// A client for the daemon at `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Client {
            endpoint,
            verbose: false,
        }
    }

    /// Logs each request to stderr.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Where the daemon is.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Request<Full<Bytes>> {
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost",
            Endpoint::Tcp { authority, .. } => authority.as_str(),
        };
        let mut req = Request::new(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )));
        *req.method_mut() = method;
        // A path built by this module is always a valid URI; a bad one fails to send.
        *req.uri_mut() = path.parse().unwrap_or_default();
        let headers = req.headers_mut();
        if let Ok(v) = header::HeaderValue::from_str(host) {
            headers.insert(header::HOST, v);
        }
        if body.is_some() {
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
        }
        if let Endpoint::Tcp {
            token: Some(token), ..
        } = &self.endpoint
        {
            if let Ok(v) = header::HeaderValue::from_str(&format!("Bearer {token}")) {
                headers.insert(header::AUTHORIZATION, v);
            }
        }
        req
    }

    /// Connects and sends; returns the response head with its streaming body.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, ClientError> {
        if self.verbose {
            eprintln!(
                "tocsin: {} {} via {}",
                req.method(),
                req.uri(),
                self.endpoint
            );
        }
        let endpoint = self.endpoint.to_string();
        let connect = |source| ClientError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let result = match &self.endpoint {
            Endpoint::Unix(path) => {
                exchange(UnixStream::connect(path).await.map_err(connect)?, req).await
            }
            Endpoint::Tcp { authority, .. } => {
                exchange(
                    TcpStream::connect(authority.as_str())
                        .await
                        .map_err(connect)?,
                    req,
                )
                .await
            }
        };
        result.map_err(|e| ClientError::Transport {
            endpoint: endpoint.clone(),
            source: Box::new(e),
        })
    }

    /// Sends a request and reads the JSON answer; an error status becomes
    /// [`ClientError::Api`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (status, bytes) = self.fetch(method, path, body).await?;
        decode(status, &bytes)
    }

    /// `GET path` for a text answer (`/metrics`); an error status becomes
    /// [`ClientError::Api`].
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let (status, bytes) = self.fetch(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Sends a request and reads the whole answer, within [`REQUEST_TIMEOUT`].
    async fn fetch(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let req = self.request(method, path, body);
        let exchange = async {
            let resp = self.send(req).await?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|source| ClientError::Transport {
                    endpoint: self.endpoint.to_string(),
                    source,
                })?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                endpoint: self.endpoint.to_string(),
                timeout: REQUEST_TIMEOUT,
            })?
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `POST /v1/alerts`: issues an alert; `request` is the API's issue body.
    pub async fn issue(&self, request: &Value) -> Result<Issued, ClientError> {
        parse(self.post("/v1/alerts", request).await?)
    }

    /// `POST /v1/alerts/{id}/update`.
    pub async fn update(&self, id: &str, request: &Value) -> Result<Issued, ClientError> {
        parse(
            self.post(&format!("/v1/alerts/{}/update", encode(id)), request)
                .await?,
        )
    }

    /// `POST /v1/alerts/{id}/cancel`.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<Issued, ClientError> {
        let body = serde_json::json!({ "reason": reason });
        parse(
            self.post(&format!("/v1/alerts/{}/cancel", encode(id)), &body)
                .await?,
        )
    }

    /// `GET /v1/alerts/{id}`: the alert view.
    pub async fn alert(&self, id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/alerts/{}", encode(id))).await
    }

    /// `GET /v1/alerts/{id}/history`: the views of its chain of versions.
    pub async fn history(&self, id: &str) -> Result<Vec<Value>, ClientError> {
        #[derive(Deserialize)]
        struct History {
            alerts: Vec<Value>,
        }
        let h: History = parse(
            self.get(&format!("/v1/alerts/{}/history", encode(id)))
                .await?,
        )?;
        Ok(h.alerts)
    }

    /// `GET /v1/alerts?…`: one page.
    pub async fn list(&self, query: &ListQuery) -> Result<Page, ClientError> {
        parse(
            self.get(&format!("/v1/alerts{}", query.to_query_string()))
                .await?,
        )
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Value, ClientError> {
        self.get("/v1/status").await
    }

    /// `GET /v1/stream`: alerts stored after `from` (default: from now on).
    pub async fn watch(&self, from: Option<u64>) -> Result<EventStream, ClientError> {
        let path = match from {
            Some(seq) => format!("/v1/stream?from={seq}"),
            None => "/v1/stream".to_string(),
        };
        let mut req = self.request(Method::GET, &path, None);
        req.headers_mut().insert(
            header::ACCEPT,
            header::HeaderValue::from_static("text/event-stream"),
        );
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.send(req))
            .await
            .map_err(|_| ClientError::Timeout {
                endpoint: self.endpoint.to_string(),
                timeout: REQUEST_TIMEOUT,
            })??;
        let status = resp.status();
        if !status.is_success() {
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            decode(status, &bytes)?;
            return Err(ClientError::Response(format!(
                "the stream answered {status}"
            )));
        }
        Ok(EventStream {
            body: resp.into_body(),
            parser: SseParser::new(),
            ready: std::collections::VecDeque::new(),
            endpoint: self.endpoint.to_string(),
        })
    }
}

/// Runs one HTTP/1 exchange on a fresh connection.
async fn exchange<T>(io: T, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, hyper::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    // Drives the connection until the response body is read (or dropped).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await
}

/// Parses a JSON answer, turning an error status into [`ClientError::Api`].
fn decode(status: StatusCode, bytes: &[u8]) -> Result<Value, ClientError> {
    if status.is_success() {
        return serde_json::from_slice(bytes)
            .map_err(|e| ClientError::Response(format!("not JSON: {e}")));
    }
    Err(api_error(status, bytes))
}

/// The [`ClientError::Api`] for an error status: the daemon's JSON error body, or the
/// body's text if it is not one.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<tocsin_proto::api::ErrorBody>(bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            error: body.error,
            field: body.field,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            error: String::from_utf8_lossy(bytes).trim().to_string(),
            field: None,
        },
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Response(e.to_string()))
}

/// The daemon's event stream.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    parser: SseParser,
    ready: std::collections::VecDeque<SseEvent>,
    endpoint: String,
}

impl EventStream {
    /// The next event; `None` when the daemon ended the stream (it is shutting down).
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(Some(ev));
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame.map_err(|e| ClientError::Transport {
                endpoint: self.endpoint.clone(),
                source: Box::new(e),
            })?;
            if let Ok(data) = frame.into_data() {
                let events = self
                    .parser
                    .push(&data)
                    .map_err(|e: SseError| ClientError::Response(e.to_string()))?;
                self.ready.extend(events);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_string_is_encoded() {
        let q = ListQuery {
            tlp: Some("AMBER+STRICT".into()),
            text: Some("a b&c".into()),
            limit: Some(5),
            ..Default::default()
        };
        assert_eq!(
            q.to_query_string(),
            "?tlp=AMBER%2BSTRICT&text=a%20b%26c&limit=5"
        );
        assert_eq!(ListQuery::default().to_query_string(), "");
    }

    #[test]
    fn api_urls() {
        assert!(matches!(
            Endpoint::tcp("http://127.0.0.1:7300", None),
            Ok(Endpoint::Tcp { ref authority, .. }) if authority == "127.0.0.1:7300"
        ));
        for bad in ["https://h:1", "127.0.0.1:7300", "http://h", "http://h:1/x"] {
            assert!(Endpoint::tcp(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let api = |status| ClientError::Api {
            status,
            error: "x".into(),
            field: Some("title".into()),
        };
        assert_eq!(api(400).exit_code(), EXIT_INPUT);
        assert_eq!(api(404).exit_code(), EXIT_INPUT);
        assert_eq!(api(500).exit_code(), EXIT_DAEMON);
        let connect = ClientError::Connect {
            endpoint: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(connect.exit_code(), EXIT_UNREACHABLE);
        assert_eq!(
            api(400).to_string(),
            "tocsind refused the request: x (field: title)"
        );
    }

    /// A client for a Unix socket at `path` that answers one request with `status` and
    /// `body`.
    fn serve_once(path: std::path::PathBuf, status: &str, body: &str) -> Client {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before sending its request");
                request.extend_from_slice(&buf[..n]);
            }
            assert!(request.starts_with(b"GET /metrics HTTP/1.1\r\n"));
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        Client::new(Endpoint::Unix(path))
    }

    #[tokio::test]
    async fn text_answers_are_read_and_error_statuses_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ok = serve_once(dir.path().join("ok.sock"), "200 OK", "up 1\nfrom 2\n");
        assert_eq!(ok.get_text("/metrics").await.unwrap(), "up 1\nfrom 2\n");
        let failed = serve_once(
            dir.path().join("failed.sock"),
            "500 Internal Server Error",
            "store down",
        );
        let err = failed.get_text("/metrics").await.unwrap_err();
        assert!(
            matches!(err, ClientError::Api { status: 500, ref error, .. } if error == "store down"),
            "{err:?}"
        );
    }

    #[test]
    fn error_bodies_are_decoded() {
        let err = decode(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid recipients: needed","field":"recipients"}"#,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ClientError::Api { status: 400, ref field, .. } if field.as_deref() == Some("recipients")
        ));
        let err = decode(StatusCode::BAD_GATEWAY, b"upstream down").unwrap_err();
        assert_eq!(err.exit_code(), EXIT_DAEMON);
        assert!(err.to_string().contains("upstream down"));
    }
}
