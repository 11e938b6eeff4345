//! Scoring a univariate rate series (Numenta Anomaly Benchmark style): the
//! baseline engine's ideas — a seasonal (time-of-day) baseline with a robust
//! spread, tail probabilities at several time scales with a Bonferroni
//! correction, anomalous points kept out of the baseline, level shifts
//! accepted after a while, and an Insight-like open/quiet state — applied to
//! real-valued measurements.
//!
//! Values may be non-integer or negative, so the count models give way to a
//! normal tail on a robust z-score: for each bucket the expected value is the
//! median of the same time-of-day slot over the previous days (or of the last
//! day while fewer than `min_days` are known) and the spread is 1.4826 × the
//! MAD (median absolute deviation), floored by a fraction of the series' own
//! spread. Drops count as well as rises (two-sided), since a missing daily
//! peak is as anomalous in a rate series as a burst.

use std::collections::VecDeque;

use statrs::distribution::{ContinuousCDF, Normal};

/// Settings of the series scorer.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesConfig {
    /// Bucket length, seconds (e.g. 300 for NAB's 5-minute series).
    pub bucket_seconds: i64,
    /// Days of same-slot history kept.
    pub history_days: usize,
    /// Days of history before the seasonal profile is used.
    pub min_days: usize,
    /// Test windows, in buckets.
    pub windows: Vec<usize>,
    /// Family-wise tail probability for opening an Insight.
    pub tail_probability: f64,
    /// Buckets back at baseline that close an Insight.
    pub end_after_quiet: usize,
    /// Buckets after which an open Insight is taken as a level shift and learnt.
    pub level_shift_after: usize,
}

impl SeriesConfig {
    /// Defaults for a series bucketed by `bucket_seconds`.
    pub fn for_bucket(bucket_seconds: i64) -> Self {
        let per_hour = (3600 / bucket_seconds.max(1)).max(1) as usize;
        SeriesConfig {
            bucket_seconds: bucket_seconds.max(1),
            history_days: 14,
            min_days: 2,
            windows: vec![1, per_hour.max(2)],
            tail_probability: 1e-4,
            end_after_quiet: per_hour.max(2),
            level_shift_after: 24 * per_hour,
        }
    }
}

/// One scored point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPoint {
    /// Anomaly score in `[0, 1]`: 1 − the Bonferroni-corrected two-sided tail probability.
    pub anomaly_score: f64,
    /// 1 while an Insight would be open.
    pub label: u8,
}

/// An open Insight on a series: (first point, last anomalous point, held-back points).
type OpenRun = (usize, usize, Vec<(usize, f64)>);

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median and 1.4826 × MAD of `values`.
pub fn robust_location_scale(values: &[f64]) -> (f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let med = median(&mut v);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    (med, 1.4826 * median(&mut dev))
}

