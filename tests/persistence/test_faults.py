"""Injected persistence faults and SIGKILLed servers, under concurrent load.

1. ``test_injected_faults_under_load``: ``Database._open``'s ``open_persistence`` is
   replaced (monkeypatch) by one that wraps the real backend (SQLite on every run,
   PostgreSQL / MySQL when ``REACTIVE_TEST_POSTGRES_URL`` / ``REACTIVE_TEST_MYSQL_URL`` are
   set) in :class:`FaultyPersistence`. The wrapper has no ``start_worker``, so the Python
   group-commit loop (``reactive.db.flusher.Flusher``) drives it, and per ``write_batch``
   it may: raise ``PersistenceError`` before the batch reaches the backend (the contract:
   nothing written); sleep before the write and before acknowledging it; write the batch
   for real and then raise ``CommitOutcomeUnknownError`` (committed, acknowledgement lost);
   or raise an unexpected exception before writing (the flusher must treat it as unknown).
   Dozens of concurrent mutations run against it; then, before and after a reopen:

   * every acknowledged mutation is present, exactly once, whole (no acknowledged commit
     lost, nothing half-applied);
   * no mutation that failed with a plain ``PersistenceError`` (or gave up on write
     conflicts) is visible, before or after the reopen;
   * after a ``CommitOutcomeUnknownError`` every further mutation fails with it until the
     reopen; after the reopen each unknown commit is wholly present or wholly absent, and
     exactly the commits of the batch that really was written are present;
   * commit timestamps keep increasing, and ``db.check()`` reports no problem.

   The faults injected are counted and printed (``pytest -s`` shows them).

2. ``test_sigkill_server_under_load``: a real ``python -m reactive.server`` with HTTP and
   WebSocket writers is SIGKILLed at a random moment, round after round, and restarted on
   the same database: every acknowledged mutation is present exactly once, nothing is
   half-applied, ``python -m reactive check`` passes and timestamps keep increasing.

Source: docs/guarantees.md ("Durability"); ``python/reactive/db/flusher.py`` (the
write_batch contract); ``python/reactive/persistence/base.py``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, WebSocketException

import reactive
import reactive.db.database as database_module
from reactive.errors import (
    CommitOutcomeUnknownError,
    PersistenceError,
    WriteConflict,
)
from reactive.persistence import open_persistence
from reactive.sync.messages import decode_ts

MakeApp = Callable[[dict[str, str]], Path]
ROOT = Path(__file__).resolve().parents[2]

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "items": define_table({"seq": v.float64()}).index("by_seq", ["seq"]),
    "shadows": define_table({"seq": v.float64(), "item": v.id("items")})
        .index("by_seq", ["seq"]),
    "incs": define_table({"seq": v.float64()}).index("by_seq", ["seq"]),
    "counters": define_table({"n": v.float64()}),
    "markers": define_table({"at": v.float64()}),
})
"""

# `seq` is a float64 so that HTTP and WebSocket clients (JSON numbers) can send it.
APP = '''
from reactive import mutation, query, v


@mutation(args={"seq": v.float64()})
async def put(ctx, seq):
    """Two documents in one commit: the item and its shadow (no conflicts between puts)."""
    item = await ctx.db.insert("items", {"seq": seq})
    await ctx.db.insert("shadows", {"seq": seq, "item": item})
    return item


@mutation(args={"seq": v.float64()})
async def bump(ctx, seq):
    """Read-modify-write of the one counter (bumps conflict) plus a record of the bump."""
    counter = await ctx.db.query("counters").first()
    if counter is None:
        await ctx.db.insert("counters", {"n": 1.0})
    else:
        await ctx.db.patch(counter["_id"], {"n": counter["n"] + 1.0})
    return await ctx.db.insert("incs", {"seq": seq})


@mutation(args={})
async def marker(ctx):
    return await ctx.db.insert("markers", {"at": ctx.now})


@query(args={})
async def dump(ctx):
    items = await ctx.db.query("items").collect()
    shadows = await ctx.db.query("shadows").collect()
    incs = await ctx.db.query("incs").collect()
    counter = await ctx.db.query("counters").first()
    return {
        "items": [[d["seq"], d["_id"]] for d in items],
        "shadows": [[d["seq"], d["item"]] for d in shadows],
        "incs": [d["seq"] for d in incs],
        "counter": 0.0 if counter is None else counter["n"],
    }
'''


