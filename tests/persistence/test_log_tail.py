"""Reading the log of a PostgreSQL / MySQL database another process writes (scale-out stage 0).

* ``load`` reads the ``catalog`` and ``max_ts`` globals inside the same repeatable-read
  snapshot as the rows: a commit landing while it loads (here: between the start of the
  load and its first row, a commit creating a table) is either wholly in the loaded state
  or wholly out of it, never rows of a table the loaded catalog lacks.
* ``open_persistence(url, lease=False)`` opens a reader beside the open writer (which a
  second open with the lease is refused): no epoch taken, nothing created or migrated, the
  writer unaffected; every write is refused with ``PersistenceError``; a database no writer
  initialized, or of another format, is refused; SQLite has no reader.
* ``read_log_since``: slices (of 1, 3 or 1000 commits, documents read 2 rows or
  ``LOG_PAGE_ROWS`` at a time) are whole commits in order, their concatenation is the
  stored log row for row, and with the index rows it rebuilds what ``load`` does; the byte
  budget is kept (one commit over it comes alone) and slices are cut only where the next
  commit would not fit; a reader the retention prune passed gets ``LogGapError`` and
  follows on after a reload; a reader tailing a writer that commits meanwhile (creating
  tables) gets the whole log, and its loads never fail.

Source: docs/design/scale-out.md (sections 1, 4.1, 4.3, 4.4), python/reactive/persistence/
base.py, postgres.py, mysql.py.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

import reactive
from reactive import _core
from reactive.errors import IncompatibleDatabaseError, LogGapError, PersistenceError
from reactive.persistence import LogSlice, LogSource, open_persistence, sql
from reactive.persistence.base import LOG_SLICE_BYTES, RETAINED_TS, CommitRow, DocumentRow
from reactive.persistence.sql import LOG_PAGE_ROWS

MakeApp = Callable[[dict[str, str]], Path]
RawDb = Any  # the ``raw_db`` fixture of conftest.py

APP = """
from reactive import mutation, query


@mutation
async def put(ctx, table, n, pad=""):
    return await ctx.db.insert(table, {"n": n, "pad": pad})


@mutation
async def put_many(ctx, table, ns):
    return [await ctx.db.insert(table, {"n": n}) for n in ns]


@mutation
async def drop(ctx, id):
    await ctx.db.delete(id)


@mutation
async def bump(ctx, id):
    doc = await ctx.db.get(id)
    await ctx.db.patch(id, {"n": doc["n"] + 1})


@query
async def ns(ctx, table):
    return sorted(d["n"] for d in await ctx.db.query(table).collect())
"""


@pytest.fixture
def app(make_app: MakeApp) -> Path:
    return make_app({"m.py": APP})


def _tables(state: _core.LoadedState) -> list[str]:
    names = (t["name"] for t in _core.Engine(state).tables())
    return sorted(n for n in names if not n.startswith("_"))


def _index_id(db: reactive.Database, table: str, index: str) -> int:
    for t in db._engine.tables():
        if t["name"] == table:
            return next(int(i["id"]) for i in t["indexes"] if i["name"] == index)
    raise AssertionError(f"no table {table}")


async def test_load_reads_catalog_and_max_ts_in_its_snapshot(
    server_url: str, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"table": "a", "n": 1})
        persistence = db._persistence
        cls = type(persistence)
        original = cls._stream  # type: ignore[attr-defined]
        landed: list[int] = []

        async def stream_after_a_commit(self: Any, *args: Any, **kwargs: Any) -> None:
            # The load has begun (its transaction is open); a commit creating a table
            # lands before its first row is read.
            if not landed:
                landed.append(1)
                await db.mutation("m:put", {"table": "b", "n": 2})
                landed.append(db.timestamp)
            await original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "_stream", stream_after_a_commit)
        state = await persistence.load()
        monkeypatch.setattr(cls, "_stream", original)
        assert len(landed) == 2
        # The snapshot began before the commit: table "b" and its row are not in it, and
        # max_ts is the commit before.
        assert _tables(state) == ["a"]
        assert state.max_ts < landed[1]
        # A load after it sees both, consistently.
        state = await persistence.load()
        assert _tables(state) == ["a", "b"]
        assert state.max_ts == landed[1]


# -- helpers ---------------------------------------------------------------------------------


def _size(documents: list[DocumentRow]) -> int:
    return sum(len(d[3]) for d in documents if d[3] is not None)


async def _stored_rows(
    raw_db: RawDb, url: str
) -> tuple[list[CommitRow], list[DocumentRow], list[tuple[Any, ...]]]:
    """Every commit, document and index row, straight from the tables, in load's shapes."""
    async with raw_db(url) as raw:
        commits = [
            (int(a), int(b), int(c), int(d))
            for a, b, c, d in await raw.fetch(
                "SELECT ts, document_count, index_entry_count, checksum FROM commits ORDER BY ts"
            )
        ]
        documents = [
            (int(ts), bytes(i), int(t), None if v is None else bytes(v), bool(dl), p, int(c))
            for ts, i, t, v, dl, p, c in await raw.fetch(
                "SELECT ts, id, table_id, value, deleted, prev_ts, checksum FROM documents "
                "ORDER BY ts, id"
            )
        ]
        entries = [
            (int(x), bytes(k), int(ts), bytes(d), bool(dl), int(c))
            for x, k, ts, d, dl, c in await raw.fetch(
                f"SELECT index_id, {raw.key_sql}, ts, doc_id, deleted, checksum FROM indexes"
            )
        ]
    return commits, documents, entries


