"""The persistence contract, one suite run unchanged on SQLite, PostgreSQL and MySQL.

* Every ``Persistence`` method: ``load`` of an empty database, ``write_batch`` (through the
  engine, by running mutations: the rows each commit writes), ``get_global``/``set_global``,
  ``check``, ``read_documents`` and ``read_index_range`` at a timestamp (including index keys
  longer than the 1024 bytes the server backends keep in their indexed prefix column),
  ``close``.
* Every query shape (eq, range, order, take, first/unique, paginate, filter) gives the same
  results as a Python model, before and after a reopen (which rebuilds everything from the
  backend), so every backend gives identical results.
* Reopening keeps ids, ``_creationTime`` and every value bit for bit; a new commit's
  timestamp is higher than everything before it.
* Schema changes at open: an added index is backfilled, a removed one dropped (its rows
  gone, its commits' counts updated so the log still verifies), ``check`` passes.
* Serializability under concurrency (bank transfers), large documents, and corruption
  refused at open with a ``CorruptionError`` naming the record.

Source: ARCHITECTURE.md, docs/design/log-records.md, rust/core/src/log/recovery.rs,
python/reactive/persistence/base.py.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive import _core
from reactive.errors import ConvexError, CorruptionError, DatabaseClosedError, WriteConflict
from reactive.persistence import open_persistence

MakeApp = Callable[[dict[str, str]], Path]
RawDb = Any  # the ``raw_db`` fixture of conftest.py: SQL straight to the stored tables

FUNCTIONS = """
import asyncio

from reactive import ConvexError, mutation, query, v


@mutation
async def insert(ctx, table, doc):
    return await ctx.db.insert(table, doc)


@mutation
async def insert_many(ctx, table, docs):
    return [await ctx.db.insert(table, d) for d in docs]


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
async def all(ctx, table):
    return await ctx.db.query(table).collect()


@query
async def by_index(ctx, table, index, order="asc"):
    return await ctx.db.query(table).with_index(index).order(order).collect()


@query
async def shape(ctx, name, order="asc", arg=None):
    items = ctx.db.query("items")
    if name == "eq_g":
        q = items.with_index("by_g_n", lambda r: r.eq("g", arg))
    elif name == "range_n":
        q = items.with_index("by_n", lambda r: r.gte("n", 10).lt("n", 25))
    elif name == "range_n_open":
        q = items.with_index("by_n", lambda r: r.gt("n", 40))
    elif name == "range_n_closed":
        q = items.with_index("by_n", lambda r: r.gt("n", 3).lte("n", 9))
    elif name == "eq_g_range_n":
        q = items.with_index("by_g_n", lambda r: r.eq("g", "a").gt("n", 5).lte("n", 40))
    elif name == "eq_g_eq_n":
        q = items.with_index("by_g_n", lambda r: r.eq("g", "b").eq("n", arg))
    elif name == "whole_by_n":
        q = items.with_index("by_n")
    elif name == "creation":
        q = items
    elif name == "filter":
        q = items.filter(lambda f: f.and_(f.gte(f.field("f"), 0.25), f.neq(f.field("g"), "a")))
    elif name == "filter_index":
        q = items.with_index("by_g_n", lambda r: r.eq("g", "c")).filter(
            lambda f: f.eq(f.mod(f.field("n"), 2), 0)
        )
    else:
        raise ValueError(name)
    return [d["n"] for d in await q.order(order).collect()]


@query
async def take(ctx, n, order):
    docs = await ctx.db.query("items").with_index("by_n").order(order).take(n)
    return [d["n"] for d in docs]


@query
async def filter_take(ctx, n):
    q = ctx.db.query("items").filter(lambda f: f.eq(f.field("g"), "b"))
    return [d["n"] for d in await q.take(n)]


@query
async def first_unique(ctx, n):
    q = ctx.db.query("items").with_index("by_n", lambda r: r.eq("n", n))
    first = await q.first()
    unique = await ctx.db.query("items").with_index("by_n", lambda r: r.eq("n", n)).unique()
    return [None if first is None else first["n"], None if unique is None else unique["n"]]


@query
async def page(ctx, g, opts, order="asc"):
    q = ctx.db.query("items").with_index("by_g_n", lambda r: r.eq("g", g)).order(order)
    return await q.paginate(opts)


@query
async def s_range(ctx, lo, hi):
    q = ctx.db.query("longs").with_index("by_s", lambda r: r.gte("s", lo).lt("s", hi))
    return [d["i"] for d in await q.collect()]


@mutation
async def open_account(ctx, name, balance):
    return await ctx.db.insert("accounts", {"name": name, "balance": balance})


@mutation
async def transfer(ctx, src, dst, amount):
    a = await ctx.db.get(src)
    await asyncio.sleep(0)
    b = await ctx.db.get(dst)
    if a["balance"] < amount:
        raise ConvexError({"code": "INSUFFICIENT"})
    await ctx.db.patch(src, {"balance": a["balance"] - amount})
    await asyncio.sleep(0)
    await ctx.db.patch(dst, {"balance": b["balance"] + amount})
"""

TABLES = """
    "items": define_table({"g": v.string(), "n": v.int64(), "f": v.float64()})
        .index("by_g_n", ["g", "n"]).index("by_n", ["n"]),
    "longs": define_table({"s": v.string(), "i": v.int64()}).index("by_s", ["s"]),
    "accounts": define_table({"name": v.string(), "balance": v.int64()}),
    "values": define_table(),
    "big": define_table(),
"""


def schema(extra_items_index: str = "", tables: str = TABLES) -> str:
    return f"""
from reactive import define_schema, define_table, v

