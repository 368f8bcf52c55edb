// podgate console: reads /console/events (one SSE stream, a snapshot a second) with fetch(),
// which can send the admin key as a Bearer header (EventSource cannot), and draws it.
// Everything from the server goes into the page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "podgate-console-key";
let keyed = false;
let controller = null;

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: "Bearer " + key } : {};
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "—" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

const secs = (s) => (s === null || s === undefined ? "—" : s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(s < 10 ? 2 : 1) + " s");
const pct = (f) => (f === null || f === undefined ? "—" : Math.round(f * 100) + "%");

// ---- sparklines (inline SVG) ------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function spark(values, label, max) {
  const w = 160, h = 36, box = document.createElement("figure");
  box.className = "spark";
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  const nums = values.map((v) => (v === null || v === undefined ? 0 : v));
  const top = Math.max(max || 0, ...nums, 1);
  if (nums.length > 1) {
    const pts = nums.map((v, i) => `${((i / (nums.length - 1)) * w).toFixed(1)},${(h - 2 - (v / top) * (h - 4)).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.appendChild(line);
  }
  box.appendChild(svg);
  const last = values.length ? values[values.length - 1] : null;
  box.appendChild(el("figcaption", `${label}: ${last === null || last === undefined ? "—" : max === 1 ? pct(last) : last}`));
  return box;
}

// ---- drawing a snapshot -----------------------------------------------------------------------
const charts = {};  // endpoint → its chart points, as last sent
const WORKERS = ["idle", "ready", "running", "initializing", "throttled", "unhealthy"];  // feed.WORKER_STATES

function drawEndpoints(s) {
  fill($("models").tBodies[0], s.models.map((m) => row([m.name, m.format, m.path, m.endpoint])));
  const box = $("endpoints");
  box.replaceChildren();
  for (const [name, ep] of Object.entries(s.endpoints)) {
    if (ep.history) charts[name] = { history: ep.history, budgets: ep.budget_history };  // sent when they change
    const kept = charts[name] || { history: [], budgets: {} };
    const card = el("div", null, "card");
    const title = el("h3", name);
    title.appendChild(el("span", ep.up === null ? "no /health polling" : ep.up ? "up" : "down", "pill " + (ep.up === false ? "bad" : "ok")));
    card.appendChild(title);
    const jobs = ep.jobs || {}, workers = ep.workers || {};
    card.appendChild(el("p", `queue ${jobs.inQueue ?? "—"} · in progress ${jobs.inProgress ?? "—"} · workers ` +
      WORKERS.map((w) => `${w} ${workers[w] ?? "—"}`).join(", ")));
    const lines = el("div", null, "charts");
    const hist = kept.history;
    lines.appendChild(spark(hist.map((p) => p[1]), "queue"));
    lines.appendChild(spark(hist.map((p) => p[2]), "in progress"));
    WORKERS.forEach((w, i) => lines.appendChild(spark(hist.map((p) => p[3 + i]), w)));
    card.appendChild(lines);
    const budgets = el("div", null, "charts");
    if (!ep.budgets || !Object.keys(ep.budgets).length) {
      budgets.appendChild(el("p", "budget in use: — (no budgeted call yet)", "muted"));
    } else {
      for (const [op, used] of Object.entries(ep.budgets)) {
        budgets.appendChild(spark(kept.budgets[op] || [used], "budget " + op, 1));
      }
    }
    card.appendChild(budgets);
    box.appendChild(card);
  }
}

// rows are kept per request and updated in place, so that a Cancel button stays under the pointer
const liveRows = new Map();

function liveRow(r) {
  const tr = row([r.request_id, r.model, r.key, "", "", "", "", ""]);
  const b = el("button", "Cancel", "cancel");
  b.addEventListener("click", () => cancel(r.request_id, b));
  tr.cells[7].appendChild(b);
  tr.dataset.request = r.request_id;
  return tr;
}

function drawLive(s) {
  const tbody = $("live").tBodies[0], now = new Set();
  for (const r of s.live) {
    now.add(r.request_id);
    let tr = liveRows.get(r.request_id);
    if (!tr) { tr = liveRow(r); liveRows.set(r.request_id, tr); tbody.appendChild(tr); }
    tr.dataset.job = r.job_id || "";
    tr.cells[3].textContent = secs(r.age_s);
    tr.cells[4].textContent = r.tokens;
    tr.cells[5].textContent = r.tokens_per_s ?? "—";
    tr.cells[6].textContent = r.job_id ?? "—";
    const b = tr.cells[7].firstChild;
    if (r.cancelling) b.textContent = "cancelling…";
    b.disabled = !r.cancellable || r.cancelling || b.textContent !== "Cancel";
    b.title = r.job_id ? "Send /cancel through the cancel queue"
      : r.cancellable ? "Close the upstream request (passed through: the endpoint cancels its job)"
      : "No RunPod job yet (not submitted)";
  }
  for (const [id, tr] of liveRows) if (!now.has(id)) { tr.remove(); liveRows.delete(id); }
  $("live-count").textContent = s.live.length;
  $("live-empty").hidden = s.live.length > 0;
}

function drawCost(s) {
  const c = s.cost, dl = $("cost");
  dl.replaceChildren();
  const items = [["Cancels sent", c.cancels_sent], ["Cancels failed", c.cancels_failed], ["Cancel queue", c.cancel_queue],
    ["Median cancel lag", secs(c.median_lag_s)], ["GPU-seconds saved (est.)", c.gpu_seconds_saved.toFixed(1)]];
  for (const [k, v] of items) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); }
}

function drawErrors(s) {
  const rows = Object.values(s.errors).map((e) => {
    const l = e.latest || {};
    const ago = l.at ? Math.max(0, Math.round(s.t - l.at)) + " s ago" : "";
    return row([e.label, e.count, `${l.status ?? ""} ${l.code ?? ""} · ${l.model ?? ""} · request ${l.request_id ?? "—"} · job ${l.job_id ?? "—"} · ${ago}`]);
  });
  fill($("errors").tBodies[0], rows);
  $("errors-empty").hidden = rows.length > 0;
  $("runpod-429").textContent = `RunPod answered 429 to ${s.runpod_429} call(s) in all, retried where safe ` +
    "(a request that failed for it counts above).";
}

function drawLatency(s) {
  const rows = [];
  for (const [model, windows] of Object.entries(s.latency || {})) {
    for (const [w, m] of Object.entries(windows)) {
      rows.push(row([model, w, m.duration.n, secs(m.ttft.p50), secs(m.ttft.p90), secs(m.ttft.p99),
        secs(m.duration.p50), secs(m.duration.p90), secs(m.duration.p99)]));
    }
  }
  fill($("latency").tBodies[0], rows);
  $("latency-empty").hidden = rows.length > 0;
}

function draw(s) {
  keyed = s.keyed;
  drawEndpoints(s); drawLive(s); drawCost(s); drawErrors(s); drawLatency(s);
  const select = $("play-model");
  if (!select.options.length) {
    for (const m of s.models) select.appendChild(new Option(m.name, m.name));
  }
}

// ---- SSE over fetch(): the data of each event, as it comes ------------------------------------
async function* sseData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (event.startsWith("data: ")) yield event.slice(6);
    }
  }
}

// ---- the feed ---------------------------------------------------------------------------------
function status(text, bad) { const p = $("status"); p.textContent = text; p.className = "pill " + (bad ? "bad" : "ok"); }

function showLogin(message) {
  $("console").hidden = true; $("login").hidden = false; $("logout").hidden = true;
  $("login-error").textContent = message || "";
  status("locked", true);
}

async function connect() {
  if (controller) controller.abort();
  controller = new AbortController();
  let response;
  try {
    response = await fetch("/console/events", { headers: authHeaders(), signal: controller.signal });
  } catch (e) {
    status("offline, retrying…", true);
    return setTimeout(connect, 2000);
  }
  if (response.status === 401) return showLogin(sessionStorage.getItem(KEY) ? "That key was refused." : "");
  if (!response.ok) {
    let msg = "HTTP " + response.status;
    try { msg = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    status(msg, true);
    return;
  }
  $("console").hidden = false; $("login").hidden = true; $("logout").hidden = !sessionStorage.getItem(KEY);
  status("live", false);
  try {
    for await (const data of sseData(response)) draw(JSON.parse(data));
  } catch (e) { /* aborted or cut */ }
  status("reconnecting…", true);
  setTimeout(connect, 1000);
}

async function cancel(requestId, button) {
  button.disabled = true;
  button.textContent = "cancelling…";
  const r = await fetch("/console/cancel/" + encodeURIComponent(requestId), { method: "POST", headers: authHeaders() });
  if (!r.ok) {
    button.textContent = "failed";
    try { button.title = (await r.json()).error.message; } catch (e) { /* not JSON */ }
  }
}

// ---- the playground ---------------------------------------------------------------------------
async function play(event) {
  event.preventDefault();
  const model = $("play-model").value, text = $("play-input").value.trim();
  if (!model || !text) return;
  const out = $("play-output"), stats = $("play-stats");
  out.textContent = ""; stats.textContent = "waiting for the first token…";
  $("play-send").disabled = true;
  const headers = { "Content-Type": "application/json", ...(keyed ? authHeaders() : {}) };
  const started = performance.now();
  let first = null, last = null, tokens = null;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers,
      body: JSON.stringify({ model, stream: true, max_tokens: 200, stream_options: { include_usage: true },
        messages: [{ role: "user", content: text }] }),
    });
    if (!r.ok) {
      let msg = "HTTP " + r.status;
      try { msg = (await r.json()).error.message; } catch (e) { /* not JSON */ }
      stats.textContent = msg;
      return;
    }
    for await (const data of sseData(r)) {
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) { stats.textContent = "error: " + chunk.error.message; continue; }
      if (chunk.usage) tokens = chunk.usage.completion_tokens;  // the last chunk: the true count
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
      if (!delta) continue;
      if (first === null) first = performance.now();
      last = performance.now();
      out.textContent += delta;
      stats.textContent = `TTFT ${secs((first - started) / 1000)} · streaming…`;
    }
    // one chunk may carry several tokens (podgate sends what each /stream poll brought): the rate
    // comes from the usage, over the time from the first token to the last
    if (first !== null && tokens !== null) {
      const gen = (last - first) / 1000;
      stats.textContent = `TTFT ${secs((first - started) / 1000)} · ${tokens} tokens` +
        (gen > 0 && tokens > 1 ? ` · ${((tokens - 1) / gen).toFixed(1)} tokens/s` : "");
    }
    if (first === null && !stats.textContent.startsWith("error")) stats.textContent = "no tokens";
  } finally {
    $("play-send").disabled = false;
  }
}

$("play").addEventListener("submit", play);
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key").value = "";
  connect();
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(); if (controller) controller.abort(); });
connect();
