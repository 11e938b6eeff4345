//! The CloudTrail record model: the fields detection needs, parsed tolerantly.
//!
//! Schema: CloudTrail log file, `{"Records":[…]}` (spec §1.1), a top-level JSON
//! array of records (as Stratus Red Team ships them), or one record object per
//! line (JSON Lines, as log shippers export them). Field names are CloudTrail's
//! own (`eventTime`, `eventSource`, `eventName`, `awsRegion`,
//! `recipientAccountId`, `readOnly`, `managementEvent`, `eventCategory`,
//! `errorCode`, `userAgent`, `userIdentity.arn`…).
//!
//! Tolerance rules (spec §1.4): unknown fields are ignored, a field of an
//! unexpected JSON type is treated as absent (never an error), booleans may be
//! JSON booleans or the strings `"true"`/`"false"`, duplicate keys keep the last
//! value. Strings borrow from the input buffer unless they contain escapes.
//! Only JSON syntax errors stop a file, and every record parsed before the
//! error is kept.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string field that borrows from the input when it can.
pub type Str<'a> = Cow<'a, str>;

/// A boolean field as found in real records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flag {
    /// The field is absent (or `null`).
    #[default]
    Missing,
    /// `true` or `"true"`.
    True,
    /// `false` or `"false"`.
    False,
    /// Present with another value or type.
    Invalid,
}

/// The `userIdentity` fields used for attributions and the account fallback.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserIdentity<'a> {
    /// `userIdentity.arn`.
    pub arn: Option<Str<'a>>,
    /// `userIdentity.accountId`.
    pub account_id: Option<Str<'a>>,
    /// `userIdentity.invokedBy` (AWS service principal), used when there is no ARN.
    pub invoked_by: Option<Str<'a>>,
}

/// One CloudTrail record, borrowing from the log file's bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record<'a> {
    /// `eventTime`, `YYYY-MM-DDTHH:MM:SSZ` (UTC).
    pub event_time: Option<Str<'a>>,
    /// `eventSource`, e.g. `iam.amazonaws.com`.
    pub event_source: Option<Str<'a>>,
    /// `eventName`, e.g. `CreateAccessKey`.
    pub event_name: Option<Str<'a>>,
    /// `awsRegion`.
    pub aws_region: Option<Str<'a>>,
    /// `recipientAccountId`.
    pub recipient_account_id: Option<Str<'a>>,
    /// `eventID` (deduplication key).
    pub event_id: Option<Str<'a>>,
    /// `eventType`, e.g. `AwsApiCall`.
    pub event_type: Option<Str<'a>>,
    /// `eventCategory`: `Management`, `Data`, `Insight`…
    pub event_category: Option<Str<'a>>,
    /// `errorCode`, present only on failed calls.
    pub error_code: Option<Str<'a>>,
    /// `userAgent`.
    pub user_agent: Option<Str<'a>>,
    /// `readOnly`.
    pub read_only: Flag,
    /// `managementEvent`.
    pub management_event: Flag,
    /// `userIdentity`.
    pub user_identity: UserIdentity<'a>,
}

/// A JSON syntax error that stopped a log file, with its byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset} (line {line}, column {column}): {reason}")]
pub struct SyntaxError {
    /// Byte offset in the (inflated) file.
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What serde_json reported.
    pub reason: String,
    /// True when the input ended inside a value (a truncated file).
    pub truncated: bool,
}

/// The outcome of parsing one log file: how many records were delivered and
/// the syntax error that stopped it, if any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParseOutcome {
    /// Records handed to the callback.
    pub records: usize,
    /// The first syntax error. In a `{"Records":[…]}` or array file it stopped
    /// the file (records before it were delivered); in JSON Lines only the bad
    /// line was skipped.
    pub error: Option<SyntaxError>,
    /// Lines skipped for a syntax error (JSON Lines only).
    pub bad_lines: usize,
    /// True when the document held no record array (e.g. a digest file or an unrelated JSON value).
    pub no_records: bool,
}

