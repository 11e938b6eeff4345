//! `trailsight serve` on local folders, as a child process: files that arrive
//! while it runs are picked up at the next poll and the sink ends equal to
//! `replay`'s; SIGTERM exits 0 with a checkpoint; a corrupt checkpoint stops it
//! with an error naming the file, never a silent reset.

mod common;
use common::{put, tree};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Three and a half days of the demo bucket (its burst on day 8); warm-up shortened to match.
fn build_bucket(root: &Path) {
    let mut spec = trailsight::synth::demo::demo_spec(9.5, 0.3, 11).unwrap();
    spec.start_minute += 6 * 1440;
    spec.minutes = 3 * 1440 + 720;
    trailsight::synth::write_bucket(&spec, root).unwrap();
}

const DETECTOR: &str = "[detector]\nwarmup_minutes = 720\n";

fn trailsight() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trailsight"))
}

fn serve_config(dir: &Path, source: &Path, sink: &Path, state: &Path) -> PathBuf {
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\nsources = [{:?}]\nsinks = [\"file://{}\"]\nstate_dir = {:?}\n\
             poll_interval_seconds = 1\ncheckpoint_interval_seconds = 1\nbatch_files = 100\nlocal_settle_seconds = 1\n{DETECTOR}",
            source.display().to_string(),
            sink.display(),
            state.display().to_string(),
        ),
    )
    .unwrap();
    path
}

