//! A local folder laid out like a trail bucket (`aws s3 sync s3://bucket/AWSLogs ./logs`), or loose files.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{SourceFile, sort_for_processing};
use crate::layout::{KeyKind, is_log_file_name, parse_key};

/// What a listing found besides the log files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Log files in processing order.
    pub files: Vec<SourceFile>,
    /// Digest files skipped.
    pub digests: u64,
    /// Insights files skipped.
    pub insights: u64,
    /// Other files ignored (not `.json`/`.json.gz`).
    pub other: u64,
    /// Entries that could not be read: (path, reason).
    pub unreadable: Vec<(String, String)>,
}

/// Lists `root` recursively. A file given as `root` is listed alone.
///
/// Returns `Err` only when `root` itself cannot be read.
pub fn list(root: &Path) -> std::io::Result<Listing> {
    std::fs::metadata(root)?;
    let mut listing = Listing::default();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                listing.unreadable.push((path, e.to_string()));
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let key = if rel.as_os_str().is_empty() {
            entry.file_name().to_string_lossy().into_owned()
        } else {
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        };
        if !is_log_file_name(&key) {
            listing.other += 1;
            continue;
        }
        let info = parse_key(&key);
        match info.kind {
            KeyKind::Digest => listing.digests += 1,
            KeyKind::Insight => listing.insights += 1,
            KeyKind::Log => {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                listing.files.push(SourceFile {
                    key,
                    path: entry.path().to_path_buf(),
                    info,
                    size,
                });
            }
        }
    }
    sort_for_processing(&mut listing.files);
    Ok(listing)
}

/// True when the file at `path` has not been modified for at least `settle` before `now`
/// (its modification time is `settle` or more in the past), so it is not being written.
///
/// A file whose metadata cannot be read counts as settled: reading it then reports the error.
/// A modification time in the future (a clock ahead of ours) is not settled until `now`
/// passes it by `settle`.
pub fn settled(path: &Path, now: SystemTime, settle: Duration) -> bool {
    if settle.is_zero() {
        return true;
    }
    match std::fs::metadata(path).and_then(|m| m.modified()) {
        Ok(modified) => now.duration_since(modified).is_ok_and(|age| age >= settle),
        Err(_) => true,
    }
}

/// New log files under `root` (after `cursors`), and the first one modified less than `settle`
/// ago (it and the files after it wait).
///
/// Returns `Err(SourceError)` (kind by the I/O error) when `root` cannot be read.
pub fn list_new(
    root: &Path,
    cursors: &impl super::ListFrom,
    settle: Duration,
) -> Result<super::Listed, super::SourceError> {
    let listing = list(root).map_err(|e| {
        super::SourceError::new(
            super::SourceErrorKind::of_io(&e),
            format!("{}: {e}", root.display()),
        )
    })?;
    let files: Vec<SourceFile> = listing
        .files
        .into_iter()
        .filter(|f| cursors.is_new(&f.key))
        .collect();
    let now = SystemTime::now();
    let unsettled = files
        .iter()
        .find(|f| !settled(&f.path, now, settle))
        .map(|f| (f.info.delivered_minute, f.key.clone()));
    Ok(super::Listed {
        files,
        truncated_at: Vec::new(),
        unsettled,
    })
}

/// The first `max` bytes of the file at `path` (`size`: its listed size, a capacity hint), and
/// whether there was more. `Err(SourceError)` (kind by the I/O error) when it cannot be opened or read.
pub async fn read_at_most(
    path: &Path,
    size: u64,
    max: u64,
) -> Result<super::Fetched, super::SourceError> {
    use tokio::io::AsyncReadExt;
    let capacity = usize::try_from(size.min(max)).unwrap_or(0);
    let read = async {
        let f = tokio::fs::File::open(path).await?;
        let mut bytes = Vec::with_capacity(capacity);
        // One byte past the cap tells whether there is more.
        f.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .await?;
        Ok::<_, std::io::Error>(bytes)
    };
    let mut bytes = read
        .await
        .map_err(|e| super::SourceError::new(super::SourceErrorKind::of_io(&e), e.to_string()))?;
    let truncated = bytes.len() as u64 > max;
    bytes.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    Ok(super::Fetched { bytes, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_settled_once_unmodified_for_the_settle_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, b"{}").unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let settle = Duration::from_secs(5);
        assert!(!settled(&path, modified + Duration::from_secs(4), settle));
        assert!(settled(&path, modified + Duration::from_secs(5), settle));
        // A modification time ahead of our clock is not settled.
        assert!(!settled(&path, modified - Duration::from_secs(60), settle));
        assert!(settled(&path, modified, Duration::ZERO));
        assert!(settled(&dir.path().join("missing"), modified, settle));
    }
}
