//! `GET /v1/stream`: server-sent events, one per newly stored alert.
//!
//! The handler subscribes to the store's commit notifications *before* it reads the
//! log, replays everything after the client's sequence number, then follows the
//! notifications, skipping what it already sent. A notification that does not follow
//! the last sent number (or a `Lagged` broadcast) makes it re-read the log from the
//! last number sent, so the client sees every stored alert once, in sequence order.
//!
//! Streams are bounded: at most `api.max_streams` at once (more get a `503`), and each
//! holds at most [`SSE_BUFFER`] events and [`SSE_BUFFER_BYTES`] of them unsent. A
//! client that leaves its buffer full for `api.stream_stall_secs` is dropped with an
//! `error` event that says from which sequence number to resume; the slot it always
//! keeps free for that event is why the channel has one place more than it fills.

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
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::error::{ApiError, Errors};
use super::view::alert_json;
use super::{ApiState, KEEP_ALIVE, REPLAY_PAGE, SSE_BUFFER, SSE_BUFFER_BYTES};
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
#[utoipa::path(get, path = "/v1/stream", tag = "alerts",
    params(
        ("from" = Option<u64>, Query, description = "Replay the log after this seq first"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Wins over `from`: the last seq a reconnecting client saw"),
    ),
    responses(
        (status = 200, description = "Server-sent events: `alert` (id = seq, data = the alert view), `ack_overdue` (a RED alert issued here whose named recipients did not all acknowledge by its deadline: alert, deadline, missing), and `error` with where to resume", content_type = "text/event-stream", body = String),
        Errors
    ))]
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
            "from" if from.is_some() => {
                return Err(ApiError::bad("from", "from is given twice"));
            }
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
    let slot = st.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!(
                "too many event streams are open (the limit is api.max_streams = {}); retry later",
                st.limits.max_streams
            ),
        )
    })?;
    // Subscribe first: anything committed from here on is either in the log we read
    // next or in the notifications we follow.
    let notifications = st.store.subscribe();
    let start = match from {
        Some(seq) => seq,
        None => st.store.read(|s| s.head()).await?,
    };
    // One place more than the stream fills: the last one is for the "dropped" event.
    let (tx, rx) = mpsc::channel(SSE_BUFFER + 1);
    let sink = Sink {
        tx,
        bytes: Arc::new(Semaphore::new(SSE_BUFFER_BYTES)),
        stall: st.limits.stream_stall,
        shutdown: shutdown.map(|Extension(s)| s.0),
        last: start,
        _slot: slot,
    };
    let notices = st.notices.subscribe();
    tokio::spawn(follow(st.store.clone(), notifications, notices, sink));
    // The byte permit of an event is released as the event is handed to the connection.
    let events = ReceiverStream::new(rx).map(|(event, _bytes)| Ok(event));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// An event on its way to the client, with its share of the byte budget.
type Queued = (Event, Option<OwnedSemaphorePermit>);

/// The sending side of one client's stream.
struct Sink {
    tx: mpsc::Sender<Queued>,
    /// Bytes of events buffered and not yet handed to the connection.
    bytes: Arc<Semaphore>,
    /// How long the buffer may stay full before the client is dropped.
    stall: std::time::Duration,
    shutdown: Option<watch::Receiver<bool>>,
    /// The last sequence number sent (or the client's starting point).
    last: u64,
    /// The stream's place among `api.max_streams`, given back when the stream ends.
    _slot: OwnedSemaphorePermit,
}

/// Why a stream stops.
enum Stop {
    /// The client hung up or the server is shutting down.
    Done,
    /// The client left its buffer full for the stall timeout.
    Stalled,
    /// The store failed; the client gets an `error` event.
    Store(String),
}

