//! Realistic trail buckets built from real records, for the demo, tests and benchmarks.
//!
//! There is no public multi-week raw CloudTrail corpus, so a bucket is built
//! from real records (templates: Stratus Red Team and AWS documentation
//! samples) given fresh `eventTime`, `eventID` and `requestID`, at per-minute
//! rates that follow a real rate series or a seasonal Poisson model, plus
//! injected bursts. Records are delivered like CloudTrail does: in 5-minute
//! files, each record 1 to 10 minutes after its `eventTime` (a few up to 14),
//! unordered within a file, under the `AWSLogs/` key layout. Everything is
//! seeded: the same spec writes the same bytes.

pub mod demo;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde_json::Value;

use crate::layout::{TrailLocation, unique_string};

/// Real CloudTrail records to clone.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    records: Vec<Value>,
}

/// The Stratus Red Team and AWS documentation files shipped in `tests/data` (embedded in the binary).
pub const EMBEDDED_TEMPLATE_FILES: &[&str] = &[
    include_str!(
        "../../tests/data/cloudtrail/stratus-red-team/aws.persistence.iam-backdoor-user.json"
    ),
    include_str!(
        "../../tests/data/cloudtrail/stratus-red-team/aws.persistence.iam-create-backdoor-role.json"
    ),
    include_str!("../../tests/data/cloudtrail/stratus-red-team/aws.execution.ec2-user-data.json"),
    include_str!(
        "../../tests/data/cloudtrail/stratus-red-team/aws.execution.ssm-send-command.json"
    ),
    include_str!(
        "../../tests/data/cloudtrail/stratus-red-team/aws.credential-access.secretsmanager-retrieve-secrets.json"
    ),
    include_str!(
        "../../tests/data/cloudtrail/stratus-red-team/aws.credential-access.ec2-get-password-data.json"
    ),
    include_str!(
        "../../tests/data/cloudtrail/stratus-red-team/aws.persistence.lambda-overwrite-code.json"
    ),
    include_str!("../../tests/data/cloudtrail/aws-docs/all_doc_examples.json"),
];

impl TemplateSet {
    /// Loads records from JSON texts holding `{"Records":[…]}` or a top-level array.
    ///
    /// Returns `Err` when a text is not JSON.
    pub fn from_texts<'a>(
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, serde_json::Error> {
        let mut records = Vec::new();
        for t in texts {
            match serde_json::from_str::<Value>(t)? {
                Value::Array(a) => records.extend(a),
                Value::Object(mut o) => {
                    if let Some(Value::Array(a)) = o.remove("Records") {
                        records.extend(a);
                    }
                }
                _ => {}
            }
        }
        Ok(TemplateSet { records })
    }

    /// The records embedded in the binary ([`EMBEDDED_TEMPLATE_FILES`]).
    pub fn embedded() -> Self {
        Self::from_texts(EMBEDDED_TEMPLATE_FILES.iter().copied()).unwrap_or_default()
    }

    /// The first record of an API, optionally with the given `readOnly` and error presence.
    pub fn find(&self, event_source: &str, event_name: &str, errored: bool) -> Option<&Value> {
        self.records.iter().find(|r| {
            r["eventSource"] == event_source
                && r["eventName"] == event_name
                && r.get("errorCode").is_some() == errored
        })
    }

    /// Every record.
    pub fn records(&self) -> &[Value] {
        &self.records
    }
}

/// How many calls a stream makes in each minute.
#[derive(Debug, Clone)]
pub enum Rate {
    /// Counts per minute from a real series: `round(values[(i + offset) % len] * scale)` for minute `i` of the bucket.
    Series {
        /// The series (per minute).
        values: Arc<Vec<f64>>,
        /// Multiplier.
        scale: f64,
        /// Minutes to shift the series by.
        offset: usize,
    },
    /// Poisson counts with a daily cycle: mean `per_minute · (1 + daily_amplitude · sin(2π (minute of day − 360) / 1440))`.
    Poisson {
        /// Mean calls per minute.
        per_minute: f64,
        /// Relative amplitude of the daily cycle, 0..1.
        daily_amplitude: f64,
    },
    /// `total` calls spread evenly over `minutes` minutes from `start` (minutes since the epoch).
    Burst {
        /// First minute.
        start: i64,
        /// Length, minutes.
        minutes: i64,
        /// Calls.
        total: u32,
    },
}

