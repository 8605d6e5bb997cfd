// A query subscribed with arguments its validator rejects, over the WebSocket:
// the server must answer it with QueryFailed (spec §5.1, §18.1 item 4), and the
// socket must keep working for everything else meanwhile.
import { ConvexClient } from "convex/browser";
import { anyApi } from "convex/server";
import WebSocket from "ws";
import {
  consoleLines,
  deadline,
  deploymentUrl,
  describeError,
  fail,
  finish,
  settle,
  within,
} from "./lib.mjs";

const url = deploymentUrl();
deadline(45_000);

const api = anyApi;
const client = new ConvexClient(url, {
  webSocketConstructor: WebSocket,
  unsavedChangesWarning: false,
});
const out = {};
// How long to give the server for an answer it should send within milliseconds.
const ANSWER_MS = 3_000;

try {
  // A control: the socket works.
  out.before = await within(
    () => client.mutation(api.messages.send, { channel: "e", author: "eve", body: "one" }),
    ANSWER_MS,
  );

  // onUpdate with a bad argument: the error callback should fire.
  const values = [];
  const errors = [];
  const unsubscribe = client.onUpdate(
    api.messages.list,
    { channel: 7 },
    (value) => values.push(value),
    (err) => errors.push(describeError(err)),
  );
  out.answered = await settle(() => values.length + errors.length > 0, ANSWER_MS);
  out.values = values;
  out.errors = errors;

  // While that query is in the set, the same socket still serves a mutation.
  out.duringBadQuery = await within(
    () => client.mutation(api.messages.send, { channel: "e", author: "eve", body: "two" }),
    ANSWER_MS,
  );
  unsubscribe();

  // A one-shot query with a bad argument rejects.
  out.oneShot = await within(
    () => client.query(api.messages.list, { channel: 7 }),
    ANSWER_MS,
  );
  // And the client works afterwards.
  out.after = await within(
    () => client.query(api.messages.list, { channel: "e" }),
    ANSWER_MS,
  );
  await client.close();
  out.console = consoleLines;
  finish(out);
} catch (e) {
  out.console = consoleLines;
  fail(e, out);
}