/// Parses a CloudTrail log file (already inflated) and calls `on_record` for each record, in file order.
///
/// Accepts `{"Records":[…]}` (other top-level keys ignored), a top-level array,
/// or JSON Lines of record objects. Never panics. Returns the number of records
/// and, when the JSON is broken, a [`SyntaxError`] with the byte offset; every
/// record before the break has already been delivered.
pub fn parse_log<'a, F>(bytes: &'a [u8], mut on_record: F) -> ParseOutcome
where
    F: FnMut(Record<'a>),
{
    let mut outcome = ParseOutcome::default();
    let Some(first) = bytes.iter().position(|b| !b.is_ascii_whitespace()) else {
        outcome.no_records = true;
        return outcome;
    };
    let mut count = 0usize;
    match bytes[first] {
        b'[' => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let r = RecordsSeed {
                on_record: &mut on_record,
                count: &mut count,
            }
            .deserialize(&mut de)
            .and_then(|()| de.end());
            if let Err(e) = r {
                outcome.error = Some(syntax_error(bytes, 0, &e));
            }
        }
        b'{' => {
            let mut found = false;
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let r = TopLevelSeed {
                on_record: &mut on_record,
                count: &mut count,
                found: &mut found,
            }
            .deserialize(&mut de)
            .and_then(|()| de.end());
            match r {
                Ok(()) if found => {}
                Err(e) if found => outcome.error = Some(syntax_error(bytes, 0, &e)),
                // No `Records` key: JSON Lines, one record object per line.
                _ => {
                    let mut offset = 0usize;
                    for line in bytes.split(|&b| b == b'\n') {
                        if !line.iter().all(u8::is_ascii_whitespace) {
                            let mut d = serde_json::Deserializer::from_slice(line);
                            let r = RecordSeed {
                                on_record: &mut on_record,
                                count: &mut count,
                            }
                            .deserialize(&mut d)
                            .and_then(|()| d.end());
                            if let Err(e) = r {
                                outcome.bad_lines += 1;
                                if outcome.error.is_none() {
                                    outcome.error = Some(syntax_error(bytes, offset, &e));
                                }
                            }
                        }
                        offset += line.len() + 1;
                    }
                }
            }
        }
        _ => outcome.no_records = true,
    }
    outcome.records = count;
    if count == 0 && outcome.error.is_none() {
        outcome.no_records = true;
    }
    outcome
}

fn syntax_error(bytes: &[u8], base: usize, e: &serde_json::Error) -> SyntaxError {
    // serde_json reports 1-based line and column within the slice it parsed.
    let slice = &bytes[base..];
    let mut offset = 0usize;
    let mut line = 1usize;
    for (i, b) in slice.iter().enumerate() {
        if line == e.line() {
            offset = i;
            break;
        }
        if *b == b'\n' {
            line += 1;
            offset = i + 1;
        }
    }
    let offset = if e.is_eof() && base == 0 {
        bytes.len()
    } else {
        (base + offset + e.column().saturating_sub(1)).min(bytes.len())
    };
    let line_abs = bytes[..base].iter().filter(|&&b| b == b'\n').count() + e.line();
    let msg = e.to_string();
    // Drop serde_json's own " at line L column C" suffix: we report the offset ourselves.
    let reason = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    SyntaxError {
        offset,
        line: line_abs,
        column: e.column(),
        reason,
        truncated: e.is_eof(),
    }
}

struct TopLevelSeed<'f, F> {
    on_record: &'f mut F,
    count: &'f mut usize,
    found: &'f mut bool,
}

impl<'de, F: FnMut(Record<'de>)> DeserializeSeed<'de> for TopLevelSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Record<'de>)> Visitor<'de> for TopLevelSeed<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CloudTrail log file object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Lenient<'de>>()? {
            if key.0.as_deref() == Some("Records") {
                *self.found = true;
                map.next_value_seed(RecordsSeed {
                    on_record: &mut *self.on_record,
                    count: &mut *self.count,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// Deserializes a JSON array of records (or anything else, ignored) and feeds each record to the callback.
struct RecordsSeed<'f, F> {
    on_record: &'f mut F,
    count: &'f mut usize,
}

impl<'de, F: FnMut(Record<'de>)> DeserializeSeed<'de> for RecordsSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Record<'de>)> Visitor<'de> for RecordsSeed<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of CloudTrail records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(RecordSeed {
                on_record: &mut *self.on_record,
                count: &mut *self.count,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// Deserializes one array element: a record object is delivered; any other value is delivered as an empty record
/// (so that it is counted and reported as missing its fields rather than lost silently).
struct RecordSeed<'f, F> {
    on_record: &'f mut F,
    count: &'f mut usize,
}

