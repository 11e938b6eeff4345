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
    /// `trailsight serve`: sources, sinks, state (see [`ServeConfig`]).
    pub serve: Option<ServeConfig>,
    /// The analysts' API of `serve` (see [`ApiConfig`]).
    pub api: ApiConfig,
}

/// The `[api]` table: the `/v1` routes `serve` mounts beside `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer token every `/v1` request must carry; the environment variable
    /// `TRAILSIGHT_API_TOKEN` overrides it. Unset: `/v1` answers 401 (the API is off).
    pub token: Option<String>,
    /// Insights records older than this many days are deleted from the store. Default 90 (as
    /// CloudTrail's event history); 1 to 3650.
    pub retention_days: u32,
    /// Webhooks: each Insights record is POSTed to every one, signed (Standard Webhooks).
    pub webhooks: Vec<WebhookConfig>,
    /// Require the bearer token on `/metrics`, `/healthz` and `/readyz` too (Prometheus sends it
    /// with `authorization: {credentials: …}` in its scrape config). Default false: the operator
    /// routes are open on `listen` (loopback by default).
    pub protect_operator_routes: bool,
    /// Days of per-minute series kept for keys that never had an Insight (so the days before
    /// an Insight that starts later can be drawn). Default 7; 1 to 90. Keys with an Insight
    /// keep theirs as long as Insights (`retention_days`), rolled up like CloudTrail's.
    pub series_days: u32,
    /// APIs (`eventSource:eventName`, e.g. `iam.amazonaws.com:CreateAccessKey`) whose series
    /// are kept as long as Insights whether or not they had one. At most 1000.
    pub keep_series: Vec<String>,
}

/// One `[[api.webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL receiving the POSTs.
    pub url: String,
    /// Signing secret, `whsec_` followed by base64 (at least 16 bytes), as Standard Webhooks.
    pub secret: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token: None,
            retention_days: 90,
            webhooks: Vec::new(),
            protect_operator_routes: false,
            series_days: 7,
            keep_series: Vec::new(),
        }
    }
}

