//! The series behind Insights: per-minute counts of every tracked key and the detector's
//! hourly judgements, with `ListInsightsMetricData` roll-ups.
//!
//! Tables: `series_keys` (one row per rate key), `counts` (key, minute, `span` of the row in
//! minutes: 1, 5 or 60, calls) and `judgements` (key, hour, the detector's
//! [`Judgement`] in postcard). Times are minutes (or hours) since the Unix epoch, UTC buckets.
//!
//! Retention (see [`Store::roll_up_series`]), relative to the newest closed minute (event time,
//! so a backfill keeps its own history): 1-minute rows for 15 days, then 5-minute rows to 63
//! days, then 1-hour rows to `retention_days` (as CloudTrail keeps 60, 300 and 3600 s points).
//! Keys that never had an Insight stored, and whose API is not listed to be kept, keep only
//! `series_days` of counts: enough to draw the days before an Insight that starts later.
//!
//! Known limit: a closed minute's count is set (closing it again after a restart from the
//! checkpoint gives the same row), but a late call is added; a late call in a file read again
//! after a restart is counted twice in its minute (the Insights themselves are exact).

use std::collections::HashMap;

use rusqlite::OptionalExtension;
use trailsight_detector::{Judgement, SeriesBatch, SeriesKey};

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series_keys (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    event_source TEXT NOT NULL,
    event_name TEXT NOT NULL,
    error_code TEXT NOT NULL,
    UNIQUE (account, region, event_source, event_name, error_code)
);
CREATE TABLE IF NOT EXISTS counts (
    key INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    span INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (key, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS judgements (
    key INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    judgement BLOB NOT NULL,
    PRIMARY KEY (key, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    closed_before INTEGER NOT NULL
);
";

/// Minutes of 1-minute rows (15 days), then of 5-minute rows (63 days).
pub const ONE_MINUTE_DAYS: i64 = 15;
/// Days of 5-minute rows.
pub const FIVE_MINUTE_DAYS: i64 = 63;
/// Most points one answer holds (as `ListInsightsMetricData`'s `MaxResults`).
pub const MAX_POINTS: usize = 21_600;

/// Which points to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Every bucket of the range, 0 where no call was counted.
    FillWithZeros,
    /// Buckets with calls only.
    NonZeroData,
}

/// A series query (`ListInsightsMetricData` semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    /// The rate key (`error_code` set for an error-rate series).
    pub key: SeriesKey,
    /// First bucket, minutes since the epoch (inclusive; aligned down to the period).
    pub start_minute: i64,
    /// End, minutes since the epoch (exclusive; clamped to the newest closed minute).
    pub end_minute: i64,
    /// Bucket length in minutes: 1, 5 or 60.
    pub period_minutes: i64,
    /// Zero-filled or non-zero points.
    pub data_type: DataType,
    /// At most this many points (≤ [`MAX_POINTS`]).
    pub max_points: usize,
}

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint {
    /// Bucket start, minutes since the epoch.
    pub minute: i64,
    /// Calls (or errors) in the bucket.
    pub calls: u64,
    /// The detector's expected calls in the bucket (its latest hourly judgement at or before
    /// the bucket); `None` before the key's first judgement (warm-up).
    pub expected: Option<f64>,
    /// The band's top: the smallest bucket count the detector's window test calls unusual.
    pub upper: Option<u64>,
}

/// A page of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPage {
    /// Points, oldest first.
    pub points: Vec<SeriesPoint>,
    /// The next page's first bucket (minutes since the epoch), when the range goes on.
    pub next_minute: Option<i64>,
}

/// Why a series query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The range holds rows rolled up beyond the period asked for.
    #[error(
        "period {asked} s is not kept for this range: counts before {until} are kept in {kept} s points (1-minute points are kept {ONE_MINUTE_DAYS} days, 5-minute points {FIVE_MINUTE_DAYS} days)"
    )]
    PeriodNotKept {
        /// Period asked for, seconds.
        asked: i64,
        /// Period kept, seconds.
        kept: i64,
        /// The end of the newest rolled-up bucket in the range (`YYYY-MM-DDTHH:MM:SSZ`): a range
        /// from there is kept at the period asked.
        until: String,
    },
}

fn error_code_text(key: &SeriesKey) -> &str {
    key.error_code.as_deref().unwrap_or("")
}