schema = define_schema({{
{tables.replace('.index("by_n", ["n"]),', '.index("by_n", ["n"])' + extra_items_index + ",")}
}})
"""


@pytest.fixture
def app(make_app: MakeApp) -> Path:
    return make_app({"m.py": FUNCTIONS, "schema.py": schema()})


# --------------------------------------------------------------------------------------------
# helpers


def table_indexes(db: reactive.Database, table: str) -> dict[str, int]:
    for t in db._engine.tables():
        if t["name"] == table:
            return {i["name"]: i["id"] for i in t["indexes"]}
    raise AssertionError(f"no table {table}")


def snapshot(db: reactive.Database) -> dict[str, list[dict[str, Any]]]:
    """Every table's documents at the newest snapshot, sorted by id."""
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


def exact(value: Any) -> Any:
    """A form of a value that compares bit for bit (floats by their bits, types kept)."""
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int):
        return ("i", value)
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    return value


async def check_ok(db: reactive.Database) -> dict[str, Any]:
    report = await db.check()
    assert report["problems"] == [], report["problems"][:5]
    return report


async def row_counts(raw_db: RawDb, url: str) -> dict[str, int]:
    async with raw_db(url) as raw:
        return {
            t: int(await raw.scalar(f"SELECT count(*) FROM {t}"))
            for t in ("commits", "documents", "indexes")
        }


async def commits_verify(raw_db: RawDb, url: str) -> None:
    """Every commit record's counts equal the rows stored at its timestamp (and vice versa)."""
    async with raw_db(url) as raw:
        commits = {
            int(ts): (int(d), int(i))
            for ts, d, i in await raw.fetch(
                "SELECT ts, document_count, index_entry_count FROM commits"
            )
        }
        docs = collections.Counter(int(ts) for (ts,) in await raw.fetch("SELECT ts FROM documents"))
        entries = collections.Counter(
            int(ts) for (ts,) in await raw.fetch("SELECT ts FROM indexes")
        )
    for ts, (d, i) in commits.items():
        assert (docs.get(ts, 0), entries.get(ts, 0)) == (d, i), ts
    assert set(docs) | set(entries) <= set(commits)


# --------------------------------------------------------------------------------------------
# load, globals, close


async def test_load_of_an_empty_database(backend_url: str, raw_db: RawDb) -> None:
    persistence = await open_persistence(backend_url)
    try:
        state = await persistence.load()
        assert (state.commits, state.revisions, state.max_ts) == (0, 0, 0)
        engine = _core.Engine(state)
        assert engine.tables() == []
        assert engine.visible_ts == 0
        assert await persistence.get_global("catalog") is None
        assert await persistence.get_global("max_ts") is None
        report = await persistence.check(engine)
        assert report == {"documents": 0, "index_entries": 0, "problems": []}
        assert persistence.url
        assert "reactive:reactive" not in persistence.url  # no password in the URL it shows
    finally:
        await persistence.close()
    # Opening created the tables and nothing else: a database opens on it, empty.
    async with reactive.open(backend_url) as db:
        assert db._engine.tables() == []
    assert await row_counts(raw_db, backend_url) == {"commits": 0, "documents": 0, "indexes": 0}


async def test_globals_round_trip_and_persist(backend_url: str, raw_db: RawDb) -> None:
    value = bytes(range(256)) * 3 + b"\x00end"
    persistence = await open_persistence(backend_url)
    try:
        assert await persistence.get_global("contract_test") is None
        await persistence.set_global("contract_test", b"first")
        assert await persistence.get_global("contract_test") == b"first"
        await persistence.set_global("contract_test", value)  # overwrite
        assert await persistence.get_global("contract_test") == value
        await persistence.set_global("empty", b"")
        assert await persistence.get_global("empty") == b""
    finally:
        await persistence.close()
    persistence = await open_persistence(backend_url)
    try:
        assert await persistence.get_global("contract_test") == value
        assert await persistence.get_global("empty") == b""
    finally:
        await persistence.close()
    async with raw_db(backend_url) as raw:
        assert await raw.get_global("contract_test") == value


async def test_global_names_are_exact(backend_url: str) -> None:
    """Names differing in case or trailing spaces are different globals, on every backend."""
    persistence = await open_persistence(backend_url)
    try:
        await persistence.set_global("name", b"lower")
        assert await persistence.get_global("Name") is None
        assert await persistence.get_global("name ") is None
        await persistence.set_global("NAME", b"upper")
        assert await persistence.get_global("name") == b"lower"
        assert await persistence.get_global("NAME") == b"upper"
    finally:
        await persistence.close()


async def test_close_releases_the_database(backend_url: str, app: Path) -> None:
    db = await reactive.open(backend_url, app=app)
    doc_id = await db.mutation("m:insert", {"table": "values", "doc": {"x": 1}})
    await db.close()
    await db.close()  # idempotent
    with pytest.raises(DatabaseClosedError):
        await db.query("m:get", {"id": doc_id})
    with pytest.raises(DatabaseClosedError):
        await db.mutation("m:insert", {"table": "values", "doc": {"x": 2}})
    # Closed means released: it opens again at once, with the data.
    async with reactive.open(backend_url, app=app) as again:
        assert (await again.query("m:get", {"id": doc_id}))["x"] == 1
    persistence = await open_persistence(backend_url)
    await persistence.close()
    async with reactive.open(backend_url, app=app) as again:
        assert len(await again.query("m:all", {"table": "values"})) == 1


# --------------------------------------------------------------------------------------------
# write_batch: the rows each commit writes


