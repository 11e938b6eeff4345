//! Scoring a univariate series for anomalies (Numenta Anomaly Benchmark
//! style): one anomaly score per point, high at the onset of an anomaly and
//! low again once the anomaly is under way.
//!
//! # Model
//!
//! For each point `x_t` (online, from the first point on):
//!
//! 1. **Multi-scale means.** `m_w(t)`, the mean of the last `w` points, for
//!    each scale `w` in `scales` (1, 4 and 16 points: a spike, a short burst,
//!    a shift of the level).
//! 2. **Reference = the series' own past.** Each scale keeps the last
//!    `history` values of `m_w` that do not overlap the current window
//!    (`m_w(s)`, `s <= t − w`). Nothing is assumed about the distribution.
//! 3. **Tail probability.** `p_w` = two-sided tail probability of `m_w(t)` in
//!    that reference: the rank estimate `2(k+1)/(n+1)` inside the sample's
//!    outer 10 %, and beyond it an exponential (generalized Pareto, shape 0)
//!    tail fitted by the mean excess of those outer values
//!    ([`pot_two_sided`]), floored at the rank estimate while the reference
//!    holds values at least as far out (a spike the series has shown before,
//!    e.g. a daily job, is no record however quiet the rest is). A series
//!    with heavy tails is therefore not surprised by its next record, and a
//!    quiet one is.
//! 4. **Daily and weekly context.** The residuals `x_t − median(same
//!    time-of-day slot, last `profile_days` days)` and `x_t − median(same
//!    time-of-week slot, last `profile_weeks` weeks)` go through steps 1–3
//!    as two more families, both learnt at every point; the one whose
//!    residuals spread least is tested, and only while it explains the
//!    series (its residuals spread less than `profile_max_spread_ratio` ×
//!    the values): a missing daily peak, or a weekday that looks like a
//!    holiday, is then anomalous although its value is common. Picking one
//!    profile keeps the Bonferroni family at two × the scales.
//! 5. **Surprise.** All tests are combined with Bonferroni, `p = min(1, K ×
//!    min p_i)`, and turned into bits, `b_t = −log2 p`.
//! 6. **Onset.** A point keeps its surprise only if it beats every surprise
//!    of the previous `refractory` points; otherwise it is multiplied by
//!    `repeat_factor` (0): an anomaly raises one alarm at its onset, or a new
//!    one when it grows, rather than a plateau of alarms, and as the
//!    anomalous values enter the reference their own rank makes them common.
//!    A kept surprise of at least `burst_bits` also opens a burst: for the
//!    next `burst_gap` points (4, the short-burst scale, while its window
//!    still holds the alarm's point) no new alarm is raised, as the rising
//!    multi-scale means of a burst are the same event, not a growing one.
//! 7. **Score.** `b / (b + half_score_bits)` in `[0, 1)`: monotone, so one
//!    threshold on it is one threshold on the surprise in bits, comparable
//!    across series because every test is calibrated on its own series.
//!
//! Tests start once a reference holds `min_history` values (300 points, a
//! day of five-minute buckets): there is no longer learning period, as the
//! rank estimate cannot claim more than `log2((n+1)/2)` bits inside a sample
//! of `n`.

pub mod csv;

use std::collections::VecDeque;

use trailsight_baseline::multiscale::MultiScaleMean;
use trailsight_baseline::robust::SortedWindow;
use trailsight_baseline::seasonal::{DAY_SECONDS, SlotProfile};
use trailsight_baseline::surprise::{bonferroni, pot_two_sided, surprise_bits};

