//! Lasting level shifts: where an open Insight's current level began, and when that level is
//! the key's new normal.
//!
//! An Insight that does not end may be a lasting change of the key's rate (a deploy that
//! triples an API's traffic) rather than an anomaly still under way. Once an Insight has been
//! open for `max_insight_minutes`, at the end of each clock hour its hourly totals are
//! segmented against the calls the key's own hour of the day held on average before (the
//! exposures; the whole-window mean for an hour of the day without history) with
//! [`trailsight_baseline::changepoint::current_level_start`]: the last significant change of
//! their ratio is where the current level began, so the daily cycle does not read as a change
//! of level. The overdispersion is the key's day-to-day variation of an hour's total
//! ([`super::model::seasonal_dispersion_prior`]), taken at the Insight's level.
//!
//! **The level is accepted** when it has lasted `max_insight_minutes` itself: a burst that
//! settles into a higher level is accepted a full `max_insight_minutes` after it settled, not
//! after it started, and a rate still changing is not accepted until the Insight has lasted
//! [`LEVEL_SHIFT_CAP_FACTOR`] × `max_insight_minutes`. The Insight then ends, its minutes from
//! the level's start join the baseline, and **the key's history is rebased** to that hour:
//! older hours leave its baseline and profiles. Without the rebase the old and new levels
//! pooled in one profile read as a huge variance of the rate (a steady key that steps from 5 to
//! 25 calls a minute shows a 1-minute dispersion of 15 and an hourly one of 800 for the four
//! weeks of the profile), and a sixfold burst on the new level goes unseen for weeks.
//!
//! The cost: a new level that lasts `max_insight_minutes` becomes normal, whoever causes it (as
//! before, an attack that keeps a steady rate for a whole day is reported once, by its `Start`);
//! after the rebase the key has one day of history, so its profiles return only after
//! `min_profile_days`.

use trailsight_baseline::MINUTES_PER_HOUR;
use trailsight_baseline::changepoint::{current_level_start, successive_difference_dispersion};

use crate::config::DetectorConfig;

use super::model::seasonal_dispersion_prior;
use super::open::{Expectation, within_hour_bound};
use super::{KeyState, OpenInsight};

/// An Insight whose rate is still changing is taken as a level shift after this many times
/// `max_insight_minutes`.
pub const LEVEL_SHIFT_CAP_FACTOR: i64 = 3;
/// Days a lower level must have lasted (and the level before it too) to be a lasting drop.
pub const DROP_DAYS: usize = 7;
/// A lower level is a drop when its daily calls are at most this share of the level's before.
/// A quarter, tuned on the tune set: at a half, keys of `ec2_network_in_257a54` (whose loop
/// alternates a calm and a spiking regime) were rebased to the calm one, and the spikes' return
/// raised false Insights.
pub const DROP_RATIO: f64 = 0.25;
/// The least day-to-day variation of a key's daily calls assumed by the drop test (coefficient
/// of variation).
pub const MIN_DAILY_CV: f64 = 0.1;

/// Per clock hour of `insight` (the complete hours from its first complete hour through the
/// hour of minute `m`): its calls and the calls the key's own hour of the day gives it (its
/// mean over the profile window, before the Insight; the whole-window mean for an hour of the
/// day without history), and the dispersion of hourly totals from day to day.
fn hourly_calls_and_expected(
    st: &KeyState,
    insight: &OpenInsight,
    e: &Expectation,
    history_start: i64,
    cfg: &DetectorConfig,
    m: i64,
) -> (i64, Vec<f64>, Vec<f64>, f64) {
    let first_hour = (insight.start + MINUTES_PER_HOUR - 1).div_euclid(MINUTES_PER_HOUR);
    let last_hour = (m + 1).div_euclid(MINUTES_PER_HOUR) - 1;
    let hours = usize::try_from(last_hour - first_hour + 1).unwrap_or(0);
    let mut calls = vec![0.0; hours];
    for (minute, sample) in &insight.minutes {
        let h = minute.div_euclid(MINUTES_PER_HOUR) - first_hour;
        if let Some(c) = usize::try_from(h).ok().and_then(|h| calls.get_mut(h)) {
            *c += f64::from(sample.count);
        }
    }
    let phases = st
        .rate
        .phase_totals(first_hour, history_start, cfg.profile_window_minutes, 24);
    let within = within_hour_bound(&st.rate, m, history_start, cfg);
    let d60 = seasonal_dispersion_prior(&phases, within).at_scales[2];
    let fallback = e.global.mean.max(e.floor);
    let expected = (first_hour..=last_hour)
        .map(|hour| {
            let rate = usize::try_from(hour.rem_euclid(24))
                .ok()
                .and_then(|p| phases.get(p))
                .filter(|p| p.minutes > 0.0)
                .map_or(fallback, |p| (p.calls / p.minutes).max(e.floor));
            rate * MINUTES_PER_HOUR as f64
        })
        .collect();
    (first_hour, calls, expected, d60)
}

