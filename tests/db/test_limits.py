"""Limits and bad input: every limit and every wrong type gets a clear error, and afterwards
the database is usable and unchanged (docs/data-model.md, "Documents and values";
docs/guarantees.md, "Limits").

Each test takes a snapshot of every table's documents before the bad call and compares it
after, then runs ``db.check()`` (indexes against documents) and a good write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.errors import (
    ArgumentValidationError,
    DocumentNotFoundError,
    FunctionNotFoundError,
    InvalidIdError,
    InvalidValueError,
    LimitExceededError,
    ReactiveError,
    SchemaValidationError,
    TableNotFoundError,
    ValidationError,
)
from reactive.functions import canonicalize_path
from reactive.values import Int64

MakeApp = Callable[[dict[str, str]], Path]

# --------------------------------------------------------------------------------------------
# helpers


async def snapshot(db: reactive.Database) -> dict[str, list[dict[str, Any]]]:
    """Every table (by name) with all its documents, sorted by id, at the newest snapshot."""
    engine = db._engine
    ts = engine.visible_ts
    out: dict[str, list[dict[str, Any]]] = {}
    for table in engine.tables():
        docs: list[dict[str, Any]] = []
        after = None
        while True:
            page, after = engine.table_page(table["name"], ts, after, 500)
            docs.extend(page)
            if after is None:
                break
        out[table["name"]] = sorted(docs, key=lambda d: d["_id"])
    return out


async def assert_consistent(db: reactive.Database) -> None:
    report = await db.check()
    assert report["problems"] == [], report


async def assert_unchanged(db: reactive.Database, before: dict[str, Any]) -> None:
    assert await snapshot(db) == before
    await assert_consistent(db)


# --------------------------------------------------------------------------------------------
# values: per-value and per-document limits, unsupported types

VALUES_APP = {
    "m.py": '''
import datetime

from reactive import mutation, query


def nested_objects(levels):
    """A document with `levels` levels of objects, the document itself counted."""
    x = 1
    for _ in range(levels - 1):
        x = {"a": x}
    return {"d": x} if levels > 1 else {"d": 1}


def nested_arrays(levels):
    x = 1
    for _ in range(levels - 1):
        x = [x]
    return {"d": x}


def value(kind):
    if kind == "size_ok":
        return {"s": "x" * ((1 << 20) - 1000)}
    if kind == "size_over":
        return {"s": "x" * (1 << 20)}
    if kind == "depth_ok":
        return nested_objects(64)
    if kind == "depth_over":
        return nested_objects(65)
    if kind == "array_depth_ok":
        return nested_arrays(64)
    if kind == "array_depth_over":
        return nested_arrays(65)
    if kind == "fields_ok":
        return {"o": {f"f{i}": i for i in range(1024)}}
    if kind == "fields_over":
        return {"o": {f"f{i}": i for i in range(1025)}}
    if kind == "top_fields_over":
        return {f"f{i}": i for i in range(1025)}
    if kind == "array_ok":
        return {"a": [0] * 8192}
    if kind == "array_over":
        return {"a": [0] * 8193}
    if kind == "dollar":
        return {"o": {"$x": 1}}
    if kind == "top_dollar":
        return {"$x": 1}
    if kind == "nonprintable":
        return {"o": {"a\\x01b": 1}}
    if kind == "non_ascii":
        return {"o": {"caf\\u00e9": 1}}
    if kind == "name_ok":
        return {"o": {"n" * 1024: 1}}
    if kind == "name_over":
        return {"o": {"n" * 1025: 1}}
    if kind == "underscore":
        return {"_secret": 1}
    if kind == "nested_underscore_ok":
        return {"o": {"_fine": 1}}
    if kind == "system_id":
        return {"_id": "abc"}
    if kind == "int_ok":
        return {"lo": -(2**63), "hi": 2**63 - 1}
    if kind == "int_over":
        return {"n": 2**63}
    if kind == "int_under":
        return {"o": {"n": -(2**63) - 1}}
    if kind == "set":
        return {"o": {"s": {1, 2}}}
    if kind == "object":
        return {"o": [1, object()]}
    if kind == "datetime":
        return {"d": datetime.datetime(2024, 1, 1)}
    if kind == "int_key":
        return {"o": {1: "one"}}
    if kind == "tuple_ok":
        return {"t": (1, 2)}
    raise AssertionError(kind)


@mutation
async def seed(ctx, n):
    return [await ctx.db.insert("items", {"i": i}) for i in range(n)]


@mutation
async def insert(ctx, kind):
    # A good write first: it must be rolled back with the rest when the bad one fails.
    await ctx.db.insert("items", {"ok": True})
    return await ctx.db.insert("items", value(kind))


@mutation
async def patch(ctx, id, kind):
    await ctx.db.insert("items", {"ok": True})
    await ctx.db.patch(id, value(kind))


@mutation
async def replace(ctx, id, kind):
    await ctx.db.insert("items", {"ok": True})
    await ctx.db.replace(id, value(kind))


@query
async def get(ctx, id):
    return await ctx.db.get(id)


@query
async def returns(ctx, kind):
    return value(kind)


@mutation
async def mutation_returns(ctx, kind):
    await ctx.db.insert("items", {"ok": True})
    return value(kind)


@query
async def echo(ctx, **args):
    return args
''',
}


@pytest.fixture
async def vdb(db_url: str, make_app: MakeApp) -> AsyncIterator[reactive.Database]:
    db = await reactive.open(db_url, app=make_app(VALUES_APP))
    await db.mutation("m:seed", {"n": 3})
    try:
        yield db
    finally:
        await db.close()


# (kind, error classes, substrings the message must contain)
BAD_VALUES: list[tuple[str, tuple[type[BaseException], ...], tuple[str, ...]]] = [
    ("size_over", (LimitExceededError, InvalidValueError), ("document size", "1048576")),
    ("depth_over", (InvalidValueError,), ("nesting depth", "64")),
    ("array_depth_over", (InvalidValueError,), ("nesting depth", "64")),
    ("fields_over", (InvalidValueError,), ("1025", "1024", "fields")),
    ("top_fields_over", (InvalidValueError,), ("1024", "fields")),
    ("array_over", (InvalidValueError,), ("8193", "8192", "array")),
    ("dollar", (InvalidValueError,), ("$x", "reserved")),
    ("top_dollar", (InvalidValueError,), ("$x", "reserved")),
    ("nonprintable", (InvalidValueError,), ("printable ASCII",)),
    ("non_ascii", (InvalidValueError,), ("printable ASCII",)),
    ("name_over", (InvalidValueError,), ("1024", "field name")),
    ("underscore", (ValidationError,), ("_secret", "reserved")),
    ("system_id", (ValidationError,), ("_id", "reserved")),
    ("int_over", (InvalidValueError,), ("9223372036854775808", "int64 range")),
    ("int_under", (InvalidValueError,), ("-9223372036854775809", "int64 range", "o.n")),
    ("set", (InvalidValueError,), ("unsupported type set", "o.s")),
    ("object", (InvalidValueError,), ("unsupported type object", "o[1]")),
    ("datetime", (InvalidValueError,), ("unsupported type datetime", ".d")),
    ("int_key", (InvalidValueError,), ("keys must be str", "int", ".o")),
]


@pytest.mark.parametrize(
    ("kind", "classes", "words"), BAD_VALUES, ids=[case[0] for case in BAD_VALUES]
)
async def test_bad_document_is_refused_and_nothing_changes(
    vdb: reactive.Database,
    kind: str,
    classes: tuple[type[BaseException], ...],
    words: tuple[str, ...],
) -> None:
    before = await snapshot(vdb)
    with pytest.raises(classes) as info:
        await vdb.mutation("m:insert", {"kind": kind})
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    await assert_unchanged(vdb, before)
    # Still usable.
    await vdb.mutation("m:insert", {"kind": "int_ok"})
    after = await snapshot(vdb)
    assert len(after["items"]) == len(before["items"]) + 2


@pytest.mark.parametrize("op", ["patch", "replace"])
@pytest.mark.parametrize(
    "kind", ["size_over", "depth_over", "set", "int_over", "dollar", "underscore", "int_key"]
)
async def test_bad_patch_or_replace_leaves_document_unchanged(
    vdb: reactive.Database, op: str, kind: str
) -> None:
    before = await snapshot(vdb)
    target = before["items"][0]
    with pytest.raises(ReactiveError):
        await vdb.mutation(f"m:{op}", {"id": target["_id"], "kind": kind})
    await assert_unchanged(vdb, before)
    assert await vdb.query("m:get", {"id": target["_id"]}) == target


@pytest.mark.parametrize(
    "kind",
    [
        "size_ok",
        "depth_ok",
        "array_depth_ok",
        "fields_ok",
        "array_ok",
        "name_ok",
        "nested_underscore_ok",
        "int_ok",
    ],
)
async def test_values_at_the_limit_are_accepted_and_read_back(
    vdb: reactive.Database, kind: str
) -> None:
    doc_id = await vdb.mutation("m:insert", {"kind": kind})
    stored = await vdb.query("m:get", {"id": doc_id})
    expected = await vdb.query("m:returns", {"kind": kind})
    assert {k: x for k, x in stored.items() if not k.startswith("_")} == expected
    await assert_consistent(vdb)


async def test_tuple_is_stored_as_array(vdb: reactive.Database) -> None:
    doc_id = await vdb.mutation("m:insert", {"kind": "tuple_ok"})
    assert (await vdb.query("m:get", {"id": doc_id}))["t"] == [1, 2]


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("set", ("unsupported type set", "o.s")),
        ("object", ("unsupported type object",)),
        ("datetime", ("unsupported type datetime",)),
        ("int_key", ("keys must be str",)),
        ("int_over", ("int64 range",)),
        ("depth_over", ("nesting depth",)),
    ],
)
async def test_return_values_must_be_convex_values(
    vdb: reactive.Database, kind: str, words: tuple[str, ...]
) -> None:
    before = await snapshot(vdb)
    with pytest.raises(InvalidValueError) as info:
        await vdb.query("m:returns", {"kind": kind})
    for word in (*words, "m:returns"):
        assert word in str(info.value)
    # A mutation whose return value is not a value fails and writes nothing.
    with pytest.raises(InvalidValueError) as info:
        await vdb.mutation("m:mutation_returns", {"kind": kind})
    for word in words:
        assert word in str(info.value)
    await assert_unchanged(vdb, before)


@pytest.mark.parametrize("args", [[1, 2], "text", 5, (("a", 1),), b"bytes"])
async def test_arguments_must_be_a_dict(vdb: reactive.Database, args: Any) -> None:
    before = await snapshot(vdb)
    with pytest.raises(ArgumentValidationError) as info:
        await vdb.query("m:echo", args)
    assert "dict" in str(info.value) or "object" in str(info.value)
    with pytest.raises(ArgumentValidationError):
        await vdb.mutation("m:insert", args)
    await assert_unchanged(vdb, before)
    assert await vdb.query("m:echo", None) == {}
    assert await vdb.query("m:echo", {"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"kind": "int_ok", "x": 2**63}, ("int64 range", "x")),
        ({"kind": "int_ok", "x": {1, 2}}, ("unsupported type set", "x")),
        ({"kind": "int_ok", "x": {"a": object()}}, ("unsupported type object", "x.a")),
        ({"kind": "int_ok", 1: "x"}, ("keys must be str",)),
        ({"kind": "int_ok", "$x": 1}, ("$x",)),
    ],
)
async def test_arguments_must_be_values(
    vdb: reactive.Database, args: dict[Any, Any], words: tuple[str, ...]
) -> None:
    before = await snapshot(vdb)
    with pytest.raises(ValidationError) as info:
        await vdb.mutation("m:insert", args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    await assert_unchanged(vdb, before)


# --------------------------------------------------------------------------------------------
# per-transaction limits

TXN_APP = {
    "m.py": """
