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

/// Heavy hitters over a rolling window: one space-saving summary of
/// `capacity` entries per UTC day, stored flat as `(day, item, count)`.
///
/// Memory: 12 bytes per entry for a 4-byte `T` (at most `capacity` per day
/// with traffic, `window_days + 1` days): a key called once a day holds 8
/// entries per attribute, a busy key at most `8 × capacity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowedTopK<T> {
    capacity: u16,
    window_days: u16,
    entries: Vec<(i32, T, u32)>,
}

impl<T: Copy + Ord> WindowedTopK<T> {
    /// Empty, with `capacity` entries per day, keeping `window_days` days (plus the current one).
    pub fn new(capacity: usize, window_days: usize) -> Self {
        WindowedTopK {
            capacity: capacity.clamp(1, usize::from(u16::MAX)) as u16,
            window_days: window_days.clamp(1, usize::from(u16::MAX)) as u16,
            entries: Vec::new(),
        }
    }

    /// Counts `n` occurrences of `item` at `minute` (minutes since the epoch).
    pub fn offer(&mut self, minute: i64, item: T, n: u64) {
        let day = minute.div_euclid(1440) as i32;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        // Drop days that left the window.
        let newest = self.entries.last().map_or(day, |e| e.0.max(day));
        let oldest = newest - i32::from(self.window_days);
        let stale = self.entries.partition_point(|e| e.0 < oldest);
        if stale > 0 {
            self.entries.drain(..stale);
        }
        if day < oldest {
            return;
        }
        let lo = self.entries.partition_point(|e| e.0 < day);
        let hi = self.entries.partition_point(|e| e.0 <= day);
        let today = &mut self.entries[lo..hi];
        if let Some(e) = today.iter_mut().find(|e| e.1 == item) {
            e.2 = e.2.saturating_add(n);
            return;
        }
        if today.len() < usize::from(self.capacity) {
            self.entries.insert(hi, (day, item, n));
            return;
        }
        // Space-saving: the smallest entry (ties: the largest item) gives way and its count carries over.
        let mut min_i = 0;
        for (i, e) in today.iter().enumerate() {
            let m = &today[min_i];
            if e.2 < m.2 || (e.2 == m.2 && e.1 > m.1) {
                min_i = i;
            }
        }
        let floor = today[min_i].2;
        today[min_i] = (day, item, floor.saturating_add(n));
    }

    /// The `n` largest `(item, count)` over the days that overlap `[from_minute, ∞)`,
    /// and the total count of those days (every item, not only the top).
    pub fn top_since(&mut self, from_minute: i64, n: usize) -> (Vec<(T, u64)>, u64) {
        let first_day = from_minute.div_euclid(1440) as i32;
        let mut merged: Vec<(T, u64)> = Vec::new();
        let mut total = 0;
        for &(day, item, count) in &self.entries {
            if day < first_day {
                continue;
            }
            total += u64::from(count);
            match merged.iter_mut().find(|m| m.0 == item) {
                Some(m) => m.1 += u64::from(count),
                None => merged.push((item, u64::from(count))),
            }
        }
        merged.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        merged.truncate(n);
        (merged, total)
    }

    /// True when the summary keeps its invariants (capacity and window at least 1, entries in
    /// day order, at most `capacity` per day); a deserialized summary is checked with this before use.
    pub fn is_well_formed(&self) -> bool {
        self.capacity >= 1
            && self.window_days >= 1
            && self.entries.windows(2).all(|w| w[0].0 <= w[1].0)
            && self
                .entries
                .chunk_by(|a, b| a.0 == b.0)
                .all(|day| day.len() <= usize::from(self.capacity))
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(i32, T, u32)>()
    }
}

#[cfg(test)]
mod windowed_tests {
    use super::*;

    #[test]
    fn windowed_top_k_forgets_old_days_and_keeps_totals() {
        let mut w = WindowedTopK::new(2, 7);
        w.offer(0, 1u32, 5);
        w.offer(10, 2, 3);
        w.offer(20, 3, 1); // day 0 is full: replaces item 2 (count 3), carrying 3 + 1
        assert_eq!(w.top_since(0, 5), (vec![(1, 5), (3, 4)], 9));
        w.offer(8 * 1440, 4, 2); // day 8: day 0 leaves the 7-day window
        assert_eq!(w.top_since(0, 5), (vec![(4, 2)], 2));
        assert_eq!(w.heap_bytes() % 12, 0);
    }
}
