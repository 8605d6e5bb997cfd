// The dashboard: log in with the admin key, then one page at a time (hash routes).

import { Api, AuthError } from "./api.js";
import { SyncClient, syncUrl } from "./sync.js";
import { h, fill } from "./dom.js";
import * as data from "./pages/data.js";
import * as functions from "./pages/functions.js";
import * as logs from "./pages/logs.js";
import * as schema from "./pages/schema.js";
import { scheduled, crons, files } from "./pages/system.js";
import * as metrics from "./pages/metrics.js";
import * as env from "./pages/env.js";

const KEY = "reactive.dashboard.adminKey";
const PAGES = { data, functions, logs, schema, scheduled, crons, files, metrics, env };
const $ = (id) => document.getElementById(id);

let session = null; // {api, sync}
let unmount = null;
let currentPage = null;

// -- messages ------------------------------------------------------------------------------

function alertError(message) {
  const box = $("alerts");
  // The same message again: count it instead of stacking copies.
  for (const item of box.children) {
    if (item.dataset.message === message) {
      const n = Number(item.dataset.count || "1") + 1;
      item.dataset.count = String(n);
      item.querySelector(".count").textContent = ` (×${n})`;
      return;
    }
  }
  const item = h(
    "div",
    { class: "alert", dataset: { message } },
    h("span", {}, message),
    h("span", { class: "count" }),
    h("button", { type: "button", class: "dismiss", "aria-label": "Dismiss this message", onclick: () => item.remove() }, "×"),
  );
  box.append(item);
  while (box.children.length > 5) box.firstElementChild.remove();
}

function announce(message) {
  const region = $("announcer");
  region.textContent = "";
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}

function showStatus(status, detail) {
  const node = $("connection");
  node.hidden = false;
  node.dataset.status = status;
  const text = { connecting: "Connecting…", reconnecting: "Reconnecting…", live: "Live", waiting: "Disconnected", offline: "Offline" }[status] || status;
  node.textContent = detail ? `${text}: ${detail}` : text;
}

// -- log in and out ------------------------------------------------------------------------

function showLogin(message = "") {
  $("shell").hidden = true;
  $("logout").hidden = true;
  $("connection").hidden = true;
  $("server-info").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message;
  const input = $("admin-key");
  input.setAttribute("aria-invalid", message ? "true" : "false");
  input.focus();
}

function logout(message = "") {
  if (unmount) unmount();
  unmount = null;
  currentPage = null;
  if (session) session.sync.close();
  session = null;
  sessionStorage.removeItem(KEY);
  logs.reset();
  fill($("main"));
  showLogin(message);
}

async function login(key, remembered) {
  const api = new Api(key);
  const button = document.querySelector("#login-form button[type=submit]");
  button.disabled = true;
  $("login-error").textContent = "";
  try {
    const info = await api.query("_system/dashboard/info");
    sessionStorage.setItem(KEY, key);
    const sync = new SyncClient(syncUrl(), key, {
      onStatus: showStatus,
      onError: alertError,
      onAuthError: (message) => logout(`The server refused the admin key: ${message}`),
    });
    session = { api, sync, info };
    $("server-info").textContent = `v${info.version} · ${info.functions} function${info.functions === 1 ? "" : "s"}`;
    $("login").hidden = true;
    $("shell").hidden = false;
    $("logout").hidden = false;
    $("admin-key").value = "";
    route();
  } catch (err) {
    if (err instanceof AuthError) {
      sessionStorage.removeItem(KEY);
      if (/none configured/.test(err.message)) {
        showLogin("This server accepts no admin key: start it with --admin-key KEY (or REACTIVE_ADMIN_KEY).");
      } else {
        showLogin(remembered ? "The saved admin key was refused: enter it again." : "Wrong admin key: the server refused it.");
      }
    } else {
      showLogin(`Could not reach the server: ${err.message}`);
    }
  } finally {
    button.disabled = false;
  }
}

// -- pages ---------------------------------------------------------------------------------

function route() {
  if (!session) return;
  const hash = location.hash || "";
  if (!hash.startsWith("#/")) {
    history.replaceState(null, "", "#/data");
  }
  const parts = (location.hash.slice(2) || "data").split("/").map(decodeURIComponent);
  const name = PAGES[parts[0]] ? parts[0] : "data";
  const page = PAGES[name];
  const moved = currentPage !== null && currentPage !== name;
  currentPage = name;
  for (const link of document.querySelectorAll(".sidebar a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (unmount) unmount();
  unmount = null;
  const main = $("main");
  fill(main);
  document.title = `${page.title} · Dashboard · reactive`;
  const ctx = {
    api: session.api,
    sync: session.sync,
    params: parts.slice(1),
    alert: alertError,
    announce,
    authFailed: (message) => logout(`The server refused the admin key: ${message}`),
  };
  try {
    unmount = page.mount(main, ctx) || null;
  } catch (err) {
    alertError(`The ${page.title} page failed: ${err.message}`);
  }
  // A new page: move focus to it, so keyboard and screen reader users start there.
  if (moved) main.focus({ preventScroll: true });
}

function start() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("admin-key").value.trim();
    if (key) login(key, false);
  });
  $("logout").addEventListener("click", () => logout());
  $("skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    const target = session ? $("main") : $("admin-key");
    target.focus();
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("unhandledrejection", (event) => {
    alertError(String(event.reason && event.reason.message ? event.reason.message : event.reason));
  });
  const saved = sessionStorage.getItem(KEY);
  if (saved) login(saved, true);
  else showLogin();
}

start();
