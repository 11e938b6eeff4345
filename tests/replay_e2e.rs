//! End to end on real data: a 9.5-day bucket whose busy write APIs follow the
//! real per-minute Twitter series, made of real Stratus Red Team records, with
//! a `CreateAccessKey` burst (25 calls in 8 minutes by one user) and a
//! read-only `DescribeInstances` spike ×30.
//!
//! The Twitter series is GPL-3.0 and is not shipped here: it is read from
//! `../shared/data/rates/twitter-1min/raw_data.csv` (or `TRAILSIGHT_TWITTER_CSV`);
//! without it the test prints a skip message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use trailsight::commands::replay::{ReplayOptions, replay};
use trailsight::layout::TrailLocation;
use trailsight::sink::local::read_insight_files;
use trailsight::synth::{BucketSpec, Rate, Stream, TemplateSet, read_rate_csv, write_bucket};
use trailsight_detector::insight::{InsightState, InsightType};

const ATTACKER: &str = "arn:aws:iam::210987654321:user/leaked-ci-user";

fn twitter_csv() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TRAILSIGHT_TWITTER_CSV").map(PathBuf::from),
        Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/data/rates/twitter-1min/raw_data.csv"),
        ),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn templates() -> TemplateSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cloudtrail/stratus-red-team");
    let texts: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    TemplateSet::from_texts(texts.iter().map(String::as_str)).unwrap()
}

fn bucket_spec(series: Arc<Vec<f64>>) -> BucketSpec {
    let t = templates();
    let find = |s: &str, n: &str, e: bool| {
        t.find(s, n, e)
            .unwrap_or_else(|| panic!("no template {s} {n}"))
    };
    let start = 29_000_000; // 2025-02-20T13:20Z
    let burst = start + 8 * 1440 + 17 * 60 + 30;
    let series_rate = |scale: f64, offset: usize| Rate::Series {
        values: series.clone(),
        scale,
        offset,
    };
    BucketSpec {
        location: TrailLocation {
            prefix: "trail-logs".into(),
            org_id: Some("o-a1b2c3d4e5".into()),
        },
        account: "210987654321".into(),
        region: "eu-west-1".into(),
        start_minute: start,
        minutes: 13_680,
        seed: 42,
        duplicate_fraction: 0.005,
        streams: vec![
            // Busy write APIs following the real series (mean ≈ 112/min scaled down).
            Stream::new(
                find("ssm.amazonaws.com", "SendCommand", false),
                series_rate(1.0 / 30.0, 0),
            ),
            Stream::new(
                find("ec2.amazonaws.com", "StartInstances", false),
                series_rate(1.0 / 80.0, 5000),
            ),
            Stream::new(
                find("iam.amazonaws.com", "AttachRolePolicy", false),
                series_rate(1.0 / 150.0, 9000),
            ),
            // Busy read API, also real-shaped.
            Stream::new(
                find("ssm.amazonaws.com", "DescribeInstanceInformation", false),
                series_rate(1.0 / 10.0, 2000),
            ),
            // CreateAccessKey twice a day by the admin, then the burst by one user.
            Stream::new(
                find("iam.amazonaws.com", "CreateAccessKey", false),
                Rate::Poisson {
                    per_minute: 0.0014,
                    daily_amplitude: 0.0,
                },
            )
            .by("arn:aws:iam::210987654321:user/admin"),
            Stream::new(
                find("iam.amazonaws.com", "CreateAccessKey", false),
                Rate::Burst {
                    start: burst,
                    minutes: 8,
                    total: 25,
                },
            )
            .by(ATTACKER),
            // DescribeInstances at 3/min with a ×30 spike: read-only, must stay silent.
            Stream::new(
                find("ec2.amazonaws.com", "DescribeInstances", false),
                Rate::Poisson {
                    per_minute: 3.0,
                    daily_amplitude: 0.3,
                },
            ),
            Stream::new(
                find("ec2.amazonaws.com", "DescribeInstances", false),
                Rate::Burst {
                    start: burst - 700,
                    minutes: 10,
                    total: 900,
                },
            ),
        ],
    }
}

fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_access_key_burst_is_the_only_insight_and_replay_is_deterministic() {
    let Some(csv) = twitter_csv() else {
        eprintln!(
            "SKIP: Twitter rate series not found (../shared/data/rates/twitter-1min/raw_data.csv or TRAILSIGHT_TWITTER_CSV)"
        );
        return;
    };
    let series = Arc::new(read_rate_csv(&csv).unwrap());
    assert!(series.len() > 14_000);
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let stats = write_bucket(&bucket_spec(series), &bucket).unwrap();
    assert!(stats.records > 100_000, "{stats:?}");

    let run = |sink: PathBuf| {
        replay(ReplayOptions {
            source: bucket.clone(),
            sink,
            config: Default::default(),
            progress: false,
            state: None,
        })
    };
    let first = run(dir.path().join("out1")).await.unwrap();
    assert!(first.problems.is_empty(), "{first}");
    assert!(
        first.duplicates > 0,
        "duplicated deliveries must be recognised: {first}"
    );
    let files = read_insight_files(&dir.path().join("out1")).unwrap();
    let records: Vec<_> = files.iter().flat_map(|(_, r)| r.iter()).collect();
    let summary: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.insight_details.event_name.as_str(),
                r.insight_details.insight_type,
                r.insight_details.state,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "CreateAccessKey",
                InsightType::ApiCallRateInsight,
                InsightState::Start
            ),
            (
                "CreateAccessKey",
                InsightType::ApiCallRateInsight,
                InsightState::End
            )
        ],
        "{first}"
    );
    let end = records[1];
    assert_eq!(records[0].shared_event_id, end.shared_event_id);
    let attrs = end
        .insight_details
        .insight_context
        .attributions
        .as_ref()
        .unwrap();
    assert_eq!(attrs[0].attribute, "userIdentityArn");
    assert_eq!(attrs[0].insight[0].value, ATTACKER);
    assert_eq!(
        end.insight_details
            .insight_context
            .statistics
            .insight_duration,
        Some(8)
    );
    // Organization layout and prefix are kept.
    assert!(files.iter().all(|(k, _)| k.starts_with(
        "trail-logs/AWSLogs/o-a1b2c3d4e5/210987654321/CloudTrail-Insight/eu-west-1/"
    )));

    // Determinism: a second replay writes byte-identical files under the same keys.
    let second = run(dir.path().join("out2")).await.unwrap();
    assert_eq!(second.records, first.records);
    let a = read_tree(&dir.path().join("out1"));
    let b = read_tree(&dir.path().join("out2"));
    assert!(!a.is_empty());
    assert_eq!(a, b);
}
