"""``ctx.run_query`` / ``ctx.run_mutation`` inside queries and mutations (one transaction,
a failed nested mutation rolls back only its own writes), and ``UNSET`` in writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import reactive
from reactive import UNSET
from reactive.errors import (
    ArgumentValidationError,
    ConvexError,
    FunctionNotFoundError,
    InvalidValueError,
    SchemaValidationError,
)

MakeApp = Callable[[dict[str, str]], Path]

APP = {
    "accounts.py": """
        from reactive import ConvexError, UNSET, internal_mutation, internal_query, mutation
        from reactive import query, v


        @internal_query(args={"name": v.string()})
        async def balance(ctx, name):
            doc = await ctx.db.query("accounts").filter(
                lambda q: q.eq(q.field("name"), name)
            ).first()
            return None if doc is None else doc["balance"]


        @query(args={"names": v.array(v.string())})
        async def total(ctx, names):
            total = 0.0
            for name in names:
                total += await ctx.run_query("accounts:balance", {"name": name}) or 0.0
            return total


        @mutation(args={"name": v.string(), "balance": v.float64()})
        async def open_account(ctx, name, balance):
            return await ctx.db.insert("accounts", {"name": name, "balance": balance})


        @internal_mutation(args={"name": v.string(), "amount": v.float64()})
        async def withdraw(ctx, name, amount):
            doc = await ctx.db.query("accounts").filter(
                lambda q: q.eq(q.field("name"), name)
            ).first()
            await ctx.db.patch(doc["_id"], {"balance": doc["balance"] - amount})
            await ctx.db.insert("journal", {"name": name, "amount": -amount})
            if doc["balance"] - amount < 0:
                raise ConvexError({"short": name})
            return doc["balance"] - amount


        @mutation(args={"src": v.string(), "dst": v.string(), "amount": v.float64()})
        async def transfer(ctx, src, dst, amount):
            await ctx.db.insert("journal", {"name": "transfer", "amount": amount})
            try:
                left = await ctx.run_mutation("accounts:withdraw", {"name": src, "amount": amount})
            except ConvexError as exc:
                # The nested writes are undone; this mutation's own write stays.
                await ctx.db.insert("journal", {"name": "refused", "amount": amount})
                return {"refused": exc.data,
                        "seen": await ctx.run_query("accounts:balance", {"name": src})}
            dst_doc = await ctx.db.query("accounts").filter(
                lambda q: q.eq(q.field("name"), dst)
            ).first()
            await ctx.db.patch(dst_doc["_id"], {"balance": dst_doc["balance"] + amount})
            # A nested query sees this transaction's writes.
            return {"left": left, "seen": await ctx.run_query("accounts:balance", {"name": src})}


        @mutation(args={"src": v.string(), "amount": v.float64()})
        async def withdraw_or_fail(ctx, src, amount):
            await ctx.db.insert("journal", {"name": "attempt", "amount": amount})
            return await ctx.run_mutation("accounts:withdraw", {"name": src, "amount": amount})


        @mutation(args={"depth": v.float64()})
        async def recurse(ctx, depth):
            return await ctx.run_mutation("accounts:recurse", {"depth": depth + 1})


        @mutation(args={})
        async def bad_args(ctx):
            return await ctx.run_mutation("accounts:withdraw", {"name": 3})


        @mutation(args={})
        async def missing(ctx):
            return await ctx.run_query("accounts:nope", {})


        @mutation(args={"id": v.id("profiles"), "fields": v.any()})
        async def patch_profile(ctx, id, fields):
            await ctx.db.patch(id, fields)
            return await ctx.db.get(id)


        @mutation(args={})
        async def unset_in_patch(ctx):
            pid = await ctx.db.insert("profiles", {"name": "ada", "nick": "a", "age": 36.0})
            await ctx.db.patch(pid, {"nick": UNSET, "age": None})
            return await ctx.db.get(pid)


        @mutation(args={})
        async def unset_in_insert_and_replace(ctx):
            pid = await ctx.db.insert("profiles", {"name": "bob", "nick": UNSET})
            first = await ctx.db.get(pid)
            await ctx.db.replace(pid, {"name": "bob2", "nick": UNSET, "age": 2.0})
            return [first, await ctx.db.get(pid)]


        @mutation(args={})
        async def unset_nested(ctx):
            return await ctx.db.insert("profiles", {"name": "c", "tags": [UNSET]})


        @mutation(args={})
        async def unset_required(ctx):
            pid = await ctx.db.insert("profiles", {"name": "d"})
            await ctx.db.patch(pid, {"name": UNSET})
    """,
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "accounts": define_table({"name": v.string(), "balance": v.float64()}),
            "journal": define_table({"name": v.string(), "amount": v.float64()}),
            "profiles": define_table({
                "name": v.string(),
                "nick": v.optional(v.string()),
                "age": v.optional(v.union(v.float64(), v.null())),
                "tags": v.optional(v.array(v.any())),
            }),
        })
    """,
}


