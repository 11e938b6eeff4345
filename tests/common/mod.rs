//! Helpers shared by the integration tests.

// Each test crate compiles this module and uses only some of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Writes `bytes` at `root/key`, creating folders.
pub fn put(root: &Path, key: &str, bytes: &[u8]) {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Every file under `root` (not hidden ones, e.g. s3s-fs metadata), as relative path → bytes;
/// empty when `root` does not exist.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    if !root.exists() {
        return BTreeMap::new();
    }
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let key = e.path().strip_prefix(root).unwrap();
            (
                key.to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Access key of [`start_s3`]'s server.
pub const AK: &str = "AKIATRAILSIGHTTEST";
/// Secret key of [`start_s3`]'s server.
pub const SK: &str = "trailsight-test-secret-key";

/// An S3 server (s3s + s3s-fs, SigV4 verified) over `root` on loopback; returns its address.
pub async fn start_s3(root: &Path) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    start_s3_on(root, 0).await
}

/// [`start_s3`] on 127.0.0.1:`port` (0: any). Aborting the task stops the server and drops its
/// connections (a real outage); starting it again on the same port ends the outage.
pub async fn start_s3_on(
    root: &Path,
    port: u16,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            connections.spawn(async move {
                let _ = conn.await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    (addr, task)
}

/// A TCP port free on loopback now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET http://{addr}{path}` over HTTP/1.1 (hyper's client connection): status, content type, body.
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
) -> std::io::Result<(u16, String, String)> {
    http_get_with(addr, path, &[]).await
}

/// [`http_get`] with extra request headers (e.g. `authorization`).
pub async fn http_get_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(std::io::Error::other)?;
    let res = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// The value of the sample `name` (with its labels, e.g. `x_total{result="read"}`) in a
/// Prometheus text exposition, if present.
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Samples in a Prometheus text exposition (lines that are not comments).
pub fn series_count(exposition: &str) -> usize {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// Days 6 to 9.5 of the demo bucket (its `CreateAccessKey` burst on 2026-11-10) written to
/// `root`; tests shorten the warm-up to 12 hours to match.
pub fn demo_days_6_to_9(root: &Path) {
    let mut spec = trailsight::synth::demo::demo_spec(9.5, 0.3, 11).unwrap();
    spec.start_minute += 6 * 1440;
    spec.minutes = 3 * 1440 + 720;
    trailsight::synth::write_bucket(&spec, root).unwrap();
}

/// True for a key or path of the burst's days (2026-11-10 and 11).
pub fn is_burst_day(key: &str) -> bool {
    key.contains("/2026/11/10/") || key.contains("/2026/11/11/")
}

/// [`demo_days_6_to_9`] under `dir/all`, with a source folder `dir/source` holding the days
/// before the burst; returns the source and the burst days' files (from, to) to copy in later.
pub fn demo_source_before_burst(dir: &Path) -> (PathBuf, Vec<(PathBuf, PathBuf)>) {
    let all = dir.join("all");
    demo_days_6_to_9(&all);
    let source = dir.join("source");
    let mut later = Vec::new();
    for e in walkdir::WalkDir::new(&all).sort_by_file_name() {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(&all).unwrap();
        let to = source.join(rel);
        if is_burst_day(&rel.to_string_lossy()) {
            later.push((e.path().to_path_buf(), to));
        } else {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    assert!(!later.is_empty());
    (source, later)
}
