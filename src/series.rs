//! `trailsight series`: score a rate series in the Numenta Anomaly Benchmark
//! format (`timestamp,value`) and write NAB's results format
//! (`timestamp,value,anomaly_score,label`), with the series scorer of
//! `trailsight_baseline::series`.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime};
use trailsight_baseline::series::{SeriesConfig, score_series};

/// Parses a NAB timestamp (`2014-04-01 00:05:00`, optionally with fractional
/// seconds) or an RFC 3339 time; returns Unix seconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp());
        }
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp())
}

/// Summary of a scored series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSummary {
    /// Rows scored.
    pub rows: usize,
    /// Rows labeled 1 (an Insight open).
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
    let mut rows: Vec<(&str, i64, f64)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if n == 0 && line.to_ascii_lowercase().starts_with("timestamp") || line.trim().is_empty() {
            continue;
        }
        let (ts, value) = line.split_once(',').with_context(|| {
            format!("{}:{}: expected `timestamp,value`", input.display(), n + 1)
        })?;
        let t = parse_timestamp(ts)
            .with_context(|| format!("{}:{}: bad timestamp {ts:?}", input.display(), n + 1))?;
        let v: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("{}:{}: bad value {value:?}", input.display(), n + 1))?;
        rows.push((ts, t, v));
    }
    let bucket_seconds = match bucket {
        Some(b) => humantime::parse_duration(b)
            .with_context(|| format!("bad --bucket {b:?}"))?
            .as_secs() as i64,
        None => {
            let mut gaps: Vec<i64> = rows
                .windows(2)
                .map(|w| w[1].1 - w[0].1)
                .filter(|g| *g > 0)
                .collect();
            gaps.sort_unstable();
            gaps.get(gaps.len() / 2).copied().unwrap_or(60)
        }
    };
    if bucket_seconds <= 0 || bucket_seconds > 86_400 {
        anyhow::bail!("bucket must be between 1 second and 1 day, got {bucket_seconds} s");
    }
    let points: Vec<(i64, f64)> = rows.iter().map(|r| (r.1, r.2)).collect();
    let scored = score_series(&points, &SeriesConfig::for_bucket(bucket_seconds));
    let mut out = String::with_capacity(rows.len() * 48);
    out.push_str("timestamp,value,anomaly_score,label\n");
    for ((ts, _, v), s) in rows.iter().zip(&scored) {
        out.push_str(&format!("{ts},{v},{:.6},{}\n", s.anomaly_score, s.label));
    }
    std::fs::write(output, out).with_context(|| format!("cannot write {}", output.display()))?;
    Ok(SeriesSummary {
        rows: rows.len(),
        labeled: scored.iter().filter(|s| s.label == 1).count(),
        bucket_seconds,
    })
}
