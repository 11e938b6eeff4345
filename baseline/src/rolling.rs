//! A rolling window of per-minute counts for one key, stored sparsely by hour.
//!
//! Only hours that saw a call (or an excluded minute) take memory: a key called
//! a few times a week costs a few buckets of 16 bytes, a key busy every hour of
//! a 28-day profile window costs 672 buckets (≈ 10.5 KiB). Zero-count minutes are
//! implicit, so a closed minute with no calls costs nothing to record.
//!
//! A key tested every minute reads the sums of its window's complete hours from a
//! cache ([`RollingRate::stats_cached`]), so a test costs the hour in progress, not
//! the week.
//!
//! The window is hour-aligned: for an evaluation at minute `now` with a window
//! of `W` minutes it covers `[floor_hour(now − W), now)`, i.e. between `W` and
//! `W + 59` minutes, never extending before the start of the history.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::MINUTES_PER_HOUR;
use crate::dispersion::{Dispersion, ScaleMoments};

/// One hour of a key's counts, in 16 bytes (a busy key holds 673 of them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct HourBucket {
    /// Hours since the Unix epoch (24 bits, signed: ±957 years around 1970) and, in the low 8
    /// bits, the largest count of one minute of the hour as a [`count_code`].
    hour_max: i32,
    /// Calls in the hour's recorded minutes (26 bits, saturating at 67,108,863: 18,641 calls a
    /// second for the whole hour) and, in the high 6 bits, the number of minutes of this hour
    /// excluded from the baseline (inside an Insight; at most 60).
    calls_excluded: u32,
    /// Sum over the hour's minutes of count², for the per-minute variance.
    sum_sq: f32,
    /// Sum over the hour's four aligned quarter hours of (calls in the quarter hour)², for the
    /// dispersion of 15-minute sums (see [`crate::dispersion`]).
    sum_sq15: f32,
}

/// Largest hour a bucket holds (hours since the epoch; 24 bits, signed).
const MAX_HOUR: i64 = (1 << 23) - 1;
const CALLS_BITS: u32 = 26;
const MAX_CALLS: u32 = (1 << CALLS_BITS) - 1;
const MAX_EXCLUDED: u32 = (1 << (32 - CALLS_BITS)) - 1;

/// A one-minute count in 8 bits, monotone: exact below 16, then 16 steps per doubling (the
/// code rounds down by less than 1/16), saturating at 507,904 calls in a minute.
fn count_code(count: u32) -> u8 {
    if count < 16 {
        return count as u8;
    }
    let shift = (31 - count.leading_zeros()) - 4;
    let code = 16 * shift + (count >> shift);
    u8::try_from(code).unwrap_or(u8::MAX)
}

/// The smallest count with code `code` (a lower bound of the counts it stands for).
fn code_count(code: u8) -> u32 {
    let code = u32::from(code);
    if code < 16 {
        return code;
    }
    let shift = code / 16 - 1;
    (16 + code % 16) << shift
}

/// The hour of `minute` as a bucket holds it (clamped to ±[`MAX_HOUR`]).
fn bucket_hour(minute: i64) -> i64 {
    minute
        .div_euclid(MINUTES_PER_HOUR)
        .clamp(-MAX_HOUR - 1, MAX_HOUR)
}

impl HourBucket {
    /// An empty bucket of `hour` (clamped to ±[`MAX_HOUR`]).
    fn new(hour: i64) -> Self {
        HourBucket {
            hour_max: (hour.clamp(-MAX_HOUR - 1, MAX_HOUR) as i32) << 8,
            calls_excluded: 0,
            sum_sq: 0.0,
            sum_sq15: 0.0,
        }
    }
    /// Hours since the epoch.
    fn hour(&self) -> i64 {
        i64::from(self.hour_max >> 8)
    }
    /// Largest count of one minute (rounded down, see [`count_code`]).
    fn max_count(&self) -> u32 {
        code_count((self.hour_max & 0xff) as u8)
    }
    fn calls(&self) -> u32 {
        self.calls_excluded & MAX_CALLS
    }
    fn excluded(&self) -> u32 {
        self.calls_excluded >> CALLS_BITS
    }
    fn add_calls(&mut self, count: u32) {
        let calls = self.calls().saturating_add(count).min(MAX_CALLS);
        self.calls_excluded = (self.calls_excluded & !MAX_CALLS) | calls;
        let code = count_code(count).max((self.hour_max & 0xff) as u8);
        self.hour_max = (self.hour_max & !0xff) | i32::from(code);
    }
    fn set_excluded(&mut self, excluded: u32) {
        self.calls_excluded = (excluded.min(MAX_EXCLUDED) << CALLS_BITS) | self.calls();
    }
}

