//! Per-minute aggregation with a watermark, deduplication and late records.
//!
//! Batches arrive in delivery order. Each counted event goes to the open minute
//! of its `eventTime` (UTC minute bucket) under its rate key. The watermark is
//! the newest minute seen (capped by the file's delivery time when known) minus
//! the allowed lateness; every minute before it is closed and handed to the
//! detector, in order, including minutes with no calls. An event for a closed
//! minute is late: it is counted and returned separately, never dropped
//! silently. A repeated `eventID` in the same minute counts once.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::batch::FileBatch;

/// Global symbol: an index into the [`SymbolTable`].
pub type Sym = u32;
/// Index of a rate key in the aggregator's key table.
pub type KeyId = u32;

/// Largest minute a restored state may hold (9999-12-31T23:59Z, minutes since the Unix epoch):
/// record times are bounded far tighter on ingest (see [`crate::TimeBounds`]).
pub const MAX_STATE_MINUTE: i64 = 4_223_371_679;

/// Interned strings, numbered in order of first appearance (deterministic for a given input order).
/// Serialized as the list of strings.
#[derive(Debug, Clone, Default)]
pub struct SymbolTable {
    index: HashMap<Box<str>, Sym>,
    strings: Vec<Box<str>>,
}

impl SymbolTable {
    /// The symbol of `s`, interning it if new.
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as Sym;
        self.strings.push(s.into());
        self.index.insert(s.into(), i);
        i
    }

    /// The symbol of `s` if it is interned (never interns).
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.index.get(s).copied()
    }

    /// The string of a symbol (empty for an unknown symbol).
    pub fn resolve(&self, sym: Sym) -> &str {
        self.strings.get(sym as usize).map_or("", |s| s)
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

impl Serialize for SymbolTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.strings.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SymbolTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let strings = Vec::<Box<str>>::deserialize(d)?;
        let index = strings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as Sym))
            .collect();
        Ok(SymbolTable { index, strings })
    }
}

/// What a rate is counted over: account, Region, API and, for error rates, the `errorCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RateKey {
    /// Account (`recipientAccountId`).
    pub account: Sym,
    /// `awsRegion`.
    pub region: Sym,
    /// `eventSource`.
    pub event_source: Sym,
    /// `eventName`.
    pub event_name: Sym,
    /// `None`: call rate; `Some(errorCode)`: error rate of that error code.
    pub error_code: Option<Sym>,
}

/// Per-value counts of one attribute in one minute (or over an Insight's minutes): at most
/// [`MAX_ATTRIBUTION_VALUES`] entries.
pub type ValueCounts = Vec<(Sym, u32)>;

/// Distinct values counted per attribute per key-minute (and per merged summary).
///
/// Up to this many distinct values, counts are exact. Past it, the summary is a space-saving
/// heavy-hitters summary (Metwally et al., 2005; as [`trailsight_baseline::SpaceSaving`]): a
/// new value replaces the entry with the smallest count (ties: the largest symbol) and
/// inherits that count, so the total stays exact, every value holding more than
/// `1 / MAX_ATTRIBUTION_VALUES` of the calls is present, and a reported count overstates the
/// truth by at most the smallest count at the time it entered. The top five values an
/// Insight reports are therefore right for any value with more than 1/64 of the calls,
/// whatever the number of distinct values (a caller cycling through 300,000 user agents in
/// one minute costs 64 entries, not 300,000). Cost per call: one scan of at most 64 entries.
pub const MAX_ATTRIBUTION_VALUES: usize = 64;

/// Counts of the attribution values (`userIdentityArn`, `userAgent`, `errorCode`) in one minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributionCounts {
    /// `userIdentityArn` values.
    pub principal: ValueCounts,
    /// `userAgent` values.
    pub user_agent: ValueCounts,
    /// `errorCode` values (`"null"` for success).
    pub error_code: ValueCounts,
}

/// Counts `n` more of `s` in a bounded summary (see [`MAX_ATTRIBUTION_VALUES`]).
fn bump(v: &mut ValueCounts, s: Sym, n: u32) {
    if let Some(e) = v.iter_mut().find(|e| e.0 == s) {
        e.1 = e.1.saturating_add(n);
        return;
    }
    if v.len() < MAX_ATTRIBUTION_VALUES {
        v.push((s, n));
        return;
    }
    // Space-saving: the smallest entry (ties: the largest symbol) gives way; its count carries over.
    let mut min_i = 0;
    for (i, e) in v.iter().enumerate() {
        let m = v[min_i];
        if e.1 < m.1 || (e.1 == m.1 && e.0 > m.0) {
            min_i = i;
        }
    }
    let floor = v[min_i].1;
    v[min_i] = (s, floor.saturating_add(n));
}

