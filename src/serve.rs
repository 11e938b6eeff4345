//! `trailsight serve`: the replay pipeline fed continuously from S3 or local
//! folders, with crash-safe checkpoints.
//!
//! Each poll discovers the `AWSLogs/[o-…/]<account>/CloudTrail/<region>/`
//! prefixes of every source and lists each one from its cursor (`StartAfter`
//! on S3), so only new keys are listed. New files from all sources are
//! processed in delivery order, as `replay` does; Insights files are written
//! as soon as the minutes that decide them close. The engine and the cursors
//! are checkpointed every `checkpoint_interval_seconds`, after each poll, and
//! on SIGTERM/SIGINT (which let the files in flight finish first). After a crash,
//! files after the last checkpoint are read again; Insights are deterministic
//! (content-derived IDs and keys), so rewriting them changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use trailsight_detector::Engine;

use crate::config::Config;
use crate::cursor::Cursors;
use crate::layout::{KeyKind, TrailLocation, add_locations, is_log_file_name, parse_key};
use crate::replay::{Fetcher, ReplaySummary, RunFiles, Sinks, run_files};
use crate::sink::local::LocalSink;
use crate::source::SourceFile;
use crate::state::{Checkpoint, load, save};

/// The `[serve]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Log sources: `s3://<bucket>[/<prefix>]`, `file:///path` or a path.
    pub sources: Vec<String>,
    /// Insights sinks: `s3://<bucket>[/<prefix>]`, `file:///path` or a path (at most one of each kind).
    pub sinks: Vec<String>,
    /// Folder of the checkpoint (`state.bin`).
    pub state_dir: PathBuf,
    /// Seconds between polls. Default 60.
    #[serde(default = "default_poll")]
    pub poll_interval_seconds: u64,
    /// Seconds between checkpoints while a backlog is processed. Default 30.
    #[serde(default = "default_checkpoint")]
    pub checkpoint_interval_seconds: u64,
    /// Files processed between two checkpoint opportunities (bounds memory and re-reads). Default 500.
    #[serde(default = "default_batch")]
    pub batch_files: usize,
    /// A local file is read only once it has not been modified for this many seconds, so a file
    /// still being written (by `aws s3 sync`, a copy, a shipper) is never read in part; files
    /// after it wait too, to keep delivery order. Default 5; at most 3600.
    #[serde(default = "default_settle")]
    pub local_settle_seconds: u64,
    /// S3 client settings.
    #[serde(default)]
    pub s3: S3Config,
}

impl ServeConfig {
    /// Checks the ranges of the `[serve]` settings owned here.
    ///
    /// Returns `Err` naming the key (`serve.local_settle_seconds`) and its range.
    pub fn validate_source_settings(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.local_settle_seconds <= MAX_SETTLE_SECONDS,
            "serve.local_settle_seconds = {} is out of range (0 to {MAX_SETTLE_SECONDS})",
            self.local_settle_seconds
        );
        Ok(())
    }
}

/// Largest `local_settle_seconds`.
pub const MAX_SETTLE_SECONDS: u64 = 3600;

/// S3 client settings; credentials and region come from the standard AWS chain unless set here.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (needed by most S3-compatible servers).
    #[serde(default)]
    pub force_path_style: bool,
    /// Region (default: the AWS chain's, else `us-east-1`).
    pub region: Option<String>,
    /// Attempts per request, with the SDK's standard exponential backoff. Default 10.
    pub max_attempts: Option<u32>,
}

/// Time to establish a connection to S3 before the attempt fails (and is retried).
pub const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while reading an S3 response before the attempt fails (and is retried).
pub const S3_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Keys listed per prefix per poll, in batches of `batch_files`: bounds the memory a large backlog
/// takes (a slice at a time) without costing more requests than listing it whole.
const LISTING_BATCHES: usize = 20;

fn default_poll() -> u64 {
    60
}
fn default_checkpoint() -> u64 {
    30
}
fn default_batch() -> usize {
    500
}
fn default_settle() -> u64 {
    5
}

/// A parsed source or sink URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A bucket and key prefix (no trailing slash).
    S3 { bucket: String, prefix: String },
    /// A local folder.
    Local(PathBuf),
}

