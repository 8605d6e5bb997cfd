"""Schema changes at open: the same database reopened with a different app
(docs/data-model.md, "Schemas"; reactive/db/schema_sync.py).

New indexes are backfilled (small tables before ``open`` returns, large ones in the
background, refusing queries with ``IndexNotReadyError`` until ready), removed indexes are
dropped, changed ones rebuilt, a schema that stored documents violate is refused with the
database unchanged, and reopening keeps every document exactly.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.db import schema_sync
from reactive.errors import IndexNotFoundError, IndexNotReadyError, SchemaError

MakeApp = Callable[[dict[str, str]], Path]

# --------------------------------------------------------------------------------------------
# apps

FUNCTIONS = """
from reactive import mutation, query


@mutation
async def seed(ctx, start, n):
    ids = []
    for i in range(start, start + n):
        ids.append(await ctx.db.insert("items", {"k": (i * 7) % 13, "s": f"s{(i * 11) % 17:02d}"}))
    return ids


@mutation
async def insert(ctx, table, doc):
    return await ctx.db.insert(table, doc)


@mutation
async def patch(ctx, id, fields):
    await ctx.db.patch(id, fields)


@mutation
async def delete(ctx, id):
    await ctx.db.delete(id)


@query
async def by_index(ctx, index, order="asc"):
    return [d["_id"] for d in await ctx.db.query("items").with_index(index).order(order).collect()]


@query
async def k_range(ctx, lo, hi):
    q = ctx.db.query("items").with_index("by_k", lambda r: r.gte("k", lo).lt("k", hi))
    return [d["_id"] for d in await q.collect()]


@query
async def k_eq(ctx, k):
    q = ctx.db.query("items").with_index("by_k", lambda r: r.eq("k", k))
    return [d["_id"] for d in await q.collect()]


@mutation
async def insert_via_index(ctx, k):
    # Reads the index first: refused while it is backfilling, and then writes nothing.
    await ctx.db.query("items").with_index("by_k", lambda r: r.eq("k", k)).first()
    return await ctx.db.insert("items", {"k": k, "s": "via"})


@query
async def all(ctx, table):
    return await ctx.db.query(table).collect()
"""


def schema_source(indexes: str = "", k_type: str = "v.int64()", extra_tables: str = "") -> str:
    return f"""
from reactive import define_schema, define_table, v

