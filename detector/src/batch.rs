//! From parsed records to a compact batch of counted events, per log file.
//!
//! What counts (spec §1.5, issue #2):
//! - **call rate**: write management events: (`managementEvent == true` or
//!   `eventCategory == "Management"`) and `readOnly == false`. A management
//!   record with `readOnly` missing or not a boolean is not counted and is
//!   reported ([`RecordIssue::ReadOnlyMissing`]).
//! - **error rate**: management events, read or write, with a non-empty
//!   `errorCode`, per `errorCode`.
//! - Data events, Insights events and anything else never count.
//!
//! The account is `recipientAccountId`, falling back to `userIdentity.accountId`.
//! Strings are interned per batch ([`FileBatch::strings`]), so a batch is
//! `Send` and cheap to hand from a decode thread to the aggregator.

use std::collections::HashMap;

use crate::record::{Flag, Record};
use crate::time::{format_minute, parse_event_minute};

/// Local symbol: an index into [`FileBatch::strings`].
pub type LocalSym = u32;

/// The attribution value used for calls without an `errorCode` (AWS writes the string `"null"`).
pub const NULL_VALUE: &str = "null";

/// A record that counts for the call rate, the error rate, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountedEvent {
    /// UTC minute of `eventTime`, minutes since the Unix epoch.
    pub minute: i64,
    /// `eventID` as a 128-bit value (the UUID, or a UUID v5 of a non-UUID id); 0 when absent.
    pub event_id: u128,
    /// Account (`recipientAccountId` or `userIdentity.accountId`).
    pub account: LocalSym,
    /// `awsRegion`.
    pub region: LocalSym,
    /// `eventSource`.
    pub event_source: LocalSym,
    /// `eventName`.
    pub event_name: LocalSym,
    /// `userIdentity.arn`, assumed-role session name removed; `invokedBy` or `"null"` when absent.
    pub principal: LocalSym,
    /// `userAgent`, `"null"` when absent.
    pub user_agent: LocalSym,
    /// `errorCode`, `"null"` when the call did not fail.
    pub error_code: LocalSym,
    /// Counts for the call rate (write management event).
    pub call: bool,
    /// Counts for the error rate (management event with an `errorCode`).
    pub error: bool,
}

/// An account and Region seen in a file, with the span of minutes its records covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpan {
    /// Account.
    pub account: LocalSym,
    /// Region.
    pub region: LocalSym,
    /// Earliest record minute.
    pub first_minute: i64,
    /// Latest record minute.
    pub last_minute: i64,
}

/// Why a record was skipped or not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordIssue {
    /// A required field is absent or not a string.
    MissingField(&'static str),
    /// `eventTime` is not an ISO-8601 UTC timestamp.
    BadEventTime(String),
    /// A key field (`recipientAccountId`, `userIdentity.accountId`, `awsRegion`, `eventSource`,
    /// `eventName`) does not have the shape AWS gives it: the record is skipped. The value is
    /// cut to [`ISSUE_VALUE_CHARS`] characters.
    InvalidField {
        /// CloudTrail's name of the field.
        field: &'static str,
        /// The value, cut.
        value: String,
    },
    /// `eventTime` outside the times this file's records may have (see [`TimeBounds`]): the
    /// record is skipped. Minutes since the Unix epoch.
    EventTimeOutOfBounds {
        /// The record's minute.
        minute: i64,
        /// The bounds it missed.
        bounds: TimeBounds,
    },
    /// A management record without a boolean `readOnly`: not counted for the call rate.
    ReadOnlyMissing,
}

impl std::fmt::Display for RecordIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordIssue::MissingField(name) => write!(f, "missing {name}"),
            RecordIssue::BadEventTime(v) => {
                write!(f, "eventTime {v:?} is not an ISO-8601 UTC time")
            }
            RecordIssue::InvalidField { field, value } => {
                write!(
                    f,
                    "{field} {value:?} is not a valid {field}: record skipped"
                )
            }
            RecordIssue::EventTimeOutOfBounds { minute, bounds } => write!(
                f,
                "eventTime {} is outside {}..={} for this file: record skipped",
                format_minute(*minute),
                format_minute(bounds.earliest),
                format_minute(bounds.latest)
            ),
            RecordIssue::ReadOnlyMissing => f.write_str(
                "management event without a boolean readOnly: not counted for the call rate",
            ),
        }
    }
}

