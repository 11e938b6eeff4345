//! Bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (cargo-fuzz) and the seed smoke
//! test of the normal suite (`tests/fuzz_seeds.rs` includes this file), so CI replays every
//! committed seed and regression input through exactly what the fuzzer ran.
//!
//! Each body panics only when an invariant breaks (a panic is what the fuzzer reports);
//! inputs the code rightly rejects return normally.

use std::path::Path;

use trailsight::pipeline::decode::MAX_INFLATED_BYTES;
use trailsight_detector::DetectorConfig;

/// The file decoder: gzip (one or more members) or plain, `{"Records":[…]}`, a top-level
/// array or JSON Lines. Never panics; the inflated size stays within the cap; the record
/// counters add up.
pub fn decode(data: &[u8]) {
    let d = trailsight::pipeline::decode::decode(data, trailsight_detector::TimeBounds::UNBOUNDED);
    assert!(d.inflated_bytes <= MAX_INFLATED_BYTES);
    assert!(d.batch.events.len() <= d.batch.stats.records as usize);
}

/// The record parser: the callback sees exactly `outcome.records` records, and an error's
/// offset lies within the input.
pub fn parse_log(data: &[u8]) {
    let mut n = 0usize;
    let outcome = trailsight_detector::record::parse_log(data, |_| n += 1);
    assert_eq!(outcome.records, n);
    if let Some(e) = &outcome.error {
        assert!(e.offset <= data.len(), "{e} beyond {} bytes", data.len());
    }
    assert!(!(outcome.no_records && n > 0));
}

/// The key layout parser (S3 keys and file names are attacker-chosen in a shared bucket).
pub fn layout(data: &[u8]) {
    let Ok(key) = std::str::from_utf8(data) else {
        return;
    };
    let info = trailsight::layout::parse_key(key);
    let _ = trailsight::layout::is_log_file_name(key);
    let minute = trailsight::layout::delivery_minute_of(key.rsplit('/').next().unwrap_or(key));
    if let Some(m) = minute {
        assert_eq!(info.delivered_minute, Some(m));
    }
}

/// The config parser: never panics, and a config it accepts builds an engine and survives a
/// TOML round trip unchanged.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = trailsight::config::Config::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    if let Err(e) = trailsight_detector::Engine::new(config.detector.clone()) {
        panic!("validated config rejected by the engine: {e}");
    }
    let text = match toml::to_string(&config) {
        Ok(t) => t,
        Err(e) => panic!("accepted config does not serialize: {e}"),
    };
    match trailsight::config::Config::parse(&text, Path::new("fuzz.toml")) {
        Ok(back) => assert_eq!(back, config, "round trip changed the config:\n{text}"),
        Err(e) => panic!("config does not parse after a round trip: {e}\n{text}"),
    }
}

/// The checkpoint loader. An input that starts with the checkpoint magic is taken as a whole
/// file; anything else is taken as a payload and given a valid header (length and CRC-32), so
/// the fuzzer reaches the postcard decoding and the engine's restore past the checksum.
pub fn checkpoint(data: &[u8]) {
    const MAGIC: &[u8; 16] = b"TRAILSIGHT-STATE";
    let config = DetectorConfig::default();
    let path = Path::new("state.bin");
    let file;
    let bytes = if data.starts_with(MAGIC) {
        data
    } else {
        let mut f = Vec::with_capacity(data.len() + 32);
        f.extend_from_slice(MAGIC);
        f.extend_from_slice(&trailsight::pipeline::state::FORMAT_VERSION.to_le_bytes());
        f.extend_from_slice(&(data.len() as u64).to_le_bytes());
        f.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        f.extend_from_slice(data);
        file = f;
        &file
    };
    if let Ok(mut checkpoint) = trailsight::pipeline::state::decode_checkpoint(bytes, path, &config)
    {
        // A restored engine must work on, not only load: a few calls, then the end of input.
        let _ = checkpoint.engine.key_count();
        let _ = checkpoint.engine.open_insights();
        let batch = trailsight::pipeline::decode::decode(
            AFTER_RESTORE.as_bytes(),
            trailsight_detector::TimeBounds::UNBOUNDED,
        )
        .batch;
        let _ = checkpoint.engine.ingest(&batch, None);
        let _ = checkpoint.engine.finish();
        let _ = checkpoint.engine.open_insights();
    }
}

/// Calls ingested by a restored engine in [`checkpoint`] (a write API with and without an error).
const AFTER_RESTORE: &str = r#"{"Records":[
{"eventVersion":"1.09","eventTime":"2025-03-01T00:00:10Z","eventSource":"iam.amazonaws.com","eventName":"CreateAccessKey","awsRegion":"us-east-1","recipientAccountId":"111122223333","eventID":"a1","readOnly":false,"managementEvent":true,"eventType":"AwsApiCall","userIdentity":{"arn":"arn:aws:iam::111122223333:user/x"},"userAgent":"ua"},
{"eventVersion":"1.09","eventTime":"2025-03-01T00:01:10Z","eventSource":"iam.amazonaws.com","eventName":"CreateAccessKey","awsRegion":"us-east-1","recipientAccountId":"111122223333","eventID":"a2","readOnly":false,"managementEvent":true,"eventType":"AwsApiCall","errorCode":"AccessDenied","userIdentity":{"arn":"arn:aws:iam::111122223333:user/y"},"userAgent":"ua"},
{"eventVersion":"1.09","eventTime":"2025-03-01T00:30:10Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"eu-west-1","recipientAccountId":"111122223333","eventID":"a3","readOnly":false,"managementEvent":true,"eventType":"AwsApiCall","userIdentity":{"arn":"arn:aws:iam::111122223333:user/x"},"userAgent":"ua"}
]}"#;
