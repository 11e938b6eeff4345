//! The pipeline core: log files in delivery order through decode → engine → sinks.
//!
//! Stages, one module each: [`decode`] (inflate and parse into a batch, off the async runtime),
//! the pure `trailsight-detector` engine, the [`crate::sink`]s; [`cursor`] (the newest key
//! processed per listing prefix) and [`state`] (the checkpoint: engine + cursors) make a run
//! resumable. [`run_files`] drives one run; `replay` and `serve` (in [`crate::commands`]) call it.
//!
//! Reading happens on the async runtime; inflate and parse run on the blocking
//! pool, several files at once (bounded), and their batches are handed in
//! file order to one engine thread, which also writes the Insights files.

pub mod cursor;
pub mod decode;
pub mod state;
pub mod summary;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use trailsight_detector::Engine;
use trailsight_detector::insight::InsightState;

use crate::layout::TrailLocation;
use crate::metrics::{Event, FileResult, Metrics, RecordResult};
use crate::sink::{RejectedInsights, SinkError, Sinks, build_files};
use crate::source::{MAX_FILE_BYTES, Source, SourceError, SourceErrorKind, SourceFile};
use decode::{Decoded, decode};
pub use summary::{FileProblem, MAX_RECORD_ISSUES_REPORTED, ReplaySummary, record_results};

/// Why a run stopped before its last file.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An Insights file could not be written (a sink outage).
    #[error("cannot write Insights file: {0}")]
    Sink(std::io::Error),
    /// A worker task failed.
    #[error("internal task failure: {0}")]
    Task(String),
    /// The source could not be reached (network error, timeout, 5xx after the SDK's retries,
    /// refused credentials); files from this one on were not processed. Its kind is
    /// [`SourceErrorKind::Unavailable`].
    #[error("source unavailable: {0}")]
    SourceUnavailable(SourceError),
}

struct EngineOutput {
    engine: Engine,
    written: Vec<PathBuf>,
    rejected: Vec<RejectedInsights>,
    records_by_result: [u64; RecordResult::ALL.len()],
}

