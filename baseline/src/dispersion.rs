//! Dispersion of window sums at several time scales.
//!
//! Real API traffic comes in bursts that last tens of minutes, so the minutes
//! of a window are not independent draws: the variance of a 60-minute sum is
//! far larger than 60 times the per-minute variance. Treating them as
//! independent makes the long test windows over-confident on busy keys.
//!
//! # Model
//!
//! For a window of `w` minutes under a per-minute mean rate `μ`, the sum `S_w`
//! has mean `w·μ` and variance `Var(S_w) = w·μ·D(w)`, where `D(w)` is the
//! **index of dispersion at scale `w`** (1 for a Poisson process at every
//! scale; growing with `w` for bursty or level-shifting traffic: for a Poisson
//! process whose level wanders with variance `σ²`, `D(w) = 1 + w·σ²/μ`).
//!
//! `D` is measured, not assumed, at three scales from a key's own history of
//! aligned blocks: minutes (`w = 1`), quarter hours (`w = 15`) and hours
//! (`w = 60`). Over `n` minutes holding `C` calls, with `Σ S_s²` the sum of
//! squared block totals at scale `s` (there are `n / s` blocks):
//!
//! ```text
//! μ = C / n,   E[S_s²] = Σ S_s² / (n / s),   D(s) = (E[S_s²] − (s·μ)²) / (s·μ)
//! ```
//!
//! i.e. the variance of block sums around the pooled mean, which includes both
//! burstiness within the hour and variation of the level between the pooled
//! hours (between days, for a profile of one hour of the day): exactly the
//! uncertainty of a window's count given that mean. Between measured scales
//! `D` is interpolated linearly in `log w` (a power law `D ∝ w^β`, the form of
//! self-similar traffic); beyond an hour it is extrapolated with the slope
//! between 15 and 60 minutes, capped at `β = 1` (variance growing as `w²`, a
//! level shift, is the fastest a sum's variance can grow). `D` is floored at 1
//! and made non-decreasing in `w` (a conservative envelope: regular traffic is
//! never taken as less variable than Poisson).
//!
//! Estimates from few blocks are noisy (a profile with three days holds three
//! hour-blocks), so [`Dispersion::shrink`] pulls them towards a prior (the
//! key's whole-window dispersion) with a weight of a few blocks.

use serde::{Deserialize, Serialize};

/// The measured scales, minutes.
pub const SCALES: [u32; 3] = [1, 15, 60];

/// Index of dispersion `Var(S_w) / E[S_w]` of window sums at 1, 15 and 60
/// minutes (dimensionless, each ≥ 1 and non-decreasing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Dispersion {
    /// `D(1)`, `D(15)`, `D(60)`.
    pub at_scales: [f64; 3],
}

impl Default for Dispersion {
    fn default() -> Self {
        Self::POISSON
    }
}

/// Sums of squared block totals at the measured scales, and what they were taken over.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ScaleMoments {
    /// Minutes covered (`n`).
    pub minutes: u64,
    /// Calls in those minutes (`C`).
    pub calls: u64,
    /// `Σ S_s²` for `s` = 1, 15 and 60 minutes (aligned blocks).
    pub sum_sq: [f64; 3],
}

impl Dispersion {
    /// A Poisson process: `D(w) = 1` at every scale.
    pub const POISSON: Dispersion = Dispersion {
        at_scales: [1.0; 3],
    };

    /// Dispersion measured from block moments (see the module docs). A window with no
    /// calls or no minutes gives [`Dispersion::POISSON`].
    pub fn from_moments(m: &ScaleMoments) -> Self {
        if m.minutes == 0 || m.calls == 0 {
            return Self::POISSON;
        }
        let n = m.minutes as f64;
        let mu = m.calls as f64 / n;
        let mut d = [1.0; 3];
        for (i, &s) in SCALES.iter().enumerate() {
            let s = f64::from(s);
            let blocks = (n / s).max(1.0);
            let mean_block = s * mu;
            let var = m.sum_sq[i] / blocks - mean_block * mean_block;
            let v = var / mean_block;
            d[i] = if v.is_finite() { v } else { 1.0 };
        }
        Self::envelope(d)
    }

