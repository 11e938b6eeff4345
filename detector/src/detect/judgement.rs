//! How the detector judged a key in one UTC hour: the models and thresholds of its open test,
//! kept so the series behind an Insight can be drawn with the expected value and the band the
//! detector really used (not a re-estimate made afterwards).
//!
//! The models of a key's open test change once an hour (the seasonal profiles are cached per
//! hour), so one judgement per key-hour describes every window of that hour. A window of `w`
//! minutes aligned to its period (a 1-minute point, a 5-minute point starting at a multiple of
//! five minutes, an hour) never reaches into the previous hour, so its models are the hour's
//! own — exactly those [`super::window::most_significant`] is given for that window.

use serde::{Deserialize, Serialize};

use super::model::Models;
use super::window::{Thresholds, WindowCalls, most_significant};

/// The detector's view of one key in one hour (schema: serialized with serde; the Insights
/// store keeps it per key-hour).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The hour's models (floored), calls per minute.
    pub models: Models,
    /// The gates and level a window had to pass.
    pub thresholds: Thresholds,
}

/// Counts above this are not searched (a band this high is reported as this value).
const MAX_SEARCH: u64 = 1 << 40;

impl Judgement {
    /// Expected calls in a `minutes`-minute window: the strictest (highest-rate) model's mean
    /// × `minutes` (the reference of the effect-size gate). `None` without a model.
    pub fn expected(&self, minutes: u32) -> Option<f64> {
        self.models
            .strictest()
            .map(|m| m.mean * f64::from(minutes.max(1)))
    }

    /// The top of the band: the smallest count of a `minutes`-minute window that this test
    /// calls unusual (at least `min_count` calls, `min_ratio` × the expected rate, and a tail
    /// probability below `per_window` under every model). `None` without a model.
    ///
    /// Binary search over counts (the gates are monotone in the count): O(log count) tail
    /// probabilities.
    pub fn upper(&self, minutes: u32) -> Option<u64> {
        let expected = self.expected(minutes)?;
        let unusual = |calls: u64| {
            most_significant(
                &[WindowCalls { minutes, calls }],
                |_| self.models,
                self.thresholds,
            )
            .is_some()
        };
        let mut hi = (expected.ceil() as u64).clamp(1, MAX_SEARCH);
        while !unusual(hi) {
            if hi >= MAX_SEARCH {
                return Some(MAX_SEARCH);
            }
            hi = hi.saturating_mul(2).min(MAX_SEARCH);
        }
        let mut lo = 0u64; // not unusual (a window of no calls never is)
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if unusual(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Model;
    use super::*;
    use proptest::prelude::*;
    use trailsight_baseline::Dispersion;

    fn judgement(mean: f64, d: [f64; 3], per_window: f64) -> Judgement {
        Judgement {
            models: Models::one(Model {
                mean,
                dispersion: Dispersion { at_scales: d },
                evidence_minutes: 10_000.0,
            }),
            thresholds: Thresholds {
                per_window,
                min_count: 3,
                min_ratio: 2.0,
            },
        }
    }

    #[test]
    fn a_quiet_key_has_the_minimum_count_as_its_band() {
        let j = judgement(0.001, [1.0, 1.0, 1.0], 1e-6);
        assert_eq!(j.upper(1), Some(3));
        assert!((j.expected(60).unwrap_or(0.0) - 0.06).abs() < 1e-12);
    }

    #[test]
    fn no_model_no_band() {
        let j = Judgement {
            models: Models::default(),
            thresholds: Thresholds {
                per_window: 1e-6,
                min_count: 1,
                min_ratio: 1.0,
            },
        };
        assert_eq!(j.upper(1), None);
        assert_eq!(j.expected(1), None);
    }

    proptest! {
        /// The band's top is exactly where the detector's window test starts to fire.
        #[test]
        fn the_upper_band_is_the_detectors_boundary(
            mean in 0.001f64..500.0,
            d1 in 1.0f64..5.0,
            d15 in 1.0f64..40.0,
            d60 in 1.0f64..80.0,
            level in 1e-9f64..1e-2,
            w in prop::sample::select(vec![1u32, 5, 60]),
        ) {
            let j = judgement(mean, [d1, d15, d60], level);
            let upper = j.upper(w).expect("a model");
            let fires = |calls| most_significant(
                &[WindowCalls { minutes: w, calls }],
                |_| j.models,
                Thresholds { per_window: level, min_count: 3, min_ratio: 2.0 },
            ).is_some();
            prop_assert!(fires(upper));
            prop_assert!(!fires(upper - 1));
            prop_assert!(upper as f64 >= j.expected(w).unwrap_or(0.0));
        }
    }
}
