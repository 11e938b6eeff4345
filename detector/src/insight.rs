//! Insights event records: the output schema.
//!
//! Schema: CloudTrail Insights event, eventVersion 1.09, trail (S3) flavour
//! (spec §2): `eventType: AwsCloudTrailInsight`, `eventCategory: Insight`,
//! `insightDetails` with `state`, `eventSource`, `eventName`, `insightType`,
//! `errorCode` (error rate only), `insightContext.statistics` and
//! `insightContext.attributions`. All `average`s are per minute; durations are
//! minutes.
//!
//! The same types read AWS's own Insights records: every field that AWS has
//! omitted in some published example is optional, and a field absent on input
//! stays absent on output. Field order follows AWS's examples, so output is
//! byte-stable.

use serde::{Deserialize, Serialize, Serializer};

/// `eventVersion` written by trailsight.
pub const EVENT_VERSION: &str = "1.09";
/// `eventType` of every Insights record.
pub const EVENT_TYPE: &str = "AwsCloudTrailInsight";
/// `eventCategory` of every Insights record.
pub const EVENT_CATEGORY: &str = "Insight";

/// One Insights event record (a `Start` or an `End`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsightRecord {
    /// `"1.09"` for records written by trailsight.
    pub event_version: String,
    /// Minute-aligned UTC time the Insight started (`Start`) or ended (`End`).
    pub event_time: String,
    /// Region of the source events.
    pub aws_region: String,
    /// Unique per record (`Start` and `End` differ). trailsight: UUID v5 of the Insight key, start minute and state.
    #[serde(rename = "eventID")]
    pub event_id: String,
    /// `"AwsCloudTrailInsight"`.
    pub event_type: String,
    /// Account of the source events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_account_id: Option<String>,
    /// Shared by the `Start` and `End` of one Insight.
    #[serde(rename = "sharedEventID")]
    pub shared_event_id: String,
    /// What the Insight is about.
    pub insight_details: InsightDetails,
    /// `"Insight"`.
    pub event_category: String,
}

/// `Start` or `End`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InsightState {
    /// The first record of an Insight.
    Start,
    /// The closing record of an Insight.
    End,
}

/// `ApiCallRateInsight` or `ApiErrorRateInsight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InsightType {
    /// Unusual rate of write management API calls.
    ApiCallRateInsight,
    /// Unusual rate of management API calls that returned an `errorCode`.
    ApiErrorRateInsight,
}

/// `insightDetails`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsightDetails {
    /// `Start` or `End`.
    pub state: InsightState,
    /// `eventSource` of the source events.
    pub event_source: String,
    /// `eventName` of the source events.
    pub event_name: String,
    /// Call rate or error rate.
    pub insight_type: InsightType,
    /// The error code, for `ApiErrorRateInsight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// `"Management"` for management-event Insights (newer AWS records carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event_category: Option<String>,
    /// `insightContext`.
    pub insight_context: InsightContext,
}

/// `insightContext`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsightContext {
    /// Baseline and insight rates and durations.
    pub statistics: Statistics,
    /// Top contributors (absent in AWS's 2019 records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributions: Option<Vec<Attribution>>,
}

/// `insightContext.statistics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    /// Calls (or errors) per minute over the baseline window.
    pub baseline: Average,
    /// Calls (or errors) per minute over the insight window.
    pub insight: Average,
    /// Insight window length, minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insight_duration: Option<u64>,
    /// Baseline window length, minutes (≥ 10080 once a week of history exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_duration: Option<u64>,
}

/// `{ "average": <per minute> }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Average {
    /// Per-minute average.
    #[serde(serialize_with = "serialize_average")]
    pub average: f64,
}

/// One attribution block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// `userIdentityArn`, `userAgent` or `errorCode`.
    pub attribute: String,
    /// Top values during the Insight, average descending.
    pub insight: Vec<AttributionValue>,
    /// Top values during the baseline, average descending (may be empty).
    pub baseline: Vec<AttributionValue>,
}

/// One attributed value and its per-minute average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionValue {
    /// The attribute's value (`"null"` for calls without an error code).
    pub value: String,
    /// Per-minute average.
    #[serde(serialize_with = "serialize_average")]
    pub average: f64,
}

/// Writes whole numbers as JSON integers (`664`, as AWS does) and others as floats.
fn serialize_average<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// Rounds a per-minute average to 6 significant digits (AWS publishes values like `8.82145e-05`).
pub fn round_average(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() { v } else { 0.0 };
    }
    let digits = 6 - 1 - v.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits);
    let r = (v * scale).round() / scale;
    // Re-parse through the shortest representation so the JSON text is short and stable.
    format!("{r:.*}", digits.max(0) as usize)
        .parse()
        .unwrap_or(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_round_to_six_significant_digits() {
        assert_eq!(round_average(8.821451234e-05), 8.82145e-05);
        assert_eq!(round_average(85.42023809523), 85.4202);
        assert_eq!(round_average(664.0), 664.0);
        assert_eq!(round_average(0.0), 0.0);
        assert_eq!(round_average(100.0 / 23.0), 4.34783);
    }

    #[test]
    fn whole_averages_are_integers() {
        let a = Average { average: 664.0 };
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"average":664}"#);
        let a = Average { average: 0.6 };
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"average":0.6}"#);
    }
}