/// Writes the Insights files of `emitted`; a file refused for its own content goes to `rejected`
/// and the others are still written. Returns `Err` on a sink outage.
fn write_insights(
    emitted: &[trailsight_detector::EmittedInsight],
    location_of: impl Fn(&str) -> TrailLocation,
    sinks: &Sinks,
    handle: &tokio::runtime::Handle,
    metrics: Option<&Metrics>,
    out: &mut EngineOutput,
) -> Result<(), std::io::Error> {
    let emit = |e: Event<'_>| {
        if let Some(m) = metrics {
            m.emit(e);
        }
    };
    for built in build_files(emitted, location_of) {
        let file = match built {
            Ok(file) => file,
            Err(rejected) => {
                emit(Event::SinkRefused {
                    key: &rejected.key,
                    records: rejected.records,
                    reason: &rejected.reason.to_string(),
                });
                out.rejected.push(rejected);
                continue;
            }
        };
        match sinks.write(&file, handle) {
            Ok(paths) => {
                emit(Event::InsightFileWritten {
                    key: &file.key,
                    paths: &paths,
                    started: file.started,
                    ended: file.ended,
                });
                out.written.extend(paths);
            }
            Err(SinkError::Rejected(reason)) => {
                let rejected = RejectedInsights {
                    key: crate::layout::shown(&file.key),
                    records: file.records,
                    reason,
                };
                emit(Event::SinkRefused {
                    key: &rejected.key,
                    records: rejected.records,
                    reason: &rejected.reason.to_string(),
                });
                out.rejected.push(rejected);
            }
            Err(SinkError::Unavailable(e)) => {
                emit(Event::SinkUnavailable {
                    reason: &e.to_string(),
                });
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The [`Event::File`] of a file that was fetched and decoded.
fn file_event<'a>(
    file: &'a SourceFile,
    decoded: &Decoded,
    reason: Option<&'a str>,
    skipped: bool,
    seconds: f64,
) -> Event<'a> {
    let result = match (reason, skipped) {
        (None, _) => FileResult::Read,
        (Some(_), false) => FileResult::Partial,
        (Some(_), true) => FileResult::Unreadable,
    };
    let now = chrono::Utc::now().timestamp() as f64;
    Event::File {
        key: &file.key,
        result,
        reason,
        bytes: file.size,
        inflated: decoded.inflated_bytes as u64,
        seconds: Some(seconds),
        lag_seconds: file
            .info
            .delivered_minute
            .map(|m| (now - (m * 60) as f64).max(0.0)),
    }
}

/// Reports the gauges of an engine just loaded (from a checkpoint, or new): keys, Insights open,
/// watermark, before any file arrives.
pub fn report_engine_loaded(metrics: &Metrics, engine: &Engine) {
    let mut closed = engine.minutes_closed();
    report_engine(Some(metrics), engine, &mut closed);
}

/// Reports the engine's gauges after a file (and the minutes it closed since `closed_before`).
fn report_engine(metrics: Option<&Metrics>, engine: &Engine, closed_before: &mut u64) {
    let Some(m) = metrics else {
        return;
    };
    let closed = engine.minutes_closed();
    let (calls, errors) = engine.open_insight_counts();
    m.emit(Event::Engine {
        keys: engine.key_count(),
        symbols: engine.symbol_count(),
        open: [calls, errors],
        watermark_minute: engine.watermark_minute(),
        minutes_closed: closed.saturating_sub(*closed_before),
    });
    *closed_before = closed;
}

/// Bytes of log files (as listed, each counted up to [`MAX_FILE_BYTES`]) fetched or being decoded
/// at once, across all concurrent fetches: 1 GiB. A file waits for its share before it is fetched.
pub const MAX_BYTES_IN_FLIGHT: u64 = 1 << 30;

/// How much of the log files [`run_files`] holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Bytes read from one file, at most; default [`MAX_FILE_BYTES`].
    pub max_file_bytes: u64,
    /// Bytes in flight across concurrent fetches, at most; default [`MAX_BYTES_IN_FLIGHT`].
    pub max_bytes_in_flight: u64,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_file_bytes: MAX_FILE_BYTES,
            max_bytes_in_flight: MAX_BYTES_IN_FLIGHT,
        }
    }
}

/// The series tap's batches not yet in the API's store.
#[derive(Default)]
struct SeriesOut {
    pending: Vec<trailsight_detector::SeriesBatch>,
    /// The engine's watermark after the last batch taken, and the one stored last (quiet
    /// minutes still move it).
    watermark: Option<i64>,
    stored: Option<i64>,
}

/// Most tap batches (one per file) held before they are stored.
const SERIES_BATCHES_PER_WRITE: usize = 64;

/// Takes what the engine's series tap holds (nothing without the API's store).
fn take_series(sinks: &Sinks, engine: &mut Engine, out: &mut SeriesOut) {
    if sinks.api.is_none() {
        return;
    }
    let batch = engine.take_series();
    out.watermark = engine.watermark_minute();
    if !batch.is_empty() {
        out.pending.push(batch);
    }
}

/// Stores the held batches in one transaction. Called before Insights are written (so a
/// client told of an Insight finds its series), when no decoded file is waiting, and every
/// [`SERIES_BATCHES_PER_WRITE`] files. The store is a view: a failure is logged, never a
/// reason to stop.
fn flush_series(sinks: &Sinks, out: &mut SeriesOut) {
    let Some(api) = &sinks.api else {
        return;
    };
    if out.pending.is_empty() && out.watermark == out.stored {
        return;
    }
    out.stored = out.watermark;
    let batches = std::mem::take(&mut out.pending);
    if let Err(e) = api.store().insert_series_all(&batches, out.watermark) {
        tracing::warn!(error = %e, "series not stored for the API");
    }
}

