"""The list-append workload of the isolation tests: the app, a generator, a runner.

The app has one table ``lists`` of documents ``{key, values}`` indexed by key and one
mutation ``lists:txn(ops)`` that performs micro-ops in order: ``["r", key, None]`` returns
the key's list (``[]`` when it has no document), ``["append", key, value]`` reads the
key's document and writes it back with ``value`` appended (inserting it when missing). It
returns one entry per micro-op: the list for a read, ``None`` for an append. A read-only
transaction can also run as the query ``lists:read(keys)`` (:func:`read_only_keys` says
which transactions can).

:class:`Generator` makes transactions of 1-4 micro-ops over a few hot keys (Elle's
defaults: reads and appends half and half, each key retired after ``max_appends_per_key``
appends so lists stay short, values unique per key). :func:`run_workload` runs them from
concurrent asyncio workers through any ``execute(ops) -> reads`` coroutine, records each
outcome (``ok``; ``fail`` when the error proves it did not commit; ``info`` otherwise) and
ends with a read of every key ever used, so the longest read of a key is its final state.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from elle import Txn

__all__ = [
    "APP_FILES",
    "Generator",
    "Outcome",
    "Server",
    "env_int",
    "read_only_keys",
    "run_workload",
    "start_server",
    "txn_count",
]

ROOT = Path(__file__).resolve().parents[2]

APP_FILES = {
    "schema.py": """
        from reactive import define_schema, define_table, v

        schema = define_schema({
            "lists": define_table({"key": v.string(), "values": v.array(v.int64())})
                .index("by_key", ["key"]),
        })
    """,
    "lists.py": '''
        from reactive import mutation, query, v


        def _doc(ctx, key):
            # first(), not unique(): with validation off, two documents of one key can
            # appear, and the checker, not an exception, should tell.
            return ctx.db.query("lists").with_index("by_key", lambda q: q.eq("key", key)).first()


        @mutation(args={"ops": v.array(v.array(v.any()))})
        async def txn(ctx, ops):
            """Run list-append micro-ops; one result per op (the list for a read)."""
            out = []
            for f, key, value in ops:
                doc = await _doc(ctx, key)
                if f == "r":
                    out.append([] if doc is None else doc["values"])
                elif f == "append":
                    value = int(value)  # a JSON number over HTTP is a float64
                    if doc is None:
                        await ctx.db.insert("lists", {"key": key, "values": [value]})
                    else:
                        await ctx.db.patch(doc["_id"], {"values": [*doc["values"], value]})
                    out.append(None)
                else:
                    raise ValueError(f"unknown micro-op {f!r}")
            return out


        @query(args={"keys": v.array(v.string())})
        async def read(ctx, keys):
            """A read-only transaction as a query: each key's list, in order."""
            out = []
            for key in keys:
                doc = await _doc(ctx, key)
                out.append([] if doc is None else doc["values"])
            return out


        @query(args={})
        async def documents_per_key(ctx):
            """How many documents each key has (one, unless isolation failed)."""
            counts = {}
            async for doc in ctx.db.query("lists"):
                counts[doc["key"]] = counts.get(doc["key"], 0) + 1
            return counts
    ''',
}

Op = list[Any]  # ["r", key, None] or ["append", key, value]
Execute = Callable[[list[Op]], Awaitable[list[Any]]]


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def txn_count(default: int) -> int:
    """Transactions per run: ``$REACTIVE_ELLE_TXNS`` when set (longer runs), else ``default``."""
    return env_int("REACTIVE_ELLE_TXNS", default)


@dataclass
class Generator:
    """Random list-append transactions over ``n_keys`` hot keys, retired when long."""

    n_keys: int = 8
    max_ops: int = 4
    max_appends_per_key: int = 64
    read_fraction: float = 0.5
    seed: int = 0
    rng: random.Random = field(init=False)
    active: list[str] = field(init=False)
    used: list[str] = field(default_factory=list, init=False)
    next_value: Counter[str] = field(default_factory=Counter, init=False)
    _key_numbers: itertools.count[int] = field(default_factory=itertools.count, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.active = [self._new_key() for _ in range(self.n_keys)]

    def _new_key(self) -> str:
        key = f"k{next(self._key_numbers)}"
        self.used.append(key)
        return key

    def next_txn(self) -> list[Op]:
        ops: list[Op] = []
        for _ in range(self.rng.randint(1, self.max_ops)):
            slot = self.rng.randrange(len(self.active))
            key = self.active[slot]
            if self.rng.random() < self.read_fraction:
                ops.append(["r", key, None])
                continue
            self.next_value[key] += 1
            ops.append(["append", key, self.next_value[key]])
            if self.next_value[key] >= self.max_appends_per_key:
                self.active[slot] = self._new_key()
        return ops


@dataclass
class Outcome:
    """A run: its history, errors by status and type, and how long it took."""

    history: list[Txn]
    errors: Counter[tuple[str, str]]
    seconds: float
    keys: list[str]

    @property
    def statuses(self) -> Counter[str]:
        return Counter(t.status for t in self.history)

    def unexpected_errors(self, expected: set[str]) -> dict[tuple[str, str], int]:
        return {k: n for k, n in self.errors.items() if k[1] not in expected}

    def describe(self) -> str:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        errors = ", ".join(f"{s}/{name} x{n}" for (s, name), n in sorted(self.errors.items()))
        rate = len(self.history) / self.seconds if self.seconds else 0.0
        return (
            f"{len(self.history)} transactions ({statuses}) over {len(self.keys)} keys in"
            f" {self.seconds:.1f} s ({rate:.0f}/s); errors: {errors or 'none'}"
        )


def read_only_keys(ops: list[Op]) -> list[str] | None:
    """The keys of a transaction that only reads (to run it as a query), else ``None``."""
    if all(f == "r" for f, _, _ in ops):
        return [key for _, key, _ in ops]
    return None


def _to_history_ops(ops: list[Op], reads: list[Any] | None) -> list[tuple[str, Any, Any]]:
    out: list[tuple[str, Any, Any]] = []
    for position, (f, key, value) in enumerate(ops):
        if f == "append":
            out.append(("append", key, value))
        elif reads is None:
            out.append(("r", key, None))
        else:
            out.append(("r", key, [int(x) for x in reads[position]]))
    return out


async def run_workload(
    execute: Execute,
    n_txns: int,
    concurrency: int,
    classify: Callable[[Exception], str],
    generator: Generator | None = None,
    timeout_s: float = 30.0,
    final_batch: int = 64,
    history: list[Txn] | None = None,
) -> Outcome:
    """Run ``n_txns`` generated transactions from ``concurrency`` workers, then final reads.

    ``classify(exc)`` says what an error proves: ``"fail"`` (not committed) or ``"info"``.
    A transaction still running after ``timeout_s`` is ``info`` (and so is a hang).
    ``history``: a list to record into (to watch the progress), else a new one.
    """
    gen = generator or Generator()
    history = [] if history is None else history
    errors: Counter[tuple[str, str]] = Counter()
    ids = itertools.count()
    started = time.monotonic()

    async def one(ops: list[Op]) -> None:
        txn_id = next(ids)
        invoke = time.monotonic()
        try:
            reads = await asyncio.wait_for(execute(ops), timeout_s)
        except Exception as exc:
            status = "info" if isinstance(exc, TimeoutError) else classify(exc)
            errors[status, type(exc).__name__] += 1
            history.append(Txn(txn_id, status, _to_history_ops(ops, None), invoke))
            return
        if not isinstance(reads, list) or len(reads) != len(ops):
            raise AssertionError(f"txn {ops!r} returned {reads!r}")
        history.append(Txn(txn_id, "ok", _to_history_ops(ops, reads), invoke, time.monotonic()))

    remaining = itertools.count()

    async def worker() -> None:
        while next(remaining) < n_txns:
            await one(gen.next_txn())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    # The final reads, once everything else has completed.
    for start in range(0, len(gen.used), final_batch):
        await one([["r", key, None] for key in gen.used[start : start + final_batch]])
    return Outcome(history, errors, time.monotonic() - started, list(gen.used))


@dataclass
class Server:
    """A ``python -m reactive.server`` child process (``restart`` keeps port and database)."""

    url: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, kill: bool = False) -> int:
        """Stop it: SIGTERM (a clean shutdown), or SIGKILL (a crash) with ``kill``."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return int(process.returncode)

    def start(self) -> None:
        """Start the process and wait until it answers ``/health``."""
        with open(self.log_path, "ab") as log:
            process = self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}):\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise TimeoutError(f"the server did not become ready:\n{self.log()}")
            time.sleep(0.05)

    def restart(self, kill: bool = False) -> None:
        self.stop(kill)
        self.start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(app: Path, directory: Path, name: str) -> Server:
    """Start a server of ``app`` on a fresh SQLite database in ``directory``; wait for it."""
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "reactive.server",
        "--app",
        str(app),
        "--db",
        f"sqlite:///{directory / f'{name}.db'}",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = Server(f"http://127.0.0.1:{port}", argv, directory / f"{name}.log")
    server.start()
    return server
