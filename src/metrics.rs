//! Every metric of the service, defined once, and the typed events that move them.
//!
//! The registry belongs to the service (not the `prometheus` crate's global one). Each
//! [`Event`] is logged and counted in [`Metrics::emit`], in one place, so the log and the
//! metrics cannot drift apart. No label takes its values from the data: every label value is a
//! fixed word listed here (results, kinds, insight types), so the number of series is the same
//! whatever the input (`tests/metrics.rs` checks it with 100,000 distinct `eventName`s).
//!
//! Exposition: the Prometheus text format (`GET /metrics`, served by the `ops` module); names and units
//! by Prometheus conventions (`_total` counters, `_seconds`, `_bytes`, Unix `_timestamp_seconds`).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::source::{SourceError, SourceErrorKind};

/// What became of a log file (the `result` label of `trailsight_files_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileResult {
    /// Read whole.
    Read,
    /// Read in part (cut at the size cap, a truncated gzip, a broken record): the records
    /// before the damage were kept.
    Partial,
    /// Nothing could be used (unreadable, not a CloudTrail log file).
    Unreadable,
}

impl FileResult {
    /// Every result, in label order.
    pub const ALL: [FileResult; 3] = [
        FileResult::Read,
        FileResult::Partial,
        FileResult::Unreadable,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            FileResult::Read => "read",
            FileResult::Partial => "partial",
            FileResult::Unreadable => "unreadable",
        }
    }
}

/// What became of a record (the `result` label of `trailsight_records_total`): one result per
/// record, so the results add up to the records read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordResult {
    /// Counted into an open minute of a call-rate and/or error-rate key.
    Counted,
    /// Counted into a minute already closed.
    Late,
    /// Its `eventID` was counted already.
    Duplicate,
    /// Its principal is suppressed by the settings.
    Ignored,
    /// Its keys would be new to an account and Region at `max_keys_per_region`.
    KeyOverflow,
    /// Not an input of any rate: read-only, data or other events (or a rate switched off).
    NotCounted,
    /// Malformed: a required field missing or unreadable, an invalid field, `eventTime` out of bounds.
    Skipped,
}

impl RecordResult {
    /// Every result, in label order (the index of each in the count arrays).
    pub const ALL: [RecordResult; 7] = [
        RecordResult::Counted,
        RecordResult::Late,
        RecordResult::Duplicate,
        RecordResult::Ignored,
        RecordResult::KeyOverflow,
        RecordResult::NotCounted,
        RecordResult::Skipped,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RecordResult::Counted => "counted",
            RecordResult::Late => "late",
            RecordResult::Duplicate => "duplicate",
            RecordResult::Ignored => "ignored",
            RecordResult::KeyOverflow => "key_overflow",
            RecordResult::NotCounted => "not_counted",
            RecordResult::Skipped => "skipped",
        }
    }
}

/// Prefix of every service metric (process metrics keep their standard `process_` names).
pub const NAMESPACE: &str = "trailsight";

/// `insightType` label values, in the order of [`InsightCounts`] fields.
pub const INSIGHT_TYPES: [&str; 2] = ["ApiCallRateInsight", "ApiErrorRateInsight"];

/// Routes served (the `route` label of the HTTP metrics; anything else is `unmatched`).
pub const HTTP_ROUTES: [&str; 10] = [
    "/metrics",
    "/healthz",
    "/readyz",
    "/v1/insights",
    "/v1/insights/{event_id}",
    "/v1/insights/shared/{shared_event_id}",
    "/v1/stream",
    "/v1/keys",
    "/openapi.json",
    "unmatched",
];

/// Sink error kinds (`kind` label of `trailsight_sink_errors_total`).
pub const SINK_ERROR_KINDS: [&str; 2] = ["refused", "unavailable"];

/// Counts per insight type: `[ApiCallRateInsight, ApiErrorRateInsight]`.
pub type InsightCounts = [u64; 2];

