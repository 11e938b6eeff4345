//! The configuration file (TOML). Unknown keys are rejected; every key has a default.
//!
//! ```toml
//! [detector]
//! allowed_lateness_minutes = 15   # minutes a minute stays open for late records
//! baseline_window_minutes = 10080 # 7 days
//! warmup_minutes = 2160           # 36 hours of history before any Insight
//! windows_minutes = [1, 5, 15, 60, 360]
//! sensitivity = "medium"          # low | medium | high: 0.01 / 0.1 / 1 false Insights per key per 30 days
//! # tail_probability = 2.3e-6     # per key-minute; overrides the sensitivity's level
//! # min_ratio = 3.0               # overrides the sensitivity's ratio
//! min_count = 3
//! sensitive_min_count = 2         # for `sensitive_apis` (a built-in list by default)
//! end_tail_probability = 0.01
//! end_after_quiet_minutes = 5
//! max_insight_minutes = 1440
//! min_baseline_rate = 9.92063492063492e-5 # calls per minute (1/10080)
//! seasonality = true
//! profile_window_minutes = 40320 # 28 days of hourly history for daily/weekly profiles
//! min_profile_days = 3
//! min_profile_weeks = 2
//! profile_prior_minutes = 1440.0 # weight of the overall baseline in each hour's profile
//! seasonal_floor_fraction = 0.05
//! call_rate = true
//! error_rate = true
//! ```
//!
//! Per-key overrides and suppressions (patterns are globs; see `trailsight_detector::policy`):
//!
//! ```toml
//! [[detector.overrides]]            # more sensitive on IAM
//! event_source = "iam.amazonaws.com"
//! sensitivity = "high"
//!
//! [[detector.overrides]]            # never raise Insights for throttling errors
//! error_code = "Throttling*"
//! suppress = true
//!
//! [[detector.ignore_principals]]    # the deployment role's calls are not counted
//! principal = "arn:aws:sts::*:assumed-role/terraform-ci"
//! event_source = "iam.amazonaws.com"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trailsight_detector::DetectorConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Aggregation, baseline and detection settings (see [`DetectorConfig`]).
    pub detector: DetectorConfig,
    /// `trailsight serve`: sources, sinks, state (see [`crate::serve::ServeConfig`]).
    pub serve: Option<crate::serve::ServeConfig>,
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is invalid, has an unknown key or a value of the wrong type.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error (with line and column).
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid config {path}: {source}")]
    Range {
        /// The file.
        path: PathBuf,
        /// Which key and why.
        source: trailsight_detector::config::ConfigError,
    },
}

impl Config {
    /// Reads and validates a TOML file.
    ///
    /// Returns `Err(ConfigError::Read)` when the file cannot be read,
    /// `Err(ConfigError::Parse)` for invalid TOML or an unknown key, and
    /// `Err(ConfigError::Range)` for an out-of-range value.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        config
            .detector
            .validate()
            .map_err(|source| ConfigError::Range {
                path: path.into(),
                source,
            })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses_to_the_defaults() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let c = Config::parse(&example, Path::new("doc")).unwrap();
        assert_eq!(c, Config::default());
        // The overrides example parses too.
        let second: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! [[detector.overrides]]"))
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let c = Config::parse(&second, Path::new("doc")).unwrap();
        assert_eq!(c.detector.overrides.len(), 2);
        assert_eq!(c.detector.ignore_principals.len(), 1);
        let e = Config::parse(
            "[[detector.overrides]]\nevent_name = \"[\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid pattern"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_rejected() {
        let e = Config::parse("[detector]\nwarmup = 5\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown field `warmup`"), "{e}");
        let e =
            Config::parse("[detector]\ntail_probability = 2.0\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("detector.tail_probability"), "{e}");
        let e = Config::parse("[detectr]\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
