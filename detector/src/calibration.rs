//! Benign calibration: does the detector's false-alarm rate match the budget its
//! sensitivity names (`Sensitivity::false_insights_per_key_per_30_days`) on real,
//! bursty traffic?
//!
//! Pure (no file I/O): callers parse the series text with [`parse_series_csv`] and
//! [`parse_label_windows`] (or build [`RateSeries`] themselves), then call
//! [`run_calibration`] and print [`markdown_table`].
//!
//! # From a rate series to benign per-minute call counts
//!
//! 1. **Regular grid.** A series is a value per bucket of `bucket_minutes` (NAB: 5 or 30
//!    minutes; Twitter: 1 minute); any unit, only its shape is used. Missing buckets
//!    (`NaN`) are linearly interpolated when the gap is at most [`MAX_FILLED_GAP_MINUTES`];
//!    a longer gap is cut out like an anomaly window.
//! 2. **Anomalies cut out.** Buckets overlapping NAB's labeled anomaly windows
//!    (`labels/combined_windows.json`) are removed, so what is left is benign by NAB's labels.
//!    The remaining runs of buckets are *segments*.
//! 3. **Spread to minutes.** Each segment is spread to per-minute rates by linear
//!    interpolation between bucket centres, rescaled bucket by bucket so each bucket's
//!    per-minute mean equals its value (totals are preserved exactly).
//! 4. **Seams.** Segments are concatenated into one *benign loop*. At each seam the next
//!    segment's first minutes are skipped until its UTC time of day matches the
//!    minute that follows the previous segment (the daily cycle stays in phase; the weekly
//!    phase does not), and the step between the last minute before the seam and the first
//!    after it is removed by a linear ramp over [`SEAM_RAMP_MINUTES`] minutes. The loop is
//!    trimmed to whole days, so repeating it (for series shorter than a key's run) keeps
//!    the daily phase too, and the wrap-around seam is ramped the same way. Keys longer than
//!    the loop therefore see the same days again (with fresh Poisson draws); weekly
//!    profiles see a loop length that is not a week.
//! 5. **Rescale and draw.** The loop is normalized to mean 1. Each busy key picks (from its
//!    own ChaCha stream of the seed) a mean rate, log-uniform in
//!    [`HarnessConfig::mean_rate_range`] calls per minute, and a random offset into the loop
//!    (so keys are not in phase), and draws each minute's count from a Poisson distribution
//!    around `mean × loop[(offset + minute) mod len]`.
//!
//! Sparse keys (optional) call at a constant Poisson rate, log-uniform in
//! [`HarnessConfig::sparse_rate_range`].
//!
//! # Tune / report split
//!
//! Measure on data you did not tune on. The count-like NAB series (call-rate shapes: request
//! counts, network and disk traffic, taxi passengers, road occupancy; never `realTweets`)
//! are split in two ([`TUNE_NAB_SERIES`], [`REPORT_NAB_SERIES`]), each half with smooth and
//! very bursty shapes; the Twitter per-minute series (GPL-3.0, read from outside the
//! repository, no labels) is in the tune set only.
//!
//! # What is measured
//!
//! Each account has `busy_keys_per_account` busy keys (series assigned round-robin over the
//! set, so every series gets about the same number of keys) plus `sparse_keys_per_account`
//! sparse ones, all in one Region, starting at the same minute (the account's history start).
//! Every closed minute is fed to a [`Detector`] per account and sensitivity, for
//! `warmup_minutes + days_after_warmup` days. Every Insight `Start` is a false Insight.
//! Exposure is counted after the warm-up only (no Insight can start before it), less the
//! first [`HarnessConfig::settle_days`] days when set (a settled deployment rather than a new
//! one). Series shorter than a key's run repeat (see *Seams*), so settled days of a short
//! series are days the detector has seen before, with fresh Poisson draws: read settled
//! results of short loops (see [`CalibrationReport::loop_days_per_series`]) as optimistic.

use std::ops::Range;

use ndarray::{Array3, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use statrs::distribution::{ContinuousCDF, Gamma};

use crate::DetectorConfig;
use crate::aggregate::{AttributionCounts, ClosedMinute, KeyId, MinuteSample, RateKey, Sym};
use crate::detect::{Detector, KeyLookup, Transition};
use crate::policy::Sensitivity;

/// Minutes per day.
const DAY: usize = 1440;
/// Longest run of missing minutes filled by linear interpolation (NAB's road series miss up to
/// 3 hours at night); longer gaps are cut out.
pub const MAX_FILLED_GAP_MINUTES: u32 = 240;
/// Length of the linear ramp that removes the step at a seam, minutes.
pub const SEAM_RAMP_MINUTES: usize = 60;
/// Segments shorter than this (after phase alignment) are dropped, minutes.
pub const MIN_SEGMENT_MINUTES: usize = 360;
/// Symbols reserved for accounts (the key names' symbols start after them): the most accounts a run may have.
const ACCOUNT_SYMBOLS: Sym = 1 << 20;
/// The UTC minute (since the epoch) every simulated account starts at: 2026-01-05T00:00Z, a Monday.
pub const START_MINUTE: i64 = 29_459_520;

/// NAB series (paths relative to NAB's `data/`) in the TUNE set.
pub const TUNE_NAB_SERIES: &[&str] = &[
    "realAWSCloudwatch/elb_request_count_8c0756.csv",
    "realAWSCloudwatch/ec2_network_in_257a54.csv",
    "realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv",
    "realTraffic/occupancy_6005.csv",
];

/// NAB series (paths relative to NAB's `data/`) in the REPORT set.
pub const REPORT_NAB_SERIES: &[&str] = &[
    "realKnownCause/nyc_taxi.csv",
    "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
    "realAWSCloudwatch/ec2_network_in_5abac7.csv",
    "realAWSCloudwatch/ec2_disk_write_bytes_c0d644.csv",
    "realTraffic/occupancy_t4013.csv",
];

/// Which half of the series to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesSet {
    /// Series the detector may be tuned on: [`TUNE_NAB_SERIES`] and the Twitter series.
    Tune,
    /// Held-out series to report on: [`REPORT_NAB_SERIES`].
    Report,
}

