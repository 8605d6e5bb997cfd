"""Fan-out: 1,000 WebSocket clients subscribed to one query, one mutation.

One asyncio loop opens 1,000 sockets to a real ``python -m reactive.server`` with the
``websockets`` library and speaks raw protocol frames (spec §4, §5): ``Connect``, then a
``ModifyQuerySet`` adding the same query. After one mutation (from a 1,001st socket),
every client must receive a ``Transition`` carrying the new result, at a timestamp at or
after the mutation's commit (spec §6.6), starting from the version it had (spec §7).

The server shares one live query among all the sockets that watch it (ARCHITECTURE.md,
server/queries.py). The app's query counts its runs in a module-level counter that
another query reports, so the test checks without any timing that the query ran once
for the 1,000 subscriptions and once more for the mutation, not 1,000 times.
"""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets

if TYPE_CHECKING:
    from conftest import ServerProcess


CLIENTS = 1000
OPEN_CONCURRENCY = 64  # handshakes in flight at once
PHASE_TIMEOUT_S = 120.0  # bound on each phase (connect all, initial results, fan-out)

FANOUT_APP = {
    "fan.py": """
    from reactive import mutation, query, v

    # How many times `items` ran in this server process (module state, outside the
    # database, so reading it subscribes to nothing).
    RUNS = {"items": 0}


    @query(args={})
    async def items(ctx):
        RUNS["items"] += 1
        return [doc["label"] for doc in await ctx.db.query("items").collect()]


    @query(args={})
    async def runs(ctx):
        return float(RUNS["items"])


    @mutation(args={"label": v.string()})
    async def add(ctx, label):
        return await ctx.db.insert("items", {"label": label})
    """,
    "schema.py": """
    from reactive import define_schema, define_table, v

    schema = define_schema({"items": define_table({"label": v.string()})})
    """,
}


def decode_ts(text: str) -> int:
    (value,) = struct.unpack("<Q", base64.b64decode(text))
    return int(value)


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE for this process and the server it starts (the
    server is spawned after this autouse fixture, and inherits the limit)."""
    needed = 2 * CLIENTS + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed} needed for {CLIENTS} sockets")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def fanout_server(
    start_server: Callable[..., ServerProcess], make_app: Callable[[dict[str, str]], Path]
) -> ServerProcess:
    return start_server(make_app(FANOUT_APP))


class RawClient:
    """One socket speaking raw protocol frames, tracking its StateVersion."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.version = {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
        self.transitions = 0

    @classmethod
    async def connect(cls, url: str, deflate: bool = False, client_ts: int = 0) -> RawClient:
        ws = await websockets.connect(
            url,
            open_timeout=60,
            ping_interval=None,
            compression="deflate" if deflate else None,
            max_size=2**20,
        )
        client = cls(ws)
        await ws.send(
            json.dumps(
                {
                    "type": "Connect",
                    "sessionId": str(uuid.uuid4()),
                    "connectionCount": 0,
                    "lastCloseReason": "InitialConnect",
                    "clientTs": client_ts,
                }
            )
        )
        return client

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def modify(self, base: int, new: int, *modifications: dict[str, Any]) -> None:
        """Send a ModifyQuerySet from query-set version ``base`` to ``new``."""
        await self.send(
            {
                "type": "ModifyQuerySet",
                "baseVersion": base,
                "newVersion": new,
                "modifications": list(modifications),
            }
        )

    async def add_label(self, request_id: int, label: str) -> None:
        """Send the Mutation ``fan:add`` of ``label``."""
        await self.send(
            {
                "type": "Mutation",
                "requestId": request_id,
                "udfPath": "fan:add",
                "args": [{"label": label}],
            }
        )

    async def receive(self) -> dict[str, Any]:
        """The next message that is not a Ping; Transitions are checked and applied."""
        while True:
            message = json.loads(await self.ws.recv())
            if message["type"] == "Ping":
                continue
            if message["type"] == "Transition":
                assert message["startVersion"] == self.version, (message, self.version)
                self.version = message["endVersion"]
                self.transitions += 1
            return message

    async def result(self, query_id: int) -> tuple[Any, dict[str, Any]]:
        """Wait for a Transition carrying a result for ``query_id``: (value, transition)."""
        while True:
            message = await self.receive()
            if message["type"] != "Transition":
                continue
            for mod in message["modifications"]:
                if mod.get("queryId") != query_id:
                    continue
                assert mod["type"] == "QueryUpdated", mod
                return mod["value"], message

    async def close(self) -> None:
        await self.ws.close()


def add_items(query_id: int) -> dict[str, Any]:
    """The query-set modification adding ``fan:items`` as ``query_id``."""
    return {"type": "Add", "queryId": query_id, "udfPath": "fan:items", "args": [{}]}


