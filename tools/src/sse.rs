//! An incremental parser for server-sent events (the `text/event-stream` format).
//!
//! Feed it bytes as they arrive with [`SseParser::push`]; it returns every event that a
//! blank line completed. Lines end in `\n`, `\r\n` or `\r`; lines starting with `:` are
//! comments (keep-alives); `data` lines are joined with `\n`.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `"message"` when the server sent none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last `id:` seen on the stream so far (ids persist across events).
    pub id: Option<String>,
}

/// Longest event this client buffers. The daemon's events are one alert view (a few
/// tens of KiB at most); anything far larger is not the daemon speaking.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Why a stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// An event grew past [`MAX_EVENT_BYTES`] without ending.
    #[error("an event is longer than MAX_EVENT_BYTES = {MAX_EVENT_BYTES}")]
    TooLong,
    /// A line is not UTF-8.
    #[error("the event stream is not UTF-8")]
    NotUtf8,
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` that starts the next one belongs to it.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    pending: usize,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk`, returning the events it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    let line = String::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
                    if let Some(ev) = self.line_done(&line) {
                        out.push(ev);
                    }
                }
                _ => {
                    self.line.push(b);
                    self.pending += 1;
                    if self.pending > MAX_EVENT_BYTES {
                        return Err(SseError::TooLong);
                    }
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            self.pending = 0;
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".to_string()
                } else {
                    event
                },
                data,
                id: self.last_id.clone(),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut p = SseParser::new();
        let stream = b": keep-alive\n\nevent: alert\r\nid: 7\rdata: {\"a\":\ndata: 1}\n\nevent: alert\nid: 8\ndata: x\n\n";
        let mut events = Vec::new();
        for chunk in stream.chunks(3) {
            events.extend(p.push(chunk).unwrap());
        }
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "alert".into(),
                    data: "{\"a\":\n1}".into(),
                    id: Some("7".into())
                },
                SseEvent {
                    event: "alert".into(),
                    data: "x".into(),
                    id: Some("8".into())
                },
            ]
        );
    }

    #[test]
    fn comments_alone_dispatch_nothing() {
        let mut p = SseParser::new();
        assert!(p.push(b":\n\n: ping\n\n").unwrap().is_empty());
        let ev = p.push(b"data\n\n").unwrap();
        assert_eq!(ev[0].event, "message");
        assert_eq!(ev[0].data, "");
    }

    #[test]
    fn endless_line_is_refused() {
        let mut p = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(p.push(&big).unwrap_err(), SseError::TooLong);
    }
}
