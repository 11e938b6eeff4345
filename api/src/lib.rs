//! trailsight's HTTP API for analysts and downstream consumers, mounted by `trailsight serve`:
//!
//! - `GET /v1/insights?startTime&endTime&account&region&eventSource&eventName&insightType&state&maxResults&nextToken`:
//!   Insights records newest first, with CloudTrail `LookupEvents` (`EventCategory=insight`)
//!   semantics: `maxResults` default 50 (1 to 1000), an opaque keyset `nextToken`;
//! - `GET /v1/insights/{eventID}`: one record; `GET /v1/insights/shared/{sharedEventID}`: the
//!   `Start` and (once written) `End` of one Insight;
//! - `GET /v1/stream`: Server-Sent Events, one per Insights record as it is stored (event id: the
//!   store's sequence number), resumable with `Last-Event-ID`.
//!
//! `GET /openapi.json` describes them (OpenAPI 3.1, generated from the handlers; public).
//! Every `/v1` route requires `Authorization: Bearer <token>` (compared in constant time); every error
//! is JSON `{"error":{"code":…,"message":…}}`, naming the bad parameter. Records are the
//! CloudTrail Insights event schema (eventVersion 1.09), exactly as written to the sink.

pub mod error;
mod keys;
mod metrics_data;
pub mod openapi;
pub mod store;
mod stream;
pub mod ui;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;
use trailsight_detector::InsightRecord;
use trailsight_detector::insight::{InsightState, InsightType};

pub use error::ApiError;
pub use store::{After, Filter, Store, StoreError, StoredInsight};

/// `maxResults` when absent.
pub const DEFAULT_MAX_RESULTS: usize = 50;
/// Largest `maxResults`.
pub const MAX_MAX_RESULTS: usize = 1000;

/// The API's shared state: the store, the live feed and the token.
#[derive(Debug)]
pub struct Api {
    store: Arc<Store>,
    events: broadcast::Sender<Arc<StoredInsight>>,
    token: Option<String>,
    /// The tracked keys as the engine last reported them (key id → report), read by `/v1/keys`
    /// without ever touching the engine.
    keys: dashmap::DashMap<String, Arc<trailsight_detector::KeyReport>>,
    /// One permit per open `/v1/stream` connection (at most [`MAX_STREAM_SUBSCRIBERS`]).
    subscribers: Arc<tokio::sync::Semaphore>,
}

/// Most `/v1/stream` connections open at once; one more is answered 503 `too_many_streams`.
pub const MAX_STREAM_SUBSCRIBERS: usize = 256;

impl Api {
    /// An API over `store`; `token` is the bearer token every route requires (`None`: every
    /// request is refused with 401, naming the setting).
    pub fn new(store: Arc<Store>, token: Option<String>) -> Arc<Api> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Api {
            store,
            events,
            token: token.filter(|t| !t.is_empty()),
            keys: dashmap::DashMap::new(),
            subscribers: Arc::new(tokio::sync::Semaphore::new(MAX_STREAM_SUBSCRIBERS)),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stores the records of one Insights file and sends each new one to the live stream's
    /// subscribers. Blocking (SQLite): call it off the async runtime (the engine thread does).
    ///
    /// Returns `Err(StoreError)` when the store cannot be written.
    pub fn record(
        &self,
        account: &str,
        region: &str,
        records: &[InsightRecord],
    ) -> Result<usize, StoreError> {
        let added = self.store.insert(account, region, records)?;
        let n = added.len();
        for a in added {
            // No subscriber is not an error: the stream reads the store on connect.
            let _ = self.events.send(Arc::new(a));
        }
        Ok(n)
    }

    /// Replaces the keys snapshot with `reports` (the engine's [`trailsight_detector::Engine::key_reports`]
    /// after a batch): each key is overwritten in place, keys no longer tracked are removed.
    pub fn update_keys(&self, reports: Vec<trailsight_detector::KeyReport>) {
        let mut seen = std::collections::HashSet::with_capacity(reports.len());
        for r in reports {
            let id = keys::key_id(&r);
            seen.insert(id.clone());
            self.keys.insert(id, Arc::new(r));
        }
        self.keys.retain(|k, _| seen.contains(k));
    }

    /// The routes, under `/v1`, behind the bearer token.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/insights", get(lookup))
            .route("/v1/insights/{event_id}", get(one))
            .route("/v1/insights/shared/{shared_event_id}", get(pair))
            .route("/v1/stream", get(stream::stream))
            .route("/v1/keys", get(keys::keys))
            .route("/v1/metrics-data", get(metrics_data::metrics_data))
            .route_layer(axum::middleware::from_fn_with_state(self.clone(), auth))
            // The analysts' pages: public shells that read the API like any client.
            .merge(ui::routes())
            // The API's description is public (it holds no data).
            .route(
                "/openapi.json",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        openapi::document(),
                    )
                }),
            )
            .with_state(self.clone())
    }
}

