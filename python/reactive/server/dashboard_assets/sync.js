// A small client of the Convex sync protocol (WebSocket /api/sync), enough for the
// dashboard: live queries under the admin key, with reconnection and backoff.
//
// Client -> server: Connect, Authenticate {tokenType: "Admin"}, ModifyQuerySet (Add/Remove).
// Server -> client: Transition {startVersion, endVersion, modifications: QueryUpdated /
// QueryFailed / QueryRemoved}, Ping, AuthError, FatalError.

import { fromConvex } from "./values.js";

const MAX_BACKOFF_MS = 10000;
const SILENCE_MS = 40000; // the server pings every 15 s when idle
const CLOSE_CODES = {
  1000: "closed",
  1001: "the server went away",
  1006: "the connection was lost",
  1011: "server error",
  1012: "the server is restarting",
  1013: "the server is busy",
};

function randomId() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") {
    return crypto.randomUUID();
  }
  // Outside a secure context randomUUID is missing; getRandomValues is not.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function syncUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/api/sync`;
}

export class SyncClient {
  /**
   * @param {string} url WebSocket URL of /api/sync
   * @param {string} adminKey the admin key (sent in Authenticate)
   * @param {{onStatus?: Function, onAuthError?: Function, onError?: Function}} hooks
   */
  constructor(url, adminKey, hooks = {}) {
    this.url = url;
    this.adminKey = adminKey;
    this.hooks = hooks;
    this.sessionId = randomId();
    this.queries = new Map(); // queryId -> {udfPath, args, listener, last}
    this.nextQueryId = 0;
    this.ws = null;
    this.querySet = 0; // the query set version the server has from us
    this.version = null; // {querySet, identity, ts} after the last Transition
    this.connectionCount = 0;
    this.lastCloseReason = "InitialConnect";
    this.attempt = 0;
    this.closed = false;
    this.retryTimer = null;
    this.silenceTimer = null;
    this.status = "connecting";
    this.connect();
  }

  setStatus(status, detail = "") {
    this.status = status;
    if (this.hooks.onStatus) this.hooks.onStatus(status, detail);
  }

  connect() {
    if (this.closed) return;
    this.setStatus(this.connectionCount === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleReconnect(String(err));
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.opened(ws);
    ws.onmessage = (event) => this.received(ws, event.data);
    ws.onclose = (event) => this.lost(ws, event.reason || CLOSE_CODES[event.code] || `closed (${event.code})`);
    ws.onerror = () => {}; // onclose follows with what we need
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  opened(ws) {
    if (ws !== this.ws) return;
    this.querySet = 0;
    this.version = { querySet: 0, identity: 0, ts: "AAAAAAAAAAA=" };
    this.send({
      type: "Connect",
      sessionId: this.sessionId,
      connectionCount: this.connectionCount,
      lastCloseReason: this.lastCloseReason,
      clientTs: Date.now(),
    });
    this.connectionCount += 1;
    this.send({ type: "Authenticate", tokenType: "Admin", value: this.adminKey, baseVersion: 0 });
    const adds = [...this.queries.entries()].map(([id, q]) => this.addOf(id, q));
    if (adds.length) this.modify(adds);
    this.armSilence();
  }

  addOf(queryId, q) {
    return { type: "Add", queryId, udfPath: q.udfPath, args: [q.args] };
  }

  modify(modifications) {
    const base = this.querySet;
    if (this.send({ type: "ModifyQuerySet", baseVersion: base, newVersion: base + 1, modifications })) {
      this.querySet = base + 1;
    }
  }

  armSilence() {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => {
      // Nothing heard (not even a Ping): the connection is dead without knowing it.
      if (this.ws) this.ws.close(4000, "no message from the server");
    }, SILENCE_MS);
  }

  received(ws, data) {
    if (ws !== this.ws) return;
    this.armSilence();
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (msg.type) {
      case "Transition":
        this.transition(msg);
        break;
      case "AuthError":
        this.closed = true;
        this.setStatus("offline", "the admin key was refused");
        if (this.hooks.onAuthError) this.hooks.onAuthError(msg.error || "the admin key was refused");
        ws.close();
        break;
      case "FatalError":
        if (this.hooks.onError) this.hooks.onError(`Sync error: ${msg.error}`);
        break;
      default:
        break; // Ping, MutationResponse, ActionResponse: nothing to do
    }
  }

  transition(msg) {
    const start = msg.startVersion || {};
    const v = this.version;
    if (v && (start.querySet !== v.querySet || start.identity !== v.identity || start.ts !== v.ts)) {
      // Out of step with the server: start over on a new socket.
      this.ws.close(4001, "transition from an unexpected version");
      return;
    }
    this.version = msg.endVersion;
    if (this.status !== "live") this.setStatus("live");
    this.attempt = 0;
    for (const mod of msg.modifications || []) {
      const q = this.queries.get(mod.queryId);
      if (!q) continue;
      if (mod.type === "QueryUpdated") {
        q.last = { value: fromConvex(mod.value), logLines: mod.logLines || [] };
      } else if (mod.type === "QueryFailed") {
        q.last = { error: mod.errorMessage, logLines: mod.logLines || [] };
      } else {
        continue;
      }
      try {
        q.listener(q.last);
      } catch (err) {
        if (this.hooks.onError) this.hooks.onError(String(err && err.stack ? err.message : err));
      }
    }
  }

  lost(ws, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearTimeout(this.silenceTimer);
    this.lastCloseReason = reason;
    if (this.closed) return;
    this.scheduleReconnect(reason);
  }

  scheduleReconnect(reason) {
    const base = Math.min(250 * 2 ** this.attempt, MAX_BACKOFF_MS);
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    this.attempt += 1;
    this.setStatus("waiting", `${reason}; reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /**
   * Subscribe to a query; `listener({value} | {error})` is called with every new result.
   * Returns the function that unsubscribes.
   */
  subscribe(udfPath, args, listener) {
    const queryId = this.nextQueryId++;
    const q = { udfPath, args, listener, last: null };
    this.queries.set(queryId, q);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.modify([this.addOf(queryId, q)]);
    }
    return () => {
      if (!this.queries.delete(queryId)) return;
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.modify([{ type: "Remove", queryId }]);
      }
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.silenceTimer);
    this.queries.clear();
    if (this.ws) this.ws.close(1000, "logged out");
    this.ws = null;
  }
}
