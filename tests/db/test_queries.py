"""Queries: index ranges, order, ends (take/first/unique/collect/async for), filters,
Convex's total value order (spec §12), reads of a mutation's own writes, and a randomized
comparison against a plain-Python model of one indexed table."""

from __future__ import annotations

import asyncio
import math
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reactive
from reactive.errors import IndexNotFoundError, InvalidQueryError
from reactive.values import Int64

# ---------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "items": define_table()
        .index("by_a_b", ["a", "b"])
        .index("by_v", ["v"])
        .index("by_g_v", ["g", "v"]),
    "other": define_table(),
})
"""

FUNCS = """
from reactive import ConvexError, mutation, query, v


def _range(ops):
    def build(q):
        for op, field, value in ops:
            q = getattr(q, op)(field, value)
        return q
    return build


def _query(ctx, table, index, ops, order):
    q = ctx.db.query(table)
    if index is not None:
        q = q.with_index(index, _range(ops) if ops else None)
    if order is not None:
        q = q.order(order)
    return q


@query
async def scan(ctx, table="items", index=None, ops=(), order=None, take=None, end="collect"):
    q = _query(ctx, table, index, ops, order)
    if end == "collect":
        return await q.collect()
    if end == "take":
        return await q.take(take)
    if end == "first":
        return await q.first()
    if end == "unique":
        return await q.unique()
    raise ValueError(end)


@query
async def iterate(ctx, index=None, ops=(), order=None, stop=None):
    out = []
    async for doc in _query(ctx, "items", index, ops, order):
        out.append(doc)
        if stop is not None and len(out) >= stop:
            break
    return out


@query
async def with_range_fn(ctx, index, kind):
    # Range functions that misuse the builder.
    if kind == "not_builder":
        return await ctx.db.query("items").with_index(index, lambda q: 5).collect()
    raise ValueError(kind)


FILTERS = {
    "eq_int_1": lambda q: q.eq(q.field("n"), 1),
    "eq_float_1": lambda q: q.eq(q.field("n"), 1.0),
    "neq_int_1": lambda q: q.neq(q.field("n"), 1),
    "lt_3": lambda q: q.lt(q.field("n"), 3),
    "lte_3": lambda q: q.lte(q.field("n"), 3),
    "gt_3": lambda q: q.gt(q.field("n"), 3),
    "gte_3": lambda q: q.gte(q.field("n"), 3),
    "and_range": lambda q: q.and_(q.gte(q.field("n"), 2), q.lt(q.field("n"), 5)),
    "or_ends": lambda q: q.or_(q.lt(q.field("n"), 1), q.gt(q.field("n"), 5)),
    "not_even": lambda q: q.not_(q.eq(q.mod(q.field("n"), 2), 0)),
    "color_red": lambda q: q.eq(q.field("meta.color"), "red"),
    "deep_size": lambda q: q.gte(q.field("meta.dims.w"), 10),
    "plus_10_gt_14": lambda q: q.gt(q.add(q.field("n"), 10), 14),
    "times_3_eq_6": lambda q: q.eq(q.mul(q.field("n"), 3), 6),
    "minus_1_eq_0": lambda q: q.eq(q.sub(q.field("n"), 1), 0),
    "div_2_eq_2": lambda q: q.eq(q.div(q.field("n"), 2), 2),
    "neg_lt_m4": lambda q: q.lt(q.neg(q.field("n")), -4),
    "float_half": lambda q: q.eq(q.mul(q.field("x"), 0.5), 1.25),
    "missing_eq_null": lambda q: q.eq(q.field("nothing"), None),
    "missing_lt_null": lambda q: q.lt(q.field("nothing"), None),
    "field_eq_field": lambda q: q.eq(q.field("n"), q.field("m")),
    "literal_true": lambda q: q.eq(1, 1),
    "chained": None,  # see filtered()
}


@query
async def filtered(ctx, name, order=None):
    q = ctx.db.query("items")
    if order is not None:
        q = q.order(order)
    if name == "chained":
        q = q.filter(lambda q: q.gte(q.field("n"), 2)).filter(lambda q: q.lte(q.field("n"), 4))
    else:
        q = q.filter(FILTERS[name])
    return [d["name"] for d in await q.collect()]


@query
async def filtered_take(ctx, n):
    # take(n) after a filter: n matching documents, not n scanned.
    q = ctx.db.query("items").filter(lambda q: q.eq(q.mod(q.field("n"), 2), 0))
    return [d["name"] for d in await q.take(n)]


@mutation
async def insert_many(ctx, docs, table="items"):
    return [await ctx.db.insert(table, d) for d in docs]


@mutation
async def apply(ctx, ops):
    # ops: ["insert", doc] | ["patch", id, fields] | ["replace", id, doc] | ["delete", id]
    out = []
    for op in ops:
        if op[0] == "insert":
            out.append(await ctx.db.insert("items", op[1]))
        elif op[0] == "patch":
            await ctx.db.patch(op[1], op[2])
        elif op[0] == "replace":
            await ctx.db.replace(op[1], op[2])
        elif op[0] == "delete":
            await ctx.db.delete(op[1])
        else:
            raise ValueError(op[0])
    return out


