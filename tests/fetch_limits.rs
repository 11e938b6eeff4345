//! Bytes read from log files are bounded: a file larger than the per-file cap is read up to
//! the cap (the records before the cut are kept and the file is reported as read in part), and
//! a byte budget smaller than the files still lets every file through, in order.

mod common;
use common::put;

use std::path::{Path, PathBuf};

use trailsight::pipeline::{FetchLimits, ReplaySummary, RunFiles, run_files};
use trailsight::sink::Sinks;
use trailsight::source::Source;
use trailsight::source::SourceFile;
use trailsight_detector::Engine;

/// A `{"Records":[…]}` file of `n` write-management records, one minute apart.
fn records_file(n: usize) -> String {
    let records: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"eventVersion":"1.09","eventTime":"2024-01-01T00:{:02}:00Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","awsRegion":"us-east-1","recipientAccountId":"111122223333","eventID":"00000000-0000-0000-0000-{i:012}","managementEvent":true,"readOnly":false}}"#,
                i % 60
            )
        })
        .collect();
    format!("{{\"Records\":[{}]}}", records.join(","))
}

fn source_file(root: &Path, key: &str) -> SourceFile {
    let path = root.join(key);
    SourceFile {
        key: key.into(),
        size: std::fs::metadata(&path).unwrap().len(),
        path,
        info: trailsight::layout::parse_key(key),
    }
}

async fn run(files: Vec<SourceFile>, limits: FetchLimits, sink: &Path) -> ReplaySummary {
    let engine = Engine::new(trailsight::config::Config::default().detector).unwrap();
    let mut summary = ReplaySummary::default();
    run_files(
        engine,
        files.into_iter().map(|f| (0, f)).collect(),
        RunFiles {
            sources: &[Source::Local(PathBuf::new())],
            sinks: Sinks {
                local: Some(trailsight::sink::local::LocalSink::new(sink)),
                s3: None,
                api: None,
            },
            locations: Default::default(),
            finish: true,
            progress: None,
            stop: None,
            limits,
            metrics: None,
        },
        &mut summary,
    )
    .await
    .unwrap();
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_cap_keeps_the_records_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let big = records_file(40);
    let one = records_file(1).len();
    put(dir.path(), "a/big.json", big.as_bytes());
    put(dir.path(), "b/after.json", records_file(3).as_bytes());
    // The cut falls inside the 11th record.
    let cap = (10 * one) as u64;
    let limits = FetchLimits {
        max_file_bytes: cap,
        ..FetchLimits::default()
    };
    let files = vec![
        source_file(dir.path(), "a/big.json"),
        source_file(dir.path(), "b/after.json"),
    ];
    let summary = run(files, limits, &dir.path().join("sink")).await;
    assert_eq!(summary.files_read, 2, "{summary}");
    // The records before the cut, and every record of the file after it.
    assert!(
        (8..=10).contains(&(summary.records.records - 3)),
        "{}",
        summary.records.records
    );
    let problem = &summary.problems[0];
    assert_eq!(problem.key, "a/big.json");
    assert!(!problem.skipped);
    assert!(
        problem
            .reason
            .starts_with(&format!("larger than {cap} bytes; the rest was not read")),
        "{}",
        problem.reason
    );
    assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_smaller_than_the_files_lets_them_all_through_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..30 {
        let key = format!("f{i:02}.json");
        put(dir.path(), &key, records_file(20 + i).as_bytes());
        files.push(source_file(dir.path(), &key));
    }
    let total: u64 = (0..30).map(|i| 20 + i as u64).sum();
    let limits = FetchLimits {
        max_file_bytes: 1 << 20,
        // 3 KiB: one or two files at a time.
        max_bytes_in_flight: 3 << 10,
    };
    let summary = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        run(files, limits, &dir.path().join("sink")),
    )
    .await
    .expect("no deadlock");
    assert_eq!(summary.files_read, 30);
    assert_eq!(summary.files_consumed, 30);
    assert_eq!(summary.records.records, total);
    assert!(summary.problems.is_empty(), "{:?}", summary.problems);
}

/// On S3, a file listed larger than the cap is fetched with a ranged GET and cut there; one
/// listed smaller (or without a size) is still read only up to the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_fetches_stop_at_the_cap() {
    // SAFETY: set before any client of this test process reads them, always to the same values.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", common::AK);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", common::SK);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let dir = tempfile::tempdir().unwrap();
    let (addr, _server) = common::start_s3(dir.path()).await;
    let client = trailsight::s3::s3_client(&trailsight::config::S3Config {
        endpoint_url: Some(format!("http://{addr}")),
        force_path_style: true,
        region: Some("us-east-1".into()),
        max_attempts: Some(2),
    })
    .await;
    client.create_bucket().bucket("trail").send().await.unwrap();
    let body = records_file(40).into_bytes();
    client
        .put_object()
        .bucket("trail")
        .key("big.json")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let fetcher = Source::S3 {
        client,
        bucket: "trail".into(),
        prefix: String::new(),
    };
    for listed in [body.len() as u64, 0, 10] {
        let file = SourceFile {
            key: "big.json".into(),
            path: Default::default(),
            info: trailsight::layout::parse_key("big.json"),
            size: listed,
        };
        let got = fetcher.fetch_at_most(&file, 1000).await.unwrap();
        assert!(got.truncated, "listed {listed}");
        assert_eq!(got.bytes, body[..1000], "listed {listed}");
        let whole = fetcher.fetch_at_most(&file, 1 << 20).await.unwrap();
        assert!(!whole.truncated);
        assert_eq!(whole.bytes, body);
    }
}
