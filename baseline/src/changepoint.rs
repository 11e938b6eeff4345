//! Where the current level of a count series began: the last changepoint, found by binary
//! segmentation with a penalized quasi-Poisson likelihood ratio.
//!
//! # Model
//!
//! The input is a series of block totals `x₀ … xₙ₋₁` (calls per block, oldest first; the
//! detector uses one-hour blocks of an open Insight, or days) with an **exposure** `eᵢ > 0`
//! per block (the calls the block was expected to hold: the detector's seasonal expectation,
//! so the daily cycle is not a change; 1 for a plain series) and overdispersion `φ ≥ 1`: under
//! a constant level `λ` (a ratio to the exposure) each total has mean `λ·eᵢ` and variance
//! `φ·λ·eᵢ` (`φ = 1` is Poisson). A single change at block `τ` (levels `λ₁` before, `λ₂` from
//! `τ` on) is tested with the profile log-likelihood ratio of the two-segment Poisson model
//! against one segment, scaled by `φ` (quasi-likelihood):
//!
//! ```text
//! G(τ) = S₁·ln(S₁/E₁) + S₂·ln(S₂/E₂) − S·ln(S/E),   T(τ) = 2·G(τ) / φ
//! ```
//!
//! with `S₁, E₁` the calls and exposure before `τ`, `S₂, E₂` from `τ` on (`0·ln 0 = 0`). For
//! a fixed `τ`, `T` is asymptotically χ²₁ when there is no change; the scan takes the best
//! `τ` over the `n − 2·MIN_SEGMENT_BLOCKS + 1` candidates, so the threshold is the χ²₁
//! quantile at [`FAMILY_LEVEL`] / candidates (Bonferroni: at most one false change per
//! [`FAMILY_LEVEL`]⁻¹ scans of an unchanged series).
//!
//! **The last changepoint.** When the best split is significant, everything before it is an
//! older level; the scan repeats on the part from it on, until no split is significant. The
//! start of the last part is where the current level began. Each scan is `O(n)` (running
//! sums), and there are at most `n / MIN_SEGMENT_BLOCKS` of them.
//!
//! Both parts of a split hold at least [`MIN_SEGMENT_BLOCKS`] blocks, so one odd block at
//! the end is not a new level. Exposures are floored at [`MIN_EXPOSURE_SHARE`] of their mean,
//! so a block expected to be nearly empty cannot make a few calls an outlier that forces a
//! change beside it.
//!
//! [`successive_difference_dispersion`] estimates `φ` from the series itself when no model
//! gives it (days of a key's calls).

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Fewest blocks on each side of a change.
pub const MIN_SEGMENT_BLOCKS: usize = 2;
/// Probability that a scan of an unchanged series reports a change (before the overdispersion
/// approximation).
pub const FAMILY_LEVEL: f64 = 1e-3;
/// Floor of a block's exposure, as a share of the mean exposure.
pub const MIN_EXPOSURE_SHARE: f64 = 0.1;

/// `S·ln(S/E)` of one segment (`0` for `S = 0`).
fn segment_term(sum: f64, exposure: f64) -> f64 {
    if sum > 0.0 && exposure > 0.0 {
        sum * (sum / exposure).ln()
    } else {
        0.0
    }
}

/// The threshold of `T = 2G/φ` for a scan over `candidates` split points.
fn threshold(candidates: usize) -> f64 {
    let level = FAMILY_LEVEL / candidates.max(1) as f64;
    ChiSquared::new(1.0)
        .map(|c| c.inverse_cdf(1.0 - level))
        .ok()
        .filter(|t| t.is_finite())
        // 2·ln(1/level) bounds the χ²₁ quantile from above for small levels.
        .unwrap_or(2.0 * (1.0 / level).ln())
}

/// Totals made finite and non-negative, and exposures made positive (floored at
/// [`MIN_EXPOSURE_SHARE`] of their mean; all 1 when none is positive).
fn clean(totals: &[f64], exposures: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let x: Vec<f64> = totals
        .iter()
        .map(|&v| if v.is_finite() { v.max(0.0) } else { 0.0 })
        .collect();
    let e: Vec<f64> = (0..x.len())
        .map(|i| {
            exposures
                .get(i)
                .copied()
                .filter(|v| v.is_finite() && *v > 0.0)
                .unwrap_or(0.0)
        })
        .collect();
    let mean = e.iter().sum::<f64>() / e.len().max(1) as f64;
    if !(mean > 0.0 && mean.is_finite()) {
        let n = x.len();
        return (x, vec![1.0; n]);
    }
    let floor = MIN_EXPOSURE_SHARE * mean;
    (x, e.into_iter().map(|v| v.max(floor)).collect())
}

