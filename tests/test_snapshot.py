"""Snapshot export/import: the Convex ZIP layout, and moving a database between backends.

PostgreSQL and MySQL steps need ``REACTIVE_TEST_POSTGRES_URL`` / ``REACTIVE_TEST_MYSQL_URL``
(CI sets both); each test gets fresh databases on those servers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive import _core
from reactive.snapshot import SnapshotError, export_snapshot, import_snapshot

APP = {
    "schema.py": """
        from reactive import define_schema, define_table, v
        schema = define_schema({
            "people": define_table({"name": v.string(), "age": v.any()}).index("by_name", ["name"]),
            "things": define_table({"owner": v.id("people"), "value": v.any()}),
        })
    """,
    "data.py": """
        from reactive import mutation, query, v

        @mutation(args={"n": v.int64()})
        async def seed(ctx, n):
            people = []
            for i in range(n):
                people.append(await ctx.db.insert("people", {"name": f"p{i:05d}", "age": i}))
            values = [
                0, -1, 2**63 - 1, -(2**63), 1.0, -0.0, 0.5, 1e300, float("nan"),
                float("inf"), float("-inf"), b"", b"\\x00\\xff", "", "héllo ☃", None, True,
                [1, [2.0, {"x": b"y"}]], {"nested": {"deep": [None, False]}, "a b": 1},
            ]
            for i, value in enumerate(values):
                await ctx.db.insert("things", {"owner": people[i % len(people)], "value": value})
            return len(people)

        @mutation(args={})
        async def churn(ctx):
            for p in await ctx.db.query("people").take(50):
                await ctx.db.patch(p["_id"], {"age": p["age"] * 2.5})
            for p in await ctx.db.query("people").order("desc").take(10):
                await ctx.db.delete(p["_id"])

        @query(args={"name": v.string()})
        async def by_name(ctx, name):
            q = ctx.db.query("people")
            return await q.with_index("by_name", lambda q: q.eq("name", name)).unique()
    """,
}


async def _dump(db: reactive.Database, ts: int | None = None) -> dict[str, list[str]]:
    """Every user table's documents (at ``ts``, default newest) as export JSON lines, sorted."""
    out: dict[str, list[str]] = {}
    engine = db._engine
    for table in engine.tables():
        if table["name"].startswith("_"):
            continue
        lines = []
        after = None
        while True:
            docs, after = engine.table_page(
                table["name"], engine.visible_ts if ts is None else ts, after, 1000
            )
            lines += [_core.export_json(d) for d in docs]
            if after is None:
                break
        out[table["name"]] = sorted(lines)
    return out


@pytest.fixture
async def source(make_app: Any, backend_urls: Any) -> AsyncIterator[tuple[str, Path]]:
    app = make_app(APP)
    url = backend_urls("sqlite")
    async with reactive.open(url, app=app) as db:
        assert await db.mutation("data:seed", {"n": 2500}) == 2500
        await db.mutation("data:churn", {})
    yield url, app


