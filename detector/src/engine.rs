//! The whole pure pipeline: batches in, Insights event records out.
//!
//! [`Engine::ingest`] takes one log file's [`FileBatch`] (in delivery order),
//! aggregates it, closes the minutes the watermark passed, runs the detector on
//! them and returns the Insights records they decided. [`Engine::finish`]
//! closes everything at the end of input. Output depends only on the input
//! files and their order: eventIDs are UUID v5 of the Insight's content.

use uuid::Uuid;

use crate::aggregate::{AggregateCounters, Aggregator, LateCall, RateKey};
use crate::batch::FileBatch;
use crate::config::{ConfigError, DetectorConfig};
use crate::detect::{Detector, Transition};
use crate::insight::{
    Attribution, AttributionValue, Average, EVENT_CATEGORY, EVENT_TYPE, EVENT_VERSION,
    InsightContext, InsightDetails, InsightRecord, InsightState, InsightType, Statistics,
    round_average,
};
use crate::time::format_minute;

/// Namespace of trailsight's UUID v5 event IDs.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c2e_9a4d_5e7f_8a0b_1c2d_3e4f_5a6b);

/// Why a serialized engine cannot be restored ([`Engine::restore`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RestoreError {
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state refers to something it does not hold.
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
}

/// One Insights record ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct EmittedInsight {
    /// The minute the record becomes deliverable (the minute after the closed minute that decided it).
    pub delivery_minute: i64,
    /// Account of the source events.
    pub account: String,
    /// Region of the source events.
    pub region: String,
    /// The record.
    pub record: InsightRecord,
}

/// One tracked rate key as the engine sees it now (for the API's keys view).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyReport {
    /// `recipientAccountId`.
    pub account: String,
    /// `awsRegion`.
    pub region: String,
    /// `eventSource`.
    pub event_source: String,
    /// `eventName`.
    pub event_name: String,
    /// `errorCode` of an error-rate key; absent for a call-rate key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// `ApiCallRateInsight` or `ApiErrorRateInsight` (which Insights this key can raise).
    pub insight_type: &'static str,
    /// `warmingUp` (its account and Region have less history than `warmup_minutes`),
    /// `inInsight`, or `normal`.
    pub state: &'static str,
    /// Minutes of history of its account and Region (to the watermark).
    pub history_minutes: i64,
    /// Calls per minute over its baseline window (calls learnt / minutes of history covered,
    /// at most the baseline window).
    pub baseline_rate: f64,
    /// Calls per minute over the last 60 closed minutes not yet learnt into the baseline.
    pub recent_rate: f64,
}

/// An Insight with no `End` yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInsightReport {
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// `eventSource`.
    pub event_source: String,
    /// `eventName`.
    pub event_name: String,
    /// `errorCode` for error-rate Insights.
    pub error_code: Option<String>,
    /// Start, `YYYY-MM-DDTHH:MM:00Z`.
    pub start: String,
    /// Calls so far.
    pub calls: u64,
}

/// A rate key by name (the series tap's key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// `recipientAccountId`.
    pub account: String,
    /// `awsRegion`.
    pub region: String,
    /// `eventSource`.
    pub event_source: String,
    /// `eventName`.
    pub event_name: String,
    /// `errorCode` of an error-rate key; `None` for a call-rate key.
    pub error_code: Option<String>,
}

/// What the series tap saw since the last [`Engine::take_series`]: per-minute counts and the
/// detector's judgements, for every tracked key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesBatch {
    /// The keys referred to below (by index).
    pub keys: Vec<SeriesKey>,
    /// (key index, minute since the Unix epoch (UTC minute buckets), calls): the count of a
    /// minute as it closed (with calls; minutes not listed had none). Closing the same minute
    /// again (after a restore from a checkpoint) gives the same count.
    pub counts: Vec<(u32, i64, u32)>,
    /// (key index, minute): one late call each, counted after its minute closed (add 1).
    pub late: Vec<(u32, i64)>,
    /// (key index, minute, calls so far): minutes still open that this batch's files added
    /// calls to (provisional: set again, to its final count, when the minute closes).
    pub open: Vec<(u32, i64, u32)>,
    /// (key index, hour since the Unix epoch, judgement): each key's first open test of the
    /// hour (none for keys warming up or with an Insight open).
    pub judgements: Vec<(u32, i64, crate::detect::judgement::Judgement)>,
}

impl SeriesBatch {
    /// True when there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
            && self.late.is_empty()
            && self.open.is_empty()
            && self.judgements.is_empty()
    }
}

/// The series tap's buffer (engine key ids).
#[derive(Debug, Clone, Default)]
struct SeriesTap {
    counts: Vec<(crate::aggregate::KeyId, i64, u32)>,
    late: Vec<(crate::aggregate::KeyId, i64)>,
    open: Vec<(crate::aggregate::KeyId, i64, u32)>,
}

