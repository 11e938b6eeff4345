//! NAB's series format in and out: `timestamp,value` rows in, and
//! `timestamp,value,anomaly_score,label` rows out. Pure: text in, text out.

use chrono::{DateTime, NaiveDateTime};

use super::ScoredPoint;

/// A malformed input row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeriesCsvError {
    /// A row without a `timestamp,value` pair.
    #[error("line {line}: expected `timestamp,value`")]
    MissingValue {
        /// 1-based line number.
        line: usize,
    },
    /// An unreadable timestamp.
    #[error("line {line}: bad timestamp {text:?}")]
    BadTimestamp {
        /// 1-based line number.
        line: usize,
        /// The field as written.
        text: String,
    },
    /// An unreadable value.
    #[error("line {line}: bad value {text:?}")]
    BadValue {
        /// 1-based line number.
        line: usize,
        /// The field as written.
        text: String,
    },
}

/// One input row: the timestamp as written, Unix seconds, and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRow {
    /// The timestamp field exactly as written (echoed in the output).
    pub timestamp: String,
    /// The timestamp in Unix seconds.
    pub unix_seconds: i64,
    /// The value (may be NaN or infinite: `nan`, `inf` parse).
    pub value: f64,
}

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

/// Parses one line of a series (1-based `line_no`): `Ok(None)` for a blank line or, on the
/// first line, a header starting with `timestamp`.
///
/// Returns `Err` naming the line when the row has no `timestamp,value` pair or a field is
/// unreadable. Work is linear in the line's length.
pub fn parse_row(line: &str, line_no: usize) -> Result<Option<SeriesRow>, SeriesCsvError> {
    let trimmed = line.trim();
    let header = line_no == 1
        && trimmed
            .get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case("timestamp"));
    if header || trimmed.is_empty() {
        return Ok(None);
    }
    let (ts, value) = line
        .split_once(',')
        .ok_or(SeriesCsvError::MissingValue { line: line_no })?;
    let unix_seconds = parse_timestamp(ts).ok_or_else(|| SeriesCsvError::BadTimestamp {
        line: line_no,
        text: ts.chars().take(64).collect(),
    })?;
    let value: f64 = value.trim().parse().map_err(|_| SeriesCsvError::BadValue {
        line: line_no,
        text: value.chars().take(64).collect(),
    })?;
    Ok(Some(SeriesRow {
        timestamp: ts.to_string(),
        unix_seconds,
        value,
    }))
}

/// Parses `timestamp,value` rows; a first line starting with `timestamp` is a
/// header, blank lines are skipped.
pub fn parse_series(text: &str) -> Result<Vec<SeriesRow>, SeriesCsvError> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        rows.extend(parse_row(line, n + 1)?);
    }
    Ok(rows)
}

/// The median spacing of the timestamps in seconds (positive gaps only), or
/// `None` for fewer than two distinct times.
pub fn median_spacing(rows: &[SeriesRow]) -> Option<i64> {
    let mut gaps: Vec<i64> = rows
        .windows(2)
        .map(|w| w[1].unix_seconds - w[0].unix_seconds)
        .filter(|g| *g > 0)
        .collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied()
}

/// The header line of NAB's results format (with its newline).
pub const RESULTS_HEADER: &str = "timestamp,value,anomaly_score,label\n";

/// Appends one row of NAB's results format, `timestamp,value,anomaly_score,label`
/// (score with six decimals), with its newline.
pub fn format_row(out: &mut String, row: &SeriesRow, scored: &ScoredPoint) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{},{},{:.6},{}",
        row.timestamp, row.value, scored.anomaly_score, scored.label
    );
}

/// NAB's results format: `timestamp,value,anomaly_score,label`, one line per
/// row (scores with six decimals).
pub fn format_results(rows: &[SeriesRow], scored: &[ScoredPoint]) -> String {
    let mut out = String::with_capacity(rows.len() * 48 + 40);
    out.push_str(RESULTS_HEADER);
    for (r, s) in rows.iter().zip(scored) {
        format_row(&mut out, r, s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nab_rows_and_reports_bad_lines() {
        let rows =
            parse_series("timestamp,value\n2014-04-01 00:00:00,1.5\n\n2014-04-01 00:05:00,nan\n")
                .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].unix_seconds - rows[0].unix_seconds, 300);
        assert!(rows[1].value.is_nan());
        assert_eq!(median_spacing(&rows), Some(300));
        assert_eq!(
            parse_series("timestamp,value\n2014-04-01 00:00:00\n"),
            Err(SeriesCsvError::MissingValue { line: 2 })
        );
        assert!(matches!(
            parse_series("x,1\n"),
            Err(SeriesCsvError::BadTimestamp { line: 1, .. })
        ));
        assert!(matches!(
            parse_series("2014-04-01 00:00:00,abc\n"),
            Err(SeriesCsvError::BadValue { line: 1, .. })
        ));
    }
}
