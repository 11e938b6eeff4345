//! The embedded Insights store: SQLite (WAL, `synchronous=NORMAL`) in the service's state folder.
//!
//! One row per Insights record (schema: CloudTrail Insights event, eventVersion 1.09), keyed by
//! `eventID` (a record written twice, e.g. after a rollback to the checkpoint, is stored once),
//! with a sequence number (`seq`, increasing in write order) for the live stream's
//! `Last-Event-ID`. Look-up is newest first by (`eventTime`, `eventID`) with keyset paging over
//! an index, so a page costs the same wherever it is in the store. Calls block: run them off the
//! async runtime (`spawn_blocking`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params_from_iter};

mod series;
pub use series::{
    DataType, MAX_POINTS, RollUp, SeriesError, SeriesPage, SeriesPoint, SeriesQuery,
    SeriesRetention,
};
use trailsight_detector::InsightRecord;
use trailsight_detector::insight::{InsightState, InsightType};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (open, schema, query, I/O under it).
    #[error("Insights store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A stored record is not valid JSON (the file was changed by something else).
    #[error("Insights store {path}: a stored record is not an Insights record: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A record as stored: its sequence number, account and Region, and the record itself.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInsight {
    /// Write order (1, 2, …): the live stream's event id.
    pub seq: i64,
    /// Account of the source events.
    pub account: String,
    /// Region of the source events.
    pub region: String,
    /// The Insights record.
    pub record: InsightRecord,
}

/// Filters of a look-up (all optional; times are `YYYY-MM-DDTHH:MM:SSZ`, inclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `eventTime` ≥ this.
    pub start_time: Option<String>,
    /// `eventTime` ≤ this.
    pub end_time: Option<String>,
    /// `recipientAccountId`.
    pub account: Option<String>,
    /// `awsRegion`.
    pub region: Option<String>,
    /// `insightDetails.eventSource`.
    pub event_source: Option<String>,
    /// `insightDetails.eventName`.
    pub event_name: Option<String>,
    /// `insightDetails.insightType`.
    pub insight_type: Option<InsightType>,
    /// `insightDetails.state`.
    pub state: Option<InsightState>,
}

/// Where a page starts: the (`eventTime`, `eventID`) of the last record of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    /// `eventTime` of the last record returned.
    pub event_time: String,
    /// `eventID` of the last record returned.
    pub event_id: String,
}

/// The Insights store.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Webhook URLs: every record stored gets one outbox row per URL, in the same transaction.
    webhooks: Mutex<Vec<String>>,
}

/// One pending webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The record's sequence number.
    pub seq: i64,
    /// The webhook URL.
    pub url: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The record.
    pub record: InsightRecord,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS insights (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    shared_event_id TEXT NOT NULL,
    event_time TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    event_source TEXT NOT NULL,
    event_name TEXT NOT NULL,
    insight_type TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS insights_newest ON insights (event_time DESC, event_id DESC);
CREATE INDEX IF NOT EXISTS insights_shared ON insights (shared_event_id);
CREATE INDEX IF NOT EXISTS insights_account ON insights (account, event_time DESC, event_id DESC);
CREATE INDEX IF NOT EXISTS insights_api ON insights (event_name, event_time DESC, event_id DESC);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER NOT NULL,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    PRIMARY KEY (seq, url)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_ms);
";

fn type_name(t: InsightType) -> &'static str {
    match t {
        InsightType::ApiCallRateInsight => "ApiCallRateInsight",
        InsightType::ApiErrorRateInsight => "ApiErrorRateInsight",
    }
}

