//! Late calls: calls that arrived after their minute closed.

use crate::aggregate::{LateCall, MinuteSample};

use super::{Detector, KeyLookup, Transition, merge_sample, merge_sample_deque};

impl Detector {
    /// Takes a call that arrived after its minute closed; [`Detector::process_late`] handles it.
    pub fn record_late(&mut self, late: &LateCall) {
        self.late.push(*late);
    }

    /// Handles the late calls taken since the last call, with `now` the last closed minute.
    ///
    /// A late call joins the open Insight it falls in; one still within the test windows (and
    /// not older than what the key already learnt) is tested as it would have been had it been
    /// on time: an unusual window opens an Insight starting in the past, decided now. Older
    /// calls join the baseline.
    pub fn process_late(&mut self, keys: &impl KeyLookup, now: i64, out: &mut Vec<Transition>) {
        let mut late = std::mem::take(&mut self.late);
        late.sort_by_key(|l| (l.key, l.minute));
        let max_window = i64::from(self.config.max_window());
        let mut i = 0;
        while i < late.len() {
            let id = late[i].key;
            let group_end = late[i..]
                .iter()
                .position(|l| l.key != id)
                .map_or(late.len(), |p| i + p);
            let group = &late[i..group_end];
            i = group_end;
            let key = keys.key(id);
            self.ensure_policy(id, key, keys);
            let history_start = keys.history_start(key.account, key.region).unwrap_or(now);
            let st = self.state(id);
            // Late calls that are tested before they join the baseline, per minute.
            let mut fresh: Vec<(i64, MinuteSample)> = Vec::new();
            for call in group {
                let sample = call.sample();
                if let Some(ins) = st.insight.as_mut()
                    && call.minute >= ins.start
                {
                    merge_sample(&mut ins.minutes, call.minute, &sample);
                    ins.last_active = ins.last_active.max(call.minute);
                    ins.seen_at = now;
                } else if st.insight.is_none()
                    && call.minute > now - max_window
                    && call.minute > st.learnt_through
                {
                    merge_sample(&mut fresh, call.minute, &sample);
                } else {
                    st.learn(call.minute, &sample);
                }
            }
            for (minute, sample) in &fresh {
                merge_sample_deque(&mut st.recent, *minute, sample);
            }
            // Calls not taken by an Insight stay in `recent` and join the baseline as they age.
            for at in fresh.iter().map(|f| f.0) {
                if let Some(t) = self.test_at(id, key, history_start, at, now) {
                    out.push(t);
                    break;
                }
            }
        }
        self.late = late;
        self.late.clear();
    }
}
