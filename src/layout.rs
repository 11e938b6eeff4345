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
///
/// The trail location, account and Region are taken from the key only when it follows the
/// `AWSLogs/` layout with well-formed parts: an organization ID matching `o-[a-z0-9]{10,32}`, a
/// 12-digit account and a key prefix of plain segments (see [`check_prefix`]); the Region is
/// kept only when it is an AWS Region name. Otherwise the key is a loose file (its records carry
/// their own account and Region): whoever can write to the bucket chooses these parts, and they
/// end up in the names of the Insights files.
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
            && is_account_id(account)
            && org_id.as_deref().is_none_or(is_org_id)
            && check_prefix(&prefix).is_ok()
        {
            out.account = Some(account.to_string());
            out.region = parts
                .get(j + 2)
                .filter(|r| is_region(r))
                .map(|s| s.to_string());
            out.location = Some(TrailLocation { prefix, org_id });
        }
    }
    out
}

/// The account and Region checks are the detector's own (one definition for records and for
/// keys): `is_account_id` (12 ASCII digits) and `is_region` (AWS's Region shape). The sink checks
/// again here, independently of the records having been checked.
pub use trailsight_detector::batch::{is_account_id, is_region};

/// True for an AWS Organizations ID: `o-[a-z0-9]{10,32}`.
pub fn is_org_id(s: &str) -> bool {
    s.strip_prefix("o-").is_some_and(|id| {
        (10..=32).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// Longest key prefix (before `AWSLogs/`) accepted, bytes: CloudTrail's own limit for a trail's
/// S3 key prefix.
pub const MAX_PREFIX_LEN: usize = 200;

/// Checks a key prefix (the part before `AWSLogs/`, without slashes at either end; empty for none):
/// at most [`MAX_PREFIX_LEN`] bytes of `/`-separated segments, each non-empty, not made of dots
/// only (`.`, `..`), and made of S3's safe characters (`A-Z a-z 0-9 ! - _ . * ' ( )`).
///
/// Returns `Err(InsightKeyError::Prefix)` otherwise.
pub fn check_prefix(prefix: &str) -> Result<(), InsightKeyError> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b);
    let ok = prefix.is_empty()
        || (prefix.len() <= MAX_PREFIX_LEN
            && prefix.split('/').all(|seg| {
                !seg.is_empty() && !seg.bytes().all(|b| b == b'.') && seg.bytes().all(safe)
            }));
    if ok {
        Ok(())
    } else {
        Err(InsightKeyError::Prefix(shown(prefix)))
    }
}

/// Why an Insights file's key cannot be built: one of its parts, which come from log records
/// (account, Region) or from log file keys (prefix, organization ID), is not well-formed.
/// Each variant holds the offending value, escaped and shortened for display.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsightKeyError {
    /// The account is not 12 ASCII digits.
    #[error("account {0} is not 12 digits")]
    Account(String),
    /// The Region does not match AWS's Region pattern.
    #[error("Region {0} is not an AWS Region name")]
    Region(String),
    /// The organization ID does not match `o-[a-z0-9]{{10,32}}`.
    #[error("organization ID {0} does not match o-[a-z0-9]{{10,32}}")]
    OrgId(String),
    /// The key prefix is not made of plain segments (see [`check_prefix`]).
    #[error("key prefix {0} is not a plain S3 key prefix")]
    Prefix(String),
    /// The unique part of the name is not 16 ASCII alphanumerics.
    #[error("unique name part {0} is not 16 alphanumerics")]
    Unique(String),
}

/// Characters of an untrusted value shown in an error.
const SHOWN_CHARS: usize = 40;

