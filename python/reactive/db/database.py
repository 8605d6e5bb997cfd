"""The embedded database: ``db = await reactive.open(url, app=...)``.

A :class:`Database` owns one persistence backend, the Rust engine rebuilt from it, the app's
functions, the group-commit task and the live subscriptions. Use it from the event loop it
was opened on.

Source: README ("Use it") and ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterator, Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from reactive import _core
from reactive.db.cron_runner import CRON_JOBS, CronRunner, resolve_crons
from reactive.db.cron_runner import INDEXES as CRON_INDEXES
from reactive.db.cursor import CursorCodec
from reactive.db.flusher import Flusher, WorkerFlusher
from reactive.db.follower import DEFAULT_POLL_S, LogFollower
from reactive.db.runner import MutationOutcome, QueryOutcome, Runner
from reactive.db.scheduler import (
    DEFAULT_CONCURRENCY,
    DEFAULT_STARTS_PER_S,
    SCHEDULED_FUNCTIONS,
    SchedulerWorker,
    check_knobs,
)
from reactive.db.scheduler import INDEXES as SCHEDULER_INDEXES
from reactive.db.schema_sync import apply_schema
from reactive.db.storage import FileStore, default_storage_dir
from reactive.db.subscription import Subscription
from reactive.db.system import ensure_system_table
from reactive.errors import DatabaseClosedError, PersistenceError, ReadOnlyError, SchemaError
from reactive.functions import (
    App,
    Function,
    FunctionReference,
    NoArgs,
    call_arguments,
    load_app,
)
from reactive.observability import FunctionLog, Metrics, Observer
from reactive.persistence import open_persistence
from reactive.persistence.base import (
    RETAINED_TS,
    CheckReport,
    LogSource,
    Persistence,
    PruneReport,
    check_lease_timeout_s,
)

__all__ = ["Database", "QueryCall", "open"]

R = TypeVar("R")
P = ParamSpec("P")

log = logging.getLogger("reactive")

_CONFIG_KEYS = (
    "max_documents_read",
    "max_bytes_read",
    "max_read_intervals",
    "max_documents_written",
    "max_bytes_written",
    "write_log_max_age_ns",
    "write_log_max_entries",
    "unsafe_skip_validation",
)


DEFAULT_VECTOR_EXACT_LIMIT = 10_000
"""Vector searches are exact up to this many candidate vectors (Convex's brute-force size)."""


class Database:
    """An open database. Create it with :func:`reactive.open`."""

    def __init__(
        self,
        url: str,
        persistence: Persistence,
        engine: _core.Engine,
        app: App,
        cursor_secret: bytes,
        max_attempts: int,
        follower: LogFollower | None = None,
    ) -> None:
        self.url = url
        self._persistence = persistence
        self._engine = engine
        self._app = app
        self._cursors = CursorCodec(cursor_secret)
        self._closed = False
        self._subscriptions: weakref.WeakValueDictionary[int, Subscription] = (
            weakref.WeakValueDictionary()
        )
        start_worker = getattr(persistence, "start_worker", None)
        self._flusher: Flusher | WorkerFlusher | LogFollower
        # Set when this process follows another's log (a read replica): it never writes.
        self._follower = follower
        if follower is not None:
            follower.on_publish = self._invalidate
            self._flusher = follower
        elif start_worker is not None:
            self._flusher = WorkerFlusher(engine, start_worker(engine), self._invalidate)
        else:
            self._flusher = Flusher(engine, persistence, self._invalidate)
        self._observer = Observer()
        self._flusher.on_batch = self._observer.batch_written
        self._observer.metrics.gauge(
            "reactive_subscriptions", "Live queries.", lambda: len(self._subscriptions)
        )
        self._runner = Runner(self, max_attempts=max_attempts)
        self._background: set[asyncio.Task[None]] = set()
        self._table_numbers: dict[str, int] = {}
        # The newest commit whose invalidations have been dispatched (<= engine.visible_ts).
        self._published_ts = int(engine.visible_ts)
        self._retention_s = 60.0
        self._retention_task: asyncio.Task[None] | None = None
        # Snapshots in use by long readers (exports): retention keeps them readable.
        self._pins: dict[int, int] = {}
        # The URL clients reach this database at, when a server serves it.
        self.public_url: str | None = None
        self._scheduler_worker: SchedulerWorker | None = None
        # File storage (reactive.db.storage): the bytes of _storage documents.
        self._files: FileStore | None = None
        self._cron_runner: CronRunner | None = None
        # Vector indexes search exactly up to this many candidates (reactive.open's knob).
        self._vector_exact_limit = DEFAULT_VECTOR_EXACT_LIMIT
        # What the writer's work at open needs (kept for a follower's promotion).
        self._scheduler_knobs: tuple[bool, int, float] = (
            True,
            DEFAULT_CONCURRENCY,
            DEFAULT_STARTS_PER_S,
        )
        self._storage_root = default_storage_dir(url)
        self._persistence_options: dict[str, Any] = {}
        # A follower's mutations go here (a cluster node forwards them to the writer):
        # ``forward(fn, args, identity, request, on_commit) -> MutationOutcome``.
        self._forward: Any = None
        # A follower's mutations run here and their transactions go there to commit (a
        # cluster node sends them to the writer):
        # ``forward_commit(Transaction.forwarded() bytes, wake_scheduler) -> ts | None``
        # (``None``: wrote nothing, or this process leads now and commits it itself).
        self._forward_commit: Any = None
        # A cluster's process: reads on the writer too wait for the batch in flight, which
        # a follower may have applied already (read_barrier).
        self._strict_reads = False

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    async def _open(
        cls,
        url: str,
        app: str | Path | ModuleType | App | None,
        max_attempts: int,
        retention_s: float,
        config: dict[str, int],
        persistence_options: dict[str, Any],
        time_limits_s: tuple[float, float] = (1.0, 600.0),
        slow_function_ms: float | None = None,
        scheduler: tuple[bool, int, float] = (True, DEFAULT_CONCURRENCY, DEFAULT_STARTS_PER_S),
        storage_dir: str | Path | None = None,
        vector_exact_limit: int = DEFAULT_VECTOR_EXACT_LIMIT,
        follow: tuple[bool, float, float] = (False, DEFAULT_POLL_S, 60.0),
    ) -> Database:
        loaded_app = load_app(app)
        if follow[0]:
            return await cls._open_follower(
                url,
                loaded_app,
                max_attempts,
                retention_s,
                config,
                persistence_options,
                time_limits_s,
                slow_function_ms,
                scheduler,
                storage_dir,
                vector_exact_limit,
                follow,
            )
        persistence = await open_persistence(url, **persistence_options)
        try:
            state = await persistence.load()
            engine = _core.Engine(state, config)
            secret = await persistence.get_global("cursor_secret")
            if secret is None:
                secret = os.urandom(32)
                await persistence.set_global("cursor_secret", secret)
            retained = await persistence.get_global(RETAINED_TS)
            if retained is not None:
                # Versions below it were pruned from persistence: refuse reads there.
                engine.retain(int(retained.decode()))
            db = cls(url, persistence, engine, loaded_app, secret, max_attempts)
            db._vector_exact_limit = vector_exact_limit
            db._retention_s = retention_s
            db._runner.function_time_limit_s, db._runner.action_time_limit_s = time_limits_s
            db._observer.slow_function_ms = slow_function_ms
            db._flusher.start()
            db._retention_task = asyncio.get_running_loop().create_task(
                db._retention_loop(), name="reactive-retention"
            )
        except BaseException:
            await persistence.close()
            raise
        db._scheduler_knobs = scheduler
        db._storage_root = (
            Path(storage_dir) if storage_dir is not None else default_storage_dir(url)
        )
        db._persistence_options = dict(persistence_options)
        try:
            await db._start_writing()
        except BaseException:
            await db.close()
            raise
        return db

    async def _start_writing(self) -> None:
        """Start the writer's work, at open or at a follower's promotion.

        Applies the app's schema, opens file storage, creates the system tables, starts
        scheduled functions and crons.
        """
        loaded_app = self._app
        for task in await apply_schema(self, loaded_app.schema):
            self._background.add(task)
            task.add_done_callback(self._background_done)
        self._files = FileStore(self, self._storage_root)
        await self._files.open(tables=bool(loaded_app.functions))
        if loaded_app.functions:
            await ensure_system_table(self, SCHEDULED_FUNCTIONS, SCHEDULER_INDEXES)
            run_scheduled, concurrency, starts_per_s = self._scheduler_knobs
            cron_jobs = resolve_crons(self, loaded_app)
            await ensure_system_table(self, CRON_JOBS, CRON_INDEXES)
            if run_scheduled:
                self._scheduler_worker = SchedulerWorker(self, concurrency, starts_per_s)
                await self._scheduler_worker.start()
                self._cron_runner = CronRunner(self, cron_jobs)
                await self._cron_runner.sync()
                await self._cron_runner.start()

    @classmethod
    async def _open_follower(
        cls,
        url: str,
        loaded_app: App,
        max_attempts: int,
        retention_s: float,
        config: dict[str, int],
        persistence_options: dict[str, Any],
        time_limits_s: tuple[float, float],
        slow_function_ms: float | None,
        scheduler: tuple[bool, int, float],
        storage_dir: str | Path | None,
        vector_exact_limit: int,
        follow: tuple[bool, float, float],
    ) -> Database:
        """Open a read replica: load without the lease, follow the log (:mod:`.follower`)."""
        _, poll_s, schema_wait_s = follow
        persistence = await open_persistence(url, lease=False, **persistence_options)
        try:
            if not isinstance(persistence, LogSource):
                raise PersistenceError(f"{persistence.url}: this backend has no log to follow")
            catalog = await persistence.get_global("catalog")
            state = await persistence.load()
            engine = _core.Engine(state, config)
            secret = await persistence.get_global("cursor_secret")
            if secret is None:
                raise PersistenceError(
                    f"{persistence.url}: no writer has opened this database with an app yet; "
                    "start the writer first"
                )
            retained = await persistence.get_global(RETAINED_TS)
            if retained is not None:
                engine.retain(int(retained.decode()))
            follower = LogFollower(
                engine,
                persistence,
                lambda ids, first, last: None,
                catalog_json=None if catalog is None else bytes(catalog).decode(),
                poll_s=poll_s,
            )
            db = cls(url, persistence, engine, loaded_app, secret, max_attempts, follower)
            db._vector_exact_limit = vector_exact_limit
            db._retention_s = retention_s
            db._runner.function_time_limit_s, db._runner.action_time_limit_s = time_limits_s
            db._observer.slow_function_ms = slow_function_ms
            follower.start()
            db._retention_task = asyncio.get_running_loop().create_task(
                db._retention_loop(), name="reactive-retention"
            )
        except BaseException:
            await persistence.close()
            raise
        db._scheduler_knobs = scheduler
        db._storage_root = (
            Path(storage_dir) if storage_dir is not None else default_storage_dir(url)
        )
        db._persistence_options = dict(persistence_options)
        try:
            await db._await_writer_schema(schema_wait_s)
            db._files = FileStore(db, db._storage_root)
            await db._files.open(tables=False, follower=True)
        except BaseException:
            await db.close()
            raise
        return db

    async def _await_writer_schema(self, timeout_s: float) -> None:
        """Wait until the writer applied this app's schema, then register its search indexes.

        A follower changes no schema: the writer creates the tables and indexes.

        Raises:
            SchemaError: the writer's schema is still another one after ``timeout_s``.
        """
        from reactive.db.schema_sync import register_search_indexes

        schema = self._app.schema
        if schema is None:
            return
        wanted = json.loads(schema.to_json())
        deadline = time.monotonic() + timeout_s
        while True:
            stored_raw = await self._persistence.get_global("schema")
            stored = json.loads(stored_raw) if stored_raw else None
            if stored == wanted:
                break
            if time.monotonic() >= deadline:
                raise SchemaError(
                    "this app's schema is not the one the database's writer applied "
                    f"(waited {timeout_s:g} s): the writer applies schemas, so run the same "
                    "app there first"
                )
            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        # The tables exist in the database: wait until this process has applied them.
        await self._flusher.flush()
        await register_search_indexes(self, schema)

    async def wait_for_timestamp(self, ts: int) -> None:
        """Wait until commit timestamp ``ts`` is visible here.

        On a follower: until it has applied the writer's commit ``ts`` (read your writes
        made through the writer: pass the writer's ``timestamp`` after the mutation). On
        the writer, its own commits are visible once acknowledged: this returns at once
        for them.

        Raises:
            PersistenceError: a follower stopped following (reopen it).
            DatabaseClosedError: the database closed first.
        """
        self._check_open()
        await self._flusher.wait(ts)

    async def read_barrier(self) -> int:
        """Wait until every commit acknowledged before this call is visible here.

        On a follower: reads the database's newest commit timestamp and waits until it
        is applied here (one query, shared by the callers that arrive together), so a read
        begun afterwards sees every commit any process acknowledged before the call.
        Queries run without ``ts`` do this themselves on a follower. On the writer, its
        acknowledged commits are visible already: returns at once, unless it is a
        cluster's leader, where it waits for the batch in flight (a follower may have
        served it already).

        Returns the timestamp now visible (u64 ns).

        Raises:
            PersistenceError: a follower cannot read the database, or stopped following.
            DatabaseClosedError: the database closed first.
        """
        self._check_open()
        follower = self._follower
        if follower is not None:
            try:
                await follower.read_barrier()
            except (PersistenceError, DatabaseClosedError):
                if self._follower is not None or self._closed:
                    raise
                # Promoted meanwhile (its reader closed): as the writer, every
                # acknowledged commit is applied here already.
        elif self._strict_reads:
            # The writer of a cluster: a batch in flight may be durable, and applied by a
            # follower that served it, before this process publishes it; wait for it
            # (only for it: queued commits are durable nowhere yet).
            flusher = self._flusher
            if isinstance(flusher, Flusher):
                await flusher.in_flight_published()
            else:
                await flusher.flush()
        return int(self._engine.visible_ts)

    @property
    def following(self) -> bool:
        """Whether this process follows another's log (opened with ``follow=True``).

        A follower serves reads and subscriptions, and refuses writes.
        """
        return self._follower is not None

    def _check_writable(self, what: str) -> None:
        """Refuse a write on a follower.

        Raises:
            ReadOnlyError: this database follows another process's log.
        """
        if self._follower is not None:
            raise ReadOnlyError(
                f"{what}: this database was opened with follow=True (a read replica of the "
                "process holding the writer lease); writes run on that process"
            )

    async def promote(self, writer: Persistence | None = None) -> None:
        """Turn this follower into the database's writer (a cluster's failover).

        Takes the writer lease (``writer``: a persistence opened with it, else one is
        opened; this waits for another holder to let go), which raises the epoch so that a
        previous writer can no longer commit; then applies the rest of the log (everything
        the previous writer committed, at most its last batch), switches to committing
        through the lease, and starts the writer's work (schema backfills left unfinished,
        file storage's sweep, scheduled functions and crons, retention pruning). Reads and
        subscriptions continue throughout. Idempotent on a writer.

        Raises:
            IncompatibleDatabaseError: another process holds the lease (``writer`` absent).
            PersistenceError: the database failed; this process stays a follower.
        """
        follower = self._follower
        if follower is None:
            return
        self._check_open()
        reader = self._persistence
        if writer is None:
            writer = await open_persistence(self.url, **self._persistence_options)
        try:
            await follower.stop_following()
            # The lease is ours: no earlier writer commits any more; apply all it did.
            await follower.catch_up()
        except BaseException:
            await writer.close()
            follower.start()
            raise
        self._engine.set_following(False)
        flusher = Flusher(self._engine, writer, self._invalidate)
        flusher.on_batch = self._observer.batch_written
        self._persistence = writer
        self._flusher = flusher
        self._follower = None
        self._forward = None
        self._forward_commit = None
        flusher.start()
        await follower.stop()
        with contextlib.suppress(Exception):
            await reader.close()
        log.info("this process now holds the writer lease of %s", writer.url)
        await self._start_writing()

    def _wake_scheduler(self) -> None:
        """A function was scheduled: the worker looks at once."""
        if self._scheduler_worker is not None:
            self._scheduler_worker.wake()

    async def _retention_loop(self) -> None:
        # Versions older than the retention window are dropped from memory, so memory does
        # not grow with the number of updates; reads at timestamps inside it stay possible.
        period = max(1.0, min(self._retention_s / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            min_ts = self._retention_cutoff(self._retention_s)
            if self._pins:
                min_ts = min(min_ts, min(self._pins))
            if min_ts > 0:
                dropped = await asyncio.to_thread(self._engine.retain, min_ts)
                if dropped:
                    log.debug("retention dropped %d old versions", dropped)
                if self._follower is None:  # the writer prunes the database
                    await self._prune_persistence(min_ts)

    def _retention_cutoff(self, keep_s: float) -> int:
        # Commit timestamps follow the wall clock (ns); an idle database still ages.
        return min(self._engine.visible_ts, time.time_ns() - int(keep_s * 1e9))

    async def _prune_persistence(self, cutoff: int) -> None:
        try:
            report = await self._persistence.prune(self._engine, cutoff)
        except Exception as exc:  # retried at the next tick; commits are unaffected
            log.warning("pruning old versions from persistence failed: %s", exc)
            return
        if report.documents_deleted or report.index_entries_deleted:
            log.debug(
                "retention pruned %d revisions and %d index entries from persistence",
                report.documents_deleted,
                report.index_entries_deleted,
            )

    async def gc(self, keep_s: float | None = None) -> PruneReport:
        """Garbage-collect old versions now, in memory and in persistence.

        Versions that no snapshot newer than ``keep_s`` seconds ago (default: the retention
        window) can see are deleted; pinned snapshots are kept. Returns what persistence
        deleted. The background retention task does the same periodically.

        Raises:
            PersistenceError: the backend failed (what was deleted stays deleted).
        """
        self._check_open()
        self._check_writable("gc")
        await self._flusher.flush()
        keep = self._retention_s if keep_s is None else keep_s
        cutoff = self._retention_cutoff(keep)
        if self._pins:
            cutoff = min(cutoff, min(self._pins))
        if cutoff <= 0:
            return PruneReport()
        await asyncio.to_thread(self._engine.retain, cutoff)
        return await self._persistence.prune(self._engine, cutoff)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Persist what is queued, end subscriptions and background work, release storage.

        Idempotent. Commits already acknowledged are durable before this is called;
        queued ones are written before it returns.
        """
        if self._closed:
            return
        if self._cron_runner is not None:
            await self._cron_runner.stop()
        if self._scheduler_worker is not None:
            await self._scheduler_worker.stop()
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await self._flusher.stop()
        finally:
            self._closed = True
            self._runner.close()
            for sub in list(self._subscriptions.values()):
                sub.close()
            # Search indexes' background work (a vector graph build stops at its next step).
            await asyncio.to_thread(self._engine.stop_search_maintenance)
            await self._persistence.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseClosedError("the database is closed")

    # -- calling functions ---------------------------------------------------------------

    @property
    def app(self) -> App:
        """The app's functions and schema."""
        return self._app

    @property
    def timestamp(self) -> int:
        """The newest visible commit timestamp (u64 ns since the epoch)."""
        return int(self._engine.visible_ts)

    @property
    def published_timestamp(self) -> int:
        """The newest commit timestamp whose subscription invalidations were delivered.

        A snapshot at it is consistent with every watcher's state.
        """
        return self._published_ts

    @property
    def metrics(self) -> Metrics:
        """This database's Prometheus metrics (:mod:`reactive.observability`)."""
        return self._observer.metrics

    @property
    def function_log(self) -> FunctionLog:
        """The last function runs (path, type, start, duration, outcome, log lines)."""
        return self._observer.function_log

    def _id_checker(self, table: str, text: str) -> bool:
        number = _core.id_table_number(text)
        if number is None:
            return False
        wanted = self._table_numbers.get(table)
        if wanted is None:
            for t in self._engine.tables():
                self._table_numbers[t["name"]] = t["number"]
            wanted = self._table_numbers.get(table)
        return wanted == number

    @overload
    def query(self, path: Function[R, P], /, *args: P.args, **kwargs: P.kwargs) -> QueryCall[R]: ...

    @overload
    def query(
        self, path: Function[R], args: Mapping[str, Any] | None, /, *, internal: bool = False
    ) -> QueryCall[R]: ...

    @overload
    def query(self, path: Function[R], /, *, internal: bool) -> QueryCall[R]: ...

    @overload
    def query(
        self, path: FunctionReference[Literal["query"], R, [NoArgs]], /, *, internal: bool = False
    ) -> QueryCall[R]: ...

    @overload
    def query(
        self, path: FunctionReference[Literal["query"], R, P], /, *args: P.args, **kwargs: P.kwargs
    ) -> QueryCall[R]: ...

    @overload
    def query(
        self, path: str, args: Mapping[str, Any] | None = None, /, *, internal: bool = False
    ) -> QueryCall[Any]: ...

    @overload
    def query(self, path: str, /, **kwargs: Any) -> QueryCall[Any]: ...

    def query(
        self,
        path: str | Function[Any] | FunctionReference[Any, Any],
        /,
        *args: Any,
        internal: Any = False,  # Any: the keyword form's overloads take any keyword
        **kwargs: Any,
    ) -> QueryCall[Any]:
        """Run a query: ``await db.query(path, args)``, or ``.at(ts)`` for an older snapshot.

        ``await db.query(path, args)`` reads the newest snapshot;
        ``await db.query(path, args).at(ts)`` reads the snapshot at commit timestamp ``ts``
        (u64 ns, inside the retention window: a point-in-time read).

        The arguments are one dict (``db.query(messages.list, {"channel": "x"})``) or
        keyword arguments (``db.query(messages.list, channel="x")``); for a function
        object, mypy and pyright check the keywords against the handler's parameters and
        type the result (:func:`reactive.functions.call_arguments` says how positional
        ones bind). ``internal=`` is always this call's flag, never an argument: pass an
        argument of that name in the dict.

        Args:
            path: ``"module:function"`` (any spelling of spec §14), the function object,
                or a :class:`~reactive.functions.QueryReference`.
            *args: The argument object (validated against the function's ``args``), or
                none.
            internal: Also allow internal functions (for admin tools).
            **kwargs: The arguments, by name (instead of the argument object).

        Raises:
            TypeError: (at once) an argument dict together with keyword arguments, or
                positional arguments the function does not take.
            FunctionNotFoundError: (when awaited) no public query at ``path``.
            ArgumentValidationError: (when awaited) bad arguments.
            InvalidQueryError: (when awaited) ``ts`` is in the future or older than the
                retention window.
            ConvexError / Exception: (when awaited) whatever the function raised.
        """
        target = path.path if isinstance(path, FunctionReference) else path
        arguments = call_arguments(path, args, kwargs)
        return QueryCall(self, target, arguments, bool(internal), None)

    async def run_query(
        self,
        path: str | Function[Any],
        args: dict[str, Any] | None = None,
        *,
        internal: bool = False,
        identity: dict[str, Any] | None = None,
        ts: int | None = None,
        journal: str | None = None,
    ) -> QueryOutcome:
        """Run a query and return its outcome.

        The outcome holds the value or error, log lines, transaction and journal; ``ts``
        reads at that timestamp (inside the retention window).
        """
        self._check_open()
        fn = self._runner.resolve(path, "query", internal)
        return await self._runner.run_query(fn, args, identity, ts, journal)

    @overload
    async def mutation(self, path: Function[R, P], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    async def mutation(
        self, path: Function[R], args: Mapping[str, Any] | None, /, *, internal: bool = False
    ) -> R: ...

    @overload
    async def mutation(self, path: Function[R], /, *, internal: bool) -> R: ...

    @overload
    async def mutation(
        self,
        path: FunctionReference[Literal["mutation"], R, [NoArgs]],
        /,
        *,
        internal: bool = False,
    ) -> R: ...

    @overload
    async def mutation(
        self,
        path: FunctionReference[Literal["mutation"], R, P],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def mutation(
        self, path: str, args: Mapping[str, Any] | None = None, /, *, internal: bool = False
    ) -> Any: ...

    @overload
    async def mutation(self, path: str, /, **kwargs: Any) -> Any: ...

    async def mutation(
        self,
        path: str | Function[Any] | FunctionReference[Any, Any],
        /,
        *args: Any,
        internal: Any = False,  # Any: the keyword form's overloads take any keyword
        **kwargs: Any,
    ) -> Any:
        """Run a mutation; returns its result once the commit is durable.

        The arguments are one dict or keyword arguments, as for :meth:`query`.

        Raises:
            TypeError: an argument dict together with keyword arguments, or positional
                arguments the function does not take.
            FunctionNotFoundError: no public mutation at ``path``.
            ArgumentValidationError: bad arguments.
            WriteConflict: it kept conflicting through every retry.
            PersistenceError: the commit could not be made durable (it did not happen).
            ConvexError / Exception: whatever the function raised (nothing was written).
        """
        if len(args) == 1 and not kwargs and type(args[0]) is dict:
            arguments = args[0]  # the common call: what call_arguments returns for it
        else:
            arguments = call_arguments(path, args, kwargs)
        if self._closed:
            self._check_open()
        target = path if type(path) is str else _target(path)
        fn = self._runner.resolve(target, "mutation", bool(internal))
        outcome = await self._runner.run_mutation(fn, arguments)
        if fn.returns_type is None:
            return outcome.value
        return _typed(fn, outcome.value)

    async def run_mutation(
        self,
        path: str | Function[Any],
        args: dict[str, Any] | None = None,
        *,
        internal: bool = False,
        identity: dict[str, Any] | None = None,
        request: tuple[str, int] | None = None,
    ) -> MutationOutcome:
        """Run a mutation and return its outcome: value, log lines, commit timestamp.

        ``request`` (session id, request id) makes it exactly-once across replays (see
        ``Runner.run_mutation``).
        """
        self._check_open()
        fn = self._runner.resolve(path, "mutation", internal)
        return await self._runner.run_mutation(fn, args, identity, request)

    @overload
    async def action(self, path: Function[R, P], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    async def action(
        self, path: Function[R], args: Mapping[str, Any] | None, /, *, internal: bool = False
    ) -> R: ...

    @overload
    async def action(self, path: Function[R], /, *, internal: bool) -> R: ...

    @overload
    async def action(
        self,
        path: FunctionReference[Literal["action"], R, [NoArgs]],
        /,
        *,
        internal: bool = False,
    ) -> R: ...

    @overload
    async def action(
        self,
        path: FunctionReference[Literal["action"], R, P],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def action(
        self, path: str, args: Mapping[str, Any] | None = None, /, *, internal: bool = False
    ) -> Any: ...

    @overload
    async def action(self, path: str, /, **kwargs: Any) -> Any: ...

    async def action(
        self,
        path: str | Function[Any] | FunctionReference[Any, Any],
        /,
        *args: Any,
        internal: Any = False,  # Any: the keyword form's overloads take any keyword
        **kwargs: Any,
    ) -> Any:
        """Run an action; returns its result.

        The arguments are one dict or keyword arguments, as for :meth:`query`.

        Raises:
            TypeError: an argument dict together with keyword arguments, or positional
                arguments the function does not take.
            FunctionNotFoundError: no public action at ``path``.
            ArgumentValidationError: bad arguments.
            ConvexError / Exception: whatever the function raised.
        """
        arguments = call_arguments(path, args, kwargs)
        self._check_open()
        target = path.path if isinstance(path, FunctionReference) else path
        fn = self._runner.resolve(target, "action", bool(internal))
        return _typed(fn, (await self._runner.run_action(fn, arguments)).value)

    def subscribe(
        self,
        path: str | Function[Any] | FunctionReference[Any, Any],
        args: dict[str, Any] | None = None,
        *,
        internal: bool = False,
    ) -> Subscription:
        """Watch a query: ``async for value in db.subscribe(path, args)``.

        Yields the first result, then each result that differs from the last, as commits
        change what the query read. ``path`` is as for :meth:`query`.

        Raises:
            FunctionNotFoundError: no public query at ``path``.
        """
        self._check_open()
        target = path.path if isinstance(path, FunctionReference) else path
        fn = self._runner.resolve(target, "query", internal)
        return Subscription(self, fn, args)

    def _invalidate(self, subscription_ids: list[int], first_ts: int, last_ts: int) -> None:
        # Called in commit order as batches are published; `first_ts` is the batch's first
        # commit (a watcher's result is valid only before it).
        self._published_ts = max(self._published_ts, last_ts)
        for sid in subscription_ids:
            sub = self._subscriptions.get(sid)
            if sub is not None:
                sub._invalidate(first_ts)

    # -- maintenance ---------------------------------------------------------------------

    async def text_search(
        self,
        table: str,
        index: str,
        text: str,
        *,
        filters: dict[str, Any] | None = None,
        limit: int = 10,
    ) -> list[tuple[dict[str, Any], float]]:
        """Full-text search at the latest snapshot, outside any function.

        The same search as ``with_search_index(index, lambda q: q.search(field, text)
        .eq(...))`` in a query: ``filters`` maps filter fields to required values.
        Returns up to ``limit`` (1 to 1,024) ``(document, BM25 score)`` pairs, best first.

        Raises:
            InvalidQueryError: a bad search (limits, a field that is not a filter field).
            IndexNotFoundError: no such search index.
        """
        self._check_open()
        txn = self._engine.begin(True)
        found = txn.text_search(table, index, text, list((filters or {}).items()), limit)
        return [(doc, score) for doc, score in found]

    async def vector_search(
        self,
        table: str,
        index: str,
        vector: Any,
        *,
        limit: int = 10,
        filter: Callable[[Any], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Vector search at the latest snapshot, outside any function.

        As an action's ``ctx.vector_search``: ``[{"_id", "_score"}]``, best first.

        Raises:
            InvalidQueryError: a bad query (dimensions, limit 1 to 256, filter field).
            IndexNotFoundError: no such vector index.
        """
        from reactive.db.context import _vector_search

        self._check_open()
        query: dict[str, Any] = {"vector": vector, "limit": limit}
        if filter is not None:
            query["filter"] = filter
        return _vector_search(self._engine.begin(True), self, table, index, query)

    @contextlib.contextmanager
    def pin_snapshot(self, ts: int | None = None) -> Iterator[int]:
        """Keep the snapshot at ``ts`` (default: the newest) readable while the block runs.

        However long the block takes, retention does not drop versions the snapshot can
        see. Yields ``ts``.

        Raises:
            InvalidQueryError: ``ts`` is already older than the retention window.
        """
        self._check_open()
        if ts is None:
            ts = self._engine.visible_ts
        else:
            self._engine.begin_at(ts)  # refuses a snapshot that has left the window
        self._pins[ts] = self._pins.get(ts, 0) + 1
        try:
            yield ts
        finally:
            left = self._pins[ts] - 1
            if left:
                self._pins[ts] = left
            else:
                del self._pins[ts]

    async def check(self) -> CheckReport:
        """Verify the indexes against the documents.

        Every persisted index entry is checked both directions, and every full-text search
        index against its table's documents. Returns ``{"documents", "index_entries",
        "search_indexes", "problems"}``; no problems means consistent.
        """
        self._check_open()
        await self._flusher.flush()
        report = await self._persistence.check(self._engine)
        checked = 0
        for info in self._engine.search_indexes():
            if info["kind"] != "text":
                continue
            bad = await asyncio.to_thread(
                self._engine.verify_search_index, info["table"], info["name"]
            )
            checked += 1
            report["problems"].extend(
                f"search index {info['table']}.{info['name']}: document {id_} is indexed wrongly"
                for id_ in bad
            )
        report["search_indexes"] = checked
        return report

    async def wait_for_indexes(self) -> None:
        """Wait until background index backfills are done."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


class QueryCall(Coroutine[Any, Any, R]):
    """A query about to run, what :meth:`Database.query` returns.

    Await it (or hand it to ``asyncio.create_task``: it is a coroutine), or pick a snapshot
    first with :meth:`at`.
    """

    __slots__ = ("_args", "_db", "_inner", "_internal", "_path", "_ts")

    def __init__(
        self,
        db: Database,
        path: str | Function[Any],
        args: dict[str, Any] | None,
        internal: bool,
        ts: int | None,
    ) -> None:
        self._db = db
        self._path = path
        self._args = args
        self._internal = internal
        self._ts = ts
        self._inner: Coroutine[Any, Any, Any] | None = None

    def at(self, ts: int) -> QueryCall[R]:
        """The same query at the snapshot of commit timestamp ``ts``.

        ``ts`` is u64 nanoseconds since the epoch, e.g. a ``db.timestamp`` seen earlier.
        """
        if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
            raise TypeError(f"ts must be a non-negative int timestamp, got {ts!r}")
        return QueryCall(self._db, self._path, self._args, self._internal, ts)

    async def _run(self) -> Any:
        outcome = await self._db.run_query(
            self._path, self._args, internal=self._internal, ts=self._ts
        )
        if outcome.error is not None:
            raise outcome.error
        return _typed(self._db._runner.resolve(self._path, "query", self._internal), outcome.value)

    def _coroutine(self) -> Coroutine[Any, Any, R]:
        if self._inner is None:
            self._inner = self._run()
        return self._inner

    def send(self, value: Any) -> Any:
        """Coroutine protocol: resume the query's run."""
        return self._coroutine().send(value)

    def throw(self, *args: Any) -> Any:
        """Coroutine protocol: raise into the query's run."""
        return self._coroutine().throw(*args)

    def close(self) -> None:
        """Coroutine protocol: close the run if it was started."""
        if self._inner is not None:
            self._inner.close()

    def __await__(self) -> Generator[Any, None, R]:
        return self._coroutine().__await__()


class _Opener:
    """What :func:`open` returns: awaitable, and an async context manager."""

    def __init__(self, coro_factory: Any) -> None:
        self._factory = coro_factory
        self._db: Database | None = None

    def __await__(self) -> Generator[Any, None, Database]:
        return self._factory().__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> Database:
        self._db = await self._factory()
        return self._db

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._db is not None:
            await self._db.close()


def _target(path: str | Function[Any] | FunctionReference[Any, Any]) -> str | Function[Any]:
    """What ``Runner.resolve`` takes for ``path``: a reference's path, else ``path``."""
    return path.path if isinstance(path, FunctionReference) else path


def _typed(fn: Function[Any], value: Any) -> Any:
    """An embedded caller's result: an instance of ``returns=``'s dataclass or model."""
    if fn.returns_type is None:
        return value
    from reactive.pytypes import from_value

    return from_value(fn.returns_type, value)


def open(
    url: str = "sqlite:///.reactive/db.sqlite3",
    *,
    app: str | Path | ModuleType | App | None = None,
    max_attempts: int = 32,
    retention_s: float = 60.0,
    pool_size: int | None = None,
    timeout_s: float | None = None,
    lease_timeout_s: float | None = None,
    function_time_limit_s: float = 1.0,
    action_time_limit_s: float = 600.0,
    slow_function_ms: float | None = None,
    run_scheduled: bool = True,
    scheduler_concurrency: int = DEFAULT_CONCURRENCY,
    scheduler_starts_per_s: float = DEFAULT_STARTS_PER_S,
    storage_dir: str | Path | None = None,
    vector_exact_limit: int = DEFAULT_VECTOR_EXACT_LIMIT,
    follow: bool = False,
    follow_poll_s: float = DEFAULT_POLL_S,
    follow_schema_wait_s: float = 60.0,
    **config: int,
) -> _Opener:
    """Open a database: ``db = await reactive.open(url, app=...)`` or ``async with``.

    Args:
        url: ``sqlite:///path.db`` (relative), ``sqlite:////abs/path.db``, or a file path.
        app: The app: a directory, an importable package name, a module or an ``App``.
        max_attempts: Attempts for a mutation that keeps hitting write conflicts.
        retention_s: How long old versions stay readable in memory (point-in-time reads
            with ``run_query(..., ts=...)``); older ones are dropped.
        pool_size: Connections to a PostgreSQL or MySQL server (default 8).
        timeout_s: Timeout of every wait on a PostgreSQL or MySQL server (default 30 s).
        lease_timeout_s: How long a PostgreSQL or MySQL server keeps the writer lease of a
            process it no longer hears from (its machine vanished, its network cut) before
            it frees it for another process (seconds, 1 to 3600; default 3). The holder
            must check its lease well within it (a cluster's leader checks every
            ``min(1, lease_timeout_s / 3)`` s).
        function_time_limit_s: Time limit of one query or mutation run (seconds; Convex's
            1 s). A run past it fails with ``FunctionTimeoutError`` and is stopped.
        action_time_limit_s: Time limit of one action run (seconds; Convex's 10 minutes).
        slow_function_ms: Log every function run slower than this (milliseconds) at
            WARNING on logger ``reactive.slow``, with what it read (see
            :mod:`reactive.observability`); ``None`` (default): never.
        run_scheduled: Run scheduled functions when due (:mod:`reactive.db.scheduler`);
            tools that open a database briefly pass ``False`` and leave them pending.
        scheduler_concurrency: Scheduled functions running at once (default 10).
        scheduler_starts_per_s: Scheduled functions started per second (default 100); due
            functions past it wait their turn, in ``scheduledTime`` order.
        storage_dir: Where file storage keeps its bytes (:mod:`reactive.db.storage`;
            default: a ``storage`` folder beside the SQLite file, or ``.reactive/storage``
            in the current directory for PostgreSQL and MySQL: pass it explicitly there).
            A server passes its ``--storage-dir``.
        vector_exact_limit: Vector searches score every candidate exactly while an index
            (or a search's filter) holds at most this many vectors; past it an approximate
            HNSW index answers (recall@10 >= 0.95). Default 10,000.
        follow: Open a PostgreSQL or MySQL database as a read replica of the process that
            holds its writer lease (:mod:`reactive.db.follower`): load it without the lease,
            then apply the writer's commits as they land. Queries, subscriptions and
            point-in-time reads work as on the writer; mutations, schema changes and other
            writes raise ``ReadOnlyError``; scheduled functions and crons run on the writer.
            The writer must have opened the database with the same app (its schema).
        follow_poll_s: A follower reads the log at least this often (seconds; default 1)
            besides waking when the writer commits (PostgreSQL notifications; MySQL is
            polled, see ``LogSource.wait_log``).
        follow_schema_wait_s: How long a follower waits at open for the writer to have
            applied this app's schema (seconds; default 60).
        **config: Engine knobs: ``max_documents_read``, ``max_bytes_read``,
            ``max_read_intervals``, ``max_documents_written``, ``max_bytes_written``
            (per-transaction limits; Convex's defaults), ``write_log_max_age_ns``,
            ``write_log_max_entries`` (the conflict-check window). ``unsafe_skip_validation=1``
            is for tests only: commits skip conflict checks (not serializable).

    Raises:
        IncompatibleDatabaseError: another process has the database open, or its format
            is newer than this version.
        CorruptionError: a stored record failed verification (the message names it).
        SchemaError: a stored document violates the app's schema.
        FunctionNotFoundError: the app cannot be found.
        ValueError: ``retention_s`` is negative or not finite, a time limit is not a
            positive finite number, or a scheduler knob, ``vector_exact_limit``,
            ``follow_poll_s`` or ``follow_schema_wait_s`` is not positive.
        PersistenceError: ``follow=True`` on SQLite (one process), or on a database no
            writer has opened with an app yet.
        TypeError: an unknown engine option.
    """
    unknown = set(config) - set(_CONFIG_KEYS)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; known: {list(_CONFIG_KEYS)}")
    if not (isinstance(retention_s, (int, float)) and 0 <= retention_s < math.inf):
        raise ValueError(
            f"retention_s must be a finite number of seconds >= 0, not {retention_s!r}"
        )
    for name, limit in (
        ("function_time_limit_s", function_time_limit_s),
        ("action_time_limit_s", action_time_limit_s),
    ):
        if not (isinstance(limit, (int, float)) and 0 < limit < math.inf):
            raise ValueError(f"{name} must be a positive finite number of seconds, not {limit!r}")
    limits = (float(function_time_limit_s), float(action_time_limit_s))
    if not (
        isinstance(vector_exact_limit, int)
        and not isinstance(vector_exact_limit, bool)
        and vector_exact_limit > 0
    ):
        raise ValueError(f"vector_exact_limit must be a positive int, not {vector_exact_limit!r}")
    check_knobs(scheduler_concurrency, scheduler_starts_per_s)
    scheduler = (bool(run_scheduled), scheduler_concurrency, float(scheduler_starts_per_s))
    if slow_function_ms is not None and not (
        isinstance(slow_function_ms, (int, float)) and 0 <= slow_function_ms < math.inf
    ):
        raise ValueError(
            f"slow_function_ms must be a finite number of milliseconds >= 0, not "
            f"{slow_function_ms!r}"
        )
    for name, seconds in (
        ("follow_poll_s", follow_poll_s),
        ("follow_schema_wait_s", follow_schema_wait_s),
    ):
        if not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
            raise ValueError(f"{name} must be a positive finite number of seconds, not {seconds!r}")
    options: dict[str, Any] = {}
    if pool_size is not None:
        options["pool_size"] = pool_size
    if timeout_s is not None:
        options["timeout_s"] = timeout_s
    if lease_timeout_s is not None:
        options["lease_timeout_s"] = check_lease_timeout_s(lease_timeout_s)
    return _Opener(
        lambda: Database._open(
            url,
            app,
            max_attempts,
            retention_s,
            dict(config),
            options,
            limits,
            slow_function_ms,
            scheduler,
            storage_dir,
            vector_exact_limit,
            (bool(follow), float(follow_poll_s), float(follow_schema_wait_s)),
        )
    )
