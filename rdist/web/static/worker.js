// rdist dashboard, one worker: its record, its metrics over time, its tasks and data, and
// the call stacks of its running tasks on request (the worker answers through Redis).
"use strict";

(function () {
  const R = Rdist;
  const address = new URLSearchParams(location.search).get("address") || "";
  let series = {};

  function taskLink(key) {
    return R.el("a", { class: "mono key", href: "/tasks?key=" + encodeURIComponent(key), title: key, text: key });
  }

  function rowsOf(id, rows, emptyId) {
    document.querySelector(`#${id} tbody`).replaceChildren(...rows);
    if (emptyId) R.$(emptyId).hidden = rows.length > 0;
  }

  function render(d) {
    const info = d.info || {};
    R.$("w-name").textContent = info.name || address;
    R.$("w-name").title = info.name || address;
    R.$("w-address").textContent = address;
    R.$("w-status").textContent = info.status || "gone";
    R.$("w-status").className = "badge " + (info.status === "running" ? "st-memory" : "st-waiting");
    const facts = [
      ["host", info.host], ["pid", info.pid], ["threads", info.nthreads],
      ["memory", R.bytes(info.memory) + (info.memory_limit ? " of " + R.bytes(info.memory_limit) : " (no limit)")],
      ["managed", R.bytes(info.stored_bytes) + ` in ${R.number(info.stored || 0, 0)} keys`],
      ["spilled", R.bytes(info.spilled_bytes)], ["CPU", R.number(info.cpu || 0, 0) + " %"],
      ["executing", info.executing], ["executed", R.number(info.executed || 0, 0)],
      ["transfer", info.transfer], ["resources", JSON.stringify(info.resources || {})],
      ["last heartbeat", info.age === null || info.age === undefined ? "–" : R.seconds(info.age) + " ago"],
    ];
    R.$("w-facts").replaceChildren(...facts.flatMap(([k, v]) => [R.el("dt", { text: k }), R.el("dd", { text: v === undefined || v === null ? "–" : String(v) })]));
    rowsOf("w-tasks", d.processing.map((t) => R.el("tr", {}, [
      R.el("td", {}, taskLink(t.key)), R.el("td", { class: "ellipsis", text: t.group, title: t.group }),
      R.el("td", {}, R.el("span", { class: "badge st-" + t.state, text: t.state }))])), "w-tasks-empty");
    rowsOf("w-data", d.data.map((t) => R.el("tr", {}, [
      R.el("td", {}, taskLink(t.key)), R.el("td", { class: "num", text: R.bytes(t.nbytes) })])), "w-data-empty");
    R.$("w-data-hint").textContent = "results this worker holds, largest first" + (d.complete ? "" : " (a big cluster: from part of the tasks)");
    rowsOf("w-runs", d.runs.slice().reverse().slice(0, 50).map((r) => R.el("tr", {}, [
      R.el("td", { class: "mono nowrap", text: R.clock(r.stop) }), R.el("td", {}, taskLink(r.key)),
      R.el("td", { class: "mono", text: r.thread || "–" }), R.el("td", { class: "num", text: R.seconds(r.stop - r.start) }),
      R.el("td", {}, R.el("span", { class: "badge st-" + r.status, text: r.status }))])));
  }

  function drawCharts() {
    const s = series, times = s.time || [];
    const col = (k) => s[k] || [];
    R.chart(R.$("w-cpu"), times, [{ name: "cpu", values: col("cpu") }], { format: (v) => R.number(v, 0) + " %" });
    R.chart(R.$("w-memory"), times, [
      { name: "process", values: col("memory"), colour: "#9aa5b8" },
      { name: "managed", values: col("managed"), colour: "#3fb27f" },
      { name: "spilled", values: col("spilled"), colour: "#e08a2c" }], { format: R.bytes });
    R.chart(R.$("w-network"), times, [{ name: "sent", values: col("net_sent") }, { name: "received", values: col("net_recv"), colour: "#9467bd" }], { format: R.perSecond });
    R.chart(R.$("w-disk"), times, [{ name: "read", values: col("disk_read") }, { name: "written", values: col("disk_write"), colour: "#e08a2c" }], { format: R.perSecond });
  }

  function onHistory(answer) {
    const mine = (answer.workers || {})[address];
    if (!mine) return;
    const copy = Object.assign({}, mine);
    delete copy.name;
    R.extend(series, copy, 900);
    drawCharts();
  }

  async function stacks() {
    const button = R.$("w-stacks-button");
    button.disabled = true;
    R.$("w-stacks-empty").hidden = false;
    R.$("w-stacks-empty").textContent = "asking the worker…";
    try {
      const { id } = await R.postJSON("/api/worker/stacks", { address });
      let answer = null;
      for (let i = 0; i < 50 && !answer; i++) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        const got = await R.getJSON("/api/worker/stacks?id=" + encodeURIComponent(id));
        if (!got.pending) answer = got;
      }
      if (!answer) throw new Error("the worker did not answer within 10 s");
      const blocks = answer.stacks.map((s) => R.el("div", { class: "stack-of", "data-key": s.key }, [
        R.el("h3", {}, [taskLink(s.key), R.el("span", { class: "muted", text: "  on " + s.thread })]),
        R.el("pre", { class: "stack", text: s.frames.join("\n") })]));
      R.$("w-stacks").replaceChildren(...blocks);
      R.$("w-stacks-empty").textContent = blocks.length ? `${blocks.length} running tasks at ${R.clock(answer.time)}` : "No task is running on this worker now.";
    } catch (err) {
      R.$("w-stacks-empty").textContent = "no call stacks: " + err.message;
    } finally {
      button.disabled = false;
    }
  }

  async function logs() {
    const answer = await R.getJSON("/api/worker/logs?address=" + encodeURIComponent(address));
    const pre = R.$("w-logs");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = answer.lines.map((l) =>
      `${R.clock(l.time)} ${l.role === "nanny" ? "[nanny] " : ""}${l.level.padEnd(7)} ${l.name}: ${l.message}`).join("\n");
    pre.hidden = !answer.lines.length;
    R.$("w-logs-empty").hidden = answer.lines.length > 0;
    R.$("w-logs-empty").textContent = answer.available ? "No log lines." : "This cluster keeps no log buffers.";
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function refresh() {
    try {
      await logs();
      render(await R.getJSON("/api/worker?address=" + encodeURIComponent(address)));
      R.$("w-error").hidden = true;
    } catch (err) {
      R.$("w-error").hidden = false;
      R.$("w-error").textContent = err.message;
    }
  }

  async function start() {
    R.$("w-stacks-button").addEventListener("click", stacks);
    R.$("w-profile").href = "/profile?worker=" + encodeURIComponent(address);
    await refresh();
    try { onHistory(await R.getJSON("/api/history")); } catch (err) { /* charts stay empty */ }
    R.live(["history"], { history: onHistory });
    setInterval(refresh, Math.max(5000, R.interval * 5000));  // a bounded scan each: not too often
    window.addEventListener("resize", drawCharts);
  }

  start();
})();
