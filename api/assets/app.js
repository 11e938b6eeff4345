// trailsight pages: every value comes from the public /v1 API and is inserted as text (record
// fields are attacker-chosen). Charts: uPlot 1.6.32 (MIT). Served by `trailsight serve`.
"use strict";
(() => {
  const $ = (selector) => document.querySelector(selector);
  const status = (text) => {
    $("#status").textContent = text;
  };

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  const minuteOf = (time) => Math.floor(Date.parse(time) / 60000);
  const iso = (minute) => new Date(minute * 60000).toISOString().replace(".000Z", "Z");
  const numbers = new Intl.NumberFormat("en", { maximumSignificantDigits: 3 });
  const num = (x) => (x === undefined || x === null ? "" : numbers.format(Number(x)));
  const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

  function showSignIn() {
    const form = $("#signin");
    form.hidden = false;
    $("#main").hidden = true;
    $("#signin-token").focus();
    form.onsubmit = async (event) => {
      event.preventDefault();
      const r = await fetch("/session", {
        method: "POST",
        headers: { Authorization: "Bearer " + $("#signin-token").value },
      });
      if (r.ok) location.reload();
      else $("#signin-error").textContent = "That token was refused.";
    };
  }

  /** GET an /v1 path as JSON; a 401 shows the sign-in form. */
  async function api(path) {
    const r = await fetch(path, { credentials: "same-origin" });
    if (r.status === 401) {
      showSignIn();
      throw new Error("sign in first");
    }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    return body;
  }

  /** `#token=…` in the address (never sent to the server): traded for a session cookie. */
  async function signInFromFragment() {
    const m = location.hash.match(/^#token=(.+)$/);
    if (!m) return;
    history.replaceState(null, "", location.pathname + location.search);
    await fetch("/session", {
      method: "POST",
      headers: { Authorization: "Bearer " + decodeURIComponent(m[1]) },
    });
  }

  const attribution = (record, attribute) =>
    ((record.insightDetails.insightContext.attributions || []).find((a) => a.attribute === attribute) || {});

  // ---------------------------------------------------------------- the list
  const FILTERS = ["startTime", "endTime", "account", "region", "eventSource", "eventName", "insightType"];

  async function listPage() {
    const params = new URLSearchParams(location.search);
    for (const field of document.querySelectorAll("#filters [name]")) {
      field.value = params.get(field.name) || "";
    }
    const query = new URLSearchParams();
    for (const k of FILTERS) if (params.get(k)) query.set(k, params.get(k));
    query.set("maxResults", "1000");
    const insights = new Map();
    const add = (r) => {
      const i = insights.get(r.sharedEventID) || {};
      i[r.insightDetails.state === "End" ? "end" : "start"] = r;
      insights.set(r.sharedEventID, i);
    };
    // The stream opens first: what is written while the pages load is held, then applied.
    let loaded = false;
    const held = [];
    const live = new EventSource("/v1/stream");
    live.addEventListener("insight", (event) => {
      const r = JSON.parse(event.data);
      if (!loaded) held.push(r);
      else onLive(r);
    });
    live.onerror = () => status("Live updates interrupted; retrying…");
    live.onopen = () => document.body.setAttribute("data-live", "1");
    let token = null;
    let pages = 0;
    status("Loading…");
    do {
      const q = new URLSearchParams(query);
      if (token) q.set("nextToken", token);
      const page = await api("/v1/insights?" + q);
      page.records.forEach(add);
      token = page.nextToken;
    } while (token && ++pages < 10);
    const wanted = params.get("status") || "";
    const render = (fresh) => {
      const rows = [...insights.values()]
        .filter((i) => i.start)
        .filter((i) => !wanted || (wanted === "open") === !i.end)
        .sort((a, b) => (a.start.eventTime < b.start.eventTime ? 1 : -1))
        .map((i) => row(i, fresh));
      $("#insights tbody").replaceChildren(...rows);
      status(rows.length + (rows.length === 1 ? " Insight" : " Insights"));
    };
    render(null);
    const matches = (r) =>
      FILTERS.every((k) => {
        const v = params.get(k);
        if (!v) return true;
        const d = r.insightDetails;
        return {
          startTime: r.eventTime >= v,
          endTime: r.eventTime <= v,
          account: r.recipientAccountId === v,
          region: r.awsRegion === v,
          eventSource: d.eventSource === v,
          eventName: d.eventName === v,
          insightType: d.insightType === v,
        }[k];
      });
    // Live: each record as it is written (the session cookie authorizes the stream).
    function onLive(r) {
      if (!matches(r)) return;
      add(r);
      render(r.sharedEventID);
    }
    loaded = true;
    held.splice(0).forEach(onLive);
  }

  function row(i, fresh) {
    const s = i.start;
    const d = s.insightDetails;
    const last = i.end || s;
    const stats = last.insightDetails.insightContext.statistics;
    const baseline = s.insightDetails.insightContext.statistics.baseline.average;
    const insight = stats.insight.average;
    const principal = ((attribution(last, "userIdentityArn").insight || [])[0] || {}).value;
    const api = d.eventSource + ":" + d.eventName + (d.errorCode ? " (" + d.errorCode + ")" : "");
    return el(
      "tr",
      { class: fresh === s.sharedEventID ? "new" : null, "data-shared-event-id": s.sharedEventID },
      el("td", {}, el("a", { href: "/insight/" + encodeURIComponent(s.sharedEventID) }, api)),
      el("td", {}, d.insightType === "ApiErrorRateInsight" ? "error rate" : "call rate"),
      el("td", {}, s.recipientAccountId + " / " + s.awsRegion),
      el("td", {}, s.eventTime),
      el("td", { class: i.end ? null : "state-open" }, i.end ? stats.insightDuration + " min" : "open"),
      el("td", { class: "num" }, num(baseline)),
      el("td", { class: "num" }, num(insight)),
      el("td", { class: "num" }, baseline > 0 ? num(insight / baseline) + "×" : ""),
      el("td", { class: "wrap" }, principal || ""),
    );
  }

  // ---------------------------------------------------------------- an Insight
  /** Every point of a /v1/metrics-data query (following nextToken). */
  async function series(params) {
    const out = { timestamps: [], values: [], expected: [], upper: [] };
    let token = null;
    do {
      const q = new URLSearchParams(params);
      if (token) q.set("nextToken", token);
      const page = await api("/v1/metrics-data?" + q);
      for (const k of Object.keys(out)) out[k].push(...page[k]);
      token = page.nextToken;
    } while (token);
    return out;
  }

  const shellQuote = (s) => "'" + String(s).replace(/'/g, "'\\''") + "'";
  const sqlQuote = (s) => "'" + String(s).replace(/'/g, "''") + "'";

  function copyButton(label, text) {
    const b = el("button", { type: "button" }, label);
    b.onclick = async () => {
      await navigator.clipboard.writeText(text);
      b.textContent = "Copied";
      setTimeout(() => (b.textContent = label), 1500);
    };
    return b;
  }

  async function detailPage() {
    const shared = $("#title").dataset.sharedEventId;
    const pair = await api("/v1/insights/shared/" + encodeURIComponent(shared));
    const start = pair.records.find((r) => r.insightDetails.state === "Start");
    const end = pair.records.find((r) => r.insightDetails.state === "End");
    const d = start.insightDetails;
    const last = end || start;
    const stats = last.insightDetails.insightContext.statistics;
    const t0 = minuteOf(start.eventTime);
    const t1 = end ? minuteOf(end.eventTime) : Math.max(t0 + 1, Math.floor(Date.now() / 60000));
    const isError = d.insightType === "ApiErrorRateInsight";
    $("#title").textContent = d.eventName + " — " + (isError ? "error rate (" + d.errorCode + ")" : "call rate");
    const baseline = start.insightDetails.insightContext.statistics.baseline.average;
    $("#summary").textContent =
      `${d.eventSource} · account ${start.recipientAccountId} · ${start.awsRegion} · from ${start.eventTime} ` +
      (end ? `to ${end.eventTime} (${stats.insightDuration} min)` : "(open)") +
      ` · baseline ${num(baseline)}/min, insight ${num(stats.insight.average)}/min` +
      (baseline > 0 ? ` (${num(stats.insight.average / baseline)}×)` : "");

    // Span by duration, as the console: hours for a short Insight, up to a week.
    const duration = t1 - t0;
    const from = t0 - clamp(duration * 4, 180, 7 * 1440);
    const to = t1 + clamp(duration, 60, 1440);
    const periods = [60, 300, 3600].filter((p) => p >= (to - from <= 2 * 1440 ? 60 : to - from <= 8 * 1440 ? 300 : 3600));
    const key = {
      account: start.recipientAccountId,
      region: start.awsRegion,
      eventSource: d.eventSource,
      eventName: d.eventName,
      insightType: d.insightType,
      startTime: iso(from),
      endTime: iso(to),
    };
    if (isError) key.errorCode = d.errorCode;
    // The finest period still kept for this range (1-minute points are kept 15 days, 5-minute
    // points 63): a coarser one when the store answers that the finer one was rolled up.
    try {
      let s = null;
      for (const p of periods) {
        key.period = String(p);
        try {
          s = await series(key);
          break;
        } catch (e) {
          if (!/^period/.test(e.message) || p === 3600) throw e;
        }
      }
      let calls = null;
      if (isError) {
        const { errorCode, ...callKey } = key;
        callKey.insightType = "ApiCallRateInsight";
        calls = await series(callKey).catch(() => null);
      }
      drawChart(s, calls, t0, t1, isError);
    } catch (e) {
      $("#chart").replaceChildren(el("p", { role: "alert" }, "No series to draw: " + e.message));
    }
    attributions(start, end);
    queries(start, t0, t1);
    const json = $("#json");
    for (const r of pair.records) {
      const text = JSON.stringify(r, null, 2);
      json.append(
        el("h3", {}, r.insightDetails.state),
        copyButton("Copy " + r.insightDetails.state + " JSON", text),
        el("pre", {}, text),
      );
    }
  }

  function drawChart(s, calls, t0, t1, isError) {
    const xs = s.timestamps.map((t) => Date.parse(t) / 1000);
    const data = [xs, s.values, s.expected, s.upper];
    const label = isError ? "errors" : "calls";
    const seriesOpts = [
      {},
      { label, stroke: "#1f4fa3", width: 1.5 },
      { label: "expected", stroke: "#2e7d32", width: 1, dash: [6, 4] },
      { label: "band top", stroke: "#8a6d00", width: 1 },
    ];
    if (calls) {
      const byTime = new Map(calls.timestamps.map((t, i) => [t, calls.values[i]]));
      data.push(s.timestamps.map((t) => byTime.get(t) ?? 0));
      seriesOpts.push({ label: "all calls", stroke: "#6a1b9a", width: 1 });
    }
    const chart = $("#chart");
    const shade = {
      hooks: {
        drawClear: [
          (u) => {
            const left = u.valToPos(t0 * 60, "x", true);
            const right = u.valToPos(t1 * 60, "x", true);
            const x0 = Math.max(left, u.bbox.left);
            const x1 = Math.min(right, u.bbox.left + u.bbox.width);
            if (x1 <= x0) return;
            u.ctx.save();
            u.ctx.fillStyle = "rgba(214, 69, 65, 0.18)";
            u.ctx.fillRect(x0, u.bbox.top, x1 - x0, u.bbox.height);
            u.ctx.restore();
            // What was shaded, back in minutes (the browser test checks it against the records).
            // (canvas pixels → CSS pixels from the plotting area's left edge)
            const pr = window.devicePixelRatio || 1;
            const at = (px) => iso(Math.round(u.posToVal((px - u.bbox.left) / pr, "x") / 60));
            chart.dataset.windowStart = at(left);
            chart.dataset.windowEnd = at(right);
          },
        ],
        draw: [() => document.body.setAttribute("data-chart-ready", "1")],
      },
    };
    const width = Math.max(480, Math.min(1360, chart.clientWidth || 1200));
    const u = new uPlot(
      {
        width,
        height: 320,
        series: seriesOpts,
        bands: [{ series: [3, 2], fill: "rgba(46, 125, 50, 0.12)" }],
        axes: [{}, { label: label + " per " + (xs.length > 1 ? (xs[1] - xs[0]) / 60 + " min" : "bucket") }],
        plugins: [shade],
        scales: { x: { time: true } },
      },
      data,
      chart,
    );
    const zoom = el("button", { type: "button" }, "Zoom to the Insight");
    zoom.onclick = () => u.setScale("x", { min: (t0 - 30) * 60, max: (t1 + 30) * 60 });
    const reset = el("button", { type: "button" }, "Show all");
    reset.onclick = () => u.setScale("x", { min: xs[0], max: xs[xs.length - 1] });
    chart.after(el("p", {}, zoom, " ", reset));
  }

  function attributions(start, end) {
    const out = $("#attributions");
    const last = end || start;
    const names = { userIdentityArn: "Principals", userAgent: "User agents", errorCode: "Error codes" };
    const grid = el("div", { class: "attr" });
    for (const a of last.insightDetails.insightContext.attributions || []) {
      const table = (side, values) =>
        el(
          "table",
          {},
          el("caption", {}, (names[a.attribute] || a.attribute) + " — " + side),
          el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "value"), el("th", { scope: "col", class: "num" }, "/min"))),
          el(
            "tbody",
            {},
            (values || []).map((v) => el("tr", {}, el("td", { class: "wrap" }, v.value), el("td", { class: "num" }, num(v.average)))),
          ),
        );
      grid.append(
        el("div", { "data-attribute": a.attribute }, table("insight", a.insight), table("baseline", a.baseline)),
      );
    }
    out.replaceChildren(grid);
  }

  function queries(start, t0, t1) {
    const d = start.insightDetails;
    const cli =
      `aws cloudtrail lookup-events --region ${shellQuote(start.awsRegion)} ` +
      `--lookup-attributes AttributeKey=EventName,AttributeValue=${shellQuote(d.eventName)} ` +
      `--start-time ${iso(t0)} --end-time ${iso(t1)}`;
    const athena =
      "SELECT eventtime, useridentity.arn, useragent, sourceipaddress, errorcode, eventid\n" +
      "FROM cloudtrail_logs\n" +
      `WHERE eventsource = ${sqlQuote(d.eventSource)} AND eventname = ${sqlQuote(d.eventName)}\n` +
      `  AND recipientaccountid = ${sqlQuote(start.recipientAccountId)} AND awsregion = ${sqlQuote(start.awsRegion)}\n` +
      (d.errorCode ? `  AND errorcode = ${sqlQuote(d.errorCode)}\n` : "") +
      `  AND eventtime >= ${sqlQuote(iso(t0))} AND eventtime < ${sqlQuote(iso(t1))}\n` +
      "ORDER BY eventtime";
    $("#queries").replaceChildren(
      el("h3", {}, "AWS CLI (event history, last 90 days)"),
      copyButton("Copy command", cli),
      el("pre", {}, cli),
      el("h3", {}, "Athena (the trail's table)"),
      copyButton("Copy query", athena),
      el("pre", {}, athena),
    );
  }

  // ---------------------------------------------------------------- tracked keys
  async function keysPage() {
    const keys = [];
    let token = null;
    let pages = 0;
    status("Loading…");
    let closedBefore = null;
    do {
      const q = new URLSearchParams({ maxResults: "1000" });
      if (token) q.set("nextToken", token);
      const page = await api("/v1/keys?" + q);
      keys.push(...page.keys);
      closedBefore = closedBefore || page.closedBefore;
      token = page.nextToken;
    } while (token && ++pages < 5);
    const rows = keys.map((k) => {
      const spark = el("td", { class: "spark", "aria-label": "calls per hour, last 24 hours" });
      const r = el(
        "tr",
        {},
        el("td", {}, k.account + " / " + k.region),
        el("td", {}, k.eventSource + ":" + k.eventName + (k.errorCode ? " (" + k.errorCode + ")" : "")),
        el("td", {}, k.insightType === "ApiErrorRateInsight" ? "error rate" : "call rate"),
        el("td", { class: k.state === "inInsight" ? "state-open" : null }, k.state),
        el("td", { class: "num" }, num(k.baselineRate)),
        el("td", { class: "num" }, num(k.recentRate)),
        spark,
      );
      r.sparkKey = k;
      r.spark = spark;
      return r;
    });
    $("#keys tbody").replaceChildren(...rows);
    status(keys.length + " keys");
    // Sparklines for the first 100 keys: the last 24 hourly points the store holds.
    for (const r of rows.slice(0, 100)) {
      const k = r.sparkKey;
      const q = {
        account: k.account,
        region: k.region,
        eventSource: k.eventSource,
        eventName: k.eventName,
        insightType: k.insightType,
        period: "3600",
      };
      // The last 24 closed hours.
      if (closedBefore) q.startTime = iso(minuteOf(closedBefore) - 24 * 60);
      if (k.errorCode) q.errorCode = k.errorCode;
      try {
        const s = await api("/v1/metrics-data?" + new URLSearchParams(q));
        const n = s.timestamps.length;
        const xs = s.timestamps.slice(Math.max(0, n - 24)).map((t) => Date.parse(t) / 1000);
        const ys = s.values.slice(Math.max(0, n - 24));
        new uPlot(
          {
            width: 140,
            height: 30,
            legend: { show: false },
            cursor: { show: false },
            axes: [{ show: false }, { show: false }],
            series: [{}, { stroke: "#1f4fa3", width: 1, fill: "rgba(31, 79, 163, 0.12)" }],
            scales: { x: { time: true } },
          },
          [xs, ys],
          r.spark,
        );
      } catch (e) {
        r.spark.textContent = "—";
      }
    }
  }

  // A token pasted into the address of an open page: sign in and load the page again.
  window.addEventListener("hashchange", () => {
    if (location.hash.startsWith("#token=")) signInFromFragment().then(() => location.reload());
  });

  const pages = { list: listPage, detail: detailPage, keys: keysPage };
  signInFromFragment()
    .then(() => (pages[document.body.dataset.page] || (() => {}))())
    .catch((e) => status(String(e.message || e)));
})();
