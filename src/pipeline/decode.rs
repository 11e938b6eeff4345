//! Decoding one log file: gzip inflate (when gzip) and tolerant parse into a [`FileBatch`].
//!
//! CPU-bound and synchronous: callers run it off the async runtime
//! (`tokio::task::spawn_blocking`). A broken file never loses the records
//! before the break: a truncated gzip stream is parsed as far as it inflated,
//! and a JSON syntax error keeps every record before it. Bad values never
//! break a file: invalid UTF-8 and lone surrogate escapes read as U+FFFD
//! (reported as [`DecodeError::Repaired`], records kept), a number out of
//! range reads as a number (the field is absent for detection), and a UTF-8
//! byte order mark is skipped. A gzip file of several members (`cat a.gz b.gz`)
//! is read whole, each member's document in turn.

use std::io::Read;

use trailsight_detector::record::{SyntaxError, parse_log};
use trailsight_detector::{BatchBuilder, FileBatch, TimeBounds};

/// Largest inflated size read from one gzip file: 1 GiB. A larger file is cut there: the
/// records inflated before the cut are counted and [`DecodeError::TooLarge`] is reported.
/// CloudTrail delivers a log file at least every 5 minutes per account and Region, so real
/// files inflate to tens of MB; this bounds the memory one hostile file (a gzip bomb) takes.
pub const MAX_INFLATED_BYTES: usize = 1 << 30;

/// Why a file (or its tail) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The gzip stream is corrupt or truncated at compressed byte `offset`; records inflated before it were kept.
    #[error("gzip error after {inflated} inflated bytes (compressed offset {offset}): {reason}")]
    Gzip {
        /// Compressed bytes consumed when the error occurred.
        offset: u64,
        /// Inflated bytes obtained before the error.
        inflated: usize,
        /// The decoder's message.
        reason: String,
    },
    /// The JSON is broken; records before `offset` were kept.
    #[error("{0}")]
    Json(SyntaxError),
    /// The file holds no CloudTrail records (not a record array, `Records` object or JSON Lines).
    #[error("not a CloudTrail log file: no records found")]
    NoRecords,
    /// Invalid UTF-8 or lone surrogate escapes were read as U+FFFD; every record was kept.
    #[error(
        "text repaired from byte {offset}: {invalid_utf8} invalid UTF-8 sequence(s) and {lone_surrogates} lone surrogate escape(s) read as U+FFFD"
    )]
    Repaired {
        /// Inflated byte offset of the first repair.
        offset: usize,
        /// Invalid UTF-8 sequences replaced.
        invalid_utf8: usize,
        /// Lone `\uD800`–`\uDFFF` escapes replaced.
        lone_surrogates: usize,
    },
    /// The inflated file exceeds [`MAX_INFLATED_BYTES`]; the tail was not read.
    #[error("file inflates beyond {limit} bytes; the rest was not read")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// A decoded file: its batch and the problems found (at most one gzip and one JSON error).
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Counted events and counters.
    pub batch: FileBatch,
    /// Inflated bytes.
    pub inflated_bytes: usize,
    /// Problems; the batch holds every record read before them.
    pub errors: Vec<DecodeError>,
}

/// True when `bytes` start with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Inflates a gzip member sequence. Returns what inflated (at most [`MAX_INFLATED_BYTES`]) and
/// the error that stopped it, if any.
pub fn inflate(bytes: &[u8]) -> (Vec<u8>, Option<DecodeError>) {
    inflate_capped(bytes, MAX_INFLATED_BYTES)
}