impl Store {
    /// Stores one batch of the engine's series tap in one transaction: closed minutes' counts
    /// (set: the same minute closed again after a restore gives the same count), late calls
    /// (added), open minutes' counts so far (set), judgements (the first of each key-hour is
    /// kept), and the newest closed minute.
    ///
    /// Returns `Err(StoreError::Sqlite)` when the write fails (nothing of it is kept).
    pub fn insert_series(
        &self,
        batch: &SeriesBatch,
        closed_before: Option<i64>,
    ) -> Result<(), StoreError> {
        self.insert_series_all(std::slice::from_ref(batch), closed_before)
    }

    /// [`Store::insert_series`] of several batches, in order, in one transaction.
    ///
    /// Returns `Err(StoreError::Sqlite)` when the write fails (nothing of it is kept).
    pub fn insert_series_all(
        &self,
        batches: &[SeriesBatch],
        closed_before: Option<i64>,
    ) -> Result<(), StoreError> {
        self.with_writer(|c| {
            let tx = c.transaction()?;
            for batch in batches {
                let mut ids = Vec::with_capacity(batch.keys.len());
                let mut add_key = tx.prepare_cached(
                    "INSERT OR IGNORE INTO series_keys (account, region, event_source, event_name, \
                     error_code) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut key_id = tx.prepare_cached(
                    "SELECT id FROM series_keys WHERE account = ?1 AND region = ?2 AND \
                     event_source = ?3 AND event_name = ?4 AND error_code = ?5",
                )?;
                for k in &batch.keys {
                    let p = (
                        &k.account,
                        &k.region,
                        &k.event_source,
                        &k.event_name,
                        error_code_text(k),
                    );
                    add_key.execute(p)?;
                    ids.push(key_id.query_row(p, |r| r.get::<_, i64>(0))?);
                }
                let id = |i: u32| ids.get(i as usize).copied().unwrap_or(-1);
                let mut set = tx.prepare_cached(
                    "INSERT INTO counts (key, minute, span, calls) VALUES (?1, ?2, 1, ?3) \
                     ON CONFLICT (key, minute) DO UPDATE SET calls = excluded.calls",
                )?;
                for &(k, minute, calls) in &batch.counts {
                    set.execute((id(k), minute, calls))?;
                }
                // Open minutes so far: provisional rows, set again when the minute closes.
                for &(k, minute, calls) in &batch.open {
                    set.execute((id(k), minute, calls))?;
                }
                let mut add = tx.prepare_cached(
                    "INSERT INTO counts (key, minute, span, calls) VALUES (?1, ?2, 1, 1) \
                     ON CONFLICT (key, minute) DO UPDATE SET calls = calls + 1",
                )?;
                for &(k, minute) in &batch.late {
                    add.execute((id(k), minute))?;
                }
                let mut judge = tx.prepare_cached(
                    "INSERT OR IGNORE INTO judgements (key, hour, judgement) VALUES (?1, ?2, ?3)",
                )?;
                for (k, hour, j) in &batch.judgements {
                    // A judgement is plain numbers: encoding cannot fail; skip it if it did.
                    if let Ok(blob) = postcard::to_stdvec(j) {
                        judge.execute((id(*k), hour, blob))?;
                    }
                }
            }
            {
                if let Some(closed) = closed_before {
                    tx.execute(
                        "INSERT INTO series_meta (id, closed_before) VALUES (1, ?1) \
                         ON CONFLICT (id) DO UPDATE SET \
                         closed_before = MAX(closed_before, excluded.closed_before)",
                        [closed],
                    )?;
                }
            }
            tx.commit()
        })
        .map_err(|e| self.err(e))
    }

