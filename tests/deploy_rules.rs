//! The shipped operations files (`deploy/`): the alert rules pass `promtool check rules` and their
//! unit tests (`promtool test rules`: each alert fires on synthetic series, including the page on
//! a new Insight), the example Prometheus config passes `promtool check config`, and every metric
//! the rules and the Grafana dashboard use is one the service exposes (so they cannot drift apart).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("promtool"))
        .find(|p| p.is_file())
}

fn run(promtool: &Path, args: &[&str]) {
    let out = std::process::Command::new(promtool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else {
        eprintln!("SKIP: promtool not found (Debian package `prometheus`; .ci/run installs it)");
        return;
    };
    run(
        &promtool,
        &["check", "rules", "deploy/prometheus/alerts.yml"],
    );
    run(
        &promtool,
        &["test", "rules", "deploy/prometheus/alerts_test.yml"],
    );
    run(
        &promtool,
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    );
}

/// Metric names (`trailsight_…`) in `text`, without the histogram series suffixes.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("trailsight_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_exposed() {
    let metrics = trailsight::metrics::Metrics::new().unwrap();
    let (_, body) = metrics.encode();
    let exposed: BTreeSet<String> = String::from_utf8(body)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    assert!(exposed.contains("trailsight_insights_started_total"));
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
        "deploy/grafana/trailsight.json",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let used = names_in(&text);
        assert!(!used.is_empty(), "{file} uses no trailsight metric");
        let unknown: Vec<_> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the service does not expose: {unknown:?}"
        );
    }
}