/// One API's traffic in a bucket.
#[derive(Debug, Clone)]
pub struct Stream {
    /// A real record of the API; cloned for every call.
    pub template: Value,
    /// Calls per minute.
    pub rate: Rate,
    /// `userIdentity.arn` for these calls (the template's when `None`).
    pub principal: Option<String>,
    /// `userAgent` for these calls (the template's when `None`).
    pub user_agent: Option<String>,
    /// Top-level fields set on every record (e.g. `errorCode`, `eventCategory`).
    pub fields: Vec<(String, Value)>,
    /// Extra delivery delay, minutes (to make records late).
    pub extra_delay: i64,
}

impl Stream {
    /// A stream with the template's own identity and user agent.
    pub fn new(template: &Value, rate: Rate) -> Self {
        Stream {
            template: template.clone(),
            rate,
            principal: None,
            user_agent: None,
            fields: Vec::new(),
            extra_delay: 0,
        }
    }

    /// Sets a top-level field on every record (`Value::Null` removes it).
    pub fn set(mut self, key: &str, value: Value) -> Self {
        self.fields.push((key.to_string(), value));
        self
    }

    /// Makes the calls fail with `error_code`.
    pub fn failing(self, error_code: &str) -> Self {
        self.set("errorCode", Value::String(error_code.to_string()))
            .set(
                "errorMessage",
                Value::String(format!("{error_code} (synthetic)")),
            )
    }

    /// Delivers every record `minutes` later than usual.
    pub fn delayed(mut self, minutes: i64) -> Self {
        self.extra_delay = minutes;
        self
    }

    /// Sets the caller's ARN.
    pub fn by(mut self, arn: &str) -> Self {
        self.principal = Some(arn.to_string());
        self
    }

    /// Sets the user agent.
    pub fn with_user_agent(mut self, ua: &str) -> Self {
        self.user_agent = Some(ua.to_string());
        self
    }

    fn count(&self, minute: i64, index: i64, rng: &mut ChaCha8Rng) -> u32 {
        match &self.rate {
            Rate::Series {
                values,
                scale,
                offset,
            } => {
                if values.is_empty() {
                    return 0;
                }
                let v = values[(index as usize + offset) % values.len()] * scale;
                v.round().max(0.0) as u32
            }
            Rate::Poisson {
                per_minute,
                daily_amplitude,
            } => {
                let phase = (minute.rem_euclid(1440) - 360) as f64 / 1440.0 * std::f64::consts::TAU;
                let mean = per_minute * (1.0 + daily_amplitude * phase.sin());
                if mean <= 0.0 {
                    return 0;
                }
                Poisson::new(mean)
                    .map(|d| d.sample(rng) as u32)
                    .unwrap_or(0)
            }
            Rate::Burst {
                start,
                minutes,
                total,
            } => {
                if minute < *start || minute >= start + minutes || *minutes <= 0 {
                    return 0;
                }
                let i = minute - start;
                let t = i64::from(*total);
                ((i + 1) * t / minutes - i * t / minutes) as u32
            }
        }
    }
}

/// A bucket to write: one account and Region of one trail.
#[derive(Debug, Clone)]
pub struct BucketSpec {
    /// Prefix and organization level.
    pub location: TrailLocation,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// First minute (minutes since the epoch).
    pub start_minute: i64,
    /// Length, minutes.
    pub minutes: i64,
    /// RNG seed.
    pub seed: u64,
    /// Traffic.
    pub streams: Vec<Stream>,
    /// Fraction of records delivered twice (in a later file), to exercise deduplication.
    pub duplicate_fraction: f64,
}

/// What [`write_bucket`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// Log files.
    pub files: u64,
    /// Records (duplicates included).
    pub records: u64,
    /// Compressed bytes.
    pub bytes: u64,
    /// Written files (paths).
    pub paths: Vec<PathBuf>,
}

fn set(record: &mut Value, key: &str, v: Value) {
    if let Value::Object(o) = record {
        o.insert(key.to_string(), v);
    }
}

