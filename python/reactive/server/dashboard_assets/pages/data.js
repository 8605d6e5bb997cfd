// Data: the tables with their document counts, and a table's newest documents, live.

import { h, fill, table, empty } from "../dom.js";
import { cell, show, when } from "../values.js";

const PAGE = 100;
const MAX = 1000;

function columnsOf(docs) {
  const seen = new Set();
  for (const doc of docs) for (const key of Object.keys(doc)) seen.add(key);
  seen.delete("_id");
  seen.delete("_creationTime");
  return ["_id", ...seen, "_creationTime"];
}

export const title = "Data";

export function mount(main, ctx) {
  const selected = ctx.params[0] || null;
  const tablesList = h("ul", { class: "table-list", "aria-label": "Tables" });
  const tablesStatus = h("p", { class: "muted" }, "Loading tables…");
  const docsTitle = h("h2", { id: "documents-title" }, selected ? selected : "Documents");
  const docsSummary = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  const docsBody = h("div", {});
  const loadMore = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  let limit = PAGE;
  let unsubscribeDocs = null;
  let previous = new Map(); // _id -> shown text, to mark changed rows
  let first = true;

  fill(
    main,
    h("h1", {}, "Data"),
    h(
      "div",
      { class: "split" },
      h("section", { class: "panel tables", "aria-labelledby": "tables-title" }, h("h2", { id: "tables-title" }, "Tables"), tablesStatus, tablesList),
      h("section", { class: "panel documents", "aria-labelledby": "documents-title" }, docsTitle, docsSummary, docsBody, loadMore),
    ),
  );

  const unsubscribeTables = ctx.sync.subscribe("_system/dashboard/tables", {}, (result) => {
    if (result.error) {
      tablesStatus.textContent = "";
      ctx.alert(`Could not list the tables: ${result.error}`);
      return;
    }
    const tables = result.value;
    fill(tablesStatus);
    if (!tables.length) {
      fill(tablesList);
      fill(tablesStatus, empty("No tables yet", "Tables appear when a function first inserts into them."));
      return;
    }
    fill(
      tablesList,
      tables.map((t) =>
        h(
          "li",
          {},
          h(
            "a",
            {
              href: `#/data/${encodeURIComponent(t.name)}`,
              "aria-current": t.name === selected ? "page" : null,
            },
            h("span", { class: "name" }, t.name),
            h(
              "span",
              { class: "badge", "aria-label": `${t.count} documents${t.exact ? "" : " (approximate)"}` },
              t.count.toLocaleString(),
            ),
          ),
        ),
      ),
    );
  });

  function renderDocs(result) {
    if (result.error) {
      fill(docsBody);
      docsSummary.textContent = "";
      ctx.alert(`Could not read ${selected}: ${result.error}`);
      return;
    }
    const { page, hasMore, exists } = result.value;
    loadMore.hidden = !hasMore || limit >= MAX;
    if (!exists) {
      docsSummary.textContent = "";
      fill(docsBody, empty(`No table named ${selected}`, "It may have been dropped, or never created."));
      return;
    }
    if (!page.length) {
      docsSummary.textContent = `${selected}: no documents.`;
      fill(docsBody, empty("No documents", `The table ${selected} is empty.`));
      previous = new Map();
      return;
    }
    const shown = new Map(page.map((d) => [d._id, show(d)]));
    const columns = columnsOf(page).map((key) => ({
      label: key,
      className: key.startsWith("_") ? "system" : null,
      render: (doc) => {
        if (!(key in doc)) return h("span", { class: "muted", "aria-label": "unset" }, "—");
        if (key === "_creationTime") return h("time", { datetime: new Date(doc[key]).toISOString() }, when(doc[key]));
        return h("code", { title: cell(doc[key], 2000) }, cell(doc[key]));
      },
    }));
    fill(
      docsBody,
      table({
        caption: `Documents of ${selected}, newest first`,
        columns,
        rows: page,
        rowKey: (d) => d._id,
        rowClass: (d) => (!first && previous.get(d._id) !== shown.get(d._id) ? "changed" : null),
      }),
    );
    const more = hasMore ? " (more in the table)" : "";
    docsSummary.textContent = `${selected}: showing ${page.length} document${page.length === 1 ? "" : "s"}${more}, updated ${new Date().toLocaleTimeString()}.`;
    previous = shown;
    first = false;
  }

  function subscribeDocs() {
    if (unsubscribeDocs) unsubscribeDocs();
    unsubscribeDocs = ctx.sync.subscribe("_system/dashboard/documents", { table: selected, limit }, renderDocs);
  }

  if (selected) {
    docsSummary.textContent = `Loading ${selected}…`;
    subscribeDocs();
  } else {
    fill(docsBody, empty("Select a table", "Its newest documents show here and update live."));
  }
  loadMore.addEventListener("click", () => {
    limit = Math.min(limit + PAGE, MAX);
    subscribeDocs();
  });

  return () => {
    unsubscribeTables();
    if (unsubscribeDocs) unsubscribeDocs();
  };
}
