//! `trailsight evaluate`: labeled buckets from real data with injected attacks
//! of several shapes, replayed through the real pipeline, scored.
//!
//! Two accounts (one behind an organization trail with a key prefix), ten days
//! each. Background: busy write APIs following the real per-minute Twitter
//! series when available (else a seasonal Poisson model), sparse APIs called a
//! few times a day or week, a nightly deploy burst and an hourly job, a busy
//! read API with a ×30 spike and a data-event spike, 1 % duplicated deliveries
//! and a stream of records delivered 25 minutes late. Attacks start on day 8,
//! after a week of history. Records are real Stratus Red Team records.
//!
//! Scores: an attack is caught when an Insight of its key starts between 5
//! minutes before it and its end; delay is from the attack's first call to the
//! delivery minute of the Insight's `Start` file; attribution is correct when
//! the top `userIdentityArn` of the `Start` is the attacker. Every other Insight
//! after warm-up is false.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::commands::replay::{ReplayOptions, replay};
use crate::config::Config;
use crate::layout::{TrailLocation, delivery_minute_of};
use crate::pipeline::ReplaySummary;
use crate::sink::local::read_insight_files;
use crate::synth::{BucketSpec, Rate, Stream, TemplateSet, write_bucket};
use trailsight_detector::insight::{InsightState, InsightType};

/// First minute of the evaluation buckets: 2026-03-02T00:00Z (a Monday).
pub const EVAL_START: i64 = 29_540_160;
/// Length of each bucket, minutes (10 days).
pub const EVAL_MINUTES: i64 = 10 * 1440;
const ATTACKER: &str = "arn:aws:iam::111111111111:user/stolen-keys";
const ATTACKER_B: &str = "arn:aws:sts::222222222222:assumed-role/compromised-lambda";

/// One injected attack and what it should raise.
#[derive(Debug, Clone)]
pub struct Attack {
    /// Name in the table.
    pub name: &'static str,
    /// Account.
    pub account: &'static str,
    /// Region.
    pub region: &'static str,
    /// `eventSource`.
    pub event_source: &'static str,
    /// `eventName`.
    pub event_name: &'static str,
    /// Call rate or error rate.
    pub insight_type: InsightType,
    /// First minute.
    pub start: i64,
    /// Last minute (inclusive).
    pub end: i64,
    /// The principal behind it.
    pub principal: &'static str,
}

/// Activity that must not raise an Insight.
#[derive(Debug, Clone)]
pub struct Benign {
    /// Name in the table.
    pub name: &'static str,
    /// `eventName`.
    pub event_name: &'static str,
}

/// One row of the result table.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackResult {
    /// Attack name.
    pub name: &'static str,
    /// An Insight started for it.
    pub caught: bool,
    /// Minutes from the first call to the delivery of the `Start`.
    pub delay_minutes: Option<i64>,
    /// The top `userIdentityArn` was the attacker.
    pub attribution_correct: bool,
}

/// Everything the evaluation measured.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Per attack.
    pub attacks: Vec<AttackResult>,
    /// Benign patterns and how many Insights each raised (should be 0).
    pub benign: Vec<(&'static str, usize)>,
    /// Insights matching no attack, after warm-up: (account, eventName, start).
    pub false_insights: Vec<(String, String, String)>,
    /// Account-days after warm-up.
    pub account_days: f64,
    /// Whether the real Twitter series drove the busy APIs.
    pub real_rates: bool,
    /// The replay's summary.
    pub replay: ReplaySummary,
}

impl Evaluation {
    /// Fraction of attacks caught.
    pub fn recall(&self) -> f64 {
        self.attacks.iter().filter(|a| a.caught).count() as f64 / self.attacks.len().max(1) as f64
    }

    /// False Insights per account per day after warm-up.
    pub fn false_per_account_day(&self) -> f64 {
        self.false_insights.len() as f64 / self.account_days.max(1e-9)
    }
}