async def test_commits_write_the_documented_rows(
    backend_url: str, raw_db: RawDb, app: Path
) -> None:
    async with reactive.open(backend_url, app=app) as db:
        before = await row_counts(raw_db, backend_url)
        # An insert: one revision, one entry in each of by_id, by_creation_time, by_s.
        ins = await db.run_mutation("m:insert", {"table": "longs", "doc": {"s": "a", "i": 1}})
        doc_id = ins.value
        # A patch that changes the indexed field: one revision, by_s removes and adds.
        pat = await db.run_mutation("m:patch", {"id": doc_id, "fields": {"s": "b"}})
        # A patch that leaves every key: one revision, no index rows.
        same = await db.run_mutation("m:patch", {"id": doc_id, "fields": {"i": 2}})
        # A delete: one revision, a removal in each index.
        dele = await db.run_mutation("m:delete", {"id": doc_id})
        stamps = [ins.ts, pat.ts, same.ts, dele.ts]
        assert stamps == sorted(stamps) and len(set(stamps)) == 4
        assert db.timestamp == dele.ts

        async with raw_db(backend_url) as raw:
            counts = {
                int(ts): (int(d), int(i))
                for ts, d, i in await raw.fetch(
                    "SELECT ts, document_count, index_entry_count FROM commits WHERE ts >= ?",
                    ins.ts,
                )
            }
            assert sorted(counts) == stamps
            assert all(d == 1 for d, _ in counts.values())
            revs = await raw.fetch(
                "SELECT ts, id, deleted, prev_ts, value FROM documents WHERE ts >= ? ORDER BY ts",
                ins.ts,
            )
            raw_id = _core.id_bytes(doc_id)
            assert [(int(r[0]), r[1], bool(r[2])) for r in revs] == [
                (ins.ts, raw_id, False),
                (pat.ts, raw_id, False),
                (same.ts, raw_id, False),
                (dele.ts, raw_id, True),
            ]
            assert [r[3] for r in revs] == [None, ins.ts, pat.ts, same.ts]
            assert revs[3][4] is None and all(r[4] for r in revs[:3])
            entries = await raw.fetch(
                f"SELECT ts, index_id, {raw.key_sql}, deleted, doc_id FROM indexes WHERE ts >= ?",
                ins.ts,
            )
            assert int((await raw.get_global("max_ts") or b"0").decode()) == dele.ts
        assert {e[4] for e in entries} == {raw_id}
        rows: dict[int, set[tuple[int, bytes, bool]]] = collections.defaultdict(set)
        for ts, index_id, key, deleted, _ in entries:
            rows[int(ts)].add((int(index_id), bytes(key), bool(deleted)))
        assert {ts: len(r) for ts, r in rows.items()} == {
            ts: i for ts, (_, i) in counts.items() if i
        }
        indexes = table_indexes(db, "longs")
        by_s = indexes["by_s"]
        # The insert adds one key in each index (by_id, by_creation_time, by_s).
        assert {(i, d) for i, _, d in rows[ins.ts]} == {(i, False) for i in indexes.values()}
        keys = {i: k for i, k, _ in rows[ins.ts]}
        # The patch of the indexed field removes by_s's old key and adds the new one; a key
        # that stays is either not rewritten or rewritten as it was.
        new_s = next(k for i, k, d in rows[pat.ts] if i == by_s and not d)
        assert new_s != keys[by_s] and new_s.startswith(_core.index_key("b"))
        assert (by_s, keys[by_s], True) in rows[pat.ts]
        stays = {(i, k, False) for i, k in keys.items() if i != by_s}
        assert rows[pat.ts] - {(by_s, keys[by_s], True), (by_s, new_s, False)} <= stays
        keys[by_s] = new_s
        # A patch that leaves every key removes nothing.
        assert rows[same.ts] <= {(i, k, False) for i, k in keys.items()}
        # The delete removes the key in each index.
        assert rows[dele.ts] == {(i, k, True) for i, k in keys.items()}

        after = await row_counts(raw_db, backend_url)
        assert {k: after[k] - before[k] for k in after} == {
            "commits": 4,
            "documents": 4,
            "indexes": len(entries),
        }

        # Concurrent commits (group commit): each its own commit record and timestamp.
        outcomes = await asyncio.gather(
            *(
                db.run_mutation("m:insert", {"table": "longs", "doc": {"s": f"c{i}", "i": i}})
                for i in range(30)
            )
        )
        stamps = [o.ts for o in outcomes]
        assert len(set(stamps)) == 30 and min(stamps) > dele.ts
        final = await row_counts(raw_db, backend_url)
        assert final["commits"] - after["commits"] == 30
        assert final["documents"] - after["documents"] == 30
        assert final["indexes"] - after["indexes"] == 90
        await commits_verify(raw_db, backend_url)
        report = await check_ok(db)
        assert report["documents"] == 30
        assert report["index_entries"] == 90


async def test_check_compares_entries_with_documents(
    backend_url: str, raw_db: RawDb, app: Path
) -> None:
    async with reactive.open(backend_url, app=app) as db:
        ids = await db.mutation(
            "m:insert_many",
            {"table": "longs", "docs": [{"s": f"s{i}", "i": i} for i in range(10)]},
        )
        report = await check_ok(db)
        assert report["documents"] == 10 and report["index_entries"] == 30
        direct = await db._persistence.check(db._engine)
        # db.check() adds the search indexes it verified (none here).
        assert {**direct, "search_indexes": 0} == report
        # Remove the by_s entry of one document behind the database's back: check sees it.
        by_s = table_indexes(db, "longs")["by_s"]
        async with raw_db(backend_url) as raw:
            changed = await raw.execute(
                "DELETE FROM indexes WHERE index_id = ? AND doc_id = ?",
                by_s,
                _core.id_bytes(ids[3]),
            )
            assert changed == 1
        report = await db.check()
        assert len(report["problems"]) == 1, report
        assert ids[3] in report["problems"][0]
        assert "longs.by_s" in report["problems"][0]