impl AttributionCounts {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &AttributionCounts) {
        for &(s, n) in &other.principal {
            bump(&mut self.principal, s, n);
        }
        for &(s, n) in &other.user_agent {
            bump(&mut self.user_agent, s, n);
        }
        for &(s, n) in &other.error_code {
            bump(&mut self.error_code, s, n);
        }
    }
}

/// Calls of one key in one closed minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteSample {
    /// Calls (or errors) in the minute.
    pub count: u32,
    /// Who and what made them.
    pub attributions: AttributionCounts,
}

/// A closed minute: every key with calls in it, ordered by key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosedMinute {
    /// The minute (minutes since the epoch).
    pub minute: i64,
    /// Keys with at least one call, ascending [`KeyId`].
    pub samples: Vec<(KeyId, MinuteSample)>,
}

/// A counted event that arrived after its minute closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateCall {
    /// Its key.
    pub key: KeyId,
    /// Its minute.
    pub minute: i64,
    /// `userIdentityArn` value.
    pub principal: Sym,
    /// `userAgent` value.
    pub user_agent: Sym,
    /// `errorCode` value, for call-rate keys (`None` on error-rate keys).
    pub error_code: Option<Sym>,
}

impl LateCall {
    /// The call as a one-call minute sample.
    pub fn sample(&self) -> MinuteSample {
        MinuteSample {
            count: 1,
            attributions: AttributionCounts {
                principal: vec![(self.principal, 1)],
                user_agent: vec![(self.user_agent, 1)],
                error_code: self.error_code.map(|e| vec![(e, 1)]).unwrap_or_default(),
            },
        }
    }
}

/// What became of each counted record (a write management or error record of a batch) since the
/// aggregator was created or restored (not saved in checkpoints): exactly one outcome per record,
/// so the fields add up to the records pushed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordOutcomes {
    /// Counted into an open minute.
    pub counted: u64,
    /// Counted into a minute already closed (see [`AggregateCounters::late`]).
    pub late: u64,
    /// Its `eventID` was counted already.
    pub duplicate: u64,
    /// Its principal is suppressed by the policy.
    pub ignored: u64,
    /// Every key it would count for is new to an account and Region at `max_keys_per_region`.
    pub key_overflow: u64,
    /// It counts for no rate that is on (call rate or error rate switched off).
    pub not_counted: u64,
}

/// Aggregation counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateCounters {
    /// Counted events whose minute had already closed.
    pub late: u64,
    /// Counted events whose `eventID` was already counted.
    pub duplicates: u64,
    /// Events not counted because their principal is ignored (`ignore_principals`).
    pub ignored_principal: u64,
    /// Calls not counted because their key would be new to an account and Region that
    /// already tracks `max_keys_per_region` keys: one per refused call (a call counting for
    /// both the call rate and the error rate and refused twice counts twice). The keys already
    /// tracked are not affected. Counted since the process started (not saved in the
    /// checkpoint, whose format is unchanged).
    #[serde(skip)]
    pub key_overflow: u64,
}

/// Closed minutes handed to the detector: every minute of `from..until` is closed; `minutes`
/// holds those with calls, in order (the others had none). Its size is linear in the calls,
/// whatever the span of minutes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosedMinutes {
    /// First minute closed.
    pub from: i64,
    /// Minutes before this one are closed (exclusive end).
    pub until: i64,
    /// Closed minutes with calls, ascending minute.
    pub minutes: Vec<ClosedMinute>,
}

impl ClosedMinutes {
    /// Number of minutes closed (with calls or not).
    pub fn span(&self) -> i64 {
        (self.until - self.from).max(0)
    }

    /// True when no minute was closed.
    pub fn is_empty(&self) -> bool {
        self.span() == 0
    }
}

/// Cached `ignore_principals` decisions kept before the cache is cleared.
const MAX_IGNORED_CACHE: usize = 1 << 16;

/// A batch's strings as global symbols, interned on first use.
struct LocalSyms<'a> {
    strings: &'a [Box<str>],
    syms: Vec<Option<Sym>>,
}