schema = define_schema({{
    "items": define_table({{"k": {k_type}, "s": v.string()}}){indexes},
    {extra_tables}
}})
"""


NO_INDEX = schema_source()
BY_K = schema_source('.index("by_k", ["k"])')
BY_K_AND_KS = schema_source('.index("by_k", ["k"]).index("by_k_s", ["k", "s"])')
BY_K_ON_S = schema_source('.index("by_k", ["s"])')


def app_files(schema: str | None) -> dict[str, str]:
    files = {"m.py": FUNCTIONS}
    if schema is not None:
        files["schema.py"] = schema
    return files


# --------------------------------------------------------------------------------------------
# helpers


def snapshot(db: reactive.Database) -> dict[str, list[dict[str, Any]]]:
    """Every table with all its documents, sorted by id, at the newest snapshot."""
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


def indexes(db: reactive.Database, table: str = "items") -> dict[str, dict[str, Any]]:
    for t in db._engine.tables():
        if t["name"] == table:
            return {i["name"]: i for i in t["indexes"]}
    raise AssertionError(f"no table {table}")


def expected_order(docs: list[dict[str, Any]], fields: list[str], order: str = "asc") -> list[str]:
    """Ids in index order: the fields, then _creationTime, then _id."""
    ordered = sorted(docs, key=lambda d: (*(d[f] for f in fields), d["_creationTime"], d["_id"]))
    if order == "desc":
        ordered.reverse()
    return [d["_id"] for d in ordered]


async def assert_consistent(db: reactive.Database, user_indexes: int) -> None:
    report = await db.check()
    assert report["problems"] == [], report
    count = db._engine.count_documents("items")
    assert report["documents"] >= count
    # Every live document has one entry in by_id, by_creation_time and each user index.
    items_entries = report["index_entries"] - 2 * (report["documents"] - count)
    assert items_entries == count * (2 + user_indexes), report


async def assert_index_serves(db: reactive.Database, index: str, fields: list[str]) -> None:
    docs = snapshot(db)["items"]
    for order in ("asc", "desc"):
        got = await db.query("m:by_index", {"index": index, "order": order})
        assert got == expected_order(docs, fields, order)


# --------------------------------------------------------------------------------------------
# new index, small table: backfilled before open returns


async def test_new_index_is_backfilled_at_open(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(app_files(NO_INDEX))) as db:
        await db.mutation("m:seed", {"start": 0, "n": 150})
        before = snapshot(db)
        with pytest.raises(IndexNotFoundError):
            await db.query("m:by_index", {"index": "by_k"})

    async with reactive.open(db_url, app=make_app(app_files(BY_K_AND_KS))) as db:
        assert not db._background
        assert indexes(db)["by_k"]["ready_since"] is not None
        assert indexes(db)["by_k_s"]["ready_since"] is not None
        assert snapshot(db) == before
        await assert_index_serves(db, "by_k", ["k"])
        await assert_index_serves(db, "by_k_s", ["k", "s"])
        docs = before["items"]
        got = await db.query("m:k_range", {"lo": 3, "hi": 7})
        assert got == expected_order([d for d in docs if 3 <= d["k"] < 7], ["k"])
        assert await db.query("m:k_eq", {"k": 5}) == expected_order(
            [d for d in docs if d["k"] == 5], ["k"]
        )
        await assert_consistent(db, user_indexes=2)
        # New writes are indexed too.
        new = await db.mutation("m:insert", {"table": "items", "doc": {"k": -1, "s": "first"}})
        assert (await db.query("m:by_index", {"index": "by_k"}))[0] == new
        await assert_consistent(db, user_indexes=2)

    # The command-line check agrees.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reactive", "check", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


# --------------------------------------------------------------------------------------------
# new index, large table: backfilled in the background


@pytest.fixture
def small_backfill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema_sync, "FOREGROUND_BACKFILL_LIMIT", 50)
    monkeypatch.setattr(schema_sync, "BACKFILL_CHUNK", 10)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch, small_backfill: None) -> asyncio.Event:
    """Background backfills wait for this event before they start."""
    event = asyncio.Event()
    original = schema_sync.backfill_index

    async def gated(db: Any, index_id: int, snapshot_ts: int) -> None:
        await event.wait()
        await original(db, index_id, snapshot_ts)

    monkeypatch.setattr(schema_sync, "backfill_index", gated)
    return event


async def test_large_table_backfills_in_background(
    db_url: str, make_app: MakeApp, gate: asyncio.Event
) -> None:
    async with reactive.open(db_url, app=make_app(app_files(NO_INDEX))) as db:
        ids = await db.mutation("m:seed", {"start": 0, "n": 300})

    async with reactive.open(db_url, app=make_app(app_files(BY_K))) as db:
        # Not ready yet: the backfill waits for the gate.
        assert len(db._background) == 1
        assert indexes(db)["by_k"]["ready_since"] is None
        with pytest.raises(IndexNotReadyError) as info:
            await db.query("m:by_index", {"index": "by_k"})
        assert "by_k" in str(info.value)
        with pytest.raises(IndexNotReadyError):
            await db.query("m:k_eq", {"k": 1})
        count = db._engine.count_documents("items")
        with pytest.raises(IndexNotReadyError):
            await db.mutation("m:insert_via_index", {"k": 1})
        assert db._engine.count_documents("items") == count
        # Other queries work meanwhile.
        assert len(await db.query("m:all", {"table": "items"})) == 300

        # Writes while the index is backfilling: inserts, patches, deletes.
        new_ids = await db.mutation("m:seed", {"start": 300, "n": 20})
        for doc_id in ids[:10]:
            await db.mutation("m:patch", {"id": doc_id, "fields": {"k": 100}})
        for doc_id in ids[10:20] + new_ids[:5]:
            await db.mutation("m:delete", {"id": doc_id})

        # Let the backfill run, with more writes interleaved with its chunks.
        async def writer() -> None:
            for i, doc_id in enumerate(ids[20:60]):
                if i % 2:
                    await db.mutation("m:patch", {"id": doc_id, "fields": {"k": -i}})
                else:
                    await db.mutation("m:delete", {"id": doc_id})
                await db.mutation("m:insert", {"table": "items", "doc": {"k": i % 5, "s": "w"}})

        gate.set()
        await asyncio.gather(writer(), db.wait_for_indexes())
        assert not db._background
        assert indexes(db)["by_k"]["ready_since"] is not None

        docs = snapshot(db)["items"]
        assert len(docs) == 300 + 20 - 15 - 20 + 40
        await assert_index_serves(db, "by_k", ["k"])
        for k in (100, 0, 3, -5):
            assert await db.query("m:k_eq", {"k": k}) == expected_order(
                [d for d in docs if d["k"] == k], ["k"]
            )
        await assert_consistent(db, user_indexes=1)
        await db.mutation("m:insert_via_index", {"k": 1})
        await assert_consistent(db, user_indexes=1)
        docs = snapshot(db)["items"]

    async with reactive.open(db_url, app=make_app(app_files(BY_K))) as db:
        assert not db._background
        assert snapshot(db)["items"] == docs
        await assert_index_serves(db, "by_k", ["k"])
        await assert_consistent(db, user_indexes=1)


async def test_backfill_longer_than_the_write_log_window_finishes(
    db_url: str, make_app: MakeApp, small_backfill: None
) -> None:
    """A backfill whose snapshot leaves the write-log window (by default 60 s or 250,000
    commits; here 4 commits, while the backfill takes 30 chunk commits) must still finish.

    Guarded by a generous timeout so a livelocked backfill fails the test instead of
    hanging it; the backfill needs well under a second.
    """
    async with reactive.open(db_url, app=make_app(app_files(NO_INDEX))) as db:
        await db.mutation("m:seed", {"start": 0, "n": 300})
    async with reactive.open(db_url, app=make_app(app_files(BY_K)), write_log_max_entries=4) as db:
        try:
            await asyncio.wait_for(db.wait_for_indexes(), timeout=10)
        except TimeoutError:
            pytest.fail("the background backfill never finished (it restarts from scratch)")
        assert indexes(db)["by_k"]["ready_since"] is not None
        await assert_index_serves(db, "by_k", ["k"])
        await assert_consistent(db, user_indexes=1)


async def test_background_backfill_without_gate_ends_correct(
    db_url: str, make_app: MakeApp, small_backfill: None
) -> None:
    async with reactive.open(db_url, app=make_app(app_files(NO_INDEX))) as db:
        await db.mutation("m:seed", {"start": 0, "n": 200})
    async with reactive.open(db_url, app=make_app(app_files(BY_K))) as db:
        if db._background and indexes(db)["by_k"]["ready_since"] is None:
            with pytest.raises(IndexNotReadyError):
                await db.query("m:by_index", {"index": "by_k"})
        await db.wait_for_indexes()
        assert not db._background
        assert indexes(db)["by_k"]["ready_since"] is not None
        await assert_index_serves(db, "by_k", ["k"])
        await assert_consistent(db, user_indexes=1)


async def test_backfill_interrupted_by_close_resumes_at_reopen(
    db_url: str, make_app: MakeApp, gate: asyncio.Event
) -> None:
    async with reactive.open(db_url, app=make_app(app_files(NO_INDEX))) as db:
        await db.mutation("m:seed", {"start": 0, "n": 120})
        before = snapshot(db)
    app = make_app(app_files(BY_K))
    async with reactive.open(db_url, app=app) as db:
        assert indexes(db)["by_k"]["ready_since"] is None
        await db.mutation("m:seed", {"start": 120, "n": 5})
    # Closed with the backfill not even started. The index comes back still backfilling.
    gate.set()
    async with reactive.open(db_url, app=app) as db:
        await db.wait_for_indexes()
        assert indexes(db)["by_k"]["ready_since"] is not None
        docs = snapshot(db)["items"]
        assert len(docs) == 125
        assert {d["_id"] for d in before["items"]} <= {d["_id"] for d in docs}
        await assert_index_serves(db, "by_k", ["k"])
        await assert_consistent(db, user_indexes=1)


OPTIONAL_FIELDS = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "items": define_table({
        "k": v.int64(),
        "s": v.string(),
        "opt": v.optional(v.string()),
        "meta": v.optional(v.object({"x": v.float64()})),
    })%s,
})
"""


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
async def test_new_index_on_optional_and_nested_fields(
    db_url: str, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch, background: bool
) -> None:
    if background:
        monkeypatch.setattr(schema_sync, "FOREGROUND_BACKFILL_LIMIT", 10)
        monkeypatch.setattr(schema_sync, "BACKFILL_CHUNK", 7)
    async with reactive.open(db_url, app=make_app(app_files(OPTIONAL_FIELDS % ""))) as db:
        for i in range(60):
            doc: dict[str, Any] = {"k": i, "s": "x"}
            if i % 3 == 0:
                doc["opt"] = f"o{i % 7}"
            if i % 2 == 0:
                doc["meta"] = {"x": float(i % 5)}
            await db.mutation("m:insert", {"table": "items", "doc": doc})
    indexed = '.index("by_opt", ["opt"]).index("by_mx", ["meta.x"])'
    async with reactive.open(db_url, app=make_app(app_files(OPTIONAL_FIELDS % indexed))) as db:
        await db.wait_for_indexes()
        docs = snapshot(db)["items"]

        def order(key: Callable[[dict[str, Any]], Any]) -> list[str]:
            # A missing field sorts before every value.
            return [
                d["_id"]
                for d in sorted(docs, key=lambda d: (*key(d), d["_creationTime"], d["_id"]))
            ]

        assert await db.query("m:by_index", {"index": "by_opt"}) == order(
            lambda d: (0, "") if "opt" not in d else (1, d["opt"])
        )
        assert await db.query("m:by_index", {"index": "by_mx"}) == order(
            lambda d: (0, 0.0) if "meta" not in d else (1, d["meta"]["x"])
        )
        await assert_consistent(db, user_indexes=2)


