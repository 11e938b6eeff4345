//! The hold-off after an Insight: one burst, one Insight.
//!
//! Bursty traffic often changes regime: a key that was smooth for days starts a run of
//! spikes (a new hourly job, a batch backfill), and each spike of the run is as unusual
//! against the days before it as the first. An analyst wants one Insight for the run, not one
//! per spike. So for [`HOLDOFF_MINUTES`] after an Insight ends, a window of `w` minutes that
//! is mostly the same callers raises another only if its **excess** over the key's rate is
//! at least [`HOLDOFF_FACTOR`] times the ended Insight's **peak excess at that window
//! length**: with `P(w)` the largest sum of any `w` consecutive minutes of the Insight and
//! `λ₀` the key's baseline rate at its start (calls per minute),
//!
//! ```text
//! a new window of S calls is held when   S − w · min(λ, λ₀)  <  2 · (P(w) − w · λ₀)
//! ```
//!
//! where `λ` is the key's baseline rate now. The comparison is in calls, not in ratios to
//! the current rate: calls that were held join the baseline as usual, and the bar must not
//! rise with them (`min(λ, λ₀)`), or an attacker could grow a held burst step by step into
//! the baseline. A window is never held when the ended Insight's top callers (its top
//! `userIdentityArn` values) made less than half of its calls: a burst by someone else is
//! another event. The gate adds to the usual thresholds (tail probability, `min_count`,
//! `min_ratio`); it never makes a window more likely to raise an Insight, and once the
//! hold-off ends the key is judged as before.
//!
//! **What it costs**: for a day after an Insight, the same callers can repeat a burst of up to
//! twice its size on that key without a new Insight (the analyst already has the first, and
//! its `End`); sizes are compared against the key's overall rate, so a repeat at a quiet hour
//! of a diurnal key is held as one at its busy hour would be. Pure: no state beyond the
//! struct, tested with plain values.

use serde::{Deserialize, Serialize};

use crate::aggregate::Sym;

/// How long the hold-off lasts after an Insight ends, minutes (a day).
pub const HOLDOFF_MINUTES: i64 = 1440;
/// A new window's excess must be at least this multiple of the ended Insight's peak excess.
pub const HOLDOFF_FACTOR: f64 = 2.0;

/// The hold-off after an Insight ended (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holdoff {
    /// First minute (since the epoch) of windows it applies to: windows ending before the
    /// Insight ended (late calls) are not held.
    pub from: i64,
    /// Minute (since the epoch) it lasts until (exclusive).
    pub until: i64,
    /// The key's baseline rate at the Insight's start, calls per minute (`λ₀`).
    pub base_rate: f64,
    /// `(w, P(w))`: the Insight's largest sum of calls in `w` consecutive minutes, per tested
    /// window length `w` (minutes).
    pub peaks: Box<[(u32, u64)]>,
    /// The Insight's top callers (`userIdentityArn` symbols: its `End`'s attribution values).
    pub principals: Box<[Sym]>,
}

impl Holdoff {
    /// The hold-off after an Insight whose nonzero minutes are `minutes` (`(minute, calls)`,
    /// in order) and whose top callers are `principals`, judged against the key's baseline
    /// rate at its start, `base_rate` calls per minute, for the window lengths `windows`
    /// (minutes), applying from minute `from` until `until`. `None` when the rate is not
    /// positive and finite or the Insight has no calls.
    pub fn after(
        minutes: &[(i64, u64)],
        principals: &[Sym],
        base_rate: f64,
        windows: &[u32],
        from: i64,
        until: i64,
    ) -> Option<Self> {
        if !(base_rate > 0.0 && base_rate.is_finite()) || minutes.is_empty() {
            return None;
        }
        let peaks = windows.iter().map(|&w| (w, peak_sum(minutes, w))).collect();
        Some(Holdoff {
            from,
            until,
            base_rate,
            peaks,
            principals: principals.into(),
        })
    }

    /// Whether minute `m` is inside the hold-off.
    pub fn applies(&self, m: i64) -> bool {
        (self.from..self.until).contains(&m)
    }

