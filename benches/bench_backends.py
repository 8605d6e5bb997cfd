"""Benchmark 9: durable single-insert mutations per second on each persistence backend.

Reactive: the app of ``benches/benchapp`` (``docs`` with one user index, so a document has
3 index entries) opened on each backend in turn, on a fresh database every run: the
embedded SQLite default, PostgreSQL (``postgresql://``, asyncpg, ``pool_size`` 8) and
MariaDB (``mysql://``, asyncmy, ``pool_size`` 8). 64 asyncio tasks each await
``db.mutation("docs:insert", ...)`` one after another for a fixed time; a mutation is
acknowledged only once its group-commit batch is durable. After each run the number of
documents is checked, in the engine and again after closing and reopening the database
(i.e. read back from the file or the server).

Anchors, on the same server, each on a fresh database, alternating with reactive's runs:

* SQLite: ``bench_insert.anchor_inserts`` (Python ``sqlite3``, WAL + synchronous=FULL, one
  connection, one durable transaction per insert of 1 document row + 3 index rows).
* PostgreSQL: raw asyncpg, each write one transaction (``BEGIN``; ``INSERT`` of 1 row into
  ``documents``; ``executemany`` of 3 rows into ``indexes``; ``COMMIT``) into tables of
  the shape of reactive's (``MIGRATIONS`` of ``reactive/persistence/postgres.py``: the same
  columns, primary keys and secondary indexes). (a) one connection, sequential (a naive
  app); (b) 8 connections, one task each, concurrently (context: the server's own group
  commit with as many connections as reactive's pool).
* MariaDB: raw asyncmy, one connection, sequential, the same transaction (``INSERT`` of the
  document row; ``executemany`` of the 3 index rows, which asyncmy sends as one multi-row
  ``INSERT``; ``COMMIT``) into tables shaped like ``reactive/persistence/mysql.py``'s.

Both servers are started by the benchmark from Debian's binaries in scratch directories
(``servers.postgres()``, ``servers.mariadb()``), on 127.0.0.1 and free ports, with their
durable defaults (PostgreSQL fsync and synchronous_commit on; InnoDB
innodb_flush_log_at_trx_commit=1), and stopped afterwards. A backend whose server or driver
is missing is skipped, and its row says why.

Figure: commits/s; ratio = reactive (64 callers) / anchor. Target ≥ 3 on each backend
against its one-connection anchor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reactive
from bench_insert import GROUPS, _batch_counters, anchor_inserts
from common import APP, Row, log, median, percentile, scratch_dir, standalone
from fixtures import make_doc
from servers import (
    cpu_seconds,
    mariadb,
    mariadb_available,
    postgres,
    postgres_available,
    tree_cpu_seconds,
)

CALLERS = 64
"""Concurrent ``db.mutation`` callers of every reactive run."""
PG_CONNECTIONS = 8
"""Connections of the concurrent PostgreSQL anchor (reactive's default ``pool_size``)."""
WARMUP = 200
"""Writes before the clock starts (reactive and anchors alike)."""


# -- the row shape the anchors write ---------------------------------------------------------


def anchor_rows(i: int) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """Document ``i`` as a ``documents`` row and its 3 ``indexes`` rows, in the columns of
    reactive's server tables: ``(ts, id, table_id, value, deleted, prev_ts, checksum)`` and
    ``(ts, index_id, key_prefix, key_suffix, key_hash, doc_id, deleted, checksum)``."""
    doc = make_doc(i, GROUPS)
    doc_id = os.urandom(16)
    ts = time.time_ns()
    creation = struct.pack(">d", ts / 1e6)
    value = json.dumps(doc).encode()
    checksum = int.from_bytes(os.urandom(8), "big", signed=True)
    keys = [doc_id, creation + doc_id, struct.pack(">q", doc["x"]) + creation + doc_id]
    entries = [
        (ts, n, key, b"", hashlib.blake2b(key, digest_size=16).digest(), doc_id, False, checksum)
        for n, key in enumerate(keys, 1)
    ]
    return (ts, doc_id, 1, value, False, None, checksum), entries


PG_SCHEMA = """
CREATE TABLE documents (
    ts BIGINT NOT NULL, id BYTEA NOT NULL, table_id INTEGER NOT NULL, value BYTEA,
    deleted BOOLEAN NOT NULL, prev_ts BIGINT, checksum BIGINT NOT NULL, PRIMARY KEY (ts, id));
CREATE INDEX documents_by_id ON documents (id, ts);
CREATE TABLE indexes (
    ts BIGINT NOT NULL, index_id INTEGER NOT NULL, key_prefix BYTEA NOT NULL,
    key_suffix BYTEA NOT NULL, key_hash BYTEA NOT NULL, doc_id BYTEA NOT NULL,
    deleted BOOLEAN NOT NULL, checksum BIGINT NOT NULL, PRIMARY KEY (ts, index_id, key_hash));
CREATE INDEX indexes_by_key ON indexes (index_id, key_prefix, key_hash, ts);
"""
PG_DOC = (
    "INSERT INTO documents (ts, id, table_id, value, deleted, prev_ts, checksum) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
PG_INDEX = (
    "INSERT INTO indexes (ts, index_id, key_prefix, key_suffix, key_hash, doc_id, deleted, "
    "checksum) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)

MY_SCHEMA = [
    """CREATE TABLE documents (
        ts BIGINT NOT NULL, id VARBINARY(64) NOT NULL, table_id INT NOT NULL, value LONGBLOB,
        deleted BOOLEAN NOT NULL, prev_ts BIGINT, checksum BIGINT NOT NULL,
        PRIMARY KEY (ts, id), KEY documents_by_id (id, ts)) ENGINE=InnoDB""",
    """CREATE TABLE indexes (
        ts BIGINT NOT NULL, index_id INT NOT NULL, key_prefix VARBINARY(1024) NOT NULL,
        key_suffix LONGBLOB NOT NULL, key_hash BINARY(16) NOT NULL,
        doc_id VARBINARY(64) NOT NULL, deleted BOOLEAN NOT NULL, checksum BIGINT NOT NULL,
        PRIMARY KEY (ts, index_id, key_hash),
        KEY indexes_by_key (index_id, key_prefix, key_hash, ts)) ENGINE=InnoDB""",
]
MY_DOC = (
    "INSERT INTO documents (ts, id, table_id, value, deleted, prev_ts, checksum) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
MY_INDEX = (
    "INSERT INTO indexes (ts, index_id, key_prefix, key_suffix, key_hash, doc_id, deleted, "
    "checksum) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


# -- the servers -----------------------------------------------------------------------------


class Backend:
    """What a run needs from a backend: fresh databases, server counters, server CPU."""

    kind = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.made = 0
        self.settings: dict[str, str] = {}

    async def fresh(self, prefix: str) -> str:
        """A new, empty database; returns its name (SQLite: a file in a new directory)."""
        self.made += 1
        d = self.directory / f"{prefix}{self.made}"
        d.mkdir()
        return str(d / "reactive.db")

    def url(self, name: str) -> str:
        return f"sqlite:///{name}"

    async def drop(self, name: str) -> None:
        with contextlib.suppress(OSError):
            for f in Path(name).parent.iterdir():
                f.unlink()
            Path(name).parent.rmdir()

    async def counters(self) -> dict[str, float]:
        """Server-wide counters (``fsyncs``, ``commits``, ``statements``) where known."""
        return {}

    def cpu(self) -> float:
        """CPU seconds used so far by the server's processes (0: in-process)."""
        return 0.0


class PgBackend(Backend):
    kind = "postgres"

    def __init__(self, port: int, pid: int) -> None:
        super().__init__(Path("."))
        self.port, self.pid = port, pid

    def dsn(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def url(self, name: str) -> str:
        return self.dsn(name)

    async def _admin(self) -> Any:
        import asyncpg

        return await asyncpg.connect(self.dsn("postgres"))

    async def fresh(self, prefix: str) -> str:
        self.made += 1
        name = f"{prefix}{self.made}"
        conn = await self._admin()
        try:
            await conn.execute(f"CREATE DATABASE {name}")
            if not self.settings:
                for s in (
                    "server_version",
                    "fsync",
                    "synchronous_commit",
                    "wal_sync_method",
                    "full_page_writes",
                    "commit_delay",
                ):
                    self.settings[s] = await conn.fetchval(f"SHOW {s}")
        finally:
            await conn.close()
        return name

    async def drop(self, name: str) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()

    async def counters(self) -> dict[str, float]:
        # A backend reports its WAL counters when it exits, a moment after its client
        # closed: read until two reads 0.1 s apart agree (at most ~2 s).
        conn = await self._admin()
        try:
            last: dict[str, float] = {}
            for _ in range(20):
                wal = await conn.fetchrow("SELECT wal_sync, wal_write FROM pg_stat_wal")
                commits = await conn.fetchval("SELECT sum(xact_commit) FROM pg_stat_database")
                now = {"fsyncs": float(wal["wal_sync"]), "commits": float(commits or 0)}
                if now["fsyncs"] == last.get("fsyncs"):
                    break
                last = now
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        return now

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid)


class MyBackend(Backend):
    kind = "mysql"

    def __init__(self, server: Any) -> None:
        super().__init__(Path("."))
        self.server = server

    def url(self, name: str) -> str:
        return str(self.server.url(name))

    async def _admin(self, sql: str) -> list[Any]:
        import asyncmy

        conn = await asyncmy.connect(**self.server.connect_args(), autocommit=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
                return list(await cur.fetchall() or [])
        finally:
            conn.close()

    async def fresh(self, prefix: str) -> str:
        self.made += 1
        name = f"{prefix}{self.made}"
        await self._admin(f"CREATE DATABASE {name}")
        if not self.settings:
            self.settings = {
                str(k): str(v)
                for k, v in await self._admin(
                    "SHOW VARIABLES WHERE Variable_name IN ('version', "
                    "'innodb_flush_log_at_trx_commit', 'log_bin', 'sync_binlog', "
                    "'innodb_flush_method', 'innodb_doublewrite')"
                )
            }
        return name

    async def drop(self, name: str) -> None:
        await self._admin(f"DROP DATABASE IF EXISTS {name}")

    async def counters(self) -> dict[str, float]:
        rows = dict(
            await self._admin(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_data_fsyncs', "
                "'Innodb_log_writes', 'Com_commit', 'Questions')"
            )
        )
        # Innodb_data_fsyncs counts every InnoDB fsync, the redo log's included (MariaDB
        # 10.11 has no separate counter): ~1 per commit for the one-connection anchor.
        return {
            "fsyncs": float(rows.get("Innodb_data_fsyncs", 0)),
            "log_writes": float(rows.get("Innodb_log_writes", 0)),
            "commits": float(rows.get("Com_commit", 0)),
            "statements": float(rows.get("Questions", 0)),
        }

    def cpu(self) -> float:
        return cpu_seconds(self.server.pid)


# -- the reactive side -----------------------------------------------------------------------


def _timed_writes(db: reactive.Database) -> dict[str, float]:
    """Time every ``write_batch`` of a server backend (the group commit's durable write,
    one at a time), by wrapping the persistence object's method. Returns the live totals."""
    totals = {"seconds": 0.0, "calls": 0.0}
    persistence = db._persistence
    if db.url.startswith("sqlite") or not hasattr(persistence, "write_batch"):
        return totals  # SQLite writes in the core's thread, not through this method
    inner = persistence.write_batch

    async def write_batch(batch: Any) -> None:
        t0 = time.perf_counter()
        try:
            await inner(batch)
        finally:
            totals["seconds"] += time.perf_counter() - t0
            totals["calls"] += 1

    persistence.write_batch = write_batch  # type: ignore[method-assign]
    return totals


async def reactive_inserts(backend: Backend, seconds: float) -> dict[str, Any]:
    """``CALLERS`` tasks inserting for ``seconds`` into a fresh database of ``backend``."""
    name = await backend.fresh("reactive")
    url = backend.url(name)
    try:
        db = await reactive.open(url, app=APP)
        counter = 0

        def next_args() -> dict[str, Any]:
            nonlocal counter
            counter += 1
            return make_doc(counter, GROUPS)

        for _ in range(WARMUP):
            await db.mutation("docs:insert", next_args())
        writes = _timed_writes(db)
        batches0, commits0 = _batch_counters(db)
        server0, cpu0, own0 = await backend.counters(), backend.cpu(), time.process_time()
        latencies: list[float] = []
        done = 0
        errors = 0
        deadline = 0.0

        async def caller() -> None:
            nonlocal done, errors
            clock = time.perf_counter
            while clock() < deadline:
                t0 = clock()
                try:
                    await db.mutation("docs:insert", next_args())
                except Exception as exc:
                    errors += 1
                    log(f"insert failed: {exc!r}")
                    continue
                latencies.append(clock() - t0)
                done += 1

        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        elapsed = time.perf_counter() - start
        own_cpu, server_cpu = time.process_time() - own0, backend.cpu() - cpu0
        batches1, commits1 = _batch_counters(db)
        batches, commits = batches1 - batches0, commits1 - commits0
        expected = WARMUP + done
        in_engine = db._engine.count_documents("docs")
        await db.close()
        # After closing: PostgreSQL backends report their WAL counters when they exit.
        server1 = await backend.counters()
        db = await reactive.open(url, app=APP)
        reopened = db._engine.count_documents("docs")
        await db.close()
    finally:
        await backend.drop(name)
    server = {k: server1[k] - server0.get(k, 0.0) for k in server1}
    return {
        "rate": done / elapsed,
        "done": done,
        "errors": errors,
        "expected_docs": expected,
        "docs_in_engine": in_engine,
        "docs_after_reopen": reopened,
        "ok": in_engine == expected == reopened and errors == 0,
        "p50_ms": (percentile(latencies, 50) or 0) * 1000,
        "p99_ms": (percentile(latencies, 99) or 0) * 1000,
        "batches": batches,
        "commits_per_batch": commits / batches if batches else 0.0,
        "ms_per_batch": 1000 * elapsed / batches if batches else 0.0,
        "write_ms_per_batch": 1000 * writes["seconds"] / writes["calls"] if writes["calls"] else 0,
        "writer_busy": writes["seconds"] / elapsed,
        "client_cpu_us": 1e6 * own_cpu / done if done else 0.0,
        "server_cpu_us": 1e6 * server_cpu / done if done else 0.0,
        "server": {k: v / batches if batches else 0.0 for k, v in server.items()},
        "server_per_write": {k: v / done if done else 0.0 for k, v in server.items()},
    }


# -- the anchors -----------------------------------------------------------------------------


async def _drive(
    writers: list[Callable[[int], Awaitable[None]]], seconds: float
) -> tuple[int, float, list[float]]:
    """Each writer (one per connection) writes one transaction after another until
    ``seconds`` pass, after ``WARMUP`` writes shared among them. Returns (writes, elapsed,
    latencies)."""
    counter = 0

    def next_i() -> int:
        nonlocal counter
        counter += 1
        return counter

    for k in range(WARMUP):
        await writers[k % len(writers)](next_i())
    latencies: list[float] = []
    done = 0
    deadline = 0.0

    async def loop(write: Callable[[int], Awaitable[None]]) -> None:
        nonlocal done
        clock = time.perf_counter
        while True:
            t0 = clock()
            await write(next_i())
            t1 = clock()
            latencies.append(t1 - t0)
            done += 1
            if t1 >= deadline:
                return

    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(loop(w) for w in writers))
    return done, time.perf_counter() - start, latencies


async def pg_anchor(backend: PgBackend, connections: int, seconds: float) -> dict[str, Any]:
    """asyncpg, ``connections`` connections each writing one transaction after another."""
    import asyncpg

    name = await backend.fresh("anchor")
    conns: list[Any] = []
    try:
        conns = [await asyncpg.connect(backend.dsn(name)) for _ in range(connections)]
        await conns[0].execute(PG_SCHEMA)

        def writer(conn: Any) -> Callable[[int], Awaitable[None]]:
            async def write(i: int) -> None:
                doc, entries = anchor_rows(i)
                async with conn.transaction():
                    await conn.execute(PG_DOC, *doc)
                    await conn.executemany(PG_INDEX, entries)

            return write

        server0, cpu0, own0 = await backend.counters(), backend.cpu(), time.process_time()
        done, elapsed, latencies = await _drive([writer(c) for c in conns], seconds)
        own_cpu, server_cpu = time.process_time() - own0, backend.cpu() - cpu0
        docs = await conns[0].fetchval("SELECT count(*) FROM documents")
        entries = await conns[0].fetchval("SELECT count(*) FROM indexes")
        for c in conns:
            await c.close()
        conns = []
        # After closing: PostgreSQL backends report their WAL counters when they exit.
        server1 = await backend.counters()
    finally:
        for c in conns:
            await c.close()
        await backend.drop(name)
    return _anchor_result(
        done, elapsed, latencies, docs, entries, own_cpu, server_cpu, server0, server1
    )


async def my_anchor(backend: MyBackend, seconds: float) -> dict[str, Any]:
    """asyncmy, one connection writing one transaction after another."""
    import asyncmy

    name = await backend.fresh("anchor")
    conn: Any = None
    try:
        conn = await asyncmy.connect(**backend.server.connect_args(name), autocommit=False)
        async with conn.cursor() as cur:
            for statement in MY_SCHEMA:
                await cur.execute(statement)
        await conn.commit()

        async def write(i: int) -> None:
            doc, entries = anchor_rows(i)
            async with conn.cursor() as cur:
                await cur.execute(MY_DOC, doc)
                await cur.executemany(MY_INDEX, entries)
            await conn.commit()

        server0, cpu0, own0 = await backend.counters(), backend.cpu(), time.process_time()
        done, elapsed, latencies = await _drive([write], seconds)
        own_cpu, server_cpu = time.process_time() - own0, backend.cpu() - cpu0
        server1 = await backend.counters()
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM indexes)"
            )
            docs, entries = await cur.fetchone()
        await conn.rollback()
    finally:
        if conn is not None:
            conn.close()
        await backend.drop(name)
    return _anchor_result(
        done, elapsed, latencies, docs, entries, own_cpu, server_cpu, server0, server1
    )


def _anchor_result(
    done: int,
    elapsed: float,
    latencies: list[float],
    docs: int,
    entries: int,
    own_cpu: float,
    server_cpu: float,
    server0: dict[str, float],
    server1: dict[str, float],
) -> dict[str, Any]:
    return {
        "rate": done / elapsed,
        "done": done,
        "ok": docs == WARMUP + done and entries == 3 * docs,
        "p50_ms": (percentile(latencies, 50) or 0) * 1000,
        "p99_ms": (percentile(latencies, 99) or 0) * 1000,
        "client_cpu_us": 1e6 * own_cpu / done if done else 0.0,
        "server_cpu_us": 1e6 * server_cpu / done if done else 0.0,
        "server_per_write": {
            k: (server1[k] - server0.get(k, 0.0)) / done if done else 0.0 for k in server1
        },
    }


# -- the runs --------------------------------------------------------------------------------


@contextlib.contextmanager
def _sqlite() -> Iterator[Backend]:
    with scratch_dir("backends") as d:
        yield Backend(d)


def _check(runs: list[dict[str, Any]]) -> str:
    bad = [r for r in runs if not r["ok"]]
    if not bad:
        return "every run committed the expected documents (engine and after reopen)"
    return "COUNT MISMATCH: " + "; ".join(
        f"expected {r.get('expected_docs', WARMUP + r['done'])}, engine "
        f"{r.get('docs_in_engine')}, reopened {r.get('docs_after_reopen')}, errors "
        f"{r.get('errors')}"
        for r in bad
    )


def _med(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> float:
    if sub is not None:
        return median([r[key].get(sub, 0.0) for r in runs]) or 0.0
    return median([r[key] for r in runs]) or 0.0


def _reactive_notes(runs: list[dict[str, Any]], server: bool) -> str:
    notes = (
        f"{_check(runs)}; median {_med(runs, 'commits_per_batch'):.1f} commits per durable "
        f"batch, {_med(runs, 'ms_per_batch'):.2f} ms per batch; latency p50 "
        f"{_med(runs, 'p50_ms'):.2f} ms, p99 {_med(runs, 'p99_ms'):.2f} ms"
    )
    if server:
        notes += (
            f"; write_batch {_med(runs, 'write_ms_per_batch'):.2f} ms per batch (the writer "
            f"busy {100 * _med(runs, 'writer_busy'):.0f} % of the time)"
        )
    return notes


def _anchor_notes(runs: list[dict[str, Any]], what: str) -> str:
    return (
        f"{what}: latency p50 {_med(runs, 'p50_ms'):.2f} ms, p99 {_med(runs, 'p99_ms'):.2f} ms"
        + ("" if all(r["ok"] for r in runs) else "; ANCHOR COUNT MISMATCH")
    )


def _fsync_notes(
    kind: str, reactive_runs: list[dict[str, Any]], anchors: dict[str, list[dict[str, Any]]]
) -> str:
    key = "fsyncs"
    label = "WAL syncs" if kind == "postgres" else "InnoDB fsyncs"
    parts = [
        f"{label} per write: reactive {_med(reactive_runs, 'server_per_write', key):.3f} "
        f"({_med(reactive_runs, 'server', key):.2f} per batch)"
    ]
    parts += [f"{n} {_med(rs, 'server_per_write', key):.3f}" for n, rs in anchors.items()]
    if kind == "mysql":
        parts.append(
            f"statements per batch: reactive {_med(reactive_runs, 'server', 'statements'):.1f}"
        )
    return ", ".join(parts)


def _skipped(bench: str, name: str, anchor_name: str, reason: str) -> Row:
    return Row(
        bench,
        name,
        "commits/s",
        None,
        anchor_name=anchor_name,
        target="≥ 3",
        notes=f"skipped: {reason}",
    )


def run(quick: bool = False) -> list[Row]:
    """Per backend, alternate reactive (64 callers) and its anchors, ``reps`` times."""
    reps, seconds = (2, 2.0) if quick else (5, 5.0)
    rows: list[Row] = []

    # SQLite: the embedded default, beside bench_insert's sqlite3 anchor.
    lite: list[dict[str, Any]] = []
    lite_anchor: list[dict[str, Any]] = []
    for rep in range(reps):
        with scratch_dir("backends") as d:
            lite_anchor.append(anchor_inserts(d, seconds))
        with _sqlite() as lite_backend:
            lite.append(asyncio.run(reactive_inserts(lite_backend, seconds)))
        log(
            f"  backends sqlite rep {rep + 1}/{reps}: reactive x{CALLERS} "
            f"{lite[-1]['rate']:,.0f}/s ({lite[-1]['commits_per_batch']:.1f} commits/batch), "
            f"anchor {lite_anchor[-1]['rate']:,.0f}/s"
        )
    rows.append(
        Row.from_samples(
            "backends",
            f"SQLite: durable insert, {CALLERS} callers (commits/s)",
            "commits/s",
            [r["rate"] for r in lite],
            [r["rate"] for r in lite_anchor],
            anchor_name="sqlite3 1 doc + 3 index rows/txn",
            target="≥ 3",
            notes=f"{_reactive_notes(lite, False)}; {_anchor_notes(lite_anchor, 'anchor')}",
            extra={"reactive_runs": lite, "anchor_runs": lite_anchor},
        )
    )

    # PostgreSQL.
    pg_name = f"PostgreSQL: durable insert, {CALLERS} callers (commits/s)"
    pg_one_name = "asyncpg 1 conn, 1 doc + 3 index rows/txn"
    reason = postgres_available()
    if reason is not None:
        log(f"  backends: PostgreSQL skipped: {reason}")
        rows.append(_skipped("backends", pg_name, pg_one_name, reason))
    else:
        pg: list[dict[str, Any]] = []
        pg_one: list[dict[str, Any]] = []
        pg_many: list[dict[str, Any]] = []
        with postgres() as server:
            pg_backend = PgBackend(server.port, server.pid)
            for rep in range(reps):
                pg.append(asyncio.run(reactive_inserts(pg_backend, seconds)))
                pg_one.append(asyncio.run(pg_anchor(pg_backend, 1, seconds)))
                pg_many.append(asyncio.run(pg_anchor(pg_backend, PG_CONNECTIONS, seconds)))
                log(
                    f"  backends postgres rep {rep + 1}/{reps}: reactive x{CALLERS} "
                    f"{pg[-1]['rate']:,.0f}/s ({pg[-1]['commits_per_batch']:.1f} commits/batch), "
                    f"anchor 1 conn {pg_one[-1]['rate']:,.0f}/s, {PG_CONNECTIONS} conns "
                    f"{pg_many[-1]['rate']:,.0f}/s"
                )
            settings = ", ".join(f"{k}={v}" for k, v in pg_backend.settings.items())
        rows += [
            Row.from_samples(
                "backends",
                pg_name,
                "commits/s",
                [r["rate"] for r in pg],
                [r["rate"] for r in pg_one],
                anchor_name=pg_one_name,
                target="≥ 3",
                notes=(
                    f"{_reactive_notes(pg, True)}; {_anchor_notes(pg_one, 'anchor')}; "
                    + _fsync_notes(
                        "postgres", pg, {"1 conn": pg_one, f"{PG_CONNECTIONS} conns": pg_many}
                    )
                    + f"; PostgreSQL {settings}"
                ),
                extra={"reactive_runs": pg, "anchor_runs": pg_one, "settings": pg_backend.settings},
            ),
            Row.from_samples(
                "backends",
                f"PostgreSQL: {CALLERS} callers vs {PG_CONNECTIONS} concurrent connections "
                "(commits/s)",
                "commits/s",
                [r["rate"] for r in pg],
                [r["rate"] for r in pg_many],
                anchor_name=f"asyncpg {PG_CONNECTIONS} conns, same txn, concurrently",
                target="context",
                notes=_anchor_notes(pg_many, f"{PG_CONNECTIONS} connections"),
                extra={"anchor_runs": pg_many},
            ),
            _cpu_row("PostgreSQL", pg, pg_one, "asyncpg 1 conn"),
        ]

    # MariaDB.
    my_name = f"MariaDB: durable insert, {CALLERS} callers (commits/s)"
    my_one_name = "asyncmy 1 conn, 1 doc + 3 index rows/txn"
    reason = mariadb_available()
    if reason is not None:
        log(f"  backends: MariaDB skipped: {reason}")
        rows.append(_skipped("backends", my_name, my_one_name, reason))
    else:
        my: list[dict[str, Any]] = []
        my_one: list[dict[str, Any]] = []
        with mariadb() as my_server:
            my_backend = MyBackend(my_server)
            for rep in range(reps):
                my.append(asyncio.run(reactive_inserts(my_backend, seconds)))
                my_one.append(asyncio.run(my_anchor(my_backend, seconds)))
                log(
                    f"  backends mariadb rep {rep + 1}/{reps}: reactive x{CALLERS} "
                    f"{my[-1]['rate']:,.0f}/s ({my[-1]['commits_per_batch']:.1f} commits/batch), "
                    f"anchor {my_one[-1]['rate']:,.0f}/s"
                )
            settings = ", ".join(f"{k}={v}" for k, v in my_backend.settings.items())
        rows += [
            Row.from_samples(
                "backends",
                my_name,
                "commits/s",
                [r["rate"] for r in my],
                [r["rate"] for r in my_one],
                anchor_name=my_one_name,
                target="≥ 3",
                notes=(
                    f"{_reactive_notes(my, True)}; {_anchor_notes(my_one, 'anchor')}; "
                    + _fsync_notes("mysql", my, {"anchor": my_one})
                    + f"; MariaDB {settings}"
                ),
                extra={"reactive_runs": my, "anchor_runs": my_one, "settings": my_backend.settings},
            ),
            _cpu_row("MariaDB", my, my_one, "asyncmy 1 conn"),
        ]
    return rows


def _cpu_row(
    server: str, runs: list[dict[str, Any]], anchor: list[dict[str, Any]], anchor_name: str
) -> Row:
    """CPU per acknowledged write: the benchmark process plus the server's processes."""
    return Row.from_samples(
        "backends",
        f"{server}: CPU per write, benchmark process + server (µs)",
        "µs",
        [r["client_cpu_us"] + r["server_cpu_us"] for r in runs],
        [r["client_cpu_us"] + r["server_cpu_us"] for r in anchor],
        anchor_name=anchor_name,
        higher_is_better=False,
        target="context",
        notes=(
            f"reactive: benchmark process {_med(runs, 'client_cpu_us'):.0f} µs + server "
            f"{_med(runs, 'server_cpu_us'):.0f} µs; anchor: "
            f"{_med(anchor, 'client_cpu_us'):.0f} µs + {_med(anchor, 'server_cpu_us'):.0f} µs"
        ),
    )


if __name__ == "__main__":
    standalone(run)
