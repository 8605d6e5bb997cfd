// Shared helpers for the scripts in this directory.
//
// Each script is run as `node <script>.mjs <deployment url>` by
// tests/server/test_official_js_client.py. It prints exactly one JSON object on
// stdout (the observations the Python test asserts on) and exits by itself:
// 0 when it got that far, 1 with {"error": ...} otherwise. A hard deadline makes
// sure it never hangs, whatever the server does.

import { ConvexError } from "convex/values";

/**
 * Everything the scripts' code and the Convex client write with console.*
 * (for example the function log lines the client forwards as
 * "[CONVEX M(messages:send)] [LOG] ..."), as [method, text] pairs. They go to
 * stderr too, so stdout carries only the final JSON report.
 */
export const consoleLines = [];
for (const method of ["log", "info", "warn", "error", "debug"]) {
  console[method] = (...args) => {
    const text = args
      .map((a) => (typeof a === "string" ? a : safeStringify(a)))
      .join(" ");
    consoleLines.push([method, text]);
    process.stderr.write(`[console.${method}] ${text}\n`);
  };
}

function safeStringify(value) {
  if (value instanceof Error) return String(value.stack || value);
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** The deployment URL given on the command line. */
export function deploymentUrl() {
  const url = process.argv[2];
  if (!url) {
    console.error(`usage: node ${process.argv[1]} <deployment url>`);
    process.exit(2);
  }
  return url;
}

/** Exit with an error report if the script is still running after `ms`. */
export function deadline(ms) {
  const timer = setTimeout(() => {
    fail(new Error(`timed out after ${ms} ms`));
  }, ms);
  timer.unref();
}

/** Print the result as JSON and exit 0. */
export function finish(result) {
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
}

/** Print an error report as JSON and exit 1. */
export function fail(err, partial = {}) {
  const report = {
    ...partial,
    error: String(err && err.stack ? err.stack : err),
  };
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(1));
}

/** Wait until `predicate()` is true (checked every 10 ms), at most `ms`. */
export async function waitFor(predicate, ms, what) {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > ms) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Like waitFor, but returns false instead of throwing when `ms` runs out, for
 * waits whose outcome the Python test asserts on.
 */
export async function settle(predicate, ms) {
  try {
    await waitFor(predicate, ms, "");
    return true;
  } catch {
    return false;
  }
}

/**
 * Run `fn` for at most `ms`: {settled: false} if its promise is still pending
 * then, otherwise attempt()'s {settled: true, ok, value | error}.
 */
export async function within(fn, ms) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ settled: false }), ms);
  });
  const result = await Promise.race([
    attempt(fn).then((r) => ({ settled: true, ...r })),
    timeout,
  ]);
  clearTimeout(timer);
  return result;
}

/** What a caught error looks like, in JSON. */
export function describeError(e) {
  return {
    name: e && e.name,
    isConvexError: e instanceof ConvexError,
    data: e && "data" in e ? e.data : null,
    message: e && e.message,
  };
}

/** Run `fn`, returning {ok: true, value} or {ok: false, error: describeError(e)}. */
export async function attempt(fn) {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    return { ok: false, error: describeError(e) };
  }
}
