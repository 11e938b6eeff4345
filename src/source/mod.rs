//! Where log files come from. A source lists log files in processing order
//! (delivery time from the file name, then key) and reads their bytes.

pub mod local;
pub mod s3;

use std::path::PathBuf;
use std::time::Duration;

use crate::pipeline::cursor::Cursors;
use crate::pipeline::layout::LogKey;

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

/// Why a log file's bytes could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The object itself cannot be read (missing, forbidden, broken on disk): report and skip it.
    #[error("{0}")]
    Unreadable(String),
    /// The source is down or timing out: the file must be read again later, not skipped.
    #[error("{0}")]
    Unavailable(String),
}

/// A log file's bytes, as far as they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The first bytes of the file, at most the cap given.
    pub bytes: Vec<u8>,
    /// True when the file is longer than the cap: the rest was not read.
    pub truncated: bool,
}

/// What one poll found in a source.
#[derive(Debug, Default)]
pub struct Listed {
    /// New log files.
    pub files: Vec<SourceFile>,
    /// For each prefix whose listing stopped at the per-poll limit, its last key listed, as the
    /// (delivery minute, key) order used to process files.
    pub truncated_at: Vec<(Option<i64>, String)>,
    /// The first local file (in processing order) still being written: it and every file after
    /// it wait for a later poll.
    pub unsettled: Option<(Option<i64>, String)>,
}

/// Largest number of bytes read from one log file (compressed bytes for a gzip file): 256 MiB.
/// CloudTrail delivers files of a few MB at most; the records before the cut are kept and the
/// file is reported as read in part.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Where log files come from: a local folder or an S3 bucket and prefix.
#[derive(Debug, Clone)]
pub enum Source {
    /// A folder laid out like a trail bucket, or loose files (each file's `path` is read).
    Local(PathBuf),
    /// `ListObjectsV2` / `GetObject` in this bucket, under this key prefix (no trailing slash).
    S3 {
        /// Client.
        client: aws_sdk_s3::Client,
        /// Bucket.
        bucket: String,
        /// Key prefix (empty: the whole bucket).
        prefix: String,
    },
}

impl Source {
    /// The file's bytes, at most [`MAX_FILE_BYTES`] of them (see [`Source::fetch_at_most`]).
    pub async fn fetch(&self, file: &SourceFile) -> Result<Fetched, FetchError> {
        self.fetch_at_most(file, MAX_FILE_BYTES).await
    }

    /// The file's first `max_bytes` bytes (at least 1), and whether there was more.
    /// On S3, a file listed larger than `max_bytes` is fetched with a ranged `GetObject`; every
    /// body is read only up to the cap, whatever its announced length.
    ///
    /// Returns `Err(FetchError::Unreadable)` for a local read error or an S3 error response
    /// about the object (e.g. `NoSuchKey`, `InvalidObjectState`), and
    /// `Err(FetchError::Unavailable)` when S3 cannot be reached, times out, keeps answering
    /// 5xx/throttling after the SDK's retries, refuses the credentials or permissions
    /// (`ExpiredToken`, `SignatureDoesNotMatch`, `AccessDenied`, `KMS.…`), or the body is cut off.
    pub async fn fetch_at_most(
        &self,
        file: &SourceFile,
        max_bytes: u64,
    ) -> Result<Fetched, FetchError> {
        let max = max_bytes.max(1);
        match self {
            Source::Local(_) => local::read_at_most(&file.path, file.size, max).await,
            Source::S3 { client, bucket, .. } => {
                s3::get_at_most(client, bucket, &file.key, file.size, max).await
            }
        }
    }

    /// New log files (after `cursors`): a local folder is walked off the async runtime and files
    /// modified less than `settle` ago hold back the files after them; S3 prefixes are listed
    /// from their cursors, at most `limit` keys each per call.
    ///
    /// Returns `Err` when the folder or the bucket cannot be listed.
    pub async fn list_new(
        &self,
        cursors: &Cursors,
        limit: usize,
        settle: Duration,
    ) -> anyhow::Result<Listed> {
        match self {
            Source::Local(root) => {
                let root = root.clone();
                let cursors = cursors.clone();
                tokio::task::spawn_blocking(move || local::list_new(&root, &cursors, settle))
                    .await?
            }
            Source::S3 {
                client,
                bucket,
                prefix,
            } => s3::list_s3(client, bucket, prefix, cursors, limit).await,
        }
    }

    /// Files fetched at once: I/O-bound S3 requests need more in flight than local reads.
    pub fn parallelism(sources: &[Source]) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        if sources.iter().any(|f| matches!(f, Source::S3 { .. })) {
            (cores * 8).max(16)
        } else {
            (cores * 2).max(2)
        }
    }
}
