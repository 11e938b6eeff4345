//! Where Insights files go. Records decided together are grouped into one
//! `{"Records":[…]}` gzip file per trail location, account, Region and delivery
//! minute, named after its content, so rewriting the same Insights writes the
//! same keys and bytes.

pub mod local;

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use trailsight_detector::{EmittedInsight, InsightRecord};

use crate::layout::{TrailLocation, insight_key, unique_string};

/// One Insights file, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsightFile {
    /// Object key / relative path.
    pub key: String,
    /// Gzip bytes of `{"Records":[…]}`.
    pub body: Vec<u8>,
    /// Records in the file.
    pub records: usize,
}

#[derive(Serialize)]
struct Records<'a> {
    #[serde(rename = "Records")]
    records: Vec<&'a InsightRecord>,
}

/// Groups records into files. `location_of(account)` gives each account's trail location.
///
/// Records in a file are sorted by `eventTime`, `eventSource`, `eventName`, type, error code and state.
pub fn build_files(
    emitted: &[EmittedInsight],
    location_of: impl Fn(&str) -> TrailLocation,
) -> Vec<InsightFile> {
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
            let json = serde_json::to_vec(&Records { records }).unwrap_or_default();
            let unique = unique_string(&json);
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::default());
            let body = gz
                .write_all(&json)
                .and_then(|()| gz.finish())
                .unwrap_or_default();
            InsightFile {
                key: insight_key(&location, account, region, minute, &unique),
                body,
                records: n,
            }
        })
        .collect()
}
