//! The Insight state machine: per-key baselines, significance tests and
//! `Start`/`End` transitions, fed closed minutes in order.
//!
//! For each closed minute and each key with calls in it, the detector tests the
//! trailing windows (default 1, 5, 15 and 60 minutes) against the key's
//! baseline (mean and variance of calls per minute over the baseline window).
//! A window is significant when its count's tail probability under the
//! baseline model (Poisson, or negative binomial when over-dispersed) is below
//! `tail_probability / windows` (Bonferroni), it holds at least `min_count`
//! calls, and its rate is at least `min_ratio` times the baseline. The first
//! significant minute opens an Insight that starts at the first call of the
//! triggering window.
//!
//! With enough history the baseline is seasonal: the same hour of the day
//! (±1 hour, the busiest) over the profile window, and the same hour of the
//! week; a window is unusual only if it is unusual under each of them. Before
//! that, the plain 7-day baseline is used.
//!
//! While an Insight is open its minutes are kept out of the baseline (a long
//! attack cannot make itself normal). It ends after `end_after_quiet_minutes`
//! minutes with no unusual minute; the `End` time is the minute after the last
//! unusual one. Its unusual minutes stay out of the baseline unless the key had
//! an Insight at about the same time of day before (recurring activity, which
//! the daily profile should learn). An Insight that lasts `max_insight_minutes`
//! is a level shift: it ends and its minutes join the baseline.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use trailsight_baseline::{BaselineStats, CountModel, RatePrior, RollingRate, WindowedTopK};

use crate::aggregate::{
    AttributionCounts, ClosedMinute, KeyId, LateCall, MinuteSample, RateKey, Sym, ValueCounts,
};
use crate::config::DetectorConfig;
use crate::policy::{KeyFields, KeyPolicy, Policy};

/// Days of baseline attributions kept (the 7-day baseline window, plus today).
const BASELINE_TOPK_DAYS: usize = 7;
/// Values kept per attribute per day for baseline attributions.
const BASELINE_TOPK_CAPACITY: usize = 8;
/// Insights starting within this many minutes of the same time of day as an earlier one are recurring.
const RECURRENCE_TOLERANCE_MINUTES: i64 = 60;
/// Earlier Insight starts remembered per key.
const MAX_PAST_STARTS: usize = 16;
/// Attribution values reported per attribute (as AWS).
pub const ATTRIBUTION_VALUES: usize = 5;

/// The three attributes, in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// `userIdentityArn`.
    UserIdentityArn,
    /// `userAgent`.
    UserAgent,
    /// `errorCode` (call rate only).
    ErrorCode,
}

impl Attribute {
    /// The attribute's name in Insights records.
    pub fn name(self) -> &'static str {
        match self {
            Attribute::UserIdentityArn => "userIdentityArn",
            Attribute::UserAgent => "userAgent",
            Attribute::ErrorCode => "errorCode",
        }
    }
}

/// Top values of one attribute, `(value, per-minute average)`, average descending.
pub type TopValues = Vec<(Sym, f64)>;

/// What a transition reports about one attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributionSummary {
    /// The attribute.
    pub attribute: Attribute,
    /// Top values during the insight window.
    pub insight: TopValues,
    /// Top values during the baseline window.
    pub baseline: TopValues,
}

/// A `Start` or `End` decided by the detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The key.
    pub key: RateKey,
    /// True for `Start`, false for `End`.
    pub start: bool,
    /// First minute of the Insight (shared by `Start` and `End`).
    pub insight_start: i64,
    /// `eventTime` minute of this record: the start minute, or the end minute (exclusive end of activity).
    pub event_minute: i64,
    /// The closed minute whose processing decided this record (delivery follows it).
    pub decided_minute: i64,
    /// Calls (or errors) in the insight window.
    pub insight_calls: u64,
    /// Insight window length, minutes (≥ 1).
    pub insight_minutes: u64,
    /// Baseline at the start.
    pub baseline: BaselineStats,
    /// Attributions.
    pub attributions: Vec<AttributionSummary>,
}