impl std::fmt::Display for Evaluation {
    /// A Markdown table. The false Insights' accounts, API names and times come from the
    /// Insights found, so each is written with its control characters escaped.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::escape::escaped;
        writeln!(
            f,
            "busy-API rates: {}",
            if self.real_rates {
                "real Twitter per-minute series"
            } else {
                "seasonal Poisson (Twitter series not found)"
            }
        )?;
        writeln!(
            f,
            "| attack | caught | delay (event-time min) | top principal correct |"
        )?;
        writeln!(f, "|---|---|---|---|")?;
        for a in &self.attacks {
            writeln!(
                f,
                "| {} | {} | {} | {} |",
                a.name,
                if a.caught { "yes" } else { "NO" },
                a.delay_minutes.map_or("-".to_string(), |d| d.to_string()),
                if a.attribution_correct { "yes" } else { "no" }
            )?;
        }
        writeln!(
            f,
            "\ndelay: from the first call to the minute whose records decided the Start, in event time; \
             a Start is written as soon as the file holding them is read (early Starts), so live add \
             CloudTrail's ~5 min delivery (and the allowed lateness, 15 min, for a Start that only a \
             window over 60 minutes or late calls decide)"
        )?;
        writeln!(f, "\n| must stay silent | Insights |")?;
        writeln!(f, "|---|---|")?;
        for (name, n) in &self.benign {
            writeln!(f, "| {name} | {n} |")?;
        }
        writeln!(
            f,
            "\nrecall {:.2}; false Insights {} over {:.1} account-days after warm-up = {:.3} per account per day",
            self.recall(),
            self.false_insights.len(),
            self.account_days,
            self.false_per_account_day()
        )?;
        for (account, name, start) in &self.false_insights {
            writeln!(
                f,
                "  false: {} {} at {}",
                escaped(account),
                escaped(name),
                escaped(start)
            )?;
        }
        Ok(())
    }
}

fn templates() -> TemplateSet {
    // Stratus Red Team records first: they are current (eventVersion 1.08+, with
    // `managementEvent`), where some AWS documentation samples predate those fields.
    let mut texts: Vec<&str> = vec![
        include_str!(
            "../../tests/data/cloudtrail/stratus-red-team/aws.persistence.iam-create-admin-user.json"
        ),
        include_str!(
            "../../tests/data/cloudtrail/stratus-red-team/aws.persistence.iam-create-user-login-profile.json"
        ),
        include_str!(
            "../../tests/data/cloudtrail/stratus-red-team/aws.execution.ec2-launch-unusual-instances.json"
        ),
        include_str!(
            "../../tests/data/cloudtrail/stratus-red-team/aws.exfiltration.ec2-share-ebs-snapshot.json"
        ),
    ];
    texts.extend_from_slice(crate::synth::EMBEDDED_TEMPLATE_FILES);
    TemplateSet::from_texts(texts).unwrap_or_default()
}

fn day(d: i64, hour: i64, minute: i64) -> i64 {
    EVAL_START + d * 1440 + hour * 60 + minute
}

/// The attacks injected.
pub fn attacks() -> Vec<Attack> {
    use InsightType::{ApiCallRateInsight as Call, ApiErrorRateInsight as Error};
    let a = |name,
             account,
             region,
             event_source,
             event_name,
             insight_type,
             start: i64,
             minutes: i64,
             principal| Attack {
        name,
        account,
        region,
        event_source,
        event_name,
        insight_type,
        start,
        end: start + minutes - 1,
        principal,
    };
    vec![
        a(
            "burst on a busy API (SendCommand +15/min, 10 min)",
            "111111111111",
            "us-east-1",
            "ssm.amazonaws.com",
            "SendCommand",
            Call,
            day(8, 10, 3),
            10,
            ATTACKER,
        ),
        a(
            "sparse API burst (AttachUserPolicy ×6 in 3 min)",
            "111111111111",
            "us-east-1",
            "iam.amazonaws.com",
            "AttachUserPolicy",
            Call,
            day(8, 15, 20),
            3,
            ATTACKER,
        ),
        a(
            "sensitive API, no history, called twice (CreateLoginProfile)",
            "111111111111",
            "us-east-1",
            "iam.amazonaws.com",
            "CreateLoginProfile",
            Call,
            day(8, 21, 41),
            2,
            ATTACKER,
        ),
        a(
            "low and slow (CreateAccessKey ×6 over 60 min, weekly API)",
            "111111111111",
            "us-east-1",
            "iam.amazonaws.com",
            "CreateAccessKey",
            Call,
            day(9, 3, 0),
            60,
            ATTACKER,
        ),
        a(
            "error burst on a read API (GetSecretValue AccessDenied ×150/10 min)",
            "111111111111",
            "us-east-1",
            "secretsmanager.amazonaws.com",
            "GetSecretValue",
            Error,
            day(9, 9, 12),
            10,
            ATTACKER,
        ),
        a(
            "error burst on a write API (RunInstances Unauthorized ×40/10 min)",
            "111111111111",
            "us-east-1",
            "ec2.amazonaws.com",
            "RunInstances",
            Error,
            day(9, 13, 30),
            10,
            ATTACKER,
        ),
        a(
            "burst in a second account and Region (ModifySnapshotAttribute ×10)",
            "222222222222",
            "eu-west-1",
            "ec2.amazonaws.com",
            "ModifySnapshotAttribute",
            Call,
            day(8, 18, 7),
            5,
            ATTACKER_B,
        ),
        a(
            "late-delivered burst (CreateUser ×12, 25 min late)",
            "222222222222",
            "eu-west-1",
            "iam.amazonaws.com",
            "CreateUser",
            Call,
            day(9, 11, 0),
            6,
            ATTACKER_B,
        ),
    ]
}

