//! Tail probabilities of real-valued observations and their combination.
//!
//! - [`normal_two_sided`]: `P(|Z| >= |z|)` for a standard normal `Z`.
//! - [`empirical_two_sided`]: the same probability read off a reference
//!   sample (a [`SortedWindow`]), with the `(k + 1) / (n + 1)` rank estimate,
//!   so an observation exceeded `k` times among `n` past values is never
//!   more surprising than its rank allows.
//! - [`bonferroni`]: the family-wise p-value of the smallest of `m` p-values.
//! - [`surprise_bits`]: `-log2 p`, the information content of an observation,
//!   which does not saturate where `1 - p` would (in bits).

use statrs::function::erf::erfc;

use crate::robust::SortedWindow;

/// `P(|Z| >= |z|)` for a standard normal `Z`; 1 for NaN.
pub fn normal_two_sided(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// Two-sided empirical tail probability of `x` in `reference` around its
/// median `center`: `(k + 1) / (n + 1)` where `k` counts the reference values
/// at least as far out on `x`'s side of the median (doubled for two sides),
/// capped at 1. Returns `None` when no reference value is that far out (the
/// sample cannot bound the probability) or the reference is empty.
pub fn empirical_two_sided(reference: &SortedWindow, center: f64, x: f64) -> Option<f64> {
    let n = reference.len();
    if n == 0 || !x.is_finite() {
        return None;
    }
    let k = if x >= center {
        reference.count_at_least(x)
    } else {
        reference.count_at_most(x)
    };
    (k > 0).then(|| (2.0 * (k + 1) as f64 / (n + 1) as f64).min(1.0))
}

/// Two-sided tail probability of `x` under the distribution sampled by
/// `reference`, peaks-over-threshold style: inside the sample's `m` most
/// extreme values on `x`'s side of `center` (`m = max(min_tail,
/// ceil(tail_fraction × n))`, at most `n / 2`) it is the rank estimate
/// `2 (k + 1) / (n + 1)` (`k` = reference values at least as far out as `x`);
/// beyond the threshold `u` (the `m`-th most extreme value) it extrapolates
/// with an exponential tail, `2 (m + 1) / (n + 1) × exp(−(|x − u|) / β)`,
/// where `β` is the mean excess of the other `m − 1` extreme values over `u`
/// (the maximum-likelihood scale of a generalized Pareto tail of shape 0),
/// floored at `scale_floor`, and never below the rank estimate while some
/// reference value is at least as far out as `x` (a value the series has
/// already reached is no record, however thin the tail below it). Returns 1
/// for an empty reference or non-finite `x`.
///
/// Unlike a normal tail, the extrapolation follows the sample's own tail: a
/// heavy-tailed series (spiky load, bursty traffic) is not infinitely
/// surprised by its next record, and a light-tailed one still is.
pub fn pot_two_sided(
    reference: &SortedWindow,
    center: f64,
    x: f64,
    tail_fraction: f64,
    min_tail: usize,
    scale_floor: f64,
) -> f64 {
    let sorted = reference.sorted();
    let n = sorted.len();
    if n == 0 || !x.is_finite() {
        return 1.0;
    }
    let m = ((tail_fraction.clamp(0.0, 1.0) * n as f64).ceil() as usize)
        .max(min_tail)
        .min(n / 2)
        .max(1);
    let upper = x >= center;
    // The m most extreme values on x's side, outermost last.
    let (u, excess_sum) = if upper {
        let u = sorted[n - m];
        (u, sorted[n - m + 1..].iter().map(|v| v - u).sum::<f64>())
    } else {
        let u = sorted[m - 1];
        (u, sorted[..m - 1].iter().map(|v| u - v).sum::<f64>())
    };
    let beyond = if upper { x - u } else { u - x };
    let two_n = (n + 1) as f64;
    if beyond <= 0.0 {
        let k = if upper {
            reference.count_at_least(x)
        } else {
            reference.count_at_most(x)
        };
        return (2.0 * (k + 1) as f64 / two_n).min(1.0);
    }
    let beta = if m > 1 {
        excess_sum / (m - 1) as f64
    } else {
        0.0
    }
    .max(scale_floor)
    .max(f64::MIN_POSITIVE);
    let extrapolated = 2.0 * (m + 1) as f64 / two_n * (-beyond / beta).exp();
    // Never more surprising than the rank allows: values at least as far out
    // as `x` in the sample bound its probability from below.
    let k = if upper {
        reference.count_at_least(x)
    } else {
        reference.count_at_most(x)
    };
    let rank = if k > 0 {
        2.0 * (k + 1) as f64 / two_n
    } else {
        0.0
    };
    extrapolated.max(rank).min(1.0)
}

/// Family-wise p-value of the smallest of `m` p-values (Bonferroni): `min(1, m × min p)`.
/// 1 for an empty family.
pub fn bonferroni(ps: &[f64]) -> f64 {
    let m = ps.len();
    if m == 0 {
        return 1.0;
    }
    let min = ps
        .iter()
        .copied()
        .filter(|p| !p.is_nan())
        .fold(1.0f64, f64::min);
    (min * m as f64).clamp(0.0, 1.0)
}

/// `-log2 p` in bits, with `p` clamped to `[f64::MIN_POSITIVE, 1]` (so at most 1022 bits).
pub fn surprise_bits(p: f64) -> f64 {
    let p = if p.is_nan() { 1.0 } else { p };
    -p.clamp(f64::MIN_POSITIVE, 1.0).log2()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn normal_tail_is_symmetric_decreasing_and_a_probability(a in -40f64..40.0, b in -40f64..40.0) {
            let (pa, pb) = (normal_two_sided(a), normal_two_sided(b));
            prop_assert!((0.0..=1.0).contains(&pa));
            prop_assert_eq!(pa, normal_two_sided(-a));
            if a.abs() < b.abs() {
                prop_assert!(pa >= pb);
            }
        }

        #[test]
        fn empirical_tail_is_bounded_by_the_rank(
            xs in prop::collection::vec(-100f64..100.0, 1..200),
            x in -150f64..150.0,
        ) {
            let mut w = SortedWindow::new(500);
            for &v in &xs {
                w.push(v);
            }
            let c = w.median().unwrap();
            match empirical_two_sided(&w, c, x) {
                Some(p) => {
                    prop_assert!(p > 0.0 && p <= 1.0);
                    prop_assert!(p >= 2.0 / (xs.len() + 1) as f64 - 1e-12);
                }
                None => {
                    let (lo, hi) = w.range().unwrap();
                    prop_assert!(x > hi || x < lo);
                }
            }
        }

        #[test]
        fn pot_tail_is_a_probability_and_decreases_outwards(
            xs in prop::collection::vec(-100f64..100.0, 1..300),
            a in 0f64..500.0,
            b in 0f64..500.0,
        ) {
            let mut w = SortedWindow::new(1000);
            for &v in &xs {
                w.push(v);
            }
            let c = w.median().unwrap();
            let (near, far) = if a < b { (a, b) } else { (b, a) };
            for sign in [1.0, -1.0] {
                let pn = pot_two_sided(&w, c, c + sign * near, 0.02, 5, 1e-9);
                let pf = pot_two_sided(&w, c, c + sign * far, 0.02, 5, 1e-9);
                prop_assert!(pn > 0.0 || near > 0.0);
                prop_assert!((0.0..=1.0).contains(&pn) && (0.0..=1.0).contains(&pf));
                prop_assert!(pf <= pn + 1e-12, "{} > {}", pf, pn);
            }
        }

        #[test]
        fn pot_tail_is_never_below_the_rank_of_a_value_seen_before(
            xs in prop::collection::vec(-100f64..100.0, 1..300),
            spikes in prop::collection::vec(1e3f64..1e6, 1..5),
            pick in 0usize..5,
        ) {
            let mut w = SortedWindow::new(1000);
            for &v in xs.iter().chain(&spikes) {
                w.push(v);
            }
            let c = w.median().unwrap();
            let x = spikes[pick % spikes.len()];
            let k = w.count_at_least(x);
            let p = pot_two_sided(&w, c, x, 0.1, 5, 1e-9);
            prop_assert!(k >= 1);
            prop_assert!(p >= (2.0 * (k + 1) as f64 / (w.len() + 1) as f64).min(1.0) - 1e-12);
        }

        #[test]
        fn bonferroni_is_at_least_the_minimum(ps in prop::collection::vec(0f64..1.0, 1..10)) {
            let b = bonferroni(&ps);
            let min = ps.iter().copied().fold(1.0, f64::min);
            prop_assert!(b >= min && b <= 1.0);
        }

        #[test]
        fn surprise_is_monotone_and_finite(p in 0f64..1.0, q in 0f64..1.0) {
            let (a, b) = (surprise_bits(p), surprise_bits(q));
            prop_assert!(a.is_finite() && a >= 0.0);
            if p < q {
                prop_assert!(a >= b);
            }
        }
    }

    #[test]
    fn edge_cases() {
        assert_eq!(normal_two_sided(f64::NAN), 1.0);
        assert_eq!(normal_two_sided(0.0), 1.0);
        assert_eq!(bonferroni(&[]), 1.0);
        assert_eq!(surprise_bits(f64::NAN), 0.0);
        assert_eq!(surprise_bits(0.0), 1022.0);
        assert!(empirical_two_sided(&SortedWindow::new(3), 0.0, 1.0).is_none());
        assert_eq!(
            pot_two_sided(&SortedWindow::new(3), 0.0, 1.0, 0.02, 5, 0.0),
            1.0
        );
        let mut w = SortedWindow::new(100);
        for i in 0..100 {
            w.push(f64::from(i));
        }
        // Exponential extrapolation: each further mean excess divides the tail by e.
        let p1 = pot_two_sided(&w, 49.5, 110.0, 0.05, 5, 0.0);
        let p2 = pot_two_sided(&w, 49.5, 112.5, 0.05, 5, 0.0);
        assert!((p1 / p2 - 1.0f64.exp()).abs() < 1e-9, "{p1} {p2}");
    }
}