def kind_of_seq(seq: int) -> str:
    """One mutation in four bumps the counter (they conflict), the others put an item."""
    return "bump" if seq % 4 == 1 else "put"


@dataclass
class Outcomes:
    """What callers were told, by sequence number."""

    acked: dict[int, int | None] = field(default_factory=dict)  # seq -> commit ts (if known)
    failed: set[int] = field(default_factory=set)  # told: not written
    unknown: set[int] = field(default_factory=set)  # outcome unknown (or no answer)
    conflicts: int = 0  # gave up on write conflicts (also in `failed`)
    acked_after_broken: set[int] = field(default_factory=set)
    other: list[str] = field(default_factory=list)  # anything else: a bug


def check_state(state: dict[str, Any], outcomes: Outcomes, what: str) -> tuple[set[int], int]:
    """The invariants of a dump; returns the sequence numbers present and the doc count."""
    items = collections.Counter(int(s) for s, _ in state["items"])
    shadows = collections.Counter(int(s) for s, _ in state["shadows"])
    incs = collections.Counter(int(s) for s in state["incs"])
    twice = sorted(s for c in (items, shadows, incs) for s, n in c.items() if n > 1)
    assert twice == [], f"{what}: present more than once: {twice[:10]}"
    # Nothing half-applied: every item has its shadow and every shadow its item.
    assert set(items) == set(shadows), f"{what}: half-applied puts {set(items) ^ set(shadows)}"
    by_item = {item: int(s) for s, item in state["shadows"]}
    assert by_item == {i: int(s) for s, i in state["items"]}, what
    # Every bump's record came with its increment (and no increment without a record).
    assert state["counter"] == float(len(incs)), (what, state["counter"], len(incs))
    present = set(items) | set(incs)
    lost = sorted(set(outcomes.acked) - present)
    assert lost == [], f"{what}: acknowledged but lost: {lost[:10]}"
    visible_failed = sorted(outcomes.failed & present)
    assert visible_failed == [], f"{what}: reported not written, yet present: {visible_failed}"
    phantom = sorted(present - set(outcomes.acked) - outcomes.unknown)
    assert phantom == [], f"{what}: present but never attempted: {phantom[:10]}"
    docs = 2 * len(items) + len(incs) + (1 if state["counter"] else 0)
    return present, docs


# -- 1. injected faults ------------------------------------------------------------------


@dataclass
class FaultPlan:
    """Which faults the wrappers inject (shared by every wrapper the test opens)."""

    rng: random.Random
    enabled: bool = False
    fail_before: float = 0.0  # probability of PersistenceError before the write
    delay: float = 0.0  # probability of a sleep before the write, and again before the ack
    # The write that takes the count of commits offered past this number commits, then
    # raises CommitOutcomeUnknownError / raises an unexpected error without writing.
    unknown_at: int | None = None
    unexpected_at: int | None = None
    offered: int = 0  # commits offered to write_batch while enabled
    broken: bool = False  # an unknown outcome was injected
    unknown_written: int = 0  # commits of the batch written before the unknown outcome
    counts: collections.Counter[str] = field(default_factory=collections.Counter)


