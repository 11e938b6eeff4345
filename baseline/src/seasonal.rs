//! A robust daily profile: the median of each time-of-day slot over the last
//! few days.
//!
//! A day is cut into `slots` equal slots (e.g. 288 five-minute slots); each
//! slot keeps its last `days` finite values in a [`SortedWindow`], and the
//! profile's expected value for a slot is their median, so one anomalous day
//! in `days` does not move it.

use crate::robust::SortedWindow;

/// Seconds in a day.
pub const DAY_SECONDS: i64 = 86_400;

/// Median of each time-of-day slot over the last `days` days.
#[derive(Debug, Clone)]
pub struct SlotProfile {
    slot_seconds: i64,
    period_seconds: i64,
    slots: Vec<SortedWindow>,
}

impl SlotProfile {
    /// A daily profile with slots of `slot_seconds` (clamped to 1 s – 1 day)
    /// each keeping `days` values.
    pub fn new(slot_seconds: i64, days: usize) -> Self {
        Self::with_period(slot_seconds, DAY_SECONDS, days)
    }

    /// A profile of a cycle of `period_seconds` (at least 1 s; e.g. a week)
    /// cut into slots of `slot_seconds` (clamped to 1 s – one period), each
    /// keeping its last `periods` values.
    pub fn with_period(slot_seconds: i64, period_seconds: i64, periods: usize) -> Self {
        let period_seconds = period_seconds.max(1);
        let slot_seconds = slot_seconds.clamp(1, period_seconds);
        let n = (period_seconds / slot_seconds).max(1) as usize;
        SlotProfile {
            slot_seconds,
            period_seconds,
            slots: vec![SortedWindow::new(periods); n],
        }
    }

    /// The slot of Unix time `t` (seconds).
    pub fn slot(&self, t: i64) -> usize {
        (t.rem_euclid(self.period_seconds) / self.slot_seconds) as usize % self.slots.len()
    }

    /// The median of the values seen in `t`'s slot, once it holds at least `min_days` values.
    pub fn expected(&self, t: i64, min_days: usize) -> Option<f64> {
        let s = &self.slots[self.slot(t)];
        if s.len() >= min_days.max(1) {
            s.median()
        } else {
            None
        }
    }

    /// Records the value `x` at Unix time `t` (non-finite values are ignored).
    pub fn push(&mut self, t: i64, x: f64) {
        let s = self.slot(t);
        self.slots[s].push(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_periodic_series_is_its_own_profile(
            day in prop::collection::vec(-1e3f64..1e3, 24),
            days in 1usize..6,
            min_days in 1usize..4,
        ) {
            let mut p = SlotProfile::new(3600, 5);
            for d in 0..days {
                for (h, &x) in day.iter().enumerate() {
                    p.push((d * 24 + h) as i64 * 3600, x);
                }
            }
            for (h, &x) in day.iter().enumerate() {
                let t = (days * 24 + h) as i64 * 3600 + 59;
                let e = p.expected(t, min_days);
                if days >= min_days {
                    prop_assert_eq!(e, Some(x));
                } else {
                    prop_assert_eq!(e, None);
                }
            }
        }

        #[test]
        fn one_outlying_day_does_not_move_the_median(x in -1e3f64..1e3, spike in -1e9f64..1e9) {
            let mut p = SlotProfile::new(300, 3);
            p.push(0, x);
            p.push(DAY_SECONDS, spike);
            p.push(2 * DAY_SECONDS, x);
            prop_assert_eq!(p.expected(3 * DAY_SECONDS, 3), Some(x));
        }
    }

    #[test]
    fn a_weekly_profile_tells_weekdays_apart() {
        let week = 7 * DAY_SECONDS;
        let mut p = SlotProfile::with_period(3600, week, 3);
        for w in 0..3 {
            for d in 0..7 {
                p.push(w * week + d * DAY_SECONDS, d as f64);
            }
        }
        for d in 0..7 {
            assert_eq!(p.expected(3 * week + d * DAY_SECONDS, 3), Some(d as f64));
        }
        assert_eq!(SlotProfile::with_period(0, 0, 1).slot(-7), 0);
    }

    #[test]
    fn slots_wrap_and_negative_times_work() {
        let p = SlotProfile::new(300, 2);
        assert_eq!(p.slot(-1), 287);
        assert_eq!(p.slot(DAY_SECONDS + 301), 1);
        assert_eq!(SlotProfile::new(0, 1).slot(5), 5);
    }
}
