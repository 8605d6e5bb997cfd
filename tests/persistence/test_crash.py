"""SIGKILL of a committing process, on every backend: every acknowledged commit is present
exactly once after reopening, no commit is half there, and ``check`` passes.

Source: docs/guarantees.md ("Durability": after a crash at any instant no acknowledged
commit is lost, no commit is half applied, the indexes equal the documents);
tests/db/test_durability.py does the same, longer, for SQLite alone.
"""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import reactive

MakeApp = Callable[[dict[str, str]], Path]

APP = '''
from reactive import mutation, query, v


@mutation(args={"seq": v.int64()})
async def put(ctx, seq):
    """One commit, two documents: the item and its shadow."""
    item = await ctx.db.insert("items", {"seq": seq, "pad": "x" * (seq % 700)})
    await ctx.db.insert("shadows", {"seq": seq, "item": item})
    return item


@mutation(args={})
async def marker(ctx):
    return await ctx.db.insert("markers", {"at": ctx.now})


@query(args={"table": v.string(), "cursor": v.union(v.string(), v.null())})
async def page(ctx, table, cursor):
    return await ctx.db.query(table).paginate({"numItems": 1000, "cursor": cursor})


@query(args={"seq": v.int64()})
async def by_seq(ctx, seq):
    q = ctx.db.query("items").with_index("by_seq", lambda r: r.eq("seq", seq))
    return [d["_id"] for d in await q.collect()]
'''

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "items": define_table({"seq": v.int64(), "pad": v.string()}).index("by_seq", ["seq"]),
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

ROUNDS = 8


def _read_acks(path: Path) -> list[tuple[int, int]]:
    """Complete ``seq ts`` lines of the acknowledgements file (a torn last line is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
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


async def _run_and_kill(script: Path, args: list[str], stderr_path: Path, delay: float) -> None:
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=stderr
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line == b"committing\n", stderr_path.read_text()
            await asyncio.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            await asyncio.to_thread(proc.wait, 30)
            assert proc.stdout is not None
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, stderr_path.read_text()


async def test_acknowledged_commits_survive_sigkill(
    backend_url: str, tmp_path: Path, make_app: MakeApp
) -> None:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    acks_path = tmp_path / "acks.txt"
    rng = random.Random(17)

    async with reactive.open(backend_url, app=app_dir) as db:
        last_ts = (await db.run_mutation("m:marker")).ts

    for round_ in range(ROUNDS):
        await _run_and_kill(
            script,
            [backend_url, str(app_dir), str(acks_path), str(round_ * 1_000_000)],
            tmp_path / f"child{round_}.err",
            rng.uniform(0.1, 0.5),
        )
        acks = _read_acks(acks_path)
        acked = collections.Counter(seq for seq, _ in acks)
        assert all(n == 1 for n in acked.values()), "a sequence number was acked twice"

        # The killed process's lease or lock is gone with it: the database opens at once.
        started = time.monotonic()
        async with reactive.open(backend_url, app=app_dir) as db:
            opened_in = time.monotonic() - started
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
            for seq, _ in acks[-3:]:
                assert len(await db.query("m:by_seq", {"seq": seq})) == 1

            # Time never goes back: a new commit is newer than everything acknowledged.
            newest_acked = max((ts for _, ts in acks), default=0)
            assert db.timestamp >= max(newest_acked, last_ts)
            outcome = await db.run_mutation("m:marker")
            assert outcome.ts > max(newest_acked, last_ts)
            last_ts = outcome.ts

            report = await db.check()
            assert report["problems"] == [], report["problems"][:5]
            assert report["documents"] == len(items) + len(shadows) + round_ + 2
        assert opened_in < 10, opened_in

    acks = _read_acks(acks_path)
    # The child really was committing when it was killed, round after round.
    assert len(acks) >= ROUNDS, len(acks)
    assert len({seq // 1_000_000 for seq, _ in acks}) >= ROUNDS // 2


READER_CHILD = """
import asyncio
import os
import signal
import subprocess
import sys

import reactive

EXTERNAL_READER = '''
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])  # as the sqlite3 shell or a backup tool opens it
print(con.execute("SELECT count(*) FROM documents").fetchone()[0])
con.close()
'''


async def main():
    url, app, ack_path = sys.argv[1], sys.argv[2], sys.argv[3]
    path = url[len("sqlite:///"):]
    db = await reactive.open(url, app=app)
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def put(seq):
        await db.run_mutation("m:put", {"seq": seq})
        os.write(fd, f"{seq} 0\\n".encode())
        os.fsync(fd)

    await put(0)
    # The adapter's own point-in-time reads (Persistence.read_documents / read_index_range).
    first = (await db.query("m:page", {"table": "items", "cursor": None}))["page"][0]["_id"]
    await db._persistence.read_documents([first], db.timestamp)
    await db._persistence.read_index_range(1, b"", b"\\xff", db.timestamp)
    # Another process looks at the file while the database is open.
    subprocess.run([sys.executable, "-c", EXTERNAL_READER, path], check=True)
    for seq in range(1, 21):
        await put(seq)
    os.kill(os.getpid(), signal.SIGKILL)


asyncio.run(main())
"""


async def test_sqlite_acknowledged_commits_survive_adapter_reads_and_an_outside_reader(
    tmp_path: Path, make_app: MakeApp
) -> None:
    """The SQLite adapter reads through Python's ``sqlite3`` (a second copy of SQLite in the
    process, beside the core's): closing those connections must not drop the core's locks,
    or the next reader that closes in another process deletes the write-ahead log under the
    open database and the commits acknowledged afterwards are lost at a crash.
    """
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(READER_CHILD))
    acks_path = tmp_path / "acks.txt"
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), url, str(app_dir), str(acks_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    acked = [seq for seq, _ in _read_acks(acks_path)]
    assert acked == list(range(21))
    async with reactive.open(url, app=app_dir) as db:
        seqs = sorted(d["seq"] for d in await _all_docs(db, "items"))
        assert seqs == acked, f"acknowledged but lost: {sorted(set(acked) - set(seqs))}"
        assert (await db.check())["problems"] == []
