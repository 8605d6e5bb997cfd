"""The scheduler: ``ctx.scheduler`` and the worker that runs scheduled functions when due.

As Convex's scheduler ("Scheduling: scheduled functions" in Convex's docs): a mutation or
an action schedules a function (``run_after``, ``run_at``) and gets the id of a document
in the system table ``_scheduled_functions``::

    {_id, _creationTime, name: "module:function", args: {...}, scheduledTime: ms,
     completedTime?: ms, state: {"kind": "pending" | "inProgress" | "success" |
     "failed" | "canceled", "error"?: str}}

Scheduling from a mutation is a write of that mutation's transaction: it is gone if the
mutation fails. The worker (one per open database with an app, embedded or served) runs
due functions in ``scheduledTime`` order, at most ``concurrency`` at once:

* a mutation runs exactly once: its ``success`` state is written in its own transaction,
  so a crash before that commit leaves it pending (run again at the next start) and after
  it, done;
* an action runs at most once: it is marked ``inProgress`` (committed) before it starts;
  an action found ``inProgress`` when the database opens was cut short by a crash and is
  marked ``failed``, never re-run.

Scheduled functions run without the scheduler's identity (as in Convex). A failure is
recorded in ``state.error`` (and in the function log).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from reactive import _core
from reactive.db.system import patch_system, write_system
from reactive.errors import (
    FunctionNotFoundError,
    InvalidIdError,
    LimitExceededError,
    ReactiveError,
)

if TYPE_CHECKING:
    from reactive.db.database import Database
    from reactive.functions import Function

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_STARTS_PER_S",
    "MAX_ARGS_BYTES",
    "MAX_SCHEDULED_PER_RUN",
    "SCHEDULED_FUNCTIONS",
    "Scheduler",
    "SchedulerWorker",
    "check_knobs",
]

log = logging.getLogger("reactive.scheduler")

SCHEDULED_FUNCTIONS = "_scheduled_functions"
BY_STATE = "by_state"
INDEXES = {BY_STATE: ["state.kind", "scheduledTime"]}
MAX_SCHEDULED_PER_RUN = 1000
"""Functions one query, mutation or action run may schedule (Convex's limit)."""
MAX_ARGS_BYTES = 8 << 20
"""Size of a scheduled function's arguments (Convex's 8 MiB)."""
MAX_DELAY_S = 5 * 365 * 24 * 3600.0
"""How far ahead a function may be scheduled (five years)."""
DEFAULT_CONCURRENCY = 10
"""Scheduled functions running at once, by default."""
DEFAULT_STARTS_PER_S = 100.0
"""Scheduled functions started per second, by default."""
_INTERRUPTED = "the process stopped while this action ran; it was not run again"

T = TypeVar("T")


def check_knobs(concurrency: Any, starts_per_s: Any) -> None:
    """Check the worker's knobs.

    Raises:
        ValueError: ``concurrency`` is not a positive int or ``starts_per_s`` not a positive
            finite number.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"scheduler_concurrency must be an int >= 1, not {concurrency!r}")
    if (
        isinstance(starts_per_s, bool)
        or not isinstance(starts_per_s, (int, float))
        or not 0 < starts_per_s < math.inf
    ):
        raise ValueError(
            f"scheduler_starts_per_s must be a positive finite number, not {starts_per_s!r}"
        )


def _when_ms(when: Any) -> float:
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            raise ValueError(
                "run_at needs an aware datetime (e.g. datetime.now(timezone.utc)), "
                "or milliseconds since the epoch"
            )
        return when.timestamp() * 1000.0
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
        raise ValueError(f"run_at takes an aware datetime or ms since the epoch, not {when!r}")
    return float(when)


def _job(txn: _core.Transaction, job_id: str) -> dict[str, Any] | None:
    try:
        if txn.table_of(job_id) != SCHEDULED_FUNCTIONS:
            return None
        doc: dict[str, Any] | None = txn.get(job_id)
    except (ReactiveError, ValueError):
        return None
    return doc


class Scheduler:
    """``ctx.scheduler`` in mutations and actions.

    In a mutation each call writes in the mutation's transaction; in an action each call
    is its own transaction.
    """

    def __init__(self, db: Database, txn: _core.Transaction | None) -> None:
        self._db = db
        self._txn = txn
        self.scheduled = 0
        """Functions scheduled through this object (the worker is woken after commit)."""

    async def run_after(
        self, delay_s: float, function: str | Function[Any], args: dict[str, Any] | None = None
    ) -> str:
        """Schedule ``function(args)`` to run ``delay_s`` seconds from now; its job id.

        ``function`` is a path (``"module:function"``) or the decorated function, public
        or internal; a negative delay means now.

        Raises:
            FunctionNotFoundError: no such function.
            ArgumentValidationError: ``args`` do not match its validator.
            LimitExceededError: over :data:`MAX_SCHEDULED_PER_RUN` or :data:`MAX_ARGS_BYTES`.
            ValueError: ``delay_s`` is not a finite number of seconds.
        """
        if isinstance(delay_s, bool) or not isinstance(delay_s, (int, float)):
            raise ValueError(f"run_after takes a delay in seconds, not {delay_s!r}")
        if not math.isfinite(delay_s) or delay_s > MAX_DELAY_S:
            raise ValueError(f"run_after's delay must be finite and at most five years: {delay_s}")
        when = time.time() * 1000.0 + max(0.0, float(delay_s)) * 1000.0
        return await self._schedule(when, function, args)

    async def run_at(
        self, when: datetime.datetime | float, function: str | Function[Any], args: Any = None
    ) -> str:
        """Schedule ``function(args)`` at ``when`` (aware datetime, or ms since the epoch).

        A time in the past means now. Raises as :meth:`run_after`.
        """
        return await self._schedule(_when_ms(when), function, args)

    async def cancel(self, id: str) -> None:
        """Cancel a scheduled function that has not run yet.

        A pending function will not run; an action already running goes on (its state
        says ``canceled``); a finished one is left as it is.

        Raises:
            InvalidIdError: ``id`` is not a scheduled function's id.
        """

        def change(txn: _core.Transaction) -> None:
            doc = _job(txn, id) if isinstance(id, str) else None
            if doc is None:
                raise InvalidIdError(f"{id!r} is not the id of a scheduled function")
            if doc["state"]["kind"] in ("pending", "inProgress"):
                patch_system(
                    txn,
                    doc,
                    {"state": {"kind": "canceled"}, "completedTime": time.time() * 1000.0},
                )

        await self._write(change)

    async def _write(self, change: Callable[[_core.Transaction], T]) -> T:
        """``change`` in the mutation's transaction, or (in an action) committed on its own.

        An action runs on a worker thread with its own event loop: its commit is awaited on
        the database's loop, where the worker is woken.
        """
        if self._txn is not None:
            return change(self._txn)

        async def commit() -> T:
            result = await write_system(self._db, change)
            self._db._wake_scheduler()
            return result

        result: T = await self._db._runner._on_loop(commit())
        return result

    async def _schedule(self, when_ms: float, function: str | Function[Any], args: Any) -> str:
        from reactive.db.runner import _validate_args

        if self.scheduled >= MAX_SCHEDULED_PER_RUN:
            raise LimitExceededError(
                f"a function run may schedule at most {MAX_SCHEDULED_PER_RUN} functions"
            )
        fn = self._resolve(function)
        if fn.kind == "query":
            raise FunctionNotFoundError(
                f"{fn.path} is a query: only mutations and actions can be scheduled"
            )
        txn = self._txn
        if txn is not None:
            # Ids as this transaction sees them (a table it created is not committed yet).
            checked = _validate_args(fn, args, lambda t, s: txn.normalize_id(t, s) is not None)
        else:
            checked = _validate_args(fn, args, self._db._id_checker)
        size = _core.value_size(checked)
        if size > MAX_ARGS_BYTES:
            raise LimitExceededError(
                f"the arguments of scheduled {fn.path} are {size} bytes; at most "
                f"{MAX_ARGS_BYTES} (store large data in a table and pass its id)"
            )
        doc = {
            "name": fn.path,
            "args": checked,
            "scheduledTime": when_ms,
            "state": {"kind": "pending"},
        }

        def insert(txn: _core.Transaction) -> str:
            return str(txn.insert(SCHEDULED_FUNCTIONS, doc))

        job_id = await self._write(insert)
        self.scheduled += 1
        return job_id

    def _resolve(self, function: str | Function[Any]) -> Function[Any]:
        from reactive.functions import Function, canonicalize_path

        if isinstance(function, Function):
            if function.path is None:
                raise FunctionNotFoundError(f"{function!r} is not a function of this app")
            path = function.path
        elif isinstance(function, str):
            path = canonicalize_path(function)
        else:
            raise FunctionNotFoundError(
                f"schedule a path 'module:function' or a function, not {function!r}"
            )
        return self._db._app.lookup(path)


class SchedulerWorker:
    """Runs a database's due scheduled functions (see the module docstring).

    Args:
        db: The database (opened with its app).
        concurrency: Scheduled functions running at once.
        starts_per_s: Scheduled functions started per second (at most one second's worth
            at once); due functions past it wait, in order.
        poll_s: The longest sleep between looks at the table (a scheduling in this process
            wakes the worker at once; this bounds the delay for writes it did not see).
    """

    def __init__(
        self,
        db: Database,
        concurrency: int = DEFAULT_CONCURRENCY,
        starts_per_s: float = DEFAULT_STARTS_PER_S,
        poll_s: float = 1.0,
    ) -> None:
        check_knobs(concurrency, starts_per_s)
        self._db = db
        self.concurrency = concurrency
        self.starts_per_s = starts_per_s
        self.poll_s = poll_s
        # A token bucket: up to one second of starts at once, then starts_per_s.
        self._burst = max(1.0, float(starts_per_s))
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Mark actions cut short by a crash ``failed``, then start running due functions."""
        await self._fail_interrupted()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="reactive-scheduler")

    def wake(self) -> None:
        """Look at the table now (a function was scheduled)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop: running functions are cancelled (a pending mutation stays pending)."""
        self._stopping = True
        tasks = list(self._running.values())
        if self._task is not None:
            tasks.append(self._task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _fail_interrupted(self) -> None:
        def change(txn: _core.Transaction) -> int:
            docs, _, _ = txn.scan(
                SCHEDULED_FUNCTIONS,
                BY_STATE,
                [("eq", "state.kind", "inProgress")],
                "asc",
                1000,
                None,
                None,
                None,
                True,
            )
            now = time.time() * 1000.0
            for doc in docs:
                state = {"kind": "failed", "error": _INTERRUPTED}
                patch_system(txn, doc, {"state": state, "completedTime": now})
            return len(docs)

        failed = await write_system(self._db, change)
        if failed:
            log.warning("%d scheduled action(s) were cut short by a crash: marked failed", failed)

    def _due(self, limit: int) -> tuple[list[dict[str, Any]], float | None]:
        """Up to ``limit`` due pending jobs, and when the next one is due (ms) if known."""
        txn = self._db._engine.begin(True)
        docs, _, _ = txn.scan(
            SCHEDULED_FUNCTIONS,
            BY_STATE,
            [("eq", "state.kind", "pending")],
            "asc",
            limit + len(self._running) + 1,
            None,
            None,
            None,
            True,
        )
        now = time.time() * 1000.0
        due: list[dict[str, Any]] = []
        for doc in docs:
            if doc["_id"] in self._running:
                continue
            if doc["scheduledTime"] > now:
                return due, float(doc["scheduledTime"])
            if len(due) < limit:
                due.append(doc)
        return due, None

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = time.monotonic()
            self._tokens = min(
                self._burst, self._tokens + (now - self._refilled) * self.starts_per_s
            )
            self._refilled = now
            limit = min(self.concurrency - len(self._running), int(self._tokens))
            try:
                due, next_ms = self._due(max(0, limit))
            except Exception:
                log.exception("the scheduler could not read %s", SCHEDULED_FUNCTIONS)
                due, next_ms = [], None
            self._tokens -= len(due)
            for doc in due:
                job_id = doc["_id"]
                task = asyncio.get_running_loop().create_task(
                    self._run(doc), name=f"reactive-scheduled-{doc['name']}"
                )
                self._running[job_id] = task
                task.add_done_callback(functools.partial(self._done, job_id))
            wait = self.poll_s
            if next_ms is not None:
                wait = min(wait, max(0.0, (next_ms - time.time() * 1000.0) / 1000.0))
            if len(self._running) >= self.concurrency:
                wait = self.poll_s  # a finishing run wakes the loop
            elif self._tokens < 1.0:
                wait = min(wait, (1.0 - self._tokens) / self.starts_per_s)
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that comes
            # as the event is set, and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _done(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._wake.set()

    async def _finish(self, job_id: str, state: dict[str, Any], only_if: tuple[str, ...]) -> None:
        def change(txn: _core.Transaction) -> None:
            doc = _job(txn, job_id)
            if doc is not None and doc["state"]["kind"] in only_if:
                patch_system(txn, doc, {"state": state, "completedTime": time.time() * 1000.0})

        await write_system(self._db, change)

    async def _run(self, doc: dict[str, Any]) -> None:
        job_id, name = doc["_id"], doc["name"]
        try:
            fn = self._db._app.lookup(name)
        except FunctionNotFoundError as exc:
            await self._finish(job_id, {"kind": "failed", "error": str(exc)}, ("pending",))
            return
        try:
            if fn.kind == "mutation":
                await self._run_mutation(job_id, fn, doc["args"])
            elif fn.kind == "action":
                await self._run_action(job_id, fn, doc["args"])
            else:
                error = f"{name} is a query: only mutations and actions can be scheduled"
                await self._finish(job_id, {"kind": "failed", "error": error}, ("pending",))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled function %s (%s) could not be run", name, job_id)

    async def _run_mutation(self, job_id: str, fn: Function[Any], args: Any) -> None:
        def mark_done(txn: _core.Transaction) -> None:
            # In the mutation's own transaction: exactly once, and not if canceled meanwhile.
            doc = _job(txn, job_id)
            if doc is None or doc["state"]["kind"] != "pending":
                raise _NotPending
            patch_system(
                txn, doc, {"state": {"kind": "success"}, "completedTime": time.time() * 1e3}
            )

        try:
            await self._db._runner.run_mutation(fn, args, before_commit=mark_done)
        except _NotPending:
            return
        except Exception as exc:
            await self._finish(job_id, {"kind": "failed", "error": _error_text(exc)}, ("pending",))

    async def _run_action(self, job_id: str, fn: Function[Any], args: Any) -> None:
        def start(txn: _core.Transaction) -> bool:
            doc = _job(txn, job_id)
            if doc is None or doc["state"]["kind"] != "pending":
                return False
            patch_system(txn, doc, {"state": {"kind": "inProgress"}})
            return True

        if not await write_system(self._db, start):
            return
        try:
            await self._db._runner.run_action(fn, args)
        except Exception as exc:
            state = {"kind": "failed", "error": _error_text(exc)}
        else:
            state = {"kind": "success"}
        await self._finish(job_id, state, ("inProgress",))


class _NotPending(Exception):
    """The scheduled mutation was canceled (or run) meanwhile: do not commit."""


def _error_text(exc: BaseException) -> str:
    from reactive.errors import ConvexError

    if isinstance(exc, ConvexError):
        return f"ConvexError: {exc.data!r}"
    return f"{type(exc).__name__}: {exc}"