# --------------------------------------------------------------------------------------------
# read_documents, read_index_range


async def test_read_documents_at_a_timestamp(backend_url: str, raw_db: RawDb, app: Path) -> None:
    async with reactive.open(backend_url, app=app) as db:
        p = db._persistence
        first = await db.run_mutation("m:insert", {"table": "values", "doc": {"v": "first"}})
        doc_id = first.value
        other = await db.mutation("m:insert", {"table": "values", "doc": {"v": "other"}})
        second = await db.run_mutation("m:replace", {"id": doc_id, "doc": {"v": "second"}})
        gone = await db.run_mutation("m:delete", {"id": doc_id})

        at_first = await p.read_documents([doc_id, other], first.ts)
        assert at_first[other] is None  # written after first.ts
        assert at_first[doc_id] is not None and b"first" in at_first[doc_id]
        at_second = await p.read_documents([doc_id, other], second.ts)
        assert at_second[doc_id] is not None and b"second" in at_second[doc_id]
        assert b"first" not in at_second[doc_id]
        assert at_second[other] is not None and b"other" in at_second[other]
        # Between two revisions: the older one.
        assert (await p.read_documents([doc_id], second.ts - 1))[doc_id] == at_first[doc_id]
        assert (await p.read_documents([doc_id], first.ts - 1))[doc_id] is None
        at_gone = await p.read_documents([doc_id, other], gone.ts)
        assert at_gone == {doc_id: None, other: at_second[other]}
        latest = await p.read_documents([doc_id, other, "not-an-id"], db.timestamp)
        assert latest == {doc_id: None, other: at_second[other], "not-an-id": None}
        assert await p.read_documents([], db.timestamp) == {}
        # The bytes are the stored values.
        async with raw_db(backend_url) as raw:
            stored = await raw.scalar(
                "SELECT value FROM documents WHERE ts = ? AND id = ?",
                second.ts,
                _core.id_bytes(doc_id),
            )
        assert bytes(stored) == at_second[doc_id]


def _long(prefix: str, tail: str, length: int = 3000) -> str:
    """A string of ``length`` characters: ``prefix`` repeated, ending in ``tail``."""
    body = (prefix * length)[: length - len(tail)]
    return body + tail


# Values of 3000 characters: index keys of ~3 KB, longer than the 1024-byte prefix the server
# backends index. Several share their first 1024 bytes, two share 2999 characters.
LONG_VALUES = [
    _long("m", "a"),
    _long("m", "b"),  # shares 2999 characters with the one before
    _long("m", "ab"),
    _long("b", "z"),
    _long("b", "zz"),
    "m" * 1019 + "x" + _long("q", "", 1980),  # differs within the first 1024 bytes
    _long("z", "0"),
    "short",
    "m" * 1500,  # a prefix of the "mmm..." ones: sorts before them
    "m" * 3000,
    "m" * 1100 + "a" + _long("m", "", 1899),  # differs from the "mmm..." ones at byte ~1100
]
EVERYTHING = (b"", b"\xff" * 8)


async def _insert_long_values(db: reactive.Database) -> tuple[dict[int, str], dict[int, int]]:
    """Insert LONG_VALUES in a shuffled order; returns ids and commit timestamps by index."""
    order = list(range(len(LONG_VALUES)))
    random.Random(3).shuffle(order)
    ids: dict[int, str] = {}
    stamps: dict[int, int] = {}
    for i in order:
        outcome = await db.run_mutation(
            "m:insert", {"table": "longs", "doc": {"s": LONG_VALUES[i], "i": i}}
        )
        ids[i], stamps[i] = outcome.value, outcome.ts
    return ids, stamps


def _by_value(values: list[str], which: Any = None) -> list[int]:
    return sorted(range(len(values)) if which is None else which, key=lambda i: values[i])


async def test_read_index_range_returns_long_keys_in_key_order(backend_url: str, app: Path) -> None:
    async with reactive.open(backend_url, app=app) as db:
        p = db._persistence
        by_s = table_indexes(db, "longs")["by_s"]
        ids, _ = await _insert_long_values(db)
        by_value = _by_value(LONG_VALUES)
        # The engine's own index has the order of the values.
        engine_order = await db.query("m:by_index", {"table": "longs", "index": "by_s"})
        assert [d["i"] for d in engine_order] == by_value

        everything = await p.read_index_range(by_s, *EVERYTHING, db.timestamp)
        keys = [k for k, _ in everything]
        assert len(set(keys)) == len(LONG_VALUES)
        assert max(len(k) for k in keys) > 3000
        # Compared as the values' numbers (LONG_VALUES positions), for a readable diff.
        index_of = {_core.id_bytes(doc_id): i for i, doc_id in ids.items()}
        assert [index_of[d] for _, d in everything] == by_value
        assert keys == sorted(keys)
        assert [d for _, d in everything] == [_core.id_bytes(ids[i]) for i in by_value]
        for (key, _), i in zip(everything, by_value, strict=True):
            assert key.startswith(_core.index_key(LONG_VALUES[i]))
        a_pos, b_pos = by_value.index(0), by_value.index(1)
        assert keys[a_pos][:2048] == keys[b_pos][:2048] and a_pos < b_pos
        # limit keeps the first entries in key order.
        for limit in (1, 3, 6):
            got = await p.read_index_range(by_s, *EVERYTHING, db.timestamp, limit=limit)
            assert [k for k, _ in got] == keys[:limit], limit
        # A range inside the long "mmm..." keys, in order.
        lo = _core.index_key(LONG_VALUES[2])
        got = await p.read_index_range(by_s, lo, _core.index_key(_long("m", "c")), db.timestamp)
        assert [d for _, d in got] == [_core.id_bytes(ids[i]) for i in (2, 0, 1)]


