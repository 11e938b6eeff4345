//! trailsight: self-hosted CloudTrail Insights.
//!
//! The pipeline, one module a stage: [`source`] (log files in delivery order)
//! → [`decode`] (inflate and parse, off the async runtime) → the pure
//! `trailsight-detector` engine (aggregate, baseline, detect) → [`sink`]
//! (Insights files in the trail's `CloudTrail-Insight/` layout). [`replay`]
//! runs it once over a folder; [`synth`] builds realistic buckets from real
//! records for the demo, tests and benchmarks.

pub mod config;
pub mod cursor;
pub mod decode;
pub mod demo;
pub mod escape;
pub mod evaluate;
pub mod layout;
pub mod replay;
pub mod series;
pub mod serve;
pub mod sink;
pub mod source;
pub mod state;
pub mod synth;