async def _tail(
    reader: LogSource, after_ts: int, max_commits: int, max_bytes: int = LOG_SLICE_BYTES
) -> list[LogSlice]:
    """Slices from ``after_ts`` until one says there is no more, checking each one's shape."""
    slices = []
    while True:
        piece = await reader.read_log_since(after_ts, max_commits=max_commits, max_bytes=max_bytes)
        _check_slice(piece, after_ts, max_commits)
        slices.append(piece)
        after_ts = piece.last_ts
        if not piece.more:
            return slices
        assert len(slices) < 10_000


def _check_slice(piece: LogSlice, after_ts: int, max_commits: int) -> None:
    stamps = [c[0] for c in piece.commits]
    assert stamps == sorted(set(stamps))
    assert all(ts > after_ts for ts in stamps)
    assert len(stamps) <= max_commits
    assert piece.last_ts == (stamps[-1] if stamps else after_ts)
    assert piece.last_ts <= piece.max_ts
    if piece.more:
        assert stamps, "a slice that says more is never empty"
    keys = [(d[0], d[1]) for d in piece.documents]
    assert keys == sorted(set(keys))
    assert all(after_ts < d[0] <= piece.last_ts for d in piece.documents)
    # Whole commits: every commit's rows, no row outside a commit of the slice.
    per_ts = collections.Counter(d[0] for d in piece.documents)
    assert set(per_ts) <= set(stamps)
    for ts, documents, _, _ in piece.commits:
        assert per_ts[ts] == documents, ts
    # The row shapes load hands to the core.
    for commit in piece.commits:
        assert [type(x) for x in commit] == [int] * 4
    for ts, id_, table, value, deleted, prev, checksum in piece.documents:
        assert type(ts) is int and type(id_) is bytes and type(table) is int
        assert value is None or type(value) is bytes
        assert type(deleted) is bool and (prev is None or type(prev) is int)
        assert type(checksum) is int
    if piece.catalog_json is not None:
        tables = {int(n) for n in json.loads(piece.catalog_json)["tables"]}
        assert {d[2] for d in piece.documents} <= tables


async def _history(db: reactive.Database) -> None:
    """Inserts into several tables, multi-document commits, patches and deletes."""
    ids = []
    for n in range(4):
        ids.append(await db.mutation("m:put", {"table": "a", "n": n}))
    ids += await db.mutation("m:put_many", {"table": "b", "ns": list(range(10, 17))})
    for i in ids[:5]:
        await db.mutation("m:bump", {"id": i})
    await db.mutation("m:put", {"table": "c", "n": 100, "pad": secrets.token_urlsafe(30_000)})
    await db.mutation("m:drop", {"id": ids[1]})
    await db.mutation("m:put_many", {"table": "a", "ns": []})  # a commit that writes nothing
    await db.mutation("m:put_many", {"table": "c", "ns": list(range(200, 203))})


# -- a reader beside the writer --------------------------------------------------------------


async def test_reader_opens_beside_the_writer_and_writes_nothing(
    server_url: str, app: Path, raw_db: RawDb
) -> None:
    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"table": "a", "n": 1})
        async with raw_db(server_url) as raw:
            epoch = await raw.get_global("lease_epoch")
        reader = await open_persistence(server_url, lease=False, pool_size=2)
        try:
            assert isinstance(reader, LogSource)
            assert "reactive:reactive" not in reader.url
            async with raw_db(server_url) as raw:
                assert await raw.get_global("lease_epoch") == epoch  # no epoch taken
            # The writer goes on committing; the reader reads what it committed.
            await db.mutation("m:put", {"table": "a", "n": 2})
            assert await reader.get_global("max_ts") == str(db.timestamp).encode()
            state = await reader.load()
            assert state.max_ts == db.timestamp
            engine = _core.Engine(state)
            assert (await reader.check(engine))["problems"] == []
            doc_id = await db.mutation("m:put", {"table": "a", "n": 3})
            got = await reader.read_documents([doc_id], db.timestamp)
            assert got[doc_id] is not None
            entries = await reader.read_index_range(
                _index_id(db, "a", "by_id"), b"", b"\xff", db.timestamp
            )
            assert len(entries) == 3
            # Every write is refused, before anything is sent, and refused again.
            before = await _stored_rows(raw_db, server_url)
            for _ in range(2):
                with pytest.raises(PersistenceError, match="without the writer lease"):
                    await reader.set_global("reader_test", b"x")
                with pytest.raises(PersistenceError, match="without the writer lease"):
                    await reader.prune(engine, db.timestamp)
                with pytest.raises(PersistenceError, match="without the writer lease"):
                    # Refused before the batch is looked at.
                    await reader.write_batch(cast(_core.PersistBatch, None))
            assert await _stored_rows(raw_db, server_url) == before
            assert await reader.get_global("reader_test") is None
            # The writer is unaffected.
            await db.mutation("m:put", {"table": "a", "n": 4})
            assert await db.query("m:ns", {"table": "a"}) == [1, 2, 3, 4]
        finally:
            await reader.close()
        await reader.close()  # idempotent
        await db.mutation("m:put", {"table": "a", "n": 5})
    async with raw_db(server_url) as raw:
        assert await raw.get_global("lease_epoch") == epoch


