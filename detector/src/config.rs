//! Detection settings (the `[detector]` table of the config file).

use serde::{Deserialize, Serialize};

use crate::policy::{
    KeyPolicy, Override, Policy, PrincipalSuppression, Sensitivity, default_sensitive_apis,
};

/// Most test windows a configuration may list.
pub const MAX_WINDOWS: usize = 16;

/// How trailsight aggregates, baselines and decides. Every field has a default;
/// unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Minutes a minute stays open for late records after the newest `eventTime`
    /// seen (the watermark). Records for a closed minute are counted as late,
    /// reported, and added to the baseline only. Default 15.
    pub allowed_lateness_minutes: u32,
    /// Baseline window, minutes. Default 10080 (7 days, as AWS's `baselineDuration`).
    pub baseline_window_minutes: u32,
    /// History an account and Region must have before any of its keys can raise
    /// an Insight, minutes. Default 2160 (36 hours, as AWS).
    pub warmup_minutes: u32,
    /// Trailing test windows, minutes. Default `[1, 5, 15, 60, 360]`. Windows up to an hour
    /// are the short windows (a key's calls join its baseline only after leaving them);
    /// longer ones are tested on keys with at most `RECENT_CAP` (64) active minutes in them.
    pub windows_minutes: Vec<u32>,
    /// Global sensitivity: `low`, `medium` or `high`, a false-alarm budget of 0.01, 0.1 or 1
    /// expected false Insights per key per 30 days. Sets `tail_probability` (the budget over
    /// the 43,200 minutes of 30 days) and `min_ratio` (5, 3, 2) unless those are given.
    /// Default `medium`.
    pub sensitivity: Sensitivity,
    /// Tail probability below which a closed minute is significant, for all
    /// windows together (each window is tested at this value divided by the
    /// number of windows: Bonferroni). Default: from `sensitivity` (medium:
    /// 0.1 / 43,200 ≈ 2.3e-6).
    pub tail_probability: Option<f64>,
    /// Minimum calls (or errors) in the triggering window. Default 3.
    pub min_count: u32,
    /// Minimum ratio of the window's rate to the baseline rate. Default: from `sensitivity` (3).
    pub min_ratio: Option<f64>,
    /// APIs (`eventSource:eventName` globs) whose first burst matters even with no
    /// history; they use `sensitive_min_count`. Default: a list of IAM, STS,
    /// CloudTrail, KMS, Organizations, S3 policy and snapshot-sharing APIs.
    pub sensitive_apis: Vec<String>,
    /// Minimum calls in the triggering window for sensitive APIs. Default 2.
    pub sensitive_min_count: u32,
    /// Per-key overrides and suppressions (`[[detector.overrides]]`), applied in order.
    pub overrides: Vec<Override>,
    /// Principals whose calls are not counted (`[[detector.ignore_principals]]`).
    pub ignore_principals: Vec<PrincipalSuppression>,
    /// Tail probability under which a minute still counts as unusual while an
    /// Insight is open (1- and 5-minute windows). Default 0.01.
    pub end_tail_probability: f64,
    /// An Insight ends after this many consecutive minutes back at baseline. Default 5.
    pub end_after_quiet_minutes: u32,
    /// An Insight open this long is a level shift: it ends and its minutes join
    /// the baseline, which becomes the new normal. Minutes; default 1440.
    pub max_insight_minutes: u32,
    /// Floor of every baseline rate, calls per minute: a key with no or little
    /// history is judged as if called at least this often. Default 1/10080
    /// (once a week; AWS's sparse example has a baseline of 8.8e-5).
    pub min_baseline_rate: f64,
    /// Learn daily and weekly profiles of each key's rate, so recurring
    /// activity (a nightly deploy, a weekly batch) is judged against its own
    /// hour. Default true.
    pub seasonality: bool,
    /// History kept for the profiles, minutes. Default 40320 (28 days, as AWS trains on).
    pub profile_window_minutes: u32,
    /// Days of history an hour of the day needs before its daily profile is used. Default 3.
    pub min_profile_days: u32,
    /// Weeks of history an hour of the week needs before its weekly profile is used. Default 2.
    pub min_profile_weeks: u32,
    /// Weight of the key's overall baseline in each hour's profile, minutes
    /// (the profile is shrunk towards it as if the overall rate had been seen
    /// for this many minutes in that hour). Default 1440.
    pub profile_prior_minutes: f64,
    /// Floor of a seasonal profile as a fraction of the key's 7-day mean rate, so
    /// an hour that was always quiet is not infinitely sensitive. Default 0.05.
    pub seasonal_floor_fraction: f64,
    /// Raise `ApiCallRateInsight`. Default true.
    pub call_rate: bool,
    /// Raise `ApiErrorRateInsight`. Default true.
    pub error_rate: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            allowed_lateness_minutes: 15,
            baseline_window_minutes: 10080,
            warmup_minutes: 2160,
            windows_minutes: vec![1, 5, 15, 60, 360],
            sensitivity: Sensitivity::Medium,
            tail_probability: None,
            min_count: 3,
            min_ratio: None,
            sensitive_apis: default_sensitive_apis(),
            sensitive_min_count: 2,
            overrides: Vec::new(),
            ignore_principals: Vec::new(),
            end_tail_probability: 0.01,
            end_after_quiet_minutes: 5,
            max_insight_minutes: 1440,
            min_baseline_rate: 1.0 / 10080.0,
            seasonality: true,
            profile_window_minutes: 40320,
            min_profile_days: 3,
            min_profile_weeks: 2,
            profile_prior_minutes: 1440.0,
            seasonal_floor_fraction: 0.05,
            call_rate: true,
            error_rate: true,
        }
    }
}

