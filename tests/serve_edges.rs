//! `trailsight serve` at its edges (issue 8): a local file caught while it is still being written
//! is read only once it has settled, never in part; `--once` ends with a clear non-zero exit when
//! a source stays unavailable after the S3 client's retries.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn trailsight() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trailsight"))
}

/// A gzip CloudTrail log file with `n` write management records.
fn log_file(n: usize) -> Vec<u8> {
    let records: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "eventVersion": "1.09",
                "eventTime": format!("2024-03-01T10:{:02}:{:02}Z", (i / 60) % 60, i % 60),
                "eventSource": "iam.amazonaws.com",
                "eventName": "CreateUser",
                "awsRegion": "us-east-1",
                "recipientAccountId": "111122223333",
                "eventID": format!("00000000-0000-4000-8000-{i:012}"),
                "managementEvent": true,
                "readOnly": false,
                "userIdentity": {"arn": "arn:aws:iam::111122223333:user/alice"},
                "requestParameters": {"userName": format!("user-{i}"), "padding": "x".repeat(200)},
            })
        })
        .collect();
    let json = serde_json::to_vec(&serde_json::json!({ "Records": records })).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&json).unwrap();
    e.finish().unwrap()
}

/// Removes ANSI escape sequences (the log may be coloured).
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Sum of `records=N` over serve's `processed` log lines.
fn records_processed(log: &str) -> u64 {
    plain(log)
        .lines()
        .filter(|l| l.contains("processed"))
        .filter_map(|l| {
            let rest = &l[l.find("records=")? + "records=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn a_local_file_still_being_written_is_read_whole_once_it_settles() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("trail");
    let key = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/03/01/\
               111122223333_CloudTrail_us-east-1_20240301T1100Z_AbCdEf0123456789.json.gz";
    let path = source.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = log_file(3000);
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\nsources = [{:?}]\nsinks = [{:?}]\nstate_dir = {:?}\n\
             poll_interval_seconds = 1\ncheckpoint_interval_seconds = 1\nlocal_settle_seconds = 2\n",
            source.display().to_string(),
            dir.path().join("sink").display().to_string(),
            dir.path().join("state").display().to_string(),
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut child = trailsight()
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The writer appends a chunk every 300 ms for about 4 s: several polls see the file partial.
    let mut file = std::fs::File::create(&path).unwrap();
    let chunks: Vec<&[u8]> = bytes.chunks(bytes.len().div_ceil(14)).collect();
    for chunk in &chunks {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(file);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut read = 0;
    while Instant::now() < deadline {
        read = records_processed(&std::fs::read_to_string(&log).unwrap_or_default());
        if read >= 3000 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "serve stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let a few more polls pass: the file must not be read again either.
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        records_processed(&text),
        3000,
        "every record read exactly once, none from a half-written file: {read} seen\n{}",
        plain(&text)
    );
    assert!(
        !plain(&text).contains("gzip error"),
        "a half-written file was read:\n{}",
        plain(&text)
    );
}

#[test]
fn once_with_an_unreachable_s3_source_exits_non_zero_after_the_retries() {
    let dir = tempfile::tempdir().unwrap();
    // A port with nothing listening: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\nsources = [\"s3://trail\"]\nsinks = [{:?}]\nstate_dir = {:?}\n\
             poll_interval_seconds = 1\n\n[serve.s3]\nendpoint_url = \"http://127.0.0.1:{port}\"\n\
             force_path_style = true\nregion = \"us-east-1\"\nmax_attempts = 2\n",
            dir.path().join("sink").display().to_string(),
            dir.path().join("state").display().to_string(),
        ),
    )
    .unwrap();
    let mut child = trailsight()
        .args(["serve", "--once", "--config"])
        .arg(&config)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve --once still running after 90 s with its source unreachable");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "exit status {status}");
    let err = plain(&err);
    assert!(
        err.contains("error: --once: stopped by an unavailable source")
            && err.contains("s3://trail"),
        "{err}"
    );
    assert!(!Path::new(&dir.path().join("state/state.bin")).exists());
}
