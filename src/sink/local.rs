//! Writes Insights files under a local folder, atomically (temporary file, then rename).

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::{InsightFile, RejectReason, SinkError};
use crate::layout::shown;

/// A local folder sink.
#[derive(Debug, Clone)]
pub struct LocalSink {
    root: PathBuf,
}

impl LocalSink {
    /// The folder Insights files go under.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

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

/// Largest inflated Insights file [`read_insight_files`] reads: 256 MiB.
pub const MAX_INSIGHT_FILE_BYTES: u64 = 256 << 20;

/// The records of one gzip Insights file (`key` names it in errors); at most
/// [`MAX_INSIGHT_FILE_BYTES`] inflated.
///
/// Returns `Err(io::Error)` (`InvalidData`, naming the key) when it is not gzip, too large, or
/// not an Insights file.
pub fn decode_insight_file(
    key: &str,
    gzip: impl std::io::Read,
) -> std::io::Result<Vec<trailsight_detector::InsightRecord>> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(rename = "Records")]
        records: Vec<trailsight_detector::InsightRecord>,
    }
    // Insights files are small; more than MAX_INSIGHT_FILE_BYTES inflated is not ours.
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            flate2::read::MultiGzDecoder::new(gzip),
            MAX_INSIGHT_FILE_BYTES + 1,
        ),
        &mut json,
    )
    .map_err(|e| std::io::Error::new(e.kind(), format!("{key}: {e}")))?;
    if json.len() as u64 > MAX_INSIGHT_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{key}: more than {MAX_INSIGHT_FILE_BYTES} bytes inflated"),
        ));
    }
    let file: File = serde_json::from_slice(&json)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{key}: {e}")))?;
    Ok(file.records)
}

/// True for the key of an Insights file (under a `CloudTrail-Insight/` folder, `.json.gz`).
pub fn is_insight_key(key: &str) -> bool {
    key.contains("/CloudTrail-Insight/") && key.ends_with(".json.gz")
}

/// Reads every Insights record under `root` (any `CloudTrail-Insight/` file), in key order.
///
/// Returns `Err(io::Error)` on the first file that cannot be read or decoded.
pub fn read_insight_files(
    root: &Path,
) -> std::io::Result<Vec<(String, Vec<trailsight_detector::InsightRecord>)>> {
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
        if !is_insight_key(&key) {
            continue;
        }
        let records = decode_insight_file(&key, std::fs::File::open(entry.path())?)?;
        out.push((key, records));
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
            account: "111122223333".into(),
            region: "us-east-1".into(),
            insights: Vec::new(),
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

    /// No account, Region, organization or prefix string gives a path outside the sink's root, and
    /// valid ones give AWS's layout (the key parts are checked in `layout`, the path here).
    mod prop {
        use crate::layout::{
            TrailLocation, check_prefix, insight_key, is_account_id, is_org_id, is_region,
        };
        use crate::sink::local::LocalSink;
        use proptest::prelude::*;
        use std::path::{Component, Path};

        /// Well-formed values (half the time), or strings rich in path syntax, so both sides are explored.
        fn part(valid: &'static str) -> impl Strategy<Value = String> {
            prop_oneof![
                5 => proptest::string::string_regex(valid).unwrap(),
                2 => "[a-z0-9./\\\\\\-\\x00 ]{0,16}",
                1 => Just(String::new()),
                1 => Just("..".to_string()),
                1 => Just("/tmp/x".to_string()),
                1 => ".{0,40}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]
            #[test]
            fn no_input_leaves_the_sink_and_valid_input_gives_aws_layout(
                account in part("[0-9]{12}"),
                region in part("[a-z]{2}(-[a-z]{1,6}){1,3}-[0-9]{1,2}"),
                org in proptest::option::of(part("o-[a-z0-9]{10,32}")),
                prefix in part("([a-z0-9._-]{1,8}/){0,3}[a-z0-9_-]{1,8}"),
                minute in any::<i64>(),
            ) {
                let root = Path::new("/sink/root");
                let sink = LocalSink::new(root);
                let loc = TrailLocation { prefix: prefix.clone(), org_id: org.clone() };
                let valid = is_account_id(&account)
                    && is_region(&region)
                    && org.as_deref().is_none_or(is_org_id)
                    && check_prefix(&prefix).is_ok();
                match insight_key(&loc, &account, &region, minute, "KL5e9VCV2SS7IqzB") {
                    Err(_) => prop_assert!(!valid),
                    Ok(key) => {
                        prop_assert!(valid);
                        let path = sink.path_of(&key).unwrap();
                        prop_assert!(path.starts_with(root));
                        let rel = path.strip_prefix(root).unwrap();
                        prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
                        prop_assert!(key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
                        prop_assert!(!key.bytes().any(|b| b.is_ascii_control() || b == b'\\'));
                        prop_assert!(key.len() <= 512);
                        prop_assert!(key.split('/').all(|s| s.len() <= 255));
                        // AWS's layout: [prefix/]AWSLogs/[org/]account/CloudTrail-Insight/region/Y/M/D/name.
                        let mut expected = String::new();
                        if !prefix.is_empty() {
                            expected.push_str(&prefix);
                            expected.push('/');
                        }
                        expected.push_str("AWSLogs/");
                        if let Some(o) = &org {
                            expected.push_str(o);
                            expected.push('/');
                        }
                        expected.push_str(&format!("{account}/CloudTrail-Insight/{region}/"));
                        prop_assert!(key.starts_with(&expected), "{key}");
                        let name = key.rsplit('/').next().unwrap();
                        let head = format!("{account}_CloudTrail-Insight_{region}_");
                        prop_assert!(name.starts_with(&head) && name.ends_with("_KL5e9VCV2SS7IqzB.json.gz"), "{name}");
                        prop_assert_eq!(key.matches('/').count(), expected.matches('/').count() + 3);
                    }
                }
            }
        }
    }
}