impl SeriesSet {
    /// The NAB series of this set (paths relative to NAB's `data/`).
    pub fn nab_series(self) -> &'static [&'static str] {
        match self {
            SeriesSet::Tune => TUNE_NAB_SERIES,
            SeriesSet::Report => REPORT_NAB_SERIES,
        }
    }

    /// Whether the Twitter per-minute series belongs to this set.
    pub fn includes_twitter(self) -> bool {
        self == SeriesSet::Tune
    }

    /// `tune` or `report`.
    pub fn name(self) -> &'static str {
        match self {
            SeriesSet::Tune => "tune",
            SeriesSet::Report => "report",
        }
    }
}

impl std::str::FromStr for SeriesSet {
    type Err = CalibrationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tune" => Ok(SeriesSet::Tune),
            "report" => Ok(SeriesSet::Report),
            _ => Err(CalibrationError::Input(format!(
                "unknown series set {s:?} (tune or report)"
            ))),
        }
    }
}

/// Why a series or a run was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrationError {
    /// Unparsable or unusable input.
    #[error("{0}")]
    Input(String),
    /// The detector settings are invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// One real rate series on a regular grid.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSeries {
    /// Name (e.g. NAB's `realKnownCause/nyc_taxi.csv`).
    pub name: String,
    /// Bucket length, minutes (≥ 1).
    pub bucket_minutes: u32,
    /// UTC minute (since the epoch) at which bucket 0 starts.
    pub start_minute: i64,
    /// Value per bucket, any unit proportional to a rate (≥ 0); `NaN` for a missing bucket.
    pub values: Vec<f64>,
    /// Bucket index ranges (half-open) that are not benign: labeled anomaly windows.
    pub excluded: Vec<Range<usize>>,
}

/// Minutes since the epoch of `YYYY-MM-DD HH:MM[:SS[.ffffff]]` (UTC).
pub fn parse_minute(s: &str) -> Result<i64, CalibrationError> {
    let s = s.trim();
    let head = s.get(..16).unwrap_or(s);
    let t = chrono::NaiveDateTime::parse_from_str(head, "%Y-%m-%d %H:%M")
        .map_err(|e| CalibrationError::Input(format!("bad timestamp {s:?}: {e}")))?;
    Ok(t.and_utc().timestamp().div_euclid(60))
}

/// Parses a `timestamp,value` CSV (NAB's and the Twitter series' format, one header line)
/// onto a regular grid. The bucket length is the most common positive step between
/// timestamps; each row goes to the nearest bucket (rows sharing one are averaged); buckets
/// without a row are `NaN`. `windows` are anomaly windows as UTC minute ranges (half-open);
/// buckets overlapping them are excluded.
pub fn parse_series_csv(
    name: &str,
    text: &str,
    windows: &[Range<i64>],
) -> Result<RateSeries, CalibrationError> {
    let mut rows: Vec<(i64, f64)> = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (t, v) = line.split_once(',').ok_or_else(|| {
            CalibrationError::Input(format!("{name}:{}: expected timestamp,value", i + 1))
        })?;
        let v: f64 = v.trim().parse().map_err(|e| {
            CalibrationError::Input(format!("{name}:{}: bad value {v:?}: {e}", i + 1))
        })?;
        rows.push((parse_minute(t)?, v));
    }
    rows.sort_by_key(|r| r.0);
    let (first, last) = match (rows.first(), rows.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => return Err(CalibrationError::Input(format!("{name}: no rows"))),
    };
    let mut steps: Vec<i64> = rows
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|d| *d > 0)
        .collect();
    steps.sort_unstable();
    let bucket = mode(&steps).unwrap_or(1).max(1);
    let n = usize::try_from((last - first) / bucket + 1)
        .map_err(|_| CalibrationError::Input(format!("{name}: bad time range")))?;
    let mut sum = vec![0.0; n];
    let mut count = vec![0u32; n];
    for (t, v) in rows {
        let i = ((t - first) as f64 / bucket as f64).round() as usize;
        let i = i.min(n - 1);
        sum[i] += v.max(0.0);
        count[i] += 1;
    }
    let values: Vec<f64> = sum
        .iter()
        .zip(&count)
        .map(|(s, c)| if *c == 0 { f64::NAN } else { s / f64::from(*c) })
        .collect();
    let excluded = windows
        .iter()
        .filter_map(|w| {
            let a = (w.start - first).div_euclid(bucket).max(0);
            let b = (w.end - first + bucket - 1)
                .div_euclid(bucket)
                .min(n as i64);
            (a < b).then_some(a as usize..b as usize)
        })
        .collect();
    Ok(RateSeries {
        name: name.to_string(),
        bucket_minutes: bucket as u32,
        start_minute: first,
        values,
        excluded,
    })
}

