//! Honest outcomes and output hygiene, through the `trailsight` binary: what cannot run fails
//! before any work with an error naming the path, a state folder has one user at a time, files a
//! checkpoint makes `replay --state` pass over are reported, config values are range-checked with
//! the key named, and nothing from a log (an `eventName`, a file name) reaches the terminal with
//! its control characters raw.

mod common;
use common::put;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn trailsight() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trailsight"))
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const DAY: &str = "AWSLogs/946986569305/CloudTrail/us-east-1/2024/07/30";
const PREFIX: &str = "AWSLogs/946986569305/CloudTrail/us-east-1/";

/// A real CloudTrail log file (gzip) delivered at `hhmm` on 2024-07-30, under `root`.
fn log_file(root: &Path, hhmm: &str) -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cloudtrail");
    let good =
        std::fs::read(data.join("stratus-red-team/aws.persistence.iam-create-admin-user.json"))
            .unwrap();
    let key = format!(
        "{DAY}/946986569305_CloudTrail_us-east-1_20240730T{hhmm}Z_AAAAAAAAAAAAAAAA.json.gz"
    );
    put(root, &key, &gz(&good));
    key
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn replay(source: &Path, sink: &Path, state: Option<&Path>) -> Output {
    let mut c = trailsight();
    c.args(["replay", "--source"])
        .arg(source)
        .arg("--sink")
        .arg(sink);
    if let Some(state) = state {
        c.arg("--state").arg(state);
    }
    c.output().unwrap()
}

#[test]
fn replay_state_reports_files_at_or_before_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, older) = (dir.path().join("newer"), dir.path().join("older"));
    log_file(&newer, "2210");
    // Hours before it: outside the cursor's reorder window, where late files are still read.
    log_file(&older, "0100");
    log_file(&older, "0105");
    let (sink, state) = (dir.path().join("sink"), dir.path().join("state"));
    let out = replay(&newer, &sink, Some(&state));
    assert!(out.status.success(), "{out:?}");

    // The older folder's two files sort before the checkpoint's cursor: not read, and said so.
    let out = replay(&older, &sink, Some(&state));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("files: 0 read, 0 skipped"), "{stdout}");
    assert!(
        stdout.contains("files not read: 2 at or before the checkpoint's cursor"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "  2 files at or before the checkpoint's cursor for prefix {PREFIX} ({DAY}/946986569305_CloudTrail_us-east-1_20240730T2210Z_AAAAAAAAAAAAAAAA.json.gz); not read"
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("WARN") && stderr.contains("files=2") && stderr.contains("not read"),
        "{stderr}"
    );
    // A replay without a checkpoint says nothing of the kind.
    let out = replay(&older, &dir.path().join("sink2"), None);
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("files: 2 read") && !stdout.contains("not read"),
        "{stdout}"
    );
    assert!(!stderr.contains("not read"), "{stderr}");
}

#[test]
fn a_source_that_cannot_be_read_exits_non_zero_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A device is neither a folder nor a file of logs.
    let out = replay(Path::new("/dev/null"), &dir.path().join("sink"), None);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(
        stderr,
        "error: cannot read source /dev/null: not a folder or a regular file\n"
    );
    assert!(stdout.is_empty(), "{stdout}");

    // A folder without read permission (only testable without root's override).
    let locked = dir.path().join("locked");
    log_file(&locked, "2200");
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let readable_anyway = std::fs::read_dir(&locked).is_ok();
    let out = replay(&locked, &dir.path().join("sink"), None);
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    if !readable_anyway {
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!("cannot read source {}: ", locked.display()))
                && stderr.contains("ermission denied"),
            "{stderr}"
        );
    }
}

#[test]
fn an_unwritable_sink_or_state_folder_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    log_file(&logs, "2200");
    // A regular file where a folder must be: nothing can be created under it (root included).
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();

    let sink = file.join("insights");
    let out = replay(&logs, &sink, None);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: sink folder {} is not writable: ",
            sink.display()
        )),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "no work was done: {stdout}");

    let state = file.join("state");
    let out = replay(&logs, &dir.path().join("sink"), Some(&state));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: state folder {} is not writable: ",
            state.display()
        )),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "no work was done: {stdout}");
    assert!(!dir.path().join("sink").exists(), "nothing was written");
}

