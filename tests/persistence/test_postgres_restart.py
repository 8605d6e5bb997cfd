"""PostgreSQL restarted (``pg_ctl restart -m fast``) while the app is writing.

Mutations that fail while the server is away fail with ``PersistenceError`` (never hang,
never another error); the app reconnects by itself and later mutations succeed; after a
reopen every mutation that returned success is there exactly once, a failed one is absent
or there once (its outcome was unknown), and ``check`` passes.

Needs root (the server runs as the ``postgres`` OS user; it is restarted with ``runuser``)
and ``REACTIVE_TEST_POSTGRES_URL``. The server is running again when the test ends.

Source: python/reactive/persistence/postgres.py ("A connection lost while a batch commits
leaves its outcome unknown: the adapter reconnects and looks for the batch's first commit
record"), docs/guarantees.md ("Durability").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import glob
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import reactive
from reactive.errors import PersistenceError

MakeApp = Callable[[dict[str, str]], Path]
RawDb = Any  # the ``raw_db`` fixture of conftest.py

pytestmark = pytest.mark.skipif(
    not os.environ.get("REACTIVE_TEST_POSTGRES_URL") or os.geteuid() != 0,
    reason="needs REACTIVE_TEST_POSTGRES_URL and root (to restart the server as postgres)",
)

APP = """
from reactive import mutation, query


@mutation
async def put(ctx, seq):
    return await ctx.db.insert("items", {"seq": seq})


@query
async def seqs(ctx):
    return [d["seq"] for d in await ctx.db.query("items").collect()]
"""

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({"items": define_table({"seq": v.int64()}).index("by_seq", ["seq"])})
"""


class PgServer:
    """The test server's ``pg_ctl`` and data directory."""

    def __init__(self, pg_ctl: str, data_dir: str) -> None:
        self.pg_ctl = pg_ctl
        self.data_dir = data_dir
        beside = Path(data_dir).parent / "pg-run" / "pg.log"  # scripts/dbservers.sh's log
        self.log = str(beside) if beside.exists() else "/tmp/reactive-pg-restart.log"

    def ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", self.pg_ctl, "-D", self.data_dir, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
        )

    def running(self) -> bool:
        return self.ctl("status").returncode == 0

    def restart(self) -> subprocess.CompletedProcess[str]:
        # Without -o, pg_ctl restarts with the options the server was started with
        # (postmaster.opts); -l keeps the server's output out of our pipes.
        return self.ctl("restart", "-m", "fast", "-w", "-t", "60", "-l", self.log)


@pytest.fixture
async def pg_server(raw_db: RawDb) -> AsyncIterator[PgServer]:
    async with raw_db(os.environ["REACTIVE_TEST_POSTGRES_URL"]) as raw:
        data_dir = await raw.scalar("SHOW data_directory")
        version = int(await raw.scalar("SHOW server_version_num"))
    candidates = [f"/usr/lib/postgresql/{version // 10000}/bin/pg_ctl"]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    pg_ctl = next((c for c in candidates if os.path.exists(c)), None)
    if pg_ctl is None:
        pytest.fail("pg_ctl not found under /usr/lib/postgresql/*/bin")
    server = PgServer(pg_ctl, data_dir)
    assert server.running(), server.ctl("status").stdout
    try:
        yield server
    finally:
        if not server.running():
            result = server.restart()  # starts it with its recorded options
            assert result.returncode == 0, result.stdout + result.stderr
        assert server.running()


RESTARTS = 3
AFTER_EACH = 30  # mutations that must succeed after each restart


@pytest.mark.parametrize("server_url", ["postgres"], indirect=True)
async def test_writes_survive_server_restarts(
    server_url: str, pg_server: PgServer, make_app: MakeApp
) -> None:
    app = make_app({"m.py": APP, "schema.py": SCHEMA})
    db = await reactive.open(server_url, app=app, timeout_s=5)
    ok: list[tuple[int, float]] = []
    failed: list[int] = []
    unexpected: list[str] = []
    counter = iter(range(1_000_000))
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            seq = next(counter)
            try:
                # Bounded: a mutation must end (commit or fail) once the server is back.
                await asyncio.wait_for(db.mutation("m:put", {"seq": seq}), 25)
            except PersistenceError:
                failed.append(seq)
                await asyncio.sleep(0.05)
            except Exception as exc:  # a hang (TimeoutError) or an error of another kind
                unexpected.append(f"seq {seq}: {exc!r}")
                stop.set()
            else:
                ok.append((seq, time.monotonic()))
                await asyncio.sleep(0.002)

    writers = [asyncio.create_task(writer()) for _ in range(4)]
    after_restarts: list[int] = []
    close_error: BaseException | None = None
    try:
        await asyncio.sleep(0.3)
        assert ok, "nothing committed before the first restart"
        for _ in range(RESTARTS):
            result = await asyncio.to_thread(pg_server.restart)
            assert result.returncode == 0, result.stdout + result.stderr
            restarted_at = time.monotonic()
            # The app reconnects: mutations succeed again after the restart.
            deadline = restarted_at + 30
            while time.monotonic() < deadline and not stop.is_set():
                if sum(1 for _, t in ok if t > restarted_at) >= AFTER_EACH:
                    break
                await asyncio.sleep(0.05)
            after_restarts.append(sum(1 for _, t in ok if t > restarted_at))
            if stop.is_set():
                break
    finally:
        stop.set()
        await asyncio.gather(*writers)
        try:
            await asyncio.wait_for(db.close(), 30)
        except Exception as exc:
            close_error = exc
            with contextlib.suppress(Exception):  # leave no connections behind
                await asyncio.wait_for(db._persistence.close(), 30)
    # A mutation that hung shows why when closing reports how the commit task ended.
    assert (unexpected, close_error) == ([], None), (unexpected[:4], repr(close_error))
    assert after_restarts == [max(n, AFTER_EACH) for n in after_restarts], after_restarts
    assert len(after_restarts) == RESTARTS

    async with reactive.open(server_url, app=app) as db:
        stored = collections.Counter(await db.query("m:seqs"))
        acked = [seq for seq, _ in ok]
        assert sorted(s for s, n in stored.items() if n > 1) == [], "stored twice"
        assert sorted(set(acked) - set(stored)) == [], "acknowledged but lost"
        assert set(stored) <= set(acked) | set(failed)
        report = await db.check()
        assert report["problems"] == [], report["problems"][:5]
        assert report["documents"] == sum(stored.values())