from reactive import mutation, query


@mutation
async def insert_many(ctx, n, size=0):
    for i in range(n):
        await ctx.db.insert("items", {"i": i, "pad": "x" * size})
    return n


@mutation
async def patch_many(ctx, ids, value):
    for doc_id in ids:
        await ctx.db.patch(doc_id, {"i": value})


@query
async def count(ctx):
    return len(await ctx.db.query("items").collect())


@query
async def take(ctx, n):
    return len(await ctx.db.query("items").take(n))


@mutation
async def count_then_write(ctx):
    n = len(await ctx.db.query("items").collect())
    await ctx.db.insert("items", {"i": -1, "pad": ""})
    return n


@query
async def get_many(ctx, ids):
    return [(await ctx.db.get(i))["i"] for i in ids]


@mutation
async def write_then_get_many(ctx, ids):
    await ctx.db.insert("items", {"i": -1, "pad": ""})
    return [(await ctx.db.get(i))["i"] for i in ids]


@query
async def ids(ctx):
    out = []
    async for doc in ctx.db.query("items"):
        out.append(doc["_id"])
    return out
""",
}


async def test_documents_written_limit(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(TXN_APP), max_documents_written=10) as db:
        assert await db.mutation("m:insert_many", {"n": 10}) == 10
        before = await snapshot(db)
        with pytest.raises(LimitExceededError) as info:
            await db.mutation("m:insert_many", {"n": 11})
        assert "documents written per transaction" in str(info.value)
        assert "10" in str(info.value)
        await assert_unchanged(db, before)
        # Patching 11 existing documents counts 11 writes too; patching one twice counts once.
        await db.mutation("m:insert_many", {"n": 5})
        before = await snapshot(db)
        ids = [d["_id"] for d in before["items"]]
        with pytest.raises(LimitExceededError):
            await db.mutation("m:patch_many", {"ids": ids[:11], "value": 100})
        await assert_unchanged(db, before)
        await db.mutation("m:patch_many", {"ids": ids[:10] + ids[:10], "value": 100})
        after = {d["_id"]: d["i"] for d in (await snapshot(db))["items"]}
        assert all(after[i] == 100 for i in ids[:10])
        assert [after[i] for i in ids[10:]] == [d["i"] for d in before["items"][10:]]
        await assert_consistent(db)


async def test_default_documents_written_limit_is_16000(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(TXN_APP)) as db:
        await db.mutation("m:insert_many", {"n": 1})
        before = await snapshot(db)
        with pytest.raises(LimitExceededError) as info:
            await db.mutation("m:insert_many", {"n": 16001})
        assert "documents written per transaction" in str(info.value)
        assert "16000" in str(info.value)
        await assert_unchanged(db, before)
        assert await db.mutation("m:insert_many", {"n": 16000}) == 16000
        assert db._engine.count_documents("items") == 16001
        await assert_consistent(db)


async def test_bytes_written_limit(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(TXN_APP), max_bytes_written=10_000) as db:
        assert await db.mutation("m:insert_many", {"n": 3, "size": 1000}) == 3
        before = await snapshot(db)
        with pytest.raises(LimitExceededError) as info:
            await db.mutation("m:insert_many", {"n": 20, "size": 1000})
        assert "bytes written per transaction" in str(info.value)
        assert "10000" in str(info.value)
        await assert_unchanged(db, before)
        # One document bigger than the whole budget.
        with pytest.raises(LimitExceededError):
            await db.mutation("m:insert_many", {"n": 1, "size": 20_000})
        await assert_unchanged(db, before)


async def test_documents_read_limit(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(TXN_APP), max_documents_read=10) as db:
        await db.mutation("m:insert_many", {"n": 25})
        before = await snapshot(db)
        assert await db.query("m:take", {"n": 5}) == 5
        with pytest.raises(LimitExceededError) as info:
            await db.query("m:count")
        assert "documents read per transaction" in str(info.value)
        assert "10" in str(info.value)
        with pytest.raises(LimitExceededError) as info:
            await db.query("m:ids")
        assert "documents read per transaction" in str(info.value)
        with pytest.raises(LimitExceededError) as info:
            await db.mutation("m:count_then_write")
        assert "documents read per transaction" in str(info.value)
        await assert_unchanged(db, before)


async def test_bytes_read_limit(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(TXN_APP), max_bytes_read=8_000) as db:
        await db.mutation("m:insert_many", {"n": 20, "size": 1000})
        before = await snapshot(db)
        assert await db.query("m:take", {"n": 2}) == 2
        with pytest.raises(LimitExceededError) as info:
            await db.query("m:count")
        assert "bytes read per transaction" in str(info.value)
        assert "8000" in str(info.value)
        with pytest.raises(LimitExceededError):
            await db.mutation("m:count_then_write")
        await assert_unchanged(db, before)


async def test_read_intervals_limit(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(TXN_APP), max_read_intervals=8) as db:
        await db.mutation("m:insert_many", {"n": 20})
        before = await snapshot(db)
        ids = [d["_id"] for d in before["items"]]
        values = {d["_id"]: d["i"] for d in before["items"]}
        assert await db.query("m:get_many", {"ids": ids[:3]}) == [values[i] for i in ids[:3]]
        with pytest.raises(LimitExceededError) as info:
            await db.query("m:get_many", {"ids": ids})
        assert "index ranges read per transaction" in str(info.value)
        assert "8" in str(info.value)
        with pytest.raises(LimitExceededError):
            await db.mutation("m:write_then_get_many", {"ids": ids})
        await assert_unchanged(db, before)


# --------------------------------------------------------------------------------------------
# argument validators

ARGS_APP = {
    "m.py": """
