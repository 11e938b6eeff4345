//! `trailsight serve` against a real S3 protocol server on loopback (s3s +
//! s3s-fs, SigV4 verified), as a child process: its Insights objects equal
//! `replay`'s on the same data byte for byte, also after kill -9 at random
//! moments and restarts; SIGTERM exits 0 with a checkpoint; a wrong secret is
//! refused.

mod common;
use common::tree;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use rand::{Rng, SeedableRng};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use trailsight::commands::replay::{ReplayOptions, replay};
use trailsight::config::S3Config;
use trailsight::layout::TrailLocation;
use trailsight::s3::s3_client;
use trailsight::source::{Source, SourceErrorKind};

const AK: &str = "AKIATRAILSIGHTTEST";
const SK: &str = "trailsight-test-secret-key";

/// Every request the server got, as `METHOD uri`.
type RequestLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Starts an S3 server over `root` on 127.0.0.1:`port` (0: any); returns its address.
/// Aborting the returned task stops the server and drops its open connections (a real outage).
/// Requests are appended to `log`.
async fn start_s3(
    root: &Path,
    port: u16,
    log: RequestLog,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(AK, SK));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        // Connections live in this set: dropping it (task aborted) closes them all.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (service, log) = (service.clone(), log.clone());
            let logged =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    log.lock()
                        .unwrap()
                        .push(format!("{} {}", req.method(), req.uri()));
                    hyper::service::Service::call(&service, req)
                });
            let conn = http
                .serve_connection(TokioIo::new(socket), logged)
                .into_owned();
            connections.spawn(async move {
                let _ = conn.await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    (addr, task)
}

fn s3_config(addr: SocketAddr) -> S3Config {
    S3Config {
        endpoint_url: Some(format!("http://{addr}")),
        force_path_style: true,
        region: Some("us-east-1".into()),
        max_attempts: Some(3),
    }
}

/// The test credentials for every client this process builds (set once, the same values in every test).
fn set_test_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: set once, before any client reads them, always to the same values.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", AK);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SK);
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
            std::env::remove_var("AWS_PROFILE");
        }
    });
}