/// How [`run_files`] reads and writes.
pub struct RunFiles<'a> {
    /// Where the files are read from; each file names its source by index.
    pub sources: &'a [Source],
    /// Where Insights files go.
    pub sinks: Sinks,
    /// Each account's trail location, for the Insights keys.
    pub locations: BTreeMap<String, TrailLocation>,
    /// Close every open minute at the end (a one-off replay), or keep them open (state, serve).
    pub finish: bool,
    /// Advanced by each file's compressed size.
    pub progress: Option<&'a indicatif::ProgressBar>,
    /// When set, no new file is started: the files in flight are finished, and
    /// `summary.files_consumed` says how many of the files (a prefix, in order) went through.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
    /// Bytes read per file and held at once.
    pub limits: FetchLimits,
    /// Where each file, record batch and Insights file is logged and counted (serve); `None`
    /// for a run that reports only through its summary (replay).
    pub metrics: Option<Arc<Metrics>>,
}

/// Runs files (each with the index of its source) through `engine` in the given order,
/// writing Insights as the engine decides them. Adds to `summary`; returns the engine.
///
/// Memory: a file is fetched only once its listed size (up to `limits.max_file_bytes`) fits in
/// `limits.max_bytes_in_flight` with the files fetched or being decoded (one file at a time
/// always goes), and at most one file per core, plus one, is decoded at once (the engine thread
/// mostly waits for decoded files: one more decoder keeps every core busy).
/// An Insights file refused for its own content (see [`crate::sink::RejectReason`]) is counted
/// in `summary.insight_files_rejected`, and the rest go on.
///
/// Returns `Err(RunError::SourceUnavailable)` when a file cannot be fetched for a reason
/// that is not the file's (the engine then holds only the files before it), and
/// `Err(RunError::Sink)` when a sink is unavailable (I/O error, disk full, S3 outage).
pub async fn run_files(
    engine: Engine,
    files: Vec<(usize, SourceFile)>,
    run: RunFiles<'_>,
    summary: &mut ReplaySummary,
) -> Result<Engine, RunError> {
    let RunFiles {
        sources,
        sinks,
        locations,
        finish,
        progress,
        stop,
        limits,
        metrics,
    } = run;
    let engine_metrics = metrics.clone();
    let handle = tokio::runtime::Handle::current();
    let config = engine.config().clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Decoded, Option<i64>, std::time::Instant)>(8);
    let aborted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let aborted_in_engine = aborted.clone();
    let engine_thread = std::thread::spawn(move || {
        let metrics = engine_metrics.as_deref();
        let mut out = EngineOutput {
            engine,
            written: Vec::new(),
            rejected: Vec::new(),
            records_by_result: [0; RecordResult::ALL.len()],
        };
        let location_of = |account: &str| locations.get(account).cloned().unwrap_or_default();
        let mut outage = None;
        let mut closed = out.engine.minutes_closed();
        let mut series = SeriesOut::default();
        if sinks.api.is_some() {
            out.engine.enable_series();
        }
        while let Some((decoded, delivered, read_at)) = rx.blocking_recv() {
            let before = out.engine.record_outcomes();
            let emitted = out.engine.ingest(&decoded.batch, delivered);
            take_series(&sinks, &mut out.engine, &mut series);
            if !emitted.is_empty()
                || rx.is_empty()
                || series.pending.len() >= SERIES_BATCHES_PER_WRITE
            {
                flush_series(&sinks, &mut series);
            }
            let results = record_results(&decoded.batch, before, out.engine.record_outcomes());
            for (total, n) in out.records_by_result.iter_mut().zip(results) {
                *total += n;
            }
            if let Some(m) = metrics {
                m.emit(Event::Records(&results));
            }
            let written = write_insights(&emitted, location_of, &sinks, &handle, metrics, &mut out);
            report_engine(metrics, &out.engine, &mut closed);
            if let Err(e) = written {
                outage = Some(e);
                break;
            }
            let starts = emitted
                .iter()
                .filter(|e| e.record.insight_details.state == InsightState::Start)
                .count() as u64;
            if starts > 0
                && let Some(m) = metrics
            {
                m.emit(Event::StartsWritten {
                    starts,
                    seconds: read_at.elapsed().as_secs_f64(),
                });
            }
        }
        if outage.is_none()
            && finish
            && !aborted_in_engine.load(std::sync::atomic::Ordering::SeqCst)
        {
            let emitted = out.engine.finish();
            take_series(&sinks, &mut out.engine, &mut series);
            flush_series(&sinks, &mut series);
            let written = write_insights(&emitted, location_of, &sinks, &handle, metrics, &mut out);
            report_engine(metrics, &out.engine, &mut closed);
            if let Err(e) = written {
                outage = Some(e);
            }
        }
        // Whatever the tap still holds (the files ran out, or a sink failed).
        flush_series(&sinks, &mut series);
        match outage {
            Some(e) => Err(e),
            None => Ok(out),
        }
    });

    let parallel = Source::parallelism(sources);
    let max_file_bytes = limits.max_file_bytes.max(1);
    // The byte budget, in KiB permits (a semaphore counts at most `u32::MAX` per acquisition).
    let budget_kib = u32::try_from(limits.max_bytes_in_flight.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(
            1,
            u32::try_from(tokio::sync::Semaphore::MAX_PERMITS).unwrap_or(u32::MAX),
        );
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(budget_kib as usize));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let decoders = std::sync::Arc::new(tokio::sync::Semaphore::new(cores + 1));
    type Job =
        tokio::task::JoinHandle<Result<(Decoded, bool, f64, std::time::Instant), SourceError>>;
    let mut inflight: VecDeque<(SourceFile, Job)> = VecDeque::new();
    let mut unavailable = None;
    let mut files = files.into_iter().peekable();
    loop {
        while inflight.len() < parallel
            && !stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
        {
            let Some((_, next)) = files.peek() else {
                break;
            };
            // Its share of the budget, taken in file order. Permits are given back when a
            // file's decode ends, whatever the order: with nothing in flight all are free.
            let charge = u32::try_from(next.size.clamp(1, max_file_bytes).div_ceil(1024))
                .unwrap_or(u32::MAX)
                .min(budget_kib);
            let permit = match budget.clone().try_acquire_many_owned(charge) {
                Ok(p) => p,
                Err(_) if !inflight.is_empty() => break,
                Err(_) => budget
                    .clone()
                    .acquire_many_owned(charge)
                    .await
                    .map_err(|e| RunError::Task(e.to_string()))?,
            };
            let Some((index, file)) = files.next() else {
                break;
            };
            let source = sources
                .get(index)
                .cloned()
                .unwrap_or(Source::Local(PathBuf::new()));
            let f = file.clone();
            let decoders = decoders.clone();
            let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
            let bounds = config.time_bounds(file.info.delivered_minute, now_minute);
            let handle = tokio::spawn(async move {
                let started = std::time::Instant::now();
                let fetched = source.fetch_at_most(&f, max_file_bytes).await?;
                let _decoding = decoders.acquire_owned().await;
                let decoded = tokio::task::spawn_blocking(move || decode(&fetched.bytes, bounds))
                    .await
                    .map_err(|e| {
                        SourceError::new(
                            SourceErrorKind::Unreadable,
                            format!("decoder task failed: {e}"),
                        )
                    })?;
                drop(permit);
                Ok((
                    decoded,
                    fetched.truncated,
                    started.elapsed().as_secs_f64(),
                    started,
                ))
            });
            inflight.push_back((file, handle));
        }
        let Some((file, handle)) = inflight.pop_front() else {
            break;
        };
        let result = handle.await.map_err(|e| RunError::Task(e.to_string()))?;
        summary.files_consumed += 1;
        if let Some(p) = progress {
            p.inc(file.size);
        }
        match result {
            Err(error) if error.is_unavailable() => {
                // Later files must not reach the engine before this one: stop here.
                if let Some(m) = &metrics {
                    m.emit(Event::SourceFailed {
                        key: &file.key,
                        error: &error,
                    });
                }
                unavailable = Some(error);
                break;
            }
            Err(error) => {
                if let Some(m) = &metrics {
                    m.emit(Event::SourceFailed {
                        key: &file.key,
                        error: &error,
                    });
                    m.emit(Event::File {
                        key: &file.key,
                        result: FileResult::Unreadable,
                        reason: Some(&error.reason),
                        bytes: 0,
                        inflated: 0,
                        seconds: None,
                        lag_seconds: None,
                    });
                }
                summary.problems.push(FileProblem {
                    key: file.key.clone(),
                    reason: error.reason,
                    skipped: true,
                });
            }
            Ok((decoded, truncated, seconds, read_at)) => {
                let skipped = decoded.batch.stats.records == 0 && !decoded.errors.is_empty();
                if !skipped {
                    summary.files_read += 1;
                }
                summary.bytes_read += file.size;
                summary.inflated_bytes += decoded.inflated_bytes as u64;
                summary.records += decoded.batch.stats;
                let st = decoded.batch.stats;
                if let Some((index, issue)) = decoded.batch.issues.first()
                    && summary.record_issues.len() < MAX_RECORD_ISSUES_REPORTED
                {
                    let n = st.skipped + st.read_only_missing;
                    summary
                        .record_issues
                        .push((file.key.clone(), n, *index, issue.to_string()));
                }
                if truncated || !decoded.errors.is_empty() {
                    let cut = truncated.then(|| {
                        format!("larger than {max_file_bytes} bytes; the rest was not read")
                    });
                    let reason = cut
                        .into_iter()
                        .chain(decoded.errors.iter().map(ToString::to_string))
                        .collect::<Vec<_>>()
                        .join("; ");
                    if let Some(m) = &metrics {
                        m.emit(file_event(&file, &decoded, Some(&reason), skipped, seconds));
                    }
                    summary.problems.push(FileProblem {
                        key: file.key.clone(),
                        reason,
                        skipped,
                    });
                } else if let Some(m) = &metrics {
                    m.emit(file_event(&file, &decoded, None, false, seconds));
                }
                if tx
                    .send((decoded, file.info.delivered_minute, read_at))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    aborted.store(unavailable.is_some(), std::sync::atomic::Ordering::SeqCst);
    drop(tx);
    for (_, job) in inflight {
        job.abort();
    }
    let output = tokio::task::spawn_blocking(move || engine_thread.join())
        .await
        .map_err(|e| RunError::Task(e.to_string()))?
        .map_err(|_| RunError::Task("engine thread panicked".into()))?
        .map_err(RunError::Sink)?;
    if let Some(reason) = unavailable {
        return Err(RunError::SourceUnavailable(reason));
    }
    let counters = output.engine.counters();
    summary.late = counters.late;
    summary.duplicates = counters.duplicates;
    summary.key_overflow = counters.key_overflow;
    summary.keys = output.engine.key_count();
    (summary.insights_started, summary.insights_ended) = output.engine.insight_counts();
    summary.open_insights = output.engine.open_insights();
    for (total, n) in summary
        .records_by_result
        .iter_mut()
        .zip(output.records_by_result)
    {
        *total += n;
    }
    summary.files_written.extend(output.written);
    summary.insight_files_rejected += output.rejected.len() as u64;
    let room = MAX_RECORD_ISSUES_REPORTED.saturating_sub(summary.insights_rejected.len());
    summary
        .insights_rejected
        .extend(output.rejected.into_iter().take(room));
    Ok(output.engine)
}
