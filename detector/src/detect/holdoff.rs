//! The hold-off after an Insight: one burst, one Insight.
//!
//! Bursty traffic often changes regime: a key that was smooth for days starts a run of
//! spikes (a new hourly job, a batch backfill), and each spike of the run is as unusual
//! against the days before it as the first. An analyst wants one Insight for the run, not one
//! per spike. So for [`HOLDOFF_MINUTES`] after an Insight ends, a window of `w` minutes raises
//! another only if its rate is at least [`HOLDOFF_RATIO_FACTOR`] times the ended Insight's
//! **peak rate ratio at that window length**: the largest sum of any `w` consecutive minutes
//! of the Insight over `w` × the key's baseline rate at its start (`λ₀`, the whole-window
//! average the Insight reports as `baseline.average`, floored by the prior),
//!
//! ```text
//! peak(w) = max over t of S_w(t) / (w · λ₀),   a new window needs S_w ≥ 2 · peak(w) · w · λ
//! ```
//!
//! where `λ` is the key's baseline rate now (calls per minute). The ratio is to the key's
//! overall rate, not to the hour's seasonal expectation: the hold-off compares the *size* of two
//! bursts, wherever in the day they fall. A burst clearly larger than the last still raises an
//! Insight at once, a repeat of the same burst does not. The gate adds
//! to the usual thresholds (tail probability, `min_count`, `min_ratio`); it never makes a
//! window more likely to raise an Insight. Once the hold-off ends, the key is judged as
//! before. Pure: no state beyond the struct, tested with plain values.

use serde::{Deserialize, Serialize};

/// How long the hold-off lasts after an Insight ends, minutes (a day).
pub const HOLDOFF_MINUTES: i64 = 1440;
/// A new window's rate ratio must be at least this multiple of the ended Insight's peak ratio.
pub const HOLDOFF_RATIO_FACTOR: f64 = 2.0;

/// The hold-off after an Insight ended: peak rate ratios per window length, and how long
/// they hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holdoff {
    /// Minute (since the epoch) the hold-off lasts until (exclusive).
    pub until: i64,
    /// `(w, peak(w))` per tested window length `w` (minutes), peak ratio dimensionless.
    pub peaks: Box<[(u32, f32)]>,
}

impl Holdoff {
    /// The hold-off after an Insight whose nonzero minutes are `minutes` (`(minute, calls)`,
    /// in order), against the key's baseline rate at its start, `expected_rate` calls per
    /// minute, for the window
    /// lengths `windows` (minutes), lasting until `until`. `None` when the rate is not positive
    /// and finite or the Insight has no calls.
    pub fn after(
        minutes: &[(i64, u64)],
        expected_rate: f64,
        windows: &[u32],
        until: i64,
    ) -> Option<Self> {
        if !(expected_rate > 0.0 && expected_rate.is_finite()) || minutes.is_empty() {
            return None;
        }
        let peaks = windows
            .iter()
            .map(|&w| {
                let peak = peak_sum(minutes, w);
                (
                    w,
                    (peak as f64 / (f64::from(w.max(1)) * expected_rate)) as f32,
                )
            })
            .collect();
        Some(Holdoff { until, peaks })
    }

    /// Whether a window of `w` minutes holding `calls` calls, against the key's baseline rate
    /// now, `expected_rate` calls per minute, clears the hold-off at minute `m`. Always true once
    /// the hold-off has ended, and for window lengths it has no peak for.
    pub fn clears(&self, m: i64, w: u32, calls: u64, expected_rate: f64) -> bool {
        if m >= self.until {
            return true;
        }
        let Some(&(_, peak)) = self.peaks.iter().find(|p| p.0 == w) else {
            return true;
        };
        calls as f64 >= HOLDOFF_RATIO_FACTOR * f64::from(peak) * f64::from(w) * expected_rate
    }
}