/// Something the service did, to log and count. Borrowed text comes from the logs (file keys,
/// reasons): it is logged through the escaping formatter and never becomes a label.
#[derive(Debug)]
pub enum Event<'a> {
    /// A log file went through the pipeline (or was skipped).
    File {
        /// Its key.
        key: &'a str,
        /// What became of it.
        result: FileResult,
        /// Why it was read in part or skipped.
        reason: Option<&'a str>,
        /// Compressed bytes read.
        bytes: u64,
        /// JSON bytes after gunzip.
        inflated: u64,
        /// Fetch + decode time, seconds (`None` when the fetch failed).
        seconds: Option<f64>,
        /// Seconds from its delivery time (file name) to now, when the name has one.
        lag_seconds: Option<f64>,
    },
    /// A source could not be read for a file (`key`) or listed (`key` = the source).
    SourceFailed {
        /// The file key or source URL.
        key: &'a str,
        /// The error.
        error: &'a SourceError,
    },
    /// The records of one file, by result.
    Records(&'a [u64; RecordResult::ALL.len()]),
    /// One Insights file written to every sink.
    InsightFileWritten {
        /// Its key (content-derived: the same Insights always give the same key).
        key: &'a str,
        /// Where (paths and `s3://` URLs), one per sink.
        paths: &'a [std::path::PathBuf],
        /// `Start` records in it, by insight type.
        started: InsightCounts,
        /// `End` records in it, by insight type.
        ended: InsightCounts,
    },
    /// `Start` records written, decided by the records of a log file read `seconds` before.
    StartsWritten {
        /// `Start` records.
        starts: u64,
        /// Seconds from the file's read to the Starts written.
        seconds: f64,
    },
    /// A sink refused one Insights file for its own content (it is skipped; the rest go on).
    SinkRefused {
        /// The key, escaped.
        key: &'a str,
        /// Records in it.
        records: usize,
        /// Why.
        reason: &'a str,
    },
    /// A sink is unavailable (the run goes back to the last checkpoint and retries).
    SinkUnavailable {
        /// Why.
        reason: &'a str,
    },
    /// The engine after a file: gauges, and minutes closed since the previous event.
    Engine {
        /// Rate keys tracked.
        keys: usize,
        /// Interned strings.
        symbols: usize,
        /// Insights open, by insight type.
        open: InsightCounts,
        /// Every minute before this one is closed (minutes since the Unix epoch).
        watermark_minute: Option<i64>,
        /// Minutes closed since the previous event.
        minutes_closed: u64,
    },
    /// A poll listed every source.
    SourcesReached,
    /// One poll of every source ended.
    Poll {
        /// `None` when every source was reached and every file went through; else why not.
        failure: Option<&'a str>,
        /// Its duration, seconds.
        seconds: f64,
    },
    /// A checkpoint was written (`Ok(bytes)`) or failed.
    Checkpoint {
        /// Bytes written, or why it failed.
        result: Result<u64, &'a str>,
        /// Encode + write + fsync time, seconds.
        seconds: f64,
    },
    /// An HTTP request was answered (operators' and API routes).
    HttpRequest {
        /// The route that matched (`/v1/insights/{event_id}`), or `unmatched`: never the raw path.
        route: &'a str,
        /// The status code.
        status: u16,
        /// Time to the response head, seconds (for the stream: to its start).
        seconds: f64,
    },
    /// A webhook delivery attempt ended (delivered: a 2xx answer).
    WebhookAttempt {
        /// True when delivered.
        delivered: bool,
    },
    /// Readiness changed: the state is loaded and the last poll reached every source, or not.
    Ready(bool),
}

/// The service's metrics and their registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    ready: IntGauge,
    files: IntCounterVec,
    records: IntCounterVec,
    read_bytes: IntCounter,
    inflated_bytes: IntCounter,
    keys_tracked: IntGauge,
    symbols_interned: IntGauge,
    minutes_closed: IntCounter,
    insights_started: IntCounterVec,
    insights_ended: IntCounterVec,
    insights_open: IntGaugeVec,
    insight_files_written: IntCounter,
    watermark: IntGauge,
    ingest_lag: Gauge,
    last_file_processed: Gauge,
    polls: IntCounterVec,
    last_successful_poll: Gauge,
    poll_duration: Histogram,
    file_duration: Histogram,
    start_delay: Histogram,
    source_errors: IntCounterVec,
    sink_errors: IntCounterVec,
    checkpoint_duration: Histogram,
    checkpoint_bytes: IntGauge,
    checkpoint_last_success: Gauge,
    checkpoint_errors: IntCounter,
    http_requests: IntCounterVec,
    http_duration: prometheus::HistogramVec,
    webhook_attempts: IntCounterVec,
    /// Keys of the Insights files counted lately (bounded), to count a rewrite once.
    written: std::sync::Arc<std::sync::Mutex<RecentKeys>>,
}