/// What must stay silent.
pub fn benign() -> Vec<Benign> {
    vec![
        Benign {
            name: "nightly deploy at 02:00 (UpdateFunctionCode ×40 in 5 min)",
            event_name: "UpdateFunctionCode20150331v2",
        },
        Benign {
            name: "hourly job (StartInstances ×12 at :30)",
            event_name: "StartInstances",
        },
        Benign {
            name: "read-only spike ×30 (DescribeInstances)",
            event_name: "DescribeInstances",
        },
        Benign {
            name: "data-event spike (s3 GetObject ×30)",
            event_name: "GetObject",
        },
    ]
}

fn find(t: &TemplateSet, source: &str, name: &str, errored: bool) -> std::io::Result<Value> {
    t.find(source, name, errored).cloned().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no template record for {source} {name}"),
        )
    })
}

fn burst(attack: &Attack, total: u32) -> Rate {
    Rate::Burst {
        start: attack.start,
        minutes: attack.end - attack.start + 1,
        total,
    }
}

fn specs(series: Option<Arc<Vec<f64>>>) -> std::io::Result<Vec<BucketSpec>> {
    let t = templates();
    let at = attacks();
    let busy = |scale: f64, offset: usize, poisson: f64| match &series {
        Some(v) => Rate::Series {
            values: v.clone(),
            scale,
            offset,
        },
        None => Rate::Poisson {
            per_minute: poisson,
            daily_amplitude: 0.5,
        },
    };
    let per_day = |n: f64| Rate::Poisson {
        per_minute: n / 1440.0,
        daily_amplitude: 0.0,
    };
    let send_command = find(&t, "ssm.amazonaws.com", "SendCommand", false)?;
    let describe = find(&t, "ec2.amazonaws.com", "DescribeInstances", false)?;
    let secret = find(&t, "secretsmanager.amazonaws.com", "GetSecretValue", false)?;
    let lambda = find(
        &t,
        "lambda.amazonaws.com",
        "UpdateFunctionCode20150331v2",
        false,
    )?;
    let start_instances = find(&t, "ec2.amazonaws.com", "StartInstances", false)?;
    let data_event = secret
        .clone()
        .as_object()
        .cloned()
        .map(|mut o| {
            o.insert("eventSource".into(), "s3.amazonaws.com".into());
            o.insert("eventName".into(), "GetObject".into());
            o.insert("eventCategory".into(), "Data".into());
            o.insert("managementEvent".into(), false.into());
            Value::Object(o)
        })
        .unwrap_or_default();
    let nightly = |d0: i64| {
        (0..10).map(move |d| Rate::Burst {
            start: EVAL_START + d * 1440 + 120 + d0,
            minutes: 5,
            total: 40,
        })
    };
    let mut a_streams = vec![
        Stream::new(&send_command, busy(1.0 / 30.0, 0, 3.7)),
        Stream::new(&describe, busy(1.0 / 20.0, 3000, 5.6)),
        Stream::new(
            &describe,
            Rate::Burst {
                start: day(8, 12, 0),
                minutes: 10,
                total: 10 * 170,
            },
        ),
        Stream::new(
            &data_event,
            Rate::Poisson {
                per_minute: 2.0,
                daily_amplitude: 0.3,
            },
        ),
        Stream::new(
            &data_event,
            Rate::Burst {
                start: day(8, 13, 0),
                minutes: 10,
                total: 600,
            },
        ),
        Stream::new(
            &secret,
            Rate::Poisson {
                per_minute: 1.0,
                daily_amplitude: 0.4,
            },
        ),
        Stream::new(&secret, per_day(3.0)).failing("AccessDenied"),
        Stream::new(
            &find(&t, "iam.amazonaws.com", "AttachUserPolicy", false)?,
            per_day(2.0),
        )
        .by("arn:aws:iam::111111111111:user/admin"),
        Stream::new(
            &find(&t, "iam.amazonaws.com", "CreateAccessKey", false)?,
            per_day(1.0 / 7.0),
        )
        .by("arn:aws:iam::111111111111:user/admin"),
        Stream::new(
            &find(&t, "ec2.amazonaws.com", "RunInstances", true)?,
            per_day(2.0),
        ),
    ];
    a_streams
        .extend(nightly(0).map(|r| {
            Stream::new(&lambda, r).by("arn:aws:sts::111111111111:assumed-role/deployer")
        }));
    for h in 0..240 {
        a_streams.push(Stream::new(
            &start_instances,
            Rate::Burst {
                start: EVAL_START + h * 60 + 30,
                minutes: 1,
                total: 12,
            },
        ));
    }
    let attack_stream = |i: usize, total: u32, template: Value| {
        Stream::new(&template, burst(&at[i], total)).by(at[i].principal)
    };
    a_streams.push(
        attack_stream(0, 150, send_command.clone())
            .with_user_agent("python-requests/2.31 attacker-tooling"),
    );
    a_streams.push(attack_stream(
        1,
        6,
        find(&t, "iam.amazonaws.com", "AttachUserPolicy", false)?,
    ));
    a_streams.push(attack_stream(
        2,
        2,
        find(&t, "iam.amazonaws.com", "CreateLoginProfile", false)?,
    ));
    a_streams.push(
        Stream::new(
            &find(&t, "iam.amazonaws.com", "CreateAccessKey", false)?,
            Rate::Burst {
                start: at[3].start,
                minutes: 60,
                total: 6,
            },
        )
        .by(at[3].principal),
    );
    a_streams.push(attack_stream(4, 150, secret.clone()).failing("AccessDenied"));
    a_streams.push(attack_stream(
        5,
        40,
        find(&t, "ec2.amazonaws.com", "RunInstances", true)?,
    ));

    let mut b_streams = vec![
        Stream::new(&send_command, busy(1.0 / 60.0, 7000, 1.8)),
        Stream::new(
            &find(&t, "ec2.amazonaws.com", "ModifySnapshotAttribute", false)?,
            per_day(0.5),
        ),
        Stream::new(
            &find(&t, "iam.amazonaws.com", "CreateUser", false)?,
            per_day(1.0),
        ),
        Stream::new(
            &describe,
            Rate::Poisson {
                per_minute: 2.0,
                daily_amplitude: 0.5,
            },
        ),
    ];
    b_streams
        .extend(nightly(3).map(|r| {
            Stream::new(&lambda, r).by("arn:aws:sts::222222222222:assumed-role/deployer")
        }));
    b_streams.push(attack_stream(
        6,
        10,
        find(&t, "ec2.amazonaws.com", "ModifySnapshotAttribute", false)?,
    ));
    b_streams.push(
        attack_stream(7, 12, find(&t, "iam.amazonaws.com", "CreateUser", false)?).delayed(25),
    );

    Ok(vec![
        BucketSpec {
            location: TrailLocation {
                prefix: "org-trail".into(),
                org_id: Some("o-exampleorg1".into()),
            },
            account: "111111111111".into(),
            region: "us-east-1".into(),
            start_minute: EVAL_START,
            minutes: EVAL_MINUTES,
            seed: 11,
            streams: a_streams,
            duplicate_fraction: 0.01,
        },
        BucketSpec {
            location: TrailLocation::default(),
            account: "222222222222".into(),
            region: "eu-west-1".into(),
            start_minute: EVAL_START,
            minutes: EVAL_MINUTES,
            seed: 12,
            streams: b_streams,
            duplicate_fraction: 0.01,
        },
    ])
}

