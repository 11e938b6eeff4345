//! Sensitivity settings: the global sensitivity, sensitive APIs, per-key
//! overrides and suppressions, resolved once per rate key.
//!
//! Patterns are globs (`*` any run of characters, `?` one character, `[…]`
//! a class) matched against CloudTrail's own values: `eventSource`
//! (`iam.amazonaws.com`), `eventName`, account, `awsRegion`, `errorCode`, and
//! for principal suppressions the `userIdentityArn` attribution value
//! (assumed-role ARNs without the session name).

use serde::{Deserialize, Serialize};

/// How readily Insights are raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// 0.01 false Insights per key per 30 days, minimum ratio 5.
    Low,
    /// 0.1 false Insights per key per 30 days, minimum ratio 3.
    #[default]
    Medium,
    /// 1 false Insight per key per 30 days, minimum ratio 2.
    High,
}

impl Sensitivity {
    /// The false-alarm budget this sensitivity stands for: the expected number of false
    /// Insights per rate key per 30 days on benign traffic (low 0.01, medium 0.1, high 1).
    /// Each key's per-test significance level follows from it (see `detect`).
    pub fn false_insights_per_key_per_30_days(self) -> f64 {
        match self {
            Sensitivity::Low => 0.01,
            Sensitivity::Medium => 0.1,
            Sensitivity::High => 1.0,
        }
    }

    /// Significance level per key-minute (shared by all windows): the false-alarm budget
    /// spread over the 43,200 minutes of 30 days (Bonferroni over minutes).
    pub fn tail_probability(self) -> f64 {
        self.false_insights_per_key_per_30_days() / (30.0 * 1440.0)
    }

    /// Minimum ratio of the window's rate to the baseline rate.
    pub fn min_ratio(self) -> f64 {
        match self {
            Sensitivity::Low => 5.0,
            Sensitivity::Medium => 3.0,
            Sensitivity::High => 2.0,
        }
    }
}

/// Settings for the rate keys a rule matches. Every pattern defaults to `*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Account pattern.
    pub account: Option<String>,
    /// Region pattern.
    pub region: Option<String>,
    /// `eventSource` pattern, e.g. `iam.amazonaws.com`.
    pub event_source: Option<String>,
    /// `eventName` pattern, e.g. `Create*`.
    pub event_name: Option<String>,
    /// `errorCode` pattern; a rule with one applies to error-rate keys only.
    pub error_code: Option<String>,
    /// Sensitivity for matching keys.
    pub sensitivity: Option<Sensitivity>,
    /// Minimum calls in the triggering window for matching keys.
    pub min_count: Option<u32>,
    /// Raise no Insight for matching keys (their baselines are still kept).
    #[serde(default)]
    pub suppress: bool,
}

/// Calls by matching principals are not counted at all (e.g. a deployment role's bursts).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSuppression {
    /// `userIdentityArn` pattern, e.g. `arn:aws:sts::*:assumed-role/terraform-ci`.
    pub principal: String,
    /// `eventSource` pattern (default `*`).
    pub event_source: Option<String>,
    /// `eventName` pattern (default `*`).
    pub event_name: Option<String>,
    /// Account pattern (default `*`).
    pub account: Option<String>,
}

/// The values a key is matched on.
#[derive(Debug, Clone, Copy)]
pub struct KeyFields<'a> {
    /// Account.
    pub account: &'a str,
    /// Region.
    pub region: &'a str,
    /// `eventSource`.
    pub event_source: &'a str,
    /// `eventName`.
    pub event_name: &'a str,
    /// `errorCode` for error-rate keys.
    pub error_code: Option<&'a str>,
}

/// The effective settings of one rate key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyPolicy {
    /// Significance level per key-minute.
    pub tail_probability: f64,
    /// Minimum window rate / baseline rate.
    pub min_ratio: f64,
    /// Minimum calls in the triggering window.
    pub min_count: u32,
    /// No Insights for this key.
    pub suppress: bool,
}

/// A pattern that failed to compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// Why.
    pub reason: String,
}

fn compile(p: &Option<String>) -> Result<Option<glob::Pattern>, PatternError> {
    p.as_deref()
        .map(|s| {
            glob::Pattern::new(s).map_err(|e| PatternError {
                pattern: s.to_string(),
                reason: e.msg.to_string(),
            })
        })
        .transpose()
}

fn matches(p: &Option<glob::Pattern>, v: &str) -> bool {
    p.as_ref().is_none_or(|p| p.matches(v))
}

#[derive(Debug, Clone)]
struct CompiledOverride {
    account: Option<glob::Pattern>,
    region: Option<glob::Pattern>,
    event_source: Option<glob::Pattern>,
    event_name: Option<glob::Pattern>,
    error_code: Option<glob::Pattern>,
    rule: Override,
}