/// Baseline statistics of a per-minute rate over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselineStats {
    /// Plain average over the window, calls per minute (what Insights events report as `baseline.average`).
    pub average: f64,
    /// Mean the tests use, calls per minute: the average, floored by the prior; never 0.
    pub mean: f64,
    /// Per-minute variance, calls² per minute², never below `mean` (Poisson).
    pub variance: f64,
    /// Minutes in the window that count (window span minus excluded minutes): `baselineDuration`.
    pub minutes: u32,
    /// Calls in the window.
    pub calls: u64,
    /// Index of dispersion of window sums at 1, 15 and 60 minutes over the window, around
    /// the window's mean (includes the variation of the level between hours).
    pub dispersion: Dispersion,
}

/// The prior belief about a key with little or no history: a floor under its rate.
///
/// A key never seen, or seen a handful of times, is assumed to be called at
/// least `floor` times per minute, so that its first calls are judged against
/// a small but non-zero rate. A key with enough history uses its own
/// observed rate (the floor then no longer binds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatePrior {
    /// Floor of the baseline rate, calls per minute.
    pub floor: f64,
}

impl Default for RatePrior {
    /// One call per week: 1 / 10080 ≈ 9.9e-5 calls per minute, close to the
    /// 8.8e-5 calls/minute baseline of AWS's published sparse example.
    fn default() -> Self {
        RatePrior {
            floor: 1.0 / 10080.0,
        }
    }
}

/// Per-minute statistics of one phase of a daily or weekly cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourProfile {
    /// Mean calls per minute in hours of this phase, floored.
    pub mean: f64,
    /// Per-minute variance, never below `mean`.
    pub variance: f64,
    /// Hours of this phase that were observed (days for a daily cycle, weeks for a weekly one).
    pub samples: u32,
    /// Minutes those hours hold, less excluded ones.
    pub minutes: u64,
    /// Index of dispersion of window sums over those hours (unshrunk).
    pub dispersion: Dispersion,
}

/// Σcount² without its largest minute's share (`max_count² − max_count`, the part above a
/// Poisson minute of that size): one unusual minute in the window is not evidence that the key is
/// bursty, repeated ones are.
fn robust_sum_sq(sum_sq: f64, max_count: u32) -> f64 {
    let m = f64::from(max_count);
    (sum_sq - (m * m - m)).max(0.0)
}

/// `(average, floored mean, variance ≥ mean)` of `n` minutes holding `calls` calls and `sum_sq` Σcount².
fn moments(calls: u64, sum_sq: f64, n: u64, floor: f64) -> (f64, f64, f64) {
    if n == 0 {
        let f = floor.max(f64::MIN_POSITIVE);
        return (0.0, f, f);
    }
    let nf = n as f64;
    let average = calls as f64 / nf;
    let mean = average.max(floor).max(f64::MIN_POSITIVE);
    let variance = (sum_sq / nf - average * average).max(mean);
    (average, mean, variance)
}

/// Sums over a set of hour buckets.
#[derive(Debug, Default, Clone)]
struct Accumulated {
    /// Minutes of the buckets added (60 each; for the share of excluded hours of the day).
    bucket_minutes: u64,
    calls: u64,
    sum_sq: f64,
    sum_sq15: f64,
    sum_sq60: f64,
    excluded: u64,
    max_count: u32,
    /// Σ over hours of (Σcount² − calls² / 60): within-hour squared deviations of minutes.
    within1: f64,
    /// Σ over hours of (Σquarter² − calls² / 4): within-hour squared deviations of quarter hours.
    within15: f64,
    /// `within1` and `within15` by UTC hour of the day (kept only when asked for).
    within_by_hour_of_day: Option<Box<[[f64; 2]; 24]>>,
}

impl Accumulated {
    fn add(&mut self, b: &HourBucket) {
        self.bucket_minutes += MINUTES_PER_HOUR as u64;
        let calls = f64::from(b.calls());
        self.calls += u64::from(b.calls());
        self.sum_sq += f64::from(b.sum_sq);
        self.sum_sq15 += f64::from(b.sum_sq15);
        self.sum_sq60 += calls * calls;
        self.excluded += u64::from(b.excluded());
        self.max_count = self.max_count.max(b.max_count());
        if let Some(by) = self.within_by_hour_of_day.as_mut() {
            let c2 = calls * calls;
            let w1 = (f64::from(b.sum_sq) - c2 / 60.0).max(0.0);
            let w15 = (f64::from(b.sum_sq15) - c2 / 4.0).max(0.0);
            self.within1 += w1;
            self.within15 += w15;
            let hod = b.hour().rem_euclid(24) as usize;
            by[hod][0] += w1;
            by[hod][1] += w15;
        }
    }

