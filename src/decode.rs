//! Decoding one log file: gzip inflate (when gzip) and tolerant parse into a [`FileBatch`].
//!
//! CPU-bound and synchronous: callers run it off the async runtime
//! (`tokio::task::spawn_blocking`). A broken file never loses the records
//! before the break: a truncated gzip stream is parsed as far as it inflated,
//! and a JSON syntax error keeps every record before it.

use std::io::Read;

use trailsight_detector::record::{SyntaxError, parse_log};
use trailsight_detector::{BatchBuilder, FileBatch, TimeBounds};

/// Largest inflated size read from one file; larger files are cut there and reported.
pub const MAX_INFLATED_BYTES: usize = 2 << 30;

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

/// Inflates a gzip member sequence. Returns what inflated and the error that stopped it, if any.
pub fn inflate(bytes: &[u8]) -> (Vec<u8>, Option<DecodeError>) {
    // The gzip trailer's ISIZE (inflated size mod 2^32) is a good capacity hint.
    let hint = bytes
        .len()
        .checked_sub(4)
        .and_then(|i| bytes.get(i..))
        .map_or(0, |t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize)
        .clamp(bytes.len(), 256 << 20);
    let mut out = Vec::with_capacity(hint);
    let mut reader =
        flate2::bufread::MultiGzDecoder::new(bytes).take(MAX_INFLATED_BYTES as u64 + 1);
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
    if out.len() > MAX_INFLATED_BYTES {
        out.truncate(MAX_INFLATED_BYTES);
        return (
            out,
            Some(DecodeError::TooLarge {
                limit: MAX_INFLATED_BYTES,
            }),
        );
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
