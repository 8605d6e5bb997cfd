// Logs: function runs as they happen (GET /api/stream_function_logs, a long poll).

import { h, fill, table, empty } from "../dom.js";
import { AuthError } from "../api.js";

export const title = "Logs";

const KEEP = 500;
const POLL_S = 25;
// Kept across visits to the page: what was seen and where to go on from.
const state = { entries: [], cursor: 0, paused: false };

function outcome(entry) {
  return entry.error ? "failure" : "success";
}

function durationText(seconds) {
  const ms = seconds * 1000;
  return ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

export function mount(main, ctx) {
  const filter = h("input", { id: "log-filter", type: "search", placeholder: "Function path contains…" });
  const pause = h("button", { type: "button", class: "secondary", "aria-pressed": String(state.paused) }, state.paused ? "Resume" : "Pause");
  const clear = h("button", { type: "button", class: "secondary" }, "Clear");
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  const list = h("div", {});
  let abort = null;
  let stopped = false;
  let retry = 0;
  let generation = 0; // a new poll loop ends the one before

  fill(
    main,
    h("h1", {}, "Logs"),
    h(
      "div",
      { class: "toolbar", role: "group", "aria-label": "Log controls" },
      h("label", { for: "log-filter" }, "Filter"),
      filter,
      pause,
      clear,
    ),
    status,
    h("section", { class: "panel", "aria-label": "Function runs" }, list),
  );

  function render() {
    const needle = filter.value.trim().toLowerCase();
    const rows = state.entries.filter((e) => !needle || e.identifier.toLowerCase().includes(needle)).slice().reverse();
    if (!rows.length) {
      fill(list, empty(state.entries.length ? "No runs match the filter" : "No function runs yet", "Runs of the app's functions appear here as they finish."));
      return;
    }
    fill(
      list,
      table({
        caption: "Function runs, newest first",
        columns: [
          {
            label: "Time",
            render: (e) => h("time", { datetime: new Date(e.timestamp * 1000).toISOString() }, new Date(e.timestamp * 1000).toLocaleTimeString()),
          },
          { label: "Function", render: (e) => h("code", {}, e.identifier) },
          { label: "Kind", render: (e) => h("span", { class: `kind ${String(e.udfType).toLowerCase()}` }, String(e.udfType).toLowerCase()) },
          {
            label: "Outcome",
            render: (e) => h("span", { class: `outcome ${outcome(e)}` }, e.error ? "failure" : "success"),
          },
          { label: "Duration", className: "num", render: (e) => durationText(e.executionTime) },
          {
            label: "Log lines",
            render: (e) => {
              const lines = (e.logLines || []).map((l) => h("div", { class: `log-line level-${String(l.level).toLowerCase()}` }, h("span", { class: "level" }, l.level), " ", (l.messages || []).join(" ")));
              if (e.error) lines.push(h("div", { class: "log-line level-error" }, e.error));
              return lines.length ? lines : h("span", { class: "muted" }, "—");
            },
          },
        ],
        rows,
        rowClass: (e) => (e.error ? "failed" : null),
      }),
    );
  }

  async function poll() {
    const mine = ++generation;
    while (!stopped && mine === generation) {
      if (state.paused) {
        status.textContent = "Paused.";
        return;
      }
      status.textContent = "Live: waiting for function runs…";
      abort = new AbortController();
      try {
        const body = await ctx.api.json(`/api/stream_function_logs?cursor=${state.cursor}&timeout_s=${POLL_S}`, { signal: abort.signal });
        retry = 0;
        if (body.entries && body.entries.length) {
          state.entries.push(...body.entries);
          if (state.entries.length > KEEP) state.entries.splice(0, state.entries.length - KEEP);
          render();
          ctx.announce(`${body.entries.length} new function run${body.entries.length === 1 ? "" : "s"}`);
        }
        state.cursor = body.newCursor ?? state.cursor;
      } catch (err) {
        if (stopped || mine !== generation || (err && err.name === "AbortError")) return;
        if (err instanceof AuthError) return ctx.authFailed(err.message);
        const delay = Math.min(500 * 2 ** retry, 10000);
        retry += 1;
        status.textContent = `Disconnected; retrying in ${Math.ceil(delay / 1000)} s.`;
        if (retry === 1) ctx.alert(`Logs: ${err.message}`);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  pause.addEventListener("click", () => {
    state.paused = !state.paused;
    pause.textContent = state.paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(state.paused));
    if (state.paused) {
      if (abort) abort.abort();
      status.textContent = "Paused.";
    } else {
      poll();
    }
  });
  clear.addEventListener("click", () => {
    state.entries = [];
    render();
  });
  filter.addEventListener("input", render);

  render();
  poll();
  return () => {
    stopped = true;
    if (abort) abort.abort();
  };
}

/** Forget what was seen (on log out). */
export function reset() {
  state.entries = [];
  state.cursor = 0;
  state.paused = false;
}