#[derive(Debug, Clone)]
struct CompiledSuppression {
    principal: glob::Pattern,
    event_source: Option<glob::Pattern>,
    event_name: Option<glob::Pattern>,
    account: Option<glob::Pattern>,
}

/// Compiled sensitivity settings (`Default`: medium sensitivity, no patterns).
#[derive(Debug, Clone)]
pub struct Policy {
    base: KeyPolicy,
    sensitive: Vec<(glob::Pattern, glob::Pattern)>,
    sensitive_min_count: u32,
    overrides: Vec<CompiledOverride>,
    suppressions: Vec<CompiledSuppression>,
}

impl Policy {
    /// Compiles the settings; `Err(PatternError)` names the first bad pattern.
    pub fn new(
        base: KeyPolicy,
        sensitive_apis: &[String],
        sensitive_min_count: u32,
        overrides: &[Override],
        suppressions: &[PrincipalSuppression],
    ) -> Result<Self, PatternError> {
        let sensitive = sensitive_apis
            .iter()
            .map(|api| {
                let (source, name) = api.split_once(':').unwrap_or(("*", api));
                Ok((
                    compile(&Some(source.to_string()))?.unwrap_or_default(),
                    compile(&Some(name.to_string()))?.unwrap_or_default(),
                ))
            })
            .collect::<Result<_, PatternError>>()?;
        let overrides = overrides
            .iter()
            .map(|o| {
                Ok(CompiledOverride {
                    account: compile(&o.account)?,
                    region: compile(&o.region)?,
                    event_source: compile(&o.event_source)?,
                    event_name: compile(&o.event_name)?,
                    error_code: compile(&o.error_code)?,
                    rule: o.clone(),
                })
            })
            .collect::<Result<_, PatternError>>()?;
        let suppressions = suppressions
            .iter()
            .map(|s| {
                Ok(CompiledSuppression {
                    principal: compile(&Some(s.principal.clone()))?.unwrap_or_default(),
                    event_source: compile(&s.event_source)?,
                    event_name: compile(&s.event_name)?,
                    account: compile(&s.account)?,
                })
            })
            .collect::<Result<_, PatternError>>()?;
        Ok(Policy {
            base,
            sensitive,
            sensitive_min_count,
            overrides,
            suppressions,
        })
    }

    /// The settings of one key: the global ones, then the sensitive-API minimum
    /// count, then every matching override in order (later ones win).
    pub fn for_key(&self, k: KeyFields<'_>) -> KeyPolicy {
        let mut p = self.base;
        if self
            .sensitive
            .iter()
            .any(|(s, n)| s.matches(k.event_source) && n.matches(k.event_name))
        {
            p.min_count = p.min_count.min(self.sensitive_min_count);
        }
        for o in &self.overrides {
            let error_ok = match (&o.error_code, k.error_code) {
                (None, _) => true,
                (Some(pat), Some(code)) => pat.matches(code),
                (Some(_), None) => false,
            };
            if error_ok
                && matches(&o.account, k.account)
                && matches(&o.region, k.region)
                && matches(&o.event_source, k.event_source)
                && matches(&o.event_name, k.event_name)
            {
                if let Some(s) = o.rule.sensitivity {
                    p.tail_probability = s.tail_probability();
                    p.min_ratio = s.min_ratio();
                }
                if let Some(c) = o.rule.min_count {
                    p.min_count = c;
                }
                p.suppress = o.rule.suppress;
            }
        }
        p
    }

    /// True when calls by `principal` to this API are not counted.
    pub fn ignores_principal(
        &self,
        principal: &str,
        account: &str,
        event_source: &str,
        event_name: &str,
    ) -> bool {
        self.suppressions.iter().any(|s| {
            s.principal.matches(principal)
                && matches(&s.event_source, event_source)
                && matches(&s.event_name, event_name)
                && matches(&s.account, account)
        })
    }

    /// True when there are principal suppressions at all.
    pub fn has_principal_suppressions(&self) -> bool {
        !self.suppressions.is_empty()
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            base: KeyPolicy {
                tail_probability: 1e-6,
                min_ratio: 3.0,
                min_count: 3,
                suppress: false,
            },
            sensitive: Vec::new(),
            sensitive_min_count: 2,
            overrides: Vec::new(),
            suppressions: Vec::new(),
        }
    }
}

