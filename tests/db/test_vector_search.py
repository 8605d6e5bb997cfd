"""Vector search: exact cosine top-k against a brute force, filters, the transaction's own
writes, bad vectors refused at write time with the field named, limits, the approximate
index's recall past the exact limit, reactivity, and actions' ctx.vector_search."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.errors import IndexNotFoundError, InvalidQueryError, ReactiveError

DIMS = 8

SCHEMA = f"""
from reactive import define_schema, define_table, v

schema = define_schema({{
    "items": define_table({{
        "embedding": v.optional(v.array(v.float64())),
        "kind": v.string(),
        "label": v.optional(v.string()),
    }}).vector_index("by_embedding", vector_field="embedding", dimensions={DIMS},
                     filter_fields=["kind"]),
}})
"""

FUNCS = """
from reactive import action, mutation, query, v


def _filter(kinds):
    if not kinds:
        return None
    return lambda q: q.or_(*[q.eq("kind", k) for k in kinds])


@query(args={"vector": v.array(v.float64()), "limit": v.int64(), "kinds": v.array(v.string())})
async def nearest(ctx, vector, limit, kinds):
    query = {"vector": vector, "limit": limit}
    if kinds:
        query["filter"] = _filter(kinds)
    return await ctx.db.vector_search("items", "by_embedding", query)


@query(args={"query": v.any()})
async def raw(ctx, query):
    return await ctx.db.vector_search("items", "by_embedding", query)


@query(args={})
async def no_index(ctx):
    return await ctx.db.vector_search("items", "nope", {"vector": [1.0] * 8})


@mutation(args={"docs": v.array(v.any())})
async def add(ctx, docs):
    return [await ctx.db.insert("items", d) for d in docs]


@mutation(args={"id": v.string(), "fields": v.any()})
async def patch(ctx, id, fields):
    await ctx.db.patch(id, fields)


@mutation(args={"id": v.string()})
async def delete(ctx, id):
    await ctx.db.delete(id)


@mutation(args={"doc": v.any(), "vector": v.array(v.float64())})
async def add_then_search(ctx, doc, vector):
    new = await ctx.db.insert("items", doc)
    found = await ctx.db.vector_search("items", "by_embedding", {"vector": vector, "limit": 1})
    return new, found


@action(args={"vector": v.array(v.float64()), "kind": v.string()})
async def search_action(ctx, vector, kind):
    query = {"vector": vector, "limit": 3, "filter": lambda q: q.eq("kind", kind)}
    return await ctx.vector_search("items", "by_embedding", query)
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


def rand_vec(rng: random.Random, dims: int = DIMS) -> list[float]:
    return [rng.gauss(0, 1) for _ in range(dims)]


def cosine(a: list[float], b: list[float]) -> float:
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def brute(docs: dict[str, dict[str, Any]], q: list[float], k: int, kinds: list[str]) -> list[str]:
    scored = [
        (cosine(d["embedding"], q), id_)
        for id_, d in docs.items()
        if "embedding" in d and (not kinds or d["kind"] in kinds)
    ]
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [id_ for _, id_ in scored[:k]]


async def test_exact_matches_brute_force(db: Any) -> None:
    rng = random.Random(7)
    docs = [{"embedding": rand_vec(rng), "kind": rng.choice("abc")} for _ in range(300)]
    docs.append({"kind": "a"})  # no vector: not indexed
    ids = await db.mutation("f:add", {"docs": docs})
    by_id = dict(zip(ids, docs, strict=True))
    for kinds in ([], ["a"], ["b", "c"]):
        for _ in range(5):
            q = rand_vec(rng)
            got = await db.query("f:nearest", {"vector": q, "limit": 10, "kinds": kinds})
            assert [g["_id"] for g in got] == brute(by_id, q, 10, kinds)
            for g in got:
                assert g["_score"] == pytest.approx(
                    cosine(by_id[g["_id"]]["embedding"], q), abs=1e-5
                )
    # Updates and deletes are seen at once.
    await db.mutation("f:patch", {"id": ids[0], "fields": {"embedding": [1.0] + [0.0] * 7}})
    await db.mutation("f:delete", {"id": ids[1]})
    by_id[ids[0]]["embedding"] = [1.0] + [0.0] * 7
    del by_id[ids[1]]
    q = [1.0, 0.01] + [0.0] * 6
    got = await db.query("f:nearest", {"vector": q, "limit": 5, "kinds": []})
    assert got[0]["_id"] == ids[0] and got[0]["_score"] == pytest.approx(1.0, abs=1e-3)
    assert [g["_id"] for g in got] == brute(by_id, q, 5, [])


async def test_own_writes_and_action(db: Any) -> None:
    rng = random.Random(1)
    await db.mutation(
        "f:add", {"docs": [{"embedding": rand_vec(rng), "kind": "a"} for _ in range(20)]}
    )
    target = [0.0] * 7 + [1.0]
    new, found = await db.mutation(
        "f:add_then_search", {"doc": {"embedding": target, "kind": "b"}, "vector": target}
    )
    assert found[0]["_id"] == new
    got = await db.action("f:search_action", {"vector": target, "kind": "b"})
    assert [g["_id"] for g in got] == [new]


