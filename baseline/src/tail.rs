//! Tail probabilities of per-window call counts under a baseline rate.
//!
//! The model is chosen from the baseline's first two moments: a Poisson
//! distribution when the per-minute variance is not above the mean, otherwise a
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
    /// Model for a window of `minutes` minutes given a per-minute `mean` and
    /// `variance` (calls per minute, calls² per minute²). Minutes are treated
    /// as independent, so the window mean is `minutes · mean` and the window
    /// variance `minutes · variance`.
    pub fn for_window(mean_per_minute: f64, variance_per_minute: f64, minutes: u32) -> Self {
        let w = f64::from(minutes.max(1));
        let mean = (mean_per_minute * w).max(f64::MIN_POSITIVE);
        let variance = (variance_per_minute * w).max(0.0);
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

/// `P(X >= observed)` for a window of `minutes` minutes under a baseline of
/// `mean_per_minute` calls per minute with per-minute `variance_per_minute`.
///
/// Shorthand for [`CountModel::for_window`] followed by
/// [`CountModel::tail_probability`].
pub fn count_tail_probability(
    observed: u64,
    mean_per_minute: f64,
    variance_per_minute: f64,
    minutes: u32,
) -> f64 {
    CountModel::for_window(mean_per_minute, variance_per_minute, minutes).tail_probability(observed)
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
        let p = count_tail_probability(3, 8.82145e-05, 8.82145e-05, 5);
        assert!(p < 1e-9, "{p}");
    }

    #[test]
    fn overdispersion_widens_the_tail() {
        let poisson = count_tail_probability(30, 10.0, 10.0, 1);
        let nb = count_tail_probability(30, 10.0, 60.0, 1);
        assert!(nb > poisson * 100.0, "nb {nb} poisson {poisson}");
    }

    proptest! {
        #[test]
        fn tail_is_a_probability_and_monotone(mean in 1e-6f64..500.0, disp in 1.0f64..20.0, k in 0u64..2000, w in 1u32..120) {
            let model = CountModel::for_window(mean, mean * disp, w);
            let a = model.tail_probability(k);
            let b = model.tail_probability(k + 1);
            prop_assert!((0.0..=1.0).contains(&a));
            prop_assert!(b <= a + 1e-12, "P(X>={}) = {} < P(X>={}) = {}", k, a, k + 1, b);
        }

        #[test]
        fn higher_baseline_makes_a_count_less_surprising(mean in 1e-4f64..50.0, k in 1u64..200) {
            let low = count_tail_probability(k, mean, mean, 1);
            let high = count_tail_probability(k, mean * 2.0, mean * 2.0, 1);
            prop_assert!(high + 1e-12 >= low);
        }
    }
}
