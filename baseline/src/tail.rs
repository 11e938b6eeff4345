//! Tail probabilities of per-window call counts under a baseline rate.
//!
//! The model is chosen from the first two moments of the window's sum (see
//! [`crate::dispersion`] for how the variance of a sum is measured at each
//! time scale): a Poisson distribution when the variance is not above the
//! mean, otherwise a
//! negative binomial distribution fitted by the method of moments (mean `μ`,
//! variance `σ²`: `r = μ² / (σ² − μ)`, `p = r / (r + μ)`), which gives bursty
//! APIs the heavier tail they really have.

use statrs::distribution::{DiscreteCDF, NegativeBinomial, Poisson};

/// The count distribution a baseline implies for one test window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CountModel {
    /// Poisson with this mean (calls per window).
    Poisson { mean: f64 },
    /// Negative binomial with this mean and variance (calls per window), `variance > mean`.
    NegativeBinomial { mean: f64, variance: f64 },
}

impl CountModel {
    /// Model of a window's sum with this `mean` and `variance` (calls, calls²).
    pub fn new(mean: f64, variance: f64) -> Self {
        let mean = if mean.is_finite() {
            mean.max(f64::MIN_POSITIVE)
        } else {
            f64::MAX
        };
        let variance = if variance.is_finite() {
            variance.max(0.0)
        } else {
            0.0
        };
        // Below 1 % over-dispersion the Poisson tail is indistinguishable and cheaper.
        if variance > mean * 1.01 {
            CountModel::NegativeBinomial { mean, variance }
        } else {
            CountModel::Poisson { mean }
        }
    }

    /// Mean of the model, in calls per window.
    pub fn mean(&self) -> f64 {
        match *self {
            CountModel::Poisson { mean } | CountModel::NegativeBinomial { mean, .. } => mean,
        }
    }

    /// Upper tail probability `P(X >= observed)`, in `[0, 1]`.
    ///
    /// `observed == 0` gives 1. Degenerate parameters (non-finite or
    /// non-positive means) never panic: a zero-mean baseline makes any
    /// positive count certain to be unusual (probability 0).
    pub fn tail_probability(&self, observed: u64) -> f64 {
        if observed == 0 {
            return 1.0;
        }
        let p = match *self {
            CountModel::Poisson { mean } => match Poisson::new(mean) {
                Ok(d) => d.sf(observed - 1),
                Err(_) => 0.0,
            },
            CountModel::NegativeBinomial { mean, variance } => {
                let r = mean * mean / (variance - mean);
                let p = r / (r + mean);
                match NegativeBinomial::new(r, p) {
                    Ok(d) if r.is_finite() && r > 0.0 && p > 0.0 && p < 1.0 => d.sf(observed - 1),
                    _ => match Poisson::new(mean) {
                        Ok(d) => d.sf(observed - 1),
                        Err(_) => 0.0,
                    },
                }
            }
        };
        if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) }
    }
}

/// `P(X >= observed)` for a window sum with this `mean` and `variance` (calls, calls²).
///
/// Shorthand for [`CountModel::new`] followed by [`CountModel::tail_probability`].
pub fn count_tail_probability(observed: u64, mean: f64, variance: f64) -> f64 {
    CountModel::new(mean, variance).tail_probability(observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn poisson_tail_matches_closed_form() {
        // P(X >= 3 | λ = 0.5) = 1 - e^-λ (1 + λ + λ²/2)
        let l: f64 = 0.5;
        let expected = 1.0 - (-l).exp() * (1.0 + l + l * l / 2.0);
        let got = CountModel::Poisson { mean: l }.tail_probability(3);
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    #[test]
    fn aws_published_example_is_extreme() {
        // AWS's example: 3 calls in 5 minutes against 8.82145e-05 calls/minute.
        let p = count_tail_probability(3, 5.0 * 8.82145e-05, 5.0 * 8.82145e-05);
        assert!(p < 1e-9, "{p}");
    }

    #[test]
    fn overdispersion_widens_the_tail() {
        let poisson = count_tail_probability(30, 10.0, 10.0);
        let nb = count_tail_probability(30, 10.0, 60.0);
        assert!(nb > poisson * 100.0, "nb {nb} poisson {poisson}");
    }

    proptest! {
        #[test]
        fn tail_is_a_probability_and_monotone(mean in 1e-6f64..500.0, disp in 1.0f64..20.0, k in 0u64..2000, w in 1u32..120) {
            let w = f64::from(w);
            let model = CountModel::new(mean * w, mean * disp * w);
            let a = model.tail_probability(k);
            let b = model.tail_probability(k + 1);
            prop_assert!((0.0..=1.0).contains(&a));
            prop_assert!(b <= a + 1e-12, "P(X>={}) = {} < P(X>={}) = {}", k, a, k + 1, b);
        }

        #[test]
        fn higher_baseline_makes_a_count_less_surprising(mean in 1e-4f64..50.0, k in 1u64..200) {
            let low = count_tail_probability(k, mean, mean);
            let high = count_tail_probability(k, mean * 2.0, mean * 2.0);
            prop_assert!(high + 1e-12 >= low);
        }
    }
}
