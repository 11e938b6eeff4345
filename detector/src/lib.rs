//! Detection for trailsight: the CloudTrail record model, per-minute
//! aggregation, the Insight state machine and the Insights event builder.
//!
//! Pure and synchronous: no I/O, no async. Callers feed parsed log files in
//! delivery order and get back Insights events (schema: CloudTrail Insights
//! event, eventVersion 1.09).

pub mod aggregate;
pub mod batch;
pub mod calibration;
pub mod config;
pub mod detect;
pub mod engine;
pub mod insight;
pub mod record;
pub mod series;
pub mod time;

pub use batch::{BatchBuilder, BatchStats, FileBatch, TimeBounds};
pub use config::DetectorConfig;
pub use detect::judgement::Judgement;
pub use engine::{
    EmittedInsight, Engine, KeyReport, OpenInsightReport, RestoreError, SeriesBatch, SeriesKey,
};
pub use insight::InsightRecord;
pub mod policy;