/// The most common value of a sorted slice (smallest on ties).
fn mode(sorted: &[i64]) -> Option<i64> {
    let mut best: Option<(i64, usize)> = None;
    let mut i = 0;
    while i < sorted.len() {
        let j = i + sorted[i..].iter().take_while(|x| **x == sorted[i]).count();
        if best.is_none_or(|b| j - i > b.1) {
            best = Some((sorted[i], j - i));
        }
        i = j;
    }
    best.map(|b| b.0)
}

/// The anomaly windows NAB labels for `series` (a key of `combined_windows.json`, e.g.
/// `realKnownCause/nyc_taxi.csv`), as UTC minute ranges (half-open). A series not in the
/// file has none.
pub fn parse_label_windows(json: &str, series: &str) -> Result<Vec<Range<i64>>, CalibrationError> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| CalibrationError::Input(format!("label windows: {e}")))?;
    let Some(list) = v.get(series).and_then(|w| w.as_array()) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|w| {
            let bound = |i: usize| {
                w.get(i)
                    .and_then(|x| x.as_str())
                    .ok_or_else(|| CalibrationError::Input(format!("{series}: bad window {w}")))
                    .and_then(parse_minute)
            };
            Ok(bound(0)?..bound(1)? + 1)
        })
        .collect()
}

/// Name of the Twitter per-minute series in reports.
pub const TWITTER_SERIES: &str = "twitter-1min/raw_data.csv";

/// The series of `set`: each NAB series of the set read by `read_nab` (given its path
/// relative to NAB's `data/`, returning the CSV text) with its windows from `windows_json`
/// (NAB's `combined_windows.json` or a subset), then the Twitter series when the set
/// includes it and `twitter_csv` (its CSV text) is given.
pub fn load_set(
    set: SeriesSet,
    read_nab: impl Fn(&str) -> Result<String, String>,
    windows_json: &str,
    twitter_csv: Option<&str>,
) -> Result<Vec<RateSeries>, CalibrationError> {
    let mut out = Vec::new();
    for name in set.nab_series() {
        let text = read_nab(name).map_err(|e| CalibrationError::Input(format!("{name}: {e}")))?;
        let windows = parse_label_windows(windows_json, name)?;
        out.push(parse_series_csv(name, &text, &windows)?);
    }
    if let (true, Some(text)) = (set.includes_twitter(), twitter_csv) {
        out.push(parse_series_csv(TWITTER_SERIES, text, &[])?);
    }
    Ok(out)
}

/// Spreads bucket values to per-minute rates: linear interpolation between bucket
/// centres, then each bucket's minutes rescaled so their mean equals the bucket's value.
/// Input: values ≥ 0 per bucket of `bucket_minutes`; output: `values.len() × bucket_minutes`
/// per-minute values (same unit), whose sum is `bucket_minutes × Σ values`.
pub fn spread_to_minutes(values: &[f64], bucket_minutes: u32) -> Vec<f64> {
    let b = bucket_minutes.max(1) as usize;
    if b == 1 {
        return values.iter().map(|v| v.max(0.0)).collect();
    }
    let n = values.len();
    let centre = |i: usize| i as f64 * b as f64 + (b as f64 - 1.0) / 2.0;
    let mut out = Vec::with_capacity(n * b);
    for (i, &v) in values.iter().enumerate() {
        let v = v.max(0.0);
        let start = out.len();
        for j in 0..b {
            let x = (i * b + j) as f64;
            let (k0, k1) = if x < centre(i) {
                (i.saturating_sub(1), i)
            } else {
                (i, (i + 1).min(n - 1))
            };
            let y = if k0 == k1 {
                v
            } else {
                let w = (x - centre(k0)) / (centre(k1) - centre(k0));
                values[k0].max(0.0) * (1.0 - w) + values[k1].max(0.0) * w
            };
            out.push(y);
        }
        let sum: f64 = out[start..].iter().sum();
        if sum > 0.0 {
            let scale = v * b as f64 / sum;
            out[start..].iter_mut().for_each(|y| *y *= scale);
        } else {
            out[start..].iter_mut().for_each(|y| *y = v);
        }
    }
    out
}

/// The benign runs of a series: (UTC minute of the first bucket, bucket values), with
/// excluded buckets cut out, short gaps interpolated and long gaps cut out.
pub fn benign_segments(series: &RateSeries) -> Vec<(i64, Vec<f64>)> {
    let n = series.values.len();
    let b = series.bucket_minutes.max(1);
    let mut bad = vec![false; n];
    for r in &series.excluded {
        bad[r.start.min(n)..r.end.min(n)]
            .iter_mut()
            .for_each(|x| *x = true);
    }
    let max_gap = (MAX_FILLED_GAP_MINUTES / b) as usize;
    let mut values = series.values.clone();
    let mut i = 0;
    while i < n {
        if !values[i].is_nan() {
            i += 1;
            continue;
        }
        let j = i + values[i..].iter().take_while(|v| v.is_nan()).count();
        if i == 0 || j == n || j - i > max_gap {
            bad[i..j].iter_mut().for_each(|x| *x = true);
        } else {
            let (a, c) = (values[i - 1], values[j]);
            for (k, v) in values[i..j].iter_mut().enumerate() {
                let w = (k + 1) as f64 / (j - i + 1) as f64;
                *v = a * (1.0 - w) + c * w;
            }
        }
        i = j;
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        if bad[i] {
            i += 1;
            continue;
        }
        let j = i + bad[i..].iter().take_while(|x| !**x).count();
        out.push((
            series.start_minute + (i as i64) * i64::from(b),
            values[i..j].to_vec(),
        ));
        i = j;
    }
    out
}