from reactive import mutation, query, v


@query(args={
    "n": v.int64(),
    "name": v.string(),
    "x": v.optional(v.float64()),
    "tags": v.optional(v.array(v.string())),
    "who": v.optional(v.id("users")),
})
async def typed(ctx, n, name, x=None, tags=None, who=None):
    return {"n": n, "name": name, "x": x, "tags": tags, "who": who}


@mutation(args={"name": v.string()})
async def add_user(ctx, name):
    return await ctx.db.insert("users", {"name": name})
""",
}


@pytest.mark.parametrize(
    ("args", "field", "expected", "found"),
    [
        ({"n": "1", "name": "a"}, "n", "int64", "string"),
        ({"n": 1.0, "name": "a"}, "n", "int64", "float64"),
        ({"n": True, "name": "a"}, "n", "int64", "boolean"),
        ({"n": 1, "name": 2}, "name", "string", "int64"),
        ({"n": 1, "name": None}, "name", "string", "null"),
        ({"n": 1, "name": "a", "x": "1"}, "x", "float64", "string"),
        ({"n": 1, "name": "a", "tags": ["a", 3]}, "tags[1]", "string", "int64"),
        ({"n": 1, "name": "a", "tags": "a"}, "tags", "array", "string"),
        ({"n": 1}, "name", "string", "missing"),
        ({"n": 1, "name": "a", "extra": 1}, "extra", "absent", "int64"),
        ({"n": 1, "name": "a", "who": "not-an-id"}, "who", "id", "string"),
    ],
)
async def test_argument_validation_errors_name_field_expected_and_found(
    db_url: str,
    make_app: MakeApp,
    args: dict[str, Any],
    field: str,
    expected: str,
    found: str,
) -> None:
    async with reactive.open(db_url, app=make_app(ARGS_APP)) as db:
        await db.mutation("m:add_user", {"name": "u"})
        before = await snapshot(db)
        with pytest.raises(ArgumentValidationError) as info:
            await db.query("m:typed", args)
        message = str(info.value)
        for word in (field, expected, found, "m:typed"):
            assert word in message, (word, message)
        with pytest.raises(ArgumentValidationError):
            await db.mutation("m:add_user", {"name": 5})
        await assert_unchanged(db, before)


async def test_argument_validators_accept_and_convert(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(ARGS_APP)) as db:
        uid = await db.mutation("m:add_user", {"name": "u"})
        out = await db.query("m:typed", {"n": 3, "name": "a", "x": 2, "tags": [], "who": uid})
        assert out == {"n": 3, "name": "a", "x": 2.0, "tags": [], "who": uid}
        assert type(out["x"]) is float
        # Checked by v.int64(): an Int64, which stays an int64 on the wire.
        assert type(out["n"]) is Int64


# --------------------------------------------------------------------------------------------
# writes checked against the schema

SCHEMA_APP = {
    "schema.py": """
