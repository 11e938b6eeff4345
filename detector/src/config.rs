//! Detection settings (the `[detector]` table of the config file).

use serde::{Deserialize, Serialize};

use crate::policy::{
    KeyPolicy, Override, Policy, PrincipalSuppression, Sensitivity, default_sensitive_apis,
};

/// Most test windows a configuration may list.
pub const MAX_WINDOWS: usize = 16;
/// Most entries in each of `sensitive_apis`, `overrides` and `ignore_principals` (each is
/// matched against every new key or principal).
pub const MAX_RULES: usize = 1024;
/// Longest pattern accepted, bytes.
pub const MAX_PATTERN_BYTES: usize = 512;
/// Default of [`DetectorConfig::max_keys_per_region`].
pub const DEFAULT_MAX_KEYS_PER_REGION: u32 = 10_000;

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
    /// A level that has lasted this long inside an open Insight (from its last changepoint) is a
    /// level shift: the Insight ends, its minutes from that level's start join the baseline and
    /// the key's history is rebased to it (see `detect::level`); a rate still changing is taken
    /// as a level shift after 3 × this, keeping at least this much of it. Minutes; default 1440.
    pub max_insight_minutes: u32,
    /// Decide a `Start` as soon as the records read make a (short) window unusual, before its
    /// minute closes: counts only grow as late records arrive, so the window would still be
    /// unusual when it closes. Default true; false waits for the minute to close
    /// (`allowed_lateness_minutes` of event time), which may place the Start a minute or two
    /// earlier when later files complete earlier minutes.
    pub early_starts: bool,
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
    /// Most weight of the key's overall baseline in each hour's profile, minutes (the profile
    /// is shrunk towards it as if the overall rate had been seen for this many minutes in that
    /// hour; keys whose hours of the day differ get less, see
    /// `detect::model::profile_prior_weight`). Default 1440.
    pub profile_prior_minutes: f64,
    /// Floor of a seasonal profile as a fraction of the key's 7-day mean rate, so
    /// an hour that was always quiet is not infinitely sensitive. Default 0.05.
    pub seasonal_floor_fraction: f64,
    /// Raise `ApiCallRateInsight`. Default true.
    pub call_rate: bool,
    /// Raise `ApiErrorRateInsight`. Default true.
    pub error_rate: bool,
    /// Oldest `eventTime` accepted in a file with a delivery time in its name, minutes
    /// before that delivery time. CloudTrail delivers a record about 5 to 15 minutes after
    /// the call; a day leaves room for a delayed delivery while a record claiming another
    /// year cannot reach an account's history. Older records are counted and skipped.
    /// Default 1440 (1 day); range 60..=43200 (30 days).
    pub max_event_age_minutes: u32,
    /// Newest `eventTime` accepted, minutes after the file's delivery time and after the
    /// service's own clock (for every file, with or without a delivery time). A record
    /// cannot be delivered before it happened; this absorbs clock skew only. Newer records
    /// are counted and skipped. Default 15; range 0..=1440.
    pub max_clock_skew_minutes: u32,
    /// Rate keys tracked per account and Region (call-rate and error-rate keys together).
    /// Calls for a new key past it are counted (`key_overflow`) and not tracked; keys already
    /// tracked are unaffected. An account and Region uses a few hundred keys in practice
    /// (AWS has about 15,000 API actions in all); each key costs about 1 KiB of memory and
    /// 500 bytes of checkpoint. Default 10000; range 100..=1000000.
    pub max_keys_per_region: u32,
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
            early_starts: true,
            min_baseline_rate: 1.0 / 10080.0,
            seasonality: true,
            profile_window_minutes: 40320,
            min_profile_days: 3,
            min_profile_weeks: 2,
            profile_prior_minutes: 1440.0,
            seasonal_floor_fraction: 0.05,
            call_rate: true,
            error_rate: true,
            max_event_age_minutes: 1440,
            max_clock_skew_minutes: 15,
            max_keys_per_region: DEFAULT_MAX_KEYS_PER_REGION,
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
    ///
    /// Every value that would silently disable detection (a threshold no burst can reach, a
    /// lateness that never closes a minute) or make memory or CPU unbounded is rejected.
    /// Ranges (inclusive):
    ///
    /// | key | range |
    /// |---|---|
    /// | `allowed_lateness_minutes` | 0..=1440 |
    /// | `baseline_window_minutes` | 60..=43200 |
    /// | `warmup_minutes` | 0..=43200 |
    /// | `windows_minutes` | 1 to 16 windows, each 1..=1440 |
    /// | `tail_probability` | 1e-15..=0.01 |
    /// | `min_count`, `sensitive_min_count`, `overrides[].min_count` | 1..=10000 |
    /// | `min_ratio` | 1..=1000 |
    /// | `sensitive_apis`, `overrides`, `ignore_principals` | at most 1024 entries, patterns at most 512 bytes |
    /// | `overrides[].sensitivity` | as `sensitivity` |
    /// | `end_tail_probability` | 1e-6..=0.5 |
    /// | `end_after_quiet_minutes` | 1..=1440 |
    /// | `max_insight_minutes` | 60..=10080 |
    /// | `min_baseline_rate` | 1e-6..=1 calls per minute |
    /// | `profile_window_minutes` | 10080..=80640 |
    /// | `min_profile_days` | 1..=`profile_window_minutes` / 1440 |
    /// | `min_profile_weeks` | 1..=`profile_window_minutes` / 10080 |
    /// | `profile_prior_minutes` | 0..=43200 |
    /// | `seasonal_floor_fraction` | 0..=1 |
    /// | `call_rate`, `error_rate` | not both false |
    /// | `max_event_age_minutes` | 60..=43200 |
    /// | `max_clock_skew_minutes` | 0..=1440 |
    /// | `max_keys_per_region` | 100..=1000000 |
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError {
                field,
                reason: reason.into(),
            })
        }
        fn range_u32(
            field: &'static str,
            v: u32,
            r: std::ops::RangeInclusive<u32>,
        ) -> Result<(), ConfigError> {
            if r.contains(&v) {
                Ok(())
            } else {
                bad(
                    field,
                    format!("{v} is out of range: must be {}..={}", r.start(), r.end()),
                )
            }
        }
        fn range_f64(
            field: &'static str,
            v: f64,
            r: std::ops::RangeInclusive<f64>,
        ) -> Result<(), ConfigError> {
            if r.contains(&v) {
                Ok(())
            } else {
                bad(
                    field,
                    format!(
                        "{v:e} is out of range: must be {:e}..={:e}",
                        r.start(),
                        r.end()
                    ),
                )
            }
        }
        range_u32(
            "allowed_lateness_minutes",
            self.allowed_lateness_minutes,
            0..=1440,
        )?;
        range_u32(
            "baseline_window_minutes",
            self.baseline_window_minutes,
            60..=43200,
        )?;
        range_u32("warmup_minutes", self.warmup_minutes, 0..=43200)?;
        if self.windows_minutes.is_empty()
            || self.windows_minutes.len() > MAX_WINDOWS
            || self.windows_minutes.iter().any(|&w| w == 0 || w > 1440)
        {
            return bad(
                "windows_minutes",
                "needs 1 to 16 windows, each 1..=1440 minutes",
            );
        }
        range_f64("tail_probability", self.tail_probability(), 1e-15..=0.01)?;
        range_u32("min_count", self.min_count, 1..=10_000)?;
        range_u32("sensitive_min_count", self.sensitive_min_count, 1..=10_000)?;
        range_f64("min_ratio", self.min_ratio(), 1.0..=1000.0)?;
        for (field, patterns) in [
            (
                "sensitive_apis",
                self.sensitive_apis.iter().collect::<Vec<_>>(),
            ),
            (
                "overrides",
                self.overrides
                    .iter()
                    .flat_map(|o| {
                        [
                            &o.account,
                            &o.region,
                            &o.event_source,
                            &o.event_name,
                            &o.error_code,
                        ]
                    })
                    .flatten()
                    .collect(),
            ),
            (
                "ignore_principals",
                self.ignore_principals
                    .iter()
                    .flat_map(|p| {
                        [
                            Some(&p.principal),
                            p.event_source.as_ref(),
                            p.event_name.as_ref(),
                            p.account.as_ref(),
                        ]
                    })
                    .flatten()
                    .collect(),
            ),
        ] {
            if let Some(p) = patterns.iter().find(|p| p.len() > MAX_PATTERN_BYTES) {
                return bad(
                    field,
                    format!(
                        "pattern of {} bytes is longer than {MAX_PATTERN_BYTES}: {:?}",
                        p.len(),
                        crate::batch::truncate_at_char(p, 64)
                    ),
                );
            }
        }
        for (field, n) in [
            ("sensitive_apis", self.sensitive_apis.len()),
            ("overrides", self.overrides.len()),
            ("ignore_principals", self.ignore_principals.len()),
        ] {
            if n > MAX_RULES {
                return bad(field, format!("{n} entries: at most {MAX_RULES}"));
            }
        }
        for (i, o) in self.overrides.iter().enumerate() {
            if let Some(c) = o.min_count
                && !(1..=10_000).contains(&c)
            {
                return bad(
                    "overrides",
                    format!("overrides[{i}].min_count {c} is out of range: must be 1..=10000"),
                );
            }
        }
        range_f64(
            "end_tail_probability",
            self.end_tail_probability,
            1e-6..=0.5,
        )?;
        range_u32(
            "end_after_quiet_minutes",
            self.end_after_quiet_minutes,
            1..=1440,
        )?;
        range_u32("max_insight_minutes", self.max_insight_minutes, 60..=10_080)?;
        range_f64("min_baseline_rate", self.min_baseline_rate, 1e-6..=1.0)?;
        range_u32(
            "profile_window_minutes",
            self.profile_window_minutes,
            10_080..=80_640,
        )?;
        range_u32(
            "min_profile_days",
            self.min_profile_days,
            1..=self.profile_window_minutes / 1440,
        )?;
        range_u32(
            "min_profile_weeks",
            self.min_profile_weeks,
            1..=self.profile_window_minutes / 10_080,
        )?;
        range_f64(
            "profile_prior_minutes",
            self.profile_prior_minutes,
            0.0..=43_200.0,
        )?;
        range_f64(
            "seasonal_floor_fraction",
            self.seasonal_floor_fraction,
            0.0..=1.0,
        )?;
        if !self.call_rate && !self.error_rate {
            return bad(
                "call_rate",
                "call_rate and error_rate are both false: nothing would be detected",
            );
        }
        range_u32(
            "max_event_age_minutes",
            self.max_event_age_minutes,
            60..=43_200,
        )?;
        range_u32(
            "max_clock_skew_minutes",
            self.max_clock_skew_minutes,
            0..=1440,
        )?;
        range_u32(
            "max_keys_per_region",
            self.max_keys_per_region,
            100..=1_000_000,
        )?;
        self.policy().map(|_| ())
    }

    /// The bounds of a file's record times (see [`crate::batch::TimeBounds::for_file`]) with
    /// these settings: `delivered_minute` from the file name when known, `now_minute` the
    /// caller's clock (minutes since the Unix epoch).
    pub fn time_bounds(
        &self,
        delivered_minute: Option<i64>,
        now_minute: i64,
    ) -> crate::batch::TimeBounds {
        crate::batch::TimeBounds::for_file(
            delivered_minute,
            now_minute,
            self.max_event_age_minutes,
            self.max_clock_skew_minutes,
        )
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

    /// How long a key keeps an hour of its rate history, minutes: the longer of the profile and
    /// baseline windows.
    pub fn evict_after_minutes(&self) -> u32 {
        self.profile_window_minutes
            .max(self.baseline_window_minutes)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of a default config changed by `f`.
    fn rejected(f: impl FnOnce(&mut DetectorConfig)) -> String {
        let mut c = DetectorConfig::default();
        f(&mut c);
        match c.validate() {
            Ok(()) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn names(msg: String, key: &str) {
        assert!(msg.starts_with(&format!("detector.{key}: ")), "{msg}");
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(DetectorConfig::default().validate(), Ok(()));
    }

    #[test]
    fn the_issue_values_are_rejected_naming_the_key() {
        names(
            rejected(|c| c.allowed_lateness_minutes = u32::MAX),
            "allowed_lateness_minutes",
        );
        names(
            rejected(|c| c.tail_probability = Some(5e-324)),
            "tail_probability",
        );
        names(
            rejected(|c| c.profile_window_minutes = 0),
            "profile_window_minutes",
        );
        let msg = rejected(|c| {
            c.overrides.push(Override {
                event_name: Some("Create*".into()),
                min_count: Some(0),
                ..Default::default()
            })
        });
        names(msg.clone(), "overrides");
        assert!(msg.contains("overrides[0].min_count 0"), "{msg}");
    }

    #[test]
    fn every_setting_out_of_range_is_rejected_naming_the_key() {
        names(
            rejected(|c| c.allowed_lateness_minutes = 1441),
            "allowed_lateness_minutes",
        );
        names(
            rejected(|c| c.baseline_window_minutes = 59),
            "baseline_window_minutes",
        );
        names(
            rejected(|c| c.baseline_window_minutes = u32::MAX),
            "baseline_window_minutes",
        );
        names(rejected(|c| c.warmup_minutes = u32::MAX), "warmup_minutes");
        names(rejected(|c| c.windows_minutes = vec![]), "windows_minutes");
        names(rejected(|c| c.windows_minutes = vec![0]), "windows_minutes");
        names(
            rejected(|c| c.windows_minutes = vec![1; 17]),
            "windows_minutes",
        );
        names(
            rejected(|c| c.tail_probability = Some(0.0)),
            "tail_probability",
        );
        names(
            rejected(|c| c.tail_probability = Some(0.5)),
            "tail_probability",
        );
        names(
            rejected(|c| c.tail_probability = Some(f64::NAN)),
            "tail_probability",
        );
        names(rejected(|c| c.min_count = 0), "min_count");
        names(rejected(|c| c.min_count = u32::MAX), "min_count");
        names(
            rejected(|c| c.sensitive_min_count = 0),
            "sensitive_min_count",
        );
        names(rejected(|c| c.min_ratio = Some(0.5)), "min_ratio");
        names(rejected(|c| c.min_ratio = Some(f64::INFINITY)), "min_ratio");
        names(rejected(|c| c.min_ratio = Some(1e9)), "min_ratio");
        names(
            rejected(|c| c.sensitive_apis = vec!["iam.amazonaws.com:*".into(); MAX_RULES + 1]),
            "sensitive_apis",
        );
        names(
            rejected(|c| c.sensitive_apis = vec!["x".repeat(MAX_PATTERN_BYTES + 1)]),
            "sensitive_apis",
        );
        names(
            rejected(|c| c.overrides = vec![Override::default(); MAX_RULES + 1]),
            "overrides",
        );
        names(
            rejected(|c| {
                c.overrides.push(Override {
                    min_count: Some(10_001),
                    ..Default::default()
                })
            }),
            "overrides",
        );
        names(
            rejected(|c| {
                c.ignore_principals.push(PrincipalSuppression {
                    principal: "a".repeat(MAX_PATTERN_BYTES + 1),
                    ..Default::default()
                })
            }),
            "ignore_principals",
        );
        names(
            rejected(|c| c.end_tail_probability = 0.0),
            "end_tail_probability",
        );
        names(
            rejected(|c| c.end_tail_probability = 0.99),
            "end_tail_probability",
        );
        names(
            rejected(|c| c.end_after_quiet_minutes = 0),
            "end_after_quiet_minutes",
        );
        names(
            rejected(|c| c.end_after_quiet_minutes = u32::MAX),
            "end_after_quiet_minutes",
        );
        names(
            rejected(|c| c.max_insight_minutes = 0),
            "max_insight_minutes",
        );
        names(
            rejected(|c| c.max_insight_minutes = u32::MAX),
            "max_insight_minutes",
        );
        names(
            rejected(|c| c.min_baseline_rate = 5e-324),
            "min_baseline_rate",
        );
        names(
            rejected(|c| c.min_baseline_rate = 1e300),
            "min_baseline_rate",
        );
        names(
            rejected(|c| c.profile_window_minutes = u32::MAX),
            "profile_window_minutes",
        );
        names(rejected(|c| c.min_profile_days = 0), "min_profile_days");
        names(rejected(|c| c.min_profile_days = 29), "min_profile_days");
        names(rejected(|c| c.min_profile_weeks = 0), "min_profile_weeks");
        names(rejected(|c| c.min_profile_weeks = 5), "min_profile_weeks");
        names(
            rejected(|c| c.profile_prior_minutes = -1.0),
            "profile_prior_minutes",
        );
        names(
            rejected(|c| c.profile_prior_minutes = f64::INFINITY),
            "profile_prior_minutes",
        );
        names(
            rejected(|c| c.seasonal_floor_fraction = 1.5),
            "seasonal_floor_fraction",
        );
        names(
            rejected(|c| {
                c.call_rate = false;
                c.error_rate = false;
            }),
            "call_rate",
        );
        names(
            rejected(|c| c.max_event_age_minutes = 0),
            "max_event_age_minutes",
        );
        names(
            rejected(|c| c.max_event_age_minutes = u32::MAX),
            "max_event_age_minutes",
        );
        names(
            rejected(|c| c.max_clock_skew_minutes = u32::MAX),
            "max_clock_skew_minutes",
        );
        names(
            rejected(|c| c.max_keys_per_region = 0),
            "max_keys_per_region",
        );
        names(
            rejected(|c| c.max_keys_per_region = u32::MAX),
            "max_keys_per_region",
        );
    }

    #[test]
    fn range_ends_are_accepted() {
        for f in [
            (|c: &mut DetectorConfig| c.allowed_lateness_minutes = 0) as fn(&mut DetectorConfig),
            |c| c.allowed_lateness_minutes = 1440,
            |c| c.tail_probability = Some(1e-15),
            |c| c.tail_probability = Some(0.01),
            |c| c.sensitivity = Sensitivity::Low,
            |c| c.sensitivity = Sensitivity::High,
            |c| c.max_insight_minutes = 60,
            |c| c.profile_window_minutes = 80_640,
            |c| c.max_keys_per_region = 100,
            |c| c.call_rate = false,
        ] {
            let mut c = DetectorConfig::default();
            f(&mut c);
            assert_eq!(c.validate(), Ok(()), "{c:?}");
        }
    }
}
