//! The Insight state machine: per-key baselines, significance tests and
//! `Start`/`End` transitions, fed closed minutes in order.
//!
//! For each closed minute and each key with calls in it, the detector tests the
//! trailing windows (default 1, 5, 15, 60 and 360 minutes) against the key's
//! expected rate ([`model`]): its whole-window baseline or, with enough history,
//! its seasonal profiles (hour of the day, hour of the week). A window's sum is
//! judged under a count model whose variance is the one observed for sums of
//! that length in the key's own history ([`trailsight_baseline::dispersion`]),
//! so bursty keys are not over-confident at long windows.
//!
//! A window is significant ([`window`]) when its tail probability is below the
//! key's per-window level, it holds at least `min_count` calls and its rate is
//! at least `min_ratio` × the expected rate. The level follows from the
//! false-alarm budget (`sensitivity`: expected false Insights per key per 30
//! days): the budget is spread over the 43,200 minutes of 30 days and the
//! windows tested each minute (Bonferroni), so the expected number of false
//! Starts per key per 30 days is at most the budget when the models hold.
//!
//! A window is never judged against its own calls: a key's calls join its
//! baseline only once they leave the short windows (≤ 60 minutes), and leave
//! the 6-hour window before they are learnt while the key has at most
//! [`RECENT_CAP`] active minutes in it (the sparse keys that window exists for:
//! six calls spread over hours on a weekly API; busier keys are served by the
//! short windows).
//!
//! The first significant minute opens an Insight at the first call of the
//! triggering window ([`open`]). While it is open its minutes are kept out of
//! the baseline (a long attack cannot make itself normal) and each minute is
//! judged against the key's *current* expectation ([`end`]); it ends after
//! `end_after_quiet_minutes` with no unusual minute, or as a lasting level shift, found by a
//! changepoint test, to which the key's history is then rebased ([`level`]). Late calls ([`late`]) join
//! the open Insight they fall in, or are tested as if on time.
//!
//! Recurring bursts are the key's behaviour, not news: when an Insight ends
//! that started within a day of another one of the key, or at about the same
//! time of day as an earlier one, its minutes join the baseline and, for the
//! baseline window that follows, a window must be less probable than that
//! Insight's trigger to open a new one. A new, larger burst still does.

mod attribution;
mod end;
pub mod holdoff;
pub mod judgement;
mod late;
mod level;
pub mod model;
mod open;
pub mod prior;
pub mod window;

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use trailsight_baseline::{BaselineStats, RatePrior, RollingRate, WindowedTopK};

use crate::aggregate::{ClosedMinute, ClosedMinutes, KeyId, LateCall, MinuteSample, RateKey, Sym};
use crate::config::DetectorConfig;
use crate::policy::{KeyFields, KeyPolicy, Policy};

pub use attribution::{ATTRIBUTION_VALUES, Attribute, AttributionSummary, TopValues};
use holdoff::Holdoff;
use model::SeasonCache;

/// Days of baseline attributions kept (the 7-day baseline window, plus today).
const BASELINE_TOPK_DAYS: usize = 7;
/// Values kept per attribute per day for baseline attributions.
const BASELINE_TOPK_CAPACITY: usize = 8;
/// Insights starting within this many minutes of the same time of day as an earlier one are recurring.
const RECURRENCE_TOLERANCE_MINUTES: i64 = 60;
/// Earlier Insight starts remembered per key.
const MAX_PAST_STARTS: usize = 16;
/// Active (non-zero) minutes a key keeps out of its baseline beyond the short windows, so the
/// long windows of sparse keys are never judged against their own calls; memory stays bounded
/// for busy keys, whose older minutes join the baseline once they leave the short windows.
pub const RECENT_CAP: usize = 64;
/// The deployment's pools are rebuilt every this many minutes (at aligned boundaries, so a
/// restart gives the same pools): rates across accounts move slowly.
pub const POOL_PERIOD_MINUTES: i64 = 360;
/// Minutes in 30 days: the false-alarm budget is per key per 30 days.
pub const BUDGET_MINUTES: f64 = 30.0 * 1440.0;

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
    baseline_attributions: [TopValues; 3],
    /// Nonzero minutes since `start`, in order.
    minutes: Vec<(i64, MinuteSample)>,
    last_active: i64,
    /// Length of the triggering window, minutes.
    window: u32,
    /// Tail probability of the triggering window.
    trigger_tail_probability: f64,
    /// Closed minute at which activity was last seen: late calls keep an Insight open
    /// for `end_after_quiet_minutes` after they arrive, not after their own minute.
    seen_at: i64,
}

/// A key's recent Insights (boxed: most keys never have one).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PastInsights {
    /// Start minutes of the key's recent Insights (recurrence detection).
    starts: Vec<i64>,
    /// After the last Insight ended: a new one needs a clearly larger burst for a while (see
    /// [`holdoff`]).
    holdoff: Option<Holdoff>,
    /// After a lasting level shift (see [`level`]): the hour the key's history was rebased to
    /// (older hours are out of its models).
    rebased_from: Option<i64>,
}

/// A [`prior::GammaPrior`] kept in single precision (per key).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct GammaPrior32 {
    alpha: f32,
    beta: f32,
}

impl From<prior::GammaPrior> for GammaPrior32 {
    fn from(g: prior::GammaPrior) -> Self {
        GammaPrior32 {
            alpha: g.alpha as f32,
            beta: g.beta as f32,
        }
    }
}

impl From<GammaPrior32> for prior::GammaPrior {
    fn from(g: GammaPrior32) -> Self {
        prior::GammaPrior {
            alpha: f64::from(g.alpha),
            beta: f64::from(g.beta),
        }
    }
}

/// Recurring bursts tolerated: windows must be less probable than `10^-surprise` until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Tolerance {
    /// `−log10` of the recurring Insight's trigger tail probability.
    surprise: f32,
    /// Minute (since the epoch) the tolerance lasts until.
    until: i32,
}