fn serve_config(dir: &Path, source: &Path, sink: &Path, state: &Path, extra: &str) -> PathBuf {
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\nsources = [{:?}]\nsinks = [\"file://{}\"]\nstate_dir = {:?}\n\
             poll_interval_seconds = 60\n{extra}",
            source.display().to_string(),
            sink.display(),
            state.display().to_string(),
        ),
    )
    .unwrap();
    path
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_state_folder_has_one_user_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    log_file(&logs, "2200");
    let (sink, state) = (dir.path().join("sink"), dir.path().join("state"));
    let config = serve_config(dir.path(), &logs, &sink, &state, "");
    let mut first = Child(
        trailsight()
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = first.0.id();
    // The first process holds the lock once its pid is in the lock file.
    let lock = state.join("lock");
    let started = Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim() != pid.to_string()) {
        assert!(first.0.try_wait().unwrap().is_none(), "serve exited early");
        assert!(started.elapsed() < Duration::from_secs(60), "no lock taken");
        std::thread::sleep(Duration::from_millis(20));
    }

    let holder = format!(
        "state folder {} is in use by process {pid} (lock file {})",
        state.display(),
        lock.display()
    );
    let second = trailsight()
        .args(["serve", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (_, stderr) = text(&second);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&holder), "{stderr}");
    let replayed = replay(&logs, &sink, Some(&state));
    let (stdout, stderr) = text(&replayed);
    assert_eq!(replayed.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(&holder), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");

    // The OS releases the lock when its holder dies, however it dies.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let out = trailsight()
        .args(["serve", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = replay(&logs, &sink, Some(&state));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn serve_config_values_are_range_checked_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    // An empty source, so a `serve --once` that accepted the value would exit at once.
    std::fs::create_dir_all(&logs).unwrap();
    for (extra, expected) in [
        (
            "poll_interval_seconds = 0\n",
            "serve.poll_interval_seconds: 0 is outside 1..=86400",
        ),
        (
            "batch_files = 0\n",
            "serve.batch_files: 0 is outside 1..=100000",
        ),
        (
            "[serve.s3]\nmax_attempts = 0\n",
            "serve.s3.max_attempts: 0 is outside 1..=100",
        ),
    ] {
        // `poll_interval_seconds` is already set once by the helper: replace it.
        let config = serve_config(
            dir.path(),
            &logs,
            &dir.path().join("sink"),
            &dir.path().join("state"),
            "",
        );
        let body = std::fs::read_to_string(&config).unwrap();
        let body = if extra.starts_with("poll_interval") {
            body.replace("poll_interval_seconds = 60\n", extra)
        } else {
            format!("{body}{extra}")
        };
        std::fs::write(&config, body).unwrap();
        let out = trailsight()
            .args(["serve", "--once", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr,
            format!("error: invalid config {}: {expected}\n", config.display())
        );
        assert!(
            !dir.path().join("state").exists(),
            "stopped before any work"
        );
    }
}

#[test]
fn errors_print_once_with_control_characters_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir
        .path()
        .join("x\u{1b}[2J\nFAKE: Insights: 0 started.toml");
    let out = trailsight()
        .args(["replay", "--source"])
        .arg(dir.path())
        .arg("--sink")
        .arg(dir.path().join("sink"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: cannot read config {}/x\\x1b[2J\\nFAKE: Insights: 0 started.toml: No such file or directory (os error 2)\n",
            dir.path().display()
        )
    );

    // A TOML error is one line with its position, not the parser's multi-line drawing.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[detector]\nwarmup = 5\n").unwrap();
    let out = trailsight()
        .args(["replay", "--source"])
        .arg(dir.path())
        .arg("--sink")
        .arg(dir.path().join("sink"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: invalid config {}: line 2, column 1: unknown field `warmup`",
            bad.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn log_text_cannot_forge_summary_lines() {
    use trailsight::synth::{BucketSpec, Rate, Stream, TemplateSet, write_bucket};
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let forged = "CreateAccessKey\u{1b}[2J\u{0}\nFAKE: Insights: 0 started";
    let t = TemplateSet::embedded();
    let template = t
        .find("iam.amazonaws.com", "CreateAccessKey", false)
        .unwrap();
    let start = 29_892_960; // 2026-11-02T00:00Z
    let minutes = 2 * 1440;
    let spec = BucketSpec {
        location: Default::default(),
        account: "111122223333".into(),
        region: "us-east-1".into(),
        start_minute: start,
        minutes,
        seed: 3,
        streams: vec![
            Stream::new(
                template,
                Rate::Poisson {
                    per_minute: 0.01,
                    daily_amplitude: 0.0,
                },
            )
            .set("eventName", forged.into()),
            // A burst in the last minutes: still open at the end of input.
            Stream::new(
                template,
                Rate::Burst {
                    start: start + minutes - 8,
                    minutes: 8,
                    total: 40,
                },
            )
            .set("eventName", forged.into()),
        ],
        duplicate_fraction: 0.0,
    };
    write_bucket(&spec, &logs).unwrap();
    // And a broken file whose name carries the same payload.
    put(
        &logs,
        &format!("{DAY}/946986569305_CloudTrail_us-east-1_20240730T2200Z_\u{1b}[2J\nFAKE.json.gz"),
        b"not gzip",
    );
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[detector]\nwarmup_minutes = 720\n").unwrap();
    let out = trailsight()
        .args(["replay", "--source"])
        .arg(&logs)
        .arg("--sink")
        .arg(dir.path().join("sink"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in stdout.lines() {
        assert!(!line.starts_with("FAKE"), "forged line: {stdout}");
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
            "raw control character: {line:?}"
        );
    }
    // The record itself is refused (an eventName with control characters is not AWS's shape);
    // its value is reported escaped, on one line.
    assert!(
        stdout.contains(
            "eventName \"CreateAccessKey\\u{1b}[2J\\0\\nFAKE: Insights: 0 started\" is not a valid eventName: record skipped"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("20240730T2200Z_\\x1b[2J\\nFAKE.json.gz: not a CloudTrail log file"),
        "{stdout}"
    );
}
