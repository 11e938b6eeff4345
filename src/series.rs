//! `trailsight series`: score a rate series in the Numenta Anomaly Benchmark
//! format (`timestamp,value`) and write NAB's results format
//! (`timestamp,value,anomaly_score,label`), with the series scorer of
//! `trailsight_detector::series`.

use std::path::Path;

use anyhow::Context;
use trailsight_detector::series::csv::{format_results, median_spacing, parse_series};
use trailsight_detector::series::{SeriesConfig, score_series};

/// Summary of a scored series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSummary {
    /// Rows scored.
    pub rows: usize,
    /// Rows labeled 1 (anomaly score at or above the label threshold).
    pub labeled: usize,
    /// Bucket length used, seconds.
    pub bucket_seconds: i64,
}

/// Reads `input`, scores it and writes `output`.
///
/// `bucket` is the series' bucket length (e.g. `5m`); inferred from the median
/// spacing of the timestamps when `None`. Returns `Err` naming the line of a
/// malformed row, or the file that cannot be read or written.
pub fn run(input: &Path, output: &Path, bucket: Option<&str>) -> anyhow::Result<SeriesSummary> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let rows = parse_series(&text).with_context(|| format!("{}", input.display()))?;
    let bucket_seconds = match bucket {
        Some(b) => humantime::parse_duration(b)
            .with_context(|| format!("bad --bucket {b:?}"))?
            .as_secs() as i64,
        None => median_spacing(&rows).unwrap_or(60),
    };
    if bucket_seconds <= 0 || bucket_seconds > 86_400 {
        anyhow::bail!("bucket must be between 1 second and 1 day, got {bucket_seconds} s");
    }
    let points: Vec<(i64, f64)> = rows.iter().map(|r| (r.unix_seconds, r.value)).collect();
    let scored = score_series(&points, bucket_seconds, &SeriesConfig::default());
    std::fs::write(output, format_results(&rows, &scored))
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(SeriesSummary {
        rows: rows.len(),
        labeled: scored.iter().filter(|s| s.label == 1).count(),
        bucket_seconds,
    })
}
