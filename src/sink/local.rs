//! Writes Insights files under a local folder, atomically (temporary file, then rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::InsightFile;

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

    /// Writes one file at `<root>/<key>`; returns its path.
    ///
    /// Returns `Err` with the path when a folder or the file cannot be written.
    pub fn write(&self, file: &InsightFile) -> std::io::Result<PathBuf> {
        let path = self.root.join(&file.key);
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
        let tmp = path.with_extension("gz.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| with_path(e, &tmp))?;
        f.write_all(&file.body)
            .and_then(|()| f.sync_all())
            .map_err(|e| with_path(e, &tmp))?;
        std::fs::rename(&tmp, &path).map_err(|e| with_path(e, &path))?;
        Ok(path)
    }
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