@mutation
async def own_writes(ctx, existing):
    # existing: an id of a committed document with a=1.
    def names(docs):
        return [d["name"] for d in docs]

    by_a = lambda lo, hi: (
        ctx.db.query("items").with_index("by_a_b", lambda q: q.eq("a", 1).gte("b", lo).lt("b", hi))
    )
    snapshots = {}
    snapshots["start"] = names(await by_a(0, 100).collect())
    new_id = await ctx.db.insert("items", {"name": "new", "a": 1, "b": 5})
    snapshots["after_insert"] = names(await by_a(0, 100).collect())
    snapshots["after_insert_desc"] = names(await by_a(0, 100).order("desc").collect())
    snapshots["after_insert_range"] = names(await by_a(4, 6).collect())
    snapshots["get_new"] = (await ctx.db.get(new_id))["name"]
    await ctx.db.patch(new_id, {"b": 50})
    snapshots["after_patch_new"] = names(await by_a(0, 100).collect())
    snapshots["after_patch_range"] = names(await by_a(4, 6).collect())
    await ctx.db.patch(existing, {"b": 99})
    snapshots["after_patch_existing"] = names(await by_a(0, 100).collect())
    snapshots["first_desc"] = (await by_a(0, 100).order("desc").first())["name"]
    await ctx.db.delete(existing)
    snapshots["after_delete"] = names(await by_a(0, 100).collect())
    snapshots["get_deleted"] = await ctx.db.get(existing)
    snapshots["take2"] = names(await by_a(0, 100).take(2))
    count = 0
    async for _ in ctx.db.query("items"):
        count += 1
    snapshots["count_all"] = count
    return snapshots


@query
async def get(ctx, id):
    return await ctx.db.get(id)


@query
async def bad_ctx_write(ctx):
    return await ctx.db.insert("items", {"x": 1})


@query
async def raises(ctx):
    raise ConvexError({"code": "NOPE"})
"""


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


async def insert(db: Any, docs: list[dict[str, Any]], table: str = "items") -> list[str]:
    return await db.mutation("f:insert_many", {"docs": docs, "table": table})


async def scan(db: Any, **kw: Any) -> Any:
    if "ops" in kw:
        kw["ops"] = [list(op) for op in kw["ops"]]
    return await db.query("f:scan", kw)


def names(docs: list[dict[str, Any]]) -> list[str]:
    return [d["name"] for d in docs]


# ---------------------------------------------------------------------------------------
# The reference order of spec §12, written independently of the implementation.
# ---------------------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def float_key(f: float) -> int:
    """IEEE 754 totalOrder as an int: -NaN < -inf < ... < -0.0 < 0.0 < ... < inf < NaN."""
    bits = struct.unpack(">q", struct.pack(">d", f))[0]
    return bits if bits >= 0 else bits ^ 0x7FFF_FFFF_FFFF_FFFF


def ref_key(value: Any) -> tuple[Any, ...]:
    """A Python sort key for Convex's total order of values (spec §12)."""
    if value is MISSING:
        return (0,)
    if value is None:
        return (1,)
    if isinstance(value, bool):
        return (4, value)
    if isinstance(value, int):
        return (2, value)
    if isinstance(value, float):
        return (3, float_key(value))
    if isinstance(value, str):
        return (5, value.encode("utf-8"))
    if isinstance(value, bytes):
        return (6, value)
    if isinstance(value, list):
        return (7, [ref_key(x) for x in value])
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-8"))
        return (8, [(k.encode("utf-8"), ref_key(x)) for k, x in items])
    raise TypeError(value)


def strict_same(a: Any, b: Any) -> bool:
    """Equal as Convex values: types must match, floats compared bit for bit."""
    return ref_key(a) == ref_key(b)


def test_reference_order_sanity() -> None:
    # The reference itself agrees with the examples the spec spells out.
    ordered = [
        MISSING,
        None,
        -(2**63),
        -1,
        0,
        2,
        2**63 - 1,
        -math.inf,
        -1.5,
        -0.0,
        0.0,
        1.0,
        math.inf,
        math.nan,
        False,
        True,
        "",
        "a",
        "a\x00",
        "b",
        "\uffff",
        "\U0001f600",
        b"",
        b"\x00",
        b"\xff",
        [],
        [None],
        [1],
        [1, 2],
        [1.0],
        {},
        {"a": 1},
        {"a": 1, "b": 0},
        {"a": 2},
        {"b": 0},
    ]
    assert sorted(range(len(ordered)), key=lambda i: ref_key(ordered[i])) == list(
        range(len(ordered))
    )
    # "\uffff" (U+FFFF) sorts before U+1F600 by UTF-8 bytes, though JS's UTF-16 order differs.
    assert ref_key("\uffff") < ref_key("\U0001f600")
    assert ref_key(100) < ref_key(0.5)


# ---------------------------------------------------------------------------------------
# Index ranges
# ---------------------------------------------------------------------------------------