/// Aggregator and detector together. Serializable between two [`Engine::ingest`]s
/// (checkpoints); the settings are not part of the state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Engine {
    aggregator: Aggregator,
    detector: Detector,
    /// Empty between two calls (scratch space).
    #[serde(skip)]
    late: Vec<LateCall>,
    /// Empty between two calls (scratch space).
    #[serde(skip)]
    transitions: Vec<Transition>,
    started: u64,
    ended: u64,
    /// Minutes closed since creation or restore (not saved).
    #[serde(skip)]
    minutes_closed: u64,
    /// The series tap's per-minute counts (key, minute, calls), when enabled (not saved).
    #[serde(skip)]
    series: Option<SeriesTap>,
}

impl Engine {
    /// A new engine; `Err(ConfigError)` when a setting is out of range.
    pub fn new(config: DetectorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let policy = config.policy()?;
        Ok(Engine {
            aggregator: Aggregator::new(
                config.allowed_lateness_minutes,
                config.call_rate,
                config.error_rate,
            )
            .with_max_keys_per_region(config.max_keys_per_region)
            .with_policy(policy.clone()),
            detector: Detector::new(config, policy),
            late: Vec::new(),
            transitions: Vec::new(),
            started: 0,
            ended: 0,
            minutes_closed: 0,
            series: None,
        })
    }

    /// Rebuilds an engine from its serialized state with the given settings.
    ///
    /// Returns `Err(RestoreError::Config)` when a setting is out of range and
    /// `Err(RestoreError::Inconsistent)` when the state refers to keys, symbols or minutes it
    /// does not hold (a crafted or damaged state that decoded cleanly).
    pub fn restore(mut self, config: DetectorConfig) -> Result<Self, RestoreError> {
        config.validate()?;
        let policy = config.policy()?;
        self.aggregator.restore_settings(
            config.call_rate,
            config.error_rate,
            config.allowed_lateness_minutes,
            policy.clone(),
            config.max_keys_per_region,
        );
        self.detector.restore_settings(config, policy);
        self.aggregator
            .check_restored()
            .and_then(|()| self.detector.check_restored(self.aggregator.key_count()))
            .map_err(RestoreError::Inconsistent)?;
        Ok(self)
    }

    /// Adds one log file's events and returns the Insights records decided by the minutes it closed.
    ///
    /// `delivered_minute` is the delivery time from the file name, when known.
    pub fn ingest(
        &mut self,
        batch: &FileBatch,
        delivered_minute: Option<i64>,
    ) -> Vec<EmittedInsight> {
        self.aggregator
            .push(batch, delivered_minute, &mut self.late);
        let mut out = Vec::new();
        if !self.late.is_empty() {
            if let Some(series) = self.series.as_mut() {
                series
                    .late
                    .extend(self.late.iter().map(|l| (l.key, l.minute)));
            }
            for l in self.late.drain(..) {
                self.detector.record_late(&l);
            }
            let now = self.aggregator.closed_before().map_or(0, |c| c - 1);
            self.detector
                .process_late(&self.aggregator, now, &mut self.transitions);
            self.drain_transitions(&mut out);
        }
        let closed = self.aggregator.close_ready();
        out.extend(self.run(&closed));
        // The keys this file added calls to, with their open minutes so far: provisional
        // counts for the series tap, and early Starts tested on what is read so far.
        let touched = self.aggregator.take_touched();
        let early = self.detector.config().early_starts;
        if self.series.is_none() && !early {
            return out;
        }
        let closed_through = self.aggregator.closed_before().map_or(i64::MIN, |c| c - 1);
        for (id, from) in touched {
            let open = self.aggregator.open_samples(id);
            if let Some(series) = self.series.as_mut() {
                series.open.extend(
                    open.iter()
                        .filter(|o| o.0 >= from)
                        .map(|(m, sample)| (id, *m, sample.count)),
                );
            }
            if early {
                self.detector.test_early(
                    id,
                    &self.aggregator,
                    from,
                    &open,
                    closed_through,
                    &mut self.transitions,
                );
            }
        }
        self.drain_transitions(&mut out);
        out
    }

    fn drain_transitions(&mut self, out: &mut Vec<EmittedInsight>) {
        for t in self.transitions.drain(..) {
            if t.start {
                self.started += 1;
            } else {
                self.ended += 1;
            }
            out.push(build_record(&self.aggregator, &t));
        }
    }

    /// End of input: closes every open minute and returns the records decided.
    /// Insights still open stay open (see [`Engine::open_insights`]).
    pub fn finish(&mut self) -> Vec<EmittedInsight> {
        let closed = self.aggregator.close_all();
        self.run(&closed)
    }

    fn run(&mut self, closed: &crate::aggregate::ClosedMinutes) -> Vec<EmittedInsight> {
        self.minutes_closed += u64::try_from(closed.until - closed.from).unwrap_or(0);
        if let Some(series) = self.series.as_mut() {
            for m in &closed.minutes {
                (series.counts).extend(m.samples.iter().map(|(k, s)| (*k, m.minute, s.count)));
            }
        }
        let mut out = Vec::new();
        self.detector
            .close_minutes(closed, &self.aggregator, &mut self.transitions);
        self.drain_transitions(&mut out);
        out
    }