    /// Whether a window of `w` minutes ending at minute `m`, holding `calls` calls of which
    /// `same_callers` are by the ended Insight's top callers, against the key's baseline rate
    /// now, `rate` calls per minute, clears the hold-off. True outside the hold-off, for window
    /// lengths it has no peak for, and when the Insight's callers made less than half of the
    /// window's calls.
    pub fn clears(&self, m: i64, w: u32, calls: u64, same_callers: u64, rate: f64) -> bool {
        if !self.applies(m) || 2 * same_callers < calls {
            return true;
        }
        let Some(&(_, peak)) = self.peaks.iter().find(|p| p.0 == w) else {
            return true;
        };
        let wf = f64::from(w.max(1));
        let rate = if rate.is_finite() {
            rate.min(self.base_rate).max(0.0)
        } else {
            self.base_rate
        };
        let peak_excess = (peak as f64 - wf * self.base_rate).max(0.0);
        calls as f64 - wf * rate >= HOLDOFF_FACTOR * peak_excess
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

    /// A 30-call spike in one minute by caller 7 on a key at 2 calls a minute.
    fn spike() -> Holdoff {
        Holdoff::after(
            &[(100, 30)],
            &[7],
            2.0,
            &[1, 5, 60],
            101,
            101 + HOLDOFF_MINUTES,
        )
        .expect("a hold-off")
    }

    #[test]
    fn a_repeat_of_the_same_burst_is_held_off_and_a_larger_one_is_not() {
        let h = spike();
        // Peak excess at 1 minute: 28; a new minute needs an excess of 56 (58 calls).
        assert!(!h.clears(200, 1, 30, 30, 2.0));
        assert!(!h.clears(200, 1, 57, 57, 2.0));
        assert!(h.clears(200, 1, 58, 58, 2.0));
        // At 5 minutes the peak excess is 20: 40 calls (excess 30) is held, 50 is not.
        assert!(!h.clears(200, 5, 40, 40, 2.0));
        assert!(h.clears(200, 5, 50, 50, 2.0));
        // Unknown window lengths, and minutes outside the hold-off, clear.
        assert!(h.clears(200, 15, 0, 0, 2.0));
        assert!(h.clears(101 + HOLDOFF_MINUTES, 1, 1, 1, 2.0));
        assert!(h.clears(100, 1, 1, 1, 2.0));
    }

    #[test]
    fn another_caller_is_not_held() {
        let h = spike();
        // 40 calls, of which 19 by the Insight's callers: mostly someone else.
        assert!(h.clears(200, 1, 40, 19, 2.0));
        assert!(!h.clears(200, 1, 40, 20, 2.0));
    }

    #[test]
    fn held_calls_joining_the_baseline_do_not_raise_the_bar() {
        let h = spike();
        // The baseline rate has grown tenfold since (held calls joined it): the bar is still
        // reckoned from the rate at the Insight's start.
        assert!(h.clears(200, 1, 58, 58, 20.0));
        // A baseline that fell makes the excess larger, never the bar higher.
        assert!(h.clears(200, 1, 57, 57, 0.5));
    }

    #[test]
    fn no_hold_off_without_a_rate_or_calls() {
        assert!(Holdoff::after(&[(0, 3)], &[], 0.0, &[1], 0, 10).is_none());
        assert!(Holdoff::after(&[(0, 3)], &[], f64::NAN, &[1], 0, 10).is_none());
        assert!(Holdoff::after(&[], &[], 1.0, &[1], 0, 10).is_none());
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
        fn the_hold_off_only_raises_the_bar_and_never_above_twice_the_peak(
            calls in 0u64..10_000,
            peak_calls in 1u64..10_000,
            base in 0.001f64..100.0,
            now in 0.001f64..1000.0,
            w in prop::sample::select(vec![1u32, 5, 15, 60, 360]),
        ) {
            let h = Holdoff::after(&[(0, peak_calls)], &[7], base, &[1, 5, 15, 60, 360], 1, 1441)
                .expect("a hold-off");
            // Monotone in the calls: once a window clears, any larger one does.
            if h.clears(10, w, calls, calls, now) {
                prop_assert!(h.clears(10, w, calls + 1, calls + 1, now));
            }
            // Twice the peak (a single minute: the peak at every length) above the window's
            // count at the old rate always clears, whatever the baseline rate has become.
            let big = 2 * peak_calls + (f64::from(w) * base).ceil() as u64;
            prop_assert!(h.clears(10, w, big, big, now));
        }
    }
}