@pytest.fixture
async def grid(db: Any) -> dict[tuple[int, int], str]:
    """Documents a in 0..2, b in 0..4 (inserted in a shuffled order), name "a:b"."""
    cells = [(a, b) for a in range(3) for b in range(5)]
    random.Random(7).shuffle(cells)
    ids = await insert(db, [{"name": f"{a}:{b}", "a": a, "b": b} for a, b in cells])
    return dict(zip(cells, ids, strict=True))


def cells(seq: list[tuple[int, int]]) -> list[str]:
    return [f"{a}:{b}" for a, b in seq]


async def test_eq_on_leading_field(db: Any, grid: Any) -> None:
    got = await scan(db, index="by_a_b", ops=[("eq", "a", 1)])
    assert names(got) == cells([(1, b) for b in range(5)])


async def test_eq_on_both_fields(db: Any, grid: Any) -> None:
    got = await scan(db, index="by_a_b", ops=[("eq", "a", 2), ("eq", "b", 3)])
    assert names(got) == ["2:3"]
    assert got[0]["_id"] == grid[(2, 3)]


@pytest.mark.parametrize(
    ("op", "bound", "expected_bs"),
    [
        ("gt", 2, [3, 4]),
        ("gte", 2, [2, 3, 4]),
        ("lt", 2, [0, 1]),
        ("lte", 2, [0, 1, 2]),
        ("gt", 4, []),
        ("lt", 0, []),
        ("gte", -10, [0, 1, 2, 3, 4]),
    ],
)
async def test_one_bound_on_next_field(
    db: Any, grid: Any, op: str, bound: int, expected_bs: list[int]
) -> None:
    got = await scan(db, index="by_a_b", ops=[("eq", "a", 1), (op, "b", bound)])
    assert names(got) == cells([(1, b) for b in expected_bs])
    desc = await scan(db, index="by_a_b", ops=[("eq", "a", 1), (op, "b", bound)], order="desc")
    assert names(desc) == cells([(1, b) for b in reversed(expected_bs)])


@pytest.mark.parametrize(
    ("lower", "upper", "expected_bs"),
    [
        (("gt", 0), ("lt", 4), [1, 2, 3]),
        (("gte", 1), ("lte", 3), [1, 2, 3]),
        (("gte", 2), ("lt", 2), []),
        (("gt", 3), ("lt", 1), []),
        (("gte", 2), ("lte", 2), [2]),
    ],
)
async def test_both_bounds(
    db: Any, grid: Any, lower: tuple[str, int], upper: tuple[str, int], expected_bs: list[int]
) -> None:
    ops = [("eq", "a", 0), (lower[0], "b", lower[1]), (upper[0], "b", upper[1])]
    assert names(await scan(db, index="by_a_b", ops=ops)) == cells([(0, b) for b in expected_bs])
    # Upper bound written before the lower one: the same range.
    swapped = [ops[0], ops[2], ops[1]]
    assert names(await scan(db, index="by_a_b", ops=swapped, order="desc")) == cells(
        [(0, b) for b in reversed(expected_bs)]
    )


async def test_bounds_on_leading_field(db: Any, grid: Any) -> None:
    got = await scan(db, index="by_a_b", ops=[("gte", "a", 1), ("lt", "a", 2)])
    assert names(got) == cells([(1, b) for b in range(5)])
    got = await scan(db, index="by_a_b", ops=[("gt", "a", 0)], order="desc")
    assert names(got) == cells([(a, b) for a in (2, 1) for b in (4, 3, 2, 1, 0)])


async def test_whole_index_orders(db: Any, grid: Any) -> None:
    everything = cells([(a, b) for a in range(3) for b in range(5)])
    assert names(await scan(db, index="by_a_b")) == everything
    assert names(await scan(db, index="by_a_b", order="asc")) == everything
    assert names(await scan(db, index="by_a_b", order="desc")) == everything[::-1]


async def test_take_first_unique(db: Any, grid: Any) -> None:
    r = [("eq", "a", 1)]
    assert names(await scan(db, index="by_a_b", ops=r, end="take", take=2)) == ["1:0", "1:1"]
    assert names(await scan(db, index="by_a_b", ops=r, end="take", take=2, order="desc")) == [
        "1:4",
        "1:3",
    ]
    assert await scan(db, index="by_a_b", ops=r, end="take", take=0) == []
    assert len(await scan(db, index="by_a_b", ops=r, end="take", take=100)) == 5
    assert (await scan(db, index="by_a_b", ops=r, end="first"))["name"] == "1:0"
    assert (await scan(db, index="by_a_b", ops=r, end="first", order="desc"))["name"] == "1:4"
    assert await scan(db, index="by_a_b", ops=[("eq", "a", 9)], end="first") is None
    one = await scan(db, index="by_a_b", ops=[("eq", "a", 2), ("eq", "b", 0)], end="unique")
    assert one["name"] == "2:0"
    assert await scan(db, index="by_a_b", ops=[("eq", "a", 7)], end="unique") is None
    with pytest.raises(InvalidQueryError, match="more than one"):
        await scan(db, index="by_a_b", ops=r, end="unique")
    with pytest.raises(InvalidQueryError):
        await scan(db, index="by_a_b", ops=r, end="take", take=-1)


