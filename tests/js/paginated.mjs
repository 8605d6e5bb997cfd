// Pagination with ConvexClient from "convex/browser" against messages:page:
// walking the pages of a one-shot query by continueCursor, then
// onPaginatedUpdate_experimental (loadMore, and a new message appearing live).
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
  settle,
  waitFor,
} from "./lib.mjs";

const url = deploymentUrl();
deadline(45_000);

const api = anyApi;
const client = new ConvexClient(url, {
  webSocketConstructor: WebSocket,
  unsavedChangesWarning: false,
});
const out = {};

try {
  const channel = "paged";
  out.sent = [];
  for (let i = 0; i < 5; i++) {
    out.sent.push(
      await client.mutation(api.messages.send, { channel, author: "pat", body: `m${i}` }),
    );
  }

  // One-shot queries, following continueCursor until isDone.
  out.pages = [];
  let cursor = null;
  for (let n = 0; n < 10; n++) {
    const page = await client.query(api.messages.page, {
      channel,
      paginationOpts: { numItems: 2, cursor },
    });
    out.pages.push({
      bodies: page.page.map((m) => m.body),
      isDone: page.isDone,
      continueCursorType: typeof page.continueCursor,
    });
    if (page.isDone) break;
    cursor = page.continueCursor;
  }

  // The paginated subscription: first page, loadMore, then a live insert.
  const results = [];
  const errors = [];
  const unsubscribe = client.onPaginatedUpdate_experimental(
    api.messages.page,
    { channel },
    { initialNumItems: 2 },
    (result) =>
      results.push({
        bodies: result.results.map((m) => m.body),
        status: result.status,
        loadMore: result.loadMore,
      }),
    (err) => errors.push(describeError(err)),
  );
  const last = () => results[results.length - 1];
  await waitFor(
    () => results.length > 0 && last().status !== "LoadingFirstPage",
    10_000,
    "the first page",
  );
  out.firstPage = { bodies: last().bodies, status: last().status };

  // Load everything that is left.
  for (let n = 0; n < 10 && last().status !== "Exhausted"; n++) {
    await waitFor(() => last().status === "CanLoadMore", 10_000, "CanLoadMore");
    const count = results.length;
    last().loadMore(2);
    await waitFor(
      () => results.length > count && last().status !== "LoadingMore",
      10_000,
      "the next page",
    );
  }
  out.afterLoadMore = { bodies: last().bodies, status: last().status };

  // New messages in the channel show up in the last page, which runs to the
  // end of the index (its journal holds the End cursor, spec §17): all of them,
  // with no loadMore, and the status stays Exhausted.
  for (const body of ["m5", "m6"]) {
    const count = results.length;
    const id = await client.mutation(api.messages.send, { channel, author: "pat", body });
    const seen = await settle(
      () => results.length > count && last().bodies.includes(body),
      3_000,
    );
    out[`after_${body}`] = { id, seen, bodies: last().bodies, status: last().status };
  }
  out.errors = errors;
  unsubscribe();

  // A bad pagination option is an error, not a hang.
  out.zeroItems = await attempt(() =>
    client.query(api.messages.page, { channel, paginationOpts: { numItems: 0, cursor: null } }),
  );
  await client.close();
  out.console = consoleLines;
  finish(out);
} catch (e) {
  out.console = consoleLines;
  fail(e, out);
}