/// The most likely single change in `totals` (exposures `exposures`, both clean) and its
/// statistic `T = 2G/φ`; `None` when the series is too short to split.
fn best_split(totals: &[f64], exposures: &[f64], phi: f64) -> Option<(usize, f64)> {
    let n = totals.len();
    if n < 2 * MIN_SEGMENT_BLOCKS {
        return None;
    }
    let (s, e): (f64, f64) = (totals.iter().sum(), exposures.iter().sum());
    let all = segment_term(s, e);
    let (mut s1, mut e1) = (0.0, 0.0);
    let mut best: Option<(usize, f64)> = None;
    for tau in 1..=n - MIN_SEGMENT_BLOCKS {
        s1 += totals[tau - 1];
        e1 += exposures[tau - 1];
        if tau < MIN_SEGMENT_BLOCKS {
            continue;
        }
        let g = segment_term(s1, e1) + segment_term(s - s1, e - e1) - all;
        let t = 2.0 * g.max(0.0) / phi;
        if best.is_none_or(|b| t > b.1) {
            best = Some((tau, t));
        }
    }
    best
}

/// The block at which the current level of `totals` began (`0`: no significant change), for
/// block totals with exposures `exposures` (expected calls per block, floored at
/// [`MIN_EXPOSURE_SHARE`] of their mean; an empty slice: all equal) and overdispersion `phi`
/// (variance `phi ×` mean per block; values below 1 are taken as 1). Negative or non-finite
/// totals count as 0.
pub fn current_level_start(totals: &[f64], exposures: &[f64], phi: f64) -> usize {
    let (x, e) = clean(totals, exposures);
    let phi = if phi.is_finite() { phi.max(1.0) } else { 1.0 };
    let mut from = 0;
    while let Some((tau, t)) = best_split(&x[from..], &e[from..], phi) {
        let candidates = x.len() - from - 2 * MIN_SEGMENT_BLOCKS + 1;
        if t <= threshold(candidates) {
            break;
        }
        from += tau;
    }
    from
}

/// The median of a sample (`None` when empty); NaN-free input assumed.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Median of the χ²₁ distribution.
const CHI2_1_MEDIAN: f64 = 0.454_936_423_119_572_7;

