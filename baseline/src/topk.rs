//! Space-saving heavy hitters (Metwally, Agrawal, El Abbadi, 2005).
//!
//! A summary of capacity `k` keeps at most `k` `(item, count, error)` entries;
//! any item whose true count exceeds `total / k` is guaranteed to be present,
//! and each reported count overestimates the truth by at most its `error`.
//! Memory: `k × (size_of::<T>() + 16)` bytes.

use serde::{Deserialize, Serialize};

/// Bounded top-k counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceSaving<T> {
    capacity: usize,
    entries: Vec<(T, u64, u64)>,
}

impl<T: Copy + Ord> SpaceSaving<T> {
    /// An empty summary holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        SpaceSaving {
            capacity: capacity.max(1),
            entries: Vec::new(),
        }
    }

    /// Counts `n` more occurrences of `item`.
    pub fn offer(&mut self, item: T, n: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == item) {
            e.1 += n;
            return;
        }
        if self.entries.len() < self.capacity {
            self.entries.push((item, n, 0));
            return;
        }
        // Replace the smallest entry (ties: the largest item, for determinism).
        let mut min_i = 0;
        for (i, e) in self.entries.iter().enumerate() {
            let m = &self.entries[min_i];
            if e.1 < m.1 || (e.1 == m.1 && e.0 > m.0) {
                min_i = i;
            }
        }
        let floor = self.entries[min_i].1;
        self.entries[min_i] = (item, floor + n, floor);
    }

    /// Adds every entry of `other` into `self`.
    pub fn merge(&mut self, other: &SpaceSaving<T>) {
        for &(item, count, _) in &other.entries {
            self.offer(item, count);
        }
    }

    /// The `n` largest `(item, count)` pairs, count descending, ties by item ascending.
    pub fn top(&self, n: usize) -> Vec<(T, u64)> {
        let mut v: Vec<(T, u64)> = self.entries.iter().map(|e| (e.0, e.1)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// Sum of all counts offered (space-saving keeps it exactly).
    pub fn total(&self) -> u64 {
        self.entries.iter().map(|e| e.1).sum()
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(T, u64, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_when_under_capacity() {
        let mut s = SpaceSaving::new(4);
        for (item, n) in [(1u32, 5u64), (2, 3), (1, 2), (3, 9)] {
            s.offer(item, n);
        }
        assert_eq!(s.top(2), vec![(3, 9), (1, 7)]);
    }

    proptest! {
        #[test]
        fn heavy_hitters_are_kept(stream in proptest::collection::vec(0u32..20, 1..400)) {
            let k = 5;
            let mut s = SpaceSaving::new(k);
            let mut truth = std::collections::BTreeMap::new();
            for &x in &stream {
                s.offer(x, 1);
                *truth.entry(x).or_insert(0u64) += 1;
            }
            let total = stream.len() as u64;
            let kept: Vec<(u32, u64)> = s.top(k);
            for (&item, &count) in &truth {
                if count * k as u64 > total {
                    let found = kept.iter().find(|e| e.0 == item);
                    prop_assert!(found.is_some(), "heavy item {} missing", item);
                    if let Some(&(_, c)) = found { prop_assert!(c >= count); }
                }
            }
        }
    }
}

/// Heavy hitters over a rolling window, one [`SpaceSaving`] summary per UTC day.
///
/// Memory: at most `window_days + 1` summaries of `capacity` entries each,
/// allocated only for days with traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowedTopK<T> {
    capacity: usize,
    days: std::collections::VecDeque<(i64, SpaceSaving<T>)>,
}

impl<T: Copy + Ord> WindowedTopK<T> {
    /// Empty, with `capacity` entries per day.
    pub fn new(capacity: usize) -> Self {
        WindowedTopK {
            capacity,
            days: std::collections::VecDeque::new(),
        }
    }

    /// Counts `n` occurrences of `item` at `minute` (minutes since the epoch).
    pub fn offer(&mut self, minute: i64, item: T, n: u64) {
        let day = minute.div_euclid(1440);
        let pos = match self.days.iter().position(|d| d.0 == day) {
            Some(p) => p,
            None => {
                let at = self
                    .days
                    .iter()
                    .position(|d| d.0 > day)
                    .unwrap_or(self.days.len());
                self.days.insert(at, (day, SpaceSaving::new(self.capacity)));
                at
            }
        };
        self.days[pos].1.offer(item, n);
    }

    /// The `n` largest `(item, count)` over the days that overlap `[from_minute, ∞)`,
    /// and the total count of those days (every item, not only the top), dropping older days.
    pub fn top_since(&mut self, from_minute: i64, n: usize) -> (Vec<(T, u64)>, u64) {
        let first_day = from_minute.div_euclid(1440);
        while self.days.front().is_some_and(|d| d.0 < first_day) {
            self.days.pop_front();
        }
        let mut all = SpaceSaving::new(self.capacity * 2);
        let mut total = 0;
        for (_, s) in &self.days {
            all.merge(s);
            total += s.total();
        }
        (all.top(n), total)
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.days.capacity() * std::mem::size_of::<(i64, SpaceSaving<T>)>()
            + self.days.iter().map(|d| d.1.heap_bytes()).sum::<usize>()
    }
}