/// Removes the step before `at`: shifts `x[at..at + SEAM_RAMP_MINUTES]` by a linearly
/// fading share of `previous - x[at]` (clamped at 0).
fn ramp(x: &mut [f64], at: usize, previous: f64) {
    let step = previous - x[at];
    let end = (at + SEAM_RAMP_MINUTES).min(x.len());
    for (k, y) in x[at..end].iter_mut().enumerate() {
        let w = 1.0 - k as f64 / SEAM_RAMP_MINUTES as f64;
        *y = (*y + w * step).max(0.0);
    }
}

/// The benign loop of a series: per-minute rates with mean 1, a whole number of days long,
/// built as described in the module documentation. Errors when less than a day of benign
/// data is left or the series is all zeros.
pub fn benign_loop(series: &RateSeries) -> Result<Vec<f64>, CalibrationError> {
    let mut out: Vec<f64> = Vec::new();
    let mut origin = 0i64;
    for (start, values) in benign_segments(series) {
        let minutes = spread_to_minutes(&values, series.bucket_minutes);
        let skip = if out.is_empty() {
            0
        } else {
            let want = (origin + out.len() as i64).rem_euclid(DAY as i64);
            (want - start.rem_euclid(DAY as i64)).rem_euclid(DAY as i64) as usize
        };
        if minutes.len() < skip + MIN_SEGMENT_MINUTES {
            continue;
        }
        if out.is_empty() {
            origin = start;
            out.extend_from_slice(&minutes);
        } else {
            let at = out.len();
            let previous = out[at - 1];
            out.extend_from_slice(&minutes[skip..]);
            ramp(&mut out, at, previous);
        }
    }
    out.truncate(out.len() / DAY * DAY);
    if out.is_empty() {
        return Err(CalibrationError::Input(format!(
            "{}: less than one day of benign data",
            series.name
        )));
    }
    let last = out[out.len() - 1];
    ramp(&mut out, 0, last);
    let mean = out.iter().sum::<f64>() / out.len() as f64;
    if !(mean > 0.0 && mean.is_finite()) {
        return Err(CalibrationError::Input(format!(
            "{}: no positive values",
            series.name
        )));
    }
    out.iter_mut().for_each(|y| *y /= mean);
    Ok(out)
}

/// Per-minute Poisson counts around `mean_rate × shape[(offset + i) mod len]`, `i` in
/// `0..minutes`. `shape`: per-minute rates with mean about 1; `mean_rate`: calls per minute.
pub fn draw_counts(
    shape: &[f64],
    mean_rate: f64,
    offset: usize,
    minutes: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<u32> {
    (0..minutes)
        .map(|i| {
            let lambda = if shape.is_empty() {
                mean_rate
            } else {
                mean_rate * shape[(offset + i) % shape.len()]
            };
            poisson(lambda, rng)
        })
        .collect()
}

fn poisson(lambda: f64, rng: &mut ChaCha8Rng) -> u32 {
    match Poisson::new(lambda) {
        Ok(p) => p.sample(rng).min(f64::from(u32::MAX)) as u32,
        Err(_) => 0,
    }
}

/// A count over an exposure, with its exact (Garwood) 95 % Poisson interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateEstimate {
    /// Events counted.
    pub count: u64,
    /// Exposure, in the unit the rate is per (e.g. key-30-days, account-days).
    pub exposure: f64,
    /// `count / exposure`.
    pub rate: f64,
    /// Lower 95 % bound of the rate.
    pub lower: f64,
    /// Upper 95 % bound of the rate.
    pub upper: f64,
}

impl RateEstimate {
    /// The estimate for `count` events over `exposure` (> 0).
    pub fn new(count: u64, exposure: f64) -> Self {
        let (lo, hi) = poisson_interval(count, 0.95);
        RateEstimate {
            count,
            exposure,
            rate: count as f64 / exposure,
            lower: lo / exposure,
            upper: hi / exposure,
        }
    }
}

/// Exact (Garwood) two-sided interval for the mean of a Poisson count `k` at confidence
/// `level` (e.g. 0.95): `[Γ⁻¹(α/2; k, 1), Γ⁻¹(1 − α/2; k + 1, 1)]`, i.e. χ²-quantiles / 2,
/// lower bound 0 for `k = 0`.
pub fn poisson_interval(k: u64, level: f64) -> (f64, f64) {
    let alpha = 1.0 - level;
    let lower = if k == 0 {
        0.0
    } else {
        Gamma::new(k as f64, 1.0).map_or(0.0, |g| g.inverse_cdf(alpha / 2.0))
    };
    let upper =
        Gamma::new(k as f64 + 1.0, 1.0).map_or(f64::INFINITY, |g| g.inverse_cdf(1.0 - alpha / 2.0));
    (lower, upper)
}