async def test_async_for_whole_and_break(db: Any) -> None:
    # Enough documents to span several internal pages of async iteration.
    await insert(db, [{"name": f"{i:04d}", "v": i} for i in range(300)])
    everything = [f"{i:04d}" for i in range(300)]
    assert names(await db.query("f:iterate", {"index": "by_v"})) == everything
    assert (
        names(await db.query("f:iterate", {"index": "by_v", "order": "desc"})) == everything[::-1]
    )
    assert names(await db.query("f:iterate", {})) == everything  # by creation time
    for stop in (1, 8, 9, 41):
        got = await db.query("f:iterate", {"index": "by_v", "stop": stop})
        assert names(got) == everything[:stop]
    ranged = await db.query(
        "f:iterate",
        {"index": "by_v", "ops": [["gte", "v", 100], ["lt", "v", 250]], "order": "desc"},
    )
    assert names(ranged) == [f"{i:04d}" for i in range(249, 99, -1)]


async def test_by_creation_time_default_order(db: Any) -> None:
    ids: list[str] = []
    for batch in (["c", "a"], ["b"], ["e", "d"]):
        ids += await insert(db, [{"name": n} for n in batch])
    docs = await scan(db)
    assert [d["_id"] for d in docs] == ids
    assert names(docs) == ["c", "a", "b", "e", "d"]
    times = [d["_creationTime"] for d in docs]
    assert times == sorted(times)
    assert all(isinstance(t, float) for t in times)
    assert [d["_id"] for d in await scan(db, order="desc")] == ids[::-1]
    assert [d["_id"] for d in await scan(db, index="by_creation_time")] == ids
    # A range on _creationTime of the built-in index.
    got = await scan(db, index="by_creation_time", ops=[("gt", "_creationTime", times[1])])
    assert [d["_id"] for d in got] == ids[2:]


async def test_by_id(db: Any) -> None:
    ids = await insert(db, [{"name": f"n{i}"} for i in range(5)])
    for i, id_ in enumerate(ids):
        doc = await scan(db, index="by_id", ops=[("eq", "_id", id_)], end="unique")
        assert doc["name"] == f"n{i}"
        assert doc["_id"] == id_
        assert (await db.query("f:get", {"id": id_}))["name"] == f"n{i}"
    # by_id order is the order of the ids as strings.
    every = await scan(db, index="by_id")
    assert [d["_id"] for d in every] == sorted(ids, key=lambda s: s.encode())


async def test_missing_sorts_before_null(db: Any) -> None:
    await insert(
        db,
        [
            {"name": "int", "g": 1, "v": 0},
            {"name": "null", "g": 1, "v": None},
            {"name": "missing", "g": 1},
            {"name": "false", "g": 1, "v": False},
        ],
    )
    got = await scan(db, index="by_g_v", ops=[("eq", "g", 1)])
    assert names(got) == ["missing", "null", "int", "false"]
    assert "v" not in got[0]
    # eq(null) matches null only, not a missing field.
    got = await scan(db, index="by_g_v", ops=[("eq", "g", 1), ("eq", "v", None)])
    assert names(got) == ["null"]
    # Any lower bound (even null) excludes missing; lt(null) is exactly the missing ones.
    got = await scan(db, index="by_g_v", ops=[("eq", "g", 1), ("gte", "v", None)])
    assert names(got) == ["null", "int", "false"]
    got = await scan(db, index="by_g_v", ops=[("eq", "g", 1), ("lt", "v", None)])
    assert names(got) == ["missing"]


async def test_index_range_errors(db: Any, grid: Any) -> None:
    cases = [
        ([("eq", "b", 1)], r'eq\("b"\) is out of order; the next field is "a"'),
        ([("gt", "b", 1)], r'gt\("b"\) is out of order; the next field is "a"'),
        ([("eq", "a", 1), ("gt", "b", 1), ("eq", "_creationTime", 1.0)], "after a range bound"),
        ([("gt", "a", 1), ("eq", "b", 1)], "after a range bound"),
        ([("gt", "a", 0), ("lt", "b", 3)], "bounds another field"),
        ([("eq", "a", 1), ("gt", "b", 1), ("gte", "b", 2)], "two lower bounds"),
        ([("eq", "a", 1), ("lt", "b", 1), ("lte", "b", 2)], "two upper bounds"),
        ([("eq", "nope", 1)], "out of order"),
    ]
    for ops, message in cases:
        with pytest.raises(InvalidQueryError, match=message) as info:
            await scan(db, index="by_a_b", ops=ops)
        # The message names the table, the index and its fields.
        assert "items.by_a_b" in str(info.value)
        assert "[a, b, _creationTime, _id]" in str(info.value)
    with pytest.raises(InvalidQueryError):
        await db.query("f:with_range_fn", {"index": "by_a_b", "kind": "not_builder"})
    with pytest.raises(InvalidQueryError):
        await scan(db, index="by_a_b", order="sideways")