impl LocalSyms<'_> {
    fn intern(&mut self, symbols: &mut SymbolTable, local: u32) -> Sym {
        let strings = self.strings;
        *self.syms[local as usize].get_or_insert_with(|| symbols.intern(&strings[local as usize]))
    }

    /// The symbol if the string is already interned (never interns).
    fn get(&mut self, symbols: &SymbolTable, local: u32) -> Option<Sym> {
        let slot = &mut self.syms[local as usize];
        if slot.is_none() {
            *slot = symbols.get(&self.strings[local as usize]);
        }
        *slot
    }
}

/// Minutes a closed minute's `eventID`s are remembered to recognise duplicates among late records.
const DEDUP_AFTER_CLOSE_MINUTES: i64 = 60;

/// The per-minute aggregator. Serializable (the settings are not part of it: see
/// [`Aggregator::restore_settings`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aggregator {
    /// Interned strings of every key and attribution value.
    pub symbols: SymbolTable,
    keys: Vec<RateKey>,
    #[serde(skip)]
    key_index: HashMap<RateKey, KeyId>,
    open: BTreeMap<i64, HashMap<KeyId, MinuteSample>>,
    seen: BTreeMap<i64, HashSet<u128>>,
    /// Every minute before this one is closed.
    closed_before: Option<i64>,
    newest: Option<i64>,
    lateness: i64,
    streams: BTreeMap<(Sym, Sym), i64>,
    counters: AggregateCounters,
    error_rate: bool,
    call_rate: bool,
    #[serde(skip)]
    policy: Option<crate::policy::Policy>,
    #[serde(skip)]
    ignored: HashMap<(Sym, Sym, Sym, Sym), bool>,
    /// Keys tracked per account and Region (rebuilt from `keys` on restore).
    #[serde(skip)]
    region_keys: HashMap<(Sym, Sym), u32>,
    #[serde(skip)]
    max_keys_per_region: u32,
    #[serde(skip)]
    outcomes: RecordOutcomes,
    /// (key, minute) of every open sample a push added to, since the last
    /// [`Aggregator::take_touched`] (scratch: empty between two engine calls).
    #[serde(skip)]
    touched: Vec<(KeyId, i64)>,
}

impl Aggregator {
    /// A new aggregator keeping minutes open `allowed_lateness_minutes` after the newest record,
    /// tracking at most [`crate::config::DEFAULT_MAX_KEYS_PER_REGION`] keys per account and
    /// Region (see [`Aggregator::with_max_keys_per_region`]).
    pub fn new(allowed_lateness_minutes: u32, call_rate: bool, error_rate: bool) -> Self {
        Aggregator {
            symbols: SymbolTable::default(),
            keys: Vec::new(),
            key_index: HashMap::new(),
            open: BTreeMap::new(),
            seen: BTreeMap::new(),
            closed_before: None,
            newest: None,
            lateness: i64::from(allowed_lateness_minutes),
            streams: BTreeMap::new(),
            counters: AggregateCounters::default(),
            error_rate,
            call_rate,
            policy: None,
            ignored: HashMap::new(),
            region_keys: HashMap::new(),
            max_keys_per_region: crate::config::DEFAULT_MAX_KEYS_PER_REGION,
            outcomes: RecordOutcomes::default(),
            touched: Vec::new(),
        }
    }

    /// Tracks at most `max` rate keys per account and Region (call-rate and error-rate keys
    /// together); calls for a new key past it are counted in
    /// [`AggregateCounters::key_overflow`] and not tracked.
    pub fn with_max_keys_per_region(mut self, max: u32) -> Self {
        self.max_keys_per_region = max;
        self
    }