/// Settings of a calibration run.
#[derive(Debug, Clone, PartialEq)]
pub struct HarnessConfig {
    /// Seed of every random draw; a run is deterministic for a seed.
    pub seed: u64,
    /// Simulated accounts (one Region each).
    pub accounts: u32,
    /// Busy keys per account, following the real series.
    pub busy_keys_per_account: u32,
    /// Sparse keys per account, constant Poisson rate.
    pub sparse_keys_per_account: u32,
    /// Days measured after the detector's warm-up (`warmup_minutes`).
    pub days_after_warmup: u32,
    /// Of those, the first days whose Starts are not counted (and whose exposure is left
    /// out): 0 measures a new deployment from the end of warm-up; more measures a settled one.
    pub settle_days: u32,
    /// Range of a busy key's mean rate, calls per minute (log-uniform).
    pub mean_rate_range: (f64, f64),
    /// Range of a sparse key's rate, calls per minute (log-uniform).
    pub sparse_rate_range: (f64, f64),
    /// Worker threads (0: the available parallelism).
    pub threads: usize,
}

impl Default for HarnessConfig {
    /// 6 accounts × (10 busy + 2 sparse keys), 14 days after warm-up (84 account-days),
    /// busy means 0.5–50 calls/minute, sparse rates one a day to one an hour.
    fn default() -> Self {
        HarnessConfig {
            seed: 1,
            accounts: 6,
            busy_keys_per_account: 10,
            sparse_keys_per_account: 2,
            days_after_warmup: 14,
            settle_days: 0,
            mean_rate_range: (0.5, 50.0),
            sparse_rate_range: (1.0 / 1440.0, 1.0 / 60.0),
            threads: 0,
        }
    }
}

/// The measured false-alarm rates of one sensitivity.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityResult {
    /// The sensitivity.
    pub sensitivity: Sensitivity,
    /// Its budget: false Insights per key per 30 days.
    pub nominal_per_key_per_30_days: f64,
    /// Busy keys: false Insights per key per 30 days (exposure in key-30-days).
    pub busy_per_key_per_30_days: RateEstimate,
    /// Busy keys: false Insights per account-day (exposure in account-days).
    pub busy_per_account_day: RateEstimate,
    /// Sparse keys: false Insights per key per 30 days (exposure 0 when there are none).
    pub sparse_per_key_per_30_days: RateEstimate,
    /// Busy keys' false Insights per series, in the order of the input series.
    pub starts_per_series: Vec<u64>,
    /// Busy keys' false Insights per day after warm-up (by Insight start; index 0 is the
    /// first day after warm-up; settling days included).
    pub starts_per_day: Vec<u64>,
}

/// A calibration run's results.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationReport {
    /// Series names, in input order.
    pub series: Vec<String>,
    /// Busy keys per series.
    pub keys_per_series: Vec<u32>,
    /// Benign loop length per series, days.
    pub loop_days_per_series: Vec<u32>,
    /// Busy key-days measured (after warm-up and settling).
    pub busy_key_days: f64,
    /// Sparse key-days measured (after warm-up and settling).
    pub sparse_key_days: f64,
    /// Account-days measured (after warm-up and settling).
    pub account_days: f64,
    /// One result per sensitivity, in the order asked.
    pub results: Vec<SensitivityResult>,
}

/// One simulated account's keys and per-minute counts.
struct Account {
    /// Per key: its source series (`None` for a sparse key) and its count per minute.
    keys: Vec<(Option<usize>, Vec<u32>)>,
}

/// Key lookup for simulated accounts: symbol 0 the Region, 1 the event source, 2 the
/// principal, 3 the user agent, 4 `"null"`, then one per account, then one per key name.
struct SimKeys {
    account: Sym,
    names: Vec<String>,
    first_name: Sym,
    history_start: i64,
}

impl KeyLookup for SimKeys {
    fn key(&self, id: KeyId) -> RateKey {
        RateKey {
            account: self.account,
            region: 0,
            event_source: 1,
            event_name: self.first_name + id,
            error_code: None,
        }
    }
    fn history_start(&self, _: Sym, _: Sym) -> Option<i64> {
        Some(self.history_start)
    }
    fn resolve(&self, sym: Sym) -> &str {
        match sym {
            0 => "us-east-1",
            1 => "calibration.amazonaws.com",
            2 => "arn:aws:iam::111122223333:role/calibration",
            3 => "calibration-agent",
            4 => "null",
            s if s >= self.first_name => self
                .names
                .get((s - self.first_name) as usize)
                .map_or("", String::as_str),
            _ => "123456789012",
        }
    }
}

fn log_uniform(range: (f64, f64), rng: &mut ChaCha8Rng) -> f64 {
    let (a, b) = (range.0.max(f64::MIN_POSITIVE), range.1.max(range.0));
    (a.ln() + rng.random::<f64>() * (b.ln() - a.ln())).exp()
}

