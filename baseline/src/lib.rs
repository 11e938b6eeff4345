//! Per-key rate baselines for trailsight: pure statistics, no I/O, no async.
//!
//! Everything here works on **counts per minute in UTC minute buckets** (minute
//! numbers are whole minutes since the Unix epoch, `i64`).
//!
//! - [`rolling`]: [`RollingRate`], a bounded rolling window of per-minute counts
//!   (hour-granular, sparse) giving the baseline mean and variance of the rate.
//! - [`tail`]: tail probabilities `P(X >= observed)` of a count under a
//!   baseline, with Poisson or negative binomial (over-dispersed) models from
//!   `statrs`.
//! - [`topk`]: [`SpaceSaving`], a bounded heavy-hitters summary used for
//!   baseline attributions.

pub mod rolling;
pub mod tail;
pub mod topk;

pub use rolling::{BaselineStats, HourProfile, RatePrior, RollingRate};
pub use tail::{CountModel, count_tail_probability};
pub use topk::{SpaceSaving, WindowedTopK};

/// Minutes in one hour; the rolling window's bucket width.
pub const MINUTES_PER_HOUR: i64 = 60;
pub mod series;
