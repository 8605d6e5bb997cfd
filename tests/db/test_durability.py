"""Durability: acknowledged commits survive SIGKILL, timestamps keep increasing across
restarts, corruption is detected at open, one process at a time.

Source: ARCHITECTURE.md ("Persistence": a commit is acknowledged only after it is durable; a
torn or corrupt tail is detected by checksum, reported, and never half-applied) and §3
("crash at any instant ⇒ after restart no acknowledged commit is lost, no partial commit is
visible, indexes equal documents"); the table layout is in ``rust/core/src/sqlite.rs``.
"""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.errors import CorruptionError, IncompatibleDatabaseError

APP = '''
from reactive import mutation, query, v


@mutation(args={"seq": v.int64()})
async def put(ctx, seq):
    """One commit, two documents: the item and its shadow."""
    item = await ctx.db.insert("items", {"seq": seq})
    await ctx.db.insert("shadows", {"seq": seq, "item": item})
    return item


@mutation(args={"id": v.id("items"), "seq": v.int64()})
async def renumber(ctx, id, seq):
    await ctx.db.patch(id, {"seq": seq})


@mutation(args={})
async def marker(ctx):
    return await ctx.db.insert("markers", {"at": ctx.now})


@query(args={"table": v.string(), "cursor": v.union(v.string(), v.null())})
async def page(ctx, table, cursor):
    return await ctx.db.query(table).paginate({"numItems": 1000, "cursor": cursor})
'''

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "items": define_table({"seq": v.int64()}).index("by_seq", ["seq"]),
    "shadows": define_table({"seq": v.int64(), "item": v.id("items")})
        .index("by_seq", ["seq"]),
    "markers": define_table({"at": v.float64()}),
})
"""

CHILD = """
import asyncio
import itertools
import os
import sys

import reactive


async def main():
    url, app, ack_path, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    db = await reactive.open(url, app=app)
    counter = itertools.count(start)
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.write("committing\\n")
    sys.stdout.flush()

    async def worker():
        while True:
            seq = next(counter)
            outcome = await db.run_mutation("m:put", {"seq": seq})
            # Acknowledged: only now is the sequence number written down (durably).
            os.write(fd, f"{seq} {outcome.ts}\\n".encode())
            os.fsync(fd)

    await asyncio.gather(*(worker() for _ in range(8)))


asyncio.run(main())
"""

OPENER = """
import asyncio
import sys

import reactive


async def main():
    try:
        db = await reactive.open(sys.argv[1])
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        return 3
    await db.close()
    print("opened")
    return 0