/// Builds the buckets under `dir/bucket`, replays them into `dir/insights` and scores the result.
///
/// `series` is the per-minute Twitter series (`None`: seasonal Poisson busy APIs).
/// Returns `Err` when a bucket cannot be written or replay cannot run.
pub async fn evaluate(
    dir: &Path,
    series: Option<Arc<Vec<f64>>>,
    config: Config,
) -> anyhow::Result<Evaluation> {
    let real_rates = series.is_some();
    let bucket = dir.join("bucket");
    let sink = dir.join("insights");
    // Writing the buckets is blocking work: off the async runtime.
    let specs = specs(series)?;
    let (b, s) = (bucket.clone(), sink.clone());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if b.exists() {
            std::fs::remove_dir_all(&b)?;
        }
        for spec in specs {
            write_bucket(&spec, &b)?;
        }
        if s.exists() {
            std::fs::remove_dir_all(&s)?;
        }
        Ok(())
    })
    .await??;
    let summary = replay(ReplayOptions {
        source: bucket,
        sink: sink.clone(),
        config: config.clone(),
        progress: false,
        state: None,
    })
    .await?;
    let files = read_insight_files(&sink)?;
    let warm = EVAL_START + i64::from(config.detector.warmup_minutes);
    // Start records with their delivery minute (from the file name).
    let mut starts = Vec::new();
    for (key, records) in &files {
        let delivered = delivery_minute_of(key.rsplit('/').next().unwrap_or(key)).unwrap_or(0);
        for r in records
            .iter()
            .filter(|r| r.insight_details.state == InsightState::Start)
        {
            starts.push((delivered, r.clone()));
        }
    }
    let mut matched = vec![false; starts.len()];
    let mut results = Vec::new();
    for attack in attacks() {
        let hit = starts.iter().enumerate().find(|(_, (_, r))| {
            let d = &r.insight_details;
            let start = trailsight_detector::time::parse_event_minute(&r.event_time).unwrap_or(0);
            r.recipient_account_id.as_deref() == Some(attack.account)
                && r.aws_region == attack.region
                && d.event_source == attack.event_source
                && d.event_name == attack.event_name
                && d.insight_type == attack.insight_type
                && start >= attack.start - 5
                && start <= attack.end
        });
        let (caught, delay, attribution) = match hit {
            Some((i, (delivered, r))) => {
                matched[i] = true;
                let top = r
                    .insight_details
                    .insight_context
                    .attributions
                    .as_ref()
                    .and_then(|a| a.iter().find(|a| a.attribute == "userIdentityArn"))
                    .and_then(|a| a.insight.first())
                    .map(|v| v.value.clone());
                (
                    true,
                    Some(delivered - attack.start),
                    top.as_deref() == Some(attack.principal),
                )
            }
            None => (false, None, false),
        };
        results.push(AttackResult {
            name: attack.name,
            caught,
            delay_minutes: delay,
            attribution_correct: attribution,
        });
    }
    // Other Insights on an attacked API during its attack (e.g. the call rate of failing calls
    // whose error rate was the target) are true detections too, not false ones.
    for (i, (_, r)) in starts.iter().enumerate() {
        let start = trailsight_detector::time::parse_event_minute(&r.event_time).unwrap_or(0);
        if attacks().iter().any(|a| {
            r.recipient_account_id.as_deref() == Some(a.account)
                && r.insight_details.event_name == a.event_name
                && start >= a.start - 5
                && start <= a.end
        }) {
            matched[i] = true;
        }
    }
    let mut benign_counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut false_insights = Vec::new();
    for (i, (_, r)) in starts.iter().enumerate() {
        if matched[i] {
            continue;
        }
        let start = trailsight_detector::time::parse_event_minute(&r.event_time).unwrap_or(0);
        for b in benign() {
            if r.insight_details.event_name == b.event_name {
                *benign_counts.entry(b.name).or_default() += 1;
            }
        }
        if start >= warm {
            false_insights.push((
                r.recipient_account_id.clone().unwrap_or_default(),
                r.insight_details.event_name.clone(),
                r.event_time.clone(),
            ));
        }
    }
    let benign = benign()
        .into_iter()
        .map(|b| (b.name, benign_counts.get(b.name).copied().unwrap_or(0)))
        .collect();
    let account_days =
        2.0 * (EVAL_MINUTES - i64::from(config.detector.warmup_minutes)) as f64 / 1440.0;
    Ok(Evaluation {
        attacks: results,
        benign,
        false_insights,
        account_days,
        real_rates,
        replay: summary,
    })
}
