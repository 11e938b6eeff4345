//! `trailsight serve` against a real S3 protocol server on loopback (s3s +
//! s3s-fs, SigV4 verified), as a child process: its Insights objects equal
//! `replay`'s on the same data byte for byte, also after kill -9 at random
//! moments and restarts; SIGTERM exits 0 with a checkpoint; a wrong secret is
//! refused.

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
use trailsight::layout::TrailLocation;
use trailsight::replay::{ReplayOptions, replay};
use trailsight::serve::{S3Config, s3_client};

const AK: &str = "AKIATRAILSIGHTTEST";
const SK: &str = "trailsight-test-secret-key";

/// Starts an S3 server over `root` on 127.0.0.1:`port` (0: any); returns its address.
async fn start_s3(root: &Path, port: u16) -> (SocketAddr, tokio::task::JoinHandle<()>) {
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
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
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

fn set_test_credentials(secret: &str) {
    // SAFETY: every test in this file sets the same variables before starting any thread that reads them.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", AK);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", secret);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::remove_var("AWS_PROFILE");
    }
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
    let mut a = shorten(trailsight::demo::demo_spec(9.5, 0.4, 7).unwrap());
    a.streams
        .retain(|s| s.template["eventName"] != "DescribeInstanceInformation");
    trailsight::synth::write_bucket(&a, &bucket).unwrap();
    let mut b = shorten(trailsight::demo::demo_spec(9.5, 0.3, 8).unwrap());
    b.account = "444455556666".into();
    b.location = TrailLocation {
        prefix: "org".into(),
        org_id: Some("o-abcdef1234".into()),
    };
    b.streams
        .retain(|s| s.template["eventName"] != "DescribeInstanceInformation");
    trailsight::synth::write_bucket(&b, &bucket).unwrap();
    bucket
}

fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    if !root.exists() {
        return BTreeMap::new();
    }
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            (
                e.path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
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

fn write_config(dir: &Path, addr: SocketAddr, name: &str, poll: u64) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[serve]\nsources = [\"s3://trail\", \"s3://trail/org\"]\nsinks = [\"s3://insights/out\"]\nstate_dir = \"{}\"\n\
             poll_interval_seconds = {poll}\ncheckpoint_interval_seconds = 0\nbatch_files = 200\n\
             [serve.s3]\nendpoint_url = \"http://{addr}\"\nforce_path_style = true\nregion = \"us-east-1\"\n\
             [detector]\nwarmup_minutes = 720\n",
            dir.join(format!("{name}-state")).display()
        ),
    )
    .unwrap();
    path
}

/// The service as a child process (tokio's `Command`: waiting on it must not block the runtime
/// that serves S3 to it).
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
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
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

/// The Insights objects in the sink bucket, as `out/<key>` → bytes.
fn sink_objects(s3_root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(&s3_root.join("insights/out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_s3_equals_replay_even_after_kill_9() {
    set_test_credentials(SK);
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    std::fs::create_dir_all(&s3_root).unwrap();
    let (addr, _server) = start_s3(&s3_root, 0).await;
    let client = s3_client(&s3_config(addr)).await;
    let bucket_dir = build_bucket(dir.path());
    upload(&client, &bucket_dir, "trail").await;
    client
        .create_bucket()
        .bucket("insights")
        .send()
        .await
        .unwrap();
    let expected = expected(&bucket_dir, dir.path()).await;

    // A wrong secret is refused by the server.
    set_test_credentials("wrong-secret");
    let bad = s3_client(&s3_config(addr)).await;
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
    set_test_credentials(SK);

    // Uninterrupted run.
    let config = write_config(dir.path(), addr, "clean", 1);
    let out = tokio::time::timeout(Duration::from_secs(300), serve_cmd(&config, true).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clean = sink_objects(&s3_root);
    assert_same(
        &clean,
        &expected,
        "serve over S3 must write exactly replay's Insights",
    );

    // kill -9 at random moments, restart each time, then run to the end.
    std::fs::remove_dir_all(s3_root.join("insights/out")).unwrap();
    let config = write_config(dir.path(), addr, "crashy", 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    for _ in 0..4 {
        let mut child = serve_cmd(&config, true).spawn().unwrap();
        let ms = rng.random_range(200..2500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let _ = child.kill().await; // SIGKILL
    }
    let out = tokio::time::timeout(Duration::from_secs(300), serve_cmd(&config, true).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        &sink_objects(&s3_root),
        &expected,
        "after kill -9 and restarts the sink must equal an uninterrupted run",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_and_exits_zero_and_a_source_outage_loses_nothing() {
    set_test_credentials(SK);
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    std::fs::create_dir_all(&s3_root).unwrap();
    let (addr, server) = start_s3(&s3_root, 0).await;
    let client = s3_client(&s3_config(addr)).await;
    let bucket_dir = build_bucket(dir.path());
    upload(&client, &bucket_dir, "trail").await;
    client
        .create_bucket()
        .bucket("insights")
        .send()
        .await
        .unwrap();
    let expected = expected(&bucket_dir, dir.path()).await;

    let config = write_config(dir.path(), addr, "svc", 1);
    let mut child = serve_cmd(&config, false).spawn().unwrap();
    // The S3 server goes away for a while mid-run, then comes back on the same port.
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.abort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_addr2, _server2) = start_s3(&s3_root, addr.port()).await;
    // Wait until the service has caught up (the sink equals replay's), at most 120 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while sink_objects(&s3_root) != expected && std::time::Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve must not stop when S3 is down"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_same(
        &sink_objects(&s3_root),
        &expected,
        "nothing lost or duplicated across the outage",
    );

    // Graceful SIGTERM: exit 0 within a few seconds, checkpoint written.
    let state = dir.path().join("svc-state/state.bin");
    let before = std::fs::metadata(&state).unwrap().modified().unwrap();
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
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(code.success(), "exit status {code:?}: {stderr}");
    assert!(std::fs::metadata(&state).unwrap().modified().unwrap() >= before);
}
