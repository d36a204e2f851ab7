// rdist dashboard, System page: CPU, memory, network and disk of every worker over time,
// from the history the dashboard keeps (so the last minutes show at once), extended live.
"use strict";

(function () {
  const R = Rdist;
  const KEEP = 900, WINDOW = 600;
  let workers = {};   // address -> {name, time: [...], cpu: [...], ...}

  function merge(answer) {
    for (const [address, columns] of Object.entries(answer.workers || {})) {
      const into = workers[address] || (workers[address] = {});
      into.name = columns.name;
      const copy = Object.assign({}, columns);
      delete copy.name;
      R.extend(into, copy, KEEP);
    }
    draw();
  }

  // Each worker's own times: workers beat at their own moments, so the lines are drawn
  // one series at a time on a shared time axis.
  function draw() {
    const addresses = Object.keys(workers).sort();
    R.$("sys-empty").hidden = addresses.length > 0;
    R.$("sys-summary").textContent = `${addresses.length} workers · per worker, over the last ${WINDOW / 60} minutes (kept by the dashboard)`;
    const now = Math.max(0, ...addresses.map((a) => { const t = workers[a].time || []; return t.length ? t[t.length - 1] : 0; }));
    const plot = (id, fields, format) => {
      const canvas = R.$(id);
      const series = [];
      addresses.forEach((a, i) => {
        fields.forEach(([field, suffix], k) => {  // a second field of a worker: dashed, no legend
          series.push({ name: workers[a].name + suffix, times: workers[a].time || [], values: workers[a][field] || [],
                        colour: R.seriesColour(i), dash: k ? [5, 3] : null, legend: k === 0 });
        });
      });
      drawMany(canvas, series, now, format);
    };
    plot("sys-cpu", [["cpu", ""]], (v) => R.number(v, 0) + " %");
    plot("sys-memory", [["memory", ""]], R.bytes);
    plot("sys-network", [["net_sent", ""], ["net_recv", " received"]], R.perSecond);
    plot("sys-disk", [["disk_read", ""], ["disk_write", " written"]], R.perSecond);
  }

  // R.chart takes one time axis: resample each series onto the union of times (each point
  // keeps its own time; a series has no value where it did not beat, so it holds the last).
  function drawMany(canvas, series, now, format) {
    const times = Array.from(new Set(series.flatMap((s) => s.times))).sort((a, b) => a - b);
    const aligned = series.map((s) => {
      const values = [];
      let j = 0, last = 0;
      for (const t of times) {
        while (j < s.times.length && s.times[j] <= t) { last = s.values[j]; j++; }
        values.push(j === 0 ? 0 : last);
      }
      return { name: s.name, values, colour: s.colour, dash: s.dash, legend: s.legend };
    });
    R.chart(canvas, times, aligned, { window: WINDOW, now, format });
  }

  async function start() {
    try {
      merge(await R.getJSON("/api/history"));
    } catch (err) {
      R.$("conn").textContent = "error: " + err.message;
    }
    R.live(["history"], { history: merge });
    window.addEventListener("resize", draw);
  }

  start();
})();
