//! `GET /v1/keys?account&region&eventSource&eventName&state&maxResults&nextToken`: the tracked rate
//! keys, sorted by (account, Region, eventSource, eventName, errorCode), each with its state
//! (`warmingUp`, `normal`, `inInsight`), history, baseline and recent rate, read from the
//! snapshot the service updates after each batch (a `DashMap`; the engine is never locked).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;
use trailsight_detector::KeyReport;

use crate::{Api, ApiError, hex, max_results, only_known, unhex};

/// The sort key and id of a key: its fields joined by a separator no field holds (keys are
/// validated: no control characters).
pub(crate) fn key_id(r: &KeyReport) -> String {
    [
        r.account.as_str(),
        &r.region,
        &r.event_source,
        &r.event_name,
        r.error_code.as_deref().unwrap_or(""),
    ]
    .join("\u{1f}")
}

const PARAMS: [&str; 7] = [
    "account",
    "region",
    "eventSource",
    "eventName",
    "state",
    "maxResults",
    "nextToken",
];

#[utoipa::path(get, path = "/v1/keys", params(crate::openapi::KeysParams),
    responses((status = 200, body = crate::openapi::KeysPage), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody)))]
pub(crate) async fn keys(
    State(api): State<Arc<Api>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_parameter("query", e.body_text()))?;
    only_known(&q, &PARAMS)?;
    if let Some(s) = q.get("state")
        && !["warmingUp", "normal", "inInsight"].contains(&s.as_str())
    {
        return Err(ApiError::bad_parameter(
            "state",
            "must be warmingUp, normal or inInsight",
        ));
    }
    let max = max_results(&q)?;
    let after = q
        .get("nextToken")
        .map(|t| {
            unhex(t).ok_or_else(|| {
                ApiError::bad_parameter("nextToken", "not a token this API returned")
            })
        })
        .transpose()?;
    let matches = |r: &KeyReport| {
        let eq = |k: &str, v: &str| q.get(k).is_none_or(|want| want == v);
        eq("account", &r.account)
            && eq("region", &r.region)
            && eq("eventSource", &r.event_source)
            && eq("eventName", &r.event_name)
            && eq("state", r.state)
    };
    let mut page: Vec<(String, Arc<KeyReport>)> = api
        .keys
        .iter()
        .filter(|e| after.as_ref().is_none_or(|a| e.key() > a) && matches(e.value()))
        .map(|e| (e.key().clone(), e.value().clone()))
        .collect();
    page.sort_by(|a, b| a.0.cmp(&b.0));
    let next = (page.len() > max).then(|| hex(&page[max - 1].0));
    page.truncate(max);
    let keys: Vec<&KeyReport> = page.iter().map(|(_, r)| r.as_ref()).collect();
    let mut body = json!({ "keys": keys });
    // Every minute before this one is closed: where a series ends (e.g. "the last 24 hours").
    let store = api.store().clone();
    if let Some(m) = crate::blocking(move || store.series_closed_before()).await? {
        body["closedBefore"] = json!(trailsight_detector::time::format_minute(m));
    }
    if let Some(token) = next {
        body["nextToken"] = json!(token);
    }
    Ok(Json(body).into_response())
}