async def test_unknown_index(db: Any, grid: Any) -> None:
    with pytest.raises(IndexNotFoundError) as info:
        await scan(db, index="by_nothing")
    assert "by_nothing" in str(info.value)
    with pytest.raises(IndexNotFoundError):
        await scan(db, table="other", index="by_a_b")


# ---------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------

FILTER_DOCS: list[dict[str, Any]] = [
    {"name": "n0", "n": 0, "m": 0},
    {"name": "n1", "n": 1, "m": 5, "meta": {"color": "red", "dims": {"w": 12}}},
    {"name": "f1", "n": 1.0, "x": 2.5},
    {"name": "n2", "n": 2, "meta": {"color": "blue", "dims": {"w": 3}}},
    {"name": "n3", "n": 3, "m": 3},
    {"name": "n4", "n": 4, "meta": {"color": "red"}},
    {"name": "n5", "n": 5, "meta": "red"},
    {"name": "n6", "n": 6, "meta": {"dims": {"w": 10.0}}},
    {"name": "none", "n": None},
    {"name": "missing"},
]


ARITHMETIC = ("plus_10_gt_14", "times_3_eq_6", "minus_1_eq_0", "div_2_eq_2", "neg_lt_m4")


async def delete_where(db: Any, predicate: Any) -> None:
    doomed = [["delete", d["_id"]] for d in await scan(db) if predicate(d)]
    await db.mutation("f:apply", {"ops": doomed})


async def filtered(db: Any, name: str, order: str | None = None) -> list[str]:
    args: dict[str, Any] = {"name": name}
    if order:
        args["order"] = order
    return await db.query("f:filtered", args)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # int64 1 and float64 1.0 are different values.
        ("eq_int_1", ["n1"]),
        ("eq_float_1", ["f1"]),
        ("neq_int_1", ["n0", "f1", "n2", "n3", "n4", "n5", "n6", "none", "missing"]),
        # Every int64 < every float64, null < numbers, missing < null.
        ("lt_3", ["n0", "n1", "n2", "none", "missing"]),
        ("lte_3", ["n0", "n1", "n2", "n3", "none", "missing"]),
        ("gt_3", ["f1", "n4", "n5", "n6"]),
        ("gte_3", ["f1", "n3", "n4", "n5", "n6"]),
        ("and_range", ["n2", "n3", "n4"]),
        ("or_ends", ["n0", "f1", "n6", "none", "missing"]),
        ("color_red", ["n1", "n4"]),
        ("deep_size", ["n1", "n6"]),  # 12 (int64) and 10.0 (float64) are both >= 10
        ("plus_10_gt_14", ["n5", "n6"]),
        ("times_3_eq_6", ["n2"]),
        ("minus_1_eq_0", ["n1"]),
        ("div_2_eq_2", ["n4", "n5"]),  # int64 division truncates
        ("neg_lt_m4", ["n5", "n6"]),
        ("float_half", ["f1"]),
        ("missing_eq_null", []),
        ("missing_lt_null", [d["name"] for d in FILTER_DOCS]),
        ("field_eq_field", ["n0", "n3", "missing"]),  # undefined == undefined
        ("literal_true", [d["name"] for d in FILTER_DOCS]),
        ("chained", ["n2", "n3", "n4"]),
    ],
)
async def test_filters(db: Any, name: str, expected: list[str]) -> None:
    await insert(db, FILTER_DOCS[:5])
    await insert(db, FILTER_DOCS[5:])
    if name in ARITHMETIC:
        # Arithmetic needs two numbers of one type: keep only int64 documents.
        await delete_where(db, lambda d: type(d.get("n")) not in (int, Int64))
    if name == "float_half":
        await delete_where(db, lambda d: "x" not in d)
    order = [d["name"] for d in FILTER_DOCS]
    got = await filtered(db, name)
    assert got == [n for n in order if n in expected]
    assert await filtered(db, name, "desc") == got[::-1]


async def test_filter_not_and_take(db: Any) -> None:
    await insert(db, [{"name": f"n{i}", "n": i} for i in range(10)])
    assert await filtered(db, "not_even") == ["n1", "n3", "n5", "n7", "n9"]
    # take(n) counts matching documents, not scanned ones.
    assert await db.query("f:filtered_take", {"n": 3}) == ["n0", "n2", "n4"]


async def test_filter_type_errors(db: Any) -> None:
    await insert(db, [{"name": "s", "n": "text"}])
    with pytest.raises(InvalidQueryError, match="arithmetic"):
        await filtered(db, "plus_10_gt_14")


# ---------------------------------------------------------------------------------------
# Convex's total order of values in an index holding mixed types (spec §12)
# ---------------------------------------------------------------------------------------

