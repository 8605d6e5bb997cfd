"""``reactive.client.Client`` against a real ``python -m reactive.server``.

Query, mutation, action, subscriptions fed by another client, errors (ConvexError with
data, FunctionError, unknown functions), numbers (Python int travels as int64), and a
server restart in the middle of a subscription and of a mutation.

Every wait is bounded (``asyncio.wait_for``); the server restarts run in a thread so the
clients' event loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from reactive.client import Client, ClientSubscription
from reactive.errors import ConvexError, FunctionError
from reactive.values import Int64

if TYPE_CHECKING:
    from conftest import ServerProcess


WAIT_S = 20.0  # generous bound for anything that should take milliseconds
RECONNECT_WAIT_S = 45.0  # a server restart plus the client's backoff

TYPES_APP = {
    "types.py": '''
    from reactive import ConvexError, action, mutation, query, v


    def _describe(value):
        if isinstance(value, dict):
            return {k: _describe(x) for k, x in value.items()}
        if isinstance(value, list):
            return [_describe(x) for x in value]
        return type(value).__name__


    @query
    async def describe(ctx, **args):
        """The Python type of every argument: int is int64, float is float64."""
        return {"types": _describe(args), "values": args}


    @query(args={"n": v.int64()}, returns=v.int64())
    async def next_int(ctx, n):
        return n + 1


    @mutation(args={"n": v.int64(), "x": v.float64()})
    async def store(ctx, n, x):
        return {"n": n, "x": x, "types": [type(n).__name__, type(x).__name__]}


    @action(
        args={"n": v.int64(), "label": v.string()},
        returns=v.object({"n": v.int64(), "type": v.string(), "label": v.string()}),
    )
    async def act(ctx, n, label):
        """An int64 argument: doubles it and reports the type it arrived as."""
        return {"n": n * 2, "type": type(n).__name__, "label": label}


    @action(args={"channel": v.string(), "body": v.string()})
    async def post(ctx, channel, body):
        """An action that writes through a mutation."""
        return await ctx.run_mutation("types:insert", {"channel": channel, "body": body})


    @mutation(args={"channel": v.string(), "body": v.string()})
    async def insert(ctx, channel, body):
        return await ctx.db.insert("notes", {"channel": channel, "body": body})


    @query(args={"channel": v.string()})
    async def notes(ctx, channel):
        return [n["body"] for n in await ctx.db.query("notes").collect() if n["channel"] == channel]


    @query(args={"code": v.string()})
    async def fail_query(ctx, code):
        raise ConvexError({"code": code, "n": 7})


    @query(args={})
    async def broken_query(ctx):
        raise KeyError("missing key")


    @mutation(args={})
    async def fail_mutation(ctx):
        raise ConvexError({"why": "no", "list": [1, 2.5, "three"]})


    @mutation(args={})
    async def broken_mutation(ctx):
        raise ValueError("boom")


    @action(args={})
    async def fail_action(ctx):
        raise ConvexError("plain string data")


    @action(args={})
    async def broken_action(ctx):
        raise RuntimeError("kaput")
    ''',
    "schema.py": """
    from reactive import define_schema, define_table, v

    schema = define_schema({"notes": define_table({"channel": v.string(), "body": v.string()})})
    """,
}


@pytest.fixture
def types_server(
    start_server: Callable[..., ServerProcess], make_app: Callable[[dict[str, str]], Path]
) -> ServerProcess:
    return start_server(make_app(TYPES_APP))


async def next_value(sub: ClientSubscription, timeout_s: float = WAIT_S) -> Any:
    return await asyncio.wait_for(sub.__anext__(), timeout_s)


async def until(sub: ClientSubscription, predicate: Callable[[Any], bool], timeout_s: float) -> Any:
    """Iterate the subscription until a value satisfies ``predicate`` (bounded)."""

    async def scan() -> Any:
        async for value in sub:
            if predicate(value):
                return value
        raise AssertionError("the subscription ended")

    return await asyncio.wait_for(scan(), timeout_s)


def bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [m["body"] for m in messages]


async def test_query_and_mutation(chat_server: ServerProcess) -> None:
    async with Client(chat_server.url) as client:
        assert await asyncio.wait_for(client.query("channels:list"), WAIT_S) == []
        channel_id = await asyncio.wait_for(
            client.mutation("channels:create", {"name": "general"}), WAIT_S
        )
        assert isinstance(channel_id, str) and channel_id
        sent = await asyncio.wait_for(
            client.mutation("messages:send", {"channel": "general", "author": "ann", "body": "hi"}),
            WAIT_S,
        )
        # The mutation returned after a transition at or after its commit: a query now
        # sees the write (spec §6.6).
        messages = await asyncio.wait_for(
            client.query("messages:list", {"channel": "general"}), WAIT_S
        )
        assert [m["_id"] for m in messages] == [sent]
        assert messages[0]["author"] == "ann"
        # Other spellings of the same path (spec §14).
        listed = await asyncio.wait_for(client.query("channels.js:list"), WAIT_S)
        assert [(c["_id"], c["name"]) for c in listed] == [(channel_id, "general")]


async def test_action_and_int64_arguments(types_server: ServerProcess) -> None:
    """Python int travels as int64 and float as float64, both ways."""
    async with Client(types_server.url) as client:
        described = await asyncio.wait_for(
            client.query(
                "types:describe",
                {"i": 5, "f": 2.5, "whole_float": 3.0, "big": 2**62, "nested": [1, {"x": 2.0}]},
            ),
            WAIT_S,
        )
        # An int64 argument arrives as a reactive.Int64 (an int that stays an int64).
        assert described["types"] == {
            "i": "Int64",
            "f": "float",
            "whole_float": "float",
            "big": "Int64",
            "nested": ["Int64", {"x": "float"}],
        }
        assert described["values"]["big"] == 2**62
        assert type(described["values"]["whole_float"]) is float
        # An int64 comes back as a reactive.Int64: an int that would go back as an int64.
        assert type(described["values"]["i"]) is Int64

        result = await asyncio.wait_for(client.action("types:act", {"n": 21, "label": "x"}), WAIT_S)
        assert result == {"n": 42, "type": "Int64", "label": "x"}
        assert type(result["n"]) is Int64
        assert await asyncio.wait_for(client.query("types:next_int", {"n": 41}), WAIT_S) == 42
        stored = await asyncio.wait_for(client.mutation("types:store", {"n": -7, "x": 0.5}), WAIT_S)
        assert stored == {"n": -7, "x": 0.5, "types": ["Int64", "float"]}

        # An action that writes through a mutation; a query sees the write.
        note_id = await asyncio.wait_for(
            client.action("types:post", {"channel": "c", "body": "via action"}), WAIT_S
        )
        assert isinstance(note_id, str)
        notes = await asyncio.wait_for(client.query("types:notes", {"channel": "c"}), WAIT_S)
        assert notes == ["via action"]

        # A float where v.int64() is wanted is refused (mutation and action).
        with pytest.raises(FunctionError, match="int64"):
            await asyncio.wait_for(client.mutation("types:store", {"n": 1.0, "x": 1.0}), WAIT_S)
        with pytest.raises(FunctionError, match="int64"):
            await asyncio.wait_for(client.action("types:act", {"n": 1.5, "label": "x"}), WAIT_S)


async def test_subscription_sees_another_clients_mutations(chat_server: ServerProcess) -> None:
    async with Client(chat_server.url) as reader, Client(chat_server.url) as writer:
        sub = reader.subscribe("messages:list", {"channel": "general"})
        assert await next_value(sub) == []
        first = await asyncio.wait_for(
            writer.mutation("messages:send", {"channel": "general", "author": "w", "body": "1"}),
            WAIT_S,
        )
        value = await until(sub, lambda v: len(v) == 1, WAIT_S)
        assert value[0]["_id"] == first
        second = await asyncio.wait_for(
            writer.mutation("messages:send", {"channel": "general", "author": "w", "body": "2"}),
            WAIT_S,
        )
        value = await until(sub, lambda v: len(v) == 2, WAIT_S)
        assert [m["_id"] for m in value] == [second, first]
        # A write elsewhere does not produce a new result for this query: the next
        # value is the one caused by the following write to this channel.
        await asyncio.wait_for(
            writer.mutation("messages:send", {"channel": "other", "author": "w", "body": "x"}),
            WAIT_S,
        )
        third = await asyncio.wait_for(
            writer.mutation("messages:send", {"channel": "general", "author": "w", "body": "3"}),
            WAIT_S,
        )
        value = await next_value(sub)
        assert [m["_id"] for m in value] == [third, second, first]
        sub.close()
        # A closed subscription ends its iteration.
        with pytest.raises(StopAsyncIteration):
            await next_value(sub)


async def test_several_subscriptions_as_async_iterators(chat_server: ServerProcess) -> None:
    async with (
        Client(chat_server.url) as client,
        Client(chat_server.url) as other,
        client.subscribe("messages:list", {"channel": "a"}) as sub_a,
        client.subscribe("channels:list") as sub_c,
    ):
        assert await next_value(sub_a) == []
        assert await next_value(sub_c) == []
        await asyncio.wait_for(other.mutation("channels:create", {"name": "a"}), WAIT_S)
        channels = await until(sub_c, lambda v: len(v) == 1, WAIT_S)
        assert channels[0]["name"] == "a"
        await asyncio.wait_for(
            other.mutation("messages:send", {"channel": "a", "author": "o", "body": "hey"}),
            WAIT_S,
        )
        assert bodies(await until(sub_a, lambda v: len(v) == 1, WAIT_S)) == ["hey"]
    # Leaving the block closed both subscriptions: their iterators have ended.
    with pytest.raises(StopAsyncIteration):
        await next_value(sub_a)


async def test_convex_error_data(types_server: ServerProcess, chat_server: ServerProcess) -> None:
    async with Client(chat_server.url) as chat:
        with pytest.raises(ConvexError) as info:
            await asyncio.wait_for(chat.mutation("channels:create", {"name": " "}), WAIT_S)
        assert info.value.data == {"code": "EMPTY_NAME", "message": "channel names cannot be empty"}
        assert "ConvexError" in str(info.value)
    async with Client(types_server.url) as client:
        with pytest.raises(ConvexError) as info:
            await asyncio.wait_for(client.mutation("types:fail_mutation"), WAIT_S)
        assert info.value.data == {"why": "no", "list": [1, 2.5, "three"]}
        # A computed int in the data reaches clients as a number.
        assert type(info.value.data["list"][0]) is float
        with pytest.raises(ConvexError) as info:
            await asyncio.wait_for(client.action("types:fail_action"), WAIT_S)
        assert info.value.data == "plain string data"
        with pytest.raises(ConvexError) as info:
            await asyncio.wait_for(client.query("types:fail_query", {"code": "Q"}), WAIT_S)
        assert info.value.data == {"code": "Q", "n": 7}
        # A subscription raises it from the iterator.
        sub = client.subscribe("types:fail_query", {"code": "S"})
        with pytest.raises(ConvexError) as info:
            await next_value(sub)
        assert info.value.data == {"code": "S", "n": 7}
        sub.close()


async def test_function_errors(types_server: ServerProcess) -> None:
    """Ordinary exceptions become FunctionError (not ConvexError), their text redacted
    (the server runs without --dev; the log keeps it under the request id)."""
    async with Client(types_server.url) as client:
        with pytest.raises(FunctionError) as info:
            await asyncio.wait_for(client.mutation("types:broken_mutation"), WAIT_S)
        assert not isinstance(info.value, ConvexError)
        assert "Server Error" in str(info.value) and "boom" not in str(info.value)
        with pytest.raises(FunctionError, match=r"\[Request ID: [0-9a-f]+\] Server Error") as info:
            await asyncio.wait_for(client.action("types:broken_action"), WAIT_S)
        assert "kaput" not in str(info.value)
        with pytest.raises(FunctionError, match="Server Error"):
            await asyncio.wait_for(client.query("types:broken_query"), WAIT_S)
        # The connection is still fine afterwards.
        assert await asyncio.wait_for(client.query("types:next_int", {"n": 1}), WAIT_S) == 2


async def test_unknown_functions(types_server: ServerProcess) -> None:
    async with Client(types_server.url) as client:
        with pytest.raises(FunctionError, match="nope:missing"):
            await asyncio.wait_for(client.query("nope:missing"), WAIT_S)
        with pytest.raises(FunctionError, match="nope:missing"):
            await asyncio.wait_for(client.mutation("nope:missing"), WAIT_S)
        with pytest.raises(FunctionError, match="nope:missing"):
            await asyncio.wait_for(client.action("nope:missing"), WAIT_S)
        # A function of the wrong kind is not found either.
        with pytest.raises(FunctionError, match="types:act"):
            await asyncio.wait_for(client.mutation("types:act", {"n": 1, "label": "x"}), WAIT_S)
        assert await asyncio.wait_for(client.query("types:next_int", {"n": 2}), WAIT_S) == 3


async def test_query_with_invalid_arguments_raises(types_server: ServerProcess) -> None:
    """A query whose arguments fail validation raises FunctionError (the server answers
    QueryFailed, spec §18.1 item 4), and other queries on the socket still get results.

    (Regression: the server used to retry computing the transition every 50 ms forever,
    never answering the query and stalling every later query on the socket.)
    """
    async with Client(types_server.url) as client:
        with pytest.raises(FunctionError, match="int64"):
            await asyncio.wait_for(client.query("types:next_int", {"n": 1.5}), 5.0)
        assert await asyncio.wait_for(client.query("types:next_int", {"n": 1}), 5.0) == 2


async def test_paginated_page_keeps_its_end_cursor(chat_server: ServerProcess) -> None:
    """A subscribed page re-runs up to the end cursor of its first run (its journal,
    spec §6.9 and §17): a last page (isDone) keeps growing as messages are appended and
    stays done, whatever numItems said.

    Minimal repro of the failure: subscribe to ``messages:page`` with numItems 2 over a
    channel with one message, then send two messages: the page stops at two items and
    reports isDone false (its re-runs ignore the journal of the first run).
    """
    opts = {"numItems": 2, "cursor": None}
    async with Client(chat_server.url) as client, Client(chat_server.url) as writer:

        async def send(body: str) -> None:
            await asyncio.wait_for(
                writer.mutation("messages:send", {"channel": "p", "author": "w", "body": body}),
                WAIT_S,
            )

        await send("m0")
        sub = client.subscribe("messages:page", {"channel": "p", "paginationOpts": opts})
        page = await next_value(sub)
        assert bodies(page["page"]) == ["m0"] and page["isDone"] is True
        await send("m1")
        page = await until(sub, lambda p: "m1" in bodies(p["page"]), WAIT_S)
        assert page["isDone"] is True, page
        await send("m2")
        page = await until(sub, lambda p: p["isDone"] or "m2" in bodies(p["page"]), 5.0)
        assert bodies(page["page"]) == ["m0", "m1", "m2"]
        sub.close()


async def test_restart_during_subscription(chat_server: ServerProcess) -> None:
    """The server restarts: the client reconnects with backoff, re-adds its query and
    sees a mutation made after the restart."""
    async with Client(chat_server.url, max_backoff_s=1.0) as client:
        sub = client.subscribe("messages:list", {"channel": "r"})
        assert await next_value(sub) == []
        before = await asyncio.wait_for(
            client.mutation("messages:send", {"channel": "r", "author": "a", "body": "before"}),
            WAIT_S,
        )
        assert [m["_id"] for m in await until(sub, lambda v: len(v) == 1, WAIT_S)] == [before]
        reconnects = client.reconnects

        await asyncio.to_thread(chat_server.restart)

        # Another client writes after the restart; the subscription sees it.
        async with Client(chat_server.url) as writer:
            after = await asyncio.wait_for(
                writer.mutation("messages:send", {"channel": "r", "author": "b", "body": "after"}),
                RECONNECT_WAIT_S,
            )
        value = await until(sub, lambda v: any(m["_id"] == after for m in v), RECONNECT_WAIT_S)
        assert [m["_id"] for m in value] == [after, before]
        assert client.reconnects > reconnects
        # The reconnected client works for calls too.
        messages = await asyncio.wait_for(
            client.query("messages:list", {"channel": "r"}), RECONNECT_WAIT_S
        )
        assert bodies(messages) == ["after", "before"]
        sub.close()


async def test_mutation_while_server_down_completes_after_restart(
    chat_server: ServerProcess,
) -> None:
    async with Client(chat_server.url, max_backoff_s=1.0) as client:
        sub = client.subscribe("messages:list", {"channel": "d"})
        assert await next_value(sub) == []

        await asyncio.to_thread(chat_server.stop)
        pending = asyncio.ensure_future(
            client.mutation("messages:send", {"channel": "d", "author": "a", "body": "offline"})
        )
        # Let the client notice the socket is gone and try (and fail) to reconnect.
        await asyncio.sleep(0.5)
        assert not pending.done()

        await asyncio.to_thread(chat_server.restart)
        sent = await asyncio.wait_for(pending, RECONNECT_WAIT_S)
        assert isinstance(sent, str)
        value = await until(sub, lambda v: len(v) >= 1, RECONNECT_WAIT_S)
        # Exactly once.
        assert [m["_id"] for m in value] == [sent]
        messages = await asyncio.wait_for(
            client.query("messages:list", {"channel": "d"}), RECONNECT_WAIT_S
        )
        assert [m["_id"] for m in messages] == [sent]
        sub.close()
