"""Full-text search: BM25 order, prefix on the last term, filters, limits, the snapshot and
the transaction's own writes, reactivity (re-runs counted), conflicts, rebuild at open and
the index check."""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.errors import IndexNotFoundError, InvalidQueryError, WriteConflict

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "messages": define_table(
        {"channel": v.string(), "body": v.string(), "n": v.optional(v.float64())}
    ).search_index("search_body", search_field="body", filter_fields=["channel", "n"]),
    "other": define_table({"body": v.string()}),
})
"""

FUNCS = """
from reactive import mutation, query, v


@query(args={"text": v.string(), "channel": v.optional(v.string()), "n": v.optional(v.int64())})
async def search(ctx, text, channel=None, n=10):
    def build(q):
        q = q.search("body", text)
        return q.eq("channel", channel) if channel is not None else q
    docs = await ctx.db.query("messages").with_search_index("search_body", build).take(n)
    return [m["body"] for m in docs]


@query(args={"text": v.string(), "n": v.float64()})
async def search_n(ctx, text, n):
    docs = await ctx.db.query("messages").with_search_index(
        "search_body", lambda q: q.search("body", text).eq("n", n)).collect()
    return [m["body"] for m in docs]


@query(args={"text": v.string()})
async def search_long(ctx, text):
    docs = await ctx.db.query("messages").with_search_index(
        "search_body", lambda q: q.search("body", text)
    ).filter(lambda q: q.gt(q.field("body"), "m")).take(3)
    return [m["body"] for m in docs]


@mutation(args={"channel": v.string(), "body": v.string()})
async def send(ctx, channel, body):
    return await ctx.db.insert("messages", {"channel": channel, "body": body})


@mutation(args={"body": v.string()})
async def send_other(ctx, body):
    return await ctx.db.insert("other", {"body": body})


@mutation(args={"channel": v.string(), "bodies": v.array(v.string())})
async def send_many(ctx, channel, bodies):
    return [await ctx.db.insert("messages", {"channel": channel, "body": b}) for b in bodies]


@mutation(args={"id": v.string(), "fields": v.any()})
async def patch(ctx, id, fields):
    await ctx.db.patch(id, fields)


@mutation(args={"id": v.string()})
async def delete(ctx, id):
    await ctx.db.delete(id)


@mutation(args={"body": v.string(), "text": v.string()})
async def insert_then_search(ctx, body, text):
    await ctx.db.insert("messages", {"channel": "a", "body": body})
    docs = await ctx.db.query("messages").with_search_index(
        "search_body", lambda q: q.search("body", text)).collect()
    return [m["body"] for m in docs]


@mutation(args={"id": v.string(), "text": v.string()})
async def delete_then_search(ctx, id, text):
    await ctx.db.delete(id)
    docs = await ctx.db.query("messages").with_search_index(
        "search_body", lambda q: q.search("body", text)).collect()
    return [m["body"] for m in docs]


@query(args={"opts": v.any()})
async def page(ctx, opts):
    return await ctx.db.query("messages").with_search_index(
        "search_body", lambda q: q.search("body", "common")).paginate(opts)


@query(args={"text": v.string(), "filters": v.any()})
async def raw(ctx, text, filters):
    def build(q):
        q = q.search("body", text)
        for f, x in filters:
            q = q.eq(f, x)
        return q
    return await ctx.db.query("messages").with_search_index("search_body", build).take(5)