/// Settings of the series scorer. Lengths are in points (rows), not seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesConfig {
    /// Window lengths of the trailing means that are tested.
    pub scales: Vec<usize>,
    /// Past window means kept as the reference distribution of each scale.
    pub history: usize,
    /// Reference values needed before a scale is tested.
    pub min_history: usize,
    /// Share of the reference taken as its tail (peaks over threshold).
    pub tail_fraction: f64,
    /// Fewest reference values taken as the tail.
    pub min_tail: usize,
    /// Floor of the tail's scale, as a multiple of the reference's robust standard deviation.
    pub tail_scale_floor: f64,
    /// Points over which a new alarm must beat the surprise already seen.
    pub refractory: usize,
    /// Factor applied to a surprise that does not beat the recent maximum.
    pub repeat_factor: f64,
    /// Points after a kept surprise of at least `burst_bits` during which
    /// no new alarm is raised (0: none).
    pub burst_gap: usize,
    /// Surprise (bits) that opens a burst.
    pub burst_bits: f64,
    /// Surprise (bits) that maps to an anomaly score of 0.5.
    pub half_score_bits: f64,
    /// Anomaly score at or above which a point is labeled 1.
    pub label_threshold: f64,
    /// Days of history per time-of-day slot (0: no daily profile).
    pub profile_days: usize,
    /// The daily profile is tested while its residuals' spread is below this
    /// share of the values' spread.
    pub profile_max_spread_ratio: f64,
    /// Days a slot needs before the daily profile is used.
    pub profile_min_days: usize,
    /// Weeks of history per time-of-week slot (0: no weekly profile).
    pub profile_weeks: usize,
    /// Weeks a slot needs before the weekly profile is used.
    pub profile_min_weeks: usize,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        SeriesConfig {
            scales: vec![1, 4, 16],
            history: 8640,
            min_history: 300,
            tail_fraction: 0.1,
            min_tail: 5,
            tail_scale_floor: 0.1,
            refractory: 100,
            repeat_factor: 0.0,
            burst_gap: 4,
            burst_bits: 4.0,
            half_score_bits: 10.0,
            label_threshold: 0.5,
            profile_days: 7,
            profile_min_days: 3,
            profile_max_spread_ratio: 0.3,
            profile_weeks: 4,
            profile_min_weeks: 2,
        }
    }
}

/// One scored point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPoint {
    /// Anomaly score in `[0, 1)`.
    pub anomaly_score: f64,
    /// 1 when `anomaly_score >= label_threshold`.
    pub label: u8,
}

struct Scale {
    w: usize,
    reference: SortedWindow,
    delay: VecDeque<f64>,
}

/// Multi-scale tests of one derived series (the values, or their residuals).
struct Family {
    means: MultiScaleMean,
    scales: Vec<Scale>,
    dispersion: MeanAbsDeviation,
}

/// Running mean absolute deviation of a series from its reference median
/// (mean over the last `horizon` points, exponentially weighted). Unlike the
/// interquartile range it sees a daily peak that fills a tenth of the day.
struct MeanAbsDeviation {
    horizon: f64,
    n: f64,
    mean: f64,
}

impl MeanAbsDeviation {
    fn push(&mut self, d: f64) {
        if d.is_finite() {
            self.n += 1.0;
            self.mean += (d.abs() - self.mean) / self.n.min(self.horizon);
        }
    }

    /// The mean absolute deviation; infinite before any value.
    fn value(&self) -> f64 {
        if self.n > 0.0 {
            self.mean
        } else {
            f64::INFINITY
        }
    }
}

impl Family {
    fn new(cfg: &SeriesConfig) -> Self {
        let means = MultiScaleMean::new(&cfg.scales);
        let scales = means
            .scales()
            .iter()
            .map(|&w| Scale {
                w,
                reference: SortedWindow::new(cfg.history),
                delay: VecDeque::new(),
            })
            .collect();
        Family {
            means,
            scales,
            dispersion: MeanAbsDeviation {
                horizon: cfg.history as f64,
                n: 0.0,
                mean: 0.0,
            },
        }
    }

    /// Pushes `x` and appends the two-sided p-value of each testable scale to `ps`.
    fn test(&mut self, x: f64, cfg: &SeriesConfig, ps: &mut Vec<f64>) {
        self.means.push(x);
        if let Some(c) = self.scales.first().and_then(|s| s.reference.median()) {
            self.dispersion.push(x - c);
        }
        for (s, m) in self.scales.iter_mut().zip(self.means.means()) {
            let Some(m) = m else { continue };
            if s.reference.len() >= cfg.min_history
                && let (Some(c), Some(sd)) = (s.reference.median(), s.reference.robust_sd())
            {
                let floor = (cfg.tail_scale_floor * sd).max(1e-9 * (c.abs() + 1.0));
                ps.push(pot_two_sided(
                    &s.reference,
                    c,
                    m,
                    cfg.tail_fraction,
                    cfg.min_tail,
                    floor,
                ));
            }
            s.delay.push_back(m);
            if s.delay.len() > s.w
                && let Some(old) = s.delay.pop_front()
            {
                s.reference.push(old);
            }
        }
    }
}

/// Online scorer of one series.
pub struct SeriesScorer {
    cfg: SeriesConfig,
    level: Family,
    residual: Family,
    profile: Option<SlotProfile>,
    weekly: Family,
    week_profile: Option<SlotProfile>,
    recent: VecDeque<f64>,
    since_kept: usize,
}

