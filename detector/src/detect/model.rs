//! The expected rate of a key: its whole-window baseline and its seasonal
//! (hour-of-day, hour-of-week) profiles, each a mean rate with the dispersion
//! of window sums around it.

use serde::{Deserialize, Serialize};
use trailsight_baseline::{
    BaselineStats, CountModel, Dispersion, HourProfile, PhaseTotals, RollingRate,
};

use crate::config::DetectorConfig;

/// Blocks of the key's seasonal dispersion prior ([`seasonal_dispersion_prior`]) that a
/// profile's own estimate is weighed against (a profile of three days holds only three
/// hour-blocks).
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
/// of [`profile_prior_weight`] minutes (an empirical-Bayes gamma prior on the hour's rate, at
/// most `profile_prior_minutes`): a few quiet hours of a sparse or flat key are weak evidence
/// that this hour is quieter than the rest of the day, while a month of nightly bursts
/// outweighs it, and a key with a strong daily cycle is judged against each hour's own rate.
/// Its dispersion is the hour's own, shrunk towards the key's burstiness without its daily
/// cycle ([`seasonal_dispersion_prior`]) by [`DISPERSION_PRIOR_BLOCKS`] blocks at each scale, and never
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
    let phases = rate.phase_totals(hour, history_start, window, 24);
    let dispersion_prior = seasonal_dispersion_prior(&phases, within_hour);
    let k = profile_prior_weight(
        &phases,
        dispersion_prior.at_scales[2],
        cfg.profile_prior_minutes,
    );
    let shrink = |p: HourProfile| {
        let n = p.minutes as f64;
        Model {
            mean: (p.mean * n + global.mean * k) / (n + k),
            evidence_minutes: n + k,
            dispersion: p
                .dispersion
                .shrink(p.minutes, dispersion_prior, DISPERSION_PRIOR_BLOCKS)
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

/// The weight, in minutes, of the key's overall rate in each hour's profile: an empirical-Bayes
/// gamma prior on the hour-of-day rates, by the method of moments (as the deployment prior in
/// [`super::prior`]). With `cₕ` calls over `nₕ` minutes in hour of the day `h` (`phases`),
/// `μ = Σc / Σn`, the rates' weighted variance across the hours, less what sampling alone
/// gives (`H · μ · D(60) / Σn` for `H` hours with minutes, `D(60)` the dispersion of an hour's
/// total from day to day, [`seasonal_dispersion_prior`]: day-to-day noise is not a difference
/// between the hours), is the variance `V` of the hours' true rates (the spread scaled by
/// `H / (H − 1)`), and the prior weighs as
/// `μ / V` minutes, at most `max_minutes` (the configured `profile_prior_minutes`).
///
/// A key whose rate is the same at every hour (a sparse key, a flat one) keeps the full
/// weight: a few quiet hours are weak evidence that this hour is quieter. A key with a strong
/// daily cycle gets almost none: its night is judged against its night, not against a blend
/// of its day (with the full weight, a key at 5 calls a minute at night and 35 at midday had a
/// 03:00 profile of 14, and a burst to 25 went unseen).
pub fn profile_prior_weight(phases: &[PhaseTotals], d60: f64, max_minutes: f64) -> f64 {
    let (calls, minutes) = phases.iter().fold((0.0, 0.0), |(c, n), p| {
        (c + p.calls, n + p.minutes.max(0.0))
    });
    let used = phases.iter().filter(|p| p.minutes > 0.0).count() as f64;
    if !(minutes > 0.0 && calls > 0.0 && used >= 2.0) {
        return max_minutes;
    }
    let mu = calls / minutes;
    let spread = phases
        .iter()
        .filter(|p| p.minutes > 0.0)
        .map(|p| p.minutes * (p.calls / p.minutes - mu).powi(2))
        .sum::<f64>()
        / minutes;
    let spread = spread * used / (used - 1.0);
    let sampling = used * mu * d60.max(1.0) / minutes;
    let between = spread - sampling;
    if between > 0.0 && between.is_finite() {
        (mu / between).min(max_minutes).max(0.0)
    } else {
        max_minutes
    }
}

/// The prior a profile's dispersion is shrunk towards: the key's burstiness **without its
/// daily cycle**. At 1 and 15 minutes, its within-hour dispersion; at 60 minutes, the pooled
/// index of dispersion of hourly sums around their own hour of the day's mean (`phases`, per
/// hour of the day: `Σₕ [ΣS² − (ΣS)²/kₕ] / Σₕ (kₕ − 1)·S̄ₕ` over the `kₕ` whole hours, those
/// with no minute inside an Insight: an excluded hour's missing calls are not a swing),
/// i.e. how much an hour's level varies from day to day, at least the 15-minute index.
/// (Shrinking towards the whole-window dispersion, which holds the daily cycle, gave a
/// smooth diurnal key an hourly dispersion in the hundreds at every hour of the day.)
pub fn seasonal_dispersion_prior(phases: &[PhaseTotals], within_hour: Dispersion) -> Dispersion {
    let (mut num, mut den) = (0.0, 0.0);
    for p in phases
        .iter()
        .filter(|p| p.whole_hours >= 2.0 && p.whole_calls > 0.0)
    {
        num += (p.sum_sq - p.whole_calls * p.whole_calls / p.whole_hours).max(0.0);
        den += (p.whole_hours - 1.0) * p.whole_calls / p.whole_hours;
    }
    let [d1, d15, _] = within_hour.at_scales;
    let d60 = if den > 0.0 && (num / den).is_finite() {
        (num / den).max(d15)
    } else {
        d15
    };
    Dispersion {
        at_scales: [d1, d15, d60],
    }
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
    use proptest::prelude::*;

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

    /// Hour-of-day totals over `days` days at per-minute rates `rate(h)`.
    fn phases(days: f64, rate: impl Fn(usize) -> f64) -> Vec<PhaseTotals> {
        (0..24)
            .map(|h| PhaseTotals {
                calls: rate(h) * 60.0 * days,
                minutes: 60.0 * days,
                whole_hours: days,
                whole_calls: rate(h) * 60.0 * days,
                // Every day the same hour total (no day-to-day variation).
                sum_sq: (rate(h) * 60.0).powi(2) * days,
            })
            .collect()
    }

    #[test]
    fn a_flat_key_keeps_the_full_prior_and_a_daily_cycle_gets_almost_none() {
        assert_eq!(
            profile_prior_weight(&phases(14.0, |_| 3.0), 1.0, 1440.0),
            1440.0
        );
        assert_eq!(profile_prior_weight(&[], 1.0, 1440.0), 1440.0);
        // Night 5, midday 35: the hours' rates vary by about 10 a minute around 20.
        let cycle =
            |h: usize| 5.0 + 30.0 * (0.5 - 0.5 * (h as f64 / 24.0 * std::f64::consts::TAU).cos());
        let w = profile_prior_weight(&phases(14.0, cycle), 1.0, 1440.0);
        assert!(w < 1.0, "{w}");
        // A sparse key's few calls landing in a few hours: sampling noise, full weight.
        let sparse = phases(3.0, |h| if h % 8 == 0 { 1.0 / 180.0 } else { 0.0 });
        assert_eq!(profile_prior_weight(&sparse, 1.0, 1440.0), 1440.0);
    }

    #[test]
    fn the_dispersion_prior_holds_the_day_to_day_variation_not_the_daily_cycle() {
        let within = Dispersion {
            at_scales: [1.2, 3.0, 3.0],
        };
        let cycle =
            |h: usize| 5.0 + 30.0 * (0.5 - 0.5 * (h as f64 / 24.0 * std::f64::consts::TAU).cos());
        // The same level every day: the 60-minute index is the 15-minute one.
        let d = seasonal_dispersion_prior(&phases(14.0, cycle), within);
        assert_eq!(d.at_scales, [1.2, 3.0, 3.0]);
        // Hours whose level swings ±50 % from day to day: far more.
        let mut swinging = phases(14.0, cycle);
        for p in &mut swinging {
            let mean = p.calls / p.whole_hours;
            p.sum_sq = mean * mean * 1.25 * p.whole_hours;
        }
        let d = seasonal_dispersion_prior(&swinging, within);
        assert!(d.at_scales[2] > 50.0, "{d:?}");
        // The same swings from day to day are not a difference between the hours: a flat key
        // whose hours swing keeps the full prior weight.
        let flat_swinging: Vec<PhaseTotals> = phases(14.0, |_| 20.0)
            .into_iter()
            .map(|p| PhaseTotals {
                sum_sq: (p.calls / p.whole_hours).powi(2) * 1.25 * p.whole_hours,
                ..p
            })
            .collect();
        let d60 = seasonal_dispersion_prior(&flat_swinging, within).at_scales[2];
        assert_eq!(profile_prior_weight(&flat_swinging, d60, 1440.0), 1440.0);
        // Hours inside an Insight (whole hours fewer, their calls missing) are no swing.
        let mut excluded = phases(14.0, cycle);
        excluded[3].whole_hours -= 3.0;
        excluded[3].whole_calls -= 3.0 * excluded[3].calls / 14.0;
        excluded[3].sum_sq -= 3.0 * (excluded[3].calls / 14.0).powi(2);
        assert_eq!(
            seasonal_dispersion_prior(&excluded, within).at_scales,
            [1.2, 3.0, 3.0]
        );
    }

    proptest! {
        /// The weight is within [0, max], and a larger daily swing never raises it.
        #[test]
        fn the_prior_weight_is_bounded_and_falls_with_the_swing(
            base in 0.01f64..100.0,
            swing in 0.0f64..1.0,
            more in 1.0f64..3.0,
            days in 3.0f64..28.0,
            d60 in 1.0f64..50.0,
        ) {
            let at = |s: f64| {
                move |h: usize| base * (1.0 + s * (h as f64 / 24.0 * std::f64::consts::TAU).sin())
            };
            let w = profile_prior_weight(&phases(days, at(swing)), d60, 1440.0);
            prop_assert!((0.0..=1440.0).contains(&w));
            let w2 = profile_prior_weight(&phases(days, at((swing * more).min(1.0))), d60, 1440.0);
            prop_assert!(w2 <= w * (1.0 + 1e-9));
        }
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