    /// Every minute before this one is closed (minutes since the epoch), as last stored.
    ///
    /// Returns `Err(StoreError)` when the query fails.
    pub fn series_closed_before(&self) -> Result<Option<i64>, StoreError> {
        self.with_reader(|c| {
            c.query_row(
                "SELECT closed_before FROM series_meta WHERE id = 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(|e| self.err(e))
        })
    }

    /// The newest minute with a count stored for `key` (closed or open).
    fn newest_minute(&self, key: &SeriesKey) -> Result<Option<i64>, StoreError> {
        self.with_reader(|c| {
            c.query_row(
                "SELECT MAX(c.minute) FROM counts c JOIN series_keys k ON c.key = k.id \
                 WHERE k.account = ?1 AND k.region = ?2 AND k.event_source = ?3 \
                 AND k.event_name = ?4 AND k.error_code = ?5",
                (
                    &key.account,
                    &key.region,
                    &key.event_source,
                    &key.event_name,
                    error_code_text(key),
                ),
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(|e| self.err(e))
        })
    }

    /// One page of a series: buckets of `period_minutes` from `start_minute` (aligned down)
    /// to `end_minute` (exclusive; past the newest closed minute, only up to the key's newest
    /// open minute with calls so far, else aligned down to the period), oldest first, each
    /// with the detector's expected value and band. `Ok(None)` when the key has no series.
    ///
    /// Returns `Err(SeriesError::PeriodNotKept)` when the range holds rows rolled up to a
    /// longer period than asked for, and `Err(SeriesError::Store)` when a query fails or a
    /// stored judgement does not decode.
    pub fn series(&self, q: &SeriesQuery) -> Result<Option<SeriesPage>, SeriesError> {
        let p = q.period_minutes.max(1);
        let start = q.start_minute - q.start_minute.rem_euclid(p);
        let closed = self.series_closed_before()?.unwrap_or(i64::MIN);
        // Past the newest closed minute only the key's open minutes with calls so far (their
        // provisional counts: a live Insight's minutes) are shown; without them the end drops
        // the bucket still filling (it would read as a dip against a full bucket's band).
        let end = if q.end_minute > closed {
            let live = self
                .newest_minute(&q.key)?
                .filter(|m| *m >= closed)
                .map_or(i64::MIN, |m| m.saturating_add(1));
            (closed - closed.rem_euclid(p)).max(live.min(q.end_minute))
        } else {
            q.end_minute
        };
        // A zero-filled page covers at most `max_points` buckets: read no further.
        let limit = i64::try_from(q.max_points.clamp(1, MAX_POINTS)).unwrap_or(1);
        let (end, next_page) = match q.data_type {
            DataType::FillWithZeros if end > start.saturating_add(limit.saturating_mul(p)) => {
                let page_end = start + limit * p;
                (page_end, Some(page_end))
            }
            _ => (end, None),
        };
        let k = &q.key;
        let out = self.with_reader(|c| {
            let key: Option<i64> = c
                .query_row(
                    "SELECT id FROM series_keys WHERE account = ?1 AND region = ?2 AND \
                     event_source = ?3 AND event_name = ?4 AND error_code = ?5",
                    (
                        &k.account,
                        &k.region,
                        &k.event_source,
                        &k.event_name,
                        error_code_text(k),
                    ),
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            let Some(key) = key else {
                return Ok(None);
            };
            let coarse: Option<(i64, i64)> = c
                .query_row(
                    "SELECT MAX(span), MAX(minute + span) FROM counts WHERE key = ?1 \
                     AND minute + span > ?2 AND minute < ?3 AND span > ?4",
                    (key, start, end, p),
                    |r| Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?)),
                )
                .map_err(|e| self.err(e))?;
            if let Some((span, newest)) = coarse {
                return Ok(Some(Err((span, newest))));
            }
            let mut stmt = c
                .prepare_cached(
                    "SELECT minute - (minute % ?1) AS bucket, SUM(calls) FROM counts \
                     WHERE key = ?2 AND minute >= ?3 AND minute < ?4 \
                     GROUP BY bucket ORDER BY bucket",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map((p, key, start, end), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(|e| self.err(e))?;
            let mut counts = Vec::new();
            for row in rows {
                counts.push(row.map_err(|e| self.err(e))?);
            }
            // The latest judgement at or before the first bucket's hour, and each one after.
            let first_hour = start.div_euclid(60);
            let mut judged: Vec<(i64, Vec<u8>)> = c
                .query_row(
                    "SELECT hour, judgement FROM judgements WHERE key = ?1 AND hour <= ?2 \
                     ORDER BY hour DESC LIMIT 1",
                    (key, first_hour),
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| self.err(e))?
                .into_iter()
                .collect();
            let mut stmt = c
                .prepare_cached(
                    "SELECT hour, judgement FROM judgements WHERE key = ?1 AND hour > ?2 \
                     AND hour < ?3 ORDER BY hour",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map((key, first_hour, end.div_euclid(60) + 1), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                judged.push(row.map_err(|e| self.err(e))?);
            }
            let mut decoded = Vec::with_capacity(judged.len());
            for (hour, blob) in judged {
                let j: Judgement =
                    postcard::from_bytes(&blob).map_err(|e| StoreError::Corrupt {
                        path: self.path.clone(),
                        reason: format!("judgement of hour {hour}: {e}"),
                    })?;
                decoded.push((hour, j));
            }
            Ok(Some(Ok((counts, decoded))))
        })?;
        let (counts, judged) = match out {
            None => return Ok(None),
            Some(Err((span, until))) => {
                return Err(SeriesError::PeriodNotKept {
                    asked: p * 60,
                    kept: span * 60,
                    until: trailsight_detector::time::format_minute(until),
                });
            }
            Some(Ok(found)) => found,
        };
        let mut page = page(q, start, end, &counts, &judged);
        if page.next_minute.is_none() {
            page.next_minute = next_page;
        }
        Ok(Some(page))
    }
}

/// Builds the points of `[start, end)` from bucket counts and judgements (both ascending).
fn page(
    q: &SeriesQuery,
    start: i64,
    end: i64,
    counts: &[(i64, i64)],
    judged: &[(i64, Judgement)],
) -> SeriesPage {
    let p = q.period_minutes.max(1);
    let minutes = u32::try_from(p).unwrap_or(60);
    let limit = q.max_points.clamp(1, MAX_POINTS);
    let mut bands: HashMap<i64, (Option<f64>, Option<u64>)> = HashMap::new();
    let mut band_at = |bucket: i64| {
        let hour = bucket.div_euclid(60);
        // The latest judgement at or before the hour.
        let i = judged.partition_point(|(h, _)| *h <= hour);
        let Some((h, j)) = i.checked_sub(1).map(|i| &judged[i]) else {
            return (None, None);
        };
        *bands
            .entry(*h)
            .or_insert_with(|| (j.expected(minutes), j.upper(minutes)))
    };
    let mut points = Vec::new();
    let mut next_minute = None;
    let mut push = |bucket: i64, calls: i64, points: &mut Vec<SeriesPoint>| -> bool {
        if points.len() == limit {
            next_minute = Some(bucket);
            return false;
        }
        let (expected, upper) = band_at(bucket);
        points.push(SeriesPoint {
            minute: bucket,
            calls: u64::try_from(calls).unwrap_or(0),
            expected,
            upper,
        });
        true
    };
    match q.data_type {
        DataType::NonZeroData => {
            for &(bucket, calls) in counts.iter().filter(|c| c.1 > 0) {
                if !push(bucket, calls, &mut points) {
                    break;
                }
            }
        }
        DataType::FillWithZeros => {
            let mut found = counts.iter().peekable();
            let mut bucket = start;
            while bucket < end {
                let calls = found.next_if(|c| c.0 == bucket).map_or(0, |c| c.1);
                if !push(bucket, calls, &mut points) {
                    break;
                }
                bucket += p;
            }
        }
    }
    SeriesPage {
        points,
        next_minute,
    }
}

/// How long series are kept (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRetention {
    /// Days of counts of any kind (the Insights retention).
    pub retention_days: i64,
    /// Days of counts of keys without an Insight whose API is not in `keep_apis`.
    pub series_days: i64,
    /// `eventSource:eventName` of APIs whose series are kept as long as Insights' are.
    pub keep_apis: Vec<String>,
}

/// Rows changed by one [`Store::roll_up_series`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollUp {
    /// 1-minute rows folded into 5-minute rows.
    pub to_five_minutes: usize,
    /// 1- and 5-minute rows folded into 1-hour rows.
    pub to_one_hour: usize,
    /// Rows deleted (past retention, or of keys not kept).
    pub deleted: usize,
}

impl Store {
    /// Rolls the series up and applies retention, relative to the newest closed minute: rows
    /// older than 15 days become 5-minute rows, older than 63 days 1-hour rows, older than
    /// `retention_days` are deleted; keys without an Insight whose API is not kept lose rows
    /// older than `series_days`. Scans the counts table: run it periodically (hourly), not per
    /// batch.
    ///
    /// Returns `Err(StoreError::Sqlite)` when it fails (nothing of it is kept).
    pub fn roll_up_series(&self, retention: &SeriesRetention) -> Result<RollUp, StoreError> {
        let Some(now) = self.series_closed_before()? else {
            return Ok(RollUp::default());
        };
        // Cut-offs on hour boundaries: a bucket is never split between two row spans.
        let cutoff = |days: i64| {
            let m = now.saturating_sub(days.saturating_mul(1440));
            m - m.rem_euclid(60)
        };
        self.with_writer(|c| {
            let tx = c.transaction()?;
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS rollup (key INTEGER, minute INTEGER, calls INTEGER);
                 CREATE TEMP TABLE IF NOT EXISTS kept_apis (api TEXT PRIMARY KEY);
                 DELETE FROM temp.rollup; DELETE FROM temp.kept_apis;",
            )?;
            let fold = |to: i64, before: i64| -> rusqlite::Result<usize> {
                tx.execute("DELETE FROM temp.rollup", [])?;
                tx.execute(
                    "INSERT INTO temp.rollup SELECT key, minute - (minute % ?1), SUM(calls) \
                     FROM counts WHERE span < ?1 AND minute < ?2 GROUP BY key, minute - (minute % ?1)",
                    (to, before),
                )?;
                let n = tx.execute(
                    "DELETE FROM counts WHERE span < ?1 AND minute < ?2",
                    (to, before),
                )?;
                tx.execute(
                    "INSERT INTO counts (key, minute, span, calls) \
                     SELECT key, minute, ?1, calls FROM temp.rollup WHERE true \
                     ON CONFLICT (key, minute) DO UPDATE SET calls = calls + excluded.calls, \
                     span = excluded.span",
                    [to],
                )?;
                Ok(n)
            };
            let mut done = RollUp {
                to_five_minutes: fold(5, cutoff(ONE_MINUTE_DAYS))?,
                to_one_hour: fold(60, cutoff(FIVE_MINUTE_DAYS))?,
                deleted: 0,
            };
            let oldest = cutoff(retention.retention_days);
            done.deleted += tx.execute("DELETE FROM counts WHERE minute < ?1", [oldest])?;
            tx.execute(
                "DELETE FROM judgements WHERE hour < ?1",
                [oldest.div_euclid(60)],
            )?;
            {
                let mut keep = tx.prepare("INSERT OR IGNORE INTO temp.kept_apis VALUES (?1)")?;
                for api in &retention.keep_apis {
                    keep.execute([api])?;
                }
            }
            let short = cutoff(retention.series_days);
            let not_kept = "SELECT id FROM series_keys k WHERE NOT EXISTS (SELECT 1 FROM insights i \
                 WHERE i.event_name = k.event_name AND i.event_source = k.event_source \
                 AND i.account = k.account AND i.region = k.region) \
                 AND (k.event_source || ':' || k.event_name) NOT IN (SELECT api FROM temp.kept_apis)";
            done.deleted += tx.execute(
                &format!("DELETE FROM counts WHERE minute < ?1 AND key IN ({not_kept})"),
                [short],
            )?;
            tx.execute(
                &format!("DELETE FROM judgements WHERE hour < ?1 AND key IN ({not_kept})"),
                [short.div_euclid(60)],
            )?;
            tx.execute(
                "DELETE FROM series_keys WHERE id NOT IN (SELECT key FROM counts) \
                 AND id NOT IN (SELECT key FROM judgements)",
                [],
            )?;
            tx.commit()?;
            Ok(done)
        })
        .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailsight_detector::detect::model::{Model, Models};
    use trailsight_detector::detect::window::Thresholds;

    fn key(name: &str) -> SeriesKey {
        SeriesKey {
            account: "111122223333".into(),
            region: "us-east-1".into(),
            event_source: "iam.amazonaws.com".into(),
            event_name: name.into(),
            error_code: None,
        }
    }

    fn judgement(mean: f64) -> Judgement {
        Judgement {
            models: Models::one(Model {
                mean,
                dispersion: serde_json::from_value(
                    serde_json::json!({"at_scales": [1.0, 1.0, 1.0]}),
                )
                .unwrap(),
                evidence_minutes: 10_000.0,
            }),
            thresholds: Thresholds {
                per_window: 1e-6,
                min_count: 3,
                min_ratio: 2.0,
            },
        }
    }

    fn query(name: &str, start: i64, end: i64, period: i64, data_type: DataType) -> SeriesQuery {
        SeriesQuery {
            key: key(name),
            start_minute: start,
            end_minute: end,
            period_minutes: period,
            data_type,
            max_points: MAX_POINTS,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        (dir, store)
    }

    const T: i64 = 29_000_040; // a minute on an hour boundary (2025-02-19T22:00Z)

    #[test]
    fn counts_come_back_by_period_with_the_band_of_the_hour() {
        let (_d, store) = store();
        let batch = SeriesBatch {
            keys: vec![key("CreateAccessKey")],
            counts: vec![(0, T + 1, 2), (0, T + 7, 3), (0, T + 61, 1)],
            late: vec![(0, T + 7)],
            open: Vec::new(),
            judgements: vec![
                (0, T / 60, judgement(0.01)),
                (0, T / 60 + 1, judgement(0.5)),
            ],
        };
        store.insert_series(&batch, Some(T + 120)).unwrap();
        // The same minutes closed again after a restore (then the same late call): set, never
        // doubled.
        store.insert_series(&batch, Some(T + 120)).unwrap();

        let minutes = store
            .series(&query(
                "CreateAccessKey",
                T,
                T + 10,
                1,
                DataType::FillWithZeros,
            ))
            .unwrap()
            .unwrap();
        let calls: Vec<u64> = minutes.points.iter().map(|p| p.calls).collect();
        assert_eq!(calls, [0, 2, 0, 0, 0, 0, 0, 4, 0, 0]);
        assert_eq!(minutes.points[0].minute, T);
        let expected = minutes.points[0].expected.unwrap();
        assert!((expected - 0.01).abs() < 1e-12);
        assert_eq!(minutes.points[0].upper, Some(3));
        assert_eq!(minutes.next_minute, None);

        let fives = store
            .series(&query(
                "CreateAccessKey",
                T + 3,
                T + 70,
                5,
                DataType::NonZeroData,
            ))
            .unwrap()
            .unwrap();
        let got: Vec<(i64, u64)> = fives
            .points
            .iter()
            .map(|p| (p.minute - T, p.calls))
            .collect();
        assert_eq!(got, [(0, 2), (5, 4), (60, 1)]);
        // The second hour is judged against its own (busier) model.
        assert!((fives.points[2].expected.unwrap() - 2.5).abs() < 1e-9);

        let hours = store
            .series(&query(
                "CreateAccessKey",
                T,
                T + 1000,
                60,
                DataType::FillWithZeros,
            ))
            .unwrap()
            .unwrap();
        let calls: Vec<u64> = hours.points.iter().map(|p| p.calls).collect();
        assert_eq!(calls, [6, 1], "clamped to the newest closed minute");

        assert!(
            store
                .series(&query("DeleteUser", T, T + 10, 1, DataType::FillWithZeros))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn open_minutes_show_their_calls_so_far_until_they_close() {
        let (_d, store) = store();
        let live = |open: Vec<(u32, i64, u32)>, counts: Vec<(u32, i64, u32)>| SeriesBatch {
            keys: vec![key("CreateAccessKey")],
            counts,
            open,
            ..SeriesBatch::default()
        };
        store
            .insert_series(&live(vec![(0, T + 3, 2)], vec![(0, T, 1)]), Some(T + 1))
            .unwrap();
        let q = query("CreateAccessKey", T, T + 60, 1, DataType::FillWithZeros);
        let calls = |store: &Store| -> Vec<u64> {
            let page = store.series(&q).unwrap().unwrap();
            page.points.iter().map(|p| p.calls).collect()
        };
        assert_eq!(
            calls(&store),
            [1, 0, 0, 2],
            "to the newest open minute with calls"
        );
        // More calls read, then the minute closes with its final count.
        store
            .insert_series(&live(vec![(0, T + 3, 4)], vec![]), Some(T + 1))
            .unwrap();
        assert_eq!(calls(&store), [1, 0, 0, 4]);
        store
            .insert_series(&live(vec![], vec![(0, T + 3, 5)]), Some(T + 10))
            .unwrap();
        assert_eq!(calls(&store), [1, 0, 0, 5, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn pages_continue_where_the_last_one_stopped() {
        let (_d, store) = store();
        let batch = SeriesBatch {
            keys: vec![key("CreateAccessKey")],
            counts: (0..50).map(|i| (0, T + i, 1 + i as u32)).collect(),
            ..SeriesBatch::default()
        };
        store.insert_series(&batch, Some(T + 50)).unwrap();
        let mut q = query("CreateAccessKey", T, T + 50, 1, DataType::FillWithZeros);
        q.max_points = 7;
        let mut all = Vec::new();
        loop {
            let page = store.series(&q).unwrap().unwrap();
            all.extend(page.points.iter().map(|p| p.calls));
            match page.next_minute {
                Some(m) => q.start_minute = m,
                None => break,
            }
        }
        assert_eq!(all, (1..=50).collect::<Vec<u64>>());
    }

    #[test]
    fn old_minutes_roll_up_and_keys_without_insights_are_kept_a_week() {
        let (_d, store) = store();
        let day = 1440;
        let now = T + 100 * day;
        let batch = SeriesBatch {
            keys: vec![key("CreateAccessKey"), key("DeleteUser")],
            counts: vec![
                (0, now - 20 * day + 1, 2),
                (0, now - 20 * day + 3, 5),
                (0, now - 70 * day + 13, 1),
                (0, now - 70 * day + 50, 1),
                (0, now - 95 * day, 9),
                (0, now - 10, 4),
                (1, now - 10 * day, 6),
                (1, now - 10, 1),
            ],
            ..SeriesBatch::default()
        };
        store.insert_series(&batch, Some(now)).unwrap();
        let retention = SeriesRetention {
            retention_days: 90,
            series_days: 7,
            keep_apis: vec!["iam.amazonaws.com:CreateAccessKey".into()],
        };
        let done = store.roll_up_series(&retention).unwrap();
        assert_eq!(done.to_five_minutes, 5, "every minute older than 15 days");
        assert_eq!(done.to_one_hour, 3, "the 5-minute rows older than 63 days");
        let five = store
            .series(&query(
                "CreateAccessKey",
                now - 21 * day,
                now - 19 * day,
                5,
                DataType::NonZeroData,
            ))
            .unwrap()
            .unwrap();
        assert_eq!(five.points.iter().map(|p| p.calls).collect::<Vec<_>>(), [7]);
        match store.series(&query(
            "CreateAccessKey",
            now - 21 * day,
            now,
            1,
            DataType::NonZeroData,
        )) {
            Err(SeriesError::PeriodNotKept {
                asked: 60,
                kept: 300,
                ..
            }) => {}
            other => panic!("1-minute points of 20 days ago: {other:?}"),
        }
        // A range starting inside a rolled-up hour is refused too, naming where finer points start.
        let inside = query(
            "CreateAccessKey",
            now - 70 * day + 30,
            now - 69 * day,
            5,
            DataType::NonZeroData,
        );
        match store.series(&inside) {
            Err(SeriesError::PeriodNotKept {
                kept: 3600, until, ..
            }) => {
                assert_eq!(
                    until,
                    trailsight_detector::time::format_minute(now - 70 * day + 60)
                );
            }
            other => panic!("5-minute points inside a rolled-up hour: {other:?}"),
        }
        let hour = store
            .series(&query(
                "CreateAccessKey",
                now - 71 * day,
                now - 69 * day,
                60,
                DataType::NonZeroData,
            ))
            .unwrap()
            .unwrap();
        assert_eq!(hour.points.iter().map(|p| p.calls).collect::<Vec<_>>(), [2]);
        let all = store
            .series(&query("CreateAccessKey", 0, now, 60, DataType::NonZeroData))
            .unwrap()
            .unwrap();
        assert_eq!(
            all.points.iter().map(|p| p.calls).sum::<u64>(),
            2 + 7 + 4,
            "95 days is past retention"
        );
        let other = store
            .series(&query("DeleteUser", 0, now, 60, DataType::NonZeroData))
            .unwrap()
            .unwrap();
        assert_eq!(
            other.points.iter().map(|p| p.calls).sum::<u64>(),
            1,
            "no Insight, not kept: 7 days"
        );
    }
}
