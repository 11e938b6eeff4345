//! The analysts' pages in a real browser: Debian's `chromium`, headless, against `trailsight
//! serve` on a replayed bucket with a known Insight (the demo's `CreateAccessKey` burst). The list
//! receives the Insight live while open; filtered, it lists it; its detail page draws the chart
//! with the Insight's minutes shaded and shows the injected principal. Screenshots are saved in
//! `target/ui-screenshots/`.
//!
//! Needs `chromium` on the PATH (`.ci/run` installs it and sets `TRAILSIGHT_REQUIRE_BROWSER=1`,
//! so CI cannot skip it); elsewhere the test prints a skip message when it is absent.

mod common;
use common::{free_port, http_get};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

const TOKEN: &str = "ui-test-token-0123456789";
/// The principal the demo's burst injects.
const PRINCIPAL: &str = "arn:aws:iam::111122223333:user/compromised-dev";

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn chromium() -> Option<PathBuf> {
    on_path("chromium")
}

fn chromedriver() -> Option<PathBuf> {
    on_path("chromedriver")
}

/// A WebDriver session on headless Chromium (chromedriver on a free loopback port, a fresh
/// profile), and the chromedriver process.
async fn browser() -> (fantoccini::Client, tokio::process::Child, tempfile::TempDir) {
    let port = free_port();
    let driver = tokio::process::Command::new(chromedriver().unwrap())
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium().unwrap(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--window-size=1366,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let started = Instant::now();
    loop {
        let connected = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps.clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await;
        match connected {
            Ok(client) => return (client, driver, profile),
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "chromedriver: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Polls `script` (a JavaScript function body) until it returns true.
async fn wait_for(client: &fantoccini::Client, script: &str, what: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let v = client.execute(script, vec![]).await.unwrap();
        if v == serde_json::Value::Bool(true) {
            return;
        }
        if started.elapsed() > limit {
            let page = client.source().await.unwrap_or_default();
            panic!("{what} (after {limit:?}); page:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_sees_the_insight_live_then_its_chart_band_and_principal() {
    if chromium().is_none() || chromedriver().is_none() {
        assert!(
            std::env::var_os("TRAILSIGHT_REQUIRE_BROWSER").is_none(),
            "chromium and chromedriver are required here (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIP: chromium or chromedriver not on PATH (Debian packages chromium, chromium-driver); \
             .ci/run installs them"
        );
        return;
    }
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The source starts with the days before the burst; the rest arrive while the list is open.
    let (source, later) = common::demo_source_before_burst(dir.path());
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\nlisten = \"127.0.0.1:{port}\"\nsources = [{:?}]\nsinks = [{:?}]\nstate_dir = {:?}\n\
             poll_interval_seconds = 1\nlocal_settle_seconds = 0\n[api]\ntoken = \"{TOKEN}\"\n\
             [detector]\nwarmup_minutes = 720\n",
            source.display().to_string(),
            dir.path().join("sink").display().to_string(),
            dir.path().join("state").display().to_string(),
        ),
    )
    .unwrap();
    let log = config.with_extension("log");
    let _serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_trailsight"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env_remove("TRAILSIGHT_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !matches!(http_get(addr, "/readyz").await, Ok((200, _, _))) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let base = format!("http://{addr}");
    let signed_in = |path: &str| format!("{base}{path}#token={TOKEN}");

    let (client, _driver, _profile) = browser().await;
    let minute = Duration::from_secs(60);

    // Without a session the page asks for the token (and shows no data).
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(
        &client,
        "return !document.querySelector('#signin').hidden;",
        "sign-in form",
        minute,
    )
    .await;

    // Signed in (the token in the fragment is traded for a session cookie), the open list
    // receives the Insight live while the burst's files arrive.
    client.goto(&signed_in("/")).await.unwrap();
    wait_for(
        &client,
        "return document.body.dataset.live === '1';",
        "stream open",
        minute,
    )
    .await;
    for (from, to) in &later {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
    wait_for(
        &client,
        "return [...document.querySelectorAll('#insights tbody tr.new')].some(r => r.textContent.includes('CreateAccessKey'));",
        "a live row for the Insight, without a reload",
        Duration::from_secs(240),
    )
    .await;

    // Wait for the End, then filter the list to the Insight and open its detail.
    let (start, end) = loop {
        let (_, _, body) = common::http_get_with(
            addr,
            "/v1/insights?eventName=CreateAccessKey",
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await
        .unwrap();
        let records: serde_json::Value = serde_json::from_str(&body).unwrap();
        let records = records["records"].as_array().unwrap().clone();
        let find = |state: &str| {
            records
                .iter()
                .find(|r| r["insightDetails"]["state"] == state)
                .cloned()
        };
        if let (Some(s), Some(e)) = (find("Start"), find("End")) {
            break (s, e);
        }
        assert!(started.elapsed() < Duration::from_secs(400), "no End");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let shared = start["sharedEventID"].as_str().unwrap();
    client
        .goto(&format!("{base}/?eventName=CreateAccessKey&status=ended"))
        .await
        .unwrap();
    wait_for(
        &client,
        &format!("return !!document.querySelector('tr[data-shared-event-id=\"{shared}\"]');"),
        "the filtered list shows the Insight",
        minute,
    )
    .await;
    let page = client.source().await.unwrap();
    assert!(page.contains(PRINCIPAL), "top principal in the row: {page}");
    std::fs::write(shots.join("list.png"), client.screenshot().await.unwrap()).unwrap();

    // Its detail: the chart drew, the shaded window is the Insight's minutes, the principal.
    let link = client
        .find(fantoccini::Locator::Css(&format!(
            "tr[data-shared-event-id=\"{shared}\"] a"
        )))
        .await
        .unwrap();
    link.click().await.unwrap();
    wait_for(
        &client,
        "return document.body.dataset.chartReady === '1' && !!document.querySelector('#chart').dataset.windowEnd;",
        "the chart drew",
        minute,
    )
    .await;
    let window = client
        .execute(
            "const c = document.querySelector('#chart'); return [c.dataset.windowStart, c.dataset.windowEnd];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        window,
        serde_json::json!([start["eventTime"], end["eventTime"]]),
        "the shaded window is the Insight's minutes"
    );
    let principals = client
        .execute(
            "return document.querySelector('[data-attribute=\"userIdentityArn\"]').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        principals.as_str().unwrap_or_default().contains(PRINCIPAL),
        "attribution table: {principals}"
    );
    let page = client.source().await.unwrap();
    assert!(page.contains("aws cloudtrail lookup-events"));
    let png = client.screenshot().await.unwrap();
    assert!(png.len() > 10_000);
    std::fs::write(shots.join("detail.png"), png).unwrap();

    // Tracked keys, each with a sparkline.
    client.goto(&format!("{base}/keys")).await.unwrap();
    wait_for(
        &client,
        "return [...document.querySelectorAll('#keys tbody tr')].some(r => r.textContent.includes('CreateAccessKey') && r.querySelector('canvas'));",
        "the keys page with sparklines",
        minute,
    )
    .await;
    std::fs::write(shots.join("keys.png"), client.screenshot().await.unwrap()).unwrap();
    client.close().await.unwrap();
}
