// Functions: every function of the app, and a form to run one with JSON arguments.

import { h, fill, table, empty, code } from "../dom.js";
import { show, toConvexText } from "../values.js";
import { AuthError } from "../api.js";

export const title = "Functions";

let lastPath = null; // the function chosen last (kept across visits)

export function mount(main, ctx) {
  const select = h("select", { id: "run-function", name: "function", required: true });
  const argsInput = h("textarea", {
    id: "run-args",
    name: "args",
    rows: 5,
    spellcheck: "false",
    "aria-describedby": "run-args-help",
  }, "{}");
  const runButton = h("button", { type: "submit" }, "Run");
  const result = h("section", { class: "panel result", "aria-labelledby": "result-title", "aria-live": "polite", hidden: true });
  const listBody = h("div", {}, h("p", { class: "muted" }, "Loading functions…"));
  let functions = [];

  const form = h(
    "form",
    { class: "panel run-form", "aria-labelledby": "run-title" },
    h("h2", { id: "run-title" }, "Run a function"),
    h("div", { class: "field" }, h("label", { for: "run-function" }, "Function"), select),
    h(
      "div",
      { class: "field" },
      h("label", { for: "run-args" }, "Arguments (JSON object)"),
      argsInput,
      h("p", { id: "run-args-help", class: "muted" }, "Starts from the function's required arguments. JSON numbers arrive as float64 numbers."),
    ),
    h("div", { class: "actions" }, runButton),
  );

  fill(
    main,
    h("h1", {}, "Functions"),
    form,
    result,
    h("section", { class: "panel", "aria-labelledby": "functions-title" }, h("h2", { id: "functions-title" }, "All functions"), listBody),
  );

  let edited = false; // the arguments were typed in: choosing a function keeps them
  argsInput.addEventListener("input", () => {
    edited = true;
  });

  function choose(path) {
    select.value = path;
    lastPath = path;
    const fn = functions.find((f) => f.path === path);
    if (fn && !edited) argsInput.value = toConvexText(fn.argsTemplate ?? {});
  }
  select.addEventListener("change", () => {
    edited = false;
    choose(select.value);
  });

  async function run(event) {
    event.preventDefault();
    const fn = functions.find((f) => f.path === select.value);
    if (!fn) return;
    lastPath = fn.path;
    let args;
    try {
      args = JSON.parse(argsInput.value.trim() || "{}");
      if (args === null || typeof args !== "object" || Array.isArray(args)) throw new Error("the arguments must be a JSON object");
    } catch (err) {
      argsInput.setAttribute("aria-invalid", "true");
      ctx.alert(`Arguments: ${err.message}`);
      argsInput.focus();
      return;
    }
    argsInput.removeAttribute("aria-invalid");
    runButton.disabled = true;
    runButton.textContent = "Running…";
    const started = performance.now();
    try {
      const answer = await ctx.api.run(fn.kind, fn.path, args);
      const ms = (performance.now() - started).toFixed(1);
      const ok = answer.status === "success";
      fill(
        result,
        h("h2", { id: "result-title" }, ok ? `Result of ${fn.path}` : `${fn.path} failed`),
        h("p", { class: ok ? "outcome success" : "outcome failure" }, ok ? `Success in ${ms} ms` : `Error after ${ms} ms`),
        ok ? code(show(answer.value, 2)) : code(answer.errorMessage || "error"),
        answer.errorData !== undefined ? [h("h3", {}, "Error data"), code(show(answer.errorData, 2))] : null,
        h("h3", {}, "Log lines"),
        answer.logLines && answer.logLines.length ? code(answer.logLines.join("\n")) : h("p", { class: "muted" }, "No log lines."),
      );
      result.hidden = false;
    } catch (err) {
      if (err instanceof AuthError) return ctx.authFailed(err.message);
      fill(result, h("h2", { id: "result-title" }, `${fn.path} was not run`), h("p", { class: "outcome failure" }, err.message));
      result.hidden = false;
    } finally {
      runButton.disabled = false;
      runButton.textContent = "Run";
    }
  }
  form.addEventListener("submit", run);

  ctx.api
    .query("_system/dashboard/functions")
    .then((list) => {
      functions = list;
      if (!list.length) {
        fill(listBody, empty("No functions", "The app defines no queries, mutations or actions."));
        fill(select, h("option", { value: "" }, "No functions"));
        runButton.disabled = true;
        return;
      }
      const groups = ["query", "mutation", "action"].map((kind) => {
        const members = list.filter((f) => f.kind === kind);
        return members.length
          ? h("optgroup", { label: `${kind[0].toUpperCase()}${kind.slice(1)}s` }, members.map((f) => h("option", { value: f.path }, `${f.path}${f.visibility === "internal" ? " (internal)" : ""}`)))
          : null;
      });
      fill(select, groups);
      choose(lastPath && list.some((f) => f.path === lastPath) ? lastPath : list[0].path);
      fill(
        listBody,
        table({
          caption: `${list.length} function${list.length === 1 ? "" : "s"}`,
          columns: [
            { label: "Function", render: (f) => h("code", {}, f.path) },
            { label: "Kind", render: (f) => h("span", { class: `kind ${f.kind}` }, f.kind) },
            { label: "Visibility", render: (f) => f.visibility },
            { label: "Arguments", render: (f) => h("pre", { class: "inline-code" }, f.argsSource) },
            {
              label: "Run",
              render: (f) =>
                h(
                  "button",
                  {
                    type: "button",
                    class: "secondary",
                    "aria-label": `Run ${f.path}`,
                    onclick: () => {
                      edited = false;
                      choose(f.path);
                      argsInput.focus();
                      form.scrollIntoView({ block: "nearest" });
                    },
                  },
                  "Run…",
                ),
            },
          ],
          rows: list,
        }),
      );
    })
    .catch((err) => {
      if (err instanceof AuthError) return ctx.authFailed(err.message);
      fill(listBody);
      ctx.alert(`Could not list the functions: ${err.message}`);
    });

  return () => {};
}
