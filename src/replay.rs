//! `trailsight replay`: every log file under a folder, in delivery order,
//! through decode → aggregate → detect → Insights files.
//!
//! Reading happens on the async runtime; inflate and parse run on the blocking
//! pool, several files at once (bounded), and their batches are handed in
//! file order to one engine thread, which also writes the Insights files.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trailsight_detector::{BatchStats, Engine, OpenInsightReport};

use crate::config::Config;
use crate::decode::{Decoded, decode};
use crate::layout::TrailLocation;
use crate::sink::local::LocalSink;
use crate::sink::{RejectReason, RejectedInsights, SinkError, build_files};
use crate::source::SourceFile;
use crate::source::local::{Listing, list};

/// What `replay` needs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Folder (or single file) of CloudTrail logs.
    pub source: PathBuf,
    /// Folder receiving `AWSLogs/…/CloudTrail-Insight/…` files.
    pub sink: PathBuf,
    /// Settings.
    pub config: Config,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// State folder: load the checkpoint there (if any), skip files it has seen, and save
    /// the checkpoint at the end without closing the open minutes, so `serve` (or another
    /// replay) continues from it. `None`: a one-off replay that closes everything at the end.
    pub state: Option<PathBuf>,
}

/// A file that could not be read at all, or only in part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// Key of the file.
    pub key: String,
    /// What went wrong (with byte offsets).
    pub reason: String,
    /// True when nothing of the file was used.
    pub skipped: bool,
}

/// Why replay could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The source folder (or file) cannot be read.
    #[error("cannot read source {path}: {error}")]
    Source {
        /// The folder or file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The local sink folder cannot be created or written (found before any work starts).
    #[error("sink folder {path} is not writable: {error}")]
    SinkNotWritable {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// An Insights file could not be written.
    #[error("cannot write Insights file: {0}")]
    Sink(std::io::Error),
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] trailsight_detector::config::ConfigError),
    /// A worker task failed.
    #[error("internal task failure: {0}")]
    Task(String),
    /// The checkpoint cannot be read or written, or the state folder is locked or unwritable.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The source could not be reached (network error, timeout, 5xx after the SDK's retries);
    /// files from this one on were not processed.
    #[error("source unavailable: {0}")]
    SourceUnavailable(String),
}

/// Why a log file's bytes could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The object itself cannot be read (missing, forbidden, broken on disk): report and skip it.
    #[error("{0}")]
    Unreadable(String),
    /// The source is down or timing out: the file must be read again later, not skipped.
    #[error("{0}")]
    Unavailable(String),
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    /// Log files read (fully or in part).
    pub files_read: u64,
    /// Compressed bytes read.
    pub bytes_read: u64,
    /// Inflated JSON bytes parsed.
    pub inflated_bytes: u64,
    /// Files that were skipped or only partly read, with reasons.
    pub problems: Vec<FileProblem>,
    /// Digest files and existing Insights files skipped, other files ignored.
    pub digests_skipped: u64,
    /// Existing Insights files skipped.
    pub insight_files_skipped: u64,
    /// Non-JSON files ignored.
    pub other_files: u64,
    /// Record counters.
    pub records: BatchStats,
    /// Counted records that arrived after their minute closed.
    pub late: u64,
    /// Counted records whose eventID had been counted already.
    pub duplicates: u64,
    /// Rate keys tracked.
    pub keys: usize,
    /// Calls not counted because their key would be new to an account and Region already at
    /// `max_keys_per_region` (one per refused call).
    pub key_overflow: u64,
    /// Insights started.
    pub insights_started: u64,
    /// Insights ended.
    pub insights_ended: u64,
    /// Insights still open at the end of input.
    pub open_insights: Vec<OpenInsightReport>,
    /// Insights files written (paths).
    pub files_written: Vec<PathBuf>,
    /// Wall time.
    pub wall: Duration,
    /// Files taken through (read, or skipped as unreadable), from the start of the list given.
    pub files_consumed: usize,
    /// Files not read because they sort at or before their prefix's checkpoint cursor
    /// (`replay --state`): already processed, or older than the checkpoint. At most
    /// [`MAX_RECORD_ISSUES_REPORTED`] prefixes are kept; `files_before_checkpoint` counts all.
    pub before_checkpoint: Vec<BeforeCheckpoint>,
    /// Files not read because they sort at or before their prefix's checkpoint cursor.
    pub files_before_checkpoint: u64,
    /// Files with record-level issues (skipped records, missing `readOnly`), at most
    /// [`MAX_RECORD_ISSUES_REPORTED`]: (file key, records with issues, first record index, first issue).
    pub record_issues: Vec<(String, u64, usize, String)>,
    /// Insights files not written because of their own content (a key part failed validation,
    /// or a sink refused the name); the files after them were written.
    pub insight_files_rejected: u64,
    /// The first [`MAX_RECORD_ISSUES_REPORTED`] of them, with why.
    pub insights_rejected: Vec<RejectedInsights>,
}