class FaultyPersistence:
    """A real backend behind a ``write_batch`` that fails as :class:`FaultPlan` says.

    It has no ``start_worker`` (``Database`` then drives it with the Python ``Flusher``);
    everything else is the backend's own.
    """

    def __init__(self, inner: Any, plan: FaultPlan) -> None:
        self._inner = inner
        self._plan = plan
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        if name == "start_worker":
            raise AttributeError(name)
        return getattr(self._inner, name)

    async def _sleep(self, what: str) -> None:
        plan = self._plan
        if plan.rng.random() < plan.delay:
            plan.counts[what] += 1
            await asyncio.sleep(plan.rng.uniform(0.0, 0.01))

    async def write_batch(self, batch: Any) -> None:
        plan = self._plan
        if not plan.enabled:
            await self._inner.write_batch(batch)
            return
        before, plan.offered = plan.offered, plan.offered + len(batch)

        def crosses(mark: int | None) -> bool:
            return mark is not None and before < mark <= plan.offered

        plan.counts["batches"] += 1
        plan.counts["commits in batches"] += len(batch)
        if crosses(plan.unexpected_at):
            plan.counts["unexpected error before the write"] += 1
            plan.broken = True
            raise ConnectionResetError("injected: connection reset before the write")
        unknown = crosses(plan.unknown_at)
        if not unknown and plan.rng.random() < plan.fail_before:
            plan.counts["PersistenceError before the write"] += 1
            raise PersistenceError("injected: refused before reaching the backend")
        await self._sleep("delayed write")
        await self._inner.write_batch(batch)
        if unknown:
            plan.counts["CommitOutcomeUnknownError after the commit"] += 1
            plan.unknown_written += len(batch)
            plan.broken = True
            raise CommitOutcomeUnknownError("injected: committed, but the acknowledgement was lost")
        await self._sleep("delayed acknowledgement")


WORKERS = 32
PER_WORKER = 10


async def _load(db: reactive.Database, plan: FaultPlan, seqs: Iterator[int], out: Outcomes) -> None:
    """``WORKERS`` concurrent callers, ``PER_WORKER`` mutations each."""

    async def worker() -> None:
        for _ in range(PER_WORKER):
            seq = next(seqs)
            started_broken = plan.broken
            try:
                outcome = await db.run_mutation(f"m:{kind_of_seq(seq)}", {"seq": float(seq)})
            except CommitOutcomeUnknownError:
                out.unknown.add(seq)
            except PersistenceError:
                out.failed.add(seq)
            except WriteConflict:
                out.failed.add(seq)
                out.conflicts += 1
            except Exception as exc:
                out.other.append(f"{seq}: {exc!r}")
            else:
                out.acked[seq] = outcome.ts
                if started_broken:
                    out.acked_after_broken.add(seq)

    await asyncio.gather(*(worker() for _ in range(WORKERS)))


# Round plans: (PersistenceError probability, delay probability, how the round ends).
ROUNDS = [
    (0.15, 0.3, None),  # failures and delays only: the database keeps committing
    (0.10, 0.3, "unknown"),  # a batch is written, then reported unknown
    (0.10, 0.3, "unexpected"),  # an unexpected exception before the write: unknown
    (0.25, 0.5, "unknown"),
]


