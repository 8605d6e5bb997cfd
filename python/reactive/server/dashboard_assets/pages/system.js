// Scheduled functions, cron jobs and files: the system tables _scheduled_functions,
// _cron_jobs and _storage, live (empty until a feature writes them).

import { h, fill, table, empty } from "../dom.js";
import { cell, when } from "../values.js";

function genericColumns(docs) {
  const keys = new Set();
  for (const d of docs) for (const k of Object.keys(d)) keys.add(k);
  keys.delete("_id");
  keys.delete("_creationTime");
  return ["_id", ...keys, "_creationTime"].map((key) => ({
    label: key,
    render: (d) => {
      if (!(key in d)) return h("span", { class: "muted" }, "—");
      if (key === "_creationTime") return when(d[key]);
      return h("code", {}, cell(d[key]));
    },
  }));
}

const scheduledColumns = [
  { label: "Function", render: (d) => h("code", {}, String(d.name ?? "")) },
  { label: "Scheduled for", render: (d) => when(d.scheduledTime) },
  {
    label: "State",
    render: (d) => {
      const kind = d.state && d.state.kind ? d.state.kind : "unknown";
      return [h("span", { class: `state ${kind}` }, kind), d.state && d.state.error ? h("div", { class: "muted" }, d.state.error) : null];
    },
  },
  { label: "Completed", render: (d) => (d.completedTime ? when(d.completedTime) : "—") },
  { label: "Arguments", render: (d) => h("code", {}, cell(d.args ?? {})) },
  { label: "Id", render: (d) => h("code", {}, d._id) },
];

function page({ heading, path, table: tableName, none, detail, columns }) {
  return {
    title: heading,
    mount(main, ctx) {
      const status = h("p", { class: "muted", role: "status", "aria-live": "polite" }, "Loading…");
      const body = h("div", {});
      fill(main, h("h1", {}, heading), status, h("section", { class: "panel", "aria-label": heading }, body));
      const unsubscribe = ctx.sync.subscribe(path, {}, (result) => {
        if (result.error) {
          status.textContent = "";
          ctx.alert(`Could not read ${tableName}: ${result.error}`);
          return;
        }
        const { exists, documents } = result.value;
        if (!documents.length) {
          status.textContent = "";
          fill(body, empty(none, exists ? `The ${tableName} table is empty.` : detail));
          return;
        }
        status.textContent = `${documents.length} shown (newest first), live.`;
        fill(body, table({ caption: heading, columns: columns ? columns : genericColumns(documents), rows: documents }));
      });
      return unsubscribe;
    },
  };
}

export const scheduled = page({
  heading: "Scheduled functions",
  path: "_system/dashboard/scheduled",
  table: "_scheduled_functions",
  none: "No scheduled functions",
  detail: "Nothing was ever scheduled with ctx.scheduler on this deployment.",
  columns: scheduledColumns,
});

export const crons = page({
  heading: "Cron jobs",
  path: "_system/dashboard/crons",
  table: "_cron_jobs",
  none: "No cron jobs",
  detail: "This deployment has no cron jobs registered.",
});

export const files = page({
  heading: "Files",
  path: "_system/dashboard/files",
  table: "_storage",
  none: "No files",
  detail: "No file has been stored on this deployment.",
});
