//! Benign calibration table: observed false Insights per key per 30 days and per
//! account-day against each sensitivity's budget (see `trailsight_detector::calibration`).
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-cal cargo run --release -p trailsight-detector --example calibrate -- --set tune
//! ```
//!
//! Options: `--set tune|report` (default `report`), `--nab DIR` (NAB series under their
//! `data/` paths, default `tests/data/rates/nab-counts`), `--windows FILE` (default
//! `DIR/combined_windows.json`, else `DIR/../labels/combined_windows.json`), `--twitter FILE`
//! (default `$TRAILSIGHT_TWITTER_CSV`, else `../shared/data/rates/twitter-1min/raw_data.csv`),
//! `--seed N`, `--accounts N`, `--days N` (after warm-up), `--settle N` (first days after
//! warm-up not counted), `--sparse N` (sparse keys per account), `--threads N`. Default paths are relative to the workspace root.

use std::path::{Path, PathBuf};
use std::time::Instant;

use trailsight_detector::DetectorConfig;
use trailsight_detector::calibration::{
    HarnessConfig, SeriesSet, load_set, markdown_table, run_calibration,
};
use trailsight_detector::policy::Sensitivity;

fn main() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut set = SeriesSet::Report;
    let mut nab = root.join("tests/data/rates/nab-counts");
    let mut windows: Option<PathBuf> = None;
    let mut twitter = std::env::var_os("TRAILSIGHT_TWITTER_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/data/rates/twitter-1min/raw_data.csv"));
    let mut cfg = HarnessConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--set" => set = value()?.parse().map_err(|e| format!("{e}"))?,
            "--nab" => nab = PathBuf::from(value()?),
            "--windows" => windows = Some(PathBuf::from(value()?)),
            "--twitter" => twitter = PathBuf::from(value()?),
            "--seed" => cfg.seed = num(value()?)?,
            "--accounts" => cfg.accounts = num(value()?)? as u32,
            "--days" => cfg.days_after_warmup = num(value()?)? as u32,
            "--settle" => cfg.settle_days = num(value()?)? as u32,
            "--sparse" => cfg.sparse_keys_per_account = num(value()?)? as u32,
            "--threads" => cfg.threads = num(value()?)? as usize,
            "-h" | "--help" => {
                println!(
                    "calibrate [--set tune|report] [--nab DIR] [--windows FILE] [--twitter FILE] \
                     [--seed N] [--accounts N] [--days N] [--settle N] [--sparse N] [--threads N]"
                );
                return Ok(());
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let windows = windows.unwrap_or_else(|| {
        let inside = nab.join("combined_windows.json");
        if inside.exists() {
            inside
        } else {
            nab.join("../labels/combined_windows.json")
        }
    });
    let windows_json =
        std::fs::read_to_string(&windows).map_err(|e| format!("{}: {e}", windows.display()))?;
    let twitter_csv = if set.includes_twitter() {
        match std::fs::read_to_string(&twitter) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!(
                    "SKIP: Twitter rate series not read ({}: {e}); set --twitter or TRAILSIGHT_TWITTER_CSV",
                    twitter.display()
                );
                None
            }
        }
    } else {
        None
    };
    let series = load_set(
        set,
        |name| std::fs::read_to_string(nab.join(name)).map_err(|e| e.to_string()),
        &windows_json,
        twitter_csv.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let report = run_calibration(
        &series,
        &DetectorConfig::default(),
        &[Sensitivity::Low, Sensitivity::Medium, Sensitivity::High],
        &cfg,
    )
    .map_err(|e| e.to_string())?;
    println!(
        "## Benign calibration, {} set (seed {}, {} accounts × {} busy + {} sparse keys, {} days after warm-up, first {} not counted)\n",
        set.name(),
        cfg.seed,
        cfg.accounts,
        cfg.busy_keys_per_account,
        cfg.sparse_keys_per_account,
        cfg.days_after_warmup,
        cfg.settle_days
    );
    print!("{}", markdown_table(&report));
    eprintln!("{:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
