//! Which log files have been processed, per listing prefix
//! (`[<prefix>/]AWSLogs/[o-…/]<account>/CloudTrail/<region>/`).
//!
//! Keys under a prefix sort in delivery order (`YYYY/MM/DD/…_YYYYMMDDTHHmmZ_…`), so
//! the largest key processed is a cursor for `StartAfter`. Files do not always
//! become visible in that order, though: one delivered a few minutes before
//! another can finish its upload after it. So each prefix also keeps the keys
//! processed within [`REORDER_WINDOW_MINUTES`] (delivery time) of its cursor,
//! listing starts that far back, and a key in the window that was not processed
//! is new. Keys older than the window are taken as processed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike};
use serde::{Deserialize, Serialize};

use crate::layout::delivery_minute_of;

/// How far (delivery-time minutes) before the newest processed file a file that
/// appears late is still read. CloudTrail delivers about every 5 minutes.
pub const REORDER_WINDOW_MINUTES: i64 = 60;

/// Processed log files, per listing prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    prefixes: BTreeMap<String, PrefixCursor>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PrefixCursor {
    /// The largest key processed.
    last: String,
    /// Keys processed whose delivery minute is within the window of `last`'s.
    recent: BTreeSet<String>,
}

/// The listing prefix of a key: `[<prefix>/]AWSLogs/[o-…/]<account>/CloudTrail/<region>/`,
/// or `""` for keys outside the layout.
pub fn cursor_prefix(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.iter().position(|p| *p == "CloudTrail") {
        Some(i) if i + 2 < parts.len() => format!("{}/", parts[..i + 2].join("/")),
        _ => String::new(),
    }
}

fn minute_of_key(key: &str) -> Option<i64> {
    delivery_minute_of(key.rsplit('/').next().unwrap_or(key))
}

impl PrefixCursor {
    /// Oldest delivery minute still in the window (`None` when `last` has no timestamp).
    fn window_start(&self) -> Option<i64> {
        minute_of_key(&self.last).map(|m| m - REORDER_WINDOW_MINUTES)
    }
}

impl Cursors {
    /// True when `key` has not been processed: after its prefix's cursor, or within the
    /// reorder window before it and not among the keys processed there.
    pub fn is_new(&self, key: &str) -> bool {
        let Some(c) = self.prefixes.get(&cursor_prefix(key)) else {
            return true;
        };
        if key > c.last.as_str() {
            return true;
        }
        match (c.window_start(), minute_of_key(key)) {
            (Some(start), Some(minute)) => minute >= start && !c.recent.contains(key),
            _ => false,
        }
    }

    /// Records `key` as processed. Only keys with a delivery time inside the window are kept
    /// (others are judged by the cursor alone); when the cursor moves, keys that fell out of the
    /// window are forgotten, so a prefix holds about one window of keys.
    pub fn advance(&mut self, key: &str) {
        let c = self.prefixes.entry(cursor_prefix(key)).or_default();
        let moved = key > c.last.as_str();
        if moved {
            c.last = key.to_string();
        }
        let Some(start) = c.window_start() else {
            return;
        };
        if minute_of_key(key).is_some_and(|m| m >= start) {
            c.recent.insert(key.to_string());
        }
        if moved {
            c.recent
                .retain(|k| minute_of_key(k).is_some_and(|m| m >= start));
        }
    }

    /// Where a listing of `prefix` (as [`cursor_prefix`] gives it) starts (`StartAfter`):
    /// a string sorting just before every key delivered in the window, or the cursor itself
    /// for keys without the standard layout; `None` when nothing was processed there.
    pub fn start_after(&self, prefix: &str) -> Option<String> {
        let c = self.prefixes.get(prefix)?;
        let fallback = Some(c.last.clone());
        let Some(start) = c.window_start() else {
            return fallback;
        };
        // `<prefix>YYYY/MM/DD/<account>_CloudTrail_<region>_YYYYMMDDTHHmmZ_…`: keep the file name's
        // head, put the window start's date and time in.
        let name = c.last.rsplit('/').next().unwrap_or("");
        let Some(head_len) = name.find("_20").or_else(|| name.find("_19")) else {
            return fallback;
        };
        let Some(t) = DateTime::from_timestamp(start * 60, 0) else {
            return fallback;
        };
        Some(format!(
            "{prefix}{:04}/{:02}/{:02}/{}_{}",
            t.year(),
            t.month(),
            t.day(),
            &name[..head_len],
            t.format("%Y%m%dT%H%MZ")
        ))
    }