/// The overdispersion `φ` of block totals (variance `φ ×` mean), estimated from successive
/// blocks so that a change of level barely moves it: for two neighbours of the same level,
/// `(x₁ − x₂)² / (x₁ + x₂)` is about `φ · χ²₁`, so `φ̂ = median / 0.4549` over all neighbouring
/// pairs (a step spoils one pair of many). At least 1; 1 with fewer than two blocks.
pub fn successive_difference_dispersion(totals: &[f64]) -> f64 {
    let ratios: Vec<f64> = totals
        .windows(2)
        .filter_map(|p| {
            let (a, b) = (p[0].max(0.0), p[1].max(0.0));
            let r = (a - b) * (a - b) / (a + b);
            r.is_finite().then_some(r)
        })
        .collect();
    median(ratios).map_or(1.0, |m| (m / CHI2_1_MEDIAN).max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Poisson-like totals around `level` (deterministic, within ±2√level).
    fn noisy(level: f64, n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let u = ((i as u64 + 1)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed)
                    >> 7)
                    % 1000;
                let z = (u as f64 / 1000.0 - 0.5) * 4.0;
                (level + z * level.sqrt()).max(0.0).round()
            })
            .collect()
    }

    #[test]
    fn a_steady_series_has_one_level() {
        assert_eq!(current_level_start(&noisy(300.0, 48, 1), &[], 1.0), 0);
        assert_eq!(current_level_start(&[], &[], 1.0), 0);
        // Too short to hold two levels of two blocks each.
        assert_eq!(current_level_start(&[5.0, 500.0, 5.0], &[], 1.0), 0);
    }

    #[test]
    fn a_step_is_found_where_it_happened() {
        let mut x = noisy(300.0, 20, 1);
        x.extend(noisy(900.0, 28, 2));
        assert_eq!(current_level_start(&x, &[], 1.0), 20);
    }

    #[test]
    fn after_a_burst_the_current_level_begins_where_the_burst_ended() {
        // Three hours at 10× the later level, then a steady level for a day.
        let mut x = noisy(3000.0, 3, 1);
        x.extend(noisy(900.0, 24, 2));
        assert_eq!(current_level_start(&x, &[], 1.0), 3);
    }

    #[test]
    fn overdispersion_hides_changes_within_the_noise() {
        // A 20 % change is a change for Poisson totals of 900, not for totals that vary
        // with φ = 200 (a daily cycle's worth of variance).
        let mut x = noisy(900.0, 24, 1);
        x.extend(noisy(1080.0, 24, 2));
        assert_eq!(current_level_start(&x, &[], 1.0), 24);
        assert_eq!(current_level_start(&x, &[], 200.0), 0);
    }

    #[test]
    fn a_cycle_that_the_exposures_expect_is_not_a_change() {
        // A daily cycle from 300 to 2100 calls an hour, at three times the expectation for two
        // days: one level. Without the exposures the cycle's turns are changes.
        let expected: Vec<f64> = (0..48)
            .map(|h| {
                let phase = f64::from(h % 24) / 24.0 * std::f64::consts::TAU;
                1200.0 - 900.0 * phase.cos()
            })
            .collect();
        let calls: Vec<f64> = expected
            .iter()
            .zip(noisy(1.0, 48, 5))
            .enumerate()
            .map(|(i, (e, _))| (3.0 * e + ((i * 7919) % 11) as f64 - 5.0).round())
            .collect();
        assert_eq!(current_level_start(&calls, &expected, 1.0), 0);
        assert_ne!(current_level_start(&calls, &[], 1.0), 0);
        // A step of the ratio on top of the cycle is found.
        let stepped: Vec<f64> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| if i >= 30 { c / 3.0 } else { *c })
            .collect();
        assert_eq!(current_level_start(&stepped, &expected, 1.0), 30);
    }

    #[test]
    fn a_block_expected_to_be_empty_is_floored() {
        // Twelve calls in an hour the model expected almost none of, in a steady series: not
        // a change (the exposure is floored at a tenth of the mean).
        let mut calls = noisy(100.0, 24, 2);
        let mut expected = vec![100.0; 24];
        calls[20] = 12.0;
        expected[20] = 1e-9;
        assert_eq!(current_level_start(&calls, &expected, 1.0), 0);
    }

    #[test]
    fn successive_differences_measure_the_noise_not_the_step() {
        // Poisson-like days around 1000: φ about 1 (at least 1).
        let mut x = noisy(1000.0, 28, 3);
        assert!(successive_difference_dispersion(&x) < 2.0);
        // A step to a tenth of the level moves it little.
        for v in &mut x[14..] {
            *v /= 10.0;
        }
        assert!(successive_difference_dispersion(&x) < 2.0);
        // Days varying by ±30 %: far more than Poisson.
        let wild: Vec<f64> = (0..28)
            .map(|i| 1000.0 * if i % 3 == 0 { 1.3 } else { 0.75 })
            .collect();
        assert!(successive_difference_dispersion(&wild) > 50.0);
        assert_eq!(successive_difference_dispersion(&[5.0]), 1.0);
        assert_eq!(successive_difference_dispersion(&[0.0, 0.0, 0.0]), 1.0);
    }

    proptest! {
        /// A noiseless series of levels, each lasting at least three blocks and each at least
        /// twice or at most half the one before: the current level begins at the last step.
        #[test]
        fn the_last_step_of_a_staircase_is_found(
            steps in prop::collection::vec((3usize..12, 1u32..6, any::<bool>()), 1..5),
            base in 50.0f64..5000.0,
        ) {
            let mut x = Vec::new();
            let mut level = base;
            let mut last = 0;
            for (i, &(len, factor, up)) in steps.iter().enumerate() {
                if i > 0 {
                    // Up or down by 2–6×, kept within [50, 10⁵] calls per block.
                    let f = f64::from(factor + 1);
                    let up = (up || level / f < 50.0) && level * f <= 1e5;
                    level = if up { level * f } else { level / f };
                    last = x.len();
                }
                x.extend(std::iter::repeat_n(level, len));
            }
            prop_assert_eq!(current_level_start(&x, &[], 1.0), last);
        }

        /// The start is a block of the series and leaves at least the minimum segment after
        /// it; more overdispersion never moves it later (the splits do not depend on φ, only
        /// where the search stops does).
        #[test]
        fn the_start_is_in_range_and_overdispersion_only_moves_it_earlier(
            x in prop::collection::vec(0.0f64..1e4, 0..60),
            phi in 1.0f64..50.0,
            more in 1.0f64..20.0,
        ) {
            let s = current_level_start(&x, &[], phi);
            prop_assert!(s == 0 || s + MIN_SEGMENT_BLOCKS <= x.len());
            prop_assert!(current_level_start(&x, &[], phi * more) <= s);
        }
    }
}
