// rdist dashboard, Status page: cards, task stream, progress per task group, worker bars.
"use strict";

(function () {
  const R = Rdist;
  const WINDOW = 60;            // seconds of task stream shown
  const MAX_RUNS = 5000;        // runs kept in the browser
  const HISTORY = 120;          // points per sparkline
  const LANE = 12, LANE_GAP = 2, WORKER_GAP = 6, GUTTER = 150, AXIS = 18;
  const ERRED = "#d64545";

  let runs = [];
  let workerList = [];
  let clockOffset = 0;          // server clock minus browser clock, seconds
  let hits = [];                // drawn rectangles for the tooltip
  const history = { rate: [], memory: [], cpu: [] };

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
      R.bytes(s.tasks.memory_bytes || 0) + " of results";
    R.$("c-memory-bar").style.width = (w.memory_limit ? Math.min(100, 100 * w.memory / w.memory_limit) : 0) + "%";
    R.$("c-cpu").textContent = R.number(w.cpu, 0) + " %";
    R.$("c-tasks").textContent = R.number(s.task_count === undefined ? t.total : s.task_count, 0);
    const by = t.by_state || {};
    R.$("c-tasks-sub").textContent = !t.complete
      ? `counting… ${R.number(t.sweep_progress, 0)} so far`
      : `${R.number(by.processing || 0, 0)} processing · ` +
        `${R.number(by.memory || 0, 0)} in memory · ${R.number(by.erred || 0, 0)} erred`;
    push("rate", s.rate);
    push("memory", w.memory);
    push("cpu", w.cpu);
    renderProgress(t.groups || []);
    renderWorkerBars(workerList);
  }

  function push(name, value) {
    const list = history[name];
    list.push(Number(value) || 0);
    if (list.length > HISTORY) list.shift();
    spark(R.$("s-" + name), list);
  }

  function spark(canvas, values) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    if (values.length < 2) return;
    const max = Math.max(...values) || 1;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = (i / (HISTORY - 1)) * w, y = h - 2 - (v / max) * (h - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = "#4a90d9";
    ctx.lineWidth = 1.5;
    ctx.stroke();
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
        R.el("span", { class: "name", text: g.name }),
        R.el("span", { class: "counts", text: `${R.number(g.memory || 0, 0)} / ${R.number(g.total, 0)}` +
          (g.erred ? ` · ${R.number(g.erred, 0)} erred` : "") }),
      ]);
      label.firstChild.style.background = R.colour(g.name);
      return R.el("div", { class: "row", "data-group": g.name }, [label, bar]);
    });
    R.$("progress").replaceChildren(...rows);
    R.$("progress-empty").hidden = rows.length > 0;
  }

  function meter(fraction, text, cls) {
    const fill = R.el("span", { class: cls || "" });
    fill.style.width = Math.max(0, Math.min(100, fraction * 100)) + "%";
    return R.el("div", { class: "meter" }, [fill, R.el("em", { text })]);
  }

  function renderWorkerBars(list) {
    const maxMemory = Math.max(1, ...list.map((w) => w.memory || 0));
    const rows = list.map((w) => {
      const limit = w.memory_limit || 0;
      const memFraction = limit ? w.memory / limit : w.memory / maxMemory;
      const cpuFraction = (w.cpu || 0) / (100 * Math.max(1, w.nthreads || 1));
      return R.el("div", { class: "wrow" }, [
        R.el("span", { class: "name", title: w.address, text: w.name || w.address }),
        meter(memFraction, R.bytes(w.memory) + (limit ? " / " + R.bytes(limit) : ""), memFraction > 0.8 ? "hot" : ""),
        meter(cpuFraction, R.number(w.cpu || 0, 0) + " % CPU", "cpu"),
      ]);
    });
    R.$("worker-bars").replaceChildren(...rows);
    R.$("workers-empty").hidden = rows.length > 0;
  }

  // -- task stream ------------------------------------------------------------------------------
  // The first page of runs comes from the API and the rest from the socket; the two may
  // overlap by a moment, so a run already shown (same key and end) is skipped.
  const shown = new Set();
  function onRuns(msg) {
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

  // Lanes per worker: each run takes the first lane free at its start (greedy interval packing),
  // so concurrent runs on one worker never overlap; a worker shows at least nthreads lanes.
  function layout(visible) {
    const byWorker = new Map();
    for (const w of workerList) byWorker.set(w.address, { worker: w, runs: [], ends: [] });
    for (const r of visible) {
      if (!byWorker.has(r.worker)) byWorker.set(r.worker, { worker: { address: r.worker, name: r.worker, nthreads: 1 }, runs: [], ends: [] });
      byWorker.get(r.worker).runs.push(r);
    }
    const rows = [];
    for (const entry of byWorker.values()) {
      entry.runs.sort((a, b) => a.start - b.start);
      for (const r of entry.runs) {
        let lane = entry.ends.findIndex((end) => end <= r.start + 1e-4);
        if (lane < 0) { lane = entry.ends.length; entry.ends.push(0); }
        entry.ends[lane] = r.stop;
        r.lane = lane;
      }
      entry.lanes = Math.max(entry.ends.length, entry.worker.nthreads || 1);
      rows.push(entry);
    }
    return rows;
  }

  function drawStream() {
    const canvas = R.$("taskstream");
    const now = Date.now() / 1000 + clockOffset;
    const visible = runs.filter((r) => r.stop >= now - WINDOW);
    const rows = layout(visible);
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
    const plot = cssWidth - GUTTER - 8;
    const xOf = (t) => GUTTER + ((t - (now - WINDOW)) / WINDOW) * plot;
    drawAxis(ctx, now, xOf, cssHeight);
    hits = [];
    let y = 2;
    rows.forEach((row, i) => {
      const height = row.lanes * (LANE + LANE_GAP);
      if (i % 2 === 0) { ctx.fillStyle = "#f4f6fa"; ctx.fillRect(0, y - 1, cssWidth, height + 2); }
      ctx.fillStyle = "#3a4660";
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillText(shorten(row.worker.name || row.worker.address, 22), 6, y + LANE - 1);
      for (const r of row.runs) {
        const x0 = Math.max(GUTTER, xOf(r.start)), x1 = Math.max(x0 + 1, xOf(r.stop));
        const ry = y + r.lane * (LANE + LANE_GAP);
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
    const hit = hits.find(([hx, hy, hw, hh]) => x >= hx - 1 && x <= hx + hw + 1 && y >= hy && y <= hy + hh);
    if (!hit) return R.tooltip.hide();
    const r = hit[4];
    const lines = [r.key, `${r.worker}`, `${R.seconds(r.stop - r.start)} · ${r.status}`];
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
      const [status, recent] = await Promise.all([R.getJSON("/api/status"), R.getJSON("/api/runs?window=" + WINDOW)]);
      onStatus(status);
      onRuns(recent);
    } catch (err) {
      R.$("conn").textContent = "error: " + err.message;
    }
    R.live(["status", "runs"], { status: onStatus, runs: onRuns });
    setInterval(drawStream, 250);
    drawStream();
  }

  start();
})();
