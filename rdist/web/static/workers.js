// rdist dashboard, Workers page: a sortable table refreshed live.
"use strict";

(function () {
  const R = Rdist;
  let workers = [];
  let sortKey = "name";
  let descending = false;

  const cells = {
    name: (w) => R.el("td", { class: "mono ellipsis", title: w.name },
      R.el("a", { href: "/worker?address=" + encodeURIComponent(w.address), text: w.name })),
    address: (w) => R.el("td", { class: "mono ellipsis", text: w.address, title: w.address }),
    nthreads: (w) => R.el("td", { class: "num", text: R.number(w.nthreads, 0) }),
    memory: (w) => {
      const limit = w.memory_limit || 0;
      const fill = R.el("span", { class: limit && w.memory / limit > 0.8 ? "hot" : "" });
      fill.style.width = (limit ? Math.min(100, (100 * w.memory) / limit) : 0) + "%";
      const text = R.bytes(w.memory) + (limit ? " / " + R.bytes(limit) : "");
      return R.el("td", { class: "num" }, R.el("div", { class: "meter small" }, [fill, R.el("em", { text })]));
    },
    cpu: (w) => R.el("td", { class: "num", text: R.number(w.cpu || 0, 0) + " %" }),
    executing: (w) => R.el("td", { class: "num", text: R.number(w.executing || 0, 0) }),
    processing: (w) => R.el("td", { class: "num", text: R.number(w.processing || 0, 0) }),
    stored: (w) => R.el("td", { class: "num", text: R.number(w.stored || 0, 0) }),
    stored_bytes: (w) => R.el("td", { class: "num", text: R.bytes(w.stored_bytes) }),
    spilled_bytes: (w) => R.el("td", { class: "num", text: w.spilled_bytes === undefined ? "–" : R.bytes(w.spilled_bytes) }),
    executed: (w) => R.el("td", { class: "num", text: R.number(w.executed || 0, 0) }),
    age: (w) => R.el("td", { class: "num" + (w.age > 10 ? " stale" : ""), text: w.age === null ? "–" : R.seconds(w.age) + " ago" }),
  };

  function compare(a, b) {
    const x = a[sortKey], y = b[sortKey];
    const order = typeof x === "number" || typeof y === "number"
      ? (Number(x) || 0) - (Number(y) || 0)
      : String(x === undefined ? "" : x).localeCompare(String(y === undefined ? "" : y), "en", { numeric: true });
    return descending ? -order : order;
  }

  function render() {
    const rows = workers.slice().sort(compare).map((w) =>
      R.el("tr", { "data-address": w.address }, Object.values(cells).map((cell) => cell(w))));
    document.querySelector("#workers tbody").replaceChildren(...rows);
    R.$("workers-empty").hidden = rows.length > 0;
    for (const th of document.querySelectorAll("#workers th")) {
      th.dataset.sort = th.dataset.key === sortKey ? (descending ? "desc" : "asc") : "";
    }
    const threads = workers.reduce((n, w) => n + (w.nthreads || 0), 0);
    R.$("w-summary").textContent = `${workers.length} workers · ${threads} threads`;
  }

  function onWorkers(msg) {
    workers = msg.workers || [];
    render();
  }

  function onHeader(event) {
    const key = event.target.closest("th").dataset.key;
    if (!key) return;
    descending = key === sortKey ? !descending : ["name", "address"].indexOf(key) < 0;
    sortKey = key;
    render();
  }

  async function start() {
    document.querySelector("#workers thead").addEventListener("click", onHeader);
    try {
      onWorkers(await R.getJSON("/api/workers"));
    } catch (err) {
      R.$("conn").textContent = "error: " + err.message;
    }
    R.live(["workers"], { workers: onWorkers });
  }

  start();
})();