/// `value` for an error message: quoted with control and other non-printable characters
/// escaped (Rust's `{:?}`), cut after [`SHOWN_CHARS`] characters with its length in bytes.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
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
/// Built from validated parts only, so the key is a relative path of plain, non-empty segments
/// (no `.`, `..`, empty or absolute part, no control character) at most 512 bytes long.
///
/// Returns `Err` when `account` is not 12 digits ([`is_account_id`]), `region` is not a Region
/// name ([`is_region`]), the organization ID or the prefix of `location` is malformed
/// ([`is_org_id`], [`check_prefix`]), or `unique` is not 16 alphanumerics (see [`unique_string`]).
pub fn insight_key(
    location: &TrailLocation,
    account: &str,
    region: &str,
    delivery_minute: i64,
    unique: &str,
) -> Result<String, InsightKeyError> {
    if !is_account_id(account) {
        return Err(InsightKeyError::Account(shown(account)));
    }
    if !is_region(region) {
        return Err(InsightKeyError::Region(shown(region)));
    }
    check_prefix(&location.prefix)?;
    if let Some(org) = &location.org_id
        && !is_org_id(org)
    {
        return Err(InsightKeyError::OrgId(shown(org)));
    }
    if unique.len() != 16 || !unique.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(InsightKeyError::Unique(shown(unique)));
    }
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
    Ok(key)
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
            insight_key(&loc, "123456789015", "ca-central-1", m, "KL5e9VCV2SS7IqzB").unwrap(),
            "o-fxozgwu6rc/AWSLogs/o-fxozgwu6rc/123456789015/CloudTrail-Insight/ca-central-1/2020/09/23/123456789015_CloudTrail-Insight_ca-central-1_20200923T0516Z_KL5e9VCV2SS7IqzB.json.gz"
        );
        let u = unique_string(b"abc");
        assert_eq!(u.len(), 16);
        assert!(u.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(u, unique_string(b"abc"));
        assert_ne!(u, unique_string(b"abd"));
    }

    #[test]
    fn validators_follow_aws_patterns() {
        for r in [
            "us-east-1",
            "us-gov-west-1",
            "us-isob-east-1",
            "ap-southeast-3",
            "il-central-1",
        ] {
            assert!(is_region(r), "{r}");
        }
        for r in [
            "",
            ".",
            "..",
            "US/EAST",
            "us-east",
            "us-east-123",
            "us_east_1",
            "u-east-1",
            "us--1",
        ] {
            assert!(!is_region(r), "{r}");
        }
        assert!(is_account_id("111122223333"));
        for a in [
            "",
            "1111222233334",
            "11112222333x",
            "../../../../",
            "\0\0\0\0\0\0\0\0\0\0\0\0",
        ] {
            assert!(!is_account_id(a), "{a}");
        }
        assert!(is_org_id("o-a1b2c3d4e5"));
        assert!(!is_org_id("o-../../x"));
        assert!(!is_org_id("o-ABCDEFGHIJ"));
        assert!(!is_org_id("o-abc"));
        for p in ["", "trail-logs", "a/b.c/(x)"] {
            assert!(check_prefix(p).is_ok(), "{p}");
        }
        for p in ["..", "a/../b", "a//b", "/a", "a/", "a b", "a\\b", "x\0"] {
            assert!(check_prefix(p).is_err(), "{p}");
        }
    }

    #[test]
    fn keys_with_malformed_parts_give_no_location() {
        for key in [
            "AWSLogs/o-../../../x/111122223333/CloudTrail/us-east-1/2024/01/01/f.json.gz",
            "AWSLogs/o-ABCDEFGHIJKL/111122223333/CloudTrail/us-east-1/2024/01/01/f.json.gz",
            "AWSLogs/..11122223333/CloudTrail/us-east-1/2024/01/01/f.json.gz",
            "../AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/01/f.json.gz",
        ] {
            let k = parse_key(key);
            assert_eq!((k.location, k.account), (None, None), "{key}");
            assert_eq!(k.kind, KeyKind::Log);
        }
        let k = parse_key("AWSLogs/111122223333/CloudTrail/US/2024/01/01/f.json.gz");
        assert_eq!(k.account.as_deref(), Some("111122223333"));
        assert_eq!(k.region, None);
    }

    #[test]
    fn hostile_parts_give_an_error_not_a_key() {
        let ok = TrailLocation::default();
        let u = "KL5e9VCV2SS7IqzB";
        for account in [
            "../../../../tmp/x",
            ".",
            "",
            "/tmp/x",
            "..",
            &"1".repeat(300),
            "1111\u{0}22223333",
        ] {
            assert!(
                matches!(
                    insight_key(&ok, account, "us-east-1", 0, u),
                    Err(InsightKeyError::Account(_))
                ),
                "{account}"
            );
        }
        for region in ["../../../../tmp/x", ".", "", "/tmp/x", "..", "US/EAST"] {
            assert!(
                matches!(
                    insight_key(&ok, "111122223333", region, 0, u),
                    Err(InsightKeyError::Region(_))
                ),
                "{region}"
            );
        }
        let bad_org = TrailLocation {
            prefix: String::new(),
            org_id: Some("o-../..".into()),
        };
        assert!(matches!(
            insight_key(&bad_org, "111122223333", "us-east-1", 0, u),
            Err(InsightKeyError::OrgId(_))
        ));
        // Shown values are escaped and shortened.
        let e = insight_key(
            &ok,
            &format!("\u{1b}[2J{}", "9".repeat(300)),
            "us-east-1",
            0,
            u,
        )
        .unwrap_err()
        .to_string();
        assert!(
            !e.contains('\u{1b}') && e.contains("bytes)") && e.len() < 120,
            "{e}"
        );
    }
}