from reactive import define_schema, define_table, v

schema = define_schema({
    "users": define_table({"name": v.string(), "age": v.optional(v.float64())}),
    "posts": define_table({"author": v.id("users"), "body": v.string()}),
    "things": define_table({
        "u": v.optional(v.union(v.string(), v.int64())),
        "one": v.optional(v.literal(1)),
        "onef": v.optional(v.literal(1.0)),
        "yes": v.optional(v.literal(True)),
        "word": v.optional(v.literal("hi")),
        "tags": v.optional(v.array(v.string())),
        "scores": v.optional(v.record(v.string(), v.float64())),
        "f": v.optional(v.float64()),
        "i": v.optional(v.int64()),
        "nested": v.optional(v.object({"inner": v.string()})),
    }),
})
""",
    "m.py": """
from reactive import mutation, query


@mutation
async def insert(ctx, table, doc):
    return await ctx.db.insert(table, doc)


@mutation
async def insert_two(ctx, table, first, second):
    await ctx.db.insert(table, first)
    return await ctx.db.insert(table, second)


@mutation
async def patch(ctx, id, fields):
    await ctx.db.patch(id, fields)


@mutation
async def replace(ctx, id, doc):
    await ctx.db.replace(id, doc)


@mutation
async def delete(ctx, id):
    await ctx.db.delete(id)


