//! Detector cost per key-minute and memory per tracked key, on 100,000 keys
//! with a realistic mix (most keys sparse): 1 % busy (about 5 calls every
//! minute), 9 % hourly (a call in about a third of the hours), 90 % sparse
//! (about one call a day). Seven days of closed minutes are fed to the
//! detector (baselines, seasonal profiles, attributions all live), then the
//! eighth day is timed.
//!
//! Prints: µs per closed minute, ns per key-minute (per tracked key and per
//! key with calls), heap bytes per key, checkpoint bytes per key; criterion then
//! times one closed minute.

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trailsight_detector::DetectorConfig;
use trailsight_detector::aggregate::{
    AttributionCounts, ClosedMinute, KeyId, MinuteSample, RateKey, Sym,
};
use trailsight_detector::detect::{Detector, KeyLookup, Transition};

const KEYS: u32 = 100_000;
const START: i64 = 29_000_000;

struct Keys;

impl KeyLookup for Keys {
    fn key(&self, id: KeyId) -> RateKey {
        RateKey {
            account: 0,
            region: 1,
            event_source: 2 + id % 50,
            event_name: 100 + id,
            error_code: None,
        }
    }
    fn history_start(&self, _: Sym, _: Sym) -> Option<i64> {
        Some(START)
    }
    fn resolve(&self, _: Sym) -> &str {
        "x"
    }
}

fn minute(rng: &mut ChaCha8Rng, m: i64) -> ClosedMinute {
    let mut samples = Vec::new();
    for id in 0..KEYS {
        let count = match id % 100 {
            0 => 3 + rng.random_range(0..5),
            1..=9 => u32::from(rng.random_bool(1.0 / 180.0)),
            _ => u32::from(rng.random_bool(1.0 / 1440.0)),
        };
        if count > 0 {
            let principal = 1_000_000 + rng.random_range(0..3);
            samples.push((
                id,
                MinuteSample {
                    count,
                    attributions: AttributionCounts {
                        principal: vec![(principal, count)],
                        user_agent: vec![(2_000_000, count)],
                        error_code: vec![(3_000_000, count)],
                    },
                },
            ));
        }
    }
    ClosedMinute { minute: m, samples }
}

fn detector(c: &mut Criterion) {
    let policy = DetectorConfig::default().policy().expect("policy");
    let mut det = Detector::new(DetectorConfig::default(), policy);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut out: Vec<Transition> = Vec::new();
    let warm_days = 7;
    for m in START..START + warm_days * 1440 {
        det.close_minute(&minute(&mut rng, m), &Keys, &mut out);
    }
    let day: Vec<ClosedMinute> = (0..1440)
        .map(|i| minute(&mut rng, START + warm_days * 1440 + i))
        .collect();
    let with_calls: usize = day.iter().map(|d| d.samples.len()).sum();
    let t = std::time::Instant::now();
    for d in &day {
        det.close_minute(d, &Keys, &mut out);
    }
    let elapsed = t.elapsed();
    let classes = out
        .iter()
        .filter(|t| t.start)
        .fold([0usize; 3], |mut acc, t| {
            let id = t.key.event_name - 100;
            acc[match id % 100 {
                0 => 0,
                1..=9 => 1,
                _ => 2,
            }] += 1;
            acc
        });
    eprintln!("Insights started on day 8 (busy, hourly, sparse keys): {classes:?}");
    let per_minute_us = elapsed.as_secs_f64() * 1e6 / 1440.0;
    let bytes = det.heap_bytes() + det.key_count() * std::mem::size_of::<usize>();
    eprintln!(
        "detector, {KEYS} keys, day 8: {per_minute_us:.1} µs per closed minute; {:.2} ns per tracked key-minute; \
         {:.0} ns per key-minute with calls ({with_calls} such); {:.0} heap bytes per key ({:.1} MiB); {} Insights",
        elapsed.as_secs_f64() * 1e9 / (1440.0 * f64::from(KEYS)),
        elapsed.as_secs_f64() * 1e9 / with_calls as f64,
        bytes as f64 / det.key_count() as f64,
        bytes as f64 / (1 << 20) as f64,
        out.len()
    );
    // What `serve` checkpoints for these keys (postcard, as in state.bin; the engine adds its
    // symbol table, open minutes and cursors on top).
    let checkpoint = postcard::to_allocvec(&det).expect("serializable");
    eprintln!(
        "checkpoint of the detector state: {} bytes, {:.0} bytes per key",
        checkpoint.len(),
        checkpoint.len() as f64 / f64::from(KEYS)
    );
    let mut g = c.benchmark_group("detector");
    g.sample_size(10);
    let mut i = 0usize;
    g.bench_function("close one minute, 100k keys", |b| {
        b.iter(|| {
            let mut d = day[i % day.len()].clone();
            d.minute = START + (warm_days + 1) * 1440 + i as i64;
            i += 1;
            det.close_minute(&d, &Keys, &mut out);
            out.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, detector);
criterion_main!(benches);
