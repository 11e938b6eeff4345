//! A trail bucket on S3 (or an S3-compatible server): listing from cursors and ranged reads.

use std::path::PathBuf;

use super::{Listed, SourceError, SourceErrorKind, SourceFile};
use crate::layout::{KeyKind, is_log_file_name, parse_key};

/// Common prefixes one level below `prefix` (which ends with `/` or is empty).
pub async fn sub_prefixes(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, SourceError> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .delimiter("/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            SourceError::new(
                SourceErrorKind::Unavailable,
                format!(
                    "ListObjectsV2 s3://{bucket}/{prefix}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ),
            )
        })?;
        out.extend(
            page.common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_string)),
        );
    }
    Ok(out)
}

/// New log files of an S3 source: every `…/CloudTrail/<region>/` prefix listed from its cursor
/// (`StartAfter`), at most `limit` keys per prefix per poll so a large backlog is taken in slices.
pub async fn list_s3(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    base: &str,
    cursors: &impl super::ListFrom,
    limit: usize,
) -> Result<Listed, SourceError> {
    let base = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    let mut regions = Vec::new();
    for top in sub_prefixes(client, bucket, &format!("{base}AWSLogs/")).await? {
        let name = top.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let accounts = if name.starts_with("o-") {
            sub_prefixes(client, bucket, &top).await?
        } else {
            vec![top]
        };
        for account in accounts {
            regions.extend(sub_prefixes(client, bucket, &format!("{account}CloudTrail/")).await?);
        }
    }
    let mut listed = Listed::default();
    for region in regions {
        let mut req = client.list_objects_v2().bucket(bucket).prefix(&region);
        if let Some(c) = cursors.start_after(&region) {
            req = req.start_after(c);
        }
        let mut pages = req.into_paginator().send();
        let mut seen = 0usize;
        let mut last: Option<(Option<i64>, String)> = None;
        while let Some(page) = pages.next().await {
            if seen >= limit
                && let Some(last) = last.take()
            {
                // More keys remain after the last file listed: take them at the next poll.
                listed.truncated_at.push(last);
                break;
            }
            let page = page.map_err(|e| {
                SourceError::new(
                    SourceErrorKind::Unavailable,
                    format!(
                        "ListObjectsV2 s3://{bucket}/{region}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    ),
                )
            })?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                seen += 1;
                if !is_log_file_name(key) || !cursors.is_new(key) {
                    continue;
                }
                let info = parse_key(key);
                if info.kind == KeyKind::Log {
                    let size = o.size().map_or(0, |s| s.max(0) as u64);
                    last = Some((info.delivered_minute, key.to_string()));
                    listed.files.push(SourceFile {
                        key: key.to_string(),
                        path: PathBuf::new(),
                        info,
                        size,
                    });
                }
            }
        }
    }
    Ok(listed)
}

/// Error codes that are about the service's credentials or permissions, not the object: in a
/// trail bucket every object is written alike, so every object would fail the same way (a role
/// without `kms:Decrypt` on an SSE-KMS trail gets `AccessDenied`) and skipping would lose them all.
const CREDENTIAL_ERRORS: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "RequestTimeTooSkewed",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
];

/// True for errors that say nothing about the object: no connection, timeout, a cut-off
/// response, throttling, a server error, or credentials that the server refuses.
pub fn is_transient<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            status >= 500
                || status == 429
                || se
                    .err()
                    .code()
                    .is_some_and(|c| CREDENTIAL_ERRORS.contains(&c) || c.starts_with("KMS."))
        }
        _ => true,
    }
}

/// The first `max` bytes of `s3://bucket/key` (`size`: its listed size; larger than `max`, a
/// ranged `GetObject` is sent), and whether there was more. Errors as [`super::Source::fetch_at_most`].
pub async fn get_at_most(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
    max: u64,
) -> Result<super::Fetched, super::SourceError> {
    use super::{Fetched, SourceError, SourceErrorKind};
    let capacity = usize::try_from(size.min(max)).unwrap_or(0);
    let mut req = client.get_object().bucket(bucket).key(key);
    if size > max {
        req = req.range(format!("bytes=0-{}", max - 1));
    }
    let out = req.send().await.map_err(|e| {
        let reason = format!(
            "GetObject s3://{bucket}/{key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        );
        let kind = if is_transient(&e) {
            SourceErrorKind::Unavailable
        } else if is_not_found(&e) {
            SourceErrorKind::NotFound
        } else {
            SourceErrorKind::Unreadable
        };
        SourceError::new(kind, reason)
    })?;
    // `bytes 0-N/TOTAL`: the object's whole length, when a range was asked.
    let total = out
        .content_range()
        .and_then(|r| r.rsplit('/').next())
        .and_then(|t| t.parse::<u64>().ok());
    let mut body = out.body;
    let mut bytes = Vec::with_capacity(capacity);
    let mut truncated = total.is_some_and(|t| t > max);
    while let Some(chunk) = body.try_next().await.map_err(|e| {
        SourceError::new(
            SourceErrorKind::Unavailable,
            format!("reading s3://{bucket}/{key}: {e}"),
        )
    })? {
        let room = usize::try_from(max - bytes.len() as u64).unwrap_or(usize::MAX);
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Fetched { bytes, truncated })
}

/// True for a 404 answer or `NoSuchKey` (the object is gone).
fn is_not_found<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    match e {
        aws_sdk_s3::error::SdkError::ServiceError(se) => {
            se.raw().status().as_u16() == 404 || se.err().code() == Some("NoSuchKey")
        }
        _ => false,
    }
}
