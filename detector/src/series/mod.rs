//! Scoring a univariate series for anomalies (Numenta Anomaly Benchmark
//! style): one anomaly score per point, high at the onset of an anomaly.
//!
//! See [`SeriesScorer`] for the model.

pub mod csv;

use std::collections::VecDeque;

use trailsight_baseline::multiscale::MultiScaleMean;
use trailsight_baseline::robust::SortedWindow;
use trailsight_baseline::seasonal::SlotProfile;
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
    /// Half-life (points) of the remembered largest surprise, which a new
    /// alarm must also beat (0: no memory beyond `refractory`).
    pub memory_half_life: f64,
    /// Factor applied to a surprise that does not beat the recent maximum.
    pub repeat_factor: f64,
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
            repeat_factor: 0.2,
            memory_half_life: 0.0,
            half_score_bits: 10.0,
            label_threshold: 0.6,
            profile_days: 7,
            profile_min_days: 3,
            profile_max_spread_ratio: 0.3,
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
        Family { means, scales }
    }

    /// Robust standard deviation of the single-point reference.
    fn spread(&self) -> Option<f64> {
        self.scales.first()?.reference.robust_sd()
    }

    /// Pushes `x` and appends the two-sided p-value of each testable scale to `ps`.
    fn test(&mut self, x: f64, cfg: &SeriesConfig, ps: &mut Vec<f64>) {
        self.means.push(x);
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
    recent: VecDeque<f64>,
    memory: f64,
    decay: f64,
}

impl SeriesScorer {
    /// A scorer with no history for a series sampled every `bucket_seconds`.
    pub fn new(cfg: SeriesConfig, bucket_seconds: i64) -> Self {
        let profile =
            (cfg.profile_days > 0).then(|| SlotProfile::new(bucket_seconds, cfg.profile_days));
        SeriesScorer {
            level: Family::new(&cfg),
            residual: Family::new(&cfg),
            profile,
            recent: VecDeque::new(),
            memory: 0.0,
            decay: if cfg.memory_half_life > 0.0 {
                0.5f64.powf(1.0 / cfg.memory_half_life)
            } else {
                0.0
            },
            cfg,
        }
    }

    /// Surprise in bits of the newest point at every scale (Bonferroni-combined).
    fn surprise(&mut self, t: i64, x: f64) -> f64 {
        let mut ps = Vec::with_capacity(2 * self.cfg.scales.len());
        self.level.test(x, &self.cfg, &mut ps);
        if let Some(profile) = self.profile.as_mut() {
            if let Some(e) = profile.expected(t, self.cfg.profile_min_days) {
                // The daily profile is tested only while it explains the series: its
                // residuals spread less than the values themselves.
                let explains = match (self.level.spread(), self.residual.spread()) {
                    (Some(l), Some(r)) => r < self.cfg.profile_max_spread_ratio * l,
                    _ => false,
                };
                let mut rp = Vec::new();
                self.residual.test(x - e, &self.cfg, &mut rp);
                if explains {
                    ps.extend(rp);
                }
            }
            profile.push(t, x);
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
        let remembered = self.memory * self.decay;
        let effective = if bits > prev_max && bits > remembered {
            bits
        } else {
            self.cfg.repeat_factor * bits
        };
        self.memory = remembered.max(bits);
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
