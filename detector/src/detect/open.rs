//! The open test: is the minute just closed (or a late minute) the start of an Insight?

use std::collections::VecDeque;

use trailsight_baseline::{BaselineStats, Dispersion, RatePrior, RollingRate};

use crate::aggregate::{KeyId, MinuteSample, RateKey};
use crate::config::DetectorConfig;

use super::attribution::{baseline_attributions, transition};
use super::judgement::Judgement;
use super::model::{Model, Models, SeasonCache, floored, seasonal_models};
use super::prior::GammaPrior;
use super::window::{Thresholds, WindowCalls, most_significant};
use super::{Detector, KeyState, OpenInsight, Transition};
use crate::config::MAX_WINDOWS;

/// A key's minutes with calls up to minute `m`, newest first: the open ones (`open`, ascending)
/// before the closed ones not yet in the baseline (`recent`, ascending).
fn minutes_back<'a>(
    open: &'a [(i64, &'a MinuteSample)],
    recent: &'a VecDeque<(i64, MinuteSample)>,
    m: i64,
) -> impl Iterator<Item = (i64, &'a MinuteSample)> + 'a {
    let open_minutes = open
        .iter()
        .rev()
        .filter(move |o| o.0 <= m)
        .map(|o| (o.0, o.1));
    let closed = recent
        .iter()
        .rev()
        .skip_while(move |r| r.0 > m)
        .map(|r| (r.0, &r.1));
    open_minutes.chain(closed)
}

/// The key's within-hour burstiness over the baseline window ending before `end`, at its upper
/// confidence bound for the minutes it was measured over.
pub(super) fn within_hour_bound(
    rate: &RollingRate,
    end: i64,
    history_start: i64,
    cfg: &DetectorConfig,
) -> Dispersion {
    let (within, minutes) = rate.within_hour(end, history_start, cfg.baseline_window_minutes);
    within.upper_bound(minutes, 0.0)
}

/// The seasonal models of `hour`, cached per hour in the key's state.
pub(super) fn cached_seasonal(
    st: &mut KeyState,
    hour: i64,
    history_start: i64,
    cfg: &DetectorConfig,
    floor: f64,
    global: Model,
    baseline_end: i64,
) -> Models {
    let slot = hour.rem_euclid(2) as usize;
    if let Some(c) = &st.season[slot]
        && c.hour == hour
    {
        return c.models;
    }
    // Computed on a cache miss only (once an hour per key).
    let within_hour = within_hour_bound(&st.rate, baseline_end, history_start, cfg);
    let models = seasonal_models(
        &st.rate,
        hour,
        history_start,
        cfg,
        floor,
        global,
        within_hour,
    );
    st.season[slot] = Some(Box::new(SeasonCache { hour, models }));
    models
}

/// The models a `w`-minute window ending at minute `m` is judged against: the seasonal
/// profiles of this hour (and of the previous one when the window reaches into it), the
/// whole-window baseline as well for windows longer than an hour (they span several hours of
/// the profile), or the whole-window baseline alone while no profile has enough history; each
/// floored at `floor` calls per minute.
pub(super) fn window_models(
    w: u32,
    m: i64,
    now: &Models,
    prev: &Models,
    global: Model,
    floor: f64,
) -> Models {
    let mut models = *now;
    if w > 60 {
        models.push(global);
    } else if i64::from(w) > m.rem_euclid(60) + 1 {
        models.extend(prev);
    }
    if models.is_empty() {
        models.push(global);
    }
    floored(&models, floor)
}

/// A key's expected rate at a minute.
pub(super) struct Expectation {
    /// The whole-window baseline.
    pub stats: BaselineStats,
    /// It as a model (with the deployment's prior when there is one).
    pub global: Model,
    /// Seasonal models of this hour and of the previous one.
    pub now: Models,
    pub prev: Models,
    /// Floor of every model's mean, calls per minute.
    pub floor: f64,
}

/// The key's expectation at minute `m`, with the baseline window ending before
/// `baseline_end`: the rolling baseline, replaced by the gamma posterior when the deployment
/// has a prior for the key's API (which then also replaces the configured floor), and the
/// seasonal profiles.
pub(super) fn expectation(
    st: &mut KeyState,
    cfg: &DetectorConfig,
    prior: RatePrior,
    gamma: Option<GammaPrior>,
    history_start: i64,
    m: i64,
    baseline_end: i64,
) -> Expectation {
    let history_start = st.models_from(history_start);
    let stats = st.rate.stats_cached(
        baseline_end,
        history_start,
        cfg.baseline_window_minutes,
        prior,
    );
    let mut global = Model::from_stats(&stats);
    let mut floor_rate = prior.floor;
    if let Some(g) = gamma {
        global.mean = g
            .posterior_mean(stats.calls, u64::from(stats.minutes))
            .max(f64::MIN_POSITIVE);
        global.evidence_minutes = g.beta + f64::from(stats.minutes);
        floor_rate = f64::MIN_POSITIVE;
    }
    let hour = m.div_euclid(60);
    let now = cached_seasonal(
        st,
        hour,
        history_start,
        cfg,
        floor_rate,
        global,
        baseline_end,
    );
    let prev = cached_seasonal(
        st,
        hour - 1,
        history_start,
        cfg,
        floor_rate,
        global,
        baseline_end,
    );
    let floor = (cfg.seasonal_floor_fraction * global.mean).max(floor_rate);
    Expectation {
        stats,
        global,
        now,
        prev,
        floor,
    }
}

impl Detector {
    /// Tests the trailing windows that end at minute `at` (calls in `recent` up to `at`);
    /// when one is unusual, opens an Insight at its first call, decided at minute `decided`
    /// (later than `at` for late records).
    pub(super) fn test_at(
        &mut self,
        id: KeyId,
        key: RateKey,
        history_start: i64,
        at: i64,
        decided: i64,
    ) -> Option<Transition> {
        self.test_with_open(id, key, history_start, at, decided, &[], decided)
    }

    /// [`Detector::test_at`] with `open`, the key's calls so far in minutes not closed yet
    /// (ascending; an early test), counted in the windows beside the closed minutes of
    /// `recent`; `closed_through` is the last closed minute. Counts of open minutes only grow,
    /// so a window unusual now would still be unusual when its minute closes: the closing test
    /// would open an Insight no later than this one. (It may open it earlier, or from another
    /// window, when later files complete earlier minutes first; the early decision stands.)
    /// Every open minute read so far from the Insight's first call on (later ones too) is in the
    /// `Start`'s figures; the open minutes join the Insight as they close.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn test_with_open(
        &mut self,
        id: KeyId,
        key: RateKey,
        history_start: i64,
        at: i64,
        decided: i64,
        open: &[(i64, &MinuteSample)],
        closed_through: i64,
    ) -> Option<Transition> {
        let cfg = self.config.clone();
        let prior = self.prior;
        let policy = self.key_policy(id);
        let gamma = self.gamma(id, key);
        self.state(id);
        // A field borrow (not `state`), so the series tap can be borrowed beside it.
        let st = &mut self.keys[id as usize];
        let m = at;
        // A key whose API has a deployment prior needs no warm-up of its own.
        if (m - history_start < i64::from(cfg.warmup_minutes) && gamma.is_none()) || policy.suppress
        {
            return None;
        }
        let short = cfg.short_window();
        // The trailing windows' calls, in one pass over `recent` (no allocation).
        let mut windows = [WindowCalls {
            minutes: 0,
            calls: 0,
        }; MAX_WINDOWS];
        let mut n = 0;
        // An early test uses the short windows only: a longer one is tested only while the
        // baseline holds none of its minutes, which at closing may no longer be so (the
        // closing test is the reference an early decision must not go beyond).
        for &w in &cfg.windows_minutes {
            let long_ok = open.is_empty() && st.learnt_through <= m - i64::from(w);
            if n < MAX_WINDOWS && (w <= short || long_ok) {
                windows[n].minutes = w;
                n += 1;
            }
        }
        let windows = &mut windows[..n];
        for (minute, sample) in minutes_back(open, &st.recent, m) {
            let age = m - minute;
            let mut any = false;
            for w in windows.iter_mut() {
                if age < i64::from(w.minutes) {
                    w.calls += u64::from(sample.count);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        let mut per_window = policy.tail_probability / cfg.windows_minutes.len() as f64;
        if let Some(t) = st.tolerated {
            let p = t.tail_probability();
            if m < i64::from(t.until) {
                // A new burst must be about twice as surprising (twice the log tail
                // probability) as the recurring one, not merely a little larger.
                per_window = per_window.min((p * p).max(1e-300));
            } else {
                st.tolerated = None;
            }
        }
        let thresholds = Thresholds {
            per_window,
            min_count: policy.min_count,
            min_ratio: policy.min_ratio,
        };
        let hour = m.div_euclid(60);
        let judge = self.judgements.is_some() && st.judged_hour != hour;
        // Only a window with enough calls is tested (most minutes of sparse keys have none):
        // without one the expectation is not needed, and is not computed, unless the series tap
        // asks for this hour's judgement; its seasonal models are then computed aside, so that
        // the tap changes no decision (the per-hour cache is filled only by tests that use it).
        let testable = windows
            .iter()
            .any(|w| w.calls >= u64::from(thresholds.min_count));
        // Hours older than every window leave the key's history.
        st.rate
            .evict_before(m - i64::from(cfg.evict_after_minutes()));
        let saved_season = (judge && !testable).then(|| st.season.clone());
        // The baseline ends where the short windows begin: none of their calls is in it.
        let e = (testable || judge).then(|| {
            expectation(
                st,
                &cfg,
                prior,
                gamma,
                history_start,
                m,
                m - i64::from(short) + 1,
            )
        });
        if let Some(season) = saved_season {
            st.season = season;
        }
        let e = e?;
        let (stats, global, floor) = (e.stats, e.global, e.floor);
        let (now_models, prev_models) = (e.now, e.prev);
        if let Some(judged) = self.judgements.as_mut()
            && judge
        {
            st.judged_hour = hour;
            judged.push((
                id,
                hour,
                Judgement {
                    // A 1-minute window never reaches into the previous hour.
                    models: window_models(1, m, &now_models, &prev_models, global, floor),
                    thresholds,
                },
            ));
        }
        if !testable {
            return None;
        }
        // After an Insight, only a clearly larger burst, or one by other callers, raises another
        // (see `holdoff`). The hold-off is only read here: tests run at minutes out of order
        // (early and late tests), and `Holdoff::clears` knows when it applies.
        let mut held = [WindowCalls {
            minutes: 0,
            calls: 0,
        }; MAX_WINDOWS];
        let holdoff = st
            .past
            .as_ref()
            .and_then(|p| p.holdoff.as_ref())
            .filter(|h| h.applies(m));
        let windows: &[WindowCalls] = match holdoff {
            Some(h) => {
                // Calls by the ended Insight's top callers in the window of `w` minutes.
                let same_callers = |w: u32| -> u64 {
                    minutes_back(open, &st.recent, m)
                        .take_while(|(minute, _)| m - minute < i64::from(w))
                        .flat_map(|(_, s)| s.attributions.principal.iter())
                        .filter(|(p, _)| h.principals.contains(p))
                        .map(|&(_, n)| u64::from(n))
                        .sum()
                };
                let mut k = 0;
                for w in windows.iter() {
                    // Large enough even if all were the same callers; else, are they?
                    if h.clears(m, w.minutes, w.calls, w.calls, stats.mean)
                        || h.clears(m, w.minutes, w.calls, same_callers(w.minutes), stats.mean)
                    {
                        held[k] = *w;
                        k += 1;
                    }
                }
                &held[..k]
            }
            None => windows,
        };
        let trigger = most_significant(
            windows,
            |w| window_models(w, m, &now_models, &prev_models, global, floor),
            thresholds,
        );
        let trigger = trigger?;
        // The Insight holds every call of the triggering window and since; earlier calls were
        // normal and join the baseline.
        let first = m - i64::from(trigger.minutes) + 1;
        while st.recent.front().is_some_and(|r| r.0 < first) {
            if let Some((minute, sample)) = st.recent.pop_front() {
                st.learn(minute, &sample);
            }
        }
        let window: Vec<(i64, MinuteSample)> = st.recent.drain(..).collect();
        // The open minutes of the triggering window (an early Start).
        let early = open.iter().filter(|o| o.0 >= first && o.0 <= m);
        let start = window
            .first()
            .map(|r| r.0)
            .into_iter()
            .chain(early.clone().map(|o| o.0).next())
            .min()
            .unwrap_or(m);
        // Closed minutes leave the baseline now; open ones as they close (`step_open`).
        for minute in start..=closed_through {
            st.rate.exclude(minute);
        }
        let from = m - i64::from(cfg.baseline_window_minutes);
        let is_error = key.error_code.is_some();
        let baseline_attributions =
            baseline_attributions(st.attributions(), from, &stats, is_error);
        let last_active = window
            .iter()
            .map(|r| r.0)
            .chain(early.map(|o| o.0))
            .max()
            .unwrap_or(m);
        let insight = OpenInsight {
            start,
            baseline: stats,
            baseline_attributions,
            minutes: window,
            last_active,
            seen_at: decided,
            window: trigger.minutes,
            trigger_tail_probability: trigger.tail_probability,
        };
        // An early Start reports every open minute read so far from its first call on, not only
        // those up to the minute that decided it: a file holds a slice of each of several
        // minutes, and the part of the deciding minute read so far may still be mostly the
        // key's usual callers, while the minutes after it already show who is bursting.
        let reported: Vec<(i64, MinuteSample)> = open
            .iter()
            .filter(|o| o.0 >= first)
            .map(|o| (o.0, o.1.clone()))
            .collect();
        let t = if reported.is_empty() {
            transition(key, true, &insight, at, decided)
        } else {
            let mut with_open = insight.clone();
            with_open.last_active = reported
                .iter()
                .map(|r| r.0)
                .fold(with_open.last_active, i64::max);
            with_open.minutes.extend(reported);
            transition(key, true, &with_open, at, decided)
        };
        st.insight = Some(Box::new(insight));
        self.open.insert(id);
        Some(t)
    }
}
