//! Helpers shared by the integration tests.

// Each test crate compiles this module and uses only some of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

/// Writes `bytes` at `root/key`, creating folders.
pub fn put(root: &Path, key: &str, bytes: &[u8]) {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Every file under `root` (not hidden ones, e.g. s3s-fs metadata), as relative path → bytes;
/// empty when `root` does not exist.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    if !root.exists() {
        return BTreeMap::new();
    }
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let key = e.path().strip_prefix(root).unwrap();
            (
                key.to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}
