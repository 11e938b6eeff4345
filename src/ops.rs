//! HTTP for operators, served by `trailsight serve` on `[serve] listen` (loopback by default):
//!
//! - `GET /metrics`: the Prometheus text exposition format ([`crate::metrics`]), with the
//!   encoder's own content type (`text/plain; version=0.0.4`);
//! - `GET /healthz`: 200 `{"status":"alive"}` while the process serves requests;
//! - `GET /readyz`: 200 `{"ready":true}` once the state is loaded and the last poll listed every
//!   source (and, once it ended, its files went through), else 503
//!   `{"ready":false,"reason":"…"}`.
//!
//! Other paths answer 404 with a JSON body.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::metrics::{Event, Metrics};

/// What `/readyz` answers from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Readiness {
    state_loaded: bool,
    /// `None` before the first poll; `Some(Err(reason))` when the last poll failed.
    last_poll: Option<Result<(), String>>,
}

/// The state the operator endpoints share with the service loop.
#[derive(Debug)]
pub struct Ops {
    metrics: Arc<Metrics>,
    readiness: Mutex<Readiness>,
}

impl Ops {
    /// Endpoints over `metrics`; not ready until [`Ops::state_loaded`] and a successful poll.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        metrics.emit(Event::Ready(false));
        Ops {
            metrics,
            readiness: Mutex::new(Readiness::default()),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn update(&self, f: impl FnOnce(&mut Readiness)) {
        let mut r = self
            .readiness
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut r);
        let ready = r.state_loaded && matches!(r.last_poll, Some(Ok(())));
        drop(r);
        self.metrics.emit(Event::Ready(ready));
    }

    /// The checkpoint is loaded (or a new state made).
    pub fn state_loaded(&self) {
        self.update(|r| r.state_loaded = true);
    }

    /// A poll ended: `Ok` when it reached every source and its files went through, else why not.
    pub fn poll_ended(&self, result: Result<(), String>) {
        self.update(|r| r.last_poll = Some(result));
    }

    /// `Ok` when ready, else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        let r = self
            .readiness
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !r.state_loaded {
            return Err("the state is not loaded yet".into());
        }
        match &r.last_poll {
            None => Err("no poll has ended yet".into()),
            Some(Ok(())) => Ok(()),
            Some(Err(reason)) => Err(format!("the last poll failed: {reason}")),
        }
    }
}

/// The operator routes, with `extra` (the API's `/v1` routes) merged in; unknown paths answer a
/// JSON 404 and other methods a JSON 405.
///
/// With `token` set, the operator routes require it as a bearer token too (see
/// `[api] protect_operator_routes`).
pub fn router(ops: Arc<Ops>, extra: Router, token: Option<String>) -> Router {
    let mut routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if let Some(token) = token {
        routes = routes.route_layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let token = token.clone();
                async move {
                    match trailsight_api::check_bearer(Some(&token), req.headers()) {
                        Ok(()) => next.run(req).await,
                        Err(e) => e.into_response(),
                    }
                }
            },
        ));
    }
    routes
        .with_state(ops.clone())
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(ops, track))
}

/// Counts each request by matched route (never the raw path: its values come from the client)
/// and status, and times it to the response head.
async fn track(
    State(ops): State<Arc<Ops>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    ops.metrics.emit(Event::HttpRequest {
        route: &route,
        status: response.status().as_u16(),
        seconds: started.elapsed().as_secs_f64(),
    });
    response
}

async fn method_not_allowed() -> Response {
    trailsight_api::ApiError::method_not_allowed().into_response()
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    let (content_type, body) = ops.metrics.encode();
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn healthz() -> Response {
    Json(serde_json::json!({"status": "alive"})).into_response()
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    match ops.readiness() {
        Ok(()) => Json(serde_json::json!({"ready": true})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}

async fn not_found() -> Response {
    trailsight_api::ApiError::not_found(
        "no such route: see /metrics, /healthz, /readyz and /v1/insights, /v1/stream",
    )
    .into_response()
}

/// Serves the operator routes (and `extra`) on `listener` until `shutdown` completes.
///
/// Returns `Err` when the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ops: Arc<Ops>,
    extra: Router,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ops, extra, token))
        .with_graceful_shutdown(shutdown)
        .await
}