    /// Starts the series tap: from now on the engine keeps every closed minute's count per key
    /// and the detector's hourly judgements until [`Engine::take_series`] takes them. Off by
    /// default; not part of the saved state (enable it again after a restore).
    pub fn enable_series(&mut self) {
        self.series.get_or_insert_with(SeriesTap::default);
        self.detector.enable_judgements();
    }

    /// What the series tap recorded since the last call (empty when it is off).
    pub fn take_series(&mut self) -> SeriesBatch {
        let tap = self.series.as_mut().map(std::mem::take).unwrap_or_default();
        let judgements = self.detector.take_judgements();
        let mut batch = SeriesBatch::default();
        let mut index = std::collections::HashMap::new();
        let agg = &self.aggregator;
        let mut key_index = |id: crate::aggregate::KeyId, keys: &mut Vec<SeriesKey>| -> u32 {
            *index.entry(id).or_insert_with(|| {
                let k = agg.key(id);
                let sym = |s| agg.symbols.resolve(s).to_string();
                keys.push(SeriesKey {
                    account: sym(k.account),
                    region: sym(k.region),
                    event_source: sym(k.event_source),
                    event_name: sym(k.event_name),
                    error_code: k.error_code.map(sym),
                });
                u32::try_from(keys.len() - 1).unwrap_or(u32::MAX)
            })
        };
        for (id, minute, calls) in tap.counts {
            let i = key_index(id, &mut batch.keys);
            batch.counts.push((i, minute, calls));
        }
        for (id, minute) in tap.late {
            let i = key_index(id, &mut batch.keys);
            batch.late.push((i, minute));
        }
        for (id, minute, calls) in tap.open {
            let i = key_index(id, &mut batch.keys);
            batch.open.push((i, minute, calls));
        }
        for (id, hour, j) in judgements {
            let i = key_index(id, &mut batch.keys);
            batch.judgements.push((i, hour, j));
        }
        batch
    }

    /// The engine's settings (e.g. for [`DetectorConfig::time_bounds`], the bounds of a file's
    /// record times to pass to [`crate::BatchBuilder::with_bounds`]).
    pub fn config(&self) -> &DetectorConfig {
        self.detector.config()
    }

    /// Insights without an `End` (at the end of input: reported, not closed).
    pub fn open_insights(&self) -> Vec<OpenInsightReport> {
        let sym = |s| self.aggregator.symbols.resolve(s).to_string();
        self.detector
            .open_insights(&self.aggregator)
            .into_iter()
            .map(|o| OpenInsightReport {
                account: sym(o.key.account),
                region: sym(o.key.region),
                event_source: sym(o.key.event_source),
                event_name: sym(o.key.event_name),
                error_code: o.key.error_code.map(sym),
                start: format_minute(o.start),
                calls: o.calls,
            })
            .collect()
    }

    /// What became of each counted record since creation or restore (one outcome per record).
    pub fn record_outcomes(&self) -> crate::aggregate::RecordOutcomes {
        self.aggregator.record_outcomes()
    }

    /// UTC minutes closed since creation or restore.
    pub fn minutes_closed(&self) -> u64 {
        self.minutes_closed
    }

    /// The event-time watermark: every minute before this one is closed (minutes since the
    /// Unix epoch; `None` before the first record).
    pub fn watermark_minute(&self) -> Option<i64> {
        self.aggregator.closed_before()
    }

    /// Every tracked key as the engine sees it now (O(keys); for a periodic snapshot).
    pub fn key_reports(&self) -> Vec<KeyReport> {
        let cfg = self.detector.config();
        let now = self.aggregator.closed_before().unwrap_or(0);
        let span = i64::from(cfg.baseline_window_minutes);
        let sym = |s| self.aggregator.symbols.resolve(s).to_string();
        (0..self.aggregator.key_count())
            .map(|i| {
                let id = i as crate::aggregate::KeyId;
                let key = self.aggregator.key(id);
                let start = self
                    .aggregator
                    .history_start(key.account, key.region)
                    .unwrap_or(now);
                let history = (now - start).max(0);
                let (calls, recent, open) = self
                    .detector
                    .key_view(id, now - 60)
                    .unwrap_or((0, 0, false));
                let state = if open {
                    "inInsight"
                } else if history < i64::from(cfg.warmup_minutes) {
                    "warmingUp"
                } else {
                    "normal"
                };
                KeyReport {
                    account: sym(key.account),
                    region: sym(key.region),
                    event_source: sym(key.event_source),
                    event_name: sym(key.event_name),
                    error_code: key.error_code.map(sym),
                    insight_type: if key.error_code.is_some() {
                        "ApiErrorRateInsight"
                    } else {
                        "ApiCallRateInsight"
                    },
                    state,
                    history_minutes: history,
                    baseline_rate: calls as f64 / history.clamp(1, span.max(1)) as f64,
                    recent_rate: recent as f64 / 60.0,
                }
            })
            .collect()
    }

