//! The S3 client that the S3 source and the S3 sink share.

use std::time::Duration;

use crate::config::S3Config;

/// Time to establish a connection to S3 before the attempt fails (and is retried).
pub const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while reading an S3 response before the attempt fails (and is retried).
pub const S3_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An S3 client for the settings (explicit rustls + ring HTTPS client, standard retries).
pub async fn s3_client(cfg: &S3Config) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http.clone());
    if let Some(r) = &cfg.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .http_client(http)
        .force_path_style(cfg.force_path_style)
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(cfg.max_attempts.unwrap_or(10)),
        )
        // A server that accepts a connection and then goes silent is an error (retried, then
        // an outage), never a request that waits forever.
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(S3_CONNECT_TIMEOUT)
                .read_timeout(S3_READ_TIMEOUT)
                .build(),
        );
    if shared.region().is_none() {
        b = b.region(aws_config::Region::new("us-east-1"));
    }
    if let Some(ep) = &cfg.endpoint_url {
        b = b.endpoint_url(ep);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}
