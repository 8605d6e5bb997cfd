// Convex values: decoding Convex JSON ($integer, $float, $bytes) and showing values.

export class Bytes {
  constructor(base64) {
    this.base64 = base64;
  }
  get length() {
    const s = this.base64.replace(/=+$/, "");
    return Math.floor((s.length * 3) / 4);
  }
}

function eightBytes(base64) {
  const raw = atob(base64);
  const view = new DataView(new ArrayBuffer(8));
  for (let i = 0; i < 8; i++) view.setUint8(i, raw.charCodeAt(i) || 0);
  return view;
}

function base64Of(view) {
  let raw = "";
  for (let i = 0; i < view.byteLength; i++) raw += String.fromCharCode(view.getUint8(i));
  return btoa(raw);
}

/** JSON text of a value in Convex JSON (int64 as {"$integer"}, bytes as {"$bytes"}). */
export function toConvexText(value, indent = 2) {
  return JSON.stringify(
    value,
    (key, v) => {
      if (typeof v === "bigint") {
        const view = new DataView(new ArrayBuffer(8));
        view.setBigInt64(0, v, true);
        return { $integer: base64Of(view) };
      }
      if (v instanceof Bytes) return { $bytes: v.base64 };
      return v;
    },
    indent,
  );
}

/** A value in Convex JSON as a JS value (int64 -> BigInt, bytes -> Bytes). */
export function fromConvex(v) {
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) return v.map(fromConvex);
  const keys = Object.keys(v);
  if (keys.length === 1) {
    const [k] = keys;
    if (k === "$integer" && typeof v.$integer === "string") {
      return eightBytes(v.$integer).getBigInt64(0, true);
    }
    if (k === "$float" && typeof v.$float === "string") {
      return eightBytes(v.$float).getFloat64(0, true);
    }
    if (k === "$bytes" && typeof v.$bytes === "string") return new Bytes(v.$bytes);
  }
  const out = {};
  for (const key of keys) out[key] = fromConvex(v[key]);
  return out;
}

function showNumber(n) {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "Infinity";
  if (n === -Infinity) return "-Infinity";
  if (Object.is(n, -0)) return "-0";
  return String(n);
}

/**
 * A value as text, JSON-like: int64 as `12n`, bytes as `bytes("base64")`.
 * With `indent`, nested objects and arrays take one line per member.
 */
export function show(value, indent = 0, depth = 0) {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "number") return showNumber(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "boolean") return String(value);
  if (value instanceof Bytes) return `bytes(${JSON.stringify(value.base64)})`;
  const pad = indent ? "\n" + " ".repeat(indent * (depth + 1)) : "";
  const end = indent ? "\n" + " ".repeat(indent * depth) : "";
  const sep = indent ? "," : ", ";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[${pad}${value.map((x) => show(x, indent, depth + 1)).join(sep + pad)}${end}]`;
  }
  const keys = Object.keys(value);
  if (!keys.length) return "{}";
  const members = keys.map((k) => `${JSON.stringify(k)}: ${show(value[k], indent, depth + 1)}`);
  if (!indent) return `{ ${members.join(sep)} }`;
  return `{${pad}${members.join(sep + pad)}${end}}`;
}

/** A short one-line form of a value for a table cell. */
export function cell(value, max = 120) {
  const text = typeof value === "string" ? value : show(value);
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/** Milliseconds since the epoch as local date and time. */
export function when(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  const d = new Date(ms);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}