impl SeriesScorer {
    /// A scorer with no history for a series sampled every `bucket_seconds`.
    pub fn new(cfg: SeriesConfig, bucket_seconds: i64) -> Self {
        let profile =
            (cfg.profile_days > 0).then(|| SlotProfile::new(bucket_seconds, cfg.profile_days));
        let week_profile = (cfg.profile_weeks > 0)
            .then(|| SlotProfile::with_period(bucket_seconds, 7 * DAY_SECONDS, cfg.profile_weeks));
        SeriesScorer {
            level: Family::new(&cfg),
            residual: Family::new(&cfg),
            profile,
            weekly: Family::new(&cfg),
            week_profile,
            recent: VecDeque::new(),
            since_kept: usize::MAX,
            cfg,
        }
    }

    /// Surprise in bits of the newest point at every scale (Bonferroni-combined).
    fn surprise(&mut self, t: i64, x: f64) -> f64 {
        let mut ps = Vec::with_capacity(2 * self.cfg.scales.len());
        self.level.test(x, &self.cfg, &mut ps);
        // Each profile's residuals are tested (and learnt) every point; the one
        // that explains the series best is used, while it explains it at all:
        // its residuals spread less than `profile_max_spread_ratio` x the values.
        let limit = self.cfg.profile_max_spread_ratio * self.level.dispersion.value();
        let mut best: Option<(f64, Vec<f64>)> = None;
        for (family, profile, min) in [
            (
                &mut self.residual,
                self.profile.as_mut(),
                self.cfg.profile_min_days,
            ),
            (
                &mut self.weekly,
                self.week_profile.as_mut(),
                self.cfg.profile_min_weeks,
            ),
        ] {
            let Some(profile) = profile else { continue };
            if let Some(e) = profile.expected(t, min) {
                let spread = family.dispersion.value();
                let mut rp = Vec::new();
                family.test(x - e, &self.cfg, &mut rp);
                if spread < limit && best.as_ref().is_none_or(|(b, _)| spread < *b) {
                    best = Some((spread, rp));
                }
            }
            profile.push(t, x);
        }
        if let Some((_, rp)) = best {
            ps.extend(rp);
        }
        if ps.is_empty() {
            0.0
        } else {
            surprise_bits(bonferroni(&ps))
        }
    }

    /// Scores the point `x` at Unix time `t` (seconds), the next in time order.
    pub fn push(&mut self, t: i64, x: f64) -> ScoredPoint {
        let bits = if x.is_finite() {
            self.surprise(t, x)
        } else {
            0.0
        };
        let prev_max = self.recent.iter().copied().fold(0.0f64, f64::max);
        self.since_kept = self.since_kept.saturating_add(1);
        let effective = if bits > prev_max && self.since_kept > self.cfg.burst_gap {
            if bits >= self.cfg.burst_bits {
                self.since_kept = 0;
            }
            bits
        } else {
            self.cfg.repeat_factor * bits
        };
        self.recent.push_back(bits);
        if self.recent.len() > self.cfg.refractory {
            self.recent.pop_front();
        }
        let anomaly_score = effective / (effective + self.cfg.half_score_bits);
        ScoredPoint {
            anomaly_score,
            label: u8::from(anomaly_score >= self.cfg.label_threshold),
        }
    }
}