_CHARS = st.one_of(
    st.sampled_from(["a", "b", "\x00", "\x7f", "\xe9", "\uffff", "\U0001f600", "\U00010000"]),
    st.characters(blacklist_categories=("Cs",)),
)
_KEYS = st.text(alphabet="abcxy", min_size=1, max_size=3)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 255, 256, -128, -129, 65535, 65536, 2**32, -(2**31) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, -1.0, 0.5]),
    st.text(alphabet=_CHARS, max_size=4),
    st.binary(max_size=4),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=6,
)
_ITEMS = st.lists(st.one_of(st.just(MISSING), _VALUES), min_size=1, max_size=12)

FIXED_MIX: list[Any] = [
    "😀",
    "\uffff",
    {"a": 1},
    [1, 2],
    b"\x01",
    True,
    False,
    1.0,
    0.0,
    -0.0,
    2,
    -5,
    None,
    MISSING,
    "a",
    "",
    b"",
    [],
    {},
    [1],
    float("inf"),
    float("-inf"),
    2**40,
]


class Mixed:
    """One open database reused across hypothesis examples; each example its own group."""

    def __init__(self, runner: asyncio.Runner, db: Any) -> None:
        self.runner = runner
        self.db = db
        self.group = 0

    def load(self, values: list[Any]) -> tuple[int, list[str]]:
        self.group += 1
        docs = [
            {"g": self.group, "i": i} if x is MISSING else {"g": self.group, "i": i, "v": x}
            for i, x in enumerate(values)
        ]
        ids = self.runner.run(insert(self.db, docs))
        return self.group, ids

    def order(self, group: int, ops: list[tuple[str, str, Any]], order: str) -> list[int]:
        got = self.runner.run(
            scan(self.db, index="by_g_v", ops=[("eq", "g", group), *ops], order=order)
        )
        return [d["i"] for d in got]

    def docs(self, group: int) -> list[dict[str, Any]]:
        return self.runner.run(scan(self.db, index="by_g_v", ops=[("eq", "g", group)]))


@pytest.fixture
def mixed(db_url: str, app: Path) -> Any:
    async def open_db() -> Any:
        return await reactive.open(db_url, app=app)

    with asyncio.Runner() as runner:
        db = runner.run(open_db())
        try:
            yield Mixed(runner, db)
        finally:
            runner.run(db.close())


def expected_order(values: list[Any]) -> list[int]:
    # Equal values keep insertion order (_creationTime, then _id, end every index key).
    return sorted(range(len(values)), key=lambda i: (ref_key(values[i]), i))


def strict_index(values: list[Any], x: Any) -> int:
    """The index of ``x`` in ``values`` by Convex equality (True is not 1, -0.0 is not 0.0)."""
    return next(i for i, y in enumerate(values) if strict_same(x, y))


def test_mixed_type_order_fixed(mixed: Mixed) -> None:
    group, _ = mixed.load(FIXED_MIX)
    got = mixed.order(group, [], "asc")
    expected = expected_order(FIXED_MIX)
    assert got == expected
    assert mixed.order(group, [], "desc") == expected[::-1]
    position = {i: p for p, i in enumerate(got)}

    def pos(x: Any) -> int:
        return position[strict_index(FIXED_MIX, x)]

    # Spot checks straight from the spec's text.
    assert pos(MISSING) < pos(None) < pos(-5) < pos(2) < pos(2**40)
    assert pos(2**40) < pos(float("-inf"))  # every int64 < every float64
    assert pos(2) < pos(1.0)
    assert pos(-0.0) + 1 == pos(0.0)  # -0.0 just before 0.0, and not equal to it
    assert pos(float("inf")) < pos(False) < pos(True) < pos("")
    assert pos("a") < pos("\uffff") < pos("😀")  # UTF-8 order, not UTF-16
    assert pos("😀") < pos(b"") < pos(b"\x01") < pos([]) < pos([1]) < pos([1, 2]) < pos({})
    assert pos({}) < pos({"a": 1})
    # Values read back unchanged, -0.0 included.
    back = {d["i"]: d.get("v", MISSING) for d in mixed.docs(group)}
    for i, x in enumerate(FIXED_MIX):
        assert strict_same(back[i], x), (x, back[i])
    # eq on -0.0 does not match 0.0 and vice versa; int64 1 is not 1.0 nor True.
    assert mixed.order(group, [("eq", "v", -0.0)], "asc") == [strict_index(FIXED_MIX, -0.0)]
    assert mixed.order(group, [("eq", "v", 0.0)], "asc") == [strict_index(FIXED_MIX, 0.0)]
    assert mixed.order(group, [("eq", "v", 1)], "asc") == []
    assert mixed.order(group, [("eq", "v", 1.0)], "asc") == [strict_index(FIXED_MIX, 1.0)]
    assert mixed.order(group, [("eq", "v", True)], "asc") == [strict_index(FIXED_MIX, True)]


_HYPOTHESIS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_mixed_type_order_matches_reference(mixed: Mixed) -> None:
    @_HYPOTHESIS
    @given(values=_ITEMS)
    def check(values: list[Any]) -> None:
        group, _ = mixed.load(values)
        expected = expected_order(values)
        assert mixed.order(group, [], "asc") == expected
        assert mixed.order(group, [], "desc") == expected[::-1]
        back = {d["i"]: d.get("v", MISSING) for d in mixed.docs(group)}
        for i, x in enumerate(values):
            assert strict_same(back[i], x), (x, back[i])

    check()