/// Requires `Authorization: Bearer <token>` or a valid session cookie ([`ui::valid_session`]).
async fn auth(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let checked = check_bearer(api.token.as_deref(), req.headers()).or_else(|e| {
        // The pages' session cookie (a browser's EventSource cannot send the header).
        let now = chrono::Utc::now().timestamp();
        match api.token.as_deref() {
            Some(t) if ui::valid_session(t, req.headers(), now) => Ok(()),
            _ => Err(e),
        }
    });
    match checked {
        Ok(()) => limits(req, next).await,
        Err(e) => e.into_response(),
    }
}

/// Checks `Authorization: Bearer <token>` against `token` in constant time (`None`: nothing is
/// accepted, and the error says how to set a token).
///
/// Returns `Err(ApiError)` (401) when the header is missing or wrong.
pub fn check_bearer(token: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Err(ApiError::unauthorized(
            "the API is off: set [api] token (or TRAILSIGHT_API_TOKEN) to use it",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(ApiError::unauthorized(
            "missing Authorization: Bearer <token>",
        )),
        Some(t) if bool::from(t.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("wrong token")),
    }
}

impl Api {
    /// The bearer token the API requires, if set.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// Longest query string accepted, bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Longest a look-up may take before it answers 503 (the stream has no limit).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Query length and request time limits.
async fn limits(req: Request, next: Next) -> Response {
    if req.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return ApiError::bad_parameter("query", format!("longer than {MAX_QUERY_BYTES} bytes"))
            .into_response();
    }
    if req.uri().path() == "/v1/stream" {
        return next.run(req).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::unavailable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))
                .into_response()
        }
    }
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Normalizes an RFC 3339 time to the records' `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn time_param(name: &str, value: &str) -> Result<String, ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .map_err(|e| {
            ApiError::bad_parameter(
                name,
                format!("not an RFC 3339 time like 2026-11-28T06:00:00Z: {e}"),
            )
        })
}

/// The opaque page token: hex of `eventTime`, a newline and `eventID`.
fn encode_token(after: &After) -> String {
    hex(&format!("{}\n{}", after.event_time, after.event_id))
}

/// Lower-case hex of `text`'s bytes (page tokens).
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The text of a hex page token, if it is one.
fn unhex(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) || token.len() > 1024 {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn decode_token(token: &str) -> Result<After, ApiError> {
    let bad = || ApiError::bad_parameter("nextToken", "not a token this API returned");
    let text = unhex(token).ok_or_else(bad)?;
    let (event_time, event_id) = text.split_once('\n').ok_or_else(bad)?;
    if chrono::NaiveDateTime::parse_from_str(event_time, "%Y-%m-%dT%H:%M:%SZ").is_err()
        || event_id.is_empty()
    {
        return Err(bad());
    }
    Ok(After {
        event_time: event_time.to_string(),
        event_id: event_id.to_string(),
    })
}

/// `Err` (400 naming it) for a query parameter not in `known`.
pub(crate) fn only_known(q: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::bad_parameter(
            unknown,
            format!("unknown parameter; known: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `maxResults`: 1 to [`MAX_MAX_RESULTS`], default [`DEFAULT_MAX_RESULTS`].
pub(crate) fn max_results(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    max_results_within(q, DEFAULT_MAX_RESULTS, MAX_MAX_RESULTS)
}

/// `maxResults`: 1 to `max`, `default` when absent.
pub(crate) fn max_results_within(
    q: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get("maxResults") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_parameter(
                    "maxResults",
                    format!("must be a whole number from 1 to {max}"),
                )
            }),
    }
}

const LOOKUP_PARAMS: [&str; 10] = [
    "startTime",
    "endTime",
    "account",
    "region",
    "eventSource",
    "eventName",
    "insightType",
    "state",
    "maxResults",
    "nextToken",
];

/// The filter, page start and page size of a look-up query.
fn parse_lookup(q: &HashMap<String, String>) -> Result<(Filter, Option<After>, usize), ApiError> {
    only_known(q, &LOOKUP_PARAMS)?;
    let text = |k: &str| q.get(k).cloned();
    let filter = Filter {
        start_time: q
            .get("startTime")
            .map(|v| time_param("startTime", v))
            .transpose()?,
        end_time: q
            .get("endTime")
            .map(|v| time_param("endTime", v))
            .transpose()?,
        account: text("account"),
        region: text("region"),
        event_source: text("eventSource"),
        event_name: text("eventName"),
        insight_type: q
            .get("insightType")
            .map(|v| match v.as_str() {
                "ApiCallRateInsight" => Ok(InsightType::ApiCallRateInsight),
                "ApiErrorRateInsight" => Ok(InsightType::ApiErrorRateInsight),
                _ => Err(ApiError::bad_parameter(
                    "insightType",
                    "must be ApiCallRateInsight or ApiErrorRateInsight",
                )),
            })
            .transpose()?,
        state: q
            .get("state")
            .map(|v| match v.as_str() {
                "Start" => Ok(InsightState::Start),
                "End" => Ok(InsightState::End),
                _ => Err(ApiError::bad_parameter("state", "must be Start or End")),
            })
            .transpose()?,
    };
    let max = max_results(q)?;
    let after = q.get("nextToken").map(|t| decode_token(t)).transpose()?;
    Ok((filter, after, max))
}

#[utoipa::path(get, path = "/v1/insights", params(openapi::LookupParams),
    responses((status = 200, body = openapi::LookupPage), (status = 400, body = openapi::ErrorBody),
        (status = 401, body = openapi::ErrorBody)))]
