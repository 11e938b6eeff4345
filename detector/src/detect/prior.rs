//! The deployment's prior on a key's rate, learnt across accounts and Regions.
//!
//! A key with little history (a sparse API, a new account or Region) is judged against what
//! the same API does elsewhere in the deployment, not against a constant. Every six hours the
//! per-minute rates of the mature keys (at least `warmup_minutes` of history) are pooled per
//! `eventSource:eventName` (and error code), and per `eventSource`. For a key, the pool of
//! the *other* keys of its API (or, with fewer than [`MIN_POOLED_KEYS`] of them, of its
//! service) gives a gamma prior on its rate λ by the method of moments: with `m` the mean and
//! `v` the variance of the other keys' rates,
//!
//! ```text
//! λ ~ Gamma(α₀ = m² / v, β₀ = m / v)        (mean m, variance v; β₀ in minutes)
//! ```
//!
//! and with `C` calls in the key's own `n` baseline minutes the posterior is
//! `Gamma(α₀ + C, β₀ + n)`: mean `(α₀ + C) / (β₀ + n)`, i.e. the pooled rate weighted as `β₀`
//! minutes of history. APIs whose rate varies a lot between keys give a weak prior (small
//! `β₀`), consistent ones a strong one. A `w`-minute window's count is then negative
//! binomial with the variance of the rate's uncertainty added (`w²·mean / (β₀ + n)`).
//!
//! A key whose API has a pooled prior needs no warm-up of its own: a new account or Region
//! inherits the deployment's knowledge at once. Without a pool (a single account, an API no
//! one else calls) the configured floor `min_baseline_rate` and the warm-up apply.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::{RateKey, Sym};

/// Other mature keys a pool needs before it is a prior.
pub const MIN_POOLED_KEYS: u32 = 2;
/// The strongest prior, minutes of history it may weigh as (the 7-day baseline window).
pub const MAX_PRIOR_MINUTES: f64 = 10_080.0;

/// Sums of per-minute rates of the keys in one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolMoments {
    /// Keys.
    pub keys: u32,
    /// Σ rate, calls per minute.
    pub sum: f64,
    /// Σ rate².
    pub sum_sq: f64,
}

impl PoolMoments {
    fn add(&mut self, rate: f64) {
        self.keys += 1;
        self.sum += rate;
        self.sum_sq += rate * rate;
    }

    /// The gamma prior of the pool without one member of rate `own` (`None`: not a member).
    fn prior_without(&self, own: Option<f64>) -> Option<GammaPrior> {
        let (n, sum, sum_sq) = match own {
            Some(r) => (self.keys.checked_sub(1)?, self.sum - r, self.sum_sq - r * r),
            None => (self.keys, self.sum, self.sum_sq),
        };
        if n < MIN_POOLED_KEYS {
            return None;
        }
        let nf = f64::from(n);
        let mean = sum / nf;
        if !(mean > 0.0 && mean.is_finite()) {
            return None;
        }
        // Sample variance of the rates, floored so that identical keys give the strongest
        // prior allowed rather than an infinite one.
        let var = ((sum_sq - nf * mean * mean) / (nf - 1.0)).max(mean / MAX_PRIOR_MINUTES);
        let beta = mean / var;
        Some(GammaPrior {
            alpha: mean * beta,
            beta,
        })
    }
}

/// A gamma prior on a rate: shape `alpha`, rate `beta` (minutes of pseudo-history).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaPrior {
    /// Shape: pseudo-calls.
    pub alpha: f64,
    /// Rate: pseudo-minutes.
    pub beta: f64,
}

impl GammaPrior {
    /// Posterior mean rate (calls per minute) after `calls` calls in `minutes` minutes.
    pub fn posterior_mean(&self, calls: u64, minutes: u64) -> f64 {
        (self.alpha + calls as f64) / (self.beta + minutes as f64)
    }
}

/// The pools, rebuilt at every six-hour boundary (deterministic: the same input gives the same
/// pools, across restarts too, since they are part of the checkpoint).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pools {
    /// The period they were built at (`minute / POOL_PERIOD_MINUTES`).
    pub hour: i64,
    api: HashMap<(Sym, Sym, Option<Sym>), PoolMoments>,
    service: HashMap<(Sym, bool), PoolMoments>,
}

impl Pools {
    /// No pools yet (built at the first closed minute).
    pub fn new() -> Self {
        Pools {
            hour: i64::MIN,
            ..Default::default()
        }
    }

    /// Rebuilds from `(key, rate)` of every mature key, at `hour`.
    pub fn rebuild(&mut self, hour: i64, mature: impl Iterator<Item = (RateKey, f64)>) {
        self.hour = hour;
        self.api.clear();
        self.service.clear();
        for (k, rate) in mature {
            self.api
                .entry((k.event_source, k.event_name, k.error_code))
                .or_default()
                .add(rate);
            self.service
                .entry((k.event_source, k.error_code.is_some()))
                .or_default()
                .add(rate);
        }
    }

    /// The prior of `key` (whose own pooled rate is `own`, if it was pooled): from the other
    /// keys of its API, else of its service; `None` when neither has enough keys.
    pub fn prior(&self, key: RateKey, own: Option<f64>) -> Option<GammaPrior> {
        self.api
            .get(&(key.event_source, key.event_name, key.error_code))
            .and_then(|p| p.prior_without(own))
            .or_else(|| {
                self.service
                    .get(&(key.event_source, key.error_code.is_some()))
                    .and_then(|p| p.prior_without(own))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source: Sym, name: Sym, account: Sym) -> RateKey {
        RateKey {
            account,
            region: 0,
            event_source: source,
            event_name: name,
            error_code: None,
        }
    }

    #[test]
    fn consistent_keys_give_a_strong_prior_and_varied_ones_a_weak_one() {
        let mut p = Pools::default();
        p.rebuild(
            1,
            [
                (key(1, 10, 1), 0.010),
                (key(1, 10, 2), 0.011),
                (key(1, 10, 3), 0.009),
            ]
            .into_iter(),
        );
        let g = p.prior(key(1, 10, 9), None).expect("pooled");
        assert!((g.alpha / g.beta - 0.01).abs() < 1e-12);
        assert!(g.beta > 5000.0, "{g:?}");
        let mut q = Pools::default();
        q.rebuild(
            1,
            [
                (key(1, 10, 1), 0.001),
                (key(1, 10, 2), 1.0),
                (key(1, 10, 3), 5.0),
            ]
            .into_iter(),
        );
        let g = q.prior(key(1, 10, 9), None).expect("pooled");
        assert!(g.beta < 1.0, "{g:?}");
    }

    #[test]
    fn a_key_is_not_its_own_prior_and_falls_back_to_its_service() {
        let mut p = Pools::default();
        p.rebuild(
            1,
            [
                (key(1, 10, 1), 0.5),
                (key(1, 10, 2), 0.5),
                (key(1, 11, 1), 0.1),
            ]
            .into_iter(),
        );
        // Key (1, 10, 1) has only one other key of its API: the service pool (two others) serves.
        let g = p.prior(key(1, 10, 1), Some(0.5)).expect("service pool");
        assert!((g.alpha / g.beta - 0.3).abs() < 1e-9, "{g:?}");
        // No pool for another service.
        assert!(p.prior(key(2, 10, 1), None).is_none());
        // Posterior: 60 minutes with 30 calls against the pool.
        let post = g.posterior_mean(30, 60);
        assert!(post > 0.3 && post < 0.5);
    }
}
