//! Crash-safe checkpoints: the engine (every key's baseline, the open minutes,
//! the open Insights) and each source's cursors, in a versioned binary file.
//!
//! Format (little endian): the 16-byte magic `TRAILSIGHT-STATE`, a `u32`
//! format version, a `u64` payload length, a `u32` CRC-32 of the payload, then
//! the payload (postcard-encoded [`Checkpoint`]). Written to a temporary file,
//! fsynced, renamed over `state.bin`, and the folder fsynced, so a crash at any
//! point leaves either the previous checkpoint or the new one. A file that is
//! truncated, corrupt or of another version is an error naming the file, never
//! a silent reset.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trailsight_detector::{DetectorConfig, Engine, RestoreError};

/// File name of the API's Insights store (SQLite) in the state folder.
pub const STORE_FILE: &str = "insights.sqlite";

/// Checkpoint file name inside the state folder.
pub const STATE_FILE: &str = "state.bin";
const MAGIC: &[u8; 16] = b"TRAILSIGHT-STATE";
/// Current format version (6: the hour a key was rebased to after a level shift; 5: the
/// hold-off after an Insight; 4: 16-byte hour buckets with packed
/// hour, largest minute, calls and exclusions; 3: multi-scale dispersion and delayed learning).
pub const FORMAT_VERSION: u32 = 6;

/// Everything a restart needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The engine.
    pub engine: Engine,
    /// Log files processed, per listing prefix (shared by every source, so a replay of a
    /// synced copy seeds `serve` on the bucket).
    pub cursors: crate::pipeline::cursor::Cursors,
    /// Log files processed in total.
    pub files_processed: u64,
}

/// Why a checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("checkpoint {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Another process holds the state folder's lock.
    #[error(
        "state folder {dir} is in use by {holder} (lock file {lock}); \
         one serve or replay --state per state folder"
    )]
    Locked {
        /// The state folder.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// Who holds it, as the lock file says (`process 1234`, or `another process`).
        holder: String,
    },
    /// The state folder cannot be created or written.
    #[error("state folder {dir} is not writable: {error}")]
    NotWritable {
        /// The folder.
        dir: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a trailsight checkpoint, is truncated, or fails its checksum.
    #[error("checkpoint {path} is corrupt: {reason}; move it away to start from scratch")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by another format version.
    #[error(
        "checkpoint {path} has format version {found}, this build reads version {FORMAT_VERSION}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// The state does not fit the settings.
    #[error("checkpoint {path}: {reason}")]
    Settings {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |error| StateError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Lock file name inside the state folder: holds the pid of the process using the folder.
pub const LOCK_FILE: &str = "lock";

/// The state folder's lock, held while the value lives (the OS releases it when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// Creates `dir` if missing and checks that files can be created, written and removed in it,
/// with a probe file that is removed again (`.trailsight-probe-<pid>`). For the state folder and
/// a local sink, before any work starts.
///
/// Returns the I/O error of the first step that failed.
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".trailsight-probe-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(b"probe")?;
        f.sync_all()
    });
    let removed = std::fs::remove_file(&probe);
    written.and(removed)
}

/// Takes the lock of the state folder `dir` (creating it, and checking it is writable): one
/// process at a time may use a state folder, since two would overwrite each other's checkpoint.
/// The lock is an exclusive advisory lock on `<dir>/lock`, which holds the owner's pid; it is
/// released when the returned value is dropped or the process ends.
///
/// Returns `Err(StateError::NotWritable)` when the folder cannot be created or written, and
/// `Err(StateError::Locked)` (naming the holder's pid) when another process holds the lock.
pub fn lock(dir: &Path) -> Result<StateLock, StateError> {
    let not_writable = |error| StateError::NotWritable {
        dir: dir.to_path_buf(),
        error,
    };
    check_writable(dir).map_err(not_writable)?;
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: the holder's pid stays readable until the lock is ours.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ =
                std::io::Read::read_to_string(&mut std::io::Read::take(&mut file, 64), &mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("process {pid}"),
                Err(_) => "another process".to_string(),
            };
            return Err(StateError::Locked {
                dir: dir.to_path_buf(),
                lock: path,
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
    }
    file.set_len(0)
        .and_then(|()| std::io::Seek::rewind(&mut file))
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all())
        .map_err(io(&path))?;
    Ok(StateLock { _file: file })
}