impl Sink {
    /// Sends an event of `len` bytes once the client has room for it; `Err(Done)` when
    /// the client is gone or the server stops, `Err(Stalled)` when the client left its
    /// buffer full for the stall timeout.
    async fn send(&mut self, event: Event, len: usize) -> Result<(), Stop> {
        let len = u32::try_from(len.min(SSE_BUFFER_BYTES)).unwrap_or(u32::MAX);
        let room = async {
            // Two places: one for this event, and the one always kept for the last.
            let places = self.tx.reserve_many(2).await.map_err(|_| Stop::Done)?;
            let bytes = self
                .bytes
                .clone()
                .acquire_many_owned(len)
                .await
                .map_err(|_| Stop::Done)?;
            Ok::<_, Stop>((places, bytes))
        };
        let room = tokio::select! {
            room = tokio::time::timeout(self.stall, room) => room,
            () = StreamShutdown::wait(&mut self.shutdown) => return Err(Stop::Done),
        };
        match room {
            Ok(Ok((mut places, bytes))) => {
                if let Some(place) = places.next() {
                    place.send((event, Some(bytes)));
                }
                Ok(())
            }
            Ok(Err(stop)) => Err(stop),
            Err(_) => Err(Stop::Stalled),
        }
    }

    /// Sends the alert stored at `seq`, if it is still stored, and records `seq`.
    async fn send_alert(&mut self, store: &Store, seq: u64, id: &AlertId) -> Result<(), Stop> {
        let id = *id;
        let stored = store
            .read(move |s| s.get(&id))
            .await
            .map_err(|e| Stop::Store(format!("store: {e}")))?;
        if let Some(stored) = stored {
            let data = alert_json(&stored).to_string();
            let len = data.len();
            self.send(
                Event::default()
                    .event("alert")
                    .id(seq.to_string())
                    .data(data),
                len,
            )
            .await?;
        }
        self.last = seq;
        Ok(())
    }

    /// Sends everything in the log after the last sequence number sent.
    async fn catch_up(&mut self, store: &Store) -> Result<(), Stop> {
        loop {
            let after = self.last;
            let page = store
                .read(move |s| s.log_after(after, REPLAY_PAGE))
                .await
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
async fn follow(
    store: Store,
    mut notifications: broadcast::Receiver<Stored>,
    mut notices: broadcast::Receiver<serde_json::Value>,
    mut sink: Sink,
) {
    let result: Result<(), Stop> = async {
        sink.catch_up(&store).await?;
        let mut notices_open = true;
        loop {
            let next = tokio::select! {
                () = sink.tx.closed() => return Err(Stop::Done),
                () = StreamShutdown::wait(&mut sink.shutdown) => return Err(Stop::Done),
                next = notifications.recv() => next,
                notice = notices.recv(), if notices_open => {
                    // A notice missed by a lagging stream is in the log and the metric.
                    if let Err(broadcast::error::RecvError::Closed) = notice {
                        notices_open = false;
                    }
                    if let Ok(notice) = notice {
                        let data = notice.to_string();
                        let len = data.len();
                        sink.send(Event::default().event("ack_overdue").data(data), len)
                            .await?;
                    }
                    continue;
                }
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
    match result {
        Err(Stop::Store(message)) => {
            tracing::warn!(error = %message, "event stream stopped on a store error");
            let data = json!({ "error": message, "field": null }).to_string();
            let len = data.len();
            let _ = sink
                .send(Event::default().event("error").data(data), len)
                .await;
        }
        Err(Stop::Stalled) => {
            tracing::info!(
                last = sink.last,
                stall_secs = sink.stall.as_secs(),
                "event stream dropped: the client did not read"
            );
            let message = format!(
                "this event stream was closed because it was not read for {} s (api.stream_stall_secs); resume with from={} (`tocsin watch --from {}`) or the Last-Event-ID header",
                sink.stall.as_secs(),
                sink.last,
                sink.last
            );
            let data = json!({ "error": message, "field": null, "resume_from": sink.last });
            // The place kept free for this event: it never waits.
            let _ = sink
                .tx
                .try_send((Event::default().event("error").data(data.to_string()), None));
        }
        Err(Stop::Done) | Ok(()) => {}
    }
}
