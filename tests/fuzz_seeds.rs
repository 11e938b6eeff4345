//! Fuzz smoke without instrumentation: every committed fuzz seed (`fuzz/seeds/<target>/`) and
//! every regression input found by fuzzing (`tests/data/fuzz-regressions/<target>/`) through
//! the same function bodies the cargo-fuzz targets call (`fuzz/src/lib.rs`, included here).

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use std::path::Path;

type Body = fn(&[u8]);

const TARGETS: &[(&str, Body)] = &[
    ("decode", bodies::decode),
    ("parse_log", bodies::parse_log),
    ("layout", bodies::layout),
    ("config", bodies::config),
    ("checkpoint", bodies::checkpoint),
];

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_input_passes_its_fuzz_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for (target, body) in TARGETS {
        let seeds = inputs(&root.join("fuzz/seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for fuzz target {target}");
        for path in seeds.iter().chain(&inputs(
            &root.join("tests/data/fuzz-regressions").join(target),
        )) {
            let bytes = std::fs::read(path).unwrap();
            let r = std::panic::catch_unwind(|| body(&bytes));
            assert!(
                r.is_ok(),
                "fuzz target {target} fails on {}",
                path.display()
            );
            ran += 1;
        }
    }
    assert!(ran >= TARGETS.len());
}