/// An Insight still open, for reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenInsightInfo {
    /// The key.
    pub key: RateKey,
    /// First minute.
    pub start: i64,
    /// Last unusual minute so far.
    pub last_active: i64,
    /// Calls so far.
    pub calls: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenInsight {
    start: i64,
    baseline: BaselineStats,
    /// The baseline model the Insight was judged against; its minutes are judged against it too.
    model: Model,
    baseline_attributions: [TopValues; 3],
    /// Nonzero minutes since `start`, in order.
    minutes: Vec<(i64, MinuteSample)>,
    last_active: i64,
    /// Length of the triggering window, minutes.
    window: u32,
    /// Closed minute at which activity was last seen: late calls keep an Insight open
    /// for `end_after_quiet_minutes` after they arrive, not after their own minute.
    seen_at: i64,
}

/// A per-minute count model: mean and variance, calls per minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Model {
    mean: f64,
    variance: f64,
}

/// Seasonal models of one hour, cached for the hour.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SeasonCache {
    hour: i64,
    models: Models,
}

/// Up to four models, without allocation.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Models {
    len: usize,
    items: [Option<Model>; 4],
}

impl Models {
    fn push(&mut self, m: Model) {
        if self.len < self.items.len() {
            self.items[self.len] = Some(m);
            self.len += 1;
        }
    }
    fn extend(&mut self, other: &Models) {
        for m in other.iter() {
            self.push(m);
        }
    }
    fn iter(&self) -> impl Iterator<Item = Model> + Clone + '_ {
        self.items[..self.len].iter().flatten().copied()
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeyState {
    rate: RollingRate,
    /// Nonzero minutes not part of an Insight, within the longest window.
    recent: VecDeque<(i64, MinuteSample)>,
    attributions: Option<Box<[WindowedTopK<Sym>; 3]>>,
    insight: Option<Box<OpenInsight>>,
    season: [Option<Box<SeasonCache>>; 2],
    /// Start minutes of this key's recent Insights (recurrence detection).
    past_starts: Vec<i64>,
    /// Effective sensitivity settings, resolved on first sight (from the settings: not saved).
    #[serde(skip)]
    policy: Option<KeyPolicy>,
}

impl KeyState {
    /// The seasonal models of `hour`: the daily profile (the busiest of the same hour, the hour
    /// before and the hour after, over the profile window, once `min_profile_days` days are
    /// known) and the weekly profile (same hour of the week, once `min_profile_weeks` weeks are
    /// known). Empty when seasonality is off or the history is too short. Cached per hour.
    ///
    /// Each profile's mean is shrunk towards the key's overall baseline `global` with the weight of
    /// `profile_prior_minutes` minutes (a gamma prior on the hour's rate): a few quiet hours of a
    /// sparse key are weak evidence that this hour is quieter than the rest of the day, while a
    /// month of nightly bursts outweighs it.
    fn seasonal(
        &mut self,
        hour: i64,
        history_start: i64,
        cfg: &DetectorConfig,
        floor: f64,
        global: Model,
    ) -> Models {
        if !cfg.seasonality {
            return Models::default();
        }
        let slot = hour.rem_euclid(2) as usize;
        if let Some(c) = &self.season[slot]
            && c.hour == hour
        {
            return c.models;
        }
        let window = cfg.profile_window_minutes;
        let mut models = Models::default();
        let daily = (-1..=1)
            .filter_map(|d| {
                self.rate.hour_profile(
                    hour + d,
                    history_start,
                    window,
                    24,
                    cfg.min_profile_days,
                    floor,
                )
            })
            .max_by(|a, b| a.mean.total_cmp(&b.mean));
        let k = cfg.profile_prior_minutes;
        // The mean is shrunk; the dispersion (variance / mean) stays the hour's own: a key
        // bursty at 02:00 is not thereby bursty at 14:00.
        let shrink = |p: trailsight_baseline::HourProfile| {
            let n = f64::from(p.samples) * 60.0;
            let mean = (p.mean * n + global.mean * k) / (n + k);
            Model {
                mean,
                variance: mean * (p.variance / p.mean).max(1.0),
            }
        };
        if let Some(p) = daily {
            models.push(shrink(p));
        }
        if let Some(p) = self.rate.hour_profile(
            hour,
            history_start,
            window,
            168,
            cfg.min_profile_weeks,
            floor,
        ) {
            models.push(shrink(p));
        }
        self.season[slot] = Some(Box::new(SeasonCache { hour, models }));
        models
    }

