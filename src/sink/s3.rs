//! Insights files to an S3 bucket and prefix.

use std::path::PathBuf;

use super::{InsightFile, RejectReason, SinkError};

/// An S3 bucket and key prefix receiving Insights files.
#[derive(Debug, Clone)]
pub struct S3Sink {
    /// Client.
    pub client: aws_sdk_s3::Client,
    /// Bucket.
    pub bucket: String,
    /// Key prefix (empty: the bucket's root).
    pub prefix: String,
}

impl S3Sink {
    /// Reads every Insights record under the sink's prefix (any `CloudTrail-Insight/` object),
    /// in key order, to rebuild the API's store. An object that is not an Insights file is
    /// skipped and logged (it is not this reader's to judge the rest by).
    ///
    /// Returns `Err(SinkError::Unavailable)` when listing or reading fails for a reason that is
    /// not the object's (S3 unreachable, refused credentials).
    pub async fn read_insight_files(
        &self,
    ) -> Result<Vec<(String, Vec<trailsight_detector::InsightRecord>)>, SinkError> {
        let S3Sink {
            client,
            bucket,
            prefix,
        } = self;
        // Every trail's own prefix is kept under the sink's: list all of it.
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.trim_end_matches('/'))
        };
        let unavailable = |what: String| SinkError::Unavailable(std::io::Error::other(what));
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                unavailable(format!(
                    "ListObjectsV2 s3://{bucket}/{prefix}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
            keys.extend(page.contents().iter().filter_map(|o| {
                o.key()
                    .filter(|k| super::local::is_insight_key(k))
                    .map(|k| (k.to_string(), o.size().unwrap_or(0).max(0).unsigned_abs()))
            }));
        }
        keys.sort();
        let mut out = Vec::new();
        let max = super::local::MAX_INSIGHT_FILE_BYTES;
        for (key, size) in keys {
            let fetched =
                match crate::source::s3::get_at_most(client, bucket, &key, size, max).await {
                    Ok(f) => f,
                    Err(e) if e.kind == crate::source::SourceErrorKind::Unavailable => {
                        return Err(unavailable(e.to_string()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Insights object unreadable: skipped");
                        continue;
                    }
                };
            match super::local::decode_insight_file(&crate::layout::shown(&key), &fetched.bytes[..])
            {
                Ok(records) => out.push((key, records)),
                Err(e) => tracing::warn!(error = %e, "not an Insights file: skipped"),
            }
        }
        Ok(out)
    }

    /// Puts one file (blocking on `handle`: called from the engine thread); returns its
    /// `s3://` URL. Errors as [`super::Sinks::write`].
    pub fn write(
        &self,
        file: &InsightFile,
        handle: &tokio::runtime::Handle,
    ) -> Result<PathBuf, SinkError> {
        let S3Sink {
            client,
            bucket,
            prefix,
        } = self;
        let key = if prefix.is_empty() {
            file.key.clone()
        } else {
            format!("{}/{}", prefix.trim_end_matches('/'), file.key)
        };
        let body = aws_sdk_s3::primitives::ByteStream::from(file.body.clone());
        handle
            .block_on(
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(body)
                    .send(),
            )
            .map_err(|e| {
                let reason = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
                if is_key_refused(&e) {
                    SinkError::Rejected(RejectReason::S3Key {
                        bucket: bucket.clone(),
                        key: crate::layout::shown(&key),
                        reason,
                    })
                } else {
                    SinkError::Unavailable(std::io::Error::other(format!(
                        "PutObject s3://{bucket}/{key}: {reason}"
                    )))
                }
            })?;
        Ok(PathBuf::from(format!("s3://{bucket}/{key}")))
    }
}

/// S3 error codes that are about the key of one request, not the service.
const KEY_ERRORS: &[&str] = &["KeyTooLongError", "InvalidArgument", "InvalidURI"];

/// True for a 400 answer about the key (`KeyTooLongError`, `InvalidArgument`, `InvalidURI`).
fn is_key_refused<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    match e {
        aws_sdk_s3::error::SdkError::ServiceError(se) => {
            se.raw().status().as_u16() == 400
                && se.err().code().is_some_and(|c| KEY_ERRORS.contains(&c))
        }
        _ => false,
    }
}
