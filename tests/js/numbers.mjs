// The number policy as the official JS client sees it: for each value a function of
// tests/server/test_number_policy_clients.py returns, its JS type ("number", "bigint", ...),
// over the WebSocket client (query, subscription, mutation, action, ConvexError data) and
// the HTTP client.
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { ConvexError } from "convex/values";
import { anyApi } from "convex/server";
import { deadline, deploymentUrl, fail, finish, waitFor } from "./lib.mjs";

const url = deploymentUrl();
deadline(30_000);
const api = anyApi;

/** Each leaf of a value as [JS type, String(value)] (arrays and objects kept). */
function types(value) {
  if (Array.isArray(value)) return value.map(types);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, types(v)]));
  }
  return [typeof value, String(value)];
}

const out = {};
try {
  const client = new ConvexClient(url);
  await client.mutation(api.numbers.seed, {});
  out.table = types(await client.query(api.numbers.table, {}));
  out.declared = types(await client.query(api.numbers.declared, {}));
  out.echo = types(await client.query(api.numbers.echo, { n: 41n, f: 41 }));
  let latest;
  const unsubscribe = client.onUpdate(api.numbers.table, {}, (v) => {
    latest = v;
  });
  await waitFor(() => latest !== undefined, 10_000, "the subscription's first result");
  out.subscribed = types(latest);
  unsubscribe();
  out.mutation = types(await client.mutation(api.numbers.count, {}));
  out.action = types(await client.action(api.numbers.act, {}));
  try {
    await client.mutation(api.numbers.fail, {});
    out.fail = "no error";
  } catch (e) {
    out.fail = e instanceof ConvexError ? types(e.data) : String(e);
  }
  // A JS component written for Convex does arithmetic on a count.
  out.countPlusOne = (await client.query(api.numbers.table, {})).computed + 1;
  await client.close();

  const http = new ConvexHttpClient(url);
  out.httpTable = types(await http.query(api.numbers.table, {}));
  out.httpMutation = types(await http.mutation(api.numbers.count, {}));
  finish(out);
} catch (err) {
  fail(err, out);
}