impl ApiConfig {
    /// The token in effect: `TRAILSIGHT_API_TOKEN` if set and not empty, else `token`.
    pub fn effective_token(&self) -> Option<String> {
        std::env::var("TRAILSIGHT_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| self.token.clone().filter(|t| !t.is_empty()))
    }
}

/// Why a configuration file could not be used. Each message is one line and complete in
/// itself (the underlying error is part of it, not a separate `source`), so it prints once
/// whether shown with `{}` or as an error chain.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The TOML is invalid, has an unknown key or a value of the wrong type.
    #[error("invalid config {path}: line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line of the error, from 1 (0 when the parser gives no position).
        line: usize,
        /// Column of the error (in characters), from 1 (0 when the parser gives no position).
        column: usize,
        /// What is wrong (the TOML parser's message).
        message: String,
    },
    /// A detector value is out of range.
    #[error("invalid config {path}: {error}")]
    Range {
        /// The file.
        path: PathBuf,
        /// Which key and why.
        error: trailsight_detector::config::ConfigError,
    },
    /// An `[api]` value is out of range.
    #[error("invalid config {path}: api.{key}: {reason}")]
    Api {
        /// The file.
        path: PathBuf,
        /// The key in the `[api]` table.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A `[serve]` value is out of range or unusable.
    #[error("invalid config {path}: serve.{key}: {reason}")]
    Serve {
        /// The file.
        path: PathBuf,
        /// The key in the `[serve]` table (e.g. `poll_interval_seconds`, `s3.max_attempts`).
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// `[serve]` ranges: (key, least, greatest). Outside them a value is an error naming the key.
/// `poll_interval_seconds` 0 would list every source in a busy loop; `batch_files` bounds the
/// files in one batch and, ×20, the keys listed per prefix per poll (memory); `max_attempts` 0
/// is no request at all.
pub const SERVE_RANGES: &[(&str, u64, u64)] = &[
    ("poll_interval_seconds", 1, 86_400),
    ("checkpoint_interval_seconds", 0, 86_400),
    ("batch_files", 1, 100_000),
    ("s3.max_attempts", 1, 100),
];

/// The `[serve]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Log sources: `s3://<bucket>[/<prefix>]`, `file:///path` or a path.
    pub sources: Vec<String>,
    /// Insights sinks: `s3://<bucket>[/<prefix>]`, `file:///path` or a path (at most one of each kind).
    pub sinks: Vec<String>,
    /// Folder of the checkpoint (`state.bin`).
    pub state_dir: PathBuf,
    /// Seconds between polls. Default 60.
    #[serde(default = "default_poll")]
    pub poll_interval_seconds: u64,
    /// Seconds between checkpoints while a backlog is processed. Default 30.
    #[serde(default = "default_checkpoint")]
    pub checkpoint_interval_seconds: u64,
    /// Files processed between two checkpoint opportunities (bounds memory and re-reads). Default 500.
    #[serde(default = "default_batch")]
    pub batch_files: usize,
    /// A local file is read only once it has not been modified for this many seconds, so a file
    /// still being written (by `aws s3 sync`, a copy, a shipper) is never read in part; files
    /// after it wait too, to keep delivery order. Default 5; at most 3600.
    #[serde(default = "default_settle")]
    pub local_settle_seconds: u64,
    /// Address of the operator endpoints (`/metrics`, `/healthz`, `/readyz`): `host:port`, or
    /// `"off"`. Default `127.0.0.1:9464` (loopback; expose it deliberately).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// S3 client settings.
    #[serde(default)]
    pub s3: S3Config,
}

impl ServeConfig {
    /// Checks the ranges of the `[serve]` settings owned here.
    ///
    /// Returns `Err` naming the key (`serve.local_settle_seconds`) and its range.
    pub fn validate_source_settings(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.local_settle_seconds <= MAX_SETTLE_SECONDS,
            "serve.local_settle_seconds = {} is out of range (0 to {MAX_SETTLE_SECONDS})",
            self.local_settle_seconds
        );
        Ok(())
    }
}

/// Largest `local_settle_seconds`.
pub const MAX_SETTLE_SECONDS: u64 = 3600;

/// S3 client settings; credentials and region come from the standard AWS chain unless set here.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (needed by most S3-compatible servers).
    #[serde(default)]
    pub force_path_style: bool,
    /// Region (default: the AWS chain's, else `us-east-1`).
    pub region: Option<String>,
    /// Attempts per request, with the SDK's standard exponential backoff. Default 10.
    pub max_attempts: Option<u32>,
}

/// Default `[serve] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}

fn default_poll() -> u64 {
    60
}
fn default_checkpoint() -> u64 {
    30
}
fn default_batch() -> usize {
    500
}
fn default_settle() -> u64 {
    5
}

/// A parsed source or sink URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A bucket and key prefix (no trailing slash).
    S3 { bucket: String, prefix: String },
    /// A local folder.
    Local(PathBuf),
}

/// Parses `s3://bucket[/prefix]`, `file:///path` or a plain path.
///
/// Returns `Err(LocationError)` for `s3://` without a bucket or an empty path.
pub fn parse_location(url: &str) -> Result<Location, LocationError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LocationError::NoBucket(url.to_string()));
        }
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    if path.is_empty() {
        return Err(LocationError::EmptyPath(url.to_string()));
    }
    Ok(Location::Local(PathBuf::from(path)))
}

/// A source or sink URL that names no place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// `s3://` with no bucket.
    #[error("no bucket in {0:?}")]
    NoBucket(String),
    /// An empty path.
    #[error("empty path in {0:?}")]
    EmptyPath(String),
}

