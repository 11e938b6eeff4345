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
use crate::time::parse_event_minute;

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
}

impl std::ops::AddAssign for BatchStats {
    fn add_assign(&mut self, o: Self) {
        self.records += o.records;
        self.skipped += o.skipped;
        self.write_management += o.write_management;
        self.error_records += o.error_records;
        self.read_only_missing += o.read_only_missing;
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

/// Builds a [`FileBatch`] record by record.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    index: HashMap<Box<str>, LocalSym>,
    batch: FileBatch,
    next_record: usize,
    last_stream: Option<usize>,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
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
        let Some(minute) = parse_event_minute(time) else {
            self.batch.stats.skipped += 1;
            self.issue(
                index,
                RecordIssue::BadEventTime(time.chars().take(64).collect()),
            );
            return;
        };

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
        let event = CountedEvent {
            minute,
            event_id,
            account,
            region,
            event_source: self.intern(source),
            event_name: self.intern(name),
            principal: self.intern(principal.as_ref()),
            user_agent: self.intern(record.user_agent.as_deref().unwrap_or(NULL_VALUE)),
            error_code: self.intern(error_code.unwrap_or(NULL_VALUE)),
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
                match self
                    .batch
                    .streams
                    .iter()
                    .position(|s| s.account == a && s.region == r)
                {
                    Some(i) => i,
                    None => {
                        self.batch.streams.push(StreamSpan {
                            account: a,
                            region: r,
                            first_minute: minute,
                            last_minute: minute,
                        });
                        self.batch.streams.len() - 1
                    }
                }
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
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","awsRegion":"us-east-1","recipientAccountId":"1","managementEvent":true,"readOnly":false,"eventID":"c64c4ded-ef03-4e5c-81eb-153b118d72f2"},
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","recipientAccountId":"1","eventCategory":"Management","readOnly":true},
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","recipientAccountId":"1","eventCategory":"Management","readOnly":true,"errorCode":"AccessDenied"},
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"s3.amazonaws.com","eventName":"PutObject","awsRegion":"us-east-1","recipientAccountId":"1","eventCategory":"Data","managementEvent":false,"readOnly":false},
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"iam.amazonaws.com","eventName":"CreateRole","awsRegion":"us-east-1","userIdentity":{"accountId":"2"},"managementEvent":true},
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
                .any(|s| &*b.strings[s.account as usize] == "2")
        );
    }
}