# --------------------------------------------------------------------------------------------
# removed and changed indexes


async def test_removed_index_is_dropped(db_url: str, make_app: MakeApp) -> None:
    with_index = make_app(app_files(BY_K_AND_KS))
    async with reactive.open(db_url, app=with_index) as db:
        await db.mutation("m:seed", {"start": 0, "n": 60})
        await assert_consistent(db, user_indexes=2)
        before = snapshot(db)

    only_by_k = make_app(app_files(BY_K))
    for _ in range(2):  # reopening again works and stays the same
        async with reactive.open(db_url, app=only_by_k) as db:
            assert set(indexes(db)) == {"by_id", "by_creation_time", "by_k"}
            with pytest.raises(IndexNotFoundError) as info:
                await db.query("m:by_index", {"index": "by_k_s"})
            assert "by_k_s" in str(info.value)
            await assert_index_serves(db, "by_k", ["k"])
            assert snapshot(db) == before
            await assert_consistent(db, user_indexes=1)

    async with reactive.open(db_url, app=make_app(app_files(NO_INDEX))) as db:
        assert set(indexes(db)) == {"by_id", "by_creation_time"}
        with pytest.raises(IndexNotFoundError):
            await db.query("m:by_index", {"index": "by_k"})
        await db.mutation("m:seed", {"start": 60, "n": 5})
        await assert_consistent(db, user_indexes=0)

    # Adding it back rebuilds it, including the documents written without it.
    async with reactive.open(db_url, app=with_index) as db:
        assert db._engine.count_documents("items") == 65
        await assert_index_serves(db, "by_k", ["k"])
        await assert_index_serves(db, "by_k_s", ["k", "s"])
        await assert_consistent(db, user_indexes=2)


