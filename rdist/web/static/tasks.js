// rdist dashboard, Tasks page: search and page through tasks (server-side HSCAN cursors),
// and the detail of one task: state, placement, dependencies, error, execution history.
"use strict";

(function () {
  const R = Rdist;
  const PAGE = 50;
  let cursor = 0;        // cursor that produced the page on screen
  let nextCursor = 0;
  let selected = null;

  function params(extra) {
    const q = new URLSearchParams({ limit: PAGE, ...extra });
    const text = R.$("q").value.trim(), state = R.$("state").value;
    if (text) q.set("q", text);
    if (state) q.set("state", state);
    return q.toString();
  }

  function keyLink(key) {
    return R.el("a", { href: "?key=" + encodeURIComponent(key), class: "mono key", "data-key": key,
                       onclick: (e) => { e.preventDefault(); select(key); } }, key);
  }

  function badge(state) {
    return R.el("span", { class: "badge st-" + state, text: state });
  }

  async function loadPage(from) {
    const page = await R.getJSON("/api/tasks?" + params({ cursor: from }));
    cursor = from;
    nextCursor = page.cursor;
    const rows = page.tasks.map((t) => R.el("tr", {}, [
      R.el("td", {}, keyLink(t.key)), R.el("td", {}, badge(t.state)),
      R.el("td", { class: "ellipsis", text: t.group, title: t.group }),
      R.el("td", { class: "mono ellipsis", text: t.worker || "", title: t.worker || "" }),
      R.el("td", { class: "num", text: t.nbytes ? R.bytes(t.nbytes) : "" }),
      R.el("td", { text: t.type || "" }), R.el("td", { class: "num", text: t.dependencies || "" }),
    ]));
    document.querySelector("#tasks tbody").replaceChildren(...rows);
    R.$("tasks-empty").hidden = rows.length > 0;
    R.$("next").disabled = nextCursor === 0;
    R.$("first").disabled = cursor === 0;
    R.$("t-total").textContent = `${R.number(page.total, 0)} tasks in the cluster`;
  }

  // Where the task is: the worker running it, else the workers holding its result.
  function workerLinks(d) {
    const where = d.worker ? [d.worker] : d.who_has;
    if (!where.length) return "–";
    const links = [];
    where.forEach((w, i) => {
      if (i) links.push(", ");
      links.push(R.el("a", { href: "/worker?address=" + encodeURIComponent(w), class: "mono", text: w }));
    });
    if (!d.worker) links.push(R.el("span", { class: "muted", text: " (holds the result)" }));
    return R.el("span", {}, links);
  }

  function fact(name, value) {
    return [R.el("dt", { text: name }), R.el("dd", {}, value)];
  }

  function renderDetail(d) {
    R.$("detail").hidden = false;
    R.$("d-key").textContent = d.key;
    R.$("d-state").replaceWith(Object.assign(badge(d.state), { id: "d-state" }));
    R.$("d-facts").replaceChildren(
      ...fact("group", d.group), ...fact(d.worker ? "running on" : "worker", workerLinks(d)),
      ...fact("held by", d.who_has.join(", ") || "–"), ...fact("wanted by", d.who_wants.join(", ") || "–"),
      ...fact("size", d.nbytes ? R.bytes(d.nbytes) + (d.in_redis ? " (also in Redis)" : "") : "–"),
      ...fact("type", d.type || "–"), ...fact("priority", JSON.stringify(d.priority)));
    R.$("d-error").hidden = !d.error;
    R.$("d-error-text").textContent = d.error || "";
    R.$("d-traceback").textContent = d.traceback || "";
    const deps = d.dependencies.map((dep) => R.el("li", {}, [keyLink(dep.key), " ", badge(dep.state)]));
    if (d.more_dependencies) deps.push(R.el("li", { text: `… and ${d.more_dependencies} more` }));
    if (!deps.length) deps.push(R.el("li", { class: "muted", text: "none" }));
    R.$("d-deps").replaceChildren(...deps);
    const runs = d.runs.map((r) => R.el("tr", {}, [
      R.el("td", { class: "mono nowrap", text: R.clock(r.stop) }), R.el("td", { class: "mono", text: r.worker }),
      R.el("td", { class: "mono", text: r.thread || "–" }), R.el("td", { class: "num", text: R.seconds(r.stop - r.start) }),
      R.el("td", {}, badge(r.status)),
    ]));
    if (!runs.length) runs.push(R.el("tr", {}, R.el("td", { colspan: 5, class: "muted", text: "no execution in the recent task stream" })));
    document.querySelector("#d-runs tbody").replaceChildren(...runs);
  }

  async function select(key) {
    selected = key;
    history.replaceState(null, "", "?key=" + encodeURIComponent(key));
    try {
      renderDetail(await R.getJSON("/api/task?key=" + encodeURIComponent(key)));
    } catch (err) {
      R.$("detail").hidden = false;
      R.$("d-key").textContent = key;
      R.$("d-facts").replaceChildren(...fact("not found", err.message));
      R.$("d-error").hidden = true;
      R.$("d-deps").replaceChildren();
      document.querySelector("#d-runs tbody").replaceChildren();
    }
  }

  function onRuns(msg) {
    if (selected && (msg.runs || []).some((r) => r.key === selected)) select(selected);
  }

  async function refresh() {
    if (!R.$("live").checked) return;
    try { await loadPage(cursor); } catch (err) { /* next tick */ }
    if (selected) select(selected);
  }

  async function start() {
    R.$("task-search").addEventListener("submit", (e) => { e.preventDefault(); loadPage(0); });
    R.$("next").addEventListener("click", () => loadPage(nextCursor));
    R.$("first").addEventListener("click", () => loadPage(0));
    R.$("d-close").addEventListener("click", () => {
      selected = null;
      R.$("detail").hidden = true;
      history.replaceState(null, "", location.pathname);
    });
    const wanted = new URLSearchParams(location.search).get("key");
    try {
      await loadPage(0);
      if (wanted) await select(wanted);
    } catch (err) {
      R.$("conn").textContent = "error: " + err.message;
    }
    R.live(["runs"], { runs: onRuns });
    setInterval(refresh, Math.max(2000, R.interval * 2000));
  }

  start();
})();
