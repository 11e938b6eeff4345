//! `trailsight serve`'s operator endpoints with real parts: the exposition passes
//! `promtool check metrics`, a real Prometheus server scrapes the service and answers queries for
//! the Insights counter and the ingest lag, `/readyz` follows a real S3 outage, and the number of
//! series does not grow with the data (100,000 distinct `eventName`s).
//!
//! Prometheus and promtool come from Debian's `prometheus` package (`.ci/run` installs it); the
//! tests that need them print a SKIP line when they are absent.

mod common;
use common::{free_port, http_get, put, sample, series_count};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Three and a half days of the demo bucket (its burst on day 8); warm-up shortened to match.
fn build_bucket(root: &Path) {
    let mut spec = trailsight::synth::demo::demo_spec(9.5, 0.3, 11).unwrap();
    spec.start_minute += 6 * 1440;
    spec.minutes = 3 * 1440 + 720;
    trailsight::synth::write_bucket(&spec, root).unwrap();
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn serve(config: &Path) -> tokio::process::Child {
    let log = std::fs::File::create(config.with_extension("log")).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_trailsight"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("AWS_ACCESS_KEY_ID", common::AK)
        .env("AWS_SECRET_ACCESS_KEY", common::SK)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn log_of(config: &Path) -> String {
    std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
}

/// Scrapes `/metrics` until `done` holds for the exposition (panics after `timeout`).
async fn scrape_until(
    addr: SocketAddr,
    config: &Path,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    loop {
        if let Ok((200, _, body)) = http_get(addr, "/metrics").await
            && done(&body)
        {
            return body;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out waiting on /metrics; serve log:\n{}",
            log_of(config)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn local_config(dir: &Path, source: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[serve]\nlisten = \"127.0.0.1:{port}\"\nsources = [{:?}]\nsinks = [{:?}]\nstate_dir = {:?}\n\
             poll_interval_seconds = 1\ncheckpoint_interval_seconds = 1\nbatch_files = 200\n\
             local_settle_seconds = 0\n{extra}",
            source.display().to_string(),
            dir.join("sink").display().to_string(),
            dir.join("state").display().to_string(),
        ),
    )
    .unwrap();
    path
}

const STARTED: &str = "trailsight_insights_started_total{insight_type=\"ApiCallRateInsight\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_insights_counter_and_the_ingest_lag() {
    let (Some(prometheus), Some(promtool)) = (tool("prometheus"), tool("promtool")) else {
        eprintln!(
            "SKIP: prometheus/promtool not found (Debian package `prometheus`; .ci/run installs it)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    build_bucket(&bucket);
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = local_config(
        dir.path(),
        &bucket,
        port,
        "[detector]\nwarmup_minutes = 720\n",
    );
    let _serve = serve(&config);

    // The service raises the demo's Insight and says so on /metrics.
    let body = scrape_until(addr, &config, Duration::from_secs(240), |b| {
        sample(b, STARTED).is_some_and(|v| v >= 1.0)
    })
    .await;
    let (status, content_type, body_again) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(sample(&body_again, STARTED).is_some_and(|v| v >= 1.0));
    assert!(sample(&body, "trailsight_ingest_lag_seconds").is_some_and(|v| v > 0.0));
    assert!(sample(&body, "trailsight_files_total{result=\"read\"}").is_some_and(|v| v > 0.0));
    assert!(sample(&body, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));

    // The exposition passes promtool's checks, lints included, with nothing to say.
    let mut check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus server scrapes it every second and answers queries on what it scraped.
    let prom_port = free_port();
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: trailsight\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(prom_dir.join("prometheus.log")).unwrap();
    let _prom = tokio::process::Command::new(&prometheus)
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(prom_log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let prom: SocketAddr = ([127, 0, 0, 1], prom_port).into();
    let query = |q: &str| {
        let q = q
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace('=', "%3D");
        format!("/api/v1/query?query={q}")
    };
    let value = |json: &str| -> Option<f64> {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let started = Instant::now();
    let (insights, lag) = loop {
        let insights = http_get(prom, &query(STARTED)).await.ok();
        let lag = http_get(prom, &query("trailsight_ingest_lag_seconds"))
            .await
            .ok();
        if let (Some((200, _, a)), Some((200, _, b))) = (&insights, &lag)
            && let (Some(a), Some(b)) = (value(a), value(b))
        {
            break (a, b);
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "Prometheus never answered with the scraped series: {insights:?} {lag:?}\n{}",
            std::fs::read_to_string(prom_dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        insights >= 1.0,
        "Insights counter in Prometheus: {insights}"
    );
    assert!(lag > 0.0, "ingest lag in Prometheus: {lag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_s3_is_down_and_200_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3");
    std::fs::create_dir_all(root.join("trail")).unwrap();
    std::fs::create_dir_all(root.join("ins")).unwrap();
    let (s3, server) = common::start_s3_on(&root, 0).await;
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\nlisten = \"127.0.0.1:{port}\"\nsources = [\"s3://trail\"]\nsinks = [\"s3://ins\"]\n\
             state_dir = {:?}\npoll_interval_seconds = 1\n\
             [serve.s3]\nendpoint_url = \"http://{s3}\"\nforce_path_style = true\nregion = \"us-east-1\"\n\
             max_attempts = 1\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let _serve = serve(&config);
    let readyz = |want: u16| {
        let config = config.clone();
        async move {
            let started = Instant::now();
            loop {
                if let Ok((status, _, body)) = http_get(addr, "/readyz").await
                    && status == want
                {
                    return body;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "/readyz never answered {want}; serve log:\n{}",
                    log_of(&config)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(readyz(200).await, "{\"ready\":true}");
    let (_, _, healthz) = http_get(addr, "/healthz").await.unwrap();
    assert_eq!(healthz, "{\"status\":\"alive\"}");

    // The S3 server goes away: the next poll cannot list the bucket.
    server.abort();
    let _ = server.await;
    let body = readyz(503).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false, "{body}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("the last poll failed") && reason.contains("s3://trail"),
        "{reason}"
    );
    let metrics = http_get(addr, "/metrics").await.unwrap().2;
    assert!(
        sample(
            &metrics,
            "trailsight_source_errors_total{kind=\"unavailable\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "trailsight_ready"), Some(0.0));

    // Back on the same port: ready again.
    let (_, _server) = common::start_s3_on(&root, s3.port()).await;
    assert_eq!(readyz(200).await, "{\"ready\":true}");
    let metrics = http_get(addr, "/metrics").await.unwrap().2;
    assert_eq!(sample(&metrics, "trailsight_ready"), Some(1.0));
}

/// One gzip log file under the trail layout, delivered now, with `n` write calls each of its own
/// `eventName`, principal and user agent (all three attacker-chosen in real life).
fn distinct_names_file(root: &Path, tag: &str, n: usize) -> usize {
    let now = chrono::Utc::now();
    let delivered = now.format("%Y%m%dT%H%MZ");
    let day = now.format("%Y/%m/%d");
    let event_time = (now - chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let records: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "eventVersion": "1.09",
                "eventTime": event_time,
                "eventSource": "iam.amazonaws.com",
                "eventName": format!("Create{tag}Thing{i}"),
                "awsRegion": "us-east-1",
                "recipientAccountId": "111122223333",
                "eventID": format!("{tag}-{i:08}"),
                "readOnly": false,
                "managementEvent": true,
                "eventType": "AwsApiCall",
                "userIdentity": {"arn": format!("arn:aws:iam::111122223333:user/u{tag}{i}")},
                "userAgent": format!("agent-{tag}-{i}"),
            })
        })
        .collect();
    let json = serde_json::to_vec(&serde_json::json!({ "Records": records })).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &json).unwrap();
    put(
        root,
        &format!(
            "AWSLogs/111122223333/CloudTrail/us-east-1/{day}/111122223333_CloudTrail_us-east-1_{delivered}_{tag}.json.gz"
        ),
        &gz.finish().unwrap(),
    );
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_number_of_series_does_not_grow_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    distinct_names_file(&bucket, "a", 1);
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = local_config(dir.path(), &bucket, port, "");
    let _serve = serve(&config);
    let read = "trailsight_files_total{result=\"read\"}";
    let before = scrape_until(addr, &config, Duration::from_secs(60), |b| {
        sample(b, read) == Some(1.0)
    })
    .await;

    // 100,000 distinct eventNames, principals and user agents in one file.
    distinct_names_file(&bucket, "b", 100_000);
    // Files are counted when read, records and keys when the engine has taken them: wait for both.
    let after = scrape_until(addr, &config, Duration::from_secs(240), |b| {
        sample(b, read) == Some(2.0) && sample(b, "trailsight_keys_tracked") == Some(10_000.0)
    })
    .await;
    let counted = |b: &str, r: &str| {
        sample(b, &format!("trailsight_records_total{{result=\"{r}\"}}")).unwrap_or(0.0)
    };
    // The data did arrive: keys up to the per-Region cap, the rest refused, every record counted once.
    assert_eq!(sample(&after, "trailsight_keys_tracked"), Some(10_000.0));
    let total: f64 = [
        "counted",
        "late",
        "duplicate",
        "ignored",
        "key_overflow",
        "not_counted",
        "skipped",
    ]
    .iter()
    .map(|r| counted(&after, r))
    .sum();
    assert_eq!(total, 100_001.0, "{after}");
    assert!(counted(&after, "key_overflow") >= 90_000.0, "{after}");
    // …and the exposition has exactly as many series as before.
    let names = |t: &str| -> std::collections::BTreeSet<String> {
        t.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(n, _)| n.to_string()))
            .collect()
    };
    let (b, a) = (names(&before), names(&after));
    assert_eq!(
        series_count(&before),
        series_count(&after),
        "only before: {:?}; only after: {:?}",
        b.difference(&a).collect::<Vec<_>>(),
        a.difference(&b).collect::<Vec<_>>()
    );
    assert!(!after.contains("CreatebThing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_can_require_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = local_config(
        dir.path(),
        &bucket,
        port,
        "[api]\ntoken = \"op-token\"\nprotect_operator_routes = true\n",
    );
    let _serve = serve(&config);
    let started = Instant::now();
    let status = loop {
        if let Ok((status, _, _)) = http_get(addr, "/metrics").await {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            log_of(&config)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 401, "no token: refused");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http_get(addr, path).await.unwrap().0, 401, "{path}");
    }
    // With the token, as Prometheus's `authorization` setting sends it.
    let (status, _, _) =
        common::http_get_with(addr, "/metrics", &[("authorization", "Bearer op-token")])
            .await
            .unwrap();
    assert_eq!(status, 200);
}
