//! A local S3-compatible server for trying `trailsight serve` (and for its tests):
//! s3s + s3s-fs over a folder, SigV4 signatures checked.
//!
//! ```sh
//! cargo run --release --example s3_server -- <ROOT> [PORT] [ACCESS_KEY] [SECRET_KEY]
//! ```
//!
//! Buckets are the folders directly under `ROOT`; objects are plain files at
//! `ROOT/<bucket>/<key>` (copying a folder there is the same as uploading it).
//! Defaults: port 9000, access key `AK`, secret key `SK`.

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let root = args
        .next()
        .context("usage: s3_server <ROOT> [PORT] [ACCESS_KEY] [SECRET_KEY]")?;
    let port: u16 = args.next().map_or(Ok(9000), |p| p.parse())?;
    let access_key = args.next().unwrap_or_else(|| "AK".into());
    let secret_key = args.next().unwrap_or_else(|| "SK".into());
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {root}"))?;
    let fs = s3s_fs::FileSystem::new(&root).map_err(|e| anyhow::anyhow!("{root}: {e:?}"))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(
        access_key.as_str(),
        secret_key.as_str(),
    ));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    eprintln!(
        "S3 server on http://{} over {root} (access key {access_key}); Ctrl-C stops it",
        listener.local_addr()?
    );
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let _ = socket.set_nodelay(true);
                let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