    /// Within-hour dispersion over `n` minutes (see [`RollingRate::within_hour`]), without
    /// the three consecutive hours of the day where it concentrates most: bursts that keep to
    /// one time of day (a nightly job) are the daily profile's to explain, not evidence that
    /// the key bursts at any hour. The largest minute's excess is left out as in
    /// [`robust_sum_sq`].
    fn within_hour(&self, n: u64) -> Dispersion {
        let none = [[0.0; 2]; 24];
        let by = self.within_by_hour_of_day.as_deref().unwrap_or(&none);
        let around = |h: usize| -> [f64; 2] {
            let mut t = [0.0; 2];
            for d in [23, 0, 1] {
                let x = by[(h + d) % 24];
                t[0] += x[0];
                t[1] += x[1];
            }
            t
        };
        let top = (0..24)
            .map(around)
            .max_by(|a, b| a[0].total_cmp(&b[0]))
            .unwrap_or([0.0; 2]);
        let m = f64::from(self.max_count);
        let within1 = (self.within1 - top[0] - (m * m - m)).max(0.0);
        let within15 = (self.within15 - top[1]).max(0.0);
        // Three hours of the day of every day are left out.
        let kept = n - n.min(self.bucket_minutes.min(n) / 8);
        Dispersion::within_hour(kept, self.calls, within1, within15)
    }

    /// Dispersion over `n` minutes, with the (robust) per-minute Σcount².
    fn dispersion(&self, n: u64, robust_sum_sq: f64) -> Dispersion {
        Dispersion::from_moments(&ScaleMoments {
            minutes: n,
            calls: self.calls,
            sum_sq: [robust_sum_sq, self.sum_sq15, self.sum_sq60],
        })
    }
}

/// Complete hours of a window accumulated by [`RollingRate::stats_cached`]: the sums over the
/// buckets of hours `first_hour..upto_hour`.
#[derive(Debug, Clone)]
struct WindowSums {
    first_hour: i64,
    /// Exclusive; [`WindowSums::INVALID`] after a change to one of the hours summed.
    upto_hour: i64,
    acc: Accumulated,
}

impl WindowSums {
    const INVALID: i64 = i64::MIN;
}

/// Fewer complete hours than this in a window are summed afresh on each call (a sparse key's
/// few buckets cost less to add than a cache costs to keep).
const MIN_CACHED_HOURS: usize = 16;

/// A cache, not part of the window's value: always equal, never saved (rebuilt on first use).
#[derive(Debug, Clone, Default)]
struct SumsCache(Option<Box<WindowSums>>);

impl PartialEq for SumsCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One phase's totals (see [`RollingRate::phase_totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTotals {
    /// Calls.
    pub calls: f64,
    /// Minutes, less those excluded (inside an Insight).
    pub minutes: f64,
    /// Elapsed hours with no excluded minute (whole hours of baseline).
    pub whole_hours: f64,
    /// Calls in those hours.
    pub whole_calls: f64,
    /// Σ (calls in an hour)² over those hours.
    pub sum_sq: f64,
}

/// Rolling per-minute counts of one key (calls per minute, UTC minute buckets).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RollingRate {
    buckets: VecDeque<HourBucket>,
    /// The quarter hour last recorded into (`minute.div_euclid(15)`) and its calls so far, so
    /// that `sum_sq15` grows by `(s + c)² − s²` as minutes of one quarter hour arrive in order.
    quarter: (i32, u32),
    /// Sums over the complete hours of the last [`RollingRate::stats_cached`] window.
    #[serde(skip)]
    sums: SumsCache,
}

impl RollingRate {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the cached sums when hour `hour` is one of them.
    fn touch(&mut self, hour: i64) {
        if let Some(c) = self.sums.0.as_mut()
            && hour < c.upto_hour
        {
            c.upto_hour = WindowSums::INVALID;
        }
    }

    fn bucket_mut(&mut self, minute: i64) -> &mut HourBucket {
        let hour = bucket_hour(minute);
        self.touch(hour);
        let pos = match self.buckets.back() {
            Some(last) if last.hour() == hour => self.buckets.len() - 1,
            Some(last) if last.hour() < hour => {
                // Grow by an eighth, not by doubling: a busy key holds 673 hours.
                if self.buckets.len() == self.buckets.capacity() {
                    self.buckets.reserve_exact(self.buckets.len() / 8 + 4);
                }
                self.buckets.push_back(HourBucket::new(hour));
                self.buckets.len() - 1
            }
            None => {
                self.buckets.push_back(HourBucket::new(hour));
                0
            }
            Some(_) => match self.buckets.binary_search_by_key(&hour, HourBucket::hour) {
                Ok(i) => i,
                Err(i) => {
                    self.buckets.insert(i, HourBucket::new(hour));
                    i
                }
            },
        };
        &mut self.buckets[pos]
    }

    /// True when the hours are in strictly increasing order (checked on a deserialized window
    /// before use).
    pub fn is_well_formed(&self) -> bool {
        self.buckets
            .iter()
            .zip(self.buckets.iter().skip(1))
            .all(|(a, b)| a.hour() < b.hour())
    }