async def test_changed_index_is_rebuilt(db_url: str, make_app: MakeApp) -> None:
    async with reactive.open(db_url, app=make_app(app_files(BY_K))) as db:
        await db.mutation("m:seed", {"start": 0, "n": 80})
        await assert_index_serves(db, "by_k", ["k"])
        by_k_order = await db.query("m:by_index", {"index": "by_k"})

    async with reactive.open(db_url, app=make_app(app_files(BY_K_ON_S))) as db:
        assert indexes(db)["by_k"]["fields"] == ["s"]
        assert indexes(db)["by_k"]["ready_since"] is not None
        got = await db.query("m:by_index", {"index": "by_k"})
        assert got != by_k_order
        await assert_index_serves(db, "by_k", ["s"])
        await assert_consistent(db, user_indexes=1)
        await db.mutation("m:seed", {"start": 80, "n": 3})
        await assert_index_serves(db, "by_k", ["s"])

    async with reactive.open(db_url, app=make_app(app_files(BY_K))) as db:
        assert indexes(db)["by_k"]["fields"] == ["k"]
        await assert_index_serves(db, "by_k", ["k"])
        await assert_consistent(db, user_indexes=1)


# --------------------------------------------------------------------------------------------
# a schema that stored documents violate


STRICT = schema_source(
    '.index("by_k", ["k"])',
    extra_tables='"extra": define_table({"x": v.string()}),',
)
LOOSE = schema_source(k_type="v.union(v.int64(), v.string())")