/// Files of one listing prefix not read by `replay --state` because they are at or before the
/// checkpoint's cursor for that prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeforeCheckpoint {
    /// The listing prefix (`AWSLogs/[o-…/]<account>/CloudTrail/<region>/`).
    pub prefix: String,
    /// Files not read.
    pub files: u64,
    /// The newest key processed under the prefix (the cursor).
    pub cursor: String,
}

/// Record-level issues kept in a summary.
pub const MAX_RECORD_ISSUES_REPORTED: usize = 20;

impl ReplaySummary {
    /// Records per second of wall time.
    pub fn records_per_second(&self) -> f64 {
        self.records.records as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

struct EngineOutput {
    engine: Engine,
    written: Vec<PathBuf>,
    rejected: Vec<RejectedInsights>,
}

/// Writes the Insights files of `emitted`; a file refused for its own content goes to `rejected`
/// and the others are still written. Returns `Err` on a sink outage.
fn write_insights(
    emitted: &[trailsight_detector::EmittedInsight],
    location_of: impl Fn(&str) -> TrailLocation,
    sinks: &Sinks,
    handle: &tokio::runtime::Handle,
    out: &mut EngineOutput,
) -> Result<(), std::io::Error> {
    for built in build_files(emitted, location_of) {
        let file = match built {
            Ok(file) => file,
            Err(rejected) => {
                out.rejected.push(rejected);
                continue;
            }
        };
        match sinks.write(&file, handle) {
            Ok(paths) => out.written.extend(paths),
            Err(SinkError::Rejected(reason)) => out.rejected.push(RejectedInsights {
                key: crate::layout::shown(&file.key),
                records: file.records,
                reason,
            }),
            Err(SinkError::Unavailable(e)) => return Err(e),
        }
    }
    Ok(())
}

/// Largest number of bytes read from one log file (compressed bytes for a gzip file): 256 MiB.
/// CloudTrail delivers files of a few MB at most; the records before the cut are kept and the
/// file is reported as read in part.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

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

/// A log file's bytes, as far as they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The first bytes of the file, at most the cap given.
    pub bytes: Vec<u8>,
    /// True when the file is longer than the cap: the rest was not read.
    pub truncated: bool,
}

/// Where a log file's bytes come from.
#[derive(Debug, Clone)]
pub enum Fetcher {
    /// The file's `path` on disk.
    Local,
    /// `GetObject` of the file's key in this bucket.
    S3(aws_sdk_s3::Client, String),
}

impl Fetcher {
    /// The file's bytes, at most [`MAX_FILE_BYTES`] of them (see [`Fetcher::fetch_at_most`]).
    pub async fn fetch(&self, file: &SourceFile) -> Result<Fetched, FetchError> {
        self.fetch_at_most(file, MAX_FILE_BYTES).await
    }