def test_mixed_type_ranges_match_reference(mixed: Mixed) -> None:
    @_HYPOTHESIS
    @given(
        values=_ITEMS,
        data=st.data(),
        lower=st.sampled_from([None, "gt", "gte", "eq"]),
        upper=st.sampled_from([None, "lt", "lte"]),
    )
    def check(values: list[Any], data: Any, lower: str | None, upper: str | None) -> None:
        group, _ = mixed.load(values)
        present = [x for x in values if x is not MISSING] or [None]
        ops: list[tuple[str, str, Any]] = []
        tests = []
        if lower == "eq":
            value = data.draw(st.one_of(st.sampled_from(present), _VALUES), label="eq")
            ops.append(("eq", "v", value))
            tests.append(lambda k, value=value: k == ref_key(value))
            lower = upper = None
        if lower:
            lo = data.draw(st.one_of(st.sampled_from(present), _VALUES), label="lower")
            ops.append((lower, "v", lo))
            tests.append(
                (lambda k, lo=lo: k > ref_key(lo))
                if lower == "gt"
                else (lambda k, lo=lo: k >= ref_key(lo))
            )
        if upper:
            hi = data.draw(st.one_of(st.sampled_from(present), _VALUES), label="upper")
            ops.append((upper, "v", hi))
            tests.append(
                (lambda k, hi=hi: k < ref_key(hi))
                if upper == "lt"
                else (lambda k, hi=hi: k <= ref_key(hi))
            )
        expected = [i for i in expected_order(values) if all(t(ref_key(values[i])) for t in tests)]
        assert mixed.order(group, ops, "asc") == expected
        assert mixed.order(group, ops, "desc") == expected[::-1]

    check()


@pytest.mark.parametrize("kind", [str, bytes])
async def test_range_bounds_with_nul_extension(db: Any, kind: type) -> None:
    """ "a\\x00" sorts after "a" (a prefix sorts first) and differs from it, so eq("a") and
    lte("a") exclude it and gt("a") includes it; the same for bytes."""

    def val(s: str) -> Any:
        return s if kind is str else s.encode()

    await insert(
        db,
        [
            {"name": n, "g": 1, "v": val(s)}
            for n, s in [("a", "a"), ("a0", "a\x00"), ("a0b", "a\x00b"), ("b", "b"), ("empty", "")]
        ],
    )
    everything = ["empty", "a", "a0", "a0b", "b"]
    assert names(await scan(db, index="by_g_v", ops=[("eq", "g", 1)])) == everything

    async def rng(op: str, s: str) -> list[str]:
        return names(await scan(db, index="by_g_v", ops=[("eq", "g", 1), (op, "v", val(s))]))

    assert await rng("eq", "a") == ["a"]
    assert await rng("eq", "a\x00") == ["a0"]
    assert await rng("eq", "") == ["empty"]
    assert await rng("gt", "a") == ["a0", "a0b", "b"]
    assert await rng("gte", "a") == ["a", "a0", "a0b", "b"]
    assert await rng("lt", "a") == ["empty"]
    assert await rng("lte", "a") == ["empty", "a"]
    assert await rng("gt", "") == ["a", "a0", "a0b", "b"]
    assert await rng("lte", "") == ["empty"]
    assert await rng("gt", "a\x00") == ["a0b", "b"]
    assert await rng("lte", "a\x00") == ["empty", "a", "a0"]


# ---------------------------------------------------------------------------------------
# A mutation reads its own writes
# ---------------------------------------------------------------------------------------


async def test_reads_see_own_writes(db: Any) -> None:
    ids = await insert(
        db,
        [
            {"name": "x10", "a": 1, "b": 10},
            {"name": "x5", "a": 1, "b": 5},
            {"name": "x20", "a": 1, "b": 20},
            {"name": "other", "a": 2, "b": 5},
        ],
    )
    snaps = await db.mutation("f:own_writes", {"existing": ids[0]})
    assert snaps == {
        "start": ["x5", "x10", "x20"],
        "after_insert": ["x5", "new", "x10", "x20"],  # ties on b: older document first
        "after_insert_desc": ["x20", "x10", "new", "x5"],
        "after_insert_range": ["x5", "new"],
        "get_new": "new",
        "after_patch_new": ["x5", "x10", "x20", "new"],
        "after_patch_range": ["x5"],
        "after_patch_existing": ["x5", "x20", "new", "x10"],
        "first_desc": "x10",
        "after_delete": ["x5", "x20", "new"],
        "get_deleted": None,
        "take2": ["x5", "x20"],
        "count_all": 4,
    }
    # And it all committed.
    after = await scan(db, index="by_a_b", ops=[("eq", "a", 1)])
    assert names(after) == ["x5", "x20", "new"]
    assert await db.query("f:get", {"id": ids[0]}) is None


