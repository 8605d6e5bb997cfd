"""Transaction forwarding: a follower runs a mutation, the writer validates and commits it.

In one process, a writer and a follower (``reactive.open(url, follow=True)``) on one
PostgreSQL or MariaDB database; the follower's transactions reach the writer through
:func:`reactive.cluster.node.commit_forwarded` (what the leader's ``/_cluster/commit``
endpoint runs; the HTTP hop is covered by test_cluster.py):

* A mutation called on the follower runs there (its handler sees the follower's snapshot)
  and commits through the writer; the follower's next read sees it (read your writes),
  and so does the writer.
* Read-modify-write mutations racing on one document through both processes: every
  acknowledged increment is there exactly once (conflicts are found on the writer, the
  loser runs again on its own process).
* A transaction sent twice (its first answer lost) conflicts with its own commit; the
  mutation, run again, is answered from its request record: one document, one answer.
* A mutation that creates a table (only the writer creates tables) is forwarded whole.
* A mutation that schedules a function wakes the writer's scheduler, which runs it.
* A malformed transaction is refused with ``InvalidQueryError``; the writer keeps serving.

Source: python/reactive/cluster/node.py, rust/core/src/forward.rs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.cluster.node import commit_forwarded
from reactive.db.database import Database
from reactive.db.system import SESSION_REQUESTS, ensure_system_tables
from reactive.errors import InvalidQueryError

MakeApp = Callable[[dict[str, str]], Path]

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "counters": define_table({"n": v.int64()}),
    "runs": define_table({"tag": v.string()}),
})
"""

APP = """
from reactive import internal_mutation, mutation, query


@mutation
async def make(ctx):
    return await ctx.db.insert("counters", {"n": 0})


@mutation
async def bump(ctx, id):
    doc = await ctx.db.get(id)
    await ctx.db.patch(id, {"n": doc["n"] + 1})
    return doc["n"] + 1


@query
async def get(ctx, id):
    return (await ctx.db.get(id))["n"]


@query
async def count(ctx):
    return len(await ctx.db.query("counters").collect())


@internal_mutation
async def record(ctx, tag):
    await ctx.db.insert("runs", {"tag": tag})


@mutation
async def later(ctx, tag):
    await ctx.scheduler.run_after(0, "counters:record", {"tag": tag})


@query
async def runs(ctx):
    return [d["tag"] for d in await ctx.db.query("runs").collect()]
"""

SCHEMALESS = """
from reactive import mutation, query


@mutation
async def put(ctx, table, n):
    return await ctx.db.insert(table, {"n": n})


@query
async def all(ctx, table):
    return [d["n"] for d in await ctx.db.query(table).collect()]
"""


async def _linked(writer: Database, follower: Database) -> Link:
    """Link the follower to the writer once it has the request records' table (the server
    creates it when it starts)."""
    await ensure_system_tables(writer)
    deadline = asyncio.get_running_loop().time() + 10
    wanted = {"by_request", "by_caller_request"}

    def ready() -> bool:
        for t in follower._engine.tables():
            if t["name"] == SESSION_REQUESTS:
                done = {i["name"] for i in t["indexes"] if i["ready_since"] is not None}
                return wanted <= done
        return False

    while not ready():
        assert asyncio.get_running_loop().time() < deadline, "the follower never saw the table"
        await follower.read_barrier()
        await asyncio.sleep(0.02)
    return Link(writer, follower)


class Link:
    """The follower's line to the writer, counting what crossed it."""

    def __init__(self, writer: Database, follower: Database) -> None:
        self.writer = writer
        self.commits: list[tuple[bytes, bool]] = []
        self.calls: list[str] = []
        self.resend_first = False
        follower._forward_commit = self.commit
        follower._forward = self.call

    async def commit(self, data: bytes, wake: bool) -> int | None:
        self.commits.append((data, wake))
        if self.resend_first and len(self.commits) == 1:
            # The first answer is lost: the same bytes are sent again, as the node does.
            await commit_forwarded(self.writer, data, wake)
            self.commits.append((data, wake))
        return await commit_forwarded(self.writer, data, wake)

    async def call(self, fn: Any, args: Any, identity: Any, request: Any, on_commit: Any) -> Any:
        self.calls.append(str(fn.path))
        return await self.writer._runner.run_mutation(fn, args, identity, request, on_commit)


