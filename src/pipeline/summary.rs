//! What a run of the pipeline did: counters, problems and Insights, printed by `replay`.

use std::path::PathBuf;
use std::time::Duration;

use trailsight_detector::{BatchStats, OpenInsightReport};

use crate::metrics::RecordResult;
use crate::sink::RejectedInsights;

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

/// Records of one batch by [`RecordResult`] (index = position in [`RecordResult::ALL`]), from the
/// batch's counters and the engine's record outcomes before and after it was ingested.
pub fn record_results(
    batch: &trailsight_detector::FileBatch,
    before: trailsight_detector::aggregate::RecordOutcomes,
    after: trailsight_detector::aggregate::RecordOutcomes,
) -> [u64; RecordResult::ALL.len()] {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let st = &batch.stats;
    let outside = st
        .records
        .saturating_sub(st.skipped)
        .saturating_sub(batch.events.len() as u64);
    [
        d(after.counted, before.counted),
        d(after.late, before.late),
        d(after.duplicate, before.duplicate),
        d(after.ignored, before.ignored),
        d(after.key_overflow, before.key_overflow),
        outside + d(after.not_counted, before.not_counted),
        st.skipped,
    ]
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
    /// Records by [`RecordResult`] (index = position in [`RecordResult::ALL`]).
    pub records_by_result: [u64; RecordResult::ALL.len()],
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
        let partial = (self.problems.len() - skipped) as u64;
        line(
            f,
            format_args!(
                "files by result (as trailsight_files_total): read {}, partial {partial}, unreadable {skipped}; bytes read {} (trailsight_read_bytes_total), inflated {} (trailsight_inflated_bytes_total)",
                self.files_read.saturating_sub(partial),
                self.bytes_read,
                self.inflated_bytes
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
        let by_result = RecordResult::ALL
            .iter()
            .zip(&self.records_by_result)
            .map(|(r, n)| format!("{} {n}", r.label()))
            .collect::<Vec<_>>()
            .join(", ");
        line(
            f,
            format_args!("records by result (as trailsight_records_total): {by_result}"),
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
            line(
                f,
                format_args!(
                    "Insights files not written (refused for their content): {}",
                    self.insight_files_rejected
                ),
            )?;
            for r in &self.insights_rejected {
                line(f, format_args!("  not written: {r}"))?;
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