/// Counters of one batch (or, summed, of a whole run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Records seen.
    pub records: u64,
    /// Records skipped: a required field missing or unreadable.
    pub skipped: u64,
    /// Write management records (call rate input).
    pub write_management: u64,
    /// Management records with an `errorCode` (error rate input).
    pub error_records: u64,
    /// Management records with no boolean `readOnly`.
    pub read_only_missing: u64,
    /// Records skipped because a key field is malformed ([`RecordIssue::InvalidField`];
    /// also counted in `skipped`).
    pub invalid_field: u64,
    /// Records skipped because their `eventTime` is outside the file's [`TimeBounds`]
    /// ([`RecordIssue::EventTimeOutOfBounds`]; also counted in `skipped`).
    pub out_of_bounds_time: u64,
}

impl std::ops::AddAssign for BatchStats {
    fn add_assign(&mut self, o: Self) {
        self.records += o.records;
        self.skipped += o.skipped;
        self.write_management += o.write_management;
        self.error_records += o.error_records;
        self.read_only_missing += o.read_only_missing;
        self.invalid_field += o.invalid_field;
        self.out_of_bounds_time += o.out_of_bounds_time;
    }
}

/// Issues kept per batch for reporting (counters keep the full totals).
pub const MAX_ISSUES_KEPT: usize = 16;

/// The counted events of one log file, with their own string table.
#[derive(Debug, Clone, Default)]
pub struct FileBatch {
    /// Local string table, indexed by [`LocalSym`].
    pub strings: Vec<Box<str>>,
    /// Counted events, in file order.
    pub events: Vec<CountedEvent>,
    /// Accounts and Regions seen and the minutes they covered.
    pub streams: Vec<StreamSpan>,
    /// Counters.
    pub stats: BatchStats,
    /// The first [`MAX_ISSUES_KEPT`] issues, as (record index in the file, issue).
    pub issues: Vec<(usize, RecordIssue)>,
}

/// Characters of an offending value kept in a [`RecordIssue`].
pub const ISSUE_VALUE_CHARS: usize = 64;
/// Longest `awsRegion` accepted, bytes (the longest Region today, `ap-southeast-7` or
/// `us-isob-east-1`, has 14).
pub const MAX_REGION_BYTES: usize = 32;
/// Longest `eventSource` or `eventName` accepted, bytes (real values are well under 64:
/// `UpdateFunctionCode20150331v2`, `iam.amazonaws.com`).
pub const MAX_API_NAME_BYTES: usize = 128;
/// Longest attribution value (`userIdentity.arn` or `invokedBy`, `userAgent`, `errorCode`)
/// kept, bytes: longer values are cut at the last character boundary at or before this
/// length. An IAM ARN is at most 2048 characters in theory, but real principals and user
/// agents are far shorter; 512 keeps every value seen in practice whole while one record
/// cannot carry megabytes into the symbol table.
pub const MAX_ATTRIBUTION_BYTES: usize = 512;

/// The minutes a file's records may have (inclusive, minutes since the Unix epoch). A record
/// outside them is counted ([`BatchStats::out_of_bounds_time`]), reported and skipped: it never
/// becomes an event or a stream span, so it cannot move the watermark or an account's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// Earliest minute accepted.
    pub earliest: i64,
    /// Latest minute accepted.
    pub latest: i64,
}

impl TimeBounds {
    /// No bounds (every parsed time is accepted): for tools and tests that replay synthetic
    /// data. The service always passes [`TimeBounds::for_file`].
    pub const UNBOUNDED: TimeBounds = TimeBounds {
        earliest: i64::MIN,
        latest: i64::MAX,
    };

    /// 2013-11-01T00:00Z: no CloudTrail record is older (CloudTrail launched on 2013-11-13).
    pub const CLOUDTRAIL_EPOCH_MINUTE: i64 = 23_054_400;

