//! Benign calibration on the REPORT set (the MIT NAB series in `tests/data/rates/nab-counts`,
//! never tuned on), 6 accounts × 10 busy keys, 21 days after warm-up, one run:
//!
//! - **settled keys** (a week of baseline and more: days 7–20 after warm-up, 84 account-days):
//!   the observed false-alarm rate of busy keys is not above each sensitivity's budget beyond
//!   its 95 % interval, and the default sensitivity stays at or under 0.2 false Insights per
//!   account-day;
//! - **young keys** (days 0–6 after warm-up, 42 account-days): at most 0.6 false Insights per
//!   account-day at the default sensitivity, a regression bound, not the goal (measured 0.43,
//!   0.57 before the hold-off after an Insight: the first bursts of a key that had none in its
//!   first days are news to the model; the detector before the multi-scale model raised about
//!   10 a day on such traffic).
//!
//! The Twitter series belongs to the TUNE set, so it is not used here (run
//! `cargo run --release -p trailsight-detector --example calibrate -- --set tune` for it).

use std::path::Path;
use std::time::Instant;

use trailsight_detector::DetectorConfig;
use trailsight_detector::calibration::{
    HarnessConfig, RateEstimate, SeriesSet, load_set, markdown_table, run_calibration,
};
use trailsight_detector::policy::Sensitivity;

/// The product goal: false Insights per account-day at the default sensitivity.
const ACCOUNT_DAY_GOAL: f64 = 0.2;
/// The bound for keys in their first week after warm-up.
const YOUNG_ACCOUNT_DAY_BOUND: f64 = 0.6;
/// Days after warm-up before a key counts as settled (one baseline window).
const SETTLE_DAYS: usize = 7;

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
    let cfg = HarnessConfig {
        days_after_warmup: 21,
        ..HarnessConfig::default()
    };
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

    let accounts = f64::from(cfg.accounts);
    let busy_keys = accounts * f64::from(cfg.busy_keys_per_account);
    let settled_days = (cfg.days_after_warmup as usize - SETTLE_DAYS) as f64;
    assert!(accounts * settled_days >= 60.0);
    let mut failures = Vec::new();
    for r in &report.results {
        assert_eq!(r.starts_per_day.len(), cfg.days_after_warmup as usize);
        let young: u64 = r.starts_per_day[..SETTLE_DAYS].iter().sum();
        let settled: u64 = r.starts_per_day[SETTLE_DAYS..].iter().sum();
        let per_key = RateEstimate::new(settled, busy_keys * settled_days / 30.0);
        let per_account_day = RateEstimate::new(settled, accounts * settled_days);
        let young_per_account_day = young as f64 / (accounts * SETTLE_DAYS as f64);
        println!(
            "{:?}: settled {} Starts = {:.3} per key per 30 days [{:.3}, {:.3}] (budget {}), \
             {:.3} per account-day; young {} Starts = {:.3} per account-day",
            r.sensitivity,
            settled,
            per_key.rate,
            per_key.lower,
            per_key.upper,
            r.nominal_per_key_per_30_days,
            per_account_day.rate,
            young,
            young_per_account_day
        );
        if per_key.lower > r.nominal_per_key_per_30_days {
            failures.push(format!(
                "{:?}: settled keys {:.3} false Insights per key per 30 days [{:.3}, {:.3}], budget {}",
                r.sensitivity,
                per_key.rate,
                per_key.lower,
                per_key.upper,
                r.nominal_per_key_per_30_days
            ));
        }
        if r.sensitivity == DetectorConfig::default().sensitivity {
            if per_account_day.rate > ACCOUNT_DAY_GOAL {
                failures.push(format!(
                    "{:?}: settled keys {:.3} false Insights per account-day, goal {ACCOUNT_DAY_GOAL}",
                    r.sensitivity, per_account_day.rate
                ));
            }
            if young_per_account_day > YOUNG_ACCOUNT_DAY_BOUND {
                failures.push(format!(
                    "{:?}: young keys {young_per_account_day:.3} false Insights per account-day, \
                     bound {YOUNG_ACCOUNT_DAY_BOUND}",
                    r.sensitivity
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
