//! The expected rate of a key: its whole-window baseline and its seasonal
//! (hour-of-day, hour-of-week) profiles, each a mean rate with the dispersion
//! of window sums around it.

use serde::{Deserialize, Serialize};
use trailsight_baseline::{BaselineStats, CountModel, Dispersion, HourProfile, RollingRate};

use crate::config::DetectorConfig;

/// Blocks of the key's whole-window dispersion that a profile's own estimate is weighed
/// against (a profile of three days holds only three hour-blocks).
const DISPERSION_PRIOR_BLOCKS: f64 = 8.0;

/// A per-minute rate model: mean calls per minute, the dispersion of window sums, and how
/// much history the mean rests on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Mean rate, calls per minute (> 0).
    pub mean: f64,
    /// Index of dispersion of window sums by window length.
    pub dispersion: Dispersion,
    /// Minutes of history (and prior pseudo-minutes) behind `mean`: the mean of a gamma
    /// posterior on the rate with this rate parameter has variance `mean / evidence_minutes`.
    pub evidence_minutes: f64,
}

impl Model {
    /// The whole-window baseline as a model.
    /// Its dispersion is the upper confidence bound for the window's length of history.
    pub fn from_stats(stats: &BaselineStats) -> Self {
        Model {
            mean: stats.mean,
            dispersion: stats.dispersion.upper_bound(u64::from(stats.minutes), 0.0),
            evidence_minutes: f64::from(stats.minutes.max(1)),
        }
    }

    /// The count distribution of a `minutes`-minute window's sum under this model: mean
    /// `w · mean`, variance `w · mean · D(w)` plus the rate's own uncertainty
    /// `w² · mean / evidence_minutes` (a gamma-mixed Poisson: with `C` calls of history the
    /// count is negative binomial of shape ≈ `C`), Poisson when both are negligible.
    pub fn window(&self, minutes: u32) -> CountModel {
        let w = f64::from(minutes.max(1));
        let mean = self.mean * w;
        // At least one call's worth of evidence: a mean at the floor ("once a week") stands for
        // one observed call, not for a rate known to be vanishing (gamma shape ≥ 1).
        let evidence = self.evidence_minutes.max(1.0 / self.mean);
        let uncertainty = if evidence > 0.0 && evidence.is_finite() {
            w / evidence
        } else {
            0.0
        };
        CountModel::new(mean, mean * (self.dispersion.at(minutes) + uncertainty))
    }

    /// `P(S ≥ calls)` for a `minutes`-minute window.
    pub fn tail_probability(&self, minutes: u32, calls: u64) -> f64 {
        self.window(minutes).tail_probability(calls)
    }
}

/// Up to four models, without allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Models {
    len: usize,
    items: [Option<Model>; 4],
}

impl Models {
    /// One model.
    pub fn one(m: Model) -> Self {
        let mut s = Models::default();
        s.push(m);
        s
    }
    /// Adds a model (beyond four, ignored).
    pub fn push(&mut self, m: Model) {
        if self.len < self.items.len() {
            self.items[self.len] = Some(m);
            self.len += 1;
        }
    }
    /// Adds every model of `other`.
    pub fn extend(&mut self, other: &Models) {
        for m in other.iter() {
            self.push(m);
        }
    }
    /// The models.
    pub fn iter(&self) -> impl Iterator<Item = Model> + Clone + '_ {
        self.items[..self.len].iter().flatten().copied()
    }
    /// No model.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The model with the highest mean (the strictest effect-size reference).
    pub fn strictest(&self) -> Option<Model> {
        self.iter().max_by(|a, b| a.mean.total_cmp(&b.mean))
    }
}

/// Seasonal models of one hour, cached for the hour.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeasonCache {
    /// The hour (hours since the epoch).
    pub hour: i64,
    /// Its models.
    pub models: Models,
}