@pytest.fixture
async def db(db_url: str, make_app: MakeApp) -> AsyncIterator[reactive.Database]:
    database = await reactive.open(db_url, app=make_app(APP))
    await database.mutation("accounts:open_account", {"name": "a", "balance": 10.0})
    await database.mutation("accounts:open_account", {"name": "b", "balance": 0.0})
    try:
        yield database
    finally:
        await database.close()


async def journal(db: reactive.Database) -> list[str]:
    docs, _ = db._engine.table_page("journal", db._engine.visible_ts, None, 100)
    return [d["name"] for d in sorted(docs, key=lambda d: d["_creationTime"])]


async def test_nested_query_in_a_query(db: reactive.Database) -> None:
    assert await db.query("accounts:total", {"names": ["a", "b"]}) == 10.0


async def test_nested_mutation_commits_with_the_outer_one(db: reactive.Database) -> None:
    result = await db.mutation("accounts:transfer", {"src": "a", "dst": "b", "amount": 4.0})
    assert result == {"left": 6.0, "seen": 6.0}
    assert await db.query("accounts:total", {"names": ["a"]}) == 6.0
    assert await db.query("accounts:total", {"names": ["b"]}) == 4.0
    assert await journal(db) == ["transfer", "a"]


async def test_a_caught_nested_failure_rolls_back_only_its_writes(db: reactive.Database) -> None:
    result = await db.mutation("accounts:transfer", {"src": "b", "dst": "a", "amount": 5.0})
    # The nested withdraw patched b to -5 and wrote a journal entry, then failed: both undone.
    assert result == {"refused": {"short": "b"}, "seen": 0.0}
    assert await db.query("accounts:total", {"names": ["a", "b"]}) == 10.0
    assert await journal(db) == ["transfer", "refused"]
    assert (await db.check())["problems"] == []


async def test_an_uncaught_nested_failure_fails_the_whole_mutation(
    db: reactive.Database,
) -> None:
    with pytest.raises(ConvexError) as info:
        await db.mutation("accounts:withdraw_or_fail", {"src": "b", "amount": 1.0})
    assert info.value.data == {"short": "b"}
    assert await journal(db) == []
    assert await db.query("accounts:total", {"names": ["b"]}) == 0.0


async def test_nested_calls_check_arguments_paths_and_depth(db: reactive.Database) -> None:
    with pytest.raises(ArgumentValidationError, match="accounts:withdraw"):
        await db.mutation("accounts:bad_args", {})
    with pytest.raises(FunctionNotFoundError, match="nope"):
        await db.mutation("accounts:missing", {})
    with pytest.raises(RecursionError, match="16"):
        await db.mutation("accounts:recurse", {"depth": 0.0})
    assert await journal(db) == []


async def test_unset_removes_a_field_in_patch(db: reactive.Database) -> None:
    doc = await db.mutation("accounts:unset_in_patch", {})
    assert "nick" not in doc
    assert doc["age"] is None and doc["name"] == "ada"


async def test_unset_is_left_out_of_insert_and_replace(db: reactive.Database) -> None:
    first, second = await db.mutation("accounts:unset_in_insert_and_replace", {})
    assert "nick" not in first and first["name"] == "bob"
    assert "nick" not in second and second["name"] == "bob2" and second["age"] == 2.0


async def test_unset_elsewhere_is_refused(db: reactive.Database) -> None:
    with pytest.raises(InvalidValueError):
        await db.mutation("accounts:unset_nested", {})
    with pytest.raises(SchemaValidationError, match="name"):
        await db.mutation("accounts:unset_required", {})
    assert repr(UNSET) == "UNSET" and not UNSET