/// Parses `s3://bucket[/prefix]`, `file:///path` or a plain path.
pub fn parse_location(url: &str) -> anyhow::Result<Location> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "no bucket in {url:?}");
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    anyhow::ensure!(!path.is_empty(), "empty path in {url:?}");
    Ok(Location::Local(PathBuf::from(path)))
}

/// An S3 client for the settings (explicit rustls + ring HTTPS client, standard retries).
pub async fn s3_client(cfg: &S3Config) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http.clone());
    if let Some(r) = &cfg.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .http_client(http)
        .force_path_style(cfg.force_path_style)
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(cfg.max_attempts.unwrap_or(10)),
        )
        // A server that accepts a connection and then goes silent is an error (retried, then
        // an outage), never a request that waits forever.
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(S3_CONNECT_TIMEOUT)
                .read_timeout(S3_READ_TIMEOUT)
                .build(),
        );
    if shared.region().is_none() {
        b = b.region(aws_config::Region::new("us-east-1"));
    }
    if let Some(ep) = &cfg.endpoint_url {
        b = b.endpoint_url(ep);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// Common prefixes one level below `prefix` (which ends with `/` or is empty).
async fn sub_prefixes(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .delimiter("/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "ListObjectsV2 s3://{bucket}/{prefix}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        })?;
        out.extend(
            page.common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_string)),
        );
    }
    Ok(out)
}

/// What one poll found in a source.
#[derive(Debug, Default)]
struct Listed {
    /// New log files.
    files: Vec<SourceFile>,
    /// For each prefix whose listing stopped at the per-poll limit, its last key listed, as the
    /// (delivery minute, key) order used to process files.
    truncated_at: Vec<(Option<i64>, String)>,
    /// The first local file (in processing order) still being written: it and every file after
    /// it wait for a later poll.
    unsettled: Option<(Option<i64>, String)>,
}

