/**
 * The admin server's live status page, as one self-contained HTML document
 * (its style and script inline: no framework, no CDN, no build step) that
 * polls `/api/status` every second. Data from the relay (names, peers) is
 * only ever set as text, never as HTML.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  CLUSTER_SCRIPT,
  CLUSTER_SECTION,
  CLUSTER_STYLE,
} from "./_cluster_page.ts";

const STYLE = CLUSTER_STYLE + `
:root {
  --bg: #f5f6f8; --card: #fff; --text: #1d2330; --muted: #667085;
  --line: #e4e7ec; --up: #2f6fed; --down: #e8833a; --ok: #12a150;
  --warn: #d98b00; --bad: #d93f3f; --head: #101828;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #0f1318; --card: #171c23; --text: #e6e9ef; --muted: #98a2b3;
    --line: #283039; --head: #0b0e12; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text); }
header { background: var(--head); color: #f2f4f7; padding: 14px 24px;
  display: flex; align-items: center; gap: 16px; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; font-weight: 650; letter-spacing: .2px; }
header .meta { color: #c2c8d2; font-size: 13px; }
header .spacer { flex: 1; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 999px;
  font-size: 12px; font-weight: 600; background: #475467; color: #fff; }
.badge.serving { background: var(--ok); }
.badge.draining { background: var(--warn); }
.badge.stopped, .badge.offline { background: var(--bad); }
main { max-width: 1240px; margin: 0 auto; padding: 20px 24px 40px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr));
  gap: 12px; margin-bottom: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .4px; }
.card .value { font-size: 22px; font-weight: 650; margin-top: 2px;
  font-variant-numeric: tabular-nums; }
.card .sub { color: var(--muted); font-size: 12px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 14px 16px; margin-bottom: 16px; overflow: hidden; }
section h2 { font-size: 15px; margin: 0 0 10px; font-weight: 650;
  display: flex; align-items: baseline; gap: 10px; }
section h2 .note { color: var(--muted); font-size: 12px; font-weight: 400; }
.grid2 { display: grid; grid-template-columns: 2fr 1fr; gap: 16px; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
.grid2 > section { margin-bottom: 0; }
.legend { display: flex; gap: 18px; font-size: 13px; color: var(--muted);
  margin-bottom: 6px; }
.legend i { display: inline-block; width: 12px; height: 3px; border-radius: 2px;
  vertical-align: middle; margin-right: 6px; }
.legend i.up { background: var(--up); }
.legend i.down { background: var(--down); }
section.spaced { margin-top: 16px; }
.legend b { color: var(--text); font-variant-numeric: tabular-nums; font-weight: 600; }
#chart { width: 100%; height: 240px; display: block; }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th { text-align: left; color: var(--muted); font-weight: 600; font-size: 12px;
  border-bottom: 1px solid var(--line); padding: 6px 8px; white-space: nowrap; }
td { border-bottom: 1px solid var(--line); padding: 6px 8px;
  font-variant-numeric: tabular-nums; }
tr:last-child td { border-bottom: 0; }
td.num, th.num { text-align: right; }
td.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px;
  word-break: break-all; }
td.zero { color: var(--muted); }
.tag { font-size: 11px; padding: 1px 6px; border-radius: 4px; margin-left: 6px;
  border: 1px solid var(--line); color: var(--muted); }
.empty { color: var(--muted); padding: 10px 8px; }
button { font: inherit; font-size: 12px; padding: 2px 10px; border-radius: 6px;
  border: 1px solid var(--line); background: transparent; color: var(--text);
  cursor: pointer; }
button:hover { border-color: var(--bad); color: var(--bad); }
`;

const BODY = `
<header>
  <h1>tcp-relay</h1>
  <span class="badge" id="state">connecting</span>
  <span class="meta" id="addrs"></span>
  <span class="spacer"></span>
  <span class="meta" id="updated"></span>
</header>
<main>
  <div class="cards">
    <div class="card"><div class="label">Connections</div><div class="value" id="c-connections">–</div><div class="sub" id="c-states"></div></div>
    <div class="card"><div class="label">Active pairs</div><div class="value" id="c-pairs">–</div><div class="sub" id="c-pairings"></div></div>
    <div class="card"><div class="label">Names</div><div class="value" id="c-names">–</div><div class="sub" id="c-parked"></div></div>
    <div class="card"><div class="label">Client → server</div><div class="value" id="c-up">–</div><div class="sub" id="c-up-rate"></div></div>
    <div class="card"><div class="label">Server → client</div><div class="value" id="c-down">–</div><div class="sub" id="c-down-rate"></div></div>
    <div class="card"><div class="label">Refusals</div><div class="value" id="c-refusals">–</div><div class="sub" id="c-uptime"></div></div>
  </div>${CLUSTER_SECTION}  <section>
    <h2>Throughput <span class="note">bytes per second, last 10 minutes, 1 s resolution</span></h2>
    <div class="legend">
      <span><i class="up"></i>client → server <b id="l-up">–</b></span>
      <span><i class="down"></i>server → client <b id="l-down">–</b></span>
    </div>
    <canvas id="chart" aria-label="Throughput chart"></canvas>
  </section>
  <div class="grid2">
    <section>
      <h2>Names <span class="note" id="names-note"></span></h2>
      <table><thead><tr><th>Name</th><th class="num">Parked</th><th class="num">Waiting</th><th class="num">Active pairs</th><th></th></tr></thead>
      <tbody id="names"></tbody></table>
    </section>
    <section>
      <h2>Refusals by code <span class="note">since start</span></h2>
      <table><thead><tr><th>Code</th><th>Meaning</th><th class="num">Count</th></tr></thead>
      <tbody id="refusals"></tbody></table>
    </section>
  </div>
  <section class="spaced">
    <h2>Active pairs <span class="note" id="pairs-note"></span></h2>
    <table><thead><tr><th class="num">#</th><th>Name</th><th>Client</th><th>Server</th><th class="num">Duration</th><th class="num">Client → server</th><th class="num">Server → client</th><th></th></tr></thead>
    <tbody id="pairs"></tbody></table>
  </section>
</main>
`;

const SCRIPT = CLUSTER_SCRIPT + `
"use strict";
const MEANING = {
  LIMIT: "connection limits", RATE: "too many failed proofs", AUTH: "bad proof",
  NAME: "invalid name", PROTOCOL: "protocol violation", UNKNOWN: "unknown command",
  TIMEOUT: "handshake too slow", NOEXIST: "no such name", OFFLINE: "no server came",
  USED: "name owned by another", CLOSED: "relay shutting down"
};
const $ = (id) => document.getElementById(id);
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
function bytes(n) {
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + UNITS[i];
}
const rate = (n) => bytes(n) + "/s";
const count = (n) => n.toLocaleString("en-US");
function duration(s) {
  s = Math.floor(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
}
function el(tag, text, cls, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  return e;
}
function numCell(n, format) {
  return el("td", (format || count)(n), "num" + (n === 0 ? " zero" : ""), { "data-value": String(n) });
}
function emptyRow(body, cols, text) {
  const tr = el("tr"), td = el("td", text, "empty");
  td.colSpan = cols; tr.append(td); body.append(tr);
}
async function act(method, path, what) {
  if (!confirm(what + "?")) return;
  try {
    const res = await fetch(path, { method });
    if (!res.ok) alert((await res.json()).error || res.statusText);
  } catch (e) { alert(String(e)); }
  refresh();
}
function renderNames(s) {
  const body = $("names"); body.replaceChildren();
  for (const n of s.names) {
    const tr = el("tr", undefined, "", { "data-name": n.name });
    const td = el("td", n.name, "mono");
    if (n.private) td.append(el("span", "private", "tag"));
    else if (n.owned) td.append(el("span", "owned", "tag"));
    const close = el("button", "close");
    close.title = "Close every connection of " + n.name;
    close.onclick = () => act("POST", "/api/names/" + encodeURIComponent(n.name) + "/close", "Close every connection of " + n.name);
    const tdClose = el("td", undefined, "num");
    if (n.parked + n.waiting + n.active > 0) tdClose.append(close);
    tr.append(td, numCell(n.parked), numCell(n.waiting), numCell(n.active), tdClose);
    body.append(tr);
  }
  if (!s.names.length) emptyRow(body, 5, "No names yet: a server that connects offers one");
  $("names-note").textContent = s.namesTotal > s.names.length
    ? "the " + s.names.length + " busiest of " + count(s.namesTotal) : "";
}
function renderPairs(s) {
  const body = $("pairs"); body.replaceChildren();
  for (const p of s.pairs) {
    const tr = el("tr", undefined, "", { "data-pair-id": String(p.id) });
    const close = el("button", "close");
    close.onclick = () => act("DELETE", "/api/pairs/" + p.id, "Close pair #" + p.id + " (" + p.name + ")");
    const tdClose = el("td", undefined, "num"); tdClose.append(close);
    tr.append(el("td", String(p.id), "num"), el("td", p.name, "mono"),
      el("td", p.client, "mono"), el("td", p.server, "mono"),
      el("td", duration(p.seconds), "num", { "data-value": String(p.seconds) }),
      numCell(p.bytes.clientToServer, bytes), numCell(p.bytes.serverToClient, bytes), tdClose);
    body.append(tr);
  }
  if (!s.pairs.length) emptyRow(body, 8, "No active pairs");
  $("pairs-note").textContent = s.pairsTotal > s.pairs.length
    ? "the newest " + s.pairs.length + " of " + count(s.pairsTotal) : "";
}
function renderRefusals(s) {
  const body = $("refusals"); body.replaceChildren();
  for (const code in s.refusals) {
    const tr = el("tr", undefined, "", { "data-code": code });
    tr.append(el("td", code, "mono"), el("td", MEANING[code] || ""), numCell(s.refusals[code]));
    body.append(tr);
  }
}
function renderCards(s) {
  const t = s.totals, tp = s.throughput, last = (a) => a.length ? a[a.length - 1] : 0;
  $("c-connections").textContent = count(t.connections);
  $("c-states").textContent = t.handshaking + " handshaking · " + t.parked + " parked · " + t.waiting + " waiting";
  $("c-pairs").textContent = count(t.activePairs);
  $("c-pairings").textContent = count(t.pairings) + " pairings since start";
  $("c-names").textContent = count(t.names);
  $("c-parked").textContent = count(t.parked) + " servers parked";
  $("c-up").textContent = bytes(t.bytes.clientToServer);
  $("c-down").textContent = bytes(t.bytes.serverToClient);
  $("c-up-rate").textContent = "now " + rate(last(tp.clientToServer));
  $("c-down-rate").textContent = "now " + rate(last(tp.serverToClient));
  $("l-up").textContent = rate(last(tp.clientToServer));
  $("l-down").textContent = rate(last(tp.serverToClient));
  $("c-refusals").textContent = count(t.refusals);
  $("c-uptime").textContent = "up " + duration(s.uptime);
  const state = $("state");
  state.textContent = s.state; state.className = "badge " + s.state;
  $("addrs").textContent = "v" + s.version + " · servers on " + s.serverAddr + " · clients on " + s.clientAddr;
}
function niceStep(max) {
  const raw = max / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}
let lastStatus;
function drawChart() {
  const canvas = $("chart"), s = lastStatus;
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement);
  const color = (v) => css.getPropertyValue(v).trim();
  const left = 78, right = 12, top = 10, bottom = 26, pw = w - left - right, ph = h - top - bottom;
  const tp = s ? s.throughput : { step: 1000, clientToServer: [], serverToClient: [] };
  const span = 600;
  let max = 0;
  for (const a of [tp.clientToServer, tp.serverToClient]) for (const v of a) max = Math.max(max, v);
  let unit = 0;
  while (max / Math.pow(1024, unit) >= 1024 && unit < UNITS.length - 1) unit++;
  const scale = Math.pow(1024, unit);
  const step = niceStep(Math.max(max / scale, 4));
  const ymax = Math.ceil(Math.max(max / scale, 4) / step) * step;
  g.font = "12px system-ui, sans-serif"; g.lineWidth = 1;
  g.strokeStyle = color("--line"); g.fillStyle = color("--muted");
  g.textAlign = "right"; g.textBaseline = "middle";
  for (let v = 0; v <= ymax + 1e-9; v += step) {
    const y = top + ph - (v / ymax) * ph;
    g.beginPath(); g.moveTo(left, Math.round(y) + 0.5); g.lineTo(left + pw, Math.round(y) + 0.5); g.stroke();
    g.fillText((Math.round(v * 100) / 100) + " " + UNITS[unit] + "/s", left - 8, y);
  }
  g.textAlign = "center"; g.textBaseline = "top";
  for (let m = 10; m >= 0; m--) {
    const x = left + pw - (m * 60 / span) * pw;
    g.beginPath(); g.moveTo(Math.round(x) + 0.5, top + ph); g.lineTo(Math.round(x) + 0.5, top + ph + 4); g.stroke();
    g.fillText(m === 0 ? "now" : "−" + m + " min", x, top + ph + 8);
  }
  const line = (a, c) => {
    if (!a.length) return;
    const x = (i) => left + pw - ((a.length - 1 - i) / (span - 1)) * pw;
    const y = (v) => top + ph - (v / scale / ymax) * ph;
    g.beginPath();
    a.forEach((v, i) => i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v)));
    g.strokeStyle = c; g.lineWidth = 2; g.lineJoin = "round"; g.stroke();
    g.lineTo(x(a.length - 1), top + ph); g.lineTo(x(0), top + ph); g.closePath();
    g.globalAlpha = 0.12; g.fillStyle = c; g.fill(); g.globalAlpha = 1;
  };
  line(tp.clientToServer, color("--up"));
  line(tp.serverToClient, color("--down"));
}
let busy = false, failures = 0;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const res = await fetch("/api/status", { cache: "no-store" });
    if (!res.ok) throw new Error(res.status + " " + res.statusText);
    const s = await res.json();
    lastStatus = s; failures = 0;
    renderCards(s); renderCluster(s); renderNames(s); renderPairs(s); renderRefusals(s); drawChart();
    $("updated").textContent = "updated " + new Date(s.now).toLocaleTimeString();
  } catch (e) {
    if (++failures > 1) {
      const state = $("state");
      state.textContent = "offline"; state.className = "badge offline";
      $("updated").textContent = "cannot reach the relay: " + e.message;
    }
  } finally { busy = false; }
}
window.addEventListener("resize", drawChart);
drawChart();
refresh();
setInterval(refresh, 1000);
`;

const hash = (text: string) =>
  `'sha256-${createHash("sha256").update(text).digest("base64")}'`;

/** The page's Content-Security-Policy: its own inline style and script only. */
export const PAGE_CSP: string = [
  "default-src 'none'",
  `script-src ${hash(SCRIPT)}`,
  `style-src ${hash(STYLE)}`,
  "connect-src 'self'",
  "img-src data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** The status page. */
export const PAGE: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tcp-relay status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>${BODY}<script>${SCRIPT}</script>
</body>
</html>
`;