impl Tolerance {
    fn tail_probability(self) -> f64 {
        10f64.powf(-f64::from(self.surprise))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyState {
    rate: RollingRate,
    /// Nonzero minutes not yet in the baseline and not part of an Insight, in order.
    recent: VecDeque<(i64, MinuteSample)>,
    /// Newest minute whose calls joined the baseline from `recent` (or an Insight).
    learnt_through: i64,
    attributions: Option<Box<[WindowedTopK<Sym>; 3]>>,
    insight: Option<Box<OpenInsight>>,
    season: [Option<Box<SeasonCache>>; 2],
    /// This key's recent Insights: their starts, and the hold-off after the last.
    past: Option<Box<PastInsights>>,
    /// After a recurring Insight: windows at least this probable (the recurring Insight's
    /// trigger tail probability) are the key's own behaviour until the minute given.
    tolerated: Option<Tolerance>,
    /// The key's deployment prior (see [`prior`]) and the pool period it was taken in.
    gamma: Option<GammaPrior32>,
    gamma_period: i32,
    /// Effective sensitivity settings, resolved on first sight (from the settings: not saved).
    #[serde(skip)]
    policy: Option<KeyPolicy>,
    /// Hour (hours since the epoch) of the last judgement recorded for the series tap.
    #[serde(skip)]
    judged_hour: i64,
    /// UTC day (days since the epoch) of the last check for a lasting drop (see [`level`]; a
    /// second check the same day, after a restart, finds the same).
    #[serde(skip)]
    drop_checked_day: i64,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            rate: RollingRate::default(),
            recent: VecDeque::new(),
            learnt_through: i64::MIN,
            attributions: None,
            insight: None,
            season: Default::default(),
            past: None,
            tolerated: None,
            gamma: None,
            gamma_period: i32::MIN,
            policy: None,
            judged_hour: i64::MIN,
            drop_checked_day: i64::MIN,
        }
    }
}

impl KeyState {
    /// Where the key's models begin: the history start of its account and Region, or the hour
    /// of its last level shift when later.
    fn models_from(&self, history_start: i64) -> i64 {
        self.past
            .as_ref()
            .and_then(|p| p.rebased_from)
            .map_or(history_start, |r| r.max(history_start))
    }