    /// The file's first `max_bytes` bytes (at least 1), and whether there was more.
    /// On S3, a file listed larger than `max_bytes` is fetched with a ranged `GetObject`; every
    /// body is read only up to the cap, whatever its announced length.
    ///
    /// Returns `Err(FetchError::Unreadable)` for a local read error or an S3 error response
    /// about the object (e.g. `NoSuchKey`, `InvalidObjectState`), and
    /// `Err(FetchError::Unavailable)` when S3 cannot be reached, times out, keeps answering
    /// 5xx/throttling after the SDK's retries, refuses the credentials or permissions
    /// (`ExpiredToken`, `SignatureDoesNotMatch`, `AccessDenied`, `KMS.…`), or the body is cut off.
    pub async fn fetch_at_most(
        &self,
        file: &SourceFile,
        max_bytes: u64,
    ) -> Result<Fetched, FetchError> {
        use tokio::io::AsyncReadExt;
        let max = max_bytes.max(1);
        // Room for what the listing announced, up to the cap (a hint: the file may differ).
        let capacity = usize::try_from(file.size.min(max)).unwrap_or(0);
        match self {
            Fetcher::Local => {
                let read = async {
                    let f = tokio::fs::File::open(&file.path).await?;
                    let mut bytes = Vec::with_capacity(capacity);
                    // One byte past the cap tells whether there is more.
                    f.take(max.saturating_add(1))
                        .read_to_end(&mut bytes)
                        .await?;
                    Ok::<_, std::io::Error>(bytes)
                };
                let mut bytes = read
                    .await
                    .map_err(|e| FetchError::Unreadable(e.to_string()))?;
                let truncated = bytes.len() as u64 > max;
                bytes.truncate(usize::try_from(max).unwrap_or(usize::MAX));
                Ok(Fetched { bytes, truncated })
            }
            Fetcher::S3(client, bucket) => {
                let mut req = client.get_object().bucket(bucket).key(&file.key);
                if file.size > max {
                    req = req.range(format!("bytes=0-{}", max - 1));
                }
                let out = req.send().await.map_err(|e| {
                    let reason = format!(
                        "GetObject s3://{bucket}/{}: {}",
                        file.key,
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    );
                    if is_transient(&e) {
                        FetchError::Unavailable(reason)
                    } else {
                        FetchError::Unreadable(reason)
                    }
                })?;
                // `bytes 0-N/TOTAL`: the object's whole length, when a range was asked.
                let total = out
                    .content_range()
                    .and_then(|r| r.rsplit('/').next())
                    .and_then(|t| t.parse::<u64>().ok());
                let mut body = out.body;
                let mut bytes = Vec::with_capacity(capacity);
                let mut truncated = total.is_some_and(|t| t > max);
                while let Some(chunk) = body.try_next().await.map_err(|e| {
                    FetchError::Unavailable(format!("reading s3://{bucket}/{}: {e}", file.key))
                })? {
                    let room = usize::try_from(max - bytes.len() as u64).unwrap_or(usize::MAX);
                    if chunk.len() > room {
                        bytes.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(Fetched { bytes, truncated })
            }
        }
    }

    /// Files fetched at once: I/O-bound S3 requests need more in flight than local reads.
    fn parallelism(fetchers: &[Fetcher]) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        if fetchers.iter().any(|f| matches!(f, Fetcher::S3(..))) {
            (cores * 8).max(16)
        } else {
            (cores * 2).max(2)
        }
    }
}

/// Error codes that are about the service's credentials or permissions, not the object: in a
/// trail bucket every object is written alike, so every object would fail the same way (a role
/// without `kms:Decrypt` on an SSE-KMS trail gets `AccessDenied`) and skipping would lose them all.
const CREDENTIAL_ERRORS: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "RequestTimeTooSkewed",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
];

/// True for errors that say nothing about the object: no connection, timeout, a cut-off
/// response, throttling, a server error, or credentials that the server refuses.
fn is_transient<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            status >= 500
                || status == 429
                || se
                    .err()
                    .code()
                    .is_some_and(|c| CREDENTIAL_ERRORS.contains(&c) || c.starts_with("KMS."))
        }
        _ => true,
    }
}

/// Where Insights files go: a local folder and/or an S3 bucket and prefix.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// Local folder.
    pub local: Option<LocalSink>,
    /// Client, bucket and key prefix.
    pub s3: Option<(aws_sdk_s3::Client, String, String)>,
}