    /// Records the closed minute `minute` with `count` calls. Zero counts need not be recorded.
    pub fn record(&mut self, minute: i64, count: u32) {
        if count == 0 {
            return;
        }
        let sq = u64::from(count) * u64::from(count);
        let quarter = i32::try_from(minute.div_euclid(15)).unwrap_or(i32::MAX);
        let before = if self.quarter.0 == quarter {
            self.quarter.1
        } else {
            0
        };
        let after = before.saturating_add(count);
        // A minute of an earlier quarter hour (recorded late) counts as a block of its own and
        // leaves the running quarter alone.
        if quarter >= self.quarter.0 {
            self.quarter = (quarter, after);
        }
        let sq15 = (u64::from(after) * u64::from(after)) as f64
            - (u64::from(before) * u64::from(before)) as f64;
        let b = self.bucket_mut(minute);
        b.add_calls(count);
        b.sum_sq += sq as f32;
        b.sum_sq15 += sq15 as f32;
    }

    /// Marks the closed minute `minute` as excluded from the baseline (it lies
    /// inside an Insight). Its calls must not also be [`record`](Self::record)ed.
    pub fn exclude(&mut self, minute: i64) {
        let b = self.bucket_mut(minute);
        b.set_excluded(b.excluded() + 1);
    }

    /// Undoes one [`exclude`](Self::exclude) of `minute` (the minute turned out to be normal).
    pub fn include(&mut self, minute: i64) {
        let hour = bucket_hour(minute);
        self.touch(hour);
        if let Ok(i) = self.buckets.binary_search_by_key(&hour, HourBucket::hour) {
            let b = &mut self.buckets[i];
            b.set_excluded(b.excluded().saturating_sub(1));
        }
    }

    /// Drops every hour that ends at or before `cutoff_minute`'s hour start.
    pub fn evict_before(&mut self, cutoff_minute: i64) {
        let cutoff_hour = cutoff_minute.div_euclid(MINUTES_PER_HOUR);
        while let Some(first) = self.buckets.front() {
            let hour = first.hour();
            if hour >= cutoff_hour {
                break;
            }
            self.buckets.pop_front();
            if let Some(c) = self.sums.0.as_mut()
                && hour >= c.first_hour
            {
                c.upto_hour = WindowSums::INVALID;
            }
        }
    }

    /// Adds into `acc` every hour of the window of `window_minutes` minutes ending just before
    /// `now` (hour-aligned start, see the module docs); returns the window's span in minutes,
    /// from the later of its start and `history_start`, before exclusions.
    fn accumulate_window(
        &self,
        now: i64,
        history_start: i64,
        window_minutes: u32,
        acc: &mut Accumulated,
    ) -> u64 {
        let aligned_start =
            (now - i64::from(window_minutes)).div_euclid(MINUTES_PER_HOUR) * MINUTES_PER_HOUR;
        let first_hour = aligned_start.div_euclid(MINUTES_PER_HOUR);
        let now_hour = now.div_euclid(MINUTES_PER_HOUR);
        for b in self
            .buckets
            .iter()
            .rev()
            .take_while(|b| b.hour() >= first_hour)
        {
            if b.hour() < now_hour || (b.hour() == now_hour && now.rem_euclid(MINUTES_PER_HOUR) > 0)
            {
                acc.add(b);
            }
        }
        (now - aligned_start.max(history_start)).max(0) as u64
    }

    /// Baseline statistics for an evaluation at minute `now` (the window ends
    /// just before `now`), with a window of `window_minutes` minutes, a history
    /// that starts at minute `history_start` and the given prior.
    ///
    /// Reads the newest hours only (at most `window_minutes / 60 + 1` buckets);
    /// older hours stay for [`RollingRate::hour_profile`] until [`RollingRate::evict_before`].
    pub fn stats(
        &self,
        now: i64,
        history_start: i64,
        window_minutes: u32,
        prior: RatePrior,
    ) -> BaselineStats {
        let mut acc = Accumulated::default();
        let span = self.accumulate_window(now, history_start, window_minutes, &mut acc);
        Self::stats_of(&acc, span, prior)
    }

    /// The statistics of a window's sums over a span of `span` minutes (before exclusions).
    fn stats_of(acc: &Accumulated, span: u64, prior: RatePrior) -> BaselineStats {
        let n = span.saturating_sub(acc.excluded);
        let robust = robust_sum_sq(acc.sum_sq, acc.max_count);
        let (average, mean, variance) = moments(acc.calls, robust, n, prior.floor);
        BaselineStats {
            average,
            mean,
            variance,
            minutes: u32::try_from(n).unwrap_or(u32::MAX),
            calls: acc.calls,
            dispersion: acc.dispersion(n, robust),
        }
    }