    /// Dispersion *within the hour*: `within1` and `within15` are the sums over hours of the
    /// squared deviations of minute and quarter-hour totals from their own hour's mean
    /// (`Σ S_s² − H² / (60 / s)` per hour), over `minutes` minutes holding `calls` calls. Each
    /// hour's mean is estimated from its own blocks, so the sums are divided by
    /// `blocks · (1 − s / 60)` (`60 / s − 1` degrees of freedom per hour). The 60-minute index
    /// is not measurable within an hour and is set to the 15-minute one (the envelope).
    ///
    /// This is the burstiness of the key wherever it happened in the window, without the
    /// daily cycle, which the seasonal profiles model.
    pub fn within_hour(minutes: u64, calls: u64, within1: f64, within15: f64) -> Self {
        if minutes == 0 || calls == 0 {
            return Self::POISSON;
        }
        let n = minutes as f64;
        let mu = calls as f64 / n;
        let index = |within: f64, s: f64| {
            let dof = (n / s * (1.0 - s / 60.0)).max(1.0);
            let v = within / dof / (s * mu);
            if v.is_finite() { v } else { 1.0 }
        };
        let d1 = index(within1, 1.0);
        let d15 = index(within15, 15.0);
        Self::envelope([d1, d15, d15])
    }

    /// Floors at 1 and makes the indices non-decreasing in the scale.
    fn envelope(mut d: [f64; 3]) -> Self {
        let mut floor = 1.0f64;
        for x in &mut d {
            *x = x.max(floor);
            floor = *x;
        }
        Dispersion { at_scales: d }
    }

    /// Shrinks towards `prior`: each scale's estimate from `minutes` minutes (so
    /// `minutes / s` blocks) is weighted against `prior_blocks` blocks of the prior.
    pub fn shrink(self, minutes: u64, prior: Dispersion, prior_blocks: f64) -> Self {
        let mut d = [1.0; 3];
        for (i, &s) in SCALES.iter().enumerate() {
            let b = minutes as f64 / f64::from(s);
            d[i] = (b * self.at_scales[i] + prior_blocks * prior.at_scales[i])
                / (b + prior_blocks).max(f64::MIN_POSITIVE);
        }
        Self::envelope(d)
    }

    /// An upper 95 % confidence bound of each index, as estimated from `minutes` minutes
    /// (counted in hour blocks at every scale, since bursts cluster within the hour, plus
    /// `extra_blocks` of prior): a variance estimated from `b` blocks is low by the factor
    /// `χ²₀.₀₅(b) / b` one time in twenty, so each index's excess over Poisson (`D − 1`) is
    /// divided by it (Wilson–Hilferty approximation of the χ² quantile). A key with a few days of
    /// history is judged with wider tails than one with weeks; the factor tends to 1, and a key
    /// with no sign of over-dispersion stays Poisson.
    pub fn upper_bound(self, minutes: u64, extra_blocks: f64) -> Self {
        let mut d = self.at_scales;
        for (x, &s) in d.iter_mut().zip(SCALES.iter()) {
            let b = minutes as f64 / f64::from(s).max(60.0) + extra_blocks;
            *x = 1.0 + (*x - 1.0) * chi2_lower_fraction(b).recip();
        }
        Self::envelope(d)
    }

    /// `D(w)` for a window of `w` minutes (`w = 0` is taken as 1).
    pub fn at(&self, w: u32) -> f64 {
        let [d1, d15, d60] = self.at_scales;
        let w = f64::from(w.max(1));
        let lerp = |x0: f64, x1: f64, y0: f64, y1: f64, x: f64| {
            let t = (x.ln() - x0.ln()) / (x1.ln() - x0.ln());
            (y0.ln() + t * (y1.ln() - y0.ln())).exp()
        };
        if w <= 15.0 {
            lerp(1.0, 15.0, d1, d15, w)
        } else if w <= 60.0 {
            lerp(15.0, 60.0, d15, d60, w)
        } else {
            let beta = ((d60.ln() - d15.ln()) / 4f64.ln()).clamp(0.0, 1.0);
            d60 * (w / 60.0).powf(beta)
        }
    }

    /// The more dispersed of two, scale by scale.
    pub fn max(self, other: Dispersion) -> Dispersion {
        let mut d = self.at_scales;
        for (x, y) in d.iter_mut().zip(other.at_scales) {
            *x = x.max(y);
        }
        Dispersion { at_scales: d }
    }
}

