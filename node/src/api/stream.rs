//! `GET /v1/stream`: server-sent events, one per newly stored alert.
//!
//! The handler subscribes to the store's commit notifications *before* it reads the
//! log, replays everything after the client's sequence number, then follows the
//! notifications, skipping what it already sent. A notification that does not follow
//! the last sent number (or a `Lagged` broadcast) makes it re-read the log from the
//! last number sent, so the client sees every stored alert once, in sequence order.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures::{Stream, StreamExt};
use serde_json::json;
use tocsin_proto::AlertId;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::view::alert_json;
use super::{ApiState, KEEP_ALIVE, REPLAY_PAGE, SSE_BUFFER};
use crate::store::{Store, Stored};

/// Tells open event streams that the server is shutting down, so that a graceful
/// shutdown does not wait for clients that never hang up.
#[derive(Clone, Debug)]
pub(super) struct StreamShutdown(pub watch::Receiver<bool>);

impl StreamShutdown {
    async fn wait(rx: &mut Option<watch::Receiver<bool>>) {
        match rx {
            // A sender that is gone means the server is gone too.
            Some(rx) => {
                let _ = rx.wait_for(|stop| *stop).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// `GET /v1/stream?from=SEQ` (or the `Last-Event-ID` header, which wins: it is what a
/// reconnecting client last saw). Without either, only alerts stored from now on.
pub(super) async fn stream(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
    shutdown: Option<Extension<StreamShutdown>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            None,
            format!("bad query string: {}", e.body_text()),
        )
    })?;
    let mut from = None;
    for (k, v) in params {
        match k.as_str() {
            "from" => {
                from = Some(v.parse::<u64>().map_err(|_| {
                    ApiError::bad("from", format!("from {v:?} is not a sequence number"))
                })?)
            }
            other => {
                return Err(ApiError::bad(
                    other,
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    if let Some(h) = headers.get("last-event-id") {
        let v = h.to_str().unwrap_or_default().trim();
        from = Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad(
                "Last-Event-ID",
                format!("Last-Event-ID {v:?} is not a sequence number"),
            )
        })?);
    }
    // Subscribe first: anything committed from here on is either in the log we read
    // next or in the notifications we follow.
    let notifications = st.store.subscribe();
    let start = match from {
        Some(seq) => seq,
        None => st.store.head()?,
    };
    let (tx, rx) = mpsc::channel(SSE_BUFFER);
    let sink = Sink {
        tx,
        shutdown: shutdown.map(|Extension(s)| s.0),
        last: start,
    };
    tokio::spawn(follow(st.store.clone(), notifications, sink));
    Ok(Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The sending side of one client's stream.
struct Sink {
    tx: mpsc::Sender<Event>,
    shutdown: Option<watch::Receiver<bool>>,
    /// The last sequence number sent (or the client's starting point).
    last: u64,
}

/// Why a stream stops.
enum Stop {
    /// The client hung up or the server is shutting down.
    Done,
    /// The store failed; the client gets an `error` event.
    Store(String),
}

impl Sink {
    /// Sends an event; `Err(Done)` when the client is gone or the server stops.
    async fn send(&mut self, event: Event) -> Result<(), Stop> {
        tokio::select! {
            sent = self.tx.send(event) => sent.map_err(|_| Stop::Done),
            () = StreamShutdown::wait(&mut self.shutdown) => Err(Stop::Done),
        }
    }

    /// Sends the alert stored at `seq`, if it is still stored, and records `seq`.
    async fn send_alert(&mut self, store: &Store, seq: u64, id: &AlertId) -> Result<(), Stop> {
        let stored = store
            .get(id)
            .map_err(|e| Stop::Store(format!("store: {e}")))?;
        if let Some(stored) = stored {
            let data = alert_json(&stored).to_string();
            self.send(
                Event::default()
                    .event("alert")
                    .id(seq.to_string())
                    .data(data),
            )
            .await?;
        }
        self.last = seq;
        Ok(())
    }

    /// Sends everything in the log after the last sequence number sent.
    async fn catch_up(&mut self, store: &Store) -> Result<(), Stop> {
        loop {
            let page = store
                .log_after(self.last, REPLAY_PAGE)
                .map_err(|e| Stop::Store(format!("store: {e}")))?;
            let full = page.len() >= REPLAY_PAGE;
            for (seq, id) in page {
                if seq > self.last {
                    self.send_alert(store, seq, &id).await?;
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Replays, then follows the store's notifications until the client or server stops.
async fn follow(store: Store, mut notifications: broadcast::Receiver<Stored>, mut sink: Sink) {
    let result: Result<(), Stop> = async {
        sink.catch_up(&store).await?;
        loop {
            let next = tokio::select! {
                () = sink.tx.closed() => return Err(Stop::Done),
                () = StreamShutdown::wait(&mut sink.shutdown) => return Err(Stop::Done),
                next = notifications.recv() => next,
            };
            match next {
                Ok(Stored { seq, .. }) if seq <= sink.last => {}
                Ok(Stored { seq, id }) if Some(seq) == sink.last.checked_add(1) => {
                    sink.send_alert(&store, seq, &id).await?;
                }
                // A gap in the numbers, or notifications we missed: the log has them.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    sink.catch_up(&store).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Stop::Done),
            }
        }
    }
    .await;
    if let Err(Stop::Store(message)) = result {
        tracing::warn!(error = %message, "event stream stopped on a store error");
        let data = json!({ "error": message, "field": null }).to_string();
        let _ = sink.send(Event::default().event("error").data(data)).await;
    }
}