/// A client of the same server signing with another secret.
fn client_with_secret(client: &aws_sdk_s3::Client, secret: &str) -> aws_sdk_s3::Client {
    let conf = client
        .config()
        .to_builder()
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            AK, secret, None, None, "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A multi-day bucket from real records: the demo account, plus a second account behind an
/// organization trail with a key prefix.
/// Three and a half days (days 6 to 9.5 of the demo, with its burst on day 8); the tests shorten the
/// warm-up to 12 hours to match.
fn build_bucket(dir: &Path) -> PathBuf {
    let bucket = dir.join("bucket");
    let shorten = |mut s: trailsight::synth::BucketSpec| {
        s.start_minute += 6 * 1440;
        s.minutes = 3 * 1440 + 720;
        s
    };
    let mut a = shorten(trailsight::synth::demo::demo_spec(9.5, 0.4, 7).unwrap());
    a.streams
        .retain(|s| s.template["eventName"] != "DescribeInstanceInformation");
    trailsight::synth::write_bucket(&a, &bucket).unwrap();
    let mut b = shorten(trailsight::synth::demo::demo_spec(9.5, 0.3, 8).unwrap());
    b.account = "444455556666".into();
    b.location = TrailLocation {
        prefix: "org".into(),
        org_id: Some("o-abcdef1234".into()),
    };
    b.streams
        .retain(|s| s.template["eventName"] != "DescribeInstanceInformation");
    trailsight::synth::write_bucket(&b, &bucket).unwrap();
    // One object that is not gzip at all, beside a real file: reported and skipped by both.
    let (key, _) = tree(&bucket).into_iter().nth(100).unwrap();
    let (head, name) = key.rsplit_once('/').unwrap();
    let broken = format!("{}_NOTGZIPNOTGZIP00.json.gz", &name[..name.len() - 25]);
    std::fs::write(bucket.join(head).join(broken), b"this is not gzip").unwrap();
    bucket
}

async fn upload(client: &aws_sdk_s3::Client, bucket_dir: &Path, bucket: &str) {
    client.create_bucket().bucket(bucket).send().await.unwrap();
    for (key, body) in tree(bucket_dir) {
        client
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
}

/// What replay writes for the same files (with a state folder: open minutes stay open, as in serve).
async fn expected(bucket_dir: &Path, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let sink = dir.join("expected");
    replay(ReplayOptions {
        source: bucket_dir.to_path_buf(),
        sink: sink.clone(),
        config: test_config(),
        progress: false,
        state: Some(dir.join("expected-state")),
    })
    .await
    .unwrap();
    let t = tree(&sink);
    assert!(
        t.len() >= 4,
        "expected Insights in both accounts: {:?}",
        t.keys().collect::<Vec<_>>()
    );
    t
}

fn test_config() -> trailsight::config::Config {
    let mut c = trailsight::config::Config::default();
    c.detector.warmup_minutes = 720;
    c
}

/// A `serve` config for the test server; `max_attempts` per S3 request (the SDK's retries).
/// `batch_files` is files per batch (and, ×20, keys listed per prefix per poll).
fn write_config(
    dir: &Path,
    addr: SocketAddr,
    name: &str,
    batch_files: usize,
    max_attempts: u32,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\nsources = [\"s3://trail\", \"s3://trail/org\"]\nsinks = [\"s3://ins/o\"]\nstate_dir = \"{}\"\n\
             poll_interval_seconds = 1\ncheckpoint_interval_seconds = 0\nbatch_files = {batch_files}\n\
             [serve.s3]\nendpoint_url = \"http://{addr}\"\nforce_path_style = true\nregion = \"us-east-1\"\n\
             max_attempts = {max_attempts}\n\
             [detector]\nwarmup_minutes = 720\n",
            dir.join(format!("{name}-state")).display()
        ),
    )
    .unwrap();
    path
}

/// The service as a child process (tokio's `Command`: waiting on it must not block the runtime
/// that serves S3 to it).
/// Its log goes to `<config>.log` (appended), which the assertions print on failure.
fn serve_cmd(config: &Path, once: bool) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_trailsight"));
    c.arg("serve").arg("--config").arg(config);
    if once {
        c.arg("--once");
    }
    c.env("AWS_ACCESS_KEY_ID", AK)
        .env("AWS_SECRET_ACCESS_KEY", SK)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file(config))
        .kill_on_drop(true);
    c
}

fn log_path(config: &Path) -> PathBuf {
    config.with_extension("log")
}

fn log_file(config: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(config))
        .unwrap()
}

