// Environment variables: listed live; set and removed with the admin key.

import { h, fill, table, empty } from "../dom.js";
import { AuthError } from "../api.js";

export const title = "Environment variables";

export function mount(main, ctx) {
  const reveal = h("input", { id: "env-reveal", type: "checkbox" });
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const nameInput = h("input", { id: "env-name", name: "name", required: true, autocomplete: "off", spellcheck: "false" });
  const valueInput = h("input", { id: "env-value", name: "value", autocomplete: "off", spellcheck: "false" });
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  let variables = [];

  const form = h(
    "form",
    { class: "panel inline-form", "aria-labelledby": "env-set-title" },
    h("h2", { id: "env-set-title" }, "Set a variable"),
    h("div", { class: "field" }, h("label", { for: "env-name" }, "Name"), nameInput),
    h("div", { class: "field" }, h("label", { for: "env-value" }, "Value"), valueInput),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Set")),
  );

  fill(
    main,
    h("h1", {}, "Environment variables"),
    h("div", { class: "toolbar" }, reveal, h("label", { for: "env-reveal" }, "Show values")),
    status,
    h("section", { class: "panel", "aria-label": "Variables" }, list),
    form,
  );

  async function change(changes, done) {
    try {
      await ctx.api.updateEnvironmentVariables(changes);
      status.textContent = done;
      return true;
    } catch (err) {
      if (err instanceof AuthError) ctx.authFailed(err.message);
      else ctx.alert(`Could not change the environment variables: ${err.message}`);
      return false;
    }
  }

  function render() {
    if (!variables.length) {
      fill(list, empty("No environment variables", "Functions read them as ctx.env; set one below."));
      return;
    }
    fill(
      list,
      table({
        caption: `${variables.length} variable${variables.length === 1 ? "" : "s"}`,
        columns: [
          { label: "Name", render: (v) => h("code", {}, v.name) },
          { label: "Value", render: (v) => (reveal.checked ? h("code", {}, v.value) : h("span", { class: "muted", "aria-label": "hidden value" }, "••••••••")) },
          {
            label: "Remove",
            render: (v) =>
              h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  "aria-label": `Remove ${v.name}`,
                  onclick: () => {
                    if (confirm(`Remove the environment variable ${v.name}?`)) change([{ name: v.name, value: null }], `Removed ${v.name}.`);
                  },
                },
                "Remove",
              ),
          },
        ],
        rows: variables,
      }),
    );
  }
  reveal.addEventListener("change", render);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name) return;
    change([{ name, value: valueInput.value }], `Set ${name}.`).then((ok) => {
      if (!ok) return;
      nameInput.value = "";
      valueInput.value = "";
    });
  });

  return ctx.sync.subscribe("_system/cli/queryEnvironmentVariables", {}, (result) => {
    if (result.error) {
      ctx.alert(`Could not list the environment variables: ${result.error}`);
      return;
    }
    variables = result.value;
    render();
  });
}
