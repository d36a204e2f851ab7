// rdist dashboard, Events page: the cluster event log, newest first, with live additions.
"use strict";

(function () {
  const R = Rdist;
  let oldest = null;
  const seen = new Set();

  const describe = {
    "worker-joined": (i) => `${i.name || ""} ${i.worker || ""}`.trim() +
      (i.restored ? "  (joined before this scheduler started: found in Redis)" : ""),
    "worker-left": (i) => i.worker || "",
    "worker-lost": (i) => `${i.worker || ""}  (stopped beating: its tasks go elsewhere)`,
    "worker-paused": (i) => `${i.worker || ""}  (memory above its pause threshold)`,
    "worker-running": (i) => `${i.worker || ""}  (running again)`,
    "scheduler-started": (i) => i.takeover
      ? `fail-over: ${i.scheduler} took over from ${i.previous}`
      : i.previous ? `${i.scheduler} leads, after ${i.previous}` : `${i.scheduler || ""} leads`,
    "restart": (i) => `restart asked by ${i.client || "?"}`,
  };

  // The label shown in the badge: a take-over is a fail-over, whatever its kind says.
  function label(event) {
    return event.op === "scheduler-started" && (event.info || {}).takeover ? "fail-over" : event.op;
  }

  function row(event) {
    const info = event.info || {};
    const text = describe[event.op] ? describe[event.op](info)
      : Object.entries(info).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join("  ");
    return R.el("tr", { "data-id": event.id, class: "ev-" + event.op }, [
      R.el("td", { class: "mono nowrap", text: new Date(event.time * 1000).toLocaleString("en-GB", { hour12: false }) }),
      R.el("td", {}, R.el("span", { class: "badge op-" + label(event), text: label(event) })),
      R.el("td", { class: "mono", text, title: JSON.stringify(info) }),
    ]);
  }

  function add(events, atTop) {
    const body = document.querySelector("#events tbody");
    const fresh = events.filter((e) => !seen.has(e.id));
    fresh.forEach((e) => seen.add(e.id));
    const rows = fresh.map(row);
    if (atTop) body.prepend(...rows.reverse());
    else body.append(...rows);
    R.$("events-empty").hidden = body.children.length > 0;
  }

  async function loadOlder() {
    const page = await R.getJSON("/api/events?limit=100" + (oldest ? "&before=" + oldest : ""));
    add(page.events, false);
    if (page.events.length) oldest = page.events[page.events.length - 1].id;
    R.$("older").hidden = !page.next;
  }

  async function start() {
    R.$("older").addEventListener("click", loadOlder);
    try {
      await loadOlder();
    } catch (err) {
      R.$("conn").textContent = "error: " + err.message;
    }
    R.live(["events"], { events: (msg) => add(msg.events || [], true) });
  }

  start();
})();
