// ConvexClient (WebSocket) from "convex/browser" against the chat example:
// onUpdate, mutation, query, ConvexError, errors, and a second client's
// mutation seen by the first client's subscription.
import { ConvexClient } from "convex/browser";
import { anyApi } from "convex/server";
import WebSocket from "ws";
import {
  attempt,
  consoleLines,
  deadline,
  deploymentUrl,
  describeError,
  fail,
  finish,
  waitFor,
} from "./lib.mjs";

const url = deploymentUrl();
deadline(45_000);

const api = anyApi;
const options = { webSocketConstructor: WebSocket, unsavedChangesWarning: false };
const a = new ConvexClient(url, options);
const b = new ConvexClient(url, options);
const out = {};

try {
  // A subscription: the first callback carries the current (empty) result.
  const updates = [];
  const updateErrors = [];
  const unsubscribe = a.onUpdate(
    api.messages.list,
    { channel: "general" },
    (value) => updates.push(value),
    (err) => updateErrors.push(describeError(err)),
  );
  await waitFor(() => updates.length >= 1, 10_000, "the first onUpdate");
  out.initial = updates[0];

  // A mutation returns the new id; by the time its promise resolves, the
  // subscription has seen the write (the releasing transition carries it).
  out.sentId = await a.mutation(api.messages.send, {
    channel: "general",
    author: "alice",
    body: "hello",
  });
  out.latestWhenMutationResolved = updates[updates.length - 1];
  await waitFor(
    () => updates.some((v) => v.some((m) => m._id === out.sentId)),
    10_000,
    "the subscription to see alice's message",
  );

  // A one-shot query.
  out.queried = await a.query(api.messages.list, { channel: "general" });

  // ConvexError with data, from a mutation.
  out.emptyName = await attempt(() => a.mutation(api.channels.create, { name: "   " }));
  out.created = await attempt(() => a.mutation(api.channels.create, { name: "general" }));
  out.taken = await attempt(() => a.mutation(api.channels.create, { name: "general" }));
  out.channels = await a.query(api.channels.list, {});

  // Ordinary errors: a missing function, bad mutation arguments (bad query
  // arguments: query_errors.mjs).
  out.missingQuery = await attempt(() => a.query(api.nope.missing, {}));
  out.missingMutation = await attempt(() => a.mutation(api.nope.missing, {}));
  out.badArgsMutation = await attempt(() =>
    a.mutation(api.messages.send, { channel: "general" }),
  );

  // A mutation from the second client reaches the first client's onUpdate.
  const before = updates.length;
  out.fromBId = await b.mutation(api.messages.send, {
    channel: "general",
    author: "bob",
    body: "from b",
  });
  await waitFor(
    () => updates.slice(before).some((v) => v.some((m) => m._id === out.fromBId)),
    10_000,
    "client a's onUpdate to see bob's message",
  );
  out.latestAfterB = updates[updates.length - 1];
  out.updates = updates;
  out.updateErrors = updateErrors;
  out.connectionState = a.connectionState();
  unsubscribe();

  await a.close();
  await b.close();
  out.closed = [a.closed, b.closed];
  out.console = consoleLines;
  finish(out);
} catch (e) {
  out.console = consoleLines;
  fail(e, out);
}