/// Writes `checkpoint` to `<dir>/state.bin` atomically; returns the file size in bytes.
pub fn save(dir: &Path, checkpoint: &Checkpoint) -> Result<u64, StateError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(STATE_FILE);
    let payload = postcard::to_stdvec(checkpoint).map_err(|e| StateError::Corrupt {
        path: path.clone(),
        reason: format!("cannot encode: {e}"),
    })?;
    let mut bytes = Vec::with_capacity(payload.len() + 32);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(bytes.len() as u64)
}

/// Reads `<dir>/state.bin`; `Ok(None)` when there is none. The engine gets `config`.
pub fn load(dir: &Path, config: &DetectorConfig) -> Result<Option<Checkpoint>, StateError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StateError::Io { path, error }),
    };
    decode_checkpoint(&bytes, &path, config).map(Some)
}

/// Decodes a checkpoint file's bytes (header, CRC-32, postcard payload); `path` names it in errors.
///
/// Errors: [`StateError::Corrupt`] (bad magic, truncated, checksum, undecodable payload),
/// [`StateError::Version`], [`StateError::Settings`] (the engine state does not fit `config`);
/// a payload that decodes but refers to keys, symbols or minutes it does not hold is
/// [`StateError::Corrupt`] too.
pub fn decode_checkpoint(
    bytes: &[u8],
    path: &Path,
    config: &DetectorConfig,
) -> Result<Checkpoint, StateError> {
    let corrupt = |reason: &str| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 32 || &bytes[..16] != MAGIC {
        return Err(corrupt(
            "not a trailsight checkpoint (bad magic or too short)",
        ));
    }
    let version = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if version != FORMAT_VERSION {
        return Err(StateError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[20..28]);
    let len = u64::from_le_bytes(len8) as usize;
    let crc = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    let payload = &bytes[32..];
    if payload.len() != len {
        return Err(corrupt(&format!(
            "payload is {} bytes, header says {len} (truncated?)",
            payload.len()
        )));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let mut checkpoint: Checkpoint =
        postcard::from_bytes(payload).map_err(|e| corrupt(&format!("cannot decode: {e}")))?;
    checkpoint.engine = checkpoint
        .engine
        .restore(config.clone())
        .map_err(|e| match e {
            RestoreError::Config(e) => StateError::Settings {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
            RestoreError::Inconsistent(reason) => StateError::Corrupt {
                path: path.to_path_buf(),
                reason,
            },
        })?;
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(DetectorConfig::default()).unwrap();
        let mut cursors = crate::pipeline::cursor::Cursors::default();
        cursors
            .advance("AWSLogs/1/CloudTrail/r/2026/11/10/1_CloudTrail_r_20261110T1200Z_a.json.gz");
        let size = save(
            dir.path(),
            &Checkpoint {
                engine,
                cursors: cursors.clone(),
                files_processed: 3,
            },
        )
        .unwrap();
        assert!(size > 32);
        let back = load(dir.path(), &DetectorConfig::default())
            .unwrap()
            .unwrap();
        assert_eq!(back.cursors, cursors);
        assert_eq!(back.files_processed, 3);

        let path = dir.path().join(STATE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = load(dir.path(), &DetectorConfig::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("state.bin is corrupt: checksum mismatch"),
            "{e}"
        );
        std::fs::write(&path, &bytes[..40]).unwrap();
        assert!(
            load(dir.path(), &DetectorConfig::default())
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        bytes[16] = 9;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load(dir.path(), &DetectorConfig::default()),
            Err(StateError::Version { found: 9, .. })
        ));
        assert!(
            load(&dir.path().join("none"), &DetectorConfig::default())
                .unwrap()
                .is_none()
        );
    }

    /// A payload (found by the `checkpoint` fuzz target) that decodes cleanly and carries a valid
    /// checksum but holds an open Insight on a rate key the aggregator does not have: rejected as
    /// corrupt, naming the key, instead of panicking later when the Insight is reported.
    #[test]
    fn a_state_that_refers_to_a_missing_key_is_corrupt() {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions/checkpoint");
        for name in [
            "open-insight-on-missing-key.bin",
            "checkpoint-crash-9a26d879",
        ] {
            let payload = std::fs::read(root.join(name)).unwrap();
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
            let e = decode_checkpoint(&bytes, Path::new("state.bin"), &DetectorConfig::default())
                .map(|_| ())
                .unwrap_err();
            assert!(
                matches!(&e, StateError::Corrupt { reason, .. } if reason.contains("rate key")),
                "{name}: {e}"
            );
        }
    }
}
