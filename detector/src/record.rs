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
//! A number out of `f64` range (`1e400`) is a number like any other (so a
//! string or boolean field holding one is absent or invalid); invalid UTF-8
//! and lone surrogate escapes (`"\ud83dx"`) read as U+FFFD and are counted;
//! a UTF-8 byte order mark is skipped; documents one after the other (two
//! gzip members) are all read. Only JSON syntax errors stop a file, and every
//! record parsed before the error is kept. Nesting depth costs no stack: the
//! values the parser does not need (e.g. `requestParameters`) are skipped by
//! serde_json without recursion, and the fields it reads are at most four
//! levels deep.

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

impl UserIdentity<'_> {
    /// A copy that owns its strings.
    pub fn into_owned(self) -> UserIdentity<'static> {
        UserIdentity {
            arn: owned(self.arn),
            account_id: owned(self.account_id),
            invoked_by: owned(self.invoked_by),
        }
    }
}

impl Record<'_> {
    /// A copy that owns its strings (to keep a record past [`parse_log`]'s callback).
    pub fn into_owned(self) -> Record<'static> {
        Record {
            event_time: owned(self.event_time),
            event_source: owned(self.event_source),
            event_name: owned(self.event_name),
            aws_region: owned(self.aws_region),
            recipient_account_id: owned(self.recipient_account_id),
            event_id: owned(self.event_id),
            event_type: owned(self.event_type),
            event_category: owned(self.event_category),
            error_code: owned(self.error_code),
            user_agent: owned(self.user_agent),
            read_only: self.read_only,
            management_event: self.management_event,
            user_identity: self.user_identity.into_owned(),
        }
    }
}