impl Config {
    /// Reads and validates a TOML file.
    ///
    /// Returns `Err(ConfigError::Read)` when the file cannot be read,
    /// `Err(ConfigError::Parse)` for invalid TOML or an unknown key, and
    /// `Err(ConfigError::Range)` or `Err(ConfigError::Serve)` for an out-of-range value.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.into(),
            error,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text (`path` names it in errors): the detector's ranges
    /// ([`DetectorConfig::validate`]) and the `[serve]` table's ([`SERVE_RANGES`], at least one
    /// source and one sink, each a valid location, at most one local and one S3 sink).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_column(text, s.start));
            ConfigError::Parse {
                path: path.into(),
                line,
                column,
                message: e.message().trim_end().to_string(),
            }
        })?;
        config
            .detector
            .validate()
            .map_err(|error| ConfigError::Range {
                path: path.into(),
                error,
            })?;
        if !(1..=3650).contains(&config.api.retention_days) {
            return Err(ConfigError::Api {
                path: path.to_path_buf(),
                key: "retention_days",
                reason: format!("{} is outside 1..=3650", config.api.retention_days),
            });
        }
        if !(1..=90).contains(&config.api.series_days) {
            return Err(ConfigError::Api {
                path: path.to_path_buf(),
                key: "series_days",
                reason: format!("{} is outside 1..=90", config.api.series_days),
            });
        }
        if config.api.keep_series.len() > 1000 {
            return Err(ConfigError::Api {
                path: path.to_path_buf(),
                key: "keep_series",
                reason: format!("{} entries; at most 1000", config.api.keep_series.len()),
            });
        }
        if let Some(bad) = config.api.keep_series.iter().find(|api| {
            !api.split_once(':').is_some_and(|(source, name)| {
                !source.is_empty()
                    && !name.is_empty()
                    && api.len() <= 256
                    && api.chars().all(|c| c.is_ascii_graphic())
            })
        }) {
            return Err(ConfigError::Api {
                path: path.to_path_buf(),
                key: "keep_series",
                reason: format!(
                    "{:?} is not eventSource:eventName (e.g. iam.amazonaws.com:CreateAccessKey)",
                    crate::escape::escape(bad)
                ),
            });
        }
        if let Some(serve) = &config.serve {
            validate_serve(serve).map_err(|(key, reason)| ConfigError::Serve {
                path: path.into(),
                key,
                reason,
            })?;
        }
        Ok(config)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Checks the `[serve]` table; `Err((key, reason))` for the first bad key.