    /// The bounds of one file's records.
    ///
    /// - Always: not before [`TimeBounds::CLOUDTRAIL_EPOCH_MINUTE`] and not after
    ///   `now_minute + max_clock_skew_minutes` (`now_minute`: the caller's clock, minutes since
    ///   the epoch; the detector has none).
    /// - With a delivery time (from the file name, `delivered_minute`): also not before
    ///   `delivered_minute − max_event_age_minutes` and not after
    ///   `delivered_minute + max_clock_skew_minutes`.
    ///
    /// A delivery time from a file name is itself untrusted: the absolute window still holds
    /// (a name claiming year 9999 accepts nothing past `now` + skew). Empty bounds
    /// (`earliest > latest`) accept nothing.
    pub fn for_file(
        delivered_minute: Option<i64>,
        now_minute: i64,
        max_event_age_minutes: u32,
        max_clock_skew_minutes: u32,
    ) -> TimeBounds {
        let skew = i64::from(max_clock_skew_minutes);
        let mut b = TimeBounds {
            earliest: Self::CLOUDTRAIL_EPOCH_MINUTE,
            latest: now_minute.saturating_add(skew),
        };
        if let Some(d) = delivered_minute {
            b.earliest = b
                .earliest
                .max(d.saturating_sub(i64::from(max_event_age_minutes)));
            b.latest = b.latest.min(d.saturating_add(skew));
        }
        b
    }

    /// True when `minute` is within the bounds.
    pub fn contains(&self, minute: i64) -> bool {
        (self.earliest..=self.latest).contains(&minute)
    }
}

impl Default for TimeBounds {
    fn default() -> Self {
        TimeBounds::UNBOUNDED
    }
}

/// True for a 12-digit AWS account ID.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// True for a Region name of AWS's shape: `^[a-z]{2}(-[a-z]+){1,3}-[0-9]{1,2}$`, at most
/// [`MAX_REGION_BYTES`] bytes (`us-east-1`, `us-gov-west-1`, `cn-north-1`, `us-iso-east-1`,
/// `us-isob-east-1`, `eu-isoe-west-1`, `il-central-1`, `ap-southeast-7`).
///
/// A stricter form of the per-partition `regionRegex` of the AWS SDKs' `partitions.json`
/// (e.g. `^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$` for `aws`, `^us\-gov\-\w+\-\d+$`,
/// `^cn\-\w+\-\d+$`, `^eu\-isoe\-\w+\-\d+$`; aws/aws-sdk-js-v3,
/// `packages/util-endpoints/src/lib/aws/partitions.json`): lower-case letters only in the
/// middle parts (no `_`, digits or capitals), so a value can never be `.`, `..`, empty or hold
/// a `/`, and any new Region of the same shape is accepted.
pub fn is_region(s: &str) -> bool {
    // Called for every record: no allocation.
    let lower = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    if s.len() > MAX_REGION_BYTES {
        return false;
    }
    let mut parts = s.split('-');
    let (Some(first), Some(last)) = (parts.next(), parts.next_back()) else {
        return false;
    };
    let mut middle = 0;
    for p in parts {
        if !lower(p) {
            return false;
        }
        middle += 1;
    }
    first.len() == 2
        && lower(first)
        && (1..=3).contains(&middle)
        && (1..=2).contains(&last.len())
        && last.bytes().all(|b| b.is_ascii_digit())
}

/// True for an `eventSource` or `eventName` of a usable shape: 1 to [`MAX_API_NAME_BYTES`]
/// bytes, no whitespace or control characters.
pub fn is_api_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_API_NAME_BYTES
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Builds a [`FileBatch`] record by record.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    index: HashMap<Box<str>, LocalSym>,
    /// Stream index of each (account, Region) pair, so a file of many pairs is linear.
    stream_index: HashMap<(LocalSym, LocalSym), usize>,
    batch: FileBatch,
    next_record: usize,
    last_stream: Option<usize>,
    bounds: TimeBounds,
}

