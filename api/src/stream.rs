//! `GET /v1/stream`: Server-Sent Events, one per Insights record as it is stored.
//!
//! The event id is the store's sequence number. With `Last-Event-ID: n` the stream first sends
//! every record stored after `n` (read from the store), then the live ones; without it, only records
//! stored after the connection. It subscribes to the live feed *before* reading the store, and
//! skips any live record at or below the last id sent, so nothing is missed and nothing is sent
//! twice. A subscriber that falls behind the live feed (more than its buffer) reads the store again
//! from its last id.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::broadcast::error::RecvError;

use crate::{Api, ApiError, StoredInsight, blocking};

/// Records read from the store per query while catching up.
const CATCH_UP_PAGE: usize = 500;

struct Cursor {
    api: Arc<Api>,
    live: tokio::sync::broadcast::Receiver<Arc<StoredInsight>>,
    last_sent: i64,
    backlog: VecDeque<StoredInsight>,
    catching_up: bool,
    /// Held while the connection is open.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

fn event(r: &StoredInsight) -> Event {
    Event::default()
        .id(r.seq.to_string())
        .event("insight")
        .json_data(&r.record)
        .unwrap_or_else(|_| {
            Event::default()
                .id(r.seq.to_string())
                .comment("unencodable record")
        })
}

impl Cursor {
    /// The next record to send, or `None` when the feed closed (the service is stopping).
    async fn next(&mut self) -> Option<StoredInsight> {
        loop {
            if let Some(r) = self.backlog.pop_front() {
                self.last_sent = r.seq;
                return Some(r);
            }
            if self.catching_up {
                let store = self.api.store.clone();
                let from = self.last_sent;
                match blocking(move || store.since(from, CATCH_UP_PAGE)).await {
                    Ok(rows) => {
                        self.catching_up = rows.len() == CATCH_UP_PAGE;
                        self.backlog.extend(rows);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "stream: cannot read the store; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            match self.live.recv().await {
                Ok(r) if r.seq > self.last_sent => {
                    self.last_sent = r.seq;
                    return Some((*r).clone());
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => self.catching_up = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[utoipa::path(get, path = "/v1/stream",
    params(("Last-Event-ID" = Option<i64>, Header, description = "resume after this event id (a sequence number this stream sent)")),
    responses((status = 200, content_type = "text/event-stream",
        description = "one `insight` event per Insights record (id: the store's sequence number)"),
        (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody),
        (status = 503, body = crate::openapi::ErrorBody, description = "too many stream connections open")))]
pub(crate) async fn stream(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let permit = api
        .subscribers
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::too_many_streams(crate::MAX_STREAM_SUBSCRIBERS))?;
    // Subscribe first: whatever is stored from now on reaches this receiver.
    let live = api.events.subscribe();
    let given = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::bad_parameter(
                        "Last-Event-ID",
                        "must be an event id this stream sent (a whole number)",
                    )
                })?,
        ),
        None => None,
    };
    let store = api.store.clone();
    let newest = blocking(move || store.max_seq()).await?;
    // No id: live records only. An id past the newest record (e.g. from before the store was
    // rebuilt) resumes from the newest, so the client is never stuck waiting for old numbers.
    let last_sent = given.map_or(newest, |g| g.min(newest));
    let cursor = Cursor {
        api,
        live,
        last_sent,
        backlog: VecDeque::new(),
        catching_up: true,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        let r = c.next().await?;
        Some((Ok::<_, Infallible>(event(&r)), c))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
