//! Where the current level of a count series began: the last changepoint, found by binary
//! segmentation with a penalized quasi-Poisson likelihood ratio.
//!
//! # Model
//!
//! The input is a series of block totals `x₀ … xₙ₋₁` (calls per block, oldest first; the
//! detector uses one-hour blocks of an open Insight) with overdispersion `φ ≥ 1`: under a
//! constant level `λ` each total has mean `λ` and variance `φ·λ` (`φ = 1` is Poisson; the
//! detector takes `φ` from the key's own dispersion of hourly sums, see
//! [`crate::dispersion`]). A single change at block `τ` (levels `λ₁` before, `λ₂` from `τ` on)
//! is tested with the profile log-likelihood ratio of the two-segment Poisson model against
//! one segment, scaled by `φ` (quasi-likelihood):
//!
//! ```text
//! G(τ) = S₁·ln(S₁/n₁) + S₂·ln(S₂/n₂) − S·ln(S/n),   T(τ) = 2·G(τ) / φ
//! ```
//!
//! with `S₁, n₁` the total and length before `τ`, `S₂, n₂` from `τ` on (`0·ln 0 = 0`). For a
//! fixed `τ`, `T` is asymptotically χ²₁ when there is no change; the scan takes the best `τ`
//! over the `n − 1` candidates, so the threshold is the χ²₁ quantile at
//! [`FAMILY_LEVEL`]` / (n − 1)` (Bonferroni over the candidates: at most one false change per
//! [`FAMILY_LEVEL`]⁻¹ scans of an unchanged series).
//!
//! **The last changepoint.** When the best split is significant, everything before it is an
//! older level; the scan repeats on the part from it on, until no split is significant. The
//! start of the last part is where the current level began. Each scan is `O(n)` (prefix
//! sums), and there are at most `n / MIN_SEGMENT_BLOCKS` of them.
//!
//! Both parts of a split hold at least [`MIN_SEGMENT_BLOCKS`] blocks, so one odd block at
//! the end is not a new level.

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Fewest blocks on each side of a change.
pub const MIN_SEGMENT_BLOCKS: usize = 2;
/// Probability that a scan of an unchanged series reports a change (before the overdispersion
/// approximation).
pub const FAMILY_LEVEL: f64 = 1e-3;

/// `S·ln(S/n)` of one segment (`0` for `S = 0`).
fn segment_term(sum: f64, len: f64) -> f64 {
    if sum > 0.0 && len > 0.0 {
        sum * (sum / len).ln()
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
        // ln(1/level)·2 bounds the χ²₁ quantile from above for small levels.
        .unwrap_or(2.0 * (1.0 / level).ln())
}

/// The most likely single change in `totals` and its statistic `T = 2G/φ`; `None` when the
/// series is too short to split.
pub fn best_split(totals: &[f64], phi: f64) -> Option<(usize, f64)> {
    let n = totals.len();
    if n < 2 * MIN_SEGMENT_BLOCKS {
        return None;
    }
    let total: f64 = totals.iter().sum();
    let all = segment_term(total, n as f64);
    let mut left = 0.0;
    let mut best: Option<(usize, f64)> = None;
    for (i, x) in totals.iter().enumerate().take(n - MIN_SEGMENT_BLOCKS) {
        left += x.max(0.0);
        let tau = i + 1;
        if tau < MIN_SEGMENT_BLOCKS {
            continue;
        }
        let g = segment_term(left, tau as f64) + segment_term(total - left, (n - tau) as f64) - all;
        let t = 2.0 * g.max(0.0) / phi.max(1.0);
        if best.is_none_or(|b| t > b.1) {
            best = Some((tau, t));
        }
    }
    best
}

/// The block at which the current level of `totals` began (`0`: no significant change), for
/// block totals with overdispersion `phi` (variance `phi ×` mean per block; values below 1
/// are taken as 1). Negative or non-finite totals count as 0.
pub fn current_level_start(totals: &[f64], phi: f64) -> usize {
    let clean: Vec<f64> = totals
        .iter()
        .map(|&x| if x.is_finite() { x.max(0.0) } else { 0.0 })
        .collect();
    let phi = if phi.is_finite() { phi.max(1.0) } else { 1.0 };
    let mut from = 0;
    while let Some((tau, t)) = best_split(&clean[from..], phi) {
        let candidates = clean.len() - from - 2 * MIN_SEGMENT_BLOCKS + 1;
        if t <= threshold(candidates) {
            break;
        }
        from += tau;
    }
    from
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
        assert_eq!(current_level_start(&noisy(300.0, 48, 1), 1.0), 0);
        assert_eq!(current_level_start(&[], 1.0), 0);
        assert_eq!(current_level_start(&[5.0, 500.0, 5.0], 1.0), 0);
    }

    #[test]
    fn a_step_is_found_where_it_happened() {
        let mut x = noisy(300.0, 20, 1);
        x.extend(noisy(900.0, 28, 2));
        assert_eq!(current_level_start(&x, 1.0), 20);
    }

    #[test]
    fn after_a_burst_the_current_level_begins_where_the_burst_ended() {
        // Three hours at 10× the later level, then a steady level for a day.
        let mut x = noisy(3000.0, 3, 1);
        x.extend(noisy(900.0, 24, 2));
        assert_eq!(current_level_start(&x, 1.0), 3);
    }

    #[test]
    fn overdispersion_hides_changes_within_the_noise() {
        // A 20 % change is a change for Poisson totals of 900, not for totals that vary
        // with φ = 200 (a daily cycle's worth of variance).
        let mut x = noisy(900.0, 24, 1);
        x.extend(noisy(1080.0, 24, 2));
        assert_eq!(current_level_start(&x, 1.0), 24);
        assert_eq!(current_level_start(&x, 200.0), 0);
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
            prop_assert_eq!(current_level_start(&x, 1.0), last);
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
            let s = current_level_start(&x, phi);
            prop_assert!(s == 0 || s + MIN_SEGMENT_BLOCKS <= x.len());
            prop_assert!(current_level_start(&x, phi * more) <= s);
        }
    }
}