impl BatchBuilder {
    /// An empty builder accepting any record time ([`TimeBounds::UNBOUNDED`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty builder accepting record times within `bounds` only.
    pub fn with_bounds(bounds: TimeBounds) -> Self {
        BatchBuilder {
            bounds,
            ..Self::default()
        }
    }

    fn intern(&mut self, s: &str) -> LocalSym {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.batch.strings.len() as LocalSym;
        self.batch.strings.push(s.into());
        self.index.insert(s.into(), i);
        i
    }

    fn issue(&mut self, index: usize, issue: RecordIssue) {
        if self.batch.issues.len() < MAX_ISSUES_KEPT {
            self.batch.issues.push((index, issue));
        }
    }

    /// Classifies one record and, when it counts, adds it.
    pub fn push(&mut self, record: &Record<'_>) {
        let index = self.next_record;
        self.next_record += 1;
        self.batch.stats.records += 1;

        let missing = if record.event_time.is_none() {
            Some("eventTime")
        } else if record.event_source.is_none() {
            Some("eventSource")
        } else if record.event_name.is_none() {
            Some("eventName")
        } else if record.aws_region.is_none() {
            Some("awsRegion")
        } else if record.recipient_account_id.is_none() && record.user_identity.account_id.is_none()
        {
            Some("recipientAccountId")
        } else {
            None
        };
        if let Some(field) = missing {
            self.batch.stats.skipped += 1;
            self.issue(index, RecordIssue::MissingField(field));
            return;
        }
        let (Some(time), Some(source), Some(name), Some(region)) = (
            &record.event_time,
            &record.event_source,
            &record.event_name,
            &record.aws_region,
        ) else {
            return;
        };
        let Some(account) = record
            .recipient_account_id
            .as_ref()
            .or(record.user_identity.account_id.as_ref())
        else {
            return;
        };
        let invalid = if !is_account_id(account) {
            Some((
                if record.recipient_account_id.is_some() {
                    "recipientAccountId"
                } else {
                    "userIdentity.accountId"
                },
                account.as_ref(),
            ))
        } else if !is_region(region) {
            Some(("awsRegion", region.as_ref()))
        } else if !is_api_name(source) {
            Some(("eventSource", source.as_ref()))
        } else if !is_api_name(name) {
            Some(("eventName", name.as_ref()))
        } else {
            None
        };
        if let Some((field, value)) = invalid {
            self.batch.stats.skipped += 1;
            self.batch.stats.invalid_field += 1;
            let value = value.chars().take(ISSUE_VALUE_CHARS).collect();
            self.issue(index, RecordIssue::InvalidField { field, value });
            return;
        }
        let Some(minute) = parse_event_minute(time) else {
            self.batch.stats.skipped += 1;
            self.issue(
                index,
                RecordIssue::BadEventTime(time.chars().take(ISSUE_VALUE_CHARS).collect()),
            );
            return;
        };
        if !self.bounds.contains(minute) {
            self.batch.stats.skipped += 1;
            self.batch.stats.out_of_bounds_time += 1;
            let bounds = self.bounds;
            self.issue(index, RecordIssue::EventTimeOutOfBounds { minute, bounds });
            return;
        }

        let (account, region) = self.note_stream(account, region, minute);

        let management = record.management_event == Flag::True
            || record.event_category.as_deref() == Some("Management");
        if !management {
            return;
        }
        let error_code = record.error_code.as_deref().filter(|e| !e.is_empty());
        let call = match record.read_only {
            Flag::False => true,
            Flag::True => false,
            Flag::Missing | Flag::Invalid => {
                self.batch.stats.read_only_missing += 1;
                self.issue(index, RecordIssue::ReadOnlyMissing);
                false
            }
        };
        let error = error_code.is_some();
        if !call && !error {
            return;
        }
        if call {
            self.batch.stats.write_management += 1;
        }
        if error {
            self.batch.stats.error_records += 1;
        }
        let event_id = record.event_id.as_deref().map(event_id_value).unwrap_or(0);
        let principal = principal_of(record);
        let cut = |s| truncate_at_char(s, MAX_ATTRIBUTION_BYTES);
        let (principal, user_agent, error_code) = (
            cut(principal.as_ref()),
            cut(record.user_agent.as_deref().unwrap_or(NULL_VALUE)),
            cut(error_code.unwrap_or(NULL_VALUE)),
        );
        let event = CountedEvent {
            minute,
            event_id,
            account,
            region,
            event_source: self.intern(source),
            event_name: self.intern(name),
            principal: self.intern(principal),
            user_agent: self.intern(user_agent),
            error_code: self.intern(error_code),
            call,
            error,
        };
        self.batch.events.push(event);
    }

