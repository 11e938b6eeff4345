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