fn build_account(a: u32, loops: &[Vec<f64>], cfg: &HarnessConfig, minutes: usize) -> Account {
    let mut keys = Vec::new();
    for k in 0..cfg.busy_keys_per_account {
        let global = u64::from(a) * u64::from(cfg.busy_keys_per_account) + u64::from(k);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(global);
        let series = (global % loops.len() as u64) as usize;
        let mean = log_uniform(cfg.mean_rate_range, &mut rng);
        let offset = rng.random_range(0..loops[series].len());
        keys.push((
            Some(series),
            draw_counts(&loops[series], mean, offset, minutes, &mut rng),
        ));
    }
    for k in 0..cfg.sparse_keys_per_account {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream((1 << 32) + u64::from(a) * 1024 + u64::from(k));
        let rate = log_uniform(cfg.sparse_rate_range, &mut rng);
        keys.push((None, draw_counts(&[], rate, 0, minutes, &mut rng)));
    }
    Account { keys }
}

/// Per key of one account and sensitivity: the minutes (since the account's start) its
/// Insights started at.
type JobResult = Result<Vec<Vec<usize>>, CalibrationError>;

/// Starts per key of one account under one detector configuration.
fn run_account(a: u32, account: &Account, config: &DetectorConfig, minutes: usize) -> JobResult {
    let n = account.keys.len();
    let lookup = SimKeys {
        account: 5 + a,
        names: (0..n)
            .map(|k| format!("PutCalibrationItem{k:03}"))
            .collect(),
        first_name: 5 + ACCOUNT_SYMBOLS,
        history_start: START_MINUTE,
    };
    let mut det = Detector::new(config.clone(), config.policy()?);
    let mut out: Vec<Transition> = Vec::new();
    let mut starts = vec![Vec::new(); n];
    for m in 0..minutes {
        let samples = account
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.1[m] > 0)
            .map(|(id, k)| {
                let count = k.1[m];
                (
                    id as KeyId,
                    MinuteSample {
                        count,
                        attributions: AttributionCounts {
                            principal: vec![(2, count)],
                            user_agent: vec![(3, count)],
                            error_code: vec![(4, count)],
                        },
                    },
                )
            })
            .collect();
        det.close_minute(
            &ClosedMinute {
                minute: START_MINUTE + m as i64,
                samples,
            },
            &lookup,
            &mut out,
        );
        for t in out.drain(..) {
            if t.start {
                let id = t.key.event_name - lookup.first_name;
                if let Some(s) = starts.get_mut(id as usize) {
                    s.push((t.insight_start - START_MINUTE).max(0) as usize);
                }
            }
        }
    }
    Ok(starts)
}

