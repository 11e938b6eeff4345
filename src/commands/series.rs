//! `trailsight series`: score a rate series in the Numenta Anomaly Benchmark
//! format (`timestamp,value`) and write NAB's results format
//! (`timestamp,value,anomaly_score,label`), with the series scorer of
//! `trailsight_detector::series`.
//!
//! Streaming: rows are read, scored and written one at a time, so memory stays
//! bounded (the scorer's history plus, when the bucket is inferred, the first
//! [`BUCKET_SAMPLE_ROWS`] rows) whatever the length of the series. The output is
//! written beside its final name and renamed into place only when every row was
//! scored, so a malformed row never leaves half a results file.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use trailsight_detector::series::csv::{
    RESULTS_HEADER, SeriesRow, format_row, median_spacing, parse_row,
};
use trailsight_detector::series::{SeriesConfig, SeriesScorer};

/// Rows read before scoring starts when the bucket length is inferred from the timestamps.
pub const BUCKET_SAMPLE_ROWS: usize = 1024;

/// Longest input line accepted, bytes (a NAB row is about 30).
pub const MAX_LINE_BYTES: usize = 4096;

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

/// Reads `input`, scores it and writes `output`, one row at a time.
///
/// `bucket` is the series' bucket length (e.g. `5m`); inferred from the median
/// spacing of the first [`BUCKET_SAMPLE_ROWS`] timestamps when `None`. Returns
/// `Err` naming the line of a malformed, over-long ([`MAX_LINE_BYTES`]) or
/// non-UTF-8 row, or the file that cannot be read or written; `output` is then
/// left untouched.
pub fn run(input: &Path, output: &Path, bucket: Option<&str>) -> anyhow::Result<SeriesSummary> {
    let file = File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let partial = partial_path(output);
    let result = (|| {
        let out = File::create(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let mut writer = BufWriter::with_capacity(1 << 16, out);
        let summary = score_stream(&mut reader, &mut writer, input, bucket)?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// `<output>.partial`, where the results are written before they are complete.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// Reads rows from `reader` and writes scored rows to `writer`.
fn score_stream(
    reader: &mut impl BufRead,
    writer: &mut impl Write,
    input: &Path,
    bucket: Option<&str>,
) -> anyhow::Result<SeriesSummary> {
    let mut rows = Rows {
        reader,
        line: String::new(),
        line_no: 0,
        input,
    };
    let given = match bucket {
        Some(b) => Some(
            humantime::parse_duration(b)
                .with_context(|| format!("bad --bucket {b:?}"))?
                .as_secs() as i64,
        ),
        None => None,
    };
    // The first rows, kept only to infer the bucket length.
    let mut head: Vec<SeriesRow> = Vec::new();
    if given.is_none() {
        while head.len() < BUCKET_SAMPLE_ROWS {
            match rows.next_row()? {
                Some(r) => head.push(r),
                None => break,
            }
        }
    }
    let bucket_seconds = given.unwrap_or_else(|| median_spacing(&head).unwrap_or(60));
    if bucket_seconds <= 0 || bucket_seconds > 86_400 {
        anyhow::bail!("bucket must be between 1 second and 1 day, got {bucket_seconds} s");
    }
    let mut scorer = SeriesScorer::new(SeriesConfig::default(), bucket_seconds);
    let mut summary = SeriesSummary {
        rows: 0,
        labeled: 0,
        bucket_seconds,
    };
    let mut text = String::with_capacity(64);
    let mut emit = |row: SeriesRow, w: &mut dyn Write| -> anyhow::Result<()> {
        let scored = scorer.push(row.unix_seconds, row.value);
        summary.rows += 1;
        summary.labeled += usize::from(scored.label == 1);
        text.clear();
        format_row(&mut text, &row, &scored);
        w.write_all(text.as_bytes())?;
        Ok(())
    };
    let io = |e: anyhow::Error| e.context("cannot write the results");
    writer.write_all(RESULTS_HEADER.as_bytes())?;
    for row in head {
        emit(row, writer).map_err(io)?;
    }
    while let Some(row) = rows.next_row()? {
        emit(row, writer).map_err(io)?;
    }
    Ok(summary)
}

/// Line-by-line reader of series rows with a bounded line length.
struct Rows<'a, R> {
    reader: &'a mut R,
    line: String,
    line_no: usize,
    input: &'a Path,
}

impl<R: BufRead> Rows<'_, R> {
    /// The next row, `None` at the end of the input.
    fn next_row(&mut self) -> anyhow::Result<Option<SeriesRow>> {
        loop {
            self.line.clear();
            self.line_no += 1;
            let read = (&mut *self.reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_line(&mut self.line)
                .with_context(|| format!("{}: line {}", self.input.display(), self.line_no))?;
            if read == 0 {
                return Ok(None);
            }
            if self.line.len() > MAX_LINE_BYTES && !self.line.ends_with('\n') {
                anyhow::bail!(
                    "{}: line {} is longer than {MAX_LINE_BYTES} bytes",
                    self.input.display(),
                    self.line_no
                );
            }
            let line = self.line.trim_end_matches(['\n', '\r']);
            match parse_row(line, self.line_no) {
                Ok(Some(row)) => return Ok(Some(row)),
                Ok(None) => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(self.input.display().to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailsight_detector::series::csv::{format_results, parse_series};
    use trailsight_detector::series::score_series;

    fn series(n: usize) -> String {
        let mut s = String::from("timestamp,value\n");
        for i in 0..n {
            let t = chrono::DateTime::from_timestamp(1_700_000_000 + 300 * i as i64, 0)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S");
            let v = if i == n - 50 { 500.0 } else { (i % 7) as f64 };
            s.push_str(&format!("{t},{v}\n"));
        }
        s
    }

    #[test]
    fn streaming_gives_the_same_bytes_as_scoring_the_whole_series() {
        let text = series(3000);
        let mut out = Vec::new();
        let summary =
            score_stream(&mut text.as_bytes(), &mut out, Path::new("x.csv"), None).unwrap();
        let rows = parse_series(&text).unwrap();
        let points: Vec<(i64, f64)> = rows.iter().map(|r| (r.unix_seconds, r.value)).collect();
        let whole = format_results(&rows, &score_series(&points, 300, &SeriesConfig::default()));
        assert_eq!(String::from_utf8(out).unwrap(), whole);
        assert_eq!(summary.rows, 3000);
        assert_eq!(summary.bucket_seconds, 300);
        assert!(summary.labeled >= 1);
    }

    #[test]
    fn a_bad_row_names_its_line_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        let output = dir.path().join("out.csv");
        let mut text = series(2000);
        text.push_str("2024-01-01 00:00:00,oops\n");
        std::fs::write(&input, &text).unwrap();
        let e = format!("{:#}", run(&input, &output, None).unwrap_err());
        assert!(e.contains("line 2002"), "{e}");
        assert!(!output.exists() && !partial_path(&output).exists());

        let long = format!(
            "timestamp,value\n2024-01-01 00:00:00,{}\n",
            "1".repeat(10_000)
        );
        std::fs::write(&input, long).unwrap();
        let e = format!("{:#}", run(&input, &output, None).unwrap_err());
        assert!(e.contains("line 2 is longer than 4096 bytes"), "{e}");

        std::fs::write(&input, b"timestamp,value\n2024-01-01 00:00:00,\xff1\n").unwrap();
        let e = format!("{:#}", run(&input, &output, None).unwrap_err());
        assert!(e.contains("line 2"), "{e}");
        assert!(!output.exists());
    }
}
