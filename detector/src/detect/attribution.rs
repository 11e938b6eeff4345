//! Attributions (who and what made the calls) and the `Start`/`End` transitions that carry them.

use trailsight_baseline::{BaselineStats, WindowedTopK};

use crate::aggregate::{AttributionCounts, RateKey, Sym, ValueCounts};

use super::{OpenInsight, Transition};

/// Attribution values reported per attribute (as AWS).
pub const ATTRIBUTION_VALUES: usize = 5;

/// The three attributes, in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// `userIdentityArn`.
    UserIdentityArn,
    /// `userAgent`.
    UserAgent,
    /// `errorCode` (call rate only).
    ErrorCode,
}

impl Attribute {
    /// The attribute's name in Insights records.
    pub fn name(self) -> &'static str {
        match self {
            Attribute::UserIdentityArn => "userIdentityArn",
            Attribute::UserAgent => "userAgent",
            Attribute::ErrorCode => "errorCode",
        }
    }
}

/// Top values of one attribute, `(value, per-minute average)`, average descending.
pub type TopValues = Vec<(Sym, f64)>;

/// What a transition reports about one attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributionSummary {
    /// The attribute.
    pub attribute: Attribute,
    /// Top values during the insight window.
    pub insight: TopValues,
    /// Top values during the baseline window.
    pub baseline: TopValues,
}

/// The top [`ATTRIBUTION_VALUES`] of `values`, as per-minute averages over `minutes`.
pub fn top_values(values: &ValueCounts, minutes: u64) -> TopValues {
    let mut v: Vec<(Sym, u32)> = values.clone();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(ATTRIBUTION_VALUES);
    let m = minutes.max(1) as f64;
    v.into_iter().map(|(s, n)| (s, f64::from(n) / m)).collect()
}

/// Baseline attributions since minute `from`, as per-minute averages that add up to
/// `stats.average`: the daily summaries cover whole days, so they are scaled to the calls of
/// the exact baseline window. The `errorCode` slot stays empty for error-rate keys.
pub fn baseline_attributions(
    summaries: &mut [WindowedTopK<Sym>; 3],
    from: i64,
    stats: &BaselineStats,
    is_error: bool,
) -> [TopValues; 3] {
    let base_minutes = f64::from(stats.minutes.max(1));
    let mut out: [TopValues; 3] = Default::default();
    for (i, slot) in out.iter_mut().enumerate() {
        if i == 2 && is_error {
            continue;
        }
        let (top, total) = summaries[i].top_since(from, ATTRIBUTION_VALUES);
        let scale = if total == 0 {
            0.0
        } else {
            stats.calls as f64 / total as f64
        };
        *slot = top
            .into_iter()
            .map(|(s, n)| (s, n as f64 * scale / base_minutes))
            .collect();
    }
    out
}

/// The `Start` (`start == true`) or `End` record of `insight`, with `event_minute` the record's
/// minute (for an `End`, the minute after the last unusual one) and `decided` the closed minute
/// that decided it.
pub fn transition(
    key: RateKey,
    start: bool,
    insight: &OpenInsight,
    event_minute: i64,
    decided: i64,
) -> Transition {
    let last = if start {
        event_minute.max(insight.last_active)
    } else {
        event_minute - 1
    };
    let minutes = (last - insight.start + 1).max(1) as u64;
    let mut counts = AttributionCounts::default();
    let mut calls = 0u64;
    for (minute, s) in &insight.minutes {
        if *minute <= last {
            calls += u64::from(s.count);
            counts.merge(&s.attributions);
        }
    }
    let mut attributions = vec![
        AttributionSummary {
            attribute: Attribute::UserIdentityArn,
            insight: top_values(&counts.principal, minutes),
            baseline: insight.baseline_attributions[0].clone(),
        },
        AttributionSummary {
            attribute: Attribute::UserAgent,
            insight: top_values(&counts.user_agent, minutes),
            baseline: insight.baseline_attributions[1].clone(),
        },
    ];
    if key.error_code.is_none() {
        attributions.push(AttributionSummary {
            attribute: Attribute::ErrorCode,
            insight: top_values(&counts.error_code, minutes),
            baseline: insight.baseline_attributions[2].clone(),
        });
    }
    Transition {
        key,
        start,
        insight_start: insight.start,
        event_minute: if start { insight.start } else { event_minute },
        decided_minute: decided,
        insight_calls: calls,
        insight_minutes: minutes,
        baseline: insight.baseline,
        attributions,
    }
}
