// Metrics: key figures from GET /metrics (Prometheus text), refreshed every few seconds.

import { h, fill, table, empty } from "../dom.js";

export const title = "Metrics";

const REFRESH_MS = 5000;

/** Parse Prometheus text: [{name, labels: {…}, value}]. */
export function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split("\n")) {
    if (!raw || raw.startsWith("#")) continue;
    const m = line.exec(raw);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      for (const l of m[2].matchAll(label)) {
        labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
      }
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function sum(samples, name, where = () => true) {
  return samples.filter((s) => s.name === name && where(s.labels)).reduce((a, s) => a + s.value, 0);
}

function figure(label, value, id) {
  return h("div", { class: "figure", role: "group", "aria-labelledby": `${id}-label` }, h("dt", { id: `${id}-label` }, label), h("dd", { dataset: { metric: id } }, Number.isFinite(value) ? value.toLocaleString() : "—"));
}

export function mount(main, ctx) {
  const refresh = h("button", { type: "button", class: "secondary" }, "Refresh");
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite" }, "Loading…");
  const figures = h("div", {});
  const perFunction = h("div", {});
  let timer = null;
  let stopped = false;

  fill(
    main,
    h("h1", {}, "Metrics"),
    h("div", { class: "toolbar" }, refresh),
    status,
    h("section", { class: "panel", "aria-labelledby": "figures-title" }, h("h2", { id: "figures-title" }, "Key figures"), figures),
    h("section", { class: "panel", "aria-labelledby": "per-function-title" }, h("h2", { id: "per-function-title" }, "Runs by function"), perFunction),
  );

  async function load() {
    clearTimeout(timer);
    try {
      const response = await fetch("/metrics", { cache: "no-store" });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      // The dashboard's and the CLI's own _system/ queries are not the app's work.
      const samples = parseMetrics(await response.text()).filter((s) => !String(s.labels.path ?? "").startsWith("_system/"));
      if (stopped) return;
      const runs = sum(samples, "reactive_function_duration_seconds_count");
      const failed = sum(samples, "reactive_function_errors_total");
      const byType = (type) => sum(samples, "reactive_function_duration_seconds_count", (l) => l.type === type);
      fill(
        figures,
        h(
          "dl",
          { class: "figures" },
          figure("Function runs", runs, "runs"),
          figure("Succeeded", runs - failed, "succeeded"),
          figure("Failed", failed, "failed"),
          figure("Queries run", byType("query"), "queries"),
          figure("Mutations run", byType("mutation"), "mutations"),
          figure("Actions run", byType("action"), "actions"),
          figure("Live subscriptions", sum(samples, "reactive_subscriptions"), "subscriptions"),
          figure("WebSocket connections", sum(samples, "reactive_websocket_connections"), "connections"),
          figure("Commits", sum(samples, "reactive_commits_total"), "commits"),
          figure("Write conflicts", sum(samples, "reactive_write_conflicts_total"), "conflicts"),
        ),
      );
      const rows = samples
        .filter((s) => s.name === "reactive_function_duration_seconds_count")
        .map((s) => {
          const same = (l) => l.path === s.labels.path && l.type === s.labels.type;
          const total = sum(samples, "reactive_function_duration_seconds_sum", same);
          return {
            path: s.labels.path,
            type: s.labels.type,
            runs: s.value,
            errors: sum(samples, "reactive_function_errors_total", same),
            mean: s.value ? (total / s.value) * 1000 : 0,
          };
        })
        .sort((a, b) => b.runs - a.runs);
      fill(
        perFunction,
        rows.length
          ? table({
              caption: "Since the server started (the _system/ queries of the dashboard and the CLI are left out)",
              columns: [
                { label: "Function", render: (r) => h("code", {}, r.path) },
                { label: "Kind", render: (r) => r.type },
                { label: "Runs", className: "num", render: (r) => r.runs.toLocaleString() },
                { label: "Failed", className: "num", render: (r) => r.errors.toLocaleString() },
                { label: "Mean duration", className: "num", render: (r) => `${r.mean.toFixed(2)} ms` },
              ],
              rows,
            })
          : empty("No function has run yet", "Figures appear once functions run."),
      );
      status.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every ${REFRESH_MS / 1000} s.`;
    } catch (err) {
      if (stopped) return;
      status.textContent = "";
      ctx.alert(`Could not read /metrics: ${err.message}`);
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  }
  refresh.addEventListener("click", load);
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
