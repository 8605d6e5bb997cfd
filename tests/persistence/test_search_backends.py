"""Search on every backend: the indexes are built from the backend's documents at open,
updated by commits, and rebuilt after a reopen with the same results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import reactive

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "notes": define_table({"body": v.string(), "tag": v.string(), "vec": v.array(v.float64())})
        .search_index("by_body", search_field="body", filter_fields=["tag"])
        .vector_index("by_vec", vector_field="vec", dimensions=3, filter_fields=["tag"]),
})
"""

APP = """
from reactive import mutation, query, v


@mutation(args={"body": v.string(), "tag": v.string(), "vec": v.array(v.float64())})
async def add(ctx, body, tag, vec):
    return await ctx.db.insert("notes", {"body": body, "tag": tag, "vec": vec})


@mutation(args={"id": v.id("notes")})
async def remove(ctx, id):
    await ctx.db.delete(id)


@query(args={"text": v.string(), "tag": v.string()})
async def search(ctx, text, tag):
    docs = await ctx.db.query("notes").with_search_index(
        "by_body", lambda q: q.search("body", text).eq("tag", tag)
    ).collect()
    return [d["body"] for d in docs]


@query(args={"vec": v.array(v.float64())})
async def nearest(ctx, vec):
    hits = await ctx.db.vector_search("notes", "by_vec", {"vector": vec, "limit": 2})
    return [(await ctx.db.get(h["_id"]))["body"] for h in hits]
"""


async def test_search_on_each_backend(backend_url: str, make_app: Any) -> None:
    app: Path = make_app({"schema.py": SCHEMA, "m.py": APP})
    async with reactive.open(backend_url, app=app) as db:
        await db.mutation("m:add", {"body": "red apple pie", "tag": "a", "vec": [1.0, 0.0, 0.0]})
        await db.mutation("m:add", {"body": "apple apple", "tag": "a", "vec": [0.9, 0.1, 0.0]})
        gone = await db.mutation("m:add", {"body": "apple tart", "tag": "a", "vec": [0.0, 1.0, 0]})
        await db.mutation("m:add", {"body": "green apple", "tag": "b", "vec": [0.0, 0.0, 1.0]})
        await db.mutation("m:remove", {"id": gone})
        before = await db.query("m:search", {"text": "appl", "tag": "a"})
        assert before == ["apple apple", "red apple pie"]
        assert await db.query("m:nearest", {"vec": [1.0, 0.05, 0.0]}) == [
            "red apple pie",
            "apple apple",
        ]
    async with reactive.open(backend_url, app=app) as db:
        assert await db.query("m:search", {"text": "appl", "tag": "a"}) == before
        assert await db.query("m:nearest", {"vec": [1.0, 0.05, 0.0]}) == [
            "red apple pie",
            "apple apple",
        ]
        report = await db.check()
        assert report["problems"] == [] and report["search_indexes"] == 1
