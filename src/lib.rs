//! trailsight: self-hosted CloudTrail Insights.
//!
//! The folders are the pipeline: [`source`] (log files in delivery order, from a local
//! folder or S3) → [`pipeline`] (decode, the pure `trailsight-detector` engine, cursors and
//! checkpoints) → [`sink`] (Insights files in the trail's `CloudTrail-Insight/` layout, to a
//! local folder or S3). [`commands`] are the CLI's verbs (`replay` runs the pipeline once,
//! `serve` continuously); [`synth`] builds realistic buckets from real records for the demo,
//! tests and benchmarks; [`config`] is the settings file (a leaf: it imports nothing of the
//! service); [`layout`] is what a key says (account, Region, delivery time) and where an
//! Insights file goes, the vocabulary the source, the pipeline and the sink share.

pub mod commands;
pub mod config;
pub mod escape;
pub mod layout;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod s3;
pub mod sink;
pub mod source;
pub mod synth;