/// Write APIs whose first burst matters even with no history: account takeover,
/// persistence, privilege escalation and defense evasion (as `eventSource:eventName` globs).
pub fn default_sensitive_apis() -> Vec<String> {
    [
        "iam.amazonaws.com:CreateAccessKey",
        "iam.amazonaws.com:CreateLoginProfile",
        "iam.amazonaws.com:UpdateLoginProfile",
        "iam.amazonaws.com:CreateUser",
        "iam.amazonaws.com:Attach*Policy",
        "iam.amazonaws.com:Put*Policy",
        "iam.amazonaws.com:CreatePolicyVersion",
        "iam.amazonaws.com:UpdateAssumeRolePolicy",
        "iam.amazonaws.com:AddUserToGroup",
        "iam.amazonaws.com:Deactivate*MFADevice",
        "iam.amazonaws.com:DeleteVirtualMFADevice",
        "sts.amazonaws.com:GetFederationToken",
        "cloudtrail.amazonaws.com:StopLogging",
        "cloudtrail.amazonaws.com:DeleteTrail",
        "cloudtrail.amazonaws.com:UpdateTrail",
        "cloudtrail.amazonaws.com:PutEventSelectors",
        "kms.amazonaws.com:ScheduleKeyDeletion",
        "kms.amazonaws.com:DisableKey",
        "organizations.amazonaws.com:LeaveOrganization",
        "s3.amazonaws.com:PutBucketPolicy",
        "s3.amazonaws.com:PutBucketAcl",
        "s3.amazonaws.com:DeleteBucketPolicy",
        "ec2.amazonaws.com:ModifySnapshotAttribute",
        "ec2.amazonaws.com:ModifyImageAttribute",
        "guardduty.amazonaws.com:DeleteDetector",
        "securityhub.amazonaws.com:DisableSecurityHub",
        "config.amazonaws.com:StopConfigurationRecorder",
        "rolesanywhere.amazonaws.com:CreateTrustAnchor",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(source: &'a str, name: &'a str, error: Option<&'a str>) -> KeyFields<'a> {
        KeyFields {
            account: "111122223333",
            region: "us-east-1",
            event_source: source,
            event_name: name,
            error_code: error,
        }
    }

    #[test]
    fn overrides_cascade_and_sensitive_apis_lower_the_minimum_count() {
        let base = KeyPolicy {
            tail_probability: 1e-6,
            min_ratio: 3.0,
            min_count: 3,
            suppress: false,
        };
        let overrides = vec![
            Override {
                event_source: Some("ec2.amazonaws.com".into()),
                sensitivity: Some(Sensitivity::Low),
                ..Default::default()
            },
            Override {
                event_name: Some("RunInstances".into()),
                suppress: true,
                ..Default::default()
            },
            Override {
                error_code: Some("Throttling*".into()),
                suppress: true,
                ..Default::default()
            },
        ];
        let p = Policy::new(base, &default_sensitive_apis(), 2, &overrides, &[]).unwrap();
        assert_eq!(
            p.for_key(key("iam.amazonaws.com", "CreateAccessKey", None))
                .min_count,
            2
        );
        assert_eq!(
            p.for_key(key("iam.amazonaws.com", "AttachRolePolicy", None))
                .min_count,
            2
        );
        assert_eq!(p.for_key(key("iam.amazonaws.com", "ListUsers", None)), base);
        let ec2 = p.for_key(key("ec2.amazonaws.com", "StartInstances", None));
        assert_eq!(
            (ec2.tail_probability, ec2.min_ratio, ec2.suppress),
            (Sensitivity::Low.tail_probability(), 5.0, false)
        );
        assert!(
            p.for_key(key("ec2.amazonaws.com", "RunInstances", None))
                .suppress
        );
        assert!(
            p.for_key(key(
                "s3.amazonaws.com",
                "PutObject",
                Some("ThrottlingException")
            ))
            .suppress
        );
        assert!(
            !p.for_key(key("s3.amazonaws.com", "PutObject", None))
                .suppress
        );
    }

    #[test]
    fn principal_suppressions_match_arns() {
        let base = KeyPolicy {
            tail_probability: 1e-6,
            min_ratio: 3.0,
            min_count: 3,
            suppress: false,
        };
        let s = vec![PrincipalSuppression {
            principal: "arn:aws:sts::*:assumed-role/terraform-*".into(),
            event_source: Some("iam.amazonaws.com".into()),
            ..Default::default()
        }];
        let p = Policy::new(base, &[], 2, &[], &s).unwrap();
        assert!(p.ignores_principal(
            "arn:aws:sts::1:assumed-role/terraform-ci",
            "1",
            "iam.amazonaws.com",
            "CreateRole"
        ));
        assert!(!p.ignores_principal(
            "arn:aws:sts::1:assumed-role/terraform-ci",
            "1",
            "ec2.amazonaws.com",
            "RunInstances"
        ));
        assert!(!p.ignores_principal(
            "arn:aws:iam::1:user/alice",
            "1",
            "iam.amazonaws.com",
            "CreateRole"
        ));
        assert!(Policy::new(base, &["iam.amazonaws.com:[".into()], 2, &[], &[]).is_err());
    }
}
