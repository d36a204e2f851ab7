// rdist dashboard: a small Socket.IO v5 client over Engine.IO v4, written for this project.
//
// Transports: WebSocket, falling back to HTTP long-polling when a WebSocket cannot be
// opened (a proxy that strips upgrades). Text packets only: the dashboard sends JSON.
// Engine.IO packet types: 0 open, 1 close, 2 ping, 3 pong, 4 message, 6 noop.
// Socket.IO packet types (inside Engine.IO messages): 0 connect, 1 disconnect, 2 event,
// 3 ack, 4 connect error. Polling payloads separate packets with the record separator.
"use strict";

(function (global) {
  const SEPARATOR = "\x1e";

  class WebSocketTransport {
    constructor(url, handlers) {
      this.handlers = handlers;
      this.opened = false;
      const wsUrl = url.replace(/^http/, "ws") + "&transport=websocket";
      this.ws = new WebSocket(wsUrl);
      this.ws.onopen = () => { this.opened = true; };
      this.ws.onmessage = (msg) => handlers.packet(String(msg.data));
      this.ws.onclose = () => handlers.close(this.opened ? "closed" : "failed");
    }
    send(packet) {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(packet);
    }
    close() {
      this.ws.onclose = null;
      this.ws.close();
    }
  }

  class PollingTransport {
    constructor(url, handlers) {
      this.base = url + "&transport=polling";
      this.handlers = handlers;
      this.sid = null;
      this.queue = [];
      this.sending = false;
      this.closed = false;
      this.poll();
    }
    url() {
      return this.base + (this.sid ? "&sid=" + encodeURIComponent(this.sid) : "") +
        "&t=" + Date.now().toString(36);
    }
    async poll() {
      while (!this.closed) {
        let text;
        try {
          const response = await fetch(this.url(), { credentials: "same-origin", cache: "no-store" });
          if (!response.ok) return this.fail();
          text = await response.text();
        } catch (err) {
          return this.fail();
        }
        for (const packet of text.split(SEPARATOR)) {
          if (packet[0] === "0" && !this.sid) this.sid = JSON.parse(packet.slice(1)).sid;
          if (!this.closed) this.handlers.packet(packet);
        }
        this.flush();
      }
    }
    send(packet) {
      this.queue.push(packet);
      this.flush();
    }
    async flush() {
      if (this.sending || !this.sid || this.queue.length === 0 || this.closed) return;
      this.sending = true;
      const body = this.queue.splice(0).join(SEPARATOR);
      try {
        const response = await fetch(this.url(), {
          method: "POST", body, credentials: "same-origin",
          headers: { "Content-Type": "text/plain;charset=UTF-8" },
        });
        if (!response.ok) this.fail();
      } catch (err) {
        this.fail();
      }
      this.sending = false;
      this.flush();
    }
    fail() {
      if (this.closed) return;
      this.closed = true;
      this.handlers.close("failed");
    }
    close() {
      this.closed = true;
    }
  }

  // Socket.IO packet text: type digit, optional "/namespace,", optional ack id, JSON.
  function parseSio(text) {
    let i = 1;
    if (text[i] === "/") {
      const comma = text.indexOf(",", i);
      i = comma < 0 ? text.length : comma + 1;
    }
    let id = "";
    while (i < text.length && text[i] >= "0" && text[i] <= "9") id += text[i++];
    let data = null;
    if (i < text.length) {
      try { data = JSON.parse(text.slice(i)); } catch (err) { data = null; }
    }
    return { type: text[0], id: id === "" ? null : Number(id), data };
  }

  class Socket {
    constructor(options) {
      options = options || {};
      this.path = options.path || "/socket.io/";
      this.auth = options.auth || null;
      this.handlers = {};
      this.acks = {};
      this.nextAck = 0;
      this.connected = false;
      this.usePolling = false;
      this.failures = 0;
      this.delay = 500;
      this.stopped = false;
      this.transport = null;
      this.watchdog = null;
      this.pingDeadline = 45000;
    }

    on(event, fn) {
      (this.handlers[event] = this.handlers[event] || []).push(fn);
      return this;
    }

    fire(event, ...args) {
      for (const fn of this.handlers[event] || []) {
        try { fn(...args); } catch (err) { console.error("rdist:", event, err); }
      }
    }

    connect() {
      this.stopped = false;
      const base = location.origin + this.path + "?EIO=4";
      const handlers = { packet: (p) => this.onEio(p), close: (why) => this.onClose(why) };
      this.transport = this.usePolling ? new PollingTransport(base, handlers)
                                       : new WebSocketTransport(base, handlers);
      this.fire("transport", this.usePolling ? "polling" : "websocket");
      return this;
    }

    disconnect() {
      this.stopped = true;
      if (this.transport) {
        this.sendEio("41");
        this.transport.close();
      }
      this.onClose("client");
    }

    emit(event, ...args) {
      let id = "";
      if (typeof args[args.length - 1] === "function") {
        id = String(this.nextAck++);
        this.acks[id] = args.pop();
      }
      this.sendEio("42" + id + JSON.stringify([event, ...args]));
    }

    sendEio(packet) {
      if (this.transport) this.transport.send(packet);
    }

    armWatchdog() {
      clearTimeout(this.watchdog);
      this.watchdog = setTimeout(() => {
        if (this.transport) this.transport.close();
        this.onClose("ping timeout");
      }, this.pingDeadline);
    }

    onEio(packet) {
      const type = packet[0];
      if (type === "0") {
        const open = JSON.parse(packet.slice(1));
        this.pingDeadline = (open.pingInterval || 25000) + (open.pingTimeout || 20000);
        this.armWatchdog();
        this.sendEio("40" + (this.auth ? JSON.stringify(this.auth) : ""));
      } else if (type === "2") {
        this.armWatchdog();
        this.sendEio("3");
      } else if (type === "4") {
        this.onSio(parseSio(packet.slice(1)));
      } else if (type === "1") {
        this.onClose("server closed");
      }
    }

    onSio(packet) {
      if (packet.type === "0") {
        this.connected = true;
        this.failures = 0;
        this.delay = 500;
        this.fire("connect");
      } else if (packet.type === "2" && Array.isArray(packet.data)) {
        const [event, ...args] = packet.data;
        this.fire(event, ...args);
        if (packet.id !== null) this.sendEio("43" + packet.id + "[]");
      } else if (packet.type === "3" && packet.id !== null) {
        const ack = this.acks[packet.id];
        delete this.acks[packet.id];
        if (ack && Array.isArray(packet.data)) ack(...packet.data);
      } else if (packet.type === "4") {
        this.fire("connect_error", packet.data || {});
        this.delay = 10000;  // a refused token will not become right by retrying fast
      } else if (packet.type === "1") {
        this.onClose("server disconnected");
      }
    }

    onClose(why) {
      clearTimeout(this.watchdog);
      const wasConnected = this.connected;
      this.connected = false;
      if (this.transport) this.transport.close();
      this.transport = null;
      if (wasConnected) this.fire("disconnect", why);
      if (this.stopped) return;
      if (why === "failed" && !this.usePolling && ++this.failures >= 2) {
        this.usePolling = true;  // WebSocket refused twice: long-polling instead
      }
      setTimeout(() => { if (!this.stopped && !this.transport) this.connect(); }, this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    }
  }

  global.RdistSocket = Socket;
})(window);