@query
async def get(ctx, id):
    return await ctx.db.get(id)


@query
async def normalize(ctx, table, id):
    return ctx.db.normalize_id(table, id)


@query
async def all(ctx, table):
    return await ctx.db.query(table).collect()
""",
}


@pytest.fixture
async def sdb(db_url: str, make_app: MakeApp) -> AsyncIterator[reactive.Database]:
    db = await reactive.open(db_url, app=make_app(SCHEMA_APP))
    try:
        uid = await db.mutation("m:insert", {"table": "users", "doc": {"name": "ann"}})
        await db.mutation("m:insert", {"table": "posts", "doc": {"author": uid, "body": "hi"}})
        await db.mutation("m:insert", {"table": "things", "doc": {}})
        yield db
    finally:
        await db.close()


async def _user_id(db: reactive.Database) -> str:
    return (await db.query("m:all", {"table": "users"}))[0]["_id"]


async def _post_id(db: reactive.Database) -> str:
    return (await db.query("m:all", {"table": "posts"}))[0]["_id"]


async def test_schema_error_names_table_field_expected_and_found(sdb: reactive.Database) -> None:
    before = await snapshot(sdb)
    with pytest.raises(SchemaValidationError) as info:
        await sdb.mutation("m:insert", {"table": "users", "doc": {"name": 5}})
    err = info.value
    assert err.table == "users"
    assert err.path == "name"
    assert err.expected == "string"
    assert err.found == "int64"
    for word in ("users", "name", "string", "int64"):
        assert word in str(err)
    await assert_unchanged(sdb, before)


@pytest.mark.parametrize(
    ("table", "doc", "path", "expected", "found"),
    [
        ("users", {}, "name", "string", "missing"),
        ("users", {"name": "a", "extra": 1}, "extra", "absent", "int64"),
        ("users", {"name": "a", "age": "3"}, "age", "float64", "string"),
        ("users", {"name": "a", "age": None}, "age", "float64", "null"),
        ("things", {"u": 1.5}, "u", "union", "float64"),
        ("things", {"u": True}, "u", "union", "boolean"),
        ("things", {"one": 1.0}, "one", "literal(1)", "float64"),
        ("things", {"one": True}, "one", "literal(1)", "boolean"),
        ("things", {"onef": 1}, "onef", "literal(1.0)", "int64"),
        ("things", {"onef": True}, "onef", "literal(1.0)", "boolean"),
        ("things", {"yes": 1}, "yes", "literal(True)", "int64"),
        ("things", {"yes": 1.0}, "yes", "literal(True)", "float64"),
        ("things", {"word": "ho"}, "word", "literal('hi')", "string"),
        ("things", {"tags": ["a", 2]}, "tags[1]", "string", "int64"),
        ("things", {"tags": "a"}, "tags", "array", "string"),
        ("things", {"scores": {"a": "x"}}, "scores.a", "float64", "string"),
        ("things", {"scores": [1.0]}, "scores", "record", "array"),
        ("things", {"i": 3.0}, "i", "int64", "float64"),
        ("things", {"i": False}, "i", "int64", "boolean"),
        ("things", {"f": "1"}, "f", "float64", "string"),
        ("things", {"nested": {"inner": 1}}, "nested.inner", "string", "int64"),
        ("things", {"nested": {}}, "nested.inner", "string", "missing"),
    ],
)
async def test_schema_refuses_invalid_documents(
    sdb: reactive.Database,
    table: str,
    doc: dict[str, Any],
    path: str,
    expected: str,
    found: str,
) -> None:
    before = await snapshot(sdb)
    with pytest.raises(SchemaValidationError) as info:
        # A valid first insert in the same mutation must be rolled back too.
        first = {"name": "ok"} if table == "users" else {}
        await sdb.mutation("m:insert_two", {"table": table, "first": first, "second": doc})
    err = info.value
    assert err.table == table
    assert err.path == path
    assert expected in err.expected, (expected, err.expected)
    assert found in err.found, (found, err.found)
    message = str(err)
    for word in (table, path, expected):
        assert word in message, (word, message)
    await assert_unchanged(sdb, before)


async def test_schema_id_validator(sdb: reactive.Database) -> None:
    uid = await _user_id(sdb)
    pid = await _post_id(sdb)
    before = await snapshot(sdb)
    for bad in (pid, "garbage", "", uid[:-1], uid + "x"):
        with pytest.raises(SchemaValidationError) as info:
            await sdb.mutation("m:insert", {"table": "posts", "doc": {"author": bad, "body": ""}})
        assert info.value.path == "author"
        assert "users" in info.value.expected
    with pytest.raises(SchemaValidationError) as info:
        await sdb.mutation("m:insert", {"table": "posts", "doc": {"author": 7, "body": ""}})
    assert info.value.found == "int64"
    await assert_unchanged(sdb, before)
    new = await sdb.mutation("m:insert", {"table": "posts", "doc": {"author": uid, "body": "x"}})
    assert (await sdb.query("m:get", {"id": new}))["author"] == uid


async def test_schema_accepts_valid_documents_and_converts(sdb: reactive.Database) -> None:
    docs = [
        {"u": "s"},
        {"u": 5},
        {"one": 1, "onef": 1.0, "yes": True, "word": "hi"},
        {"tags": ["a", "b"], "scores": {"a": 1.5, "b": 2}},
        {"f": 3, "i": -(2**63)},
        {"nested": {"inner": "x"}},
    ]
    for doc in docs:
        doc_id = await sdb.mutation("m:insert", {"table": "things", "doc": doc})
        stored = await sdb.query("m:get", {"id": doc_id})
        assert {k: x for k, x in stored.items() if not k.startswith("_")} == doc
    # v.float64 stores an int as a float; v.int64 keeps an int; union keeps the member type.
    things = await sdb.query("m:all", {"table": "things"})
    by_kind = {tuple(sorted(k for k in d if not k.startswith("_"))): d for d in things}
    f_doc = by_kind[("f", "i")]
    assert type(f_doc["f"]) is float and f_doc["f"] == 3.0
    assert type(f_doc["i"]) is Int64
    scores = by_kind[("scores", "tags")]["scores"]
    assert type(scores["b"]) is float
    unions = [d["u"] for d in things if "u" in d]
    assert sorted(map(type, unions), key=lambda t: t.__name__) == [Int64, str]
    user = await sdb.mutation("m:insert", {"table": "users", "doc": {"name": "b", "age": 40}})
    got = await sdb.query("m:get", {"id": user})
    assert type(got["age"]) is float and got["age"] == 40.0
    await assert_consistent(sdb)


async def test_float64_and_int64_types_survive_reopen(db_url: str, make_app: MakeApp) -> None:
    app = make_app(SCHEMA_APP)
    async with reactive.open(db_url, app=app) as db:
        doc_id = await db.mutation(
            "m:insert", {"table": "things", "doc": {"f": 2**53, "i": 2**53 + 1, "u": 7}}
        )
        with pytest.raises(SchemaValidationError) as info:
            await db.mutation("m:insert", {"table": "users", "doc": "ann"})
        assert info.value.found == "string"
    async with reactive.open(db_url, app=app) as db:
        got = await db.query("m:get", {"id": doc_id})
        assert type(got["f"]) is float and got["f"] == float(2**53)
        assert type(got["i"]) is Int64 and got["i"] == 2**53 + 1
        assert type(got["u"]) is Int64 and got["u"] == 7
        assert type(got["_creationTime"]) is float


async def test_invalid_patch_and_replace_leave_document_unchanged(sdb: reactive.Database) -> None:
    uid = await _user_id(sdb)
    before = await snapshot(sdb)
    original = await sdb.query("m:get", {"id": uid})
    bad_patches = [{"name": 5}, {"extra": 1}, {"age": "x"}, {"_id": await _post_id(sdb)}]
    for fields in bad_patches:
        with pytest.raises(SchemaValidationError) as info:
            await sdb.mutation("m:patch", {"id": uid, "fields": fields})
        assert info.value.table == "users"
    for doc in [{}, {"name": 1}, {"name": "x", "more": True}]:
        with pytest.raises(SchemaValidationError):
            await sdb.mutation("m:replace", {"id": uid, "doc": doc})
    await assert_unchanged(sdb, before)
    assert await sdb.query("m:get", {"id": uid}) == original
    # A valid patch works afterwards and keeps the other fields and system fields.
    await sdb.mutation("m:patch", {"id": uid, "fields": {"age": 30}})
    got = await sdb.query("m:get", {"id": uid})
    assert got == {**original, "age": 30.0}


async def test_insert_into_table_not_in_schema(sdb: reactive.Database) -> None:
    before = await snapshot(sdb)
    with pytest.raises(TableNotFoundError) as info:
        await sdb.mutation("m:insert", {"table": "nope", "doc": {"a": 1}})
    assert "nope" in str(info.value)
    with pytest.raises(TableNotFoundError):
        await sdb.query("m:all", {"table": "nope"})
    await assert_unchanged(sdb, before)
    assert "nope" not in {t["name"] for t in sdb._engine.tables()}


async def test_failed_mutation_creates_no_table(db_url: str, make_app: MakeApp) -> None:
    """A mutation that inserts into a new table and then fails leaves no trace, not even
    an empty table (Convex creates tables transactionally)."""
    app = make_app(
        {
            "m.py": """
