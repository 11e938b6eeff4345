//! Ingest throughput: records/s from `.json.gz` bytes to closed per-minute counts,
//! beside the floor measured on the same bytes in the same run (gzip inflate +
//! a `serde_json::IgnoredAny` pass, no allocation per record).
//!
//! The bytes are a one-day slice of the demo bucket at 20× its rates (real
//! Stratus Red Team and AWS docs records, fresh eventTime/eventID), as
//! CloudTrail delivers them: 5-minute gzip files.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::de::IgnoredAny;
use trailsight::pipeline::decode::{decode, inflate};
use trailsight_detector::aggregate::Aggregator;
use trailsight_detector::{DetectorConfig, Engine, TimeBounds};

/// Gzip bytes of each log file with its delivery minute, in delivery order.
type Corpus = Vec<(Vec<u8>, Option<i64>)>;

fn corpus() -> (Corpus, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, stats) =
        trailsight::synth::demo::write_demo_bucket(dir.path(), 1.0, 20.0).expect("demo bucket");
    let mut files: Vec<(String, Vec<u8>, Option<i64>)> = stats
        .paths
        .iter()
        .map(|p| {
            let key = p.to_string_lossy().into_owned();
            let delivered = trailsight::layout::parse_key(&key).delivered_minute;
            (key, std::fs::read(p).expect("read"), delivered)
        })
        .collect();
    files.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    (
        files.into_iter().map(|f| (f.1, f.2)).collect(),
        stats.records,
    )
}

fn ingest(c: &mut Criterion) {
    let (files, records) = corpus();
    let bytes: usize = files.iter().map(|f| f.0.len()).sum();
    eprintln!(
        "corpus: {} files, {records} records, {:.1} MB gzip",
        files.len(),
        bytes as f64 / 1e6
    );
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(records));
    g.sample_size(10);
    g.bench_function("floor: inflate + IgnoredAny", |b| {
        b.iter(|| {
            for (gz, _) in &files {
                let (json, _) = inflate(gz);
                let _: IgnoredAny = serde_json::from_slice(&json).expect("json");
            }
        })
    });
    g.bench_function("trailsight: decode + aggregate to closed minutes", |b| {
        b.iter(|| {
            let mut agg = Aggregator::new(15, true, true);
            let mut late = Vec::new();
            let mut closed = 0usize;
            for (gz, delivered) in &files {
                let d = decode(gz, TimeBounds::UNBOUNDED);
                agg.push(&d.batch, *delivered, &mut late);
                closed += agg.close_ready().minutes.len();
            }
            closed + agg.close_all().minutes.len()
        })
    });
    g.bench_function("trailsight: decode + aggregate + detect", |b| {
        b.iter(|| {
            let mut engine = Engine::new(DetectorConfig::default()).expect("config");
            let mut n = 0;
            for (gz, delivered) in &files {
                n += engine
                    .ingest(&decode(gz, TimeBounds::UNBOUNDED).batch, *delivered)
                    .len();
            }
            n + engine.finish().len()
        })
    });
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