async def test_zip_layout_and_export_json(source: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = source
    path = tmp_path / "snap.zip"
    async with reactive.open(url) as db:
        report = await export_snapshot(db, path)
        tables = {t["name"]: t["number"] for t in db._engine.tables()}
    assert report.tables == {"people": 2490, "things": 19}
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert names == {
            "README.md",
            "_tables/documents.jsonl",
            "people/documents.jsonl",
            "people/generated_schema.jsonl",
            "things/documents.jsonl",
            "things/generated_schema.jsonl",
        }
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_DEFLATED
        listed = [json.loads(line) for line in zf.read("_tables/documents.jsonl").splitlines()]
        assert listed == sorted(
            ({"name": n, "id": tables[n]} for n in ("people", "things")), key=lambda t: t["id"]
        )
        assert zf.read("people/generated_schema.jsonl").decode().strip() == '"uniform"'
        lines = zf.read("things/documents.jsonl").decode().splitlines()
    assert len(lines) == 19
    for line in lines:
        keys = list(json.loads(line).keys())
        assert keys == sorted(keys, key=lambda k: k.encode())
        assert keys[:2] == ["_creationTime", "_id"]
    values = [json.loads(line)["value"] for line in lines]
    texts = [line[line.index('"value":') + 8 : -1] for line in lines]
    # Export JSON: int64 as a bare integer, float64 with a '.' or exponent.
    assert "0" in texts and "-1" in texts and "9223372036854775807" in texts
    assert "1.0" in texts and "-0.0" in texts and "0.5" in texts
    assert {"$float": "AAAAAAAA+H8="} in values  # NaN
    assert {"$bytes": "AP8="} in values


async def test_round_trip_across_backends(
    source: tuple[str, Path], backend_urls: Any, tmp_path: Path
) -> None:
    url, app = source
    async with reactive.open(url) as db:
        expected = await _dump(db)
    assert len(expected["people"]) == 2490
    current = url
    for step, kind in enumerate(("postgres", "mysql", "sqlite")):
        path = tmp_path / f"step{step}.zip"
        async with reactive.open(current) as db:
            await export_snapshot(db, path)
        target = backend_urls(kind)
        async with reactive.open(target) as db:
            report = await import_snapshot(db, path)
            assert report.tables == {"people": 2490, "things": 19}
            assert report.skipped == []
            assert await _dump(db) == expected
            check = await db.check()
            assert check["problems"] == []
        current = target
    # The imported database works with the app: its index is backfilled and queried.
    async with reactive.open(current, app=app) as db:
        await db.wait_for_indexes()
        person = await db.query("data:by_name", {"name": "p00003"})
        assert person is not None and person["age"] == 7.5
        assert (await db.check())["problems"] == []


async def test_cli_export_import(source: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = source
    path = tmp_path / "cli.zip"
    target = f"sqlite:///{tmp_path / 'cli-target.sqlite3'}"
    env = {**os.environ, "PYTHONPATH": str(Path(reactive.__file__).parents[1])}
    for argv in (["export", url, str(path)], ["import", target, str(path)], ["check"]):
        if argv == ["check"]:
            argv = ["--db", target, "check"]
        done = subprocess.run(
            [sys.executable, "-m", "reactive", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert "exported 2509 documents from 2 table(s)" in _run_out(url, path, env)


def _run_out(url: str, path: Path, env: dict[str, str]) -> str:
    again = path.with_name("again.zip")
    done = subprocess.run(
        [sys.executable, "-m", "reactive", "--db", url, "export", str(again)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def _convex_id(number: int) -> str:
    # An id of table `number`, made by inserting into a scratch table with that number.
    import asyncio

    async def make() -> str:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            async with reactive.open(f"sqlite:///{d}/x.sqlite3") as db:
                db._engine.create_table_numbered("scratch", number)
                txn = db._engine.begin(False)
                doc_id: str = txn.insert("scratch", {})
                return doc_id

    return asyncio.run(make())


def test_convex_style_export_imports(tmp_path: Path, backend_urls: Any) -> None:
    import asyncio

    doc_id = _convex_id(10001)
    path = _zip(
        tmp_path / "convex.zip",
        {
            "README.md": "exported by convex\n",
            "_tables/documents.jsonl": '{"name":"notes","id":10001}\n',
            "notes/documents.jsonl": (
                f'{{"_creationTime":1700000000000.5,"_id":"{doc_id}","count":42,'
                '"ratio":42.0,"big":1e21,"nan":{"$float":"AAAAAAAA+H8="},'
                '"raw":{"$bytes":"AQI="}}\n'
            ),
            "notes/generated_schema.jsonl": '"uniform"\n',
            "_storage/documents.jsonl": "",
            "_components/child/_tables/documents.jsonl": "",
        },
    )

    async def run() -> None:
        async with reactive.open(backend_urls("sqlite")) as db:
            report = await import_snapshot(db, path)
            assert report.tables == {"notes": 1}
            assert report.files == 0  # _storage is imported (empty here)
            assert report.skipped == ["_components (child components are not supported)"]
            doc = await _get(db, doc_id)
            assert doc["_creationTime"] == 1700000000000.5
            assert doc["count"] == 42 and isinstance(doc["count"], int)
            assert doc["ratio"] == 42.0 and isinstance(doc["ratio"], float)
            assert doc["big"] == 1e21
            assert math.isnan(doc["nan"])
            assert doc["raw"] == b"\x01\x02"

    asyncio.run(run())


async def _get(db: reactive.Database, doc_id: str) -> dict[str, Any]:
    txn = db._engine.begin(True)
    doc: dict[str, Any] = txn.get(doc_id)
    return doc


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"x.txt": ""}, "_tables/documents.jsonl is missing"),
        ({"_tables/documents.jsonl": "{nope\n"}, "line 1: not JSON"),
        ({"_tables/documents.jsonl": '{"name":"t"}\n'}, '"id": integer'),
        ({"_tables/documents.jsonl": '{"name":"t","id":10001}\n'}, "t/documents.jsonl is missing"),
        (
            {
                "_tables/documents.jsonl": '{"name":"t","id":10001}\n',
                "t/documents.jsonl": '{"_id":"x","_creationTime":1.0}\n',
            },
            "is not an id of table number 10001",
        ),
        (
            {
                "_tables/documents.jsonl": '{"name":"t","id":10001}\n',
                "t/documents.jsonl": "[1]\n",
            },
            "line 1: a document must be a JSON object",
        ),
        (
            {
                "_tables/documents.jsonl": '{"name":"t","id":10001}\n',
                "t/documents.jsonl": "",
                "t/generated_schema.jsonl": '"{}"\n{"abc": {"x": "Int64"}}\n',
            },
            "legacy Convex export",
        ),
    ],
)
async def test_malformed_snapshots_are_refused(
    tmp_path: Path, db_url: str, files: dict[str, str], message: str
) -> None:
    path = _zip(tmp_path / "bad.zip", files)
    async with reactive.open(db_url) as db:
        with pytest.raises(SnapshotError, match=message):
            await import_snapshot(db, path)


async def test_not_a_zip_and_non_empty_target(source: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = source
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    path = tmp_path / "snap.zip"
    async with reactive.open(url) as db:
        with pytest.raises(SnapshotError, match="not a ZIP file"):
            await import_snapshot(db, junk)
        await export_snapshot(db, path)
        before = await _dump(db)
        # Importing into the database it came from: the tables have documents.
        with pytest.raises(SnapshotError, match="already has documents"):
            await import_snapshot(db, path)
        assert await _dump(db) == before
        assert (await db.check())["problems"] == []


async def test_export_is_one_snapshot_while_writes_go_on(
    source: tuple[str, Path], tmp_path: Path
) -> None:
    import asyncio

    from reactive import snapshot

    url, app = source
    path = tmp_path / "live.zip"
    async with reactive.open(url, app=app) as db:
        old_page = snapshot.EXPORT_PAGE_DOCUMENTS
        snapshot.EXPORT_PAGE_DOCUMENTS = 50  # many pages, so writes land between them
        try:
            export = asyncio.create_task(export_snapshot(db, path))
            while not export.done():
                await db.mutation("data:churn", {})
            report = await export
            rounds = 0
            while rounds < 3:  # writes after the export's snapshot, before the dump
                await db.mutation("data:churn", {})
                rounds += 1
            at_snapshot = await _dump(db, report.ts)
            newest = await _dump(db)
        finally:
            snapshot.EXPORT_PAGE_DOCUMENTS = old_page
    assert at_snapshot != newest
    assert report.documents == sum(len(v) for v in at_snapshot.values())
    with zipfile.ZipFile(path) as zf:
        exported = sorted(zf.read("people/documents.jsonl").decode().splitlines())
    assert exported == at_snapshot["people"]