async def test_injected_faults_under_load(
    backend_url: str, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    plan = FaultPlan(rng=random.Random(int(os.environ.get("REACTIVE_FAULT_SEED", "7"))))
    opened: list[FaultyPersistence] = []

    async def faulty_open(url: str, **options: Any) -> Any:
        wrapper = FaultyPersistence(await open_persistence(url, **options), plan)
        opened.append(wrapper)
        return wrapper

    monkeypatch.setattr(database_module, "open_persistence", faulty_open)
    out = Outcomes()
    seqs = itertools.count(1)
    started = time.monotonic()

    db = await reactive.open(backend_url, app=app_dir)
    try:
        assert type(db._flusher).__name__ == "Flusher"  # the Python group-commit loop
        # Tables exist before faults start (a batch that creates one is then no special case).
        for _ in range(2):
            seq = next(seqs)
            out.acked[seq] = (
                await db.run_mutation(f"m:{kind_of_seq(seq)}", {"seq": float(seq)})
            ).ts
        last_ts = (await db.run_mutation("m:marker")).ts
        markers = 1

        for number, (fail_before, delay, ending) in enumerate(ROUNDS):
            what = f"round {number} ({ending or 'no unknown outcome'})"
            plan.fail_before, plan.delay = fail_before, delay
            plan.offered, plan.broken, plan.unknown_written = 0, False, 0
            mark = plan.rng.randint(20, WORKERS * PER_WORKER // 2)
            plan.unknown_at = mark if ending == "unknown" else None
            plan.unexpected_at = mark if ending == "unexpected" else None
            unknown_before = set(out.unknown)
            plan.enabled = True
            await asyncio.wait_for(_load(db, plan, seqs, out), 120)
            assert out.other == [], out.other[:5]
            assert out.acked_after_broken == set(), (
                f"{what}: committed after an unknown outcome: {sorted(out.acked_after_broken)}"
            )
            assert plan.broken == (ending is not None), (what, plan)
            assert bool(out.unknown - unknown_before) == (ending is not None), (what, plan)

            # Before the reopen: acknowledged commits visible, failed and unknown ones not.
            state = await db.query("m:dump")
            present, _ = check_state(state, out, f"{what}, before the reopen")
            unknown_visible = sorted(present & out.unknown)
            assert unknown_visible == [], f"{what}: unknown outcome visible: {unknown_visible}"

            if ending is None:
                # A plain PersistenceError does not stop the database.
                assert out.failed, f"{what}: no fault was injected"
                plan.enabled = False
                seq = next(seqs)
                out.acked[seq] = (await db.run_mutation("m:put", {"seq": float(seq)})).ts
            else:
                # After an unknown outcome every commit fails with it, until the reopen.
                plan.enabled = False
                for _ in range(3):
                    seq = next(seqs)
                    with pytest.raises(CommitOutcomeUnknownError):
                        await asyncio.wait_for(db.mutation("m:put", {"seq": float(seq)}), 30)
                    out.unknown.add(seq)
                with pytest.raises(CommitOutcomeUnknownError):
                    await asyncio.wait_for(db.mutation("m:marker"), 30)

            await asyncio.wait_for(db.close(), 60)
            db = await asyncio.wait_for(reactive.open(backend_url, app=app_dir), 60)
            state = await db.query("m:dump")
            present, docs = check_state(state, out, f"{what}, after the reopen")
            # Each unknown commit of this round is whole or absent (check_state), and exactly
            # those of the batch that really was written are present.
            round_unknown = out.unknown - unknown_before
            assert len(present & round_unknown) == plan.unknown_written, (
                what,
                sorted(present & round_unknown),
                plan.unknown_written,
            )
            # Resolve the unknown ones: from now on they are known.
            for seq in present & round_unknown:
                out.acked[seq] = None
            out.unknown -= round_unknown
            out.failed |= round_unknown - present

            newest = max(ts for ts in out.acked.values() if ts is not None)
            assert db.timestamp >= newest, what
            outcome = await db.run_mutation("m:marker")
            markers += 1
            assert outcome.ts > max(newest, last_ts), what
            last_ts = outcome.ts
            report = await db.check()
            assert report["problems"] == [], (what, report["problems"][:5])
            assert report["documents"] == docs + markers, (what, report["documents"], docs)
    finally:
        await db.close()

    assert all(not hasattr(w, "start_worker") for w in opened)
    counts = dict(sorted(plan.counts.items()))
    print(
        f"\ninjected faults on {backend_url.split(':')[0]} "
        f"({time.monotonic() - started:.1f} s): {counts}; "
        f"outcomes: {len(out.acked)} acknowledged, {len(out.failed)} not written "
        f"({out.conflicts} gave up on write conflicts)"
    )
    assert plan.counts["PersistenceError before the write"] > 0
    assert plan.counts["CommitOutcomeUnknownError after the commit"] > 0
    assert plan.counts["unexpected error before the write"] > 0
    assert plan.counts["delayed write"] > 0


# -- 2. SIGKILL of the server under load -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m reactive.server`` on one port and database, restartable."""

    def __init__(self, app: Path, db_url: str, log_path: Path) -> None:
        self.app = app
        self.db_url = db_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/api/sync"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    async def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reactive.server",
                    "--app",
                    str(self.app),
                    "--db",
                    self.db_url,
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.log()}")
                try:
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"the server did not become ready: {self.log()}")

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return int(await asyncio.to_thread(self.process.wait, 60))


