// Schema: the schema the app declares and the one inferred from stored documents.

import { h, fill, table, code } from "../dom.js";
import { AuthError } from "../api.js";

export const title = "Schema";

export function mount(main, ctx) {
  const refresh = h("button", { type: "button", class: "secondary" }, "Infer again");
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite" }, "Reading the documents…");
  const declared = h("div", {});
  const inferred = h("div", {});
  const counts = h("div", {});
  let stopped = false;

  fill(
    main,
    h("h1", {}, "Schema"),
    h("div", { class: "toolbar" }, refresh),
    status,
    h(
      "div",
      { class: "side-by-side" },
      h("section", { class: "panel", "aria-labelledby": "declared-title" }, h("h2", { id: "declared-title" }, "Declared schema"), declared),
      h("section", { class: "panel", "aria-labelledby": "inferred-title" }, h("h2", { id: "inferred-title" }, "Inferred schema"), inferred),
    ),
    counts,
  );

  async function load() {
    refresh.disabled = true;
    status.textContent = "Reading the documents…";
    try {
      const body = await ctx.api.json("/dashboard/api/schema");
      if (stopped) return;
      fill(
        declared,
        body.declared === null
          ? h("p", { class: "empty-title" }, "No schema declared: the app has no schema module, so any document is accepted.")
          : code(body.declared),
      );
      fill(inferred, code(body.inferred));
      fill(
        counts,
        body.tables.length
          ? h(
              "section",
              { class: "panel", "aria-labelledby": "schema-tables-title" },
              h("h2", { id: "schema-tables-title" }, "Documents read"),
              table({
                columns: [
                  { label: "Table", render: (t) => h("code", {}, t.name) },
                  { label: "Documents", className: "num", render: (t) => t.documents.toLocaleString() },
                ],
                rows: body.tables,
              }),
            )
          : null,
      );
      status.textContent = `Inferred from every stored document at ${new Date().toLocaleTimeString()}.`;
    } catch (err) {
      if (err instanceof AuthError) return ctx.authFailed(err.message);
      status.textContent = "";
      ctx.alert(`Could not read the schema: ${err.message}`);
    } finally {
      refresh.disabled = false;
    }
  }
  refresh.addEventListener("click", load);
  load();
  return () => {
    stopped = true;
  };
}