    /// [`RollingRate::stats`], equal to it in every field, at the cost of the hours that
    /// completed since the last call with the same window start (at most an hour's worth of
    /// new buckets, instead of every bucket of the window), for a key evaluated many times an
    /// hour. The sums of complete hours are kept until the window's start hour moves or one of
    /// those hours changes (a late call, an exclusion, an eviction). Sums of counts and of
    /// squared counts are sums of whole numbers, exact in `f64` up to 2⁵³, so adding the hours
    /// in another order gives the same value.
    pub fn stats_cached(
        &mut self,
        now: i64,
        history_start: i64,
        window_minutes: u32,
        prior: RatePrior,
    ) -> BaselineStats {
        let aligned_start =
            (now - i64::from(window_minutes)).div_euclid(MINUTES_PER_HOUR) * MINUTES_PER_HOUR;
        let first_hour = aligned_start.div_euclid(MINUTES_PER_HOUR);
        let now_hour = now.div_euclid(MINUTES_PER_HOUR);
        let buckets = &self.buckets;
        // Buckets of hours `from..until`, newest first.
        let hours = |from: i64, until: i64| {
            buckets
                .iter()
                .rev()
                .skip_while(move |b| b.hour() >= until)
                .take_while(move |b| b.hour() >= from)
        };
        let mut acc = match self.sums.0.as_mut() {
            Some(c)
                if c.first_hour == first_hour
                    && c.upto_hour != WindowSums::INVALID
                    && c.upto_hour <= now_hour =>
            {
                for b in hours(c.upto_hour, now_hour) {
                    c.acc.add(b);
                }
                c.upto_hour = now_hour;
                c.acc.clone()
            }
            _ => {
                let mut acc = Accumulated::default();
                let mut n = 0usize;
                for b in hours(first_hour, now_hour) {
                    acc.add(b);
                    n += 1;
                }
                if n >= MIN_CACHED_HOURS {
                    let sums = WindowSums {
                        first_hour,
                        upto_hour: now_hour,
                        acc: acc.clone(),
                    };
                    match self.sums.0.as_mut() {
                        Some(c) => **c = sums,
                        None => self.sums.0 = Some(Box::new(sums)),
                    }
                }
                acc
            }
        };
        if now.rem_euclid(MINUTES_PER_HOUR) > 0
            && let Some(b) = hours(now_hour, now_hour + 1).next()
        {
            acc.add(b);
        }
        let span = (now - aligned_start.max(history_start)).max(0) as u64;
        Self::stats_of(&acc, span, prior)
    }

    /// The key's **within-hour** dispersion over the same window as [`RollingRate::stats`]:
    /// of minute and quarter-hour totals around their own hour's mean, pooled over the window's
    /// hours outside the three consecutive hours of the day where it concentrates (burstiness
    /// without the daily cycle, and without bursts that keep to one time of day). Returns the
    /// dispersion and the minutes it was measured over.
    pub fn within_hour(
        &self,
        now: i64,
        history_start: i64,
        window_minutes: u32,
    ) -> (Dispersion, u64) {
        let mut acc = Accumulated {
            within_by_hour_of_day: Some(Box::new([[0.0; 2]; 24])),
            ..Accumulated::default()
        };
        let span = self.accumulate_window(now, history_start, window_minutes, &mut acc);
        let n = span.saturating_sub(acc.excluded);
        (acc.within_hour(n), n)
    }

    /// Per-minute statistics of the hours that share a phase with `hour` in a
    /// cycle of `period_hours` (24: the same hour of the day; 168: the same hour
    /// of the week), over the complete hours of the last `profile_minutes`
    /// before `hour`, since `history_start`.
    ///
    /// Returns `None` when fewer than `min_samples` such hours have elapsed.
    pub fn hour_profile(
        &self,
        hour: i64,
        history_start: i64,
        profile_minutes: u32,
        period_hours: i64,
        min_samples: u32,
        floor: f64,
    ) -> Option<HourProfile> {
        let first_hour =
            (hour * MINUTES_PER_HOUR - i64::from(profile_minutes)).div_euclid(MINUTES_PER_HOUR);
        let history_hour = (history_start + MINUTES_PER_HOUR - 1).div_euclid(MINUTES_PER_HOUR);
        let from = first_hour.max(history_hour);
        let phase = hour.rem_euclid(period_hours);
        // Elapsed hours with the same phase in [from, hour).
        let first_same = from + (phase - from.rem_euclid(period_hours)).rem_euclid(period_hours);
        if first_same >= hour {
            return None;
        }
        let samples = ((hour - 1 - first_same) / period_hours + 1) as u32;
        if samples < min_samples {
            return None;
        }
        let mut acc = Accumulated::default();
        for b in self
            .buckets
            .iter()
            .rev()
            .skip_while(|b| b.hour() >= hour)
            .take_while(|b| b.hour() >= from)
        {
            if b.hour().rem_euclid(period_hours) == phase {
                acc.add(b);
            }
        }
        let n = (u64::from(samples) * MINUTES_PER_HOUR as u64).saturating_sub(acc.excluded);
        if n == 0 {
            return None;
        }
        let robust = robust_sum_sq(acc.sum_sq, acc.max_count);
        let (_, mean, variance) = moments(acc.calls, robust, n, floor);
        Some(HourProfile {
            mean,
            variance,
            samples,
            minutes: n,
            dispersion: acc.dispersion(n, robust),
        })
    }

