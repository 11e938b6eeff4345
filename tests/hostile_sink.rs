//! Hostile values in log records and keys never steer where Insights files go:
//! `replay` and `serve --once` on a folder whose records carry path syntax, empty,
//! overlong or NUL-holding accounts and Regions write nothing outside the sink,
//! keep the AWS layout inside it, still write the valid account's Insights, and
//! go on with the files after a poisoned one.

mod common;
use common::{put, tree};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const ACCOUNT: &str = trailsight::synth::demo::DEMO_ACCOUNT;
const REGION: &str = trailsight::synth::demo::DEMO_REGION;
const DETECTOR: &str = "[detector]\nwarmup_minutes = 720\n";

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// Days 6 to 9.5 of the demo bucket (its CreateAccessKey burst on day 8), IAM traffic only.
fn build_bucket(root: &Path) {
    let mut spec = trailsight::synth::demo::demo_spec(9.5, 0.3, 11).unwrap();
    spec.start_minute += 6 * 1440;
    spec.minutes = 3 * 1440 + 720;
    spec.streams
        .retain(|s| s.template["eventSource"] == "iam.amazonaws.com");
    trailsight::synth::write_bucket(&spec, root).unwrap();
}

/// JSON string literal of `s`.
fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The hostile variants, as (account, Region); `escape` is a path two levels above the sink.
fn variants(escape: &Path) -> Vec<(String, String)> {
    let region = REGION.to_string();
    let account = ACCOUNT.to_string();
    vec![
        ("../../escaped".into(), region.clone()),
        (".".into(), region.clone()),
        ("".into(), region.clone()),
        (
            escape.join("absolute").display().to_string(),
            region.clone(),
        ),
        ("..".into(), region.clone()),
        ("1".repeat(300), region.clone()),
        ("1111\u{0}22223333".into(), region.clone()),
        (account.clone(), "../../escaped-region".into()),
        (account.clone(), "US/EAST".into()),
        (account.clone(), ".".into()),
        (account, "".into()),
    ]
}

/// The bucket's files, plus for each variant a copy of every file whose records carry the
/// variant's account and Region and fresh eventIDs (as loose files, so their keys say nothing
/// about them).
fn poisoned_source(clean: &Path, source: &Path, escape: &Path) {
    let files = tree(clean);
    for (key, bytes) in &files {
        put(source, key, bytes);
    }
    for (i, (account, region)) in variants(escape).iter().enumerate() {
        for (key, bytes) in &files {
            let text = gunzip(bytes)
                .replace(&format!("\"{ACCOUNT}\""), &json(account))
                .replace(&format!("\"{REGION}\""), &json(region))
                // Fresh eventIDs: copies of counted records would be dropped as duplicates.
                .replace("\"eventID\":\"", &format!("\"eventID\":\"v{i}-"));
            let name = key.rsplit('/').next().unwrap();
            put(
                source,
                &format!("hostile/v{i}/{name}"),
                &gz(text.as_bytes()),
            );
        }
    }
}

fn trailsight() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trailsight"))
}

fn replay(source: &Path, sink: &Path, config: &Path) -> std::process::Output {
    trailsight()
        .args(["replay", "--source"])
        .arg(source)
        .arg("--sink")
        .arg(sink)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// Every file under `dir`, as paths relative to it.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_path_buf())
        .collect()
}

/// True for a key in AWS's layout for the valid account and Region.
fn is_valid_insights_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    parts.len() == 8
        && parts[..4] == ["AWSLogs", ACCOUNT, "CloudTrail-Insight", REGION]
        && parts[7].starts_with(&format!("{ACCOUNT}_CloudTrail-Insight_{REGION}_"))
        && parts[7].ends_with(".json.gz")
}

