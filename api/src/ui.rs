//! The analysts' pages, served at `/`: the Insights list (live from `/v1/stream`), an Insight's
//! detail (its rate with the detector's expected value and band, the Insight window shaded,
//! attributions, the records' JSON and the queries for the records behind it) and the tracked
//! keys.
//!
//! The HTML is rendered here (maud) and holds no data: the page's script reads everything from
//! the public `/v1` API, so the pages show exactly what any other client would get. Charts are
//! uPlot 1.6.32 (MIT, from the npm registry, in `api/assets/`), served from the binary.
//!
//! Auth: the browser trades the bearer token once for a session cookie (`POST /session` with
//! `Authorization: Bearer …`): `HttpOnly`, `SameSite=Strict`, valid [`SESSION_SECONDS`], a MAC
//! of its expiry under the token (no server state; changing the token ends every session). The
//! cookie authorizes `/v1` reads, and the live stream, which a browser `EventSource` cannot
//! send an `Authorization` header to.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use maud::{DOCTYPE, Markup, html};
use subtle::ConstantTimeEq;

use crate::{Api, ApiError, check_bearer};

/// How long a session cookie is valid.
pub const SESSION_SECONDS: i64 = 12 * 3600;
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "trailsight_session";

const UPLOT_JS: &str = include_str!("../assets/uplot-1.6.32/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot-1.6.32/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../assets/uplot-1.6.32/LICENSE");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

fn mac(token: &str, expiry: i64) -> String {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut m) = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    m.update(format!("trailsight-session:{expiry}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// A session cookie value for `token`, valid until `expiry` (Unix seconds).
pub fn session_value(token: &str, expiry: i64) -> String {
    format!("{expiry}.{}", mac(token, expiry))
}

/// True when the request carries a session cookie made with `token` that has not expired
/// (MAC compared in constant time).
pub fn valid_session(token: &str, headers: &HeaderMap, now: i64) -> bool {
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    for pair in cookies.flat_map(|c| c.split(';')) {
        let Some((name, value)) = pair.trim().split_once('=') else {
            continue;
        };
        if name != SESSION_COOKIE {
            continue;
        }
        let Some((expiry, given)) = value.split_once('.') else {
            continue;
        };
        let Ok(expiry) = expiry.parse::<i64>() else {
            continue;
        };
        if expiry > now && bool::from(given.as_bytes().ct_eq(mac(token, expiry).as_bytes())) {
            return true;
        }
    }
    false
}

/// `POST /session`: with the right bearer token, a session cookie.
async fn session(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_bearer(api.token(), &headers)?;
    let token = api.token().unwrap_or_default();
    let expiry = chrono::Utc::now().timestamp() + SESSION_SECONDS;
    // Behind a TLS proxy the cookie never travels in clear text.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{}",
        session_value(token, expiry),
        if secure { "; Secure" } else { "" }
    );
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The pages' Content Security Policy: their own script and styles only (uPlot sets element
/// styles from script), no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'self'";

/// The page frame: navigation, a sign-in form the script shows on 401, and `main`.
fn page(title: &str, page: &str, body: Markup) -> Response {
    let html = Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · trailsight" }
                    link rel="stylesheet" href="/assets/uplot.css";
                    link rel="stylesheet" href="/assets/app.css";
                }
                body data-page=(page) {
                    header {
                        nav aria-label="Main" {
                            a.brand href="/" { "trailsight" }
                            a href="/" aria-current=[(page == "list").then_some("page")] { "Insights" }
                            a href="/keys" aria-current=[(page == "keys").then_some("page")] { "Tracked keys" }
                        }
                    }
                    form #signin hidden aria-labelledby="signin-title" {
                        h2 #signin-title { "Sign in" }
                        p { "The API needs its bearer token ([api] token or TRAILSIGHT_API_TOKEN)." }
                        label for="signin-token" { "API token" }
                        input #signin-token type="password" autocomplete="current-password" required;
                        button type="submit" { "Sign in" }
                        p #signin-error role="alert" {}
                    }
                    main #main { (body) }
                    p #status role="status" aria-live="polite" {}
                    script src="/assets/uplot.js" {}
                    script src="/assets/app.js" {}
                }
            }
        }
        .into_string(),
    );
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