fn random_uuid(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

/// Writes the bucket under `root` in the `AWSLogs/` layout; returns what was written.
///
/// Returns `Err` when a file cannot be written.
pub fn write_bucket(spec: &BucketSpec, root: &Path) -> std::io::Result<BucketStats> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut pending: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut stats = BucketStats::default();
    for index in 0..spec.minutes {
        let minute = spec.start_minute + index;
        for stream in &spec.streams {
            let n = stream.count(minute, index, &mut rng);
            for _ in 0..n {
                let mut r = stream.template.clone();
                let second = rng.random_range(0..60);
                let t = chrono::DateTime::<chrono::Utc>::from_timestamp(minute * 60 + second, 0)
                    .unwrap_or_default();
                set(
                    &mut r,
                    "eventTime",
                    Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                set(&mut r, "eventID", Value::String(random_uuid(&mut rng)));
                set(&mut r, "requestID", Value::String(random_uuid(&mut rng)));
                set(
                    &mut r,
                    "recipientAccountId",
                    Value::String(spec.account.clone()),
                );
                set(&mut r, "awsRegion", Value::String(spec.region.clone()));
                if let Some(Value::Object(id)) = r.get_mut("userIdentity") {
                    id.insert("accountId".into(), Value::String(spec.account.clone()));
                    if let Some(arn) = &stream.principal {
                        id.insert("arn".into(), Value::String(arn.clone()));
                        if let Some(name) = arn.rsplit('/').next() {
                            id.insert("userName".into(), Value::String(name.to_string()));
                        }
                    }
                }
                if let Some(ua) = &stream.user_agent {
                    set(&mut r, "userAgent", Value::String(ua.clone()));
                }
                for (k, v) in &stream.fields {
                    match (v, &mut r) {
                        (Value::Null, Value::Object(o)) => {
                            o.remove(k);
                        }
                        _ => set(&mut r, k, v.clone()),
                    }
                }
                let text = r.to_string();
                // Delivery: 1–10 minutes late, 3 % of records up to 14 minutes (CloudTrail's "about 5 minutes").
                let delay = stream.extra_delay
                    + if rng.random_bool(0.03) {
                        rng.random_range(10..=14)
                    } else {
                        rng.random_range(1..=10)
                    };
                let slot = ((minute + delay) / 5 + 1) * 5;
                if spec.duplicate_fraction > 0.0
                    && rng.random_bool(spec.duplicate_fraction.min(1.0))
                {
                    pending.entry(slot + 5).or_default().push(text.clone());
                }
                pending.entry(slot).or_default().push(text);
            }
        }
        while let Some(entry) = pending.first_entry() {
            if *entry.key() > minute {
                break;
            }
            let (slot, records) = entry.remove_entry();
            write_file(spec, root, slot, records, &mut rng, &mut stats)?;
        }
    }
    while let Some((slot, records)) = pending.pop_first() {
        write_file(spec, root, slot, records, &mut rng, &mut stats)?;
    }
    Ok(stats)
}

fn write_file(
    spec: &BucketSpec,
    root: &Path,
    slot: i64,
    mut records: Vec<String>,
    rng: &mut ChaCha8Rng,
    stats: &mut BucketStats,
) -> std::io::Result<()> {
    // CloudTrail does not order records within a file.
    for i in (1..records.len()).rev() {
        let j = rng.random_range(0..=i);
        records.swap(i, j);
    }
    let mut json = String::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 16);
    json.push_str("{\"Records\":[");
    json.push_str(&records.join(","));
    json.push_str("]}");
    let unique = unique_string(json.as_bytes());
    let key =
        crate::layout::insight_key(&spec.location, &spec.account, &spec.region, slot, &unique)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
            .replace("CloudTrail-Insight", "CloudTrail");
    let path = root.join(&key);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(std::fs::File::create(&path)?, flate2::Compression::fast());
    gz.write_all(json.as_bytes())?;
    gz.finish()?;
    stats.files += 1;
    stats.records += records.len() as u64;
    stats.bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    stats.paths.push(path);
    Ok(())
}

/// Reads a per-minute rate series in `timestamp,value` CSV form (header line first); values only, in file order.
///
/// Returns `Err` when the file cannot be read or a value is not a number.
pub fn read_rate_csv(path: &Path) -> std::io::Result<Vec<f64>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.rsplit(',')
                .next()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad line {l:?} in {}", path.display()),
                    )
                })
        })
        .collect()
}