#[test]
fn replay_writes_only_inside_the_sink_and_keeps_valid_insights() {
    let dir = tempfile::tempdir().unwrap();
    // `escape` is where a path-escaping value would land: the test checks nothing appears there.
    let escape = dir.path().join("e");
    let work = escape.join("w");
    let clean = work.join("clean");
    build_bucket(&clean);
    let config = work.join("config.toml");
    std::fs::write(&config, DETECTOR).unwrap();

    let expected_sink = work.join("expected");
    let out = replay(&clean, &expected_sink, &config);
    assert!(out.status.success(), "{out:?}");
    let expected = tree(&expected_sink);
    assert!(!expected.is_empty(), "the clean bucket gives Insights");

    let source = work.join("logs");
    poisoned_source(&clean, &source, &escape);
    let sink = work.join("sink");
    let out = replay(&source, &sink, &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");

    // Nothing outside the sink (and the inputs): no file or folder.
    let mut outside: Vec<PathBuf> = all_files(&escape)
        .into_iter()
        .filter(|p| !p.starts_with("w/clean") && !p.starts_with("w/logs"))
        .filter(|p| !p.starts_with("w/sink") && !p.starts_with("w/expected"))
        .filter(|p| *p != Path::new("w/config.toml"))
        .collect();
    outside.extend(
        walkdir::WalkDir::new(dir.path())
            .min_depth(1)
            .max_depth(1)
            .into_iter()
            .map(|e| e.unwrap().path().to_path_buf())
            .filter(|p| *p != escape),
    );
    assert!(outside.is_empty(), "written outside the sink: {outside:?}");

    // Inside the sink: the valid account's Insights, exactly as without the hostile files,
    // all in AWS's layout (no rearranged folders).
    let written = tree(&sink);
    for key in written.keys() {
        assert!(is_valid_insights_key(key), "{key}");
    }
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    // The hostile Insights are reported with why, escaped (when the detector let their records in).
    for line in stdout.lines().filter(|l| l.contains("not written:")) {
        assert!(
            line.contains("is not 12 digits") || line.contains("is not an AWS Region name"),
            "{line}"
        );
        assert!(!line.contains('\0'), "{line:?}");
    }
}

use common::{AK, SK, start_s3};

/// `serve --once` on the poisoned folder with a local and an S3 sink ends, writes only the valid
/// account's Insights in AWS's layout under each sink, and nothing anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_once_with_local_and_s3_sinks_writes_only_valid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let escape = dir.path().join("e");
    let work = escape.join("w");
    let clean = work.join("clean");
    build_bucket(&clean);
    let config = work.join("replay.toml");
    std::fs::write(&config, DETECTOR).unwrap();
    // What serve writes for the clean files: replay with a state folder (open minutes stay open).
    let expected_sink = work.join("expected");
    let out = trailsight()
        .args(["replay", "--source"])
        .arg(&clean)
        .arg("--sink")
        .arg(&expected_sink)
        .arg("--state")
        .arg(work.join("replay-state"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let expected: Vec<String> = tree(&expected_sink).into_keys().collect();
    assert!(!expected.is_empty());

    let source = work.join("logs");
    poisoned_source(&clean, &source, &escape);
    let s3_root = work.join("s3");
    std::fs::create_dir_all(s3_root.join("ins")).unwrap();
    let (addr, _server) = start_s3(&s3_root).await;
    let sink = work.join("sink");
    let serve_toml = work.join("serve.toml");
    std::fs::write(
        &serve_toml,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\nsources = [{:?}]\nsinks = [\"file://{}\", \"s3://ins/o\"]\nstate_dir = {:?}\n\
             poll_interval_seconds = 1\nbatch_files = 50\n\
             [serve.s3]\nendpoint_url = \"http://{addr}\"\nforce_path_style = true\nregion = \"us-east-1\"\n\
             max_attempts = 2\n{DETECTOR}",
            source.display().to_string(),
            sink.display(),
            work.join("state").display().to_string(),
        ),
    )
    .unwrap();
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_trailsight"))
            .args(["serve", "--once", "--config"])
            .arg(&serve_toml)
            .env("AWS_ACCESS_KEY_ID", AK)
            .env("AWS_SECRET_ACCESS_KEY", SK)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .expect("serve --once ends")
    .unwrap();
    assert!(status.success());

    let local: Vec<String> = tree(&sink).into_keys().collect();
    assert_eq!(local, expected);
    // Every object in the S3 server (any bucket) is under the sink prefix, in AWS's layout.
    let objects: Vec<String> = tree(&s3_root)
        .into_keys()
        .filter(|k| !k.split('/').any(|c| c.starts_with('.')))
        .collect();
    let in_sink: Vec<String> = objects
        .iter()
        .filter_map(|k| k.strip_prefix("ins/o/").map(str::to_string))
        .collect();
    assert_eq!(
        in_sink.len(),
        objects.len(),
        "objects outside s3://ins/o/: {objects:?}"
    );
    assert_eq!(in_sink, expected);
    // Nothing outside the sinks, the inputs and the state.
    let outside: Vec<PathBuf> = all_files(&escape)
        .into_iter()
        .filter(|p| {
            ![
                "w/clean",
                "w/logs",
                "w/sink",
                "w/expected",
                "w/s3",
                "w/state",
                "w/replay-state",
            ]
            .iter()
            .any(|d| p.starts_with(d))
        })
        .filter(|p| !p.to_string_lossy().ends_with(".toml"))
        .collect();
    assert!(outside.is_empty(), "written outside the sinks: {outside:?}");
}
