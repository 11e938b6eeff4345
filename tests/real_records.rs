//! Every real record shipped in tests/data parses, and what counts equals an
//! independent count computed here from `serde_json::Value`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use trailsight::pipeline::decode::{DecodeError, decode};
use trailsight_detector::batch::RecordIssue;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn json_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

type Key = (String, String, String, String, Option<String>);

/// AWS's Region shape (`us-east-1`, `us-gov-west-1`, `eu-isoe-west-1`), written independently
/// of the crate: two letters, one to three lowercase words, a number.
fn is_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    r.len() <= 32
        && (3..=5).contains(&parts.len())
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && (1..=2).contains(&parts[parts.len() - 1].len())
}

/// Stratus Red Team anonymizes Regions (`us-north-2r`, `apiso-northsouth-3r`), which AWS's
/// pattern rejects (so the records are skipped as invalid). The same records with those Regions
/// replaced by `us-east-1`, to count them as a trail would.
fn with_real_regions(values: &[Value]) -> Vec<Value> {
    values
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(region) = r.get("awsRegion").and_then(Value::as_str)
                && !is_region(region)
            {
                r["awsRegion"] = Value::from("us-east-1");
            }
            r
        })
        .collect()
}

/// The selection rules of issue #2, written independently of the crate, on plain JSON values.
fn expected_counts(records: &[Value]) -> (BTreeMap<Key, u64>, u64) {
    let mut counts = BTreeMap::new();
    let mut skipped = 0;
    for r in records {
        let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
        let account = s("recipientAccountId")
            .or_else(|| r["userIdentity"]["accountId"].as_str().map(str::to_string));
        let (Some(_time), Some(source), Some(name), Some(region), Some(account)) = (
            s("eventTime"),
            s("eventSource"),
            s("eventName"),
            s("awsRegion"),
            account,
        ) else {
            skipped += 1;
            continue;
        };
        let valid_account = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        if !valid_account || !is_region(&region) {
            skipped += 1;
            continue;
        }
        let management = r.get("managementEvent") == Some(&Value::Bool(true))
            || s("eventCategory").as_deref() == Some("Management");
        if !management {
            continue;
        }
        if r.get("readOnly") == Some(&Value::Bool(false)) {
            *counts
                .entry((
                    account.clone(),
                    region.clone(),
                    source.clone(),
                    name.clone(),
                    None,
                ))
                .or_insert(0) += 1;
        }
        if let Some(code) = s("errorCode").filter(|c| !c.is_empty()) {
            *counts
                .entry((account, region, source, name, Some(code)))
                .or_insert(0) += 1;
        }
    }
    (counts, skipped)
}

fn counted(
    bytes: &[u8],
) -> (
    BTreeMap<Key, u64>,
    trailsight_detector::BatchStats,
    Vec<DecodeError>,
) {
    let d = decode(bytes, trailsight_detector::TimeBounds::UNBOUNDED);
    let s = |i: u32| d.batch.strings[i as usize].to_string();
    let mut counts = BTreeMap::new();
    for e in &d.batch.events {
        let base = (
            s(e.account),
            s(e.region),
            s(e.event_source),
            s(e.event_name),
        );
        if e.call {
            *counts
                .entry((
                    base.0.clone(),
                    base.1.clone(),
                    base.2.clone(),
                    base.3.clone(),
                    None,
                ))
                .or_insert(0) += 1;
        }
        if e.error {
            *counts
                .entry((base.0, base.1, base.2, base.3, Some(s(e.error_code))))
                .or_insert(0) += 1;
        }
    }
    (counts, d.batch.stats, d.errors)
}

fn records_of(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("Records") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

#[test]
fn stratus_and_aws_docs_records_parse_and_count_exactly() {
    let mut files = json_files("cloudtrail/stratus-red-team");
    files.extend(json_files("cloudtrail/aws-docs"));
    assert!(files.len() >= 37, "test data missing: {files:?}");
    let mut total_records = 0;
    let mut total_counted = 0;
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let values = records_of(serde_json::from_slice(&bytes).unwrap());
        let normalized = with_real_regions(&values);
        let normalized_bytes =
            serde_json::to_vec(&serde_json::json!({ "Records": normalized })).unwrap();
        for (what, values, bytes) in [
            ("as shipped", &values, &bytes),
            ("with real Regions", &normalized, &normalized_bytes),
        ] {
            let (expected, expected_skipped) = expected_counts(values);
            let (got, stats, errors) = counted(bytes);
            assert!(errors.is_empty(), "{} {what}: {errors:?}", path.display());
            assert_eq!(
                stats.records,
                values.len() as u64,
                "{} {what}",
                path.display()
            );
            assert_eq!(stats.skipped, expected_skipped, "{} {what}", path.display());
            assert_eq!(got, expected, "{} {what}", path.display());
        }
        let (got, _, _) = counted(&normalized_bytes);
        total_records += values.len();
        total_counted += got.values().sum::<u64>();
    }
    assert_eq!(total_records, 310 + 26 + 5);
    assert!(total_counted > 50, "only {total_counted} counted");
}

#[test]
fn gzip_copy_counts_the_same() {
    use std::io::Write;
    let path = data("cloudtrail/stratus-red-team/aws.credential-access.ec2-get-password-data.json");
    let values = records_of(serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap());
    let bytes =
        serde_json::to_vec(&serde_json::json!({ "Records": with_real_regions(&values) })).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).unwrap();
    let (a, sa, _) = counted(&bytes);
    let (b, sb, _) = counted(&gz.finish().unwrap());
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    // 30 GetPasswordData calls failed with Client.UnauthorizedOperation: error-rate input.
    let key = a
        .keys()
        .find(|k| k.3 == "GetPasswordData" && k.4.is_some())
        .unwrap();
    assert_eq!(a[key], 30);
}

#[test]
fn otrf_export_gives_clear_errors_and_no_panic() {
    let files = json_files("cloudtrail/otrf");
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    let d = decode(&bytes, trailsight_detector::TimeBounds::UNBOUNDED);
    // JSON Lines with `@timestamp` instead of `eventTime`: every record skipped, each reported.
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.batch.stats.records, 103);
    assert_eq!(d.batch.stats.skipped, 103);
    assert!(d.batch.events.is_empty());
    assert_eq!(
        d.batch.issues[0],
        (0, RecordIssue::MissingField("eventTime"))
    );
    assert_eq!(d.batch.issues[0].1.to_string(), "missing eventTime");
}

#[test]
fn broken_copies_of_real_files_never_panic() {
    let path = data("cloudtrail/aws-docs/all_doc_examples.json");
    let bytes = std::fs::read(path).unwrap();
    for cut in (0..bytes.len()).step_by(97) {
        let d = decode(&bytes[..cut], trailsight_detector::TimeBounds::UNBOUNDED);
        assert!(d.batch.stats.records <= 26);
    }
    let mut flipped = bytes.clone();
    for i in (0..flipped.len()).step_by(13) {
        flipped[i] = b'}';
    }
    let _ = decode(&flipped, trailsight_detector::TimeBounds::UNBOUNDED);
}