impl Sinks {
    /// Writes one file to every sink; returns where (paths and `s3://` URLs).
    /// Called from a plain thread: S3 writes block on `handle`.
    ///
    /// Returns `Err(SinkError::Rejected)` when a sink refuses this file for its own content (its
    /// name; see [`crate::sink::RejectReason`]), and `Err(SinkError::Unavailable)` when a sink
    /// cannot take files now (local I/O errors, S3 unreachable, timeouts, throttling, 5xx,
    /// refused credentials).
    pub fn write(
        &self,
        file: &crate::sink::InsightFile,
        handle: &tokio::runtime::Handle,
    ) -> Result<Vec<PathBuf>, SinkError> {
        let mut out = Vec::new();
        if let Some(local) = &self.local {
            out.push(local.write(file)?);
        }
        if let Some((client, bucket, prefix)) = &self.s3 {
            let key = if prefix.is_empty() {
                file.key.clone()
            } else {
                format!("{}/{}", prefix.trim_end_matches('/'), file.key)
            };
            let body = aws_sdk_s3::primitives::ByteStream::from(file.body.clone());
            handle
                .block_on(
                    client
                        .put_object()
                        .bucket(bucket)
                        .key(&key)
                        .body(body)
                        .send(),
                )
                .map_err(|e| {
                    let reason = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
                    if is_key_refused(&e) {
                        SinkError::Rejected(RejectReason::S3Key {
                            bucket: bucket.clone(),
                            key: crate::layout::shown(&key),
                            reason,
                        })
                    } else {
                        SinkError::Unavailable(std::io::Error::other(format!(
                            "PutObject s3://{bucket}/{key}: {reason}"
                        )))
                    }
                })?;
            out.push(PathBuf::from(format!("s3://{bucket}/{key}")));
        }
        Ok(out)
    }
}

/// S3 error codes that are about the key of one request, not the service.
const KEY_ERRORS: &[&str] = &["KeyTooLongError", "InvalidArgument", "InvalidURI"];

/// True for a 400 answer about the key (`KeyTooLongError`, `InvalidArgument`, `InvalidURI`).
fn is_key_refused<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    match e {
        aws_sdk_s3::error::SdkError::ServiceError(se) => {
            se.raw().status().as_u16() == 400
                && se.err().code().is_some_and(|c| KEY_ERRORS.contains(&c))
        }
        _ => false,
    }
}

/// How [`run_files`] reads and writes.
pub struct RunFiles<'a> {
    /// One per source; each file names its fetcher by index.
    pub fetchers: &'a [Fetcher],
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
}

