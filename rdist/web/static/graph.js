// rdist dashboard, Graph page: the task graph, each task a dot in the column of its
// dependency depth, edges from dependency to dependent, coloured by state; refreshed live.
// The server sends at most 10,000 tasks (above, it says how many there are and sends none).
"use strict";

(function () {
  const R = Rdist;
  const STATE_COLOURS = {
    released: "#b9c0cc", waiting: "#c3cad6", queued: "#a7b1c2", "no-worker": "#f0b778",
    processing: "#4a90d9", memory: "#3fb27f", erred: "#d64545",
  };
  let graph = null, positions = [], structure = "";

  // Depth = longest path from a task without dependencies (Kahn's order; cycles impossible).
  function depths(count, edges) {
    const incoming = new Array(count).fill(0), out = Array.from({ length: count }, () => []);
    for (const [a, b] of edges) { out[a].push(b); incoming[b]++; }
    const depth = new Array(count).fill(0), queue = [];
    for (let i = 0; i < count; i++) if (!incoming[i]) queue.push(i);
    for (let q = 0; q < queue.length; q++) {
      const i = queue[q];
      for (const j of out[i]) { depth[j] = Math.max(depth[j], depth[i] + 1); if (--incoming[j] === 0) queue.push(j); }
    }
    return depth;
  }

  function layoutGraph(g, width, height) {
    const depth = depths(g.nodes.length, g.edges);
    const columns = new Map();
    g.nodes.forEach((node, i) => {
      if (!columns.has(depth[i])) columns.set(depth[i], []);
      columns.get(depth[i]).push(i);
    });
    const levels = Math.max(1, ...columns.keys()) + 1;
    const pos = new Array(g.nodes.length);
    for (const [d, members] of columns) {
      members.sort((a, b) => (g.nodes[a][1] + g.nodes[a][0]).localeCompare(g.nodes[b][1] + g.nodes[b][0], "en", { numeric: true }));
      members.forEach((i, k) => {
        pos[i] = [30 + (d + 0.5) * ((width - 60) / levels), 12 + ((k + 0.5) * (height - 24)) / members.length];
      });
    }
    return pos;
  }

  function draw() {
    const canvas = R.$("graph");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (!graph || !graph.nodes.length) return;
    const key = graph.nodes.length + ":" + graph.edges.length + ":" + width + "x" + height;
    if (key !== structure) { positions = layoutGraph(graph, width, height); structure = key; }
    const n = graph.nodes.length;
    const size = Math.max(2.5, Math.min(8, Math.sqrt((width * height) / (n * 30))));
    ctx.strokeStyle = n > 3000 ? "rgba(120,130,150,.08)" : "rgba(120,130,150,.25)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (const [a, b] of graph.edges) {
      ctx.moveTo(positions[a][0], positions[a][1]);
      ctx.lineTo(positions[b][0], positions[b][1]);
    }
    ctx.stroke();
    graph.nodes.forEach((node, i) => {
      ctx.fillStyle = STATE_COLOURS[node[2]] || "#888";
      ctx.fillRect(positions[i][0] - size / 2, positions[i][1] - size / 2, size, size);
    });
  }

  function onMouse(event) {
    if (!graph) return;
    const rect = event.target.getBoundingClientRect();
    const x = event.clientX - rect.left, y = event.clientY - rect.top;
    let best = -1, distance = 64;
    positions.forEach(([px, py], i) => { const d = (px - x) ** 2 + (py - y) ** 2; if (d < distance) { distance = d; best = i; } });
    if (best < 0) return R.tooltip.hide();
    const [key, group, state] = graph.nodes[best];
    R.tooltip.show(event.clientX, event.clientY, [key, group + " · " + state]);
  }

  async function refresh() {
    let g;
    try { g = await R.getJSON("/api/graph"); } catch (err) { R.$("conn").textContent = "error: " + err.message; return; }
    const tooMany = R.$("g-too-many");
    tooMany.hidden = !g.too_many;
    R.$("graph").hidden = g.too_many;
    if (g.too_many) {
      tooMany.textContent = `The cluster holds ${R.number(g.total, 0)} tasks: the graph page draws graphs of up to ` +
        `${R.number(g.limit, 0)} tasks, and loads nothing above that. The Status page's progress bars show every task group.`;
      graph = null;
      return;
    }
    graph = g;
    const counts = {};
    for (const node of g.nodes) counts[node[2]] = (counts[node[2]] || 0) + 1;
    R.$("g-summary").textContent = `${R.number(g.total, 0)} tasks, ${R.number(g.edges.length, 0)} dependencies · ` +
      Object.entries(counts).map(([s, c]) => `${R.number(c, 0)} ${s}`).join(" · ");
    R.$("g-empty").hidden = g.nodes.length > 0;
    draw();
  }

  async function start() {
    R.$("graph").addEventListener("mousemove", onMouse);
    R.$("graph").addEventListener("mouseleave", () => R.tooltip.hide());
    window.addEventListener("resize", draw);
    await refresh();
    R.live([], {});
    setInterval(refresh, Math.max(3000, R.interval * 3000));
  }

  start();
})();