async fn lookup(
    State(api): State<Arc<Api>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_parameter("query", e.body_text()))?;
    let (filter, after, max) = parse_lookup(&q)?;
    let store = api.store.clone();
    // One more than the page tells whether there is a next page.
    let mut rows = blocking(move || store.lookup(&filter, after.as_ref(), max + 1)).await?;
    let next = (rows.len() > max).then(|| {
        rows.truncate(max);
        rows.last().map(|r| {
            encode_token(&After {
                event_time: r.record.event_time.clone(),
                event_id: r.record.event_id.clone(),
            })
        })
    });
    let records: Vec<&InsightRecord> = rows.iter().map(|r| &r.record).collect();
    let mut body = json!({ "records": records });
    if let Some(Some(token)) = next {
        body["nextToken"] = json!(token);
    }
    Ok(Json(body).into_response())
}

#[utoipa::path(get, path = "/v1/insights/{event_id}",
    params(("event_id" = String, Path, description = "eventID of the record")),
    responses((status = 200, body = Object, description = "the Insights record"),
        (status = 401, body = openapi::ErrorBody), (status = 404, body = openapi::ErrorBody)))]
async fn one(
    State(api): State<Arc<Api>>,
    Path(event_id): Path<String>,
) -> Result<Response, ApiError> {
    let store = api.store.clone();
    let id = event_id.clone();
    match blocking(move || store.get(&id)).await? {
        Some(r) => Ok(Json(r.record).into_response()),
        None => Err(ApiError::not_found(format!(
            "no Insights record with eventID {event_id:?}"
        ))),
    }
}

#[utoipa::path(get, path = "/v1/insights/shared/{shared_event_id}",
    params(("shared_event_id" = String, Path, description = "sharedEventID of the Insight")),
    responses((status = 200, body = openapi::Pair), (status = 401, body = openapi::ErrorBody),
        (status = 404, body = openapi::ErrorBody)))]
async fn pair(
    State(api): State<Arc<Api>>,
    Path(shared): Path<String>,
) -> Result<Response, ApiError> {
    let store = api.store.clone();
    let id = shared.clone();
    let rows = blocking(move || store.pair(&id)).await?;
    if rows.is_empty() {
        return Err(ApiError::not_found(format!(
            "no Insight with sharedEventID {shared:?}"
        )));
    }
    let records: Vec<&InsightRecord> = rows.iter().map(|r| &r.record).collect();
    Ok(Json(json!({ "records": records })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_bad_ones_are_named() {
        let a = After {
            event_time: "2026-11-10T14:05:00Z".into(),
            event_id: "6f1b3c2e-0000-5000-8000-000000000001".into(),
        };
        assert_eq!(decode_token(&encode_token(&a)).unwrap(), a);
        for bad in [
            "",
            "zz",
            "abc",
            "0a",
            &encode_token(&After {
                event_time: "yesterday".into(),
                event_id: "x".into(),
            }),
        ] {
            let e = decode_token(bad).unwrap_err();
            assert!(e.to_string().contains("nextToken"), "{bad}: {e}");
        }
    }

    /// The status line of `GET path` over real HTTP/1.1.
    async fn status_of(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t0ken-0123456789\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[tokio::test]
    async fn one_stream_more_than_the_cap_is_refused_until_one_closes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.sqlite")).unwrap());
        let api = Api::new(store, Some("t0ken-0123456789".into()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = api.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        // Every permit but one is held, as by open streams.
        let held = api
            .subscribers
            .clone()
            .try_acquire_many_owned(u32::try_from(MAX_STREAM_SUBSCRIBERS - 1).unwrap())
            .unwrap();
        assert_eq!(status_of(addr, "/v1/stream").await, "HTTP/1.1 200 OK");
        // That stream's connection was closed by the client: its permit comes back.
        let started = std::time::Instant::now();
        while api.subscribers.available_permits() == 0 {
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let last = api.subscribers.clone().try_acquire_owned().unwrap();
        assert_eq!(
            status_of(addr, "/v1/stream").await,
            "HTTP/1.1 503 Service Unavailable"
        );
        drop((held, last));
        assert_eq!(status_of(addr, "/v1/stream").await, "HTTP/1.1 200 OK");
    }
}
