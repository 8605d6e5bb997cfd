// ConvexClient optimistic updates against the chat example: while a mutation is
// pending the client shows its optimistic row; once the server's transition
// carries the real row, the optimistic one must be gone in the same update. The
// server must send each MutationResponse before (or with) the first transition
// that holds the mutation's write, or the client shows both rows at once.
import { ConvexClient } from "convex/browser";
import { anyApi } from "convex/server";
import WebSocket from "ws";
import { deadline, deploymentUrl, describeError, fail, finish, waitFor } from "./lib.mjs";

const url = deploymentUrl();
deadline(60_000);

const api = anyApi;
const options = { webSocketConstructor: WebSocket, unsavedChangesWarning: false };
const client = new ConvexClient(url, options);
const other = new ConvexClient(url, options);
const ROUNDS = 40;
const channel = "optimistic";

try {
  const updates = [];
  const errors = [];
  client.onUpdate(
    api.messages.list,
    { channel },
    (value) => updates.push(value),
    (err) => errors.push(describeError(err)),
  );
  await waitFor(() => updates.length >= 1, 10_000, "the first onUpdate");
  let both = [];
  let optimisticSeen = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const body = `m${round}`;
    // Another client writes the same channel meanwhile: more transitions in flight.
    const noise = other.mutation(api.messages.send, { channel, author: "noise", body: `n${round}` });
    await client.mutation(
      api.messages.send,
      { channel, author: "me", body },
      {
        optimisticUpdate: (store, args) => {
          const current = store.getQuery(api.messages.list, { channel });
          if (current === undefined) return;
          store.setQuery(api.messages.list, { channel }, [
            { _id: `optimistic-${args.body}`, _creationTime: 0, ...args },
            ...current,
          ]);
        },
      },
    );
    await noise;
  }
  for (const value of updates) {
    const optimistic = value.filter((m) => String(m._id).startsWith("optimistic-"));
    optimisticSeen += optimistic.length > 0 ? 1 : 0;
    for (const o of optimistic) {
      if (value.some((m) => !String(m._id).startsWith("optimistic-") && m.body === o.body)) {
        both.push(o.body);
      }
    }
  }
  const final = updates[updates.length - 1];
  await client.close();
  await other.close();
  finish({
    rounds: ROUNDS,
    updates: updates.length,
    optimisticSeen,
    both,
    errors,
    finalHasLast: final.some((m) => m.author === "me" && m.body === `m${ROUNDS - 1}`),
    finalOptimistic: final.filter((m) => String(m._id).startsWith("optimistic-")).length,
  });
} catch (err) {
  fail(err);
}