@pytest.mark.parametrize("old_schema", [LOOSE, None], ids=["loose-schema", "no-schema"])
async def test_violating_schema_is_refused_and_nothing_changes(
    db_url: str, make_app: MakeApp, old_schema: str | None
) -> None:
    old_app = make_app(app_files(old_schema))
    async with reactive.open(db_url, app=old_app) as db:
        await db.mutation("m:seed", {"start": 0, "n": 30})
        bad_id = await db.mutation("m:insert", {"table": "items", "doc": {"k": "seven", "s": "x"}})
        await db.mutation("m:seed", {"start": 30, "n": 30})
        before = snapshot(db)
        before_indexes = indexes(db)
        before_tables = {t["name"] for t in db._engine.tables()}
        before_ts = db.timestamp

    strict_app = make_app(app_files(STRICT))
    for _ in range(2):
        with pytest.raises(SchemaError) as info:
            await reactive.open(db_url, app=strict_app)
        message = str(info.value)
        assert bad_id in message
        assert "items" in message

    async with reactive.open(db_url, app=old_app) as db:
        assert snapshot(db) == before
        assert indexes(db) == before_indexes
        assert {t["name"] for t in db._engine.tables()} == before_tables
        assert db.timestamp == before_ts
        await assert_consistent(db, user_indexes=0)
        # Fix the document; the strict schema is accepted afterwards.
        await db.mutation("m:patch", {"id": bad_id, "fields": {"k": 7}})

    async with reactive.open(db_url, app=strict_app) as db:
        assert "extra" in {t["name"] for t in db._engine.tables()}
        await assert_index_serves(db, "by_k", ["k"])
        await assert_consistent(db, user_indexes=1)


ID_FUNCTIONS = """
from reactive import mutation, query


@mutation
async def insert(ctx, table, doc):
    return await ctx.db.insert(table, doc)


@mutation
async def patch(ctx, id, fields):
    await ctx.db.patch(id, fields)


@query
async def all(ctx, table):
    return await ctx.db.query(table).collect()
"""

