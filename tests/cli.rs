//! The `trailsight` binary: `replay` on a folder with good and broken files
//! reports every problem precisely, keeps every good record and exits 0.

mod common;
use common::put;

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Stratus Red Team anonymizes Regions (`us-north-2r`), which AWS's Region pattern rejects:
/// the same records in `us-east-1`, as the trail folder they are put in says.
fn in_us_east_1(data: &[u8]) -> Vec<u8> {
    let mut records: Vec<serde_json::Value> = serde_json::from_slice(data).unwrap();
    for r in &mut records {
        r["awsRegion"] = serde_json::Value::from("us-east-1");
    }
    serde_json::to_vec(&records).unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn replay_reports_broken_files_and_keeps_good_records() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cloudtrail");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let day = "AWSLogs/946986569305/CloudTrail/us-east-1/2024/08/02";
    let good = in_us_east_1(
        &std::fs::read(data.join("stratus-red-team/aws.persistence.iam-create-admin-user.json"))
            .unwrap(),
    );
    put(
        &logs,
        &format!("{day}/946986569305_CloudTrail_us-east-1_20240802T1000Z_AAAAAAAAAAAAAAAA.json.gz"),
        &gz(&good),
    );
    let big = in_us_east_1(
        &std::fs::read(data.join("stratus-red-team/aws.execution.ssm-send-command.json")).unwrap(),
    );
    let z = gz(&big);
    put(
        &logs,
        &format!("{day}/946986569305_CloudTrail_us-east-1_20240802T1005Z_BBBBBBBBBBBBBBBB.json.gz"),
        &z[..z.len() * 2 / 3],
    );
    put(
        &logs,
        &format!("{day}/946986569305_CloudTrail_us-east-1_20240802T1010Z_CCCCCCCCCCCCCCCC.json.gz"),
        b"this is not gzip",
    );
    put(
        &logs,
        "exports/otrf.json",
        &std::fs::read(data.join("otrf/ec2_proxy_s3_exfiltration_2020-09-14011940.json")).unwrap(),
    );
    put(
        &logs,
        "AWSLogs/946986569305/CloudTrail-Digest/us-east-1/2024/07/30/946986569305_CloudTrail-Digest_us-east-1_t_us-east-1_20240730T220000Z.json.gz",
        &gz(b"{}"),
    );
    put(&logs, "notes.txt", b"hello");

    let sink = dir.path().join("insights");
    let out = Command::new(env!("CARGO_BIN_EXE_trailsight"))
        .args(["replay", "--source"])
        .arg(&logs)
        .arg("--sink")
        .arg(&sink)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("files: 3 read, 1 skipped, 1 read in part; 1 digest and 0 Insights files skipped, 1 other files ignored"), "{stdout}");
    assert!(
        stdout.contains("20240802T1005Z_BBBBBBBBBBBBBBBB.json.gz: gzip error after"),
        "{stdout}"
    );
    assert!(
        stdout.contains("20240802T1010Z_CCCCCCCCCCCCCCCC.json.gz: not a CloudTrail log file"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "exports/otrf.json: 103 records with issues; first, record #0: missing eventTime"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("103 skipped for missing fields, 0 skipped for invalid fields, 0 skipped for eventTime out of bounds"),
        "{stdout}"
    );
    // All of the good file's records, and part of the truncated one's, were read.
    let records: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("records: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let good_count = serde_json::from_slice::<Vec<serde_json::Value>>(&good)
        .unwrap()
        .len() as u64;
    assert!(records > good_count + 103, "{stdout}");
    assert!(
        stdout.contains("Insights: 0 started, 0 ended, 0 still open"),
        "{stdout}"
    );
}

#[test]
fn replay_fails_clearly_when_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trailsight"))
        .args(["replay", "--source", "/nonexistent/trail", "--sink"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read source /nonexistent/trail"));

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[detector]\nwarmup_minute = 10\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trailsight"))
        .args(["replay", "--source"])
        .arg(dir.path())
        .arg("--sink")
        .arg(dir.path().join("o"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("unknown field `warmup_minute`"),
        "{err}"
    );
}
