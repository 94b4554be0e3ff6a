//! One control-API connection as hyper sees it: the socket, with two guards.
//!
//! - **JSON bodies for the errors hyper answers by itself.** A request that hyper
//!   cannot parse (a path over its 64 KiB limit, headers too large, bytes that are not
//!   HTTP) never reaches the router: hyper writes a bare status line with an empty body
//!   (`414 URI Too Long`, `431`, `400`) and closes the connection. Every other error of
//!   the API carries `{"error": …, "field": …}`, and clients rely on it, so such an
//!   answer, the only kind of error response with an empty body, is rewritten into
//!   the same JSON shape ([`rewrite`]).
//! - **A write timeout.** A client that stops reading (a stuck event-stream consumer, a
//!   slow-read attack) would hold its connection, and what hyper buffered for it,
//!   forever: a write that cannot make progress for the stall time fails, and hyper
//!   closes the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A control-API connection: see the module docs.
#[derive(Debug)]
pub struct ApiConn<S> {
    inner: S,
    /// A rewritten answer still being written, and how much of it has been.
    pending: Option<(Vec<u8>, usize)>,
    /// How long a write may wait for the client to read.
    write_stall: Duration,
    /// Armed while writes are blocked.
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<S> ApiConn<S> {
    /// Wraps a connection; writes fail after `write_stall` without progress.
    pub fn new(inner: S, write_stall: Duration) -> Self {
        ApiConn {
            inner,
            pending: None,
            write_stall,
            blocked: None,
        }
    }

    /// A write could not make progress: Pending, or an error once it has been blocked
    /// for the stall time.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let stall = self.write_stall;
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client did not read for {} s", stall.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A write made progress.
    fn unblocked(&mut self) {
        self.blocked = None;
    }
}

/// If `buf` is a whole error response with an empty body, the same response with the
/// API's JSON error body.
pub fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() || !buf.starts_with(b"HTTP/1.1 ") || buf.len() < 12 {
        return None;
    }
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status: u16 = head.get(9..12)?.parse().ok()?;
    if !(400..600).contains(&status) {
        return None;
    }
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let empty = headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"));
    if !empty {
        return None;
    }
    let message = match status {
        414 => "the request path is too long (at most 65534 bytes of path and query)".to_owned(),
        431 => "the request headers are too large".to_owned(),
        400 => "malformed HTTP request".to_owned(),
        _ => format!(
            "the request was refused: {}",
            status_line.get(13..).unwrap_or("")
        ),
    };
    let body = serde_json::json!({ "error": message, "field": null }).to_string();
    let mut out = format!("{status_line}\r\n");
    for h in headers {
        let name = h.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("content-type")
        {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    Some(out.into_bytes())
}

impl<S: AsyncWrite + Unpin> ApiConn<S> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.blocked(cx),
            }
        }
        self.unblocked();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ApiConn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ApiConn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_some() {
            match this.poll_pending(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other.map_ok(|()| 0),
            }
        }
        if let Some(json) = rewrite(buf) {
            this.pending = Some((json, 0));
            // The whole answer counts as written; the rest goes out on flush.
            return match this.poll_pending(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.blocked(cx),
            done => {
                this.unblocked();
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => match Pin::new(&mut this.inner).poll_flush(cx) {
                Poll::Pending => this.blocked(cx),
                done => {
                    this.unblocked();
                    done
                }
            },
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }

    // Not vectored, so that hyper hands over each response head in one buffer.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn an_empty_error_answer_gets_the_json_body() {
        let out = rewrite(
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 10:00:00 GMT\r\n\r\n",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("date: Fri"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("path is too long"),
            "{v}"
        );
        assert!(v["field"].is_null());
    }

    #[test]
    fn answers_with_a_body_or_success_pass_untouched() {
        for given in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 30\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\nmore",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n",
            b"garbage",
        ] {
            assert_eq!(rewrite(given), None, "{}", String::from_utf8_lossy(given));
        }
    }
}
