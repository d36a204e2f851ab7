// Draws the sections of an rdist diagnostics page as SVG, from the JSON in #report-data.
// Our own code, no libraries: the page must open offline, from a file attached to a bug.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const WIDTH = 1100;
  const tip = document.getElementById("tip");

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }
  function html(tag, text, parent, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    if (parent) parent.appendChild(node);
    return node;
  }
  function hover(node, text) {
    node.addEventListener("mousemove", (e) => {
      tip.textContent = text;
      tip.hidden = false;
      tip.style.left = e.clientX + 12 + "px";
      tip.style.top = e.clientY + 12 + "px";
    });
    node.addEventListener("mouseleave", () => { tip.hidden = true; });
    el("title", {}, node).textContent = text;
  }
  function hue(name) {  // FNV-1a: names that differ in one character still differ in colour
    let h = 0x811c9dc5;
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
    h ^= h >>> 13;
    h = Math.imul(h, 0x5bd1e995);
    return "hsl(" + ((h >>> 0) % 360) + ",60%,50%)";
  }
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#d62728"];
  function group(key) {  // dask's key_split, as rdist.protocol.groups does it
    let text = String(key).trim();
    if (text.startsWith("(") && text.includes(",")) text = text.slice(1).split(",")[0].replace(/^[\s'"]+|[\s'"]+$/g, "");
    const words = [];
    for (const w of text.split("-")) {
      if (words.length && /^([0-9a-f]{8,}|\d+)$/.test(w)) break;
      words.push(w);
    }
    return words.join("-") || "?";
  }
  function bytes(n) {
    const units = ["B", "kiB", "MiB", "GiB", "TiB"];
    let i = 0;
    n = Number(n) || 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }
  function secs(s) {
    s = Number(s) || 0;
    return s < 0.001 ? (s * 1e6).toFixed(0) + " µs" : s < 1 ? (s * 1000).toFixed(1) + " ms" : s.toFixed(2) + " s";
  }
  function plotOf(id) {
    const section = document.getElementById(id);
    return section ? section.querySelector(".plot") : null;
  }
  function table(parent, headings, rows, cls) {
    const t = html("table", null, parent, cls);
    const head = html("tr", null, html("thead", null, t));
    headings.forEach((h) => html("th", h, head));
    const body = html("tbody", null, t);
    rows.forEach((cells) => {
      const tr = html("tr", null, body, cls ? cls + "-row" : "");
      cells.forEach((c, i) => { const td = html("td", c, tr, i === 0 ? "name" : ""); td.title = String(c); });
    });
    return t;
  }
  function timeAxis(svg, x0, x1, left, width, y) {
    const g = el("g", { class: "axis" }, svg);
    el("line", { x1: left, x2: left + width, y1: y, y2: y }, g);
    const span = Math.max(x1 - x0, 1e-6);
    for (let i = 0; i <= 5; i++) {
      const x = left + (width * i) / 5;
      el("line", { x1: x, x2: x, y1: y, y2: y + 4 }, g);
      const anchor = i === 0 ? "start" : i === 5 ? "end" : "middle";
      el("text", { x: x, y: y + 15, "text-anchor": anchor }, g).textContent = secs((span * i) / 5);
    }
  }

  // -- summary ------------------------------------------------------------------------------
  function drawSummary() {
    const dl = document.getElementById("summary");
    for (const [k, v] of Object.entries(DATA.summary || {})) {
      const div = html("div", null, dl);
      html("dt", k, div);
      html("dd", v, div);
    }
  }

  // -- task stream: a lane per worker thread, fetches in lanes of their own ----------------------
  // Runs reported in a batch do not name their thread, so lanes are packed instead: a run
  // goes to the first lane of its worker that is free when it starts -- as many lanes as
  // runs overlapped, which is at most the worker's threads.
  function packLanes(items) {
    const ends = {};
    items.sort((a, b) => a.ss.start - b.ss.start);
    for (const it of items) {
      const kind = it.r.worker + (it.transfer ? " fetch" : " thread");
      const lanes = ends[kind] || (ends[kind] = []);
      let i = lanes.findIndex((end) => end <= it.ss.start + 1e-6);
      if (i < 0) { i = lanes.length; lanes.push(0); }
      lanes[i] = it.ss.stop;
      it.lane = kind + " " + (i + 1);
    }
  }
  function drawTaskStream() {
    const plot = plotOf("task_stream");
    if (!plot) return;
    const items = [];
    for (const r of DATA.task_stream) {
      for (const ss of r.startstops) items.push({ r: r, ss: ss, transfer: ss.action === "transfer" });
    }
    packLanes(items);
    const lanes = [...new Set(items.map((i) => i.lane))].sort();
    const t0 = Math.min(...items.map((i) => i.ss.start));
    const t1 = Math.max(...items.map((i) => i.ss.stop));
    const left = 260, width = WIDTH - left - 20, laneH = 18;
    const height = lanes.length * laneH + 30;
    const svg = el("svg", { width: WIDTH, height: height, class: "task-stream" }, plot);
    const scale = width / Math.max(t1 - t0, 1e-6);
    lanes.forEach((lane, i) => {
      const label = el("text", { x: left - 6, y: i * laneH + 13, "text-anchor": "end", class: "lane" }, svg);
      label.textContent = lane.length > 40 ? "…" + lane.slice(-39) : lane;
      el("title", {}, label).textContent = lane;
    });
    for (const it of items) {
      const y = lanes.indexOf(it.lane) * laneH + 2;
      const x = left + (it.ss.start - t0) * scale;
      const w = Math.max(1, (it.ss.stop - it.ss.start) * scale);
      const color = it.transfer ? "#d62728" : it.r.status === "OK" ? hue(group(it.r.key)) : "#000";
      const rect = el("rect", { x: x, y: y, width: w, height: laneH - 4, fill: color,
        class: it.transfer ? "transfer" : "task", "data-key": it.r.key }, svg);
      const what = it.transfer ? "transfer from " + it.ss.source : it.r.status === "OK" ? "compute" : "error: " + (it.r.exception || "");
      hover(rect, it.r.key + "\n" + what + "\n" + secs(it.ss.stop - it.ss.start) + ", " + bytes(it.r.nbytes));
    }
    timeAxis(svg, t0, t1, left, width, lanes.length * laneH + 4);
    const groups = [...new Set(items.filter((i) => !i.transfer).map((i) => group(i.r.key)))].sort();
    const legend = html("div", null, plot, "legend");
    groups.forEach((g) => html("span", g, legend).style.setProperty("--c", hue(g)));
    if (items.some((i) => i.transfer)) html("span", "transfer", legend).style.setProperty("--c", "#d62728");
  }

  // -- per-group (and per-span) summary: bars of total duration, then the table ----------------
  function drawTotals(id, rows, nameField) {
    const plot = plotOf(id);
    if (!plot) return;
    const most = Math.max(...rows.map((r) => r.duration), 1e-9);
    const left = 260, width = WIDTH - left - 120, barH = 16;
    const svg = el("svg", { width: WIDTH, height: rows.length * (barH + 4) + 4, class: id + "-bars" }, plot);
    rows.forEach((r, i) => {
      const y = i * (barH + 4) + 2;
      const name = String(r[nameField]);
      const label = el("text", { x: left - 6, y: y + 12, "text-anchor": "end" }, svg);
      label.textContent = name.length > 40 ? name.slice(0, 39) + "…" : name;
      el("title", {}, label).textContent = name;
      const bar = el("rect", { x: left, y: y, width: Math.max(1, (width * r.duration) / most), height: barH,
        fill: hue(name), class: "total-bar" }, svg);
      hover(bar, name + ": " + r.count + " tasks, " + secs(r.duration) + ", " + bytes(r.nbytes));
      el("text", { x: left + Math.max(1, (width * r.duration) / most) + 6, y: y + 12 }, svg).textContent = secs(r.duration);
    });
    table(plot, [nameField, "tasks", "erred", "total time", "mean", "bytes"],
      rows.map((r) => [r[nameField], r.count, r.erred || 0, secs(r.duration), secs(r.duration / Math.max(1, r.count)), bytes(r.nbytes)]),
      id);
  }

  // -- transfers ---------------------------------------------------------------------------------
  function drawTransfers() {
    const plot = plotOf("transfers");
    if (!plot) return;
    const rows = DATA.transfers;
    const total = rows.reduce((a, t) => a + t.nbytes, 0);
    html("p", rows.length + " transfers, " + bytes(total), plot);
    table(plot, ["key", "from", "to", "bytes", "duration"],
      rows.slice(0, 500).map((t) => [t.key, t.source, t.worker, bytes(t.nbytes), secs(t.stop - t.start)]),
      "transfer");
    if (rows.length > 500) html("p", "(the first 500 shown)", plot, "empty");
  }

  // -- time series per worker ----------------------------------------------------------------------
  function drawSeries(id, format) {
    const plot = plotOf(id);
    if (!plot) return;
    const series = DATA[id];
    const workers = Object.keys(series).sort();
    const points = workers.flatMap((w) => series[w]);
    const t0 = Math.min(...points.map((p) => p[0])), t1 = Math.max(...points.map((p) => p[0]));
    const top = Math.max(...points.map((p) => p[1]), 1e-9);
    const left = 80, width = WIDTH - left - 20, height = 160;
    const svg = el("svg", { width: WIDTH, height: height + 30, class: id + "-chart" }, plot);
    const g = el("g", { class: "axis" }, svg);
    el("line", { x1: left, x2: left, y1: 0, y2: height }, g);
    el("text", { x: left - 6, y: 10, "text-anchor": "end" }, g).textContent = format(top);
    el("text", { x: left - 6, y: height, "text-anchor": "end" }, g).textContent = format(0);
    const sx = width / Math.max(t1 - t0, 1e-6);
    const legend = html("div", null, plot, "legend");
    for (const [index, w] of workers.entries()) {
      const colour = PALETTE[index % PALETTE.length];
      const pts = series[w].map((p) => (left + (p[0] - t0) * sx).toFixed(1) + "," + (height - (p[1] / top) * (height - 4)).toFixed(1));
      if (pts.length === 1) pts.push((left + width).toFixed(1) + "," + pts[0].split(",")[1]);
      const line = el("polyline", { points: pts.join(" "), fill: "none", stroke: colour, "stroke-width": 2, class: "series-line" }, svg);
      hover(line, w + ": peak " + format(Math.max(...series[w].map((p) => p[1]))));
      html("span", w, legend).style.setProperty("--c", colour);
    }
    timeAxis(svg, t0, t1, left, width, height + 2);
  }

  // -- flame graph (an icicle: callers above callees) -------------------------------------------------
  function drawFlame() {
    const plot = plotOf("profile");
    if (!plot) return;
    const root = DATA.profile;
    if (!root.count) { html("p", "no samples", plot, "empty"); return; }
    const rowH = 17, frames = [];
    let depth = 0;
    (function walk(node, x, w, d) {  // depth is bounded by the profiler (64 frames)
      if (w < 0.3) return;
      frames.push({ node: node, x: x, w: w, d: d });
      depth = Math.max(depth, d);
      let cx = x;
      const kids = Object.values(node.children || {}).sort((a, b) => b.count - a.count);
      for (const k of kids) {
        const kw = (w * k.count) / Math.max(node.count, 1);
        walk(k, cx, kw, d + 1);
        cx += kw;
      }
    })(root, 0, WIDTH, 0);
    const svg = el("svg", { width: WIDTH, height: (depth + 1) * rowH + 2, class: "flame" }, plot);
    for (const f of frames) {
      const d = f.node.description || {};
      const name = f.d === 0 ? "all" : d.name || f.node.identifier;
      const g = el("g", {}, svg);
      const rect = el("rect", { x: f.x, y: f.d * rowH, width: Math.max(0.3, f.w - 0.5), height: rowH - 1,
        fill: f.d === 0 ? "#bbb" : hue(d.filename || name), class: "frame" }, g);
      const where = d.filename ? "\n" + d.filename + ":" + d.line_number + (d.line ? "\n" + d.line : "") : "";
      hover(rect, name + " (" + f.node.count + " samples, " + ((100 * f.node.count) / root.count).toFixed(1) + "%)" + where);
      if (f.w > 40) {
        const text = el("text", { x: f.x + 3, y: f.d * rowH + 12 }, g);
        const room = Math.floor((f.w - 6) / 6.5);
        text.textContent = name.length > room ? name.slice(0, Math.max(0, room - 1)) + "…" : name;
      }
    }
    html("p", root.count + " samples", plot);
  }

  // -- events --------------------------------------------------------------------------------------------
  function drawEvents() {
    const plot = plotOf("events");
    if (!plot) return;
    table(plot, ["time", "event", "details"],
      DATA.events.map((e) => [new Date(e.time * 1000).toISOString().replace("T", " ").slice(0, 23), e.kind, e.info]),
      "event");
  }

  drawSummary();
  drawTaskStream();
  if (DATA.groups) drawTotals("groups", DATA.groups, "group");
  if (DATA.spans) drawTotals("spans", DATA.spans, "span");
  drawTransfers();
  drawSeries("memory", bytes);
  drawSeries("cpu", (v) => v.toFixed(0) + " %");
  drawFlame();
  drawEvents();
  document.body.setAttribute("data-drawn", "true");
})();
