//! One webhook delivery: an HTTP/1.1 POST over TCP, or TLS for `https://` (rustls, the
//! system's roots plus an optional CA file), signed with HMAC-SHA256.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The header that carries the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "tocsin-signature";

/// `HMAC-SHA256(secret, "<t>.<body>")` as hex: what `v1=` carries. The receiver
/// recomputes it over the raw body and the `t` it got, compares in constant time, and
/// refuses a `t` too far from its clock (replays).
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    // HMAC accepts a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// How one delivery attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// The receiver refused this alert for good (400, 413, 415, 422): skip it.
    Refused(String),
    /// Anything else (connection failure, timeout, other status): try again later.
    Retry(String),
}

/// Where and how to POST.
pub struct Target {
    pub url: url::Url,
    pub timeout: Duration,
    /// For `https://`.
    pub tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    /// A target for `url`; `https` gets a TLS client trusting the system's roots and
    /// the certificates in `ca_file`.
    pub fn new(
        url: url::Url,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Target, String> {
        let tls = if url.scheme() == "https" {
            Some(tls_connector(ca_file)?)
        } else {
            None
        };
        Ok(Target { url, timeout, tls })
    }

    /// POSTs `body` with the signature and identifying headers.
    pub async fn post(&self, headers: &[(&str, String)], body: Vec<u8>) -> Outcome {
        match tokio::time::timeout(self.timeout, self.exchange(headers, body)).await {
            Ok(Ok(status)) if status.is_success() => Outcome::Delivered,
            Ok(Ok(status)) => {
                let why = format!("the receiver answered {status}");
                match status {
                    StatusCode::BAD_REQUEST
                    | StatusCode::PAYLOAD_TOO_LARGE
                    | StatusCode::UNSUPPORTED_MEDIA_TYPE
                    | StatusCode::UNPROCESSABLE_ENTITY => Outcome::Refused(why),
                    _ => Outcome::Retry(why),
                }
            }
            Ok(Err(e)) => Outcome::Retry(e),
            Err(_) => Outcome::Retry(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn exchange(
        &self,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<StatusCode, String> {
        // `host_str` keeps an IPv6 literal's brackets (`[::1]`), which neither a socket
        // address nor a TLS server name takes.
        let host = match self.url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err("the URL has no host".to_string()),
        };
        let port = self
            .url
            .port_or_known_default()
            .ok_or_else(|| "the URL has no port".to_string())?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {host}:{port} failed: {e}"))?;
                self.send(stream, headers, body).await
            }
            None => self.send(tcp, headers, body).await,
        }
    }

    async fn send<S>(
        &self,
        stream: S,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<StatusCode, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        let conn = tokio::spawn(conn);
        let path = match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_string(),
        };
        let host = match self.url.port() {
            Some(p) => format!("{}:{p}", self.url.host_str().unwrap_or_default()),
            None => self.url.host_str().unwrap_or_default().to_string(),
        };
        let mut req = Request::post(path).header(hyper::header::HOST, host);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        req = req.header(
            hyper::header::USER_AGENT,
            concat!("tocsind/", env!("CARGO_PKG_VERSION")),
        );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("the request failed: {e}"))?;
        let status = resp.status();
        // Read (at most 64 KiB of) the answer, so the receiver's write completes.
        let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await;
        conn.abort();
        Ok(status)
    }
}

/// A TLS client trusting the system's roots and those in `ca_file` (PEM).
fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates: the system has none; set ca_file".into());
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A webhook to an IPv6 literal (`http://[::1]:PORT/`, which the config accepts as
    /// loopback) is delivered. Skipped, with the reason, where IPv6 loopback is missing.
    #[tokio::test]
    async fn a_webhook_to_an_ipv6_literal_is_delivered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
            Ok(l) => l,
            Err(e) => {
                println!("SKIPPED the IPv6 webhook check: cannot bind [::1]: {e}");
                return;
            }
        };
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.ends_with(b"{}") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let url = url::Url::parse(&format!("http://[::1]:{port}/hook")).unwrap();
        let target = Target::new(url, Duration::from_secs(10), None).unwrap();
        let outcome = target.post(&[], b"{}".to_vec()).await;
        assert!(matches!(outcome, Outcome::Delivered), "{outcome:?}");
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /hook "), "{request}");
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_the_time_a_dot_and_the_body() {
        // Computed independently: Python's hmac.new(b"Jefe", b'1700000000.{"id":"x"}',
        // hashlib.sha256).hexdigest().
        let sig = signature(b"Jefe", 1_700_000_000, b"{\"id\":\"x\"}");
        assert_eq!(
            sig,
            "83aaec65374de010f05f69354cbddd8bb459ab71908c7579dd27ff250b557358"
        );
        assert_ne!(sig, signature(b"Jefe", 1_700_000_001, b"{\"id\":\"x\"}"));
        assert_ne!(sig, signature(b"other", 1_700_000_000, b"{\"id\":\"x\"}"));
    }
}
