// rdist dashboard, Status page: cards, task stream, progress per task group, worker bars,
// and the cluster's time series (kept by the server: the last minutes show on page load).
"use strict";

(function () {
  const R = Rdist;
  const WINDOW = 60;            // seconds of task stream shown
  const MAX_RUNS = 5000;        // runs kept in the browser
  const KEEP = 900;             // seconds of history kept in the browser
  const LANE = 12, LANE_GAP = 2, WORKER_GAP = 6, GUTTER = 150, AXIS = 18;
  const ERRED = "#d64545", TRANSFER = "#c0392b";

  let runs = [];
  let workerList = [];
  let clockOffset = 0;          // server clock minus browser clock, seconds
  let hits = [];                // drawn rectangles for the tooltip
  let gutterRows = [];          // [y0, y1, full worker name] of the lane labels
  let history = {};             // cluster columns: time, rate, memory, ...

  // -- cards and panels ---------------------------------------------------------------------
  function onStatus(s) {
    clockOffset = s.time - Date.now() / 1000;
    workerList = s.worker_list || [];
    const w = s.workers, t = s.tasks;
    R.$("c-workers").textContent = R.number(w.count, 0);
    R.$("c-threads").textContent = R.number(w.threads, 0) + " threads · " + R.number(w.executing, 0) + " executing";
    R.$("c-rate").textContent = R.number(s.rate, 1);
    R.$("c-memory").textContent = R.bytes(w.memory);
    R.$("c-memory-sub").textContent = (w.memory_limit ? "of " + R.bytes(w.memory_limit) + " · " : "") +
      R.bytes(w.stored_bytes || 0) + " managed";
    R.$("c-memory-bar").style.width = (w.memory_limit ? Math.min(100, 100 * w.memory / w.memory_limit) : 0) + "%";
    R.$("c-cpu").textContent = R.number(w.cpu, 0) + " %";
    R.$("c-tasks").textContent = R.number(t.total, 0);
    R.$("c-tasks-sub").textContent = tasksLine(t);
    R.$("c-tasks-sub").title = Object.entries(t.by_state || {}).map(([k, v]) => `${k}: ${R.number(v, 0)}`).join("\n");
    if (s.point) addPoint(s.point);
    renderProgress(t.groups || []);
    renderWorkerBars(workerList);
  }

  // Every state with tasks in it, so the line always adds up to what the sweep counted.
  function tasksLine(t) {
    const by = t.by_state || {};
    const waiting = (by.released || 0) + (by.waiting || 0) + (by.queued || 0) + (by["no-worker"] || 0);
    const parts = [`${R.number(by.processing || 0, 0)} processing`, `${R.number(by.memory || 0, 0)} in memory`,
                   `${R.number(by.erred || 0, 0)} erred`];
    if (waiting) parts.unshift(`${R.number(waiting, 0)} waiting`);
    if (!t.complete) return `counting… ${R.number(t.sweep_progress, 0)} so far`;
    const line = parts.join(" · ");
    return t.stale ? `${line} (counted ${R.number(t.counted, 0)}; recounting)` : line;
  }

  function addPoint(point) {
    const times = history.time || [];
    if (times.length && point.time <= times[times.length - 1]) return;
    const columns = {};
    for (const [k, v] of Object.entries(point)) columns[k] = [v];
    R.extend(history, columns, KEEP);
    drawCharts();
  }

  function drawCharts() {
    const h = history, times = h.time || [];
    const col = (name) => h[name] || [];
    const unmanaged = col("memory").map((m, i) => Math.max(0, m - (col("managed")[i] || 0)));
    R.chart(R.$("s-rate"), times, [{ name: "tasks/s", values: col("rate") }], { compact: true, window: 120 });
    R.chart(R.$("s-memory"), times, [{ name: "memory", values: col("memory"), colour: "#3fb27f" }], { compact: true, window: 120 });
    R.chart(R.$("s-cpu"), times, [{ name: "cpu", values: col("cpu") }], { compact: true, window: 120 });
    R.chart(R.$("h-rate"), times, [{ name: "tasks/s", values: col("rate") }], { window: 600 });
    const memory = [
      { name: "managed", values: col("managed"), colour: "#3fb27f" },
      { name: "unmanaged", values: unmanaged, colour: "#9aa5b8" },
      { name: "spilled", values: col("spilled"), colour: "#e08a2c" },
    ];
    // the limit only when the lines come near it: far above, it would flatten them
    const limit = Math.max(0, ...col("memory_limit").slice(-1));
    if (limit && Math.max(0, ...col("memory")) >= 0.2 * limit) memory.push({ name: "limit", values: col("memory_limit"), colour: "#d64545" });
    R.chart(R.$("h-memory"), times, memory, { window: 600, format: R.bytes });
    R.chart(R.$("h-cpu"), times, [{ name: "cpu %", values: col("cpu") }], { window: 600, format: (v) => R.number(v, 0) + " %" });
    R.chart(R.$("h-network"), times, [
      { name: "sent", values: col("net_sent"), colour: "#4a90d9" },
      { name: "received", values: col("net_recv"), colour: "#9467bd" },
    ], { window: 600, format: R.perSecond });
  }

  function segment(cls, count, total, title) {
    const span = R.el("span", { class: "seg " + cls, title: `${title}: ${R.number(count, 0)}` });
    span.style.width = (total ? (100 * count) / total : 0) + "%";
    return span;
  }

  function renderProgress(groups) {
    const rows = groups.slice(0, 40).map((g) => {
      const waiting = (g.released || 0) + (g.waiting || 0) + (g.queued || 0) + (g["no-worker"] || 0);
      const total = g.total || 1;
      const bar = R.el("div", { class: "stack" }, [
        segment("memory", g.memory || 0, total, "memory"),
        segment("processing", g.processing || 0, total, "processing"),
        segment("waiting", waiting, total, "waiting"),
        segment("erred", g.erred || 0, total, "erred"),
      ]);
      const label = R.el("div", { class: "label" }, [
        R.el("span", { class: "sw", title: g.name }),
        R.el("span", { class: "name", text: g.name, title: g.name }),
        R.el("span", { class: "counts", text: `${R.number(g.memory || 0, 0)} / ${R.number(g.total, 0)}` +
          (g.erred ? ` · ${R.number(g.erred, 0)} erred` : "") }),
      ]);
      label.firstChild.style.background = R.colour(g.name);
      return R.el("div", { class: "row", "data-group": g.name }, [label, bar]);
    });
    R.$("progress").replaceChildren(...rows);
    R.$("progress-empty").hidden = rows.length > 0;
  }

  function meter(fraction, text, cls, title) {
    const fill = R.el("span", { class: cls || "" });
    fill.style.width = Math.max(0, Math.min(100, fraction * 100)) + "%";
    return R.el("div", { class: "meter", title: title || text }, [fill, R.el("em", { text })]);
  }

  // Managed (results held), unmanaged (the rest of the process) and spilled (on disk)
  // side by side, on a scale of the limit (or of the fullest worker when there is none).
  function memoryBar(w, scale) {
    const memory = w.memory || 0, managed = Math.min(memory, w.stored_bytes || 0);
    const spilled = w.spilled_bytes || 0, limit = w.memory_limit || 0;
    const full = Math.max(limit, memory + spilled, scale, 1);
    const part = (cls, value) => {
      const span = R.el("span", { class: "seg " + cls });
      span.style.width = (100 * value) / full + "%";
      return span;
    };
    const text = R.bytes(memory) + (limit ? " / " + R.bytes(limit) : "") + (spilled ? " · " + R.bytes(spilled) + " spilled" : "");
    const title = `managed ${R.bytes(managed)} · unmanaged ${R.bytes(memory - managed)} · spilled ${R.bytes(spilled)}` +
      (limit ? ` · limit ${R.bytes(limit)}` : " · no limit");
    const hot = limit && memory / limit > 0.8;
    return R.el("div", { class: "membar" + (hot ? " hot" : ""), title }, [
      R.el("div", { class: "segs" }, [part("managed", managed), part("unmanaged", memory - managed), part("spilled", spilled)]),
      R.el("em", { text })]);
  }

  function renderWorkerBars(list) {
    const scale = Math.max(1, ...list.map((w) => (w.memory || 0) + (w.spilled_bytes || 0)));
    const rows = list.map((w) => {
      const threads = Math.max(1, w.nthreads || 1);
      const cpuFraction = (w.cpu || 0) / (100 * threads);
      const assigned = w.processing || 0;
      return R.el("div", { class: "wrow", "data-address": w.address }, [
        R.el("a", { class: "name", title: `${w.name} · ${w.address}`, text: w.name || w.address,
                    href: "/worker?address=" + encodeURIComponent(w.address) }),
        memoryBar(w, scale),
        meter(assigned / threads, `${R.number(assigned, 0)} / ${threads}`, "proc" + (assigned > threads ? " over" : ""),
              `${assigned} tasks assigned, ${w.executing || 0} executing, ${threads} threads`),
        meter(cpuFraction, R.number(w.cpu || 0, 0) + " %", "cpu"),
      ]);
    });
    R.$("worker-bars").replaceChildren(...rows);
    R.$("workers-empty").hidden = rows.length > 0;
  }

  // -- task stream ------------------------------------------------------------------------------
  // The first page of runs comes from the API and the rest from the socket; the two may
  // overlap by a moment, so a run already shown (same key and end) is skipped.
  const shown = new Set();
  let transfers = [];
  function onRuns(msg) {
    if (msg.transfers && msg.transfers.length) transfers = transfers.concat(msg.transfers).slice(-MAX_RUNS);
    for (const r of msg.runs || []) {
      const id = r.key + "|" + r.stop;
      if (shown.has(id)) continue;
      shown.add(id);
      r.group = R.groupOf(r.key);
      runs.push(r);
    }
    if (runs.length > MAX_RUNS) {
      for (const r of runs.slice(0, runs.length - MAX_RUNS)) shown.delete(r.key + "|" + r.stop);
      runs = runs.slice(runs.length - MAX_RUNS);
    }
  }

  // One lane per worker thread: a run reported with its thread's name keeps that thread's
  // lane; one reported without (a batch) takes the lane that came free first. A worker
  // never shows more lanes than it has threads (seceded tasks' replacement threads share).
  function layout(visible, visibleTransfers) {
    const byWorker = new Map();
    for (const w of workerList) byWorker.set(w.address, { worker: w, runs: [] });
    for (const r of visible) {
      if (!byWorker.has(r.worker)) byWorker.set(r.worker, { worker: { address: r.worker, name: r.worker, nthreads: 1 }, runs: [] });
      byWorker.get(r.worker).runs.push(r);
    }
    const rows = [];
    for (const entry of byWorker.values()) {
      const lanes = Math.max(1, entry.worker.nthreads || 1);
      const ends = new Array(lanes).fill(-Infinity);
      const byThread = new Map();
      entry.runs.sort((a, b) => a.start - b.start);
      for (const r of entry.runs) {
        let lane = r.thread ? byThread.get(r.thread) : undefined;
        if (lane === undefined) {
          lane = ends.indexOf(Math.min(...ends));
          if (r.thread && byThread.size < lanes && ![...byThread.values()].includes(lane)) byThread.set(r.thread, lane);
        }
        ends[lane] = Math.max(ends[lane], r.stop);
        r.lane = lane;
      }
      entry.lanes = lanes;
      // a transfer goes in the lane of the first run that started once it was done (the
      // task that needed it), else the first lane
      entry.transfers = visibleTransfers.filter((t) => t.worker === entry.worker.address).map((t) => {
        const next = entry.runs.find((r) => r.start >= t.stop - 0.05);
        return Object.assign({}, t, { lane: next ? next.lane : 0 });
      });
      rows.push(entry);
    }
    return rows;
  }

  function drawStream() {
    const canvas = R.$("taskstream");
    const now = Date.now() / 1000 + clockOffset;
    const visible = runs.filter((r) => r.stop >= now - WINDOW);
    const rows = layout(visible, transfers.filter((t) => t.stop >= now - WINDOW));
    const lanes = rows.reduce((n, r) => n + r.lanes, 0);
    const cssHeight = Math.max(60, AXIS + lanes * (LANE + LANE_GAP) + rows.length * WORKER_GAP + 4);
    const ratio = window.devicePixelRatio || 1;
    const cssWidth = canvas.clientWidth;
    canvas.style.height = cssHeight + "px";
    canvas.width = Math.round(cssWidth * ratio);
    canvas.height = Math.round(cssHeight * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssWidth, cssHeight);
    const gutter = Math.min(GUTTER, Math.max(80, cssWidth * 0.18));
    const plot = cssWidth - gutter - 8;
    const xOf = (t) => gutter + ((t - (now - WINDOW)) / WINDOW) * plot;
    drawAxis(ctx, now, xOf, cssHeight);
    hits = [];
    gutterRows = [];
    let y = 2;
    rows.forEach((row, i) => {
      const height = row.lanes * (LANE + LANE_GAP);
      if (i % 2 === 0) { ctx.fillStyle = "#f4f6fa"; ctx.fillRect(0, y - 1, cssWidth, height + 2); }
      ctx.fillStyle = "#3a4660";
      ctx.font = "12px system-ui, sans-serif";
      const name = row.worker.name || row.worker.address;
      ctx.fillText(shorten(name, Math.floor(gutter / 7)), 6, y + LANE - 1);
      gutterRows.push([y, y + height, `${name} · ${row.worker.address} · ${row.lanes} threads`]);
      for (const t of row.transfers) {  // fetching inputs from a peer: before the run
        const ry = y + t.lane * (LANE + LANE_GAP);
        const t0 = Math.max(gutter, xOf(t.start)), t1 = Math.max(t0 + 1, xOf(t.stop));
        ctx.fillStyle = TRANSFER;
        ctx.fillRect(t0, ry + 3, t1 - t0, LANE - 6);
        hits.push([t0, ry, t1 - t0, LANE, { transfer: t }]);
      }
      for (const r of row.runs) {
        const ry = y + r.lane * (LANE + LANE_GAP);
        const x0 = Math.max(gutter, xOf(r.start)), x1 = Math.max(x0 + 1, xOf(r.stop));
        ctx.fillStyle = r.status === "erred" ? ERRED : R.colour(r.group);
        ctx.fillRect(x0, ry, x1 - x0, LANE);
        hits.push([x0, ry, x1 - x0, LANE, r]);
      }
      y += height + WORKER_GAP;
    });
    R.$("ts-empty").hidden = visible.length > 0;
  }

  function drawAxis(ctx, now, xOf, height) {
    ctx.strokeStyle = "#d5dbe6";
    ctx.fillStyle = "#6b768c";
    ctx.font = "11px system-ui, sans-serif";
    for (let s = 0; s <= WINDOW; s += 10) {
      const x = xOf(now - WINDOW + s);
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, height - AXIS + 4);
      ctx.stroke();
      const label = s === WINDOW ? "now" : `-${WINDOW - s}s`;
      ctx.fillText(label, Math.min(x - 8, xOf(now) - 24), height - 4);
    }
  }

  function shorten(text, n) {
    text = String(text);
    return text.length > n ? "…" + text.slice(text.length - n + 1) : text;
  }

  function onMouse(event) {
    const rect = event.target.getBoundingClientRect();
    const x = event.clientX - rect.left, y = event.clientY - rect.top;
    const hit = hits.slice().reverse().find(([hx, hy, hw, hh]) => x >= hx - 1 && x <= hx + hw + 1 && y >= hy && y <= hy + hh);
    if (!hit) {
      const label = x < GUTTER && gutterRows.find(([y0, y1]) => y >= y0 && y < y1);
      return label ? R.tooltip.show(event.clientX, event.clientY, [label[2]]) : R.tooltip.hide();
    }
    const r = hit[4];
    if (r.transfer) {
      const t = r.transfer;
      return R.tooltip.show(event.clientX, event.clientY, [
        "transfer of " + t.key, `${R.bytes(t.nbytes || 0)} from ${t.source}`, R.seconds(t.stop - t.start)]);
    }
    const lines = [r.key, `${r.worker} · ${r.thread || "thread not reported"}`, `${R.seconds(r.stop - r.start)} · ${r.status}`];
    if (r.error) lines.push(r.error);
    R.tooltip.show(event.clientX, event.clientY, lines);
  }

  // -- start ------------------------------------------------------------------------------------
  async function start() {
    R.$("ts-window").textContent = WINDOW;
    const canvas = R.$("taskstream");
    canvas.addEventListener("mousemove", onMouse);
    canvas.addEventListener("mouseleave", () => R.tooltip.hide());
    try {
      const [past, status, recent] = await Promise.all([
        R.getJSON("/api/history?workers=0"), R.getJSON("/api/status"), R.getJSON("/api/runs?window=" + WINDOW)]);
      history = past.cluster || {};
      onStatus(status);
      onRuns(recent);
      drawCharts();
    } catch (err) {
      R.$("conn").textContent = "error: " + err.message;
    }
    R.live(["status", "runs"], { status: onStatus, runs: onRuns });
    setInterval(drawStream, 250);
    window.addEventListener("resize", drawCharts);
    drawStream();
  }

  start();
})();