async def test_read_index_range_bounds_deletes_and_timestamps(backend_url: str, app: Path) -> None:
    """Which entries a range holds (compared as sets: the order is the test above's)."""
    values = list(LONG_VALUES)
    async with reactive.open(backend_url, app=app) as db:
        p = db._persistence
        by_s = table_indexes(db, "longs")["by_s"]
        ids, stamps = await _insert_long_values(db)
        by_value = _by_value(values)
        everything = await p.read_index_range(by_s, *EVERYTHING, db.timestamp)
        doc_of = {k: d for k, d in everything}
        assert set(doc_of.values()) == {_core.id_bytes(i) for i in ids.values()}
        keys = sorted(doc_of)
        # Each key is the one of its document's value.
        for key in keys:
            i = next(i for i in ids if _core.id_bytes(ids[i]) == doc_of[key])
            assert key.startswith(_core.index_key(values[i]))
        assert [doc_of[k] for k in keys] == [_core.id_bytes(ids[i]) for i in by_value]

        # Exact key bounds: start inclusive, end exclusive, wherever the keys differ.
        for lo in range(len(keys)):
            for hi in range(lo, len(keys) + 1):
                end = keys[hi] if hi < len(keys) else EVERYTHING[1]
                got = await p.read_index_range(by_s, keys[lo], end, db.timestamp)
                assert sorted(k for k, _ in got) == keys[lo:hi], (lo, hi)
                assert all(doc_of[k] == d for k, d in got)
        # Just past a key excludes it; just past it as an end includes it.
        a_pos, b_pos = by_value.index(0), by_value.index(1)
        got = await p.read_index_range(by_s, keys[a_pos] + b"\x00", keys[b_pos], db.timestamp)
        assert got == []
        got = await p.read_index_range(by_s, keys[a_pos], keys[a_pos] + b"\x00", db.timestamp)
        assert [k for k, _ in got] == [keys[a_pos]]
        # Value bounds (prefixes of keys) that cut inside the long suffixes.
        for lo_value, hi_value in [
            (values[2], _long("m", "c")),
            (values[0], values[1]),
            (_long("m", "aa"), values[0]),
            ("m" * 1100, "n"),
            ("b", "m" * 1500),
        ]:
            got = await p.read_index_range(
                by_s, _core.index_key(lo_value), _core.index_key(hi_value), db.timestamp
            )
            expected = {i for i in ids if lo_value <= values[i] < hi_value}
            assert {d for _, d in got} == {_core.id_bytes(ids[i]) for i in expected}
            assert await db.query("m:s_range", {"lo": lo_value, "hi": hi_value}) == _by_value(
                values, expected
            )
        # Unknown index, empty range.
        assert await p.read_index_range(999_999, *EVERYTHING, db.timestamp) == []
        assert await p.read_index_range(by_s, keys[2], keys[2], db.timestamp) == []

        # At a timestamp: entries written later are absent.
        for i in ids:
            got = await p.read_index_range(by_s, *EVERYTHING, stamps[i])
            visible = {j for j in ids if stamps[j] <= stamps[i]}
            assert {d for _, d in got} == {_core.id_bytes(ids[j]) for j in visible}
        assert await p.read_index_range(by_s, *EVERYTHING, min(stamps.values()) - 1) == []

        # Deleted entries are absent afterwards and still there before; a changed key moves.
        before_delete = db.timestamp
        await db.mutation("m:delete", {"id": ids[1]})
        changed = await db.run_mutation("m:patch", {"id": ids[0], "fields": {"s": _long("a", "")}})
        now = dict(await p.read_index_range(by_s, *EVERYTHING, changed.ts))
        assert _core.id_bytes(ids[1]) not in now.values()
        assert len(now) == len(values) - 1
        assert set(doc_of) - set(now) == {keys[a_pos], keys[b_pos]}
        (new_key,) = set(now) - set(doc_of)
        assert (
            new_key.startswith(_core.index_key(_long("a", "")))
            and now[new_key] == doc_of[keys[a_pos]]
        )
        assert dict(await p.read_index_range(by_s, *EVERYTHING, before_delete)) == doc_of
        # The deleted document's exact key range is empty now, not before.
        one = (keys[b_pos], keys[b_pos] + b"\x00")
        assert await p.read_index_range(by_s, *one, db.timestamp) == []
        assert len(await p.read_index_range(by_s, *one, before_delete)) == 1
        await check_ok(db)

    values[0] = _long("a", "")
    async with reactive.open(backend_url, app=app) as db:
        engine_order = await db.query("m:by_index", {"table": "longs", "index": "by_s"})
        assert [d["i"] for d in engine_order] == _by_value(values, set(ids) - {1})
        assert [d["s"] for d in engine_order] == sorted(v for i, v in enumerate(values) if i != 1)
        await check_ok(db)


# --------------------------------------------------------------------------------------------
# every query shape, before and after reopening


def _items() -> list[dict[str, Any]]:
    rng = random.Random(11)
    docs = [
        {"g": "abc"[(i * 7) % 3], "n": i, "f": rng.choice([0.0, 0.25, 0.5, 1.5])} for i in range(60)
    ]
    rng.shuffle(docs)
    return docs


