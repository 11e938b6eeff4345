//! The end test: is an open Insight's rate back to the key's current expectation?

use crate::aggregate::{KeyId, MinuteSample, RateKey, Sym};

use super::attribution::{Attribute, transition};
use super::holdoff::{HOLDOFF_MINUTES, Holdoff};
use super::level::{LEVEL_SHIFT_CAP_FACTOR, current_level_from};
use super::open::{expectation, window_models};
use super::{Detector, MAX_PAST_STARTS, RECURRENCE_TOLERANCE_MINUTES, Tolerance, Transition};

impl Detector {
    /// One minute of a key with an open Insight: the minute is unusual when the 1-minute,
    /// 5-minute or triggering window (at most an hour) ending at it is unusual against the key's
    /// *current* expectation (seasonal profile of this hour, at the lenient
    /// `end_tail_probability`, with the `min_ratio` gate); the Insight ends after enough quiet
    /// minutes, or as a lasting level shift (see [`super::level`]).
    pub(super) fn step_open(
        &mut self,
        id: KeyId,
        key: RateKey,
        history_start: i64,
        m: i64,
        sample: &MinuteSample,
    ) -> Option<Transition> {
        let cfg = self.config.clone();
        let prior = self.prior;
        let policy = self.key_policy(id);
        let gamma = self.gamma(id, key);
        let st = self.state(id);
        if st.insight.as_ref().is_some_and(|i| m < i.start) {
            // A minute before an early Start's window, closing now: ordinary calls.
            if sample.count > 0 {
                st.learn(m, sample);
            }
            return None;
        }
        st.rate.exclude(m);
        st.rate
            .evict_before(m - i64::from(cfg.evict_after_minutes()));
        let e = expectation(st, &cfg, prior, gamma, history_start, m, m);
        let (global, floor) = (e.global, e.floor);
        let (now_models, prev_models) = (e.now, e.prev);
        let models_from = st.models_from(history_start);
        let insight = st.insight.as_mut()?;
        if sample.count > 0 {
            insight.minutes.push((m, sample.clone()));
        }
        // A lasting level shift: checked at the end of each clock hour once the Insight has
        // been open `max_insight_minutes`; `Some(minute its level began)` when accepted.
        let age = m - insight.start + 1;
        let max_minutes = i64::from(cfg.max_insight_minutes);
        let level_shift_from = if age >= max_minutes && (m + 1).rem_euclid(60) == 0 {
            let st = &self.keys[id as usize];
            let insight = st.insight.as_deref()?;
            let from = current_level_from(st, insight, &e, models_from, &cfg, m);
            if m + 1 - from >= max_minutes {
                Some(from)
            } else if age >= LEVEL_SHIFT_CAP_FACTOR * max_minutes {
                // Still changing: at least a day of it becomes the key's history.
                Some(from.min(m + 1 - max_minutes))
            } else {
                None
            }
        } else {
            None
        };
        let st = &mut self.keys[id as usize];
        let insight = st.insight.as_mut()?;
        let sum_over = |w: i64| -> u64 {
            insight
                .minutes
                .iter()
                .rev()
                .take_while(|r| r.0 > m - w)
                .map(|r| u64::from(r.1.count))
                .sum()
        };
        let trigger = insight.window.min(60);
        let unusual = sample.count > 0
            && [1, 5, trigger].into_iter().any(|w| {
                let calls = sum_over(i64::from(w));
                let models = window_models(w, m, &now_models, &prev_models, global, floor);
                let Some(strictest) = models.strictest() else {
                    return false;
                };
                calls as f64 >= policy.min_ratio * strictest.mean * f64::from(w)
                    && models
                        .iter()
                        .map(|model| model.tail_probability(w, calls))
                        .fold(0.0f64, f64::max)
                        < cfg.end_tail_probability
            });
        if unusual {
            insight.last_active = m;
        }
        let level_shift = level_shift_from.is_some();
        // An Insight fed by late calls may get more of them: wait the allowed lateness too.
        // A slow burst (long triggering window) is back at baseline only after half that window.
        let mut quiet_needed = cfg.end_after_quiet_minutes.max(trigger / 2);
        if insight.seen_at > insight.last_active {
            quiet_needed += cfg.allowed_lateness_minutes;
        }
        let quiet = m - insight.last_active.max(insight.seen_at) >= i64::from(quiet_needed);
        if !level_shift && !quiet {
            return None;
        }
        let mut insight = st.insight.take()?;
        self.open.remove(&id);
        let st = self.state(id);
        if level_shift {
            insight.last_active = m;
        }
        let end = insight.last_active + 1;
        // Minutes after the last unusual one were normal: back into the baseline. After a level
        // shift, or when the key already had an Insight at about this time of day (recurring
        // activity such as a new nightly job), every minute of the Insight joins the baseline,
        // so the daily profile learns it; otherwise the unusual minutes stay out.
        let day = 1440;
        let past = &mut st.past.get_or_insert_with(Box::default).starts;
        let recurring = past.iter().any(|&s| {
            let d = (insight.start - s).rem_euclid(day);
            insight.start - s <= day
                || d <= RECURRENCE_TOLERANCE_MINUTES
                || d >= day - RECURRENCE_TOLERANCE_MINUTES
        });
        past.retain(|&s| s > m - i64::from(cfg.profile_window_minutes));
        if past.len() >= MAX_PAST_STARTS {
            past.remove(0);
        }
        past.push(insight.start);
        if recurring {
            let p = st
                .tolerated
                .filter(|t| i64::from(t.until) > m)
                .map_or(insight.trigger_tail_probability, |t| {
                    t.tail_probability().min(insight.trigger_tail_probability)
                });
            let surprise = -p.max(f64::MIN_POSITIVE).log10();
            let until = m + i64::from(cfg.baseline_window_minutes);
            st.tolerated = Some(Tolerance {
                surprise: surprise as f32,
                until: i32::try_from(until).unwrap_or(i32::MAX),
            });
        }
        let rejoin_from = match level_shift_from {
            Some(from) => from,
            None if recurring => insight.start,
            None => end,
        };
        for minute in rejoin_from..=m {
            st.rate.include(minute);
        }
        for (minute, s) in &insight.minutes {
            if *minute >= rejoin_from {
                st.learn(*minute, s);
            }
        }
        st.learnt_through = st.learnt_through.max(m);
        if let Some(from) = level_shift_from {
            // The new level is the key's history from now on (see [`super::level`]).
            st.rebase(from);
        }
        insight.minutes.retain(|r| r.0 < end);
        let counts: Vec<(i64, u64)> = insight
            .minutes
            .iter()
            .map(|r| (r.0, u64::from(r.1.count)))
            .collect();
        let t = transition(key, false, &insight, end, m);
        // The hold-off's callers are the End's top `userIdentityArn` values.
        let principals: Vec<Sym> = t
            .attributions
            .iter()
            .filter(|a| a.attribute == Attribute::UserIdentityArn)
            .flat_map(|a| a.insight.iter().map(|v| v.0))
            .collect();
        // No hold-off after a level shift: the new level is the key's baseline now, and bursts
        // on it are judged against it.
        st.past.get_or_insert_with(Box::default).holdoff = if level_shift {
            None
        } else {
            Holdoff::after(
                &counts,
                &principals,
                insight.baseline.mean,
                &cfg.windows_minutes,
                end,
                m + HOLDOFF_MINUTES,
            )
        };
        st.recent.clear();
        Some(t)
    }
}