fn owned(s: Option<Str<'_>>) -> Option<Str<'static>> {
    s.map(|s| Cow::Owned(s.into_owned()))
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

/// Text repaired so that every good record can be read: counts and where the first repair is.
///
/// Invalid UTF-8 (each maximal invalid sequence) and lone UTF-16 surrogate escapes (`"\ud83dx"`,
/// a trailing `"\udc00"` alone) read as U+FFFD REPLACEMENT CHARACTER, wherever they are; the
/// record holding them is kept with the replaced text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repairs {
    /// Byte offset (in the file as given) of the first repair, when any.
    pub first_offset: Option<usize>,
    /// Invalid UTF-8 sequences replaced.
    pub invalid_utf8: usize,
    /// Lone surrogate escapes replaced (`\udXXX` → `\ufffd`, same 6 bytes).
    pub lone_surrogates: usize,
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
    /// Invalid UTF-8 and lone surrogate escapes read as U+FFFD.
    pub repairs: Repairs,
}

/// The UTF-8 byte order mark, accepted (and skipped) at the start of a file.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Parses a CloudTrail log file (already inflated) and calls `on_record` for each record, in file order.
///
/// Accepts `{"Records":[…]}` (other top-level keys ignored), a top-level array,
/// or JSON Lines of record objects; several such documents one after the other
/// (`cat a.json b.json`, two gzip members) are all read. A UTF-8 byte order mark
/// at the start is skipped. Invalid UTF-8 and lone surrogate escapes read as
/// U+FFFD (counted in [`ParseOutcome::repairs`]); a number out of `f64` range
/// reads as a number (so a field expecting a string or a boolean is absent or
/// invalid). Never panics; work and memory are linear in the input (nesting
/// depth included: nested values the parser does not need are skipped without
/// recursion).
///
/// Returns the number of records and, when the JSON is broken, a
/// [`SyntaxError`] with the byte offset in `bytes`; every record before the
/// break has already been delivered. Records borrow from `bytes` (or from a
/// repaired copy) for the duration of the callback only.
pub fn parse_log<F>(bytes: &[u8], mut on_record: F) -> ParseOutcome
where
    F: FnMut(Record<'_>),
{
    let bom = if bytes.starts_with(BOM) { BOM.len() } else { 0 };
    let body = &bytes[bom..];
    let text = RepairedText::new(body);
    let mut patched = Patched::default();
    let mut outcome = parse_text(&text.text, &mut on_record, &mut patched);
    if let Some(e) = &mut outcome.error {
        e.offset = bom + text.original_offset(e.offset);
        let line_start = bytes[..e.offset]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        e.column = e.offset - line_start + 1;
    }
    let first_patch = patched.first.map(|o| text.original_offset(o));
    let first = match (text.first_repair, first_patch) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    outcome.repairs = Repairs {
        first_offset: first.map(|o| bom + o),
        invalid_utf8: text.invalid_utf8,
        lone_surrogates: patched.lone_surrogates,
    };
    outcome
}

/// A file's text as the JSON parser reads it: valid UTF-8.
struct RepairedText<'a> {
    /// The text: borrowed when nothing needed repair.
    text: Cow<'a, str>,
    /// Where the text's offsets and the input's part (text offset, input offset), ascending;
    /// empty when the text has the input's offsets (no invalid UTF-8).
    segments: Vec<(usize, usize)>,
    /// Offset in the input of the first repair.
    first_repair: Option<usize>,
    invalid_utf8: usize,
}

impl<'a> RepairedText<'a> {
    /// One UTF-8 validation pass (a lossy copy only when it fails). Linear in `bytes`. The JSON
    /// parser then reads `&str` and does not validate UTF-8 string by string.
    fn new(bytes: &'a [u8]) -> Self {
        let mut out = RepairedText {
            text: Cow::Borrowed(""),
            segments: Vec::new(),
            first_repair: None,
            invalid_utf8: 0,
        };
        out.text = match std::str::from_utf8(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(e) => {
                out.first_repair = Some(e.valid_up_to());
                Cow::Owned(out.lossy(bytes))
            }
        };
        out
    }

    /// `bytes` with each maximal invalid UTF-8 sequence replaced by U+FFFD; records the offset map.
    fn lossy(&mut self, bytes: &[u8]) -> String {
        let mut s = String::with_capacity(bytes.len() + 16);
        let mut input = 0usize;
        for chunk in bytes.utf8_chunks() {
            s.push_str(chunk.valid());
            input += chunk.valid().len();
            let bad = chunk.invalid().len();
            if bad > 0 {
                // The replacement spans text [s.len(), s.len() + 3) for input [input, input + bad).
                self.segments.push((s.len(), input));
                s.push('\u{fffd}');
                input += bad;
                self.segments.push((s.len(), input));
                self.invalid_utf8 += 1;
            }
        }
        s
    }

    /// The input offset of text offset `offset` (a replacement character maps into the bytes it replaced).
    fn original_offset(&self, offset: usize) -> usize {
        let i = self.segments.partition_point(|&(t, _)| t <= offset);
        let Some(&(t, o)) = i.checked_sub(1).and_then(|i| self.segments.get(i)) else {
            return offset;
        };
        let mapped = o + (offset - t);
        match self.segments.get(i) {
            Some(&(_, next)) => mapped.min(next.saturating_sub(1).max(o)),
            None => mapped,
        }
    }
}

/// Parses repaired text; offsets in the outcome are text offsets.
fn parse_text<F>(text: &str, on_record: &mut F, patched: &mut Patched) -> ParseOutcome
where
    F: FnMut(Record<'_>),
{
    let mut outcome = ParseOutcome::default();
    let bytes = text.as_bytes();
    let Some(first) = bytes.iter().position(|b| !b.is_ascii_whitespace()) else {
        outcome.no_records = true;
        return outcome;
    };
    let mut count = 0usize;
    match bytes[first] {
        b'[' | b'{' => {
            // One document, or several one after the other (concatenated files or gzip members).
            let mut base = 0usize;
            loop {
                let doc = &text[base..];
                let mut doc_patched = Patched::default();
                let (r, found) = with_repairs(
                    doc,
                    base,
                    on_record,
                    &mut count,
                    &mut doc_patched,
                    |d, f, c| parse_document(d, f, c),
                );
                if found || base > 0 {
                    patched.add(doc_patched);
                }
                match r {
                    Ok(()) if found || base > 0 => break,
                    Err(Failure::Trailing(e)) if found || base > 0 => {
                        // Another document follows, or garbage.
                        let next = error_offset(bytes, base, &e);
                        if matches!(bytes.get(next), Some(b'{' | b'[')) && next > base {
                            base = next;
                            continue;
                        }
                        outcome.error = Some(syntax_error(bytes, base, &e));
                        break;
                    }
                    Err(Failure::Value(e)) if found || base > 0 => {
                        let mut err = syntax_error(bytes, base, &e);
                        if err.truncated {
                            // The document runs to the end of the text.
                            err.offset = bytes.len();
                        }
                        outcome.error = Some(err);
                        break;
                    }
                    // No `Records` key: JSON Lines, one record object per line.
                    _ => {
                        parse_lines(text, on_record, &mut count, &mut outcome, patched);
                        break;
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

/// Why a document did not parse: an error inside its value, or text after it.
enum Failure {
    Value(serde_json::Error),
    Trailing(serde_json::Error),
}

impl Failure {
    fn error(&self) -> &serde_json::Error {
        match self {
            Failure::Value(e) | Failure::Trailing(e) => e,
        }
    }
}

/// Parses one document at the start of `doc`: a record array, or an object (with a `Records`
/// array, or not). Returns the outcome and whether it held a record array.
fn parse_document<F>(doc: &str, on_record: &mut F, count: &mut usize) -> (Result<(), Failure>, bool)
where
    F: FnMut(Record<'_>) + ?Sized,
{
    let mut de = serde_json::Deserializer::from_str(doc);
    let mut found = false;
    let r = if doc.trim_start().starts_with('[') {
        found = true;
        RecordsSeed { on_record, count }.deserialize(&mut de)
    } else {
        TopLevelSeed {
            on_record,
            count,
            found: &mut found,
        }
        .deserialize(&mut de)
    };
    let r = r
        .map_err(Failure::Value)
        .and_then(|()| de.end().map_err(Failure::Trailing));
    (r, found)
}

/// Lone surrogate escapes replaced while parsing: how many, and the text offset of the first.
#[derive(Debug, Default, Clone, Copy)]
struct Patched {
    lone_surrogates: usize,
    first: Option<usize>,
}

impl Patched {
    fn add(&mut self, other: Patched) {
        self.lone_surrogates += other.lone_surrogates;
        self.first = match (self.first, other.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Runs `parse` on `text` (which starts at text offset `base`). When serde_json stops at a
/// value it cannot represent, a number out of `f64` range (`1e400`) or a lone surrogate escape
/// (`"\ud83dx"`), runs it once more on a copy of the same length where every such number
/// reads `0` (padded with spaces) and every lone surrogate escape reads `\ufffd`, skipping the
/// records the first run already delivered. Each text is read at most twice, so the work stays
/// linear, and text without such values costs nothing extra.
fn with_repairs<F, P, T>(
    text: &str,
    base: usize,
    on_record: &mut F,
    count: &mut usize,
    patched: &mut Patched,
    parse: P,
) -> (Result<(), Failure>, T)
where
    F: FnMut(Record<'_>),
    P: Fn(&str, &mut dyn FnMut(Record<'_>), &mut usize) -> (Result<(), Failure>, T),
{
    let before = *count;
    let first = parse(text, &mut *on_record, count);
    let repairable = matches!(&first.0, Err(f) if {
        let m = f.error().to_string();
        m.starts_with("number out of range")
            || m.starts_with("lone leading surrogate in hex escape")
            || m.starts_with("unexpected end of hex escape")
    });
    if !repairable {
        return first;
    }
    let zeroed = zero_huge_numbers(text);
    let lone = lone_surrogate_escapes(text);
    if zeroed.is_none() && lone.is_empty() {
        return first;
    }
    let mut copy = zeroed.unwrap_or_else(|| text.to_string());
    for &p in &lone {
        copy.replace_range(p..p + 6, "\\ufffd");
    }
    patched.add(Patched {
        lone_surrogates: lone.len(),
        first: lone.first().map(|p| base + p),
    });
    let mut skip = *count - before;
    *count = before;
    let mut deliver = |r: Record<'_>| {
        if skip > 0 {
            skip -= 1;
        } else {
            on_record(r);
        }
    };
    parse(&copy, &mut deliver, count)
}

/// Offsets of the `\uD800`–`\uDFFF` escapes in `text` that are not half of a lead-trail pair.
/// A backslash preceded by an odd run of backslashes is escaped itself, not an escape. Linear.
fn lone_surrogate_escapes(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let hex4 = |at: usize| -> Option<u16> {
        let h = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
        u16::from_str_radix(h, 16).ok()
    };
    let mut lone = Vec::new();
    let mut skip_to = 0usize;
    for p in memchr::memmem::find_iter(b, b"\\u") {
        if p < skip_to {
            continue;
        }
        let run = b[..p].iter().rev().take_while(|&&c| c == b'\\').count();
        if run % 2 == 1 {
            continue;
        }
        let Some(n) = hex4(p + 2) else { continue };
        match n {
            0xD800..=0xDBFF => {
                let paired = b.get(p + 6..p + 8) == Some(b"\\u")
                    && hex4(p + 8).is_some_and(|m| (0xDC00..=0xDFFF).contains(&m));
                if paired {
                    skip_to = p + 12;
                } else {
                    lone.push(p);
                }
            }
            0xDC00..=0xDFFF => lone.push(p),
            _ => skip_to = p + 6,
        }
    }
    lone
}

/// `text` with every JSON number outside strings whose magnitude is at least 1e300 (or beyond
/// `f64`) replaced by `0` and spaces; `None` when there is none. One pass, string-aware.
fn zero_huge_numbers(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let huge = text
                    .get(start..i)
                    .and_then(|t| t.parse::<f64>().ok())
                    .is_some_and(|v| v.abs() >= 1e300);
                if huge {
                    let o = out.get_or_insert_with(|| b.to_vec());
                    o[start] = b'0';
                    o[start + 1..i].fill(b' ');
                }
            }
            _ => i += 1,
        }
    }
    // Only ASCII bytes were replaced by ASCII bytes.
    out.and_then(|o| String::from_utf8(o).ok())
}

/// JSON Lines: each non-blank line one record; a bad line is counted and skipped.
fn parse_lines<F>(
    text: &str,
    on_record: &mut F,
    count: &mut usize,
    outcome: &mut ParseOutcome,
    patched: &mut Patched,
) where
    F: FnMut(Record<'_>),
{
    let mut offset = 0usize;
    for line in text.split('\n') {
        if !line.bytes().all(|b| b.is_ascii_whitespace()) {
            let (r, ()) = with_repairs(line, offset, on_record, count, patched, |l, f, c| {
                let mut d = serde_json::Deserializer::from_str(l);
                let r = RecordSeed {
                    on_record: f,
                    count: c,
                }
                .deserialize(&mut d)
                .map_err(Failure::Value)
                .and_then(|()| d.end().map_err(Failure::Trailing));
                (r, ())
            });
            if let Err(f) = r {
                outcome.bad_lines += 1;
                if outcome.error.is_none() {
                    outcome.error = Some(syntax_error(text.as_bytes(), offset, f.error()));
                }
            }
        }
        offset += line.len() + 1;
    }
}

/// A serde_json error as a [`SyntaxError`] in `bytes`, for an error in the slice starting at `base`.
fn syntax_error(bytes: &[u8], base: usize, e: &serde_json::Error) -> SyntaxError {
    let offset = error_offset(bytes, base, e);
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

/// The byte offset in `bytes` of a serde_json error in the slice starting at `base`; linear in
/// the error's distance from `base`.
fn error_offset(bytes: &[u8], base: usize, e: &serde_json::Error) -> usize {
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
    if e.is_eof() && base == 0 {
        bytes.len()
    } else {
        (base + offset + e.column().saturating_sub(1)).min(bytes.len())
    }
}

struct TopLevelSeed<'f, F: ?Sized> {
    on_record: &'f mut F,
    count: &'f mut usize,
    found: &'f mut bool,
}

impl<'de, F: FnMut(Record<'de>) + ?Sized> DeserializeSeed<'de> for TopLevelSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Record<'de>) + ?Sized> Visitor<'de> for TopLevelSeed<'_, F> {
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
struct RecordsSeed<'f, F: ?Sized> {
    on_record: &'f mut F,
    count: &'f mut usize,
}

impl<'de, F: FnMut(Record<'de>) + ?Sized> DeserializeSeed<'de> for RecordsSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Record<'de>) + ?Sized> Visitor<'de> for RecordsSeed<'_, F> {
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
struct RecordSeed<'f, F: ?Sized> {
    on_record: &'f mut F,
    count: &'f mut usize,
}

impl<'de, F: FnMut(Record<'de>) + ?Sized> DeserializeSeed<'de> for RecordSeed<'_, F> {
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

    fn collect(bytes: &[u8]) -> (Vec<Record<'static>>, ParseOutcome) {
        let mut v = Vec::new();
        let o = parse_log(bytes, |r| v.push(r.into_owned()));
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
        let mut borrowed = 0;
        parse_log(json, |r| {
            borrowed += usize::from(matches!(r.event_source, Some(Cow::Borrowed(_))))
        });
        assert_eq!(borrowed, 1);
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

    fn names(v: &[Record<'_>]) -> Vec<String> {
        v.iter()
            .map(|r| r.event_name.as_deref().unwrap_or("-").to_string())
            .collect()
    }

    #[test]
    fn out_of_range_numbers_read_as_absent_and_parsing_continues() {
        let json = br#"{"Records":[
            {"eventName":"A","eventTime":1e400},
            {"eventName":"B","readOnly":1e400,"managementEvent":-1e999},
            {"eventName":"C","userAgent":-1e999,"awsRegion":123456789012345678901234567890e300},
            {"eventName":"D","userIdentity":{"arn":1e400,"accountId":"1"}},
            1e400,
            {"eventName":"E","eventTime":"2024-01-01T00:00:00Z","requestParameters":{"n":1e400}}
        ]}"#;
        let (v, o) = collect(json);
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_eq!(names(&v), ["A", "B", "C", "D", "-", "E"]);
        assert_eq!(v[0].event_time, None);
        assert_eq!(v[1].read_only, Flag::Invalid);
        assert_eq!(v[1].management_event, Flag::Invalid);
        assert_eq!(v[2].user_agent, None);
        assert_eq!(v[2].aws_region, None);
        assert_eq!(v[3].user_identity.arn, None);
        assert_eq!(v[3].user_identity.account_id.as_deref(), Some("1"));
        assert_eq!(v[5].event_time.as_deref(), Some("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn out_of_range_numbers_in_json_lines_and_strings() {
        let text = b"{\"eventName\":\"A\",\"eventTime\":1e400}\n{\"eventName\":\"B\",\"userAgent\":\"1e400 \\\" -1e999\",\"readOnly\":-1e999}\n";
        let (v, o) = collect(text);
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_eq!(names(&v), ["A", "B"]);
        assert_eq!(v[1].user_agent.as_deref(), Some("1e400 \" -1e999"));
        assert_eq!(v[1].read_only, Flag::Invalid);
        // Many of them: each document is read at most twice.
        let n = 50_000;
        let json = format!(
            "[{}]",
            vec![r#"{"eventName":"X","eventTime":1e400,"readOnly":1e999}"#; n].join(",")
        );
        let (v, o) = collect(json.as_bytes());
        assert!(o.error.is_none());
        assert_eq!(v.len(), n);
    }

    #[test]
    fn lone_surrogate_escapes_read_as_replacement_characters() {
        let json = br#"[
            {"eventName":"A","userAgent":"\ud83dx"},
            {"eventName":"B","userAgent":"a\udc00"},
            {"eventName":"C","\ud800":1,"eventSource":"\udbff"},
            {"eventName":"D","userAgent":"\ud83d\ude00 \\ud800 \ud83d\ud83d\ude00"},
            {"eventName":"E","userIdentity":{"arn":"\ud800\u0041"}},
            {"eventName":"F","userAgent":"\ud83d"}
        ]"#;
        let (v, o) = collect(json);
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_eq!(names(&v), ["A", "B", "C", "D", "E", "F"]);
        assert_eq!(v[0].user_agent.as_deref(), Some("\u{fffd}x"));
        assert_eq!(v[1].user_agent.as_deref(), Some("a\u{fffd}"));
        assert_eq!(v[2].event_source.as_deref(), Some("\u{fffd}"));
        // A valid pair is kept, an escaped backslash is not an escape, a lone lead before a pair is replaced.
        assert_eq!(
            v[3].user_agent.as_deref(),
            Some("\u{1f600} \\ud800 \u{fffd}\u{1f600}")
        );
        assert_eq!(v[4].user_identity.arn.as_deref(), Some("\u{fffd}A"));
        assert_eq!(v[5].user_agent.as_deref(), Some("\u{fffd}"));
    }

    #[test]
    fn invalid_utf8_reads_as_replacement_characters() {
        let json = b"{\"Records\":[{\"eventName\":\"A\",\"userAgent\":\"a\xffb\xc3\"},{\"eventName\":\"B\xed\xa0\x80\"},{\"eventName\":\"C\"}]}";
        let (v, o) = collect(json);
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].user_agent.as_deref(), Some("a\u{fffd}b\u{fffd}"));
        assert_eq!(
            v[1].event_name.as_deref(),
            Some("B\u{fffd}\u{fffd}\u{fffd}")
        );
        assert_eq!(v[2].event_name.as_deref(), Some("C"));
    }

    #[test]
    fn error_offsets_count_the_original_bytes_after_a_repair() {
        // Each \xff becomes a 3-byte U+FFFD in the repaired text; the offset reported is in the file as read.
        let json = b"{\"eventName\":\"\xff\xff\"}\n{\"eventName\":\"\xff\", oops}\n";
        let (v, o) = collect(json);
        assert_eq!(v.len(), 1);
        let e = o.error.expect("error");
        assert_eq!(e.line, 2);
        assert_eq!(&json[e.offset..e.offset + 4], b"oops", "{e}");
        assert_eq!(e.column, 19, "{e}");
        let json = b"[{\"eventName\":\"\xff\"},{\"eventName\":\"\xff\"} x]";
        let (v, o) = collect(json);
        assert_eq!(v.len(), 2);
        let e = o.error.expect("error");
        assert_eq!(json[e.offset], b'x', "{e}");
    }

    #[test]
    fn utf8_bom_is_accepted() {
        for json in [
            &b"\xef\xbb\xbf{\"Records\":[{\"eventName\":\"A\"}]}"[..],
            b"\xef\xbb\xbf[{\"eventName\":\"A\"}]",
            b"\xef\xbb\xbf{\"eventName\":\"A\"}\n",
            b"\xef\xbb\xbf  \n{\"Records\":[{\"eventName\":\"A\"}]}",
        ] {
            let (v, o) = collect(json);
            assert!(o.error.is_none() && !o.no_records, "{o:?}");
            assert_eq!(names(&v), ["A"]);
        }
        // Offsets still count the BOM.
        let json = b"\xef\xbb\xbf[{\"eventName\":\"A\"} x]";
        let (_, o) = collect(json);
        assert_eq!(json[o.error.expect("error").offset], b'x');
    }

    #[test]
    fn concatenated_documents_are_all_read() {
        for json in [
            &br#"{"Records":[{"eventName":"A"}]}{"Records":[{"eventName":"B"}]}"#[..],
            br#"{"Records":[{"eventName":"A"}]}
{"Records":[{"eventName":"B"}]}
"#,
            br#"[{"eventName":"A"}] [{"eventName":"B"}]"#,
        ] {
            let (v, o) = collect(json);
            assert!(o.error.is_none(), "{o:?}");
            assert_eq!(names(&v), ["A", "B"]);
        }
        // Garbage after the first document is still an error at its offset, the first document kept.
        let json = br#"{"Records":[{"eventName":"A"}]} x"#;
        let (v, o) = collect(json);
        assert_eq!(names(&v), ["A"]);
        assert_eq!(json[o.error.expect("error").offset], b'x');
    }

    #[test]
    fn many_concatenated_documents_take_linear_time() {
        // 100k documents of one record each; an offset computed from the file start per
        // document would scan ~10^10 bytes.
        let n = 100_000;
        let json = format!("{}\n{}", "[{}]".repeat(n), "{\"Records\":[{}]}".repeat(n));
        let start = std::time::Instant::now();
        let (v, o) = collect(json.as_bytes());
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_eq!(v.len(), 2 * n);
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn deep_nesting_neither_overflows_the_stack_nor_drops_records() {
        let deep = 200_000;
        let obj = format!("{}1{}", r#"{"a":"#.repeat(deep), "}".repeat(deep));
        let arr = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
        let json = format!(
            r#"{{"Records":[{{"eventName":"A"}},{{"eventName":"B","requestParameters":{obj}}},{{"eventName":"C","userAgent":{arr}}},{{"eventName":"D","userIdentity":{{"arn":{obj}}}}},{arr},{{"eventName":"E"}}]}}"#
        );
        let (v, o) = collect(json.as_bytes());
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_eq!(names(&v), ["A", "B", "C", "D", "-", "E"]);
        assert_eq!(v[2].user_agent, None);
        // An unclosed nest is a truncated file: the records before it are kept.
        let json = format!(
            r#"[{{"eventName":"A"}},{{"eventName":"B","requestParameters":{}"#,
            "[".repeat(deep)
        );
        let (v, o) = collect(json.as_bytes());
        assert_eq!(names(&v), ["A"]);
        assert!(o.error.expect("error").truncated);
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