/// New log files of an S3 source: every `…/CloudTrail/<region>/` prefix listed from its cursor
/// (`StartAfter`), at most `limit` keys per prefix per poll so a large backlog is taken in slices.
async fn list_s3(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    base: &str,
    cursors: &Cursors,
    limit: usize,
) -> anyhow::Result<Listed> {
    let base = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    let mut regions = Vec::new();
    for top in sub_prefixes(client, bucket, &format!("{base}AWSLogs/")).await? {
        let name = top.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let accounts = if name.starts_with("o-") {
            sub_prefixes(client, bucket, &top).await?
        } else {
            vec![top]
        };
        for account in accounts {
            regions.extend(sub_prefixes(client, bucket, &format!("{account}CloudTrail/")).await?);
        }
    }
    let mut listed = Listed::default();
    for region in regions {
        let mut req = client.list_objects_v2().bucket(bucket).prefix(&region);
        if let Some(c) = cursors.start_after(&region) {
            req = req.start_after(c);
        }
        let mut pages = req.into_paginator().send();
        let mut seen = 0usize;
        let mut last: Option<(Option<i64>, String)> = None;
        while let Some(page) = pages.next().await {
            if seen >= limit
                && let Some(last) = last.take()
            {
                // More keys remain after the last file listed: take them at the next poll.
                listed.truncated_at.push(last);
                break;
            }
            let page = page.map_err(|e| {
                anyhow::anyhow!(
                    "ListObjectsV2 s3://{bucket}/{region}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            })?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                seen += 1;
                if !is_log_file_name(key) || !cursors.is_new(key) {
                    continue;
                }
                let info = parse_key(key);
                if info.kind == KeyKind::Log {
                    let size = o.size().map_or(0, |s| s.max(0) as u64);
                    last = Some((info.delivered_minute, key.to_string()));
                    listed.files.push(SourceFile {
                        key: key.to_string(),
                        path: PathBuf::new(),
                        info,
                        size,
                    });
                }
            }
        }
    }
    Ok(listed)
}

/// The checkpoint in `dir`, or a new engine when there is none.
///
/// Returns `Err` (naming the file) when the checkpoint is corrupt or was written by an
/// incompatible version or configuration: never a silent reset.
fn load_or_new(dir: &std::path::Path, config: &Config) -> anyhow::Result<Checkpoint> {
    Ok(match load(dir, &config.detector)? {
        Some(c) => c,
        None => Checkpoint {
            engine: Engine::new(config.detector.clone())?,
            cursors: Cursors::default(),
            files_processed: 0,
        },
    })
}

/// New log files of one source (after `cursors`); S3 prefixes at most `limit` keys each.
async fn list_source(
    src: &Source,
    client: Option<&aws_sdk_s3::Client>,
    cursors: &Cursors,
    limit: usize,
    settle: Duration,
) -> anyhow::Result<Listed> {
    match &src.location {
        Location::Local(root) => {
            let root = root.clone();
            let cursors = cursors.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<Listed> {
                let listing = crate::source::local::list(&root)?;
                let files: Vec<SourceFile> = listing
                    .files
                    .into_iter()
                    .filter(|f| cursors.is_new(&f.key))
                    .collect();
                let now = std::time::SystemTime::now();
                let unsettled = files
                    .iter()
                    .find(|f| !crate::source::local::settled(&f.path, now, settle))
                    .map(|f| (f.info.delivered_minute, f.key.clone()));
                Ok(Listed {
                    files,
                    truncated_at: Vec::new(),
                    unsettled,
                })
            })
            .await?
        }
        Location::S3 { bucket, prefix } => {
            let client = client.context("no S3 client")?;
            list_s3(client, bucket, prefix, cursors, limit).await
        }
    }
}

/// What one poll of every source found.
struct Poll {
    /// New files (with their source's index), in processing order, up to the horizon.
    new_files: Vec<(usize, SourceFile)>,
    /// The earliest end of a listing slice, when a prefix has more keys than one poll lists.
    horizon: Option<(Option<i64>, String)>,
    /// False when a source could not be listed (then `new_files` is empty).
    listed_all: bool,
    /// Why the last source that failed could not be listed.
    listing_error: Option<String>,
    /// True when a local file is still being written (it and the files after it wait).
    unsettled: bool,
}

/// Lists every source from `cursors`, merges what is new into processing order (delivery time,
/// key, source) and keeps only what may go first: nothing when a source failed (the watermark is
/// shared, so no source may run ahead of another), nothing after a listing slice's end.
async fn poll_sources(
    sources: &[Source],
    client: Option<&aws_sdk_s3::Client>,
    cursors: &Cursors,
    sc: &ServeConfig,
) -> Poll {
    let mut new_files: Vec<(usize, SourceFile)> = Vec::new();
    let mut listed_all = true;
    let mut horizon: Option<(Option<i64>, String)> = None;
    let mut unsettled: Option<(Option<i64>, String)> = None;
    let mut listing_error = None;
    let limit = sc.batch_files.max(1).saturating_mul(LISTING_BATCHES);
    let settle = Duration::from_secs(sc.local_settle_seconds);
    for (i, src) in sources.iter().enumerate() {
        match list_source(src, client, cursors, limit, settle).await {
            Ok(listed) => {
                new_files.extend(listed.files.into_iter().map(|f| (i, f)));
                if let Some(u) = listed.unsettled
                    && unsettled.as_ref().is_none_or(|h| u < *h)
                {
                    unsettled = Some(u);
                }
                for t in listed.truncated_at {
                    if horizon.as_ref().is_none_or(|h| t < *h) {
                        horizon = Some(t);
                    }
                }
            }
            Err(e) => {
                listed_all = false;
                let error = format!("{e:#}");
                tracing::warn!(source = %src.id, error = %error, "listing failed; retrying at the next poll");
                listing_error = Some(format!("{}: {error}", src.id));
            }
        }
    }
    if !listed_all {
        new_files.clear();
    }
    new_files.sort_by(|a, b| {
        (a.1.info.delivered_minute, &a.1.key, a.0).cmp(&(b.1.info.delivered_minute, &b.1.key, b.0))
    });
    if let Some((minute, key)) = &horizon {
        tracing::info!(up_to = %key, "backlog: listed a slice, processing up to its end");
        new_files.retain(|(_, f)| (f.info.delivered_minute, &f.key) <= (*minute, key));
    }
    if let Some((minute, key)) = &unsettled {
        tracing::info!(file = %key, "a local file is still being written: it and the files after it wait");
        new_files.retain(|(_, f)| (f.info.delivered_minute, &f.key) < (*minute, key));
    }
    Poll {
        new_files,
        horizon,
        listed_all,
        listing_error,
        unsettled: unsettled.is_some(),
    }
}

struct Source {
    id: String,
    location: Location,
    fetcher: Fetcher,
}

/// Runs the service until SIGTERM/SIGINT (or, with `once`, until the sources have nothing new).
///
/// Returns `Err` when it cannot start (bad URLs, unreadable or incompatible checkpoint) or
/// cannot save a checkpoint; source and sink errors are logged and retried at the next poll.
pub async fn serve(config: Config, once: bool) -> anyhow::Result<()> {
    let sc = config
        .serve
        .clone()
        .context("the config has no [serve] table")?;
    sc.validate_source_settings()?;
    let client = if sc
        .sources
        .iter()
        .chain(&sc.sinks)
        .any(|u| u.starts_with("s3://"))
    {
        Some(s3_client(&sc.s3).await)
    } else {
        None
    };
    let mut sources = Vec::new();
    for url in &sc.sources {
        let location = parse_location(url)?;
        let fetcher = match &location {
            Location::S3 { bucket, .. } => {
                Fetcher::S3(client.clone().context("no S3 client")?, bucket.clone())
            }
            Location::Local(_) => Fetcher::Local,
        };
        sources.push(Source {
            id: url.clone(),
            location,
            fetcher,
        });
    }
    let mut sinks = Sinks::default();
    for url in &sc.sinks {
        match parse_location(url)? {
            Location::Local(p) => sinks.local = Some(LocalSink::new(&p)),
            Location::S3 { bucket, prefix } => {
                sinks.s3 = Some((client.clone().context("no S3 client")?, bucket, prefix))
            }
        }
    }
    anyhow::ensure!(!sources.is_empty(), "[serve] sources is empty");
    // Before any work: the state folder is ours (locked for the process's life) and writable, and
    // so is each local sink folder.
    let _state_lock = crate::state::lock(&sc.state_dir)?;
    for url in &sc.sinks {
        if let Location::Local(p) = parse_location(url)? {
            crate::state::check_writable(&p)
                .with_context(|| format!("sink folder {} is not writable", p.display()))?;
        }
    }

    let mut checkpoint = load_or_new(&sc.state_dir, &config)?;
    if checkpoint.files_processed > 0 {
        tracing::info!(
            files = checkpoint.files_processed,
            "resumed from checkpoint"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let notify = Arc::new(tokio::sync::Notify::new());
    {
        let (stop, notify) = (stop.clone(), notify.clone());
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.store(true, Ordering::SeqCst);
            notify.notify_one();
        });
    }
    let mut locations: BTreeMap<String, TrailLocation> = BTreeMap::new();
    let mut last_checkpoint = Instant::now();
    // Calls refused past `max_keys_per_region` already logged (the engine counts since start).
    let mut key_overflow_logged = 0u64;
    loop {
        let Poll {
            new_files,
            horizon,
            listed_all,
            listing_error,
            unsettled,
        } = poll_sources(&sources, client.as_ref(), &checkpoint.cursors, &sc).await;
        // Each account's trail location (prefix, organization), for the Insights keys: from the
        // files processed before (an End may come while an account has no new file) and the new ones.
        let processed = checkpoint.cursors.last_keys().map(parse_key);
        add_locations(
            &mut locations,
            processed.chain(new_files.iter().map(|(_, f)| f.info.clone())),
        );
        let had_new = !new_files.is_empty();
        let mut failed = !listed_all;
        // Why this poll failed (a source could not be listed, or a source or sink went down).
        let mut outage = listing_error;
        let fetchers: Vec<Fetcher> = sources.iter().map(|s| s.fetcher.clone()).collect();
        let mut iter = new_files.into_iter().peekable();
        while iter.peek().is_some() && !stop.load(Ordering::SeqCst) {
            let chunk: Vec<(usize, SourceFile)> =
                iter.by_ref().take(sc.batch_files.max(1)).collect();
            let mut summary = ReplaySummary::default();
            let engine = std::mem::replace(
                &mut checkpoint.engine,
                Engine::new(config.detector.clone())?,
            );
            let keys: Vec<String> = chunk.iter().map(|(_, f)| f.key.clone()).collect();
            let run = RunFiles {
                fetchers: &fetchers,
                sinks: sinks.clone(),
                locations: locations.clone(),
                finish: false,
                progress: None,
                stop: Some(stop.as_ref()),
                limits: crate::replay::FetchLimits::default(),
            };
            let result = run_files(engine, chunk, run, &mut summary).await;
            for p in &summary.problems {
                tracing::warn!(file = %p.key, reason = %p.reason, skipped = p.skipped, "unreadable log file");
            }
            for r in &summary.insights_rejected {
                tracing::warn!(insights = %r.key, records = r.records, reason = %r.reason, "Insights file refused for its content; skipped");
            }
            match result {
                Ok(engine) => checkpoint.engine = engine,
                Err(e) => {
                    // A source or sink outage: the engine went past what was written or read.
                    // Go back to the last checkpoint; its files are read again at the next poll,
                    // and the Insights they give are rewritten byte for byte.
                    tracing::error!(error = %e, "processing stopped; resuming from the last checkpoint at the next poll");
                    checkpoint = load_or_new(&sc.state_dir, &config)?;
                    failed = true;
                    outage = Some(e.to_string());
                    break;
                }
            }
            // After SIGTERM only the files in flight were finished: the rest are read after restart.
            let done = &keys[..summary.files_consumed.min(keys.len())];
            for key in done {
                checkpoint.cursors.advance(key);
            }
            checkpoint.files_processed += done.len() as u64;
            for path in &summary.files_written {
                tracing::info!(file = %path.display(), "Insights file written");
            }
            tracing::info!(
                files = done.len(),
                records = summary.records.records,
                skipped = summary.records.skipped,
                invalid_field = summary.records.invalid_field,
                out_of_bounds_time = summary.records.out_of_bounds_time,
                written = summary.files_written.len(),
                "processed"
            );
            if summary.key_overflow < key_overflow_logged {
                // The engine was reloaded from the checkpoint (its counter restarts at zero).
                key_overflow_logged = 0;
            }
            if summary.key_overflow > key_overflow_logged {
                tracing::warn!(
                    calls = summary.key_overflow - key_overflow_logged,
                    max_keys_per_region = config.detector.max_keys_per_region,
                    "calls not counted: their keys would be new to an account and Region at max_keys_per_region"
                );
                key_overflow_logged = summary.key_overflow;
            }
            if last_checkpoint.elapsed() >= Duration::from_secs(sc.checkpoint_interval_seconds) {
                let bytes = save(&sc.state_dir, &checkpoint)?;
                tracing::info!(bytes, "checkpoint");
                last_checkpoint = Instant::now();
            }
        }
        if !failed {
            save(&sc.state_dir, &checkpoint)?;
            last_checkpoint = Instant::now();
        }
        if once && failed {
            // `--once` must end: the S3 client's retries (`max_attempts`, with backoff and
            // timeouts) are the retry budget, and it is spent. The last checkpoint stands.
            anyhow::bail!(
                "--once: stopped by an unavailable source or sink after the client's retries \
                 (nothing after the last checkpoint was kept): {}",
                outage.unwrap_or_else(|| "unknown error".to_string())
            );
        }
        if stop.load(Ordering::SeqCst) || (once && !had_new && !failed && !unsettled) {
            break;
        }
        if once && !had_new && unsettled {
            // A local file is still being written: wait for it to settle, then poll again.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = notify.notified() => {}
            }
            continue;
        }
        if (once || horizon.is_some()) && !failed {
            // More is known to be waiting (or `--once` runs until nothing is new): poll again now.
            continue;
        }
        let mut wait = Duration::from_secs(sc.poll_interval_seconds);
        if unsettled {
            // Look again as soon as the file being written may have settled.
            wait = wait.min(Duration::from_secs(sc.local_settle_seconds.max(1)));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = notify.notified() => {}
        }
        if stop.load(Ordering::SeqCst) {
            if !failed {
                save(&sc.state_dir, &checkpoint)?;
            }
            break;
        }
    }
    tracing::info!(files = checkpoint.files_processed, "stopped");
    Ok(())
}