    /// The key's calls and baseline minutes in consecutive periods of `period_minutes` whole
    /// hours ending at the hour of `until` (exclusive), oldest first, from the first whole hour
    /// at or after `from` on (the caller's history start, no earlier than what it keeps:
    /// hours without a bucket count as minutes without calls): `(calls, minutes)` per period,
    /// minutes less those excluded (inside an Insight). Each retained hour is read once.
    pub fn period_totals(&self, until: i64, from: i64, period_minutes: u32) -> Vec<(f64, f64)> {
        let per = (i64::from(period_minutes) / MINUTES_PER_HOUR).max(1);
        let end_hour = until.div_euclid(MINUTES_PER_HOUR);
        let from = (from + MINUTES_PER_HOUR - 1).div_euclid(MINUTES_PER_HOUR);
        let periods = usize::try_from((end_hour - from).div_euclid(per)).unwrap_or(0);
        let start_hour = end_hour - per * periods as i64;
        let mut out = vec![(0.0, (per * MINUTES_PER_HOUR) as f64); periods];
        for b in self.buckets.iter().skip_while(|b| b.hour() < start_hour) {
            let Ok(i) = usize::try_from((b.hour() - start_hour).div_euclid(per)) else {
                continue;
            };
            let Some(p) = out.get_mut(i) else { break };
            p.0 += f64::from(b.calls());
            p.1 -= f64::from(b.excluded());
        }
        out
    }

    /// Totals per phase of a cycle of `period_hours` (24: per hour of the day), over the
    /// complete hours of the last `profile_minutes` before `hour`, since `history_start`: index
    /// `p` sums the hours with `hour_number mod period_hours == p`. One pass over the retained
    /// hours of the window.
    pub fn phase_totals(
        &self,
        hour: i64,
        history_start: i64,
        profile_minutes: u32,
        period_hours: i64,
    ) -> Vec<PhaseTotals> {
        let period = period_hours.max(1);
        let first_hour =
            (hour * MINUTES_PER_HOUR - i64::from(profile_minutes)).div_euclid(MINUTES_PER_HOUR);
        let history_hour = (history_start + MINUTES_PER_HOUR - 1).div_euclid(MINUTES_PER_HOUR);
        let from = first_hour.max(history_hour);
        let mut out = vec![PhaseTotals::default(); usize::try_from(period).unwrap_or(1)];
        for (p, bin) in out.iter_mut().enumerate() {
            let first = from + (p as i64 - from.rem_euclid(period)).rem_euclid(period);
            if first < hour {
                let hours = (hour - 1 - first) / period + 1;
                bin.whole_hours = hours as f64;
                bin.minutes = (hours * MINUTES_PER_HOUR) as f64;
            }
        }
        for b in self
            .buckets
            .iter()
            .rev()
            .skip_while(|b| b.hour() >= hour)
            .take_while(|b| b.hour() >= from)
        {
            if let Some(bin) = usize::try_from(b.hour().rem_euclid(period))
                .ok()
                .and_then(|p| out.get_mut(p))
            {
                let calls = f64::from(b.calls());
                bin.calls += calls;
                bin.minutes -= f64::from(b.excluded());
                // An hour partly inside an Insight is not a whole hour of the key's level.
                if b.excluded() > 0 {
                    bin.whole_hours -= 1.0;
                } else {
                    bin.whole_calls += calls;
                    bin.sum_sq += calls * calls;
                }
            }
        }
        out
    }