sys.exit(asyncio.run(main()))
"""


def _read_acks(path: Path) -> list[tuple[int, int]]:
    """Complete ``seq ts`` lines of the acknowledgements file (a torn last line is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            continue
        seq, ts = line.split()
        out.append((int(seq), int(ts)))
    return out


async def _all_docs(db: reactive.Database, table: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    cursor = None
    while True:
        result = await db.query("m:page", {"table": table, "cursor": cursor})
        docs.extend(result["page"])
        if result["isDone"]:
            return docs
        cursor = result["continueCursor"]


# -- crash loop -----------------------------------------------------------------------------


async def test_acknowledged_commits_survive_sigkill(
    tmp_path: Path, db_url: str, make_app: Any
) -> None:
    rounds = 30
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    acks_path = tmp_path / "acks.txt"
    rng = random.Random(7)
    cli_checked = False
    last_ts = 0

    # Create the database (and its tables) once before the crash loop.
    async with reactive.open(db_url, app=app_dir) as db:
        last_ts = (await db.run_mutation("m:marker")).ts

    for round_ in range(rounds):
        stderr_path = tmp_path / f"child{round_}.err"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    db_url,
                    str(app_dir),
                    str(acks_path),
                    str(round_ * 1_000_000),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            try:
                assert proc.stdout is not None
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line == b"committing\n", stderr_path.read_text()
                time.sleep(rng.uniform(0.05, 0.4))
                proc.send_signal(signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=30)
                assert proc.stdout is not None
                proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, stderr_path.read_text()

        acks = _read_acks(acks_path)
        acked = collections.Counter(seq for seq, _ in acks)
        assert all(n == 1 for n in acked.values()), "a sequence number was acked twice"

        async with reactive.open(db_url, app=app_dir) as db:
            items = await _all_docs(db, "items")
            shadows = await _all_docs(db, "shadows")
            seqs = collections.Counter(d["seq"] for d in items)
            duplicates = sorted(s for s, n in seqs.items() if n > 1)
            assert duplicates == [], f"round {round_}: duplicated seq numbers {duplicates[:10]}"
            missing = sorted(set(acked) - set(seqs))
            assert missing == [], f"round {round_}: acknowledged but lost: {missing[:10]}"
            # No partial commit: every item has its shadow, every shadow its item.
            by_item = {d["item"]: d["seq"] for d in shadows}
            assert len(by_item) == len(shadows)
            assert by_item == {d["_id"]: d["seq"] for d in items}, f"round {round_}"

            # Timestamps: nothing acknowledged is newer than what the reopened db shows, and
            # a new commit is newer than everything before it.
            newest_acked = max((ts for _, ts in acks), default=0)
            assert db.timestamp >= max(newest_acked, last_ts)
            outcome = await db.run_mutation("m:marker")
            assert outcome.ts > max(newest_acked, last_ts)
            last_ts = outcome.ts

            report = await db.check()
            assert report["problems"] == [], report["problems"][:5]
            assert report["documents"] >= 2 * len(items)

        if not cli_checked and len(acks) > 0:
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "reactive", "--db", db_url, "check"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert "ok" in result.stdout
            cli_checked = True

    assert cli_checked
    acks = _read_acks(acks_path)
    # The child really was committing when it was killed, round after round.
    assert len(acks) >= rounds, len(acks)
    assert len({seq // 1_000_000 for seq, _ in acks}) >= rounds // 2


# -- timestamps -----------------------------------------------------------------------------


async def test_timestamps_keep_increasing_across_restarts(db_url: str, make_app: Any) -> None:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    previous = 0
    for i in range(4):
        async with reactive.open(db_url, app=app_dir) as db:
            # Reopening shows the newest timestamp of the last run, never an older one.
            assert db.timestamp >= previous
            outcome = await db.run_mutation("m:put", {"seq": i})
            assert outcome.ts > previous
            assert outcome.ts > 0
            assert db.timestamp >= outcome.ts
            second = await db.run_mutation("m:marker")
            assert second.ts > outcome.ts
            previous = db.timestamp
        # An open and close without commits does not move time back either.
        async with reactive.open(db_url, app=app_dir) as db:
            assert db.timestamp == previous
    async with reactive.open(db_url, app=app_dir) as db:
        assert sorted(d["seq"] for d in await _all_docs(db, "items")) == [0, 1, 2, 3]


# -- corruption -----------------------------------------------------------------------------


async def _populate(db_url: str, app_dir: Path) -> dict[str, Any]:
    """Commit some documents; returns {"puts": [(ts, id)], "patch": (ts, id)}."""
    async with reactive.open(db_url, app=app_dir) as db:
        puts = []
        for seq in range(6):
            outcome = await db.run_mutation("m:put", {"seq": seq})
            puts.append((outcome.ts, outcome.value))
        patched_id = puts[2][1]
        outcome = await db.run_mutation("m:renumber", {"id": patched_id, "seq": 200})
        report = await db.check()
        assert report["problems"] == []
    return {"puts": puts, "patch": (outcome.ts, patched_id)}


def _tamper(path: Path, case: str, info: dict[str, Any]) -> list[str]:
    """Damage the database file; returns strings the CorruptionError message must name."""
    con = sqlite3.connect(path)
    try:
        if case == "document_value":
            ts, doc_id = info["puts"][3]
            rows = con.execute("SELECT id, value FROM documents WHERE ts = ?", (ts,)).fetchall()
            assert len(rows) == 2  # the item and its shadow
            row_id, value = next(r for r in rows if b"item" not in r[1])
            flipped = bytearray(value)
            flipped[len(flipped) // 2] ^= 0x5A
            changed = con.execute(
                "UPDATE documents SET value = ? WHERE ts = ? AND id = ?",
                (bytes(flipped), ts, row_id),
            ).rowcount
            expected = [str(ts), doc_id]
        elif case == "index_row":
            ts, _ = info["puts"][4]
            rows = con.execute(
                "SELECT index_id, key FROM indexes WHERE ts = ? ORDER BY index_id DESC", (ts,)
            ).fetchall()
            assert len(rows) >= 6  # by_id, by_creation_time, by_seq for two documents
            index_id, key = rows[0]
            changed = con.execute(
                "DELETE FROM indexes WHERE index_id = ? AND key = ? AND ts = ?",
                (index_id, key, ts),
            ).rowcount
            expected = [str(ts), "index"]
        elif case == "index_key":
            ts, _ = info["puts"][5]
            index_id, key = con.execute(
                "SELECT index_id, key FROM indexes WHERE ts = ? ORDER BY index_id, key LIMIT 1",
                (ts,),
            ).fetchone()
            flipped = bytearray(key)
            flipped[-2] ^= 0x01
            changed = con.execute(
                "UPDATE indexes SET key = ? WHERE index_id = ? AND key = ? AND ts = ?",
                (bytes(flipped), index_id, key, ts),
            ).rowcount
            expected = [str(ts), "index"]
        elif case == "commit_row":
            ts, _ = info["puts"][1]
            changed = con.execute("DELETE FROM commits WHERE ts = ?", (ts,)).rowcount
            expected = [str(ts), "commit"]
        elif case == "prev_ts":
            ts, doc_id = info["patch"]
            (prev,) = con.execute("SELECT prev_ts FROM documents WHERE ts = ?", (ts,)).fetchone()
            assert prev == info["puts"][2][0]
            changed = con.execute(
                "UPDATE documents SET prev_ts = ? WHERE ts = ?", (prev - 1, ts)
            ).rowcount
            expected = [str(ts), doc_id]
        else:  # pragma: no cover
            raise AssertionError(case)
        assert changed == 1
        con.commit()
    finally:
        con.close()
    return expected


@pytest.mark.parametrize(
    "case", ["document_value", "index_row", "index_key", "commit_row", "prev_ts"]
)
async def test_corruption_is_detected_at_open(
    tmp_path: Path, db_url: str, make_app: Any, case: str
) -> None:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    info = await _populate(db_url, app_dir)
    path = tmp_path / "db.sqlite3"
    expected = _tamper(path, case, info)

    for _ in range(2):  # refused every time, and the failed open released the lock
        with pytest.raises(CorruptionError) as excinfo:
            await reactive.open(db_url, app=app_dir)
        message = str(excinfo.value)
        for name in expected:
            assert name in message, f"{case}: {message!r} does not name {name}"

    # Opening without the app (as `python -m reactive check` does) is refused too.
    with pytest.raises(CorruptionError):
        await reactive.open(db_url)
    if case == "document_value":
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "reactive", "--db", db_url, "check"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "CorruptionError" in result.stderr
        assert expected[0] in result.stderr


async def test_untampered_database_reopens(db_url: str, make_app: Any) -> None:
    """The control for the corruption cases: the same steps without damage open fine."""
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    info = await _populate(db_url, app_dir)
    async with reactive.open(db_url, app=app_dir) as db:
        items = await _all_docs(db, "items")
        assert sorted(d["seq"] for d in items) == [0, 1, 3, 4, 5, 200]
        assert {d["_id"] for d in items} == {doc_id for _, doc_id in info["puts"]}
        assert (await db.check())["problems"] == []


# -- one process at a time ------------------------------------------------------------------


async def test_second_process_is_refused(tmp_path: Path, db_url: str, make_app: Any) -> None:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    script = tmp_path / "opener.py"
    script.write_text(textwrap.dedent(OPENER))

    def try_open() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), db_url], capture_output=True, text=True, timeout=120
        )

    db = await reactive.open(db_url, app=app_dir)
    try:
        await db.mutation("m:put", {"seq": 1})
        result = await asyncio.to_thread(try_open)
        assert result.returncode == 3, result.stdout + result.stderr
        assert result.stdout.startswith(IncompatibleDatabaseError.__name__), result.stdout
        assert "another process" in result.stdout
        # The holder is unaffected.
        await db.mutation("m:put", {"seq": 2})
        assert sorted(d["seq"] for d in await _all_docs(db, "items")) == [1, 2]
    finally:
        await db.close()

    # Once it is closed, another process may open it.
    result = await asyncio.to_thread(try_open)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "opened"