fn validate_serve(sc: &ServeConfig) -> Result<(), (&'static str, String)> {
    let values = [
        sc.poll_interval_seconds,
        sc.checkpoint_interval_seconds,
        sc.batch_files as u64,
        sc.s3.max_attempts.map_or(10, u64::from),
    ];
    for (&(key, least, greatest), value) in SERVE_RANGES.iter().zip(values) {
        if !(least..=greatest).contains(&value) {
            return Err((key, format!("{value} is outside {least}..={greatest}")));
        }
    }
    if sc.sources.is_empty() {
        return Err(("sources", "needs at least one source".into()));
    }
    if sc.sinks.is_empty() {
        return Err((
            "sinks",
            "needs at least one sink (Insights would be written nowhere)".into(),
        ));
    }
    for url in &sc.sources {
        parse_location(url).map_err(|e| ("sources", format!("{e:#}")))?;
    }
    let (mut local, mut s3) = (0, 0);
    for url in &sc.sinks {
        match parse_location(url).map_err(|e| ("sinks", format!("{e:#}")))? {
            Location::Local(_) => local += 1,
            Location::S3 { .. } => s3 += 1,
        }
    }
    if local > 1 || s3 > 1 {
        return Err((
            "sinks",
            "at most one local folder and one S3 bucket (the others would be ignored)".into(),
        ));
    }
    if sc.state_dir.as_os_str().is_empty() {
        return Err(("state_dir", "is empty".into()));
    }
    if sc.listen != "off" && sc.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err((
            "listen",
            format!(
                "{:?} is not an address (e.g. \"127.0.0.1:9464\", \"[::1]:9464\") or \"off\"",
                sc.listen
            ),
        ));
    }
    Ok(())
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

    const SERVE: &str = "[serve]\nsources = [\"s3://trail\"]\nsinks = [\"/var/insights\"]\nstate_dir = \"/var/state\"\n";

    fn serve_error(extra: &str) -> String {
        Config::parse(&format!("{SERVE}{extra}"), Path::new("c.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn serve_values_are_range_checked_with_the_key_named() {
        let c = Config::parse(SERVE, Path::new("c.toml")).unwrap();
        assert_eq!(c.serve.unwrap().poll_interval_seconds, 60);
        for (extra, expected) in [
            (
                "poll_interval_seconds = 0\n",
                "invalid config c.toml: serve.poll_interval_seconds: 0 is outside 1..=86400",
            ),
            (
                "poll_interval_seconds = 18446744073709551615\n",
                "serve.poll_interval_seconds: 18446744073709551615 is outside 1..=86400",
            ),
            (
                "checkpoint_interval_seconds = 86401\n",
                "serve.checkpoint_interval_seconds: 86401 is outside 0..=86400",
            ),
            (
                "batch_files = 0\n",
                "serve.batch_files: 0 is outside 1..=100000",
            ),
            (
                "batch_files = 100001\n",
                "serve.batch_files: 100001 is outside 1..=100000",
            ),
            (
                "[serve.s3]\nmax_attempts = 0\n",
                "serve.s3.max_attempts: 0 is outside 1..=100",
            ),
            (
                "[serve.s3]\nmax_attempts = 4294967295\n",
                "serve.s3.max_attempts: 4294967295 is outside 1..=100",
            ),
        ] {
            let e = serve_error(extra);
            assert!(e.contains(expected), "{extra}: {e}");
        }
        // The bounds themselves are accepted.
        for extra in [
            "poll_interval_seconds = 1\ncheckpoint_interval_seconds = 0\nbatch_files = 1\n",
            "poll_interval_seconds = 86400\nbatch_files = 100000\n[serve.s3]\nmax_attempts = 100\n",
        ] {
            Config::parse(&format!("{SERVE}{extra}"), Path::new("c.toml")).unwrap();
        }
    }

    #[test]
    fn serve_locations_are_checked() {
        let with = |sources: &str, sinks: &str| {
            Config::parse(
                &format!("[serve]\nsources = {sources}\nsinks = {sinks}\nstate_dir = \"s\"\n"),
                Path::new("c.toml"),
            )
            .map(drop)
            .map_err(|e| e.to_string())
        };
        assert!(with("[\"a\"]", "[\"b\"]").is_ok());
        let e = with("[]", "[\"b\"]").unwrap_err();
        assert!(
            e.contains("serve.sources: needs at least one source"),
            "{e}"
        );
        let e = with("[\"a\"]", "[]").unwrap_err();
        assert!(e.contains("serve.sinks: needs at least one sink"), "{e}");
        let e = with("[\"s3://\"]", "[\"b\"]").unwrap_err();
        assert!(e.contains("serve.sources: no bucket"), "{e}");
        let e = with("[\"a\"]", "[\"b\", \"file:///c\"]").unwrap_err();
        assert!(e.contains("serve.sinks: at most one local folder"), "{e}");
        assert!(with("[\"a\"]", "[\"b\", \"s3://x/p\"]").is_ok());
        let e = Config::parse(
            "[serve]\nsources = [\"a\"]\nsinks = [\"b\"]\nstate_dir = \"\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("serve.state_dir: is empty"), "{e}");
    }

    #[test]
    fn errors_are_one_line_and_print_once() {
        // The message holds the cause; there is no separate `source` to print it again.
        let e = Config::load(Path::new("/nonexistent/c.toml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read config /nonexistent/c.toml: No such file or directory (os error 2)"
        );
        assert!(std::error::Error::source(&e).is_none());
        let e =
            Config::parse("a = 1\n\n[detector]\n  warmup = 5\n", Path::new("c.toml")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("invalid config c.toml: line 4, column 3: unknown field `warmup`")
                || text.starts_with("invalid config c.toml: line 1, column 1: unknown field `a`"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        let e = Config::parse("[detector]\nmin_count = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid config c.toml: detector.min_count: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_none());
    }
}
