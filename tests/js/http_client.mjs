// ConvexHttpClient from "convex/browser" (plain HTTP: /api/query, /api/mutation,
// /api/query_ts + /api/query_at_ts) against the chat example.
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { attempt, consoleLines, deadline, deploymentUrl, fail, finish } from "./lib.mjs";

const url = deploymentUrl();
deadline(30_000);

const api = anyApi;
const out = {};

try {
  const client = new ConvexHttpClient(url);
  out.initialChannels = await client.query(api.channels.list, {});
  out.createdId = await client.mutation(api.channels.create, { name: "http" });
  out.channels = await client.query(api.channels.list, {});
  out.emptyName = await attempt(() => client.mutation(api.channels.create, { name: "" }));
  out.taken = await attempt(() => client.mutation(api.channels.create, { name: "http" }));
  out.sentId = await client.mutation(api.messages.send, {
    channel: "http",
    author: "carol",
    body: "over http",
  });
  out.messages = await client.query(api.messages.list, { channel: "http" });
  out.consistent = await client.consistentQuery(api.messages.list, { channel: "http" });
  out.missingQuery = await attempt(() => client.query(api.nope.missing, {}));
  out.badArgsQuery = await attempt(() => client.query(api.messages.list, { channel: 7 }));
  out.missingMutation = await attempt(() => client.mutation(api.nope.missing, {}));
  // A deployment URL with a trailing slash makes "…//api/query" (spec §2.1).
  out.trailingSlash = await attempt(() =>
    new ConvexHttpClient(url + "/").query(api.channels.list, {}),
  );
  out.console = consoleLines;
  finish(out);
} catch (e) {
  out.console = consoleLines;
  fail(e, out);
}
