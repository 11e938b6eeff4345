//! `trailsight replay`: every log file under a folder, in delivery order,
//! through the pipeline (decode → aggregate → detect → Insights files), once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use trailsight_detector::Engine;

use crate::config::Config;
use crate::layout::TrailLocation;
use crate::pipeline::summary::BeforeCheckpoint;
use crate::pipeline::{
    FetchLimits, FileProblem, MAX_RECORD_ISSUES_REPORTED, ReplaySummary, RunError, RunFiles,
    run_files,
};
use crate::sink::Sinks;
use crate::sink::local::LocalSink;
use crate::source::local::{Listing, list};
use crate::source::{Source, SourceFile};

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
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] trailsight_detector::config::ConfigError),
    /// A worker task failed.
    #[error("internal task failure: {0}")]
    Task(String),
    /// The API's Insights store in the state folder cannot be opened.
    #[error(transparent)]
    Store(#[from] trailsight_api::StoreError),
    /// The checkpoint cannot be read or written, or the state folder is locked or unwritable.
    #[error(transparent)]
    State(#[from] crate::pipeline::state::StateError),
    /// The run stopped: a sink or the source became unavailable, or a worker failed.
    #[error(transparent)]
    Run(#[from] RunError),
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
    let _lock = opts
        .state
        .as_deref()
        .map(crate::pipeline::state::lock)
        .transpose()?;
    crate::pipeline::state::check_writable(&opts.sink).map_err(|error| {
        ReplayError::SinkNotWritable {
            path: opts.sink.clone(),
            error,
        }
    })?;
    // Loading and saving the checkpoint are blocking work: off the async runtime.
    let mut checkpoint = match opts.state.clone() {
        Some(dir) => {
            let detector = opts.config.detector.clone();
            tokio::task::spawn_blocking(move || crate::pipeline::state::load(&dir, &detector))
                .await
                .map_err(|e| ReplayError::Run(RunError::Task(e.to_string())))??
        }
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
        .map_err(|e| ReplayError::Run(RunError::Task(e.to_string())))?
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
    // With a state folder, the records also fill the API's store there (as `serve` does).
    let api = match opts.state.clone() {
        Some(dir) => Some(
            tokio::task::spawn_blocking(move || {
                trailsight_api::Store::open(&dir.join(crate::pipeline::state::STORE_FILE))
            })
            .await
            .map_err(|e| ReplayError::Run(RunError::Task(e.to_string())))??,
        )
        .map(|store| trailsight_api::Api::new(std::sync::Arc::new(store), None)),
        None => None,
    };
    let sinks = Sinks {
        local: Some(LocalSink::new(&opts.sink)),
        s3: None,
        api,
    };
    let n_files = files.len() as u64;
    let engine = run_files(
        engine,
        files.into_iter().map(|f| (0, f)).collect(),
        RunFiles {
            sources: &[Source::Local(opts.source.clone())],
            sinks,
            locations,
            finish: opts.state.is_none(),
            progress: progress.as_ref(),
            stop: None,
            limits: FetchLimits::default(),
            metrics: None,
        },
        &mut summary,
    )
    .await?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    if let Some(dir) = opts.state.clone() {
        let files_processed = checkpoint.as_ref().map_or(0, |c| c.files_processed) + n_files;
        let checkpoint = crate::pipeline::state::Checkpoint {
            engine,
            cursors,
            files_processed,
        };
        tokio::task::spawn_blocking(move || crate::pipeline::state::save(&dir, &checkpoint))
            .await
            .map_err(|e| ReplayError::Run(RunError::Task(e.to_string())))??;
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
    cursors: &crate::pipeline::cursor::Cursors,
    summary: &mut ReplaySummary,
) {
    if old.is_empty() {
        return;
    }
    let mut per_prefix: BTreeMap<String, u64> = BTreeMap::new();
    for f in old {
        *per_prefix
            .entry(crate::pipeline::cursor::cursor_prefix(&f.key))
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