/// Scores a series of `(unix seconds, value)` points in time order.
///
/// Returns one [`ScoredPoint`] per input point. Never panics on NaN or
/// infinite values (they score 0 and are not learnt).
pub fn score_series(points: &[(i64, f64)], cfg: &SeriesConfig) -> Vec<ScoredPoint> {
    let per_day = (86_400 / cfg.bucket_seconds).max(1) as usize;
    let mut slots: Vec<VecDeque<f64>> = vec![VecDeque::new(); per_day];
    let mut resid_hist: VecDeque<f64> = VecDeque::new(); // last day of learnt residuals
    let mut slot_resid: Vec<VecDeque<f64>> = vec![VecDeque::new(); per_day];
    let mut dev_hist: Vec<VecDeque<f64>> = vec![VecDeque::new(); cfg.windows.len()];
    let per_hour = (3600 / cfg.bucket_seconds).max(1) as usize;
    let mut residuals: VecDeque<(f64, f64, f64)> = VecDeque::new(); // (value, expected, scale) of recent points
    let max_window = cfg.windows.iter().copied().max().unwrap_or(1);
    let normal = Normal::standard();
    let per_window = cfg.tail_probability / cfg.windows.len().max(1) as f64;
    let mut open: Option<OpenRun> = None;
    let mut out = Vec::with_capacity(points.len());
    for (i, &(t, v)) in points.iter().enumerate() {
        let slot = (t.rem_euclid(86_400) / cfg.bucket_seconds) as usize % per_day;
        let days_known = slots[slot].len();
        let (expected, _) = robust_location_scale(slots[slot].make_contiguous());
        // The spread is that of the residuals around the profile in the slots within an hour of
        // this one (a slot alone has only a few days; noise often differs between day and
        // night), floored so a noise-free series does not make every rounding error
        // infinitely significant.
        let near: Vec<f64> = (0..=2 * per_hour)
            .flat_map(|d| {
                slot_resid[(slot + per_day + d - per_hour) % per_day]
                    .iter()
                    .copied()
            })
            .collect();
        let (_, local_scale) = robust_location_scale(&near);
        let (_, resid_scale) = robust_location_scale(resid_hist.make_contiguous());
        let scale = local_scale
            .max(0.25 * resid_scale)
            .max(1e-3 * (expected.abs() + 1.0));
        // Learning period: no score until every slot has `min_days` days of history.
        let enough = days_known >= cfg.min_days && resid_hist.len() >= per_day / 4 && v.is_finite();
        residuals.push_back((v, expected, scale));
        if residuals.len() > max_window {
            residuals.pop_front();
        }
        let mut p_min = 1.0f64;
        let mut window_dev = vec![0.0f64; cfg.windows.len()];
        for (k, &w) in cfg.windows.iter().enumerate() {
            if residuals.len() < w {
                continue;
            }
            let tail = residuals.iter().rev().take(w);
            let (dv, s2) = tail.fold((0.0, 0.0), |(d, s), &(x, e, sc)| (d + (x - e), s + sc * sc));
            window_dev[k] = dv.abs();
            if !enough {
                continue;
            }
            // Neighbouring points are correlated: scale the window's spread as if half independent.
            let z = dv / (s2.sqrt() * (w as f64).sqrt().sqrt());
            let mut p = (2.0 * normal.sf(z.abs())).min(1.0);
            // A deviation this large that happened before (and was learnt as normal) is not
            // rare: use its empirical frequency (spiky series such as a load balancer's).
            let seen = dev_hist[k].iter().filter(|&&d| d >= dv.abs()).count();
            if seen > 0 {
                p = p.max((seen + 1) as f64 / (dev_hist[k].len() + 1) as f64);
            }
            p_min = p_min.min(p * cfg.windows.len() as f64);
        }
        let p_adj = p_min.min(1.0);
        let anomalous = enough
            && p_adj
                < cfg
                    .tail_probability
                    .max(per_window * cfg.windows.len() as f64);
        let mut label = 0u8;
        let mut learn_now = vec![(i, v)];
        match open.as_mut() {
            None if anomalous => {
                open = Some((i, i, vec![(i, v)]));
                learn_now.clear();
                label = 1;
            }
            None => {}
            Some((start, last, held)) => {
                label = 1;
                held.push((i, v));
                learn_now.clear();
                if anomalous {
                    *last = i;
                }
                if i - *start >= cfg.level_shift_after {
                    // A lasting change is the new normal.
                    learn_now = std::mem::take(held);
                    open = None;
                } else if i - *last >= cfg.end_after_quiet {
                    // Back at baseline: the quiet points are normal, the anomalous ones stay out.
                    let last = *last;
                    learn_now = held.iter().copied().filter(|(j, _)| *j > last).collect();
                    open = None;
                }
            }
        }
        if learn_now.iter().any(|(j, _)| *j == i) {
            for (k, d) in window_dev.iter().enumerate() {
                dev_hist[k].push_back(*d);
                if dev_hist[k].len() > 7 * per_day {
                    dev_hist[k].pop_front();
                }
            }
        }
        for (j, x) in learn_now {
            if !x.is_finite() {
                continue;
            }
            let s = (points[j].0.rem_euclid(86_400) / cfg.bucket_seconds) as usize % per_day;
            if !slots[s].is_empty() {
                let (e, _) = robust_location_scale(slots[s].make_contiguous());
                resid_hist.push_back(x - e);
                if resid_hist.len() > per_day {
                    resid_hist.pop_front();
                }
                slot_resid[s].push_back(x - e);
                if slot_resid[s].len() > cfg.history_days {
                    slot_resid[s].pop_front();
                }
            }
            slots[s].push_back(x);
            if slots[s].len() > cfg.history_days {
                slots[s].pop_front();
            }
        }
        let score = if enough {
            (1.0 - p_adj).clamp(0.0, 1.0)
        } else {
            0.0
        };
        out.push(ScoredPoint {
            anomaly_score: score,
            label,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily(days: usize, bucket: i64, f: impl Fn(usize, f64) -> f64) -> Vec<(i64, f64)> {
        let per_day = (86_400 / bucket) as usize;
        (0..days * per_day)
            .map(|i| {
                let phase = (i % per_day) as f64 / per_day as f64;
                (i as i64 * bucket, f(i, phase))
            })
            .collect()
    }

    #[test]
    fn a_spike_after_quiet_days_is_flagged_and_the_cycle_is_not() {
        let bucket = 300;
        let mut pts = daily(10, bucket, |i, ph| {
            50.0 + 20.0 * (ph * std::f64::consts::TAU).sin() + ((i * 7919) % 13) as f64 * 0.3
        });
        let spike = 8 * 288 + 100;
        pts[spike].1 += 60.0;
        let scored = score_series(&pts, &SeriesConfig::for_bucket(bucket));
        assert_eq!(scored.len(), pts.len());
        assert_eq!(scored[spike].label, 1);
        assert!(scored[spike].anomaly_score > 0.99);
        let false_labels = scored[2 * 288..8 * 288]
            .iter()
            .filter(|s| s.label == 1)
            .count();
        assert_eq!(false_labels, 0);
        assert!(
            scored
                .iter()
                .all(|s| (0.0..=1.0).contains(&s.anomaly_score))
        );
    }

    #[test]
    fn a_missing_daily_peak_is_a_drop() {
        let bucket = 300;
        let pts = daily(10, bucket, |i, ph| {
            let day = i / 288;
            let peak = if (0.4..0.5).contains(&ph) && day != 8 {
                80.0
            } else {
                0.0
            };
            20.0 + peak + ((i * 31) % 7) as f64 * 0.2
        });
        let scored = score_series(&pts, &SeriesConfig::for_bucket(bucket));
        let missing = 8 * 288 + (0.45 * 288.0) as usize;
        assert_eq!(scored[missing].label, 1);
    }

    #[test]
    fn nan_and_flat_series_never_panic() {
        let mut pts: Vec<(i64, f64)> = (0..2000).map(|i| (i * 300, 45.0)).collect();
        pts[1500].1 = f64::NAN;
        let scored = score_series(&pts, &SeriesConfig::for_bucket(300));
        assert_eq!(scored[1500].anomaly_score, 0.0);
        assert!(scored.iter().filter(|s| s.label == 1).count() <= 1);
    }
}
