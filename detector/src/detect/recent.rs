//! A key's active minutes: minutes with calls that are not yet in its baseline and not part of
//! an Insight, ascending.
//!
//! Every test sums the calls of its trailing windows over these minutes (a busy key holds about
//! [`super::RECENT_CAP`] of them), so counts are kept apart from attributions: the sums read 16
//! bytes a minute, contiguous, instead of 88 bytes with the attribution lists inline (on the
//! 100,000-key bench, loading those counts was most of a test's time).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::aggregate::{AttributionCounts, MinuteSample};

/// Active minutes, ascending: `(minute, calls)` and, at the same positions, their attributions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Recent {
    counts: VecDeque<(i64, u32)>,
    attributions: VecDeque<AttributionCounts>,
}

impl Recent {
    /// Number of active minutes.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// The oldest active minute.
    pub fn front_minute(&self) -> Option<i64> {
        self.counts.front().map(|c| c.0)
    }

    /// `(minute, calls)` of every active minute, ascending.
    pub fn counts(&self) -> impl DoubleEndedIterator<Item = (i64, u32)> + '_ {
        self.counts.iter().copied()
    }

    /// Adds a minute later than every active one. An empty list keeps room for one minute only:
    /// most keys are sparse and hold one at a time (not the four a second push would reserve).
    pub fn push_back(&mut self, minute: i64, sample: MinuteSample) {
        if self.counts.is_empty() && self.counts.capacity() != 1 {
            self.counts = VecDeque::with_capacity(1);
            self.attributions = VecDeque::with_capacity(1);
        }
        self.counts.push_back((minute, sample.count));
        self.attributions.push_back(sample.attributions);
    }

    /// Removes and returns the oldest active minute.
    pub fn pop_front(&mut self) -> Option<(i64, MinuteSample)> {
        let (minute, count) = self.counts.pop_front()?;
        let attributions = self.attributions.pop_front().unwrap_or_default();
        Some((
            minute,
            MinuteSample {
                count,
                attributions,
            },
        ))
    }

    /// Removes and returns every active minute, ascending.
    pub fn drain_all(&mut self) -> Vec<(i64, MinuteSample)> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(r) = self.pop_front() {
            out.push(r);
        }
        out
    }

    /// Forgets every active minute.
    pub fn clear(&mut self) {
        self.counts.clear();
        self.attributions.clear();
    }

    /// Adds `sample`'s calls to `minute` (a late call), inserting the minute in order when it
    /// is not active yet.
    pub fn merge(&mut self, minute: i64, sample: &MinuteSample) {
        match self.counts.binary_search_by_key(&minute, |c| c.0) {
            Ok(i) => {
                self.counts[i].1 += sample.count;
                if let Some(a) = self.attributions.get_mut(i) {
                    a.merge(&sample.attributions);
                }
            }
            Err(i) => {
                self.counts.insert(i, (minute, sample.count));
                self.attributions.insert(i, sample.attributions.clone());
            }
        }
    }

    /// Counts and attributions pair up, minutes ascending (checked on a restored state).
    pub fn is_well_formed(&self) -> bool {
        self.counts.len() == self.attributions.len()
            && self
                .counts
                .iter()
                .zip(self.counts.iter().skip(1))
                .all(|(a, b)| a.0 < b.0)
    }

    /// Heap bytes of the two lists (not of the attribution values they point to).
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<(i64, u32)>()
            + self.attributions.capacity() * std::mem::size_of::<AttributionCounts>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(count: u32, who: u32) -> MinuteSample {
        MinuteSample {
            count,
            attributions: AttributionCounts {
                principal: vec![(who, count)],
                user_agent: Vec::new(),
                error_code: Vec::new(),
            },
        }
    }

    #[test]
    fn minutes_keep_their_attributions_through_push_merge_and_pop() {
        let mut r = Recent::default();
        r.push_back(10, sample(2, 7));
        r.push_back(30, sample(1, 8));
        r.merge(20, &sample(4, 9));
        r.merge(30, &sample(3, 8));
        assert!(r.is_well_formed());
        assert_eq!(r.counts().collect::<Vec<_>>(), [(10, 2), (20, 4), (30, 4)]);
        let (m, s) = r.pop_front().expect("one");
        assert_eq!(
            (m, s.count, s.attributions.principal),
            (10, 2, vec![(7, 2)])
        );
        let rest = r.drain_all();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].1.attributions.principal, vec![(9, 4)]);
        assert_eq!(rest[1].1.attributions.principal, vec![(8, 4)]);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_sparse_key_holds_room_for_one_minute() {
        let mut r = Recent::default();
        for m in 0..10 {
            r.push_back(m, sample(1, 1));
            assert!(r.pop_front().is_some());
        }
        r.push_back(99, sample(1, 1));
        assert_eq!(
            r.heap_bytes(),
            16 + std::mem::size_of::<AttributionCounts>()
        );
    }
}
