// rdist dashboard, Dead letters page: entries set aside by any reader, with why, and a
// button that puts one back on its stream (a POST the dashboard token guards).
"use strict";

(function () {
  const R = Rdist;
  let oldest = null;

  function shortStream(stream) {
    const cluster = document.body.dataset.cluster || "";
    const prefix = `rdist:{${cluster}}:`;
    return stream.startsWith(prefix) ? stream.slice(prefix.length) : stream;
  }

  function say(text, isError) {
    const node = R.$("dl-message");
    node.hidden = false;
    node.textContent = text;
    node.className = isError ? "notice error" : "notice";
  }

  async function requeue(letter, row, button) {
    button.disabled = true;
    try {
      const answer = await R.postJSON("/api/deadletters/requeue", { id: letter.id });
      row.remove();
      say(`Requeued ${letter.entry || letter.id} on ${shortStream(answer.stream)} as ${answer.id}.`);
    } catch (err) {
      button.disabled = false;
      say("Not requeued: " + err.message, true);
    }
  }

  function row(letter) {
    const reason = letter.reason + (letter.error ? " — " + letter.error : "");
    const tr = R.el("tr", { "data-id": letter.id });
    const button = R.el("button", { type: "button", class: "close requeue", text: "Requeue",
                                    title: "put this entry back on " + shortStream(letter.stream) });
    button.addEventListener("click", () => requeue(letter, tr, button));
    tr.append(
      R.el("td", { class: "mono nowrap", text: new Date(letter.time * 1000).toLocaleString("en-GB", { hour12: false }) }),
      R.el("td", { class: "mono ellipsis", text: shortStream(letter.stream), title: `${letter.stream} entry ${letter.entry}` }),
      R.el("td", { class: "ellipsis", text: reason, title: reason }),
      R.el("td", { class: "num", text: letter.deliveries }),
      R.el("td", { class: "num", text: R.bytes(letter.size) }),
      R.el("td", { class: "mono ellipsis", text: letter.preview, title: letter.preview }),
      R.el("td", {}, button));
    return tr;
  }

  async function load(more) {
    const page = await R.getJSON("/api/deadletters?limit=100" + (more && oldest ? "&before=" + oldest : ""));
    const body = document.querySelector("#letters tbody");
    const rows = page.letters.map(row);
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    if (page.letters.length) oldest = page.letters[page.letters.length - 1].id;
    R.$("dl-older").hidden = !page.next;
    R.$("letters-empty").hidden = body.children.length > 0;
    R.$("dl-summary").textContent = `${R.number(page.total, 0)} dead letters · stream entries that could not be handled, with the reason · newest first`;
  }

  async function start() {
    R.$("dl-older").addEventListener("click", () => load(true));
    try { await load(false); } catch (err) { R.$("conn").textContent = "error: " + err.message; }
    R.live([], {});
  }

  start();
})();