/// The largest sum of calls over any `w` consecutive minutes (two pointers over the nonzero
/// minutes, in order): linear in `minutes.len()`.
fn peak_sum(minutes: &[(i64, u64)], w: u32) -> u64 {
    let w = i64::from(w.max(1));
    let (mut lo, mut sum, mut best) = (0usize, 0u64, 0u64);
    for &(minute, calls) in minutes {
        sum += calls;
        while let Some(&(first, c)) = minutes.get(lo)
            && first <= minute - w
        {
            sum -= c;
            lo += 1;
        }
        best = best.max(sum);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn peak_sums_slide_over_gaps() {
        let m = [(0, 5), (1, 1), (4, 7), (10, 2)];
        assert_eq!(peak_sum(&m, 1), 7);
        assert_eq!(peak_sum(&m, 2), 7);
        assert_eq!(peak_sum(&m, 5), 13);
        assert_eq!(peak_sum(&m, 60), 15);
        assert_eq!(peak_sum(&[], 5), 0);
    }

    #[test]
    fn a_repeat_of_the_same_burst_is_held_off_and_a_larger_one_is_not() {
        // A 30-call spike in one minute on a key expected at 2 calls per minute.
        let h = Holdoff::after(&[(100, 30)], 2.0, &[1, 5, 60], 100 + HOLDOFF_MINUTES)
            .expect("a hold-off");
        // peak(1) = 15, peak(5) = 3, peak(60) = 0.25.
        assert!(!h.clears(200, 1, 30, 2.0));
        assert!(!h.clears(200, 1, 59, 2.0));
        assert!(h.clears(200, 1, 60, 2.0));
        // A sustained burst is judged on its own window length: 5 minutes at 8/min (ratio 4,
        // peak 3) is held off, at 12/min (ratio 6) it is not.
        assert!(!h.clears(200, 5, 40, 2.0));
        assert!(h.clears(200, 5, 60, 2.0));
        // The hour after: an hour at 1.5× the rate clears the hour's peak (0.25).
        assert!(h.clears(200, 60, 180, 2.0));
        // Unknown window lengths and the end of the hold-off clear.
        assert!(h.clears(200, 15, 0, 2.0));
        assert!(h.clears(100 + HOLDOFF_MINUTES, 1, 1, 2.0));
    }

    #[test]
    fn no_hold_off_without_a_rate_or_calls() {
        assert!(Holdoff::after(&[(0, 3)], 0.0, &[1], 10).is_none());
        assert!(Holdoff::after(&[(0, 3)], f64::NAN, &[1], 10).is_none());
        assert!(Holdoff::after(&[], 1.0, &[1], 10).is_none());
    }

    /// The plain definition: the largest sum over every window `[t - w + 1, t]`.
    fn peak_sum_naive(minutes: &[(i64, u64)], w: u32) -> u64 {
        minutes
            .iter()
            .map(|&(t, _)| {
                minutes
                    .iter()
                    .filter(|r| r.0 > t - i64::from(w) && r.0 <= t)
                    .map(|r| r.1)
                    .sum()
            })
            .max()
            .unwrap_or(0)
    }

    proptest! {
        #[test]
        fn peak_sum_is_the_largest_window_sum(
            gaps in proptest::collection::vec((1i64..20, 0u64..50), 0..40),
            w in 1u32..90,
        ) {
            let mut t = 0;
            let minutes: Vec<(i64, u64)> = gaps
                .into_iter()
                .map(|(g, c)| {
                    t += g;
                    (t, c)
                })
                .collect();
            prop_assert_eq!(peak_sum(&minutes, w), peak_sum_naive(&minutes, w));
        }

        #[test]
        fn the_hold_off_only_raises_the_bar(
            calls in 0u64..10_000,
            peak_calls in 1u64..10_000,
            rate in 0.01f64..100.0,
            w in prop::sample::select(vec![1u32, 5, 15, 60, 360]),
        ) {
            let h = Holdoff::after(&[(0, peak_calls)], rate, &[1, 5, 15, 60, 360], 1440)
                .expect("a hold-off");
            // Monotone in the calls: once a window clears, any larger one does.
            if h.clears(10, w, calls, rate) {
                prop_assert!(h.clears(10, w, calls + 1, rate));
            }
            // A window at twice the peak's calls (a single minute: the peak at every length)
            // always clears.
            prop_assert!(h.clears(10, w, 2 * peak_calls + 1, rate));
        }
    }
}