    /// Insights without an `End`: (call rate, error rate).
    pub fn open_insight_counts(&self) -> (u64, u64) {
        let mut counts = (0, 0);
        for id in self.detector.open_key_ids() {
            if self.aggregator.key(id).error_code.is_some() {
                counts.1 += 1;
            } else {
                counts.0 += 1;
            }
        }
        counts
    }

    /// Late and duplicate counters.
    pub fn counters(&self) -> AggregateCounters {
        self.aggregator.counters()
    }

    /// Rate keys seen (call-rate and error-rate keys).
    pub fn key_count(&self) -> usize {
        self.aggregator.key_count()
    }

    /// Strings interned (accounts, Regions, API names, error codes, principals, user agents):
    /// never freed, so a service can report its growth (each at most 512 bytes).
    pub fn symbol_count(&self) -> usize {
        self.aggregator.symbols.len()
    }

    /// Insights started and ended so far.
    pub fn insight_counts(&self) -> (u64, u64) {
        (self.started, self.ended)
    }

    /// Approximate heap bytes of the detector's per-key state.
    pub fn detector_heap_bytes(&self) -> usize {
        self.detector.heap_bytes()
    }
}

fn key_text(agg: &Aggregator, key: &RateKey) -> String {
    let s = |x| agg.symbols.resolve(x);
    format!(
        "{}|{}|{}|{}|{}",
        s(key.account),
        s(key.region),
        s(key.event_source),
        s(key.event_name),
        key.error_code.map_or("", s)
    )
}