from reactive import mutation, query


@mutation
async def fail_after_insert(ctx):
    await ctx.db.insert("brand_new", {"a": 1})
    raise ValueError("boom")


@mutation
async def seed(ctx):
    return await ctx.db.insert("items", {"a": 1})
""",
        }
    )
    async with reactive.open(db_url, app=app) as db:
        await db.mutation("m:seed")
        before = await snapshot(db)
        with pytest.raises(ValueError, match="boom"):
            await db.mutation("m:fail_after_insert")
        await assert_unchanged(db, before)


async def test_query_of_missing_table_creates_no_table(db_url: str, make_app: MakeApp) -> None:
    """Without a schema, reading a table that does not exist gives nothing and changes
    nothing (a query is read-only)."""
    app = make_app(
        {
            "m.py": """
from reactive import mutation, query


@query
async def read(ctx, table):
    return await ctx.db.query(table).collect()


@mutation
async def seed(ctx):
    return await ctx.db.insert("items", {"a": 1})
""",
        }
    )
    async with reactive.open(db_url, app=app) as db:
        await db.mutation("m:seed")
        before = await snapshot(db)
        assert await db.query("m:read", {"table": "never_written"}) == []
        await assert_unchanged(db, before)


# --------------------------------------------------------------------------------------------
# ids


async def test_malformed_ids(sdb: reactive.Database) -> None:
    uid = await _user_id(sdb)
    before = await snapshot(sdb)
    garbage = ["garbage", "", "0" * 32, uid[:-1], uid[:-1] + ("a" if uid[-1] != "a" else "b")]
    for text in garbage:
        with pytest.raises(InvalidIdError):
            await sdb.query("m:get", {"id": text})
        with pytest.raises(InvalidIdError):
            await sdb.mutation("m:patch", {"id": text, "fields": {"name": "z"}})
        with pytest.raises(InvalidIdError):
            await sdb.mutation("m:replace", {"id": text, "doc": {"name": "z"}})
        with pytest.raises(InvalidIdError):
            await sdb.mutation("m:delete", {"id": text})
        assert await sdb.query("m:normalize", {"table": "users", "id": text}) is None
    for not_a_string in (5, None, ["x"]):
        with pytest.raises(InvalidIdError):
            await sdb.query("m:get", {"id": not_a_string})
        with pytest.raises(InvalidIdError):
            await sdb.mutation("m:delete", {"id": not_a_string})
    await assert_unchanged(sdb, before)


async def test_id_of_deleted_document(sdb: reactive.Database) -> None:
    uid = await sdb.mutation("m:insert", {"table": "users", "doc": {"name": "gone"}})
    await sdb.mutation("m:delete", {"id": uid})
    before = await snapshot(sdb)
    assert await sdb.query("m:get", {"id": uid}) is None
    with pytest.raises(DocumentNotFoundError) as info:
        await sdb.mutation("m:patch", {"id": uid, "fields": {"name": "back"}})
    assert uid in str(info.value)
    with pytest.raises(DocumentNotFoundError):
        await sdb.mutation("m:replace", {"id": uid, "doc": {"name": "back"}})
    with pytest.raises(DocumentNotFoundError):
        await sdb.mutation("m:delete", {"id": uid})
    # Still a well-formed id of the table.
    assert await sdb.query("m:normalize", {"table": "users", "id": uid}) == uid
    await assert_unchanged(sdb, before)


async def test_normalize_id(sdb: reactive.Database) -> None:
    uid = await _user_id(sdb)
    pid = await _post_id(sdb)
    assert await sdb.query("m:normalize", {"table": "users", "id": uid}) == uid
    assert await sdb.query("m:normalize", {"table": "posts", "id": pid}) == pid
    assert await sdb.query("m:normalize", {"table": "posts", "id": uid}) is None
    assert await sdb.query("m:normalize", {"table": "users", "id": pid}) is None
    assert await sdb.query("m:normalize", {"table": "users", "id": uid.upper()}) is None
    assert await sdb.query("m:normalize", {"table": "things", "id": uid}) is None


# --------------------------------------------------------------------------------------------
# function paths

PATHS_APP = {
    "messages.py": """
