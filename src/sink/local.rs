//! Writes Insights files under a local folder, atomically (temporary file, then rename).

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::{InsightFile, RejectReason, SinkError};
use crate::pipeline::layout::shown;

/// A local folder sink.
#[derive(Debug, Clone)]
pub struct LocalSink {
    root: PathBuf,
}

impl LocalSink {
    /// A sink writing under `root` (created on first write).
    pub fn new(root: &Path) -> Self {
        LocalSink {
            root: root.to_path_buf(),
        }
    }

    /// Where `key` goes: `<root>/<key>`.
    ///
    /// Returns `Err(RejectReason::LocalName)` unless `key` is a relative path of plain,
    /// non-empty `/`-separated names (no `.`, `..`, empty or absolute part, no NUL or
    /// backslash), so the path is always below the root.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, RejectReason> {
        let plain = !key.is_empty()
            && !key.contains(['\0', '\\'])
            && key
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
            && Path::new(key)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if plain {
            Ok(self.root.join(key))
        } else {
            Err(RejectReason::LocalName {
                path: shown(key),
                reason: "not a relative path of plain names".into(),
            })
        }
    }

    /// Writes one file at `<root>/<key>`; returns its path.
    ///
    /// Returns `Err(SinkError::Rejected)` when the name is refused, by [`LocalSink::path_of`] or by
    /// the file system (`ENAMETOOLONG`, `EINVAL`, `EILSEQ`): only this file is affected; and
    /// `Err(SinkError::Unavailable)` with the path for any other error (disk full, I/O error,
    /// permission denied, read-only file system).
    pub fn write(&self, file: &InsightFile) -> Result<PathBuf, SinkError> {
        let path = self.path_of(&file.key)?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| classify(e, dir))?;
        let tmp = path.with_extension("gz.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| classify(e, &tmp))?;
        f.write_all(&file.body)
            .and_then(|()| f.sync_all())
            .map_err(|e| classify(e, &tmp))?;
        std::fs::rename(&tmp, &path).map_err(|e| classify(e, &path))?;
        Ok(path)
    }
}

/// `ENAMETOOLONG`, `EINVAL` and `EILSEQ` (Linux numbers): the name, not the file system, is at fault.
const NAME_ERRNOS: [i32; 3] = [36, 22, 84];

/// A write error: about the name (the file is refused) or about the sink (an outage).
fn classify(e: std::io::Error, path: &Path) -> SinkError {
    let about_name = matches!(
        e.kind(),
        std::io::ErrorKind::InvalidFilename | std::io::ErrorKind::InvalidInput
    ) || e.raw_os_error().is_some_and(|n| NAME_ERRNOS.contains(&n));
    if about_name {
        SinkError::Rejected(RejectReason::LocalName {
            path: shown(&path.to_string_lossy()),
            reason: e.to_string(),
        })
    } else {
        SinkError::Unavailable(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    }
}

/// Reads every Insights record under `root` (any `CloudTrail-Insight/` file), in key order.
pub fn read_insight_files(
    root: &Path,
) -> std::io::Result<Vec<(String, Vec<trailsight_detector::InsightRecord>)>> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(rename = "Records")]
        records: Vec<trailsight_detector::InsightRecord>,
    }
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(std::io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let key = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .replace('\\', "/");
        if !key.contains("/CloudTrail-Insight/") || !key.ends_with(".json.gz") {
            continue;
        }
        let bytes = std::fs::read(entry.path())?;
        let (json, err) = crate::pipeline::decode::inflate(&bytes);
        if let Some(e) = err {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{key}: {e}"),
            ));
        }
        let file: File = serde_json::from_slice(&json).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{key}: {e}"))
        })?;
        out.push((key, file.records));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str) -> InsightFile {
        InsightFile {
            key: key.into(),
            body: b"x".to_vec(),
            records: 1,
            started: [1, 0],
            ended: [0, 0],
        }
    }

    #[test]
    fn names_the_file_system_refuses_are_rejected_and_outages_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::new(&dir.path().join("sink"));
        // A name too long for the file system (ENAMETOOLONG) even though the key is relative.
        let long = format!("AWSLogs/{}/f.json.gz", "1".repeat(300));
        assert!(matches!(
            sink.write(&file(&long)),
            Err(SinkError::Rejected(RejectReason::LocalName { .. }))
        ));
        for key in [
            "../x.json.gz",
            "/tmp/x",
            "a//b",
            "a/./b",
            "a/\0/b",
            "",
            "a\\..\\b",
        ] {
            assert!(
                matches!(
                    sink.write(&file(key)),
                    Err(SinkError::Rejected(RejectReason::LocalName { .. }))
                ),
                "{key:?}"
            );
        }
        assert!(sink.write(&file("AWSLogs/ok.json.gz")).is_ok());
        // A sink under a regular file: an outage (ENOTDIR), not a refused name.
        std::fs::write(dir.path().join("plain"), b"").unwrap();
        let blocked = LocalSink::new(&dir.path().join("plain"));
        assert!(matches!(
            blocked.write(&file("AWSLogs/ok.json.gz")),
            Err(SinkError::Unavailable(_))
        ));
    }
}