async def http_writer(
    server: Server, seqs: Iterator[int], out: Outcomes, stop: asyncio.Event
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=20.0) as http:
        while not stop.is_set():
            seq = next(seqs)
            body = {"path": f"m:{kind_of_seq(seq)}", "args": {"seq": float(seq)}}
            try:
                r = await http.post("/api/mutation", json=body)
                answer = r.json()
            except (httpx.HTTPError, ValueError):
                out.unknown.add(seq)  # no (whole) answer: the server died
                return
            if r.status_code == 200 and answer.get("status") == "success":
                out.acked[seq] = None
            elif r.status_code == 200 and answer.get("status") == "error":
                out.failed.add(seq)
            elif r.status_code >= 500:
                out.unknown.add(seq)
                return
            else:
                out.other.append(f"{seq}: {r.status_code} {r.text[:200]}")
                return


async def ws_connect(server: Server) -> Any:
    ws = await websockets.connect(
        server.ws_url, open_timeout=20, ping_interval=None, compression=None, max_size=2**24
    )
    await ws.send(
        json.dumps(
            {
                "type": "Connect",
                "sessionId": str(uuid.uuid4()),
                "connectionCount": 0,
                "lastCloseReason": "InitialConnect",
                "clientTs": 0,
            }
        )
    )
    await ws.send(
        json.dumps(
            {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": []}
        )
    )
    return ws


async def ws_mutation(ws: Any, request_id: int, path: str, args: dict[str, Any]) -> dict[str, Any]:
    await ws.send(
        json.dumps({"type": "Mutation", "requestId": request_id, "udfPath": path, "args": [args]})
    )
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == "MutationResponse" and message["requestId"] == request_id:
            return message  # type: ignore[no-any-return]


async def ws_writer(
    server: Server, seqs: Iterator[int], out: Outcomes, stop: asyncio.Event
) -> None:
    try:
        ws = await ws_connect(server)
    except (TimeoutError, OSError, WebSocketException):
        return
    seq = None
    try:
        for request_id in itertools.count():
            if stop.is_set():
                return
            seq = next(seqs)
            answer = await ws_mutation(ws, request_id, f"m:{kind_of_seq(seq)}", {"seq": float(seq)})
            if answer["success"]:
                out.acked[seq] = decode_ts(answer["ts"])
            else:
                out.failed.add(seq)
            seq = None
    except (ConnectionClosed, OSError):
        if seq is not None:
            out.unknown.add(seq)
    finally:
        await ws.close()


async def dump(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30.0) as http:
        r = await http.post(f"{server.url}/api/query", json={"path": "m:dump", "args": {}})
    body = r.json()
    assert body["status"] == "success", body
    return body["value"]  # type: ignore[no-any-return]


async def cli_check(db_url: str) -> str:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reactive", "check", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": ok" in result.stdout, result.stdout
    return result.stdout.strip()


KILL_ROUNDS = 5
HTTP_WRITERS = 3
WS_WRITERS = 3


async def test_sigkill_server_under_load(
    backend_url: str, make_app: MakeApp, tmp_path: Path
) -> None:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    server = Server(app_dir, backend_url, tmp_path / "server.log")
    rng = random.Random(int(os.environ.get("REACTIVE_FAULT_SEED", "11")))
    out = Outcomes()
    seqs = itertools.count(1)
    started = time.monotonic()
    kills = 0
    newest_ts = 0
    checks = []
    await server.start()
    try:
        for round_ in range(KILL_ROUNDS):
            stop = asyncio.Event()
            before = len(out.acked)
            writers = [
                asyncio.ensure_future(http_writer(server, seqs, out, stop))
                for _ in range(HTTP_WRITERS)
            ] + [
                asyncio.ensure_future(ws_writer(server, seqs, out, stop)) for _ in range(WS_WRITERS)
            ]
            # Let them commit a little, then kill at a random moment.
            deadline = time.monotonic() + 30
            while len(out.acked) - before < 10:
                assert time.monotonic() < deadline, f"no progress: {server.log()}"
                assert not all(w.done() for w in writers), (out.other, server.log())
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            code = await server.kill()
            assert code == -signal.SIGKILL, (code, server.log())
            kills += 1
            stop.set()
            await asyncio.wait_for(asyncio.gather(*writers), 60)
            assert out.other == [], out.other[:5]

            # The database is consistent without the server...
            checks.append(await cli_check(backend_url))
            # ...and the restarted server serves every acknowledged mutation, once, whole.
            await server.start()
            state = await dump(server)
            present, _ = check_state(state, out, f"kill round {round_}")
            # What was in flight is known now.
            for seq in out.unknown & present:
                out.acked.setdefault(seq, None)
            out.failed |= out.unknown - present
            out.unknown.clear()

            # Time goes on from where it was: newer than every acknowledged commit.
            newest_ts = max([newest_ts, *(ts for ts in out.acked.values() if ts is not None)])
            ws = await ws_connect(server)
            try:
                answer = await ws_mutation(ws, 0, "m:marker", {})
            finally:
                await ws.close()
            assert answer["success"], answer
            ts = decode_ts(answer["ts"])
            assert ts > newest_ts, (ts, newest_ts)
            newest_ts = ts
        assert await server.kill(signal.SIGTERM) == 0, server.log()
        checks.append(await cli_check(backend_url))
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait(30)
    print(
        f"\nSIGKILL on {backend_url.split(':')[0]}: {kills} kills survived in "
        f"{time.monotonic() - started:.1f} s, {len(out.acked)} mutations acknowledged or "
        f"found committed, {len(out.failed)} not written; last check: {checks[-1]}"
    )
    assert kills == KILL_ROUNDS


async def test_after_an_unknown_outcome_contending_mutations_fail_with_it(
    db_url: str, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a commit's outcome is unknown the database stops committing until reopened, and
    every mutation run from then on must fail with ``CommitOutcomeUnknownError`` (the error
    that tells the caller to reopen), whatever else is running concurrently.

    Mutations that contend on one document must not instead exhaust their retries on write
    conflicts with commits that can never be written and fail with ``WriteConflict`` (a
    retryable error: a caller would retry it forever rather than reopen).
    """
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    plan = FaultPlan(rng=random.Random(3))

    async def faulty_open(url: str, **options: Any) -> Any:
        return FaultyPersistence(await open_persistence(url, **options), plan)

    monkeypatch.setattr(database_module, "open_persistence", faulty_open)
    async with reactive.open(db_url, app=app_dir) as db:
        await db.mutation("m:bump", {"seq": 0.0})
        plan.enabled, plan.unknown_at = True, 1
        with pytest.raises(CommitOutcomeUnknownError):
            await db.mutation("m:bump", {"seq": 1.0})
        assert plan.broken
        seqs = itertools.count(2)
        errors: collections.Counter[str] = collections.Counter()

        async def contender() -> None:
            for _ in range(5):
                try:
                    await db.mutation("m:bump", {"seq": float(next(seqs))})
                except Exception as exc:
                    errors[type(exc).__name__] += 1
                else:
                    errors["acknowledged"] += 1

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(contender() for _ in range(16))), 120)
        elapsed = time.monotonic() - started
        print(
            f"\n80 contending mutations after an unknown outcome ({elapsed:.1f} s): {dict(errors)}"
        )
        assert dict(errors) == {"CommitOutcomeUnknownError": 80}
