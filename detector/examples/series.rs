//! A quick stand-in for `trailsight series` with the same CLI and output,
//! built without the main crate's AWS SDK (seconds instead of minutes), for
//! scoring the series scorer on NAB:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-nab cargo build --release -p trailsight-detector --example series
//! ../shared/tools/nab-score /work/target-nab/release/examples/series
//! ```
//!
//! `TRAILSIGHT_SERIES_CONFIG` may override settings for experiments
//! (`scales=1,4,16;history=3000;refractory=100`); the real binary always
//! uses the defaults.

use std::process::ExitCode;

use trailsight_detector::series::csv::{format_results, median_spacing, parse_series};
use trailsight_detector::series::{SeriesConfig, score_series};

fn config() -> Result<SeriesConfig, String> {
    let mut cfg = SeriesConfig::default();
    let Ok(spec) = std::env::var("TRAILSIGHT_SERIES_CONFIG") else {
        return Ok(cfg);
    };
    for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or(format!("bad setting {item:?}"))?;
        let f = || v.parse::<f64>().map_err(|e| format!("{k}: {e}"));
        let u = || v.parse::<usize>().map_err(|e| format!("{k}: {e}"));
        match k.trim() {
            "scales" => {
                cfg.scales = v
                    .split(',')
                    .map(|s| s.parse::<usize>().map_err(|e| format!("{k}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "history" => cfg.history = u()?,
            "min_history" => cfg.min_history = u()?,
            "refractory" => cfg.refractory = u()?,
            "half_score_bits" => cfg.half_score_bits = f()?,
            "tail_fraction" => cfg.tail_fraction = f()?,
            "min_tail" => cfg.min_tail = u()?,
            "tail_scale_floor" => cfg.tail_scale_floor = f()?,
            "profile_max_spread_ratio" => cfg.profile_max_spread_ratio = f()?,
            "repeat_factor" => cfg.repeat_factor = f()?,
            "burst_gap" => cfg.burst_gap = u()?,
            "burst_bits" => cfg.burst_bits = f()?,
            "profile_days" => cfg.profile_days = u()?,
            "profile_min_days" => cfg.profile_min_days = u()?,
            "profile_weeks" => cfg.profile_weeks = u()?,
            "profile_min_weeks" => cfg.profile_min_weeks = u()?,
            other => return Err(format!("unknown setting {other:?}")),
        }
    }
    Ok(cfg)
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .ok_or(format!(
                "usage: series --input FILE.csv --output RESULT.csv (missing {name})"
            ))
    };
    if args.first().map(String::as_str) != Some("series") {
        return Err("usage: series --input FILE.csv --output RESULT.csv".into());
    }
    let (input, output) = (arg("--input")?, arg("--output")?);
    let text = std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?;
    let rows = parse_series(&text).map_err(|e| format!("{input}: {e}"))?;
    let points: Vec<(i64, f64)> = rows.iter().map(|r| (r.unix_seconds, r.value)).collect();
    let bucket = median_spacing(&rows).unwrap_or(60).clamp(1, 86_400);
    let scored = score_series(&points, bucket, &config()?);
    std::fs::write(output, format_results(&rows, &scored)).map_err(|e| format!("{output}: {e}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("series: {e}");
            ExitCode::FAILURE
        }
    }
}
