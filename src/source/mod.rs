//! Where log files come from. A source lists log files in processing order
//! (delivery time from the file name, then key) and reads their bytes.

pub mod local;
pub mod s3;

use std::path::PathBuf;
use std::time::Duration;

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

/// What went wrong with a source, which decides what happens to the file: `Unavailable` is read
/// again later (the source is down), the others skip the file (reported and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceErrorKind {
    /// The file (or folder) does not exist (any more): local `NotFound`, S3 `NoSuchKey`/404.
    NotFound,
    /// The file exists but cannot be read as asked (broken on disk, an S3 error about the object).
    Unreadable,
    /// Reading this file is not permitted (local permission denied).
    Refused,
    /// The source cannot be reached now: no connection, timeout, 5xx or throttling after the
    /// client's retries, refused credentials (which would refuse every object alike), a body cut off.
    Unavailable,
}

impl SourceErrorKind {
    /// Every kind, in label order.
    pub const ALL: [SourceErrorKind; 4] = [
        SourceErrorKind::NotFound,
        SourceErrorKind::Unreadable,
        SourceErrorKind::Refused,
        SourceErrorKind::Unavailable,
    ];

    /// The metric label value (`not_found`, `unreadable`, `refused`, `unavailable`).
    pub fn label(self) -> &'static str {
        match self {
            SourceErrorKind::NotFound => "not_found",
            SourceErrorKind::Unreadable => "unreadable",
            SourceErrorKind::Refused => "refused",
            SourceErrorKind::Unavailable => "unavailable",
        }
    }

    /// The kind of a local I/O error.
    pub fn of_io(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => SourceErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => SourceErrorKind::Refused,
            _ => SourceErrorKind::Unreadable,
        }
    }
}

/// A source error: its kind and what happened (with the file or prefix named).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SourceError {
    /// What kind of error.
    pub kind: SourceErrorKind,
    /// What happened.
    pub reason: String,
}

impl SourceError {
    /// An error of `kind`.
    pub fn new(kind: SourceErrorKind, reason: impl Into<String>) -> Self {
        SourceError {
            kind,
            reason: reason.into(),
        }
    }

    /// True when the file must be read again later (the source is unavailable), not skipped.
    pub fn is_unavailable(&self) -> bool {
        self.kind == SourceErrorKind::Unavailable
    }
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

/// Where listing resumes, per listing prefix (the pipeline's cursors implement it).
pub trait ListFrom {
    /// True when `key` sorts after its prefix's cursor (not processed yet).
    fn is_new(&self, key: &str) -> bool;
    /// The key to list `prefix` after (S3 `StartAfter`), if any.
    fn start_after(&self, prefix: &str) -> Option<String>;
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
    pub async fn fetch(&self, file: &SourceFile) -> Result<Fetched, SourceError> {
        self.fetch_at_most(file, MAX_FILE_BYTES).await
    }

    /// The file's first `max_bytes` bytes (at least 1), and whether there was more.
    /// On S3, a file listed larger than `max_bytes` is fetched with a ranged `GetObject`; every
    /// body is read only up to the cap, whatever its announced length.
    ///
    /// Returns a [`SourceError`] whose kind is `NotFound` (no such file or key), `Refused` (local
    /// permission denied), `Unreadable` (another local read error or S3 error response about the
    /// object, e.g. `InvalidObjectState`), or `Unavailable` when S3 cannot be reached, times out,
    /// keeps answering 5xx/throttling after the SDK's retries, refuses the credentials or
    /// permissions (`ExpiredToken`, `SignatureDoesNotMatch`, `AccessDenied`, `KMS.…`), or the body
    /// is cut off.
    pub async fn fetch_at_most(
        &self,
        file: &SourceFile,
        max_bytes: u64,
    ) -> Result<Fetched, SourceError> {
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
    /// Returns `Err(SourceError)` when the folder or the bucket cannot be listed (S3: always
    /// `Unavailable`; local: by the I/O error).
    pub async fn list_new<C: ListFrom + Clone + Send + 'static>(
        &self,
        cursors: &C,
        limit: usize,
        settle: Duration,
    ) -> Result<Listed, SourceError> {
        match self {
            Source::Local(root) => {
                let root = root.clone();
                let cursors = cursors.clone();
                tokio::task::spawn_blocking(move || local::list_new(&root, &cursors, settle))
                    .await
                    .map_err(|e| {
                        SourceError::new(
                            SourceErrorKind::Unreadable,
                            format!("listing task failed: {e}"),
                        )
                    })?
            }
            Source::S3 {
                client,
                bucket,
                prefix,
            } => s3::list_s3(client, bucket, prefix, cursors, limit).await,
        }
    }

    /// Files fetched (and waiting to be decoded) at once, from any source: S3 requests wait on
    /// the network, and local reads and decodes are small per file (a few hundred records), so
    /// a deep queue keeps every core busy (memory stays within the byte budget of
    /// [`crate::pipeline::FetchLimits`]).
    pub fn parallelism(_sources: &[Source]) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (cores * 8).max(16)
    }
}
