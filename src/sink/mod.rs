//! Where Insights files go. Records decided together are grouped into one
//! `{"Records":[…]}` gzip file per trail location, account, Region and delivery
//! minute, named after its content, so rewriting the same Insights writes the
//! same keys and bytes.

pub mod local;
pub mod s3;

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use trailsight_detector::insight::{InsightState, InsightType};
use trailsight_detector::{EmittedInsight, InsightRecord};

use crate::layout::{InsightKeyError, TrailLocation, insight_key, shown, unique_string};

/// One Insights file, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct InsightFile {
    /// Object key / relative path.
    pub key: String,
    /// Gzip bytes of `{"Records":[…]}`.
    pub body: Vec<u8>,
    /// Records in the file.
    pub records: usize,
    /// `Start` records in the file: `[ApiCallRateInsight, ApiErrorRateInsight]`.
    pub started: [u64; 2],
    /// `End` records in the file, by insight type as `started`.
    pub ended: [u64; 2],
    /// Account of the source events.
    pub account: String,
    /// Region of the source events.
    pub region: String,
    /// The records, in the file's order (for the API's store).
    pub insights: Vec<InsightRecord>,
}

/// Why one Insights file was refused: something in its own content (a key part, its name),
/// not the state of the sink. The file is reported and skipped; the files after it are written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// A part of the key failed validation: nothing was written.
    #[error(transparent)]
    Key(#[from] InsightKeyError),
    /// The local file system refuses the name (not a relative path of plain names, name too
    /// long, invalid name).
    #[error("the file system refuses the name {path}: {reason}")]
    LocalName {
        /// The path, escaped.
        path: String,
        /// Why.
        reason: String,
    },
    /// S3 refuses the key (`KeyTooLongError`, `InvalidArgument`, another 400 about the request).
    #[error("S3 refuses the key s3://{bucket}/{key}: {reason}")]
    S3Key {
        /// Bucket.
        bucket: String,
        /// Key, escaped.
        key: String,
        /// S3's error code and message.
        reason: String,
    },
}

/// Why an Insights file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file itself is refused (see [`RejectReason`]): skip it and go on.
    #[error(transparent)]
    Rejected(#[from] RejectReason),
    /// The sink cannot take files now (disk full, I/O error, permission denied, S3 unreachable,
    /// timing out or answering 5xx): the work must be retried, not skipped.
    #[error(transparent)]
    Unavailable(std::io::Error),
}

/// Insights not written because of their own content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedInsights {
    /// The file's key when it could be built, else its account, Region and delivery minute
    /// (escaped and shortened: they come from log records).
    pub key: String,
    /// Insights records in the file.
    pub records: usize,
    /// Why it was refused.
    pub reason: RejectReason,
}

impl std::fmt::Display for RejectedInsights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} records): {}",
            self.key, self.records, self.reason
        )
    }
}

#[derive(Serialize)]
struct Records<'a> {
    #[serde(rename = "Records")]
    records: Vec<&'a InsightRecord>,
}

