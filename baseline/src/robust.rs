//! Robust location and scale of a sliding window of real values.
//!
//! [`SortedWindow`] keeps the last `capacity` finite values both in arrival
//! order and sorted, so order statistics (median, quantiles, interquartile
//! range) and empirical tail counts are `O(log n)` reads; a push costs one
//! `O(n)` memmove of `n × 8` bytes (n ≤ capacity), which for the few thousand
//! values kept here is cheaper than a tree.

use std::collections::VecDeque;

/// The interquartile range of a standard normal distribution (`2 × Φ⁻¹(0.75)`).
pub const NORMAL_IQR: f64 = 1.348_979_500_392_163_5;

/// The last `capacity` finite values pushed, in arrival order and sorted.
#[derive(Debug, Clone, Default)]
pub struct SortedWindow {
    capacity: usize,
    fifo: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl SortedWindow {
    /// An empty window holding at most `capacity` values (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        SortedWindow {
            capacity,
            fifo: VecDeque::with_capacity(capacity + 1),
            sorted: Vec::with_capacity(capacity + 1),
        }
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Adds `x`, evicting the oldest value when full. Non-finite values are ignored.
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if self.fifo.len() == self.capacity
            && let Some(old) = self.fifo.pop_front()
        {
            let i = self.sorted.partition_point(|v| v.total_cmp(&old).is_lt());
            if i < self.sorted.len() {
                self.sorted.remove(i);
            }
        }
        let i = self.sorted.partition_point(|v| v.total_cmp(&x).is_lt());
        self.sorted.insert(i, x);
        self.fifo.push_back(x);
    }

    /// The `q`-quantile (`q` in `[0, 1]`, linear interpolation between order
    /// statistics); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let pos = q * (n - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(n - 1);
        let frac = pos - lo as f64;
        Some(self.sorted[lo] + (self.sorted[hi] - self.sorted[lo]) * frac)
    }

    /// The median; `None` when empty.
    pub fn median(&self) -> Option<f64> {
        self.quantile(0.5)
    }

    /// A robust standard deviation: the interquartile range over
    /// [`NORMAL_IQR`], falling back to the 5–95 % range over its normal
    /// value (3.29) and then to the full range over 6 when the inner
    /// quantiles coincide (discrete or mostly constant values). Zero for a
    /// constant window, `None` when empty.
    pub fn robust_sd(&self) -> Option<f64> {
        let iqr = self.quantile(0.75)? - self.quantile(0.25)?;
        if iqr > 0.0 {
            return Some(iqr / NORMAL_IQR);
        }
        let inner90 = self.quantile(0.95)? - self.quantile(0.05)?;
        if inner90 > 0.0 {
            return Some(inner90 / 3.289_707_253_902_945);
        }
        Some((self.quantile(1.0)? - self.quantile(0.0)?) / 6.0)
    }

    /// Number of values held that are `>= x`.
    pub fn count_at_least(&self, x: f64) -> usize {
        self.sorted.len() - self.sorted.partition_point(|v| *v < x)
    }

    /// Number of values held that are `<= x`.
    pub fn count_at_most(&self, x: f64) -> usize {
        self.sorted.partition_point(|v| *v <= x)
    }

    /// The values held, ascending.
    pub fn sorted(&self) -> &[f64] {
        &self.sorted
    }

    /// Smallest and largest value held; `None` when empty.
    pub fn range(&self) -> Option<(f64, f64)> {
        Some((*self.sorted.first()?, *self.sorted.last()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_median(v: &[f64]) -> f64 {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }

    proptest! {
        #[test]
        fn holds_the_last_values_and_their_median(
            xs in prop::collection::vec(-1e6f64..1e6, 1..300),
            cap in 1usize..64,
        ) {
            let mut w = SortedWindow::new(cap);
            for &x in &xs {
                w.push(x);
            }
            let tail = &xs[xs.len().saturating_sub(cap)..];
            prop_assert_eq!(w.len(), tail.len());
            let m = w.median().unwrap();
            prop_assert!((m - naive_median(tail)).abs() <= 1e-9 * (1.0 + m.abs()));
            let (lo, hi) = w.range().unwrap();
            prop_assert!(w.quantile(0.3).unwrap() >= lo && w.quantile(0.3).unwrap() <= hi);
            let probe = xs[xs.len() / 2];
            prop_assert_eq!(w.count_at_least(probe), tail.iter().filter(|v| **v >= probe).count());
            prop_assert_eq!(w.count_at_most(probe), tail.iter().filter(|v| **v <= probe).count());
        }

        #[test]
        fn robust_sd_is_shift_invariant_and_scales(
            xs in prop::collection::vec(-1e3f64..1e3, 2..100),
            shift in -1e3f64..1e3,
            k in 0.1f64..10.0,
        ) {
            let mut a = SortedWindow::new(200);
            let mut b = SortedWindow::new(200);
            for &x in &xs {
                a.push(x);
                b.push(k * x + shift);
            }
            let (sa, sb) = (a.robust_sd().unwrap(), b.robust_sd().unwrap());
            prop_assert!(sa >= 0.0);
            prop_assert!((sb - k * sa).abs() <= 1e-6 * (1.0 + sb.abs()));
        }
    }

    #[test]
    fn non_finite_values_are_ignored_and_empty_reads_are_none() {
        let mut w = SortedWindow::new(4);
        assert!(w.median().is_none() && w.robust_sd().is_none() && w.range().is_none());
        w.push(f64::NAN);
        w.push(f64::INFINITY);
        assert!(w.is_empty());
        w.push(2.0);
        assert_eq!(w.median(), Some(2.0));
        assert_eq!(w.robust_sd(), Some(0.0));
    }
}
