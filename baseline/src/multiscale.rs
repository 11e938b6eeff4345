//! Trailing means of a series at several window lengths at once.
//!
//! [`MultiScaleMean`] keeps the last `max(scales)` values and one running sum
//! per scale, so each push is `O(number of scales)`. Sums are recomputed from
//! the kept values every `max(scales)` pushes, so rounding error does not
//! accumulate over long series.

use std::collections::VecDeque;

/// Running means of the last `w` values for each window length `w` in `scales`.
#[derive(Debug, Clone)]
pub struct MultiScaleMean {
    scales: Vec<usize>,
    kept: VecDeque<f64>,
    sums: Vec<f64>,
    pushes: usize,
}

impl MultiScaleMean {
    /// Means over each window length in `scales` (points; zeros are taken as 1).
    pub fn new(scales: &[usize]) -> Self {
        let scales: Vec<usize> = scales.iter().map(|w| (*w).max(1)).collect();
        let sums = vec![0.0; scales.len()];
        MultiScaleMean {
            scales,
            kept: VecDeque::new(),
            sums,
            pushes: 0,
        }
    }

    /// The window lengths, in the order of [`MultiScaleMean::means`].
    pub fn scales(&self) -> &[usize] {
        &self.scales
    }

    fn longest(&self) -> usize {
        self.scales.iter().copied().max().unwrap_or(1)
    }

    /// Adds a finite `x` (callers skip non-finite values).
    pub fn push(&mut self, x: f64) {
        let longest = self.longest();
        for (k, &w) in self.scales.iter().enumerate() {
            self.sums[k] += x;
            if self.kept.len() >= w {
                self.sums[k] -= self.kept[self.kept.len() - w];
            }
        }
        self.kept.push_back(x);
        if self.kept.len() > longest {
            self.kept.pop_front();
        }
        self.pushes += 1;
        if self.pushes.is_multiple_of(longest) {
            for (k, &w) in self.scales.iter().enumerate() {
                self.sums[k] = self.kept.iter().rev().take(w).sum();
            }
        }
    }

    /// Mean of the last `w` values for each scale `w`, or `None` for a scale
    /// with fewer than `w` values pushed so far.
    pub fn means(&self) -> Vec<Option<f64>> {
        self.scales
            .iter()
            .zip(&self.sums)
            .map(|(&w, &s)| (self.kept.len() >= w).then(|| s / w as f64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn means_match_the_naive_trailing_means(
            xs in prop::collection::vec(-1e6f64..1e6, 0..400),
            scales in prop::collection::vec(1usize..40, 1..5),
        ) {
            let mut m = MultiScaleMean::new(&scales);
            for (i, &x) in xs.iter().enumerate() {
                m.push(x);
                for (k, mean) in m.means().into_iter().enumerate() {
                    let w = scales[k];
                    if i + 1 < w {
                        prop_assert!(mean.is_none());
                    } else {
                        let naive: f64 = xs[i + 1 - w..=i].iter().sum::<f64>() / w as f64;
                        let got = mean.unwrap();
                        prop_assert!((got - naive).abs() <= 1e-6 * (1.0 + naive.abs()), "{} vs {}", got, naive);
                    }
                }
            }
        }
    }
}