/// Runs files (each with the index of its fetcher) through `engine` in the given order,
/// writing Insights as the engine decides them. Adds to `summary`; returns the engine.
///
/// Memory: a file is fetched only once its listed size (up to `limits.max_file_bytes`) fits in
/// `limits.max_bytes_in_flight` with the files fetched or being decoded (one file at a time
/// always goes), and at most one file per core is decoded at once.
/// An Insights file refused for its own content (see [`crate::sink::RejectReason`]) is counted
/// in `summary.insight_files_rejected`, and the rest go on.
///
/// Returns `Err(ReplayError::SourceUnavailable)` when a file cannot be fetched for a reason
/// that is not the file's (the engine then holds only the files before it), and
/// `Err(ReplayError::Sink)` when a sink is unavailable (I/O error, disk full, S3 outage).
pub async fn run_files(
    engine: Engine,
    files: Vec<(usize, SourceFile)>,
    run: RunFiles<'_>,
    summary: &mut ReplaySummary,
) -> Result<Engine, ReplayError> {
    let RunFiles {
        fetchers,
        sinks,
        locations,
        finish,
        progress,
        stop,
        limits,
    } = run;
    let handle = tokio::runtime::Handle::current();
    let config = engine.config().clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Decoded, Option<i64>)>(8);
    let aborted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let aborted_in_engine = aborted.clone();
    let engine_thread = std::thread::spawn(move || {
        let mut out = EngineOutput {
            engine,
            written: Vec::new(),
            rejected: Vec::new(),
        };
        let location_of = |account: &str| locations.get(account).cloned().unwrap_or_default();
        let mut outage = None;
        while let Some((decoded, delivered)) = rx.blocking_recv() {
            let emitted = out.engine.ingest(&decoded.batch, delivered);
            if let Err(e) = write_insights(&emitted, location_of, &sinks, &handle, &mut out) {
                outage = Some(e);
                break;
            }
        }
        if outage.is_none()
            && finish
            && !aborted_in_engine.load(std::sync::atomic::Ordering::SeqCst)
        {
            let emitted = out.engine.finish();
            if let Err(e) = write_insights(&emitted, location_of, &sinks, &handle, &mut out) {
                outage = Some(e);
            }
        }
        match outage {
            Some(e) => Err(e),
            None => Ok(out),
        }
    });

    let parallel = Fetcher::parallelism(fetchers);
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
    let decoders = std::sync::Arc::new(tokio::sync::Semaphore::new(cores));
    type Job = tokio::task::JoinHandle<Result<(Decoded, bool), FetchError>>;
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
                    .map_err(|e| ReplayError::Task(e.to_string()))?,
            };
            let Some((source, file)) = files.next() else {
                break;
            };
            let fetcher = fetchers.get(source).cloned().unwrap_or(Fetcher::Local);
            let f = file.clone();
            let decoders = decoders.clone();
            let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
            let bounds = config.time_bounds(file.info.delivered_minute, now_minute);
            let handle = tokio::spawn(async move {
                let fetched = fetcher.fetch_at_most(&f, max_file_bytes).await?;
                let _decoding = decoders.acquire_owned().await;
                let decoded = tokio::task::spawn_blocking(move || decode(&fetched.bytes, bounds))
                    .await
                    .map_err(|e| FetchError::Unreadable(format!("decoder task failed: {e}")))?;
                drop(permit);
                Ok((decoded, fetched.truncated))
            });
            inflight.push_back((file, handle));
        }
        let Some((file, handle)) = inflight.pop_front() else {
            break;
        };
        let result = handle.await.map_err(|e| ReplayError::Task(e.to_string()))?;
        summary.files_consumed += 1;
        if let Some(p) = progress {
            p.inc(file.size);
        }
        match result {
            Err(FetchError::Unavailable(reason)) => {
                // Later files must not reach the engine before this one: stop here.
                unavailable = Some(reason);
                break;
            }
            Err(FetchError::Unreadable(reason)) => summary.problems.push(FileProblem {
                key: file.key.clone(),
                reason,
                skipped: true,
            }),
            Ok((decoded, truncated)) => {
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
                    summary.problems.push(FileProblem {
                        key: file.key.clone(),
                        reason,
                        skipped,
                    });
                }
                if tx
                    .send((decoded, file.info.delivered_minute))
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
        .map_err(|e| ReplayError::Task(e.to_string()))?
        .map_err(|_| ReplayError::Task("engine thread panicked".into()))?
        .map_err(ReplayError::Sink)?;
    if let Some(reason) = unavailable {
        return Err(ReplayError::SourceUnavailable(reason));
    }
    let counters = output.engine.counters();
    summary.late = counters.late;
    summary.duplicates = counters.duplicates;
    summary.key_overflow = counters.key_overflow;
    summary.keys = output.engine.key_count();
    (summary.insights_started, summary.insights_ended) = output.engine.insight_counts();
    summary.open_insights = output.engine.open_insights();
    summary.files_written.extend(output.written);
    summary.insight_files_rejected += output.rejected.len() as u64;
    let room = MAX_RECORD_ISSUES_REPORTED.saturating_sub(summary.insights_rejected.len());
    summary
        .insights_rejected
        .extend(output.rejected.into_iter().take(room));
    Ok(output.engine)
}

