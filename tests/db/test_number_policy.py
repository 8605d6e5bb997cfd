"""The number policy for query literals: an ``int`` bound or filter literal on a field
declared ``v.float64()`` means the float (Convex orders every int64 below every float64, so
``q.gte("age", 45)`` over float ages would otherwise match them all); int64 fields and
undeclared fields keep Convex's order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import reactive
from reactive.schema import define_table, is_float_field, v

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "people": define_table({
                "age": v.float64(),
                "score": v.int64(),
                "extra": v.optional(v.object({"height": v.union(v.float64(), v.null())})),
            }).index("by_age", ["age"]).index("by_score", ["score"]),
        }, strict_table_name_types=False)
    """,
    "people.py": """
        from reactive import mutation, query, v


        @mutation(args={"n": v.float64()})
        async def seed(ctx, n):
            for i in range(int(n)):
                # ints from Python: age is declared float64, so it is stored as a float
                await ctx.db.insert("people", {"age": i % 90, "score": i % 10,
                                               "extra": {"height": 150 + i % 50}})
                await ctx.db.insert("loose", {"age": float(i % 90)})


        @query(args={"age": v.int64()})
        async def index_gte(ctx, age):
            return len(await ctx.db.query("people")
                       .with_index("by_age", lambda q: q.gte("age", age)).collect())


        @query(args={"age": v.int64()})
        async def filter_gt(ctx, age):
            return len(await ctx.db.query("people")
                       .filter(lambda q: q.gt(q.field("age"), age)).collect())


        @query(args={"height": v.int64()})
        async def nested_lt(ctx, height):
            return len(await ctx.db.query("people")
                       .filter(lambda q: q.lt(height, q.field("extra.height"))).collect())


        @query(args={"score": v.int64()})
        async def score_eq(ctx, score):
            return len(await ctx.db.query("people")
                       .with_index("by_score", lambda q: q.eq("score", score)).collect())


        @query(args={"age": v.int64()})
        async def loose_gte(ctx, age):
            return len(await ctx.db.query("loose")
                       .filter(lambda q: q.gte(q.field("age"), age)).collect())
    """,
}


async def test_int_literals_on_float_fields(
    db_url: str, make_app: Callable[[dict[str, str]], Path]
) -> None:
    async with reactive.open(db_url, app=make_app(APP)) as db:
        await db.mutation("people:seed", {"n": 900.0})
        expected = sum(1 for i in range(900) if i % 90 >= 45)
        assert await db.query("people:index_gte", {"age": 45}) == expected
        assert await db.query("people:filter_gt", {"age": 44}) == expected
        assert await db.query("people:nested_lt", {"height": 189}) == sum(
            1 for i in range(900) if 150 + i % 50 > 189
        )
        # int64 fields compare ints with ints, as declared.
        assert await db.query("people:score_eq", {"score": 3}) == 90
        # An undeclared field keeps Convex's order: every float is above every int.
        assert await db.query("people:loose_gte", {"age": 45}) == 900


def test_is_float_field() -> None:
    table = define_table(
        {
            "a": v.float64(),
            "b": v.optional(v.float64()),
            "c": v.union(v.float64(), v.null()),
            "d": v.union(v.float64(), v.int64()),
            "e": v.int64(),
            "f": v.object({"g": v.optional(v.number())}),
        }
    )
    checks = {"a": True, "b": True, "c": True, "d": False, "e": False, "f.g": True}
    for path, expected in checks.items():
        assert is_float_field(table.validator, path) is expected, path
    assert not is_float_field(table.validator, "nope")
    assert not is_float_field(None, "a")