async def test_reader_of_a_database_no_writer_initialized_is_refused(
    server_url: str, raw_db: RawDb
) -> None:
    with pytest.raises(PersistenceError, match="no writer has initialized it") as info:
        await open_persistence(server_url, lease=False)
    assert not isinstance(info.value, IncompatibleDatabaseError)
    async with raw_db(server_url) as raw:
        assert await raw.tables() == set()  # it created nothing


async def test_reader_refuses_another_format(server_url: str, app: Path, raw_db: RawDb) -> None:
    async with reactive.open(server_url, app=app) as db:
        await db.mutation("m:put", {"table": "a", "n": 1})
    async with raw_db(server_url) as raw:
        await raw.set_global("format_version", b"99")
    with pytest.raises(IncompatibleDatabaseError, match="99"):
        await open_persistence(server_url, lease=False)
    async with raw_db(server_url) as raw:
        assert await raw.get_global("format_version") == b"99"


async def test_sqlite_has_no_reader(db_url: str) -> None:
    with pytest.raises(PersistenceError, match="PostgreSQL and MySQL"):
        await open_persistence(db_url, lease=False)


# -- read_log_since --------------------------------------------------------------------------


@pytest.mark.parametrize("page_rows", [2, LOG_PAGE_ROWS])
@pytest.mark.parametrize("max_commits", [1, 3, 1000])
async def test_slices_concatenate_to_the_stored_log(
    server_url: str,
    app: Path,
    raw_db: RawDb,
    monkeypatch: pytest.MonkeyPatch,
    max_commits: int,
    page_rows: int,
) -> None:
    monkeypatch.setattr(sql, "LOG_PAGE_ROWS", page_rows)  # documents read a few at a time
    async with reactive.open(server_url, app=app) as db:
        reader = await open_persistence(server_url, lease=False)
        assert isinstance(reader, LogSource)
        try:
            empty = await reader.read_log_since(0, max_commits=max_commits)
            assert empty.commits == [] and empty.documents == [] and not empty.more
            assert empty.last_ts == 0
            await _history(db)
            slices = await _tail(reader, 0, max_commits)
            commits, documents, entries = await _stored_rows(raw_db, server_url)
            assert [c for s in slices for c in s.commits] == commits
            assert [d for s in slices for d in s.documents] == documents
            assert len(slices) == max(1, -(-len(commits) // max_commits))
            last = slices[-1]
            assert last.last_ts == last.max_ts == db.timestamp == commits[-1][0]
            assert last.retained_ts == 0
            assert last.catalog_json == (await reader.get_global("catalog") or b"").decode()
            # The rows rebuild the writer's state (with the index rows, which a slice leaves
            # out: a follower derives its own).
            loader = _core.Loader(last.catalog_json, last.max_ts)
            for piece in slices:
                loader.add_commits(piece.commits)
                loader.add_documents(piece.documents)
            loader.add_index_entries(entries)
            state = loader.finish()
            loaded = await reader.load()
            assert (state.max_ts, state.commits, state.revisions) == (
                loaded.max_ts,
                loaded.commits,
                loaded.revisions,
            )
            # From any position, the rest; at the end, nothing.
            middle = commits[len(commits) // 2][0]
            rest = await _tail(reader, middle, max_commits)
            assert [c for s in rest for c in s.commits] == [c for c in commits if c[0] > middle]
            at_end = await reader.read_log_since(db.timestamp, max_commits=max_commits)
            assert (at_end.commits, at_end.documents, at_end.more) == ([], [], False)
            assert at_end.last_ts == db.timestamp
        finally:
            await reader.close()


async def test_slices_keep_to_the_byte_budget(server_url: str, app: Path, raw_db: RawDb) -> None:
    budget = 40_000
    async with reactive.open(server_url, app=app) as db:
        for n in range(12):
            # Random text: stored values are compressed, so sizes come from the stored rows.
            await db.mutation("m:put", {"table": "a", "n": n, "pad": secrets.token_urlsafe(9000)})
        await db.mutation("m:put", {"table": "a", "n": 99, "pad": secrets.token_urlsafe(90_000)})
        for n in range(3):
            await db.mutation("m:put", {"table": "a", "n": 100 + n})
        reader = await open_persistence(server_url, lease=False)
        assert isinstance(reader, LogSource)
        try:
            commits, documents, _ = await _stored_rows(raw_db, server_url)
            size = {c[0]: _size([d for d in documents if d[0] == c[0]]) for c in commits}
            slices = await _tail(reader, 0, 1000, budget)
            assert [c for s in slices for c in s.commits] == commits
            assert [d for s in slices for d in s.documents] == documents
            assert len(slices) > 3
            for piece, following in itertools.pairwise(slices):
                used = _size(piece.documents)
                # Within the budget, unless one commit alone is over it...
                assert used <= budget or len(piece.commits) == 1
                # ...and cut only where the next commit would not fit.
                assert used + size[following.commits[0][0]] > budget
            big = [s for s in slices if _size(s.documents) > budget]
            assert len(big) == 1 and len(big[0].commits) == 1
            # A budget of nothing: one commit at a time, still whole.
            one_by_one = await _tail(reader, 0, 1000, 0)
            assert [len(s.commits) for s in one_by_one] == [1] * len(commits)
        finally:
            await reader.close()


async def test_a_reader_behind_the_pruned_history_must_reload(
    server_url: str, app: Path, raw_db: RawDb
) -> None:
    async with reactive.open(server_url, app=app) as db:
        reader = await open_persistence(server_url, lease=False)
        assert isinstance(reader, LogSource)
        try:
            ids = [await db.mutation("m:put", {"table": "a", "n": n}) for n in range(3)]
            position = (await reader.read_log_since(0)).last_ts
            assert position == db.timestamp
            for i in ids:
                await db.mutation("m:bump", {"id": i})
            report = await db.gc(keep_s=0)
            assert report.documents_deleted == 3  # the superseded revisions
            assert report.retained_ts > position
            with pytest.raises(LogGapError, match="must load") as info:
                await reader.read_log_since(position)
            assert isinstance(info.value, PersistenceError)
            assert (info.value.after_ts, info.value.retained_ts) == (
                position,
                report.retained_ts,
            )
            with pytest.raises(LogGapError):
                await reader.read_log_since(0)
            # Reloaded, it follows on from the loaded state.
            state = await reader.load()
            assert state.max_ts >= report.retained_ts
            piece = await reader.read_log_since(state.max_ts)
            assert (piece.commits, piece.retained_ts) == ([], report.retained_ts)
            await db.mutation("m:put", {"table": "a", "n": 9})
            piece = await reader.read_log_since(state.max_ts)
            assert [c[0] for c in piece.commits] == [db.timestamp]
            assert [d[0] for d in piece.documents] == [db.timestamp]
        finally:
            await reader.close()
    async with raw_db(server_url) as raw:
        assert await raw.get_global(RETAINED_TS) == str(report.retained_ts).encode()


async def test_a_reader_follows_a_writer_committing_meanwhile(
    server_url: str, app: Path, raw_db: RawDb
) -> None:
    async with reactive.open(server_url, app=app) as db:
        reader = await open_persistence(server_url, lease=False)
        assert isinstance(reader, LogSource)
        done = asyncio.Event()

        async def write() -> None:
            try:
                for n in range(60):
                    # New tables keep appearing: the catalog changes under the reader.
                    await db.mutation("m:put", {"table": f"t{n % 15}", "n": n})
                    if n % 4 == 0:
                        await db.mutation("m:put_many", {"table": "many", "ns": [n] * 5})
            finally:
                done.set()

        try:
            writer = asyncio.create_task(write())
            slices: list[LogSlice] = []
            loads = midway = 0
            position = 0
            while True:
                finished = done.is_set()
                piece = await reader.read_log_since(position, max_commits=2)
                _check_slice(piece, position, 2)
                slices.append(piece)
                midway += bool(piece.commits) and not done.is_set()
                position = piece.last_ts
                if len(slices) % 10 == 0:
                    await reader.load()  # never a spurious corruption error
                    loads += 1
                if finished and not piece.more:
                    break
            await writer
            commits, documents, _ = await _stored_rows(raw_db, server_url)
            assert [c for s in slices for c in s.commits] == commits
            assert [d for s in slices for d in s.documents] == documents
            assert position == db.timestamp
            assert loads > 0 and midway > 0
        finally:
            await reader.close()
