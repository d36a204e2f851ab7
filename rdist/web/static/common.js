// rdist dashboard: helpers shared by the pages (formatting, DOM, fetch, live socket).
"use strict";

const Rdist = (function () {
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];

  function bytes(n) {
    n = Number(n) || 0;
    let i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n >= 100 ? 0 : 1)) + " " + units[i];
  }

  function number(n, digits) {
    n = Number(n) || 0;
    return n.toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 1 : digits });
  }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 0) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    return (s / 60).toFixed(1) + " min";
  }

  function clock(epoch) {
    const d = new Date(epoch * 1000);
    return d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  // el("td", {class: "num", title: "x"}, "text" | [children])
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of [].concat(children === undefined ? [] : children)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function $(id) { return document.getElementById(id); }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error || message; } catch (err) { /* not JSON */ }
      throw new Error(message);
    }
    return response.json();
  }

  // A stable colour per task group (hue from a string hash), avoiding the error red.
  const colours = new Map();
  function colour(name) {
    if (!colours.has(name)) {
      let h = 2166136261;
      for (let i = 0; i < name.length; i++) { h ^= name.charCodeAt(i); h = Math.imul(h, 16777619); }
      const hue = 20 + (Math.abs(h) % 300);
      colours.set(name, `hsl(${hue}, 55%, ${48 + (Math.abs(h >> 9) % 12)}%)`);
    }
    return colours.get(name);
  }

  function groupOf(key) {
    let text = String(key).trim();
    if (text.startsWith("(") && text.includes(",")) text = text.slice(1).split(",")[0].replace(/['" ]/g, "");
    const words = [];
    for (const w of text.split("-")) {
      if (/^[0-9a-f]{8,}$/.test(w) || /^\d+$/.test(w)) break;
      words.push(w);
    }
    return words.join("-") || text.slice(0, 20) || "?";
  }

  // Connect the live socket, show its state in the header, (re)subscribe on every connect.
  function live(topics, handlers) {
    const indicator = $("conn");
    const show = (state, text) => { indicator.dataset.state = state; indicator.textContent = text; };
    const socket = new RdistSocket();
    socket.on("connect", () => {
      show("live", "live");
      socket.emit("subscribe", topics);
      if (handlers.connect) handlers.connect();
    });
    socket.on("disconnect", () => show("offline", "reconnecting…"));
    socket.on("connect_error", (err) => show("offline", "refused: " + (err.message || "unauthorized")));
    socket.on("transport", (name) => { indicator.title = "transport: " + name; });
    for (const [event, fn] of Object.entries(handlers)) {
      if (event !== "connect") socket.on(event, fn);
    }
    window.rdistSocket = socket;  // for tests and the curious
    return socket.connect();
  }

  const tooltip = {
    show(x, y, lines) {
      const node = $("tooltip");
      node.replaceChildren(...lines.map((l) => el("div", {}, l)));
      node.hidden = false;
      const w = node.offsetWidth;
      node.style.left = Math.min(x + 14, window.innerWidth - w - 8) + "px";
      node.style.top = (y + 14) + "px";
    },
    hide() { $("tooltip").hidden = true; },
  };

  async function postJSON(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (err) { /* not JSON */ }
    if (!response.ok && response.status !== 202) throw new Error(data.error || response.status + " " + response.statusText);
    return data;
  }

  // A distinct colour per series index (for per-worker lines).
  const palette = ["#4a90d9", "#3fb27f", "#e08a2c", "#9467bd", "#d64545", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
  function seriesColour(i) { return palette[i % palette.length]; }

  // A line chart on a canvas: times (epoch s) shared by every series; each series
  // {name, values, colour}. Drawn as lines (never dots) over the last `window` seconds,
  // with a y axis in the unit `format` gives, a legend, and values on hover.
  function chart(canvas, times, series, opts) {
    opts = opts || {};
    const format = opts.format || ((v) => number(v, 1));
    const span = opts.window || 600;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 300, height = canvas.clientHeight || 140;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = opts.compact ? 2 : 58, right = 6, top = opts.compact ? 2 : 18, bottom = opts.compact ? 2 : 16;
    const end = opts.now || (times.length ? times[times.length - 1] : Date.now() / 1000);
    const start = end - span;
    let first = times.findIndex((t) => t >= start);
    if (first < 0) first = times.length;
    let max = 0;
    for (const s of series) for (let i = first; i < s.values.length; i++) max = Math.max(max, s.values[i] || 0);
    max = niceMax(max || opts.minMax || 1);
    const xOf = (t) => left + ((t - start) / span) * (width - left - right);
    const yOf = (v) => top + (1 - (v || 0) / max) * (height - top - bottom);
    if (!opts.compact) {
      ctx.strokeStyle = "#e6e9f0"; ctx.fillStyle = "#6b768c"; ctx.font = "11px system-ui, sans-serif";
      ctx.lineWidth = 1;
      for (let k = 0; k <= 4; k++) {
        const v = (max * k) / 4, y = Math.round(yOf(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(width - right, y); ctx.stroke();
        ctx.fillText(format(v), 2, Math.max(10, y + 4));
      }
      const ticks = width - left < 380 ? 2 : 5;  // narrow charts: fewer labels, no overlap
      for (let m = 0; m <= span + 1e-9; m += span / ticks) {
        const x = xOf(start + m);
        const label = m === span ? "now" : "-" + seconds(span - m).replace(".0 ", " ");
        ctx.fillText(label, Math.min(Math.max(left, x - 12), width - right - 24), height - 3);
      }
    }
    series.forEach((s, n) => {
      ctx.beginPath();
      let moved = false;
      for (let i = Math.max(0, first - 1); i < s.values.length && i < times.length; i++) {
        const x = Math.max(left, xOf(times[i])), y = yOf(s.values[i]);
        if (!moved) { ctx.moveTo(x, y); moved = true; } else ctx.lineTo(x, y);
      }
      ctx.strokeStyle = s.colour || seriesColour(n);
      ctx.lineWidth = opts.compact ? 1.5 : 1.6;
      ctx.lineJoin = "round";
      ctx.setLineDash(s.dash || []);
      ctx.stroke();
      ctx.setLineDash([]);
    });
    if (!opts.compact && series.length > 1) {
      let x = left + 6;
      ctx.font = "11px system-ui, sans-serif";
      for (const [n, s] of series.entries()) {
        if (s.legend === false) continue;
        const label = s.name.length > 24 ? "…" + s.name.slice(-23) : s.name;
        const w = ctx.measureText(label).width + 22;
        if (x + w > width - right) break;
        ctx.fillStyle = s.colour || seriesColour(n); ctx.fillRect(x, 4, 10, 10);
        ctx.fillStyle = "#3a4660"; ctx.fillText(label, x + 13, 13);
        x += w;
      }
    }
    canvas._chart = { times, series, format, xOf, left, first };
    if (!canvas._hover) {
      canvas._hover = true;
      canvas.addEventListener("mousemove", (event) => chartHover(canvas, event));
      canvas.addEventListener("mouseleave", () => tooltip.hide());
    }
  }

  function chartHover(canvas, event) {
    const c = canvas._chart;
    if (!c || !c.times.length) return;
    const x = event.clientX - canvas.getBoundingClientRect().left;
    let best = -1, distance = Infinity;
    for (let i = c.first; i < c.times.length; i++) {
      const d = Math.abs(c.xOf(c.times[i]) - x);
      if (d < distance) { distance = d; best = i; }
    }
    if (best < 0 || distance > 20) return tooltip.hide();
    const lines = [clock(c.times[best])];
    for (const s of c.series) lines.push(s.name + ": " + c.format(s.values[best] || 0));
    tooltip.show(event.clientX, event.clientY, lines);
  }

  function niceMax(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // Append the columns of `more` (a history answer) to `into`, dropping points older
  // than `keep` seconds before the newest.
  function extend(into, more, keep) {
    for (const [field, values] of Object.entries(more)) {
      if (!Array.isArray(values)) continue;
      into[field] = (into[field] || []).concat(values);
    }
    const times = into.time || [];
    const newest = times.length ? times[times.length - 1] : 0;
    const cut = times.findIndex((t) => t >= newest - keep);
    if (cut > 0) for (const field of Object.keys(into)) if (Array.isArray(into[field])) into[field] = into[field].slice(cut);
    return into;
  }

  const perSecond = (v) => bytes(v) + "/s";

  return { bytes, number, seconds, clock, el, $, getJSON, postJSON, colour, groupOf, live, tooltip,
           chart, extend, seriesColour, perSecond,
           interval: Number(document.body.dataset.interval || 1) };
})();
