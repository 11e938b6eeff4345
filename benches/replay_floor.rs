//! Replay against the ingest floor, on the same files in the same run.
//!
//! The floor: every log file (its bytes already in memory) inflated (flate2 with zlib-rs) and
//! its records parsed with serde_json into the fields detection needs (borrowed where
//! unescaped), on every core, with no detection and no output. Replay: `trailsight replay` of the same folder to a temporary
//! sink (decode, dedup, aggregate, detect, write Insights), as a user runs it. The figure is
//! replay's throughput over the floor's (1.0 = replay costs no more than reading the records).
//!
//! The files are the demo bucket (real Stratus Red Team and AWS docs records, fresh
//! `eventTime`/`eventID`, 5-minute gzip files as CloudTrail delivers them) at 20× its rates;
//! `TRAILSIGHT_BENCH_DAYS` sets its length (default 3 days). Five runs, alternating; prints each,
//! the ratio of the medians and of the best runs (wall times vary ~25 % run to run here).
//! Run: `cargo bench --bench replay_floor`.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Identity<'a> {
    #[serde(borrow)]
    arn: Option<Cow<'a, str>>,
}

/// The fields detection reads (as `trailsight_detector::record` does).
#[derive(Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    #[serde(borrow)]
    event_time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    aws_region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    recipient_account_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "eventID")]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_agent: Option<Cow<'a, str>>,
    read_only: Option<bool>,
    management_event: Option<bool>,
    #[serde(borrow)]
    user_identity: Option<Identity<'a>>,
}

#[derive(Deserialize)]
struct Log<'a> {
    #[serde(borrow, rename = "Records")]
    records: Vec<Record<'a>>,
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().to_string_lossy().ends_with(".json.gz"))
        .map(|e| e.into_path())
        .collect();
    out.sort();
    out
}

/// Inflate + parse every file (its bytes in memory) on `threads` threads, each taking the
/// next file from a shared counter; returns records parsed.
fn floor(files: &[Vec<u8>], threads: usize) -> u64 {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut json = Vec::new();
                    let mut records = 0u64;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(gz) = files.get(i) else { break };
                        json.clear();
                        if flate2::bufread::MultiGzDecoder::new(&gz[..])
                            .read_to_end(&mut json)
                            .is_err()
                        {
                            continue;
                        }
                        if let Ok(log) = serde_json::from_slice::<Log<'_>>(&json) {
                            records += log.records.len() as u64;
                        }
                    }
                    records
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let days: f64 = std::env::var("TRAILSIGHT_BENCH_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let (bucket, stats) =
        trailsight::synth::demo::write_demo_bucket(dir.path(), days, 20.0).expect("demo bucket");
    let list = files(&bucket);
    let bytes: u64 = list
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "corpus: demo bucket, {days} days at 20×: {} files, {} records, {:.1} MB gzip; {cores} cores",
        list.len(),
        stats.records,
        bytes as f64 / 1e6
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("runtime");
    // The floor reads from memory (replay reads the files: the page cache holds them).
    let bytes_of: Vec<Vec<u8>> = list.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    floor(&bytes_of, cores);
    let (mut floors, mut replays) = (Vec::new(), Vec::new());
    for run in 1..=5 {
        let t = Instant::now();
        let parsed = floor(&bytes_of, cores);
        let f = t.elapsed().as_secs_f64();
        let sink = tempfile::tempdir().expect("sink");
        let t = Instant::now();
        let summary = runtime
            .block_on(trailsight::commands::replay::replay(
                trailsight::commands::replay::ReplayOptions {
                    source: bucket.clone(),
                    sink: sink.path().to_path_buf(),
                    config: Default::default(),
                    progress: false,
                    state: None,
                },
            ))
            .expect("replay");
        let r = t.elapsed().as_secs_f64();
        println!(
            "run {run}: floor {f:.3} s ({:.0} records/s), replay {r:.3} s ({:.0} records/s, {} Insights started): replay/floor {:.2}",
            parsed as f64 / f,
            summary.records.records as f64 / r,
            summary.insights_started,
            f / r
        );
        floors.push(f);
        replays.push(r);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (bf, br) = (best(&floors), best(&replays));
    let (f, r) = (median(floors), median(replays));
    println!(
        "median: floor {f:.3} s, replay {r:.3} s: replay reaches {:.2} of the floor; best runs: {:.2} \
         ({:.0} records/s per core)",
        f / r,
        bf / br,
        stats.records as f64 / br / cores as f64
    );
}
