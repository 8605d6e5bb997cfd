// Building DOM nodes (text is always text: nothing is parsed as HTML).

/**
 * h("button", {type: "button", onclick: fn, class: "x"}, "text", childNode, [more])
 * Attributes starting with "on" are listeners; `false`/`null` attributes are left out.
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/**
 * A table: `columns` are [{label, render(row) -> node|string, className?}]; the first
 * column's cells are row headers (<th scope="row">) when `rowHeader` is true.
 */
export function table({ caption, columns, rows, rowKey, rowClass, rowHeader = true }) {
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.className }, c.label))));
  const body = h(
    "tbody",
    {},
    rows.map((row) =>
      h(
        "tr",
        { dataset: rowKey ? { key: rowKey(row) } : undefined, class: rowClass ? rowClass(row) : null },
        columns.map((c, i) =>
          h(i === 0 && rowHeader ? "th" : "td", { scope: i === 0 && rowHeader ? "row" : null, class: c.className }, c.render(row)),
        ),
      ),
    ),
  );
  return h("div", { class: "table-wrap" }, h("table", {}, caption ? h("caption", {}, caption) : null, head, body));
}

export function empty(title, detail) {
  return h("div", { class: "empty" }, h("p", { class: "empty-title" }, title), detail ? h("p", {}, detail) : null);
}

export function code(text) {
  return h("pre", { class: "code" }, h("code", {}, text));
}