def _model(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """What every query must return, from insertion-ordered docs."""

    def ns(
        pred: Callable[[dict[str, Any]], bool], key: Callable[[dict[str, Any]], Any]
    ) -> list[int]:
        return [d["n"] for d in sorted((d for d in docs if pred(d)), key=key)]

    by_n = lambda d: d["n"]  # noqa: E731
    by_gn = lambda d: (d["g"], d["n"])  # noqa: E731
    creation = {id(d): i for i, d in enumerate(docs)}
    by_creation = lambda d: creation[id(d)]  # noqa: E731
    return {
        ("eq_g", "b"): ns(lambda d: d["g"] == "b", by_gn),
        ("eq_g", "zzz"): [],
        ("range_n", None): ns(lambda d: 10 <= d["n"] < 25, by_n),
        ("range_n_open", None): ns(lambda d: d["n"] > 40, by_n),
        ("range_n_closed", None): ns(lambda d: 3 < d["n"] <= 9, by_n),
        ("eq_g_range_n", None): ns(lambda d: d["g"] == "a" and 5 < d["n"] <= 40, by_gn),
        ("eq_g_eq_n", 4): ns(lambda d: d["g"] == "b" and d["n"] == 4, by_gn),
        ("eq_g_eq_n", 5): ns(lambda d: d["g"] == "b" and d["n"] == 5, by_gn),
        ("whole_by_n", None): ns(lambda d: True, by_n),
        ("creation", None): ns(lambda d: True, by_creation),
        ("filter", None): ns(lambda d: d["f"] >= 0.25 and d["g"] != "a", by_creation),
        ("filter_index", None): ns(lambda d: d["g"] == "c" and d["n"] % 2 == 0, by_gn),
    }


async def _run_shapes(db: reactive.Database, docs: list[dict[str, Any]]) -> None:
    model = _model(docs)
    for (name, arg), expected in model.items():
        assert expected or arg in ("zzz", 5)  # the two empty results
        got = await db.query("m:shape", {"name": name, "arg": arg})
        assert got == expected, name
        got = await db.query("m:shape", {"name": name, "arg": arg, "order": "desc"})
        assert got == expected[::-1], (name, "desc")
    all_n = sorted(d["n"] for d in docs)
    assert await db.query("m:take", {"n": 5, "order": "asc"}) == all_n[:5]
    assert await db.query("m:take", {"n": 7, "order": "desc"}) == all_n[::-1][:7]
    assert await db.query("m:take", {"n": 0, "order": "asc"}) == []
    assert await db.query("m:take", {"n": 500, "order": "asc"}) == all_n
    in_b = [d["n"] for d in docs if d["g"] == "b"]
    assert await db.query("m:filter_take", {"n": 4}) == in_b[:4]
    assert await db.query("m:first_unique", {"n": 17}) == [17, 17]
    assert await db.query("m:first_unique", {"n": 1000}) == [None, None]
    for g in "abc":
        for order in ("asc", "desc"):
            expected = sorted(d["n"] for d in docs if d["g"] == g)
            if order == "desc":
                expected.reverse()
            pages: list[list[int]] = []
            cursor = None
            while True:
                result = await db.query(
                    "m:page", {"g": g, "order": order, "opts": {"numItems": 7, "cursor": cursor}}
                )
                pages.append([d["n"] for d in result["page"]])
                if result["isDone"]:
                    break
                cursor = result["continueCursor"]
                assert len(pages) < 20
            assert [n for p in pages for n in p] == expected
            assert all(len(p) == 7 for p in pages[:-1])
            assert len(pages[-1]) <= 7


async def test_query_shapes_agree_with_the_model(backend_url: str, app: Path) -> None:
    docs = _items()
    async with reactive.open(backend_url, app=app) as db:
        for i in range(0, len(docs), 12):
            await db.mutation("m:insert_many", {"table": "items", "docs": docs[i : i + 12]})
        await _run_shapes(db, docs)
        # Pages of the stored cursor survive a reopen (same cursor secret).
        first = await db.query("m:page", {"g": "a", "opts": {"numItems": 3, "cursor": None}})
    async with reactive.open(backend_url, app=app) as db:
        await _run_shapes(db, docs)
        rest = await db.query(
            "m:page", {"g": "a", "opts": {"numItems": 100, "cursor": first["continueCursor"]}}
        )
        ns = [d["n"] for d in first["page"]] + [d["n"] for d in rest["page"]]
        assert ns == sorted(d["n"] for d in docs if d["g"] == "a")
        await check_ok(db)


# --------------------------------------------------------------------------------------------
# reopening keeps everything


VALUES: list[dict[str, Any]] = [
    {"null": None, "t": True, "f": False},
    {"i": 0, "min": -(2**63), "max": 2**63 - 1, "neg": -12345678901234},
    {"zero": 0.0, "negzero": -0.0, "inf": math.inf, "ninf": -math.inf, "nan": math.nan},
    {"tiny": 5e-324, "big": 1.7976931348623157e308, "third": 1 / 3},
    {"s": "", "u": "héllo ✓ 😀 \u0000 nul \uffff", "nl": "a\nb\r\n\t"},
    {"b": b"", "bytes": bytes(range(256)), "zeros": b"\x00" * 100},
    {"nested": {"a": [1, 2.5, "x", None, [b"y", {"deep": {"deeper": [True]}}]]}},
    {"arr": [], "obj": {}, "mixed": [1, 1.0, "1", b"1", True, None]},
    {"compressible": "abc" * 5000, "random": random.Random(2).randbytes(6000)},
]


async def test_reopen_keeps_ids_times_and_values(backend_url: str, app: Path) -> None:
    async with reactive.open(backend_url, app=app) as db:
        ids = [await db.mutation("m:insert", {"table": "values", "doc": v}) for v in VALUES]
        await db.mutation("m:insert_many", {"table": "items", "docs": _items()[:20]})
        await db.mutation("m:patch", {"id": ids[0], "fields": {"t": False, "added": 1}})
        await db.mutation("m:delete", {"id": ids[1]})
        before = snapshot(db)
        before_ts = db.timestamp
        got = {d["_id"]: d for d in before["values"]}
        for doc_id, value in zip(ids[2:], VALUES[2:], strict=True):
            stored = {k: v for k, v in got[doc_id].items() if not k.startswith("_")}
            assert exact(stored) == exact(value)
    for _ in range(2):
        async with reactive.open(backend_url, app=app) as db:
            assert db.timestamp == before_ts
            after = snapshot(db)
            assert exact(after) == exact(before)
            assert [d["_id"] for d in after["values"]] == [d["_id"] for d in before["values"]]
            assert [d["_creationTime"] for d in after["items"]] == [
                d["_creationTime"] for d in before["items"]
            ]
            assert await db.query("m:get", {"id": ids[1]}) is None
            assert (await db.query("m:get", {"id": ids[0]}))["added"] == 1
            outcome = await db.run_mutation("m:insert", {"table": "values", "doc": {"later": 1}})
            assert outcome.ts > before_ts
            new = await db.query("m:get", {"id": outcome.value})
            assert new["_creationTime"] >= max(d["_creationTime"] for d in after["values"])
            await db.mutation("m:delete", {"id": outcome.value})
            before_ts = db.timestamp
            await check_ok(db)


# --------------------------------------------------------------------------------------------
# schema changes at open


async def test_schema_changes_at_open(backend_url: str, raw_db: RawDb, make_app: MakeApp) -> None:
    plain = make_app({"m.py": FUNCTIONS, "schema.py": schema()})
    extra = '.index("by_f_n", ["f", "n"])'
    with_extra = make_app({"m.py": FUNCTIONS, "schema.py": schema(extra)})
    docs = _items()
    async with reactive.open(backend_url, app=plain) as db:
        await db.mutation("m:insert_many", {"table": "items", "docs": docs[:40]})
        before = snapshot(db)

    # Added: backfilled (its entries persisted), queries served, check passes.
    async with reactive.open(backend_url, app=with_extra) as db:
        await db.wait_for_indexes()
        index_id = table_indexes(db, "items")["by_f_n"]
        got = await db.query("m:by_index", {"table": "items", "index": "by_f_n"})
        assert [d["n"] for d in got] == [
            d["n"] for d in sorted(docs[:40], key=lambda d: (d["f"], d["n"]))
        ]
        assert snapshot(db) == before
        report = await check_ok(db)
        assert report["index_entries"] == 40 * 5
        await db.mutation("m:insert_many", {"table": "items", "docs": docs[40:]})
        async with raw_db(backend_url) as raw:
            live = await raw.scalar(
                "SELECT count(*) FROM indexes WHERE index_id = ? AND deleted = ?", index_id, False
            )
        assert int(live) == 60
        await check_ok(db)
    await commits_verify(raw_db, backend_url)

    # Reopened with the index: nothing to do, still consistent.
    async with reactive.open(backend_url, app=with_extra) as db:
        assert not db._background
        await check_ok(db)

    # Removed: its rows are gone, the commits' counts follow, the log still verifies.
    async with reactive.open(backend_url, app=plain) as db:
        assert "by_f_n" not in table_indexes(db, "items")
        await check_ok(db)
        await db.mutation("m:insert", {"table": "items", "doc": {"g": "d", "n": 100, "f": 9.0}})
    async with raw_db(backend_url) as raw:
        assert (
            int(await raw.scalar("SELECT count(*) FROM indexes WHERE index_id = ?", index_id)) == 0
        )
    await commits_verify(raw_db, backend_url)
    async with reactive.open(backend_url, app=plain) as db:
        await _run_shapes_subset(db, docs)
        report = await check_ok(db)
        assert report["index_entries"] == 61 * 4


async def _run_shapes_subset(db: reactive.Database, docs: list[dict[str, Any]]) -> None:
    got = await db.query("m:shape", {"name": "whole_by_n"})
    assert got == sorted([d["n"] for d in docs] + [100])


# --------------------------------------------------------------------------------------------
# serializability across the backend: bank transfers


async def test_transfers_keep_the_total(backend_url: str, app: Path) -> None:
    accounts, initial, callers, per_caller = 8, 100, 20, 15
    rng = random.Random(5)
    plans = [
        [
            (rng.randrange(accounts), rng.randrange(accounts), rng.randint(1, 60))
            for _ in range(per_caller)
        ]
        for _ in range(callers)
    ]
    async with reactive.open(backend_url, app=app) as db:
        ids = [
            await db.mutation("m:open_account", {"name": f"acct{i}", "balance": initial})
            for i in range(accounts)
        ]
        expected = {i: initial for i in ids}
        outcome: collections.Counter[str] = collections.Counter()

        async def caller(plan: list[tuple[int, int, int]]) -> None:
            for src, dst, amount in plan:
                if src == dst:
                    dst = (dst + 1) % accounts
                try:
                    done = await db.run_mutation(
                        "m:transfer", {"src": ids[src], "dst": ids[dst], "amount": amount}
                    )
                except ConvexError:
                    outcome["insufficient"] += 1
                    continue
                except WriteConflict:
                    outcome["gave_up"] += 1
                    continue
                outcome["ok"] += 1
                outcome["retried"] += done.attempts > 1
                expected[ids[src]] -= amount
                expected[ids[dst]] += amount

        await asyncio.gather(*(caller(plan) for plan in plans))
        assert outcome["ok"] + outcome["insufficient"] + outcome["gave_up"] == callers * per_caller
        assert outcome["ok"] >= callers * per_caller // 3, outcome
        assert outcome["retried"] > 0, outcome  # the callers really did run concurrently
        balances = {d["_id"]: d["balance"] for d in await db.query("m:all", {"table": "accounts"})}
        assert sum(balances.values()) == accounts * initial
        assert min(balances.values()) >= 0
        assert balances == expected
        await check_ok(db)
    async with reactive.open(backend_url, app=app) as db:
        balances = {d["_id"]: d["balance"] for d in await db.query("m:all", {"table": "accounts"})}
        assert balances == expected
        await check_ok(db)


# --------------------------------------------------------------------------------------------
# large documents


async def test_large_documents_round_trip(backend_url: str, app: Path) -> None:
    rng = random.Random(9)
    incompressible = rng.randbytes(900_000)
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(900_000))
    async with reactive.open(backend_url, app=app) as db:
        a = await db.run_mutation("m:insert", {"table": "big", "doc": {"data": incompressible}})
        b = await db.mutation("m:insert", {"table": "big", "doc": {"text": text, "n": 1}})
        # Several large documents committed at once (one batch for the backend).
        several = await asyncio.gather(
            *(
                db.mutation("m:insert", {"table": "big", "doc": {"data": incompressible[i:]}})
                for i in range(3)
            )
        )
        await db.mutation("m:patch", {"id": b, "fields": {"n": 2}})
        assert (await db.query("m:get", {"id": a.value}))["data"] == incompressible
        stored = (await db._persistence.read_documents([a.value], a.ts))[a.value]
        assert stored is not None and len(stored) > 900_000
        await check_ok(db)
    async with reactive.open(backend_url, app=app) as db:
        assert (await db.query("m:get", {"id": a.value}))["data"] == incompressible
        doc = await db.query("m:get", {"id": b})
        assert doc["text"] == text and doc["n"] == 2
        for i, doc_id in enumerate(several):
            assert (await db.query("m:get", {"id": doc_id}))["data"] == incompressible[i:]
        await check_ok(db)