impl<'de, F: FnMut(Record<'de>)> DeserializeSeed<'de> for RecordSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let record = d.deserialize_any(RecordVisitor)?;
        *self.count += 1;
        (self.on_record)(record);
        Ok(())
    }
}

struct RecordVisitor;

macro_rules! ignore_scalars {
    ($t:ty) => {
        fn visit_unit<E>(self) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_bool<E>(self, _: bool) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_str<E>(self, _: &str) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$t, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Record<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CloudTrail record object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record<'de>, A::Error> {
        let mut r = Record::default();
        while let Some(key) = map.next_key::<Lenient<'de>>()? {
            let Some(key) = key.0 else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            match key.as_ref() {
                "eventTime" => r.event_time = map.next_value::<Lenient<'de>>()?.0,
                "eventSource" => r.event_source = map.next_value::<Lenient<'de>>()?.0,
                "eventName" => r.event_name = map.next_value::<Lenient<'de>>()?.0,
                "awsRegion" => r.aws_region = map.next_value::<Lenient<'de>>()?.0,
                "recipientAccountId" => {
                    r.recipient_account_id = map.next_value::<Lenient<'de>>()?.0
                }
                "eventID" => r.event_id = map.next_value::<Lenient<'de>>()?.0,
                "eventType" => r.event_type = map.next_value::<Lenient<'de>>()?.0,
                "eventCategory" => r.event_category = map.next_value::<Lenient<'de>>()?.0,
                "errorCode" => r.error_code = map.next_value::<Lenient<'de>>()?.0,
                "userAgent" => r.user_agent = map.next_value::<Lenient<'de>>()?.0,
                "readOnly" => r.read_only = map.next_value::<FlagValue>()?.0,
                "managementEvent" => r.management_event = map.next_value::<FlagValue>()?.0,
                "userIdentity" => r.user_identity = map.next_value::<IdentityValue<'de>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }
    ignore_scalars!(Record<'de>);
}

impl<'de> de::Deserialize<'de> for Record<'de> {
    /// Never fails on types: a non-object is an empty record.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RecordVisitor)
    }
}

/// A string that borrows when it can; any other JSON type reads as `None`.
struct Lenient<'a>(Option<Str<'a>>);

impl<'de> de::Deserialize<'de> for Lenient<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor)
    }
}

struct LenientVisitor;

impl<'de> Visitor<'de> for LenientVisitor {
    type Value = Lenient<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Lenient(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Lenient(Some(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Lenient(Some(Cow::Owned(v))))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }
}

/// A boolean as CloudTrail writes it (`true`, or `"true"` from some exporters).
struct FlagValue(Flag);

impl<'de> de::Deserialize<'de> for FlagValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FlagVisitor)
    }
}

struct FlagVisitor;

impl<'de> Visitor<'de> for FlagVisitor {
    type Value = FlagValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean")
    }
    fn visit_bool<E>(self, v: bool) -> Result<FlagValue, E> {
        Ok(FlagValue(if v { Flag::True } else { Flag::False }))
    }
    fn visit_str<E>(self, v: &str) -> Result<FlagValue, E> {
        Ok(FlagValue(if v.eq_ignore_ascii_case("true") {
            Flag::True
        } else if v.eq_ignore_ascii_case("false") {
            Flag::False
        } else {
            Flag::Invalid
        }))
    }
    fn visit_unit<E>(self) -> Result<FlagValue, E> {
        Ok(FlagValue(Flag::Missing))
    }
    fn visit_i64<E>(self, _: i64) -> Result<FlagValue, E> {
        Ok(FlagValue(Flag::Invalid))
    }
    fn visit_u64<E>(self, _: u64) -> Result<FlagValue, E> {
        Ok(FlagValue(Flag::Invalid))
    }
    fn visit_f64<E>(self, _: f64) -> Result<FlagValue, E> {
        Ok(FlagValue(Flag::Invalid))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FlagValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(FlagValue(Flag::Invalid))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FlagValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(FlagValue(Flag::Invalid))
    }
}

