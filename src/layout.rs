//! CloudTrail S3 key layout: parsing log file keys and naming Insights files.
//!
//! Log files (spec §1.2):
//! `[<prefix>/]AWSLogs/[o-<org>/]<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz`.
//! Insights files: the same with `CloudTrail-Insight` in place of `CloudTrail`.
//! Digest files (`CloudTrail-Digest/`) and existing Insights files are not log input.

use chrono::{NaiveDateTime, Utc};

/// Where a trail writes: the key prefix before `AWSLogs/` and the organization level, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrailLocation {
    /// Key prefix before `AWSLogs/`, without trailing slash (empty when none).
    pub prefix: String,
    /// `o-<id>` for organization trails.
    pub org_id: Option<String>,
}

/// What a key in a trail bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A log file (`CloudTrail/`), or a loose JSON file outside the layout.
    Log,
    /// A digest file (`CloudTrail-Digest/`): skipped.
    Digest,
    /// An Insights file (`CloudTrail-Insight/`): skipped.
    Insight,
}

/// What the key of a log file tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKey {
    /// Log, digest or Insights file.
    pub kind: KeyKind,
    /// Trail location, when the key follows the `AWSLogs/` layout.
    pub location: Option<TrailLocation>,
    /// Account from the key.
    pub account: Option<String>,
    /// Region from the key.
    pub region: Option<String>,
    /// Delivery time from the file name (`YYYYMMDDTHHmmZ`), minutes since the epoch.
    pub delivered_minute: Option<i64>,
}

/// True for keys a log source reads: `.json.gz`, `.json` (and `.jsonl`, `.gz`).
pub fn is_log_file_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with(".json.gz")
        || k.ends_with(".json")
        || k.ends_with(".jsonl")
        || k.ends_with(".jsonl.gz")
}

/// Parses a key (slash-separated, relative to the bucket or folder root).
pub fn parse_key(key: &str) -> LogKey {
    let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
    let mut out = LogKey {
        kind: KeyKind::Log,
        location: None,
        account: None,
        region: None,
        delivered_minute: None,
    };
    if parts.contains(&"CloudTrail-Digest") {
        out.kind = KeyKind::Digest;
    } else if parts.contains(&"CloudTrail-Insight") {
        out.kind = KeyKind::Insight;
    }
    if let Some(name) = parts.last() {
        out.delivered_minute = delivery_minute_of(name);
    }
    if let Some(i) = parts.iter().rposition(|p| *p == "AWSLogs") {
        let prefix = parts[..i].join("/");
        let mut j = i + 1;
        let mut org_id = None;
        if parts.get(j).is_some_and(|p| p.starts_with("o-")) {
            org_id = parts.get(j).map(|s| s.to_string());
            j += 1;
        }
        if let (Some(account), Some(kind)) = (parts.get(j), parts.get(j + 1))
            && kind.starts_with("CloudTrail")
        {
            out.account = Some(account.to_string());
            out.region = parts.get(j + 2).map(|s| s.to_string());
            out.location = Some(TrailLocation { prefix, org_id });
        }
    }
    out
}

/// Adds each account's trail location (prefix, organization level) from the first key naming it.
pub fn add_locations(
    locations: &mut std::collections::BTreeMap<String, TrailLocation>,
    keys: impl IntoIterator<Item = LogKey>,
) {
    for info in keys {
        if let (Some(account), Some(location)) = (info.account, info.location) {
            locations.entry(account).or_insert(location);
        }
    }
}

/// The delivery minute in a CloudTrail file name: the `_YYYYMMDDTHHmmZ_` (or `…HHmmssZ`) field.
pub fn delivery_minute_of(file_name: &str) -> Option<i64> {
    let stem = file_name.split('.').next().unwrap_or(file_name);
    stem.split('_').find_map(|f| {
        let f = f.strip_suffix('Z')?;
        let full = match f.len() {
            13 => format!("{f}00"),
            15 => f.to_string(),
            _ => return None,
        };
        NaiveDateTime::parse_from_str(&full, "%Y%m%dT%H%M%S")
            .ok()
            .map(|t| t.and_utc().timestamp().div_euclid(60))
    })
}