    /// Interns the account and Region and widens their minute span. Records of a file
    /// nearly always share one account and Region, so the last pair is checked first.
    fn note_stream(&mut self, account: &str, region: &str, minute: i64) -> (LocalSym, LocalSym) {
        let last = self.last_stream.and_then(|i| {
            let s = self.batch.streams[i];
            let same = *self.batch.strings[s.account as usize] == *account
                && *self.batch.strings[s.region as usize] == *region;
            same.then_some(i)
        });
        let i = match last {
            Some(i) => i,
            None => {
                let (a, r) = (self.intern(account), self.intern(region));
                let streams = &mut self.batch.streams;
                *self.stream_index.entry((a, r)).or_insert_with(|| {
                    streams.push(StreamSpan {
                        account: a,
                        region: r,
                        first_minute: minute,
                        last_minute: minute,
                    });
                    streams.len() - 1
                })
            }
        };
        self.last_stream = Some(i);
        let s = &mut self.batch.streams[i];
        s.first_minute = s.first_minute.min(minute);
        s.last_minute = s.last_minute.max(minute);
        (s.account, s.region)
    }

    /// The finished batch.
    pub fn finish(self) -> FileBatch {
        self.batch
    }
}

/// `eventID` as 128 bits: the UUID itself, or a UUID v5 of the text for non-UUID ids.
pub fn event_id_value(id: &str) -> u128 {
    match uuid::Uuid::try_parse(id) {
        Ok(u) => u.as_u128(),
        Err(_) => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes()).as_u128(),
    }
}

/// The `userIdentityArn` attribution value of a record.
///
/// Assumed-role ARNs lose their session name, as in AWS's own Insights
/// (`arn:aws:sts::123456789012:assumed-role/Role/session` →
/// `arn:aws:sts::123456789012:assumed-role/Role`). Without an ARN, the
/// `invokedBy` service principal, else `"null"`.
pub fn principal_of<'a>(record: &'a Record<'_>) -> std::borrow::Cow<'a, str> {
    match (&record.user_identity.arn, &record.user_identity.invoked_by) {
        (Some(arn), _) => std::borrow::Cow::Borrowed(normalize_arn(arn)),
        (None, Some(by)) => std::borrow::Cow::Borrowed(by.as_ref()),
        (None, None) => std::borrow::Cow::Borrowed(NULL_VALUE),
    }
}

