//! UTC minute arithmetic. A minute is a whole number of minutes since the Unix epoch.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

/// Minute of an `eventTime` (`YYYY-MM-DDTHH:MM:SSZ`, or any RFC 3339 time), or `None` when unreadable.
pub fn parse_event_minute(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // Fast path for CloudTrail's own form, `2024-07-30T21:53:13Z`.
    if b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
    {
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let mut v = 0u32;
            for &c in &b[r] {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + u32::from(c - b'0');
            }
            Some(v)
        };
        let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
        let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || m > 59 || sec > 60 {
            return None;
        }
        let days = date
            .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?)
            .num_days();
        return Some(days * 1440 + i64::from(h) * 60 + i64::from(m));
    }
    let t = DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.timestamp().div_euclid(60))
}

/// The UTC time of a minute.
pub fn minute_time(minute: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(minute.saturating_mul(60), 0)
        .single()
        .unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:00Z`, the minute-aligned `eventTime` of Insights events.
pub fn format_minute(minute: i64) -> String {
    minute_time(minute).format("%Y-%m-%dT%H:%M:00Z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_cloudtrail_times() {
        assert_eq!(parse_event_minute("1970-01-01T00:01:59Z"), Some(1));
        assert_eq!(
            parse_event_minute("2024-07-30T21:53:13Z"),
            Some(1_722_376_380 / 60)
        );
        assert_eq!(
            parse_event_minute("2024-07-30T21:53:13.250Z"),
            Some(1_722_376_380 / 60)
        );
        assert_eq!(
            parse_event_minute("2024-07-30T23:53:13+02:00"),
            Some(1_722_376_380 / 60)
        );
        assert_eq!(parse_event_minute("2024-02-30T21:53:13Z"), None);
        assert_eq!(parse_event_minute("yesterday"), None);
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_chrono(secs in 0i64..4_000_000_000) {
            let t = Utc.timestamp_opt(secs, 0).single().unwrap();
            let s = t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            prop_assert_eq!(parse_event_minute(&s), Some(secs.div_euclid(60)));
            prop_assert_eq!(format_minute(secs.div_euclid(60)), t.format("%Y-%m-%dT%H:%M:00Z").to_string());
        }
    }
}
