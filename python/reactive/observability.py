"""What a running database tells its operator: metrics, a slow-function log, recent runs.

Prometheus metrics, the slow-function log and a bounded record of recent function runs.

Metrics (one registry per database, so several databases in a process never mix; the
server renders it at ``GET /metrics`` in Prometheus text format, ``prometheus-client``):

==========================================  =========  ========================================
name                                        type       what
==========================================  =========  ========================================
``reactive_commits_total``                  counter    commits made durable
``reactive_write_conflicts_total``          counter    OCC conflicts (each retry counts)
``reactive_commit_batch_size``              histogram  commits per durable batch (group commit)
``reactive_commit_duration_seconds``        histogram  a mutation's commit: from its commit
                                                       timestamp to durable and visible
``reactive_function_duration_seconds``      histogram  one function run, labels ``path`` and
                                                       ``type`` (query, mutation, action)
``reactive_function_errors_total``          counter    runs that failed, labels ``path``,
                                                       ``type`` and ``error`` (class name)
``reactive_websocket_connections``          gauge      open sync sockets (server)
``reactive_subscriptions``                  gauge      live queries (server: shared queries;
                                                       embedded: ``db.subscribe`` ones)
==========================================  =========  ========================================

The slow-function log (``reactive.open(..., slow_function_ms=N)``, server
``--slow-function-ms N``): every run slower than N ms is logged at WARNING (logger
``reactive.slow``) with its path, duration, documents and bytes read and index ranges read.

:class:`FunctionLog` keeps the last runs (path, type, start, duration, outcome, log lines,
the caller's ``tokenIdentifier``) in a ring of fixed size, for tools that show them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["FunctionLog", "FunctionRun", "Metrics", "Observer"]

slow_log = logging.getLogger("reactive.slow")

_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    60.0,
    600.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    """The Prometheus metrics of one database (its own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commits = Counter("reactive_commits", "Commits made durable.", registry=r)
        self.write_conflicts = Counter(
            "reactive_write_conflicts", "Write conflicts (OCC); each retry counts.", registry=r
        )
        self.commit_batch_size = Histogram(
            "reactive_commit_batch_size",
            "Commits per durable batch (group commit).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_duration = Histogram(
            "reactive_commit_duration_seconds",
            "From a mutation's commit timestamp to durable and visible (seconds).",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.function_duration = Histogram(
            "reactive_function_duration_seconds",
            "Duration of one function run (seconds).",
            ["path", "type"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.function_errors = Counter(
            "reactive_function_errors",
            "Function runs that failed.",
            ["path", "type", "error"],
            registry=r,
        )
        self._gauges: dict[str, Gauge] = {}

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read when scraped (``read()``); replaces one of the same name."""
        old = self._gauges.pop(name, None)
        if old is not None:
            self.registry.unregister(old)
        gauge = Gauge(name, documentation, registry=self.registry)
        gauge.set_function(read)
        self._gauges[name] = gauge

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class FunctionRun(NamedTuple):
    """One function run, as :class:`FunctionLog` keeps it (immutable).

    ``started`` is seconds since the epoch; ``duration_s`` seconds; ``error`` the class name
    of what it raised (``None`` on success) and ``error_message`` its text
    (``"Uncaught Error: boom"``); ``caller`` the identity's ``tokenIdentifier`` (``None``
    unauthenticated); ``cursor_ms`` the run's position in the log (milliseconds since the
    epoch when it was recorded, strictly increasing: what log readers page by).

    A named tuple rather than a frozen dataclass: one is made per function run, and a
    frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (about
    1 µs for these ten fields, against 0.15 µs).
    """

    path: str
    type: str
    started: float
    duration_s: float
    error: str | None
    log_lines: tuple[str, ...]
    caller: str | None
    error_message: str | None = None
    cursor_ms: float = 0.0
    execution_id: str = ""


class FunctionLog:
    """The last ``size`` function runs (a ring: the oldest go first), for log readers.

    Runs of the ``_system/`` functions that tools call (the CLI, the dashboard) are not
    kept. Readers page with :meth:`after` and wait for new runs with :meth:`wait_after`.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._runs: collections.deque[FunctionRun] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self._last_cursor = 0.0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self, run: FunctionRun) -> None:
        """Keep ``run`` (dropping the oldest when full), with the next cursor."""
        if run.path.startswith("_system/"):
            return
        with self._lock:
            cursor = max(time.time() * 1000.0, self._last_cursor + 0.001)
            self._last_cursor = cursor
            self._runs.append(run._replace(cursor_ms=cursor))
            waiters = self._take_waiters()
        self._wake(waiters)

    def _record(
        self,
        path: str,
        kind: str,
        started: float,
        duration_s: float,
        error: str | None,
        log_lines: tuple[str, ...],
        caller: str | None,
        error_message: str | None,
    ) -> None:
        """:meth:`add` of a new run made here (one object, not a copy; a fresh id)."""
        if path.startswith("_system/"):
            return
        execution_id = _execution_id()
        with self._lock:
            cursor = max(time.time() * 1000.0, self._last_cursor + 0.001)
            self._last_cursor = cursor
            self._runs.append(
                FunctionRun(
                    path,
                    kind,
                    started,
                    duration_s,
                    error,
                    log_lines,
                    caller,
                    error_message,
                    cursor,
                    execution_id,
                )
            )
            waiters = self._take_waiters()
        if waiters:
            self._wake(waiters)

    def _take_waiters(self) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        # Holding self._lock.
        waiters = self._waiters
        if waiters:
            self._waiters = []
        return waiters

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_wake, future)

    @property
    def cursor_ms(self) -> float:
        """The cursor of the newest run kept (0.0 when none was ever kept)."""
        return self._last_cursor

    def after(self, cursor_ms: float, limit: int | None = None) -> list[FunctionRun]:
        """The runs kept whose cursor is past ``cursor_ms``, oldest first.

        With ``limit``, only the newest ``limit`` of them.
        """
        with self._lock:
            runs = [r for r in self._runs if r.cursor_ms > cursor_ms]
        return runs if limit is None else runs[-limit:]

    async def wait_after(self, cursor_ms: float, timeout_s: float) -> list[FunctionRun]:
        """:meth:`after`, waiting up to ``timeout_s`` seconds for a run when there is none."""
        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._last_cursor > cursor_ms:
                    break
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(future, left)
            except TimeoutError:
                break
            finally:
                with self._lock:
                    if (loop, future) in self._waiters:
                        self._waiters.remove((loop, future))
        return self.after(cursor_ms)

    def __iter__(self) -> Iterator[FunctionRun]:
        with self._lock:
            return iter(list(self._runs))

    def __len__(self) -> int:
        return len(self._runs)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _execution_id() -> str:
    """A random id formatted as ``uuid.uuid4().hex`` (version 4, RFC 4122 variant).

    From a private generator seeded from ``os.urandom`` (and again in a forked child):
    no system call per run (``os.urandom`` releases the GIL, and getting it back can
    wait for another thread), no ``UUID`` object. Ids name runs; they are not secrets.
    """
    n = _ids.getrandbits(128)
    n = (n & _UUID4_CLEAR) | _UUID4_SET
    return f"{n:032x}"