/// Runs a replay. Returns `Err` only when it cannot run at all (unreadable
/// source, unwritable sink, bad settings, unreadable checkpoint); broken files
/// are reported in the summary.
pub async fn replay(opts: ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    // Cursors are keyed by listing prefix (`AWSLogs/<account>/CloudTrail/<region>/`), shared by every
    // source, so a replay of a synced copy seeds `serve` on the bucket without re-reading it.
    let started = Instant::now();
    // Everything that can stop the run is checked before any work: the source can be read, the
    // state folder is ours (locked) and writable, the sink folder is writable.
    check_source(&opts.source).map_err(|error| ReplayError::Source {
        path: opts.source.clone(),
        error,
    })?;
    let _lock = opts.state.as_deref().map(crate::state::lock).transpose()?;
    crate::state::check_writable(&opts.sink).map_err(|error| ReplayError::SinkNotWritable {
        path: opts.sink.clone(),
        error,
    })?;
    let mut checkpoint = match &opts.state {
        Some(dir) => crate::state::load(dir, &opts.config.detector)?,
        None => None,
    };
    let engine = match checkpoint.as_mut() {
        Some(c) => std::mem::replace(&mut c.engine, Engine::new(opts.config.detector.clone())?),
        None => Engine::new(opts.config.detector.clone())?,
    };
    let mut cursors = checkpoint
        .as_mut()
        .map(|c| std::mem::take(&mut c.cursors))
        .unwrap_or_default();
    let source = opts.source.clone();
    let listing: Listing = tokio::task::spawn_blocking(move || list(&source))
        .await
        .map_err(|e| ReplayError::Task(e.to_string()))?
        .map_err(|error| ReplayError::Source {
            path: opts.source.clone(),
            error,
        })?;

    let mut summary = ReplaySummary {
        digests_skipped: listing.digests,
        insight_files_skipped: listing.insights,
        other_files: listing.other,
        ..Default::default()
    };
    for (path, reason) in &listing.unreadable {
        summary.problems.push(FileProblem {
            key: path.clone(),
            reason: reason.clone(),
            skipped: true,
        });
    }
    // Each account's trail location (prefix, organization), from the first file that names it.
    // (Also from the checkpoint's files: an Insight may end while its account has no new file.)
    let mut locations: BTreeMap<String, TrailLocation> = BTreeMap::new();
    let processed = cursors.last_keys().map(crate::layout::parse_key);
    crate::layout::add_locations(
        &mut locations,
        listing
            .files
            .iter()
            .map(|f| f.info.clone())
            .chain(processed),
    );
    let (files, old): (Vec<SourceFile>, Vec<SourceFile>) = listing
        .files
        .into_iter()
        .partition(|f| cursors.is_new(&f.key));
    report_before_checkpoint(&old, &cursors, &mut summary);
    for f in &files {
        cursors.advance(&f.key);
    }
    let progress = progress_bar(opts.progress, files.iter().map(|f| f.size).sum());
    let sinks = Sinks {
        local: Some(LocalSink::new(&opts.sink)),
        s3: None,
    };
    let n_files = files.len() as u64;
    let engine = run_files(
        engine,
        files.into_iter().map(|f| (0, f)).collect(),
        RunFiles {
            fetchers: &[Fetcher::Local],
            sinks,
            locations,
            finish: opts.state.is_none(),
            progress: progress.as_ref(),
            stop: None,
            limits: FetchLimits::default(),
        },
        &mut summary,
    )
    .await?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    if let Some(dir) = &opts.state {
        let files_processed = checkpoint.as_ref().map_or(0, |c| c.files_processed) + n_files;
        crate::state::save(
            dir,
            &crate::state::Checkpoint {
                engine,
                cursors,
                files_processed,
            },
        )?;
    }
    summary.wall = started.elapsed();
    Ok(summary)
}

/// Whether `path` can be read as a source: a folder whose entries can be listed, or a regular
/// file that can be opened. `Err` otherwise (e.g. permission denied, a device or a FIFO).
fn check_source(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        std::fs::read_dir(path).map(drop)
    } else if meta.is_file() {
        std::fs::File::open(path).map(drop)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a folder or a regular file",
        ))
    }
}

/// Counts the listed files that `replay --state` does not read because they sort at or before
/// their prefix's checkpoint cursor, per prefix, into `summary`, and warns once about them.
fn report_before_checkpoint(
    old: &[SourceFile],
    cursors: &crate::cursor::Cursors,
    summary: &mut ReplaySummary,
) {
    if old.is_empty() {
        return;
    }
    let mut per_prefix: BTreeMap<String, u64> = BTreeMap::new();
    for f in old {
        *per_prefix
            .entry(crate::cursor::cursor_prefix(&f.key))
            .or_default() += 1;
    }
    summary.files_before_checkpoint = old.len() as u64;
    let prefixes = per_prefix.len();
    summary.before_checkpoint = per_prefix
        .into_iter()
        .take(MAX_RECORD_ISSUES_REPORTED)
        .map(|(prefix, files)| BeforeCheckpoint {
            cursor: cursors.cursor(&prefix).unwrap_or_default().to_string(),
            prefix,
            files,
        })
        .collect();
    tracing::warn!(
        files = old.len(),
        prefixes,
        "log files at or before the checkpoint's cursor were not read (already processed, or \
         older than the checkpoint: replay --state reads only files after it)"
    );
}

fn progress_bar(enabled: bool, total_bytes: u64) -> Option<indicatif::ProgressBar> {
    if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total_bytes);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {wide_bar} {eta}")
    {
        bar.set_style(style);
    }
    Some(bar)
}