@pytest.fixture
async def pair(
    server_url: str, make_app: MakeApp
) -> AsyncIterator[tuple[Database, Database, Link]]:
    app = make_app({"schema.py": SCHEMA, "counters.py": APP})
    async with (
        reactive.open(server_url, app=app) as writer,
        reactive.open(server_url, app=app, follow=True) as follower,
    ):
        yield writer, follower, await _linked(writer, follower)


async def test_a_follower_runs_the_mutation_and_the_writer_commits_it(
    pair: tuple[Database, Database, Link],
) -> None:
    writer, follower, link = pair
    doc = await follower.mutation("counters:make")
    assert len(link.commits) == 1 and link.calls == []
    # Read your writes on the follower, at once; the writer has it too.
    assert await follower.query("counters:get", id=doc) == 0
    assert await writer.query("counters:get", id=doc) == 0
    assert await follower.mutation("counters:bump", id=doc) == 1
    assert await follower.query("counters:get", id=doc) == 1
    assert follower.following and not writer.following


async def test_racing_increments_through_both_processes_all_count(
    pair: tuple[Database, Database, Link],
) -> None:
    writer, follower, link = pair
    doc = await writer.mutation("counters:make")
    await follower.wait_for_timestamp(writer.timestamp)
    results = await asyncio.gather(
        *((follower if i % 2 else writer).mutation("counters:bump", id=doc) for i in range(40))
    )
    # Each increment saw the one before it: the answers are 1..40, each once.
    assert sorted(results) == list(range(1, 41))
    assert await writer.query("counters:get", id=doc) == 40
    await follower.wait_for_timestamp(writer.timestamp)
    assert await follower.query("counters:get", id=doc) == 40
    assert len(link.commits) >= 20  # conflicts on the writer made some run again


async def test_a_transaction_sent_twice_lands_once(
    pair: tuple[Database, Database, Link],
) -> None:
    writer, follower, link = pair
    link.resend_first = True
    doc = await follower.mutation("counters:make")
    # The resend conflicted with the first send's commit; the mutation ran again, found its
    # request record and was answered from it (nothing more sent): the same id, one document.
    assert len(link.commits) == 2
    assert await writer.query("counters:count") == 1
    assert await writer.query("counters:get", id=doc) == 0


async def test_a_scheduled_function_runs_on_the_writer(
    pair: tuple[Database, Database, Link],
) -> None:
    writer, follower, link = pair
    await follower.mutation("counters:later", tag="from the follower")
    assert link.commits[-1][1] is True  # the writer's scheduler was woken
    deadline = asyncio.get_running_loop().time() + 10
    while await writer.query("counters:runs") != ["from the follower"]:
        assert asyncio.get_running_loop().time() < deadline, "the scheduled run never ran"
        await asyncio.sleep(0.02)


async def test_malformed_transactions_are_refused(
    pair: tuple[Database, Database, Link],
) -> None:
    writer, follower, _ = pair
    doc = await writer.mutation("counters:make")
    for bad in (b"", b"RFT1", b"RFT1" + bytes(8) + b"\xff\xff\xff\xff", b"junk" * 10):
        with pytest.raises(InvalidQueryError):
            await commit_forwarded(writer, bad, False)
    assert await writer.mutation("counters:bump", id=doc) == 1
    await follower.wait_for_timestamp(writer.timestamp)
    assert await follower.mutation("counters:bump", id=doc) == 2


async def test_a_mutation_creating_a_table_is_forwarded_whole(
    server_url: str, make_app: MakeApp
) -> None:
    app = make_app({"things.py": SCHEMALESS})
    async with (
        reactive.open(server_url, app=app) as writer,
        reactive.open(server_url, app=app, follow=True) as follower,
    ):
        link = await _linked(writer, follower)
        await follower.mutation("things:put", table="fresh", n=1)
        assert link.calls == ["things:put"] and link.commits == []
        # Once the table exists, the follower runs mutations on it itself.
        await follower.wait_for_timestamp(writer.timestamp)
        await follower.mutation("things:put", table="fresh", n=2)
        assert link.calls == ["things:put"] and len(link.commits) == 1
        assert sorted(await follower.query("things:all", table="fresh")) == [1, 2]
        assert sorted(await writer.query("things:all", table="fresh")) == [1, 2]


