//! Webhooks end to end: a receiver in the test (real HTTP on loopback) verifies every Standard
//! Webhooks signature and fails the first two attempts of each record; `serve` is killed (-9)
//! and restarted in between, and the receiver still accepts every Insights record of the sink
//! exactly once per `webhook-id`.

mod common;
use common::free_port;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn build_bucket(root: &Path) {
    let mut spec = trailsight::synth::demo::demo_spec(9.5, 0.3, 11).unwrap();
    spec.start_minute += 6 * 1440;
    spec.minutes = 3 * 1440 + 720;
    trailsight::synth::write_bucket(&spec, root).unwrap();
}

#[derive(Default)]
struct Seen {
    /// Attempts per webhook-id.
    attempts: HashMap<String, u32>,
    /// Accepted (answered 200) per webhook-id.
    accepted: HashMap<String, u32>,
    /// Requests whose signature did not verify.
    bad_signatures: u32,
}

async fn receiver(port: u16, seen: Arc<Mutex<Seen>>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let secret = base64_decode(SECRET.strip_prefix("whsec_").unwrap());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let (seen, secret) = (seen.clone(), secret.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (seen, secret) = (seen.clone(), secret.clone());
                    async move {
                        let h = |k: &str| {
                            req.headers()
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        let (id, ts, sig) = (
                            h("webhook-id"),
                            h("webhook-timestamp"),
                            h("webhook-signature"),
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let expected = trailsight_api::webhooks::signature(
                            &secret,
                            &id,
                            ts.parse().unwrap_or(0),
                            &body,
                        );
                        let record: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let mut s = seen.lock().unwrap();
                        if sig != expected || record["eventID"] != id.as_str() {
                            s.bad_signatures += 1;
                            return Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(400)
                                    .body(String::new())
                                    .unwrap(),
                            );
                        }
                        let n = s.attempts.entry(id.clone()).or_default();
                        *n += 1;
                        let status = if *n <= 2 {
                            500
                        } else {
                            *s.accepted.entry(id).or_default() += 1;
                            200
                        };
                        Ok(hyper::Response::builder()
                            .status(status)
                            .body(String::new())
                            .unwrap())
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    // The test's own decoder (standard alphabet, padded), independent of the service's.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | alphabet.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn serve(config: &Path) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_trailsight"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_delivered_signed_exactly_once_across_failures_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    build_bucket(&bucket);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let hook_port = free_port();
    tokio::spawn(receiver(hook_port, seen.clone()));
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\nsources = [{:?}]\nsinks = [{:?}]\nstate_dir = {:?}\n\
             poll_interval_seconds = 1\nlocal_settle_seconds = 0\n\
             [api]\n[[api.webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nsecret = \"{SECRET}\"\n\
             [detector]\nwarmup_minutes = 720\n",
            bucket.display().to_string(),
            dir.path().join("sink").display().to_string(),
            dir.path().join("state").display().to_string(),
        ),
    )
    .unwrap();
    let log = || std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();

    // First run: wait for the first failed attempt, then kill -9.
    let mut first = serve(&config);
    let started = Instant::now();
    while seen.lock().unwrap().attempts.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no delivery attempt:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill().await.unwrap();

    // Restart: the outbox survived; every record arrives, after two failures each.
    let _second = serve(&config);
    let sink_ids = || -> Vec<String> {
        trailsight::sink::local::read_insight_files(&dir.path().join("sink"))
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(_, r)| r)
            .map(|r| r.event_id)
            .collect()
    };
    let started = Instant::now();
    loop {
        let ids = sink_ids();
        let done = {
            let s = seen.lock().unwrap();
            !ids.is_empty() && ids.iter().all(|id| s.accepted.contains_key(id))
        };
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not every record delivered: sink {ids:?}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ids = sink_ids();
    assert_eq!(ids.len(), 2, "the demo's Start and End: {ids:?}");
    let s = seen.lock().unwrap();
    assert_eq!(s.bad_signatures, 0);
    for id in &ids {
        assert_eq!(s.accepted[id], 1, "{id} accepted once");
        assert!(s.attempts[id] >= 3, "{id}: failed twice first");
    }
    assert_eq!(s.accepted.len(), ids.len(), "nothing else delivered");
}