async fn list_page() -> Response {
    page(
        "Insights",
        "list",
        html! {
            h1 { "Insights" }
            form #filters aria-label="Filter Insights" {
                div {
                    label for="f-start" { "From (UTC)" }
                    input #f-start name="startTime" type="text" placeholder="2026-11-10T00:00:00Z";
                }
                div {
                    label for="f-end" { "To (UTC)" }
                    input #f-end name="endTime" type="text" placeholder="2026-11-11T00:00:00Z";
                }
                div {
                    label for="f-account" { "Account" }
                    input #f-account name="account" type="text" inputmode="numeric";
                }
                div {
                    label for="f-region" { "Region" }
                    input #f-region name="region" type="text";
                }
                div {
                    label for="f-source" { "eventSource" }
                    input #f-source name="eventSource" type="text";
                }
                div {
                    label for="f-name" { "eventName" }
                    input #f-name name="eventName" type="text";
                }
                div {
                    label for="f-type" { "Insight type" }
                    select #f-type name="insightType" {
                        option value="" { "Any" }
                        option value="ApiCallRateInsight" { "ApiCallRateInsight" }
                        option value="ApiErrorRateInsight" { "ApiErrorRateInsight" }
                    }
                }
                div {
                    label for="f-status" { "Status" }
                    select #f-status name="status" {
                        option value="" { "Open or ended" }
                        option value="open" { "Open" }
                        option value="ended" { "Ended" }
                    }
                }
                button type="submit" { "Filter" }
            }
            table #insights aria-describedby="insights-caption" {
                caption #insights-caption { "Newest first; new Insights appear as they are written." }
                thead {
                    tr {
                        th scope="col" { "API" }
                        th scope="col" { "Type" }
                        th scope="col" { "Account / Region" }
                        th scope="col" { "Start (UTC)" }
                        th scope="col" { "Duration" }
                        th scope="col" { "Baseline /min" }
                        th scope="col" { "Insight /min" }
                        th scope="col" { "Ratio" }
                        th scope="col" { "Top principal" }
                    }
                }
                tbody {}
            }
        },
    )
}

async fn detail_page(Path(shared_event_id): Path<String>) -> Response {
    page(
        "Insight",
        "detail",
        html! {
            h1 #title data-shared-event-id=(shared_event_id) { "Insight" }
            p #summary {}
            section aria-labelledby="chart-title" {
                h2 #chart-title { "Rate around the Insight" }
                p.hint { "Drag across the chart to zoom, double-click to zoom out. The shaded span is the Insight; the band runs from the expected value to the count the detector calls unusual." }
                div #chart role="img" aria-label="Calls per minute with the baseline's expected value and band" {}
            }
            section aria-labelledby="attr-title" {
                h2 #attr-title { "Attributions: insight vs baseline" }
                div #attributions {}
            }
            section aria-labelledby="records-title" {
                h2 #records-title { "The records behind it" }
                div #queries {}
            }
            section aria-labelledby="json-title" {
                h2 #json-title { "Start and End records" }
                div #json {}
            }
        },
    )
}

async fn keys_page() -> Response {
    page(
        "Tracked keys",
        "keys",
        html! {
            h1 { "Tracked keys" }
            p.hint { "Every API the detector tracks per account and Region, with the last 24 hours of calls (hourly) and its state." }
            table #keys {
                thead {
                    tr {
                        th scope="col" { "Account / Region" }
                        th scope="col" { "API" }
                        th scope="col" { "Type" }
                        th scope="col" { "State" }
                        th scope="col" { "Baseline /min" }
                        th scope="col" { "Recent /min" }
                        th scope="col" { "Last 24 h" }
                    }
                }
                tbody {}
            }
        },
    )
}

/// The pages, their assets and `POST /session` (no bearer token: the pages hold no data).
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/", get(list_page))
        .route("/insight/{shared_event_id}", get(detail_page))
        .route("/keys", get(keys_page))
        .route("/session", post(session))
        .route(
            "/assets/uplot.js",
            get(|| async { asset("text/javascript; charset=utf-8", UPLOT_JS) }),
        )
        .route(
            "/assets/uplot.css",
            get(|| async { asset("text/css; charset=utf-8", UPLOT_CSS) }),
        )
        .route(
            "/assets/uplot-LICENSE.txt",
            get(|| async { asset("text/plain; charset=utf-8", UPLOT_LICENSE) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("other=1; {SESSION_COOKIE}={value}")
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn a_session_is_valid_for_its_token_until_it_expires() {
        let v = session_value("secret-token", 1_000);
        assert!(valid_session("secret-token", &with_cookie(&v), 999));
        assert!(
            !valid_session("secret-token", &with_cookie(&v), 1_000),
            "expired"
        );
        assert!(
            !valid_session("other-token", &with_cookie(&v), 999),
            "token changed"
        );
        let forged = format!("2000.{}", v.split_once('.').unwrap().1);
        assert!(
            !valid_session("secret-token", &with_cookie(&forged), 999),
            "expiry moved"
        );
        assert!(!valid_session("secret-token", &HeaderMap::new(), 999));
        assert!(!valid_session("secret-token", &with_cookie("garbage"), 999));
    }
}