/// Lines of the service's log that contain `what`.
fn count_lines(config: &Path, what: &str) -> usize {
    std::fs::read_to_string(log_path(config))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// The last lines of the service's log.
fn log_tail(config: &Path) -> String {
    let log = std::fs::read_to_string(log_path(config)).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Same keys, same bytes (without dumping the bytes).
fn assert_same(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: keys differ"
    );
    for (k, v) in want {
        assert!(got[k] == *v, "{what}: {k} differs");
    }
}

/// The Insights objects under the sink bucket and prefix `s3://ins/o`, as `<key>` → bytes.
///
/// The names are short on purpose: s3s-fs keeps each object's metadata in a file named after
/// base64(bucket) and base64(key), and Linux file names stop at 255 bytes, so an organization
/// trail's Insights key under a long bucket and prefix gets `InternalError` from s3s-fs (not from
/// S3, whose keys go up to 1,024 bytes).
fn sink_objects(s3_root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(&s3_root.join("ins/o"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_s3_equals_replay_even_after_kill_9() {
    set_test_credentials();
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    std::fs::create_dir_all(&s3_root).unwrap();
    let (addr, _server) = start_s3(&s3_root, 0, RequestLog::default()).await;
    let client = s3_client(&s3_config(addr)).await;
    let bucket_dir = build_bucket(dir.path());
    upload(&client, &bucket_dir, "trail").await;
    client.create_bucket().bucket("ins").send().await.unwrap();
    let expected = expected(&bucket_dir, dir.path()).await;

    // A wrong secret is refused by the server.
    let bad = client_with_secret(&client, "wrong-secret");
    let err = bad
        .list_objects_v2()
        .bucket("trail")
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err))
            .contains("SignatureDoesNotMatch"),
        "{err:?}"
    );

    // To the service, refused credentials mean "S3 unavailable" (read again later), never
    // "skip this object"; a missing object is skipped.
    let (key, _) = tree(&bucket_dir).into_iter().next().unwrap();
    let fetch = |c: &aws_sdk_s3::Client, key: &str| {
        let fetcher = Source::S3 {
            client: c.clone(),
            bucket: "trail".into(),
            prefix: String::new(),
        };
        let file = trailsight::source::SourceFile {
            key: key.to_string(),
            path: PathBuf::new(),
            info: trailsight::layout::parse_key(key),
            size: 0,
        };
        async move { fetcher.fetch(&file).await }
    };
    assert!(fetch(&client, &key).await.is_ok());
    assert!(matches!(
        fetch(&bad, &key).await,
        Err(e) if e.kind == SourceErrorKind::Unavailable
    ));
    let gone = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/08/gone.json.gz";
    assert!(matches!(
        fetch(&client, gone).await,
        Err(e) if e.kind == SourceErrorKind::NotFound
    ));

    // Uninterrupted run.
    let config = write_config(dir.path(), addr, "clean", 200, 10);
    let status = tokio::time::timeout(Duration::from_secs(300), serve_cmd(&config, true).status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", log_tail(&config));
    let clean = sink_objects(&s3_root);
    assert_same(
        &clean,
        &expected,
        "serve over S3 must write exactly replay's Insights",
    );
    assert!(
        count_lines(&config, "NOTGZIPNOTGZIP00") >= 1,
        "the broken object must be reported: {}",
        log_tail(&config)
    );

    // The API's store, deleted, is rebuilt from the S3 sink's Insights objects on the next start.
    let state = dir.path().join("clean-state");
    let store_file = state.join("insights.sqlite");
    let stored = |path: &Path| trailsight_api::Store::open(path).unwrap().count().unwrap();
    let written: u64 = clean
        .values()
        .map(|gz| {
            trailsight::sink::local::decode_insight_file("sink object", &gz[..])
                .unwrap()
                .len() as u64
        })
        .sum();
    assert!(written > 0);
    assert_eq!(
        stored(&store_file),
        written,
        "serve stored every record it wrote"
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(state.join(format!("insights.sqlite{suffix}")));
    }
    let status = tokio::time::timeout(Duration::from_secs(120), serve_cmd(&config, true).status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", log_tail(&config));
    assert!(
        count_lines(&config, "Insights store rebuilt from the sink") >= 1,
        "{}",
        log_tail(&config)
    );
    assert_eq!(stored(&store_file), written, "rebuilt from s3://ins/o");

    // kill -9 at random moments, restart each time, then run to the end.
    std::fs::remove_dir_all(s3_root.join("ins/o")).unwrap();
    // Small batches: each prefix (~1,000 keys) is listed in slices of 800 keys over several polls.
    let config = write_config(dir.path(), addr, "crashy", 40, 10);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let mut killed_running = 0;
    for _ in 0..4 {
        // Kill after 1 or 2 more batches plus a random delay: mid-batch, mid-upload or
        // mid-checkpoint, wherever it lands.
        let batches = count_lines(&config, "processed") + rng.random_range(1..=2);
        let mut child = serve_cmd(&config, true).spawn().unwrap();
        while count_lines(&config, "processed") < batches && child.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        let _ = child.kill().await; // SIGKILL
    }
    assert!(
        killed_running >= 3,
        "the crash test must kill the service mid-run ({killed_running} of 4 kills did)"
    );
    // And a graceful stop mid-backlog: the files in flight finish, exit 0 within seconds.
    let batches = count_lines(&config, "processed") + 1;
    let mut child = serve_cmd(&config, true).spawn().unwrap();
    while count_lines(&config, "processed") < batches && child.try_wait().unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().expect("serve is running mid-backlog");
    let t = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("serve did not stop within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}: {}", log_tail(&config));
    assert!(t.elapsed() < Duration::from_secs(10));
    let log = std::fs::read_to_string(log_path(&config)).unwrap();
    assert!(
        log.contains("backlog: listed a slice"),
        "the backlog must be listed in slices: {}",
        log_tail(&config)
    );
    assert!(
        log.contains("resumed from checkpoint"),
        "restarts must resume from a checkpoint: {}",
        log_tail(&config)
    );
    let status = tokio::time::timeout(Duration::from_secs(300), serve_cmd(&config, true).status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", log_tail(&config));
    assert_same(
        &sink_objects(&s3_root),
        &expected,
        "after kill -9 and restarts the sink must equal an uninterrupted run",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_and_exits_zero_and_a_source_outage_loses_nothing() {
    set_test_credentials();
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    std::fs::create_dir_all(&s3_root).unwrap();
    let requests = RequestLog::default();
    let (addr, server) = start_s3(&s3_root, 0, requests.clone()).await;
    let client = s3_client(&s3_config(addr)).await;
    let bucket_dir = build_bucket(dir.path());
    upload(&client, &bucket_dir, "trail").await;
    client.create_bucket().bucket("ins").send().await.unwrap();
    let expected = expected(&bucket_dir, dir.path()).await;

    // Two attempts per request: a 3-second outage outlasts the SDK's retries, so the service's
    // own recovery (back to the checkpoint, read again at the next poll) is what is tested.
    let config = write_config(dir.path(), addr, "svc", 200, 2);
    let mut child = serve_cmd(&config, false).spawn().unwrap();
    // The S3 server goes away for a while mid-run, then comes back on the same port.
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.abort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_addr2, _server2) = start_s3(&s3_root, addr.port(), requests.clone()).await;
    // Wait until the service has caught up (the sink equals replay's), at most 300 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while sink_objects(&s3_root) != expected && std::time::Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve must not stop when S3 is down: {}",
            log_tail(&config)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_same(
        &sink_objects(&s3_root),
        &expected,
        "nothing lost or duplicated across the outage",
    );
    let log = std::fs::read_to_string(log_path(&config)).unwrap();
    assert!(
        log.contains("resuming from the last checkpoint") || log.contains("poll failed; retrying"),
        "the service must have seen the outage: {}",
        log_tail(&config)
    );

    // Caught up, the service polls incrementally: every listing of a Region prefix starts after its
    // cursor (`start-after`), and nothing is downloaded again.
    let total = tree(&bucket_dir).len() as u64;
    let state_dir = dir.path().join("svc-state");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while trailsight::pipeline::state::load(&state_dir, &test_config().detector)
        .unwrap()
        .map_or(0, |c| c.files_processed)
        < total
    {
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let is_download = |r: &String| r.starts_with("GET") && r.contains("x-id=GetObject");
    let downloads = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| is_download(r))
        .count();
    assert!(
        downloads as u64 >= total,
        "the backlog was downloaded: {downloads} GetObject"
    );
    requests.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(3500)).await; // about three polls
    let seen = requests.lock().unwrap().clone();
    let region_listings: Vec<&String> = seen
        .iter()
        .filter(|r| r.contains("list-type=2") && !r.contains("delimiter="))
        .collect();
    assert!(region_listings.len() >= 2, "{seen:#?}");
    assert!(
        region_listings.iter().all(|r| r.contains("start-after=")),
        "{region_listings:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|r| r.starts_with("GET") && r.contains("GetObject")),
        "{seen:#?}"
    );

    // Graceful SIGTERM: exit 0 within a few seconds, with a checkpoint written on the way out
    // (the old one is removed first, so only the SIGTERM path can have written it).
    std::fs::remove_file(state_dir.join("state.bin")).unwrap();
    let t = std::time::Instant::now();
    let pid = child.id().expect("serve is running");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "serve did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        code.success(),
        "exit status {code:?}: {}",
        log_tail(&config)
    );
    let checkpoint = trailsight::pipeline::state::load(&state_dir, &test_config().detector)
        .unwrap()
        .expect("a checkpoint written on SIGTERM");
    assert_eq!(checkpoint.files_processed, total);
}

/// `trailsight_insight_start_delay_seconds` from `/metrics`: (count, sum, observations ≤ 60 s).
async fn start_delays(addr: SocketAddr) -> (f64, f64, f64) {
    let (_, _, text) = common::http_get(addr, "/metrics").await.unwrap_or_default();
    let sample = |s: &str| common::sample(&text, s).unwrap_or(0.0);
    (
        sample("trailsight_insight_start_delay_seconds_count"),
        sample("trailsight_insight_start_delay_seconds_sum"),
        sample("trailsight_insight_start_delay_seconds_bucket{le=\"60\"}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_written_within_a_minute_of_its_file_being_read() {
    set_test_credentials();
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    std::fs::create_dir_all(&s3_root).unwrap();
    let (addr, _server) = start_s3(&s3_root, 0, RequestLog::default()).await;
    let client = s3_client(&s3_config(addr)).await;
    // The demo account, days 6 to 9.5: its CreateAccessKey burst is on 2026-11-10.
    let bucket = dir.path().join("bucket");
    common::demo_days_6_to_9(&bucket);
    client.create_bucket().bucket("trail").send().await.unwrap();
    client.create_bucket().bucket("ins").send().await.unwrap();
    let (later, before): (Vec<_>, Vec<_>) = tree(&bucket)
        .into_iter()
        .partition(|(key, _)| common::is_burst_day(key));
    let put = |key: String, body: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .put_object()
                .bucket("trail")
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    };
    for (key, body) in before {
        put(key, body).await;
    }
    // The default poll interval (60 s).
    let port = common::free_port();
    let metrics: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = dir.path().join("live.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\nlisten = \"127.0.0.1:{port}\"\nsources = [\"s3://trail\"]\nsinks = [\"s3://ins\"]\n\
             state_dir = \"{}\"\n[serve.s3]\nendpoint_url = \"http://{addr}\"\nforce_path_style = true\n\
             region = \"us-east-1\"\n[detector]\nwarmup_minutes = 720\n",
            dir.path().join("live-state").display()
        ),
    )
    .unwrap();
    let _serve = serve_cmd(&config, false).spawn().unwrap();
    let t = std::time::Instant::now();
    while !matches!(common::http_get(metrics, "/readyz").await, Ok((200, _, _))) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{}",
            log_tail(&config)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        start_delays(metrics).await.0,
        0.0,
        "no Insight before the burst"
    );
    // The burst's days arrive while serve runs.
    let uploaded = std::time::Instant::now();
    for (key, body) in later {
        put(key, body).await;
    }
    let upload_seconds = uploaded.elapsed().as_secs_f64();
    let (count, sum, within) = loop {
        let d = start_delays(metrics).await;
        if d.0 >= 1.0 {
            break d;
        }
        assert!(
            uploaded.elapsed() < Duration::from_secs(240),
            "no Start: {}",
            log_tail(&config)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let upload_to_start = uploaded.elapsed().as_secs_f64();
    eprintln!(
        "file read → Start written: {count} Start(s), mean {:.2} s, all ≤ 60 s: {}; \
         upload of the burst's days took {upload_seconds:.1} s, upload start → Start {upload_to_start:.1} s \
         (the poll interval is 60 s)",
        sum / count,
        within == count
    );
    assert_eq!(
        within, count,
        "every Start within 60 s of its file being read"
    );
    assert!(sum / count < 60.0);
    let log = std::fs::read_to_string(log_path(&config)).unwrap();
    assert!(log.contains("Insight Start written after its evidence was read"));
}
