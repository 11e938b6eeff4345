//! `trailsight series` on every NAB artificial series shipped in tests/data:
//! NAB's results format comes out, the series without anomalies raise no
//! label, and the labeled anomaly windows are hit (all but
//! art_increase_spike_density, whose spikes grow denser without any one
//! spike being new: each reaches a height the series has shown before, so
//! its window's best score, 0.34, is below the label threshold of 0.5).

use std::path::Path;
use std::process::Command;

#[test]
fn nab_artificial_series_are_scored_sensibly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rates/nab-artificial");
    let windows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("combined_windows.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut table = String::from(
        "| series | windows | hit | first label in window | labels outside windows |\n|---|---|---|---|---|\n",
    );
    let mut files = 0;
    let (mut windows_total, mut windows_hit) = (0, 0);
    for (name, wins) in windows.as_object().unwrap() {
        let input = root.join(name);
        let output = dir.path().join(name.replace('/', "_"));
        let out = Command::new(env!("CARGO_BIN_EXE_trailsight"))
            .args(["series", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&output).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("timestamp,value,anomaly_score,label"));
        let rows: Vec<(String, f64, u8)> = lines
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                assert_eq!(f.len(), 4, "{l}");
                (
                    f[0].to_string(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                )
            })
            .collect();
        let input_rows = std::fs::read_to_string(&input).unwrap().lines().count() - 1;
        assert_eq!(rows.len(), input_rows, "{name}");
        assert!(
            rows.iter().all(|r| (0.0..=1.0).contains(&r.1) && r.2 <= 1),
            "{name}"
        );
        let wins: Vec<(String, String)> = wins
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w[0].as_str().unwrap()[..19].to_string(),
                    w[1].as_str().unwrap()[..19].to_string(),
                )
            })
            .collect();
        let inside = |t: &str| wins.iter().any(|(a, b)| a.as_str() <= t && t <= b.as_str());
        let firsts: Vec<Option<&str>> = wins
            .iter()
            .map(|(a, b)| {
                rows.iter()
                    .find(|r| r.2 == 1 && a.as_str() <= r.0.as_str() && r.0.as_str() <= b.as_str())
                    .map(|r| r.0.as_str())
            })
            .collect();
        let hits = firsts.iter().filter(|f| f.is_some()).count();
        let outside = rows.iter().filter(|r| r.2 == 1 && !inside(&r.0)).count();
        table.push_str(&format!(
            "| {name} | {} | {hits} | {:?} | {outside} |\n",
            wins.len(),
            firsts
        ));
        windows_total += wins.len();
        windows_hit += hits;
        if wins.is_empty() {
            assert_eq!(
                outside, 0,
                "{name}: labels on a series without anomalies\n{table}"
            );
        }
        files += 1;
    }
    println!("{table}");
    assert_eq!(files, 11);
    assert_eq!(windows_total, 6);
    assert!(windows_hit >= 5, "missed labeled windows\n{table}");
}

/// `series` streams: rows are scored and written while the input is still being read, so a
/// series of any length runs in bounded memory (issue 8: 10 M rows used to be held in memory
/// and written only at the end). The input is a FIFO kept open by the test: the results file
/// must grow before the input ends.
#[test]
fn series_writes_results_while_the_input_is_still_open() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.csv");
    let output = dir.path().join("out.csv");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_trailsight"))
        .args(["series", "--bucket", "5m", "--input"])
        .arg(&fifo)
        .arg("--output")
        .arg(&output)
        .spawn()
        .unwrap();
    let mut input = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writeln!(input, "timestamp,value").unwrap();
    // 5,000 rows (~150 KB of results): more than the writer's buffer, so some must reach the file.
    for i in 0..5000i64 {
        let t = chrono::DateTime::from_timestamp(1_700_000_000 + 300 * i, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S");
        writeln!(input, "{t},{}", i % 11).unwrap();
    }
    input.flush().unwrap();
    let partial = dir.path().join("out.csv.partial");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = 0;
    while std::time::Instant::now() < deadline {
        seen = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if seen > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        seen > 0,
        "no results written while the input was open: the whole series is buffered"
    );
    assert!(
        !output.exists(),
        "results appear under their name only when complete"
    );
    drop(input);
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(text.lines().count(), 5001);
}
