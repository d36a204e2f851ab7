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

  return { bytes, number, seconds, clock, el, $, getJSON, colour, groupOf, live, tooltip,
           interval: Number(document.body.dataset.interval || 1) };
})();