/// The minute the open Insight's current level began: its start, or the clock hour of its
/// last significant change of level relative to the key's expectation (see the module docs).
pub(super) fn current_level_from(
    st: &KeyState,
    insight: &OpenInsight,
    e: &Expectation,
    history_start: i64,
    cfg: &DetectorConfig,
    m: i64,
) -> i64 {
    let (first_hour, calls, expected, d60) =
        hourly_calls_and_expected(st, insight, e, history_start, cfg, m);
    // Calls against expected calls per hour (the exposures), with the key's hourly
    // dispersion `D(60)` taken at the Insight's level `r` (`D − 1` grows with the rate).
    let total: f64 = calls.iter().sum();
    let exp_total: f64 = expected.iter().sum();
    if calls.is_empty() || exp_total <= 0.0 {
        return insight.start;
    }
    let level = total / exp_total;
    let phi = 1.0 + (d60.max(1.0) - 1.0) * level.max(1.0);
    match current_level_start(&calls, &expected, phi) {
        0 => insight.start,
        i => (first_hour + i as i64) * MINUTES_PER_HOUR,
    }
}

/// A lasting **drop** of a key's rate (a service moved away, a job retired), checked once a
/// UTC day per key (at its first call of the day, without an open Insight; the check reads only
/// whole days before that day, so checking again the same day changes nothing): the key's calls
/// in whole UTC days before `m` (since `from`) are segmented as above, against its baseline
/// minutes, with the overdispersion of daily totals estimated from neighbouring days
/// ([`successive_difference_dispersion`], at least [`MIN_DAILY_CV`]). When the current level began at least
/// [`DROP_DAYS`] days ago, the level before it also lasted at least [`DROP_DAYS`] days (so a
/// job that runs every few weeks and dominates a key's volume is not a level that dropped),
/// and the current level (calls per minute) is at most [`DROP_RATIO`] × that one, returns the
/// minute it began: the key is rebased to it.
///
/// A drop makes no Insight (only rises are anomalies), but without the rebase the profiles
/// keep the old level for their four weeks, and a test must be unusual under every model: a
/// burst back to the old level by someone else went unseen for weeks. A week's wait keeps a
/// weekend from reading as a drop; a holiday of a week or more does, and the return of the
/// usual traffic can then raise an Insight (as it would against CloudTrail's own seven-day
/// baseline).
pub(super) fn lasting_drop(st: &KeyState, m: i64, from: i64) -> Option<i64> {
    // Whole UTC days, so every check of one day sees the same days.
    let today = m.div_euclid(1440);
    let midnight = today * 1440;
    if midnight - from < 1440 * 2 * DROP_DAYS as i64 {
        return None;
    }
    let days = st.rate.period_totals(midnight, from, 1440);
    if days.len() < 2 * DROP_DAYS {
        return None;
    }
    let (calls, minutes): (Vec<f64>, Vec<f64>) = days.into_iter().unzip();
    let daily: Vec<f64> = calls
        .iter()
        .zip(&minutes)
        .map(|(c, n)| c * 1440.0 / n.max(1.0))
        .collect();
    // Days of real traffic are never as alike as Poisson counts: at least a coefficient of
    // variation of [`MIN_DAILY_CV`] (so one busier day does not restart the week's wait).
    let mean_day = daily.iter().sum::<f64>() / daily.len() as f64;
    let phi = successive_difference_dispersion(&daily).max(MIN_DAILY_CV.powi(2) * mean_day);
    let start = current_level_start(&calls, &minutes, phi);
    if start < DROP_DAYS || calls.len() - start < DROP_DAYS {
        return None;
    }
    let before_start = current_level_start(&calls[..start], &minutes[..start], phi);
    if start - before_start < DROP_DAYS {
        return None;
    }
    let level = |r: std::ops::Range<usize>| {
        let n: f64 = minutes[r.clone()].iter().sum();
        calls[r].iter().sum::<f64>() / n.max(1.0)
    };
    let (before, after) = (level(before_start..start), level(start..calls.len()));
    let began = midnight - 1440 * (calls.len() - start) as i64;
    (after <= DROP_RATIO * before).then_some(began)
}