async def test_bad_vectors_refused_at_write_time(db: Any) -> None:
    bad = [
        ({"embedding": [1.0] * 7, "kind": "a"}, "7 numbers"),
        ({"embedding": [1.0] * 7 + ["x"], "kind": "a"}, r"position 7|embedding\[7\]"),
        ({"embedding": [1.0] * 7 + [math.nan], "kind": "a"}, "finite"),
        ({"embedding": [1.0] * 7 + [math.inf], "kind": "a"}, "finite"),
    ]
    for doc, why in bad:
        with pytest.raises(ReactiveError, match=why) as info:
            await db.mutation("f:add", {"docs": [doc]})
        assert "embedding" in str(info.value)
    assert await db.query("f:nearest", {"vector": [1.0] * 8, "limit": 5, "kinds": []}) == []


async def test_bad_searches(db: Any) -> None:
    await db.mutation("f:add", {"docs": [{"embedding": [1.0] * 8, "kind": "a"}]})
    for query, why in [
        ({"vector": [1.0] * 7}, "7 numbers"),
        ({"vector": [1.0] * 8, "limit": 0}, "limit"),
        ({"vector": [1.0] * 8, "limit": 257}, "limit"),
        ({"vector": "nope"}, "list of numbers"),
        ({"limit": 3}, "list of numbers"),
        ({"vector": [1.0] * 8, "extra": 1}, "unknown"),
    ]:
        with pytest.raises(InvalidQueryError, match=why):
            await db.query("f:raw", {"query": query})
    with pytest.raises(IndexNotFoundError):
        await db.query("f:no_index", {})
    assert len(await db.query("f:raw", {"query": {"vector": [1.0] * 8}})) == 1


async def test_approximate_recall(db_url: str, app: Path) -> None:
    rng = random.Random(3)
    # Clusters, as real embeddings have; 3,000 vectors with exact search up to 500.
    centers = [rand_vec(rng, DIMS) for _ in range(30)]
    docs = []
    for _ in range(3000):
        c = rng.choice(centers)
        docs.append({"embedding": [x + rng.gauss(0, 0.3) for x in c], "kind": "a"})
    async with reactive.open(db_url, app=app, vector_exact_limit=500) as db:
        ids: list[str] = []
        for i in range(0, len(docs), 500):
            ids += await db.mutation("f:add", {"docs": docs[i : i + 500]})
        await asyncio.to_thread(db._engine.flush_search_indexes)
        by_id = dict(zip(ids, docs, strict=True))
        hits = total = 0
        for _ in range(20):
            q = rand_vec(rng)
            got = await db.query("f:nearest", {"vector": q, "limit": 10, "kinds": []})
            exact = set(brute(by_id, q, 10, []))
            hits += len(exact & {g["_id"] for g in got})
            total += 10
        assert hits / total >= 0.9


async def assert_quiet(sub: Any) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.get(timeout_s=QUIET_S), QUIET_S * 4)


async def test_reactive_within_filter_only(db: Any) -> None:
    rng = random.Random(5)
    await db.mutation(
        "f:add", {"docs": [{"embedding": rand_vec(rng), "kind": "a"} for _ in range(5)]}
    )
    q = [1.0] + [0.0] * 7
    sub = db.subscribe("f:nearest", {"vector": q, "limit": 3, "kinds": ["a"]})
    first = await sub.get(timeout_s=5)
    assert len(first) == 3 and sub.runs == 1
    # Writes outside the filter, without a vector, or within the filter but farther than
    # the third result: no re-run.
    far = [-x for x in q]
    await db.mutation("f:add", {"docs": [{"embedding": q, "kind": "b"}, {"kind": "c"}]})
    await db.mutation("f:add", {"docs": [{"embedding": far, "kind": "a"}]})
    await assert_quiet(sub)
    assert sub.runs == 1
    # A vector that enters the top 3: one re-run, and the new result.
    new = await db.mutation("f:add", {"docs": [{"embedding": q, "kind": "a"}]})
    got = await sub.get(timeout_s=5)
    assert got[0]["_id"] == new[0] and sub.runs == 2
    # A result that moves away: re-run (it leaves the top 3).
    await db.mutation("f:patch", {"id": new[0], "fields": {"embedding": far}})
    got = await sub.get(timeout_s=5)
    assert new[0] not in [g["_id"] for g in got] and sub.runs == 3
    sub.close()


async def test_embedded_vector_search(db: Any) -> None:
    ids = await db.mutation(
        "f:add",
        {
            "docs": [
                {"embedding": [1.0] + [0.0] * 7, "kind": "a"},
                {"embedding": [0.0] * 7 + [1.0], "kind": "b"},
            ]
        },
    )
    got = await db.vector_search("items", "by_embedding", [1.0] + [0.0] * 7, limit=2)
    assert [g["_id"] for g in got] == ids
    got = await db.vector_search(
        "items", "by_embedding", [1.0] + [0.0] * 7, filter=lambda q: q.eq("kind", "b")
    )
    assert [g["_id"] for g in got] == [ids[1]]