    /// Calls currently held (all retained hours).
    pub fn calls(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.calls())).sum()
    }

    /// Heap bytes used by the retained hours.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<HourBucket>()
            + self
                .sums
                .0
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<WindowSums>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NO_PRIOR: RatePrior = RatePrior { floor: 0.0 };

    #[test]
    fn average_counts_zero_minutes() {
        let mut r = RollingRate::new();
        r.record(100, 3);
        r.record(200, 1);
        // history starts at minute 0, evaluate at 1000 with a long window: 4 calls / 1000 minutes
        let s = r.stats(1000, 0, 10080, NO_PRIOR);
        assert_eq!(s.minutes, 1000);
        assert!((s.average - 0.004).abs() < 1e-12);
        // E[X²] = (9 + 1) / 1000 without the largest minute's excess (9 − 3): (4 / 1000) − 0.004²,
        // floored at the mean: one busy minute is no evidence of burstiness.
        assert!((s.variance - 0.004).abs() < 1e-12);
        r.record(300, 3);
        let s = r.stats(1000, 0, 10080, NO_PRIOR);
        // Two minutes of 3: now over-dispersed. Σ = 9 + 1 + 9 − 6 = 13.
        assert!(
            (s.variance - (0.013 - 0.007f64.powi(2))).abs() < 1e-9,
            "{s:?}"
        );
    }

    #[test]
    fn old_hours_leave_the_window() {
        let mut r = RollingRate::new();
        r.record(0, 50);
        r.record(20_000, 2);
        let s = r.stats(20_060, 0, 10080, NO_PRIOR);
        r.evict_before(20_060 - 10080);
        assert_eq!(r.calls(), 2);
        assert_eq!(s.calls, 2);
        assert!(s.minutes >= 10080 && s.minutes < 10080 + 60);
    }

    #[test]
    fn period_totals_are_whole_periods_back_from_the_hour() {
        let mut r = RollingRate::new();
        let day = 1440;
        // History from minute 30 (the first whole hour is hour 1); calls on days 0, 1 and 2.
        r.record(90, 5);
        r.record(day + 10, 7);
        r.record(2 * day + 1439, 1);
        for m in 0..10 {
            r.exclude(2 * day + 600 + m);
        }
        // Until 3 days and 20 minutes: the hour of `until` ends the last period; the days
        // start at hour 0 + 72 − 24k, and the oldest one would start before hour 1: dropped.
        let t = r.period_totals(3 * day + 20, 30, 1440);
        assert_eq!(t, vec![(7.0, 1440.0), (1.0, 1430.0)]);
        // From minute 0: three whole days, the first with its calls.
        let t = r.period_totals(3 * day, 0, 1440);
        assert_eq!(t, vec![(5.0, 1440.0), (7.0, 1440.0), (1.0, 1430.0)]);
        assert_eq!(RollingRate::new().period_totals(3 * day, 0, 1440).len(), 3);
        assert!(r.period_totals(3 * day, 3 * day, 1440).is_empty());
    }

    #[test]
    fn phase_totals_sum_each_hour_of_the_day() {
        let mut r = RollingRate::new();
        let day = 1440;
        // Two days: 2 calls at 00:10 each day, 5 at 13:30 on the first.
        r.record(10, 2);
        r.record(day + 10, 2);
        r.record(13 * 60 + 30, 5);
        r.exclude(day + 20);
        let t: Vec<(f64, f64, f64, f64, f64)> = r
            .phase_totals(48, 0, 40_320, 24)
            .iter()
            .map(|p| (p.calls, p.minutes, p.whole_hours, p.whole_calls, p.sum_sq))
            .collect();
        assert_eq!(t.len(), 24);
        // Hour 24 has an excluded minute: its 2 calls count, not as a whole hour.
        assert_eq!(t[0], (4.0, 119.0, 1.0, 2.0, 4.0));
        assert_eq!(t[13], (5.0, 120.0, 2.0, 5.0, 25.0));
        assert_eq!(t[5], (0.0, 120.0, 2.0, 0.0, 0.0));
        // Since minute 13 × 60: hour 0 once, hour 13 twice, hour 12 once, until hour 48.
        let t = r.phase_totals(48, 13 * 60, 40_320, 24);
        assert_eq!((t[0].calls, t[0].minutes), (2.0, 59.0));
        assert_eq!((t[13].calls, t[13].whole_hours), (5.0, 2.0));
        assert_eq!((t[12].calls, t[12].minutes), (0.0, 60.0));
    }

    #[test]
    fn excluded_minutes_do_not_count() {
        let mut r = RollingRate::new();
        for m in 0..10 {
            r.exclude(500 + m);
        }
        let s = r.stats(1000, 0, 10080, NO_PRIOR);
        assert_eq!(s.minutes, 990);
    }

    #[test]
    fn prior_keeps_new_keys_above_zero() {
        let mut r = RollingRate::new();
        let s = r.stats(10, 0, 10080, RatePrior::default());
        assert_eq!(s.average, 0.0);
        assert!(s.mean > 0.0 && s.mean < 1e-3);
        // With history, the observed rate is used unchanged.
        r.record(5, 2000);
        let s = r.stats(3000, 0, 10080, RatePrior::default());
        assert!((s.mean - 2000.0 / 3000.0).abs() < 1e-12);
    }

    #[test]
    fn late_minutes_insert_in_order() {
        let mut r = RollingRate::new();
        r.record(600, 1);
        r.record(60, 1);
        r.record(300, 1);
        r.evict_before(120);
        assert_eq!(r.calls(), 2);
    }

    #[test]
    fn daily_profile_sees_the_nightly_job() {
        let mut r = RollingRate::new();
        // 10 days: 30 calls at 02:00–02:04 every night, nothing else.
        for day in 0..10 {
            for m in 0..5 {
                r.record(day * 1440 + 120 + m, 6);
            }
        }
        let now_hour = 10 * 24 + 2;
        let night = r.hour_profile(now_hour, 0, 40320, 24, 3, 1e-4).unwrap();
        assert_eq!(night.samples, 10);
        assert!((night.mean - 0.5).abs() < 1e-12, "{night:?}");
        assert!(night.variance > night.mean);
        let afternoon = r.hour_profile(10 * 24 + 14, 0, 40320, 24, 3, 1e-4).unwrap();
        assert_eq!(afternoon.mean, 1e-4);
        // Too little history: no profile.
        assert!(r.hour_profile(2 * 24 + 2, 0, 40320, 24, 3, 1e-4).is_none());
        // Weekly: 10 days hold one earlier sample of this hour of the week.
        assert!(r.hour_profile(now_hour, 0, 40320, 168, 2, 1e-4).is_none());
        assert_eq!(
            r.hour_profile(now_hour, 0, 40320, 168, 1, 1e-4)
                .map(|p| p.samples),
            Some(1)
        );
    }

    #[test]
    fn a_bucket_packs_hour_calls_exclusions_and_largest_minute() {
        let mut b = HourBucket::new(-5);
        assert_eq!(b.hour(), -5);
        b.add_calls(1000);
        b.add_calls(3);
        b.set_excluded(60);
        assert_eq!((b.hour(), b.calls(), b.excluded()), (-5, 1003, 60));
        assert!(b.max_count() <= 1000 && b.max_count() * 16 >= 1000 * 15);
        b.add_calls(u32::MAX);
        assert_eq!((b.calls(), b.excluded()), (MAX_CALLS, 60));
        assert_eq!(HourBucket::new(i64::MAX).hour(), MAX_HOUR);
        // Today's hours (2026: about 500,000) are far inside the range.
        assert_eq!(HourBucket::new(500_000).hour(), 500_000);
    }

    proptest! {
        /// The count code is monotone and rounds down by less than 1/16.
        #[test]
        fn count_codes_are_monotone_lower_bounds(a in 0u32..600_000, b in 0u32..600_000) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(count_code(lo) <= count_code(hi));
            let c = code_count(count_code(hi));
            prop_assert!(c <= hi);
            prop_assert!(hi == 0 || hi >= 507_904 || f64::from(c) > f64::from(hi) * (15.0 / 16.0));
        }
    }

    /// One change to a window, or a query, in a random history.
    #[derive(Debug, Clone)]
    enum Op {
        Record(i64, u32),
        Exclude(i64),
        Include(i64),
        Evict(i64),
        Query(i64, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Minutes as offsets behind a clock that moves forward: mostly recent, sometimes late.
        prop_oneof![
            6 => (0i64..400, 1u32..40).prop_map(|(d, c)| Op::Record(d, c)),
            1 => (0i64..400).prop_map(Op::Exclude),
            1 => (0i64..400).prop_map(Op::Include),
            1 => (2_000i64..6_000).prop_map(Op::Evict),
            4 => (0i64..90, prop_oneof![Just(60u32), Just(1440), Just(2880)]).prop_map(|(d, w)| Op::Query(d, w)),
        ]
    }

    proptest! {
        /// The cached statistics equal the ones summed afresh, field for field, whatever the
        /// order of records, late records, exclusions, inclusions, evictions and queries.
        #[test]
        fn cached_stats_equal_fresh_stats(ops in proptest::collection::vec((0i64..25, op()), 1..400)) {
            let mut r = RollingRate::new();
            let mut clock = 10_000i64;
            for (step, op) in ops {
                clock += step;
                match op {
                    Op::Record(d, c) => r.record(clock - d, c),
                    Op::Exclude(d) => r.exclude(clock - d),
                    Op::Include(d) => r.include(clock - d),
                    Op::Evict(d) => r.evict_before(clock - d),
                    Op::Query(d, w) => {
                        let now = clock - d;
                        let fresh = r.stats(now, 9_000, w, RatePrior::default());
                        let cached = r.stats_cached(now, 9_000, w, RatePrior::default());
                        prop_assert_eq!(fresh, cached);
                    }
                }
            }
        }

        #[test]
        fn totals_equal_sum_of_window(counts in proptest::collection::vec((0i64..30_000, 1u32..50), 0..200), now in 20_000i64..40_000) {
            let mut r = RollingRate::new();
            for &(m, c) in &counts {
                if m < now { r.record(m, c); }
            }
            let s = r.stats(now, 0, 10080, NO_PRIOR);
            let aligned = (now - 10080).div_euclid(60) * 60;
            let expected: u64 = counts.iter().filter(|&&(m, _)| m >= aligned && m < now).map(|&(_, c)| u64::from(c)).sum();
            prop_assert_eq!(s.calls, expected);
            prop_assert!(s.variance >= s.mean);
        }
    }
}