    fn attributions(&mut self) -> &mut [WindowedTopK<Sym>; 3] {
        self.attributions.get_or_insert_with(|| {
            Box::new([
                WindowedTopK::new(BASELINE_TOPK_CAPACITY, BASELINE_TOPK_DAYS),
                WindowedTopK::new(BASELINE_TOPK_CAPACITY, BASELINE_TOPK_DAYS),
                WindowedTopK::new(BASELINE_TOPK_CAPACITY, BASELINE_TOPK_DAYS),
            ])
        })
    }

    fn learn(&mut self, minute: i64, sample: &MinuteSample) {
        self.rate.record(minute, sample.count);
        let a = self.attributions();
        for (i, values) in [
            &sample.attributions.principal,
            &sample.attributions.user_agent,
            &sample.attributions.error_code,
        ]
        .into_iter()
        .enumerate()
        {
            for &(s, n) in values {
                a[i].offer(minute, s, u64::from(n));
            }
        }
    }

    /// Approximate heap bytes of this key's state.
    fn heap_bytes(&self) -> usize {
        self.rate.heap_bytes()
            + self.recent.capacity() * std::mem::size_of::<(i64, MinuteSample)>()
            + self.attributions.as_ref().map_or(0, |a| {
                std::mem::size_of::<[WindowedTopK<Sym>; 3]>()
                    + a.iter().map(WindowedTopK::heap_bytes).sum::<usize>()
            })
    }
}

/// Per-key detection state for every rate key. Serializable (the settings are not
/// part of it: see [`Detector::restore_settings`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detector {
    /// Shared so a test can hold the settings while it mutates key state.
    #[serde(skip)]
    config: std::sync::Arc<DetectorConfig>,
    #[serde(skip)]
    policy: Policy,
    prior: RatePrior,
    keys: Vec<KeyState>,
    open: BTreeSet<KeyId>,
    late: Vec<LateCall>,
}

/// Where the detector looks up keys and history starts (the aggregator).
pub trait KeyLookup {
    /// The key behind an id.
    fn key(&self, id: KeyId) -> RateKey;
    /// First minute of an account and Region's history.
    fn history_start(&self, account: Sym, region: Sym) -> Option<i64>;
    /// The string of a symbol.
    fn resolve(&self, sym: Sym) -> &str;
}

impl KeyLookup for crate::aggregate::Aggregator {
    fn key(&self, id: KeyId) -> RateKey {
        crate::aggregate::Aggregator::key(self, id)
    }
    fn history_start(&self, account: Sym, region: Sym) -> Option<i64> {
        crate::aggregate::Aggregator::history_start(self, account, region)
    }
    fn resolve(&self, sym: Sym) -> &str {
        self.symbols.resolve(sym)
    }
}

/// Adds `sample` at `minute` into a minute-ordered list.
fn merge_sample(list: &mut Vec<(i64, MinuteSample)>, minute: i64, sample: &MinuteSample) {
    match list.binary_search_by_key(&minute, |r| r.0) {
        Ok(i) => {
            list[i].1.count += sample.count;
            list[i].1.attributions.merge(&sample.attributions);
        }
        Err(i) => list.insert(i, (minute, sample.clone())),
    }
}

fn merge_sample_deque(
    list: &mut VecDeque<(i64, MinuteSample)>,
    minute: i64,
    sample: &MinuteSample,
) {
    match list.binary_search_by_key(&minute, |r| r.0) {
        Ok(i) => {
            list[i].1.count += sample.count;
            list[i].1.attributions.merge(&sample.attributions);
        }
        Err(i) => list.insert(i, (minute, sample.clone())),
    }
}

fn top_values(values: &ValueCounts, minutes: u64) -> TopValues {
    let mut v: Vec<(Sym, u32)> = values.clone();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(ATTRIBUTION_VALUES);
    let m = minutes.max(1) as f64;
    v.into_iter().map(|(s, n)| (s, f64::from(n) / m)).collect()
}

impl Detector {
    /// A detector with the given (validated) settings.
    pub fn new(config: DetectorConfig, policy: Policy) -> Self {
        let prior = RatePrior {
            floor: config.min_baseline_rate,
        };
        Detector {
            config: std::sync::Arc::new(config),
            policy,
            prior,
            keys: Vec::new(),
            open: BTreeSet::new(),
            late: Vec::new(),
        }
    }