"""

QUIET_S = 0.3


@pytest.fixture
def app(make_app: Any) -> Path:
    return make_app({"schema.py": SCHEMA, "f.py": FUNCS})


@pytest.fixture
async def db(db_url: str, app: Path) -> Any:
    database = await reactive.open(db_url, app=app)
    try:
        yield database
    finally:
        await database.close()


def terms(text: str) -> list[str]:
    return [t.lower() for t in re.split(r"[^0-9A-Za-z]+", text) if t]


def bm25_order(bodies: list[str], query: list[str]) -> list[str]:
    """Reference BM25 (k1=1.2, b=0.75; Lucene's idf) over exact terms, ties by text."""
    docs = [terms(b) for b in bodies]
    n = len(docs)
    avg = sum(len(d) for d in docs) / n
    scored = []
    for body, d in zip(bodies, docs, strict=True):
        counts = Counter(d)
        score = 0.0
        for t in set(query):
            df = sum(1 for x in docs if t in x)
            if counts[t]:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                tf = counts[t]
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(d) / avg))
        if score > 0:
            scored.append((score, body))
    return [b for _, b in sorted(scored, key=lambda x: -x[0])]


async def search(db: Any, text: str, **kw: Any) -> list[str]:
    result: list[str] = await db.query("f:search", {"text": text, **kw})
    return result


async def test_relevance_order_matches_bm25(db: Any) -> None:
    bodies = [
        "the quick brown fox",
        "the lazy dog sleeps all day long in the sun",
        "quick quick quick fox",
        "a fox and a dog",
        "nothing to see here",
        "dogs are not dog",
    ]
    await db.mutation("f:send_many", {"channel": "a", "bodies": bodies})
    # The last term is also a prefix: "dog" finds "dogs are not dog" twice over.
    assert set(await search(db, "dog")) == {bodies[1], bodies[3], bodies[5]}
    assert set(await search(db, "quick dog")) == {
        bodies[0],
        bodies[1],
        bodies[2],
        bodies[3],
        bodies[5],
    }
    # Terms that are no other word's prefix: the order is BM25's, before and after the
    # recent changes move into the tantivy base.
    for _ in range(2):
        assert await search(db, "quick fox") == bm25_order(bodies, ["quick", "fox"])
        assert await search(db, "lazy sun") == bm25_order(bodies, ["lazy", "sun"])
        await asyncio.to_thread(db._engine.flush_search_indexes)


async def test_prefix_on_last_term_only(db: Any) -> None:
    await db.mutation(
        "f:send_many", {"channel": "a", "bodies": ["hello world", "help wanted", "shell"]}
    )
    assert sorted(await search(db, "hel")) == ["hello world", "help wanted"]
    assert await search(db, "hel world") == ["hello world"]  # "hel" is not a prefix here
    assert await search(db, "wor") == ["hello world"]
    assert await search(db, "HELLO, Wor!") == ["hello world"]
    assert await search(db, "") == []
    assert await search(db, " ,;") == []


async def test_filters(db: Any) -> None:
    await db.mutation("f:send_many", {"channel": "a", "bodies": ["red apple", "green apple"]})
    await db.mutation("f:send_many", {"channel": "b", "bodies": ["apple pie"]})
    assert sorted(await search(db, "apple", channel="a")) == ["green apple", "red apple"]
    assert await search(db, "apple", channel="b") == ["apple pie"]
    assert await search(db, "apple", channel="c") == []
    assert len(await search(db, "apple")) == 3
    # A number filter: an int literal on a float64 field matches the stored float.
    ids = await db.mutation("f:send_many", {"channel": "n", "bodies": ["numbered apple"]})
    await db.mutation("f:patch", {"id": ids[0], "fields": {"n": 3.0}})
    assert await db.query("f:search_n", {"text": "apple", "n": 3}) == ["numbered apple"]


async def test_post_filter_and_take(db: Any) -> None:
    await db.mutation("f:send_many", {"channel": "a", "bodies": [f"word {c}" for c in "abcxyz"]})
    got = await db.query("f:search_long", {"text": "word"})
    assert len(got) == 3 and all(b > "m" for b in got)


