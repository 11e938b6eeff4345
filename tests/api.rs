//! The analysts' API over real HTTP, against `trailsight serve` on a replayed bucket with a known
//! Insight (the demo's `CreateAccessKey` burst): look-up with paging and filters, one record and
//! its pair, auth, JSON errors naming the bad parameter, and the live SSE stream resumed with
//! `Last-Event-ID`.

mod common;
use common::{free_port, http_get};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

const TOKEN: &str = "test-token-0123456789";

fn config(dir: &Path, source: &Path, port: u16) -> PathBuf {
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[serve]\nlisten = \"127.0.0.1:{port}\"\nsources = [{:?}]\nsinks = [{:?}]\nstate_dir = {:?}\n\
             poll_interval_seconds = 1\nlocal_settle_seconds = 0\n[api]\ntoken = \"{TOKEN}\"\n\
             [detector]\nwarmup_minutes = 720\n",
            source.display().to_string(),
            dir.join("sink").display().to_string(),
            dir.join("state").display().to_string(),
        ),
    )
    .unwrap();
    path
}

fn serve(config: &Path) -> tokio::process::Child {
    let log = std::fs::File::create(config.with_extension("log")).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_trailsight"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("TRAILSIGHT_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// `GET` with an optional bearer token: status and JSON body (`Null` when not JSON).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (status, _, body) = common::http_get_with(addr, path, &headers).await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Write management calls of one API per UTC minute in the bucket's log files, counted
/// independently of trailsight (gzip + JSON, one count per eventID).
fn input_counts(
    root: &Path,
    event_source: &str,
    event_name: &str,
) -> std::collections::BTreeMap<i64, u64> {
    use std::io::Read;
    let mut seen = std::collections::HashSet::new();
    let mut counts = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if !e.file_type().is_file() || !e.path().to_string_lossy().ends_with(".json.gz") {
            continue;
        }
        let mut text = String::new();
        if flate2::read::MultiGzDecoder::new(std::fs::File::open(e.path()).unwrap())
            .read_to_string(&mut text)
            .is_err()
        {
            continue; // a deliberately broken file of the demo
        }
        let Ok(log) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        for r in log["Records"].as_array().into_iter().flatten() {
            if r["eventSource"] == event_source
                && r["eventName"] == event_name
                && r["readOnly"] == false
                && r["managementEvent"] == true
                && r["recipientAccountId"] == "111122223333"
                && r["awsRegion"] == "us-east-1"
                && seen.insert(r["eventID"].as_str().unwrap_or_default().to_string())
            {
                let t =
                    chrono::DateTime::parse_from_rfc3339(r["eventTime"].as_str().unwrap()).unwrap();
                *counts.entry(t.timestamp() / 60).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Every record of a look-up, following `nextToken` with pages of `page`.
async fn all_pages(addr: SocketAddr, query: &str, page: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/v1/insights?maxResults={page}{query}");
        if let Some(t) = &token {
            path.push_str(&format!("&nextToken={t}"));
        }
        let (status, body) = get(addr, &path, Some(TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
        let records = body["records"].as_array().unwrap();
        assert!(records.len() <= page);
        out.extend(records.iter().cloned());
        match body["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return out,
        }
    }
}

/// Reads Server-Sent Events from `/v1/stream` until `n` `insight` events arrived (or `wait` passed):
/// their ids and records.
async fn read_events(
    addr: SocketAddr,
    last_event_id: Option<&str>,
    n: usize,
    wait: Duration,
) -> Vec<(String, serde_json::Value)> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get("/v1/stream")
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let res = sender
        .send_request(
            req.body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = res.into_body();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + wait;
    while events.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(frame))) = tokio::time::timeout(left, body.frame()).await else {
            break;
        };
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut data, mut kind) = (None, String::new(), None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_string());
                }
            }
            if kind.as_deref() == Some("insight") {
                events.push((id.unwrap(), serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_up_page_filter_and_stream_insights_over_http() {
    let dir = tempfile::tempdir().unwrap();
    // The source starts with the files before the burst's day; the rest arrive while a stream
    // client is connected.
    let (source, later) = common::demo_source_before_burst(dir.path());
    let all = dir.path().join("all");
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = config(dir.path(), &source, port);
    let _serve = serve(&config);
    let started = Instant::now();
    while !matches!(http_get(addr, "/readyz").await, Ok((200, _, _))) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{}",
            std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Auth: missing and wrong tokens are refused with a JSON error; the right one is accepted.
    let (status, body) = get(addr, "/v1/insights", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = get(addr, "/v1/insights", Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = get(addr, "/v1/insights", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["records"].as_array().unwrap().len(),
        0,
        "no Insight before the burst"
    );

    // A live client sees the Insight as it is written.
    let live = tokio::spawn(read_events(addr, None, 1, Duration::from_secs(180)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (from, to) in &later {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
    let first = live.await.unwrap();
    assert_eq!(
        first.len(),
        1,
        "no live event; log:\n{}",
        std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
    );
    let (first_id, first_record) = &first[0];
    assert_eq!(first_record["insightDetails"]["state"], "Start");
    assert_eq!(
        first_record["insightDetails"]["eventName"],
        "CreateAccessKey"
    );

    // Wait for the End, then look everything up.
    let started = Instant::now();
    let records = loop {
        let records = all_pages(addr, "", 1000).await;
        if records
            .iter()
            .any(|r| r["insightDetails"]["state"] == "End")
        {
            break records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no End: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Same as the sink's files: every record of the sink is in the store, newest first.
    let sink: Vec<serde_json::Value> =
        trailsight::sink::local::read_insight_files(&dir.path().join("sink"))
            .unwrap()
            .into_iter()
            .flat_map(|(_, r)| r)
            .map(|r| serde_json::to_value(r).unwrap())
            .collect();
    assert_eq!(records.len(), sink.len());
    for r in &sink {
        assert!(records.contains(r), "{r} not looked up");
    }
    let times: Vec<&str> = records
        .iter()
        .map(|r| r["eventTime"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    // Paging one record at a time gives the same records in the same order.
    assert_eq!(all_pages(addr, "", 1).await, records);

    // Filters.
    let starts = all_pages(addr, "&state=Start", 10).await;
    assert!(
        !starts.is_empty()
            && starts
                .iter()
                .all(|r| r["insightDetails"]["state"] == "Start")
    );
    let errors = all_pages(addr, "&insightType=ApiErrorRateInsight", 10).await;
    assert!(
        errors
            .iter()
            .all(|r| r["insightDetails"]["insightType"] == "ApiErrorRateInsight")
    );
    assert_eq!(
        all_pages(
            addr,
            "&eventName=CreateAccessKey&account=111122223333&region=us-east-1",
            10
        )
        .await
        .len(),
        records
            .iter()
            .filter(|r| r["insightDetails"]["eventName"] == "CreateAccessKey")
            .count()
    );
    assert!(
        all_pages(addr, "&account=999999999999", 10)
            .await
            .is_empty()
    );
    assert!(
        all_pages(addr, "&endTime=2000-01-01T00:00:00Z", 10)
            .await
            .is_empty()
    );
    assert_eq!(
        all_pages(addr, "&startTime=2000-01-01T00:00:00Z", 10).await,
        records
    );

    // One record, and the Start/End pair.
    let id = first_record["eventID"].as_str().unwrap();
    let (status, one) = get(addr, &format!("/v1/insights/{id}"), Some(TOKEN)).await;
    assert_eq!((status, &one), (200, first_record));
    let shared = first_record["sharedEventID"].as_str().unwrap();
    let (status, pair) = get(addr, &format!("/v1/insights/shared/{shared}"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    let states: Vec<&str> = pair["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["insightDetails"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["Start", "End"]);

    // Bad parameters are 400s naming the parameter.
    for (query, name) in [
        ("maxResults=0", "maxResults"),
        ("maxResults=abc", "maxResults"),
        ("insightType=Nope", "insightType"),
        ("state=Open", "state"),
        ("startTime=yesterday", "startTime"),
        ("nextToken=zz", "nextToken"),
        ("colour=blue", "colour"),
    ] {
        let (status, body) = get(addr, &format!("/v1/insights?{query}"), Some(TOKEN)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter");
        assert!(
            body["error"]["message"].as_str().unwrap().starts_with(name),
            "{body}"
        );
    }
    let long = format!("/v1/insights?eventName={}", "x".repeat(5000));
    let (status, body) = get(addr, &long, Some(TOKEN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_parameter"))
    );
    let (status, body) = get(addr, "/v1/insights/no-such-id", Some(TOKEN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = get(addr, "/v1/nothing-here", Some(TOKEN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Tracked keys, from the engine's snapshot: the burst's key is there, past its Insight. The
    // snapshot changes while serve still reads the last files: wait until it holds still.
    let settled = Instant::now();
    let mut body = serde_json::Value::Null;
    loop {
        let (status, now) = get(addr, "/v1/keys?maxResults=1000", Some(TOKEN)).await;
        assert_eq!(status, 200, "{now}");
        if now == body {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(120),
            "keys never settled"
        );
        body = now;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let keys = body["keys"].as_array().unwrap().clone();
    let burst: Vec<_> = keys
        .iter()
        .filter(|k| k["eventName"] == "CreateAccessKey" && k["insightType"] == "ApiCallRateInsight")
        .collect();
    assert_eq!(burst.len(), 1, "{keys:?}");
    assert_eq!(burst[0]["state"], "normal");
    assert!(burst[0]["historyMinutes"].as_i64().unwrap() > 720);
    assert!(burst[0]["baselineRate"].as_f64().unwrap() > 0.0);
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/keys?maxResults=1&nextToken={t}"),
            None => "/v1/keys?maxResults=1".to_string(),
        };
        let (status, page) = get(addr, &path, Some(TOKEN)).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["keys"].as_array().unwrap().iter().cloned());
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(
        paged, keys,
        "paging the keys one at a time gives the same list"
    );
    let (status, body) = get(
        addr,
        "/v1/keys?state=normal&eventName=CreateAccessKey",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["eventName"] == "CreateAccessKey")
    );
    let (status, body) = get(addr, "/v1/keys?state=sleepy", Some(TOKEN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_parameter"))
    );

    // The series behind the Insight: values equal the counts in the input files, minute by
    // minute, around and through the Insight; each point carries the detector's band.
    let end_record = records
        .iter()
        .find(|r| r["insightDetails"]["state"] == "End" && r["sharedEventID"] == shared)
        .unwrap();
    let minute = |r: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(r["eventTime"].as_str().unwrap())
            .unwrap()
            .timestamp()
            / 60
    };
    let (start, end) = (minute(first_record), minute(end_record));
    let (from, to) = (start - 120, end + 30);
    let counts = input_counts(&all, "iam.amazonaws.com", "CreateAccessKey");
    let time = |m: i64| trailsight_detector::time::format_minute(m);
    let series_path = |period: u32, data_type: &str| {
        format!(
            "/v1/metrics-data?account=111122223333&region=us-east-1&eventSource=iam.amazonaws.com\
             &eventName=CreateAccessKey&insightType=ApiCallRateInsight&period={period}\
             &dataType={data_type}&startTime={}&endTime={}",
            time(from),
            time(to)
        )
    };
    let (status, series) = get(addr, &series_path(60, "FillWithZeros"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{series}");
    let values: Vec<u64> = series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let wanted: Vec<u64> = (from..to)
        .map(|m| counts.get(&m).copied().unwrap_or(0))
        .collect();
    assert_eq!(
        values, wanted,
        "per-minute values are the input files' counts"
    );
    assert_eq!(series["timestamps"][0], time(from));
    assert!(values[120..(end - from) as usize].iter().sum::<u64>() > 0);
    let expected = series["expected"].as_array().unwrap();
    let upper = series["upper"].as_array().unwrap();
    assert_eq!((expected.len(), upper.len()), (values.len(), values.len()));
    for (e, u) in expected.iter().zip(upper) {
        let (e, u) = (e.as_f64().unwrap(), u.as_u64().unwrap());
        assert!(e > 0.0 && (u as f64) >= e, "band {e} .. {u}");
    }
    let peak = *values[120..].iter().max().unwrap() as f64;
    assert!(peak > 3.0 * expected[120].as_f64().unwrap(), "{series}");
    // Rolled into 5-minute and hourly points, the same calls; NonZeroData leaves out the zeros.
    for period in [300, 3600] {
        let (status, rolled) = get(addr, &series_path(period, "NonZeroData"), Some(TOKEN)).await;
        assert_eq!(status, 200, "{rolled}");
        let p = i64::from(period / 60);
        let in_range: u64 = counts
            .iter()
            .filter(|(m, _)| (from - from.rem_euclid(p)..to).contains(*m))
            .map(|(_, c)| c)
            .sum();
        let got: Vec<u64> = rolled["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(got.iter().all(|&v| v > 0));
        assert_eq!(got.iter().sum::<u64>(), in_range, "period {period}");
    }
    // Paging: pages of 7 points give the same series.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("{}&maxResults=7", series_path(60, "FillWithZeros"));
        if let Some(t) = &token {
            path.push_str(&format!("&nextToken={t}"));
        }
        let (status, page) = get(addr, &path, Some(TOKEN)).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(
            page["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap()),
        );
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, values);
    for (query, name) in [
        (
            "account=111122223333&region=us-east-1&eventSource=iam.amazonaws.com&insightType=ApiCallRateInsight",
            "eventName",
        ),
        (
            "account=111122223333&region=us-east-1&eventSource=iam.amazonaws.com&eventName=CreateAccessKey&insightType=ApiErrorRateInsight",
            "errorCode",
        ),
        (
            "account=111122223333&region=us-east-1&eventSource=iam.amazonaws.com&eventName=CreateAccessKey&insightType=ApiCallRateInsight&period=120",
            "period",
        ),
        (
            "account=111122223333&region=us-east-1&eventSource=iam.amazonaws.com&eventName=CreateAccessKey&insightType=ApiCallRateInsight&dataType=All",
            "dataType",
        ),
        (
            "account=111122223333&region=us-east-1&eventSource=iam.amazonaws.com&eventName=CreateAccessKey&insightType=ApiCallRateInsight&nextToken=6d3a31",
            "nextToken",
        ),
    ] {
        let (status, body) = get(addr, &format!("/v1/metrics-data?{query}"), Some(TOKEN)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().starts_with(name),
            "{body}"
        );
    }
    let (status, _) = get(
        addr,
        "/v1/metrics-data?account=1&region=us-east-1&eventSource=iam.amazonaws.com&eventName=CreateAccessKey&insightType=ApiCallRateInsight",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404);

    // The OpenAPI document (public) describes every /v1 route.
    let (status, _, doc) = http_get(addr, "/openapi.json").await.unwrap();
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/insights",
        "/v1/insights/{event_id}",
        "/v1/insights/shared/{shared_event_id}",
        "/v1/keys",
        "/v1/metrics-data",
        "/v1/stream",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // HTTP metrics: by matched route and status, never by raw path.
    let (_, _, exposition) = http_get(addr, "/metrics").await.unwrap();
    let count = |series: &str| common::sample(&exposition, series).unwrap_or(0.0);
    assert!(count("trailsight_http_requests_total{route=\"/v1/insights\",status=\"200\"}") >= 10.0);
    assert!(count("trailsight_http_requests_total{route=\"/v1/insights\",status=\"401\"}") >= 2.0);
    assert!(count("trailsight_http_requests_total{route=\"/v1/insights\",status=\"400\"}") >= 8.0);
    assert!(
        count("trailsight_http_requests_total{route=\"/v1/insights/{event_id}\",status=\"404\"}")
            >= 1.0
    );
    assert!(count("trailsight_http_requests_total{route=\"unmatched\",status=\"404\"}") >= 1.0);
    assert!(
        !exposition.contains("nothing-here") && !exposition.contains(id),
        "raw paths never become labels"
    );

    // Resume after the first event: exactly the records stored after it, in write order.
    let resumed = read_events(addr, Some(first_id), records.len(), Duration::from_secs(10)).await;
    let ids: Vec<i64> = resumed.iter().map(|(id, _)| id.parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids.iter().all(|&i| i > first_id.parse().unwrap())
    );
    assert_eq!(resumed.len(), records.len() - 1, "{resumed:?}");
    assert!(
        resumed
            .iter()
            .all(|(_, r)| records.contains(r) && r != first_record)
    );
}