/// Runs the calibration: builds the benign traffic of `cfg.accounts` accounts from
/// `series` (at least one; each must leave a day of benign data) and drives a detector
/// with `detector` (its `sensitivity` replaced by each of `sensitivities`) over it, one
/// account per job on `cfg.threads` threads. Deterministic for `cfg.seed`.
pub fn run_calibration(
    series: &[RateSeries],
    detector: &DetectorConfig,
    sensitivities: &[Sensitivity],
    cfg: &HarnessConfig,
) -> Result<CalibrationReport, CalibrationError> {
    if series.is_empty() {
        return Err(CalibrationError::Input("no series".into()));
    }
    if cfg.accounts == 0
        || cfg.accounts >= ACCOUNT_SYMBOLS
        || cfg.days_after_warmup <= cfg.settle_days
    {
        return Err(CalibrationError::Input(
            "need at least one account and one measured day after warm-up and settling".into(),
        ));
    }
    detector.validate()?;
    let loops = series
        .iter()
        .map(benign_loop)
        .collect::<Result<Vec<_>, _>>()?;
    let warmup = detector.warmup_minutes as usize;
    let minutes = warmup + cfg.days_after_warmup as usize * DAY;
    let accounts: Vec<Account> = (0..cfg.accounts)
        .map(|a| build_account(a, &loops, cfg, minutes))
        .collect();
    let configs: Vec<DetectorConfig> = sensitivities
        .iter()
        .map(|s| DetectorConfig {
            sensitivity: *s,
            ..detector.clone()
        })
        .collect();
    let jobs: Vec<(usize, usize)> = (0..configs.len())
        .flat_map(|s| (0..accounts.len()).map(move |a| (s, a)))
        .collect();
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        cfg.threads
    }
    .clamp(1, jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Vec<(usize, JobResult)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(s, a)) = jobs.get(j) else { break };
                        done.push((j, run_account(a as u32, &accounts[a], &configs[s], minutes)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut per_job: Vec<Option<Vec<Vec<usize>>>> = vec![None; jobs.len()];
    for (j, r) in results.into_iter().flatten() {
        per_job[j] = Some(r?);
    }
    let days = f64::from(cfg.days_after_warmup - cfg.settle_days);
    let settle = cfg.settle_days as usize;
    let busy_keys = f64::from(cfg.accounts * cfg.busy_keys_per_account);
    let sparse_keys = f64::from(cfg.accounts * cfg.sparse_keys_per_account);
    let account_days = f64::from(cfg.accounts) * days;
    let mut keys_per_series = vec![0u32; series.len()];
    for acc in &accounts {
        for (s, _) in &acc.keys {
            if let Some(s) = s {
                keys_per_series[*s] += 1;
            }
        }
    }
    // False Insights by sensitivity, source series (the last row: sparse keys) and day after
    // warm-up (by Insight start); the report's figures are its marginal sums.
    let n_series = series.len();
    let mut starts = Array3::<u64>::zeros((
        sensitivities.len(),
        n_series + 1,
        cfg.days_after_warmup as usize,
    ));
    for (j, &(si, a)) in jobs.iter().enumerate() {
        for (k, key_starts) in per_job[j].as_deref().unwrap_or(&[]).iter().enumerate() {
            let row = accounts[a].keys[k].0.unwrap_or(n_series);
            for m in key_starts {
                let day = m.saturating_sub(warmup) / DAY;
                if let Some(n) = starts.get_mut((si, row, day)) {
                    *n += 1;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (si, s) in sensitivities.iter().enumerate() {
        let measured = starts.slice(ndarray::s![si, .., settle..]);
        let by_series = measured
            .slice(ndarray::s![..n_series, ..])
            .sum_axis(Axis(1));
        let busy = by_series.sum();
        let sparse = measured.slice(ndarray::s![n_series, ..]).sum();
        let by_day = starts
            .slice(ndarray::s![si, ..n_series, ..])
            .sum_axis(Axis(0));
        out.push(SensitivityResult {
            sensitivity: *s,
            nominal_per_key_per_30_days: s.false_insights_per_key_per_30_days(),
            busy_per_key_per_30_days: RateEstimate::new(busy, busy_keys * days / 30.0),
            busy_per_account_day: RateEstimate::new(busy, account_days),
            sparse_per_key_per_30_days: RateEstimate::new(sparse, sparse_keys * days / 30.0),
            starts_per_series: by_series.to_vec(),
            starts_per_day: by_day.to_vec(),
        });
    }
    Ok(CalibrationReport {
        series: series.iter().map(|s| s.name.clone()).collect(),
        keys_per_series,
        loop_days_per_series: loops.iter().map(|l| (l.len() / DAY) as u32).collect(),
        busy_key_days: busy_keys * days,
        sparse_key_days: sparse_keys * days,
        account_days,
        results: out,
    })
}

fn sensitivity_name(s: Sensitivity) -> &'static str {
    match s {
        Sensitivity::Low => "low",
        Sensitivity::Medium => "medium",
        Sensitivity::High => "high",
    }
}

fn fmt_estimate(e: &RateEstimate) -> String {
    if e.exposure > 0.0 {
        format!("{:.3} [{:.3}, {:.3}]", e.rate, e.lower, e.upper)
    } else {
        "–".to_string()
    }
}

/// The report as markdown: one row per sensitivity (nominal budget; observed false
/// Insights per busy key per 30 days and per account-day with 95 % exact Poisson intervals;
/// sparse keys; exposure), then busy-key false Insights per series.
pub fn markdown_table(report: &CalibrationReport) -> String {
    let mut s = String::from(
        "| sensitivity | nominal /key/30d | Starts (busy) | observed /key/30d [95 %] | /account-day [95 %] | Starts (sparse) | sparse /key/30d [95 %] | budget met |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in &report.results {
        let b = &r.busy_per_key_per_30_days;
        let verdict = if b.lower > r.nominal_per_key_per_30_days {
            "**no** (above budget)"
        } else if b.upper < r.nominal_per_key_per_30_days {
            "yes (below budget)"
        } else {
            "yes (within interval)"
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            sensitivity_name(r.sensitivity),
            r.nominal_per_key_per_30_days,
            b.count,
            fmt_estimate(b),
            fmt_estimate(&r.busy_per_account_day),
            r.sparse_per_key_per_30_days.count,
            fmt_estimate(&r.sparse_per_key_per_30_days),
            verdict,
        ));
    }
    s.push_str(&format!(
        "\nMeasured after warm-up and settling: {:.0} busy key-days, {:.0} sparse key-days, {:.0} account-days.\n\n",
        report.busy_key_days, report.sparse_key_days, report.account_days
    ));
    s.push_str("| series | busy keys | benign loop, days |");
    for r in &report.results {
        s.push_str(&format!(" Starts ({}) |", sensitivity_name(r.sensitivity)));
    }
    s.push_str("\n|---|---|---|");
    s.push_str(&"---|".repeat(report.results.len()));
    s.push('\n');
    for (i, name) in report.series.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} | {} |",
            name, report.keys_per_series[i], report.loop_days_per_series[i]
        ));
        for r in &report.results {
            s.push_str(&format!(" {} |", r.starts_per_series[i]));
        }
        s.push('\n');
    }
    s.push_str("\nBusy-key Starts per day after warm-up:\n\n");
    for r in &report.results {
        let days: Vec<String> = r.starts_per_day.iter().map(u64::to_string).collect();
        s.push_str(&format!(
            "- {}: {}\n",
            sensitivity_name(r.sensitivity),
            days.join(" ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-12)
    }

    #[test]
    fn exact_poisson_interval_matches_published_values() {
        // Garwood intervals (e.g. Ulm 1990; R's poisson.test).
        let cases = [
            (0, 0.0, 3.688879),
            (1, 0.025318, 5.571643),
            (2, 0.242209, 7.224688),
            (5, 1.623486, 11.668332),
            (10, 4.795389, 18.390356),
        ];
        for (k, lo, hi) in cases {
            let (l, h) = poisson_interval(k, 0.95);
            assert!(
                close(l, lo, 1e-5) || (lo == 0.0 && l == 0.0),
                "{k}: {l} vs {lo}"
            );
            assert!(close(h, hi, 1e-5), "{k}: {h} vs {hi}");
        }
        let e = RateEstimate::new(10, 20.0);
        assert!(close(e.rate, 0.5, 1e-12));
        assert!(close(e.lower, 4.795389 / 20.0, 1e-5));
    }

    #[test]
    fn spreading_preserves_totals_and_bucket_means() {
        let v = [3.0, 0.0, 10.0, 4.0, 4.0, 1.0];
        for b in [1u32, 5, 30] {
            let m = spread_to_minutes(&v, b);
            assert_eq!(m.len(), v.len() * b as usize);
            assert!(m.iter().all(|x| *x >= 0.0));
            for (i, x) in v.iter().enumerate() {
                let bucket = &m[i * b as usize..(i + 1) * b as usize];
                let mean = bucket.iter().sum::<f64>() / f64::from(b);
                assert!((mean - x).abs() < 1e-9, "bucket {i}: {mean} vs {x}");
            }
        }
        // Interpolation: within a bucket between a low and a high one, minutes rise.
        let m = spread_to_minutes(&[1.0, 1.0, 5.0], 5);
        assert!(m[5] < m[9]);
    }

    #[test]
    fn csv_goes_onto_a_grid_and_windows_are_excluded() {
        let text = "timestamp,value\n2014-04-10 00:04:00,1\n2014-04-10 00:09:00,2\n\
                    2014-04-10 00:19:00,4\n2014-04-10 00:24:00,5\n2014-04-10 00:29:00,6\n";
        let w = parse_label_windows(
            r#"{"x.csv": [["2014-04-10 00:20:00.000000", "2014-04-10 00:24:00.000000"]]}"#,
            "x.csv",
        )
        .unwrap();
        let s = parse_series_csv("x.csv", text, &w).unwrap();
        assert_eq!(s.bucket_minutes, 5);
        assert_eq!(s.values.len(), 6);
        assert!(s.values[2].is_nan());
        assert_eq!(s.values[3], 4.0);
        assert_eq!(s.excluded, std::iter::once(3..5).collect::<Vec<_>>());
        let seg = benign_segments(&s);
        // The one-bucket gap is interpolated; the window cuts buckets 3 and 4.
        assert_eq!(seg.len(), 2);
        assert_eq!(seg[0].1, vec![1.0, 2.0, 3.0]);
        assert_eq!(seg[1], (s.start_minute + 25, vec![6.0]));
        assert_eq!(parse_label_windows("{}", "x.csv").unwrap(), vec![]);
    }

    #[test]
    fn benign_loop_is_whole_days_in_phase_with_mean_one() {
        // A 30-minute series, 5 days with a daily cycle, one day-long anomaly window cut out
        // mid-day: the loop keeps the daily phase.
        let per_day = 48;
        let values: Vec<f64> = (0..5 * per_day)
            .map(|i| 10.0 + 5.0 * (2.0 * std::f64::consts::PI * (i % per_day) as f64 / 48.0).sin())
            .collect();
        let s = RateSeries {
            name: "t".into(),
            bucket_minutes: 30,
            start_minute: START_MINUTE,
            values,
            excluded: std::iter::once(60..100).collect(),
        };
        let l = benign_loop(&s).unwrap();
        assert_eq!(l.len() % DAY, 0);
        assert!(l.len() >= 3 * DAY);
        let mean = l.iter().sum::<f64>() / l.len() as f64;
        assert!((mean - 1.0).abs() < 1e-9);
        // Daily phase: the same minute of every day has about the same rate.
        for d in 1..l.len() / DAY {
            for m in (0..DAY).step_by(97) {
                let (a, b) = (l[m + SEAM_RAMP_MINUTES], l[d * DAY + m + SEAM_RAMP_MINUTES]);
                assert!((a - b).abs() < 0.05, "day {d} minute {m}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn counts_are_deterministic_and_poisson_around_the_rate() {
        let shape = vec![1.0; 100];
        let mut r1 = ChaCha8Rng::seed_from_u64(7);
        let mut r2 = ChaCha8Rng::seed_from_u64(7);
        let a = draw_counts(&shape, 4.0, 3, 20_000, &mut r1);
        assert_eq!(a, draw_counts(&shape, 4.0, 3, 20_000, &mut r2));
        let mean = a.iter().map(|c| f64::from(*c)).sum::<f64>() / a.len() as f64;
        let var = a
            .iter()
            .map(|c| (f64::from(*c) - mean).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        assert!(
            (mean - 4.0).abs() < 0.1 && (var - 4.0).abs() < 0.3,
            "{mean} {var}"
        );
        assert_eq!(draw_counts(&[0.0], 5.0, 0, 10, &mut r1), vec![0; 10]);
    }

    #[test]
    fn sets_are_disjoint_and_named() {
        assert!(
            TUNE_NAB_SERIES
                .iter()
                .all(|s| !REPORT_NAB_SERIES.contains(s))
        );
        assert!(
            TUNE_NAB_SERIES
                .iter()
                .chain(REPORT_NAB_SERIES)
                .all(|s| !s.starts_with("realTweets"))
        );
        assert_eq!("report".parse::<SeriesSet>().unwrap(), SeriesSet::Report);
        assert!("x".parse::<SeriesSet>().is_err());
        assert!(SeriesSet::Tune.includes_twitter() && !SeriesSet::Report.includes_twitter());
    }
}