/// A setting out of its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("detector.{field}: {reason}")]
pub struct ConfigError {
    /// The offending key.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl DetectorConfig {
    /// Checks ranges; returns `Err(ConfigError)` naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| {
            Err(ConfigError {
                field,
                reason: reason.to_string(),
            })
        };
        if self.windows_minutes.is_empty()
            || self.windows_minutes.len() > MAX_WINDOWS
            || self.windows_minutes.iter().any(|&w| w == 0 || w > 1440)
        {
            return bad(
                "windows_minutes",
                "needs 1 to 16 windows, each 1..=1440 minutes",
            );
        }
        if !(self.tail_probability() > 0.0 && self.tail_probability() < 1.0) {
            return bad("tail_probability", "must be in (0, 1)");
        }
        if self.min_count == 0 || self.sensitive_min_count == 0 {
            return bad(
                "min_count",
                "min_count and sensitive_min_count must be >= 1",
            );
        }
        if !(self.end_tail_probability > 0.0 && self.end_tail_probability < 1.0) {
            return bad("end_tail_probability", "must be in (0, 1)");
        }
        if self.baseline_window_minutes < 60 {
            return bad("baseline_window_minutes", "must be at least 60");
        }
        if self.min_ratio() < 1.0 || !self.min_ratio().is_finite() {
            return bad("min_ratio", "must be a finite number >= 1");
        }
        if self.min_profile_days == 0 || self.min_profile_weeks == 0 {
            return bad(
                "min_profile_days",
                "min_profile_days and min_profile_weeks must be > 0",
            );
        }
        if !(self.profile_prior_minutes >= 0.0 && self.profile_prior_minutes.is_finite()) {
            return bad(
                "profile_prior_minutes",
                "must be a finite number of minutes >= 0",
            );
        }
        if !(0.0..=1.0).contains(&self.seasonal_floor_fraction) {
            return bad("seasonal_floor_fraction", "must be in [0, 1]");
        }
        if self.end_after_quiet_minutes == 0 || self.max_insight_minutes == 0 {
            return bad(
                "end_after_quiet_minutes",
                "end_after_quiet_minutes and max_insight_minutes must be > 0",
            );
        }
        if !(self.min_baseline_rate > 0.0 && self.min_baseline_rate.is_finite()) {
            return bad(
                "min_baseline_rate",
                "must be a positive number of calls per minute",
            );
        }
        self.policy().map(|_| ())
    }

    /// Effective tail probability.
    pub fn tail_probability(&self) -> f64 {
        self.tail_probability
            .unwrap_or(self.sensitivity.tail_probability())
    }

    /// Effective minimum ratio.
    pub fn min_ratio(&self) -> f64 {
        self.min_ratio.unwrap_or(self.sensitivity.min_ratio())
    }

    /// The compiled sensitivity settings; `Err` names the first bad pattern.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let base = KeyPolicy {
            tail_probability: self.tail_probability(),
            min_ratio: self.min_ratio(),
            min_count: self.min_count,
            suppress: false,
        };
        Policy::new(
            base,
            &self.sensitive_apis,
            self.sensitive_min_count,
            &self.overrides,
            &self.ignore_principals,
        )
        .map_err(|e| ConfigError {
            field: "overrides",
            reason: e.to_string(),
        })
    }

    /// The longest short window (at most an hour), minutes: calls join a key's baseline only
    /// once they are older than this.
    pub fn short_window(&self) -> u32 {
        self.windows_minutes
            .iter()
            .copied()
            .filter(|&w| w <= 60)
            .max()
            .unwrap_or(1)
            .max(5)
    }

    /// The longest test window, minutes.
    pub fn max_window(&self) -> u32 {
        self.windows_minutes
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(5)
    }
}