AUTHOR_SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "users": define_table({"name": v.string()}),
    "posts": define_table({"author": %s}),
})
"""


async def test_tightening_a_field_to_v_id_checks_stored_ids(db_url: str, make_app: MakeApp) -> None:
    loose = make_app({"m.py": ID_FUNCTIONS, "schema.py": AUTHOR_SCHEMA % "v.string()"})
    strict_files = {"m.py": ID_FUNCTIONS, "schema.py": AUTHOR_SCHEMA % 'v.id("users")'}
    async with reactive.open(db_url, app=loose) as db:
        users = [
            await db.mutation("m:insert", {"table": "users", "doc": {"name": f"u{i}"}})
            for i in range(3)
        ]
        for uid in users:
            await db.mutation("m:insert", {"table": "posts", "doc": {"author": uid}})
        # An id of the wrong table.
        bad = await db.mutation("m:insert", {"table": "posts", "doc": {"author": users[0]}})
        post_ids = [d["_id"] for d in await db.query("m:all", {"table": "posts"})]
        await db.mutation("m:patch", {"id": bad, "fields": {"author": post_ids[0]}})
        before = snapshot(db)
    with pytest.raises(SchemaError) as info:
        await reactive.open(db_url, app=make_app(strict_files))
    assert bad in str(info.value)
    assert "posts" in str(info.value)
    async with reactive.open(db_url, app=loose) as db:
        assert snapshot(db) == before
        await db.mutation("m:patch", {"id": bad, "fields": {"author": users[1]}})
    async with reactive.open(db_url, app=make_app(strict_files)) as db:
        posts = await db.query("m:all", {"table": "posts"})
        assert sorted(p["author"] for p in posts) == sorted([*users, users[1]])
        assert (await db.check())["problems"] == []


# --------------------------------------------------------------------------------------------
# tables without a schema, ids


async def test_tables_created_implicitly_without_schema(db_url: str, make_app: MakeApp) -> None:
    app = make_app(app_files(None))
    tables = ["alpha", "beta", "gamma", "items"]
    ids: dict[str, list[str]] = {}
    async with reactive.open(db_url, app=app) as db:
        assert db.app.schema is None
        for table in tables:
            ids[table] = [
                await db.mutation("m:insert", {"table": table, "doc": {"n": i, "t": table}})
                for i in range(5)
            ]
        catalog = {t["name"]: t["number"] for t in db._engine.tables()}
        assert set(tables) <= set(catalog)
        assert len({catalog[t] for t in tables}) == len(tables)

    def prefix(doc_id: str) -> str:
        return doc_id[:3]

    for table in tables:
        assert len({prefix(i) for i in ids[table]}) == 1, ids[table]
    prefixes = {table: prefix(ids[table][0]) for table in tables}
    assert len(set(prefixes.values())) == len(tables), prefixes

    async with reactive.open(db_url, app=app) as db:
        for table in tables:
            docs = await db.query("m:all", {"table": table})
            assert [d["_id"] for d in docs] == ids[table]
            assert [d["n"] for d in docs] == list(range(5))
        # New ids keep their table's prefix after reopening.
        again = await db.mutation("m:insert", {"table": "beta", "doc": {"n": 5}})
        assert prefix(again) == prefixes["beta"]
        await assert_consistent(db, user_indexes=0)


# --------------------------------------------------------------------------------------------
# reopening many times


async def test_reopening_many_times_keeps_everything(db_url: str, make_app: MakeApp) -> None:
    apps = [
        make_app(app_files(NO_INDEX)),
        make_app(app_files(BY_K)),
        make_app(app_files(BY_K_AND_KS)),
        make_app(app_files(BY_K_ON_S)),
        make_app(app_files(None)),
    ]
    user_indexes = [0, 1, 2, 1, None]
    expected: dict[str, dict[str, Any]] = {}
    last_ts = 0
    for round_ in range(10):
        which = round_ % len(apps)
        async with reactive.open(db_url, app=apps[which]) as db:
            docs = snapshot(db)["items"] if round_ else []
            assert {d["_id"]: d for d in docs} == expected
            assert db.timestamp >= last_ts
            new_ids = await db.mutation("m:seed", {"start": round_ * 10, "n": 10})
            if docs:
                await db.mutation("m:patch", {"id": docs[0]["_id"], "fields": {"s": f"r{round_}"}})
                await db.mutation("m:delete", {"id": docs[-1]["_id"]})
            assert db.timestamp > last_ts
            last_ts = db.timestamp
            expected = {d["_id"]: d for d in snapshot(db)["items"]}
            assert set(new_ids) <= set(expected)
            if user_indexes[which] is not None:
                await assert_consistent(db, user_indexes=user_indexes[which])
            else:
                assert (await db.check())["problems"] == []
    async with reactive.open(db_url, app=apps[2]) as db:
        assert {d["_id"]: d for d in snapshot(db)["items"]} == expected
        assert len(expected) == 10 * 10 - 9
        await assert_index_serves(db, "by_k_s", ["k", "s"])
        await assert_consistent(db, user_indexes=2)
