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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use trailsight_detector::Engine;

use crate::config::{Config, Location, ServeConfig, parse_location};
use crate::layout::{TrailLocation, add_locations, parse_key};
use crate::metrics::{Event, Metrics};
use crate::ops::Ops;
use crate::pipeline::cursor::Cursors;
use crate::pipeline::state::{Checkpoint, load, save};
use crate::pipeline::{FetchLimits, ReplaySummary, RunFiles, run_files};
use crate::s3::s3_client;
use crate::sink::Sinks;
use crate::sink::local::LocalSink;
use crate::sink::s3::S3Sink;
use crate::source::{Source, SourceFile};

/// Keys listed per prefix per poll, in batches of `batch_files`: bounds the memory a large backlog
/// takes (a slice at a time) without costing more requests than listing it whole.
const LISTING_BATCHES: usize = 20;

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
    sources: &[NamedSource],
    cursors: &Cursors,
    sc: &ServeConfig,
    metrics: &Metrics,
) -> Poll {
    let mut new_files: Vec<(usize, SourceFile)> = Vec::new();
    let mut listed_all = true;
    let mut horizon: Option<(Option<i64>, String)> = None;
    let mut unsettled: Option<(Option<i64>, String)> = None;
    let mut listing_error = None;
    let limit = sc.batch_files.max(1).saturating_mul(LISTING_BATCHES);
    let settle = Duration::from_secs(sc.local_settle_seconds);
    for (i, src) in sources.iter().enumerate() {
        match src.source.list_new(cursors, limit, settle).await {
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
            Err(error) => {
                listed_all = false;
                metrics.emit(Event::SourceFailed {
                    key: &src.id,
                    error: &error,
                });
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

/// A configured source: its URL (for logs) and where it reads.
struct NamedSource {
    id: String,
    source: Source,
}

/// Writes the checkpoint off the async runtime (encode, write, fsync on the blocking pool), timed,
/// logged and counted; hands the checkpoint back with whether it was written.
///
/// Returns `Err` only when the blocking task itself fails (the checkpoint is then lost with it).
async fn save_checkpoint(
    dir: &std::path::Path,
    checkpoint: Checkpoint,
    metrics: &Metrics,
) -> anyhow::Result<(Checkpoint, Result<(), crate::pipeline::state::StateError>)> {
    let dir = dir.to_path_buf();
    let started = Instant::now();
    let (checkpoint, result) = tokio::task::spawn_blocking(move || {
        let result = save(&dir, &checkpoint);
        (checkpoint, result)
    })
    .await
    .context("checkpoint task failed")?;
    let seconds = started.elapsed().as_secs_f64();
    let reason = result.as_ref().err().map(ToString::to_string);
    metrics.emit(Event::Checkpoint {
        result: match (&result, &reason) {
            (Ok(bytes), _) => Ok(*bytes),
            (Err(_), reason) => Err(reason.as_deref().unwrap_or_default()),
        },
        seconds,
    });
    Ok((checkpoint, result.map(drop)))
}

/// Binds the operator endpoints (unless `listen` is `"off"`) and serves them in a task.
///
/// Returns `Err` naming the address when it cannot be bound (in use, not local, no permission).
async fn start_ops(
    listen: &str,
    ops: &Arc<Ops>,
    api: axum::Router,
    token: Option<String>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if listen == "off" {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} ([serve] listen)"))?;
    let addr = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    tracing::info!(address = %addr, "operator endpoints: /metrics, /healthz, /readyz");
    let ops = ops.clone();
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = crate::ops::serve(listener, ops, api, token, std::future::pending()).await {
            tracing::error!(error = %e, "operator endpoints stopped");
        }
    })))
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
        let source = match parse_location(url)? {
            Location::S3 { bucket, prefix } => Source::S3 {
                client: client.clone().context("no S3 client")?,
                bucket,
                prefix,
            },
            Location::Local(root) => Source::Local(root),
        };
        sources.push(NamedSource {
            id: url.clone(),
            source,
        });
    }
    let mut sinks = Sinks::default();
    for url in &sc.sinks {
        match parse_location(url)? {
            Location::Local(p) => sinks.local = Some(LocalSink::new(&p)),
            Location::S3 { bucket, prefix } => {
                sinks.s3 = Some(S3Sink {
                    client: client.clone().context("no S3 client")?,
                    bucket,
                    prefix,
                })
            }
        }
    }
    anyhow::ensure!(!sources.is_empty(), "[serve] sources is empty");
    // Before any work: the state folder is ours (locked for the process's life) and writable, and
    // so is each local sink folder.
    let local_sinks: Vec<std::path::PathBuf> = sc
        .sinks
        .iter()
        .filter_map(|url| match parse_location(url) {
            Ok(Location::Local(p)) => Some(p),
            _ => None,
        })
        .collect();
    let state_dir = sc.state_dir.clone();
    let _state_lock = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let lock = crate::pipeline::state::lock(&state_dir)?;
        for p in &local_sinks {
            crate::pipeline::state::check_writable(p)
                .with_context(|| format!("sink folder {} is not writable", p.display()))?;
        }
        Ok(lock)
    })
    .await??;

    let metrics = Arc::new(Metrics::new()?);
    let ops = Arc::new(Ops::new(metrics.clone()));
    // The API's store (state_dir/insights.sqlite); rebuilt from the sink's Insights files (a
    // local folder, else the S3 bucket) when it is new (deleted, or a first start after a
    // replay without --state).
    let store_path = sc.state_dir.join(crate::pipeline::state::STORE_FILE);
    let store = Arc::new(
        tokio::task::spawn_blocking(move || trailsight_api::Store::open(&store_path)).await??,
    );
    let empty = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.count()).await?? == 0
    };
    if empty {
        let (files, from) = match (&sinks.local, &sinks.s3) {
            (Some(local), _) => {
                let root = local.root().to_path_buf();
                let shown = root.display().to_string();
                let files = tokio::task::spawn_blocking(move || {
                    if root.exists() {
                        crate::sink::local::read_insight_files(&root)
                    } else {
                        Ok(Vec::new())
                    }
                })
                .await??;
                (files, shown)
            }
            // The store is a view: S3 out of reach leaves it empty for now, it never stops the
            // service (the records written from now on fill it).
            (None, Some(s3)) => match s3.read_insight_files().await {
                Ok(files) => (files, format!("s3://{}/{}", s3.bucket, s3.prefix)),
                Err(e) => {
                    tracing::warn!(error = %e, "Insights store not rebuilt from the S3 sink");
                    (Vec::new(), String::new())
                }
            },
            (None, None) => (Vec::new(), String::new()),
        };
        let store = store.clone();
        let n =
            tokio::task::spawn_blocking(move || -> Result<usize, trailsight_api::StoreError> {
                let mut n = 0;
                for (_, records) in files {
                    for r in records {
                        let account = r.recipient_account_id.clone().unwrap_or_default();
                        n += store.insert(&account, &r.aws_region.clone(), &[r])?.len();
                    }
                }
                Ok(n)
            })
            .await??;
        if n > 0 {
            tracing::info!(records = n, sink = %from, "Insights store rebuilt from the sink");
        }
    }
    let api = trailsight_api::Api::new(store, config.api.effective_token());
    sinks.api = Some(api.clone());
    let mut hooks = Vec::new();
    for w in &config.api.webhooks {
        hooks.push(
            trailsight_api::webhooks::Webhook::new(&w.url, &w.secret)
                .context("invalid config: api.webhooks")?,
        );
    }
    let report_metrics = metrics.clone();
    let webhooks_task = tokio::spawn(trailsight_api::webhooks::deliver(
        api.clone(),
        hooks,
        Arc::new(move |delivered| report_metrics.emit(Event::WebhookAttempt { delivered })),
    ));
    let operator_token =
        if config.api.protect_operator_routes {
            Some(api.token().map(str::to_string).context(
                "[api] protect_operator_routes needs [api] token (or TRAILSIGHT_API_TOKEN)",
            )?)
        } else {
            None
        };
    let ops_task = start_ops(&sc.listen, &ops, api.router(), operator_token).await?;
    let (dir, cfg) = (sc.state_dir.clone(), config.clone());
    let mut checkpoint = tokio::task::spawn_blocking(move || load_or_new(&dir, &cfg)).await??;
    crate::pipeline::report_engine_loaded(&metrics, &checkpoint.engine);
    api.update_keys(checkpoint.engine.key_reports());
    ops.state_loaded();
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
    let mut last_roll_up: Option<Instant> = None;
    // Calls refused past `max_keys_per_region` already logged (the engine counts since start).
    let mut key_overflow_logged = 0u64;
    loop {
        let poll_started = Instant::now();
        let Poll {
            new_files,
            horizon,
            listed_all,
            listing_error,
            unsettled,
        } = poll_sources(&sources, &checkpoint.cursors, &sc, &metrics).await;
        // Ready means "the last poll reached every source": known as soon as the listing ends,
        // not after a long backlog is processed.
        if listed_all {
            metrics.emit(Event::SourcesReached);
            ops.poll_ended(Ok(()));
        }
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
        let readers: Vec<Source> = sources.iter().map(|s| s.source.clone()).collect();
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
                sources: &readers,
                sinks: sinks.clone(),
                locations: locations.clone(),
                finish: false,
                progress: None,
                stop: Some(stop.as_ref()),
                limits: FetchLimits::default(),
                metrics: Some(metrics.clone()),
            };
            // Files, records, Insights files and sink refusals are logged and counted as they
            // happen (crate::metrics); this loop logs only what the chunk adds up to.
            let result = run_files(engine, chunk, run, &mut summary).await;
            match result {
                Ok(engine) => {
                    checkpoint.engine = engine;
                    api.update_keys(checkpoint.engine.key_reports());
                }
                Err(e) => {
                    // A source or sink outage: the engine went past what was written or read.
                    // Go back to the last checkpoint; its files are read again at the next poll,
                    // and the Insights they give are rewritten byte for byte.
                    tracing::error!(error = %e, "processing stopped; resuming from the last checkpoint at the next poll");
                    let (dir, cfg) = (sc.state_dir.clone(), config.clone());
                    checkpoint =
                        tokio::task::spawn_blocking(move || load_or_new(&dir, &cfg)).await??;
                    crate::pipeline::report_engine_loaded(&metrics, &checkpoint.engine);
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
            // A checkpoint that cannot be written (disk full, permissions) is logged and
            // counted, and tried again at the next opportunity: Insights keep flowing, and a
            // restart re-reads more files (nothing is lost, Insights are deterministic).
            if last_checkpoint.elapsed() >= Duration::from_secs(sc.checkpoint_interval_seconds) {
                let written;
                (checkpoint, written) =
                    save_checkpoint(&sc.state_dir, checkpoint, &metrics).await?;
                if written.is_ok() {
                    last_checkpoint = Instant::now();
                }
            }
        }
        if !failed {
            let written;
            (checkpoint, written) = save_checkpoint(&sc.state_dir, checkpoint, &metrics).await?;
            if written.is_ok() {
                last_checkpoint = Instant::now();
            }
        }
        // Retention of the API's store, by eventTime.
        let cutoff = (chrono::Utc::now()
            - chrono::Duration::days(i64::from(config.api.retention_days)))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
        let store = api.store().clone();
        match tokio::task::spawn_blocking(move || store.delete_before(&cutoff)).await? {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                records = n,
                "Insights store: records past retention deleted"
            ),
            Err(e) => tracing::warn!(error = %e, "Insights store: retention failed"),
        }
        // Series roll-ups and retention scan the counts: hourly, not every poll.
        if last_roll_up.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_roll_up = Some(Instant::now());
            let store = api.store().clone();
            let retention = trailsight_api::store::SeriesRetention {
                retention_days: i64::from(config.api.retention_days),
                series_days: i64::from(config.api.series_days),
                keep_apis: config.api.keep_series.clone(),
            };
            match tokio::task::spawn_blocking(move || store.roll_up_series(&retention)).await? {
                Ok(done) => tracing::debug!(
                    to_five_minutes = done.to_five_minutes,
                    to_one_hour = done.to_one_hour,
                    deleted = done.deleted,
                    "Insights store: series rolled up"
                ),
                Err(e) => tracing::warn!(error = %e, "Insights store: series roll-up failed"),
            }
        }
        metrics.emit(Event::Poll {
            failure: outage.as_deref().filter(|_| failed),
            seconds: poll_started.elapsed().as_secs_f64(),
        });
        if failed {
            ops.poll_ended(Err(outage
                .clone()
                .unwrap_or_else(|| "processing stopped".into())));
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
                // The last checkpoint before exit: failing it is an error (exit non-zero).
                let written;
                (checkpoint, written) =
                    save_checkpoint(&sc.state_dir, checkpoint, &metrics).await?;
                written?;
            }
            break;
        }
    }
    tracing::info!(files = checkpoint.files_processed, "stopped");
    if let Some(task) = ops_task {
        task.abort();
    }
    webhooks_task.abort();
    Ok(())
}
