// rdist dashboard, Clients page: every client (and holder of futures) with the task
// groups it wants and their progress, from the dashboard's census of the tasks hash.
"use strict";

(function () {
  const R = Rdist;

  function bar(g) {
    const waiting = (g.released || 0) + (g.waiting || 0) + (g.queued || 0) + (g["no-worker"] || 0);
    const total = g.total || 1;
    const seg = (cls, n) => {
      const span = R.el("span", { class: "seg " + cls, title: `${cls}: ${R.number(n, 0)}` });
      span.style.width = (100 * n) / total + "%";
      return span;
    };
    return R.el("div", { class: "stack" }, [seg("memory", g.memory || 0), seg("processing", g.processing || 0),
                                           seg("waiting", waiting), seg("erred", g.erred || 0)]);
  }

  function client(c) {
    const title = c.name && c.name !== c.id ? `${c.name} (${c.id})` : c.id;
    const state = c.connected ? `heartbeat ${R.seconds(c.age)} ago` : "no heartbeat record (a holder of futures, or gone)";
    const rows = c.groups.slice(0, 30).map((g) => R.el("div", { class: "row", "data-group": g.name }, [
      R.el("div", { class: "label" }, [
        R.el("span", { class: "name", text: g.name, title: g.name }),
        R.el("span", { class: "counts", text: `${R.number(g.memory || 0, 0)} / ${R.number(g.total, 0)}` + (g.erred ? ` · ${R.number(g.erred, 0)} erred` : "") })]),
      bar(g)]));
    if (c.groups.length > 30) rows.push(R.el("p", { class: "muted", text: `… and ${c.groups.length - 30} more groups` }));
    return R.el("div", { class: "client", "data-client": c.id }, [
      R.el("h3", {}, [R.el("span", { class: "mono", text: title, title }),
                      R.el("span", { class: "hint", text: `  wants ${R.number(c.wanted, 0)} keys · ` +
                        `${R.number(c.tasks, 0)} tasks in their graphs${c.whole ? "" : " (the first of them)"} · ${state}` })]),
      rows.length ? R.el("div", { class: "progress" }, rows) : R.el("p", { class: "muted", text: "wants no task now" })]);
  }

  async function refresh() {
    let answer;
    try { answer = await R.getJSON("/api/clients"); } catch (err) { R.$("conn").textContent = "error: " + err.message; return; }
    const list = answer.clients || [];
    R.$("clients").replaceChildren(...list.map(client));
    R.$("clients-empty").hidden = list.length > 0;
    R.$("cl-summary").textContent = `${list.length} clients · each client's task groups, with their progress` +
      (answer.complete ? "" : " (counting…)");
  }

  async function start() {
    await refresh();
    R.live([], {});
    setInterval(refresh, Math.max(2000, R.interval * 2000));
  }

  start();
})();
