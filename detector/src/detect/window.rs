//! The window search: which trailing window, if any, makes a key-minute unusual.
//!
//! Pure: it sees the calls of each trailing window and the models each window is judged
//! against, nothing of the key's state.

use super::model::{Model, Models};

/// Calls in one trailing window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCalls {
    /// Window length, minutes.
    pub minutes: u32,
    /// Calls (or errors) in it.
    pub calls: u64,
}

/// The thresholds a window must pass.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Thresholds {
    /// Significance level of one window's test (the key-minute level over the windows).
    pub per_window: f64,
    /// Minimum calls in the window.
    pub min_count: u32,
    /// Minimum ratio of the window's rate to the strictest model's rate.
    pub min_ratio: f64,
}

/// The most significant window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trigger {
    /// Its tail probability (the largest under the models: unusual under each of them).
    pub tail_probability: f64,
    /// Window length, minutes.
    pub minutes: u32,
    /// The strictest model it was judged against.
    pub model: Model,
}

/// Tests each window against its models (`models_for(minutes)`) and returns the most
/// significant one that passes every threshold: at least `min_count` calls, a rate at least
/// `min_ratio` × the strictest model's, and a tail probability below `per_window` under every
/// model. `None` when no window is unusual or a window has no model.
pub fn most_significant(
    windows: &[WindowCalls],
    models_for: impl Fn(u32) -> Models,
    t: Thresholds,
) -> Option<Trigger> {
    let mut best: Option<Trigger> = None;
    for w in windows {
        if w.calls < u64::from(t.min_count) {
            continue;
        }
        let models = models_for(w.minutes);
        let Some(strictest) = models.strictest() else {
            continue;
        };
        // Effect size first: it is cheap, the tail probability is not.
        if (w.calls as f64) < t.min_ratio * strictest.mean * f64::from(w.minutes) {
            continue;
        }
        let p = models
            .iter()
            .map(|m| m.tail_probability(w.minutes, w.calls))
            .fold(0.0f64, f64::max);
        if p < t.per_window && best.is_none_or(|b| p < b.tail_probability) {
            best = Some(Trigger {
                tail_probability: p,
                minutes: w.minutes,
                model: strictest,
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailsight_baseline::Dispersion;

    fn poisson(mean: f64) -> Models {
        Models::one(Model {
            mean,
            dispersion: Dispersion::POISSON,
            evidence_minutes: f64::INFINITY,
        })
    }

    const T: Thresholds = Thresholds {
        per_window: 1e-6,
        min_count: 3,
        min_ratio: 3.0,
    };

    #[test]
    fn a_burst_on_a_quiet_key_triggers_the_shortest_significant_window() {
        let w = [
            WindowCalls {
                minutes: 1,
                calls: 5,
            },
            WindowCalls {
                minutes: 5,
                calls: 6,
            },
        ];
        let t = most_significant(&w, |_| poisson(0.001), T).expect("unusual");
        assert!(t.tail_probability < 1e-9);
        assert_eq!(t.minutes, 1);
    }

    #[test]
    fn min_count_and_ratio_gate_before_the_tail() {
        let few = [WindowCalls {
            minutes: 1,
            calls: 2,
        }];
        assert!(most_significant(&few, |_| poisson(1e-6), T).is_none());
        // 2.5× the rate over an hour is very significant at 100/min but below the ratio gate.
        let busy = [WindowCalls {
            minutes: 60,
            calls: 15_000,
        }];
        assert!(most_significant(&busy, |_| poisson(100.0), T).is_none());
    }

    #[test]
    fn unusual_only_if_unusual_under_every_model() {
        let w = [WindowCalls {
            minutes: 5,
            calls: 40,
        }];
        let mut two = poisson(0.5);
        // A bursty model under which 40 in 5 minutes is ordinary.
        two.push(Model {
            mean: 0.5,
            dispersion: Dispersion {
                at_scales: [30.0, 60.0, 60.0],
            },
            evidence_minutes: f64::INFINITY,
        });
        assert!(most_significant(&w, |_| poisson(0.5), T).is_some());
        assert!(most_significant(&w, |_| two, T).is_none());
    }

    #[test]
    fn no_model_no_trigger() {
        let w = [WindowCalls {
            minutes: 1,
            calls: 100,
        }];
        assert!(most_significant(&w, |_| Models::default(), T).is_none());
    }
}