/// The last [`RecentKeys::CAPACITY`] keys seen, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentKeys {
    order: std::collections::VecDeque<String>,
    set: std::collections::HashSet<String>,
}

impl RecentKeys {
    /// Insights files remembered: far more than a rollback re-writes (files since the last checkpoint).
    const CAPACITY: usize = 100_000;

    /// True when `key` was not among the recent keys (and remembers it).
    fn insert(&mut self, key: &str) -> bool {
        if self.set.contains(key) {
            return false;
        }
        if self.order.len() >= Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(key.to_string());
        self.set.insert(key.to_string());
        true
    }
}

/// Why the metrics could not be set up (a name or label clash: a bug, found by the tests).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn hist(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .buckets(buckets)
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    /// Every metric, registered in a new registry with the process collector, every fixed label
    /// value present from the start (at zero).
    ///
    /// Returns `Err(MetricsError)` on a name clash (a bug).
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let r = &registry;
        fn reg<T: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: T,
        ) -> Result<T, prometheus::Error> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let build_info = reg(
            r,
            IntGaugeVec::new(
                opts("build_info", "trailsight build; always 1."),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let latency = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        let m = Metrics {
            ready: reg(
                r,
                IntGauge::with_opts(opts(
                    "ready",
                    "1 when the state is loaded and the last poll reached every source, else 0.",
                ))?,
            )?,
            files: reg(
                r,
                IntCounterVec::new(opts("files_total", "Log files by result."), &["result"])?,
            )?,
            records: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "records_total",
                        "Records read, by result (a partition: the results add up to all records read).",
                    ),
                    &["result"],
                )?,
            )?,
            read_bytes: reg(
                r,
                IntCounter::with_opts(opts(
                    "read_bytes_total",
                    "Compressed bytes of log files read.",
                ))?,
            )?,
            inflated_bytes: reg(
                r,
                IntCounter::with_opts(opts(
                    "inflated_bytes_total",
                    "JSON bytes of log files after gunzip.",
                ))?,
            )?,
            keys_tracked: reg(
                r,
                IntGauge::with_opts(opts(
                    "keys_tracked",
                    "Rate keys tracked (call-rate and error-rate keys).",
                ))?,
            )?,
            symbols_interned: reg(
                r,
                IntGauge::with_opts(opts(
                    "symbols_interned",
                    "Interned strings held (accounts, Regions, API names, principals, user agents).",
                ))?,
            )?,
            minutes_closed: reg(
                r,
                IntCounter::with_opts(opts(
                    "event_time_closed_seconds_total",
                    "Event time closed by the watermark (UTC minutes closed, times 60).",
                ))?,
            )?,
            insights_started: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "insights_started_total",
                        "Insights started (Start records written), by insight type.",
                    ),
                    &["insight_type"],
                )?,
            )?,
            insights_ended: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "insights_ended_total",
                        "Insights ended (End records written), by insight type.",
                    ),
                    &["insight_type"],
                )?,
            )?,
            insights_open: reg(
                r,
                IntGaugeVec::new(
                    opts("insights_open", "Insights without an End, by insight type."),
                    &["insight_type"],
                )?,
            )?,
            insight_files_written: reg(
                r,
                IntCounter::with_opts(opts(
                    "insight_files_written_total",
                    "Distinct Insights files written to the sinks (a rewrite of the same file counts once).",
                ))?,
            )?,
            watermark: reg(
                r,
                IntGauge::with_opts(opts(
                    "event_time_watermark_timestamp_seconds",
                    "Event-time watermark (Unix time): every minute before it is closed.",
                ))?,
            )?,
            ingest_lag: reg(
                r,
                Gauge::with_opts(opts(
                    "ingest_lag_seconds",
                    "Seconds from the delivery time of the last log file processed to its processing.",
                ))?,
            )?,
            last_file_processed: reg(
                r,
                Gauge::with_opts(opts(
                    "last_file_processed_timestamp_seconds",
                    "Unix time the last log file was processed.",
                ))?,
            )?,
            polls: reg(
                r,
                IntCounterVec::new(
                    opts("polls_total", "Polls of the sources, by result."),
                    &["result"],
                )?,
            )?,
            last_successful_poll: reg(
                r,
                Gauge::with_opts(opts(
                    "last_successful_poll_timestamp_seconds",
                    "Unix time of the last poll that listed every source.",
                ))?,
            )?,
            poll_duration: reg(
                r,
                Histogram::with_opts(hist(
                    "poll_duration_seconds",
                    "Duration of one poll: list, read, detect, write, checkpoint.",
                    latency.clone(),
                ))?,
            )?,
            file_duration: reg(
                r,
                Histogram::with_opts(hist(
                    "file_processing_duration_seconds",
                    "Duration of one log file's fetch and decode.",
                    latency.clone(),
                ))?,
            )?,
            start_delay: reg(
                r,
                Histogram::with_opts(hist(
                    "insight_start_delay_seconds",
                    "From reading the log file whose records decided an Insight's Start to that Start written to every sink.",
                    latency.clone(),
                ))?,
            )?,
            source_errors: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "source_errors_total",
                        "Source errors (listing or reading), by kind.",
                    ),
                    &["kind"],
                )?,
            )?,
            sink_errors: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "sink_errors_total",
                        "Sink errors by kind: refused (this Insights file's content; skipped), unavailable (outage; retried).",
                    ),
                    &["kind"],
                )?,
            )?,
            checkpoint_duration: reg(
                r,
                Histogram::with_opts(hist(
                    "checkpoint_duration_seconds",
                    "Encode, write and fsync of one checkpoint.",
                    latency,
                ))?,
            )?,
            checkpoint_bytes: reg(
                r,
                IntGauge::with_opts(opts(
                    "checkpoint_bytes",
                    "Size of the last checkpoint written.",
                ))?,
            )?,
            checkpoint_last_success: reg(
                r,
                Gauge::with_opts(opts(
                    "checkpoint_last_success_timestamp_seconds",
                    "Unix time of the last checkpoint written.",
                ))?,
            )?,
            checkpoint_errors: reg(
                r,
                IntCounter::with_opts(opts(
                    "checkpoint_errors_total",
                    "Checkpoints that could not be written.",
                ))?,
            )?,
            http_requests: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "http_requests_total",
                        "HTTP requests answered, by matched route and status code.",
                    ),
                    &["route", "status"],
                )?,
            )?,
            http_duration: reg(
                r,
                prometheus::HistogramVec::new(
                    hist(
                        "http_request_duration_seconds",
                        "Time to the response head, by matched route.",
                        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
                    ),
                    &["route"],
                )?,
            )?,
            webhook_attempts: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "webhook_attempts_total",
                        "Webhook delivery attempts by result: delivered (2xx) or failed (retried with backoff).",
                    ),
                    &["result"],
                )?,
            )?,
            registry,
            written: Default::default(),
        };
        for result in ["delivered", "failed"] {
            m.webhook_attempts.with_label_values(&[result]);
        }
        for route in HTTP_ROUTES {
            m.http_requests.with_label_values(&[route, "200"]);
            m.http_duration.with_label_values(&[route]);
        }
        for r in FileResult::ALL {
            m.files.with_label_values(&[r.label()]);
        }
        for r in RecordResult::ALL {
            m.records.with_label_values(&[r.label()]);
        }
        for t in INSIGHT_TYPES {
            m.insights_started.with_label_values(&[t]);
            m.insights_ended.with_label_values(&[t]);
            m.insights_open.with_label_values(&[t]);
        }
        for result in ["ok", "failed"] {
            m.polls.with_label_values(&[result]);
        }
        for k in SourceErrorKind::ALL {
            m.source_errors.with_label_values(&[k.label()]);
        }
        for k in SINK_ERROR_KINDS {
            m.sink_errors.with_label_values(&[k]);
        }
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    fn first_write(&self, key: &str) -> bool {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key)
    }

    /// Logs and counts one event.
    pub fn emit(&self, event: Event<'_>) {
        match event {
            Event::File {
                key,
                result,
                reason,
                bytes,
                inflated,
                seconds,
                lag_seconds,
            } => {
                match (result, reason) {
                    (FileResult::Read, _) | (_, None) => {
                        tracing::debug!(file = %key, result = result.label(), bytes, "log file")
                    }
                    (_, Some(reason)) => tracing::warn!(
                        file = %key, result = result.label(), reason = %reason,
                        "log file not fully read"
                    ),
                }
                self.files.with_label_values(&[result.label()]).inc();
                self.read_bytes.inc_by(bytes);
                self.inflated_bytes.inc_by(inflated);
                if let Some(seconds) = seconds {
                    self.file_duration.observe(seconds);
                }
                if let Some(lag) = lag_seconds {
                    self.ingest_lag.set(lag);
                }
                self.last_file_processed.set(now_seconds());
            }
            Event::SourceFailed { key, error } => {
                tracing::warn!(source = %key, kind = error.kind.label(), error = %error, "source error");
                self.source_errors
                    .with_label_values(&[error.kind.label()])
                    .inc();
            }
            Event::Records(counts) => {
                for (r, &n) in RecordResult::ALL.iter().zip(counts) {
                    if n > 0 {
                        self.records.with_label_values(&[r.label()]).inc_by(n);
                    }
                }
            }
            Event::InsightFileWritten {
                key,
                paths,
                started,
                ended,
            } => {
                for path in paths {
                    tracing::info!(file = %path.display(), started = started[0] + started[1], ended = ended[0] + ended[1], "Insights file written");
                }
                // A file rewritten after a rollback to the checkpoint (same content, same key)
                // is counted once, so a re-read never raises the Insights counters (or the pager).
                if self.first_write(key) {
                    self.insight_files_written.inc();
                    for (i, t) in INSIGHT_TYPES.iter().enumerate() {
                        self.insights_started
                            .with_label_values(&[t])
                            .inc_by(started[i]);
                        self.insights_ended.with_label_values(&[t]).inc_by(ended[i]);
                    }
                }
            }
            Event::SinkRefused {
                key,
                records,
                reason,
            } => {
                tracing::warn!(insights = %key, records, reason = %reason, "Insights file refused for its content; skipped");
                self.sink_errors.with_label_values(&["refused"]).inc();
            }
            Event::SinkUnavailable { reason } => {
                tracing::error!(reason = %reason, "sink unavailable");
                self.sink_errors.with_label_values(&["unavailable"]).inc();
            }
            Event::Engine {
                keys,
                symbols,
                open,
                watermark_minute,
                minutes_closed,
            } => {
                self.keys_tracked
                    .set(i64::try_from(keys).unwrap_or(i64::MAX));
                self.symbols_interned
                    .set(i64::try_from(symbols).unwrap_or(i64::MAX));
                for (i, t) in INSIGHT_TYPES.iter().enumerate() {
                    self.insights_open
                        .with_label_values(&[t])
                        .set(i64::try_from(open[i]).unwrap_or(i64::MAX));
                }
                if let Some(m) = watermark_minute {
                    self.watermark.set(m.saturating_mul(60));
                }
                self.minutes_closed
                    .inc_by(minutes_closed.saturating_mul(60));
            }
            Event::StartsWritten { starts, seconds } => {
                tracing::info!(
                    starts,
                    seconds,
                    "Insight Start written after its evidence was read"
                );
                for _ in 0..starts {
                    self.start_delay.observe(seconds);
                }
            }
            Event::Poll { failure, seconds } => {
                self.poll_duration.observe(seconds);
                match failure {
                    None => {
                        tracing::debug!(seconds, "poll done");
                        self.polls.with_label_values(&["ok"]).inc();
                    }
                    Some(reason) => {
                        tracing::warn!(reason = %reason, seconds, "poll failed; retrying at the next poll");
                        self.polls.with_label_values(&["failed"]).inc();
                    }
                }
            }
            Event::Checkpoint { result, seconds } => match result {
                Ok(bytes) => {
                    tracing::info!(bytes, seconds, "checkpoint");
                    self.checkpoint_duration.observe(seconds);
                    self.checkpoint_bytes
                        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                    self.checkpoint_last_success.set(now_seconds());
                }
                Err(reason) => {
                    tracing::error!(reason = %reason, "checkpoint failed");
                    self.checkpoint_errors.inc();
                }
            },
            Event::HttpRequest {
                route,
                status,
                seconds,
            } => {
                let route = if HTTP_ROUTES.contains(&route) {
                    route
                } else {
                    "unmatched"
                };
                tracing::debug!(route, status, seconds, "HTTP request");
                self.http_requests
                    .with_label_values(&[route, &status.to_string()])
                    .inc();
                self.http_duration
                    .with_label_values(&[route])
                    .observe(seconds);
            }
            Event::WebhookAttempt { delivered } => {
                // The deliverer logs each attempt with its URL and reason.
                self.webhook_attempts
                    .with_label_values(&[if delivered { "delivered" } else { "failed" }])
                    .inc();
            }
            Event::SourcesReached => self.last_successful_poll.set(now_seconds()),
            Event::Ready(ready) => self.ready.set(i64::from(ready)),
        }
    }

    /// The metrics in the Prometheus text exposition format, with its content type.
    pub fn encode(&self) -> (String, Vec<u8>) {
        let encoder = TextEncoder::new();
        let mut body = Vec::new();
        // Encoding into a Vec fails only on a malformed metric family (a bug): the families
        // encoded before it are kept.
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut body) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        (encoder.format_type().to_string(), body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(m: &Metrics) -> String {
        String::from_utf8(m.encode().1).unwrap()
    }

    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{text}"))
    }

    #[test]
    fn an_insights_file_written_to_two_sinks_or_rewritten_counts_once() {
        let m = Metrics::new().unwrap();
        let paths = [
            std::path::PathBuf::from("/sink/a.json.gz"),
            std::path::PathBuf::from("s3://ins/a.json.gz"),
        ];
        for _ in 0..2 {
            m.emit(Event::InsightFileWritten {
                key: "AWSLogs/111122223333/CloudTrail-Insight/us-east-1/2026/11/28/a.json.gz",
                paths: &paths,
                started: [1, 0],
                ended: [0, 1],
            });
        }
        let t = exposition(&m);
        let started = "trailsight_insights_started_total{insight_type=\"ApiCallRateInsight\"}";
        let ended = "trailsight_insights_ended_total{insight_type=\"ApiErrorRateInsight\"}";
        assert_eq!(value(&t, started), 1.0);
        assert_eq!(value(&t, ended), 1.0);
        assert_eq!(value(&t, "trailsight_insight_files_written_total"), 1.0);
        m.emit(Event::InsightFileWritten {
            key: "AWSLogs/111122223333/CloudTrail-Insight/us-east-1/2026/11/28/b.json.gz",
            paths: &paths[..1],
            started: [2, 0],
            ended: [0, 0],
        });
        assert_eq!(value(&exposition(&m), started), 3.0);
    }

    #[test]
    fn every_label_value_is_there_from_the_start_and_names_follow_conventions() {
        let t = exposition(&Metrics::new().unwrap());
        for r in RecordResult::ALL {
            value(
                &t,
                &format!("trailsight_records_total{{result=\"{}\"}}", r.label()),
            );
        }
        for k in SourceErrorKind::ALL {
            value(
                &t,
                &format!("trailsight_source_errors_total{{kind=\"{}\"}}", k.label()),
            );
        }
        for line in t.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            assert!(!name.contains("minutes"), "{name}: base units only");
        }
    }
}
