//! `GET /v1/metrics-data`: the series behind an Insight, with CloudTrail's
//! `ListInsightsMetricData` semantics — one key (account, Region, `eventSource`, `eventName`,
//! `insightType`, and `errorCode` for an error-rate key), `period` 60, 300 or 3600 seconds,
//! `dataType` `FillWithZeros` or `NonZeroData`, `startTime` inclusive and `endTime` exclusive —
//! and, beside each value, the detector's expected value and the top of its band for that
//! bucket (see [`crate::store::SeriesPoint`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;
use trailsight_detector::SeriesKey;
use trailsight_detector::time::format_minute;

use crate::store::{DataType, MAX_POINTS, SeriesError, SeriesQuery};
use crate::{Api, ApiError, hex, max_results_within, only_known, time_param, unhex};

const PARAMS: [&str; 12] = [
    "account",
    "region",
    "eventSource",
    "eventName",
    "insightType",
    "errorCode",
    "startTime",
    "endTime",
    "period",
    "dataType",
    "maxResults",
    "nextToken",
];

/// Default span when `startTime` is not given: 90 days before `endTime` (as CloudTrail).
const DEFAULT_SPAN_MINUTES: i64 = 90 * 1440;

fn minute_of(name: &str, v: &str, round_up: bool) -> Result<i64, ApiError> {
    let text = time_param(name, v)?;
    let t = chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%SZ")
        .map_err(|e| ApiError::bad_parameter(name, e))?
        .and_utc()
        .timestamp();
    Ok(if round_up {
        t.div_euclid(60) + i64::from(t.rem_euclid(60) != 0)
    } else {
        t.div_euclid(60)
    })
}

/// The query of a request.
pub(crate) fn parse(q: &HashMap<String, String>, now_minute: i64) -> Result<SeriesQuery, ApiError> {
    only_known(q, &PARAMS)?;
    let required = |k: &str| {
        q.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| ApiError::bad_parameter(k, "required"))
    };
    let (account, region, event_source, event_name) = (
        required("account")?,
        required("region")?,
        required("eventSource")?,
        required("eventName")?,
    );
    let error_code = match required("insightType")?.as_str() {
        "ApiCallRateInsight" => match q.get("errorCode") {
            Some(_) => {
                return Err(ApiError::bad_parameter(
                    "errorCode",
                    "only with insightType=ApiErrorRateInsight",
                ));
            }
            None => None,
        },
        "ApiErrorRateInsight" => Some(required("errorCode")?),
        _ => {
            return Err(ApiError::bad_parameter(
                "insightType",
                "must be ApiCallRateInsight or ApiErrorRateInsight",
            ));
        }
    };
    let period_minutes = match q.get("period").map(String::as_str) {
        None | Some("3600") => 60,
        Some("300") => 5,
        Some("60") => 1,
        Some(_) => return Err(ApiError::bad_parameter("period", "must be 60, 300 or 3600")),
    };
    let data_type = match q.get("dataType").map(String::as_str) {
        None | Some("FillWithZeros") => DataType::FillWithZeros,
        Some("NonZeroData") => DataType::NonZeroData,
        Some(_) => {
            return Err(ApiError::bad_parameter(
                "dataType",
                "must be FillWithZeros or NonZeroData",
            ));
        }
    };
    let max_points = max_results_within(q, MAX_POINTS, MAX_POINTS)?;
    let end_minute = q
        .get("endTime")
        .map(|v| minute_of("endTime", v, true))
        .transpose()?
        .unwrap_or(now_minute);
    let mut start_minute = q
        .get("startTime")
        .map(|v| minute_of("startTime", v, false))
        .transpose()?
        .unwrap_or(end_minute.saturating_sub(DEFAULT_SPAN_MINUTES));
    if start_minute >= end_minute {
        return Err(ApiError::bad_parameter(
            "startTime",
            "must be before endTime",
        ));
    }
    if let Some(token) = q.get("nextToken") {
        let bad = || ApiError::bad_parameter("nextToken", "not a token this API returned");
        let next = unhex(token)
            .and_then(|t| t.strip_prefix("m:").and_then(|m| m.parse::<i64>().ok()))
            .filter(|m| (start_minute..end_minute).contains(m) && m % period_minutes == 0)
            .ok_or_else(bad)?;
        start_minute = next;
    }
    Ok(SeriesQuery {
        key: SeriesKey {
            account,
            region,
            event_source,
            event_name,
            error_code,
        },
        start_minute,
        end_minute,
        period_minutes,
        data_type,
        max_points,
    })
}

#[utoipa::path(get, path = "/v1/metrics-data", params(crate::openapi::MetricsDataParams),
    responses((status = 200, body = crate::openapi::MetricsData), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub(crate) async fn metrics_data(
    State(api): State<Arc<Api>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_parameter("query", e.body_text()))?;
    let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
    let query = parse(&q, now_minute)?;
    let store = api.store().clone();
    let asked = query.clone();
    let page = tokio::task::spawn_blocking(move || store.series(&asked))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
        .map_err(|e| match e {
            SeriesError::PeriodNotKept { .. } => ApiError::bad_parameter("period", e),
            SeriesError::Store(e) => ApiError::internal(e.to_string()),
        })?
        .ok_or_else(|| {
            ApiError::not_found(
                "no series for this key (tracked keys are listed at /v1/keys; keys without an \
                 Insight keep a few days of series)",
            )
        })?;
    let k = &query.key;
    let mut body = json!({
        "account": k.account,
        "region": k.region,
        "eventSource": k.event_source,
        "eventName": k.event_name,
        "insightType": if k.error_code.is_some() { "ApiErrorRateInsight" } else { "ApiCallRateInsight" },
        "period": query.period_minutes * 60,
        "dataType": match query.data_type {
            DataType::FillWithZeros => "FillWithZeros",
            DataType::NonZeroData => "NonZeroData",
        },
        "timestamps": page.points.iter().map(|p| format_minute(p.minute)).collect::<Vec<_>>(),
        "values": page.points.iter().map(|p| p.calls).collect::<Vec<_>>(),
        "expected": page.points.iter().map(|p| p.expected).collect::<Vec<_>>(),
        "upper": page.points.iter().map(|p| p.upper).collect::<Vec<_>>(),
    });
    if let Some(code) = &k.error_code {
        body["errorCode"] = json!(code);
    }
    if let Some(next) = page.next_minute {
        body["nextToken"] = json!(hex(&format!("m:{next}")));
    }
    Ok(Json(body).into_response())
}