# --------------------------------------------------------------------------------------------
# corruption is refused at open


PUT = """
from reactive import mutation

@mutation
async def put(ctx, seq):
    item = await ctx.db.insert("items", {"seq": seq})
    await ctx.db.insert("shadows", {"seq": seq, "item": item})
    return item

@mutation
async def renumber(ctx, id, seq):
    await ctx.db.patch(id, {"seq": seq})
"""

PUT_SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "items": define_table({"seq": v.int64()}).index("by_seq", ["seq"]),
    "shadows": define_table({"seq": v.int64(), "item": v.id("items")}).index("by_seq", ["seq"]),
})
"""


async def _tamper(raw: RawDb, case: str, puts: list[tuple[int, str]]) -> list[str]:
    """Damage the stored log; returns what the CorruptionError message must name."""
    if case == "document_value":
        ts, doc_id = puts[3]
        value = await raw.scalar(
            "SELECT value FROM documents WHERE ts = ? AND id = ?", ts, _core.id_bytes(doc_id)
        )
        flipped = bytearray(value)
        flipped[len(flipped) // 2] ^= 0x5A
        changed = await raw.execute(
            "UPDATE documents SET value = ? WHERE ts = ? AND id = ?",
            bytes(flipped),
            ts,
            _core.id_bytes(doc_id),
        )
        expected = [str(ts), doc_id]
    elif case == "index_row":
        ts, _ = puts[4]
        rows = await raw.fetch(
            f"SELECT index_id, {raw.key_sql} FROM indexes WHERE ts = ? ORDER BY index_id DESC", ts
        )
        assert len(rows) == 6  # by_id, by_creation_time, by_seq of two documents
        index_id, key = rows[0]
        changed = await raw.execute(
            f"DELETE FROM indexes WHERE ts = ? AND index_id = ? AND {raw.key_sql} = ?",
            ts,
            index_id,
            bytes(key),
        )
        expected = [str(ts), "index"]
    elif case == "commit_row":
        ts, _ = puts[1]
        changed = await raw.execute("DELETE FROM commits WHERE ts = ?", ts)
        expected = [str(ts), "commit"]
    else:  # pragma: no cover
        raise AssertionError(case)
    assert changed == 1
    return expected


@pytest.mark.parametrize("case", ["document_value", "index_row", "commit_row"])
async def test_corruption_is_refused_at_open(
    backend_url: str, raw_db: RawDb, make_app: MakeApp, case: str
) -> None:
    app = make_app({"m.py": PUT, "schema.py": PUT_SCHEMA})
    async with reactive.open(backend_url, app=app) as db:
        puts = []
        for seq in range(6):
            outcome = await db.run_mutation("m:put", {"seq": seq})
            puts.append((outcome.ts, outcome.value))
        await db.mutation("m:renumber", {"id": puts[2][1], "seq": 200})
        await check_ok(db)
    async with raw_db(backend_url) as raw:
        expected = await _tamper(raw, case, puts)
    for _ in range(2):  # refused every time: the failed open released the database
        with pytest.raises(CorruptionError) as info:
            await reactive.open(backend_url, app=app)
        message = str(info.value)
        for name in expected:
            assert name in message, f"{case}: {message!r} does not name {name}"
    with pytest.raises(CorruptionError):
        await reactive.open(backend_url)
    # Nothing was changed by the refused opens: the damage is still exactly there.
    counts = await row_counts(raw_db, backend_url)
    assert counts["commits"] == 7 - (case == "commit_row")