/// Key of an Insights file:
/// `[<prefix>/]AWSLogs/[o-<org>/]<account>/CloudTrail-Insight/<region>/YYYY/MM/DD/<account>_CloudTrail-Insight_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz`.
///
/// `unique` must be 16 alphanumerics (see [`unique_string`]).
pub fn insight_key(
    location: &TrailLocation,
    account: &str,
    region: &str,
    delivery_minute: i64,
    unique: &str,
) -> String {
    let t = chrono::DateTime::<Utc>::from_timestamp(delivery_minute.saturating_mul(60), 0)
        .unwrap_or_default();
    let mut key = String::new();
    if !location.prefix.is_empty() {
        key.push_str(&location.prefix);
        key.push('/');
    }
    key.push_str("AWSLogs/");
    if let Some(org) = &location.org_id {
        key.push_str(org);
        key.push('/');
    }
    key.push_str(&format!(
        "{account}/CloudTrail-Insight/{region}/{}/{account}_CloudTrail-Insight_{region}_{}_{unique}.json.gz",
        t.format("%Y/%m/%d"),
        t.format("%Y%m%dT%H%MZ")
    ));
    key
}

/// 16 alphanumerics derived from `content` (UUID v5 → base 62), so a rewrite of the same content has the same name.
pub fn unique_string(content: &[u8]) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut n =
        uuid::Uuid::new_v5(&trailsight_detector::engine::EVENT_ID_NAMESPACE, content).as_u128();
    let mut s = String::with_capacity(16);
    for _ in 0..16 {
        s.push(char::from(ALPHABET[(n % 62) as usize]));
        n /= 62;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trail_and_org_keys() {
        let k = parse_key(
            "AWSLogs/111122223333/CloudTrail/us-east-2/2015/08/01/111122223333_CloudTrail_us-east-2_20150801T0210Z_Mu0KsOhtH1ar15ZZ.json.gz",
        );
        assert_eq!(k.kind, KeyKind::Log);
        assert_eq!(k.account.as_deref(), Some("111122223333"));
        assert_eq!(k.region.as_deref(), Some("us-east-2"));
        assert_eq!(k.location, Some(TrailLocation::default()));
        assert_eq!(k.delivered_minute, Some(1_438_395_000 / 60));

        let k = parse_key(
            "o-fxozgwu6rc/AWSLogs/o-fxozgwu6rc/123456789016/CloudTrail/ca-central-1/2020/08/30/123456789016_CloudTrail_ca-central-1_20200830T0115Z_3YQJxwt5qUaOzMtL.json.gz",
        );
        assert_eq!(
            k.location,
            Some(TrailLocation {
                prefix: "o-fxozgwu6rc".into(),
                org_id: Some("o-fxozgwu6rc".into())
            })
        );
        assert_eq!(k.account.as_deref(), Some("123456789016"));

        let k = parse_key(
            "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz",
        );
        assert_eq!(k.kind, KeyKind::Digest);
        assert_eq!(k.delivered_minute, Some(1_439_823_660 / 60));
        assert_eq!(
            parse_key("x/AWSLogs/1/CloudTrail-Insight/r/2020/01/01/f.json.gz").kind,
            KeyKind::Insight
        );
        let loose = parse_key("stratus/aws.persistence.iam-backdoor-user.json");
        assert_eq!(
            (loose.kind, loose.location, loose.delivered_minute),
            (KeyKind::Log, None, None)
        );
    }

    #[test]
    fn insight_keys_match_aws_layout() {
        let loc = TrailLocation {
            prefix: "o-fxozgwu6rc".into(),
            org_id: Some("o-fxozgwu6rc".into()),
        };
        let m = delivery_minute_of("20200923T0516Z").unwrap();
        assert_eq!(
            insight_key(&loc, "123456789015", "ca-central-1", m, "KL5e9VCV2SS7IqzB"),
            "o-fxozgwu6rc/AWSLogs/o-fxozgwu6rc/123456789015/CloudTrail-Insight/ca-central-1/2020/09/23/123456789015_CloudTrail-Insight_ca-central-1_20200923T0516Z_KL5e9VCV2SS7IqzB.json.gz"
        );
        let u = unique_string(b"abc");
        assert_eq!(u.len(), 16);
        assert!(u.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(u, unique_string(b"abc"));
        assert_ne!(u, unique_string(b"abd"));
    }
}