/// `replay --state` (open minutes stay open, as in serve), which must succeed.
fn replay_with_state(source: &Path, sink: &Path, state: &Path) {
    let cfg = state.with_extension("toml");
    std::fs::write(&cfg, DETECTOR).unwrap();
    let out = trailsight()
        .args(["replay", "--source"])
        .arg(source)
        .arg("--sink")
        .arg(sink)
        .arg("--state")
        .arg(state)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// `serve --once`, which must succeed.
fn serve_once(config: &Path) {
    let out = trailsight()
        .args(["serve", "--once", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn serve_picks_up_new_files_equals_replay_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all");
    build_bucket(&all);

    // What replay (with a state folder, as serve keeps minutes open) writes for all the files.
    let expected_dir = dir.path().join("expected");
    replay_with_state(&all, &expected_dir, &dir.path().join("replay-state"));
    let expected = tree(&expected_dir);
    assert_eq!(
        expected.len(),
        2,
        "one Start and one End file: {expected:?}"
    );

    // The service starts on the first 60% of the files (in delivery order); the rest arrive while it runs.
    let files = tree(&all);
    let split = files.len() * 6 / 10;
    let source = dir.path().join("trail");
    let put_range = |range: std::ops::Range<usize>| {
        for (key, bytes) in files.iter().skip(range.start).take(range.len()) {
            put(&source, key, bytes);
        }
    };
    put_range(0..split);
    let sink = dir.path().join("sink");
    let state = dir.path().join("state");
    let config = serve_config(dir.path(), &source, &sink, &state);
    let mut child = trailsight()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |what: &dyn Fn() -> bool, child: &mut std::process::Child| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            assert!(child.try_wait().unwrap().is_none(), "serve stopped");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&|| state.join("state.bin").exists(), &mut child);
    put_range(split..files.len());
    wait_for(&|| tree(&sink) == expected, &mut child);

    // SIGTERM: exit 0 within a few seconds, with a checkpoint.
    let t = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let config_value: trailsight::config::Config =
        toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let processed = |state: &Path| {
        trailsight::pipeline::state::load(state, &config_value.detector)
            .unwrap()
            .expect("a checkpoint")
            .files_processed
    };
    assert!(processed(&state) >= split as u64);

    // A restart resumes from the checkpoint: every file counted once, no new Insights files.
    serve_once(&config);
    assert_eq!(processed(&state), files.len() as u64);
    assert_eq!(tree(&sink), expected);

    // A file that appears after later files were processed (an upload that finished late) is
    // read if it was delivered within the reorder window (60 min) of the newest; an older one is not.
    let (last_key, last_bytes) = files.iter().next_back().unwrap();
    let with_time = |minutes_back: i64, suffix: &str| {
        let (head, name) = last_key.rsplit_once('/').unwrap();
        let stamp_at = name.find("_20").unwrap() + 1;
        let t =
            chrono::NaiveDateTime::parse_from_str(&name[stamp_at..stamp_at + 13], "%Y%m%dT%H%M")
                .unwrap()
                - chrono::Duration::minutes(minutes_back);
        let day = t.format("%Y/%m/%d").to_string();
        let head = format!("{}/{day}", &head[..head.len() - 11]);
        format!(
            "{head}/{}{}_{suffix}.json.gz",
            &name[..stamp_at],
            t.format("%Y%m%dT%H%MZ")
        )
    };
    for (minutes_back, suffix) in [(20, "LATEUPLOAD000001"), (180, "TOOLATEUPLOAD001")] {
        put(&source, &with_time(minutes_back, suffix), last_bytes);
    }
    serve_once(&config);
    assert_eq!(
        processed(&state),
        files.len() as u64 + 1,
        "the late upload within the window is read, the older one is not"
    );

    // A corrupt checkpoint is an error naming the file; the file is left as it was.
    let bin = state.join("state.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&bin, &bytes).unwrap();
    let out = trailsight()
        .args(["serve", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&bin.display().to_string()) && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(std::fs::read(&bin).unwrap(), bytes);
}

/// An Insight's `End` can be decided by another account's files (the watermark is shared): after
/// a restart, it must still go under its own account's trail prefix and organization level.
#[test]
fn an_end_decided_by_another_accounts_files_keeps_its_trail_location_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all");
    let burst = trailsight::synth::demo::burst_start(trailsight::synth::demo::DEMO_START_MINUTE);
    // Account A, behind an organization trail with a prefix, stops delivering 20 minutes into its burst.
    let mut a = trailsight::synth::demo::demo_spec(9.5, 0.3, 21).unwrap();
    a.start_minute += 6 * 1440;
    a.minutes = burst + 20 - a.start_minute;
    a.account = "444455556666".into();
    a.location = trailsight::layout::TrailLocation {
        prefix: "org".into(),
        org_id: Some("o-abcdef1234".into()),
    };
    trailsight::synth::write_bucket(&a, &all).unwrap();
    // Account B goes on (without its own burst).
    let mut b = trailsight::synth::demo::demo_spec(9.5, 0.3, 22).unwrap();
    b.start_minute += 6 * 1440;
    b.minutes = 3 * 1440 + 720;
    b.streams
        .retain(|s| s.template["eventName"] != "CreateAccessKey");
    trailsight::synth::write_bucket(&b, &all).unwrap();

    let expected_dir = dir.path().join("expected");
    replay_with_state(&all, &expected_dir, &dir.path().join("replay-state"));
    let expected = tree(&expected_dir);
    assert!(
        expected
            .keys()
            .any(|k| k.starts_with("org/AWSLogs/o-abcdef1234/444455556666/CloudTrail-Insight/"))
            && expected.len() == 2,
        "A's Start and End under its organization prefix: {:?}",
        expected.keys().collect::<Vec<_>>()
    );

    // Serve A's files and B's up to A's last delivery; then, in a new process, B's later files.
    let files = tree(&all);
    let a_last = files
        .keys()
        .filter(|k| k.starts_with("org/"))
        .filter_map(|k| trailsight::layout::parse_key(k).delivered_minute)
        .max()
        .unwrap();
    let source = dir.path().join("trail");
    let put_part = |later: bool| {
        for (key, bytes) in &files {
            let minute = trailsight::layout::parse_key(key).delivered_minute.unwrap();
            if (minute > a_last) == later {
                put(&source, key, bytes);
            }
        }
    };
    let sink = dir.path().join("sink");
    let config = serve_config(dir.path(), &source, &sink, &dir.path().join("state"));
    put_part(false);
    serve_once(&config);
    assert_eq!(tree(&sink).len(), 1, "the Start only, so far");
    put_part(true);
    serve_once(&config);
    let got = tree(&sink);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(got == expected, "same keys, different bytes");
}

/// A new deployment seeded from history: `replay --state` over a synced copy of the older files,
/// then `serve` on the bucket with that state folder reads only the newer files, and together they
/// write exactly what one run over everything writes.
#[test]
fn replay_state_seeds_serve_which_reads_only_newer_files() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all");
    build_bucket(&all);
    let expected_dir = dir.path().join("expected");
    replay_with_state(&all, &expected_dir, &dir.path().join("expected-state"));
    let expected = tree(&expected_dir);
    assert_eq!(expected.len(), 2);

    // History: the first 60 % of the files, synced to another folder; the bucket holds them all.
    let files = tree(&all);
    let history = dir.path().join("history");
    for (key, bytes) in files.iter().take(files.len() * 6 / 10) {
        put(&history, key, bytes);
    }
    let state = dir.path().join("state");
    let seeded_sink = dir.path().join("history-insights");
    replay_with_state(&history, &seeded_sink, &state);

    let sink = dir.path().join("sink");
    let config = serve_config(dir.path(), &all, &sink, &state);
    serve_once(&config);
    let detector: trailsight::config::Config =
        toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let checkpoint = trailsight::pipeline::state::load(&state, &detector.detector)
        .unwrap()
        .unwrap();
    assert_eq!(
        checkpoint.files_processed,
        files.len() as u64,
        "each file read once, by replay or by serve"
    );
    let mut together = tree(&seeded_sink);
    together.extend(tree(&sink));
    assert_eq!(
        together.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(together == expected, "same keys, different bytes");
}