    /// After deserializing: applies the settings.
    pub fn restore_settings(&mut self, config: DetectorConfig, policy: Policy) {
        self.prior = RatePrior {
            floor: config.min_baseline_rate,
        };
        self.config = std::sync::Arc::new(config);
        self.policy = policy;
        for k in &mut self.keys {
            k.policy = None;
        }
    }

    /// The settings.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    fn state(&mut self, id: KeyId) -> &mut KeyState {
        let i = id as usize;
        if i >= self.keys.len() {
            self.keys.resize_with(i + 1, KeyState::default);
        }
        &mut self.keys[i]
    }

    /// Takes a call that arrived after its minute closed; [`Detector::process_late`] handles it.
    pub fn record_late(&mut self, late: &LateCall) {
        self.late.push(*late);
    }

    /// Handles the late calls taken since the last call, with `now` the last closed minute.
    ///
    /// A late call joins its key's baseline, or the open Insight it falls in, and the
    /// windows ending at its minute are tested as they would have been had it been on
    /// time: an unusual window opens an Insight starting in the past, decided now.
    pub fn process_late(&mut self, keys: &impl KeyLookup, now: i64, out: &mut Vec<Transition>) {
        let mut late = std::mem::take(&mut self.late);
        late.sort_by_key(|l| (l.key, l.minute));
        let max_window = i64::from(self.config.max_window());
        let mut i = 0;
        while i < late.len() {
            let id = late[i].key;
            let group_end = late[i..]
                .iter()
                .position(|l| l.key != id)
                .map_or(late.len(), |p| i + p);
            let group = &late[i..group_end];
            i = group_end;
            let key = keys.key(id);
            self.ensure_policy(id, key, keys);
            let history_start = keys.history_start(key.account, key.region).unwrap_or(now);
            let st = self.state(id);
            // Late calls that are tested before they join the baseline, per minute.
            let mut fresh: Vec<(i64, MinuteSample)> = Vec::new();
            for call in group {
                let sample = call.sample();
                if let Some(ins) = st.insight.as_mut()
                    && call.minute >= ins.start
                {
                    merge_sample(&mut ins.minutes, call.minute, &sample);
                    ins.last_active = ins.last_active.max(call.minute);
                    ins.seen_at = now;
                } else if call.minute > now - max_window && st.insight.is_none() {
                    merge_sample(&mut fresh, call.minute, &sample);
                } else {
                    st.learn(call.minute, &sample);
                }
            }
            for (minute, sample) in &fresh {
                merge_sample_deque(&mut st.recent, *minute, sample);
            }
            let mut opened_at = None;
            for at in fresh.iter().map(|f| f.0).collect::<Vec<_>>() {
                if let Some(t) = self.test_at(id, key, history_start, at, now, now, &fresh) {
                    opened_at = Some(t.insight_start);
                    out.push(t);
                    break;
                }
            }
            // Calls not taken by an Insight join the baseline.
            let st = self.state(id);
            for (minute, sample) in &fresh {
                if opened_at.is_none_or(|start| *minute < start) {
                    st.learn(*minute, sample);
                }
            }
        }
        self.late = late;
        self.late.clear();
    }

    fn ensure_policy(&mut self, id: KeyId, key: RateKey, keys: &impl KeyLookup) {
        if self.state(id).policy.is_none() {
            let fields = KeyFields {
                account: keys.resolve(key.account),
                region: keys.resolve(key.region),
                event_source: keys.resolve(key.event_source),
                event_name: keys.resolve(key.event_name),
                error_code: key.error_code.map(|e| keys.resolve(e)),
            };
            let policy = self.policy.for_key(fields);
            self.state(id).policy = Some(policy);
        }
    }

    /// Processes one closed minute; appends decided transitions to `out`.
    pub fn close_minute(
        &mut self,
        closed: &ClosedMinute,
        keys: &impl KeyLookup,
        out: &mut Vec<Transition>,
    ) {
        let m = closed.minute;
        let mut samples = closed.samples.iter().peekable();
        let open: Vec<KeyId> = self.open.iter().copied().collect();
        let mut open_iter = open.into_iter().peekable();
        let empty = MinuteSample::default();
        loop {
            // Merge keys with calls and keys with an open Insight, ascending key id.
            let next_sample = samples.peek().map(|s| s.0);
            let next_open = open_iter.peek().copied();
            let (id, sample) = match (next_sample, next_open) {
                (None, None) => break,
                (Some(a), Some(b)) if a == b => {
                    open_iter.next();
                    let s = samples.next().map_or(&empty, |s| &s.1);
                    (a, s)
                }
                (Some(a), Some(b)) if b < a => {
                    open_iter.next();
                    (b, &empty)
                }
                (Some(a), _) => {
                    let s = samples.next().map_or(&empty, |s| &s.1);
                    (a, s)
                }
                (None, Some(b)) => {
                    open_iter.next();
                    (b, &empty)
                }
            };
            let key = keys.key(id);
            let history_start = keys.history_start(key.account, key.region).unwrap_or(m);
            self.ensure_policy(id, key, keys);
            if let Some(t) = self.step(id, key, history_start, m, sample) {
                out.push(t);
            }
        }
    }

    fn step(
        &mut self,
        id: KeyId,
        key: RateKey,
        history_start: i64,
        m: i64,
        sample: &MinuteSample,
    ) -> Option<Transition> {
        let max_window = i64::from(self.config.max_window());
        let st = self.state(id);
        if sample.count > 0 {
            st.recent.push_back((m, sample.clone()));
        }
        while st.recent.front().is_some_and(|r| r.0 <= m - max_window) {
            st.recent.pop_front();
        }
        if st.insight.is_some() {
            return self.step_open(id, key, m, sample);
        }
        if sample.count == 0 {
            return None;
        }
        let t = self.test_at(id, key, history_start, m, m, m - 1, &[]);
        if t.is_none() {
            self.state(id).learn(m, sample);
        }
        t
    }

    /// Tests the trailing windows that end at minute `at` (calls in `recent` up to `at`);
    /// when one is unusual, opens an Insight at its first call, decided at minute `decided`
    /// (later than `at` for late records). Calls in `recent` up to `learnt_through` are in the
    /// baseline, except those in `unlearnt`, and are taken back out of it.
    #[allow(clippy::too_many_arguments)]
    fn test_at(
        &mut self,
        id: KeyId,
        key: RateKey,
        history_start: i64,
        at: i64,
        decided: i64,
        learnt_through: i64,
        unlearnt: &[(i64, MinuteSample)],
    ) -> Option<Transition> {
        let cfg = self.config.clone();
        let prior = self.prior;
        let st = self.state(id);
        let m = at;
        st.rate.evict_before(
            m - i64::from(cfg.profile_window_minutes.max(cfg.baseline_window_minutes)),
        );
        let stats = st
            .rate
            .stats(m, history_start, cfg.baseline_window_minutes, prior);
        let policy = st.policy.unwrap_or(KeyPolicy {
            tail_probability: cfg.tail_probability(),
            min_ratio: cfg.min_ratio(),
            min_count: cfg.min_count,
            suppress: false,
        });
        let warm = m - history_start >= i64::from(cfg.warmup_minutes) && !policy.suppress;
        let per_window = policy.tail_probability / cfg.windows_minutes.len() as f64;
        let mut best: Option<(f64, u32, Model)> = None;
        if warm {
            let hour = m.div_euclid(60);
            let global = Model {
                mean: stats.mean,
                variance: stats.variance,
            };
            let now_models = st.seasonal(hour, history_start, &cfg, prior.floor, global);
            let prev_models = st.seasonal(hour - 1, history_start, &cfg, prior.floor, global);
            for &w in &cfg.windows_minutes {
                let sum: u64 = st
                    .recent
                    .iter()
                    .filter(|r| r.0 > m - i64::from(w) && r.0 <= m)
                    .map(|r| u64::from(r.1.count))
                    .sum();
                if sum < u64::from(policy.min_count) {
                    continue;
                }
                // The window is unusual only if it is unusual under every applicable model: the
                // seasonal profiles of this hour (and of the previous one when the window reaches
                // into it), or the plain 7-day baseline when no profile has enough history yet.
                let reaches_back = i64::from(w) > m.rem_euclid(60) + 1;
                let mut models = now_models;
                if reaches_back {
                    models.extend(&prev_models);
                }
                if models.is_empty() {
                    models.push(Model {
                        mean: stats.mean,
                        variance: stats.variance,
                    });
                }
                let seasonal_floor = cfg.seasonal_floor_fraction * stats.mean;
                let floored = models.iter().map(|m| {
                    let mean = m.mean.max(seasonal_floor).max(prior.floor);
                    Model {
                        mean,
                        variance: m.variance.max(mean),
                    }
                });
                let strictest = floored.clone().fold(
                    Model {
                        mean: 0.0,
                        variance: 0.0,
                    },
                    |a, b| if b.mean > a.mean { b } else { a },
                );
                // Effect size first: it is cheap, the tail probability is not.
                if (sum as f64) < policy.min_ratio * strictest.mean * f64::from(w) {
                    continue;
                }
                let p = floored
                    .map(|m| CountModel::for_window(m.mean, m.variance, w).tail_probability(sum))
                    .fold(0.0f64, f64::max);
                if p < per_window && best.as_ref().is_none_or(|b| p < b.0) {
                    best = Some((p, w, strictest));
                }
            }
        }
        let (_, w, model) = best?;
        // Open an Insight at the first call of the triggering window; it holds every call since.
        let window: Vec<(i64, MinuteSample)> = st
            .recent
            .iter()
            .filter(|r| r.0 > m - i64::from(w))
            .cloned()
            .collect();
        let start = window.first().map_or(m, |r| r.0);
        for (minute, s) in &window {
            if *minute <= learnt_through {
                let fresh = unlearnt
                    .iter()
                    .find(|u| u.0 == *minute)
                    .map_or(0, |u| u.1.count);
                st.rate.retract(*minute, s.count.saturating_sub(fresh));
            }
        }
        for minute in start..=decided {
            st.rate.exclude(minute);
        }
        let from = m - i64::from(cfg.baseline_window_minutes);
        let base_minutes = u64::from(stats.minutes.max(1));
        let is_error = key.error_code.is_some();
        let a = st.attributions();
        let mut baseline_attributions: [TopValues; 3] = Default::default();
        for (i, slot) in baseline_attributions.iter_mut().enumerate() {
            if i == 2 && is_error {
                continue;
            }
            // The daily summaries cover whole days; scale them to the calls of the exact window so the
            // per-value averages add up to `baseline.average`.
            let (top, total) = a[i].top_since(from, ATTRIBUTION_VALUES);
            let scale = if total == 0 {
                0.0
            } else {
                stats.calls as f64 / total as f64
            };
            *slot = top
                .into_iter()
                .map(|(s, n)| (s, n as f64 * scale / base_minutes as f64))
                .collect();
        }
        let insight_last_active = window.iter().map(|r| r.0).max().unwrap_or(m);
        let insight = OpenInsight {
            start,
            baseline: stats,
            model,
            baseline_attributions,
            minutes: window,
            last_active: insight_last_active,
            seen_at: decided,
            window: w,
        };
        let t = transition(key, true, &insight, at, decided);
        st.recent.clear();
        st.insight = Some(Box::new(insight));
        self.open.insert(id);
        Some(t)
    }

    fn step_open(
        &mut self,
        id: KeyId,
        key: RateKey,
        m: i64,
        sample: &MinuteSample,
    ) -> Option<Transition> {
        let cfg = self.config.clone();
        let st = self.state(id);
        let insight = st.insight.as_mut()?;
        st.rate.exclude(m);
        if sample.count > 0 {
            insight.minutes.push((m, sample.clone()));
        }
        // A minute with calls is still unusual when the 1-minute, 5-minute or triggering window
        // ending at it is unusual (at the lenient `end_tail_probability`).
        let b = insight.model;
        let sum_over = |w: i64| -> u64 {
            insight
                .minutes
                .iter()
                .rev()
                .take_while(|r| r.0 > m - w)
                .map(|r| u64::from(r.1.count))
                .sum()
        };
        let trigger = i64::from(insight.window);
        let p = [1, 5, trigger]
            .into_iter()
            .map(|w| {
                CountModel::for_window(b.mean, b.variance, w as u32).tail_probability(sum_over(w))
            })
            .fold(1.0f64, f64::min);
        if sample.count > 0 && p < cfg.end_tail_probability {
            insight.last_active = m;
        }
        let level_shift = m - insight.start + 1 >= i64::from(cfg.max_insight_minutes);
        // An Insight fed by late calls may get more of them: wait the allowed lateness too.
        // A slow burst (long triggering window) is back at baseline only after half that window.
        let mut quiet_needed = cfg.end_after_quiet_minutes.max(insight.window / 2);
        if insight.seen_at > insight.last_active {
            quiet_needed += cfg.allowed_lateness_minutes;
        }
        let quiet = m - insight.last_active.max(insight.seen_at) >= i64::from(quiet_needed);
        if !level_shift && !quiet {
            return None;
        }
        let mut insight = st.insight.take()?;
        self.open.remove(&id);
        let st = self.state(id);
        if level_shift {
            insight.last_active = m;
        }
        let end = insight.last_active + 1;
        // Minutes after the last unusual one were normal: back into the baseline. After a level
        // shift, or when the key already had an Insight at about this time of day (recurring
        // activity such as a new nightly job), every minute of the Insight joins the baseline,
        // so the daily profile learns it; otherwise the unusual minutes stay out.
        let day = 1440;
        let recurring = st.past_starts.iter().any(|&s| {
            let d = (insight.start - s).rem_euclid(day);
            d <= RECURRENCE_TOLERANCE_MINUTES || d >= day - RECURRENCE_TOLERANCE_MINUTES
        });
        st.past_starts
            .retain(|&s| s > m - i64::from(cfg.profile_window_minutes));
        if st.past_starts.len() >= MAX_PAST_STARTS {
            st.past_starts.remove(0);
        }
        st.past_starts.push(insight.start);
        let rejoin_from = if level_shift || recurring {
            insight.start
        } else {
            end
        };
        for minute in rejoin_from..=m {
            st.rate.include(minute);
        }
        for (minute, s) in &insight.minutes {
            if *minute >= rejoin_from {
                st.learn(*minute, s);
            }
        }
        insight.minutes.retain(|r| r.0 < end);
        let t = transition(key, false, &insight, end, m);
        st.recent.clear();
        Some(t)
    }

    /// Insights still open (reported at the end of input, never given a made-up `End`).
    pub fn open_insights(&self, keys: &impl KeyLookup) -> Vec<OpenInsightInfo> {
        self.open
            .iter()
            .filter_map(|&id| {
                let i = self.keys.get(id as usize)?.insight.as_ref()?;
                Some(OpenInsightInfo {
                    key: keys.key(id),
                    start: i.start,
                    last_active: i.last_active,
                    calls: i.minutes.iter().map(|r| u64::from(r.1.count)).sum(),
                })
            })
            .collect()
    }

    /// Number of keys with state.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Approximate heap bytes of all key state.
    pub fn heap_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<KeyState>()
            + self.keys.iter().map(KeyState::heap_bytes).sum::<usize>()
    }
}

