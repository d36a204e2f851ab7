// rdist dashboard, Profile page: a flame graph (icicle: callers above callees) of the
// workers' sampling profiler, merged over a window, per task group and worker.
"use strict";

(function () {
  const R = Rdist;
  const ROW = 18;
  let tree = null, focus = null, boxes = [];

  // Flame colours: a warm hue per source file, light enough to read the labels on.
  const warmth = new Map();
  function warm(file) {
    if (!warmth.has(file)) {
      let h = 2166136261;
      for (let i = 0; i < file.length; i++) { h ^= file.charCodeAt(i); h = Math.imul(h, 16777619); }
      warmth.set(file, `hsl(${10 + (Math.abs(h) % 45)}, 75%, ${66 + (Math.abs(h >> 8) % 14)}%)`);
    }
    return warmth.get(file);
  }

  function frameName(node) {
    if (!node[0] && !node[1]) return "all";
    const file = String(node[1]).split("/").slice(-2).join("/");
    return `${node[0]} (${file}:${node[2]})`;
  }

  function depthOf(node) {
    let depth = 0;
    const pending = [[node, 1]];
    while (pending.length) {
      const [n, d] = pending.pop();
      depth = Math.max(depth, d);
      for (const c of n[4]) pending.push([c, d + 1]);
    }
    return depth;
  }

  function draw() {
    const canvas = R.$("flame");
    const root = focus || tree;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 800;
    const rows = root ? Math.min(depthOf(root), 60) : 1;
    const height = Math.max(60, rows * ROW + 4);
    canvas.style.height = height + "px";
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    boxes = [];
    if (!root || !root[3]) return;
    ctx.font = "11.5px system-ui, sans-serif";
    const place = (node, x, w, depth) => {
      if (w < 0.5 || depth >= rows) return;
      const y = depth * ROW;
      ctx.fillStyle = depth === 0 ? "#c9d1de" : warm(node[1]);
      ctx.fillRect(x, y, Math.max(w - 1, 0.5), ROW - 1);
      boxes.push([x, y, w, node]);
      if (w > 40) {
        ctx.fillStyle = "#1d2433";
        const label = frameName(node);
        const fits = Math.floor((w - 6) / 6.2);
        ctx.fillText(label.length > fits ? label.slice(0, Math.max(0, fits - 1)) + "…" : label, x + 3, y + 13);
      }
      let cx = x;
      for (const child of node[4].slice().sort((a, b) => b[3] - a[3])) {
        const cw = (w * child[3]) / node[3];
        place(child, cx, cw, depth + 1);
        cx += cw;
      }
    };
    place(root, 0, width, 0);
  }

  function hit(event) {
    const rect = R.$("flame").getBoundingClientRect();
    const x = event.clientX - rect.left, y = event.clientY - rect.top;
    return boxes.find(([bx, by, bw]) => x >= bx && x < bx + bw && y >= by && y < by + ROW);
  }

  function onMouse(event) {
    const found = hit(event);
    if (!found) return R.tooltip.hide();
    const node = found[3], root = tree;
    const share = root && root[3] ? (100 * node[3]) / root[3] : 0;
    R.tooltip.show(event.clientX, event.clientY, [
      frameName(node), node[1] ? `${node[1]}:${node[2]}` : "every sample",
      `${R.number(node[3], 0)} samples · ${share.toFixed(1)} %`]);
  }

  function onClick(event) {
    const found = hit(event);
    if (!found) return;
    focus = found[1] === 0 ? null : found[3];
    draw();
  }

  function fill(select, values, current) {
    const first = select.options[0];
    if (current && !values.includes(current)) values = values.concat([current]);
    select.replaceChildren(first, ...values.map((v) => R.el("option", { value: v, text: v, selected: v === current })));
  }

  // ?worker= and ?group= (the worker page links here) choose before the lists are filled
  const asked = new URLSearchParams(location.search);
  let wanted = { group: asked.get("group") || "", worker: asked.get("worker") || "" };

  async function refresh(force) {
    if (!force && !R.$("p-live").checked) return;
    const group = wanted ? wanted.group : R.$("p-group").value;
    const worker = wanted ? wanted.worker : R.$("p-worker").value;
    const window_ = R.$("p-window").value;
    wanted = null;
    const q = new URLSearchParams({ window: window_ });
    if (group) q.set("group", group);
    if (worker) q.set("worker", worker);
    let answer;
    try { answer = await R.getJSON("/api/profile?" + q); } catch (err) { R.$("conn").textContent = "error: " + err.message; return; }
    R.$("p-unavailable").hidden = answer.available;
    if (!answer.available) { tree = null; draw(); return; }
    fill(R.$("p-group"), answer.groups, group);
    fill(R.$("p-worker"), answer.workers, worker);
    tree = answer.tree;
    if (focus) focus = null;  // a new tree: the zoomed frame may be gone
    R.$("p-empty").hidden = answer.samples > 0;
    R.$("p-summary").textContent = `${R.number(answer.samples, 0)} samples · ${group || "every task group"} · ${worker || "every worker"}`;
    draw();
  }

  async function start() {
    const canvas = R.$("flame");
    canvas.addEventListener("mousemove", onMouse);
    canvas.addEventListener("mouseleave", () => R.tooltip.hide());
    canvas.addEventListener("click", onClick);
    for (const id of ["p-group", "p-worker", "p-window"]) R.$(id).addEventListener("change", () => refresh(true));
    window.addEventListener("resize", draw);
    await refresh(true);
    R.live([], {});
    setInterval(() => { if (!focus) refresh(false); }, 5000);
  }

  start();
})();