async def test_a_refused_request_fails_at_once_and_a_dead_leader_in_time() -> None:
    """A leader that answers 400 or 413 would answer it again: the follower says so at once
    (no retries until the forward time-out); a leader that does not answer is retried until
    ``forward_timeout_s``, then ``ClusterUnavailableError``."""
    import time

    from reactive.cluster.node import ClusterNode, ClusterUnavailableError
    from reactive.errors import PersistenceError

    class Following:
        following = True

    node = ClusterNode(
        "postgresql://x@127.0.0.1:9/x", b"k" * 16, "http://127.0.0.1:1", forward_timeout_s=0.5
    )
    node.db = Following()  # type: ignore[assignment]
    sent: list[str] = []

    async def leader(refresh: bool) -> str:
        return "http://127.0.0.1:2"

    async def refuse(url: str, body: bytes, header: str, content_type: str) -> Any:
        sent.append(url)
        return 400, None, b'{"code":"BadRequest"}', None

    node._leader = leader  # type: ignore[method-assign]
    node._post = refuse  # type: ignore[method-assign]
    with pytest.raises(PersistenceError, match="HTTP 400"):
        await node.commit(b"RFT1", False)
    assert len(sent) == 1

    async def unreachable(url: str, body: bytes, header: str, content_type: str) -> Any:
        sent.append(url)
        return 0, None, b"", "ClientConnectorError: refused"

    node._post = unreachable  # type: ignore[method-assign]
    started = time.monotonic()
    with pytest.raises(ClusterUnavailableError, match="refused"):
        await node.commit(b"RFT1", False)
    assert 0.5 <= time.monotonic() - started < 5
    assert len(sent) > 3


def test_cluster_request_signatures_and_replays() -> None:
    """A signed request verifies once (a replay of its nonce is refused), not with another
    key, another path or another body; nonces expire after twice the clock skew, and the
    cache keeps at most its bound."""
    import time

    from reactive.cluster.protocol import (
        CLOCK_SKEW_S,
        NonceCache,
        sign_reply,
        sign_request,
        verify_reply,
        verify_request,
    )

    key, body = b"k" * 16, b"\x00RFT1"
    header, nonce = sign_request(key, "POST", "/_cluster/commit", body)
    nonces = NonceCache()
    assert verify_request(b"x" * 16, header, "POST", "/_cluster/commit", body, nonces) is None
    assert verify_request(key, header, "POST", "/_cluster/call", body, nonces) is None
    assert verify_request(key, header, "POST", "/_cluster/commit", body + b"!", nonces) is None
    assert verify_request(key, header, "POST", "/_cluster/commit", body, nonces) == nonce
    assert verify_request(key, header, "POST", "/_cluster/commit", body, nonces) is None
    reply = sign_reply(key, nonce, b"{}")
    assert verify_reply(key, nonce, reply, b"{}") and not verify_reply(key, nonce, reply, b"[]")
    now = time.time()
    cache = NonceCache(max_entries=1000)
    assert cache.add("a", now) and not cache.add("a", now + 1)
    assert cache.add("a", now + 2 * CLOCK_SKEW_S + 1)  # expired: forgotten
    for i in range(5000):
        assert cache.add(f"n{i}", now + 100)
    assert len(cache._seen) == 1000 and not cache.add("n4999", now + 100)


async def test_made_up_sessions_are_pruned_early(
    pair: tuple[Database, Database, Link], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower records each mutation it runs under a made-up session id; those records
    only answer its own resend, so the writer prunes them after minutes, not the hour a
    client's records are kept."""
    from reactive.db.system import (
        FORWARDED_SESSION_PREFIX,
        SESSION_REQUESTS,
        prune_session_requests,
    )

    writer, follower, _ = pair
    made = [await follower.mutation("counters:make") for _ in range(3)]
    fn = writer._runner.resolve("counters:make", "mutation", internal_ok=True)
    await writer._runner.run_mutation(fn, {}, None, ("a-client-session", 1))

    def sessions() -> list[str]:
        txn = writer._engine.begin(True)
        docs, _, _ = txn.scan(
            SESSION_REQUESTS, "by_creation_time", [], "asc", 100, None, None, None, True
        )
        return sorted(str(d["session"]) for d in docs)

    before = sessions()
    assert len(before) == 4 and "a-client-session" in before
    assert all(s.startswith(FORWARDED_SESSION_PREFIX) for s in before if s != "a-client-session")
    assert await prune_session_requests(writer) == 0  # all recent
    assert await prune_session_requests(writer, forwarded_retention_s=-1) == 3
    assert sessions() == ["a-client-session"]
    # A client's record goes once the hour has passed.
    from reactive.db import system

    monkeypatch.setattr(system, "SESSION_REQUEST_RETENTION_S", -1.0)
    assert await prune_session_requests(writer) == 1
    assert sessions() == []
    assert len(made) == 3 and await writer.query("counters:count") == 4