#[derive(Default)]
struct IdentityValue<'a>(UserIdentity<'a>);

impl<'de> de::Deserialize<'de> for IdentityValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IdentityVisitor)
    }
}

struct IdentityVisitor;

impl<'de> Visitor<'de> for IdentityVisitor {
    type Value = IdentityValue<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a userIdentity object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = UserIdentity::default();
        while let Some(key) = map.next_key::<Lenient<'de>>()? {
            match key.0.as_deref() {
                Some("arn") => id.arn = map.next_value::<Lenient<'de>>()?.0,
                Some("accountId") => id.account_id = map.next_value::<Lenient<'de>>()?.0,
                Some("invokedBy") => id.invoked_by = map.next_value::<Lenient<'de>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(IdentityValue(id))
    }
    ignore_scalars!(IdentityValue<'de>);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(bytes: &[u8]) -> (Vec<Record<'_>>, ParseOutcome) {
        let mut v = Vec::new();
        let o = parse_log(bytes, |r| v.push(r));
        (v, o)
    }

    #[test]
    fn records_object_with_tolerant_types() {
        let json = br#"{"Records":[
            {"eventTime":"2024-01-01T00:00:05Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser",
             "readOnly":"false","managementEvent":true,"requestParameters":null,"unknownField":{"a":[1,2]},
             "userIdentity":{"arn":"arn:aws:iam::1:user/a","sessionContext":{"attributes":{"mfaAuthenticated":"true"}}},
             "userAgent":"caf\u00e9"},
            {"eventTime":5,"readOnly":7}
        ],"other":1}"#;
        let (v, o) = collect(json);
        assert_eq!(o.records, 2);
        assert!(o.error.is_none());
        assert_eq!(v[0].read_only, Flag::False);
        assert_eq!(v[0].management_event, Flag::True);
        assert_eq!(
            v[0].user_identity.arn.as_deref(),
            Some("arn:aws:iam::1:user/a")
        );
        assert_eq!(v[0].user_agent.as_deref(), Some("café"));
        assert!(matches!(v[0].event_source, Some(Cow::Borrowed(_))));
        assert_eq!(v[1].event_time, None);
        assert_eq!(v[1].read_only, Flag::Invalid);
    }

    #[test]
    fn truncated_file_keeps_earlier_records() {
        let json = br#"{"Records":[{"eventName":"A"},{"eventName":"B"},{"eventNa"#;
        let (v, o) = collect(json);
        assert_eq!(v.len(), 2);
        let e = o.error.expect("error");
        assert!(e.truncated);
        assert_eq!(e.offset, json.len());
    }

    #[test]
    fn json_lines_skip_only_bad_lines() {
        let text = b"{\"eventName\":\"A\"}\n{\"eventName\": oops}\n\n{\"eventName\":\"C\"}\n";
        let (v, o) = collect(text);
        assert_eq!(
            v.iter()
                .map(|r| r.event_name.as_deref().unwrap_or(""))
                .collect::<Vec<_>>(),
            ["A", "C"]
        );
        assert_eq!(o.bad_lines, 1);
        let e = o.error.expect("error");
        assert_eq!(e.line, 2);
        assert_eq!(&text[e.offset..e.offset + 1], b"o");
    }

    #[test]
    fn digest_like_object_has_no_records() {
        let (v, o) = collect(br#"{"awsAccountId":"1","logFiles":[]}"#);
        // A single non-Records object is read as one JSON Lines record with no fields.
        assert_eq!(v.len(), 1);
        assert!(v[0].event_name.is_none());
        assert!(o.error.is_none());
        let (_, o) = collect(b"  ");
        assert!(o.no_records);
        let (_, o) = collect(b"42");
        assert!(o.no_records);
    }

    #[test]
    fn garbage_never_panics() {
        for input in [
            &b"\xff\xfe{"[..],
            b"{\"Records\":",
            b"[[[",
            b"{\"Records\":[1,\"x\",null,[]]}",
            b"}",
        ] {
            let _ = collect(input);
        }
    }
}