# ---------------------------------------------------------------------------------------
# Randomized: random writes against a plain-Python model of one table
# ---------------------------------------------------------------------------------------

_DOMAIN: list[Any] = [
    MISSING,
    None,
    0,
    1,
    2,
    -1,
    1.0,
    0.5,
    -0.0,
    0.0,
    False,
    True,
    "",
    "x",
    "y",
    b"z",
    [1],
    {"k": 1},
]


def _rand_value(rng: random.Random) -> Any:
    return rng.choice(_DOMAIN)


def _doc(rng: random.Random, serial: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": f"d{serial}"}
    for f in ("a", "b"):
        x = _rand_value(rng)
        if x is not MISSING:
            doc[f] = x
    return doc


class Model:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}  # id -> fields incl. _creationTime

    def key(self, doc: dict[str, Any]) -> tuple[Any, ...]:
        return (
            ref_key(doc.get("a", MISSING)),
            ref_key(doc.get("b", MISSING)),
            ref_key(doc["_creationTime"]),
            ref_key(doc["_id"]),
        )

    def query(self, ops: list[tuple[str, str, Any]], order: str, take: int | None) -> list[str]:
        def ok(doc: dict[str, Any]) -> bool:
            for op, field, value in ops:
                k, b = ref_key(doc.get(field, MISSING)), ref_key(value)
                if not {"eq": k == b, "gt": k > b, "gte": k >= b, "lt": k < b, "lte": k <= b}[op]:
                    return False
            return True

        hits = sorted((d for d in self.docs.values() if ok(d)), key=self.key)
        if order == "desc":
            hits.reverse()
        if take is not None:
            hits = hits[:take]
        return [d["_id"] for d in hits]


def _random_range(rng: random.Random) -> list[tuple[str, str, Any]]:
    shape = rng.randrange(5)
    ops: list[tuple[str, str, Any]] = []
    present = [x for x in _DOMAIN if x is not MISSING]
    if shape == 0:
        return ops
    if shape in (1, 2, 3):
        ops.append(("eq", "a", rng.choice(present)))
        field = "b"
    else:
        field = "a"
    if shape in (2, 3, 4):
        if rng.random() < 0.7:
            ops.append((rng.choice(["gt", "gte"]), field, rng.choice(present)))
        if rng.random() < 0.7:
            ops.append((rng.choice(["lt", "lte"]), field, rng.choice(present)))
    if shape == 3 and rng.random() < 0.5 and len(ops) == 1:
        ops.append(("eq", "b", rng.choice(present)))
    return ops


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_random_writes_match_model(db: Any, seed: int) -> None:
    rng = random.Random(seed)
    model = Model()
    serial = 0
    for _step in range(40):
        ops: list[list[Any]] = []
        touched: set[str] = set()
        deleted: set[str] = set()
        for _ in range(rng.randint(1, 4)):
            live = [i for i in model.docs if i not in deleted]
            kind = rng.random()
            if kind < 0.5 or not live:
                serial += 1
                ops.append(["insert", _doc(rng, serial)])
            elif kind < 0.7:
                target = rng.choice(live)
                fields: dict[str, Any] = {}
                for f in ("a", "b"):
                    if rng.random() < 0.6:
                        x = _rand_value(rng)
                        if x is not MISSING:
                            fields[f] = x
                ops.append(["patch", target, fields])
                touched.add(target)
            elif kind < 0.85:
                target = rng.choice(live)
                serial += 1
                ops.append(["replace", target, _doc(rng, serial)])
                touched.add(target)
            else:
                target = rng.choice(live)
                ops.append(["delete", target])
                deleted.add(target)
        new_ids = await db.mutation("f:apply", {"ops": ops})
        # Apply to the model; read back system fields of new documents from the database.
        it = iter(new_ids)
        for op in ops:
            if op[0] == "insert":
                new_id = next(it)
                got = await db.query("f:get", {"id": new_id})
                assert got is not None
                model.docs[new_id] = {**op[1], "_id": new_id, "_creationTime": got["_creationTime"]}
            elif op[0] == "patch":
                model.docs[op[1]].update(op[2])
            elif op[0] == "replace":
                old = model.docs[op[1]]
                model.docs[op[1]] = {
                    **op[2],
                    "_id": old["_id"],
                    "_creationTime": old["_creationTime"],
                }
            else:
                del model.docs[op[1]]
        for _ in range(6):
            rops = _random_range(rng)
            order = rng.choice(["asc", "desc"])
            take = rng.choice([None, None, 1, 2, 5])
            kw: dict[str, Any] = {"index": "by_a_b", "ops": rops, "order": order}
            if take is not None:
                kw.update(end="take", take=take)
            got = await scan(db, **kw)
            assert [d["_id"] for d in got] == model.query(rops, order, take), (rops, order, take)
        # The whole table agrees document by document.
        everything = await scan(db, index="by_a_b")
        assert len(everything) == len(model.docs)
        for d in everything:
            m = model.docs[d["_id"]]
            assert set(d) == set(m)
            assert all(strict_same(d[k], m[k]) for k in d)
