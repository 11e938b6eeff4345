//! Look-up speed of the Insights store: one page (50 records, newest first) from a store of
//! 1,000,000 Insights records, unfiltered, filtered (eventName, insightType + account) and deep
//! (following `nextToken` 100 pages in), against the baseline of reading one record by eventID in
//! the same run. Prints figures (median and p99 of 200 look-ups each); no assertions.
//!
//! `cargo bench -p trailsight-api --bench lookup` (builds the store once in a temporary folder:
//! about a minute on 2 cores).

use std::time::{Duration, Instant};

use trailsight_api::{After, Filter, Store};
use trailsight_detector::InsightRecord;
use trailsight_detector::insight::InsightType;

const RECORDS: usize = 1_000_000;
const PAGE: usize = 50;

fn record(i: usize) -> (String, InsightRecord) {
    let minute = i / 4; // four records a minute over ~174 days
    let t = chrono::DateTime::from_timestamp(1_767_225_600 + (minute as i64) * 60, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let account = format!("{:012}", 111_122_223_333u64 + (i % 20) as u64);
    let record = serde_json::from_value(serde_json::json!({
        "eventVersion": "1.09",
        "eventTime": t,
        "awsRegion": "us-east-1",
        "eventID": format!("{:08x}-0000-5000-8000-{:012x}", i, i),
        "eventType": "AwsCloudTrailInsight",
        "recipientAccountId": account,
        "sharedEventID": format!("{:08x}-1111-5000-8000-{:012x}", i / 2, i / 2),
        "insightDetails": {
            "state": if i.is_multiple_of(2) { "Start" } else { "End" },
            "eventSource": "iam.amazonaws.com",
            "eventName": format!("Api{}", i % 500),
            "insightType": if i.is_multiple_of(7) { "ApiErrorRateInsight" } else { "ApiCallRateInsight" },
            "insightContext": {"statistics": {
                "baseline": {"average": 0.01}, "insight": {"average": 3},
                "insightDuration": 5, "baselineDuration": 10080}}
        },
        "eventCategory": "Insight"
    }))
    .expect("record");
    (account, record)
}

fn time(label: &str, mut f: impl FnMut() -> usize) -> Duration {
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let n = f();
        samples.push(t.elapsed());
        assert!(n > 0, "{label}: empty page");
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    println!("{label:<48} median {median:>10.3?}  p99 {p99:>10.3?}");
    median
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bench.sqlite")).expect("store");
    let started = Instant::now();
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(10_000) {
        let rows: Vec<(String, InsightRecord)> = chunk.iter().map(|&i| record(i)).collect();
        // One transaction per account in the chunk (the store takes one file's records at a time).
        for account in rows
            .iter()
            .map(|r| r.0.clone())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let records: Vec<InsightRecord> = rows
                .iter()
                .filter(|r| r.0 == account)
                .map(|r| r.1.clone())
                .collect();
            store
                .insert(&account, "us-east-1", &records)
                .expect("insert");
        }
    }
    println!(
        "store: {} records written in {:.1?}",
        store.count().expect("count"),
        started.elapsed()
    );
    let by_id = time("baseline: one record by eventID", || {
        usize::from(
            store
                .get("0007a120-0000-5000-8000-00000007a120")
                .expect("get")
                .is_some(),
        )
    });
    let newest = time("page of 50, newest first, no filter", || {
        store
            .lookup(&Filter::default(), None, PAGE)
            .expect("lookup")
            .len()
    });
    let f = Filter {
        event_name: Some("Api123".into()),
        ..Filter::default()
    };
    let by_name = time("page of 50, eventName filter (1 in 500)", || {
        store.lookup(&f, None, PAGE).expect("lookup").len()
    });
    let f2 = Filter {
        insight_type: Some(InsightType::ApiErrorRateInsight),
        account: Some("111122223340".into()),
        ..Filter::default()
    };
    let by_type = time("page of 50, insightType + account filter", || {
        store.lookup(&f2, None, PAGE).expect("lookup").len()
    });
    let f3 = Filter {
        account: Some("999999999999".into()),
        ..Filter::default()
    };
    let t = Instant::now();
    let none = store.lookup(&f3, None, PAGE).expect("lookup").len();
    println!(
        "{:<48} {:>10.3?} ({none} records)",
        "page of 50, an account with no Insights",
        t.elapsed()
    );
    // 100 pages deep: the keyset of the 5,000th newest record.
    let page100 = store
        .lookup(&Filter::default(), None, PAGE * 100)
        .expect("lookup");
    let last = page100.last().expect("deep");
    let after = After {
        event_time: last.record.event_time.clone(),
        event_id: last.record.event_id.clone(),
    };
    let deep = time("page of 50, 100 pages deep (nextToken)", || {
        store
            .lookup(&Filter::default(), Some(&after), PAGE)
            .expect("lookup")
            .len()
    });
    for (label, d) in [
        ("newest", newest),
        ("eventName", by_name),
        ("insightType+account", by_type),
        ("deep", deep),
    ] {
        println!(
            "{label:<20} {:>6.1}× the by-eventID baseline; {}",
            d.as_secs_f64() / by_id.as_secs_f64().max(1e-9),
            if d < Duration::from_millis(50) {
                "under 50 ms"
            } else {
                "OVER 50 ms"
            }
        );
    }
}