from reactive import internal_query, mutation, query


@query
async def default(ctx):
    return "default"


@query
async def list(ctx):
    return "list"


@mutation
async def send(ctx):
    return await ctx.db.insert("messages", {"body": "x"})


@internal_query
async def secret(ctx):
    return "secret"
""",
    "admin/users.py": """
from reactive import query


@query
async def get(ctx):
    return "admin get"
""",
}


@pytest.fixture
async def pdb(db_url: str, make_app: MakeApp) -> AsyncIterator[reactive.Database]:
    db = await reactive.open(db_url, app=make_app(PATHS_APP))
    try:
        await db.mutation("messages:send")
        yield db
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("path", "result"),
    [
        ("messages:list", "list"),
        ("messages.js:list", "list"),
        ("messages", "default"),
        ("messages:default", "default"),
        ("messages.js", "default"),
        ("messages.js:default", "default"),
        ("admin/users:get", "admin get"),
        ("admin/users.js:get", "admin get"),
    ],
)
async def test_path_spellings(pdb: reactive.Database, path: str, result: str) -> None:
    assert await pdb.query(path) == result


def test_canonicalize_path() -> None:
    assert canonicalize_path("messages") == "messages:default"
    assert canonicalize_path("messages.js:list") == "messages:list"
    assert canonicalize_path("admin/users.js:get") == "admin/users:get"
    # Split at the last colon: the module part "a:b" is not a valid module path.
    for bad in (":", "", "a:b:c", "messages:", ":list", "/messages:list", "messages:1x"):
        with pytest.raises(FunctionNotFoundError):
            canonicalize_path(bad)


@pytest.mark.parametrize(
    "path",
    [
        "nope:list",
        "messages:nope",
        "messages/list",
        ":",
        "a:b:c",
        "messages:list:extra",
        "",
        "admin:get",
    ],
)
async def test_unknown_or_bad_paths(pdb: reactive.Database, path: str) -> None:
    before = await snapshot(pdb)
    with pytest.raises(FunctionNotFoundError):
        await pdb.query(path)
    with pytest.raises(FunctionNotFoundError):
        await pdb.mutation(path)
    with pytest.raises(FunctionNotFoundError):
        await pdb.action(path)
    with pytest.raises(FunctionNotFoundError):
        pdb.subscribe(path)
    await assert_unchanged(pdb, before)
    assert await pdb.query("messages:list") == "list"


async def test_wrong_kind_and_internal(pdb: reactive.Database) -> None:
    before = await snapshot(pdb)
    with pytest.raises(FunctionNotFoundError) as info:
        await pdb.query("messages:send")
    assert "mutation" in str(info.value)
    with pytest.raises(FunctionNotFoundError):
        await pdb.mutation("messages:list")
    with pytest.raises(FunctionNotFoundError):
        await pdb.action("messages:list")
    with pytest.raises(FunctionNotFoundError) as info:
        await pdb.query("messages:secret")
    assert "internal" in str(info.value)
    with pytest.raises(FunctionNotFoundError):
        pdb.subscribe("messages:secret")
    await assert_unchanged(pdb, before)
    # Admin callers may reach internal functions.
    assert await pdb.query("messages:secret", internal=True) == "secret"