fn state_name(s: InsightState) -> &'static str {
    match s {
        InsightState::Start => "Start",
        InsightState::End => "End",
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// Returns `Err(StoreError::Sqlite)` when the file cannot be opened or is not a database.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let store = Store {
            path: path.to_path_buf(),
            writer: Mutex::new(Self::connect(path)?),
            readers: Mutex::new(Vec::new()),
            webhooks: Mutex::new(Vec::new()),
        };
        store
            .with_writer(|c| {
                c.execute_batch(SCHEMA)?;
                c.execute_batch(series::SCHEMA)
            })
            .map_err(|source| store.err(source))?;
        Ok(store)
    }

    fn connect(path: &Path) -> Result<Connection, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let c = Connection::open(path).map_err(err)?;
        c.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        c.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        c.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        Ok(c)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut c = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut c)
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let c = match pooled {
            Some(c) => c,
            None => Self::connect(&self.path)?,
        };
        let out = f(&c);
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(c);
        out
    }

    /// Sets the webhook URLs records stored from now on are queued for (the outbox keeps what
    /// was queued before, for URLs still configured; rows of URLs no longer configured are dropped).
    ///
    /// Returns `Err(StoreError)` when the outbox cannot be cleaned.
    pub fn set_webhooks(&self, urls: Vec<String>) -> Result<(), StoreError> {
        self.with_writer(|c| {
            let tx = c.transaction()?;
            {
                let mut keep = String::from("DELETE FROM outbox WHERE url NOT IN (");
                keep.push_str(&vec!["?"; urls.len()].join(","));
                keep.push(')');
                tx.execute(&keep, params_from_iter(urls.iter()))?;
            }
            tx.commit()
        })
        .map_err(|e| self.err(e))?;
        *self.webhooks.lock().unwrap_or_else(PoisonError::into_inner) = urls;
        Ok(())
    }

    /// Deliveries due at `now_ms` (Unix milliseconds), oldest record first, at most `limit`.
    ///
    /// Returns `Err(StoreError)` when the query fails.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT o.seq, o.url, o.attempts, i.record FROM outbox o \
                     JOIN insights i ON i.seq = o.seq WHERE o.next_attempt_ms <= ?1 \
                     ORDER BY o.seq LIMIT ?2",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(
                    rusqlite::params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    },
                )
                .map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, url, attempts, json) = row.map_err(|e| self.err(e))?;
                let record = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
                out.push(Delivery {
                    seq,
                    url,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    record,
                });
            }
            Ok(out)
        })
    }

    /// Removes a delivery from the outbox (delivered, or given up).
    ///
    /// Returns `Err(StoreError)` when the write fails.
    pub fn delivered(&self, seq: i64, url: &str) -> Result<(), StoreError> {
        self.with_writer(|c| {
            c.execute(
                "DELETE FROM outbox WHERE seq = ?1 AND url = ?2",
                rusqlite::params![seq, url],
            )
        })
        .map(drop)
        .map_err(|e| self.err(e))
    }

    /// Records a failed attempt: the next one at `next_ms` (Unix milliseconds).
    ///
    /// Returns `Err(StoreError)` when the write fails.
    pub fn retry_at(&self, seq: i64, url: &str, next_ms: i64) -> Result<(), StoreError> {
        self.with_writer(|c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?3 \
                 WHERE seq = ?1 AND url = ?2",
                rusqlite::params![seq, url, next_ms],
            )
        })
        .map(drop)
        .map_err(|e| self.err(e))
    }

    /// Stores the records of one Insights file (account and Region of its source events); a
    /// record whose `eventID` is stored already is skipped. Returns the records newly stored, in
    /// write order, with their sequence numbers.
    ///
    /// Returns `Err(StoreError::Sqlite)` when the write fails (nothing of this call is kept).
    pub fn insert(
        &self,
        account: &str,
        region: &str,
        records: &[InsightRecord],
    ) -> Result<Vec<StoredInsight>, StoreError> {
        let hooks = self
            .webhooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.with_writer(|c| {
            let tx = c.transaction()?;
            let mut added = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO insights (event_id, shared_event_id, event_time, account, \
                     region, event_source, event_name, insight_type, state, record) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for r in records {
                    let d = &r.insight_details;
                    let json = serde_json::to_string(r).unwrap_or_default();
                    let n = stmt.execute(rusqlite::params![
                        r.event_id,
                        r.shared_event_id,
                        r.event_time,
                        account,
                        region,
                        d.event_source,
                        d.event_name,
                        type_name(d.insight_type),
                        state_name(d.state),
                        json
                    ])?;
                    if n == 1 {
                        let seq = tx.last_insert_rowid();
                        for url in hooks.iter() {
                            tx.execute(
                                "INSERT OR IGNORE INTO outbox (seq, url, next_attempt_ms) VALUES (?1, ?2, 0)",
                                rusqlite::params![seq, url],
                            )?;
                        }
                        added.push(StoredInsight {
                            seq,
                            account: account.to_string(),
                            region: region.to_string(),
                            record: r.clone(),
                        });
                    }
                }
            }
            tx.commit()?;
            Ok(added)
        })
        .map_err(|e| self.err(e))
    }

    fn rows(
        &self,
        sql: &str,
        args: Vec<rusqlite::types::Value>,
    ) -> Result<Vec<StoredInsight>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(sql).map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params_from_iter(args), |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })
                .map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, account, region, json) = row.map_err(|e| self.err(e))?;
                let record = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
                out.push(StoredInsight {
                    seq,
                    account,
                    region,
                    record,
                });
            }
            Ok(out)
        })
    }

    /// Records matching `filter`, newest first (`eventTime`, then `eventID`, descending), at most
    /// `limit`, after `after` (keyset paging).
    ///
    /// Returns `Err(StoreError)` when the query fails.
    pub fn lookup(
        &self,
        filter: &Filter,
        after: Option<&After>,
        limit: usize,
    ) -> Result<Vec<StoredInsight>, StoreError> {
        use rusqlite::types::Value;
        let mut clauses: Vec<&str> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        let mut text = |clause: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                clauses.push(clause);
                args.push(Value::Text(v.clone()));
            }
        };
        text("event_time >= ?", &filter.start_time);
        text("event_time <= ?", &filter.end_time);
        text("account = ?", &filter.account);
        text("region = ?", &filter.region);
        text("event_source = ?", &filter.event_source);
        text("event_name = ?", &filter.event_name);
        text(
            "insight_type = ?",
            &filter.insight_type.map(|t| type_name(t).to_string()),
        );
        text(
            "state = ?",
            &filter.state.map(|s| state_name(s).to_string()),
        );
        if let Some(a) = after {
            // A row value: SQLite seeks the index to it (an OR of two ranges it would scan).
            clauses.push("(event_time, event_id) < (?, ?)");
            args.push(Value::Text(a.event_time.clone()));
            args.push(Value::Text(a.event_id.clone()));
        }
        let mut sql = String::from("SELECT seq, account, region, record FROM insights");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(" ORDER BY event_time DESC, event_id DESC LIMIT ?");
        args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        self.rows(&sql, args)
    }

    /// The record with this `eventID`, if stored.
    ///
    /// Returns `Err(StoreError)` when the query fails.
    pub fn get(&self, event_id: &str) -> Result<Option<StoredInsight>, StoreError> {
        Ok(self
            .rows(
                "SELECT seq, account, region, record FROM insights WHERE event_id = ?",
                vec![rusqlite::types::Value::Text(event_id.to_string())],
            )?
            .into_iter()
            .next())
    }

    /// The records of one Insight (`Start`, and `End` once written), by `sharedEventID`.
    ///
    /// Returns `Err(StoreError)` when the query fails.
    pub fn pair(&self, shared_event_id: &str) -> Result<Vec<StoredInsight>, StoreError> {
        self.rows(
            "SELECT seq, account, region, record FROM insights WHERE shared_event_id = ? \
             ORDER BY seq",
            vec![rusqlite::types::Value::Text(shared_event_id.to_string())],
        )
    }

    /// Records written after sequence number `seq`, in write order, at most `limit`.
    ///
    /// Returns `Err(StoreError)` when the query fails.
    pub fn since(&self, seq: i64, limit: usize) -> Result<Vec<StoredInsight>, StoreError> {
        use rusqlite::types::Value;
        self.rows(
            "SELECT seq, account, region, record FROM insights WHERE seq > ? ORDER BY seq LIMIT ?",
            vec![
                Value::Integer(seq),
                Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
    }

    /// Deletes records with an `eventTime` before `before` (`YYYY-MM-DDTHH:MM:SSZ`); returns how many.
    ///
    /// Returns `Err(StoreError)` when the delete fails.
    pub fn delete_before(&self, before: &str) -> Result<usize, StoreError> {
        self.with_writer(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM insights WHERE event_time < ?1", [before])?;
            // Pending webhook deliveries of deleted records go with them.
            tx.execute(
                "DELETE FROM outbox WHERE seq NOT IN (SELECT seq FROM insights)",
                [],
            )?;
            tx.commit()?;
            Ok(n)
        })
        .map_err(|e| self.err(e))
    }

    /// The newest sequence number stored (0 when empty).
    ///
    /// Returns `Err(StoreError)` when the query fails.
    pub fn max_seq(&self) -> Result<i64, StoreError> {
        self.with_reader(|c| {
            c.query_row("SELECT COALESCE(MAX(seq), 0) FROM insights", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| self.err(e))
        })
    }

    /// Records stored.
    ///
    /// Returns `Err(StoreError)` when the query fails.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.with_reader(|c| {
            c.query_row("SELECT COUNT(*) FROM insights", [], |r| r.get::<_, i64>(0))
                .optional()
                .map(|n| n.map_or(0, |n| n.max(0) as u64))
                .map_err(|e| self.err(e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(minute: u32, id: &str, state: &str, name: &str) -> InsightRecord {
        serde_json::from_value(serde_json::json!({
            "eventVersion": "1.09",
            "eventTime": format!("2026-11-10T14:{minute:02}:00Z"),
            "awsRegion": "us-east-1",
            "eventID": id,
            "eventType": "AwsCloudTrailInsight",
            "recipientAccountId": "111122223333",
            "sharedEventID": format!("shared-{name}"),
            "insightDetails": {
                "state": state,
                "eventSource": "iam.amazonaws.com",
                "eventName": name,
                "insightType": "ApiCallRateInsight",
                "insightContext": {"statistics": {
                    "baseline": {"average": 0.001}, "insight": {"average": 3},
                    "insightDuration": 1, "baselineDuration": 10080}}
            },
            "eventCategory": "Insight"
        }))
        .unwrap()
    }

    #[test]
    fn a_record_stored_twice_is_kept_once_and_pages_follow_the_keyset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        let records: Vec<InsightRecord> = (0..7)
            .map(|i| record(i % 3, &format!("id-{i}"), "Start", &format!("Api{i}")))
            .collect();
        let added = store.insert("111122223333", "us-east-1", &records).unwrap();
        assert_eq!(added.len(), 7);
        assert!(added.windows(2).all(|w| w[0].seq < w[1].seq));
        // Rewritten after a rollback: nothing new.
        assert!(
            store
                .insert("111122223333", "us-east-1", &records)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.count().unwrap(), 7);
        assert_eq!(store.max_seq().unwrap(), added[6].seq);

        let all = store.lookup(&Filter::default(), None, 100).unwrap();
        let key = |r: &StoredInsight| (r.record.event_time.clone(), r.record.event_id.clone());
        assert!(
            all.windows(2).all(|w| key(&w[0]) > key(&w[1])),
            "newest first"
        );
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store.lookup(&Filter::default(), after.as_ref(), 2).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|r| After {
                event_time: r.record.event_time.clone(),
                event_id: r.record.event_id.clone(),
            });
            paged.extend(page);
        }
        assert_eq!(paged, all);

        let f = Filter {
            event_name: Some("Api4".into()),
            ..Filter::default()
        };
        assert_eq!(store.lookup(&f, None, 10).unwrap().len(), 1);
        let f = Filter {
            start_time: Some("2026-11-10T14:02:00Z".into()),
            ..Filter::default()
        };
        assert_eq!(store.lookup(&f, None, 10).unwrap().len(), 2);
        assert_eq!(store.since(added[4].seq, 10).unwrap().len(), 2);
        assert_eq!(store.get("id-3").unwrap().unwrap().record, records[3]);
        assert!(store.get("nope").unwrap().is_none());
        assert_eq!(store.delete_before("2026-11-10T14:01:00Z").unwrap(), 3);
        assert_eq!(store.count().unwrap(), 4);

        // Webhook outbox: a row per record and URL, in the same transaction; retention clears it.
        store
            .set_webhooks(vec!["http://127.0.0.1:1/h".into()])
            .unwrap();
        let more: Vec<InsightRecord> = (0..3)
            .map(|i| record(i, &format!("new-{i}"), "End", "ApiNew"))
            .collect();
        store.insert("111122223333", "us-east-1", &more).unwrap();
        let due = store.due(i64::MAX, 10).unwrap();
        assert_eq!(due.len(), 3);
        store.retry_at(due[0].seq, &due[0].url, i64::MAX).unwrap();
        assert_eq!(store.due(0, 10).unwrap().len(), 2);
        store.delivered(due[1].seq, &due[1].url).unwrap();
        assert_eq!(store.due(0, 10).unwrap().len(), 1);
        store.delete_before("2026-11-10T14:01:00Z").unwrap();
        assert_eq!(store.due(i64::MAX, 10).unwrap().len(), 1);
    }
}
