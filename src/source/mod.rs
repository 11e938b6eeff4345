//! Where log files come from. A source lists log files in processing order
//! (delivery time from the file name, then key) and reads their bytes.

pub mod local;

use std::path::PathBuf;

use crate::layout::LogKey;

/// One log file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Key relative to the source root, `/`-separated.
    pub key: String,
    /// Path on disk.
    pub path: PathBuf,
    /// What the key tells (layout, account, Region, delivery time).
    pub info: LogKey,
    /// Size in bytes.
    pub size: u64,
}

/// Sorts files into processing order: delivery time (files without one first), then key.
pub fn sort_for_processing(files: &mut [SourceFile]) {
    files.sort_by(|a, b| {
        a.info
            .delivered_minute
            .cmp(&b.info.delivered_minute)
            .then_with(|| a.key.cmp(&b.key))
    });
}
