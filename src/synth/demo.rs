//! `trailsight demo`: a 9.5-day trail bucket built from real records at
//! realistic rates, with one injected `CreateAccessKey` burst by one principal
//! and a read-only `DescribeInstances` spike, replayed through the same
//! pipeline as `trailsight replay`.

use std::path::{Path, PathBuf};

use crate::layout::TrailLocation;
use crate::synth::{BucketSpec, BucketStats, Rate, Stream, TemplateSet, write_bucket};

/// The demo's account.
pub const DEMO_ACCOUNT: &str = "111122223333";
/// The demo's Region.
pub const DEMO_REGION: &str = "us-east-1";
/// The principal behind the injected burst.
pub const ATTACKER_ARN: &str = "arn:aws:iam::111122223333:user/compromised-dev";
/// The usual caller of `CreateAccessKey`.
pub const ADMIN_ARN: &str = "arn:aws:iam::111122223333:user/admin";
/// First minute of the demo bucket: 2026-11-02T00:00:00Z.
pub const DEMO_START_MINUTE: i64 = 29_892_960;

/// Minute the `CreateAccessKey` burst starts: day 8, 14:05 UTC.
pub fn burst_start(start_minute: i64) -> i64 {
    start_minute + 8 * 1440 + 14 * 60 + 5
}

/// The demo bucket: `days` days of traffic at `scale` × the base rates.
///
/// Returns `None` if an embedded template is missing (a build defect).
pub fn demo_spec(days: f64, scale: f64, seed: u64) -> Option<BucketSpec> {
    let t = TemplateSet::embedded();
    let start = DEMO_START_MINUTE;
    let minutes = (days * 1440.0).round() as i64;
    let poisson = |per_minute: f64, daily_amplitude: f64| Rate::Poisson {
        per_minute: per_minute * scale,
        daily_amplitude,
    };
    let burst = burst_start(start);
    let streams = vec![
        // Busy write APIs with a daily cycle.
        Stream::new(
            t.find("ssm.amazonaws.com", "SendCommand", false)?,
            poisson(0.8, 0.6),
        ),
        Stream::new(
            t.find("ec2.amazonaws.com", "StartInstances", false)?,
            poisson(0.05, 0.5),
        ),
        Stream::new(
            t.find("ec2.amazonaws.com", "StopInstances", false)?,
            poisson(0.05, 0.5),
        ),
        Stream::new(
            t.find(
                "lambda.amazonaws.com",
                "UpdateFunctionCode20150331v2",
                false,
            )?,
            poisson(0.02, 0.3),
        ),
        Stream::new(
            t.find("iam.amazonaws.com", "CreateRole", false)?,
            poisson(0.003, 0.0),
        ),
        // CreateAccessKey: about twice a day, by the admin.
        Stream::new(
            t.find("iam.amazonaws.com", "CreateAccessKey", false)?,
            Rate::Poisson {
                per_minute: 0.0014,
                daily_amplitude: 0.0,
            },
        )
        .by(ADMIN_ARN),
        // Read-only traffic, including a ×30 DescribeInstances spike that must stay silent.
        Stream::new(
            t.find("ssm.amazonaws.com", "DescribeInstanceInformation", false)?,
            poisson(6.0, 0.4),
        ),
        Stream::new(
            t.find("secretsmanager.amazonaws.com", "GetSecretValue", false)?,
            poisson(1.0, 0.4),
        ),
        Stream::new(
            t.find("ec2.amazonaws.com", "DescribeInstances", false)?,
            poisson(3.0, 0.4),
        ),
        Stream::new(
            t.find("ec2.amazonaws.com", "DescribeInstances", false)?,
            Rate::Burst {
                start: burst - 300,
                minutes: 10,
                total: (3.0 * scale * 30.0 * 10.0) as u32,
            },
        ),
        // A trickle of authorization errors.
        Stream::new(
            t.find("ec2.amazonaws.com", "GetPasswordData", true)?,
            poisson(0.01, 0.0),
        ),
        // The attack: 25 CreateAccessKey calls in 8 minutes by one principal.
        Stream::new(
            t.find("iam.amazonaws.com", "CreateAccessKey", false)?,
            Rate::Burst {
                start: burst,
                minutes: 8,
                total: 25,
            },
        )
        .by(ATTACKER_ARN)
        .with_user_agent("aws-cli/2.15.30 Python/3.11.8 Linux/6.1 exe/x86_64.ubuntu.22"),
    ];
    Some(BucketSpec {
        location: TrailLocation::default(),
        account: DEMO_ACCOUNT.to_string(),
        region: DEMO_REGION.to_string(),
        start_minute: start,
        minutes,
        seed,
        streams,
        duplicate_fraction: 0.001,
    })
}

/// Writes the demo bucket under `<out>/bucket`; returns the bucket folder and what was written.
pub fn write_demo_bucket(
    out: &Path,
    days: f64,
    scale: f64,
) -> std::io::Result<(PathBuf, BucketStats)> {
    let spec = demo_spec(days, scale, 7).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "embedded template record missing",
        )
    })?;
    let bucket = out.join("bucket");
    if bucket.exists() {
        std::fs::remove_dir_all(&bucket)?;
    }
    let stats = write_bucket(&spec, &bucket)?;
    Ok((bucket, stats))
}
