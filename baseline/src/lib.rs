//! Per-key rate baselines for trailsight: pure statistics, no I/O, no async.
//!
//! Everything here works on **counts per minute in UTC minute buckets** (minute
//! numbers are whole minutes since the Unix epoch, `i64`).
//!
//! - [`rolling`]: [`RollingRate`], a bounded rolling window of per-minute counts
//!   (hour-granular, sparse) giving the baseline mean and variance of the rate.
//! - [`changepoint`]: where the current level of a count series began (binary
//!   segmentation, quasi-Poisson likelihood ratio).
//! - [`dispersion`]: [`Dispersion`], the index of dispersion of window sums at
//!   1-, 15- and 60-minute scales, measured from a key's own history.
//! - [`tail`]: tail probabilities `P(X >= observed)` of a count under a
//!   baseline, with Poisson or negative binomial (over-dispersed) models from
//!   `statrs`.
//! - [`robust`]: [`SortedWindow`], robust location and scale (median,
//!   quantiles) of a sliding window of real values.
//! - [`multiscale`]: [`MultiScaleMean`], trailing means at several window
//!   lengths.
//! - [`seasonal`]: [`SlotProfile`], the median of each time-of-day slot over
//!   the last few days.
//! - [`surprise`]: tail probabilities of real values (empirical inside the
//!   sample, an exponential peaks-over-threshold tail beyond it), their
//!   Bonferroni combination and their surprise in bits.
//! - [`topk`]: [`SpaceSaving`], a bounded heavy-hitters summary used for
//!   baseline attributions.

pub mod changepoint;
pub mod dispersion;
pub mod multiscale;
pub mod robust;
pub mod rolling;
pub mod seasonal;
pub mod surprise;
pub mod tail;
pub mod topk;

pub use dispersion::{Dispersion, ScaleMoments};
pub use multiscale::MultiScaleMean;
pub use robust::SortedWindow;
pub use rolling::{BaselineStats, HourProfile, PhaseTotals, RatePrior, RollingRate};
pub use seasonal::SlotProfile;
pub use tail::{CountModel, count_tail_probability};
pub use topk::{SpaceSaving, WindowedTopK};

/// Minutes in one hour; the rolling window's bucket width.
pub const MINUTES_PER_HOUR: i64 = 60;