/// The seasonal models of `hour` from a key's rolling history: the daily profile (the busiest
/// of the same hour, the hour before and the hour after, over the profile window, once
/// `min_profile_days` days are known) and the weekly profile (same hour of the week, once
/// `min_profile_weeks` weeks are known). Empty when seasonality is off or the history is short.
///
/// Each profile's mean is shrunk towards the key's whole-window mean `global` with the weight
/// of `profile_prior_minutes` minutes (a gamma prior on the hour's rate): a few quiet hours of a
/// sparse key are weak evidence that this hour is quieter than the rest of the day, while a
/// month of nightly bursts outweighs it. Its dispersion is the hour's own, shrunk towards the
/// key's whole-window dispersion by [`DISPERSION_PRIOR_BLOCKS`] blocks at each scale, and never
/// below the key's within-hour dispersion `within_hour` (bursts are a property of the key, not
/// of the hours they happened to fall in: a spike at an hour whose profile days had none is
/// still as likely as the key's spikes elsewhere).
pub fn seasonal_models(
    rate: &RollingRate,
    hour: i64,
    history_start: i64,
    cfg: &DetectorConfig,
    floor: f64,
    global: Model,
    within_hour: Dispersion,
) -> Models {
    let mut models = Models::default();
    if !cfg.seasonality {
        return models;
    }
    let window = cfg.profile_window_minutes;
    let k = cfg.profile_prior_minutes;
    let shrink = |p: HourProfile| {
        let n = p.minutes as f64;
        Model {
            mean: (p.mean * n + global.mean * k) / (n + k),
            evidence_minutes: n + k,
            dispersion: p
                .dispersion
                .shrink(p.minutes, global.dispersion, DISPERSION_PRIOR_BLOCKS)
                .upper_bound(p.minutes, DISPERSION_PRIOR_BLOCKS)
                .max(within_hour),
        }
    };
    let daily = (-1..=1)
        .filter_map(|d| {
            rate.hour_profile(
                hour + d,
                history_start,
                window,
                24,
                cfg.min_profile_days,
                floor,
            )
        })
        .max_by(|a, b| a.mean.total_cmp(&b.mean));
    if let Some(p) = daily {
        models.push(shrink(p));
    }
    if let Some(p) = rate.hour_profile(
        hour,
        history_start,
        window,
        168,
        cfg.min_profile_weeks,
        floor,
    ) {
        models.push(shrink(p));
    }
    models
}

/// Applies the floors to each model's mean: the prior floor (calls per minute) and, for
/// seasonal models, `seasonal_floor` (a fraction of the whole-window mean), so an hour that
/// was always quiet is not infinitely sensitive.
pub fn floored(models: &Models, floor: f64) -> Models {
    let mut out = Models::default();
    for m in models.iter() {
        out.push(Model {
            mean: m.mean.max(floor).max(f64::MIN_POSITIVE),
            ..m
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_sum_is_wider_than_independent_minutes_when_bursty() {
        let bursty = Model {
            mean: 2.0,
            dispersion: Dispersion {
                at_scales: [1.5, 8.0, 20.0],
            },
            evidence_minutes: f64::INFINITY,
        };
        let poisson = Model {
            mean: 2.0,
            dispersion: Dispersion::POISSON,
            evidence_minutes: f64::INFINITY,
        };
        // 60 minutes at 2/min: 120 expected; 200 is wild under Poisson, ordinary when bursty.
        assert!(poisson.tail_probability(60, 200) < 1e-9);
        assert!(bursty.tail_probability(60, 200) > 1e-4);
        assert!(bursty.tail_probability(1, 12) < bursty.tail_probability(60, 200));
    }

    #[test]
    fn a_mean_from_little_history_has_a_wider_tail() {
        let m = |evidence_minutes| Model {
            mean: 0.01,
            dispersion: Dispersion::POISSON,
            evidence_minutes,
        };
        // One call in 100 minutes of history vs a week's worth of the same rate.
        assert!(m(100.0).tail_probability(60, 5) > 10.0 * m(10_080.0).tail_probability(60, 5));
    }

    #[test]
    fn strictest_is_the_highest_mean() {
        let mut ms = Models::default();
        for mean in [1.0, 3.0, 2.0] {
            ms.push(Model {
                mean,
                dispersion: Dispersion::POISSON,
                evidence_minutes: f64::INFINITY,
            });
        }
        assert_eq!(ms.strictest().map(|m| m.mean), Some(3.0));
    }
}