async def open_clients(url: str, count: int) -> list[RawClient]:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one() -> RawClient:
        async with gate:
            return await RawClient.connect(url)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def runs(server: ServerProcess) -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.url}/api/query",
            json={"path": "fan:runs", "args": {}, "format": "convex_encoded_json"},
        )
    body = response.json()
    assert body["status"] == "success", body
    return int(body["value"])


async def test_one_mutation_reaches_1000_subscribers(fanout_server: ServerProcess) -> None:
    ws_url = fanout_server.url.replace("http://", "ws://") + "/api/sync"
    clients: list[RawClient] = []
    updates: list[asyncio.Future[tuple[Any, dict[str, Any]]]] = []
    try:
        clients = await asyncio.wait_for(open_clients(ws_url, CLIENTS), PHASE_TIMEOUT_S)
        assert len(clients) == CLIENTS

        # Every client subscribes to the same query and gets its current result.
        subscribe = {
            "type": "ModifyQuerySet",
            "baseVersion": 0,
            "newVersion": 1,
            "modifications": [{"type": "Add", "queryId": 0, "udfPath": "fan:items", "args": [{}]}],
        }

        async def initial(client: RawClient) -> Any:
            await client.send(subscribe)
            value, transition = await client.result(0)
            assert transition["endVersion"]["querySet"] == 1
            return value

        initial_values = await asyncio.wait_for(
            asyncio.gather(*(initial(c) for c in clients)), PHASE_TIMEOUT_S
        )
        assert initial_values == [[]] * CLIENTS
        # 1,000 subscriptions of one query at one snapshot: one run.
        runs_before = await runs(fanout_server)
        assert runs_before == 1

        # Each subscriber now waits for its next result.
        updates.extend(asyncio.ensure_future(c.result(0)) for c in clients)

        # One mutation, from another socket.
        writer = await RawClient.connect(ws_url)
        try:
            await writer.send(
                {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": []}
            )
            await writer.send(
                {
                    "type": "Mutation",
                    "requestId": 0,
                    "udfPath": "fan:add",
                    "args": [{"label": "hello"}],
                }
            )

            async def response() -> dict[str, Any]:
                while True:
                    message = await writer.receive()
                    if message["type"] == "MutationResponse":
                        return message

            answer = await asyncio.wait_for(response(), PHASE_TIMEOUT_S)
        finally:
            await writer.close()
        assert answer["success"] is True, answer
        commit_ts = decode_ts(answer["ts"])

        results = await asyncio.wait_for(asyncio.gather(*updates), PHASE_TIMEOUT_S)
        assert len(results) == CLIENTS
        for value, transition in results:
            assert value == ["hello"]
            assert decode_ts(transition["endVersion"]["ts"]) >= commit_ts
            assert transition["endVersion"]["querySet"] == 1

        # The mutation re-ran the shared query once, not once per subscriber.
        assert await runs(fanout_server) - runs_before == 1
    finally:
        for update in updates:
            update.cancel()
        await asyncio.gather(*updates, return_exceptions=True)
        await asyncio.wait_for(
            asyncio.gather(*(c.close() for c in clients), return_exceptions=True), 60
        )


def direct_transitions(server: ServerProcess) -> tuple[float, float]:
    """The server's (direct, queued) transition counts, from ``/metrics``."""
    text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("reactive_sync_transitions_direct", "reactive_sync_transitions_queued"):
            found[name] = float(value)
    return found["reactive_sync_transitions_direct"], found["reactive_sync_transitions_queued"]


async def test_fanout_path_frames_with_and_without_compression(
    fanout_server: ServerProcess,
) -> None:
    """Idle sockets get their transitions straight from the re-run (the fan-out path).

    Half the sockets negotiate permessage-deflate (websockets compresses the frame), half
    none (the server builds the frame itself). Every socket sees every commit in order,
    each Transition starting where the previous one ended (RawClient checks), and the
    server reports the transitions as written directly.
    """
    ws_url = fanout_server.url.replace("http://", "ws://") + "/api/sync"
    clients = [await RawClient.connect(ws_url, deflate=n % 2 == 1) for n in range(20)]
    writer = await RawClient.connect(ws_url)
    try:
        for client in clients:
            await client.modify(0, 1, add_items(7))
            assert await asyncio.wait_for(client.result(7), 30) == ([], ANY_TRANSITION)
        await writer.modify(0, 1)
        direct_before, _ = direct_transitions(fanout_server)
        labels: list[str] = []
        for n in range(5):
            labels.append(f"label-{n}")
            await writer.add_label(n, labels[-1])
            for client in clients:
                while True:
                    value, _ = await asyncio.wait_for(client.result(7), 30)
                    if value == labels:
                        break
                    assert value == labels[: len(value)], (value, labels)
        direct_after, queued = direct_transitions(fanout_server)
        # Each commit reached the 20 idle subscribers directly (a socket busy at that very
        # moment may take its task's path instead, so allow a few).
        assert direct_after - direct_before >= 5 * 20 - 10, (direct_before, direct_after, queued)
    finally:
        await writer.close()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def test_fanout_path_sockets_in_different_states_get_their_own_frames(
    fanout_server: ServerProcess,
) -> None:
    """Sockets that share a fan-out's memo of frames still get frames of their own state.

    The twelve sockets watch one shared query under three query ids; half of them watch
    it under a second id too and are one query-set version ahead; a quarter report a clock
    an hour slow. After each commit, every socket's Transition starts at its own last
    version (RawClient checks), ends at its own query-set version, carries its own clock
    skew, and updates exactly the ids it watches, each with the new result.
    """
    ws_url = fanout_server.url.replace("http://", "ws://") + "/api/sync"
    slow = [n % 4 == 0 for n in range(12)]
    hour_ago_ms = int(time.time() * 1000) - 3_600_000
    clients = [
        await RawClient.connect(ws_url, client_ts=hour_ago_ms if slow[n] else 0) for n in range(12)
    ]
    writer = await RawClient.connect(ws_url)

    watched: list[set[int]] = []
    try:
        for n, client in enumerate(clients):
            ids = {7 + n % 3}
            await client.modify(0, 1, add_items(7 + n % 3))
            await asyncio.wait_for(client.result(7 + n % 3), 30)
            if n % 2:
                ids.add(100)
                await client.modify(1, 2, add_items(100))
                await asyncio.wait_for(client.result(100), 30)
            watched.append(ids)
        await writer.modify(0, 1)
        labels: list[str] = []
        for n in range(3):
            labels.append(f"state-{n}")
            await writer.add_label(n, labels[-1])
            for client, ids, late in zip(clients, watched, slow, strict=True):
                while True:
                    message = await asyncio.wait_for(client.receive(), 30)
                    if message["type"] != "Transition" or not message["modifications"]:
                        continue
                    mods = message["modifications"]
                    assert message["endVersion"]["querySet"] == (2 if 100 in ids else 1)
                    skew = message["clientClockSkew"]
                    if late:
                        assert -3_700_000 < skew < -3_500_000, skew
                    else:
                        assert skew is None, skew
                    assert {mod["queryId"] for mod in mods} == ids, (mods, ids)
                    assert len(mods) == len(ids)
                    values = [mod["value"] for mod in mods]
                    assert all(v == values[0] for v in values)
                    if values[0] == labels:
                        break
                    assert values[0] == labels[: len(values[0])], (values, labels)
    finally:
        await writer.close()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def test_fanout_path_after_each_socket_did_something_else(
    fanout_server: ServerProcess,
) -> None:
    """A socket that took the fan-out path and then did something else leaves it.

    After a socket's first fan-out transition, the next ones skip the session's checks
    while nothing else happened to it. Here, between the writer's commits, each socket in
    turn does nothing, changes its query set (adds or removes a second query), or runs a
    mutation of its own. Every Transition must still start at that socket's last version
    (RawClient checks) and carry the commit, and a socket's own mutation its response.
    """
    ws_url = fanout_server.url.replace("http://", "ws://") + "/api/sync"
    clients = [await RawClient.connect(ws_url) for _ in range(6)]
    writer = await RawClient.connect(ws_url)
    query_set = [1] * len(clients)
    extra = [False] * len(clients)

    async def until_label(client: RawClient, label: str, response_for: int | None) -> None:
        responded = response_for is None
        while True:
            message = await asyncio.wait_for(client.receive(), 30)
            if message["type"] == "MutationResponse":
                assert message["requestId"] == response_for and message["success"], message
                responded = True
                continue
            if message["type"] != "Transition":
                continue
            for mod in message["modifications"]:
                if mod.get("queryId") == 7 and label in mod["value"] and responded:
                    return

    try:
        for client in clients:
            await client.modify(0, 1, add_items(7))
            await asyncio.wait_for(client.result(7), 30)
        await writer.modify(0, 1)
        request = 0
        for round_ in range(6):
            own: list[int | None] = [None] * len(clients)
            for n, client in enumerate(clients):
                action = (round_ + n) % 3
                if action == 1:  # change the query set
                    mod = {"type": "Remove", "queryId": 200} if extra[n] else add_items(200)
                    extra[n] = not extra[n]
                    await client.modify(query_set[n], query_set[n] + 1, mod)
                    query_set[n] += 1
                elif action == 2:  # a mutation of its own
                    request += 1
                    own[n] = request
                    await client.add_label(request, f"own-{n}-{round_}")
            label = f"round-{round_}"
            await writer.add_label(1000 + round_, label)
            for n, client in enumerate(clients):
                await until_label(client, label, own[n])
                assert client.version["querySet"] == query_set[n]
    finally:
        await writer.close()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


ANY_TRANSITION: Any = _Any()