async def test_limits_and_bad_searches(db: Any) -> None:
    await db.mutation("f:send", {"channel": "a", "body": "x"})
    many = " ".join(f"t{i}" for i in range(17))
    with pytest.raises(InvalidQueryError, match="at most 16"):
        await search(db, many)
    assert await search(db, " ".join(f"t{i}" for i in range(16))) == []
    with pytest.raises(InvalidQueryError, match=r"1024|1,024"):
        await search(db, "x", n=1025)
    with pytest.raises(InvalidQueryError, match="not one of its filter fields"):
        await db.query("f:raw", {"text": "x", "filters": [["body", "x"]]})
    with pytest.raises(InvalidQueryError, match="given twice"):
        await db.query("f:raw", {"text": "x", "filters": [["channel", "a"], ["channel", "b"]]})
    with pytest.raises(InvalidQueryError, match="at most 8"):
        await db.query("f:raw", {"text": "x", "filters": [["channel", "a"]] * 9})

    async def wrong_field(ctx: Any) -> Any:
        return (
            await ctx.db.query("messages")
            .with_search_index("search_body", lambda q: q.search("channel", "x"))
            .take(1)
        )

    async def no_index(ctx: Any) -> Any:
        return (
            await ctx.db.query("messages")
            .with_search_index("nope", lambda q: q.search("body", "x"))
            .take(1)
        )

    txn_db = db
    with pytest.raises(InvalidQueryError, match="searches 'body'"):
        await _run_inline(txn_db, wrong_field)
    with pytest.raises(IndexNotFoundError):
        await _run_inline(txn_db, no_index)
    # The database keeps serving.
    assert await search(db, "x") == ["x"]


async def _run_inline(db: Any, fn: Any) -> Any:
    from reactive.db.context import DatabaseReader

    txn = db._engine.begin(True)
    reader = DatabaseReader(txn, db)

    class Ctx:
        pass

    ctx = Ctx()
    ctx.db = reader  # type: ignore[attr-defined]
    return await fn(ctx)


async def test_own_writes_and_snapshot(db: Any) -> None:
    await db.mutation("f:send", {"channel": "a", "body": "alpha one"})
    got = await db.mutation("f:insert_then_search", {"body": "alpha two", "text": "alpha"})
    assert sorted(got) == ["alpha one", "alpha two"]
    ids = await db.mutation("f:send_many", {"channel": "a", "bodies": ["beta"]})
    assert await db.mutation("f:delete_then_search", {"id": ids[0], "text": "beta"}) == []
    # A point-in-time read sees the index as it was.
    before = db.timestamp
    await db.mutation("f:send", {"channel": "a", "body": "alpha three"})
    assert len(await search(db, "alpha")) == 3
    old = await db.query("f:search", {"text": "alpha"}).at(before)
    assert sorted(old) == ["alpha one", "alpha two"]


async def test_updates_deletes_and_flush(db: Any) -> None:
    ids = await db.mutation(
        "f:send_many", {"channel": "a", "bodies": [f"doc {i} common" for i in range(50)]}
    )
    assert len(await search(db, "common", n=100)) == 50
    for id_ in ids[:10]:
        await db.mutation("f:patch", {"id": id_, "fields": {"body": "changed text"}})
    for id_ in ids[10:20]:
        await db.mutation("f:delete", {"id": id_})
    before = sorted(await search(db, "common", n=100))
    changed = sorted(await search(db, "changed", n=100))
    assert len(before) == 30 and len(changed) == 10
    await asyncio.to_thread(db._engine.flush_search_indexes)
    assert sorted(await search(db, "common", n=100)) == before
    assert sorted(await search(db, "changed", n=100)) == changed
    assert await asyncio.to_thread(db._engine.verify_search_index, "messages", "search_body") == []


async def test_rebuilt_at_open(db_url: str, app: Path) -> None:
    async with reactive.open(db_url, app=app) as db:
        await db.mutation(
            "f:send_many", {"channel": "a", "bodies": ["persist me", "and me too", "not"]}
        )
        ids = await db.mutation("f:send_many", {"channel": "a", "bodies": ["gone me"]})
        await db.mutation("f:delete", {"id": ids[0]})
        first = await search(db, "me")
    async with reactive.open(db_url, app=app) as db:
        assert await search(db, "me") == first
        assert sorted(first) == ["and me too", "persist me"]
        assert (
            await asyncio.to_thread(db._engine.verify_search_index, "messages", "search_body") == []
        )


