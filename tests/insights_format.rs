//! The Insights event format: AWS's own records round-trip through our type,
//! and the demo's Insights files match the golden file byte for byte.

use std::path::Path;

use serde_json::Value;
use trailsight::commands::replay::{ReplayOptions, replay};
use trailsight::sink::local::read_insight_files;
use trailsight_detector::InsightRecord;

#[test]
fn aws_published_insights_round_trip() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cloudtrail/aws-docs/insight_examples.json");
    let file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let records = file["Records"].as_array().unwrap();
    assert_eq!(records.len(), 5);
    for original in records {
        let typed: InsightRecord = serde_json::from_value(original.clone()).unwrap();
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(
            numbers_as_f64(&back),
            numbers_as_f64(original),
            "record {} changed in the round trip",
            original["eventID"]
        );
    }
}

/// The same JSON with every number as the f64 it denotes: serde_json keeps a parsed number's
/// text (feature `arbitrary_precision`), so `0.0000882145` and `8.82145e-05` compare by value.
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn gunzip(bytes: &[u8]) -> String {
    let (json, err) = trailsight::pipeline::decode::inflate(bytes);
    assert!(err.is_none());
    String::from_utf8(json).unwrap()
}

/// Replays the demo bucket and compares every Insights file (key and JSON) with `tests/golden/demo_insights.txt`.
/// Set `UPDATE_GOLDEN=1` to rewrite the golden file after a deliberate change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_insights_match_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let (bucket, stats) = trailsight::synth::demo::write_demo_bucket(dir.path(), 9.5, 1.0).unwrap();
    assert!(stats.records > 100_000);
    let sink = dir.path().join("insights");
    let summary = replay(ReplayOptions {
        source: bucket,
        sink: sink.clone(),
        config: Default::default(),
        progress: false,
        state: None,
    })
    .await
    .unwrap();
    assert_eq!(
        (summary.insights_started, summary.insights_ended),
        (1, 1),
        "{summary}"
    );
    let mut text = String::new();
    for entry in walkdir::WalkDir::new(&sink).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let key = entry
                .path()
                .strip_prefix(&sink)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            text.push_str(&format!(
                "{key}\n{}\n",
                gunzip(&std::fs::read(entry.path()).unwrap())
            ));
        }
    }
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/demo_insights.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).expect("golden file missing: run with UPDATE_GOLDEN=1");
    assert_eq!(text, expected);
    // And the records read back as Insights records.
    let files = read_insight_files(&sink).unwrap();
    let records: Vec<&InsightRecord> = files.iter().flat_map(|f| f.1.iter()).collect();
    assert_eq!(records.len(), 2);
    assert!(files.iter().all(|(key, _)| {
        let name = key.rsplit('/').next().unwrap();
        let parts: Vec<&str> = name.trim_end_matches(".json.gz").split('_').collect();
        key.starts_with("AWSLogs/111122223333/CloudTrail-Insight/us-east-1/")
            && parts.len() == 5
            && parts[1] == "CloudTrail-Insight"
            && parts[3].len() == 14
            && parts[4].len() == 16
            && parts[4].chars().all(|c| c.is_ascii_alphanumeric())
    }));
}