    /// Rebases the key's history to `minute`'s hour after a lasting level shift (see
    /// [`level`]): older hours leave its baseline and profiles.
    fn rebase(&mut self, minute: i64) {
        let hour = minute.div_euclid(60) * 60;
        self.rate.evict_before(hour);
        self.season = Default::default();
        self.past.get_or_insert_with(Box::default).rebased_from = Some(hour);
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

    /// The minute's calls join the baseline (rate and attributions); a (late) minute before the
    /// hour the key was rebased to is not part of its history.
    fn learn(&mut self, minute: i64, sample: &MinuteSample) {
        if self
            .past
            .as_ref()
            .and_then(|p| p.rebased_from)
            .is_some_and(|r| minute < r)
        {
            return;
        }
        self.rate.record(minute, sample.count);
        self.learnt_through = self.learnt_through.max(minute);
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

    /// Moves the minutes of `recent` that are done being tested into the baseline: those
    /// that left the longest window, and, beyond [`RECENT_CAP`] active minutes, those that
    /// left the short windows.
    /// `incoming` minutes are about to be added (they count towards the cap).
    fn age_recent(&mut self, now: i64, short_window: i64, max_window: i64, incoming: usize) {
        while let Some(&(minute, _)) = self.recent.front() {
            let expired = minute <= now - max_window;
            let crowded = self.recent.len() + incoming > RECENT_CAP && minute <= now - short_window;
            if !(expired || crowded) {
                break;
            }
            if let Some((minute, sample)) = self.recent.pop_front() {
                self.learn(minute, &sample);
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
            + self.past.as_ref().map_or(0, |p| {
                std::mem::size_of::<PastInsights>()
                    + p.starts.capacity() * std::mem::size_of::<i64>()
                    + p.holdoff.as_ref().map_or(0, |h| {
                        h.peaks.len() * std::mem::size_of::<(u32, u64)>()
                            + h.principals.len() * std::mem::size_of::<Sym>()
                    })
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
    /// The deployment's per-API rate pools (priors for sparse and new keys).
    pools: prior::Pools,
    keys: Vec<KeyState>,
    open: BTreeSet<KeyId>,
    late: Vec<LateCall>,
    /// The series tap: each key's first open-test judgement of each hour, when enabled (see
    /// [`Detector::enable_judgements`]; not saved).
    #[serde(skip)]
    judgements: Option<Vec<(KeyId, i64, judgement::Judgement)>>,
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
            pools: prior::Pools::new(),
            keys: Vec::new(),
            open: BTreeSet::new(),
            late: Vec::new(),
            judgements: None,
        }
    }

    /// Starts recording judgements: each key's models and thresholds at its first open test of
    /// each UTC hour (for the series behind an Insight). Off by default (it costs a copy per
    /// key-hour).
    pub fn enable_judgements(&mut self) {
        self.judgements.get_or_insert_with(Vec::new);
    }

    /// The judgements recorded since the last call: (key, hour since the epoch, judgement), in
    /// the order made. Empty when not enabled.
    pub fn take_judgements(&mut self) -> Vec<(KeyId, i64, judgement::Judgement)> {
        self.judgements
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
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

    /// After deserializing: checks that every key state and open Insight refers to one of the
    /// `key_count` rate keys of the aggregator and that every rolling summary is well formed.
    /// Returns the first inconsistency found, in words.
    pub fn check_restored(&self, key_count: usize) -> Result<(), String> {
        if self.keys.len() > key_count {
            return Err(format!(
                "the detector holds {} key states for {key_count} rate keys",
                self.keys.len()
            ));
        }
        for &id in &self.open {
            if self
                .keys
                .get(id as usize)
                .is_none_or(|k| k.insight.is_none())
            {
                return Err(format!(
                    "open Insight on rate key {id}, which has no Insight state"
                ));
            }
        }
        for (id, st) in self.keys.iter().enumerate() {
            if st.insight.is_some() && !self.open.contains(&(id as KeyId)) {
                return Err(format!(
                    "rate key {id} has an Insight that is not listed as open"
                ));
            }
            if !st.rate.is_well_formed() {
                return Err(format!("rate key {id}: rolling rate hours out of order"));
            }
            if let Some(a) = &st.attributions
                && !a.iter().all(|t| t.is_well_formed())
            {
                return Err(format!("rate key {id}: malformed attribution summary"));
            }
        }
        if !self.late.is_empty() {
            return Err("late calls pending between calls".into());
        }
        Ok(())
    }

    /// What the detector holds for key `id`: calls in its rolling baseline window, calls of its
    /// recent minutes (those not yet learnt) at or after `since`, and whether an Insight is open.
    /// `None` for a key it has not seen a minute of.
    pub fn key_view(&self, id: KeyId, since: i64) -> Option<(u64, u64, bool)> {
        let st = self.keys.get(id as usize)?;
        let recent = st
            .recent
            .iter()
            .filter(|(m, _)| *m >= since)
            .map(|(_, s)| u64::from(s.count))
            .sum();
        Some((st.rate.calls(), recent, st.insight.is_some()))
    }

    /// Keys with an open Insight, ascending.
    pub fn open_key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.open.iter().copied()
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

    /// The key's resolved policy (after [`Detector::ensure_policy`]).
    fn key_policy(&mut self, id: KeyId) -> KeyPolicy {
        let cfg = self.config.clone();
        self.state(id).policy.unwrap_or(KeyPolicy {
            tail_probability: cfg.tail_probability(),
            min_ratio: cfg.min_ratio(),
            min_count: cfg.min_count,
            suppress: false,
        })
    }

    /// Processes closed minutes in order (every minute of `closed.from..closed.until`, with
    /// calls or not); appends decided transitions to `out`, in the order
    /// [`Detector::close_minute`] called on each minute would.
    ///
    /// A minute without calls changes nothing but open Insights (which are stepped minute by
    /// minute and end within [`level::LEVEL_SHIFT_CAP_FACTOR`] × `max_insight_minutes`) and the deployment pools (rebuilt at each
    /// [`POOL_PERIOD_MINUTES`] boundary from key state that empty minutes do not change, so
    /// only the last boundary of a run of empty minutes matters). Runs of empty minutes with
    /// no open Insight are therefore skipped in one step: time is linear in the minutes with
    /// calls plus the minutes Insights stay open, whatever the span.
    pub fn close_minutes(
        &mut self,
        closed: &ClosedMinutes,
        keys: &impl KeyLookup,
        out: &mut Vec<Transition>,
    ) {
        let mut with_calls = closed.minutes.iter().peekable();
        let mut m = closed.from;
        while m < closed.until {
            if let Some(c) = with_calls.next_if(|c| c.minute <= m) {
                self.close_minute(c, keys, out);
                m = c.minute + 1;
                continue;
            }
            let next = with_calls
                .peek()
                .map_or(closed.until, |c| c.minute.min(closed.until));
            if !self.open.is_empty() {
                self.close_minute(
                    &ClosedMinute {
                        minute: m,
                        samples: Vec::new(),
                    },
                    keys,
                    out,
                );
                m += 1;
                continue;
            }
            // Empty minutes m..next with no open Insight: only the last pool rebuild counts.
            let last_period = (next - 1).div_euclid(POOL_PERIOD_MINUTES);
            if last_period != self.pools.hour {
                let at = (last_period * POOL_PERIOD_MINUTES).max(m);
                self.rebuild_pools(at, keys);
            }
            m = next;
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
        if m.div_euclid(POOL_PERIOD_MINUTES) != self.pools.hour {
            self.rebuild_pools(m, keys);
        }
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
        if self.state(id).insight.is_some() {
            return self.step_open(id, key, history_start, m, sample);
        }
        let short = i64::from(self.config.short_window());
        let max_window = i64::from(self.config.max_window());
        let span = i64::from(self.config.evict_after_minutes());
        let st = self.state(id);
        if sample.count == 0 {
            st.age_recent(m, short, max_window, 0);
            return None;
        }
        // Minutes done being tested join the baseline before this one is added, so that a
        // sparse key, which holds one minute at a time, keeps room for one (a minute with its
        // attributions is 88 bytes) instead of the four a second push would reserve.
        st.age_recent(m, short, max_window, 1);
        if st.recent.is_empty() && st.recent.capacity() != 1 {
            st.recent = VecDeque::with_capacity(1);
        }
        st.recent.push_back((m, sample.clone()));
        // Once a UTC day, at the key's first call: has its rate dropped for good?
        let day = m.div_euclid(1440);
        if st.drop_checked_day != day {
            st.drop_checked_day = day;
            let from = st.models_from(history_start).max(m - span);
            if let Some(began) = level::lasting_drop(st, m, from) {
                st.rebase(began);
            }
        }
        self.test_at(id, key, history_start, m, m)
    }

    /// Every [`POOL_PERIOD_MINUTES`]: pools the per-minute rates of every mature key (history of its account and Region at
    /// least `warmup_minutes`): calls held over the minutes of history they cover (at most the
    /// profile window).
    fn rebuild_pools(&mut self, m: i64, keys: &impl KeyLookup) {
        let cfg = self.config.clone();
        let span = i64::from(cfg.profile_window_minutes.max(cfg.baseline_window_minutes));
        let mut mature = Vec::new();
        let mut own = Vec::with_capacity(self.keys.len());
        for (id, st) in self.keys.iter_mut().enumerate() {
            let key = keys.key(id as KeyId);
            let start = st.models_from(keys.history_start(key.account, key.region).unwrap_or(m));
            let exposure = (m - start).min(span);
            if exposure < i64::from(cfg.warmup_minutes).max(1) {
                own.push((key, None));
                continue;
            }
            let calls =
                st.rate.calls() + st.recent.iter().map(|r| u64::from(r.1.count)).sum::<u64>();
            let rate = calls as f64 / exposure as f64;
            own.push((key, Some(rate)));
            mature.push((key, rate));
        }
        let period = m.div_euclid(POOL_PERIOD_MINUTES);
        self.pools.rebuild(period, mature.into_iter());
        // Each key's prior from the others, once per period (keys first seen later look theirs
        // up when first tested: see `Detector::gamma`).
        for (st, (key, rate)) in self.keys.iter_mut().zip(own) {
            st.gamma = self.pools.prior(key, rate).map(GammaPrior32::from);
            st.gamma_period = i32::try_from(period).unwrap_or(i32::MAX);
        }
    }

    /// The key's deployment prior for the current pools.
    fn gamma(&mut self, id: KeyId, key: RateKey) -> Option<prior::GammaPrior> {
        let period = i32::try_from(self.pools.hour).unwrap_or(i32::MAX);
        let i = id as usize;
        if i >= self.keys.len() {
            self.keys.resize_with(i + 1, KeyState::default);
        }
        if self.keys[i].gamma_period != period {
            // Not pooled (first seen after the pools were built).
            self.keys[i].gamma = self.pools.prior(key, None).map(GammaPrior32::from);
            self.keys[i].gamma_period = period;
        }
        self.keys[i].gamma.map(prior::GammaPrior::from)
    }

    /// Early tests of key `id` after a file (see [`Detector::test_with_open`]): windows ending at
    /// each of its open minutes with calls from `from` on, over the calls read so far (`open`,
    /// ascending; a window counts only the minutes up to its end), with `closed_through` the
    /// last closed minute. Appends a `Start` decided at that minute when one is unusual (its
    /// figures cover every minute read so far from its first call on); nothing for a key with
    /// an Insight open.
    pub fn test_early(
        &mut self,
        id: KeyId,
        keys: &impl KeyLookup,
        from: i64,
        open: &[(i64, &MinuteSample)],
        closed_through: i64,
        out: &mut Vec<Transition>,
    ) {
        let key = keys.key(id);
        self.ensure_policy(id, key, keys);
        let history_start = keys.history_start(key.account, key.region).unwrap_or(from);
        for &(m, _) in open {
            if m < from {
                continue;
            }
            if self.state(id).insight.is_some() {
                return;
            }
            if let Some(t) = self.test_with_open(id, key, history_start, m, m, open, closed_through)
            {
                out.push(t);
                return;
            }
        }
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

/// Adds `sample` at `minute` into a minute-ordered deque.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::AttributionCounts;

    /// Accounts 0..n, one Region; key id = account × 10 + API; account `a` starts at `starts[a]`.
    struct Deployment {
        starts: Vec<i64>,
    }

    impl KeyLookup for Deployment {
        fn key(&self, id: KeyId) -> RateKey {
            RateKey {
                account: 100 + id / 10,
                region: 1,
                event_source: 2,
                event_name: 10 + id % 10,
                error_code: None,
            }
        }
        fn history_start(&self, account: Sym, _: Sym) -> Option<i64> {
            self.starts.get((account - 100) as usize).copied()
        }
        fn resolve(&self, _: Sym) -> &str {
            "x"
        }
    }

    fn sample(count: u32) -> MinuteSample {
        MinuteSample {
            count,
            attributions: AttributionCounts {
                principal: vec![(7, count)],
                user_agent: vec![(8, count)],
                error_code: vec![(9, count)],
            },
        }
    }

    /// Runs minutes `0..end`; `calls(account, minute)` gives each account's calls of API 0.
    fn run(d: &Deployment, end: i64, calls: impl Fn(u32, i64) -> u32) -> Vec<Transition> {
        run_with(DetectorConfig::default(), d, end, calls)
    }

    fn run_with(
        cfg: DetectorConfig,
        d: &Deployment,
        end: i64,
        calls: impl Fn(u32, i64) -> u32,
    ) -> Vec<Transition> {
        let mut det = Detector::new(cfg.clone(), cfg.policy().expect("policy"));
        let mut out = Vec::new();
        for m in 0..end {
            let samples = (0..d.starts.len() as u32)
                .filter(|&a| m >= d.starts[a as usize])
                .map(|a| (a * 10, calls(a, m)))
                .filter(|s| s.1 > 0)
                .map(|(id, c)| (id, sample(c)))
                .collect();
            det.close_minute(&ClosedMinute { minute: m, samples }, d, &mut out);
        }
        out
    }

    #[test]
    fn the_series_tap_changes_no_model_and_no_decision() {
        // Every eighth hour a lone call at :05 (too few calls to test, even in the 6-hour
        // window) and three calls at :40 (tested); the tap judges the hour at :05.
        let day = 1440;
        let d = Deployment {
            starts: vec![0, 0, 0],
        };
        let calls = |a: u32, m: i64| -> u32 {
            let minute = m.rem_euclid(60) + i64::from(a);
            let hour = m.div_euclid(60);
            match minute {
                _ if hour % 8 != 0 => 0,
                5 => 1,
                40 => 3,
                _ => 0,
            }
        };
        let cfg = DetectorConfig::default();
        let mut plain = Detector::new(cfg.clone(), cfg.policy().expect("policy"));
        let mut tapped = Detector::new(cfg.clone(), cfg.policy().expect("policy"));
        tapped.enable_judgements();
        let (mut out_plain, mut out_tapped) = (Vec::new(), Vec::new());
        for m in 0..8 * day {
            let samples: Vec<_> = (0..3u32)
                .map(|a| (a * 10, calls(a, m)))
                .filter(|s| s.1 > 0)
                .map(|(id, c)| (id, sample(c)))
                .collect();
            let closed = ClosedMinute { minute: m, samples };
            plain.close_minute(&closed, &d, &mut out_plain);
            tapped.close_minute(&closed, &d, &mut out_tapped);
        }
        assert!(!tapped.take_judgements().is_empty());
        assert_eq!(out_plain, out_tapped);
        let mut compared = 0;
        for (a, b) in plain.keys.iter().zip(&tapped.keys) {
            for (x, y) in a.season.iter().zip(&b.season) {
                assert_eq!(
                    x.as_ref().map(|c| (c.hour, c.models)),
                    y.as_ref().map(|c| (c.hour, c.models))
                );
                compared += usize::from(x.is_some());
            }
        }
        assert!(compared > 0);
    }

    #[test]
    fn a_new_account_inherits_the_deployments_prior_instead_of_waiting() {
        let day = 1440;
        // Three accounts call the API about every two hours for five days; a fourth appears
        // on day 5 and, within its first hour, calls it 12 times in 4 minutes.
        let d = Deployment {
            starts: vec![0, 0, 0, 5 * day],
        };
        let regular = |a: u32, m: i64| u32::from((m + i64::from(a) * 37) % 120 == 0);
        let out = run(&d, 5 * day + 180, |a, m| {
            if a == 3 {
                u32::from((5 * day + 20..5 * day + 24).contains(&m)) * 3
            } else {
                regular(a, m)
            }
        });
        let starts: Vec<_> = out.iter().filter(|t| t.start).collect();
        assert_eq!(starts.len(), 1, "{out:?}");
        assert_eq!(starts[0].key.account, 103);
        assert_eq!(starts[0].insight_start, 5 * day + 20);
        // The same burst with no pool (a lone account) waits out the warm-up.
        let alone = Deployment {
            starts: vec![5 * day],
        };
        let out = run(&alone, 5 * day + 180, |_, m| {
            u32::from((5 * day + 20..5 * day + 24).contains(&m)) * 3
        });
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_new_account_at_the_deployments_usual_rate_is_quiet() {
        let day = 1440;
        let d = Deployment {
            starts: vec![0, 0, 0, 5 * day],
        };
        let out = run(&d, 6 * day, |a, m| {
            u32::from((m + i64::from(a) * 37) % 120 == 0)
        });
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn six_calls_over_four_hours_on_a_weekly_api_are_caught_by_the_long_window() {
        let day = 1440;
        let d = Deployment { starts: vec![0] };
        // Once a week for three weeks (days 0, 7, 14), then six calls 48 minutes apart on day 21.
        let attack = 21 * day + 600;
        let calls = |_: u32, m: i64| {
            u32::from(
                (m % (7 * day) == 300 && m < 21 * day)
                    || (m >= attack && (m - attack) % 48 == 0 && m < attack + 6 * 48),
            )
        };
        let out = run(&d, 22 * day, calls);
        let starts: Vec<_> = out.iter().filter(|t| t.start).collect();
        assert_eq!(starts.len(), 1, "{out:?}");
        assert_eq!(starts[0].insight_start, attack);
        // Without the 6-hour window no hour holds enough of them.
        let short = DetectorConfig {
            windows_minutes: vec![1, 5, 15, 60],
            ..DetectorConfig::default()
        };
        let out = run_with(short, &d, 22 * day, calls);
        assert!(out.iter().all(|t| !t.start), "{out:?}");
    }

    /// A steady key (3 calls a minute) with 40-call spikes at the given minutes: its Starts.
    fn spike_starts(spikes: &[(i64, u32)], end: i64) -> Vec<i64> {
        let d = Deployment { starts: vec![0] };
        let out = run(&d, end, |_, m| {
            spikes
                .iter()
                .find(|s| s.0 == m)
                .map_or(2 + u32::from(m % 3 == 0) * 3, |s| s.1)
        });
        out.iter()
            .filter(|t| t.start)
            .map(|t| t.insight_start)
            .collect()
    }

    #[test]
    fn a_run_of_the_same_spike_raises_one_insight_and_a_clearly_larger_one_another() {
        let day = 1440;
        let x = 4 * day + 600;
        // The same spike every 40 minutes for three hours: one Insight.
        let same: Vec<(i64, u32)> = (0..5).map(|i| (x + 40 * i, 40)).collect();
        assert_eq!(spike_starts(&same, x + day / 2), vec![x]);
        // A spike with more than twice the first's excess an hour later: a second Insight.
        assert_eq!(
            spike_starts(&[(x, 40), (x + 60, 100)], x + day / 2),
            vec![x, x + 60]
        );
        // Without the first, each of the repeats would have raised one (the gate is the hold-off).
        assert_eq!(spike_starts(&[(x + 80, 40)], x + day / 2), vec![x + 80]);
        // A day after the first Insight ended, at another time of day, the same spike is news again.
        assert_eq!(
            spike_starts(&[(x, 40), (x + day + 180, 40)], x + 2 * day),
            vec![x, x + day + 180]
        );
    }

    /// One key (API 0 of account 0, history from minute 0), minute by minute: its Starts.
    fn starts_of(end: i64, minute: impl Fn(i64) -> Option<MinuteSample>) -> Vec<i64> {
        transitions_of(end, minute)
            .into_iter()
            .filter(|t| t.0)
            .map(|t| t.1)
            .collect()
    }

    /// `count` calls by principal `who`.
    fn by(who: Sym, count: u32) -> MinuteSample {
        MinuteSample {
            count,
            attributions: AttributionCounts {
                principal: vec![(who, count)],
                user_agent: vec![(8, count)],
                error_code: vec![(9, count)],
            },
        }
    }

    #[test]
    fn held_calls_joining_the_baseline_do_not_raise_the_hold_off() {
        let day = 1440;
        let x = 21 * day + 600;
        // A weekly API; then 6 calls in 3 minutes (an Insight); then twice, 7 hours apart, 9
        // calls in 3 minutes (less than twice the first at every window length: held, and they
        // join the baseline); then, within the day, 13 calls in 3 minutes: more than twice the
        // first, an Insight. Were the bar reckoned from the baseline rate now, the held calls
        // would have raised it tenfold and the last burst would be held too.
        let starts = starts_of(x + day, |m| {
            let t = m - x;
            if m < x {
                (m % (7 * day) == 300).then(|| by(7, 1))
            } else if t < 3 {
                Some(by(7, 2))
            } else if (420..423).contains(&t) || (840..843).contains(&t) {
                Some(by(7, 3))
            } else if (1260..1263).contains(&t) {
                Some(by(7, if t == 1260 { 5 } else { 4 }))
            } else {
                None
            }
        });
        assert_eq!(starts, vec![x, x + 1260]);
    }

    #[test]
    fn the_same_burst_by_another_caller_is_not_held() {
        let day = 1440;
        let x = 4 * day + 600;
        let steady = |m: i64| 2 + u32::from(m % 3 == 0) * 3;
        // Caller 7 spikes; an hour later caller 8 spikes as much: two Insights. Caller 7
        // again an hour after that: held.
        let starts = starts_of(x + day / 2, |m| {
            Some(match m - x {
                0 | 120 => by(7, 40),
                60 => by(8, 40),
                _ => by(7, steady(m)),
            })
        });
        assert_eq!(starts, vec![x, x + 60]);
    }

    #[test]
    fn a_benign_spike_hour_this_week_does_not_hide_a_burst() {
        let day = 1440;
        let d = Deployment { starts: vec![0] };
        // 5 calls a minute (1 to 9, over-dispersed: index of dispersion 1.3); on day 6 one hour at
        // twice the rate (a backfill under the ratio gate: no Insight, it joins the baseline and
        // makes the hour totals heavy-tailed), on day 8 a 10-minute burst at +15 a minute.
        let spike = 6 * day + 600;
        let burst = 8 * day + 840;
        let calls = |_: u32, m: i64| {
            let base = 1 + (m * 37 % 9) as u32;
            if (spike..spike + 60).contains(&m) {
                base * 2
            } else if (burst..burst + 10).contains(&m) {
                base + 15
            } else {
                base
            }
        };
        let out = run(&d, 9 * day, calls);
        let starts: Vec<i64> = out
            .iter()
            .filter(|t| t.start)
            .map(|t| t.insight_start)
            .collect();
        // The backfill raises nothing; the burst raises one Insight, starting at the first call
        // of its triggering window (a minute or two of ordinary calls may lead it).
        assert_eq!(starts.len(), 1, "{out:?}");
        assert!((burst - 5..burst + 10).contains(&starts[0]), "{out:?}");
    }

    #[test]
    fn on_a_diurnal_busy_key_the_end_follows_the_burst_within_minutes() {
        let day = 1440;
        let d = Deployment { starts: vec![0] };
        // 5 to 35 calls a minute over the day (peak at 12:00), with a small repeating jitter;
        // on day 5 a 20-minute burst of 80 more a minute on the afternoon's falling rate (more
        // than three times the busiest neighbouring hour's 33, the medium sensitivity's ratio
        // gate: each hour is judged against its own profile, not a blend with the day's mean).
        let burst = 5 * day + 15 * 60;
        let calls = |_: u32, m: i64| {
            let phase = (m.rem_euclid(day) as f64 - 720.0) / day as f64 * std::f64::consts::TAU;
            let base = 20.0 + 15.0 * phase.cos() + f64::from((m % 7) as u32) - 3.0;
            let extra = if (burst..burst + 20).contains(&m) {
                80.0
            } else {
                0.0
            };
            (base + extra).round() as u32
        };
        let out = run(&d, 6 * day, calls);
        let starts: Vec<_> = out.iter().filter(|t| t.start).collect();
        let ends: Vec<_> = out.iter().filter(|t| !t.start).collect();
        assert_eq!(starts.len(), 1, "{out:?}");
        assert!(
            (burst..burst + 3).contains(&starts[0].insight_start),
            "{out:?}"
        );
        assert_eq!(ends.len(), 1, "{out:?}");
        // `event_minute` of the End is the end of the unusual activity; it is decided
        // `end_after_quiet_minutes` (5) later.
        let end = ends[0].event_minute;
        assert!((burst + 18..=burst + 25).contains(&end), "{out:?}");
        assert!(ends[0].decided_minute <= end + 10, "{out:?}");
    }

    /// Calls of a steady key: 3 to 7 a minute (a fixed pseudo-random pattern).
    fn steady(m: i64) -> u32 {
        3 + ((m.wrapping_mul(2_654_435_761) >> 7) % 5) as u32
    }

    /// One key, minute by minute: its transitions as `(start?, insight start, event minute)`.
    fn transitions_of(
        end: i64,
        minute: impl Fn(i64) -> Option<MinuteSample>,
    ) -> Vec<(bool, i64, i64)> {
        let d = Deployment { starts: vec![0] };
        let cfg = DetectorConfig::default();
        let mut det = Detector::new(cfg.clone(), cfg.policy().expect("policy"));
        let mut out = Vec::new();
        for m in 0..end {
            let samples = minute(m).map(|s| (0, s)).into_iter().collect();
            det.close_minute(&ClosedMinute { minute: m, samples }, &d, &mut out);
        }
        out.iter()
            .map(|t| (t.start, t.insight_start, t.event_minute))
            .collect()
    }

    #[test]
    fn after_a_lasting_level_shift_bursts_on_the_new_level_are_caught() {
        let day = 1440;
        let shift = 10 * day;
        // A steady key's rate steps up fivefold for good on day 10; on days 13, 16 and 20 someone
        // else adds five times the new level for 20 minutes.
        let bursts = [13 * day + 720, 16 * day + 300, 20 * day + 900];
        let t = transitions_of(21 * day, |m| {
            let usual = steady(m) * if m >= shift { 5 } else { 1 };
            let burst = bursts.iter().any(|&b| (b..b + 20).contains(&m));
            let mut s = by(7, usual);
            if burst {
                s.count += 4 * usual;
                s.attributions.principal.push((11, 4 * usual));
            }
            Some(s)
        });
        // One Insight for the shift, ending a day later as a level shift; then one per burst.
        let starts: Vec<i64> = t.iter().filter(|x| x.0).map(|x| x.1).collect();
        assert_eq!(starts, [vec![shift], bursts.to_vec()].concat(), "{t:?}");
        assert!(t.contains(&(false, shift, shift + day)), "{t:?}");
    }

    #[test]
    fn a_burst_that_settles_into_a_new_level_becomes_normal_a_day_after_it_settled() {
        let day = 1440;
        let x = 10 * day;
        let end = x + 180 + day;
        // Three hours at 20 times the rate (a migration), then three times the rate for good;
        // two hours after the level is accepted, the usual caller sends six times the new rate
        // for 20 minutes: judged against the new level (no hold-off from the level shift).
        let burst = end + 120;
        let t = transitions_of(14 * day, |m| {
            let f = match m - x {
                t if t < 0 => 1,
                t if t < 180 => 20,
                _ if (burst..burst + 20).contains(&m) => 18,
                _ => 3,
            };
            Some(by(7, steady(m) * f))
        });
        assert_eq!(
            t.iter().take(3).copied().collect::<Vec<_>>(),
            vec![(true, x, x), (false, x, end), (true, burst, burst)],
            "{t:?}"
        );
    }

    #[test]
    fn on_a_diurnal_key_a_level_shift_is_accepted_a_day_after_it_began() {
        let day = 1440;
        let x = 14 * day + 600;
        // 10 to 30 calls a minute over the day; six times that from day 14, 10:00, for good.
        let t = transitions_of(18 * day, |m| {
            let hour = m.rem_euclid(day) as f64 / 60.0;
            let cycle = 10.0 + 20.0 * (0.5 - 0.5 * (hour / 24.0 * std::f64::consts::TAU).cos());
            let rate = cycle * if m >= x { 6.0 } else { 1.0 };
            Some(by(
                7,
                (rate + f64::from(steady(m)) - 5.0).max(0.0).round() as u32,
            ))
        });
        assert_eq!(t.len(), 2, "{t:?}");
        let (start, end) = (t[0].1, t[1].2);
        assert!((x..x + 60).contains(&start), "{t:?}");
        // Accepted at the end of the clock hour a day after it began, not after the 3-day cap.
        assert!((day - 60..=day + 60).contains(&(end - start)), "{t:?}");
    }

    #[test]
    fn on_a_diurnal_key_a_burst_at_night_is_judged_against_the_night() {
        let day: i64 = 1440;
        // 5 calls a minute at midnight, 35 at midday, for three weeks; then at 00:10 someone
        // else adds 20 a minute for 20 minutes: five times the night's rate, about the day's
        // mean.
        let burst = 21 * day + 10;
        let t = transitions_of(22 * day, |m| {
            let hour = m.rem_euclid(day) as f64 / 60.0;
            let cycle = 5.0 + 30.0 * (0.5 - 0.5 * (hour / 24.0 * std::f64::consts::TAU).cos());
            let mut s = by(7, (cycle + f64::from(steady(m)) - 5.0).round() as u32);
            if (burst..burst + 20).contains(&m) {
                s.count += 20;
                s.attributions.principal.push((11, 20));
            }
            Some(s)
        });
        let starts: Vec<i64> = t.iter().filter(|x| x.0).map(|x| x.1).collect();
        assert_eq!(starts, vec![burst], "{t:?}");
    }

    #[test]
    fn on_a_weekday_only_api_a_weekday_burst_is_caught() {
        let day: i64 = 1440;
        // 7 to 11 calls a minute on weekdays, none at weekends, for four weeks; then on a
        // weekday someone else adds 60 a minute for 20 minutes. The weekends' silence is the
        // weekly profile's to explain, not burstiness of the weekday hours.
        let burst = 30 * day + 600;
        let t = transitions_of(31 * day, |m| {
            let weekday = m.div_euclid(day) % 7 < 5;
            let mut s = by(7, 6 + steady(m));
            if (burst..burst + 20).contains(&m) {
                s.count += 60;
                s.attributions.principal.push((11, 60));
            }
            weekday.then_some(s)
        });
        // One Insight, from the burst's first minutes (the window that decides it may start a
        // few minutes in). Shrinking the profiles' dispersion towards the whole window's, which
        // holds the weekends' silence, hid it.
        let starts: Vec<i64> = t.iter().filter(|x| x.0).map(|x| x.1).collect();
        assert_eq!(starts.len(), 1, "{t:?}");
        assert!((burst..burst + 6).contains(&starts[0]), "{t:?}");
    }

    #[test]
    fn after_a_lasting_drop_a_burst_back_to_the_old_level_is_caught() {
        let day = 1440;
        let drop = 14 * day;
        // 30 calls a minute, then 2 from day 14 for good; on days 17, 23, 27 and 33 (at other
        // times of day) someone else adds 30 a minute for 20 minutes.
        let bursts = [
            17 * day + 600,
            23 * day + 900,
            27 * day + 240,
            33 * day + 1200,
        ];
        let t = transitions_of(34 * day, |m| {
            let usual = if m >= drop {
                2 + (steady(m) - 3) / 3
            } else {
                25 + steady(m)
            };
            let mut s = by(7, usual);
            if bursts.iter().any(|&b| (b..b + 20).contains(&m)) {
                s.count += 30;
                s.attributions.principal.push((11, 30));
            }
            Some(s)
        });
        let starts: Vec<i64> = t.iter().filter(|x| x.0).map(|x| x.1).collect();
        // The first week after the drop is its cost (the drop must last a week); after it,
        // every burst is caught.
        assert_eq!(starts, bursts[1..].to_vec(), "{t:?}");
    }

    #[test]
    fn a_job_every_two_weeks_is_not_a_level_that_dropped() {
        let day: i64 = 1440;
        // A call every ten minutes, and a job of 60 calls a minute for an hour every 14 days
        // (from day 3): after each run the key is quiet for 13 days, far below a mean that
        // holds the job, but the job is no level that lasted a week. Only its first two runs
        // are news (the second is the recurrence that teaches it).
        let t = transitions_of(80 * day, |m| {
            let d = m.div_euclid(day);
            let job = d >= 3 && (d - 3) % 14 == 0 && (120..180).contains(&m.rem_euclid(day));
            if job {
                Some(by(7, 60))
            } else {
                (m % 10 == 0).then(|| by(7, 1))
            }
        });
        let starts: Vec<i64> = t
            .iter()
            .filter(|x| x.0)
            .map(|x| x.1.div_euclid(day))
            .collect();
        assert!(starts.iter().all(|&d| d < 20), "{t:?}");
    }

    #[test]
    fn weekends_are_not_a_drop() {
        let day: i64 = 1440;
        // A weekday-only API (7 to 11 calls a minute, none on days 5 and 6 of each week) for
        // five weeks: no Insight, and its history is never rebased to a weekend (which would
        // throw away the weekday level it is judged against).
        let d = Deployment { starts: vec![0] };
        let cfg = DetectorConfig::default();
        let mut det = Detector::new(cfg.clone(), cfg.policy().expect("policy"));
        let mut out = Vec::new();
        for m in 0..35 * day {
            let weekday = m.div_euclid(day) % 7 < 5;
            let samples = if weekday {
                vec![(0, by(7, 6 + steady(m)))]
            } else {
                Vec::new()
            };
            det.close_minute(&ClosedMinute { minute: m, samples }, &d, &mut out);
            let rebased = det.keys.first().and_then(|k| k.past.as_ref()?.rebased_from);
            assert_eq!(rebased, None, "minute {m}");
        }
        assert_eq!(out, vec![]);
    }

    /// A fresh detector fed `minute(m)` through [`Detector::close_minutes`] over the ranges
    /// `0..cuts[0]`, `cuts[0]..cuts[1]`, …: the detector and its transitions.
    fn close_in_ranges(
        d: &Deployment,
        cuts: &[i64],
        minute: &impl Fn(i64) -> ClosedMinute,
    ) -> (Detector, Vec<Transition>) {
        let cfg = DetectorConfig::default();
        let mut det = Detector::new(cfg.clone(), cfg.policy().expect("policy"));
        let mut out = Vec::new();
        let mut from = 0;
        for &until in cuts {
            let closed = ClosedMinutes {
                from,
                until,
                minutes: (from..until)
                    .map(minute)
                    .filter(|c| !c.samples.is_empty())
                    .collect(),
            };
            det.close_minutes(&closed, d, &mut out);
            from = until;
        }
        (det, out)
    }

    /// The drop check runs at a key's first call of a day, so a deployment silent for weeks
    /// (a stopped trail) decides the same whether its empty minutes are closed one by one or
    /// skipped.
    #[test]
    fn weeks_of_silence_decide_the_same_skipped_or_not() {
        let day = 1440;
        let d = Deployment { starts: vec![0] };
        let end = 36 * day + 60;
        let minute = |m: i64| ClosedMinute {
            minute: m,
            samples: if m < 14 * day || m >= 36 * day {
                vec![(0, by(7, 25 + steady(m)))]
            } else {
                Vec::new()
            },
        };
        let cfg = DetectorConfig::default();
        let mut one_by_one = Detector::new(cfg.clone(), cfg.policy().expect("policy"));
        let mut expected = Vec::new();
        for m in 0..end {
            one_by_one.close_minute(&minute(m), &d, &mut expected);
        }
        let (ranged, got) = close_in_ranges(&d, &[14 * day + 5, 36 * day, end], &minute);
        // The same Insights, and the same history behind them when the usual traffic returns
        // after 22 silent days. (Run at every pool rebuild, the check rebased the key on day
        // 21 minute by minute, while the skipped run's one rebuild, at its end, saw six days
        // of the old level, too few, and kept the old history.)
        assert_eq!(got, expected);
        let rebased = |det: &Detector| det.keys[0].past.as_ref().and_then(|p| p.rebased_from);
        assert_eq!(rebased(&ranged), rebased(&one_by_one));
    }

    /// Minute-by-minute closing against [`Detector::close_minutes`] over ranges with long
    /// empty stretches (an Insight open when one starts, pool periods crossed inside them).
    #[test]
    fn skipping_empty_minutes_changes_no_decision() {
        let day = 1440;
        let d = Deployment {
            starts: vec![0, 0, 0, 2 * day],
        };
        let end = 20 * day;
        let calls = |a: u32, m: i64| -> u32 {
            let quiet = (9 * day..14 * day).contains(&m) || (16 * day + 7..18 * day).contains(&m);
            if quiet {
                return 0;
            }
            let burst = (9 * day - 6..9 * day).contains(&m) && a == 1;
            let late_burst = (19 * day..19 * day + 5).contains(&m) && a == 3;
            u32::from((m + i64::from(a) * 37) % 97 == 0) + 6 * u32::from(burst || late_burst)
        };
        let minute = |m: i64| ClosedMinute {
            minute: m,
            samples: (0..d.starts.len() as u32)
                .filter(|&a| m >= d.starts[a as usize])
                .map(|a| (a * 10, calls(a, m)))
                .filter(|s| s.1 > 0)
                .map(|(id, c)| (id, sample(c)))
                .collect(),
        };
        let cfg = DetectorConfig::default();
        let mut one_by_one = Detector::new(cfg.clone(), cfg.policy().expect("policy"));
        let mut expected = Vec::new();
        for m in 0..end {
            one_by_one.close_minute(&minute(m), &d, &mut expected);
        }
        assert!(expected.iter().any(|t| t.start), "{expected:?}");
        assert!(expected.iter().any(|t| !t.start), "{expected:?}");
        let (ranged, got) = close_in_ranges(
            &d,
            &[777, 9 * day - 3, 9 * day + 1, 15 * day + 11, 16 * day, end],
            &minute,
        );
        assert_eq!(got, expected);
        assert_eq!(ranged.pools.hour, one_by_one.pools.hour);
    }

    #[test]
    fn a_span_of_millennia_costs_the_minutes_with_calls() {
        let d = Deployment { starts: vec![0] };
        let cfg = DetectorConfig::default();
        let mut det = Detector::new(cfg.clone(), cfg.policy().expect("policy"));
        let mut out = Vec::new();
        let far = 5_000_000_000i64; // minutes: about 9500 years
        let closed = ClosedMinutes {
            from: 0,
            until: far + 1,
            minutes: vec![
                ClosedMinute {
                    minute: 0,
                    samples: vec![(0, sample(3))],
                },
                ClosedMinute {
                    minute: far,
                    samples: vec![(0, sample(3))],
                },
            ],
        };
        det.close_minutes(&closed, &d, &mut out);
        assert_eq!(det.pools.hour, far.div_euclid(POOL_PERIOD_MINUTES));
    }
}