async def test_pagination(db: Any) -> None:
    await db.mutation("f:send_many", {"channel": "a", "bodies": [f"common {i}" for i in range(25)]})
    seen: list[str] = []
    cursor = None
    while True:
        page = await db.query("f:page", {"opts": {"numItems": 10, "cursor": cursor}})
        seen += [d["body"] for d in page["page"]]
        if page["isDone"]:
            break
        cursor = page["continueCursor"]
    assert sorted(seen) == sorted(f"common {i}" for i in range(25))


async def assert_quiet(sub: Any) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.get(timeout_s=QUIET_S), QUIET_S * 4)


async def test_subscription_reruns_only_for_matching_writes(db: Any) -> None:
    ids = await db.mutation(
        "f:send_many", {"channel": "a", "bodies": ["hello world", "other words"]}
    )
    sub = db.subscribe("f:search", {"text": "hello", "channel": "a"})
    assert await sub.get(timeout_s=5) == ["hello world"]
    assert sub.runs == 1
    # Writes holding none of the terms, or outside the filter, or to another table.
    await db.mutation("f:send_many", {"channel": "a", "bodies": ["goodbye", "help", "hell"]})
    await db.mutation("f:send_many", {"channel": "b", "bodies": ["hello there"]})
    await db.mutation("f:send_other", {"body": "hello"})
    await db.mutation("f:patch", {"id": ids[1], "fields": {"body": "still nothing"}})
    await assert_quiet(sub)
    assert sub.runs == 1
    # A matching insert (prefix of the last term), then an edit and a delete of a result.
    new = await db.mutation("f:send", {"channel": "a", "body": "hellos everyone"})
    assert sorted(await sub.get(timeout_s=5)) == ["hello world", "hellos everyone"]
    assert sub.runs == 2
    await db.mutation("f:patch", {"id": new, "fields": {"channel": "b"}})
    assert await sub.get(timeout_s=5) == ["hello world"]
    await db.mutation("f:delete", {"id": ids[0]})
    assert await sub.get(timeout_s=5) == []
    assert sub.runs == 4
    sub.close()


async def test_search_conflicts_with_matching_commit(db: Any) -> None:
    await db.mutation("f:send", {"channel": "a", "body": "seat one"})
    txn = db._engine.begin(False)
    found = txn.text_search("messages", "search_body", "seat", [], 10)
    assert len(found) == 1
    txn.insert("messages", {"channel": "a", "body": "booked"})
    # A concurrent commit adds a document the search would have found.
    await db.mutation("f:send", {"channel": "a", "body": "seat two"})
    with pytest.raises(WriteConflict, match="search index"):
        db._engine.commit(txn)
    # One holding none of the terms does not conflict.
    txn = db._engine.begin(False)
    txn.text_search("messages", "search_body", "seat", [], 10)
    txn.insert("messages", {"channel": "a", "body": "booked"})
    await db.mutation("f:send", {"channel": "a", "body": "unrelated"})
    assert db._engine.commit(txn) is not None


async def test_embedded_text_search(db: Any) -> None:
    await db.mutation("f:send_many", {"channel": "a", "bodies": ["red apple", "apple apple"]})
    await db.mutation("f:send", {"channel": "b", "body": "apple"})
    found = await db.text_search("messages", "search_body", "apple", filters={"channel": "a"})
    assert [d["body"] for d, _ in found] == ["apple apple", "red apple"]
    assert found[0][1] > found[1][1] > 0
    with pytest.raises(IndexNotFoundError):
        await db.text_search("messages", "nope", "apple")


async def test_cli_check_verifies_search_indexes(db_url: str, app: Path) -> None:
    import subprocess
    import sys

    async with reactive.open(db_url, app=app) as db:
        await db.mutation("f:send_many", {"channel": "a", "bodies": ["one two", "three"]})
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reactive", "--db", db_url, "check", "--app", str(app)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 search index(es): ok" in result.stdout