/// Scores a whole series of `(unix seconds, value)` points in time order,
/// sampled every `bucket_seconds`: one [`ScoredPoint`] per point. Never
/// panics on NaN, infinite or empty input (non-finite values score 0 and are
/// not learnt).
pub fn score_series(
    points: &[(i64, f64)],
    bucket_seconds: i64,
    cfg: &SeriesConfig,
) -> Vec<ScoredPoint> {
    let mut scorer = SeriesScorer::new(cfg.clone(), bucket_seconds);
    points.iter().map(|&(t, x)| scorer.push(t, x)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily(days: usize, f: impl Fn(usize, f64) -> f64) -> Vec<(i64, f64)> {
        (0..days * 288)
            .map(|i| {
                let phase = (i % 288) as f64 / 288.0;
                (i as i64 * 300, f(i, phase))
            })
            .collect()
    }

    fn noise(i: usize) -> f64 {
        // A deterministic pseudo-random value in [0, 1).
        ((i as u64).wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0
    }

    #[test]
    fn a_spike_is_flagged_at_its_onset_and_normal_days_are_not() {
        let mut pts = daily(10, |i, ph| {
            50.0 + 20.0 * (ph * std::f64::consts::TAU).sin() + 3.0 * noise(i)
        });
        let spike = 8 * 288 + 100;
        pts[spike].1 += 60.0;
        let scored = score_series(&pts, 300, &SeriesConfig::default());
        assert_eq!(scored.len(), pts.len());
        assert_eq!(scored[spike].label, 1);
        let normal_max = scored[2 * 288..8 * 288]
            .iter()
            .map(|s| s.anomaly_score)
            .fold(0.0, f64::max);
        assert!(scored[spike].anomaly_score > normal_max, "{normal_max}");
        assert!(scored.iter().all(|s| (0.0..1.0).contains(&s.anomaly_score)));
    }

    #[test]
    fn a_level_shift_scores_high_once_then_falls() {
        let pts: Vec<(i64, f64)> = (0..3000)
            .map(|i| {
                (
                    i as i64 * 300,
                    noise(i) + if i >= 2000 { 10.0 } else { 0.0 },
                )
            })
            .collect();
        let scored = score_series(&pts, 300, &SeriesConfig::default());
        let onset = scored[2000..2005]
            .iter()
            .map(|s| s.anomaly_score)
            .fold(0.0, f64::max);
        assert!(onset >= 0.5, "{onset}");
        let later = scored[2200..].iter().filter(|s| s.label == 1).count();
        assert_eq!(later, 0);
    }

    #[test]
    fn a_missing_daily_peak_is_found_by_the_daily_profile() {
        let pts = daily(10, |i, ph| {
            let day = i / 288;
            let peak = if (0.4..0.5).contains(&ph) && day != 8 {
                80.0
            } else {
                0.0
            };
            20.0 + peak + noise(i)
        });
        let scored = score_series(&pts, 300, &SeriesConfig::default());
        let start = 8 * 288 + (0.4 * 288.0) as usize;
        assert!(scored[start..start + 30].iter().any(|s| s.label == 1));
    }

    #[test]
    fn a_short_burst_raises_fewer_alarms_than_without_the_burst_gap() {
        let pts: Vec<(i64, f64)> = (0..3000)
            .map(|i| {
                let burst = if (2000..2004).contains(&i) {
                    10.0 + 2.0 * (i - 2000) as f64
                } else {
                    0.0
                };
                (i as i64 * 300, noise(i) + burst)
            })
            .collect();
        let alarms = |cfg: &SeriesConfig| {
            score_series(&pts, 300, cfg)[1990..2030]
                .iter()
                .filter(|s| s.label == 1)
                .count()
        };
        let with_gap = alarms(&SeriesConfig::default());
        let without = alarms(&SeriesConfig {
            burst_gap: 0,
            ..SeriesConfig::default()
        });
        assert!(with_gap >= 1 && with_gap < without, "{with_gap} {without}");
    }

    #[test]
    fn a_weekday_that_looks_like_a_weekend_is_found_by_the_weekly_profile() {
        // Half-hour points over six weeks: weekdays busy by day, weekends quiet.
        let pts: Vec<(i64, f64)> = (0..6 * 7 * 48)
            .map(|i| {
                let (day, slot) = (i / 48, i % 48);
                let holiday = day == 5 * 7 + 2;
                let busy = day % 7 < 5 && !holiday && (16..40).contains(&slot);
                (
                    i as i64 * 1800,
                    10.0 + if busy { 50.0 } else { 0.0 } + noise(i),
                )
            })
            .collect();
        let scored = score_series(&pts, 1800, &SeriesConfig::default());
        let start = (5 * 7 + 2) * 48 + 16;
        assert!(scored[start..start + 24].iter().any(|s| s.label == 1));
        let without = score_series(
            &pts,
            1800,
            &SeriesConfig {
                profile_weeks: 0,
                ..SeriesConfig::default()
            },
        );
        assert!(without[start..start + 24].iter().all(|s| s.label == 0));
    }

    #[test]
    fn nan_inf_empty_and_flat_series_never_panic_and_are_deterministic() {
        assert!(score_series(&[], 300, &SeriesConfig::default()).is_empty());
        let mut pts: Vec<(i64, f64)> = (0..2000).map(|i| (i * 300, 45.0)).collect();
        pts[1500].1 = f64::NAN;
        pts[1600].1 = f64::INFINITY;
        let a = score_series(&pts, 300, &SeriesConfig::default());
        assert_eq!(a[1500].anomaly_score, 0.0);
        assert_eq!(a[1600].anomaly_score, 0.0);
        assert!(a.iter().all(|s| s.label == 0));
        assert_eq!(a, score_series(&pts, 300, &SeriesConfig::default()));
    }
}