/// [`inflate`] with a cap of `limit` inflated bytes.
fn inflate_capped(bytes: &[u8], limit: usize) -> (Vec<u8>, Option<DecodeError>) {
    // The gzip trailer's ISIZE (inflated size mod 2^32) is a good capacity hint; it is
    // untrusted, so the hint is at most 256 MiB (the vector grows past it as needed).
    let hint = bytes
        .len()
        .checked_sub(4)
        .and_then(|i| bytes.get(i..))
        .map_or(0, |t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize)
        .max(bytes.len())
        .min(256 << 20)
        .min(limit);
    let mut out = Vec::with_capacity(hint);
    let mut reader = flate2::bufread::MultiGzDecoder::new(bytes).take(limit as u64 + 1);
    // `read_to_end` keeps every byte inflated before an error.
    if let Err(e) = reader.read_to_end(&mut out) {
        let offset = bytes.len() as u64 - reader.get_ref().get_ref().len() as u64;
        let inflated = out.len();
        return (
            out,
            Some(DecodeError::Gzip {
                offset,
                inflated,
                reason: e.to_string(),
            }),
        );
    }
    if out.len() > limit {
        out.truncate(limit);
        return (out, Some(DecodeError::TooLarge { limit }));
    }
    (out, None)
}

/// Decodes one file's bytes (gzip or plain JSON, detected from the content, not the name).
/// Records whose `eventTime` is outside `bounds` are counted and skipped (see [`TimeBounds`]).
pub fn decode(bytes: &[u8], bounds: TimeBounds) -> Decoded {
    let mut errors = Vec::new();
    let inflated;
    let json: &[u8] = if is_gzip(bytes) {
        let (out, err) = inflate(bytes);
        errors.extend(err);
        inflated = out;
        &inflated
    } else {
        bytes
    };
    let mut builder = BatchBuilder::with_bounds(bounds);
    let outcome = parse_log(json, |r| builder.push(&r));
    // A JSON error at the very end of a truncated gzip stream is the same break: report the gzip one only.
    let gzip_cut = matches!(
        errors.first(),
        Some(DecodeError::Gzip { .. } | DecodeError::TooLarge { .. })
    );
    match outcome.error {
        Some(e) if !(gzip_cut && e.truncated) => errors.push(DecodeError::Json(e)),
        _ => {}
    }
    if outcome.no_records && errors.is_empty() {
        errors.push(DecodeError::NoRecords);
    }
    let r = outcome.repairs;
    if let Some(offset) = r.first_offset {
        errors.push(DecodeError::Repaired {
            offset,
            invalid_utf8: r.invalid_utf8,
            lone_surrogates: r.lone_surrogates,
        });
    }
    Decoded {
        batch: builder.finish(),
        inflated_bytes: json.len(),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const TWO: &str = r#"{"Records":[{"eventTime":"2024-01-01T00:00:00Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","awsRegion":"us-east-1","recipientAccountId":"111122223333","managementEvent":true,"readOnly":false},{"eventTime":"2024-01-01T00:00:00Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","awsRegion":"us-east-1","recipientAccountId":"111122223333","managementEvent":true,"readOnly":false}]}"#;

    #[test]
    fn gzip_and_plain_give_the_same_batch() {
        let a = decode(&gz(TWO.as_bytes()), TimeBounds::UNBOUNDED);
        let b = decode(TWO.as_bytes(), TimeBounds::UNBOUNDED);
        assert!(a.errors.is_empty() && b.errors.is_empty());
        assert_eq!(a.batch.events, b.batch.events);
        assert_eq!(a.batch.events.len(), 2);
    }

    #[test]
    fn truncated_gzip_keeps_the_first_records() {
        let big: String = format!(
            "{{\"Records\":[{}]}}",
            (0..2000)
                .map(|i| format!(r#"{{"eventTime":"2024-01-01T00:00:00Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","awsRegion":"us-east-1","recipientAccountId":"111122223333","managementEvent":true,"readOnly":false,"eventID":"id-{i}","requestParameters":{{"n":{i}}}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let z = gz(big.as_bytes());
        let cut = &z[..z.len() / 2];
        let d = decode(cut, TimeBounds::UNBOUNDED);
        assert!(
            matches!(d.errors.as_slice(), [DecodeError::Gzip { .. }]),
            "{:?}",
            d.errors
        );
        assert!(
            d.batch.events.len() > 100 && d.batch.events.len() < 2000,
            "{}",
            d.batch.events.len()
        );
    }

    fn record(name: &str) -> String {
        format!(
            r#"{{"eventTime":"2024-01-01T00:00:00Z","eventSource":"iam.amazonaws.com","eventName":"{name}","awsRegion":"us-east-1","recipientAccountId":"111122223333","managementEvent":true,"readOnly":false}}"#
        )
    }

    #[test]
    fn concatenated_gzip_members_are_read_whole() {
        // `cat a.json.gz b.json.gz`: a valid gzip file of two members, each a whole log file.
        let a = format!(r#"{{"Records":[{}]}}"#, record("A"));
        let b = format!(r#"{{"Records":[{},{}]}}"#, record("B"), record("C"));
        let mut file = gz(a.as_bytes());
        file.extend(gz(b.as_bytes()));
        let d = decode(&file, TimeBounds::UNBOUNDED);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(d.batch.events.len(), 3);
        assert_eq!(d.inflated_bytes, a.len() + b.len());
        // JSON Lines members and top-level arrays too.
        let mut file = gz(format!("{}\n", record("A")).as_bytes());
        file.extend(gz(format!("{}\n", record("B")).as_bytes()));
        assert_eq!(decode(&file, TimeBounds::UNBOUNDED).batch.events.len(), 2);
        let mut file = gz(format!("[{}]", record("A")).as_bytes());
        file.extend(gz(format!("[{}]", record("B")).as_bytes()));
        let d = decode(&file, TimeBounds::UNBOUNDED);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(d.batch.events.len(), 2);
    }

    #[test]
    fn utf8_bom_is_accepted_plain_and_gzip() {
        let text = format!("\u{feff}{{\"Records\":[{}]}}", record("A"));
        for bytes in [text.as_bytes().to_vec(), gz(text.as_bytes())] {
            let d = decode(&bytes, TimeBounds::UNBOUNDED);
            assert!(d.errors.is_empty(), "{:?}", d.errors);
            assert_eq!(d.batch.events.len(), 1);
        }
    }

    #[test]
    fn bad_values_keep_the_rest_of_the_file() {
        // Each of these used to stop the file at the bad value.
        for bad in [
            &br#""eventTime":1e400"#[..],
            br#""readOnly":1e400"#,
            br#""userAgent":-1e999"#,
            br#""userAgent":"\ud83dx""#,
            br#""userAgent":"\udc00""#,
            b"\"userAgent\":\"\xff\"",
        ] {
            let mut file = format!(r#"{{"Records":[{},{{"#, record("A")).into_bytes();
            file.extend_from_slice(bad);
            file.extend_from_slice(format!(r#","eventName":"X"}},{}]}}"#, record("B")).as_bytes());
            let d = decode(&file, TimeBounds::UNBOUNDED);
            let text = String::from_utf8_lossy(bad);
            assert!(
                !d.errors.iter().any(|e| matches!(e, DecodeError::Json(_))),
                "{text}: {:?}",
                d.errors
            );
            assert_eq!(d.batch.stats.records, 3, "{text}");
            // A and B are counted whatever happens to the record in the middle.
            assert!(d.batch.events.len() >= 2, "{text}");
        }
    }

    #[test]
    fn repaired_text_is_reported_with_its_first_offset() {
        let file = format!(
            "[{},{{\"eventName\":\"A\",\"userAgent\":\"\\ud800 \u{0}\"}}]",
            record("A")
        )
        .into_bytes();
        let at = file.windows(6).position(|w| w == br"\ud800").unwrap();
        let mut file2 = file.clone();
        file2.extend_from_slice(b"\n");
        let i = file2.iter().position(|&b| b == 0).unwrap();
        file2[i] = 0xff;
        let d = decode(&file2, TimeBounds::UNBOUNDED);
        assert_eq!(d.batch.stats.records, 2);
        assert_eq!(
            d.errors,
            vec![DecodeError::Repaired {
                offset: at,
                invalid_utf8: 1,
                lone_surrogates: 1
            }]
        );
    }

    #[test]
    fn inflated_size_is_capped_at_1_gib() {
        assert_eq!(MAX_INFLATED_BYTES, 1 << 30);
        let text = format!("[{},{}]", record("A"), record("B"));
        let cut = text.find("},{").unwrap() + 2;
        let (out, err) = inflate_capped(&gz(text.as_bytes()), cut);
        assert_eq!(out.len(), cut);
        assert_eq!(err, Some(DecodeError::TooLarge { limit: cut }));
    }

    #[test]
    fn gzip_file_larger_than_the_capacity_hint_is_an_error_not_a_panic() {
        // `clamp(len, 256 MiB)` panicked for a compressed file over 256 MiB.
        let mut bytes = vec![0u8; (256 << 20) + 1];
        bytes[..3].copy_from_slice(&[0x1f, 0x8b, 0x08]);
        let d = decode(&bytes, TimeBounds::UNBOUNDED);
        assert!(
            matches!(d.errors.as_slice(), [DecodeError::Gzip { .. }]),
            "{:?}",
            d.errors
        );
    }

    #[test]
    fn not_json_is_reported() {
        let d = decode(b"PK\x03\x04 zip file", TimeBounds::UNBOUNDED);
        assert_eq!(d.errors, vec![DecodeError::NoRecords]);
        let d = decode(&gz(b"hello"), TimeBounds::UNBOUNDED);
        assert_eq!(d.errors, vec![DecodeError::NoRecords]);
        let d = decode(&[0x1f, 0x8b, 0x08, 0, 0, 0], TimeBounds::UNBOUNDED);
        assert!(
            matches!(d.errors.as_slice(), [DecodeError::Gzip { .. }]),
            "{:?}",
            d.errors
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;
    use trailsight_detector::record::parse_log;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A JSON string value (quoted and escaped).
    fn json_str(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    prop_compose! {
        /// One record; the caller gives its `eventName` so records can be told apart.
        fn record_fields()(
            minute in 0u32..30,
            source in prop::sample::select(vec!["iam.amazonaws.com", "s3.amazonaws.com", "ec2.amazonaws.com"]),
            read_only in prop::sample::select(vec!["true", "false", "\"true\"", "null", "1e400"]),
            agent in "[ -~\u{e9}\u{1f600}]{0,12}",
            error in prop::option::of("[A-Za-z]{1,8}"),
            params in prop::sample::select(vec!["null", "{\"a\":[1,2,{\"b\":\"\\u00e9\"}]}", "[]", "-1e999"]),
        ) -> String {
            let error = error.map(|e| format!(",\"errorCode\":{}", json_str(&e))).unwrap_or_default();
            format!(
                "\"eventTime\":\"2024-01-01T00:{minute:02}:00Z\",\"eventSource\":\"{source}\",\"awsRegion\":\"us-east-1\",\"recipientAccountId\":\"111122223333\",\"managementEvent\":true,\"readOnly\":{read_only},\"userAgent\":{},\"requestParameters\":{params}{error}",
                json_str(&agent)
            )
        }
    }

    /// A log file of `records` in one of the three containers; returns it and each record's end offset.
    fn file(records: &[String], container: u8) -> (String, Vec<usize>) {
        let (open, sep, close) = match container {
            0 => ("{\"Records\":[", ",", "]}"),
            1 => ("[", ",\n", "]"),
            _ => ("", "\n", "\n"),
        };
        let mut text = String::from(open);
        let mut ends = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                text.push_str(sep);
            }
            text.push_str(&format!("{{\"eventName\":\"r{i}\",{r}}}"));
            ends.push(text.len());
        }
        text.push_str(close);
        (text, ends)
    }

    fn names(bytes: &[u8]) -> Vec<String> {
        let mut v = Vec::new();
        parse_log(bytes, |r| {
            v.push(r.event_name.as_deref().unwrap_or("-").to_string())
        });
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_decode_returns_normally(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, TimeBounds::UNBOUNDED);
            // The same bytes behind a JSON prefix, and behind a gzip header.
            let mut json = b"{\"Records\":[{\"eventName\":".to_vec();
            json.extend_from_slice(&bytes);
            let _ = decode(&json, TimeBounds::UNBOUNDED);
            let mut z = vec![0x1f, 0x8b, 0x08, 0x00];
            z.extend_from_slice(&bytes);
            let _ = decode(&z, TimeBounds::UNBOUNDED);
        }

        #[test]
        fn one_corrupt_byte_keeps_every_record_before_it(
            records in prop::collection::vec(record_fields(), 1..8),
            container in 0u8..3,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let (text, ends) = file(&records, container);
            let mut bytes = text.into_bytes();
            let k = at.index(bytes.len());
            prop_assume!(bytes[k] != byte);
            bytes[k] = byte;
            let kept = ends.iter().filter(|&&e| e <= k).count();
            let got = names(&bytes);
            let want: Vec<String> = (0..kept).map(|i| format!("r{i}")).collect();
            prop_assert!(got.len() >= kept, "{got:?} at {k}");
            prop_assert_eq!(&got[..kept], &want[..]);
            // Through the file decoder too, plain and gzip.
            let d = decode(&bytes, TimeBounds::UNBOUNDED);
            prop_assert!(d.batch.stats.records as usize >= kept);
            let z = decode(&gz(&bytes), TimeBounds::UNBOUNDED);
            prop_assert_eq!(d.batch.stats, z.batch.stats);
        }

        #[test]
        fn truncation_keeps_every_record_before_the_cut(
            records in prop::collection::vec(record_fields(), 1..8),
            container in 0u8..3,
            at in any::<prop::sample::Index>(),
        ) {
            let (text, ends) = file(&records, container);
            let k = at.index(text.len() + 1);
            let bytes = &text.as_bytes()[..k];
            let kept = ends.iter().filter(|&&e| e <= k).count();
            let got = names(bytes);
            prop_assert!(got.len() >= kept, "{got:?} at {k}");
            let want: Vec<String> = (0..kept).map(|i| format!("r{i}")).collect();
            prop_assert_eq!(&got[..kept], &want[..]);
            // A gzip stream cut anywhere keeps what inflated.
            let z = gz(text.as_bytes());
            let cut = &z[..at.index(z.len() + 1)];
            let _ = decode(cut, TimeBounds::UNBOUNDED);
        }

        #[test]
        fn gzip_plain_and_multi_member_give_the_same_batch(
            records in prop::collection::vec(record_fields(), 1..8),
            container in 0u8..3,
            split in any::<prop::sample::Index>(),
            bom in any::<bool>(),
        ) {
            let (text, _) = file(&records, container);
            let mut bytes = if bom { b"\xef\xbb\xbf".to_vec() } else { Vec::new() };
            bytes.extend_from_slice(text.as_bytes());
            let plain = decode(&bytes, TimeBounds::UNBOUNDED);
            prop_assert!(plain.errors.is_empty(), "{:?}", plain.errors);
            prop_assert_eq!(plain.batch.stats.records as usize, records.len());
            let one = decode(&gz(&bytes), TimeBounds::UNBOUNDED);
            let s = split.index(bytes.len() + 1);
            let mut two = gz(&bytes[..s]);
            two.extend(gz(&bytes[s..]));
            let two = decode(&two, TimeBounds::UNBOUNDED);
            for other in [&one, &two] {
                prop_assert!(other.errors.is_empty(), "{:?}", other.errors);
                prop_assert_eq!(&plain.batch.events, &other.batch.events);
                prop_assert_eq!(&plain.batch.strings, &other.batch.strings);
                prop_assert_eq!(plain.batch.stats, other.batch.stats);
                prop_assert_eq!(plain.inflated_bytes, other.inflated_bytes);
            }
        }
    }
}