/// Writes one line of a summary with its control characters escaped (the line holds file keys,
/// `eventName`s and other text from the logs, see [`crate::escape`]).
fn line(f: &mut std::fmt::Formatter<'_>, args: std::fmt::Arguments<'_>) -> std::fmt::Result {
    writeln!(f, "{}", crate::escape::escaped(args))
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let skipped = self.problems.iter().filter(|p| p.skipped).count();
        line(
            f,
            format_args!(
                "files: {} read, {} skipped, {} read in part; {} digest and {} Insights files skipped, {} other files ignored",
                self.files_read,
                skipped,
                self.problems.len() - skipped,
                self.digests_skipped,
                self.insight_files_skipped,
                self.other_files
            ),
        )?;
        for p in self.problems.iter().take(MAX_RECORD_ISSUES_REPORTED) {
            line(
                f,
                format_args!(
                    "  {} {}: {}",
                    if p.skipped { "skipped" } else { "partial" },
                    p.key,
                    p.reason
                ),
            )?;
        }
        if self.files_before_checkpoint > 0 {
            line(
                f,
                format_args!(
                    "files not read: {} at or before the checkpoint's cursor (already processed, or older than the checkpoint: replay --state reads only files after it)",
                    self.files_before_checkpoint
                ),
            )?;
            for b in &self.before_checkpoint {
                line(
                    f,
                    format_args!(
                        "  {} files at or before the checkpoint's cursor for prefix {} ({}); not read",
                        b.files, b.prefix, b.cursor
                    ),
                )?;
            }
        }
        let r = &self.records;
        line(
            f,
            format_args!(
                "records: {} ({} write management, {} with errorCode, {} skipped for missing fields, {} skipped for invalid fields, {} skipped for eventTime out of bounds, {} without readOnly)",
                r.records,
                r.write_management,
                r.error_records,
                r.skipped
                    .saturating_sub(r.invalid_field)
                    .saturating_sub(r.out_of_bounds_time),
                r.invalid_field,
                r.out_of_bounds_time,
                r.read_only_missing
            ),
        )?;
        line(
            f,
            format_args!(
                "late records: {}; duplicate records: {}; rate keys: {}",
                self.late, self.duplicates, self.keys
            ),
        )?;
        if self.key_overflow > 0 {
            line(
                f,
                format_args!(
                    "calls not counted: {} for new keys past max_keys_per_region",
                    self.key_overflow
                ),
            )?;
        }
        for (key, n, index, issue) in &self.record_issues {
            line(
                f,
                format_args!("  {key}: {n} records with issues; first, record #{index}: {issue}"),
            )?;
        }
        line(
            f,
            format_args!(
                "Insights: {} started, {} ended, {} still open at end of input; {} files written",
                self.insights_started,
                self.insights_ended,
                self.open_insights.len(),
                self.files_written.len()
            ),
        )?;
        if self.insight_files_rejected > 0 {
            writeln!(
                f,
                "Insights files not written (refused for their content): {}",
                self.insight_files_rejected
            )?;
            for r in &self.insights_rejected {
                writeln!(f, "  not written: {r}")?;
            }
        }
        for o in &self.open_insights {
            line(
                f,
                format_args!(
                    "  open: {} {} {}:{}{} since {} ({} calls so far)",
                    o.account,
                    o.region,
                    o.event_source,
                    o.event_name,
                    o.error_code
                        .as_ref()
                        .map(|e| format!(" errorCode={e}"))
                        .unwrap_or_default(),
                    o.start,
                    o.calls
                ),
            )?;
        }
        write!(
            f,
            "wall time: {:.2} s; {:.0} records/s",
            self.wall.as_secs_f64(),
            self.records_per_second()
        )
    }
}

/// Reads every Insights record under `root` (any `CloudTrail-Insight/` file), in key order.
pub fn read_insight_files(
    root: &Path,
) -> std::io::Result<Vec<(String, Vec<trailsight_detector::InsightRecord>)>> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(rename = "Records")]
        records: Vec<trailsight_detector::InsightRecord>,
    }
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(std::io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let key = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .replace('\\', "/");
        if !key.contains("/CloudTrail-Insight/") || !key.ends_with(".json.gz") {
            continue;
        }
        let bytes = std::fs::read(entry.path())?;
        let (json, err) = crate::decode::inflate(&bytes);
        if let Some(e) = err {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{key}: {e}"),
            ));
        }
        let file: File = serde_json::from_slice(&json).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{key}: {e}"))
        })?;
        out.push((key, file.records));
    }
    Ok(out)
}
