//! Benign calibration on the REPORT set (the MIT NAB series in `tests/data/rates/nab-counts`,
//! never tuned on): the observed false-alarm rate of busy keys must not be above each
//! sensitivity's budget beyond its 95 % interval, and the default sensitivity must stay at or
//! under 0.2 false Insights per account-day (ten busy write APIs per account).
//!
//! The Twitter series belongs to the TUNE set, so it is not used here (run
//! `cargo run --release -p trailsight-detector --example calibrate -- --set tune` for it).

use std::path::Path;
use std::time::Instant;

use trailsight_detector::DetectorConfig;
use trailsight_detector::calibration::{
    HarnessConfig, SeriesSet, load_set, markdown_table, run_calibration,
};
use trailsight_detector::policy::Sensitivity;

/// The product goal: false Insights per account-day at the default sensitivity.
const ACCOUNT_DAY_GOAL: f64 = 0.2;

#[test]
fn benign_false_alarm_rate_is_within_budget_on_the_report_set() {
    let nab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/rates/nab-counts");
    let windows = std::fs::read_to_string(nab.join("combined_windows.json")).unwrap();
    let series = load_set(
        SeriesSet::Report,
        |name| std::fs::read_to_string(nab.join(name)).map_err(|e| e.to_string()),
        &windows,
        None,
    )
    .unwrap();
    let cfg = HarnessConfig::default();
    let started = Instant::now();
    let report = run_calibration(
        &series,
        &DetectorConfig::default(),
        &[Sensitivity::Low, Sensitivity::Medium, Sensitivity::High],
        &cfg,
    )
    .unwrap();
    println!("{}", markdown_table(&report));
    println!("calibration: {:.1} s", started.elapsed().as_secs_f64());
    assert!(report.account_days >= 60.0, "{}", report.account_days);

    let mut failures = Vec::new();
    for r in &report.results {
        let b = &r.busy_per_key_per_30_days;
        if b.lower > r.nominal_per_key_per_30_days {
            failures.push(format!(
                "{:?}: {} false Insights over {:.0} key-days = {:.3} per key per 30 days [{:.3}, {:.3}], \
                 budget {}",
                r.sensitivity,
                b.count,
                b.exposure * 30.0,
                b.rate,
                b.lower,
                b.upper,
                r.nominal_per_key_per_30_days
            ));
        }
        if r.sensitivity == DetectorConfig::default().sensitivity
            && r.busy_per_account_day.rate > ACCOUNT_DAY_GOAL
        {
            let a = &r.busy_per_account_day;
            failures.push(format!(
                "{:?}: {:.3} false Insights per account-day [{:.3}, {:.3}], goal {ACCOUNT_DAY_GOAL}",
                r.sensitivity, a.rate, a.lower, a.upper
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