_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
_UUID4_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_SET = (0x4 << 76) | (0x2 << 62)


class Observer:
    """Where the runner and the flusher report; owns the metrics, the slow log and the ring.

    Args:
        slow_function_ms: Log runs slower than this (milliseconds); ``None``: never.
        function_log_size: Runs kept in :attr:`function_log`.
    """

    def __init__(self, slow_function_ms: float | None = None, function_log_size: int = 10_000):
        self.metrics = Metrics()
        self.function_log = FunctionLog(function_log_size)
        self.slow_function_ms = slow_function_ms
        # function_duration's child per (path, type): labels() takes a lock and checks.
        self._durations: dict[tuple[str, str], Any] = {}

    def wants_usage(self) -> bool:
        """True when runs should report what they read (the slow log needs it)."""
        return self.slow_function_ms is not None

    def function_ran(
        self,
        kind: str,
        path: str | None,
        started: float,
        duration_s: float,
        error: BaseException | None,
        log_lines: list[str] | tuple[str, ...],
        identity: dict[str, Any] | None,
        usage: dict[str, int] | None = None,
    ) -> None:
        """Record one run (``started``: epoch seconds; ``duration_s``: seconds)."""
        name = path or "?"
        duration = self._durations.get((name, kind))
        if duration is None:
            duration = self.metrics.function_duration.labels(name, kind)
            self._durations[(name, kind)] = duration
        duration.observe(duration_s)
        error_name = None if error is None else type(error).__name__
        if error_name is not None:
            self.metrics.function_errors.labels(name, kind, error_name).inc()
        caller = None
        if identity is not None:
            token = identity.get("tokenIdentifier")
            caller = token if isinstance(token, str) else None
        self.function_log._record(
            name,
            kind,
            started,
            duration_s,
            error_name,
            tuple(log_lines),
            caller,
            None if error is None else f"Uncaught {error_name}: {error}",
        )
        limit = self.slow_function_ms
        if limit is not None and duration_s * 1000.0 > limit:
            read = usage or {}
            slow_log.warning(
                "slow %s %s: %.1f ms (limit %g ms)%s; %d documents, %d bytes read; "
                "%d index ranges read",
                kind,
                name,
                duration_s * 1000.0,
                limit,
                "" if error_name is None else f", failed with {error_name}",
                read.get("documents_read", 0),
                read.get("bytes_read", 0),
                read.get("index_ranges_read", 0),
            )

    def batch_written(self, commits: int) -> None:
        """A durable batch of ``commits`` commits."""
        self.metrics.commits.inc(commits)
        self.metrics.commit_batch_size.observe(commits)

    def commit_waited(self, duration_s: float) -> None:
        """A mutation's commit took ``duration_s`` to become durable and visible."""
        self.metrics.commit_duration.observe(duration_s)

    def write_conflict(self) -> None:
        """A mutation attempt hit a write conflict."""
        self.metrics.write_conflicts.inc()