/// Groups records into files. `location_of(account)` gives each account's trail location.
///
/// Records in a file are sorted by `eventTime`, `eventSource`, `eventName`, type, error code and state.
/// A group whose key cannot be built from validated parts (see [`insight_key`]) is an `Err`
/// naming its account, Region and minute; the other groups are unaffected.
pub fn build_files(
    emitted: &[EmittedInsight],
    location_of: impl Fn(&str) -> TrailLocation,
) -> Vec<Result<InsightFile, RejectedInsights>> {
    let mut groups: BTreeMap<(TrailLocation, &str, &str, i64), Vec<&InsightRecord>> =
        BTreeMap::new();
    for e in emitted {
        groups
            .entry((
                location_of(&e.account),
                e.account.as_str(),
                e.region.as_str(),
                e.delivery_minute,
            ))
            .or_default()
            .push(&e.record);
    }
    groups
        .into_iter()
        .map(|((location, account, region, minute), mut records)| {
            records.sort_by(|a, b| {
                let k = |r: &InsightRecord| {
                    let d = &r.insight_details;
                    (
                        r.event_time.clone(),
                        d.event_source.clone(),
                        d.event_name.clone(),
                        d.insight_type,
                        d.error_code.clone(),
                        d.state,
                    )
                };
                k(a).cmp(&k(b))
            });
            let n = records.len();
            let (mut started, mut ended) = ([0u64; 2], [0u64; 2]);
            for r in &records {
                let d = &r.insight_details;
                let t = usize::from(d.insight_type == InsightType::ApiErrorRateInsight);
                match d.state {
                    InsightState::Start => started[t] += 1,
                    InsightState::End => ended[t] += 1,
                }
            }
            let sorted: Vec<InsightRecord> = records.iter().map(|r| (*r).clone()).collect();
            let json = serde_json::to_vec(&Records { records }).unwrap_or_default();
            let unique = unique_string(&json);
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::default());
            let body = gz
                .write_all(&json)
                .and_then(|()| gz.finish())
                .unwrap_or_default();
            match insight_key(&location, account, region, minute, &unique) {
                Ok(key) => Ok(InsightFile {
                    key,
                    body,
                    records: n,
                    started,
                    ended,
                    account: account.to_string(),
                    region: region.to_string(),
                    insights: sorted,
                }),
                Err(e) => Err(RejectedInsights {
                    key: format!(
                        "account {} Region {} delivery minute {minute}",
                        shown(account),
                        shown(region)
                    ),
                    records: n,
                    reason: e.into(),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> InsightRecord {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(rename = "Records")]
            records: Vec<InsightRecord>,
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/cloudtrail/aws-docs/insight_examples.json");
        let file: File = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        file.records[0].clone()
    }

    #[test]
    fn a_hostile_group_is_refused_and_the_others_are_written() {
        let emitted = |account: &str, region: &str| EmittedInsight {
            delivery_minute: 26_588_937,
            account: account.into(),
            region: region.into(),
            record: record(),
        };
        let all = vec![
            emitted("../../../../tmp/x", "us-east-1"),
            emitted(&"1".repeat(300), "us-east-1"),
            emitted("1111\u{0}22223333", "us-east-1"),
            emitted("111122223333", "US/EAST"),
            emitted("111122223333", "us-east-1"),
        ];
        let built = build_files(&all, |_| TrailLocation::default());
        let (ok, refused): (Vec<_>, Vec<_>) = built.into_iter().partition(Result::is_ok);
        assert_eq!(ok.len(), 1);
        assert_eq!(refused.len(), 4);
        for r in refused.into_iter().map(|r| r.unwrap_err()) {
            assert!(matches!(r.reason, RejectReason::Key(_)), "{r}");
            assert_eq!(r.records, 1);
            assert!(!r.to_string().contains('\0'), "{r}");
        }
        let dir = tempfile::tempdir().unwrap();
        let sink = local::LocalSink::new(&dir.path().join("sink"));
        let file = ok.into_iter().next().unwrap().unwrap();
        let path = sink.write(&file).unwrap();
        assert!(
            path.starts_with(
                dir.path()
                    .join("sink/AWSLogs/111122223333/CloudTrail-Insight/us-east-1/")
            )
        );
    }
}

/// Where Insights files go: a local folder and/or an S3 bucket and prefix.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// Local folder.
    pub local: Option<local::LocalSink>,
    /// Bucket and key prefix.
    pub s3: Option<s3::S3Sink>,
    /// The API's store and live stream (`serve`): records of each file written are stored.
    pub api: Option<std::sync::Arc<trailsight_api::Api>>,
}

impl Sinks {
    /// Writes one file to every sink; returns where (paths and `s3://` URLs).
    /// Called from a plain thread: S3 writes block on `handle`.
    ///
    /// Returns `Err(SinkError::Rejected)` when a sink refuses this file for its own content (its
    /// name; see [`RejectReason`]), and `Err(SinkError::Unavailable)` when a sink
    /// cannot take files now (local I/O errors, S3 unreachable, timeouts, throttling, 5xx,
    /// refused credentials).
    pub fn write(
        &self,
        file: &InsightFile,
        handle: &tokio::runtime::Handle,
    ) -> Result<Vec<std::path::PathBuf>, SinkError> {
        let mut out = Vec::new();
        if let Some(local) = &self.local {
            out.push(local.write(file)?);
        }
        if let Some(s3) = &self.s3 {
            out.push(s3.write(file, handle)?);
        }
        if let Some(api) = &self.api {
            // The store is a view for the API, rebuilt from the sink when lost: a failure to
            // store is reported, never a reason to stop writing Insights.
            if let Err(e) = api.record(&file.account, &file.region, &file.insights) {
                tracing::warn!(error = %e, "Insights records not stored for the API");
            }
        }
        Ok(out)
    }
}