    /// The cursor of `prefix` (as [`cursor_prefix`] gives it): the newest key processed there;
    /// `None` when nothing was.
    pub fn cursor(&self, prefix: &str) -> Option<&str> {
        self.prefixes.get(prefix).map(|c| c.last.as_str())
    }

    /// The newest key processed in each prefix.
    pub fn last_keys(&self) -> impl Iterator<Item = &str> {
        self.prefixes.values().map(|c| c.last.as_str())
    }
}

impl crate::source::ListFrom for Cursors {
    fn is_new(&self, key: &str) -> bool {
        Cursors::is_new(self, key)
    }

    fn start_after(&self, prefix: &str) -> Option<String> {
        Cursors::start_after(self, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "org/AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/";

    fn key(day: u32, hhmm: &str, suffix: &str) -> String {
        format!(
            "{P}2026/11/{day:02}/111122223333_CloudTrail_us-east-1_202611{day:02}T{hhmm}Z_{suffix}.json.gz"
        )
    }

    #[test]
    fn a_file_that_appears_late_within_the_window_is_new_older_ones_are_not() {
        let mut c = Cursors::default();
        assert!(c.is_new(&key(10, "1200", "a")));
        for k in [
            key(10, "1200", "a"),
            key(10, "1205", "b"),
            key(10, "1215", "c"),
        ] {
            c.advance(&k);
        }
        assert!(!c.is_new(&key(10, "1205", "b")), "processed");
        assert!(
            c.is_new(&key(10, "1210", "z")),
            "appeared after 12:15 was processed"
        );
        assert!(c.is_new(&key(10, "1215", "d")), "same minute, another file");
        assert!(c.is_new(&key(10, "1220", "e")), "after the cursor");
        assert!(!c.is_new(&key(10, "1100", "old")), "before the window");
        assert!(c.is_new(&key(10, "1116", "in")), "just inside the window");
    }

    #[test]
    fn listing_starts_before_every_key_in_the_window_and_the_set_stays_small() {
        let mut c = Cursors::default();
        // Ten days of 5-minute files, across midnight.
        for m in 0..(10 * 288) {
            let day = 1 + m / 288;
            let min = (m % 288) * 5;
            c.advance(&key(day, &format!("{:02}{:02}", min / 60, min % 60), "x"));
        }
        let p = &c.prefixes[P];
        assert!(p.recent.len() <= 13, "{}", p.recent.len());
        let start = c.start_after(P).unwrap();
        // The last file is 2026-11-10 23:55; the window starts at 22:55.
        assert!(start.as_str() < key(10, "2255", "a").as_str());
        assert!(start.as_str() > key(10, "2250", "zzzz").as_str());
        assert!(start.starts_with(P));

        // Across midnight: the window of a 00:10 cursor starts on the previous day.
        let mut c = Cursors::default();
        c.advance(&key(11, "0010", "x"));
        let start = c.start_after(P).unwrap();
        assert!(start.as_str() < key(10, "2315", "a").as_str());
        assert!(start.as_str() > key(10, "2305", "a").as_str());
        assert!(c.is_new(&key(10, "2330", "late")));
    }

    #[test]
    fn keys_outside_the_layout_fall_back_to_the_plain_cursor() {
        let mut c = Cursors::default();
        for name in ["a", "b"] {
            c.advance(&format!("AWSLogs/1/CloudTrail/r/{name}.json"));
        }
        assert!(c.prefixes["AWSLogs/1/CloudTrail/r/"].recent.is_empty());
        assert!(!c.is_new("AWSLogs/1/CloudTrail/r/a.json"));
        assert!(c.is_new("AWSLogs/1/CloudTrail/r/c.json"));
        assert_eq!(
            c.start_after("AWSLogs/1/CloudTrail/r/").as_deref(),
            Some("AWSLogs/1/CloudTrail/r/b.json")
        );
        assert_eq!(c.start_after("AWSLogs/2/CloudTrail/r/"), None);
    }
}