/// Builds the Insights record of a transition (schema: CloudTrail Insights event, eventVersion 1.09).
fn build_record(agg: &Aggregator, t: &Transition) -> EmittedInsight {
    let s = |x| agg.symbols.resolve(x).to_string();
    let insight_type = if t.key.error_code.is_some() {
        InsightType::ApiErrorRateInsight
    } else {
        InsightType::ApiCallRateInsight
    };
    let state = if t.start {
        InsightState::Start
    } else {
        InsightState::End
    };
    let shared_name = format!(
        "{}|{:?}|{}",
        key_text(agg, &t.key),
        insight_type,
        t.insight_start
    );
    let shared = Uuid::new_v5(&EVENT_ID_NAMESPACE, shared_name.as_bytes());
    let event_id = Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("{shared_name}|{state:?}").as_bytes(),
    );
    let attributions = t
        .attributions
        .iter()
        .map(|a| Attribution {
            attribute: a.attribute.name().to_string(),
            insight: a
                .insight
                .iter()
                .map(|&(v, avg)| AttributionValue {
                    value: s(v),
                    average: round_average(avg),
                })
                .collect(),
            baseline: a
                .baseline
                .iter()
                .map(|&(v, avg)| AttributionValue {
                    value: s(v),
                    average: round_average(avg),
                })
                .collect(),
        })
        .collect();
    let record = InsightRecord {
        event_version: EVENT_VERSION.to_string(),
        event_time: format_minute(t.event_minute),
        aws_region: s(t.key.region),
        event_id: event_id.to_string(),
        event_type: EVENT_TYPE.to_string(),
        recipient_account_id: Some(s(t.key.account)),
        shared_event_id: shared.to_string(),
        insight_details: InsightDetails {
            state,
            event_source: s(t.key.event_source),
            event_name: s(t.key.event_name),
            insight_type,
            error_code: t.key.error_code.map(s),
            source_event_category: Some("Management".to_string()),
            insight_context: InsightContext {
                statistics: Statistics {
                    baseline: Average {
                        average: round_average(t.baseline.average),
                    },
                    insight: Average {
                        average: round_average(
                            t.insight_calls as f64 / t.insight_minutes.max(1) as f64,
                        ),
                    },
                    insight_duration: Some(t.insight_minutes),
                    baseline_duration: Some(u64::from(t.baseline.minutes)),
                },
                attributions: Some(attributions),
            },
        },
        event_category: EVENT_CATEGORY.to_string(),
    };
    EmittedInsight {
        delivery_minute: t.decided_minute + 1,
        account: s(t.key.account),
        region: s(t.key.region),
        record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use crate::record::parse_log;
    use crate::time::parse_event_minute;

    const T0: &str = "2024-03-01T00:00:00Z";

    fn record(
        minute: i64,
        second: i64,
        name: &str,
        read_only: bool,
        user: &str,
        error: Option<&str>,
        id: u64,
    ) -> String {
        let t = crate::time::minute_time(minute) + chrono::Duration::seconds(second);
        let error = error
            .map(|e| format!(r#","errorCode":"{e}""#))
            .unwrap_or_default();
        format!(
            r#"{{"eventTime":"{}","eventSource":"iam.amazonaws.com","eventName":"{name}","awsRegion":"us-east-1","recipientAccountId":"111122223333","managementEvent":true,"readOnly":{read_only},"eventID":"00000000-0000-4000-8000-{id:012x}","userAgent":"ua","userIdentity":{{"arn":"arn:aws:iam::111122223333:user/{user}"}}{error}}}"#,
            t.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }

    /// Runs records (sorted into 5-minute files) through an engine.
    fn run(records: Vec<(i64, String)>) -> (Vec<EmittedInsight>, Engine) {
        run_with(DetectorConfig::default(), records)
    }

    fn run_with(
        config: DetectorConfig,
        records: Vec<(i64, String)>,
    ) -> (Vec<EmittedInsight>, Engine) {
        run_engine(Engine::new(config).unwrap(), records)
    }

    fn run_engine(engine: Engine, records: Vec<(i64, String)>) -> (Vec<EmittedInsight>, Engine) {
        let (out, engine) = run_engine_by_file(engine, records);
        (out.into_iter().map(|o| o.1).collect(), engine)
    }

    /// Like [`run_engine`], each record with the delivery minute of the file whose ingest
    /// emitted it (`i64::MAX` for the end of input).
    fn run_engine_by_file(
        mut engine: Engine,
        mut records: Vec<(i64, String)>,
    ) -> (Vec<(i64, EmittedInsight)>, Engine) {
        records.sort_by_key(|r| r.0);
        let mut out = Vec::new();
        let mut i = 0;
        while i < records.len() {
            let file_minute = records[i].0 - records[i].0.rem_euclid(5);
            let mut b = BatchBuilder::new();
            let mut json = String::from("[");
            while i < records.len() && records[i].0 < file_minute + 5 {
                if json.len() > 1 {
                    json.push(',');
                }
                json.push_str(&records[i].1);
                i += 1;
            }
            json.push(']');
            parse_log(json.as_bytes(), |r| b.push(&r));
            let delivered = file_minute + 5;
            let emitted = engine.ingest(&b.finish(), Some(delivered));
            out.extend(emitted.into_iter().map(|e| (delivered, e)));
        }
        out.extend(engine.finish().into_iter().map(|e| (i64::MAX, e)));
        (out, engine)
    }

    fn background(t0: i64, days: i64) -> Vec<(i64, String)> {
        // A sparse write API called a few times a day, and a read API called every minute.
        let mut v = Vec::new();
        let mut id = 0;
        for m in (t0..t0 + days * 1440).step_by(1) {
            id += 1;
            v.push((m, record(m, 7, "ListUsers", true, "reader", None, id)));
            if m % 433 == 0 {
                id += 1;
                v.push((m, record(m, 3, "CreateAccessKey", false, "admin", None, id)));
            }
        }
        v
    }

    #[test]
    fn the_series_tap_counts_every_write_call_by_minute_and_judges_each_hour() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 3);
        // A late call: its file comes long after its minute closed.
        let late_minute = t0 + 1440 + 5;
        records.push((
            t0 + 2 * 1440,
            record(
                late_minute,
                1,
                "CreateAccessKey",
                false,
                "late",
                None,
                9_999_999,
            ),
        ));
        let mut expected = std::collections::BTreeMap::new();
        for m in (t0..t0 + 3 * 1440).filter(|m| m % 433 == 0) {
            *expected.entry(m).or_insert(0u32) += 1;
        }
        *expected.entry(late_minute).or_insert(0) += 1;
        let mut engine = Engine::new(DetectorConfig::default()).unwrap();
        engine.enable_series();
        let (_, mut engine) = run_engine(engine, records);
        let batch = engine.take_series();
        let mut got = std::collections::BTreeMap::new();
        for &(k, minute, calls) in &batch.counts {
            assert_eq!(batch.keys[k as usize].event_name, "CreateAccessKey");
            *got.entry(minute).or_insert(0u32) += calls;
        }
        for &(k, minute) in &batch.late {
            assert_eq!(batch.keys[k as usize].event_name, "CreateAccessKey");
            *got.entry(minute).or_insert(0) += 1;
        }
        assert_eq!(
            got, expected,
            "read-only ListUsers is not a series; every write call is"
        );
        // Open minutes were reported as they filled, never above the count they closed with.
        assert!(!batch.open.is_empty());
        for &(_, minute, calls) in &batch.open {
            assert!(calls <= got[&minute], "minute {minute}: {calls} so far");
        }
        assert_eq!(batch.late, vec![(0, late_minute)]);
        // Judged once per hour with calls, after the warm-up.
        let hours: Vec<i64> = batch.judgements.iter().map(|j| j.1).collect();
        let mut unique = hours.clone();
        unique.dedup();
        assert_eq!(hours, unique);
        assert!(!hours.is_empty());
        for (_, hour, j) in &batch.judgements {
            assert!(expected.keys().any(|m| m.div_euclid(60) == *hour));
            let upper = j.upper(1).unwrap();
            assert!(upper >= 2 && upper as f64 >= j.expected(1).unwrap());
        }
        assert!(engine.take_series().is_empty(), "taken once");
    }

    #[test]
    fn the_series_tap_changes_no_insight() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 10);
        // Bursts that begin with minutes too thin to test, days apart at other times of day.
        for (n, start) in [(5, 600i64), (7, 1000), (9, 1400)].into_iter().enumerate() {
            let burst = t0 + start.0 * 1440 + start.1;
            for k in 0..25u64 {
                let m = burst + (k as i64 * 8) / 25 + 2;
                records.push((
                    m,
                    record(m, 30, "CreateAccessKey", false, "mallory", None, {
                        1_000_000 + 100 * n as u64 + k
                    }),
                ));
            }
            records.push((
                burst,
                record(
                    burst,
                    30,
                    "CreateAccessKey",
                    false,
                    "x",
                    None,
                    1_500_000 + n as u64,
                ),
            ));
        }
        let (plain, _) = run_engine(
            Engine::new(DetectorConfig::default()).unwrap(),
            records.clone(),
        );
        let mut tapped = Engine::new(DetectorConfig::default()).unwrap();
        tapped.enable_series();
        let (with_tap, mut tapped) = run_engine(tapped, records);
        assert!(!tapped.take_series().judgements.is_empty());
        assert!(
            plain
                .iter()
                .filter(|e| e.record.insight_details.state == InsightState::Start)
                .count()
                >= 3
        );
        assert_eq!(plain, with_tap);
    }

    #[test]
    fn burst_on_a_sparse_write_api_is_one_insight() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 9);
        let burst = t0 + 8 * 1440 + 600;
        for k in 0..25u64 {
            let m = burst + (k as i64 * 8) / 25;
            records.push((
                m,
                record(
                    m,
                    30,
                    "CreateAccessKey",
                    false,
                    "mallory",
                    None,
                    1_000_000 + k,
                ),
            ));
        }
        // A read-only spike must stay silent.
        for k in 0..300u64 {
            let m = burst + 100 + (k as i64) / 30;
            records.push((
                m,
                record(m, 40, "ListUsers", true, "reader", None, 2_000_000 + k),
            ));
        }
        let (out, engine) = run(records);
        let names: Vec<_> = out
            .iter()
            .map(|e| {
                (
                    e.record.insight_details.event_name.as_str(),
                    e.record.insight_details.state,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("CreateAccessKey", InsightState::Start),
                ("CreateAccessKey", InsightState::End)
            ],
            "{out:#?}"
        );
        let start = &out[0].record;
        let end = &out[1].record;
        assert_eq!(start.shared_event_id, end.shared_event_id);
        assert_ne!(start.event_id, end.event_id);
        assert_eq!(start.event_time, format_minute(burst));
        assert_eq!(end.event_time, format_minute(burst + 8));
        let stats = &end.insight_details.insight_context.statistics;
        assert_eq!(stats.insight_duration, Some(8));
        assert_eq!(stats.insight.average, 25.0 / 8.0);
        assert!(stats.baseline.average < 0.01);
        assert!(stats.baseline_duration.unwrap() >= 10080);
        let attrs = end
            .insight_details
            .insight_context
            .attributions
            .as_ref()
            .unwrap();
        assert_eq!(attrs[0].attribute, "userIdentityArn");
        assert_eq!(
            attrs[0].insight[0].value,
            "arn:aws:iam::111122223333:user/mallory"
        );
        assert_eq!(
            attrs[0].baseline[0].value,
            "arn:aws:iam::111122223333:user/admin"
        );
        assert_eq!(attrs[2].insight[0].value, "null");
        assert!(engine.open_insights().is_empty());
    }

    #[test]
    fn no_insight_during_warmup() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 3);
        for k in 0..25u64 {
            let m = t0 + 600 + (k as i64) / 5;
            records.push((
                m,
                record(
                    m,
                    30,
                    "CreateAccessKey",
                    false,
                    "mallory",
                    None,
                    1_000_000 + k,
                ),
            ));
        }
        let (out, _) = run(records);
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn error_rate_burst_on_a_read_api() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 9);
        let burst = t0 + 8 * 1440 + 300;
        for k in 0..150u64 {
            let m = burst + (k as i64) / 15;
            records.push((
                m,
                record(
                    m,
                    50,
                    "GetUser",
                    true,
                    "mallory",
                    Some("AccessDenied"),
                    3_000_000 + k,
                ),
            ));
        }
        let (out, _) = run(records);
        assert_eq!(out.len(), 2, "{out:#?}");
        let d = &out[0].record.insight_details;
        assert_eq!(d.insight_type, InsightType::ApiErrorRateInsight);
        assert_eq!(d.error_code.as_deref(), Some("AccessDenied"));
        let attrs = d.insight_context.attributions.as_ref().unwrap();
        assert_eq!(attrs.len(), 2, "error rate has no errorCode attribution");
        assert!(attrs[0].baseline.is_empty());
    }

    fn lambda_record(minute: i64, second: i64, id: u64) -> String {
        record(
            minute,
            second,
            "UpdateFunctionCode",
            false,
            "deployer",
            None,
            id,
        )
    }

    #[test]
    fn nightly_deploy_is_learnt_and_the_same_burst_at_2pm_is_not() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 12);
        let mut id = 5_000_000;
        // Every night at 02:00: 40 calls in 5 minutes.
        for day in 0..12 {
            for k in 0..40 {
                id += 1;
                let m = t0 + day * 1440 + 120 + k / 8;
                records.push((m, lambda_record(m, (k % 8) * 7, id)));
            }
        }
        // The same burst at 14:00 on day 10.
        let rogue = t0 + 10 * 1440 + 14 * 60;
        for k in 0..40 {
            id += 1;
            let m = rogue + k / 8;
            records.push((m, lambda_record(m, (k % 8) * 7, id)));
        }
        let (out, _) = run(records);
        let starts: Vec<String> = out
            .iter()
            .filter(|e| e.record.insight_details.state == InsightState::Start)
            .map(|e| e.record.event_time.clone())
            .collect();
        let after_a_week = format_minute(t0 + 7 * 1440);
        let late: Vec<&String> = starts.iter().filter(|t| **t >= after_a_week).collect();
        assert_eq!(late, [&format_minute(rogue)], "all starts: {starts:?}");
    }

    #[test]
    fn a_new_daily_job_alarms_at_most_twice_then_is_learnt() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 12);
        let mut id = 7_000_000;
        for day in 3..12 {
            for k in 0..30 {
                id += 1;
                let m = t0 + day * 1440 + 180 + k / 10;
                records.push((m, lambda_record(m, (k % 10) * 5, id)));
            }
        }
        let (out, _) = run(records);
        let starts: Vec<String> = out
            .iter()
            .filter(|e| e.record.insight_details.state == InsightState::Start)
            .map(|e| e.record.event_time.clone())
            .collect();
        assert!(!starts.is_empty() && starts.len() <= 2, "{starts:?}");
        assert!(
            starts.iter().all(|t| *t < format_minute(t0 + 6 * 1440)),
            "{starts:?}"
        );
    }

    #[test]
    fn sensitive_api_with_no_history_called_twice_alarms_once_does_not() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 4);
        let first = t0 + 3 * 1440;
        records.push((
            first,
            record(
                first,
                10,
                "CreateLoginProfile",
                false,
                "mallory",
                None,
                8_000_001,
            ),
        ));
        let second = t0 + 3 * 1440 + 600;
        for k in 0..2 {
            records.push((
                second,
                record(
                    second,
                    10 + k,
                    "DeactivateMFADevice",
                    false,
                    "mallory",
                    None,
                    8_000_010 + k as u64,
                ),
            ));
        }
        // A non-sensitive API called twice is not enough.
        records.push((
            second,
            record(second, 20, "TagUser", false, "bob", None, 8_000_020),
        ));
        records.push((
            second,
            record(second, 21, "TagUser", false, "bob", None, 8_000_021),
        ));
        let (out, _) = run(records);
        let names: Vec<_> = out
            .iter()
            .map(|e| e.record.insight_details.event_name.as_str())
            .collect();
        assert_eq!(names, ["DeactivateMFADevice", "DeactivateMFADevice"]);
    }

    #[test]
    fn suppressions_silence_keys_and_principals() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 9);
        let burst = t0 + 8 * 1440;
        for k in 0..25u64 {
            let m = burst + (k as i64) / 5;
            records.push((
                m,
                record(
                    m,
                    30,
                    "CreateAccessKey",
                    false,
                    "terraform",
                    None,
                    1_000_000 + k,
                ),
            ));
            records.push((
                m,
                record(m, 31, "CreateGroup", false, "mallory", None, 2_000_000 + k),
            ));
        }
        let mut config = DetectorConfig::default();
        config
            .ignore_principals
            .push(crate::policy::PrincipalSuppression {
                principal: "arn:aws:iam::*:user/terraform".into(),
                ..Default::default()
            });
        config.overrides.push(crate::policy::Override {
            event_name: Some("Create*Group".into()),
            suppress: true,
            ..Default::default()
        });
        let (out, engine) = run_with(config, records);
        assert!(out.is_empty(), "{out:#?}");
        assert_eq!(engine.counters().ignored_principal, 25);
    }

    #[test]
    fn an_early_start_comes_with_the_file_that_holds_the_burst() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 9);
        let burst = t0 + 8 * 1440 + 600;
        for k in 0..25u64 {
            let m = burst + (k as i64 * 8) / 25;
            let r = record(
                m,
                30,
                "CreateAccessKey",
                false,
                "mallory",
                None,
                1_000_000 + k,
            );
            records.push((m, r));
        }
        let (early, _) = run_engine_by_file(
            Engine::new(DetectorConfig::default()).unwrap(),
            records.clone(),
        );
        let config = DetectorConfig {
            early_starts: false,
            ..DetectorConfig::default()
        };
        let (closing, _) = run_engine_by_file(Engine::new(config).unwrap(), records);
        let start = |out: &[(i64, EmittedInsight)]| {
            out.iter()
                .find(|e| e.1.record.insight_details.state == InsightState::Start)
                .cloned()
                .unwrap()
        };
        let ((a_file, a), (b_file, b)) = (start(&early), start(&closing));
        // The same Insight: same key, first minute and shared id; the End is the same record.
        assert_eq!(a.record.shared_event_id, b.record.shared_event_id);
        assert_eq!(a.record.event_time, format_minute(burst));
        assert_eq!(a.record.event_time, b.record.event_time);
        let end = |out: &[(i64, EmittedInsight)]| {
            out.iter()
                .find(|e| e.1.record.insight_details.state == InsightState::End)
                .map(|e| e.1.record.clone())
        };
        assert_eq!(end(&early), end(&closing));
        assert!(end(&early).is_some());
        // Decided by the file holding the burst's first minutes (delivered at most 5 minutes
        // after them), not once the minute closes, 15 minutes of event time later.
        assert!(
            a_file <= burst + 5,
            "early: file of minute +{}",
            a_file - burst
        );
        assert!(
            b_file >= burst + 15,
            "closing: file of minute +{}",
            b_file - burst
        );
        assert!(a.delivery_minute <= a_file);
        assert_eq!(early.len(), closing.len());
    }

    #[test]
    fn late_burst_is_detected_when_it_arrives() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 9);
        let burst = t0 + 8 * 1440 + 300;
        for k in 0..12u64 {
            let m = burst + (k as i64) / 2;
            // delivered 30 minutes late: past the 15-minute lateness
            records.push((
                m + 30,
                record(m, 30, "CreateUser", false, "mallory", None, 9_000_000 + k),
            ));
        }
        let (out, engine) = run(records);
        assert_eq!(engine.counters().late, 12);
        let starts: Vec<_> = out
            .iter()
            .filter(|e| e.record.insight_details.state == InsightState::Start)
            .map(|e| {
                (
                    e.record.insight_details.event_name.clone(),
                    e.record.event_time.clone(),
                    e.delivery_minute - burst,
                )
            })
            .collect();
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert_eq!(starts[0].0, "CreateUser");
        assert_eq!(starts[0].1, format_minute(burst));
        assert!(
            out.iter()
                .any(|e| e.record.insight_details.state == InsightState::End)
        );
    }

    #[test]
    fn hourly_job_stays_silent() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 9);
        let mut id = 6_000_000;
        for h in 0..9 * 24 {
            for k in 0..20 {
                id += 1;
                let m = t0 + h * 60 + 30;
                records.push((m, lambda_record(m, k * 2, id)));
            }
        }
        let (out, _) = run(records);
        assert!(
            out.is_empty(),
            "{:?}",
            out.iter().map(|e| &e.record.event_time).collect::<Vec<_>>()
        );
    }

    #[test]
    fn replay_is_deterministic() {
        let t0 = parse_event_minute(T0).unwrap();
        let mut records = background(t0, 9);
        for k in 0..10u64 {
            let m = t0 + 8 * 1440 + (k as i64);
            records.push((
                m,
                record(
                    m,
                    30,
                    "CreateAccessKey",
                    false,
                    "mallory",
                    None,
                    1_000_000 + k,
                ),
            ));
        }
        let (a, _) = run(records.clone());
        let (b, _) = run(records);
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }

    #[test]
    fn records_millennia_apart_cost_their_records_not_their_span() {
        // Finding 3: a loose file with one record in year 0001 and one in 9999 aborted on a
        // 134 GB allocation at every start. Unbounded here on purpose (the service also bounds
        // record times: see `batch::TimeBounds`).
        let mut engine = Engine::new(DetectorConfig::default()).unwrap();
        let mut out = Vec::new();
        for (i, t) in [
            "0001-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:00Z",
        ]
        .into_iter()
        .enumerate()
        {
            let json = record(0, 0, "CreateUser", false, "a", None, i as u64 + 1)
                .replace("1970-01-01T00:00:00Z", t);
            let mut b = BatchBuilder::new();
            parse_log(json.as_bytes(), |r| b.push(&r));
            let b = b.finish();
            assert_eq!(b.events.len(), 1);
            out.extend(engine.ingest(&b, None));
        }
        out.extend(engine.finish());
        assert!(out.is_empty(), "{out:#?}");
        assert_eq!(engine.key_count(), 1);
    }

    #[test]
    fn time_bounds_follow_the_settings() {
        let config = DetectorConfig {
            max_event_age_minutes: 120,
            max_clock_skew_minutes: 5,
            ..DetectorConfig::default()
        };
        let engine = Engine::new(config).unwrap();
        let b = engine.config().time_bounds(Some(30_000_000), 40_000_000);
        assert_eq!((b.earliest, b.latest), (30_000_000 - 120, 30_000_000 + 5));
        let loose = engine.config().time_bounds(None, 40_000_000);
        assert_eq!(
            (loose.earliest, loose.latest),
            (
                crate::batch::TimeBounds::CLOUDTRAIL_EPOCH_MINUTE,
                40_000_005
            )
        );
    }
}