fn transition(
    key: RateKey,
    start: bool,
    insight: &OpenInsight,
    event_minute: i64,
    decided: i64,
) -> Transition {
    let last = if start {
        event_minute.max(insight.last_active)
    } else {
        event_minute - 1
    };
    let minutes = (last - insight.start + 1).max(1) as u64;
    let mut counts = AttributionCounts::default();
    let mut calls = 0u64;
    for (minute, s) in &insight.minutes {
        if *minute <= last {
            calls += u64::from(s.count);
            counts.merge(&s.attributions);
        }
    }
    let mut attributions = vec![
        AttributionSummary {
            attribute: Attribute::UserIdentityArn,
            insight: top_values(&counts.principal, minutes),
            baseline: insight.baseline_attributions[0].clone(),
        },
        AttributionSummary {
            attribute: Attribute::UserAgent,
            insight: top_values(&counts.user_agent, minutes),
            baseline: insight.baseline_attributions[1].clone(),
        },
    ];
    if key.error_code.is_none() {
        attributions.push(AttributionSummary {
            attribute: Attribute::ErrorCode,
            insight: top_values(&counts.error_code, minutes),
            baseline: insight.baseline_attributions[2].clone(),
        });
    }
    Transition {
        key,
        start,
        insight_start: insight.start,
        event_minute: if start { insight.start } else { event_minute },
        decided_minute: decided,
        insight_calls: calls,
        insight_minutes: minutes,
        baseline: insight.baseline,
        attributions,
    }
}