/// `χ²₀.₀₅(b) / b` by the Wilson–Hilferty approximation, floored at 0.05 (fewer than about
/// two blocks say almost nothing about a variance).
fn chi2_lower_fraction(b: f64) -> f64 {
    if b.is_nan() || b <= 0.0 {
        return 0.05;
    }
    let v = 2.0 / (9.0 * b);
    let c = 1.0 - v - 1.644_853_6 * v.sqrt();
    (c * c * c).max(0.05)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Block moments of a per-minute series.
    fn moments(counts: &[u32]) -> ScaleMoments {
        let mut m = ScaleMoments {
            minutes: counts.len() as u64,
            calls: counts.iter().map(|&c| u64::from(c)).sum(),
            sum_sq: [0.0; 3],
        };
        for (i, &s) in SCALES.iter().enumerate() {
            for block in counts.chunks(s as usize) {
                let t: u64 = block.iter().map(|&c| u64::from(c)).sum();
                m.sum_sq[i] += (t * t) as f64;
            }
        }
        m
    }

    /// A small deterministic generator (xorshift), to keep the tests free of I/O and seeds.
    struct Xs(u64);
    impl Xs {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn poisson(&mut self, lambda: f64) -> u32 {
            // Knuth's method; fine for the small means used here.
            let l = (-lambda).exp();
            let (mut k, mut p) = (0u32, 1.0);
            loop {
                p *= self.next();
                if p <= l {
                    return k;
                }
                k += 1;
            }
        }
    }

    #[test]
    fn poisson_traffic_has_dispersion_near_one_at_every_scale() {
        let mut g = Xs(0x9e3779b97f4a7c15);
        let counts: Vec<u32> = (0..60 * 24 * 14).map(|_| g.poisson(4.0)).collect();
        let d = Dispersion::from_moments(&moments(&counts));
        for x in d.at_scales {
            assert!((1.0..1.25).contains(&x), "{d:?}");
        }
    }

    #[test]
    fn bursts_of_tens_of_minutes_grow_dispersion_with_the_scale() {
        // Poisson at 2/min, with a 20-minute burst at 8/min starting every 3 hours.
        let mut g = Xs(7);
        let counts: Vec<u32> = (0..60 * 24 * 14)
            .map(|m| {
                let rate = if m % 180 < 20 { 8.0 } else { 2.0 };
                g.poisson(rate)
            })
            .collect();
        let d = Dispersion::from_moments(&moments(&counts));
        // The true variance of a 60-minute sum is far above 60 × the per-minute one.
        assert!(d.at(1) < 4.0, "{d:?}");
        assert!(d.at(60) > 10.0, "{d:?}");
        assert!(d.at(15) > 2.0 * d.at(1), "{d:?}");
    }

    #[test]
    fn level_noise_gives_the_textbook_dispersion() {
        // Each hour's rate is 5 or 15 per minute (σ² = 25 around μ = 10): D(w) = 1 + 2.5 w.
        let mut g = Xs(99);
        let mut counts = Vec::new();
        for _ in 0..24 * 28 {
            let rate = if g.next() < 0.5 { 5.0 } else { 15.0 };
            counts.extend((0..60).map(|_| g.poisson(rate)));
        }
        let d = Dispersion::from_moments(&moments(&counts));
        let want60 = 1.0 + 2.5 * 60.0;
        assert!((d.at(60) / want60 - 1.0).abs() < 0.25, "{d:?} vs {want60}");
        let want15 = 1.0 + 2.5 * 15.0;
        assert!((d.at(15) / want15 - 1.0).abs() < 0.25, "{d:?} vs {want15}");
    }

    #[test]
    fn within_hour_dispersion_ignores_the_daily_cycle() {
        // Poisson with a strong daily cycle (1 to 19 per minute): around the whole-window mean
        // the minutes look over-dispersed, around their own hour they are Poisson.
        let mut g = Xs(5);
        let counts: Vec<u32> = (0..60 * 24 * 14)
            .map(|m| {
                let phase = (m % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
                g.poisson(10.0 + 9.0 * phase.sin())
            })
            .collect();
        let all = moments(&counts);
        assert!(Dispersion::from_moments(&all).at(1) > 3.0);
        let (mut w1, mut w15) = (0.0, 0.0);
        for hour in counts.chunks(60) {
            let h: f64 = hour.iter().map(|&c| f64::from(c)).sum();
            w1 += hour.iter().map(|&c| f64::from(c).powi(2)).sum::<f64>() - h * h / 60.0;
            w15 += hour
                .chunks(15)
                .map(|q| q.iter().map(|&c| f64::from(c)).sum::<f64>().powi(2))
                .sum::<f64>()
                - h * h / 4.0;
        }
        let d = Dispersion::within_hour(all.minutes, all.calls, w1, w15);
        // What is left at 15 minutes is the cycle's slope within the hour (a quarter hour at
        // 10 ± 9 per minute drifts by up to ±13 calls from its hour's mean): ≈ 1.4.
        let whole = Dispersion::from_moments(&all);
        assert!(d.at(1) < 1.15 && d.at(15) < 1.6, "{d:?}");
        assert!(whole.at(15) > 10.0 * d.at(15), "{whole:?} vs {d:?}");
    }

    #[test]
    fn shrinkage_weighs_blocks() {
        let own = Dispersion {
            at_scales: [1.0, 2.0, 3.0],
        };
        let prior = Dispersion {
            at_scales: [1.0, 10.0, 30.0],
        };
        // 180 minutes: 12 quarter-hour blocks and 3 hour blocks against 8 prior blocks.
        let s = own.shrink(180, prior, 8.0);
        assert!((s.at_scales[1] - (12.0 * 2.0 + 80.0) / 20.0).abs() < 1e-9);
        assert!((s.at_scales[2] - (9.0 + 240.0) / 11.0).abs() < 1e-9);
    }

    #[test]
    fn upper_bound_widens_short_histories_most() {
        // χ²₀.₀₅(100) = 77.93: a variance from 100 blocks is divided by 0.7793.
        assert!((chi2_lower_fraction(100.0) - 0.7793).abs() < 0.002);
        let d = Dispersion {
            at_scales: [2.0, 4.0, 8.0],
        };
        let short = d.upper_bound(36 * 60, 0.0);
        let long = d.upper_bound(28 * 1440, 0.0);
        assert!(short.at(60) > long.at(60) && long.at(60) > 8.0);
        assert!(long.at(60) < 8.0 * 1.1);
    }

    /// Fraction of the non-overlapping `w`-minute windows of `test` whose tail probability
    /// under `(mean, dispersion)` is below `level`.
    fn exceedances(test: &[u32], mean: f64, d: Dispersion, w: usize, level: f64) -> f64 {
        let windows: Vec<u64> = test
            .chunks_exact(w)
            .map(|c| c.iter().map(|&x| u64::from(x)).sum())
            .collect();
        let wf = w as f64;
        let model = crate::CountModel::new(mean * wf, mean * wf * d.at(w as u32));
        let hits = windows
            .iter()
            .filter(|&&s| model.tail_probability(s) < level)
            .count();
        hits as f64 / windows.len() as f64
    }

    /// Calibration: a bursty process (Poisson whose level wanders hour to hour, plus 20-minute
    /// bursts), dispersion learnt on two weeks, windows of the next two weeks tested at 1 %:
    /// the observed false-alarm rate is near nominal at every scale, while treating minutes
    /// as independent is wrong by an order of magnitude at an hour.
    #[test]
    fn measured_dispersion_keeps_the_nominal_false_alarm_rate() {
        let mut g = Xs(0x5eed);
        let mut counts = Vec::new();
        for _ in 0..24 * 28 {
            let level = 3.0 * (0.6 * (g.next() - 0.5)).exp();
            let burst_at = (g.next() * 120.0) as usize;
            for m in 0..60 {
                let burst = if (burst_at..burst_at + 20).contains(&m) {
                    4.0
                } else {
                    0.0
                };
                counts.push(g.poisson(level + burst * f64::from(u8::from(burst_at < 40))));
            }
        }
        let (learn, test) = counts.split_at(14 * 1440);
        let m = moments(learn);
        let d = Dispersion::from_moments(&m);
        let mean = m.calls as f64 / m.minutes as f64;
        let level = 0.01;
        for w in [1usize, 5, 15, 60] {
            let observed = exceedances(test, mean, d, w, level);
            // Nominal 1 %; allow sampling error (336 hourly windows: ±1.1 % at 2σ) and the
            // conservative envelope.
            assert!(observed <= 2.5 * level, "w = {w}: {observed} ({d:?})");
        }
        let naive = exceedances(test, mean, Dispersion::POISSON, 60, level);
        assert!(naive > 10.0 * level, "independent minutes: {naive}");
    }

    proptest! {
        #[test]
        fn dispersion_is_at_least_one_and_non_decreasing(counts in proptest::collection::vec(0u32..40, 60..2000), w in 1u32..1440) {
            let d = Dispersion::from_moments(&moments(&counts));
            prop_assert!(d.at(w) >= 1.0 - 1e-9);
            prop_assert!(d.at(w + 1) + 1e-9 >= d.at(w), "{:?} at {}", d, w);
            prop_assert!(d.at(w).is_finite());
            // Never grows faster than the level-shift bound beyond an hour.
            if w > 60 {
                prop_assert!(d.at(w) <= d.at(60) * f64::from(w) / 60.0 + 1e-6);
            }
        }

        #[test]
        fn interpolation_passes_through_the_measured_scales(a in 1.0f64..5.0, b in 0.0f64..10.0, c in 0.0f64..50.0) {
            let d = Dispersion::envelope([a, a + b, a + b + c]);
            for (i, &s) in SCALES.iter().enumerate() {
                prop_assert!((d.at(s) - d.at_scales[i]).abs() < 1e-9 * d.at_scales[i]);
            }
        }
    }
}