    /// After deserializing: rebuilds the key index and applies the settings.
    pub fn restore_settings(
        &mut self,
        call_rate: bool,
        error_rate: bool,
        lateness: u32,
        policy: crate::policy::Policy,
        max_keys_per_region: u32,
    ) {
        self.key_index = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as KeyId))
            .collect();
        self.region_keys.clear();
        for k in &self.keys {
            *self.region_keys.entry((k.account, k.region)).or_default() += 1;
        }
        self.max_keys_per_region = max_keys_per_region;
        self.call_rate = call_rate;
        self.error_rate = error_rate;
        self.lateness = i64::from(lateness);
        self.policy = policy.has_principal_suppressions().then_some(policy);
        self.ignored.clear();
    }

    /// After deserializing (and [`Aggregator::restore_settings`]): checks that every key id
    /// refers to a key, every key's symbols to strings, and every minute lies in
    /// `0..=`[`MAX_STATE_MINUTE`]. Returns the first inconsistency found, in words.
    pub fn check_restored(&self) -> Result<(), String> {
        let n_syms = self.symbols.len();
        let sym_ok = |s: Sym| (s as usize) < n_syms;
        let minute_ok = |m: i64| (0..=MAX_STATE_MINUTE).contains(&m);
        for (i, k) in self.keys.iter().enumerate() {
            let syms = [k.account, k.region, k.event_source, k.event_name];
            if !syms.into_iter().chain(k.error_code).all(sym_ok) {
                return Err(format!(
                    "rate key {i} refers to a symbol that does not exist"
                ));
            }
        }
        if self.key_index.len() != self.keys.len() {
            return Err("a rate key appears twice".into());
        }
        for (&m, samples) in &self.open {
            if !minute_ok(m) {
                return Err(format!("open minute {m} out of range"));
            }
            if let Some(id) = samples.keys().find(|&&id| id as usize >= self.keys.len()) {
                return Err(format!(
                    "open minute {m} refers to rate key {id}, which does not exist"
                ));
            }
        }
        if let Some(m) = self.seen.keys().find(|&&m| !minute_ok(m)) {
            return Err(format!("deduplication minute {m} out of range"));
        }
        for m in [self.closed_before, self.newest].into_iter().flatten() {
            if !minute_ok(m) {
                return Err(format!("watermark minute {m} out of range"));
            }
        }
        for (&(account, region), &m) in &self.streams {
            if !sym_ok(account) || !sym_ok(region) || !minute_ok(m) {
                return Err(
                    "an account and Region history refers to a missing symbol or minute".into(),
                );
            }
        }
        Ok(())
    }

    /// Applies the principal suppressions of `policy` to every event.
    pub fn with_policy(mut self, policy: crate::policy::Policy) -> Self {
        self.policy = policy.has_principal_suppressions().then_some(policy);
        self
    }

    fn ignores(&mut self, principal: Sym, key: &RateKey) -> bool {
        let Some(policy) = &self.policy else {
            return false;
        };
        if self.ignored.len() >= MAX_IGNORED_CACHE {
            // Principals are chosen by callers: the cache of decisions is dropped, not grown.
            self.ignored.clear();
        }
        let symbols = &self.symbols;
        *self
            .ignored
            .entry((principal, key.account, key.event_source, key.event_name))
            .or_insert_with(|| {
                policy.ignores_principal(
                    symbols.resolve(principal),
                    symbols.resolve(key.account),
                    symbols.resolve(key.event_source),
                    symbols.resolve(key.event_name),
                )
            })
    }

    /// The id of `key`, adding it when its account and Region tracks fewer than
    /// `max_keys_per_region` keys; `None` (and one more `key_overflow`) past the cap.
    fn key_id(&mut self, key: RateKey) -> Option<KeyId> {
        if let Some(&id) = self.key_index.get(&key) {
            return Some(id);
        }
        let n = self
            .region_keys
            .entry((key.account, key.region))
            .or_default();
        if *n >= self.max_keys_per_region {
            self.counters.key_overflow += 1;
            return None;
        }
        *n += 1;
        let id = self.keys.len() as KeyId;
        self.keys.push(key);
        self.key_index.insert(key, id);
        Some(id)
    }

    /// The key behind an id.
    pub fn key(&self, id: KeyId) -> RateKey {
        self.keys[id as usize]
    }

    /// Number of rate keys seen.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// First minute seen for an account and Region (the start of its history).
    pub fn history_start(&self, account: Sym, region: Sym) -> Option<i64> {
        self.streams.get(&(account, region)).copied()
    }

    /// Counters so far.
    pub fn counters(&self) -> AggregateCounters {
        self.counters
    }

    /// What became of each record pushed since creation or restore (one outcome per record).
    pub fn record_outcomes(&self) -> RecordOutcomes {
        self.outcomes
    }

    /// Every minute before this is closed (`None` before the first record).
    pub fn closed_before(&self) -> Option<i64> {
        self.closed_before
    }

    /// Adds one file's events. `delivered_minute` (from the file name, when known)
    /// caps how far this file can move the watermark, so one record with a
    /// skewed clock cannot close minutes early. Late events are appended to `late`.
    pub fn push(
        &mut self,
        batch: &FileBatch,
        delivered_minute: Option<i64>,
        late: &mut Vec<LateCall>,
    ) {
        // Batch strings are interned on first use only: a string of a refused key or a
        // duplicate never enters the symbol table.
        let mut local = LocalSyms {
            strings: &batch.strings,
            syms: vec![None; batch.strings.len()],
        };
        let mut newest = self.newest;
        for s in &batch.streams {
            let key = (
                local.intern(&mut self.symbols, s.account),
                local.intern(&mut self.symbols, s.region),
            );
            let first = self.streams.entry(key).or_insert(s.first_minute);
            *first = (*first).min(s.first_minute);
            let last = delivered_minute.map_or(s.last_minute, |d| s.last_minute.min(d));
            newest = Some(newest.map_or(last, |n: i64| n.max(last)));
        }
        if self.closed_before.is_none() {
            self.closed_before = batch.streams.iter().map(|s| s.first_minute).min();
        }
        self.newest = newest;
        for e in &batch.events {
            let closed = self.closed_before.is_some_and(|c| e.minute < c);
            if e.event_id != 0 {
                let fresh = self.seen.entry(e.minute).or_default().insert(e.event_id);
                if !fresh {
                    self.counters.duplicates += 1;
                    self.outcomes.duplicate += 1;
                    continue;
                }
            }
            let want_call = e.call && self.call_rate;
            let want_error = e.error && self.error_rate;
            let account = local.intern(&mut self.symbols, e.account);
            let region = local.intern(&mut self.symbols, e.region);
            // An account and Region at its key cap takes no new key: its names are looked up,
            // not interned, and an unknown one means a new key.
            let full = self
                .region_keys
                .get(&(account, region))
                .is_some_and(|&n| n >= self.max_keys_per_region);
            let names = if full {
                local
                    .get(&self.symbols, e.event_source)
                    .zip(local.get(&self.symbols, e.event_name))
            } else {
                Some((
                    local.intern(&mut self.symbols, e.event_source),
                    local.intern(&mut self.symbols, e.event_name),
                ))
            };
            let Some((event_source, event_name)) = names else {
                self.counters.key_overflow += u64::from(want_call) + u64::from(want_error);
                if want_call || want_error {
                    self.outcomes.key_overflow += 1;
                } else {
                    self.outcomes.not_counted += 1;
                }
                continue;
            };
            let base = RateKey {
                account,
                region,
                event_source,
                event_name,
                error_code: None,
            };
            let principal = local.intern(&mut self.symbols, e.principal);
            if self.ignores(principal, &base) {
                self.counters.ignored_principal += 1;
                self.outcomes.ignored += 1;
                continue;
            }
            let error_code = if full {
                local.get(&self.symbols, e.error_code)
            } else {
                Some(local.intern(&mut self.symbols, e.error_code))
            };
            let mut targets = [None, None];
            if want_call {
                targets[0] = self.key_id(base);
            }
            if want_error {
                targets[1] = match error_code {
                    Some(code) => self.key_id(RateKey {
                        error_code: Some(code),
                        ..base
                    }),
                    None => {
                        self.counters.key_overflow += 1;
                        None
                    }
                };
            }
            if targets == [None, None] {
                if want_call || want_error {
                    self.outcomes.key_overflow += 1;
                } else {
                    self.outcomes.not_counted += 1;
                }
                continue;
            }
            if closed {
                self.outcomes.late += 1;
            } else {
                self.outcomes.counted += 1;
            }
            let user_agent = local.intern(&mut self.symbols, e.user_agent);
            let error_code = local.intern(&mut self.symbols, e.error_code);
            for key in targets.into_iter().flatten() {
                if closed {
                    self.counters.late += 1;
                    late.push(LateCall {
                        key,
                        minute: e.minute,
                        principal,
                        user_agent,
                        error_code: (targets[1] != Some(key)).then_some(error_code),
                    });
                    continue;
                }
                let sample = self
                    .open
                    .entry(e.minute)
                    .or_default()
                    .entry(key)
                    .or_default();
                sample.count += 1;
                self.touched.push((key, e.minute));
                bump(&mut sample.attributions.principal, principal, 1);
                bump(&mut sample.attributions.user_agent, user_agent, 1);
                if targets[1] != Some(key) {
                    bump(&mut sample.attributions.error_code, error_code, 1);
                }
            }
        }
    }

    /// Each key a push since the last call added open calls to, with the earliest open minute
    /// it added to: ascending key id (open minutes only: a minute closed since is left out).
    pub fn take_touched(&mut self) -> Vec<(KeyId, i64)> {
        let mut touched = std::mem::take(&mut self.touched);
        let closed = self.closed_before.unwrap_or(i64::MIN);
        touched.retain(|t| t.1 >= closed);
        touched.sort_unstable();
        touched.dedup_by_key(|t| t.0);
        touched
    }

    /// The open minutes (not closed yet) in which `key` has calls, ascending, with their
    /// samples so far (counts only grow until the minute closes).
    pub fn open_samples(&self, key: KeyId) -> Vec<(i64, &MinuteSample)> {
        self.open
            .iter()
            .filter_map(|(m, keys)| keys.get(&key).map(|s| (*m, s)))
            .collect()
    }

    /// Closes every minute before `newest − allowed_lateness` and returns them in order.
    pub fn close_ready(&mut self) -> ClosedMinutes {
        match self.newest {
            Some(n) => self.close_until(n - self.lateness),
            None => ClosedMinutes::default(),
        }
    }

    /// Closes every open minute (end of input) and returns them in order.
    pub fn close_all(&mut self) -> ClosedMinutes {
        let end = self.open.keys().next_back().map(|m| m + 1);
        match (end, self.newest) {
            (Some(e), Some(n)) => self.close_until(e.max(n + 1)),
            (Some(e), None) => self.close_until(e),
            (None, Some(n)) => self.close_until(n + 1),
            (None, None) => ClosedMinutes::default(),
        }
    }

    /// Closes `closed_before..until`. Time and memory are linear in the open minutes with
    /// calls, not in the span: a jump of years between two records closes in one step.
    fn close_until(&mut self, until: i64) -> ClosedMinutes {
        let Some(from) = self.closed_before else {
            return ClosedMinutes::default();
        };
        if until <= from {
            return ClosedMinutes::default();
        }
        let still_open = self.open.split_off(&until);
        let ready = std::mem::replace(&mut self.open, still_open);
        let mut minutes = Vec::with_capacity(ready.len());
        for (minute, keys) in ready {
            if minute < from {
                continue;
            }
            let mut samples: Vec<(KeyId, MinuteSample)> = keys.into_iter().collect();
            samples.sort_unstable_by_key(|s| s.0);
            for (_, s) in &mut samples {
                for v in [
                    &mut s.attributions.principal,
                    &mut s.attributions.user_agent,
                    &mut s.attributions.error_code,
                ] {
                    v.sort_unstable();
                }
            }
            minutes.push(ClosedMinute { minute, samples });
        }
        self.closed_before = Some(until);
        let horizon = until - DEDUP_AFTER_CLOSE_MINUTES;
        let kept = self.seen.split_off(&horizon);
        self.seen = kept;
        ClosedMinutes {
            from,
            until,
            minutes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use crate::record::parse_log;

    fn batch(lines: &[(&str, &str, &str)]) -> FileBatch {
        let mut b = BatchBuilder::new();
        for (time, name, id) in lines {
            let json = format!(
                r#"{{"eventTime":"{time}","eventSource":"iam.amazonaws.com","eventName":"{name}","awsRegion":"us-east-1","recipientAccountId":"111122223333","managementEvent":true,"readOnly":false,"eventID":"{id}","userIdentity":{{"arn":"arn:aws:iam::111122223333:user/a"}}}}"#
            );
            parse_log(json.as_bytes(), |r| b.push(&r));
        }
        b.finish()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Every counted event gets exactly one outcome, whatever the mix of duplicates, late
        /// records, key-cap refusals, suppressed principals and rates switched off.
        #[test]
        fn record_outcomes_are_a_partition(
            files in proptest::collection::vec(
                proptest::collection::vec((0u32..40, 0u8..6, 0u16..30, proptest::bool::ANY, proptest::bool::ANY), 0..40),
                1..6,
            ),
            cap in 1u32..5,
            call_rate in proptest::bool::ANY,
            error_rate in proptest::bool::ANY,
        ) {
            let policy = crate::config::DetectorConfig {
                ignore_principals: vec![crate::policy::PrincipalSuppression {
                    principal: "arn:aws:iam::111122223333:user/ignored".into(),
                    event_source: None,
                    event_name: None,
                    account: None,
                }],
                ..Default::default()
            }
            .policy()
            .unwrap();
            let mut a = Aggregator::new(5, call_rate, error_rate)
                .with_max_keys_per_region(cap)
                .with_policy(policy);
            let mut late = Vec::new();
            let mut events = 0u64;
            for file in &files {
                let mut b = BatchBuilder::new();
                for &(minute, name, id, ignored, failed) in file {
                    let who = if ignored { "ignored" } else { "a" };
                    let error = if failed { r#","errorCode":"AccessDenied""# } else { "" };
                    let json = format!(
                        r#"{{"eventTime":"2024-01-01T{:02}:{:02}:00Z","eventSource":"iam.amazonaws.com","eventName":"N{name}","awsRegion":"us-east-1","recipientAccountId":"111122223333","managementEvent":true,"readOnly":false,"eventID":"e{id}","userIdentity":{{"arn":"arn:aws:iam::111122223333:user/{who}"}}{error}}}"#,
                        minute / 60,
                        minute % 60
                    );
                    parse_log(json.as_bytes(), |r| b.push(&r));
                }
                let batch = b.finish();
                events += batch.events.len() as u64;
                a.push(&batch, None, &mut late);
                a.close_ready();
            }
            let o = a.record_outcomes();
            proptest::prop_assert_eq!(
                o.counted + o.late + o.duplicate + o.ignored + o.key_overflow + o.not_counted,
                events,
                "{:?}", o
            );
        }
    }

    #[test]
    fn watermark_dedup_and_late() {
        let mut a = Aggregator::new(15, true, true);
        let mut late = Vec::new();
        a.push(
            &batch(&[
                ("2024-01-01T00:00:10Z", "A", "id1"),
                ("2024-01-01T00:00:20Z", "A", "id1"),
                ("2024-01-01T00:03:00Z", "A", "id2"),
            ]),
            None,
            &mut late,
        );
        assert_eq!(a.counters().duplicates, 1);
        assert!(
            a.close_ready().is_empty(),
            "nothing closes within the lateness"
        );
        a.push(
            &batch(&[("2024-01-01T00:20:00Z", "A", "id3")]),
            None,
            &mut late,
        );
        let closed = a.close_ready();
        // newest minute 20, lateness 15: minutes 0..=4 closed
        assert_eq!(closed.span(), 5);
        let t0 = closed.from;
        let with_calls: Vec<(i64, u32)> = closed
            .minutes
            .iter()
            .map(|c| (c.minute - t0, c.samples[0].1.count))
            .collect();
        assert_eq!(
            with_calls,
            [(0, 1), (3, 1)],
            "minutes 1, 2 and 4 had no calls"
        );
        a.push(
            &batch(&[
                ("2024-01-01T00:01:00Z", "A", "id4"),
                ("2024-01-01T00:00:30Z", "A", "id1"),
            ]),
            None,
            &mut late,
        );
        assert_eq!(late.len(), 1);
        assert_eq!(a.counters().late, 1);
        assert_eq!(a.counters().duplicates, 2);
        let rest = a.close_all();
        assert_eq!((rest.from, rest.until), (t0 + 5, t0 + 21));
        assert_eq!(rest.minutes.last().map(|c| c.minute), Some(t0 + 20));
    }

    #[test]
    fn delivery_time_caps_the_watermark() {
        let mut a = Aggregator::new(15, true, true);
        let mut late = Vec::new();
        let b = batch(&[
            ("2024-01-01T00:00:10Z", "A", "x1"),
            ("2030-01-01T00:00:00Z", "A", "x2"),
        ]);
        a.push(
            &b,
            crate::time::parse_event_minute("2024-01-01T00:05:00Z"),
            &mut late,
        );
        assert!(a.close_ready().is_empty());
    }

    fn one(time: &str, name: &str, user_agent: &str, id: u64) -> String {
        serde_json::json!({
            "eventTime": time, "eventSource": "iam.amazonaws.com", "eventName": name,
            "awsRegion": "us-east-1", "recipientAccountId": "111122223333",
            "managementEvent": true, "readOnly": false,
            "eventID": format!("00000000-0000-4000-8000-{id:012x}"),
            "userAgent": user_agent,
            "userIdentity": {"arn": "arn:aws:iam::111122223333:user/a"}
        })
        .to_string()
    }

    fn file(records: &[String]) -> FileBatch {
        let mut b = BatchBuilder::new();
        parse_log(format!("[{}]", records.join(",")).as_bytes(), |r| {
            b.push(&r)
        });
        b.finish()
    }

    #[test]
    fn a_jump_of_millennia_closes_without_a_per_minute_cost() {
        // Finding 3: 0001 → 9999 between two records used to allocate one entry per minute
        // (134 GB). Now the closed range holds only the two minutes with calls.
        let mut a = Aggregator::new(15, true, true);
        let mut late = Vec::new();
        a.push(
            &file(&[one("0001-01-01T00:00:00Z", "A", "ua", 1)]),
            None,
            &mut late,
        );
        a.push(
            &file(&[one("9999-12-31T23:59:00Z", "A", "ua", 2)]),
            None,
            &mut late,
        );
        let closed = a.close_ready();
        assert!(closed.span() > 5_000_000_000, "{}", closed.span());
        assert_eq!(closed.minutes.len(), 1);
        let rest = a.close_all();
        assert_eq!(rest.minutes.len(), 1);
        assert_eq!(rest.until, rest.minutes[0].minute + 1);
    }

    #[test]
    fn distinct_user_agents_in_one_key_minute_stay_bounded() {
        // Finding 4: 300k distinct user agents in one key-minute (a caller picks its own) were
        // a quadratic scan; the summary keeps 64 values and the heavy hitter stays on top.
        let n = 300_000u64;
        let mut records = Vec::with_capacity(n as usize + 1000);
        for i in 0..n {
            records.push(one("2024-01-01T00:00:10Z", "A", &format!("ua-{i}"), i + 1));
            // 3% of the calls: above the 1/64 share a space-saving summary guarantees.
            if i % 30 == 0 {
                records.push(one("2024-01-01T00:00:10Z", "A", "heavy", 10_000_000 + i));
            }
        }
        let mut a = Aggregator::new(15, true, true);
        let mut late = Vec::new();
        a.push(&file(&records), None, &mut late);
        let closed = a.close_all();
        let sample = &closed.minutes[0].samples[0].1;
        assert_eq!(sample.count as u64, n + 10_000);
        let ua = &sample.attributions.user_agent;
        assert!(ua.len() <= MAX_ATTRIBUTION_VALUES, "{}", ua.len());
        assert_eq!(ua.iter().map(|e| u64::from(e.1)).sum::<u64>(), n + 10_000);
        let top = ua
            .iter()
            .max_by_key(|e| e.1)
            .map(|e| a.symbols.resolve(e.0));
        assert_eq!(top, Some("heavy"));
        // Merging many bounded summaries stays bounded.
        let mut merged = AttributionCounts::default();
        for _ in 0..3 {
            merged.merge(&sample.attributions);
        }
        assert!(merged.user_agent.len() <= MAX_ATTRIBUTION_VALUES);
    }

    #[test]
    fn attribution_counts_are_exact_below_the_cap() {
        let mut v = ValueCounts::new();
        for i in 0..MAX_ATTRIBUTION_VALUES as u32 {
            bump(&mut v, i, i + 1);
            bump(&mut v, i, 1);
        }
        assert_eq!(v.len(), MAX_ATTRIBUTION_VALUES);
        assert!(v.iter().all(|&(s, n)| n == s + 2));
    }

    #[test]
    fn new_keys_past_the_cap_per_region_are_refused_and_counted() {
        // Finding 5: 1 M distinct eventNames in one file became 1 M tracked keys.
        let cap = 100;
        let mut a = Aggregator::new(15, true, true).with_max_keys_per_region(cap);
        let mut late = Vec::new();
        let records: Vec<String> = (0..5_000u64)
            .map(|i| one("2024-01-01T00:00:10Z", &format!("Api{i}"), "ua", i + 1))
            .collect();
        a.push(&file(&records), None, &mut late);
        assert_eq!(a.key_count(), cap as usize);
        assert_eq!(a.counters().key_overflow, 5_000 - u64::from(cap));
        // Names of refused keys never enter the symbol table.
        assert!(a.symbols.len() < cap as usize + 10, "{}", a.symbols.len());
        // A tracked key keeps counting; another Region has its own allowance.
        let again = one("2024-01-01T00:01:10Z", "Api0", "ua", 9_000_001);
        let other =
            one("2024-01-01T00:01:10Z", "Api0", "ua", 9_000_002).replace("us-east-1", "eu-west-1");
        a.push(&file(&[again, other]), None, &mut late);
        assert_eq!(a.key_count(), cap as usize + 1);
        assert_eq!(a.counters().key_overflow, 5_000 - u64::from(cap));
        // The cap survives a checkpoint (key counts are rebuilt on restore).
        let mut restored = a.clone();
        restored.region_keys.clear(); // not saved in a checkpoint
        restored.restore_settings(true, true, 15, crate::policy::Policy::default(), cap);
        restored.push(
            &file(&[one("2024-01-01T00:02:10Z", "Fresh", "ua", 9_000_003)]),
            None,
            &mut late,
        );
        assert_eq!(restored.key_count(), cap as usize + 1);
    }
}