/// Removes the session name from an STS assumed-role ARN; other ARNs are returned unchanged.
pub fn normalize_arn(arn: &str) -> &str {
    if let Some(pos) = arn.find(":assumed-role/") {
        let rest = &arn[pos + ":assumed-role/".len()..];
        if let Some(slash) = rest.find('/') {
            return &arn[..pos + ":assumed-role/".len() + slash];
        }
    }
    arn
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_log;

    fn batch(json: &str) -> FileBatch {
        let mut b = BatchBuilder::new();
        parse_log(json.as_bytes(), |r| b.push(&r));
        b.finish()
    }

    #[test]
    fn assumed_role_session_is_dropped() {
        assert_eq!(
            normalize_arn("arn:aws:sts::111122223333:assumed-role/ci-deployer/gha-run-9812"),
            "arn:aws:sts::111122223333:assumed-role/ci-deployer"
        );
        assert_eq!(
            normalize_arn("arn:aws:iam::1:user/alice"),
            "arn:aws:iam::1:user/alice"
        );
    }

    #[test]
    fn selection_rules() {
        let b = batch(
            r#"[
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","awsRegion":"us-east-1","recipientAccountId":"111111111111","managementEvent":true,"readOnly":false,"eventID":"c64c4ded-ef03-4e5c-81eb-153b118d72f2"},
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","recipientAccountId":"111111111111","eventCategory":"Management","readOnly":true},
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","recipientAccountId":"111111111111","eventCategory":"Management","readOnly":true,"errorCode":"AccessDenied"},
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"s3.amazonaws.com","eventName":"PutObject","awsRegion":"us-east-1","recipientAccountId":"111111111111","eventCategory":"Data","managementEvent":false,"readOnly":false},
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"iam.amazonaws.com","eventName":"CreateRole","awsRegion":"us-east-1","userIdentity":{"accountId":"222222222222"},"managementEvent":true},
            {"eventSource":"iam.amazonaws.com","eventName":"CreateRole"}
        ]"#,
        );
        assert_eq!(b.stats.records, 6);
        assert_eq!(b.stats.write_management, 1);
        assert_eq!(b.stats.error_records, 1);
        assert_eq!(b.stats.read_only_missing, 1);
        assert_eq!(b.stats.skipped, 1);
        assert_eq!(b.events.len(), 2);
        assert!(b.events[0].call && !b.events[0].error);
        assert!(!b.events[1].call && b.events[1].error);
        assert_eq!(&*b.strings[b.events[1].error_code as usize], "AccessDenied");
        assert_eq!(&*b.strings[b.events[0].error_code as usize], NULL_VALUE);
        assert_eq!(b.events[0].event_id, 0xc64c4ded_ef03_4e5c_81eb_153b118d72f2);
        assert_eq!(
            b.issues.last(),
            Some(&(5, RecordIssue::MissingField("eventTime")))
        );
        // account fallback to userIdentity.accountId: the CreateRole stream exists for account "2"
        assert!(
            b.streams
                .iter()
                .any(|s| &*b.strings[s.account as usize] == "222222222222")
        );
    }

    fn rec(account: &str, region: &str, source: &str, name: &str, time: &str) -> String {
        serde_json::json!({
            "eventTime": time, "eventSource": source, "eventName": name, "awsRegion": region,
            "recipientAccountId": account, "managementEvent": true, "readOnly": false
        })
        .to_string()
    }

    fn batch_of(records: &[String], bounds: TimeBounds) -> FileBatch {
        let json = format!("[{}]", records.join(","));
        let mut b = BatchBuilder::with_bounds(bounds);
        parse_log(json.as_bytes(), |r| b.push(&r));
        b.finish()
    }

    const T: &str = "2024-01-01T00:00:05Z";

    #[test]
    fn malformed_key_fields_are_skipped_counted_and_never_interned() {
        let good = rec(
            "111122223333",
            "us-east-1",
            "iam.amazonaws.com",
            "CreateUser",
            T,
        );
        let bad = [
            (
                "recipientAccountId",
                rec(
                    "../../../../tmp/x",
                    "us-east-1",
                    "iam.amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "recipientAccountId",
                rec(
                    &"1".repeat(300),
                    "us-east-1",
                    "iam.amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "recipientAccountId",
                rec(
                    "11112222333\u{0}",
                    "us-east-1",
                    "iam.amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "recipientAccountId",
                rec("", "us-east-1", "iam.amazonaws.com", "CreateUser", T),
            ),
            (
                "recipientAccountId",
                rec(
                    "１１１１２２２２３３３３",
                    "us-east-1",
                    "iam.amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "awsRegion",
                rec(
                    "111122223333",
                    "../../../../tmp/x",
                    "iam.amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "awsRegion",
                rec("111122223333", ".", "iam.amazonaws.com", "CreateUser", T),
            ),
            (
                "awsRegion",
                rec("111122223333", "..", "iam.amazonaws.com", "CreateUser", T),
            ),
            (
                "awsRegion",
                rec("111122223333", "", "iam.amazonaws.com", "CreateUser", T),
            ),
            (
                "awsRegion",
                rec(
                    "111122223333",
                    "/tmp/x",
                    "iam.amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "awsRegion",
                rec(
                    "111122223333",
                    "US/EAST",
                    "iam.amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "awsRegion",
                rec(
                    "111122223333",
                    "US-EAST-1",
                    "iam.amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "awsRegion",
                rec(
                    "111122223333",
                    "us-east-1\n",
                    "iam.amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "eventSource",
                rec(
                    "111122223333",
                    "us-east-1",
                    "iam amazonaws.com",
                    "CreateUser",
                    T,
                ),
            ),
            (
                "eventSource",
                rec("111122223333", "us-east-1", "", "CreateUser", T),
            ),
            (
                "eventName",
                rec(
                    "111122223333",
                    "us-east-1",
                    "iam.amazonaws.com",
                    "\u{1b}[2J\nFAKE: Insights: 0 started",
                    T,
                ),
            ),
            (
                "eventName",
                rec(
                    "111122223333",
                    "us-east-1",
                    "iam.amazonaws.com",
                    &"A".repeat(129),
                    T,
                ),
            ),
        ];
        let mut records = vec![good.clone()];
        records.extend(bad.iter().map(|b| b.1.clone()));
        records.push(good);
        let b = batch_of(&records, TimeBounds::UNBOUNDED);
        assert_eq!(b.stats.records, bad.len() as u64 + 2);
        assert_eq!(b.stats.invalid_field, bad.len() as u64);
        assert_eq!(b.stats.skipped, bad.len() as u64);
        assert_eq!(b.events.len(), 2, "every good record is kept");
        assert_eq!(b.streams.len(), 1);
        let strings: Vec<&str> = b.strings.iter().map(|s| &**s).collect();
        for s in &strings {
            assert!(
                is_account_id(s) || is_region(s) || is_api_name(s),
                "interned {s:?}"
            );
        }
        for (i, (field, _)) in bad.iter().enumerate().take(MAX_ISSUES_KEPT) {
            let (index, issue) = &b.issues[i];
            assert_eq!(*index, i + 1);
            assert!(
                matches!(issue, RecordIssue::InvalidField { field: f, .. } if f == field),
                "{issue:?}"
            );
            let text = issue.to_string();
            assert!(text.starts_with(field), "{text}");
            assert!(!text.chars().any(char::is_control), "unescaped: {text:?}");
            assert!(text.len() < 300, "value not cut: {text}");
        }
    }

    #[test]
    fn fallback_account_is_validated_and_named() {
        let json = r#"[{"eventTime":"2024-01-01T00:00:05Z","eventSource":"iam.amazonaws.com","eventName":"CreateRole","awsRegion":"us-east-1","userIdentity":{"accountId":"../x"},"managementEvent":true,"readOnly":false}]"#;
        let mut b = BatchBuilder::new();
        parse_log(json.as_bytes(), |r| b.push(&r));
        let b = b.finish();
        assert_eq!(b.stats.invalid_field, 1);
        assert!(b.streams.is_empty());
        assert!(matches!(
            &b.issues[0].1,
            RecordIssue::InvalidField { field: "userIdentity.accountId", value } if value == "../x"
        ));
    }

    #[test]
    fn real_region_names_are_accepted() {
        for r in [
            "us-east-1",
            "us-gov-west-1",
            "cn-north-1",
            "cn-northwest-1",
            "us-iso-east-1",
            "us-isob-east-1",
            "eu-isoe-west-1",
            "us-isof-south-1",
            "il-central-1",
            "ap-southeast-7",
            "mx-central-1",
        ] {
            assert!(is_region(r), "{r}");
        }
        for r in [
            "us-east",
            "us-east-123",
            "u-east-1",
            "us--1",
            "us-east-1-",
            "us_east-1",
            "aws-global",
            "us-a-b-c-d-1",
        ] {
            assert!(!is_region(r), "{r}");
        }
    }

    #[test]
    fn attribution_values_are_cut_at_a_char_boundary() {
        let ua = "é".repeat(1_000_000); // 2 MB
        let json = format!(
            r#"[{{"eventTime":"2024-01-01T00:00:05Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","awsRegion":"us-east-1","recipientAccountId":"111122223333","managementEvent":true,"readOnly":false,"userAgent":"{ua}","userIdentity":{{"arn":"arn:aws:iam::111122223333:user/{ua}"}},"errorCode":"{ua}"}}]"#
        );
        let mut b = BatchBuilder::new();
        parse_log(json.as_bytes(), |r| b.push(&r));
        let b = b.finish();
        assert_eq!(b.events.len(), 1);
        let e = b.events[0];
        for sym in [e.principal, e.user_agent, e.error_code] {
            let s = &*b.strings[sym as usize];
            assert!(
                s.len() <= MAX_ATTRIBUTION_BYTES && s.len() > MAX_ATTRIBUTION_BYTES - 4,
                "{}",
                s.len()
            );
        }
        assert!(b.strings.iter().map(|s| s.len()).sum::<usize>() < 4 * MAX_ATTRIBUTION_BYTES);
    }

    #[test]
    fn record_times_outside_the_file_bounds_are_skipped() {
        let delivered = parse_event_minute("2024-01-01T00:10:00Z").unwrap();
        let now = parse_event_minute("2024-06-01T00:00:00Z").unwrap();
        let bounds = TimeBounds::for_file(Some(delivered), now, 1440, 15);
        let at = |t: &str| {
            rec(
                "111122223333",
                "us-east-1",
                "iam.amazonaws.com",
                "CreateUser",
                t,
            )
        };
        let b = batch_of(
            &[
                at("2024-01-01T00:05:00Z"),
                at("9999-12-31T23:59:00Z"),
                at("0001-01-01T00:00:00Z"),
                at("1970-01-01T00:00:00Z"),
                at("2023-12-30T00:10:00Z"), // older than a day before delivery
                at("2024-01-01T00:30:00Z"), // 20 minutes after delivery
                at("2024-01-01T00:25:00Z"), // 15 minutes after: within the skew
            ],
            bounds,
        );
        assert_eq!(b.stats.out_of_bounds_time, 5);
        assert_eq!(b.stats.skipped, 5);
        assert_eq!(b.events.len(), 2);
        assert_eq!(b.streams.len(), 1);
        assert_eq!(b.streams[0].first_minute, delivered - 5);
        assert_eq!(b.streams[0].last_minute, delivered + 15);
        assert!(b.issues[0].1.to_string().contains("9999-12-31T23:59:00Z"));
        // A loose file (no delivery time): CloudTrail's lifetime up to now + skew.
        let loose = TimeBounds::for_file(None, now, 1440, 15);
        let b = batch_of(
            &[
                at("2013-10-31T23:59:00Z"),
                at("2013-11-13T00:00:00Z"),
                at("9999-12-31T23:59:00Z"),
                at("2024-06-01T00:15:00Z"),
                at("2024-06-01T00:16:00Z"),
            ],
            loose,
        );
        assert_eq!(b.stats.out_of_bounds_time, 3);
        assert_eq!(b.events.len(), 2);
        // A delivery time in the name is no more trusted than the records: year 9999 still ends at now.
        let forged =
            TimeBounds::for_file(parse_event_minute("9999-12-31T23:59:00Z"), now, 1440, 15);
        assert_eq!(
            batch_of(&[at("9999-12-31T23:59:00Z")], forged).events.len(),
            0
        );
    }

    #[test]
    fn many_account_region_pairs_in_one_file_are_linear() {
        // 600k distinct pairs of data events (never counted): one stream each, found by hash.
        let n = 600_000u64;
        let mut b = BatchBuilder::new();
        let regions = ["us-east-1", "eu-west-1", "ap-southeast-7"];
        for i in 0..n {
            let account = format!("{:012}", i / 3);
            let json = format!(
                r#"{{"eventTime":"2024-01-01T00:00:05Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"{}","recipientAccountId":"{account}","eventCategory":"Data"}}"#,
                regions[(i % 3) as usize]
            );
            parse_log(json.as_bytes(), |r| b.push(&r));
        }
        let b = b.finish();
        assert_eq!(b.streams.len() as u64, n);
        assert_eq!(b.events.len(), 0);
        assert_eq!(b.strings.len() as u64, n / 3 + 3);
    }
}
